/* bench_quant.c - single-thread matvec speed per weight type and implementation.
 *
 * Prints GB/s of weight bytes streamed for a 4096-wide matvec (one activation vector, as in
 * decode). The weights span 256 MiB (64 stacked 4096x4096 matrices for q4_0, fewer for wider
 * types) so they come from DRAM, not the 32 MiB L3; "l3" repeats one 4096x4096 matrix.
 * Usage: bench_quant [seconds-per-case (default 0.5)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/args.h"
#include "kvserve/base.h"
#include "kvserve/quant.h"

enum { N = 4096 };

static double run(qt_type t, const uint8_t *w, size_t rb, int64_t rows, const void *x,
                  size_t xb, float *y, double secs)
{
    int64_t reps = 0;
    double t0 = ks_time_now(), t1;
    do {
        qt_matvec(t, N, w, rb, rows, x, xb, 1, y, 1);
        reps++;
        t1 = ks_time_now();
    } while (t1 - t0 < secs);
    return (double)rb * (double)rows * (double)reps / (t1 - t0) / 1e9;
}

int main(int argc, char **argv)
{
    double secs = 0.5;
    const ks_arg args[] = {
        {"SECONDS", 0, KS_ARG_DOUBLE, &secs, 0.001, 600, .help = "time per measurement",
         .flags = KS_ARG_POSITIONAL},
    };
    const ks_args_spec spec = {"bench_quant", "Vector-dot bandwidth of each quant type and kernel.",
                               args, KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    const qt_type types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q4_K, QT_Q6_K};
    const char *impl_names[] = {"scalar", "avx2", "avx512"};
    float *xf = malloc(N * sizeof(float)), *y = malloc(((size_t)256 << 20) / 64 * sizeof(float));
    uint8_t *x = malloc(N * 4);
    for (int i = 0; i < N; i++) xf[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    printf("%-6s %-7s %10s %10s\n", "type", "impl", "dram GB/s", "l3 GB/s");
    for (size_t ti = 0; ti < KS_ARRAY_LEN(types); ti++) {
        qt_type t = types[ti], xt = qt_vec_dot_type(t);
        size_t rb = qt_row_bytes(t, N), xb = qt_row_bytes(xt, N);
        int64_t rows = (int64_t)(((size_t)256 << 20) / rb);
        uint8_t *w = malloc(rb * (size_t)rows);
        if (!w || !y || !x) return 1;
        float *row = malloc(N * sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            for (int i = 0; i < N; i++) row[i] = (float)(((r + 1) * (i + 3)) % 97) / 400.0f - 0.1f;
            qt_quantize_row(t, row, w + (size_t)r * rb, N);
        }
        free(row);
        qt_quantize_row(xt, xf, x, N);
        for (int impl = QT_IMPL_SCALAR; impl <= QT_IMPL_AVX512; impl++) {
            if (qt_set_impl((qt_impl)impl) != 0) continue;
            double s = impl == QT_IMPL_SCALAR ? secs / 4 : secs;
            double dram = run(t, w, rb, rows, x, xb, y, s);
            double l3 = run(t, w, rb, N, x, xb, y, s);
            printf("%-6s %-7s %10.2f %10.2f\n", qt_type_name(t), impl_names[impl], dram, l3);
        }
        free(w);
    }
    free(xf);
    free(x);
    free(y);
    return 0;
}

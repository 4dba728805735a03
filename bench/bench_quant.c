/* bench_quant.c - single-thread matvec (decode) speed per weight type and implementation,
 * next to the machine's read bandwidth.
 *
 * Prints GB/s of weight bytes streamed for a 4096-wide matvec (one activation vector, as in
 * decode), per type and ISA (scalar, avx2, avx512). The weights span 256 MiB so they come
 * from DRAM, not the 32 MiB L3 ("dram"); "l3" repeats one 4096-row matrix. "vs q4_K" is the
 * dram figure over Q4_K's with the same ISA: decode reads every weight byte once per token,
 * so a type at >= 1.0 decodes at least as fast per byte read as Q4_K. The last lines are a
 * roofline probe: a plain sum of a 256 MiB buffer with 1 and 2 threads.
 * Usage: bench_quant [seconds-per-case (default 0.5)] [types, e.g. q4_K,q5_0 (default all)]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/base.h"
#include "kvserve/quant.h"

enum { N = 4096 };
#define BIG ((size_t)256 << 20)

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint8_t rnd8(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint8_t)(g_rng >> 32);
}

static double run(qt_type t, const uint8_t *w, size_t rb, int64_t rows, const void *x, size_t xb,
                  float *y, double secs)
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

/* Byte offsets of a block's fp16 scales (random bits elsewhere: speed does not depend on
 * the values, but scales must stay small normal numbers). */
static int scale_offsets(qt_type t, int off[2])
{
    off[0] = 0;
    off[1] = -1;
    switch (t) {
    case QT_Q4_1:
    case QT_Q5_1:
    case QT_Q4_K:
    case QT_Q5_K:
        off[1] = 2;
        return 1;
    case QT_Q2_K:
        off[0] = 80;
        off[1] = 82;
        return 1;
    case QT_Q3_K:
        off[0] = 108;
        return 1;
    case QT_Q6_K:
        off[0] = 208;
        return 1;
    case QT_Q4_0:
    case QT_Q5_0:
    case QT_Q8_0:
    case QT_IQ4_NL:
    case QT_IQ4_XS:
        return 1;
    default:
        return 0; /* float types: quantised from f32 */
    }
}

static void fill_rows(qt_type t, uint8_t *w, size_t rb, int64_t rows)
{
    int off[2];
    if (!scale_offsets(t, off)) {
        float *row = malloc(N * sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            for (int i = 0; i < N; i++)
                row[i] = (float)(((r + 1) * (i + 3)) % 97) / 400.0f - 0.1f;
            qt_quantize_row(t, row, w + (size_t)r * rb, N);
        }
        free(row);
        return;
    }
    size_t bytes = rb * (size_t)rows, bb = qt_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        w[i] = rnd8();
    uint16_t h = ks_f32_to_f16(0.01f);
    for (size_t b = 0; b < bytes / bb; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) memcpy(w + b * bb + off[k], &h, 2);
}

/* ---- roofline probe ---- */

typedef struct probe_arg {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} probe_arg;

static void *probe_fn(void *arg)
{
    probe_arg *a = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= a->n; i += 4) {
        s0 += a->p[i];
        s1 += a->p[i + 1];
        s2 += a->p[i + 2];
        s3 += a->p[i + 3];
    }
    a->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static double probe(const uint64_t *buf, size_t n, int n_threads, double secs)
{
    pthread_t th[8];
    probe_arg a[8];
    int64_t reps = 0;
    double t0 = ks_time_now(), t1;
    do {
        for (int k = 0; k < n_threads; k++) {
            a[k] = (probe_arg){.p = buf + n / (size_t)n_threads * (size_t)k,
                               .n = n / (size_t)n_threads};
            pthread_create(&th[k], NULL, probe_fn, &a[k]);
        }
        for (int k = 0; k < n_threads; k++)
            pthread_join(th[k], NULL);
        reps++;
        t1 = ks_time_now();
    } while (t1 - t0 < secs);
    return (double)n * 8.0 * (double)reps / (t1 - t0) / 1e9;
}

static bool wanted(const char *list, qt_type t)
{
    if (!list) return true;
    const char *name = qt_type_name(t);
    size_t len = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += len)
        if ((p == list || p[-1] == ',') && (p[len] == ',' || p[len] == 0)) return true;
    return false;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    const char *only = argc > 2 ? argv[2] : NULL;
    const qt_type types[] = {QT_F32,  QT_F16,  QT_BF16, QT_Q8_0,   QT_Q4_0,
                             QT_Q4_1, QT_Q5_0, QT_Q5_1, QT_Q2_K,   QT_Q3_K,
                             QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_IQ4_NL, QT_IQ4_XS};
    const char *impl_names[] = {"scalar", "avx2", "avx512"};
    double q4k[3] = {0, 0, 0};
    float *xf = malloc(N * sizeof(float)), *y = malloc(BIG / 64 * sizeof(float));
    uint8_t *x = malloc(N * 4 + 1024);
    for (int i = 0; i < N; i++)
        xf[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    printf("%-7s %-7s %10s %10s %8s\n", "type", "impl", "dram GB/s", "l3 GB/s", "vs q4_K");
    /* Q4_K first: the yardstick of the last column */
    for (int pass = 0; pass < 2; pass++)
        for (size_t ti = 0; ti < KS_ARRAY_LEN(types); ti++) {
            qt_type t = types[ti], xt = qt_vec_dot_type(t);
            if ((pass == 0) != (t == QT_Q4_K) || (!wanted(only, t) && t != QT_Q4_K)) continue;
            size_t rb = qt_row_bytes(t, N), xb = qt_row_bytes(xt, N);
            int64_t rows = (int64_t)(BIG / rb);
            uint8_t *w = malloc(rb * (size_t)rows);
            if (!w || !y || !x) return 1;
            fill_rows(t, w, rb, rows);
            qt_quantize_row(xt, xf, x, N);
            for (int impl = QT_IMPL_SCALAR; impl <= QT_IMPL_AVX512; impl++) {
                if (qt_set_impl((qt_impl)impl) != 0) continue;
                double s = impl == QT_IMPL_SCALAR ? secs / 4 : secs;
                double dram = run(t, w, rb, rows, x, xb, y, s);
                double l3 = run(t, w, rb, N, x, xb, y, s);
                if (t == QT_Q4_K) q4k[impl] = dram;
                if (pass == 1 || wanted(only, t))
                    printf("%-7s %-7s %10.2f %10.2f %8.2f\n", qt_type_name(t), impl_names[impl],
                           dram, l3, q4k[impl] > 0 ? dram / q4k[impl] : 0.0);
                fflush(stdout);
            }
            free(w);
        }
    uint64_t *buf = malloc(BIG);
    if (!buf) return 1;
    memset(buf, 1, BIG);
    for (int nt = 1; nt <= 2; nt++)
        printf("read-bandwidth probe (sum of 256 MiB, %d thread%s): %.2f GB/s\n", nt,
               nt > 1 ? "s" : "", probe(buf, BIG / 8, nt, secs));
    free(buf);
    free(xf);
    free(x);
    free(y);
    return 0;
}

/* bench_quant.c - single-thread matvec (decode) speed per weight type and implementation,
 * next to the machine's read bandwidth.
 *
 * Prints GB/s of weight bytes streamed for a 4096-wide matvec (one activation vector, as in
 * decode), per type and ISA (scalar, avx2, avx512). The weights span 256 MiB so they come
 * from DRAM, not the 32 MiB L3 ("dram"); "l3" repeats one 4096-row matrix (the kernel's
 * compute rate). Rates are per second of this thread's CPU time (the machine is shared);
 * each figure is the best of several short runs alternating with Q4_K's, and
 * the last columns are the ratios to Q4_K with the same ISA: decode reads every weight byte
 * once per token, so a type at >= 1.0 decodes at least as fast per byte read as Q4_K. The
 * last lines are a roofline probe: a plain sum of a 256 MiB buffer with 1 and 2 threads,
 * timed the same way (CPU seconds, of the slowest thread).
 * Usage: bench_quant [SECONDS per run (0.1)] [TYPES, e.g. q4_K,q5_0 (all)] [RUNS (5)]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvserve/args.h"
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

/* This thread's CPU time: on a shared machine, time spent descheduled is not the kernel's. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double run(qt_type t, const uint8_t *w, size_t rb, int64_t rows, const void *x, size_t xb,
                  float *y, double secs)
{
    int64_t reps = 0;
    double t0 = cpu_now(), t1;
    do {
        qt_matvec(t, N, w, rb, rows, x, xb, 1, y, 1);
        reps++;
        t1 = cpu_now();
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
    double cpu; /* this thread's CPU seconds for its part */
} probe_arg;

static void *probe_fn(void *arg)
{
    probe_arg *a = arg;
    double t0 = cpu_now();
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= a->n; i += 4) {
        s0 += a->p[i];
        s1 += a->p[i + 1];
        s2 += a->p[i + 2];
        s3 += a->p[i + 3];
    }
    a->sum = s0 + s1 + s2 + s3;
    a->cpu = cpu_now() - t0;
    return NULL;
}

/* GB/s of one pass over the buffer split between n_threads, timed like the kernels (CPU
 * seconds, of the slowest thread). */
static double probe(const uint64_t *buf, size_t n, int n_threads)
{
    pthread_t th[8];
    probe_arg a[8];
    double worst = 0;
    uint64_t sink = 0;
    for (int k = 0; k < n_threads; k++) {
        a[k] =
            (probe_arg){.p = buf + n / (size_t)n_threads * (size_t)k, .n = n / (size_t)n_threads};
        pthread_create(&th[k], NULL, probe_fn, &a[k]);
    }
    for (int k = 0; k < n_threads; k++) {
        pthread_join(th[k], NULL);
        worst = fmax(worst, a[k].cpu);
        sink += a[k].sum;
    }
    if (sink == 42) printf(" "); /* keeps the sums alive */
    return (double)n * 8.0 / worst / 1e9;
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

typedef struct wset {
    qt_type t;
    size_t rb, xb;
    int64_t rows;
    uint8_t *w, *x;
} wset;

static int wset_make(qt_type t, const float *xf, wset *ws)
{
    qt_type xt = qt_vec_dot_type(t);
    ws->t = t;
    ws->rb = qt_row_bytes(t, N);
    ws->xb = qt_row_bytes(xt, N);
    ws->rows = (int64_t)(BIG / ws->rb);
    ws->w = malloc(ws->rb * (size_t)ws->rows);
    ws->x = malloc(ws->xb);
    if (!ws->w || !ws->x) return -1;
    fill_rows(t, ws->w, ws->rb, ws->rows);
    qt_quantize_row(xt, xf, ws->x, N);
    return 0;
}

/* Best of `reps` runs, alternating with Q4_K (A B A B ...): on a shared machine the best run
 * is the one that had a core to itself, and the alternation gives both the same luck.
 * out: type dram, type l3, q4_K dram, q4_K l3. */
static void measure(const wset *a, const wset *q4k, float *y, double secs, int reps, double out[4])
{
    memset(out, 0, 4 * sizeof(double));
    for (int r = 0; r < reps; r++) {
        out[0] = fmax(out[0], run(a->t, a->w, a->rb, a->rows, a->x, a->xb, y, secs));
        out[1] = fmax(out[1], run(a->t, a->w, a->rb, N, a->x, a->xb, y, secs));
        if (q4k == a) continue;
        out[2] = fmax(out[2], run(q4k->t, q4k->w, q4k->rb, q4k->rows, q4k->x, q4k->xb, y, secs));
        out[3] = fmax(out[3], run(q4k->t, q4k->w, q4k->rb, N, q4k->x, q4k->xb, y, secs));
    }
    if (q4k == a) {
        out[2] = out[0];
        out[3] = out[1];
    }
}

static const qt_type k_types[] = {QT_F32,  QT_F16,  QT_BF16, QT_Q8_0,   QT_Q4_0,
                                  QT_Q4_1, QT_Q5_0, QT_Q5_1, QT_Q2_K,   QT_Q3_K,
                                  QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_IQ4_NL, QT_IQ4_XS};

static int bench_type(qt_type t, const wset *q4k, const float *xf, float *y, double secs, int reps)
{
    static const char *impl_names[] = {"scalar", "avx2", "avx512"};
    wset ws;
    bool own = t != QT_Q4_K;
    if (own && wset_make(t, xf, &ws)) return -1;
    const wset *a = own ? &ws : q4k;
    for (int impl = QT_IMPL_SCALAR; impl <= QT_IMPL_AVX512; impl++) {
        if (qt_set_impl((qt_impl)impl) != 0) continue;
        double r[4];
        bool scalar = impl == QT_IMPL_SCALAR; /* slow: one short run */
        measure(a, q4k, y, scalar ? secs / 2 : secs, scalar ? 1 : reps, r);
        printf("%-7s %-7s %10.2f %10.2f %10.2f %10.2f %8.2f %8.2f\n", qt_type_name(t),
               impl_names[impl], r[0], r[1], r[2], r[3], r[0] / r[2], r[1] / r[3]);
        fflush(stdout);
    }
    if (own) {
        free(ws.w);
        free(ws.x);
    }
    return 0;
}

int main(int argc, char **argv)
{
    double secs = 0.1;
    const char *only = NULL;
    int32_t reps = 5;
    const ks_arg args[] = {
        {"SECONDS", 0, KS_ARG_DOUBLE, &secs, 0.001, 600, .help = "time per run",
         .flags = KS_ARG_POSITIONAL},
        {"TYPES", 0, KS_ARG_STRING, &only, .help = "comma-separated types, e.g. q4_K,q5_0 (all)",
         .flags = KS_ARG_POSITIONAL | KS_ARG_NO_DEFAULT},
        {"RUNS", 0, KS_ARG_I32, &reps, 1, 100, .help = "runs per figure (the best is kept)",
         .flags = KS_ARG_POSITIONAL},
    };
    const ks_args_spec spec = {"bench_quant",
                               "Dot-kernel GB/s of each weight type and ISA, next to Q4_K and a "
                               "read-bandwidth probe.",
                               args, KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    if (only && !only[0]) only = NULL;
    float *xf = malloc(N * sizeof(float)), *y = malloc(BIG / 64 * sizeof(float));
    if (!xf || !y) return 1;
    for (int i = 0; i < N; i++)
        xf[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    wset q4k;
    if (wset_make(QT_Q4_K, xf, &q4k)) return 1;
    printf("%-7s %-7s %10s %10s %10s %10s %8s %8s\n", "type", "impl", "dram GB/s", "l3 GB/s",
           "q4_K dram", "q4_K l3", "dram/q4K", "l3/q4K");
    for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++)
        if (wanted(only, k_types[ti]) && bench_type(k_types[ti], &q4k, xf, y, secs, reps)) return 1;
    free(q4k.w);
    free(q4k.x);
    uint64_t *buf = malloc(BIG);
    if (!buf) return 1;
    memset(buf, 1, BIG);
    for (int nt = 1; nt <= 2; nt++) {
        double best = 0;
        for (int r = 0; r < 2 * reps; r++)
            best = fmax(best, probe(buf, BIG / 8, nt));
        printf("read-bandwidth probe (sum of 256 MiB, %d thread%s, best of %d): %.2f GB/s\n", nt,
               nt > 1 ? "s" : "", 2 * reps, best);
    }
    free(buf);
    free(xf);
    free(y);
    return 0;
}

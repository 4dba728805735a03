/* bench_bandwidth.c - the machine's memory read bandwidth, the roofline of decode.
 *
 *   bench_bandwidth [--threads 2] [--mib 256] [--reps 10]
 *
 * Decode reads every weight byte (and the K/V of every past token) once per token, so its
 * speed limit is bytes per token / read bandwidth. This probe sums a buffer much larger than
 * the last-level cache, split between `threads` threads, and prints `bandwidth: X GB/s`, the
 * best of `reps` passes. Each pass is timed by the CPU time of its slowest thread, so a
 * thread that is descheduled on a shared machine does not count its wait as reading time
 * (wall time under a load average of 15 reports a tenth of the bandwidth).
 * bench/compare.sh reads that line.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvserve/args.h"
#include "kvserve/base.h"

typedef struct probe_part {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
    double cpu; /* this thread's CPU seconds */
} probe_part;

static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *probe_part_run(void *arg)
{
    probe_part *a = arg;
    double t0 = thread_cpu_now();
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= a->n; i += 4) {
        s0 += a->p[i];
        s1 += a->p[i + 1];
        s2 += a->p[i + 2];
        s3 += a->p[i + 3];
    }
    a->sum = s0 + s1 + s2 + s3;
    a->cpu = thread_cpu_now() - t0;
    return NULL;
}

/* GB/s of one pass over n words split between n_threads; *sink keeps the sums alive. */
static double probe_pass(const uint64_t *buf, size_t n, int n_threads, uint64_t *sink)
{
    pthread_t th[64];
    probe_part a[64];
    size_t per = n / (size_t)n_threads;
    double worst = 0;
    for (int k = 0; k < n_threads; k++) {
        a[k] = (probe_part){.p = buf + per * (size_t)k, .n = per};
        if (pthread_create(&th[k], NULL, probe_part_run, &a[k])) return -1;
    }
    for (int k = 0; k < n_threads; k++) {
        pthread_join(th[k], NULL);
        *sink += a[k].sum;
        worst = a[k].cpu > worst ? a[k].cpu : worst;
    }
    return (double)per * (double)n_threads * 8.0 / worst / 1e9;
}

int main(int argc, char **argv)
{
    int32_t threads = 2, mib = 256, reps = 10;
    const ks_arg args[] = {
        {"threads", 't', KS_ARG_I32, &threads, 1, 64, .help = "reading threads"},
        {"mib", 0, KS_ARG_I32, &mib, 16, 16384, .help = "buffer size in MiB (>> the L3)"},
        {"reps", 'r', KS_ARG_I32, &reps, 1, 1000, .help = "passes; the best is printed"},
    };
    const ks_args_spec spec = {"bench_bandwidth", "Memory read bandwidth (the decode roofline).",
                               args, KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    size_t n = ((size_t)mib << 20) / 8;
    uint64_t *buf = malloc(n * 8), sink = 0;
    if (!buf) {
        fprintf(stderr, "bench_bandwidth: cannot allocate %d MiB\n", mib);
        return 1;
    }
    memset(buf, 1, n * 8); /* touch every page before timing */
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double g = probe_pass(buf, n, threads, &sink);
        if (g < 0) {
            fprintf(stderr, "bench_bandwidth: cannot start threads\n");
            free(buf);
            return 1;
        }
        best = g > best ? g : best;
    }
    printf("bandwidth: %.2f GB/s (%d thread%s, %d MiB, best of %d, CPU time)\n", best, threads,
           threads > 1 ? "s" : "", mib, reps);
    if (sink == 42) printf("\n"); /* the sums are used */
    free(buf);
    return 0;
}

/* bench_model.c - prefill and decode speed of the forward pass, like llama-bench's pp/tg.
 *
 *   bench_model --model M [--prompt 512] [--gen 32] [--threads 2] [--reps 3] [--kv-dtype f16]
 *               [--numerics fast|llama] [--seqs N]
 * --seqs N decodes N sequences together (continuous batching) and reports all their tokens.
 *
 * Prefill: one batch of `prompt` random tokens from an empty cache (pp). Decode: `gen` tokens
 * one at a time from an empty cache (tg). Prints the median tokens/s over `reps` runs after a
 * warm-up, and the peak RSS of the process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int32_t g_seqs = 1; /* sequences decoded together (--seqs) */

/* n decode steps of g_seqs sequences in one batch; returns generated tokens/s (all seqs). */
static double run_decode(engine *e, const int32_t *toks, int32_t n, float *logits)
{
    kv_seq *seqs[64];
    int32_t ns = 0;
    int rc = 0;
    for (; ns < g_seqs && !rc; ns++) rc = engine_new_seq(e, NULL, &seqs[ns]);
    double t0 = ks_time_now();
    for (int32_t i = 0; i < n && !rc; i++) {
        model_seq_batch b[64];
        for (int32_t s = 0; s < ns; s++)
            b[s] = (model_seq_batch){.kv = seqs[s], .tokens = &toks[(i + s) % n],
                                     .n_tokens = 1, .logits = logits + (size_t)s * model_get_hparams(e->m)->n_vocab};
        rc = model_forward(e->ctx, b, ns);
    }
    double dt = ks_time_now() - t0;
    for (int32_t s = 0; s < ns; s++) kv_seq_destroy(seqs[s]);
    return rc ? -1 : (double)n * ns / dt;
}

static double run_once(engine *e, const int32_t *toks, int32_t n, bool decode, float *logits)
{
    if (decode) return run_decode(e, toks, n, logits);
    kv_seq *seq = NULL;
    if (engine_new_seq(e, NULL, &seq)) return -1;
    double t0 = ks_time_now();
    int rc = 0;
    {
        model_seq_batch b = {.kv = seq, .tokens = toks, .n_tokens = n, .logits = logits,
                             .prompt_chunk = true, .prompt_last = true};
        rc = model_forward(e->ctx, &b, 1);
    }
    double dt = ks_time_now() - t0;
    kv_seq_destroy(seq);
    return rc ? -1 : n / dt;
}

static double median_rate(engine *e, const int32_t *toks, int32_t n, bool decode, int reps,
                          float *logits)
{
    double r[64];
    if (run_once(e, toks, n, decode, logits) < 0) return -1; /* warm-up */
    for (int i = 0; i < reps; i++)
        if ((r[i] = run_once(e, toks, n, decode, logits)) < 0) return -1;
    qsort(r, (size_t)reps, sizeof(double), cmp_double);
    return r[reps / 2];
}

int main(int argc, char **argv)
{
    static const char *const kDtypes[] = {"f16", "f32", NULL};
    static const char *const kNumerics[] = {"fast", "llama", NULL};
    const char *model = NULL;
    int64_t prompt = 512, gen = 32, threads = cli_default_threads(), reps = 3;
    int dtype = 0, numerics = 0;
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"prompt", 0, KS_ARG_INT, &prompt, 1, 8192, .help = "prompt tokens (prefill speed)"},
        {"gen", 0, KS_ARG_INT, &gen, 1, 8192, .help = "decoded tokens (decode speed)"},
        {"threads", 't', KS_ARG_INT, &threads, 1, 256, .help = "compute threads"},
        {"reps", 0, KS_ARG_INT, &reps, 1, 63, .help = "repetitions; the median is printed"},
        {"kv-dtype", 0, KS_ARG_ENUM, &dtype, .choices = kDtypes, .help = "KV cache storage"},
        {"numerics", 0, KS_ARG_ENUM, &numerics, .choices = kNumerics,
         .help = "our fast kernels or llama.cpp's order"},
        {"seqs", 0, KS_ARG_I32, &g_seqs, 1, 64, .help = "sequences decoded together"},
    };
    const ks_args_spec spec = {"bench_model", "Prefill and decode speed of one model.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    ks_dtype dt = dtype ? KS_DTYPE_F32 : KS_DTYPE_F16;
    bool exact = numerics == 1;
    int32_t n_ctx = (int32_t)KS_MAX(prompt, gen) + 16;
    engine_params ep = {.model_path = model, .n_threads = (int32_t)threads, .n_ctx = n_ctx,
                            .n_batch = (int32_t)KS_MAX(prompt, 64), .n_seqs = g_seqs,
                            .kv_dtype = dt,
                            .llama_numerics = exact};
    engine e;
    if (engine_open(&ep, &e)) return 1;
    const model_hparams *hp = model_get_hparams(e.m);
    int32_t n = (int32_t)KS_MAX(prompt, gen);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
    float *logits = malloc(sizeof(float) * (size_t)hp->n_vocab * (size_t)g_seqs);
    uint32_t x = 12345;
    for (int32_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        toks[i] = (int32_t)((x >> 8) % (uint32_t)hp->n_vocab);
    }
    double pp = median_rate(&e, toks, (int32_t)prompt, false, (int)reps, logits);
    double tg = median_rate(&e, toks, (int32_t)gen, true, (int)reps, logits);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model %s (%s, %.1f MiB weights), threads %lld, numerics %s\n", model, hp->arch_name,
           (double)model_weight_bytes(e.m) / (1 << 20), (long long)threads,
           exact ? "llama" : "fast");
    printf("pp%lld: %.1f tokens/s\n", (long long)prompt, pp);
    printf("tg%lld: %.1f tokens/s (%d sequence%s decoded together)\n", (long long)gen, tg,
           g_seqs, g_seqs > 1 ? "s" : "");
    printf("peak RSS: %.1f MiB\n", ru.ru_maxrss / 1024.0);
    free(toks);
    free(logits);
    engine_close(&e);
    return pp < 0 || tg < 0;
}

/* bench_model.c - prefill and decode speed of the forward pass, like llama-bench's pp/tg/-d.
 *
 *   bench_model --model M [--prompt 512] [--gen 32] [--depth N] [--kv-policy SPEC]
 *               [--threads 2] [--reps 3] [--batch 512] [--kv-dtype T] [--k-dtype T] [--v-dtype T]
 *               [--numerics llama|fast] [--seqs N]
 *
 * Prefill (pp): `prompt` random tokens from an empty cache, in chunks of `batch` tokens (the
 * last chunk marked as the prompt's end, so a policy compresses or sparsifies as it would in
 * the server). Decode (tg): `gen` tokens one at a time. With --depth N the decode follows N
 * tokens of context: the N tokens are prefilled once, untimed, and then every repetition
 * decodes `gen` more tokens on the same cache (depth grows by gen per repetition, a few
 * tokens against thousands; re-prefilling 16k tokens per repetition would dominate the run).
 * Prints `ppP: X`, `tgG: X` and with depth `tgG@dN: X` in tokens/s, the median of `reps`
 * runs after a warm-up; --prompt 0 or --gen 0 skips that part. The numerics default to the
 * server's (`llama`, llama.cpp's summation orders); `fast` is kvserve's own kernels.
 * --seqs N decodes N sequences together (continuous batching) and reports all their tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"

typedef struct bench_cfg {
    int64_t prompt, gen, depth, threads, reps, batch;
    int32_t seqs;
    kv_policy_config policy;
} bench_cfg;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Feeds n prompt tokens to seq in chunks of `batch`; the last chunk ends the prompt. */
static int prefill(engine *e, kv_seq *seq, const int32_t *toks, int64_t n, int64_t batch,
                   float *logits)
{
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i += batch) {
        int32_t m = (int32_t)KS_MIN(batch, n - i);
        bool last = i + m >= n;
        model_seq_batch b = {.kv = seq,
                             .tokens = toks + i,
                             .n_tokens = m,
                             .logits = last ? logits : NULL,
                             .prompt_chunk = true,
                             .prompt_last = last};
        rc = model_forward(e->ctx, &b, 1);
    }
    return rc;
}

/* n decode steps of every sequence in seqs together; returns generated tokens/s. */
static double decode(engine *e, kv_seq **seqs, int32_t ns, const int32_t *toks, int64_t n,
                     float *logits)
{
    int32_t n_vocab = model_get_hparams(e->m)->n_vocab;
    int rc = 0;
    double t0 = ks_time_now();
    for (int64_t i = 0; i < n && !rc; i++) {
        model_seq_batch b[64];
        for (int32_t s = 0; s < ns; s++)
            b[s] = (model_seq_batch){.kv = seqs[s],
                                     .tokens = &toks[(i + s) % n],
                                     .n_tokens = 1,
                                     .logits = logits + (size_t)s * (size_t)n_vocab};
        rc = model_forward(e->ctx, b, ns);
    }
    double dt = ks_time_now() - t0;
    return rc ? -1 : (double)n * ns / dt;
}

/* One prefill run on a fresh cache; tokens/s. */
static double run_prefill(engine *e, const bench_cfg *c, const int32_t *toks, float *logits)
{
    kv_seq *seq = NULL;
    if (engine_new_seq(e, &c->policy, &seq)) return -1;
    double t0 = ks_time_now();
    int rc = prefill(e, seq, toks, c->prompt, c->batch, logits);
    double dt = ks_time_now() - t0;
    kv_seq_destroy(seq);
    return rc ? -1 : (double)c->prompt / dt;
}

/* Median prefill rate of reps runs after a warm-up. */
static double median_prefill(engine *e, const bench_cfg *c, const int32_t *toks, float *logits)
{
    double r[64];
    if (run_prefill(e, c, toks, logits) < 0) return -1;
    for (int i = 0; i < c->reps; i++)
        if ((r[i] = run_prefill(e, c, toks, logits)) < 0) return -1;
    qsort(r, (size_t)c->reps, sizeof(double), cmp_double);
    return r[c->reps / 2];
}

/* Median decode rate: seqs fresh caches (or one prefilled with `depth` tokens), then a
 * warm-up and reps timed runs of gen tokens each, all on the same caches. */
static double median_decode(engine *e, const bench_cfg *c, const int32_t *toks, float *logits)
{
    kv_seq *seqs[64];
    double r[64], rate = 0;
    int32_t ns = 0;
    int rc = 0;
    for (; ns < c->seqs && !rc; ns++)
        rc = engine_new_seq(e, &c->policy, &seqs[ns]);
    if (rc) ns--;
    for (int32_t s = 0; s < ns && !rc && c->depth > 0; s++)
        rc = prefill(e, seqs[s], toks, c->depth, c->batch, logits);
    for (int i = -1; i < c->reps && !rc && rate >= 0; i++) {
        rate = decode(e, seqs, ns, toks, c->gen, logits);
        if (i >= 0) r[i] = rate;
    }
    for (int32_t s = 0; s < ns; s++)
        kv_seq_destroy(seqs[s]);
    if (rc || rate < 0) return -1;
    qsort(r, (size_t)c->reps, sizeof(double), cmp_double);
    return r[c->reps / 2];
}

static int32_t *random_tokens(int64_t n, int32_t n_vocab)
{
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)KS_MAX(n, 1));
    uint32_t x = 12345;
    for (int64_t i = 0; toks && i < n; i++) {
        x = x * 1664525u + 1013904223u;
        toks[i] = (int32_t)((x >> 8) % (uint32_t)n_vocab);
    }
    return toks;
}

static void print_results(const bench_cfg *c, double pp, double tg)
{
    if (c->prompt > 0) printf("pp%lld: %.2f\n", (long long)c->prompt, pp);
    if (c->gen > 0 && c->depth > 0)
        printf("tg%lld@d%lld: %.2f\n", (long long)c->gen, (long long)c->depth, tg);
    else if (c->gen > 0)
        printf("tg%lld: %.2f\n", (long long)c->gen, tg);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("(tokens/s, median of %lld; %d sequence%s decoded together; peak RSS %.1f MiB)\n",
           (long long)c->reps, c->seqs, c->seqs > 1 ? "s" : "", ru.ru_maxrss / 1024.0);
}

static int bench_run(const bench_cfg *c, const engine_params *ep)
{
    engine e;
    if (engine_open(ep, &e)) return 1;
    const model_hparams *hp = model_get_hparams(e.m);
    int32_t *toks = random_tokens(KS_MAX(KS_MAX(c->prompt, c->gen), c->depth), hp->n_vocab);
    float *logits = malloc(sizeof(float) * (size_t)hp->n_vocab * (size_t)c->seqs);
    double pp = 0, tg = 0;
    if (toks && logits) {
        printf("model %s (%s, %.1f MiB weights), threads %lld, numerics %s, kv-policy %s\n",
               ep->model_path, hp->arch_name, (double)model_weight_bytes(e.m) / (1 << 20),
               (long long)c->threads, ep->llama_numerics ? "llama" : "fast",
               kv_policy_config_desc(&c->policy)->name);
        if (c->prompt > 0) pp = median_prefill(&e, c, toks, logits);
        if (c->gen > 0 && pp >= 0) tg = median_decode(&e, c, toks, logits);
        print_results(c, pp, tg);
    }
    int bad = !toks || !logits || pp < 0 || tg < 0;
    if (bad) fprintf(stderr, "bench_model: a forward pass failed\n");
    free(toks);
    free(logits);
    engine_close(&e);
    return bad;
}

int main(int argc, char **argv)
{
    static const char *const kNumerics[] = {"llama", "fast", NULL};
    const char *model = NULL;
    bench_cfg c = {.prompt = 512,
                   .gen = 32,
                   .threads = cli_default_threads(),
                   .reps = 3,
                   .batch = 512,
                   .seqs = 1};
    kv_policy_config_defaults(&c.policy);
    int numerics = 0;
    ks_dtype kv[2] = {KS_DTYPE_F16, KS_DTYPE_F16};
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"prompt", 'p', KS_ARG_INT, &c.prompt, 0, 1 << 20, .help = "prompt tokens (0: no pp)"},
        {"gen", 'n', KS_ARG_INT, &c.gen, 0, 1 << 16, .help = "decoded tokens (0: no tg)"},
        {"depth", 'd', KS_ARG_INT, &c.depth, 0, 1 << 20,
         .help = "tokens of context before the decode (prefilled once, untimed)"},
        {"kv-policy", 0, KS_ARG_FUNC, &c.policy, .parse = kv_policy_config_parse_arg,
         .metavar = "SPEC", .help = "KV policy NAME or NAME:key=value,... (default full)",
         .flags = KS_ARG_NO_DEFAULT},
        {"threads", 't', KS_ARG_INT, &c.threads, 1, 256, .help = "compute threads"},
        {"reps", 'r', KS_ARG_INT, &c.reps, 1, 63, .help = "repetitions; the median is printed"},
        {"batch", 'b', KS_ARG_INT, &c.batch, 1, 1 << 16, .help = "prefill chunk tokens"},
        KS_DTYPE_ARG_ROWS(kv),
        {"numerics", 0, KS_ARG_ENUM, &numerics, .choices = kNumerics,
         .help = "llama.cpp's orders (the server's) or kvserve's fast kernels"},
        {"seqs", 0, KS_ARG_I32, &c.seqs, 1, 64, .help = "sequences decoded together"},
    };
    const ks_args_spec spec = {"bench_model", "Prefill and decode speed of one model.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    if (c.prompt == 0 && c.gen == 0) {
        fprintf(stderr, "bench_model: --prompt and --gen are both 0: nothing to measure\n");
        return 2;
    }
    c.batch = KS_MIN(c.batch, KS_MAX(KS_MAX(c.prompt, c.depth), 1));
    int64_t n_ctx = KS_MAX(c.prompt, c.depth + (c.reps + 1) * c.gen) + 16;
    engine_params ep = {.model_path = model,
                        .n_threads = (int32_t)c.threads,
                        .n_ctx = (int32_t)n_ctx,
                        .n_batch = (int32_t)KS_MAX(c.batch, 64),
                        .n_seqs = c.seqs,
                        .k_dtype = kv[0],
                        .v_dtype = kv[1],
                        .kv_residual = 128, /* KIVI's R, as the server's default */
                        .llama_numerics = numerics == 0};
    return bench_run(&c, &ep);
}

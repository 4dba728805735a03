/* bench_grammar.c - the cost of grammar-constrained sampling per generated token.
 *
 *   bench_grammar --model M [--gen 256] [--threads 2] [--reps 3] [--temp 0]
 *                 [--schema FILE.json | --gbnf FILE] (default: any JSON object)
 *
 * Decodes `gen` tokens one at a time after a short prompt, twice per repetition: sampling
 * unconstrained, then through the server's own sampler glue (sched_sample.c) with the grammar
 * (logit mask over the token trie when the model's choice is rejected). When the grammar
 * finishes a document it starts a new one, so every step is constrained. Prints the median
 * ms/token of each mode, the sampler's share, and the overhead; plus the one-time costs
 * (grammar compile, token-trie build).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"
#include "server/json_schema.h"
#include "server/sched_sample.h"
#include "server/scheduler.h"

typedef struct bg_run {
    double total, sampler;   /* seconds over the whole decode */
    int64_t masks, computed; /* full masks needed, and those not found in the state cache */
} bg_run;

static void add_stats(const sch_sampler *s, bg_run *out)
{
    int64_t a = 0, b = 0;
    if (s->gm) gram_matcher_stats(s->gm, &a, &b);
    out->masks += a;
    out->computed += b;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int sampler_start(sch_sampler *s, float temp, const gram *g, const gram_vocab *gv,
                         const int32_t *prompt, int32_t n_prompt, int32_t n_vocab)
{
    sch_sampling sp;
    sch_sampling_default(&sp);
    sp.temperature = temp;
    sp.seed = 42;
    sp.has_seed = true;
    sch_constraints c = {.grammar = g, .gvocab = gv};
    return sch_sampler_init(s, &sp, &c, prompt, n_prompt, n_vocab);
}

/* One decode of n tokens; g NULL = unconstrained. */
static int decode(engine *e, const int32_t *prompt, int32_t n_prompt, int32_t n, float temp,
                  const gram *g, const gram_vocab *gv, float *logits, bg_run *out)
{
    int32_t n_vocab = model_get_hparams(e->m)->n_vocab;
    kv_seq *seq = NULL;
    sch_sampler smp;
    int rc = engine_new_seq(e, NULL, &seq);
    if (!rc) rc = sampler_start(&smp, temp, g, gv, prompt, n_prompt, n_vocab);
    if (rc) return rc;
    model_seq_batch b = {.kv = seq,
                         .tokens = prompt,
                         .n_tokens = n_prompt,
                         .logits = logits,
                         .prompt_chunk = true,
                         .prompt_last = true};
    rc = model_forward(e->ctx, &b, 1);
    double t0 = ks_time_now(), ts = 0;
    out->masks = out->computed = 0;
    for (int32_t i = 0; i < n && !rc; i++) {
        sch_event ev = {0};
        double t1 = ks_time_now();
        int32_t tok = sch_sampler_sample(&smp, logits, n_vocab, &ev);
        if (tok < 0) {
            rc = tok;
            break;
        }
        sch_sampler_accept(&smp, tok);
        bool restart =
            g && (sch_sampler_grammar_done(&smp) || tok_is_eog(model_get_vocab(e->m), tok));
        ts += ks_time_now() - t1;
        if (restart) { /* a finished document: start the next one (not timed as sampling) */
            add_stats(&smp, out);
            sch_sampler_deinit(&smp);
            rc = sampler_start(&smp, temp, g, gv, prompt, n_prompt, n_vocab);
        }
        b = (model_seq_batch){.kv = seq, .tokens = &tok, .n_tokens = 1, .logits = logits};
        if (!rc) rc = model_forward(e->ctx, &b, 1);
    }
    out->total = ks_time_now() - t0;
    out->sampler = ts;
    add_stats(&smp, out);
    sch_sampler_deinit(&smp);
    kv_seq_destroy(seq);
    return rc;
}

static char *load_grammar(const char *schema_path, const char *gbnf_path)
{
    char *text = NULL;
    size_t len;
    ks_diag d;
    if (!schema_path && !gbnf_path) return strdup(api_json_object_gbnf());
    if (ks_read_file(schema_path ? schema_path : gbnf_path, &text, &len, &d)) {
        fprintf(stderr, "bench_grammar: %s\n", d.msg);
        return NULL;
    }
    if (!schema_path) return text;
    json_t *s = json_loadb(text, len, 0, NULL);
    free(text);
    char *g = NULL;
    if (!s || api_schema_to_gbnf(s, &g, &d))
        fprintf(stderr, "bench_grammar: bad schema %s\n", d.msg);
    json_decref(s);
    return g;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *schema = NULL, *gbnf = NULL;
    int64_t gen = 256, threads = cli_default_threads(), reps = 3;
    float temp = 0;
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"schema", 0, KS_ARG_STRING, &schema, .metavar = "FILE",
         .help = "JSON Schema to constrain with (default: any JSON object)"},
        {"gbnf", 0, KS_ARG_STRING, &gbnf, .metavar = "FILE", .help = "GBNF grammar instead"},
        {"gen", 0, KS_ARG_INT, &gen, 1, 4096, .help = "decoded tokens per run"},
        {"threads", 't', KS_ARG_INT, &threads, 1, 256, .help = "compute threads"},
        {"reps", 0, KS_ARG_INT, &reps, 1, 31, .help = "repetitions; the median is printed"},
        {"temp", 0, KS_ARG_FLOAT, &temp, 0, 10, .help = "sampling temperature (0: greedy)"},
    };
    const ks_args_spec spec = {"bench_grammar",
                               "Grammar-constrained sampling cost per token against plain decode.",
                               args, KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    char *src = load_grammar(schema, gbnf);
    if (!src) return 1;
    engine_params ep = {.model_path = model,
                        .n_threads = (int32_t)threads,
                        .n_ctx = (int32_t)gen + 64,
                        .n_batch = 64,
                        .n_seqs = 1,
                        .k_dtype = KS_DTYPE_F16,
                        .v_dtype = KS_DTYPE_F16};
    engine e;
    if (engine_open(&ep, &e)) return 1;
    const tok_vocab *v = model_get_vocab(e.m);
    double t0 = ks_time_now();
    gram *g = NULL;
    ks_diag d;
    if (gram_compile(src, strlen(src), &g, &d)) {
        fprintf(stderr, "bench_grammar: %s\n", d.msg);
        return 1;
    }
    double t_compile = ks_time_now() - t0;
    t0 = ks_time_now();
    gram_vocab *gv = NULL;
    if (gram_vocab_create(v, &gv)) return 1;
    double t_trie = ks_time_now() - t0;
    int32_t prompt[64];
    const char *ptext = "Answer with JSON:";
    int32_t n_prompt = tok_encode(v, ptext, strlen(ptext), true, false, prompt, 64);
    float *logits = malloc(sizeof(float) * (size_t)model_get_hparams(e.m)->n_vocab);
    double plain[32], cons[32], smp_plain[32], smp_cons[32];
    bg_run last = {0};
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) { /* r = -1: warm-up */
        bg_run a, b;
        rc = decode(&e, prompt, n_prompt, (int32_t)gen, temp, NULL, NULL, logits, &a);
        if (!rc) rc = decode(&e, prompt, n_prompt, (int32_t)gen, temp, g, gv, logits, &b);
        if (r < 0 || rc) continue;
        plain[r] = a.total * 1e3 / (double)gen;
        cons[r] = b.total * 1e3 / (double)gen;
        smp_plain[r] = a.sampler * 1e6 / (double)gen;
        smp_cons[r] = b.sampler * 1e6 / (double)gen;
        last = b;
    }
    if (rc) {
        fprintf(stderr, "bench_grammar: decode failed: %s\n", ks_status_str(rc));
        return 1;
    }
    qsort(plain, (size_t)reps, sizeof(double), cmp_double);
    qsort(cons, (size_t)reps, sizeof(double), cmp_double);
    qsort(smp_plain, (size_t)reps, sizeof(double), cmp_double);
    qsort(smp_cons, (size_t)reps, sizeof(double), cmp_double);
    int m = (int)reps / 2;
    printf("model %s (n_vocab %d), threads %lld, %lld tokens, temp %.2f, grammar %s (%d rules)\n",
           model, tok_vocab_n_tokens(v), (long long)threads, (long long)gen, (double)temp,
           schema ? schema
           : gbnf ? gbnf
                  : "json_object",
           gram_n_rules(g));
    printf("one-time: compile %.2f ms, token trie %.1f ms\n", t_compile * 1e3, t_trie * 1e3);
    printf("unconstrained: %.3f ms/token (sampler %.1f us)\n", plain[m], smp_plain[m]);
    printf("grammar:       %.3f ms/token (sampler %.1f us)\n", cons[m], smp_cons[m]);
    printf("full masks: %lld of %lld steps (%lld computed, the rest from the state cache)\n",
           (long long)last.masks, (long long)gen, (long long)last.computed);
    printf("overhead: %+.1f%% per token (sampler difference %.1f us = %.1f%% of a plain token)\n",
           (cons[m] / plain[m] - 1) * 100, smp_cons[m] - smp_plain[m],
           (smp_cons[m] - smp_plain[m]) / (plain[m] * 1e3) * 100);
    free(logits);
    gram_vocab_destroy(gv);
    gram_destroy(g);
    free(src);
    engine_close(&e);
    return 0;
}

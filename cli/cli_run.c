/* cli_run.c - `kvserve run`: generate a completion for one prompt on the command line.
 * Only the generated text goes to stdout, streamed through the incremental detokenizer;
 * timings and diagnostics go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"
#include "kvserve/sampler.h"

typedef struct run_opts {
    const char *model, *prompt;
    int64_t n_predict, threads, ctx, batch, seed, kv_residual;
    smp_params sp;
    kv_policy_config policy;
    ks_dtype kv[2]; /* K and V storage types */
    bool ignore_eos;
} run_opts;

static int run_parse(int argc, char **argv, run_opts *o)
{
    *o = (run_opts){.n_predict = 128,
                    .threads = cli_default_threads(),
                    .batch = 512,
                    .seed = -1,
                    .kv_residual = 128,
                    .kv = {KS_DTYPE_F16, KS_DTYPE_F16}};
    smp_params_default(&o->sp);
    kv_policy_config_defaults(&o->policy);
    o->sp.temperature = 0.8f;
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &o->model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"prompt", 'p', KS_ARG_STRING, &o->prompt, .metavar = "TEXT", .help = "the prompt",
         .flags = KS_ARG_REQUIRED},
        {"n-predict", 'n', KS_ARG_INT, &o->n_predict, 0, 1 << 24, .help = "tokens to generate"},
        {"temp", 0, KS_ARG_FLOAT, &o->sp.temperature, 0, 100, .help = "temperature, 0 = greedy"},
        {"top-k", 0, KS_ARG_I32, &o->sp.top_k, 0, 1 << 24, .help = "top-k filter, 0 = off"},
        {"top-p", 0, KS_ARG_FLOAT, &o->sp.top_p, 0, 1, .help = "nucleus filter, 1 = off"},
        {"min-p", 0, KS_ARG_FLOAT, &o->sp.min_p, 0, 1, .help = "min-p filter, 0 = off"},
        {"repeat-penalty", 0, KS_ARG_FLOAT, &o->sp.repeat_penalty, 0, 10,
         .help = "repetition penalty, 1 = off"},
        {"seed", 's', KS_ARG_INT, &o->seed, -1, (double)INT64_MAX,
         .help = "RNG seed, -1 = from the clock"},
        {"threads", 't', KS_ARG_INT, &o->threads, 1, 256, .help = "compute threads"},
        {"ctx", 'c', KS_ARG_INT, &o->ctx, 0, 1 << 24,
         .help = "context size in tokens, 0 = the model's"},
        {"batch", 'b', KS_ARG_INT, &o->batch, 1, 8192, .help = "prefill chunk in tokens"},
        KS_DTYPE_ARG_ROWS(o->kv),
        {"kv-residual", 0, KS_ARG_INT, &o->kv_residual, 0, KV_RESIDUAL_MAX,
         .help = "kivi4/kivi2: the last N tokens stay f16"},
        {"kv-policy", 0, KS_ARG_FUNC, &o->policy, .parse = kv_policy_config_parse_arg,
         .metavar = "SPEC",
         .help = "KV policy and parameters: NAME or NAME:key=value,... (kvserve policies)"},
        {"ignore-eos", 0, KS_ARG_BOOL, &o->ignore_eos,
         .help = "keep generating after end-of-generation tokens"},
    };
    const ks_args_spec spec = {"kvserve run", "Generates a completion for one prompt.", args,
                               KS_ARRAY_LEN(args),
                               "policies and their parameters: kvserve "
                               "policies (docs/policies.md)"};
    int rc = ks_args_parse(&spec, argc, argv);
    if (rc) return rc;
    o->sp.seed = o->seed < 0 ? (uint64_t)time(NULL) : (uint64_t)o->seed;
    return KS_OK;
}

/* Feeds the prompt in chunks; the last chunk's logits go to `logits`. */
static int run_prefill(engine *e, kv_seq *seq, const int32_t *ids, int32_t n, int32_t batch,
                       float *logits)
{
    for (int32_t b0 = 0; b0 < n; b0 += batch) {
        int32_t nb = KS_MIN(batch, n - b0);
        bool last = b0 + nb == n;
        model_seq_batch sb = {.kv = seq,
                              .tokens = ids + b0,
                              .n_tokens = nb,
                              .logits = last ? logits : NULL,
                              .prompt_chunk = true,
                              .prompt_last = last};
        int rc = model_forward(e->ctx, &sb, 1);
        if (rc) return rc;
    }
    return KS_OK;
}

static int run_generate(engine *e, run_opts *o, int32_t *ids, int32_t n_prompt)
{
    const model_hparams *hp = model_get_hparams(e->m);
    const tok_vocab *v = model_get_vocab(e->m);
    float *logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    smp_sampler *smp = NULL;
    kv_seq *seq = NULL;
    int rc = KS_ERR_NOMEM;
    if (!logits || smp_sampler_create(&o->sp, hp->n_vocab, &smp)) goto done;
    if ((rc = engine_new_seq(e, &o->policy, &seq))) goto done;
    double t0 = ks_time_now();
    if ((rc = run_prefill(e, seq, ids, n_prompt, (int32_t)o->batch, logits))) goto done;
    double t1 = ks_time_now();
    tok_stream ts;
    tok_stream_init(&ts, v, false);
    char text[512];
    int32_t n_gen = 0, n_hist = n_prompt;
    while (n_gen < o->n_predict && n_hist < e->n_ctx) {
        int32_t tok;
        if ((rc = smp_sample(smp, logits, hp->n_vocab, ids, n_hist, &tok))) goto done;
        ids[n_hist++] = tok;
        n_gen++;
        if (tok_is_eog(v, tok) && !o->ignore_eos) break;
        int32_t w = tok_stream_push(&ts, tok, text, (int32_t)sizeof(text));
        if (w > 0) fwrite(text, 1, (size_t)w, stdout);
        fflush(stdout);
        if (n_gen == o->n_predict) break;
        model_seq_batch sb = {.kv = seq, .tokens = &tok, .n_tokens = 1, .logits = logits};
        if ((rc = model_forward(e->ctx, &sb, 1))) goto done;
    }
    int32_t w = tok_stream_flush(&ts, text, (int32_t)sizeof(text));
    if (w > 0) fwrite(text, 1, (size_t)w, stdout);
    fflush(stdout);
    double t2 = ks_time_now();
    if (n_hist >= e->n_ctx) fprintf(stderr, "\nkvserve: context of %d tokens is full\n", e->n_ctx);
    fprintf(stderr, "\nprompt: %d tokens, %.1f ms, %.1f tokens/s\n", n_prompt, (t1 - t0) * 1e3,
            n_prompt / (t1 - t0));
    fprintf(stderr, "generated: %d tokens, %.1f ms, %.1f tokens/s\n", n_gen, (t2 - t1) * 1e3,
            n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0);
done:
    if (rc) fprintf(stderr, "kvserve: generation failed: %s\n", ks_status_str(rc));
    kv_seq_destroy(seq);
    smp_sampler_destroy(smp);
    free(logits);
    return rc;
}

int cli_run_main(int argc, char **argv)
{
    run_opts o;
    int prc = run_parse(argc, argv, &o);
    if (prc) return prc == KS_ARGS_HELP ? 0 : 2;
    engine_params ep = {.model_path = o.model,
                        .n_threads = (int32_t)o.threads,
                        .n_ctx = (int32_t)o.ctx,
                        .n_batch = (int32_t)o.batch,
                        .n_seqs = 1,
                        .k_dtype = o.kv[0],
                        .v_dtype = o.kv[1],
                        .kv_residual = (int32_t)o.kv_residual,
                        .llama_numerics = true};
    engine e;
    if (engine_open(&ep, &e)) return 1;
    const tok_vocab *v = model_get_vocab(e.m);
    size_t len = strlen(o.prompt);
    int32_t n = tok_encode(v, o.prompt, len, true, true, NULL, 0);
    int32_t cap = e.n_ctx + 1;
    int32_t *ids = n >= 0 ? malloc(sizeof(int32_t) * (size_t)KS_MAX(cap, n + 1)) : NULL;
    int rc = KS_ERR_INVALID;
    if (!ids || tok_encode(v, o.prompt, len, true, true, ids, n) != n) {
        fprintf(stderr, "kvserve: cannot tokenize the prompt\n");
    } else if (n < 1) {
        fprintf(stderr, "kvserve: the prompt is empty\n");
    } else if (n >= e.n_ctx) {
        fprintf(stderr, "kvserve: the prompt has %d tokens; the context holds %d\n", n, e.n_ctx);
    } else {
        rc = run_generate(&e, &o, ids, n);
    }
    free(ids);
    engine_close(&e);
    return rc ? 1 : 0;
}

/* cli_run.c - `kvserve run`: generate a completion for one prompt on the command line.
 * Only the generated text goes to stdout, streamed through the incremental detokenizer;
 * timings and diagnostics go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "kvserve/engine.h"
#include "cli.h"
#include "kvserve/sampler.h"

typedef struct run_opts {
    const char *model, *prompt;
    int64_t n_predict, threads, ctx, batch, seed;
    smp_params sp;
    kv_policy_config policy;
    ks_dtype kv_dtype;
    bool ignore_eos;
} run_opts;

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: kvserve run --model M --prompt P [options]\n"
            "  --n-predict N       tokens to generate (default 128)\n"
            "  --temp T            temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K --top-p P --min-p P --repeat-penalty R   sampling filters\n"
            "  --seed S            RNG seed (default: from the clock)\n"
            "  --threads N         compute threads (default: all CPUs)\n"
            "  --ctx N             context size in tokens (default: the model's)\n"
            "  --batch N           prefill chunk in tokens (default 512)\n"
            "  --kv-dtype f16|f32  KV cache storage (default f16)\n"
            "  --kv-policy SPEC    KV policy and parameters, e.g. full, sink_window:n_sink=4,"
            "window=252,\n"
            "                      snapkv:budget=256, pyramid:budget=256, h2o:heavy=128,"
            "recent=128, retrieval:top_k=8\n"
            "  --ignore-eos        keep generating after end-of-generation tokens\n");
}

static int run_parse(int argc, char **argv, run_opts *o)
{
    *o = (run_opts){.n_predict = 128, .threads = cli_default_threads(), .batch = 512,
                    .kv_dtype = KS_DTYPE_F16,
                    .seed = -1};
    smp_params_default(&o->sp);
    kv_policy_config_defaults(&o->policy);
    o->sp.temperature = 0.8f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "kvserve: %s needs a value\n", a);
            return KS_ERR_INVALID;
        }
        i++;
        int rc = KS_OK;
        int64_t iv = 0;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "--prompt") || !strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "--n-predict") || !strcmp(a, "-n")) rc = cli_parse_i64(a, v, 0, 1 << 24, &o->n_predict);
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) rc = cli_parse_i64(a, v, 1, 256, &o->threads);
        else if (!strcmp(a, "--ctx") || !strcmp(a, "-c")) rc = cli_parse_i64(a, v, 8, 1 << 24, &o->ctx);
        else if (!strcmp(a, "--batch") || !strcmp(a, "-b")) rc = cli_parse_i64(a, v, 1, 8192, &o->batch);
        else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) rc = cli_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        else if (!strcmp(a, "--temp")) rc = cli_parse_f32(a, v, 0.0f, 100.0f, &o->sp.temperature);
        else if (!strcmp(a, "--top-p")) rc = cli_parse_f32(a, v, 0.0f, 1.0f, &o->sp.top_p);
        else if (!strcmp(a, "--min-p")) rc = cli_parse_f32(a, v, 0.0f, 1.0f, &o->sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) rc = cli_parse_f32(a, v, 0.0f, 10.0f, &o->sp.repeat_penalty);
        else if (!strcmp(a, "--top-k")) {
            rc = cli_parse_i64(a, v, 0, 1 << 24, &iv);
            o->sp.top_k = (int32_t)iv;
        } else if (!strcmp(a, "--kv-policy")) {
            rc = cli_parse_policy(v, &o->policy);
        } else if (!strcmp(a, "--kv-dtype")) {
            rc = cli_parse_kv_dtype(v, &o->kv_dtype);
        } else {
            fprintf(stderr, "kvserve: run: unknown option '%s'\n", a);
            rc = KS_ERR_INVALID;
        }
        if (rc) return rc;
    }
    if (!o->model || !o->prompt) {
        run_usage(stderr);
        return KS_ERR_INVALID;
    }
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
        model_seq_batch sb = {.kv = seq, .tokens = ids + b0, .n_tokens = nb,
                              .logits = last ? logits : NULL, .prompt_chunk = true,
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
    if (run_parse(argc, argv, &o)) return 2;
    engine_params ep = {.model_path = o.model, .n_threads = (int32_t)o.threads,
                            .n_ctx = (int32_t)o.ctx, .n_batch = (int32_t)o.batch, .n_seqs = 1,
                            .kv_dtype = o.kv_dtype, .llama_numerics = true};
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

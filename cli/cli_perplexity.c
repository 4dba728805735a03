/* cli_perplexity.c - `kvserve perplexity`: perplexity of a text file computed the way
 * llama.cpp's perplexity tool does, so the figures are comparable:
 *   tokenise the whole file once (BOS first when the vocabulary adds it); cut it into
 *   floor(n/ctx) chunks of ctx tokens, dropping the rest; evaluate each chunk from an empty
 *   cache with its first token replaced by BOS (when the vocabulary adds BOS); score only
 *   the second half: logits at positions ctx/2 .. ctx-2 predict the next token;
 *   PPL = exp(mean negative log-likelihood), printed cumulatively after each chunk.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"

/* -log softmax(logits)[tok], in double like llama.cpp. */
static double nll_of(const float *logits, int32_t n_vocab, int32_t tok)
{
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        sum += exp((double)(logits[i] - mx));
    return -((double)(logits[tok] - mx) - log(sum));
}

typedef struct ppl_opts {
    const char *model, *file;
    int64_t ctx, batch, threads, max_chunks, kv_residual;
    ks_dtype kv[2]; /* K and V storage types */
    kv_policy_config policy;
    int attn; /* 0 exact, 1 flash, 2 fast; -1 not given */
} ppl_opts;

static const char *const kAttn[] = {"exact", "flash", "fast", NULL};

static int ppl_parse(int argc, char **argv, ppl_opts *o)
{
    /* llama-perplexity's defaults: an F16 KV cache (an F32 one moves ln PPL by up to 0.011
     * on the quantized reference models, more than the 0.5% we must match) */
    *o = (ppl_opts){.ctx = 512,
                    .batch = 512,
                    .threads = cli_default_threads(),
                    .kv = {KS_DTYPE_F16, KS_DTYPE_F16},
                    .kv_residual = 128,
                    .attn = -1};
    kv_policy_config_defaults(&o->policy);
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &o->model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"file", 'f', KS_ARG_STRING, &o->file, .metavar = "FILE", .help = "text to score",
         .flags = KS_ARG_REQUIRED},
        {"ctx", 'c', KS_ARG_INT, &o->ctx, 8, 1 << 20, .help = "tokens per chunk"},
        {"batch", 'b', KS_ARG_INT, &o->batch, 1, 8192, .help = "tokens per forward call"},
        {"threads", 't', KS_ARG_INT, &o->threads, 1, 256, .help = "compute threads"},
        {"chunks", 0, KS_ARG_INT, &o->max_chunks, 0, 1 << 30,
         .help = "score at most N chunks, 0 = all"},
        {"kv-dtype", 0, KS_ARG_FUNC, o->kv, .parse = ks_dtype_pair_parse_arg, .metavar = "T",
         .help = "K and V cache type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl kivi4 "
                 "kivi2 (default f16, llama.cpp's default cache)",
         .flags = KS_ARG_NO_DEFAULT},
        {"k-dtype", 0, KS_ARG_FUNC, &o->kv[0], .parse = ks_dtype_parse_arg, .metavar = "T",
         .help = "K cache type alone (llama.cpp's -ctk)", .flags = KS_ARG_NO_DEFAULT},
        {"v-dtype", 0, KS_ARG_FUNC, &o->kv[1], .parse = ks_dtype_parse_arg, .metavar = "T",
         .help = "V cache type alone (llama.cpp's -ctv)", .flags = KS_ARG_NO_DEFAULT},
        {"kv-residual", 0, KS_ARG_INT, &o->kv_residual, 0, KV_RESIDUAL_MAX,
         .help = "kivi4/kivi2: the last N tokens stay f16 (KIVI's residual R)"},
        {"kv-policy", 0, KS_ARG_FUNC, &o->policy, .parse = kv_policy_config_parse_arg,
         .metavar = "SPEC",
         .help = "KV policy and parameters: NAME or NAME:key=value,... (kvserve policies)"},
        {"attn", 0, KS_ARG_ENUM, &o->attn, .choices = kAttn,
         .help = "attention numerics: llama.cpp's non-flash kernels (default), its CPU "
                 "flash kernel (default with a quantised K or V: llama.cpp needs -fa for a "
                 "quantised V cache), or our fast SIMD kernels",
         .flags = KS_ARG_NO_DEFAULT},
    };
    const ks_args_spec spec = {
        "kvserve perplexity",
        "Perplexity of a text file, computed the way llama.cpp's perplexity tool does.", args,
        KS_ARRAY_LEN(args), NULL};
    int rc = ks_args_parse(&spec, argc, argv);
    if (rc) return rc;
    if (o->attn < 0) /* llama.cpp runs quantised caches only with flash attention */
        o->attn = ks_dtype_is_float(o->kv[0]) && ks_dtype_is_float(o->kv[1]) ? 0 : 1;
    return KS_OK;
}

static int ppl_tokenize(const tok_vocab *v, const char *path, int32_t **out, int32_t *n_out)
{
    char *text = NULL;
    size_t len = 0;
    ks_diag d;
    int rc = ks_read_file(path, &text, &len, &d);
    if (rc) {
        fprintf(stderr, "kvserve: %s\n", d.msg);
        return rc;
    }
    int32_t n = tok_encode(v, text, len, true, false, NULL, 0);
    int32_t *ids = n > 0 ? malloc((size_t)n * sizeof(int32_t)) : NULL;
    if (n <= 0 || !ids || tok_encode(v, text, len, true, false, ids, n) != n) {
        free(text);
        free(ids);
        fprintf(stderr, "kvserve: cannot tokenize %s\n", path);
        return n < 0 ? n : KS_ERR_NOMEM;
    }
    free(text);
    *out = ids;
    *n_out = n;
    return KS_OK;
}

/* Evaluates one chunk and adds its second-half NLLs to *nll / *count. */
static int ppl_chunk(engine *e, const kv_policy_config *pc, int32_t *toks, int32_t ctx,
                     int32_t batch, float *logits, double *nll, int64_t *count)
{
    const model_hparams *hp = model_get_hparams(e->m);
    kv_seq *seq = NULL;
    int rc = engine_new_seq(e, pc, &seq);
    if (rc) return rc;
    int32_t first = ctx / 2;
    for (int32_t b0 = 0; b0 < ctx && !rc; b0 += batch) {
        int32_t nb = KS_MIN(batch, ctx - b0);
        model_seq_batch sb = {.kv = seq,
                              .tokens = toks + b0,
                              .n_tokens = nb,
                              .logits = logits,
                              .all_logits = true,
                              .prompt_chunk = true,
                              .prompt_last = b0 + nb == ctx};
        rc = model_forward(e->ctx, &sb, 1);
        for (int32_t j = 0; j < nb && !rc; j++) {
            int32_t p = b0 + j;
            if (p < first || p >= ctx - 1) continue;
            *nll += nll_of(logits + (size_t)j * hp->n_vocab, hp->n_vocab, toks[p + 1]);
            (*count)++;
        }
    }
    kv_seq_destroy(seq);
    return rc;
}

int cli_perplexity_main(int argc, char **argv)
{
    ppl_opts o;
    int prc = ppl_parse(argc, argv, &o);
    if (prc) return prc == KS_ARGS_HELP ? 0 : 2;
    engine_params ep = {.model_path = o.model,
                        .n_threads = (int32_t)o.threads,
                        .n_ctx = (int32_t)o.ctx,
                        .n_batch = (int32_t)KS_MIN(o.batch, o.ctx),
                        .n_seqs = 1,
                        .k_dtype = o.kv[0],
                        .v_dtype = o.kv[1],
                        .kv_residual = (int32_t)o.kv_residual,
                        .llama_numerics = o.attn != 2,
                        .llama_flash = o.attn == 1};
    engine e;
    if (engine_open(&ep, &e)) return 1;
    const tok_vocab *v = model_get_vocab(e.m);
    int32_t *ids = NULL, n = 0;
    int rc = ppl_tokenize(v, o.file, &ids, &n);
    if (rc) goto done;
    int32_t ctx = (int32_t)o.ctx, n_chunks = n / ctx;
    if (o.max_chunks && o.max_chunks < n_chunks) n_chunks = (int32_t)o.max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "kvserve: the text has %d tokens, fewer than one chunk of %d\n", n, ctx);
        rc = KS_ERR_INVALID;
        goto done;
    }
    fprintf(stderr, "perplexity: %d tokens, %d chunks of %d\n", n, n_chunks, ctx);
    float *logits =
        malloc((size_t)ep.n_batch * (size_t)model_get_hparams(e.m)->n_vocab * sizeof(float));
    if (!logits) {
        rc = KS_ERR_NOMEM;
        goto done;
    }
    double nll = 0.0;
    int64_t count = 0;
    double t0 = ks_time_now();
    for (int32_t c = 0; c < n_chunks && !rc; c++) {
        int32_t *toks = ids + (size_t)c * ctx;
        if (tok_add_bos(v) && tok_bos(v) >= 0) toks[0] = tok_bos(v);
        rc = ppl_chunk(&e, &o.policy, toks, ctx, ep.n_batch, logits, &nll, &count);
        if (!rc) printf("[%d]%.6g,", c + 1, exp(nll / (double)count));
        fflush(stdout);
    }
    free(logits);
    if (rc) {
        fprintf(stderr, "\nkvserve: perplexity failed: %s\n", ks_status_str(rc));
        goto done;
    }
    double mean = nll / (double)count;
    printf("\nFinal estimate: PPL = %.6g, ln(PPL) = %.6f (%lld scored tokens)\n", exp(mean), mean,
           (long long)count);
    fprintf(stderr, "perplexity: %.2f s, %.1f tokens/s\n", ks_time_now() - t0,
            (double)n_chunks * ctx / (ks_time_now() - t0));
done:
    free(ids);
    engine_close(&e);
    return rc ? 1 : 0;
}

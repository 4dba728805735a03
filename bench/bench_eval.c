/* bench_eval.c - quality and memory evaluation of KV-cache policies on a real model.
 *
 *   bench_eval --model M --text T [--policy SPEC]... [--ppl-tokens 2048] [--chunk 128]
 *              [--ctx-lengths 480,1950,7800] [--passkey-trials 12] [--threads 2]
 *              [--kv-dtype f16|f32] [--block-tokens 16] [--seed 1]
 *
 * SPEC is a registered policy name, optionally with parameters: `full`,
 * `sink_window:n_sink=4,window=252,positions=compact`, `snapkv:budget=256,window=8`,
 * `pyramid:budget=256,beta=20`, `h2o:heavy=128,recent=128`, `retrieval:top_k=4,...`; keys are
 * the TOML keys of the policy's table (policy_config.h). `full` is always evaluated first: it
 * is the reference for agreement and KL.
 *
 * Perplexity: the first --ppl-tokens tokens of the text are streamed through one sequence in
 * chunks of --chunk tokens. Every chunk is submitted as a complete prompt (prompt_chunk and
 * prompt_last), so policies that compress a finished prompt (SnapKV, PyramidKV) compress
 * after each chunk; eviction policies evict as they go. Every token after the first is scored
 * from all_logits; PPL is reported overall and per 512-token segment, together with top-1
 * agreement with `full` and the mean KL(full || policy) of the next-token distributions.
 * KV bytes: the sequence's blocks (kv_seq_get_stats) at the end and the peak after any chunk.
 *
 * Passkey (kjv-tiny's README wording): filler prose from the text with the needle
 * "The pass key is K. Remember it. K is the pass key." at evenly spread depths, ending with
 * "What is the pass key? The pass key is"; greedy decoding must produce " K". Reported per
 * context length and policy: accuracy, KV bytes after the prompt, and prefill tokens/s.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/args.h"
#include "kvserve/kvcache.h"
#include "kvserve/model.h"
#include "kvserve/policy_args.h"
#include "kvserve/policy_config.h"

#define EVAL_MAX_POLICIES 32
#define EVAL_MAX_CTX 16

typedef struct eval_policy {
    const char *spec;
    const kv_policy *policy;
    kv_policy_config cfg;
} eval_policy;

typedef struct eval_opts {
    const char *model, *text;
    eval_policy pol[EVAL_MAX_POLICIES];
    int n_pol;
    int32_t ppl_tokens, chunk, trials, threads, block_tokens;
    int32_t ctx[EVAL_MAX_CTX];
    int n_ctx;
    ks_dtype dtype;
    uint64_t seed;
} eval_opts;

typedef struct eval_env {
    model *m;
    const model_hparams *hp;
    const tok_vocab *vocab;
    model_ctx *ctx;
    kv_pool *pool;
    float *logits; /* [chunk][n_vocab] */
} eval_env;

/* ---- policy specs ---------------------------------------------------------------------- */

/* Parses "name[:key=value,...]" (the same form as `kvserve run --kv-policy`) into p:
 * defaults first, then the overrides, through the shared parameter table. */
static int spec_parse(const char *spec, eval_policy *p, char *err, size_t err_len)
{
    p->spec = spec;
    kv_policy_config_defaults(&p->cfg);
    int rc = kv_policy_config_parse_arg(spec, &p->cfg, err, err_len);
    if (rc) return rc;
    p->policy = kv_policy_find(kv_policy_kind_name(p->cfg.kind));
    if (!p->policy) {
        snprintf(err, err_len, "the policy of '%s' is not registered", spec);
        return KS_ERR_INVALID;
    }
    return 0;
}

/* ---- options --------------------------------------------------------------------------- */

/* --policy SPEC, repeatable; `full` is always the first row. */
static int policy_arg(const char *v, void *dst, char *err, size_t err_len)
{
    eval_opts *o = dst;
    if (!strcmp(v, "full")) return 0;
    if (o->n_pol == EVAL_MAX_POLICIES) {
        snprintf(err, err_len, "at most %d policies", EVAL_MAX_POLICIES);
        return KS_ERR_RANGE;
    }
    return spec_parse(v, &o->pol[o->n_pol++], err, err_len);
}

/* --ctx-lengths a,b,c: each an integer in [64, 2^20]. */
static int ctx_lengths_arg(const char *v, void *dst, char *err, size_t err_len)
{
    eval_opts *o = dst;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", v);
    o->n_ctx = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        long x = strtol(t, &end, 10);
        if (o->n_ctx == EVAL_MAX_CTX || *end || end == t || x < 64 || x > (1 << 20)) {
            snprintf(err, err_len, "expected up to %d comma-separated integers in [64, 1048576], "
                     "got '%s'", EVAL_MAX_CTX, v);
            return KS_ERR_INVALID;
        }
        o->ctx[o->n_ctx++] = (int32_t)x;
    }
    return 0;
}

static int opts_parse(int argc, char **argv, eval_opts *o)
{
    *o = (eval_opts){.ppl_tokens = 2048, .chunk = 128, .trials = 12, .threads = 2,
                     .block_tokens = 16, .seed = 1};
    char err[256];
    if (spec_parse("full", &o->pol[o->n_pol++], err, sizeof(err)))
        return KS_ERR_INVALID;
    static const char *const kDtypes[] = {"f16", "f32", NULL};
    int dtype = 0;
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &o->model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"text", 0, KS_ARG_STRING, &o->text, .metavar = "FILE",
         .help = "held-out text for perplexity and passkey filler", .flags = KS_ARG_REQUIRED},
        {"policy", 0, KS_ARG_FUNC, o, .parse = policy_arg, .metavar = "SPEC",
         .help = "a KV policy to evaluate besides full (repeatable), e.g. snapkv:budget=256"},
        {"ppl-tokens", 0, KS_ARG_I32, &o->ppl_tokens, 0, 1 << 20,
         .help = "tokens scored for perplexity"},
        {"chunk", 0, KS_ARG_I32, &o->chunk, 1, 4096, .help = "tokens per chunk"},
        {"ctx-lengths", 0, KS_ARG_FUNC, o, .parse = ctx_lengths_arg, .metavar = "A,B,C",
         .help = "passkey prompt lengths"},
        {"passkey-trials", 0, KS_ARG_I32, &o->trials, 0, 1000, .help = "passkeys per length"},
        {"threads", 't', KS_ARG_I32, &o->threads, 1, 256, .help = "compute threads"},
        {"kv-dtype", 0, KS_ARG_ENUM, &dtype, .choices = kDtypes, .help = "KV cache storage"},
        {"block-tokens", 0, KS_ARG_I32, &o->block_tokens, 1, 4096, .help = "KV block size"},
        {"seed", 0, KS_ARG_INT, &o->seed, 0, (double)INT64_MAX, .help = "passkey RNG seed"},
    };
    const ks_args_spec spec = {"bench_eval", "Quality of KV policies: perplexity, agreement with "
                                             "full attention, KL, and passkey retrieval.",
                               args, KS_ARRAY_LEN(args), NULL};
    int rc = ks_args_parse(&spec, argc, argv);
    o->dtype = dtype ? KS_DTYPE_F32 : KS_DTYPE_F16;
    return rc;
}

/* ---- running sequences ----------------------------------------------------------------- */

static int seq_open(eval_env *e, const eval_policy *p, kv_seq **out)
{
    const model_hparams *hp = e->hp;
    kv_policy_args args = {.config = &p->cfg,
                           .rope = {.kind = (rope_kind)hp->rope_type, .head_dim = hp->head_dim,
                                    .theta = hp->rope_theta,
                                    .freq_scale = hp->rope_freq_scale},
                           .n_layer = hp->n_layer, .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim, .n_ctx_train = hp->n_ctx_train};
    kv_seq_params sp = {.n_layer = hp->n_layer, .n_head_kv = hp->n_head_kv,
                        .policy = p->policy, .policy_config = &args};
    return kv_seq_create(e->pool, &sp, out);
}

/* Feeds toks[0..n) in chunks; last chunk's logits (all rows if all_logits) in e->logits.
 * Each chunk is a whole prompt when every_chunk_last, else only the final one ends it. */
static int seq_feed(eval_env *e, kv_seq *seq, const int32_t *toks, int32_t n, int32_t chunk,
                    bool all_logits, bool every_chunk_last, size_t *peak)
{
    for (int32_t i = 0; i < n; i += chunk) {
        int32_t c = KS_MIN(chunk, n - i);
        model_seq_batch b = {.kv = seq, .tokens = toks + i, .n_tokens = c,
                             .logits = e->logits, .all_logits = all_logits,
                             .prompt_chunk = true,
                             .prompt_last = every_chunk_last || i + c == n};
        int rc = model_forward(e->ctx, &b, 1);
        if (rc)
            return rc;
        kv_seq_stats st;
        kv_seq_get_stats(seq, &st);
        if (peak && st.bytes > *peak)
            *peak = st.bytes;
    }
    return 0;
}

/* ---- perplexity, agreement and KL ------------------------------------------------------ */

typedef struct ppl_result {
    double nll, kl;
    int64_t n_scored, agree;
    double seg_nll[64];
    int64_t seg_n[64];
    size_t bytes_end, bytes_peak;
    double tok_s;
} ppl_result;

static void log_softmax(const float *x, int32_t n, double *out)
{
    float mx = x[0];
    for (int32_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int32_t i = 0; i < n; i++)
        s += exp((double)(x[i] - mx));
    double ls = log(s);
    for (int32_t i = 0; i < n; i++)
        out[i] = (double)(x[i] - mx) - ls;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* Streams toks through a sequence of policy p. ref: full's logits [n][n_vocab] (written when
 * p is full, i.e. ref_write, compared against otherwise). */
static int ppl_run(eval_env *e, const eval_opts *o, const eval_policy *p, const int32_t *toks,
                   int32_t n, float *ref, bool ref_write, ppl_result *r)
{
    int32_t V = e->hp->n_vocab;
    memset(r, 0, sizeof(*r));
    kv_seq *seq;
    int rc = seq_open(e, p, &seq);
    if (rc)
        return rc;
    double *lp = malloc((size_t)V * sizeof(double)), *lq = malloc((size_t)V * sizeof(double));
    double t0 = ks_time_now(), busy = 0;
    for (int32_t i = 0; i < n && !rc; i += o->chunk) {
        int32_t c = KS_MIN(o->chunk, n - i);
        double t1 = ks_time_now();
        rc = seq_feed(e, seq, toks + i, c, c, true, true, &r->bytes_peak);
        busy += ks_time_now() - t1;
        for (int32_t j = 0; j < c && !rc; j++) {
            const float *lg = e->logits + (size_t)j * V;
            int32_t t = i + j;
            if (ref_write)
                memcpy(ref + (size_t)t * V, lg, (size_t)V * sizeof(float));
            if (t + 1 >= n)
                continue;
            log_softmax(lg, V, lq);
            double nll = -lq[toks[t + 1]];
            r->nll += nll;
            r->seg_nll[KS_MIN(t / 512, 63)] += nll;
            r->seg_n[KS_MIN(t / 512, 63)]++;
            r->n_scored++;
            const float *rf = ref + (size_t)t * V;
            r->agree += argmax(rf, V) == argmax(lg, V);
            log_softmax(rf, V, lp);
            double kl = 0;
            for (int32_t v = 0; v < V; v++)
                kl += exp(lp[v]) * (lp[v] - lq[v]);
            r->kl += kl;
        }
    }
    (void)t0;
    kv_seq_stats st;
    kv_seq_get_stats(seq, &st);
    r->bytes_end = st.bytes;
    r->tok_s = busy > 0 ? n / busy : 0;
    kv_seq_destroy(seq);
    free(lp);
    free(lq);
    return rc;
}

/* ---- passkey ---------------------------------------------------------------------------- */

typedef struct text_sents {
    char **s;
    int32_t *n_tok;
    int32_t n;
} text_sents;

/* Splits the text into sentences (ending at ". ", "? ", "! ", newlines) with token counts. */
static int sents_split(const eval_env *e, const char *text, text_sents *ts)
{
    size_t len = strlen(text), cap = 1024;
    ts->s = malloc(cap * sizeof(char *));
    ts->n_tok = malloc(cap * sizeof(int32_t));
    ts->n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r'))
            i++;
        size_t j = i;
        while (j < len && text[j] != '\n' &&
               !((text[j] == '.' || text[j] == '?' || text[j] == '!') &&
                 (j + 1 == len || text[j + 1] == ' ' || text[j + 1] == '\n')))
            j++;
        if (j < len && text[j] != '\n')
            j++;
        if (j > i) {
            if ((size_t)ts->n == cap) {
                cap *= 2;
                ts->s = realloc(ts->s, cap * sizeof(char *));
                ts->n_tok = realloc(ts->n_tok, cap * sizeof(int32_t));
            }
            char *s = malloc(j - i + 1);
            memcpy(s, text + i, j - i);
            s[j - i] = '\0';
            ts->s[ts->n] = s;
            ts->n_tok[ts->n] = tok_encode(e->vocab, s, j - i, false, false, NULL, 0);
            ts->n++;
        }
        i = j;
    }
    return ts->n > 0 ? 0 : KS_ERR_INVALID;
}

/* Builds a passkey prompt of about n_target tokens; the needle goes at `depth` (0..1) of the
 * filler, which starts at sentence `first` of the text (wrapping around). malloc'd text. */
static char *passkey_prompt(const text_sents *ts, int32_t n_target, double depth, int32_t first,
                            int32_t key)
{
    char needle[128];
    snprintf(needle, sizeof(needle), "The pass key is %d. Remember it. %d is the pass key.",
             key, key);
    const char *question = "What is the pass key? The pass key is";
    int32_t budget = n_target - 40, n_s = 0, acc = 0; /* ~40 tokens: BOS, needle, question */
    while (acc < budget) {
        acc += ts->n_tok[(first + n_s) % ts->n] + 1;
        n_s++;
    }
    int32_t at = (int32_t)(depth * n_s + 0.5);
    size_t cap = 256, len = 0;
    for (int32_t i = 0; i < n_s; i++)
        cap += strlen(ts->s[(first + i) % ts->n]) + 1;
    char *out = malloc(cap + strlen(needle) + strlen(question) + 8);
    for (int32_t i = 0; i <= n_s; i++) {
        if (i == at)
            len += (size_t)sprintf(out + len, "%s ", needle);
        if (i < n_s)
            len += (size_t)sprintf(out + len, "%s ", ts->s[(first + i) % ts->n]);
    }
    sprintf(out + len, "%s", question);
    return out;
}

typedef struct pk_result {
    int32_t correct, trials, prompt_tokens;
    size_t bytes; /* KV bytes after the prompt (compression included), last trial */
    double prefill_s;
} pk_result;

static int passkey_trial(eval_env *e, const eval_opts *o, const eval_policy *p,
                         const char *prompt, int32_t key, pk_result *r)
{
    int32_t n = tok_encode(e->vocab, prompt, strlen(prompt), true, false, NULL, 0);
    int32_t *toks = malloc((size_t)n * sizeof(int32_t));
    tok_encode(e->vocab, prompt, strlen(prompt), true, false, toks, n);
    kv_seq *seq;
    int rc = seq_open(e, p, &seq);
    if (rc) {
        free(toks);
        return rc;
    }
    double t0 = ks_time_now();
    rc = seq_feed(e, seq, toks, n, o->chunk, false, false, NULL);
    r->prefill_s += ks_time_now() - t0;
    r->prompt_tokens = n;
    kv_seq_stats st;
    kv_seq_get_stats(seq, &st);
    r->bytes = st.bytes;
    int32_t out[8], n_out = 0, V = e->hp->n_vocab;
    while (!rc && n_out < 7) {
        out[n_out] = argmax(e->logits, V);
        model_seq_batch b = {.kv = seq, .tokens = &out[n_out], .n_tokens = 1,
                             .logits = e->logits};
        n_out++;
        rc = model_forward(e->ctx, &b, 1);
    }
    char text[256], want[16];
    int32_t tl = tok_decode(e->vocab, out, n_out, false, text, sizeof(text) - 1);
    text[KS_MAX(0, KS_MIN(tl, (int32_t)sizeof(text) - 1))] = '\0';
    snprintf(want, sizeof(want), "%d", key);
    const char *t = text;
    while (*t == ' ')
        t++;
    r->correct += rc == 0 && strncmp(t, want, 5) == 0;
    r->trials++;
    kv_seq_destroy(seq);
    free(toks);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------- */

static int env_open(const eval_opts *o, eval_env *e, int32_t max_ctx)
{
    ks_diag d;
    memset(e, 0, sizeof(*e));
    int rc = model_load(o->model, &e->m, &d);
    if (rc) {
        fprintf(stderr, "bench_eval: cannot load %s: %s\n", o->model, d.msg);
        return rc;
    }
    e->hp = model_get_hparams(e->m);
    e->vocab = model_get_vocab(e->m);
    model_ctx_params cp = {.n_threads = o->threads, .max_batch_tokens = o->chunk,
                           .max_seqs = 1};
    if ((rc = model_ctx_create(e->m, &cp, &e->ctx)))
        return rc;
    size_t row = (size_t)e->hp->head_dim * (o->dtype == KS_DTYPE_F16 ? 2 : 4);
    size_t per_head = (size_t)(max_ctx + o->chunk) / o->block_tokens + 4;
    kv_pool_params pp = {.budget_bytes = per_head * o->block_tokens * row * 2 *
                                         (size_t)e->hp->n_layer * e->hp->n_head_kv,
                         .block_tokens = o->block_tokens, .head_dim = e->hp->head_dim,
                         .dtype = o->dtype};
    if ((rc = kv_pool_create(&pp, &e->pool)))
        return rc;
    e->logits = malloc((size_t)o->chunk * e->hp->n_vocab * sizeof(float));
    return e->logits ? 0 : KS_ERR_NOMEM;
}

static void env_close(eval_env *e)
{
    free(e->logits);
    kv_pool_destroy(e->pool);
    model_ctx_destroy(e->ctx);
    model_free(e->m);
}

static int run_ppl(eval_env *e, const eval_opts *o, const int32_t *toks, int32_t n)
{
    float *ref = malloc((size_t)n * e->hp->n_vocab * sizeof(float));
    if (!ref)
        return KS_ERR_NOMEM;
    printf("## Perplexity (%d tokens streamed in chunks of %d)\n\n", n, o->chunk);
    printf("| policy | PPL | PPL per 512-token segment | top-1 agree | mean KL | KV bytes "
           "end | KV bytes peak | tok/s |\n|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < o->n_pol; i++) {
        ppl_result r;
        int rc = ppl_run(e, o, &o->pol[i], toks, n, ref, i == 0, &r);
        if (rc) {
            printf("| %s | error: %s |\n", o->pol[i].spec, ks_status_str(rc));
            continue;
        }
        char seg[512];
        size_t sl = 0;
        seg[0] = '\0';
        for (int s = 0; s < 64 && r.seg_n[s] > 0 && sl < sizeof(seg) - 16; s++)
            sl += (size_t)snprintf(seg + sl, sizeof(seg) - sl, "%s%.1f", s ? " " : "",
                                   exp(r.seg_nll[s] / (double)r.seg_n[s]));
        printf("| %s | %.2f | %s | %.1f%% | %.4f | %zu | %zu | %.0f |\n", o->pol[i].spec,
               exp(r.nll / (double)KS_MAX(r.n_scored, 1)), seg,
               100.0 * (double)r.agree / (double)KS_MAX(r.n_scored, 1),
               r.kl / (double)KS_MAX(r.n_scored, 1), r.bytes_end, r.bytes_peak, r.tok_s);
        fflush(stdout);
    }
    printf("\n");
    free(ref);
    return 0;
}

static int run_passkey(eval_env *e, const eval_opts *o, const text_sents *ts)
{
    printf("## Passkey retrieval (%d trials per length, needle depths evenly spread)\n\n",
           o->trials);
    printf("| context | policy | correct | KV bytes after prompt | vs full | prefill tok/s |\n"
           "|---|---|---|---|---|---|\n");
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ull + 1;
    for (int c = 0; c < o->n_ctx; c++) {
        size_t full_bytes = 0;
        for (int i = 0; i < o->n_pol; i++) {
            pk_result r = {0};
            uint64_t st = rng + (uint64_t)c * 7919; /* same prompts for every policy */
            int rc = 0;
            for (int t = 0; t < o->trials && !rc; t++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                int32_t key = 10000 + (int32_t)((st >> 33) % 90000);
                double depth = (t + 0.5) / o->trials;
                char *prompt = passkey_prompt(ts, o->ctx[c], depth, (int32_t)((st >> 17) % ts->n),
                                              key);
                rc = passkey_trial(e, o, &o->pol[i], prompt, key, &r);
                free(prompt);
            }
            if (rc) {
                printf("| %d | %s | error: %s |\n", o->ctx[c], o->pol[i].spec,
                       ks_status_str(rc));
                continue;
            }
            if (i == 0)
                full_bytes = r.bytes;
            printf("| %d | %s | %d/%d | %zu | %.3f | %.0f |\n", r.prompt_tokens, o->pol[i].spec,
                   r.correct, r.trials, r.bytes, full_bytes ? (double)r.bytes / full_bytes : 0,
                   r.prefill_s > 0 ? (double)r.prompt_tokens * r.trials / r.prefill_s : 0);
            fflush(stdout);
        }
    }
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    eval_opts o;
    int prc = opts_parse(argc, argv, &o);
    if (prc)
        return prc == KS_ARGS_HELP ? 0 : 2;
    char *text = NULL;
    size_t text_len = 0;
    ks_diag d;
    if (ks_read_file(o.text, &text, &text_len, &d)) {
        fprintf(stderr, "bench_eval: %s\n", d.msg);
        return 1;
    }
    int32_t max_ctx = o.ppl_tokens;
    for (int i = 0; i < o.n_ctx; i++)
        max_ctx = KS_MAX(max_ctx, o.ctx[i] + 64);
    eval_env e;
    int rc = env_open(&o, &e, max_ctx);
    if (rc) {
        fprintf(stderr, "bench_eval: setup failed: %s\n", ks_status_str(rc));
        return 1;
    }
    printf("# bench_eval: %s, %d layers, %d KV heads, head dim %d, KV %s, block %d tokens\n\n",
           o.model, e.hp->n_layer, e.hp->n_head_kv, e.hp->head_dim,
           o.dtype == KS_DTYPE_F16 ? "f16" : "f32", o.block_tokens);
    if (o.ppl_tokens > 1) {
        int32_t n = tok_encode(e.vocab, text, text_len, true, false, NULL, 0);
        int32_t *toks = malloc((size_t)KS_MAX(n, 1) * sizeof(int32_t));
        tok_encode(e.vocab, text, text_len, true, false, toks, n);
        rc = run_ppl(&e, &o, toks, KS_MIN(n, o.ppl_tokens));
        free(toks);
    }
    if (rc == 0 && o.n_ctx > 0 && o.trials > 0) {
        text_sents ts;
        if (sents_split(&e, text, &ts) == 0) {
            rc = run_passkey(&e, &o, &ts);
            for (int32_t i = 0; i < ts.n; i++)
                free(ts.s[i]);
        }
        free(ts.s);
        free(ts.n_tok);
    }
    env_close(&e);
    free(text);
    return rc ? 1 : 0;
}

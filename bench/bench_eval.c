/* bench_eval.c - quality, memory and speed of every registered KV-cache policy on a real model.
 *
 *   bench_eval --model M --text T [--json FILE] [--trials 12] [--lengths 1,4,16,64]
 *              [--budgets 0.1,0.25,0.5] [--seq-kv-mb 16] [--ppl-tokens 8192] [--chunk 128]
 *              [--policies a,b] [--threads 2] [--seed 7] [--profile heads.toml]
 *
 * The policy list is the registry (policy_config.h), so a newly registered policy is evaluated
 * with no change here; a policy is run "as a user asks for it": by name only (its defaults,
 * derived from the model), or by name and `budget` when it has that parameter; a policy with a
 * `profile` parameter (a head profile from `kvserve profile-heads`) gets --profile. Four parts:
 *
 * 1. Perplexity by context length (StreamingLLM's figure): the first --ppl-tokens tokens of
 *    the text go through one sequence at the policy's defaults, --chunk tokens at a time, each
 *    chunk a finished prompt; PPL per segment of the trained length.
 * 2. Agreement with full at an equal budget: the first trained-length tokens, every policy
 *    with a `budget` at budget = context_length / 4: top-1 agreement and mean KL(full||policy)
 *    of the next-token distributions, PPL, peak KV bytes and tokens/s.
 * 3. Passkey accuracy against budget at 1x: each policy with a `budget` at budget = fraction
 *    x the prompt length for every --budgets fraction; the others at their defaults.
 * 4. Passkey accuracy by context length x needle depth at the defaults: prompt lengths
 *    --lengths x the 1x length (15/16 of the trained context). A length is skipped, with the
 *    reason, when the policy's admission bound (what the server reserves) needs more KV than
 *    --seq-kv-mb for one sequence. KV bytes are measured after the first generated token (a
 *    deferred compression has run by then); prefill tokens/s is measured too.
 *
 * The passkey set is held out: keys, needle depths (evenly spread with a seeded jitter) and
 * filler (sentences of the text from a seeded start, wrapping) come from --seed, not from any
 * case in tests/. Wording is the kjv-tiny README's: the needle "The pass key is K. Remember it.
 * K is the pass key." and the question "What is the pass key? The pass key is"; greedy
 * decoding must produce " K". Markdown goes to stdout; --json writes every figure for
 * scripts/eval_charts.py (tables and SVG charts in docs/).
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

#define EV_MAX_POL 16
#define EV_MAX_LIST 8
#define EV_DEPTH_BINS 4

typedef struct ev_policy {
    char spec[96];
    const kv_policy_desc *desc;
    const kv_policy *policy;
    kv_policy_config cfg;
} ev_policy;

typedef struct ev_opts {
    const char *model, *text, *json, *only, *profile;
    int32_t trials, ppl_tokens, chunk, threads, block_tokens, seq_kv_mb;
    double mult[EV_MAX_LIST], budgets[EV_MAX_LIST];
    int n_mult, n_budgets;
    uint64_t seed;
} ev_opts;

typedef struct ev_env {
    model *m;
    const model_hparams *hp;
    const tok_vocab *vocab;
    model_ctx *ctx;
    kv_pool *pool;
    float *logits; /* [max chunk][n_vocab] */
    int32_t max_chunk;
    FILE *json;
} ev_env;

/* ---- options --------------------------------------------------------------------------- */

/* "a,b,c": up to EV_MAX_LIST numbers in (0, 1e6]. */
static int list_arg(const char *v, double *out, int *n, char *err, size_t err_len)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", v);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double x = strtod(t, &end);
        if (*n == EV_MAX_LIST || *end || end == t || !(x > 0 && x <= 1e6)) {
            snprintf(err, err_len, "expected up to %d comma-separated positive numbers, got '%s'",
                     EV_MAX_LIST, v);
            return KS_ERR_INVALID;
        }
        out[(*n)++] = x;
    }
    return *n ? 0 : KS_ERR_INVALID;
}

static int mult_arg(const char *v, void *dst, char *err, size_t err_len)
{
    ev_opts *o = dst;
    return list_arg(v, o->mult, &o->n_mult, err, err_len);
}

static int budgets_arg(const char *v, void *dst, char *err, size_t err_len)
{
    ev_opts *o = dst;
    int rc = list_arg(v, o->budgets, &o->n_budgets, err, err_len);
    for (int i = 0; rc == 0 && i < o->n_budgets; i++)
        if (o->budgets[i] > 1) {
            snprintf(err, err_len, "budgets are fractions of the prompt (<= 1), got '%s'", v);
            rc = KS_ERR_INVALID;
        }
    return rc;
}

static int opts_parse(int argc, char **argv, ev_opts *o)
{
    *o = (ev_opts){.trials = 12,
                   .ppl_tokens = 4096,
                   .chunk = 128,
                   .threads = 2,
                   .block_tokens = 16,
                   .seq_kv_mb = 16,
                   .seed = 7,
                   .mult = {1, 4, 16, 64},
                   .n_mult = 4,
                   .budgets = {0.1, 0.25, 0.5},
                   .n_budgets = 3};
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &o->model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"text", 0, KS_ARG_STRING, &o->text, .metavar = "FILE",
         .help = "held-out text: perplexity and passkey filler", .flags = KS_ARG_REQUIRED},
        {"json", 0, KS_ARG_STRING, &o->json, .metavar = "FILE",
         .help = "also write every figure as JSON (scripts/eval_charts.py reads it)"},
        {"policies", 0, KS_ARG_STRING, &o->only, .metavar = "A,B",
         .help = "evaluate only these registered policies (default: all)"},
        {"profile", 0, KS_ARG_STRING, &o->profile, .metavar = "FILE",
         .help = "head profile (`kvserve profile-heads`) for policies with a `profile` parameter"},
        {"trials", 0, KS_ARG_I32, &o->trials, 1, 1000,
         .help = "passkey prompts per point at 1x and 4x (fewer at longer lengths)"},
        {"lengths", 0, KS_ARG_FUNC, o, .parse = mult_arg, .metavar = "A,B",
         .help = "passkey lengths as multiples of the 1x prompt (15/16 of the trained context)"},
        {"budgets", 0, KS_ARG_FUNC, o, .parse = budgets_arg, .metavar = "A,B",
         .help = "budgets as fractions of the 1x prompt for the accuracy-vs-budget sweep"},
        {"seq-kv-mb", 0, KS_ARG_I32, &o->seq_kv_mb, 1, 1 << 20,
         .help = "KV MiB one sequence may reserve; longer lengths are skipped with the reason"},
        {"ppl-tokens", 0, KS_ARG_I32, &o->ppl_tokens, 0, 1 << 20,
         .help = "tokens streamed for perplexity by length"},
        {"chunk", 0, KS_ARG_I32, &o->chunk, 1, 4096, .help = "prefill chunk tokens"},
        {"threads", 't', KS_ARG_I32, &o->threads, 1, 256, .help = "compute threads"},
        {"block-tokens", 0, KS_ARG_I32, &o->block_tokens, 1, 4096, .help = "KV block size"},
        {"seed", 0, KS_ARG_INT, &o->seed, 0, (double)INT64_MAX, .help = "passkey set seed"},
    };
    const ks_args_spec spec = {"bench_eval",
                               "Quality of every registered KV policy: perplexity by length, "
                               "agreement and KL against full, passkey by budget, length and "
                               "depth.",
                               args, KS_ARRAY_LEN(args), NULL};
    return ks_args_parse(&spec, argc, argv);
}

/* ---- policies -------------------------------------------------------------------------- */

/* Policy d by name only (budget <= 0) or with `budget` = budget, and the head profile when it
 * takes one (profile NULL: none); resolved later per model. */
static int pol_make(const char *profile, const kv_policy_desc *d, int32_t budget, ev_policy *p)
{
    memset(p, 0, sizeof(*p));
    kv_policy_config_defaults(&p->cfg);
    p->desc = d;
    p->policy = kv_policy_find(d->name);
    p->cfg.kind = kv_policy_desc_index(d);
    snprintf(p->spec, sizeof(p->spec), "%s", d->name);
    if (budget > 0) {
        char b[32];
        snprintf(b, sizeof(b), "%d", budget);
        if (kv_policy_config_set(&p->cfg, d->name, "budget", b)) return KS_ERR_INVALID;
        snprintf(p->spec, sizeof(p->spec), "%s:budget=%d", d->name, budget);
    }
    if (profile && kv_param_find(p->cfg.kind, "profile") &&
        kv_policy_config_set(&p->cfg, d->name, "profile", profile))
        return KS_ERR_INVALID;
    ks_diag dg;
    ks_diag_clear(&dg);
    return p->policy && kv_policy_config_validate(&p->cfg, &dg) == 0 ? 0 : KS_ERR_INVALID;
}

static bool pol_has_budget(const kv_policy_desc *d)
{
    return kv_param_find(kv_policy_desc_index(d), "budget") != NULL;
}

static bool pol_selected(const ev_opts *o, const kv_policy_desc *d)
{
    if (!o->only) return true;
    size_t n = strlen(d->name);
    for (const char *s = o->only; (s = strstr(s, d->name)); s += n)
        if ((s == o->only || s[-1] == ',') && (s[n] == ',' || s[n] == 0)) return true;
    return false;
}

static kv_model_info env_info(const ev_env *e)
{
    return (kv_model_info){e->hp->n_ctx_train, e->hp->n_layer, e->hp->n_head_kv, e->hp->head_dim};
}

/* The prefill chunk the policy takes (as the scheduler asks its descriptor). */
static int32_t pol_chunk(const ev_env *e, const ev_policy *p, int32_t chunk)
{
    kv_policy_params r;
    kv_model_info mi = env_info(e);
    kv_policy_params_resolve(&p->cfg, p->desc, &mi, r.bytes);
    int32_t c = p->desc->prefill_chunk ? p->desc->prefill_chunk(r.bytes, chunk) : chunk;
    return KS_MAX(1, KS_MIN(c, e->max_chunk));
}

/* KV bytes the server would reserve for one n-token prompt under p (its admission bound with
 * the resolved parameters, as server/scheduler.c computes it, without block rounding). */
static double pol_reserve_bytes(const ev_env *e, const ev_policy *p, int64_t n, int32_t chunk)
{
    kv_policy_params r;
    kv_model_info mi = env_info(e);
    kv_policy_params_resolve(&p->cfg, p->desc, &mi, r.bytes);
    int32_t dense = 0, L = e->hp->n_layer;
    int64_t bound = p->desc->admission(r.bytes, n + 1, chunk, L, &dense);
    dense = KS_MAX(0, KS_MIN(dense, L));
    double row = (double)e->hp->head_dim * 2 /* f16 */ * 2 /* K and V */;
    return row * e->hp->n_head_kv *
           ((double)dense * (n + 1) + (double)(L - dense) * (double)KS_MIN(bound, n + 1));
}

/* ---- running sequences ----------------------------------------------------------------- */

static int seq_open(ev_env *e, const ev_policy *p, kv_seq **out)
{
    const model_hparams *hp = e->hp;
    kv_policy_args args = {.config = &p->cfg,
                           .rope = {.kind = (rope_kind)hp->rope_type,
                                    .head_dim = hp->head_dim,
                                    .theta = hp->rope_theta,
                                    .freq_scale = hp->rope_freq_scale},
                           .n_layer = hp->n_layer,
                           .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim,
                           .n_ctx_train = hp->n_ctx_train};
    kv_seq_params sp = {.n_layer = hp->n_layer,
                        .n_head_kv = hp->n_head_kv,
                        .policy = p->policy,
                        .policy_config = &args};
    return kv_seq_create(e->pool, &sp, out);
}

/* Feeds toks[0..n) as one prompt in chunks of `chunk`; the last chunk's logits (all rows if
 * all_logits) are in e->logits. */
static int seq_feed(ev_env *e, kv_seq *seq, const int32_t *toks, int32_t n, int32_t chunk,
                    bool all_logits, size_t *peak)
{
    for (int32_t i = 0; i < n; i += chunk) {
        int32_t c = KS_MIN(chunk, n - i);
        model_seq_batch b = {.kv = seq,
                             .tokens = toks + i,
                             .n_tokens = c,
                             .logits = e->logits,
                             .all_logits = all_logits,
                             .prompt_chunk = true,
                             .prompt_last = i + c == n};
        int rc = model_forward(e->ctx, &b, 1);
        if (rc) return rc;
        kv_seq_stats st;
        kv_seq_get_stats(seq, &st);
        if (peak && st.bytes > *peak) *peak = st.bytes;
    }
    return 0;
}

/* ---- perplexity, agreement and KL ------------------------------------------------------ */

typedef struct ppl_result {
    double nll, kl, seg_nll[EV_MAX_POL * 8];
    int64_t n_scored, agree, seg_n[EV_MAX_POL * 8];
    int32_t n_seg;
    size_t bytes_peak;
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
        if (x[i] > x[b]) b = i;
    return b;
}

/* Scores row t of a chunk's logits: NLL of toks[t + 1] into its segment; against ref (full's
 * logits for the first n_ref tokens) top-1 agreement and KL(full || policy). */
static void ppl_score(const float *lg, int32_t V, const int32_t *toks, int32_t t, int32_t seg,
                      const float *ref, int32_t n_ref, double *lp, double *lq, ppl_result *r)
{
    log_softmax(lg, V, lq);
    double nll = -lq[toks[t + 1]];
    int32_t s = KS_MIN(t / seg, (int32_t)KS_ARRAY_LEN(r->seg_n) - 1);
    r->nll += nll;
    r->seg_nll[s] += nll;
    r->seg_n[s]++;
    r->n_seg = KS_MAX(r->n_seg, s + 1);
    r->n_scored++;
    if (!ref || t >= n_ref) return;
    const float *rf = ref + (size_t)t * V;
    r->agree += argmax(rf, V) == argmax(lg, V);
    log_softmax(rf, V, lp);
    double kl = 0;
    for (int32_t v = 0; v < V; v++)
        kl += exp(lp[v]) * (lp[v] - lq[v]);
    r->kl += kl;
}

/* Streams toks[0..n) through one sequence of p, every chunk a finished prompt. ref: full's
 * logits for the first n_ref tokens, written when ref_write (each row before it is scored, so
 * full agrees with itself), compared against otherwise. */
static int ppl_run(ev_env *e, const ev_policy *p, const int32_t *toks, int32_t n, int32_t chunk,
                   float *ref, int32_t n_ref, bool ref_write, ppl_result *r)
{
    int32_t V = e->hp->n_vocab, seg = KS_MAX(e->hp->n_ctx_train, 1);
    memset(r, 0, sizeof(*r));
    kv_seq *seq;
    int rc = seq_open(e, p, &seq);
    if (rc) return rc;
    double *lp = malloc((size_t)V * sizeof(double)), *lq = malloc((size_t)V * sizeof(double));
    double busy = 0;
    for (int32_t i = 0; i < n && !rc; i += chunk) {
        int32_t c = KS_MIN(chunk, n - i);
        double t1 = ks_time_now();
        rc = seq_feed(e, seq, toks + i, c, c, true, &r->bytes_peak);
        busy += ks_time_now() - t1;
        for (int32_t j = 0; j < c && !rc; j++) {
            const float *lg = e->logits + (size_t)j * V;
            if (ref_write && i + j < n_ref)
                memcpy(ref + (size_t)(i + j) * V, lg, (size_t)V * sizeof(float));
            if (i + j + 1 < n) ppl_score(lg, V, toks, i + j, seg, ref, n_ref, lp, lq, r);
        }
    }
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

/* Splits the text into sentences and clauses (ending at ". ", "? ", "! ", "; ", ": " or a
 * newline) with token counts: fine pieces, so prompts come close to their target length. */
static int sents_split(const ev_env *e, const char *text, text_sents *ts)
{
    size_t len = strlen(text), cap = 1024, i = 0;
    ts->s = malloc(cap * sizeof(char *));
    ts->n_tok = malloc(cap * sizeof(int32_t));
    ts->n = 0;
    while (i < len && ts->s && ts->n_tok) {
        while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r'))
            i++;
        size_t j = i;
        while (j < len && text[j] != '\n' &&
               !((text[j] == '.' || text[j] == '?' || text[j] == '!' || text[j] == ';' ||
                  text[j] == ':') &&
                 (j + 1 == len || text[j + 1] == ' ' || text[j + 1] == '\n')))
            j++;
        if (j < len && text[j] != '\n') j++;
        if (j > i) {
            if ((size_t)ts->n == cap) {
                cap *= 2;
                ts->s = realloc(ts->s, cap * sizeof(char *));
                ts->n_tok = realloc(ts->n_tok, cap * sizeof(int32_t));
                if (!ts->s || !ts->n_tok) return KS_ERR_NOMEM;
            }
            char *s = strndup(text + i, j - i);
            if (!s) return KS_ERR_NOMEM;
            ts->s[ts->n] = s;
            ts->n_tok[ts->n] = tok_encode(e->vocab, s, j - i, false, false, NULL, 0);
            ts->n++;
        }
        i = j;
    }
    return ts->n > 0 ? 0 : KS_ERR_INVALID;
}

static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The prompt with n_s filler sentences from `first` on and the needle before sentence `at`. */
static char *pk_build(const text_sents *ts, const char *needle, const char *question, int32_t first,
                      int32_t n_s, int32_t at)
{
    size_t cap = 256 + strlen(needle) + strlen(question), len = 0;
    for (int32_t i = 0; i < n_s; i++)
        cap += strlen(ts->s[(first + i) % ts->n]) + 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    for (int32_t i = 0; i <= n_s; i++) {
        if (i == at) len += (size_t)sprintf(out + len, "%s ", needle);
        if (i < n_s) len += (size_t)sprintf(out + len, "%s ", ts->s[(first + i) % ts->n]);
    }
    sprintf(out + len, "%s", question);
    return out;
}

/* A passkey prompt of at most `target` tokens (the most filler sentences that fit, from
 * sentence `first` on, wrapping) with the needle at `depth` (0..1) of the filler, then the
 * question. malloc'd. */
static char *pk_prompt(const ev_env *e, const text_sents *ts, int32_t target, double depth,
                       int32_t first, int32_t key)
{
    char needle[128];
    snprintf(needle, sizeof(needle), "The pass key is %d. Remember it. %d is the pass key.", key,
             key);
    const char *question = "What is the pass key? The pass key is";
    int32_t n_s = 0, acc = 0; /* a first guess from the sentences' own token counts */
    while (n_s < 1000000 && acc + ts->n_tok[(first + n_s) % ts->n] <= target - 48)
        acc += ts->n_tok[(first + n_s++) % ts->n];
    char *best = NULL; /* then exact: the most sentences whose prompt fits the target */
    for (int step = 0; step < 256 && n_s >= 0; step++) {
        char *p = pk_build(ts, needle, question, first, n_s, (int32_t)(depth * n_s + 0.5));
        if (!p) break;
        if (tok_encode(e->vocab, p, strlen(p), true, false, NULL, 0) <= target || n_s == 0) {
            free(best);
            best = p;
            n_s++;
        } else {
            free(p);
            if (best) break;
            n_s--;
        }
    }
    return best;
}

typedef struct pk_result {
    int32_t correct, trials, bin_ok[EV_DEPTH_BINS], bin_n[EV_DEPTH_BINS];
    int64_t tokens;  /* prompt tokens, summed */
    double kv_bytes; /* after the first generated token, summed */
    double prefill_s;
    const char *skip; /* why the point was not run */
    char skip_buf[192];
} pk_result;

/* One prompt: prefill, then greedy decoding; correct when the answer starts with the key. */
static int pk_trial(ev_env *e, const ev_policy *p, const char *prompt, int32_t key, double depth,
                    pk_result *r)
{
    int32_t n = tok_encode(e->vocab, prompt, strlen(prompt), true, false, NULL, 0);
    int32_t *toks = malloc((size_t)KS_MAX(n, 1) * sizeof(int32_t));
    if (!toks) return KS_ERR_NOMEM;
    tok_encode(e->vocab, prompt, strlen(prompt), true, false, toks, n);
    kv_seq *seq;
    int rc = seq_open(e, p, &seq);
    if (rc) {
        free(toks);
        return rc;
    }
    double t0 = ks_time_now();
    rc = seq_feed(e, seq, toks, n, pol_chunk(e, p, 256), false, NULL);
    r->prefill_s += ks_time_now() - t0;
    r->tokens += n;
    int32_t out[8], n_out = 0, V = e->hp->n_vocab;
    while (!rc && n_out < 7) {
        out[n_out] = argmax(e->logits, V);
        model_seq_batch b = {.kv = seq, .tokens = &out[n_out], .n_tokens = 1, .logits = e->logits};
        rc = model_forward(e->ctx, &b, 1);
        if (n_out++ == 0) { /* after the first generated token: deferred compression ran */
            kv_seq_stats st;
            kv_seq_get_stats(seq, &st);
            r->kv_bytes += (double)st.bytes;
        }
    }
    char text[256], want[16];
    int32_t tl = tok_decode(e->vocab, out, n_out, false, text, sizeof(text) - 1);
    text[KS_MAX(0, KS_MIN(tl, (int32_t)sizeof(text) - 1))] = '\0';
    snprintf(want, sizeof(want), "%d", key);
    const char *t = text;
    while (*t == ' ')
        t++;
    bool ok = rc == 0 && strncmp(t, want, 5) == 0;
    int32_t bin = KS_MIN(EV_DEPTH_BINS - 1, (int32_t)(depth * EV_DEPTH_BINS));
    r->correct += ok;
    r->bin_ok[bin] += ok;
    r->bin_n[bin]++;
    r->trials++;
    kv_seq_destroy(seq);
    free(toks);
    return rc;
}

/* `trials` held-out prompts of about `target` tokens for p. The set depends on (seed,
 * target) only, so every policy sees the same prompts. */
static int pk_run(ev_env *e, const ev_opts *o, const text_sents *ts, const ev_policy *p,
                  int32_t target, int32_t trials, pk_result *r)
{
    memset(r, 0, sizeof(*r));
    uint64_t st = o->seed * 1000003u + (uint64_t)target;
    int rc = 0;
    for (int32_t t = 0; t < trials && !rc; t++) {
        int32_t key = 10000 + (int32_t)(rng_next(&st) % 90000);
        double depth = (t + 0.2 + 0.6 * (double)(rng_next(&st) % 1000) / 1000.0) / trials;
        char *prompt = pk_prompt(e, ts, target, depth, (int32_t)(rng_next(&st) % ts->n), key);
        rc = prompt ? pk_trial(e, p, prompt, key, depth, r) : KS_ERR_NOMEM;
        free(prompt);
    }
    return rc;
}

/* ---- output ----------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* The resolved parameters of p for this model: "budget=128, window=8, ...". */
static void pol_params_text(const ev_env *e, const ev_policy *p, char *buf, size_t n)
{
    kv_policy_params r;
    kv_model_info mi = env_info(e);
    kv_policy_params_resolve(&p->cfg, p->desc, &mi, r.bytes);
    size_t len = 0;
    buf[0] = 0;
    for (int32_t i = 0; i < p->desc->n_params && len + 1 < n; i++) {
        if (p->desc->params_table[i].type == KV_PARAM_PATH) continue;
        char v[64];
        kv_param_format(r.bytes, &p->desc->params_table[i], v, sizeof(v));
        len += (size_t)snprintf(buf + len, n - len, "%s%s=%s", len ? ", " : "",
                                p->desc->params_table[i].key, v);
    }
}

/* ---- the four parts --------------------------------------------------------------------- */

static void part_ppl(ev_env *e, const ev_opts *o, const ev_policy *pol, int np, const int32_t *toks,
                     int32_t n)
{
    int32_t seg = e->hp->n_ctx_train;
    printf("## Perplexity by context length (defaults; %d tokens in chunks of %d)\n\n"
           "| policy | PPL | PPL per %d-token segment | KV bytes peak | tok/s |\n"
           "|---|---|---|---|---|\n",
           n, o->chunk, seg);
    fprintf(e->json, "\"ppl_segment\": %d, \"ppl\": [", seg);
    for (int i = 0; i < np; i++) {
        ppl_result r;
        int rc = ppl_run(e, &pol[i], toks, n, o->chunk, NULL, 0, false, &r);
        if (rc) {
            printf("| %s | error: %s |\n", pol[i].spec, ks_status_str(rc));
            continue;
        }
        printf("| %s | %.2f | ", pol[i].spec, exp(r.nll / (double)KS_MAX(r.n_scored, 1)));
        fprintf(e->json,
                "%s{\"policy\": \"%s\", \"ppl_all\": %.4f, \"bytes_peak\": %zu, "
                "\"tok_s\": %.1f, \"ppl_seg\": [",
                i ? ", " : "", pol[i].desc->name, exp(r.nll / (double)KS_MAX(r.n_scored, 1)),
                r.bytes_peak, r.tok_s);
        for (int32_t s = 0; s < r.n_seg; s++) {
            double v = exp(r.seg_nll[s] / (double)KS_MAX(r.seg_n[s], 1));
            printf("%s%.1f", s ? " " : "", v);
            fprintf(e->json, "%s%.4f", s ? ", " : "", v);
        }
        printf(" | %zu | %.0f |\n", r.bytes_peak, r.tok_s);
        fprintf(e->json, "]}");
        fflush(stdout);
    }
    fprintf(e->json, "],\n");
    printf("\n");
}

static int part_agree(ev_env *e, const ev_opts *o, const ev_policy *pol, int np,
                      const int32_t *toks, int32_t n)
{
    float *ref = malloc((size_t)n * e->hp->n_vocab * sizeof(float));
    if (!ref) return KS_ERR_NOMEM;
    int32_t budget = KS_MAX(1, e->hp->n_ctx_train / 4);
    printf("## Agreement with full at an equal budget (%d tokens; budget %d where the policy "
           "has one)\n\n| policy | PPL | top-1 agreement | mean KL | KV bytes peak | tok/s |\n"
           "|---|---|---|---|---|---|\n",
           n, budget);
    fprintf(e->json, "\"agree_budget\": %d, \"agree\": [", budget);
    for (int i = 0; i < np; i++) {
        ev_policy p;
        if (pol_make(o->profile, pol[i].desc, pol_has_budget(pol[i].desc) ? budget : 0, &p))
            continue;
        ppl_result r;
        int rc = ppl_run(e, &p, toks, n, o->chunk, ref, n, i == 0, &r);
        if (rc) {
            printf("| %s | error: %s |\n", p.spec, ks_status_str(rc));
            continue;
        }
        double sc = (double)KS_MAX(r.n_scored, 1), ppl = exp(r.nll / sc);
        printf("| %s | %.2f | %.1f%% | %.4f | %zu | %.0f |\n", p.spec, ppl,
               100.0 * (double)r.agree / sc, r.kl / sc, r.bytes_peak, r.tok_s);
        fprintf(e->json,
                "%s{\"policy\": \"%s\", \"spec\": \"%s\", \"ppl\": %.4f, "
                "\"agree\": %.4f, \"kl\": %.5f, \"bytes_peak\": %zu, \"tok_s\": %.1f}",
                i ? ", " : "", p.desc->name, p.spec, ppl, (double)r.agree / sc, r.kl / sc,
                r.bytes_peak, r.tok_s);
        fflush(stdout);
    }
    fprintf(e->json, "],\n");
    printf("\n");
    free(ref);
    return 0;
}

static void pk_json(ev_env *e, bool first, const char *policy, double x, const char *xkey,
                    const pk_result *r)
{
    fprintf(e->json,
            "%s{\"policy\": \"%s\", \"%s\": %g, \"correct\": %d, \"trials\": %d, "
            "\"tokens\": %.0f, \"kv_bytes\": %.0f, \"tok_s\": %.1f, \"by_depth\": [",
            first ? "" : ", ", policy, xkey, x, r->correct, r->trials,
            r->trials ? (double)r->tokens / r->trials : 0.0,
            r->trials ? r->kv_bytes / r->trials : 0.0,
            r->prefill_s > 0 ? (double)r->tokens / r->prefill_s : 0.0);
    for (int b = 0; b < EV_DEPTH_BINS; b++)
        fprintf(e->json, "%s[%d, %d]", b ? ", " : "", r->bin_ok[b], r->bin_n[b]);
    fprintf(e->json, "], \"skip\": ");
    if (r->skip)
        json_str(e->json, r->skip);
    else
        fprintf(e->json, "null");
    fprintf(e->json, "}");
}

static int part_budget(ev_env *e, const ev_opts *o, const text_sents *ts, const ev_policy *pol,
                       int np, int32_t base)
{
    printf("## Passkey at 1x (~%d tokens, %d prompts) by budget\n\n| policy | budget | "
           "correct | KV bytes after the first token |\n|---|---|---|---|\n",
           base, o->trials);
    fprintf(e->json, "\"budget\": [");
    bool first = true;
    for (int i = 0; i < np; i++) {
        bool hb = pol_has_budget(pol[i].desc);
        for (int b = 0; b < (hb ? o->n_budgets : 1); b++) {
            ev_policy p;
            int32_t budget = hb ? (int32_t)lround(o->budgets[b] * base) : 0;
            if (pol_make(o->profile, pol[i].desc, budget, &p)) continue;
            pk_result r;
            int rc = pk_run(e, o, ts, &p, base, o->trials, &r);
            if (rc) return rc;
            printf("| %s | %s | %d/%d | %.0f |\n", pol[i].desc->name, hb ? p.spec : "defaults",
                   r.correct, r.trials, r.kv_bytes / KS_MAX(r.trials, 1));
            pk_json(e, first, pol[i].desc->name, hb ? o->budgets[b] : 0, "fraction", &r);
            first = false;
            fflush(stdout);
        }
    }
    fprintf(e->json, "],\n");
    printf("\n");
    return 0;
}

/* Prompts per point: all at 1x and 4x, fewer beyond (prefill cost grows with length): 16x
 * gets 2/3 of them, 64x 1/6 (at least 2). */
static int32_t trials_at(const ev_opts *o, double mult)
{
    return mult <= 4 ? o->trials : KS_MAX(2, KS_MIN(o->trials, (int32_t)(o->trials * 8 / mult)));
}

static int part_lengths(ev_env *e, const ev_opts *o, const text_sents *ts, const ev_policy *pol,
                        int np, int32_t base)
{
    printf("## Passkey by context length and needle depth (defaults)\n\n| policy | length | "
           "correct | by depth quarter | KV bytes after the first token | prefill tok/s |\n"
           "|---|---|---|---|---|---|\n");
    fprintf(e->json, "\"passkey\": [");
    for (int m = 0; m < o->n_mult; m++) {
        int32_t target = (int32_t)lround(base * o->mult[m]);
        for (int i = 0; i < np; i++) {
            pk_result r;
            memset(&r, 0, sizeof(r));
            double need = pol_reserve_bytes(e, &pol[i], target, pol_chunk(e, &pol[i], 256));
            int rc = 0;
            if (need > (double)o->seq_kv_mb * 1048576.0) {
                snprintf(r.skip_buf, sizeof(r.skip_buf),
                         "reserves %.1f MiB of KV for a %d-token "
                         "prompt (holds it uncompressed), over the %d MiB per sequence",
                         need / 1048576.0, target, o->seq_kv_mb);
                r.skip = r.skip_buf;
                printf("| %s | %dx | skipped: %s |\n", pol[i].spec, (int)o->mult[m], r.skip);
            } else {
                rc = pk_run(e, o, ts, &pol[i], target, trials_at(o, o->mult[m]), &r);
                if (rc) return rc;
                printf(
                    "| %s | %dx (~%.0f tokens) | %d/%d | %d/%d %d/%d %d/%d %d/%d | %.0f | %.0f |\n",
                    pol[i].spec, (int)o->mult[m], (double)r.tokens / r.trials, r.correct, r.trials,
                    r.bin_ok[0], r.bin_n[0], r.bin_ok[1], r.bin_n[1], r.bin_ok[2], r.bin_n[2],
                    r.bin_ok[3], r.bin_n[3], r.kv_bytes / r.trials,
                    r.prefill_s > 0 ? (double)r.tokens / r.prefill_s : 0.0);
            }
            pk_json(e, m == 0 && i == 0, pol[i].desc->name, o->mult[m], "mult", &r);
            fflush(stdout);
        }
    }
    fprintf(e->json, "]\n");
    printf("\n");
    return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

/* max_mult: the longest passkey prompt in multiples of the trained context. */
static int env_open(const ev_opts *o, ev_env *e, double max_mult)
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
    e->max_chunk = KS_MAX(o->chunk, 1024);
    model_ctx_params cp = {
        .n_threads = o->threads, .max_batch_tokens = e->max_chunk, .max_seqs = 1};
    if ((rc = model_ctx_create(e->m, &cp, &e->ctx))) return rc;
    size_t row = (size_t)e->hp->head_dim * 2;
    int64_t max_tokens = KS_MAX((int64_t)o->ppl_tokens, (int64_t)(max_mult * e->hp->n_ctx_train));
    model_set_n_ctx(e->m, (int32_t)KS_MIN(max_tokens, INT32_MAX)); /* Phi-3 long rope factors */
    size_t per_head = (size_t)(max_tokens + e->max_chunk) / o->block_tokens + 8;
    kv_pool_params pp = {.budget_bytes = per_head * o->block_tokens * row * 2 *
                                         (size_t)e->hp->n_layer * e->hp->n_head_kv,
                         .block_tokens = o->block_tokens,
                         .head_dim = e->hp->head_dim,
                         .k_dtype = KS_DTYPE_F16,
                         .v_dtype = KS_DTYPE_F16};
    if ((rc = kv_pool_create(&pp, &e->pool))) return rc;
    e->logits = malloc((size_t)e->max_chunk * e->hp->n_vocab * sizeof(float));
    return e->logits ? 0 : KS_ERR_NOMEM;
}

static void env_close(ev_env *e)
{
    free(e->logits);
    kv_pool_destroy(e->pool);
    model_ctx_destroy(e->ctx);
    model_free(e->m);
}

/* Every selected registered policy at its defaults, `full` first (the reference). */
static int pols_make(const ev_opts *o, const ev_env *e, ev_policy *pol, FILE *json)
{
    int np = 0;
    fprintf(json, "\"policies\": [");
    for (int32_t k = 0; k < kv_policy_count() && np < EV_MAX_POL; k++) {
        const kv_policy_desc *d = kv_policy_desc_at(k);
        if (k > 0 && !pol_selected(o, d)) continue;
        if (pol_make(o->profile, d, 0, &pol[np])) {
            fprintf(stderr, "bench_eval: policy %s: invalid parameters (--profile?), skipped\n",
                    d->name);
            continue;
        }
        char params[512];
        pol_params_text(e, &pol[np], params, sizeof(params));
        fprintf(json, "%s{\"name\": \"%s\", \"has_budget\": %s, \"summary\": ", np ? ", " : "",
                d->name, pol_has_budget(d) ? "true" : "false");
        json_str(json, d->summary);
        fprintf(json, ", \"defaults\": ");
        json_str(json, params);
        fprintf(json, "}");
        printf("- `%s` defaults for this model: %s\n", d->name, params[0] ? params : "none");
        np++;
    }
    fprintf(json, "],\n");
    printf("\n");
    return np;
}

static int eval_run(const ev_opts *o, ev_env *e, const char *text, size_t text_len)
{
    ev_policy *pol = calloc(EV_MAX_POL, sizeof(ev_policy));
    text_sents ts = {0};
    int32_t n = tok_encode(e->vocab, text, text_len, true, false, NULL, 0);
    int32_t *toks = malloc((size_t)KS_MAX(n, 1) * sizeof(int32_t));
    int rc = pol && toks ? sents_split(e, text, &ts) : KS_ERR_NOMEM;
    int32_t base = e->hp->n_ctx_train * 15 / 16;
    if (rc == 0) {
        tok_encode(e->vocab, text, text_len, true, false, toks, n);
        fprintf(e->json, "{\"model\": ");
        json_str(e->json, o->model);
        fprintf(e->json,
                ", \"n_ctx_train\": %d, \"base\": %d, \"seed\": %llu, \"trials\": %d, "
                "\"seq_kv_mb\": %d,\n",
                e->hp->n_ctx_train, base, (unsigned long long)o->seed, o->trials, o->seq_kv_mb);
        int np = pols_make(o, e, pol, e->json);
        if (o->ppl_tokens > 1) part_ppl(e, o, pol, np, toks, KS_MIN(n, o->ppl_tokens));
        rc = part_agree(e, o, pol, np, toks, KS_MIN(n, e->hp->n_ctx_train));
        if (rc == 0) rc = part_budget(e, o, &ts, pol, np, base);
        if (rc == 0) rc = part_lengths(e, o, &ts, pol, np, base);
        fprintf(e->json, "}\n");
    }
    for (int32_t i = 0; i < ts.n; i++)
        free(ts.s[i]);
    free(ts.s);
    free(ts.n_tok);
    free(toks);
    free(pol);
    return rc;
}

int main(int argc, char **argv)
{
    ev_opts o;
    int prc = opts_parse(argc, argv, &o);
    if (prc) return prc == KS_ARGS_HELP ? 0 : 2;
    char *text = NULL;
    size_t text_len = 0;
    ks_diag d;
    if (ks_read_file(o.text, &text, &text_len, &d)) {
        fprintf(stderr, "bench_eval: %s\n", d.msg);
        return 1;
    }
    double max_mult = 1;
    for (int i = 0; i < o.n_mult; i++)
        max_mult = fmax(max_mult, o.mult[i]);
    ev_env e;
    int rc = env_open(&o, &e, max_mult);
    e.json = rc == 0 ? fopen(o.json ? o.json : "/dev/null", "w") : NULL;
    if (rc || !e.json) {
        fprintf(stderr, "bench_eval: setup failed: %s\n", rc ? ks_status_str(rc) : o.json);
        free(text);
        return 1;
    }
    printf("# bench_eval: %s (%d layers, %d KV heads, head dim %d, trained context %d), "
           "seed %llu\n\n",
           o.model, e.hp->n_layer, e.hp->n_head_kv, e.hp->head_dim, e.hp->n_ctx_train,
           (unsigned long long)o.seed);
    rc = eval_run(&o, &e, text, text_len);
    if (rc) fprintf(stderr, "bench_eval: %s\n", ks_status_str(rc));
    fclose(e.json);
    env_close(&e);
    free(text);
    return rc ? 1 : 0;
}

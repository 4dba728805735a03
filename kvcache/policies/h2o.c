/* h2o.c - the `h2o` policy: heavy hitters + recent tokens (H2O).
 *
 * Paper: Zhang, Sheng, Zhou, Chen, Zheng, Cai, Song, Tian, Ré, Barrett, Wang, Chen, "H2O:
 * Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models"
 * (NeurIPS 2023, arXiv:2306.14048).
 *
 * The idea in plain words. A small set of tokens ("heavy hitters") receives most of the
 * attention, and a token that was important to past queries tends to stay important. H2O
 * therefore gives every cached token a running score, the attention probability it has
 * received from every query so far (summed over the query heads that share its KV head), and
 * when the cache is over budget it keeps the `recent` newest tokens plus the `heavy` tokens
 * with the highest scores, per layer and KV head, evicting the rest (greedy, never brought
 * back). The scores cost nothing extra here: the attention core reports key_mass for every
 * query of every chunk, and the policy adds it to the kept tokens' scores.
 *
 * Chunks: a chunk attends to the whole cache plus itself (causally); eviction runs after it,
 * so memory is bounded by heavy + recent + one chunk. Positions are the original ones.
 *
 * Two modes. `original` is the published algorithm above: every query's mass is summed and
 * the cache is evicted greedily after every chunk, prompt chunks included. On kjv-tiny it
 * loses the pass key at a 25% budget: the summed scores of a whole prompt are dominated by
 * the filler and the first tokens, and the heads that copy the key look at it only once the
 * answer's first token exists (the same finding as snapkv's `first_token`). `deferred` (the
 * default) changes when and on what it evicts, not what it keeps: it holds the prompt (up to
 * `hold` tokens per table), lets the scores decay by `decay` per query step (so recent
 * queries weigh most; in a prompt chunk the last 1 / (1 - decay) queries vote, the
 * exponential sum's effective window, and older chunks' votes decay with the chunk's
 * length), keeps `n_sink` first tokens always (attention sinks, out of the heavy share),
 * max-pools the scores over `kernel` neighbours before choosing heavy hitters (a fact spans
 * several tokens), and runs the first eviction after the first generated token, which then
 * votes; from then on it evicts greedily after every chunk as H2O does. A prompt chunk that
 * takes a table past `hold` is evicted at once, so no prompt waits for a decode token to free
 * memory it needs (the admission bound counts the held prompt).
 *
 * Invariant: score[j] belongs to slot j of the head's table (compacted with the same keep
 * list as the table).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"

/* When and on what scores it evicts (kvcache.h2o.mode). */
typedef enum h2o_mode {
    H2O_DEFERRED, /* hold the prompt, decayed + pooled scores, sinks, first eviction after the
                   * first generated token */
    H2O_ORIGINAL, /* the published algorithm: summed scores, greedy after every chunk */
} h2o_mode;

static const char *const h2o_mode_names[] = {"deferred", "original", NULL};

/* The parameters (kvcache.h2o.*; table below). */
typedef struct h2o_params {
    int32_t budget; /* heavy + recent: tokens kept per layer and KV head */
    int32_t heavy;  /* heavy-hitter tokens kept (the sinks included, deferred) */
    int32_t recent; /* most recent tokens kept */
    h2o_mode mode;
    int32_t hold;   /* deferred: prompt tokens a table holds before evicting (0 = all) */
    int32_t n_sink; /* deferred: first tokens always kept */
    int32_t kernel; /* deferred: max-pooling kernel over the scores (odd) */
    double decay;   /* deferred: score decay per query step */
} h2o_params;

extern const kv_policy_desc kv_policy_desc_h2o;
_Static_assert(sizeof(h2o_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

typedef struct h2o_head {
    float *score; /* [cap] accumulated attention per slot */
    int32_t cap, n_scored;
} h2o_head;

typedef struct h2o_state {
    int32_t heavy, recent;
    h2o_params p;
    int32_t votes; /* deferred: prompt queries of a chunk that vote, 1 / (1 - decay) */
    bool pending;  /* deferred: the prompt is in; the next chunk votes, then eviction */
    bool started;  /* deferred: the first eviction ran; greedy from now on */
    int32_t n_head_kv, n_layer;
    h2o_head *heads;       /* [n_layer][n_head_kv] */
    struct h2o_cand *cand; /* eviction scratch, grown once to the cache's bound */
    int32_t *keep;
    int64_t cap_cand, cap_keep;
} h2o_state;

typedef struct h2o_cand {
    float s;
    int32_t j;
} h2o_cand;

static int h2o_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    h2o_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_h2o, &mi, &p);
    if (p.heavy < 0 || p.recent < 1 || p.hold < 0 || p.n_sink < 0 || p.kernel < 1 ||
        p.kernel % 2 == 0 || !(p.decay > 0 && p.decay <= 1))
        return KS_ERR_INVALID;
    h2o_state *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->heavy = p.heavy;
    s->recent = p.recent;
    s->p = p;
    s->votes = p.decay < 1 ? (int32_t)KS_MAX(1, lround(1.0 / (1.0 - p.decay))) : INT32_MAX;
    s->n_layer = kv_seq_n_layer(seq);
    s->n_head_kv = kv_seq_n_head_kv(seq);
    s->heads = calloc((size_t)s->n_layer * s->n_head_kv, sizeof(h2o_head));
    if (!s->heads) {
        free(s);
        return KS_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

static void h2o_free(kv_seq *seq, void *state)
{
    (void)seq;
    h2o_state *s = state;
    if (!s) return;
    for (int32_t i = 0; i < s->n_layer * s->n_head_kv; i++)
        free(s->heads[i].score);
    free(s->heads);
    free(s->cand);
    free(s->keep);
    free(s);
}

static int h2o_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    (void)seq;
    if (chunk->n_new > 0) memcpy(pos_out, chunk->idx, (size_t)chunk->n_new * sizeof(int32_t));
    return 0;
}

static int h2o_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
                     int32_t max, int32_t *n)
{
    (void)q;
    return kv_seq_spans(seq, layer, kv_head, out, max, n);
}

static int32_t h2o_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q)
{
    (void)layer;
    (void)kv_head;
    const h2o_state *s = kv_seq_policy_state(seq);
    if (s->p.mode == H2O_ORIGINAL) return q->n_q; /* every query votes */
    return KS_MIN(q->n_q, s->votes);              /* the decayed sum's effective window */
}

static int h2o_after_attention(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                               const attn_span *spans, int32_t n_spans, const float *key_mass,
                               int32_t n_mass)
{
    (void)n_mass;
    h2o_state *s = kv_seq_policy_state(seq);
    h2o_head *h = &s->heads[(size_t)layer * s->n_head_kv + kv_head];
    int32_t n_keys = 0;
    for (int32_t i = 0; i < n_spans; i++)
        n_keys += spans[i].n;
    if (n_keys > h->cap) {
        int32_t cap = KS_MAX(n_keys, h->cap + h->cap / 2);
        float *ns = realloc(h->score, (size_t)cap * sizeof(float));
        if (!ns) return KS_ERR_NOMEM;
        h->score = ns;
        h->cap = cap;
    }
    if (n_keys > h->n_scored)
        memset(h->score + h->n_scored, 0, (size_t)(n_keys - h->n_scored) * sizeof(float));
    h->n_scored = n_keys;
    if (s->p.mode == H2O_DEFERRED && s->p.decay < 1) { /* older votes fade by query step */
        float f = (float)pow(s->p.decay, q->n_q);
        for (int32_t j = 0; j < n_keys; j++)
            h->score[j] *= f;
    }
    for (int32_t g = 0; g < q->n_group; g++) {
        const float *m = key_mass + (size_t)g * n_keys;
        for (int32_t j = 0; j < n_keys; j++)
            h->score[j] += m[j];
    }
    return 0;
}

static int h2o_cand_cmp(const void *a, const void *b)
{
    const h2o_cand *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

static int h2o_int_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The score a candidate is ranked by: its own (original), or the max over `kernel`
 * neighbouring candidates (deferred), so that a chosen token brings its neighbours along. */
static float h2o_rank_score(const h2o_state *s, const h2o_head *h, int32_t nc, int32_t j)
{
    if (s->p.mode == H2O_ORIGINAL) return h->score[j];
    int32_t r = s->p.kernel / 2, lo = KS_MAX(0, j - r), hi = KS_MIN(nc - 1, j + r);
    float v = h->score[lo];
    for (int32_t i = lo + 1; i <= hi; i++)
        v = fmaxf(v, h->score[i]);
    return v;
}

/* Keeps the last `recent` slots and the `heavy` best-scored older ones of one table (deferred:
 * the first n_sink slots among the heavy ones, the rest by pooled score). */
static int h2o_evict(h2o_state *s, kv_head_table *t, h2o_head *h)
{
    int32_t n = t->n_tok, budget = s->heavy + s->recent;
    if (n <= budget) return 0;
    if (h->n_scored != n)
        return KS_ERR_INTERNAL; /* the model did not report key mass for this chunk */
    int32_t nc = n - s->recent;
    int32_t sinks = s->p.mode == H2O_DEFERRED ? KS_MIN(s->p.n_sink, s->heavy) : 0;
    if (ks_buf_reserve((void **)&s->cand, &s->cap_cand, nc, sizeof(h2o_cand)) ||
        ks_buf_reserve((void **)&s->keep, &s->cap_keep, budget, sizeof(int32_t)))
        return KS_ERR_NOMEM;
    h2o_cand *cand = s->cand;
    int32_t *keep = s->keep;
    for (int32_t i = 0; i < sinks; i++)
        keep[i] = i;
    for (int32_t j = sinks; j < nc; j++)
        cand[j - sinks] = (h2o_cand){h2o_rank_score(s, h, nc, j), j};
    qsort(cand, (size_t)(nc - sinks), sizeof(h2o_cand), h2o_cand_cmp);
    for (int32_t i = sinks; i < s->heavy; i++)
        keep[i] = cand[i - sinks].j;
    qsort(keep, (size_t)s->heavy, sizeof(int32_t), h2o_int_cmp);
    for (int32_t i = 0; i < s->recent; i++)
        keep[s->heavy + i] = nc + i;
    int rc = kv_head_table_keep(t, keep, budget);
    if (rc == 0) {
        for (int32_t i = 0; i < budget; i++)
            h->score[i] = h->score[keep[i]];
        h->n_scored = budget;
    }
    return rc;
}

/* Whether eviction runs after this chunk. original: always. deferred: greedy (always) from
 * the chunk after a finished prompt on (normally the first generated token, which votes; a
 * prompt continuation ends the wait too) or from the first generated chunk of a sequence
 * that had no prompt; before that, only at a prompt chunk that takes the largest table
 * (layer 0's) past `hold`: a long prompt never waits for a decode token to free memory it
 * needs. */
static bool h2o_evict_now(h2o_state *s, kv_seq *seq, const kv_chunk *chunk)
{
    if (s->p.mode == H2O_ORIGINAL || s->started) return true;
    if (s->pending || !chunk->prefill) {
        s->started = true;
        s->pending = false;
        return true;
    }
    if (!chunk->prefill_last && s->p.hold > 0 && kv_seq_table(seq, 0, 0)->n_tok > s->p.hold)
        return true;
    if (chunk->prefill_last) s->pending = true;
    return false;
}

static int h2o_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    h2o_state *s = kv_seq_policy_state(seq);
    if (!h2o_evict_now(s, seq, chunk)) return 0;
    for (int32_t l = 0; l < s->n_layer; l++) {
        for (int32_t kh = 0; kh < s->n_head_kv; kh++) {
            int rc =
                h2o_evict(s, kv_seq_table(seq, l, kh), &s->heads[(size_t)l * s->n_head_kv + kh]);
            if (rc) return rc;
        }
    }
    return 0;
}

static const kv_policy kv_policy_h2o = {
    .name = "h2o",
    .init = h2o_init,
    .free = h2o_free,
    .positions = h2o_positions,
    .spans = h2o_spans,
    .mass_queries = h2o_mass_queries,
    .after_attention = h2o_after_attention,
    .after_chunk = h2o_after_chunk,
};

static const kv_param_desc h2o_params_table[] = {
    {"budget", KV_PARAM_INT, offsetof(h2o_params, budget), 2, INT32_MAX, 1024, NULL, NULL, false,
     "tokens kept per layer and KV head (heavy + recent)"},
    {"heavy", KV_PARAM_INT, offsetof(h2o_params, heavy), 0, INT32_MAX, 512, NULL, NULL, false,
     "heavy-hitter tokens kept per layer and KV head (highest accumulated attention)"},
    {"recent", KV_PARAM_INT, offsetof(h2o_params, recent), 1, INT32_MAX, 512, NULL, NULL, false,
     "most recent tokens kept per layer and KV head"},
    {"mode", KV_PARAM_ENUM, offsetof(h2o_params, mode), 0, 0, H2O_DEFERRED, NULL, h2o_mode_names,
     false,
     "`deferred`: hold the prompt, decayed and pooled scores, sinks, first eviction after the "
     "first generated token; `original`: H2O's summed scores, greedy after every chunk"},
    {"hold", KV_PARAM_INT, offsetof(h2o_params, hold), 0, INT32_MAX, 4096, NULL, NULL, false,
     "deferred: prompt tokens a table holds before evicting; past it each prompt chunk is "
     "evicted at once (0 = hold the whole prompt)"},
    {"n_sink", KV_PARAM_INT, offsetof(h2o_params, n_sink), 0, 1024, 4, NULL, NULL, false,
     "deferred: first tokens always kept (attention sinks, out of the heavy share)"},
    {"kernel", KV_PARAM_INT, offsetof(h2o_params, kernel), 1, 63, 9, NULL, NULL, false,
     "deferred: max-pooling kernel over the scores before choosing heavy hitters (odd)"},
    {"decay", KV_PARAM_DOUBLE, offsetof(h2o_params, decay), 0.01, 1, 0.9, NULL, NULL, false,
     "deferred: score decay per query step (1 = plain sum over every query)"},
};

/* The common budget splits half and half (H2O's equal split); a given heavy or recent takes
 * its share and the other gets the rest; both given: budget = heavy + recent. */
static void h2o_derive(void *params, uint64_t set, const kv_model_info *info)
{
    h2o_params *p = params;
    const kv_policy_desc *d = &kv_policy_desc_h2o;
    bool hs = kv_param_was_set(d, set, "heavy"), rs = kv_param_was_set(d, set, "recent");
    if (hs && rs) {
        p->budget = (int32_t)KS_MIN((int64_t)p->heavy + p->recent, INT32_MAX);
        return;
    }
    if (!kv_param_was_set(d, set, "hold")) p->hold = kv_model_ctx(info);
    if (!kv_param_was_set(d, set, "budget")) p->budget = KS_MAX(2, kv_model_ctx(info) / 4);
    if (hs)
        p->recent = KS_MAX(1, p->budget - p->heavy);
    else if (rs)
        p->heavy = KS_MAX(0, p->budget - p->recent);
    else {
        p->heavy = p->budget / 2;
        p->recent = p->budget - p->heavy;
    }
}

static const kv_param_rule h2o_rules[] = {{"budget", "context_length / 4"},
                                          {"heavy", "budget / 2"},
                                          {"recent", "budget - heavy"},
                                          {"hold", "context_length"},
                                          {NULL, NULL}};

static int h2o_validate(const void *params, const char *table, ks_diag *d)
{
    const h2o_params *p = params;
    char key[96];
    snprintf(key, sizeof(key), "%s.kernel", table);
    if (p->kernel % 2 == 0)
        return ks_diag_key(d, KS_ERR_RANGE, key, "must be odd (got %d)", p->kernel);
    return KS_OK;
}

/* original: heavy + recent, plus the chunk attended before eviction. deferred: also the held
 * prompt, up to `hold` (+ the chunk that passes it); n_tokens (the prompt + one decode token)
 * already counts the generated token that votes. */
static int64_t h2o_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                             int32_t *dense_layers)
{
    const h2o_params *p = params;
    (void)n_layer;
    (void)dense_layers;
    int64_t greedy = (int64_t)p->heavy + p->recent + chunk;
    if (p->mode == H2O_ORIGINAL) return greedy;
    int64_t held = p->hold > 0 ? KS_MIN(n_tokens, (int64_t)p->hold + chunk) : n_tokens;
    return KS_MAX(greedy, held);
}

/* The view: heavy + recent tokens per head, the recent ones as the window. */
static void h2o_view_hint(const void *params, int32_t n_layer, int32_t layer, int64_t n_prompt,
                          int64_t seen, kv_view_hint *out)
{
    (void)n_layer, (void)layer, (void)n_prompt;
    const h2o_params *p = params;
    out->budget = (int32_t)KS_MIN((int64_t)p->heavy + p->recent, INT32_MAX);
    out->window_from = seen - p->recent;
}

const kv_policy_desc kv_policy_desc_h2o = {
    .name = "h2o",
    .summary = "Keeps the `heavy` tokens with the most accumulated attention plus the `recent` "
               "newest, per layer and KV head.",
    .reference = "H2O: Zhang et al., Heavy-Hitter Oracle for Efficient Generative Inference of "
                 "Large Language Models, NeurIPS 2023, arXiv:2306.14048",
    .ops = &kv_policy_h2o,
    .view_hint = h2o_view_hint,
    .params_table = h2o_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(h2o_params_table),
    .params_size = sizeof(h2o_params),
    .validate = h2o_validate,
    .admission = h2o_admission,
    .derive = h2o_derive,
    .rules = h2o_rules,
};

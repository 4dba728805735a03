/* snapkv.c - the `snapkv` policy, and the SnapKV selection that `pyramid` reuses.
 *
 * Paper: Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen, "SnapKV: LLM Knows What
 * You are Looking for Before Generation" (NeurIPS 2024, arXiv:2404.14469). Details follow the
 * public reference code (SnapKV / KVCache-Factory's SnapKVCluster).
 *
 * The idea in plain words. The last few tokens of a prompt (the "observation window", w
 * tokens, usually the question) already attend to the parts of the prompt the answer will
 * need, and each attention head keeps looking at the same places while it generates. So once
 * the prompt is read, SnapKV lets the last w prompt queries vote: every earlier prompt token
 * scores the attention probability it receives from those queries (causal inside the window,
 * summed over the w queries). Scores are smoothed along the sequence with a pooling kernel
 * (max or average, stride 1, padding kernel/2) so that a chosen token brings its neighbours
 * along (a fact spans several tokens), the votes of the query heads sharing one KV head are
 * combined (mean by default), and each layer and KV head keeps its top (C - w) tokens plus
 * the window itself. The rest is evicted at once (blocks return to the pool). A prompt of
 * fewer than C tokens is kept whole.
 *
 * How the scores are obtained here. All attention goes through the shared core; the score is
 * its key_mass (probability per key, summed over queries). In the final prompt chunk the
 * policy asks the model for the key mass of the chunk's last min(w, n) queries
 * (mass_queries / after_attention). When the window straddles chunks (last chunk shorter than
 * w), the earlier window queries are replayed: the policy remembers the last w rotated
 * queries of each (layer, KV head) and runs them through attn_forward with key_mass over the
 * cached keys after the chunk; the causal mask (sequence indices) makes them see exactly the
 * keys they saw when they ran. With `interval` > 0 the cache is re-compressed back to its
 * budget every `interval` generated tokens, the observation window being the last w queries.
 *
 * Invariant: the positions are the original ones (pos == idx); spans are the table's blocks
 * in slot order, so key j of key_mass is slot j.
 */
#include "snapkv.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/policy_args.h"

/* The parameters (kvcache.snapkv.*; table at the end of the file). */
typedef struct snapkv_params {
    int32_t budget, window, kernel;
    kv_pooling pooling;
    kv_reduce reduce;
    int32_t interval;
    snap_compress_at compress_at;
    double budget_fraction;
    int32_t hold;
} snapkv_params;

const char *const snap_compress_at_names[] = {"first_token", "prompt_end", NULL};

extern const kv_policy_desc kv_policy_desc_snapkv;
_Static_assert(sizeof(snapkv_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

typedef struct snap_head {
    float *score;      /* [n_group][n_keys] window attention mass per slot */
    int64_t cap_score; /* floats */
    int32_t n_keys;    /* slots the score covers */
    int32_t got;       /* window queries already summed into score (final chunk) */
    float *ring;       /* [w][n_group * head_dim] the last w queries, circular */
    int32_t *ring_idx; /* [w] their sequence indices */
    int32_t ring_n, ring_pos;
    int32_t n_group, head_dim;
    int err; /* allocation failure in a hook that cannot return a status */
} snap_head;

typedef struct snap_state {
    snap_config cfg;
    int32_t n_layer, n_head_kv;
    snap_head *heads;      /* [n_layer][n_head_kv] */
    int32_t *target;       /* [n_layer] tokens kept per head after compression */
    bool has_target;       /* the prompt was compressed (targets are set) */
    bool pending;          /* first_token: a finished prompt waits for the next chunk to vote */
    int32_t n_gen;         /* tokens generated since the last compression */
    attn_scratch *scratch; /* replay of window queries, one query at a time */
    int32_t scratch_group;
    /* selection and replay scratch: sized at the prompt's compression (the largest cache
     * they see), so re-compression during generation never allocates */
    attn_span *spans;
    float *out;
    struct snap_cand *cand;
    int32_t *keep;
    int64_t cap_spans, cap_out, cap_cand, cap_keep;
} snap_state;

typedef struct snap_cand {
    float s;
    int32_t j;
} snap_cand;

int snap_state_create(kv_seq *seq, const snap_config *cfg, void **state)
{
    if (cfg->budget < 1 || cfg->window < 1 ||
        (cfg->budget_fraction <= 0 && cfg->window > cfg->budget) || cfg->kernel < 1 ||
        cfg->kernel % 2 == 0 || cfg->interval < 0 || cfg->beta < 1 || cfg->budget_fraction < 0 ||
        cfg->budget_fraction > 1 || (cfg->pooling != KV_POOL_MAX && cfg->pooling != KV_POOL_AVG) ||
        (cfg->reduce != KV_REDUCE_MEAN && cfg->reduce != KV_REDUCE_MAX))
        return KS_ERR_INVALID;
    snap_state *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->cfg = *cfg;
    s->n_layer = kv_seq_n_layer(seq);
    s->n_head_kv = kv_seq_n_head_kv(seq);
    s->heads = calloc((size_t)s->n_layer * s->n_head_kv, sizeof(snap_head));
    s->target = calloc((size_t)s->n_layer, sizeof(int32_t));
    if (!s->heads || !s->target) {
        snap_free(seq, s);
        return KS_ERR_NOMEM;
    }
    *state = s;
    return 0;
}

void snap_free(kv_seq *seq, void *state)
{
    (void)seq;
    snap_state *s = state;
    if (!s) return;
    for (int32_t i = 0; s->heads && i < s->n_layer * s->n_head_kv; i++) {
        free(s->heads[i].score);
        free(s->heads[i].ring);
        free(s->heads[i].ring_idx);
    }
    free(s->heads);
    free(s->target);
    attn_scratch_destroy(s->scratch);
    free(s->spans);
    free(s->out);
    free(s->cand);
    free(s->keep);
    free(s);
}

static snap_head *snap_head_of(snap_state *s, int32_t layer, int32_t kv_head)
{
    return &s->heads[(size_t)layer * s->n_head_kv + kv_head];
}

int snap_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    (void)seq;
    if (chunk->n_new > 0) memcpy(pos_out, chunk->idx, (size_t)chunk->n_new * sizeof(int32_t));
    return 0;
}

int snap_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
               int32_t max, int32_t *n)
{
    (void)q;
    return kv_seq_spans(seq, layer, kv_head, out, max, n);
}

/* Remembers the last w queries of this call (all chunks: the window may straddle them). */
static int snap_ring_save(snap_head *h, const kv_query *q, int32_t w)
{
    int32_t row = q->n_group * q->head_dim;
    if (!h->ring || h->n_group != q->n_group || h->head_dim != q->head_dim) {
        free(h->ring);
        free(h->ring_idx);
        h->ring = malloc((size_t)w * row * sizeof(float));
        h->ring_idx = malloc((size_t)w * sizeof(int32_t));
        h->ring_n = h->ring_pos = 0;
        h->n_group = q->n_group;
        h->head_dim = q->head_dim;
        if (!h->ring || !h->ring_idx) return KS_ERR_NOMEM;
    }
    for (int32_t t = KS_MAX(0, q->n_q - w); t < q->n_q; t++) {
        const float *src = q->q + (size_t)t * q->q_tok_stride;
        for (int32_t g = 0; g < q->n_group; g++)
            memcpy(h->ring + (size_t)h->ring_pos * row + (size_t)g * q->head_dim,
                   src + (size_t)g * q->head_dim, (size_t)q->head_dim * sizeof(float));
        h->ring_idx[h->ring_pos] = q->q_idx[t];
        h->ring_pos = (h->ring_pos + 1) % w;
        h->ring_n = KS_MIN(h->ring_n + 1, w);
    }
    return 0;
}

/* Whether the selection runs after this chunk. prompt_end: at the end of every prompt.
 * first_token: at the chunk after a finished prompt, normally the first generated token, so
 * that the answer's first token votes (copying heads look at the needle only once it exists);
 * a prompt chunk arriving instead (the client continues the prompt) ends the wait too. */
static bool snap_compress_now(const snap_state *s, kv_seq *seq, const kv_chunk *chunk)
{
    /* A prompt longer than `hold` is compressed at the end of each chunk that takes the
     * largest table (layer 0's) past it: it never waits for a decode token, or the prompt's
     * end, to free memory it needs. All heads of a chunk see the same count (appends come
     * before any head runs, compression after all of them). */
    if (chunk->prefill && !chunk->prefill_last && s->cfg.hold > 0 &&
        kv_seq_table(seq, 0, 0)->n_tok > s->cfg.hold)
        return true;
    if (s->cfg.compress_at == SNAP_AT_PROMPT_END) return chunk->prefill && chunk->prefill_last;
    return s->pending;
}

int32_t snap_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q)
{
    snap_state *s = kv_seq_policy_state(seq);
    snap_head *h = snap_head_of(s, layer, kv_head);
    int rc = snap_ring_save(h, q, s->cfg.window);
    if (rc) {
        h->err = rc;
        return 0;
    }
    h->got = 0;
    if (!snap_compress_now(s, seq, q->chunk)) return 0;
    h->got = KS_MIN(s->cfg.window, q->n_q);
    return h->got;
}

/* Makes h->score hold n_keys zeroed columns per query head. */
static int snap_score_reset(snap_head *h, int32_t n_keys)
{
    int64_t need = (int64_t)h->n_group * n_keys;
    if (need > h->cap_score) {
        float *ns = realloc(h->score, (size_t)KS_MAX(need, 1) * sizeof(float));
        if (!ns) return KS_ERR_NOMEM;
        h->score = ns;
        h->cap_score = need;
    }
    memset(h->score, 0, (size_t)need * sizeof(float));
    h->n_keys = n_keys;
    return 0;
}

int snap_after_attention(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                         const attn_span *spans, int32_t n_spans, const float *key_mass,
                         int32_t n_mass)
{
    (void)n_mass;
    snap_state *s = kv_seq_policy_state(seq);
    snap_head *h = snap_head_of(s, layer, kv_head);
    int32_t n_keys = 0;
    for (int32_t i = 0; i < n_spans; i++)
        n_keys += spans[i].n;
    if (q->n_group != h->n_group || n_keys != kv_seq_table(seq, layer, kv_head)->n_tok)
        return KS_ERR_INTERNAL;
    int rc = snap_score_reset(h, n_keys);
    if (rc) return rc;
    memcpy(h->score, key_mass, (size_t)h->n_group * n_keys * sizeof(float));
    return 0;
}

/* Adds the key mass of ring queries [first, first + count) (0 = oldest kept) to h->score by
 * running them through the attention core over the head's current spans. */
static int snap_replay(snap_state *s, kv_seq *seq, int32_t layer, int32_t kv_head, int32_t first,
                       int32_t count)
{
    snap_head *h = snap_head_of(s, layer, kv_head);
    if (count <= 0) return 0;
    if (!s->scratch || s->scratch_group < h->n_group) {
        attn_scratch_destroy(s->scratch);
        s->scratch = NULL;
        int rc = attn_scratch_create(h->head_dim, h->n_group, 1, &s->scratch);
        if (rc) return rc;
        s->scratch_group = h->n_group;
    }
    const kv_head_table *t = kv_seq_table(seq, layer, kv_head);
    if (ks_buf_reserve((void **)&s->spans, &s->cap_spans, KS_MAX(t->n_blocks, 1),
                       sizeof(attn_span)) ||
        ks_buf_reserve((void **)&s->out, &s->cap_out, (int64_t)h->n_group * h->head_dim,
                       sizeof(float)))
        return KS_ERR_NOMEM;
    attn_span *spans = s->spans;
    float *out = s->out;
    int32_t n_spans = 0;
    int rc = kv_seq_spans(seq, layer, kv_head, spans, t->n_blocks, &n_spans);
    int32_t w = s->cfg.window, row = h->n_group * h->head_dim;
    for (int32_t e = first; rc == 0 && e < first + count; e++) {
        int32_t r = ((h->ring_pos - h->ring_n + e) % w + w) % w;
        attn_params p = {
            .n_q = 1,
            .n_group = h->n_group,
            .head_dim = h->head_dim,
            .scale = 1.0f / sqrtf((float)h->head_dim),
            .k_dtype = kv_pool_k_dtype(kv_seq_pool(seq)),
            .v_dtype = kv_pool_v_dtype(kv_seq_pool(seq)),
            .q = h->ring + (size_t)r * row,
            .q_tok_stride = row,
            .q_idx = &h->ring_idx[r],
            .out = out,
            .out_tok_stride = row,
            .key_mass = h->score,
        };
        rc = attn_forward(&p, spans, n_spans, s->scratch);
    }
    return rc;
}

static int snap_cand_cmp(const void *a, const void *b)
{
    const snap_cand *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

static int snap_int_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Pooled, head-reduced score of candidate j (slots [0, nc) are candidates). */
static float snap_pooled(const snap_head *h, const snap_config *c, int32_t nc, int32_t j)
{
    int32_t r = c->kernel / 2, lo = KS_MAX(0, j - r), hi = KS_MIN(nc - 1, j + r);
    float red = 0;
    for (int32_t g = 0; g < h->n_group; g++) {
        const float *sc = h->score + (size_t)g * h->n_keys;
        float v = c->pooling == KV_POOL_MAX ? -INFINITY : 0.0f;
        for (int32_t i = lo; i <= hi; i++)
            v = c->pooling == KV_POOL_MAX ? fmaxf(v, sc[i]) : v + sc[i];
        if (c->pooling == KV_POOL_AVG)
            v /= (float)c->kernel; /* zero padding counts (count_include_pad) */
        if (c->reduce == KV_REDUCE_MAX)
            red = g == 0 ? v : fmaxf(red, v);
        else
            red += v;
    }
    return c->reduce == KV_REDUCE_MEAN ? red / (float)h->n_group : red;
}

/* Keeps the top (target - w) candidates by pooled score plus the last w slots. */
static int snap_select(snap_state *s, kv_seq *seq, int32_t layer, int32_t kv_head, int32_t target)
{
    kv_head_table *t = kv_seq_table(seq, layer, kv_head);
    snap_head *h = snap_head_of(s, layer, kv_head);
    int32_t n = t->n_tok;
    if (n <= target) return 0;
    if (h->n_keys != n) return KS_ERR_INTERNAL;
    int32_t w = KS_MIN(s->cfg.window, target), nc = n - w, k = target - w;
    if (ks_buf_reserve((void **)&s->cand, &s->cap_cand, KS_MAX(nc, 1), sizeof(snap_cand)) ||
        ks_buf_reserve((void **)&s->keep, &s->cap_keep, target, sizeof(int32_t)))
        return KS_ERR_NOMEM;
    snap_cand *cand = s->cand;
    int32_t *keep = s->keep;
    for (int32_t j = 0; j < nc; j++)
        cand[j] = (snap_cand){snap_pooled(h, &s->cfg, nc, j), j};
    qsort(cand, (size_t)nc, sizeof(snap_cand), snap_cand_cmp);
    for (int32_t i = 0; i < k; i++)
        keep[i] = cand[i].j;
    qsort(keep, (size_t)k, sizeof(int32_t), snap_int_cmp);
    for (int32_t i = 0; i < w; i++)
        keep[k + i] = nc + i;
    int rc = kv_head_table_keep(t, keep, target);
    h->n_keys = 0; /* slots renumbered: the score is stale */
    return rc;
}

static void snap_set_targets(snap_state *s, int32_t n)
{
    const snap_config *c = &s->cfg;
    int32_t C = c->budget;
    if (c->budget_fraction > 0) C = KS_MAX(c->window + 1, (int32_t)lround(c->budget_fraction * n));
    for (int32_t l = 0; l < s->n_layer; l++)
        s->target[l] = c->layer_budget ? c->layer_budget(c, C, s->n_layer, l, n) : C;
    s->has_target = true;
}

/* End of the prompt: sum the window's mass (replaying queries of earlier chunks), select. */
static int snap_compress_prompt(snap_state *s, kv_seq *seq)
{
    int64_t seen = kv_seq_tokens_seen(seq);
    snap_set_targets(s, (int32_t)KS_MIN(seen, INT32_MAX));
    for (int32_t l = 0; l < s->n_layer; l++) {
        for (int32_t kh = 0; kh < s->n_head_kv; kh++) {
            snap_head *h = snap_head_of(s, l, kh);
            int32_t n = kv_seq_table(seq, l, kh)->n_tok;
            if (n <= s->target[l]) continue;
            if (h->got == 0 || h->n_keys != n)
                return KS_ERR_INTERNAL; /* the model did not report the window's mass */
            int32_t in_window = KS_MIN(s->cfg.window, h->ring_n);
            int rc = snap_replay(s, seq, l, kh, h->ring_n - in_window, in_window - h->got);
            if (rc == 0) rc = snap_select(s, seq, l, kh, s->target[l]);
            if (rc) return rc;
        }
    }
    return 0;
}

/* During generation: the last w queries vote again over everything cached. */
static int snap_compress_decode(snap_state *s, kv_seq *seq)
{
    for (int32_t l = 0; l < s->n_layer; l++) {
        for (int32_t kh = 0; kh < s->n_head_kv; kh++) {
            snap_head *h = snap_head_of(s, l, kh);
            int32_t n = kv_seq_table(seq, l, kh)->n_tok;
            if (n <= s->target[l] || h->ring_n == 0) continue;
            int rc = snap_score_reset(h, n);
            if (rc == 0) rc = snap_replay(s, seq, l, kh, 0, h->ring_n);
            if (rc == 0) rc = snap_select(s, seq, l, kh, s->target[l]);
            if (rc) return rc;
        }
    }
    return 0;
}

int snap_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    snap_state *s = kv_seq_policy_state(seq);
    for (int32_t i = 0; i < s->n_layer * s->n_head_kv; i++)
        if (s->heads[i].err) return s->heads[i].err;
    if (snap_compress_now(s, seq, chunk)) {
        s->n_gen = 0;
        s->pending = false;
        return snap_compress_prompt(s, seq);
    }
    if (chunk->prefill && chunk->prefill_last) { /* first_token: wait for the next chunk */
        s->pending = true;
        return 0;
    }
    if (chunk->prefill || !s->has_target || s->cfg.interval <= 0) return 0;
    s->n_gen += chunk->n_new;
    if (s->n_gen < s->cfg.interval) return 0;
    s->n_gen = 0;
    return snap_compress_decode(s, seq);
}

static int snapkv_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    snapkv_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_snapkv, &mi, &p);
    snap_config c = {.budget = p.budget,
                     .budget_fraction = p.budget_fraction,
                     .window = p.window,
                     .kernel = p.kernel,
                     .pooling = p.pooling,
                     .reduce = p.reduce,
                     .interval = p.interval,
                     .beta = 1,
                     .compress_at = p.compress_at,
                     .hold = p.hold};
    return snap_state_create(seq, &c, state);
}

static const kv_policy kv_policy_snapkv = {
    .name = "snapkv",
    .init = snapkv_init,
    .free = snap_free,
    .positions = snap_positions,
    .spans = snap_spans,
    .mass_queries = snap_mass_queries,
    .after_attention = snap_after_attention,
    .after_chunk = snap_after_chunk,
};

int64_t snap_admission(int32_t hold, int64_t n_tokens, int64_t chunk)
{
    return hold > 0 ? KS_MIN(n_tokens, (int64_t)hold + chunk) : n_tokens;
}

int snap_validate_selection(int32_t budget, int32_t window, int32_t kernel, const char *table,
                            ks_diag *d)
{
    char key[96];
    snprintf(key, sizeof(key), "%s.window", table);
    int rc = ks_check_range(d, key, window, 1, budget);
    if (rc) return rc;
    snprintf(key, sizeof(key), "%s.kernel", table);
    if (kernel % 2 == 0) return ks_diag_key(d, KS_ERR_RANGE, key, "must be odd (got %d)", kernel);
    return KS_OK;
}

static const kv_param_desc snapkv_params_table[] = {
    {"budget", KV_PARAM_INT, offsetof(snapkv_params, budget), 1, INT32_MAX, 1024, NULL, NULL, false,
     "tokens kept per layer and KV head, the window included"},
    {"window", KV_PARAM_INT, offsetof(snapkv_params, window), 1, INT32_MAX, 8, NULL, NULL, false,
     "observation window: the last prompt queries that vote (<= budget), always kept"},
    {"kernel", KV_PARAM_INT, offsetof(snapkv_params, kernel), 1, 63, 9, NULL, NULL, false,
     "pooling kernel over the votes (odd)"},
    {"pooling", KV_PARAM_ENUM, offsetof(snapkv_params, pooling), 0, 0, KV_POOL_MAX, NULL,
     kv_pooling_names, false, "how votes are pooled over neighbouring tokens"},
    {"reduce", KV_PARAM_ENUM, offsetof(snapkv_params, reduce), 0, 0, KV_REDUCE_MEAN, NULL,
     kv_reduce_names, false, "how the votes of the query heads sharing a KV head combine"},
    {"interval", KV_PARAM_INT, offsetof(snapkv_params, interval), 0, INT32_MAX, 0, NULL, NULL,
     false, "re-compress every N generated tokens, 0 = only after the prompt"},
    {"compress_at", KV_PARAM_ENUM, offsetof(snapkv_params, compress_at), 0, 0, SNAP_AT_FIRST_TOKEN,
     NULL, snap_compress_at_names, false,
     "`first_token`: select after the first generated token (it votes too); `prompt_end`: "
     "SnapKV's original, at the end of the prompt"},
    {"budget_fraction", KV_PARAM_DOUBLE, offsetof(snapkv_params, budget_fraction), 0, 1, 0, NULL,
     NULL, false, "0 = use `budget`; else the budget is this fraction of the prompt length"},
    {"hold", KV_PARAM_INT, offsetof(snapkv_params, hold), 0, INT32_MAX, 4096, NULL, NULL, false,
     "prompt tokens a table holds uncompressed; past it each prompt chunk is compressed at "
     "once (0 = hold the whole prompt)"},
};

/* budget = context_length / 4 unless given (a quarter of the trained context per table). */
static void snapkv_derive(void *params, uint64_t set, const kv_model_info *info)
{
    snapkv_params *p = params;
    if (!kv_param_was_set(&kv_policy_desc_snapkv, set, "budget"))
        p->budget = KS_MAX(1, kv_model_ctx(info) / 4);
    if (!kv_param_was_set(&kv_policy_desc_snapkv, set, "hold")) p->hold = kv_model_ctx(info);
}

static const kv_param_rule snapkv_rules[] = {
    {"budget", "context_length / 4"}, {"hold", "context_length"}, {NULL, NULL}};

static int snapkv_validate(const void *params, const char *table, ks_diag *d)
{
    const snapkv_params *p = params;
    return snap_validate_selection(p->budget, p->window, p->kernel, table, d);
}

/* The whole prompt goes in before the selection, up to `hold` tokens (+ the chunk that
 * passes it); first_token adds the one generated token that votes, which n_tokens (the
 * prompt + one decode token) already counts. */
static int64_t snapkv_admission(const void *params, int64_t n_tokens, int64_t chunk,
                                int32_t n_layer, int32_t *dense_layers)
{
    const snapkv_params *p = params;
    (void)n_layer;
    (void)dense_layers;
    return snap_admission(p->hold, n_tokens, chunk);
}

/* The view: the budget once the prompt is longer, the observation window at its end. */
static void snapkv_view_hint(const void *params, int32_t n_layer, int32_t layer, int64_t n_prompt,
                             int64_t seen, kv_view_hint *out)
{
    (void)n_layer, (void)layer, (void)seen;
    const snapkv_params *p = params;
    if (p->budget < n_prompt) out->budget = p->budget;
    out->window_from = n_prompt - p->window;
}

const kv_policy_desc kv_policy_desc_snapkv = {
    .name = "snapkv",
    .summary = "After the prompt, keeps per layer and KV head the prompt tokens most attended "
               "by the last `window` prompt queries (pooled), plus the window.",
    .reference = "SnapKV: Li et al., SnapKV: LLM Knows What You are Looking for Before "
                 "Generation, arXiv:2404.14469",
    .ops = &kv_policy_snapkv,
    .view_hint = snapkv_view_hint,
    .params_table = snapkv_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(snapkv_params_table),
    .params_size = sizeof(snapkv_params),
    .validate = snapkv_validate,
    .admission = snapkv_admission,
    .derive = snapkv_derive,
    .rules = snapkv_rules,
};

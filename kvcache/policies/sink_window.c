/* sink_window.c - the `sink_window` policy: attention sinks + a sliding window (StreamingLLM).
 *
 * Paper: Xiao, Tian, Chen, Han, Lewis, "Efficient Streaming Language Models with Attention
 * Sinks" (ICLR 2024, arXiv:2309.17453).
 *
 * The idea in plain words. A model trained with softmax attention dumps a large share of
 * every query's attention on the first few tokens of the sequence ("attention sinks"),
 * whatever they say. A plain sliding window throws those tokens away as soon as the text is
 * longer than the window, the softmax loses its dump, and quality collapses. StreamingLLM
 * keeps the first n_sink tokens forever plus the most recent `window` tokens, and evicts
 * everything in between, so memory is constant and perplexity stays flat for any length.
 *
 * Chunks. When a chunk of n new tokens arrives (a prefill chunk or one decode token), the
 * cache must hold sinks + the last (window - n) older tokens, so that after the chunk is
 * appended it holds exactly n_sink + window tokens and the chunk's LAST token sees what
 * StreamingLLM gives it (sinks + the window ending at itself); the chunk's earlier tokens
 * attend causally to the same older tokens and to the chunk's tokens before them. A chunk
 * longer than the window keeps only the sinks before it and is trimmed back to
 * n_sink + window right after it (so the bound is n_sink + max(window, chunk)).
 *
 * Positions. `original`: a key keeps the RoPE position it was written with (its sequence
 * index); past the model's trained context the positions are ones it never saw. `compact`
 * (StreamingLLM's choice): positions are slots in the cache, so they never exceed
 * n_sink + window. A new token gets position = its slot; after an eviction every kept key
 * whose slot moved is re-rotated by the position delta (rotations compose, as llama.cpp's
 * K-shift does), after making its blocks private (copy-on-write of shared prefix blocks).
 *
 * Invariant: all tables of a sequence hold the same tokens (every layer and head sees the
 * same chunks and evicts the same slots), and in compact mode pos[slot] == slot.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/sink_recent.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"
#include "kvserve/quant.h"

/* The parameters (kvcache.sink_window.*; table below). */
typedef struct sw_params {
    int32_t budget;        /* n_sink + window */
    int32_t n_sink;        /* first tokens kept forever */
    int32_t window;        /* most recent tokens kept */
    kv_pos_mode positions; /* ORIGINAL or COMPACT */
} sw_params;

extern const kv_policy_desc kv_policy_desc_sink_window;
_Static_assert(sizeof(sw_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

typedef struct sw_state {
    int32_t n_sink, window;
    bool compact;
    rope_params rope;
    rope_params rope_swa; /* of the sliding-window layers (gemma3) */
    bool *swa;            /* [n_layer] the layer uses rope_swa; NULL = none does */
    float *row;           /* [head_dim] f32 copy of one K row */
    float *cs, *sn;       /* [head_dim / 2] angles of the current delta */
    int32_t *keep;        /* [cap_keep] eviction list, grown once to sinks + window + 1 */
    int64_t cap_keep;
} sw_state;

static int sw_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    sw_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_sink_window, &mi, &p);
    if (p.n_sink < 0 || p.window < 1 ||
        (p.positions != KV_POS_ORIGINAL && p.positions != KV_POS_COMPACT))
        return KS_ERR_INVALID;
    sw_state *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->n_sink = p.n_sink;
    s->window = p.window;
    /* Without the model's RoPE parameters keys cannot be re-rotated: keep original ones. */
    s->compact = p.positions == KV_POS_COMPACT && a != NULL;
    int32_t hd = kv_pool_head_dim(kv_seq_pool(seq));
    if (s->compact) {
        s->rope = a->rope;
        s->rope_swa = a->rope_swa;
        s->rope.relative = s->rope_swa.relative = true; /* deltas of rotated keys */
        if (s->rope.head_dim != hd || hd % 2) {
            free(s);
            return KS_ERR_INVALID;
        }
        int32_t n_layer = kv_seq_n_layer(seq);
        for (int32_t l = 0; a->layer_window && l < n_layer; l++) {
            if (a->layer_window[l] <= 0) continue;
            if (!s->swa && !(s->swa = calloc((size_t)n_layer, sizeof(bool)))) {
                free(s);
                return KS_ERR_NOMEM;
            }
            s->swa[l] = true;
        }
        s->row = malloc((size_t)hd * sizeof(float));
        s->cs = malloc((size_t)hd / 2 * sizeof(float));
        s->sn = malloc((size_t)hd / 2 * sizeof(float));
        if (!s->row || !s->cs || !s->sn) {
            free(s->row);
            free(s->cs);
            free(s->sn);
            free(s->swa);
            free(s);
            return KS_ERR_NOMEM;
        }
    }
    *state = s;
    return 0;
}

static void sw_free(kv_seq *seq, void *state)
{
    (void)seq;
    sw_state *s = state;
    if (!s) return;
    free(s->row);
    free(s->cs);
    free(s->sn);
    free(s->swa);
    free(s->keep);
    free(s);
}

/* Moves every key whose slot differs from its position to position = slot. */
static int sw_reposition(sw_state *s, const rope_params *rp, kv_head_table *t)
{
    int32_t hd = kv_pool_head_dim(t->pool);
    ks_dtype kt = kv_pool_k_dtype(t->pool);
    bool any = false;
    for (int32_t i = 0; i < t->n_tok && !any; i++)
        any = t->pos[i] != i;
    if (!any) return 0;
    int rc = kv_head_table_make_writable(t);
    if (rc) return rc;
    int32_t last_delta = 0, slot = 0;
    for (int32_t b = 0; b < t->n_blocks; b++) {
        for (int32_t r = 0; r < t->blk_n[b]; r++, slot++) {
            int32_t delta = slot - t->pos[slot];
            if (delta == 0) continue;
            if (delta != last_delta) {
                rope_angles(rp, (float)delta, s->cs, s->sn);
                last_delta = delta;
            }
            void *k = kv_head_table_k_row(t, b, r);
            if (kt != KS_DTYPE_F32) { /* a quantised key is re-quantised after rotation */
                ks_dtype_to_f32(kt, k, s->row, hd);
                rope_rotate(rp, s->row, 1, s->cs, s->sn);
                ks_dtype_from_f32(kt, s->row, k, hd);
            } else {
                rope_rotate(rp, k, 1, s->cs, s->sn);
            }
            kv_head_table_set_pos(t, slot, slot);
        }
    }
    return 0;
}

/* Keeps the first n_sink slots and the last `recent` slots of every table. */
static int sw_evict(kv_seq *seq, sw_state *s, int32_t recent)
{
    int32_t n_layer = kv_seq_n_layer(seq), n_head = kv_seq_n_head_kv(seq);
    for (int32_t l = 0; l < n_layer; l++) {
        for (int32_t h = 0; h < n_head; h++) {
            kv_head_table *t = kv_seq_table(seq, l, h);
            bool changed;
            int rc = kv_sink_recent_keep(t, s->n_sink, recent, &s->keep, &s->cap_keep, &changed);
            if (rc == 0 && changed && s->compact)
                rc = sw_reposition(s, s->swa && s->swa[l] ? &s->rope_swa : &s->rope, t);
            if (rc) return rc;
        }
    }
    return 0;
}

static int sw_before_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    sw_state *s = kv_seq_policy_state(seq);
    const kv_head_table *t = kv_seq_table(seq, 0, 0);
    if ((int64_t)t->n_tok + chunk->n_new <= (int64_t)s->n_sink + s->window) return 0;
    return sw_evict(seq, s, KS_MAX(0, s->window - chunk->n_new));
}

static int sw_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    (void)chunk;
    sw_state *s = kv_seq_policy_state(seq);
    const kv_head_table *t = kv_seq_table(seq, 0, 0);
    if ((int64_t)t->n_tok <= (int64_t)s->n_sink + s->window) return 0;
    return sw_evict(seq, s, s->window);
}

static int sw_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    sw_state *s = kv_seq_policy_state(seq);
    int32_t base = kv_seq_table(seq, 0, 0)->n_tok;
    for (int32_t i = 0; i < chunk->n_new; i++)
        pos_out[i] = s->compact ? base + i : chunk->idx[i];
    return 0;
}

static int sw_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
                    int32_t max, int32_t *n)
{
    (void)q;
    return kv_seq_spans(seq, layer, kv_head, out, max, n);
}

static const kv_policy kv_policy_sink_window = {
    .name = "sink_window",
    .init = sw_init,
    .free = sw_free,
    .positions = sw_positions,
    .before_chunk = sw_before_chunk,
    .spans = sw_spans,
    .after_chunk = sw_after_chunk,
};

#define SW_PARAM(key, type, lo, hi, def, ch, help)                                                 \
    {                                                                                              \
#key, type, offsetof(sw_params, key), lo, hi, def, NULL, ch, false, help                   \
    }

static const kv_param_desc sw_params_table[] = {
    SW_PARAM(budget, KV_PARAM_INT, 1, INT32_MAX, 4096, NULL,
             "tokens kept per layer and KV head: n_sink + window"),
    SW_PARAM(n_sink, KV_PARAM_INT, 0, INT32_MAX, 4, NULL, "first tokens kept forever"),
    SW_PARAM(window, KV_PARAM_INT, 1, INT32_MAX, 4092, NULL, "most recent tokens kept"),
    SW_PARAM(positions, KV_PARAM_ENUM, 0, 0, KV_POS_COMPACT, kv_pos_mode_names,
             "`compact` re-numbers positions inside the cache (re-rotating kept keys), "
             "`original` keeps each key's; `window` is not accepted"),
};

static int sw_validate(const void *params, const char *table, ks_diag *d)
{
    const sw_params *p = params;
    char key[96];
    snprintf(key, sizeof(key), "%s.positions", table);
    if (p->positions != KV_POS_ORIGINAL && p->positions != KV_POS_COMPACT)
        return ks_diag_key(d, KS_ERR_INVALID, key, "must be \"original\" or \"compact\"");
    snprintf(key, sizeof(key), "%s.budget", table);
    if (p->budget <= p->n_sink)
        return ks_diag_key(d, KS_ERR_RANGE, key,
                           "%d leaves no window after n_sink = %d (budget = n_sink + window)",
                           p->budget, p->n_sink);
    return KS_OK;
}

/* The cache fits the trained context (compact positions then never leave it): budget =
 * context_length, window = budget - n_sink; a given window wins (budget = n_sink + window). */
static void sw_derive(void *params, uint64_t set, const kv_model_info *info)
{
    sw_params *p = params;
    const kv_policy_desc *d = &kv_policy_desc_sink_window;
    if (kv_param_was_set(d, set, "window")) {
        p->budget = (int32_t)KS_MIN((int64_t)p->n_sink + p->window, INT32_MAX);
        return;
    }
    if (!kv_param_was_set(d, set, "budget")) p->budget = kv_model_ctx(info);
    p->window = KS_MAX(1, p->budget - p->n_sink);
}

static const kv_param_rule sw_rules[] = {
    {"budget", "context_length"}, {"window", "budget - n_sink"}, {NULL, NULL}};

/* Sinks + window, plus the chunk being added before the trim. */
static int64_t sw_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                            int32_t *dense_layers)
{
    const sw_params *p = params;
    (void)n_tokens;
    (void)n_layer;
    (void)dense_layers;
    return (int64_t)p->n_sink + p->window + chunk;
}

/* The view: n_sink sinks and the last `window` tokens, all a head keeps. */
static void sw_view_hint(const void *params, int32_t n_layer, int32_t layer, int64_t n_prompt,
                         int64_t seen, kv_view_hint *out)
{
    (void)n_layer, (void)layer, (void)n_prompt;
    const sw_params *p = params;
    *out = (kv_view_hint){.budget = (int32_t)KS_MIN((int64_t)p->n_sink + p->window, INT32_MAX),
                          .sink = p->n_sink,
                          .window_from = seen - p->window};
}

const kv_policy_desc kv_policy_desc_sink_window = {
    .name = "sink_window",
    .summary = "Keeps the first `n_sink` tokens (attention sinks) and the last `window`; with "
               "`compact` positions the model runs far past its trained context.",
    .reference = "StreamingLLM: Xiao et al., Efficient Streaming Language Models with "
                 "Attention Sinks, ICLR 2024, arXiv:2309.17453",
    .ops = &kv_policy_sink_window,
    .view_hint = sw_view_hint,
    .params_table = sw_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(sw_params_table),
    .params_size = sizeof(sw_params),
    .validate = sw_validate,
    .admission = sw_admission,
    .derive = sw_derive,
    .rules = sw_rules,
};

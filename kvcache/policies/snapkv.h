/* snapkv.h - SnapKV token selection, shared by the `snapkv` and `pyramid` policies
 * (private to kvcache/). One mechanism: pyramid differs only in the per-layer budgets.
 */
#ifndef KVSERVE_KVCACHE_SNAPKV_H
#define KVSERVE_KVCACHE_SNAPKV_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/kvcache.h"
#include "kvserve/policy_config.h"

/* When the selection runs (kvcache.snapkv.compress_at). */
typedef enum snap_compress_at {
    SNAP_AT_FIRST_TOKEN, /* after the first generated token: it joins the observation window */
    SNAP_AT_PROMPT_END,  /* SnapKV's original: at the end of the prompt */
} snap_compress_at;

extern const char *const snap_compress_at_names[]; /* "first_token", "prompt_end" */

typedef struct snap_config {
    int32_t budget;         /* C: tokens kept per layer and KV head, window included */
    double budget_fraction; /* > 0: C = fraction of the prompt length instead */
    int32_t window;         /* w: observation window (last prompt queries), always kept */
    int32_t kernel;         /* odd pooling kernel */
    kv_pooling pooling;
    kv_reduce reduce;
    int32_t interval; /* re-compress every N generated tokens (0 = never) */
    int32_t beta;     /* pyramid steepness */
    snap_compress_at compress_at;
    int32_t hold; /* > 0: a prompt chunk taking the largest table past it is compressed */
    /* Tokens kept in `layer` of n_layer (window included) for a prompt of n tokens and an
     * average budget C. NULL = C in every layer (SnapKV); pyramid.c passes PyramidKV's ramp.
     * A hook rather than a call keeps the arrow one way: pyramid uses snapkv, not back. */
    int32_t (*layer_budget)(const struct snap_config *c, int32_t C, int32_t n_layer, int32_t layer,
                            int32_t n);
} snap_config;

/* The rules between the selection parameters both policies share: window <= budget and an
 * odd kernel (ranges are in their tables). `table` is "kvcache.NAME". */
int snap_validate_selection(int32_t budget, int32_t window, int32_t kernel, const char *table,
                            ks_diag *d);

/* The admission bound of both policies: the whole prompt, or hold + one chunk (hold > 0). */
int64_t snap_admission(int32_t hold, int64_t n_tokens, int64_t chunk);

/* Creates the per-sequence state (checks cfg: KS_ERR_INVALID). */
int snap_state_create(kv_seq *seq, const snap_config *cfg, void **state);

/* The policy hooks (kvcache.h) shared by both policies. */
void snap_free(kv_seq *seq, void *state);
int snap_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out);
int snap_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
               int32_t max, int32_t *n);
int32_t snap_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q);
int snap_after_attention(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                         const attn_span *spans, int32_t n_spans, const float *key_mass,
                         int32_t n_mass);
int snap_after_chunk(kv_seq *seq, const kv_chunk *chunk);

#endif

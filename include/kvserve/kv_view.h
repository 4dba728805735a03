/* kv_view.h - a read-only picture of what one sequence's KV cache holds, for the live view.
 *
 * kv_view_capture walks every (layer, KV head) table of a sequence and records which
 * sequence positions it keeps, as runs [start, length) of ascending positions: a window of
 * 32k tokens is one run, a SnapKV selection a few hundred, so a picture stays small and cheap
 * to diff. For `retrieval` it adds the blocks selected in the last step (with their scores)
 * and the positions spilled to disk. The capture only reads, but a kv_seq is owned by one
 * thread at a time: call it from the thread that steps the sequence (the scheduler worker,
 * between steps). The result is a plain value owned by the caller.
 */
#ifndef KVSERVE_KV_VIEW_H
#define KVSERVE_KV_VIEW_H

#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_config.h"

typedef struct kv_view_cell {
    int32_t n_kept;   /* tokens the table holds */
    int32_t n_runs;   /* runs of kept positions */
    int32_t *runs;    /* [2 * n_runs] start, length; ascending, non-adjacent */
    int32_t n_sel;    /* retrieval: blocks selected in the last step (-1: attends all) */
    int32_t *sel;     /* [2 * n_sel] first position, length of each selected block */
    float *sel_score; /* [n_sel] the block's selection score (summed attention share) */
} kv_view_cell;

typedef struct kv_view {
    int32_t n_layer;
    int32_t n_head_kv;
    int64_t tokens_seen;  /* positions 0..tokens_seen-1 exist */
    int32_t spill_layer0; /* retrieval: layers >= this spill (n_layer when none do) */
    int32_t spill_lo;     /* positions [spill_lo, spill_hi) of those layers are on disk */
    int32_t spill_hi;
    kv_view_cell *cells; /* [n_layer * n_head_kv], layer-major */
} kv_view;

/* Captures seq's tables into a new view (*out, free with kv_view_free). Returns 0,
 * KS_ERR_INVALID (NULL arguments) or KS_ERR_NOMEM. Reads only; see the thread rule above. */
int kv_view_capture(kv_seq *seq, kv_view **out) KS_WUR;
void kv_view_free(kv_view *v);

/* What the view draws for layer `layer` of n_layer under policy config pc (its selected
 * policy's kv_policy_desc.view_hint): the budget bar, sinks and window. Without a hook (or
 * pc NULL): no budget, no sinks, no window. */
void kv_view_hint_get(const kv_policy_config *pc, int32_t n_layer, int32_t layer, int64_t n_prompt,
                      int64_t seen, kv_view_hint *out);

/* What retrieval adds to a cell (implemented in retrieval.c, where its state lives). */
typedef struct kv_retrieval_view {
    int32_t block_tokens; /* retrieval block size B */
    int32_t n_sel;        /* -1 for dense layers (they attend every block) */
    const int32_t *sel;   /* [n_sel] selected block numbers (block b = positions [bB, bB+B)) */
    const float *score;   /* [n_sel] */
    int32_t dense_layers;
    int64_t spill_lo, spill_hi; /* positions on disk in the non-dense layers */
} kv_retrieval_view;

/* Fills out for (layer, kv_head) of a retrieval sequence; pointers stay valid until the next
 * step. KS_ERR_INVALID when seq does not use retrieval or the cell is out of range. */
int kv_retrieval_view_get(kv_seq *seq, int32_t layer, int32_t kv_head,
                          kv_retrieval_view *out) KS_WUR;

#endif

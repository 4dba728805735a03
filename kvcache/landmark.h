/* landmark.h - block landmarks of the `retrieval` policy (private to kvcache/).
 *
 * A landmark summarises one block of keys of one (layer, KV head) so that a query can score
 * the block without reading its keys: MEAN (MoBA: the mean key, score q·mean), BOUNDS (Quest:
 * per-channel min and max, score = sum_i max(q_i*max_i, q_i*min_i), an upper bound of q·k for
 * every key k of the block) and REPRESENTATIVE (InfLLM: the mean of the r keys that received
 * the most attention while in the local window, score q·rep). Landmarks always stay in RAM.
 */
#ifndef KVSERVE_KVCACHE_LANDMARK_H
#define KVSERVE_KVCACHE_LANDMARK_H

#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/policy_config.h"

typedef struct kv_lm_set {
    kv_landmark kind;
    int32_t head_dim;
    int32_t width; /* floats per landmark: head_dim, or 2*head_dim for BOUNDS (min, max) */
    int32_t n;     /* landmarks stored (blocks 0..n-1) */
    int32_t cap;
    float *data; /* [cap][width] */
} kv_lm_set;

void kv_lm_set_init(kv_lm_set *s, kv_landmark kind, int32_t head_dim);
void kv_lm_set_deinit(kv_lm_set *s);

/* Floats per landmark of `kind`. */
int32_t kv_lm_width(kv_landmark kind, int32_t head_dim);

/* Builds the landmark of n keys (rows of head_dim f32) into out[width]. mass[n] is the
 * attention each key received (REPRESENTATIVE; NULL or all-zero means "no information" and
 * gives the mean key); n_rep = representatives (clamped to 1..n). */
void kv_lm_build(kv_landmark kind, const float *keys, int32_t n, int32_t head_dim,
                 const float *mass, int32_t n_rep, float *out);

/* Builds and appends the landmark of the next block. Returns 0 or KS_ERR_NOMEM. */
int kv_lm_set_push(kv_lm_set *s, const float *keys, int32_t n, const float *mass,
                   int32_t n_rep) KS_WUR;

/* Score of query q[head_dim] against landmark lm (computed in double, in channel order, so
 * that the BOUNDS score is >= q·k computed the same way for every key of the block). */
double kv_lm_score(kv_landmark kind, const float *lm, const float *q, int32_t head_dim);

static inline const float *kv_lm_get(const kv_lm_set *s, int32_t b)
{
    return s->data + (size_t)b * s->width;
}

#endif

/* landmark.h - block landmarks of the `retrieval` policy (private to kvcache/).
 *
 * A landmark summarises one block of keys of one (layer, KV head) so that a query can score
 * the block without reading its keys: MEAN (MoBA: the mean key, score q·mean), BOUNDS (Quest:
 * per-channel min and max, score = sum_i max(q_i*max_i, q_i*min_i), an upper bound of q·k for
 * every key k of the block) and REPRESENTATIVE (InfLLM: the mean of the r keys that received
 * the most attention while in the local window, score q·rep).
 *
 * Storage. Landmarks are kept in pages of KV_LM_PAGE landmarks. Without a spill file every
 * page stays in RAM. With one (kv_lm_set_spill), at most max_ram_pages pages stay in RAM: the
 * oldest full pages (those of the oldest, coldest blocks) are written to the file and freed,
 * so a long context's landmarks cost a bounded amount of RAM. Scoring reads pages in order
 * (kv_lm_page), from RAM or from the file into the caller's page buffer.
 */
#ifndef KVSERVE_KVCACHE_LANDMARK_H
#define KVSERVE_KVCACHE_LANDMARK_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/policy_config.h"
#include "kvserve/spill.h"

#define KV_LM_PAGE 64 /* landmarks per page */

typedef struct kv_lm_set {
    kv_landmark kind;
    int32_t head_dim;
    int32_t width; /* floats per landmark: head_dim, or 2*head_dim for BOUNDS (min, max) */
    int32_t n;     /* landmarks stored (blocks 0..n-1) */
    float **pages; /* [cap_pages] page p: [KV_LM_PAGE][width], NULL once in the file */
    int32_t cap_pages;
    int32_t n_cold;           /* pages [0, n_cold) are in the file, the rest in RAM */
    kv_spill *file;           /* NULL: every page stays in RAM */
    int64_t rec0, rec_stride; /* page p is record rec0 + p * rec_stride of the file */
    int32_t max_ram;          /* pages kept in RAM at most (with a file; >= 1) */
    bool stopped;             /* a write failed: new pages stay in RAM */
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

/* Bytes of one page of s (the record size of its spill file). */
size_t kv_lm_page_bytes(const kv_lm_set *s);

/* From now on, pages beyond the newest max_ram go to record rec0 + p * rec_stride of `file`
 * (record size kv_lm_page_bytes; shared by several sets with distinct rec0). */
void kv_lm_set_spill(kv_lm_set *s, kv_spill *file, int64_t rec0, int64_t rec_stride,
                     int32_t max_ram);

/* Builds and appends the landmark of the next block, then moves full pages beyond max_ram to
 * the file. Returns 0, KS_ERR_NOMEM, or KS_ERR_IO when the file could not be written (the
 * landmark is stored, the page stays in RAM and the set stops spilling). */
int kv_lm_set_push(kv_lm_set *s, const float *keys, int32_t n, const float *mass,
                   int32_t n_rep) KS_WUR;

/* Page p (landmarks p*KV_LM_PAGE .. min(n, (p+1)*KV_LM_PAGE) - 1): *out points into RAM, or
 * to buf (kv_lm_page_bytes) where the page was read from the file. Returns 0 or an error. */
int kv_lm_page(const kv_lm_set *s, int32_t p, float *buf, const float **out) KS_WUR;

/* Bytes of landmarks held in RAM (pages and their index). */
size_t kv_lm_ram_bytes(const kv_lm_set *s);

/* Score of query q[head_dim] against landmark lm (computed in double, in channel order, so
 * that the BOUNDS score is >= q·k computed the same way for every key of the block). */
double kv_lm_score(kv_landmark kind, const float *lm, const float *q, int32_t head_dim);

#endif

/* head_profile.h - per-(layer, KV head) retrieval scores of a model (the `hybrid` policy's input).
 *
 * A head profile says, for every (layer, KV head) of one model, how much attention the head
 * puts on a needle the model has to copy (retrieval heads, Wu et al. arXiv:2404.15574;
 * DuoAttention, Xiao et al. arXiv:2410.10819) and whether it should keep the full context
 * (`retrieval`) or only sinks + a window (`streaming`). `kvserve profile-heads` writes it;
 * the `hybrid` policy reads it (kvcache.hybrid.profile).
 *
 * File format: a TOML subset, one `key = value` per line, `#` comments:
 *
 *   model = "kjv-tiny"            # the model's name (general.name), informational
 *   n_layer = 4
 *   n_head_kv = 2
 *   hash = "0123456789abcdef"     # 16 hex digits: kv_head_profile_model_hash of the model
 *   scores = [0.01, 0.52, ...]    # n_layer * n_head_kv values in [0, 1], layer-major
 *   keep_full = [0, 1, ...]       # n_layer * n_head_kv flags (0 streaming, 1 retrieval)
 *
 * Every key is required exactly once; unknown keys, wrong lengths, out-of-range values and
 * malformed lines are errors that name the field (and the line).
 */
#ifndef KVSERVE_HEAD_PROFILE_H
#define KVSERVE_HEAD_PROFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/base.h"

#define KV_HEAD_PROFILE_MAX_HEADS 4096 /* n_layer * n_head_kv at most */
#define KV_HEAD_PROFILE_NAME_MAX 128

typedef struct kv_head_profile {
    char model[KV_HEAD_PROFILE_NAME_MAX];
    int32_t n_layer;
    int32_t n_head_kv;
    uint64_t hash;
    float *score;       /* [n_layer * n_head_kv], layer-major, in [0, 1] */
    uint8_t *keep_full; /* [n_layer * n_head_kv]: 1 = retrieval head */
} kv_head_profile;

/* Allocates score and retrieval for n_layer x n_head_kv (zeroed). 0 or a negative status. */
int kv_head_profile_alloc(kv_head_profile *p, int32_t n_layer, int32_t n_head_kv) KS_WUR;
void kv_head_profile_free(kv_head_profile *p);

/* Parses text[0..len) into p (allocated; free with kv_head_profile_free). On error p is left
 * empty, d says which field and why ("hash: ...", "line 3: ..."), returns KS_ERR_FORMAT,
 * KS_ERR_RANGE or KS_ERR_INVALID. */
int kv_head_profile_parse(const char *text, size_t len, kv_head_profile *p, ks_diag *d) KS_WUR;
/* ks_read_file + kv_head_profile_parse; the message starts with the path. */
int kv_head_profile_load(const char *path, kv_head_profile *p, ks_diag *d) KS_WUR;
/* Writes p in the format above (scores with 9 significant digits, so a float
 * round-trips exactly). 0 or a negative status with d set. */
int kv_head_profile_save(const kv_head_profile *p, const char *path, ks_diag *d) KS_WUR;
/* Checks that p was made for a model of this shape: KS_ERR_INVALID with d naming
 * n_layer / n_head_kv otherwise. */
int kv_head_profile_check_shape(const kv_head_profile *p, int32_t n_layer, int32_t n_head_kv,
                                ks_diag *d) KS_WUR;

/* FNV-1a 64 of bytes, continuing from h (start with KV_HEAD_PROFILE_HASH_INIT). */
#define KV_HEAD_PROFILE_HASH_INIT 0xcbf29ce484222325ull
uint64_t kv_head_profile_hash_bytes(uint64_t h, const void *data, size_t n);

#endif

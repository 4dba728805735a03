/* retrieval.h - the `retrieval` policy's engine (retrieval.c) for a policy that runs it on
 * some of its heads only (`hybrid`: its retrieval heads); private to kvcache/.
 *
 * The engine is everything retrieval does to a table: block landmarks, top-k block selection
 * with window or original positions, and the spill tier. `retrieval` runs it on every table
 * of its sparse layers; another policy names the (layer, KV head) tables it may touch with a
 * mask, keeps the other tables itself, and forwards its hooks for the masked ones. The engine
 * never evicts a token of a masked table (it only moves old blocks to the spill file), so the
 * caller must not evict from them either.
 */
#ifndef KVSERVE_KVCACHE_RETRIEVAL_H
#define KVSERVE_KVCACHE_RETRIEVAL_H

#include <stdint.h>

#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"

/* The engine's parameters (retrieval's kvcache.retrieval.* table, retrieval.c). */
typedef struct kv_rt_params {
    int32_t block_tokens;    /* tokens per retrieval block (power of two) */
    kv_landmark landmark;    /* how a block is summarised */
    int32_t representatives; /* keys per block for REPRESENTATIVE */
    int32_t top_k;           /* blocks retrieved per query */
    int32_t n_sink;          /* first tokens always attended */
    int32_t window;          /* local window tokens */
    kv_selection selection;  /* per HEAD or per LAYER */
    int32_t dense_layers;    /* first layers kept dense */
    kv_pos_mode positions;   /* WINDOW or ORIGINAL */
    int32_t chunk;           /* prefill chunk tokens */
    int64_t ram_mb;          /* hot-set budget in MiB */
    char spill_dir[KV_PARAM_PATH_MAX];
    kv_eviction eviction;
} kv_rt_params;

typedef struct rt_state kv_rt;

/* Engine state for seq over the tables with managed[l * n_head_kv + h] != 0 (NULL: every
 * table), layers below p->dense_layers excepted. `a` gives the RoPE parameters (NULL: a
 * default RoPE). REPRESENTATIVE landmarks and LAYER selection need every table of a layer
 * managed (they use the attention-mass hooks and the layer's other heads). 0,
 * KS_ERR_INVALID (bad parameters) or KS_ERR_NOMEM. */
int kv_rt_create(kv_seq *seq, const kv_policy_args *a, const kv_rt_params *p,
                 const uint8_t *managed, kv_rt **out) KS_WUR;
/* Frees the state and removes its spill file. Accepts NULL. */
void kv_rt_free(kv_rt *rt);
/* The policy hooks, for the managed tables (kvcache.h). before_chunk spills when the pool
 * cannot take the chunk; after_chunk summarises blocks that left the window and spills
 * beyond ram_mb. */
int kv_rt_before_chunk(kv_rt *rt, kv_seq *seq, const kv_chunk *chunk) KS_WUR;
int kv_rt_after_chunk(kv_rt *rt, kv_seq *seq, const kv_chunk *chunk) KS_WUR;
/* Spans of a managed (layer, kv_head): sinks, the selected blocks and the local window. */
int kv_rt_spans(kv_rt *rt, kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                attn_span *out, int32_t max, int32_t *n) KS_WUR;
/* Pool-block units per managed table that live in the spill file (0: all in RAM). */
int64_t kv_rt_spilled_units(const kv_rt *rt);
/* The first spill I/O failure (sticky), 0 if none: the sequence must then be failed. */
int kv_rt_io_error(kv_rt *rt);
/* A server_start hook's work: removes the spill files a crashed kvserve left in dir (its pid
 * is gone), logging how many; returns that count. */
int kv_rt_cleanup_stale(const char *spill_dir);

#endif

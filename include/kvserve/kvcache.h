/* kvcache.h - the paged KV cache: a global block pool with a byte budget, per-sequence block
 * tables (one per layer and KV head), and the policy interface that decides which cached keys
 * each query chunk attends to and which tokens are kept.
 *
 * Layering (see DESIGN.md): core/model calls the kv_seq_* functions below around each chunk;
 * kv_seq forwards to the sequence's policy (a vtable, kv_policy); policies read and mutate the
 * per-head tables only through kv_head_table_* (the one mutation primitive for eviction is
 * kv_head_table_keep). The attention core (attention.h) sees only attn_span lists.
 *
 * Storage. A block holds K rows [block_tokens][head_dim] in the pool's k_dtype followed by V
 * rows [block_tokens][head_dim] in its v_dtype (kvtype.h: f32, f16, bf16 or a llama.cpp
 * block type), for ONE (layer, KV head). Blocks are
 * refcounted so that sequences can share read-only prefix blocks; any write to a block whose
 * refcount is > 1 first copies it (copy-on-write), which needs one free block.
 *
 * Per-chunk call sequence used by the model (one chunk = n_new tokens, prefill or decode):
 *
 *     kv_seq_chunk_begin(seq, &chunk, pos)      policy->before_chunk (make room) and
 *                                               policy->positions (RoPE positions of new tokens)
 *     for each layer l:
 *         compute q, k, v for the chunk; rotate q and k with pos
 *         kv_seq_append(seq, l, n_new, k, v, chunk.idx, pos)
 *         for each KV head h:
 *             kv_seq_attn_spans(seq, l, h, &query, spans, max, &n)   policy->spans
 *             m = kv_seq_mass_queries(seq, l, h, &query)            policy->mass_queries
 *             attn_forward over all n_q queries; the LAST m queries are run with
 *             key_mass (split the call in two; attention is per query so this is exact)
 *             if m > 0: kv_seq_attn_done(seq, l, h, &query, spans, n, key_mass, m)
 *     kv_seq_chunk_end(seq, &chunk)             policy->after_chunk (evict, compress)
 *
 * Threads: kv_pool is thread-safe. A kv_seq is used by one thread at a time, except that
 * different (layer, KV head) tables may be read concurrently between append and chunk_end
 * (kv_seq_attn_spans and kv_seq_attn_done for distinct heads may run on different threads
 * of one layer; a policy's spans/after_attention hooks must therefore only touch state that
 * belongs to their own (layer, kv_head)).
 */
#ifndef KVSERVE_KVCACHE_H
#define KVSERVE_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/attention.h"
#include "kvserve/base.h"

/* ---------------------------------------------------------------------------------------- */
/* Block pool                                                                                */

typedef struct kv_pool kv_pool;

typedef struct kv_pool_params {
    size_t budget_bytes;  /* hard limit: n_blocks = budget_bytes / block bytes (>= 1) */
    int32_t block_tokens; /* tokens per block (e.g. 32); 1..65536 */
    int32_t head_dim;     /* elements per K (and V) row */
    ks_dtype k_dtype;     /* storage type of K rows */
    ks_dtype v_dtype;     /* storage type of V rows */
    /* kivi4/kivi2 only: every sequence keeps at least its last kv_residual tokens in f16
     * (residual blocks); a block is sealed (quantised as a whole) once it is full and all
     * its tokens are older than that. 0..KV_RESIDUAL_MAX. */
    int32_t kv_residual;
} kv_pool_params;

#define KV_RESIDUAL_MAX 65536

typedef struct kv_pool_stats {
    int64_t blocks_total; /* budget_bytes / block_bytes */
    int64_t blocks_used;  /* blocks with refcount > 0 */
    size_t block_bytes;   /* bytes of one block (K + V) */
    size_t bytes_used;    /* blocks_used * block_bytes */
    size_t bytes_budget;  /* blocks_total * block_bytes (<= budget_bytes) */
} kv_pool_stats;

/* Creates a pool. The address range for all blocks is reserved up front (pages are committed
 * lazily by the OS as blocks are first used). Returns 0, KS_ERR_INVALID (bad params or a
 * budget below one block) or KS_ERR_NOMEM. */
int kv_pool_create(const kv_pool_params *p, kv_pool **out) KS_WUR;
/* Destroys the pool. Blocks still in use are a caller bug (logged). Accepts NULL. */
void kv_pool_destroy(kv_pool *pool);

/* Allocates n blocks, all or nothing, each with refcount 1; ids written to ids[0..n).
 * Returns 0 or KS_ERR_FULL (fewer than n blocks free: nothing allocated). Thread-safe. */
int kv_pool_alloc(kv_pool *pool, int32_t n, int32_t *ids) KS_WUR;
/* Sealable pools (kivi types): kv_pool_alloc hands out RESIDUAL blocks (the KIVI parts as
 * f16 rows, each costing kv_pool_residual_units budget units); this takes n SEALED blocks
 * (one unit each). Same contract as kv_pool_alloc. */
int kv_pool_alloc_sealed(kv_pool *pool, int32_t n, int32_t *ids) KS_WUR;
/* Makes sure n blocks are free now, reclaiming prefix-cache blocks if needed. Returns 0 or
 * KS_ERR_FULL. A check, not a reservation: other threads may take the blocks afterwards. */
int kv_pool_ensure_free(kv_pool *pool, int64_t n) KS_WUR;
/* Adds a reference to a block in use (prefix sharing). Thread-safe. */
void kv_pool_retain(kv_pool *pool, int32_t id);
/* Drops a reference; at zero the block returns to the pool at once. Thread-safe. */
void kv_pool_release(kv_pool *pool, int32_t id);
int32_t kv_pool_refcount(kv_pool *pool, int32_t id);

/* Block memory: K rows [block_tokens][head_dim] in k_dtype and V rows in v_dtype. Valid while the
 * block is in use; the address of a block never changes. */
void *kv_pool_block_k(const kv_pool *pool, int32_t id);
void *kv_pool_block_v(const kv_pool *pool, int32_t id);

int32_t kv_pool_block_tokens(const kv_pool *pool);
int32_t kv_pool_head_dim(const kv_pool *pool);
ks_dtype kv_pool_k_dtype(const kv_pool *pool);
ks_dtype kv_pool_v_dtype(const kv_pool *pool);
size_t kv_pool_k_row_bytes(const kv_pool *pool); /* bytes of one K row */
size_t kv_pool_v_row_bytes(const kv_pool *pool); /* bytes of one V row */
size_t kv_pool_block_bytes(const kv_pool *pool);
/* Sealable pools: free and total counts are in units of a sealed block (kv_pool_block_bytes);
 * a residual block costs kv_pool_residual_units (1 for other pools). */
int64_t kv_pool_blocks_free(kv_pool *pool);
bool kv_pool_is_sealable(const kv_pool *pool); /* a K or V type is kivi4/kivi2 */
bool kv_pool_block_is_residual(const kv_pool *pool, int32_t id);
size_t kv_pool_block_bytes_of(const kv_pool *pool, int32_t id); /* bytes of that block */
int32_t kv_pool_residual_units(const kv_pool *pool);
int32_t kv_pool_kv_residual(const kv_pool *pool);
/* Row types of block id: f16 for the KIVI parts of a residual block, else the pool's types
 * (a sealed kivi K part is one group, not rows). */
ks_dtype kv_pool_row_k_dtype(const kv_pool *pool, int32_t id);
ks_dtype kv_pool_row_v_dtype(const kv_pool *pool, int32_t id);
size_t kv_pool_bytes_used(kv_pool *pool);
void kv_pool_get_stats(kv_pool *pool, kv_pool_stats *out);

/* ---------------------------------------------------------------------------------------- */
/* Per-(layer, KV head) block table                                                          */

/* The tokens one KV head of one layer keeps, in a fixed order ("slots" 0..n_tok-1).
 * Slots are packed into blocks in order: blocks[0] holds slots 0..blk_n[0]-1, blocks[1] the
 * next blk_n[1] slots, and so on. A block may be partly filled (after eviction), never empty.
 * All fields are READ-ONLY for policies; mutate only through kv_head_table_* and
 * kv_seq_append. Appends add slots at the end; keep() preserves the relative order. */
typedef struct kv_head_table {
    kv_pool *pool;
    int32_t n_tok;    /* tokens stored */
    int32_t n_blocks; /* blocks in use */
    int32_t *blocks;  /* [n_blocks] pool block ids, in slot order */
    int32_t *blk_n;   /* [n_blocks] tokens stored in each block (1..block_tokens) */
    int32_t *idx;     /* [n_tok] sequence index of each slot (causal mask) */
    int32_t *pos;     /* [n_tok] RoPE position the key of each slot was rotated with */
    int32_t cap_tok;  /* capacity of idx/pos */
    int32_t cap_blocks;
    int32_t *keep_scratch; /* [8 * cap_blocks + 1] private to kv_head_table_keep */
} kv_head_table;

/* Finds the block (index into blocks[]) and row of a slot; O(n_blocks). KS_ERR_RANGE if the
 * slot is out of range. */
int kv_head_table_locate(const kv_head_table *t, int32_t slot, int32_t *blk, int32_t *row) KS_WUR;

/* Keeps only the slots keep_slots[0..n) (strictly ascending, each < n_tok), drops all
 * others, and compacts: rows move towards the front within blocks, emptied blocks go back to
 * the pool at once, and when the table wastes more than one block it is repacked densely.
 * Slot numbers change: kept slot keep_slots[i] becomes slot i. n == 0 empties the table.
 * Returns 0, KS_ERR_INVALID (unsorted or out of range: table unchanged), KS_ERR_UNSUPPORTED
 * (rows of a sealed KIVI block would move: table unchanged) or KS_ERR_FULL (a
 * shared block had to be copied and the pool is full: table unchanged).
 * Cost: O(rows moved); removing tokens near the end is cheap, near the front may repack. */
int kv_head_table_keep(kv_head_table *t, const int32_t *keep_slots, int32_t n) KS_WUR;

/* Makes every block of the table private (copies shared blocks), so that rows may be
 * written in place (e.g. re-rotating keys when a policy compacts positions). Returns 0 or
 * KS_ERR_FULL (table unchanged except blocks already copied, which is harmless). */
int kv_head_table_make_writable(kv_head_table *t) KS_WUR;

/* K / V row of block blocks[blk], row `row` (pool k_dtype / v_dtype). Read-only unless the table
 * was made writable; after writing a K row, store its new RoPE position with set_pos. */
void *kv_head_table_k_row(const kv_head_table *t, int32_t blk, int32_t row);
void *kv_head_table_v_row(const kv_head_table *t, int32_t blk, int32_t row);
void kv_head_table_set_pos(kv_head_table *t, int32_t slot, int32_t pos);

/* One span per block, in slot order: span i covers blocks[i] with n = blk_n[i], idx =
 * &t->idx[first slot of the block]. (A policy can recover a span's first slot as
 * span.idx - t->idx.) Returns 0, or KS_ERR_RANGE with *n = spans needed if max is too small. */
int kv_head_table_spans(const kv_head_table *t, attn_span *out, int32_t max, int32_t *n) KS_WUR;

/* ---------------------------------------------------------------------------------------- */
/* Sequence cache and the policy interface                                                   */

typedef struct kv_seq kv_seq;

/* A chunk of new tokens entering the sequence (prefill chunk or one decode token). */
typedef struct kv_chunk {
    int32_t n_new;      /* tokens in the chunk */
    const int32_t *idx; /* [n_new] their sequence indices (0-based order in the sequence) */
    bool prefill;       /* the tokens are part of the prompt */
    bool prefill_last;  /* this chunk ends the prompt (prefill is done after it) */
} kv_chunk;

/* The queries of one (layer, KV head) call, given to policies that look at them
 * (retrieval scores blocks with q; SnapKV counts the last w prompt queries). */
typedef struct kv_query {
    const kv_chunk *chunk; /* the chunk being processed; n_q == chunk->n_new */
    int32_t n_q;
    const int32_t *q_idx; /* [n_q] */
    /* Rotated query head g (0..n_group-1) of token t: q[t*q_tok_stride + g*head_dim ..]. */
    const float *q;
    int32_t q_tok_stride;
    int32_t n_group;
    int32_t head_dim;
} kv_query;

/* A KV policy: a vtable of hooks, one instance per policy kind (static const), with per
 * sequence state created by init. Hooks receive the sequence and reach tables with
 * kv_seq_table(). Every hook that can fail returns 0 or a negative ks_status; a failed hook
 * must leave the cache consistent (the request is then ended with that status).
 *
 * Examples of how policies map onto the hooks:
 *   full        no hooks: the defaults are original positions and every block.
 *   sink_window before_chunk evicts (keep: sinks + last window) so the chunk fits; positions
 *               may be window-relative (then it re-rotates kept keys via make_writable).
 *   snapkv /    mass_queries returns the last w prompt queries in the final prefill chunk(s);
 *   pyramid     after_attention accumulates key_mass per (layer, head); after_chunk with
 *               chunk->prefill_last selects per head and calls kv_head_table_keep.
 *   retrieval   keeps landmarks per block in its state (after_chunk), spans picks the top-k
 *               blocks per head by scoring q against landmarks.
 */
typedef struct kv_policy {
    const char *name; /* required: config name, e.g. "full" */

    /* Can be NULL (no state). Creates per-sequence state from the policy's config (whose
     * type the policy defines; may be NULL for defaults). Called by kv_seq_create after the
     * tables exist; *state is returned by kv_seq_policy_state(). */
    int (*init)(kv_seq *seq, const void *config, void **state);
    /* Can be NULL. Frees the state; called by kv_seq_destroy before the tables are freed. */
    void (*free)(kv_seq *seq, void *state);

    /* Can be NULL (= the original positions, idx). RoPE positions of n_new new tokens with
     * sequence indices idx[]. */
    int (*positions)(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out);
    /* Can be NULL. Runs before the chunk's keys are appended: make room (evict) so that the
     * chunk fits the policy's budget. KS_ERR_FULL if it cannot. */
    int (*before_chunk)(kv_seq *seq, const kv_chunk *chunk);
    /* Can be NULL (= every block, kv_seq_spans). Spans that the queries attend for
     * (layer, kv_head), after the chunk's own
     * keys were appended (the causal mask hides future keys via idx). Spans may point into
     * block memory (via kv_head_table_spans) or policy-owned memory valid until the next
     * mutation. Returns KS_ERR_RANGE with *n = needed if max is too small. */
    int (*spans)(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
                 int32_t max, int32_t *n);
    /* Can be NULL (= 0). How many of the LAST queries of this call should report key_mass
     * (attention probability per key, summed over those queries) to after_attention. */
    int32_t (*mass_queries)(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q);
    /* Can be NULL. key_mass[g*n_keys + j] for query head g and key j (j counts over the
     * spans in the order given; n_keys = sum of span n), summed over the last n_mass queries.
     * Only called when mass_queries returned > 0. */
    int (*after_attention)(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                           const attn_span *spans, int32_t n_spans, const float *key_mass,
                           int32_t n_mass);
    /* Can be NULL. Runs after all layers processed the chunk: evict / compress / update
     * landmarks. chunk->prefill_last tells that the prompt is complete. */
    int (*after_chunk)(kv_seq *seq, const kv_chunk *chunk);
} kv_policy;

/* The built-in policies. */
extern const kv_policy kv_policy_full;

/* Finds a policy by name ("full", ...). NULL if unknown. */
const kv_policy *kv_policy_find(const char *name);
/* Names of all built-in policies, NULL-terminated. */
const char *const *kv_policy_names(void);

typedef struct kv_seq_params {
    int32_t n_layer;
    int32_t n_head_kv;
    const kv_policy *policy;   /* NULL = kv_policy_full */
    const void *policy_config; /* passed to policy->init; the policy copies what it needs */
    /* [n_layer] or NULL: sliding-window layers (Gemma 3's local layers) see only the last
     * window tokens (attn_params.window); with the `full` policy such a layer also stores
     * only them: after each chunk, its leading blocks whose tokens no later query can see
     * go back to the pool (whole blocks, so at most one block more than the window stays).
     * 0 = a global layer. Other policies keep what they keep; the mask still applies. */
    const int32_t *layer_window;
} kv_seq_params;

/* Creates an empty sequence cache on `pool` (not owned; must outlive the sequence).
 * Returns 0, KS_ERR_INVALID, KS_ERR_NOMEM or the policy init's error. */
int kv_seq_create(kv_pool *pool, const kv_seq_params *p, kv_seq **out) KS_WUR;
/* Frees the policy state and returns every block to the pool. Accepts NULL. */
void kv_seq_destroy(kv_seq *seq);

kv_pool *kv_seq_pool(const kv_seq *seq);
int32_t kv_seq_n_layer(const kv_seq *seq);
int32_t kv_seq_n_head_kv(const kv_seq *seq);
const kv_policy *kv_seq_policy(const kv_seq *seq);
void *kv_seq_policy_state(const kv_seq *seq);
/* The table of (layer, kv_head); NULL if out of range. */
kv_head_table *kv_seq_table(kv_seq *seq, int32_t layer, int32_t kv_head);

/* Appends n_tok tokens to every KV head of `layer`: k and v are [n_tok][n_head_kv*head_dim]
 * f32 (already rotated), quantised to the pool's K and V types; idx and pos are [n_tok].
 * Returns 0, KS_ERR_INVALID or KS_ERR_FULL / KS_ERR_NOMEM (state unchanged). Appending to
 * layer 0 counts the tokens as seen. */
int kv_seq_append(kv_seq *seq, int32_t layer, int32_t n_tok, const float *k, const float *v,
                  const int32_t *idx, const int32_t *pos) KS_WUR;

/* Pool blocks that appending n_tok tokens to every layer and KV head would take (fresh blocks
 * plus copies of shared tail blocks). */
int64_t kv_seq_append_need(kv_seq *seq, int32_t n_tok);

/* One span per block of (layer, kv_head), ignoring the policy (what `full` attends).
 * Returns 0, KS_ERR_INVALID, or KS_ERR_RANGE with *n = needed if max is too small. */
int kv_seq_spans(kv_seq *seq, int32_t layer, int32_t kv_head, attn_span *out, int32_t max,
                 int32_t *n) KS_WUR;

/* Policy-driven steps, in the order of the call sequence at the top of this file. */
int kv_seq_chunk_begin(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out) KS_WUR;
int kv_seq_attn_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                      attn_span *out, int32_t max, int32_t *n) KS_WUR;
int32_t kv_seq_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q);
int kv_seq_attn_done(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                     const attn_span *spans, int32_t n_spans, const float *key_mass,
                     int32_t n_mass) KS_WUR;
int kv_seq_chunk_end(kv_seq *seq, const kv_chunk *chunk) KS_WUR;

/* Stats for /v1/kv and /metrics. */
typedef struct kv_seq_stats {
    int64_t tokens_seen;    /* tokens appended to layer 0 since creation */
    int64_t tokens_kept;    /* tokens stored, summed over all layers and KV heads */
    double tokens_kept_avg; /* tokens_kept / (n_layer * n_head_kv) */
    int64_t blocks;         /* blocks referenced by this sequence (shared ones included) */
    size_t bytes;           /* blocks * block bytes */
} kv_seq_stats;

void kv_seq_get_stats(const kv_seq *seq, kv_seq_stats *out);
int64_t kv_seq_tokens_seen(const kv_seq *seq);
/* The sliding window of `layer` given at creation (0 = none). */
int32_t kv_seq_layer_window(const kv_seq *seq, int32_t layer);
/* Drops the leading blocks of sliding-window layers that no query from index `next_idx` on
 * can see (done by kv_seq_chunk_end with the `full` policy). Returns 0 or KS_ERR_FULL. */
int kv_seq_trim_windows(kv_seq *seq, int64_t next_idx) KS_WUR;
/* Tokens kept by `layer`, summed over its KV heads (divide by n_head_kv for the mean). */
int64_t kv_seq_tokens_kept(const kv_seq *seq, int32_t layer);

/* ---------------------------------------------------------------------------------------- */
/* Prefix sharing (kvcache/prefix.c; reclaim hook in pool.c, adoption in table.c)           */

/* A prefix cache remembers the KV blocks of full prompt blocks (block_tokens tokens each) of
 * finished prefills, keyed by a chained hash of the prompt tokens (block i's key covers tokens
 * 0..(i+1)*block_tokens), like vLLM's automatic prefix caching. A new sequence whose prompt
 * starts with a cached prefix starts from those blocks (retained, read-only: any write copies
 * first) and prefills only the rest. Only the `full` policy takes part: a block that a policy
 * has rewritten or compressed for one prompt is never published. The cache holds one reference
 * per block; blocks that only the cache references are reclaimed least-recently-used first
 * whenever the pool runs out, so the cache never makes an allocation fail that would succeed
 * without it. Thread-safe (one mutex; lock order: prefix cache, then pool). */

/* Called by kv_pool_alloc, without the pool lock held, when fewer than `want` more blocks are
 * free; frees what it can (by releasing blocks) and returns how many it released. */
typedef int64_t (*kv_pool_reclaim_fn)(void *ud, int64_t want);
/* Installs (or with fn NULL removes) the pool's reclaim hook. At most one hook. */
void kv_pool_set_reclaim(kv_pool *pool, kv_pool_reclaim_fn fn, void *ud);
/* How many of ids[0..n) have refcount exactly 1 (one lock for all). */
int64_t kv_pool_count_unshared(kv_pool *pool, const int32_t *ids, int32_t n);

/* Makes an EMPTY `full`-policy sequence start with n_tok tokens stored in existing blocks:
 * blocks is [n_blocks][n_layer * n_head_kv] (block b of table (l, h) at
 * blocks[b * n_layer * n_head_kv + l * n_head_kv + h]); n_blocks = ceil(n_tok/block_tokens),
 * the last block may be partly used. Every block is retained; slot i gets idx = pos = i and
 * the tokens count as seen. Returns 0, KS_ERR_INVALID (sequence not empty, not `full`, bad
 * sizes) or KS_ERR_NOMEM (sequence unchanged). */
int kv_seq_adopt_prefix(kv_seq *seq, const int32_t *blocks, int32_t n_blocks, int32_t n_tok) KS_WUR;

typedef struct kv_prefix kv_prefix;

typedef struct kv_prefix_params {
    int32_t n_layer; /* of the sequences that use the cache */
    int32_t n_head_kv;
    int64_t max_entries; /* cached prompt blocks kept at most (LRU beyond); <= 0: unlimited */
} kv_prefix_params;

typedef struct kv_prefix_stats {
    int64_t entries;     /* cached prompt blocks (each n_layer * n_head_kv pool blocks) */
    int64_t blocks_held; /* pool blocks referenced by the cache */
    int64_t hits_tokens; /* prompt tokens served from the cache so far */
    int64_t evictions;   /* entries dropped (reclaim or max_entries) */
} kv_prefix_stats;

/* Creates a cache over `pool` (not owned; must outlive the cache) and installs itself as the
 * pool's reclaim hook. Returns 0, KS_ERR_INVALID or KS_ERR_NOMEM. */
int kv_prefix_create(kv_pool *pool, const kv_prefix_params *p, kv_prefix **out) KS_WUR;
/* Removes the reclaim hook and releases every block the cache holds. Accepts NULL. */
void kv_prefix_destroy(kv_prefix *pc);

/* Prompt tokens of tokens[0..n) covered by cached full blocks (a multiple of block_tokens). */
int32_t kv_prefix_lookup(kv_prefix *pc, const int32_t *tokens, int32_t n);

/* Creates a sequence (as kv_seq_create) and, when its policy is `full`, starts it from the
 * longest cached prefix of tokens[0..n), using at most max_reuse tokens (pass n - 1 so that at
 * least one prompt token is computed and yields logits). *n_cached = tokens reused (0 on a
 * miss or another policy); the caller feeds tokens[*n_cached..n). Returns kv_seq_create's
 * errors; a failure to adopt falls back to an empty sequence. */
int kv_prefix_seq_create(kv_prefix *pc, const kv_seq_params *p, const int32_t *tokens, int32_t n,
                         int32_t max_reuse, kv_seq **out, int32_t *n_cached) KS_WUR;

/* Publishes the full blocks among the first n tokens of a `full` sequence whose first n
 * slots are tokens[0..n) at positions 0..n-1 (call right after prefill). Blocks already
 * cached for the same tokens are kept (the sequence's copies are not added). Other policies
 * and tables that do not match are ignored (returns 0). Returns 0 or KS_ERR_NOMEM. */
int kv_prefix_publish(kv_prefix *pc, kv_seq *seq, const int32_t *tokens, int32_t n) KS_WUR;

/* Pool blocks that only the cache references (what kv_prefix_reclaim could free now). */
int64_t kv_prefix_reclaimable(kv_prefix *pc);
/* Drops least-recently-used entries that only the cache references until at least `want`
 * pool blocks were freed or none is left; returns the blocks freed. */
int64_t kv_prefix_reclaim(kv_prefix *pc, int64_t want);
void kv_prefix_get_stats(kv_prefix *pc, kv_prefix_stats *out);

/* A consistent copy of (part of) the cache for saving it (kvcache/persist.c): entries in an
 * order where each comes after its parent, with their tokens and pool blocks. The blocks are
 * retained until kv_prefix_snap_release, so they stay valid and unchanged (cached blocks are
 * never written) while the snapshot is written out without the cache lock. */
typedef struct kv_prefix_snap {
    int32_t n;       /* entries */
    int32_t bt, nt;  /* tokens per block, tables per entry (n_layer * n_head_kv) */
    int32_t *parent; /* [n] index of the parent entry in this snapshot, -1 for a first block */
    int32_t *tokens; /* [n][bt] */
    int32_t *blocks; /* [n][nt] pool block ids, as kv_seq_adopt_prefix orders them */
} kv_prefix_snap;

/* Snapshot of at most max_entries entries (< 0: all), the most recently used ones, always
 * with their ancestors. Returns 0 or KS_ERR_NOMEM / KS_ERR_INVALID. */
int kv_prefix_snapshot(kv_prefix *pc, int64_t max_entries, kv_prefix_snap *out) KS_WUR;
void kv_prefix_snap_release(kv_prefix *pc, kv_prefix_snap *s);
/* Adds an entry for the next block of tokens after entry `parent` (a value returned by an
 * earlier call, -1 for a prompt's first block) whose nt pool blocks ids (filled by the
 * caller) the cache retains. Returns the entry (>= 0; an existing entry for the same tokens
 * is returned unchanged) or KS_ERR_INVALID / KS_ERR_NOMEM. */
int32_t kv_prefix_insert(kv_prefix *pc, int32_t parent, const int32_t *tokens,
                         const int32_t *ids) KS_WUR;

#endif

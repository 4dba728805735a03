/* attention.h - the shared attention core: a chunk of queries of one sequence, one layer and
 * one KV head attends over an ordered list of KV spans with a streaming softmax.
 *
 * The core knows nothing about policies. A policy decides WHICH keys a query chunk sees and
 * hands them over as spans; the core only computes softmax(q·K^T * scale + causal mask) V.
 * Memory use never grows with the number of keys. Keys are stored already rotated (RoPE);
 * the core does no position arithmetic except the causal mask, which compares sequence
 * indices (the order tokens entered the sequence), not RoPE positions.
 */
#ifndef KVSERVE_ATTENTION_H
#define KVSERVE_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/kvtype.h"

/* A run of n keys and values of one KV head. Row r of K starts k_stride elements after row
 * r-1, i.e. ks_dtype_row_bytes(k_dtype, k_stride) bytes (strides of block types are whole
 * blocks). */
typedef struct attn_span {
    const void *k;      /* [n][head_dim] in k_dtype */
    const void *v;      /* [n][head_dim] in v_dtype */
    const int32_t *idx; /* [n] sequence index of each key for the causal mask; NULL = all
                           keys of this span are visible to every query */
    int32_t n;
    int32_t k_stride; /* elements between rows; 0 means head_dim */
    int32_t v_stride; /* elements between rows; 0 means head_dim */
    /* KIVI types (kivi4/kivi2) only. > 0: the span is a SEALED group of this many tokens:
     * k points at the group (ks_kivi_k_group_bytes layout; the span's keys are its rows
     * 0..n-1) and V rows are in the KIVI V layout. 0: a residual span, whose KIVI parts are
     * plain f16 rows. Other types ignore it. */
    int32_t group;
} attn_span;

typedef struct attn_params {
    int32_t n_q;     /* query tokens in the chunk (1 in decode) */
    int32_t n_group; /* query heads that share this KV head (GQA ratio; 1 = MHA) */
    int32_t head_dim;
    float scale; /* score scale, usually 1/sqrt(head_dim) */
    /* Storage types of the spans' K and V rows (kvtype.h). Block types need head_dim a
     * multiple of 32. They are read in place: each tile of ATTN_TILE keys is dequantised to
     * f32 once per call and reused by every query row (q stays f32). */
    ks_dtype k_dtype, v_dtype;
    /* Query head g of token t is q[t*q_tok_stride + g*head_dim .. + head_dim). */
    const float *q;
    int32_t q_tok_stride;
    const int32_t *q_idx; /* [n_q] sequence index of each query: key visible iff idx <= q_idx */
    /* Sliding-window layers (Gemma 3 local layers): > 0 also hides keys with
     * idx <= q_idx - window, so a query sees itself and the window-1 keys before it. */
    int32_t window;
    /* Output, same layout as q with its own token stride. A query that sees no key gets 0. */
    float *out;
    int32_t out_tok_stride;
    /* Optional (NULL = off): key_mass[g*n_keys + j] += normalised attention probability of
     * key j (j counts over all spans in order, n_keys = sum of span n) for query head g,
     * summed over the n_q queries. Used by SnapKV/PyramidKV/H2O to score tokens. */
    float *key_mass;
    /* Emulate llama.cpp's CPU non-flash attention numerics: with an f16 cache, q is rounded
     * to f16 before q·k, and the normalised probabilities are rounded to f16 before the
     * weighted sum of V. Costs a second pass over the keys. */
    bool llama_numerics;
    /* Emulate llama.cpp's CPU flash-attention kernel instead (what its tools use when flash
     * attention is on, the default of llama-perplexity): q rounded to the K type, keys in
     * cell order with a scalar online softmax, and with an f16 cache the weighted sum of V
     * accumulated in f16. One query row at a time: slow, for reproducing its figures.
     * Takes precedence over llama_numerics; key_mass is not supported with it. With a block
     * type K, q is quantised to its vec-dot type (q8_0 or q8_1) and scored with the integer
     * dot, and a non-f16 V is dequantised and accumulated in f32, as llama.cpp does.
     * llama_numerics (the non-flash order) applies only when K and V are both f16 or both
     * f32; with other types the plain span core runs. */
    bool llama_flash;
} attn_params;

/* Per-thread scratch, sized once at start-up (no allocation on the hot path). */
typedef struct attn_scratch attn_scratch;

/* Creates scratch for chunks of up to max_q queries with up to max_group heads per KV head.
 * Returns 0 or KS_ERR_NOMEM / KS_ERR_INVALID. */
int attn_scratch_create(int32_t head_dim, int32_t max_group, int32_t max_q,
                        attn_scratch **out) KS_WUR;
void attn_scratch_destroy(attn_scratch *s);
/* Tests and benchmarks: use the portable scalar kernels (true) or the best SIMD kernels the
 * CPU supports (false, the default). */
void attn_scratch_force_scalar(attn_scratch *s, bool scalar);

/* Runs attention for one KV head. Spans may come in any order; the result does not depend
 * on their order beyond float rounding. Returns 0, or KS_ERR_INVALID for bad parameters
 * (n_q larger than the scratch was made for, head_dim mismatch, NULL pointers).
 * Thread-safe as long as each thread uses its own scratch. */
int attn_forward(const attn_params *p, const attn_span *spans, int32_t n_spans,
                 attn_scratch *s) KS_WUR;

#endif

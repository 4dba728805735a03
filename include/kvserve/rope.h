/* rope.h - rotary position embeddings, shared by the forward pass and the KV policies that
 * move keys to new positions (StreamingLLM's compact positions, InfLLM's window positions).
 *
 * Angles are computed as ggml does: theta starts at pos*freq_scale and is multiplied by
 * base^(-2/head_dim) pair after pair in float, so results match llama.cpp bit for bit.
 * Rotations compose: rotating a key stored at position p by (q - p) gives the key at q up to
 * float rounding, which is how llama.cpp's K-shift re-positions a cache.
 */
#ifndef KVSERVE_ROPE_H
#define KVSERVE_ROPE_H

#include <stdbool.h>
#include <stdint.h>

#define ROPE_N_ROT(p) ((p)->n_rot > 0 ? (p)->n_rot : (p)->head_dim)

typedef enum rope_kind {
    ROPE_NORM = 0, /* llama: rotates adjacent pairs (x[2i], x[2i+1]) */
    ROPE_NEOX = 2  /* qwen2: rotates (x[i], x[i + head_dim/2]) */
} rope_kind;

/* Zero-initialised optional fields mean "off", so {kind, head_dim, theta, freq_scale} is the
 * plain rotary embedding of llama / qwen2. */
typedef struct rope_params {
    rope_kind kind;
    int32_t head_dim; /* head dimension */
    float theta;      /* frequency base */
    float freq_scale; /* 1 / linear scaling factor (1 = none) */
    int32_t n_rot;    /* rotated dimensions (partial rotary, Phi-4-mini); 0 = head_dim */
    /* per-pair frequency divisors [n_rot/2] (Llama 3.1 rope_freqs, Phi-3 su/longrope
     * factors); NULL = none. Points into the model mapping. */
    const float *freq_factors;
    /* YaRN (ggml's rope_yarn): ext_factor 0 = off; attn_factor 0 means 1 */
    float ext_factor, attn_factor, beta_fast, beta_slow;
    int32_t n_ctx_orig;
    /* Rotations by a position delta of keys already rotated (KV policies re-positioning a
     * cache): no magnitude scale, which the first rotation already applied. */
    bool relative;
} rope_params;

/* cos and sin of the n_rot/2 angles for position pos (may be negative: a delta). */
void rope_angles(const rope_params *p, float pos, float *cos_out, float *sin_out);
/* Rotates the first n_rot dimensions of n_heads consecutive heads of x (head_dim each) by the
 * given angles; the other dimensions pass through. */
void rope_rotate(const rope_params *p, float *x, int32_t n_heads, const float *cs, const float *sn);
/* Convenience: rotate n_heads heads of x by position pos. */
void rope_rotate_pos(const rope_params *p, float *x, int32_t n_heads, float pos);

#endif

/* attn_tiles.h - internals shared by the attention files of core/ (attention.c, the span
 * core; attention_llama.c, the llama.cpp-order emulation; attn_tiles.c, scratch, kernels and
 * the tile walker). Not part of the public API: see kvserve/attention.h.
 */
#ifndef KVSERVE_CORE_ATTN_TILES_H
#define KVSERVE_CORE_ATTN_TILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/attention.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTN_X86 1
#define ATTN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))

ATTN_AVX512 static inline __mmask16 tail_mask(int32_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
#endif

/* Keys per tile: K and V tiles are converted to f32 once and reused by every query row. */
#define ATTN_TILE 64

/* llama numerics walk the tiles three times (max, sum, probabilities); a call whose scores fit
 * in this many bytes computes them once and keeps them (then their exponentials) for the next
 * passes. Reserved at scratch creation and touched only as far as a call needs (malloc'd pages
 * are committed on first write), so a decode or a 512-token prefill over a short context uses
 * a few MiB, and a chunk over a long context falls back to recomputing. */
#define ATTN_SCORE_CACHE_BYTES ((size_t)16 << 20)

typedef void (*scores_fn)(const float *q, const float *k, size_t k_stride, int32_t n, int32_t hd,
                          float scale, float *s);
typedef void (*accum_fn)(float *acc, const float *p, const float *v, size_t v_stride, int32_t n,
                         int32_t hd);

struct attn_scratch {
    int32_t head_dim, max_group, max_q;
    float *qr;       /* [max_q*max_group][head_dim] q rounded to f16 (llama numerics) */
    float *acc;      /* [max_q*max_group][head_dim] running p·V */
    float *m;        /* [max_q*max_group] running max */
    double *l;       /* [max_q*max_group] running sum of exp */
    float *kt;       /* [ATTN_TILE][head_dim] K tile as f32 */
    float *vt;       /* [ATTN_TILE][head_dim] V tile as f32 */
    float *s;        /* [ATTN_TILE] scores of one row */
    float *lacc;     /* [rows][banks][head_dim][16] llama.cpp's p·V lane accumulators */
    double *ldbl;    /* [max_group][head_dim] its one-token p·V tail, summed in double */
    uint8_t *ldone;  /* [max_group] tail started (the lanes were folded into ldbl) */
    float *vtt;      /* [head_dim][ATTN_TILE] V tile transposed */
    void *qq;        /* one query row quantised to K's vec-dot type (llama_flash) */
    float *sc;       /* [tile][row][ATTN_TILE] cached scores, then exponentials (llama numerics) */
    uint8_t *sc_vis; /* [tile][row] the row sees the tile (its cached scores are valid) */
    bool no_score_cache; /* tests: always recompute the scores in every pass */
    scores_fn scores;
    accum_fn accum;
    bool simd; /* scores and accum are the AVX-512 kernels */
};

/* One tile of keys ready for the kernels: f32 rows with their strides, and index range. */
typedef struct attn_tile {
    const float *k, *v;
    size_t ks, vs;
    const int32_t *idx; /* NULL: all visible */
    int32_t n;
    int32_t idx_min, idx_max;
    int64_t key0; /* global key number of the first key (key_mass column) */
    int64_t seq;  /* tile number in the walk (0, 1, ...), the same in every pass */
} attn_tile;

/* The state of one attn_forward call. */
typedef struct attn_run {
    const attn_params *p;
    attn_scratch *s;
    scores_fn scores; /* q·k kernel of this call (llama numerics may pick its vec-dot order) */
    const float *q;   /* row r = t*n_group + g at q + t*q_stride + g*hd */
    size_t q_stride;
    int32_t rows;
    int64_t n_keys;
    int32_t q_idx_max; /* largest query index: tiles above it are skipped unread */
    bool round_p;      /* round probabilities to f16 before the V product */
    bool exact_exp;    /* llama.cpp's exp approximation and summation order */
    bool lanes;        /* llama.cpp's q·k and p·V summation orders (f16 cache) */
    bool decode;       /* one query token: its vec-dot p·V order, else its tinyBLAS order */
    int64_t n_vec;     /* decode: keys below this go to the four 16-lane banks */
    bool cache;        /* llama numerics: scores kept in s->sc between the passes */
} attn_run;

/* Scores of row `row` (query token t) against the tile with r->scores, masked with -inf;
 * *smax = their maximum. Returns false if the whole tile is invisible to this query. */
bool attn_tile_scores(const attn_run *r, const attn_tile *t, int32_t row, float *smax);

/* Tests: off makes llama numerics recompute the scores in each pass (the path calls whose
 * scores exceed ATTN_SCORE_CACHE_BYTES take), to check both paths give the same bits. */
static inline void attn_scratch_set_score_cache(attn_scratch *s, bool on)
{
    s->no_score_cache = !on;
}

/* The number of tiles attn_for_each_tile walks over these spans (skipped ones included). */
int64_t attn_tile_count(const attn_span *spans, int32_t n_spans);

typedef void (*attn_tile_fn)(const attn_run *r, const attn_tile *t);
/* Calls fn on every tile of the spans in order, skipping tiles no query of the chunk sees. */
void attn_for_each_tile(const attn_run *r, const attn_span *spans, int32_t n_spans,
                        attn_tile_fn fn);

#endif

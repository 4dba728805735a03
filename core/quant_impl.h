/* quant_impl.h - private to the quant module: block layouts (GGUF/ggml public format) and the
 * kernel table that quant.c fills from the scalar, AVX2 and AVX-512 implementation files.
 * Only core/quant*.c include this.
 */
#ifndef KVSERVE_QUANT_IMPL_H
#define KVSERVE_QUANT_IMPL_H

#include <stdint.h>

#include "kvserve/quant.h"

#define QK8_0 32
#define QK4_0 32
#define QK_K 256

typedef struct blk_q8_0 {
    uint16_t d;       /* fp16 scale */
    int8_t qs[QK8_0]; /* value = qs[j] * d */
} blk_q8_0;

typedef struct blk_q4_0 {
    uint16_t d;            /* fp16 scale */
    uint8_t qs[QK4_0 / 2]; /* elem j<16: low nibble of qs[j]; j>=16: high nibble of qs[j-16] */
} blk_q4_0;

typedef struct blk_q4_k {
    uint16_t d;           /* fp16 super-scale of the 6-bit scales */
    uint16_t dmin;        /* fp16 super-scale of the 6-bit mins */
    uint8_t scales[12];   /* 8 scales + 8 mins, 6 bits each, packed */
    uint8_t qs[QK_K / 2]; /* per 64 elems: 32 bytes, low nibbles first 32, high the next 32 */
} blk_q4_k;

typedef struct blk_q6_k {
    uint8_t ql[QK_K / 2];     /* low 4 bits */
    uint8_t qh[QK_K / 4];     /* high 2 bits */
    int8_t scales[QK_K / 16]; /* one per 16 elems */
    uint16_t d;               /* fp16 super-scale */
} blk_q6_k;

typedef struct blk_q8_k {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sums of 16 consecutive qs */
} blk_q8_k;

/* ---- the types added for real-world files (ggml's block_* layouts) ---- */

typedef struct blk_q4_1 {
    uint16_t d, m;         /* fp16 scale and min: value = d * q + m */
    uint8_t qs[QK4_0 / 2]; /* nibbles as in Q4_0, q in 0..15 */
} blk_q4_1;

typedef struct blk_q5_0 {
    uint16_t d;            /* fp16 scale: value = d * (q - 16) */
    uint8_t qh[4];         /* bit j (little-endian u32) = bit 4 of element j */
    uint8_t qs[QK4_0 / 2]; /* low 4 bits as in Q4_0 */
} blk_q5_0;

typedef struct blk_q5_1 {
    uint16_t d, m; /* value = d * q + m, q in 0..31 */
    uint8_t qh[4];
    uint8_t qs[QK4_0 / 2];
} blk_q5_1;

typedef struct blk_q8_1 {
    uint16_t d; /* fp16 scale */
    uint16_t s; /* fp16 of d * sum(qs): the Q4_1/Q5_1 min term in one product */
    int8_t qs[QK8_0];
} blk_q8_1;

typedef struct blk_q2_k {
    uint8_t scales[QK_K / 16]; /* per 16 elems: low nibble scale, high nibble min */
    uint8_t qs[QK_K / 4];      /* elem 128n+32j+l: bits 2j of qs[32n+l] */
    uint16_t d, dmin;          /* fp16 super-scales */
} blk_q2_k;

typedef struct blk_q3_k {
    uint8_t hmask[QK_K / 8]; /* elem 128n+32j+l: bit 4n+j of hmask[l]; clear = minus 4 */
    uint8_t qs[QK_K / 4];    /* low 2 bits, as in Q2_K */
    uint8_t scales[12];      /* 16 6-bit scales (offset 32), packed */
    uint16_t d;
} blk_q3_k;

typedef struct blk_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];   /* as Q4_K */
    uint8_t qh[QK_K / 8]; /* elem 64j+l: bit 2j (l<32) or 2j+1 of qh[l%32] */
    uint8_t qs[QK_K / 2]; /* low 4 bits as Q4_K */
} blk_q5_k;

typedef struct blk_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_0 / 2]; /* nibbles (as Q4_0) index qt_iq4_values */
} blk_iq4_nl;

typedef struct blk_iq4_xs {
    uint16_t d;
    uint16_t scales_h;           /* bits 2ib..2ib+1: high 2 bits of sub-block ib's scale */
    uint8_t scales_l[QK_K / 64]; /* nibble ib%2 of byte ib/2: low 4 bits */
    uint8_t qs[QK_K / 2];        /* 16 bytes per 32 elems: low nibbles then high */
} blk_iq4_xs;

_Static_assert(sizeof(blk_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(blk_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(blk_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(blk_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(blk_q2_k) == 84, "q2_K layout");
_Static_assert(sizeof(blk_q3_k) == 110, "q3_K layout");
_Static_assert(sizeof(blk_q5_k) == 176, "q5_K layout");
_Static_assert(sizeof(blk_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(blk_iq4_xs) == 136, "iq4_xs layout");

/* The 16 non-linear levels of IQ4_NL / IQ4_XS (a public constant of the format). */
static const int8_t qt_iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};

/* Signed 6-bit scale k (0..15) of a Q3_K block, offset removed (-32..31). */
static inline int qt_q3k_scale(const uint8_t *s, int k)
{
    int lo = (k < 8) ? (s[k] & 0xF) : (s[k - 8] >> 4);
    int hi = (s[8 + (k % 4)] >> (2 * (k / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Signed 6-bit scale ib (0..7) of an IQ4_XS block (-32..31). */
static inline int qt_iq4xs_scale(const blk_iq4_xs *b, int ib)
{
    int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
    int hi = (b->scales_h >> (2 * ib)) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Bit j (0..31) of a Q5_0/Q5_1 block's qh. */
static inline int qt_q5_hbit(const uint8_t qh[4], int j)
{
    return (qh[j / 8] >> (j % 8)) & 1;
}

_Static_assert(sizeof(blk_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(blk_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(blk_q4_k) == 144, "q4_K layout");
_Static_assert(sizeof(blk_q6_k) == 210, "q6_K layout");
_Static_assert(sizeof(blk_q8_k) == 292, "q8_K layout");

/* Dot of one weight row (n elements) with one activation row of the matching vec-dot type. */
typedef float (*qt_dot_fn)(int64_t n, const void *w, const void *x);
/* Rows r in [0,n_rows) dotted with activations b in [0,n_b); see qt_matvec. */
typedef void (*qt_matvec_fn)(int64_t n, const void *w_rows, size_t w_row_bytes, int64_t n_rows,
                             const void *x, size_t x_bytes, int64_t n_b, float *y,
                             int64_t y_stride);

typedef void (*qt_dequant_fn)(const void *src, float *dst, int64_t n_blocks);

typedef struct qt_kernels {
    qt_dequant_fn dequant[QT_TYPE_MAX];    /* scalar, by type (new types; see quant.c) */
    qt_dot_fn dot[QT_TYPE_MAX];            /* by weight type; NULL = unsupported */
    qt_matvec_fn matvec[QT_TYPE_MAX];      /* by weight type; NULL = generic loop over dot */
    qt_matvec_fn matvec_gemm[QT_TYPE_MAX]; /* llama.cpp's tinyBLAS order; NULL = matvec */
    void (*quantize_q8_0)(const float *src, void *dst, int64_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
} qt_kernels;

/* 6-bit scale and min j (0..7) of a Q4_K block. */
static inline void qt_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Scalar kernels of the newer types (quant_q.c, quant_k.c): dequant, dot, Q8_1. */
void qt_kernels_fill_scalar_q(qt_kernels *k);
void qt_kernels_fill_scalar_k(qt_kernels *k);
void qt_quantize_q8_1(const float *src, void *dst, int64_t n);
/* llama.cpp's reference quantisers of the KV cache types (quant_kv.c). */
void qt_quantize_q4_1(const float *src, void *dst, int64_t n);
void qt_quantize_q5_0(const float *src, void *dst, int64_t n);
void qt_quantize_q5_1(const float *src, void *dst, int64_t n);
void qt_quantize_iq4_nl(const float *src, void *dst, int64_t n);

/* Overwrite the entries an implementation provides; others keep the scalar ones. */
void qt_kernels_fill_avx2(qt_kernels *k);
void qt_kernels_fill_avx512(qt_kernels *k);
/* The newer types' SIMD kernels (quant_x86.h compiled twice: quant_x_avx2.c, quant_x_avx512.c). */
void qt_kernels_fill_x_avx2(qt_kernels *k);
void qt_kernels_fill_x_avx512(qt_kernels *k);

#endif

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
    uint16_t d;          /* fp16 super-scale of the 6-bit scales */
    uint16_t dmin;       /* fp16 super-scale of the 6-bit mins */
    uint8_t scales[12];  /* 8 scales + 8 mins, 6 bits each, packed */
    uint8_t qs[QK_K / 2]; /* per 64 elems: 32 bytes, low nibbles first 32, high the next 32 */
} blk_q4_k;

typedef struct blk_q6_k {
    uint8_t ql[QK_K / 2];   /* low 4 bits */
    uint8_t qh[QK_K / 4];   /* high 2 bits */
    int8_t scales[QK_K / 16]; /* one per 16 elems */
    uint16_t d;             /* fp16 super-scale */
} blk_q6_k;

typedef struct blk_q8_k {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sums of 16 consecutive qs */
} blk_q8_k;

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

typedef struct qt_kernels {
    qt_dot_fn dot[QT_TYPE_MAX];       /* by weight type; NULL = unsupported */
    qt_matvec_fn matvec[QT_TYPE_MAX]; /* by weight type; NULL = generic loop over dot */
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

/* Overwrite the entries an implementation provides; others keep the scalar ones. */
void qt_kernels_fill_avx2(qt_kernels *k);
void qt_kernels_fill_avx512(qt_kernels *k);

#endif

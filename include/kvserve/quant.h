/* quant.h - tensor types: block layouts, dequantisation, activation quantisation and dot
 * products, with a scalar path (the oracle) and AVX2/FMA and AVX-512 paths picked at run
 * time from the CPU's features.
 *
 * Numerics follow llama.cpp's CPU backend so results match it: a weight row of type W is
 * dotted with an activation row already converted to qt_vec_dot_type(W): F32 -> F32,
 * F16 -> F16, BF16 -> BF16; Q8_0, Q4_0, Q5_0, IQ4_NL -> Q8_0; Q4_1, Q5_1 -> Q8_1 (which
 * carries its block sum); Q2_K..Q6_K and IQ4_XS -> Q8_K.
 */
#ifndef KVSERVE_QUANT_H
#define KVSERVE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"

/* ggml type ids as stored in GGUF files. */
typedef enum qt_type {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_IQ4_NL = 20,
    QT_IQ4_XS = 23,
    QT_BF16 = 30,
    QT_TYPE_MAX = 40
} qt_type;

typedef enum qt_impl { QT_IMPL_SCALAR = 0, QT_IMPL_AVX2 = 1, QT_IMPL_AVX512 = 2 } qt_impl;

/* True for the weight types this build can load: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS (not the activation-only Q8_1, Q8_K). */
bool qt_type_supported(uint32_t type);
const char *qt_type_name(uint32_t type); /* "unknown" if not a known id */
int64_t qt_block_elems(qt_type t);       /* elements per block (1 for float types) */
size_t qt_block_bytes(qt_type t);        /* bytes per block */
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size. */
size_t qt_row_bytes(qt_type t, int64_t n);

/* Dequantises n elements (a multiple of the block size) of type t to f32. */
void qt_dequantize_row(qt_type t, const void *src, float *dst, int64_t n);

/* The activation type a weight type is dotted with. */
qt_type qt_vec_dot_type(qt_type weight_type);
/* Converts n f32 values to `t` (F32 copy, F16, BF16, Q8_0, Q8_1, Q8_K activations; Q4_0,
 * Q4_1, Q5_0, Q5_1, IQ4_NL for the KV cache) with llama.cpp's
 * rounding. dst must hold qt_row_bytes(t, n). */
void qt_quantize_row(qt_type t, const float *src, void *dst, int64_t n);
/* Round trip through type t (quantise then dequantise): what the weight "sees". */
void qt_roundtrip_row(qt_type t, const float *src, float *dst, int64_t n, void *tmp);

/* Dot product of a weight row of type w with an activation row of qt_vec_dot_type(w).
 * n is the number of elements. Dispatches to the best implementation. */
float qt_vec_dot(qt_type w, int64_t n, const void *w_row, const void *x_row);

/* Several outputs at once: y[r*y_stride + b] = dot(row r of W, x_b) for r in [0,n_rows),
 * b in [0,n_b). W rows are w_row_bytes apart; activation b is at x + b*x_bytes. Used by
 * batched decode so each weight row is read from memory once per step. */
void qt_matvec(qt_type w, int64_t n, const void *w_rows, size_t w_row_bytes, int64_t n_rows,
               const void *x, size_t x_bytes, int64_t n_b, float *y, int64_t y_stride);

/* As qt_matvec, but in the summation order of llama.cpp's batched (two or more tokens)
 * tinyBLAS path, which differs from its one-token vec-dot order for F32, F16 and BF16
 * weights; the same as qt_matvec for the other types. */
void qt_matvec_gemm(qt_type w, int64_t n, const void *w_rows, size_t w_row_bytes, int64_t n_rows,
                    const void *x, size_t x_bytes, int64_t n_b, float *y, int64_t y_stride);

/* Force an implementation (tests); returns KS_ERR_UNSUPPORTED if the CPU lacks it. */
int qt_set_impl(qt_impl impl) KS_WUR;
qt_impl qt_get_impl(void);
qt_impl qt_best_impl(void);

/* f32 <-> f16 rows (SIMD when available), used by the KV cache and attention. */
void qt_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);
void qt_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);

#endif

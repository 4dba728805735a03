/* quant_x86.h - x86 SIMD dot kernels of the newer weight types (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
 * Q5_K, IQ4_NL, IQ4_XS), written once and compiled twice: quant_x_avx2.c (AVX2/FMA/F16C) and
 * quant_x_avx512.c (adds AVX-512 VL/VNNI, where the 4-byte integer dots become vpdpbusd).
 *
 * Every kernel reproduces the order of llama.cpp's x86 ggml_vec_dot_<type>_q8_<x>: per block
 * (or super-block) 8 integer lanes, lane k = the exact sum over the block's bytes 4k..4k+3 of
 * every 32-element group (times that group's scale for the K-quants); lanes are converted to
 * f32 and folded into an 8-lane f32 accumulator with one fma per block; the accumulator is
 * reduced as hsum8 at the end. Integer lanes are exact whichever instructions compute them,
 * so only the f32 steps need to follow llama.cpp, and they do. Where llama.cpp keeps a
 * scalar min term (Q4_1, Q5_1, Q5_K) it is an fma chain (its C is compiled with contraction).
 * The including file defines the fill function around qx_fill_common (the AVX-512 one then
 * puts its 512-bit kernels over some entries); none of them calls back into quant.c.
 */
#ifndef KVSERVE_QUANT_X86_H
#define KVSERVE_QUANT_X86_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_impl.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define QX_VNNI 1
#else
#define QX_VNNI 0
#endif

static inline float qx_f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* llama.cpp's hsum_float_8: (hi4 + lo4), then (0+2)+(1+3). */
static inline float qx_hsum8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* 8 lanes: lane k = sum over bytes 4k..4k+3 of u * s (u unsigned <= 127, s signed). */
static inline __m256i qx_dot4(__m256i u, __m256i s)
{
#if QX_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* The same for signed w (|w| <= 127): |w| times y with w's sign. */
static inline __m256i qx_dot4_ss(__m256i w, __m256i y)
{
    return qx_dot4(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
}

/* Lanes of 4-byte sums times a 16-bit scale per lane pair (sc16: one scale per s16 lane). */
static inline __m256i qx_dot4_scaled(__m256i u, __m256i s, __m256i sc16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16);
}

static inline __m256i qx_ld256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high (16..31). */
static inline __m256i qx_nibbles32(const uint8_t *qs)
{
    /* both lanes hold the 16 bytes; the high lane shifted right by 4 (32-bit lanes: the bits
     * that cross a byte boundary are masked off) */
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(0xF));
}

/* The 32 bits of qh as bytes: 0x10 where bit j is set, else 0. With AVX-512 the bits are
 * a byte mask as they stand. */
static inline __m256i qx_hbits16(const uint8_t qh[4])
{
    uint32_t u;
    memcpy(&u, qh, 4);
#if QX_VNNI
    return _mm256_maskz_mov_epi8((__mmask32)u, _mm256_set1_epi8(0x10));
#else
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), pick);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
#endif
}

/* A Q5_0 block as 32 signed bytes q - 16: the nibble where the high bit is set, the nibble
 * with 0xF0 or-ed in (nibble - 16 as a signed byte) where it is clear. */
static inline __m256i qx_q5_0_block(const blk_q5_0 *a)
{
    uint32_t u;
    memcpy(&u, a->qh, 4);
    __m256i nib = qx_nibbles32(a->qs);
#if QX_VNNI
    return _mm256_mask_mov_epi8(_mm256_or_si256(nib, _mm256_set1_epi8((char)0xF0)), (__mmask32)u,
                                nib);
#else
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), pick);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_or_si256(nib, _mm256_andnot_si256(v, _mm256_set1_epi8((char)0xF0)));
#endif
}

/* ---- 32-element blocks ---- */

static inline __m256i qx_iq4_block(const uint8_t *qs)
{
    const __m256i lut =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qt_iq4_values));
    return _mm256_shuffle_epi8(lut, qx_nibbles32(qs));
}

/* IQ4_NL in llama.cpp's batched (tinyBLAS) order: one accumulator over all blocks. */
static void qx_gemm_iq4_nl(int64_t n, const void *w_rows, size_t wrb, int64_t n_rows, const void *x,
                           size_t xb, int64_t n_b, float *y, int64_t ys)
{
    const int64_t nb = n / QK4_0;
    for (int64_t r = 0; r < n_rows; r++) {
        const blk_iq4_nl *a = (const blk_iq4_nl *)((const char *)w_rows + (size_t)r * wrb);
        for (int64_t t = 0; t < n_b; t++) {
            const blk_q8_0 *b = (const blk_q8_0 *)((const char *)x + (size_t)t * xb);
            __m256 acc = _mm256_setzero_ps();
            for (int64_t i = 0; i < nb; i++) {
                __m256i s = qx_dot4_ss(qx_iq4_block(a[i].qs), qx_ld256(b[i].qs));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(qx_f16(a[i].d) * qx_f16(b[i].d)),
                                      _mm256_cvtepi32_ps(s), acc);
            }
            y[r * ys + t] = qx_hsum8(acc);
        }
    }
}

/* ---- dots and matvecs of the 32-element types ----
 * One row kernel per type in ggml_vec_dot_<type>_q8_<x>'s order (Q4_1/Q5_1: acc =
 * fma(dw*dy, lanes, acc) and summs = fma(m, s, summs); Q5_0 the same without the min;
 * IQ4_NL two accumulators over block pairs). For a matvec the activation's fp16 scales are
 * converted to f32 once per activation instead of once per row; the weight's adjacent d and
 * m of Q4_1/Q5_1 go through one vcvtph2ps. */
enum { QX_Q4_1, QX_Q5_0, QX_Q5_1, QX_IQ4_NL };
#define QX_MV_NB 1024 /* blocks per row the scale scratch holds */
#define QX_MV_NT 4    /* activations converted at a time */

static inline __attribute__((always_inline)) __m256i qx_blk32(int kind, const uint8_t *blk)
{
    switch (kind) {
    case QX_Q4_1:
        return qx_nibbles32(((const blk_q4_1 *)blk)->qs);
    case QX_Q5_1: {
        const blk_q5_1 *a = (const blk_q5_1 *)blk;
        return _mm256_or_si256(qx_nibbles32(a->qs), qx_hbits16(a->qh));
    }
    case QX_Q5_0:
        return qx_q5_0_block((const blk_q5_0 *)blk);
    default:
        return qx_iq4_block(((const blk_iq4_nl *)blk)->qs);
    }
}

/* IQ4_NL x Q8_0 as ggml_vec_dot_iq4_nl_q8_0: block pairs into two accumulators, then a
 * scalar fma tail. */
static inline float qx_row_iq4_nl(int64_t nb, const uint8_t *w, const uint8_t *x, const float *dx)
{
#define QX_DY(i) (dx ? dx[i] : qx_f16(b[i].d))
    const blk_iq4_nl *a = (const blk_iq4_nl *)w;
    const blk_q8_0 *b = (const blk_q8_0 *)x;
    __m256 acc = _mm256_setzero_ps(), acc2 = acc;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        __m256i s0 = qx_dot4_ss(qx_iq4_block(a[i].qs), qx_ld256(b[i].qs));
        __m256i s1 = qx_dot4_ss(qx_iq4_block(a[i + 1].qs), qx_ld256(b[i + 1].qs));
        acc =
            _mm256_fmadd_ps(_mm256_set1_ps(QX_DY(i) * qx_f16(a[i].d)), _mm256_cvtepi32_ps(s0), acc);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(QX_DY(i + 1) * qx_f16(a[i + 1].d)),
                               _mm256_cvtepi32_ps(s1), acc2);
    }
    float sum = qx_hsum8(_mm256_add_ps(acc, acc2));
    for (; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += qt_iq4_values[a[i].qs[j] & 0xF] * b[i].qs[j] +
                    qt_iq4_values[a[i].qs[j] >> 4] * b[i].qs[j + 16];
        sum = fmaf(QX_DY(i) * qx_f16(a[i].d), (float)isum, sum);
    }
    return sum;
#undef QX_DY
}

/* One row of a 32-element type dotted with one activation row, in llama.cpp's vec-dot order.
 * dx, sx: the activation's scales (d; s of Q8_1) already in f32, or NULL to convert them
 * here (the same values either way). */
static inline __attribute__((always_inline)) float
qx_row32(int kind, int64_t nb, const uint8_t *w, const uint8_t *x, const float *dx, const float *sx)
{
    const size_t wb = kind == QX_Q4_1   ? sizeof(blk_q4_1)
                      : kind == QX_Q5_1 ? sizeof(blk_q5_1)
                      : kind == QX_Q5_0 ? sizeof(blk_q5_0)
                                        : sizeof(blk_iq4_nl);
    const bool q81 = kind == QX_Q4_1 || kind == QX_Q5_1;
    const size_t xbb = q81 ? sizeof(blk_q8_1) : sizeof(blk_q8_0), xqs = q81 ? 4 : 2;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    if (kind == QX_IQ4_NL) return qx_row_iq4_nl(nb, w, x, dx);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *a = w + (size_t)i * wb, *xi = x + (size_t)i * xbb;
        uint16_t xh[2];
        memcpy(xh, xi, 4);
        const float dy = dx ? dx[i] : qx_f16(xh[0]);
        __m256i yv = qx_ld256(xi + xqs), q = qx_blk32(kind, a);
        if (kind == QX_Q5_0) {
            uint16_t dh;
            memcpy(&dh, a, 2);
            __m256 s = _mm256_cvtepi32_ps(qx_dot4_ss(q, yv));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(qx_f16(dh) * dy), s, acc);
            continue;
        }
        uint32_t dm32; /* Q4_1, Q5_1: the adjacent fp16 d and m in one conversion */
        memcpy(&dm32, a, 4);
        __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm32));
        summs = fmaf(_mm_cvtss_f32(_mm_movehdup_ps(dm)), sx ? sx[i] : qx_f16(xh[1]), summs);
        __m256 d = _mm256_set1_ps(_mm_cvtss_f32(dm) * dy);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(qx_dot4(q, yv)), acc);
    }
    return qx_hsum8(acc) + summs;
}

/* Decode of the 32-element types (one activation, many rows) was bound by the one fma chain
 * per row (acc, and summs for Q4_1/Q5_1): a 20-byte Q4_1 block per 4-cycle fma latency,
 * about 5 bytes a cycle, whatever the integer work. So QX_NR rows run interleaved (their
 * chains are independent), and the per-block float work that competed with the integer dot
 * for the vector ports (fp16 convert, shuffle, d * dy) is done beforehand, 4 blocks per
 * conversion, into a table of (d * dy, m) per row (Q5_0: (d * dy, 0)). Each row's chain is
 * exactly qx_row32's (the same products, the same fma order), so results are identical.
 * Four row streams at once defeated the hardware prefetcher (DRAM rate halved in
 * bench_quant), so the dot prefetches the next group of rows as it goes. */
#define QX_NR 4

/* tab[2i] = d_i * dy_i, tab[2i + 1] = m_i (Q5_0: 0) for the row's nb blocks (tab and dy1
 * hold nb rounded up to 4 pairs; dy1 = (dy_i, 1) pairs, zero past nb). */
static inline __attribute__((always_inline)) void qx_tab32(int kind, int64_t nb, const uint8_t *w,
                                                           const float *dy1, float *tab)
{
    const size_t wb = kind == QX_Q4_1   ? sizeof(blk_q4_1)
                      : kind == QX_Q5_1 ? sizeof(blk_q5_1)
                                        : sizeof(blk_q5_0);
    const __m128i keep = _mm_set1_epi32(kind == QX_Q5_0 ? 0xFFFF : -1);
    /* 4 blocks' (d, m) per conversion, gathered by vpinsrd (vpgatherdd is far slower on
     * this machine's Zen 4); a whole row before its dot, so no store is still in flight when
     * the dot reads the table */
    for (int64_t i0 = 0; i0 < nb; i0 += 4) {
        const uint8_t *a0 = w + (size_t)i0 * wb;
        const int n4 = (int)KS_MIN((int64_t)4, nb - i0);
        uint32_t u;
        memcpy(&u, a0, 4);
        __m128i h = _mm_cvtsi32_si128((int)u);
        if (n4 > 1) {
            memcpy(&u, a0 + wb, 4);
            h = _mm_insert_epi32(h, (int)u, 1);
        }
        if (n4 > 2) {
            memcpy(&u, a0 + 2 * wb, 4);
            h = _mm_insert_epi32(h, (int)u, 2);
        }
        if (n4 > 3) {
            memcpy(&u, a0 + 3 * wb, 4);
            h = _mm_insert_epi32(h, (int)u, 3);
        }
        h = _mm_and_si128(h, keep);
        _mm256_storeu_ps(tab + 2 * i0,
                         _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(dy1 + 2 * i0)));
    }
}

/* NR rows (w, w + wrb, ...) dotted with one activation, from their tables tab[r]. */
static inline __attribute__((always_inline)) void qx_rows32(int kind, int nr, int64_t nb,
                                                            const uint8_t *w, size_t wrb,
                                                            const uint8_t *x, const float *sx,
                                                            float *const *tab, float *y, int64_t ys)
{
    const size_t wb = kind == QX_Q4_1   ? sizeof(blk_q4_1)
                      : kind == QX_Q5_1 ? sizeof(blk_q5_1)
                                        : sizeof(blk_q5_0);
    const bool q81 = kind != QX_Q5_0;
    const size_t xbb = q81 ? sizeof(blk_q8_1) : sizeof(blk_q8_0), xqs = q81 ? 4 : 2;
    __m256 acc[QX_NR];
    float summs[QX_NR];
    for (int r = 0; r < nr; r++) {
        acc[r] = _mm256_setzero_ps();
        summs[r] = 0.0f;
    }
    for (int64_t i = 0; i < nb; i++) {
        const __m256i yv = qx_ld256(x + (size_t)i * xbb + xqs);
        for (int r = 0; r < nr; r++) {
            const uint8_t *a = w + (size_t)r * wrb + (size_t)i * wb;
            if (nr > 1) _mm_prefetch((const char *)a + QX_NR * wrb, _MM_HINT_T0);
            const __m256i q = qx_blk32(kind, a);
            const __m256 d = _mm256_broadcast_ss(&tab[r][2 * i]);
            if (kind == QX_Q5_0) {
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(qx_dot4_ss(q, yv)), acc[r]);
                continue;
            }
            summs[r] = fmaf(tab[r][2 * i + 1], sx[i], summs[r]);
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(qx_dot4(q, yv)), acc[r]);
        }
    }
    for (int r = 0; r < nr; r++)
        y[r * ys] = qx_hsum8(acc[r]) + summs[r];
}

/* All rows with the nt activations x (stride xb; dy1[t], sx[t] their scales): QX_NR rows
 * at a time, each group with every activation while its rows are in cache, then the rest. */
static inline __attribute__((always_inline)) void
qx_rows32_all(int kind, int64_t nb, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *x,
              size_t xb, int64_t nt, const float (*dy1)[2 * QX_MV_NB], const float (*sx)[QX_MV_NB],
              float *y, int64_t ys)
{
    float tabs[QX_NR][2 * QX_MV_NB];
    float *tab[QX_NR];
    for (int r = 0; r < QX_NR; r++)
        tab[r] = tabs[r];
    int64_t r = 0;
    for (; r + QX_NR <= n_rows; r += QX_NR)
        for (int64_t t = 0; t < nt; t++) {
            for (int k = 0; k < QX_NR; k++)
                qx_tab32(kind, nb, w + (size_t)(r + k) * wrb, dy1[t], tab[k]);
            qx_rows32(kind, QX_NR, nb, w + (size_t)r * wrb, wrb, x + (size_t)t * xb, sx[t], tab,
                      y + r * ys + t, ys);
        }
    for (; r < n_rows; r++)
        for (int64_t t = 0; t < nt; t++) {
            qx_tab32(kind, nb, w + (size_t)r * wrb, dy1[t], tab[0]);
            qx_rows32(kind, 1, nb, w + (size_t)r * wrb, wrb, x + (size_t)t * xb, sx[t], tab,
                      y + r * ys + t, ys);
        }
}

/* Rows x activations; the activation scales are converted once per activation when the row
 * fits the scratch (QX_MV_NB blocks), else on the fly. */
static inline __attribute__((always_inline)) void qx_mv32(int kind, int64_t n, const void *w_rows,
                                                          size_t wrb, int64_t n_rows, const void *x,
                                                          size_t xb, int64_t n_b, float *y,
                                                          int64_t ys)
{
    const int64_t nb = n / QK4_0;
    const uint8_t *w = w_rows, *xc = x;
    const bool q81 = kind == QX_Q4_1 || kind == QX_Q5_1;
    if (nb > QX_MV_NB) {
        for (int64_t r = 0; r < n_rows; r++)
            for (int64_t t = 0; t < n_b; t++)
                y[r * ys + t] =
                    qx_row32(kind, nb, w + (size_t)r * wrb, xc + (size_t)t * xb, NULL, NULL);
        return;
    }
    /* IQ4_NL: dx[t][i] = dy; the others: (dy, 1) pairs, padded with zeros to 4 blocks */
    float dx[QX_MV_NT][2 * QX_MV_NB], sx[QX_MV_NT][QX_MV_NB];
    for (int64_t b0 = 0; b0 < n_b; b0 += QX_MV_NT) {
        const int64_t nt = KS_MIN((int64_t)QX_MV_NT, n_b - b0);
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *xt = xc + (size_t)(b0 + t) * xb;
            for (int64_t i = 0; i < nb; i++) {
                uint16_t h[2];
                memcpy(h, xt + (size_t)i * (q81 ? sizeof(blk_q8_1) : sizeof(blk_q8_0)), 4);
                if (kind == QX_IQ4_NL) {
                    dx[t][i] = qx_f16(h[0]);
                    continue;
                }
                dx[t][2 * i] = qx_f16(h[0]);
                dx[t][2 * i + 1] = 1.0f;
                sx[t][i] = q81 ? qx_f16(h[1]) : 0.0f;
            }
            for (int64_t i = nb; kind != QX_IQ4_NL && i % 4; i++)
                dx[t][2 * i] = dx[t][2 * i + 1] = 0.0f;
        }
        if (kind != QX_IQ4_NL) {
            qx_rows32_all(kind, nb, w, wrb, n_rows, xc + (size_t)b0 * xb, xb, nt,
                          (const float(*)[2 * QX_MV_NB]) dx, (const float(*)[QX_MV_NB])sx, y + b0,
                          ys);
            continue;
        }
        for (int64_t r = 0; r < n_rows; r++)
            for (int64_t t = 0; t < nt; t++)
                y[r * ys + b0 + t] = qx_row32(kind, nb, w + (size_t)r * wrb,
                                              xc + (size_t)(b0 + t) * xb, dx[t], NULL);
    }
}

#define QX_TYPE32(NAME, KIND)                                                                      \
    static float qx_dot_##NAME(int64_t n, const void *w, const void *x)                            \
    {                                                                                              \
        return qx_row32(KIND, n / QK4_0, w, x, NULL, NULL);                                        \
    }                                                                                              \
    static void qx_mv_##NAME(int64_t n, const void *w, size_t wrb, int64_t nr, const void *x,      \
                             size_t xb, int64_t n_b, float *y, int64_t ys)                         \
    {                                                                                              \
        qx_mv32(KIND, n, w, wrb, nr, x, xb, n_b, y, ys);                                           \
    }

QX_TYPE32(q4_1, QX_Q4_1)
QX_TYPE32(q5_0, QX_Q5_0)
QX_TYPE32(q5_1, QX_Q5_1)
QX_TYPE32(iq4_nl, QX_IQ4_NL)

/* ---- super-blocks of 256 with Q8_K activations ---- */

/* Per-16 scales as s16 for a 32-element group g (0..7): the 128-bit low half holds scale
 * 2g, the high half scale 2g+1 (the two halves of the group). half4 is the 128-bit half
 * of the 16 scales that holds g's (g < 4: scales 0..7), broadcast to both lanes. */
static inline __m256i qx_sc16_pair(__m256i half4, int g)
{
    static const int8_t sh[4][32] = {
        {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
         2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
        {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
         6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
        {8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,  8,  9,
         10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
        {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
         14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15}};
    return _mm256_shuffle_epi8(half4, qx_ld256(sh[g % 4]));
}

/* The two 128-bit halves of 16 s16 scales, each broadcast to both lanes. */
static inline void qx_sc16_halves(__m256i sc16, __m256i half[2])
{
    half[0] = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc16));
    half[1] = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc16, 1));
}

static float qx_dot_q2_k(int64_t n, const void *w, const void *x)
{
    const blk_q2_k *a = w;
    const blk_q8_k *b = x;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d), dmin = -b[i].d * qx_f16(a[i].dmin);
        __m128i ms = _mm_loadu_si128((const __m128i *)a[i].scales);
        __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(ms, _mm256_castsi256_si128(m4)));
        __m256i mn16 =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), _mm256_castsi256_si128(m4)));
        __m256i prod = _mm256_madd_epi16(mn16, qx_ld256(b[i].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        __m256i sumi = _mm256_setzero_si256(), half[2];
        qx_sc16_halves(sc16, half);
        for (int h = 0; h < 2; h++) {
            __m256i bits = qx_ld256(a[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
                __m256i y = qx_ld256(b[i].qs + 128 * h + 32 * j);
                sumi = _mm256_add_epi32(sumi, qx_dot4_scaled(q, y, qx_sc16_pair(half[h], j)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qx_hsum8(acc);
}

/* The 16 signed 6-bit scales of a Q3_K block as s16. */
static inline __m256i qx_q3k_scales(const uint8_t s12[12])
{
    uint32_t a0, a1, t;
    memcpy(&a0, s12, 4);
    memcpy(&a1, s12 + 4, 4);
    memcpy(&t, s12 + 8, 4);
    const uint32_t k3 = 0x03030303u, kf = 0x0f0f0f0fu;
    /* built in registers: a store and a wider reload would stall store forwarding */
    __m128i v = _mm_set_epi32((int)(((a1 >> 4) & kf) | (((t >> 6) & k3) << 4)),
                              (int)(((a0 >> 4) & kf) | (((t >> 4) & k3) << 4)),
                              (int)((a1 & kf) | (((t >> 2) & k3) << 4)),
                              (int)((a0 & kf) | ((t & k3) << 4)));
    __m128i s8 = _mm_sub_epi8(v, _mm_set1_epi8(32));
    return _mm256_cvtepi8_epi16(s8);
}

static float qx_dot_q3_k(int64_t n, const void *w, const void *x)
{
    const blk_q3_k *a = w;
    const blk_q8_k *b = x;
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d);
        __m256i half[2], sumi = _mm256_setzero_si256();
        qx_sc16_halves(qx_q3k_scales(a[i].scales), half);
        __m256i hm = qx_ld256(a[i].hmask);
        for (int h = 0; h < 2; h++) {
            __m256i bits = qx_ld256(a[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                int g = 4 * h + j;
                __m256i ql = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
                /* 4 where bit g of the mask is clear: bit g moved to bit 2, then andnot */
                __m256i hs = g < 2 ? _mm256_slli_epi16(hm, 2 - g) : _mm256_srli_epi16(hm, g - 2);
                __m256i qh = _mm256_andnot_si256(hs, four);
                __m256i y = qx_ld256(b[i].qs + 32 * g);
                __m256i p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(ql, y), _mm256_maddubs_epi16(qh, y));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, qx_sc16_pair(half[h], j)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qx_hsum8(acc);
}

/* The 8 scales and 8 mins of a Q4_K/Q5_K block, 6 bits each, as bytes of two u64 (kept in
 * registers: a store and a wider vector reload would stall store forwarding). */
static inline void qx_k4_scales(const uint8_t s12[12], uint64_t *sc, uint64_t *m)
{
    uint32_t w0, w1, w2;
    memcpy(&w0, s12, 4);
    memcpy(&w1, s12 + 4, 4);
    memcpy(&w2, s12 + 8, 4);
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
    uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
    *sc = (w0 & 0x3f3f3f3fu) | ((uint64_t)sc_hi << 32);
    *m = (w1 & 0x3f3f3f3fu) | ((uint64_t)m_hi << 32);
}

/* Byte k of a u64. */
static inline int qx_byte(uint64_t v, int k)
{
    return (int)((v >> (8 * k)) & 0xFF);
}

static float qx_dot_q5_k(int64_t n, const void *w, const void *x)
{
    const blk_q5_k *a = w;
    const blk_q8_k *b = x;
    const __m256i m4 = _mm256_set1_epi8(0xF), k16 = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d), dmin = -b[i].d * qx_f16(a[i].dmin);
        uint64_t sc, m;
        qx_k4_scales(a[i].scales, &sc, &m);
        int msum = 0;
        for (int j = 0; j < 8; j++)
            msum += qx_byte(m, j) * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        summs = fmaf(dmin, (float)msum, summs);
        __m256i hb = qx_ld256(a[i].qh), sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i bits = qx_ld256(a[i].qs + 32 * j);
            __m256i lo = _mm256_and_si256(bits, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * j), 4), k16);
            __m256i h1 =
                _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * j + 1), 4), k16);
            __m256i y0 = qx_ld256(b[i].qs + 64 * j), y1 = qx_ld256(b[i].qs + 64 * j + 32);
            __m256i p0 = qx_dot4_scaled(_mm256_or_si256(lo, h0), y0,
                                        _mm256_set1_epi16((short)qx_byte(sc, 2 * j)));
            __m256i p1 = qx_dot4_scaled(_mm256_or_si256(hi, h1), y1,
                                        _mm256_set1_epi16((short)qx_byte(sc, 2 * j + 1)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qx_hsum8(acc) + summs;
}

static float qx_dot_iq4_xs(int64_t n, const void *w, const void *x)
{
    const blk_iq4_xs *a = w;
    const blk_q8_k *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i sumi = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            __m256i q = qx_iq4_block(a[i].qs + 16 * ib), y = qx_ld256(b[i].qs + 32 * ib);
            __m256i sc = _mm256_set1_epi16((short)qt_iq4xs_scale(&a[i], ib));
            sumi = _mm256_add_epi32(
                sumi, qx_dot4_scaled(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q), sc));
        }
        acc =
            _mm256_fmadd_ps(_mm256_set1_ps(qx_f16(a[i].d) * b[i].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return qx_hsum8(acc);
}

static inline void qx_fill_common(qt_kernels *k)
{
    k->dot[QT_Q4_1] = qx_dot_q4_1;
    k->dot[QT_Q5_0] = qx_dot_q5_0;
    k->dot[QT_Q5_1] = qx_dot_q5_1;
    k->dot[QT_IQ4_NL] = qx_dot_iq4_nl;
    k->matvec[QT_Q4_1] = qx_mv_q4_1;
    k->matvec[QT_Q5_0] = qx_mv_q5_0;
    k->matvec[QT_Q5_1] = qx_mv_q5_1;
    k->matvec[QT_IQ4_NL] = qx_mv_iq4_nl;
    k->matvec_gemm[QT_IQ4_NL] = qx_gemm_iq4_nl;
    k->dot[QT_Q2_K] = qx_dot_q2_k;
    k->dot[QT_Q3_K] = qx_dot_q3_k;
    k->dot[QT_Q5_K] = qx_dot_q5_k;
    k->dot[QT_IQ4_XS] = qx_dot_iq4_xs;
}

#endif

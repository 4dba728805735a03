/* quant_x_avx512.c - the newer types' dot kernels for AVX-512 (F/BW/VL/VNNI).
 *
 * Only quant.c's dispatcher calls in, after checking the CPU. The 32-element block types use
 * quant_x86.h's kernels compiled here, where the 4-byte integer dots become vpdpbusd. The
 * 256-element types (Q2_K, Q3_K, Q5_K, IQ4_XS) get 512-bit kernels: each zmm holds two
 * 32-element groups, the integer lanes are folded back (lane k + lane k+8) to llama.cpp's 8
 * AVX2 lanes before the one f32 fma per super-block, so results are bit-identical to the
 * AVX2 build's (integer sums are exact in any order).
 */
#include "quant_x86.h"

static inline __m512i x5_bcast256(const void *p)
{
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* 16-bit shift counts: the low 256 bits by lo, the high 256 bits by hi. */
static inline __m512i x5_counts(int lo, int hi)
{
    return _mm512_inserti64x4(_mm512_set1_epi16((short)lo), _mm256_set1_epi16((short)hi), 1);
}

/* vpermw indices: s16 lanes 8q..8q+7 take element base+q (q = 0..3). For 16-element scales
 * of the groups g, g+1 in one zmm, base = 2g. */
static inline __m512i x5_idx_quad(int base)
{
    int16_t v[32];
    for (int k = 0; k < 32; k++)
        v[k] = (int16_t)(base + k / 8);
    return _mm512_loadu_si512(v);
}

/* vpermw indices: lanes 0..15 take element a, 16..31 element a+1 (per-32 scales). */
static inline __m512i x5_idx_pair(int a)
{
    int16_t v[32];
    for (int k = 0; k < 32; k++)
        v[k] = (int16_t)(a + k / 16);
    return _mm512_loadu_si512(v);
}

/* Folds 16 int lanes (two groups) into llama.cpp's 8 lanes and adds d * lanes to acc. */
static inline __m256 x5_fold_fma(__m512i sumi, float d, __m256 acc)
{
    __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
    return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s8), acc);
}

/* The constant vectors of the K-quant kernels, built once per call (not per super-block). */
typedef struct x5_consts {
    __m512i cq[4]; /* pair p: 2-bit shifts of groups 2p, 2p+1 within their qs half */
    __m512i ch[4]; /* pair p: bit shifts 2p, 2p+1 (Q3_K hmask, Q5_K qh) */
    __m512i iq[4]; /* pair p: 16-element scales 4p..4p+3 */
    __m512i ip[4]; /* pair p: 32-element scales 2p, 2p+1 */
} x5_consts;

static inline void x5_consts_init(x5_consts *c)
{
    for (int p = 0; p < 4; p++) {
        int j = (2 * p) % 4;
        c->cq[p] = x5_counts(2 * j, 2 * j + 2);
        c->ch[p] = x5_counts(2 * p, 2 * p + 1);
        c->iq[p] = x5_idx_quad(4 * p);
        c->ip[p] = x5_idx_pair(2 * p);
    }
}

static float x5_dot_q2_k(int64_t n, const void *w, const void *x)
{
    const blk_q2_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0xF);
    x5_consts c;
    x5_consts_init(&c);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d), dmin = -b[i].d * qx_f16(a[i].dmin);
        __m128i ms = _mm_loadu_si128((const __m128i *)a[i].scales);
        __m256i mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), m4));
        __m256i prod = _mm256_madd_epi16(mn16, qx_ld256(b[i].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(ms, m4)));
        __m512i q0 = x5_bcast256(a[i].qs), q1 = x5_bcast256(a[i].qs + 32);
        __m512i sumi = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) { /* groups 2p, 2p+1 */
            __m512i q = _mm512_and_si512(_mm512_srlv_epi16(p < 2 ? q0 : q1, c.cq[p]), m3);
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * p);
            sumi =
                _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q, y),
                                                         _mm512_permutexvar_epi16(c.iq[p], sc16)));
        }
        acc = x5_fold_fma(sumi, d, acc);
    }
    return qx_hsum8(acc);
}

static float x5_dot_q3_k(int64_t n, const void *w, const void *x)
{
    const blk_q3_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m3 = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    x5_consts c;
    x5_consts_init(&c);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d);
        __m512i sc16 = _mm512_castsi256_si512(qx_q3k_scales(a[i].scales));
        /* 4 where the high bit is clear: the quant is low - 4 */
        __m512i hneg = _mm512_andnot_si512(x5_bcast256(a[i].hmask), _mm512_set1_epi8(-1));
        __m512i q0 = x5_bcast256(a[i].qs), q1 = x5_bcast256(a[i].qs + 32);
        __m512i sumi = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) {
            __m512i ql = _mm512_and_si512(_mm512_srlv_epi16(p < 2 ? q0 : q1, c.cq[p]), m3);
            __m512i qh =
                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hneg, c.ch[p]), one), 2);
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * p);
            __m512i pr = _mm512_sub_epi16(_mm512_maddubs_epi16(ql, y), _mm512_maddubs_epi16(qh, y));
            sumi = _mm512_add_epi32(sumi,
                                    _mm512_madd_epi16(pr, _mm512_permutexvar_epi16(c.iq[p], sc16)));
        }
        acc = x5_fold_fma(sumi, d, acc);
    }
    return qx_hsum8(acc);
}

static float x5_dot_q5_k(int64_t n, const void *w, const void *x)
{
    const blk_q5_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m4 = _mm512_set1_epi8(0xF), one = _mm512_set1_epi8(1);
    const __m512i c04 = x5_counts(0, 4);
    x5_consts c;
    x5_consts_init(&c);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = b[i].d * qx_f16(a[i].d), dmin = -b[i].d * qx_f16(a[i].dmin);
        uint64_t sc, m;
        qx_k4_scales(a[i].scales, &sc, &m);
        __m128i mv = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m));
        __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)b[i].bsums),
                                    _mm_loadu_si128((const __m128i *)b[i].bsums + 1));
        __m128i pm = _mm_madd_epi16(mv, bs);
        pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4E));
        pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0xB1));
        summs = fmaf(dmin, (float)_mm_cvtsi128_si32(pm), summs);
        __m512i sc16 = _mm512_castsi256_si512(
            _mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc))));
        __m512i qh = x5_bcast256(a[i].qh), sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) { /* groups 2j (low nibbles), 2j+1 (high) */
            __m512i lo =
                _mm512_and_si512(_mm512_srlv_epi16(x5_bcast256(a[i].qs + 32 * j), c04), m4);
            __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, c.ch[j]), one);
            __m512i q = _mm512_or_si512(lo, _mm512_slli_epi16(hb, 4));
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * j);
            sumi =
                _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q, y),
                                                         _mm512_permutexvar_epi16(c.ip[j], sc16)));
        }
        acc = x5_fold_fma(sumi, d, acc);
    }
    return qx_hsum8(acc) + summs;
}

/* The 8 signed 6-bit scales of an IQ4_XS block as s16 in the low 128 bits, in vector
 * registers (a scalar build stored and reloaded as a vector would stall store forwarding). */
static inline __m512i x5_iq4xs_scales(const blk_iq4_xs *b)
{
    uint32_t lo4;
    memcpy(&lo4, b->scales_l, 4);
    __m128i l = _mm_cvtsi32_si128((int)lo4);
    l = _mm_and_si128(_mm_unpacklo_epi8(l, _mm_srli_epi16(l, 4)), _mm_set1_epi8(0xF));
    __m128i h = _mm_srlv_epi16(_mm_set1_epi16((short)b->scales_h),
                               _mm_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14));
    h = _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(3)), 4);
    __m128i v = _mm_sub_epi16(_mm_or_si128(_mm_cvtepu8_epi16(l), h), _mm_set1_epi16(32));
    return _mm512_castsi128_si512(v);
}

static float x5_dot_iq4_xs(int64_t n, const void *w, const void *x)
{
    const blk_iq4_xs *a = w;
    const blk_q8_k *b = x;
    const __m512i m4 = _mm512_set1_epi8(0xF), zero = _mm512_setzero_si512();
    const __m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qt_iq4_values));
    const __m256i c256 = _mm256_set_m128i(_mm_set1_epi16(4), _mm_set1_epi16(0));
    const __m512i cnt = _mm512_inserti64x4(_mm512_castsi256_si512(c256), c256, 1); /* 0,4,0,4 */
    x5_consts c;
    x5_consts_init(&c);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i sc16 = x5_iq4xs_scales(&a[i]), sumi = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) { /* sub-blocks 2p, 2p+1: 128-bit lanes lo, hi, lo, hi */
            __m512i t = x5_bcast256(a[i].qs + 32 * p);
            t = _mm512_shuffle_i64x2(t, t, 0x50);
            __m512i wv = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srlv_epi16(t, cnt), m4));
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * p);
            __m512i sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(wv), zero, y);
            __m512i sc = _mm512_permutexvar_epi16(c.ip[p], sc16);
            sumi = _mm512_add_epi32(
                sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(wv), sy), sc));
        }
        acc = x5_fold_fma(sumi, qx_f16(a[i].d) * b[i].d, acc);
    }
    return qx_hsum8(acc);
}

void qt_kernels_fill_x_avx512(qt_kernels *k)
{
    qx_fill_common(k);
    k->dot[QT_Q2_K] = x5_dot_q2_k;
    k->dot[QT_Q3_K] = x5_dot_q3_k;
    k->dot[QT_Q5_K] = x5_dot_q5_k;
    k->dot[QT_IQ4_XS] = x5_dot_iq4_xs;
}

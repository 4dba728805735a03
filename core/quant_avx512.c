/* quant_avx512.c - AVX-512 (F/BW/VL/DQ/VNNI/BF16) dot kernels and f16 row conversion.
 *
 * Compiled with AVX-512 flags; only quant.c's dispatcher calls in, after checking the CPU.
 * Integer dots use vpdpbusd (u8 x s8): Q8_0 with the abs/sign trick, Q4_0/Q4_K/Q6_K with
 * unsigned quants and the offset removed through the activation sums. Per-block integer
 * sums are exact; scaling and accumulation are in f32 like llama.cpp.
 */
#include <immintrin.h>
#include <string.h>

#include "quant_impl.h"

static inline float hsum512(__m512 v)
{
    return _mm512_reduce_add_ps(v);
}

static inline float f16s(uint16_t h)
{
    return _cvtsh_ss(h);
}

static float dot_f32(int64_t n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = (n - i) >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static inline __m512 ld_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static float dot_f16(int64_t n, const void *w, const void *x)
{
    const uint16_t *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(ld_f16(a + i), ld_f16(b + i), s0);
        s1 = _mm512_fmadd_ps(ld_f16(a + i + 16), ld_f16(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(ld_f16(a + i + 32), ld_f16(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(ld_f16(a + i + 48), ld_f16(b + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = (n - i) >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 va = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a + i));
        __m512 vb = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, b + i));
        s0 = _mm512_fmadd_ps(va, vb, s0);
    }
    return hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static inline __m512bh ld_bf16(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512(p);
}

static float dot_bf16(int64_t n, const void *w, const void *x)
{
    const uint16_t *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm512_dpbf16_ps(s0, ld_bf16(a + i), ld_bf16(b + i));
        s1 = _mm512_dpbf16_ps(s1, ld_bf16(a + i + 32), ld_bf16(b + i + 32));
        s2 = _mm512_dpbf16_ps(s2, ld_bf16(a + i + 64), ld_bf16(b + i + 64));
        s3 = _mm512_dpbf16_ps(s3, ld_bf16(a + i + 96), ld_bf16(b + i + 96));
    }
    for (; i + 32 <= n; i += 32) s0 = _mm512_dpbf16_ps(s0, ld_bf16(a + i), ld_bf16(b + i));
    float s = hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) {
        uint32_t ua = (uint32_t)a[i] << 16, ub = (uint32_t)b[i] << 16;
        float fa, fb;
        memcpy(&fa, &ua, 4);
        memcpy(&fb, &ub, 4);
        s += fa * fb;
    }
    return s;
}

static inline __m512i ld2x256(const void *p0, const void *p1)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)p0);
    __m256i hi = _mm256_loadu_si256((const __m256i *)p1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static inline __m512 scale2(float d0, float d1)
{
    return _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
}

/* Signed i8 x i8 dot via u8 x s8: |w| * (y with w's sign). 16 lanes of 4-element sums. */
static inline __m512i dot_i8(__m512i w, __m512i y)
{
    __m512i sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(w), _mm512_setzero_si512(), y);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sy);
}

static float dot_q8_0(int64_t n, const void *w, const void *x)
{
    const blk_q8_0 *a = w, *b = x;
    int64_t nb = n / QK8_0, i = 0;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (; i + 4 <= nb; i += 4) {
        __m512i s0 = dot_i8(ld2x256(a[i].qs, a[i + 1].qs), ld2x256(b[i].qs, b[i + 1].qs));
        __m512i s1 = dot_i8(ld2x256(a[i + 2].qs, a[i + 3].qs), ld2x256(b[i + 2].qs, b[i + 3].qs));
        __m512 d0 = scale2(f16s(a[i].d) * f16s(b[i].d), f16s(a[i + 1].d) * f16s(b[i + 1].d));
        __m512 d1 = scale2(f16s(a[i + 2].d) * f16s(b[i + 2].d),
                           f16s(a[i + 3].d) * f16s(b[i + 3].d));
        acc0 = _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(s0), acc0);
        acc1 = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(s1), acc1);
    }
    float s = hsum512(_mm512_add_ps(acc0, acc1));
    for (; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += a[i].qs[j] * b[i].qs[j];
        s += (float)isum * (f16s(a[i].d) * f16s(b[i].d));
    }
    return s;
}

/* Two Q4_0 blocks as 64 unsigned nibbles in element order. */
static inline __m512i q4_0_pair(const blk_q4_0 *a)
{
    __m128i t0 = _mm_loadu_si128((const __m128i *)a[0].qs);
    __m128i t1 = _mm_loadu_si128((const __m128i *)a[1].qs);
    __m512i v = _mm512_castsi128_si512(t0);
    v = _mm512_inserti32x4(v, t0, 1);
    v = _mm512_inserti32x4(v, t1, 2);
    v = _mm512_inserti32x4(v, t1, 3);
    v = _mm512_mask_srli_epi16(v, 0xFF00FF00u, v, 4);
    return _mm512_and_si512(v, _mm512_set1_epi8(0xF));
}

static float dot_q4_0(int64_t n, const void *w, const void *x)
{
    const blk_q4_0 *a = w;
    const blk_q8_0 *b = x;
    int64_t nb = n / QK4_0, i = 0;
    const __m512i eight = _mm512_set1_epi8(8);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (; i + 4 <= nb; i += 4) {
        __m512i y0 = ld2x256(b[i].qs, b[i + 1].qs), y1 = ld2x256(b[i + 2].qs, b[i + 3].qs);
        __m512i z = _mm512_setzero_si512();
        __m512i s0 = _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q4_0_pair(a + i), y0),
                                      _mm512_dpbusd_epi32(z, eight, y0));
        __m512i s1 = _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q4_0_pair(a + i + 2), y1),
                                      _mm512_dpbusd_epi32(z, eight, y1));
        __m512 d0 = scale2(f16s(a[i].d) * f16s(b[i].d), f16s(a[i + 1].d) * f16s(b[i + 1].d));
        __m512 d1 = scale2(f16s(a[i + 2].d) * f16s(b[i + 2].d),
                           f16s(a[i + 3].d) * f16s(b[i + 3].d));
        acc0 = _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(s0), acc0);
        acc1 = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(s1), acc1);
    }
    float s = hsum512(_mm512_add_ps(acc0, acc1));
    for (; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++)
            isum += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j] +
                    ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + 16];
        s += (float)isum * (f16s(a[i].d) * f16s(b[i].d));
    }
    return s;
}

/* Q4_K scales/mins as two 8-byte words each: sc[0..7] and m[0..7]. */
static inline void q4k_unpack(const uint8_t *s12, uint64_t *sc, uint64_t *m)
{
    uint32_t w0, w1, w2;
    memcpy(&w0, s12, 4);
    memcpy(&w1, s12 + 4, 4);
    memcpy(&w2, s12 + 8, 4);
    uint32_t sc_lo = w0 & 0x3f3f3f3fu, m_lo = w1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
    uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
    *sc = sc_lo | ((uint64_t)sc_hi << 32);
    *m = m_lo | ((uint64_t)m_hi << 32);
}

static float dot_q4_k(int64_t n, const void *w, const void *x)
{
    const blk_q4_k *a = w;
    const blk_q8_k *b = x;
    const __m512i mask4 = _mm512_set1_epi8(0xF);
    __m512 acc = _mm512_setzero_ps();
    float accm = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint64_t scw, mw;
        q4k_unpack(a[i].scales, &scw, &mw);
        __m512i sc32 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scw));
        __m512i sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * j));
            __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q),
                                            _mm256_srli_epi16(q, 4), 1);
            qq = _mm512_and_si512(qq, mask4);
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * j);
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qq, y);
            __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(2 * j),
                                             _mm256_set1_epi32(2 * j + 1), 1);
            __m512i scv = _mm512_permutexvar_epi32(idx, sc32);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, scv));
        }
        int summ = 0;
        for (int j = 0; j < 8; j++)
            summ += (int)((mw >> (8 * j)) & 0xFF) * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        float d = b[i].d * f16s(a[i].d), dmin = b[i].d * f16s(a[i].dmin);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
        accm += dmin * (float)summ;
    }
    return hsum512(acc) - accm;
}

static float dot_q6_k(int64_t n, const void *w, const void *x)
{
    const blk_q6_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3);
    /* byte i of shuffle k picks scale 4k + i/4 */
    const __m128i sh[4] = {
        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
        _mm_setr_epi8(8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11),
        _mm_setr_epi8(12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15)};
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m128i sc = _mm_loadu_si128((const __m128i *)a[i].scales);
        __m256i bs = _mm256_loadu_si256((const __m256i *)b[i].bsums);
        __m256i corr = _mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc)); /* sum sc*bsum */
        __m512i sumi = _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5));
        sumi = _mm512_sub_epi32(_mm512_setzero_si512(), sumi);
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
            __m256i qh = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            __m512i qha = _mm512_inserti64x4(_mm512_castsi256_si512(qh),
                                             _mm256_srli_epi16(qh, 2), 1);
            __m512i qhb = _mm512_srli_epi16(qha, 4);
            __m512i q0 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qha, m2), 4));
            __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qhb, m2), 4));
            __m512i y0 = _mm512_loadu_si512(b[i].qs + 128 * h);
            __m512i y1 = _mm512_loadu_si512(b[i].qs + 128 * h + 64);
            __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, y0);
            __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q1, y1);
            __m512i s0 = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, sh[2 * h]));
            __m512i s1 = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, sh[2 * h + 1]));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p0, s0));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p1, s1));
        }
        float d = b[i].d * f16s(a[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    return hsum512(acc);
}

static void f32_to_f16(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

static void f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld_f16(src + i));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

void qt_kernels_fill_avx512(qt_kernels *k)
{
    k->dot[QT_F32] = dot_f32;
    k->dot[QT_F16] = dot_f16;
    k->dot[QT_BF16] = dot_bf16;
    k->dot[QT_Q8_0] = dot_q8_0;
    k->dot[QT_Q4_0] = dot_q4_0;
    k->dot[QT_Q4_K] = dot_q4_k;
    k->dot[QT_Q6_K] = dot_q6_k;
    k->f32_to_f16 = f32_to_f16;
    k->f16_to_f32 = f16_to_f32;
}

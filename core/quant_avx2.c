/* quant_avx2.c - AVX2/FMA/F16C dot kernels, Q8_0 activation quantisation, f16 rows.
 *
 * Compiled with -mavx2 -mfma -mf16c; only quant.c's dispatcher calls in, after checking the
 * CPU. Integer dots use maddubs (u8 x s8 -> s16 pairs, no saturation for these ranges) then
 * madd to s32; per-block sums are exact and scaled in f32 like llama.cpp. The Q8_0
 * quantiser is llama.cpp's x86 one (127/amax, round half to even) and is bit-identical to
 * the scalar one in quant.c.
 */
#include <immintrin.h>
#include <string.h>

#include "quant_impl.h"

static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16s(uint16_t h)
{
    return _cvtsh_ss(h);
}

static float dot_f32(int64_t n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static inline __m256 ld_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 ld_bf16(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline float bf16s(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Dot of 16-bit float rows; LD converts 8 elements, SC one. */
#define DOT16(name, LD, SC)                                                                        \
    static float name(int64_t n, const void *w, const void *x)                                     \
    {                                                                                              \
        const uint16_t *a = w, *b = x;                                                             \
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                \
        int64_t i = 0;                                                                             \
        for (; i + 32 <= n; i += 32) {                                                             \
            s0 = _mm256_fmadd_ps(LD(a + i), LD(b + i), s0);                                        \
            s1 = _mm256_fmadd_ps(LD(a + i + 8), LD(b + i + 8), s1);                                \
            s2 = _mm256_fmadd_ps(LD(a + i + 16), LD(b + i + 16), s2);                              \
            s3 = _mm256_fmadd_ps(LD(a + i + 24), LD(b + i + 24), s3);                              \
        }                                                                                          \
        for (; i + 8 <= n; i += 8)                                                                 \
            s0 = _mm256_fmadd_ps(LD(a + i), LD(b + i), s0);                                        \
        float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));            \
        for (; i < n; i++)                                                                         \
            s += SC(a[i]) * SC(b[i]);                                                              \
        return s;                                                                                  \
    }

DOT16(dot_f16, ld_f16, f16s)
DOT16(dot_bf16, ld_bf16, bf16s)

/* 8 lanes of 4-element sums of signed w * signed y (|w| * (y with w's sign)). */
static inline __m256i dot_i8(__m256i w, __m256i y)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static float dot_q8_0(int64_t n, const void *w, const void *x)
{
    const blk_q8_0 *a = w, *b = x;
    int64_t nb = n / QK8_0, i = 0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (; i + 2 <= nb; i += 2) {
        __m256i s0 = dot_i8(_mm256_loadu_si256((const __m256i *)a[i].qs),
                            _mm256_loadu_si256((const __m256i *)b[i].qs));
        __m256i s1 = dot_i8(_mm256_loadu_si256((const __m256i *)a[i + 1].qs),
                            _mm256_loadu_si256((const __m256i *)b[i + 1].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i].d) * f16s(b[i].d)), _mm256_cvtepi32_ps(s0),
                               acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i + 1].d) * f16s(b[i + 1].d)),
                               _mm256_cvtepi32_ps(s1), acc1);
    }
    for (; i < nb; i++) {
        __m256i s0 = dot_i8(_mm256_loadu_si256((const __m256i *)a[i].qs),
                            _mm256_loadu_si256((const __m256i *)b[i].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i].d) * f16s(b[i].d)), _mm256_cvtepi32_ps(s0),
                               acc0);
    }
    return hsum256(_mm256_add_ps(acc0, acc1));
}

/* One Q4_0 block as 32 signed values q-8 in element order. */
static inline __m256i q4_0_block(const blk_q4_0 *a)
{
    __m128i t = _mm_loadu_si128((const __m128i *)a->qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    v = _mm256_and_si256(v, _mm256_set1_epi8(0xF));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

static float dot_q4_0(int64_t n, const void *w, const void *x)
{
    const blk_q4_0 *a = w;
    const blk_q8_0 *b = x;
    int64_t nb = n / QK4_0, i = 0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (; i + 2 <= nb; i += 2) {
        __m256i s0 = dot_i8(q4_0_block(a + i), _mm256_loadu_si256((const __m256i *)b[i].qs));
        __m256i s1 =
            dot_i8(q4_0_block(a + i + 1), _mm256_loadu_si256((const __m256i *)b[i + 1].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i].d) * f16s(b[i].d)), _mm256_cvtepi32_ps(s0),
                               acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i + 1].d) * f16s(b[i + 1].d)),
                               _mm256_cvtepi32_ps(s1), acc1);
    }
    for (; i < nb; i++) {
        __m256i s0 = dot_i8(q4_0_block(a + i), _mm256_loadu_si256((const __m256i *)b[i].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(a[i].d) * f16s(b[i].d)), _mm256_cvtepi32_ps(s0),
                               acc0);
    }
    return hsum256(_mm256_add_ps(acc0, acc1));
}

/* unsigned q (bytes) x signed y, pairs summed to s16, then times a per-lane s16 scale. */
static inline __m256i udot_scaled(__m256i q, __m256i y, __m256i scale16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scale16);
}

static float dot_q4_k(int64_t n, const void *w, const void *x)
{
    const blk_q4_k *a = w;
    const blk_q8_k *b = x;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++)
            qt_q4k_scale_min(j, a[i].scales, &sc[j], &m[j]);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * j));
            __m256i y0 = _mm256_loadu_si256((const __m256i *)(b[i].qs + 64 * j));
            __m256i y1 = _mm256_loadu_si256((const __m256i *)(b[i].qs + 64 * j + 32));
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            sumi = _mm256_add_epi32(sumi, udot_scaled(lo, y0, _mm256_set1_epi16(sc[2 * j])));
            sumi = _mm256_add_epi32(sumi, udot_scaled(hi, y1, _mm256_set1_epi16(sc[2 * j + 1])));
        }
        int summ = 0;
        for (int j = 0; j < 8; j++)
            summ += m[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        float d = b[i].d * f16s(a[i].d), dmin = b[i].d * f16s(a[i].dmin);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        accm += dmin * (float)summ;
    }
    return hsum256(acc) - accm;
}

static float dot_q6_k(int64_t n, const void *w, const void *x)
{
    const blk_q6_k *a = w;
    const blk_q8_k *b = x;
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const int8_t *sc = a[i].scales;
        __m128i sc8 = _mm_loadu_si128((const __m128i *)sc);
        __m256i bs = _mm256_loadu_si256((const __m256i *)b[i].bsums);
        __m256i corr = _mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc8)); /* sum sc*bsum */
        __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
        for (int h = 0; h < 2; h++) {
            __m256i qla = _mm256_loadu_si256((const __m256i *)(a[i].ql + 64 * h));
            __m256i qlb = _mm256_loadu_si256((const __m256i *)(a[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            __m256i q[4];
            /* 2 high bits of quant 32k+l sit at bits 2k of qh[l] */
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4);
            __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4);
            __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4);
            q[0] = _mm256_or_si256(_mm256_and_si256(qla, m4), h0);
            q[1] = _mm256_or_si256(_mm256_and_si256(qlb, m4), h1);
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qla, 4), m4), h2);
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qlb, 4), m4), h3);
            for (int k = 0; k < 4; k++) {
                int g = 8 * h + 2 * k;
                __m256i y = _mm256_loadu_si256((const __m256i *)(b[i].qs + 128 * h + 32 * k));
                __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                sumi = _mm256_add_epi32(sumi, udot_scaled(q[k], y, s16));
            }
        }
        float d = b[i].d * f16s(a[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

/* llama.cpp's x86 quantize_row_q8_0. */
static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    blk_q8_0 *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __m256 v[4];
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        y[i].d = (uint16_t)_cvtss_sh(amax / 127.f, 0);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p);
    }
}

static void f32_to_f16(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    for (; i < n; i++)
        dst[i] = (uint16_t)_cvtss_sh(src[i], 0);
}

static void f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, ld_f16(src + i));
    for (; i < n; i++)
        dst[i] = f16s(src[i]);
}

void qt_kernels_fill_avx2(qt_kernels *k)
{
    k->dot[QT_F32] = dot_f32;
    k->dot[QT_F16] = dot_f16;
    k->dot[QT_BF16] = dot_bf16;
    k->dot[QT_Q8_0] = dot_q8_0;
    k->dot[QT_Q4_0] = dot_q4_0;
    k->dot[QT_Q4_K] = dot_q4_k;
    k->dot[QT_Q6_K] = dot_q6_k;
    k->quantize_q8_0 = quantize_q8_0;
    k->f32_to_f16 = f32_to_f16;
    k->f16_to_f32 = f16_to_f32;
}

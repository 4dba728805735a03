/* vmath_avx512.c - vm_exp_sum and vm_swiglu 16 lanes at a time, bit-identical to vmath.c.
 *
 * The same exp scheme as vm_expf_inline (vmath.c): each step is one exactly rounded fma, mul
 * or add per lane, so a lane gets the scalar code's bits. Lanes the fast form does not cover
 * (NaN, or 126 < |n| <= 192: a subnormal or overflowing 2^n) send their group of 16 to the
 * scalar code. The softmax sum folds each group of 16 by halving (8, 4, then pairs) as the
 * scalar code does. Compiled with AVX-512 flags; vmath.c calls in only when the CPU has
 * AVX-512F and DQ.
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "vmath_avx512.h"

/* exp(x) for 16 lanes; false when a lane needs the scalar path. */
static inline bool exp16(__m512 x, __m512 *out)
{
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    /* |n| <= 126 (false for NaN): 2^n is a normal float; |n| > 192: 0 or infinity, as the
     * scalar code returns (masked attention scores are -inf: those lanes stay on this path) */
    const __m512 an = _mm512_abs_ps(n);
    const __mmask16 ok = _mm512_cmp_ps_mask(an, _mm512_set1_ps(126.0f), _CMP_LE_OQ);
    const __mmask16 big = _mm512_cmp_ps_mask(an, _mm512_set1_ps(192.0f), _CMP_GT_OQ);
    if ((__mmask16)(ok | big) != 0xFFFF) return false;
    const __mmask16 pos = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 nn = _mm512_xor_ps(n, _mm512_set1_ps(-0.0f)); /* -n, as the scalar code */
    const __m512 b = _mm512_fmadd_ps(nn, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                     _mm512_fmadd_ps(nn, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 hi = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f)));
    const __m512 j = _mm512_fmadd_ps(
        hi, u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 v = _mm512_mul_ps(j, _mm512_castsi512_ps(e));
    v = _mm512_mask_mov_ps(v, big, _mm512_setzero_ps());
    *out = _mm512_mask_mov_ps(v, (__mmask16)(big & pos), _mm512_set1_ps(INFINITY));
    return true;
}

void vm_exp_sum_avx512(float *y, const float *x, int32_t n, float max, double *sum, int32_t *pos)
{
    const __m512 vmax = _mm512_set1_ps(max);
    int32_t i0 = *pos;
    for (; i0 < n; i0 += 16) {
        const int32_t m = n - i0 < 16 ? n - i0 : 16;
        const __mmask16 k = (__mmask16)((1u << m) - 1);
        __m512 v;
        if (!exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i0), vmax), &v)) break;
        v = _mm512_maskz_mov_ps(k, v); /* lanes past n count as 0, as in the scalar code */
        _mm512_mask_storeu_ps(y + i0, k, v);
        __m256 h8 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
        __m128 h4 = _mm_add_ps(_mm256_extractf128_ps(h8, 1), _mm256_castps256_ps128(h8));
        __m128 ab = _mm_add_ps(h4, _mm_movehl_ps(h4, h4)); /* h4[0]+h4[2], h4[1]+h4[3] */
        *sum += (double)_mm_cvtss_f32(_mm_add_ss(ab, _mm_shuffle_ps(ab, ab, 1)));
    }
    *pos = i0 < n ? i0 : n;
}

void vm_swiglu_avx512(float *g, const float *u, int64_t n, int64_t *pos)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = *pos;
    for (; i < n; i += 16) {
        const int64_t m = n - i < 16 ? n - i : 16;
        const __mmask16 k = (__mmask16)((1u << m) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(k, g + i);
        __m512 e;
        if (!exp16(_mm512_xor_ps(x, _mm512_set1_ps(-0.0f)), &e)) break;
        __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, u + i)));
    }
    *pos = i < n ? i : n;
}

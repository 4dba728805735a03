/* attn_tiles.c - the machinery under the attention core: per-thread scratch, the q·K and p·V
 * kernels (portable scalar, and AVX-512 picked at run time), the KV types' row dequantisers
 * (AVX-512 for f16, bf16 and every block type; the scalar ones of quant.c otherwise), and the
 * walk over a list of spans in tiles of ATTN_TILE keys (converted to f32 once per call, tiles that
 * no query of the chunk can see skipped unread). It knows no softmax: attention.c and
 * attention_llama.c drive it.
 */
#include "attn_tiles.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/quant.h"

/* ---------------------------------------------------------------------------------------- */
/* Kernels                                                                                   */

static void scores_scalar(const float *q, const float *k, size_t k_stride, int32_t n, int32_t hd,
                          float scale, float *s)
{
    for (int32_t j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int32_t d = 0;
        for (; d + 4 <= hd; d += 4) {
            a0 += q[d] * kj[d];
            a1 += q[d + 1] * kj[d + 1];
            a2 += q[d + 2] * kj[d + 2];
            a3 += q[d + 3] * kj[d + 3];
        }
        for (; d < hd; d++)
            a0 += q[d] * kj[d];
        s[j] = ((a0 + a1) + (a2 + a3)) * scale;
    }
}

static void accum_scalar(float *acc, const float *p, const float *v, size_t v_stride, int32_t n,
                         int32_t hd)
{
    for (int32_t j = 0; j < n; j++) {
        if (p[j] == 0.0f) continue;
        const float *vj = v + (size_t)j * v_stride;
        for (int32_t d = 0; d < hd; d++)
            acc[d] += p[j] * vj[d];
    }
}

#ifdef ATTN_X86
ATTN_AVX512 static void scores_avx512(const float *q, const float *k, size_t k_stride, int32_t n,
                                      int32_t hd, float scale, float *s)
{
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (size_t)j * k_stride;
        const float *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t d = 0; d < hd; d += 16) {
            __mmask16 mk = tail_mask(hd - d);
            __m512 qv = _mm512_maskz_loadu_ps(mk, q + d);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k0 + d), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k1 + d), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k2 + d), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k3 + d), a3);
        }
        s[j] = _mm512_reduce_add_ps(a0) * scale;
        s[j + 1] = _mm512_reduce_add_ps(a1) * scale;
        s[j + 2] = _mm512_reduce_add_ps(a2) * scale;
        s[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        __m512 a = _mm512_setzero_ps();
        for (int32_t d = 0; d < hd; d += 16) {
            __mmask16 mk = tail_mask(hd - d);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + d), _mm512_maskz_loadu_ps(mk, kj + d),
                                a);
        }
        s[j] = _mm512_reduce_add_ps(a) * scale;
    }
}

ATTN_AVX512 static void accum_avx512(float *acc, const float *p, const float *v, size_t v_stride,
                                     int32_t n, int32_t hd)
{
    int32_t d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m512 a0 = _mm512_loadu_ps(acc + d), a1 = _mm512_loadu_ps(acc + d + 16);
        __m512 a2 = _mm512_loadu_ps(acc + d + 32), a3 = _mm512_loadu_ps(acc + d + 48);
        for (int32_t j = 0; j < n; j++) {
            const float *vj = v + (size_t)j * v_stride + d;
            __m512 pj = _mm512_set1_ps(p[j]);
            a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
            a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
            a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
            a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
        }
        _mm512_storeu_ps(acc + d, a0);
        _mm512_storeu_ps(acc + d + 16, a1);
        _mm512_storeu_ps(acc + d + 32, a2);
        _mm512_storeu_ps(acc + d + 48, a3);
    }
    for (; d < hd; d += 16) {
        __mmask16 mk = tail_mask(hd - d);
        __m512 a = _mm512_maskz_loadu_ps(mk, acc + d);
        for (int32_t j = 0; j < n; j++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]),
                                _mm512_maskz_loadu_ps(mk, v + (size_t)j * v_stride + d), a);
        _mm512_mask_storeu_ps(acc + d, mk, a);
    }
}

static bool cpu_has_avx512(void)
{
    return ks_cpu_has(KS_CPU_AVX512F) && ks_cpu_has(KS_CPU_AVX512BW) &&
           ks_cpu_has(KS_CPU_AVX512VL) && ks_cpu_has(KS_CPU_F16C) && ks_cpu_has(KS_CPU_FMA);
}
#endif

#ifdef ATTN_X86
/* q8_0 blocks to f32: 32 int8 times the block's f16 scale. */
ATTN_AVX512 static void dequant_q8_0_avx512(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, src += 34, dst += 32) {
        uint16_t h;
        memcpy(&h, src, 2);
        __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
        __m128i lo = _mm_loadu_si128((const __m128i *)(src + 2));
        __m128i hi = _mm_loadu_si128((const __m128i *)(src + 18));
        _mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))));
    }
}

/* q4_0 blocks to f32: (nibble - 8) times the scale; low nibbles are elements 0..15. */
ATTN_AVX512 static void dequant_q4_0_avx512(const uint8_t *src, float *dst, int64_t nb)
{
    const __m512i eight = _mm512_set1_epi32(8), mask = _mm512_set1_epi32(0xF);
    for (int64_t b = 0; b < nb; b++, src += 18, dst += 32) {
        uint16_t h;
        memcpy(&h, src, 2);
        __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + 2)));
        __m512i lo = _mm512_sub_epi32(_mm512_and_si512(q, mask), eight);
        __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight);
        _mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)));
    }
}

/* The 16 nibbles of a block's qs as int32: low nibbles (elements 0..15) and high (16..31). */
ATTN_AVX512 static inline void nibbles16(const uint8_t *qs, __m512i *lo, __m512i *hi)
{
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
    *lo = _mm512_and_si512(q, _mm512_set1_epi32(0xF));
    *hi = _mm512_srli_epi32(q, 4);
}

ATTN_AVX512 static inline float f16_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* q4_1 (d, m, qs[16]): d * q + m. */
ATTN_AVX512 static void dequant_q4_1_avx512(const uint8_t *src, float *dst, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, src += 20, dst += 32) {
        __m512 d = _mm512_set1_ps(f16_at(src)), m = _mm512_set1_ps(f16_at(src + 2));
        __m512i lo, hi;
        nibbles16(src + 4, &lo, &hi);
        _mm512_storeu_ps(dst, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lo), m));
        _mm512_storeu_ps(dst + 16, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(hi), m));
    }
}

/* q5_0 / q5_1 (d, [m], qh u32, qs[16]): bit j of qh is bit 4 of element j. */
ATTN_AVX512 static void dequant_q5_avx512(const uint8_t *src, float *dst, int64_t nb, bool has_m)
{
    const __m512i sh_lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sh_hi = _mm512_add_epi32(sh_lo, _mm512_set1_epi32(16)),
                  one = _mm512_set1_epi32(1);
    const size_t bytes = has_m ? 24 : 22, qoff = has_m ? 8 : 6;
    for (int64_t b = 0; b < nb; b++, src += bytes, dst += 32) {
        __m512 d = _mm512_set1_ps(f16_at(src));
        __m512 m = has_m ? _mm512_set1_ps(f16_at(src + 2)) : _mm512_set1_ps(-16.0f * f16_at(src));
        uint32_t qh;
        memcpy(&qh, src + qoff - 4, 4);
        __m512i h = _mm512_set1_epi32((int32_t)qh), lo, hi;
        nibbles16(src + qoff, &lo, &hi);
        lo = _mm512_or_si512(
            lo, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(h, sh_lo), one), 4));
        hi = _mm512_or_si512(
            hi, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(h, sh_hi), one), 4));
        _mm512_storeu_ps(dst, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lo), m));
        _mm512_storeu_ps(dst + 16, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(hi), m));
    }
}

/* iq4_nl (d, qs[16]): d * levels[q], the levels looked up with one permute. */
ATTN_AVX512 static void dequant_iq4_nl_avx512(const uint8_t *src, float *dst, int64_t nb)
{
    const __m512 lv =
        _mm512_setr_ps(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    for (int64_t b = 0; b < nb; b++, src += 18, dst += 32) {
        __m512 d = _mm512_set1_ps(f16_at(src));
        __m512i lo, hi;
        nibbles16(src + 2, &lo, &hi);
        _mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_permutexvar_ps(lo, lv)));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_permutexvar_ps(hi, lv)));
    }
}

/* bf16 to f32: the upper half of the float's bits. */
ATTN_AVX512 static void bf16_to_f32_avx512(const uint8_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + 2 * i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = ks_bf16_to_f32(h);
    }
}
#endif

#ifdef ATTN_X86
/* Rows j0..j0+n of a sealed KIVI K group (kivi.c's layout) to f32: per 16 channels, their
 * scale and minimum once, then per row 16 codes spread to lanes with variable shifts. */
ATTN_AVX512 static void kivi_k_avx512(int32_t bits, const uint8_t *g, int32_t hd, int32_t j0,
                                      int32_t n, float *dst)
{
    size_t rb = (size_t)hd * (size_t)bits / 8;
    const uint8_t *codes = g + (size_t)hd * 4 + (size_t)j0 * rb;
    const __m512i sh4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i sh2 =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i mask = _mm512_set1_epi32((1 << bits) - 1);
    for (int32_t c = 0; c < hd; c += 16) {
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 2 * (size_t)c)));
        __m512 m = _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)(g + 2 * ((size_t)hd + (size_t)c))));
        for (int32_t j = 0; j < n; j++) {
            const uint8_t *q = codes + (size_t)j * rb + (size_t)c * (size_t)bits / 8;
            uint32_t lo, hi = 0;
            memcpy(&lo, q, 4);
            if (bits == 4) memcpy(&hi, q + 4, 4);
            __m512i w = bits == 4 ? _mm512_inserti64x4(_mm512_set1_epi32((int)lo),
                                                       _mm256_set1_epi32((int)hi), 1)
                                  : _mm512_set1_epi32((int)lo);
            w = _mm512_and_si512(_mm512_srlv_epi32(w, bits == 4 ? sh4 : sh2), mask);
            _mm512_storeu_ps(dst + (size_t)j * hd + c,
                             _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(w), m));
        }
    }
}
#endif

#ifdef ATTN_X86
/* kivi2 V rows (per 32 channels: f16 d, f16 m, 8 bytes of 2-bit codes, channel j at bit
 * 2j of the little-endian words) to f32: d * code + m, 16 channels per 4 bytes. */
ATTN_AVX512 static void kivi2_v_avx512(const uint8_t *src, float *dst, int64_t nb)
{
    const __m512i sh2 =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i three = _mm512_set1_epi32(3);
    for (int64_t b = 0; b < nb; b++, src += 12, dst += 32) {
        __m512 d = _mm512_set1_ps(f16_at(src)), m = _mm512_set1_ps(f16_at(src + 2));
        for (int half = 0; half < 2; half++) {
            uint32_t w;
            memcpy(&w, src + 4 + 4 * half, 4);
            __m512i q = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)w), sh2), three);
            _mm512_storeu_ps(dst + 16 * half, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q), m));
        }
    }
}
#endif

/* Rows j0..j0+n of a sealed KIVI K group to f32 [n][hd]. */
static void kivi_k_rows(const attn_scratch *S, ks_dtype dt, const void *group, int32_t hd,
                        int32_t j0, int32_t n, float *dst)
{
#ifdef ATTN_X86
    if (S->simd) {
        kivi_k_avx512(ks_kivi_bits(dt), group, hd, j0, n, dst);
        return;
    }
#else
    (void)S;
#endif
    ks_kivi_k_to_f32(dt, group, hd, j0, n, dst);
}

/* n elements (whole rows) of type dt to f32, SIMD where the scratch runs SIMD kernels. */
static void tile_dequant(const attn_scratch *S, ks_dtype dt, const uint8_t *src, float *dst,
                         int64_t n)
{
    if (dt == KS_DTYPE_KIVI4) dt = KS_DTYPE_Q4_1; /* kivi4's V row is q4_1's layout */
    if (dt == KS_DTYPE_KIVI2) {
#ifdef ATTN_X86
        if (S->simd) {
            kivi2_v_avx512(src, dst, n / 32);
            return;
        }
#endif
        ks_kivi_v_to_f32(dt, src, dst, n);
        return;
    }
#ifdef ATTN_X86
    if (S->simd && dt == KS_DTYPE_Q8_0) {
        dequant_q8_0_avx512(src, dst, n / 32);
        return;
    }
    if (S->simd && dt == KS_DTYPE_Q4_0) {
        dequant_q4_0_avx512(src, dst, n / 32);
        return;
    }
    if (S->simd) {
        switch (dt) {
        case KS_DTYPE_Q4_1:
            dequant_q4_1_avx512(src, dst, n / 32);
            return;
        case KS_DTYPE_Q5_0:
            dequant_q5_avx512(src, dst, n / 32, false);
            return;
        case KS_DTYPE_Q5_1:
            dequant_q5_avx512(src, dst, n / 32, true);
            return;
        case KS_DTYPE_IQ4_NL:
            dequant_iq4_nl_avx512(src, dst, n / 32);
            return;
        case KS_DTYPE_BF16:
            bf16_to_f32_avx512(src, dst, n);
            return;
        default:
            break;
        }
    }
#else
    (void)S;
#endif
    qt_dequantize_row((qt_type)dt, src, dst, n);
}

/* ---------------------------------------------------------------------------------------- */
/* Scratch                                                                                   */

void attn_scratch_force_scalar(attn_scratch *s, bool scalar)
{
    s->scores = scores_scalar;
    s->accum = accum_scalar;
    s->simd = false;
#ifdef ATTN_X86
    if (!scalar && cpu_has_avx512()) {
        s->scores = scores_avx512;
        s->accum = accum_avx512;
        s->simd = true;
    }
#else
    (void)scalar;
#endif
}

int attn_scratch_create(int32_t head_dim, int32_t max_group, int32_t max_q, attn_scratch **out)
{
    *out = NULL;
    if (head_dim < 1 || head_dim > 4096 || max_group < 1 || max_group > 256 || max_q < 1 ||
        max_q > 1 << 20)
        return KS_ERR_INVALID;
    attn_scratch *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->head_dim = head_dim;
    s->max_group = max_group;
    s->max_q = max_q;
    size_t rows = (size_t)max_group * (size_t)max_q;
    size_t fl = sizeof(float);
    s->qr = ks_aligned_alloc(rows * (size_t)head_dim * fl);
    s->acc = ks_aligned_alloc(rows * (size_t)head_dim * fl);
    s->m = ks_aligned_alloc(rows * fl);
    s->l = ks_aligned_alloc(rows * sizeof(double));
    s->kt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    s->vt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    s->s = ks_aligned_alloc((size_t)ATTN_TILE * fl);
    /* virtual size for the largest chunk; only the rows a call uses are touched */
    size_t lrows = rows > (size_t)max_group * 4 ? rows : (size_t)max_group * 4;
    s->lacc = ks_aligned_alloc(lrows * (size_t)head_dim * 16 * fl);
    s->ldbl = ks_aligned_alloc((size_t)max_group * (size_t)head_dim * sizeof(double));
    s->ldone = calloc((size_t)max_group, 1);
    s->vtt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    s->qq = ks_aligned_alloc(((size_t)head_dim / 32 + 1) * 64);
    s->sc = ks_aligned_alloc(ATTN_SCORE_CACHE_BYTES);
    s->sc_vis = malloc(ATTN_SCORE_CACHE_BYTES / (ATTN_TILE * fl));
    if (!s->qq || !s->sc || !s->sc_vis || !s->qr || !s->acc || !s->m || !s->l || !s->kt || !s->vt ||
        !s->s || !s->lacc || !s->ldbl || !s->ldone || !s->vtt) {
        attn_scratch_destroy(s);
        return KS_ERR_NOMEM;
    }
    attn_scratch_force_scalar(s, false);
    *out = s;
    return 0;
}

void attn_scratch_destroy(attn_scratch *s)
{
    if (!s) return;
    free(s->qr);
    free(s->acc);
    free(s->m);
    free(s->l);
    free(s->kt);
    free(s->vt);
    free(s->s);
    free(s->lacc);
    free(s->ldbl);
    free(s->ldone);
    free(s->vtt);
    free(s->qq);
    free(s->sc);
    free(s->sc_vis);
    free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Tiles                                                                                     */

/* Rows j0..j0+n of a span of type dt as f32: in place for f32, else dequantised into buf
 * (one call per contiguous run; the dequantisers are SIMD for f16, q8_0 and q4_0). */
static const float *tile_rows(const attn_scratch *S, ks_dtype dt, const void *base, int32_t j0,
                              int32_t n, size_t stride, int32_t hd, float *buf, size_t *out_stride)
{
    if (dt == KS_DTYPE_F32) {
        *out_stride = stride;
        return (const float *)base + (size_t)j0 * stride;
    }
    size_t rb = ks_dtype_row_bytes(dt, (int32_t)stride);
    const uint8_t *src = (const uint8_t *)base + (size_t)j0 * rb;
    *out_stride = (size_t)hd;
    if (stride == (size_t)hd) {
        tile_dequant(S, dt, src, buf, (int64_t)n * hd);
        return buf;
    }
    for (int32_t j = 0; j < n; j++)
        tile_dequant(S, dt, src + (size_t)j * rb, buf + (size_t)j * hd, hd);
    return buf;
}

/* One part (K or V) of a span's rows j0..j0+n as f32. KIVI types: a residual span's rows
 * are f16; a sealed span's K is one per-channel group, its V per-token rows. */
static const float *tile_part(const attn_run *r, const attn_span *sp, bool is_k, int32_t j0,
                              int32_t n, size_t stride, float *buf, size_t *out_stride)
{
    ks_dtype dt = is_k ? r->p->k_dtype : r->p->v_dtype;
    const void *base = is_k ? sp->k : sp->v;
    int32_t hd = r->p->head_dim;
    if (ks_dtype_is_kivi(dt) && sp->group == 0) dt = KS_DTYPE_F16;
    if (ks_dtype_is_kivi(dt) && is_k) {
        kivi_k_rows(r->s, dt, base, hd, j0, n, buf);
        *out_stride = (size_t)hd;
        return buf;
    }
    return tile_rows(r->s, dt, base, j0, n, stride, hd, buf, out_stride);
}

static void tile_load(const attn_run *r, const attn_span *sp, int32_t j0, int32_t n, attn_tile *t)
{
    int32_t hd = r->p->head_dim;
    size_t ks = sp->k_stride ? (size_t)sp->k_stride : (size_t)hd;
    size_t vs = sp->v_stride ? (size_t)sp->v_stride : (size_t)hd;
    t->n = n;
    t->idx = sp->idx ? sp->idx + j0 : NULL;
    t->idx_min = INT32_MAX;
    t->idx_max = INT32_MIN;
    for (int32_t j = 0; t->idx && j < n; j++) {
        t->idx_min = KS_MIN(t->idx_min, t->idx[j]);
        t->idx_max = KS_MAX(t->idx_max, t->idx[j]);
    }
    if (t->idx && t->idx_min > r->q_idx_max) {
        t->n = 0; /* invisible to every query of the chunk: skip the conversion */
        return;
    }
    t->k = tile_part(r, sp, true, j0, n, ks, r->s->kt, &t->ks);
    t->v = tile_part(r, sp, false, j0, n, vs, r->s->vt, &t->vs);
}

bool attn_tile_scores(const attn_run *r, const attn_tile *t, int32_t row, float *smax)
{
    const attn_params *p = r->p;
    int32_t tq = row / p->n_group, g = row % p->n_group;
    int32_t qi = t->idx ? p->q_idx[tq] : 0;
    /* a sliding-window layer also hides keys window or more tokens behind the query */
    int32_t lo = t->idx && p->window > 0 ? qi - p->window : INT32_MIN;
    if (t->idx && (t->idx_min > qi || t->idx_max <= lo)) return false;
    float *s = r->s->s;
    r->scores(r->q + (size_t)tq * r->q_stride + (size_t)g * p->head_dim, t->k, t->ks, t->n,
              p->head_dim, p->scale, s);
    if (t->idx && (t->idx_max > qi || t->idx_min <= lo))
        for (int32_t j = 0; j < t->n; j++)
            if (t->idx[j] > qi || t->idx[j] <= lo) s[j] = -INFINITY;
    float mx = -INFINITY;
    for (int32_t j = 0; j < t->n; j++)
        mx = s[j] > mx ? s[j] : mx;
    *smax = mx;
    return mx > -INFINITY;
}

int64_t attn_tile_count(const attn_span *spans, int32_t n_spans)
{
    int64_t n = 0;
    for (int32_t i = 0; i < n_spans; i++)
        n += (spans[i].n + ATTN_TILE - 1) / ATTN_TILE;
    return n;
}

void attn_for_each_tile(const attn_run *r, const attn_span *spans, int32_t n_spans, attn_tile_fn fn)
{
    int64_t key0 = 0, seq = 0;
    for (int32_t i = 0; i < n_spans; i++) {
        for (int32_t j0 = 0; j0 < spans[i].n; j0 += ATTN_TILE) {
            attn_tile t;
            tile_load(r, &spans[i], j0, KS_MIN(ATTN_TILE, spans[i].n - j0), &t);
            t.key0 = key0 + j0;
            t.seq = seq++;
            if (t.n > 0) fn(r, &t);
        }
        key0 += spans[i].n;
    }
}

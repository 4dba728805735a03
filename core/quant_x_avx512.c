/* quant_x_avx512.c - the newer types' dot kernels for AVX-512 (F/BW/VL/VNNI).
 *
 * Only quant.c's dispatcher calls in, after checking the CPU. quant_x86.h's kernels compiled
 * here use vpdpbusd for the 4-byte integer dots and byte masks for Q5 high bits. Q5_K gets a
 * 512-bit kernel: each zmm holds two 32-element groups, the integer lanes are folded back
 * (lane k + lane k+8) to llama.cpp's 8 AVX2 lanes before the one f32 fma per super-block, so
 * results are bit-identical to the AVX2 build's (integer sums are exact in any order). The
 * same two-groups-per-zmm scheme for Q2_K, Q3_K and IQ4_XS measured 10-25% slower than the
 * 256-bit kernels on this machine's AMD EPYC (512-bit work is split in two there, and vpermw
 * and vpsrlvw cost extra), so those keep the 256-bit ones (bench/bench_quant).
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

static float x5_dot_q5_k(int64_t n, const void *w, const void *x)
{
    const blk_q5_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m4 = _mm512_set1_epi8(0xF), one = _mm512_set1_epi8(1);
    const __m512i c04 = x5_counts(0, 4);
    __m512i ch[4], ip[4]; /* per pair j: qh bit shifts 2j, 2j+1; scales 2j, 2j+1 */
    for (int j = 0; j < 4; j++) {
        ch[j] = x5_counts(2 * j, 2 * j + 1);
        ip[j] = x5_idx_pair(2 * j);
    }
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
            __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, ch[j]), one);
            __m512i q = _mm512_or_si512(lo, _mm512_slli_epi16(hb, 4));
            __m512i y = _mm512_loadu_si512(b[i].qs + 64 * j);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q, y),
                                                            _mm512_permutexvar_epi16(ip[j], sc16)));
        }
        acc = x5_fold_fma(sumi, d, acc);
    }
    return qx_hsum8(acc) + summs;
}

void qt_kernels_fill_x_avx512(qt_kernels *k)
{
    qx_fill_common(k);
    k->dot[QT_Q5_K] = x5_dot_q5_k;
}

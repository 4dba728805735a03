/* quant_avx512.c - AVX-512 (F/BW/VL/DQ/VNNI/BF16) dot kernels and f16 row conversion.
 *
 * Compiled with AVX-512 flags; only quant.c's dispatcher calls in, after checking the CPU.
 * Integer dots use vpdpbusd (u8 x s8): Q8_0 with the abs/sign trick (batches: activations
 * offset by 128, the excess taken off per weight block), Q4_0/Q4_K/Q6_K with
 * unsigned quants and the offset removed through the activation sums. Per-block integer
 * sums are exact; scaling and accumulation are in f32 like llama.cpp.
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "quant_impl.h"

static inline float hsum512(__m512 v)
{
    return _mm512_reduce_add_ps(v);
}

/* llama.cpp's hsum of 8 lanes: (hi4 + lo4), then (0+2)+(1+3). */
static inline float hsum8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline float f16s(uint16_t h)
{
    return _cvtsh_ss(h);
}

static inline float bf16s(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- F32 / F16 / BF16 ----
 * Two orders, both llama.cpp's. "vec" (one token, ggml_vec_dot_*): four 16-lane accumulators
 * over 64-element steps folded (0+2)+(1+3), then a 16-lane tree (BF16: two accumulators of
 * 32 pairs, each reduced, added in double); the tail element by element. "gemm" (two or more
 * tokens, tinyBLAS): one 16-lane accumulator per output over the whole row, then the tree. */
enum { K_F32, K_F16 };

static inline __attribute__((always_inline)) __m512 ld16(int kind, const void *p, int64_t i)
{
    if (kind == K_F32) return _mm512_loadu_ps((const float *)p + i);
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}

static inline __attribute__((always_inline)) float vec_dot_fx(int kind, int64_t n, const void *w,
                                                              const void *x)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(ld16(kind, w, i), ld16(kind, x, i), s0);
        s1 = _mm512_fmadd_ps(ld16(kind, w, i + 16), ld16(kind, x, i + 16), s1);
        s2 = _mm512_fmadd_ps(ld16(kind, w, i + 32), ld16(kind, x, i + 32), s2);
        s3 = _mm512_fmadd_ps(ld16(kind, w, i + 48), ld16(kind, x, i + 48), s3);
    }
    float r = hsum512(_mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
    if (kind == K_F32) {
        const float *a = w, *b = x;
        for (; i < n; i++)
            r += a[i] * b[i];
        return r;
    }
    const uint16_t *a = w, *b = x;
    double d = r;
    for (; i < n; i++)
        d += (double)(f16s(a[i]) * f16s(b[i]));
    return (float)d;
}

static float dot_f32(int64_t n, const void *w, const void *x)
{
    return vec_dot_fx(K_F32, n, w, x);
}

static float dot_f16(int64_t n, const void *w, const void *x)
{
    return vec_dot_fx(K_F16, n, w, x);
}

static inline __m512bh ld_bf16(const uint16_t *p)
{
    return (__m512bh)_mm512_loadu_si512(p);
}

static float dot_bf16(int64_t n, const void *w, const void *x)
{
    const uint16_t *a = w, *b = x;
    __m512 c1 = _mm512_setzero_ps(), c2 = c1;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        c1 = _mm512_dpbf16_ps(c1, ld_bf16(a + i), ld_bf16(b + i));
        c2 = _mm512_dpbf16_ps(c2, ld_bf16(a + i + 32), ld_bf16(b + i + 32));
    }
    double s = (double)hsum512(c1);
    s += (double)hsum512(c2);
    for (; i < n; i++)
        s += (double)(bf16s(a[i]) * bf16s(b[i]));
    return (float)s;
}

/* tinyBLAS tile: RM rows x RN activations, one accumulator chain per output. */
static inline __attribute__((always_inline)) void gemm_tile(int kind, int rm, int rn, int64_t n,
                                                            const char *w, size_t wrb,
                                                            const char *x, size_t xb, float *y,
                                                            int64_t ys, bool pf)
{
    __m512 c[4][4];
    for (int i = 0; i < rm; i++)
        for (int j = 0; j < rn; j++)
            c[i][j] = _mm512_setzero_ps();
    if (kind == K_F32 || kind == K_F16) {
        /* the rows are contiguous: prefetch two tiles ahead as fast as this one is read */
        int esz = kind == K_F32 ? 4 : 2;
        const char *pfp = w + (size_t)(2 * rm) * wrb;
        for (int64_t l = 0; l < n; l += 16) {
            if (pf)
                for (int k = 0; k < rm * esz / 4; k++)
                    _mm_prefetch(pfp + (size_t)l * (size_t)(rm * esz) + 64 * k, _MM_HINT_T0);
            __m512 a[4];
            for (int i = 0; i < rm; i++)
                a[i] = ld16(kind, w + (size_t)i * wrb, l);
            for (int j = 0; j < rn; j++) {
                __m512 b = ld16(kind, x + (size_t)j * xb, l);
                for (int i = 0; i < rm; i++)
                    c[i][j] = _mm512_fmadd_ps(a[i], b, c[i][j]);
            }
        }
    } else {
        for (int64_t l = 0; l < n; l += 32) {
            __m512bh a[4];
            for (int i = 0; i < rm; i++)
                a[i] = ld_bf16((const uint16_t *)(w + (size_t)i * wrb) + l);
            for (int j = 0; j < rn; j++) {
                __m512bh b = ld_bf16((const uint16_t *)(x + (size_t)j * xb) + l);
                for (int i = 0; i < rm; i++)
                    c[i][j] = _mm512_dpbf16_ps(c[i][j], a[i], b);
            }
        }
    }
    for (int i = 0; i < rm; i++)
        for (int j = 0; j < rn; j++)
            y[(int64_t)i * ys + j] = hsum512(c[i][j]);
}

#define K_BF16 2

static inline __attribute__((always_inline)) void gemm_fx(int kind, int64_t n, const void *w_rows,
                                                          size_t wrb, int64_t n_rows, const void *x,
                                                          size_t xb, int64_t n_b, float *y,
                                                          int64_t ys)
{
    const char *w = w_rows, *xc = x;
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        int64_t b = 0;
        for (; b + 4 <= n_b; b += 4)
            gemm_tile(kind, 4, 4, n, w + r * wrb, wrb, xc + b * xb, xb, y + r * ys + b, ys, b == 0);
        for (; b < n_b; b++)
            gemm_tile(kind, 4, 1, n, w + r * wrb, wrb, xc + b * xb, xb, y + r * ys + b, ys, b == 0);
    }
    for (; r < n_rows; r++) {
        int64_t b = 0;
        for (; b + 4 <= n_b; b += 4)
            gemm_tile(kind, 1, 4, n, w + r * wrb, wrb, xc + b * xb, xb, y + r * ys + b, ys, false);
        for (; b < n_b; b++)
            gemm_tile(kind, 1, 1, n, w + r * wrb, wrb, xc + b * xb, xb, y + r * ys + b, ys, false);
    }
}

static void generic_vec(qt_dot_fn f, int64_t n, const void *w_rows, size_t wrb, int64_t n_rows,
                        const void *x, size_t xb, int64_t n_b, float *y, int64_t ys)
{
    const char *w = w_rows, *xc = x;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t b = 0; b < n_b; b++)
            y[r * ys + b] = f(n, w + r * wrb, xc + b * xb);
}

static void gemm_f32(int64_t n, const void *w, size_t wrb, int64_t nr, const void *x, size_t xb,
                     int64_t nb, float *y, int64_t ys)
{
    if (n % 16)
        generic_vec(dot_f32, n, w, wrb, nr, x, xb, nb, y, ys);
    else
        gemm_fx(K_F32, n, w, wrb, nr, x, xb, nb, y, ys);
}

static void gemm_f16(int64_t n, const void *w, size_t wrb, int64_t nr, const void *x, size_t xb,
                     int64_t nb, float *y, int64_t ys)
{
    if (n % 16)
        generic_vec(dot_f16, n, w, wrb, nr, x, xb, nb, y, ys);
    else
        gemm_fx(K_F16, n, w, wrb, nr, x, xb, nb, y, ys);
}

static void gemm_bf16(int64_t n, const void *w, size_t wrb, int64_t nr, const void *x, size_t xb,
                      int64_t nb, float *y, int64_t ys)
{
    if (n % 32)
        generic_vec(dot_bf16, n, w, wrb, nr, x, xb, nb, y, ys);
    else
        gemm_fx(K_BF16, n, w, wrb, nr, x, xb, nb, y, ys);
}

/* ---- Q8_0: tinyBLAS / ggml_vec_dot_q8_0_q8_0 order ----
 * Per output an 8-lane accumulator: lane k gets, block after block, fma(dw*dx, sum of the
 * 4 products of bytes 4k..4k+3, acc); then hsum8. Two rows share one zmm (lo/hi halves). */
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

static inline __attribute__((always_inline)) void q8_0_pair(int rn, int64_t nb, const blk_q8_0 *a0,
                                                            const blk_q8_0 *a1, const char *x,
                                                            size_t xb, float *y0, float *y1)
{
    __m512 c[8];
    for (int j = 0; j < rn; j++)
        c[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m512i w = ld2x256(a0[i].qs, a1[i].qs);
        __m512i aw = _mm512_abs_epi8(w);
        __mmask64 neg = _mm512_movepi8_mask(w);
        __m512 dw = scale2(f16s(a0[i].d), f16s(a1[i].d));
        for (int j = 0; j < rn; j++) {
            const blk_q8_0 *bj = (const blk_q8_0 *)(x + (size_t)j * xb) + i;
            __m512i yv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)bj->qs));
            __m512i sy = _mm512_mask_sub_epi8(yv, neg, _mm512_setzero_si512(), yv);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sy);
            __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(f16s(bj->d)));
            c[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), c[j]);
        }
    }
    for (int j = 0; j < rn; j++) {
        y0[j] = hsum8(_mm512_castps512_ps256(c[j]));
        if (y1) y1[j] = hsum8(_mm512_extractf32x8_ps(c[j], 1));
    }
}

static float q8_0_row(int64_t nb, const blk_q8_0 *a, const blk_q8_0 *bx)
{
    __m256 c = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i yv = _mm256_loadu_si256((const __m256i *)bx[i].qs);
        __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w),
                                        _mm256_sign_epi8(yv, w));
        __m256 d = _mm256_set1_ps(f16s(a[i].d) * f16s(bx[i].d));
        c = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), c);
    }
    return hsum8(c);
}

/* Batched Q8_0 tile: 2*RZ rows (two per zmm) x RN tokens, one accumulator per output as in
 * q8_0_pair, so the results are bit-identical. Instead of the sign trick each token's bytes
 * are flipped to u8 (x ^ 0x80, one load and xor shared by all rows) and the excess
 * 128 * (sum of 4 weight bytes) starts the dpbusd accumulator, computed once per weight block
 * for every token. Activation scales come pre-converted to f32 in dx[j * nb + i]. Rows past
 * nrows repeat the last row and are not stored. With pf set, the weight bytes a pass ahead
 * (the rows are contiguous, but 2*RZ short interleaved streams defeat the prefetchers) are
 * prefetched at the rate this pass consumes its own. */
#define Q8B_MAX_NB 640 /* blocks per row the f32 scale scratch holds (16 tokens) */
#define Q8B_PF_PASSES 2

static inline __attribute__((always_inline)) void
q8_0_tile(int rz, int rn, int64_t nb, const char *w, size_t wrb, int64_t nrows, const char *x,
          size_t xb, const float *dx, float *y, int64_t ys, bool pf)
{
    const blk_q8_0 *a[8], *bx[8];
    for (int r = 0; r < 2 * rz; r++)
        a[r] = (const blk_q8_0 *)(w + (size_t)KS_MIN((int64_t)r, nrows - 1) * wrb);
    for (int j = 0; j < rn; j++)
        bx[j] = (const blk_q8_0 *)(x + (size_t)j * xb);
    const char *pfp = w + (size_t)(Q8B_PF_PASSES * 2 * rz) * wrb;
    const __m512i k80 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512 c[4][8];
    for (int z = 0; z < rz; z++)
        for (int j = 0; j < rn; j++)
            c[z][j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        if (pf)
            for (int k = 0; k <= rz; k++)
                _mm_prefetch(pfp + (size_t)i * (size_t)(2 * rz) * sizeof(blk_q8_0) + 64 * k,
                             _MM_HINT_T0);
        __m512i wv[4], nc[4];
        __m512 dw[4];
        for (int z = 0; z < rz; z++) {
            const blk_q8_0 *p0 = a[2 * z] + i, *p1 = a[2 * z + 1] + i;
            wv[z] = ld2x256(p0->qs, p1->qs);
            nc[z] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k80, wv[z]));
            __m128i h0 = _mm_set1_epi16((short)p0->d), h1 = _mm_set1_epi16((short)p1->d);
            dw[z] = _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1));
        }
        for (int j = 0; j < rn; j++) {
            __m512i xv = _mm512_xor_si512(
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)bx[j][i].qs)), k80);
            __m512 dxj = _mm512_set1_ps(dx[(int64_t)j * nb + i]);
            for (int z = 0; z < rz; z++) {
                __m512i s = _mm512_dpbusd_epi32(nc[z], xv, wv[z]);
                __m512 d = _mm512_mul_ps(dw[z], dxj);
                c[z][j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), c[z][j]);
            }
        }
    }
    for (int z = 0; z < rz; z++)
        for (int j = 0; j < rn; j++) {
            if (2 * z < nrows) y[(2 * z) * ys + j] = hsum8(_mm512_castps512_ps256(c[z][j]));
            if (2 * z + 1 < nrows)
                y[(2 * z + 1) * ys + j] = hsum8(_mm512_extractf32x8_ps(c[z][j], 1));
        }
}

#define Q8B_TILE(RZ, RN)                                                                           \
    q8_0_tile(RZ, RN, nb, w, wrb, nrows, x + b * xb, xb, dx + b * nb, y + b, ys, b == 0)

/* One pass: 2*rz rows (rz 2 or 4) against n_b (<= 16) tokens, 8 (rz 2) or 4 at a time. */
static void q8_0_pass(int rz, int64_t nb, const char *w, size_t wrb, int64_t nrows, const char *x,
                      size_t xb, int64_t n_b, const float *dx, float *y, int64_t ys)
{
    for (int64_t b = 0; b < n_b; b += 2 * (6 - rz)) { /* 8 tokens with rz 2, 4 with rz 4 */
        int64_t rn = KS_MIN((int64_t)(2 * (6 - rz)), n_b - b);
        if (rz == 4) {
            switch (rn) {
            case 1:
                Q8B_TILE(4, 1);
                break;
            case 2:
                Q8B_TILE(4, 2);
                break;
            case 3:
                Q8B_TILE(4, 3);
                break;
            default:
                Q8B_TILE(4, 4);
                break;
            }
            continue;
        }
        switch (rn) {
        case 1:
            Q8B_TILE(2, 1);
            break;
        case 2:
            Q8B_TILE(2, 2);
            break;
        case 3:
            Q8B_TILE(2, 3);
            break;
        case 4:
            Q8B_TILE(2, 4);
            break;
        case 5:
            Q8B_TILE(2, 5);
            break;
        case 6:
            Q8B_TILE(2, 6);
            break;
        case 7:
            Q8B_TILE(2, 7);
            break;
        default:
            Q8B_TILE(2, 8);
            break;
        }
    }
}

static void mv_q8_0(int64_t n, const void *w_rows, size_t wrb, int64_t n_rows, const void *x,
                    size_t xb, int64_t n_b, float *y, int64_t ys)
{
    const char *w = w_rows, *xc = x;
    int64_t nb = n / QK8_0, r0 = 0;
    if (n_b == 1) { /* one row at a time: a single stream that the prefetchers follow */
        for (; r0 < n_rows; r0++)
            y[r0 * ys] = q8_0_row(nb, (const blk_q8_0 *)(w + r0 * wrb), x);
        return;
    }
    if (nb <= Q8B_MAX_NB) { /* the rows of a pass meet up to 16 tokens while in L1 */
        float dx[16 * Q8B_MAX_NB];
        for (int64_t b0 = 0; b0 < n_b; b0 += 16) {
            int64_t nt = KS_MIN((int64_t)16, n_b - b0);
            const char *xt = xc + b0 * xb;
            for (int64_t j = 0; j < nt; j++) {
                const blk_q8_0 *bj = (const blk_q8_0 *)(xt + (size_t)j * xb);
                for (int64_t i = 0; i < nb; i++)
                    dx[j * nb + i] = f16s(bj[i].d);
            }
            int rz = nt > 4 ? 2 : 4;
            for (int64_t r = 0; r < n_rows; r += 2 * rz)
                q8_0_pass(rz, nb, w + r * wrb, wrb, KS_MIN(2 * (int64_t)rz, n_rows - r), xt, xb, nt,
                          dx, y + r * ys + b0, ys);
        }
        return;
    }
    for (int64_t r = r0; r < n_rows; r += 2) {
        const blk_q8_0 *a0 = (const blk_q8_0 *)(w + r * wrb);
        bool two = r + 1 < n_rows;
        const blk_q8_0 *a1 = two ? (const blk_q8_0 *)(w + (r + 1) * wrb) : a0;
        float *y0 = y + r * ys, *y1 = two ? y0 + ys : NULL;
        int64_t b = 0;
        for (; b + 8 <= n_b; b += 8)
            q8_0_pair(8, nb, a0, a1, xc + b * xb, xb, y0 + b, y1 ? y1 + b : NULL);
        for (; b + 4 <= n_b; b += 4)
            q8_0_pair(4, nb, a0, a1, xc + b * xb, xb, y0 + b, y1 ? y1 + b : NULL);
        for (; b < n_b; b++)
            q8_0_pair(1, nb, a0, a1, xc + b * xb, xb, y0 + b, y1 ? y1 + b : NULL);
    }
}

static float dot_q8_0(int64_t n, const void *w, const void *x)
{
    float y;
    q8_0_pair(1, n / QK8_0, w, w, x, 0, &y, NULL);
    return y;
}

/* ---- Q4_0: llama.cpp's repacked 8x8 kernels (what it runs for Q4_0 weights on AVX2) ----
 * Per output one scalar chain over blocks: acc = fma((float)isum_block, dw*dx, acc). */
static inline int hsum_i32x8(__m256i v)
{
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4E));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xB1));
    return _mm_cvtsi128_si32(a);
}

static inline __m256i q4_0_bytes(const blk_q4_0 *a)
{
    __m128i t = _mm_loadu_si128((const __m128i *)a->qs);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0xF));
}

/* Eight rows' 8-lane integer partial sums -> the eight row totals, lane k = row k (integer
 * adds are exact, so the order is free). */
static inline __m256i hsum8x8_i32(const __m256i v[8])
{
    __m256i t0 = _mm256_hadd_epi32(v[0], v[1]), t1 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i t2 = _mm256_hadd_epi32(v[4], v[5]), t3 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* One row, tokens [b0, b0+nt): the plain per-output chain (used for leftover rows). */
static void q4_0_rows_scalar(const char *w, size_t wrb, int64_t r0, int64_t r1, const char *xc,
                             size_t xb, int64_t b0, int64_t nt, int64_t nb, const int *off,
                             const float *dx, float *y, int64_t ys)
{
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < nt; t++) {
            const blk_q8_0 *yb = (const blk_q8_0 *)(xc + (b0 + t) * xb);
            float acc = 0;
            for (int64_t i = 0; i < nb; i++) {
                const blk_q4_0 *a = (const blk_q4_0 *)(w + r * wrb) + i;
                __m256i yv = _mm256_loadu_si256((const __m256i *)yb[i].qs);
                int isum =
                    hsum_i32x8(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q4_0_bytes(a), yv)) -
                    off[t * nb + i];
                acc = fmaf((float)isum, f16s(a->d) * dx[t * nb + i], acc);
            }
            y[r * ys + b0 + t] = acc;
        }
}

/* Q4_0 x Q8_0 for up to 16 tokens at a time. Every output keeps its own scalar chain
 * acc = fma((float)isum_block, dw*dx, acc) over the blocks (llama.cpp's repacked kernels), but
 * eight rows run side by side in the lanes of one vector, and each block of eight rows is
 * unpacked once for all the tokens. The result is identical to one output at a time. */
static void mv_q4_0(int64_t n, const void *w_rows, size_t wrb, int64_t n_rows, const void *x,
                    size_t xb, int64_t n_b, float *y, int64_t ys)
{
    const char *w = w_rows, *xc = x;
    const int64_t nb = n / QK4_0;
    const __m256i eight = _mm256_set1_epi8(8);
    int off[16 * (nb > 0 ? nb : 1)];
    float dx[16 * (nb > 0 ? nb : 1)];
    for (int64_t b0 = 0; b0 < n_b; b0 += 16) {
        const int64_t nt = KS_MIN((int64_t)16, n_b - b0);
        for (int64_t t = 0; t < nt; t++) {
            const blk_q8_0 *yb = (const blk_q8_0 *)(xc + (b0 + t) * xb);
            for (int64_t i = 0; i < nb; i++) {
                __m256i yv = _mm256_loadu_si256((const __m256i *)yb[i].qs);
                off[t * nb + i] =
                    hsum_i32x8(_mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, yv));
                dx[t * nb + i] = f16s(yb[i].d);
            }
        }
        int64_t r0 = 0;
        /* one token (decode) is memory-bound: a row at a time is a single stream that the
         * hardware prefetchers follow; eight interleaved rows run ~40% slower there */
        for (; nt > 1 && r0 + 8 <= n_rows; r0 += 8) {
            __m256 acc[16];
            for (int64_t t = 0; t < nt; t++)
                acc[t] = _mm256_setzero_ps();
            for (int64_t i = 0; i < nb; i++) {
                __m256i wq[8];
                uint16_t dh[8];
                for (int k = 0; k < 8; k++) {
                    const blk_q4_0 *a = (const blk_q4_0 *)(w + (r0 + k) * wrb) + i;
                    wq[k] = q4_0_bytes(a);
                    dh[k] = a->d;
                }
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
                for (int64_t t = 0; t < nt; t++) {
                    const blk_q8_0 *yb = (const blk_q8_0 *)(xc + (b0 + t) * xb) + i;
                    __m256i yv = _mm256_loadu_si256((const __m256i *)yb->qs);
                    __m256i s[8];
                    for (int k = 0; k < 8; k++)
                        s[k] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq[k], yv);
                    __m256i isum =
                        _mm256_sub_epi32(hsum8x8_i32(s), _mm256_set1_epi32(off[t * nb + i]));
                    __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(dx[t * nb + i]));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[t]);
                }
            }
            for (int64_t t = 0; t < nt; t++) {
                float v[8];
                _mm256_storeu_ps(v, acc[t]);
                for (int k = 0; k < 8; k++)
                    y[(r0 + k) * ys + b0 + t] = v[k];
            }
        }
        q4_0_rows_scalar(w, wrb, r0, n_rows, xc, xb, b0, nt, nb, off, dx, y, ys);
    }
}

static float dot_q4_0(int64_t n, const void *w, const void *x)
{
    float y;
    mv_q4_0(n, w, 0, 1, x, 0, 1, &y, 1);
    return y;
}

/* ---- Q4_K: ggml_vec_dot_q4_K_q8_K (AVX2) order ----
 * The llama.cpp the references come from has no Q4_K repacking on x86, so every product
 * (one token or a batch) is its vec-dot: per super-block 8 integer lanes, lane k = the exact
 * sum of scale * q * y over the elements 4k..4k+3 of every 32-element group, folded into
 * acc[k] = fma(dw*dx, lane, acc[k]); and 4 min lanes, lane k = min[2k]*ysum[2k] +
 * min[2k+1]*ysum[2k+1] (ysum = sum of y over a 32-element group), folded into
 * accm[k] = fma(-dx*dmin, lane, accm[k]). The result is hsum8(acc) + (m0+m2)+(m1+m3). */
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

static inline void q4k_block(const blk_q4_k *a, const blk_q8_k *b, int32_t lanes[8],
                             int32_t mins[4])
{
    const __m512i mask4 = _mm512_set1_epi8(0xF);
    uint64_t scw, mw;
    q4k_unpack(a->scales, &scw, &mw);
    __m512i sc32 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scw));
    __m512i sumi = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j));
        __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
        qq = _mm512_and_si512(qq, mask4);
        __m512i y = _mm512_loadu_si512(b->qs + 64 * j);
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qq, y);
        __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(2 * j), _mm256_set1_epi32(2 * j + 1), 1);
        sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, _mm512_permutexvar_epi32(idx, sc32)));
    }
    /* zmm lane L covers bytes 4L..4L+3 of the low (L < 8) or high nibbles: AVX2 lane L % 8 */
    __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
    _mm256_storeu_si256((__m256i *)lanes, s8);
    for (int k = 0; k < 4; k++) {
        int m0 = (int)((mw >> (16 * k)) & 0xFF), m1 = (int)((mw >> (16 * k + 8)) & 0xFF);
        int y0 = b->bsums[4 * k] + b->bsums[4 * k + 1],
            y1 = b->bsums[4 * k + 2] + b->bsums[4 * k + 3];
        mins[k] = m0 * y0 + m1 * y1;
    }
}

static void mv_q4_k(int64_t n, const void *w_rows, size_t wrb, int64_t n_rows, const void *x,
                    size_t xb, int64_t n_b, float *y, int64_t ys)
{
    const char *w = w_rows, *xc = x;
    int64_t nb = n / QK_K;
    for (int64_t r = 0; r < n_rows; r++) {
        const blk_q4_k *a = (const blk_q4_k *)(w + r * wrb);
        for (int64_t bb = 0; bb < n_b; bb++) {
            const blk_q8_k *b = (const blk_q8_k *)(xc + bb * xb);
            __m256 acc = _mm256_setzero_ps();
            __m128 accm = _mm_setzero_ps();
            for (int64_t i = 0; i < nb; i++) {
                int32_t lanes[8], mins[4];
                q4k_block(&a[i], &b[i], lanes, mins);
                const float d = b[i].d * f16s(a[i].d), dmin = -b[i].d * f16s(a[i].dmin);
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(d),
                    _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)lanes)), acc);
                accm = _mm_fmadd_ps(_mm_set1_ps(dmin),
                                    _mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)mins)), accm);
            }
            accm = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
            accm = _mm_add_ss(accm, _mm_movehdup_ps(accm));
            y[r * ys + bb] = hsum8(acc) + _mm_cvtss_f32(accm);
        }
    }
}

static float dot_q4_k(int64_t n, const void *w, const void *x)
{
    float y;
    mv_q4_k(n, w, 0, 1, x, 0, 1, &y, 1);
    return y;
}

/* ---- Q6_K: ggml_vec_dot_q6_K_q8_K (AVX2) order ----
 * Per super-block 8 integer lanes, lane k = sum over every 32-element group of
 * scale * (q - 32) * y for the group's elements 4k..4k+3; acc = fma(d, lanes, acc) with
 * d = dx * dw; hsum8 at the end. */
static float dot_q6_k(int64_t n, const void *w, const void *x)
{
    const blk_q6_k *a = w;
    const blk_q8_k *b = x;
    const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3);
    const __m512i m32 = _mm512_set1_epi8(32);
    /* byte i of shuffle k picks scale 4k + i/4 */
    const __m128i sh[4] = {
        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
        _mm_setr_epi8(8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11),
        _mm_setr_epi8(12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m128i sc = _mm_loadu_si128((const __m128i *)a[i].scales);
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
            __m256i qh = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            __m512i qha =
                _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            __m512i qhb = _mm512_srli_epi16(qha, 4);
            __m512i q0 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qha, m2), 4));
            __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(qhb, m2), 4));
            __m512i y0 = _mm512_loadu_si512(b[i].qs + 128 * h);
            __m512i y1 = _mm512_loadu_si512(b[i].qs + 128 * h + 64);
            __m512i z = _mm512_setzero_si512();
            __m512i p0 =
                _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q0, y0), _mm512_dpbusd_epi32(z, m32, y0));
            __m512i p1 =
                _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q1, y1), _mm512_dpbusd_epi32(z, m32, y1));
            __m512i s0 = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, sh[2 * h]));
            __m512i s1 = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, sh[2 * h + 1]));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p0, s0));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p1, s1));
        }
        __m256i s8 =
            _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
        float d = b[i].d * f16s(a[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s8), acc);
    }
    return hsum8(acc);
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
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, ld16(K_F16, src, i));
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
    k->matvec[QT_Q8_0] = mv_q8_0;
    k->matvec[QT_Q4_0] = mv_q4_0;
    k->matvec[QT_Q4_K] = mv_q4_k;
    k->matvec_gemm[QT_F32] = gemm_f32;
    k->matvec_gemm[QT_F16] = gemm_f16;
    k->matvec_gemm[QT_BF16] = gemm_bf16;
    k->f32_to_f16 = f32_to_f16;
    k->f16_to_f32 = f16_to_f32;
}

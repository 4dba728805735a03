/* repack_avx512.c - the VNNI GEMM over 16-row repacked Q4_0 weights (layout: repack.h; this file
 * sees only repack_kern.h).
 *
 * Per block, the four 64-byte nibble chunks of a 16-row group are unpacked once into eight
 * u8 vectors (low and high nibbles) and reused for a tile of tokens; each token's 32 int8
 * activations go in as eight broadcast 4-byte chunks, so eight vpdpbusd give the 16 rows'
 * exact integer block sums in the 16 lanes. The f32 fold is the plain kernel's per output:
 * acc = fma((float)(isum - 8 * sum(x)), dw * dx, acc), block by block, so every result is
 * bit-identical to quant_avx512.c's mv_q4_0. Compiled with AVX-512 flags.
 */
#include <immintrin.h>
#include <string.h>

#include "repack_kern.h"

#define RP_TOK_BLOCK 64 /* tokens whose activations stay in L2 while a thread's rows pass */

static inline __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* One 16-row group x TT tokens, all blocks; lanes outside `mask` are not stored. */
static inline __attribute__((always_inline)) void tile(int tt, const uint8_t *g, int64_t nb,
                                                       const char *xq, size_t xb,
                                                       const int32_t *off, const float *dx,
                                                       float *y, int64_t ys, __mmask16 mask)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[8];
    for (int t = 0; t < tt; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m512i *q = (const __m512i *)(g + i * 256);
        __m512i lo[4], hi[4];
        for (int v = 0; v < 4; v++) {
            __m512i w = _mm512_load_si512(q + v);
            lo[v] = _mm512_and_si512(w, m4);
            hi[v] = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
        }
        const __m512 dw =
            _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(g + nb * 256 + i * 32)));
        for (int t = 0; t < tt; t++) {
            const int8_t *xs = (const int8_t *)(xq + (size_t)t * xb) + i * 34 + 2;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int v = 0; v < 4; v++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[v], bcast4(xs + 4 * v));
                s1 = _mm512_dpbusd_epi32(s1, hi[v], bcast4(xs + 16 + 4 * v));
            }
            __m512i isum =
                _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(off[t * nb + i]));
            __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(dx[t * nb + i]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[t]);
        }
    }
    for (int t = 0; t < tt; t++)
        _mm512_mask_storeu_ps(y + t * ys, mask, acc[t]);
}

void rp_q4_0_avx512(const uint8_t *packed, size_t gstride, int64_t nb, int64_t lo, int64_t hi,
                    const char *xq, size_t xb, const int32_t *off, const float *dx, int64_t n_tok,
                    float *y, int64_t ys)
{
    if (lo >= hi) return;
    for (int64_t T0 = 0; T0 < n_tok; T0 += RP_TOK_BLOCK) {
        const int64_t T1 = T0 + RP_TOK_BLOCK < n_tok ? T0 + RP_TOK_BLOCK : n_tok;
        for (int64_t g = lo / RP_ROWS; g * RP_ROWS < hi; g++) {
            const int64_t r0 = g * RP_ROWS;
            const int64_t a = lo > r0 ? lo - r0 : 0, b = hi - r0 < RP_ROWS ? hi - r0 : RP_ROWS;
            const __mmask16 mask = (__mmask16)(((1u << b) - 1) & ~((1u << a) - 1));
            const uint8_t *gp = packed + (size_t)g * gstride;
            for (int64_t t = T0; t < T1;) {
                const char *x = xq + (size_t)t * xb;
                const int32_t *o = off + t * nb;
                const float *d = dx + t * nb;
                float *yt = y + t * ys + r0;
                int64_t left = T1 - t;
                if (left >= 8) {
                    tile(8, gp, nb, x, xb, o, d, yt, ys, mask);
                    t += 8;
                } else if (left >= 4) {
                    tile(4, gp, nb, x, xb, o, d, yt, ys, mask);
                    t += 4;
                } else if (left >= 2) {
                    tile(2, gp, nb, x, xb, o, d, yt, ys, mask);
                    t += 2;
                } else {
                    tile(1, gp, nb, x, xb, o, d, yt, ys, mask);
                    t += 1;
                }
            }
        }
    }
}

/* kivi.c - the KIVI-style KV types kivi4 and kivi2 (Liu et al., 2024, "KIVI: a tuning-free
 * asymmetric 2bit quantization for KV cache"): asymmetric (scale and minimum) group-wise
 * quantisation with K grouped PER CHANNEL over a block of tokens and V grouped PER TOKEN.
 *
 * Why per channel for K: keys have a few outlier channels whose magnitude is far above the
 * rest; a per-token group would spend its range on them and crush the other channels, while
 * a per-channel group over tokens sees one channel's (narrow) range. Values have no such
 * channels, and attention mixes them per token, so V groups run along the row.
 *
 * Layouts (b = 4 or 2 bits, L = 2^b - 1 levels):
 *   K, one sealed group of bt tokens (a pool block): [hd] f16 scale, [hd] f16 minimum, then
 *      bt rows of hd codes packed b bits each (channel c of a row at bit b*c). Codes are
 *      token-major so a row's score is one dot of q*scale with its codes plus q.min.
 *   V, one row: per 32 channels an f16 scale, an f16 minimum and 32 codes. kivi4's V row is
 *      exactly q4_1 (so its dequantisers are shared); kivi2's packs 4 codes per byte.
 * Dequantised x = scale * code + min. Scale and minimum are rounded to f16 before the codes
 * are chosen, so the error of any element is at most scale/2 plus f16 rounding of min.
 *
 * A K group can only be quantised once all its tokens exist; until then (and for the last
 * kv_residual tokens) rows stay in f16: see the pool's residual blocks (kvcache/pool.c).
 */
#include <math.h>
#include <string.h>

#include "kvserve/base.h"
#include "kvserve/kvtype.h"
#include "kvserve/quant.h"

int32_t ks_kivi_bits(ks_dtype t)
{
    return t == KS_DTYPE_KIVI4 ? 4 : t == KS_DTYPE_KIVI2 ? 2 : 0;
}

size_t ks_kivi_k_group_bytes(ks_dtype t, int32_t hd, int32_t bt)
{
    int32_t b = ks_kivi_bits(t);
    if (!b || hd < 1 || hd % 32 || bt < 1) return 0;
    return (size_t)hd * 4 + (size_t)bt * (size_t)hd * (size_t)b / 8;
}

/* Scale and minimum of values mn..mx with L levels, both rounded to f16. */
static void asym_params(float mn, float mx, int32_t levels, uint16_t *d16, uint16_t *m16)
{
    *m16 = ks_f32_to_f16(mn);
    float m = ks_f16_to_f32(*m16);
    /* the range from the rounded minimum, so the top level still reaches mx */
    *d16 = ks_f32_to_f16(mx > m ? (mx - m) / (float)levels : 0.0f);
}

static uint32_t asym_code(float x, float d, float m, int32_t levels)
{
    if (d <= 0.0f) return 0;
    float c = roundf((x - m) / d);
    return c < 0 ? 0u : c > (float)levels ? (uint32_t)levels : (uint32_t)c;
}

void ks_kivi_k_seal(ks_dtype t, const float *rows, int32_t n, int32_t hd, void *dst)
{
    int32_t b = ks_kivi_bits(t), levels = (1 << b) - 1;
    uint8_t *out = dst;
    uint16_t *dd = (uint16_t *)out, *mm = dd + hd;
    size_t rb = (size_t)hd * (size_t)b / 8;
    uint8_t *codes = out + (size_t)hd * 4;
    memset(codes, 0, (size_t)n * rb);
    for (int32_t c = 0; c < hd; c++) {
        float mn = INFINITY, mx = -INFINITY;
        for (int32_t j = 0; j < n; j++) {
            mn = fminf(mn, rows[(size_t)j * hd + c]);
            mx = fmaxf(mx, rows[(size_t)j * hd + c]);
        }
        uint16_t d16, m16;
        asym_params(mn, mx, levels, &d16, &m16);
        memcpy(&dd[c], &d16, 2);
        memcpy(&mm[c], &m16, 2);
        float d = ks_f16_to_f32(d16), m = ks_f16_to_f32(m16);
        for (int32_t j = 0; j < n; j++) {
            uint32_t q = asym_code(rows[(size_t)j * hd + c], d, m, levels);
            codes[(size_t)j * rb + (size_t)c * b / 8] |= (uint8_t)(q << (c * b % 8));
        }
    }
}

void ks_kivi_k_to_f32(ks_dtype t, const void *group, int32_t hd, int32_t j0, int32_t n, float *dst)
{
    int32_t b = ks_kivi_bits(t);
    const uint8_t *in = group;
    size_t rb = (size_t)hd * (size_t)b / 8;
    const uint8_t *codes = in + (size_t)hd * 4 + (size_t)j0 * rb;
    uint32_t mask = (1u << b) - 1u;
    for (int32_t c = 0; c < hd; c++) {
        uint16_t d16, m16;
        memcpy(&d16, in + 2 * (size_t)c, 2);
        memcpy(&m16, in + 2 * ((size_t)hd + (size_t)c), 2);
        float d = ks_f16_to_f32(d16), m = ks_f16_to_f32(m16);
        for (int32_t j = 0; j < n; j++) {
            uint32_t q = (codes[(size_t)j * rb + (size_t)c * b / 8] >> (c * b % 8)) & mask;
            dst[(size_t)j * hd + c] = d * (float)q + m;
        }
    }
}

/* kivi2 V: per 32 channels d, m (f16) and 8 bytes of 2-bit codes (channel j at byte j/4). */
#define KIVI2_V_BLOCK 12

static void kivi2_v_from_f32(const float *x, uint8_t *dst, int32_t hd)
{
    for (int32_t g = 0; g < hd / 32; g++, x += 32, dst += KIVI2_V_BLOCK) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < 32; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        uint16_t d16, m16;
        asym_params(mn, mx, 3, &d16, &m16);
        memcpy(dst, &d16, 2);
        memcpy(dst + 2, &m16, 2);
        float d = ks_f16_to_f32(d16), m = ks_f16_to_f32(m16);
        memset(dst + 4, 0, 8);
        for (int j = 0; j < 32; j++)
            dst[4 + j / 4] |= (uint8_t)(asym_code(x[j], d, m, 3) << (2 * (j % 4)));
    }
}

static void kivi2_v_to_f32(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t g = 0; g < n / 32; g++, src += KIVI2_V_BLOCK, dst += 32) {
        uint16_t d16, m16;
        memcpy(&d16, src, 2);
        memcpy(&m16, src + 2, 2);
        float d = ks_f16_to_f32(d16), m = ks_f16_to_f32(m16);
        for (int j = 0; j < 32; j++)
            dst[j] = d * (float)((src[4 + j / 4] >> (2 * (j % 4))) & 3) + m;
    }
}

size_t ks_kivi_v_row_bytes(ks_dtype t, int32_t hd)
{
    if (!ks_kivi_bits(t) || hd < 1 || hd % 32) return 0;
    return t == KS_DTYPE_KIVI4 ? qt_row_bytes(QT_Q4_1, hd) : (size_t)(hd / 32) * KIVI2_V_BLOCK;
}

void ks_kivi_v_from_f32(ks_dtype t, const float *src, void *dst, int32_t hd)
{
    if (t == KS_DTYPE_KIVI4)
        qt_quantize_row(QT_Q4_1, src, dst, hd);
    else
        kivi2_v_from_f32(src, dst, hd);
}

void ks_kivi_v_to_f32(ks_dtype t, const void *src, float *dst, int64_t n)
{
    if (t == KS_DTYPE_KIVI4)
        qt_dequantize_row(QT_Q4_1, src, dst, n);
    else
        kivi2_v_to_f32(src, dst, n);
}

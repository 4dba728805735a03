/* quant_kv.c - f32 -> block quantisers for the types the KV cache stores that weights never
 * needed at run time (Q4_1, Q5_0, Q5_1, IQ4_NL): llama.cpp's reference round-to-nearest
 * formulas (quantize_row_*_ref), so a cache written here holds the bytes llama.cpp's
 * `-ctk/-ctv` would store for the same rows. Q8_0 and Q4_0 live in quant.c.
 */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/* Q4_1: asymmetric, d = (max - min)/15, m = min, q = min(15, (int)((x - min)/d + 0.5)). */
void qt_quantize_q4_1(const float *x, void *dst, int64_t n)
{
    blk_q4_1 *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < QK4_0; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        const float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f32_to_f16(d);
        y[i].m = ks_f32_to_f16(mn);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int a = (int)((x[j] - mn) * id + 0.5f), b = (int)((x[j + 16] - mn) * id + 0.5f);
            a = a > 15 ? 15 : a;
            b = b > 15 ? 15 : b;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

/* The signed value of largest magnitude of a block (llama.cpp's "max" of Q4_0/Q5_0). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* Q5_0: d = max/-16, q = min(31, (int)(x/d + 16.5)); bit 4 of element j goes to qh bit j. */
void qt_quantize_q5_0(const float *x, void *dst, int64_t n)
{
    blk_q5_0 *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        y[i].d = ks_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int a = (int)(x[j] * id + 16.5f), b = (int)(x[j + 16] * id + 16.5f);
            a = a > 31 ? 31 : a;
            b = b > 31 ? 31 : b;
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

/* Q5_1: d = (max - min)/31, m = min, q = (int)((x - min)/d + 0.5). */
void qt_quantize_q5_1(const float *x, void *dst, int64_t n)
{
    blk_q5_1 *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < QK4_0; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        const float d = (mx - mn) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        y[i].d = ks_f32_to_f16(d);
        y[i].m = ks_f32_to_f16(mn);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int a = (int)((x[j] - mn) * id + 0.5f), b = (int)((x[j + 16] - mn) * id + 0.5f);
            a = a > 31 ? 31 : a; /* only reachable through rounding of id */
            b = b > 31 ? 31 : b;
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

/* Nearest of the 16 IQ4_NL levels to x (ties to the lower one), by bisection. */
static int iq4_nearest(float x)
{
    const int8_t *v = qt_iq4_values;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < v[mid])
            hi = mid;
        else
            lo = mid;
    }
    return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

/* Weighted least-squares fit of the scale for the levels picked with inverse scale id. */
static float iq4_fit(const float *x, const float *w, float id, float *sumq2)
{
    float sqx = 0.0f, sq2 = 0.0f;
    for (int j = 0; j < QK4_0; j++) {
        float q = qt_iq4_values[iq4_nearest(id * x[j])];
        sqx += w[j] * q * x[j];
        sq2 += w[j] * q * q;
    }
    *sumq2 = sq2;
    return sqx;
}

/* IQ4_NL as llama.cpp's quantize_row_iq4_nl_ref: weights x^2, a first scale -max/-127, then
 * 15 trial inverse scales (itry + values[0])/max, keeping the best weighted fit. */
static void iq4_nl_block(const float *x, blk_iq4_nl *y)
{
    float w[QK4_0], amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK4_0; j++) {
        w[j] = x[j] * x[j];
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    memset(y, 0, sizeof(*y));
    if (amax < 1e-15f) return;
    float sq2, sqx = iq4_fit(x, w, 1.0f / (-max / qt_iq4_values[0]), &sq2);
    float d = sqx / sq2, best = d * sqx;
    for (int itry = -7; itry <= 7; itry++) {
        sqx = iq4_fit(x, w, (float)(itry + qt_iq4_values[0]) / max, &sq2);
        if (sq2 > 0 && sqx * sqx > best * sq2) {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    y->d = ks_f32_to_f16(d);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK4_0 / 2; j++)
        y->qs[j] = (uint8_t)(iq4_nearest(id * x[j]) | (iq4_nearest(id * x[j + 16]) << 4));
}

void qt_quantize_iq4_nl(const float *x, void *dst, int64_t n)
{
    blk_iq4_nl *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++)
        iq4_nl_block(x + i * QK4_0, &y[i]);
}

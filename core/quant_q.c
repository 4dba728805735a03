/* quant_q.c - scalar dequantisation and dot kernels of the 32-element block types Q4_1,
 * Q5_0, Q5_1 and IQ4_NL, of IQ4_XS, and the Q8_1 activation quantiser.
 *
 * These are the oracle the SIMD kernels (quant_x86.h) are tested against and the fallback on
 * CPUs without AVX2. Dots follow llama.cpp's pairing: Q5_0 and IQ4_NL with Q8_0, Q4_1 and
 * Q5_1 with Q8_1 (whose s = d * sum(q) turns the weight's min into one product per block),
 * IQ4_XS with Q8_K. Each block's integer sum is exact; scales are applied in f32.
 * Invariant: the Q8_1 quantiser is llama.cpp's x86 one, bit for bit.
 */
#include <math.h>
#include <string.h>

#include "kvserve/base.h"
#include "quant_impl.h"

/* ---- dequantisation ---- */

static void dequant_q4_1(const void *src, float *y, int64_t nb)
{
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = ks_f16_to_f32(b[i].d), m = ks_f16_to_f32(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* Element j (0..31) of a Q5 block as 0..31. */
static inline int q5_get(const uint8_t qs[16], const uint8_t qh[4], int j)
{
    int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return lo | (qt_q5_hbit(qh, j) << 4);
}

static void dequant_q5_0(const void *src, float *y, int64_t nb)
{
    const blk_q5_0 *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = ks_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)(q5_get(b[i].qs, b[i].qh, j) - 16) * d;
    }
}

static void dequant_q5_1(const void *src, float *y, int64_t nb)
{
    const blk_q5_1 *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = ks_f16_to_f32(b[i].d), m = ks_f16_to_f32(b[i].m);
        for (int j = 0; j < 32; j++)
            y[j] = (float)q5_get(b[i].qs, b[i].qh, j) * d + m;
    }
}

static void dequant_q8_1(const void *src, float *y, int64_t nb)
{
    const blk_q8_1 *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK8_0) {
        float d = ks_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_iq4_nl(const void *src, float *y, int64_t nb)
{
    const blk_iq4_nl *b = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = ks_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)qt_iq4_values[b[i].qs[j] & 0xF];
            y[j + 16] = d * (float)qt_iq4_values[b[i].qs[j] >> 4];
        }
    }
}

static void dequant_iq4_xs(const void *src, float *y, int64_t nb)
{
    const blk_iq4_xs *b = src;
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            float dl = d * (float)qt_iq4xs_scale(&b[i], ib);
            const uint8_t *q = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)qt_iq4_values[q[j] & 0xF];
                y[j + 16] = dl * (float)qt_iq4_values[q[j] >> 4];
            }
        }
    }
}

/* ---- activation quantisation ---- */

/* llama.cpp's x86 quantize_row_q8_1: d = amax/127, q = rne(x * 127/amax), s = fp16(d*sum q). */
void qt_quantize_q8_1(const float *x, void *dst, int64_t n)
{
    blk_q8_1 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f, id = amax != 0.0f ? 127.f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_0; j++) {
            int v = (int)rintf(x[j] * id);
            v = v > 127 ? 127 : v < -128 ? -128 : v;
            y[i].qs[j] = (int8_t)v;
            sum += v;
        }
        y[i].d = ks_f32_to_f16(d);
        y[i].s = ks_f32_to_f16(d * (float)sum);
    }
}

/* ---- scalar dots (the oracle) ---- */

static float dot_q4_1(int64_t n, const void *w, const void *x)
{
    const blk_q4_1 *a = w;
    const blk_q8_1 *b = x;
    float s = 0.0f, sm = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (a[i].qs[j] & 0xF) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + 16];
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
        sm += ks_f16_to_f32(a[i].m) * ks_f16_to_f32(b[i].s);
    }
    return s + sm;
}

static float dot_q5_0(int64_t n, const void *w, const void *x)
{
    const blk_q5_0 *a = w;
    const blk_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++)
            isum += (q5_get(a[i].qs, a[i].qh, j) - 16) * b[i].qs[j];
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
    }
    return s;
}

static float dot_q5_1(int64_t n, const void *w, const void *x)
{
    const blk_q5_1 *a = w;
    const blk_q8_1 *b = x;
    float s = 0.0f, sm = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++)
            isum += q5_get(a[i].qs, a[i].qh, j) * b[i].qs[j];
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
        sm += ks_f16_to_f32(a[i].m) * ks_f16_to_f32(b[i].s);
    }
    return s + sm;
}

static float dot_iq4_nl(int64_t n, const void *w, const void *x)
{
    const blk_iq4_nl *a = w;
    const blk_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += qt_iq4_values[a[i].qs[j] & 0xF] * b[i].qs[j] +
                    qt_iq4_values[a[i].qs[j] >> 4] * b[i].qs[j + 16];
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
    }
    return s;
}

static float dot_iq4_xs(int64_t n, const void *w, const void *x)
{
    const blk_iq4_xs *a = w;
    const blk_q8_k *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *q = a[i].qs + 16 * ib;
            const int8_t *y = b[i].qs + 32 * ib;
            int isum = 0;
            for (int j = 0; j < 16; j++)
                isum += qt_iq4_values[q[j] & 0xF] * y[j] + qt_iq4_values[q[j] >> 4] * y[j + 16];
            sum += qt_iq4xs_scale(&a[i], ib) * isum;
        }
        s += (ks_f16_to_f32(a[i].d) * b[i].d) * (float)sum;
    }
    return s;
}

void qt_kernels_fill_scalar_q(qt_kernels *k)
{
    k->dequant[QT_Q4_1] = dequant_q4_1;
    k->dequant[QT_Q5_0] = dequant_q5_0;
    k->dequant[QT_Q5_1] = dequant_q5_1;
    k->dequant[QT_Q8_1] = dequant_q8_1;
    k->dequant[QT_IQ4_NL] = dequant_iq4_nl;
    k->dequant[QT_IQ4_XS] = dequant_iq4_xs;
    k->dot[QT_Q4_1] = dot_q4_1;
    k->dot[QT_Q5_0] = dot_q5_0;
    k->dot[QT_Q5_1] = dot_q5_1;
    k->dot[QT_IQ4_NL] = dot_iq4_nl;
    k->dot[QT_IQ4_XS] = dot_iq4_xs;
}

/* quant_k.c - scalar dequantisation and dot kernels of the K-quants Q2_K, Q3_K and Q5_K.
 *
 * The oracle for the SIMD kernels (quant_x86.h) and the fallback without AVX2. Weights are
 * dotted with Q8_K activations (one f32 scale per 256 values, plus sums of 16), like
 * llama.cpp: the integer sum of a super-block is exact, the two fp16 super-scales are applied
 * once per super-block in f32; a min term (Q2_K, Q5_K) goes through the activation's bsums.
 */
#include <string.h>

#include "kvserve/base.h"
#include "quant_impl.h"

/* Dequantisers loop block-structured (not per element): prefill outside exact mode
 * dequantises whole weight tiles with them. Values are d*scale*q - dmin*min in that order,
 * as gguf-py computes them. */
static void dequant_q2_k(const void *src, float *y, int64_t nb)
{
    const blk_q2_k *b = src;
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d), dmin = ks_f16_to_f32(b[i].dmin);
        for (int g = 0; g < 16; g++, y += 16) { /* element 16g+l: 128n + 32j + 16h + l */
            int n = g / 8, j = (g % 8) / 2, h = g % 2;
            uint8_t sc = b[i].scales[g];
            float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            const uint8_t *q = b[i].qs + 32 * n + 16 * h;
            for (int l = 0; l < 16; l++)
                y[l] = dl * (float)((q[l] >> (2 * j)) & 3) - ml;
        }
    }
}

static void dequant_q3_k(const void *src, float *y, int64_t nb)
{
    const blk_q3_k *b = src;
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d);
        for (int g = 0; g < 16; g++, y += 16) {
            int n = g / 8, j = (g % 8) / 2, h = g % 2;
            float dl = d * (float)qt_q3k_scale(b[i].scales, g);
            const uint8_t *q = b[i].qs + 32 * n + 16 * h, *hm = b[i].hmask + 16 * h;
            for (int l = 0; l < 16; l++) {
                int v = ((q[l] >> (2 * j)) & 3) - (((hm[l] >> (4 * n + j)) & 1) ? 0 : 4);
                y[l] = dl * (float)v;
            }
        }
    }
}

static void dequant_q5_k(const void *src, float *y, int64_t nb)
{
    const blk_q5_k *b = src;
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d), dmin = ks_f16_to_f32(b[i].dmin);
        for (int j = 0; j < 8; j++, y += 32) { /* 32 elements: nibble j%2 of qs[32(j/2)+l] */
            uint8_t sc, m;
            qt_q4k_scale_min(j, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> (4 * (j % 2))) & 0xF) | (((b[i].qh[l] >> j) & 1) << 4);
                y[l] = d1 * (float)v - m1;
            }
        }
    }
}

/* Dots: per super-block an exact integer sum (per 16 or 32 elements times the scale), then
 * the fp16 super-scales once, in f32. Loops are block-structured like the dequantisers. */
static float dot_q2_k(int64_t n, const void *w, const void *x)
{
    const blk_q2_k *a = w;
    const blk_q8_k *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum_q = 0, sum_m = 0;
        for (int g = 0; g < 16; g++) { /* element 16g+l: 128n + 32j + 16h + l */
            int n2 = g / 8, j = (g % 8) / 2, h = g % 2, isum = 0;
            const uint8_t *q = a[i].qs + 32 * n2 + 16 * h;
            const int8_t *y = b[i].qs + 16 * g;
            for (int l = 0; l < 16; l++)
                isum += ((q[l] >> (2 * j)) & 3) * y[l];
            sum_q += (a[i].scales[g] & 0xF) * isum;
            sum_m += (a[i].scales[g] >> 4) * b[i].bsums[g];
        }
        float d = b[i].d * ks_f16_to_f32(a[i].d), dmin = b[i].d * ks_f16_to_f32(a[i].dmin);
        s += d * (float)sum_q - dmin * (float)sum_m;
    }
    return s;
}

static float dot_q3_k(int64_t n, const void *w, const void *x)
{
    const blk_q3_k *a = w;
    const blk_q8_k *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int g = 0; g < 16; g++) {
            int n2 = g / 8, j = (g % 8) / 2, h = g % 2, isum = 0;
            const uint8_t *q = a[i].qs + 32 * n2 + 16 * h, *hm = a[i].hmask + 16 * h;
            const int8_t *y = b[i].qs + 16 * g;
            for (int l = 0; l < 16; l++) {
                int v = ((q[l] >> (2 * j)) & 3) - (((hm[l] >> (4 * n2 + j)) & 1) ? 0 : 4);
                isum += v * y[l];
            }
            sum += qt_q3k_scale(a[i].scales, g) * isum;
        }
        s += (b[i].d * ks_f16_to_f32(a[i].d)) * (float)sum;
    }
    return s;
}

static float dot_q5_k(int64_t n, const void *w, const void *x)
{
    const blk_q5_k *a = w;
    const blk_q8_k *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum_q = 0, sum_m = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            qt_q4k_scale_min(j, a[i].scales, &sc, &m);
            const uint8_t *q = a[i].qs + 32 * (j / 2);
            const int8_t *y = b[i].qs + 32 * j;
            int isum = 0;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> (4 * (j % 2))) & 0xF) | (((a[i].qh[l] >> j) & 1) << 4);
                isum += v * y[l];
            }
            sum_q += sc * isum;
            sum_m += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        float d = b[i].d * ks_f16_to_f32(a[i].d), dmin = b[i].d * ks_f16_to_f32(a[i].dmin);
        s += d * (float)sum_q - dmin * (float)sum_m;
    }
    return s;
}

void qt_kernels_fill_scalar_k(qt_kernels *k)
{
    k->dequant[QT_Q2_K] = dequant_q2_k;
    k->dequant[QT_Q3_K] = dequant_q3_k;
    k->dequant[QT_Q5_K] = dequant_q5_k;
    k->dot[QT_Q2_K] = dot_q2_k;
    k->dot[QT_Q3_K] = dot_q3_k;
    k->dot[QT_Q5_K] = dot_q5_k;
}

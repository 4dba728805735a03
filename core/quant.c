/* quant.c - tensor type table, scalar reference kernels and run-time dispatch.
 *
 * The scalar code here is the oracle the SIMD files are tested against and the fallback on
 * CPUs without AVX2. Numerics follow llama.cpp's x86 CPU backend: Q8_0 activations use its
 * AVX path (id = 127/amax, round half to even), Q8_K uses its reference quantizer (which x86
 * also runs), quantized dots are exact integer sums per block scaled in f32.
 * Invariant: every implementation of qt_quantize_row produces the same bytes; dots agree to
 * f32 rounding.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/quant.h"
#include "quant_impl.h"

/* ---- type table ---- */

typedef struct qt_type_info {
    const char *name;
    int64_t blck;
    size_t bytes;
} qt_type_info;

static const qt_type_info *type_info(uint32_t t)
{
    static const qt_type_info f32 = {"f32", 1, 4}, f16 = {"f16", 1, 2}, bf16 = {"bf16", 1, 2},
                              q8_0 = {"q8_0", QK8_0, sizeof(blk_q8_0)},
                              q4_0 = {"q4_0", QK4_0, sizeof(blk_q4_0)},
                              q4_k = {"q4_K", QK_K, sizeof(blk_q4_k)},
                              q6_k = {"q6_K", QK_K, sizeof(blk_q6_k)},
                              q8_k = {"q8_K", QK_K, sizeof(blk_q8_k)},
                              q4_1 = {"q4_1", QK4_0, sizeof(blk_q4_1)},
                              q5_0 = {"q5_0", QK4_0, sizeof(blk_q5_0)},
                              q5_1 = {"q5_1", QK4_0, sizeof(blk_q5_1)},
                              q8_1 = {"q8_1", QK8_0, sizeof(blk_q8_1)},
                              q2_k = {"q2_K", QK_K, sizeof(blk_q2_k)},
                              q3_k = {"q3_K", QK_K, sizeof(blk_q3_k)},
                              q5_k = {"q5_K", QK_K, sizeof(blk_q5_k)},
                              iq4_nl = {"iq4_nl", QK4_0, sizeof(blk_iq4_nl)},
                              iq4_xs = {"iq4_xs", QK_K, sizeof(blk_iq4_xs)};
    switch (t) {
    case QT_F32:
        return &f32;
    case QT_F16:
        return &f16;
    case QT_BF16:
        return &bf16;
    case QT_Q8_0:
        return &q8_0;
    case QT_Q4_0:
        return &q4_0;
    case QT_Q4_K:
        return &q4_k;
    case QT_Q6_K:
        return &q6_k;
    case QT_Q8_K:
        return &q8_k;
    case QT_Q4_1:
        return &q4_1;
    case QT_Q5_0:
        return &q5_0;
    case QT_Q5_1:
        return &q5_1;
    case QT_Q8_1:
        return &q8_1;
    case QT_Q2_K:
        return &q2_k;
    case QT_Q3_K:
        return &q3_k;
    case QT_Q5_K:
        return &q5_k;
    case QT_IQ4_NL:
        return &iq4_nl;
    case QT_IQ4_XS:
        return &iq4_xs;
    default:
        return NULL;
    }
}

bool qt_type_supported(uint32_t type)
{
    return type != QT_Q8_K && type != QT_Q8_1 && type_info(type) != NULL;
}

const char *qt_type_name(uint32_t type)
{
    const qt_type_info *ti = type_info(type);
    return ti ? ti->name : "unknown";
}

int64_t qt_block_elems(qt_type t)
{
    const qt_type_info *ti = type_info(t);
    return ti ? ti->blck : 0;
}

size_t qt_block_bytes(qt_type t)
{
    const qt_type_info *ti = type_info(t);
    return ti ? ti->bytes : 0;
}

size_t qt_row_bytes(qt_type t, int64_t n)
{
    const qt_type_info *ti = type_info(t);
    if (!ti || n < 0 || n % ti->blck) return 0;
    return (size_t)(n / ti->blck) * ti->bytes;
}

qt_type qt_vec_dot_type(qt_type w)
{
    switch (w) {
    case QT_Q8_0:
    case QT_Q4_0:
    case QT_Q5_0:
    case QT_IQ4_NL:
        return QT_Q8_0;
    case QT_Q4_1:
    case QT_Q5_1:
        return QT_Q8_1;
    case QT_Q2_K:
    case QT_Q3_K:
    case QT_Q4_K:
    case QT_Q5_K:
    case QT_Q6_K:
    case QT_IQ4_XS:
        return QT_Q8_K;
    default:
        return w; /* F32, F16, BF16 */
    }
}

static inline const qt_kernels *kern(void);

/* ---- dequantisation ---- */

static void dequant_q8_0(const blk_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            y[i * QK8_0 + j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_q4_0(const blk_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[i * QK4_0 + j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            y[i * QK4_0 + j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_k(const blk_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d), dmin = ks_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int j = 0; j < 4; j++) { /* 64 elements: two sub-blocks share 32 bytes */
            uint8_t sc0, m0, sc1, m1;
            qt_q4k_scale_min(2 * j, b[i].scales, &sc0, &m0);
            qt_q4k_scale_min(2 * j + 1, b[i].scales, &sc1, &m1);
            float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
            for (int l = 0; l < 32; l++)
                *y++ = d0 * (float)(q[l] & 0xF) - mm0;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] >> 4) - mm1;
            q += 32;
        }
    }
}

/* 6-bit quant e (0..255) of a Q6_K block, as 0..63. */
static int q6k_get(const blk_q6_k *b, int e)
{
    int n = e / 128, r = e % 128, k = r / 32, l = r % 32;
    uint8_t lo = b->ql[n * 64 + l + 32 * (k & 1)];
    lo = (k >= 2) ? (lo >> 4) : (lo & 0xF);
    int hi = (b->qh[n * 32 + l] >> (2 * k)) & 3;
    return lo | (hi << 4);
}

static void dequant_q6_k(const blk_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = ks_f16_to_f32(b[i].d);
        for (int e = 0; e < QK_K; e++)
            *y++ = d * (float)b[i].scales[e / 16] * (float)(q6k_get(&b[i], e) - 32);
    }
}

static void dequant_q8_k(const blk_q8_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < QK_K; j++)
            *y++ = b[i].d * (float)b[i].qs[j];
}

void qt_dequantize_row(qt_type t, const void *src, float *dst, int64_t n)
{
    int64_t blck = qt_block_elems(t);
    if (blck <= 0 || n <= 0) return;
    int64_t nb = n / blck;
    switch (t) {
    case QT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case QT_F16:
        qt_f16_to_f32_row(src, dst, n);
        break;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ks_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case QT_Q8_0:
        dequant_q8_0(src, dst, nb);
        break;
    case QT_Q4_0:
        dequant_q4_0(src, dst, nb);
        break;
    case QT_Q4_K:
        dequant_q4_k(src, dst, nb);
        break;
    case QT_Q6_K:
        dequant_q6_k(src, dst, nb);
        break;
    case QT_Q8_K:
        dequant_q8_k(src, dst, nb);
        break;
    default: /* the newer types: quant_q.c, quant_k.c */
        if (kern()->dequant[t]) kern()->dequant[t](src, dst, nb);
        break;
    }
}

/* ---- quantisation ---- */

/* Round half to even for |v| < 2^22, like llama.cpp's nearest_int and _MM_ROUND_NEAREST. */
static inline int round_even(float v)
{
    return (int)rintf(v);
}

/* llama.cpp's x86 quantize_row_q8_0: d = amax/127 stored as fp16, q = rne(x * (127/amax)). */
static void quant_q8_0_scalar(const float *x, void *dst, int64_t n)
{
    blk_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        y[i].d = ks_f32_to_f16(amax / 127.f);
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        for (int j = 0; j < QK8_0; j++) {
            int v = round_even(x[j] * id);
            y[i].qs[j] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
        }
    }
}

/* llama.cpp's quantize_row_q8_K_ref (what its x86 backend runs). */
static void quant_q8_k(const float *x, blk_q8_k *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = round_even(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += y[i].qs[g * 16 + l];
            y[i].bsums[g] = (int16_t)s;
        }
        y[i].d = 1 / iscale;
    }
}

/* llama.cpp's quantize_row_q4_0_ref: d = max/-8 (signed max), q = min(15, (int)(x/d + 8.5)). */
static void quant_q4_0(const float *x, blk_q4_0 *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A plain min/max Q4_K quantizer (not llama.cpp's iterative search): good enough for tests
 * and generated models. */
static void quant_q4_k(const float *x, blk_q4_k *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float scale[8], minv[8], max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = 0.0f;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / 15.0f;
            minv[j] = -lo;
            max_scale = fmaxf(max_scale, scale[j]);
            max_min = fmaxf(max_min, minv[j]);
        }
        float d = max_scale / 63.0f, dmin = max_min / 63.0f;
        y[i].d = ks_f32_to_f16(d);
        y[i].dmin = ks_f32_to_f16(dmin);
        d = ks_f16_to_f32(y[i].d);
        dmin = ks_f16_to_f32(y[i].dmin);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(d > 0 ? clampi((int)ceilf(scale[j] / d), 0, 63) : 0);
            m[j] = (uint8_t)(dmin > 0 ? clampi(round_even(minv[j] / dmin), 0, 63) : 0);
        }
        memset(y[i].scales, 0, 12);
        for (int j = 0; j < 4; j++) {
            y[i].scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            y[i].scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
            y[i].scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
        }
        for (int j = 0; j < 8; j++) {
            float ds = d * sc[j], dm = dmin * m[j];
            for (int l = 0; l < 32; l++) {
                int q = ds > 0 ? clampi(round_even((x[32 * j + l] + dm) / ds), 0, 15) : 0;
                uint8_t *p = &y[i].qs[32 * (j / 2) + l];
                *p = (j & 1) ? (uint8_t)((*p & 0xF) | (q << 4)) : (uint8_t)q;
            }
        }
    }
}

/* A plain absmax Q6_K quantizer (not llama.cpp's search). */
static void quant_q6_k(const float *x, blk_q6_k *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float scale[16], max_scale = 0.0f;
        for (int g = 0; g < 16; g++) {
            float amax = 0.0f;
            for (int l = 0; l < 16; l++)
                amax = fmaxf(amax, fabsf(x[16 * g + l]));
            scale[g] = amax / 31.0f;
            max_scale = fmaxf(max_scale, scale[g]);
        }
        float d = max_scale / 127.0f;
        y[i].d = ks_f32_to_f16(d);
        d = ks_f16_to_f32(y[i].d);
        memset(y[i].ql, 0, sizeof(y[i].ql));
        memset(y[i].qh, 0, sizeof(y[i].qh));
        for (int g = 0; g < 16; g++)
            y[i].scales[g] = (int8_t)(d > 0 ? clampi((int)ceilf(scale[g] / d), 0, 127) : 0);
        for (int e = 0; e < QK_K; e++) {
            float ds = d * y[i].scales[e / 16];
            int q = ds > 0 ? clampi(round_even(x[e] / ds), -32, 31) + 32 : 32;
            int nn = e / 128, r = e % 128, k = r / 32, l = r % 32;
            uint8_t *lo = &y[i].ql[nn * 64 + l + 32 * (k & 1)];
            *lo |= (uint8_t)((q & 0xF) << (k >= 2 ? 4 : 0));
            y[i].qh[nn * 32 + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

/* ---- scalar dot products (the oracle) ---- */

static float dot_f32_scalar(int64_t n, const void *w, const void *x)
{
    const float *a = w, *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(a[i] * b[i]);
    return (float)s;
}

static float dot_f16_scalar(int64_t n, const void *w, const void *x)
{
    const uint16_t *a = w, *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(ks_f16_to_f32(a[i]) * ks_f16_to_f32(b[i]));
    return (float)s;
}

static float dot_bf16_scalar(int64_t n, const void *w, const void *x)
{
    const uint16_t *a = w, *b = x;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(ks_bf16_to_f32(a[i]) * ks_bf16_to_f32(b[i]));
    return (float)s;
}

static float dot_q8_0_scalar(int64_t n, const void *w, const void *x)
{
    const blk_q8_0 *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++)
            isum += a[i].qs[j] * b[i].qs[j];
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
    }
    return s;
}

static float dot_q4_0_scalar(int64_t n, const void *w, const void *x)
{
    const blk_q4_0 *a = w;
    const blk_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j];
            isum += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + 16];
        }
        s += (float)isum * (ks_f16_to_f32(a[i].d) * ks_f16_to_f32(b[i].d));
    }
    return s;
}

static float dot_q4_k_scalar(int64_t n, const void *w, const void *x)
{
    const blk_q4_k *a = w;
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
            for (int l = 0; l < 32; l++)
                isum += ((j & 1) ? q[l] >> 4 : q[l] & 0xF) * y[l];
            sum_q += sc * isum;
            sum_m += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        float d = b[i].d * ks_f16_to_f32(a[i].d), dmin = b[i].d * ks_f16_to_f32(a[i].dmin);
        s += d * (float)sum_q - dmin * (float)sum_m;
    }
    return s;
}

static float dot_q6_k_scalar(int64_t n, const void *w, const void *x)
{
    const blk_q6_k *a = w;
    const blk_q8_k *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int g = 0; g < 16; g++) {
            int isum = 0;
            for (int l = 0; l < 16; l++)
                isum += (q6k_get(&a[i], 16 * g + l) - 32) * b[i].qs[16 * g + l];
            sum += a[i].scales[g] * isum;
        }
        s += (b[i].d * ks_f16_to_f32(a[i].d)) * (float)sum;
    }
    return s;
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = ks_f32_to_f16(src[i]);
}

static void f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = ks_f16_to_f32(src[i]);
}

/* ---- dispatch ---- */

static qt_kernels g_kernels[3];
static bool g_have[3];
static const qt_kernels *g_cur;
static qt_impl g_cur_impl;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void fill_scalar(qt_kernels *k)
{
    memset(k, 0, sizeof(*k));
    k->dot[QT_F32] = dot_f32_scalar;
    k->dot[QT_F16] = dot_f16_scalar;
    k->dot[QT_BF16] = dot_bf16_scalar;
    k->dot[QT_Q8_0] = dot_q8_0_scalar;
    k->dot[QT_Q4_0] = dot_q4_0_scalar;
    k->dot[QT_Q4_K] = dot_q4_k_scalar;
    k->dot[QT_Q6_K] = dot_q6_k_scalar;
    k->quantize_q8_0 = quant_q8_0_scalar;
    k->f32_to_f16 = f32_to_f16_scalar;
    qt_kernels_fill_scalar_q(k);
    qt_kernels_fill_scalar_k(k);
    k->f16_to_f32 = f16_to_f32_scalar;
}

static void dispatch_init(void)
{
    fill_scalar(&g_kernels[QT_IMPL_SCALAR]);
    g_have[QT_IMPL_SCALAR] = true;
    g_have[QT_IMPL_AVX2] =
        ks_cpu_has(KS_CPU_AVX2) && ks_cpu_has(KS_CPU_FMA) && ks_cpu_has(KS_CPU_F16C);
    g_have[QT_IMPL_AVX512] = g_have[QT_IMPL_AVX2] && ks_cpu_has(KS_CPU_AVX512F) &&
                             ks_cpu_has(KS_CPU_AVX512BW) && ks_cpu_has(KS_CPU_AVX512VL) &&
                             ks_cpu_has(KS_CPU_AVX512DQ) && ks_cpu_has(KS_CPU_AVX512VNNI) &&
                             ks_cpu_has(KS_CPU_AVX512BF16);
    if (g_have[QT_IMPL_AVX2]) {
        g_kernels[QT_IMPL_AVX2] = g_kernels[QT_IMPL_SCALAR];
        qt_kernels_fill_avx2(&g_kernels[QT_IMPL_AVX2]);
        qt_kernels_fill_x_avx2(&g_kernels[QT_IMPL_AVX2]);
    }
    if (g_have[QT_IMPL_AVX512]) {
        g_kernels[QT_IMPL_AVX512] = g_kernels[QT_IMPL_AVX2];
        qt_kernels_fill_avx512(&g_kernels[QT_IMPL_AVX512]);
        qt_kernels_fill_x_avx512(&g_kernels[QT_IMPL_AVX512]);
    }
    g_cur_impl = g_have[QT_IMPL_AVX512] ? QT_IMPL_AVX512
                 : g_have[QT_IMPL_AVX2] ? QT_IMPL_AVX2
                                        : QT_IMPL_SCALAR;
    const char *env = getenv("KVSERVE_QT_IMPL");
    if (env) {
        qt_impl want = !strcmp(env, "scalar")   ? QT_IMPL_SCALAR
                       : !strcmp(env, "avx2")   ? QT_IMPL_AVX2
                       : !strcmp(env, "avx512") ? QT_IMPL_AVX512
                                                : g_cur_impl;
        if (g_have[want])
            g_cur_impl = want;
        else
            ks_warn("KVSERVE_QT_IMPL=%s: not supported by this CPU, using the best", env);
    }
    g_cur = &g_kernels[g_cur_impl];
}

static inline const qt_kernels *kern(void)
{
    pthread_once(&g_once, dispatch_init);
    return g_cur;
}

int qt_set_impl(qt_impl impl)
{
    kern();
    if ((unsigned)impl > QT_IMPL_AVX512 || !g_have[impl]) return KS_ERR_UNSUPPORTED;
    g_cur_impl = impl;
    g_cur = &g_kernels[impl];
    return KS_OK;
}

qt_impl qt_get_impl(void)
{
    kern();
    return g_cur_impl;
}

qt_impl qt_best_impl(void)
{
    kern();
    return g_have[QT_IMPL_AVX512] ? QT_IMPL_AVX512
           : g_have[QT_IMPL_AVX2] ? QT_IMPL_AVX2
                                  : QT_IMPL_SCALAR;
}

void qt_quantize_row(qt_type t, const float *src, void *dst, int64_t n)
{
    switch (t) {
    case QT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case QT_F16:
        kern()->f32_to_f16(src, dst, n);
        break;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = ks_f32_to_bf16(src[i]);
        break;
    case QT_Q8_0:
        kern()->quantize_q8_0(src, dst, n);
        break;
    case QT_Q8_K:
        quant_q8_k(src, dst, n);
        break;
    case QT_Q8_1:
        qt_quantize_q8_1(src, dst, n);
        break;
    case QT_Q4_0:
        quant_q4_0(src, dst, n);
        break;
    case QT_Q4_K:
        quant_q4_k(src, dst, n);
        break;
    case QT_Q6_K:
        quant_q6_k(src, dst, n);
        break;
    case QT_Q4_1:
        qt_quantize_q4_1(src, dst, n);
        break;
    case QT_Q5_0:
        qt_quantize_q5_0(src, dst, n);
        break;
    case QT_Q5_1:
        qt_quantize_q5_1(src, dst, n);
        break;
    case QT_IQ4_NL:
        qt_quantize_iq4_nl(src, dst, n);
        break;
    default:
        break;
    }
}

void qt_roundtrip_row(qt_type t, const float *src, float *dst, int64_t n, void *tmp)
{
    if (t == QT_F32) {
        if (dst != src) memmove(dst, src, (size_t)n * sizeof(float));
        return;
    }
    qt_quantize_row(t, src, tmp, n);
    qt_dequantize_row(t, tmp, dst, n);
}

float qt_vec_dot(qt_type w, int64_t n, const void *w_row, const void *x_row)
{
    if ((unsigned)w >= QT_TYPE_MAX) return 0.0f;
    qt_dot_fn f = kern()->dot[w];
    return f ? f(n, w_row, x_row) : 0.0f;
}

void qt_matvec(qt_type w, int64_t n, const void *w_rows, size_t w_row_bytes, int64_t n_rows,
               const void *x, size_t x_bytes, int64_t n_b, float *y, int64_t y_stride)
{
    if ((unsigned)w >= QT_TYPE_MAX) return;
    const qt_kernels *k = kern();
    if (k->matvec[w]) {
        k->matvec[w](n, w_rows, w_row_bytes, n_rows, x, x_bytes, n_b, y, y_stride);
        return;
    }
    qt_dot_fn f = k->dot[w];
    if (!f) return;
    const char *wr = w_rows, *xb = x;
    /* Row-outer: the row stays in L1 while it meets every activation. */
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t b = 0; b < n_b; b++)
            y[r * y_stride + b] = f(n, wr + (size_t)r * w_row_bytes, xb + (size_t)b * x_bytes);
}

void qt_matvec_gemm(qt_type w, int64_t n, const void *w_rows, size_t w_row_bytes, int64_t n_rows,
                    const void *x, size_t x_bytes, int64_t n_b, float *y, int64_t y_stride)
{
    if ((unsigned)w >= QT_TYPE_MAX) return;
    qt_matvec_fn f = kern()->matvec_gemm[w];
    if (f)
        f(n, w_rows, w_row_bytes, n_rows, x, x_bytes, n_b, y, y_stride);
    else
        qt_matvec(w, n, w_rows, w_row_bytes, n_rows, x, x_bytes, n_b, y, y_stride);
}

void qt_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n)
{
    kern()->f32_to_f16(src, dst, n);
}

void qt_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n)
{
    kern()->f16_to_f32(src, dst, n);
}

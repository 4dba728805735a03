/* vmath.c - exp, softmax sums and SwiGLU with llama.cpp's numerics (see vmath.h). Each body
 * is compiled twice: with hardware FMA (picked at run time when the CPU has it) and plain,
 * where the C library's fmaf is exactly rounded too, so both give the same bits. */
#include "vmath.h"
#include "vmath_avx512.h"

#include "kvserve/quant.h"

#include <math.h>
#include <stdint.h>

#include "kvserve/base.h"

#if defined(__x86_64__)
#define VM_FMA __attribute__((target("fma")))
#else
#define VM_FMA
#endif

/* Whether to take the FMA builds; read once (a benign race: every thread computes the same). */
static int g_fma = -1;
static inline bool use_fma(void)
{
    if (g_fma < 0) g_fma = ks_cpu_has(KS_CPU_FMA);
    return g_fma;
}

static inline float vm_expf_inline(float x)
{
    const float r = 0x1.8p23f;
    const float z = __builtin_fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = __builtin_fmaf(-n, 0x1.7f7d1cp-20f, __builtin_fmaf(-n, 0x1.62e4p-1f, x));
    /* Out of range, or NaN (which must not reach the int conversion below: that is UB). */
    if (!(fabsf(n) <= 192.0f)) return n > 0 ? INFINITY : (n != n ? n : 0.0f);
    const float u = b * b;
    const float hi = __builtin_fmaf(__builtin_fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    __builtin_fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f));
    const float j = __builtin_fmaf(hi, u, __builtin_fmaf(0x1.ffffecp-1f, b, 1.0f));
    const int e = (int)n;
    if (e >= -126 && e <= 127) { /* 2^e is a normal float: one exact multiply */
        union {
            uint32_t u;
            float f;
        } two = {.u = (uint32_t)(e + 127) << 23};
        return j * two.f;
    }
    return ldexpf(j, e);
}

static inline float expf_body(float x)
{
    if (isnan(x)) return x;
    return vm_expf_inline(x);
}

static inline double exp_sum_body(float *y, const float *x, int32_t n, float max)
{
    double sum = 0.0;
    for (int32_t i0 = 0; i0 < n; i0 += 16) {
        float v[16];
        for (int32_t i = 0; i < 16; i++) {
            v[i] = i0 + i < n ? vm_expf_inline(x[i0 + i] - max) : 0.0f;
            if (i0 + i < n) y[i0 + i] = v[i];
        }
        float h8[8], h4[4];
        for (int i = 0; i < 8; i++)
            h8[i] = v[i + 8] + v[i];
        for (int i = 0; i < 4; i++)
            h4[i] = h8[i + 4] + h8[i];
        const float a = h4[0] + h4[2], b = h4[1] + h4[3];
        sum += (double)(a + b);
    }
    return sum;
}

static inline void swiglu_body(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        g[i] = (x / (1.0f + vm_expf_inline(-x))) * u[i];
    }
}

VM_FMA static float expf_fma(float x)
{
    return expf_body(x);
}
VM_FMA static double exp_sum_fma(float *y, const float *x, int32_t n, float max)
{
    return exp_sum_body(y, x, n, max);
}
VM_FMA static void swiglu_fma(float *g, const float *u, int64_t n)
{
    swiglu_body(g, u, n);
}

/* -1 unknown, else whether the AVX-512 forms run (a benign race, as g_fma). */
static int g_avx512 = -1;
bool vm_have_avx512(void)
{
    if (g_avx512 < 0)
        g_avx512 = ks_cpu_has(KS_CPU_AVX512F) && ks_cpu_has(KS_CPU_AVX512DQ) && use_fma();
    return g_avx512;
}

float vm_expf(float x)
{
    return use_fma() ? expf_fma(x) : expf_body(x);
}

double vm_exp_sum_scalar(float *y, const float *x, int32_t n, float max)
{
    return use_fma() ? exp_sum_fma(y, x, n, max) : exp_sum_body(y, x, n, max);
}

void vm_swiglu_scalar(float *g, const float *u, int64_t n)
{
    if (use_fma())
        swiglu_fma(g, u, n);
    else
        swiglu_body(g, u, n);
}

double vm_exp_sum(float *y, const float *x, int32_t n, float max)
{
    if (!vm_have_avx512()) return vm_exp_sum_scalar(y, x, n, max);
    double sum = 0.0;
    int32_t pos = 0;
    for (;;) { /* the vector code hands back the groups it does not cover, one at a time */
        vm_exp_sum_avx512(y, x, n, max, &sum, &pos);
        if (pos >= n) return sum;
        int32_t m = n - pos < 16 ? n - pos : 16;
        sum += vm_exp_sum_scalar(y + pos, x + pos, m, max);
        pos += m;
    }
}

void vm_swiglu(float *g, const float *u, int64_t n)
{
    if (!vm_have_avx512()) {
        vm_swiglu_scalar(g, u, n);
        return;
    }
    int64_t pos = 0;
    for (;;) {
        vm_swiglu_avx512(g, u, n, &pos);
        if (pos >= n) return;
        int64_t m = n - pos < 16 ? n - pos : 16;
        vm_swiglu_scalar(g + pos, u + pos, m);
        pos += m;
    }
}

/* ggml's GELU (tanh approximation) in f32. */
static float gelu_tanh(float x)
{
    const float a = 0.044715f, k = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + tanhf(k * x * (1.0f + a * x * x)));
}

void vm_geglu(float *g, const float *u, int64_t n)
{
    enum { CHUNK = 256 };
    uint16_t h[CHUNK];
    float xr[CHUNK], y[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        qt_f32_to_f16_row(g + i0, h, m);
        qt_f16_to_f32_row(h, xr, m);
        for (int64_t i = 0; i < m; i++)
            y[i] = gelu_tanh(xr[i]);
        qt_f32_to_f16_row(y, h, m);
        qt_f16_to_f32_row(h, y, m);
        for (int64_t i = 0; i < m; i++) {
            float x = g[i0 + i];
            float a = x <= -10.0f ? 0.0f : x >= 10.0f ? x : y[i];
            g[i0 + i] = a * u[i0 + i];
        }
    }
}

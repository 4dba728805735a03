/* vmath.c - exp, softmax sums and SwiGLU with llama.cpp's numerics (see vmath.h). Compiled
 * twice through target_clones: with hardware FMA where the CPU has it, else with the C
 * library's fmaf, which is exactly rounded too, so both give the same bits. */
#include "kvserve/vmath.h"

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define VM_CLONES __attribute__((target_clones("fma", "default")))
#else
#define VM_CLONES
#endif

static inline float vm_expf_inline(float x)
{
    const float r = 0x1.8p23f;
    const float z = __builtin_fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = __builtin_fmaf(-n, 0x1.7f7d1cp-20f, __builtin_fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f) return n > 0 ? INFINITY : 0.0f;
    const float u = b * b;
    const float hi = __builtin_fmaf(__builtin_fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    __builtin_fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f));
    const float j = __builtin_fmaf(hi, u, __builtin_fmaf(0x1.ffffecp-1f, b, 1.0f));
    const int e = (int)n;
    if (e >= -126 && e <= 127) { /* 2^e is a normal float: one exact multiply */
        union { uint32_t u; float f; } two = {.u = (uint32_t)(e + 127) << 23};
        return j * two.f;
    }
    return ldexpf(j, e);
}

VM_CLONES float vm_expf(float x)
{
    if (isnan(x)) return x;
    return vm_expf_inline(x);
}

VM_CLONES double vm_exp_sum(float *y, const float *x, int32_t n, float max)
{
    double sum = 0.0;
    for (int32_t i0 = 0; i0 < n; i0 += 16) {
        float v[16];
        for (int32_t i = 0; i < 16; i++) {
            v[i] = i0 + i < n ? vm_expf_inline(x[i0 + i] - max) : 0.0f;
            if (i0 + i < n) y[i0 + i] = v[i];
        }
        float h8[8], h4[4];
        for (int i = 0; i < 8; i++) h8[i] = v[i + 8] + v[i];
        for (int i = 0; i < 4; i++) h4[i] = h8[i + 4] + h8[i];
        const float a = h4[0] + h4[2], b = h4[1] + h4[3];
        sum += (double)(a + b);
    }
    return sum;
}

VM_CLONES void vm_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        g[i] = (x / (1.0f + vm_expf_inline(-x))) * u[i];
    }
}

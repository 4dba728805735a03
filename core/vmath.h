/* vmath.h - vector math with llama.cpp's CPU numerics.
 *
 * llama.cpp computes exp in softmax and SiLU with a polynomial approximation (the Arm
 * optimized-routines expf scheme: n = round(x/ln2), reduced argument b = x - n*ln2 in two
 * parts, a degree-5 polynomial, scale by 2^n), not with the C library's expf. The results
 * differ in the last bits, and on random-weight models those bits decide f16 and 8-bit
 * roundings downstream. These functions reproduce that scheme exactly (fused multiply-adds
 * are exactly rounded, so the scalar and vector forms agree bit for bit).
 */
#ifndef KVSERVE_VMATH_H
#define KVSERVE_VMATH_H

#include <stdint.h>

/* exp(x) with llama.cpp's approximation (max error ~1.5 ulp). */
float vm_expf(float x);
/* y[i] = exp(x[i] - max) for i < n; returns the sum the way llama.cpp's softmax forms it:
 * groups of 16 (from x[0]) summed in float by halving, group sums added in double. */
double vm_exp_sum(float *y, const float *x, int32_t n, float max);
/* g[i] = silu(g[i]) * u[i] with silu(x) = x / (1 + exp(-x)). */
void vm_swiglu(float *g, const float *u, int64_t n);

#endif

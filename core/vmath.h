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

#include <stdbool.h>
#include <stdint.h>

/* exp(x) with llama.cpp's approximation (max error ~1.5 ulp). */
float vm_expf(float x);
/* y[i] = exp(x[i] - max) for i < n; returns the sum the way llama.cpp's softmax forms it:
 * groups of 16 (from x[0]) summed in float by halving, group sums added in double. */
double vm_exp_sum(float *y, const float *x, int32_t n, float max);
/* g[i] = silu(g[i]) * u[i] with silu(x) = x / (1 + exp(-x)). */
void vm_swiglu(float *g, const float *u, int64_t n);
/* g[i] = gelu_tanh(g[i]) * u[i] as llama.cpp's CPU backend computes it (Gemma's GEGLU): the
 * GELU of x rounded to f16 is looked up in an f16 table, except |x| >= 10. */
void vm_geglu(float *g, const float *u, int64_t n);

/* The portable forms of vm_exp_sum and vm_swiglu (which take the AVX-512 ones of
 * vmath_avx512.c when the CPU has AVX-512F/DQ; same bits). For the tests. */
double vm_exp_sum_scalar(float *y, const float *x, int32_t n, float max);
void vm_swiglu_scalar(float *g, const float *u, int64_t n);
/* Whether vm_exp_sum and vm_swiglu run the AVX-512 forms. */
bool vm_have_avx512(void);

#endif

/* vmath_avx512.h - the AVX-512 forms of vm_exp_sum and vm_swiglu (vmath_avx512.c), which
 * vmath.c picks on a CPU with AVX-512F/DQ. Each stops at the first group of 16 its fast lanes
 * do not cover and says where, so the caller runs that group in the portable code and resumes:
 * together they give the portable code's bits. */
#ifndef KVSERVE_CORE_VMATH_AVX512_H
#define KVSERVE_CORE_VMATH_AVX512_H

#include <stdint.h>

/* Groups of 16 from i0 = *pos (a multiple of 16) onwards, each group's sum added to *sum in
 * order; returns with *pos = n when done, else at the group the caller must do. */
void vm_exp_sum_avx512(float *y, const float *x, int32_t n, float max, double *sum, int32_t *pos);
/* Elements from *pos (a multiple of 16) onwards; stops like vm_exp_sum_avx512. */
void vm_swiglu_avx512(float *g, const float *u, int64_t n, int64_t *pos);

#endif

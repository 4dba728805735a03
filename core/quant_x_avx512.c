/* quant_x_avx512.c - the newer types' dot kernels (quant_x86.h) built for AVX-512 VL/VNNI.
 *
 * Only quant.c's dispatcher calls in, after checking the CPU. The same source as the AVX2
 * build; the 4-byte integer dots become vpdpbusd. Integer lanes are exact, so the results
 * are identical to the AVX2 build's.
 */
#define QX_FILL qt_kernels_fill_x_avx512
#include "quant_x86.h"

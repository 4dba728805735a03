/* quant_x_avx2.c - the newer types' dot kernels (quant_x86.h) built for AVX2/FMA/F16C.
 *
 * Only quant.c's dispatcher calls in, after checking the CPU; the kernels sum in llama.cpp's
 * x86 vec-dot order (see quant_x86.h), with maddubs/madd for the integer lanes.
 */
#include "quant_x86.h"

void qt_kernels_fill_x_avx2(qt_kernels *k)
{
    qx_fill_common(k);
}

/* repack_kern.h - the repacked Q4_0 layout's constants and its AVX-512 kernel (repack_avx512.c),
 * shared by repack.c (which packs and dispatches) and the kernel file. Layout: repack.h. */
#ifndef KVSERVE_CORE_REPACK_KERN_H
#define KVSERVE_CORE_REPACK_KERN_H

#include <stddef.h>
#include <stdint.h>

#define RP_ROWS 16
#define RP_BLOCK_BYTES (RP_ROWS * 16 + RP_ROWS * 2) /* nibbles + fp16 scales of one block */

/* y[t * ys + r] for rows [lo, hi) and tokens [0, n_tok) of a packed matrix of nb blocks per
 * row (groups gstride bytes apart); xq: Q8_0 rows xb bytes apart; off/dx: per token nb terms
 * (rp_prepare_x). */
void rp_q4_0_avx512(const uint8_t *packed, size_t gstride, int64_t nb, int64_t lo, int64_t hi,
                    const char *xq, size_t xb, const int32_t *off, const float *dx, int64_t n_tok,
                    float *y, int64_t ys);

#endif

/* repack.h - Q4_0 weights repacked at load into 16-row interleaved tiles for a VNNI GEMM.
 *
 * Layout (one 16-row group, groups padded to 64 bytes): for each 32-element block i,
 * 256 bytes of nibbles, chunk v (0..3) = 16 rows x bytes 4v..4v+3 of the row's qs (row r in
 * the 4-byte lane r, so one vpdpbusd dots 16 rows with a broadcast 4-byte activation chunk),
 * then after all blocks the fp16 scales, 16 per block. Rows past n_out are zero.
 * The products are bit-identical to the Q4_0 dot kernels (quant_avx512.c): per output the
 * same exact integer block sums folded in the same f32 chain acc = fma(isum, dw*dx, acc).
 * Private to the numerics core and the engine above it.
 */
#ifndef KVSERVE_CORE_REPACK_H
#define KVSERVE_CORE_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/quant.h"

/* Rows of one group: a thread's share of rows should start on a multiple of it. */
#define RP_GROUP_ROWS 16

/* Whether an n_out x n_in matrix of `type` is repacked: Q4_0, the AVX-512 kernels selected,
 * KVSERVE_REPACK not "0". */
bool rp_wanted(qt_type type, int64_t n_in);
/* Copies n_out rows of n_in Q4_0 weights (row_bytes apart) into a new packed allocation
 * (*out; release with rp_free). drop_source: src is a read-only file mapping whose pages may
 * be given back (madvise), so RSS does not hold both copies; later reads of src (embedding
 * rows) fault them in again from the file. */
int rp_repack(const void *src, size_t row_bytes, int64_t n_in, int64_t n_out, bool drop_source,
              void **out) KS_WUR;
void rp_free(void *packed); /* accepts NULL */
/* Bytes of a packed matrix. */
size_t rp_packed_bytes(int64_t n_in, int64_t n_out);

/* Per-token activation terms of a Q8_0 row of nb blocks: off[i] = 8 * sum(qs) (the Q4_0
 * nibble offset), dx[i] = the block scale as f32. */
void rp_prepare_x(const void *xq, int64_t nb, int32_t *off, float *dx);
/* y[t * ys + r] for rows [lo, hi) and tokens [0, n_tok) of a packed n_in-column matrix: xq
 * holds the Q8_0 rows (stride xb bytes), off/dx the rp_prepare_x terms (stride n_in / 32). */
void rp_matmul_rows(const void *packed, int64_t n_in, int64_t lo, int64_t hi, const void *xq,
                    size_t xb, const int32_t *off, const float *dx, int64_t n_tok, float *y,
                    int64_t ys);

#endif

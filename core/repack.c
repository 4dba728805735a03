/* repack.c - repacks Q4_0 weights into 16-row tiles (repack.h) and drives the VNNI kernel.
 *
 * The repacked copy is the same size as the original (18 bytes per 32 weights, plus padding
 * to whole groups); after copying, the source pages of the file mapping are released, so a
 * repacked model costs no extra memory. KVSERVE_REPACK=0 keeps the plain layout (the kernels
 * in quant_avx512.c), which gives the same numbers.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "quant_impl.h"
#include "repack.h"
#include "repack_kern.h"

_Static_assert(RP_GROUP_ROWS == RP_ROWS, "one group size");

static size_t group_bytes(int64_t nb)
{
    return ((size_t)nb * RP_BLOCK_BYTES + 63) / 64 * 64;
}

size_t rp_packed_bytes(int64_t n_in, int64_t n_out)
{
    return group_bytes(n_in / QK4_0) * (size_t)((n_out + RP_ROWS - 1) / RP_ROWS);
}

bool rp_wanted(qt_type type, int64_t n_in)
{
    const char *env = getenv("KVSERVE_REPACK");
    if (env && !strcmp(env, "0")) return false;
    return type == QT_Q4_0 && n_in > 0 && n_in % QK4_0 == 0 && qt_get_impl() == QT_IMPL_AVX512;
}

/* Give back the whole pages inside [p, p + n) of a read-only file mapping. */
static void drop_pages(const void *p, size_t n)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = ((uintptr_t)p + pg - 1) / pg * pg, e = ((uintptr_t)p + n) / pg * pg;
    if (e > b) (void)madvise((void *)b, e - b, MADV_DONTNEED);
}

int rp_repack(const void *src, size_t row_bytes, int64_t n_in, int64_t n_out, bool drop_source,
              void **out)
{
    const int64_t nb = n_in / QK4_0, ng = (n_out + RP_ROWS - 1) / RP_ROWS;
    const size_t gs = group_bytes(nb);
    uint8_t *p = ks_aligned_alloc(gs * (size_t)ng);
    if (!p) return KS_ERR_NOMEM;
    /* every byte below is written, except the rows past n_out in the last group */
    memset(p + gs * (size_t)(ng - 1), 0, gs);
    for (int64_t r = 0; r < n_out; r++) {
        const blk_q4_0 *row = (const blk_q4_0 *)((const char *)src + (size_t)r * row_bytes);
        uint8_t *g = p + (size_t)(r / RP_ROWS) * gs;
        int lane = (int)(r % RP_ROWS);
        for (int64_t i = 0; i < nb; i++) {
            for (int v = 0; v < 4; v++)
                memcpy(g + i * 256 + v * 64 + lane * 4, row[i].qs + 4 * v, 4);
            memcpy(g + nb * 256 + i * 32 + lane * 2, &row[i].d, 2);
        }
    }
    *out = p;
    if (drop_source) drop_pages(src, row_bytes * (size_t)n_out);
    return KS_OK;
}

void rp_free(void *packed)
{
    free(packed);
}

void rp_prepare_x(const void *xq, int64_t nb, int32_t *off, float *dx)
{
    const blk_q8_0 *x = xq;
    for (int64_t i = 0; i < nb; i++) {
        int32_t s = 0;
        for (int j = 0; j < QK8_0; j++)
            s += x[i].qs[j];
        off[i] = 8 * s;
        qt_f16_to_f32_row(&x[i].d, &dx[i], 1);
    }
}

void rp_matmul_rows(const void *packed, int64_t n_in, int64_t lo, int64_t hi, const void *xq,
                    size_t xb, const int32_t *off, const float *dx, int64_t n_tok, float *y,
                    int64_t ys)
{
    const int64_t nb = n_in / QK4_0;
    rp_q4_0_avx512(packed, group_bytes(nb), nb, lo, hi, xq, xb, off, dx, n_tok, y, ys);
}

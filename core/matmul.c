/* matmul.c - Y = X·W^T for every weight type, on the thread pool.
 *
 * Two paths, one numerics. llama.cpp converts activations to the weight's vec-dot type
 * (F16, BF16, Q8_0 or Q8_K) before every product; so do we, always. Decode (few tokens)
 * dots the converted activations with the quantised rows directly, reading each weight row
 * once for all tokens. Prefill (many tokens) dequantises a tile of weight rows to f32 and
 * calls sgemm with the activations round-tripped through the same conversion: the products
 * are the same numbers, only the f32 summation order differs. In exact mode (llama_numerics)
 * there is no sgemm: every product runs through the dot kernels, which sum in llama.cpp's
 * order, its vec-dot order for one token and its tinyBLAS order for a batch. Weights repacked
 * at load (repack.h: Q4_0 on AVX-512 VNNI) take a third path for every batch size: an int8
 * GEMM whose results are bit-identical to the dot kernels', in both modes.
 * Invariant: nothing here allocates; all buffers come from mm_scratch.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#include "repack.h"

#define MM_TILE_ROWS 64
#define MM_ROW_ALIGN 16
#define MM_MAX_W 4

struct mm_scratch {
    int64_t max_in, max_out, max_tok;
    int n_threads;
    bool exact;    /* llama.cpp's summation orders: no sgemm, tinyBLAS order for >= 2 tokens */
    void *xq;      /* [max_tok] converted activation rows (vec-dot type) */
    float *xr;     /* [max_tok][max_in] round-tripped activations (gemm path) */
    float *ytmp;   /* [max_out][MM_GEMM_MIN_TOKENS] row-major matvec output */
    float **tile;  /* per thread [MM_TILE_ROWS][max_in] dequantised weights */
    void **qtmp;   /* per thread one converted row */
    int32_t *xoff; /* [max_tok][max_in/32] Q4_0 offsets of the Q8_0 rows (repacked path) */
    float *xdx;    /* [max_tok][max_in/32] their block scales */
};

int mm_scratch_create(int64_t max_in, int64_t max_out, int64_t max_tok, int n_threads,
                      mm_scratch **out)
{
    mm_scratch *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->max_in = max_in;
    s->max_out = max_out;
    s->max_tok = max_tok;
    s->n_threads = n_threads;
    size_t in = (size_t)max_in, tok = (size_t)max_tok;
    /* the largest conversion is f32: 4 bytes per element, plus block headers */
    size_t row_max = in * 4 + 64;
    s->xq = ks_aligned_alloc(row_max * tok);
    s->xr = ks_aligned_alloc(in * tok * sizeof(float));
    s->ytmp = ks_aligned_alloc((size_t)max_out * MM_GEMM_MIN_TOKENS * sizeof(float));
    s->tile = calloc((size_t)n_threads, sizeof(float *));
    s->qtmp = calloc((size_t)n_threads, sizeof(void *));
    size_t nblk = (in / 32 + 1) * tok;
    s->xoff = ks_aligned_alloc(nblk * sizeof(int32_t));
    s->xdx = ks_aligned_alloc(nblk * sizeof(float));
    if (!s->xq || !s->xr || !s->ytmp || !s->tile || !s->qtmp || !s->xoff || !s->xdx) goto fail;
    for (int i = 0; i < n_threads; i++) {
        s->tile[i] = ks_aligned_alloc(in * MM_TILE_ROWS * sizeof(float));
        s->qtmp[i] = ks_aligned_alloc(row_max);
        if (!s->tile[i] || !s->qtmp[i]) goto fail;
    }
    openblas_set_num_threads(1);
    *out = s;
    return KS_OK;
fail:
    mm_scratch_destroy(s);
    return KS_ERR_NOMEM;
}

void mm_scratch_set_exact(mm_scratch *s, bool exact)
{
    s->exact = exact;
}

void mm_scratch_destroy(mm_scratch *s)
{
    if (!s) return;
    for (int i = 0; s->tile && i < s->n_threads; i++)
        free(s->tile[i]);
    for (int i = 0; s->qtmp && i < s->n_threads; i++)
        free(s->qtmp[i]);
    free(s->tile);
    free(s->qtmp);
    free(s->xq);
    free(s->xr);
    free(s->ytmp);
    free(s->xoff);
    free(s->xdx);
    free(s);
}

typedef struct mm_job {
    mm_scratch *s;
    const mm_weight *const *w;
    float *const *y;
    int n_w;
    const float *x;
    int64_t n_tok;
    qt_type xt;      /* activation type */
    size_t xq_bytes; /* bytes of one converted row */
    bool gemm;       /* dequantised tiles and sgemm (round-tripped activations) */
    bool packed;     /* every weight repacked (repack.h) */
} mm_job;

/* Section 1: convert activations (tokens split over threads). */
static void mm_convert_fn(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    int64_t n_in = j->w[0]->n_in, b, e;
    tp_split(j->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++) {
        const float *xt = j->x + t * n_in;
        char *xq = (char *)j->s->xq + (size_t)t * j->xq_bytes;
        if (j->gemm) {
            qt_roundtrip_row(j->xt, xt, j->s->xr + t * n_in, n_in, j->s->qtmp[ith]);
            continue;
        }
        qt_quantize_row(j->xt, xt, xq, n_in);
        if (j->packed)
            rp_prepare_x(xq, n_in / 32, j->s->xoff + t * (n_in / 32), j->s->xdx + t * (n_in / 32));
    }
}

/* Total rows over all weights; a global row index maps to (weight, row). */
static int64_t mm_total_rows(const mm_job *j)
{
    int64_t n = 0;
    for (int i = 0; i < j->n_w; i++)
        n += j->w[i]->n_out;
    return n;
}

static void mm_matvec_fn(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    int64_t b, e;
    tp_split(mm_total_rows(j), MM_ROW_ALIGN, ith, nth, &b, &e);
    int64_t base = 0;
    /* llama.cpp sums one token (vec-dot) and a batch (tinyBLAS) in different orders */
    bool gemm_order = j->s->exact && j->n_tok > 1;
    for (int i = 0; i < j->n_w && b < e; i++) {
        const mm_weight *w = j->w[i];
        int64_t lo = KS_MAX(b, base) - base, hi = KS_MIN(e, base + w->n_out) - base;
        base += w->n_out;
        if (lo >= hi) continue;
        if (j->n_tok == 1) {
            const char *rows = (const char *)w->data + (size_t)lo * w->row_bytes;
            qt_matvec(w->type, w->n_in, rows, w->row_bytes, hi - lo, j->s->xq, j->xq_bytes, 1,
                      j->y[i] + lo, 1);
            continue;
        }
        /* row tiles stay in cache while they meet every token chunk; row-major scratch for
         * this thread's rows (one weight per section when batched), then scattered */
        for (int64_t r0 = lo; r0 < hi; r0 += MM_TILE_ROWS) {
            int64_t nr = KS_MIN((int64_t)MM_TILE_ROWS, hi - r0);
            const char *rows = (const char *)w->data + (size_t)r0 * w->row_bytes;
            for (int64_t t0 = 0; t0 < j->n_tok; t0 += MM_GEMM_MIN_TOKENS) {
                int64_t nt = KS_MIN((int64_t)MM_GEMM_MIN_TOKENS, j->n_tok - t0);
                float *yt = j->s->ytmp + (size_t)r0 * MM_GEMM_MIN_TOKENS;
                const char *xq = (const char *)j->s->xq + (size_t)t0 * j->xq_bytes;
                if (gemm_order)
                    qt_matvec_gemm(w->type, w->n_in, rows, w->row_bytes, nr, xq, j->xq_bytes, nt,
                                   yt, nt);
                else
                    qt_matvec(w->type, w->n_in, rows, w->row_bytes, nr, xq, j->xq_bytes, nt, yt,
                              nt);
                /* token-major stores: each token's rows are one contiguous run of y */
                for (int64_t t = 0; t < nt; t++) {
                    float *yo = j->y[i] + (t0 + t) * w->n_out + r0;
                    for (int64_t r = 0; r < nr; r++)
                        yo[r] = yt[r * nt + t];
                }
            }
        }
    }
}

/* Repacked weights: every batch size through the VNNI kernel, rows split in whole groups. */
static void mm_packed_fn(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    int64_t b, e, base = 0;
    tp_split(mm_total_rows(j), RP_GROUP_ROWS, ith, nth, &b, &e);
    for (int i = 0; i < j->n_w && b < e; i++) {
        const mm_weight *w = j->w[i];
        int64_t lo = KS_MAX(b, base) - base, hi = KS_MIN(e, base + w->n_out) - base;
        base += w->n_out;
        rp_matmul_rows(w->packed, w->n_in, lo, hi, j->s->xq, j->xq_bytes, j->s->xoff, j->s->xdx,
                       j->n_tok, j->y[i], w->n_out);
    }
}

static void mm_gemm_fn(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    int64_t total = mm_total_rows(j), b, e;
    tp_split(total, MM_TILE_ROWS, ith, nth, &b, &e);
    int64_t base = 0;
    for (int i = 0; i < j->n_w && b < e; i++) {
        const mm_weight *w = j->w[i];
        int64_t lo = KS_MAX(b, base) - base, hi = KS_MIN(e, base + w->n_out) - base;
        base += w->n_out;
        for (int64_t r0 = lo; r0 < hi; r0 += MM_TILE_ROWS) {
            int64_t nr = KS_MIN((int64_t)MM_TILE_ROWS, hi - r0);
            const float *wt;
            if (w->type == QT_F32) {
                wt = (const float *)((const char *)w->data + (size_t)r0 * w->row_bytes);
            } else {
                float *tile = j->s->tile[ith];
                for (int64_t r = 0; r < nr; r++)
                    qt_dequantize_row(w->type,
                                      (const char *)w->data + (size_t)(r0 + r) * w->row_bytes,
                                      tile + r * w->n_in, w->n_in);
                wt = tile;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n_tok, (int)nr,
                        (int)w->n_in, 1.0f, j->s->xr, (int)w->n_in, wt, (int)w->n_in, 0.0f,
                        j->y[i] + r0, (int)w->n_out);
        }
    }
}

void mm_matmul_n(tp_pool *tp, mm_scratch *s, const mm_weight *const *w, float *const *y, int n_w,
                 const float *x, int64_t n_tok)
{
    mm_job j = {.s = s, .w = w, .y = y, .n_w = n_w, .x = x, .n_tok = n_tok};
    j.xt = qt_vec_dot_type(w[0]->type);
    bool same = true;
    j.packed = w[0]->packed != NULL;
    for (int i = 1; i < n_w; i++)
        same = same && qt_vec_dot_type(w[i]->type) == j.xt && w[i]->n_in == w[0]->n_in &&
               (w[i]->packed != NULL) == j.packed;
    /* the row-major matvec scratch is shared, so batched matvecs run one weight at a time */
    bool gemm = n_tok >= MM_GEMM_MIN_TOKENS && !s->exact && !j.packed;
    j.gemm = gemm;
    if (!same || (n_tok > 1 && !gemm && !j.packed && n_w > 1)) {
        for (int i = 0; i < n_w; i++)
            mm_matmul_n(tp, s, &w[i], &y[i], 1, x, n_tok);
        return;
    }
    j.xq_bytes = qt_row_bytes(j.xt, w[0]->n_in);
    tp_run(tp, mm_convert_fn, &j);
    tp_run(tp, j.packed ? mm_packed_fn : gemm ? mm_gemm_fn : mm_matvec_fn, &j);
}

void mm_matmul(tp_pool *tp, mm_scratch *s, const mm_weight *w, const float *x, float *y,
               int64_t n_tok)
{
    mm_matmul_n(tp, s, &w, &y, 1, x, n_tok);
}

/* matmul.h - weight views (mm_weight, mm_vec) and Y = X·W^T over the thread pool.
 * Private to the numerics core and the engine above it; not part of the public API. */
#ifndef KVSERVE_CORE_MATMUL_H
#define KVSERVE_CORE_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/quant.h"
#include "threadpool.h"

/* A weight matrix in the mapping: n_out rows of n_in elements of `type`. */
typedef struct mm_weight {
    const void *data;
    qt_type type;
    int64_t n_in;  /* ne[0], row length */
    int64_t n_out; /* ne[1], number of rows */
    size_t row_bytes;
    void *packed; /* the rows repacked for the VNNI GEMM (repack.h), or NULL */
} mm_weight;

/* A 1-D f32 vector (norm weight or bias) in the mapping; NULL data when absent. */
typedef struct mm_vec {
    const float *data;
    int64_t n;
} mm_vec;

/* Y[t][r] = sum_i X[t][i] * W[r][i] over a thread pool */
typedef struct mm_scratch mm_scratch;
/* Scratch for up to max_tok tokens, rows of up to max_in elements and matrices of up to
 * max_out rows, for n_threads threads. Allocated once; mm_matmul never allocates. */
int mm_scratch_create(int64_t max_in, int64_t max_out, int64_t max_tok, int n_threads,
                      mm_scratch **out) KS_WUR;
void mm_scratch_destroy(mm_scratch *s);
/* Exact mode: reproduce llama.cpp's f32 summation orders (no sgemm). */
void mm_scratch_set_exact(mm_scratch *s, bool exact);
/* X: [n_tok][W.n_in] f32, Y: [n_tok][W.n_out]. Activations are converted to the weight's
 * vec-dot type first (llama.cpp numerics). Small batches use the quantised dot kernels;
 * large ones dequantised weight tiles and sgemm, except in exact mode, where every batch
 * goes through the dot kernels in llama.cpp's summation order. */
void mm_matmul(tp_pool *tp, mm_scratch *s, const mm_weight *w, const float *x, float *y,
               int64_t n_tok);
/* Several weights with the same input (e.g. Q, K and V): the activations are converted once
 * and all products run in one parallel section. Weights must share n_in. */
void mm_matmul_n(tp_pool *tp, mm_scratch *s, const mm_weight *const *w, float *const *y, int n_w,
                 const float *x, int64_t n_tok);
/* Threshold (tokens) at or above which mm_matmul uses sgemm. */
#define MM_GEMM_MIN_TOKENS 16

#endif

/* attention.c - the shared attention core: softmax(q·K^T * scale + causal mask) V for a chunk
 * of queries of one KV head over a list of spans, with memory independent of the key count.
 *
 * Algorithm. Keys are visited in tiles of up to ATTN_TILE keys. For f16 caches each K and V
 * tile is converted to f32 once and then reused by every query row of the chunk (n_q tokens x
 * n_group heads sharing this KV head), so in GQA and in prefill each cached row is read from
 * memory once per call. Per query row and tile we compute the tile's scores, mask keys whose
 * sequence index is above the query's, and fold them into a streaming softmax: one max update
 * and one rescale of the running sum and accumulator per tile (online softmax, as in
 * FlashAttention). A row that sees no key outputs zeros.
 *
 * Two-pass mode (llama_numerics, or key_mass requested): pass 1 computes each row's max and
 * sum of exponentials over all visible keys; pass 2 recomputes the scores, forms the
 * normalised probabilities p (reported as key mass; rounded to f16 before the V product when
 * emulating llama.cpp with an f16 cache, as its non-flash path multiplies V by an f16
 * softmax), and accumulates p·V directly. With llama_numerics and an f16 cache, q is rounded
 * to f16 first (llama.cpp converts q to f16 to dot it with f16 K).
 *
 * The inner kernels (scores of one query row against a tile, and p·V accumulation) come in a
 * portable scalar version and an AVX-512 version picked at run time.
 */
#include "kvserve/attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/quant.h"
#include "kvserve/vmath.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTN_X86 1
#endif

#define ATTN_TILE 64

typedef void (*scores_fn)(const float *q, const float *k, size_t k_stride, int32_t n,
                          int32_t hd, float scale, float *s);
typedef void (*accum_fn)(float *acc, const float *p, const float *v, size_t v_stride,
                         int32_t n, int32_t hd);

struct attn_scratch {
    int32_t head_dim, max_group, max_q;
    float *qr;    /* [max_q*max_group][head_dim] q rounded to f16 (llama numerics) */
    float *acc;   /* [max_q*max_group][head_dim] running p·V */
    float *m;     /* [max_q*max_group] running max */
    double *l;    /* [max_q*max_group] running sum of exp */
    float *kt;    /* [ATTN_TILE][head_dim] K tile as f32 */
    float *vt;    /* [ATTN_TILE][head_dim] V tile as f32 */
    float *s;     /* [ATTN_TILE] scores of one row */
    float *lacc;  /* [rows][banks][head_dim][16] llama.cpp's p·V lane accumulators */
    double *ldbl; /* [max_group][head_dim] its one-token p·V tail, summed in double */
    uint8_t *ldone; /* [max_group] tail started (the lanes were folded into ldbl) */
    float *vtt;   /* [head_dim][ATTN_TILE] V tile transposed */
    scores_fn scores;
    scores_fn vscores; /* ggml_vec_dot_f16's order (llama numerics, one query token) */
    accum_fn accum;
};

/* ---------------------------------------------------------------------------------------- */
/* Kernels                                                                                   */

static void scores_scalar(const float *q, const float *k, size_t k_stride, int32_t n,
                          int32_t hd, float scale, float *s)
{
    for (int32_t j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int32_t d = 0;
        for (; d + 4 <= hd; d += 4) {
            a0 += q[d] * kj[d];
            a1 += q[d + 1] * kj[d + 1];
            a2 += q[d + 2] * kj[d + 2];
            a3 += q[d + 3] * kj[d + 3];
        }
        for (; d < hd; d++)
            a0 += q[d] * kj[d];
        s[j] = ((a0 + a1) + (a2 + a3)) * scale;
    }
}

static void accum_scalar(float *acc, const float *p, const float *v, size_t v_stride,
                         int32_t n, int32_t hd)
{
    for (int32_t j = 0; j < n; j++) {
        if (p[j] == 0.0f)
            continue;
        const float *vj = v + (size_t)j * v_stride;
        for (int32_t d = 0; d < hd; d++)
            acc[d] += p[j] * vj[d];
    }
}

#ifdef ATTN_X86
#define ATTN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))

ATTN_AVX512 static inline __mmask16 tail_mask(int32_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

ATTN_AVX512 static void scores_avx512(const float *q, const float *k, size_t k_stride,
                                      int32_t n, int32_t hd, float scale, float *s)
{
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (size_t)j * k_stride;
        const float *k1 = k0 + k_stride, *k2 = k1 + k_stride, *k3 = k2 + k_stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t d = 0; d < hd; d += 16) {
            __mmask16 mk = tail_mask(hd - d);
            __m512 qv = _mm512_maskz_loadu_ps(mk, q + d);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k0 + d), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k1 + d), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k2 + d), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k3 + d), a3);
        }
        s[j] = _mm512_reduce_add_ps(a0) * scale;
        s[j + 1] = _mm512_reduce_add_ps(a1) * scale;
        s[j + 2] = _mm512_reduce_add_ps(a2) * scale;
        s[j + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        __m512 a = _mm512_setzero_ps();
        for (int32_t d = 0; d < hd; d += 16) {
            __mmask16 mk = tail_mask(hd - d);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + d),
                                _mm512_maskz_loadu_ps(mk, kj + d), a);
        }
        s[j] = _mm512_reduce_add_ps(a) * scale;
    }
}

ATTN_AVX512 static void accum_avx512(float *acc, const float *p, const float *v,
                                     size_t v_stride, int32_t n, int32_t hd)
{
    int32_t d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m512 a0 = _mm512_loadu_ps(acc + d), a1 = _mm512_loadu_ps(acc + d + 16);
        __m512 a2 = _mm512_loadu_ps(acc + d + 32), a3 = _mm512_loadu_ps(acc + d + 48);
        for (int32_t j = 0; j < n; j++) {
            const float *vj = v + (size_t)j * v_stride + d;
            __m512 pj = _mm512_set1_ps(p[j]);
            a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
            a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
            a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
            a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
        }
        _mm512_storeu_ps(acc + d, a0);
        _mm512_storeu_ps(acc + d + 16, a1);
        _mm512_storeu_ps(acc + d + 32, a2);
        _mm512_storeu_ps(acc + d + 48, a3);
    }
    for (; d < hd; d += 16) {
        __mmask16 mk = tail_mask(hd - d);
        __m512 a = _mm512_maskz_loadu_ps(mk, acc + d);
        for (int32_t j = 0; j < n; j++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]),
                                _mm512_maskz_loadu_ps(mk, v + (size_t)j * v_stride + d), a);
        _mm512_mask_storeu_ps(acc + d, mk, a);
    }
}

static bool cpu_has_avx512(void)
{
    return ks_cpu_has(KS_CPU_AVX512F) && ks_cpu_has(KS_CPU_AVX512BW) &&
           ks_cpu_has(KS_CPU_AVX512VL) && ks_cpu_has(KS_CPU_F16C) && ks_cpu_has(KS_CPU_FMA);
}
#endif

static void scores_vecdot(const float *q, const float *k, size_t k_stride, int32_t n,
                          int32_t hd, float scale, float *s);
#ifdef ATTN_X86
/* ggml_vec_dot_f16's order, vectorised: see scores_vecdot. */
ATTN_AVX512 static void scores_vecdot_avx512(const float *q, const float *k, size_t k_stride,
                                             int32_t n, int32_t hd, float scale, float *s)
{
    int32_t np = hd & ~63;
    for (int32_t j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int32_t i = 0; i < np; i += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(kj + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), _mm512_loadu_ps(kj + i + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 32), _mm512_loadu_ps(kj + i + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 48), _mm512_loadu_ps(kj + i + 48), a3);
        }
        double d = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a2),
                                                      _mm512_add_ps(a1, a3)));
        for (int32_t i = np; i < hd; i++) d += (double)(q[i] * kj[i]);
        s[j] = (float)d * scale;
    }
}
#endif

/* ---------------------------------------------------------------------------------------- */
/* Scratch                                                                                   */

void attn_scratch_force_scalar(attn_scratch *s, bool scalar)
{
    s->scores = scores_scalar;
    s->vscores = scores_vecdot;
    s->accum = accum_scalar;
#ifdef ATTN_X86
    if (!scalar && cpu_has_avx512()) {
        s->scores = scores_avx512;
        s->vscores = scores_vecdot_avx512;
        s->accum = accum_avx512;
    }
#else
    (void)scalar;
#endif
}

int attn_scratch_create(int32_t head_dim, int32_t max_group, int32_t max_q, attn_scratch **out)
{
    *out = NULL;
    if (head_dim < 1 || head_dim > 4096 || max_group < 1 || max_group > 256 || max_q < 1 ||
        max_q > 1 << 20)
        return KS_ERR_INVALID;
    attn_scratch *s = calloc(1, sizeof(*s));
    if (!s)
        return KS_ERR_NOMEM;
    s->head_dim = head_dim;
    s->max_group = max_group;
    s->max_q = max_q;
    size_t rows = (size_t)max_group * (size_t)max_q;
    size_t fl = sizeof(float);
    s->qr = ks_aligned_alloc(rows * (size_t)head_dim * fl);
    s->acc = ks_aligned_alloc(rows * (size_t)head_dim * fl);
    s->m = ks_aligned_alloc(rows * fl);
    s->l = ks_aligned_alloc(rows * sizeof(double));
    s->kt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    s->vt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    s->s = ks_aligned_alloc((size_t)ATTN_TILE * fl);
    /* virtual size for the largest chunk; only the rows a call uses are touched */
    size_t lrows = rows > (size_t)max_group * 4 ? rows : (size_t)max_group * 4;
    s->lacc = ks_aligned_alloc(lrows * (size_t)head_dim * 16 * fl);
    s->ldbl = ks_aligned_alloc((size_t)max_group * (size_t)head_dim * sizeof(double));
    s->ldone = calloc((size_t)max_group, 1);
    s->vtt = ks_aligned_alloc((size_t)ATTN_TILE * (size_t)head_dim * fl);
    if (!s->qr || !s->acc || !s->m || !s->l || !s->kt || !s->vt || !s->s || !s->lacc ||
        !s->ldbl || !s->ldone || !s->vtt) {
        attn_scratch_destroy(s);
        return KS_ERR_NOMEM;
    }
    attn_scratch_force_scalar(s, false);
    *out = s;
    return 0;
}

void attn_scratch_destroy(attn_scratch *s)
{
    if (!s)
        return;
    free(s->qr);
    free(s->acc);
    free(s->m);
    free(s->l);
    free(s->kt);
    free(s->vt);
    free(s->s);
    free(s->lacc);
    free(s->ldbl);
    free(s->ldone);
    free(s->vtt);
    free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Driver                                                                                    */

/* One tile of keys ready for the kernels: f32 rows with their strides, and index range. */
typedef struct tile {
    const float *k, *v;
    size_t ks, vs;
    const int32_t *idx; /* NULL: all visible */
    int32_t n;
    int32_t idx_min, idx_max;
    int64_t key0;       /* global key number of the first key (key_mass column) */
} tile;

typedef struct run {
    const attn_params *p;
    attn_scratch *s;
    const float *q;     /* row r = t*n_group + g at q + t*q_stride + g*hd */
    size_t q_stride;
    int32_t rows;
    int64_t n_keys;
    int32_t q_idx_max;  /* largest query index: tiles above it are skipped unread */
    bool round_p;       /* round probabilities to f16 before the V product */
    bool exact_exp;     /* llama.cpp's exp approximation and summation order */
    bool lanes;         /* llama.cpp's q·k and p·V summation orders (f16 cache) */
    bool decode;        /* one query token: its vec-dot p·V order, else its tinyBLAS order */
    bool vec_scores;    /* one query row: its vec-dot q·k order, else its tinyBLAS order */
    int64_t n_vec;      /* decode: keys below this go to the four 16-lane banks */
} run;

/* llama.cpp pads its KV view to a multiple of this many cells (no flash attention); its
 * one-token p·V sums the cells past the last multiple of 64 in double. */
#define ATTN_LLAMA_KV_PAD 32

/* _mm512_reduce_add_ps's tree over 16 lanes. */
static float red16(const float *v)
{
    float a[8], b[4];
    for (int i = 0; i < 8; i++) a[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++) b[i] = a[i] + a[i + 4];
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* ggml_vec_dot_f16's order for one query row against n keys (values already f16-exact):
 * four 16-lane accumulators over 64-element steps folded (0+2)+(1+3), the 16-lane tree, then
 * the tail in double. */
static void scores_vecdot(const float *q, const float *k, size_t k_stride, int32_t n,
                          int32_t hd, float scale, float *s)
{
    for (int32_t j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * k_stride;
        float acc[4][16] = {{0}};
        int32_t i = 0;
        for (; i + 64 <= hd; i += 64)
            for (int b = 0; b < 4; b++)
                for (int l = 0; l < 16; l++)
                    acc[b][l] = fmaf(q[i + 16 * b + l], kj[i + 16 * b + l], acc[b][l]);
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
        double d = red16(v);
        for (; i < hd; i++) d += (double)(q[i] * kj[i]);
        s[j] = (float)d * scale;
    }
}

static void tile_load(const run *r, const attn_span *sp, int32_t j0, int32_t n, tile *t)
{
    int32_t hd = r->p->head_dim;
    size_t ks = sp->k_stride ? (size_t)sp->k_stride : (size_t)hd;
    size_t vs = sp->v_stride ? (size_t)sp->v_stride : (size_t)hd;
    t->n = n;
    t->idx = sp->idx ? sp->idx + j0 : NULL;
    t->idx_min = INT32_MAX;
    t->idx_max = INT32_MIN;
    for (int32_t j = 0; t->idx && j < n; j++) {
        t->idx_min = KS_MIN(t->idx_min, t->idx[j]);
        t->idx_max = KS_MAX(t->idx_max, t->idx[j]);
    }
    if (t->idx && t->idx_min > r->q_idx_max) {
        t->n = 0; /* invisible to every query of the chunk: skip the conversion */
        return;
    }
    if (r->p->kv_dtype == KS_DTYPE_F32) {
        t->k = (const float *)sp->k + (size_t)j0 * ks;
        t->v = (const float *)sp->v + (size_t)j0 * vs;
        t->ks = ks;
        t->vs = vs;
        return;
    }
    const uint16_t *k16 = (const uint16_t *)sp->k + (size_t)j0 * ks;
    const uint16_t *v16 = (const uint16_t *)sp->v + (size_t)j0 * vs;
    float *kt = r->s->kt, *vt = r->s->vt;
    if (ks == (size_t)hd)
        qt_f16_to_f32_row(k16, kt, (int64_t)n * hd);
    else
        for (int32_t j = 0; j < n; j++)
            qt_f16_to_f32_row(k16 + (size_t)j * ks, kt + (size_t)j * hd, hd);
    if (vs == (size_t)hd)
        qt_f16_to_f32_row(v16, vt, (int64_t)n * hd);
    else
        for (int32_t j = 0; j < n; j++)
            qt_f16_to_f32_row(v16 + (size_t)j * vs, vt + (size_t)j * hd, hd);
    t->k = kt;
    t->v = vt;
    t->ks = t->vs = (size_t)hd;
}

/* Scores of row `row` (query token t) against the tile, masked with -inf.
 * Returns false if the whole tile is invisible to this query. */
static bool tile_scores(const run *r, const tile *t, int32_t row, float *smax)
{
    const attn_params *p = r->p;
    int32_t tq = row / p->n_group, g = row % p->n_group;
    int32_t qi = t->idx ? p->q_idx[tq] : 0;
    /* a sliding-window layer also hides keys window or more tokens behind the query */
    int32_t lo = t->idx && p->window > 0 ? qi - p->window : INT32_MIN;
    if (t->idx && (t->idx_min > qi || t->idx_max <= lo))
        return false;
    float *s = r->s->s;
    (r->vec_scores ? r->s->vscores : r->s->scores)(
        r->q + (size_t)tq * r->q_stride + (size_t)g * p->head_dim, t->k, t->ks, t->n,
        p->head_dim, p->scale, s);
    if (t->idx && (t->idx_max > qi || t->idx_min <= lo))
        for (int32_t j = 0; j < t->n; j++)
            if (t->idx[j] > qi || t->idx[j] <= lo)
                s[j] = -INFINITY;
    float mx = -INFINITY;
    for (int32_t j = 0; j < t->n; j++)
        mx = s[j] > mx ? s[j] : mx;
    *smax = mx;
    return mx > -INFINITY;
}

/* Single pass: online softmax with one rescale per tile. */
static void tile_online(const run *r, const tile *t)
{
    attn_scratch *S = r->s;
    int32_t hd = r->p->head_dim;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (!tile_scores(r, t, row, &mt))
            continue;
        float m_new = mt > S->m[row] ? mt : S->m[row];
        float *acc = S->acc + (size_t)row * hd;
        if (m_new > S->m[row] && S->l[row] > 0) {
            float corr = expf(S->m[row] - m_new);
            S->l[row] *= corr;
            for (int32_t d = 0; d < hd; d++)
                acc[d] *= corr;
        }
        S->m[row] = m_new;
        double sum = 0;
        for (int32_t j = 0; j < t->n; j++) {
            S->s[j] = expf(S->s[j] - m_new);
            sum += S->s[j];
        }
        S->l[row] += sum;
        S->accum(acc, S->s, t->v, t->vs, t->n, hd);
    }
}

/* Two-pass, pass 1: max and sum of exponentials only. */
static void tile_stats(const run *r, const tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (!tile_scores(r, t, row, &mt))
            continue;
        float m_new = mt > S->m[row] ? mt : S->m[row];
        if (m_new > S->m[row] && S->l[row] > 0)
            S->l[row] *= exp((double)S->m[row] - (double)m_new);
        S->m[row] = m_new;
        double sum = 0;
        for (int32_t j = 0; j < t->n; j++)
            sum += expf(S->s[j] - m_new);
        S->l[row] += sum;
    }
}

/* llama.cpp numerics, pass 1: the row maximum over all visible keys. */
static void tile_max(const run *r, const tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (tile_scores(r, t, row, &mt) && mt > S->m[row])
            S->m[row] = mt;
    }
}

/* llama.cpp numerics, pass 2: the sum of exponentials as its softmax forms it (llama.cpp's
 * exp approximation, groups of 16 keys summed in float, groups added in double). Tiles start
 * at multiples of 16 in the sequence for the block layouts we use, so the groups coincide. */
static void tile_sum(const run *r, const tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (!tile_scores(r, t, row, &mt))
            continue;
        S->l[row] += vm_exp_sum(S->s, S->s, t->n, S->m[row]);
    }
}

/* llama.cpp's p·V orders. Batch (tinyBLAS): per output 16 lanes, lane = key cell % 16, each
 * a chain over the keys in order. One query (ggml_vec_dot_f16): four such banks by
 * (cell / 16) % 4 below n_vec, the cells from n_vec on added in double after the fold. */
static void lanes_fold(const float *la, int32_t hd, int banks, float *out)
{
    for (int32_t d = 0; d < hd; d++) {
        float v[16];
        for (int l = 0; l < 16; l++) {
            const float *a = la + (size_t)d * 16 + l;
            size_t bs = (size_t)hd * 16;
            v[l] = banks == 1 ? a[0] : (a[0] + a[2 * bs]) + (a[bs] + a[3 * bs]);
        }
        out[d] = red16(v);
    }
}

#ifdef ATTN_X86
ATTN_AVX512 static void tail_add_avx512(double *ld, float pj, const float *vj, int32_t hd)
{
    __m256 pv = _mm256_set1_ps(pj);
    int32_t d = 0;
    for (; d + 8 <= hd; d += 8) {
        __m256 pr = _mm256_mul_ps(pv, _mm256_loadu_ps(vj + d));
        _mm512_storeu_pd(ld + d, _mm512_add_pd(_mm512_loadu_pd(ld + d), _mm512_cvtps_pd(pr)));
    }
    for (; d < hd; d++) ld[d] += (double)(pj * vj[d]);
}
#endif

/* One key of the one-token p·V tail: products in float, sums in double. */
static void tail_add(const attn_scratch *S, double *ld, float pj, const float *vj, int32_t hd)
{
#ifdef ATTN_X86
    if (S->accum == accum_avx512) {
        tail_add_avx512(ld, pj, vj, hd);
        return;
    }
#else
    (void)S;
#endif
    for (int32_t d = 0; d < hd; d++) ld[d] += (double)(pj * vj[d]);
}

static void lanes_accum_scalar(const run *r, const tile *t, int32_t row, const float *p,
                               int32_t j0)
{
    attn_scratch *S = r->s;
    int32_t hd = r->p->head_dim;
    int banks = r->decode ? 4 : 1;
    float *la = S->lacc + (size_t)row * banks * hd * 16;
    for (int32_t j = j0; j < t->n; j++) {
        if (p[j] == 0.0f)
            continue;
        int64_t g = t->key0 + j;
        const float *vj = t->v + (size_t)j * t->vs;
        if (r->decode && g >= r->n_vec) {
            double *ld = S->ldbl + (size_t)row * hd;
            if (!S->ldone[row]) {
                float f[hd];
                lanes_fold(la, hd, 4, f);
                for (int32_t d = 0; d < hd; d++) ld[d] = f[d];
                S->ldone[row] = 1;
            }
            tail_add(S, ld, p[j], vj, hd);
            continue;
        }
        float *a = la + (size_t)(r->decode ? (g / 16) % 4 : 0) * hd * 16 + g % 16;
        for (int32_t d = 0; d < hd; d++) a[(size_t)d * 16] = fmaf(p[j], vj[d], a[(size_t)d * 16]);
    }
}

#ifdef ATTN_X86
/* Batch order, or the one-token order's four banks, with 16-key chunks starting at cells that
 * are multiples of 16 (keys from n_vec on are left to the scalar double tail). Returns the
 * number of keys done. */
ATTN_AVX512 static int32_t lanes_accum_avx512(const run *r, const tile *t, int32_t row,
                                              const float *p, const float *vtt)
{
    int32_t hd = r->p->head_dim;
    int banks = r->decode ? 4 : 1;
    float *lrow = r->s->lacc + (size_t)row * banks * hd * 16;
    int32_t c = 0;
    for (; c < t->n; c += 16) {
        int64_t g = t->key0 + c;
        if (r->decode && g >= r->n_vec)
            break;
        float *la = lrow + (size_t)(r->decode ? (g / 16) % 4 : 0) * hd * 16;
        __mmask16 mk = tail_mask(t->n - c);
        __m512 pv = _mm512_maskz_loadu_ps(mk, p + c);
        for (int32_t d = 0; d < hd; d++) {
            __m512 a = _mm512_loadu_ps(la + (size_t)d * 16);
            a = _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(mk, vtt + (size_t)d * ATTN_TILE + c), a);
            _mm512_storeu_ps(la + (size_t)d * 16, a);
        }
    }
    return c < t->n ? c : t->n;
}
#endif

/* Two-pass, pass 2: normalised probabilities, key mass and p·V. S->l holds 1/sum here. */
static void tile_probs(const run *r, const tile *t)
{
    attn_scratch *S = r->s;
    const attn_params *p = r->p;
    int32_t hd = p->head_dim;
    if (r->lanes && t->key0 % 16 == 0 && S->accum != accum_scalar)
        for (int32_t j = 0; j < t->n; j++)
            for (int32_t d = 0; d < hd; d++)
                S->vtt[(size_t)d * ATTN_TILE + j] = t->v[(size_t)j * t->vs + d];
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (S->l[row] <= 0 || !tile_scores(r, t, row, &mt))
            continue;
        float inv = (float)S->l[row], m = S->m[row];
        float *mass = p->key_mass ? p->key_mass + (size_t)(row % p->n_group) * r->n_keys +
                                        t->key0
                                  : NULL;
        for (int32_t j = 0; j < t->n; j++) {
            float pj = (r->exact_exp ? vm_expf(S->s[j] - m) : expf(S->s[j] - m)) * inv;
            if (mass)
                mass[j] += pj;
            S->s[j] = pj;
        }
        if (r->round_p) { /* through f16 and back, vectorised (F16C) */
            uint16_t h[ATTN_TILE];
            qt_f32_to_f16_row(S->s, h, t->n);
            qt_f16_to_f32_row(h, S->s, t->n);
        }
        if (!r->lanes) {
            S->accum(S->acc + (size_t)row * hd, S->s, t->v, t->vs, t->n, hd);
            continue;
        }
        int32_t done = 0;
#ifdef ATTN_X86
        if (t->key0 % 16 == 0 && S->accum == accum_avx512)
            done = lanes_accum_avx512(r, t, row, S->s, S->vtt);
#endif
        lanes_accum_scalar(r, t, row, S->s, done);
    }
}

static int check_params(const attn_params *p, const attn_span *spans, int32_t n_spans,
                        const attn_scratch *s, int64_t *n_keys)
{
    if (!p || !s || n_spans < 0 || (n_spans > 0 && !spans))
        return KS_ERR_INVALID;
    if (p->n_q < 0 || p->n_q > s->max_q || p->n_group < 1 || p->n_group > s->max_group ||
        p->head_dim != s->head_dim || !isfinite(p->scale) ||
        (p->kv_dtype != KS_DTYPE_F32 && p->kv_dtype != KS_DTYPE_F16))
        return KS_ERR_INVALID;
    int32_t width = p->n_group * p->head_dim;
    if (p->n_q > 0 && (!p->q || !p->out || p->q_tok_stride < width ||
                       p->out_tok_stride < width))
        return KS_ERR_INVALID;
    int64_t nk = 0;
    for (int32_t i = 0; i < n_spans; i++) {
        const attn_span *sp = &spans[i];
        if (sp->n < 0 || sp->k_stride < 0 || sp->v_stride < 0 ||
            (sp->k_stride > 0 && sp->k_stride < p->head_dim) ||
            (sp->v_stride > 0 && sp->v_stride < p->head_dim))
            return KS_ERR_INVALID;
        if (sp->n > 0 && (!sp->k || !sp->v || (sp->idx && !p->q_idx && p->n_q > 0)))
            return KS_ERR_INVALID;
        nk += sp->n;
    }
    *n_keys = nk;
    return 0;
}

typedef void (*tile_fn)(const run *r, const tile *t);

static void for_each_tile(const run *r, const attn_span *spans, int32_t n_spans, tile_fn fn)
{
    int64_t key0 = 0;
    for (int32_t i = 0; i < n_spans; i++) {
        for (int32_t j0 = 0; j0 < spans[i].n; j0 += ATTN_TILE) {
            tile t;
            tile_load(r, &spans[i], j0, KS_MIN(ATTN_TILE, spans[i].n - j0), &t);
            t.key0 = key0 + j0;
            if (t.n > 0)
                fn(r, &t);
        }
        key0 += spans[i].n;
    }
}

/* llama.cpp's CPU flash attention, one query row at a time (see attention.h). The per-key
 * update is its kernel's: a new maximum rescales the accumulator (rounded to f16 with an f16
 * cache), every key adds v*exp(s - M) with one fused multiply-add (rounded likewise), and the
 * running sum is S*ms + vs, also fused, as it compiles on FMA machines. */
static void flash_row(const attn_params *p, const attn_span *spans, int32_t n_spans,
                      const float *q, int32_t qi, float *out, attn_scratch *s)
{
    const int32_t hd = p->head_dim;
    const bool f16 = p->kv_dtype == KS_DTYPE_F16;
    float *acc = s->acc, *krow = s->kt, *vrow = s->vt;
    float M = -INFINITY, S = 0.0f;
    memset(acc, 0, (size_t)hd * sizeof(float));
    for (int32_t i = 0; i < n_spans; i++) {
        const attn_span *sp = &spans[i];
        size_t ks = sp->k_stride ? (size_t)sp->k_stride : (size_t)hd;
        size_t vs_ = sp->v_stride ? (size_t)sp->v_stride : (size_t)hd;
        for (int32_t j = 0; j < sp->n; j++) {
            if (sp->idx && (sp->idx[j] > qi || (p->window > 0 && sp->idx[j] <= qi - p->window)))
                continue;
            const float *kr, *vr;
            if (f16) {
                qt_f16_to_f32_row((const uint16_t *)sp->k + (size_t)j * ks, krow, hd);
                qt_f16_to_f32_row((const uint16_t *)sp->v + (size_t)j * vs_, vrow, hd);
                kr = krow;
                vr = vrow;
            } else {
                kr = (const float *)sp->k + (size_t)j * ks;
                vr = (const float *)sp->v + (size_t)j * vs_;
            }
            float sc;
            scores_vecdot(q, kr, (size_t)hd, 1, hd, p->scale, &sc);
            float ms = 1.0f, vs = 1.0f;
            if (sc > M) {
                const float m_old = M;
                M = sc;
                ms = expf(m_old - M);
                for (int32_t d = 0; d < hd; d++) {
                    float x = acc[d] * ms;
                    acc[d] = f16 ? ks_f16_to_f32(ks_f32_to_f16(x)) : x;
                }
            } else {
                vs = expf(sc - M);
            }
            for (int32_t d = 0; d < hd; d++) {
                float x = fmaf(vr[d], vs, acc[d]);
                acc[d] = f16 ? ks_f16_to_f32(ks_f32_to_f16(x)) : x;
            }
            S = fmaf(S, ms, vs);
        }
    }
    const float inv = S > 0.0f ? 1.0f / S : 0.0f;
    for (int32_t d = 0; d < hd; d++) out[d] = acc[d] * inv;
}

static int attn_forward_flash(const attn_params *p, const attn_span *spans, int32_t n_spans,
                              attn_scratch *s)
{
    const int32_t hd = p->head_dim;
    const bool f16 = p->kv_dtype == KS_DTYPE_F16;
    float *qr = s->qr;
    for (int32_t t = 0; t < p->n_q; t++) {
        for (int32_t g = 0; g < p->n_group; g++) {
            const float *src = p->q + (size_t)t * p->q_tok_stride + (size_t)g * hd;
            for (int32_t d = 0; d < hd; d++)
                qr[d] = f16 ? ks_f16_to_f32(ks_f32_to_f16(src[d])) : src[d];
            flash_row(p, spans, n_spans, qr, p->q_idx ? p->q_idx[t] : INT32_MAX,
                      p->out + (size_t)t * p->out_tok_stride + (size_t)g * hd, s);
        }
    }
    return 0;
}

int attn_forward(const attn_params *p, const attn_span *spans, int32_t n_spans,
                 attn_scratch *s)
{
    int64_t n_keys = 0;
    int rc = check_params(p, spans, n_spans, s, &n_keys);
    if (rc)
        return rc;
    if (p->llama_flash)
        return p->key_mass ? KS_ERR_INVALID : attn_forward_flash(p, spans, n_spans, s);
    int32_t hd = p->head_dim, rows = p->n_q * p->n_group;
    bool f16 = p->kv_dtype == KS_DTYPE_F16;
    run r = {.p = p, .s = s, .q = p->q, .q_stride = (size_t)p->q_tok_stride, .rows = rows,
             .n_keys = n_keys, .round_p = p->llama_numerics && f16};
    if (p->llama_numerics && f16) {
        for (int32_t row = 0; row < rows; row++) {
            const float *src = p->q + (size_t)(row / p->n_group) * p->q_tok_stride +
                               (size_t)(row % p->n_group) * hd;
            for (int32_t d = 0; d < hd; d++)
                s->qr[(size_t)row * hd + d] = ks_f16_to_f32(ks_f32_to_f16(src[d]));
        }
        r.q = s->qr;
        r.q_stride = (size_t)p->n_group * hd;
    }
    r.q_idx_max = INT32_MIN;
    for (int32_t t = 0; p->q_idx && t < p->n_q; t++)
        r.q_idx_max = KS_MAX(r.q_idx_max, p->q_idx[t]);
    for (int32_t row = 0; row < rows; row++) {
        s->m[row] = -INFINITY;
        s->l[row] = 0;
    }
    memset(s->acc, 0, (size_t)rows * hd * sizeof(float));
    bool two_pass = p->llama_numerics || p->key_mass;
    if (p->llama_numerics) {
        r.exact_exp = true;
        /* One query token: llama.cpp's q·k and p·V have one row per head (n_tokens = 1), so
         * both take the one-token vec-dot orders even for GQA. The scores must use that order
         * in every pass (max, sum and probabilities) so that they agree. */
        r.decode = p->n_q == 1;
        r.vec_scores = f16 && r.decode;
        for_each_tile(&r, spans, n_spans, tile_max);
        for_each_tile(&r, spans, n_spans, tile_sum);
        for (int32_t row = 0; row < rows; row++)
            s->l[row] = s->l[row] > 0 ? 1.0 / s->l[row] : 0;
        r.lanes = f16;
        if (r.lanes) {
            int64_t pad = ATTN_LLAMA_KV_PAD;
            int64_t n_kv = KS_MAX(pad, (n_keys + pad - 1) / pad * pad);
            r.n_vec = n_kv & ~(int64_t)63;
            int banks = r.decode ? 4 : 1;
            memset(s->lacc, 0, (size_t)rows * banks * hd * 16 * sizeof(float));
            if (r.decode) memset(s->ldone, 0, (size_t)rows);
        }
        for_each_tile(&r, spans, n_spans, tile_probs);
        for (int32_t row = 0; r.lanes && row < rows; row++) {
            float *acc = s->acc + (size_t)row * hd;
            const float *la = s->lacc + (size_t)row * (r.decode ? 4 : 1) * hd * 16;
            if (r.decode && s->ldone[row])
                for (int32_t d = 0; d < hd; d++) acc[d] = (float)s->ldbl[(size_t)row * hd + d];
            else
                lanes_fold(la, hd, r.decode ? 4 : 1, acc);
        }
    } else if (two_pass) {
        for_each_tile(&r, spans, n_spans, tile_stats);
        for (int32_t row = 0; row < rows; row++)
            s->l[row] = s->l[row] > 0 ? 1.0 / s->l[row] : 0;
        for_each_tile(&r, spans, n_spans, tile_probs);
    } else {
        for_each_tile(&r, spans, n_spans, tile_online);
    }
    for (int32_t row = 0; row < rows; row++) {
        float *o = p->out + (size_t)(row / p->n_group) * p->out_tok_stride +
                   (size_t)(row % p->n_group) * hd;
        const float *acc = s->acc + (size_t)row * hd;
        float inv = two_pass ? 1.0f : (s->l[row] > 0 ? (float)(1.0 / s->l[row]) : 0.0f);
        if (s->l[row] <= 0)
            inv = 0.0f;
        for (int32_t d = 0; d < hd; d++)
            o[d] = acc[d] * inv;
    }
    return 0;
}

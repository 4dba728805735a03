/* attention_llama.c - the attention core in llama.cpp's CPU orders, for reproducing its
 * figures bit for bit (kvserve perplexity --attn exact|flash, the parity tests).
 *
 * Why a separate file: the span core (attention.c) is free to sum in whatever order is fast;
 * llama.cpp's kernels fix the order of every floating-point operation, and matching them
 * needs code that exists for no other reason. Two modes:
 *   - non-flash (llama_numerics): three passes over the tiles (row max, llama.cpp's exp sum in
 *     groups of 16, then probabilities) with q and p rounded to f16 for an f16 cache, q·k in
 *     ggml_vec_dot_f16's order for one query token, and p·V summed in its lane orders
 *     (tinyBLAS for a batch, vec-dot banks plus a double tail for one token);
 *   - flash (llama_flash): its flash-attention kernel, one query row at a time with a scalar
 *     online softmax and, for an f16 V cache, the V accumulator rounded to f16 after each key;
 *     block-type K (q8_0, q4_0, ...) scored with q quantised to q8_0/q8_1 and integer dots.
 * Both read spans through attn_tiles.c and share nothing else with attention.c.
 */
#include "attention_llama.h"

#include <math.h>
#include <string.h>

#include "kvserve/quant.h"
#include "vmath.h"

/* llama.cpp pads its KV view to a multiple of this many cells (no flash attention); its
 * one-token p·V sums the cells past the last multiple of 64 in double. */
#define ATTN_LLAMA_KV_PAD 32

/* _mm512_reduce_add_ps's tree over 16 lanes. */
static float red16(const float *v)
{
    float a[8], b[4];
    for (int i = 0; i < 8; i++)
        a[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++)
        b[i] = a[i] + a[i + 4];
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* ggml_vec_dot_f16's order for one query row against n keys (values already f16-exact):
 * four 16-lane accumulators over 64-element steps folded (0+2)+(1+3), the 16-lane tree, then
 * the tail in double. */
static void scores_vecdot(const float *q, const float *k, size_t k_stride, int32_t n, int32_t hd,
                          float scale, float *s)
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
        for (int l = 0; l < 16; l++)
            v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
        double d = red16(v);
        for (; i < hd; i++)
            d += (double)(q[i] * kj[i]);
        s[j] = (float)d * scale;
    }
}

#ifdef ATTN_X86
/* ggml_vec_dot_f16's order, vectorised: see scores_vecdot. */
ATTN_AVX512 static void scores_vecdot_simd(const float *q, const float *k, size_t k_stride,
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
        double d =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
        for (int32_t i = np; i < hd; i++)
            d += (double)(q[i] * kj[i]);
        s[j] = (float)d * scale;
    }
}
#endif

#ifndef ATTN_X86
#define scores_vecdot_simd scores_vecdot
#endif

/* llama.cpp numerics, pass 1: the row maximum over all visible keys. */
static void tile_max(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        bool vis = attn_tile_scores(r, t, row, &mt);
        if (vis && mt > S->m[row]) S->m[row] = mt;
        if (!r->cache) continue;
        size_t at = (size_t)t->seq * (size_t)r->rows + (size_t)row;
        S->sc_vis[at] = vis;
        if (vis) memcpy(S->sc + at * ATTN_TILE, S->s, (size_t)t->n * sizeof(float));
    }
}

/* The cached scores (after pass 2: exponentials) of row against tile t, or NULL when the row
 * does not see the tile. */
static float *cached_row(const attn_run *r, const attn_tile *t, int32_t row)
{
    size_t at = (size_t)t->seq * (size_t)r->rows + (size_t)row;
    return r->s->sc_vis[at] ? r->s->sc + at * ATTN_TILE : NULL;
}

/* llama.cpp numerics, pass 2: the sum of exponentials as its softmax forms it (llama.cpp's
 * exp approximation, groups of 16 keys summed in float, groups added in double). Tiles start
 * at multiples of 16 in the sequence for the block layouts we use, so the groups coincide. */
static void tile_sum(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt, *c = r->cache ? cached_row(r, t, row) : NULL;
        if (c) { /* the exponentials replace the scores: pass 3 reads them */
            S->l[row] += vm_exp_sum(c, c, t->n, S->m[row]);
            continue;
        }
        if (r->cache || !attn_tile_scores(r, t, row, &mt)) continue;
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
    for (; d < hd; d++)
        ld[d] += (double)(pj * vj[d]);
}
#endif

/* One key of the one-token p·V tail: products in float, sums in double. */
static void tail_add(const attn_scratch *S, double *ld, float pj, const float *vj, int32_t hd)
{
#ifdef ATTN_X86
    if (S->simd) {
        tail_add_avx512(ld, pj, vj, hd);
        return;
    }
#else
    (void)S;
#endif
    for (int32_t d = 0; d < hd; d++)
        ld[d] += (double)(pj * vj[d]);
}

static void lanes_accum_scalar(const attn_run *r, const attn_tile *t, int32_t row, const float *p,
                               int32_t j0)
{
    attn_scratch *S = r->s;
    int32_t hd = r->p->head_dim;
    int banks = r->decode ? 4 : 1;
    float *la = S->lacc + (size_t)row * banks * hd * 16;
    for (int32_t j = j0; j < t->n; j++) {
        if (p[j] == 0.0f) continue;
        int64_t g = t->key0 + j;
        const float *vj = t->v + (size_t)j * t->vs;
        if (r->decode && g >= r->n_vec) {
            double *ld = S->ldbl + (size_t)row * hd;
            if (!S->ldone[row]) {
                float f[hd];
                lanes_fold(la, hd, 4, f);
                for (int32_t d = 0; d < hd; d++)
                    ld[d] = f[d];
                S->ldone[row] = 1;
            }
            tail_add(S, ld, p[j], vj, hd);
            continue;
        }
        float *a = la + (size_t)(r->decode ? (g / 16) % 4 : 0) * hd * 16 + g % 16;
        for (int32_t d = 0; d < hd; d++)
            a[(size_t)d * 16] = fmaf(p[j], vj[d], a[(size_t)d * 16]);
    }
}

#ifdef ATTN_X86
/* Batch order, or the one-token order's four banks, with 16-key chunks starting at cells that
 * are multiples of 16 (keys from n_vec on are left to the scalar double tail). Returns the
 * number of keys done. */
ATTN_AVX512 static int32_t lanes_accum_avx512(const attn_run *r, const attn_tile *t, int32_t row,
                                              const float *p, const float *vtt)
{
    int32_t hd = r->p->head_dim;
    int banks = r->decode ? 4 : 1;
    float *lrow = r->s->lacc + (size_t)row * banks * hd * 16;
    int32_t c = 0;
    for (; c < t->n; c += 16) {
        int64_t g = t->key0 + c;
        if (r->decode && g >= r->n_vec) break;
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

/* Pass 3: normalised probabilities (llama.cpp's exp), key mass, p rounded to f16 with an f16
 * cache, and p·V in its lane orders. S->l holds 1/sum here. */
static void tile_probs_llama(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    const attn_params *p = r->p;
    int32_t hd = p->head_dim;
    if (r->lanes && t->key0 % 16 == 0 && S->simd)
        for (int32_t j = 0; j < t->n; j++)
            for (int32_t d = 0; d < hd; d++)
                S->vtt[(size_t)d * ATTN_TILE + j] = t->v[(size_t)j * t->vs + d];
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        const float *ex = r->cache && S->l[row] > 0 ? cached_row(r, t, row) : NULL;
        if (!ex && (r->cache || S->l[row] <= 0 || !attn_tile_scores(r, t, row, &mt))) continue;
        float inv = (float)S->l[row], m = S->m[row];
        float *mass =
            p->key_mass ? p->key_mass + (size_t)(row % p->n_group) * r->n_keys + t->key0 : NULL;
        for (int32_t j = 0; j < t->n; j++) { /* the cache holds pass 2's exp: the same bits */
            float e = ex ? ex[j] : r->exact_exp ? vm_expf(S->s[j] - m) : expf(S->s[j] - m);
            float pj = e * inv;
            if (mass) mass[j] += pj;
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
        if (t->key0 % 16 == 0 && S->simd) done = lanes_accum_avx512(r, t, row, S->s, S->vtt);
#endif
        lanes_accum_scalar(r, t, row, S->s, done);
    }
}

void attn_llama_passes(attn_run *r, const attn_span *spans, int32_t n_spans)
{
    const attn_params *p = r->p;
    attn_scratch *s = r->s;
    int32_t hd = p->head_dim, rows = r->rows;
    int64_t n_keys = r->n_keys;
    bool f16 = p->k_dtype == KS_DTYPE_F16;
    if (f16) { /* llama.cpp converts q to f16 to dot it with f16 K */
        for (int32_t row = 0; row < rows; row++) {
            const float *src = p->q + (size_t)(row / p->n_group) * p->q_tok_stride +
                               (size_t)(row % p->n_group) * hd;
            for (int32_t d = 0; d < hd; d++)
                s->qr[(size_t)row * hd + d] = ks_f16_to_f32(ks_f32_to_f16(src[d]));
        }
        r->q = s->qr;
        r->q_stride = (size_t)p->n_group * hd;
    }
    r->round_p = f16;
    r->exact_exp = true;
    /* One query token: llama.cpp's q·k and p·V have one row per head (n_tokens = 1), so
     * both take the one-token vec-dot orders even for GQA. The scores must use that order
     * in every pass (max, sum and probabilities) so that they agree. */
    r->decode = p->n_q == 1;
    if (f16 && r->decode) r->scores = s->simd ? scores_vecdot_simd : scores_vecdot;
    /* Scores computed once when they fit the cache (exact: the same kernel, the same bits). */
    r->cache = !s->no_score_cache &&
               attn_tile_count(spans, n_spans) * rows * ATTN_TILE * (int64_t)sizeof(float) <=
                   (int64_t)ATTN_SCORE_CACHE_BYTES;
    attn_for_each_tile(r, spans, n_spans, tile_max);
    attn_for_each_tile(r, spans, n_spans, tile_sum);
    for (int32_t row = 0; row < rows; row++)
        s->l[row] = s->l[row] > 0 ? 1.0 / s->l[row] : 0;
    r->lanes = f16;
    if (r->lanes) {
        int64_t pad = ATTN_LLAMA_KV_PAD;
        int64_t n_kv = KS_MAX(pad, (n_keys + pad - 1) / pad * pad);
        r->n_vec = n_kv & ~(int64_t)63;
        int banks = r->decode ? 4 : 1;
        memset(s->lacc, 0, (size_t)rows * banks * hd * 16 * sizeof(float));
        if (r->decode) memset(s->ldone, 0, (size_t)rows);
    }
    attn_for_each_tile(r, spans, n_spans, tile_probs_llama);
    for (int32_t row = 0; r->lanes && row < rows; row++) {
        float *acc = s->acc + (size_t)row * hd;
        const float *la = s->lacc + (size_t)row * (r->decode ? 4 : 1) * hd * 16;
        if (r->decode && s->ldone[row])
            for (int32_t d = 0; d < hd; d++)
                acc[d] = (float)s->ldbl[(size_t)row * hd + d];
        else
            lanes_fold(la, hd, r->decode ? 4 : 1, acc);
    }
}

/* Score of the query (prepared by flash_query) against key row kr of type kt. */
static float flash_score(const attn_params *p, const void *kr, const float *q, const void *qq,
                         float *krow)
{
    const int32_t hd = p->head_dim;
    float sc;
    if (!ks_dtype_is_float(p->k_dtype))
        return qt_vec_dot((qt_type)p->k_dtype, hd, kr, qq) * p->scale;
    const float *k = kr;
    if (p->k_dtype != KS_DTYPE_F32) {
        ks_dtype_to_f32(p->k_dtype, kr, krow, hd);
        k = krow;
    }
    scores_vecdot(q, k, (size_t)hd, 1, hd, p->scale, &sc);
    return sc;
}

/* llama.cpp's CPU flash attention, one query row at a time (see attention.h). The per-key
 * update is its kernel's: a new maximum rescales the accumulator (rounded to f16 with an f16
 * V cache), every key adds v*exp(s - M) with one fused multiply-add (rounded likewise), and
 * the running sum is S*ms + vs, also fused, as it compiles on FMA machines. */
static void flash_row(const attn_params *p, const attn_span *spans, int32_t n_spans, const float *q,
                      const void *qq, int32_t qi, float *out, attn_scratch *s)
{
    const int32_t hd = p->head_dim;
    const bool f16 = p->v_dtype == KS_DTYPE_F16;
    float *acc = s->acc, *krow = s->kt, *vrow = s->vt;
    float M = -INFINITY, S = 0.0f;
    memset(acc, 0, (size_t)hd * sizeof(float));
    for (int32_t i = 0; i < n_spans; i++) {
        const attn_span *sp = &spans[i];
        size_t kb = ks_dtype_row_bytes(p->k_dtype, sp->k_stride ? sp->k_stride : hd);
        size_t vb = ks_dtype_row_bytes(p->v_dtype, sp->v_stride ? sp->v_stride : hd);
        for (int32_t j = 0; j < sp->n; j++) {
            if (sp->idx && (sp->idx[j] > qi || (p->window > 0 && sp->idx[j] <= qi - p->window)))
                continue;
            float sc = flash_score(p, (const uint8_t *)sp->k + (size_t)j * kb, q, qq, krow);
            ks_dtype_to_f32(p->v_dtype, (const uint8_t *)sp->v + (size_t)j * vb, vrow, hd);
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
                float x = fmaf(vrow[d], vs, acc[d]);
                acc[d] = f16 ? ks_f16_to_f32(ks_f32_to_f16(x)) : x;
            }
            S = fmaf(S, ms, vs);
        }
    }
    const float inv = S > 0.0f ? 1.0f / S : 0.0f;
    for (int32_t d = 0; d < hd; d++)
        out[d] = acc[d] * inv;
}

/* q as llama.cpp converts it for K's dot: rounded to f16 / bf16 for those caches, quantised
 * to q8_0 / q8_1 (into qq) for block types. */
static void flash_query(const attn_params *p, const float *src, float *qr, void *qq)
{
    const int32_t hd = p->head_dim;
    if (!ks_dtype_is_float(p->k_dtype)) {
        qt_quantize_row(qt_vec_dot_type((qt_type)p->k_dtype), src, qq, hd);
        return;
    }
    for (int32_t d = 0; d < hd; d++)
        qr[d] = p->k_dtype == KS_DTYPE_F16    ? ks_f16_to_f32(ks_f32_to_f16(src[d]))
                : p->k_dtype == KS_DTYPE_BF16 ? ks_bf16_to_f32(ks_f32_to_bf16(src[d]))
                                              : src[d];
}

int attn_llama_flash(const attn_params *p, const attn_span *spans, int32_t n_spans, attn_scratch *s)
{
    const int32_t hd = p->head_dim;
    for (int32_t t = 0; t < p->n_q; t++) {
        for (int32_t g = 0; g < p->n_group; g++) {
            const float *src = p->q + (size_t)t * p->q_tok_stride + (size_t)g * hd;
            flash_query(p, src, s->qr, s->qq);
            flash_row(p, spans, n_spans, s->qr, s->qq, p->q_idx ? p->q_idx[t] : INT32_MAX,
                      p->out + (size_t)t * p->out_tok_stride + (size_t)g * hd, s);
        }
    }
    return 0;
}

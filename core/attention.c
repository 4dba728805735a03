/* attention.c - the shared attention core: softmax(q·K^T * scale + causal mask) V for a chunk
 * of queries of one KV head over a list of spans, with memory independent of the key count.
 *
 * Algorithm. Keys are visited in tiles of up to ATTN_TILE keys. For f16, bf16 and block-type
 * (q8_0, q4_0, ...) caches each K and V tile is dequantised to f32 once (SIMD for f16 and
 * q8_0/q4_0) and then reused by every query row of the chunk (n_q tokens x
 * n_group heads sharing this KV head), so in GQA and in prefill each cached row is read from
 * memory once per call. Per query row and tile we compute the tile's scores, mask keys whose
 * sequence index is above the query's, and fold them into a streaming softmax: one max update
 * and one rescale of the running sum and accumulator per tile (online softmax, as in
 * FlashAttention). A row that sees no key outputs zeros. Quantised K is thus scored by
 * "dequantise on the fly, dot with f32 q": one dequantisation per key per call instead of one
 * per query row, and q keeps full precision (llama.cpp instead quantises q to q8_0; its
 * order is reproduced only by the llama_flash emulation).
 *
 * Two-pass mode (key_mass requested): pass 1 computes each row's max and sum of exponentials
 * over all visible keys; pass 2 recomputes the scores, forms the normalised probabilities p
 * (reported as key mass) and accumulates p·V directly.
 *
 * The inner kernels (scores of one query row against a tile, and p·V accumulation), the
 * scratch and the tile walker live in attn_tiles.c; the llama.cpp-order emulation (the
 * llama_numerics and llama_flash modes) in attention_llama.c.
 */
#include "kvserve/attention.h"

#include <math.h>
#include <string.h>

#include "attention_llama.h"
#include "attn_tiles.h"

/* Single pass: online softmax with one rescale per tile. */
static void tile_online(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    int32_t hd = r->p->head_dim;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (!attn_tile_scores(r, t, row, &mt)) continue;
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
static void tile_stats(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (!attn_tile_scores(r, t, row, &mt)) continue;
        float m_new = mt > S->m[row] ? mt : S->m[row];
        if (m_new > S->m[row] && S->l[row] > 0) S->l[row] *= exp((double)S->m[row] - (double)m_new);
        S->m[row] = m_new;
        double sum = 0;
        for (int32_t j = 0; j < t->n; j++)
            sum += expf(S->s[j] - m_new);
        S->l[row] += sum;
    }
}

/* Two-pass, pass 2: normalised probabilities, key mass and p·V. S->l holds 1/sum here. */
static void tile_probs(const attn_run *r, const attn_tile *t)
{
    attn_scratch *S = r->s;
    const attn_params *p = r->p;
    int32_t hd = p->head_dim;
    for (int32_t row = 0; row < r->rows; row++) {
        float mt;
        if (S->l[row] <= 0 || !attn_tile_scores(r, t, row, &mt)) continue;
        float inv = (float)S->l[row], m = S->m[row];
        float *mass =
            p->key_mass ? p->key_mass + (size_t)(row % p->n_group) * r->n_keys + t->key0 : NULL;
        for (int32_t j = 0; j < t->n; j++) {
            float pj = expf(S->s[j] - m) * inv;
            if (mass) mass[j] += pj;
            S->s[j] = pj;
        }
        S->accum(S->acc + (size_t)row * hd, S->s, t->v, t->vs, t->n, hd);
    }
}

static int check_params(const attn_params *p, const attn_span *spans, int32_t n_spans,
                        const attn_scratch *s, int64_t *n_keys)
{
    if (!p || !s || n_spans < 0 || (n_spans > 0 && !spans)) return KS_ERR_INVALID;
    if (p->n_q < 0 || p->n_q > s->max_q || p->n_group < 1 || p->n_group > s->max_group ||
        p->head_dim != s->head_dim || !isfinite(p->scale) ||
        !ks_dtype_row_bytes(p->k_dtype, p->head_dim) ||
        !ks_dtype_row_bytes(p->v_dtype, p->head_dim))
        return KS_ERR_INVALID;
    int32_t width = p->n_group * p->head_dim;
    if (p->n_q > 0 && (!p->q || !p->out || p->q_tok_stride < width || p->out_tok_stride < width))
        return KS_ERR_INVALID;
    int64_t nk = 0;
    for (int32_t i = 0; i < n_spans; i++) {
        const attn_span *sp = &spans[i];
        if (sp->n < 0 || sp->k_stride < 0 || sp->v_stride < 0 ||
            (sp->k_stride > 0 && sp->k_stride < p->head_dim) ||
            (sp->v_stride > 0 && sp->v_stride < p->head_dim) ||
            (sp->k_stride > 0 && !ks_dtype_row_bytes(p->k_dtype, sp->k_stride)) ||
            (sp->v_stride > 0 && !ks_dtype_row_bytes(p->v_dtype, sp->v_stride)))
            return KS_ERR_INVALID;
        if (sp->n > 0 && (!sp->k || !sp->v || (sp->idx && !p->q_idx && p->n_q > 0)))
            return KS_ERR_INVALID;
        /* a sealed KIVI span is one group: its rows are the group's first n, packed */
        if (sp->group < 0 || (sp->group > 0 && sp->n > sp->group) ||
            (sp->group > 0 && ks_dtype_is_kivi(p->k_dtype) && sp->k_stride > 0 &&
             sp->k_stride != p->head_dim))
            return KS_ERR_INVALID;
        nk += sp->n;
    }
    *n_keys = nk;
    return 0;
}

int attn_forward(const attn_params *p, const attn_span *spans, int32_t n_spans, attn_scratch *s)
{
    int64_t n_keys = 0;
    int rc = check_params(p, spans, n_spans, s, &n_keys);
    if (rc) return rc;
    /* llama.cpp has no KIVI types: those run the span core below */
    if (p->llama_flash && !ks_dtype_is_kivi(p->k_dtype) && !ks_dtype_is_kivi(p->v_dtype))
        return p->key_mass ? KS_ERR_INVALID : attn_llama_flash(p, spans, n_spans, s);
    int32_t hd = p->head_dim, rows = p->n_q * p->n_group;
    attn_run r = {.p = p,
                  .s = s,
                  .scores = s->scores,
                  .q = p->q,
                  .q_stride = (size_t)p->q_tok_stride,
                  .rows = rows,
                  .n_keys = n_keys};
    r.q_idx_max = INT32_MIN;
    for (int32_t t = 0; p->q_idx && t < p->n_q; t++)
        r.q_idx_max = KS_MAX(r.q_idx_max, p->q_idx[t]);
    for (int32_t row = 0; row < rows; row++) {
        s->m[row] = -INFINITY;
        s->l[row] = 0;
    }
    memset(s->acc, 0, (size_t)rows * hd * sizeof(float));
    bool llama = p->llama_numerics && p->k_dtype == p->v_dtype &&
                 (p->k_dtype == KS_DTYPE_F16 || p->k_dtype == KS_DTYPE_F32);
    bool two_pass = llama || p->key_mass;
    if (llama) {
        attn_llama_passes(&r, spans, n_spans);
    } else if (two_pass) {
        attn_for_each_tile(&r, spans, n_spans, tile_stats);
        for (int32_t row = 0; row < rows; row++)
            s->l[row] = s->l[row] > 0 ? 1.0 / s->l[row] : 0;
        attn_for_each_tile(&r, spans, n_spans, tile_probs);
    } else {
        attn_for_each_tile(&r, spans, n_spans, tile_online);
    }
    for (int32_t row = 0; row < rows; row++) {
        float *o = p->out + (size_t)(row / p->n_group) * p->out_tok_stride +
                   (size_t)(row % p->n_group) * hd;
        const float *acc = s->acc + (size_t)row * hd;
        float inv = two_pass ? 1.0f : (s->l[row] > 0 ? (float)(1.0 / s->l[row]) : 0.0f);
        if (s->l[row] <= 0) inv = 0.0f;
        for (int32_t d = 0; d < hd; d++)
            o[d] = acc[d] * inv;
    }
    return 0;
}

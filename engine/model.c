/* model.c - the forward pass over a batch of sequences, for every architecture in
 * model_arch.c (the per-architecture steps are flags there, marked [arch] below).
 *
 * Data flow per step (llama.cpp's graph, same numerics):
 *   x = embed(tokens) [* sqrt(n_embd)]
 *   for each layer: xn = rmsnorm(x)*w; q,k,v = xn·W (+bias) [fused qkv]; [per-head q/k norm];
 *     rope(q,k) [layer's own base, frequency factors, partial]; [q *= 1/sqrt(d)]; append k,v
 *     to the KV cache; attend each sequence's queries over the spans its policy picks [within
 *     the layer's window]; x += [norm](att·Wo); xn = rmsnorm(x)*w;
 *     x += [norm](down(act(gate(xn)) * up(xn)))  [act: silu, or gelu-tanh]
 *   logits = rmsnorm(x)*w · Wout [soft-capped]   (only for the rows that need logits)
 * All sequences' tokens go through each weight together, so in batched decode every
 * weight row is read once per step. Attention runs per (sequence, KV head) on the thread
 * pool through the shared attention core.
 * Invariant: all buffers are sized at model_ctx_create; the step allocates nothing except
 * when a policy hands out more spans than ever before (the span buffers grow once).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/vmath.h"
#include "kvserve/kvcache.h"
#include "kvserve/rope.h"
#include "model_internal.h"

typedef struct attn_slot {
    attn_span *spans;
    int32_t n_spans, cap_spans;
    float *mass;
    int64_t cap_mass;
    int32_t n_mass;
    int rc;
} attn_slot;

struct model_ctx {
    const model *m;
    model_ctx_params p;
    tp_pool *tp;
    mm_scratch *mm;
    attn_scratch **as; /* per thread */
    /* activations, [max_batch_tokens][width] */
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    float *lm_in, *lm_out;            /* [max_seqs][n_embd], [max_seqs][n_vocab] */
    int32_t *idx, *pos;               /* [max_batch_tokens] */
    float *rope_cos[2], *rope_sin[2]; /* per rope variant, [max_batch_tokens][n_rot/2] */
    attn_slot *slots;                 /* [max_seqs][n_head_kv] */
    kv_chunk *chunks;                 /* [max_seqs] */
};

static void *ctx_alloc_f(size_t n)
{
    return ks_aligned_alloc(n * sizeof(float));
}

int model_ctx_create(const model *m, const model_ctx_params *p, model_ctx **out)
{
    const model_hparams *hp = &m->hp;
    if (p->n_threads < 1 || p->max_batch_tokens < 1 || p->max_seqs < 1 ||
        p->max_seqs > p->max_batch_tokens)
        return KS_ERR_INVALID;
    model_ctx *c = calloc(1, sizeof(*c));
    if (!c) return KS_ERR_NOMEM;
    c->m = m;
    c->p = *p;
    size_t T = (size_t)p->max_batch_tokens, S = (size_t)p->max_seqs;
    size_t E = (size_t)hp->n_embd, Q = (size_t)hp->n_head * hp->head_dim;
    size_t KV = (size_t)hp->n_head_kv * hp->head_dim, F = (size_t)hp->n_ff;
    int64_t max_in = KS_MAX(KS_MAX(hp->n_embd, hp->n_ff), (int64_t)Q);
    int64_t max_out = KS_MAX(KS_MAX((int64_t)F, (int64_t)Q), (int64_t)hp->n_vocab);
    int rc = KS_ERR_NOMEM;
    if (tp_create(p->n_threads, &c->tp)) goto fail;
    if (mm_scratch_create(max_in, max_out, (int64_t)T, p->n_threads, &c->mm)) goto fail;
    mm_scratch_set_exact(c->mm, p->llama_numerics);
    c->as = calloc((size_t)p->n_threads, sizeof(*c->as));
    if (!c->as) goto fail;
    for (int i = 0; i < p->n_threads; i++)
        if (attn_scratch_create(hp->head_dim, hp->n_head / hp->n_head_kv, (int32_t)T, &c->as[i]))
            goto fail;
    c->x = ctx_alloc_f(T * E);
    c->xn = ctx_alloc_f(T * E);
    c->tmp = ctx_alloc_f(T * E);
    c->q = ctx_alloc_f(T * Q);
    c->att = ctx_alloc_f(T * Q);
    c->k = ctx_alloc_f(T * KV);
    c->v = ctx_alloc_f(T * KV);
    c->gate = ctx_alloc_f(T * F);
    c->up = ctx_alloc_f(T * F);
    c->lm_in = ctx_alloc_f(S * E);
    c->lm_out = ctx_alloc_f(S * (size_t)hp->n_vocab);
    for (int v = 0; v < 2; v++) {
        c->rope_cos[v] = ctx_alloc_f(T * (size_t)hp->head_dim / 2);
        c->rope_sin[v] = ctx_alloc_f(T * (size_t)hp->head_dim / 2);
    }
    c->idx = calloc(T, sizeof(int32_t));
    c->pos = calloc(T, sizeof(int32_t));
    c->slots = calloc(S * (size_t)hp->n_head_kv, sizeof(attn_slot));
    c->chunks = calloc(S, sizeof(kv_chunk));
    if (!c->x || !c->xn || !c->tmp || !c->q || !c->att || !c->k || !c->v || !c->gate || !c->up ||
        !c->lm_in || !c->lm_out || !c->rope_cos[0] || !c->rope_sin[0] || !c->rope_cos[1] ||
        !c->rope_sin[1] || !c->idx || !c->pos || !c->slots || !c->chunks)
        goto fail;
    *out = c;
    return KS_OK;
fail:
    model_ctx_destroy(c);
    return rc;
}

void model_ctx_destroy(model_ctx *c)
{
    if (!c) return;
    for (int i = 0; c->as && i < c->p.n_threads; i++)
        attn_scratch_destroy(c->as[i]);
    free(c->as);
    if (c->slots) {
        size_t n = (size_t)c->p.max_seqs * (size_t)c->m->hp.n_head_kv;
        for (size_t i = 0; i < n; i++) {
            free(c->slots[i].spans);
            free(c->slots[i].mass);
        }
    }
    free(c->slots);
    free(c->chunks);
    free(c->x);
    free(c->xn);
    free(c->tmp);
    free(c->q);
    free(c->att);
    free(c->k);
    free(c->v);
    free(c->gate);
    free(c->up);
    free(c->lm_in);
    free(c->lm_out);
    for (int v = 0; v < 2; v++) {
        free(c->rope_cos[v]);
        free(c->rope_sin[v]);
    }
    free(c->idx);
    free(c->pos);
    mm_scratch_destroy(c->mm);
    tp_destroy(c->tp);
    free(c);
}

/* ---- element-wise pieces (llama.cpp's order of operations) ---- */

static void rmsnorm_row(const float *x, const float *w, float *y, int64_t n, float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

typedef struct rows_job {
    const float *x;
    const float *w;
    float *y;
    int64_t n, n_rows;
    float eps;
} rows_job;

static void rmsnorm_fn(void *arg, int ith, int nth)
{
    rows_job *j = arg;
    int64_t b, e;
    tp_split(j->n_rows, 1, ith, nth, &b, &e);
    for (int64_t r = b; r < e; r++)
        rmsnorm_row(j->x + r * j->n, j->w, j->y + r * j->n, j->n, j->eps);
}

static void rmsnorm_rows_n(model_ctx *c, const float *x, const float *w, float *y, int64_t n,
                           int64_t n_rows)
{
    rows_job j = {x, w, y, n, n_rows, c->m->hp.rms_eps};
    if (n_rows < 4)
        rmsnorm_fn(&j, 0, 1);
    else
        tp_run(c->tp, rmsnorm_fn, &j);
}

static void rmsnorm_rows(model_ctx *c, const float *x, const float *w, float *y, int64_t n_rows)
{
    rmsnorm_rows_n(c, x, w, y, c->m->hp.n_embd, n_rows);
}

static void add_bias(float *y, const mm_vec *b, int64_t n_rows)
{
    if (!b->data) return;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < b->n; i++)
            y[r * b->n + i] += b->data[i];
}

/* cos/sin per token of the batch (positions come from the sequences' policies), for the
 * global layers' rope and, when the model has window layers, theirs. */
static void rope_tables(model_ctx *c, int64_t n_tok)
{
    for (int v = 0; v < 1 + (c->m->hp.n_swa > 0); v++) {
        int32_t il = -1; /* a layer of variant v (-1: the global rope) */
        for (int32_t l = 0; v == 1 && l < c->m->hp.n_layer && il < 0; l++)
            if (c->m->layers[l].rope == 1) il = l;
        rope_params rp = model_rope_params(c->m, il);
        int half = ROPE_N_ROT(&rp) / 2;
        for (int64_t t = 0; t < n_tok; t++)
            rope_angles(&rp, (float)c->pos[t], c->rope_cos[v] + t * half,
                        c->rope_sin[v] + t * half);
    }
}

static void rope_apply(const model_ctx *c, int32_t il, float *x, int64_t n_tok, int n_heads)
{
    rope_params rp = model_rope_params(c->m, il);
    int v = c->m->layers[il].rope, half = ROPE_N_ROT(&rp) / 2;
    for (int64_t t = 0; t < n_tok; t++)
        rope_rotate(&rp, x + t * n_heads * rp.head_dim, n_heads, c->rope_cos[v] + t * half,
                    c->rope_sin[v] + t * half);
}

/* Per-head RMSNorm of q or k (qwen3, gemma3), before RoPE. */
static void head_norm(model_ctx *c, float *x, const mm_vec *w, int64_t n_tok, int n_heads)
{
    if (!w->data) return;
    rmsnorm_rows_n(c, x, w->data, x, c->m->hp.head_dim, n_tok * n_heads);
}

static void scale_rows(float *x, int64_t n, float s)
{
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

/* ---- attention over the KV cache ---- */

typedef struct attn_job {
    model_ctx *c;
    model_seq_batch *seqs;
    int32_t n_seqs;
    const int32_t *seq_off; /* first batch row of each sequence */
    int32_t layer;
} attn_job;

static void attn_query(const attn_job *j, int32_t s, int32_t h, kv_query *q)
{
    const model_hparams *hp = &j->c->m->hp;
    int32_t off = j->seq_off[s];
    q->chunk = &j->c->chunks[s];
    q->n_q = j->seqs[s].n_tokens;
    q->q_idx = j->c->idx + off;
    q->n_group = hp->n_head / hp->n_head_kv;
    q->head_dim = hp->head_dim;
    q->q_tok_stride = hp->n_head * hp->head_dim;
    q->q = j->c->q + (size_t)off * q->q_tok_stride + (size_t)h * q->n_group * hp->head_dim;
}

/* Phase 1: the policy picks spans for every (sequence, KV head). */
static void attn_spans_fn(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    int32_t nkv = j->c->m->hp.n_head_kv;
    for (int32_t t = ith; t < j->n_seqs * nkv; t += nth) {
        int32_t s = t / nkv, h = t % nkv;
        attn_slot *sl = &j->c->slots[t];
        kv_query q;
        attn_query(j, s, h, &q);
        for (;;) {
            int32_t n = 0;
            sl->rc =
                kv_seq_attn_spans(j->seqs[s].kv, j->layer, h, &q, sl->spans, sl->cap_spans, &n);
            if (sl->rc == KS_ERR_RANGE && n > sl->cap_spans) {
                attn_span *ns = realloc(sl->spans, (size_t)n * 2 * sizeof(attn_span));
                if (!ns) {
                    sl->rc = KS_ERR_NOMEM;
                    break;
                }
                sl->spans = ns;
                sl->cap_spans = n * 2;
                continue;
            }
            sl->n_spans = n;
            break;
        }
        sl->n_mass = 0;
        if (sl->rc) continue;
        sl->n_mass = KS_MIN(kv_seq_mass_queries(j->seqs[s].kv, j->layer, h, &q), q.n_q);
        if (sl->n_mass > 0) {
            int64_t n_keys = 0;
            for (int32_t i = 0; i < sl->n_spans; i++)
                n_keys += sl->spans[i].n;
            int64_t need = n_keys * q.n_group;
            if (need > sl->cap_mass) {
                free(sl->mass);
                sl->mass = ks_aligned_alloc((size_t)KS_MAX(need, 1) * 2 * sizeof(float));
                sl->cap_mass = sl->mass ? need * 2 : 0;
                if (!sl->mass) {
                    sl->rc = KS_ERR_NOMEM;
                    continue;
                }
            }
            memset(sl->mass, 0, (size_t)need * sizeof(float));
        }
    }
}

/* Phase 2: attention, split into (sequence, KV head, query range) tasks. */
#define ATTN_Q_SPLIT 32
static void attn_run_fn(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    int32_t nkv = hp->n_head_kv, task = 0;
    for (int32_t s = 0; s < j->n_seqs; s++) {
        int32_t nq = j->seqs[s].n_tokens;
        for (int32_t h = 0; h < nkv; h++) {
            attn_slot *sl = &c->slots[s * nkv + h];
            int32_t n_plain = nq - sl->n_mass;
            int32_t n_pp = (n_plain + ATTN_Q_SPLIT - 1) / ATTN_Q_SPLIT;
            /* llama.cpp sums q·k and p·V of one query (decode) differently from a batch, and
             * the attention core tells them apart by n_q: no lone query in a prefill part */
            if (c->p.llama_numerics && n_plain > 1 && n_plain % ATTN_Q_SPLIT == 1) n_pp--;
            int32_t n_parts = n_pp + (sl->n_mass > 0);
            for (int32_t part = 0; part < n_parts; part++, task++) {
                if (task % nth != ith || sl->rc) continue;
                int32_t q0 = part * ATTN_Q_SPLIT, q1 = KS_MIN(q0 + ATTN_Q_SPLIT, n_plain);
                if (part == n_pp - 1) q1 = n_plain;
                bool mass = sl->n_mass > 0 && part == n_parts - 1;
                if (mass) {
                    q0 = n_plain;
                    q1 = nq;
                }
                kv_query q;
                attn_query(j, s, h, &q);
                attn_params p = {
                    .n_q = q1 - q0,
                    .n_group = q.n_group,
                    .head_dim = hp->head_dim,
                    .scale = (c->m->desc->flags & ARCH_Q_SCALE) ? 1.0f
                                                                : 1.0f / sqrtf((float)hp->head_dim),
                    .window = c->m->layers[j->layer].window,
                    .k_dtype = kv_pool_k_dtype(kv_seq_pool(j->seqs[s].kv)),
                    .v_dtype = kv_pool_v_dtype(kv_seq_pool(j->seqs[s].kv)),
                    .q = q.q + (size_t)q0 * q.q_tok_stride,
                    .q_tok_stride = q.q_tok_stride,
                    .q_idx = q.q_idx + q0,
                    .out = c->att + (size_t)(j->seq_off[s] + q0) * q.q_tok_stride +
                           (size_t)h * q.n_group * hp->head_dim,
                    .out_tok_stride = q.q_tok_stride,
                    .key_mass = mass ? sl->mass : NULL,
                    .llama_numerics = c->p.llama_numerics,
                    .llama_flash = c->p.llama_flash && !mass,
                };
                int rc = attn_forward(&p, sl->spans, sl->n_spans, c->as[ith]);
                if (rc) sl->rc = rc;
            }
        }
    }
}

static int attention_layer(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs,
                           const int32_t *seq_off, int32_t layer)
{
    attn_job j = {c, seqs, n_seqs, seq_off, layer};
    int32_t nkv = c->m->hp.n_head_kv;
    tp_run(c->tp, attn_spans_fn, &j);
    tp_run(c->tp, attn_run_fn, &j);
    for (int32_t t = 0; t < n_seqs * nkv; t++) {
        attn_slot *sl = &c->slots[t];
        if (sl->rc) return sl->rc;
        if (sl->n_mass > 0) {
            kv_query q;
            attn_query(&j, t / nkv, t % nkv, &q);
            int rc = kv_seq_attn_done(seqs[t / nkv].kv, layer, t % nkv, &q, sl->spans, sl->n_spans,
                                      sl->mass, sl->n_mass);
            if (rc) return rc;
        }
    }
    return KS_OK;
}

/* ---- the step ---- */

static void embed_rows(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs)
{
    const mm_weight *te = &c->m->tok_embd;
    int64_t row = 0;
    for (int32_t s = 0; s < n_seqs; s++)
        for (int32_t i = 0; i < seqs[s].n_tokens; i++, row++)
            qt_dequantize_row(te->type,
                              (const char *)te->data + (size_t)seqs[s].tokens[i] * te->row_bytes,
                              c->x + row * te->n_in, te->n_in);
    /* gemma3 scales the embeddings by sqrt(n_embd) (an f32 multiply, as llama.cpp) */
    if (c->m->desc->flags & ARCH_EMBD_SCALE)
        scale_rows(c->x, row * te->n_in, sqrtf((float)te->n_in));
}

/* Final logit soft-capping: cap * tanh(logit / cap), where the file asks for it. */
static void softcap_logits(const model *m, float *logits, int64_t n)
{
    float cap = m->hp.logit_softcap;
    if (!(cap > 0.0f)) return;
    for (int64_t i = 0; i < n; i++)
        logits[i] = tanhf(logits[i] * (1.0f / cap)) * cap;
}

/* Batch rows whose hidden state reaches the logits, in increasing order. */
static int64_t output_rows(const model_seq_batch *seqs, int32_t n_seqs, const int32_t *seq_off,
                           int32_t *rows)
{
    int64_t n = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (!seqs[s].logits) continue;
        int32_t first = seqs[s].all_logits ? 0 : seqs[s].n_tokens - 1;
        for (int32_t i = first; i < seqs[s].n_tokens; i++)
            rows[n++] = seq_off[s] + i;
    }
    return n;
}

static int layer_forward(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs,
                         const int32_t *seq_off, int64_t T, int32_t il)
{
    const model_hparams *hp = &c->m->hp;
    const model_layer *L = &c->m->layers[il];
    int64_t E = hp->n_embd, KVW = (int64_t)hp->n_head_kv * hp->head_dim;
    rmsnorm_rows(c, c->x, L->attn_norm.data, c->xn, T);
    const mm_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
    float *yqkv[3] = {c->q, c->k, c->v};
    mm_matmul_n(c->tp, c->mm, wqkv, yqkv, 3, c->xn, T);
    add_bias(c->q, &L->bq, T);
    add_bias(c->k, &L->bk, T);
    add_bias(c->v, &L->bv, T);
    head_norm(c, c->q, &L->q_norm, T, hp->n_head);
    head_norm(c, c->k, &L->k_norm, T, hp->n_head_kv);
    rope_apply(c, il, c->q, T, hp->n_head);
    rope_apply(c, il, c->k, T, hp->n_head_kv);
    /* gemma3 and phi3 scale q (llama.cpp's ggml_scale before attention) instead of scores */
    if (c->m->desc->flags & ARCH_Q_SCALE)
        scale_rows(c->q, T * hp->n_head * hp->head_dim, 1.0f / sqrtf((float)hp->head_dim));
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t off = seq_off[s];
        int rc = kv_seq_append(seqs[s].kv, il, seqs[s].n_tokens, c->k + (size_t)off * KVW,
                               c->v + (size_t)off * KVW, c->idx + off, c->pos + off);
        if (rc) return rc;
    }
    int rc = attention_layer(c, seqs, n_seqs, seq_off, il);
    if (rc) return rc;
    mm_matmul(c->tp, c->mm, &L->wo, c->att, c->tmp, T);
    if (L->post_attn_norm.data) rmsnorm_rows(c, c->tmp, L->post_attn_norm.data, c->tmp, T);
    for (int64_t i = 0; i < T * E; i++)
        c->x[i] += c->tmp[i];
    /* llama.cpp runs the last layer's FFN only on the rows whose logits are wanted (and so
     * with its one-token kernels when that is one row); with llama numerics, so do we */
    int64_t n_ffn = T;
    int32_t rows[T];
    if (c->p.llama_numerics && il == hp->n_layer - 1) {
        n_ffn = output_rows(seqs, n_seqs, seq_off, rows);
        if (n_ffn == 0) return KS_OK;
        for (int64_t r = 0; r < n_ffn && n_ffn < T; r++)
            if (rows[r] != r) memcpy(c->x + r * E, c->x + (int64_t)rows[r] * E, (size_t)E * 4);
    }
    rmsnorm_rows(c, c->x, L->ffn_norm.data, c->xn, n_ffn);
    const mm_weight *wgu[2] = {&L->w_gate, &L->w_up};
    float *ygu[2] = {c->gate, c->up};
    mm_matmul_n(c->tp, c->mm, wgu, ygu, 2, c->xn, n_ffn);
    if (c->m->desc->flags & ARCH_GELU)
        vm_geglu(c->gate, c->up, n_ffn * hp->n_ff);
    else
        vm_swiglu(c->gate, c->up, n_ffn * hp->n_ff);
    mm_matmul(c->tp, c->mm, &L->w_down, c->gate, c->tmp, n_ffn);
    if (L->post_ffn_norm.data) rmsnorm_rows(c, c->tmp, L->post_ffn_norm.data, c->tmp, n_ffn);
    for (int64_t i = 0; i < n_ffn * E; i++)
        c->x[i] += c->tmp[i];
    for (int64_t r = n_ffn - 1; r >= 0 && n_ffn < T; r--)
        if (rows[r] != r) memcpy(c->x + (int64_t)rows[r] * E, c->x + r * E, (size_t)E * 4);
    return KS_OK;
}

static int logits_forward(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs,
                          const int32_t *seq_off)
{
    const model *m = c->m;
    int64_t E = m->hp.n_embd, V = m->hp.n_vocab;
    int32_t n_last = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        model_seq_batch *b = &seqs[s];
        if (!b->logits) continue;
        const float *xs = c->x + (size_t)seq_off[s] * E;
        if (b->all_logits) {
            rmsnorm_rows(c, xs, m->output_norm.data, c->xn, b->n_tokens);
            mm_matmul(c->tp, c->mm, &m->output, c->xn, b->logits, b->n_tokens);
            softcap_logits(m, b->logits, (int64_t)b->n_tokens * V);
        } else {
            rmsnorm_row(xs + (size_t)(b->n_tokens - 1) * E, m->output_norm.data,
                        c->lm_in + (size_t)n_last * E, E, m->hp.rms_eps);
            n_last++;
        }
    }
    if (n_last == 0) return KS_OK;
    mm_matmul(c->tp, c->mm, &m->output, c->lm_in, c->lm_out, n_last);
    softcap_logits(m, c->lm_out, (int64_t)n_last * V);
    n_last = 0;
    for (int32_t s = 0; s < n_seqs; s++)
        if (seqs[s].logits && !seqs[s].all_logits)
            memcpy(seqs[s].logits, c->lm_out + (size_t)(n_last++) * V, (size_t)V * sizeof(float));
    return KS_OK;
}

/* Every block the step will append must be available before any cache changes, so that a
 * full pool fails the whole step cleanly instead of leaving some sequences with the step's
 * keys in some layers only (the caller then retries without the sequence it drops). */
static int check_blocks(model_seq_batch *seqs, int32_t n_seqs)
{
    for (int32_t s = 0; s < n_seqs; s++) {
        kv_pool *pool = kv_seq_pool(seqs[s].kv);
        bool seen = false;
        for (int32_t t = 0; t < s && !seen; t++)
            seen = kv_seq_pool(seqs[t].kv) == pool;
        if (seen) continue;
        int64_t need = 0;
        for (int32_t t = s; t < n_seqs; t++)
            if (kv_seq_pool(seqs[t].kv) == pool)
                need += kv_seq_append_need(seqs[t].kv, seqs[t].n_tokens);
        int rc = kv_pool_ensure_free(pool, need);
        if (rc) return rc;
    }
    return KS_OK;
}

int model_forward(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs)
{
    const model_hparams *hp = &c->m->hp;
    if (n_seqs < 1 || n_seqs > c->p.max_seqs) return KS_ERR_INVALID;
    int32_t seq_off[n_seqs];
    int64_t T = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (!seqs[s].kv || seqs[s].n_tokens < 1 || !seqs[s].tokens) return KS_ERR_INVALID;
        for (int32_t i = 0; i < seqs[s].n_tokens; i++)
            if (seqs[s].tokens[i] < 0 || seqs[s].tokens[i] >= hp->n_vocab) return KS_ERR_INVALID;
        seq_off[s] = (int32_t)T;
        T += seqs[s].n_tokens;
    }
    if (T > c->p.max_batch_tokens) return KS_ERR_INVALID;
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t off = seq_off[s];
        int64_t seen = kv_seq_tokens_seen(seqs[s].kv);
        for (int32_t i = 0; i < seqs[s].n_tokens; i++)
            c->idx[off + i] = (int32_t)(seen + i);
        kv_chunk *ch = &c->chunks[s];
        ch->n_new = seqs[s].n_tokens;
        ch->idx = c->idx + off;
        ch->prefill = seqs[s].prompt_chunk;
        ch->prefill_last = seqs[s].prompt_chunk && seqs[s].prompt_last;
        int rc = kv_seq_chunk_begin(seqs[s].kv, ch, c->pos + off);
        if (rc) return rc;
    }
    int rc = check_blocks(seqs, n_seqs);
    if (rc) return rc;
    rope_tables(c, T);
    embed_rows(c, seqs, n_seqs);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        int rc = layer_forward(c, seqs, n_seqs, seq_off, T, il);
        if (rc) return rc;
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        int rc = kv_seq_chunk_end(seqs[s].kv, &c->chunks[s]);
        if (rc) return rc;
    }
    return logits_forward(c, seqs, n_seqs, seq_off);
}

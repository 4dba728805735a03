/* retrieval.c - the `retrieval` policy: landmark / block retrieval over a context far larger
 * than RAM and than the model's trained length (Landmark Attention, InfLLM, Quest, MoBA).
 *
 * The idea in plain words. Attention over a long context is sparse: a query puts almost all
 * of its weight on a few places. So the cache is cut into blocks of block_tokens tokens and
 * every block gets a small landmark (landmark.c: mean key, Quest's min/max bounds or InfLLM's
 * representative keys) that lives in RAM. For each query chunk, layer and KV head the query
 * scores every block through its landmark and attends, in ONE online softmax of the shared
 * attention core, over: the n_sink first tokens, the top_k best blocks and the local window
 * (the last `window` tokens before the chunk, plus the chunk itself under the causal mask).
 * Selection is per KV head (Quest) or shared by the heads of a layer (InfLLM); the first
 * dense_layers layers attend everything. A prefill chunk attends the same way, so prefill
 * costs O(chunk * (sink + k*block + window)) per chunk: linear in the context.
 *
 * Positions. Keys are stored rotated at their original position (the positions hook returns
 * pos = idx) and re-rotated on use. `original`: retrieved keys are used in place. `window`
 * (InfLLM): the local window keeps its true relative positions (RoPE depends only on q-k
 * distance) while sink and retrieved keys are rotated, into policy-owned scratch, to one
 * position `window` tokens before the chunk's first query; every distance a query sees then
 * stays below window + chunk, so a model runs far beyond its trained context. Storing keys
 * before RoPE is not possible with this interface: the model rotates q and k with the same
 * positions, and an unrotated q would need per-query key rotations inside a prefill chunk.
 * Rotate-on-use touches only sink + k*block rows per call (see docs/eval-retrieval.md).
 *
 * Spill tier. Beyond ram_mb, the oldest blocks that are neither sinks nor local window move
 * to a per-sequence file (spill.c) and free their pool block (kv_head_table_keep drops whole
 * pool blocks, so no row moves); a retrieved spilled block is read into a hot-set buffer
 * (LRU or score-decayed LRU per KV head). Landmarks are paged (landmark.h): past a share of
 * ram_mb (1/32) the oldest landmark pages go to a second spill file, and selection streams
 * them page by page (an online softmax, then the top_k best kept in a heap), so neither the
 * landmarks nor the selection buffers in RAM grow with the context.
 *
 * Invariants: every table of a layer >= dense_layers holds, in order, pool-block units
 * [0, n_sink_units) and [n_sink_units + n_spilled, ...) of the dense token layout (retrieval
 * never evicts), so the table slot of a token is computed, not searched. Spans returned for
 * KV head h point into pool blocks, the hot set partition h or head h's scratch, and stay
 * valid until the next spans call of KV head h (the model finishes a layer's attention
 * before it asks for the next layer's spans).
 */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/landmark.h"
#include "kvcache/policies/retrieval.h"
#include "kvserve/kv_view.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"
#include "kvserve/quant.h"
#include "kvserve/spill.h"

/* The parameters (kvcache.retrieval.*; table at the end of the file; the struct is the
 * engine's, retrieval.h). */
typedef kv_rt_params rt_params;

extern const kv_policy_desc kv_policy_desc_retrieval;
_Static_assert(sizeof(rt_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

#define RT_MAX_HD 1024
#define RT_MAX_KV_HEADS 256 /* KV heads one layer-mode selection scores at most */
#define RT_SAMPLE_LAST 8    /* queries of a chunk that always score blocks */
#define RT_SAMPLE_SPREAD 8
#ifndef RT_DERIVE_BLOCK_DIV
#define RT_DERIVE_BLOCK_DIV 32 /* block_tokens ~ context_length / 32 */
#endif
#ifndef RT_DERIVE_RETRIEVED
#define RT_DERIVE_RETRIEVED 2 /* top_k * block_tokens ~ 2 * context_length */
#endif

typedef struct rt_table { /* per (layer, KV head) */
    kv_lm_set lm;
    float *mass; /* REPRESENTATIVE: attention of tokens idx >= lm.n*B, at [idx - lm.n*B] */
    int32_t mass_cap;
    int32_t *last_sel; /* [top_k] blocks selected by the last spans call (for kv_view) */
    float *last_score; /* [top_k] their scores */
    int32_t n_last_sel, last_cap;
} rt_table;

typedef struct rt_cand {
    double score;
    int32_t b;
} rt_cand;

typedef struct rt_norm { /* online softmax of one sampled query head over the blocks */
    double m, z;         /* running max logit, sum of exp(logit - m) */
} rt_norm;

typedef struct rt_head {    /* per KV head; used by one thread at a time */
    uint8_t *scr_k, *scr_v; /* [scr_cap][row] copies (window positions) */
    int32_t *scr_idx;       /* [scr_cap] sequence index of copied / spilled rows */
    int32_t scr_cap, scr_n;
    rt_cand *cand; /* [cand_cap] the selection (top_k; every block in a dense layer) */
    int32_t cand_cap;
    /* selection scratch, bounded by top_k, the sampled queries and one landmark page per
     * scored KV head, never by the number of blocks */
    rt_cand *heap; /* [top_k] best blocks so far (worst at the root) */
    float *qs;     /* [rows][head_dim] sampled query heads, turned back to `target` */
    rt_norm *norm; /* [rows] */
    float *pages;  /* [n_head_kv][page floats] landmark pages read from the file */
    int64_t cap_heap, cap_qs, cap_norm, cap_pages;
    float *row; /* [head_dim] */
    uint64_t pin;
    int64_t n_selected;
} rt_head;

typedef struct rt_state {
    rt_params p;
    rope_params rope;
    kv_pool *pool;
    int32_t n_layer, n_head_kv, hd, pb, B;
    ks_dtype kt;
    size_t rb;              /* bytes of one K row */
    size_t vb;              /* bytes of one V row */
    float *off_cs, *off_sn; /* [pb][hd/2] angles of -r (rows of a unit) */
    rt_table *tabs;         /* [n_layer][n_head_kv] */
    rt_head *heads;         /* [n_head_kv] */
    kv_spill *spill;
    int32_t *rec;         /* [n_layer][n_head_kv] table's slot in a spill record group, -1: dense
                             layer or a table the engine does not manage (retrieval.h) */
    int32_t n_rec_tabs;   /* tables with rec >= 0 */
    int32_t ref_tab;      /* the first of them (its landmarks pace spilling) */
    kv_spill *lm_file;    /* landmark pages beyond lm_max_pages per table (created lazily) */
    int32_t lm_max_pages; /* landmark pages a table keeps in RAM */
    size_t lm_ram_bytes;  /* their share of ram_mb */
    int64_t n_sink_units, n_spilled;
    size_t ram_bytes, hot_bytes;
    int32_t hot_slots;
    float *kbuf; /* [B][hd] keys of a block being summarised */
    int32_t *keep;
    int32_t keep_cap;
    bool warned_budget;
    atomic_int io_error; /* first spill I/O failure (sticky): the sequence must be failed */
    void *zero_rec;      /* zeros standing in for a record that could not be read */
} rt_state;

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                             */

static bool rt_params_ok(const rt_params *p)
{
    return p->block_tokens >= 1 && p->block_tokens <= 65536 && p->top_k >= 1 && p->n_sink >= 0 &&
           p->window >= 1 && p->dense_layers >= 0 && p->ram_mb >= 1 && p->representatives >= 1 &&
           p->chunk >= 1 && (p->positions == KV_POS_WINDOW || p->positions == KV_POS_ORIGINAL) &&
           memchr(p->spill_dir, 0, sizeof(p->spill_dir)) && p->spill_dir[0];
}

void kv_rt_free(kv_rt *st)
{
    if (!st) return;
    kv_spill_destroy(st->spill);
    kv_spill_destroy(st->lm_file);
    free(st->rec);
    free(st->zero_rec);
    for (int32_t i = 0; st->tabs && i < st->n_layer * st->n_head_kv; i++) {
        kv_lm_set_deinit(&st->tabs[i].lm);
        free(st->tabs[i].mass);
        free(st->tabs[i].last_sel);
        free(st->tabs[i].last_score);
    }
    for (int32_t h = 0; st->heads && h < st->n_head_kv; h++) {
        free(st->heads[h].scr_k);
        free(st->heads[h].scr_v);
        free(st->heads[h].scr_idx);
        free(st->heads[h].cand);
        free(st->heads[h].heap);
        free(st->heads[h].qs);
        free(st->heads[h].norm);
        free(st->heads[h].pages);
        free(st->heads[h].row);
    }
    free(st->tabs);
    free(st->heads);
    free(st->off_cs);
    free(st->off_sn);
    free(st->kbuf);
    free(st->keep);
    free(st);
}

static void rt_free(kv_seq *seq, void *state)
{
    (void)seq;
    kv_rt_free(state);
}

/* Record slots of the sparse tables: (l - dense_layers) * H + h when every table is managed,
 * so retrieval's spill file keeps its layout. */
static int rt_init_recs(rt_state *st, const uint8_t *managed)
{
    int32_t n = st->n_layer * st->n_head_kv;
    if (!(st->rec = malloc((size_t)n * sizeof(int32_t)))) return KS_ERR_NOMEM;
    st->ref_tab = -1;
    for (int32_t i = 0; i < n; i++) {
        bool sparse = i / st->n_head_kv >= st->p.dense_layers && (!managed || managed[i]);
        st->rec[i] = sparse ? st->n_rec_tabs++ : -1;
        if (sparse && st->ref_tab < 0) st->ref_tab = i;
    }
    return 0;
}

static int rt_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    rt_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_retrieval, &mi, &p);
    kv_rt *st;
    int rc = kv_rt_create(seq, a, &p, NULL, &st);
    if (!rc) *state = st;
    return rc;
}

int kv_rt_create(kv_seq *seq, const kv_policy_args *a, const kv_rt_params *p,
                 const uint8_t *managed, kv_rt **out)
{
    kv_pool *pool = kv_seq_pool(seq);
    rt_state *st = calloc(1, sizeof(*st));
    if (!st) return KS_ERR_NOMEM;
    st->p = *p;
    st->pool = pool;
    st->n_layer = kv_seq_n_layer(seq);
    st->n_head_kv = kv_seq_n_head_kv(seq);
    st->hd = kv_pool_head_dim(pool);
    st->pb = kv_pool_block_tokens(pool);
    st->B = st->p.block_tokens;
    st->kt = kv_pool_k_dtype(pool);
    st->rb = kv_pool_k_row_bytes(pool);
    st->vb = kv_pool_v_row_bytes(pool);
    st->rope =
        a ? a->rope
          : (rope_params){
                .kind = ROPE_NORM, .head_dim = st->hd, .theta = 10000.0f, .freq_scale = 1.0f};
    int rc = KS_ERR_INVALID;
    st->rope.relative = true; /* it only moves rotated keys and queries by deltas */
    if (!rt_params_ok(&st->p) || st->hd % 2 || st->hd > RT_MAX_HD || st->rope.head_dim != st->hd)
        goto fail;
    rc = KS_ERR_NOMEM;
    int32_t half = st->hd / 2, L = st->n_layer, H = st->n_head_kv;
    st->tabs = calloc((size_t)L * H, sizeof(rt_table));
    st->heads = calloc((size_t)H, sizeof(rt_head));
    st->off_cs = malloc((size_t)st->pb * half * sizeof(float));
    st->off_sn = malloc((size_t)st->pb * half * sizeof(float));
    st->kbuf = malloc((size_t)st->B * st->hd * sizeof(float));
    if (!st->tabs || !st->heads || !st->off_cs || !st->off_sn || !st->kbuf) goto fail;
    if (rt_init_recs(st, managed)) goto fail;
    for (int32_t i = 0; i < L * H; i++)
        kv_lm_set_init(&st->tabs[i].lm, st->p.landmark, st->hd);
    for (int32_t h = 0; h < H; h++)
        if (!(st->heads[h].row = malloc((size_t)st->hd * sizeof(float)))) goto fail;
    for (int32_t r = 0; r < st->pb; r++)
        rope_angles(&st->rope, -(float)r, st->off_cs + (size_t)r * half,
                    st->off_sn + (size_t)r * half);
    st->n_sink_units = (st->p.n_sink + st->pb - 1) / st->pb;
    st->ram_bytes = (size_t)st->p.ram_mb << 20;
    /* Hot set: a quarter of the budget, but at least what one call pins (k blocks). */
    size_t bb = kv_pool_block_bytes(pool);
    int64_t per_call = (int64_t)st->p.top_k * ((st->B + st->pb - 1) / st->pb + 1);
    int64_t slots = (int64_t)(st->ram_bytes / 4 / bb / (size_t)H);
    st->hot_slots = (int32_t)KS_MIN(KS_MAX(slots, per_call), 1 << 20);
    st->hot_bytes = (size_t)st->hot_slots * H * bb;
    /* Landmarks: 1/32 of the budget (at least one page per table) stays in RAM. */
    size_t page_bytes = kv_lm_page_bytes(&st->tabs[0].lm);
    st->lm_max_pages = (int32_t)KS_MIN(
        KS_MAX((int64_t)(st->ram_bytes / 32 / page_bytes / (size_t)(L * H)), 1), 1 << 20);
    st->lm_ram_bytes = (size_t)st->lm_max_pages * page_bytes * (size_t)(L * H);
    *out = st;
    return 0;
fail:
    kv_rt_free(st);
    return rc;
}

static inline rt_table *rt_tab(rt_state *st, int32_t l, int32_t h)
{
    return &st->tabs[(size_t)l * st->n_head_kv + h];
}

static int rt_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    (void)seq;
    if (chunk->n_new > 0) memcpy(pos_out, chunk->idx, (size_t)chunk->n_new * sizeof(int32_t));
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Unit (pool block) access                                                                  */

/* K and V of unit u of (l, h), and the table slot of its first row (-1 if it came from the
 * spill file through the hot set). */
static int unit_mem(rt_state *st, kv_seq *seq, int32_t l, int32_t h, int64_t u, float score,
                    const uint8_t **k, const uint8_t **v, int64_t *slot0)
{
    kv_head_table *t = kv_seq_table(seq, l, h);
    int32_t slot = st->rec[(size_t)l * st->n_head_kv + h];
    int64_t sp = slot < 0 ? 0 : st->n_spilled;
    if (u < st->n_sink_units || u >= st->n_sink_units + sp) {
        int64_t tb = u < st->n_sink_units ? u : u - sp;
        if (tb >= t->n_blocks) return KS_ERR_INTERNAL;
        *k = kv_pool_block_k(st->pool, t->blocks[tb]);
        *v = kv_pool_block_v(st->pool, t->blocks[tb]);
        *slot0 = tb * st->pb;
        return 0;
    }
    int64_t rec = (u - st->n_sink_units) * st->n_rec_tabs + slot;
    const void *buf;
    int rc = kv_spill_fetch(st->spill, h, rec, st->heads[h].pin, score, &buf);
    if (rc == KS_ERR_IO && st->zero_rec) {
        /* Fail this sequence, not the batch: attend to zeros for this step and let the
         * scheduler fail it afterwards (kv_retrieval_io_error). */
        int zero = 0;
        atomic_compare_exchange_strong(&st->io_error, &zero, rc);
        buf = st->zero_rec;
    } else if (rc) {
        return rc;
    }
    *k = buf;
    *v = (const uint8_t *)buf + (size_t)st->pb * st->rb;
    *slot0 = -1;
    return 0;
}

/* A K row to f32 and back (re-rotation of copied keys; quantised K is re-quantised). */
static void row_to_f32(const rt_state *st, const void *src, float *dst)
{
    ks_dtype_to_f32(st->kt, src, dst, st->hd);
}

static void row_from_f32(const rt_state *st, const float *src, void *dst)
{
    ks_dtype_from_f32(st->kt, src, dst, st->hd);
}

/* ---------------------------------------------------------------------------------------- */
/* Span building                                                                             */

typedef struct span_out {
    attn_span *out;
    int32_t max, n;
} span_out;

static void span_push(const rt_state *st, span_out *so, const uint8_t *k, const uint8_t *v,
                      const int32_t *idx, int32_t n)
{
    if (so->n > 0) {
        attn_span *l = &so->out[so->n - 1];
        size_t off = (size_t)l->n * st->rb, voff = (size_t)l->n * st->vb;
        if ((const uint8_t *)l->k + off == k && (const uint8_t *)l->v + voff == v &&
            l->idx + l->n == idx) {
            l->n += n;
            return;
        }
    }
    so->out[so->n++] = (attn_span){.k = k, .v = v, .idx = idx, .n = n};
}

/* Tokens [a, b) in place (original positions, or the local window). */
static int emit_direct(rt_state *st, kv_seq *seq, int32_t l, int32_t h, int64_t a, int64_t b,
                       float score, span_out *so)
{
    kv_head_table *t = kv_seq_table(seq, l, h);
    rt_head *hs = &st->heads[h];
    for (int64_t u = a / st->pb; u * st->pb < b; u++) {
        int64_t u0 = u * st->pb, r0 = KS_MAX(a, u0) - u0, r1 = KS_MIN(b, u0 + st->pb) - u0;
        const uint8_t *k, *v;
        int64_t slot0;
        int rc = unit_mem(st, seq, l, h, u, score, &k, &v, &slot0);
        if (rc) return rc;
        const int32_t *idx;
        if (slot0 >= 0) {
            idx = t->idx + slot0 + r0;
        } else {
            int32_t *dst = hs->scr_idx + hs->scr_n;
            for (int64_t r = r0; r < r1; r++)
                dst[r - r0] = (int32_t)(u0 + r);
            hs->scr_n += (int32_t)(r1 - r0);
            idx = dst;
        }
        span_push(st, so, k + r0 * st->rb, v + r0 * st->vb, idx, (int32_t)(r1 - r0));
    }
    return 0;
}

/* Tokens [a, b) copied into head scratch, keys re-rotated to position `target`. */
static int emit_copy(rt_state *st, kv_seq *seq, int32_t l, int32_t h, int64_t a, int64_t b,
                     int64_t target, float score)
{
    rt_head *hs = &st->heads[h];
    int32_t half = st->hd / 2;
    float cd[RT_MAX_HD / 2], sd[RT_MAX_HD / 2], cs[RT_MAX_HD / 2], sn[RT_MAX_HD / 2];
    for (int64_t u = a / st->pb; u * st->pb < b; u++) {
        int64_t u0 = u * st->pb, r0 = KS_MAX(a, u0) - u0, r1 = KS_MIN(b, u0 + st->pb) - u0;
        const uint8_t *k, *v;
        int64_t slot0;
        int rc = unit_mem(st, seq, l, h, u, score, &k, &v, &slot0);
        if (rc) return rc;
        /* delta of row r = (target - u0) - r: angle addition with the unit's -r table. */
        rope_angles(&st->rope, (float)(target - u0), cd, sd);
        for (int64_t r = r0; r < r1; r++) {
            const float *oc = st->off_cs + r * half, *os = st->off_sn + r * half;
            for (int32_t i = 0; i < half; i++) {
                cs[i] = cd[i] * oc[i] - sd[i] * os[i];
                sn[i] = sd[i] * oc[i] + cd[i] * os[i];
            }
            row_to_f32(st, k + r * st->rb, hs->row);
            rope_rotate(&st->rope, hs->row, 1, cs, sn);
            row_from_f32(st, hs->row, hs->scr_k + (size_t)hs->scr_n * st->rb);
            memcpy(hs->scr_v + (size_t)hs->scr_n * st->vb, v + r * st->vb, st->vb);
            hs->scr_idx[hs->scr_n++] = (int32_t)(u0 + r);
        }
    }
    return 0;
}

static int head_reserve(rt_state *st, rt_head *hs, int64_t rows, int64_t cands)
{
    if (rows > INT32_MAX / 2 || cands > INT32_MAX / 2) return KS_ERR_RANGE;
    if (rows > hs->scr_cap) {
        int32_t cap = (int32_t)KS_MAX(rows, (int64_t)hs->scr_cap * 3 / 2);
        uint8_t *k = realloc(hs->scr_k, (size_t)cap * st->rb);
        if (k) hs->scr_k = k;
        uint8_t *v = realloc(hs->scr_v, (size_t)cap * st->vb);
        if (v) hs->scr_v = v;
        int32_t *ix = realloc(hs->scr_idx, (size_t)cap * sizeof(int32_t));
        if (ix) hs->scr_idx = ix;
        if (!k || !v || !ix) return KS_ERR_NOMEM;
        hs->scr_cap = cap;
    }
    if (cands > hs->cand_cap) {
        int32_t cap = (int32_t)cands;
        rt_cand *c = realloc(hs->cand, (size_t)cap * sizeof(rt_cand));
        if (!c) return KS_ERR_NOMEM;
        hs->cand = c;
        hs->cand_cap = cap;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Block selection                                                                           */

static int cand_by_score(const void *x, const void *y)
{
    const rt_cand *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->b > b->b) - (a->b < b->b);
}

static int cand_by_block(const void *x, const void *y)
{
    const rt_cand *a = x, *b = y;
    return (a->b > b->b) - (a->b < b->b);
}

/* The queries of a chunk that score blocks: the last RT_SAMPLE_LAST and RT_SAMPLE_SPREAD
 * spread over the rest. Returns how many (<= RT_SAMPLE_LAST + RT_SAMPLE_SPREAD). */
static int32_t sample_queries(int32_t nq, int32_t *sample)
{
    int32_t ns = 0, n_last = KS_MIN(nq, RT_SAMPLE_LAST), rest = nq - n_last;
    for (int32_t i = 0; i < RT_SAMPLE_SPREAD && rest > 0; i++) {
        int32_t t = (int32_t)((int64_t)i * rest / KS_MAX(RT_SAMPLE_SPREAD, 1));
        if (ns == 0 || sample[ns - 1] != t) sample[ns++] = t;
    }
    for (int32_t t = rest; t < nq; t++)
        sample[ns++] = t;
    return ns;
}

/* Copies the sampled query heads of KV head hh (qh = its query head 0, token 0) into rows
 * [row0, row0 + ns * n_group) of hs->qs, turned back by `target` with window positions
 * (landmarks are of unrotated keys: the key will be seen at `target`). */
static void prepare_queries(const rt_state *st, rt_head *hs, const kv_query *q, const float *qh,
                            const int32_t *sample, int32_t ns, int32_t row0, int64_t target)
{
    float cs[RT_MAX_HD / 2], sn[RT_MAX_HD / 2];
    bool window = st->p.positions == KV_POS_WINDOW;
    if (window) rope_angles(&st->rope, -(float)target, cs, sn);
    for (int32_t s = 0, r = row0; s < ns; s++)
        for (int32_t g = 0; g < q->n_group; g++, r++) {
            float *dst = hs->qs + (size_t)r * st->hd;
            memcpy(dst, qh + (size_t)sample[s] * q->q_tok_stride + (size_t)g * st->hd,
                   (size_t)st->hd * sizeof(float));
            if (window) rope_rotate(&st->rope, dst, 1, cs, sn);
            hs->norm[r] = (rt_norm){.m = -INFINITY, .z = 0.0};
        }
}

/* Page p of (l, hh)'s landmarks into *out (buf when read from the file). A page that cannot
 * be read scores as zeros and fails the sequence after the step (like a spilled block). */
static const float *lm_page(rt_state *st, int32_t l, int32_t hh, int32_t p, float *buf)
{
    const float *out;
    int rc = kv_lm_page(&rt_tab(st, l, hh)->lm, p, buf, &out);
    if (rc == 0) return out;
    int zero = 0;
    atomic_compare_exchange_strong(&st->io_error, &zero, KS_ERR_IO);
    memset(buf, 0, kv_lm_page_bytes(&rt_tab(st, l, hh)->lm));
    return buf;
}

/* Whether candidate a ranks below b (lower score; ties: the later block). */
static bool cand_worse(const rt_cand *a, const rt_cand *b)
{
    return a->score != b->score ? a->score < b->score : a->b > b->b;
}

/* Offers block c to the min-heap of the k best (worst at the root). */
static void heap_offer(rt_cand *heap, int32_t *n, int32_t k, rt_cand c)
{
    int32_t i;
    if (*n < k) {
        for (i = (*n)++; i > 0 && cand_worse(&c, &heap[(i - 1) / 2]); i = (i - 1) / 2)
            heap[i] = heap[(i - 1) / 2];
        heap[i] = c;
        return;
    }
    if (!cand_worse(&heap[0], &c)) return;
    for (i = 0;;) {
        int32_t w = i, a = 2 * i + 1, b = a + 1;
        const rt_cand *wc = &c;
        if (a < *n && cand_worse(&heap[a], wc)) w = a, wc = &heap[a];
        if (b < *n && cand_worse(&heap[b], wc)) w = b;
        if (w == i) break;
        heap[i] = heap[w];
        i = w;
    }
    heap[i] = c;
}

/* Scores blocks [b0, b1) for the `nh` KV heads from h0 (rows of ns * n_group sampled query
 * heads each, in hs->qs) and leaves the k best in hs->heap[0..*n_heap). A block's score is
 * the sum, over the sampled query heads, of the softmax over blocks of its landmark logit
 * (scaled like attention logits): each query head votes with the attention it would give each
 * block, so heads whose logits run large do not drown the others. Two passes over the
 * landmark pages: the softmax's max and sum (online), then the scores into the heap. */
static void score_blocks(rt_state *st, rt_head *hs, int32_t l, int32_t h0, int32_t nh, int32_t rows,
                         int32_t b0, int32_t b1, int32_t k, int32_t *n_heap)
{
    double scale = 1.0 / sqrt((double)st->hd);
    kv_landmark kind = st->p.landmark;
    int32_t width = rt_tab(st, l, h0)->lm.width, pf = KV_LM_PAGE * width;
    const float *pg[RT_MAX_KV_HEADS];
    for (int32_t pass = 0; pass < 2; pass++)
        for (int32_t p = b0 / KV_LM_PAGE; p * KV_LM_PAGE < b1; p++) {
            for (int32_t j = 0; j < nh; j++)
                pg[j] = lm_page(st, l, h0 + j, p, hs->pages + (size_t)j * pf);
            int32_t lo = KS_MAX(b0, p * KV_LM_PAGE), hi = KS_MIN(b1, (p + 1) * KV_LM_PAGE);
            for (int32_t b = lo; b < hi; b++) {
                double score = 0.0;
                for (int32_t j = 0; j < nh; j++) {
                    const float *lm = pg[j] + (size_t)(b - p * KV_LM_PAGE) * width;
                    for (int32_t r = j * rows; r < (j + 1) * rows; r++) {
                        rt_norm *nr = &hs->norm[r];
                        double x =
                            kv_lm_score(kind, lm, hs->qs + (size_t)r * st->hd, st->hd) * scale;
                        if (pass == 1) {
                            score += exp(x - nr->m) / nr->z;
                        } else if (x > nr->m) {
                            nr->z = nr->z * exp(nr->m - x) + 1.0;
                            nr->m = x;
                        } else {
                            nr->z += exp(x - nr->m);
                        }
                    }
                }
                if (pass == 1) heap_offer(hs->heap, n_heap, k, (rt_cand){.score = score, .b = b});
            }
        }
}

/* hs->heap[0..n) are the best blocks; sorted best first, takes each followed by its successor
 * (below b1) until k are taken, into hs->cand[0..m). A query matches a block by what it looks
 * for ("the pass key is"), while what it copies comes right after, often across the block
 * boundary: the successor keeps the continuation of every match. The k best candidates are
 * enough: after j of them every one of the j is taken, so at most k are looked at. Returns m. */
static int32_t expand_successors(rt_head *hs, int32_t n, int32_t b1, int32_t k)
{
    qsort(hs->heap, (size_t)n, sizeof(rt_cand), cand_by_score);
    int32_t m = 0;
    for (int32_t i = 0; i < n && m < k; i++)
        for (int32_t j = hs->heap[i].b; j <= hs->heap[i].b + 1 && j < b1 && m < k; j++) {
            bool taken = false;
            for (int32_t t = 0; t < m && !taken; t++)
                taken = hs->cand[t].b == j;
            if (!taken) hs->cand[m++] = (rt_cand){.score = 0.0, .b = j};
        }
    return m;
}

/* Fills hs->cand[0..*n_sel) with the selected blocks (ascending) among [b0, b1). */
static int select_blocks(rt_state *st, int32_t l, int32_t h, const kv_query *q, int32_t b0,
                         int32_t b1, int64_t target, int32_t *n_sel)
{
    rt_head *hs = &st->heads[h];
    int32_t n = b1 - b0, H = st->n_head_kv, span = q->n_group * st->hd;
    bool layer_mode = st->p.selection == KV_SELECT_LAYER && q->q_tok_stride >= H * span;
    int32_t h0 = layer_mode ? 0 : h, nh = layer_mode ? H : 1;
    int32_t sample[RT_SAMPLE_LAST + RT_SAMPLE_SPREAD + 1], ns = sample_queries(q->n_q, sample);
    int32_t rows = ns * q->n_group, k = KS_MIN(st->p.top_k, n);
    size_t pf = kv_lm_page_bytes(&rt_tab(st, l, h0)->lm) / sizeof(float);
    if (nh > RT_MAX_KV_HEADS) return KS_ERR_RANGE;
    if (ks_buf_reserve((void **)&hs->heap, &hs->cap_heap, k, sizeof(rt_cand)) ||
        ks_buf_reserve((void **)&hs->qs, &hs->cap_qs, (int64_t)nh * rows * st->hd, sizeof(float)) ||
        ks_buf_reserve((void **)&hs->norm, &hs->cap_norm, (int64_t)nh * rows, sizeof(rt_norm)) ||
        ks_buf_reserve((void **)&hs->pages, &hs->cap_pages, (int64_t)nh * pf, sizeof(float)))
        return KS_ERR_NOMEM;
    const float *base = layer_mode ? q->q - (size_t)h * span : q->q;
    for (int32_t j = 0; j < nh; j++)
        prepare_queries(st, hs, q, base + (size_t)j * span, sample, ns, j * rows, target);
    int32_t n_heap = 0;
    score_blocks(st, hs, l, h0, nh, rows, b0, b1, k, &n_heap);
    if (k < n) {
        k = expand_successors(hs, n_heap, b1, k);
    } else {
        memcpy(hs->cand, hs->heap, (size_t)n_heap * sizeof(rt_cand));
        k = n_heap;
    }
    qsort(hs->cand, (size_t)k, sizeof(rt_cand), cand_by_block);
    *n_sel = k;
    hs->n_selected += k;
    return 0;
}

/* Keeps the selection of (layer, head) for kv_view (the per-head candidate list is reused by
 * every layer). Only this cell's thread writes it. */
static void remember_selection(rt_table *rt, const rt_cand *cand, int32_t n_sel)
{
    rt->n_last_sel = 0;
    if (n_sel > rt->last_cap) { /* grows to min(top_k, blocks) once, then stays */
        int32_t *s = realloc(rt->last_sel, (size_t)n_sel * sizeof(int32_t));
        if (s) rt->last_sel = s;
        float *f = realloc(rt->last_score, (size_t)n_sel * sizeof(float));
        if (f) rt->last_score = f;
        if (!s || !f) return; /* the view then shows no selection for this cell */
        rt->last_cap = n_sel;
    }
    for (int32_t i = 0; i < n_sel; i++) {
        rt->last_sel[i] = cand[i].b;
        rt->last_score[i] = (float)cand[i].score;
    }
    rt->n_last_sel = n_sel;
}

int kv_rt_spans(kv_rt *st, kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                attn_span *out, int32_t max, int32_t *n)
{
    kv_head_table *t = kv_seq_table(seq, layer, kv_head);
    bool dense = layer < st->p.dense_layers, window = st->p.positions == KV_POS_WINDOW;
    *n = 0;
    if (dense && !window) return kv_seq_spans(seq, layer, kv_head, out, max, n);
    if (!q || q->n_q < 1 || q->head_dim != st->hd || t->n_tok == 0)
        return t->n_tok == 0 ? 0 : KS_ERR_INVALID;
    rt_head *hs = &st->heads[kv_head];
    int64_t first = q->q_idx[0], n_all = (int64_t)t->idx[t->n_tok - 1] + 1;
    int32_t n_lm = dense ? INT32_MAX : rt_tab(st, layer, kv_head)->lm.n;
    int64_t L = KS_MIN(first - st->p.window, (int64_t)n_lm * st->B);
    L = KS_MAX(L, (int64_t)st->p.n_sink);
    L = KS_MIN(L, n_all);
    int64_t sink_end = KS_MIN((int64_t)st->p.n_sink, L);
    int32_t b0 = (int32_t)(st->p.n_sink / st->B), b1 = (int32_t)((L + st->B - 1) / st->B);
    b1 = KS_MAX(KS_MIN(b1, n_lm), b0); /* [n_lm*B, L) can only be sink tokens */
    int32_t k = dense ? b1 - b0 : KS_MIN(st->p.top_k, b1 - b0);
    /* Upper bound on the spans needed, so that a short `out` fails before any work. */
    int64_t per_blk = (st->B + st->pb - 1) / st->pb + 1;
    int64_t need = window ? 1 : sink_end / st->pb + 1 + (int64_t)k * per_blk;
    need += (n_all - L) / st->pb + 2;
    if (need > max) {
        *n = (int32_t)KS_MIN(need, INT32_MAX);
        return KS_ERR_RANGE;
    }
    int rc = head_reserve(st, hs, sink_end + (int64_t)k * st->B, k);
    if (rc) return rc;
    hs->pin++;
    hs->scr_n = 0;
    int32_t n_sel = 0;
    if (dense) {
        for (int32_t i = 0; i < k; i++)
            hs->cand[i] = (rt_cand){.b = b0 + i};
        n_sel = k;
    } else if (b1 > b0) {
        rc = select_blocks(st, layer, kv_head, q, b0, b1, first - st->p.window, &n_sel);
        if (rc) return rc;
    }
    if (!dense) remember_selection(rt_tab(st, layer, kv_head), hs->cand, n_sel);
    span_out so = {.out = out, .max = max};
    int64_t target = first - st->p.window;
    if (sink_end > 0)
        rc = window ? emit_copy(st, seq, layer, kv_head, 0, sink_end, target, 1.0f)
                    : emit_direct(st, seq, layer, kv_head, 0, sink_end, 1.0f, &so);
    for (int32_t i = 0; i < n_sel && !rc; i++) {
        int64_t a = KS_MAX((int64_t)hs->cand[i].b * st->B, sink_end);
        int64_t b = KS_MIN((int64_t)(hs->cand[i].b + 1) * st->B, L);
        float w = (float)(n_sel - i) / (float)n_sel;
        if (a < b)
            rc = window ? emit_copy(st, seq, layer, kv_head, a, b, target, w)
                        : emit_direct(st, seq, layer, kv_head, a, b, w, &so);
    }
    if (!rc && window && hs->scr_n > 0)
        span_push(st, &so, hs->scr_k, hs->scr_v, hs->scr_idx, hs->scr_n);
    if (!rc && L < n_all) rc = emit_direct(st, seq, layer, kv_head, L, n_all, 1.0f, &so);
    *n = rc ? 0 : so.n;
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Representative landmarks: attention mass of not-yet-summarised tokens                    */

static int32_t rt_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q)
{
    rt_state *st = kv_seq_policy_state(seq);
    (void)kv_head;
    if (st->p.landmark != KV_LANDMARK_REPRESENTATIVE || layer < st->p.dense_layers || !q) return 0;
    return q->n_q;
}

static int rt_after_attention(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                              const attn_span *spans, int32_t n_spans, const float *key_mass,
                              int32_t n_mass)
{
    (void)n_mass;
    rt_state *st = kv_seq_policy_state(seq);
    rt_table *rt = rt_tab(st, layer, kv_head);
    int64_t base = (int64_t)rt->lm.n * st->B, n_keys = 0, n_all = kv_seq_tokens_seen(seq);
    for (int32_t i = 0; i < n_spans; i++)
        n_keys += spans[i].n;
    if (n_all - base > rt->mass_cap) {
        int32_t cap = (int32_t)KS_MAX(n_all - base, (int64_t)rt->mass_cap * 2);
        float *m = realloc(rt->mass, (size_t)cap * sizeof(float));
        if (!m) return KS_ERR_NOMEM;
        memset(m + rt->mass_cap, 0, (size_t)(cap - rt->mass_cap) * sizeof(float));
        rt->mass = m;
        rt->mass_cap = cap;
    }
    for (int32_t i = 0, j = 0; i < n_spans; j += spans[i].n, i++)
        for (int32_t r = 0; r < spans[i].n; r++) {
            int64_t x = (int64_t)spans[i].idx[r] - base;
            if (x < 0 || x >= rt->mass_cap) continue;
            for (int32_t g = 0; g < q->n_group; g++)
                rt->mass[x] += key_mass[(size_t)g * n_keys + j + r];
        }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* After a chunk: summarise blocks that left the window, then spill beyond the budget        */

static int spill_failed(rt_state *st, int rc);

/* Once a table's landmarks fill their RAM pages, every table's older pages go to a landmark
 * spill file (record = one page of one table, interleaved like the blocks' records). */
static int lm_attach_file(rt_state *st)
{
    int32_t n_tabs = st->n_layer * st->n_head_kv;
    kv_spill_params sp = {.dir = st->p.spill_dir,
                          .record_bytes = kv_lm_page_bytes(&st->tabs[0].lm),
                          .n_parts = 1,
                          .slots_per_part = 1, /* pages are read into the caller's buffer */
                          .eviction = KV_EVICT_LRU};
    int rc = kv_spill_create(&sp, &st->lm_file);
    if (rc) return spill_failed(st, rc == KS_ERR_INVALID ? KS_ERR_IO : rc);
    for (int32_t i = 0; i < n_tabs; i++)
        kv_lm_set_spill(&st->tabs[i].lm, st->lm_file, i, n_tabs, st->lm_max_pages);
    return 0;
}

static int summarise(rt_state *st, kv_seq *seq, int32_t l, int32_t h, int64_t upto)
{
    rt_table *rt = rt_tab(st, l, h);
    while ((int64_t)(rt->lm.n + 1) * st->B <= upto) {
        if (!st->lm_file && !atomic_load(&st->io_error) &&
            rt->lm.n >= st->lm_max_pages * KV_LM_PAGE) {
            int rc = lm_attach_file(st);
            if (rc) return rc;
        }
        int64_t a = (int64_t)rt->lm.n * st->B;
        for (int64_t i = 0; i < st->B; i++) {
            int64_t x = a + i, u = x / st->pb;
            const uint8_t *k, *v;
            int64_t slot0;
            int rc = unit_mem(st, seq, l, h, u, 0.0f, &k, &v, &slot0);
            if (rc) return rc;
            float *row = st->kbuf + i * st->hd;
            row_to_f32(st, k + (x - u * st->pb) * st->rb, row);
            if (st->p.positions == KV_POS_WINDOW) /* landmark of the keys before RoPE */
                rope_rotate_pos(&st->rope, row, 1, -(float)x);
        }
        bool rep = st->p.landmark == KV_LANDMARK_REPRESENTATIVE && rt->mass_cap >= st->B;
        int rc =
            kv_lm_set_push(&rt->lm, st->kbuf, st->B, rep ? rt->mass : NULL, st->p.representatives);
        if (rc) rc = spill_failed(st, rc); /* I/O: the page stays in RAM, the sequence fails */
        if (rc) return rc;
        if (rt->mass_cap > st->B) {
            memmove(rt->mass, rt->mass + st->B, (size_t)(rt->mass_cap - st->B) * sizeof(float));
            memset(rt->mass + rt->mass_cap - st->B, 0, (size_t)st->B * sizeof(float));
        } else if (rt->mass) {
            memset(rt->mass, 0, (size_t)rt->mass_cap * sizeof(float));
        }
    }
    return 0;
}

/* Records a spill I/O failure: the blocks stay in RAM (nothing was dropped yet), spilling
 * stops, and the scheduler fails this sequence after the step; the batch goes on. */
static int spill_failed(rt_state *st, int rc)
{
    if (rc != KS_ERR_IO) return rc;
    int zero = 0;
    atomic_compare_exchange_strong(&st->io_error, &zero, rc);
    return 0;
}

/* Moves units [n_sink_units + n_spilled, + n_units) of every sparse table to the file. */
static int spill_units(rt_state *st, kv_seq *seq, int64_t n_units)
{
    int32_t H = st->n_head_kv, D = st->p.dense_layers;
    if (atomic_load(&st->io_error)) return 0;
    if (!st->spill) {
        kv_spill_params sp = {.dir = st->p.spill_dir,
                              .record_bytes = kv_pool_block_bytes(st->pool),
                              .n_parts = H,
                              .slots_per_part = st->hot_slots,
                              .eviction = st->p.eviction,
                              .decay = 0.95f};
        if (!st->zero_rec) st->zero_rec = calloc(1, kv_pool_block_bytes(st->pool));
        if (!st->zero_rec) return KS_ERR_NOMEM;
        int rc = kv_spill_create(&sp, &st->spill);
        if (rc) return spill_failed(st, rc == KS_ERR_INVALID ? KS_ERR_IO : rc);
    }
    int64_t n_tabs = st->n_rec_tabs, s0 = st->n_sink_units;
    for (int32_t l = D; l < st->n_layer; l++)
        for (int32_t h = 0; h < H; h++) {
            kv_head_table *t = kv_seq_table(seq, l, h);
            int32_t slot = st->rec[(size_t)l * H + h];
            for (int64_t i = 0; i < n_units && slot >= 0; i++) {
                int64_t rec = (st->n_spilled + i) * n_tabs + slot;
                int rc =
                    kv_spill_write(st->spill, rec, kv_pool_block_k(st->pool, t->blocks[s0 + i]));
                if (rc) return spill_failed(st, rc);
            }
        }
    for (int32_t l = D; l < st->n_layer; l++)
        for (int32_t h = 0; h < H; h++) {
            kv_head_table *t = kv_seq_table(seq, l, h);
            if (st->rec[(size_t)l * H + h] < 0) continue;
            int64_t drop0 = s0 * st->pb, drop1 = drop0 + n_units * st->pb;
            int32_t nk = (int32_t)(t->n_tok - (drop1 - drop0));
            if (nk > st->keep_cap) {
                int32_t *kp = realloc(st->keep, (size_t)nk * 2 * sizeof(int32_t));
                if (!kp) return KS_ERR_NOMEM;
                st->keep = kp;
                st->keep_cap = nk * 2;
            }
            int32_t j = 0;
            for (int32_t s = 0; s < t->n_tok; s++)
                if (s < drop0 || s >= drop1) st->keep[j++] = s;
            /* Only whole tail-ward units go, no row moves: keep cannot need a free block. */
            int rc = kv_head_table_keep(t, st->keep, j);
            if (rc) return rc;
        }
    st->n_spilled += n_units;
    return 0;
}

/* Units that may spill now: wholly summarised and older than the next chunk's window. */
static int64_t spill_avail(rt_state *st, kv_seq *seq)
{
    int64_t upto = kv_seq_tokens_seen(seq) - st->p.window;
    int64_t lm_end = (int64_t)st->tabs[st->ref_tab].lm.n * st->B;
    int64_t end = KS_MIN(upto, lm_end) / st->pb;
    return KS_MAX(end - (st->n_sink_units + st->n_spilled), 0);
}

int kv_rt_after_chunk(kv_rt *st, kv_seq *seq, const kv_chunk *chunk)
{
    (void)chunk;
    int32_t D = st->p.dense_layers, H = st->n_head_kv;
    if (st->n_rec_tabs == 0) return 0;
    int64_t n_all = kv_seq_tokens_seen(seq), upto = n_all - st->p.window;
    for (int32_t l = D; l < st->n_layer; l++)
        for (int32_t h = 0; h < H; h++) {
            if (st->rec[(size_t)l * H + h] < 0) continue;
            int rc = summarise(st, seq, l, h, upto);
            if (rc) return rc;
        }
    /* Spill while this sequence's pool blocks exceed its share of the RAM budget. */
    int64_t used = 0;
    for (int32_t i = 0; i < st->n_layer * H; i++)
        used += kv_seq_table(seq, i / H, i % H)->n_blocks;
    size_t bb = kv_pool_block_bytes(st->pool);
    size_t fixed = st->hot_bytes + st->lm_ram_bytes; /* hot set + landmark pages */
    int64_t limit = (int64_t)((st->ram_bytes > fixed ? st->ram_bytes - fixed : 0) / bb);
    if (used <= limit) return 0;
    int64_t n_tabs = st->n_rec_tabs;
    int64_t want = (used - limit + n_tabs - 1) / n_tabs;
    int64_t n_units = KS_MIN(want, spill_avail(st, seq));
    if (n_units < want && !st->warned_budget) {
        ks_warn("retrieval: ram_mb=%lld is below sinks + window + dense layers; RAM grows "
                "past it",
                (long long)st->p.ram_mb);
        st->warned_budget = true;
    }
    return n_units > 0 ? spill_units(st, seq, n_units) : 0;
}

/* The shared pool is the RAM tier of every sequence: when it cannot take the chunk, spill
 * what this sequence may spill before the append would fail with KS_ERR_FULL. */
int kv_rt_before_chunk(kv_rt *st, kv_seq *seq, const kv_chunk *chunk)
{
    int32_t H = st->n_head_kv;
    if (st->n_rec_tabs == 0 || chunk->n_new <= 0) return 0;
    int64_t need = (int64_t)st->n_layer * H * ((chunk->n_new + st->pb - 1) / st->pb + 1);
    int64_t free_b = kv_pool_blocks_free(st->pool);
    if (free_b >= need) return 0;
    int64_t n_tabs = st->n_rec_tabs;
    int64_t n_units = KS_MIN((need - free_b + n_tabs - 1) / n_tabs, spill_avail(st, seq));
    return n_units > 0 ? spill_units(st, seq, n_units) : 0;
}

int64_t kv_rt_spilled_units(const kv_rt *st)
{
    return st->n_spilled;
}

int kv_rt_io_error(kv_rt *st)
{
    return atomic_load(&st->io_error);
}

/* The policy's hooks: the engine over every table of the sparse layers. */
static int rt_before_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    return kv_rt_before_chunk(kv_seq_policy_state(seq), seq, chunk);
}

static int rt_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    return kv_rt_after_chunk(kv_seq_policy_state(seq), seq, chunk);
}

static int rt_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
                    int32_t max, int32_t *n)
{
    return kv_rt_spans(kv_seq_policy_state(seq), seq, layer, kv_head, q, out, max, n);
}

/* ---------------------------------------------------------------------------------------- */

int kv_retrieval_io_error(kv_seq *seq)
{
    if (!seq || kv_seq_policy(seq) != &kv_policy_retrieval) return 0;
    rt_state *st = kv_seq_policy_state(seq);
    return atomic_load(&st->io_error);
}

int kv_retrieval_get_stats(kv_seq *seq, kv_retrieval_stats *out)
{
    if (!seq || !out || kv_seq_policy(seq) != &kv_policy_retrieval) return KS_ERR_INVALID;
    rt_state *st = kv_seq_policy_state(seq);
    memset(out, 0, sizeof(*out));
    int32_t H = st->n_head_kv;
    size_t scratch = 0;
    for (int32_t i = 0; i < st->n_layer * H; i++) {
        out->blocks_ram += kv_seq_table(seq, i / H, i % H)->n_blocks;
        out->landmarks += st->tabs[i].lm.n;
        out->landmark_bytes += kv_lm_ram_bytes(&st->tabs[i].lm);
        scratch += (size_t)st->tabs[i].mass_cap * 4;
    }
    for (int32_t h = 0; h < H; h++) {
        const rt_head *hs = &st->heads[h];
        scratch += (size_t)hs->scr_cap * (st->rb + st->vb + 4) +
                   (size_t)(hs->cand_cap + hs->cap_heap) * sizeof(rt_cand) +
                   (size_t)(hs->cap_qs + hs->cap_pages) * sizeof(float) +
                   (size_t)hs->cap_norm * sizeof(rt_norm);
        out->blocks_retrieved += st->heads[h].n_selected;
    }
    kv_spill_stats ss;
    kv_spill_get_stats(st->spill, &ss);
    out->blocks_disk = ss.records_written;
    out->hot_slots = ss.hot_slots;
    out->hot_used = ss.hot_used;
    out->hot_hits = ss.hits;
    out->hot_misses = ss.misses;
    out->hot_hit_rate =
        ss.hits + ss.misses > 0 ? (double)ss.hits / (double)(ss.hits + ss.misses) : 0.0;
    out->bytes_read = ss.bytes_read;
    out->bytes_written = ss.bytes_written;
    out->ram_bytes = (size_t)out->blocks_ram * kv_pool_block_bytes(st->pool) +
                     (size_t)ss.hot_slots * kv_pool_block_bytes(st->pool) + out->landmark_bytes +
                     scratch;
    return 0;
}

int kv_retrieval_view_get(kv_seq *seq, int32_t layer, int32_t kv_head, kv_retrieval_view *out)
{
    if (!seq || !out || kv_seq_policy(seq) != &kv_policy_retrieval) return KS_ERR_INVALID;
    rt_state *st = kv_seq_policy_state(seq);
    if (layer < 0 || layer >= st->n_layer || kv_head < 0 || kv_head >= st->n_head_kv)
        return KS_ERR_INVALID;
    const rt_table *rt = rt_tab(st, layer, kv_head);
    bool dense = layer < st->p.dense_layers;
    *out = (kv_retrieval_view){.block_tokens = st->B,
                               .n_sel = dense ? -1 : rt->n_last_sel,
                               .sel = rt->last_sel,
                               .score = rt->last_score,
                               .dense_layers = KS_MIN(st->p.dense_layers, st->n_layer),
                               .spill_lo = st->n_sink_units * st->pb,
                               .spill_hi = (st->n_sink_units + st->n_spilled) * st->pb};
    return 0;
}

const kv_policy kv_policy_retrieval = {
    .name = "retrieval",
    .init = rt_init,
    .free = rt_free,
    .positions = rt_positions,
    .before_chunk = rt_before_chunk,
    .spans = rt_spans,
    .mass_queries = rt_mass_queries,
    .after_attention = rt_after_attention,
    .after_chunk = rt_after_chunk,
};

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */

#define RT_PARAM(key, type, lo, hi, def, ch, help)                                                 \
    {                                                                                              \
#key, type, offsetof(rt_params, key), lo, hi, def, NULL, ch, false, help                   \
    }

static const kv_param_desc rt_params_table[] = {
    RT_PARAM(block_tokens, KV_PARAM_INT, 8, 1024, 64, NULL,
             "tokens per retrieval block (a power of two)"),
    RT_PARAM(landmark, KV_PARAM_ENUM, 0, 0, KV_LANDMARK_MEAN, kv_landmark_names,
             "block summary: mean key (MoBA), per-channel bounds (Quest), representative keys "
             "(InfLLM)"),
    RT_PARAM(representatives, KV_PARAM_INT, 1, INT32_MAX, 4, NULL,
             "keys per block for `representative` (<= block_tokens)"),
    RT_PARAM(top_k, KV_PARAM_INT, 1, INT32_MAX, 8, NULL, "blocks retrieved per query"),
    RT_PARAM(n_sink, KV_PARAM_INT, 0, INT32_MAX, 4, NULL, "first tokens always attended"),
    RT_PARAM(window, KV_PARAM_INT, 1, INT32_MAX, 512, NULL, "local window tokens"),
    RT_PARAM(selection, KV_PARAM_ENUM, 0, 0, KV_SELECT_HEAD, kv_selection_names,
             "blocks chosen per KV head or once per layer"),
    RT_PARAM(dense_layers, KV_PARAM_INT, 0, INT32_MAX, 2, NULL,
             "first layers kept dense (full attention)"),
    RT_PARAM(positions, KV_PARAM_ENUM, 0, 0, KV_POS_WINDOW, kv_pos_mode_names,
             "`window`: positions relative to the attended window (InfLLM), or `original`; "
             "`compact` is not accepted"),
    RT_PARAM(chunk, KV_PARAM_INT, 1, INT32_MAX, 512, NULL, "prefill chunk tokens"),
    {"ram_mb", KV_PARAM_I64, offsetof(rt_params, ram_mb), 1, 9.3e18, 512, NULL, NULL, true,
     "hot-set budget in MiB before blocks spill to disk"},
    {"spill_dir", KV_PARAM_PATH, offsetof(rt_params, spill_dir), 0, 0, 0, "/tmp/kvserve-spill",
     NULL, true, "directory of the spill files (one per sequence, mode 0600)"},
    RT_PARAM(eviction, KV_PARAM_ENUM, 0, 0, KV_EVICT_LRU, kv_eviction_names,
             "hot-set eviction: least recently used, or by score then LRU"),
};

/* Largest power of two <= x, clamped to [lo, hi]. */
static int32_t rt_pow2_clamp(int64_t x, int32_t lo, int32_t hi)
{
    int32_t v = lo;
    while (v < hi && (int64_t)v * 2 <= x)
        v *= 2;
    return v;
}

/* Everything scales with the trained context C (docs/policies.md, README "Retrieval
 * defaults"). With window positions a query sees distances < window + chunk, so window C/2 and
 * chunk C/4 keep it at 3C/4, inside what the model was trained on. Blocks of C/32 tokens make
 * the needle a large part of its block's mean key (a 20-token sentence in a 64-token block of
 * a 512 model does not drown in the filler around it), and top_k retrieves 2C tokens.
 * dense_layers 0: a dense layer would see positions far past C. */
static void rt_derive(void *params, uint64_t set, const kv_model_info *info)
{
    rt_params *p = params;
    const kv_policy_desc *d = &kv_policy_desc_retrieval;
    int64_t c = kv_model_ctx(info);
    if (!kv_param_was_set(d, set, "window")) p->window = (int32_t)KS_MAX(16, c / 2);
    if (!kv_param_was_set(d, set, "chunk")) p->chunk = (int32_t)KS_MAX(8, c / 4);
    if (!kv_param_was_set(d, set, "block_tokens"))
        p->block_tokens = rt_pow2_clamp(c / RT_DERIVE_BLOCK_DIV, 8, 128);
    if (!kv_param_was_set(d, set, "top_k"))
        p->top_k = (int32_t)KS_MAX(4, RT_DERIVE_RETRIEVED * c / p->block_tokens);
    if (!kv_param_was_set(d, set, "dense_layers")) p->dense_layers = 0;
    if (!kv_param_was_set(d, set, "representatives"))
        p->representatives = KS_MIN(p->representatives, p->block_tokens);
}

static const kv_param_rule rt_rules[] = {
    {"block_tokens", "power of two <= context_length / 32, in 8..128"},
    {"top_k", "2 * context_length / block_tokens"},
    {"window", "context_length / 2"},
    {"chunk", "context_length / 4"},
    {"dense_layers", "0"},
    {NULL, NULL}};

static int rt_validate(const void *params, const char *table, ks_diag *d)
{
    const rt_params *p = params;
    char key[96];
    snprintf(key, sizeof(key), "%s.block_tokens", table);
    if ((p->block_tokens & (p->block_tokens - 1)) != 0)
        return ks_diag_key(d, KS_ERR_RANGE, key, "%d must be a power of two in 8..1024",
                           p->block_tokens);
    snprintf(key, sizeof(key), "%s.representatives", table);
    int rc = ks_check_range(d, key, p->representatives, 1, p->block_tokens);
    if (rc) return rc;
    snprintf(key, sizeof(key), "%s.positions", table);
    if (p->positions != KV_POS_ORIGINAL && p->positions != KV_POS_WINDOW)
        return ks_diag_key(d, KS_ERR_INVALID, key, "must be \"window\" or \"original\"");
    return KS_OK;
}

/* Sinks, window, the chunk going in and the retrieved blocks; dense layers keep everything. */
static int64_t rt_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                            int32_t *dense_layers)
{
    const rt_params *p = params;
    (void)n_tokens;
    *dense_layers = KS_MIN(p->dense_layers, n_layer);
    return (int64_t)p->n_sink + p->window + chunk + (int64_t)p->top_k * p->block_tokens;
}

/* With window positions, window + chunk must stay inside the model's trained context. */
static int32_t rt_prefill_chunk(const void *params, int32_t chunk)
{
    const rt_params *p = params;
    return KS_MIN(chunk, p->chunk);
}

/* Spill files left by a crashed kvserve (its pid is gone) go before any sequence can create
 * new ones. */
int kv_rt_cleanup_stale(const char *spill_dir)
{
    int n_stale = kv_spill_cleanup_dir(spill_dir);
    if (n_stale > 0) ks_info("removed %d stale spill file(s) from %s", n_stale, spill_dir);
    return n_stale;
}

static int rt_server_start(const void *params)
{
    const rt_params *p = params;
    return kv_rt_cleanup_stale(p->spill_dir);
}

/* The view: every token is kept (some on disk); sinks and the local window are attended
 * always, the rest by selection. */
static void rt_view_hint(const void *params, int32_t n_layer, int32_t layer, int64_t n_prompt,
                         int64_t seen, kv_view_hint *out)
{
    (void)n_layer, (void)layer, (void)n_prompt;
    const rt_params *p = params;
    out->sink = p->n_sink;
    out->window_from = seen - p->window;
}

const kv_policy_desc kv_policy_desc_retrieval = {
    .name = "retrieval",
    .summary = "Keeps every token; each query reads the sinks, the top-k blocks by landmark "
               "score and a local window; cold blocks spill to disk, so RAM stays bounded.",
    .reference = "Landmark Attention (Mohtashami & Jaggi, arXiv:2305.16300), InfLLM (Xiao et "
                 "al., arXiv:2402.04617), Quest (Tang et al., arXiv:2406.10774), MoBA (Lu et "
                 "al., arXiv:2502.13189)",
    .ops = &kv_policy_retrieval,
    .view_hint = rt_view_hint,
    .params_table = rt_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(rt_params_table),
    .params_size = sizeof(rt_params),
    .validate = rt_validate,
    .admission = rt_admission,
    .prefill_chunk = rt_prefill_chunk,
    .server_start = rt_server_start,
    .derive = rt_derive,
    .rules = rt_rules,
};

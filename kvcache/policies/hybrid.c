/* hybrid.c - the `hybrid` policy: retrieval KV for retrieval heads, sinks + window for the rest.
 *
 * Papers: Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality"
 * (arXiv:2404.15574); Xiao et al., "DuoAttention: Efficient Long-Context LLM Inference with
 * Retrieval and Streaming Heads" (arXiv:2410.10819).
 *
 * The idea in plain words. Only a few heads of a model ever look far back to copy a token
 * (retrieval heads); the others attend to the first tokens (attention sinks) and to their
 * neighbourhood (streaming heads). Which heads retrieve is measured once per model by
 * `kvserve profile-heads` and read from the head-profile file named by `profile`
 * (head_profile.h). Without a profile every head is treated as a retrieval head and a
 * warning says so.
 *
 * Retrieval heads keep every token and run the block-retrieval engine of retrieval.c
 * (retrieval.h) on their tables only: landmarks per block, the top_k blocks per query, the
 * sinks and a local window of retrieval_window tokens, cold blocks in the spill file beyond
 * ram_mb. Past the trained context C the retrieved keys are re-rotated to one position just
 * before the window (InfLLM's window positions), so every distance a query sees stays below
 * n_sink + retrieval_window + chunk, inside what the model was trained on: that is what lets
 * the needle be copied at 16x C. While every query is inside C (and nothing spilled) a
 * retrieval head attends all its tokens at their original positions, exactly as `full` does.
 *
 * Streaming heads keep n_sink + window tokens, StreamingLLM's set, through the same eviction
 * step as sink_window (sink_recent.c). Keys are stored at their original positions (one
 * position per token serves every head), and the sinks are re-rotated on use, into per-head
 * scratch, to sit right before the oldest kept window token: the positions a streaming head
 * sees are those of sink_window's `compact` mode, never more than n_sink + window + chunk.
 *
 * Invariant: after every chunk each streaming table holds at most n_sink + window tokens
 * (n_sink + window + chunk while a chunk goes in); retrieval tables hold every token
 * that is not in the spill file (the engine's layout, retrieval.c).
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/policies/retrieval.h"
#include "kvcache/sink_recent.h"
#include "kvserve/head_profile.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"
#include "kvserve/quant.h"
#include "kvserve/spill.h"

typedef struct hy_params {
    int32_t n_sink;           /* first tokens every head keeps (attention sinks) */
    int32_t window;           /* recent tokens a streaming head keeps */
    int32_t retrieval_window; /* local window of a retrieval head */
    int32_t block_tokens;     /* retrieval block size (power of two) */
    int32_t top_k;            /* blocks a retrieval head reads per query */
    int32_t chunk;            /* prefill chunk tokens */
    int64_t ram_mb;           /* retrieval heads' RAM budget before blocks spill */
    char spill_dir[KV_PARAM_PATH_MAX];
    char profile[KV_PARAM_PATH_MAX]; /* head-profile file, "none" = no profile */
} hy_params;

#define HY_NO_PROFILE "none"
#define HY_MAX_HD 1024

extern const kv_policy_desc kv_policy_desc_hybrid;
_Static_assert(sizeof(hy_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

typedef struct hy_head { /* sink copies of one KV head; used by one thread at a time */
    uint8_t *k, *v;
    int64_t cap_k, cap_v;
    float row[HY_MAX_HD];
} hy_head;

typedef struct hy_state {
    int32_t n_layer, n_head_kv, n_sink, window, ctx, hd;
    uint8_t *keep_full; /* [n_layer * n_head_kv] */
    int32_t *keep;
    int64_t cap_keep;
    kv_rt *rt; /* the retrieval engine over the keep_full tables; NULL when there are none */
    rope_params rope, rope_swa;
    bool *swa; /* [n_layer] layer uses rope_swa; NULL = none */
    ks_dtype kt;
    size_t rb, vb;
    hy_head *heads; /* [n_head_kv] */
} hy_state;

static void hy_free(kv_seq *seq, void *state)
{
    (void)seq;
    hy_state *s = state;
    if (!s) return;
    kv_rt_free(s->rt);
    for (int32_t h = 0; s->heads && h < s->n_head_kv; h++) {
        free(s->heads[h].k);
        free(s->heads[h].v);
    }
    free(s->heads);
    free(s->swa);
    free(s->keep_full);
    free(s->keep);
    free(s);
}

/* The classification of the profile, checked against the sequence's shape. */
static int hy_load_profile(hy_state *s, const char *path)
{
    kv_head_profile hp;
    ks_diag d;
    int rc = kv_head_profile_load(path, &hp, &d);
    if (!rc && (rc = kv_head_profile_check_shape(&hp, s->n_layer, s->n_head_kv, &d)))
        kv_head_profile_free(&hp);
    if (rc) {
        ks_warn("hybrid: %s", d.msg);
        return rc == KS_ERR_NOMEM ? rc : KS_ERR_INVALID;
    }
    memcpy(s->keep_full, hp.keep_full, (size_t)s->n_layer * s->n_head_kv);
    kv_head_profile_free(&hp);
    return 0;
}

/* The engine's parameters for the retrieval heads: mean-key landmarks chosen per KV head
 * (each retrieval head selects for itself) and window positions. */
static kv_rt_params hy_engine_params(const hy_params *p)
{
    kv_rt_params r = {.block_tokens = p->block_tokens,
                      .landmark = KV_LANDMARK_MEAN,
                      .representatives = 1,
                      .top_k = p->top_k,
                      .n_sink = p->n_sink,
                      .window = p->retrieval_window,
                      .selection = KV_SELECT_HEAD,
                      .dense_layers = 0,
                      .positions = KV_POS_WINDOW,
                      .chunk = p->chunk,
                      .ram_mb = p->ram_mb,
                      .eviction = KV_EVICT_LRU};
    memcpy(r.spill_dir, p->spill_dir, sizeof(r.spill_dir));
    return r;
}

/* RoPE of the model (and of its sliding-window layers), for re-rotating sinks. */
static int hy_init_rope(hy_state *s, const kv_policy_args *a)
{
    s->rope = a ? a->rope
                : (rope_params){
                      .kind = ROPE_NORM, .head_dim = s->hd, .theta = 10000.0f, .freq_scale = 1.0f};
    s->rope_swa = a ? a->rope_swa : s->rope;
    if (s->rope.head_dim != s->hd || s->hd % 2 || s->hd > HY_MAX_HD) return KS_ERR_INVALID;
    s->rope.relative = s->rope_swa.relative = true; /* deltas of rotated keys */
    for (int32_t l = 0; a && a->layer_window && l < s->n_layer; l++) {
        if (a->layer_window[l] <= 0) continue;
        if (!s->swa && !(s->swa = calloc((size_t)s->n_layer, sizeof(bool)))) return KS_ERR_NOMEM;
        s->swa[l] = true;
    }
    return 0;
}

static bool hy_params_ok(const hy_params *p)
{
    return p->n_sink >= 0 && p->window >= 1 && p->retrieval_window >= 1 && p->block_tokens >= 1 &&
           p->top_k >= 1 && p->chunk >= 1 && p->ram_mb >= 1 &&
           memchr(p->profile, 0, sizeof(p->profile)) &&
           memchr(p->spill_dir, 0, sizeof(p->spill_dir));
}

/* Which heads retrieve: the profile's keep_full flags, or every head without a profile. */
static int hy_classify(hy_state *s, const char *profile)
{
    if (strcmp(profile, HY_NO_PROFILE) != 0) return hy_load_profile(s, profile);
    static atomic_bool warned;
    if (!atomic_exchange(&warned, true))
        ks_warn("hybrid: no head profile (run kvserve profile-heads): every head is a "
                "retrieval head");
    memset(s->keep_full, 1, (size_t)s->n_layer * s->n_head_kv);
    return 0;
}

static int hy_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    hy_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_hybrid, &mi, &p);
    if (!hy_params_ok(&p)) return KS_ERR_INVALID;
    hy_state *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    kv_pool *pool = kv_seq_pool(seq);
    s->n_layer = kv_seq_n_layer(seq);
    s->n_head_kv = kv_seq_n_head_kv(seq);
    s->n_sink = p.n_sink;
    s->window = p.window;
    s->ctx = kv_model_ctx(&mi);
    s->hd = kv_pool_head_dim(pool);
    s->kt = kv_pool_k_dtype(pool);
    s->rb = kv_pool_k_row_bytes(pool);
    s->vb = kv_pool_v_row_bytes(pool);
    int32_t n = s->n_layer * s->n_head_kv;
    s->keep_full = malloc((size_t)n);
    s->heads = calloc((size_t)s->n_head_kv, sizeof(hy_head));
    int rc = s->keep_full && s->heads ? 0 : KS_ERR_NOMEM;
    if (!rc) rc = hy_init_rope(s, a);
    if (!rc) rc = hy_classify(s, p.profile);
    bool any = false;
    for (int32_t i = 0; !rc && i < n; i++)
        any |= s->keep_full[i] != 0;
    if (!rc && any) {
        kv_rt_params rp = hy_engine_params(&p);
        rc = kv_rt_create(seq, a, &rp, s->keep_full, &s->rt);
    }
    if (rc) {
        hy_free(seq, s);
        return rc;
    }
    *state = s;
    return 0;
}

/* Trims every streaming table to sinks + the last `recent` tokens. */
static int hy_trim(kv_seq *seq, hy_state *s, int32_t recent)
{
    for (int32_t i = 0; i < s->n_layer * s->n_head_kv; i++) {
        if (s->keep_full[i]) continue;
        kv_head_table *t = kv_seq_table(seq, i / s->n_head_kv, i % s->n_head_kv);
        if ((int64_t)t->n_tok <= (int64_t)s->n_sink + recent) continue;
        bool changed;
        int rc = kv_sink_recent_keep(t, s->n_sink, recent, &s->keep, &s->cap_keep, &changed);
        if (rc) return rc;
    }
    return 0;
}

/* Room for the chunk. A decode token then sees sinks + the window ending at itself; a prompt
 * chunk keeps the whole window before it, so that its first queries still see `window` tokens
 * back (trimming to window - n_new would leave a query at the start of a 128-token chunk
 * only the sinks). The engine spills when the pool cannot take the chunk. */
static int hy_before_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    hy_state *s = kv_seq_policy_state(seq);
    int rc = hy_trim(seq, s, chunk->n_new > 1 ? s->window : KS_MAX(0, s->window - chunk->n_new));
    return rc || !s->rt ? rc : kv_rt_before_chunk(s->rt, seq, chunk);
}

/* A spill read or write that failed (the engine attended zeros in its place) ends the
 * request with KS_ERR_IO here, after the chunk, rather than letting it go on. */
static int hy_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    hy_state *s = kv_seq_policy_state(seq);
    int rc = hy_trim(seq, s, s->window);
    if (rc || !s->rt) return rc;
    rc = kv_rt_after_chunk(s->rt, seq, chunk);
    return rc ? rc : kv_rt_io_error(s->rt);
}

/* Copies the first n_sk slots of t into head scratch with every key moved by
 * (pos0 - n_sk + i) - pos[i]: the sinks then sit right before the window's first key. */
static int hy_copy_sinks(hy_state *s, hy_head *hs, const kv_head_table *t, const rope_params *rp,
                         int32_t n_sk, int32_t pos0)
{
    if (ks_buf_reserve((void **)&hs->k, &hs->cap_k, (int64_t)n_sk * (int64_t)s->rb, 1) ||
        ks_buf_reserve((void **)&hs->v, &hs->cap_v, (int64_t)n_sk * (int64_t)s->vb, 1))
        return KS_ERR_NOMEM;
    float cs[HY_MAX_HD / 2], sn[HY_MAX_HD / 2];
    int32_t slot = 0, last_delta = 0;
    rope_angles(rp, 0.0f, cs, sn);
    for (int32_t b = 0; b < t->n_blocks && slot < n_sk; b++)
        for (int32_t r = 0; r < t->blk_n[b] && slot < n_sk; r++, slot++) {
            int32_t delta = pos0 - n_sk + slot - t->pos[slot];
            if (delta != last_delta) {
                rope_angles(rp, (float)delta, cs, sn);
                last_delta = delta;
            }
            ks_dtype_to_f32(s->kt, kv_head_table_k_row(t, b, r), hs->row, s->hd);
            rope_rotate(rp, hs->row, 1, cs, sn);
            ks_dtype_from_f32(s->kt, hs->row, hs->k + (size_t)slot * s->rb, s->hd);
            memcpy(hs->v + (size_t)slot * s->vb, kv_head_table_v_row(t, b, r), s->vb);
        }
    return 0;
}

/* A streaming head: its table's spans, the sinks replaced by their re-rotated copies. */
static int hy_stream_spans(kv_seq *seq, hy_state *s, int32_t layer, int32_t kv_head, attn_span *out,
                           int32_t max, int32_t *n)
{
    kv_head_table *t = kv_seq_table(seq, layer, kv_head);
    int32_t n_sk = KS_MIN(s->n_sink, t->n_tok);
    if (n_sk == 0 || n_sk == t->n_tok || t->pos[n_sk] == t->pos[n_sk - 1] + 1)
        return kv_seq_spans(seq, layer, kv_head, out, max, n); /* nothing evicted yet */
    if (max < 2) {
        *n = t->n_blocks + 1;
        return KS_ERR_RANGE;
    }
    int rc = kv_head_table_spans(t, out + 1, max - 1, n);
    if (rc) {
        *n += 1;
        return rc;
    }
    const rope_params *rp = s->swa && s->swa[layer] ? &s->rope_swa : &s->rope;
    hy_head *hs = &s->heads[kv_head];
    if ((rc = hy_copy_sinks(s, hs, t, rp, n_sk, t->pos[n_sk]))) return rc;
    /* drop the sink rows from the table's spans (slot order) */
    int32_t w = 1, skip = n_sk;
    for (int32_t i = 1; i <= *n; i++) {
        attn_span sp = out[i];
        int32_t d = KS_MIN(skip, sp.n);
        skip -= d;
        if (d == sp.n) continue;
        sp.k = (const uint8_t *)sp.k + (size_t)d * s->rb;
        sp.v = (const uint8_t *)sp.v + (size_t)d * s->vb;
        sp.idx = sp.idx ? sp.idx + d : NULL;
        sp.n -= d;
        out[w++] = sp;
    }
    out[0] = (attn_span){.k = hs->k, .v = hs->v, .idx = t->idx, .n = n_sk};
    *n = w;
    return 0;
}

static int hy_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q, attn_span *out,
                    int32_t max, int32_t *n)
{
    hy_state *s = kv_seq_policy_state(seq);
    *n = 0;
    bool inside = q && q->n_q > 0 && q->q_idx[q->n_q - 1] < s->ctx;
    if (!s->keep_full[(size_t)layer * s->n_head_kv + kv_head])
        return hy_stream_spans(seq, s, layer, kv_head, out, max, n);
    /* inside the trained context, original positions: attention over everything, as full */
    if (!q || (inside && kv_rt_spilled_units(s->rt) == 0))
        return kv_seq_spans(seq, layer, kv_head, out, max, n);
    return kv_rt_spans(s->rt, seq, layer, kv_head, q, out, max, n);
}

static const kv_policy kv_policy_hybrid = {
    .name = "hybrid",
    .init = hy_init,
    .free = hy_free,
    .before_chunk = hy_before_chunk,
    .spans = hy_spans,
    .after_chunk = hy_after_chunk,
};

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */

#define HY_PARAM(key, type, lo, hi, def, help)                                                     \
    {                                                                                              \
#key, type, offsetof(hy_params, key), lo, hi, def, NULL, NULL, false, help                 \
    }

static const kv_param_desc hy_params_table[] = {
    HY_PARAM(n_sink, KV_PARAM_INT, 0, 1 << 20, 4,
             "first tokens every head keeps (attention sinks)"),
    HY_PARAM(window, KV_PARAM_INT, 1, 1 << 24, 64, "most recent tokens a streaming head keeps"),
    HY_PARAM(retrieval_window, KV_PARAM_INT, 1, 1 << 24, 512,
             "local window of a retrieval head (attended at true distances)"),
    HY_PARAM(block_tokens, KV_PARAM_INT, 8, 1024, 64,
             "tokens per retrieval block of a retrieval head (a power of two)"),
    HY_PARAM(top_k, KV_PARAM_INT, 1, 1 << 20, 8, "blocks a retrieval head reads per query"),
    HY_PARAM(chunk, KV_PARAM_INT, 1, 1 << 24, 512, "prefill chunk tokens"),
    {"ram_mb", KV_PARAM_I64, offsetof(hy_params, ram_mb), 1, 9.3e18, 512, NULL, NULL, true,
     "retrieval heads' RAM budget in MiB before their blocks spill to disk"},
    {"spill_dir", KV_PARAM_PATH, offsetof(hy_params, spill_dir), 0, 0, 0, "/tmp/kvserve-spill",
     NULL, true, "directory of the spill files (one per sequence, mode 0600)"},
    {"profile", KV_PARAM_PATH, offsetof(hy_params, profile), 0, 0, 0, HY_NO_PROFILE, NULL, true,
     "head-profile file from `kvserve profile-heads`; `none`: every head is a retrieval head "
     "(server-only: a request cannot make the server read a file)"},
};

/* Largest power of two <= x, clamped to [lo, hi]. */
static int32_t hy_pow2_clamp(int64_t x, int32_t lo, int32_t hi)
{
    int32_t v = lo;
    while (v < hi && (int64_t)v * 2 <= x)
        v *= 2;
    return v;
}

/* Everything scales with the trained context C. Streaming heads: C/32 sinks and a C/16 + 4
 * window (16 + 36 on kjv-tiny): with one retrieval head in eight the KV held at C is
 * 1/8 + 7/8 * 52/512 = 21.4% of full attention's, and the held-out perplexity at C is within
 * 2% of full's (window C/16: +2.0%, C/16 + 4: +1.6%, C/16 + 8: +1.3% but 25.4% of the KV
 * after a 465-token passkey prompt, README). Retrieval heads
 * as `retrieval` derives them: window C/2 and chunk C/4 keep every distance below 3C/4 + the
 * sinks, blocks of C/32 tokens, top_k blocks covering 2C tokens. */
static void hy_derive(void *params, uint64_t set, const kv_model_info *info)
{
    hy_params *p = params;
    const kv_policy_desc *d = &kv_policy_desc_hybrid;
    int64_t c = kv_model_ctx(info);
    if (!kv_param_was_set(d, set, "n_sink")) p->n_sink = (int32_t)KS_MAX(1, c / 32);
    if (!kv_param_was_set(d, set, "window")) p->window = (int32_t)KS_MAX(8, c / 16 + 4);
    if (!kv_param_was_set(d, set, "retrieval_window"))
        p->retrieval_window = (int32_t)KS_MAX(16, c / 2);
    if (!kv_param_was_set(d, set, "chunk")) p->chunk = (int32_t)KS_MAX(8, c / 4);
    if (!kv_param_was_set(d, set, "block_tokens")) p->block_tokens = hy_pow2_clamp(c / 32, 8, 128);
    if (!kv_param_was_set(d, set, "top_k")) p->top_k = (int32_t)KS_MAX(4, 2 * c / p->block_tokens);
}

static const kv_param_rule hy_rules[] = {
    {"n_sink", "context_length / 32"},
    {"window", "context_length / 16 + 4"},
    {"retrieval_window", "context_length / 2"},
    {"chunk", "context_length / 4"},
    {"block_tokens", "power of two <= context_length / 32, in 8..128"},
    {"top_k", "2 * context_length / block_tokens"},
    {NULL, NULL}};

/* Block size a power of two; a named profile must exist and parse (its shape is checked
 * against the model when a sequence starts). */
static int hy_validate(const void *params, const char *table, ks_diag *d)
{
    const hy_params *p = params;
    char key[96];
    snprintf(key, sizeof(key), "%s.block_tokens", table);
    if ((p->block_tokens & (p->block_tokens - 1)) != 0)
        return ks_diag_key(d, KS_ERR_RANGE, key, "%d must be a power of two in 8..1024",
                           p->block_tokens);
    if (strcmp(p->profile, HY_NO_PROFILE) == 0) return KS_OK;
    kv_head_profile hp;
    ks_diag pd;
    int rc = kv_head_profile_load(p->profile, &hp, &pd);
    if (!rc) {
        kv_head_profile_free(&hp);
        return KS_OK;
    }
    snprintf(key, sizeof(key), "%s.profile", table);
    return ks_diag_key(d, rc == KS_ERR_RANGE ? KS_ERR_RANGE : KS_ERR_INVALID, key, "%.400s",
                       pd.msg);
}

/* The larger of the two kinds of table: a streaming head holds sinks + window + the chunk
 * going in; a retrieval head as `retrieval` bounds it (sinks, window, chunk and the retrieved
 * blocks; older blocks spill when the pool runs short). */
static int64_t hy_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                            int32_t *dense_layers)
{
    const hy_params *p = params;
    (void)n_tokens;
    (void)n_layer;
    (void)dense_layers;
    int64_t stream = (int64_t)p->n_sink + p->window + chunk;
    int64_t rt =
        (int64_t)p->n_sink + p->retrieval_window + chunk + (int64_t)p->top_k * p->block_tokens;
    return KS_MAX(stream, rt);
}

/* The retrieval heads' window + chunk must stay inside the trained context. */
static int32_t hy_prefill_chunk(const void *params, int32_t chunk)
{
    const hy_params *p = params;
    return KS_MIN(chunk, p->chunk);
}

/* Spill files left by a crashed kvserve go before any sequence can create new ones. */
static int hy_server_start(const void *params)
{
    const hy_params *p = params;
    return kv_rt_cleanup_stale(p->spill_dir);
}

const kv_policy_desc kv_policy_desc_hybrid = {
    .name = "hybrid",
    .summary = "Retrieval heads (from a head profile) keep every token and read the sinks, the "
               "top-k blocks and a window at window positions; the other heads keep sinks + a "
               "recent window.",
    .reference = "Retrieval heads (Wu et al., arXiv:2404.15574), DuoAttention (Xiao et al., "
                 "arXiv:2410.10819), InfLLM (Xiao et al., arXiv:2402.04617)",
    .ops = &kv_policy_hybrid,
    .params_table = hy_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(hy_params_table),
    .params_size = sizeof(hy_params),
    .validate = hy_validate,
    .admission = hy_admission,
    .prefill_chunk = hy_prefill_chunk,
    .server_start = hy_server_start,
    .derive = hy_derive,
    .rules = hy_rules,
};

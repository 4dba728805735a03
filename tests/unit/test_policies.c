/* test_policies.c - the KV compression policies: sink_window, snapkv, pyramid, h2o.
 *
 * A small rig drives a policy through the kvcache API exactly as core/model.c does (chunk
 * begin, append rotated keys, spans, mass queries, attn_forward with key_mass on the last
 * queries, attn_done, chunk end) with deterministic pseudo-random q/k/v. References are
 * independent: the PyramidKV budget vectors of KVCache-Factory's integer arithmetic; a naive
 * selection that builds the full attention matrix in double precision; keys recomputed at
 * their new RoPE position; and the `full` policy driven the same way. Every test ends with a
 * clean teardown (pool empty).
 */
#include <check.h>

#include "check_main.h"
#include "policy_params.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"

enum { HD = 16, BT = 8, MAXN = 8192 };

/* ---------------------------------------------------------------------------------------- */
/* Deterministic data                                                                        */

enum { KIND_Q = 1, KIND_K = 2, KIND_V = 3 };

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Raw (unrotated) element d of vector `kind` of token idx in (layer, head). */
static float raw_val(int kind, int32_t idx, int32_t layer, int32_t head, int32_t d)
{
    uint64_t h = mix64((uint64_t)kind);
    h = mix64(h ^ (uint64_t)(uint32_t)idx);
    h = mix64(h ^ ((uint64_t)(uint32_t)layer << 16) ^ ((uint64_t)(uint32_t)head << 8) ^
              (uint64_t)d);
    float u = (float)((h >> 40) & 0xFFFFFF) / (float)0xFFFFFF * 2.0f - 1.0f;
    return kind == KIND_Q ? 3.0f * u : u;
}

static const rope_params kRope = {
    .kind = ROPE_NORM, .head_dim = HD, .theta = 10000.0f, .freq_scale = 1.0f};

/* A model whose layer 1 is a sliding-window layer with its own rope (gemma3), with a
 * magnitude scale (Phi-3.5 attn_factor) that re-positioning must not apply twice. */
static bool g_two_ropes;
static const rope_params kRopeSwa = {
    .kind = ROPE_NORM, .head_dim = HD, .theta = 100.0f, .freq_scale = 1.0f, .attn_factor = 1.25f};
static const int32_t kWindows[2] = {0, 1000};

static void vec_at(int kind, int32_t idx, int32_t layer, int32_t head, int32_t pos, float *out)
{
    for (int32_t d = 0; d < HD; d++)
        out[d] = raw_val(kind, idx, layer, head, d);
    if (kind != KIND_V)
        rope_rotate_pos(g_two_ropes && layer == 1 ? &kRopeSwa : &kRope, out, 1, (float)pos);
}

/* ---------------------------------------------------------------------------------------- */
/* The rig: drives a sequence like core/model.c                                              */

typedef struct rig {
    kv_pool *pool;
    kv_seq *seq;
    int32_t n_layer, n_head_kv, n_group;
    attn_scratch *as;
    attn_span *spans;
    int32_t cap_spans;
    float *mass;
} rig;

static void rig_open(rig *r, const char *policy, const kv_policy_config *pc, int32_t n_layer,
                     int32_t n_head_kv, int32_t n_group, ks_dtype dt, int64_t n_blocks)
{
    memset(r, 0, sizeof(*r));
    r->n_layer = n_layer;
    r->n_head_kv = n_head_kv;
    r->n_group = n_group;
    size_t el = dt == KS_DTYPE_F32 ? 4 : 2;
    kv_pool_params pp = {.budget_bytes = (size_t)n_blocks * 2 * BT * HD * el,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = dt,
                         .v_dtype = dt};
    ck_assert_int_eq(kv_pool_create(&pp, &r->pool), 0);
    kv_policy_args args = {.config = pc,
                           .rope = kRope,
                           .n_layer = n_layer,
                           .n_head_kv = n_head_kv,
                           .head_dim = HD,
                           .n_ctx_train = 512};
    if (g_two_ropes) {
        args.rope_swa = kRopeSwa;
        args.layer_window = kWindows;
    }
    const kv_policy *pol = kv_policy_find(policy);
    ck_assert_ptr_nonnull(pol);
    kv_seq_params sp = {
        .n_layer = n_layer, .n_head_kv = n_head_kv, .policy = pol, .policy_config = &args};
    ck_assert_int_eq(kv_seq_create(r->pool, &sp, &r->seq), 0);
    ck_assert_int_eq(attn_scratch_create(HD, n_group, 1024, &r->as), 0);
    r->mass = malloc((size_t)MAXN * n_group * sizeof(float));
    ck_assert_ptr_nonnull(r->mass);
}

static void rig_close(rig *r)
{
    kv_seq_destroy(r->seq);
    ck_assert_uint_eq(kv_pool_bytes_used(r->pool), 0);
    kv_pool_destroy(r->pool);
    attn_scratch_destroy(r->as);
    free(r->spans);
    free(r->mass);
}

static void rig_attend(rig *r, const attn_span *sp, int32_t n_sp, const float *q,
                       const int32_t *idx, int32_t q0, int32_t q1, float *out, bool mass)
{
    int32_t qs = r->n_head_kv * r->n_group * HD;
    attn_params p = {.n_q = q1 - q0,
                     .n_group = r->n_group,
                     .head_dim = HD,
                     .scale = 1.0f / sqrtf((float)HD),
                     .k_dtype = kv_pool_k_dtype(r->pool),
                     .v_dtype = kv_pool_v_dtype(r->pool),
                     .q = q + (size_t)q0 * qs,
                     .q_tok_stride = qs,
                     .q_idx = idx + q0,
                     .out = out + (size_t)q0 * qs,
                     .out_tok_stride = qs,
                     .key_mass = mass ? r->mass : NULL};
    if (q1 > q0) ck_assert_int_eq(attn_forward(&p, sp, n_sp, r->as), 0);
}

/* One chunk of n_new tokens. attend_all = false skips the queries without key mass (cheap
 * prefill of long prompts). split >= 0 forces how many last queries run with key mass (to
 * drive `full` with the numerics of another policy); the policy's count is returned.
 * out (optional): [n_layer][n_new][n_head * HD] attention outputs. */
static int32_t rig_chunk(rig *r, int32_t n_new, bool prefill, bool last, bool attend_all,
                         int32_t split, float *out)
{
    int32_t seen = (int32_t)kv_seq_tokens_seen(r->seq);
    int32_t *idx = malloc((size_t)n_new * sizeof(int32_t));
    int32_t *pos = malloc((size_t)n_new * sizeof(int32_t));
    int32_t nkv = r->n_head_kv, nq = nkv * r->n_group, m_policy = -1;
    float *k = malloc((size_t)n_new * nkv * HD * sizeof(float));
    float *v = malloc((size_t)n_new * nkv * HD * sizeof(float));
    float *q = malloc((size_t)n_new * nq * HD * sizeof(float));
    float *o = calloc((size_t)n_new * nq * HD, sizeof(float));
    for (int32_t i = 0; i < n_new; i++)
        idx[i] = seen + i;
    kv_chunk ch = {.n_new = n_new, .idx = idx, .prefill = prefill, .prefill_last = last};
    ck_assert_int_eq(kv_seq_chunk_begin(r->seq, &ch, pos), 0);
    for (int32_t l = 0; l < r->n_layer; l++) {
        for (int32_t i = 0; i < n_new; i++) {
            for (int32_t h = 0; h < nkv; h++) {
                vec_at(KIND_K, idx[i], l, h, pos[i], k + ((size_t)i * nkv + h) * HD);
                vec_at(KIND_V, idx[i], l, h, pos[i], v + ((size_t)i * nkv + h) * HD);
            }
            for (int32_t h = 0; h < nq; h++)
                vec_at(KIND_Q, idx[i], l, h, pos[i], q + ((size_t)i * nq + h) * HD);
        }
        ck_assert_int_eq(kv_seq_append(r->seq, l, n_new, k, v, idx, pos), 0);
        for (int32_t h = 0; h < nkv; h++) {
            const float *qh = q + (size_t)h * r->n_group * HD;
            kv_query kq = {.chunk = &ch,
                           .n_q = n_new,
                           .q_idx = idx,
                           .q = qh,
                           .q_tok_stride = nq * HD,
                           .n_group = r->n_group,
                           .head_dim = HD};
            int32_t n_sp = 0;
            int rc = kv_seq_attn_spans(r->seq, l, h, &kq, r->spans, r->cap_spans, &n_sp);
            if (rc == KS_ERR_RANGE) {
                r->cap_spans = n_sp * 2;
                r->spans = realloc(r->spans, (size_t)r->cap_spans * sizeof(attn_span));
                rc = kv_seq_attn_spans(r->seq, l, h, &kq, r->spans, r->cap_spans, &n_sp);
            }
            ck_assert_int_eq(rc, 0);
            int32_t m = kv_seq_mass_queries(r->seq, l, h, &kq);
            ck_assert(m_policy < 0 || m_policy == m);
            m_policy = m;
            int32_t mm = split >= 0 ? KS_MIN(split, n_new) : m, n_keys = 0;
            for (int32_t i = 0; i < n_sp; i++)
                n_keys += r->spans[i].n;
            ck_assert_int_le(n_keys, MAXN);
            memset(r->mass, 0, (size_t)n_keys * r->n_group * sizeof(float));
            float *oh = o + (size_t)h * r->n_group * HD;
            if (attend_all) rig_attend(r, r->spans, n_sp, qh, idx, 0, n_new - mm, oh, false);
            rig_attend(r, r->spans, n_sp, qh, idx, n_new - mm, n_new, oh, true);
            if (m > 0)
                ck_assert_int_eq(kv_seq_attn_done(r->seq, l, h, &kq, r->spans, n_sp, r->mass, m),
                                 0);
        }
        if (out)
            memcpy(out + (size_t)l * n_new * nq * HD, o, (size_t)n_new * nq * HD * sizeof(float));
    }
    ck_assert_int_eq(kv_seq_chunk_end(r->seq, &ch), 0);
    free(idx);
    free(pos);
    free(k);
    free(v);
    free(q);
    free(o);
    return m_policy;
}

static void rig_prompt(rig *r, const int32_t *chunks, int32_t n_chunks, bool attend_all)
{
    for (int32_t c = 0; c < n_chunks; c++)
        rig_chunk(r, chunks[c], true, c == n_chunks - 1, attend_all || c == n_chunks - 1, -1, NULL);
}

/* Memory: every table holds at most one partly filled block more than it needs, and the
 * pool holds exactly the sequence's blocks (freed blocks went back at once). */
static void check_blocks(rig *r)
{
    int64_t blocks = 0;
    for (int32_t l = 0; l < r->n_layer; l++)
        for (int32_t h = 0; h < r->n_head_kv; h++) {
            const kv_head_table *t = kv_seq_table(r->seq, l, h);
            ck_assert_int_le(t->n_blocks, (t->n_tok + BT - 1) / BT + 1);
            blocks += t->n_blocks;
        }
    kv_pool_stats st;
    kv_pool_get_stats(r->pool, &st);
    ck_assert_int_eq(st.blocks_used, blocks);
}

static kv_policy_config config_defaults(void)
{
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    return pc;
}

/* ---------------------------------------------------------------------------------------- */
/* Naive SnapKV / PyramidKV selection                                                        */

/* Attention probabilities (double) of query (q_idx, query head hq) over keys[0..n) (sequence
 * indices; positions = pos[]); keys above q_idx are masked. Adds them to acc[0..n). */
static void naive_probs(int32_t q_idx, int32_t q_pos, int32_t layer, int32_t kv_head, int32_t hq,
                        const int32_t *keys, const int32_t *kpos, int32_t n, double *acc)
{
    float qv[HD], kv[HD];
    vec_at(KIND_Q, q_idx, layer, hq, q_pos, qv);
    double *s = malloc((size_t)n * sizeof(double)), mx = -INFINITY, sum = 0;
    for (int32_t j = 0; j < n; j++) {
        s[j] = -INFINITY;
        if (keys[j] > q_idx) continue;
        vec_at(KIND_K, keys[j], layer, kv_head, kpos[j], kv);
        double d = 0;
        for (int32_t e = 0; e < HD; e++)
            d += (double)qv[e] * kv[e];
        s[j] = d / sqrt((double)HD);
        mx = fmax(mx, s[j]);
    }
    for (int32_t j = 0; j < n; j++)
        sum += keys[j] > q_idx ? 0 : exp(s[j] - mx);
    for (int32_t j = 0; j < n; j++)
        acc[j] += keys[j] > q_idx ? 0 : exp(s[j] - mx) / sum;
    free(s);
}

/* Checks that `kept` (sequence indices, ascending) is SnapKV's choice of `target` tokens out
 * of the cache keys[0..n) (original positions), voted by the queries win_q[0..w). */
static void check_snap_choice(int32_t layer, int32_t kv_head, int32_t n_group, const int32_t *keys,
                              int32_t n, const int32_t *win_q, int32_t w, int32_t kernel,
                              kv_pooling pool, kv_reduce red, int32_t target, const int32_t *kept,
                              int32_t n_kept)
{
    ck_assert_int_eq(n_kept, KS_MIN(n, target));
    if (n <= target) {
        for (int32_t j = 0; j < n; j++)
            ck_assert_int_eq(kept[j], keys[j]);
        return;
    }
    int32_t nc = n - w, k = target - w;
    double *sc = calloc((size_t)n_group * n, sizeof(double));
    double *fin = calloc((size_t)nc, sizeof(double));
    for (int32_t g = 0; g < n_group; g++)
        for (int32_t i = 0; i < w; i++)
            naive_probs(win_q[i], win_q[i], layer, kv_head, kv_head * n_group + g, keys, keys, n,
                        sc + (size_t)g * n);
    for (int32_t j = 0; j < nc; j++) {
        for (int32_t g = 0; g < n_group; g++) {
            double v = pool == KV_POOL_MAX ? -INFINITY : 0;
            for (int32_t i = j - kernel / 2; i <= j + kernel / 2; i++) {
                if (i < 0 || i >= nc) continue;
                v = pool == KV_POOL_MAX ? fmax(v, sc[(size_t)g * n + i])
                                        : v + sc[(size_t)g * n + i];
            }
            if (pool == KV_POOL_AVG) v /= kernel;
            fin[j] = red == KV_REDUCE_MAX ? (g == 0 ? v : fmax(fin[j], v)) : fin[j] + v / n_group;
        }
    }
    /* The window is kept; the rest is a top-k of fin (ties within float rounding allowed). */
    for (int32_t i = 0; i < w; i++)
        ck_assert_int_eq(kept[k + i], keys[nc + i]);
    bool *is_kept = calloc((size_t)nc, 1);
    for (int32_t i = 0, j = 0; i < k; i++) {
        while (j < nc && keys[j] != kept[i])
            j++;
        ck_assert_int_lt(j, nc);
        is_kept[j] = true;
    }
    double min_kept = INFINITY, max_dropped = -INFINITY;
    for (int32_t j = 0; j < nc; j++) {
        if (is_kept[j])
            min_kept = fmin(min_kept, fin[j]);
        else
            max_dropped = fmax(max_dropped, fin[j]);
    }
    ck_assert_msg(min_kept >= max_dropped - 1e-6, "layer %d head %d: kept %g < dropped %g", layer,
                  kv_head, min_kept, max_dropped);
    free(is_kept);
    free(sc);
    free(fin);
}

static void kept_of(rig *r, int32_t l, int32_t h, int32_t **out, int32_t *n)
{
    const kv_head_table *t = kv_seq_table(r->seq, l, h);
    *n = t->n_tok;
    *out = malloc((size_t)KS_MAX(t->n_tok, 1) * sizeof(int32_t));
    memcpy(*out, t->idx, (size_t)t->n_tok * sizeof(int32_t));
    for (int32_t i = 0; i < t->n_tok; i++)
        ck_assert_int_eq(t->pos[i], t->idx[i]);
}

/* ---------------------------------------------------------------------------------------- */
/* PyramidKV budget schedule                                                                 */

START_TEST(test_pyramid_schedule_reference)
{
    /* KVCache-Factory, C = 128, w = 8, L = 32, prompt 7500: min = 120 // 20 = 6,
     * max = 240 - 6 = 234, steps = 228 // 31 = 7; layer l keeps 234 - 7 l + 8. */
    kv_policy_config pc = config_defaults();
    pseti(&pc, "pyramid", "budget", 128);
    pseti(&pc, "pyramid", "window", 8);
    pset(&pc, "pyramid", "compress_at", "prompt_end");
    rig r;
    rig_open(&r, "pyramid", &pc, 32, 1, 1, KS_DTYPE_F16, 32 * (7500 / BT + 2));
    int32_t chunks[] = {1000, 1000, 1000, 1000, 1000, 1000, 1000, 492, 8};
    rig_prompt(&r, chunks, 9, false);
    ck_assert_int_eq(kv_seq_tokens_kept(r.seq, 0), 242);
    ck_assert_int_eq(kv_seq_tokens_kept(r.seq, 1), 235);
    ck_assert_int_eq(kv_seq_tokens_kept(r.seq, 31), 25);
    for (int32_t l = 0; l < 32; l++)
        ck_assert_int_eq(kv_seq_tokens_kept(r.seq, l), 242 - 7 * l);
    check_blocks(&r);
    rig_close(&r);
}
END_TEST

/* Fallbacks and the fraction budget on a 4-layer model (expected values worked by hand with
 * the same integer arithmetic). */
START_TEST(test_pyramid_schedule_fallbacks)
{
    struct {
        int32_t n, budget;
        double frac;
        int32_t want[4];
    } cases[] = {
        {50, 64, 0, {50, 50, 50, 50}},      /* n < C: keep everything */
        {100, 64, 0, {64, 64, 64, 64}},     /* n < 2(C - w) = 112: uniform SnapKV */
        {300, 64, 0, {118, 82, 46, 10}},    /* min 2, max 110, steps 36 */
        {300, 64, 0.25, {139, 97, 55, 13}}, /* C = 75: min 3, max 131, steps 42 */
        {115, 64, 0, {115, 81, 47, 13}},    /* clamp: max = n - w = 107, min 5, steps 34 */
    };
    for (size_t c = 0; c < KS_ARRAY_LEN(cases); c++) {
        kv_policy_config pc = config_defaults();
        pseti(&pc, "pyramid", "budget", cases[c].budget);
        pseti(&pc, "pyramid", "window", 8);
        psetf(&pc, "pyramid", "budget_fraction", cases[c].frac);
        pset(&pc, "pyramid", "compress_at", "prompt_end");
        rig r;
        rig_open(&r, "pyramid", &pc, 4, 1, 1, KS_DTYPE_F32, 4 * (cases[c].n / BT + 2));
        int32_t chunks[] = {cases[c].n - 8, 8};
        rig_prompt(&r, chunks, 2, false);
        for (int32_t l = 0; l < 4; l++)
            ck_assert_msg(kv_seq_tokens_kept(r.seq, l) == cases[c].want[l],
                          "case %zu layer %d: kept %lld want %d", c, l,
                          (long long)kv_seq_tokens_kept(r.seq, l), cases[c].want[l]);
        rig_close(&r);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Selection equals the naive implementation                                                 */

typedef struct snap_case {
    const char *policy;
    int32_t chunks[6], n_chunks;
    int32_t kernel;
    kv_pooling pool;
    kv_reduce red;
    int32_t want[2]; /* per-layer targets (by hand: SnapKV C; PyramidKV schedule) */
} snap_case;

static const snap_case kSnapCases[] = {
    /* the window straddles chunks: last chunk of 2 < w = 8, 6 queries are replayed */
    {"snapkv", {37, 37, 37, 37, 2}, 5, 5, KV_POOL_MAX, KV_REDUCE_MEAN, {40, 40}},
    {"snapkv", {50, 50, 50}, 3, 7, KV_POOL_AVG, KV_REDUCE_MAX, {40, 40}},
    /* C = 40, w = 8, n = 150, L = 2: min 32 // 20 = 1, max 63, steps 62: 71 and 9 */
    {"pyramid", {100, 45, 5}, 3, 7, KV_POOL_MAX, KV_REDUCE_MEAN, {71, 9}},
};

START_TEST(test_snap_selection_naive)
{
    const snap_case *c = &kSnapCases[_i];
    const int32_t w = 8, C = 40, n = 150, interval = 5;
    kv_policy_config pc = config_defaults();
    for (int k = 0; k < 2; k++) {
        const char *pol = k ? "pyramid" : "snapkv";
        pseti(&pc, pol, "budget", C);
        pseti(&pc, pol, "window", w);
        pseti(&pc, pol, "kernel", c->kernel);
        pset(&pc, pol, "pooling", kv_pooling_names[c->pool]);
        pset(&pc, pol, "reduce", kv_reduce_names[c->red]);
        pseti(&pc, pol, "interval", interval);
        pset(&pc, pol, "compress_at", "prompt_end"); /* SnapKV's original timing */
    }
    pseti(&pc, "pyramid", "beta", 20);
    rig r;
    rig_open(&r, c->policy, &pc, 2, 2, 2, KS_DTYPE_F32, 400);
    rig_prompt(&r, c->chunks, c->n_chunks, true);
    int32_t keys[n], win[8];
    for (int32_t j = 0; j < n; j++)
        keys[j] = j;
    for (int32_t i = 0; i < w; i++)
        win[i] = n - w + i;
    int32_t *prev[2][2], n_prev[2][2];
    for (int32_t l = 0; l < 2; l++)
        for (int32_t h = 0; h < 2; h++) {
            kept_of(&r, l, h, &prev[l][h], &n_prev[l][h]);
            check_snap_choice(l, h, 2, keys, n, win, w, c->kernel, c->pool, c->red, c->want[l],
                              prev[l][h], n_prev[l][h]);
        }
    check_blocks(&r);

    /* Generation: `interval` tokens later every head is re-compressed to its target, voted by
     * the last w queries (5 generated + 3 prompt tokens) over what was cached. */
    for (int32_t i = 0; i < interval; i++)
        rig_chunk(&r, 1, false, false, true, -1, NULL);
    for (int32_t i = 0; i < w; i++)
        win[i] = n + interval - w + i;
    for (int32_t l = 0; l < 2; l++)
        for (int32_t h = 0; h < 2; h++) {
            int32_t cache[256], nc = 0, *now, n_now;
            for (int32_t i = 0; i < n_prev[l][h]; i++)
                cache[nc++] = prev[l][h][i];
            for (int32_t i = 0; i < interval; i++)
                cache[nc++] = n + i;
            kept_of(&r, l, h, &now, &n_now);
            check_snap_choice(l, h, 2, cache, nc, win, w, c->kernel, c->pool, c->red, c->want[l],
                              now, n_now);
            free(now);
            free(prev[l][h]);
        }
    check_blocks(&r);
    rig_close(&r);
}
END_TEST

/* Deferred compression (compress_at = first_token, the default): the prompt stays whole until
 * the first generated token has run; then the selection equals the naive one voted by the
 * last w queries, that token included, over the prompt and that token. */
START_TEST(test_snap_deferred_naive)
{
    const snap_case *c = &kSnapCases[_i];
    const int32_t w = 8, C = 40, n = 150;
    kv_policy_config pc = config_defaults();
    for (int k = 0; k < 2; k++) {
        const char *pol = k ? "pyramid" : "snapkv";
        pseti(&pc, pol, "budget", C);
        pseti(&pc, pol, "window", w);
        pseti(&pc, pol, "kernel", c->kernel);
        pset(&pc, pol, "pooling", kv_pooling_names[c->pool]);
        pset(&pc, pol, "reduce", kv_reduce_names[c->red]);
        ck_assert_str_eq(pget(&pc, pol, "compress_at"), "first_token");
    }
    rig r;
    rig_open(&r, c->policy, &pc, 2, 2, 2, KS_DTYPE_F32, 400);
    rig_prompt(&r, c->chunks, c->n_chunks, true);
    for (int32_t l = 0; l < 2; l++) /* nothing selected yet */
        ck_assert_int_eq(kv_seq_tokens_kept(r.seq, l), 2 * n);
    rig_chunk(&r, 1, false, false, true, -1, NULL);
    int32_t keys[n + 1], win[8];
    for (int32_t j = 0; j <= n; j++)
        keys[j] = j;
    for (int32_t i = 0; i < w; i++)
        win[i] = n + 1 - w + i;
    for (int32_t l = 0; l < 2; l++)
        for (int32_t h = 0; h < 2; h++) {
            int32_t *now, n_now;
            kept_of(&r, l, h, &now, &n_now);
            ck_assert_int_eq(now[n_now - 1], n); /* the generated token is in the window */
            check_snap_choice(l, h, 2, keys, n + 1, win, w, c->kernel, c->pool, c->red, c->want[l],
                              now, n_now);
            free(now);
        }
    check_blocks(&r);
    rig_close(&r);
}
END_TEST

/* A prompt longer than `hold` never waits for a decode token: each chunk that takes the
 * tables past hold is compressed at once, so a table never holds more than hold + one chunk,
 * which is the admission bound the descriptor reports. */
START_TEST(test_snap_hold_bounds_prompt)
{
    const char *pol = _i ? "pyramid" : "snapkv";
    const int32_t hold = 100, chunk = 50, n_chunks = 8;
    kv_policy_config pc = config_defaults();
    pseti(&pc, pol, "budget", 40);
    pseti(&pc, pol, "hold", hold);
    rig r;
    rig_open(&r, pol, &pc, 2, 2, 2, KS_DTYPE_F32, 400);
    for (int32_t c = 0; c < n_chunks; c++) {
        rig_chunk(&r, chunk, true, c == n_chunks - 1, true, -1, NULL);
        for (int32_t l = 0; l < 2; l++)
            ck_assert_int_le(kv_seq_tokens_kept(r.seq, l), 2 * (hold + chunk));
        check_blocks(&r);
    }
    ck_assert_int_gt(kv_seq_tokens_kept(r.seq, 0), 2 * 40); /* the prompt's end waits */
    rig_chunk(&r, 1, false, false, true, -1, NULL);
    ck_assert_int_le(kv_seq_tokens_kept(r.seq, 1), 2 * 40);
    rig_close(&r);
    const kv_policy_desc *d = kv_policy_desc_find(pol);
    int32_t dense = 0;
    ck_assert_int_eq(d->admission(kv_policy_config_params(&pc, d), 401, chunk, 2, &dense),
                     hold + chunk);
    ck_assert_int_eq(d->admission(kv_policy_config_params(&pc, d), 120, chunk, 2, &dense), 120);
    pseti(&pc, pol, "hold", 0); /* 0: the whole prompt is held */
    ck_assert_int_eq(d->admission(kv_policy_config_params(&pc, d), 401, chunk, 2, &dense), 401);
}
END_TEST

/* h2o's deferred mode: the prompt is held up to `hold` (a chunk taking a table past it is
 * evicted at once), the first eviction waits for the first generated token, then every chunk
 * is evicted back to the budget with the sinks kept; admission counts the held prompt. */
START_TEST(test_h2o_deferred_hold)
{
    const int32_t budget = 40, hold = 100, chunk = 50, n_chunks = 8, n_sink = 4;
    kv_policy_config pc = config_defaults();
    pseti(&pc, "h2o", "heavy", budget / 2); /* set both: the raw table admission reads */
    pseti(&pc, "h2o", "recent", budget / 2);
    pseti(&pc, "h2o", "hold", hold);
    pseti(&pc, "h2o", "n_sink", n_sink);
    rig r;
    rig_open(&r, "h2o", &pc, 2, 2, 2, KS_DTYPE_F32, 400);
    for (int32_t c = 0; c < n_chunks; c++) {
        rig_chunk(&r, chunk, true, c == n_chunks - 1, true, -1, NULL);
        for (int32_t l = 0; l < 2; l++)
            ck_assert_int_le(kv_seq_tokens_kept(r.seq, l), 2 * (hold + chunk));
        check_blocks(&r);
    }
    ck_assert_int_gt(kv_seq_tokens_kept(r.seq, 0), 2 * budget); /* the prompt's end waits */
    for (int32_t g = 0; g < 5; g++) {
        rig_chunk(&r, 1, false, false, true, -1, NULL);
        for (int32_t l = 0; l < 2; l++) {
            ck_assert_int_eq(kv_seq_tokens_kept(r.seq, l), 2 * budget);
            for (int32_t h = 0; h < 2; h++) {
                const kv_head_table *t = kv_seq_table(r.seq, l, h);
                for (int32_t i = 0; i < n_sink; i++)
                    ck_assert_int_eq(t->idx[i], i);                           /* the sinks stay */
                ck_assert_int_eq(t->idx[t->n_tok - 1], n_chunks * chunk + g); /* and the new */
            }
        }
        check_blocks(&r);
    }
    rig_close(&r);
    const kv_policy_desc *d = kv_policy_desc_find("h2o");
    int32_t dense = 0;
    const void *par = kv_policy_config_params(&pc, d);
    ck_assert_int_eq(d->admission(par, 401, chunk, 2, &dense), hold + chunk);
    ck_assert_int_eq(d->admission(par, 70, chunk, 2, &dense), budget + chunk);
    pset(&pc, "h2o", "mode", "original"); /* greedy from the first chunk: heavy + recent */
    ck_assert_int_eq(d->admission(kv_policy_config_params(&pc, d), 401, chunk, 2, &dense),
                     budget + chunk);
}
END_TEST

/* H2O against a naive simulation: every query's attention is added to each cached key's
 * score; after each chunk the newest `recent` keys and the `heavy` best older ones stay. */
START_TEST(test_h2o_naive)
{
    const int32_t heavy = 12, recent = 10, n_group = 2;
    kv_policy_config pc = config_defaults();
    pseti(&pc, "h2o", "heavy", heavy);
    pseti(&pc, "h2o", "recent", recent);
    pset(&pc, "h2o", "mode", "original");
    rig r;
    rig_open(&r, "h2o", &pc, 2, 2, n_group, KS_DTYPE_F32, 200);
    int32_t sizes[] = {15, 13, 9, 1, 1, 1, 1, 1, 1, 1, 1};
    int32_t n_sizes = (int32_t)KS_ARRAY_LEN(sizes);
    /* Naive state per (layer, head): the cached keys and their scores. */
    int32_t cache[2][2][128], n_cache[2][2] = {{0}};
    double score[2][2][128];
    int32_t seen = 0;
    for (int32_t c = 0; c < n_sizes; c++) {
        bool prefill = c < 3;
        rig_chunk(&r, sizes[c], prefill, c == 2, true, -1, NULL);
        for (int32_t l = 0; l < 2; l++)
            for (int32_t h = 0; h < 2; h++) {
                int32_t *keys = cache[l][h], *nk = &n_cache[l][h];
                double *sc = score[l][h];
                for (int32_t i = 0; i < sizes[c]; i++) {
                    keys[*nk] = seen + i;
                    sc[(*nk)++] = 0;
                }
                for (int32_t i = 0; i < sizes[c]; i++)
                    for (int32_t g = 0; g < n_group; g++)
                        naive_probs(seen + i, seen + i, l, h, h * n_group + g, keys, keys, *nk, sc);
                const kv_head_table *t = kv_seq_table(r.seq, l, h);
                ck_assert_int_eq(t->n_tok, KS_MIN(*nk, heavy + recent));
                if (*nk > heavy + recent) {
                    /* the recent ones are kept; the others are a top-heavy by score */
                    int32_t nc = *nk - recent;
                    for (int32_t i = 0; i < recent; i++)
                        ck_assert_int_eq(t->idx[heavy + i], keys[nc + i]);
                    double min_kept = INFINITY, max_dropped = -INFINITY;
                    int32_t w = 0;
                    for (int32_t j = 0; j < nc; j++) {
                        bool kept = false;
                        for (int32_t i = 0; i < heavy; i++)
                            kept |= t->idx[i] == keys[j];
                        if (kept) {
                            min_kept = fmin(min_kept, sc[j]);
                            keys[w] = keys[j];
                            sc[w++] = sc[j];
                        } else {
                            max_dropped = fmax(max_dropped, sc[j]);
                        }
                    }
                    ck_assert_int_eq(w, heavy);
                    ck_assert(min_kept >= max_dropped - 1e-6);
                    for (int32_t i = 0; i < recent; i++) {
                        keys[w] = keys[nc + i];
                        sc[w++] = sc[nc + i];
                    }
                    *nk = w;
                }
                for (int32_t j = 0; j < *nk; j++)
                    ck_assert_int_eq(t->idx[j], keys[j]);
            }
        seen += sizes[c];
        check_blocks(&r);
    }
    rig_close(&r);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* sink_window                                                                               */

/* Expected kept sequence indices after a chunk, by the StreamingLLM rule. */
static int32_t sw_expect(int32_t *keys, int32_t n, int32_t n_new, int32_t seen, int32_t n_sink,
                         int32_t window)
{
    int32_t out[4096], m = 0;
    if (n + n_new > n_sink + window) {
        int32_t sinks = KS_MIN(n_sink, n), rec = KS_MIN(KS_MAX(0, window - n_new), n - sinks);
        for (int32_t i = 0; i < sinks; i++)
            out[m++] = keys[i];
        for (int32_t i = n - rec; i < n; i++)
            out[m++] = keys[i];
    } else {
        for (int32_t i = 0; i < n; i++)
            out[m++] = keys[i];
    }
    for (int32_t i = 0; i < n_new; i++)
        out[m++] = seen + i;
    if (m > n_sink + window) { /* a chunk longer than the window is trimmed after it */
        int32_t k = 0;
        for (int32_t i = 0; i < m; i++)
            if (i < n_sink || i >= m - window) out[k++] = out[i];
        m = k;
    }
    memcpy(keys, out, (size_t)m * sizeof(int32_t));
    return m;
}

START_TEST(test_sink_window_compact)
{
    /* _i = 0: compact positions, f32; 1: original positions; 2: n_sink = 0 (plain window);
     * 3: compact positions with a window layer that has its own rope and attn_factor */
    const int32_t n_sink = _i == 2 ? 0 : 4, window = 28;
    g_two_ropes = _i == 3;
    kv_policy_config pc = config_defaults();
    pseti(&pc, "sink_window", "n_sink", n_sink);
    pseti(&pc, "sink_window", "window", window);
    pset(&pc, "sink_window", "positions", _i == 1 ? "original" : "compact");
    rig r;
    rig_open(&r, "sink_window", &pc, 2, 2, 2, KS_DTYPE_F32, 64);
    int32_t sizes[] = {10, 20, 17, 40, 1, 1, 1, 5, 1, 1, 1, 1};
    int32_t keys[256], n = 0, seen = 0;
    for (size_t c = 0; c < KS_ARRAY_LEN(sizes); c++) {
        bool prefill = c < 4;
        rig_chunk(&r, sizes[c], prefill, c == 3, true, -1, NULL);
        n = sw_expect(keys, n, sizes[c], seen, n_sink, window);
        seen += sizes[c];
        for (int32_t l = 0; l < 2; l++)
            for (int32_t h = 0; h < 2; h++) {
                const kv_head_table *t = kv_seq_table(r.seq, l, h);
                ck_assert_int_eq(t->n_tok, n);
                for (int32_t s = 0; s < n; s++) {
                    ck_assert_int_eq(t->idx[s], keys[s]);
                    int32_t want_pos = _i == 1 ? keys[s] : s;
                    ck_assert_int_eq(t->pos[s], want_pos);
                    /* the stored key equals the key recomputed at its (new) position */
                    float want[HD];
                    vec_at(KIND_K, keys[s], l, h, want_pos, want);
                    int32_t b, row;
                    ck_assert_int_eq(kv_head_table_locate(t, s, &b, &row), 0);
                    const float *got = kv_head_table_k_row(t, b, row);
                    for (int32_t d = 0; d < HD; d++)
                        ck_assert_msg(fabsf(got[d] - want[d]) <= 1e-5f, "slot %d d %d: %g vs %g", s,
                                      d, got[d], want[d]);
                }
            }
        check_blocks(&r);
    }
    rig_close(&r);
    g_two_ropes = false;
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* A budget at least the prompt gives exactly the `full` result                              */

static void set_big_budgets(kv_policy_config *pc)
{
    pseti(pc, "sink_window", "n_sink", 4);
    pseti(pc, "sink_window", "window", 200);
    pset(pc, "sink_window", "positions", "compact");
    pseti(pc, "snapkv", "budget", 128);
    pseti(pc, "snapkv", "interval", 2);
    pseti(pc, "pyramid", "budget", 128);
    pseti(pc, "pyramid", "interval", 2);
    pseti(pc, "h2o", "heavy", 64);
    pseti(pc, "h2o", "recent", 64);
}

START_TEST(test_big_budget_equals_full)
{
    static const char *const kNames[] = {"sink_window", "snapkv", "pyramid", "h2o"};
    const char *name = kNames[_i];
    kv_policy_config pc = config_defaults();
    set_big_budgets(&pc);
    int32_t sizes[] = {32, 32, 32, 4, 1, 1, 1, 1, 1, 1};
    int32_t n_sizes = (int32_t)KS_ARRAY_LEN(sizes), splits[16];
    size_t per = (size_t)2 * 32 * 4 * HD;
    float *a = calloc(per * n_sizes, sizeof(float)), *b = calloc(per * n_sizes, sizeof(float));
    rig r;
    rig_open(&r, name, &pc, 2, 2, 2, KS_DTYPE_F16, 200);
    for (int32_t c = 0; c < n_sizes; c++)
        splits[c] = rig_chunk(&r, sizes[c], c < 4, c == 3, true, -1, a + per * c);
    for (int32_t l = 0; l < 2; l++)
        ck_assert_int_eq(kv_seq_tokens_kept(r.seq, l), 2 * 106);
    rig_close(&r);
    /* `full`, driven with the same split of queries (the core's two-pass key-mass mode and
     * its one-pass mode round differently, so both runs use the same one per query). */
    rig_open(&r, "full", &pc, 2, 2, 2, KS_DTYPE_F16, 200);
    for (int32_t c = 0; c < n_sizes; c++)
        rig_chunk(&r, sizes[c], c < 4, c == 3, true, splits[c], b + per * c);
    rig_close(&r);
    ck_assert(memcmp(a, b, per * n_sizes * sizeof(float)) == 0);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_registry_and_bad_config)
{
    static const char *const kNames[] = {"sink_window", "snapkv", "pyramid", "h2o"};
    const char *const *names = kv_policy_names();
    for (size_t i = 0; i < KS_ARRAY_LEN(kNames); i++) {
        ck_assert_ptr_nonnull(kv_policy_find(kNames[i]));
        bool listed = false;
        for (int32_t j = 0; names[j]; j++)
            listed |= strcmp(names[j], kNames[i]) == 0;
        ck_assert(listed);
    }
    kv_pool_params pp = {.budget_bytes = 1 << 20,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_F32,
                         .v_dtype = KS_DTYPE_F32};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    kv_policy_config pc = config_defaults();
    pseti(&pc, "snapkv", "kernel", 4); /* even kernel */
    pseti(&pc, "pyramid", "beta", 0);
    pseti(&pc, "sink_window", "window", 0);
    pseti(&pc, "h2o", "recent", 0);
    kv_policy_args args = {
        .config = &pc, .rope = kRope, .n_layer = 1, .n_head_kv = 1, .head_dim = HD};
    for (size_t i = 0; i < KS_ARRAY_LEN(kNames); i++) {
        kv_seq_params sp = {.n_layer = 1,
                            .n_head_kv = 1,
                            .policy = kv_policy_find(kNames[i]),
                            .policy_config = &args};
        kv_seq *seq = NULL;
        ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), KS_ERR_INVALID);
        ck_assert_ptr_null(seq);
    }
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

static Suite *policies_suite(void)
{
    Suite *s = suite_create("policies");
    TCase *tc = tcase_create("policies");
    tcase_add_test(tc, test_pyramid_schedule_reference);
    tcase_add_test(tc, test_pyramid_schedule_fallbacks);
    tcase_add_loop_test(tc, test_snap_selection_naive, 0, (int)KS_ARRAY_LEN(kSnapCases));
    tcase_add_loop_test(tc, test_snap_deferred_naive, 0, (int)KS_ARRAY_LEN(kSnapCases));
    tcase_add_loop_test(tc, test_snap_hold_bounds_prompt, 0, 2);
    tcase_add_test(tc, test_h2o_naive);
    tcase_add_test(tc, test_h2o_deferred_hold);
    tcase_add_loop_test(tc, test_sink_window_compact, 0, 4);
    tcase_add_loop_test(tc, test_big_budget_equals_full, 0, 4);
    tcase_add_test(tc, test_registry_and_bad_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(policies_suite(), true);
}

/* test_kivi.c - the KIVI-style KV types (core/kivi.c) and the sealable pool that stores them
 * (kvcache/pool.c, table.c): round-trip error bounds of a K group (per channel over the block's
 * tokens) and of a V row (per token), the f16 residual window (the last kv_residual tokens read
 * back exactly as f16), sealing exactly when a block is full and wholly older than the window,
 * attention over sealed and residual spans against a naive double-precision reference over the
 * dequantised rows (GQA ratios 1-8, scalar and SIMD), the byte budget, and rejected configs.
 *
 * Bounds, with L = 15 (kivi4) or 3 (kivi2) levels, a group's range = max - min and amax = its
 * largest |x|: |e| <= 0.501 * range / L + 2^-10 * amax (half a step; the step and the minimum
 * are f16, so the top level may miss max by the f16 rounding of both). K groups are one
 * channel over the block's tokens, V groups 32 channels of one token.
 * Attention over the dequantised rows equals the reference to 2e-5 (float rounding).
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/attention.h"
#include "kvserve/base.h"
#include "kvserve/kvcache.h"
#include "kvserve/kvtype.h"

static const ks_dtype g_kivi[] = {KS_DTYPE_KIVI4, KS_DTYPE_KIVI2};

static uint64_t g_rng = 7;

static float rndn(void)
{
    double u = 0;
    for (int i = 0; i < 4; i++) {
        g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
        u += (double)(g_rng >> 11) / 9007199254740992.0;
    }
    return (float)((u - 2.0) * 1.7);
}

/* Keys with the outlier channels KIVI is built for: every 7th channel 20x larger, offset. */
static void fill_keys(float *x, int32_t n, int32_t hd)
{
    for (int32_t j = 0; j < n; j++)
        for (int32_t c = 0; c < hd; c++)
            x[(size_t)j * hd + c] = c % 7 == 0 ? 20.0f * rndn() + 5.0f : rndn();
}

static double group_bound(ks_dtype t, const float *x, int32_t n, size_t step)
{
    float mn = INFINITY, mx = -INFINITY, amax = 0;
    for (int32_t j = 0; j < n; j++) {
        float v = x[(size_t)j * step];
        mn = fminf(mn, v);
        mx = fmaxf(mx, v);
        amax = fmaxf(amax, fabsf(v));
    }
    int levels = (1 << ks_kivi_bits(t)) - 1;
    return 0.501 * (mx - mn) / levels + amax * 0x1p-10;
}

START_TEST(test_k_group_roundtrip)
{
    enum { HD = 64, BT = 32 };
    static float x[BT * HD], y[BT * HD];
    static uint8_t g[HD * 4 + BT * HD];
    for (int i = 0; i < 2; i++) {
        ks_dtype t = g_kivi[i];
        ck_assert_uint_eq(ks_kivi_k_group_bytes(t, HD, BT), HD * 4 + BT * HD * ks_kivi_bits(t) / 8);
        double worst = 0, tok_err = 0, ch_err = 0;
        for (int rep = 0; rep < 20; rep++) {
            fill_keys(x, BT, HD);
            ks_kivi_k_seal(t, x, BT, HD, g);
            ks_kivi_k_to_f32(t, g, HD, 0, BT, y);
            for (int32_t c = 0; c < HD; c++) {
                double b = group_bound(t, x + c, BT, HD);
                for (int32_t j = 0; j < BT; j++) {
                    double e = fabs((double)y[j * HD + c] - x[j * HD + c]);
                    ck_assert_msg(e <= b, "%s ch %d tok %d: %g > %g", ks_dtype_name(t), c, j, e, b);
                    worst = fmax(worst, e / b);
                    ch_err += e * e;
                }
            }
            /* a part of the group (rows j0..) reads back the same values */
            float part[5 * HD];
            ks_kivi_k_to_f32(t, g, HD, 11, 5, part);
            ck_assert(memcmp(part, y + 11 * HD, sizeof(part)) == 0);
            /* the same keys grouped per token (the V layout) lose more to the outliers */
            for (int32_t j = 0; j < BT; j++) {
                uint8_t row[HD];
                float back[HD];
                ks_kivi_v_from_f32(t, x + j * HD, row, HD);
                ks_kivi_v_to_f32(t, row, back, HD);
                for (int32_t c = 0; c < HD; c++)
                    tok_err += (back[c] - x[j * HD + c]) * (back[c] - x[j * HD + c]);
            }
        }
        ck_assert_msg(worst > 0.3, "%s: worst error only %g of the bound", ks_dtype_name(t), worst);
        ck_assert_msg(ch_err < 0.5 * tok_err, "%s: per-channel %g vs per-token %g",
                      ks_dtype_name(t), ch_err, tok_err);
    }
}
END_TEST

START_TEST(test_v_row_roundtrip)
{
    enum { HD = 128 };
    float x[HD], y[HD];
    uint8_t row[HD];
    for (int i = 0; i < 2; i++) {
        ks_dtype t = g_kivi[i];
        ck_assert_uint_eq(ks_dtype_row_bytes(t, HD), HD / 32 * (t == KS_DTYPE_KIVI4 ? 20 : 12));
        ck_assert_uint_eq(ks_dtype_row_bytes(t, 48), 0);
        double worst = 0;
        for (int r = 0; r < 200; r++) {
            float scale = r % 3 == 0 ? 0.01f : r % 3 == 1 ? 1.0f : 40.0f;
            for (int d = 0; d < HD; d++)
                x[d] = rndn() * scale + (r % 5 == 0 ? 3.0f * scale : 0.0f);
            ks_dtype_from_f32(t, x, row, HD);
            ks_dtype_to_f32(t, row, y, HD);
            for (int d = 0; d < HD; d++) {
                double e = fabs((double)y[d] - x[d]), b = group_bound(t, x + d / 32 * 32, 32, 1);
                ck_assert_msg(e <= b, "%s row %d elem %d: %g > %g", ks_dtype_name(t), r, d, e, b);
                worst = fmax(worst, e / b);
            }
        }
        ck_assert(worst > 0.3);
        memset(x, 0, sizeof(x));
        ks_dtype_from_f32(t, x, row, HD);
        ks_dtype_to_f32(t, row, y, HD);
        for (int d = 0; d < HD; d++)
            ck_assert(y[d] == 0.0f);
    }
}
END_TEST

/* ---- the sealable pool ---- */

enum { HD = 64, BT = 16, NL = 1, NH = 2 };

static kv_pool *make_pool(ks_dtype kt, ks_dtype vt, int32_t residual, size_t budget)
{
    kv_pool_params pp = {.budget_bytes = budget,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = kt,
                         .v_dtype = vt,
                         .kv_residual = residual};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    return pool;
}

static float f16_round(float x)
{
    return ks_f16_to_f32(ks_f32_to_f16(x));
}

/* Appends n tokens (keys and values of both heads from the reference arrays) at index at. */
static void append(kv_seq *seq, const float *k, const float *v, int32_t at, int32_t n)
{
    int32_t idx[256];
    for (int32_t i = 0; i < n; i++)
        idx[i] = at + i;
    ck_assert_int_eq(
        kv_seq_append(seq, 0, n, k + (size_t)at * NH * HD, v + (size_t)at * NH * HD, idx, idx), 0);
}

/* Checks one table against the reference rows: residual blocks are a suffix; a block is
 * sealed iff it is full and all its tokens are older than the last `residual`; residual rows
 * are the exact f16 rows; a sealed K group equals sealing the block's f16 rows directly. */
static void check_table(const kv_head_table *t, ks_dtype kt, ks_dtype vt, int32_t residual,
                        const float *k, const float *v, int32_t h)
{
    static float rows[BT * HD], want[BT * HD], got[BT * HD];
    static uint8_t g[HD * 4 + BT * HD];
    int32_t start = 0;
    for (int32_t b = 0; b < t->n_blocks; b++) {
        int32_t n = t->blk_n[b], end = start + n;
        bool resid = kv_pool_block_is_residual(t->pool, t->blocks[b]);
        bool sealable = n == BT && t->n_tok - end >= residual;
        ck_assert_msg(resid != sealable, "block %d (%d..%d of %d): residual %d", b, start, end,
                      t->n_tok, resid);
        for (int32_t j = 0; j < n; j++)
            for (int32_t c = 0; c < HD; c++) {
                rows[j * HD + c] = f16_round(k[((size_t)(start + j) * NH + h) * HD + c]);
                want[j * HD + c] = f16_round(v[((size_t)(start + j) * NH + h) * HD + c]);
            }
        if (resid) {
            for (int32_t j = 0; j < n; j++) {
                float kr[HD], vr[HD];
                ks_dtype_to_f32(KS_DTYPE_F16, kv_head_table_k_row(t, b, j), kr, HD);
                ks_dtype_to_f32(KS_DTYPE_F16, kv_head_table_v_row(t, b, j), vr, HD);
                ck_assert(memcmp(kr, rows + j * HD, sizeof(kr)) == 0);
                ck_assert(memcmp(vr, want + j * HD, sizeof(vr)) == 0);
            }
        } else {
            ck_assert_ptr_null(kv_head_table_k_row(t, b, 0)); /* a group, not rows */
            ks_kivi_k_seal(kt, rows, BT, HD, g);
            ck_assert(memcmp(g, kv_pool_block_k(t->pool, t->blocks[b]),
                             ks_kivi_k_group_bytes(kt, HD, BT)) == 0);
            for (int32_t j = 0; j < n; j++) {
                uint8_t vr[HD];
                ks_dtype_from_f32(vt, want + j * HD, vr, HD);
                ck_assert(memcmp(vr, kv_head_table_v_row(t, b, j), ks_dtype_row_bytes(vt, HD)) ==
                          0);
            }
        }
        start = end;
    }
    (void)got;
}

START_TEST(test_residual_window_and_sealing)
{
    enum { N = 200 };
    static float k[N * NH * HD], v[N * NH * HD];
    fill_keys(k, N * NH, HD);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        v[i] = rndn();
    const int32_t residuals[] = {0, 5, 16, 40};
    for (int i = 0; i < 2; i++)
        for (size_t r = 0; r < sizeof(residuals) / sizeof(residuals[0]); r++) {
            ks_dtype t = g_kivi[i];
            int32_t R = residuals[r];
            kv_pool *pool = make_pool(t, t, R, 4 << 20);
            kv_seq_params sp = {.n_layer = NL, .n_head_kv = NH};
            kv_seq *seq;
            ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
            /* a prefill chunk, then decode one token at a time, then another chunk */
            int32_t at = 0, steps[] = {37, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 30, 1, 100};
            for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
                append(seq, k, v, at, steps[s]);
                at += steps[s];
                for (int32_t h = 0; h < NH; h++)
                    check_table(kv_seq_table(seq, 0, h), t, t, R, k, v, h);
            }
            /* the f16 tail holds at least R and fewer than R + BT tokens, in whole blocks */
            const kv_head_table *tb = kv_seq_table(seq, 0, 0);
            int32_t f16_tok = 0;
            for (int32_t b = 0; b < tb->n_blocks; b++)
                if (kv_pool_block_is_residual(pool, tb->blocks[b])) f16_tok += tb->blk_n[b];
            ck_assert_int_ge(f16_tok, KS_MIN(R, at));
            ck_assert_int_lt(f16_tok, R + BT);
            /* stats count each block's own bytes */
            kv_seq_stats st;
            kv_seq_get_stats(seq, &st);
            size_t bytes = 0;
            for (int32_t h = 0; h < NH; h++) {
                const kv_head_table *th = kv_seq_table(seq, 0, h);
                for (int32_t b = 0; b < th->n_blocks; b++)
                    bytes += kv_pool_block_bytes_of(pool, th->blocks[b]);
            }
            ck_assert_uint_eq(st.bytes, bytes);
            kv_seq_destroy(seq);
            kv_pool_stats ps;
            kv_pool_get_stats(pool, &ps);
            ck_assert_int_eq(ps.blocks_used, 0);
            kv_pool_destroy(pool);
        }
}
END_TEST

/* ---- attention over kivi spans ---- */

/* The span's rows as f32 (what the attention core must have read). */
static void span_rows(ks_dtype kt, ks_dtype vt, const attn_span *sp, float *k, float *v)
{
    if (sp->group > 0) {
        ks_kivi_k_to_f32(kt, sp->k, HD, 0, sp->n, k);
        for (int32_t j = 0; j < sp->n; j++)
            ks_dtype_to_f32(vt, (const uint8_t *)sp->v + (size_t)j * ks_dtype_row_bytes(vt, HD),
                            v + (size_t)j * HD, HD);
    } else {
        for (int32_t j = 0; j < sp->n; j++) {
            ks_dtype_to_f32(KS_DTYPE_F16, (const uint8_t *)sp->k + (size_t)j * HD * 2,
                            k + (size_t)j * HD, HD);
            ks_dtype_to_f32(KS_DTYPE_F16, (const uint8_t *)sp->v + (size_t)j * HD * 2,
                            v + (size_t)j * HD, HD);
        }
    }
}

/* Naive causal attention in double over all spans' dequantised rows; returns the largest
 * |difference| from out. */
static double reference_diff(ks_dtype kt, ks_dtype vt, const attn_span *sp, int32_t ns,
                             const float *q, int32_t nq, int32_t ng, const int32_t *q_idx,
                             const float *out)
{
    static float K[512 * HD], V[512 * HD];
    static int32_t idx[512];
    int32_t n = 0;
    for (int32_t i = 0; i < ns; i++) {
        span_rows(kt, vt, &sp[i], K + (size_t)n * HD, V + (size_t)n * HD);
        memcpy(idx + n, sp[i].idx, (size_t)sp[i].n * sizeof(int32_t));
        n += sp[i].n;
    }
    double worst = 0, sc[512], o[HD];
    for (int32_t t = 0; t < nq; t++)
        for (int32_t g = 0; g < ng; g++) {
            const float *qr = q + ((size_t)t * ng + g) * HD;
            double mx = -INFINITY, sum = 0;
            for (int32_t j = 0; j < n; j++) {
                double d = 0;
                for (int32_t c = 0; c < HD; c++)
                    d += (double)qr[c] * K[(size_t)j * HD + c];
                sc[j] = idx[j] <= q_idx[t] ? d / sqrt(HD) : -INFINITY;
                mx = fmax(mx, sc[j]);
            }
            memset(o, 0, sizeof(o));
            for (int32_t j = 0; j < n; j++) {
                double p = exp(sc[j] - mx);
                sum += p;
                for (int32_t c = 0; c < HD; c++)
                    o[c] += p * V[(size_t)j * HD + c];
            }
            for (int32_t c = 0; c < HD; c++)
                worst = fmax(worst, fabs(o[c] / sum - out[((size_t)t * ng + g) * HD + c]));
        }
    return worst;
}

START_TEST(test_attention_over_kivi_spans)
{
    enum { N = 150, MAXG = 8, NQ = 4 };
    static float k[N * NH * HD], v[N * NH * HD], q[NQ * MAXG * HD], out[NQ * MAXG * HD];
    fill_keys(k, N * NH, HD);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        v[i] = rndn();
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
        q[i] = 0.3f * rndn();
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(HD, MAXG, NQ, &s), 0);
    const ks_dtype pairs[][2] = {{KS_DTYPE_KIVI4, KS_DTYPE_KIVI4},
                                 {KS_DTYPE_KIVI2, KS_DTYPE_KIVI2},
                                 {KS_DTYPE_KIVI4, KS_DTYPE_F16},
                                 {KS_DTYPE_Q8_0, KS_DTYPE_KIVI2}};
    for (size_t pi = 0; pi < sizeof(pairs) / sizeof(pairs[0]); pi++) {
        ks_dtype kt = pairs[pi][0], vt = pairs[pi][1];
        kv_pool *pool = make_pool(kt, vt, 20, 4 << 20);
        kv_seq_params sp = {.n_layer = NL, .n_head_kv = NH};
        kv_seq *seq;
        ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
        append(seq, k, v, 0, N);
        attn_span spans[32];
        int32_t ns, n_sealed = 0;
        ck_assert_int_eq(kv_seq_spans(seq, 0, 1, spans, 32, &ns), 0);
        for (int32_t i = 0; i < ns; i++)
            n_sealed += spans[i].group > 0;
        ck_assert_int_eq(n_sealed, (N - 20) / BT); /* sealed and residual spans both read */
        int32_t q_idx[NQ] = {N - 4, N - 3, N - 2, N - 1};
        for (int32_t g = 1; g <= MAXG; g++)
            for (int scalar = 0; scalar < 2; scalar++) {
                attn_scratch_force_scalar(s, scalar);
                for (int flash = 0; flash < 2; flash++) { /* llama_flash falls back for kivi */
                    attn_params p = {.n_q = NQ,
                                     .n_group = g,
                                     .head_dim = HD,
                                     .scale = 1.0f / sqrtf(HD),
                                     .k_dtype = kt,
                                     .v_dtype = vt,
                                     .q = q,
                                     .q_tok_stride = g * HD,
                                     .q_idx = q_idx,
                                     .out = out,
                                     .out_tok_stride = g * HD,
                                     .llama_flash = flash};
                    ck_assert_int_eq(attn_forward(&p, spans, ns, s), 0);
                    double e = reference_diff(kt, vt, spans, ns, q, NQ, g, q_idx, out);
                    ck_assert_msg(e < 2e-5, "K %s V %s group %d scalar %d: %g", ks_dtype_name(kt),
                                  ks_dtype_name(vt), g, scalar, e);
                }
            }
        kv_seq_destroy(seq);
        kv_pool_destroy(pool);
    }
    attn_scratch_destroy(s);
}
END_TEST

/* ---- budget and invalid configurations ---- */

/* Tokens one sequence can append (16 at a time) before the pool is full. */
static int64_t tokens_admitted(ks_dtype kt, ks_dtype vt, size_t budget)
{
    static float k[16 * NH * HD], v[16 * NH * HD];
    kv_pool *pool = make_pool(kt, vt, 32, budget);
    kv_seq_params sp = {.n_layer = NL, .n_head_kv = NH};
    kv_seq *seq;
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    int32_t idx[16];
    int64_t n = 0;
    for (;;) {
        for (int32_t i = 0; i < 16; i++)
            idx[i] = (int32_t)n + i;
        if (kv_pool_ensure_free(pool, kv_seq_append_need(seq, 16))) break;
        if (kv_seq_append(seq, 0, 16, k, v, idx, idx)) break;
        n += 16;
    }
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
    return n;
}

START_TEST(test_budget_counts_sealed_bytes)
{
    size_t budget = 1 << 20;
    int64_t f16 = tokens_admitted(KS_DTYPE_F16, KS_DTYPE_F16, budget);
    int64_t k4 = tokens_admitted(KS_DTYPE_KIVI4, KS_DTYPE_KIVI4, budget);
    int64_t k2 = tokens_admitted(KS_DTYPE_KIVI2, KS_DTYPE_KIVI2, budget);
    /* sealed bytes per token (K+V, hd 64, 16-token groups): f16 256, kivi4 2*32+8+40 = 88...
     * the f16 window (32 tokens + a block) costs a little: at least 2.5x and 3.5x */
    ck_assert_msg(k4 > 2.5 * f16, "kivi4 %lld vs f16 %lld", (long long)k4, (long long)f16);
    ck_assert_msg(k2 > 3.5 * f16, "kivi2 %lld vs f16 %lld", (long long)k2, (long long)f16);
}
END_TEST

START_TEST(test_invalid_config_rejected)
{
    kv_pool_params pp = {.budget_bytes = 1 << 20,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_KIVI4,
                         .v_dtype = KS_DTYPE_KIVI4,
                         .kv_residual = -1};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), KS_ERR_INVALID);
    pp.kv_residual = KV_RESIDUAL_MAX + 1;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), KS_ERR_INVALID);
    pp.kv_residual = 8;
    pp.head_dim = 48; /* V groups of 32 channels */
    ck_assert_int_eq(kv_pool_create(&pp, &pool), KS_ERR_INVALID);
    pp.head_dim = HD;
    pp.budget_bytes = 4096; /* not even one residual block */
    ck_assert_int_eq(kv_pool_create(&pp, &pool), KS_ERR_INVALID);
    pp.budget_bytes = 1 << 20;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    /* policies that move rows between blocks cannot use sealed groups */
    kv_seq_params sp = {.n_layer = 1, .n_head_kv = 1, .policy = kv_policy_find("sink_window")};
    kv_seq *seq;
    ck_assert_ptr_nonnull(sp.policy);
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), KS_ERR_UNSUPPORTED);
    /* nor can keep() move a sealed row */
    sp.policy = NULL;
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static float k[40 * HD], v[40 * HD];
    int32_t idx[40];
    for (int32_t i = 0; i < 40; i++)
        idx[i] = i;
    ck_assert_int_eq(kv_seq_append(seq, 0, 40, k, v, idx, idx), 0);
    kv_head_table *t = kv_seq_table(seq, 0, 0);
    ck_assert(!kv_pool_block_is_residual(pool, t->blocks[0]));
    int32_t keep[39];
    for (int32_t i = 0; i < 39; i++)
        keep[i] = i + 1; /* drops slot 0: the sealed rows would shift */
    ck_assert_int_eq(kv_head_table_keep(t, keep, 39), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(t->n_tok, 40);
    /* a sealed span longer than its group is refused by the attention core */
    attn_span spans[8];
    int32_t ns;
    ck_assert_int_eq(kv_seq_spans(seq, 0, 0, spans, 8, &ns), 0);
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(HD, 1, 1, &s), 0);
    float q[HD] = {0}, out[HD];
    attn_params p = {.n_q = 1,
                     .n_group = 1,
                     .head_dim = HD,
                     .scale = 1,
                     .k_dtype = KS_DTYPE_KIVI4,
                     .v_dtype = KS_DTYPE_KIVI4,
                     .q = q,
                     .q_tok_stride = HD,
                     .out = out,
                     .out_tok_stride = HD};
    spans[0].idx = NULL;
    ck_assert_int_eq(attn_forward(&p, spans, 1, s), 0);
    spans[0].n = BT + 1;
    ck_assert_int_eq(attn_forward(&p, spans, 1, s), KS_ERR_INVALID);
    attn_scratch_destroy(s);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
    ck_assert_int_eq(ks_dtype_from_name("kivi3", &pp.k_dtype), KS_ERR_INVALID);
    ck_assert_int_eq(ks_dtype_from_name("kivi2", &pp.k_dtype), 0);
    ck_assert_int_eq(pp.k_dtype, KS_DTYPE_KIVI2);
    ck_assert_str_eq(ks_dtype_name(KS_DTYPE_KIVI4), "kivi4");
    ck_assert(ks_dtype_valid(KS_DTYPE_KIVI4) && !ks_dtype_is_float(KS_DTYPE_KIVI4));
}
END_TEST

static Suite *kivi_suite(void)
{
    Suite *s = suite_create("kivi");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_k_group_roundtrip);
    tcase_add_test(tc, test_v_row_roundtrip);
    tcase_add_test(tc, test_residual_window_and_sealing);
    tcase_add_test(tc, test_attention_over_kivi_spans);
    tcase_add_test(tc, test_budget_counts_sealed_bytes);
    tcase_add_test(tc, test_invalid_config_rejected);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(kivi_suite(), true);
}

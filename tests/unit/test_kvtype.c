/* test_kvtype.c - the KV storage types (kvtype.h): per-type round-trip error bounds, the
 * attention core reading quantised spans against a naive double-precision reference over the
 * dequantised rows (GQA ratios 1-8, prefill chunks with a causal mask and one-token decode,
 * scalar and SIMD kernels, the llama.cpp flash emulation), and the byte budget: the same pool
 * budget holds 1.88x (q8_0) and 3.56x (q4_0) the tokens of f16, counted by appending until
 * the pool is full.
 *
 * Bounds (per 32-element block, amax = largest |x|, range = max - min):
 *   f32 exact; f16 |e| <= 2^-11 |x|; bf16 |e| <= 2^-8 |x|;
 *   with step s and at most Q levels from zero, the f16 rounding of the stored scale adds up
 *   to Q * 2^-11 s:
 *   q8_0 |e| <= 0.57 amax/127 (half a step, Q = 127);
 *   q4_0 |e| <= 1.01 amax/8 and q5_0 |e| <= 1.02 amax/16 (the positive end clips one step);
 *   q4_1 |e| <= 0.51 range/15 + 2^-10 amax, q5_1 |e| <= 0.52 range/31 + 2^-10 amax
 *   (half a step; the f16 min adds up to 2^-11 |min|);
 *   iq4_nl |e| <= amax/8 (the widest gap between its levels, 24/127 of the scale, halved).
 * Attention over dequantised rows equals the reference to 2e-5 (float rounding); the flash
 * emulation, which also quantises q to q8_0/q8_1 for block-type K, to 3e-2 on unit-scale data.
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/attention.h"
#include "kvserve/kvcache.h"
#include "kvserve/kvtype.h"

static const ks_dtype g_types[] = {KS_DTYPE_F32,  KS_DTYPE_F16,  KS_DTYPE_BF16,
                                   KS_DTYPE_Q8_0, KS_DTYPE_Q4_0, KS_DTYPE_Q4_1,
                                   KS_DTYPE_Q5_0, KS_DTYPE_Q5_1, KS_DTYPE_IQ4_NL};
enum { NT = sizeof(g_types) / sizeof(g_types[0]) };

static uint64_t g_rng = 99;

static float rndn(void)
{
    double u = 0;
    for (int i = 0; i < 4; i++) {
        g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
        u += (double)(g_rng >> 11) / 9007199254740992.0;
    }
    return (float)((u - 2.0) * 1.7);
}

/* Largest allowed |error| of element j of a 32-block b (see the bounds above). */
static double bound(ks_dtype t, const float *b, int j)
{
    float amax = 0, mn = b[0], mx = b[0];
    for (int i = 0; i < 32; i++) {
        amax = fmaxf(amax, fabsf(b[i]));
        mn = fminf(mn, b[i]);
        mx = fmaxf(mx, b[i]);
    }
    double x = fabs(b[j]);
    switch (t) {
    case KS_DTYPE_F32:
        return 0;
    case KS_DTYPE_F16:
        return x * 0x1p-11 + 1e-7;
    case KS_DTYPE_BF16:
        return x * 0x1p-8;
    case KS_DTYPE_Q8_0:
        return 0.57 * amax / 127;
    case KS_DTYPE_Q4_0:
        return 1.01 * amax / 8;
    case KS_DTYPE_Q5_0:
        return 1.02 * amax / 16;
    case KS_DTYPE_Q4_1:
        return 0.51 * (mx - mn) / 15 + amax * 0x1p-10;
    case KS_DTYPE_Q5_1:
        return 0.52 * (mx - mn) / 31 + amax * 0x1p-10;
    case KS_DTYPE_IQ4_NL:
        return amax / 8.0;
    case KS_DTYPE_KIVI4: /* the per-token V row; the K groups are test_kivi's */
    case KS_DTYPE_KIVI2:
        break;
    }
    return 0;
}

START_TEST(test_names_and_sizes)
{
    static const struct {
        const char *name;
        size_t bytes128; /* bytes of a 128-element row, from llama.cpp's block sizes */
    } want[NT] = {{"f32", 512}, {"f16", 256}, {"bf16", 256}, {"q8_0", 136}, {"q4_0", 72},
                  {"q4_1", 80}, {"q5_0", 88}, {"q5_1", 96},  {"iq4_nl", 72}};
    for (int i = 0; i < NT; i++) {
        ks_dtype t;
        ck_assert_str_eq(ks_dtype_name(g_types[i]), want[i].name);
        ck_assert_int_eq(ks_dtype_from_name(want[i].name, &t), 0);
        ck_assert_int_eq(t, g_types[i]);
        ck_assert_uint_eq(ks_dtype_row_bytes(t, 128), want[i].bytes128);
        ck_assert(fabs(ks_dtype_elem_bytes(t) * 128 - (double)want[i].bytes128) < 1e-9);
        if (!ks_dtype_is_float(t))
            ck_assert_uint_eq(ks_dtype_row_bytes(t, 48), 0); /* not whole blocks */
    }
    ks_dtype t;
    ck_assert_int_eq(ks_dtype_from_name("q8_1", &t), KS_ERR_INVALID);
    ck_assert_int_eq(ks_dtype_from_name(NULL, &t), KS_ERR_INVALID);
    ck_assert(!ks_dtype_valid(9) && !ks_dtype_valid(-1));
}
END_TEST

START_TEST(test_roundtrip_bounds)
{
    enum { HD = 128, ROWS = 200 };
    float x[HD], y[HD];
    uint8_t buf[HD * 4];
    for (int i = 0; i < NT; i++) {
        ks_dtype t = g_types[i];
        double worst = 0;
        for (int r = 0; r < ROWS; r++) {
            float scale = r % 3 == 0 ? 0.01f : r % 3 == 1 ? 1.0f : 40.0f;
            for (int d = 0; d < HD; d++)
                x[d] = rndn() * scale + (r % 5 == 0 ? 3.0f * scale : 0.0f);
            ks_dtype_from_f32(t, x, buf, HD);
            ks_dtype_to_f32(t, buf, y, HD);
            for (int d = 0; d < HD; d++) {
                double e = fabs((double)y[d] - x[d]), b = bound(t, x + d / 32 * 32, d % 32);
                ck_assert_msg(e <= b, "%s row %d elem %d: |%g - %g| = %g > %g", ks_dtype_name(t), r,
                              d, y[d], x[d], e, b);
                worst = fmax(worst, b > 0 ? e / b : 0);
            }
        }
        /* the bound is tight enough to mean something: quantised types use a good part */
        if (!ks_dtype_is_float(t))
            ck_assert_msg(worst > 0.3, "%s: worst error only %g of its bound", ks_dtype_name(t),
                          worst);
    }
    /* an all-zero block stays zero */
    memset(x, 0, sizeof(x));
    for (int i = 0; i < NT; i++) {
        ks_dtype_from_f32(g_types[i], x, buf, HD);
        ks_dtype_to_f32(g_types[i], buf, y, HD);
        for (int d = 0; d < HD; d++)
            ck_assert(y[d] == 0.0f);
    }
}
END_TEST

/* ---- attention over quantised spans ---- */

enum { AHD = 64, MAXK = 300, MAXG = 8, MAXQ = 5 };

typedef struct qcase {
    ks_dtype kt, vt;
    int32_t n_keys, n_group, n_q;
    float q[MAXQ * MAXG * AHD];
    uint8_t k[MAXK * AHD * 4], v[MAXK * AHD * 4];
    float kd[MAXK * AHD], vd[MAXK * AHD]; /* dequantised rows */
    int32_t idx[MAXK], q_idx[MAXQ];
} qcase;

static void qcase_fill(qcase *c)
{
    float row[AHD];
    size_t kb = ks_dtype_row_bytes(c->kt, AHD), vb = ks_dtype_row_bytes(c->vt, AHD);
    for (int32_t j = 0; j < c->n_keys; j++) {
        for (int d = 0; d < AHD; d++)
            row[d] = rndn();
        ks_dtype_from_f32(c->kt, row, c->k + j * kb, AHD);
        ks_dtype_to_f32(c->kt, c->k + j * kb, c->kd + j * AHD, AHD);
        for (int d = 0; d < AHD; d++)
            row[d] = rndn();
        ks_dtype_from_f32(c->vt, row, c->v + j * vb, AHD);
        ks_dtype_to_f32(c->vt, c->v + j * vb, c->vd + j * AHD, AHD);
        c->idx[j] = j;
    }
    for (int i = 0; i < c->n_q * c->n_group * AHD; i++)
        c->q[i] = rndn();
    for (int t = 0; t < c->n_q; t++)
        c->q_idx[t] = c->n_keys - c->n_q + t; /* the chunk's own keys are the last ones */
}

/* Naive softmax(q·K^T/sqrt(d)) V in double over the dequantised rows, causal by idx. */
static void reference(const qcase *c, int32_t t, int32_t g, double *out)
{
    const float *q = c->q + ((size_t)t * c->n_group + g) * AHD;
    double s[MAXK], mx = -INFINITY, sum = 0;
    for (int32_t j = 0; j < c->n_keys; j++) {
        s[j] = -INFINITY;
        if (c->idx[j] > c->q_idx[t]) continue;
        double a = 0;
        for (int d = 0; d < AHD; d++)
            a += (double)q[d] * c->kd[j * AHD + d];
        s[j] = a / sqrt((double)AHD);
        mx = fmax(mx, s[j]);
    }
    for (int d = 0; d < AHD; d++)
        out[d] = 0;
    for (int32_t j = 0; j < c->n_keys; j++) {
        if (s[j] == -INFINITY) continue;
        double p = exp(s[j] - mx);
        sum += p;
        for (int d = 0; d < AHD; d++)
            out[d] += p * c->vd[j * AHD + d];
    }
    for (int d = 0; d < AHD; d++)
        out[d] /= sum;
}

/* Runs the core over the case split into spans of 37 keys; returns max |out - ref|. */
static double run_case(qcase *c, attn_scratch *s, bool flash)
{
    attn_span sp[16];
    int32_t n_sp = 0;
    size_t kb = ks_dtype_row_bytes(c->kt, AHD), vb = ks_dtype_row_bytes(c->vt, AHD);
    for (int32_t j0 = 0; j0 < c->n_keys; j0 += 37, n_sp++)
        sp[n_sp] = (attn_span){.k = c->k + j0 * kb,
                               .v = c->v + j0 * vb,
                               .idx = c->idx + j0,
                               .n = c->n_keys - j0 < 37 ? c->n_keys - j0 : 37};
    static float out[MAXQ * MAXG * AHD];
    attn_params p = {.n_q = c->n_q,
                     .n_group = c->n_group,
                     .head_dim = AHD,
                     .scale = 1.0f / sqrtf((float)AHD),
                     .k_dtype = c->kt,
                     .v_dtype = c->vt,
                     .q = c->q,
                     .q_tok_stride = c->n_group * AHD,
                     .q_idx = c->q_idx,
                     .out = out,
                     .out_tok_stride = c->n_group * AHD,
                     .llama_flash = flash};
    ck_assert_int_eq(attn_forward(&p, sp, n_sp, s), 0);
    double worst = 0, ref[AHD];
    for (int32_t t = 0; t < c->n_q; t++)
        for (int32_t g = 0; g < c->n_group; g++) {
            reference(c, t, g, ref);
            const float *o = out + ((size_t)t * c->n_group + g) * AHD;
            for (int d = 0; d < AHD; d++)
                worst = fmax(worst, fabs(o[d] - ref[d]));
        }
    return worst;
}

START_TEST(test_attention_quantised_spans)
{
    static qcase c;
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(AHD, MAXG, MAXQ, &s), 0);
    for (int i = 0; i < NT; i++) {
        for (int32_t g = 1; g <= MAXG; g++) {
            c.kt = g_types[i];
            c.vt = g_types[(i + g) % NT]; /* K and V types differ in most cases */
            c.n_group = g;
            c.n_keys = 90 + 25 * g;
            c.n_q = g % 2 ? MAXQ : 1; /* prefill chunks and one-token decode */
            qcase_fill(&c);
            for (int scalar = 0; scalar < 2; scalar++) {
                attn_scratch_force_scalar(s, scalar);
                double e = run_case(&c, s, false);
                ck_assert_msg(e < 2e-5, "K %s V %s group %d scalar %d: %g", ks_dtype_name(c.kt),
                              ks_dtype_name(c.vt), g, scalar, e);
            }
            double e = run_case(&c, s, true);
            ck_assert_msg(e < 3e-2, "flash K %s V %s group %d: %g", ks_dtype_name(c.kt),
                          ks_dtype_name(c.vt), g, e);
        }
    }
    attn_scratch_destroy(s);
}
END_TEST

START_TEST(test_attention_rejects_bad_types)
{
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(48, 1, 1, &s), 0);
    float q[48] = {0}, out[48];
    uint8_t kv[256] = {0};
    attn_span sp = {.k = kv, .v = kv, .n = 1};
    attn_params p = {.n_q = 1,
                     .n_group = 1,
                     .head_dim = 48,
                     .scale = 1,
                     .q = q,
                     .q_tok_stride = 48,
                     .out = out,
                     .out_tok_stride = 48,
                     .k_dtype = KS_DTYPE_F16,
                     .v_dtype = KS_DTYPE_F16};
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    p.k_dtype = KS_DTYPE_Q8_0; /* 48 is not a whole number of 32-blocks */
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p.k_dtype = KS_DTYPE_F16;
    p.v_dtype = (ks_dtype)9;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    attn_scratch_destroy(s);
}
END_TEST

/* ---- the byte budget ---- */

/* Tokens one sequence (2 layers x 2 KV heads, head dim 128) can append before the pool of
 * `mb` MiB is full, and the pool's block bytes. */
static int64_t tokens_admitted(ks_dtype kt, ks_dtype vt, size_t budget, size_t *block_bytes)
{
    enum { L = 2, H = 2, D = 128, BT = 32, CH = 16 };
    kv_pool_params pp = {
        .budget_bytes = budget, .block_tokens = BT, .head_dim = D, .k_dtype = kt, .v_dtype = vt};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    *block_bytes = kv_pool_block_bytes(pool);
    kv_seq_params sp = {.n_layer = L, .n_head_kv = H};
    kv_seq *seq;
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static float k[CH * H * D], v[CH * H * D];
    for (int i = 0; i < CH * H * D; i++) {
        k[i] = rndn();
        v[i] = rndn();
    }
    int32_t idx[CH];
    int64_t n = 0;
    for (;;) {
        for (int i = 0; i < CH; i++)
            idx[i] = (int32_t)(n + i);
        int rc = 0;
        for (int l = 0; l < L && !rc; l++)
            rc = kv_seq_append(seq, l, CH, k, v, idx, idx);
        if (rc) {
            ck_assert_int_eq(rc, KS_ERR_FULL);
            break;
        }
        n += CH;
    }
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
    return n;
}

START_TEST(test_budget_counts_real_bytes)
{
    size_t budget = 8u << 20, bf16, bq8, bq4, bmix;
    int64_t f16 = tokens_admitted(KS_DTYPE_F16, KS_DTYPE_F16, budget, &bf16);
    int64_t q8 = tokens_admitted(KS_DTYPE_Q8_0, KS_DTYPE_Q8_0, budget, &bq8);
    int64_t q4 = tokens_admitted(KS_DTYPE_Q4_0, KS_DTYPE_Q4_0, budget, &bq4);
    int64_t mix = tokens_admitted(KS_DTYPE_Q8_0, KS_DTYPE_Q4_0, budget, &bmix);
    /* block bytes: 32 tokens x (K row + V row) */
    ck_assert_uint_eq(bf16, 32 * (256 + 256));
    ck_assert_uint_eq(bq8, 32 * (136 + 136));
    ck_assert_uint_eq(bq4, 32 * (72 + 72));
    ck_assert_uint_eq(bmix, 32 * (136 + 72));
    /* f16 fits 8 MiB / (4 heads x 512 B per token) = 4096 tokens, less the last partial chunk
     * rounding; quantised pools fit the byte ratio more */
    ck_assert_int_eq(f16, 4096);
    ck_assert_msg(q8 * 1000 >= f16 * 1870, "q8_0 admits %lld vs f16 %lld", (long long)q8,
                  (long long)f16);
    ck_assert_msg(q4 * 1000 >= f16 * 3520, "q4_0 admits %lld vs f16 %lld", (long long)q4,
                  (long long)f16);
    ck_assert(mix > q8 && mix < q4);
}
END_TEST

static Suite *kvtype_suite(void)
{
    Suite *s = suite_create("kvtype");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_names_and_sizes);
    tcase_add_test(tc, test_roundtrip_bounds);
    tcase_add_test(tc, test_attention_quantised_spans);
    tcase_add_test(tc, test_attention_rejects_bad_types);
    tcase_add_test(tc, test_budget_counts_real_bytes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(kvtype_suite(), true);
}

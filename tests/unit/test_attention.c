/* test_attention.c - the attention core against a naive reference.
 *
 * The reference builds the full score matrix per query head (causal mask by sequence index),
 * takes the softmax in double and the weighted sum of V, in the spirit of llama2.c's per-head
 * loop. Random span lists (shuffled, some with idx == NULL, padded strides) cover GQA ratios
 * 1..8, head sizes 16..128, f32 and f16 caches, decode and prefill-sized chunks, key mass,
 * the llama.cpp numerics mode and its flash-attention emulation, for both the scalar and the
 * SIMD kernels.
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/attn_tiles.h"
#include "kvserve/attention.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float rndf(void)
{
    return (float)(rnd() % 20001) / 10000.0f - 1.0f;
}

/* A random test case: spans over keys with strides, idx arrays and query indices. */
typedef struct tcase {
    int32_t n_q, n_group, hd, n_spans, n_keys;
    ks_dtype dt;
    float scale;
    attn_span *spans;
    float *q, *out;
    int32_t *q_idx;
    /* Per span: storage and the decoded f32 values the reference uses. */
    void **kmem, **vmem;
    int32_t **idx;
    float **kref, **vref; /* [n][hd] decoded */
} tcase;

static void *store(ks_dtype dt, const float *src, int32_t n, int32_t hd, int32_t stride, float *ref)
{
    size_t el = dt == KS_DTYPE_F32 ? 4 : 2;
    uint8_t *mem = calloc((size_t)(n ? n : 1) * stride, el);
    for (int32_t j = 0; j < n; j++)
        for (int32_t d = 0; d < hd; d++) {
            float x = src[(size_t)j * hd + d];
            if (dt == KS_DTYPE_F32) {
                ((float *)mem)[(size_t)j * stride + d] = x;
                ref[(size_t)j * hd + d] = x;
            } else {
                uint16_t h = ks_f32_to_f16(x);
                ((uint16_t *)mem)[(size_t)j * stride + d] = h;
                ref[(size_t)j * hd + d] = ks_f16_to_f32(h);
            }
        }
    return mem;
}

static void tcase_make(tcase *c, int32_t n_q, int32_t n_group, int32_t hd, ks_dtype dt,
                       int32_t max_keys, float scale)
{
    memset(c, 0, sizeof(*c));
    c->n_q = n_q, c->n_group = n_group, c->hd = hd, c->dt = dt, c->scale = scale;
    c->n_spans = 1 + (int32_t)(rnd() % 8);
    c->spans = calloc((size_t)c->n_spans, sizeof(attn_span));
    c->kmem = calloc((size_t)c->n_spans, sizeof(void *));
    c->vmem = calloc((size_t)c->n_spans, sizeof(void *));
    c->idx = calloc((size_t)c->n_spans, sizeof(int32_t *));
    c->kref = calloc((size_t)c->n_spans, sizeof(float *));
    c->vref = calloc((size_t)c->n_spans, sizeof(float *));
    int32_t max_idx = 2 * max_keys + 10;
    for (int32_t i = 0; i < c->n_spans; i++) {
        int32_t n = (int32_t)(rnd() % (uint32_t)(max_keys / c->n_spans + 1));
        if (rnd() % 6 == 0) n = 0;
        int32_t ks = hd + (rnd() % 3 == 0 ? 8 : 0), vs = hd + (rnd() % 3 == 0 ? 3 : 0);
        float *kv = malloc(sizeof(float) * (size_t)(n + 1) * hd);
        float *vv = malloc(sizeof(float) * (size_t)(n + 1) * hd);
        for (int32_t e = 0; e < n * hd; e++) {
            kv[e] = rndf();
            vv[e] = rndf();
        }
        c->kref[i] = malloc(sizeof(float) * (size_t)(n + 1) * hd);
        c->vref[i] = malloc(sizeof(float) * (size_t)(n + 1) * hd);
        c->kmem[i] = store(dt, kv, n, hd, ks, c->kref[i]);
        c->vmem[i] = store(dt, vv, n, hd, vs, c->vref[i]);
        free(kv);
        free(vv);
        if (rnd() % 4 != 0) {
            c->idx[i] = malloc(sizeof(int32_t) * (size_t)(n + 1));
            for (int32_t j = 0; j < n; j++)
                c->idx[i][j] = (int32_t)(rnd() % (uint32_t)max_idx);
        }
        c->spans[i] = (attn_span){.k = c->kmem[i],
                                  .v = c->vmem[i],
                                  .idx = c->idx[i],
                                  .n = n,
                                  .k_stride = ks == hd && rnd() % 2 ? 0 : ks,
                                  .v_stride = vs == hd && rnd() % 2 ? 0 : vs};
        c->n_keys += n;
    }
    int32_t width = n_group * hd;
    c->q = malloc(sizeof(float) * (size_t)n_q * (width + 5));
    c->out = malloc(sizeof(float) * (size_t)n_q * (width + 2));
    c->q_idx = malloc(sizeof(int32_t) * (size_t)n_q);
    for (int32_t e = 0; e < n_q * (width + 5); e++)
        c->q[e] = rndf();
    for (int32_t t = 0; t < n_q; t++)
        c->q_idx[t] = (int32_t)(rnd() % (uint32_t)max_idx) - 5; /* some see nothing */
}

static void tcase_free(tcase *c)
{
    for (int32_t i = 0; i < c->n_spans; i++) {
        free(c->kmem[i]);
        free(c->vmem[i]);
        free(c->idx[i]);
        free(c->kref[i]);
        free(c->vref[i]);
    }
    free(c->kmem), free(c->vmem), free(c->idx), free(c->kref), free(c->vref);
    free(c->spans), free(c->q), free(c->out), free(c->q_idx);
}

/* Sliding window of the cases (0 = none): set by test_window. */
static int32_t g_window;

static attn_params tcase_params(tcase *c, float *key_mass, bool llama)
{
    return (attn_params){.n_q = c->n_q,
                         .n_group = c->n_group,
                         .head_dim = c->hd,
                         .scale = c->scale,
                         .k_dtype = c->dt,
                         .v_dtype = c->dt,
                         .q = c->q,
                         .q_tok_stride = c->n_group * c->hd + 5,
                         .q_idx = c->q_idx,
                         .out = c->out,
                         .out_tok_stride = c->n_group * c->hd + 2,
                         .key_mass = key_mass,
                         .llama_numerics = llama,
                         .window = g_window};
}

static float round16(float x)
{
    return ks_f16_to_f32(ks_f32_to_f16(x));
}

/* Naive reference: out[t][g] and key mass, softmax in double; q (round_q) and the
 * probabilities (round_p) optionally rounded to f16 first. */
static void reference_ex(const tcase *c, bool round_q, bool round_p, double *out, double *mass)
{
    int32_t hd = c->hd, nk = c->n_keys;
    double *sc = malloc(sizeof(double) * (size_t)(nk + 1));
    memset(mass, 0, sizeof(double) * (size_t)c->n_group * (nk + 1));
    for (int32_t t = 0; t < c->n_q; t++)
        for (int32_t g = 0; g < c->n_group; g++) {
            const float *q = c->q + (size_t)t * (c->n_group * hd + 5) + (size_t)g * hd;
            double mx = -INFINITY;
            for (int32_t i = 0, j = 0; i < c->n_spans; i++)
                for (int32_t r = 0; r < c->spans[i].n; r++, j++) {
                    bool vis =
                        !c->idx[i] || (c->idx[i][r] <= c->q_idx[t] &&
                                       (g_window <= 0 || c->idx[i][r] > c->q_idx[t] - g_window));
                    double s = 0;
                    for (int32_t d = 0; d < hd; d++)
                        s += (double)(round_q ? round16(q[d]) : q[d]) * c->kref[i][r * hd + d];
                    sc[j] = vis ? s * c->scale : -INFINITY;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
            double *o = out + ((size_t)t * c->n_group + g) * hd;
            memset(o, 0, sizeof(double) * (size_t)hd);
            if (mx == -INFINITY) continue;
            double sum = 0;
            for (int32_t j = 0; j < nk; j++)
                sum += exp(sc[j] - mx);
            for (int32_t i = 0, j = 0; i < c->n_spans; i++)
                for (int32_t r = 0; r < c->spans[i].n; r++, j++) {
                    double p = exp(sc[j] - mx) / sum;
                    mass[(size_t)g * nk + j] += p;
                    double pv = round_p ? round16((float)p) : p;
                    for (int32_t d = 0; d < hd; d++)
                        o[d] += pv * c->vref[i][r * hd + d];
                }
        }
    free(sc);
}

/* The reference as llama.cpp's non-flash numerics (llama) or exact (false) would give it. */
static void reference(const tcase *c, bool llama, double *out, double *mass)
{
    bool r16 = llama && c->dt == KS_DTYPE_F16;
    reference_ex(c, r16, r16, out, mass);
}

/* Runs one random case and compares; tol is absolute (values are in [-1, 1]). */
static void check_case(int32_t n_q, int32_t G, int32_t hd, ks_dtype dt, bool with_mass, bool llama,
                       bool scalar, double tol)
{
    tcase c;
    float scale = rnd() % 2 ? 1.0f / sqrtf((float)hd) : 1.5f;
    tcase_make(&c, n_q, G, hd, dt, 1 + (int32_t)(rnd() % 300), scale);
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(hd, G, n_q, &s), 0);
    attn_scratch_force_scalar(s, scalar);
    float *mass = calloc((size_t)G * (c.n_keys + 1), sizeof(float));
    double *rmass = malloc(sizeof(double) * (size_t)G * (c.n_keys + 1));
    double *rout = malloc(sizeof(double) * (size_t)n_q * G * hd);
    attn_params p = tcase_params(&c, with_mass ? mass : NULL, llama);
    ck_assert_int_eq(attn_forward(&p, c.spans, c.n_spans, s), 0);
    reference(&c, llama, rout, rmass);
    for (int32_t t = 0; t < n_q; t++)
        for (int32_t g = 0; g < G; g++)
            for (int32_t d = 0; d < hd; d++) {
                double got = c.out[(size_t)t * p.out_tok_stride + g * hd + d];
                double want = rout[((size_t)t * G + g) * hd + d];
                ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)),
                              "n_q %d G %d hd %d dt %d t %d g %d d %d: %g vs %g", n_q, G, hd, dt, t,
                              g, d, got, want);
            }
    if (with_mass)
        for (int64_t e = 0; e < (int64_t)G * c.n_keys; e++)
            ck_assert_msg(fabs(mass[e] - rmass[e]) <= 1e-5 * (1 + fabs(rmass[e])),
                          "mass %lld: %g vs %g", (long long)e, mass[e], rmass[e]);
    free(mass), free(rmass), free(rout);
    attn_scratch_destroy(s);
    tcase_free(&c);
}

static const int32_t kGroups[] = {1, 2, 4, 8};
static const int32_t kDims[] = {16, 32, 64, 128};

static void sweep(ks_dtype dt, bool mass, bool llama, double tol)
{
    for (int scalar = 0; scalar < 2; scalar++)
        for (size_t gi = 0; gi < 4; gi++)
            for (size_t di = 0; di < 4; di++) {
                check_case(1, kGroups[gi], kDims[di], dt, mass, llama, scalar, tol);
                check_case(1 + (int32_t)(rnd() % 9), kGroups[gi], kDims[di], dt, mass, llama,
                           scalar, tol);
            }
}

START_TEST(test_f32_matches_reference)
{
    sweep(KS_DTYPE_F32, false, false, 1e-5);
}
END_TEST

START_TEST(test_f16_matches_reference)
{
    sweep(KS_DTYPE_F16, false, false, 1e-5);
}
END_TEST

START_TEST(test_key_mass)
{
    sweep(_i ? KS_DTYPE_F16 : KS_DTYPE_F32, true, false, 1e-5);
}
END_TEST

/* llama numerics with an f16 cache rounds p to f16: the reference does the same, but a p on
 * a rounding boundary may round the other way, so allow a few f16 ulps. */
/* Sliding-window layers: keys window or more positions behind the query are hidden. */
START_TEST(test_window)
{
    static const int32_t windows[] = {1, 3, 16, 100};
    for (size_t i = 0; i < 4; i++) {
        g_window = windows[i];
        sweep(_i ? KS_DTYPE_F16 : KS_DTYPE_F32, false, false, 1e-5);
        sweep(KS_DTYPE_F16, false, true, 3e-3); /* the tolerance of test_llama_numerics */
    }
    g_window = 0;
}
END_TEST

START_TEST(test_llama_numerics)
{
    sweep(KS_DTYPE_F32, true, true, 1e-5);
    sweep(KS_DTYPE_F16, true, true, 3e-3);
}
END_TEST

/* A prefill chunk: 200 queries with indices 100..299 over keys 0..299 in blocks of 32 given
 * in reverse order; prefix keys with idx == NULL, like a shared visible prefix. */
START_TEST(test_prefill_chunk)
{
    for (int dt = 0; dt < 2; dt++) {
        tcase c;
        memset(&c, 0, sizeof(c));
        c.n_q = 200, c.n_group = 4, c.hd = 64, c.dt = (ks_dtype)dt, c.scale = 0.125f;
        c.n_spans = 10;
        c.spans = calloc(10, sizeof(attn_span));
        c.kmem = calloc(10, sizeof(void *)), c.vmem = calloc(10, sizeof(void *));
        c.idx = calloc(10, sizeof(int32_t *));
        c.kref = calloc(10, sizeof(float *)), c.vref = calloc(10, sizeof(float *));
        for (int32_t i = 0; i < 10; i++) {
            int32_t n = 32, first = 300 - 32 * (i + 1);
            if (first < 0) n += first, first = 0;
            float *kv = malloc(sizeof(float) * 32 * 64), *vv = malloc(sizeof(float) * 32 * 64);
            for (int32_t e = 0; e < 32 * 64; e++)
                kv[e] = rndf(), vv[e] = rndf();
            c.kref[i] = malloc(sizeof(float) * 32 * 64);
            c.vref[i] = malloc(sizeof(float) * 32 * 64);
            c.kmem[i] = store(c.dt, kv, n, 64, 64, c.kref[i]);
            c.vmem[i] = store(c.dt, vv, n, 64, 64, c.vref[i]);
            free(kv), free(vv);
            if (first >= 64) {
                c.idx[i] = malloc(sizeof(int32_t) * 32);
                for (int32_t j = 0; j < n; j++)
                    c.idx[i][j] = first + j;
            }
            c.spans[i] = (attn_span){.k = c.kmem[i], .v = c.vmem[i], .idx = c.idx[i], .n = n};
            c.n_keys += n;
        }
        c.q = malloc(sizeof(float) * 200 * (256 + 5));
        c.out = malloc(sizeof(float) * 200 * (256 + 2));
        c.q_idx = malloc(sizeof(int32_t) * 200);
        for (int32_t e = 0; e < 200 * 261; e++)
            c.q[e] = rndf();
        for (int32_t t = 0; t < 200; t++)
            c.q_idx[t] = 100 + t;
        attn_scratch *s;
        ck_assert_int_eq(attn_scratch_create(64, 4, 512, &s), 0);
        double *rout = malloc(sizeof(double) * 200 * 256);
        double *rmass = malloc(sizeof(double) * 4 * (c.n_keys + 1));
        attn_params p = tcase_params(&c, NULL, false);
        ck_assert_int_eq(attn_forward(&p, c.spans, c.n_spans, s), 0);
        reference(&c, false, rout, rmass);
        for (int32_t t = 0; t < 200; t++)
            for (int32_t e = 0; e < 256; e++) {
                double got = c.out[(size_t)t * p.out_tok_stride + e], want = rout[t * 256 + e];
                ck_assert_msg(fabs(got - want) <= 1e-5 * (1 + fabs(want)), "%g vs %g", got, want);
            }
        free(rout), free(rmass);
        attn_scratch_destroy(s);
        tcase_free(&c);
    }
}
END_TEST

START_TEST(test_no_visible_key_is_zero)
{
    float k[16], v[16], q[16], out[16];
    for (int i = 0; i < 16; i++)
        k[i] = v[i] = q[i] = 1.0f, out[i] = 42.0f;
    int32_t idx = 5, qi = 4;
    attn_span sp = {.k = k, .v = v, .idx = &idx, .n = 1};
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(16, 1, 1, &s), 0);
    attn_params p = {.n_q = 1,
                     .n_group = 1,
                     .head_dim = 16,
                     .scale = 1,
                     .q = q,
                     .q_tok_stride = 16,
                     .q_idx = &qi,
                     .out = out,
                     .out_tok_stride = 16};
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert(out[i] == 0.0f);
    for (int i = 0; i < 16; i++)
        out[i] = 42.0f;
    ck_assert_int_eq(attn_forward(&p, NULL, 0, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert(out[i] == 0.0f);
    qi = 5; /* now visible: the single key gets all the weight */
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert(fabsf(out[i] - 1.0f) < 1e-6f);
    attn_scratch_destroy(s);
}
END_TEST

/* Three equal keys get p = 1/3 each; llama.cpp's f16 softmax output rounds that to
 * 0.333251953125, so the output is 3 * that instead of 1. */
START_TEST(test_llama_rounds_probabilities)
{
    uint16_t k[3 * 16], v[3 * 16];
    float q[16], out[16];
    for (int i = 0; i < 48; i++)
        k[i] = ks_f32_to_f16(0.5f), v[i] = ks_f32_to_f16(1.0f);
    for (int i = 0; i < 16; i++)
        q[i] = 0.1f;
    attn_span sp = {.k = k, .v = v, .n = 3};
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(16, 1, 1, &s), 0);
    attn_params p = {.n_q = 1,
                     .n_group = 1,
                     .head_dim = 16,
                     .scale = 0.25f,
                     .k_dtype = KS_DTYPE_F16,
                     .v_dtype = KS_DTYPE_F16,
                     .q = q,
                     .q_tok_stride = 16,
                     .out = out,
                     .out_tok_stride = 16,
                     .llama_numerics = true};
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    float want = 3.0f * round16(1.0f / 3.0f);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(fabsf(out[i] - want) < 1e-6f, "%g vs %g", out[i], want);
    p.llama_numerics = false;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert(fabsf(out[i] - 1.0f) < 1e-6f);
    attn_scratch_destroy(s);
}
END_TEST

/* llama numerics keep the scores of a call that fits ATTN_SCORE_CACHE_BYTES between their
 * three passes (then the exponentials); a bigger call recomputes them. Both paths must give
 * the same bits, output and key mass, for both cache dtypes, prefill chunks and one token. */
static void run_llama_cached(tcase *c, bool cached, bool scalar, float *mass)
{
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(c->hd, c->n_group, c->n_q, &s), 0);
    attn_scratch_force_scalar(s, scalar);
    attn_scratch_set_score_cache(s, cached);
    attn_params p = tcase_params(c, mass, true);
    ck_assert_int_eq(attn_forward(&p, c->spans, c->n_spans, s), 0);
    attn_scratch_destroy(s);
}

START_TEST(test_llama_score_cache_same_bits)
{
    for (int k = 0; k < 24; k++) {
        tcase c;
        int32_t G = kGroups[k % 4], hd = kDims[(k / 4) % 4], n_q = k % 3 ? 1 + k % 7 : 1;
        tcase_make(&c, n_q, G, hd, k % 2 ? KS_DTYPE_F16 : KS_DTYPE_F32, 1 + (int32_t)(rnd() % 300),
                   1.0f / sqrtf((float)hd));
        size_t n_out = (size_t)n_q * (size_t)(G * hd + 2), n_mass = (size_t)G * (c.n_keys + 1);
        float *out0 = malloc(n_out * sizeof(float));
        float *m0 = calloc(n_mass, sizeof(float)), *m1 = calloc(n_mass, sizeof(float));
        bool scalar = k % 5 == 0;
        run_llama_cached(&c, false, scalar, m0);
        memcpy(out0, c.out, n_out * sizeof(float));
        memset(c.out, 0, n_out * sizeof(float));
        run_llama_cached(&c, true, scalar, m1);
        for (int32_t t = 0; t < n_q; t++)
            ck_assert_msg(!memcmp(out0 + (size_t)t * (G * hd + 2), c.out + (size_t)t * (G * hd + 2),
                                  (size_t)G * hd * 4),
                          "case %d token %d: cached scores change the output", k, t);
        ck_assert_msg(!memcmp(m0, m1, n_mass * sizeof(float)), "case %d: key mass differs", k);
        free(out0), free(m0), free(m1);
        tcase_free(&c);
    }
}
END_TEST

START_TEST(test_invalid_params)
{
    float k[32] = {0}, v[32] = {0}, q[64] = {0}, out[64];
    int32_t qi[2] = {0, 0};
    attn_span sp = {.k = k, .v = v, .n = 2};
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(0, 1, 1, &s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_scratch_create(16, 0, 1, &s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_scratch_create(16, 1, 0, &s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_scratch_create(16, 2, 2, &s), 0);
    attn_params ok = {.n_q = 2,
                      .n_group = 2,
                      .head_dim = 16,
                      .scale = 0.25f,
                      .q = q,
                      .q_tok_stride = 32,
                      .q_idx = qi,
                      .out = out,
                      .out_tok_stride = 32};
    ck_assert_int_eq(attn_forward(&ok, &sp, 1, s), 0);
    attn_params p = ok;
    p.n_q = 3; /* more than the scratch holds */
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.n_group = 3;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.head_dim = 32;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.q = NULL;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.out = NULL;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.q_tok_stride = 16;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.k_dtype = (ks_dtype)9;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    p = ok, p.scale = NAN;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_forward(&ok, NULL, 1, s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_forward(NULL, &sp, 1, s), KS_ERR_INVALID);
    ck_assert_int_eq(attn_forward(&ok, &sp, 1, NULL), KS_ERR_INVALID);
    attn_span bad = sp;
    bad.n = -1;
    ck_assert_int_eq(attn_forward(&ok, &bad, 1, s), KS_ERR_INVALID);
    bad = sp, bad.k = NULL;
    ck_assert_int_eq(attn_forward(&ok, &bad, 1, s), KS_ERR_INVALID);
    bad = sp, bad.k_stride = 8;
    ck_assert_int_eq(attn_forward(&ok, &bad, 1, s), KS_ERR_INVALID);
    bad = sp, bad.idx = qi; /* a masked span needs query indices */
    p = ok, p.q_idx = NULL;
    ck_assert_int_eq(attn_forward(&p, &bad, 1, s), KS_ERR_INVALID);
    attn_scratch_destroy(s);
}
END_TEST

/* The flash-attention emulation (llama_flash, what `perplexity --attn flash` runs) on random
 * cases: q rounded to the cache type, exact probabilities, and with an f16 cache the weighted
 * sum of V accumulated in f16 (hence the looser bound there). It reports no key mass. */
static void flash_case(int32_t n_q, int32_t G, int32_t hd, ks_dtype dt, double tol)
{
    tcase c;
    tcase_make(&c, n_q, G, hd, dt, 1 + (int32_t)(rnd() % 300), 1.0f / sqrtf((float)hd));
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(hd, G, n_q, &s), 0);
    double *rmass = malloc(sizeof(double) * (size_t)G * (c.n_keys + 1));
    double *rout = malloc(sizeof(double) * (size_t)n_q * G * hd);
    float mass[1];
    attn_params p = tcase_params(&c, mass, true);
    p.llama_flash = true;
    ck_assert_int_eq(attn_forward(&p, c.spans, c.n_spans, s), KS_ERR_INVALID);
    p.key_mass = NULL;
    ck_assert_int_eq(attn_forward(&p, c.spans, c.n_spans, s), 0);
    reference_ex(&c, dt == KS_DTYPE_F16, false, rout, rmass);
    for (int32_t t = 0; t < n_q; t++)
        for (int32_t g = 0; g < G; g++)
            for (int32_t d = 0; d < hd; d++) {
                double got = c.out[(size_t)t * p.out_tok_stride + g * hd + d];
                double want = rout[((size_t)t * G + g) * hd + d];
                ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)),
                              "flash n_q %d G %d hd %d dt %d t %d g %d d %d: %g vs %g", n_q, G, hd,
                              dt, t, g, d, got, want);
            }
    free(rmass), free(rout);
    attn_scratch_destroy(s);
    tcase_free(&c);
}

START_TEST(test_flash_matches_reference)
{
    for (size_t gi = 0; gi < 4; gi++)
        for (size_t di = 0; di < 4; di++) {
            flash_case(1, kGroups[gi], kDims[di], KS_DTYPE_F32, 1e-5);
            flash_case(1 + (int32_t)(rnd() % 9), kGroups[gi], kDims[di], KS_DTYPE_F32, 1e-5);
            flash_case(1, kGroups[gi], kDims[di], KS_DTYPE_F16, 2e-3);
            flash_case(1 + (int32_t)(rnd() % 9), kGroups[gi], kDims[di], KS_DTYPE_F16, 2e-3);
        }
}
END_TEST

/* With an f16 cache the flash kernel rounds its V accumulator to f16 after every key: two
 * equally scored keys with V = 1 and 2^-11 sum to 1 + 2^-11, a tie that f16 rounds to 1, so
 * the output is exactly 0.5 where f32 accumulation gives (1 + 2^-11) / 2. */
START_TEST(test_flash_accumulates_in_f16)
{
    uint16_t k[2 * 16], v[2 * 16];
    float q[16], out[16];
    for (int i = 0; i < 16; i++) {
        k[i] = k[16 + i] = ks_f32_to_f16(0.5f);
        v[i] = ks_f32_to_f16(1.0f);
        v[16 + i] = ks_f32_to_f16(1.0f / 2048.0f);
        q[i] = 0.25f;
    }
    attn_span sp = {.k = k, .v = v, .n = 2};
    attn_scratch *s;
    ck_assert_int_eq(attn_scratch_create(16, 1, 1, &s), 0);
    attn_params p = {.n_q = 1,
                     .n_group = 1,
                     .head_dim = 16,
                     .scale = 0.25f,
                     .k_dtype = KS_DTYPE_F16,
                     .v_dtype = KS_DTYPE_F16,
                     .q = q,
                     .q_tok_stride = 16,
                     .out = out,
                     .out_tok_stride = 16,
                     .llama_numerics = true,
                     .llama_flash = true};
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(out[i] == 0.5f, "%.9g", out[i]);
    p.llama_flash = false, p.llama_numerics = false;
    ck_assert_int_eq(attn_forward(&p, &sp, 1, s), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(out[i] == (1.0f + 1.0f / 2048.0f) / 2.0f, "%.9g", out[i]);
    attn_scratch_destroy(s);
}
END_TEST

static Suite *attention_suite(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_f32_matches_reference);
    tcase_add_test(tc, test_f16_matches_reference);
    tcase_add_loop_test(tc, test_key_mass, 0, 2);
    tcase_add_test(tc, test_llama_numerics);
    tcase_add_loop_test(tc, test_window, 0, 2);
    tcase_add_test(tc, test_llama_score_cache_same_bits);
    tcase_add_test(tc, test_prefill_chunk);
    tcase_add_test(tc, test_no_visible_key_is_zero);
    tcase_add_test(tc, test_llama_rounds_probabilities);
    tcase_add_test(tc, test_invalid_params);
    tcase_add_test(tc, test_flash_matches_reference);
    tcase_add_test(tc, test_flash_accumulates_in_f16);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(attention_suite(), true);
}

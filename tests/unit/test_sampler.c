/* test_sampler.c - the sampler against hand computations: greedy ties, top-k/top-p/min-p
 * filtering, a chi-square test of temperature sampling, seeded reproducibility, penalties,
 * log-probabilities. */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/sampler.h"

static smp_sampler *make(float temp, int32_t top_k, float top_p, float min_p, uint64_t seed,
                         int32_t n_vocab)
{
    smp_params p;
    smp_params_default(&p);
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    smp_sampler *s = NULL;
    ck_assert_int_eq(smp_sampler_create(&p, n_vocab, &s), 0);
    return s;
}

static int32_t draw(smp_sampler *s, const float *logits, int32_t n)
{
    float tmp[1024];
    ck_assert_int_le(n, 1024);
    memcpy(tmp, logits, sizeof(float) * (size_t)n);
    int32_t tok = -1;
    ck_assert_int_eq(smp_sample(s, tmp, n, NULL, 0, &tok), 0);
    ck_assert(tok >= 0 && tok < n);
    return tok;
}

/* Counts over `trials` draws into hist[n]. */
static void histogram(smp_sampler *s, const float *logits, int32_t n, int trials, int *hist)
{
    memset(hist, 0, sizeof(int) * (size_t)n);
    for (int i = 0; i < trials; i++)
        hist[draw(s, logits, n)]++;
}

START_TEST(test_greedy_ties)
{
    smp_sampler *s = make(0.0f, 0, 1.0f, 0.0f, 1, 8);
    const float l1[] = {1, 3, 3, 2};
    ck_assert_int_eq(draw(s, l1, 4), 1);
    const float l2[] = {-INFINITY, -5, NAN, -5};
    ck_assert_int_eq(draw(s, l2, 4), 1);
    const float l3[] = {7, 7, 7, 7, 7, 7, 7, 7};
    ck_assert_int_eq(draw(s, l3, 8), 0);
    smp_sampler_destroy(s);
}
END_TEST

START_TEST(test_top_k_one_is_greedy)
{
    uint64_t x = 12345;
    for (int trial = 0; trial < 50; trial++) {
        float l[300];
        for (int i = 0; i < 300; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            l[i] = (float)((x >> 40) % 50) / 7.0f; /* many ties */
        }
        int32_t want = 0;
        for (int i = 1; i < 300; i++)
            if (l[i] > l[want]) want = i;
        smp_sampler *g = make(0.0f, 0, 1.0f, 0.0f, 1, 300);
        smp_sampler *k = make(1.5f, 1, 1.0f, 0.0f, (uint64_t)trial, 300);
        ck_assert_int_eq(draw(g, l, 300), want);
        ck_assert_int_eq(draw(k, l, 300), want);
        smp_sampler_destroy(g);
        smp_sampler_destroy(k);
    }
}
END_TEST

static const float g_probs[] = {0.5f, 0.3f, 0.15f, 0.05f};

static void logits_of(const float *p, int n, float *l)
{
    for (int i = 0; i < n; i++)
        l[i] = logf(p[i]) + 3.0f; /* shift: softmax-invariant */
}

START_TEST(test_top_k_top_p_min_p)
{
    float l[4];
    int h[4];
    logits_of(g_probs, 4, l);
    /* top-k 2: only {0,1}, renormalized 0.5/0.8 = 0.625 */
    smp_sampler *s = make(1.0f, 2, 1.0f, 0.0f, 7, 4);
    histogram(s, l, 4, 4000, h);
    ck_assert_int_eq(h[2] + h[3], 0);
    ck_assert(fabs(h[0] / 4000.0 - 0.625) < 0.03);
    smp_sampler_destroy(s);
    /* top-p 0.75: cumulative 0.5, 0.8 -> {0,1} */
    s = make(1.0f, 0, 0.75f, 0.0f, 8, 4);
    histogram(s, l, 4, 4000, h);
    ck_assert_int_eq(h[2] + h[3], 0);
    ck_assert(h[1] > 0 && fabs(h[0] / 4000.0 - 0.625) < 0.03);
    smp_sampler_destroy(s);
    /* top-p 0.85: {0,1,2}, token 2 gets 0.15/0.95 */
    s = make(1.0f, 0, 0.85f, 0.0f, 9, 4);
    histogram(s, l, 4, 4000, h);
    ck_assert_int_eq(h[3], 0);
    ck_assert(fabs(h[2] / 4000.0 - 0.15 / 0.95) < 0.03);
    smp_sampler_destroy(s);
    /* top-k 3 then top-p 0.6 over the renormalized {0.5,0.3,0.15}/0.95: 0.526 < 0.6 -> {0,1} */
    s = make(1.0f, 3, 0.6f, 0.0f, 10, 4);
    histogram(s, l, 4, 2000, h);
    ck_assert(h[1] > 0 && h[2] + h[3] == 0);
    smp_sampler_destroy(s);
    /* min-p 0.25: keep p >= 0.125 -> {0,1,2}; min-p 0.5: p >= 0.25 -> {0,1} */
    s = make(1.0f, 0, 1.0f, 0.25f, 11, 4);
    histogram(s, l, 4, 4000, h);
    ck_assert(h[2] > 0 && h[3] == 0);
    smp_sampler_destroy(s);
    s = make(1.0f, 0, 1.0f, 0.5f, 12, 4);
    histogram(s, l, 4, 4000, h);
    ck_assert(h[1] > 0 && h[2] + h[3] == 0);
    smp_sampler_destroy(s);
}
END_TEST

START_TEST(test_top_p_flat_large_vocab)
{
    /* 1000 equal logits, top-p 0.5: the nucleus is the 500 lowest ids (ties by id); this
     * forces the selection heap to grow several times. */
    float l[1000];
    for (int i = 0; i < 1000; i++)
        l[i] = 0.25f;
    smp_sampler *s = make(1.0f, 0, 0.5f, 0.0f, 3, 1000);
    int lo = 1000, hi = -1;
    for (int i = 0; i < 3000; i++) {
        int t = draw(s, l, 1000);
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    ck_assert_int_le(hi, 499);
    ck_assert_int_ge(hi, 480);
    ck_assert_int_le(lo, 20);
    smp_sampler_destroy(s);
}
END_TEST

typedef struct ref_cand {
    int id;
    float l;
} ref_cand;

static int ref_cmp(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return x->id - y->id;
}

START_TEST(test_top_p_against_sorted_reference)
{
    /* random logits (with ties); the reference nucleus comes from a full sort */
    enum { V = 600 };
    float l[V];
    ref_cand r[V];
    uint64_t x = 99;
    for (int trial = 0; trial < 5; trial++) {
        for (int i = 0; i < V; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            l[i] = (float)((x >> 33) % 400) / 50.0f;
            r[i] = (ref_cand){i, l[i]};
        }
        qsort(r, V, sizeof(r[0]), ref_cmp);
        double z = 0, cum = 0;
        for (int i = 0; i < V; i++)
            z += exp((double)r[i].l - r[0].l);
        const double top_p = 0.3 + 0.1 * trial;
        int in[V] = {0}, n_in = 0;
        for (int i = 0; i < V && cum < top_p; i++) {
            cum += exp((double)r[i].l - r[0].l) / z;
            in[r[i].id] = 1;
            n_in++;
        }
        smp_sampler *s = make(1.0f, 0, (float)top_p, 0.0f, (uint64_t)trial, V);
        int seen[V] = {0}, n_seen = 0;
        for (int k = 0; k < 4000; k++) {
            int t = draw(s, l, V);
            ck_assert_msg(in[t], "trial %d: token %d outside the nucleus", trial, t);
            n_seen += !seen[t];
            seen[t] = 1;
        }
        ck_assert_int_gt(n_seen, n_in * 3 / 4); /* the nucleus is not cut short */
        smp_sampler_destroy(s);
    }
}
END_TEST

/* Pearson chi-square against expected probabilities; 3 degrees of freedom, the 0.001 critical
 * value is 16.27. The seed is fixed, so the test is deterministic. */
static double chi_square(const int *h, const double *p, int n, int trials)
{
    double chi = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * trials;
        chi += (h[i] - e) * (h[i] - e) / e;
    }
    return chi;
}

START_TEST(test_temperature_distribution)
{
    const float probs[] = {0.1f, 0.2f, 0.3f, 0.4f};
    float l[4];
    int h[4];
    logits_of(probs, 4, l);
    smp_sampler *s = make(1.0f, 0, 1.0f, 0.0f, 2024, 4);
    histogram(s, l, 4, 20000, h);
    const double p1[] = {0.1, 0.2, 0.3, 0.4};
    ck_assert_msg(chi_square(h, p1, 4, 20000) < 16.27, "chi2 %f", chi_square(h, p1, 4, 20000));
    smp_sampler_destroy(s);
    /* T = 2: p ~ sqrt(p) */
    double p2[4], z = 0;
    for (int i = 0; i < 4; i++)
        z += p2[i] = sqrt(p1[i]);
    for (int i = 0; i < 4; i++)
        p2[i] /= z;
    s = make(2.0f, 0, 1.0f, 0.0f, 77, 4);
    histogram(s, l, 4, 20000, h);
    ck_assert_msg(chi_square(h, p2, 4, 20000) < 16.27, "chi2 %f", chi_square(h, p2, 4, 20000));
    /* and it is clearly not the T = 1 distribution */
    ck_assert(chi_square(h, p1, 4, 20000) > 100);
    smp_sampler_destroy(s);
}
END_TEST

START_TEST(test_seed_reproducible)
{
    float l[50];
    for (int i = 0; i < 50; i++)
        l[i] = sinf((float)i) * 2;
    smp_sampler *a = make(0.9f, 40, 0.95f, 0.02f, 42, 50);
    smp_sampler *b = make(0.9f, 40, 0.95f, 0.02f, 42, 50);
    smp_sampler *c = make(0.9f, 40, 0.95f, 0.02f, 43, 50);
    int32_t sa[200], sc[200];
    int same = 0;
    for (int i = 0; i < 200; i++) {
        sa[i] = draw(a, l, 50);
        ck_assert_int_eq(draw(b, l, 50), sa[i]);
        sc[i] = draw(c, l, 50);
        same += sa[i] == sc[i];
    }
    ck_assert_int_lt(same, 150);
    smp_sampler_reseed(c, 42);
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(draw(c, l, 50), sa[i]);
    smp_sampler_destroy(a);
    smp_sampler_destroy(b);
    smp_sampler_destroy(c);
}
END_TEST

START_TEST(test_penalties)
{
    smp_params p;
    smp_params_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.repeat_last_n = -1;
    smp_sampler *s;
    ck_assert_int_eq(smp_sampler_create(&p, 4, &s), 0);
    const int32_t hist[] = {0, 1, 0, 3};
    for (int rep = 0; rep < 2; rep++) { /* twice: the count scratch must be restored */
        float l[] = {2.0f, -1.0f, 0.5f, 3.0f};
        int32_t tok;
        ck_assert_int_eq(smp_sample(s, l, 4, hist, 4, &tok), 0);
        ck_assert_float_eq_tol(l[0], 2.0f / 2 - 2 * 0.25f - 0.5f, 1e-6);
        ck_assert_float_eq_tol(l[1], -1.0f * 2 - 0.25f - 0.5f, 1e-6);
        ck_assert_float_eq_tol(l[2], 0.5f, 1e-6);
        ck_assert_float_eq_tol(l[3], 3.0f / 2 - 0.25f - 0.5f, 1e-6);
        ck_assert_int_eq(tok, 3);
    }
    smp_sampler_destroy(s);
    /* window of 2: only {0, 3} count */
    p.repeat_last_n = 2;
    ck_assert_int_eq(smp_sampler_create(&p, 4, &s), 0);
    float l[] = {2.0f, -1.0f, 0.5f, 3.0f};
    int32_t tok;
    ck_assert_int_eq(smp_sample(s, l, 4, hist, 4, &tok), 0);
    ck_assert_float_eq_tol(l[0], 1.0f - 0.25f - 0.5f, 1e-6);
    ck_assert_float_eq_tol(l[1], -1.0f, 1e-6);
    ck_assert_float_eq_tol(l[3], 0.75f, 1e-6);
    /* out-of-range history is refused before anything changes */
    const int32_t badh[] = {1, 9};
    float l2[] = {1, 2, 3, 4};
    ck_assert_int_eq(smp_sample(s, l2, 4, badh, 2, &tok), KS_ERR_INVALID);
    ck_assert_float_eq(l2[1], 2.0f);
    smp_sampler_destroy(s);
}
END_TEST

START_TEST(test_logprobs)
{
    const float l[] = {1.0f, 2.0f, 3.0f, 3.0f, -INFINITY};
    double z = exp(1.0) + exp(2.0) + 2 * exp(3.0);
    float lp;
    int32_t ids[3];
    float lps[3];
    ck_assert_int_eq(smp_logprobs(l, 5, 1, 3, &lp, ids, lps), 0);
    ck_assert_double_eq_tol(lp, 2.0 - log(z), 1e-5);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_int_eq(ids[1], 3);
    ck_assert_int_eq(ids[2], 1);
    ck_assert_double_eq_tol(lps[0], 3.0 - log(z), 1e-5);
    ck_assert_double_eq_tol(lps[2], 2.0 - log(z), 1e-5);
    ck_assert_int_eq(smp_logprobs(l, 5, 4, 0, &lp, NULL, NULL), 0);
    ck_assert(isinf(lp) && lp < 0);
    ck_assert_int_eq(smp_logprobs(l, 5, 5, 0, &lp, NULL, NULL), KS_ERR_INVALID);
    ck_assert_int_eq(smp_logprobs(l, 5, 0, 6, &lp, ids, lps), KS_ERR_INVALID);
}
END_TEST

START_TEST(test_invalid)
{
    smp_params p;
    smp_params_default(&p);
    smp_sampler *s;
    ck_assert_int_eq(smp_sampler_create(&p, 0, &s), KS_ERR_INVALID);
    ks_diag d;
    p.top_p = 1.5f;
    ck_assert_int_eq(smp_params_validate(&p, &d), KS_ERR_INVALID);
    ck_assert_str_eq(d.key, "top_p");
    ck_assert_int_eq(smp_sampler_create(&p, 10, &s), KS_ERR_INVALID);
    smp_params_default(&p);
    p.temperature = NAN;
    ck_assert_int_eq(smp_params_validate(&p, &d), KS_ERR_INVALID);
    smp_params_default(&p);
    ck_assert_int_eq(smp_sampler_create(&p, 3, &s), 0);
    float l[] = {-INFINITY, NAN, -INFINITY, 0};
    int32_t tok;
    ck_assert_int_eq(smp_sample(s, l, 3, NULL, 0, &tok), KS_ERR_INVALID);
    ck_assert_int_eq(smp_sample(s, l, 4, NULL, 0, &tok), KS_ERR_INVALID); /* > n_vocab */
    smp_sampler_destroy(s);
    smp_sampler_destroy(NULL);
    ck_assert(smp_seed_random() != smp_seed_random());
}
END_TEST

static Suite *sampler_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_greedy_ties);
    tcase_add_test(tc, test_top_k_one_is_greedy);
    tcase_add_test(tc, test_top_k_top_p_min_p);
    tcase_add_test(tc, test_top_p_flat_large_vocab);
    tcase_add_test(tc, test_top_p_against_sorted_reference);
    tcase_add_test(tc, test_temperature_distribution);
    tcase_add_test(tc, test_seed_reproducible);
    tcase_add_test(tc, test_penalties);
    tcase_add_test(tc, test_logprobs);
    tcase_add_test(tc, test_invalid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(sampler_suite(), true);
}

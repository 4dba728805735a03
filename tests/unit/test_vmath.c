/* test_vmath.c - core/vmath: the AVX-512 softmax exp-sum and SwiGLU (with the groups they
 * hand back to the portable code) give the portable code's bits for every length (tails included)
 * and for the inputs the fast lanes hand back (NaN, infinities, subnormal and overflowing results);
 * the portable code is within a few ulp of a double-precision reference.
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/vmath.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float rnd_f(float scale)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((float)((g_rng >> 20) & 0xFFFFF) / 1048576.0f - 0.5f) * 2.0f * scale;
}

/* Inputs: random in [-scale, scale], plus one special value at `at` (when at < n). */
static void fill(float *x, int32_t n, float scale, int32_t at, float special)
{
    for (int32_t i = 0; i < n; i++)
        x[i] = rnd_f(scale);
    if (at < n) x[at] = special;
}

static bool same_bits(const float *a, const float *b, int32_t n)
{
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

static const float k_specials[] = {0.0f,    -0.0f,  88.0f,    -88.0f,    -100.0f, 100.0f,
                                   -300.0f, 300.0f, INFINITY, -INFINITY, NAN};

START_TEST(test_exp_sum_bits)
{
    if (!vm_have_avx512()) return; /* the portable form is all there is */
    float x[200], y0[200], y1[200];
    for (int32_t n = 1; n <= 200; n += (n < 40 ? 1 : 13))
        for (size_t s = 0; s <= sizeof(k_specials) / sizeof(k_specials[0]); s++) {
            bool sp = s < sizeof(k_specials) / sizeof(k_specials[0]);
            fill(x, n, 30.0f, sp ? (int32_t)(s * 7) % n : n, sp ? k_specials[s] : 0);
            float max = -INFINITY;
            for (int32_t i = 0; i < n; i++)
                max = x[i] > max ? x[i] : max;
            if (!isfinite(max)) max = 0.0f;
            memset(y0, 0, sizeof(y0));
            memset(y1, 0, sizeof(y1));
            double s0 = vm_exp_sum_scalar(y0, x, n, max), s1 = vm_exp_sum(y1, x, n, max);
            ck_assert_msg(same_bits(y0, y1, n), "exp values differ, n=%d special %zu", n, s);
            ck_assert_msg(memcmp(&s0, &s1, sizeof(double)) == 0 || (isnan(s0) && isnan(s1)),
                          "sums %.17g vs %.17g, n=%d", s0, s1, n);
            ck_assert(y1[n - 1] == y1[n - 1] || isnan(x[n - 1]));
        }
}
END_TEST

START_TEST(test_swiglu_bits)
{
    if (!vm_have_avx512()) return;
    float g0[300], g1[300], u[300];
    for (int32_t n = 1; n <= 300; n += (n < 40 ? 1 : 17))
        for (size_t s = 0; s <= sizeof(k_specials) / sizeof(k_specials[0]); s++) {
            bool sp = s < sizeof(k_specials) / sizeof(k_specials[0]);
            fill(g0, n, 12.0f, sp ? (int32_t)(s * 5) % n : n, sp ? k_specials[s] : 0);
            fill(u, n, 3.0f, n, 0);
            memcpy(g1, g0, sizeof(float) * (size_t)n);
            vm_swiglu_scalar(g0, u, n);
            vm_swiglu(g1, u, n);
            for (int32_t i = 0; i < n; i++)
                ck_assert_msg(memcmp(&g0[i], &g1[i], 4) == 0 || (isnan(g0[i]) && isnan(g1[i])),
                              "swiglu n=%d i=%d: %.9g vs %.9g", n, i, g0[i], g1[i]);
        }
}
END_TEST

/* The dispatching entry points against double precision: exp within 2 ulp-ish relative. */
START_TEST(test_against_double)
{
    float x[257], y[257], g[257], u[257];
    fill(x, 257, 20.0f, 257, 0);
    float max = -INFINITY;
    for (int i = 0; i < 257; i++)
        max = x[i] > max ? x[i] : max;
    double sum = vm_exp_sum(y, x, 257, max), want = 0;
    for (int i = 0; i < 257; i++) {
        double e = exp((double)x[i] - (double)max);
        want += e;
        ck_assert_msg(fabs(y[i] - e) <= 4e-7 * e + 1e-30, "exp(%g) = %g, want %g", x[i] - max, y[i],
                      e);
    }
    ck_assert(fabs(sum - want) <= 1e-6 * want);
    fill(g, 257, 10.0f, 257, 0);
    fill(u, 257, 2.0f, 257, 0);
    float g0[257];
    memcpy(g0, g, sizeof(g));
    vm_swiglu(g, u, 257);
    for (int i = 0; i < 257; i++) {
        double a = g0[i], w = a / (1.0 + exp(-a)) * u[i];
        ck_assert_msg(fabs(g[i] - w) <= 1e-6 * fabs(w) + 1e-30, "swiglu(%g) = %g, want %g", a, g[i],
                      w);
    }
}
END_TEST

static Suite *vmath_suite(void)
{
    Suite *s = suite_create("vmath");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_exp_sum_bits);
    tcase_add_test(tc, test_swiglu_bits);
    tcase_add_test(tc, test_against_double);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(vmath_suite(), true);
}

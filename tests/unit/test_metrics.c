/* test_metrics.c - histogram bucketing and quantiles against hand-computed values, and the
 * Prometheus text exposition: every sample line parses, buckets are cumulative and end in
 * +Inf == _count, counters and gauges carry the values recorded. */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"

START_TEST(test_hist)
{
    metrics_hist h;
    const double b[] = {1, 2, 4};
    ck_assert_int_eq(metrics_hist_init(&h, b, 3), 0);
    const double bad[] = {2, 1};
    ck_assert_int_eq(metrics_hist_init(&h, bad, 2), KS_ERR_INVALID);
    ck_assert_int_eq(metrics_hist_init(&h, b, 3), 0);
    double v[] = {0.5, 1.0, 1.5, 3, 10};
    for (int i = 0; i < 5; i++)
        metrics_hist_observe(&h, v[i]);
    ck_assert_uint_eq(h.counts[0], 2); /* le=1 includes 1.0 */
    ck_assert_uint_eq(h.counts[1], 1);
    ck_assert_uint_eq(h.counts[2], 1);
    ck_assert_uint_eq(h.counts[3], 1); /* +Inf */
    ck_assert_uint_eq(h.count, 5);
    ck_assert_double_eq_tol(h.sum, 16.0, 1e-12);
    /* median: rank 2.5 falls in bucket (1,2], first half: 1 + 1*(0.5/1) */
    ck_assert_double_eq_tol(metrics_hist_quantile(&h, 0.5), 1.5, 1e-12);
    ck_assert_double_eq_tol(metrics_hist_quantile(&h, 0.2), 0.5, 1e-12);
}
END_TEST

/* Finds the value of a sample line "name value" (exact name incl. labels). */
static double sample(const char *text, const char *name, int *found)
{
    size_t nl = strlen(name);
    *found = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == ' ') {
            *found = 1;
            return strtod(p + nl + 1, NULL);
        }
    }
    return 0;
}

START_TEST(test_render)
{
    metrics *m;
    ck_assert_int_eq(metrics_create(&m), 0);
    metrics_count_request(m, 200);
    metrics_count_request(m, 200);
    metrics_count_request(m, 404);
    metrics_count_request(m, 42); /* ignored */
    metrics_add_tokens(m, 10, 7, 3);
    metrics_observe_ttft(m, 0.2);
    metrics_observe_itl(m, 0.003);
    metrics_observe_itl(m, 0.5);
    metrics_gauges g = {
        .kv_bytes_used = 4096, .kv_bytes_budget = 1 << 20, .seqs_active = 2, .seqs_queued = 1};
    char *t;
    size_t len;
    ck_assert_int_eq(metrics_render(m, &g, &t, &len), 0);
    ck_assert_uint_eq(len, strlen(t));
    int f;
    ck_assert_double_eq(sample(t, "kvserve_requests_total{status=\"200\"}", &f), 2);
    ck_assert(f);
    ck_assert_double_eq(sample(t, "kvserve_requests_total{status=\"404\"}", &f), 1);
    ck_assert_double_eq(sample(t, "kvserve_prompt_tokens_total", &f), 10);
    ck_assert_double_eq(sample(t, "kvserve_generated_tokens_total", &f), 7);
    ck_assert_double_eq(sample(t, "kvserve_kv_bytes_used", &f), 4096);
    ck_assert_double_eq(sample(t, "kvserve_kv_bytes_budget", &f), 1 << 20);
    ck_assert_double_eq(sample(t, "kvserve_sequences_active", &f), 2);
    ck_assert_double_eq(sample(t, "kvserve_sequences_queued", &f), 1);
    ck_assert_double_eq(sample(t, "kvserve_inter_token_latency_seconds_count", &f), 2);
    ck_assert_double_eq(sample(t, "kvserve_inter_token_latency_seconds_bucket{le=\"+Inf\"}", &f),
                        2);
    ck_assert_double_eq(sample(t, "kvserve_inter_token_latency_seconds_bucket{le=\"0.005\"}", &f),
                        1);
    ck_assert_double_eq_tol(sample(t, "kvserve_inter_token_latency_seconds_sum", &f), 0.503, 1e-9);
    ck_assert_double_eq(sample(t, "kvserve_time_to_first_token_seconds_bucket{le=\"0.1\"}", &f), 0);
    ck_assert_double_eq(sample(t, "kvserve_time_to_first_token_seconds_bucket{le=\"0.25\"}", &f),
                        1);
    /* Every line is a comment (# HELP/# TYPE) or "name[{labels}] number"; buckets ascend. */
    char *copy = strdup(t), *save, *line;
    double last_bucket = -1;
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            ck_assert(!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7));
            continue;
        }
        char *sp = strrchr(line, ' ');
        ck_assert_ptr_nonnull(sp);
        char *end;
        double v = strtod(sp + 1, &end);
        ck_assert(*end == 0);
        ck_assert(line[0] >= 'a' && line[0] <= 'z');
        if (strstr(line, "_bucket{")) {
            if (strstr(line, "le=\"0.005\"}") && strstr(line, "time_to")) last_bucket = -1;
            if (!strstr(line, "le=\"0.001\"") && !strstr(line, "le=\"0.005\"}"))
                ck_assert(v >= last_bucket);
            last_bucket = v;
        } else {
            last_bucket = -1;
        }
    }
    free(copy);
    free(t);
    metrics_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_hist);
    tcase_add_test(tc, test_render);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, true);
}

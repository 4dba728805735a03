/* test_sse.c - SSE framing byte for byte and the stop-string filter (split stop strings,
 * held-back prefixes, several stops, flush), checked against hand-derived expectations and a
 * naive reference (search the whole text at once). */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "server/sse.h"

START_TEST(test_frame)
{
    size_t n;
    char *f = sse_frame("{\"a\":1}", 7, &n);
    ck_assert_uint_eq(n, strlen("data: {\"a\":1}\n\n"));
    ck_assert(!memcmp(f, "data: {\"a\":1}\n\n", n));
    free(f);
    f = sse_frame("x\ny", 3, &n);
    ck_assert_uint_eq(n, strlen("data: x\ndata: y\n\n"));
    ck_assert(!memcmp(f, "data: x\ndata: y\n\n", n));
    free(f);
    f = sse_frame("", 0, &n);
    ck_assert_uint_eq(n, 8);
    ck_assert(!memcmp(f, "data: \n\n", n));
    free(f);
    ck_assert_str_eq(SSE_DONE, "data: [DONE]\n\n");
}
END_TEST

/* Feeds pieces; returns everything released (push + flush) in a static buffer. */
static const char *run(const char *const *stops, size_t n_stops, const char *const *pieces,
                       bool *stopped)
{
    static char all[1024];
    char out[512];
    size_t len = 0;
    sse_stop s;
    ck_assert_int_eq(sse_stop_init(&s, stops, n_stops), 0);
    for (size_t i = 0; pieces[i]; i++) {
        long k = sse_stop_push(&s, pieces[i], strlen(pieces[i]), out, sizeof(out));
        ck_assert_int_ge(k, 0);
        memcpy(all + len, out, (size_t)k);
        len += (size_t)k;
    }
    long k = sse_stop_flush(&s, out, sizeof(out));
    ck_assert_int_ge(k, 0);
    memcpy(all + len, out, (size_t)k);
    len += (size_t)k;
    all[len] = 0;
    *stopped = s.stopped;
    sse_stop_deinit(&s);
    return all;
}

START_TEST(test_stop_split_across_pieces)
{
    const char *stops[] = {"\n\n"};
    const char *pieces[] = {"Hello", "\n", "\n", "world", NULL};
    bool st;
    ck_assert_str_eq(run(stops, 1, pieces, &st), "Hello");
    ck_assert(st);
}
END_TEST

START_TEST(test_stop_prefix_released_when_not_matching)
{
    const char *stops[] = {"END"};
    const char *p1[] = {"a E", "N", "x", NULL};
    bool st;
    ck_assert_str_eq(run(stops, 1, p1, &st), "a ENx");
    ck_assert(!st);
    /* a held prefix at the end is released by flush */
    const char *p2[] = {"abc EN", NULL};
    ck_assert_str_eq(run(stops, 1, p2, &st), "abc EN");
    ck_assert(!st);
}
END_TEST

START_TEST(test_stop_hold_back_amount)
{
    const char *stops[] = {"STOP"};
    sse_stop s;
    char out[64];
    ck_assert_int_eq(sse_stop_init(&s, stops, 1), 0);
    ck_assert_int_eq(sse_stop_push(&s, "abcST", 5, out, sizeof(out)), 3); /* "ST" held */
    ck_assert(!memcmp(out, "abc", 3));
    ck_assert_int_eq(sse_stop_push(&s, "O", 1, out, sizeof(out)), 0);
    ck_assert_int_eq(sse_stop_push(&s, "P tail", 6, out, sizeof(out)), 0);
    ck_assert(s.stopped);
    ck_assert_int_eq(sse_stop_push(&s, "more", 4, out, sizeof(out)), 0);
    sse_stop_deinit(&s);
}
END_TEST

START_TEST(test_stop_earliest_of_several)
{
    const char *stops[] = {"world", "lo w", ""};
    const char *pieces[] = {"hel", "lo wor", "ld!", NULL};
    bool st;
    ck_assert_str_eq(run(stops, 3, pieces, &st), "hel");
    ck_assert(st);
}
END_TEST

START_TEST(test_stop_matches_reference)
{
    /* Every split of a text into two pieces gives the naive answer: text up to the first
     * occurrence of any stop. */
    const char *text = "the quick brown fox jumps";
    const char *stops[] = {"fox", "own f"};
    const char *ref_end = strstr(text, "own f");
    size_t ref_len = (size_t)(ref_end - text);
    for (size_t cut = 0; cut <= strlen(text); cut++) {
        char a[64], b[64];
        memcpy(a, text, cut);
        a[cut] = 0;
        strcpy(b, text + cut);
        const char *pieces[] = {a, b, NULL};
        bool st;
        const char *got = run(stops, 2, pieces, &st);
        ck_assert_uint_eq(strlen(got), ref_len);
        ck_assert(!strncmp(got, text, ref_len));
        ck_assert(st);
    }
}
END_TEST

START_TEST(test_no_stops_passthrough)
{
    const char *pieces[] = {"a", "b\n\n", "c", NULL};
    bool st;
    ck_assert_str_eq(run(NULL, 0, pieces, &st), "ab\n\nc");
    ck_assert(!st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_frame);
    tcase_add_test(tc, test_stop_split_across_pieces);
    tcase_add_test(tc, test_stop_prefix_released_when_not_matching);
    tcase_add_test(tc, test_stop_hold_back_amount);
    tcase_add_test(tc, test_stop_earliest_of_several);
    tcase_add_test(tc, test_stop_matches_reference);
    tcase_add_test(tc, test_no_stops_passthrough);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, true);
}

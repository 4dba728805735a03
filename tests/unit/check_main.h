/* check_main.h - the one runner every unit test program ends with: runs a Check suite with
 * normal output and turns the result into the process exit status that meson reads. */
#ifndef KVSERVE_TEST_CHECK_MAIN_H
#define KVSERVE_TEST_CHECK_MAIN_H

#include <check.h>
#include <pthread.h>
#include <stdbool.h>

/* Check records the file:line of every passing assertion (_mark_point: one write(2) to its
 * message file each), so that a test that crashes is blamed on the last assertion it passed.
 * Tests that assert inside loops of a million steps spent most of their time there (grammar:
 * 2.6 M writes). ks_mark_point writes a location only when it differs from the last one this
 * process wrote, so the recorded location is the one Check would have recorded. A forked
 * child (each test, in fork mode) forgets the memory, and writes its first location. */
static const char *ks_mark_file;
static int ks_mark_line;

static inline void ks_mark_forget(void)
{
    ks_mark_file = NULL;
}

static inline void ks_mark_point(const char *file, int line)
{
    if (file == ks_mark_file && line == ks_mark_line) return;
    ks_mark_file = file;
    ks_mark_line = line;
    _mark_point(file, line);
}
#undef ck_assert_msg
#define ck_assert_msg(expr, ...)                                                                   \
    (expr) ? ks_mark_point(__FILE__, __LINE__)                                                     \
           : _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed", ##__VA_ARGS__)

/* fork: run each test in a child process (Check's default; set false to debug, or for tests
 * that share a costly fixture through globals). */
static inline int ks_run_suite(Suite *s, bool fork)
{
    static bool registered;
    if (!registered) registered = pthread_atfork(NULL, NULL, ks_mark_forget) == 0;
    SRunner *sr = srunner_create(s);
    if (!fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif

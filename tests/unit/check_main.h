/* check_main.h - the one runner every unit test program ends with: runs a Check suite with
 * normal output and turns the result into the process exit status that meson reads. */
#ifndef KVSERVE_TEST_CHECK_MAIN_H
#define KVSERVE_TEST_CHECK_MAIN_H

#include <check.h>
#include <stdbool.h>

/* fork: run each test in a child process (Check's default; set false to debug, or for tests
 * that share a costly fixture through globals). */
static inline int ks_run_suite(Suite *s, bool fork)
{
    SRunner *sr = srunner_create(s);
    if (!fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif

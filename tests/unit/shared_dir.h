/* shared_dir.h - test support: where ../shared (models, vocabularies, llama.cpp references)
 * is. meson sets KVSERVE_SHARED from the source root (tests/meson.build); a test run any other
 * way must set it too. There is no fallback path: without the fixtures a test would check
 * nothing, so it stops with a message that says what to do. */
#ifndef KVSERVE_TEST_SHARED_DIR_H
#define KVSERVE_TEST_SHARED_DIR_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static inline const char *ks_test_shared_dir(void)
{
    const char *s = getenv("KVSERVE_SHARED");
    struct stat st;
    if (!s || !s[0] || stat(s, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "test: KVSERVE_SHARED=%s is not the shared fixtures directory; run the tests with "
                "`meson test`, which sets it to ../shared beside the source tree\n",
                s ? s : "(unset)");
        exit(1);
    }
    return s;
}

#endif

/* unicode_data.h - the generated table of code point flags (unicode_data.c, written by
 * scripts/gen_unicode.py): runs of code points with equal UNI_* flags (unicode.h), sorted by
 * start. Its own header so the generated file depends on nothing: unicode.c reads the table,
 * the table knows nothing of unicode.c. */
#ifndef KVSERVE_UNICODE_DATA_H
#define KVSERVE_UNICODE_DATA_H

#include <stdint.h>

typedef struct uni_run {
    uint32_t start;
    uint32_t flags;
} uni_run;

extern const uni_run uni_runs[];
extern const uint32_t uni_run_count;

#endif

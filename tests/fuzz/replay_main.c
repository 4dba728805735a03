/* replay_main.c - the plain driver of every fuzz target: runs LLVMFuzzerTestOneInput once
 * on each file named on the command line (a seed corpus, or a crash to reproduce), with any
 * compiler and no libFuzzer. Linked into the fuzz_<name>_replay programs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvserve/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as with libFuzzer: a target's one-time set-up (weak: absent in most targets). */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

int main(int argc, char **argv)
{
    int failed = 0;
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        char *buf;
        size_t len;
        ks_diag d;
        if (ks_read_file(argv[i], &buf, &len, &d)) {
            fprintf(stderr, "%s\n", d.msg);
            failed = 1;
            continue;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
        free(buf);
    }
    printf("ran %d input(s)\n", argc - 1);
    return failed;
}

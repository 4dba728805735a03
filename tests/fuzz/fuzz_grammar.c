/* fuzz_grammar.c - fuzz target for the GBNF parser and the matcher.
 *
 * The input is split at its first NUL byte: the part before is grammar source, the part
 * after is text to run through the compiled grammar byte by byte. Every input must either
 * compile or fail with a "line L, column C" diagnostic inside the input; a compiled grammar
 * must then accept or reject each byte without crashing, and its state must stay coherent
 * (a rejected byte leaves the matcher unchanged, so feeding the rest continues cleanly).
 * At most FUZZ_MATCH_BYTES bytes are matched: matching is linear in the text, so longer texts
 * add cost and little coverage (the build also lowers GRAM_MAX_ELEMS/NODES, meson.build).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/grammar.h"

#define FUZZ_MATCH_BYTES 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t n_src = nul ? (size_t)(nul - data) : size;
    gram *g = NULL;
    ks_diag d;
    int rc = gram_compile(src, n_src, &g, &d);
    if (rc) {
        if (g || !d.msg[0] || (rc != KS_ERR_NOMEM && d.line < 1)) abort();
        int lines = 1;
        for (size_t i = 0; i < n_src; i++)
            lines += src[i] == '\n';
        if (d.line > lines) abort();
        return 0;
    }
    gram_matcher *m = NULL;
    if (gram_matcher_create(g, NULL, &m) == 0) {
        size_t end =
            nul && size - n_src - 1 > FUZZ_MATCH_BYTES ? n_src + 1 + FUZZ_MATCH_BYTES : size;
        for (size_t i = n_src + 1; nul && i < end; i++) {
            bool done = gram_matcher_is_done(m);
            int r = gram_matcher_accept_bytes(m, (const char *)data + i, 1);
            if (r == 0 && done) abort(); /* done: nothing more can be accepted */
        }
        gram_matcher_destroy(m);
    }
    gram_destroy(g);
    return 0;
}

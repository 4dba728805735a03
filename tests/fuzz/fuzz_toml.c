/* fuzz_toml.c - fuzz target for the TOML reader and the configuration loader.
 *
 * Built with -fsanitize=fuzzer (clang) it is a libFuzzer target; with replay_main.c it runs
 * every file named on the command line once (a corpus replayer for regression tests and
 * sanitizer builds, any compiler). Every input must either parse or fail with a
 * diagnostic that names a line inside the input; nothing may crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "server/toml.h"

/* Walks the whole tree so every accessor runs over fuzzed nodes. */
static size_t walk(const toml_node *n, int depth)
{
    size_t count = 1;
    toml_kind k = toml_node_kind(n);
    if (toml_node_line(n) < 1) abort();
    if (k == TOML_STRING) {
        size_t len;
        const char *s = toml_node_string(n, &len);
        if (s[len] != 0) abort();
    } else if (k == TOML_ARRAY || k == TOML_TABLE) {
        if (depth > 200) abort();
        for (size_t i = 0; i < toml_node_count(n); i++) {
            if (k == TOML_TABLE && toml_table_get(n, toml_table_key(n, i)) == NULL) abort();
            count += walk(toml_node_at(n, i), depth + 1);
        }
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    toml_doc *doc = NULL;
    ks_diag d;
    int rc = toml_parse((const char *)data, size, "fuzz.toml", &doc, &d);
    if (rc == 0) {
        walk(toml_doc_root(doc), 0);
        toml_doc_free(doc);
    } else {
        int lines = 1;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        if (doc != NULL || d.line < 1 || d.line > lines || strncmp(d.msg, "fuzz.toml:", 10))
            abort();
    }
    cfg c;
    cfg_defaults(&c);
    rc = cfg_load_string((const char *)data, size, "fuzz.toml", &c, &d);
    if (rc != 0 && strncmp(d.msg, "fuzz.toml:", 10) != 0) abort();
    return 0;
}

/* fuzz_gguf.c - fuzz target for the GGUF reader (gguf_open_memory).
 *
 * Built two ways: as a libFuzzer target (clang, -Dfuzz=true: LLVMFuzzerTestOneInput), and
 * with replay_main.c as a plain driver that runs the same function on each file named on the
 * command line (replaying a corpus or a crash without clang). The input is copied to
 * a buffer of exactly its size so a sanitizer sees any read past the end. When a file opens,
 * every key, string element and tensor byte range is touched: the reader's invariants say
 * they all lie inside the image.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned g_sink;

static void walk(const gguf_file *f)
{
    unsigned sum = 0;
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        gguf_str k = gguf_kv_key(f, i), s;
        sum += (uint8_t)k.ptr[0] + (uint8_t)k.ptr[k.len - 1];
        for (uint64_t e = 0; gguf_kv_arr_str(f, i, e, &s) == 0; e++)
            sum += s.len ? (uint8_t)s.ptr[s.len - 1] : 0u;
        char key[300];
        snprintf(key, sizeof(key), "%.*s", (int)(k.len < 299 ? k.len : 299), k.ptr);
        gguf_type et;
        uint64_t n;
        const void *arr;
        if (gguf_get_arr(f, key, &et, &n, &arr) == 0 && n && et != GGUF_TYPE_STRING)
            sum += ((const uint8_t *)arr)[0];
        int64_t iv;
        float fv;
        if (gguf_get_i64(f, key, &iv) == 0) sum += (unsigned)iv;
        if (gguf_get_f32(f, key, &fv) == 0) sum += fv > 0;
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const uint8_t *p = t->data;
        sum += p[0] + p[t->nbytes - 1];
        char name[300];
        snprintf(name, sizeof(name), "%.*s", (int)(t->name.len < 299 ? t->name.len : 299),
                 t->name.ptr);
        if (t->name.len < 299 && gguf_find_tensor(f, name) != t) abort();
    }
    g_sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    gguf_file *f = NULL;
    ks_diag d;
    if (gguf_open_memory(copy, size, &f, &d) == 0) {
        walk(f);
        gguf_close(f);
    } else if (d.msg[0] == 0) {
        abort(); /* every failure must say why */
    }
    free(copy);
    return 0;
}

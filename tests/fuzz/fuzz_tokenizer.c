/* fuzz_tokenizer.c - fuzz target for the tokenizers: arbitrary bytes are encoded (with or
 * without special-token parsing, or with a plain range) by an SPM or a byte-level BPE vocab,
 * decoded, streamed, and the ids must stay in range. The first byte of an input picks the
 * vocab and the mode (so one input costs one encoding pass, not six: libFuzzer explores the
 * six combinations through that byte); the rest is the text. The vocabs are loaded once, in
 * LLVMFuzzerInitialize. The replay driver (replay_main.c) runs each file named on its command
 * line as libFuzzer would, then through all six combinations as a whole text (real seeds).
 * Vocabs: $KVSERVE_SHARED/vocab/ggml-vocab-{llama-spm,qwen2}.gguf.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tok_vocab *fuzz_vocabs[2];

static tok_vocab *fuzz_load(const char *name)
{
    const char *sh = getenv("KVSERVE_SHARED");
    char path[1024];
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf", sh ? sh : "/work/shared", name);
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ks_diag d;
    if (gguf_open(path, &f, &d) != 0 || tok_vocab_load(f, &v, &d) != 0) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, d.msg);
        abort();
    }
    gguf_close(f);
    return v;
}

static void fuzz_one(const tok_vocab *v, const char *text, size_t n, bool special)
{
    int32_t cnt = tok_encode(v, text, n, true, special, NULL, 0);
    if (cnt < 0) {
        abort();
    }
    int32_t *ids = malloc(((size_t)cnt + 1) * sizeof(*ids));
    if (!ids || tok_encode(v, text, n, true, special, ids, cnt) != cnt) {
        abort();
    }
    for (int32_t i = 0; i < cnt; i++) {
        if (ids[i] < 0 || ids[i] >= tok_vocab_n_tokens(v)) {
            abort();
        }
    }
    int32_t need = tok_decode(v, ids, cnt, special, NULL, 0);
    char *buf = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (!buf || tok_decode(v, ids, cnt, special, buf, need) > need) {
        abort();
    }
    tok_stream s;
    tok_stream_init(&s, v, special);
    for (int32_t i = 0; i < cnt; i++) {
        char out[1024];
        if (tok_stream_push(&s, ids[i], out, sizeof(out)) < 0) {
            abort();
        }
    }
    char out[64];
    if (tok_stream_flush(&s, out, sizeof(out)) < 0) {
        abort();
    }
    free(buf);
    free(ids);
}

/* Plain ranges (user text inside a template): the middle third is plain. Whole-text plain
 * must equal parse_special = false, no range parse_special = true; every id in range. */
static void fuzz_plain(const tok_vocab *v, const char *text, size_t n)
{
    tok_span all = {0, n}, mid = {n / 3, n / 3};
    int32_t *a = NULL, *b = NULL, *c = NULL, na, nb, nc;
    if (tok_encode_ex(v, text, n, true, &all, 1, &a, &na) ||
        tok_encode_ex(v, text, n, true, NULL, 0, &b, &nb) ||
        tok_encode_ex(v, text, n, true, &mid, 1, &c, &nc)) {
        abort();
    }
    if (tok_encode(v, text, n, true, false, NULL, 0) != na ||
        tok_encode(v, text, n, true, true, NULL, 0) != nb) {
        abort();
    }
    for (int32_t i = 0; i < nc; i++) {
        if (c[i] < 0 || c[i] >= tok_vocab_n_tokens(v)) {
            abort();
        }
    }
    free(a);
    free(b);
    free(c);
}

/* Mode 0: encode without special tokens, 1: with them, 2: plain ranges. */
static void fuzz_mode(const tok_vocab *v, int mode, const char *text, size_t n)
{
    if (mode == 2)
        fuzz_plain(v, text, n);
    else
        fuzz_one(v, text, n, mode == 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_vocabs[0] = fuzz_load("llama-spm");
    fuzz_vocabs[1] = fuzz_load("qwen2");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_vocabs[0]) LLVMFuzzerInitialize(NULL, NULL); /* a driver that does not call it */
    if (size == 0) return 0;
    unsigned sel = data[0] % 6;
    fuzz_mode(fuzz_vocabs[sel & 1], (int)(sel >> 1), (const char *)data + 1, size - 1);
#ifdef KVSERVE_FUZZ_MAIN
    for (int k = 0; k < 6; k++) /* replay: the whole file as text, every combination */
        fuzz_mode(fuzz_vocabs[k & 1], k >> 1, (const char *)data, size);
#endif
    return 0;
}

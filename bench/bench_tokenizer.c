/* bench_tokenizer.c - tokenizer throughput: builds a ~1 MB English text by repeating
 * shared/models/kjv-tiny/heldout-public.txt and shared/reference/perplexity-text.txt, then
 * prints vocab load time and encode / decode throughput (MB/s) for a SentencePiece vocab
 * (llama-spm) and byte-level BPE vocabs (llama-bpe, qwen2).
 * Usage: bench_tokenizer [SHARED_DIR] (default $KVSERVE_SHARED or ../shared).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/args.h"
#include "kvserve/tokenizer.h"

#define TARGET_BYTES (1u << 20)

static char *build_text(const char *shared, size_t *len)
{
    const char *parts[] = {"models/kjv-tiny/heldout-public.txt", "reference/perplexity-text.txt"};
    char *src[2] = {0};
    size_t sl[2] = {0};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        ks_diag d;
        snprintf(path, sizeof(path), "%s/%s", shared, parts[i]);
        if (ks_read_file(path, &src[i], &sl[i], &d) != 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", d.msg);
            exit(1);
        }
    }
    char *text = malloc(TARGET_BYTES + sl[0] + sl[1]);
    size_t n = 0;
    while (n < TARGET_BYTES) {
        for (int i = 0; i < 2; i++) {
            memcpy(text + n, src[i], sl[i]);
            n += sl[i];
        }
    }
    free(src[0]);
    free(src[1]);
    *len = n;
    return text;
}

static void bench_vocab(const char *shared, const char *name, const char *text, size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf", shared, name);
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ks_diag d;
    double t0 = ks_time_now();
    if (gguf_open(path, &f, &d) != 0 || tok_vocab_load(f, &v, &d) != 0) {
        fprintf(stderr, "bench_tokenizer: %s: %s\n", path, d.msg);
        exit(1);
    }
    double t_load = ks_time_now() - t0;
    gguf_close(f);
    int32_t cap = (int32_t)len;
    int32_t *ids = malloc((size_t)cap * sizeof(*ids));
    t0 = ks_time_now();
    int32_t n = tok_encode(v, text, len, false, false, ids, cap);
    double t_enc = ks_time_now() - t0;
    char *out = malloc(len * 2 + 16);
    t0 = ks_time_now();
    int32_t dl = tok_decode(v, ids, n, false, out, (int32_t)(len * 2));
    double t_dec = ks_time_now() - t0;
    printf("%-10s %7d tokens  load %6.1f ms  encode %7.2f MB/s (%d tokens, %.2f bytes/token)  "
           "decode %7.1f MB/s%s\n",
           name, tok_vocab_n_tokens(v), t_load * 1e3, (double)len / 1e6 / t_enc, n, (double)len / n,
           (double)dl / 1e6 / t_dec,
           (dl == (int32_t)len && memcmp(out, text, len) == 0) ? "  (round trip exact)" : "");
    free(out);
    free(ids);
    tok_vocab_free(v);
}

int main(int argc, char **argv)
{
    const char *shared = getenv("KVSERVE_SHARED");
    if (!shared) {
        shared = "../shared";
    }
    const ks_arg args[] = {
        {"SHARED", 0, KS_ARG_STRING, &shared,
         .help = "the shared fixtures directory "
                 "($KVSERVE_SHARED or ../shared)",
         .flags = KS_ARG_POSITIONAL},
    };
    const ks_args_spec spec = {"bench_tokenizer", "Tokenizer throughput on English text.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    size_t len;
    char *text = build_text(shared, &len);
    printf("text: %zu bytes of English\n", len);
    const char *names[] = {"llama-spm", "llama-bpe", "qwen2"};
    for (size_t i = 0; i < 3; i++) {
        bench_vocab(shared, names[i], text, len);
    }
    free(text);
    return 0;
}

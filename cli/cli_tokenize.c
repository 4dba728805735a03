/* cli_tokenize.c - `kvserve tokenize --model M [--no-bos] [--pieces] [--special]`: reads UTF-8
 * text from stdin and prints its token ids on one line (or `id<TAB>piece` per line with
 * --pieces). Loads only the tokenizer, so it works on vocab-only GGUF files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kvserve/args.h"
#include "kvserve/tokenizer.h"

static int read_stdin(char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) {
            break;
        }
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf || ferror(stdin)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static void print_piece(const tok_vocab *v, int32_t id)
{
    char piece[1024];
    int32_t n = tok_piece(v, id, true, piece, sizeof(piece));
    printf("%d\t", id);
    for (int32_t i = 0; i < n && i < (int32_t)sizeof(piece); i++) {
        unsigned char c = (unsigned char)piece[i];
        if (c == '\n') {
            fputs("\\n", stdout);
        } else if (c == '\t') {
            fputs("\\t", stdout);
        } else {
            putchar(c);
        }
    }
    putchar('\n');
}

int cli_tokenize_main(int argc, char **argv)
{
    const char *model = NULL;
    bool no_bos = false, pieces = false, special = false;
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &model, .metavar = "FILE",
         .help = "GGUF file (a vocabulary-only file is enough)", .flags = KS_ARG_REQUIRED},
        {"no-bos", 0, KS_ARG_BOOL, &no_bos, .help = "do not add BOS/EOS as the metadata says"},
        {"pieces", 0, KS_ARG_BOOL, &pieces, .help = "print each token's piece too"},
        {"special", 0, KS_ARG_BOOL, &special, .help = "parse special tokens in the text"},
    };
    const ks_args_spec spec = {"kvserve tokenize", "Tokenizes UTF-8 text read from stdin.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    bool bos = !no_bos;
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ks_diag d;
    ks_diag_clear(&d);
    if (gguf_open(model, &f, &d) != 0 || tok_vocab_load(f, &v, &d) != 0) {
        fprintf(stderr, "kvserve tokenize: %s: %s\n", model, d.msg);
        gguf_close(f);
        return 1;
    }
    gguf_close(f);
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    int32_t *ids = NULL;
    if (read_stdin(&text, &len) != 0) {
        fprintf(stderr, "kvserve tokenize: cannot read stdin\n");
        goto done;
    }
    /* BOS as the metadata says unless --no-bos; EOS likewise (add_special) */
    int32_t n = tok_encode(v, text, len, bos, special, NULL, 0);
    ids = n > 0 ? malloc((size_t)n * sizeof(*ids)) : NULL;
    if (n < 0 || (n > 0 && (!ids || tok_encode(v, text, len, bos, special, ids, n) != n))) {
        fprintf(stderr, "kvserve tokenize: %s\n", ks_status_str(n < 0 ? n : KS_ERR_NOMEM));
        goto done;
    }
    for (int32_t i = 0; i < n; i++) {
        if (pieces) {
            print_piece(v, ids[i]);
        } else {
            printf(i ? " %d" : "%d", ids[i]);
        }
    }
    if (!pieces) {
        putchar('\n');
    }
    rc = 0;
done:
    free(ids);
    free(text);
    tok_vocab_free(v);
    return rc;
}

/* tok_internal.h - internal: the tok_vocab layout shared by the tokenizer source files
 * (tokenizer.c: loading, special tokens, detokenising; tok_pre.c: pre-tokenizers; tok_bpe.c:
 * byte-level BPE and SentencePiece merging; tok_stream.c: incremental decoding).
 */
#ifndef KVSERVE_TOK_INTERNAL_H
#define KVSERVE_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/tokenizer.h"

/* Token attributes (llama.cpp's llama_token_attr bits) plus our end-of-generation mark. */
enum {
    TOKA_UNKNOWN = 1 << 0,
    TOKA_UNUSED = 1 << 1,
    TOKA_NORMAL = 1 << 2,
    TOKA_CONTROL = 1 << 3,
    TOKA_USER = 1 << 4,
    TOKA_BYTE = 1 << 5,
    TOKA_LSTRIP = 1 << 6,
    TOKA_RSTRIP = 1 << 7,
    TOKA_EOG = 1 << 8,
};

/* Pre-tokenizer families (the regex chains of llama.cpp's LLAMA_VOCAB_PRE_TYPE_*). */
typedef enum tok_pre {
    TOK_PRE_DEFAULT = 0,
    TOK_PRE_LLAMA3,
    TOK_PRE_QWEN2,
    TOK_PRE_GPT2, /* also mpt, gpt-neox, olmo */
    TOK_PRE_DEEPSEEK_LLM,
    TOK_PRE_DEEPSEEK_CODER,
    TOK_PRE_FALCON,
    TOK_PRE_STARCODER, /* also refact, smollm, command-r */
} tok_pre;

struct tok_vocab {
    tok_kind kind;
    tok_pre pre;
    int32_t n_tokens;
    char *pool;     /* all token texts, each NUL-terminated */
    uint32_t *off;  /* [n_tokens] offset of each text in pool */
    uint32_t *len;  /* [n_tokens] byte length of each text */
    float *score;   /* [n_tokens] */
    uint16_t *attr; /* [n_tokens] TOKA_* */
    uint32_t *tmap; /* text -> id+1, open addressing, tmask+1 slots */
    uint32_t tmask;
    uint64_t *mkey; /* merges: (left id << 32 | right id) + 1; 0 = empty slot */
    int32_t *mrank;
    uint32_t mmask;
    int32_t n_merges;
    int32_t bos, eos, eot, eom, unk, pad;
    int32_t fim[3]; /* fill-in-the-middle prefix, suffix, middle tokens; -1 if none */
    bool add_bos, add_eos, add_space_prefix, ignore_merges, clean_spaces;
    bool spm_split;   /* no token has U+2581 after another character: split words there */
    int32_t *special; /* CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
    int32_t n_special;
    char *chat_template;
    int32_t byte_tok[256]; /* token of each raw byte (byte fallback / BPE single byte), -1 */
};

static inline const char *tok_text(const tok_vocab *v, int32_t id)
{
    return v->pool + v->off[id];
}

/* Builds the text -> id map of all tokens (tokenizer.c). */
int tok_index_tokens(tok_vocab *v);
/* Builds the merge map from n (left, right) id pairs in rank order; pairs with an id < 0 are
 * skipped. */
int tok_index_merges(tok_vocab *v, const int32_t *left, const int32_t *right, int32_t n);

/* Id of the token whose text is s[0..n), or -1. */
int32_t tok_find(const tok_vocab *v, const char *s, size_t n);
/* Merge rank of the pair (left, right) of token ids, or -1. */
int32_t tok_merge_rank(const tok_vocab *v, int32_t left, int32_t right);

/* A growable id vector. */
typedef struct tok_ids {
    int32_t *p;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *o, int32_t id);

/* Pre-tokenization: splits cps[0..n) (flags fl) into words; writes the word lengths in code
 * points to lens (room for n) and returns the count. tmp needs room for n. */
size_t tok_pre_split(tok_pre pre, const uint32_t *cps, const uint32_t *fl, size_t n, uint32_t *lens,
                     uint32_t *tmp);

/* Tokenises one raw-text fragment (no special tokens inside) and appends ids. */
int tok_bpe_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out);
int tok_spm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out);

/* The GPT-2 byte <-> unicode map. */
extern const uint16_t tok_byte_to_cp[256];
int tok_cp_to_byte(uint32_t cp); /* -1 if cp is not the image of a byte */

/* llama.cpp's clean_up_tokenization_spaces passes, in place; returns the new length. */
size_t tok_clean_spaces(char *s, size_t n);

/* A piece with llama.cpp's lstrip (drop one leading space) for the first decoded token. */
int32_t tok_piece_lstrip(const tok_vocab *v, int32_t id, bool special, bool lstrip, char *buf,
                         int32_t cap);
#endif

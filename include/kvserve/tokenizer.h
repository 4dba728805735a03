/* tokenizer.h - tokenizers read from GGUF metadata (tokenizer.ggml.*): SentencePiece-style
 * BPE (`llama`) and byte-level BPE (`gpt2`) with each model family's pre-tokenizer, special
 * tokens, detokenisation, a streaming-safe incremental decoder, and chat templates.
 *
 * Results match llama.cpp's tokenizer exactly (tests use its vectors in shared/vocab).
 * A tok_vocab is immutable after loading and safe to share between threads.
 */
#ifndef KVSERVE_TOKENIZER_H
#define KVSERVE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/gguf.h"

typedef struct tok_vocab tok_vocab;

typedef enum tok_kind { TOK_KIND_SPM = 1, TOK_KIND_BPE = 2 } tok_kind;

/* Loads the tokenizer from an open GGUF file (strings are copied: the vocab does not keep
 * the file). Errors: KS_ERR_FORMAT (missing or inconsistent metadata), KS_ERR_UNSUPPORTED
 * (unknown tokenizer model or pre-tokenizer), KS_ERR_NOMEM. */
int tok_vocab_load(const gguf_file *f, tok_vocab **out, ks_diag *d) KS_WUR;
void tok_vocab_free(tok_vocab *v); /* accepts NULL */

tok_kind tok_vocab_kind(const tok_vocab *v);
int32_t tok_vocab_n_tokens(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v); /* -1 if none */
int32_t tok_eos(const tok_vocab *v); /* -1 if none */
bool tok_add_bos(const tok_vocab *v);
bool tok_add_eos(const tok_vocab *v);
/* End of generation: eos, eot (<|eot_id|>, <|im_end|>, <|end|> ...) as the metadata says. */
bool tok_is_eog(const tok_vocab *v, int32_t id);
/* Fill-in-the-middle tokens (code models): from tokenizer.ggml.fim_{pre,suf,mid}_token_id,
 * else found by their usual texts (<|fim_prefix|>, <fim_prefix>, <PRE> ...); -1 if none. */
typedef enum tok_fim { TOK_FIM_PRE = 0, TOK_FIM_SUF = 1, TOK_FIM_MID = 2 } tok_fim;
int32_t tok_fim_token(const tok_vocab *v, tok_fim which);
/* The tokenizer.chat_template string, or NULL. */
const char *tok_chat_template(const tok_vocab *v);

/* Tokenises UTF-8 text (any bytes: invalid UTF-8 never crashes). add_special adds BOS/EOS
 * as the metadata says; parse_special recognises special/control tokens written in the
 * text. Writes up to max ids; returns the number of ids the text needs (may exceed max:
 * call again with a larger buffer) or a negative status. */
int32_t tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
                   bool parse_special, int32_t *ids, int32_t max);

/* A byte range [off, off + len) of a text. */
typedef struct tok_span {
    size_t off, len;
} tok_span;

/* Tokenises in one pass with special tokens recognised everywhere except inside the `plain`
 * ranges: there control tokens written as text stay text (user-supplied text inside a chat
 * template, whose own markers stay special). n_plain = 1 over the whole text gives
 * tok_encode(parse_special = false); n_plain = 0 gives parse_special = true. On success
 * *ids (malloc'd, caller frees; never NULL) holds *n_ids ids. Errors: KS_ERR_INVALID (a
 * range outside the text), KS_ERR_NOMEM, KS_ERR_RANGE. Thread-safe. */
int tok_encode_ex(const tok_vocab *v, const char *text, size_t len, bool add_special,
                  const tok_span *plain, size_t n_plain, int32_t **ids, int32_t *n_ids) KS_WUR;
/* True when text holds the text of a control (or unknown-attribute) special token. */
bool tok_text_has_control(const tok_vocab *v, const char *text, size_t len);

/* The bytes of one token's piece (byte-fallback tokens give their raw byte; special tokens
 * render their text when `special`, else nothing). Writes up to cap bytes, returns the piece
 * length (may exceed cap) or a negative status for an invalid id. */
int32_t tok_piece(const tok_vocab *v, int32_t id, bool special, char *buf, int32_t cap);

/* Detokenises ids into buf (leading-space rules applied like llama.cpp's detokenize with
 * remove_special = false, unparse_special = `special`). Returns the length needed. */
int32_t tok_decode(const tok_vocab *v, const int32_t *ids, int32_t n, bool special, char *buf,
                   int32_t cap);

/* Incremental decoder for streaming: feed token ids one by one and get text that never ends
 * in half a UTF-8 character; flush at the end.
 * tok_stream_init: the ids continue a sequence (generated tokens after a prompt), so every
 * piece keeps its leading space: " Ry" stays " Ry", as llama.cpp prints it.
 * tok_stream_init_seq: the ids start the sequence, so SentencePiece's prefix space of the
 * first token is dropped; concatenated output == tok_decode(all ids). */
typedef struct tok_stream {
    const tok_vocab *vocab;
    bool special;
    bool first;       /* the next token is the sequence's first (its prefix space goes) */
    char pending[16]; /* bytes of an incomplete UTF-8 sequence */
    int32_t n_pending;
} tok_stream;
void tok_stream_init(tok_stream *s, const tok_vocab *v, bool special);
void tok_stream_init_seq(tok_stream *s, const tok_vocab *v, bool special);
/* Appends the text that became complete with token `id` to out (cap bytes); returns the
 * number of bytes written, or a negative status (KS_ERR_INVALID for a bad id). A piece
 * longer than cap is an error (use cap >= 256). */
int32_t tok_stream_push(tok_stream *s, int32_t id, char *out, int32_t cap);
/* Emits what is left (an incomplete UTF-8 tail becomes U+FFFD). */
int32_t tok_stream_flush(tok_stream *s, char *out, int32_t cap);

/* Chat templates. */
typedef struct tok_chat_msg {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} tok_chat_msg;

typedef enum tok_chat_family {
    TOK_CHAT_CHATML = 0,
    TOK_CHAT_LLAMA3,
    TOK_CHAT_LLAMA2,
    TOK_CHAT_MISTRAL,
    TOK_CHAT_ZEPHYR,
    TOK_CHAT_PHI3,
    TOK_CHAT_GEMMA,
    TOK_CHAT_COUNT
} tok_chat_family;

/* Recognises the family of a Jinja chat template string (NULL -> chatml fallback). */
tok_chat_family tok_chat_detect(const char *template_str);
/* Name <-> family ("chatml", "llama3", "llama2", "mistral", "zephyr", "phi3", "gemma").
 * Returns -1 for an unknown name. */
int tok_chat_family_from_name(const char *name);
const char *tok_chat_family_name(tok_chat_family f);
/* Formats messages with the family's template, ending with the assistant prompt when
 * add_assistant. Returns a malloc'd NUL-terminated string (caller frees) or NULL on OOM. */
char *tok_chat_format(tok_chat_family f, const tok_chat_msg *msgs, size_t n, bool add_assistant,
                      const tok_vocab *v);

#endif

/* grammar.h - grammar-constrained sampling: GBNF grammars (llama.cpp's syntax), a stack-based
 * matcher over UTF-8 code points, and the logit mask of the tokens a grammar can accept.
 *
 * Where it sits: the code lives in engine/ (grammar_parse.c, grammar_match.c,
 * grammar_vocab.c) and depends only on the tokenizer, never on server/. The JSON Schema ->
 * GBNF converter needs a JSON tree, so it sits in server/ over jansson (server/json_schema.h:
 * api_schema_to_gbnf); its output is plain GBNF text fed to gram_compile.
 *
 * GBNF accepted (llama.cpp's grammar syntax): `name ::= alternatives` rules (a newline ends a
 * rule except inside parentheses or after `|`/`::=`), alternatives `|`, sequences, groups
 * `( )`, repetitions `*` `+` `?` `{m}` `{m,}` `{m,n}` `{,n}`, literals "..." , char classes
 * `[a-z0-9_]` and negated `[^"\\]`, `.` (any code point), escapes \n \r \t \\ \" \[ \] \-
 * \xHH \uHHHH \UHHHHHHHH, `#` comments. Rule names are [A-Za-z0-9_-]+; `root` is the start.
 * Rejected with a line:col diagnostic: syntax errors, undefined rules, duplicate rules, a
 * missing root, left recursion (the matcher expands rules depth-first, so it must never
 * expand a rule at its own start), sizes beyond GRAM_MAX_ELEMS.
 *
 * Objects and threads: a gram (compiled grammar) and a gram_vocab (the token trie of a
 * vocabulary) are immutable after creation and may be shared by any number of threads. A
 * gram_matcher is the state of one sequence (one thread at a time); it references its gram
 * and gram_vocab, which must outlive it.
 *
 * Cost: the mask walks a prefix trie of the vocabulary's token bytes depth-first against the
 * matcher's set of parse stacks, pruning a whole subtree as soon as its prefix is rejected;
 * parse stacks are hash-consed so sets compare by id, and the masks of the last few distinct
 * states are cached (generation often revisits a state, e.g. inside a JSON string).
 * gram_matcher_token_ok checks one token in O(token bytes) so a sampler can try the model's
 * own choice first and compute the full mask only when it is rejected.
 */
#ifndef KVSERVE_GRAMMAR_H
#define KVSERVE_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/tokenizer.h"

#ifndef GRAM_MAX_ELEMS            /* a build may lower it: the fuzz targets do, to stay fast */
#define GRAM_MAX_ELEMS (1u << 20) /* elements of a compiled grammar (repetitions expanded) */
#endif
#define GRAM_MAX_REPEAT 10000 /* largest m or n in x{m,n} */

typedef struct gram gram;
typedef struct gram_vocab gram_vocab;
typedef struct gram_matcher gram_matcher;

/* Compiles GBNF source src[0..n). On error returns KS_ERR_FORMAT (syntax, undefined or
 * duplicate rule, no root, left recursion) or KS_ERR_RANGE (too large) with d->msg
 * "line L, column C: what" and d->line = L; KS_ERR_NOMEM. The result is owned by the
 * caller (gram_destroy). */
int gram_compile(const char *src, size_t n, gram **out, ks_diag *d) KS_WUR;
void gram_destroy(gram *g); /* accepts NULL */
/* Number of rules (synthetic rules for groups and repetitions included). */
int32_t gram_n_rules(const gram *g);

/* The token trie of a vocabulary: every token with a non-empty plain piece (special and
 * control tokens are never allowed under a grammar, except end-of-generation tokens when the
 * grammar can end). `v` must outlive the result. KS_ERR_NOMEM. */
int gram_vocab_create(const tok_vocab *v, gram_vocab **out) KS_WUR;
void gram_vocab_destroy(gram_vocab *gv); /* accepts NULL */

/* A matcher at the start of g's root rule. gv may be NULL for byte-level use only (then the
 * token functions fail with KS_ERR_INVALID). KS_ERR_NOMEM. */
int gram_matcher_create(const gram *g, const gram_vocab *gv, gram_matcher **out) KS_WUR;
void gram_matcher_destroy(gram_matcher *m); /* accepts NULL */

/* Advances over UTF-8 bytes (a code point may be split across calls). Returns 0, or
 * KS_ERR_INVALID when the grammar rejects them (then the matcher is unchanged). */
int gram_matcher_accept_bytes(gram_matcher *m, const char *s, size_t n) KS_WUR;
/* True when the text so far is a complete sentence of the grammar (no partial character). */
bool gram_matcher_can_end(const gram_matcher *m);
/* True when no further character can be accepted (only ending is possible). */
bool gram_matcher_is_done(const gram_matcher *m);

/* Token level (needs a gram_vocab). token_ok: would the token be accepted now (EOG tokens:
 * when the grammar can end). accept_token advances (an EOG token leaves the state as it is);
 * KS_ERR_INVALID when the token is rejected or out of range. */
bool gram_matcher_token_ok(gram_matcher *m, int32_t tok);
int gram_matcher_accept_token(gram_matcher *m, int32_t tok) KS_WUR;
/* Sets logits[t] = -INFINITY for every token t in [0, n_vocab) the grammar rejects now.
 * Returns the number of tokens left allowed (0: nothing can follow), or KS_ERR_NOMEM. */
int32_t gram_matcher_mask(gram_matcher *m, float *logits, int32_t n_vocab);

/* Counters for benchmarks: masks asked for, and masks computed (the rest came from the
 * state cache). */
void gram_matcher_stats(const gram_matcher *m, int64_t *n_masks, int64_t *n_computed);

#endif

/* grammar_internal.h - internal to engine/grammar_*.c: the compiled grammar layout and the
 * matcher's hash-consed parse stacks.
 *
 * A compiled grammar is one array of elements. Rule r's body starts at rule_start[r]: its
 * alternatives follow each other, each ended by GE_ALT except the last, ended by GE_END.
 * Its alternatives start at alts[alt_off[r] .. alt_off[r+1]). A position is an element
 * index that points at a GE_REF or GE_CHARS; the position after it ends its sequence when
 * that element is GE_ALT or GE_END.
 *
 * A parse stack is a list of positions still to match, innermost on top. Stacks are
 * hash-consed into nodes (pos, parent) so that equal stacks have equal ids; id 0 is the
 * empty stack (the grammar has matched a complete sentence). After expansion every stack
 * top is a GE_CHARS (or the stack is empty): a state is a sorted set of such stack ids.
 */
#ifndef KVSERVE_GRAMMAR_INTERNAL_H
#define KVSERVE_GRAMMAR_INTERNAL_H

#include <stdint.h>

#include "kvserve/grammar.h"

enum { GE_END = 0, GE_ALT, GE_REF, GE_CHARS };

typedef struct gram_elem {
    uint8_t type;   /* GE_* */
    uint8_t negate; /* GE_CHARS: matches code points outside the ranges */
    uint32_t a;     /* GE_REF: rule id; GE_CHARS: first range */
    uint32_t b;     /* GE_CHARS: number of ranges */
} gram_elem;

struct gram {
    gram_elem *elems;
    uint32_t n_elems;
    uint32_t (*ranges)[2]; /* inclusive code point ranges */
    uint32_t n_ranges;
    uint32_t *rule_start; /* [n_rules] */
    uint32_t *alt_off;    /* [n_rules + 1] */
    uint32_t *alts;       /* alternative start positions */
    uint32_t n_rules;
    uint32_t root;
};

static inline int gram_elem_ends(const gram *g, uint32_t pos)
{
    return g->elems[pos].type == GE_END || g->elems[pos].type == GE_ALT;
}

/* Does the GE_CHARS element at pos match code point c? */
int gram_chars_match(const gram *g, uint32_t pos, uint32_t c);
/* Could a code point in [lo, hi] match it (for a partial UTF-8 sequence)? */
int gram_chars_overlap(const gram *g, uint32_t pos, uint32_t lo, uint32_t hi);

/* UTF-8 decoding state between bytes: need = continuation bytes still expected. */
typedef struct gram_utf8 {
    uint32_t cp;
    uint8_t need;
    uint8_t len; /* length of the sequence being decoded */
} gram_utf8;

/* Feeds one byte: 1 = a code point is complete (*cp), 0 = partial, -1 = invalid UTF-8. */
int gram_utf8_step(gram_utf8 *u, uint8_t byte, uint32_t *cp);
/* The code points a partial sequence may still become: [*lo, *hi]. */
void gram_utf8_span(const gram_utf8 *u, uint32_t *lo, uint32_t *hi);

/* ---- matcher state (grammar_match.c), shared with the token-level code (grammar_vocab.c) */

typedef struct gram_node {
    uint32_t pos, parent; /* top position and the rest of the stack */
} gram_node;

#define GRAM_MASK_CACHE 8

typedef struct gram_mask_entry {
    uint32_t *set; /* the state it was computed for */
    uint32_t n_set;
    gram_utf8 utf;
    uint64_t *bits; /* [ceil(n_vocab / 64)] allowed tokens */
    int32_t n_allowed;
    uint64_t used; /* LRU clock; 0 = empty entry */
} gram_mask_entry;

struct gram_matcher {
    const gram *g;
    const gram_vocab *gv;
    gram_node *nodes; /* hash-consed stacks; node 0 is the empty stack */
    uint32_t n_nodes, cap_nodes;
    uint32_t *htab; /* node ids by (pos, parent); 0 = free slot */
    uint32_t hmask;
    uint32_t *stamp; /* [cap_nodes] visit marks of the current expansion */
    uint32_t epoch;
    int oom;
    uint32_t *cur; /* the state: sorted stack ids */
    uint32_t n_cur, cap_cur;
    gram_utf8 utf; /* a code point split between tokens */
    uint32_t *buf; /* scratch: sets of a walk, stacked */
    size_t n_buf, cap_buf;
    uint32_t *work; /* expand's explicit stack (no recursion: a grammar may nest deeply) */
    size_t cap_work;
    gram_mask_entry cache[GRAM_MASK_CACHE];
    uint64_t clock;
    int64_t n_masks, n_computed; /* gram_matcher_stats */
    /* memo of single-stack steps: (stack id, code point) -> the stacks it becomes */
    struct gram_memo_slot *memo; /* [GRAM_MEMO_SLOTS]; key 0 = free */
    uint32_t n_memo;
    uint32_t *mpool; /* the memoised results */
    size_t n_mpool, cap_mpool;
};

/* The memo's size (a build may lower it: the fuzz targets do, so that a matcher costs
 * kilobytes, not a 1 MiB calloc, and the memo's flush runs often). */
#ifndef GRAM_MEMO_SLOTS
#define GRAM_MEMO_SLOTS (1u << 16)
#endif
#ifndef GRAM_MEMO_POOL
#define GRAM_MEMO_POOL (1u << 20)
#endif

typedef struct gram_memo_slot {
    uint64_t key; /* (stack id << 32 | code point) + 1 */
    uint32_t off, n;
} gram_memo_slot;

/* Advances the set buf[off .. off+n) over code point cp: the new set is appended at the end
 * of buf, sorted; returns its size (0: rejected). *out_off receives its offset. m->oom is
 * set when memory ran out. */
uint32_t gram_advance(gram_matcher *m, size_t off, uint32_t n, uint32_t cp, size_t *out_off);
/* Could the partial character u continue some stack of buf[off .. off+n)? */
int gram_partial_ok(const gram_matcher *m, size_t off, uint32_t n, const gram_utf8 *u);
/* Resets the scratch to hold only the current state, at offset 0. */
int gram_buf_load(gram_matcher *m);
/* Runs bytes from the current state; commits the result when `commit`. 0 or
 * KS_ERR_INVALID (rejected) / KS_ERR_NOMEM. */
int gram_run_bytes(gram_matcher *m, const uint8_t *s, size_t n, int commit);

#endif

/* grammar_vocab.c - token-level grammar constraints: a prefix trie over the vocabulary's token
 * bytes, the allowed-token mask, and single-token checks.
 *
 * Why a trie: the mask must say, for every token, whether the grammar accepts its bytes from
 * the current state. Checking tokens one by one costs the sum of all token lengths times the
 * stacks per step. Tokens share prefixes (" the", " them", " there"...), so the mask walks a
 * trie of token bytes depth-first, advancing the state once per trie edge and abandoning a
 * subtree as soon as its prefix is rejected: under a narrow grammar state (a JSON key, a
 * digit) only a handful of subtrees are entered at all. Wide states (inside a JSON string)
 * recur from step to step, so the last GRAM_MASK_CACHE masks are kept by state.
 *
 * Invariant: a trie node's children are contiguous in `nodes`, and the tokens whose bytes
 * end at a node are contiguous in `toks` (the trie is built from the tokens sorted by bytes).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

typedef struct gv_node {
    uint32_t child, n_child; /* children: nodes[child .. child + n_child) */
    uint32_t tok, n_tok;     /* tokens ending here: toks[tok .. tok + n_tok) */
    uint8_t byte;            /* the edge byte into this node */
} gv_node;

struct gram_vocab {
    const tok_vocab *v;
    int32_t n_vocab;
    char *bytes;   /* all pieces */
    uint32_t *off; /* [n_vocab] piece offset */
    uint32_t *len; /* [n_vocab] piece length; 0: never allowed under a grammar */
    gv_node *nodes;
    uint32_t n_nodes, cap_nodes;
    int32_t *toks; /* token ids in byte order */
    int32_t *eog;  /* end-of-generation tokens */
    int32_t n_eog;
};

typedef struct gv_key {
    const char *p;
    uint32_t len;
    int32_t id;
} gv_key;

static int cmp_key(const void *a, const void *b)
{
    const gv_key *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* toks = the tokens with a piece, sorted by bytes (then id). Returns their count or -1. */
static int64_t sort_tokens(gram_vocab *gv)
{
    gv_key *keys = malloc((size_t)gv->n_vocab * sizeof(*keys));
    if (!keys) return -1;
    uint32_t n = 0;
    for (int32_t t = 0; t < gv->n_vocab; t++)
        if (gv->len[t]) keys[n++] = (gv_key){gv->bytes + gv->off[t], gv->len[t], t};
    qsort(keys, n, sizeof(*keys), cmp_key);
    for (uint32_t k = 0; k < n; k++)
        gv->toks[k] = keys[k].id;
    free(keys);
    return n;
}

/* Fills node `at` from the sorted tokens toks[lo..hi) that share their first `depth` bytes. */
static int build_node(gram_vocab *gv, uint32_t at, uint32_t lo, uint32_t hi, uint32_t depth)
{
    uint32_t k = lo;
    while (k < hi && gv->len[gv->toks[k]] == depth)
        k++;
    gv->nodes[at].tok = lo;
    gv->nodes[at].n_tok = k - lo;
    uint32_t n_child = 0;
    for (uint32_t i = k; i < hi; i++)
        if (i == k ||
            gv->bytes[gv->off[gv->toks[i]] + depth] != gv->bytes[gv->off[gv->toks[i - 1]] + depth])
            n_child++;
    uint32_t first = gv->n_nodes;
    if (gv->n_nodes + n_child > gv->cap_nodes) {
        uint32_t nc = (gv->n_nodes + n_child) * 2;
        gv_node *nn = realloc(gv->nodes, nc * sizeof(*nn));
        if (!nn) return KS_ERR_NOMEM;
        gv->nodes = nn;
        gv->cap_nodes = nc;
    }
    gv->n_nodes += n_child;
    gv->nodes[at].child = first;
    gv->nodes[at].n_child = n_child;
    for (uint32_t c = 0, i = k; c < n_child; c++) {
        uint8_t b = (uint8_t)gv->bytes[gv->off[gv->toks[i]] + depth];
        uint32_t j = i;
        while (j < hi && (uint8_t)gv->bytes[gv->off[gv->toks[j]] + depth] == b)
            j++;
        gv->nodes[first + c].byte = b;
        int rc = build_node(gv, first + c, i, j, depth + 1);
        if (rc) return rc;
        i = j;
    }
    return 0;
}

static int load_pieces(gram_vocab *gv)
{
    size_t total = 0, cap = 1 << 16;
    char tmp[1024];
    gv->bytes = malloc(cap);
    if (!gv->bytes) return KS_ERR_NOMEM;
    for (int32_t t = 0; t < gv->n_vocab; t++) {
        if (tok_is_eog(gv->v, t)) gv->eog[gv->n_eog++] = t;
        int32_t n = tok_piece(gv->v, t, false, tmp, (int32_t)sizeof(tmp));
        if (n <= 0 || n > (int32_t)sizeof(tmp) || tok_is_eog(gv->v, t)) continue;
        if (total + (size_t)n > cap) {
            char *nb = realloc(gv->bytes, cap * 2);
            if (!nb) return KS_ERR_NOMEM;
            gv->bytes = nb;
            cap *= 2;
        }
        memcpy(gv->bytes + total, tmp, (size_t)n);
        gv->off[t] = (uint32_t)total;
        gv->len[t] = (uint32_t)n;
        total += (size_t)n;
    }
    return 0;
}

int gram_vocab_create(const tok_vocab *v, gram_vocab **out)
{
    *out = NULL;
    gram_vocab *gv = calloc(1, sizeof(*gv));
    if (!gv) return KS_ERR_NOMEM;
    gv->v = v;
    gv->n_vocab = tok_vocab_n_tokens(v);
    size_t nv = (size_t)gv->n_vocab;
    gv->off = calloc(nv, sizeof(uint32_t));
    gv->len = calloc(nv, sizeof(uint32_t));
    gv->toks = malloc(nv * sizeof(int32_t));
    gv->eog = malloc(nv * sizeof(int32_t));
    gv->cap_nodes = 1024;
    gv->nodes = calloc(gv->cap_nodes, sizeof(gv_node));
    int rc =
        gv->off && gv->len && gv->toks && gv->eog && gv->nodes ? load_pieces(gv) : KS_ERR_NOMEM;
    if (rc) goto fail;
    int64_t n_toks = sort_tokens(gv);
    gv->n_nodes = 1;
    rc = n_toks < 0 ? KS_ERR_NOMEM : build_node(gv, 0, 0, (uint32_t)n_toks, 0);
    if (rc) goto fail;
    *out = gv;
    return 0;
fail:
    gram_vocab_destroy(gv);
    return rc;
}

void gram_vocab_destroy(gram_vocab *gv)
{
    if (!gv) return;
    free(gv->bytes);
    free(gv->off);
    free(gv->len);
    free(gv->nodes);
    free(gv->toks);
    free(gv->eog);
    free(gv);
}

/* ---------------------------------------------------------------- token checks */

static bool is_eog(const gram_vocab *gv, int32_t tok)
{
    for (int32_t k = 0; k < gv->n_eog; k++)
        if (gv->eog[k] == tok) return true;
    return false;
}

bool gram_matcher_token_ok(gram_matcher *m, int32_t tok)
{
    const gram_vocab *gv = m->gv;
    if (!gv || tok < 0 || tok >= gv->n_vocab) return false;
    if (is_eog(gv, tok)) return gram_matcher_can_end(m);
    if (!gv->len[tok]) return false;
    return gram_run_bytes(m, (const uint8_t *)gv->bytes + gv->off[tok], gv->len[tok], 0) == 0;
}

int gram_matcher_accept_token(gram_matcher *m, int32_t tok)
{
    const gram_vocab *gv = m->gv;
    if (!gv || tok < 0 || tok >= gv->n_vocab) return KS_ERR_INVALID;
    if (is_eog(gv, tok)) return gram_matcher_can_end(m) ? 0 : KS_ERR_INVALID;
    if (!gv->len[tok]) return KS_ERR_INVALID;
    return gram_run_bytes(m, (const uint8_t *)gv->bytes + gv->off[tok], gv->len[tok], 1);
}

/* ---------------------------------------------------------------- the mask */

typedef struct walk_ctx {
    gram_matcher *m;
    uint64_t *bits;
    int32_t n_allowed;
} walk_ctx;

/* Visits the children of trie node `at` from the state buf[off .. off+n) and partial u. */
static void walk(walk_ctx *w, uint32_t at, size_t off, uint32_t n, gram_utf8 u)
{
    gram_matcher *m = w->m;
    const gram_vocab *gv = m->gv;
    const gv_node *nd = &gv->nodes[at];
    for (uint32_t c = nd->child; c < nd->child + nd->n_child && !m->oom; c++) {
        gram_utf8 cu = u;
        uint32_t cp;
        int r = gram_utf8_step(&cu, gv->nodes[c].byte, &cp);
        if (r < 0) continue;
        size_t coff = off, mark = m->n_buf;
        uint32_t cn = n;
        if (r == 1) {
            cn = gram_advance(m, off, n, cp, &coff);
            if (!cn) continue;
        } else if (!gram_partial_ok(m, off, n, &cu)) {
            continue;
        }
        const gv_node *cd = &gv->nodes[c];
        for (uint32_t k = cd->tok; k < cd->tok + cd->n_tok; k++) {
            int32_t t = gv->toks[k];
            w->bits[t >> 6] |= 1ull << (t & 63);
            w->n_allowed++;
        }
        if (cd->n_child) walk(w, c, coff, cn, cu);
        m->n_buf = mark;
    }
}

static gram_mask_entry *cache_find(gram_matcher *m)
{
    for (int k = 0; k < GRAM_MASK_CACHE; k++) {
        gram_mask_entry *e = &m->cache[k];
        if (e->used && e->n_set == m->n_cur && e->utf.cp == m->utf.cp &&
            e->utf.need == m->utf.need && e->utf.len == m->utf.len &&
            !memcmp(e->set, m->cur, m->n_cur * sizeof(uint32_t))) {
            e->used = ++m->clock;
            return e;
        }
    }
    return NULL;
}

/* Computes the mask of the current state into the least recently used cache entry. */
static gram_mask_entry *cache_fill(gram_matcher *m)
{
    gram_mask_entry *e = &m->cache[0];
    for (int k = 1; k < GRAM_MASK_CACHE; k++)
        if (m->cache[k].used < e->used) e = &m->cache[k];
    size_t words = ((size_t)m->gv->n_vocab + 63) / 64;
    if (!e->bits) e->bits = malloc(words * sizeof(uint64_t));
    uint32_t *ns = realloc(e->set, (m->n_cur + 1) * sizeof(uint32_t));
    if (!e->bits || !ns) return NULL;
    e->set = ns;
    e->used = 0;
    memset(e->bits, 0, words * sizeof(uint64_t));
    walk_ctx w = {m, e->bits, 0};
    if (gram_buf_load(m)) return NULL;
    walk(&w, 0, 0, m->n_cur, m->utf);
    if (m->oom) return NULL;
    if (gram_matcher_can_end(m))
        for (int32_t k = 0; k < m->gv->n_eog; k++) {
            int32_t t = m->gv->eog[k];
            e->bits[t >> 6] |= 1ull << (t & 63);
            w.n_allowed++;
        }
    memcpy(e->set, m->cur, m->n_cur * sizeof(uint32_t));
    e->n_set = m->n_cur;
    e->utf = m->utf;
    e->n_allowed = w.n_allowed;
    e->used = ++m->clock;
    return e;
}

int32_t gram_matcher_mask(gram_matcher *m, float *logits, int32_t n_vocab)
{
    if (!m->gv) return KS_ERR_INVALID;
    gram_mask_entry *e = cache_find(m);
    m->n_masks++;
    if (!e) {
        e = cache_fill(m);
        m->n_computed++;
    }
    if (!e) return KS_ERR_NOMEM;
    int32_t n = KS_MIN(n_vocab, m->gv->n_vocab);
    for (int32_t t = 0; t < n; t++)
        if (!(e->bits[t >> 6] >> (t & 63) & 1)) logits[t] = -INFINITY;
    for (int32_t t = n; t < n_vocab; t++)
        logits[t] = -INFINITY;
    return e->n_allowed;
}

void gram_matcher_stats(const gram_matcher *m, int64_t *n_masks, int64_t *n_computed)
{
    *n_masks = m->n_masks;
    *n_computed = m->n_computed;
}

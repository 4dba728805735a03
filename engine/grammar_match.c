/* grammar_match.c - the grammar matcher: a set of parse stacks advanced one UTF-8 code point
 * at a time (the algorithm of llama.cpp's grammar sampler, with our own data layout).
 *
 * A state is the set of every way the text so far can continue: each way is a stack of
 * positions still to match. Expanding a stack whose top is a rule reference replaces the
 * reference with each alternative of the rule (the return position stays below), until
 * every top is a character class; a code point then keeps the stacks whose top class
 * matches it, pops that class and expands again. Left recursion is rejected at compile
 * time, so expansion always terminates.
 *
 * Stacks are hash-consed (equal stacks share one node id, tails are shared), which makes a
 * state a sorted array of ids: sets deduplicate by id, and the mask cache (grammar_vocab.c)
 * compares states with memcmp. Nodes are never freed before the matcher.
 */
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

#ifndef GRAM_MAX_NODES /* matcher stack nodes; a build may lower it (the fuzz targets do) */
#define GRAM_MAX_NODES (1u << 24)
#endif

int gram_utf8_step(gram_utf8 *u, uint8_t b, uint32_t *cp)
{
    if (u->need) {
        if ((b & 0xC0) != 0x80) return -1;
        u->cp = (u->cp << 6) | (b & 0x3F);
        if (--u->need) return 0;
        uint32_t c = u->cp;
        int len = u->len;
        *u = (gram_utf8){0};
        /* overlong forms and surrogates are not UTF-8 */
        if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
            c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return -1;
        *cp = c;
        return 1;
    }
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xC2 && b <= 0xDF)
        *u = (gram_utf8){b & 0x1Fu, 1, 2};
    else if ((b & 0xF0) == 0xE0)
        *u = (gram_utf8){b & 0x0Fu, 2, 3};
    else if (b >= 0xF0 && b <= 0xF4)
        *u = (gram_utf8){b & 0x07u, 3, 4};
    else
        return -1;
    return 0;
}

void gram_utf8_span(const gram_utf8 *u, uint32_t *lo, uint32_t *hi)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t shift = 6u * u->need;
    *lo = u->cp << shift;
    *hi = *lo | ((1u << shift) - 1);
    if (*lo < min_cp[u->len]) *lo = min_cp[u->len]; /* no overlong forms */
    if (*hi > 0x10FFFF) *hi = 0x10FFFF;
}

int gram_chars_match(const gram *g, uint32_t pos, uint32_t c)
{
    const gram_elem *e = &g->elems[pos];
    int in = 0;
    for (uint32_t k = 0; k < e->b && !in; k++)
        in = c >= g->ranges[e->a + k][0] && c <= g->ranges[e->a + k][1];
    return in != e->negate;
}

int gram_chars_overlap(const gram *g, uint32_t pos, uint32_t lo, uint32_t hi)
{
    const gram_elem *e = &g->elems[pos];
    for (uint32_t k = 0; k < e->b; k++) {
        uint32_t rlo = g->ranges[e->a + k][0], rhi = g->ranges[e->a + k][1];
        if (e->negate && rlo <= lo && rhi >= hi) return 0; /* the whole span is excluded */
        if (!e->negate && rlo <= hi && rhi >= lo) return 1;
    }
    return e->negate;
}

/* ---------------------------------------------------------------- hash-consed stacks */

static uint32_t node_hash(uint32_t pos, uint32_t parent)
{
    uint64_t h = ((uint64_t)pos << 32 | parent) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

static int nodes_grow(gram_matcher *m)
{
    if (m->cap_nodes >= GRAM_MAX_NODES) return KS_ERR_NOMEM;
    uint32_t nc = m->cap_nodes * 2;
    gram_node *nn = realloc(m->nodes, nc * sizeof(*nn));
    if (nn) m->nodes = nn;
    uint32_t *ns = nn ? realloc(m->stamp, nc * sizeof(*ns)) : NULL;
    if (ns) m->stamp = ns;
    uint32_t *nh = ns ? calloc((size_t)nc * 2, sizeof(*nh)) : NULL;
    if (!nh) return KS_ERR_NOMEM;
    memset(ns + m->cap_nodes, 0, (nc - m->cap_nodes) * sizeof(*ns));
    free(m->htab);
    m->htab = nh;
    m->hmask = nc * 2 - 1;
    m->cap_nodes = nc;
    for (uint32_t id = 1; id < m->n_nodes; id++) {
        uint32_t h = node_hash(m->nodes[id].pos, m->nodes[id].parent) & m->hmask;
        while (m->htab[h])
            h = (h + 1) & m->hmask;
        m->htab[h] = id;
    }
    return 0;
}

/* The id of the stack (pos on top of parent); 0 with m->oom set when memory ran out. */
static uint32_t node_intern(gram_matcher *m, uint32_t pos, uint32_t parent)
{
    uint32_t h = node_hash(pos, parent) & m->hmask;
    for (; m->htab[h]; h = (h + 1) & m->hmask) {
        const gram_node *n = &m->nodes[m->htab[h]];
        if (n->pos == pos && n->parent == parent) return m->htab[h];
    }
    if (m->n_nodes == m->cap_nodes) {
        if (nodes_grow(m)) {
            m->oom = 1;
            return 0;
        }
        return node_intern(m, pos, parent);
    }
    uint32_t id = m->n_nodes++;
    m->nodes[id] = (gram_node){pos, parent};
    m->htab[h] = id;
    return id;
}

static void buf_push(gram_matcher *m, uint32_t v)
{
    if (m->n_buf == m->cap_buf) {
        size_t nc = m->cap_buf * 2;
        uint32_t *nb = realloc(m->buf, nc * sizeof(*nb));
        if (!nb) {
            m->oom = 1;
            return;
        }
        m->buf = nb;
        m->cap_buf = nc;
    }
    m->buf[m->n_buf++] = v;
}

static void work_push(gram_matcher *m, size_t *n, uint32_t v)
{
    if (*n == m->cap_work) {
        size_t nc = m->cap_work ? m->cap_work * 2 : 256;
        uint32_t *nw = realloc(m->work, nc * sizeof(*nw));
        if (!nw) {
            m->oom = 1;
            return;
        }
        m->work = nw;
        m->cap_work = nc;
    }
    m->work[(*n)++] = v;
}

/* Expands stack s0 until every top is a character class; appends those stacks to buf.
 * Depth-first with an explicit stack, children in alternative order: a chain of 70 000
 * optional elements would otherwise recurse 70 000 frames deep and overflow the thread's
 * stack. */
static void expand(gram_matcher *m, uint32_t s0)
{
    const gram *g = m->g;
    size_t n = 0;
    work_push(m, &n, s0);
    while (n && !m->oom) {
        uint32_t s = m->work[--n];
        if (m->stamp[s] == m->epoch) continue;
        m->stamp[s] = m->epoch;
        if (s == 0 || g->elems[m->nodes[s].pos].type == GE_CHARS) {
            buf_push(m, s);
            continue;
        }
        uint32_t pos = m->nodes[s].pos, parent = m->nodes[s].parent, rule = g->elems[pos].a;
        uint32_t base = gram_elem_ends(g, pos + 1) ? parent : node_intern(m, pos + 1, parent);
        size_t first = n;
        for (uint32_t a = g->alt_off[rule]; a < g->alt_off[rule + 1] && !m->oom; a++) {
            uint32_t at = g->alts[a];
            work_push(m, &n, gram_elem_ends(g, at) ? base : node_intern(m, at, base));
        }
        for (size_t i = first, j = n; i + 1 < j; i++, j--) { /* first alternative on top */
            uint32_t t = m->work[i];
            m->work[i] = m->work[j - 1];
            m->work[j - 1] = t;
        }
    }
}

static void next_epoch(gram_matcher *m)
{
    if (++m->epoch == 0) {
        memset(m->stamp, 0, m->cap_nodes * sizeof(*m->stamp));
        m->epoch = 1;
    }
}

static void sort_ids(uint32_t *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        uint32_t x = v[i], j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* The memo slot of (s, cp): found (1) or the free slot to fill (0). */
static gram_memo_slot *memo_slot(gram_matcher *m, uint32_t s, uint32_t cp, int *found)
{
    uint64_t key = ((uint64_t)s << 32 | cp) + 1;
    uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 48) & (GRAM_MEMO_SLOTS - 1);
    while (m->memo[h].key && m->memo[h].key != key)
        h = (h + 1) & (GRAM_MEMO_SLOTS - 1);
    *found = m->memo[h].key == key;
    m->memo[h].key = key;
    return &m->memo[h];
}

/* Makes sure the step of stack s (whose top matches cp) is memoised; returns its slot or
 * NULL when out of memory. */
static const gram_memo_slot *memo_step(gram_matcher *m, uint32_t s, uint32_t cp)
{
    int found;
    gram_memo_slot *slot = memo_slot(m, s, cp, &found);
    if (found) return slot;
    const gram *g = m->g;
    size_t start = m->n_buf;
    next_epoch(m);
    uint32_t pos = m->nodes[s].pos, parent = m->nodes[s].parent;
    expand(m, gram_elem_ends(g, pos + 1) ? parent : node_intern(m, pos + 1, parent));
    size_t n = m->n_buf - start;
    if (!m->oom && m->n_mpool + n > m->cap_mpool) {
        size_t nc = (m->n_mpool + n) * 2;
        uint32_t *np = realloc(m->mpool, nc * sizeof(*np));
        if (np) {
            m->mpool = np;
            m->cap_mpool = nc;
        } else {
            m->oom = 1;
        }
    }
    if (m->oom) {
        slot->key = 0;
        m->n_buf = start;
        return NULL;
    }
    memcpy(m->mpool + m->n_mpool, m->buf + start, n * sizeof(uint32_t));
    slot->off = (uint32_t)m->n_mpool;
    slot->n = (uint32_t)n;
    m->n_mpool += n;
    m->n_memo++;
    m->n_buf = start;
    return slot;
}

uint32_t gram_advance(gram_matcher *m, size_t off, uint32_t n, uint32_t cp, size_t *out_off)
{
    const gram *g = m->g;
    size_t start = m->n_buf;
    *out_off = start;
    /* One step memoises up to n stacks: a set the memo cannot hold at half load is refused
     * as too complex (like GRAM_MAX_NODES), else memo_slot would probe a full table forever
     * (found by the fuzz build, whose memo has 1024 slots). */
    if (n >= GRAM_MEMO_SLOTS / 2) {
        m->oom = 1;
        return 0;
    }
    /* The memo is only a cache: dropped whole when full, never in the middle of a step. */
    if (m->n_memo + n >= GRAM_MEMO_SLOTS / 2 || m->n_mpool >= GRAM_MEMO_POOL) {
        memset(m->memo, 0, GRAM_MEMO_SLOTS * sizeof(*m->memo));
        m->n_memo = 0;
        m->n_mpool = 0;
    }
    /* Pass 1 memoises each matching stack's step (each expansion has its own epoch); pass 2
     * unions the results (all found in the memo now), deduplicated with one more epoch. */
    for (uint32_t k = 0; k < n && !m->oom; k++) {
        uint32_t s = m->buf[off + k];
        if (s && gram_chars_match(g, m->nodes[s].pos, cp)) (void)memo_step(m, s, cp);
    }
    next_epoch(m);
    for (uint32_t k = 0; k < n && !m->oom; k++) {
        uint32_t s = m->buf[off + k];
        if (!s || !gram_chars_match(g, m->nodes[s].pos, cp)) continue;
        const gram_memo_slot *slot = memo_step(m, s, cp);
        for (uint32_t i = 0; slot && i < slot->n; i++) {
            uint32_t id = m->mpool[slot->off + i];
            if (m->stamp[id] == m->epoch) continue;
            m->stamp[id] = m->epoch;
            buf_push(m, id);
        }
    }
    if (m->oom) {
        m->n_buf = start;
        return 0;
    }
    sort_ids(m->buf + start, (uint32_t)(m->n_buf - start));
    return (uint32_t)(m->n_buf - start);
}

int gram_partial_ok(const gram_matcher *m, size_t off, uint32_t n, const gram_utf8 *u)
{
    uint32_t lo, hi;
    gram_utf8_span(u, &lo, &hi);
    if (lo > hi || (lo >= 0xD800 && hi <= 0xDFFF)) return 0; /* overlong, surrogate */
    for (uint32_t k = 0; k < n; k++) {
        uint32_t s = m->buf[off + k];
        if (s && gram_chars_overlap(m->g, m->nodes[s].pos, lo, hi)) return 1;
    }
    return 0;
}

static int set_cur(gram_matcher *m, const uint32_t *v, uint32_t n)
{
    if (n > m->cap_cur) {
        uint32_t *nc = realloc(m->cur, n * sizeof(*nc));
        if (!nc) return KS_ERR_NOMEM;
        m->cur = nc;
        m->cap_cur = n;
    }
    memmove(m->cur, v, n * sizeof(*v));
    m->n_cur = n;
    return 0;
}

int gram_buf_load(gram_matcher *m)
{
    m->n_buf = 0;
    for (uint32_t k = 0; k < m->n_cur; k++)
        buf_push(m, m->cur[k]);
    return m->oom ? KS_ERR_NOMEM : 0;
}

int gram_run_bytes(gram_matcher *m, const uint8_t *s, size_t n, int commit)
{
    if (gram_buf_load(m)) return KS_ERR_NOMEM;
    size_t off = 0;
    uint32_t cnt = m->n_cur;
    gram_utf8 u = m->utf;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp;
        int r = gram_utf8_step(&u, s[i], &cp);
        if (r < 0) return KS_ERR_INVALID;
        if (r == 0) {
            if (!gram_partial_ok(m, off, cnt, &u)) return KS_ERR_INVALID;
            continue;
        }
        cnt = gram_advance(m, off, cnt, cp, &off);
        if (m->oom) return KS_ERR_NOMEM;
        if (!cnt) return KS_ERR_INVALID;
    }
    if (!commit) return 0;
    int rc = set_cur(m, m->buf + off, cnt);
    if (!rc) m->utf = u;
    return rc;
}

int gram_matcher_create(const gram *g, const gram_vocab *gv, gram_matcher **out)
{
    *out = NULL;
    gram_matcher *m = calloc(1, sizeof(*m));
    if (!m) return KS_ERR_NOMEM;
    m->g = g;
    m->gv = gv;
    m->cap_nodes = 256;
    m->hmask = 511;
    m->cap_buf = 256;
    m->nodes = malloc(m->cap_nodes * sizeof(*m->nodes));
    m->stamp = calloc(m->cap_nodes, sizeof(*m->stamp));
    m->htab = calloc(m->hmask + 1, sizeof(*m->htab));
    m->buf = malloc(m->cap_buf * sizeof(*m->buf));
    m->memo = calloc(GRAM_MEMO_SLOTS, sizeof(*m->memo));
    if (!m->nodes || !m->stamp || !m->htab || !m->buf || !m->memo) goto fail;
    m->nodes[0] = (gram_node){0, 0};
    m->n_nodes = 1;
    m->epoch = 1;
    /* The start state: root's alternatives over the empty stack. */
    for (uint32_t a = g->alt_off[g->root]; a < g->alt_off[g->root + 1]; a++) {
        uint32_t at = g->alts[a];
        expand(m, gram_elem_ends(g, at) ? 0 : node_intern(m, at, 0));
    }
    sort_ids(m->buf, (uint32_t)m->n_buf);
    if (m->oom || set_cur(m, m->buf, (uint32_t)m->n_buf)) goto fail;
    *out = m;
    return 0;
fail:
    gram_matcher_destroy(m);
    return KS_ERR_NOMEM;
}

void gram_matcher_destroy(gram_matcher *m)
{
    if (!m) return;
    for (int k = 0; k < GRAM_MASK_CACHE; k++) {
        free(m->cache[k].set);
        free(m->cache[k].bits);
    }
    free(m->memo);
    free(m->mpool);
    free(m->nodes);
    free(m->stamp);
    free(m->htab);
    free(m->cur);
    free(m->buf);
    free(m->work);
    free(m);
}

int gram_matcher_accept_bytes(gram_matcher *m, const char *s, size_t n)
{
    return gram_run_bytes(m, (const uint8_t *)s, n, 1);
}

bool gram_matcher_can_end(const gram_matcher *m)
{
    return m->utf.need == 0 && m->n_cur > 0 && m->cur[0] == 0;
}

bool gram_matcher_is_done(const gram_matcher *m)
{
    return m->n_cur == 0 || (m->n_cur == 1 && m->cur[0] == 0);
}

/* tok_bpe.c - the two merge algorithms: byte-level BPE (GPT-2 style, merges by rank) and
 * SentencePiece-style BPE (bigrams merged by token score, byte fallback).
 *
 * Both keep the symbols of a word in a doubly linked list inside an array and a binary heap of
 * candidate bigrams. A popped bigram is stale when either side changed since it was pushed:
 * symbols only grow, so "left.n + right.n == size recorded at push time" proves both sides are
 * unchanged and still adjacent. Ties go to the leftmost bigram, as in llama.cpp, so results
 * are identical to its llm_tokenizer_bpe/spm sessions. Symbols carry their token id so the
 * byte-level merge table is looked up by a pair of ids instead of strings.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode.h"

typedef struct sym {
    uint32_t start, n; /* bytes of the word buffer */
    int32_t prev, next;
    int32_t id; /* token of this text, -1 if none */
} sym;

typedef struct bigram {
    float key; /* higher first: SPM score, BPE -rank */
    int32_t left, right;
    uint32_t size;
} bigram;

typedef struct work {
    sym *syms;
    size_t n_syms, cap_syms;
    bigram *heap;
    size_t n_heap, cap_heap;
} work;

static bool bigram_before(const bigram *a, const bigram *b)
{
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(work *w, bigram b)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        bigram *h = realloc(w->heap, cap * sizeof(*h));
        if (!h) {
            return KS_ERR_NOMEM;
        }
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &w->heap[p])) {
            break;
        }
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
    return 0;
}

static bigram heap_pop(work *w)
{
    bigram top = w->heap[0];
    bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c])) {
            c++;
        }
        if (!bigram_before(&w->heap[c], &last)) {
            break;
        }
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) {
        w->heap[i] = last;
    }
    return top;
}

static int work_syms(work *w, size_t n)
{
    w->n_syms = 0;
    w->n_heap = 0;
    if (n > w->cap_syms) {
        sym *s = realloc(w->syms, n * sizeof(*s));
        if (!s) {
            return KS_ERR_NOMEM;
        }
        w->syms = s;
        w->cap_syms = n;
    }
    return 0;
}

static void work_free(work *w)
{
    free(w->syms);
    free(w->heap);
}

/* Splits buf[0..n) into UTF-8 characters (lengths clamped at the end, like llama.cpp). */
static void split_chars(const tok_vocab *v, work *w, const char *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t len = KS_MIN(uni_len_utf8((unsigned char)buf[off]), n - off);
        sym *s = &w->syms[w->n_syms];
        s->start = (uint32_t)off;
        s->n = (uint32_t)len;
        s->prev = (int32_t)w->n_syms - 1;
        off += len;
        s->next = off == n ? -1 : (int32_t)w->n_syms + 1;
        s->id = tok_find(v, buf + s->start, len);
        w->n_syms++;
    }
}

/* ---- byte-level BPE ---- */

static int bpe_add(const tok_vocab *v, work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) {
        return 0;
    }
    const sym *a = &w->syms[l], *b = &w->syms[r];
    if (a->id < 0 || b->id < 0) {
        return 0;
    }
    int32_t rank = tok_merge_rank(v, a->id, b->id);
    if (rank < 0) {
        return 0;
    }
    return heap_push(w, (bigram){-(float)rank, l, r, a->n + b->n});
}

static int merge_loop(const tok_vocab *v, work *w, const char *buf);

static int bpe_word(const tok_vocab *v, work *w, const char *buf, size_t n, tok_ids *out)
{
    if (v->ignore_merges) {
        int32_t id = tok_find(v, buf, n);
        if (id >= 0) {
            return tok_ids_push(out, id);
        }
    }
    int rc = work_syms(w, n);
    if (rc) {
        return rc;
    }
    split_chars(v, w, buf, n);
    rc = merge_loop(v, w, buf);
    for (int32_t i = 0; rc == 0 && i != -1; i = w->syms[i].next) {
        const sym *s = &w->syms[i];
        if (s->id >= 0) {
            rc = tok_ids_push(out, s->id);
            continue;
        }
        for (uint32_t k = 0; rc == 0 && k < s->n; k++) {
            int32_t id = tok_find(v, buf + s->start + k, 1);
            if (id >= 0) {
                rc = tok_ids_push(out, id);
            }
        }
    }
    return rc;
}

static int merge_loop(const tok_vocab *v, work *w, const char *buf)
{
    int rc = 0;
    for (size_t i = 1; rc == 0 && i < w->n_syms; i++) {
        rc = bpe_add(v, w, (int32_t)i - 1, (int32_t)i);
    }
    while (rc == 0 && w->n_heap > 0) {
        bigram b = heap_pop(w);
        sym *l = &w->syms[b.left], *r = &w->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue;
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            w->syms[r->next].prev = b.left;
        }
        l->id = tok_find(v, buf + l->start, l->n);
        rc = bpe_add(v, w, l->prev, b.left);
        if (rc == 0) {
            rc = bpe_add(v, w, b.left, l->next);
        }
    }
    return rc;
}

int tok_bpe_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out)
{
    if (n == 0) {
        return 0;
    }
    int rc = KS_ERR_NOMEM;
    work w = {0};
    uint32_t *cps = malloc(n * sizeof(*cps));
    uint32_t *fl = malloc(n * sizeof(*fl));
    uint32_t *lens = malloc(n * sizeof(*lens));
    uint32_t *tmp = malloc(n * sizeof(*tmp));
    char *word = NULL;
    size_t word_cap = 0;
    if (!cps || !fl || !lens || !tmp) {
        goto done;
    }
    size_t n_cp = 0;
    for (size_t off = 0; off < n;) {
        cps[n_cp] = uni_decode(text, n, &off);
        fl[n_cp] = uni_flags(cps[n_cp]);
        n_cp++;
    }
    size_t n_words = tok_pre_split(v->pre, cps, fl, n_cp, lens, tmp);
    rc = 0;
    size_t c = 0;
    for (size_t wi = 0; rc == 0 && wi < n_words; wi++) {
        /* each code point -> UTF-8 bytes -> each byte's image under the byte map (<= 2 bytes) */
        size_t need = (size_t)lens[wi] * 8;
        if (need > word_cap) {
            char *nw = realloc(word, need);
            if (!nw) {
                rc = KS_ERR_NOMEM;
                break;
            }
            word = nw;
            word_cap = need;
        }
        size_t wl = 0;
        for (uint32_t k = 0; k < lens[wi]; k++, c++) {
            char u[4];
            size_t ul = uni_encode(cps[c], u);
            for (size_t b = 0; b < ul; b++) {
                wl += uni_encode(tok_byte_to_cp[(unsigned char)u[b]], word + wl);
            }
        }
        rc = bpe_word(v, &w, word, wl, out);
    }
done:
    free(cps);
    free(fl);
    free(lens);
    free(tmp);
    free(word);
    work_free(&w);
    return rc;
}

/* ---- SentencePiece BPE ---- */

static int spm_add(const tok_vocab *v, work *w, const char *buf, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) {
        return 0;
    }
    const sym *a = &w->syms[l], *b = &w->syms[r];
    uint32_t size = a->n + b->n;
    int32_t id = tok_find(v, buf + a->start, size);
    if (id < 0) {
        return 0;
    }
    return heap_push(w, (bigram){v->score[id], l, r, size});
}

int tok_spm_encode(const tok_vocab *v, const char *buf, size_t n, tok_ids *out)
{
    if (n == 0) {
        return 0;
    }
    work w = {0};
    int rc = work_syms(&w, n);
    if (rc == 0) {
        split_chars(v, &w, buf, n);
    }
    for (size_t i = 1; rc == 0 && i < w.n_syms; i++) {
        rc = spm_add(v, &w, buf, (int32_t)i - 1, (int32_t)i);
    }
    while (rc == 0 && w.n_heap > 0) {
        bigram b = heap_pop(&w);
        sym *l = &w.syms[b.left], *r = &w.syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue;
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) {
            w.syms[r->next].prev = b.left;
        }
        rc = spm_add(v, &w, buf, l->prev, b.left);
        if (rc == 0) {
            rc = spm_add(v, &w, buf, b.left, l->next);
        }
    }
    /* A symbol longer than one character exists only because it is a token; a single
     * character that is not a token falls back to its bytes. */
    for (int32_t i = 0; rc == 0 && i != -1; i = w.syms[i].next) {
        const sym *s = &w.syms[i];
        int32_t id = tok_find(v, buf + s->start, s->n);
        if (id >= 0) {
            rc = tok_ids_push(out, id);
            continue;
        }
        for (uint32_t k = 0; rc == 0 && k < s->n; k++) {
            int32_t bid = v->byte_tok[(unsigned char)buf[s->start + k]];
            if (bid < 0) {
                bid = v->unk;
            }
            if (bid >= 0) {
                rc = tok_ids_push(out, bid);
            }
        }
    }
    work_free(&w);
    return rc;
}

/* tok_stream.c - incremental detokenisation for streaming.
 *
 * Each pushed token's piece is appended to the bytes held back from the previous call, and the
 * longest prefix that is final is emitted. A prefix is final when (1) it does not end inside a
 * UTF-8 sequence and (2) for vocabs with clean_spaces, no clean-up pattern (" ?", " !", " .",
 * " ,", " ' ", " 's", " 'm", " 're", " 've": every pattern starts with a space and is at most
 * four bytes) could still straddle the cut given the bytes known so far. Cleaning the emitted
 * prefix on its own then gives exactly what cleaning the whole text gives, so the concatenated
 * stream equals tok_decode() of all ids. At most a few bytes are ever held back.
 * Generated text is a continuation: its first piece keeps its leading space (SentencePiece's
 * prefix space is removed only from the first token of a whole sequence, tok_stream_init_seq).
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char *const clean_patterns[] = {" ?",  " !",  " .",   " ,",  " ' ",
                                             " 's", " 'm", " 're", " 've"};

/* Length of the prefix of s[0..n) that does not end in an incomplete UTF-8 sequence. */
static size_t utf8_complete(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) {
            continue;
        }
        if (c >= 0xC0) {
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (need > k) {
                return n - k;
            }
        }
        return n;
    }
    return n;
}

/* True when a clean-up pattern starting before p could extend past p. */
static bool cut_unsafe(const char *s, size_t p, size_t n)
{
    for (size_t st = p > 3 ? p - 3 : 0; st < p; st++) {
        if (s[st] != ' ') {
            continue;
        }
        for (size_t k = 0; k < KS_ARRAY_LEN(clean_patterns); k++) {
            const char *pat = clean_patterns[k];
            size_t pl = strlen(pat);
            if (pl <= p - st) {
                continue;
            }
            size_t common = KS_MIN(pl, n - st);
            if (memcmp(s + st, pat, common) == 0) {
                return true;
            }
        }
    }
    return false;
}

static size_t final_prefix(const tok_vocab *v, const char *s, size_t n)
{
    size_t p = utf8_complete(s, n);
    if (!v->clean_spaces) {
        return p;
    }
    while (p > 0 && (cut_unsafe(s, p, n) || (p < n && ((unsigned char)s[p] & 0xC0) == 0x80))) {
        p--;
    }
    return p;
}

void tok_stream_init(tok_stream *s, const tok_vocab *v, bool special)
{
    s->vocab = v;
    s->special = special;
    s->first = false; /* a continuation: only a sequence's first token loses its space */
    s->n_pending = 0;
}

void tok_stream_init_seq(tok_stream *s, const tok_vocab *v, bool special)
{
    tok_stream_init(s, v, special);
    s->first = true;
}

int32_t tok_stream_push(tok_stream *s, int32_t id, char *out, int32_t cap)
{
    const tok_vocab *v = s->vocab;
    bool strip = s->first && v->add_space_prefix;
    int32_t n = tok_piece_lstrip(v, id, s->special, strip, NULL, 0);
    if (n < 0) {
        return n;
    }
    char local[512];
    size_t total = (size_t)s->n_pending + (size_t)n;
    char *buf = total <= sizeof(local) ? local : malloc(total);
    if (!buf) {
        return KS_ERR_NOMEM;
    }
    memcpy(buf, s->pending, (size_t)s->n_pending);
    (void)tok_piece_lstrip(v, id, s->special, strip, buf + s->n_pending, n);
    size_t p = final_prefix(v, buf, total);
    if (total - p > sizeof(s->pending)) {
        p = total - sizeof(s->pending); /* never happens with valid pieces; stay bounded */
    }
    size_t emit = v->clean_spaces ? tok_clean_spaces(buf, p) : p;
    if (emit > (size_t)KS_MAX(cap, 0)) {
        if (buf != local) {
            free(buf);
        }
        return KS_ERR_RANGE;
    }
    memcpy(out, buf, emit);
    memmove(s->pending, buf + p, total - p);
    s->n_pending = (int32_t)(total - p);
    s->first = false;
    if (buf != local) {
        free(buf);
    }
    return (int32_t)emit;
}

int32_t tok_stream_flush(tok_stream *s, char *out, int32_t cap)
{
    char buf[sizeof(s->pending) + 3];
    size_t n = (size_t)s->n_pending;
    memcpy(buf, s->pending, n);
    if (s->vocab->clean_spaces) {
        n = tok_clean_spaces(buf, n);
    }
    size_t ok = utf8_complete(buf, n);
    if (ok < n) {
        memcpy(buf + ok, "\xef\xbf\xbd", 3);
        n = ok + 3;
    }
    if (n > (size_t)KS_MAX(cap, 0)) {
        return KS_ERR_RANGE;
    }
    memcpy(out, buf, n);
    s->n_pending = 0;
    return (int32_t)n;
}

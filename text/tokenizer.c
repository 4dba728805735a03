/* tokenizer.c - loads a tokenizer from GGUF metadata (tokenizer.ggml.*) and implements encode,
 * per-token pieces and detokenisation with llama.cpp's rules.
 *
 * Encoding first partitions the text around special tokens written in it (longest token first,
 * every occurrence, like llama.cpp's tokenizer_st_partition; USER_DEFINED tokens always, CONTROL
 * and UNKNOWN ones only with parse_special), then runs the vocab's algorithm on each raw
 * fragment: SentencePiece (space prefix, ' ' -> U+2581, bigram merges by score, byte fallback;
 * tok_bpe.c) or byte-level BPE (pre-tokenizer of the family, tok_pre.c, then merges by rank).
 * Invariant: a tok_vocab is immutable once loaded, so encode/decode are thread-safe.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode.h"

/* ---- accessors ---- */

tok_kind tok_vocab_kind(const tok_vocab *v)
{
    return v->kind;
}
int32_t tok_vocab_n_tokens(const tok_vocab *v)
{
    return v->n_tokens;
}
int32_t tok_bos(const tok_vocab *v)
{
    return v->bos;
}
int32_t tok_eos(const tok_vocab *v)
{
    return v->eos;
}
bool tok_add_bos(const tok_vocab *v)
{
    return v->add_bos && v->bos >= 0;
}
bool tok_add_eos(const tok_vocab *v)
{
    return v->add_eos && v->eos >= 0;
}
const char *tok_chat_template(const tok_vocab *v)
{
    return v->chat_template;
}
int32_t tok_fim_token(const tok_vocab *v, tok_fim which)
{
    return which >= TOK_FIM_PRE && which <= TOK_FIM_MID ? v->fim[which] : -1;
}

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && (v->attr[id] & TOKA_EOG);
}

/* ---- encoding ---- */

typedef struct frag {
    int32_t token; /* -1: raw text [off, off + len) */
    size_t off, len;
} frag;

typedef struct frags {
    frag *p;
    size_t n, cap;
} frags;

static int frags_push(frags *f, frag x)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        frag *p = realloc(f->p, cap * sizeof(*p));
        if (!p) {
            return KS_ERR_NOMEM;
        }
        f->p = p;
        f->cap = cap;
    }
    f->p[f->n++] = x;
    return 0;
}

/* Text ranges where control tokens are not recognised (user text): see tok_encode_ex. */
typedef struct plain_set {
    const tok_span *p;
    size_t n;
} plain_set;

static bool overlaps_plain(const plain_set *ps, size_t off, size_t len)
{
    for (size_t i = 0; ps && i < ps->n; i++)
        if (off < ps->p[i].off + ps->p[i].len && ps->p[i].off < off + len) return true;
    return false;
}

/* Splits every raw fragment of *cur around the occurrences of one special token. A control
 * token written inside a plain range stays text. */
static int split_special(const tok_vocab *v, const char *text, int32_t id, const plain_set *ps,
                         frags *cur, frags *nxt)
{
    bool control = (v->attr[id] & (TOKA_CONTROL | TOKA_UNKNOWN)) != 0;
    const char *tt = tok_text(v, id);
    size_t tl = v->len[id];
    int rc = 0;
    nxt->n = 0;
    for (size_t i = 0; rc == 0 && i < cur->n; i++) {
        frag f = cur->p[i];
        if (f.token >= 0 || f.len < tl) {
            rc = frags_push(nxt, f);
            continue;
        }
        size_t base = f.off, end = f.off + f.len, from = base;
        for (;;) {
            const char *m = memmem(text + from, end - from, tt, tl);
            if (m && control && overlaps_plain(ps, (size_t)(m - text), tl)) {
                from = (size_t)(m - text) + 1; /* user text: not a marker, search on */
                continue;
            }
            if (!m) {
                if (end > base) {
                    rc = frags_push(nxt, (frag){-1, base, end - base});
                }
                break;
            }
            size_t mo = (size_t)(m - text), left = mo - base;
            if (v->attr[id] & TOKA_LSTRIP) {
                while (left > 0 && isspace((unsigned char)text[base + left - 1])) {
                    left--;
                }
            }
            if (left > 0 && (rc = frags_push(nxt, (frag){-1, base, left})) != 0) {
                break;
            }
            if ((rc = frags_push(nxt, (frag){id, 0, 0})) != 0) {
                break;
            }
            base = mo + tl;
            if (v->attr[id] & TOKA_RSTRIP) {
                while (base < end && isspace((unsigned char)text[base])) {
                    base++;
                }
            }
            from = base;
        }
    }
    frags t = *cur;
    *cur = *nxt;
    *nxt = t;
    return rc;
}

static int partition(const tok_vocab *v, const char *text, size_t len, bool parse_special,
                     const plain_set *ps, frags *out)
{
    frags tmp = {0};
    int rc = frags_push(out, (frag){-1, 0, len});
    for (int32_t s = 0; rc == 0 && s < v->n_special; s++) {
        int32_t id = v->special[s];
        if (!parse_special && (v->attr[id] & (TOKA_CONTROL | TOKA_UNKNOWN))) {
            continue;
        }
        rc = split_special(v, text, id, ps, out, &tmp);
    }
    free(tmp.p);
    return rc;
}

/* SentencePiece: optional space prefix, ' ' -> U+2581, then the merge. */
static int spm_fragment(const tok_vocab *v, const char *s, size_t n, bool prefix, tok_ids *out)
{
    size_t spaces = prefix ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
        spaces += s[i] == ' ';
    }
    char *buf = malloc(n + spaces * 2 + 3);
    if (!buf) {
        return KS_ERR_NOMEM;
    }
    size_t k = 0;
    if (prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            buf[k++] = s[i];
        }
    }
    /* When no token has U+2581 after another character, no merge can cross the start of a
     * U+2581 run, and merging each run-started word alone gives the same result (the merge
     * order inside a word is unchanged) while keeping the heap small. */
    int rc = 0;
    size_t start = 0;
    bool prev_ws = false;
    for (size_t i = 0; v->spm_split && rc == 0 && i < k;) {
        bool ws = i + 3 <= k && memcmp(buf + i, "\xe2\x96\x81", 3) == 0;
        if (ws && i > 0 && !prev_ws) {
            rc = tok_spm_encode(v, buf + start, i - start, out);
            start = i;
        }
        prev_ws = ws;
        i += KS_MIN(uni_len_utf8((unsigned char)buf[i]), k - i); /* the merge's characters */
    }
    if (rc == 0) {
        rc = tok_spm_encode(v, buf + start, k - start, out);
    }
    free(buf);
    return rc;
}

static int encode_all(const tok_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, const plain_set *ps, tok_ids *out)
{
    frags fr = {0};
    int rc = len ? partition(v, text, len, parse_special, ps, &fr) : 0;
    if (rc == 0 && add_special && v->add_bos && v->bos >= 0) {
        rc = tok_ids_push(out, v->bos);
    }
    bool prev_special = true; /* SPM: a space prefix before the first raw fragment */
    for (size_t i = 0; rc == 0 && i < fr.n; i++) {
        const frag *f = &fr.p[i];
        if (f->token >= 0) {
            rc = tok_ids_push(out, f->token);
            prev_special = true;
        } else if (v->kind == TOK_KIND_SPM) {
            rc = spm_fragment(v, text + f->off, f->len, v->add_space_prefix && prev_special, out);
            prev_special = false;
        } else {
            rc = tok_bpe_encode(v, text + f->off, f->len, out);
        }
    }
    if (rc == 0 && add_special && v->add_eos && v->eos >= 0) {
        rc = tok_ids_push(out, v->eos);
    }
    free(fr.p);
    return rc;
}

int32_t tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
                   bool parse_special, int32_t *ids, int32_t max)
{
    if (!v || (!text && len) || max < 0 || (!ids && max > 0)) {
        return KS_ERR_INVALID;
    }
    tok_ids out = {0};
    int rc = encode_all(v, text, len, add_special, parse_special, NULL, &out);
    if (rc == 0 && out.n > INT32_MAX) {
        rc = KS_ERR_RANGE;
    }
    if (rc == 0 && max > 0) {
        memcpy(ids, out.p, KS_MIN(out.n, (size_t)max) * sizeof(*ids));
    }
    int32_t n = (int32_t)out.n;
    free(out.p);
    return rc ? rc : n;
}

int tok_encode_ex(const tok_vocab *v, const char *text, size_t len, bool add_special,
                  const tok_span *plain, size_t n_plain, int32_t **ids, int32_t *n_ids)
{
    if (!v || (!text && len) || !ids || !n_ids || (n_plain && !plain)) {
        return KS_ERR_INVALID;
    }
    for (size_t i = 0; i < n_plain; i++) {
        if (plain[i].off > len || plain[i].len > len - plain[i].off) {
            return KS_ERR_INVALID;
        }
    }
    tok_ids out = {0};
    plain_set ps = {plain, n_plain};
    int rc = encode_all(v, text, len, add_special, true, &ps, &out);
    if (rc == 0 && out.n > INT32_MAX) {
        rc = KS_ERR_RANGE;
    }
    if (rc) {
        free(out.p);
        return rc;
    }
    *n_ids = (int32_t)out.n;
    *ids = out.p ? out.p : malloc(sizeof(int32_t));
    return *ids ? 0 : KS_ERR_NOMEM;
}

bool tok_text_has_control(const tok_vocab *v, const char *text, size_t len)
{
    for (int32_t s = 0; v && text && s < v->n_special; s++) {
        int32_t id = v->special[s];
        if ((v->attr[id] & (TOKA_CONTROL | TOKA_UNKNOWN)) && v->len[id] > 0 &&
            memmem(text, len, tok_text(v, id), v->len[id])) {
            return true;
        }
    }
    return false;
}

/* ---- pieces and detokenisation ---- */

typedef struct wbuf {
    char *buf;
    int32_t cap, n;
    bool strip; /* drop one leading ' ' (llama.cpp's lstrip = 1) */
} wbuf;

static void wput(wbuf *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (w->strip) {
            w->strip = false;
            if (s[i] == ' ') {
                continue;
            }
        }
        if (w->n < w->cap) {
            w->buf[w->n] = s[i];
        }
        w->n++;
    }
}

static void put_bpe_text(wbuf *w, const char *t, size_t n)
{
    for (size_t off = 0; off < n;) {
        uint32_t cp = uni_decode(t, n, &off);
        int b = tok_cp_to_byte(cp);
        if (b >= 0) {
            char c = (char)b;
            wput(w, &c, 1);
            continue;
        }
        /* llama.cpp's llama_decode_text fallback */
        char u[4], hex[3];
        size_t ul = uni_encode(cp, u);
        wput(w, "[UNK_BYTE_0x", 12);
        for (size_t k = 0; k < ul; k++) {
            snprintf(hex, sizeof(hex), "%02x", (unsigned char)u[k]);
            wput(w, hex, 2);
        }
        wput(w, t, n);
        wput(w, "]", 1);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int piece_into(const tok_vocab *v, int32_t id, bool special, wbuf *w)
{
    if (id < 0 || id >= v->n_tokens) {
        return KS_ERR_INVALID;
    }
    uint16_t a = v->attr[id];
    if (!special && (a & (TOKA_UNKNOWN | TOKA_CONTROL))) {
        return 0;
    }
    const char *t = tok_text(v, id);
    size_t n = v->len[id];
    if (a & (TOKA_UNKNOWN | TOKA_CONTROL | TOKA_USER)) {
        wput(w, t, n);
    } else if ((a & TOKA_NORMAL) && v->kind == TOK_KIND_SPM) {
        for (size_t i = 0; i < n; i++) {
            if (i + 2 < n && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                wput(w, " ", 1);
                i += 2;
            } else {
                wput(w, t + i, 1);
            }
        }
    } else if (a & TOKA_NORMAL) {
        put_bpe_text(w, t, n);
    } else if ((a & TOKA_BYTE) && v->kind == TOK_KIND_SPM && n >= 5) {
        int hi = hexval(t[3]), lo = hexval(t[4]);
        char c = (char)((hi < 0 || lo < 0) ? 0 : hi * 16 + lo);
        wput(w, &c, 1);
    }
    return 0;
}

int32_t tok_piece(const tok_vocab *v, int32_t id, bool special, char *buf, int32_t cap)
{
    wbuf w = {buf, buf ? KS_MAX(cap, 0) : 0, 0, false};
    int rc = piece_into(v, id, special, &w);
    return rc ? rc : w.n;
}

/* Piece with llama.cpp's lstrip: used by the decoder for the first token. */
int32_t tok_piece_lstrip(const tok_vocab *v, int32_t id, bool special, bool lstrip, char *buf,
                         int32_t cap)
{
    wbuf w = {buf, buf ? KS_MAX(cap, 0) : 0, 0, lstrip};
    int rc = piece_into(v, id, special, &w);
    return rc ? rc : w.n;
}

size_t tok_clean_spaces(char *s, size_t n)
{
    /* " ?", " !", " .", " ," lose the space */
    size_t t = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) {
            t--;
        }
        s[t++] = x;
    }
    /* " ' " -> "'" */
    size_t n2 = t;
    t = n2 ? 1 : 0;
    for (size_t i = 1; i < n2; i++) {
        char x = s[i];
        if (x == '\'' && i + 1 < n2 && s[i - 1] == ' ' && s[i + 1] == ' ') {
            t--;
            s[++i] = '\0';
        }
        s[t++] = x;
    }
    /* " 's", " 'm", " 're", " 've" lose the space */
    size_t n3 = t;
    t = n3 ? 1 : 0;
    for (size_t i = 1; i < n3; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && x == '\'' && i + 1 < n3) {
            char x1 = s[i + 1];
            if (x1 == 's' || x1 == 'm') {
                t--;
            } else if (i + 2 < n3 &&
                       ((x1 == 'r' && s[i + 2] == 'e') || (x1 == 'v' && s[i + 2] == 'e'))) {
                t--;
            }
        }
        s[t++] = x;
    }
    return t;
}

int32_t tok_decode(const tok_vocab *v, const int32_t *ids, int32_t n, bool special, char *buf,
                   int32_t cap)
{
    if (!v || n < 0 || (!ids && n > 0)) {
        return KS_ERR_INVALID;
    }
    wbuf w = {buf, buf ? KS_MAX(cap, 0) : 0, 0, v->add_space_prefix};
    for (int32_t i = 0; i < n; i++) {
        int rc = piece_into(v, ids[i], special, &w);
        if (rc) {
            return rc;
        }
        w.strip = false;
    }
    if (w.n > w.cap || !v->clean_spaces) {
        return w.n;
    }
    return (int32_t)tok_clean_spaces(buf, (size_t)w.n);
}

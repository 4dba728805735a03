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

/* ---- hash maps ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = mix64(h ^ k);
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    return mix64(h ^ k);
}

static uint64_t hash_u64(uint64_t x)
{
    return mix64(x);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) {
        c <<= 1;
    }
    return c;
}

int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & v->tmask;
    for (;;) {
        uint32_t slot = v->tmap[i];
        if (slot == 0) {
            return -1;
        }
        int32_t id = (int32_t)slot - 1;
        if (v->len[id] == n && memcmp(tok_text(v, id), s, n) == 0) {
            return id;
        }
        i = (i + 1) & v->tmask;
    }
}

/* Later duplicates replace earlier ones (llama.cpp: token_to_id[word] = i). */
static void tmap_insert(tok_vocab *v, int32_t id)
{
    const char *s = tok_text(v, id);
    size_t n = v->len[id];
    uint32_t i = (uint32_t)hash_bytes(s, n) & v->tmask;
    while (v->tmap[i] != 0) {
        int32_t o = (int32_t)v->tmap[i] - 1;
        if (v->len[o] == n && memcmp(tok_text(v, o), s, n) == 0) {
            break;
        }
        i = (i + 1) & v->tmask;
    }
    v->tmap[i] = (uint32_t)id + 1;
}

int32_t tok_merge_rank(const tok_vocab *v, int32_t left, int32_t right)
{
    if (!v->mkey) {
        return -1;
    }
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & v->mmask;
    while (v->mkey[i] != 0) {
        if (v->mkey[i] == key) {
            return v->mrank[i];
        }
        i = (i + 1) & v->mmask;
    }
    return -1;
}

/* First occurrence wins (llama.cpp: bpe_ranks.emplace). */
static void mmap_insert(tok_vocab *v, int32_t left, int32_t right, int32_t rank)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & v->mmask;
    while (v->mkey[i] != 0) {
        if (v->mkey[i] == key) {
            return;
        }
        i = (i + 1) & v->mmask;
    }
    v->mkey[i] = key;
    v->mrank[i] = rank;
}

int tok_index_tokens(tok_vocab *v)
{
    v->tmask = pow2_at_least((size_t)v->n_tokens * 2) - 1;
    v->tmap = calloc((size_t)v->tmask + 1, sizeof(*v->tmap));
    if (!v->tmap) {
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < v->n_tokens; i++) {
        tmap_insert(v, i);
    }
    return 0;
}

int tok_index_merges(tok_vocab *v, const int32_t *left, const int32_t *right, int32_t n)
{
    v->mmask = pow2_at_least((size_t)n * 2) - 1;
    v->mkey = calloc((size_t)v->mmask + 1, sizeof(*v->mkey));
    v->mrank = malloc(((size_t)v->mmask + 1) * sizeof(*v->mrank));
    if (!v->mkey || !v->mrank) {
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < n; i++) {
        if (left[i] >= 0 && right[i] >= 0) {
            mmap_insert(v, left[i], right[i], i);
        }
    }
    v->n_merges = n;
    return 0;
}

int tok_ids_push(tok_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *p = realloc(o->p, cap * sizeof(*p));
        if (!p) {
            return KS_ERR_NOMEM;
        }
        o->p = p;
        o->cap = cap;
    }
    o->p[o->n++] = id;
    return 0;
}

/* ---- GPT-2 byte map ---- */

const uint16_t tok_byte_to_cp[256] = {
#define R4(a) a, a + 1, a + 2, a + 3
    /* 0x00-0x20 -> U+0100..U+0120 */
    R4(256), R4(260), R4(264), R4(268), R4(272), R4(276), R4(280), R4(284), 288,
    /* 0x21-0x7E map to themselves */
    33, 34, 35, R4(36), R4(40), R4(44), R4(48), R4(52), R4(56), R4(60), R4(64), R4(68), R4(72),
    R4(76), R4(80), R4(84), R4(88), R4(92), R4(96), R4(100), R4(104), R4(108), R4(112), R4(116),
    R4(120), 124, 125, 126,
    /* 0x7F-0xA0 -> U+0121..U+0142 */
    R4(289), R4(293), R4(297), R4(301), R4(305), R4(309), R4(313), R4(317), 321, 322,
    /* 0xA1-0xAC themselves, 0xAD -> U+0143, 0xAE-0xFF themselves */
    161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, R4(174), R4(178), R4(182),
    R4(186), R4(190), R4(194), R4(198), R4(202), R4(206), R4(210), R4(214), R4(218), R4(222),
    R4(226), R4(230), R4(234), R4(238), R4(242), R4(246), R4(250), 254, 255,
#undef R4
};

int tok_cp_to_byte(uint32_t cp)
{
    static int16_t inv[324];
    static int ready;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 324; i++) {
            inv[i] = -1;
        }
        for (int b = 0; b < 256; b++) {
            inv[tok_byte_to_cp[b]] = (int16_t)b;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    return cp < 324 ? inv[cp] : -1;
}

/* ---- accessors ---- */

tok_kind tok_vocab_kind(const tok_vocab *v) { return v->kind; }
int32_t tok_vocab_n_tokens(const tok_vocab *v) { return v->n_tokens; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
bool tok_add_bos(const tok_vocab *v) { return v->add_bos && v->bos >= 0; }
bool tok_add_eos(const tok_vocab *v) { return v->add_eos && v->eos >= 0; }
const char *tok_chat_template(const tok_vocab *v) { return v->chat_template; }

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
            } else if (i + 2 < n3 && ((x1 == 'r' && s[i + 2] == 'e') ||
                                      (x1 == 'v' && s[i + 2] == 'e'))) {
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

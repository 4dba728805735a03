/* toml.c - a strict TOML 1.0 reader (the subset kvserve's configuration uses, and a bit more).
 *
 * Why ours: no C TOML library is packaged for Debian. The parser is a single forward pass of
 * recursive descent over validated UTF-8 text; every node lives in the document's arena.
 *
 * Table (re)definition rules, tracked with per-table flags:
 *   IMPLICIT  created as a parent of a [header] path: may later be defined once by a header,
 *             and may be extended by dotted keys;
 *   HEADER    defined by [header]: never again by a header, never by dotted keys;
 *   DOTTED    created (or claimed) by dotted keys in section S: extendable by dotted keys of
 *             the same section only; headers may define sub-tables but not the table itself;
 *   INLINE    an inline table: frozen, nothing may be added to it;
 *   AOT       an array created by [[header]] (static arrays cannot be appended to).
 * Invariant: a node, once added to a table, is never removed; keys in a table are unique.
 */
#include "toml.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TF_IMPLICIT = 1, TF_HEADER = 2, TF_DOTTED = 4, TF_INLINE = 8, TF_AOT = 16 };
enum { MAX_DEPTH = 64, MAX_KEY_PARTS = 32 };

struct toml_node {
    toml_kind kind;
    int line;
    unsigned flags;
    int section;
    union {
        struct {
            char *s;
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
    } v;
    toml_node **items; /* [cap] array elements or table values */
    char **keys;       /* [cap] table keys; NULL for arrays */
    size_t n, cap;
};

struct toml_doc {
    ks_arena arena;
    toml_node *root;
    char filename[256];
};

typedef struct parser {
    const char *p, *end;
    int line;
    toml_doc *doc;
    ks_diag *d;
    int section;   /* incremented by each [header] */
    char hdr[128]; /* dotted path of the current header, for diagnostics */
    char key[128]; /* dotted path of the key being parsed, for diagnostics */
    char *buf;     /* scratch for decoding strings and keys (malloc'd) */
    size_t buf_len, buf_cap;
} parser;

/* A diagnostic longer than ks_diag.msg is cut; that is intended. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
int toml_diag_vset(ks_diag *d, int status, const char *file, int line, const char *key,
                   const char *fmt, va_list ap)
{
    if (!d) return status;
    char reason[320];
    int w = vsnprintf(reason, sizeof(reason), fmt, ap);
    w += snprintf(d->file, sizeof(d->file), "%s", file ? file : "");
    w += snprintf(d->key, sizeof(d->key), "%s", key ? key : "");
    d->line = line;
    if (d->key[0])
        w += snprintf(d->msg, sizeof(d->msg), "%s:%d: %s: %s", d->file, line, d->key, reason);
    else
        w += snprintf(d->msg, sizeof(d->msg), "%s:%d: %s", d->file, line, reason);
    (void)w;
    return status;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

int toml_diag_set(ks_diag *d, int status, const char *file, int line, const char *key,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    toml_diag_vset(d, status, file, line, key, fmt, ap);
    va_end(ap);
    return status;
}

static int perr(parser *ps, int status, const char *fmt, ...) KS_PRINTF(3, 4);

static int perr(parser *ps, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    toml_diag_vset(ps->d, status, ps->doc->filename, ps->line, ps->key, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- nodes ---- */

static toml_node *node_new(parser *ps, toml_kind kind)
{
    toml_node *n = ks_arena_alloc(&ps->doc->arena, sizeof(*n));
    if (!n) return NULL;
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->line = ps->line;
    return n;
}

static int node_append(parser *ps, toml_node *parent, const char *key, toml_node *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        toml_node **items = ks_arena_alloc(&ps->doc->arena, cap * sizeof(*items));
        char **keys = NULL;
        if (parent->kind == TOML_TABLE) keys = ks_arena_alloc(&ps->doc->arena, cap * sizeof(*keys));
        if (!items || (parent->kind == TOML_TABLE && !keys)) return KS_ERR_NOMEM;
        if (parent->n) memcpy(items, parent->items, parent->n * sizeof(*items));
        if (keys && parent->n) memcpy(keys, parent->keys, parent->n * sizeof(*keys));
        parent->items = items;
        parent->keys = keys;
        parent->cap = cap;
    }
    parent->items[parent->n] = child;
    if (parent->kind == TOML_TABLE) parent->keys[parent->n] = (char *)key;
    parent->n++;
    return KS_OK;
}

static toml_node *table_lookup(const toml_node *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i], key) == 0) return t->items[i];
    return NULL;
}

static void freeze(toml_node *t)
{
    t->flags |= TF_INLINE;
    for (size_t i = 0; i < t->n; i++)
        if (t->items[i]->kind == TOML_TABLE) freeze(t->items[i]);
}

/* ---- low-level lexing ---- */

static int peek(const parser *ps)
{
    return ps->p < ps->end ? (unsigned char)*ps->p : -1;
}

static int peek_at(const parser *ps, size_t k)
{
    return (size_t)(ps->end - ps->p) > k ? (unsigned char)ps->p[k] : -1;
}

static bool starts_with(const parser *ps, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, s, n) == 0;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
}

/* Consumes one LF or CRLF; returns whether it did. */
static bool eat_newline(parser *ps)
{
    if (peek(ps) == '\n') {
        ps->p++;
        ps->line++;
        return true;
    }
    if (peek(ps) == '\r' && peek_at(ps, 1) == '\n') {
        ps->p += 2;
        ps->line++;
        return true;
    }
    return false;
}

static bool is_ctrl(int c)
{
    return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* Skips a comment if one starts here (up to, not including, the newline). */
static int skip_comment(parser *ps)
{
    if (peek(ps) != '#') return KS_OK;
    while (ps->p < ps->end && *ps->p != '\n') {
        int c = (unsigned char)*ps->p;
        if (c == '\r' && peek_at(ps, 1) == '\n') break;
        if (is_ctrl(c)) return perr(ps, KS_ERR_FORMAT, "control character 0x%02x in comment", c);
        ps->p++;
    }
    return KS_OK;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_blank(parser *ps)
{
    for (;;) {
        skip_ws(ps);
        int rc = skip_comment(ps);
        if (rc) return rc;
        if (!eat_newline(ps)) return KS_OK;
    }
}

static int expect_eol(parser *ps, const char *after)
{
    skip_ws(ps);
    int rc = skip_comment(ps);
    if (rc) return rc;
    if (ps->p == ps->end || eat_newline(ps)) return KS_OK;
    if (peek(ps) == '\r') return perr(ps, KS_ERR_FORMAT, "bare carriage return");
    return perr(ps, KS_ERR_FORMAT, "expected end of line after %s, found '%c'", after, *ps->p);
}

/* Validates UTF-8 over the whole text (no overlongs, surrogates or values > U+10FFFF). */
static int check_utf8(parser *ps)
{
    const unsigned char *s = (const unsigned char *)ps->p, *e = (const unsigned char *)ps->end;
    int line = 1;
    while (s < e) {
        unsigned c = *s;
        if (c == '\n') line++;
        if (c < 0x80) {
            s++;
            continue;
        }
        int n = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
        uint32_t cp = n == 3 ? c & 7 : n == 2 ? c & 15 : c & 31;
        bool ok = n > 0 && c < 0xf5 && e - s > n;
        for (int k = 1; ok && k <= n; k++) {
            ok = (s[k] & 0xc0) == 0x80;
            cp = (cp << 6) | (s[k] & 0x3f);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (!ok || cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            ps->line = line;
            return perr(ps, KS_ERR_FORMAT, "invalid UTF-8");
        }
        s += n + 1;
    }
    return KS_OK;
}

/* ---- string decoding into ps->buf ---- */

static int buf_put(parser *ps, const char *s, size_t n)
{
    if (ps->buf_cap - ps->buf_len < n + 1) {
        size_t cap = ps->buf_cap ? ps->buf_cap : 64;
        while (cap - ps->buf_len < n + 1)
            cap *= 2;
        char *b = realloc(ps->buf, cap);
        if (!b) return perr(ps, KS_ERR_NOMEM, "out of memory");
        ps->buf = b;
        ps->buf_cap = cap;
    }
    memcpy(ps->buf + ps->buf_len, s, n);
    ps->buf_len += n;
    ps->buf[ps->buf_len] = 0;
    return KS_OK;
}

static int put_codepoint(parser *ps, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_put(ps, u, n);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes one escape; ps->p points after the backslash. */
static int parse_escape(parser *ps)
{
    int c = peek(ps);
    static const char from[] = "btnfr\"\\", to[] = "\b\t\n\f\r\"\\";
    const char *f = c > 0 ? strchr(from, c) : NULL;
    if (f) {
        ps->p++;
        return buf_put(ps, &to[f - from], 1);
    }
    if (c != 'u' && c != 'U') {
        if (c < 0x20 || c >= 0x7f) return perr(ps, KS_ERR_FORMAT, "invalid escape sequence");
        return perr(ps, KS_ERR_FORMAT, "invalid escape sequence '\\%c'", c);
    }
    int ndig = c == 'u' ? 4 : 8;
    ps->p++;
    uint32_t cp = 0;
    for (int k = 0; k < ndig; k++) {
        int h = hexval(peek(ps));
        if (h < 0) return perr(ps, KS_ERR_FORMAT, "\\%c escape needs %d hex digits", c, ndig);
        cp = cp * 16 + (uint32_t)h;
        ps->p++;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return perr(ps, KS_ERR_FORMAT, "escape \\%c is not a Unicode scalar value", c);
    return put_codepoint(ps, cp);
}

/* Line-ending backslash in a multi-line basic string: skip whitespace and newlines. */
static int skip_line_continuation(parser *ps)
{
    const char *save = ps->p;
    skip_ws(ps);
    if (!eat_newline(ps)) {
        ps->p = save;
        return perr(ps, KS_ERR_FORMAT, "invalid escape sequence '\\ ' (only at end of line)");
    }
    for (;;) {
        skip_ws(ps);
        if (!eat_newline(ps)) return KS_OK;
    }
}

/* Parses any string form starting at ps->p into ps->buf. `allow_ml` is false for keys. */
static int parse_string(parser *ps, bool allow_ml)
{
    char q = *ps->p;
    bool basic = q == '"';
    bool ml = allow_ml && starts_with(ps, basic ? "\"\"\"" : "'''");
    ps->buf_len = 0;
    int rc = buf_put(ps, "", 0);
    if (rc) return rc;
    ps->p += ml ? 3 : 1;
    if (ml) eat_newline(ps);
    for (;;) {
        int c = peek(ps);
        if (c < 0) return perr(ps, KS_ERR_FORMAT, "unterminated string");
        if (c == q) {
            if (!ml) {
                ps->p++;
                return KS_OK;
            }
            size_t run = 0;
            while (peek_at(ps, run) == q)
                run++;
            if (run >= 3) {
                if (run > 5) return perr(ps, KS_ERR_FORMAT, "too many quotes closing a string");
                rc = buf_put(ps, ps->p, run - 3);
                ps->p += run;
                return rc;
            }
            rc = buf_put(ps, ps->p, run);
            ps->p += run;
        } else if (c == '\\' && basic) {
            ps->p++;
            int e = peek(ps);
            if (ml && (e == ' ' || e == '\t' || e == '\n' || e == '\r'))
                rc = skip_line_continuation(ps);
            else
                rc = parse_escape(ps);
        } else if (c == '\n' || c == '\r') {
            if (!ml) return perr(ps, KS_ERR_FORMAT, "newline in single-line string");
            if (!eat_newline(ps)) return perr(ps, KS_ERR_FORMAT, "bare carriage return in string");
            rc = buf_put(ps, "\n", 1);
        } else if (is_ctrl(c)) {
            return perr(ps, KS_ERR_FORMAT, "control character 0x%02x in string", c);
        } else {
            const char *s = ps->p++;
            while (ps->p < ps->end && *ps->p != q && *ps->p != '\\' &&
                   !is_ctrl((unsigned char)*ps->p))
                ps->p++;
            rc = buf_put(ps, s, (size_t)(ps->p - s));
        }
        if (rc) return rc;
    }
}

/* ---- keys ---- */

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static void key_append(char *dst, size_t cap, const char *part)
{
    size_t n = strlen(dst);
    if (n + 1 < cap) snprintf(dst + n, cap - n, "%s%s", n ? "." : "", part);
}

/* Parses a dotted key into parts (arena strings); records the path in ps->key. */
static int parse_key(parser *ps, char **parts, int *n_parts)
{
    int n = 0;
    for (;;) {
        skip_ws(ps);
        int c = peek(ps);
        if (c == '"' || c == '\'') {
            int rc = parse_string(ps, false);
            if (rc) return rc;
        } else if (is_bare(c)) {
            const char *s = ps->p;
            while (is_bare(peek(ps)))
                ps->p++;
            ps->buf_len = 0;
            int rc = buf_put(ps, s, (size_t)(ps->p - s));
            if (rc) return rc;
        } else {
            return perr(ps, KS_ERR_FORMAT, "expected a key");
        }
        if (n == MAX_KEY_PARTS) return perr(ps, KS_ERR_FORMAT, "key has too many parts");
        parts[n] = ks_arena_strdup(&ps->doc->arena, ps->buf, ps->buf_len);
        if (!parts[n]) return perr(ps, KS_ERR_NOMEM, "out of memory");
        key_append(ps->key, sizeof(ps->key), parts[n]);
        n++;
        skip_ws(ps);
        if (peek(ps) != '.') break;
        ps->p++;
    }
    *n_parts = n;
    return KS_OK;
}

/* ---- scalar values ---- */

/* Checks digits with single '_' between digits; `digit` selects the radix. */
static bool digits_ok(const char *s, size_t n, int (*digit)(int))
{
    if (n == 0 || digit((unsigned char)s[0]) < 0 || digit((unsigned char)s[n - 1]) < 0)
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '_' ? s[i - 1] == '_' : digit((unsigned char)s[i]) < 0) return false;
    return true;
}

static int dec_digit(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : -1;
}
static int oct_digit(int c)
{
    return c >= '0' && c <= '7' ? c - '0' : -1;
}
static int bin_digit(int c)
{
    return c == '0' || c == '1' ? c - '0' : -1;
}

static int parse_int_token(parser *ps, const char *s, size_t n, toml_node *out)
{
    bool neg = false, sign = s[0] == '+' || s[0] == '-';
    int radix = 10;
    int (*digit)(int) = dec_digit;
    if (sign) neg = s[0] == '-', s++, n--;
    if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
        if (sign) return perr(ps, KS_ERR_FORMAT, "sign not allowed on a prefixed integer");
        radix = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
        digit = radix == 16 ? hexval : radix == 8 ? oct_digit : bin_digit;
        s += 2, n -= 2;
    } else if (n > 1 && s[0] == '0') {
        return perr(ps, KS_ERR_FORMAT, "leading zeros are not allowed in integers");
    }
    if (!digits_ok(s, n, digit)) return perr(ps, KS_ERR_FORMAT, "invalid integer");
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') continue;
        uint64_t dg = (uint64_t)digit((unsigned char)s[i]);
        if (v > (limit - dg) / (uint64_t)radix)
            return perr(ps, KS_ERR_RANGE, "integer out of range (64-bit)");
        v = v * (uint64_t)radix + dg;
    }
    out->kind = TOML_INT;
    out->v.i = neg ? (int64_t)(0 - v) : (int64_t)v;
    return KS_OK;
}

static int parse_float_token(parser *ps, const char *s, size_t n, toml_node *out)
{
    const char *r = s + (s[0] == '+' || s[0] == '-');
    size_t rn = n - (size_t)(r - s);
    out->kind = TOML_FLOAT;
    if (rn == 3 && (memcmp(r, "inf", 3) == 0 || memcmp(r, "nan", 3) == 0)) {
        double v = r[0] == 'i' ? INFINITY : NAN;
        out->v.f = s[0] == '-' ? -v : v;
        return KS_OK;
    }
    size_t ip = 0; /* integer part */
    while (ip < rn && (dec_digit((unsigned char)r[ip]) >= 0 || r[ip] == '_'))
        ip++;
    bool ok = digits_ok(r, ip, dec_digit) && !(ip > 1 && r[0] == '0');
    size_t i = ip;
    if (ok && i < rn && r[i] == '.') {
        size_t f = ++i;
        while (i < rn && (dec_digit((unsigned char)r[i]) >= 0 || r[i] == '_'))
            i++;
        ok = digits_ok(r + f, i - f, dec_digit);
    }
    if (ok && i < rn && (r[i] == 'e' || r[i] == 'E')) {
        i++;
        if (i < rn && (r[i] == '+' || r[i] == '-')) i++;
        size_t e = i;
        while (i < rn && (dec_digit((unsigned char)r[i]) >= 0 || r[i] == '_'))
            i++;
        ok = digits_ok(r + e, i - e, dec_digit);
    }
    if (!ok || i != rn) return perr(ps, KS_ERR_FORMAT, "invalid number");
    char clean[128];
    size_t k = 0;
    for (size_t j = 0; j < n && k + 1 < sizeof(clean); j++)
        if (s[j] != '_') clean[k++] = s[j];
    clean[k] = 0;
    if (k + 1 >= sizeof(clean)) return perr(ps, KS_ERR_FORMAT, "float literal too long");
    out->v.f = strtod(clean, NULL);
    if (isinf(out->v.f)) return perr(ps, KS_ERR_RANGE, "float out of range");
    return KS_OK;
}

static int parse_scalar(parser *ps, toml_node *out)
{
    const char *s = ps->p;
    while (ps->p < ps->end && (is_bare(*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
        ps->p++;
    size_t n = (size_t)(ps->p - s);
    if (n == 0) {
        if (ps->p == ps->end || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '#')
            return perr(ps, KS_ERR_FORMAT, "expected a value");
        return perr(ps, KS_ERR_FORMAT, "expected a value, found '%c'", *ps->p);
    }
    if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0)) {
        out->kind = TOML_BOOL;
        out->v.b = n == 4;
        return KS_OK;
    }
    bool date = memchr(s, ':', n) || (n >= 5 && dec_digit((unsigned char)s[0]) >= 0 &&
                                      dec_digit((unsigned char)s[3]) >= 0 && s[4] == '-');
    if (date) return perr(ps, KS_ERR_UNSUPPORTED, "dates and times are unsupported");
    if (dec_digit((unsigned char)s[0]) < 0 && s[0] != '+' && s[0] != '-' && s[0] != 'i' &&
        s[0] != 'n')
        return perr(ps, KS_ERR_FORMAT, "invalid value '%.*s' (strings need quotes)",
                    (int)KS_MIN(n, 40), s);
    bool hex = n > 2 && s[0] == '0' && s[1] == 'x';
    const char *r = s + (s[0] == '+' || s[0] == '-');
    size_t rn = n - (size_t)(r - s);
    bool is_float = !hex && (memchr(s, '.', n) || memchr(s, 'e', n) || memchr(s, 'E', n) ||
                             (rn == 3 && (!memcmp(r, "inf", 3) || !memcmp(r, "nan", 3))));
    return is_float ? parse_float_token(ps, s, n, out) : parse_int_token(ps, s, n, out);
}

/* ---- compound values ---- */

static int parse_value(parser *ps, int depth, toml_node **out);
static int parse_keyval(parser *ps, toml_node *table, int depth);

static int parse_array(parser *ps, int depth, toml_node *arr)
{
    ps->p++; /* '[' */
    for (;;) {
        int rc = skip_blank(ps);
        if (rc) return rc;
        if (peek(ps) == ']') break;
        toml_node *v;
        if ((rc = parse_value(ps, depth + 1, &v)) || (rc = node_append(ps, arr, NULL, v)))
            return rc == KS_ERR_NOMEM ? perr(ps, rc, "out of memory") : rc;
        if ((rc = skip_blank(ps))) return rc;
        if (peek(ps) == ',') {
            ps->p++;
            continue;
        }
        if (peek(ps) == ']') break;
        return perr(ps, KS_ERR_FORMAT, "expected ',' or ']' in array");
    }
    ps->p++;
    return KS_OK;
}

static int parse_inline_table(parser *ps, int depth, toml_node *t)
{
    ps->p++; /* '{' */
    skip_ws(ps);
    if (peek(ps) == '}') {
        ps->p++;
        freeze(t);
        return KS_OK;
    }
    for (;;) {
        int rc = parse_keyval(ps, t, depth + 1);
        if (rc) return rc;
        skip_ws(ps);
        if (peek(ps) == '}') break;
        if (peek(ps) != ',') return perr(ps, KS_ERR_FORMAT, "expected ',' or '}' in inline table");
        ps->p++;
        skip_ws(ps);
        if (peek(ps) == '}')
            return perr(ps, KS_ERR_FORMAT, "trailing comma not allowed in inline table");
    }
    ps->p++;
    freeze(t);
    return KS_OK;
}

static int parse_value(parser *ps, int depth, toml_node **out)
{
    if (depth > MAX_DEPTH) return perr(ps, KS_ERR_FORMAT, "values nested too deeply");
    int c = peek(ps);
    toml_node *n = node_new(ps, c == '[' ? TOML_ARRAY : c == '{' ? TOML_TABLE : TOML_STRING);
    if (!n) return perr(ps, KS_ERR_NOMEM, "out of memory");
    *out = n;
    if (c == '[') return parse_array(ps, depth, n);
    if (c == '{') return parse_inline_table(ps, depth, n);
    if (c == '"' || c == '\'') {
        int rc = parse_string(ps, true);
        if (rc) return rc;
        n->v.str.s = ks_arena_strdup(&ps->doc->arena, ps->buf, ps->buf_len);
        n->v.str.len = ps->buf_len;
        return n->v.str.s ? KS_OK : perr(ps, KS_ERR_NOMEM, "out of memory");
    }
    return parse_scalar(ps, n);
}

/* key = value, into `table` (the current section or an inline table). */
static int parse_keyval(parser *ps, toml_node *table, int depth)
{
    char *parts[MAX_KEY_PARTS];
    int n = 0;
    snprintf(ps->key, sizeof(ps->key), "%s", table == ps->doc->root ? "" : ps->hdr);
    if (depth > 0) ps->key[0] = 0; /* inside an inline table: the key path alone */
    int rc = parse_key(ps, parts, &n);
    if (rc) return rc;
    if (peek(ps) != '=') return perr(ps, KS_ERR_FORMAT, "expected '=' after key");
    ps->p++;
    skip_ws(ps);
    toml_node *t = table;
    for (int i = 0; i < n - 1; i++) {
        toml_node *c = table_lookup(t, parts[i]);
        if (!c) {
            if (!(c = node_new(ps, TOML_TABLE)) || node_append(ps, t, parts[i], c))
                return perr(ps, KS_ERR_NOMEM, "out of memory");
        } else if (c->kind != TOML_TABLE) {
            return perr(ps, KS_ERR_FORMAT, "'%s' is already defined as a %s", parts[i],
                        c->kind == TOML_ARRAY ? "array" : "value");
        } else if ((c->flags & (TF_HEADER | TF_INLINE)) ||
                   ((c->flags & TF_DOTTED) && c->section != ps->section)) {
            return perr(ps, KS_ERR_FORMAT, "table '%s' is already defined elsewhere", parts[i]);
        }
        c->flags = (c->flags & ~(unsigned)TF_IMPLICIT) | TF_DOTTED;
        c->section = ps->section;
        t = c;
    }
    if (table_lookup(t, parts[n - 1])) return perr(ps, KS_ERR_FORMAT, "duplicate key");
    int line = ps->line;
    toml_node *v;
    if ((rc = parse_value(ps, depth, &v))) return rc;
    v->line = line;
    if (node_append(ps, t, parts[n - 1], v)) return perr(ps, KS_ERR_NOMEM, "out of memory");
    return KS_OK;
}

/* [a.b.c] or [[a.b.c]]: finds or creates the table and makes it current. */
static int parse_header(parser *ps, toml_node **cur)
{
    bool aot = starts_with(ps, "[[");
    ps->p += aot ? 2 : 1;
    char *parts[MAX_KEY_PARTS];
    int n = 0;
    ps->key[0] = 0;
    int rc = parse_key(ps, parts, &n);
    if (rc) return rc;
    if (!starts_with(ps, aot ? "]]" : "]"))
        return perr(ps, KS_ERR_FORMAT, "expected '%s' after table name", aot ? "]]" : "]");
    ps->p += aot ? 2 : 1;
    snprintf(ps->hdr, sizeof(ps->hdr), "%s", ps->key);
    ps->section++;
    toml_node *t = ps->doc->root;
    for (int i = 0; i < n; i++) {
        bool last = i == n - 1;
        toml_node *c = table_lookup(t, parts[i]);
        if (!c) {
            c = node_new(ps, last && aot ? TOML_ARRAY : TOML_TABLE);
            if (!c || node_append(ps, t, parts[i], c))
                return perr(ps, KS_ERR_NOMEM, "out of memory");
            c->flags = last ? (aot ? TF_AOT : TF_HEADER) : TF_IMPLICIT;
            if (!last || !aot) {
                t = c;
                continue;
            }
        }
        if (c->kind == TOML_ARRAY && (c->flags & TF_AOT)) {
            if (!last) {
                t = c->items[c->n - 1];
                continue;
            }
            if (!aot)
                return perr(ps, KS_ERR_FORMAT, "'%s' is already an array of tables", parts[i]);
            toml_node *e = node_new(ps, TOML_TABLE);
            if (!e || node_append(ps, c, NULL, e)) return perr(ps, KS_ERR_NOMEM, "out of memory");
            e->flags = TF_HEADER;
            t = e;
            break;
        }
        if (c->kind != TOML_TABLE)
            return perr(ps, KS_ERR_FORMAT, "'%s' is already defined as a %s", parts[i],
                        c->kind == TOML_ARRAY ? "static array" : "value");
        if (c->flags & TF_INLINE)
            return perr(ps, KS_ERR_FORMAT, "cannot extend inline table '%s'", parts[i]);
        if (last && (aot || (c->flags & (TF_HEADER | TF_DOTTED))))
            return perr(ps, KS_ERR_FORMAT, "table '%s' is defined more than once", ps->hdr);
        if (last && c->flags == TF_IMPLICIT) {
            c->flags = TF_HEADER;
            c->line = ps->line;
        }
        t = c;
    }
    *cur = t;
    return expect_eol(ps, "table header");
}

static int parse_document(parser *ps)
{
    toml_node *cur = ps->doc->root;
    if (starts_with(ps, "\xef\xbb\xbf")) ps->p += 3;
    while (ps->p < ps->end) {
        skip_ws(ps);
        int rc = skip_comment(ps);
        if (rc) return rc;
        if (ps->p == ps->end || eat_newline(ps)) continue;
        if (peek(ps) == '[') {
            rc = parse_header(ps, &cur);
        } else {
            rc = parse_keyval(ps, cur, 0);
            if (!rc) rc = expect_eol(ps, "value");
        }
        if (rc) return rc;
        ps->key[0] = 0;
    }
    return KS_OK;
}

int toml_parse(const char *text, size_t len, const char *filename, toml_doc **out, ks_diag *d)
{
    *out = NULL;
    toml_doc *doc = calloc(1, sizeof(*doc));
    if (!doc) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    ks_arena_init(&doc->arena, 16384);
    snprintf(doc->filename, sizeof(doc->filename), "%s", filename ? filename : "<string>");
    parser ps = {.p = text, .end = text + len, .line = 1, .doc = doc, .d = d};
    if (d) ks_diag_clear(d);
    doc->root = node_new(&ps, TOML_TABLE);
    int rc = doc->root ? check_utf8(&ps) : perr(&ps, KS_ERR_NOMEM, "out of memory");
    if (!rc) {
        ps.line = 1;
        rc = parse_document(&ps);
    }
    free(ps.buf);
    if (rc) {
        toml_doc_free(doc);
        return rc;
    }
    *out = doc;
    return KS_OK;
}

int toml_parse_file(const char *path, toml_doc **out, ks_diag *d)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = ks_read_file(path, &text, &len, d);
    if (rc) return rc;
    rc = toml_parse(text, len, path, out, d);
    free(text);
    return rc;
}

void toml_doc_free(toml_doc *doc)
{
    if (!doc) return;
    ks_arena_deinit(&doc->arena);
    free(doc);
}

/* ---- accessors ---- */

const toml_node *toml_doc_root(const toml_doc *doc)
{
    return doc->root;
}
const char *toml_doc_filename(const toml_doc *doc)
{
    return doc->filename;
}
toml_kind toml_node_kind(const toml_node *n)
{
    return n->kind;
}
int toml_node_line(const toml_node *n)
{
    return n->line;
}

const char *toml_kind_name(toml_kind k)
{
    static const char *names[] = {"string", "integer", "float", "boolean", "array", "table"};
    return (unsigned)k < KS_ARRAY_LEN(names) ? names[k] : "?";
}

const char *toml_node_string(const toml_node *n, size_t *len)
{
    assert(n->kind == TOML_STRING);
    if (len) *len = n->v.str.len;
    return n->v.str.s;
}

int64_t toml_node_int(const toml_node *n)
{
    assert(n->kind == TOML_INT);
    return n->v.i;
}

double toml_node_float(const toml_node *n)
{
    assert(n->kind == TOML_FLOAT);
    return n->v.f;
}

bool toml_node_bool(const toml_node *n)
{
    assert(n->kind == TOML_BOOL);
    return n->v.b;
}

size_t toml_node_count(const toml_node *n)
{
    return n->kind == TOML_ARRAY || n->kind == TOML_TABLE ? n->n : 0;
}

const toml_node *toml_node_at(const toml_node *n, size_t i)
{
    return (n->kind == TOML_ARRAY || n->kind == TOML_TABLE) && i < n->n ? n->items[i] : NULL;
}

const char *toml_table_key(const toml_node *table, size_t i)
{
    return table->kind == TOML_TABLE && i < table->n ? table->keys[i] : NULL;
}

const toml_node *toml_table_get(const toml_node *table, const char *key)
{
    return table && table->kind == TOML_TABLE ? table_lookup(table, key) : NULL;
}

const toml_node *toml_node_find(const toml_node *table, const char *path)
{
    const toml_node *n = table;
    char part[256];
    while (n && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        if (len >= sizeof(part)) return NULL;
        memcpy(part, path, len);
        part[len] = 0;
        n = toml_table_get(n, part);
        path += len + (dot != NULL);
    }
    return n;
}

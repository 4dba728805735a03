/* jinja_lex.c - splits a Jinja template into text and tag tokens, applying whitespace control
 * the way Hugging Face's environment does (trim_blocks and lstrip_blocks on):
 *   - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` after it;
 *   - trim_blocks: the first newline after a block or comment tag is removed;
 *   - lstrip_blocks: spaces and tabs between a line's start and a block or comment tag are
 *     removed (not for `{{`, and not when the tag opens with `{%+`).
 * Invariant: the token array ends with JJ_TOK_EOF; strings are unescaped into the arena.
 */
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

typedef struct lexer {
    ks_arena *a;
    const char *s;
    size_t n, pos;
    int line;
    jj_tok *toks;
    size_t n_toks, cap;
    ks_diag *d;
} lexer;

static int push(lexer *L, jj_tok t)
{
    if (L->n_toks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jj_tok *nt = realloc(L->toks, cap * sizeof *nt);
        if (!nt) {
            return KS_ERR_NOMEM;
        }
        L->toks = nt;
        L->cap = cap;
    }
    t.line = t.line ? t.line : L->line;
    L->toks[L->n_toks++] = t;
    return 0;
}

static int fail(lexer *L, const char *msg)
{
    ks_diag_set(L->d, KS_ERR_FORMAT, "chat template line %d: %s", L->line, msg);
    if (L->d) {
        L->d->line = L->line;
    }
    return KS_ERR_FORMAT;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_ident(char ch, bool digits)
{
    return ch == '_' || ((ch | 32) >= 'a' && (ch | 32) <= 'z') ||
           (digits && ch >= '0' && ch <= '9');
}

static void count_lines(lexer *L, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        L->line += L->s[i] == '\n';
    }
}

/* Finds the next tag opener at or after pos; returns its offset or n. */
static size_t next_tag(const lexer *L, size_t pos)
{
    for (size_t i = pos; i + 1 < L->n; i++) {
        if (L->s[i] == '{' && (L->s[i + 1] == '{' || L->s[i + 1] == '%' || L->s[i + 1] == '#')) {
            return i;
        }
    }
    return L->n;
}

static int emit_text(lexer *L, size_t start, size_t end, char kind, char mod, bool line_start)
{
    if (mod == '-') {
        while (end > start && is_ws(L->s[end - 1])) {
            end--;
        }
    } else if ((kind == '%' || kind == '#') && mod != '+') {
        size_t l = end;
        while (l > start && L->s[l - 1] != '\n') {
            l--;
        }
        bool at_line = l > start || line_start; /* a newline in this text, or a line start */
        bool blank = true;
        for (size_t i = l; i < end && blank; i++) {
            blank = L->s[i] == ' ' || L->s[i] == '\t';
        }
        if (at_line && blank) {
            end = l;
        }
    }
    if (end > start) {
        jj_tok t = {.kind = JJ_TOK_TEXT, .s = L->s + start, .n = end - start};
        return push(L, t);
    }
    return 0;
}

static int lex_string(lexer *L)
{
    char q = L->s[L->pos++];
    char *out = ks_arena_alloc(L->a, L->n - L->pos + 1);
    size_t k = 0;
    if (!out) {
        return KS_ERR_NOMEM;
    }
    while (L->pos < L->n && L->s[L->pos] != q) {
        L->line += L->s[L->pos] == '\n'; /* raw newlines only, not \n escapes */
        char ch = L->s[L->pos++];
        if (ch == '\\' && L->pos < L->n) {
            char e = L->s[L->pos++];
            switch (e) {
            case 'n':
                ch = '\n';
                break;
            case 't':
                ch = '\t';
                break;
            case 'r':
                ch = '\r';
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case '0':
                ch = '\0';
                break;
            default:
                ch = e;
                break; /* \\ \' \" and unknown escapes keep the character */
            }
        }
        out[k++] = ch;
    }
    if (L->pos >= L->n) {
        return fail(L, "unterminated string literal");
    }
    L->pos++;
    out[k] = 0;
    jj_tok t = {.kind = JJ_TOK_STRING, .s = out, .n = k};
    return push(L, t);
}

static int lex_number(lexer *L)
{
    size_t st = L->pos;
    bool is_float = false;
    while (L->pos < L->n && ((L->s[L->pos] >= '0' && L->s[L->pos] <= '9') || L->s[L->pos] == '_' ||
                             (L->s[L->pos] == '.' && !is_float && L->pos + 1 < L->n &&
                              L->s[L->pos + 1] >= '0' && L->s[L->pos + 1] <= '9'))) {
        is_float |= L->s[L->pos] == '.';
        L->pos++;
    }
    /* an exponent: e or E, an optional sign, digits */
    size_t e = L->pos;
    if (e < L->n && (L->s[e] | 32) == 'e') {
        e++;
        e += e < L->n && (L->s[e] == '+' || L->s[e] == '-');
        if (e < L->n && L->s[e] >= '0' && L->s[e] <= '9') {
            while (e < L->n && L->s[e] >= '0' && L->s[e] <= '9') {
                e++;
            }
            L->pos = e;
            is_float = true;
        }
    }
    char buf[64];
    size_t k = 0;
    for (size_t i = st; i < L->pos && k < sizeof buf - 1; i++) {
        if (L->s[i] != '_') {
            buf[k++] = L->s[i];
        }
    }
    buf[k] = 0;
    jj_tok t = {.kind = is_float ? JJ_TOK_FLOAT : JJ_TOK_INT};
    if (is_float) {
        t.f = strtod(buf, NULL);
    } else {
        t.i = strtoll(buf, NULL, 10);
    }
    return push(L, t);
}

static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};

/* Lexes the inside of a {{ }} or {% %} up to its closer; *strip_after is set by `-}}`/`-%}`. */
static int lex_tag(lexer *L, char kind, bool *strip_after)
{
    char close = kind == '{' ? '}' : '%';
    int depth = 0, rc = 0;
    while (!rc) {
        while (L->pos < L->n && is_ws(L->s[L->pos])) {
            L->line += L->s[L->pos++] == '\n';
        }
        if (L->pos >= L->n) {
            return fail(L, "unterminated tag");
        }
        const char *p = L->s + L->pos;
        size_t left = L->n - L->pos;
        if (depth == 0 && left >= 3 && p[0] == '-' && p[1] == close && p[2] == '}') {
            L->pos += 3;
            *strip_after = true;
            break;
        }
        if (depth == 0 && left >= 2 && p[0] == close && p[1] == '}') {
            L->pos += 2;
            *strip_after = false;
            break;
        }
        char ch = p[0];
        if (ch == '"' || ch == '\'') {
            rc = lex_string(L);
        } else if (ch >= '0' && ch <= '9') {
            rc = lex_number(L);
        } else if (is_ident(ch, false)) {
            size_t st = L->pos;
            while (L->pos < L->n && is_ident(L->s[L->pos], true)) {
                L->pos++;
            }
            jj_tok t = {.kind = JJ_TOK_NAME, .s = L->s + st, .n = L->pos - st};
            rc = push(L, t);
        } else {
            size_t n = 1;
            for (size_t i = 0; i < KS_ARRAY_LEN(ops2); i++) {
                if (left >= 2 && memcmp(p, ops2[i], 2) == 0) {
                    n = 2;
                }
            }
            if (n == 1 && !strchr("()[]{}.,:|~+-*/%=<>!", ch)) {
                return fail(L, "unexpected character in tag");
            }
            depth += (ch == '(' || ch == '[' || ch == '{') - (ch == ')' || ch == ']' || ch == '}');
            jj_tok t = {.kind = JJ_TOK_OP, .s = p, .n = n};
            L->pos += n;
            rc = push(L, t);
        }
    }
    return rc;
}

static void skip_after(lexer *L, bool strip, bool trim_newline)
{
    if (strip) {
        while (L->pos < L->n && is_ws(L->s[L->pos])) {
            L->line += L->s[L->pos++] == '\n';
        }
    } else if (trim_newline) {
        if (L->pos < L->n && L->s[L->pos] == '\n') {
            L->pos++;
            L->line++;
        } else if (L->pos + 1 < L->n && L->s[L->pos] == '\r' && L->s[L->pos + 1] == '\n') {
            L->pos += 2;
            L->line++;
        }
    }
}

static int lex_all(lexer *L)
{
    bool line_start = true; /* the text that follows begins a line */
    while (L->pos < L->n) {
        size_t at = next_tag(L, L->pos);
        char kind = at < L->n ? L->s[at + 1] : 0;
        char mod = at + 2 < L->n ? L->s[at + 2] : 0;
        int rc = emit_text(L, L->pos, at, kind, mod, line_start);
        count_lines(L, L->pos, at);
        if (rc || at >= L->n) {
            return rc;
        }
        L->pos = at + 2 + (mod == '-' || mod == '+');
        bool strip = false;
        if (kind == '#') {
            const char *end = NULL;
            for (size_t i = L->pos; i + 1 < L->n && !end; i++) {
                end = L->s[i] == '#' && L->s[i + 1] == '}' ? L->s + i : NULL;
            }
            if (!end) {
                return fail(L, "unterminated comment");
            }
            size_t e = (size_t)(end - L->s);
            strip = e > L->pos && L->s[e - 1] == '-';
            count_lines(L, L->pos, e);
            L->pos = e + 2;
        } else {
            jj_tok t = {.kind = kind == '{' ? JJ_TOK_VAR_OPEN : JJ_TOK_BLOCK_OPEN};
            rc = push(L, t);
            rc = rc ? rc : lex_tag(L, kind, &strip);
            jj_tok c = {.kind = kind == '{' ? JJ_TOK_VAR_CLOSE : JJ_TOK_BLOCK_CLOSE};
            rc = rc ? rc : push(L, c);
            if (rc) {
                return rc;
            }
        }
        size_t before = L->pos;
        skip_after(L, strip, kind != '{');
        line_start = L->pos > before ? L->s[L->pos - 1] == '\n' : false;
    }
    return 0;
}

int jj_lex(ks_arena *a, const char *src, size_t len, jj_tok **out, size_t *n_out, ks_diag *d)
{
    lexer L = {.a = a, .s = src, .n = len, .line = 1, .d = d};
    int rc = lex_all(&L);
    jj_tok eof = {.kind = JJ_TOK_EOF};
    rc = rc ? rc : push(&L, eof);
    if (rc) {
        free(L.toks);
        return rc;
    }
    *out = L.toks;
    *n_out = L.n_toks;
    return 0;
}

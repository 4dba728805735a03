/* grammar_parse.c - GBNF source -> compiled grammar (see grammar.h for the syntax).
 *
 * A recursive-descent parser builds each rule as a vector of elements. Groups become
 * synthetic rules; repetitions are rewritten into rules the matcher can expand without
 * counters:  x* -> R ::= x R | ()   x+ -> x x*   x? -> R ::= x | ()
 * x{m,n} -> m copies of x then R_k ::= x R_(k-1) | () for the k = n - m optional ones.
 * After parsing, every rule is flattened into one element array, then two checks make the
 * matcher's depth-first expansion terminate: every referenced rule exists, and no rule can
 * reach itself at its own start through nullable prefixes (left recursion).
 *
 * Errors name the line and column of the offending byte, counted from 1.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

#define GP_MAX_DEPTH 256

typedef struct gp_vec {
    gram_elem *v;
    uint32_t n, cap;
} gp_vec;

typedef struct gp_rule {
    char *name;
    gp_vec body;
    int defined;
    int synthetic; /* made for a group or repetition: never found by name */
    size_t ref_at; /* first reference, for "undefined rule" */
    size_t def_at; /* definition, for "left-recursive" */
} gp_rule;

typedef struct gp {
    const char *s;
    size_t n, i;
    gp_rule *rules;
    uint32_t n_rules, cap_rules;
    uint32_t *names; /* user rules by name: open addressing, rule index + 1, 0 = free */
    uint32_t names_cap, n_names;
    uint32_t (*ranges)[2];
    uint32_t n_ranges, cap_ranges;
    uint64_t total; /* elements across all rules */
    int depth;
    ks_diag *d;
} gp;

static int gp_err(gp *p, size_t at, int status, const char *fmt, ...) KS_PRINTF(4, 5);

static int gp_err(gp *p, size_t at, int status, const char *fmt, ...)
{
    int line = 1, col = 1;
    for (size_t k = 0; k < at && k < p->n; k++) {
        if (p->s[k] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)p->s[k] & 0xC0) != 0x80) {
            col++;
        }
    }
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    ks_diag_set(p->d, status, "line %d, column %d: %s", line, col, what);
    if (p->d) p->d->line = line;
    return status;
}

static int vec_push(gp *p, gp_vec *v, gram_elem e)
{
    if (++p->total > GRAM_MAX_ELEMS)
        return gp_err(p, p->i, KS_ERR_RANGE, "grammar too large (over %u elements)",
                      GRAM_MAX_ELEMS);
    if (v->n == v->cap) {
        uint32_t nc = v->cap ? v->cap * 2 : 8;
        gram_elem *nv = realloc(v->v, nc * sizeof(*nv));
        if (!nv) return KS_ERR_NOMEM;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = e;
    return 0;
}

static int vec_push_all(gp *p, gp_vec *v, const gram_elem *e, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        int rc = vec_push(p, v, e[k]);
        if (rc) return rc;
    }
    return 0;
}

static int add_range(gp *p, uint32_t lo, uint32_t hi)
{
    if (p->n_ranges == p->cap_ranges) {
        uint32_t nc = p->cap_ranges ? p->cap_ranges * 2 : 64;
        void *nr = realloc(p->ranges, nc * sizeof(*p->ranges));
        if (!nr) return KS_ERR_NOMEM;
        p->ranges = nr;
        p->cap_ranges = nc;
    }
    p->ranges[p->n_ranges][0] = lo;
    p->ranges[p->n_ranges][1] = hi;
    p->n_ranges++;
    return 0;
}

/* A new rule (undefined, not synthetic). Returns -1 when out of memory. */
static int64_t rule_new(gp *p, const char *name, size_t len, size_t at)
{
    if (p->n_rules == p->cap_rules) {
        uint32_t nc = p->cap_rules ? p->cap_rules * 2 : 16;
        gp_rule *nr = realloc(p->rules, nc * sizeof(*nr));
        if (!nr) return -1;
        p->rules = nr;
        p->cap_rules = nc;
    }
    gp_rule *r = &p->rules[p->n_rules];
    memset(r, 0, sizeof(*r));
    r->name = malloc(len + 1);
    if (!r->name) return -1;
    memcpy(r->name, name, len);
    r->name[len] = 0;
    r->ref_at = r->def_at = at;
    return p->n_rules++;
}

static uint32_t name_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 16777619u;
    return h;
}

/* The slot of `name` in p->names: its rule's, or the free one where it would go. */
static uint32_t *name_slot(gp *p, const char *name, size_t len)
{
    uint32_t mask = p->names_cap - 1;
    for (uint32_t h = name_hash(name, len) & mask;; h = (h + 1) & mask) {
        uint32_t *e = &p->names[h];
        if (!*e) return e;
        const char *rn = p->rules[*e - 1].name;
        if (strlen(rn) == len && !memcmp(rn, name, len)) return e;
    }
}

/* Doubles the name table (kept at most half full). Returns -1 when out of memory. */
static int names_grow(gp *p)
{
    uint32_t nc = p->names_cap ? p->names_cap * 2 : 64, *old = p->names, oc = p->names_cap;
    p->names = calloc(nc, sizeof(*p->names));
    if (!p->names) {
        p->names = old;
        return -1;
    }
    p->names_cap = nc;
    for (uint32_t i = 0; i < oc; i++)
        if (old[i]) {
            const char *rn = p->rules[old[i] - 1].name;
            *name_slot(p, rn, strlen(rn)) = old[i];
        }
    free(old);
    return 0;
}

/* The id of user rule `name` (created on first sight). Returns -1 when out of memory. A hash
 * table, not a scan of the rules: a grammar of n rules used to cost n^2 string compares
 * (a 1 MB grammar of 55 000 rules held the event loop for a minute). */
static int64_t rule_id(gp *p, const char *name, size_t len, size_t at)
{
    if (2 * (p->n_names + 1) > p->names_cap && names_grow(p)) return -1;
    uint32_t *e = name_slot(p, name, len);
    if (*e) return *e - 1;
    int64_t id = rule_new(p, name, len, at);
    if (id < 0) return -1;
    *e = (uint32_t)id + 1;
    p->n_names++;
    return id;
}

/* A new synthetic rule named after rule `base`, with the given body (taken over). */
static int64_t synth_rule(gp *p, uint32_t base, gp_vec *body)
{
    char name[160];
    snprintf(name, sizeof(name), "%.100s_%u", p->rules[base].name, p->n_rules);
    int64_t id = rule_new(p, name, strlen(name), p->i);
    if (id < 0) return -1;
    p->rules[id].defined = 1;
    p->rules[id].synthetic = 1;
    p->rules[id].body = *body;
    memset(body, 0, sizeof(*body));
    return id;
}

static int is_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int at_eof(const gp *p)
{
    return p->i >= p->n;
}

static int peek(const gp *p)
{
    return at_eof(p) ? -1 : (unsigned char)p->s[p->i];
}

/* Skips blanks and comments; newlines too when `nested`. */
static void skip_space(gp *p, int nested)
{
    while (!at_eof(p)) {
        int c = peek(p);
        if (c == ' ' || c == '\t' || (nested && (c == '\n' || c == '\r'))) {
            p->i++;
        } else if (c == '#') {
            while (!at_eof(p) && peek(p) != '\n')
                p->i++;
        } else {
            break;
        }
    }
}

static int hex_value(gp *p, int digits, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int c = peek(p);
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (h < 0) return gp_err(p, p->i, KS_ERR_FORMAT, "expected %d hex digits", digits);
        v = v * 16 + (uint32_t)h;
        p->i++;
    }
    *out = v;
    return 0;
}

/* One (possibly escaped) character of a literal or class into *cp. */
static int parse_char(gp *p, uint32_t *cp)
{
    size_t at = p->i;
    if (at_eof(p)) return gp_err(p, at, KS_ERR_FORMAT, "unexpected end of input");
    if (peek(p) == '\\') {
        p->i++;
        int c = peek(p);
        p->i++;
        switch (c) {
        case 'x':
            return hex_value(p, 2, cp);
        case 'u':
            return hex_value(p, 4, cp);
        case 'U':
            return hex_value(p, 8, cp);
        case 'n':
            *cp = '\n';
            return 0;
        case 'r':
            *cp = '\r';
            return 0;
        case 't':
            *cp = '\t';
            return 0;
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
            *cp = (uint32_t)c;
            return 0;
        default:
            return gp_err(p, at, KS_ERR_FORMAT, "unknown escape '\\%c'",
                          c > 32 && c < 127 ? c : '?');
        }
    }
    gram_utf8 u = {0};
    while (!at_eof(p)) {
        int r = gram_utf8_step(&u, (uint8_t)p->s[p->i++], cp);
        if (r == 1) return 0;
        if (r < 0) break;
    }
    return gp_err(p, at, KS_ERR_FORMAT, "invalid UTF-8");
}

static int parse_literal(gp *p, gp_vec *out)
{
    size_t at = p->i++;
    while (peek(p) != '"') {
        if (at_eof(p)) return gp_err(p, at, KS_ERR_FORMAT, "unterminated string literal");
        uint32_t cp;
        int rc = parse_char(p, &cp);
        if (!rc) rc = add_range(p, cp, cp);
        if (!rc) rc = vec_push(p, out, (gram_elem){GE_CHARS, 0, p->n_ranges - 1, 1});
        if (rc) return rc;
    }
    p->i++;
    return 0;
}

static int parse_class(gp *p, gp_vec *out)
{
    size_t at = p->i++;
    gram_elem e = {GE_CHARS, 0, p->n_ranges, 0};
    if (peek(p) == '^') {
        e.negate = 1;
        p->i++;
    }
    while (peek(p) != ']') {
        if (at_eof(p)) return gp_err(p, at, KS_ERR_FORMAT, "unterminated character class");
        size_t at_lo = p->i;
        uint32_t lo, hi;
        int rc = parse_char(p, &lo);
        if (rc) return rc;
        hi = lo;
        if (peek(p) == '-' && p->i + 1 < p->n && p->s[p->i + 1] != ']') {
            p->i++;
            if ((rc = parse_char(p, &hi))) return rc;
            if (hi < lo) return gp_err(p, at_lo, KS_ERR_FORMAT, "character range is reversed");
        }
        if ((rc = add_range(p, lo, hi))) return rc;
        e.b++;
    }
    p->i++;
    return vec_push(p, out, e);
}

static int parse_alternatives(gp *p, uint32_t rule, gp_vec *out, int nested);

/* Turns the elements out[from..] into one element (a synthetic rule when several). */
static int item_single(gp *p, uint32_t rule, gp_vec *out, uint32_t from, gram_elem *one)
{
    if (out->n - from == 1) {
        *one = out->v[from];
        out->n = from;
        return 0;
    }
    gp_vec body = {0};
    int rc = vec_push_all(p, &body, out->v + from, out->n - from);
    if (!rc) rc = vec_push(p, &body, (gram_elem){GE_END, 0, 0, 0});
    int64_t id = rc ? -1 : synth_rule(p, rule, &body);
    free(body.v);
    if (id < 0) return rc ? rc : KS_ERR_NOMEM;
    out->n = from;
    *one = (gram_elem){GE_REF, 0, (uint32_t)id, 0};
    return 0;
}

/* R ::= x R | ()   (optional = 0)   or   R ::= x next | ()   with next = R_(k-1) */
static int64_t rep_rule(gp *p, uint32_t rule, gram_elem x, int star, int64_t next)
{
    gp_vec body = {0};
    int rc = vec_push(p, &body, x);
    int64_t self = p->n_rules; /* the id synth_rule will give */
    if (!rc && star) rc = vec_push(p, &body, (gram_elem){GE_REF, 0, (uint32_t)self, 0});
    if (!rc && !star && next >= 0)
        rc = vec_push(p, &body, (gram_elem){GE_REF, 0, (uint32_t)next, 0});
    if (!rc) rc = vec_push(p, &body, (gram_elem){GE_ALT, 0, 0, 0});
    if (!rc) rc = vec_push(p, &body, (gram_elem){GE_END, 0, 0, 0});
    int64_t id = rc ? -1 : synth_rule(p, rule, &body);
    free(body.v);
    return id;
}

static int parse_count(gp *p, long *out)
{
    size_t at = p->i;
    long v = 0;
    if (peek(p) < '0' || peek(p) > '9') return gp_err(p, at, KS_ERR_FORMAT, "expected a number");
    while (peek(p) >= '0' && peek(p) <= '9') {
        v = v * 10 + (peek(p) - '0');
        p->i++;
        if (v > GRAM_MAX_REPEAT)
            return gp_err(p, at, KS_ERR_RANGE, "repetition count above %d", GRAM_MAX_REPEAT);
    }
    *out = v;
    return 0;
}

/* Parses {m}, {m,}, {m,n}, {,n} after the '{'. max = -1: unbounded. */
static int parse_braces(gp *p, long *min, long *max)
{
    size_t at = p->i - 1;
    int rc = 0;
    skip_space(p, 1);
    *min = 0;
    if (peek(p) != ',' && (rc = parse_count(p, min))) return rc;
    skip_space(p, 1);
    *max = *min;
    if (peek(p) == ',') {
        p->i++;
        skip_space(p, 1);
        *max = -1;
        if (peek(p) != '}' && (rc = parse_count(p, max))) return rc;
        skip_space(p, 1);
    }
    if (peek(p) != '}') return gp_err(p, p->i, KS_ERR_FORMAT, "expected '}'");
    p->i++;
    if (*max >= 0 && *max < *min)
        return gp_err(p, at, KS_ERR_FORMAT, "repetition {%ld,%ld} has max below min", *min, *max);
    return 0;
}

/* Applies a repetition to the item out[from..]. */
static int apply_repeat(gp *p, uint32_t rule, gp_vec *out, uint32_t from, long min, long max)
{
    gram_elem x;
    int rc = item_single(p, rule, out, from, &x);
    for (long k = 0; !rc && k < min; k++)
        rc = vec_push(p, out, x);
    if (rc) return rc;
    int64_t tail = -1;
    if (max < 0) {
        tail = rep_rule(p, rule, x, 1, -1);
    } else {
        for (long k = 0; k < max - min; k++) {
            tail = rep_rule(p, rule, x, 0, tail);
            if (tail < 0) break;
        }
        if (max == min) return 0;
    }
    if (tail < 0) return p->total > GRAM_MAX_ELEMS ? KS_ERR_RANGE : KS_ERR_NOMEM;
    return vec_push(p, out, (gram_elem){GE_REF, 0, (uint32_t)tail, 0});
}

static int parse_primary(gp *p, uint32_t rule, gp_vec *out, int nested)
{
    int c = peek(p);
    if (c == '"') return parse_literal(p, out);
    if (c == '[') return parse_class(p, out);
    if (c == '.') {
        p->i++;
        return vec_push(p, out, (gram_elem){GE_CHARS, 1, p->n_ranges, 0});
    }
    if (c == '(') {
        size_t at = p->i++;
        if (++p->depth > GP_MAX_DEPTH)
            return gp_err(p, at, KS_ERR_RANGE, "groups nested deeper than %d", GP_MAX_DEPTH);
        skip_space(p, 1);
        gp_vec body = {0};
        int rc = parse_alternatives(p, rule, &body, 1);
        if (!rc && peek(p) != ')') rc = gp_err(p, p->i, KS_ERR_FORMAT, "expected ')'");
        p->i++;
        p->depth--;
        int64_t id = rc ? -1 : synth_rule(p, rule, &body);
        free(body.v);
        if (id < 0) return rc ? rc : KS_ERR_NOMEM;
        return vec_push(p, out, (gram_elem){GE_REF, 0, (uint32_t)id, 0});
    }
    if (is_word(c)) {
        size_t at = p->i;
        while (is_word(peek(p)))
            p->i++;
        int64_t id = rule_id(p, p->s + at, p->i - at, at);
        if (id < 0) return KS_ERR_NOMEM;
        return vec_push(p, out, (gram_elem){GE_REF, 0, (uint32_t)id, 0});
    }
    (void)nested;
    if (c < 0) return gp_err(p, p->i, KS_ERR_FORMAT, "unexpected end of input");
    return gp_err(p, p->i, KS_ERR_FORMAT, "unexpected '%c'", c > 32 && c < 127 ? c : '?');
}

static int parse_sequence(gp *p, uint32_t rule, gp_vec *out, int nested)
{
    for (;;) {
        skip_space(p, nested);
        int c = peek(p);
        if (c < 0 || c == '|' || c == ')' || c == '\n' || c == '\r') return 0;
        uint32_t from = out->n;
        int rc = parse_primary(p, rule, out, nested);
        if (rc) return rc;
        skip_space(p, nested);
        for (c = peek(p); c == '*' || c == '+' || c == '?' || c == '{'; c = peek(p)) {
            size_t at = p->i++;
            if (out->n == from) return gp_err(p, at, KS_ERR_FORMAT, "repetition of nothing");
            long min = c == '+' ? 1 : 0, max = c == '?' ? 1 : -1;
            if (c == '{' && (rc = parse_braces(p, &min, &max))) return rc;
            if ((rc = apply_repeat(p, rule, out, from, min, max))) return rc;
            skip_space(p, nested);
        }
    }
}

static int parse_alternatives(gp *p, uint32_t rule, gp_vec *out, int nested)
{
    for (;;) {
        int rc = parse_sequence(p, rule, out, nested);
        if (rc) return rc;
        if (peek(p) != '|') break;
        p->i++;
        skip_space(p, 1);
        if ((rc = vec_push(p, out, (gram_elem){GE_ALT, 0, 0, 0}))) return rc;
    }
    return vec_push(p, out, (gram_elem){GE_END, 0, 0, 0});
}

static int parse_rule(gp *p)
{
    size_t at = p->i;
    while (is_word(peek(p)))
        p->i++;
    if (p->i == at) return gp_err(p, at, KS_ERR_FORMAT, "expected a rule name");
    int64_t id = rule_id(p, p->s + at, p->i - at, at);
    if (id < 0) return KS_ERR_NOMEM;
    if (p->rules[id].defined)
        return gp_err(p, at, KS_ERR_FORMAT, "rule '%s' is defined twice", p->rules[id].name);
    p->rules[id].defined = 1;
    p->rules[id].def_at = at;
    skip_space(p, 0);
    if (p->i + 3 > p->n || memcmp(p->s + p->i, "::=", 3))
        return gp_err(p, p->i, KS_ERR_FORMAT, "expected '::='");
    p->i += 3;
    skip_space(p, 1);
    gp_vec body = {0};
    int rc = parse_alternatives(p, (uint32_t)id, &body, 0);
    p->rules[id].body = body;
    if (rc) return rc;
    if (peek(p) == ')') return gp_err(p, p->i, KS_ERR_FORMAT, "unmatched ')'");
    return 0;
}

static int parse_all(gp *p)
{
    for (;;) {
        skip_space(p, 1);
        if (at_eof(p)) break;
        int rc = parse_rule(p);
        if (rc) return rc;
    }
    for (uint32_t r = 0; r < p->n_rules; r++)
        if (!p->rules[r].defined)
            return gp_err(p, p->rules[r].ref_at, KS_ERR_FORMAT, "undefined rule '%s'",
                          p->rules[r].name);
    for (uint32_t r = 0; r < p->n_rules; r++)
        if (!p->rules[r].synthetic && !strcmp(p->rules[r].name, "root")) return 0;
    return gp_err(p, p->n, KS_ERR_FORMAT, "the grammar has no 'root' rule");
}

/* Copies the parsed rules into g's flat arrays. */
static int gram_flatten(gp *p, gram *g)
{
    uint32_t n_alts = 0;
    g->n_rules = p->n_rules;
    g->n_elems = (uint32_t)p->total;
    g->elems = malloc((g->n_elems + 1) * sizeof(gram_elem));
    g->rule_start = malloc(p->n_rules * sizeof(uint32_t));
    g->alt_off = malloc((p->n_rules + 1) * sizeof(uint32_t));
    g->alts = malloc((g->n_elems + 1) * sizeof(uint32_t));
    if (!g->elems || !g->rule_start || !g->alt_off || !g->alts) return KS_ERR_NOMEM;
    uint32_t at = 0;
    for (uint32_t r = 0; r < p->n_rules; r++) {
        const gp_vec *b = &p->rules[r].body;
        g->rule_start[r] = at;
        g->alt_off[r] = n_alts;
        g->alts[n_alts++] = at;
        for (uint32_t k = 0; k < b->n; k++) {
            g->elems[at + k] = b->v[k];
            if (b->v[k].type == GE_ALT) g->alts[n_alts++] = at + k + 1;
        }
        at += b->n;
        if (!p->rules[r].synthetic && !strcmp(p->rules[r].name, "root")) g->root = r;
    }
    g->alt_off[p->n_rules] = n_alts;
    g->n_elems = at;
    g->ranges = p->ranges;
    g->n_ranges = p->n_ranges;
    p->ranges = NULL;
    return 0;
}

/* nullable[r]: rule r can match the empty string (fixpoint over all rules). */
static void find_nullable(const gram *g, uint8_t *nullable)
{
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t r = 0; r < g->n_rules; r++) {
            for (uint32_t a = g->alt_off[r]; !nullable[r] && a < g->alt_off[r + 1]; a++) {
                uint32_t e = g->alts[a];
                while (!gram_elem_ends(g, e) && g->elems[e].type == GE_REF &&
                       nullable[g->elems[e].a])
                    e++;
                if (gram_elem_ends(g, e)) nullable[r] = changed = 1;
            }
        }
    }
}

/* Next rule r can expand at its own start after edge index *k, or -1. */
static int64_t first_ref(const gram *g, const uint8_t *nullable, uint32_t r, uint32_t *k)
{
    /* *k encodes (alternative, element) as the element position to look at next. */
    for (uint32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++) {
        for (uint32_t e = g->alts[a]; !gram_elem_ends(g, e); e++) {
            if (g->elems[e].type != GE_REF) break;
            if (e >= *k) {
                *k = e + 1;
                return g->elems[e].a;
            }
            if (!nullable[g->elems[e].a]) break;
        }
    }
    return -1;
}

/* Depth-first search over "expands at its start" edges; a back edge is left recursion. */
static int check_left_recursion(const gram *g, gp *p)
{
    uint8_t *nullable = calloc(g->n_rules, 1), *color = calloc(g->n_rules, 1);
    uint32_t *st = malloc(g->n_rules * sizeof(uint32_t)), *k = malloc(g->n_rules * 4);
    int rc = nullable && color && st && k ? 0 : KS_ERR_NOMEM;
    if (!rc) find_nullable(g, nullable);
    for (uint32_t r0 = 0; !rc && r0 < g->n_rules; r0++) {
        if (color[r0]) continue;
        uint32_t top = 0;
        st[top] = r0;
        k[top++] = 0;
        color[r0] = 1;
        while (top && !rc) {
            uint32_t r = st[top - 1];
            int64_t s = first_ref(g, nullable, r, &k[top - 1]);
            if (s < 0) {
                color[r] = 2;
                top--;
            } else if (color[s] == 1) {
                rc = gp_err(p, p->rules[s].def_at, KS_ERR_FORMAT,
                            "rule '%s' is left-recursive (it can expand to itself before "
                            "matching any character)",
                            p->rules[s].name);
            } else if (!color[s]) {
                color[s] = 1;
                st[top] = (uint32_t)s;
                k[top++] = 0;
            }
        }
    }
    free(nullable);
    free(color);
    free(st);
    free(k);
    return rc;
}

int gram_compile(const char *src, size_t n, gram **out, ks_diag *d)
{
    *out = NULL;
    ks_diag_clear(d);
    gp p = {.s = src, .n = n, .d = d};
    gram *g = calloc(1, sizeof(*g));
    int rc = g ? parse_all(&p) : KS_ERR_NOMEM;
    if (!rc) rc = gram_flatten(&p, g);
    if (!rc) rc = check_left_recursion(g, &p);
    for (uint32_t r = 0; r < p.n_rules; r++) {
        free(p.rules[r].name);
        free(p.rules[r].body.v);
    }
    free(p.rules);
    free(p.names);
    free(p.ranges);
    if (rc == KS_ERR_NOMEM) ks_diag_set(d, rc, "out of memory compiling the grammar");
    if (rc) {
        gram_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

void gram_destroy(gram *g)
{
    if (!g) return;
    free(g->elems);
    free(g->ranges);
    free(g->rule_start);
    free(g->alt_off);
    free(g->alts);
    free(g);
}

int32_t gram_n_rules(const gram *g)
{
    return (int32_t)g->n_rules;
}

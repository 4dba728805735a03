/* jinja_parse.c - recursive-descent parser from Jinja tokens to a syntax tree, with Jinja2's
 * operator precedence (lowest first):
 *   x if c else y  <  or  <  and  <  not  <  comparisons, in, not in  <  + -  <  ~  <
 *   * / // %  <  **  <  unary - +  <  filters `|f` and tests `is t`  <  . [] () and literals.
 * Statements: if/elif/else, for (targets, `if` filter, else), set (expression, namespace
 * attribute, block), macro, call, filter blocks, break/continue; Hugging Face's
 * {% generation %} markers are accepted and render their body.
 * Errors name the line and what was expected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

typedef struct parser {
    ks_arena *a;
    const jj_tok *t;
    size_t n, i;
    ks_diag *d;
    int depth;
} parser;

#define MAX_DEPTH 200

static const jj_tok *cur(parser *P)
{
    return &P->t[P->i < P->n ? P->i : P->n - 1];
}

static int fail(parser *P, const char *what)
{
    const jj_tok *t = cur(P);
    char got[40];
    if (t->kind == JJ_TOK_NAME || t->kind == JJ_TOK_OP) {
        snprintf(got, sizeof got, "'%.*s'", (int)KS_MIN(t->n, 24), t->s);
    } else {
        static const char *const k[] = {"text",  "'{{'",     "'}}'",           "'{%'",
                                        "'%}'",  "name",     "string",         "integer",
                                        "float", "operator", "end of template"};
        snprintf(got, sizeof got, "%s", k[t->kind]);
    }
    ks_diag_set(P->d, KS_ERR_FORMAT, "chat template line %d: expected %s, got %s", t->line, what,
                got);
    if (P->d) {
        P->d->line = t->line;
    }
    return KS_ERR_FORMAT;
}

static bool is_op(parser *P, const char *op)
{
    const jj_tok *t = cur(P);
    return t->kind == JJ_TOK_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

static bool is_name(parser *P, const char *name)
{
    const jj_tok *t = cur(P);
    return t->kind == JJ_TOK_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static bool accept_op(parser *P, const char *op)
{
    if (is_op(P, op)) {
        P->i++;
        return true;
    }
    return false;
}

static bool accept_name(parser *P, const char *name)
{
    if (is_name(P, name)) {
        P->i++;
        return true;
    }
    return false;
}

static jinja_node *node(parser *P, jj_node_kind k)
{
    jinja_node *n = ks_arena_alloc(P->a, sizeof *n);
    if (n) {
        memset(n, 0, sizeof *n);
        n->kind = k;
        n->line = cur(P)->line;
    }
    return n;
}

static const char *dup(parser *P, const char *s, size_t n)
{
    return ks_arena_strdup(P->a, s, n);
}

/* A growable array of node pointers, copied into the arena when done. */
typedef struct nvec {
    jinja_node **v;
    size_t n, cap;
} nvec;

static int nvec_push(nvec *v, jinja_node *x)
{
    if (!x) {
        return KS_ERR_NOMEM;
    }
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        jinja_node **nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) {
            return KS_ERR_NOMEM;
        }
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

static jinja_node **nvec_finish(parser *P, nvec *v, size_t *n)
{
    jinja_node **out = NULL;
    *n = v->n;
    if (v->n) {
        out = ks_arena_alloc(P->a, v->n * sizeof *out);
        if (out) {
            memcpy(out, v->v, v->n * sizeof *out);
        }
    }
    free(v->v);
    v->v = NULL;
    return out;
}

static int parse_expr(parser *P, jinja_node **out);
static int parse_or(parser *P, jinja_node **out);
static int parse_unary(parser *P, jinja_node **out, bool with_filter);

/* (a, b, k=v) after the '(' has been seen; fills items and kw of n. */
static int parse_args(parser *P, jinja_node *n)
{
    nvec pos = {0}, kwv = {0};
    const char *kw[32];
    size_t nkw = 0;
    int rc = 0;
    while (!rc && !is_op(P, ")")) {
        jinja_node *e = NULL;
        if (cur(P)->kind == JJ_TOK_NAME && P->t[P->i + 1].kind == JJ_TOK_OP &&
            P->t[P->i + 1].n == 1 && P->t[P->i + 1].s[0] == '=') {
            if (nkw == KS_ARRAY_LEN(kw)) {
                rc = fail(P, "at most 32 keyword arguments");
                break;
            }
            kw[nkw++] = dup(P, cur(P)->s, cur(P)->n);
            P->i += 2;
            rc = parse_expr(P, &e);
            rc = rc ? rc : nvec_push(&kwv, e);
        } else {
            rc = parse_expr(P, &e);
            rc = rc ? rc : nvec_push(&pos, e);
        }
        if (!rc && !accept_op(P, ",") && !is_op(P, ")")) {
            rc = fail(P, "',' or ')'");
        }
    }
    if (!rc && !accept_op(P, ")")) {
        rc = fail(P, "')'");
    }
    n->items = nvec_finish(P, &pos, &n->n_items);
    size_t nk = 0;
    n->kwv = nvec_finish(P, &kwv, &nk);
    n->n_kw = nk;
    if (nk) {
        n->kw = ks_arena_alloc(P->a, nk * sizeof *n->kw);
        if (!n->kw) {
            return KS_ERR_NOMEM;
        }
        memcpy(n->kw, kw, nk * sizeof *kw);
    }
    return rc;
}

/* [items] or (items) or {k: v} after the opener. */
static int parse_seq(parser *P, jinja_node *n, const char *close, bool dict)
{
    nvec v = {0};
    int rc = 0;
    while (!rc && !is_op(P, close)) {
        jinja_node *e = NULL;
        rc = parse_expr(P, &e);
        rc = rc ? rc : nvec_push(&v, e);
        if (!rc && dict) {
            rc = accept_op(P, ":") ? parse_expr(P, &e) : fail(P, "':' in dict literal");
            rc = rc ? rc : nvec_push(&v, e);
        }
        if (!rc && !accept_op(P, ",") && !is_op(P, close)) {
            rc = fail(P, close);
        }
    }
    if (!rc) {
        P->i++;
    }
    n->items = nvec_finish(P, &v, &n->n_items);
    return rc;
}

static int parse_primary(parser *P, jinja_node **out)
{
    const jj_tok *t = cur(P);
    jinja_node *n = NULL;
    if (t->kind == JJ_TOK_NAME) {
        static const char *const kws[] = {"true", "false", "none", "True", "False", "None"};
        for (size_t k = 0; k < KS_ARRAY_LEN(kws); k++) {
            if (is_name(P, kws[k])) {
                n = node(P, JJ_N_LIT);
                if (n) {
                    n->val = k % 3 == 2 ? jinja_none() : jinja_bool(k % 3 == 0);
                }
            }
        }
        if (!n && (n = node(P, JJ_N_NAME))) {
            n->name = dup(P, t->s, t->n);
            n->name_len = t->n;
        }
        P->i++;
    } else if (t->kind == JJ_TOK_STRING) {
        size_t total = 0;
        for (size_t k = P->i; P->t[k].kind == JJ_TOK_STRING; k++) {
            total += P->t[k].n;
        }
        char *s = ks_arena_alloc(P->a, total + 1);
        size_t o = 0;
        for (; s && cur(P)->kind == JJ_TOK_STRING; P->i++) { /* adjacent literals concatenate */
            memcpy(s + o, cur(P)->s, cur(P)->n);
            o += cur(P)->n;
        }
        if (s && (n = node(P, JJ_N_LIT))) {
            s[o] = 0;
            n->val = jj_str_take(s, o);
        }
    } else if (t->kind == JJ_TOK_INT || t->kind == JJ_TOK_FLOAT) {
        if ((n = node(P, JJ_N_LIT))) {
            n->val = t->kind == JJ_TOK_INT ? jinja_int(t->i) : jinja_float(t->f);
        }
        P->i++;
    } else if (accept_op(P, "(")) {
        jinja_node *e = NULL;
        if (accept_op(P, ")")) {
            *out = node(P, JJ_N_TUPLE);
            return *out ? 0 : KS_ERR_NOMEM;
        }
        int rc = parse_expr(P, &e);
        if (rc) {
            return rc;
        }
        if (accept_op(P, ")")) {
            *out = e;
            return 0;
        }
        if (!accept_op(P, ",")) {
            return fail(P, "')'");
        }
        n = node(P, JJ_N_TUPLE);
        rc = n ? parse_seq(P, n, ")", false) : KS_ERR_NOMEM;
        if (!rc) {
            jinja_node **items = ks_arena_alloc(P->a, (n->n_items + 1) * sizeof *items);
            if (!items) {
                return KS_ERR_NOMEM;
            }
            items[0] = e;
            if (n->n_items) {
                memcpy(items + 1, n->items, n->n_items * sizeof *items);
            }
            n->items = items;
            n->n_items++;
        }
        *out = n;
        return rc;
    } else if (accept_op(P, "[")) {
        n = node(P, JJ_N_LIST);
        *out = n;
        return n ? parse_seq(P, n, "]", false) : KS_ERR_NOMEM;
    } else if (accept_op(P, "{")) {
        n = node(P, JJ_N_DICT);
        *out = n;
        return n ? parse_seq(P, n, "}", true) : KS_ERR_NOMEM;
    } else {
        return fail(P, "an expression");
    }
    *out = n;
    return n ? 0 : KS_ERR_NOMEM;
}

static int parse_subscript(parser *P, jinja_node *obj, jinja_node **out)
{
    jinja_node *parts[3] = {0};
    int k = 0, rc = 0;
    bool slice = false;
    while (!rc && k < 3) {
        if (!is_op(P, ":") && !is_op(P, "]")) {
            rc = parse_expr(P, &parts[k]);
        }
        if (rc || !accept_op(P, ":")) {
            break;
        }
        slice = true;
        k++;
    }
    if (!rc && !accept_op(P, "]")) {
        rc = fail(P, "']'");
    }
    jinja_node *n = node(P, slice ? JJ_N_SLICE : JJ_N_INDEX);
    if (!n) {
        return KS_ERR_NOMEM;
    }
    if (!slice && !parts[0]) {
        return fail(P, "an index");
    }
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    *out = n;
    return rc;
}

static int parse_postfix(parser *P, jinja_node **io)
{
    int rc = 0;
    while (!rc) {
        jinja_node *n = NULL;
        if (accept_op(P, ".")) {
            const jj_tok *t = cur(P);
            if (t->kind != JJ_TOK_NAME && t->kind != JJ_TOK_INT) {
                return fail(P, "an attribute name");
            }
            if (!(n = node(P, t->kind == JJ_TOK_NAME ? JJ_N_ATTR : JJ_N_INDEX))) {
                return KS_ERR_NOMEM;
            }
            if (t->kind == JJ_TOK_NAME) {
                n->name = dup(P, t->s, t->n);
                n->name_len = t->n;
            } else if ((n->b = node(P, JJ_N_LIT))) {
                n->b->val = jinja_int(t->i);
            }
            n->a = *io;
            P->i++;
        } else if (accept_op(P, "[")) {
            rc = parse_subscript(P, *io, &n);
        } else if (accept_op(P, "(")) {
            if ((n = node(P, JJ_N_CALL))) {
                n->a = *io;
                rc = parse_args(P, n);
            }
        } else {
            break;
        }
        if (!n) {
            return rc ? rc : KS_ERR_NOMEM;
        }
        *io = n;
    }
    return rc;
}

static bool starts_test_arg(parser *P)
{
    const jj_tok *t = cur(P);
    if (t->kind == JJ_TOK_STRING || t->kind == JJ_TOK_INT || t->kind == JJ_TOK_FLOAT ||
        is_op(P, "[") || is_op(P, "{")) {
        return true;
    }
    return t->kind == JJ_TOK_NAME && !is_name(P, "else") && !is_name(P, "or") &&
           !is_name(P, "and") && !is_name(P, "is") && !is_name(P, "in") && !is_name(P, "not") &&
           !is_name(P, "if");
}

static int parse_filter_expr(parser *P, jinja_node **io)
{
    int rc = 0;
    while (!rc) {
        bool filter = is_op(P, "|"), test = is_name(P, "is");
        if (!filter && !test) {
            break;
        }
        P->i++;
        jinja_node *n = node(P, filter ? JJ_N_FILTER : JJ_N_TEST);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = test && accept_name(P, "not");
        if (cur(P)->kind != JJ_TOK_NAME) {
            return fail(P, filter ? "a filter name" : "a test name");
        }
        n->name = dup(P, cur(P)->s, cur(P)->n);
        n->name_len = cur(P)->n;
        n->a = *io;
        P->i++;
        if (accept_op(P, "(")) {
            rc = parse_args(P, n);
        } else if (test && starts_test_arg(P)) {
            jinja_node *arg = NULL;
            rc = parse_primary(P, &arg);
            rc = rc ? rc : parse_postfix(P, &arg);
            n->items = ks_arena_alloc(P->a, sizeof *n->items);
            if (!rc && n->items) {
                n->items[0] = arg;
                n->n_items = 1;
            }
        }
        *io = n;
    }
    return rc;
}

static int parse_unary(parser *P, jinja_node **out, bool with_filter)
{
    int rc;
    if (is_op(P, "-") || is_op(P, "+")) {
        jinja_node *n = node(P, JJ_N_UNARY);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = is_op(P, "-") ? JJ_OP_NEG : JJ_OP_POS;
        P->i++;
        if (++P->depth > MAX_DEPTH) {
            return fail(P, "less deeply nested expression");
        }
        rc = parse_unary(P, &n->a, false);
        P->depth--;
        *out = n;
    } else {
        rc = parse_primary(P, out);
    }
    rc = rc ? rc : parse_postfix(P, out);
    return rc || !with_filter ? rc : parse_filter_expr(P, out);
}

static int binary(parser *P, jinja_node **io, int op, int (*next)(parser *, jinja_node **))
{
    jinja_node *n = node(P, JJ_N_BIN);
    if (!n) {
        return KS_ERR_NOMEM;
    }
    n->op = op;
    n->a = *io;
    *io = n;
    return next(P, &n->b);
}

static int parse_unary_f(parser *P, jinja_node **out)
{
    return parse_unary(P, out, true);
}

static int parse_pow(parser *P, jinja_node **out)
{
    int rc = parse_unary_f(P, out);
    while (!rc && accept_op(P, "**")) {
        rc = binary(P, out, JJ_OP_POW, parse_unary_f);
    }
    return rc;
}

static int parse_math2(parser *P, jinja_node **out)
{
    int rc = parse_pow(P, out);
    while (!rc) {
        int op = accept_op(P, "*")    ? JJ_OP_MUL
                 : accept_op(P, "//") ? JJ_OP_FLOORDIV
                 : accept_op(P, "/")  ? JJ_OP_DIV
                 : accept_op(P, "%")  ? JJ_OP_MOD
                                      : 0;
        if (!op) {
            break;
        }
        rc = binary(P, out, op, parse_pow);
    }
    return rc;
}

static int parse_concat(parser *P, jinja_node **out)
{
    int rc = parse_math2(P, out);
    while (!rc && accept_op(P, "~")) {
        rc = binary(P, out, JJ_OP_CONCAT, parse_math2);
    }
    return rc;
}

static int parse_math1(parser *P, jinja_node **out)
{
    int rc = parse_concat(P, out);
    while (!rc) {
        int op = accept_op(P, "+") ? JJ_OP_ADD : accept_op(P, "-") ? JJ_OP_SUB : 0;
        if (!op) {
            break;
        }
        rc = binary(P, out, op, parse_concat);
    }
    return rc;
}

static int parse_compare(parser *P, jinja_node **out)
{
    int rc = parse_math1(P, out);
    while (!rc) {
        int op = accept_op(P, "==")     ? JJ_OP_EQ
                 : accept_op(P, "!=")   ? JJ_OP_NE
                 : accept_op(P, "<=")   ? JJ_OP_LE
                 : accept_op(P, ">=")   ? JJ_OP_GE
                 : accept_op(P, "<")    ? JJ_OP_LT
                 : accept_op(P, ">")    ? JJ_OP_GT
                 : accept_name(P, "in") ? JJ_OP_IN
                                        : 0;
        if (!op && is_name(P, "not") && P->t[P->i + 1].kind == JJ_TOK_NAME &&
            P->t[P->i + 1].n == 2 && memcmp(P->t[P->i + 1].s, "in", 2) == 0) {
            P->i += 2;
            op = JJ_OP_NOTIN;
        }
        if (!op) {
            break;
        }
        rc = binary(P, out, op, parse_math1);
    }
    return rc;
}

static int parse_not(parser *P, jinja_node **out)
{
    if (accept_name(P, "not")) {
        jinja_node *n = node(P, JJ_N_UNARY);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = JJ_OP_NOT;
        *out = n;
        if (++P->depth > MAX_DEPTH) {
            return fail(P, "less deeply nested expression");
        }
        int rc = parse_not(P, &n->a);
        P->depth--;
        return rc;
    }
    return parse_compare(P, out);
}

static int parse_and(parser *P, jinja_node **out)
{
    int rc = parse_not(P, out);
    while (!rc && accept_name(P, "and")) {
        rc = binary(P, out, JJ_OP_AND, parse_not);
    }
    return rc;
}

static int parse_or(parser *P, jinja_node **out)
{
    int rc = parse_and(P, out);
    while (!rc && accept_name(P, "or")) {
        rc = binary(P, out, JJ_OP_OR, parse_and);
    }
    return rc;
}

static int parse_expr(parser *P, jinja_node **out)
{
    if (++P->depth > MAX_DEPTH) {
        return fail(P, "less deeply nested expression");
    }
    int rc = parse_or(P, out);
    if (!rc && accept_name(P, "if")) {
        jinja_node *n = node(P, JJ_N_COND);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->b = *out;
        rc = parse_or(P, &n->a);
        if (!rc && accept_name(P, "else")) {
            rc = parse_expr(P, &n->c);
        }
        *out = n;
    }
    P->depth--;
    return rc;
}

/* ---- statements ---- */

static int parse_body(parser *P, const char *const *ends, size_t n_ends, nvec *body,
                      const char **end_found);

static int expect_close(parser *P)
{
    if (cur(P)->kind != JJ_TOK_BLOCK_CLOSE) {
        return fail(P, "'%}'");
    }
    P->i++;
    return 0;
}

static int body_into(parser *P, const char *const *ends, size_t n_ends, jinja_node ***items,
                     size_t *n_items, const char **end_found)
{
    nvec v = {0};
    if (++P->depth > MAX_DEPTH) {
        return fail(P, "less deeply nested blocks");
    }
    int rc = parse_body(P, ends, n_ends, &v, end_found);
    P->depth--;
    *items = nvec_finish(P, &v, n_items);
    return rc;
}

static int parse_if(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"elif", "else", "endif"};
    const char *end = NULL;
    int rc = parse_expr(P, &n->a);
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 3, &n->items, &n->n_items, &end);
    if (rc) {
        return rc;
    }
    if (strcmp(end, "elif") == 0) {
        jinja_node *e = node(P, JJ_S_IF);
        n->items2 = ks_arena_alloc(P->a, sizeof *n->items2);
        if (!e || !n->items2) {
            return KS_ERR_NOMEM;
        }
        n->items2[0] = e;
        n->n_items2 = 1;
        return parse_if(P, e);
    }
    if (strcmp(end, "else") == 0) {
        rc = expect_close(P);
        rc = rc ? rc : body_into(P, ends + 2, 1, &n->items2, &n->n_items2, &end);
    }
    return rc ? rc : expect_close(P);
}

static int parse_targets(parser *P, jinja_node *n)
{
    const char *names[8];
    size_t k = 0;
    do {
        if (cur(P)->kind != JJ_TOK_NAME || k == KS_ARRAY_LEN(names)) {
            return fail(P, "a variable name");
        }
        names[k++] = dup(P, cur(P)->s, cur(P)->n);
        P->i++;
    } while (accept_op(P, ","));
    n->kw = ks_arena_alloc(P->a, k * sizeof *n->kw);
    if (!n->kw) {
        return KS_ERR_NOMEM;
    }
    memcpy(n->kw, names, k * sizeof *names);
    n->n_kw = k;
    return 0;
}

static int parse_for(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"else", "endfor"};
    const char *end = NULL;
    int rc = parse_targets(P, n);
    rc = rc ? rc : accept_name(P, "in") ? 0 : fail(P, "'in'");
    rc = rc ? rc : parse_or(P, &n->a);
    if (!rc && accept_name(P, "if")) {
        rc = parse_or(P, &n->b);
    }
    if (!rc && is_name(P, "recursive")) {
        rc = fail(P, "no 'recursive' (recursive loops are not supported)");
    }
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 2, &n->items, &n->n_items, &end);
    if (!rc && strcmp(end, "else") == 0) {
        rc = expect_close(P);
        rc = rc ? rc : body_into(P, ends + 1, 1, &n->items2, &n->n_items2, &end);
    }
    return rc ? rc : expect_close(P);
}

static int parse_set(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"endset"};
    const char *end = NULL;
    int rc = parse_targets(P, n);
    if (!rc && n->n_kw == 1 && accept_op(P, ".")) {
        if (cur(P)->kind != JJ_TOK_NAME) {
            return fail(P, "an attribute name");
        }
        n->name2 = dup(P, cur(P)->s, cur(P)->n);
        P->i++;
    }
    if (rc) {
        return rc;
    }
    if (accept_op(P, "=")) {
        rc = parse_expr(P, &n->a);
        if (!rc && is_op(P, ",")) { /* set a, b = x, y: the right side is a tuple */
            rc = fail(P, "'%}' (tuple assignment is not supported)");
        }
        return rc ? rc : expect_close(P);
    }
    if (n->n_kw != 1 || n->name2) {
        return fail(P, "'='");
    }
    n->kind = JJ_S_SETBLOCK;
    if (accept_op(P, "|")) {
        P->i--; /* {% set x | filter %}: keep the chain on a NULL source */
        rc = parse_filter_expr(P, &n->a);
    }
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items, &n->n_items, &end);
    return rc ? rc : expect_close(P);
}

static int parse_macro(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"endmacro"};
    const char *end = NULL;
    if (cur(P)->kind != JJ_TOK_NAME) {
        return fail(P, "a macro name");
    }
    n->name = dup(P, cur(P)->s, cur(P)->n);
    n->name_len = cur(P)->n;
    P->i++;
    int rc = accept_op(P, "(") ? parse_args(P, n) : fail(P, "'('");
    for (size_t i = 0; !rc && i < n->n_items; i++) { /* positional parameters are bare names */
        if (n->items[i]->kind != JJ_N_NAME) {
            return fail(P, "macro parameters to be names");
        }
    }
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items2, &n->n_items2, &end);
    return rc ? rc : expect_close(P);
}

static int parse_callblock(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"endcall"};
    const char *end = NULL;
    int rc = 0;
    jinja_node params = {0};
    if (accept_op(P, "(")) {
        rc = parse_args(P, &params);
    }
    n->kw = NULL;
    n->n_kw = 0;
    n->c = ks_arena_alloc(P->a, sizeof *n->c); /* holds the caller's parameters */
    if (!n->c) {
        return KS_ERR_NOMEM;
    }
    *n->c = params;
    rc = rc ? rc : parse_expr(P, &n->a);
    if (!rc && n->a->kind != JJ_N_CALL) {
        rc = fail(P, "a macro call");
    }
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items2, &n->n_items2, &end);
    return rc ? rc : expect_close(P);
}

static int parse_filterblock(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"endfilter"};
    const char *end = NULL;
    P->i--; /* reuse the filter-chain parser: it starts at a '|' or at the name */
    jinja_node *chain = NULL;
    int rc = 0;
    /* parse "name(args) | name2" as a chain applied to a NULL source */
    do {
        P->i++;
        jinja_node *f = node(P, JJ_N_FILTER);
        if (!f || cur(P)->kind != JJ_TOK_NAME) {
            return f ? fail(P, "a filter name") : KS_ERR_NOMEM;
        }
        f->name = dup(P, cur(P)->s, cur(P)->n);
        f->name_len = cur(P)->n;
        f->a = chain;
        P->i++;
        if (accept_op(P, "(")) {
            rc = parse_args(P, f);
        }
        chain = f;
    } while (!rc && is_op(P, "|"));
    n->a = chain;
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items, &n->n_items, &end);
    return rc ? rc : expect_close(P);
}

static int parse_statement(parser *P, jinja_node **out)
{
    const jj_tok *t = cur(P);
    if (t->kind != JJ_TOK_NAME) {
        return fail(P, "a statement name");
    }
    jinja_node *n = node(P, JJ_S_TEXT);
    if (!n) {
        return KS_ERR_NOMEM;
    }
    *out = n;
    P->i++;
    if (t->n == 2 && memcmp(t->s, "if", 2) == 0) {
        n->kind = JJ_S_IF;
        return parse_if(P, n);
    }
#define IS(w) (t->n == sizeof(w) - 1 && memcmp(t->s, w, t->n) == 0)
    if (IS("for")) {
        n->kind = JJ_S_FOR;
        return parse_for(P, n);
    }
    if (IS("set")) {
        n->kind = JJ_S_SET;
        return parse_set(P, n);
    }
    if (IS("macro")) {
        n->kind = JJ_S_MACRO;
        return parse_macro(P, n);
    }
    if (IS("call")) {
        n->kind = JJ_S_CALLBLOCK;
        return parse_callblock(P, n);
    }
    if (IS("filter")) {
        n->kind = JJ_S_FILTERBLOCK;
        return parse_filterblock(P, n);
    }
    if (IS("break") || IS("continue")) {
        n->kind = IS("break") ? JJ_S_BREAK : JJ_S_CONTINUE;
        return expect_close(P);
    }
    if (IS("generation")) { /* Hugging Face's assistant-mask marker: render the body */
        static const char *const ends[] = {"endgeneration"};
        const char *end = NULL;
        n->kind = JJ_S_IF;
        n->a = node(P, JJ_N_LIT);
        if (!n->a) {
            return KS_ERR_NOMEM;
        }
        n->a->val = jinja_bool(true);
        int rc = expect_close(P);
        rc = rc ? rc : body_into(P, ends, 1, &n->items, &n->n_items, &end);
        return rc ? rc : expect_close(P);
    }
#undef IS
    P->i--;
    return fail(P, "a known statement (if, for, set, macro, call, filter, break, continue)");
}

static int parse_body(parser *P, const char *const *ends, size_t n_ends, nvec *body,
                      const char **end_found)
{
    for (;;) {
        const jj_tok *t = cur(P);
        jinja_node *n = NULL;
        int rc = 0;
        if (t->kind == JJ_TOK_EOF) {
            if (n_ends) {
                char want[40];
                snprintf(want, sizeof want, "'{%% %s %%}'", ends[n_ends - 1]);
                return fail(P, want);
            }
            return 0;
        }
        if (t->kind == JJ_TOK_TEXT) {
            if ((n = node(P, JJ_S_TEXT))) {
                n->name = t->s;
                n->name_len = t->n;
            }
            P->i++;
        } else if (t->kind == JJ_TOK_VAR_OPEN) {
            P->i++;
            if ((n = node(P, JJ_S_OUT))) {
                rc = parse_expr(P, &n->a);
            }
            if (!rc && cur(P)->kind != JJ_TOK_VAR_CLOSE) {
                rc = fail(P, "'}}'");
            }
            P->i++;
        } else if (t->kind == JJ_TOK_BLOCK_OPEN) {
            const jj_tok *name = &P->t[P->i + 1];
            for (size_t k = 0; k < n_ends; k++) {
                if (name->kind == JJ_TOK_NAME && name->n == strlen(ends[k]) &&
                    memcmp(name->s, ends[k], name->n) == 0) {
                    P->i += 2;
                    *end_found = ends[k];
                    return 0;
                }
            }
            P->i++;
            rc = parse_statement(P, &n);
        } else {
            return fail(P, "text or a tag");
        }
        if (rc) {
            return rc;
        }
        rc = nvec_push(body, n);
        if (rc) {
            return rc;
        }
    }
}

int jj_parse(ks_arena *a, const jj_tok *toks, size_t n, jinja_node ***body, size_t *n_body,
             ks_diag *d)
{
    parser P = {.a = a, .t = toks, .n = n, .d = d};
    nvec v = {0};
    int rc = parse_body(&P, NULL, 0, &v, NULL);
    *body = nvec_finish(&P, &v, n_body);
    return rc;
}

int jinja_template_parse(const char *src, size_t len, jinja_template **out, ks_diag *d)
{
    jinja_template *t = calloc(1, sizeof *t);
    jj_tok *toks = NULL;
    size_t n = 0;
    if (!t) {
        return KS_ERR_NOMEM;
    }
    ks_arena_init(&t->arena, 64 * 1024);
    char *copy = ks_arena_strdup(&t->arena, src, len); /* TEXT tokens point into it */
    int rc = copy ? jj_lex(&t->arena, copy, len, &toks, &n, d) : KS_ERR_NOMEM;
    rc = rc ? rc : jj_parse(&t->arena, toks, n, &t->body, &t->n_body, d);
    free(toks);
    if (rc) {
        jinja_template_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

void jinja_template_destroy(jinja_template *t)
{
    if (t) {
        ks_arena_deinit(&t->arena);
        free(t);
    }
}

/* jinja_parse_expr.c - Jinja expressions, by recursive descent with Jinja2's operator
 * precedence (lowest first):
 *   x if c else y  <  or  <  and  <  not  <  comparisons, in, not in  <  + -  <  ~  <
 *   * / // %  <  **  <  unary - +  <  filters `|f` and tests `is t`  <  . [] () and literals.
 * Errors name the line and what was expected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_parse_expr.h"

const jj_tok *jj_p_cur(parser *P)
{
    return &P->t[P->i < P->n ? P->i : P->n - 1];
}

int jj_p_fail(parser *P, const char *what)
{
    const jj_tok *t = jj_p_cur(P);
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

bool jj_p_is_op(parser *P, const char *op)
{
    const jj_tok *t = jj_p_cur(P);
    return t->kind == JJ_TOK_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

bool jj_p_is_name(parser *P, const char *name)
{
    const jj_tok *t = jj_p_cur(P);
    return t->kind == JJ_TOK_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

bool jj_p_accept_op(parser *P, const char *op)
{
    if (jj_p_is_op(P, op)) {
        P->i++;
        return true;
    }
    return false;
}

bool jj_p_accept_name(parser *P, const char *name)
{
    if (jj_p_is_name(P, name)) {
        P->i++;
        return true;
    }
    return false;
}

jinja_node *jj_p_node(parser *P, jj_node_kind k)
{
    jinja_node *n = ks_arena_alloc(P->a, sizeof *n);
    if (n) {
        memset(n, 0, sizeof *n);
        n->kind = k;
        n->line = jj_p_cur(P)->line;
    }
    return n;
}

const char *jj_p_dup(parser *P, const char *s, size_t n)
{
    return ks_arena_strdup(P->a, s, n);
}

int jj_p_nvec_push(nvec *v, jinja_node *x)
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

jinja_node **jj_p_nvec_finish(parser *P, nvec *v, size_t *n)
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

static int parse_unary(parser *P, jinja_node **out, bool with_filter);

/* (a, b, k=v) after the '(' has been seen; fills items and kw of n. */
int jj_p_parse_args(parser *P, jinja_node *n)
{
    nvec pos = {0}, kwv = {0};
    const char *kw[32];
    size_t nkw = 0;
    int rc = 0;
    while (!rc && !jj_p_is_op(P, ")")) {
        jinja_node *e = NULL;
        if (jj_p_cur(P)->kind == JJ_TOK_NAME && P->t[P->i + 1].kind == JJ_TOK_OP &&
            P->t[P->i + 1].n == 1 && P->t[P->i + 1].s[0] == '=') {
            if (nkw == KS_ARRAY_LEN(kw)) {
                rc = jj_p_fail(P, "at most 32 keyword arguments");
                break;
            }
            kw[nkw++] = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
            P->i += 2;
            rc = jj_p_parse_expr(P, &e);
            rc = rc ? rc : jj_p_nvec_push(&kwv, e);
        } else {
            rc = jj_p_parse_expr(P, &e);
            rc = rc ? rc : jj_p_nvec_push(&pos, e);
        }
        if (!rc && !jj_p_accept_op(P, ",") && !jj_p_is_op(P, ")")) {
            rc = jj_p_fail(P, "',' or ')'");
        }
    }
    if (!rc && !jj_p_accept_op(P, ")")) {
        rc = jj_p_fail(P, "')'");
    }
    n->items = jj_p_nvec_finish(P, &pos, &n->n_items);
    size_t nk = 0;
    n->kwv = jj_p_nvec_finish(P, &kwv, &nk);
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
    while (!rc && !jj_p_is_op(P, close)) {
        jinja_node *e = NULL;
        rc = jj_p_parse_expr(P, &e);
        rc = rc ? rc : jj_p_nvec_push(&v, e);
        if (!rc && dict) {
            rc = jj_p_accept_op(P, ":") ? jj_p_parse_expr(P, &e)
                                        : jj_p_fail(P, "':' in dict literal");
            rc = rc ? rc : jj_p_nvec_push(&v, e);
        }
        if (!rc && !jj_p_accept_op(P, ",") && !jj_p_is_op(P, close)) {
            rc = jj_p_fail(P, close);
        }
    }
    if (!rc) {
        P->i++;
    }
    n->items = jj_p_nvec_finish(P, &v, &n->n_items);
    return rc;
}

/* A name, or the literals true/false/none (either case). */
static jinja_node *parse_name(parser *P, const jj_tok *t)
{
    static const char *const kws[] = {"true", "false", "none", "True", "False", "None"};
    jinja_node *n = NULL;
    for (size_t k = 0; k < KS_ARRAY_LEN(kws) && !n; k++) {
        if (jj_p_is_name(P, kws[k]) && (n = jj_p_node(P, JJ_N_LIT))) {
            n->val = k % 3 == 2 ? jinja_none() : jinja_bool(k % 3 == 0);
        }
    }
    if (!n && (n = jj_p_node(P, JJ_N_NAME))) {
        n->name = jj_p_dup(P, t->s, t->n);
        n->name_len = t->n;
    }
    P->i++;
    return n;
}

/* A string literal; adjacent literals concatenate ('a' 'b' is 'ab'). */
static jinja_node *parse_string(parser *P)
{
    size_t total = 0, o = 0;
    for (size_t k = P->i; P->t[k].kind == JJ_TOK_STRING; k++) {
        total += P->t[k].n;
    }
    char *s = ks_arena_alloc(P->a, total + 1);
    for (; s && jj_p_cur(P)->kind == JJ_TOK_STRING; P->i++) {
        memcpy(s + o, jj_p_cur(P)->s, jj_p_cur(P)->n);
        o += jj_p_cur(P)->n;
    }
    jinja_node *n = s ? jj_p_node(P, JJ_N_LIT) : NULL;
    if (n) {
        s[o] = 0;
        n->val = jj_str_take(s, o);
    }
    return n;
}

/* After '(': a parenthesised expression, () or a tuple (a, b, ...). */
static int parse_paren(parser *P, jinja_node **out)
{
    jinja_node *e = NULL;
    if (jj_p_accept_op(P, ")")) {
        *out = jj_p_node(P, JJ_N_TUPLE);
        return *out ? 0 : KS_ERR_NOMEM;
    }
    int rc = jj_p_parse_expr(P, &e);
    if (rc || jj_p_accept_op(P, ")")) {
        *out = e;
        return rc;
    }
    if (!jj_p_accept_op(P, ",")) {
        return jj_p_fail(P, "')'");
    }
    jinja_node *n = jj_p_node(P, JJ_N_TUPLE);
    rc = n ? parse_seq(P, n, ")", false) : KS_ERR_NOMEM;
    if (!rc) { /* the first element was parsed before we knew it was a tuple */
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
}

static int parse_primary(parser *P, jinja_node **out)
{
    const jj_tok *t = jj_p_cur(P);
    jinja_node *n = NULL;
    if (t->kind == JJ_TOK_NAME) {
        n = parse_name(P, t);
    } else if (t->kind == JJ_TOK_STRING) {
        n = parse_string(P);
    } else if (t->kind == JJ_TOK_INT || t->kind == JJ_TOK_FLOAT) {
        if ((n = jj_p_node(P, JJ_N_LIT))) {
            n->val = t->kind == JJ_TOK_INT ? jinja_int(t->i) : jinja_float(t->f);
        }
        P->i++;
    } else if (jj_p_accept_op(P, "(")) {
        return parse_paren(P, out);
    } else if (jj_p_accept_op(P, "[") || jj_p_accept_op(P, "{")) {
        bool dict = P->t[P->i - 1].s[0] == '{';
        n = jj_p_node(P, dict ? JJ_N_DICT : JJ_N_LIST);
        *out = n;
        return n ? parse_seq(P, n, dict ? "}" : "]", dict) : KS_ERR_NOMEM;
    } else {
        return jj_p_fail(P, "an expression");
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
        if (!jj_p_is_op(P, ":") && !jj_p_is_op(P, "]")) {
            rc = jj_p_parse_expr(P, &parts[k]);
        }
        if (rc || !jj_p_accept_op(P, ":")) {
            break;
        }
        slice = true;
        k++;
    }
    if (!rc && !jj_p_accept_op(P, "]")) {
        rc = jj_p_fail(P, "']'");
    }
    jinja_node *n = jj_p_node(P, slice ? JJ_N_SLICE : JJ_N_INDEX);
    if (!n) {
        return KS_ERR_NOMEM;
    }
    if (!slice && !parts[0]) {
        return jj_p_fail(P, "an index");
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
        if (jj_p_accept_op(P, ".")) {
            const jj_tok *t = jj_p_cur(P);
            if (t->kind != JJ_TOK_NAME && t->kind != JJ_TOK_INT) {
                return jj_p_fail(P, "an attribute name");
            }
            if (!(n = jj_p_node(P, t->kind == JJ_TOK_NAME ? JJ_N_ATTR : JJ_N_INDEX))) {
                return KS_ERR_NOMEM;
            }
            if (t->kind == JJ_TOK_NAME) {
                n->name = jj_p_dup(P, t->s, t->n);
                n->name_len = t->n;
            } else if ((n->b = jj_p_node(P, JJ_N_LIT))) {
                n->b->val = jinja_int(t->i);
            }
            n->a = *io;
            P->i++;
        } else if (jj_p_accept_op(P, "[")) {
            rc = parse_subscript(P, *io, &n);
        } else if (jj_p_accept_op(P, "(")) {
            if ((n = jj_p_node(P, JJ_N_CALL))) {
                n->a = *io;
                rc = jj_p_parse_args(P, n);
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
    const jj_tok *t = jj_p_cur(P);
    if (t->kind == JJ_TOK_STRING || t->kind == JJ_TOK_INT || t->kind == JJ_TOK_FLOAT ||
        jj_p_is_op(P, "[") || jj_p_is_op(P, "{")) {
        return true;
    }
    return t->kind == JJ_TOK_NAME && !jj_p_is_name(P, "else") && !jj_p_is_name(P, "or") &&
           !jj_p_is_name(P, "and") && !jj_p_is_name(P, "is") && !jj_p_is_name(P, "in") &&
           !jj_p_is_name(P, "not") && !jj_p_is_name(P, "if");
}

int jj_p_parse_filter_expr(parser *P, jinja_node **io)
{
    int rc = 0;
    while (!rc) {
        bool filter = jj_p_is_op(P, "|"), test = jj_p_is_name(P, "is");
        if (!filter && !test) {
            break;
        }
        P->i++;
        jinja_node *n = jj_p_node(P, filter ? JJ_N_FILTER : JJ_N_TEST);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = test && jj_p_accept_name(P, "not");
        if (jj_p_cur(P)->kind != JJ_TOK_NAME) {
            return jj_p_fail(P, filter ? "a filter name" : "a test name");
        }
        n->name = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
        n->name_len = jj_p_cur(P)->n;
        n->a = *io;
        P->i++;
        if (jj_p_accept_op(P, "(")) {
            rc = jj_p_parse_args(P, n);
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
    if (jj_p_is_op(P, "-") || jj_p_is_op(P, "+")) {
        jinja_node *n = jj_p_node(P, JJ_N_UNARY);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = jj_p_is_op(P, "-") ? JJ_OP_NEG : JJ_OP_POS;
        P->i++;
        if (++P->depth > MAX_DEPTH) {
            return jj_p_fail(P, "less deeply nested expression");
        }
        rc = parse_unary(P, &n->a, false);
        P->depth--;
        *out = n;
    } else {
        rc = parse_primary(P, out);
    }
    rc = rc ? rc : parse_postfix(P, out);
    return rc || !with_filter ? rc : jj_p_parse_filter_expr(P, out);
}

static int binary(parser *P, jinja_node **io, int op, int (*next)(parser *, jinja_node **))
{
    jinja_node *n = jj_p_node(P, JJ_N_BIN);
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
    while (!rc && jj_p_accept_op(P, "**")) {
        rc = binary(P, out, JJ_OP_POW, parse_unary_f);
    }
    return rc;
}

static int parse_math2(parser *P, jinja_node **out)
{
    int rc = parse_pow(P, out);
    while (!rc) {
        int op = jj_p_accept_op(P, "*")    ? JJ_OP_MUL
                 : jj_p_accept_op(P, "//") ? JJ_OP_FLOORDIV
                 : jj_p_accept_op(P, "/")  ? JJ_OP_DIV
                 : jj_p_accept_op(P, "%")  ? JJ_OP_MOD
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
    while (!rc && jj_p_accept_op(P, "~")) {
        rc = binary(P, out, JJ_OP_CONCAT, parse_math2);
    }
    return rc;
}

static int parse_math1(parser *P, jinja_node **out)
{
    int rc = parse_concat(P, out);
    while (!rc) {
        int op = jj_p_accept_op(P, "+") ? JJ_OP_ADD : jj_p_accept_op(P, "-") ? JJ_OP_SUB : 0;
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
        int op = jj_p_accept_op(P, "==")     ? JJ_OP_EQ
                 : jj_p_accept_op(P, "!=")   ? JJ_OP_NE
                 : jj_p_accept_op(P, "<=")   ? JJ_OP_LE
                 : jj_p_accept_op(P, ">=")   ? JJ_OP_GE
                 : jj_p_accept_op(P, "<")    ? JJ_OP_LT
                 : jj_p_accept_op(P, ">")    ? JJ_OP_GT
                 : jj_p_accept_name(P, "in") ? JJ_OP_IN
                                             : 0;
        if (!op && jj_p_is_name(P, "not") && P->t[P->i + 1].kind == JJ_TOK_NAME &&
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
    if (jj_p_accept_name(P, "not")) {
        jinja_node *n = jj_p_node(P, JJ_N_UNARY);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->op = JJ_OP_NOT;
        *out = n;
        if (++P->depth > MAX_DEPTH) {
            return jj_p_fail(P, "less deeply nested expression");
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
    while (!rc && jj_p_accept_name(P, "and")) {
        rc = binary(P, out, JJ_OP_AND, parse_not);
    }
    return rc;
}

int jj_p_parse_or(parser *P, jinja_node **out)
{
    int rc = parse_and(P, out);
    while (!rc && jj_p_accept_name(P, "or")) {
        rc = binary(P, out, JJ_OP_OR, parse_and);
    }
    return rc;
}

int jj_p_parse_expr(parser *P, jinja_node **out)
{
    if (++P->depth > MAX_DEPTH) {
        return jj_p_fail(P, "less deeply nested expression");
    }
    int rc = jj_p_parse_or(P, out);
    if (!rc && jj_p_accept_name(P, "if")) {
        jinja_node *n = jj_p_node(P, JJ_N_COND);
        if (!n) {
            return KS_ERR_NOMEM;
        }
        n->b = *out;
        rc = jj_p_parse_or(P, &n->a);
        if (!rc && jj_p_accept_name(P, "else")) {
            rc = jj_p_parse_expr(P, &n->c);
        }
        *out = n;
    }
    P->depth--;
    return rc;
}

/* jinja_parse.c - Jinja statements and the parser's entry point. Statements: if/elif/else,
 * for (targets, `if` filter, else), set (expression, namespace attribute, block), macro,
 * call, filter blocks, break/continue; Hugging Face's {% generation %} markers are accepted
 * and render their body. Expressions are parsed by jinja_parse_expr.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_parse_expr.h"

/* ---- statements ---- */

static int parse_body(parser *P, const char *const *ends, size_t n_ends, nvec *body,
                      const char **end_found);

static int expect_close(parser *P)
{
    if (jj_p_cur(P)->kind != JJ_TOK_BLOCK_CLOSE) {
        return jj_p_fail(P, "'%}'");
    }
    P->i++;
    return 0;
}

static int body_into(parser *P, const char *const *ends, size_t n_ends, jinja_node ***items,
                     size_t *n_items, const char **end_found)
{
    nvec v = {0};
    if (++P->depth > MAX_DEPTH) {
        return jj_p_fail(P, "less deeply nested blocks");
    }
    int rc = parse_body(P, ends, n_ends, &v, end_found);
    P->depth--;
    *items = jj_p_nvec_finish(P, &v, n_items);
    return rc;
}

static int parse_if(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"elif", "else", "endif"};
    const char *end = NULL;
    int rc = jj_p_parse_expr(P, &n->a);
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 3, &n->items, &n->n_items, &end);
    if (rc) {
        return rc;
    }
    if (strcmp(end, "elif") == 0) {
        jinja_node *e = jj_p_node(P, JJ_S_IF);
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
        if (jj_p_cur(P)->kind != JJ_TOK_NAME || k == KS_ARRAY_LEN(names)) {
            return jj_p_fail(P, "a variable name");
        }
        names[k++] = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
        P->i++;
    } while (jj_p_accept_op(P, ","));
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
    rc = rc ? rc : jj_p_accept_name(P, "in") ? 0 : jj_p_fail(P, "'in'");
    rc = rc ? rc : jj_p_parse_or(P, &n->a);
    if (!rc && jj_p_accept_name(P, "if")) {
        rc = jj_p_parse_or(P, &n->b);
    }
    if (!rc && jj_p_is_name(P, "recursive")) {
        rc = jj_p_fail(P, "no 'recursive' (recursive loops are not supported)");
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
    if (!rc && n->n_kw == 1 && jj_p_accept_op(P, ".")) {
        if (jj_p_cur(P)->kind != JJ_TOK_NAME) {
            return jj_p_fail(P, "an attribute name");
        }
        n->name2 = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
        P->i++;
    }
    if (rc) {
        return rc;
    }
    if (jj_p_accept_op(P, "=")) {
        rc = jj_p_parse_expr(P, &n->a);
        if (!rc && jj_p_is_op(P, ",")) { /* set a, b = x, y: the right side is a tuple */
            rc = jj_p_fail(P, "'%}' (tuple assignment is not supported)");
        }
        return rc ? rc : expect_close(P);
    }
    if (n->n_kw != 1 || n->name2) {
        return jj_p_fail(P, "'='");
    }
    n->kind = JJ_S_SETBLOCK;
    if (jj_p_accept_op(P, "|")) {
        P->i--; /* {% set x | filter %}: keep the chain on a NULL source */
        rc = jj_p_parse_filter_expr(P, &n->a);
    }
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items, &n->n_items, &end);
    return rc ? rc : expect_close(P);
}

static int parse_macro(parser *P, jinja_node *n)
{
    static const char *const ends[] = {"endmacro"};
    const char *end = NULL;
    if (jj_p_cur(P)->kind != JJ_TOK_NAME) {
        return jj_p_fail(P, "a macro name");
    }
    n->name = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
    n->name_len = jj_p_cur(P)->n;
    P->i++;
    int rc = jj_p_accept_op(P, "(") ? jj_p_parse_args(P, n) : jj_p_fail(P, "'('");
    for (size_t i = 0; !rc && i < n->n_items; i++) { /* positional parameters are bare names */
        if (n->items[i]->kind != JJ_N_NAME) {
            return jj_p_fail(P, "macro parameters to be names");
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
    if (jj_p_accept_op(P, "(")) {
        rc = jj_p_parse_args(P, &params);
    }
    n->kw = NULL;
    n->n_kw = 0;
    n->c = ks_arena_alloc(P->a, sizeof *n->c); /* holds the caller's parameters */
    if (!n->c) {
        return KS_ERR_NOMEM;
    }
    *n->c = params;
    rc = rc ? rc : jj_p_parse_expr(P, &n->a);
    if (!rc && n->a->kind != JJ_N_CALL) {
        rc = jj_p_fail(P, "a macro call");
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
        jinja_node *f = jj_p_node(P, JJ_N_FILTER);
        if (!f || jj_p_cur(P)->kind != JJ_TOK_NAME) {
            return f ? jj_p_fail(P, "a filter name") : KS_ERR_NOMEM;
        }
        f->name = jj_p_dup(P, jj_p_cur(P)->s, jj_p_cur(P)->n);
        f->name_len = jj_p_cur(P)->n;
        f->a = chain;
        P->i++;
        if (jj_p_accept_op(P, "(")) {
            rc = jj_p_parse_args(P, f);
        }
        chain = f;
    } while (!rc && jj_p_is_op(P, "|"));
    n->a = chain;
    rc = rc ? rc : expect_close(P);
    rc = rc ? rc : body_into(P, ends, 1, &n->items, &n->n_items, &end);
    return rc ? rc : expect_close(P);
}

static int parse_statement(parser *P, jinja_node **out)
{
    const jj_tok *t = jj_p_cur(P);
    if (t->kind != JJ_TOK_NAME) {
        return jj_p_fail(P, "a statement name");
    }
    jinja_node *n = jj_p_node(P, JJ_S_TEXT);
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
        n->a = jj_p_node(P, JJ_N_LIT);
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
    return jj_p_fail(P, "a known statement (if, for, set, macro, call, filter, break, continue)");
}

static int parse_body(parser *P, const char *const *ends, size_t n_ends, nvec *body,
                      const char **end_found)
{
    for (;;) {
        const jj_tok *t = jj_p_cur(P);
        jinja_node *n = NULL;
        int rc = 0;
        if (t->kind == JJ_TOK_EOF) {
            if (n_ends) {
                char want[40];
                snprintf(want, sizeof want, "'{%% %s %%}'", ends[n_ends - 1]);
                return jj_p_fail(P, want);
            }
            return 0;
        }
        if (t->kind == JJ_TOK_TEXT) {
            if ((n = jj_p_node(P, JJ_S_TEXT))) {
                n->name = t->s;
                n->name_len = t->n;
            }
            P->i++;
        } else if (t->kind == JJ_TOK_VAR_OPEN) {
            P->i++;
            if ((n = jj_p_node(P, JJ_S_OUT))) {
                rc = jj_p_parse_expr(P, &n->a);
            }
            if (!rc && jj_p_cur(P)->kind != JJ_TOK_VAR_CLOSE) {
                rc = jj_p_fail(P, "'}}'");
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
            if (name->kind == JJ_TOK_NAME && ((name->n > 3 && memcmp(name->s, "end", 3) == 0) ||
                                              (name->n == 4 && memcmp(name->s, "elif", 4) == 0) ||
                                              (name->n == 4 && memcmp(name->s, "else", 4) == 0))) {
                char want[48];
                P->i++;
                snprintf(want, sizeof want, n_ends ? "'{%% %s %%}'" : "%s",
                         n_ends ? ends[n_ends - 1] : "no closing tag here");
                return jj_p_fail(P, want);
            }
            P->i++;
            rc = parse_statement(P, &n);
        } else {
            return jj_p_fail(P, "text or a tag");
        }
        if (rc) {
            return rc;
        }
        rc = jj_p_nvec_push(body, n);
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
    *body = jj_p_nvec_finish(&P, &v, n_body);
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

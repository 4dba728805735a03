/* jinja_parse_expr.h - the parser's shared state and helpers, used by jinja_parse_expr.c
 * (expressions) and jinja_parse.c (statements). Private to text/. */
#ifndef KVSERVE_JINJA_PARSE_EXPR_H
#define KVSERVE_JINJA_PARSE_EXPR_H

#include "jinja_internal.h"

typedef struct parser {
    ks_arena *a;
    const jj_tok *t;
    size_t n, i;
    ks_diag *d;
    int depth;
} parser;

/* A growable array of node pointers, copied into the arena when done. */
typedef struct nvec {
    jinja_node **v;
    size_t n, cap;
} nvec;

#define MAX_DEPTH 200

const jj_tok *jj_p_cur(parser *P);
/* Sets a "line N: expected WHAT, got TOKEN" diagnostic; returns KS_ERR_FORMAT. */
int jj_p_fail(parser *P, const char *what);
bool jj_p_is_op(parser *P, const char *op);
bool jj_p_is_name(parser *P, const char *name);
bool jj_p_accept_op(parser *P, const char *op);
bool jj_p_accept_name(parser *P, const char *name);
jinja_node *jj_p_node(parser *P, jj_node_kind k);
const char *jj_p_dup(parser *P, const char *s, size_t n);
int jj_p_nvec_push(nvec *v, jinja_node *x);
jinja_node **jj_p_nvec_finish(parser *P, nvec *v, size_t *n);
int jj_p_parse_args(parser *P, jinja_node *n);
int jj_p_parse_expr(parser *P, jinja_node **out);
int jj_p_parse_or(parser *P, jinja_node **out);
int jj_p_parse_filter_expr(parser *P, jinja_node **io);

#endif

/* jinja_internal.h - shared by the Jinja lexer, parser, evaluator and built-ins: tokens, the
 * syntax tree, containers, the render context and the scope chain.
 *
 * Memory: a template's tokens and nodes live in the template's arena; every value built while
 * rendering lives in the ctx's arena (budgeted). Nothing is freed piecemeal.
 */
#ifndef KVSERVE_JINJA_INTERNAL_H
#define KVSERVE_JINJA_INTERNAL_H

#include <stdarg.h>

#include "kvserve/jinja.h"

/* ---- tokens ---- */
typedef enum jj_tok_kind {
    JJ_TOK_TEXT,
    JJ_TOK_VAR_OPEN,    /* {{ */
    JJ_TOK_VAR_CLOSE,   /* }} */
    JJ_TOK_BLOCK_OPEN,  /* {% */
    JJ_TOK_BLOCK_CLOSE, /* %} */
    JJ_TOK_NAME,
    JJ_TOK_STRING, /* s/n hold the unescaped bytes */
    JJ_TOK_INT,
    JJ_TOK_FLOAT,
    JJ_TOK_OP, /* s/n hold the operator text: ( ) [ ] { } . , : | ~ + - * / // % ** = == != ... */
    JJ_TOK_EOF,
} jj_tok_kind;

typedef struct jj_tok {
    jj_tok_kind kind;
    int line;
    const char *s;
    size_t n;
    int64_t i;
    double f;
} jj_tok;

/* Splits src into tokens with Jinja's whitespace control (`{%-`, `-%}`, trim_blocks and
 * lstrip_blocks on, `{%+` disables lstrip). Comments are dropped. */
int jj_lex(ks_arena *a, const char *src, size_t len, jj_tok **out, size_t *n_out, ks_diag *d);

/* ---- syntax tree ---- */
typedef enum jj_node_kind {
    /* expressions */
    JJ_N_LIT,    /* val */
    JJ_N_NAME,   /* name */
    JJ_N_ATTR,   /* a.name */
    JJ_N_INDEX,  /* a[b] */
    JJ_N_SLICE,  /* a[b:c:d], missing parts NULL (d is kids[0]) */
    JJ_N_CALL,   /* a(items..., kw=kwv...) */
    JJ_N_FILTER, /* a | name(items..., kw) ; a NULL inside a filter block */
    JJ_N_TEST,   /* a is [not] name(items...) ; op = 1 when negated */
    JJ_N_BIN,    /* a op b */
    JJ_N_UNARY,  /* op a */
    JJ_N_COND,   /* b if a else c */
    JJ_N_LIST,   /* [items] */
    JJ_N_TUPLE,  /* (items) */
    JJ_N_DICT,   /* {items[2k]: items[2k+1]} */
    /* statements */
    JJ_S_TEXT,        /* name/name_len hold the text */
    JJ_S_OUT,         /* {{ a }} */
    JJ_S_IF,          /* if a: items else items2 */
    JJ_S_FOR,         /* for targets(kw) in a [if b]: items else items2 */
    JJ_S_SET,         /* set targets(kw) = a ; set name.attr = a when name2 set */
    JJ_S_SETBLOCK,    /* set name: items (captured) */
    JJ_S_MACRO,       /* macro name(kw = params, kwv = defaults): items */
    JJ_S_CALLBLOCK,   /* call(kw = caller params) a: items */
    JJ_S_FILTERBLOCK, /* filter a(chain with NULL source): items */
    JJ_S_BREAK,
    JJ_S_CONTINUE,
} jj_node_kind;

typedef enum jj_op {
    JJ_OP_ADD = 1,
    JJ_OP_SUB,
    JJ_OP_MUL,
    JJ_OP_DIV,
    JJ_OP_FLOORDIV,
    JJ_OP_MOD,
    JJ_OP_POW,
    JJ_OP_CONCAT,
    JJ_OP_EQ,
    JJ_OP_NE,
    JJ_OP_LT,
    JJ_OP_LE,
    JJ_OP_GT,
    JJ_OP_GE,
    JJ_OP_IN,
    JJ_OP_NOTIN,
    JJ_OP_AND,
    JJ_OP_OR,
    JJ_OP_NOT,
    JJ_OP_NEG,
    JJ_OP_POS,
} jj_op;

typedef struct jinja_node {
    jj_node_kind kind;
    int line;
    int op;
    const char *name; /* NAME, ATTR, FILTER, TEST, SET target, MACRO, TEXT */
    size_t name_len;
    const char *name2; /* SET ns attribute */
    jinja_val val;
    struct jinja_node *a, *b, *c, *d;
    struct jinja_node **items; /* args, elements, body */
    size_t n_items;
    struct jinja_node **items2; /* else body */
    size_t n_items2;
    const char **kw; /* keyword names, loop targets, macro params */
    struct jinja_node **kwv;
    size_t n_kw;
} jinja_node;

struct jinja_template {
    ks_arena arena;
    jinja_node **body;
    size_t n_body;
};

int jj_parse(ks_arena *a, const jj_tok *toks, size_t n, jinja_node ***body, size_t *n_body,
             ks_diag *d);

/* ---- containers ---- */
struct jinja_list {
    jinja_val *v;
    size_t n, cap;
    bool is_tuple; /* prints as (a, b); otherwise a list */
};

struct jinja_dict {
    jinja_val *k; /* keys are strings (or ints: dict literals with int keys) */
    jinja_val *v;
    size_t n, cap;
    bool is_namespace; /* attributes may be assigned with {% set ns.x = ... %} */
};

/* ---- render context ---- */
typedef struct jinja_frame {
    struct jinja_frame *parent;
    const char **names;
    jinja_val *vals;
    size_t n, cap;
} jinja_frame;

typedef struct jj_buf {
    char *p;
    size_t n, cap;
} jj_buf;

struct jinja_ctx {
    ks_arena arena;
    size_t used, max_bytes;
    bool oom;
    time_t now;
    jinja_frame globals;
    jinja_frame *top; /* the template's top-level frame during a render */
    ks_diag *diag;
    int depth;      /* macro/call recursion depth */
    uint64_t steps; /* statements and loop iterations run: bounded so a render ends */
};

enum jj_fn { JJ_FN_RANGE = 1, JJ_FN_NAMESPACE, JJ_FN_RAISE, JJ_FN_STRFTIME, JJ_FN_DICT };

/* jinja_value.c */
void *jj_alloc(jinja_ctx *c, size_t n);
int jj_error(jinja_ctx *c, int line, const char *fmt, ...) KS_PRINTF(3, 4);
jinja_val jj_undefined(void);
jinja_val jj_str_take(const char *p, size_t n); /* p already in the ctx arena */
bool jj_is_str(jinja_val v, const char *lit);
bool jj_truthy(jinja_val v);
bool jj_equal(jinja_val a, jinja_val b);
/* <0, 0, >0; KS_ERR_INVALID through c when the types cannot be ordered. */
int jj_compare(jinja_ctx *c, int line, jinja_val a, jinja_val b, int *out);
jinja_val *jj_dict_get(jinja_val dict, const char *key, size_t n);
void jj_dict_put(jinja_ctx *c, struct jinja_dict *d, jinja_val k, jinja_val v);
int jj_buf_put(jinja_ctx *c, jj_buf *b, const char *s, size_t n);
/* Python str(): strings as is, True/False/None, lists and dicts in repr form. */
int jj_to_str(jinja_ctx *c, jinja_val v, jj_buf *b);
/* json.dumps(v, ensure_ascii=False, indent, sort_keys) with Python's separators. */
int jj_to_json(jinja_ctx *c, int line, jinja_val v, int indent, bool sort_keys, jj_buf *b);
size_t jj_utf8_len(const char *s, size_t n);
size_t jj_utf8_offset(const char *s, size_t n, size_t cp_index);
const char *jj_type_name(jinja_val v);
/* Case mapping of ASCII letters: mode 'u'pper, 'l'ower, 't'itle, 'c'apitalize. */
jinja_val jj_str_case(jinja_ctx *c, jinja_val s, int mode);
/* Python's str.replace(old, new, count); count < 0: all. */
jinja_val jj_str_replace(jinja_ctx *c, jinja_val s, jinja_val old, jinja_val new_, int64_t count);

/* jinja_builtins.c */
int jj_filter_apply(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args, size_t nargs,
                    const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out);
int jj_test_apply(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args, size_t nargs,
                  bool *out);
/* obj.name(args): string, dict and list methods. *found false when obj has no such method. */
int jj_method_call(jinja_ctx *c, int line, jinja_val obj, const char *name, size_t name_len,
                   jinja_val *args, size_t nargs, jinja_val *out, bool *found);
int jj_func_call(jinja_ctx *c, int line, int fn, jinja_val *args, size_t nargs, const char **kw,
                 jinja_val *kwv, size_t nkw, jinja_val *out);
jinja_val jj_global_func(const char *name, size_t n);

/* jinja_eval.c: used by filters that apply tests or filters by name (select, map) */
int jj_eval_render(const jinja_template *t, jinja_ctx *c, jj_buf *out);

#endif

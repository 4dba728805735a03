/* jinja_eval.c - renders a parsed template: evaluates expressions with Python's semantics
 * (and/or return an operand, + on strings and lists concatenates, / is true division, missing
 * keys and attributes are undefined, an attribute of an undefined value is an error) and runs
 * statements with Jinja's scoping: a for loop and a macro call open a scope, if blocks do not,
 * so a {% set %} inside a loop is not seen after it (templates use namespace() for that).
 * Invariant: every value produced lives in the ctx's arena; the output buffer is malloc'd.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

enum { JJ_BREAK = 1, JJ_CONTINUE = 2 };
#define MAX_CALL_DEPTH 64
/* Statements and loop iterations one render may run: a chat template runs a few thousand.
 * A build may lower it (the fuzz target does, so that pathological templates stop in
 * milliseconds and the campaign spends its time on new inputs). */
#ifndef KS_JINJA_MAX_STEPS
#define KS_JINJA_MAX_STEPS 2000000
#endif
#define MAX_STEPS KS_JINJA_MAX_STEPS

static int eval(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out);
static int exec_body(jinja_ctx *c, jinja_node *const *items, size_t n, jinja_frame *f, jj_buf *out);

static jinja_frame *frame_new(jinja_ctx *c, jinja_frame *parent)
{
    jinja_frame *f = jj_alloc(c, sizeof *f);
    if (f) {
        memset(f, 0, sizeof *f);
        f->parent = parent;
    }
    return f;
}

static int frame_set(jinja_ctx *c, jinja_frame *f, const char *name, jinja_val v)
{
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return 0;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        const char **nn = jj_alloc(c, cap * sizeof *nn);
        jinja_val *nv = jj_alloc(c, cap * sizeof *nv);
        if (!nn || !nv) {
            return KS_ERR_FULL;
        }
        if (f->n) {
            memcpy(nn, f->names, f->n * sizeof *nn);
            memcpy(nv, f->vals, f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
    return 0;
}

static jinja_val lookup(jinja_ctx *c, jinja_frame *f, const char *name, size_t len)
{
    for (; f; f = f->parent) {
        for (size_t i = 0; i < f->n; i++) {
            if (strcmp(f->names[i], name) == 0) {
                return f->vals[i];
            }
        }
    }
    (void)c;
    return jj_global_func(name, len);
}

static jinja_val str_concat(jinja_ctx *c, const char *a, size_t an, const char *b, size_t bn)
{
    char *p = jj_alloc(c, an + bn + 1);
    if (!p) {
        return jj_str_take("", 0);
    }
    memcpy(p, a, an);
    memcpy(p + an, b, bn);
    p[an + bn] = 0;
    return jj_str_take(p, an + bn);
}

static int to_string_val(jinja_ctx *c, jinja_val v, jinja_val *out)
{
    if (v.type == JINJA_STR) {
        *out = v;
        return 0;
    }
    jj_buf b = {0};
    int rc = jj_to_str(c, v, &b);
    *out = rc ? jj_str_take("", 0) : jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return rc;
}

static jinja_val list_concat(jinja_ctx *c, jinja_val a, jinja_val b)
{
    jinja_val l = jinja_list_new(c);
    for (size_t i = 0; i < a.u.l->n; i++) {
        jinja_list_push(c, l, a.u.l->v[i]);
    }
    for (size_t i = 0; i < b.u.l->n; i++) {
        jinja_list_push(c, l, b.u.l->v[i]);
    }
    return l;
}

static int arith(jinja_ctx *c, const jinja_node *n, jinja_val a, jinja_val b, jinja_val *out)
{
    bool ints = (a.type == JINJA_INT || a.type == JINJA_BOOL) &&
                (b.type == JINJA_INT || b.type == JINJA_BOOL);
    bool nums = (a.type <= JINJA_FLOAT && a.type >= JINJA_BOOL) &&
                (b.type <= JINJA_FLOAT && b.type >= JINJA_BOOL);
    /* u.b is read only from a bool: another member's bytes are not a valid bool (UBSan) */
    int64_t x = a.type == JINJA_INT    ? a.u.i
                : a.type == JINJA_BOOL ? a.u.b
                                       : 0,
            y = b.type == JINJA_INT    ? b.u.i
                : b.type == JINJA_BOOL ? b.u.b
                                       : 0;
    double fx = a.type == JINJA_FLOAT ? a.u.f : (double)x,
           fy = b.type == JINJA_FLOAT ? b.u.f : (double)y;
    if (n->op == JJ_OP_ADD && a.type == JINJA_STR && b.type == JINJA_STR) {
        *out = str_concat(c, a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n);
        return 0;
    }
    if (n->op == JJ_OP_ADD && a.type == JINJA_LIST && b.type == JINJA_LIST) {
        *out = list_concat(c, a, b);
        return 0;
    }
    if (n->op == JJ_OP_MUL && a.type == JINJA_STR && ints) {
        return jj_error(c, n->line, "string repetition needs an int");
    }
    if (n->op == JJ_OP_MUL && a.type == JINJA_STR && b.type == JINJA_INT) {
        jinja_val s = jj_str_take("", 0);
        for (int64_t i = 0; i < b.u.i && !c->oom; i++) {
            s = str_concat(c, s.u.s.p, s.u.s.n, a.u.s.p, a.u.s.n);
        }
        *out = s;
        return c->oom ? KS_ERR_FULL : 0;
    }
    if (!nums) {
        return jj_error(c, n->line, "unsupported operand types for arithmetic: %s and %s",
                        jj_type_name(a), jj_type_name(b));
    }
    switch (n->op) {
    case JJ_OP_ADD:
        *out = ints ? jinja_int(x + y) : jinja_float(fx + fy);
        return 0;
    case JJ_OP_SUB:
        *out = ints ? jinja_int(x - y) : jinja_float(fx - fy);
        return 0;
    case JJ_OP_MUL:
        *out = ints ? jinja_int(x * y) : jinja_float(fx * fy);
        return 0;
    case JJ_OP_POW:
        *out = ints && y >= 0 ? jinja_int((int64_t)pow(fx, fy)) : jinja_float(pow(fx, fy));
        return 0;
    default:
        break;
    }
    if (ints ? y == 0 : fy == 0.0) {
        return jj_error(c, n->line, "division by zero");
    }
    if (n->op == JJ_OP_DIV) {
        *out = jinja_float(fx / fy);
    } else if (n->op == JJ_OP_FLOORDIV) {
        *out = ints ? jinja_int(x / y - ((x % y != 0) && ((x < 0) != (y < 0))))
                    : jinja_float(floor(fx / fy));
    } else {
        *out = ints ? jinja_int(((x % y) + y) % y) : jinja_float(fx - fy * floor(fx / fy));
    }
    return 0;
}

static int contains(jinja_ctx *c, const jinja_node *n, jinja_val item, jinja_val in, bool *out)
{
    if (in.type == JINJA_STR) {
        if (item.type != JINJA_STR) {
            return jj_error(c, n->line, "'in <string>' requires a string, not %s",
                            jj_type_name(item));
        }
        *out = item.u.s.n == 0 || memmem(in.u.s.p, in.u.s.n, item.u.s.p, item.u.s.n) != NULL;
        return 0;
    }
    *out = false;
    if (in.type == JINJA_LIST) {
        for (size_t i = 0; i < in.u.l->n && !*out; i++) {
            *out = jj_equal(item, in.u.l->v[i]);
        }
        return 0;
    }
    if (in.type == JINJA_DICT) {
        for (size_t i = 0; i < in.u.d->n && !*out; i++) {
            *out = jj_equal(item, in.u.d->k[i]);
        }
        return 0;
    }
    if (in.type == JINJA_UNDEFINED) {
        return 0;
    }
    return jj_error(c, n->line, "argument of type %s is not iterable", jj_type_name(in));
}

static int eval_bin(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out)
{
    jinja_val a, b;
    int rc = eval(c, n->a, f, &a);
    if (rc) {
        return rc;
    }
    if (n->op == JJ_OP_AND || n->op == JJ_OP_OR) {
        if (jj_truthy(a) == (n->op == JJ_OP_OR)) {
            *out = a;
            return 0;
        }
        return eval(c, n->b, f, out);
    }
    if ((rc = eval(c, n->b, f, &b))) {
        return rc;
    }
    int cmp = 0;
    bool in = false;
    switch (n->op) {
    case JJ_OP_EQ:
        *out = jinja_bool(jj_equal(a, b));
        return 0;
    case JJ_OP_NE:
        *out = jinja_bool(!jj_equal(a, b));
        return 0;
    case JJ_OP_LT:
    case JJ_OP_LE:
    case JJ_OP_GT:
    case JJ_OP_GE:
        rc = jj_compare(c, n->line, a, b, &cmp);
        *out = jinja_bool(n->op == JJ_OP_LT   ? cmp < 0
                          : n->op == JJ_OP_LE ? cmp <= 0
                          : n->op == JJ_OP_GT ? cmp > 0
                                              : cmp >= 0);
        return rc;
    case JJ_OP_IN:
    case JJ_OP_NOTIN:
        rc = contains(c, n, a, b, &in);
        *out = jinja_bool(in == (n->op == JJ_OP_IN));
        return rc;
    case JJ_OP_CONCAT: {
        jinja_val sa, sb;
        rc = to_string_val(c, a, &sa);
        rc = rc ? rc : to_string_val(c, b, &sb);
        *out = rc ? a : str_concat(c, sa.u.s.p, sa.u.s.n, sb.u.s.p, sb.u.s.n);
        return rc;
    }
    default:
        return arith(c, n, a, b, out);
    }
}

static int index_value(jinja_ctx *c, int line, jinja_val obj, jinja_val key, jinja_val *out)
{
    *out = jj_undefined();
    if (obj.type == JINJA_UNDEFINED) {
        return jj_error(c, line, "cannot index an undefined value");
    }
    if (obj.type == JINJA_DICT) {
        for (size_t i = 0; i < obj.u.d->n; i++) {
            if (jj_equal(obj.u.d->k[i], key)) {
                *out = obj.u.d->v[i];
                break;
            }
        }
        return 0;
    }
    if (key.type != JINJA_INT || (obj.type != JINJA_LIST && obj.type != JINJA_STR)) {
        return 0;
    }
    int64_t len =
        obj.type == JINJA_LIST ? (int64_t)obj.u.l->n : (int64_t)jj_utf8_len(obj.u.s.p, obj.u.s.n);
    int64_t i = key.u.i < 0 ? key.u.i + len : key.u.i;
    if (i < 0 || i >= len) {
        return 0;
    }
    if (obj.type == JINJA_LIST) {
        *out = obj.u.l->v[i];
    } else {
        size_t s = jj_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
        size_t e = jj_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
        *out = jj_str_take(obj.u.s.p + s, e - s);
    }
    return 0;
}

static int slice_bound(jinja_ctx *c, const jinja_node *n, jinja_frame *f, int64_t len, int64_t step,
                       bool is_start, int64_t *out)
{
    jinja_val v = jinja_none();
    int rc = n ? eval(c, n, f, &v) : 0;
    if (rc) {
        return rc;
    }
    if (v.type == JINJA_NONE || v.type == JINJA_UNDEFINED) {
        *out = step > 0 ? (is_start ? 0 : len) : (is_start ? len - 1 : -1);
        return 0;
    }
    if (v.type != JINJA_INT) {
        return jj_error(c, n->line, "slice indices must be integers");
    }
    int64_t i = v.u.i < 0 ? v.u.i + len : v.u.i;
    if (step > 0) {
        i = i < 0 ? 0 : i > len ? len : i;
    } else {
        i = i < -1 ? -1 : i > len - 1 ? len - 1 : i;
    }
    *out = i;
    return 0;
}

static int eval_slice(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out)
{
    jinja_val obj, stepv = jinja_int(1);
    int rc = eval(c, n->a, f, &obj);
    rc = rc ? rc : n->d ? eval(c, n->d, f, &stepv) : 0;
    if (rc) {
        return rc;
    }
    if (obj.type != JINJA_LIST && obj.type != JINJA_STR) {
        return jj_error(c, n->line, "cannot slice %s", jj_type_name(obj));
    }
    int64_t step = stepv.type == JINJA_INT ? stepv.u.i : stepv.type == JINJA_NONE ? 1 : 0;
    if (step == 0) {
        return jj_error(c, n->line, "slice step must be a non-zero integer");
    }
    bool is_list = obj.type == JINJA_LIST;
    int64_t len = is_list ? (int64_t)obj.u.l->n : (int64_t)jj_utf8_len(obj.u.s.p, obj.u.s.n);
    int64_t lo, hi;
    rc = slice_bound(c, n->b, f, len, step, true, &lo);
    rc = rc ? rc : slice_bound(c, n->c, f, len, step, false, &hi);
    if (rc) {
        return rc;
    }
    jinja_val res = is_list ? jinja_list_new(c) : jj_str_take("", 0);
    jj_buf b = {0};
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (is_list) {
            jinja_list_push(c, res, obj.u.l->v[i]);
        } else {
            size_t s = jj_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
            size_t e = jj_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
            if ((rc = jj_buf_put(c, &b, obj.u.s.p + s, e - s))) {
                break;
            }
        }
    }
    if (!is_list && !rc) {
        res = jinja_str(c, b.p ? b.p : "", b.n);
    }
    free(b.p);
    *out = res;
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

/* Evaluates positional and keyword arguments of a call, filter or test node. */
static int eval_args(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val **args,
                     jinja_val **kwv)
{
    *args = jj_alloc(c, (n->n_items + 1) * sizeof **args);
    *kwv = jj_alloc(c, (n->n_kw + 1) * sizeof **kwv);
    if (!*args || !*kwv) {
        return KS_ERR_FULL;
    }
    for (size_t i = 0; i < n->n_items; i++) {
        int rc = eval(c, n->items[i], f, &(*args)[i]);
        if (rc) {
            return rc;
        }
    }
    for (size_t i = 0; i < n->n_kw; i++) {
        int rc = eval(c, n->kwv[i], f, &(*kwv)[i]);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

/* Calls a macro (or a call block's caller): params come from `params` (names in items, defaults
 * in kw/kwv), the body is def->items2. */
static int call_macro(jinja_ctx *c, int line, jinja_val m, jinja_val *args, size_t nargs,
                      const char **kw, jinja_val *kwv, size_t nkw, jinja_val caller, jinja_val *out)
{
    const jinja_node *def = m.u.m.node;
    const jinja_node *params = def->kind == JJ_S_CALLBLOCK ? def->c : def;
    if (c->depth >= MAX_CALL_DEPTH) {
        return jj_error(c, line, "macro calls nested too deeply");
    }
    jinja_frame *fr = frame_new(c, m.u.m.closure);
    if (!fr) {
        return KS_ERR_FULL;
    }
    size_t np = params->n_items + params->n_kw;
    if (nargs > np) {
        return jj_error(c, line, "macro takes %zu arguments, %zu given", np, nargs);
    }
    int rc = 0;
    for (size_t p = 0; p < np && !rc; p++) {
        const char *name =
            p < params->n_items ? params->items[p]->name : params->kw[p - params->n_items];
        jinja_val v = jj_undefined();
        if (p < nargs) {
            v = args[p];
        } else if (p >= params->n_items) {
            rc = eval(c, params->kwv[p - params->n_items], fr, &v);
        }
        for (size_t k = 0; k < nkw; k++) {
            v = strcmp(kw[k], name) == 0 ? kwv[k] : v;
        }
        rc = rc ? rc : frame_set(c, fr, name, v);
    }
    if (!rc && caller.type == JINJA_MACRO) {
        rc = frame_set(c, fr, "caller", caller);
    }
    jj_buf b = {0};
    c->depth++;
    rc = rc ? rc : exec_body(c, def->items2, def->n_items2, fr, &b);
    c->depth--;
    if (rc > 0) {
        rc = 0; /* a stray break/continue ends the macro body */
    }
    *out = rc ? jj_undefined() : jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return rc;
}

static int eval_call(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val caller,
                     jinja_val *out)
{
    jinja_val *args, *kwv, callee;
    int rc = eval_args(c, n, f, &args, &kwv);
    if (rc) {
        return rc;
    }
    if (n->a->kind == JJ_N_ATTR) {
        jinja_val obj;
        bool found = false;
        if ((rc = eval(c, n->a->a, f, &obj))) {
            return rc;
        }
        rc = jj_method_call(c, n->line, obj, n->a->name, n->a->name_len, args, n->n_items, out,
                            &found);
        if (rc || found) {
            return rc;
        }
    }
    if ((rc = eval(c, n->a, f, &callee))) {
        return rc;
    }
    if (callee.type == JINJA_FUNC) {
        return jj_func_call(c, n->line, callee.u.fn, args, n->n_items, n->kw, kwv, n->n_kw, out);
    }
    if (callee.type == JINJA_MACRO) {
        return call_macro(c, n->line, callee, args, n->n_items, n->kw, kwv, n->n_kw, caller, out);
    }
    return jj_error(c, n->line, "%s is not callable", jj_type_name(callee));
}

static int eval_filter(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val src,
                       jinja_val *out)
{
    jinja_val in = src, *args, *kwv;
    int rc = n->a ? (n->a->kind == JJ_N_FILTER ? eval_filter(c, n->a, f, src, &in)
                                               : eval(c, n->a, f, &in))
                  : 0;
    rc = rc ? rc : eval_args(c, n, f, &args, &kwv);
    return rc ? rc : jj_filter_apply(c, n, in, args, n->n_items, n->kw, kwv, n->n_kw, out);
}

static int eval_attr(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out)
{
    jinja_val obj;
    int rc = eval(c, n->a, f, &obj);
    if (rc) {
        return rc;
    }
    if (obj.type == JINJA_UNDEFINED) {
        return jj_error(c, n->line, "cannot read attribute '%s' of an undefined value", n->name);
    }
    jinja_val *v = jj_dict_get(obj, n->name, n->name_len);
    *out = v ? *v : jj_undefined();
    return 0;
}

static int eval_seq(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out)
{
    jinja_val r = n->kind == JJ_N_DICT ? jinja_dict_new(c) : jinja_list_new(c);
    for (size_t i = 0; i < n->n_items; i++) {
        jinja_val v, k;
        int rc = eval(c, n->items[i], f, &v);
        if (rc) {
            return rc;
        }
        if (n->kind == JJ_N_DICT) {
            k = v;
            if ((rc = eval(c, n->items[++i], f, &v))) {
                return rc;
            }
            jj_dict_put(c, r.u.d, k, v);
        } else {
            jinja_list_push(c, r, v);
        }
    }
    if (n->kind == JJ_N_TUPLE && r.type == JINJA_LIST) {
        r.u.l->is_tuple = true;
    }
    *out = r;
    return c->oom ? KS_ERR_FULL : 0;
}

static int eval(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val *out)
{
    jinja_val a, *args, *kwv;
    int rc = 0;
    bool t = false;
    if (c->oom) {
        return KS_ERR_FULL;
    }
    switch (n->kind) {
    case JJ_N_LIT:
        *out = n->val;
        return 0;
    case JJ_N_NAME:
        *out = lookup(c, f, n->name, n->name_len);
        return 0;
    case JJ_N_ATTR:
        return eval_attr(c, n, f, out);
    case JJ_N_INDEX:
        rc = eval(c, n->a, f, &a);
        rc = rc ? rc : eval(c, n->b, f, out);
        return rc ? rc : index_value(c, n->line, a, *out, out);
    case JJ_N_SLICE:
        return eval_slice(c, n, f, out);
    case JJ_N_CALL:
        return eval_call(c, n, f, jj_undefined(), out);
    case JJ_N_FILTER:
        return eval_filter(c, n, f, jj_undefined(), out);
    case JJ_N_TEST:
        rc = eval(c, n->a, f, &a);
        rc = rc ? rc : eval_args(c, n, f, &args, &kwv);
        rc = rc ? rc : jj_test_apply(c, n, a, args, n->n_items, &t);
        *out = jinja_bool(t != (n->op == 1));
        return rc;
    case JJ_N_BIN:
        return eval_bin(c, n, f, out);
    case JJ_N_UNARY:
        if ((rc = eval(c, n->a, f, &a))) {
            return rc;
        }
        if (n->op == JJ_OP_NOT) {
            *out = jinja_bool(!jj_truthy(a));
        } else if (a.type == JINJA_INT || a.type == JINJA_BOOL) {
            int64_t i = a.type == JINJA_INT ? a.u.i : a.u.b;
            *out = jinja_int(n->op == JJ_OP_NEG ? -i : i);
        } else if (a.type == JINJA_FLOAT) {
            *out = jinja_float(n->op == JJ_OP_NEG ? -a.u.f : a.u.f);
        } else {
            return jj_error(c, n->line, "bad operand type for unary -: %s", jj_type_name(a));
        }
        return 0;
    case JJ_N_COND:
        if ((rc = eval(c, n->a, f, &a))) {
            return rc;
        }
        if (jj_truthy(a)) {
            return eval(c, n->b, f, out);
        }
        *out = jj_undefined();
        return n->c ? eval(c, n->c, f, out) : 0;
    case JJ_N_LIST:
    case JJ_N_TUPLE:
    case JJ_N_DICT:
        return eval_seq(c, n, f, out);
    default:
        return jj_error(c, n->line, "statement used as an expression");
    }
}

/* ---- statements ---- */

static int bind_targets(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jinja_val item)
{
    if (n->n_kw == 1) {
        return frame_set(c, f, n->kw[0], item);
    }
    if (item.type != JINJA_LIST || item.u.l->n != n->n_kw) {
        return jj_error(c, n->line, "cannot unpack %s into %zu loop variables", jj_type_name(item),
                        n->n_kw);
    }
    for (size_t i = 0; i < n->n_kw; i++) {
        int rc = frame_set(c, f, n->kw[i], item.u.l->v[i]);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

/* The sequence a for loop walks: lists as they are, dict keys, string characters. */
static int iter_items(jinja_ctx *c, const jinja_node *n, jinja_val v, jinja_val *out)
{
    if (v.type == JINJA_LIST || v.type == JINJA_UNDEFINED) {
        *out = v.type == JINJA_LIST ? v : jinja_list_new(c);
        return 0;
    }
    jinja_val l = jinja_list_new(c);
    if (v.type == JINJA_DICT) {
        for (size_t i = 0; i < v.u.d->n; i++) {
            jinja_list_push(c, l, v.u.d->k[i]);
        }
    } else if (v.type == JINJA_STR) {
        size_t len = jj_utf8_len(v.u.s.p, v.u.s.n);
        for (size_t i = 0; i < len; i++) {
            size_t s = jj_utf8_offset(v.u.s.p, v.u.s.n, i),
                   e = jj_utf8_offset(v.u.s.p, v.u.s.n, i + 1);
            jinja_list_push(c, l, jj_str_take(v.u.s.p + s, e - s));
        }
    } else {
        return jj_error(c, n->line, "%s is not iterable", jj_type_name(v));
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

/* The loop variable: one dict per for statement, updated in place each iteration (keys are
 * static strings), so a long loop does not allocate per iteration. */
static void loop_update(jinja_ctx *c, jinja_val lo, jinja_val items, size_t i)
{
    static const char *const keys[] = {"index", "index0", "revindex", "revindex0", "first",
                                       "last",  "length", "previtem", "nextitem"};
    size_t len = items.u.l->n;
    jinja_val v[9] = {jinja_int((int64_t)i + 1),
                      jinja_int((int64_t)i),
                      jinja_int((int64_t)(len - i)),
                      jinja_int((int64_t)(len - i - 1)),
                      jinja_bool(i == 0),
                      jinja_bool(i + 1 == len),
                      jinja_int((int64_t)len),
                      i > 0 ? items.u.l->v[i - 1] : jj_undefined(),
                      i + 1 < len ? items.u.l->v[i + 1] : jj_undefined()};
    for (size_t k = 0; k < KS_ARRAY_LEN(keys); k++) {
        jinja_val *slot = jj_dict_get(lo, keys[k], strlen(keys[k]));
        if (slot) {
            *slot = v[k];
        } else {
            jj_dict_put(c, lo.u.d, jj_str_take(keys[k], strlen(keys[k])), v[k]);
        }
    }
}

static int exec_for(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jj_buf *out)
{
    jinja_val src, items = {0};
    int rc = eval(c, n->a, f, &src);
    rc = rc ? rc : iter_items(c, n, src, &items);
    jinja_frame *fr = rc ? NULL : frame_new(c, f);
    if (rc || !fr) {
        return rc ? rc : KS_ERR_FULL;
    }
    if (n->b) { /* for x in xs if cond: filter first, so loop.length counts what is kept */
        jinja_val kept = jinja_list_new(c), ok;
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            c->steps++;
            rc = bind_targets(c, n, fr, items.u.l->v[i]);
            rc = rc ? rc : eval(c, n->b, fr, &ok);
            if (!rc && jj_truthy(ok)) {
                jinja_list_push(c, kept, items.u.l->v[i]);
            }
        }
        items = kept;
    }
    jinja_val lo = jinja_dict_new(c);
    if (lo.type != JINJA_DICT) {
        return KS_ERR_FULL;
    }
    for (size_t i = 0; i < items.u.l->n && !rc; i++) {
        if ((c->steps += 1) > MAX_STEPS) {
            return jj_error(c, n->line, "template runs too long (over %d steps)", MAX_STEPS);
        }
        loop_update(c, lo, items, i);
        rc = bind_targets(c, n, fr, items.u.l->v[i]);
        rc = rc ? rc : frame_set(c, fr, "loop", lo);
        rc = rc ? rc : exec_body(c, n->items, n->n_items, fr, out);
        if (rc == JJ_CONTINUE) {
            rc = 0;
        } else if (rc == JJ_BREAK) {
            return 0;
        }
    }
    if (!rc && items.u.l->n == 0 && n->n_items2) {
        rc = exec_body(c, n->items2, n->n_items2, f, out);
    }
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

static int exec_set(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jj_buf *out)
{
    jinja_val v;
    int rc;
    (void)out;
    if (n->kind == JJ_S_SETBLOCK) {
        jj_buf b = {0};
        rc = exec_body(c, n->items, n->n_items, f, &b);
        v = jinja_str(c, b.p ? b.p : "", b.n);
        free(b.p);
        if (!rc && n->a) {
            rc = eval_filter(c, n->a, f, v, &v);
        }
    } else {
        rc = eval(c, n->a, f, &v);
    }
    if (rc) {
        return rc;
    }
    if (n->name2) {
        jinja_val ns = lookup(c, f, n->kw[0], strlen(n->kw[0]));
        if (ns.type != JINJA_DICT || !ns.u.d->is_namespace) {
            return jj_error(c, n->line, "cannot assign attribute on %s (not a namespace)",
                            jj_type_name(ns));
        }
        jj_dict_put(c, ns.u.d, jinja_cstr(c, n->name2), v);
        return c->oom ? KS_ERR_FULL : 0;
    }
    return bind_targets(c, n, f, v);
}

static int exec_stmt(jinja_ctx *c, const jinja_node *n, jinja_frame *f, jj_buf *out)
{
    jinja_val v;
    int rc;
    if (++c->steps > MAX_STEPS) {
        return jj_error(c, n->line, "template runs too long (over %d steps)", MAX_STEPS);
    }
    switch (n->kind) {
    case JJ_S_TEXT:
        return jj_buf_put(c, out, n->name, n->name_len);
    case JJ_S_OUT:
        rc = eval(c, n->a, f, &v);
        return rc ? rc : jj_to_str(c, v, out);
    case JJ_S_IF:
        if ((rc = eval(c, n->a, f, &v))) {
            return rc;
        }
        return jj_truthy(v) ? exec_body(c, n->items, n->n_items, f, out)
                            : exec_body(c, n->items2, n->n_items2, f, out);
    case JJ_S_FOR:
        return exec_for(c, n, f, out);
    case JJ_S_SET:
    case JJ_S_SETBLOCK:
        return exec_set(c, n, f, out);
    case JJ_S_MACRO:
        v.type = JINJA_MACRO;
        v.u.m.node = n;
        v.u.m.closure = f;
        return frame_set(c, f, n->name, v);
    case JJ_S_CALLBLOCK: {
        jinja_val caller = {.type = JINJA_MACRO};
        caller.u.m.node = n;
        caller.u.m.closure = f;
        rc = eval_call(c, n->a, f, caller, &v);
        return rc ? rc : jj_to_str(c, v, out);
    }
    case JJ_S_FILTERBLOCK: {
        jj_buf b = {0};
        rc = exec_body(c, n->items, n->n_items, f, &b);
        v = jinja_str(c, b.p ? b.p : "", b.n);
        free(b.p);
        rc = rc ? rc : eval_filter(c, n->a, f, v, &v);
        return rc ? rc : jj_to_str(c, v, out);
    }
    case JJ_S_BREAK:
        return JJ_BREAK;
    case JJ_S_CONTINUE:
        return JJ_CONTINUE;
    default:
        return jj_error(c, n->line, "expression used as a statement");
    }
}

static int exec_body(jinja_ctx *c, jinja_node *const *items, size_t n, jinja_frame *f, jj_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        int rc = exec_stmt(c, items[i], f, out);
        if (rc) {
            return rc;
        }
        if (c->oom) {
            return KS_ERR_FULL;
        }
    }
    return 0;
}

int jj_eval_render(const jinja_template *t, jinja_ctx *c, jj_buf *out)
{
    jinja_frame *top = frame_new(c, &c->globals);
    if (!top) {
        return KS_ERR_FULL;
    }
    c->top = top;
    int rc = exec_body(c, t->body, t->n_body, top, out);
    return rc > 0 ? 0 : rc; /* break/continue outside a loop: ignored */
}

int jinja_render(const jinja_template *t, jinja_ctx *c, char **out, size_t *out_len, ks_diag *d)
{
    jj_buf b = {0};
    ks_diag_clear(d);
    c->diag = d;
    c->depth = 0;
    c->steps = 0;
    int rc = c->oom ? KS_ERR_FULL : jj_eval_render(t, c, &b);
    if (!rc && c->oom) {
        rc = KS_ERR_FULL;
    }
    if (rc == KS_ERR_FULL && d && !d->msg[0]) {
        ks_diag_set(d, KS_ERR_FULL, "chat template: rendering exceeded its memory budget");
    }
    c->diag = NULL;
    if (rc) {
        free(b.p);
        return rc;
    }
    if (!b.p && jj_buf_put(c, &b, "", 0)) {
        return KS_ERR_NOMEM;
    }
    *out = b.p;
    if (out_len) {
        *out_len = b.n;
    }
    return 0;
}

/* jinja_filters.c - Jinja filters as chat templates use them: trim, tojson (indent, sort_keys),
 * length/count, items, upper/lower/title/capitalize, default/d, join, first/last, replace,
 * string, int, float, list, abs, round, reverse, unique, sort, dictsort, sum, min, max,
 * select/reject, selectattr/rejectattr, map (attribute= or a filter name), indent, safe.
 * An unknown filter is an error naming it (so a template we cannot render says why).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

static jinja_val kwarg(const char **kw, jinja_val *kwv, size_t nkw, const char *name,
                       jinja_val *args, size_t nargs, size_t pos, jinja_val dflt)
{
    for (size_t i = 0; i < nkw; i++) {
        if (!strcmp(kw[i], name)) {
            return kwv[i];
        }
    }
    return pos < nargs ? args[pos] : dflt;
}

static int to_str_val(jinja_ctx *c, jinja_val v, jinja_val *out)
{
    if (v.type == JINJA_STR) {
        *out = v;
        return 0;
    }
    jj_buf b = {0};
    int rc = jj_to_str(c, v, &b);
    *out = jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return rc;
}

/* The items a filter walks: a list, a dict's keys, a string's characters. */
static int as_list(jinja_ctx *c, const jinja_node *n, jinja_val v, jinja_val *out)
{
    if (v.type == JINJA_LIST) {
        *out = v;
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
            size_t a = jj_utf8_offset(v.u.s.p, v.u.s.n, i),
                   b = jj_utf8_offset(v.u.s.p, v.u.s.n, i + 1);
            jinja_list_push(c, l, jj_str_take(v.u.s.p + a, b - a));
        }
    } else if (v.type != JINJA_UNDEFINED) {
        return jj_error(c, n->line, "filter '%s': %s is not iterable", n->name, jj_type_name(v));
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

/* Follows a dotted attribute path ("function.name") through dicts. */
static jinja_val attr_path(jinja_val v, jinja_val path)
{
    if (path.type == JINJA_INT) {
        return v.type == JINJA_LIST && path.u.i >= 0 && (size_t)path.u.i < v.u.l->n
                   ? v.u.l->v[path.u.i]
                   : jj_undefined();
    }
    if (path.type != JINJA_STR) {
        return jj_undefined();
    }
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        jinja_val *x = jj_dict_get(v, p, (size_t)(e - p));
        if (!x) {
            return jj_undefined();
        }
        v = *x;
        p = e + 1;
    }
    return v;
}

static int select_filter(jinja_ctx *c, const jinja_node *n, jinja_val seq, jinja_val *args,
                         size_t nargs, bool by_attr, bool keep, jinja_val *out)
{
    jinja_val items, r = jinja_list_new(c);
    int rc = as_list(c, n, seq, &items);
    size_t a0 = by_attr ? 1 : 0;
    if (by_attr && nargs < 1) {
        return jj_error(c, n->line, "filter '%s' needs an attribute name", n->name);
    }
    jinja_node tn = *n;
    if (nargs > a0) {
        if (args[a0].type != JINJA_STR) {
            return jj_error(c, n->line, "filter '%s': the test name must be a string", n->name);
        }
        tn.name = jinja_str(c, args[a0].u.s.p, args[a0].u.s.n).u.s.p;
    }
    for (size_t i = 0; !rc && i < items.u.l->n; i++) {
        jinja_val v = by_attr ? attr_path(items.u.l->v[i], args[0]) : items.u.l->v[i];
        bool t = jj_truthy(v);
        if (nargs > a0) {
            rc = jj_test_apply(c, &tn, v, args + a0 + 1, nargs - a0 - 1, &t);
        }
        if (!rc && t == keep) {
            jinja_list_push(c, r, items.u.l->v[i]);
        }
    }
    *out = r;
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

static int map_filter(jinja_ctx *c, const jinja_node *n, jinja_val seq, jinja_val *args,
                      size_t nargs, const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out)
{
    jinja_val items, r = jinja_list_new(c);
    jinja_val attr = kwarg(kw, kwv, nkw, "attribute", NULL, 0, 0, jj_undefined());
    jinja_val dflt = kwarg(kw, kwv, nkw, "default", NULL, 0, 0, jj_undefined());
    int rc = as_list(c, n, seq, &items);
    jinja_node fn = *n;
    if (attr.type == JINJA_UNDEFINED) {
        if (nargs < 1 || args[0].type != JINJA_STR) {
            return jj_error(c, n->line, "map needs attribute= or a filter name");
        }
        fn.name = jinja_str(c, args[0].u.s.p, args[0].u.s.n).u.s.p;
    }
    for (size_t i = 0; !rc && i < items.u.l->n; i++) {
        jinja_val v = items.u.l->v[i];
        if (attr.type != JINJA_UNDEFINED) {
            v = attr_path(v, attr);
            v = v.type == JINJA_UNDEFINED ? dflt : v;
        } else {
            rc = jj_filter_apply(c, &fn, v, args + 1, nargs - 1, NULL, NULL, 0, &v);
        }
        jinja_list_push(c, r, v);
    }
    *out = r;
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

static int sort_filter(jinja_ctx *c, const jinja_node *n, jinja_val seq, bool reverse,
                       jinja_val attr, jinja_val *out)
{
    jinja_val items, r = jinja_list_new(c);
    int rc = as_list(c, n, seq, &items);
    for (size_t i = 0; !rc && i < items.u.l->n; i++) {
        jinja_list_push(c, r, items.u.l->v[i]);
    }
    for (size_t i = 1; !rc && r.type == JINJA_LIST && i < r.u.l->n; i++) { /* stable */
        for (size_t j = i; j > 0; j--) {
            jinja_val *v = r.u.l->v;
            jinja_val a = attr.type == JINJA_UNDEFINED ? v[j - 1] : attr_path(v[j - 1], attr);
            jinja_val b = attr.type == JINJA_UNDEFINED ? v[j] : attr_path(v[j], attr);
            int cmp = 0;
            if ((rc = jj_compare(c, n->line, a, b, &cmp)) || (reverse ? cmp >= 0 : cmp <= 0)) {
                break;
            }
            jinja_val t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    }
    *out = r;
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

static int indent_filter(jinja_ctx *c, jinja_val s, int64_t width, bool first, jinja_val *out)
{
    jj_buf b = {0};
    int rc = 0;
    char pad[64];
    width = width < 0 ? 0 : width > 63 ? 63 : width;
    memset(pad, ' ', (size_t)width);
    for (size_t i = 0; i < s.u.s.n && !rc; i++) {
        bool line_start = i == 0 ? first : s.u.s.p[i - 1] == '\n';
        if (line_start && s.u.s.p[i] != '\n') {
            rc = jj_buf_put(c, &b, pad, (size_t)width);
        }
        rc = rc ? rc : jj_buf_put(c, &b, s.u.s.p + i, 1);
    }
    *out = jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return rc;
}

static int num_filter(jinja_ctx *c, const char *f, jinja_val v, jinja_val *args, size_t nargs,
                      jinja_val *out)
{
    if (!strcmp(f, "int")) {
        jinja_val d = nargs ? args[0] : jinja_int(0);
        if (v.type == JINJA_INT || v.type == JINJA_BOOL) {
            *out = jinja_int(v.type == JINJA_INT ? v.u.i : v.u.b);
        } else if (v.type == JINJA_FLOAT) {
            *out = jinja_int((int64_t)v.u.f);
        } else if (v.type == JINJA_STR) {
            char buf[64], *end = NULL;
            size_t k = KS_MIN(v.u.s.n, sizeof buf - 1);
            memcpy(buf, v.u.s.p, k);
            buf[k] = 0;
            double x = strtod(buf, &end);
            *out = end != buf && *end == 0 ? jinja_int((int64_t)x) : d;
        } else {
            *out = d;
        }
    } else if (!strcmp(f, "float")) {
        *out = v.type == JINJA_INT     ? jinja_float((double)v.u.i)
               : v.type == JINJA_FLOAT ? v
               : nargs                 ? args[0]
                                       : jinja_float(0.0);
    } else if (!strcmp(f, "abs")) {
        *out = v.type == JINJA_INT     ? jinja_int(v.u.i < 0 ? -v.u.i : v.u.i)
               : v.type == JINJA_FLOAT ? jinja_float(fabs(v.u.f))
                                       : v;
    } else { /* round(precision=0): Python rounds half to even, Jinja's 'common' half away */
        int64_t prec = nargs && args[0].type == JINJA_INT ? args[0].u.i : 0;
        double x = v.type == JINJA_INT ? (double)v.u.i : v.type == JINJA_FLOAT ? v.u.f : 0.0;
        double m = pow(10.0, (double)prec);
        *out = jinja_float(round(x * m) / m);
    }
    (void)c;
    return 0;
}

static int reduce_filter(jinja_ctx *c, const jinja_node *n, jinja_val seq, jinja_val *out)
{
    jinja_val items;
    int rc = as_list(c, n, seq, &items);
    const char *f = n->name;
    if (rc) {
        return rc;
    }
    if (!strcmp(f, "sum")) {
        jinja_val acc = jinja_int(0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jinja_val x = items.u.l->v[i];
            if (x.type == JINJA_FLOAT || acc.type == JINJA_FLOAT) {
                acc = jinja_float((acc.type == JINJA_FLOAT ? acc.u.f : (double)acc.u.i) +
                                  (x.type == JINJA_FLOAT ? x.u.f : (double)x.u.i));
            } else if (x.type == JINJA_INT) {
                acc = jinja_int(acc.u.i + x.u.i);
            } else {
                return jj_error(c, n->line, "sum: cannot add %s", jj_type_name(x));
            }
        }
        *out = acc;
        return 0;
    }
    *out = jj_undefined();
    for (size_t i = 0; i < items.u.l->n; i++) {
        int cmp = 0;
        if (i && (rc = jj_compare(c, n->line, items.u.l->v[i], *out, &cmp))) {
            return rc;
        }
        if (i == 0 || (f[1] == 'i' ? cmp < 0 : cmp > 0)) {
            *out = items.u.l->v[i];
        }
    }
    return 0;
}

static int str_filter(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args,
                      size_t nargs, const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out,
                      bool *found)
{
    const char *f = n->name;
    jinja_val s;
    *found = true;
    if (!strcmp(f, "trim") || !strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "title") ||
        !strcmp(f, "capitalize") || !strcmp(f, "replace") || !strcmp(f, "indent")) {
        int rc = to_str_val(c, in, &s);
        if (rc) {
            return rc;
        }
        if (f[0] == 't' && f[1] == 'r') {
            bool dummy;
            return jj_method_call(c, n->line, s, "strip", 5, args, nargs, out, &dummy);
        }
        if (f[0] == 'r') {
            if (nargs < 2 || args[0].type != JINJA_STR || args[1].type != JINJA_STR) {
                return jj_error(c, n->line, "replace needs two strings");
            }
            *out = jj_str_replace(c, s, args[0], args[1],
                                  nargs > 2 && args[2].type == JINJA_INT ? args[2].u.i : -1);
            return 0;
        }
        if (f[0] == 'i') {
            jinja_val w = kwarg(kw, kwv, nkw, "width", args, nargs, 0, jinja_int(4));
            jinja_val first = kwarg(kw, kwv, nkw, "first", args, nargs, 1, jinja_bool(false));
            return indent_filter(c, s, w.type == JINJA_INT ? w.u.i : 4, jj_truthy(first), out);
        }
        *out = jj_str_case(c, s, f[0]);
        return 0;
    }
    if (!strcmp(f, "string")) {
        return to_str_val(c, in, out);
    }
    if (!strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape")) {
        *out = in; /* autoescape is off for chat templates */
        return 0;
    }
    *found = false;
    return 0;
}

static int json_filter(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args,
                       size_t nargs, const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out)
{
    jinja_val ind = kwarg(kw, kwv, nkw, "indent", args, nargs, 0, jinja_none());
    jinja_val sort = kwarg(kw, kwv, nkw, "sort_keys", NULL, 0, 0, jinja_bool(false));
    jj_buf b = {0};
    int indent = ind.type == JINJA_INT ? (int)KS_MIN(KS_MAX(ind.u.i, 0), 32) : -1;
    int rc = jj_to_json(c, n->line, in, indent, jj_truthy(sort), &b);
    *out = jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return rc;
}

static int length_of(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *out)
{
    switch (in.type) {
    case JINJA_STR:
        *out = jinja_int((int64_t)jj_utf8_len(in.u.s.p, in.u.s.n));
        return 0;
    case JINJA_LIST:
        *out = jinja_int((int64_t)in.u.l->n);
        return 0;
    case JINJA_DICT:
        *out = jinja_int((int64_t)in.u.d->n);
        return 0;
    case JINJA_UNDEFINED:
        *out = jinja_int(0);
        return 0;
    default:
        return jj_error(c, n->line, "object of type %s has no length", jj_type_name(in));
    }
}

static int seq_filter(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args,
                      size_t nargs, const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out)
{
    const char *f = n->name;
    jinja_val items;
    int rc = as_list(c, n, in, &items);
    if (rc) {
        return rc;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        size_t len = items.u.l->n;
        *out = len ? items.u.l->v[f[0] == 'f' ? 0 : len - 1] : jj_undefined();
        return 0;
    }
    if (!strcmp(f, "join")) {
        jinja_val sep = kwarg(kw, kwv, nkw, "d", args, nargs, 0, jj_str_take("", 0));
        jinja_val attr = kwarg(kw, kwv, nkw, "attribute", args, nargs, 1, jj_undefined());
        jj_buf b = {0};
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            jinja_val v =
                attr.type != JINJA_UNDEFINED ? attr_path(items.u.l->v[i], attr) : items.u.l->v[i];
            rc = i && sep.type == JINJA_STR ? jj_buf_put(c, &b, sep.u.s.p, sep.u.s.n) : 0;
            rc = rc ? rc : jj_to_str(c, v, &b);
        }
        *out = jinja_str(c, b.p ? b.p : "", b.n);
        free(b.p);
        return rc;
    }
    jinja_val r = jinja_list_new(c);
    bool rev = !strcmp(f, "reverse");
    for (size_t i = 0; i < items.u.l->n; i++) {
        jinja_val v = items.u.l->v[rev ? items.u.l->n - 1 - i : i];
        bool dup = false;
        for (size_t k = 0; !strcmp(f, "unique") && k < r.u.l->n && !dup; k++) {
            dup = jj_equal(r.u.l->v[k], v);
        }
        if (!dup) {
            jinja_list_push(c, r, v);
        }
    }
    if (rev && in.type == JINJA_STR) {
        jj_buf b = {0};
        for (size_t i = 0; i < r.u.l->n && !rc; i++) {
            rc = jj_buf_put(c, &b, r.u.l->v[i].u.s.p, r.u.l->v[i].u.s.n);
        }
        r = jinja_str(c, b.p ? b.p : "", b.n);
        free(b.p);
    }
    *out = r;
    return rc ? rc : c->oom ? KS_ERR_FULL : 0;
}

static int dict_filter(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *out)
{
    if (in.type == JINJA_UNDEFINED) {
        *out = jinja_list_new(c);
        return 0;
    }
    if (in.type != JINJA_DICT) {
        return jj_error(c, n->line, "filter '%s' needs a mapping, got %s", n->name,
                        jj_type_name(in));
    }
    jinja_val l = jinja_list_new(c);
    for (size_t i = 0; i < in.u.d->n; i++) {
        jinja_val e = jinja_list_new(c);
        jinja_list_push(c, e, in.u.d->k[i]);
        jinja_list_push(c, e, in.u.d->v[i]);
        if (e.type == JINJA_LIST) {
            e.u.l->is_tuple = true;
        }
        jinja_list_push(c, l, e);
    }
    if (!strcmp(n->name, "dictsort")) {
        for (size_t i = 1; i < l.u.l->n; i++) {
            for (size_t j = i; j > 0; j--) {
                int cmp = 0;
                jinja_val *v = l.u.l->v;
                int rc = jj_compare(c, n->line, v[j - 1].u.l->v[0], v[j].u.l->v[0], &cmp);
                if (rc || cmp <= 0) {
                    if (rc) {
                        return rc;
                    }
                    break;
                }
                jinja_val t = v[j];
                v[j] = v[j - 1];
                v[j - 1] = t;
            }
        }
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

int jj_filter_apply(jinja_ctx *c, const jinja_node *n, jinja_val in, jinja_val *args, size_t nargs,
                    const char **kw, jinja_val *kwv, size_t nkw, jinja_val *out)
{
    const char *f = n->name;
    bool found = false;
    int rc = str_filter(c, n, in, args, nargs, kw, kwv, nkw, out, &found);
    if (rc || found) {
        return rc;
    }
    if (!strcmp(f, "tojson")) {
        return json_filter(c, n, in, args, nargs, kw, kwv, nkw, out);
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        return length_of(c, n, in, out);
    }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jinja_val d = kwarg(kw, kwv, nkw, "default_value", args, nargs, 0, jj_str_take("", 0));
        jinja_val boolean = kwarg(kw, kwv, nkw, "boolean", args, nargs, 1, jinja_bool(false));
        bool use = in.type == JINJA_UNDEFINED || (jj_truthy(boolean) && !jj_truthy(in));
        *out = use ? d : in;
        return 0;
    }
    if (!strcmp(f, "items") || !strcmp(f, "dictsort")) {
        return dict_filter(c, n, in, out);
    }
    if (!strcmp(f, "list")) {
        return seq_filter(c, n, in, NULL, 0, NULL, NULL, 0, out);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last") || !strcmp(f, "join") || !strcmp(f, "reverse") ||
        !strcmp(f, "unique")) {
        return seq_filter(c, n, in, args, nargs, kw, kwv, nkw, out);
    }
    if (!strcmp(f, "int") || !strcmp(f, "float") || !strcmp(f, "abs") || !strcmp(f, "round")) {
        return num_filter(c, f, in, args, nargs, out);
    }
    if (!strcmp(f, "sum") || !strcmp(f, "min") || !strcmp(f, "max")) {
        return reduce_filter(c, n, in, out);
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") ||
        !strcmp(f, "rejectattr")) {
        return select_filter(c, n, in, args, nargs, strstr(f, "attr") != NULL, f[0] == 's', out);
    }
    if (!strcmp(f, "map")) {
        return map_filter(c, n, in, args, nargs, kw, kwv, nkw, out);
    }
    if (!strcmp(f, "sort")) {
        jinja_val rev = kwarg(kw, kwv, nkw, "reverse", args, nargs, 0, jinja_bool(false));
        jinja_val attr = kwarg(kw, kwv, nkw, "attribute", args, nargs, 2, jj_undefined());
        return sort_filter(c, n, in, jj_truthy(rev), attr, out);
    }
    return jj_error(c, n->line, "unknown filter '%s'", f);
}

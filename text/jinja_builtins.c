/* jinja_builtins.c - the tests, global functions and Python methods chat templates use:
 * tests (defined, none, string, mapping, iterable, sequence, number, equalto, ...), globals
 * (range, namespace, raise_exception, strftime_now, dict) and methods of strings (strip,
 * split, startswith, replace, ...), dicts (items, keys, values, get) and lists (append).
 * Filters are in jinja_filters.c. Semantics follow Python/Jinja2; strings are UTF-8 and
 * counted in code points where Python would count characters.
 */
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

static bool name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

static bool is_space(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f);
}

/* ---- tests ---- */

/* Tests of one value; *known false when t is not one of them. */
static int type_test(jinja_ctx *c, const jinja_node *n, jinja_val v, bool *out, bool *known)
{
    const char *t = n->name;
    jinja_type ty = v.type;
    *known = true;
    if (!strcmp(t, "defined") || !strcmp(t, "undefined")) {
        *out = (ty != JINJA_UNDEFINED) == (t[0] == 'd');
    } else if (!strcmp(t, "none")) {
        *out = ty == JINJA_NONE;
    } else if (!strcmp(t, "string")) {
        *out = ty == JINJA_STR;
    } else if (!strcmp(t, "mapping")) {
        *out = ty == JINJA_DICT;
    } else if (!strcmp(t, "iterable") || !strcmp(t, "sequence")) {
        *out = ty == JINJA_STR || ty == JINJA_LIST || ty == JINJA_DICT;
    } else if (!strcmp(t, "number")) {
        *out = ty == JINJA_INT || ty == JINJA_FLOAT;
    } else if (!strcmp(t, "integer") || !strcmp(t, "float") || !strcmp(t, "boolean")) {
        *out = ty == (t[0] == 'i' ? JINJA_INT : t[0] == 'f' ? JINJA_FLOAT : JINJA_BOOL);
    } else if (!strcmp(t, "true") || !strcmp(t, "false")) {
        *out = ty == JINJA_BOOL && v.u.b == (t[0] == 't');
    } else if (!strcmp(t, "callable")) {
        *out = ty == JINJA_MACRO || ty == JINJA_FUNC;
    } else if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (ty != JINJA_INT) {
            return jj_error(c, n->line, "test '%s' needs an integer", t);
        }
        *out = (v.u.i & 1) == (t[0] == 'o');
    } else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        *out = ty == JINJA_STR;
        for (size_t i = 0; *out && i < v.u.s.n; i++) {
            char ch = v.u.s.p[i];
            *out = t[0] == 'l' ? !(ch >= 'A' && ch <= 'Z') : !(ch >= 'a' && ch <= 'z');
        }
    } else {
        *known = false;
    }
    return 0;
}

/* Tests comparing the value with an argument (equalto, lt, in, divisibleby, ...). */
static int arg_test(jinja_ctx *c, const jinja_node *n, jinja_val v, jinja_val b, bool *out)
{
    const char *t = n->name;
    int cmp = 0, rc = 0;
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==") || !strcmp(t, "sameas")) {
        *out = jj_equal(v, b);
    } else if (!strcmp(t, "ne") || !strcmp(t, "!=")) {
        *out = !jj_equal(v, b);
    } else if (!strcmp(t, "lt") || !strcmp(t, "gt") || !strcmp(t, "le") || !strcmp(t, "ge") ||
               !strcmp(t, "lessthan") || !strcmp(t, "greaterthan")) {
        rc = jj_compare(c, n->line, v, b, &cmp);
        bool or_equal = t[1] == 'e' && t[2] == 0;
        *out = t[0] == 'l' ? (or_equal ? cmp <= 0 : cmp < 0) : (or_equal ? cmp >= 0 : cmp > 0);
    } else if (!strcmp(t, "in")) {
        *out = false;
        if (b.type == JINJA_LIST) {
            for (size_t i = 0; i < b.u.l->n && !*out; i++) {
                *out = jj_equal(v, b.u.l->v[i]);
            }
        } else if (b.type == JINJA_DICT) {
            *out = v.type == JINJA_STR && jj_dict_get(b, v.u.s.p, v.u.s.n);
        } else if (b.type == JINJA_STR && v.type == JINJA_STR) {
            *out = !v.u.s.n || memmem(b.u.s.p, b.u.s.n, v.u.s.p, v.u.s.n);
        }
    } else if (!strcmp(t, "divisibleby")) {
        if (v.type != JINJA_INT || b.type != JINJA_INT || b.u.i == 0) {
            return jj_error(c, n->line, "divisibleby needs non-zero integers");
        }
        *out = v.u.i % b.u.i == 0;
    } else {
        return jj_error(c, n->line, "unknown test '%s'", t);
    }
    return rc;
}

int jj_test_apply(jinja_ctx *c, const jinja_node *n, jinja_val v, jinja_val *args, size_t nargs,
                  bool *out)
{
    bool known = false;
    int rc = type_test(c, n, v, out, &known);
    if (rc || known) {
        return rc;
    }
    if (nargs < 1) {
        return jj_error(c, n->line, "unknown test '%s' (or missing argument)", n->name);
    }
    return arg_test(c, n, v, args[0], out);
}

/* ---- globals ---- */

static const char *const func_names[] = {NULL,           "range", "namespace", "raise_exception",
                                         "strftime_now", "dict"};

jinja_val jj_global_func(const char *name, size_t n)
{
    for (int i = 1; i < (int)KS_ARRAY_LEN(func_names); i++) {
        if (name_is(name, n, func_names[i])) {
            jinja_val v = {.type = JINJA_FUNC, .u.fn = i};
            return v;
        }
    }
    return jj_undefined();
}

static int fn_range(jinja_ctx *c, int line, jinja_val *args, size_t nargs, jinja_val *out)
{
    int64_t a[3] = {0, 0, 1};
    if (nargs < 1 || nargs > 3) {
        return jj_error(c, line, "range() takes 1 to 3 arguments");
    }
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].type != JINJA_INT) {
            return jj_error(c, line, "range() arguments must be integers");
        }
        a[nargs == 1 ? 1 : i] = args[i].u.i;
    }
    if (a[2] == 0) {
        return jj_error(c, line, "range() step must not be zero");
    }
    if ((a[2] > 0 ? (a[1] - a[0]) / a[2] : (a[0] - a[1]) / -a[2]) > 100000) {
        return jj_error(c, line, "range() too long (at most 100000 items)");
    }
    jinja_val l = jinja_list_new(c);
    for (int64_t i = a[0]; a[2] > 0 ? i < a[1] : i > a[1]; i += a[2]) {
        jinja_list_push(c, l, jinja_int(i));
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

static int fn_strftime(jinja_ctx *c, int line, jinja_val *args, size_t nargs, jinja_val *out)
{
    if (nargs != 1 || args[0].type != JINJA_STR) {
        return jj_error(c, line, "strftime_now() takes one format string");
    }
    char fmt[128], buf[256];
    struct tm tm;
    if (args[0].u.s.n >= sizeof fmt) {
        return jj_error(c, line, "strftime_now() format too long");
    }
    memcpy(fmt, args[0].u.s.p, args[0].u.s.n);
    fmt[args[0].u.s.n] = 0;
    localtime_r(&c->now, &tm);
    size_t k = strftime(buf, sizeof buf, fmt, &tm);
    *out = jinja_str(c, buf, k);
    return 0;
}

int jj_func_call(jinja_ctx *c, int line, int fn, jinja_val *args, size_t nargs, const char **kw,
                 jinja_val *kwv, size_t nkw, jinja_val *out)
{
    switch (fn) {
    case JJ_FN_RANGE:
        return fn_range(c, line, args, nargs, out);
    case JJ_FN_STRFTIME:
        return fn_strftime(c, line, args, nargs, out);
    case JJ_FN_RAISE:
        if (nargs >= 1 && args[0].type == JINJA_STR) {
            return jj_error(c, line, "raise_exception: %.*s", (int)KS_MIN(args[0].u.s.n, 300),
                            args[0].u.s.p);
        }
        return jj_error(c, line, "raise_exception called");
    case JJ_FN_NAMESPACE:
    case JJ_FN_DICT: {
        jinja_val d = jinja_dict_new(c);
        if (d.type != JINJA_DICT) {
            return KS_ERR_FULL;
        }
        d.u.d->is_namespace = fn == JJ_FN_NAMESPACE;
        for (size_t i = 0; i < nargs; i++) { /* namespace(some_dict) copies it */
            for (size_t k = 0; args[i].type == JINJA_DICT && k < args[i].u.d->n; k++) {
                jj_dict_put(c, d.u.d, args[i].u.d->k[k], args[i].u.d->v[k]);
            }
        }
        for (size_t i = 0; i < nkw; i++) {
            jj_dict_put(c, d.u.d, jinja_cstr(c, kw[i]), kwv[i]);
        }
        *out = d;
        return c->oom ? KS_ERR_FULL : 0;
    }
    default:
        return jj_error(c, line, "unknown function");
    }
}

/* ---- methods ---- */

static bool in_set(unsigned char ch, jinja_val chars)
{
    if (chars.type != JINJA_STR) {
        return is_space(ch);
    }
    return memchr(chars.u.s.p, ch, chars.u.s.n) != NULL;
}

static jinja_val strip(jinja_val s, jinja_val chars, bool left, bool right)
{
    size_t a = 0, b = s.u.s.n;
    while (left && a < b && in_set((unsigned char)s.u.s.p[a], chars)) {
        a++;
    }
    while (right && b > a && in_set((unsigned char)s.u.s.p[b - 1], chars)) {
        b--;
    }
    return jj_str_take(s.u.s.p + a, b - a);
}

static int str_split(jinja_ctx *c, int line, jinja_val s, jinja_val *args, size_t nargs,
                     jinja_val *out)
{
    jinja_val l = jinja_list_new(c);
    jinja_val sep = nargs >= 1 ? args[0] : jinja_none();
    int64_t maxsplit = nargs >= 2 && args[1].type == JINJA_INT ? args[1].u.i : -1;
    const char *p = s.u.s.p, *end = s.u.s.p + s.u.s.n;
    if (sep.type == JINJA_STR && sep.u.s.n == 0) {
        return jj_error(c, line, "split(): empty separator");
    }
    if (sep.type != JINJA_STR) { /* runs of whitespace, ends ignored */
        while (p < end) {
            while (p < end && is_space((unsigned char)*p)) {
                p++;
            }
            if (p == end) {
                break;
            }
            const char *q = p;
            while (q < end && (maxsplit == 0 || !is_space((unsigned char)*q))) {
                q++;
            }
            jinja_list_push(c, l, jj_str_take(p, (size_t)(q - p)));
            maxsplit -= maxsplit > 0;
            p = q;
        }
    } else {
        for (;;) {
            const char *q =
                maxsplit == 0 ? NULL : memmem(p, (size_t)(end - p), sep.u.s.p, sep.u.s.n);
            if (!q) {
                jinja_list_push(c, l, jj_str_take(p, (size_t)(end - p)));
                break;
            }
            jinja_list_push(c, l, jj_str_take(p, (size_t)(q - p)));
            p = q + sep.u.s.n;
            maxsplit -= maxsplit > 0;
        }
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

static bool affix(jinja_val s, jinja_val a, bool start)
{
    if (a.type == JINJA_LIST) {
        for (size_t i = 0; i < a.u.l->n; i++) {
            if (affix(s, a.u.l->v[i], start)) {
                return true;
            }
        }
        return false;
    }
    if (a.type != JINJA_STR || a.u.s.n > s.u.s.n) {
        return false;
    }
    return memcmp(start ? s.u.s.p : s.u.s.p + s.u.s.n - a.u.s.n, a.u.s.p, a.u.s.n) == 0;
}

static int str_method(jinja_ctx *c, int line, jinja_val s, const char *m, size_t mn,
                      jinja_val *args, size_t nargs, jinja_val *out, bool *found)
{
    jinja_val a0 = nargs ? args[0] : jinja_none();
    *found = true;
    if (name_is(m, mn, "strip") || name_is(m, mn, "lstrip") || name_is(m, mn, "rstrip")) {
        *out = strip(s, a0, m[0] != 'r', m[0] != 'l');
    } else if (name_is(m, mn, "split")) {
        return str_split(c, line, s, args, nargs, out);
    } else if (name_is(m, mn, "startswith") || name_is(m, mn, "endswith")) {
        *out = jinja_bool(affix(s, a0, m[0] == 's'));
    } else if (name_is(m, mn, "upper") || name_is(m, mn, "lower") || name_is(m, mn, "title") ||
               name_is(m, mn, "capitalize")) {
        *out = jj_str_case(c, s, m[0]);
    } else if (name_is(m, mn, "replace")) {
        if (nargs < 2 || args[0].type != JINJA_STR || args[1].type != JINJA_STR) {
            return jj_error(c, line, "replace() takes two strings");
        }
        *out = jj_str_replace(c, s, args[0], args[1],
                              nargs > 2 && args[2].type == JINJA_INT ? args[2].u.i : -1);
    } else if (name_is(m, mn, "find") || name_is(m, mn, "count")) {
        if (a0.type != JINJA_STR) {
            return jj_error(c, line, "%.*s() takes a string", (int)mn, m);
        }
        const char *p = a0.u.s.n ? memmem(s.u.s.p, s.u.s.n, a0.u.s.p, a0.u.s.n) : s.u.s.p;
        if (m[0] == 'f') {
            *out = jinja_int(p ? (int64_t)jj_utf8_len(s.u.s.p, (size_t)(p - s.u.s.p)) : -1);
        } else {
            int64_t k = 0;
            for (const char *q = s.u.s.p; a0.u.s.n && q && (size_t)(q - s.u.s.p) <= s.u.s.n;) {
                q = memmem(q, s.u.s.n - (size_t)(q - s.u.s.p), a0.u.s.p, a0.u.s.n);
                k += q != NULL;
                q = q ? q + a0.u.s.n : NULL;
            }
            *out = jinja_int(k);
        }
    } else if (name_is(m, mn, "join")) {
        jj_buf b = {0};
        int rc = 0;
        for (size_t i = 0; a0.type == JINJA_LIST && i < a0.u.l->n && !rc; i++) {
            rc = i ? jj_buf_put(c, &b, s.u.s.p, s.u.s.n) : 0;
            rc = rc ? rc : jj_to_str(c, a0.u.l->v[i], &b);
        }
        *out = jinja_str(c, b.p ? b.p : "", b.n);
        free(b.p);
        return rc;
    } else {
        *found = false;
    }
    return 0;
}

static int dict_method(jinja_ctx *c, jinja_val d, const char *m, size_t mn, jinja_val *args,
                       size_t nargs, jinja_val *out, bool *found)
{
    *found = true;
    if (name_is(m, mn, "get")) {
        jinja_val *v = nargs && args[0].type == JINJA_STR
                           ? jj_dict_get(d, args[0].u.s.p, args[0].u.s.n)
                           : NULL;
        *out = v ? *v : nargs > 1 ? args[1] : jinja_none();
        return 0;
    }
    bool items = name_is(m, mn, "items"), keys = name_is(m, mn, "keys");
    if (!items && !keys && !name_is(m, mn, "values")) {
        *found = false;
        return 0;
    }
    jinja_val l = jinja_list_new(c);
    for (size_t i = 0; i < d.u.d->n; i++) {
        jinja_val e = keys ? d.u.d->k[i] : d.u.d->v[i];
        if (items) {
            e = jinja_list_new(c);
            jinja_list_push(c, e, d.u.d->k[i]);
            jinja_list_push(c, e, d.u.d->v[i]);
            e.u.l->is_tuple = e.type == JINJA_LIST;
        }
        jinja_list_push(c, l, e);
    }
    *out = l;
    return c->oom ? KS_ERR_FULL : 0;
}

int jj_method_call(jinja_ctx *c, int line, jinja_val obj, const char *name, size_t name_len,
                   jinja_val *args, size_t nargs, jinja_val *out, bool *found)
{
    *found = false;
    if (obj.type == JINJA_STR) {
        return str_method(c, line, obj, name, name_len, args, nargs, out, found);
    }
    if (obj.type == JINJA_DICT && !obj.u.d->is_namespace) {
        return dict_method(c, obj, name, name_len, args, nargs, out, found);
    }
    if (obj.type == JINJA_LIST && name_is(name, name_len, "append") && nargs == 1) {
        jinja_list_push(c, obj, args[0]);
        *out = jinja_none();
        *found = true;
        return c->oom ? KS_ERR_FULL : 0;
    }
    if (obj.type == JINJA_UNDEFINED) {
        return jj_error(c, line, "cannot call method '%.*s' of an undefined value", (int)name_len,
                        name);
    }
    return 0;
}

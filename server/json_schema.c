/* json_schema.c - JSON Schema -> GBNF (see json_schema.h for what is supported).
 *
 * A recursive visit turns each schema into a grammar expression. Objects, arrays and $ref
 * targets become named rules (g<N>-<hint>), so expressions stay short and a $ref used many
 * times is converted once. Fixed rules for JSON's primitives (space, string, number, value,
 * date, uuid...) are appended to every grammar; the matcher only ever expands the reachable
 * ones. Every rejection sets d->key to the JSON pointer of the offending place.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_schema.h"
#include "json_schema_int.h"
#include "kvserve/grammar.h"

#define JS_MAX_DEPTH 64
#define JS_MAX_REFS 256
#define JS_PTR 512

static const char js_prims[] =
    "space ::= | \" \" | \"\\n\" [ \\t]{0,8}\n"
    "boolean ::= (\"true\" | \"false\") space\n"
    "null ::= \"null\" space\n"
    "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "string ::= \"\\\"\" char* \"\\\"\" space\n"
    "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) space\n"
    "number ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})? "
    "space\n"
    "value ::= object | array | string | number | boolean | null\n"
    "object ::= \"{\" space (string \":\" space value (\",\" space string \":\" space value)*)? "
    "\"}\" space\n"
    "array ::= \"[\" space (value (\",\" space value)*)? \"]\" space\n"
    /* days by month; February stops at 28 since leap years are beyond a grammar's reach */
    "date ::= [0-9]{4} \"-\" ((\"0\" [13578] | \"1\" [02]) \"-\" (\"0\" [1-9] | [12] [0-9] | "
    "\"3\" [01]) | (\"0\" [469] | \"11\") \"-\" (\"0\" [1-9] | [12] [0-9] | \"30\") | \"02-\" "
    "(\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8]))\n"
    "time ::= ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? "
    "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])\n"
    "date-time ::= date \"T\" time\n"
    "uuid ::= [0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" "
    "[0-9a-f]{12}\n";

/* ---------------------------------------------------------------- converter state */

typedef struct js_conv {
    const json_t *root;
    js_buf rules; /* "name ::= body\n" lines */
    int n_rules;
    const json_t *active[JS_MAX_DEPTH]; /* $ref targets being converted (recursion check) */
    int n_active;
    const json_t *ref_target[JS_MAX_REFS];
    char ref_rule[JS_MAX_REFS][48];
    int n_refs;
    int depth;
    ks_diag *d;
} js_conv;

static int js_err(js_conv *c, int status, const char *ptr, const char *fmt, ...) KS_PRINTF(4, 5);

static int js_err(js_conv *c, int status, const char *ptr, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return ks_diag_key(c->d, status, ptr[0] ? ptr : "/", "%s", what);
}

/* parent + "/" + key with JSON pointer escaping (~0, ~1). */
static void ptr_join(char *out, const char *parent, const char *key)
{
    size_t n = (size_t)snprintf(out, JS_PTR, "%s/", parent);
    for (; *key && n + 3 < JS_PTR; key++) {
        if (*key == '~' || *key == '/') {
            out[n++] = '~';
            out[n++] = *key == '~' ? '0' : '1';
        } else {
            out[n++] = *key;
        }
    }
    out[n < JS_PTR ? n : JS_PTR - 1] = 0;
}

/* A GBNF literal of the bytes s[0..n). */
static void add_literal(js_buf *b, const char *s, size_t n)
{
    js_add(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            js_printf(b, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7F)
            js_printf(b, "\\x%02X", ch);
        else
            js_addn(b, s + i, 1);
    }
    js_add(b, "\"");
}

/* The literal of a JSON value in compact form, then space. */
static int add_json_literal(js_conv *c, js_buf *b, const json_t *v, const char *ptr)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) return js_err(c, KS_ERR_INVALID, ptr, "value cannot be encoded");
    add_literal(b, s, strlen(s));
    js_add(b, " space");
    free(s);
    return 0;
}

/* Appends "name ::= body" and writes the name into out. */
static void add_rule(js_conv *c, const char *hint, const js_buf *body, js_buf *out)
{
    char name[48];
    int n = snprintf(name, sizeof(name), "g%d-", ++c->n_rules);
    for (const char *h = hint; *h && n < (int)sizeof(name) - 1; h++)
        name[n++] = (*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9')
                        ? *h
                        : '-';
    name[n] = 0;
    if (body->oom) c->rules.oom = 1; /* an incomplete body must fail the conversion */
    js_printf(&c->rules, "%s ::= ", name);
    js_addn(&c->rules, body->s ? body->s : "", body->n);
    js_add(&c->rules, "\n");
    js_add(out, name);
}

static int visit(js_conv *c, const json_t *s, const char *ptr, const char *hint, js_buf *out);

/* ---------------------------------------------------------------- keywords */

static const char *const js_annotations[] = {"title",    "description", "default",  "examples",
                                             "$schema",  "$id",         "$comment", "deprecated",
                                             "readOnly", "writeOnly",   "$defs",    "definitions"};
static const char *const js_keywords[] = {"type",
                                          "properties",
                                          "required",
                                          "additionalProperties",
                                          "items",
                                          "minItems",
                                          "maxItems",
                                          "enum",
                                          "const",
                                          "minLength",
                                          "maxLength",
                                          "format",
                                          "minimum",
                                          "maximum",
                                          "exclusiveMinimum",
                                          "exclusiveMaximum",
                                          "anyOf",
                                          "oneOf",
                                          "allOf",
                                          "$ref"};

static int in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

static int check_keywords(js_conv *c, const json_t *s, const char *ptr)
{
    const char *k;
    json_t *v;
    int has_ref = json_object_get(s, "$ref") != NULL;
    json_object_foreach((json_t *)s, k, v)
    {
        char at[JS_PTR];
        ptr_join(at, ptr, k);
        if (in_list(k, js_annotations, KS_ARRAY_LEN(js_annotations))) continue;
        if (!in_list(k, js_keywords, KS_ARRAY_LEN(js_keywords)))
            return js_err(c, KS_ERR_UNSUPPORTED, at, "unsupported JSON Schema keyword '%s'", k);
        if (has_ref && strcmp(k, "$ref"))
            return js_err(c, KS_ERR_UNSUPPORTED, at, "keyword '%s' beside $ref is not supported",
                          k);
    }
    return 0;
}

/* Reads a non-negative integer keyword (absent: *out untouched). */
static int get_count(js_conv *c, const json_t *s, const char *key, const char *ptr, long *out)
{
    json_t *v = json_object_get(s, key);
    if (!v) return 0;
    char at[JS_PTR];
    ptr_join(at, ptr, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return js_err(c, KS_ERR_INVALID, at, "'%s' must be a non-negative integer", key);
    if (json_integer_value(v) > GRAM_MAX_REPEAT)
        return js_err(c, KS_ERR_UNSUPPORTED, at, "'%s' above %d is not supported", key,
                      GRAM_MAX_REPEAT);
    *out = (long)json_integer_value(v);
    return 0;
}

/* ---------------------------------------------------------------- $ref */

static const json_t *resolve_ref(const js_conv *c, const char *ref)
{
    const json_t *cur = c->root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char key[256];
        size_t n = 0;
        for (; *p && *p != '/' && n + 1 < sizeof(key); p++) {
            if (*p == '~' && (p[1] == '0' || p[1] == '1'))
                key[n++] = *++p == '0' ? '~' : '/';
            else
                key[n++] = *p;
        }
        key[n] = 0;
        if (json_is_object(cur))
            cur = json_object_get(cur, key);
        else if (json_is_array(cur))
            cur = json_array_get(cur, strtoul(key, NULL, 10));
        else
            cur = NULL;
        if (!cur) return NULL;
    }
    return *p ? NULL : cur;
}

static int visit_ref(js_conv *c, const json_t *s, const char *ptr, js_buf *out)
{
    char at[JS_PTR];
    ptr_join(at, ptr, "$ref");
    json_t *r = json_object_get(s, "$ref");
    if (!json_is_string(r)) return js_err(c, KS_ERR_INVALID, at, "$ref must be a string");
    const char *ref = json_string_value(r);
    if (ref[0] != '#')
        return js_err(c, KS_ERR_UNSUPPORTED, at, "$ref '%s' is not local (only '#...' refs)", ref);
    const json_t *t = resolve_ref(c, ref);
    if (!t) return js_err(c, KS_ERR_INVALID, at, "$ref '%s' does not resolve", ref);
    for (int i = 0; i < c->n_active; i++)
        if (c->active[i] == t)
            return js_err(c, KS_ERR_UNSUPPORTED, at, "recursive $ref '%s' is not supported", ref);
    for (int i = 0; i < c->n_refs; i++)
        if (c->ref_target[i] == t) {
            js_add(out, c->ref_rule[i]);
            return 0;
        }
    if (c->n_active == JS_MAX_DEPTH || c->n_refs == JS_MAX_REFS)
        return js_err(c, KS_ERR_UNSUPPORTED, at, "too many $refs");
    c->active[c->n_active++] = t;
    js_buf body = {0};
    const char *slash = strrchr(ref, '/');
    int rc = visit(c, t, ref + 1, slash ? slash + 1 : "ref", &body);
    c->n_active--;
    if (!rc) {
        js_buf name = {0};
        add_rule(c, slash ? slash + 1 : "ref", &body, &name);
        if (name.s) {
            snprintf(c->ref_rule[c->n_refs], sizeof(c->ref_rule[0]), "%s", name.s);
            c->ref_target[c->n_refs++] = t;
            js_add(out, name.s);
        }
        free(name.s);
    }
    free(body.s);
    return rc;
}

/* ---------------------------------------------------------------- strings and numbers */

static int visit_string(js_conv *c, const json_t *s, const char *ptr, js_buf *out)
{
    json_t *f = json_object_get(s, "format");
    if (f) {
        char at[JS_PTR];
        ptr_join(at, ptr, "format");
        const char *fs = json_is_string(f) ? json_string_value(f) : "";
        if (strcmp(fs, "date") && strcmp(fs, "time") && strcmp(fs, "date-time") &&
            strcmp(fs, "uuid"))
            return js_err(c, KS_ERR_UNSUPPORTED, at,
                          "unsupported format '%s' (date, time, date-time, uuid are)", fs);
        js_printf(out, "\"\\\"\" %s \"\\\"\" space", fs);
        return 0;
    }
    long min = 0, max = -1;
    int rc = get_count(c, s, "minLength", ptr, &min);
    if (!rc) rc = get_count(c, s, "maxLength", ptr, &max);
    if (rc) return rc;
    if (max >= 0 && max < min)
        return js_err(c, KS_ERR_INVALID, ptr, "maxLength is below minLength");
    if (min == 0 && max < 0)
        js_add(out, "string");
    else if (max < 0)
        js_printf(out, "\"\\\"\" char{%ld,} \"\\\"\" space", min);
    else
        js_printf(out, "\"\\\"\" char{%ld,%ld} \"\\\"\" space", min, max);
    return 0;
}

/* One bound: *has = 1 and *v set when present; exclusive moves it inward for integers. */
static int get_bound(js_conv *c, const json_t *s, const char *key, const char *ptr, int *has,
                     double *v)
{
    json_t *x = json_object_get(s, key);
    if (!x) return 0;
    char at[JS_PTR];
    ptr_join(at, ptr, key);
    if (!json_is_number(x)) return js_err(c, KS_ERR_INVALID, at, "'%s' must be a number", key);
    double d = json_number_value(x);
    if (fabs(d) >= 1e15)
        return js_err(c, KS_ERR_UNSUPPORTED, at, "'%s' beyond 1e15 is not supported", key);
    int is_min = strstr(key, "inimum") != NULL, excl = key[0] == 'e';
    double b = is_min ? (excl ? floor(d) + 1 : ceil(d)) : (excl ? ceil(d) - 1 : floor(d));
    if (!*has || (is_min ? b > *v : b < *v)) *v = b;
    *has = 1;
    return 0;
}

static int visit_number(js_conv *c, const json_t *s, const char *ptr, int integer, js_buf *out)
{
    int has_lo = 0, has_hi = 0, rc;
    double lo = 0, hi = 0;
    if ((rc = get_bound(c, s, "minimum", ptr, &has_lo, &lo)) ||
        (rc = get_bound(c, s, "exclusiveMinimum", ptr, &has_lo, &lo)) ||
        (rc = get_bound(c, s, "maximum", ptr, &has_hi, &hi)) ||
        (rc = get_bound(c, s, "exclusiveMaximum", ptr, &has_hi, &hi)))
        return rc;
    if (!has_lo && !has_hi) {
        js_add(out, integer ? "integer" : "number");
        return 0;
    }
    if (has_lo && has_hi && lo > hi)
        return js_err(c, KS_ERR_INVALID, ptr, "no integer lies between the bounds");
    double fhi = has_hi ? hi - 1 : 0; /* int parts whose fractions stay within the bounds */
    if (!integer && has_lo && lo >= 0 && (!has_hi || fhi >= lo)) {
        js_add(out, "(");
        js_int_range(out, 1, (long long)lo, has_hi, (long long)fhi);
        js_add(out, " (\".\" [0-9]{1,16})?");
        if (has_hi && fhi < hi) {
            js_add(out, " | ");
            js_int_range(out, 1, (long long)hi, 1, (long long)hi);
        }
        js_add(out, ") space");
        return 0;
    }
    js_int_range(out, has_lo, (long long)lo, has_hi, (long long)hi);
    js_add(out, " space");
    return 0;
}

/* ---------------------------------------------------------------- arrays and objects */

static int visit_array(js_conv *c, const json_t *s, const char *ptr, const char *hint, js_buf *out)
{
    long min = 0, max = -1;
    int rc = get_count(c, s, "minItems", ptr, &min);
    if (!rc) rc = get_count(c, s, "maxItems", ptr, &max);
    if (rc) return rc;
    if (max >= 0 && max < min) return js_err(c, KS_ERR_INVALID, ptr, "maxItems is below minItems");
    js_buf item = {0}, body = {0};
    json_t *items = json_object_get(s, "items");
    char at[JS_PTR];
    ptr_join(at, ptr, "items");
    if (items && json_is_array(items))
        rc = js_err(c, KS_ERR_UNSUPPORTED, at, "tuple 'items' (an array) is not supported");
    else if (items)
        rc = visit(c, items, at, "item", &item);
    else
        js_add(&item, "value");
    if (!rc) {
        const char *it = item.s ? item.s : "";
        if (max == 0)
            js_add(&body, "\"[\" space \"]\" space");
        else {
            js_printf(&body, "\"[\" space %s(%s)", min == 0 ? "(" : "", it);
            if (max < 0)
                js_printf(&body, " (\",\" space (%s)){%ld,}", it, min > 0 ? min - 1 : 0);
            else
                js_printf(&body, " (\",\" space (%s)){%ld,%ld}", it, min > 0 ? min - 1 : 0,
                          max - 1);
            js_printf(&body, "%s \"]\" space", min == 0 ? ")?" : "");
        }
        add_rule(c, hint, &body, out);
    }
    free(item.s);
    free(body.s);
    return rc;
}

/* "\"name\"" space ":" space value */
static int prop_kv(js_conv *c, const char *name, const json_t *ps, const char *ptr, js_buf *kv)
{
    char at[JS_PTR], pp[JS_PTR];
    ptr_join(pp, ptr, "properties");
    ptr_join(at, pp, name);
    json_t *js = json_string(name);
    int rc = add_json_literal(c, kv, js, at);
    json_decref(js);
    js_add(kv, " \":\" space ");
    return rc ? rc : visit(c, ps, at, name, kv);
}

/* Assembles the members: required ones in order, then each optional one, then extras. */
static void object_members(js_buf *b, js_buf *req, int n_req, js_buf *opt, int n_opt,
                           const char *extra)
{
    for (int i = 0; i < n_req; i++)
        js_printf(b, "%s(%s)", i ? " \",\" space " : "", req[i].s);
    for (int i = 0; n_req && i < n_opt; i++)
        js_printf(b, " (\",\" space (%s))?", opt[i].s);
    if (n_req && extra) js_printf(b, " (\",\" space %s)*", extra);
    if (n_req || (!n_opt && !extra)) return;
    js_add(b, "(");
    for (int i = 0; i < n_opt; i++) {
        js_printf(b, "%s(%s)", i ? " | " : "", opt[i].s);
        for (int k = i + 1; k < n_opt; k++)
            js_printf(b, " (\",\" space (%s))?", opt[k].s);
        if (extra) js_printf(b, " (\",\" space %s)*", extra);
    }
    if (extra) js_printf(b, "%s%s (\",\" space %s)*", n_opt ? " | " : "", extra, extra);
    js_add(b, ")?");
}

static int required_has(const json_t *req, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(req, i,
                       v) if (json_is_string(v) && !strcmp(json_string_value(v), name)) return 1;
    return 0;
}

static int check_required(js_conv *c, const json_t *req, const json_t *props, int extra,
                          const char *ptr)
{
    char at[JS_PTR];
    ptr_join(at, ptr, "required");
    if (req && !json_is_array(req))
        return js_err(c, KS_ERR_INVALID, at, "'required' must be a list of strings");
    size_t i;
    json_t *v;
    json_array_foreach(req, i, v)
    {
        if (!json_is_string(v))
            return js_err(c, KS_ERR_INVALID, at, "'required' must be a list of strings");
        if (!extra && !json_object_get(props, json_string_value(v)))
            return js_err(c, KS_ERR_INVALID, at, "required property '%s' is not in 'properties'",
                          json_string_value(v));
        if (extra && !json_object_get(props, json_string_value(v)))
            return js_err(c, KS_ERR_UNSUPPORTED, at,
                          "required property '%s' outside 'properties' is not supported",
                          json_string_value(v));
    }
    return 0;
}

/* Code points of the UTF-8 string s into cp (at most cap); returns the count. */
static int to_cps(const char *s, uint32_t *cp, int cap)
{
    int n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && n < cap) {
        int extra = *p >= 0xF0 ? 3 : *p >= 0xE0 ? 2 : *p >= 0xC0 ? 1 : 0;
        uint32_t v = extra ? *p & (0x3Fu >> extra) : *p;
        p++;
        for (; extra > 0 && (*p & 0xC0) == 0x80; extra--)
            v = v << 6 | (*p++ & 0x3Fu);
        cp[n++] = v; /* jansson strings are valid UTF-8 */
    }
    return n;
}

/* A rule for string contents (between the quotes) equal to none of the names: a trie over
 * the names' code points where each node may continue with a child, leave the trie with any
 * other character, or end when no name ends there. names[k][0..len[k]), all sharing their
 * first d code points. */
static void not_names(js_conv *c, uint32_t **names, const int *len, const int *idx, int n, int d,
                      js_buf *out)
{
    js_buf body = {0}, other = {0};
    int terminal = 0, *sub = malloc((size_t)n * sizeof(int));
    js_add(&other, "[^\"\\\\\\x7F\\x00-\\x1F");
    for (int i = 0; sub && i < n; i++) {
        const uint32_t *nm = names[idx[i]];
        if (len[idx[i]] == d) {
            terminal = 1;
            continue;
        }
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = len[idx[j]] > d && names[idx[j]][d] == nm[d];
        if (seen) continue;
        int m = 0;
        for (int j = i; j < n; j++)
            if (len[idx[j]] > d && names[idx[j]][d] == nm[d]) sub[m++] = idx[j];
        js_printf(&body, "%s\"\\U%08X\" ", body.n ? " | " : "", nm[d]);
        not_names(c, names, len, sub, m, d + 1, &body);
        js_printf(&other, "\\U%08X", nm[d]);
    }
    js_add(&other, "] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})");
    js_printf(&body, "%s(%s) char*", body.n ? " | " : "", other.s ? other.s : "");
    js_buf rule = {0}; /* the empty alternative first: a rule line cannot end with '|' */
    js_add(&rule, terminal ? "" : "| ");
    js_addn(&rule, body.s ? body.s : "", body.n);
    add_rule(c, "key", &rule, out);
    free(rule.s);
    free(sub);
    free(body.s);
    free(other.s);
}

/* "\"" (a key that is not a declared property) "\"" */
static void extra_key(js_conv *c, const json_t *props, js_buf *out)
{
    size_t n = json_object_size(props);
    uint32_t **names = calloc(n + 1, sizeof(uint32_t *));
    int *len = calloc(n + 1, sizeof(int)), *idx = calloc(n + 1, sizeof(int)), k = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)props, key, v)
    {
        if (!names || !len || !idx || !(names[k] = malloc(256 * sizeof(uint32_t)))) break;
        len[k] = to_cps(key, names[k], 256);
        idx[k] = k;
        k++;
    }
    js_add(out, "\"\\\"\" ");
    if (k == (int)n)
        not_names(c, names, len, idx, k, 0, out);
    else
        out->oom = 1;
    js_add(out, " \"\\\"\" space");
    for (int i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
    free(len);
    free(idx);
}

static int visit_extra(js_conv *c, const json_t *ap, const json_t *props, const char *ptr,
                       js_buf *extra)
{
    char at[JS_PTR];
    ptr_join(at, ptr, "additionalProperties");
    js_buf key = {0};
    if (json_object_size(props))
        extra_key(c, props, &key);
    else
        js_add(&key, "string");
    if (json_is_true(ap)) {
        js_printf(extra, "(%s \":\" space value)", key.s ? key.s : "");
        free(key.s);
        return 0;
    }
    if (!json_is_object(ap)) {
        free(key.s);
        return js_err(c, KS_ERR_INVALID, at, "'additionalProperties' must be a boolean or schema");
    }
    js_printf(extra, "(%s \":\" space (", key.s ? key.s : "");
    free(key.s);
    int rc = visit(c, ap, at, "extra", extra);
    js_add(extra, "))");
    return rc;
}

static int visit_object(js_conv *c, const json_t *s, const char *ptr, const char *hint, js_buf *out)
{
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *ap = json_object_get(s, "additionalProperties");
    char at[JS_PTR];
    ptr_join(at, ptr, "properties");
    if (props && !json_is_object(props))
        return js_err(c, KS_ERR_INVALID, at, "'properties' must be an object");
    size_t n = json_object_size(props);
    js_buf extra = {0}, body = {0};
    js_buf *reqs = calloc(n + 1, sizeof(js_buf)), *opts = calloc(n + 1, sizeof(js_buf));
    int n_req = 0, n_opt = 0, rc = reqs && opts ? 0 : KS_ERR_NOMEM;
    int has_extra = ap && !json_is_false(ap);
    if (!rc) rc = check_required(c, req, props, has_extra, ptr);
    if (!rc && has_extra) rc = visit_extra(c, ap, props, ptr, &extra);
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        if (rc) break;
        js_buf kv = {0};
        rc = prop_kv(c, k, v, ptr, &kv);
        if (required_has(req, k))
            reqs[n_req++] = kv;
        else
            opts[n_opt++] = kv;
    }
    if (!rc) {
        js_add(&body, "\"{\" space ");
        object_members(&body, reqs, n_req, opts, n_opt, has_extra ? extra.s : NULL);
        js_add(&body, " \"}\" space");
        add_rule(c, hint, &body, out);
    }
    for (int i = 0; i < n_req; i++)
        free(reqs[i].s);
    for (int i = 0; i < n_opt; i++)
        free(opts[i].s);
    free(reqs);
    free(opts);
    free(extra.s);
    free(body.s);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

static int visit_type(js_conv *c, const json_t *s, const char *type, const char *ptr,
                      const char *hint, js_buf *out)
{
    if (!strcmp(type, "string")) return visit_string(c, s, ptr, out);
    if (!strcmp(type, "integer")) return visit_number(c, s, ptr, 1, out);
    if (!strcmp(type, "number")) return visit_number(c, s, ptr, 0, out);
    if (!strcmp(type, "boolean") || !strcmp(type, "null")) {
        js_add(out, type);
        return 0;
    }
    if (!strcmp(type, "object")) return visit_object(c, s, ptr, hint, out);
    if (!strcmp(type, "array")) return visit_array(c, s, ptr, hint, out);
    char at[JS_PTR];
    ptr_join(at, ptr, "type");
    return js_err(c, KS_ERR_INVALID, at, "unknown type '%s'", type);
}

/* The type a schema without "type" implies by its keywords, or NULL (any value). */
static const char *implied_type(const json_t *s)
{
    if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
        json_object_get(s, "required"))
        return "object";
    if (json_object_get(s, "items") || json_object_get(s, "minItems") ||
        json_object_get(s, "maxItems"))
        return "array";
    if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") ||
        json_object_get(s, "format"))
        return "string";
    if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
        json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum"))
        return "number";
    return NULL;
}

/* "(" alt | alt ... ")" over the schemas of a list keyword (anyOf, oneOf, enum values). */
static int visit_alts(js_conv *c, const json_t *s, const char *key, const char *ptr,
                      const char *hint, js_buf *out)
{
    char at[JS_PTR];
    ptr_join(at, ptr, key);
    json_t *list = json_object_get(s, key);
    if (!json_is_array(list) || json_array_size(list) == 0)
        return js_err(c, KS_ERR_INVALID, at, "'%s' must be a non-empty list", key);
    int is_enum = !strcmp(key, "enum");
    js_add(out, "(");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        char ai[JS_PTR], idx[24];
        snprintf(idx, sizeof(idx), "%zu", i);
        ptr_join(ai, at, idx);
        if (i) js_add(out, " | ");
        int rc = is_enum ? add_json_literal(c, out, v, ai) : visit(c, v, ai, hint, out);
        if (rc) return rc;
    }
    js_add(out, ")");
    return 0;
}

static int visit_typed(js_conv *c, const json_t *s, const char *ptr, const char *hint, js_buf *out)
{
    json_t *t = json_object_get(s, "type");
    char at[JS_PTR];
    ptr_join(at, ptr, "type");
    if (json_is_string(t)) return visit_type(c, s, json_string_value(t), ptr, hint, out);
    if (json_is_array(t) && json_array_size(t) > 0) {
        js_add(out, "(");
        size_t i;
        json_t *v;
        json_array_foreach(t, i, v)
        {
            if (!json_is_string(v))
                return js_err(c, KS_ERR_INVALID, at, "'type' must hold type names");
            if (i) js_add(out, " | ");
            int rc = visit_type(c, s, json_string_value(v), ptr, hint, out);
            if (rc) return rc;
        }
        js_add(out, ")");
        return 0;
    }
    if (t) return js_err(c, KS_ERR_INVALID, at, "'type' must be a name or a list of names");
    const char *it = implied_type(s);
    if (it) return visit_type(c, s, it, ptr, hint, out);
    js_add(out, "value");
    return 0;
}

static int visit(js_conv *c, const json_t *s, const char *ptr, const char *hint, js_buf *out)
{
    if (json_is_true(s)) {
        js_add(out, "value");
        return 0;
    }
    if (!json_is_object(s))
        return js_err(c, KS_ERR_INVALID, ptr, "a schema must be an object or true");
    if (c->depth >= JS_MAX_DEPTH)
        return js_err(c, KS_ERR_UNSUPPORTED, ptr, "schema nested deeper than %d", JS_MAX_DEPTH);
    int rc = check_keywords(c, s, ptr);
    if (rc) return rc;
    c->depth++;
    json_t *all = json_object_get(s, "allOf");
    char at[JS_PTR];
    ptr_join(at, ptr, "allOf");
    if (json_object_get(s, "$ref"))
        rc = visit_ref(c, s, ptr, out);
    else if (json_object_get(s, "const")) {
        ptr_join(at, ptr, "const");
        rc = add_json_literal(c, out, json_object_get(s, "const"), at);
    } else if (json_object_get(s, "enum"))
        rc = visit_alts(c, s, "enum", ptr, hint, out);
    else if (json_object_get(s, "anyOf"))
        rc = visit_alts(c, s, "anyOf", ptr, hint, out);
    else if (json_object_get(s, "oneOf"))
        rc = visit_alts(c, s, "oneOf", ptr, hint, out);
    else if (all && (!json_is_array(all) || json_array_size(all) != 1))
        rc = js_err(c, KS_ERR_UNSUPPORTED, at, "allOf with other than one schema is not supported");
    else if (all) {
        char at0[JS_PTR];
        ptr_join(at0, at, "0");
        rc = visit(c, json_array_get(all, 0), at0, hint, out);
    } else
        rc = visit_typed(c, s, ptr, hint, out);
    c->depth--;
    return rc;
}

int api_schema_to_gbnf(const json_t *schema, char **out, ks_diag *d)
{
    *out = NULL;
    ks_diag_clear(d);
    js_conv c = {.root = schema, .d = d};
    js_buf top = {0};
    int rc = visit(&c, schema, "", "root", &top);
    if (!rc) {
        js_buf g = {0};
        js_printf(&g, "root ::= %s\n", top.s ? top.s : "");
        js_addn(&g, c.rules.s ? c.rules.s : "", c.rules.n);
        js_add(&g, js_prims);
        if (g.oom || top.oom || c.rules.oom) {
            free(g.s);
            rc = ks_diag_set(d, KS_ERR_NOMEM, "out of memory converting the schema");
        } else {
            *out = g.s;
        }
    }
    free(top.s);
    free(c.rules.s);
    return rc;
}

const char *api_json_object_gbnf(void)
{
    return "root ::= object\n"
           "space ::= | \" \" | \"\\n\" [ \\t]{0,8}\n"
           "boolean ::= (\"true\" | \"false\") space\n"
           "null ::= \"null\" space\n"
           "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
           "string ::= \"\\\"\" char* \"\\\"\" space\n"
           "number ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? "
           "[0-9]{1,2})? space\n"
           "value ::= object | array | string | number | boolean | null\n"
           "object ::= \"{\" space (string \":\" space value (\",\" space string \":\" space "
           "value)*)? \"}\" space\n"
           "array ::= \"[\" space (value (\",\" space value)*)? \"]\" space\n";
}

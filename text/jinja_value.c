/* jinja_value.c - Jinja values: the budgeted arena they live in, builders, truth, equality and
 * ordering with Python's rules, and the two ways a value becomes text: Python's str()/repr()
 * (what {{ x }} prints) and json.dumps (the tojson filter, as Hugging Face defines it:
 * ensure_ascii off, separators ", " and ": ", or "," and ": " with an indent).
 *
 * Invariant: every byte reachable from a value of a ctx is inside that ctx's arena, and the
 * arena never grows past max_bytes (an allocation beyond it fails and marks the ctx).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

void *jj_alloc(jinja_ctx *c, size_t n)
{
    if (c->oom || n > c->max_bytes - c->used) {
        c->oom = true;
        return NULL;
    }
    void *p = ks_arena_alloc(&c->arena, n ? n : 1);
    if (!p) {
        c->oom = true;
        return NULL;
    }
    c->used += (n + 15) & ~(size_t)15;
    return p;
}

int jj_error(jinja_ctx *c, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->diag && !c->diag->msg[0]) {
        ks_diag_set(c->diag, KS_ERR_INVALID, "chat template line %d: %s", line, msg);
        c->diag->line = line;
    }
    return KS_ERR_INVALID;
}

jinja_ctx *jinja_ctx_create(size_t max_bytes)
{
    jinja_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    ks_arena_init(&c->arena, 64 * 1024);
    c->max_bytes = max_bytes ? max_bytes : (size_t)64 << 20;
    c->now = time(NULL);
    return c;
}

void jinja_ctx_destroy(jinja_ctx *c)
{
    if (c) {
        ks_arena_deinit(&c->arena);
        free(c);
    }
}

void jinja_ctx_set_time(jinja_ctx *c, time_t now)
{
    c->now = now;
}

bool jinja_ctx_ok(const jinja_ctx *c)
{
    return !c->oom;
}

jinja_val jj_undefined(void)
{
    jinja_val v = {.type = JINJA_UNDEFINED};
    return v;
}

jinja_val jinja_none(void)
{
    jinja_val v = {.type = JINJA_NONE};
    return v;
}

jinja_val jinja_bool(bool b)
{
    jinja_val v = {.type = JINJA_BOOL, .u.b = b};
    return v;
}

jinja_val jinja_int(int64_t i)
{
    jinja_val v = {.type = JINJA_INT, .u.i = i};
    return v;
}

jinja_val jinja_float(double f)
{
    jinja_val v = {.type = JINJA_FLOAT, .u.f = f};
    return v;
}

jinja_val jj_str_take(const char *p, size_t n)
{
    jinja_val v = {.type = JINJA_STR};
    v.u.s.p = p ? p : "";
    v.u.s.n = n;
    return v;
}

jinja_val jinja_str(jinja_ctx *c, const char *s, size_t n)
{
    char *p = jj_alloc(c, n + 1);
    if (!p) {
        return jj_str_take("", 0);
    }
    memcpy(p, s, n);
    p[n] = 0;
    return jj_str_take(p, n);
}

jinja_val jinja_cstr(jinja_ctx *c, const char *s)
{
    return jinja_str(c, s, strlen(s));
}

jinja_val jinja_list_new(jinja_ctx *c)
{
    jinja_val v = {.type = JINJA_LIST};
    v.u.l = jj_alloc(c, sizeof *v.u.l);
    if (!v.u.l) {
        return jinja_none();
    }
    memset(v.u.l, 0, sizeof *v.u.l);
    return v;
}

void jinja_list_push(jinja_ctx *c, jinja_val list, jinja_val item)
{
    if (list.type != JINJA_LIST) {
        return;
    }
    struct jinja_list *l = list.u.l;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jinja_val *v = jj_alloc(c, cap * sizeof *v);
        if (!v) {
            return;
        }
        if (l->n) {
            memcpy(v, l->v, l->n * sizeof *v);
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = item;
}

jinja_val jinja_dict_new(jinja_ctx *c)
{
    jinja_val v = {.type = JINJA_DICT};
    v.u.d = jj_alloc(c, sizeof *v.u.d);
    if (!v.u.d) {
        return jinja_none();
    }
    memset(v.u.d, 0, sizeof *v.u.d);
    return v;
}

void jj_dict_put(jinja_ctx *c, struct jinja_dict *d, jinja_val k, jinja_val v)
{
    for (size_t i = 0; i < d->n; i++) {
        if (jj_equal(d->k[i], k)) {
            d->v[i] = v;
            return;
        }
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jinja_val *nk = jj_alloc(c, cap * sizeof *nk);
        jinja_val *nv = jj_alloc(c, cap * sizeof *nv);
        if (!nk || !nv) {
            return;
        }
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

void jinja_dict_set(jinja_ctx *c, jinja_val dict, const char *key, jinja_val v)
{
    if (dict.type == JINJA_DICT) {
        jj_dict_put(c, dict.u.d, jinja_cstr(c, key), v);
    }
}

jinja_val *jj_dict_get(jinja_val dict, const char *key, size_t n)
{
    if (dict.type != JINJA_DICT) {
        return NULL;
    }
    struct jinja_dict *d = dict.u.d;
    for (size_t i = 0; i < d->n; i++) {
        jinja_val k = d->k[i];
        if (k.type == JINJA_STR && k.u.s.n == n && memcmp(k.u.s.p, key, n) == 0) {
            return &d->v[i];
        }
    }
    return NULL;
}

int jinja_ctx_set(jinja_ctx *c, const char *name, jinja_val v)
{
    jinja_frame *f = &c->globals;
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return 0;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        const char **nn = jj_alloc(c, cap * sizeof *nn);
        jinja_val *nv = jj_alloc(c, cap * sizeof *nv);
        if (!nn || !nv) {
            return KS_ERR_NOMEM;
        }
        if (f->n) {
            memcpy(nn, f->names, f->n * sizeof *nn);
            memcpy(nv, f->vals, f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    jinja_val s = jinja_cstr(c, name);
    f->names[f->n] = s.u.s.p;
    f->vals[f->n++] = v;
    return c->oom ? KS_ERR_NOMEM : 0;
}

bool jj_is_str(jinja_val v, const char *lit)
{
    size_t n = strlen(lit);
    return v.type == JINJA_STR && v.u.s.n == n && memcmp(v.u.s.p, lit, n) == 0;
}

bool jj_truthy(jinja_val v)
{
    switch (v.type) {
    case JINJA_BOOL:
        return v.u.b;
    case JINJA_INT:
        return v.u.i != 0;
    case JINJA_FLOAT:
        return v.u.f != 0.0;
    case JINJA_STR:
        return v.u.s.n != 0;
    case JINJA_LIST:
        return v.u.l->n != 0;
    case JINJA_DICT:
        return v.u.d->n != 0 || v.u.d->is_namespace;
    case JINJA_MACRO:
    case JINJA_FUNC:
        return true;
    default:
        return false;
    }
}

static bool is_num(jinja_val v)
{
    return v.type == JINJA_INT || v.type == JINJA_FLOAT || v.type == JINJA_BOOL;
}

static double num(jinja_val v)
{
    return v.type == JINJA_FLOAT ? v.u.f : v.type == JINJA_INT ? (double)v.u.i : (double)v.u.b;
}

bool jj_equal(jinja_val a, jinja_val b)
{
    if (is_num(a) && is_num(b)) {
        if (a.type != JINJA_FLOAT && b.type != JINJA_FLOAT) {
            int64_t x = a.type == JINJA_INT ? a.u.i : a.u.b,
                    y = b.type == JINJA_INT ? b.u.i : b.u.b;
            return x == y;
        }
        return num(a) == num(b);
    }
    if (a.type != b.type) {
        return false;
    }
    switch (a.type) {
    case JINJA_UNDEFINED:
    case JINJA_NONE:
        return true;
    case JINJA_STR:
        return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JINJA_LIST:
        if (a.u.l->n != b.u.l->n) {
            return false;
        }
        for (size_t i = 0; i < a.u.l->n; i++) {
            if (!jj_equal(a.u.l->v[i], b.u.l->v[i])) {
                return false;
            }
        }
        return true;
    case JINJA_DICT:
        if (a.u.d->n != b.u.d->n) {
            return false;
        }
        for (size_t i = 0; i < a.u.d->n; i++) {
            bool found = false;
            for (size_t j = 0; j < b.u.d->n && !found; j++) {
                found = jj_equal(a.u.d->k[i], b.u.d->k[j]) && jj_equal(a.u.d->v[i], b.u.d->v[j]);
            }
            if (!found) {
                return false;
            }
        }
        return true;
    case JINJA_MACRO:
        return a.u.m.node == b.u.m.node;
    case JINJA_FUNC:
        return a.u.fn == b.u.fn;
    default:
        return false;
    }
}

int jj_compare(jinja_ctx *c, int line, jinja_val a, jinja_val b, int *out)
{
    if (is_num(a) && is_num(b)) {
        double x = num(a), y = num(b);
        *out = x < y ? -1 : x > y ? 1 : 0;
        return 0;
    }
    if (a.type == JINJA_STR && b.type == JINJA_STR) {
        size_t n = KS_MIN(a.u.s.n, b.u.s.n);
        int r = memcmp(a.u.s.p, b.u.s.p, n);
        *out = r ? r : (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
        return 0;
    }
    return jj_error(c, line, "cannot order %s and %s", jj_type_name(a), jj_type_name(b));
}

const char *jj_type_name(jinja_val v)
{
    static const char *const names[] = {"undefined", "none", "bool", "int",   "float",
                                        "string",    "list", "dict", "macro", "function"};
    return (unsigned)v.type < KS_ARRAY_LEN(names) ? names[v.type] : "?";
}

int jj_buf_put(jinja_ctx *c, jj_buf *b, const char *s, size_t n)
{
    if (n > c->max_bytes || b->n + n + 1 > c->max_bytes) {
        c->oom = true;
        return KS_ERR_FULL;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = KS_MAX(b->cap * 2, b->n + n + 64);
        char *p = realloc(b->p, cap);
        if (!p) {
            return KS_ERR_NOMEM;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int put_s(jinja_ctx *c, jj_buf *b, const char *s)
{
    return jj_buf_put(c, b, s, strlen(s));
}

/* Python's float repr: the shortest digits that round-trip, fixed notation for exponents in
 * [-4, 16), otherwise d.ddde+XX. */
static void fmt_float(double f, char *out, size_t cap)
{
    if (isnan(f) || isinf(f)) {
        snprintf(out, cap, "%s", isnan(f) ? "nan" : f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) {
            break;
        }
    }
    snprintf(e, sizeof e, "%.*e", prec - 1, f);
    char *ep = strchr(e, 'e');
    int exp = atoi(ep + 1);
    char digits[24];
    size_t nd = 0;
    for (char *p = e; p < ep; p++) {
        if (*p >= '0' && *p <= '9') {
            digits[nd++] = *p;
        }
    }
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }
    const char *sign = f < 0 || (f == 0 && signbit(f)) ? "-" : "";
    if (exp >= -4 && exp < 16) {
        char fixed[64];
        size_t k = 0;
        if (exp < 0) {
            fixed[k++] = '0';
            fixed[k++] = '.';
            for (int i = 0; i < -exp - 1; i++) {
                fixed[k++] = '0';
            }
            memcpy(fixed + k, digits, nd);
            k += nd;
        } else {
            for (int i = 0; i <= exp; i++) {
                fixed[k++] = (size_t)i < nd ? digits[i] : '0';
            }
            fixed[k++] = '.';
            if ((size_t)exp + 1 < nd) {
                memcpy(fixed + k, digits + exp + 1, nd - exp - 1);
                k += nd - exp - 1;
            } else {
                fixed[k++] = '0';
            }
        }
        fixed[k] = 0;
        snprintf(out, cap, "%s%s", sign, fixed);
        return;
    }
    char mant[32];
    size_t k = 0;
    mant[k++] = digits[0];
    if (nd > 1) {
        mant[k++] = '.';
        memcpy(mant + k, digits + 1, nd - 1);
        k += nd - 1;
    }
    mant[k] = 0;
    snprintf(out, cap, "%s%se%c%02d", sign, mant, exp < 0 ? '-' : '+', abs(exp));
}

static int repr_str(jinja_ctx *c, jj_buf *b, jinja_val s)
{
    bool has_sq = memchr(s.u.s.p, '\'', s.u.s.n) != NULL;
    bool has_dq = memchr(s.u.s.p, '"', s.u.s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int rc = jj_buf_put(c, b, &q, 1);
    for (size_t i = 0; i < s.u.s.n && !rc; i++) {
        unsigned char ch = (unsigned char)s.u.s.p[i];
        char esc[8];
        if (ch == '\\' || ch == (unsigned char)q) {
            snprintf(esc, sizeof esc, "\\%c", ch);
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            snprintf(esc, sizeof esc, "\\%c", ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't');
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", ch);
        } else {
            rc = jj_buf_put(c, b, (const char *)&s.u.s.p[i], 1);
            continue;
        }
        rc = put_s(c, b, esc);
    }
    return rc ? rc : jj_buf_put(c, b, &q, 1);
}

static int repr(jinja_ctx *c, jinja_val v, jj_buf *b)
{
    if (v.type == JINJA_STR) {
        return repr_str(c, b, v);
    }
    return jj_to_str(c, v, b);
}

int jj_to_str(jinja_ctx *c, jinja_val v, jj_buf *b)
{
    char tmp[64];
    int rc = 0;
    switch (v.type) {
    case JINJA_UNDEFINED:
        return 0;
    case JINJA_NONE:
        return put_s(c, b, "None");
    case JINJA_BOOL:
        return put_s(c, b, v.u.b ? "True" : "False");
    case JINJA_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        return put_s(c, b, tmp);
    case JINJA_FLOAT:
        fmt_float(v.u.f, tmp, sizeof tmp);
        return put_s(c, b, tmp);
    case JINJA_STR:
        return jj_buf_put(c, b, v.u.s.p, v.u.s.n);
    case JINJA_LIST:
        rc = put_s(c, b, v.u.l->is_tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n && !rc; i++) {
            rc = i ? put_s(c, b, ", ") : 0;
            rc = rc ? rc : repr(c, v.u.l->v[i], b);
        }
        if (!rc && v.u.l->is_tuple && v.u.l->n == 1) {
            rc = put_s(c, b, ",");
        }
        return rc ? rc : put_s(c, b, v.u.l->is_tuple ? ")" : "]");
    case JINJA_DICT:
        rc = put_s(c, b, v.u.d->is_namespace ? "<Namespace {" : "{");
        for (size_t i = 0; i < v.u.d->n && !rc; i++) {
            rc = i ? put_s(c, b, ", ") : 0;
            rc = rc ? rc : repr(c, v.u.d->k[i], b);
            rc = rc ? rc : put_s(c, b, ": ");
            rc = rc ? rc : repr(c, v.u.d->v[i], b);
        }
        return rc ? rc : put_s(c, b, v.u.d->is_namespace ? "}>" : "}");
    default:
        return put_s(c, b, "<function>");
    }
}

static int json_str(jinja_ctx *c, jj_buf *b, const char *s, size_t n)
{
    int rc = put_s(c, b, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (ch) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (ch < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", ch);
                esc = u;
            }
        }
        if (esc) {
            rc = jj_buf_put(c, b, s + run, i - run);
            rc = rc ? rc : put_s(c, b, esc);
            run = i + 1;
        }
    }
    if (!rc) {
        rc = jj_buf_put(c, b, s + run, n - run);
    }
    return rc ? rc : put_s(c, b, "\"");
}

static int json_nl(jinja_ctx *c, jj_buf *b, int indent, int level)
{
    int rc = put_s(c, b, "\n");
    for (int i = 0; i < indent * level && !rc; i++) {
        rc = put_s(c, b, " ");
    }
    return rc;
}

static int json_val(jinja_ctx *c, int line, jinja_val v, int indent, bool sort, int level,
                    jj_buf *b);

static int json_dict(jinja_ctx *c, int line, struct jinja_dict *d, int indent, bool sort, int level,
                     jj_buf *b)
{
    if (d->n == 0) {
        return put_s(c, b, "{}");
    }
    size_t *order = jj_alloc(c, d->n * sizeof *order);
    if (!order) {
        return KS_ERR_FULL;
    }
    for (size_t i = 0; i < d->n; i++) {
        order[i] = i;
    }
    for (size_t i = 1; sort && i < d->n; i++) { /* insertion sort: stable, dicts are small */
        for (size_t j = i; j > 0; j--) {
            int r = 0;
            if (jj_compare(c, line, d->k[order[j - 1]], d->k[order[j]], &r) || r <= 0) {
                break;
            }
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    int rc = put_s(c, b, "{");
    for (size_t i = 0; i < d->n && !rc; i++) {
        jinja_val k = d->k[order[i]];
        if (i) {
            rc = put_s(c, b, indent >= 0 ? "," : ", ");
        }
        if (!rc && indent >= 0) {
            rc = json_nl(c, b, indent, level + 1);
        }
        if (rc) {
            break;
        }
        if (k.type == JINJA_STR) {
            rc = json_str(c, b, k.u.s.p, k.u.s.n);
        } else {
            jj_buf kb = {0};
            rc = jj_to_str(c, k, &kb);
            rc = rc ? rc : json_str(c, b, kb.p ? kb.p : "", kb.n);
            free(kb.p);
        }
        rc = rc ? rc : put_s(c, b, ": ");
        rc = rc ? rc : json_val(c, line, d->v[order[i]], indent, sort, level + 1, b);
    }
    if (!rc && indent >= 0) {
        rc = json_nl(c, b, indent, level);
    }
    return rc ? rc : put_s(c, b, "}");
}

static int json_val(jinja_ctx *c, int line, jinja_val v, int indent, bool sort, int level,
                    jj_buf *b)
{
    char tmp[64];
    if (level > 200) {
        return jj_error(c, line, "tojson: value nested too deeply");
    }
    switch (v.type) {
    case JINJA_UNDEFINED:
    case JINJA_NONE:
        return put_s(c, b, "null");
    case JINJA_BOOL:
        return put_s(c, b, v.u.b ? "true" : "false");
    case JINJA_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        return put_s(c, b, tmp);
    case JINJA_FLOAT:
        if (isnan(v.u.f) || isinf(v.u.f)) {
            return put_s(c, b, isnan(v.u.f) ? "NaN" : v.u.f < 0 ? "-Infinity" : "Infinity");
        }
        fmt_float(v.u.f, tmp, sizeof tmp);
        return put_s(c, b, tmp);
    case JINJA_STR:
        return json_str(c, b, v.u.s.p, v.u.s.n);
    case JINJA_LIST: {
        if (v.u.l->n == 0) {
            return put_s(c, b, "[]");
        }
        int rc = put_s(c, b, "[");
        for (size_t i = 0; i < v.u.l->n && !rc; i++) {
            rc = i ? put_s(c, b, indent >= 0 ? "," : ", ") : 0;
            rc = rc ? rc : indent >= 0 ? json_nl(c, b, indent, level + 1) : 0;
            rc = rc ? rc : json_val(c, line, v.u.l->v[i], indent, sort, level + 1, b);
        }
        rc = rc ? rc : indent >= 0 ? json_nl(c, b, indent, level) : 0;
        return rc ? rc : put_s(c, b, "]");
    }
    case JINJA_DICT:
        return json_dict(c, line, v.u.d, indent, sort, level, b);
    default:
        return jj_error(c, line, "tojson: %s is not JSON serializable", jj_type_name(v));
    }
}

int jj_to_json(jinja_ctx *c, int line, jinja_val v, int indent, bool sort_keys, jj_buf *b)
{
    return json_val(c, line, v, indent, sort_keys, 0, b);
}

size_t jj_utf8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return k;
}

size_t jj_utf8_offset(const char *s, size_t n, size_t cp_index)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (k == cp_index) {
                return i;
            }
            k++;
        }
    }
    return n;
}

jinja_val jj_str_case(jinja_ctx *c, jinja_val s, int mode)
{
    jinja_val r = jinja_str(c, s.u.s.p, s.u.s.n);
    char *p = (char *)r.u.s.p;
    bool word_start = true;
    for (size_t i = 0; i < r.u.s.n; i++) {
        char ch = p[i];
        bool alpha = (ch | 32) >= 'a' && (ch | 32) <= 'z';
        bool up = mode == 'u' || ((mode == 't' || (mode == 'c' && i == 0)) && word_start);
        if (alpha) {
            p[i] = up ? (char)(ch & ~32) : (char)(ch | 32);
        }
        word_start = mode == 't' ? !alpha && !(ch >= '0' && ch <= '9') && !(ch & 0x80) : false;
    }
    return r;
}

jinja_val jj_str_replace(jinja_ctx *c, jinja_val s, jinja_val old, jinja_val new_, int64_t count)
{
    jj_buf b = {0};
    const char *p = s.u.s.p, *end = s.u.s.p + s.u.s.n;
    int rc = 0;
    while (!rc && p <= end && count != 0) {
        const char *q = old.u.s.n ? memmem(p, (size_t)(end - p), old.u.s.p, old.u.s.n) : p;
        if (!q) {
            break;
        }
        rc = jj_buf_put(c, &b, p, (size_t)(q - p));
        rc = rc ? rc : jj_buf_put(c, &b, new_.u.s.p, new_.u.s.n);
        if (!old.u.s.n) { /* Python inserts between characters */
            if (q == end) {
                p = end + 1;
                break;
            }
            size_t k = 1;
            while (q + k < end && ((unsigned char)q[k] & 0xC0) == 0x80) {
                k++;
            }
            rc = rc ? rc : jj_buf_put(c, &b, q, k);
            p = q + k;
        } else {
            p = q + old.u.s.n;
        }
        count -= count > 0;
    }
    if (!rc && p < end) {
        rc = jj_buf_put(c, &b, p, (size_t)(end - p));
    }
    jinja_val r = jinja_str(c, b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

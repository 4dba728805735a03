/* head_profile.c - reads, checks and writes head-profile files (include/kvserve/head_profile.h).
 *
 * The parser is strict on purpose: a profile decides which heads keep the whole context, so a
 * truncated or hand-edited file must fail loudly (naming the field) instead of silently
 * classifying heads as streaming. It reads a TOML subset (strings, integers, arrays of
 * numbers) without depending on the server's TOML module, which lives above kvcache/.
 */
#include "kvserve/head_profile.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t kv_head_profile_hash_bytes(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int kv_head_profile_alloc(kv_head_profile *p, int32_t n_layer, int32_t n_head_kv)
{
    memset(p, 0, sizeof(*p));
    if (n_layer < 1 || n_head_kv < 1 || (int64_t)n_layer * n_head_kv > KV_HEAD_PROFILE_MAX_HEADS)
        return KS_ERR_RANGE;
    size_t n = (size_t)n_layer * (size_t)n_head_kv;
    p->score = calloc(n, sizeof(float));
    p->keep_full = calloc(n, 1);
    if (!p->score || !p->keep_full) {
        kv_head_profile_free(p);
        return KS_ERR_NOMEM;
    }
    p->n_layer = n_layer;
    p->n_head_kv = n_head_kv;
    return 0;
}

void kv_head_profile_free(kv_head_profile *p)
{
    if (!p) return;
    free(p->score);
    free(p->keep_full);
    memset(p, 0, sizeof(*p));
}

/* ---- parsing ---- */

enum { HP_MODEL, HP_N_LAYER, HP_N_HEAD_KV, HP_HASH, HP_SCORES, HP_KEEP_FULL, HP_N_KEYS };
static const char *const hp_keys[HP_N_KEYS] = {"model", "n_layer", "n_head_kv",
                                               "hash",  "scores",  "keep_full"};

typedef struct hp_parse {
    kv_head_profile *p;
    ks_diag *d;
    int line;
    bool seen[HP_N_KEYS];
    double *vals[2]; /* scores, retrieval as read (their length is checked at the end) */
    int32_t n_vals[2];
} hp_parse;

static const char *skip_ws(const char *s, const char *end)
{
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    return s;
}

/* "..." without escapes (a model name needs none). */
static int parse_string(hp_parse *ps, const char *key, const char *s, const char *end, char *out,
                        size_t cap, const char **next)
{
    if (s >= end || *s != '"')
        return ks_diag_key(ps->d, KS_ERR_FORMAT, key, "line %d: expected a quoted string",
                           ps->line);
    const char *q = s + 1;
    while (q < end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
        q++;
    if (q >= end || *q != '"')
        return ks_diag_key(ps->d, KS_ERR_FORMAT, key,
                           "line %d: unterminated string (escapes and control characters are "
                           "not accepted)",
                           ps->line);
    if ((size_t)(q - s - 1) >= cap)
        return ks_diag_key(ps->d, KS_ERR_RANGE, key, "line %d: longer than %zu characters",
                           ps->line, cap - 1);
    memcpy(out, s + 1, (size_t)(q - s - 1));
    out[q - s - 1] = 0;
    *next = q + 1;
    return 0;
}

static int parse_number(hp_parse *ps, const char *key, const char *s, const char *end, double *v,
                        const char **next)
{
    char buf[64];
    size_t n = 0;
    while (s + n < end && n < sizeof(buf) - 1 &&
           (isdigit((unsigned char)s[n]) || s[n] == '.' || s[n] == '-' || s[n] == '+' ||
            s[n] == 'e' || s[n] == 'E'))
        n++;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *e = NULL;
    errno = 0;
    *v = n ? strtod(buf, &e) : 0.0;
    if (!n || e != buf + n || errno || !isfinite(*v))
        return ks_diag_key(ps->d, KS_ERR_FORMAT, key, "line %d: expected a number", ps->line);
    *next = s + n;
    return 0;
}

static int parse_array(hp_parse *ps, int which, const char *key, const char *s, const char *end,
                       const char **next)
{
    if (s >= end || *s != '[')
        return ks_diag_key(ps->d, KS_ERR_FORMAT, key, "line %d: expected [numbers, ...]", ps->line);
    s = skip_ws(s + 1, end);
    int64_t cap = 0;
    while (s < end && *s != ']') {
        if (ps->n_vals[which] >= KV_HEAD_PROFILE_MAX_HEADS)
            return ks_diag_key(ps->d, KS_ERR_RANGE, key, "more than %d values",
                               KV_HEAD_PROFILE_MAX_HEADS);
        if (ks_buf_reserve((void **)&ps->vals[which], &cap, ps->n_vals[which] + 1, sizeof(double)))
            return KS_ERR_NOMEM;
        int rc = parse_number(ps, key, s, end, &ps->vals[which][ps->n_vals[which]], &s);
        if (rc) return rc;
        ps->n_vals[which]++;
        s = skip_ws(s, end);
        if (s < end && *s == ',')
            s = skip_ws(s + 1, end);
        else if (s < end && *s != ']')
            return ks_diag_key(ps->d, KS_ERR_FORMAT, key, "line %d: expected ',' or ']'", ps->line);
    }
    if (s >= end)
        return ks_diag_key(ps->d, KS_ERR_FORMAT, key,
                           "line %d: unterminated array (it must end on its line)", ps->line);
    *next = s + 1;
    return 0;
}

static int parse_int_field(hp_parse *ps, const char *key, const char *s, const char *end,
                           int32_t *out, const char **next)
{
    double v;
    int rc = parse_number(ps, key, s, end, &v, next);
    if (rc) return rc;
    if (v != floor(v) || v < 1 || v > KV_HEAD_PROFILE_MAX_HEADS)
        return ks_diag_key(ps->d, KS_ERR_RANGE, key, "line %d: must be an integer in 1..%d",
                           ps->line, KV_HEAD_PROFILE_MAX_HEADS);
    *out = (int32_t)v;
    return 0;
}

static int parse_value(hp_parse *ps, int k, const char *s, const char *end, const char **next)
{
    char hex[32];
    int rc;
    switch (k) {
    case HP_MODEL:
        return parse_string(ps, hp_keys[k], s, end, ps->p->model, sizeof(ps->p->model), next);
    case HP_N_LAYER:
        return parse_int_field(ps, hp_keys[k], s, end, &ps->p->n_layer, next);
    case HP_N_HEAD_KV:
        return parse_int_field(ps, hp_keys[k], s, end, &ps->p->n_head_kv, next);
    case HP_HASH:
        if ((rc = parse_string(ps, hp_keys[k], s, end, hex, sizeof(hex), next))) return rc;
        if (strlen(hex) != 16 || strspn(hex, "0123456789abcdef") != 16)
            return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[k],
                               "line %d: must be 16 lowercase hex digits", ps->line);
        ps->p->hash = strtoull(hex, NULL, 16);
        return 0;
    default:
        return parse_array(ps, k == HP_SCORES ? 0 : 1, hp_keys[k], s, end, next);
    }
}

static int parse_line(hp_parse *ps, const char *s, const char *end)
{
    s = skip_ws(s, end);
    if (s >= end || *s == '#') return 0;
    const char *k0 = s;
    while (s < end && (isalnum((unsigned char)*s) || *s == '_'))
        s++;
    size_t kl = (size_t)(s - k0);
    int k = 0;
    while (k < HP_N_KEYS && !(strlen(hp_keys[k]) == kl && !memcmp(hp_keys[k], k0, kl)))
        k++;
    if (k == HP_N_KEYS)
        return ks_diag_set(ps->d, KS_ERR_FORMAT,
                           "line %d: unknown key '%.*s' (expected model, n_layer, n_head_kv, "
                           "hash, scores, keep_full)",
                           ps->line, (int)KS_MIN(kl, 40), k0);
    if (ps->seen[k])
        return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[k], "line %d: given twice", ps->line);
    ps->seen[k] = true;
    s = skip_ws(s, end);
    if (s >= end || *s != '=')
        return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[k], "line %d: expected '='", ps->line);
    int rc = parse_value(ps, k, skip_ws(s + 1, end), end, &s);
    if (rc) return rc;
    s = skip_ws(s, end);
    if (s < end && *s != '#')
        return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[k], "line %d: trailing characters",
                           ps->line);
    return 0;
}

/* Lengths and ranges once every line is read. */
static int parse_finish(hp_parse *ps)
{
    kv_head_profile *p = ps->p;
    for (int k = 0; k < HP_N_KEYS; k++)
        if (!ps->seen[k]) return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[k], "missing");
    int64_t n = (int64_t)p->n_layer * p->n_head_kv;
    if (n > KV_HEAD_PROFILE_MAX_HEADS)
        return ks_diag_key(ps->d, KS_ERR_RANGE, "n_head_kv",
                           "n_layer * n_head_kv = %" PRId64 " exceeds %d", n,
                           KV_HEAD_PROFILE_MAX_HEADS);
    for (int w = 0; w < 2; w++)
        if (ps->n_vals[w] != n)
            return ks_diag_key(ps->d, KS_ERR_FORMAT, hp_keys[HP_SCORES + w],
                               "has %d values, expected n_layer * n_head_kv = %" PRId64,
                               ps->n_vals[w], n);
    kv_head_profile tmp;
    int rc = kv_head_profile_alloc(&tmp, p->n_layer, p->n_head_kv);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) {
        double s = ps->vals[0][i], r = ps->vals[1][i];
        if (!(s >= 0.0 && s <= 1.0) || (r != 0.0 && r != 1.0)) {
            kv_head_profile_free(&tmp);
            return ks_diag_key(
                ps->d, KS_ERR_RANGE, hp_keys[s >= 0.0 && s <= 1.0 ? HP_KEEP_FULL : HP_SCORES],
                "value %" PRId64 " (layer %" PRId64 ", KV head %" PRId64 ") is %g, expected %s", i,
                i / p->n_head_kv, i % p->n_head_kv, s >= 0.0 && s <= 1.0 ? r : s,
                s >= 0.0 && s <= 1.0 ? "0 or 1" : "a score in [0, 1]");
        }
        tmp.score[i] = (float)s;
        tmp.keep_full[i] = (uint8_t)r;
    }
    p->score = tmp.score;
    p->keep_full = tmp.keep_full;
    return 0;
}

int kv_head_profile_parse(const char *text, size_t len, kv_head_profile *p, ks_diag *d)
{
    memset(p, 0, sizeof(*p));
    ks_diag_clear(d);
    hp_parse ps = {.p = p, .d = d};
    const char *s = text, *end = text + len;
    int rc = 0;
    while (s < end && !rc) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        ps.line++;
        if (memchr(s, 0, (size_t)(le - s)))
            rc = ks_diag_set(d, KS_ERR_FORMAT, "line %d: NUL byte", ps.line);
        else
            rc = parse_line(&ps, s, le > s && le[-1] == '\r' ? le - 1 : le);
        s = nl ? nl + 1 : end;
    }
    if (!rc) rc = parse_finish(&ps);
    free(ps.vals[0]);
    free(ps.vals[1]);
    if (rc) {
        kv_head_profile_free(p);
        if (d && !d->msg[0]) ks_diag_set(d, rc, "%s", ks_status_str(rc));
    }
    return rc;
}

int kv_head_profile_load(const char *path, kv_head_profile *p, ks_diag *d)
{
    char *text = NULL;
    size_t len = 0;
    memset(p, 0, sizeof(*p));
    int rc = ks_read_file(path, &text, &len, d);
    if (rc) return rc;
    rc = kv_head_profile_parse(text, len, p, d);
    free(text);
    if (rc && d) {
        char msg[sizeof(d->msg)];
        memcpy(msg, d->msg, sizeof(msg));
        snprintf(d->msg, sizeof(d->msg), "head profile %.200s: %.280s", path, msg);
    }
    return rc;
}

int kv_head_profile_check_shape(const kv_head_profile *p, int32_t n_layer, int32_t n_head_kv,
                                ks_diag *d)
{
    if (p->n_layer != n_layer)
        return ks_diag_key(d, KS_ERR_INVALID, "n_layer",
                           "the profile is for %d layers, the model has %d", p->n_layer, n_layer);
    if (p->n_head_kv != n_head_kv)
        return ks_diag_key(d, KS_ERR_INVALID, "n_head_kv",
                           "the profile is for %d KV heads, the model has %d", p->n_head_kv,
                           n_head_kv);
    return 0;
}

/* ---- writing ---- */

static void write_array(FILE *f, const char *key, const kv_head_profile *p, bool flags)
{
    int32_t n = p->n_layer * p->n_head_kv;
    fprintf(f, "%s = [", key);
    for (int32_t i = 0; i < n; i++) {
        if (flags)
            fprintf(f, "%s%d", i ? ", " : "", p->keep_full[i] ? 1 : 0);
        else
            fprintf(f, "%s%.9g", i ? ", " : "", (double)p->score[i]);
    }
    fprintf(f, "]\n");
}

int kv_head_profile_save(const kv_head_profile *p, const char *path, ks_diag *d)
{
    if (strpbrk(p->model, "\"\\\n\r"))
        return ks_diag_key(d, KS_ERR_INVALID, "model", "must not contain quotes or newlines");
    FILE *f = fopen(path, "w");
    if (!f) return ks_diag_set(d, KS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    fprintf(f,
            "# kvserve head profile (kvserve profile-heads): per (layer, KV head), layer-major\n");
    fprintf(f, "model = \"%s\"\nn_layer = %d\nn_head_kv = %d\nhash = \"%016" PRIx64 "\"\n",
            p->model, p->n_layer, p->n_head_kv, p->hash);
    fprintf(f, "# attention mass on the needle while the model copies it, in [0, 1]\n");
    write_array(f, "scores", p, false);
    fprintf(f, "# 1 = retrieval head (full context under `hybrid`), 0 = streaming head\n");
    write_array(f, "keep_full", p, true);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) return ks_diag_set(d, KS_ERR_IO, "cannot write %s", path);
    return 0;
}

/* gguf.c - GGUF v2/v3 reader over a read-only mmap.
 *
 * Why: every model and vocabulary kvserve loads is a GGUF file, and a loader is the first
 * thing a hostile or truncated file reaches. The parser is one forward pass with a bounded
 * cursor; nothing is read before its bounds are checked.
 *
 * Invariants once gguf_open*() returns 0:
 *  - every key, string and array lies inside the image, keys are unique, non-empty UTF-8;
 *  - every tensor has 1..4 dims each in [1, INT64_MAX], a known ggml type, a row length that
 *    is a multiple of the type's block size, an aligned offset, an overflow-free byte size,
 *    and its data lies inside the file (gguf_open_meta excepted) without overlapping another
 *    tensor's data; tensor names are unique;
 *  - counts were checked against the bytes that remain before anything was allocated, so a
 *    small file can never make us allocate much (the allocations are O(file size)).
 * Weights are never copied: gguf_tensor.data points into the mapping.
 */
#include "kvserve/gguf.h"
#include "gguf_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8 /* nesting of arrays of arrays; deeper is rejected */
#define GGUF_MIN_KV_BYTES 13   /* key length (8) + type (4) + 1-byte value */
#define GGUF_MIN_TI_BYTES 32   /* name length, n_dims, one dim, type, offset */

/* ---- ggml tensor types ---------------------------------------------------------------- */

typedef struct gguf_ttype {
    const char *name;
    uint32_t blck;  /* elements per block */
    uint32_t bytes; /* bytes per block */
} gguf_ttype;

/* Block layouts of the ggml types (public facts of the format). 0 bytes = unknown id. */
static const gguf_ttype k_ttypes[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},
};

const char *gguf_ggml_type_name(uint32_t type)
{
    if (type >= KS_ARRAY_LEN(k_ttypes) || k_ttypes[type].bytes == 0) return "unknown";
    return k_ttypes[type].name;
}

int gguf_ggml_type_layout(uint32_t type, uint32_t *blck, uint32_t *bytes)
{
    if (type >= KS_ARRAY_LEN(k_ttypes) || k_ttypes[type].bytes == 0) return KS_ERR_UNSUPPORTED;
    if (blck) *blck = k_ttypes[type].blck;
    if (bytes) *bytes = k_ttypes[type].bytes;
    return 0;
}

int gguf_tensor_nbytes(uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t *out)
{
    uint32_t blck, bsz;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return KS_ERR_INVALID;
    if (gguf_ggml_type_layout(type, &blck, &bsz) != 0) return KS_ERR_UNSUPPORTED;
    int64_t n_el = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] <= 0) return KS_ERR_INVALID;
        if (__builtin_mul_overflow(n_el, ne[i], &n_el)) return KS_ERR_RANGE;
    }
    if (ne[0] % blck != 0) return KS_ERR_INVALID;
    uint64_t nb = (uint64_t)(ne[0] / blck) * bsz;
    for (uint32_t i = 1; i < n_dims; i++)
        if (__builtin_mul_overflow(nb, (uint64_t)ne[i], &nb)) return KS_ERR_RANGE;
    *out = nb;
    return 0;
}

/* ---- the parsed file ------------------------------------------------------------------ */

typedef struct gguf_kv {
    gguf_str key;
    gguf_type type;
    uint64_t key_pos;    /* byte offset of the key's length prefix, for messages */
    const uint8_t *val;  /* scalar value bytes, or an array's first element */
    gguf_str str;        /* STRING values */
    gguf_type elem_type; /* ARRAY values */
    uint64_t n;          /* ARRAY element count */
    uint64_t *str_offs;  /* ARRAY of STRING: offset of each element's length prefix */
} gguf_kv;

struct gguf_file {
    const uint8_t *base;
    uint64_t size;
    void *map; /* non-NULL when we own an mmap */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_start;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t *str_offs; /* one allocation for all string-array indexes */
    int64_t *kv_hash;   /* open addressing, -1 = empty, size hash_cap */
    int64_t *t_hash;
    uint64_t kv_hash_cap, t_hash_cap;
};

/* Parse state: a bounded cursor plus where to put diagnostics. */
typedef struct gguf_rd {
    const uint8_t *p;
    uint64_t len, pos;
    ks_diag *d;
    const char *what; /* "metadata key 'x'" or "tensor 'y'" context for messages */
    char what_buf[200];
} gguf_rd;

static uint64_t hash_bytes(const char *s, uint64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static void set_key(ks_diag *d, gguf_str s)
{
    if (!d) return;
    size_t n = s.len < sizeof(d->key) - 1 ? (size_t)s.len : sizeof(d->key) - 1;
    memcpy(d->key, s.ptr, n);
    d->key[n] = 0;
}

/* A printable, truncated copy of a name for messages. */
static const char *show(gguf_str s, char *buf, size_t cap)
{
    size_t n = 0;
    for (uint64_t i = 0; i < s.len && n + 4 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[n++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    if (s.len > cap - 4) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

static int rd_need(gguf_rd *r, uint64_t n, const char *item)
{
    if (n > r->len - r->pos)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s at byte %" PRIu64 ": %s needs %" PRIu64
                           " bytes but the file ends after %" PRIu64 " (size %" PRIu64 ")",
                           r->what, r->pos, item, n, r->len - r->pos, r->len);
    return 0;
}

static int rd_u32(gguf_rd *r, uint32_t *v, const char *item)
{
    int rc = rd_need(r, 4, item);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(gguf_rd *r, uint64_t *v, const char *item)
{
    int rc = rd_need(r, 8, item);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(gguf_rd *r, gguf_str *s, const char *item)
{
    uint64_t at = r->pos, n;
    int rc = rd_u64(r, &n, item);
    if (rc) return rc;
    if (n > r->len - r->pos)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s at byte %" PRIu64 ": %s length %" PRIu64 " exceeds file (%" PRIu64
                           " bytes left of %" PRIu64 ")",
                           r->what, at, item, n, r->len - r->pos, r->len);
    s->ptr = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += n;
    return 0;
}

static bool utf8_valid(const char *s, uint64_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (uint64_t i = 0; i < n;) {
        unsigned c = p[i];
        uint64_t k;
        uint32_t cp;
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else
            return false;
        if (n - i <= k) return false;
        for (uint64_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k + 1;
    }
    return true;
}

/* Size of a fixed-size value type, 0 for STRING/ARRAY, -1 for an unknown type. */
static int type_size(uint32_t t)
{
    static const int sz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_TYPE_COUNT ? sz[t] : -1;
}

/* Smallest encoding of one element of type t (for count-vs-bytes checks). */
static uint64_t type_min_bytes(uint32_t t)
{
    if (t == GGUF_TYPE_STRING) return 8;
    if (t == GGUF_TYPE_ARRAY) return 12;
    return (uint64_t)type_size(t);
}

static int check_bools(gguf_rd *r, const uint8_t *v, uint64_t n, uint64_t at)
{
    for (uint64_t i = 0; i < n; i++)
        if (v[i] > 1)
            return ks_diag_set(r->d, KS_ERR_FORMAT,
                               "%s at byte %" PRIu64 ": bool value %u is not 0 or 1", r->what,
                               at + i, v[i]);
    return 0;
}

/* Validates and skips an array body (elem type + count + elements). When kv is non-NULL
 * (top level) records what getters need; nested arrays are only validated. */
static int parse_array(gguf_rd *r, gguf_kv *kv, int depth, uint64_t **str_slots)
{
    uint64_t at = r->pos, n;
    uint32_t et;
    int rc;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s at byte %" PRIu64 ": arrays nested deeper than %d", r->what, at,
                           GGUF_MAX_ARRAY_DEPTH);
    if ((rc = rd_u32(r, &et, "array element type")) || (rc = rd_u64(r, &n, "array length")))
        return rc;
    if (type_size(et) < 0)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s at byte %" PRIu64 ": unknown array element type %" PRIu32, r->what,
                           at, et);
    uint64_t minb = type_min_bytes(et);
    if (n > (r->len - r->pos) / minb)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s at byte %" PRIu64 ": array length %" PRIu64 " exceeds file (%" PRIu64
                           " bytes left, %" PRIu64 " per element)",
                           r->what, at, n, r->len - r->pos, minb);
    const uint8_t *first = r->p + r->pos;
    if (kv) {
        kv->elem_type = (gguf_type)et;
        kv->n = n;
        kv->val = first;
    }
    if (et == GGUF_TYPE_STRING) {
        uint64_t *slots = (kv && str_slots) ? *str_slots : NULL;
        if (slots) kv->str_offs = slots;
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            if (slots) slots[i] = r->pos;
            if ((rc = rd_str(r, &s, "array string"))) return rc;
        }
        if (slots) *str_slots = slots + n;
        return 0;
    }
    if (et == GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < n; i++)
            if ((rc = parse_array(r, NULL, depth + 1, NULL))) return rc;
        return 0;
    }
    uint64_t bytes = n * minb; /* cannot overflow: n <= left / minb */
    if (et == GGUF_TYPE_BOOL && (rc = check_bools(r, first, n, r->pos))) return rc;
    r->pos += bytes;
    return 0;
}

static int parse_value(gguf_rd *r, gguf_kv *kv, uint64_t **str_slots)
{
    int rc;
    uint32_t t = kv->type;
    if (t == GGUF_TYPE_STRING) return rd_str(r, &kv->str, "string value");
    if (t == GGUF_TYPE_ARRAY) return parse_array(r, kv, 1, str_slots);
    int sz = type_size(t);
    if ((rc = rd_need(r, (uint64_t)sz, "value"))) return rc;
    kv->val = r->p + r->pos;
    if (t == GGUF_TYPE_BOOL && (rc = check_bools(r, kv->val, 1, r->pos))) return rc;
    r->pos += (uint64_t)sz;
    return 0;
}

/* Inserts index i of name s into an open-addressing table; returns the clashing index
 * (a duplicate) or -1. */
static int64_t hash_insert(int64_t *tab, uint64_t cap, gguf_str s, int64_t i,
                           gguf_str (*name_of)(const gguf_file *, int64_t), const gguf_file *f)
{
    uint64_t h = hash_bytes(s.ptr, s.len) & (cap - 1);
    for (;; h = (h + 1) & (cap - 1)) {
        if (tab[h] < 0) {
            tab[h] = i;
            return -1;
        }
        gguf_str o = name_of(f, tab[h]);
        if (o.len == s.len && memcmp(o.ptr, s.ptr, s.len) == 0) return tab[h];
    }
}

static int64_t hash_find(const int64_t *tab, uint64_t cap, const char *s, size_t n,
                         gguf_str (*name_of)(const gguf_file *, int64_t), const gguf_file *f)
{
    if (!tab) return -1;
    uint64_t h = hash_bytes(s, n) & (cap - 1);
    for (;; h = (h + 1) & (cap - 1)) {
        if (tab[h] < 0) return -1;
        gguf_str o = name_of(f, tab[h]);
        if (o.len == n && memcmp(o.ptr, s, n) == 0) return tab[h];
    }
}

static gguf_str kv_name(const gguf_file *f, int64_t i)
{
    return f->kv[i].key;
}
static gguf_str tensor_name(const gguf_file *f, int64_t i)
{
    return f->tensors[i].name;
}

static int hash_alloc(uint64_t n, int64_t **tab, uint64_t *cap)
{
    uint64_t c = 16;
    while (c < 2 * n)
        c <<= 1;
    *tab = malloc(c * sizeof(int64_t));
    if (!*tab) return KS_ERR_NOMEM;
    memset(*tab, 0xff, c * sizeof(int64_t));
    *cap = c;
    return 0;
}

/* Counts string-array elements in a first pass so the offsets index is one allocation. */
static int parse_kvs(gguf_file *f, gguf_rd *r)
{
    int rc;
    if ((rc = hash_alloc((uint64_t)f->n_kv, &f->kv_hash, &f->kv_hash_cap))) return rc;
    uint64_t *slots = f->str_offs;
    for (int64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint32_t t;
        char nb[96];
        kv->key_pos = r->pos;
        snprintf(r->what_buf, sizeof(r->what_buf), "metadata entry %" PRId64, i);
        r->what = r->what_buf;
        if ((rc = rd_str(r, &kv->key, "key"))) return rc;
        snprintf(r->what_buf, sizeof(r->what_buf), "metadata key '%s'",
                 show(kv->key, nb, sizeof(nb)));
        set_key(r->d, kv->key);
        if (kv->key.len == 0 || !utf8_valid(kv->key.ptr, kv->key.len))
            return ks_diag_set(r->d, KS_ERR_FORMAT, "%s at byte %" PRIu64 ": key is %s", r->what,
                               kv->key_pos,
                               kv->key.len == 0 ? "empty" : "not valid UTF-8 (or has NUL)");
        if ((rc = rd_u32(r, &t, "value type"))) return rc;
        if (type_size(t) < 0)
            return ks_diag_set(r->d, KS_ERR_FORMAT,
                               "%s at byte %" PRIu64 ": unknown value type %" PRIu32, r->what,
                               r->pos - 4, t);
        kv->type = (gguf_type)t;
        if ((rc = parse_value(r, kv, &slots))) return rc;
        int64_t dup = hash_insert(f->kv_hash, f->kv_hash_cap, kv->key, i, kv_name, f);
        if (dup >= 0)
            return ks_diag_set(r->d, KS_ERR_FORMAT,
                               "%s at byte %" PRIu64 ": duplicate key (first at byte %" PRIu64 ")",
                               r->what, kv->key_pos, f->kv[dup].key_pos);
        if (r->d) r->d->key[0] = 0;
    }
    return 0;
}

/* Pre-pass over the metadata to count string-array elements: the kvs are re-parsed with
 * validation afterwards, so this pass only needs to be memory-safe, not thorough. */
static uint64_t count_str_elems(gguf_rd r0, uint64_t n_kv)
{
    gguf_rd r = r0;
    ks_diag scratch;
    r.d = &scratch;
    r.what = "";
    uint64_t total = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_str key;
        uint32_t t, et;
        uint64_t n;
        if (rd_str(&r, &key, "") || rd_u32(&r, &t, "")) break;
        if (t != GGUF_TYPE_ARRAY) {
            gguf_kv kv = {.type = (gguf_type)t};
            if (type_size(t) < 0 || parse_value(&r, &kv, NULL)) break;
            continue;
        }
        uint64_t at = r.pos;
        if (rd_u32(&r, &et, "") || rd_u64(&r, &n, "")) break;
        /* Counted before the elements are validated: the real pass fills slots for the
         * elements it reads before it fails, and it passes the same length check first. */
        if (et == GGUF_TYPE_STRING && n <= (r.len - r.pos) / 8) total += n;
        r.pos = at;
        if (parse_array(&r, NULL, 1, NULL)) break;
    }
    return total;
}

/* ---- tensors -------------------------------------------------------------------------- */

static int parse_tensor_info(gguf_file *f, gguf_rd *r, int64_t i)
{
    gguf_tensor *t = &f->tensors[i];
    uint64_t at = r->pos;
    char nb[96];
    int rc;
    snprintf(r->what_buf, sizeof(r->what_buf), "tensor info %" PRId64, i);
    r->what = r->what_buf;
    if ((rc = rd_str(r, &t->name, "tensor name"))) return rc;
    snprintf(r->what_buf, sizeof(r->what_buf), "tensor '%s'", show(t->name, nb, sizeof(nb)));
    set_key(r->d, t->name);
    if (t->name.len == 0 || !utf8_valid(t->name.ptr, t->name.len))
        return ks_diag_set(r->d, KS_ERR_FORMAT, "%s at byte %" PRIu64 ": name is %s", r->what, at,
                           t->name.len == 0 ? "empty" : "not valid UTF-8 (or has NUL)");
    if ((rc = rd_u32(r, &t->n_dims, "n_dims"))) return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return ks_diag_set(r->d, KS_ERR_FORMAT, "%s: n_dims %" PRIu32 " is out of range (1..%d)",
                           r->what, t->n_dims, GGUF_MAX_DIMS);
    for (int k = 0; k < GGUF_MAX_DIMS; k++)
        t->ne[k] = 1;
    for (uint32_t k = 0; k < t->n_dims; k++) {
        uint64_t v;
        if ((rc = rd_u64(r, &v, "dimension"))) return rc;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return ks_diag_set(r->d, KS_ERR_FORMAT, "%s: dimension %" PRIu32 " is %s (%" PRId64 ")",
                               r->what, k, v == 0 ? "zero" : "negative", (int64_t)v);
        t->ne[k] = (int64_t)v;
    }
    if ((rc = rd_u32(r, &t->type, "tensor type")) || (rc = rd_u64(r, &t->offset, "offset")))
        return rc;
    uint32_t blck, bsz;
    if (gguf_ggml_type_layout(t->type, &blck, &bsz) != 0)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "unsupported tensor type %" PRIu32 " (an unknown type id) in %s",
                           t->type, r->what);
    rc = gguf_tensor_nbytes(t->n_dims, t->ne, t->type, &t->nbytes);
    if (rc == KS_ERR_INVALID)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s: row length %" PRId64 " is not a multiple of the block size %" PRIu32
                           " of type %s",
                           r->what, t->ne[0], blck, k_ttypes[t->type].name);
    if (rc)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s: shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                           "] overflows (dimension product too large)",
                           r->what, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    if (t->offset % f->alignment != 0)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "%s: data offset %" PRIu64
                           " is not a multiple of the alignment %" PRIu64,
                           r->what, t->offset, f->alignment);
    int64_t dup = hash_insert(f->t_hash, f->t_hash_cap, t->name, i, tensor_name, f);
    if (dup >= 0)
        return ks_diag_set(r->d, KS_ERR_FORMAT, "%s at byte %" PRIu64 ": duplicate tensor name",
                           r->what, at);
    return 0;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx)
{
    const gguf_file *f = ctx;
    uint64_t x = f->tensors[*(const int64_t *)a].offset;
    uint64_t y = f->tensors[*(const int64_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Checks data ranges: inside the file (unless meta_only) and pairwise disjoint. */
static int check_data(gguf_file *f, ks_diag *d, bool meta_only)
{
    uint64_t data_size = f->size > f->data_start ? f->size - f->data_start : 0;
    int64_t n = f->n_tensors;
    char nb[96], nb2[96];
    for (int64_t i = 0; i < n; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t end;
        bool ovf = __builtin_add_overflow(t->offset, t->nbytes, &end);
        if (!ovf && end <= data_size) {
            t->data = f->base + f->data_start + t->offset;
            continue;
        }
        t->data = NULL;
        if (meta_only && !ovf) continue;
        set_key(d, t->name);
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "tensor '%s': data [offset %" PRIu64 ", size %" PRIu64
                           "] extends past end of file (size %" PRIu64 ", data section at %" PRIu64
                           ")",
                           show(t->name, nb, sizeof(nb)), f->data_start + t->offset, t->nbytes,
                           f->size, f->data_start);
    }
    if (n < 2) return 0;
    int64_t *ord = malloc((size_t)n * sizeof(int64_t));
    if (!ord) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory sorting tensors");
    for (int64_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, (size_t)n, sizeof(int64_t), cmp_by_offset, f);
    int rc = 0;
    for (int64_t k = 1; k < n && rc == 0; k++) {
        const gguf_tensor *a = &f->tensors[ord[k - 1]], *b = &f->tensors[ord[k]];
        if (b->offset < a->offset + a->nbytes) { /* no overflow: checked above */
            set_key(d, b->name);
            rc = ks_diag_set(d, KS_ERR_FORMAT,
                             "tensor '%s': data [offset %" PRIu64 ", size %" PRIu64
                             "] overlaps tensor '%s' [offset %" PRIu64 ", size %" PRIu64 "]",
                             show(b->name, nb, sizeof(nb)), b->offset, b->nbytes,
                             show(a->name, nb2, sizeof(nb2)), a->offset, a->nbytes);
        }
    }
    free(ord);
    return rc;
}

/* ---- header and top level ------------------------------------------------------------ */

static int parse_header(gguf_file *f, gguf_rd *r, uint64_t *n_tensors, uint64_t *n_kv)
{
    int rc;
    r->what = "header";
    if (f->size < 4 || memcmp(f->base, GGUF_MAGIC, 4) != 0) {
        if (f->size < 4)
            return ks_diag_set(r->d, KS_ERR_FORMAT,
                               "not a GGUF file: %" PRIu64 " bytes, too short for the magic",
                               f->size);
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "not a GGUF file: bad magic %02x %02x %02x %02x (expected 'GGUF')",
                           f->base[0], f->base[1], f->base[2], f->base[3]);
    }
    r->pos = 4;
    if ((rc = rd_u32(r, &f->version, "version"))) return rc;
    if (f->version == 1)
        return ks_diag_set(r->d, KS_ERR_UNSUPPORTED,
                           "GGUF version 1 is not supported (only v2 and v3); re-convert the "
                           "model with a current llama.cpp");
    if ((f->version & 0xffff) == 0 && f->version != 0)
        return ks_diag_set(r->d, KS_ERR_UNSUPPORTED,
                           "big-endian GGUF (version field 0x%08" PRIx32
                           ") is not supported; only little-endian files",
                           f->version);
    if (f->version != 2 && f->version != 3)
        return ks_diag_set(r->d, KS_ERR_UNSUPPORTED,
                           "GGUF version %" PRIu32 " is not supported (only v2 and v3)",
                           f->version);
    if ((rc = rd_u64(r, n_tensors, "tensor count")) || (rc = rd_u64(r, n_kv, "metadata count")))
        return rc;
    uint64_t left = r->len - r->pos;
    if (*n_kv > left / GGUF_MIN_KV_BYTES)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "metadata count %" PRIu64 " is impossible for a file of %" PRIu64
                           " bytes",
                           *n_kv, f->size);
    if (*n_tensors > left / GGUF_MIN_TI_BYTES)
        return ks_diag_set(r->d, KS_ERR_FORMAT,
                           "tensor count %" PRIu64 " is impossible for a file of %" PRIu64 " bytes",
                           *n_tensors, f->size);
    return 0;
}

static int read_alignment(gguf_file *f, ks_diag *d)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(f, "general.alignment");
    if (i < 0) return 0;
    const gguf_kv *kv = &f->kv[i];
    set_key(d, kv->key);
    if (kv->type != GGUF_TYPE_UINT32)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "metadata key 'general.alignment' at byte %" PRIu64
                           ": must be a uint32 (type %d found)",
                           kv->key_pos, (int)kv->type);
    uint32_t a;
    memcpy(&a, kv->val, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "metadata key 'general.alignment' at byte %" PRIu64
                           ": alignment %" PRIu32 " is not a non-zero power of two",
                           kv->key_pos, a);
    if (d) d->key[0] = 0;
    f->alignment = a;
    return 0;
}

static int parse_all(gguf_file *f, ks_diag *d, bool meta_only)
{
    gguf_rd r = {.p = f->base, .len = f->size, .d = d, .what = "header"};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;
    if ((rc = parse_header(f, &r, &n_tensors, &n_kv))) return rc;
    f->n_kv = (int64_t)n_kv;
    f->kv = calloc(n_kv ? n_kv : 1, sizeof(gguf_kv));
    if (!f->kv) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory for %" PRIu64 " keys", n_kv);
    /* Each string element takes >= 8 bytes, so this allocation is at most the file size. */
    uint64_t n_str = count_str_elems(r, n_kv);
    if (n_str) {
        f->str_offs = malloc(n_str * sizeof(uint64_t));
        if (!f->str_offs) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory for string index");
    }
    if ((rc = parse_kvs(f, &r))) return rc;
    if ((rc = read_alignment(f, d))) return rc;
    r.what = "tensor infos";
    if (n_tensors > (r.len - r.pos) / GGUF_MIN_TI_BYTES)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "tensor count %" PRIu64 " is impossible for a file of %" PRIu64
                           " bytes (%" PRIu64 " left after metadata)",
                           n_tensors, f->size, r.len - r.pos);
    f->n_tensors = (int64_t)n_tensors;
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(gguf_tensor));
    if (!f->tensors || hash_alloc(n_tensors, &f->t_hash, &f->t_hash_cap))
        return ks_diag_set(d, KS_ERR_NOMEM, "out of memory for %" PRIu64 " tensors", n_tensors);
    for (int64_t i = 0; i < f->n_tensors; i++)
        if ((rc = parse_tensor_info(f, &r, i))) return rc;
    if (d) d->key[0] = 0;
    uint64_t pad = (f->alignment - r.pos % f->alignment) % f->alignment;
    f->data_start = r.pos + pad; /* r.pos <= size, pad < 2^32: no overflow */
    return check_data(f, d, meta_only);
}

static int open_common(const void *buf, size_t len, void *map, gguf_file **out, ks_diag *d,
                       bool meta_only)
{
    gguf_file *f = calloc(1, sizeof(*f));
    if (!f) {
        if (map) munmap(map, len);
        return ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    }
    f->base = buf;
    f->size = len;
    f->map = map;
    int rc = parse_all(f, d, meta_only);
    if (rc) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

static int open_path(const char *path, gguf_file **out, ks_diag *d, bool meta_only)
{
    ks_diag_clear(d);
    if (d) snprintf(d->file, sizeof(d->file), "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ks_diag_set(d, KS_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return ks_diag_set(d, KS_ERR_IO, "cannot stat or not a regular file: %s",
                           S_ISREG(st.st_mode) ? strerror(e) : "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return ks_diag_set(d, KS_ERR_FORMAT, "not a GGUF file: file is empty");
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return ks_diag_set(d, KS_ERR_IO, "mmap failed: %s", strerror(e));
    gguf_guard_add(map, len, path); /* a truncated file must not SIGBUS the process */
    int rc = open_common(map, len, map, out, d, meta_only);
    if (rc) gguf_guard_remove(map);
    return rc;
}

bool gguf_is_mapped(const gguf_file *f)
{
    return f->map != NULL;
}

int gguf_open(const char *path, gguf_file **out, ks_diag *d)
{
    return open_path(path, out, d, false);
}

int gguf_open_meta(const char *path, gguf_file **out, ks_diag *d)
{
    return open_path(path, out, d, true);
}

int gguf_open_memory(const void *buf, size_t len, gguf_file **out, ks_diag *d)
{
    ks_diag_clear(d);
    if (d) snprintf(d->file, sizeof(d->file), "<memory>");
    if (!buf && len) return ks_diag_set(d, KS_ERR_INVALID, "NULL buffer");
    return open_common(buf ? buf : "", len, NULL, out, d, false);
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    if (f->map) {
        gguf_guard_remove(f->map);
        munmap(f->map, f->size);
    }
    free(f->kv);
    free(f->tensors);
    free(f->str_offs);
    free(f->kv_hash);
    free(f->t_hash);
    free(f);
}

/* ---- accessors ------------------------------------------------------------------------ */

uint32_t gguf_version(const gguf_file *f)
{
    return f->version;
}
uint64_t gguf_alignment(const gguf_file *f)
{
    return f->alignment;
}
int64_t gguf_n_kv(const gguf_file *f)
{
    return f->n_kv;
}
int64_t gguf_n_tensors(const gguf_file *f)
{
    return f->n_tensors;
}

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    return hash_find(f->kv_hash, f->kv_hash_cap, key, strlen(key), kv_name, f);
}

gguf_str gguf_kv_key(const gguf_file *f, int64_t i)
{
    gguf_str none = {"", 0};
    return (i >= 0 && i < f->n_kv) ? f->kv[i].key : none;
}

gguf_type gguf_kv_type(const gguf_file *f, int64_t i)
{
    return (i >= 0 && i < f->n_kv) ? f->kv[i].type : GGUF_TYPE_COUNT;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i)
{
    return (i >= 0 && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    int64_t i = hash_find(f->t_hash, f->t_hash_cap, name, strlen(name), tensor_name, f);
    return i < 0 ? NULL : &f->tensors[i];
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static const gguf_kv *kv_get(const gguf_file *f, const char *key)
{
    int64_t i = gguf_find_key(f, key);
    return i < 0 ? NULL : &f->kv[i];
}

/* Any integer value, sign-extended into 64 bits; *neg when a signed value is below zero. */
static int kv_int(const gguf_kv *kv, uint64_t *raw, bool *neg)
{
    static const uint8_t kind[GGUF_TYPE_COUNT] = {1, 2, 1, 2, 1, 2, 0, 0, 0, 0, 1, 2, 0};
    if (kind[kv->type] == 0) return KS_ERR_FORMAT;
    unsigned bits = 8u * (unsigned)type_size(kv->type);
    uint64_t v = 0;
    for (unsigned i = 0; i < bits / 8; i++)
        v |= (uint64_t)kv->val[i] << (8 * i);
    if (kind[kv->type] == 2 && bits < 64 && ((v >> (bits - 1)) & 1)) v |= ~0ull << bits;
    *neg = kind[kv->type] == 2 && (int64_t)v < 0;
    *raw = v;
    return 0;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = kv_get(f, key);
    uint64_t v;
    bool neg;
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv_int(kv, &v, &neg)) return KS_ERR_FORMAT;
    if (!neg && v > (uint64_t)INT64_MAX) return KS_ERR_RANGE;
    *out = (int64_t)v;
    return 0;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    const gguf_kv *kv = kv_get(f, key);
    uint64_t v;
    bool neg;
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv_int(kv, &v, &neg)) return KS_ERR_FORMAT;
    if (neg || v > UINT32_MAX) return KS_ERR_RANGE;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = kv_get(f, key);
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        double x;
        memcpy(&x, kv->val, 8);
        *out = (float)x;
    } else {
        return KS_ERR_FORMAT;
    }
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = kv_get(f, key);
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv->type != GGUF_TYPE_BOOL) return KS_ERR_FORMAT;
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = kv_get(f, key);
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv->type != GGUF_TYPE_STRING) return KS_ERR_FORMAT;
    *out = kv->str;
    return 0;
}

int gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem_type, uint64_t *n,
                 const void **data)
{
    const gguf_kv *kv = kv_get(f, key);
    if (!kv) return KS_ERR_NOT_FOUND;
    if (kv->type != GGUF_TYPE_ARRAY) return KS_ERR_FORMAT;
    if (kv->elem_type == GGUF_TYPE_ARRAY) return KS_ERR_UNSUPPORTED;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    if (data) *data = kv->val;
    return 0;
}

int gguf_kv_arr_str(const gguf_file *f, int64_t kvi, uint64_t i, gguf_str *out)
{
    if (kvi < 0 || kvi >= f->n_kv) return KS_ERR_NOT_FOUND;
    const gguf_kv *kv = &f->kv[kvi];
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING) return KS_ERR_FORMAT;
    if (i >= kv->n) return KS_ERR_RANGE;
    uint64_t at = kv->str_offs[i], len;
    memcpy(&len, f->base + at, 8);
    out->ptr = (const char *)f->base + at + 8;
    out->len = len;
    return 0;
}

int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out)
{
    return gguf_kv_arr_str(f, gguf_find_key(f, key), i, out);
}

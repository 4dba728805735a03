/* gguf_write.c - builds GGUF v3 files in memory, for tests, benches and tools.
 *
 * Why: tests need models and corrupt variants of them without shipping binaries, and benches
 * need models of chosen shapes. The writer is the reader's mirror: metadata is serialised as
 * it is added (one growing byte buffer), tensors are kept as copies and laid out at write
 * time, each at an offset aligned to general.alignment (32 unless the caller set a valid
 * power of two), with zero padding, exactly as llama.cpp's writer lays them out.
 * Invariant: keys and tensor names are unique and every tensor's byte size matches its shape;
 * so what it writes always opens with gguf_open (corrupt files are made by mutating bytes).
 */
#include "kvserve/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint8_t *data; /* owned copy, nbytes */
    uint64_t nbytes;
} wtensor;

struct gguf_writer {
    wbuf kv;     /* serialised metadata entries */
    char **keys; /* owned copies, for the duplicate check */
    int64_t n_kv, cap_kv;
    wtensor *tensors;
    int64_t n_t, cap_t;
    uint32_t alignment;
};

static int wb_reserve(wbuf *b, size_t n)
{
    if (n <= b->cap - b->len) return 0;
    size_t need;
    if (ks_add_size(b->len, n, &need)) return KS_ERR_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (ks_mul_size(cap, 2, &cap)) return KS_ERR_NOMEM;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) return KS_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int wb_put(wbuf *b, const void *src, size_t n)
{
    int rc = wb_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int wb_u32(wbuf *b, uint32_t v)
{
    return wb_put(b, &v, 4);
}
static int wb_u64(wbuf *b, uint64_t v)
{
    return wb_put(b, &v, 8);
}

static int wb_str(wbuf *b, const char *s, size_t n)
{
    int rc = wb_u64(b, n);
    return rc ? rc : wb_put(b, s, n);
}

static int wb_zero(wbuf *b, size_t n)
{
    int rc = wb_reserve(b, n);
    if (rc) return rc;
    memset(b->p + b->len, 0, n);
    b->len += n;
    return 0;
}

int gguf_writer_create(gguf_writer **out)
{
    gguf_writer *w = calloc(1, sizeof(*w));
    if (!w) return KS_ERR_NOMEM;
    w->alignment = 32;
    *out = w;
    return 0;
}

void gguf_writer_destroy(gguf_writer *w)
{
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->keys);
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* Starts an entry: checks the key, records it, writes key + type. On failure the metadata
 * buffer is rolled back by the caller through w->kv.len. */
static int kv_begin(gguf_writer *w, const char *key, gguf_type t)
{
    if (!key || !*key) return KS_ERR_INVALID;
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return KS_ERR_INVALID;
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        char **k = realloc(w->keys, (size_t)cap * sizeof(char *));
        if (!k) return KS_ERR_NOMEM;
        w->keys = k;
        w->cap_kv = cap;
    }
    char *copy = strdup(key);
    if (!copy) return KS_ERR_NOMEM;
    int rc = wb_str(&w->kv, key, strlen(key));
    if (!rc) rc = wb_u32(&w->kv, (uint32_t)t);
    if (rc) {
        free(copy);
        return rc;
    }
    w->keys[w->n_kv++] = copy;
    return 0;
}

/* Undo the last kv_begin after a failed value write. */
static int kv_abort(gguf_writer *w, size_t len0, int rc)
{
    w->kv.len = len0;
    free(w->keys[--w->n_kv]);
    return rc;
}

static int set_scalar(gguf_writer *w, const char *key, gguf_type t, const void *v, size_t n)
{
    size_t len0 = w->kv.len;
    int rc = kv_begin(w, key, t);
    if (rc) return rc;
    rc = wb_put(&w->kv, v, n);
    return rc ? kv_abort(w, len0, rc) : 0;
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    int rc = set_scalar(w, key, GGUF_TYPE_UINT32, &v, 4);
    /* A valid general.alignment also governs the layout; an invalid one is written as-is
     * (tests use that to make corrupt files) and the layout stays at 32. */
    if (!rc && strcmp(key, "general.alignment") == 0 && v && (v & (v - 1)) == 0) w->alignment = v;
    return rc;
}

int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT32, &v, 4);
}

int gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b, 1);
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) return KS_ERR_INVALID;
    size_t len0 = w->kv.len;
    int rc = kv_begin(w, key, GGUF_TYPE_STRING);
    if (rc) return rc;
    rc = wb_str(&w->kv, v, strlen(v));
    return rc ? kv_abort(w, len0, rc) : 0;
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type, const void *data,
                        uint64_t n)
{
    static const uint8_t sz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if ((unsigned)elem_type >= GGUF_TYPE_COUNT || sz[elem_type] == 0) return KS_ERR_INVALID;
    size_t bytes;
    if (n > SIZE_MAX || ks_mul_size((size_t)n, sz[elem_type], &bytes)) return KS_ERR_RANGE;
    if (bytes && !data) return KS_ERR_INVALID;
    size_t len0 = w->kv.len;
    int rc = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (rc) return rc;
    if ((rc = wb_u32(&w->kv, (uint32_t)elem_type)) || (rc = wb_u64(&w->kv, n)) ||
        (rc = wb_put(&w->kv, data, bytes)))
        return kv_abort(w, len0, rc);
    return 0;
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n)
{
    if (n && !strs) return KS_ERR_INVALID;
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i]) return KS_ERR_INVALID;
    size_t len0 = w->kv.len;
    int rc = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (rc) return rc;
    if ((rc = wb_u32(&w->kv, GGUF_TYPE_STRING)) || (rc = wb_u64(&w->kv, n)))
        return kv_abort(w, len0, rc);
    for (uint64_t i = 0; i < n; i++)
        if ((rc = wb_str(&w->kv, strs[i], strlen(strs[i])))) return kv_abort(w, len0, rc);
    return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t type, const void *data, uint64_t nbytes)
{
    uint64_t want;
    if (!name || !*name || !ne) return KS_ERR_INVALID;
    int rc = gguf_tensor_nbytes(n_dims, ne, type, &want);
    if (rc) return rc;
    if (want != nbytes || nbytes > SIZE_MAX) return KS_ERR_INVALID;
    for (int64_t i = 0; i < w->n_t; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return KS_ERR_INVALID;
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *t = realloc(w->tensors, (size_t)cap * sizeof(wtensor));
        if (!t) return KS_ERR_NOMEM;
        w->tensors = t;
        w->cap_t = cap;
    }
    wtensor t = {.n_dims = n_dims, .type = type, .nbytes = nbytes};
    for (int k = 0; k < GGUF_MAX_DIMS; k++)
        t.ne[k] = k < (int)n_dims ? ne[k] : 1;
    t.name = strdup(name);
    t.data = calloc(1, nbytes ? (size_t)nbytes : 1); /* data == NULL: zero-filled tensor */
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return KS_ERR_NOMEM;
    }
    if (data && nbytes) memcpy(t.data, data, (size_t)nbytes);
    w->tensors[w->n_t++] = t;
    return 0;
}

static size_t pad_to(size_t n, size_t a)
{
    return (a - n % a) % a;
}

int gguf_writer_write_memory(gguf_writer *w, void **out, size_t *out_len)
{
    wbuf b = {0};
    int rc = 0;
    rc = wb_put(&b, "GGUF", 4);
    if (!rc) rc = wb_u32(&b, 3);
    if (!rc) rc = wb_u64(&b, (uint64_t)w->n_t);
    if (!rc) rc = wb_u64(&b, (uint64_t)w->n_kv);
    if (!rc) rc = wb_put(&b, w->kv.p, w->kv.len);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t && !rc; i++) {
        const wtensor *t = &w->tensors[i];
        rc = wb_str(&b, t->name, strlen(t->name));
        if (!rc) rc = wb_u32(&b, t->n_dims);
        for (uint32_t k = 0; k < t->n_dims && !rc; k++)
            rc = wb_u64(&b, (uint64_t)t->ne[k]);
        if (!rc) rc = wb_u32(&b, t->type);
        if (!rc) rc = wb_u64(&b, off);
        off += t->nbytes + pad_to((size_t)t->nbytes, w->alignment);
    }
    if (!rc) rc = wb_zero(&b, pad_to(b.len, w->alignment));
    for (int64_t i = 0; i < w->n_t && !rc; i++) {
        const wtensor *t = &w->tensors[i];
        rc = wb_put(&b, t->data, (size_t)t->nbytes);
        if (!rc) rc = wb_zero(&b, pad_to((size_t)t->nbytes, w->alignment));
    }
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

int gguf_writer_write_file(gguf_writer *w, const char *path)
{
    void *buf;
    size_t len;
    int rc = gguf_writer_write_memory(w, &buf, &len);
    if (rc) return rc;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(buf);
        return KS_ERR_IO;
    }
    size_t wr = fwrite(buf, 1, len, fp);
    int err = fclose(fp);
    free(buf);
    return (wr != len || err) ? KS_ERR_IO : 0;
}

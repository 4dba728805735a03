/* persist.c - the prefix cache on disk (persist.h): model identity, the file format, atomic
 * writes, whole-file validation before loading, the directory checks and LRU trimming.
 *
 * Why validate the whole image first: a half-loaded cache with a corrupt block would serve
 * wrong keys and values silently, so a file is read into memory (bounded by the size cap),
 * its size, key, parents and checksum are checked, and only then are pool blocks filled.
 * The host is assumed little-endian (x86-64, the only target), so fields are copied as is.
 */
#include "kvserve/persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KVP_MAGIC "KVSPFX01"
#define KVP_HEADER 64 /* magic 8, version 4, reserved 4, hash 8, 8 x u32, n_entries 8 */

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV_BASIS 0xcbf29ce484222325ull

/* ---------------------------------------------------------------- model identity */

/* Hashes n bytes at off (fewer at the end of the file). */
static int hash_range(FILE *f, long off, size_t n, uint64_t *h)
{
    uint8_t buf[16384];
    if (fseek(f, off, SEEK_SET) != 0) return KS_ERR_IO;
    while (n > 0) {
        size_t got = fread(buf, 1, n < sizeof(buf) ? n : sizeof(buf), f);
        if (got == 0) break;
        *h = fnv1a(*h, buf, got);
        n -= got;
    }
    return ferror(f) ? KS_ERR_IO : 0;
}

int kv_persist_model_hash(const char *path, uint64_t *out, ks_diag *d)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        if (f) fclose(f);
        return ks_diag_set(d, KS_ERR_IO, "%s: %s", path, strerror(errno));
    }
    uint64_t h = FNV_BASIS;
    int64_t meta[3] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
    h = fnv1a(h, (const uint8_t *)meta, sizeof(meta));
    int rc = hash_range(f, 0, 1 << 20, &h); /* GGUF header and metadata */
    for (int i = 1; i <= 16 && rc == 0 && st.st_size > (1 << 20); i++) /* tensor data samples */
        rc = hash_range(f, (long)((st.st_size / 17) * i), 4096, &h);
    fclose(f);
    if (rc) return ks_diag_set(d, rc, "%s: read error", path);
    *out = h;
    return 0;
}

void kv_persist_key_make(kv_pool *pool, int32_t n_layer, int32_t n_head_kv, uint64_t model_hash,
                         kv_persist_key *out)
{
    *out = (kv_persist_key){.model_hash = model_hash,
                            .k_dtype = (uint32_t)kv_pool_k_dtype(pool),
                            .v_dtype = (uint32_t)kv_pool_v_dtype(pool),
                            .n_layer = (uint32_t)n_layer,
                            .n_head_kv = (uint32_t)n_head_kv,
                            .head_dim = (uint32_t)kv_pool_head_dim(pool),
                            .block_tokens = (uint32_t)kv_pool_block_tokens(pool),
                            .block_bytes = (uint32_t)kv_pool_block_bytes(pool)};
}

/* ---------------------------------------------------------------- directory and names */

int kv_persist_dir_prepare(const char *dir, ks_diag *d)
{
    if (!dir || !dir[0]) return ks_diag_set(d, KS_ERR_INVALID, "persist_dir is empty");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ks_diag_set(d, KS_ERR_IO, "persist_dir %s: %s", dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0)
        return ks_diag_set(d, KS_ERR_IO, "persist_dir %s: %s", dir, strerror(errno));
    if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode))
        return ks_diag_set(d, KS_ERR_INVALID,
                           "persist_dir %s is not a directory (symlinks "
                           "are refused)",
                           dir);
    if (st.st_uid != geteuid())
        return ks_diag_set(d, KS_ERR_INVALID,
                           "persist_dir %s is owned by uid %u, not by this "
                           "user",
                           dir, (unsigned)st.st_uid);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return ks_diag_set(d, KS_ERR_INVALID,
                           "persist_dir %s is writable by group or others "
                           "(chmod 700 it)",
                           dir);
    return 0;
}

bool kv_persist_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 64 || !strcmp(name, ".") || !strcmp(name, "..")) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- parsing */

static size_t entry_bytes(const kv_persist_key *k)
{
    return 8 + 4 * (size_t)k->block_tokens +
           (size_t)k->n_layer * k->n_head_kv * (size_t)k->block_bytes;
}

static int check_header(const uint8_t *buf, size_t len, const kv_persist_key *key, uint64_t *n,
                        ks_diag *d)
{
    if (len < KVP_HEADER + 8 || memcmp(buf, KVP_MAGIC, 8) != 0)
        return ks_diag_set(d, KS_ERR_INVALID, "not a kvserve prefix-cache file (or truncated)");
    uint32_t ver, f[8];
    uint64_t hash;
    memcpy(&ver, buf + 8, 4);
    memcpy(&hash, buf + 16, 8);
    memcpy(f, buf + 24, sizeof(f));
    memcpy(n, buf + 56, 8);
    if (ver != 1) return ks_diag_set(d, KS_ERR_INVALID, "unsupported version %u", ver);
    if (hash != key->model_hash)
        return ks_diag_set(d, KS_ERR_INVALID, "written for another model file");
    if (f[0] != key->k_dtype || f[1] != key->v_dtype)
        return ks_diag_set(d, KS_ERR_INVALID, "written with other KV types");
    if (f[2] != key->n_layer || f[3] != key->n_head_kv || f[4] != key->head_dim ||
        f[5] != key->block_tokens || f[6] != key->block_bytes)
        return ks_diag_set(d, KS_ERR_INVALID, "written with another cache layout");
    size_t eb = entry_bytes(key);
    if (*n > (len - KVP_HEADER - 8) / eb || KVP_HEADER + *n * eb + 8 != len)
        return ks_diag_set(d, KS_ERR_INVALID,
                           "size does not match its %llu entries "
                           "(truncated?)",
                           (unsigned long long)*n);
    uint64_t want;
    memcpy(&want, buf + len - 8, 8);
    if (fnv1a(FNV_BASIS, buf, len - 8) != want)
        return ks_diag_set(d, KS_ERR_INVALID, "checksum mismatch (corrupt)");
    return 0;
}

int kv_persist_parse(const uint8_t *buf, size_t len, const kv_persist_key *key,
                     kv_persist_entry_fn fn, void *ud, ks_diag *d)
{
    uint64_t n = 0;
    if (!buf || !key || key->block_tokens == 0 || key->block_bytes == 0)
        return ks_diag_set(d, KS_ERR_INVALID, "bad arguments");
    int rc = check_header(buf, len, key, &n, d);
    if (rc) return rc;
    size_t eb = entry_bytes(key);
    for (uint64_t i = 0; i < n; i++) { /* parents first: all checked before any callback */
        int32_t parent;
        memcpy(&parent, buf + KVP_HEADER + i * eb, 4);
        if (parent < -1 || (int64_t)parent >= (int64_t)i)
            return ks_diag_set(d, KS_ERR_INVALID, "entry %llu: bad parent %d",
                               (unsigned long long)i, parent);
    }
    int32_t *tok = malloc((size_t)key->block_tokens * sizeof(int32_t));
    if (!tok) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; fn && i < n && rc == 0; i++) {
        const uint8_t *e = buf + KVP_HEADER + i * eb;
        int32_t parent;
        memcpy(&parent, e, 4);
        memcpy(tok, e + 8, (size_t)key->block_tokens * sizeof(int32_t));
        rc = fn(ud, (int64_t)i, parent, tok, e + 8 + 4 * (size_t)key->block_tokens);
        if (rc) ks_diag_set(d, rc, "entry %llu not loaded", (unsigned long long)i);
    }
    free(tok);
    return rc;
}

/* ---------------------------------------------------------------- load */

typedef struct load_ctx {
    kv_prefix *pc;
    kv_pool *pool;
    const kv_persist_key *key;
    int32_t *entry; /* [n] cache entry of each file entry, or -1 if not loaded */
    int32_t *ids;
    int64_t loaded;
} load_ctx;

static int load_entry(void *ud, int64_t i, int32_t parent, const int32_t *tokens,
                      const uint8_t *blocks)
{
    load_ctx *c = ud;
    int32_t nt = (int32_t)(c->key->n_layer * c->key->n_head_kv);
    c->entry[i] = -1;
    if (parent >= 0 && c->entry[parent] < 0) return 0; /* its parent was not loaded: nor is it */
    if (kv_pool_blocks_free(c->pool) < nt)
        return 0; /* keep the pool for requests; never reclaim to restore */
    if (kv_pool_alloc(c->pool, nt, c->ids)) return 0;
    for (int32_t j = 0; j < nt; j++)
        memcpy(kv_pool_block_k(c->pool, c->ids[j]), blocks + (size_t)j * c->key->block_bytes,
               c->key->block_bytes);
    int32_t e = kv_prefix_insert(c->pc, parent >= 0 ? c->entry[parent] : -1, tokens, c->ids);
    for (int32_t j = 0; j < nt; j++) /* the cache holds its own reference now */
        kv_pool_release(c->pool, c->ids[j]);
    if (e < 0) return e;
    c->entry[i] = e;
    c->loaded++;
    return 0;
}

/* Reads the whole file (at most max_bytes) without following symlinks. */
static int read_image(const char *path, size_t max_bytes, uint8_t **out, size_t *len, ks_diag *d)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return ks_diag_set(d, e == ENOENT ? KS_ERR_NOT_FOUND : KS_ERR_IO, "%s: %s", path,
                           strerror(e));
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max_bytes) {
        close(fd);
        return ks_diag_set(d, KS_ERR_INVALID, "%s: not a regular file or above the size cap", path);
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(n ? n : 1);
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != n) {
        free(buf);
        return ks_diag_set(d, buf ? KS_ERR_IO : KS_ERR_NOMEM, "%s: read failed", path);
    }
    *out = buf;
    *len = n;
    return 0;
}

int kv_persist_load(kv_prefix *pc, kv_pool *pool, const kv_persist_key *key, const char *path,
                    size_t max_bytes, int64_t *n_loaded, ks_diag *d)
{
    *n_loaded = 0;
    /* KIVI pools never publish prefix blocks (prefix.c), so no file can be theirs */
    if (kv_pool_is_sealable(pool))
        return ks_diag_set(d, KS_ERR_UNSUPPORTED, "%s: KIVI KV types keep no prefix cache", path);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = read_image(path, max_bytes, &buf, &len, d);
    if (rc) return rc;
    rc = kv_persist_parse(buf, len, key, NULL, NULL, d); /* whole-file check first */
    uint64_t n = 0;
    if (rc == 0) memcpy(&n, buf + 56, 8);
    load_ctx c = {.pc = pc, .pool = pool, .key = key};
    c.entry = rc ? NULL : malloc(((size_t)n + 1) * sizeof(int32_t));
    c.ids = rc ? NULL : malloc(((size_t)key->n_layer * key->n_head_kv + 1) * sizeof(int32_t));
    if (rc == 0 && (!c.entry || !c.ids)) rc = ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    if (rc == 0) rc = kv_persist_parse(buf, len, key, load_entry, &c, d);
    *n_loaded = c.loaded;
    free(c.entry);
    free(c.ids);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- save */

static int write_all(int fd, const void *p, size_t n, uint64_t *h)
{
    *h = fnv1a(*h, p, n);
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return KS_ERR_IO;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int write_snap(int fd, kv_pool *pool, const kv_persist_key *key, const kv_prefix_snap *s)
{
    uint8_t hdr[KVP_HEADER] = {0};
    uint32_t ver = 1, f[8] = {key->k_dtype,  key->v_dtype,      key->n_layer,     key->n_head_kv,
                              key->head_dim, key->block_tokens, key->block_bytes, 0};
    uint64_t n = (uint64_t)s->n, h = FNV_BASIS;
    memcpy(hdr, KVP_MAGIC, 8);
    memcpy(hdr + 8, &ver, 4);
    memcpy(hdr + 16, &key->model_hash, 8);
    memcpy(hdr + 24, f, sizeof(f));
    memcpy(hdr + 56, &n, 8);
    int rc = write_all(fd, hdr, sizeof(hdr), &h);
    for (int32_t i = 0; i < s->n && rc == 0; i++) {
        int32_t pre[2] = {s->parent[i], 0};
        rc = write_all(fd, pre, sizeof(pre), &h);
        if (rc == 0) rc = write_all(fd, s->tokens + (size_t)i * s->bt, (size_t)s->bt * 4, &h);
        for (int32_t j = 0; j < s->nt && rc == 0; j++)
            rc = write_all(fd, kv_pool_block_k(pool, s->blocks[(size_t)i * s->nt + j]),
                           key->block_bytes, &h);
    }
    uint64_t sum = h;
    return rc ? rc : write_all(fd, &sum, 8, &h);
}

int kv_persist_save(kv_prefix *pc, kv_pool *pool, const kv_persist_key *key, const char *path,
                    size_t max_bytes, int64_t *n_saved, ks_diag *d)
{
    *n_saved = 0;
    size_t eb = entry_bytes(key);
    int64_t fit = max_bytes > KVP_HEADER + 8 ? (int64_t)((max_bytes - KVP_HEADER - 8) / eb) : 0;
    kv_prefix_snap s;
    int rc = kv_prefix_snapshot(pc, fit, &s);
    if (rc) return ks_diag_set(d, rc, "cannot snapshot the prefix cache");
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    (void)unlink(tmp); /* a leftover of a crash; O_EXCL below refuses anything racing us */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = ks_diag_set(d, KS_ERR_IO, "%s: %s", tmp, strerror(errno));
    } else {
        rc = write_snap(fd, pool, key, &s);
        if (rc == 0 && fsync(fd) != 0) rc = KS_ERR_IO;
        int e = errno;
        if (close(fd) != 0 && rc == 0) rc = KS_ERR_IO;
        if (rc == 0 && rename(tmp, path) != 0) rc = KS_ERR_IO;
        if (rc) {
            ks_diag_set(d, rc, "%s: write failed (%s); the previous file is kept", path,
                        strerror(e ? e : errno));
            (void)unlink(tmp);
        }
    }
    if (rc == 0) *n_saved = s.n;
    kv_prefix_snap_release(pc, &s);
    return rc;
}

/* ---------------------------------------------------------------- trimming */

typedef struct trim_file {
    char name[256];
    off_t size;
    struct timespec mtime;
} trim_file;

static int cmp_old(const void *a, const void *b)
{
    const trim_file *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return (x->mtime.tv_nsec > y->mtime.tv_nsec) - (x->mtime.tv_nsec < y->mtime.tv_nsec);
}

int kv_persist_trim_dir(const char *dir, size_t max_bytes, const char *keep)
{
    DIR *dh = opendir(dir);
    if (!dh) return 0;
    trim_file *v = NULL;
    size_t n = 0, cap = 0, total = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        size_t l = strlen(de->d_name);
        struct stat st;
        if (l < 6 || l >= sizeof(v->name) || strcmp(de->d_name + l - 5, ".kvpc") ||
            fstatat(dirfd(dh), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            trim_file *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
            if (!nv) break;
            v = nv;
        }
        snprintf(v[n].name, sizeof(v[n].name), "%s", de->d_name);
        v[n].size = st.st_size;
        v[n].mtime = st.st_mtim;
        total += (size_t)st.st_size;
        n++;
    }
    int deleted = 0;
    if (v) qsort(v, n, sizeof(*v), cmp_old);
    for (size_t i = 0; i < n && total > max_bytes; i++) {
        if (keep && !strcmp(v[i].name, keep)) continue;
        if (unlinkat(dirfd(dh), v[i].name, 0) == 0) {
            total -= (size_t)v[i].size;
            deleted++;
        }
    }
    closedir(dh);
    free(v);
    return deleted;
}

/* spill.c - the retrieval policy's file-backed spill tier and its RAM hot set.
 *
 * Why: retrieval keeps every token of a context that may be far larger than RAM. Blocks that
 * are neither sinks nor in the local window are only read when a query retrieves them, so
 * they can live in a file; the OS page cache is not relied on (it would make resident memory
 * depend on the context), records are read with pread into a bounded set of buffers.
 *
 * Layout: record r lives at offset r * record_bytes of one file per sequence (sparse where
 * records were never written). The hot set is n_parts partitions of slots_per_part buffers;
 * a partition is used by one thread at a time (the retrieval policy gives each KV head its
 * own), so fetches need no lock; pread/pwrite on one descriptor are thread-safe.
 *
 * Replacement. LRU: the victim is the unpinned buffer with the oldest last use. SCORE_LRU:
 * every buffer carries a use count that decays by `decay` per tick (one tick = one fetch in
 * the partition) and grows by 1 + score at each use; the victim has the lowest decayed count,
 * so a block retrieved often survives a burst of one-off reads (plain LRU would let a scan
 * flush it). Empty buffers are always taken first. Invariant: a buffer whose pin equals the
 * caller's stamp is never a victim, so all records of one call are valid together.
 */
#include "kvserve/spill.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPILL_PREFIX "kvserve-spill-"

typedef struct hot_slot {
    int64_t rec;   /* record held, -1 = empty */
    uint64_t last; /* tick of last use */
    uint64_t pin;  /* stamp of the call that last used it */
    double count;  /* SCORE_LRU use count at tick `last` */
} hot_slot;

typedef struct hot_part {
    hot_slot *slots; /* [slots_per_part] */
    uint8_t *mem;    /* [slots_per_part][record_bytes] */
    uint64_t tick;
    atomic_llong hits, misses, bytes_read;
} hot_part;

struct kv_spill {
    kv_spill_params p;
    char path[KV_SPILL_DIR_MAX + 64];
    int fd;
    uint8_t *written; /* [cap_written] 1 if record r was written */
    int64_t cap_written;
    atomic_llong n_written, bytes_written;
    hot_part *parts;
};

static atomic_int g_spill_serial;

int kv_spill_create(const kv_spill_params *p, kv_spill **out)
{
    *out = NULL;
    if (!p || !p->dir || !p->dir[0] || strlen(p->dir) >= KV_SPILL_DIR_MAX || p->record_bytes < 1 ||
        p->n_parts < 1 || p->slots_per_part < 1 ||
        (p->eviction == KV_EVICT_SCORE_LRU && !(p->decay > 0.0f && p->decay < 1.0f)))
        return KS_ERR_INVALID;
    size_t part_bytes;
    if (ks_mul_size(p->record_bytes, (size_t)p->slots_per_part, &part_bytes)) return KS_ERR_INVALID;
    kv_spill *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->p = *p;
    s->p.dir = NULL; /* not kept: the caller's string need not outlive us */
    s->fd = -1;
    int rc = KS_ERR_NOMEM;
    s->parts = calloc((size_t)p->n_parts, sizeof(hot_part));
    if (!s->parts) goto fail;
    for (int32_t i = 0; i < p->n_parts; i++) {
        hot_part *hp = &s->parts[i];
        hp->slots = malloc((size_t)p->slots_per_part * sizeof(hot_slot));
        hp->mem = ks_aligned_alloc(part_bytes);
        if (!hp->slots || !hp->mem) goto fail;
        /* Touched now: resident memory reaches the hot set's bound when spilling starts
         * instead of creeping up as the buffers fill over a long context. */
        memset(hp->mem, 0, part_bytes);
        for (int32_t j = 0; j < p->slots_per_part; j++)
            hp->slots[j] = (hot_slot){.rec = -1};
    }
    ks_diag d;
    ks_diag_clear(&d);
    int dfd = -1;
    if ((rc = kv_spill_dir_open(p->dir, &dfd, &d))) {
        ks_error("spill: %s", d.msg);
        goto fail;
    }
    rc = KS_ERR_IO;
    char name[64];
    snprintf(name, sizeof(name), SPILL_PREFIX "%ld-%d.kv", (long)getpid(),
             atomic_fetch_add(&g_spill_serial, 1));
    snprintf(s->path, sizeof(s->path), "%s/%s", p->dir, name);
    s->fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    close(dfd);
    if (s->fd < 0) {
        ks_error("spill: cannot create %s: %s", s->path, strerror(errno));
        s->path[0] = 0;
        goto fail;
    }
    *out = s;
    return 0;
fail:
    kv_spill_destroy(s);
    return rc;
}

void kv_spill_destroy(kv_spill *s)
{
    if (!s) return;
    if (s->fd >= 0) {
        close(s->fd);
        if (unlink(s->path) != 0) ks_warn("spill: cannot remove %s: %s", s->path, strerror(errno));
    }
    for (int32_t i = 0; s->parts && i < s->p.n_parts; i++) {
        free(s->parts[i].slots);
        free(s->parts[i].mem);
    }
    free(s->parts);
    free(s->written);
    free(s);
}

const char *kv_spill_path(const kv_spill *s)
{
    return s->path;
}

/* Fault injection for the tests (tests/e2e/test_faults.py): KVSERVE_TEST_SPILL_FAIL =
 * "write:N" or "read:N" makes every spill write (read) after the first N fail as a full disk
 * (ENOSPC) or an I/O error (EIO) would. Read once; unset in normal use. */
static int fault_kind = -1; /* -1 unread, 0 none, 1 write, 2 read */
static long long fault_after;
static atomic_llong fault_count;

static bool fault_now(int is_write)
{
    if (fault_kind < 0) { /* racy first read is harmless: every thread computes the same */
        const char *e = getenv("KVSERVE_TEST_SPILL_FAIL");
        int k = 0;
        if (e && !strncmp(e, "write:", 6))
            k = 1;
        else if (e && !strncmp(e, "read:", 5))
            k = 2;
        fault_after = k ? atoll(strchr(e, ':') + 1) : 0;
        fault_kind = k;
    }
    if (fault_kind != (is_write ? 1 : 2)) return false;
    if (atomic_fetch_add(&fault_count, 1) < fault_after) return false;
    errno = is_write ? ENOSPC : EIO;
    return true;
}

static int io_full(int fd, void *buf, size_t n, off_t off, int is_write)
{
    if (fault_now(is_write)) return KS_ERR_IO;
    uint8_t *b = buf;
    while (n > 0) {
        ssize_t r = is_write ? pwrite(fd, b, n, off) : pread(fd, b, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return KS_ERR_IO;
        b += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int rec_offset(const kv_spill *s, int64_t rec, off_t *off)
{
    if (rec < 0 || (uint64_t)rec > (uint64_t)INT64_MAX / s->p.record_bytes) return KS_ERR_INVALID;
    *off = (off_t)(rec * (int64_t)s->p.record_bytes);
    return 0;
}

static void hot_drop(kv_spill *s, int64_t rec)
{
    for (int32_t i = 0; i < s->p.n_parts; i++)
        for (int32_t j = 0; j < s->p.slots_per_part; j++)
            if (s->parts[i].slots[j].rec == rec) s->parts[i].slots[j] = (hot_slot){.rec = -1};
}

int kv_spill_write(kv_spill *s, int64_t rec, const void *data)
{
    off_t off;
    if (!s || !data || rec_offset(s, rec, &off)) return KS_ERR_INVALID;
    if (rec >= s->cap_written) {
        int64_t cap = KS_MAX(rec + 1, s->cap_written * 2);
        cap = KS_MAX(cap, 256);
        uint8_t *w = realloc(s->written, (size_t)cap);
        if (!w) return KS_ERR_NOMEM;
        memset(w + s->cap_written, 0, (size_t)(cap - s->cap_written));
        s->written = w;
        s->cap_written = cap;
    }
    int rc = io_full(s->fd, (void *)data, s->p.record_bytes, off, 1);
    if (rc) {
        ks_error("spill: write to %s failed: %s", s->path, strerror(errno));
        return rc;
    }
    if (!s->written[rec]) atomic_fetch_add(&s->n_written, 1);
    s->written[rec] = 1;
    atomic_fetch_add(&s->bytes_written, (long long)s->p.record_bytes);
    hot_drop(s, rec);
    return 0;
}

int kv_spill_read(kv_spill *s, int64_t rec, void *dst)
{
    off_t off;
    if (!s || !dst || rec_offset(s, rec, &off)) return KS_ERR_INVALID;
    if (rec >= s->cap_written || !s->written[rec]) return KS_ERR_NOT_FOUND;
    int rc = io_full(s->fd, dst, s->p.record_bytes, off, 0);
    if (rc) ks_error("spill: read from %s failed: %s", s->path, strerror(errno));
    return rc;
}

static double slot_value(const kv_spill *s, const hot_slot *sl, uint64_t now)
{
    if (s->p.eviction == KV_EVICT_LRU) return (double)sl->last;
    return sl->count * pow((double)s->p.decay, (double)(now - sl->last));
}

int kv_spill_fetch(kv_spill *s, int32_t part, int64_t rec, uint64_t pin, float score,
                   const void **out)
{
    *out = NULL;
    if (!s || part < 0 || part >= s->p.n_parts || rec < 0 || !(score >= 0.0f))
        return KS_ERR_INVALID;
    hot_part *hp = &s->parts[part];
    uint64_t now = ++hp->tick;
    int32_t victim = -1;
    double best = INFINITY;
    for (int32_t j = 0; j < s->p.slots_per_part; j++) {
        hot_slot *sl = &hp->slots[j];
        if (sl->rec == rec) {
            if (s->p.eviction == KV_EVICT_SCORE_LRU)
                sl->count = slot_value(s, sl, now) + 1.0 + score;
            sl->last = now;
            sl->pin = pin;
            atomic_fetch_add(&hp->hits, 1);
            *out = hp->mem + (size_t)j * s->p.record_bytes;
            return 0;
        }
        if (sl->rec < 0) {
            if (best > -INFINITY) {
                victim = j;
                best = -INFINITY;
            }
            continue;
        }
        if (sl->pin == pin) continue;
        double v = slot_value(s, sl, now);
        if (v < best) {
            best = v;
            victim = j;
        }
    }
    if (victim < 0) return KS_ERR_FULL;
    uint8_t *buf = hp->mem + (size_t)victim * s->p.record_bytes;
    hp->slots[victim].rec = -1;
    int rc = kv_spill_read(s, rec, buf);
    if (rc) return rc;
    hp->slots[victim] = (hot_slot){.rec = rec, .last = now, .pin = pin, .count = 1.0 + score};
    atomic_fetch_add(&hp->misses, 1);
    atomic_fetch_add(&hp->bytes_read, (long long)s->p.record_bytes);
    *out = buf;
    return 0;
}

int kv_spill_is_hot(const kv_spill *s, int32_t part, int64_t rec)
{
    if (!s || part < 0 || part >= s->p.n_parts) return 0;
    for (int32_t j = 0; j < s->p.slots_per_part; j++)
        if (s->parts[part].slots[j].rec == rec) return 1;
    return 0;
}

void kv_spill_get_stats(const kv_spill *s, kv_spill_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!s) return;
    out->records_written = atomic_load(&s->n_written);
    out->bytes_written = atomic_load(&s->bytes_written);
    out->hot_slots = (int64_t)s->p.n_parts * s->p.slots_per_part;
    for (int32_t i = 0; i < s->p.n_parts; i++) {
        const hot_part *hp = &s->parts[i];
        out->hits += atomic_load(&hp->hits);
        out->misses += atomic_load(&hp->misses);
        out->bytes_read += atomic_load(&hp->bytes_read);
        for (int32_t j = 0; j < s->p.slots_per_part; j++)
            out->hot_used += hp->slots[j].rec >= 0;
    }
}

/* Parses "kvserve-spill-<pid>-<n>.kv"; returns the pid or -1 if the name is not ours. */
static long spill_name_pid(const char *name)
{
    size_t np = strlen(SPILL_PREFIX);
    if (strncmp(name, SPILL_PREFIX, np) != 0) return -1;
    char *end;
    errno = 0;
    long pid = strtol(name + np, &end, 10);
    if (errno || end == name + np || pid <= 0 || *end != '-') return -1;
    const char *q = end + 1;
    long serial = strtol(q, &end, 10);
    if (end == q || serial < 0 || strcmp(end, ".kv") != 0) return -1;
    return pid;
}

/* Why so strict: the spill directory defaults to one under /tmp, where any local user may
 * have made it first. A directory someone else owns or can write to, or a symlink, would let
 * them read spilled KV data (the prompts' keys and values) or make the start-up cleanup
 * remove files elsewhere. */
int kv_spill_dir_open(const char *dir, int *out_fd, ks_diag *d)
{
    if (!dir || !dir[0]) return ks_diag_set(d, KS_ERR_INVALID, "spill directory: empty path");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ks_diag_set(d, KS_ERR_IO, "cannot create the spill directory %s: %s", dir,
                           strerror(errno));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ks_diag_set(d, KS_ERR_IO, "spill directory %s: %s", dir,
                           errno == ELOOP || errno == ENOTDIR
                               ? "is a symlink or not a directory (refused)"
                               : strerror(errno));
    struct stat st;
    const char *why = NULL;
    if (fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (st.st_uid != geteuid())
        why = "is owned by another user (refused)";
    else if (st.st_mode & (S_IWGRP | S_IWOTH))
        why = "is group- or world-writable (refused; chmod 700 it)";
    if (why) {
        close(fd);
        return ks_diag_set(d, KS_ERR_INVALID, "spill directory %s %s", dir, why);
    }
    *out_fd = fd;
    return 0;
}

int kv_spill_cleanup_dir(const char *dir)
{
    if (!dir || !dir[0]) return KS_ERR_INVALID;
    struct stat lst;
    if (lstat(dir, &lst) != 0 && errno == ENOENT) return 0;
    ks_diag dg;
    ks_diag_clear(&dg);
    int dfd;
    int rc = kv_spill_dir_open(dir, &dfd, &dg);
    if (rc) {
        ks_warn("spill: no clean-up: %s", dg.msg);
        return rc;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return KS_ERR_IO;
    }
    int n = 0;
    long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = spill_name_pid(e->d_name);
        if (pid < 0) continue;
        bool stale = pid == self || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
        struct stat st; /* only our own regular files; a link is left alone, never followed */
        if (!stale || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || st.st_uid != geteuid())
            continue;
        if (unlinkat(dfd, e->d_name, 0) == 0)
            n++;
        else
            ks_warn("spill: cannot remove stale %s/%s: %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
    return n;
}

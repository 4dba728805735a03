/* spill.h - the file-backed spill tier of the `retrieval` policy and its RAM hot set.
 *
 * A kv_spill is one sequence's spill file (fixed-size records, one record = one pool block of
 * one (layer, KV head): K rows then V rows, raw pool bytes) plus a hot set: a fixed number of
 * record-sized RAM buffers that cache records read back from the file, split into partitions
 * so that different threads (one per KV head) never share a partition and need no lock.
 * Within a partition the victim on a miss is the least recently used buffer (LRU) or the one
 * with the lowest score-decayed use count (SCORE_LRU); buffers pinned by the current call are
 * never evicted.
 *
 * Files are named "<dir>/kvserve-spill-<pid>-<n>.kv", created with mode 0600 and unlinked by
 * kv_spill_destroy. kv_spill_cleanup_dir removes such files whose owning process is gone
 * (crash recovery; the server calls it once at start-up).
 */
#ifndef KVSERVE_SPILL_H
#define KVSERVE_SPILL_H

#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/policy_config.h"

typedef struct kv_spill kv_spill;

typedef struct kv_spill_params {
    const char *dir;        /* directory of the spill file; created (0700) if missing */
    size_t record_bytes;    /* bytes of one record (>= 1) */
    int32_t n_parts;        /* hot-set partitions (>= 1), one per thread that fetches */
    int32_t slots_per_part; /* record buffers per partition (>= 1) */
    kv_eviction eviction;   /* LRU or SCORE_LRU */
    float decay;            /* SCORE_LRU: weight kept per tick of age, 0 < decay < 1 */
} kv_spill_params;

typedef struct kv_spill_stats {
    int64_t records_written; /* records stored in the file */
    int64_t hits;            /* fetches served from the hot set */
    int64_t misses;          /* fetches that read the file */
    int64_t bytes_read;      /* bytes read from the spill file */
    int64_t bytes_written;   /* bytes written to the spill file */
    int64_t hot_slots;       /* hot-set buffers in all partitions */
    int64_t hot_used;        /* buffers holding a record */
} kv_spill_stats;

/* Creates the spill file and the hot set (all buffers allocated here). Returns 0,
 * KS_ERR_INVALID, KS_ERR_IO (directory or file could not be created) or KS_ERR_NOMEM. */
int kv_spill_create(const kv_spill_params *p, kv_spill **out) KS_WUR;
/* Closes and unlinks the file and frees the hot set. Accepts NULL. */
void kv_spill_destroy(kv_spill *s);

/* Writes record `rec` (>= 0) from data[record_bytes]. A record may be rewritten; a cached
 * copy in the hot set is dropped. Not concurrent with fetches of the same record.
 * Returns 0, KS_ERR_INVALID or KS_ERR_IO. */
int kv_spill_write(kv_spill *s, int64_t rec, const void *data) KS_WUR;
/* Reads record `rec` into dst[record_bytes], bypassing the hot set. Returns 0,
 * KS_ERR_NOT_FOUND (never written) or KS_ERR_IO. Thread-safe. */
int kv_spill_read(kv_spill *s, int64_t rec, void *dst) KS_WUR;

/* Returns in *out a hot-set buffer of partition `part` that holds record `rec`, reading the
 * file on a miss. The buffer is pinned with `pin` (a stamp the caller changes per call):
 * buffers carrying the current stamp are never chosen as victims, so all records fetched in
 * one call stay valid together. `score` (>= 0) is added to the buffer's use count for
 * SCORE_LRU (LRU ignores it). The buffer stays valid until a fetch of the same partition
 * with another stamp evicts it. Only one thread may use a partition at a time.
 * Returns 0, KS_ERR_INVALID, KS_ERR_NOT_FOUND, KS_ERR_FULL (every buffer pinned) or
 * KS_ERR_IO. */
int kv_spill_fetch(kv_spill *s, int32_t part, int64_t rec, uint64_t pin, float score,
                   const void **out) KS_WUR;
/* True if the record is in the hot set of `part` right now (tests, diagnostics). */
int kv_spill_is_hot(const kv_spill *s, int32_t part, int64_t rec);

/* Counters (may be read from another thread; values are then approximate). */
void kv_spill_get_stats(const kv_spill *s, kv_spill_stats *out);
const char *kv_spill_path(const kv_spill *s);

/* Start-up crash recovery: removes "kvserve-spill-<pid>-<n>.kv" files in dir whose process no
 * longer exists, and those carrying this process's own pid (left by an earlier process that
 * had the same pid, e.g. pid 1 in a container). Call it before any kv_spill is created.
 * Other files are never touched. Returns the number removed (>= 0; 0 if dir does not exist)
 * or KS_ERR_IO. */
int kv_spill_cleanup_dir(const char *dir) KS_WUR;
/* Opens the spill directory (creating it 0700 if missing) and checks that it is safe to use:
 * not a symlink, a directory, owned by this process's user, not group- or world-writable.
 * Returns 0 with *out_fd (O_DIRECTORY, caller closes), or KS_ERR_IO / KS_ERR_INVALID with
 * the reason in d. kv_spill_create and kv_spill_cleanup_dir refuse a directory that fails
 * it (the clean-up then returns the error and removes nothing). */
int kv_spill_dir_open(const char *dir, int *out_fd, ks_diag *d) KS_WUR;

/* ---------------------------------------------------------------------------------------- */
/* The block-retrieval policy (kvcache/retrieval.c) and the stats of its spill tier.           */

struct kv_policy;
struct kv_seq;
extern const struct kv_policy kv_policy_retrieval;

/* What /v1/kv and /metrics report for a retrieval sequence. */
typedef struct kv_retrieval_stats {
    int64_t blocks_ram;       /* pool blocks this sequence holds (all layers and KV heads) */
    int64_t blocks_disk;      /* blocks stored in the spill file */
    int64_t hot_slots;        /* hot-set buffers (0 until the first spill) */
    int64_t hot_used;         /* hot-set buffers holding a block */
    int64_t hot_hits;         /* spilled-block reads served by the hot set */
    int64_t hot_misses;       /* spilled-block reads that went to the file */
    double hot_hit_rate;      /* hits / (hits + misses), 0 when there was no read */
    int64_t bytes_read;       /* bytes read from the spill file */
    int64_t bytes_written;    /* bytes written to the spill file */
    int64_t landmarks;        /* landmarks kept in RAM (blocks x layers x KV heads) */
    size_t landmark_bytes;    /* RAM used by landmarks */
    size_t ram_bytes;         /* pool blocks + hot set + landmarks + scratch of this sequence */
    int64_t blocks_retrieved; /* top-k selections made so far, summed over heads and layers */
} kv_retrieval_stats;

/* Fills *out for a sequence using the retrieval policy. Returns 0 or KS_ERR_INVALID (NULL,
 * or another policy). Call it from the thread that steps the sequence, between steps. */
/* The first spill-file I/O failure of a `retrieval` sequence (KS_ERR_IO), or 0 (also for
 * other policies). After a failure the sequence keeps its blocks in RAM and attends to zeros
 * for records it could not read; its caller must fail it: the other sequences of the batch
 * are unaffected. Worker thread. */
int kv_retrieval_io_error(struct kv_seq *seq);
int kv_retrieval_get_stats(struct kv_seq *seq, kv_retrieval_stats *out) KS_WUR;

#endif

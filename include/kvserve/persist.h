/* persist.h - the prefix cache on disk: save its blocks to a file and load them back at the
 * next start, so a restarted server answers repeated long prompts from cache.
 *
 * A file is valid only for the exact model file, KV storage types and cache layout it was
 * written with (kv_persist_key; the model is identified by size, mtime and hashes of its
 * first MiB and of samples spread over the tensor data). A file whose key differs, that is
 * truncated, or whose checksum fails is rejected as a whole before any block is touched:
 * never loaded, never a crash. Files are written as NAME.tmp (mode 0600, O_EXCL, no symlinks)
 * and renamed into place, so a failed write (a full disk) leaves the previous file intact.
 *
 * Format (little-endian): "KVSPFX01", u32 version 1, u32 reserved, u64 model hash, u32
 * k_dtype, v_dtype, n_layer, n_head_kv, head_dim, block_tokens, block_bytes, reserved,
 * u64 n_entries; per entry i32 parent (an earlier entry or -1), i32 reserved, i32
 * tokens[block_tokens], then n_layer*n_head_kv pool blocks of block_bytes; u64 FNV-1a
 * checksum of everything before it.
 */
#ifndef KVSERVE_PERSIST_H
#define KVSERVE_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/kvcache.h"

typedef struct kv_persist_key {
    uint64_t model_hash;
    uint32_t k_dtype, v_dtype;
    uint32_t n_layer, n_head_kv, head_dim, block_tokens;
    uint32_t block_bytes;
} kv_persist_key;

/* Identity of a model file (see above). 0 or KS_ERR_IO with d set. */
int kv_persist_model_hash(const char *path, uint64_t *out, ks_diag *d) KS_WUR;
/* The key of a pool and cache layout for a model hash. */
void kv_persist_key_make(kv_pool *pool, int32_t n_layer, int32_t n_head_kv, uint64_t model_hash,
                         kv_persist_key *out);

/* Creates dir (mode 0700) if missing and checks it: a real directory (not a symlink), owned by
 * this user, not writable by group or others. 0 or KS_ERR_INVALID / KS_ERR_IO with d set. */
int kv_persist_dir_prepare(const char *dir, ks_diag *d) KS_WUR;
/* True for [A-Za-z0-9._-]{1,64} other than "." and ".." (no path components). */
bool kv_persist_name_valid(const char *name);

/* Writes the cache's most recently used entries that fit in max_bytes to path (atomically).
 * *n_saved = entries written. 0, or KS_ERR_IO / KS_ERR_NOMEM with d set (old file kept). */
int kv_persist_save(kv_prefix *pc, kv_pool *pool, const kv_persist_key *key, const char *path,
                    size_t max_bytes, int64_t *n_saved, ks_diag *d) KS_WUR;
/* Loads a file written by kv_persist_save into the cache, as long as the pool has free
 * blocks. *n_loaded = entries added. 0, or KS_ERR_INVALID (mismatched key, truncated,
 * corrupt, larger than max_bytes), KS_ERR_IO or KS_ERR_NOMEM with d set; nothing is loaded
 * from a rejected file. */
int kv_persist_load(kv_prefix *pc, kv_pool *pool, const kv_persist_key *key, const char *path,
                    size_t max_bytes, int64_t *n_loaded, ks_diag *d) KS_WUR;

/* Checks a whole file image against key (size, checksum, parents) and calls fn for each entry
 * in order (tokens, then the nt blocks' bytes, block_bytes each); fn returning non-zero stops
 * with that status. fn may be NULL (validation only). The fuzz target's entry point. */
typedef int (*kv_persist_entry_fn)(void *ud, int64_t index, int32_t parent, const int32_t *tokens,
                                   const uint8_t *blocks);
int kv_persist_parse(const uint8_t *buf, size_t len, const kv_persist_key *key,
                     kv_persist_entry_fn fn, void *ud, ks_diag *d) KS_WUR;

/* Deletes the least recently modified *.kvpc files of dir until they total <= max_bytes,
 * never the file `keep` (a name in dir, or NULL). Returns the number of files deleted. */
int kv_persist_trim_dir(const char *dir, size_t max_bytes, const char *keep);

#endif

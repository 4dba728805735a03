/* pool.c - the global KV block pool: the single memory budget for every cached key and value.
 *
 * Why: a long-context server must never exceed its configured memory, whatever the prompts.
 * All KV storage comes from here in fixed-size blocks (K rows then V rows of one layer and KV
 * head, each in its own storage type, so a q8_0 or q4_0 block really is 2-4x smaller), so "bytes
 * used" is exactly blocks in use times block bytes, and allocation fails with KS_ERR_FULL at the
 * budget instead of growing.
 *
 * The whole address range is reserved once with mmap (MAP_NORESERVE): block addresses never
 * change and pages are committed lazily by the OS on first touch. Free blocks sit on a LIFO
 * stack so a freshly released (cache-hot) block is reused first. Blocks are refcounted for
 * prefix sharing; the invariant is: a block is on the free stack iff its refcount is 0.
 * One mutex guards the stack and the refcounts.
 */
#include "kvserve/kvcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

struct kv_pool {
    kv_pool_params p;
    size_t k_row_bytes; /* one K row in k_dtype */
    size_t v_row_bytes; /* one V row in v_dtype */
    size_t block_bytes; /* K + V of block_tokens rows */
    int32_t n_blocks;
    int32_t n_free;
    uint8_t *mem; /* [n_blocks][block_bytes] */
    size_t mem_bytes;
    int32_t *free_ids; /* [n_blocks] stack of free ids, top at n_free-1 */
    int32_t *refcount; /* [n_blocks] */
    pthread_mutex_t mu;
    kv_pool_reclaim_fn reclaim; /* prefix cache hook: frees cache-only blocks on demand */
    void *reclaim_ud;
};

int kv_pool_create(const kv_pool_params *p, kv_pool **out)
{
    *out = NULL;
    if (!p || p->block_tokens < 1 || p->block_tokens > 65536 || p->head_dim < 1 ||
        p->head_dim > 65536)
        return KS_ERR_INVALID;
    size_t krow = ks_dtype_row_bytes(p->k_dtype, p->head_dim);
    size_t vrow = ks_dtype_row_bytes(p->v_dtype, p->head_dim);
    if (!krow || !vrow) /* unknown type, or head_dim not a multiple of its block */
        return KS_ERR_INVALID;
    size_t block = (size_t)p->block_tokens * (krow + vrow);
    size_t nb = p->budget_bytes / block;
    if (nb < 1) return KS_ERR_INVALID;
    if (nb > INT32_MAX - 1) nb = INT32_MAX - 1;
    kv_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) return KS_ERR_NOMEM;
    pool->p = *p;
    pool->k_row_bytes = krow;
    pool->v_row_bytes = vrow;
    pool->block_bytes = block;
    pool->n_blocks = (int32_t)nb;
    pool->mem_bytes = nb * block;
    pool->free_ids = malloc(nb * sizeof(int32_t));
    pool->refcount = calloc(nb, sizeof(int32_t));
    if (!pool->free_ids || !pool->refcount) goto fail;
    void *m = mmap(NULL, pool->mem_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) goto fail;
    pool->mem = m;
    /* Stack top is id 0 so blocks are handed out in ascending order from a fresh pool. */
    for (int32_t i = 0; i < pool->n_blocks; i++)
        pool->free_ids[i] = pool->n_blocks - 1 - i;
    pool->n_free = pool->n_blocks;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        munmap(pool->mem, pool->mem_bytes);
        goto fail;
    }
    *out = pool;
    return 0;
fail:
    free(pool->free_ids);
    free(pool->refcount);
    free(pool);
    return KS_ERR_NOMEM;
}

void kv_pool_destroy(kv_pool *pool)
{
    if (!pool) return;
    if (pool->n_free != pool->n_blocks)
        ks_warn("kv_pool_destroy: %d blocks still in use", pool->n_blocks - pool->n_free);
    munmap(pool->mem, pool->mem_bytes);
    pthread_mutex_destroy(&pool->mu);
    free(pool->free_ids);
    free(pool->refcount);
    free(pool);
}

/* Short of n free blocks: let the reclaim hook (prefix cache) release what only it holds. It
 * runs without our lock since it releases blocks; each round frees at least one or stops.
 * Called and returns with pool->mu held. */
static void pool_reclaim_locked(kv_pool *pool, int64_t n)
{
    for (int round = 0; n > pool->n_free && pool->reclaim && round < 8; round++) {
        kv_pool_reclaim_fn fn = pool->reclaim;
        void *ud = pool->reclaim_ud;
        int64_t want = n - pool->n_free;
        pthread_mutex_unlock(&pool->mu);
        int64_t got = fn(ud, want);
        pthread_mutex_lock(&pool->mu);
        if (got <= 0) break;
    }
}

int kv_pool_ensure_free(kv_pool *pool, int64_t n)
{
    pthread_mutex_lock(&pool->mu);
    pool_reclaim_locked(pool, n);
    int rc = n > pool->n_free ? KS_ERR_FULL : KS_OK;
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

int kv_pool_alloc(kv_pool *pool, int32_t n, int32_t *ids)
{
    if (n < 0) return KS_ERR_INVALID;
    pthread_mutex_lock(&pool->mu);
    pool_reclaim_locked(pool, n);
    if (n > pool->n_free) {
        pthread_mutex_unlock(&pool->mu);
        return KS_ERR_FULL;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = pool->free_ids[--pool->n_free];
        pool->refcount[id] = 1;
        ids[i] = id;
    }
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

void kv_pool_retain(kv_pool *pool, int32_t id)
{
    pthread_mutex_lock(&pool->mu);
    if (id >= 0 && id < pool->n_blocks && pool->refcount[id] > 0)
        pool->refcount[id]++;
    else
        ks_error("kv_pool_retain: block %d is not in use", id);
    pthread_mutex_unlock(&pool->mu);
}

void kv_pool_release(kv_pool *pool, int32_t id)
{
    pthread_mutex_lock(&pool->mu);
    if (id >= 0 && id < pool->n_blocks && pool->refcount[id] > 0) {
        if (--pool->refcount[id] == 0) pool->free_ids[pool->n_free++] = id;
    } else {
        ks_error("kv_pool_release: block %d is not in use", id);
    }
    pthread_mutex_unlock(&pool->mu);
}

void kv_pool_set_reclaim(kv_pool *pool, kv_pool_reclaim_fn fn, void *ud)
{
    pthread_mutex_lock(&pool->mu);
    pool->reclaim = fn;
    pool->reclaim_ud = fn ? ud : NULL;
    pthread_mutex_unlock(&pool->mu);
}

int64_t kv_pool_count_unshared(kv_pool *pool, const int32_t *ids, int32_t n)
{
    int64_t c = 0;
    pthread_mutex_lock(&pool->mu);
    for (int32_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < pool->n_blocks && pool->refcount[ids[i]] == 1) c++;
    pthread_mutex_unlock(&pool->mu);
    return c;
}

int32_t kv_pool_refcount(kv_pool *pool, int32_t id)
{
    if (id < 0 || id >= pool->n_blocks) return 0;
    pthread_mutex_lock(&pool->mu);
    int32_t r = pool->refcount[id];
    pthread_mutex_unlock(&pool->mu);
    return r;
}

void *kv_pool_block_k(const kv_pool *pool, int32_t id)
{
    return pool->mem + (size_t)id * pool->block_bytes;
}

void *kv_pool_block_v(const kv_pool *pool, int32_t id)
{
    return pool->mem + (size_t)id * pool->block_bytes +
           (size_t)pool->p.block_tokens * pool->k_row_bytes;
}

int32_t kv_pool_block_tokens(const kv_pool *pool)
{
    return pool->p.block_tokens;
}
int32_t kv_pool_head_dim(const kv_pool *pool)
{
    return pool->p.head_dim;
}
ks_dtype kv_pool_k_dtype(const kv_pool *pool)
{
    return pool->p.k_dtype;
}
ks_dtype kv_pool_v_dtype(const kv_pool *pool)
{
    return pool->p.v_dtype;
}
size_t kv_pool_k_row_bytes(const kv_pool *pool)
{
    return pool->k_row_bytes;
}
size_t kv_pool_v_row_bytes(const kv_pool *pool)
{
    return pool->v_row_bytes;
}
size_t kv_pool_block_bytes(const kv_pool *pool)
{
    return pool->block_bytes;
}

int64_t kv_pool_blocks_free(kv_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    int64_t n = pool->n_free;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

size_t kv_pool_bytes_used(kv_pool *pool)
{
    return (size_t)(pool->n_blocks - kv_pool_blocks_free(pool)) * pool->block_bytes;
}

void kv_pool_get_stats(kv_pool *pool, kv_pool_stats *out)
{
    int64_t nfree = kv_pool_blocks_free(pool);
    out->blocks_total = pool->n_blocks;
    out->blocks_used = pool->n_blocks - nfree;
    out->block_bytes = pool->block_bytes;
    out->bytes_used = (size_t)out->blocks_used * pool->block_bytes;
    out->bytes_budget = (size_t)pool->n_blocks * pool->block_bytes;
}

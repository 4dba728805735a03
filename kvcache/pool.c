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
 *
 * Sealable pools (a kivi4/kivi2 K or V type). A KIVI K group spans a whole block of tokens, so
 * a block can only be quantised once it is full. Such a pool has two block classes: SEALED
 * blocks (ids 0..n_blocks-1) in the quantised layout, and RESIDUAL blocks (ids n_blocks..) that
 * hold the KIVI parts as f16 rows while a block fills and while it is among the sequence's last
 * kv_residual tokens; the table then quantises it as a whole into a sealed block ("sealing",
 * kvcache/table.c) and releases the residual one. Both classes share the one budget, counted
 * in units of a sealed block: a residual block costs ceil(residual bytes / sealed bytes) units,
 * and free counts (kv_pool_blocks_free, kv_pool_ensure_free) are in units.
 */
#include "kvserve/kvcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

/* Block classes of a sealable pool (a plain pool has only CLS_SEALED). */
enum { CLS_SEALED = 0, CLS_RESID = 1 };

struct kv_pool {
    kv_pool_params p;
    size_t k_row_bytes; /* one K row in k_dtype (KIVI: a sealed group's bytes per token) */
    size_t v_row_bytes; /* one V row in v_dtype */
    size_t block_bytes; /* K + V of block_tokens rows (sealed class) */
    size_t k_bytes[2];  /* K part of a block, per class */
    size_t cls_bytes[2];
    int32_t n_blocks; /* sealed blocks = budget units */
    int32_t n_free;   /* free units */
    uint8_t *mem;     /* [n_blocks][block_bytes] */
    size_t mem_bytes;
    int32_t *free_ids; /* [n_blocks] stack of free ids, top at n_free_ids-1 */
    int32_t n_free_ids;
    bool sealable;
    int32_t r_units;   /* units one residual block costs */
    int32_t n_rblocks; /* residual blocks (ids n_blocks..n_blocks+n_rblocks-1) */
    uint8_t *rmem;     /* [n_rblocks][cls_bytes[CLS_RESID]] */
    size_t rmem_bytes;
    int32_t *rfree_ids; /* [n_rblocks] */
    int32_t n_rfree;
    int32_t *refcount; /* [n_blocks + n_rblocks] */
    pthread_mutex_t mu;
    kv_pool_reclaim_fn reclaim; /* prefix cache hook: frees cache-only blocks on demand */
    void *reclaim_ud;
};

/* The block layout of p: K and V part per class, and whether it has a residual class.
 * Returns false for an invalid type or head_dim. */
static bool pool_layout(const kv_pool_params *p, kv_pool *pool)
{
    int32_t bt = p->block_tokens, hd = p->head_dim;
    size_t krow = ks_dtype_row_bytes(p->k_dtype, hd), vrow = ks_dtype_row_bytes(p->v_dtype, hd);
    if (!krow || !vrow) return false; /* unknown type, or head_dim not a multiple of its block */
    size_t f16row = (size_t)hd * 2;
    bool kk = ks_dtype_is_kivi(p->k_dtype), vk = ks_dtype_is_kivi(p->v_dtype);
    pool->sealable = kk || vk;
    size_t kseal = kk ? ks_kivi_k_group_bytes(p->k_dtype, hd, bt) : (size_t)bt * krow;
    pool->k_bytes[CLS_SEALED] = kseal;
    pool->k_bytes[CLS_RESID] = (size_t)bt * (kk ? f16row : krow);
    pool->cls_bytes[CLS_SEALED] = kseal + (size_t)bt * vrow;
    pool->cls_bytes[CLS_RESID] = pool->k_bytes[CLS_RESID] + (size_t)bt * (vk ? f16row : vrow);
    pool->k_row_bytes = (kseal + (size_t)bt - 1) / (size_t)bt;
    pool->v_row_bytes = vrow;
    pool->block_bytes = pool->cls_bytes[CLS_SEALED];
    pool->r_units =
        (int32_t)((pool->cls_bytes[CLS_RESID] + pool->block_bytes - 1) / pool->block_bytes);
    return true;
}

/* Reserves the address range of one class and fills its free stack (top = lowest id, so a
 * fresh pool hands out ascending ids). */
static int pool_arena(int32_t n, size_t bytes, uint8_t **mem, size_t *mem_bytes, int32_t **ids)
{
    *ids = malloc((size_t)KS_MAX(n, 1) * sizeof(int32_t));
    if (!*ids) return KS_ERR_NOMEM;
    *mem_bytes = (size_t)KS_MAX(n, 1) * bytes;
    void *m = mmap(NULL, *mem_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        free(*ids);
        *ids = NULL;
        *mem = NULL;
        return KS_ERR_NOMEM;
    }
    *mem = m;
    for (int32_t i = 0; i < n; i++)
        (*ids)[i] = n - 1 - i;
    return 0;
}

static void pool_free(kv_pool *pool)
{
    if (pool->mem) munmap(pool->mem, pool->mem_bytes);
    if (pool->rmem) munmap(pool->rmem, pool->rmem_bytes);
    free(pool->free_ids);
    free(pool->rfree_ids);
    free(pool->refcount);
    free(pool);
}

int kv_pool_create(const kv_pool_params *p, kv_pool **out)
{
    *out = NULL;
    if (!p || p->block_tokens < 1 || p->block_tokens > 65536 || p->head_dim < 1 ||
        p->head_dim > 65536 || p->kv_residual < 0 || p->kv_residual > KV_RESIDUAL_MAX)
        return KS_ERR_INVALID;
    kv_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) return KS_ERR_NOMEM;
    if (!pool_layout(p, pool)) {
        free(pool);
        return KS_ERR_INVALID;
    }
    size_t nb = p->budget_bytes / pool->block_bytes;
    if (nb < 1 || (pool->sealable && nb < (size_t)pool->r_units)) {
        free(pool); /* a sealable pool must hold at least one residual block */
        return KS_ERR_INVALID;
    }
    if (nb > INT32_MAX / 2) nb = INT32_MAX / 2;
    pool->p = *p;
    pool->n_blocks = (int32_t)nb;
    pool->n_free = pool->n_free_ids = pool->n_blocks;
    pool->n_rblocks = pool->sealable ? pool->n_blocks / pool->r_units : 0;
    pool->n_rfree = pool->n_rblocks;
    pool->refcount = calloc((size_t)pool->n_blocks + (size_t)pool->n_rblocks, sizeof(int32_t));
    if (!pool->refcount ||
        pool_arena(pool->n_blocks, pool->block_bytes, &pool->mem, &pool->mem_bytes,
                   &pool->free_ids) ||
        (pool->sealable && pool_arena(pool->n_rblocks, pool->cls_bytes[CLS_RESID], &pool->rmem,
                                      &pool->rmem_bytes, &pool->rfree_ids)))
        goto fail;
    for (int32_t i = 0; i < pool->n_rblocks; i++)
        pool->rfree_ids[i] += pool->n_blocks; /* residual ids follow the sealed ones */
    if (pthread_mutex_init(&pool->mu, NULL) != 0) goto fail;
    *out = pool;
    return 0;
fail:
    pool_free(pool);
    return KS_ERR_NOMEM;
}

void kv_pool_destroy(kv_pool *pool)
{
    if (!pool) return;
    if (pool->n_free != pool->n_blocks)
        ks_warn("kv_pool_destroy: %d blocks still in use", pool->n_blocks - pool->n_free);
    pthread_mutex_destroy(&pool->mu);
    pool_free(pool);
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

/* Takes n blocks of class cls (each costing `units`), all or nothing. */
static int pool_alloc_class(kv_pool *pool, int cls, int32_t n, int32_t *ids)
{
    if (n < 0) return KS_ERR_INVALID;
    int64_t units = cls == CLS_RESID ? pool->r_units : 1;
    pthread_mutex_lock(&pool->mu);
    pool_reclaim_locked(pool, (int64_t)n * units);
    int32_t *stack = cls == CLS_RESID ? pool->rfree_ids : pool->free_ids;
    int32_t *top = cls == CLS_RESID ? &pool->n_rfree : &pool->n_free_ids;
    if ((int64_t)n * units > pool->n_free || n > *top) {
        pthread_mutex_unlock(&pool->mu);
        return KS_ERR_FULL;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = stack[--*top];
        pool->refcount[id] = 1;
        ids[i] = id;
    }
    pool->n_free -= (int32_t)(n * units);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

int kv_pool_alloc(kv_pool *pool, int32_t n, int32_t *ids)
{
    return pool_alloc_class(pool, pool->sealable ? CLS_RESID : CLS_SEALED, n, ids);
}

int kv_pool_alloc_sealed(kv_pool *pool, int32_t n, int32_t *ids)
{
    return pool_alloc_class(pool, CLS_SEALED, n, ids);
}

static bool id_in_use(const kv_pool *pool, int32_t id)
{
    return id >= 0 && id < pool->n_blocks + pool->n_rblocks && pool->refcount[id] > 0;
}

void kv_pool_retain(kv_pool *pool, int32_t id)
{
    pthread_mutex_lock(&pool->mu);
    if (id_in_use(pool, id))
        pool->refcount[id]++;
    else
        ks_error("kv_pool_retain: block %d is not in use", id);
    pthread_mutex_unlock(&pool->mu);
}

void kv_pool_release(kv_pool *pool, int32_t id)
{
    pthread_mutex_lock(&pool->mu);
    if (id_in_use(pool, id)) {
        if (--pool->refcount[id] == 0) {
            bool resid = id >= pool->n_blocks;
            if (resid)
                pool->rfree_ids[pool->n_rfree++] = id;
            else
                pool->free_ids[pool->n_free_ids++] = id;
            pool->n_free += resid ? pool->r_units : 1;
        }
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
        if (ids[i] >= 0 && ids[i] < pool->n_blocks + pool->n_rblocks && pool->refcount[ids[i]] == 1)
            c++;
    pthread_mutex_unlock(&pool->mu);
    return c;
}

int32_t kv_pool_refcount(kv_pool *pool, int32_t id)
{
    if (id < 0 || id >= pool->n_blocks + pool->n_rblocks) return 0;
    pthread_mutex_lock(&pool->mu);
    int32_t r = pool->refcount[id];
    pthread_mutex_unlock(&pool->mu);
    return r;
}

void *kv_pool_block_k(const kv_pool *pool, int32_t id)
{
    if (id >= pool->n_blocks)
        return pool->rmem + (size_t)(id - pool->n_blocks) * pool->cls_bytes[CLS_RESID];
    return pool->mem + (size_t)id * pool->block_bytes;
}

void *kv_pool_block_v(const kv_pool *pool, int32_t id)
{
    return (uint8_t *)kv_pool_block_k(pool, id) + pool->k_bytes[id >= pool->n_blocks];
}

bool kv_pool_is_sealable(const kv_pool *pool)
{
    return pool->sealable;
}

bool kv_pool_block_is_residual(const kv_pool *pool, int32_t id)
{
    return id >= pool->n_blocks;
}

size_t kv_pool_block_bytes_of(const kv_pool *pool, int32_t id)
{
    return pool->cls_bytes[id >= pool->n_blocks];
}

int32_t kv_pool_residual_units(const kv_pool *pool)
{
    return pool->sealable ? pool->r_units : 1;
}

int32_t kv_pool_kv_residual(const kv_pool *pool)
{
    return pool->p.kv_residual;
}

ks_dtype kv_pool_row_k_dtype(const kv_pool *pool, int32_t id)
{
    return id >= pool->n_blocks && ks_dtype_is_kivi(pool->p.k_dtype) ? KS_DTYPE_F16
                                                                     : pool->p.k_dtype;
}

ks_dtype kv_pool_row_v_dtype(const kv_pool *pool, int32_t id)
{
    return id >= pool->n_blocks && ks_dtype_is_kivi(pool->p.v_dtype) ? KS_DTYPE_F16
                                                                     : pool->p.v_dtype;
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

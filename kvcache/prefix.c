/* prefix.c - prefix sharing: reuse the KV blocks of prompt prefixes already computed.
 *
 * Why: chat clients resend the whole conversation each turn and many requests share a long
 * system prompt; recomputing those tokens dominates time to first token. Like vLLM's automatic
 * prefix caching (and llama.cpp's cache_prompt), we remember, per FULL prompt block of
 * block_tokens tokens, the pool blocks that hold its keys and values for every (layer, KV
 * head). A block's key is a chained hash: hash(key of the previous block, this block's
 * tokens), so one key names the whole prefix up to that block and lookups walk the prompt one
 * block at a time from the start. Entries store their tokens and parent, so a hash collision
 * can never hand out the wrong keys.
 *
 * Only the `full` policy takes part: its block b of every table holds exactly tokens
 * b*bt..(b+1)*bt-1 at positions equal to their sequence index, which makes blocks computed
 * for one prompt valid for any prompt with the same prefix. Blocks of compressing policies
 * (SnapKV/PyramidKV select with their prompt's last queries) or window-relative positions
 * belong to their sequence alone and are never published.
 *
 * Sharing is copy-on-write through the pool refcounts: the cache holds one reference per
 * block, each sequence that adopted it another; any write to a block with refcount > 1
 * copies it first (table.c). The cache therefore never changes a block.
 *
 * Eviction: the cache keeps blocks until the pool needs them. kv_pool_alloc calls our
 * reclaim hook when it is short; we drop the least recently used entries that (1) have no
 * cached children (the chain must stay walkable from its start) and (2) only the cache
 * references, which frees their blocks at once. A sequence that uses an entry holds every
 * block of the entry's ancestors too, so unreferenced entries are always evictable leaf by
 * leaf, and the cache never causes an allocation failure that would not happen without it.
 *
 * Invariants: a live entry's parent is live and counts it in n_children; parent.last_use >=
 * child.last_use (a chain is touched as a whole). Lock order: kv_prefix.mu, then the pool's.
 */
#include "kvserve/kvcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PFX_SEED 0x9e3779b97f4a7c15ull

typedef struct pfx_entry {
    uint64_t hash;     /* chained key of the prefix ending with this block */
    uint64_t last_use; /* LRU tick */
    int32_t parent;    /* entry index of the previous block, -1 for the first */
    int32_t next;      /* next entry in the same hash bucket, or next free slot */
    int32_t n_children;
    int32_t depth; /* block index in the prompt */
    bool live;
} pfx_entry;

struct kv_prefix {
    kv_pool *pool;
    kv_prefix_params p;
    int32_t bt; /* tokens per block */
    int32_t nt; /* tables per sequence: n_layer * n_head_kv */
    pthread_mutex_t mu;
    pfx_entry *e;    /* [cap] */
    int32_t *tokens; /* [cap][bt] */
    int32_t *blocks; /* [cap][nt] pool block ids */
    int32_t cap, n_used, free_head, n_live;
    int32_t *bucket;  /* [n_bucket] first entry or -1 */
    int32_t n_bucket; /* power of two */
    uint64_t tick;
    int64_t hits_tokens, evictions;
};

/* ---------------------------------------------------------------- hashing and the table */

static uint64_t hash_block(uint64_t parent, const int32_t *tok, int32_t n)
{
    uint64_t h = parent ^ PFX_SEED;
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint32_t)tok[i];
        h *= 0x100000001b3ull; /* FNV-1a prime, on 32-bit tokens */
        h ^= h >> 29;
    }
    h ^= h >> 33; /* splitmix64 finaliser */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static int32_t find_locked(const kv_prefix *pc, uint64_t h, int32_t parent, const int32_t *tok)
{
    for (int32_t i = pc->bucket[h & (uint64_t)(pc->n_bucket - 1)]; i >= 0; i = pc->e[i].next) {
        const pfx_entry *e = &pc->e[i];
        if (e->hash == h && e->parent == parent &&
            memcmp(pc->tokens + (size_t)i * pc->bt, tok, (size_t)pc->bt * sizeof(int32_t)) == 0)
            return i;
    }
    return -1;
}

static void bucket_unlink(kv_prefix *pc, int32_t idx)
{
    int32_t *link = &pc->bucket[pc->e[idx].hash & (uint64_t)(pc->n_bucket - 1)];
    while (*link >= 0 && *link != idx)
        link = &pc->e[*link].next;
    if (*link == idx) *link = pc->e[idx].next;
}

static int rehash_locked(kv_prefix *pc, int32_t n_bucket)
{
    int32_t *b = malloc((size_t)n_bucket * sizeof(int32_t));
    if (!b) return KS_ERR_NOMEM;
    for (int32_t i = 0; i < n_bucket; i++)
        b[i] = -1;
    for (int32_t i = 0; i < pc->n_used; i++) {
        if (!pc->e[i].live) continue;
        int32_t k = (int32_t)(pc->e[i].hash & (uint64_t)(n_bucket - 1));
        pc->e[i].next = b[k];
        b[k] = i;
    }
    free(pc->bucket);
    pc->bucket = b;
    pc->n_bucket = n_bucket;
    return 0;
}

/* Makes room for one more entry (slot arrays and buckets); nothing changes on failure. */
static int reserve_locked(kv_prefix *pc)
{
    if (pc->free_head < 0 && pc->n_used == pc->cap) {
        int32_t cap = pc->cap ? pc->cap * 2 : 64;
        pfx_entry *e = realloc(pc->e, (size_t)cap * sizeof(*e));
        if (!e) return KS_ERR_NOMEM;
        pc->e = e;
        int32_t *t = realloc(pc->tokens, (size_t)cap * pc->bt * sizeof(int32_t));
        if (!t) return KS_ERR_NOMEM;
        pc->tokens = t;
        int32_t *bl = realloc(pc->blocks, (size_t)cap * pc->nt * sizeof(int32_t));
        if (!bl) return KS_ERR_NOMEM;
        pc->blocks = bl;
        pc->cap = cap;
    }
    if (pc->n_live + 1 > pc->n_bucket) return rehash_locked(pc, pc->n_bucket * 2);
    return 0;
}

/* Adds an entry holding a reference to each of blocks[0..nt); reserve_locked ran first. */
static int32_t insert_locked(kv_prefix *pc, uint64_t h, int32_t parent, int32_t depth,
                             const int32_t *tok, const int32_t *blocks)
{
    int32_t i;
    if (pc->free_head >= 0) {
        i = pc->free_head;
        pc->free_head = pc->e[i].next;
    } else {
        i = pc->n_used++;
    }
    int32_t k = (int32_t)(h & (uint64_t)(pc->n_bucket - 1));
    pc->e[i] = (pfx_entry){.hash = h,
                           .last_use = pc->tick,
                           .parent = parent,
                           .next = pc->bucket[k],
                           .depth = depth,
                           .live = true};
    pc->bucket[k] = i;
    memcpy(pc->tokens + (size_t)i * pc->bt, tok, (size_t)pc->bt * sizeof(int32_t));
    memcpy(pc->blocks + (size_t)i * pc->nt, blocks, (size_t)pc->nt * sizeof(int32_t));
    for (int32_t j = 0; j < pc->nt; j++)
        kv_pool_retain(pc->pool, blocks[j]);
    if (parent >= 0) pc->e[parent].n_children++;
    pc->n_live++;
    return i;
}

static void evict_locked(kv_prefix *pc, int32_t i)
{
    pfx_entry *e = &pc->e[i];
    bucket_unlink(pc, i);
    for (int32_t j = 0; j < pc->nt; j++)
        kv_pool_release(pc->pool, pc->blocks[(size_t)i * pc->nt + j]);
    if (e->parent >= 0) pc->e[e->parent].n_children--;
    e->live = false;
    e->next = pc->free_head;
    pc->free_head = i;
    pc->n_live--;
    pc->evictions++;
}

static bool unshared_locked(kv_prefix *pc, int32_t i)
{
    return kv_pool_count_unshared(pc->pool, pc->blocks + (size_t)i * pc->nt, pc->nt) == pc->nt;
}

/* Evicts LRU leaves that only the cache references until `want` pool blocks were freed;
 * returns blocks freed. Leaves first: a parent turns into a leaf when its
 * last child goes, and is then considered in the next round. */
static int64_t evict_lru_locked(kv_prefix *pc, int64_t want)
{
    int64_t freed = 0;
    int32_t *cand = malloc((size_t)(pc->n_used + 1) * sizeof(int32_t));
    if (!cand) return 0;
    while (freed < want) {
        int32_t n = 0;
        for (int32_t i = 0; i < pc->n_used; i++)
            if (pc->e[i].live && pc->e[i].n_children == 0 && unshared_locked(pc, i)) cand[n++] = i;
        if (n == 0) break;
        /* insertion sort by last_use (candidates are few; avoids qsort's missing context) */
        for (int32_t a = 1; a < n; a++) {
            int32_t v = cand[a], b = a - 1;
            while (b >= 0 && pc->e[cand[b]].last_use > pc->e[v].last_use) {
                cand[b + 1] = cand[b];
                b--;
            }
            cand[b + 1] = v;
        }
        for (int32_t k = 0; k < n && freed < want; k++) {
            freed += pc->nt;
            evict_locked(pc, cand[k]);
        }
    }
    free(cand);
    return freed;
}

static int64_t reclaim_hook(void *ud, int64_t want)
{
    return kv_prefix_reclaim(ud, want);
}

/* ---------------------------------------------------------------- public API */

int kv_prefix_create(kv_pool *pool, const kv_prefix_params *p, kv_prefix **out)
{
    *out = NULL;
    if (!pool || !p || p->n_layer < 1 || p->n_head_kv < 1 || p->n_layer > 4096 ||
        p->n_head_kv > 4096)
        return KS_ERR_INVALID;
    kv_prefix *pc = calloc(1, sizeof(*pc));
    if (!pc) return KS_ERR_NOMEM;
    pc->pool = pool;
    pc->p = *p;
    pc->bt = kv_pool_block_tokens(pool);
    pc->nt = p->n_layer * p->n_head_kv;
    pc->free_head = -1;
    if (rehash_locked(pc, 64) || pthread_mutex_init(&pc->mu, NULL) != 0) {
        free(pc->bucket);
        free(pc);
        return KS_ERR_NOMEM;
    }
    kv_pool_set_reclaim(pool, reclaim_hook, pc);
    *out = pc;
    return 0;
}

void kv_prefix_destroy(kv_prefix *pc)
{
    if (!pc) return;
    kv_pool_set_reclaim(pc->pool, NULL, NULL);
    for (int32_t i = 0; i < pc->n_used; i++)
        if (pc->e[i].live)
            for (int32_t j = 0; j < pc->nt; j++)
                kv_pool_release(pc->pool, pc->blocks[(size_t)i * pc->nt + j]);
    pthread_mutex_destroy(&pc->mu);
    free(pc->e);
    free(pc->tokens);
    free(pc->blocks);
    free(pc->bucket);
    free(pc);
}

/* Walks the cached chain of tokens[0..n); chain[k] = entry of block k; returns its length. */
static int32_t walk_locked(const kv_prefix *pc, const int32_t *tokens, int32_t n, int32_t *chain)
{
    int32_t parent = -1, k = 0;
    uint64_t ph = 0;
    for (; (int64_t)(k + 1) * pc->bt <= n; k++) {
        const int32_t *tok = tokens + (size_t)k * pc->bt;
        uint64_t h = hash_block(ph, tok, pc->bt);
        int32_t i = find_locked(pc, h, parent, tok);
        if (i < 0) break;
        if (chain) chain[k] = i;
        parent = i;
        ph = h;
    }
    return k;
}

int32_t kv_prefix_lookup(kv_prefix *pc, const int32_t *tokens, int32_t n)
{
    if (!pc || !tokens || n <= 0) return 0;
    pthread_mutex_lock(&pc->mu);
    int32_t k = walk_locked(pc, tokens, n, NULL);
    pthread_mutex_unlock(&pc->mu);
    return k * pc->bt;
}

int kv_prefix_seq_create(kv_prefix *pc, const kv_seq_params *p, const int32_t *tokens, int32_t n,
                         int32_t max_reuse, kv_seq **out, int32_t *n_cached)
{
    *n_cached = 0;
    *out = NULL;
    if (!pc) return KS_ERR_INVALID;
    int rc = kv_seq_create(pc->pool, p, out);
    if (rc || !tokens || n <= 0 || max_reuse <= 0) return rc;
    if (kv_seq_policy(*out) != &kv_policy_full || p->n_layer != pc->p.n_layer ||
        p->n_head_kv != pc->p.n_head_kv)
        return 0;
    int32_t max_blocks = n / pc->bt;
    int32_t *chain = malloc(((size_t)max_blocks + 1) * sizeof(int32_t));
    if (!chain) return 0; /* a miss, not an error */
    pthread_mutex_lock(&pc->mu);
    int32_t k = walk_locked(pc, tokens, n, chain);
    int32_t reuse = KS_MIN(k * pc->bt, KS_MIN(max_reuse, n));
    int32_t nb = (reuse + pc->bt - 1) / pc->bt;
    int32_t *ids = nb > 0 ? malloc((size_t)nb * pc->nt * sizeof(int32_t)) : NULL;
    if (ids) {
        for (int32_t b = 0; b < nb; b++)
            memcpy(ids + (size_t)b * pc->nt, pc->blocks + (size_t)chain[b] * pc->nt,
                   (size_t)pc->nt * sizeof(int32_t));
        /* Retain under our lock so that reclaim cannot free them in between. */
        if (kv_seq_adopt_prefix(*out, ids, nb, reuse) == 0) {
            pc->tick++;
            for (int32_t b = 0; b < k; b++)
                pc->e[chain[b]].last_use = pc->tick;
            pc->hits_tokens += reuse;
            *n_cached = reuse;
        }
    }
    pthread_mutex_unlock(&pc->mu);
    free(ids);
    free(chain);
    return 0;
}

/* True if the first nb blocks of every table of seq hold tokens 0..nb*bt-1 at positions equal
 * to their index, one full block each (what `full` does; anything else is not shareable). */
static bool seq_shareable(kv_prefix *pc, kv_seq *seq, int32_t nb)
{
    for (int32_t l = 0; l < pc->p.n_layer; l++) {
        for (int32_t h = 0; h < pc->p.n_head_kv; h++) {
            const kv_head_table *t = kv_seq_table(seq, l, h);
            if (!t || t->n_blocks < nb || t->n_tok < nb * pc->bt) return false;
            for (int32_t b = 0; b < nb; b++)
                if (t->blk_n[b] != pc->bt) return false;
            for (int32_t j = 0; j < nb * pc->bt; j++)
                if (t->idx[j] != j || t->pos[j] != j) return false;
        }
    }
    return true;
}

int kv_prefix_publish(kv_prefix *pc, kv_seq *seq, const int32_t *tokens, int32_t n)
{
    if (!pc || !seq || !tokens || n < pc->bt || kv_seq_policy(seq) != &kv_policy_full ||
        kv_seq_pool(seq) != pc->pool || kv_seq_n_layer(seq) != pc->p.n_layer ||
        kv_seq_n_head_kv(seq) != pc->p.n_head_kv)
        return 0;
    /* KIVI pools: a prompt's blocks are residual or sealed depending on the prompt's length
     * (the last kv_residual tokens stay f16), so they are not a reusable prefix; not cached */
    if (kv_pool_is_sealable(pc->pool)) return 0;
    int32_t nb = n / pc->bt;
    if (!seq_shareable(pc, seq, nb)) return 0;
    int32_t *ids = malloc((size_t)pc->nt * sizeof(int32_t));
    if (!ids) return KS_ERR_NOMEM;
    int rc = 0;
    pthread_mutex_lock(&pc->mu);
    pc->tick++;
    int32_t parent = -1;
    uint64_t ph = 0;
    for (int32_t b = 0; b < nb; b++) {
        const int32_t *tok = tokens + (size_t)b * pc->bt;
        uint64_t h = hash_block(ph, tok, pc->bt);
        int32_t i = find_locked(pc, h, parent, tok);
        if (i < 0) {
            if ((rc = reserve_locked(pc))) break;
            for (int32_t l = 0, j = 0; l < pc->p.n_layer; l++)
                for (int32_t hk = 0; hk < pc->p.n_head_kv; hk++)
                    ids[j++] = kv_seq_table(seq, l, hk)->blocks[b];
            i = insert_locked(pc, h, parent, b, tok, ids);
        }
        pc->e[i].last_use = pc->tick;
        parent = i;
        ph = h;
    }
    if (pc->p.max_entries > 0 && pc->n_live > pc->p.max_entries)
        (void)evict_lru_locked(pc, (int64_t)(pc->n_live - pc->p.max_entries) * pc->nt);
    pthread_mutex_unlock(&pc->mu);
    free(ids);
    return rc;
}

int64_t kv_prefix_reclaimable(kv_prefix *pc)
{
    if (!pc) return 0;
    pthread_mutex_lock(&pc->mu);
    /* An entry can be freed iff it and all its descendants are referenced only by us: mark
     * every entry that is referenced elsewhere, and its ancestors, as busy. */
    uint8_t *busy = calloc((size_t)pc->n_used + 1, 1);
    int64_t n = 0;
    if (busy) {
        for (int32_t i = 0; i < pc->n_used; i++) {
            if (!pc->e[i].live || busy[i] || unshared_locked(pc, i)) continue;
            for (int32_t a = i; a >= 0 && !busy[a]; a = pc->e[a].parent)
                busy[a] = 1;
        }
        for (int32_t i = 0; i < pc->n_used; i++)
            if (pc->e[i].live && !busy[i]) n += pc->nt;
        free(busy);
    }
    pthread_mutex_unlock(&pc->mu);
    return n;
}

int64_t kv_prefix_reclaim(kv_prefix *pc, int64_t want)
{
    if (!pc || want <= 0) return 0;
    pthread_mutex_lock(&pc->mu);
    int64_t freed = evict_lru_locked(pc, want);
    pthread_mutex_unlock(&pc->mu);
    return freed;
}

void kv_prefix_get_stats(kv_prefix *pc, kv_prefix_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!pc) return;
    pthread_mutex_lock(&pc->mu);
    out->entries = pc->n_live;
    out->blocks_held = (int64_t)pc->n_live * pc->nt;
    out->hits_tokens = pc->hits_tokens;
    out->evictions = pc->evictions;
    pthread_mutex_unlock(&pc->mu);
}

/* ---------------------------------------------------------------- snapshots (persist.c) */

static int cmp_recent(const void *a, const void *b, void *ctx)
{
    const kv_prefix *pc = ctx;
    const pfx_entry *x = &pc->e[*(const int32_t *)a], *y = &pc->e[*(const int32_t *)b];
    if (x->last_use != y->last_use) return x->last_use > y->last_use ? -1 : 1;
    return (x->depth > y->depth) - (x->depth < y->depth);
}

static int cmp_depth(const void *a, const void *b, void *ctx)
{
    const kv_prefix *pc = ctx;
    const pfx_entry *x = &pc->e[*(const int32_t *)a], *y = &pc->e[*(const int32_t *)b];
    return (x->depth > y->depth) - (x->depth < y->depth);
}

/* Fills s from the chosen entries (sorted parents first) and retains their blocks. */
static int snap_fill_locked(kv_prefix *pc, const int32_t *sel, int32_t n, kv_prefix_snap *s)
{
    int32_t *map = malloc(((size_t)pc->n_used + 1) * sizeof(int32_t));
    s->parent = malloc(((size_t)n + 1) * sizeof(int32_t));
    s->tokens = malloc(((size_t)n + 1) * pc->bt * sizeof(int32_t));
    s->blocks = malloc(((size_t)n + 1) * pc->nt * sizeof(int32_t));
    if (!map || !s->parent || !s->tokens || !s->blocks) {
        free(map);
        return KS_ERR_NOMEM;
    }
    for (int32_t k = 0; k < n; k++) {
        int32_t i = sel[k];
        map[i] = k;
        s->parent[k] = pc->e[i].parent >= 0 ? map[pc->e[i].parent] : -1;
        memcpy(s->tokens + (size_t)k * pc->bt, pc->tokens + (size_t)i * pc->bt,
               (size_t)pc->bt * sizeof(int32_t));
        memcpy(s->blocks + (size_t)k * pc->nt, pc->blocks + (size_t)i * pc->nt,
               (size_t)pc->nt * sizeof(int32_t));
        for (int32_t j = 0; j < pc->nt; j++)
            kv_pool_retain(pc->pool, pc->blocks[(size_t)i * pc->nt + j]);
    }
    s->n = n;
    free(map);
    return 0;
}

int kv_prefix_snapshot(kv_prefix *pc, int64_t max_entries, kv_prefix_snap *out)
{
    memset(out, 0, sizeof(*out));
    if (!pc) return KS_ERR_INVALID;
    out->bt = pc->bt;
    out->nt = pc->nt;
    pthread_mutex_lock(&pc->mu);
    int32_t *sel = malloc(((size_t)pc->n_used + 1) * sizeof(int32_t)), n = 0;
    int rc = sel ? 0 : KS_ERR_NOMEM;
    for (int32_t i = 0; sel && i < pc->n_used; i++)
        if (pc->e[i].live) sel[n++] = i;
    if (sel && max_entries >= 0 && n > max_entries) {
        /* most recent first; parents are at least as recent as their children and sort before
         * them on ties, so any prefix of this order holds every kept entry's ancestors */
        qsort_r(sel, (size_t)n, sizeof(int32_t), cmp_recent, pc);
        n = (int32_t)max_entries;
    }
    if (sel) {
        qsort_r(sel, (size_t)n, sizeof(int32_t), cmp_depth, pc);
        rc = snap_fill_locked(pc, sel, n, out);
    }
    pthread_mutex_unlock(&pc->mu);
    free(sel);
    if (rc) kv_prefix_snap_release(pc, out);
    return rc;
}

void kv_prefix_snap_release(kv_prefix *pc, kv_prefix_snap *s)
{
    for (int64_t j = 0; pc && s->blocks && j < (int64_t)s->n * s->nt; j++)
        kv_pool_release(pc->pool, s->blocks[j]);
    free(s->parent);
    free(s->tokens);
    free(s->blocks);
    memset(s, 0, sizeof(*s));
}

int32_t kv_prefix_insert(kv_prefix *pc, int32_t parent, const int32_t *tokens, const int32_t *ids)
{
    if (!pc || !tokens || !ids || parent < -1) return KS_ERR_INVALID;
    pthread_mutex_lock(&pc->mu);
    int32_t rc;
    if (parent >= pc->n_used || (parent >= 0 && !pc->e[parent].live)) {
        rc = KS_ERR_INVALID;
    } else {
        uint64_t h = hash_block(parent >= 0 ? pc->e[parent].hash : 0, tokens, pc->bt);
        rc = find_locked(pc, h, parent, tokens);
        if (rc < 0) {
            int r = reserve_locked(pc);
            rc = r ? r
                   : insert_locked(pc, h, parent, parent >= 0 ? pc->e[parent].depth + 1 : 0, tokens,
                                   ids);
        }
    }
    pthread_mutex_unlock(&pc->mu);
    return rc;
}

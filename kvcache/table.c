/* table.c - per-(layer, KV head) block tables and the sequence cache that owns them.
 *
 * A kv_head_table lists the tokens one KV head of one layer keeps ("slots", in a fixed order)
 * packed into pool blocks; each slot carries its sequence index (for the causal mask) and the
 * RoPE position its key was rotated with. Policies differ only in which slots they keep, so
 * there is one mutation primitive for eviction: kv_head_table_keep(). Blocks may be partly
 * filled after eviction; keep() compacts rows within blocks (cheap: evicting the oldest
 * window tokens only moves rows of one block) and repacks the table densely when it wastes
 * more than a block, so memory stays within one block of n_tok per head.
 *
 * Invariants: every block in blocks[] has 1..block_tokens tokens; sum(blk_n) == n_tok; a block
 * shared with another table (refcount > 1) is never written: it is copied first (COW).
 * Every mutation checks all its failure cases (pool full, out of memory) before changing
 * anything, so a failed call leaves the table as it was.
 */
#include "kvserve/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "kvserve/quant.h"

struct kv_seq {
    kv_pool *pool;
    int32_t n_layer;
    int32_t n_head_kv;
    const kv_policy *policy;
    void *state;
    kv_head_table *tables; /* [n_layer][n_head_kv] */
    int64_t n_seen;
    int32_t *window; /* [n_layer] sliding windows (0 = global), NULL if none */
    float *seal_buf; /* [block_tokens][head_dim] sealable pools: a block's rows as f32 */
};

/* ---------------------------------------------------------------------------------------- */
/* Head table                                                                                */

static int table_reserve(kv_head_table *t, int32_t n_tok, int32_t n_blocks)
{
    if (n_tok > t->cap_tok) {
        int32_t cap = KS_MAX(n_tok, t->cap_tok < 1024 ? 64 : t->cap_tok + t->cap_tok / 2);
        if (cap < n_tok) cap = n_tok;
        int32_t *idx = realloc(t->idx, (size_t)cap * sizeof(int32_t));
        if (!idx) return KS_ERR_NOMEM;
        t->idx = idx;
        int32_t *pos = realloc(t->pos, (size_t)cap * sizeof(int32_t));
        if (!pos) return KS_ERR_NOMEM;
        t->pos = pos;
        t->cap_tok = cap;
    }
    if (n_blocks > t->cap_blocks) {
        int32_t cap = KS_MAX(n_blocks, t->cap_blocks < 16 ? 16 : t->cap_blocks * 2);
        int32_t *b = realloc(t->blocks, (size_t)cap * sizeof(int32_t));
        if (!b) return KS_ERR_NOMEM;
        t->blocks = b;
        int32_t *bn = realloc(t->blk_n, (size_t)cap * sizeof(int32_t));
        if (!bn) return KS_ERR_NOMEM;
        t->blk_n = bn;
        /* kv_head_table_keep's scratch grows with the blocks, so eviction (every decode
         * token under a windowed policy) never allocates */
        int32_t *ks = realloc(t->keep_scratch, ((size_t)cap * 8 + 1) * sizeof(int32_t));
        if (!ks) return KS_ERR_NOMEM;
        t->keep_scratch = ks;
        t->cap_blocks = cap;
    }
    return 0;
}

static void table_deinit(kv_head_table *t)
{
    for (int32_t b = 0; b < t->n_blocks; b++)
        kv_pool_release(t->pool, t->blocks[b]);
    free(t->blocks);
    free(t->blk_n);
    free(t->idx);
    free(t->keep_scratch);
    free(t->pos);
    memset(t, 0, sizeof(*t));
}

/* Replaces blocks[b] with a private copy made in block `fresh` (of the same class). */
static void table_cow(kv_head_table *t, int32_t b, int32_t fresh)
{
    memcpy(kv_pool_block_k(t->pool, fresh), kv_pool_block_k(t->pool, t->blocks[b]),
           kv_pool_block_bytes_of(t->pool, t->blocks[b]));
    kv_pool_release(t->pool, t->blocks[b]);
    t->blocks[b] = fresh;
}

int kv_head_table_locate(const kv_head_table *t, int32_t slot, int32_t *blk, int32_t *row)
{
    if (slot < 0 || slot >= t->n_tok) return KS_ERR_RANGE;
    int32_t start = 0;
    for (int32_t b = 0; b < t->n_blocks; b++) {
        if (slot < start + t->blk_n[b]) {
            *blk = b;
            *row = slot - start;
            return 0;
        }
        start += t->blk_n[b];
    }
    return KS_ERR_INTERNAL;
}

/* Bytes of one row of block id's K (V) part; 0 for a sealed KIVI K group (not rows). */
static size_t row_bytes(const kv_pool *pool, int32_t id, bool is_k)
{
    ks_dtype dt = is_k ? kv_pool_row_k_dtype(pool, id) : kv_pool_row_v_dtype(pool, id);
    if (is_k && ks_dtype_is_kivi(dt)) return 0;
    return ks_dtype_row_bytes(dt, kv_pool_head_dim(pool));
}

void *kv_head_table_k_row(const kv_head_table *t, int32_t blk, int32_t row)
{
    size_t rb = row_bytes(t->pool, t->blocks[blk], true);
    if (!rb) return NULL;
    return (uint8_t *)kv_pool_block_k(t->pool, t->blocks[blk]) + (size_t)row * rb;
}

void *kv_head_table_v_row(const kv_head_table *t, int32_t blk, int32_t row)
{
    return (uint8_t *)kv_pool_block_v(t->pool, t->blocks[blk]) +
           (size_t)row * row_bytes(t->pool, t->blocks[blk], false);
}

void kv_head_table_set_pos(kv_head_table *t, int32_t slot, int32_t pos)
{
    if (slot >= 0 && slot < t->n_tok) t->pos[slot] = pos;
}

int kv_head_table_make_writable(kv_head_table *t)
{
    for (int32_t b = 0; b < t->n_blocks; b++) {
        if (kv_pool_refcount(t->pool, t->blocks[b]) <= 1) continue;
        int32_t fresh; /* the copy is of the same class (a sealed KIVI block stays sealed) */
        int rc = kv_pool_is_sealable(t->pool) && !kv_pool_block_is_residual(t->pool, t->blocks[b])
                     ? kv_pool_alloc_sealed(t->pool, 1, &fresh)
                     : kv_pool_alloc(t->pool, 1, &fresh);
        if (rc) return rc;
        table_cow(t, b, fresh);
    }
    return 0;
}

int kv_head_table_spans(const kv_head_table *t, attn_span *out, int32_t max, int32_t *n)
{
    *n = t->n_blocks;
    if (t->n_blocks > max) return KS_ERR_RANGE;
    int32_t start = 0;
    for (int32_t b = 0; b < t->n_blocks; b++) {
        out[b] = (attn_span){
            .k = kv_pool_block_k(t->pool, t->blocks[b]),
            .v = kv_pool_block_v(t->pool, t->blocks[b]),
            .idx = t->idx + start,
            .n = t->blk_n[b],
            .group =
                kv_pool_is_sealable(t->pool) && !kv_pool_block_is_residual(t->pool, t->blocks[b])
                    ? kv_pool_block_tokens(t->pool)
                    : 0,
        };
        start += t->blk_n[b];
    }
    return 0;
}

/* Where kept token i (in source block sb) goes: (dst block index in the current list, row).
 * Repacking fills blocks densely in order; otherwise a block's rows either stay in it
 * (compacted to the front) or, when they all fit behind the previous destination block's
 * rows, move there (dblk/doff: that block and the row where this block's rows start). */
static void keep_dest(const int32_t *kc_rank, const int32_t *ridx, const int32_t *dblk,
                      const int32_t *doff, bool repack, int32_t bt, int32_t i, int32_t sb,
                      int32_t *db, int32_t *dr)
{
    if (repack) {
        *db = ridx[i / bt];
        *dr = i % bt;
    } else {
        *db = dblk[sb];
        *dr = doff[sb] + kc_rank[sb];
    }
}

/* Moves kept rows to their destinations (or only marks written blocks when `mark`). */
static void keep_walk(kv_head_table *t, const int32_t *keep, int32_t n, int32_t *rank,
                      const int32_t *ridx, const int32_t *dblk, const int32_t *doff, bool repack,
                      uint8_t *written, bool mark)
{
    int32_t bt = kv_pool_block_tokens(t->pool);
    int32_t b = 0, start = 0;
    memset(rank, 0, (size_t)t->n_blocks * sizeof(int32_t));
    for (int32_t i = 0; i < n; i++) {
        while (keep[i] >= start + t->blk_n[b])
            start += t->blk_n[b++];
        int32_t sr = keep[i] - start, db, dr;
        keep_dest(rank, ridx, dblk, doff, repack, bt, i, b, &db, &dr);
        rank[b]++;
        if (db == b && dr == sr) continue;
        if (mark) {
            written[db] = 1;
            continue;
        }
        /* rows move only between blocks of one class (keep refuses sealed KIVI moves) */
        memmove(kv_head_table_k_row(t, db, dr), kv_head_table_k_row(t, b, sr),
                row_bytes(t->pool, t->blocks[b], true));
        memmove(kv_head_table_v_row(t, db, dr), kv_head_table_v_row(t, b, sr),
                row_bytes(t->pool, t->blocks[b], false));
    }
}

int kv_head_table_keep(kv_head_table *t, const int32_t *keep, int32_t n)
{
    if (n < 0 || n > t->n_tok || (n > 0 && !keep)) return KS_ERR_INVALID;
    for (int32_t i = 0; i < n; i++)
        if (keep[i] < 0 || keep[i] >= t->n_tok || (i > 0 && keep[i] <= keep[i - 1]))
            return KS_ERR_INVALID;
    if (n == t->n_tok) return 0;
    int32_t nb = t->n_blocks, bt = kv_pool_block_tokens(t->pool);
    /* scratch: 7 int32 arrays of nb, then nb + 1 written flags (sized by table_reserve) */
    int32_t *buf = t->keep_scratch;
    uint8_t *written = (uint8_t *)(buf + (size_t)nb * 7 + 1);
    memset(buf, 0, ((size_t)nb * 7 + 1) * sizeof(int32_t) + (size_t)nb + 1);
    int32_t *kc = buf, *ridx = buf + nb, *rank = buf + 2 * nb, *cow = buf + 3 * nb;
    int32_t *dblk = buf + 4 * nb, *doff = buf + 5 * nb, *fill = buf + 6 * nb;
    for (int32_t i = 0, b = 0, start = 0; i < n; i++) {
        while (keep[i] >= start + t->blk_n[b])
            start += t->blk_n[b++];
        kc[b]++;
    }
    int32_t n_rem = 0;
    for (int32_t b = 0; b < nb; b++)
        if (kc[b] > 0) ridx[n_rem++] = b;
    int32_t n_dst = (n + bt - 1) / bt;
    bool repack = n_rem > n_dst + 1;
    /* Merge a block's remaining rows into the previous kept block when they fit: evicting
     * from the front of a window then never leaves two part-filled blocks side by side
     * (sinks + oldest window rows share a block), and at most bt rows move per block. */
    for (int32_t j = 0, cur = -1; j < n_rem; j++) {
        int32_t b = ridx[j];
        if (cur >= 0 && fill[cur] + kc[b] <= bt) {
            dblk[b] = cur;
            doff[b] = fill[cur];
            fill[cur] += kc[b];
        } else {
            cur = b;
            dblk[b] = b;
            doff[b] = 0;
            fill[b] = kc[b];
        }
    }

    /* Copy-on-write every shared block that will be written, all or nothing. */
    keep_walk(t, keep, n, rank, ridx, dblk, doff, repack, written, true);
    int32_t n_cow = 0;
    for (int32_t b = 0; b < nb; b++) {
        /* a sealed KIVI group is quantised as a whole: its rows cannot move (sealed blocks
         * precede residual ones, so any row leaving one also lands in one) */
        if (written[b] && kv_pool_is_sealable(t->pool) &&
            !kv_pool_block_is_residual(t->pool, t->blocks[b]))
            return KS_ERR_UNSUPPORTED;
        if (written[b] && kv_pool_refcount(t->pool, t->blocks[b]) > 1) n_cow++;
    }
    int rc = kv_pool_alloc(t->pool, n_cow, cow);
    if (rc) {
        return rc;
    }
    for (int32_t b = 0, c = 0; b < nb; b++)
        if (written[b] && kv_pool_refcount(t->pool, t->blocks[b]) > 1) table_cow(t, b, cow[c++]);

    keep_walk(t, keep, n, rank, ridx, dblk, doff, repack, written, false);
    for (int32_t i = 0; i < n; i++) {
        t->idx[i] = t->idx[keep[i]];
        t->pos[i] = t->pos[keep[i]];
    }
    /* Rebuild the block list: release emptied blocks, and surplus (repack) or merged-away
     * blocks. */
    for (int32_t b = 0; b < nb; b++)
        if (kc[b] == 0) kv_pool_release(t->pool, t->blocks[b]);
    int32_t n_keep_blocks = 0;
    for (int32_t j = 0; j < n_rem; j++) {
        int32_t b = ridx[j];
        bool kept = repack ? j < n_dst : dblk[b] == b;
        if (!kept) {
            kv_pool_release(t->pool, t->blocks[b]);
            continue;
        }
        t->blocks[n_keep_blocks] = t->blocks[b];
        t->blk_n[n_keep_blocks] = repack ? KS_MIN(bt, n - n_keep_blocks * bt) : fill[b];
        n_keep_blocks++;
    }
    t->n_blocks = n_keep_blocks;
    t->n_tok = n;
    return 0;
}

/* Blocks this table needs to take n_tok more tokens (fresh ones and a COW of a shared tail). */
static int32_t table_append_need(const kv_head_table *t, int32_t n_tok)
{
    int32_t bt = kv_pool_block_tokens(t->pool);
    int32_t room = 0;
    bool cow = false;
    if (t->n_blocks > 0) {
        room = bt - t->blk_n[t->n_blocks - 1];
        cow = room > 0 && n_tok > 0 && kv_pool_refcount(t->pool, t->blocks[t->n_blocks - 1]) > 1;
    }
    int32_t rest = n_tok > room ? n_tok - room : 0;
    return (rest + bt - 1) / bt + (cow ? 1 : 0);
}

/* Appends rows using blocks from ids[] (table_append_need of them); returns how many it used
 * (fewer only if another thread dropped its share of the tail block meanwhile). */
static int32_t table_append(kv_head_table *t, int32_t n_tok, const float *k, const float *v,
                            size_t stride, const int32_t *idx, const int32_t *pos,
                            const int32_t *ids)
{
    int32_t bt = kv_pool_block_tokens(t->pool), hd = kv_pool_head_dim(t->pool);
    int32_t used = 0;
    if (t->n_blocks > 0 && t->blk_n[t->n_blocks - 1] < bt && n_tok > 0 &&
        kv_pool_refcount(t->pool, t->blocks[t->n_blocks - 1]) > 1)
        table_cow(t, t->n_blocks - 1, ids[used++]);
    for (int32_t i = 0; i < n_tok; i++) {
        if (t->n_blocks == 0 || t->blk_n[t->n_blocks - 1] == bt) {
            t->blocks[t->n_blocks] = ids[used++];
            t->blk_n[t->n_blocks++] = 0;
        }
        int32_t b = t->n_blocks - 1, r = t->blk_n[b]++, id = t->blocks[b];
        /* appends always land in a row-addressable block (residual in a sealable pool) */
        ks_dtype_from_f32(kv_pool_row_k_dtype(t->pool, id), k + (size_t)i * stride,
                          kv_head_table_k_row(t, b, r), hd);
        ks_dtype_from_f32(kv_pool_row_v_dtype(t->pool, id), v + (size_t)i * stride,
                          kv_head_table_v_row(t, b, r), hd);
        t->idx[t->n_tok] = idx[i];
        t->pos[t->n_tok] = pos[i];
        t->n_tok++;
    }
    return used;
}

/* Quantises residual block blocks[b] (full) into a fresh sealed block: KIVI parts from
 * their f16 rows (K per channel over the block, V per row), other parts copied. buf holds
 * block_tokens * head_dim floats. Returns 0 or KS_ERR_FULL (block left residual). */
static int table_seal_block(kv_head_table *t, int32_t b, float *buf)
{
    kv_pool *pool = t->pool;
    int32_t bt = kv_pool_block_tokens(pool), hd = kv_pool_head_dim(pool), src = t->blocks[b];
    int32_t dst;
    int rc = kv_pool_alloc_sealed(pool, 1, &dst);
    if (rc) return rc;
    ks_dtype kt = kv_pool_k_dtype(pool), vt = kv_pool_v_dtype(pool);
    size_t n = (size_t)bt * (size_t)hd;
    if (ks_dtype_is_kivi(kt)) {
        qt_dequantize_row(QT_F16, kv_pool_block_k(pool, src), buf, (int64_t)n);
        ks_kivi_k_seal(kt, buf, bt, hd, kv_pool_block_k(pool, dst));
    } else {
        memcpy(kv_pool_block_k(pool, dst), kv_pool_block_k(pool, src),
               (size_t)bt * kv_pool_k_row_bytes(pool));
    }
    uint8_t *vd = kv_pool_block_v(pool, dst);
    size_t vrow = kv_pool_v_row_bytes(pool);
    if (ks_dtype_is_kivi(vt)) {
        qt_dequantize_row(QT_F16, kv_pool_block_v(pool, src), buf, (int64_t)n);
        for (int32_t r = 0; r < bt; r++)
            ks_kivi_v_from_f32(vt, buf + (size_t)r * hd, vd + (size_t)r * vrow, hd);
    } else {
        memcpy(vd, kv_pool_block_v(pool, src), (size_t)bt * vrow);
    }
    kv_pool_release(pool, src);
    t->blocks[b] = dst;
    return 0;
}

/* Seals every residual block that is full and wholly older than the last kv_residual tokens.
 * Residual blocks form a suffix of the table, so this walks from the back. A full pool only
 * postpones sealing (the rows stay f16 and correct) to the next append. */
static void table_seal(kv_head_table *t, float *buf)
{
    if (!kv_pool_is_sealable(t->pool)) return;
    int32_t bt = kv_pool_block_tokens(t->pool), keep = kv_pool_kv_residual(t->pool);
    int32_t first = t->n_blocks, end = t->n_tok;
    while (first > 0 && kv_pool_block_is_residual(t->pool, t->blocks[first - 1]))
        end -= t->blk_n[--first];
    for (int32_t b = first; b < t->n_blocks; b++) {
        end += t->blk_n[b]; /* end = slots up to and including block b */
        if (t->blk_n[b] < bt || t->n_tok - end < keep) break;
        if (table_seal_block(t, b, buf)) break;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Sequence                                                                                  */

int kv_seq_create(kv_pool *pool, const kv_seq_params *p, kv_seq **out)
{
    *out = NULL;
    if (!pool || !p || p->n_layer < 1 || p->n_head_kv < 1 || p->n_layer > 4096 ||
        p->n_head_kv > 4096)
        return KS_ERR_INVALID;
    const kv_policy *pol = p->policy ? p->policy : &kv_policy_full;
    /* KIVI blocks are quantised per block, so only a policy that never moves rows between
     * blocks may use them: `full` (the others compact rows on eviction) */
    if (kv_pool_is_sealable(pool) && pol != &kv_policy_full) return KS_ERR_UNSUPPORTED;
    kv_seq *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->pool = pool;
    if (kv_pool_is_sealable(pool) &&
        !(s->seal_buf = malloc((size_t)kv_pool_block_tokens(pool) * (size_t)kv_pool_head_dim(pool) *
                               sizeof(float)))) {
        free(s);
        return KS_ERR_NOMEM;
    }
    s->n_layer = p->n_layer;
    s->n_head_kv = p->n_head_kv;
    s->policy = pol;
    s->tables = calloc((size_t)p->n_layer * (size_t)p->n_head_kv, sizeof(kv_head_table));
    if (!s->tables) {
        free(s->seal_buf);
        free(s);
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < p->n_layer * p->n_head_kv; i++)
        s->tables[i].pool = pool;
    for (int32_t l = 0; p->layer_window && l < p->n_layer; l++) {
        if (p->layer_window[l] < 0) {
            kv_seq_destroy(s);
            return KS_ERR_INVALID;
        }
        if (!s->window && !(s->window = calloc((size_t)p->n_layer, sizeof(int32_t)))) {
            kv_seq_destroy(s);
            return KS_ERR_NOMEM;
        }
        s->window[l] = p->layer_window[l];
    }
    if (pol->init) {
        int rc = pol->init(s, p->policy_config, &s->state);
        if (rc) {
            s->policy = &kv_policy_full; /* so destroy does not call free on no state */
            kv_seq_destroy(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

void kv_seq_destroy(kv_seq *seq)
{
    if (!seq) return;
    if (seq->policy->free) seq->policy->free(seq, seq->state);
    if (seq->tables)
        for (int32_t i = 0; i < seq->n_layer * seq->n_head_kv; i++)
            table_deinit(&seq->tables[i]);
    free(seq->tables);
    free(seq->window);
    free(seq->seal_buf);
    free(seq);
}

int32_t kv_seq_layer_window(const kv_seq *seq, int32_t layer)
{
    if (!seq->window || layer < 0 || layer >= seq->n_layer) return 0;
    return seq->window[layer];
}

/* Keeps the slots from the first block holding a key a query at next_idx or later can see
 * (idx > next_idx - w); whole blocks only, so no row moves. */
static int table_trim_window(kv_head_table *t, int64_t next_idx, int32_t w)
{
    int32_t first = 0, drop = 0;
    for (int32_t b = 0; b < t->n_blocks; b++) {
        int32_t hi = INT32_MIN;
        for (int32_t j = 0; j < t->blk_n[b]; j++)
            hi = KS_MAX(hi, t->idx[first + j]);
        if ((int64_t)hi > next_idx - w) break;
        first += t->blk_n[b];
        drop = first;
    }
    if (drop == 0) return 0;
    int32_t n = t->n_tok - drop;
    int32_t *keep = malloc((size_t)KS_MAX(n, 1) * sizeof(int32_t));
    if (!keep) return KS_ERR_NOMEM;
    for (int32_t i = 0; i < n; i++)
        keep[i] = drop + i;
    int rc = kv_head_table_keep(t, keep, n);
    free(keep);
    return rc;
}

int kv_seq_trim_windows(kv_seq *seq, int64_t next_idx)
{
    for (int32_t l = 0; seq->window && l < seq->n_layer; l++) {
        if (seq->window[l] <= 0) continue;
        for (int32_t h = 0; h < seq->n_head_kv; h++) {
            int rc = table_trim_window(kv_seq_table(seq, l, h), next_idx, seq->window[l]);
            if (rc) return rc;
        }
    }
    return 0;
}

kv_pool *kv_seq_pool(const kv_seq *seq)
{
    return seq->pool;
}
int32_t kv_seq_n_layer(const kv_seq *seq)
{
    return seq->n_layer;
}
int32_t kv_seq_n_head_kv(const kv_seq *seq)
{
    return seq->n_head_kv;
}
const kv_policy *kv_seq_policy(const kv_seq *seq)
{
    return seq->policy;
}
void *kv_seq_policy_state(const kv_seq *seq)
{
    return seq->state;
}

kv_head_table *kv_seq_table(kv_seq *seq, int32_t layer, int32_t kv_head)
{
    if (layer < 0 || layer >= seq->n_layer || kv_head < 0 || kv_head >= seq->n_head_kv) return NULL;
    return &seq->tables[(size_t)layer * seq->n_head_kv + kv_head];
}

int64_t kv_seq_append_need(kv_seq *seq, int32_t n_tok)
{
    int64_t need = 0;
    for (int32_t l = 0; l < seq->n_layer; l++)
        for (int32_t h = 0; h < seq->n_head_kv; h++)
            need += table_append_need(kv_seq_table(seq, l, h), n_tok);
    /* sealable pools: appends take residual blocks (several units each), and one unit of
     * headroom lets the first seal happen before the residual blocks are released */
    if (kv_pool_is_sealable(seq->pool) && need > 0)
        need = need * kv_pool_residual_units(seq->pool) + 1;
    return need;
}

int kv_seq_append(kv_seq *seq, int32_t layer, int32_t n_tok, const float *k, const float *v,
                  const int32_t *idx, const int32_t *pos)
{
    if (layer < 0 || layer >= seq->n_layer || n_tok < 0 ||
        (n_tok > 0 && (!k || !v || !idx || !pos)))
        return KS_ERR_INVALID;
    if (n_tok == 0) return 0;
    kv_head_table *tabs = kv_seq_table(seq, layer, 0);
    int32_t need = 0;
    for (int32_t h = 0; h < seq->n_head_kv; h++) {
        kv_head_table *t = &tabs[h];
        if (n_tok > INT32_MAX - t->n_tok) return KS_ERR_RANGE;
        int32_t nh = table_append_need(t, n_tok);
        int rc = table_reserve(t, t->n_tok + n_tok, t->n_blocks + nh + 1);
        if (rc) return rc;
        need += nh;
    }
    int32_t stack_ids[64];
    int32_t *ids = need <= 64 ? stack_ids : malloc((size_t)need * sizeof(int32_t));
    if (!ids) return KS_ERR_NOMEM;
    int rc = kv_pool_alloc(seq->pool, need, ids);
    if (rc == 0) {
        int32_t hd = kv_pool_head_dim(seq->pool), used = 0;
        size_t stride = (size_t)seq->n_head_kv * hd;
        for (int32_t h = 0; h < seq->n_head_kv; h++) {
            used += table_append(&tabs[h], n_tok, k + (size_t)h * hd, v + (size_t)h * hd, stride,
                                 idx, pos, ids + used);
            table_seal(&tabs[h], seq->seal_buf);
        }
        for (int32_t i = used; i < need; i++)
            kv_pool_release(seq->pool, ids[i]);
        if (layer == 0) seq->n_seen += n_tok;
    }
    if (ids != stack_ids) free(ids);
    return rc;
}

int kv_seq_adopt_prefix(kv_seq *seq, const int32_t *blocks, int32_t n_blocks, int32_t n_tok)
{
    if (!seq || seq->policy != &kv_policy_full || seq->n_seen != 0 || n_tok < 0 ||
        (n_tok > 0 && !blocks))
        return KS_ERR_INVALID;
    int32_t bt = kv_pool_block_tokens(seq->pool), nt = seq->n_layer * seq->n_head_kv;
    if (n_blocks != (n_tok + bt - 1) / bt) return KS_ERR_INVALID;
    if (n_tok == 0) return 0;
    for (int32_t i = 0; i < nt; i++) {
        if (seq->tables[i].n_tok != 0) return KS_ERR_INVALID;
        int rc = table_reserve(&seq->tables[i], n_tok, n_blocks + 1);
        if (rc) return rc;
    }
    for (int32_t i = 0; i < nt; i++) {
        kv_head_table *t = &seq->tables[i];
        for (int32_t b = 0; b < n_blocks; b++) {
            int32_t id = blocks[(size_t)b * nt + i];
            kv_pool_retain(seq->pool, id);
            t->blocks[b] = id;
            t->blk_n[b] = KS_MIN(bt, n_tok - b * bt);
        }
        for (int32_t j = 0; j < n_tok; j++)
            t->idx[j] = t->pos[j] = j;
        t->n_blocks = n_blocks;
        t->n_tok = n_tok;
    }
    seq->n_seen = n_tok;
    return 0;
}

int kv_seq_spans(kv_seq *seq, int32_t layer, int32_t kv_head, attn_span *out, int32_t max,
                 int32_t *n)
{
    *n = 0;
    kv_head_table *t = kv_seq_table(seq, layer, kv_head);
    if (!t || max < 0 || (max > 0 && !out)) return KS_ERR_INVALID;
    return kv_head_table_spans(t, out, max, n);
}

void kv_seq_get_stats(const kv_seq *seq, kv_seq_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->tokens_seen = seq->n_seen;
    for (int32_t i = 0; i < seq->n_layer * seq->n_head_kv; i++) {
        out->tokens_kept += seq->tables[i].n_tok;
        out->blocks += seq->tables[i].n_blocks;
    }
    out->tokens_kept_avg = (double)out->tokens_kept / ((double)seq->n_layer * seq->n_head_kv);
    out->bytes = 0; /* per block: a sealable pool's residual blocks are larger */
    for (int32_t i = 0; i < seq->n_layer * seq->n_head_kv; i++)
        for (int32_t b = 0; b < seq->tables[i].n_blocks; b++)
            out->bytes += kv_pool_block_bytes_of(seq->pool, seq->tables[i].blocks[b]);
}

int64_t kv_seq_tokens_seen(const kv_seq *seq)
{
    return seq->n_seen;
}

int64_t kv_seq_tokens_kept(const kv_seq *seq, int32_t layer)
{
    if (layer < 0 || layer >= seq->n_layer) return 0;
    int64_t n = 0;
    for (int32_t h = 0; h < seq->n_head_kv; h++)
        n += seq->tables[(size_t)layer * seq->n_head_kv + h].n_tok;
    return n;
}

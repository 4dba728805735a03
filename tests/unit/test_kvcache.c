/* test_kvcache.c - block pool, per-head tables, keep() compaction and the `full` policy.
 *
 * The reference is a plain array model of what each head should hold (rows, idx, pos in slot
 * order); the cache is read back through its spans and compared with it. Every test ends by
 * destroying its sequences and asserting the pool is empty (clean teardown).
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/kvcache.h"

enum { HD = 8, BT = 4 };

static uint64_t g_rng = 12345;

static float rndf(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 33) % 20001) / 10000.0f - 1.0f;
}

static kv_pool *make_pool(ks_dtype dt, int32_t n_blocks)
{
    size_t el = dt == KS_DTYPE_F32 ? 4 : 2;
    kv_pool_params pp = {.budget_bytes = (size_t)n_blocks * 2 * BT * HD * el + 7,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = dt,
                         .v_dtype = dt};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    return pool;
}

static float expect_val(ks_dtype dt, float x)
{
    return dt == KS_DTYPE_F16 ? ks_f16_to_f32(ks_f32_to_f16(x)) : x;
}

static float row_val(ks_dtype dt, const void *base, int32_t row, int32_t d)
{
    if (dt == KS_DTYPE_F16) return ks_f16_to_f32(((const uint16_t *)base)[row * HD + d]);
    return ((const float *)base)[row * HD + d];
}

/* Model of one head: rows of K and V as f32, idx and pos. */
typedef struct model {
    int32_t n;
    float k[256][HD], v[256][HD];
    int32_t idx[256], pos[256];
} model;

/* Reads a table back through its spans and compares it with the model. */
static void check_table(kv_seq *seq, int32_t layer, int32_t head, const model *m, ks_dtype dt)
{
    attn_span sp[128];
    int32_t n;
    ck_assert_int_eq(kv_seq_spans(seq, layer, head, sp, 128, &n), 0);
    int32_t slot = 0;
    for (int32_t i = 0; i < n; i++) {
        ck_assert_int_gt(sp[i].n, 0);
        ck_assert_int_le(sp[i].n, BT);
        for (int32_t r = 0; r < sp[i].n; r++, slot++) {
            ck_assert_int_lt(slot, m->n);
            ck_assert_int_eq(sp[i].idx[r], m->idx[slot]);
            ck_assert_int_eq(kv_seq_table(seq, layer, head)->pos[slot], m->pos[slot]);
            for (int32_t d = 0; d < HD; d++) {
                ck_assert(row_val(dt, sp[i].k, r, d) == expect_val(dt, m->k[slot][d]));
                ck_assert(row_val(dt, sp[i].v, r, d) == expect_val(dt, m->v[slot][d]));
            }
        }
    }
    ck_assert_int_eq(slot, m->n);
    ck_assert_int_eq(kv_seq_table(seq, layer, head)->n_tok, m->n);
}

/* Appends n random tokens (indices from *next) to all heads of a layer and the models. */
static int append_random(kv_seq *seq, int32_t layer, int32_t n_head, int32_t n, int32_t *next,
                         model *models)
{
    float *k = malloc(sizeof(float) * (size_t)n * n_head * HD);
    float *v = malloc(sizeof(float) * (size_t)n * n_head * HD);
    int32_t idx[64] = {0}, pos[64] = {0};
    for (int32_t e = 0; e < n * n_head * HD; e++)
        k[e] = rndf(), v[e] = rndf();
    for (int32_t t = 0; t < n; t++)
        idx[t] = *next + t, pos[t] = 1000 + *next + t;
    int rc = kv_seq_append(seq, layer, n, k, v, idx, pos);
    if (rc == 0) {
        for (int32_t h = 0; h < n_head; h++) {
            model *m = &models[h];
            for (int32_t t = 0; t < n; t++, m->n++) {
                memcpy(m->k[m->n], k + ((size_t)t * n_head + h) * HD, sizeof(float) * HD);
                memcpy(m->v[m->n], v + ((size_t)t * n_head + h) * HD, sizeof(float) * HD);
                m->idx[m->n] = idx[t];
                m->pos[m->n] = pos[t];
            }
        }
        *next += n;
    }
    free(k), free(v);
    return rc;
}

static void model_keep(model *m, const int32_t *keep, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        memmove(m->k[i], m->k[keep[i]], sizeof(m->k[i]));
        memmove(m->v[i], m->v[keep[i]], sizeof(m->v[i]));
        m->idx[i] = m->idx[keep[i]];
        m->pos[i] = m->pos[keep[i]];
    }
    m->n = n;
}

START_TEST(test_pool_budget)
{
    kv_pool *pool = make_pool(KS_DTYPE_F16, 5);
    kv_pool_stats st;
    kv_pool_get_stats(pool, &st);
    ck_assert_int_eq(st.blocks_total, 5);
    ck_assert_uint_eq(st.block_bytes, 2 * BT * HD * 2);
    ck_assert_uint_eq(st.bytes_budget, 5 * st.block_bytes);
    int32_t ids[8];
    ck_assert_int_eq(kv_pool_alloc(pool, 3, ids), 0);
    ck_assert_int_eq(kv_pool_alloc(pool, 3, ids + 3), KS_ERR_FULL);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 3 * st.block_bytes); /* unchanged */
    ck_assert_int_eq(kv_pool_alloc(pool, 2, ids + 3), 0);
    ck_assert_int_eq(kv_pool_alloc(pool, 1, ids + 5), KS_ERR_FULL);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 0);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(ids[i], ids[j]);
    /* Blocks do not overlap: each K/V region is its own. */
    for (int i = 0; i < 5; i++)
        memset(kv_pool_block_k(pool, ids[i]), i + 1, st.block_bytes);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(((uint8_t *)kv_pool_block_v(pool, ids[i]))[BT * HD * 2 - 1], i + 1);
    kv_pool_release(pool, ids[2]);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 1);
    ck_assert_int_eq(kv_pool_alloc(pool, 1, ids + 2), 0);
    for (int i = 0; i < 5; i++)
        kv_pool_release(pool, ids[i]);
    kv_pool_get_stats(pool, &st);
    ck_assert_int_eq(st.blocks_used, 0);
    ck_assert_uint_eq(st.bytes_used, 0);
    kv_pool_destroy(pool);

    kv_pool_params bad = {.budget_bytes = 10, .block_tokens = BT, .head_dim = HD};
    ck_assert_int_eq(kv_pool_create(&bad, &pool), KS_ERR_INVALID);
    bad.budget_bytes = 1 << 20, bad.block_tokens = 0;
    ck_assert_int_eq(kv_pool_create(&bad, &pool), KS_ERR_INVALID);
    bad.block_tokens = BT, bad.k_dtype = (ks_dtype)5;
    ck_assert_int_eq(kv_pool_create(&bad, &pool), KS_ERR_INVALID);
}
END_TEST

START_TEST(test_pool_refcount)
{
    kv_pool *pool = make_pool(KS_DTYPE_F32, 2);
    int32_t id;
    ck_assert_int_eq(kv_pool_alloc(pool, 1, &id), 0);
    ck_assert_int_eq(kv_pool_refcount(pool, id), 1);
    kv_pool_retain(pool, id);
    ck_assert_int_eq(kv_pool_refcount(pool, id), 2);
    kv_pool_release(pool, id);
    ck_assert_int_eq(kv_pool_refcount(pool, id), 1);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 1);
    kv_pool_release(pool, id);
    ck_assert_int_eq(kv_pool_refcount(pool, id), 0);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 2);
    kv_pool_destroy(pool);
}
END_TEST

/* _i: 0 = f32, 1 = f16. Chunks of 1, 5, 3, 7 tokens cross block boundaries. */
START_TEST(test_append_readback)
{
    ks_dtype dt = (ks_dtype)_i;
    kv_pool *pool = make_pool(dt, 64);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 2, .n_head_kv = 3};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model models[2][3];
    memset(models, 0, sizeof(models));
    const int32_t sizes[] = {1, 5, 3, 7};
    int32_t next[2] = {0, 0};
    for (int c = 0; c < 4; c++)
        for (int32_t l = 0; l < 2; l++)
            ck_assert_int_eq(append_random(seq, l, 3, sizes[c], &next[l], models[l]), 0);
    for (int32_t l = 0; l < 2; l++)
        for (int32_t h = 0; h < 3; h++)
            check_table(seq, l, h, &models[l][h], dt);
    kv_seq_stats st;
    kv_seq_get_stats(seq, &st);
    ck_assert_int_eq(st.tokens_seen, 16);
    ck_assert_int_eq(st.tokens_kept, 16 * 6);
    ck_assert(fabs(st.tokens_kept_avg - 16.0) < 1e-12);
    ck_assert_int_eq(st.blocks, 4 * 6); /* 16 tokens = 4 full blocks per head */
    ck_assert_uint_eq(st.bytes, kv_pool_bytes_used(pool));
    ck_assert_int_eq(kv_seq_tokens_kept(seq, 1), 48);
    /* Too few span slots: KS_ERR_RANGE with the count needed. */
    attn_span few[2];
    int32_t n;
    ck_assert_int_eq(kv_seq_spans(seq, 0, 0, few, 2, &n), KS_ERR_RANGE);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(kv_seq_spans(seq, 2, 0, few, 2, &n), KS_ERR_INVALID);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

START_TEST(test_append_full_leaves_state)
{
    kv_pool *pool = make_pool(KS_DTYPE_F16, 5);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 1, .n_head_kv = 2};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model m[2];
    memset(m, 0, sizeof(m));
    int32_t next = 0;
    ck_assert_int_eq(append_random(seq, 0, 2, 6, &next, m), 0); /* 2 blocks per head */
    ck_assert_int_eq(kv_pool_blocks_free(pool), 1);
    size_t used = kv_pool_bytes_used(pool);
    /* 3 more tokens: head tails have room for 2, so each head needs one block: 2 > 1 free. */
    ck_assert_int_eq(append_random(seq, 0, 2, 3, &next, m), KS_ERR_FULL);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), used);
    check_table(seq, 0, 0, &m[0], KS_DTYPE_F16);
    check_table(seq, 0, 1, &m[1], KS_DTYPE_F16);
    ck_assert_int_eq(kv_seq_tokens_seen(seq), 6);
    ck_assert_int_eq(append_random(seq, 0, 2, 2, &next, m), 0); /* fits the tails */
    check_table(seq, 0, 1, &m[1], KS_DTYPE_F16);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

static void do_keep(kv_seq *seq, model *m, const int32_t *keep, int32_t n, ks_dtype dt)
{
    ck_assert_int_eq(kv_head_table_keep(kv_seq_table(seq, 0, 0), keep, n), 0);
    model_keep(m, keep, n);
    check_table(seq, 0, 0, m, dt);
}

START_TEST(test_keep)
{
    ks_dtype dt = (ks_dtype)_i;
    kv_pool *pool = make_pool(dt, 32);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 1, .n_head_kv = 1};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model m;
    memset(&m, 0, sizeof(m));
    int32_t next = 0;
    ck_assert_int_eq(append_random(seq, 0, 1, 20, &next, &m), 0);
    kv_head_table *t = kv_seq_table(seq, 0, 0);
    ck_assert_int_eq(t->n_blocks, 5);
    /* Drop all of block 1 (slots 4..7) and slot 0: block 1 goes back to the pool. */
    int32_t k1[] = {1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
    do_keep(seq, &m, k1, 15, dt);
    ck_assert_int_eq(t->n_blocks, 4);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 32 - 4);
    /* Sink + window style: keep slot 0 and the last 8: rows stay in their blocks, [1,4,4]. */
    int32_t k2[] = {0, 7, 8, 9, 10, 11, 12, 13, 14};
    do_keep(seq, &m, k2, 9, dt);
    ck_assert_int_eq(t->n_blocks, 3);
    ck_assert_int_eq(t->blk_n[0], 1);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 32 - 3);
    /* Appends go to the tail: [1,4,4,4,1]. */
    ck_assert_int_eq(append_random(seq, 0, 1, 5, &next, &m), 0);
    check_table(seq, 0, 0, &m, dt);
    ck_assert_int_eq(t->n_blocks, 5);
    /* Evict the two oldest window tokens: now 3 partial blocks waste > one block: repack. */
    int32_t k2b[] = {0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    do_keep(seq, &m, k2b, 12, dt);
    ck_assert_int_eq(t->n_blocks, 3);
    ck_assert_int_eq(t->blk_n[2], 4);
    /* Every third token: scattered survivors are packed densely. */
    int32_t k3[4];
    for (int i = 0; i < 4; i++)
        k3[i] = 3 * i;
    do_keep(seq, &m, k3, 4, dt);
    ck_assert_int_eq(t->n_blocks, 1);
    /* Invalid keeps leave the table as it was. */
    int32_t bad1[] = {2, 1}, bad2[] = {0, 4}, bad3[] = {-1};
    ck_assert_int_eq(kv_head_table_keep(t, bad1, 2), KS_ERR_INVALID);
    ck_assert_int_eq(kv_head_table_keep(t, bad2, 2), KS_ERR_INVALID);
    ck_assert_int_eq(kv_head_table_keep(t, bad3, 1), KS_ERR_INVALID);
    ck_assert_int_eq(kv_head_table_keep(t, NULL, 3), KS_ERR_INVALID);
    check_table(seq, 0, 0, &m, dt);
    /* Keep nothing: every block back. */
    do_keep(seq, &m, NULL, 0, dt);
    ck_assert_int_eq(t->n_blocks, 0);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

/* StreamingLLM-style eviction one token at a time (2 sinks + a window of 9): the sinks'
 * block absorbs the oldest window rows, so a table never holds more than one block beyond
 * its token count, and every step reads back exactly. */
START_TEST(test_keep_sliding_window)
{
    ks_dtype dt = (ks_dtype)_i;
    kv_pool *pool = make_pool(dt, 16);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 1, .n_head_kv = 1};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model m;
    memset(&m, 0, sizeof(m));
    int32_t next = 0;
    kv_head_table *t = kv_seq_table(seq, 0, 0);
    for (int step = 0; step < 60; step++) {
        ck_assert_int_eq(append_random(seq, 0, 1, 1, &next, &m), 0);
        ck_assert_int_le(t->n_blocks, (t->n_tok + BT - 1) / BT + 1);
        if (t->n_tok > 11) {
            int32_t keep[11] = {0, 1};
            for (int i = 0; i < 9; i++)
                keep[2 + i] = t->n_tok - 9 + i;
            do_keep(seq, &m, keep, 11, dt);
            ck_assert_int_le(t->n_blocks, (11 + BT - 1) / BT + 1);
        }
        check_table(seq, 0, 0, &m, dt);
        ck_assert_int_eq(kv_pool_blocks_free(pool), 16 - t->n_blocks);
    }
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

/* A block shared with someone else (refcount 2) is copied before keep() writes to it, and
 * keep() fails with KS_ERR_FULL, table unchanged, if no block is free for the copy. */
START_TEST(test_keep_copy_on_write)
{
    kv_pool *pool = make_pool(KS_DTYPE_F32, 3);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 1, .n_head_kv = 1};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model m;
    memset(&m, 0, sizeof(m));
    int32_t next = 0;
    ck_assert_int_eq(append_random(seq, 0, 1, 12, &next, &m), 0); /* 3 blocks: pool full */
    kv_head_table *t = kv_seq_table(seq, 0, 0);
    int32_t shared = t->blocks[0];
    kv_pool_retain(pool, shared);
    float before[BT * HD];
    memcpy(before, kv_pool_block_k(pool, shared), sizeof(before));
    int32_t keep[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    ck_assert_int_eq(kv_head_table_keep(t, keep, 11), KS_ERR_FULL);
    check_table(seq, 0, 0, &m, KS_DTYPE_F32);
    /* Free a block by dropping the last one (no write to block 0), then retry. */
    int32_t first8[] = {0, 1, 2, 3, 4, 5, 6, 7};
    do_keep(seq, &m, first8, 8, KS_DTYPE_F32);
    ck_assert_int_eq(t->blocks[0], shared);
    do_keep(seq, &m, keep, 7, KS_DTYPE_F32);
    ck_assert_int_ne(t->blocks[0], shared);
    ck_assert_int_eq(kv_pool_refcount(pool, shared), 1);
    ck_assert(memcmp(before, kv_pool_block_k(pool, shared), sizeof(before)) == 0);
    kv_pool_release(pool, shared);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

START_TEST(test_policy_full)
{
    ck_assert_ptr_eq(kv_policy_find("full"), &kv_policy_full);
    ck_assert_ptr_null(kv_policy_find("nope"));
    ck_assert_str_eq(kv_policy_names()[0], "full");
    kv_pool *pool = make_pool(KS_DTYPE_F16, 16);
    kv_seq *seq;
    kv_seq_params sp = {.n_layer = 2, .n_head_kv = 2, .policy = kv_policy_find("full")};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    static model m[2][2];
    memset(m, 0, sizeof(m));
    int32_t idx[6] = {0, 1, 2, 3, 4, 5}, pos[6];
    kv_chunk chunk = {.n_new = 6, .idx = idx, .prefill = true, .prefill_last = true};
    ck_assert_int_eq(kv_seq_chunk_begin(seq, &chunk, pos), 0);
    ck_assert(memcmp(pos, idx, sizeof(idx)) == 0);
    int32_t next[2] = {0, 0};
    for (int32_t l = 0; l < 2; l++)
        ck_assert_int_eq(append_random(seq, l, 2, 6, &next[l], m[l]), 0);
    float q[2 * HD] = {0};
    kv_query kq = {.chunk = &chunk,
                   .n_q = 6,
                   .q_idx = idx,
                   .q = q,
                   .q_tok_stride = 0,
                   .n_group = 1,
                   .head_dim = HD};
    attn_span a[8], b[8];
    int32_t na, nb;
    ck_assert_int_eq(kv_seq_attn_spans(seq, 1, 1, &kq, a, 8, &na), 0);
    ck_assert_int_eq(kv_seq_spans(seq, 1, 1, b, 8, &nb), 0);
    ck_assert_int_eq(na, nb);
    for (int32_t i = 0; i < na; i++) { /* field by field: the struct has padding bytes */
        ck_assert_ptr_eq(a[i].k, b[i].k);
        ck_assert_ptr_eq(a[i].v, b[i].v);
        ck_assert_ptr_eq(a[i].idx, b[i].idx);
        ck_assert_int_eq(a[i].n, b[i].n);
        ck_assert_int_eq(a[i].k_stride, b[i].k_stride);
        ck_assert_int_eq(a[i].v_stride, b[i].v_stride);
    }
    ck_assert_int_eq(kv_seq_mass_queries(seq, 1, 1, &kq), 0);
    ck_assert_int_eq(kv_seq_attn_done(seq, 1, 1, &kq, a, na, NULL, 0), 0);
    ck_assert_int_eq(kv_seq_chunk_end(seq, &chunk), 0);
    check_table(seq, 1, 1, &m[1][1], KS_DTYPE_F16);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

/* A sliding-window layer under `full` keeps only whole blocks that a later query can still
 * see: its oldest kept key is within one block of the window; the global layer keeps all. */
START_TEST(test_layer_window)
{
    kv_pool *pool = make_pool(KS_DTYPE_F16, 64);
    kv_seq *seq;
    const int32_t win[2] = {0, 5};
    kv_seq_params sp = {.n_layer = 2, .n_head_kv = 1, .layer_window = win};
    ck_assert_int_eq(kv_seq_create(pool, &sp, &seq), 0);
    ck_assert_int_eq(kv_seq_layer_window(seq, 1), 5);
    ck_assert_int_eq(kv_seq_layer_window(seq, 0), 0);
    static model m[2][1];
    memset(m, 0, sizeof(m));
    int32_t next[2] = {0, 0};
    for (int32_t step = 0; step < 40; step++) {
        int32_t n = step == 0 ? 7 : 1, idx[8], pos[8];
        for (int32_t t = 0; t < n; t++)
            idx[t] = next[0] + t;
        kv_chunk chunk = {.n_new = n, .idx = idx, .prefill = step == 0, .prefill_last = step == 0};
        ck_assert_int_eq(kv_seq_chunk_begin(seq, &chunk, pos), 0);
        for (int32_t l = 0; l < 2; l++)
            ck_assert_int_eq(append_random(seq, l, 1, n, &next[l], m[l]), 0);
        ck_assert_int_eq(kv_seq_chunk_end(seq, &chunk), 0);
        const kv_head_table *g = kv_seq_table(seq, 0, 0), *w = kv_seq_table(seq, 1, 0);
        ck_assert_int_eq(g->n_tok, next[0]);
        /* the next query (index next) sees keys > next - 5: all of them are kept, and nothing
         * older than the block holding the oldest of them */
        ck_assert_int_eq(w->idx[w->n_tok - 1], next[1] - 1);
        ck_assert_int_le(w->idx[0], KS_MAX(next[1] - 5 + 1, 0));
        ck_assert_int_ge(w->idx[0], next[1] - 5 + 1 - (BT - 1));
        ck_assert_int_le(w->n_tok, 5 - 1 + BT);
    }
    ck_assert_int_lt(kv_seq_table(seq, 1, 0)->n_tok, kv_seq_table(seq, 0, 0)->n_tok);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

static Suite *kvcache_suite(void)
{
    Suite *s = suite_create("kvcache");
    TCase *tc = tcase_create("kvcache");
    tcase_add_test(tc, test_pool_budget);
    tcase_add_test(tc, test_pool_refcount);
    tcase_add_loop_test(tc, test_append_readback, 0, 2);
    tcase_add_test(tc, test_append_full_leaves_state);
    tcase_add_loop_test(tc, test_keep, 0, 2);
    tcase_add_loop_test(tc, test_keep_sliding_window, 0, 2);
    tcase_add_test(tc, test_keep_copy_on_write);
    tcase_add_test(tc, test_policy_full);
    tcase_add_test(tc, test_layer_window);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(kvcache_suite(), true);
}

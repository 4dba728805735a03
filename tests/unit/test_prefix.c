/* test_prefix.c - prefix sharing: publish, lookup, adoption with copy-on-write, LRU reclaim.
 *
 * K and V values are a closed-form function of (layer, head, token index, dim), so what a
 * sequence adopted from the cache can be checked against what a sequence that computed the
 * tokens itself would hold. Every test ends by destroying sequences and the cache and
 * asserting that the pool is empty again (no leaked references).
 */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "kvserve/kvcache.h"

enum { HD = 4, BT = 4, NL = 2, NH = 2 };

static float kval(int32_t l, int32_t h, int32_t tok, int32_t d, int32_t salt)
{
    return (float)(l * 1000 + h * 100 + tok) + 0.01f * (float)d + 0.5f * (float)salt;
}

static kv_pool *make_pool(int32_t n_blocks)
{
    kv_pool_params pp = {.budget_bytes = (size_t)n_blocks * 2 * BT * HD * sizeof(float),
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_F32,
                         .v_dtype = KS_DTYPE_F32};
    kv_pool *pool;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    return pool;
}

static kv_prefix *make_cache(kv_pool *pool)
{
    kv_prefix_params p = {.n_layer = NL, .n_head_kv = NH};
    kv_prefix *pc;
    ck_assert_int_eq(kv_prefix_create(pool, &p, &pc), 0);
    return pc;
}

static const kv_seq_params kSeq = {.n_layer = NL, .n_head_kv = NH};

/* Appends tokens first..first+n-1 (by index) to every layer with values kval(.., salt). */
static int append_tokens(kv_seq *s, int32_t first, int32_t n, int32_t salt)
{
    float k[64 * NH * HD], v[64 * NH * HD];
    int32_t idx[64];
    ck_assert_int_le(n, 64);
    for (int32_t l = 0; l < NL; l++) {
        for (int32_t t = 0; t < n; t++) {
            idx[t] = first + t;
            for (int32_t h = 0; h < NH; h++)
                for (int32_t d = 0; d < HD; d++) {
                    k[(t * NH + h) * HD + d] = kval(l, h, first + t, d, salt);
                    v[(t * NH + h) * HD + d] = -kval(l, h, first + t, d, salt);
                }
        }
        int rc = kv_seq_append(s, l, n, k, v, idx, idx);
        if (rc) return rc;
    }
    return 0;
}

/* Checks every table of s holds tokens 0..n-1 with the values of `salt`. */
static void check_seq(kv_seq *s, int32_t n, int32_t salt)
{
    ck_assert_int_eq(kv_seq_tokens_seen(s), n);
    for (int32_t l = 0; l < NL; l++)
        for (int32_t h = 0; h < NH; h++) {
            kv_head_table *t = kv_seq_table(s, l, h);
            ck_assert_int_eq(t->n_tok, n);
            for (int32_t j = 0; j < n; j++) {
                int32_t b, r;
                ck_assert_int_eq(kv_head_table_locate(t, j, &b, &r), 0);
                ck_assert_int_eq(t->idx[j], j);
                ck_assert_int_eq(t->pos[j], j);
                const float *k = kv_head_table_k_row(t, b, r);
                const float *v = kv_head_table_v_row(t, b, r);
                for (int32_t d = 0; d < HD; d++) {
                    ck_assert_float_eq(k[d], kval(l, h, j, d, salt));
                    ck_assert_float_eq(v[d], -kval(l, h, j, d, salt));
                }
            }
        }
}

static void prompt_fill(int32_t *tok, int32_t n, int32_t base)
{
    for (int32_t i = 0; i < n; i++)
        tok[i] = base + i * 7;
}

START_TEST(test_publish_lookup)
{
    kv_pool *pool = make_pool(64);
    kv_prefix *pc = make_cache(pool);
    int32_t tok[10];
    prompt_fill(tok, 10, 100);
    kv_seq *s;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 10, 0), 0);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 10), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, tok, 10), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, tok, 10), 0); /* idempotent */
    kv_prefix_stats st;
    kv_prefix_get_stats(pc, &st);
    ck_assert_int_eq(st.entries, 2); /* two full blocks of 4; the tail of 2 is not shared */
    ck_assert_int_eq(st.blocks_held, 2 * NL * NH);
    /* Cached blocks are referenced by the sequence and the cache. */
    ck_assert_int_eq(kv_pool_refcount(pool, kv_seq_table(s, 1, 1)->blocks[1]), 2);
    ck_assert_int_eq(kv_pool_refcount(pool, kv_seq_table(s, 1, 1)->blocks[2]), 1);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 10), 8);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 7), 4);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 3), 0);
    int32_t other[10];
    memcpy(other, tok, sizeof(tok));
    other[5] = 9999; /* differs in block 1 */
    ck_assert_int_eq(kv_prefix_lookup(pc, other, 10), 4);
    other[0] = 9999; /* differs in block 0: block 1's tokens alone must not match */
    other[5] = tok[5];
    ck_assert_int_eq(kv_prefix_lookup(pc, other, 10), 0);
    /* In use by s: nothing is reclaimable. */
    ck_assert_int_eq(kv_prefix_reclaimable(pc), 0);
    kv_seq_destroy(s);
    ck_assert_int_eq(kv_prefix_reclaimable(pc), 2 * NL * NH);
    kv_prefix_destroy(pc);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 64);
    kv_pool_destroy(pool);
}
END_TEST

/* A sequence started from the cache holds the same keys and values as one that computed
 * them, and appending to a shared, partly used block copies it (the cache is not changed). */
START_TEST(test_adopt_copy_on_write)
{
    kv_pool *pool = make_pool(64);
    kv_prefix *pc = make_cache(pool);
    int32_t tok[8];
    prompt_fill(tok, 8, 5);
    kv_seq *a, *b, *c;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &a), 0);
    ck_assert_int_eq(append_tokens(a, 0, 8, 0), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, a, tok, 8), 0);
    kv_seq_destroy(a);

    /* Whole prompt cached; reuse at most n - 1 so the last token is recomputed. */
    int32_t n_cached = -1;
    ck_assert_int_eq(kv_prefix_seq_create(pc, &kSeq, tok, 8, 7, &b, &n_cached), 0);
    ck_assert_int_eq(n_cached, 7);
    check_seq(b, 7, 0);
    int32_t shared = kv_seq_table(b, 0, 1)->blocks[1];
    ck_assert_int_eq(kv_seq_table(b, 0, 1)->blk_n[1], 3);
    ck_assert_int_eq(kv_pool_refcount(pool, shared), 2);
    /* Recompute token 7 with other values: b gets a private copy of block 1. */
    ck_assert_int_eq(append_tokens(b, 7, 1, 3), 0);
    ck_assert_int_ne(kv_seq_table(b, 0, 1)->blocks[1], shared);
    ck_assert_int_eq(kv_pool_refcount(pool, shared), 1);
    const float *k7 = kv_head_table_k_row(kv_seq_table(b, 0, 1), 1, 3);
    ck_assert_float_eq(k7[2], kval(0, 1, 7, 2, 3));

    /* A third sequence still sees the original token 7 in the cache. */
    ck_assert_int_eq(kv_prefix_seq_create(pc, &kSeq, tok, 8, 8, &c, &n_cached), 0);
    ck_assert_int_eq(n_cached, 8);
    check_seq(c, 8, 0);
    /* Then appends a new block of its own and is checked again. */
    ck_assert_int_eq(append_tokens(c, 8, 5, 0), 0);
    check_seq(c, 13, 0);
    kv_prefix_stats st;
    kv_prefix_get_stats(pc, &st);
    ck_assert_int_eq(st.hits_tokens, 15);
    kv_seq_destroy(b);
    kv_seq_destroy(c);
    kv_prefix_destroy(pc);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 64);
    kv_pool_destroy(pool);
}
END_TEST

/* Policies that rewrite blocks never share them: a table that dropped a token is refused. */
START_TEST(test_rewritten_not_published)
{
    kv_pool *pool = make_pool(64);
    kv_prefix *pc = make_cache(pool);
    int32_t tok[8];
    prompt_fill(tok, 8, 1);
    kv_seq *s;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 8, 0), 0);
    int32_t keep[7] = {1, 2, 3, 4, 5, 6, 7};
    ck_assert_int_eq(kv_head_table_keep(kv_seq_table(s, 1, 0), keep, 7), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, tok, 8), 0);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 8), 0);
    kv_seq_destroy(s);

    /* A non-`full` policy is neither published nor started from the cache. */
    kv_policy other = kv_policy_full;
    other.name = "other";
    kv_seq_params op = kSeq;
    op.policy = &other;
    ck_assert_int_eq(kv_seq_create(pool, &op, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 8, 0), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, tok, 8), 0);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 8), 0);
    kv_seq_destroy(s);
    kv_prefix_destroy(pc);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 64);
    kv_pool_destroy(pool);
}
END_TEST

/* The cache gives blocks back when the pool runs out, least recently used first, and never
 * frees a block a sequence still uses. */
START_TEST(test_reclaim_lru)
{
    enum { PER = NL * NH }; /* pool blocks per cached prompt block */
    kv_pool *pool = make_pool(4 * PER);
    kv_prefix *pc = make_cache(pool);
    int32_t ta[4], tb[4], tc[4];
    prompt_fill(ta, 4, 10);
    prompt_fill(tb, 4, 20);
    prompt_fill(tc, 4, 30);
    kv_seq *s;
    int32_t n_cached;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 4, 0), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, ta, 4), 0);
    kv_seq_destroy(s);
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 4, 1), 0);
    ck_assert_int_eq(kv_prefix_publish(pc, s, tb, 4), 0);
    kv_seq_destroy(s);
    /* Use A again: B is now the least recently used. */
    ck_assert_int_eq(kv_prefix_seq_create(pc, &kSeq, ta, 4, 4, &s, &n_cached), 0);
    ck_assert_int_eq(n_cached, 4);
    kv_seq_destroy(s);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 2 * PER);
    ck_assert_int_eq(kv_prefix_reclaimable(pc), 2 * PER);

    /* C needs 3 prompt blocks' worth: the pool reclaims B (LRU) through the hook. */
    kv_seq *c;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &c), 0);
    ck_assert_int_eq(append_tokens(c, 0, 12, 2), 0);
    ck_assert_int_eq(kv_prefix_lookup(pc, tb, 4), 0);
    ck_assert_int_eq(kv_prefix_lookup(pc, ta, 4), 4);
    /* A is in use by a sequence: not reclaimable, and an allocation that would need it fails
     * exactly as it would without a cache. */
    kv_seq *a;
    ck_assert_int_eq(kv_prefix_seq_create(pc, &kSeq, ta, 4, 4, &a, &n_cached), 0);
    ck_assert_int_eq(kv_prefix_reclaimable(pc), 0);
    ck_assert_int_eq(append_tokens(c, 12, 1, 2), KS_ERR_FULL);
    check_seq(a, 4, 0);
    kv_seq_destroy(a);
    ck_assert_int_eq(append_tokens(c, 12, 1, 2), 0);
    check_seq(c, 13, 2);
    ck_assert_int_eq(kv_prefix_lookup(pc, ta, 4), 0);
    kv_prefix_stats st;
    kv_prefix_get_stats(pc, &st);
    ck_assert_int_eq(st.entries, 0);
    ck_assert_int_eq(st.evictions, 2);
    kv_seq_destroy(c);
    kv_prefix_destroy(pc);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 4 * PER);
    kv_pool_destroy(pool);
}
END_TEST

/* Chains: evicting goes leaf first, and a max_entries bound is kept. */
START_TEST(test_chain_leaf_first)
{
    kv_pool *pool = make_pool(64);
    kv_prefix_params p = {.n_layer = NL, .n_head_kv = NH, .max_entries = 3};
    kv_prefix *pc;
    ck_assert_int_eq(kv_prefix_create(pool, &p, &pc), 0);
    int32_t tok[16];
    prompt_fill(tok, 16, 40);
    kv_seq *s;
    ck_assert_int_eq(kv_seq_create(pool, &kSeq, &s), 0);
    ck_assert_int_eq(append_tokens(s, 0, 16, 0), 0);
    /* 4 blocks; the bound of 3 cannot evict while s uses them all. */
    ck_assert_int_eq(kv_prefix_publish(pc, s, tok, 16), 0);
    kv_prefix_stats st;
    kv_prefix_get_stats(pc, &st);
    ck_assert_int_eq(st.entries, 4);
    kv_seq_destroy(s);
    ck_assert_int_eq(kv_prefix_reclaim(pc, 1), NL * NH); /* one leaf: the last block */
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 16), 12);
    ck_assert_int_eq(kv_prefix_reclaim(pc, 2 * NL * NH), 2 * NL * NH);
    ck_assert_int_eq(kv_prefix_lookup(pc, tok, 16), 4);
    kv_prefix_destroy(pc);
    ck_assert_int_eq(kv_pool_blocks_free(pool), 64);
    kv_pool_destroy(pool);
}
END_TEST

static Suite *prefix_suite(void)
{
    Suite *s = suite_create("prefix");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_publish_lookup);
    tcase_add_test(tc, test_adopt_copy_on_write);
    tcase_add_test(tc, test_rewritten_not_published);
    tcase_add_test(tc, test_reclaim_lru);
    tcase_add_test(tc, test_chain_leaf_first);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(prefix_suite(), true);
}

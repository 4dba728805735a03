/* test_kv_view.c - the live view's capture of a sequence (kvcache/kv_view.c).
 *
 * Reference: a plain boolean model of which positions each (layer, KV head) keeps after
 * random keep() calls; the captured runs are expanded back to positions and compared with
 * it, and must be ascending, non-empty and non-adjacent (maximal). The per-layer budgets are
 * checked against the policies' definitions. Ends with the pool empty (clean teardown).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "kvserve/kv_view.h"

enum { HD = 8, BT = 4, L = 3, H = 2, N = 70 };

static uint64_t g_rng = 777;

static uint32_t rnd(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}

static kv_seq *make_seq(kv_pool **pool)
{
    kv_pool_params pp = {.budget_bytes = (size_t)4096 * 2 * BT * HD * 4,
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_F32,
                         .v_dtype = KS_DTYPE_F32};
    ck_assert_int_eq(kv_pool_create(&pp, pool), 0);
    kv_seq_params sp = {.n_layer = L, .n_head_kv = H};
    kv_seq *seq;
    ck_assert_int_eq(kv_seq_create(*pool, &sp, &seq), 0);
    static float k[N * H * HD], v[N * H * HD];
    int32_t idx[N];
    for (int32_t i = 0; i < N; i++)
        idx[i] = i;
    for (int32_t i = 0; i < N * H * HD; i++)
        k[i] = v[i] = (float)(rnd() % 100) / 50.0f;
    for (int32_t l = 0; l < L; l++)
        ck_assert_int_eq(kv_seq_append(seq, l, N, k, v, idx, idx), 0);
    return seq;
}

/* Keeps a random subset of each table (a few runs, some single tokens); model[l][h][pos]. */
static void keep_random(kv_seq *seq, bool model[L][H][N])
{
    for (int32_t l = 0; l < L; l++)
        for (int32_t h = 0; h < H; h++) {
            kv_head_table *t = kv_seq_table(seq, l, h);
            int32_t keep[N], n = 0;
            int32_t mode = (l * H + h) % 3; /* 0: random, 1: everything, 2: nothing */
            for (int32_t s = 0; s < t->n_tok; s++) {
                bool k = mode == 1 || (mode == 0 && rnd() % 3 != 0);
                model[l][h][t->idx[s]] = k;
                if (k) keep[n++] = s;
            }
            ck_assert_int_eq(kv_head_table_keep(t, keep, n), 0);
        }
}

START_TEST(test_capture_runs)
{
    kv_pool *pool;
    kv_seq *seq = make_seq(&pool);
    static bool model[L][H][N];
    keep_random(seq, model);
    kv_view *v;
    ck_assert_int_eq(kv_view_capture(seq, &v), 0);
    ck_assert_int_eq(v->n_layer, L);
    ck_assert_int_eq(v->n_head_kv, H);
    ck_assert_int_eq(v->tokens_seen, N);
    ck_assert_int_eq(v->spill_layer0, L); /* not retrieval: nothing spills */
    for (int32_t l = 0; l < L; l++)
        for (int32_t h = 0; h < H; h++) {
            const kv_view_cell *c = &v->cells[l * H + h];
            bool got[N] = {false};
            int32_t kept = 0, prev_end = -2;
            for (int32_t r = 0; r < c->n_runs; r++) {
                int32_t a = c->runs[2 * r], n = c->runs[2 * r + 1];
                ck_assert(n >= 1 && a > prev_end && a + n <= N); /* ascending, maximal */
                for (int32_t p = a; p < a + n; p++)
                    got[p] = true;
                kept += n;
                prev_end = a + n;
            }
            ck_assert_int_eq(kept, c->n_kept);
            ck_assert_int_eq(c->n_kept, kv_seq_table(seq, l, h)->n_tok);
            ck_assert_int_eq(c->n_sel, -1);
            for (int32_t p = 0; p < N; p++)
                ck_assert_int_eq(got[p], model[l][h][p]);
        }
    kv_view_free(v);
    kv_seq_destroy(seq);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
}
END_TEST

/* The budget bars, sinks and windows each policy describes (kv_policy_desc.view_hint). */
static kv_view_hint hint(const char *spec, int32_t layer, int64_t n_prompt, int64_t seen)
{
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    ks_diag d;
    ks_diag_clear(&d);
    ck_assert_int_eq(kv_policy_config_parse_spec(&pc, spec, &d), 0);
    kv_view_hint h;
    kv_view_hint_get(&pc, 4, layer, n_prompt, seen, &h);
    return h;
}

START_TEST(test_layer_budget)
{
    kv_view_hint h = hint("full", 0, 1000, 1010); /* keeps everything, no sinks or window */
    ck_assert(h.budget == -1 && h.sink == 0 && h.window_from == 1010);
    h = hint("sink_window:n_sink=4,window=60", 3, 1000, 1010);
    ck_assert(h.budget == 64 && h.sink == 4 && h.window_from == 950);
    h = hint("h2o:heavy=100,recent=50", 1, 1000, 1010);
    ck_assert(h.budget == 150 && h.sink == 0 && h.window_from == 960);
    h = hint("snapkv:budget=100,window=8", 2, 1000, 1010);
    ck_assert(h.budget == 100 && h.window_from == 992); /* the observation window */
    ck_assert_int_eq(hint("snapkv:budget=100,window=8", 2, 50, 60).budget, -1);
    /* PyramidKV, C = 48, w = 8, beta = 20, 4 layers, 448 prompt tokens: min = 40/20 = 2,
     * max = 2*40 - 2 = 78, step (78-2)/3 = 25: 78+8, 53+8, 28+8, 3+8. */
    const int32_t want[4] = {86, 61, 36, 11};
    for (int32_t l = 0; l < 4; l++)
        ck_assert_int_eq(hint("pyramid:budget=48,window=8,beta=20", l, 448, 460).budget, want[l]);
    h = hint("retrieval:n_sink=4,window=64", 3, 1000, 1010); /* keeps all, on disk too */
    ck_assert(h.budget == -1 && h.sink == 4 && h.window_from == 946);
}
END_TEST

START_TEST(test_bad_args)
{
    kv_view *v = NULL;
    ck_assert_int_eq(kv_view_capture(NULL, &v), KS_ERR_INVALID);
    kv_view_free(NULL);
    kv_pool *pool;
    kv_seq *seq = make_seq(&pool);
    kv_retrieval_view rv;
    ck_assert_int_eq(kv_retrieval_view_get(seq, 0, 0, &rv), KS_ERR_INVALID); /* not retrieval */
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}
END_TEST

static Suite *kv_view_suite(void)
{
    Suite *s = suite_create("kv_view");
    TCase *tc = tcase_create("kv_view");
    tcase_add_test(tc, test_capture_runs);
    tcase_add_test(tc, test_layer_budget);
    tcase_add_test(tc, test_bad_args);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(kv_view_suite(), true);
}

/* test_retrieval.c - the `retrieval` policy, its landmarks and its spill tier.
 *
 * References: Quest's bound is checked against q·k of every key summed in double (property
 * test on random blocks); the policy with top_k >= blocks and original positions is checked
 * against the `full` policy by running the shared attention core over both span lists and
 * comparing outputs bit for bit (with and without spilling, so spill + reload is exact end to
 * end); spill records and the hot set are compared byte for byte with what was written; LRU
 * and score-decayed LRU victims are worked out by hand. Every test ends with a clean pool.
 */
#include <check.h>

#include "check_main.h"
#include "policy_params.h"
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvcache/landmark.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"
#include "kvserve/rope.h"
#include "kvserve/spill.h"

static uint64_t g_rng = 99991;

static float rndf(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 33) % 20001) / 10000.0f - 1.0f;
}

static char g_dir[256];

static void remove_dir(void)
{
    rmdir(g_dir); /* empty by then: every sequence removed its spill file */
}

/* A private directory per test process (Check forks one per test), under $TMPDIR. */
static void make_dir(void)
{
    if (g_dir[0]) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/kvserve-test-retr-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    atexit(remove_dir);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------------------------------- */

START_TEST(test_quest_bound_property)
{
    enum { HD = 32 };
    float keys[64 * HD], lm[2 * HD], q[HD];
    for (int trial = 0; trial < 400; trial++) {
        int n = 1 + trial % 64;
        float scale = trial % 3 == 0 ? 100.0f : 1.0f;
        for (int i = 0; i < n * HD; i++)
            keys[i] = rndf() * scale + (trial % 5 == 0 ? 3.0f : 0.0f);
        for (int d = 0; d < HD; d++)
            q[d] = rndf() * (trial % 2 ? 10.0f : 1.0f);
        kv_lm_build(KV_LANDMARK_BOUNDS, keys, n, HD, NULL, 1, lm);
        double bound = kv_lm_score(KV_LANDMARK_BOUNDS, lm, q, HD);
        for (int i = 0; i < n; i++) {
            double dot = 0.0;
            for (int d = 0; d < HD; d++)
                dot += (double)q[d] * keys[i * HD + d];
            ck_assert_msg(bound >= dot, "trial %d key %d: bound %.17g < q.k %.17g", trial, i, bound,
                          dot);
        }
    }
}
END_TEST

START_TEST(test_landmark_mean_and_representative)
{
    enum { HD = 4 };
    float keys[4 * HD] = {1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 4, 0, 0, 0, 0, 8};
    float mass[4] = {0.1f, 0.7f, 0.05f, 0.9f};
    float lm[HD];
    kv_lm_build(KV_LANDMARK_MEAN, keys, 4, HD, NULL, 1, lm);
    ck_assert(lm[0] == 0.25f && lm[1] == 0.5f && lm[2] == 1.0f && lm[3] == 2.0f);
    kv_lm_build(KV_LANDMARK_REPRESENTATIVE, keys, 4, HD, mass, 2, lm); /* keys 3 and 1 */
    ck_assert(lm[0] == 0.0f && lm[1] == 1.0f && lm[2] == 0.0f && lm[3] == 4.0f);
    kv_lm_build(KV_LANDMARK_REPRESENTATIVE, keys, 4, HD, NULL, 2, lm); /* no info: mean */
    ck_assert(lm[3] == 2.0f);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */

START_TEST(test_spill_roundtrip_and_cleanup)
{
    make_dir();
    enum { RB = 1000 };
    kv_spill_params sp = {.dir = g_dir,
                          .record_bytes = RB,
                          .n_parts = 2,
                          .slots_per_part = 2,
                          .eviction = KV_EVICT_LRU};
    kv_spill *s;
    ck_assert_int_eq(kv_spill_create(&sp, &s), 0);
    struct stat stt;
    ck_assert_int_eq(stat(kv_spill_path(s), &stt), 0);
    ck_assert_int_eq(stt.st_mode & 0777, 0600);
    static uint8_t data[7][RB], back[RB];
    for (int r = 0; r < 7; r++) {
        for (int i = 0; i < RB; i++)
            data[r][i] = (uint8_t)(rndf() * 127 + 128);
        ck_assert_int_eq(kv_spill_write(s, r * 3, data[r]), 0); /* sparse records */
    }
    for (int r = 6; r >= 0; r--) {
        ck_assert_int_eq(kv_spill_read(s, r * 3, back), 0);
        ck_assert(memcmp(back, data[r], RB) == 0);
        const void *hot;
        ck_assert_int_eq(kv_spill_fetch(s, r % 2, r * 3, (uint64_t)r + 1, 0.0f, &hot), 0);
        ck_assert(memcmp(hot, data[r], RB) == 0);
    }
    ck_assert_int_eq(kv_spill_read(s, 1, back), KS_ERR_NOT_FOUND);
    /* A rewrite drops the stale hot copy. */
    const void *hot;
    ck_assert_int_eq(kv_spill_fetch(s, 0, 0, 100, 0.0f, &hot), 0);
    ck_assert_int_eq(kv_spill_write(s, 0, data[5]), 0);
    ck_assert(!kv_spill_is_hot(s, 0, 0));
    ck_assert_int_eq(kv_spill_fetch(s, 0, 0, 101, 0.0f, &hot), 0);
    ck_assert(memcmp(hot, data[5], RB) == 0);
    kv_spill_stats st;
    kv_spill_get_stats(s, &st);
    ck_assert_int_eq(st.records_written, 7);
    ck_assert_int_eq(st.misses, 8);
    ck_assert_int_eq(st.bytes_read, 8 * RB);
    char path[1200];
    snprintf(path, sizeof(path), "%s", kv_spill_path(s));
    kv_spill_destroy(s);
    ck_assert_int_ne(access(path, F_OK), 0);

    /* Crash recovery: files of dead processes and of our own pid go, others stay. */
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    const char *names[4];
    char n0[300], n1[300], n2[300], n3[300];
    snprintf(n0, sizeof(n0), "%s/kvserve-spill-%ld-0.kv", g_dir, (long)child);
    snprintf(n1, sizeof(n1), "%s/kvserve-spill-%ld-3.kv", g_dir, (long)getpid());
    snprintf(n2, sizeof(n2), "%s/kvserve-spill-%ld-1.kv", g_dir, (long)getppid());
    snprintf(n3, sizeof(n3), "%s/notes.txt", g_dir);
    names[0] = n0, names[1] = n1, names[2] = n2, names[3] = n3;
    for (int i = 0; i < 4; i++) {
        FILE *f = fopen(names[i], "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
    }
    ck_assert_int_eq(kv_spill_cleanup_dir(g_dir), 2);
    ck_assert_int_ne(access(n0, F_OK), 0);
    ck_assert_int_ne(access(n1, F_OK), 0);
    ck_assert_int_eq(access(n2, F_OK), 0);
    ck_assert_int_eq(access(n3, F_OK), 0);
    unlink(n2);
    unlink(n3);
    ck_assert_int_eq(kv_spill_cleanup_dir("/nonexistent/kvserve-x"), 0);
    rmdir(g_dir);
}
END_TEST

/* Writes an empty file. */
static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
}

/* The spill directory is created 0700; an existing one is refused when it is a symlink,
 * group/world-writable or another user's, and then neither a spill file is created in it nor
 * is anything removed through it. */
START_TEST(test_spill_dir_safety)
{
    char base[256], dir[300], target[300], link[300], stale[400], victim[400];
    snprintf(base, sizeof(base), "/tmp/kvserve-test-spilldir-%ld", (long)getpid());
    ck_assert_int_eq(mkdir(base, 0700), 0);
    snprintf(dir, sizeof(dir), "%s/new", base);
    ks_diag d;
    int fd = -1;
    ck_assert_int_eq(kv_spill_dir_open(dir, &fd, &d), 0);
    close(fd);
    struct stat st;
    ck_assert_int_eq(lstat(dir, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);

    /* a symlink to a directory holding a stale-looking file of a dead process */
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    snprintf(target, sizeof(target), "%s/target", base);
    ck_assert_int_eq(mkdir(target, 0700), 0);
    snprintf(victim, sizeof(victim), "%s/kvserve-spill-%ld-0.kv", target, (long)child);
    touch(victim);
    snprintf(link, sizeof(link), "%s/link", base);
    ck_assert_int_eq(symlink(target, link), 0);
    ck_assert_int_ne(kv_spill_dir_open(link, &fd, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "symlink"));
    ck_assert_int_lt(kv_spill_cleanup_dir(link), 0);
    ck_assert_int_eq(access(victim, F_OK), 0); /* not removed through the link */
    kv_spill *sp = NULL;
    kv_spill_params p = {.dir = link, .record_bytes = 16, .n_parts = 1, .slots_per_part = 1};
    ck_assert_int_ne(kv_spill_create(&p, &sp), 0);

    /* world-writable */
    ck_assert_int_eq(chmod(dir, 0777), 0);
    ck_assert_int_ne(kv_spill_dir_open(dir, &fd, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "writable"));
    p.dir = dir;
    ck_assert_int_ne(kv_spill_create(&p, &sp), 0);
    ck_assert_int_eq(chmod(dir, 0700), 0);
    ck_assert_int_eq(kv_spill_create(&p, &sp), 0);
    kv_spill_destroy(sp);

    /* another user's directory (as root: chown it; otherwise "/" is root's) */
    const char *other = "/";
    if (geteuid() == 0) {
        ck_assert_int_eq(chown(dir, 65534, 65534), 0);
        other = dir;
    }
    ck_assert_int_ne(kv_spill_dir_open(other, &fd, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "another user"));

    /* in a good directory, a stale entry that is a symlink is left alone */
    char good[300];
    snprintf(good, sizeof(good), "%s/good", base);
    ck_assert_int_eq(mkdir(good, 0700), 0);
    snprintf(stale, sizeof(stale), "%s/kvserve-spill-%ld-1.kv", good, (long)child);
    ck_assert_int_eq(symlink(victim, stale), 0);
    ck_assert_int_eq(kv_spill_cleanup_dir(good), 0);
    ck_assert_int_eq(access(victim, F_OK), 0);
    unlink(stale);
    unlink(victim);
    unlink(link);
    rmdir(target);
    rmdir(good);
    rmdir(dir);
    ck_assert_int_eq(rmdir(base), 0);
}
END_TEST

static kv_spill *lru_spill(kv_eviction ev)
{
    make_dir();
    kv_spill_params sp = {.dir = g_dir,
                          .record_bytes = 16,
                          .n_parts = 1,
                          .slots_per_part = 3,
                          .eviction = ev,
                          .decay = 0.9f};
    kv_spill *s;
    ck_assert_int_eq(kv_spill_create(&sp, &s), 0);
    uint8_t rec[16];
    for (int r = 0; r < 6; r++) {
        memset(rec, r, sizeof(rec));
        ck_assert_int_eq(kv_spill_write(s, r, rec), 0);
    }
    return s;
}

static void fetch_ok(kv_spill *s, int64_t rec, uint64_t pin)
{
    const void *p;
    ck_assert_int_eq(kv_spill_fetch(s, 0, rec, pin, 0.0f, &p), 0);
    ck_assert_int_eq(((const uint8_t *)p)[7], rec);
}

START_TEST(test_lru_victims)
{
    kv_spill *s = lru_spill(KV_EVICT_LRU);
    fetch_ok(s, 0, 1);
    fetch_ok(s, 1, 2);
    fetch_ok(s, 2, 3);
    fetch_ok(s, 0, 4); /* 0 is now the most recent: 1 is the LRU */
    fetch_ok(s, 3, 5);
    ck_assert(kv_spill_is_hot(s, 0, 0) && !kv_spill_is_hot(s, 0, 1));
    ck_assert(kv_spill_is_hot(s, 0, 2) && kv_spill_is_hot(s, 0, 3));
    fetch_ok(s, 4, 6); /* evicts 2 */
    ck_assert(!kv_spill_is_hot(s, 0, 2) && kv_spill_is_hot(s, 0, 0));
    /* Pinned buffers are never victims: three fetches in one call fill it, a fourth fails. */
    fetch_ok(s, 0, 7);
    fetch_ok(s, 1, 7);
    fetch_ok(s, 2, 7);
    const void *p;
    ck_assert_int_eq(kv_spill_fetch(s, 0, 5, 7, 0.0f, &p), KS_ERR_FULL);
    ck_assert(kv_spill_is_hot(s, 0, 0) && kv_spill_is_hot(s, 0, 1) && kv_spill_is_hot(s, 0, 2));
    kv_spill_stats st;
    kv_spill_get_stats(s, &st);
    ck_assert_int_eq(st.hits, 2);
    ck_assert_int_eq(st.misses, 7);
    kv_spill_destroy(s);
    rmdir(g_dir);
}
END_TEST

START_TEST(test_score_lru_keeps_frequent)
{
    /* Record 0 used 5 times, then 1 and 2 once. LRU would evict 0 (oldest); with decay 0.9
     * the counts at the next tick are 0: 4.095*0.9^3 = 2.99, 1: 0.81, 2: 0.9 -> evict 1. */
    for (int ev = 0; ev < 2; ev++) {
        kv_spill *s = lru_spill(ev ? KV_EVICT_SCORE_LRU : KV_EVICT_LRU);
        for (uint64_t i = 0; i < 5; i++)
            fetch_ok(s, 0, 10 + i);
        fetch_ok(s, 1, 20);
        fetch_ok(s, 2, 21);
        fetch_ok(s, 3, 22);
        ck_assert_int_eq(kv_spill_is_hot(s, 0, 0), ev == 1);
        ck_assert_int_eq(kv_spill_is_hot(s, 0, 1), ev == 0);
        ck_assert(kv_spill_is_hot(s, 0, 2) && kv_spill_is_hot(s, 0, 3));
        kv_spill_destroy(s);
    }
    rmdir(g_dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Policy vs full                                                                            */

enum { NL = 3, NH = 2, NG = 2, HD = 32 };

typedef struct sim {
    kv_pool *pool;
    kv_seq *seq;
    attn_scratch *as;
} sim;

static size_t g_pool_bytes = (size_t)64 << 20; /* pool budget of the next retrieval sim */

static void sim_init(sim *s, ks_dtype dt, int32_t bt, const kv_policy *pol,
                     const kv_policy_args *args)
{
    kv_pool_params pp = {.budget_bytes =
                             pol == &kv_policy_retrieval ? g_pool_bytes : (size_t)64 << 20,
                         .block_tokens = bt,
                         .head_dim = HD,
                         .k_dtype = dt,
                         .v_dtype = dt};
    ck_assert_int_eq(kv_pool_create(&pp, &s->pool), 0);
    kv_seq_params sp = {.n_layer = NL, .n_head_kv = NH, .policy = pol, .policy_config = args};
    ck_assert_int_eq(kv_seq_create(s->pool, &sp, &s->seq), 0);
    ck_assert_int_eq(attn_scratch_create(HD, NG, 512, &s->as), 0);
}

static void sim_destroy(sim *s)
{
    kv_seq_destroy(s->seq);
    kv_pool_stats ps;
    kv_pool_get_stats(s->pool, &ps);
    ck_assert_int_eq(ps.blocks_used, 0);
    kv_pool_destroy(s->pool);
    attn_scratch_destroy(s->as);
}

/* Attention of (layer, head) over the policy's spans; out is [n][NG*HD]. */
static void sim_attend(sim *s, int32_t l, int32_t h, const kv_query *q, float *out)
{
    static attn_span spans[4096];
    int32_t n;
    ck_assert_int_eq(kv_seq_attn_spans(s->seq, l, h, q, spans, 4096, &n), 0);
    attn_params p = {.n_q = q->n_q,
                     .n_group = NG,
                     .head_dim = HD,
                     .scale = 1.0f / sqrtf((float)HD),
                     .k_dtype = kv_pool_k_dtype(s->pool),
                     .v_dtype = kv_pool_v_dtype(s->pool),
                     .q = q->q,
                     .q_tok_stride = q->q_tok_stride,
                     .q_idx = q->q_idx,
                     .out = out,
                     .out_tok_stride = NG * HD};
    ck_assert_int_eq(attn_forward(&p, spans, n, s->as), 0);
}

static kv_policy_config g_pc;

static kv_policy_args rt_args(int32_t B, int32_t top_k, int32_t sink, int32_t window, int32_t dense,
                              kv_pos_mode pos, int64_t ram_mb, kv_landmark lm)
{
    kv_policy_config_defaults(&g_pc);
    const char *rt = "retrieval";
    pseti(&g_pc, rt, "block_tokens", B);
    pset(&g_pc, rt, "landmark", kv_landmark_names[lm]);
    pseti(&g_pc, rt, "representatives", 4);
    pseti(&g_pc, rt, "top_k", top_k);
    pseti(&g_pc, rt, "n_sink", sink);
    pseti(&g_pc, rt, "window", window);
    pset(&g_pc, rt, "selection", "head");
    pseti(&g_pc, rt, "dense_layers", dense);
    pset(&g_pc, rt, "positions", kv_pos_mode_names[pos]);
    pseti(&g_pc, rt, "chunk", 64);
    pseti(&g_pc, rt, "ram_mb", ram_mb);
    make_dir();
    pset(&g_pc, rt, "spill_dir", g_dir);
    pset(&g_pc, rt, "eviction", "score_lru");
    kv_policy_args a = {
        .config = &g_pc,
        .rope = {.kind = ROPE_NORM, .head_dim = HD, .theta = 10000.0f, .freq_scale = 1.0f},
        .n_layer = NL,
        .n_head_kv = NH,
        .head_dim = HD,
        .n_ctx_train = 512};
    return a;
}

/* Feeds the same random tokens to `full` and to retrieval; every attention output must be
 * identical. Returns the retrieval stats at the end. */
static void run_vs_full(ks_dtype dt, int32_t bt, const kv_policy_args *args, int32_t n_total,
                        kv_retrieval_stats *st_out)
{
    sim full, rt;
    sim_init(&full, dt, bt, &kv_policy_full, NULL);
    sim_init(&rt, dt, bt, &kv_policy_retrieval, args);
    static const int32_t sizes[] = {37, 1, 64, 5, 1, 1, 200, 3, 64, 1};
    static float k[512 * NH * HD], v[512 * NH * HD], q[512 * NH * NG * HD];
    static float o1[512 * NG * HD], o2[512 * NG * HD];
    int32_t idx[512], pos1[512], pos2[512], seen = 0;
    for (int c = 0; seen < n_total; c++) {
        int32_t n = KS_MIN(sizes[c % 10], n_total - seen);
        for (int32_t i = 0; i < n; i++)
            idx[i] = seen + i;
        kv_chunk ch = {.n_new = n, .idx = idx, .prefill = c % 10 < 6};
        ck_assert_int_eq(kv_seq_chunk_begin(full.seq, &ch, pos1), 0);
        ck_assert_int_eq(kv_seq_chunk_begin(rt.seq, &ch, pos2), 0);
        ck_assert(memcmp(pos1, pos2, (size_t)n * sizeof(int32_t)) == 0);
        for (int32_t l = 0; l < NL; l++) {
            for (int32_t i = 0; i < n * NH * HD; i++)
                k[i] = rndf(), v[i] = rndf();
            for (int32_t i = 0; i < n * NH * NG * HD; i++)
                q[i] = rndf() * 3.0f;
            ck_assert_int_eq(kv_seq_append(full.seq, l, n, k, v, idx, pos1), 0);
            ck_assert_int_eq(kv_seq_append(rt.seq, l, n, k, v, idx, pos2), 0);
            for (int32_t h = 0; h < NH; h++) {
                kv_query qq = {.chunk = &ch,
                               .n_q = n,
                               .q_idx = idx,
                               .q = q + (size_t)h * NG * HD,
                               .q_tok_stride = NH * NG * HD,
                               .n_group = NG,
                               .head_dim = HD};
                sim_attend(&full, l, h, &qq, o1);
                sim_attend(&rt, l, h, &qq, o2);
                ck_assert_msg(memcmp(o1, o2, (size_t)n * NG * HD * sizeof(float)) == 0,
                              "output differs at chunk %d layer %d head %d", c, l, h);
            }
        }
        ck_assert_int_eq(kv_seq_chunk_end(full.seq, &ch), 0);
        ck_assert_int_eq(kv_seq_chunk_end(rt.seq, &ch), 0);
        seen += n;
    }
    ck_assert_int_eq(kv_retrieval_get_stats(rt.seq, st_out), 0);
    ck_assert_int_eq(kv_retrieval_get_stats(full.seq, st_out + 1), KS_ERR_INVALID);
    sim_destroy(&full);
    sim_destroy(&rt);
}

START_TEST(test_equals_full_in_ram)
{
    kv_policy_args a = rt_args(16, 1000, 5, 40, 1, KV_POS_ORIGINAL, 512, KV_LANDMARK_BOUNDS);
    kv_retrieval_stats st[2];
    run_vs_full(KS_DTYPE_F16, 8, &a, 900, st);
    ck_assert_int_eq(st[0].blocks_disk, 0);
    ck_assert_int_gt(st[0].landmarks, 0);
    ck_assert_int_gt(st[0].blocks_retrieved, 0);
    rmdir(g_dir);
}
END_TEST

START_TEST(test_equals_full_with_spill)
{
    /* Block 4 KiB (16 tokens x 32 dims x f32 x K+V); 1 MiB cannot hold 1600 tokens of 6
     * tables plus the hot set that 100 blocks x 2 units need, so nearly all old blocks spill
     * and every retrieval reads them back through the hot set. */
    kv_policy_args a = rt_args(32, 100, 3, 50, 1, KV_POS_ORIGINAL, 1, KV_LANDMARK_MEAN);
    kv_retrieval_stats st[2];
    run_vs_full(KS_DTYPE_F32, 16, &a, 1700, st);
    ck_assert_int_gt(st[0].blocks_disk, 100);
    ck_assert_int_gt(st[0].hot_misses, 0);
    ck_assert_int_gt(st[0].hot_hits, 0);
    ck_assert_int_gt(st[0].bytes_read, 0);
    ck_assert_int_eq(count_files(g_dir), 0); /* the spill file went with the sequence */
    rmdir(g_dir);
}
END_TEST

START_TEST(test_pool_pressure_spills)
{
    /* The retrieval sequence's pool holds 60 blocks of 16 tokens per table (1000 tokens
     * need 63 per table): with a large ram_mb only the full pool can force spilling, and the
     * sequence must go on (no KS_ERR_FULL) with outputs still equal to `full`. */
    g_pool_bytes = (size_t)60 * NL * NH * 2 * 16 * HD * 4;
    kv_policy_args a = rt_args(32, 100, 3, 50, 0, KV_POS_ORIGINAL, 512, KV_LANDMARK_MEAN);
    kv_retrieval_stats st[2];
    run_vs_full(KS_DTYPE_F32, 16, &a, 1000, st);
    g_pool_bytes = (size_t)64 << 20;
    ck_assert_int_gt(st[0].blocks_disk, 0);
    ck_assert_int_le(st[0].blocks_ram, 60 * NL * NH);
    rmdir(g_dir);
}
END_TEST

START_TEST(test_equals_full_representative_spill)
{
    kv_policy_args a = rt_args(16, 1000, 0, 30, 0, KV_POS_ORIGINAL, 1, KV_LANDMARK_REPRESENTATIVE);
    kv_retrieval_stats st[2];
    run_vs_full(KS_DTYPE_F16, 16, &a, 1200, st);
    ck_assert_int_gt(st[0].blocks_disk, 0);
    rmdir(g_dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Selection and window positions                                                            */

START_TEST(test_selects_needle_window_positions)
{
    enum { B = 16, T = 640, SINK = 4, WIN = 64, TOPK = 2 };
    for (int mode = 0; mode < 2; mode++) {
        kv_policy_args a = rt_args(B, TOPK, SINK, WIN, 0, KV_POS_WINDOW, 512,
                                   mode ? KV_LANDMARK_BOUNDS : KV_LANDMARK_MEAN);
        pset(&g_pc, "retrieval", "selection", mode ? "layer" : "head");
        sim rt;
        sim_init(&rt, KS_DTYPE_F32, 8, &kv_policy_retrieval, &a);
        static float raw[T][NH][HD], k[T * NH * HD], v[T * NH * HD];
        float dir[HD];
        for (int d = 0; d < HD; d++) /* low-frequency pairs only: RoPE barely turns them */
            dir[d] = d >= HD - 6 ? 0.5f + fabsf(rndf()) : 0.0f;
        int32_t idx[T], pos[T];
        for (int32_t i = 0; i < T; i++)
            idx[i] = i;
        for (int32_t i = 0; i < T; i++)
            for (int32_t h = 0; h < NH; h++)
                for (int d = 0; d < HD; d++) /* block 10 of head 0 points along dir */
                    raw[i][h][d] = rndf() * 0.1f + ((i / B == 10 && h == 0) ? dir[d] * 4 : 0);
        kv_chunk ch = {.n_new = T - 1, .idx = idx, .prefill = true};
        ck_assert_int_eq(kv_seq_chunk_begin(rt.seq, &ch, pos), 0);
        for (int32_t i = 0; i < T - 1; i++)
            ck_assert_int_eq(pos[i], i);
        memcpy(k, raw, sizeof(raw));
        for (int32_t i = 0; i < T; i++)
            rope_rotate_pos(&a.rope, k + (size_t)i * NH * HD, NH, (float)i);
        for (int32_t i = 0; i < T * NH * HD; i++)
            v[i] = rndf();
        for (int32_t l = 0; l < NL; l++)
            ck_assert_int_eq(kv_seq_append(rt.seq, l, T - 1, k, v, idx, pos), 0);
        ck_assert_int_eq(kv_seq_chunk_end(rt.seq, &ch), 0);
        /* Decode one token whose query (both heads, rotated at T-1) points along dir. */
        kv_chunk dc = {.n_new = 1, .idx = idx + T - 1};
        ck_assert_int_eq(kv_seq_chunk_begin(rt.seq, &dc, pos), 0);
        float q[NH * NG * HD];
        for (int h = 0; h < NH * NG; h++)
            memcpy(q + h * HD, dir, sizeof(dir));
        rope_rotate_pos(&a.rope, q, NH * NG, (float)(T - 1));
        for (int32_t l = 0; l < NL; l++) {
            ck_assert_int_eq(kv_seq_append(rt.seq, l, 1, k + (size_t)(T - 1) * NH * HD,
                                           v + (size_t)(T - 1) * NH * HD, idx + T - 1, pos),
                             0);
            for (int32_t h = 0; h < NH; h++) {
                kv_query qq = {.chunk = &dc,
                               .n_q = 1,
                               .q_idx = idx + T - 1,
                               .q = q + h * NG * HD,
                               .q_tok_stride = NH * NG * HD,
                               .n_group = NG,
                               .head_dim = HD};
                attn_span sp[256];
                int32_t n;
                ck_assert_int_eq(kv_seq_attn_spans(rt.seq, l, h, &qq, sp, 3, &n), KS_ERR_RANGE);
                ck_assert_int_gt(n, 3);
                ck_assert_int_eq(kv_seq_attn_spans(rt.seq, l, h, &qq, sp, 256, &n), 0);
                /* Tokens seen: sinks, top-k blocks, window. Block 10 must be among them for
                 * head 0, and for head 1 too when the selection is shared by the layer. */
                /* Local = tokens from the first block boundary at or before T-1-WIN. */
                int32_t n_keys = 0, has_needle = 0, target = T - 1 - WIN;
                int32_t local0 = (T - 1 - WIN) / B * B;
                for (int32_t s = 0; s < n; s++)
                    for (int32_t r = 0; r < sp[s].n; r++) {
                        int32_t x = sp[s].idx[r];
                        n_keys++;
                        has_needle += x / B == 10;
                        const float *kr = (const float *)sp[s].k + (size_t)r * HD;
                        float want[HD];
                        memcpy(want, raw[x][h], sizeof(want));
                        int32_t at = x >= local0 ? x : target; /* others: fixed distance */
                        rope_rotate_pos(&a.rope, want, 1, (float)at);
                        for (int d = 0; d < HD; d++)
                            ck_assert_msg(fabsf(kr[d] - want[d]) < 2e-3f, "key %d d %d", x, d);
                    }
                ck_assert_int_eq(n_keys, SINK + TOPK * B + (T - local0));
                if (h == 0 || mode == 1) ck_assert_int_eq(has_needle, B);
            }
        }
        ck_assert_int_eq(kv_seq_chunk_end(rt.seq, &dc), 0);
        sim_destroy(&rt);
    }
    rmdir(g_dir);
}
END_TEST

/* Parameter `key` of retrieval resolved for a model of trained context ctx. */
static long long rt_resolved(const kv_policy_config *pc, int32_t ctx, const char *key)
{
    const kv_policy_desc *d = kv_policy_desc_find("retrieval");
    kv_policy_params p;
    kv_model_info mi = {.n_ctx_train = ctx, .n_layer = 4, .n_head_kv = 2, .head_dim = 32};
    kv_policy_params_resolve(pc, d, &mi, p.bytes);
    char buf[64];
    kv_param_format(p.bytes, kv_param_find(kv_policy_desc_index(d), key), buf, sizeof(buf));
    return atoll(buf);
}

START_TEST(test_defaults_from_model)
{
    /* By hand from the rules: block = largest power of two <= C/32 in 8..128, top_k =
     * 2C / block, window C/2, chunk C/4, dense_layers 0. */
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    static const struct {
        int32_t ctx;
        long long block, top_k, window, chunk;
    } want[] = {{512, 16, 64, 256, 128},
                {2048, 64, 64, 1024, 512},
                {8192, 128, 128, 4096, 2048},
                {100, 8, 25, 50, 25}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        ck_assert_int_eq(rt_resolved(&pc, want[i].ctx, "block_tokens"), want[i].block);
        ck_assert_int_eq(rt_resolved(&pc, want[i].ctx, "top_k"), want[i].top_k);
        ck_assert_int_eq(rt_resolved(&pc, want[i].ctx, "window"), want[i].window);
        ck_assert_int_eq(rt_resolved(&pc, want[i].ctx, "chunk"), want[i].chunk);
        ck_assert_int_eq(rt_resolved(&pc, want[i].ctx, "dense_layers"), 0);
    }
    /* window + chunk stays inside the trained context (window positions) */
    ck_assert_int_lt(rt_resolved(&pc, 512, "window") + rt_resolved(&pc, 512, "chunk"), 512);
    /* an explicit value is kept and the others derive around it */
    pseti(&pc, "retrieval", "block_tokens", 32);
    pseti(&pc, "retrieval", "window", 100);
    ck_assert_int_eq(rt_resolved(&pc, 512, "block_tokens"), 32);
    ck_assert_int_eq(rt_resolved(&pc, 512, "top_k"), 32);
    ck_assert_int_eq(rt_resolved(&pc, 512, "window"), 100);
    ck_assert_int_eq(rt_resolved(&pc, 512, "chunk"), 128);
    /* out-of-range parameters are refused with the key named */
    ks_diag d;
    pseti(&pc, "retrieval", "top_k", 0);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.retrieval.top_k") != NULL, "%s", d.msg);
    pseti(&pc, "retrieval", "top_k", 8);
    pseti(&pc, "retrieval", "block_tokens", 48);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.retrieval.block_tokens") != NULL, "%s", d.msg);
}
END_TEST

/* The spill tier bounds RSS at 32k: 32768 tokens with the derived defaults (block 16, top_k
 * 64, window 256) and ram_mb 1 keep the same number of pool blocks in RAM as 8192 tokens,
 * within the budget, while the spill file takes the rest; the landmarks in RAM (their pages
 * beyond 1/32 of ram_mb go to the landmark file) and the selection buffers do not grow either,
 * so everything the policy holds in RAM is the same at 32k as at 8k. */
START_TEST(test_spill_tier_bounds_rss_32k)
{
    kv_policy_config_defaults(&g_pc);
    pseti(&g_pc, "retrieval", "ram_mb", 1);
    make_dir();
    pset(&g_pc, "retrieval", "spill_dir", g_dir);
    kv_policy_args a = {
        .config = &g_pc,
        .rope = {.kind = ROPE_NORM, .head_dim = HD, .theta = 10000.0f, .freq_scale = 1.0f},
        .n_layer = NL,
        .n_head_kv = NH,
        .head_dim = HD,
        .n_ctx_train = 512};
    sim rt;
    sim_init(&rt, KS_DTYPE_F16, 16, &kv_policy_retrieval, &a);
    enum { CH = 128, TOTAL = 32768 };
    static float k[CH * NH * HD], v[CH * NH * HD], q[CH * NH * NG * HD], o[CH * NG * HD];
    int32_t idx[CH], pos[CH];
    kv_retrieval_stats at8k = {0}, st;
    size_t bb = kv_pool_block_bytes(rt.pool);
    for (int32_t seen = 0; seen < TOTAL; seen += CH) {
        for (int32_t i = 0; i < CH; i++)
            idx[i] = seen + i;
        kv_chunk ch = {.n_new = CH, .idx = idx, .prefill = true};
        ck_assert_int_eq(kv_seq_chunk_begin(rt.seq, &ch, pos), 0);
        for (int32_t l = 0; l < NL; l++) {
            for (int32_t i = 0; i < CH * NH * HD; i++)
                k[i] = rndf(), v[i] = rndf();
            ck_assert_int_eq(kv_seq_append(rt.seq, l, CH, k, v, idx, pos), 0);
            if (seen % (16 * CH) != 0) /* attend now and then: selection reads spilled blocks */
                continue;
            for (int32_t i = 0; i < CH * NH * NG * HD; i++)
                q[i] = rndf();
            for (int32_t h = 0; h < NH; h++) {
                kv_query qq = {.chunk = &ch,
                               .n_q = CH,
                               .q_idx = idx,
                               .q = q + (size_t)h * NG * HD,
                               .q_tok_stride = NH * NG * HD,
                               .n_group = NG,
                               .head_dim = HD};
                sim_attend(&rt, l, h, &qq, o);
            }
        }
        ck_assert_int_eq(kv_seq_chunk_end(rt.seq, &ch), 0);
        ck_assert_int_eq(kv_retrieval_get_stats(rt.seq, &st), 0);
        /* pool blocks in RAM never exceed the budget (1 MiB less the hot set, plus the
         * sinks and the window that must stay in RAM) */
        ck_assert_int_le((int64_t)st.blocks_ram * (int64_t)bb,
                         ((int64_t)1 << 20) +
                             (int64_t)NL * NH * (256 + CH + 16 + 2 * 16) / 16 * (int64_t)bb);
        if (seen + CH == 8192) at8k = st;
    }
    ck_assert_int_gt(at8k.blocks_disk, 0);
    ck_assert_int_gt(st.blocks_disk, 3 * at8k.blocks_disk);
    ck_assert_int_le(st.blocks_ram, at8k.blocks_ram + NL * NH); /* flat */
    ck_assert_int_eq(st.hot_slots, at8k.hot_slots);
    ck_assert_int_gt(st.hot_misses, 0);
    /* 4x the landmarks, the same landmark RAM (but for the page index, 8 bytes per 64
     * blocks), and all of it within the landmarks' share of the budget */
    ck_assert_int_ge(st.landmarks, 4 * at8k.landmarks - NL * NH * 32);
    ck_assert_int_le(st.landmark_bytes, at8k.landmark_bytes + (size_t)NL * NH * 256);
    ck_assert_int_le(at8k.landmark_bytes, ((size_t)1 << 20) / 32 + /* or one page per table */
                                              (size_t)NL * NH * (64 * HD * sizeof(float) + 256));
    /* all RAM the policy holds (pool blocks, hot set, landmarks, selection and copy buffers)
     * stays flat */
    ck_assert_int_le(st.ram_bytes, at8k.ram_bytes + (size_t)NL * NH * (bb + 256));
    sim_destroy(&rt);
    ck_assert_int_eq(count_files(g_dir), 0);
    rmdir(g_dir);
}
END_TEST

START_TEST(test_policy_registered)
{
    ck_assert_ptr_eq(kv_policy_find("retrieval"), &kv_policy_retrieval);
    int found = 0;
    for (const char *const *n = kv_policy_names(); *n; n++)
        found += strcmp(*n, "retrieval") == 0;
    ck_assert_int_eq(found, 1);
}
END_TEST

static Suite *retrieval_suite(void)
{
    Suite *s = suite_create("retrieval");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_quest_bound_property);
    tcase_add_test(tc, test_landmark_mean_and_representative);
    tcase_add_test(tc, test_spill_roundtrip_and_cleanup);
    tcase_add_test(tc, test_spill_dir_safety);
    tcase_add_test(tc, test_lru_victims);
    tcase_add_test(tc, test_score_lru_keeps_frequent);
    tcase_add_test(tc, test_equals_full_in_ram);
    tcase_add_test(tc, test_equals_full_with_spill);
    tcase_add_test(tc, test_equals_full_representative_spill);
    tcase_add_test(tc, test_pool_pressure_spills);
    tcase_add_test(tc, test_selects_needle_window_positions);
    tcase_add_test(tc, test_policy_registered);
    tcase_add_test(tc, test_defaults_from_model);
    tcase_add_test(tc, test_spill_tier_bounds_rss_32k);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(retrieval_suite(), true);
}

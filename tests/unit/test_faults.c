/* test_faults.c - allocation failure in the pool and request paths.
 *
 * This program is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc: while armed,
 * the allocation numbered `fail_at` (counting from arming) returns NULL. Each test runs an
 * operation once per possible failing allocation, from the first until one run completes
 * without reaching the failure, and checks that every run either succeeds or fails with
 * KS_ERR_NOMEM, leaves nothing behind (pool empty; no leak under the sanitizer build) and
 * does not crash.
 */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/kvcache.h"
#include "kvserve/tokenizer.h"
#include "server/api_server.h"
#include "server/scheduler.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);

static bool g_armed;
static long g_count, g_fail_at;
static bool g_hit;

static bool fail_now(void)
{
    if (!g_armed) return false;
    if (g_count++ != g_fail_at) return false;
    g_hit = true;
    return true;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t sz)
{
    return fail_now() ? NULL : __real_calloc(n, sz);
}
void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

static void arm(long at)
{
    g_count = 0;
    g_fail_at = at;
    g_hit = false;
    g_armed = true;
}

static bool disarm(void)
{
    g_armed = false;
    return g_hit;
}

enum { HD = 8, BT = 4, NL = 2, NH = 2 };

static kv_pool *pool_new(void)
{
    kv_pool_params pp = {.budget_bytes = 64 * 2 * BT * HD * sizeof(float),
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_F32,
                         .v_dtype = KS_DTYPE_F32};
    kv_pool *pool = NULL;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    return pool;
}

START_TEST(test_pool_create_nomem)
{
    kv_pool_params pp = {.budget_bytes = 64 * 2 * BT * HD * sizeof(float),
                         .block_tokens = BT,
                         .head_dim = HD,
                         .k_dtype = KS_DTYPE_F32,
                         .v_dtype = KS_DTYPE_F32};
    for (long at = 0;; at++) {
        kv_pool *pool = NULL;
        arm(at);
        int rc = kv_pool_create(&pp, &pool);
        bool hit = disarm();
        ck_assert(rc == 0 || rc == KS_ERR_NOMEM);
        ck_assert(rc == 0 || pool == NULL);
        kv_pool_destroy(pool);
        if (!hit) {
            ck_assert_int_eq(rc, 0);
            break;
        }
    }
}
END_TEST

/* A sequence created and fed 10 tokens per layer, each allocation failing in turn. */
START_TEST(test_seq_append_nomem)
{
    kv_pool *pool = pool_new();
    float k[10 * NH * HD], v[10 * NH * HD];
    int32_t idx[10];
    for (int i = 0; i < 10; i++)
        idx[i] = i;
    for (int i = 0; i < 10 * NH * HD; i++)
        k[i] = v[i] = (float)i;
    kv_seq_params sp = {.n_layer = NL, .n_head_kv = NH};
    long at = 0;
    for (;; at++) {
        kv_seq *seq = NULL;
        arm(at);
        int rc = kv_seq_create(pool, &sp, &seq);
        for (int32_t l = 0; rc == 0 && l < NL; l++)
            rc = kv_seq_append(seq, l, 10, k, v, idx, idx);
        bool hit = disarm();
        ck_assert_msg(rc == 0 || rc == KS_ERR_NOMEM, "allocation %ld: %d", at, rc);
        kv_seq_destroy(seq);
        ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
        if (!hit) break;
    }
    ck_assert_int_gt(at, 0);
    kv_pool_destroy(pool);
}
END_TEST

static const char *vocab_path(char *buf, size_t cap)
{
    const char *sh = getenv("KVSERVE_SHARED");
    snprintf(buf, cap, "%s/vocab/ggml-vocab-qwen2.gguf", sh ? sh : "../shared");
    return buf;
}

/* The request path before the scheduler: chat messages through the template and the
 * tokenizer, each allocation failing in turn. */
START_TEST(test_chat_prompt_nomem)
{
    char path[1024];
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ks_diag d;
    ck_assert_int_eq(gguf_open(vocab_path(path, sizeof(path)), &f, &d), 0);
    ck_assert_int_eq(tok_vocab_load(f, &v, &d), 0);
    gguf_close(f);
    cfg c;
    cfg_defaults(&c);
    api_server a = {
        .cfg = &c, .vocab = v, .chat = TOK_CHAT_CHATML, .n_ctx = 4096, .max_prompt = 4096};
    json_t *msgs = json_loads("{\"messages\": [{\"role\":\"system\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                              "\"hi <|im_end|> there\"}]}]}",
                              0, NULL);
    ck_assert_ptr_nonnull(msgs);
    long at = 0;
    for (;; at++) {
        api_prompt pr;
        char msg[256], param[64];
        int32_t *ids = NULL, n = 0;
        arm(at);
        int rc = api_chat_prompt(&a, msgs, false, &pr, msg, sizeof(msg), param, sizeof(param));
        if (rc == 0) {
            rc = tok_encode_ex(v, pr.text, pr.len, true, pr.plain, pr.n_plain, &ids, &n);
            api_prompt_free(&pr);
        }
        bool hit = disarm();
        ck_assert_msg(rc == 0 || rc == KS_ERR_NOMEM, "allocation %ld: %d %s", at, rc, msg);
        free(ids);
        if (!hit) {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_gt(n, 5);
            break;
        }
    }
    ck_assert_int_gt(at, 3);
    json_decref(msgs);
    tok_vocab_free(v);
}
END_TEST

static void on_event(sch_req *r, const sch_event *ev, void *ud)
{
    (void)r;
    (void)ev;
    (void)ud;
}

/* sch_submit with each of its allocations failing: KS_ERR_NOMEM and nothing queued. */
START_TEST(test_submit_nomem)
{
    char path[1024];
    const char *sh = getenv("KVSERVE_SHARED");
    snprintf(path, sizeof(path), "%s/models/kjv-tiny/kjv-tiny-f16.gguf", sh ? sh : "../shared");
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    model *m = NULL;
    ks_diag d;
    ck_assert_int_eq(model_load(path, &m, &d), 0);
    const model_hparams *hp = model_get_hparams(m);
    kv_pool_params pp = {.budget_bytes = 8 << 20,
                         .block_tokens = 16,
                         .head_dim = hp->head_dim,
                         .k_dtype = KS_DTYPE_F16,
                         .v_dtype = KS_DTYPE_F16};
    kv_pool *pool = NULL;
    ck_assert_int_eq(kv_pool_create(&pp, &pool), 0);
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    sch_params sp = {.loop = &loop,
                     .model = m,
                     .pool = pool,
                     .policy = kv_policy_find("full"),
                     .policy_config = &pc,
                     .n_threads = 1,
                     .max_queue = 8,
                     .max_concurrent = 2,
                     .queue_timeout_s = 600,
                     .n_ctx = hp->n_ctx_train};
    sch *s = NULL;
    ck_assert_int_eq(sch_create(&sp, &s, &d), 0);
    int32_t prompt[4] = {1, 300, 301, 302};
    const char *stops[1] = {"xyz"};
    long at = 0;
    for (;; at++) {
        sch_request_params rp = {.prompt = prompt,
                                 .n_prompt = 4,
                                 .max_tokens = 2,
                                 .stops = stops,
                                 .n_stops = 1,
                                 .on_event = on_event};
        sch_sampling_default(&rp.sampling);
        sch_req *r = NULL;
        arm(at);
        int rc = sch_submit(s, &rp, &r);
        bool hit = disarm();
        ck_assert_msg(rc == 0 || rc == KS_ERR_NOMEM, "allocation %ld: %d", at, rc);
        if (rc == 0) sch_req_cancel(r);
        if (!hit) break;
    }
    ck_assert_int_gt(at, 1);
    sch_destroy(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_uint_eq(kv_pool_bytes_used(pool), 0);
    kv_pool_destroy(pool);
    model_free(m);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("nomem");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_pool_create_nomem);
    tcase_add_test(tc, test_seq_append_nomem);
    tcase_add_test(tc, test_chat_prompt_nomem);
    tcase_add_test(tc, test_submit_nomem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(faults_suite(), true);
}

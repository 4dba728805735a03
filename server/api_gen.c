/* api_gen.c - /v1/completions and /v1/chat/completions: build the prompt (text, token ids
 * or chat messages through the model's chat template), submit it to the scheduler once per
 * choice (n of them), and turn the scheduler's events into one JSON response or an SSE stream
 * of OpenAI chunks.
 *
 * Stream shape (OpenAI): for chat a first chunk per choice carries {"role":"assistant"}; each
 * token with text is one chunk of its choice (index); a choice's last chunk has its
 * finish_reason; a usage chunk (choices: []) when stream_options.include_usage; then
 * `data: [DONE]` once every choice has finished.
 *
 * Tools: with tools offered, a choice's text goes through the tool-call parser
 * (api_tools.c): content is streamed once it cannot be the start of a call, and each call is
 * streamed when complete as tool_calls deltas (index, id, type and name first, then the
 * arguments), finish_reason "tool_calls".
 *
 * n > 1: the choices are n scheduler requests of one group (sched.h): choice 0 prefills the
 * prompt, the others start from its cached blocks (copy-on-write, full policy) with seed +
 * index. A job lives from submission until every choice's final event (then the HTTP
 * response ends) or until the client disconnects (then every request is cancelled). Streams
 * start lazily, so a request that never got KV capacity can still get a real 503 status.
 * Backpressure: past API_PAUSE_BYTES of socket backlog every choice pauses; the drain
 * callback resumes them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_server.h"
#include "api_tools.h"
#include "sse.h"

#define API_PAUSE_BYTES (256 * 1024)
#define API_RESUME_BYTES (64 * 1024)

typedef struct api_job api_job;

typedef struct api_choice {
    api_job *j;
    int index;
    sch_req *sr; /* NULL once its final event came */
    char *text;  /* non-streaming: the whole completion */
    size_t text_len, text_cap;
    json_t *lp; /* non-streaming: logprobs entries */
    api_tool_stream ts;
    bool finished;
    const char *finish;
    sch_usage usage;
} api_choice;

struct api_job {
    api_server *a;
    http_request *req;
    bool chat, stream, include_usage, logprobs, tools;
    bool started, paused, ended;
    char id[48];
    long long created;
    int n, n_live; /* choices; those whose request is still alive */
    char *echo;    /* echo: the prompt text, sent before each choice's completion */
    size_t echo_len;
    struct api_client *client; /* counted in a->clients */
    api_choice ch[];
};

/* ---------------------------------------------------------------- per-client limit */

/* A client with generation requests in flight, named by its Authorization header or, without
 * one, its address. Kept in a list while its count is above zero (a handful of entries:
 * max_connections bounds them). */
typedef struct api_client {
    struct api_client *next;
    int32_t n;
    char id[];
} api_client;

static void client_id(http_request *req, char *buf, size_t cap)
{
    const char *auth = http_request_header(req, "authorization");
    if (auth)
        snprintf(buf, cap, "key:%s", auth);
    else if (http_request_peer(req, buf, cap))
        snprintf(buf, cap, "?");
}

/* Counts one more request for the client; NULL when it is at its limit (or no memory). */
static api_client *client_acquire(api_server *a, http_request *req)
{
    char id[300];
    client_id(req, id, sizeof(id));
    api_client *c = a->clients;
    while (c && strcmp(c->id, id))
        c = c->next;
    int32_t lim = a->cfg->server.max_client_concurrent;
    if (c && lim > 0 && c->n >= lim) return NULL;
    if (!c) {
        c = calloc(1, sizeof(*c) + strlen(id) + 1);
        if (!c) return NULL;
        strcpy(c->id, id);
        c->next = a->clients;
        a->clients = c;
    }
    c->n++;
    return c;
}

static void client_release(api_server *a, api_client *c)
{
    if (!c || --c->n > 0) return;
    for (api_client **pp = &a->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            free(c);
            return;
        }
}

static void job_free(api_job *j)
{
    client_release(j->a, j->client);
    j->a->n_jobs--;
    for (int i = 0; i < j->n; i++) {
        free(j->ch[i].text);
        json_decref(j->ch[i].lp);
        api_tool_stream_free(&j->ch[i].ts);
    }
    free(j->echo);
    free(j);
}

static json_t *piece_json(const api_server *a, int32_t id)
{
    char buf[256];
    int32_t n = tok_piece(a->vocab, id, true, buf, (int32_t)sizeof(buf));
    if (n < 0) n = 0;
    return api_json_text(buf, (size_t)KS_MIN(n, (int32_t)sizeof(buf)));
}

/* One token's logprobs entry: chat {"token","logprob","top_logprobs":[...]} or, for
 * completions, a {"token","logprob","top":{piece: lp}} triple split later. */
static json_t *lp_entry(const api_job *j, const sch_event *ev)
{
    json_t *top = j->chat ? json_array() : json_object();
    for (int32_t i = 0; i < ev->n_top; i++) {
        json_t *p = piece_json(j->a, ev->top_ids[i]);
        if (j->chat)
            json_array_append_new(
                top, json_pack("{s:o, s:f}", "token", p, "logprob", (double)ev->top_logprobs[i]));
        else {
            json_object_set_new(top, json_string_value(p), json_real(ev->top_logprobs[i]));
            json_decref(p);
        }
    }
    return json_pack("{s:o, s:f, s:o}", "token", piece_json(j->a, ev->token), "logprob",
                     (double)ev->logprob, "top_logprobs", top);
}

/* OpenAI's logprobs object from a list of entries. */
static json_t *lp_object(const api_job *j, json_t *entries)
{
    if (j->chat) return json_pack("{s:O}", "content", entries);
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        json_array_append(toks, json_object_get(e, "token"));
        json_array_append(lps, json_object_get(e, "logprob"));
        json_array_append(tops, json_object_get(e, "top_logprobs"));
    }
    return json_pack("{s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs",
                     tops);
}

/* A streamed choice: delta {role?, content?, tool_calls?}. Steals lp and calls. */
static json_t *delta_choice(const api_choice *c, const char *text, size_t len, bool role,
                            json_t *calls, json_t *lp, const char *finish)
{
    json_t *o = json_pack("{s:i}", "index", c->index);
    if (c->j->chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (len || role) json_object_set_new(delta, "content", api_json_text(text, len));
        if (calls) json_object_set_new(delta, "tool_calls", calls);
        json_object_set_new(o, "delta", delta);
    } else {
        json_object_set_new(o, "text", api_json_text(text, len));
    }
    json_object_set_new(o, "logprobs", lp ? lp : json_null());
    json_object_set_new(o, "finish_reason", finish ? json_string(finish) : json_null());
    return o;
}

static json_t *chunk(const api_job *j, json_t *choices)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", j->id, "object",
                     j->chat ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)j->created, "model", j->a->model_id, "choices", choices);
}

static void send_event(api_job *j, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return;
    size_t len;
    char *framed = sse_frame(s, strlen(s), &len);
    free(s);
    if (framed) (void)http_stream_write(j->req, framed, len);
    free(framed);
}

static void send_delta(api_choice *c, const char *text, size_t len, bool role, json_t *calls,
                       json_t *lp, const char *finish)
{
    json_t *arr = json_array();
    json_array_append_new(arr, delta_choice(c, text, len, role, calls, lp, finish));
    send_event(c->j, chunk(c->j, arr));
}

static void stream_start(api_job *j)
{
    if (j->started) return;
    j->started = true;
    (void)http_stream_start(j->req, 200, "text/event-stream");
    for (int i = 0; j->chat && i < j->n; i++)
        send_delta(&j->ch[i], "", 0, true, NULL, NULL, NULL);
    for (int i = 0; j->echo_len && i < j->n; i++)
        send_delta(&j->ch[i], j->echo, j->echo_len, false, NULL, NULL, NULL);
}

static void append_text(api_choice *c, const char *t, size_t n)
{
    if (c->text_len + n + 1 > c->text_cap) {
        size_t nc = (c->text_len + n + 1) * 2;
        char *nt = realloc(c->text, nc);
        if (!nt) return;
        c->text = nt;
        c->text_cap = nc;
    }
    memcpy(c->text + c->text_len, t, n);
    c->text_len += n;
}

static void send_call_head(api_choice *c, size_t index, json_t *id, json_t *name)
{
    send_delta(c, NULL, 0, false,
               json_pack("[{s:I, s:O, s:s, s:{s:O, s:s}}]", "index", (json_int_t)index, "id", id,
                         "type", "function", "function", "name", name, "arguments", ""),
               NULL, NULL);
}

static void send_call_args(api_choice *c, size_t index, const char *args, size_t n)
{
    if (n == 0) return;
    send_delta(c, NULL, 0, false,
               json_pack("[{s:I, s:{s:s%}}]", "index", (json_int_t)index, "function", "arguments",
                         args, n),
               NULL, NULL);
}

/* Streams what the tool parser released: content; the call being written (its id and name
 * once known, then its arguments as they grow); each call that completed (what of it was not
 * sent yet). */
static void stream_tools(api_choice *c, json_t *lp)
{
    api_tool_stream *ts = &c->ts;
    const char *p;
    size_t n;
    api_tool_stream_content(ts, &p, &n);
    if (n || lp) send_delta(c, p, n, false, NULL, lp, NULL);
    while (ts->calls_sent < json_array_size(ts->calls)) {
        size_t k = ts->calls_sent++;
        json_t *call = json_array_get(ts->calls, k);
        json_t *fn = json_object_get(call, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        size_t skip = (long)k == ts->announced ? ts->announced_sent : 0;
        if ((long)k != ts->announced)
            send_call_head(c, k, json_object_get(call, "id"), json_object_get(fn, "name"));
        send_call_args(c, k, args + KS_MIN(skip, strlen(args)),
                       strlen(args) - KS_MIN(skip, strlen(args)));
    }
    if (ts->pend) {
        size_t k = json_array_size(ts->calls);
        if (!ts->pend_announced) {
            json_t *id = json_string(ts->pend_id), *name = json_string(ts->pend_name);
            send_call_head(c, k, id, name);
            json_decref(id);
            json_decref(name);
            ts->pend_announced = true;
        }
        api_tool_stream_args(ts, &p, &n);
        send_call_args(c, k, p, n);
    }
}

static json_t *usage_total(const api_job *j)
{
    sch_usage u = j->ch[0].usage;
    for (int i = 1; i < j->n; i++)
        u.completion_tokens += j->ch[i].usage.completion_tokens;
    return api_usage_json(&u);
}

/* The non-streamed choice object. */
static json_t *final_choice(api_choice *c)
{
    api_job *j = c->j;
    json_t *o = json_pack("{s:i}", "index", c->index);
    if (!j->chat) {
        json_object_set_new(o, "text", api_json_text(c->text ? c->text : "", c->text_len));
    } else if (j->tools) {
        api_tool_stream_push(&c->ts, c->text ? c->text : "", c->text_len, true);
        const char *p;
        size_t n;
        api_tool_stream_content(&c->ts, &p, &n);
        bool calls = json_array_size(c->ts.calls) > 0;
        json_t *m = json_pack("{s:s, s:o}", "role", "assistant", "content",
                              calls && n == 0 ? json_null() : api_json_text(p, n));
        if (calls) json_object_set(m, "tool_calls", c->ts.calls);
        json_object_set_new(o, "message", m);
    } else {
        json_object_set_new(o, "message",
                            json_pack("{s:s, s:o}", "role", "assistant", "content",
                                      api_json_text(c->text ? c->text : "", c->text_len)));
    }
    json_object_set_new(o, "logprobs", j->logprobs ? lp_object(j, c->lp) : json_null());
    json_object_set_new(o, "finish_reason", json_string(c->finish));
    return o;
}

static void job_finish(api_job *j)
{
    if (j->stream) {
        stream_start(j);
        if (j->include_usage) {
            json_t *c = chunk(j, json_array());
            json_object_set_new(c, "usage", usage_total(j));
            send_event(j, c);
        }
        (void)http_stream_write(j->req, SSE_DONE, strlen(SSE_DONE));
        metrics_count_request(j->a->metrics, 200);
        (void)http_stream_end(j->req);
        return;
    }
    json_t *choices = json_array();
    for (int i = 0; i < j->n; i++)
        json_array_append_new(choices, final_choice(&j->ch[i]));
    json_t *root = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", j->id, "object",
                             j->chat ? "chat.completion" : "text_completion", "created",
                             (json_int_t)j->created, "model", j->a->model_id, "choices", choices,
                             "usage", usage_total(j));
    api_respond_json(j->a, j->req, 200, root);
}

static void on_done(api_choice *c, const sch_event *ev)
{
    api_job *j = c->j;
    c->finished = true;
    c->usage = ev->usage;
    c->finish = ev->finish == SCH_FINISH_LENGTH ? "length" : "stop";
    if (!j->stream) {
        append_text(c, ev->text, ev->len);
        if (j->tools) { /* parsed now to know the finish reason */
            api_tool_stream probe;
            api_tool_stream_init(&probe, c->ts.fmt, 1);
            api_tool_stream_push(&probe, c->text ? c->text : "", c->text_len, true);
            if (json_array_size(probe.calls) > 0) c->finish = "tool_calls";
            api_tool_stream_free(&probe);
        }
        return;
    }
    stream_start(j);
    if (j->tools) {
        api_tool_stream_push(&c->ts, ev->text, ev->len, true);
        stream_tools(c, NULL);
        if (json_array_size(c->ts.calls) > 0) c->finish = "tool_calls";
    } else if (ev->len) {
        send_delta(c, ev->text, ev->len, false, NULL, NULL, NULL);
    }
    send_delta(c, "", 0, false, NULL, NULL, c->finish);
}

static void cancel_others(api_job *j, const api_choice *except)
{
    for (int i = 0; i < j->n; i++) {
        if (&j->ch[i] != except && j->ch[i].sr) {
            sch_req_cancel(j->ch[i].sr);
            j->ch[i].sr = NULL;
            j->n_live--;
        }
    }
}

/* A choice failed: the whole response fails (status if nothing was sent yet). */
static void on_error(api_choice *c, const sch_event *ev)
{
    api_job *j = c->j;
    cancel_others(j, c);
    j->ended = true;
    if (!j->started) {
        api_respond_error(j->a, j->req, ev->status, ev->message ? ev->message : "failed", NULL);
        return;
    }
    size_t len;
    char *body = http_error_body(ev->status, ev->message, NULL, &len);
    char *framed = body ? sse_frame(body, len, &len) : NULL;
    if (framed) (void)http_stream_write(j->req, framed, len);
    free(framed);
    free(body);
    metrics_count_request(j->a->metrics, ev->status);
    (void)http_stream_end(j->req);
}

static void on_token(api_choice *c, const sch_event *ev)
{
    api_job *j = c->j;
    json_t *lp = j->logprobs ? lp_entry(j, ev) : NULL;
    if (!j->stream) {
        append_text(c, ev->text, ev->len);
        if (lp) json_array_append_new(c->lp, lp);
        return;
    }
    stream_start(j);
    json_t *lpo = NULL;
    if (lp) {
        json_t *arr = json_array();
        json_array_append_new(arr, lp);
        lpo = lp_object(j, arr);
        json_decref(arr);
    }
    if (j->tools) {
        api_tool_stream_push(&c->ts, ev->text, ev->len, false);
        stream_tools(c, lpo);
    } else if (ev->len || lpo) {
        send_delta(c, ev->text, ev->len, false, NULL, lpo, NULL);
    }
    if (!j->paused && http_request_backlog(j->req) > API_PAUSE_BYTES) {
        j->paused = true;
        for (int i = 0; i < j->n; i++)
            if (j->ch[i].sr) sch_req_set_paused(j->ch[i].sr, true);
    }
}

static void on_event(sch_req *r, const sch_event *ev, void *ud)
{
    (void)r;
    api_choice *c = ud;
    api_job *j = c->j;
    if (ev->kind == SCH_EV_TOKEN) {
        on_token(c, ev);
        return;
    }
    c->sr = NULL; /* the scheduler frees it after this final event */
    j->n_live--;
    if (!j->ended) {
        if (ev->kind == SCH_EV_DONE)
            on_done(c, ev);
        else
            on_error(c, ev);
        bool all = true;
        for (int i = 0; i < j->n; i++)
            all = all && j->ch[i].finished;
        if (all && !j->ended) {
            j->ended = true;
            job_finish(j);
        }
    }
    if (j->n_live == 0) job_free(j);
}

static void on_abort(http_request *req, void *ud)
{
    (void)req;
    api_job *j = ud;
    cancel_others(j, NULL);
    job_free(j);
}

static void on_drain(http_request *req, size_t backlog, void *ud)
{
    (void)req;
    api_job *j = ud;
    if (j->paused && backlog < API_RESUME_BYTES) {
        j->paused = false;
        for (int i = 0; i < j->n; i++)
            if (j->ch[i].sr) sch_req_set_paused(j->ch[i].sr, false);
    }
}

/* ---------------------------------------------------------------- prompt building */

/* Appends the ids of text (no BOS, no special-token parsing) to ids[*n]; 0 or negative. */
static int append_text_ids(const api_server *a, const char *text, size_t len, int32_t **ids,
                           int32_t *n)
{
    int32_t k = tok_encode(a->vocab, text, len, false, false, NULL, 0);
    if (k < 0) return k;
    int32_t *nv = realloc(*ids, ((size_t)*n + (size_t)k + 2) * sizeof(int32_t));
    if (!nv) return KS_ERR_NOMEM;
    *ids = nv;
    if (tok_encode(a->vocab, text, len, false, false, nv + *n, k) != k) return KS_ERR_INTERNAL;
    *n += k;
    return 0;
}

/* Fill-in-the-middle: [BOS] <fim_prefix> prompt <fim_suffix> suffix <fim_middle>, the order
 * llama-server's /infill uses for these tokens. Returns the count or -1 with msg set. */
static int32_t fim_prompt(const api_server *a, json_t *p, const api_gen *g, int32_t **ids,
                          char *msg, size_t cap)
{
    if (!json_is_string(p)) {
        snprintf(msg, cap, "'prompt' must be a string when 'suffix' is given");
        return -1;
    }
    int32_t n = 0;
    *ids = malloc(4 * sizeof(int32_t));
    if (!*ids) return -1;
    if (tok_add_bos(a->vocab)) (*ids)[n++] = tok_bos(a->vocab);
    (*ids)[n++] = tok_fim_token(a->vocab, TOK_FIM_PRE);
    int rc = append_text_ids(a, json_string_value(p), json_string_length(p), ids, &n);
    if (!rc) (*ids)[n++] = tok_fim_token(a->vocab, TOK_FIM_SUF);
    if (!rc) rc = append_text_ids(a, g->suffix, g->suffix_len, ids, &n);
    if (!rc) (*ids)[n++] = tok_fim_token(a->vocab, TOK_FIM_MID);
    if (rc) snprintf(msg, cap, "cannot tokenize the prompt and suffix");
    return rc ? -1 : n;
}

/* The prompt before tokenization: chat text with its plain (user) ranges, a completion
 * string (plain unless parse_special), or ids (a list of ids, or fill-in-the-middle). Returns
 * 0, or KS_ERR_INVALID / KS_ERR_NOMEM with msg and *param set. No tokenization of text here:
 * that runs on a worker thread (tokenize_work). */
static int prompt_source(api_server *a, json_t *root, bool chat, bool with_tools, const api_gen *g,
                         api_prompt *pr, char *msg, size_t cap, char *param, size_t pcap)
{
    memset(pr, 0, sizeof(*pr));
    snprintf(param, pcap, "%s", chat ? "messages" : "prompt");
    msg[0] = 0;
    if (chat) return api_chat_prompt(a, root, with_tools, pr, msg, cap, param, pcap);
    json_t *p = json_object_get(root, "prompt");
    json_t *ps = json_object_get(root, "parse_special");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    int32_t n = -1;
    if (ps && !json_is_boolean(ps) && !json_is_null(ps)) {
        snprintf(msg, cap, "'parse_special' must be a boolean");
    } else if (g->suffix) {
        n = fim_prompt(a, p, g, &pr->ids, msg, cap);
    } else if (json_is_string(p) && json_string_length(p) > 0) {
        /* user text: control tokens written in it stay text unless parse_special */
        pr->len = json_string_length(p);
        pr->text = malloc(pr->len + 1);
        pr->plain = malloc(sizeof(tok_span));
        if (!pr->text || !pr->plain) {
            api_prompt_free(pr);
            snprintf(msg, cap, "out of memory");
            return KS_ERR_NOMEM;
        }
        memcpy(pr->text, json_string_value(p), pr->len + 1);
        pr->plain[0] = (tok_span){0, pr->len};
        pr->n_plain = json_is_true(ps) ? 0 : 1;
        return 0;
    } else if (json_is_string(p)) {
        snprintf(msg, cap, "the prompt is empty");
    } else if (json_is_array(p)) {
        size_t k;
        json_t *v;
        bool all_int = json_array_size(p) > 0;
        json_array_foreach(p, k, v) all_int = all_int && json_is_integer(v);
        if (all_int) {
            n = api_read_ids(a, p, &pr->ids);
            if (n < 0) snprintf(msg, cap, "'prompt' holds an invalid token id");
        } else {
            snprintf(msg, cap,
                     json_array_size(p) == 0 ? "the prompt is empty"
                                             : "'prompt' must be a string or a list of token ids "
                                               "(several prompts are not supported)");
        }
    } else {
        snprintf(msg, cap, "'prompt' must be a string or a list of token ids");
    }
    if (n < 0) {
        free(pr->ids);
        pr->ids = NULL;
        return KS_ERR_INVALID;
    }
    pr->n_ids = n;
    return 0;
}

/* echo: the prompt as text (the request's string, or its token ids decoded). 0 or -1. */
static int echo_text(const api_server *a, json_t *root, const int32_t *ids, int32_t n, api_job *j)
{
    json_t *p = json_object_get(root, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        j->echo_len = json_string_length(p);
        j->echo = malloc(j->echo_len + 1);
        if (j->echo) memcpy(j->echo, json_string_value(p), j->echo_len + 1);
        return j->echo ? 0 : -1;
    }
    int32_t len = tok_decode(a->vocab, ids, n, false, NULL, 0);
    if (len < 0 || !(j->echo = malloc((size_t)len + 1))) return -1;
    j->echo_len = (size_t)tok_decode(a->vocab, ids, n, false, j->echo, len);
    return 0;
}

/* Submits one scheduler request per choice. Choice i samples with seed + i; choices after
 * the first wait for the first one's prompt to be computed, then start from its blocks in the
 * prefix cache (a policy whose blocks cannot be shared computes its own). On failure every
 * submitted request is cancelled and the status returned. */
static int submit_all(api_job *j, api_gen *g, const int32_t *ids, int32_t n)
{
    api_server *a = j->a;
    sch_group *grp = j->n > 1 ? sch_group_create() : NULL;
    int rc = 0;
    for (int i = 0; i < j->n && !rc; i++) {
        api_choice *c = &j->ch[i];
        sch_request_params sp = {.prompt = ids,
                                 .n_prompt = n,
                                 .max_tokens = g->max_tokens,
                                 .stops = g->stops,
                                 .n_stops = g->n_stops,
                                 .sampling = g->sampling,
                                 .policy = g->policy,
                                 .policy_config_free = free,
                                 .arrival = ks_time_now(),
                                 .group = grp,
                                 .group_follower = i > 0,
                                 .render_special = j->tools && a->tool_format != API_TOOLS_HERMES,
                                 .bias_ids = g->bias_ids,
                                 .bias = g->bias,
                                 .n_bias = g->n_bias,
                                 .on_event = on_event,
                                 .ud = c};
        if (i == 0) /* the live view follows the first choice (kv_feed.c) */
            sp.view_tag = http_request_header(j->req, "x-kv-view");
        sp.sampling.seed += (uint64_t)i;
        if (i == 0) { /* the first choice takes the compiled grammar; the others compile theirs */
            sp.grammar = g->grammar;
            g->grammar = NULL;
        } else if (g->grammar_src) {
            ks_diag d;
            if ((rc = gram_compile(g->grammar_src, g->grammar_len, &sp.grammar, &d))) break;
        }
        if (g->policy_config) {
            sp.policy_config = malloc(sizeof(kv_policy_config));
            if (!sp.policy_config) {
                rc = KS_ERR_NOMEM;
                break;
            }
            memcpy(sp.policy_config, g->policy_config, sizeof(kv_policy_config));
        }
        rc = sch_submit(a->sch, &sp, &c->sr);
        j->n_live += rc == 0;
    }
    sch_group_release(grp);
    if (rc) cancel_others(j, NULL);
    return rc;
}

/* tool_choice "required" or a named function: the output is held to one call in the
 * template's format, its arguments to the tool's parameters schema. 0, or -1 with msg. */
static int tool_constraint(const api_server *a, api_gen *g, json_t *tools, const char *forced,
                           char *msg, size_t cap, const char **param)
{
    if (g->grammar) {
        snprintf(msg, cap,
                 "'tool_choice' that requires a call cannot be combined with "
                 "response_format, grammar or json_schema");
        *param = "tool_choice";
        return -1;
    }
    char *gbnf = NULL;
    ks_diag d;
    ks_diag_clear(&d);
    int rc = api_tool_grammar((api_tool_format)a->tool_format, tools, forced, &gbnf, &d);
    if (!rc && (rc = gram_compile(gbnf, strlen(gbnf), &g->grammar, &d)) == 0) {
        g->grammar_src = gbnf;
        g->grammar_len = strlen(gbnf);
        return 0;
    }
    free(gbnf);
    snprintf(msg, cap, "%.400s", d.msg);
    *param = "tools";
    return -1;
}

/* A request between parsing and submission: its prompt is tokenized on a libuv worker thread
 * (once), so that a long prompt never stalls the loop and every other connection. The
 * request's JSON is kept (g points into it) until it is submitted or refused. */
typedef struct api_pending {
    uv_work_t work;
    api_server *a;
    http_request *req;
    json_t *root;
    api_gen g;
    api_prompt prompt;
    bool chat, with_tools;
    int rc;
    bool aborted; /* the client went away while tokenizing */
} api_pending;

static void tokenize_work(uv_work_t *w)
{
    api_pending *p = w->data;
    api_prompt *pr = &p->prompt;
    if (pr->ids) return; /* ids given, or fill-in-the-middle */
    p->rc = tok_encode_ex(p->a->vocab, pr->text, pr->len, true, pr->plain, pr->n_plain, &pr->ids,
                          &pr->n_ids);
}

static void pending_abort(http_request *req, void *ud)
{
    (void)req;
    ((api_pending *)ud)->aborted = true;
}

static void pending_free(api_pending *p)
{
    p->a->n_jobs--;
    api_gen_release(&p->g);
    api_prompt_free(&p->prompt);
    json_decref(p->root);
    free(p);
}

/* Creates the job and submits its choices; answers the request itself on failure. */
static void gen_submit(api_pending *p)
{
    api_server *a = p->a;
    http_request *req = p->req;
    const int32_t *ids = p->prompt.ids;
    const int32_t n = p->prompt.n_ids;
    char msg[256];
    api_client *cl = a->cfg->server.max_client_concurrent > 0 ? client_acquire(a, req) : NULL;
    if (a->cfg->server.max_client_concurrent > 0 && !cl) {
        snprintf(msg, sizeof(msg),
                 "too many requests in flight from this client (limit %d: "
                 "server.max_client_concurrent)",
                 a->cfg->server.max_client_concurrent);
        api_respond_error(a, req, 429, msg, NULL);
        return;
    }
    api_job *j = calloc(1, sizeof(*j) + (size_t)p->g.n * sizeof(api_choice));
    if (!j || (p->g.echo && !p->chat && echo_text(a, p->root, ids, n, j))) {
        client_release(a, cl);
        if (j) free(j->echo);
        free(j);
        api_respond_error(a, req, 500, "out of memory", NULL);
        return;
    }
    j->client = cl;
    j->a = a;
    j->req = req;
    j->chat = p->chat;
    j->stream = p->g.stream;
    j->include_usage = p->g.include_usage;
    j->logprobs = p->g.logprobs;
    j->tools = p->with_tools;
    j->n = p->g.n;
    j->created = (long long)time(NULL);
    snprintf(j->id, sizeof(j->id), "%s-%llu", p->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)++a->next_id);
    for (int i = 0; i < j->n; i++) {
        j->ch[i].j = j;
        j->ch[i].index = i;
        j->ch[i].lp = p->g.logprobs ? json_array() : NULL;
        api_tool_stream_init(&j->ch[i].ts, (api_tool_format)a->tool_format,
                             a->next_id * 0x9e3779b97f4a7c15ull + (uint64_t)i);
    }
    for (int i = 0; !j->stream && j->echo_len && i < j->n; i++)
        append_text(&j->ch[i], j->echo, j->echo_len);
    a->n_jobs++;
    int rc = submit_all(j, &p->g, ids, n);
    if (rc) {
        job_free(j);
        if (rc == KS_ERR_FULL)
            api_respond_error(a, req, 429, "too many requests queued", NULL);
        else
            api_respond_error(a, req, rc == KS_ERR_INVALID ? 400 : 500, ks_status_str(rc), NULL);
        return;
    }
    http_request_set_callbacks(req, on_abort, on_drain, j);
}

/* Back on the loop: checks the prompt's length, then submits. */
static void tokenize_done(uv_work_t *w, int status)
{
    api_pending *p = w->data;
    api_server *a = p->a;
    char msg[512];
    const int32_t n = p->prompt.n_ids;
    if (p->aborted) {
        pending_free(p);
        return;
    }
    http_request_set_callbacks(p->req, NULL, NULL, NULL);
    if (status < 0 || p->rc) {
        snprintf(msg, sizeof(msg), "tokenization failed: %s", ks_status_str(p->rc));
        api_respond_error(a, p->req, 500, msg, NULL);
    } else if (n == 0) {
        api_respond_error(a, p->req, 400, "the prompt is empty", p->chat ? "messages" : "prompt");
    } else if (n > a->max_prompt || n >= a->n_ctx) {
        snprintf(msg, sizeof(msg),
                 "ctx limit: the prompt has %d tokens, more than the limit of %d tokens "
                 "(model.ctx = %d, limits.max_prompt_tokens = %d); raise model.ctx in the "
                 "config (and limits.max_prompt_tokens if set) above %d",
                 n, KS_MIN(a->max_prompt, a->n_ctx - 1), a->n_ctx, a->max_prompt, n);
        api_respond_error(a, p->req, 400, msg, p->chat ? "messages" : "prompt");
    } else if (!a->sch || a->shutting_down) {
        api_respond_error(a, p->req, 503, "the server is shutting down", NULL);
    } else if (sch_prompt_fits(a->sch, p->g.policy ? p->g.policy_config : NULL, n, msg,
                               sizeof(msg))) {
        api_respond_error(a, p->req, 400, msg, "prompt");
    } else {
        gen_submit(p);
    }
    pending_free(p);
}

void api_gen_handle(api_server *a, http_request *req, bool chat)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    char msg[512], pname[64];
    const char *param = NULL;
    api_tool_choice choice = API_TOOL_CHOICE_AUTO;
    const char *forced = NULL;
    json_t *tools = json_object_get(root, "tools");
    api_pending *p = calloc(1, sizeof(*p));
    if (!p) {
        json_decref(root);
        api_respond_error(a, req, 500, "out of memory", NULL);
        return;
    }
    p->a = a;
    p->req = req;
    p->root = root;
    p->chat = chat;
    a->n_jobs++; /* a shutdown waits for it like for a running request */
    if (api_gen_parse(a, root, chat, &p->g, msg, sizeof(msg), &param) ||
        (chat && api_tools_parse(root, &choice, &forced, msg, sizeof(msg), &param)) ||
        (choice == API_TOOL_CHOICE_REQUIRED &&
         tool_constraint(a, &p->g, tools, forced, msg, sizeof(msg), &param))) {
        api_respond_error(a, req, 400, msg, param);
        pending_free(p);
        return;
    }
    p->with_tools = chat && json_is_array(tools) && json_array_size(tools) > 0 &&
                    choice != API_TOOL_CHOICE_NONE;
    int rc = prompt_source(a, root, chat, p->with_tools, &p->g, &p->prompt, msg, sizeof(msg), pname,
                           sizeof(pname));
    if (rc) {
        api_respond_error(a, req, rc == KS_ERR_NOMEM ? 500 : 400, msg[0] ? msg : "invalid prompt",
                          rc == KS_ERR_NOMEM ? NULL : pname);
        pending_free(p);
        return;
    }
    p->work.data = p;
    http_request_set_callbacks(req, pending_abort, NULL, p);
    if (uv_queue_work(a->loop, &p->work, tokenize_work, tokenize_done) == 0) return;
    http_request_set_callbacks(req, NULL, NULL, NULL);
    api_respond_error(a, req, 500, "cannot queue the tokenization", NULL);
    pending_free(p);
}

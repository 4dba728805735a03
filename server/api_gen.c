/* api_gen.c - /v1/completions and /v1/chat/completions: build the prompt (text, token ids
 * or chat messages through the model's chat template), submit it to the scheduler, and turn
 * the scheduler's events into one JSON response or an SSE stream of OpenAI chunks.
 *
 * Stream shape (OpenAI): for chat a first chunk carries {"role":"assistant"}; each token
 * with text is one chunk; the last chunk has finish_reason; a usage chunk (choices: []) when
 * stream_options.include_usage; then `data: [DONE]`.
 *
 * A job lives from a successful sch_submit until the scheduler's final event (then the HTTP
 * response ends) or until the client disconnects (then the scheduler request is cancelled).
 * Streams start lazily on the first event, so a request that never got KV capacity can still
 * be answered with a real 503 status. Backpressure: when a client's socket backlog passes
 * API_PAUSE_BYTES the job pauses its sequence; the drain callback resumes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_server.h"
#include "sse.h"

#define API_PAUSE_BYTES (256 * 1024)
#define API_RESUME_BYTES (64 * 1024)

typedef struct api_job {
    api_server *a;
    http_request *req;
    sch_req *sr;
    bool chat, stream, include_usage, logprobs;
    bool started, paused;
    char id[48];
    long long created;
    char *text; /* non-streaming: the whole completion */
    size_t text_len, text_cap;
    json_t *lp; /* non-streaming: logprobs entries */
    double arrival;
    struct api_client *client; /* counted in a->clients */
} api_job;

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
    if (auth) snprintf(buf, cap, "key:%s", auth);
    else if (http_request_peer(req, buf, cap)) snprintf(buf, cap, "?");
}

/* Counts one more request for the client; NULL when it is at its limit (or no memory). */
static api_client *client_acquire(api_server *a, http_request *req)
{
    char id[300];
    client_id(req, id, sizeof(id));
    api_client *c = a->clients;
    while (c && strcmp(c->id, id)) c = c->next;
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
    free(j->text);
    json_decref(j->lp);
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
            json_array_append_new(top, json_pack("{s:o, s:f}", "token", p, "logprob",
                                                 (double)ev->top_logprobs[i]));
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
    json_array_foreach(entries, i, e) {
        json_array_append(toks, json_object_get(e, "token"));
        json_array_append(lps, json_object_get(e, "logprob"));
        json_array_append(tops, json_object_get(e, "top_logprobs"));
    }
    return json_pack("{s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs",
                     tops);
}

static json_t *choice(const api_job *j, const char *text, size_t len, bool role, json_t *lp,
                      const char *finish)
{
    json_t *c = json_pack("{s:i}", "index", 0);
    if (j->chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (len || role) json_object_set_new(delta, "content", api_json_text(text, len));
        json_object_set_new(c, "delta", delta);
    } else {
        json_object_set_new(c, "text", api_json_text(text, len));
    }
    json_object_set_new(c, "logprobs", lp ? lp : json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    return c;
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

static void send_choice(api_job *j, const char *text, size_t len, bool role, json_t *lp,
                        const char *finish)
{
    json_t *arr = json_array();
    json_array_append_new(arr, choice(j, text, len, role, lp, finish));
    send_event(j, chunk(j, arr));
}

static void stream_start(api_job *j)
{
    if (j->started) return;
    j->started = true;
    (void)http_stream_start(j->req, 200, "text/event-stream");
    if (j->chat) send_choice(j, "", 0, true, NULL, NULL);
}

static void append_text(api_job *j, const char *t, size_t n)
{
    if (j->text_len + n + 1 > j->text_cap) {
        size_t nc = (j->text_len + n + 1) * 2;
        char *nt = realloc(j->text, nc);
        if (!nt) return;
        j->text = nt;
        j->text_cap = nc;
    }
    memcpy(j->text + j->text_len, t, n);
    j->text_len += n;
}

static void on_done(api_job *j, const sch_event *ev)
{
    const char *finish = ev->finish == SCH_FINISH_LENGTH ? "length" : "stop";
    if (j->stream) {
        stream_start(j);
        if (ev->len) send_choice(j, ev->text, ev->len, false, NULL, NULL);
        send_choice(j, "", 0, false, NULL, finish);
        if (j->include_usage) {
            json_t *c = chunk(j, json_array());
            json_object_set_new(c, "usage", api_usage_json(&ev->usage));
            send_event(j, c);
        }
        (void)http_stream_write(j->req, SSE_DONE, strlen(SSE_DONE));
        metrics_count_request(j->a->metrics, 200);
        (void)http_stream_end(j->req);
        return;
    }
    append_text(j, ev->text, ev->len);
    json_t *c = json_pack("{s:i}", "index", 0);
    json_t *text = api_json_text(j->text ? j->text : "", j->text_len);
    if (j->chat)
        json_object_set_new(c, "message",
                            json_pack("{s:s, s:o}", "role", "assistant", "content", text));
    else
        json_object_set_new(c, "text", text);
    json_object_set_new(c, "logprobs", j->logprobs ? lp_object(j, j->lp) : json_null());
    json_object_set_new(c, "finish_reason", json_string(finish));
    json_t *root = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", j->id, "object",
                             j->chat ? "chat.completion" : "text_completion", "created",
                             (json_int_t)j->created, "model", j->a->model_id, "choices", c,
                             "usage", api_usage_json(&ev->usage));
    api_respond_json(j->a, j->req, 200, root);
}

static void on_event(sch_req *r, const sch_event *ev, void *ud)
{
    (void)r;
    api_job *j = ud;
    if (ev->kind == SCH_EV_TOKEN) {
        json_t *lp = j->logprobs ? lp_entry(j, ev) : NULL;
        if (!j->stream) {
            append_text(j, ev->text, ev->len);
            if (lp) json_array_append_new(j->lp, lp);
            return;
        }
        stream_start(j);
        if (ev->len || lp) {
            json_t *lpo = NULL;
            if (lp) {
                json_t *arr = json_array();
                json_array_append_new(arr, lp);
                lpo = lp_object(j, arr);
                json_decref(arr);
            }
            send_choice(j, ev->text, ev->len, false, lpo, NULL);
        }
        if (!j->paused && http_request_backlog(j->req) > API_PAUSE_BYTES) {
            j->paused = true;
            sch_req_set_paused(j->sr, true);
        }
        return;
    }
    if (ev->kind == SCH_EV_DONE) {
        on_done(j, ev);
    } else if (!j->started) {
        api_respond_error(j->a, j->req, ev->status, ev->message ? ev->message : "failed", NULL);
    } else {
        size_t len;
        char *body = http_error_body(ev->status, ev->message, &len);
        char *framed = body ? sse_frame(body, len, &len) : NULL;
        if (framed) (void)http_stream_write(j->req, framed, len);
        free(framed);
        free(body);
        metrics_count_request(j->a->metrics, ev->status);
        (void)http_stream_end(j->req);
    }
    job_free(j);
}

static void on_abort(http_request *req, void *ud)
{
    (void)req;
    api_job *j = ud;
    sch_req_cancel(j->sr);
    job_free(j);
}

static void on_drain(http_request *req, size_t backlog, void *ud)
{
    (void)req;
    api_job *j = ud;
    if (j->paused && backlog < API_RESUME_BYTES) {
        j->paused = false;
        sch_req_set_paused(j->sr, false);
    }
}

/* ---------------------------------------------------------------- prompt building */

/* Roles a message may have; the templates know these (others would be written verbatim
 * into the prompt, a way to forge turns). */
static bool role_known(const char *r)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < KS_ARRAY_LEN(roles); i++)
        if (!strcmp(r, roles[i])) return true;
    return false;
}

#define CHAT_FAIL(field, ...)                                                                  \
    do {                                                                                       \
        snprintf(msg, cap, __VA_ARGS__);                                                       \
        snprintf(param, pcap, "messages[%zu].%s", i, field);                                   \
        return KS_ERR_INVALID;                                                                 \
    } while (0)

/* Checks message i and points *content at its text (into the JSON, or *owned, malloc'd, for
 * a list of text parts). */
static int chat_msg_read(json_t *e, size_t i, tok_chat_msg *m, char **owned, char *msg,
                         size_t cap, char *param, size_t pcap)
{
    if (!json_is_object(e)) CHAT_FAIL("role", "messages[%zu] must be an object", i);
    json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
    if (!json_is_string(role)) CHAT_FAIL("role", "messages[%zu].role must be a string", i);
    m->role = json_string_value(role);
    if (!role_known(m->role))
        CHAT_FAIL("role", "messages[%zu].role '%.40s' is not one of system, developer, user, "
                  "assistant, tool", i, m->role);
    if (json_is_string(content)) {
        m->content = json_string_value(content);
        if (strlen(m->content) != json_string_length(content))
            CHAT_FAIL("content", "messages[%zu].content must not contain NUL characters", i);
        return 0;
    }
    bool calls = json_is_array(json_object_get(e, "tool_calls"));
    if ((!content || json_is_null(content)) && !strcmp(m->role, "assistant") && calls) {
        m->content = "";
        return 0;
    }
    if (!json_is_array(content))
        CHAT_FAIL("content", "messages[%zu].content must be a string or a list of text parts%s",
                  i, content ? "" : " (it is missing)");
    size_t k, total = 1;
    json_t *part;
    json_array_foreach(content, k, part) {
        json_t *t = json_object_get(part, "text"), *ty = json_object_get(part, "type");
        if (!json_is_object(part) || (ty && !(json_is_string(ty) &&
                                              !strcmp(json_string_value(ty), "text"))))
            CHAT_FAIL("content", "messages[%zu].content[%zu] must be {\"type\": \"text\", "
                      "\"text\": string} (other part types are not supported)", i, k);
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
            CHAT_FAIL("content", "messages[%zu].content[%zu].text must be a string", i, k);
        total += json_string_length(t);
    }
    *owned = calloc(1, total);
    if (!*owned) {
        snprintf(msg, cap, "out of memory");
        return KS_ERR_NOMEM;
    }
    size_t at = 0;
    json_array_foreach(content, k, part) {
        json_t *t = json_object_get(part, "text");
        memcpy(*owned + at, json_string_value(t), json_string_length(t));
        at += json_string_length(t);
    }
    m->content = *owned;
    return 0;
}

/* Where the template put each message's text: the messages are formatted once with sentinel
 * contents and the real contents substituted at the sentinels; if that rebuilds the real
 * prompt exactly, the substituted ranges are the user text (plain), everything else is the
 * template's. Returns the range count, CHAT_TRANSFORMED when the template transformed the
 * text, or KS_ERR_NOMEM. */
#define CHAT_TRANSFORMED (-1000L)
static long chat_spans(const api_server *a, const tok_chat_msg *m, size_t n, const char *real,
                       tok_span **out)
{
    tok_chat_msg *sm = calloc(n, sizeof(*sm));
    char(*tags)[32] = calloc(n, sizeof(*tags));
    tok_span *sp = calloc(n, sizeof(*sp));
    char *sent = NULL;
    long ok = KS_ERR_NOMEM;
    if (!sm || !tags || !sp) goto done;
    for (size_t i = 0; i < n; i++) {
        snprintf(tags[i], sizeof(tags[i]), "\x1e" "kvs%zu" "\x1f", i);
        sm[i] = (tok_chat_msg){.role = m[i].role, .content = tags[i]};
    }
    sent = tok_chat_format(a->chat, sm, n, true, a->vocab);
    if (!sent) goto done;
    ok = CHAT_TRANSFORMED;
    const char *at = sent, *r = real;
    long ns = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = strstr(at, tags[i]);
        if (!t) continue; /* a template may drop a message */
        size_t pre = (size_t)(t - at), cl = strlen(m[i].content);
        if (strncmp(r, at, pre) || strncmp(r + pre, m[i].content, cl)) goto done;
        sp[ns++] = (tok_span){(size_t)(r + pre - real), cl};
        r += pre + cl;
        at = t + strlen(tags[i]);
    }
    if (strcmp(r, at)) goto done;
    ok = ns;
    *out = sp;
    sp = NULL;
done:
    free(sp);
    free(sent);
    free(tags);
    free(sm);
    return ok;
}

int api_chat_prompt(const api_server *a, json_t *msgs, api_prompt *out, char *msg, size_t cap,
                    char *param, size_t pcap)
{
    memset(out, 0, sizeof(*out));
    size_t n = json_array_size(msgs), i = 0;
    snprintf(param, pcap, "messages");
    if (!json_is_array(msgs) || n == 0) {
        snprintf(msg, cap, "'messages' must be a non-empty list");
        return KS_ERR_INVALID;
    }
    tok_chat_msg *m = calloc(n, sizeof(*m));
    char **owned = calloc(n, sizeof(char *));
    int rc = KS_ERR_NOMEM;
    if (!m || !owned) goto done;
    for (i = 0; i < n; i++)
        if ((rc = chat_msg_read(json_array_get(msgs, i), i, &m[i], &owned[i], msg, cap, param,
                                pcap)))
            goto done;
    rc = KS_ERR_NOMEM;
    out->text = tok_chat_format(a->chat, m, n, true, a->vocab);
    if (!out->text) goto done;
    out->len = strlen(out->text);
    long ns = chat_spans(a, m, n, out->text, &out->plain);
    if (ns == KS_ERR_NOMEM) goto done;
    if (ns == CHAT_TRANSFORMED) { /* refuse control-token text rather than parse it */
        for (i = 0; i < n; i++)
            if (tok_text_has_control(a->vocab, m[i].content, strlen(m[i].content))) {
                snprintf(msg, cap, "messages[%zu].content holds a control token's text, which "
                         "this chat template cannot keep as plain text", i);
                snprintf(param, pcap, "messages[%zu].content", i);
                rc = KS_ERR_INVALID;
                goto done;
            }
        ns = 0;
    }
    out->n_plain = (size_t)ns;
    rc = 0;
done:
    for (size_t k = 0; owned && k < n; k++) free(owned[k]);
    free(owned);
    free(m);
    if (rc) {
        api_prompt_free(out);
        if (rc == KS_ERR_NOMEM) snprintf(msg, cap, "out of memory");
    }
    return rc;
}

void api_prompt_free(api_prompt *p)
{
    free(p->text);
    free(p->plain);
    free(p->ids);
    memset(p, 0, sizeof(*p));
}

/* The prompt of /v1/completions: a string (user text: plain unless parse_special), one
 * string in a list, or a list of token ids. No tokenization here (see tokenize_work). */
static int completion_prompt(const api_server *a, json_t *root, api_prompt *out, char *msg,
                             size_t cap)
{
    memset(out, 0, sizeof(*out));
    json_t *p = json_object_get(root, "prompt");
    json_t *ps = json_object_get(root, "parse_special");
    if (ps && !json_is_boolean(ps) && !json_is_null(ps)) {
        snprintf(msg, cap, "'parse_special' must be a boolean");
        return KS_ERR_INVALID;
    }
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (json_string_length(p) == 0) {
            snprintf(msg, cap, "the prompt is empty");
            return KS_ERR_INVALID;
        }
        out->len = json_string_length(p);
        out->text = malloc(out->len + 1);
        out->plain = json_is_true(ps) ? NULL : malloc(sizeof(tok_span));
        if (!out->text || (!json_is_true(ps) && !out->plain)) {
            api_prompt_free(out);
            snprintf(msg, cap, "out of memory");
            return KS_ERR_NOMEM;
        }
        memcpy(out->text, json_string_value(p), out->len + 1);
        if (out->plain) {
            out->plain[0] = (tok_span){0, out->len};
            out->n_plain = 1;
        }
        return 0;
    }
    size_t k;
    json_t *v;
    bool all_int = json_is_array(p) && json_array_size(p) > 0;
    json_array_foreach(p, k, v) all_int = all_int && json_is_integer(v);
    if (!all_int) {
        snprintf(msg, cap, json_is_array(p) && json_array_size(p) == 0
                               ? "the prompt is empty"
                               : "'prompt' must be a string or a list of token ids "
                                 "(several prompts are not supported)");
        return KS_ERR_INVALID;
    }
    out->n_ids = api_read_ids((api_server *)a, p, &out->ids);
    if (out->n_ids < 0) {
        out->ids = NULL;
        snprintf(msg, cap, "'prompt' holds an invalid token id (valid: 0..%d)",
                 tok_vocab_n_tokens(a->vocab) - 1);
        return KS_ERR_INVALID;
    }
    return 0;
}

/* A request between parsing and submission: its prompt is tokenized on a libuv worker thread
 * so that a long prompt never stalls the loop (and it is tokenized once). */
typedef struct api_pending {
    uv_work_t work;
    api_job *j;
    api_gen g;
    api_prompt prompt;
    int rc;
    bool aborted; /* the client went away while tokenizing */
} api_pending;

static void tokenize_work(uv_work_t *w)
{
    api_pending *p = w->data;
    api_prompt *pr = &p->prompt;
    if (pr->ids) return;
    p->rc = tok_encode_ex(p->j->a->vocab, pr->text, pr->len, true, pr->plain, pr->n_plain,
                          &pr->ids, &pr->n_ids);
}

static void pending_abort(http_request *req, void *ud)
{
    (void)req;
    ((api_pending *)ud)->aborted = true;
}

static void pending_free(api_pending *p)
{
    api_prompt_free(&p->prompt);
    api_gen_deinit(&p->g);
    free(p);
}

static int submit(api_pending *p, char *msg, size_t cap);

/* Back on the loop: checks the prompt's length and submits it. */
static void tokenize_done(uv_work_t *w, int status)
{
    api_pending *p = w->data;
    api_job *j = p->j;
    api_server *a = j->a;
    char msg[256];
    int http = 0;
    const int32_t n = p->prompt.n_ids;
    if (p->aborted) {
        job_free(j);
    } else if (status < 0 || p->rc) {
        http = 500;
        snprintf(msg, sizeof(msg), "tokenization failed: %s", ks_status_str(p->rc));
    } else if (n == 0) {
        http = 400;
        snprintf(msg, sizeof(msg), "the prompt is empty");
    } else if (n > a->max_prompt || n >= a->n_ctx) {
        http = 400;
        snprintf(msg, sizeof(msg),
                 "the prompt has %d tokens, more than the limit of %d tokens (context %d)", n,
                 KS_MIN(a->max_prompt, a->n_ctx - 1), a->n_ctx);
    } else if (!a->sch || a->shutting_down) {
        http = 503;
        snprintf(msg, sizeof(msg), "the server is shutting down");
    } else {
        http = submit(p, msg, sizeof(msg));
    }
    if (http) {
        http_request_set_callbacks(j->req, NULL, NULL, NULL);
        api_respond_error(a, j->req, http, msg, http == 400 ? (j->chat ? "messages" : "prompt")
                                                            : NULL);
        job_free(j);
    }
    pending_free(p);
}

/* Returns 0 (submitted: the job's callbacks now run) or the HTTP status to answer. */
static int submit(api_pending *p, char *msg, size_t cap)
{
    api_job *j = p->j;
    api_gen *g = &p->g;
    sch_request_params sp = {.prompt = p->prompt.ids, .n_prompt = p->prompt.n_ids,
                             .max_tokens = g->max_tokens, .stops = g->stops,
                             .n_stops = g->n_stops, .sampling = g->sampling,
                             .policy = g->policy, .policy_config = g->policy_config,
                             .policy_config_free = free, .arrival = j->arrival,
                             .on_event = on_event, .ud = j};
    g->policy_config = NULL; /* the scheduler owns it now, even on error */
    int rc = sch_submit(j->a->sch, &sp, &j->sr);
    if (rc == 0) {
        http_request_set_callbacks(j->req, on_abort, on_drain, j);
        return 0;
    }
    snprintf(msg, cap, "%s", rc == KS_ERR_FULL ? "too many requests queued" : ks_status_str(rc));
    return rc == KS_ERR_FULL ? 429 : rc == KS_ERR_INVALID ? 400 : 500;
}

static api_job *job_new(api_server *a, http_request *req, bool chat, const api_gen *g)
{
    api_job *j = calloc(1, sizeof(*j));
    if (!j || (g->logprobs && !(j->lp = json_array()))) {
        free(j);
        return NULL;
    }
    j->a = a;
    j->req = req;
    j->chat = chat;
    j->stream = g->stream;
    j->include_usage = g->include_usage;
    j->logprobs = g->logprobs;
    j->created = (long long)time(NULL);
    j->arrival = ks_time_now();
    snprintf(j->id, sizeof(j->id), "%s-%llu", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)++a->next_id);
    a->n_jobs++;
    return j;
}

void api_gen_handle(api_server *a, http_request *req, bool chat)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    char msg[512], param[64] = "";
    const char *pname = NULL;
    api_pending *p = calloc(1, sizeof(*p));
    if (!p) {
        api_respond_error(a, req, 500, "out of memory", NULL);
        goto done;
    }
    if (api_gen_parse(a, root, chat, &p->g, msg, sizeof(msg), &pname)) {
        api_respond_error(a, req, 400, msg, pname);
        goto fail;
    }
    int rc = chat ? api_chat_prompt(a, json_object_get(root, "messages"), &p->prompt, msg,
                                    sizeof(msg), param, sizeof(param))
                  : completion_prompt(a, root, &p->prompt, msg, sizeof(msg));
    if (rc) {
        api_respond_error(a, req, rc == KS_ERR_NOMEM ? 500 : 400, msg,
                          chat ? param : "prompt");
        goto fail;
    }
    /* the stop strings point into the JSON, which is freed below */
    if (api_gen_own_stops(&p->g)) {
        api_respond_error(a, req, 500, "out of memory", NULL);
        goto fail;
    }
    api_client *cl = a->cfg->server.max_client_concurrent > 0 ? client_acquire(a, req) : NULL;
    if (a->cfg->server.max_client_concurrent > 0 && !cl) {
        snprintf(msg, sizeof(msg), "too many requests in flight from this client (limit %d: "
                 "server.max_client_concurrent)", a->cfg->server.max_client_concurrent);
        api_respond_error(a, req, 429, msg, NULL);
        goto fail;
    }
    p->j = job_new(a, req, chat, &p->g);
    if (!p->j) {
        client_release(a, cl);
        api_respond_error(a, req, 500, "out of memory", NULL);
        goto fail;
    }
    p->j->client = cl;
    p->work.data = p;
    http_request_set_callbacks(req, pending_abort, NULL, p);
    if (uv_queue_work(a->loop, &p->work, tokenize_work, tokenize_done) == 0) goto done;
    http_request_set_callbacks(req, NULL, NULL, NULL);
    job_free(p->j);
    api_respond_error(a, req, 500, "cannot queue the tokenization", NULL);
fail:
    pending_free(p);
done:
    json_decref(root);
}

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
} api_job;

static void job_free(api_job *j)
{
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

static int32_t encode(const api_server *a, const char *text, size_t len, int32_t **out)
{
    int32_t n = tok_encode(a->vocab, text, len, true, true, NULL, 0);
    if (n < 0) return n;
    int32_t *ids = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!ids) return KS_ERR_NOMEM;
    if (tok_encode(a->vocab, text, len, true, true, ids, n) != n) {
        free(ids);
        return KS_ERR_INTERNAL;
    }
    *out = ids;
    return n;
}

char *api_chat_text(const api_server *a, json_t *msgs, char *msg, size_t cap)
{
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0) {
        snprintf(msg, cap, "'messages' must be a non-empty list");
        return NULL;
    }
    tok_chat_msg *m = calloc(n, sizeof(*m));
    char **owned = calloc(n, sizeof(char *));
    char *out = NULL;
    if (!m || !owned) goto done;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i);
        json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_string(role)) {
            snprintf(msg, cap, "messages[%zu].role must be a string", i);
            goto done;
        }
        m[i].role = json_string_value(role);
        if (json_is_string(content)) {
            m[i].content = json_string_value(content);
        } else if (json_is_array(content)) { /* [{"type":"text","text":...}, ...] */
            size_t k, total = 1;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *t = json_object_get(part, "text");
                if (!json_is_string(t)) {
                    snprintf(msg, cap, "messages[%zu].content parts must be text", i);
                    goto done;
                }
                total += json_string_length(t);
            }
            owned[i] = calloc(1, total);
            if (!owned[i]) goto done;
            json_array_foreach(content, k, part) strcat(owned[i], json_string_value(json_object_get(part, "text")));
            m[i].content = owned[i];
        } else if (json_is_null(content) || !content) {
            m[i].content = "";
        } else {
            snprintf(msg, cap, "messages[%zu].content must be a string", i);
            goto done;
        }
    }
    out = tok_chat_format(a->chat, m, n, true, a->vocab);
    if (!out) snprintf(msg, cap, "cannot format the chat messages");
done:
    for (size_t i = 0; owned && i < n; i++) free(owned[i]);
    free(owned);
    free(m);
    return out;
}

/* Builds the prompt ids; on failure answers 400 and returns -1. */
static int32_t build_prompt(api_server *a, http_request *req, json_t *root, bool chat,
                            int32_t **ids)
{
    char msg[256] = "";
    const char *param = chat ? "messages" : "prompt";
    int32_t n = -1;
    if (chat) {
        char *text = api_chat_text(a, json_object_get(root, "messages"), msg, sizeof(msg));
        if (text) n = encode(a, text, strlen(text), ids);
        free(text);
    } else {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
            p = json_array_get(p, 0);
        if (json_is_string(p)) {
            n = encode(a, json_string_value(p), json_string_length(p), ids);
        } else if (json_is_array(p)) {
            n = (int32_t)json_array_size(p) > 0 ? -1 : 0;
            size_t k;
            json_t *v;
            bool all_int = true;
            json_array_foreach(p, k, v) all_int = all_int && json_is_integer(v);
            if (all_int && json_array_size(p) > 0) {
                n = api_read_ids(a, p, ids);
                if (n < 0) snprintf(msg, sizeof(msg), "'prompt' holds an invalid token id");
            } else if (!all_int) {
                snprintf(msg, sizeof(msg), "'prompt' must be a string or a list of token ids "
                                           "(several prompts are not supported)");
            }
        } else {
            snprintf(msg, sizeof(msg), "'prompt' must be a string or a list of token ids");
        }
    }
    if (n == 0) {
        free(*ids);
        *ids = NULL;
        snprintf(msg, sizeof(msg), "the prompt is empty");
        n = -1;
    }
    if (n > 0 && (n > a->max_prompt || n >= a->n_ctx)) {
        snprintf(msg, sizeof(msg),
                 "the prompt has %d tokens, more than the limit of %d tokens (context %d)", n,
                 KS_MIN(a->max_prompt, a->n_ctx - 1), a->n_ctx);
        free(*ids);
        *ids = NULL;
        n = -1;
    }
    if (n < 0) api_respond_error(a, req, 400, msg[0] ? msg : "invalid prompt", param);
    return n;
}

void api_gen_handle(api_server *a, http_request *req, bool chat)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    api_gen g;
    char msg[512];
    const char *param = NULL;
    int32_t *ids = NULL;
    api_job *j = NULL;
    if (api_gen_parse(a, root, chat, &g, msg, sizeof(msg), &param)) {
        api_respond_error(a, req, 400, msg, param);
        goto done;
    }
    int32_t n = build_prompt(a, req, root, chat, &ids);
    if (n < 0) {
        free(g.policy_config);
        goto done;
    }
    j = calloc(1, sizeof(*j));
    if (!j || (g.logprobs && !(j->lp = json_array()))) {
        free(g.policy_config);
        api_respond_error(a, req, 500, "out of memory", NULL);
        goto done;
    }
    j->a = a;
    j->req = req;
    j->chat = chat;
    j->stream = g.stream;
    j->include_usage = g.include_usage;
    j->logprobs = g.logprobs;
    j->created = (long long)time(NULL);
    snprintf(j->id, sizeof(j->id), "%s-%llu", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)++a->next_id);
    sch_request_params sp = {.prompt = ids, .n_prompt = n, .max_tokens = g.max_tokens,
                             .stops = g.stops, .n_stops = g.n_stops, .sampling = g.sampling,
                             .policy = g.policy, .policy_config = g.policy_config,
                             .policy_config_free = free, .arrival = ks_time_now(),
                             .on_event = on_event, .ud = j};
    a->n_jobs++;
    int rc = sch_submit(a->sch, &sp, &j->sr);
    if (rc) {
        job_free(j);
        j = NULL;
        if (rc == KS_ERR_FULL) api_respond_error(a, req, 429, "too many requests queued", NULL);
        else api_respond_error(a, req, rc == KS_ERR_INVALID ? 400 : 500, ks_status_str(rc), NULL);
        goto done;
    }
    http_request_set_callbacks(req, on_abort, on_drain, j);
done:
    free(ids);
    json_decref(root);
}

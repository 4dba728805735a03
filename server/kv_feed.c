/* kv_feed.c - GET /v1/kv/stream: the live KV view of one sequence as server-sent events.
 *
 *     GET /v1/kv/stream?seq=ID          a sequence by id (as listed by GET /v1/kv)
 *     GET /v1/kv/stream?tag=TAG         the sequence whose completion request carried the
 *                                       header `X-KV-View: TAG` (it may start later)
 *     optional interval_ms=10..2000     how often the viewer polls for a frame (default 100)
 *     optional step=1 (with tag)        step mode: the sequence waits for this viewer at every
 *                                       step, so every step is seen (lapses 1 s after the
 *                                       viewer's last poll)
 *
 * Each viewer owns a libuv timer. On a tick it asks the scheduler for a frame newer than the
 * last one it sent (sch_view_lookup; asking is also what makes the worker build the next
 * frame, so frames are made at the viewer's pace, never per token); it then sends `data:`
 * with a JSON object holding only what changed: cells whose runs of kept positions changed
 * (as "keep the first k integers of the previous runs, then these"), new token texts (at most
 * KV_FEED_TOKENS per event), and the counters. A frame of a finished sequence is followed by
 * `event: end` and the stream ends; so does a sequence that disappears, a tag never seen
 * within KV_FEED_TAG_WAIT_S, or server shutdown. A slow client (socket backlog past
 * KV_FEED_BACKLOG) simply skips ticks, so frames coalesce instead of piling up.
 *
 * Memory: a viewer holds one reference to the last frame it sent (to diff against) and is
 * freed in its timer's close callback, after the request is gone (abort or end).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_server.h"
#include "kv_feed.h"
#include "sched_view.h"
#include "sse.h"

#define KV_FEED_TOKENS 4096       /* token texts per event */
#define KV_FEED_BACKLOG (1 << 20) /* bytes queued on the socket before ticks are skipped */
#define KV_FEED_TAG_WAIT_S 120.0

typedef struct kv_feed {
    api_server *a;
    http_request *req; /* NULL once the client went away or the stream ended */
    uv_timer_t timer;
    uint64_t id;
    char tag[SCH_VIEW_TAG_MAX];
    sch_view *prev; /* last frame sent */
    bool closing;
    bool step; /* step mode: the tagged sequence waits for this viewer at every step */
    int32_t toks_sent;
    double t_open;
} kv_feed;

static void feed_closed(uv_handle_t *h)
{
    kv_feed *f = h->data;
    sch_view_unref(f->prev);
    free(f);
}

/* Stops the timer and frees the viewer (after libuv closed the handle). */
static void feed_close(kv_feed *f)
{
    f->req = NULL;
    if (f->closing) return;
    f->closing = true;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, feed_closed);
}

static void feed_on_abort(http_request *req, void *ud)
{
    (void)req;
    feed_close(ud);
}

static void feed_send(kv_feed *f, json_t *obj, const char *event)
{
    if (!f->req) {
        json_decref(obj);
        return;
    }
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return;
    size_t len;
    char *framed = sse_frame(s, strlen(s), &len);
    free(s);
    if (!framed) return;
    if (event) {
        char head[64];
        int n = snprintf(head, sizeof(head), "event: %s\n", event);
        (void)http_stream_write(f->req, head, (size_t)n);
    }
    if (f->req) (void)http_stream_write(f->req, framed, len);
    free(framed);
}

static void feed_end(kv_feed *f, const char *reason)
{
    if (f->req) feed_send(f, json_pack("{s:s}", "reason", reason), "end");
    if (f->req) (void)http_stream_end(f->req); /* a failed write aborted it already */
    feed_close(f);
}

static json_t *int_array(const int32_t *v, int32_t n)
{
    json_t *a = json_array();
    for (int32_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* One changed cell: {"c": index, "k": ints kept from the previous runs, "r": the rest,
 * "n": tokens kept, "s": selected runs, "ss": their scores} or NULL when unchanged. */
static json_t *cell_delta(const kv_view_cell *old, const kv_view_cell *c, int32_t i)
{
    int32_t k = 0, n_old = old ? 2 * old->n_runs : 0, n_new = 2 * c->n_runs;
    while (k < n_old && k < n_new && old->runs[k] == c->runs[k])
        k++;
    bool sel_same = old && old->n_sel == c->n_sel &&
                    (c->n_sel <= 0 || !memcmp(old->sel, c->sel, 2 * (size_t)c->n_sel * 4));
    if (old && k == n_old && k == n_new && sel_same) return NULL;
    json_t *o = json_pack("{s:i, s:i, s:o, s:i}", "c", i, "k", k, "r",
                          int_array(c->runs + k, n_new - k), "n", c->n_kept);
    if (o && c->n_sel >= 0) {
        json_t *ss = json_array();
        for (int32_t j = 0; j < c->n_sel; j++)
            json_array_append_new(ss, json_real(c->sel_score[j]));
        json_object_set_new(o, "s", int_array(c->sel, 2 * c->n_sel));
        json_object_set_new(o, "ss", ss);
    }
    return o;
}

static json_t *cells_json(const sch_view *prev, const sch_view *v)
{
    json_t *cells = json_array();
    const kv_view *kv = v->kv;
    bool same_shape =
        prev && prev->kv->n_layer == kv->n_layer && prev->kv->n_head_kv == kv->n_head_kv;
    for (int32_t i = 0; cells && i < kv->n_layer * kv->n_head_kv; i++) {
        json_t *d = cell_delta(same_shape ? &prev->kv->cells[i] : NULL, &kv->cells[i], i);
        if (d) json_array_append_new(cells, d);
    }
    return cells;
}

/* Texts of tokens [f->toks_sent, ...) up to KV_FEED_TOKENS of them. */
static json_t *tokens_json(kv_feed *f, const sch_view *v)
{
    json_t *t = json_array();
    int32_t end = KS_MIN(v->n_tokens, f->toks_sent + KV_FEED_TOKENS);
    for (int32_t i = f->toks_sent; t && i < end; i++) {
        char buf[256];
        int32_t n = tok_piece(f->a->vocab, v->tokens[i], true, buf, (int32_t)sizeof(buf));
        json_array_append_new(t, api_json_text(buf, (size_t)KS_MAX(KS_MIN(n, 255), 0)));
    }
    json_t *o = json_pack("{s:i, s:o}", "from", f->toks_sent, "text", t);
    f->toks_sent = end;
    return o;
}

static json_t *frame_json(kv_feed *f, const sch_view *v)
{
    json_t *o = json_pack(
        "{s:I, s:I, s:s, s:b, s:b, s:i, s:i, s:I, s:i, s:i, s:f, s:f, s:I, s:I, s:o, s:o, s:o}",
        "seq", (json_int_t)v->seq_id, "version", (json_int_t)v->version, "policy", v->policy,
        "finished", v->finished, "reset", f->prev == NULL, "n_layer", v->kv->n_layer, "n_head_kv",
        v->kv->n_head_kv, "tokens_seen", (json_int_t)v->kv->tokens_seen, "prompt_tokens",
        v->n_prompt, "generated_tokens", v->n_generated, "ttft_ms",
        v->ttft_s >= 0 ? v->ttft_s * 1e3 : -1.0, "tokens_per_s", v->decode_tps, "sink",
        (json_int_t)v->sink, "window_from", (json_int_t)v->window_from, "budget",
        int_array(v->budget, v->kv->n_layer), "cells", cells_json(f->prev, v), "tokens",
        tokens_json(f, v));
    if (!o) return NULL;
    json_object_set_new(o, "pool",
                        json_pack("{s:I, s:I}", "bytes_used", (json_int_t)v->pool.bytes_used,
                                  "bytes_budget", (json_int_t)v->pool.bytes_budget));
    if (v->has_retrieval) {
        const kv_retrieval_stats *rs = &v->rs;
        json_object_set_new(
            o, "spill", /* the spill tier's stats (the block-retrieval policy) */
            json_pack("{s:f, s:I, s:I, s:I, s:I, s:i, s:i, s:i}", "hot_hit_rate", rs->hot_hit_rate,
                      "spill_bytes_read", (json_int_t)rs->bytes_read, "spill_bytes_written",
                      (json_int_t)rs->bytes_written, "blocks_ram", (json_int_t)rs->blocks_ram,
                      "blocks_disk", (json_int_t)rs->blocks_disk, "spill_layer0",
                      v->kv->spill_layer0, "spill_from", v->kv->spill_lo, "spill_to",
                      v->kv->spill_hi));
    }
    return o;
}

static void feed_tick(uv_timer_t *t)
{
    kv_feed *f = t->data;
    if (!f->req) return;
    if (f->a->shutting_down) {
        feed_end(f, "shutdown");
        return;
    }
    if (http_request_backlog(f->req) > KV_FEED_BACKLOG) return; /* let the client catch up */
    sch_view *v = NULL;
    uint64_t after = f->prev ? f->prev->version : 0;
    sch_view_state st =
        sch_view_lookup(f->a->sch, f->id, f->tag[0] ? f->tag : NULL, f->step, after, &v);
    if (st == SCH_VIEW_UNKNOWN) {
        feed_end(f, "gone");
        return;
    }
    bool more_tokens = f->prev && f->toks_sent < f->prev->n_tokens;
    if (st == SCH_VIEW_WAITING && !more_tokens) {
        if (!f->prev && f->tag[0] && ks_time_now() - f->t_open > KV_FEED_TAG_WAIT_S)
            feed_end(f, "timeout");
        else if (f->prev && f->prev->finished)
            feed_end(f, "finished");
        return;
    }
    if (!v) v = sch_view_ref(f->prev); /* only token texts are left to send */
    feed_send(f, frame_json(f, v), NULL);
    sch_view_unref(f->prev);
    f->prev = v;
    if (v->finished && f->toks_sent >= v->n_tokens) feed_end(f, "finished");
}

/* Reads `name=value` from the query string into out (empty when absent). */
static void query_get(const char *target, const char *name, char *out, size_t cap)
{
    out[0] = 0;
    const char *q = strchr(target, '?');
    size_t nl = strlen(name);
    while (q && *q) {
        q++;
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        if (len > nl && !strncmp(q, name, nl) && q[nl] == '=') {
            size_t vl = KS_MIN(len - nl - 1, cap - 1);
            memcpy(out, q + nl + 1, vl);
            out[vl] = 0;
            return;
        }
        q = end;
    }
}

/* Parses a decimal in [lo, hi]; false if malformed or out of range. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s[0] || strlen(s) > 19) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return v >= lo && v <= hi;
}

/* Validates the query; answers 400/404 itself and returns false on error. */
static bool feed_parse(api_server *a, http_request *req, kv_feed *f, uint64_t *interval)
{
    char seq[32], tag[SCH_VIEW_TAG_MAX + 1], iv[16], step[8];
    const char *target = http_request_target(req);
    query_get(target, "seq", seq, sizeof(seq));
    query_get(target, "tag", tag, sizeof(tag));
    query_get(target, "interval_ms", iv, sizeof(iv));
    query_get(target, "step", step, sizeof(step));
    if (step[0] && strcmp(step, "0") && strcmp(step, "1")) {
        api_respond_error(a, req, 400, "'step' must be 0 or 1", "step");
        return false;
    }
    f->step = !strcmp(step, "1");
    if (f->step && !tag[0]) {
        api_respond_error(a, req, 400, "'step' needs 'tag' (the viewer that started the sequence)",
                          "step");
        return false;
    }
    *interval = 100;
    if (iv[0] && !parse_u64(iv, 10, 2000, interval)) {
        api_respond_error(a, req, 400, "'interval_ms' must be an integer in 10..2000",
                          "interval_ms");
        return false;
    }
    if (tag[0]) {
        if (!sch_view_tag_ok(tag)) {
            api_respond_error(a, req, 400, "'tag' must be 8..47 characters of [A-Za-z0-9_-]",
                              "tag");
            return false;
        }
        memcpy(f->tag, tag, strlen(tag) + 1); /* checked: shorter than SCH_VIEW_TAG_MAX */
        return true;
    }
    if (!parse_u64(seq, 1, UINT64_MAX >> 1, &f->id)) {
        api_respond_error(a, req, 400, "give 'seq' (a sequence id from GET /v1/kv) or 'tag'",
                          "seq");
        return false;
    }
    sch_view *v = NULL;
    sch_view_state st = sch_view_lookup(a->sch, f->id, NULL, false, UINT64_MAX, &v);
    sch_view_unref(v);
    if (st == SCH_VIEW_UNKNOWN) {
        char msg[96];
        snprintf(msg, sizeof(msg), "no such sequence: %llu", (unsigned long long)f->id);
        api_respond_error(a, req, 404, msg, "seq");
        return false;
    }
    return true;
}

void kv_feed_handle(api_server *a, http_request *req)
{
    if (!a->sch) {
        api_respond_error(a, req, 503, "the model is still loading", NULL);
        return;
    }
    kv_feed *f = calloc(1, sizeof(*f));
    if (!f) {
        api_respond_error(a, req, 500, "out of memory", NULL);
        return;
    }
    uint64_t interval;
    if (!feed_parse(a, req, f, &interval)) {
        free(f);
        return;
    }
    f->a = a;
    f->req = req;
    f->t_open = ks_time_now();
    uv_timer_init(a->loop, &f->timer);
    f->timer.data = f;
    metrics_count_request(a->metrics, 200);
    http_request_set_callbacks(req, feed_on_abort, NULL, f);
    (void)http_stream_start(req, 200, "text/event-stream");
    uv_timer_start(&f->timer, feed_tick, 0, interval);
}

/* http.c - HTTP/1.1 connections: accept, read, parse with llhttp, enforce limits, write
 * responses (fixed-length or chunked streams), keep-alive and orderly close.
 *
 * Invariant: a connection has at most one request being answered (`active`). When llhttp
 * finishes a message we pause it; the bytes after that message (pipelined requests) stay in
 * the input buffer and are parsed only once the active response has ended, so responses go
 * out in request order. Reading continues while a request is active so that a client that
 * disconnects is noticed (and its request aborted); the input buffer is bounded, and reading
 * stops when it is full.
 *
 * Memory: a connection and its request are freed only in the handle's close callback
 * (libuv rule), after the abort callback told the handler to let go.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "http.h"

#define HTTP_MAX_HEADERS 64

typedef struct http_conn http_conn;

struct http_request {
    http_conn *conn;
    char method[16];
    char *target;
    size_t target_len;
    char *path;
    char *names[HTTP_MAX_HEADERS];
    char *values[HTTP_MAX_HEADERS];
    int n_headers;
    char *field; /* header field being accumulated */
    size_t field_len;
    char *value;
    size_t value_len;
    char *body;
    size_t body_len, body_cap;
    bool keep_alive;
    bool http10;
    bool streaming;
    bool chunked_out;
    bool ended;
    http_abort_fn on_abort;
    http_drain_fn on_drain;
    void *cb_ud;
    char *extra;    /* header lines added to every response (CORS) */
    size_t charged; /* body bytes counted in the server's buffered total */
};

/* Connection states for the timeouts (see conn_sweep):
 *   IDLE --first byte--> HEADERS --headers done--> BODY --message done--> ACTIVE
 *     ^                                                                      |
 *     +------------------- response ended (keep-alive) ---------------------+
 * IDLE waits idle_timeout (a new connection too), HEADERS header_timeout, BODY body_timeout;
 * ACTIVE has none here (generation has its own). REJECTED: answered with an error, closed
 * at the latest one header_timeout later. */
typedef enum http_conn_state {
    HTTP_CONN_IDLE,
    HTTP_CONN_HEADERS,
    HTTP_CONN_BODY,
    HTTP_CONN_ACTIVE,
    HTTP_CONN_REJECTED
} http_conn_state;

struct http_conn {
    uv_tcp_t tcp;
    http_server *srv;
    http_conn *prev, *next;
    llhttp_t parser;
    char *in;
    size_t in_len, in_off, in_cap;
    size_t header_bytes;
    int err_status; /* limit violated while parsing: 400, 401, 403, 413, 431, 503 */
    char err_msg[160];
    http_conn_state state;
    uint64_t t_state;     /* uv_now when the state began */
    size_t charged;       /* input buffer bytes counted in the server's buffered total */
    http_request *cur;    /* being parsed */
    http_request *active; /* being answered */
    bool in_parse;
    bool closing;
    bool reading;
    bool close_after; /* close once the active response has been written */
    bool broken;      /* a write failed: close when the response ends */
};

struct http_server {
    uv_tcp_t listener;
    http_server_params p;
    llhttp_settings_t settings;
    http_conn *conns;
    size_t n_conns;
    size_t buffered; /* request bytes held in memory by all connections */
    uv_timer_t sweep;
    bool sweep_closed;
    int port;
    bool draining;
    bool closing;
    bool listener_closed;
};

typedef struct http_write {
    uv_write_t req;
    http_conn *conn;
    size_t len;
    char data[];
} http_write;

static void conn_close(http_conn *c);
static void conn_parse(http_conn *c);

#define HTTP_IN_MIN 4096
#define HTTP_SWEEP_MS 250

static void conn_set_state(http_conn *c, http_conn_state st)
{
    c->state = st;
    c->t_state = uv_now(c->srv->p.loop);
}

/* Counts n more buffered bytes against the server-wide cap; false when over it. */
static bool srv_charge(http_server *s, size_t n)
{
    if (s->p.max_buffered_bytes && s->buffered + n > s->p.max_buffered_bytes) return false;
    s->buffered += n;
    return true;
}

/* ---------------------------------------------------------------- helpers */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 204:
        return "No Content";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* The one status -> OpenAI error type table (llama.cpp's server uses the same names). Statuses
 * not listed are client errors: "invalid_request_error". */
static const struct {
    int status;
    const char *type;
} kErrorTypes[] = {
    {401, "authentication_error"}, {403, "permission_error"}, {404, "not_found_error"},
    {429, "rate_limit_error"},     {500, "server_error"},     {501, "not_supported_error"},
    {503, "unavailable_error"},
};

const char *http_error_type(int status)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(kErrorTypes); i++)
        if (kErrorTypes[i].status == status) return kErrorTypes[i].type;
    return status >= 500 ? "server_error" : "invalid_request_error";
}

char *http_error_body(int status, const char *message, const char *param, size_t *len)
{
    json_t *err = json_pack("{s:s, s:s, s:o, s:i}", "message", message ? message : "", "type",
                            http_error_type(status), "param",
                            param ? json_string(param) : json_null(), "code", status);
    json_t *root = err ? json_pack("{s:o}", "error", err) : NULL;
    char *s = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (s && len) *len = strlen(s);
    return s;
}

static int append(char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    size_t need;
    if (ks_add_size(*len, n + 1, &need)) return KS_ERR_NOMEM;
    if (need > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < need)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return KS_ERR_NOMEM;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Appends to a string whose capacity is implied by its length (grown per call). */
static int append_str(char **s, size_t *len, const char *at, size_t n)
{
    char *ns = realloc(*s, *len + n + 1);
    if (!ns) return KS_ERR_NOMEM;
    memcpy(ns + *len, at, n);
    *len += n;
    ns[*len] = 0;
    *s = ns;
    return 0;
}

static void request_free(http_request *r)
{
    if (!r) return;
    r->conn->srv->buffered -= r->charged;
    free(r->extra);
    free(r->target);
    free(r->path);
    for (int i = 0; i < r->n_headers; i++) {
        free(r->names[i]);
        free(r->values[i]);
    }
    free(r->field);
    free(r->value);
    free(r->body);
    free(r);
}

/* ---------------------------------------------------------------- writing */

static void write_done(uv_write_t *wr, int status)
{
    http_write *w = (http_write *)wr;
    http_conn *c = w->conn;
    free(w);
    if (status < 0) {
        conn_close(c);
        return;
    }
    http_request *r = c->active;
    if (r && r->on_drain && !c->closing)
        r->on_drain(r, uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp), r->cb_ud);
}

static int conn_write(http_conn *c, const char *a, size_t alen, const char *b, size_t blen,
                      const char *z, size_t zlen)
{
    if (c->closing || c->broken) return KS_ERR_IO;
    size_t n = alen + blen + zlen;
    http_write *w = malloc(sizeof(*w) + n);
    if (!w) return KS_ERR_NOMEM;
    w->conn = c;
    w->len = n;
    if (alen) memcpy(w->data, a, alen);
    if (blen) memcpy(w->data + alen, b, blen);
    if (zlen) memcpy(w->data + alen + blen, z, zlen);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_done) < 0) {
        /* Not closed here: we may be inside the handler, which must not see its request
         * aborted under it. The connection is closed when the response ends. */
        free(w);
        c->broken = true;
        return KS_ERR_IO;
    }
    return 0;
}

static void shutdown_done(uv_shutdown_t *sr, int status)
{
    (void)status;
    http_conn *c = sr->data;
    free(sr);
    conn_close(c);
}

/* Closes after queued writes are flushed. */
static void conn_close_graceful(http_conn *c)
{
    if (c->closing) return;
    uv_shutdown_t *sr = malloc(sizeof(*sr));
    if (!sr || uv_shutdown(sr, (uv_stream_t *)&c->tcp, shutdown_done) < 0) {
        free(sr);
        conn_close(c);
        return;
    }
    sr->data = c;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->close_after = true;
}

/* Called when a response has been fully queued. */
static void request_finish(http_request *r)
{
    http_conn *c = r->conn;
    bool keep = r->keep_alive && !c->srv->draining && !c->err_status;
    r->ended = true;
    if (c->active == r) c->active = NULL;
    request_free(r);
    if (c->broken) {
        conn_close(c);
        return;
    }
    if (!keep) {
        conn_close_graceful(c);
        return;
    }
    conn_set_state(c, HTTP_CONN_IDLE);
    if (!c->in_parse) conn_parse(c);
}

static int head_format(http_request *r, char *buf, size_t cap, int status, const char *ctype,
                       const char *extra, long long content_length)
{
    bool keep = r->keep_alive && !r->conn->srv->draining;
    char lenline[64] = "";
    if (content_length >= 0)
        snprintf(lenline, sizeof(lenline), "Content-Length: %lld\r\n", content_length);
    else if (r->chunked_out)
        snprintf(lenline, sizeof(lenline), "Transfer-Encoding: chunked\r\n");
    int n =
        snprintf(buf, cap, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%sConnection: %s\r\n\r\n",
                 status, http_status_reason(status), ctype ? ctype : "application/json", lenline,
                 extra ? extra : "", r->extra ? r->extra : "", keep ? "keep-alive" : "close");
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

int http_respond(http_request *r, int status, const char *content_type, const char *extra_headers,
                 const char *body, size_t len)
{
    if (r->ended || r->streaming) return KS_ERR_INVALID;
    char head[2048];
    int n = head_format(r, head, sizeof(head), status, content_type, extra_headers, (long long)len);
    if (n < 0) return KS_ERR_INVALID;
    /* A response to HEAD has the headers of the GET response and no body (RFC 9110 9.3.2);
     * sending one would corrupt the next response on a keep-alive connection. */
    bool head_only = !strcmp(r->method, "HEAD");
    int rc =
        conn_write(r->conn, head, (size_t)n, head_only ? NULL : body, head_only ? 0 : len, NULL, 0);
    request_finish(r);
    return rc;
}

int http_stream_start(http_request *r, int status, const char *content_type)
{
    if (r->ended || r->streaming) return KS_ERR_INVALID;
    r->streaming = true;
    r->chunked_out = !r->http10;
    if (r->http10) r->keep_alive = false;
    char head[2048];
    int n =
        head_format(r, head, sizeof(head), status, content_type, "Cache-Control: no-cache\r\n", -1);
    if (n < 0) return KS_ERR_INVALID;
    return conn_write(r->conn, head, (size_t)n, NULL, 0, NULL, 0);
}

int http_stream_write(http_request *r, const char *data, size_t len)
{
    if (r->ended || !r->streaming) return KS_ERR_INVALID;
    if (len == 0) return 0;
    if (!r->chunked_out) return conn_write(r->conn, data, len, NULL, 0, NULL, 0);
    char pre[32];
    int n = snprintf(pre, sizeof(pre), "%zx\r\n", len);
    return conn_write(r->conn, pre, (size_t)n, data, len, "\r\n", 2);
}

int http_stream_end(http_request *r)
{
    if (r->ended || !r->streaming) return KS_ERR_INVALID;
    int rc = 0;
    if (r->chunked_out) rc = conn_write(r->conn, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    request_finish(r);
    return rc;
}

/* Answers an error outside any handler and closes the connection once it is written. */
static void conn_respond_error(http_conn *c, int status, const char *msg)
{
    size_t len = 0;
    char *body = http_error_body(status, msg, NULL, &len);
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     status, http_status_reason(status), len,
                     status == 401 ? "WWW-Authenticate: Bearer\r\n" : "");
    (void)conn_write(c, head, (size_t)n, body, len, NULL, 0);
    free(body);
    if (c->cur) { /* the refused request's bytes go back to the others at once */
        c->srv->buffered -= c->cur->charged;
        c->cur->charged = 0;
        free(c->cur->body);
        c->cur->body = NULL;
        c->cur->body_len = c->cur->body_cap = 0;
    }
    conn_set_state(c, HTTP_CONN_REJECTED);
    conn_close_graceful(c);
}

/* ---------------------------------------------------------------- request accessors */

const char *http_request_method(const http_request *r)
{
    return r->method;
}
const char *http_request_path(const http_request *r)
{
    return r->path ? r->path : "/";
}
const char *http_request_target(const http_request *r)
{
    return r->target ? r->target : "/";
}

const char *http_request_header(const http_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (!strcasecmp(r->names[i], name)) return r->values[i];
    return NULL;
}

const char *http_request_body(const http_request *r, size_t *len)
{
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}

size_t http_request_backlog(const http_request *r)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&r->conn->tcp);
}

int http_request_add_headers(http_request *r, const char *lines)
{
    size_t have = r->extra ? strlen(r->extra) : 0, n = strlen(lines);
    char *e = realloc(r->extra, have + n + 1);
    if (!e) return KS_ERR_NOMEM;
    memcpy(e + have, lines, n + 1);
    r->extra = e;
    return 0;
}

int http_request_peer(const http_request *r, char *buf, size_t cap)
{
    struct sockaddr_storage a;
    int len = sizeof(a);
    if (uv_tcp_getpeername(&r->conn->tcp, (struct sockaddr *)&a, &len) < 0) return KS_ERR_IO;
    if (a.ss_family != AF_INET && a.ss_family != AF_INET6) /* adopted local socket */
        return snprintf(buf, cap, "local") < (int)cap ? 0 : KS_ERR_IO;
    int rc = a.ss_family == AF_INET6 ? uv_ip6_name((struct sockaddr_in6 *)&a, buf, cap)
                                     : uv_ip4_name((struct sockaddr_in *)&a, buf, cap);
    return rc < 0 ? KS_ERR_IO : 0;
}

void http_request_set_callbacks(http_request *r, http_abort_fn on_abort, http_drain_fn on_drain,
                                void *ud)
{
    r->on_abort = on_abort;
    r->on_drain = on_drain;
    r->cb_ud = ud;
}

/* ---------------------------------------------------------------- llhttp callbacks */

static int count_header_bytes(http_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->p.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    http_conn *c = p->data;
    request_free(c->cur);
    c->cur = calloc(1, sizeof(http_request));
    if (!c->cur) return -1;
    c->cur->conn = c;
    c->header_bytes = 0;
    conn_set_state(c, HTTP_CONN_HEADERS);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header_bytes(c, n)) return -1;
    return append_str(&c->cur->target, &c->cur->target_len, at, n) ? -1 : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header_bytes(c, n)) return -1;
    return append_str(&c->cur->field, &c->cur->field_len, at, n) ? -1 : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header_bytes(c, n)) return -1;
    return append_str(&c->cur->value, &c->cur->value_len, at, n) ? -1 : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    http_conn *c = p->data;
    http_request *r = c->cur;
    if (count_header_bytes(c, 4)) return -1;
    if (r->n_headers >= HTTP_MAX_HEADERS) {
        c->err_status = 431;
        return -1;
    }
    /* a field name is an RFC 9110 token: no spaces, controls or separators */
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    for (size_t i = 0; r->field && i < r->field_len; i++) {
        unsigned char ch = (unsigned char)r->field[i];
        if (!isalnum(ch) && !strchr(tchar, ch)) {
            c->err_status = 400;
            snprintf(c->err_msg, sizeof(c->err_msg), "invalid character in a header name");
            return -1;
        }
    }
    if (!r->field_len) {
        c->err_status = 400;
        snprintf(c->err_msg, sizeof(c->err_msg), "empty header name");
        return -1;
    }
    r->names[r->n_headers] = r->field ? r->field : strdup("");
    r->values[r->n_headers] = r->value ? r->value : strdup("");
    r->n_headers++;
    r->field = r->value = NULL;
    r->field_len = r->value_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    http_conn *c = p->data;
    http_request *r = c->cur;
    snprintf(r->method, sizeof(r->method), "%s", llhttp_method_name(llhttp_get_method(p)));
    const char *t = r->target ? r->target : "/";
    size_t plen = strcspn(t, "?#");
    r->path = strndup(t, plen);
    if (!r->path) return -1;
    if (llhttp_get_http_major(p) != 1 || llhttp_get_http_minor(p) > 1) {
        c->err_status = 400;
        snprintf(c->err_msg, sizeof(c->err_msg),
                 "the request line needs a version: HTTP/1.0 or HTTP/1.1");
        return -1;
    }
    r->http10 = llhttp_get_http_minor(p) == 0;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->p.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    /* before any body byte is read: the handler may refuse (API key, origin) */
    if (c->srv->p.on_headers) {
        int st = c->srv->p.on_headers(r, c->srv->p.ud, c->err_msg, sizeof(c->err_msg));
        if (st) {
            c->err_status = st;
            return -1;
        }
    }
    conn_set_state(c, HTTP_CONN_BODY);
    const char *expect = http_request_header(r, "expect");
    if (expect && !strcasecmp(expect, "100-continue") && !r->http10)
        (void)conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    http_request *r = c->cur;
    if (r->body_len + n > c->srv->p.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    size_t cap0 = r->body_cap;
    if (r->body_len + n + 1 > cap0) { /* grows as bytes arrive, within the global cap */
        size_t want = cap0 ? cap0 : 256;
        while (want < r->body_len + n + 1)
            want *= 2;
        if (!srv_charge(c->srv, want - cap0)) {
            c->err_status = 503;
            snprintf(c->err_msg, sizeof(c->err_msg),
                     "the server is busy: too many request bytes buffered; retry later");
            return -1;
        }
        r->charged += want - cap0;
        char *nb = realloc(r->body, want);
        if (!nb) return -1;
        r->body = nb;
        r->body_cap = want;
    }
    return append(&r->body, &r->body_len, &r->body_cap, at, n) ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    http_conn *c = p->data;
    c->active = c->cur;
    c->cur = NULL;
    conn_set_state(c, HTTP_CONN_ACTIVE);
    return HPE_PAUSED;
}

/* ---------------------------------------------------------------- reading and parsing */

static void conn_start_reading(http_conn *c);

static void conn_parse_error(http_conn *c, llhttp_errno_t err)
{
    if (c->err_status && c->err_msg[0]) {
        conn_respond_error(c, c->err_status, c->err_msg);
    } else if (c->err_status == 413) {
        conn_respond_error(c, 413, "request body too large");
    } else if (c->err_status == 431) {
        conn_respond_error(c, 431, "request headers too large");
    } else {
        char msg[256];
        snprintf(msg, sizeof(msg), "malformed HTTP request: %s (%s)", llhttp_errno_name(err),
                 llhttp_get_error_reason(&c->parser) ? llhttp_get_error_reason(&c->parser) : "");
        c->err_status = 400;
        conn_respond_error(c, 400, msg);
    }
}

/* Parses buffered input while no request is being answered; dispatches each complete
 * request to the handler. */
static void conn_parse(http_conn *c)
{
    c->in_parse = true;
    while (!c->closing && !c->close_after && !c->active && c->in_off < c->in_len) {
        const char *start = c->in + c->in_off;
        llhttp_errno_t err = llhttp_execute(&c->parser, start, c->in_len - c->in_off);
        if (err == HPE_OK) {
            c->in_off = c->in_len;
            break;
        }
        if (err != HPE_PAUSED) {
            conn_parse_error(c, err);
            break;
        }
        const char *pos = llhttp_get_error_pos(&c->parser);
        c->in_off = (size_t)(pos - c->in);
        llhttp_resume(&c->parser);
        http_request *r = c->active;
        if (r) c->srv->p.handler(r, c->srv->p.ud);
    }
    c->in_parse = false;
    if (c->in_off > 0 && !c->closing) { /* compact */
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (!c->closing && !c->close_after && !c->reading && c->in_len < c->in_cap)
        conn_start_reading(c);
}

/* Input buffer bound: one header block plus 64 KiB of body or pipelined bytes (bodies are
 * copied out as they are parsed; bytes pipelined behind an active request wait here, and
 * reading pauses when it is full). */
static size_t conn_in_max(const http_conn *c)
{
    return c->srv->p.max_header_bytes + 65536;
}

/* Doubles the input buffer when it is nearly full (up to conn_in_max, within the global
 * cap), so an idle or slow connection holds a few KiB, not the maximum. */
static void conn_grow_in(http_conn *c)
{
    if (c->in_cap - c->in_len >= HTTP_IN_MIN / 2 || c->in_cap >= conn_in_max(c)) return;
    size_t want = KS_MIN(c->in_cap * 2, conn_in_max(c));
    if (!srv_charge(c->srv, want - c->in_cap)) return;
    char *nb = realloc(c->in, want);
    if (!nb) {
        c->srv->buffered -= want - c->in_cap;
        return;
    }
    c->charged += want - c->in_cap;
    c->in = nb;
    c->in_cap = want;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    http_conn *c = h->data;
    conn_grow_in(c);
    size_t room = c->in_cap - c->in_len;
    buf->base = room ? c->in + c->in_len : NULL;
    buf->len = room > 65536 ? 65536 : room;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    http_conn *c = s->data;
    if (nread < 0) {
        conn_close(c); /* EOF or error: the client went away */
        return;
    }
    if (nread == 0) return;
    c->in_len += (size_t)nread;
    if (c->state == HTTP_CONN_IDLE) conn_set_state(c, HTTP_CONN_HEADERS);
    if (c->in_len == c->in_cap) {
        uv_read_stop(s);
        c->reading = false;
    }
    if (!c->in_parse) conn_parse(c);
    if (!c->closing && !c->close_after && !c->active && c->in_len == c->in_cap &&
        c->in_cap < conn_in_max(c)) /* the global cap stopped the buffer from growing */
        conn_respond_error(c, 503,
                           "the server is busy: too many request bytes buffered; "
                           "retry later");
}

static void conn_start_reading(http_conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0) c->reading = true;
}

static void server_maybe_free(http_server *s)
{
    if (s->closing && s->listener_closed && s->sweep_closed && s->n_conns == 0) free(s);
}

static void sweep_closed(uv_handle_t *h)
{
    http_server *s = h->data;
    s->sweep_closed = true;
    server_maybe_free(s);
}

static void conn_closed(uv_handle_t *h)
{
    http_conn *c = h->data;
    http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    request_free(c->cur);
    request_free(c->active);
    s->buffered -= c->charged;
    free(c->in);
    free(c);
    server_maybe_free(s);
}

static void conn_close(http_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    http_request *r = c->active;
    if (r && r->on_abort) {
        r->on_abort(r, r->cb_ud);
        r->on_abort = NULL;
        r->on_drain = NULL;
    }
    if (r) r->ended = true;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* A new connection on the list, its handle initialised but not yet connected; NULL when out
 * of memory. */
static http_conn *conn_new(http_server *s)
{
    http_conn *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->srv = s;
    c->in_cap = HTTP_IN_MIN;
    c->in = malloc(c->in_cap);
    if (!c->in || uv_tcp_init(s->p.loop, &c->tcp) < 0) {
        free(c->in);
        free(c);
        return NULL;
    }
    s->buffered += c->in_cap; /* the first buffer is always granted: the cap is soft by 4 KiB
                                 per connection, which max_conns bounds */
    c->charged = c->in_cap;
    c->tcp.data = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    conn_set_state(c, HTTP_CONN_IDLE);
    return c;
}

/* A connected connection: refused with 503 beyond max_conns, else read. */
static void conn_begin(http_conn *c)
{
    http_server *s = c->srv;
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->p.max_conns && s->n_conns > s->p.max_conns) {
        /* accepted only to be told: a refused accept would leave it in the backlog */
        conn_respond_error(c, 503, "too many connections; retry later");
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    conn_start_reading(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    http_server *s = ls->data;
    if (status < 0 || s->draining) return;
    http_conn *c = conn_new(s);
    if (!c) return;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    conn_begin(c);
}

int http_server_adopt(http_server *s, int fd)
{
    http_conn *c = s->draining ? NULL : conn_new(s);
    if (!c) {
        close(fd);
        return s->draining ? KS_ERR_INVALID : KS_ERR_NOMEM;
    }
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd); /* not the handle's: uv_close will not close it */
        conn_close(c);
        return KS_ERR_IO;
    }
    conn_begin(c);
    return 0;
}

/* Closes connections whose state has lasted longer than its timeout (slowloris, idle
 * keep-alive, stalled bodies); runs every HTTP_SWEEP_MS. */
static void conn_sweep(uv_timer_t *t)
{
    http_server *s = t->data;
    uint64_t now = uv_now(s->p.loop);
    for (http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->closing) continue;
        uint64_t age = now - c->t_state;
        const http_server_params *p = &s->p;
        if (c->state == HTTP_CONN_IDLE && p->idle_timeout_ms && age > p->idle_timeout_ms)
            conn_close(c);
        else if (c->state == HTTP_CONN_HEADERS && p->header_timeout_ms &&
                 age > p->header_timeout_ms)
            conn_respond_error(c, 408, "the request headers took too long");
        else if (c->state == HTTP_CONN_BODY && p->body_timeout_ms && age > p->body_timeout_ms)
            conn_respond_error(c, 408, "the request body took too long");
        else if (c->state == HTTP_CONN_REJECTED && age > KS_MAX(p->header_timeout_ms, 1000))
            conn_close(c); /* the client does not read its error: drop it */
    }
}

/* ---------------------------------------------------------------- server */

int http_server_create(const http_server_params *p, http_server **out, ks_diag *d)
{
    struct sockaddr_storage addr;
    if (uv_ip4_addr(p->host, p->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(p->host, p->port, (struct sockaddr_in6 *)&addr) != 0)
        return ks_diag_set(d, KS_ERR_INVALID, "invalid listen address '%s'", p->host);
    http_server *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->p = *p;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    uv_tcp_init(p->loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(p->loop, &s->sweep);
    s->sweep.data = s;
    int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 256, on_connection);
    if (rc < 0) {
        ks_diag_set(d, KS_ERR_IO, "cannot listen on %s:%d: %s", p->host, p->port, uv_strerror(rc));
        s->closing = true;
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_close((uv_handle_t *)&s->sweep, NULL);
        uv_run(p->loop, UV_RUN_NOWAIT);
        free(s);
        return KS_ERR_IO;
    }
    uv_timer_start(&s->sweep, conn_sweep, HTTP_SWEEP_MS, HTTP_SWEEP_MS);
    uv_unref((uv_handle_t *)&s->sweep); /* the timer alone does not keep the loop alive */
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;
}

int http_server_port(const http_server *s)
{
    return s->port;
}
size_t http_server_n_conns(const http_server *s)
{
    return s->n_conns;
}
size_t http_server_buffered(const http_server *s)
{
    return s->buffered;
}

static void listener_closed(uv_handle_t *h)
{
    http_server *s = h->data;
    s->listener_closed = true;
    server_maybe_free(s);
}

static void close_listener(http_server *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, listener_closed);
}

static void close_sweep(http_server *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->sweep)) uv_close((uv_handle_t *)&s->sweep, sweep_closed);
}

void http_server_drain(http_server *s)
{
    s->draining = true;
    close_listener(s);
    for (http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (!c->active && !c->closing) conn_close_graceful(c);
    }
}

void http_server_close(http_server *s)
{
    s->draining = true;
    s->closing = true;
    close_listener(s);
    close_sweep(s);
    for (http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        conn_close(c);
    }
    /* After a drain the listener may already be closed and every connection gone: then no
     * close callback is left to free the server, so free it now. */
    server_maybe_free(s);
}

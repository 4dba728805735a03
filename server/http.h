/* http.h - HTTP/1.1 server connections on libuv with llhttp parsing.
 *
 * The server accepts TCP connections, parses requests (keep-alive, pipelining, chunked
 * bodies, Expect: 100-continue), enforces header and body limits (431 / 413) and hands each
 * complete request to one handler. Requests on a connection are answered strictly in order:
 * the next pipelined request is parsed only after the current response has ended.
 *
 * Threading: everything here runs on the loop thread that owns the server.
 */
#ifndef KVSERVE_HTTP_H
#define KVSERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "kvserve/base.h"

typedef struct http_server http_server;
typedef struct http_request http_request;

/* Called once per complete request. The handler answers now or later with http_respond or
 * http_stream_*; the request stays valid until its response has ended or until the abort
 * callback has run, whichever comes first. */
typedef void (*http_handler_fn)(http_request *req, void *ud);
/* The client went away before the response ended. After it returns the request is freed:
 * the handler must not touch it again. */
typedef void (*http_abort_fn)(http_request *req, void *ud);
/* A write to the client completed; `backlog` is the bytes still queued on the socket. */
typedef void (*http_drain_fn)(http_request *req, size_t backlog, void *ud);
/* Called when a request's headers are complete, before any body byte is read. Returns 0 to
 * go on, or an HTTP status (with a message in msg) to refuse it at once: the server answers
 * with an error object and closes the connection without reading the body. */
typedef int (*http_headers_fn)(http_request *req, void *ud, char *msg, size_t cap);

typedef struct http_server_params {
    uv_loop_t *loop;
    const char *host;        /* numeric IPv4 or IPv6 address */
    int port;                /* 0 picks a free port (see http_server_port) */
    size_t max_header_bytes; /* request line + headers; larger -> 431 */
    size_t max_body_bytes;   /* larger -> 413 */
    /* Bounds (0 = none). Beyond max_conns a connection is answered 503 and closed. Timeouts:
     * headers not complete header_timeout_ms after their first byte, or a body not complete
     * body_timeout_ms after its headers -> 408 and close; a keep-alive (or new) connection
     * idle for idle_timeout_ms is closed. max_buffered_bytes caps the request bytes (input
     * buffers and bodies, which grow as data arrives) held by all connections together;
     * a request that would pass it is answered 503. */
    size_t max_conns;
    uint64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms;
    size_t max_buffered_bytes;
    http_headers_fn on_headers; /* NULL: accept every request */
    http_handler_fn handler;
    void *ud;
} http_server_params;

/* Binds and listens. Errors: KS_ERR_INVALID (bad address), KS_ERR_IO (bind/listen failed,
 * message in d). */
int http_server_create(const http_server_params *p, http_server **out, ks_diag *d) KS_WUR;
/* Serves a connected stream socket as if it had been accepted (the server owns fd from now
 * on, even on error). In-process drivers use it with one end of a socketpair: the fuzz target
 * sends each input through one without the cost of a TCP connection. Errors: KS_ERR_INVALID
 * (draining), KS_ERR_NOMEM, KS_ERR_IO. */
int http_server_adopt(http_server *s, int fd) KS_WUR;
/* The port actually bound. */
int http_server_port(const http_server *s);
/* Stops accepting and closes idle connections; connections with a request in flight end
 * after their response (answered with Connection: close). */
void http_server_drain(http_server *s);
/* Number of open connections. */
size_t http_server_n_conns(const http_server *s);
/* Closes the listener and every connection (aborting requests in flight); the server is
 * freed once its handles are closed, so the caller keeps running the loop afterwards. */
void http_server_close(http_server *s);

/* Request accessors. Strings are NUL-terminated and owned by the request. */
const char *http_request_method(const http_request *r); /* "GET", "POST", ... */
const char *http_request_path(const http_request *r);   /* target without the query */
const char *http_request_target(const http_request *r); /* full target */
/* Header value by case-insensitive name, or NULL. */
const char *http_request_header(const http_request *r, const char *name);
/* The body (NUL-terminated for convenience, may contain NULs); *len gets its length. */
const char *http_request_body(const http_request *r, size_t *len);
/* Bytes queued on the socket and not yet written. */
size_t http_request_backlog(const http_request *r);
void http_request_set_callbacks(http_request *r, http_abort_fn on_abort, http_drain_fn on_drain,
                                void *ud);
/* Header lines ("Name: value\r\n"...) added to this request's response, whichever writer
 * sends it. 0 or KS_ERR_NOMEM. */
int http_request_add_headers(http_request *r, const char *lines) KS_WUR;
/* The client's address as text ("127.0.0.1", "::1"). 0 or KS_ERR_IO. */
int http_request_peer(const http_request *r, char *buf, size_t cap) KS_WUR;
/* Request bytes currently buffered by the server (input buffers and bodies). */
size_t http_server_buffered(const http_server *s);

/* Response writers return 0 or a negative status; a failed socket write closes the
 * connection (the abort callback then runs), so callers may ignore the result.
 * Sends a complete response with Content-Length. extra_headers: NULL or lines each ending
 * in "\r\n". Ends the request. */
int http_respond(http_request *r, int status, const char *content_type, const char *extra_headers,
                 const char *body, size_t len);
/* Streaming responses (chunked transfer encoding for HTTP/1.1, close-delimited for 1.0). */
int http_stream_start(http_request *r, int status, const char *content_type);
int http_stream_write(http_request *r, const char *data, size_t len);
/* Ends the stream; the request is freed (or the next pipelined request starts). */
int http_stream_end(http_request *r);

/* Reason phrase for a status ("Not Found"); "Unknown" for others. */
const char *http_status_reason(int status);
/* The one builder of HTTP error bodies: the OpenAI error object
 * {"error":{"message":MESSAGE,"type":TYPE,"param":PARAM or null,"code":STATUS}} with TYPE from
 * http_error_type. Returns a malloc'd string (NULL when out of memory); *len (if len) gets its
 * length. Every error the server sends, plain or inside an SSE stream, is built here. */
char *http_error_body(int status, const char *message, const char *param, size_t *len);
/* OpenAI error type of a status: 401 authentication_error, 403 permission_error,
 * 404 not_found_error, 429 rate_limit_error, 501 not_supported_error, 503 unavailable_error,
 * other 5xx server_error, other statuses invalid_request_error. */
const char *http_error_type(int status);

#endif

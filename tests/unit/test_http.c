/* test_http.c - the HTTP connection layer against raw sockets: pipelining, chunked request
 * bodies, Expect: 100-continue, keep-alive, header/body limits (431/413), malformed input,
 * streamed (chunked) responses, and a clean teardown of server and loop. */
#include <arpa/inet.h>
#include <check.h>

#include "check_main.h"
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "server/http.h"

static uv_loop_t loop;
static http_server *srv;
static uv_async_t stop_async;
static pthread_t thread;
static int port;

/* Echo handler: "METHOD PATH LEN:BODY"; /stream answers three chunks. */
static void handler(http_request *r, void *ud)
{
    (void)ud;
    if (!strcmp(http_request_path(r), "/stream")) {
        http_stream_start(r, 200, "text/event-stream");
        http_stream_write(r, "data: a\n\n", 9);
        http_stream_write(r, "data: b\n\n", 9);
        http_stream_end(r);
        return;
    }
    size_t len;
    const char *body = http_request_body(r, &len);
    char out[4096];
    int n = snprintf(out, sizeof(out), "%s %s %zu:%.*s", http_request_method(r),
                     http_request_path(r), len, (int)KS_MIN(len, 3000), body);
    http_respond(r, 200, "text/plain", NULL, out, (size_t)n);
}

/* http_server_adopt runs on the loop thread: the test hands it the fd through an async. */
static uv_async_t adopt_async;
static int adopt_fd, adopt_rc = -1;

static void on_adopt(uv_async_t *h)
{
    (void)h;
    adopt_rc = http_server_adopt(srv, adopt_fd);
}

static void on_stop(uv_async_t *h)
{
    http_server_close(srv);
    uv_close((uv_handle_t *)&adopt_async, NULL);
    uv_close((uv_handle_t *)h, NULL);
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void setup(void)
{
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    http_server_params p = {.loop = &loop,
                            .host = "127.0.0.1",
                            .port = 0,
                            .max_header_bytes = 1024,
                            .max_body_bytes = 2048,
                            .handler = handler};
    ks_diag d;
    ck_assert_int_eq(http_server_create(&p, &srv, &d), 0);
    port = http_server_port(srv);
    ck_assert_int_gt(port, 0);
    uv_async_init(&loop, &stop_async, on_stop);
    uv_async_init(&loop, &adopt_async, on_adopt);
    pthread_create(&thread, NULL, loop_main, NULL);
}

static void teardown(void)
{
    uv_async_send(&stop_async);
    pthread_join(thread, NULL);
    ck_assert_int_eq(uv_loop_close(&loop), 0); /* every handle closed */
}

static int connect_srv(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return; /* the server may close early (413); the reply tells */
        s += w;
        n -= (size_t)w;
    }
}

/* Reads until `count` occurrences of `marker` were seen or EOF; returns the text. */
static char *read_until(int fd, const char *marker, int count)
{
    static char buf[65536];
    size_t len = 0;
    for (;;) {
        int seen = 0;
        buf[len] = 0;
        for (const char *p = buf; (p = strstr(p, marker)); p++)
            seen++;
        if (seen >= count) break;
        ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    buf[len] = 0;
    return buf;
}

START_TEST(test_simple_and_keepalive)
{
    int fd = connect_srv();
    const char *req = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    send_all(fd, req, strlen(req));
    char *r = read_until(fd, "POST /a 5:hello", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 200 OK\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "Content-Length: 15\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "Connection: keep-alive\r\n"));
    /* same connection again */
    send_all(fd, "GET /b?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 32);
    r = read_until(fd, "GET /b 0:", 1);
    ck_assert_ptr_nonnull(strstr(r, "GET /b 0:"));
    close(fd);
}
END_TEST

/* A connected socket handed over (one end of a socketpair, as the fuzz target does) is
 * served like an accepted connection: keep-alive, then a close when the client half-closes. */
START_TEST(test_adopted_socket)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    adopt_fd = sv[0];
    uv_async_send(&adopt_async);
    const char *req = "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                      "GET /v HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(sv[1], req, strlen(req));
    char *r = read_until(sv[1], "GET /v 0:", 1);
    ck_assert_int_eq(adopt_rc, 0);
    ck_assert_ptr_nonnull(strstr(r, "POST /u 2:hi"));
    ck_assert_ptr_nonnull(strstr(r, "GET /v 0:"));
    shutdown(sv[1], SHUT_WR);
    char c;
    ck_assert_int_eq(read(sv[1], &c, 1), 0); /* the server closed its end */
    close(sv[1]);
}
END_TEST

START_TEST(test_pipelined_in_order)
{
    int fd = connect_srv();
    const char *req = "POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nA"
                      "GET /2 HTTP/1.1\r\n\r\n"
                      "POST /3 HTTP/1.1\r\nContent-Length: 2\r\n\r\nCC";
    send_all(fd, req, strlen(req));
    char *r = read_until(fd, "HTTP/1.1 200", 3);
    char *a = strstr(r, "POST /1 1:A"), *b = strstr(r, "GET /2 0:"), *c = strstr(r, "POST /3 2:CC");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert(a < b && b < c);
    close(fd);
}
END_TEST

START_TEST(test_chunked_body_and_continue)
{
    int fd = connect_srv();
    const char *h =
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
    send_all(fd, h, strlen(h));
    char *r = read_until(fd, "100 Continue\r\n\r\n", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 100 Continue"));
    const char *body = "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    send_all(fd, body, strlen(body));
    r = read_until(fd, "POST /c 7:abcdefg", 1);
    ck_assert_ptr_nonnull(strstr(r, "POST /c 7:abcdefg"));
    close(fd);
}
END_TEST

START_TEST(test_limits)
{
    int fd = connect_srv();
    const char *req = "POST /big HTTP/1.1\r\nContent-Length: 999999\r\n\r\n";
    send_all(fd, req, strlen(req));
    char *r = read_until(fd, "}}", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 413 "));
    ck_assert_ptr_nonnull(strstr(r, "\"error\""));
    close(fd);

    fd = connect_srv(); /* chunked body over the limit */
    send_all(fd, "POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 50);
    char chunk[1100];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 3; i++) {
        send_all(fd, "44c\r\n", 5);
        send_all(fd, chunk, sizeof(chunk));
        send_all(fd, "\r\n", 2);
    }
    r = read_until(fd, "}}", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 413 "));
    close(fd);

    fd = connect_srv();
    char hdr[3000];
    int n = snprintf(hdr, sizeof(hdr), "GET / HTTP/1.1\r\nX-Big: %02000d\r\n\r\n", 0);
    send_all(fd, hdr, (size_t)n);
    r = read_until(fd, "}}", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 431 "));
    close(fd);
}
END_TEST

START_TEST(test_malformed_then_others_served)
{
    int fd = connect_srv();
    send_all(fd, "GARBAGE\x01\x02 nonsense\r\n\r\n", 22);
    char *r = read_until(fd, "}}", 1);
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 400 "));
    close(fd);
    fd = connect_srv();
    send_all(fd, "GET /ok HTTP/1.1\r\n\r\n", 20);
    r = read_until(fd, "GET /ok 0:", 1);
    ck_assert_ptr_nonnull(strstr(r, "GET /ok 0:"));
    close(fd);
}
END_TEST

START_TEST(test_stream_chunked_response)
{
    int fd = connect_srv();
    send_all(fd, "GET /stream HTTP/1.1\r\n\r\n", 24);
    char *r = read_until(fd, "0\r\n\r\n", 1);
    ck_assert_ptr_nonnull(strstr(r, "Transfer-Encoding: chunked\r\n"));
    ck_assert_ptr_nonnull(strstr(r, "\r\n\r\n9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n"));
    close(fd);
    fd = connect_srv(); /* HTTP/1.0: close-delimited */
    send_all(fd, "GET /stream HTTP/1.0\r\n\r\n", 24);
    r = read_until(fd, "never", 1);
    ck_assert_ptr_nonnull(strstr(r, "Connection: close\r\n\r\ndata: a\n\ndata: b\n\n"));
    close(fd);
}
END_TEST

START_TEST(test_error_body_shape)
{
    /* the one builder: every status maps to one type; param is a string or null; code is the
     * status */
    static const struct {
        int status;
        const char *param;
        const char *body;
    } cases[] = {
        {400, "max_tokens",
         "{\"error\":{\"message\":\"m\",\"type\":\"invalid_request_error\","
         "\"param\":\"max_tokens\",\"code\":400}}"},
        {401, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"authentication_error\","
         "\"param\":null,\"code\":401}}"},
        {404, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"not_found_error\","
         "\"param\":null,\"code\":404}}"},
        {405, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"invalid_request_error\","
         "\"param\":null,\"code\":405}}"},
        {429, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"rate_limit_error\","
         "\"param\":null,\"code\":429}}"},
        {500, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"server_error\","
         "\"param\":null,\"code\":500}}"},
        {503, NULL,
         "{\"error\":{\"message\":\"m\",\"type\":\"unavailable_error\","
         "\"param\":null,\"code\":503}}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = 0;
        char *b = http_error_body(cases[i].status, "m", cases[i].param, &len);
        ck_assert_str_eq(b, cases[i].body);
        ck_assert_uint_eq(len, strlen(b));
        free(b);
    }
    ck_assert_str_eq(http_error_type(413), "invalid_request_error");
    ck_assert_str_eq(http_error_type(502), "server_error");
    ck_assert_str_eq(http_status_reason(431), "Request Header Fields Too Large");
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_simple_and_keepalive);
    tcase_add_test(tc, test_adopted_socket);
    tcase_add_test(tc, test_pipelined_in_order);
    tcase_add_test(tc, test_chunked_body_and_continue);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_malformed_then_others_served);
    tcase_add_test(tc, test_stream_chunked_response);
    tcase_add_test(tc, test_error_body_shape);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return ks_run_suite(http_suite(), true);
}

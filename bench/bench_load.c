/* bench_load.c - load generator for a running kvserve: N concurrent streaming clients
 * (plain sockets, one thread each) request /v1/completions with stream=true and greedy
 * decoding; prints aggregate generated tokens/s, time-to-first-token and inter-token
 * latency p50/p99 per client count.
 *
 * The response is decoded properly (HTTP chunked framing, then SSE events) and every token
 * event is timed on its own: ITL is the gap between consecutive token events of one stream,
 * stamped with the read() that completed each event. Events that reach the client in one
 * read (server-side bursts: the scheduler's uv_async wake-ups coalesce, so the loop may write
 * several queued tokens back to back) show up as ~0 gaps; the report counts them ("arrived
 * with the previous one") so a bursty server cannot hide behind a nice median.
 *
 * Requests carry ignore_eos (kvserve and llama-server both accept it), so every stream
 * generates exactly MAX_TOKENS tokens and two servers are compared on the same work.
 *
 * usage: bench_load HOST PORT [CLIENTS[,CLIENTS...]] [MAX_TOKENS]   (default 1,4,16 and 128)
 * With continuous batching, 4 clients should give well over 2x one client's tokens/s.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvserve/args.h"
#include "kvserve/base.h"

typedef struct client {
    const char *host;
    int port, max_tokens, idx;
    double t0, ttft;
    double *gaps; /* inter-token gaps, one per token event after the first */
    int n_gaps, n_tokens;
    int n_reads;     /* reads that delivered at least one token event */
    int n_same_read; /* token events that arrived in the same read as the previous one */
    int ok;
} client;

static int dial(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res)) return -1;
    int fd = socket(res->ai_family, res->ai_socktype, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen)) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Incremental HTTP response reader: headers, then the body (chunked or not) into an SSE
 * buffer that is split into events. Each event is stamped with the time of the read() that
 * completed it, so events that arrive together show up as gaps of ~0 (and are counted). */
typedef struct resp {
    char raw[65536]; /* bytes not yet consumed (headers / chunk framing) */
    size_t n_raw;
    char sse[65536]; /* decoded body bytes not yet split into events */
    size_t n_sse;
    int phase; /* 0 headers, 1 chunk size line, 2 chunk data, 3 chunk CRLF, 4 raw */
    size_t chunk_left;
    int status;
} resp;

static void on_event(client *c, const char *ev, double now, double *last, int *in_read)
{
    if (!strncmp(ev, "data: [DONE]", 12)) {
        c->ok = 1;
        return;
    }
    /* a token event carries "text" and finish_reason null; the last chunks do not */
    if (strncmp(ev, "data: {", 7) || !strstr(ev, "\"finish_reason\":null")) return;
    if (c->n_tokens == 0)
        c->ttft = now - c->t0;
    else if (c->n_gaps < c->max_tokens)
        c->gaps[c->n_gaps++] = now - *last;
    if (*in_read > 0) c->n_same_read++;
    (*in_read)++;
    *last = now;
    c->n_tokens++;
}

static void sse_feed(client *c, resp *r, const char *p, size_t n, double now, double *last,
                     int *in_read)
{
    if (n > sizeof(r->sse) - 1 - r->n_sse) n = sizeof(r->sse) - 1 - r->n_sse;
    memcpy(r->sse + r->n_sse, p, n);
    r->n_sse += n;
    r->sse[r->n_sse] = 0;
    char *s = r->sse, *end;
    while ((end = strstr(s, "\n\n"))) {
        *end = 0;
        on_event(c, s, now, last, in_read);
        s = end + 2;
    }
    r->n_sse = strlen(s);
    memmove(r->sse, s, r->n_sse + 1);
}

/* Consumes r->raw; returns -1 on a malformed response. */
static int resp_parse(client *c, resp *r, double now, double *last, int *in_read)
{
    size_t off = 0;
    for (;;) {
        char *base = r->raw + off;
        size_t left = r->n_raw - off;
        if (r->phase == 0 || r->phase == 1 || r->phase == 3) {
            const char *term = r->phase == 0 ? "\r\n\r\n" : "\r\n";
            char *e = memmem(base, left, term, strlen(term));
            if (!e) break;
            if (r->phase == 0) {
                if (sscanf(base, "HTTP/1.%*d %d", &r->status) != 1) return -1;
                bool chunked = memmem(base, (size_t)(e - base), "chunked", 7) != NULL;
                r->phase = chunked ? 1 : 4;
            } else if (r->phase == 1) {
                r->chunk_left = strtoul(base, NULL, 16);
                r->phase = r->chunk_left ? 2 : 5;
            } else {
                r->phase = 1;
            }
            off += (size_t)(e - base) + strlen(term);
        } else if (r->phase == 2 || r->phase == 4) {
            size_t n = r->phase == 2 && left > r->chunk_left ? r->chunk_left : left;
            if (n == 0) break;
            sse_feed(c, r, base, n, now, last, in_read);
            off += n;
            if (r->phase == 2 && (r->chunk_left -= n) == 0) r->phase = 3;
        } else {
            off = r->n_raw; /* phase 5: after the last chunk */
            break;
        }
    }
    memmove(r->raw, r->raw + off, r->n_raw - off);
    r->n_raw -= off;
    return 0;
}

static void *client_main(void *arg)
{
    client *c = arg;
    int fd = dial(c->host, c->port);
    if (fd < 0) return NULL;
    char body[512], req[1024];
    int bl = snprintf(body, sizeof(body),
                      "{\"prompt\":\"In the beginning %d\",\"max_tokens\":%d,\"temperature\":0,"
                      "\"stream\":true,\"ignore_eos\":true}",
                      c->idx, c->max_tokens);
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                      c->host, bl, body);
    c->t0 = ks_time_now();
    if (write(fd, req, (size_t)rl) != rl) {
        close(fd);
        return NULL;
    }
    resp *r = calloc(1, sizeof(*r));
    double last = 0;
    while (r) {
        ssize_t n = read(fd, r->raw + r->n_raw, sizeof(r->raw) - r->n_raw);
        if (n <= 0) break;
        double now = ks_time_now();
        r->n_raw += (size_t)n;
        int in_read = 0;
        if (resp_parse(c, r, now, &last, &in_read)) break;
        if (in_read > 0) c->n_reads++;
    }
    if (r && r->status != 200) c->ok = 0;
    free(r);
    close(fd);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

static void run(const char *host, int port, int n, int max_tokens)
{
    client *cs = calloc((size_t)n, sizeof(client));
    pthread_t *th = calloc((size_t)n, sizeof(pthread_t));
    for (int i = 0; i < n; i++) {
        cs[i] = (client){.host = host, .port = port, .max_tokens = max_tokens, .idx = i};
        cs[i].gaps = calloc((size_t)max_tokens + 1, sizeof(double));
    }
    double t0 = ks_time_now();
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, client_main, &cs[i]);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double wall = ks_time_now() - t0;
    long tokens = 0;
    int ok = 0, n_gaps = 0, n_reads = 0, n_same = 0;
    double *ttft = calloc((size_t)n, sizeof(double));
    double *gaps = calloc((size_t)n * ((size_t)max_tokens + 1), sizeof(double));
    for (int i = 0; i < n; i++) {
        tokens += cs[i].n_tokens;
        ok += cs[i].ok;
        n_reads += cs[i].n_reads;
        n_same += cs[i].n_same_read;
        ttft[i] = cs[i].ttft;
        memcpy(gaps + n_gaps, cs[i].gaps, (size_t)cs[i].n_gaps * sizeof(double));
        n_gaps += cs[i].n_gaps;
        free(cs[i].gaps);
    }
    printf("clients %3d: ok %d/%d, %ld tokens in %.2f s = %.1f tokens/s; "
           "ttft p50 %.1f ms p99 %.1f ms; itl p50 %.2f ms p99 %.2f ms; "
           "%.2f token events per read, %d of %ld arrived with the previous one\n",
           n, ok, n, tokens, wall, tokens / wall, pct(ttft, n, 0.5) * 1e3, pct(ttft, n, 0.99) * 1e3,
           pct(gaps, n_gaps, 0.5) * 1e3, pct(gaps, n_gaps, 0.99) * 1e3,
           n_reads ? (double)tokens / n_reads : 0.0, n_same, tokens);
    fflush(stdout);
    free(ttft);
    free(gaps);
    free(cs);
    free(th);
}

int main(int argc, char **argv)
{
    const char *host = NULL, *list = "1,4,16";
    int32_t port = 0, max_tokens = 128;
    const ks_arg args[] = {
        {"HOST", 0, KS_ARG_STRING, &host, .help = "server address",
         .flags = KS_ARG_POSITIONAL | KS_ARG_REQUIRED},
        {"PORT", 0, KS_ARG_I32, &port, 1, 65535, .help = "server port",
         .flags = KS_ARG_POSITIONAL | KS_ARG_REQUIRED},
        {"CLIENTS", 0, KS_ARG_STRING, &list, .help = "comma-separated client counts (1..1024)",
         .flags = KS_ARG_POSITIONAL},
        {"MAX_TOKENS", 0, KS_ARG_I32, &max_tokens, 1, 1 << 20, .help = "tokens per request",
         .flags = KS_ARG_POSITIONAL},
    };
    const ks_args_spec spec = {
        "bench_load", "Concurrent streaming clients against a running kvserve or llama-server.",
        args, KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    char *copy = strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int n = atoi(t);
        if (n >= 1 && n <= 1024) run(host, port, n, max_tokens);
    }
    free(copy);
    return 0;
}

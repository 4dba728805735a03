/* bench_load.c - load generator for a running kvserve: N concurrent streaming clients
 * (plain sockets, one thread each) request /v1/completions with stream=true and greedy
 * decoding; prints aggregate generated tokens/s, time-to-first-token and inter-token
 * latency p50/p99 per client count.
 *
 * usage: bench_load HOST PORT [CLIENTS[,CLIENTS...]] [MAX_TOKENS]   (default 1,4,16 and 128)
 * With continuous batching, 4 clients should give well over 2x one client's tokens/s.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvserve/base.h"

typedef struct client {
    const char *host;
    int port, max_tokens, idx;
    double t0, ttft;
    double *gaps; /* inter-token gaps */
    int n_gaps, n_tokens;
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

static void *client_main(void *arg)
{
    client *c = arg;
    int fd = dial(c->host, c->port);
    if (fd < 0) return NULL;
    char body[512], req[1024];
    int bl = snprintf(body, sizeof(body),
                      "{\"prompt\":\"In the beginning %d\",\"max_tokens\":%d,\"temperature\":0,"
                      "\"stream\":true}", c->idx, c->max_tokens);
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                      c->host, bl, body);
    c->t0 = ks_time_now();
    if (write(fd, req, (size_t)rl) != rl) {
        close(fd);
        return NULL;
    }
    char buf[65536];
    size_t keep = 0;
    double last = 0;
    for (;;) {
        ssize_t n = read(fd, buf + keep, sizeof(buf) - 1 - keep);
        if (n <= 0) break;
        double now = ks_time_now();
        keep += (size_t)n;
        buf[keep] = 0;
        /* count complete text events; a token event carries "text" with finish_reason null */
        char *p = buf, *end;
        while ((end = strstr(p, "\n\n"))) {
            /* events sit inside HTTP chunks: look for the data line within the segment */
            *end = 0;
            char *d = strstr(p, "data: ");
            if (d && !strncmp(d, "data: {", 7) && strstr(d, "\"finish_reason\":null")) {
                if (c->n_tokens == 0) c->ttft = now - c->t0;
                else if (c->n_gaps < c->max_tokens) c->gaps[c->n_gaps++] = now - last;
                last = now;
                c->n_tokens++;
            }
            if (d && !strncmp(d, "data: [DONE]", 12)) c->ok = 1;
            p = end + 2;
        }
        keep = strlen(p);
        memmove(buf, p, keep);
    }
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
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, client_main, &cs[i]);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    double wall = ks_time_now() - t0;
    long tokens = 0;
    int ok = 0, n_gaps = 0;
    double *ttft = calloc((size_t)n, sizeof(double));
    double *gaps = calloc((size_t)n * ((size_t)max_tokens + 1), sizeof(double));
    for (int i = 0; i < n; i++) {
        tokens += cs[i].n_tokens;
        ok += cs[i].ok;
        ttft[i] = cs[i].ttft;
        memcpy(gaps + n_gaps, cs[i].gaps, (size_t)cs[i].n_gaps * sizeof(double));
        n_gaps += cs[i].n_gaps;
        free(cs[i].gaps);
    }
    printf("clients %3d: ok %d/%d, %ld tokens in %.2f s = %.1f tokens/s; "
           "ttft p50 %.1f ms p99 %.1f ms; itl p50 %.2f ms p99 %.2f ms\n",
           n, ok, n, tokens, wall, tokens / wall, pct(ttft, n, 0.5) * 1e3,
           pct(ttft, n, 0.99) * 1e3, pct(gaps, n_gaps, 0.5) * 1e3,
           pct(gaps, n_gaps, 0.99) * 1e3);
    fflush(stdout);
    free(ttft);
    free(gaps);
    free(cs);
    free(th);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_load HOST PORT [CLIENTS[,CLIENTS...]] [MAX_TOKENS]\n");
        return 2;
    }
    const char *list = argc > 3 ? argv[3] : "1,4,16";
    int max_tokens = argc > 4 ? atoi(argv[4]) : 128;
    char *copy = strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int n = atoi(t);
        if (n >= 1 && n <= 1024) run(argv[1], atoi(argv[2]), n, max_tokens > 0 ? max_tokens : 1);
    }
    free(copy);
    return 0;
}

/* metrics.c - counters and histograms for /metrics, rendered in the Prometheus text format.
 *
 * Names follow Prometheus conventions: *_total for counters, *_seconds histograms with
 * cumulative `le` buckets ending in +Inf, _sum and _count. Request counts are kept per HTTP
 * status in a small fixed table (statuses 100..599).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int metrics_hist_init(metrics_hist *h, const double *bounds, int n)
{
    if (n < 0 || n > METRICS_MAX_BUCKETS) return KS_ERR_INVALID;
    for (int i = 1; i < n; i++)
        if (!(bounds[i] > bounds[i - 1])) return KS_ERR_INVALID;
    memset(h, 0, sizeof(*h));
    memcpy(h->bounds, bounds, (size_t)n * sizeof(double));
    h->n_bounds = n;
    return 0;
}

void metrics_hist_observe(metrics_hist *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

double metrics_hist_quantile(const metrics_hist *h, double q)
{
    if (h->count == 0) return 0;
    double rank = q * (double)h->count;
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        uint64_t prev = cum;
        cum += h->counts[i];
        if ((double)cum >= rank && h->counts[i] > 0) {
            if (i == h->n_bounds) return h->n_bounds ? h->bounds[h->n_bounds - 1] : 0;
            double lo = i ? h->bounds[i - 1] : 0;
            double frac = (rank - (double)prev) / (double)h->counts[i];
            return lo + (h->bounds[i] - lo) * frac;
        }
    }
    return h->n_bounds ? h->bounds[h->n_bounds - 1] : 0;
}

#define METRICS_N_STATUS 500 /* statuses 100..599 */

struct metrics {
    pthread_mutex_t mu;
    uint64_t requests[METRICS_N_STATUS];
    uint64_t prompt_tokens, generated_tokens, cached_tokens;
    metrics_hist ttft, itl;
};

static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                                    0.1,   0.25,   0.5,   1,    2.5,   5};

int metrics_create(metrics **out)
{
    metrics *m = calloc(1, sizeof(*m));
    if (!m) return KS_ERR_NOMEM;
    pthread_mutex_init(&m->mu, NULL);
    if (metrics_hist_init(&m->ttft, ttft_bounds, (int)KS_ARRAY_LEN(ttft_bounds)) ||
        metrics_hist_init(&m->itl, itl_bounds, (int)KS_ARRAY_LEN(itl_bounds))) {
        metrics_destroy(m);
        return KS_ERR_INTERNAL;
    }
    *out = m;
    return 0;
}

void metrics_destroy(metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_count_request(metrics *m, int status)
{
    if (status < 100 || status > 599) return;
    pthread_mutex_lock(&m->mu);
    m->requests[status - 100]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_add_tokens(metrics *m, uint64_t prompt, uint64_t generated, uint64_t cached)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt;
    m->generated_tokens += generated;
    m->cached_tokens += cached;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_ttft(metrics *m, double seconds)
{
    pthread_mutex_lock(&m->mu);
    metrics_hist_observe(&m->ttft, seconds);
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_itl(metrics *m, double seconds)
{
    pthread_mutex_lock(&m->mu);
    metrics_hist_observe(&m->itl, seconds);
    pthread_mutex_unlock(&m->mu);
}

/* A growable text buffer; `failed` latches on allocation failure. */
typedef struct text_buf {
    char *s;
    size_t len, cap;
    int failed;
} text_buf;

static void tb_printf(text_buf *b, const char *fmt, ...) KS_PRINTF(2, 3);
static void tb_printf(text_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n + 1;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->failed = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static void render_counter(text_buf *b, const char *name, const char *help, uint64_t v)
{
    tb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
              (unsigned long long)v);
}

static void render_gauge(text_buf *b, const char *name, const char *help, double v)
{
    tb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void render_hist(text_buf *b, const char *name, const char *help, const metrics_hist *h)
{
    tb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        tb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    tb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    tb_printf(b, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

int metrics_render(metrics *m, const metrics_gauges *g, char **out, size_t *len)
{
    text_buf b = {.s = malloc(4096), .cap = 4096};
    if (!b.s) return KS_ERR_NOMEM;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    tb_printf(&b, "# HELP kvserve_requests_total HTTP requests answered, by status code.\n"
                  "# TYPE kvserve_requests_total counter\n");
    for (int i = 0; i < METRICS_N_STATUS; i++)
        if (m->requests[i])
            tb_printf(&b, "kvserve_requests_total{status=\"%d\"} %llu\n", i + 100,
                      (unsigned long long)m->requests[i]);
    render_counter(&b, "kvserve_prompt_tokens_total", "Prompt tokens processed.", m->prompt_tokens);
    render_counter(&b, "kvserve_generated_tokens_total", "Tokens generated.", m->generated_tokens);
    render_counter(&b, "kvserve_cached_prompt_tokens_total",
                   "Prompt tokens served from the prefix cache.", m->cached_tokens);
    render_hist(&b, "kvserve_time_to_first_token_seconds",
                "Time from request arrival to the first generated token.", &m->ttft);
    render_hist(&b, "kvserve_inter_token_latency_seconds",
                "Time between consecutive generated tokens of a stream.", &m->itl);
    pthread_mutex_unlock(&m->mu);
    metrics_gauges z = {0};
    if (!g) g = &z;
    render_gauge(&b, "kvserve_kv_bytes_used", "KV cache bytes in use.", (double)g->kv_bytes_used);
    render_gauge(&b, "kvserve_kv_bytes_budget", "KV cache byte budget.",
                 (double)g->kv_bytes_budget);
    render_gauge(&b, "kvserve_sequences_active", "Sequences being prefilled or decoded.",
                 (double)g->seqs_active);
    render_gauge(&b, "kvserve_sequences_queued", "Requests waiting for admission.",
                 (double)g->seqs_queued);
    tb_printf(&b, "# HELP kvserve_kv_tokens_kept Tokens kept in the KV cache, per layer (summed "
                  "over KV heads and active sequences).\n# TYPE kvserve_kv_tokens_kept gauge\n");
    for (int32_t l = 0; g->tokens_kept && l < g->n_layer; l++)
        tb_printf(&b, "kvserve_kv_tokens_kept{layer=\"%d\"} %lld\n", l,
                  (long long)g->tokens_kept[l]);
    tb_printf(&b, "# HELP kvserve_kv_bytes_per_token KV cache bytes one token takes, per layer "
                  "(all KV heads, K and V in their storage types).\n"
                  "# TYPE kvserve_kv_bytes_per_token gauge\n");
    for (int32_t l = 0; l < g->layers_total; l++)
        tb_printf(&b, "kvserve_kv_bytes_per_token{layer=\"%d\"} %llu\n", l,
                  (unsigned long long)g->bytes_per_token_layer);
    tb_printf(&b, "# HELP kvserve_kv_bytes_per_layer K and V bytes of the tokens kept, per layer "
                  "(summed over KV heads and active sequences).\n"
                  "# TYPE kvserve_kv_bytes_per_layer gauge\n");
    for (int32_t l = 0; g->kv_bytes && l < g->n_layer; l++)
        tb_printf(&b, "kvserve_kv_bytes_per_layer{layer=\"%d\"} %lld\n", l,
                  (long long)g->kv_bytes[l]);
    tb_printf(&b,
              "# HELP kvserve_kv_retrieval_blocks KV blocks of retrieval sequences by tier.\n"
              "# TYPE kvserve_kv_retrieval_blocks gauge\n"
              "kvserve_kv_retrieval_blocks{tier=\"ram\"} %lld\n"
              "kvserve_kv_retrieval_blocks{tier=\"disk\"} %lld\n",
              (long long)g->spill_blocks_ram, (long long)g->spill_blocks_disk);
    int64_t reads = g->spill_hot_hits + g->spill_hot_misses;
    render_gauge(&b, "kvserve_kv_spill_hot_hit_rate",
                 "Share of spilled-block reads served by the RAM hot set (active sequences).",
                 reads ? (double)g->spill_hot_hits / (double)reads : 0.0);
    render_gauge(&b, "kvserve_kv_spill_bytes_read",
                 "Bytes read from spill files by the active sequences.",
                 (double)g->spill_bytes_read);
    if (b.failed) {
        free(b.s);
        return KS_ERR_NOMEM;
    }
    *out = b.s;
    *len = b.len;
    return 0;
}

/* metrics.h - server counters and latency histograms, rendered as Prometheus text (0.0.4).
 *
 * All functions are thread-safe (one mutex); observations are cheap.
 */
#ifndef KVSERVE_METRICS_H
#define KVSERVE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"

#define METRICS_MAX_BUCKETS 24

/* A cumulative histogram with fixed upper bounds (seconds), as Prometheus defines it. */
typedef struct metrics_hist {
    double bounds[METRICS_MAX_BUCKETS];       /* ascending; +Inf is implicit */
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    int n_bounds;
    double sum;
    uint64_t count;
} metrics_hist;

/* Initialises with n ascending bounds (n <= METRICS_MAX_BUCKETS). KS_ERR_INVALID otherwise. */
int metrics_hist_init(metrics_hist *h, const double *bounds, int n) KS_WUR;
void metrics_hist_observe(metrics_hist *h, double v);
/* Value below which a fraction q of observations fall, interpolated within its bucket. */
double metrics_hist_quantile(const metrics_hist *h, double q);

typedef struct metrics metrics;

int metrics_create(metrics **out) KS_WUR;
void metrics_destroy(metrics *m); /* accepts NULL */

void metrics_count_request(metrics *m, int status);
void metrics_add_tokens(metrics *m, uint64_t prompt, uint64_t generated, uint64_t cached);
void metrics_observe_ttft(metrics *m, double seconds);
void metrics_observe_itl(metrics *m, double seconds);

/* Values sampled at render time from the scheduler and KV pool. */
typedef struct metrics_gauges {
    uint64_t kv_bytes_used;
    uint64_t kv_bytes_budget;
    int64_t seqs_active;
    int64_t seqs_queued;
    /* Tokens kept in the KV cache per layer, summed over KV heads and active sequences. */
    int32_t n_layer;
    const int64_t *tokens_kept; /* [n_layer], may be NULL */
    const int64_t *kv_bytes;    /* [n_layer] K + V bytes of those tokens, may be NULL */
    /* Retrieval policy, summed over its sequences: blocks by tier, hot-set reads, spill I/O. */
    int64_t spill_blocks_ram, spill_blocks_disk, spill_hot_hits, spill_hot_misses;
    int64_t spill_bytes_read;
    /* KV bytes one token takes in each layer (all KV heads, K + V in their storage types);
     * layers_total layers, 0 before the model is loaded. */
    int32_t layers_total;
    uint64_t bytes_per_token_layer;
} metrics_gauges;

/* Renders every metric as Prometheus text into a malloc'd string (caller frees). */
int metrics_render(metrics *m, const metrics_gauges *g, char **out, size_t *len) KS_WUR;

#endif

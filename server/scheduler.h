/* scheduler.h - the inference scheduler: a request queue, one inference thread, continuous
 * batching.
 *
 * Requests are submitted from the loop thread. One worker thread admits them when the KV
 * pool has room, prefills prompts in chunks interleaved with the decode steps of running
 * sequences (all in one model_forward call per step), samples, detokenises, applies stop
 * strings, and sends events back to the loop thread through a uv_async (coalesced: one
 * wake-up drains every pending event). The loop never waits for compute.
 *
 * Lifetime of a sch_req: created by sch_submit; the loop receives its events through the
 * callback; after the final event (SCH_EV_DONE or SCH_EV_ERROR) the request is freed and
 * must not be used. sch_req_cancel (a client disconnected) stops event delivery at once;
 * the worker drops the sequence and frees its KV blocks at its next step.
 *
 * Threads: every function except those marked otherwise runs on the loop thread.
 */
#ifndef KVSERVE_SCHED_H
#define KVSERVE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "kvserve/base.h"
#include "kvserve/grammar.h"
#include "kvserve/kvcache.h"
#include "kvserve/model.h"
#include "kvserve/policy_config.h"
#include "kvserve/spill.h"
#include "metrics.h"
#include "sched_types.h"
#include "sched_view.h"

typedef struct sch sch;
typedef struct sch_req sch_req;

typedef void (*sch_event_fn)(sch_req *r, const sch_event *ev, void *ud);

/* Defaults: greedy off (temperature 1), no filters, no penalties, random seed, no logprobs. */
void sch_sampling_default(sch_sampling *s);

/* A group of requests over one prompt (n > 1 choices): the followers wait until the leader's
 * prompt is prefilled (and published in the prefix cache), then start from its cached blocks
 * copy-on-write and compute only the prompt's last partial block. Refcounted: each request
 * holds a reference from submit to free; the creator releases its own. Any thread. */
typedef struct sch_group sch_group;
sch_group *sch_group_create(void);    /* NULL when out of memory */
void sch_group_release(sch_group *g); /* accepts NULL */

typedef struct sch_request_params {
    const int32_t *prompt; /* copied */
    int32_t n_prompt;
    int32_t max_tokens;
    const char *const *stops; /* copied */
    size_t n_stops;
    sch_sampling sampling;
    const kv_policy *policy; /* NULL: the server's */
    void *policy_config;     /* a kv_policy_config, owned by the request from submit on
                                (even on error) */
    void (*policy_config_free)(void *);
    gram *grammar;           /* NULL: unconstrained; else owned by the request from submit on
                                (even on error): tokens are masked to what it accepts */
    const int32_t *bias_ids; /* logit_bias: n_bias token ids (copied; < n_vocab) */
    const float *bias;       /* added to those logits before sampling (copied) */
    int32_t n_bias;
    double arrival;       /* ks_time_now() when the request arrived (for TTFT) */
    sch_group *group;     /* NULL, or the group this request belongs to */
    bool group_follower;  /* wait for the group leader's prefill before starting */
    bool render_special;  /* detokenise special/control tokens as their text (tool calls) */
    const char *view_tag; /* NULL, or a live-view tag (copied; server/sched_view.h) */
    sch_event_fn on_event;
    void *ud;
} sch_request_params;

typedef struct sch_params {
    uv_loop_t *loop;
    const model *model;                    /* not owned */
    kv_pool *pool;                         /* not owned */
    const kv_policy *policy;               /* server default; NULL = full */
    const kv_policy_config *policy_config; /* server default (not owned; outlives it) */
    metrics *metrics;                      /* may be NULL; not owned */
    int32_t n_threads;                     /* model_ctx threads */
    int32_t max_queue;                     /* waiting requests beyond this -> KS_ERR_FULL (429) */
    int32_t max_concurrent;                /* sequences decoding at once */
    int32_t prefill_chunk;                 /* prompt tokens per sequence per step */
    int32_t max_batch_tokens;              /* tokens per model_forward */
    double queue_timeout_s;                /* waiting longer -> SCH_EV_ERROR 503 */
    double aging_s;                  /* a waiting request that does not fit lets later ones pass
                                        until it has waited this long (<= 0: 5 s) */
    int32_t n_ctx;                   /* prompt + generated tokens per sequence; 0 = unlimited */
    void (*test_deliver_hook)(void); /* tests only (NULL otherwise): runs on the loop thread
                                        between taking the ready list and delivering it */
} sch_params;

/* Creates the scheduler and starts its inference thread. */
int sch_create(const sch_params *p, sch **out, ks_diag *d) KS_WUR;
/* Stops the worker, fails every request still known with 503 (events are not delivered:
 * the caller has already aborted its clients) and frees everything. The async handle is
 * closed, so the caller runs the loop afterwards. */
void sch_destroy(sch *s);

/* Queues a request. Returns 0 and *out, or KS_ERR_FULL (queue full: 429),
 * KS_ERR_INVALID (bad params), KS_ERR_NOMEM. On error no callback will run. */
int sch_submit(sch *s, const sch_request_params *p, sch_req **out) KS_WUR;
/* 0 when a prompt of n_prompt tokens under policy config pc (NULL: the server's) can ever be
 * admitted; else KS_ERR_RANGE and msg says which limit (the pool, given the policy's bound)
 * and how to raise it. */
int sch_prompt_fits(sch *s, const kv_policy_config *pc, int32_t n_prompt, char *msg,
                    size_t cap) KS_WUR;
/* Cancels: no more events; KV blocks are freed at the worker's next step. */
void sch_req_cancel(sch_req *r);
/* Backpressure: a paused sequence keeps its KV cache but is left out of decode steps. */
void sch_req_set_paused(sch_req *r, bool paused);

typedef struct sch_counts {
    int32_t active;
    int32_t queued;
} sch_counts;
void sch_get_counts(sch *s, sch_counts *out); /* any thread */

/* Per-sequence KV snapshot for /v1/kv (refreshed by the worker after every step). */
typedef struct sch_seq_info {
    uint64_t id;
    char policy[32];
    int64_t tokens_seen;
    int32_t n_layer;
    int64_t *tokens_kept; /* [n_layer] summed over KV heads */
    size_t bytes;
    size_t kv_token_bytes; /* K + V bytes of one token in one (layer, KV head) table */
    int32_t n_prompt;
    int32_t n_generated;
    int32_t policy_kind;      /* registry index of its policy */
    kv_policy_params params;  /* that policy's resolved parameters */
    bool has_spill;           /* the policy has a spill tier (kv_retrieval_get_stats) */
    kv_retrieval_stats spill; /* its blocks in RAM / on disk, hot-set and spill I/O */
} sch_seq_info;
/* Copies the snapshot (caller frees with sch_seq_info_free). */
int sch_get_seq_info(sch *s, sch_seq_info **out, size_t *n) KS_WUR;
void sch_seq_info_free(sch_seq_info *v, size_t n);
/* The final state of the last sequences that ended (oldest first), same shape. */
int sch_get_finished_info(sch *s, sch_seq_info **out, size_t *n) KS_WUR;

/* Prompt prefix cache counters (zeros when the cache is off). Any thread. The cache's blocks
 * count in the pool's bytes used; those only it holds are freed whenever the pool runs short. */
void sch_get_prefix_stats(sch *s, kv_prefix_stats *out);
/* The scheduler's prefix cache (NULL if none); thread-safe to save and restore into. */
kv_prefix *sch_prefix(sch *s);

/* Live view (sched_view.h): finds the sequence by id (tag NULL) or by view tag and asks the
 * worker for a fresh frame; returns a reference in *out when its latest frame is newer than
 * after_version. step (tag only): step mode for the next second: the sequence makes no step
 * while a frame waits for the viewer, so every step is seen. Loop thread (it walks the
 * request list that only the loop frees). */
sch_view_state sch_view_lookup(sch *s, uint64_t id, const char *tag, bool step,
                               uint64_t after_version, sch_view **out);

#endif

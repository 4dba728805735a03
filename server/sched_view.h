/* sched_view.h - frames of the live KV view (internal to server/).
 *
 * A frame is an immutable, refcounted picture of one sequence: its kv_view (kept positions
 * per layer and KV head), its tokens, timings and policy. The scheduler's worker builds
 * frames between steps, only for sequences someone looks at (a viewer asked since the last
 * frame, or the request carries a view tag), so an unwatched server pays nothing; a viewer
 * that asks at a few Hz gets at most a few frames per second. The loop thread takes
 * references with sch_view_lookup and renders them (kv_feed.c). Finished sequences keep their
 * last frame in a small ring so that a viewer arriving late still sees the end state.
 */
#ifndef KVSERVE_SCHED_VIEW_H
#define KVSERVE_SCHED_VIEW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvserve/kv_view.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_config.h"
#include "kvserve/spill.h"

#define SCH_VIEW_TAG_MAX 48 /* view tags: 8..47 characters of [A-Za-z0-9_-] */
#define SCH_VIEW_SPACING 50 /* a frame that took t waits 50 t for the next: <= ~2% of time */
#define SCH_VIEW_RING 8     /* finished sequences whose last frame is kept */

typedef struct sch_view {
    atomic_int ref;
    uint64_t seq_id;
    uint64_t version; /* increases with every frame of the sequence */
    char tag[SCH_VIEW_TAG_MAX];
    char policy[32];
    kv_view *kv;
    int32_t *tokens; /* [n_tokens] prompt then generated token ids */
    int32_t n_tokens;
    int32_t n_prompt;
    int32_t n_generated;
    int32_t *budget;     /* [kv->n_layer] tokens per KV head the policy allows, -1: no limit */
    int64_t sink;        /* positions [0, sink) are the policy's sinks */
    int64_t window_from; /* positions [window_from, tokens seen) are its window */
    bool finished;
    double ttft_s;     /* -1 before the first token */
    double decode_tps; /* generated tokens per second after the first, 0 before */
    bool has_retrieval;
    kv_retrieval_stats rs;
    kv_pool_stats pool;
} sch_view;

/* What the worker knows about a sequence when it builds a frame. */
typedef struct sch_view_src {
    uint64_t seq_id, version;
    const char *tag;
    const kv_policy_config *pc;
    const int32_t *prompt;
    int32_t n_prompt;
    const int32_t *gen;
    int32_t n_gen;
    double arrival, t_first, t_last; /* t_first 0: no token yet */
    bool finished;
} sch_view_src;

/* Builds a frame of seq (worker thread, between steps). Returns 0 or KS_ERR_NOMEM. */
int sch_view_build(kv_seq *seq, const sch_view_src *src, sch_view **out) KS_WUR;
sch_view *sch_view_ref(sch_view *v);
void sch_view_unref(sch_view *v); /* accepts NULL; any thread */

typedef enum sch_view_state {
    SCH_VIEW_UNKNOWN = 0, /* no such sequence (never, or finished long ago) */
    SCH_VIEW_WAITING,     /* the sequence exists (or the tag is not seen yet): no new frame */
    SCH_VIEW_READY,       /* *out holds a frame newer than after_version */
} sch_view_state;

/* Whether a view tag is well formed. */
bool sch_view_tag_ok(const char *tag);

#endif

/* scheduler.c - request queue, inference thread and continuous batching.
 *
 * One worker thread owns model_ctx and every admitted sequence. Each step it
 *   1. admits waiting requests while the KV pool has room (in order, but one that does not
 *      fit lets later ones pass until it has waited aging_s; one that can never fit fails
 *      at once with 400; one that waits longer than queue_timeout_s fails with 503), drops
 *      cancelled ones (freeing their blocks),
 *   2. builds one batch: one decode token for every running, unpaused sequence, then prompt
 *      chunks (prefill_chunk tokens each) up to max_batch_tokens, so running streams keep
 *      flowing while long prompts are prefilled,
 *   3. runs model_forward without holding the lock, samples, detokenises (tok_stream), filters
 *      stop strings (sse_stop) and queues events,
 *   4. wakes the loop with uv_async_send (coalesced: the loop drains all queued events).
 *
 * Prefix caching: sequences of the `full` policy start from the longest cached prefix of
 * their prompt (kv_prefix, copy-on-write blocks) and prefill only the rest; at least the last
 * prompt token is always computed so that its logits exist. After its prefill a sequence
 * publishes its full prompt blocks. Cached blocks nobody else uses count as free for
 * admission: the pool reclaims them (LRU) when it runs short.
 *
 * Ownership: a sch_req is shared by the loop (events, cancel) and the worker (KV, sampling).
 * The worker sets worker_done when it will no longer use the request's resources, and
 * in_active while the request sits in its active set (it still reads the request there); the
 * loop frees it after delivering (or, if cancelled, discarding) its last event once both say
 * so (active_remove queues it again if the loop got there first). All shared fields are
 * guarded by sch.mu except the cancelled/paused flags (atomics).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvserve/gguf.h"
#include "kvserve/policy_args.h"
#include "sched_sample.h"
#include "sched_view.h"
#include "scheduler.h"
#include "sse.h"

#define SCH_DONE_INFO 16 /* finished sequences /v1/kv still lists (their final state) */
#define SCH_STEP_TAGS 8  /* step-mode viewers that may wait for their sequence at once */

typedef struct sch_evnode {
    struct sch_evnode *next;
    sch_event ev;
    char text[];
} sch_evnode;

struct sch_group {
    atomic_int refs;
    atomic_bool prefilled; /* the leader's prompt is in the cache (or the leader is gone) */
};

sch_group *sch_group_create(void)
{
    sch_group *g = calloc(1, sizeof(*g));
    if (g) atomic_store(&g->refs, 1);
    return g;
}

void sch_group_release(sch_group *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) free(g);
}

struct sch_req {
    sch *s;
    uint64_t id;
    sch_req *all_prev, *all_next; /* every live request (for destroy) */
    sch_req *wait_next;           /* waiting queue */
    sch_req *ready_next;          /* requests with events for the loop (under mu) */
    sch_req *deliver_next;        /* the loop's private copy of that list (loop only) */
    bool in_ready;
    /* immutable after submit */
    int32_t *prompt;
    int32_t n_prompt;
    int32_t max_tokens;
    const kv_policy *policy;
    void *policy_config;
    void (*policy_config_free)(void *);
    gram *grammar; /* owned; read by the worker's sampler */
    double arrival, t_enqueue;
    sch_event_fn on_event;
    void *ud;
    sch_group *group; /* NULL or a reference */
    bool follower;    /* waits for group->prefilled */
    bool render_special;
    atomic_bool cancelled;
    atomic_bool paused;
    /* worker state */
    sse_stop stop;
    sch_sampler sampler;
    kv_seq *kv;
    float *logits; /* [n_vocab] */
    tok_stream ts;
    int32_t n_past;   /* prompt tokens fed (starts at n_cached) */
    int32_t n_cached; /* prompt tokens taken from the prefix cache */
    int32_t n_generated;
    int32_t next_token;
    double t_last;
    double t_first; /* first token sampled (TTFT), 0 before */
    int32_t *gen;   /* [max_tokens] generated ids, for the live view */
    /* live view (server/kv_feed.c), under mu */
    char view_tag[SCH_VIEW_TAG_MAX];
    bool view_want; /* a viewer asked for a frame since the last one */
    bool view_ever; /* someone looked: keep the final frame */
    sch_view *view; /* latest frame */
    uint64_t view_version;
    double view_next;      /* no new frame before this time (caps the worker's share) */
    double step_until;     /* step mode: until then, no step while a frame waits for its viewer */
    bool view_taken;       /* the latest frame was handed to a viewer */
    int64_t view_progress; /* n_past + n_generated at the latest frame */
    /* shared under mu */
    sch_evnode *ev_head, *ev_tail;
    bool worker_done;
    bool in_active; /* in s->active: the worker still reads it, the loop must not free it */
};

struct sch {
    sch_params p;
    const model_hparams *hp;
    rope_params rope;            /* the global layers' rotary embedding, for policies */
    rope_params rope_swa;        /* the sliding-window layers' one */
    const int32_t *layer_window; /* the model's sliding windows per layer, or NULL */
    const tok_vocab *vocab;
    model_ctx *ctx;
    kv_prefix *prefix;  /* prompt prefix cache over p.pool; NULL if it could not be made */
    gram_vocab *gvocab; /* token trie for grammars: made by the loop at the first grammar
                           request, read-only afterwards (the worker sees it after submit) */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uv_async_t async;
    bool stop;
    sch_req *all;
    sch_req *wait_head, *wait_tail;
    int32_t n_waiting;
    sch_req *ready_head;
    uint64_t next_id;
    /* worker-owned */
    sch_req **active;
    int32_t n_active; /* written by the worker under mu */
    model_seq_batch *batch;
    sch_req **batch_req;
    char *text; /* scratch for detokenised text */
    size_t text_cap;
    /* /v1/kv snapshot, under mu */
    sch_seq_info *snap; /* [cap_snap] reused every step; entries keep their tokens_kept */
    size_t n_snap, cap_snap;
    sch_seq_info done[SCH_DONE_INFO]; /* ring of finished sequences' final state */
    size_t n_done, done_head;
    sch_view *ring[SCH_VIEW_RING]; /* final frames of watched finished sequences */
    size_t ring_head;
    struct { /* step-mode viewers waiting for their tagged sequence to be submitted */
        char tag[SCH_VIEW_TAG_MAX];
        double until;
    } step_tags[SCH_STEP_TAGS];
};

static void seq_info_fill(sch *s, sch_req *r, sch_seq_info *o);
static void view_capture_locked(sch *s, sch_req *r, bool finished);

void sch_sampling_default(sch_sampling *s)
{
    memset(s, 0, sizeof(*s));
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
    s->n_logprobs = -1;
}

/* ---------------------------------------------------------------- events (worker side) */

/* Queues an event for the loop; caller holds mu. */
static void push_event_locked(sch *s, sch_req *r, const sch_event *ev)
{
    size_t ml = ev->kind == SCH_EV_ERROR && ev->message ? strlen(ev->message) + 1 : 0;
    sch_evnode *n = malloc(sizeof(*n) + ev->len + 1 + ml);
    if (n) {
        n->next = NULL;
        n->ev = *ev;
        if (ev->len) memcpy(n->text, ev->text, ev->len);
        n->text[ev->len] = 0;
        n->ev.text = n->text;
        n->ev.message = NULL;
        if (ml) { /* copied: a message may be formatted on the worker's stack */
            memcpy(n->text + ev->len + 1, ev->message, ml);
            n->ev.message = n->text + ev->len + 1;
        }
        if (r->ev_tail)
            r->ev_tail->next = n;
        else
            r->ev_head = n;
        r->ev_tail = n;
    }
    if (!r->in_ready) {
        r->in_ready = true;
        r->ready_next = s->ready_head;
        s->ready_head = r;
    }
}

static void push_event(sch *s, sch_req *r, const sch_event *ev)
{
    pthread_mutex_lock(&s->mu);
    push_event_locked(s, r, ev);
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/* Releases the worker's resources of a request and hands it to the loop for freeing. */
static void req_release_locked(sch *s, sch_req *r, const sch_event *final)
{
    if (r->group && !r->follower) atomic_store(&r->group->prefilled, true); /* never strand */
    if (r->kv) { /* keep the final state for /v1/kv and for late viewers */
        sch_seq_info *o = &s->done[s->done_head];
        if (!o->tokens_kept) o->tokens_kept = calloc((size_t)s->hp->n_layer, sizeof(int64_t));
        if (o->tokens_kept) {
            seq_info_fill(s, r, o);
            s->done_head = (s->done_head + 1) % SCH_DONE_INFO;
            s->n_done = KS_MIN(s->n_done + 1, SCH_DONE_INFO);
        }
        if (r->view_ever || r->view_tag[0]) view_capture_locked(s, r, true);
    }
    kv_seq_destroy(r->kv);
    r->kv = NULL;
    free(r->logits);
    r->logits = NULL;
    sch_sampler_deinit(&r->sampler);
    sse_stop_deinit(&r->stop);
    r->worker_done = true;
    sch_event none = {.kind = SCH_EV_DONE, .token = -1};
    push_event_locked(s, r, final ? final : &none);
}

static void fail_locked(sch *s, sch_req *r, int status, const char *msg)
{
    sch_event ev = {.kind = SCH_EV_ERROR, .token = -1, .status = status, .message = msg};
    req_release_locked(s, r, &ev);
}

/* ---------------------------------------------------------------- admission */

/* Budget units of `tokens` tokens of one table. A KIVI pool charges its newest blocks (the f16
 * window and a prefill chunk being appended, before they are sealed) as residual blocks,
 * kv_pool_residual_units each; other pools 1 per block. */
static int64_t blocks_for(const sch *s, int64_t tokens)
{
    int64_t bt = kv_pool_block_tokens(s->p.pool), n = (tokens + bt - 1) / bt;
    if (!kv_pool_is_sealable(s->p.pool)) return n;
    int64_t newest = kv_pool_kv_residual(s->p.pool) + s->p.prefill_chunk;
    int64_t resid = KS_MIN(n, (newest + bt - 1) / bt + 1);
    return n + resid * (kv_pool_residual_units(s->p.pool) - 1);
}

static int32_t req_prefill_chunk(const sch *s, const sch_req *r);
/* Pool blocks a request's sequence can hold while its prompt goes in, plus one decode token.
 * Its policy's descriptor bounds that (kv_policy_desc.admission): a policy that keeps a window
 * holds at most its bound per table (plus a block of slack), except for its dense layers;
 * policies that compress only after the prompt hold the whole prompt. So a long prompt under
 * a bounded policy is admitted. */
static int32_t pc_prefill_chunk(const sch *s, const kv_policy_config *pc);

static int64_t pc_blocks(const sch *s, const kv_policy_config *pc, int32_t n_prompt,
                         int64_t *bound_out)
{
    const kv_policy_desc *pd = kv_policy_config_desc(pc);
    const int64_t n = (int64_t)n_prompt + 1, chunk = pc_prefill_chunk(s, pc);
    int32_t dense_layers = 0;
    int64_t bound =
        pd->admission(kv_policy_config_params(pc, pd), n, chunk, s->hp->n_layer, &dense_layers);
    const int64_t dense = KS_MAX(0, KS_MIN((int64_t)dense_layers, (int64_t)s->hp->n_layer));
    const int64_t per_table = bound < n ? blocks_for(s, bound) + 1 : blocks_for(s, n);
    if (bound_out) *bound_out = KS_MIN(bound, n);
    return (int64_t)s->hp->n_head_kv *
           (dense * blocks_for(s, n) + ((int64_t)s->hp->n_layer - dense) * per_table);
}

static int64_t req_blocks(const sch *s, const sch_req *r)
{
    return pc_blocks(s, r->policy ? r->policy_config : s->p.policy_config, r->n_prompt, NULL);
}

int sch_prompt_fits(sch *s, const kv_policy_config *pc, int32_t n_prompt, char *msg, size_t cap)
{
    if (!pc) pc = s->p.policy_config;
    int64_t bound = 0, need = pc_blocks(s, pc, n_prompt, &bound);
    kv_pool_stats ps;
    kv_pool_get_stats(s->p.pool, &ps);
    if (need <= ps.blocks_total) return 0;
    const kv_policy_desc *pd = kv_policy_config_desc(pc);
    double mib = (double)need * (double)kv_pool_block_bytes(s->p.pool) / (1 << 20);
    snprintf(msg, cap,
             "pool limit: under policy '%s' (policy bound: %lld KV tokens per layer and head "
             "for this prompt) a %d-token prompt needs %lld KV blocks (%.0f MiB) but the pool "
             "holds %lld (kvcache.memory_mb = %lld); raise kvcache.memory_mb to at least %.0f, "
             "or choose a policy with a smaller bound (e.g. retrieval or sink_window)",
             pd->name, (long long)bound, n_prompt, (long long)need, mib, (long long)ps.blocks_total,
             (long long)(ps.bytes_budget >> 20), mib + 1);
    return KS_ERR_RANGE;
}

/* Blocks that admitted sequences may still take for their prompts plus one decode block. */
static int64_t blocks_reserved(const sch *s)
{
    int64_t sum = 0;
    for (int32_t i = 0; i < s->n_active; i++) {
        const sch_req *r = s->active[i];
        kv_seq_stats st;
        kv_seq_get_stats(r->kv, &st);
        int64_t more = req_blocks(s, r) - st.blocks;
        sum += (more > 0 ? more : 0) + (int64_t)s->hp->n_layer * s->hp->n_head_kv;
    }
    return sum;
}

/* Caller holds mu. A finished request whose last event the loop already delivered (the loop
 * skipped freeing it while it was active) is queued once more so that the loop frees it. */
static void active_remove(sch *s, int32_t i)
{
    sch_req *r = s->active[i];
    r->in_active = false;
    if (r->worker_done && !r->in_ready) {
        r->in_ready = true;
        r->ready_next = s->ready_head;
        s->ready_head = r;
    }
    memmove(&s->active[i], &s->active[i + 1], (size_t)(s->n_active - i - 1) * sizeof(sch_req *));
    s->n_active--;
}

static int req_start(sch *s, sch_req *r)
{
    const model_hparams *hp = s->hp;
    kv_policy_args args = {.config = r->policy ? r->policy_config : s->p.policy_config,
                           .rope = s->rope,
                           .rope_swa = s->rope_swa,
                           .layer_window = s->layer_window,
                           .n_layer = hp->n_layer,
                           .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim,
                           .n_ctx_train = hp->n_ctx_train};
    kv_seq_params kp = {.n_layer = hp->n_layer,
                        .n_head_kv = hp->n_head_kv,
                        .policy = r->policy ? r->policy : s->p.policy,
                        .policy_config = &args,
                        .layer_window = s->layer_window};
    int rc = s->prefix ? kv_prefix_seq_create(s->prefix, &kp, r->prompt, r->n_prompt,
                                              r->n_prompt - 1, &r->kv, &r->n_cached)
                       : kv_seq_create(s->p.pool, &kp, &r->kv);
    if (rc) return rc;
    r->n_past = r->n_cached;
    r->logits = malloc((size_t)s->hp->n_vocab * sizeof(float));
    r->gen = malloc((size_t)r->max_tokens * sizeof(int32_t));
    if (!r->logits || !r->gen) return KS_ERR_NOMEM;
    /* generated text continues the prompt: its first piece keeps SentencePiece's space, with
     * or without echo (only a sequence's very first token loses it) */
    tok_stream_init(&r->ts, s->vocab, r->render_special);
    return 0;
}

/* A request whose policy needs more blocks than the whole pool holds can never run: it is
 * refused at once (400) with what it needs and how to make it fit, instead of waiting out
 * the queue timeout. Returns true when r was failed. Caller holds mu. */
static bool refuse_never_fits(sch *s, sch_req *r, int64_t need)
{
    kv_pool_stats st;
    kv_pool_get_stats(s->p.pool, &st);
    if (need <= st.blocks_total) return false;
    const kv_policy_config *pc = r->policy ? r->policy_config : s->p.policy_config;
    char msg[400];
    snprintf(msg, sizeof(msg),
             "this request can never fit: its prompt of %d tokens under the '%s' KV policy needs "
             "%lld KV blocks (%.1f MiB) but the whole KV pool holds %lld (%.1f MiB); use a "
             "shorter prompt or a bounded kv_policy (sink_window, h2o, retrieval), or raise "
             "kvcache.memory_mb",
             r->n_prompt, kv_policy_config_desc(pc)->name, (long long)need,
             (double)need * (double)st.block_bytes / 1048576.0, (long long)st.blocks_total,
             (double)st.bytes_budget / 1048576.0);
    fail_locked(s, r, 400, msg);
    return true;
}

/* Moves waiting requests into the active set; caller holds mu.
 *
 * Fair, not FIFO: a request that does not fit now does not hold back later ones that do
 * (no head-of-line blocking), until it has waited aging_s; from then on it blocks every
 * request behind it, so that the space freed next goes to it and a large request is not
 * starved by a stream of small ones. */
static void admit_locked(sch *s)
{
    double now = ks_time_now();
    sch_req *prev = NULL, *r = s->wait_head;
    bool blocked = false;
    int64_t reserved = -1; /* blocks_reserved(s), computed once per change of the active set */
    while (r) {
        sch_req *next = r->wait_next;
        bool remove = false;
        int64_t need = 0;
        if (atomic_load(&r->cancelled)) {
            req_release_locked(s, r, NULL);
            remove = true;
        } else if (gguf_mapping_lost(NULL, 0)) {
            fail_locked(s, r, 503,
                        "the model file was truncated or replaced under the server; "
                        "restart kvserve");
            remove = true;
        } else if (refuse_never_fits(s, r, need = req_blocks(s, r))) {
            remove = true;
        } else if (now - r->t_enqueue > s->p.queue_timeout_s) {
            fail_locked(s, r, 503, "timed out waiting for KV cache capacity");
            remove = true;
        } else if (r->follower && !atomic_load(&r->group->prefilled)) {
            /* waits for its leader's prompt without holding back other requests */
        } else if (!blocked && s->n_active < s->p.max_concurrent) {
            if (reserved < 0) reserved = blocks_reserved(s);
            int64_t avail = kv_pool_blocks_free(s->p.pool) - reserved;
            if (need > avail && s->prefix) /* cache-only blocks are freed on demand */
                avail += kv_prefix_reclaimable(s->prefix);
            if (need <= avail) {
                int rc = req_start(s, r);
                if (rc)
                    fail_locked(s, r, 500, "cannot create the sequence's KV cache");
                else {
                    r->in_active = true;
                    s->active[s->n_active++] = r;
                    reserved = -1;
                }
                remove = true;
            } else if (now - r->t_enqueue >= s->p.aging_s) {
                blocked = true; /* aged: later requests wait behind this one */
            }
        }
        if (remove) {
            if (prev)
                prev->wait_next = next;
            else
                s->wait_head = next;
            if (s->wait_tail == r) s->wait_tail = prev;
            s->n_waiting--;
        } else {
            prev = r;
        }
        r = next;
    }
}

/* ---------------------------------------------------------------- decoding */

/* Text produced by token `tok` after the stop filter, into s->text; returns its length. */
static size_t detok(sch *s, sch_req *r, int32_t tok, bool flush)
{
    char piece[512];
    int32_t n = flush ? tok_stream_flush(&r->ts, piece, sizeof(piece))
                      : tok_stream_push(&r->ts, tok, piece, sizeof(piece));
    if (n < 0) n = 0;
    long out = sse_stop_push(&r->stop, piece, (size_t)n, s->text, s->text_cap);
    if (out < 0) out = 0;
    if (flush && !r->stop.stopped) {
        long tail = sse_stop_flush(&r->stop, s->text + out, s->text_cap - (size_t)out);
        if (tail > 0) out += tail;
    }
    return (size_t)out;
}

static void finish_locked(sch *s, sch_req *r, sch_finish why, const char *tail, size_t len)
{
    sch_event ev = {.kind = SCH_EV_DONE, .token = -1, .text = tail, .len = len, .finish = why};
    ev.usage.prompt_tokens = r->n_prompt;
    ev.usage.completion_tokens = r->n_generated;
    ev.usage.cached_tokens = r->n_cached;
    if (s->p.metrics)
        metrics_add_tokens(s->p.metrics, (uint64_t)r->n_prompt, (uint64_t)r->n_generated,
                           (uint64_t)r->n_cached);
    req_release_locked(s, r, &ev);
}

/* Samples the next token of r from its logits and queues the events. Returns true when the
 * sequence is finished (released). Worker thread, without mu. */
static bool sample_step(sch *s, sch_req *r)
{
    sch_event ev = {.kind = SCH_EV_TOKEN};
    ev.logprob = 0;
    int32_t tok = sch_sampler_sample(&r->sampler, r->logits, s->hp->n_vocab, &ev);
    if (tok < 0 && r->sampler.gm) {
        /* The grammar needs a character no token of this vocabulary starts with. */
        pthread_mutex_lock(&s->mu);
        fail_locked(s, r, 400,
                    "grammar: no token of the model's vocabulary can continue the "
                    "output here");
        pthread_mutex_unlock(&s->mu);
        uv_async_send(&s->async);
        return true;
    }
    double now = ks_time_now();
    if (s->p.metrics) {
        if (r->n_generated == 0)
            metrics_observe_ttft(s->p.metrics, now - r->arrival);
        else
            metrics_observe_itl(s->p.metrics, now - r->t_last);
    }
    r->t_last = now;
    if (r->n_generated == 0) r->t_first = now;
    if (r->gen) r->gen[r->n_generated] = tok;
    r->n_generated++;
    sch_sampler_accept(&r->sampler, tok);
    /* A grammar with nothing left to match ends the output like an end-of-generation token
     * (after this token's text). */
    bool eog = tok < 0 || tok_is_eog(s->vocab, tok);
    bool grammar_done = !eog && sch_sampler_grammar_done(&r->sampler);
    if (!eog) {
        ev.token = tok;
        ev.len = detok(s, r, tok, false);
        ev.text = s->text;
        push_event(s, r, &ev);
    }
    bool stopped = eog || grammar_done || r->stop.stopped;
    bool length = !stopped && r->n_generated >= r->max_tokens;
    if (!stopped && !length && (s->p.n_ctx <= 0 || r->n_prompt + r->n_generated < s->p.n_ctx)) {
        r->next_token = tok;
        return false;
    }
    /* Text held back as a possible stop-string start is the output's end unless a stop
     * string matched (an end-of-generation token or a finished grammar flush it). */
    size_t tail = r->stop.stopped ? 0 : detok(s, r, -1, true);
    pthread_mutex_lock(&s->mu);
    finish_locked(s, r, stopped ? SCH_FINISH_STOP : SCH_FINISH_LENGTH, s->text, tail);
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
    return true;
}

/* Prompt tokens per step for a request: its policy may ask for a smaller chunk
 * (kv_policy_desc.prefill_chunk). */
static int32_t req_prefill_chunk(const sch *s, const sch_req *r)
{
    return pc_prefill_chunk(s, r->policy ? r->policy_config : s->p.policy_config);
}

static int32_t pc_prefill_chunk(const sch *s, const kv_policy_config *pc)
{
    const kv_policy_desc *pd = kv_policy_config_desc(pc);
    int32_t chunk = s->p.prefill_chunk;
    if (pd->prefill_chunk) chunk = pd->prefill_chunk(kv_policy_config_params(pc, pd), chunk);
    return chunk;
}

/* Builds the step's batch; returns the number of sequences in it. */
/* Step mode (a viewer with step=1): the sequence makes no step while its latest frame waits
 * for the viewer, so the viewer sees every step. It lapses a second after the viewer's last
 * poll, so a viewer that goes away cannot hold a sequence. Caller holds mu. */
static bool view_holds(const sch_req *r, double now)
{
    return now < r->step_until && r->view && !r->view_taken;
}

static int32_t batch_build(sch *s)
{
    int32_t n = 0, budget = s->p.max_batch_tokens;
    double now = ks_time_now();
    for (int32_t i = 0; i < s->n_active && budget > 0; i++) { /* decode first */
        sch_req *r = s->active[i];
        if (r->n_past < r->n_prompt || atomic_load(&r->paused) || view_holds(r, now)) continue;
        s->batch[n] = (model_seq_batch){
            .kv = r->kv, .tokens = &r->next_token, .n_tokens = 1, .logits = r->logits};
        s->batch_req[n++] = r;
        budget--;
    }
    for (int32_t i = 0; i < s->n_active && budget > 0; i++) { /* then prompt chunks */
        sch_req *r = s->active[i];
        if (r->n_past >= r->n_prompt || view_holds(r, now)) continue;
        int32_t k = KS_MIN(KS_MIN(r->n_prompt - r->n_past, req_prefill_chunk(s, r)), budget);
        bool last = r->n_past + k == r->n_prompt;
        s->batch[n] = (model_seq_batch){.kv = r->kv,
                                        .tokens = r->prompt + r->n_past,
                                        .n_tokens = k,
                                        .logits = last ? r->logits : NULL,
                                        .prompt_chunk = true,
                                        .prompt_last = last};
        s->batch_req[n++] = r;
        budget -= k;
    }
    return n;
}

/* Drops cancelled sequences (freeing their KV blocks); caller holds mu. */
static void reap_cancelled_locked(sch *s)
{
    for (int32_t i = 0; i < s->n_active;) {
        sch_req *r = s->active[i];
        if (atomic_load(&r->cancelled)) {
            req_release_locked(s, r, NULL);
            active_remove(s, i);
        } else {
            i++;
        }
    }
}

static void remove_finished_locked(sch *s)
{
    for (int32_t i = 0; i < s->n_active;) {
        if (s->active[i]->worker_done)
            active_remove(s, i);
        else
            i++;
    }
}

static void snapshot_locked(sch *s);

/* Runs one batch. Caller holds mu; it is released around the forward pass. */
static void step_locked(sch *s, int32_t n)
{
    pthread_mutex_unlock(&s->mu);
    int rc = model_forward(s->ctx, s->batch, n);
    if (rc == 0 && gguf_mapping_lost(NULL, 0)) rc = KS_ERR_IO; /* read zeros: all garbage */
    if (rc == 0) {
        for (int32_t i = 0; i < n; i++) {
            sch_req *r = s->batch_req[i];
            if (kv_retrieval_io_error(r->kv)) { /* this sequence only: the others go on */
                pthread_mutex_lock(&s->mu);
                fail_locked(s, r, 500,
                            "the KV spill file failed (disk full or I/O error); "
                            "see the server log");
                pthread_mutex_unlock(&s->mu);
                uv_async_send(&s->async);
                continue;
            }
            bool prefill = r->n_past < r->n_prompt;
            if (prefill) r->n_past += s->batch[i].n_tokens;
            if (prefill && r->n_past == r->n_prompt && s->prefix &&
                kv_prefix_publish(s->prefix, r->kv, r->prompt, r->n_prompt))
                ks_warn("prefix cache: cannot publish a prompt (out of memory)");
            if (prefill && r->n_past == r->n_prompt && r->group && !r->follower)
                atomic_store(&r->group->prefilled, true);
            if (!prefill || r->n_past == r->n_prompt) (void)sample_step(s, r);
        }
    }
    pthread_mutex_lock(&s->mu);
    if (rc == KS_ERR_FULL) {
        /* Out of KV blocks: fail the youngest sequence so the others can go on. */
        sch_req *victim = s->active[s->n_active - 1];
        fail_locked(s, victim, 503, "KV cache budget exhausted");
    } else if (rc) {
        char msg[700] = "inference failed", path[512];
        if (gguf_mapping_lost(path, sizeof(path)))
            snprintf(msg, sizeof(msg),
                     "the model file %s was truncated or replaced under the "
                     "server; restart kvserve",
                     path);
        for (int32_t i = 0; i < n; i++)
            fail_locked(s, s->batch_req[i], 500, msg);
    }
    remove_finished_locked(s);
    snapshot_locked(s);
    if (rc) uv_async_send(&s->async);
}

static void *worker_main(void *arg)
{
    sch *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        reap_cancelled_locked(s);
        admit_locked(s);
        int32_t n = batch_build(s);
        if (s->ready_head) uv_async_send(&s->async);
        if (n > 0) {
            step_locked(s, n);
            continue;
        }
        snapshot_locked(s);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L; /* wake to check queue timeouts */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---------------------------------------------------------------- loop side */

static void req_free(sch *s, sch_req *r)
{
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        s->all = r->all_next;
    if (r->all_next) r->all_next->all_prev = r->all_prev;
    for (sch_evnode *e = r->ev_head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    kv_seq_destroy(r->kv);
    free(r->logits);
    free(r->gen);
    sch_view_unref(r->view);
    sch_sampler_deinit(&r->sampler);
    sse_stop_deinit(&r->stop);
    if (r->policy_config_free) r->policy_config_free(r->policy_config);
    sch_group_release(r->group);
    gram_destroy(r->grammar);
    free(r->prompt);
    free(r);
}

/* Delivers queued events to the loop-side callbacks (uv_async coalesces wake-ups).
 *
 * The ready list is copied into deliver_next links while mu is held: once in_ready is
 * cleared the worker may put a request on a new ready list at any moment, rewriting its
 * ready_next, so walking ready_next after unlocking would follow the new list and skip the
 * rest of the old one. A skipped request whose last event was its final one then never ends
 * (its stream stalls until the client gives up): the soak stall of issue 14. */
static void on_async(uv_async_t *h)
{
    sch *s = h->data;
    pthread_mutex_lock(&s->mu);
    sch_req *list = s->ready_head;
    s->ready_head = NULL;
    for (sch_req *r = list; r; r = r->ready_next) {
        r->in_ready = false;
        r->deliver_next = r->ready_next;
    }
    pthread_mutex_unlock(&s->mu);
    if (s->p.test_deliver_hook) s->p.test_deliver_hook();
    while (list) {
        sch_req *r = list;
        list = r->deliver_next;
        pthread_mutex_lock(&s->mu);
        sch_evnode *e = r->ev_head;
        r->ev_head = r->ev_tail = NULL;
        bool done = r->worker_done && !r->in_ready && !r->in_active;
        pthread_mutex_unlock(&s->mu);
        while (e) {
            sch_evnode *n = e->next;
            if (!atomic_load(&r->cancelled)) r->on_event(r, &e->ev, r->ud);
            free(e);
            e = n;
        }
        if (done) req_free(s, r);
    }
}

int sch_submit(sch *s, const sch_request_params *p, sch_req **out)
{
    int rc = KS_ERR_INVALID;
    sch_req *r = NULL;
    if (p->n_prompt <= 0 || p->max_tokens <= 0 || !p->on_event) goto fail;
    rc = KS_ERR_NOMEM;
    r = calloc(1, sizeof(*r));
    if (!r) goto fail;
    r->s = s;
    r->prompt = malloc((size_t)p->n_prompt * sizeof(int32_t));
    if (!r->prompt) goto fail;
    memcpy(r->prompt, p->prompt, (size_t)p->n_prompt * sizeof(int32_t));
    r->n_prompt = p->n_prompt;
    r->max_tokens = p->max_tokens;
    r->policy = p->policy;
    r->policy_config = p->policy_config;
    r->policy_config_free = p->policy_config_free;
    r->grammar = p->grammar;
    r->arrival = p->arrival > 0 ? p->arrival : ks_time_now();
    r->t_enqueue = ks_time_now();
    r->on_event = p->on_event;
    r->ud = p->ud;
    r->render_special = p->render_special;
    if (sch_view_tag_ok(p->view_tag)) { /* a tagged request is watched from its start */
        snprintf(r->view_tag, sizeof(r->view_tag), "%s", p->view_tag);
        r->view_want = true;
        double now = ks_time_now(); /* and held from its first step if a step viewer waits */
        for (int i = 0; i < SCH_STEP_TAGS; i++)
            if (s->step_tags[i].until > now && !strcmp(s->step_tags[i].tag, r->view_tag))
                r->step_until = s->step_tags[i].until;
    }
    if ((rc = sse_stop_init(&r->stop, p->stops, p->n_stops))) goto fail_nocfg;
    if (p->grammar && !s->gvocab && (rc = gram_vocab_create(s->vocab, &s->gvocab))) goto fail_nocfg;
    sch_constraints sc = {.grammar = p->grammar,
                          .gvocab = s->gvocab,
                          .bias_ids = p->bias_ids,
                          .bias = p->bias,
                          .n_bias = p->n_bias};
    if ((rc = sch_sampler_init(&r->sampler, &p->sampling, &sc, r->prompt, r->n_prompt,
                               s->hp->n_vocab)))
        goto fail_nocfg;
    pthread_mutex_lock(&s->mu);
    if (s->n_waiting >= s->p.max_queue) {
        pthread_mutex_unlock(&s->mu);
        rc = KS_ERR_FULL;
        goto fail_nocfg;
    }
    r->id = ++s->next_id;
    if (p->group) { /* taken last: every failure path above leaves the group untouched */
        atomic_fetch_add(&p->group->refs, 1);
        r->group = p->group;
        r->follower = p->group_follower;
    }
    r->all_next = s->all;
    if (s->all) s->all->all_prev = r;
    s->all = r;
    if (s->wait_tail)
        s->wait_tail->wait_next = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
    s->n_waiting++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return 0;
fail_nocfg:
    sse_stop_deinit(&r->stop);
    sch_sampler_deinit(&r->sampler);
    free(r->prompt);
    free(r);
    r = NULL;
fail:
    if (p->policy_config_free) p->policy_config_free(p->policy_config);
    gram_destroy(p->grammar);
    free(r);
    return rc;
}

void sch_req_cancel(sch_req *r)
{
    atomic_store(&r->cancelled, true);
    pthread_mutex_lock(&r->s->mu);
    pthread_cond_signal(&r->s->cv);
    pthread_mutex_unlock(&r->s->mu);
}

void sch_req_set_paused(sch_req *r, bool paused)
{
    bool was = atomic_exchange(&r->paused, paused);
    if (was && !paused) {
        pthread_mutex_lock(&r->s->mu);
        pthread_cond_signal(&r->s->cv);
        pthread_mutex_unlock(&r->s->mu);
    }
}

void sch_get_counts(sch *s, sch_counts *out)
{
    pthread_mutex_lock(&s->mu);
    out->active = s->n_active;
    out->queued = s->n_waiting;
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- /v1/kv snapshot */

void sch_seq_info_free(sch_seq_info *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++)
        free(v[i].tokens_kept);
    free(v);
}

/* Makes room for n entries, each with its tokens_kept array; grows only when more sequences
 * are active than ever before, so the per-step refresh does not allocate. */
static bool snapshot_reserve(sch *s, size_t n)
{
    if (n > s->cap_snap) {
        sch_seq_info *v = realloc(s->snap, n * sizeof(*v));
        if (!v) return false;
        memset(v + s->cap_snap, 0, (n - s->cap_snap) * sizeof(*v));
        s->snap = v;
        s->cap_snap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (!s->snap[i].tokens_kept)
            s->snap[i].tokens_kept = calloc((size_t)s->hp->n_layer, sizeof(int64_t));
        if (!s->snap[i].tokens_kept) return false;
    }
    return true;
}

static void snapshot_locked(sch *s)
{
    s->n_snap = 0;
    if (s->n_active == 0 || !snapshot_reserve(s, (size_t)s->n_active)) return;
    for (int32_t i = 0; i < s->n_active; i++) {
        sch_req *r = s->active[i];
        double now = ks_time_now();
        bool stepped = (int64_t)r->n_past + r->n_generated != r->view_progress;
        if (r->kv && ((now < r->step_until && stepped) || (r->view_want && now >= r->view_next)))
            view_capture_locked(s, r, false);
        sch_seq_info *o = &s->snap[s->n_snap];
        seq_info_fill(s, r, o);
        s->n_snap++;
    }
}

/* One sequence's /v1/kv entry into o, whose tokens_kept ([n_layer]) the caller provides.
 * Worker thread. */
static void seq_info_fill(sch *s, sch_req *r, sch_seq_info *o)
{
    int64_t *kept = o->tokens_kept;
    *o = (sch_seq_info){.tokens_kept = kept};
    kv_seq_stats st;
    kv_seq_get_stats(r->kv, &st);
    o->id = r->id;
    const kv_policy *pol = kv_seq_policy(r->kv);
    snprintf(o->policy, sizeof(o->policy), "%s", pol ? pol->name : kv_policy_full.name);
    o->tokens_seen = st.tokens_seen;
    o->bytes = st.bytes;
    o->n_prompt = r->n_prompt;
    o->n_generated = r->n_generated;
    o->n_layer = s->hp->n_layer;
    o->kv_token_bytes = kv_pool_k_row_bytes(s->p.pool) + kv_pool_v_row_bytes(s->p.pool);
    for (int32_t l = 0; l < o->n_layer; l++)
        kept[l] = kv_seq_tokens_kept(r->kv, l);
    o->has_spill = kv_retrieval_get_stats(r->kv, &o->spill) == KS_OK;
    const kv_policy_config *pc = r->policy ? r->policy_config : s->p.policy_config;
    o->policy_kind = KS_MAX(0, pol ? kv_policy_kind_from_name(pol->name) : 0);
    const kv_policy_desc *pd = kv_policy_desc_at(o->policy_kind);
    memcpy(o->params.bytes, kv_policy_config_params(pc, pd), pd->params_size);
}

/* Deep copy of src[0..n) (caller holds mu). */
static int seq_info_copy(const sch_seq_info *src, size_t n, sch_seq_info **out, size_t *n_out)
{
    *n_out = 0;
    *out = NULL;
    if (!n) return 0;
    *out = calloc(n, sizeof(sch_seq_info));
    if (!*out) return KS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = src[i];
        (*out)[i].tokens_kept = malloc((size_t)src[i].n_layer * sizeof(int64_t));
        if (!(*out)[i].tokens_kept) return KS_ERR_NOMEM;
        memcpy((*out)[i].tokens_kept, src[i].tokens_kept, (size_t)src[i].n_layer * sizeof(int64_t));
        *n_out = i + 1;
    }
    return 0;
}

int sch_get_seq_info(sch *s, sch_seq_info **out, size_t *n)
{
    pthread_mutex_lock(&s->mu);
    int rc = seq_info_copy(s->snap, s->n_snap, out, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int sch_get_finished_info(sch *s, sch_seq_info **out, size_t *n)
{
    pthread_mutex_lock(&s->mu);
    sch_seq_info tmp[SCH_DONE_INFO];
    size_t k = 0;
    for (size_t i = 0; i < s->n_done; i++) { /* oldest first */
        const sch_seq_info *o =
            &s->done[(s->done_head + SCH_DONE_INFO - s->n_done + i) % SCH_DONE_INFO];
        if (o->tokens_kept) tmp[k++] = *o;
    }
    int rc = seq_info_copy(tmp, k, out, n);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---------------------------------------------------------------- live view frames */

/* Builds a frame of r (worker thread, caller holds mu); a final one goes to the ring. */
static void view_capture_locked(sch *s, sch_req *r, bool finished)
{
    const kv_policy_config *pc = r->policy ? r->policy_config : s->p.policy_config;
    sch_view_src src = {.seq_id = r->id,
                        .version = r->view_version + 1,
                        .tag = r->view_tag,
                        .pc = pc,
                        .prompt = r->prompt,
                        .n_prompt = r->n_prompt,
                        .gen = r->gen,
                        .n_gen = r->gen ? r->n_generated : 0,
                        .arrival = r->arrival,
                        .t_first = r->t_first,
                        .t_last = r->t_last,
                        .finished = finished};
    sch_view *v = NULL;
    double t0 = ks_time_now();
    if (sch_view_build(r->kv, &src, &v)) return; /* out of memory: the viewer waits */
    /* Building a frame reads every table (O(tokens kept)); waiting SCH_VIEW_SPACING times as
     * long before the next one bounds the worker's time spent on frames to ~1/SCH_VIEW_SPACING
     * whatever the sequence's size or the viewers' refresh rate. */
    double now = ks_time_now();
    r->view_next = now + SCH_VIEW_SPACING * (now - t0);
    r->view_version++;
    r->view_want = false;
    r->view_taken = false;
    r->view_progress = (int64_t)r->n_past + r->n_generated;
    sch_view_unref(r->view);
    r->view = v;
    if (finished) {
        sch_view_unref(s->ring[s->ring_head]);
        s->ring[s->ring_head] = sch_view_ref(v);
        s->ring_head = (s->ring_head + 1) % SCH_VIEW_RING;
    }
}

/* Remembers a step-mode viewer whose tagged sequence is not submitted yet (caller holds mu):
 * sch_submit starts that sequence in step mode. The oldest entry gives way. */
static void step_tag_note(sch *s, const char *tag)
{
    int slot = 0;
    for (int i = 0; i < SCH_STEP_TAGS; i++) {
        if (!strcmp(s->step_tags[i].tag, tag)) {
            slot = i;
            break;
        }
        if (s->step_tags[i].until < s->step_tags[slot].until) slot = i;
    }
    snprintf(s->step_tags[slot].tag, sizeof(s->step_tags[slot].tag), "%s", tag);
    s->step_tags[slot].until = ks_time_now() + 1.0;
}

static bool view_match(const sch_view *v, uint64_t id, const char *tag)
{
    return v && (tag ? !strcmp(v->tag, tag) : v->seq_id == id);
}

sch_view_state sch_view_lookup(sch *s, uint64_t id, const char *tag, bool step,
                               uint64_t after_version, sch_view **out)
{
    sch_view_state st = tag ? SCH_VIEW_WAITING : SCH_VIEW_UNKNOWN;
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    for (sch_req *r = s->all; r; r = r->all_next) {
        if (tag ? strcmp(r->view_tag, tag) != 0 : r->id != id) continue;
        st = SCH_VIEW_WAITING;
        if (r->view && r->view->version > after_version) *out = sch_view_ref(r->view);
        if (!r->worker_done && !*out) r->view_want = r->view_ever = true;
        if (*out) r->view_taken = true;
        if (step && tag && !r->worker_done) { /* only the tag's owner may hold its sequence */
            r->step_until = ks_time_now() + 1.0;
            pthread_cond_signal(&s->cv); /* the worker may be waiting for this frame */
        }
        step = false;
        break;
    }
    for (size_t i = 0; !*out && i < SCH_VIEW_RING; i++) {
        sch_view *v = s->ring[i];
        if (!view_match(v, id, tag)) continue;
        st = SCH_VIEW_WAITING;
        step = false; /* finished */
        if (v->version > after_version) *out = sch_view_ref(v);
    }
    if (step && tag) step_tag_note(s, tag);
    pthread_mutex_unlock(&s->mu);
    return *out ? SCH_VIEW_READY : st;
}

void sch_get_prefix_stats(sch *s, kv_prefix_stats *out)
{
    kv_prefix_get_stats(s->prefix, out); /* thread-safe; zeros for NULL */
}

kv_prefix *sch_prefix(sch *s)
{
    return s ? s->prefix : NULL;
}

/* ---------------------------------------------------------------- create / destroy */

int sch_create(const sch_params *p, sch **out, ks_diag *d)
{
    sch *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->p = *p;
    if (s->p.max_concurrent < 1) s->p.max_concurrent = 1;
    if (s->p.aging_s <= 0) s->p.aging_s = 5;
    if (s->p.prefill_chunk < 1) s->p.prefill_chunk = 256;
    if (s->p.max_batch_tokens < s->p.max_concurrent) s->p.max_batch_tokens = 512;
    if (s->p.max_batch_tokens < s->p.max_concurrent) s->p.max_batch_tokens = s->p.max_concurrent;
    s->hp = model_get_hparams(p->model);
    s->rope = model_rope_params(p->model, -1);
    s->rope_swa = model_rope_params_window(p->model);
    s->layer_window = model_layer_windows(p->model);
    s->vocab = model_get_vocab(p->model);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = KS_ERR_NOMEM;
    s->active = calloc((size_t)s->p.max_concurrent, sizeof(sch_req *));
    s->batch = calloc((size_t)s->p.max_concurrent, sizeof(model_seq_batch));
    s->batch_req = calloc((size_t)s->p.max_concurrent, sizeof(sch_req *));
    s->text_cap = 64 * 1024;
    s->text = malloc(s->text_cap);
    if (!s->active || !s->batch || !s->batch_req || !s->text) goto fail;
    model_ctx_params cp = {.n_threads = p->n_threads > 0 ? p->n_threads : 1,
                           .max_batch_tokens = s->p.max_batch_tokens,
                           .max_seqs = s->p.max_concurrent,
                           .llama_numerics = true};
    if ((rc = model_ctx_create(p->model, &cp, &s->ctx))) {
        ks_diag_set(d, rc, "cannot create the model context: %s", ks_status_str(rc));
        goto fail;
    }
    kv_prefix_params pfp = {.n_layer = s->hp->n_layer, .n_head_kv = s->hp->n_head_kv};
    if (kv_prefix_create(p->pool, &pfp, &s->prefix))
        ks_warn("prefix cache disabled: cannot create it");
    if (uv_async_init(p->loop, &s->async, on_async) < 0) {
        rc = KS_ERR_INTERNAL;
        goto fail;
    }
    s->async.data = s;
    if (pthread_create(&s->thread, NULL, worker_main, s) != 0) {
        rc = KS_ERR_INTERNAL;
        uv_close((uv_handle_t *)&s->async, NULL);
        goto fail;
    }
    s->thread_started = true;
    *out = s;
    return 0;
fail:
    kv_prefix_destroy(s->prefix);
    model_ctx_destroy(s->ctx);
    free(s->active);
    free(s->batch);
    free(s->batch_req);
    free(s->text);
    free(s);
    return rc;
}

static void async_closed(uv_handle_t *h)
{
    sch *s = h->data;
    sch_seq_info_free(s->snap, s->cap_snap);
    gram_vocab_destroy(s->gvocab);
    for (size_t i = 0; i < SCH_DONE_INFO; i++)
        free(s->done[i].tokens_kept);
    for (size_t i = 0; i < SCH_VIEW_RING; i++)
        sch_view_unref(s->ring[i]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

void sch_destroy(sch *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) pthread_join(s->thread, NULL);
    while (s->all)
        req_free(s, s->all);
    kv_prefix_destroy(s->prefix); /* after every sequence: gives the pool its blocks back */
    model_ctx_destroy(s->ctx);
    free(s->active);
    free(s->batch);
    free(s->batch_req);
    free(s->text);
    uv_close((uv_handle_t *)&s->async, async_closed);
}

/* sched_view.c - building and refcounting frames of the live KV view (see sched_view.h).
 *
 * Built on the worker thread from the sequence's tables (kv_view_capture) and the request's
 * token history; afterwards a frame is read-only, so the loop reads it without locks and the
 * last reference frees it, on whichever thread drops it.
 */
#include "sched_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sch_view *sch_view_ref(sch_view *v)
{
    if (v) atomic_fetch_add(&v->ref, 1);
    return v;
}

void sch_view_unref(sch_view *v)
{
    if (!v || atomic_fetch_sub(&v->ref, 1) != 1) return;
    kv_view_free(v->kv);
    free(v->tokens);
    free(v->budget);
    free(v);
}

bool sch_view_tag_ok(const char *tag)
{
    size_t n = tag ? strlen(tag) : 0;
    if (n < 8 || n >= SCH_VIEW_TAG_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = tag[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) return false;
    }
    return true;
}

static void view_timings(sch_view *v, const sch_view_src *src)
{
    v->ttft_s = src->t_first > 0 ? src->t_first - src->arrival : -1.0;
    v->decode_tps = 0.0;
    if (src->n_gen > 1 && src->t_last > src->t_first)
        v->decode_tps = (double)(src->n_gen - 1) / (src->t_last - src->t_first);
}

int sch_view_build(kv_seq *seq, const sch_view_src *src, sch_view **out)
{
    sch_view *v = calloc(1, sizeof(*v));
    if (!v) return KS_ERR_NOMEM;
    atomic_init(&v->ref, 1);
    v->seq_id = src->seq_id;
    v->version = src->version;
    snprintf(v->tag, sizeof(v->tag), "%s", src->tag ? src->tag : "");
    const kv_policy *pol = kv_seq_policy(seq);
    snprintf(v->policy, sizeof(v->policy), "%s", pol ? pol->name : kv_policy_full.name);
    v->n_prompt = src->n_prompt;
    v->n_generated = src->n_gen;
    v->finished = src->finished;
    view_timings(v, src);
    int rc = kv_view_capture(seq, &v->kv);
    v->n_tokens = src->n_prompt + src->n_gen;
    v->tokens = malloc((size_t)(v->n_tokens ? v->n_tokens : 1) * sizeof(int32_t));
    v->budget = v->kv ? malloc((size_t)v->kv->n_layer * sizeof(int32_t)) : NULL;
    if (rc || !v->tokens || !v->budget) {
        sch_view_unref(v);
        return rc ? rc : KS_ERR_NOMEM;
    }
    memcpy(v->tokens, src->prompt, (size_t)src->n_prompt * sizeof(int32_t));
    if (src->n_gen)
        memcpy(v->tokens + src->n_prompt, src->gen, (size_t)src->n_gen * sizeof(int32_t));
    kv_view_hint h;
    for (int32_t l = 0; l < v->kv->n_layer; l++) {
        kv_view_hint_get(src->pc, v->kv->n_layer, l, src->n_prompt, v->kv->tokens_seen, &h);
        v->budget[l] = h.budget;
        v->sink = h.sink; /* the same in every layer */
        v->window_from = h.window_from;
    }
    v->has_retrieval = kv_retrieval_get_stats(seq, &v->rs) == KS_OK;
    kv_pool_get_stats(kv_seq_pool(seq), &v->pool);
    *out = v;
    return 0;
}

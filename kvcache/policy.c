/* policy.c - the policy registry and the per-chunk steps that forward to a sequence's policy.
 *
 * The model never calls a policy directly: it calls kv_seq_chunk_begin / kv_seq_attn_spans /
 * kv_seq_mass_queries / kv_seq_attn_done / kv_seq_chunk_end (see the call sequence in
 * kvcache.h), which validate arguments, apply the "can be NULL" defaults of the vtable and
 * forward. Adding a policy = one file exporting a `const kv_policy_desc` (policy_config.h)
 * plus its name in kvcache/meson.build's policy list, from which meson generates the registry.
 */
#include "kvserve/kvcache.h"

#include <pthread.h>
#include <string.h>

#include "kvserve/policy_config.h"

const kv_policy *kv_policy_find(const char *name)
{
    const kv_policy_desc *d = kv_policy_desc_find(name);
    return d ? d->ops : NULL;
}

static const char *g_names[KV_POLICY_MAX + 1];
static pthread_once_t g_names_once = PTHREAD_ONCE_INIT;

static void names_init(void)
{
    for (int32_t k = 0; k < kv_policy_count() && k < KV_POLICY_MAX; k++)
        g_names[k] = kv_policy_desc_at(k)->name;
}

const char *const *kv_policy_names(void)
{
    pthread_once(&g_names_once, names_init);
    return g_names;
}

static bool chunk_ok(const kv_chunk *c)
{
    return c && c->n_new >= 0 && (c->n_new == 0 || c->idx);
}

int kv_seq_chunk_begin(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    if (!seq || !chunk_ok(chunk) || (chunk->n_new > 0 && !pos_out)) return KS_ERR_INVALID;
    const kv_policy *p = kv_seq_policy(seq);
    if (p->before_chunk) {
        int rc = p->before_chunk(seq, chunk);
        if (rc) return rc;
    }
    if (p->positions) return p->positions(seq, chunk, pos_out);
    if (chunk->n_new > 0) /* default: the original positions */
        memcpy(pos_out, chunk->idx, (size_t)chunk->n_new * sizeof(int32_t));
    return 0;
}

int kv_seq_attn_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                      attn_span *out, int32_t max, int32_t *n)
{
    *n = 0;
    if (!seq || !kv_seq_table(seq, layer, kv_head) || max < 0 || (max > 0 && !out))
        return KS_ERR_INVALID;
    const kv_policy *p = kv_seq_policy(seq);
    if (p->spans) return p->spans(seq, layer, kv_head, q, out, max, n);
    return kv_seq_spans(seq, layer, kv_head, out, max, n); /* default: every block */
}

int32_t kv_seq_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q)
{
    const kv_policy *p = kv_seq_policy(seq);
    if (!p->mass_queries || !p->after_attention || !q) return 0;
    int32_t m = p->mass_queries(seq, layer, kv_head, q);
    return KS_MAX(0, KS_MIN(m, q->n_q));
}

int kv_seq_attn_done(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                     const attn_span *spans, int32_t n_spans, const float *key_mass, int32_t n_mass)
{
    const kv_policy *p = kv_seq_policy(seq);
    if (!p->after_attention || n_mass <= 0) return 0;
    if (!kv_seq_table(seq, layer, kv_head) || !key_mass || n_spans < 0) return KS_ERR_INVALID;
    return p->after_attention(seq, layer, kv_head, q, spans, n_spans, key_mass, n_mass);
}

int kv_seq_chunk_end(kv_seq *seq, const kv_chunk *chunk)
{
    if (!seq || !chunk_ok(chunk)) return KS_ERR_INVALID;
    const kv_policy *p = kv_seq_policy(seq);
    int rc = p->after_chunk ? p->after_chunk(seq, chunk) : 0;
    /* sliding-window layers store only their window, under the policy that keeps every
     * token in order (the others own their tables' contents) */
    if (!rc && p == &kv_policy_full) rc = kv_seq_trim_windows(seq, kv_seq_tokens_seen(seq));
    return rc;
}

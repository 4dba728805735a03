/* sink_recent.c - keep attention sinks + the recent window of one table (sink_recent.h). */
#include "kvcache/sink_recent.h"

int kv_sink_recent_keep(kv_head_table *t, int32_t n_sink, int32_t recent, int32_t **keep,
                        int64_t *cap_keep, bool *changed)
{
    int32_t sinks = KS_MIN(n_sink, t->n_tok);
    int32_t rec = KS_MIN(recent, t->n_tok - sinks);
    *changed = false;
    if (sinks + rec == t->n_tok) return 0;
    if (ks_buf_reserve((void **)keep, cap_keep, sinks + rec + 1, sizeof(int32_t)))
        return KS_ERR_NOMEM;
    int32_t *k = *keep;
    for (int32_t i = 0; i < sinks; i++)
        k[i] = i;
    for (int32_t i = 0; i < rec; i++)
        k[sinks + i] = t->n_tok - rec + i;
    *changed = true;
    return kv_head_table_keep(t, k, sinks + rec);
}

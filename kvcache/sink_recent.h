/* sink_recent.h - the StreamingLLM eviction step shared by the policies that keep attention
 * sinks + a recent window in a table (private to kvcache/).
 *
 * sink_window applies it to every table; hybrid applies it to its streaming heads only.
 * One implementation, so that both keep exactly the same tokens for the same parameters.
 */
#ifndef KVSERVE_KVCACHE_SINK_RECENT_H
#define KVSERVE_KVCACHE_SINK_RECENT_H

#include <stdbool.h>

#include "kvserve/kvcache.h"

/* Keeps the first n_sink slots and the last `recent` slots of t (kv_head_table_keep), using
 * *keep / *cap_keep as a growable scratch list. Sets *changed when slots were dropped.
 * 0 or a negative status. */
int kv_sink_recent_keep(kv_head_table *t, int32_t n_sink, int32_t recent, int32_t **keep,
                        int64_t *cap_keep, bool *changed) KS_WUR;

#endif

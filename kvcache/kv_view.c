/* kv_view.c - captures what a sequence's KV tables keep, as runs of positions per
 * (layer, KV head), for the browser view (server/kv_feed.c).
 *
 * Why runs: the feed must stay small for 32k-token sequences. A table's slots are kept in
 * ascending position order (appends add at the end, keep() preserves order), so one pass
 * over idx[] turns n_tok positions into runs; windows and dense prefixes collapse to one
 * run each. The capture never mutates the sequence.
 */
#include "kvserve/kv_view.h"

#include <stdlib.h>
#include <string.h>

#include "kvserve/spill.h"

void kv_view_free(kv_view *v)
{
    if (!v) return;
    for (int32_t i = 0; v->cells && i < v->n_layer * v->n_head_kv; i++) {
        free(v->cells[i].runs);
        free(v->cells[i].sel);
        free(v->cells[i].sel_score);
    }
    free(v->cells);
    free(v);
}

/* Runs of t->idx (ascending); returns 0 or KS_ERR_NOMEM. */
static int cell_runs(const kv_head_table *t, kv_view_cell *c)
{
    c->n_kept = t->n_tok;
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_tok; i++)
        if (i == 0 || t->idx[i] != t->idx[i - 1] + 1) n++;
    c->runs = malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
    if (!c->runs) return KS_ERR_NOMEM;
    int32_t r = -1;
    for (int32_t i = 0; i < t->n_tok; i++) {
        if (i == 0 || t->idx[i] != t->idx[i - 1] + 1) {
            r++;
            c->runs[2 * r] = t->idx[i];
            c->runs[2 * r + 1] = 0;
        }
        c->runs[2 * r + 1]++;
    }
    c->n_runs = n;
    return 0;
}

/* Copies retrieval's last selection for one cell. */
static int cell_retrieval(kv_seq *seq, int32_t l, int32_t h, kv_view *v, kv_view_cell *c)
{
    kv_retrieval_view rv;
    c->n_sel = -1;
    if (kv_retrieval_view_get(seq, l, h, &rv)) return 0; /* not retrieval: nothing to add */
    v->spill_layer0 = rv.dense_layers;
    v->spill_lo = (int32_t)rv.spill_lo;
    v->spill_hi = (int32_t)rv.spill_hi;
    c->n_sel = rv.n_sel;
    if (rv.n_sel <= 0) return 0;
    c->sel = malloc((size_t)rv.n_sel * 2 * sizeof(int32_t));
    c->sel_score = malloc((size_t)rv.n_sel * sizeof(float));
    if (!c->sel || !c->sel_score) return KS_ERR_NOMEM;
    for (int32_t i = 0; i < rv.n_sel; i++) {
        c->sel[2 * i] = rv.sel[i] * rv.block_tokens;
        c->sel[2 * i + 1] = rv.block_tokens;
        c->sel_score[i] = rv.score[i];
    }
    return 0;
}

int kv_view_capture(kv_seq *seq, kv_view **out)
{
    if (!seq || !out) return KS_ERR_INVALID;
    kv_view *v = calloc(1, sizeof(*v));
    if (!v) return KS_ERR_NOMEM;
    v->n_layer = kv_seq_n_layer(seq);
    v->n_head_kv = kv_seq_n_head_kv(seq);
    v->tokens_seen = kv_seq_tokens_seen(seq);
    v->spill_layer0 = v->n_layer;
    v->cells = calloc((size_t)v->n_layer * v->n_head_kv, sizeof(kv_view_cell));
    int rc = v->cells ? 0 : KS_ERR_NOMEM;
    for (int32_t l = 0; !rc && l < v->n_layer; l++)
        for (int32_t h = 0; !rc && h < v->n_head_kv; h++) {
            kv_view_cell *c = &v->cells[l * v->n_head_kv + h];
            rc = cell_runs(kv_seq_table(seq, l, h), c);
            if (!rc) rc = cell_retrieval(seq, l, h, v, c);
        }
    if (rc) {
        kv_view_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void kv_view_hint_get(const kv_policy_config *pc, int32_t n_layer, int32_t layer, int64_t n_prompt,
                      int64_t seen, kv_view_hint *out)
{
    *out = (kv_view_hint){.budget = -1, .sink = 0, .window_from = seen};
    const kv_policy_desc *d = pc ? kv_policy_config_desc(pc) : NULL;
    if (d && d->view_hint)
        d->view_hint(kv_policy_config_params(pc, d), n_layer, layer, n_prompt, seen, out);
    out->sink = KS_MAX(out->sink, 0);
    out->window_from = KS_MIN(KS_MAX(out->window_from, out->sink), seen);
}

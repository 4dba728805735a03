/* pyramid.c - the `pyramid` policy: SnapKV selection with per-layer budgets (PyramidKV).
 *
 * Paper: Cai, Zhang, Gao, Liu, Liu, Lu, Xiong, Dong, Chang, Hu, Xiao, "PyramidKV: Dynamic KV
 * Cache Compression based on Pyramidal Information Funneling" (arXiv:2406.02069). The budget
 * arithmetic follows the public reference (KVCache-Factory's PyramidKVCluster).
 *
 * The idea in plain words. Attention in the lower layers is spread widely over the prompt;
 * in the upper layers it funnels onto a few tokens. So instead of giving every layer the same
 * budget, PyramidKV keeps the same total but distributes it as a pyramid: many tokens in
 * layer 0, few in the last layer, decreasing linearly. With an average budget C and window
 * w, the selectable part ranges from max = 2(C - w) - min down to min = (C - w) / beta
 * (integer division; beta sets how steep the pyramid is), clamped so that layer 0 never asks
 * for more than the prompt has; layer l keeps max - l * ((max - min) / (L - 1)) selected
 * tokens plus the window. Which tokens each layer keeps is chosen exactly as SnapKV does
 * (snapkv.c: window votes, pooling, top-k per KV head): one mechanism, different budgets.
 * Short prompts fall back like the reference: fewer than C tokens keep everything, fewer than
 * 2(C - w) use uniform SnapKV with budget C. The budget may also be a fraction of the prompt.
 */
#include "snapkv.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kvserve/policy_args.h"

/* The parameters (kvcache.pyramid.*; table at the end of the file). */
typedef struct pyramid_params {
    int32_t budget, window, kernel;
    kv_pooling pooling;
    kv_reduce reduce;
    int32_t beta;
    double budget_fraction;
    int32_t interval;
    snap_compress_at compress_at;
    int32_t hold;
} pyramid_params;

extern const kv_policy_desc kv_policy_desc_pyramid;
_Static_assert(sizeof(pyramid_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

/* PyramidKV's budget for `layer` of n_layer (tokens kept, window included) for a prompt of
 * n tokens with average budget C and window w, in KVCache-Factory's integer arithmetic.
 * Prompts shorter than C keep everything (returns C >= n); shorter than 2(C - w) fall back
 * to uniform SnapKV (returns C). */
static int32_t pyramid_layer_budget(int32_t C, int32_t w, int32_t beta, int32_t n_layer,
                                    int32_t layer, int32_t n)
{
    if (n < C || n < 2 * (C - w)) return C;
    int32_t min_num = (C - w) / beta;
    int32_t max_num = (C - w) * 2 - min_num;
    if (max_num >= n - w) {
        max_num = n - w;
        min_num = (C - w) * 2 - max_num;
    }
    int32_t steps = n_layer > 1 ? (max_num - min_num) / (n_layer - 1) : 0;
    return max_num - layer * steps + w;
}

static int32_t pyramid_budget(const snap_config *c, int32_t C, int32_t n_layer, int32_t layer,
                              int32_t n)
{
    return pyramid_layer_budget(C, c->window, c->beta, n_layer, layer, n);
}

static int pyramid_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    pyramid_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_pyramid, &mi, &p);
    snap_config c = {.budget = p.budget,
                     .budget_fraction = p.budget_fraction,
                     .window = p.window,
                     .kernel = p.kernel,
                     .pooling = p.pooling,
                     .reduce = p.reduce,
                     .interval = p.interval,
                     .layer_budget = pyramid_budget,
                     .beta = p.beta,
                     .compress_at = p.compress_at,
                     .hold = p.hold};
    return snap_state_create(seq, &c, state);
}

static const kv_policy kv_policy_pyramid = {
    .name = "pyramid",
    .init = pyramid_init,
    .free = snap_free,
    .positions = snap_positions,
    .spans = snap_spans,
    .mass_queries = snap_mass_queries,
    .after_attention = snap_after_attention,
    .after_chunk = snap_after_chunk,
};

#define PY_PARAM(key, type, lo, hi, def, ch, help)                                                 \
    {                                                                                              \
#key, type, offsetof(pyramid_params, key), lo, hi, def, NULL, ch, false, help              \
    }

static const kv_param_desc pyramid_params_table[] = {
    PY_PARAM(budget, KV_PARAM_INT, 1, INT32_MAX, 1024, NULL,
             "average tokens kept per layer and KV head, the window included"),
    PY_PARAM(window, KV_PARAM_INT, 1, INT32_MAX, 8, NULL,
             "observation window (<= budget), always kept"),
    PY_PARAM(kernel, KV_PARAM_INT, 1, 63, 9, NULL, "pooling kernel over the votes (odd)"),
    PY_PARAM(pooling, KV_PARAM_ENUM, 0, 0, KV_POOL_MAX, kv_pooling_names,
             "how votes are pooled over neighbouring tokens"),
    PY_PARAM(reduce, KV_PARAM_ENUM, 0, 0, KV_REDUCE_MEAN, kv_reduce_names,
             "how the votes of the query heads sharing a KV head combine"),
    PY_PARAM(beta, KV_PARAM_INT, 1, INT32_MAX, 20, NULL, "pyramid steepness"),
    PY_PARAM(budget_fraction, KV_PARAM_DOUBLE, 0, 1, 0, NULL,
             "0 = use `budget`; else the budget is this fraction of the prompt length"),
    PY_PARAM(interval, KV_PARAM_INT, 0, INT32_MAX, 0, NULL,
             "re-compress every N generated tokens, 0 = only after the prompt"),
    PY_PARAM(compress_at, KV_PARAM_ENUM, 0, 0, SNAP_AT_FIRST_TOKEN, snap_compress_at_names,
             "`first_token`: select after the first generated token (it votes too); "
             "`prompt_end`: the original, at the end of the prompt"),
    PY_PARAM(hold, KV_PARAM_INT, 0, INT32_MAX, 4096, NULL,
             "prompt tokens a table holds uncompressed; past it each prompt chunk is "
             "compressed at once (0 = hold the whole prompt)"),
};

/* budget = context_length / 4 unless given, as snapkv. */
static void pyramid_derive(void *params, uint64_t set, const kv_model_info *info)
{
    pyramid_params *p = params;
    if (!kv_param_was_set(&kv_policy_desc_pyramid, set, "budget"))
        p->budget = KS_MAX(1, kv_model_ctx(info) / 4);
    if (!kv_param_was_set(&kv_policy_desc_pyramid, set, "hold")) p->hold = kv_model_ctx(info);
}

static const kv_param_rule pyramid_rules[] = {
    {"budget", "context_length / 4"}, {"hold", "context_length"}, {NULL, NULL}};

static int pyramid_validate(const void *params, const char *table, ks_diag *d)
{
    const pyramid_params *p = params;
    return snap_validate_selection(p->budget, p->window, p->kernel, table, d);
}

/* As snapkv: the prompt, up to `hold` tokens + the chunk that passes it. */
static int64_t pyramid_admission(const void *params, int64_t n_tokens, int64_t chunk,
                                 int32_t n_layer, int32_t *dense_layers)
{
    const pyramid_params *p = params;
    (void)n_layer;
    (void)dense_layers;
    return snap_admission(p->hold, n_tokens, chunk);
}

/* The view: PyramidKV's budget of the layer (as snapkv.c applies it: C from budget_fraction
 * when set), the observation window at the end of the prompt. */
static void pyramid_view_hint(const void *params, int32_t n_layer, int32_t layer, int64_t n_prompt,
                              int64_t seen, kv_view_hint *out)
{
    (void)seen;
    const pyramid_params *p = params;
    int32_t n = (int32_t)KS_MIN(n_prompt, INT32_MAX), C = p->budget;
    if (p->budget_fraction > 0) C = KS_MAX(p->window + 1, (int32_t)lround(p->budget_fraction * n));
    int32_t b = pyramid_layer_budget(C, p->window, p->beta, n_layer, layer, n);
    if (b < n) out->budget = b;
    out->window_from = n_prompt - p->window;
}

const kv_policy_desc kv_policy_desc_pyramid = {
    .name = "pyramid",
    .summary = "SnapKV selection with per-layer budgets shrinking linearly with depth (the "
               "same total as `budget` per layer).",
    .reference = "PyramidKV: Cai et al., PyramidKV: Dynamic KV Cache Compression based on "
                 "Pyramidal Information Funneling, arXiv:2406.02069",
    .ops = &kv_policy_pyramid,
    .view_hint = pyramid_view_hint,
    .params_table = pyramid_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(pyramid_params_table),
    .params_size = sizeof(pyramid_params),
    .validate = pyramid_validate,
    .admission = pyramid_admission,
    .derive = pyramid_derive,
    .rules = pyramid_rules,
};

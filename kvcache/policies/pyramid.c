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

#include "kvserve/policy_args.h"

/* PyramidKV's budget for `layer` of n_layer (tokens kept, window included) for a prompt of
 * n tokens with average budget C and window w, in KVCache-Factory's integer arithmetic.
 * Prompts shorter than C keep everything (returns C >= n); shorter than 2(C - w) fall back
 * to uniform SnapKV (returns C). */
static int32_t pyramid_layer_budget(int32_t C, int32_t w, int32_t beta, int32_t n_layer,
                                    int32_t layer, int32_t n)
{
    if (n < C || n < 2 * (C - w))
        return C;
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
    kv_policy_config def;
    kv_policy_config_defaults(&def);
    kv_pyramid_params p = a && a->config ? a->config->pyramid : def.pyramid;
    snap_config c = {.budget = p.budget, .budget_fraction = p.budget_fraction,
                     .window = p.window, .kernel = p.kernel, .pooling = p.pooling,
                     .reduce = p.reduce, .interval = p.interval, .layer_budget = pyramid_budget,
                     .beta = p.beta};
    return snap_state_create(seq, &c, state);
}

const kv_policy kv_policy_pyramid = {
    .name = "pyramid",
    .init = pyramid_init,
    .free = snap_free,
    .positions = snap_positions,
    .spans = snap_spans,
    .mass_queries = snap_mass_queries,
    .after_attention = snap_after_attention,
    .after_chunk = snap_after_chunk,
};

/* full.c - the `full` policy: keep every token, attend every block, original positions.
 *
 * The baseline every other policy is measured against (and the only one that reproduces the
 * model exactly). Memory grows linearly with the context; the pool budget bounds it, and
 * appends fail with KS_ERR_FULL when it is reached. No state, no eviction.
 */
#include "kvserve/kvcache.h"
#include "kvserve/policy_config.h"

/* No hooks: the defaults (original positions, every block) are exactly this policy. Calling
 * nothing keeps the arrow one way: table.c names this policy as its default, full.c needs
 * nothing from the table. */
const kv_policy kv_policy_full = {
    .name = "full",
};

/* Keeps every token: the bound is the whole sequence. */
static int64_t full_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                              int32_t *dense_layers)
{
    (void)params;
    (void)chunk;
    (void)n_layer;
    (void)dense_layers;
    return n_tokens;
}

const kv_policy_desc kv_policy_desc_full = {
    .name = "full",
    .summary = "Keeps every token and attends every block at its original position: the "
               "baseline, and the only policy that reproduces the model exactly.",
    .reference = "none (standard attention)",
    .ops = &kv_policy_full,
    .admission = full_admission,
};

/* policy_args.h - what every KV policy's init hook receives as `policy_config`.
 *
 * kv_seq_params.policy_config must point to a kv_policy_args (or be NULL for defaults):
 * the full parameter set (each policy reads its own table) plus the model facts a policy
 * may need, such as the RoPE parameters to re-position keys. The policy copies what it
 * needs in init; the struct need not outlive kv_seq_create.
 */
#ifndef KVSERVE_POLICY_ARGS_H
#define KVSERVE_POLICY_ARGS_H

#include "kvserve/policy_config.h"
#include "kvserve/rope.h"

typedef struct kv_policy_args {
    const kv_policy_config *config; /* NULL = defaults */
    rope_params rope;               /* the model's rotary embedding */
    /* Models with sliding-window layers (gemma3): their rotary embedding (own base) and the
     * windows per layer ([n_layer], > 0 = a window layer); NULL = `rope` for every layer. */
    rope_params rope_swa;
    const int32_t *layer_window;
    int32_t n_layer;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ctx_train; /* the model's trained context length */
} kv_policy_args;

/* The model facts of args for kv_policy_params_resolve (zeros when args is NULL). */
static inline kv_model_info kv_policy_args_info(const kv_policy_args *a)
{
    kv_model_info m = {0, 0, 0, 0};
    if (a) m = (kv_model_info){a->n_ctx_train, a->n_layer, a->n_head_kv, a->head_dim};
    return m;
}

#endif

/* engine.c - open a model, its compute context and a KV pool sized for n_seqs x n_ctx tokens;
 * create sequence caches with the policy a kv_policy_config names (see engine.h). */
#include "kvserve/engine.h"

#include <stdio.h>

#include "kvserve/policy_args.h"

int engine_open(const engine_params *p, engine *e)
{
    ks_diag d;
    *e = (engine){0};
    int rc = model_load(p->model_path, &e->m, &d);
    if (rc) {
        fprintf(stderr, "kvserve: cannot load model: %s%s%s\n", d.file[0] ? d.file : "",
                d.file[0] ? ": " : "", d.msg);
        return rc;
    }
    const model_hparams *hp = model_get_hparams(e->m);
    e->n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    model_set_n_ctx(e->m, e->n_ctx); /* Phi-3 long/short rope factors follow the context */
    model_ctx_params cp = {.n_threads = p->n_threads,
                           .max_batch_tokens = p->n_batch,
                           .max_seqs = KS_MAX(p->n_seqs, 1),
                           .llama_numerics = p->llama_numerics,
                           .llama_flash = p->llama_flash};
    if ((rc = model_ctx_create(e->m, &cp, &e->ctx))) {
        fprintf(stderr, "kvserve: cannot create the compute context: %s\n", ks_status_str(rc));
        goto fail;
    }
    kv_pool_params pp = {
        .block_tokens = 64, .head_dim = hp->head_dim, .k_dtype = p->k_dtype, .v_dtype = p->v_dtype};
    size_t row =
        ks_dtype_row_bytes(p->k_dtype, hp->head_dim) + ks_dtype_row_bytes(p->v_dtype, hp->head_dim);
    if (!row) {
        fprintf(stderr,
                "kvserve: KV types %s/%s need a head dimension that is a multiple of 32 "
                "(the model's is %d)\n",
                ks_dtype_name(p->k_dtype), ks_dtype_name(p->v_dtype), hp->head_dim);
        rc = KS_ERR_INVALID;
        goto fail;
    }
    size_t blocks_per_head = (size_t)(e->n_ctx + pp.block_tokens - 1) / pp.block_tokens + 1;
    pp.budget_bytes = blocks_per_head * (size_t)pp.block_tokens * row * (size_t)hp->n_layer *
                      (size_t)hp->n_head_kv * (size_t)KS_MAX(p->n_seqs, 1);
    if ((rc = kv_pool_create(&pp, &e->pool))) {
        fprintf(stderr, "kvserve: cannot create the KV pool: %s\n", ks_status_str(rc));
        goto fail;
    }
    return KS_OK;
fail:
    engine_close(e);
    return rc;
}

void engine_close(engine *e)
{
    kv_pool_destroy(e->pool);
    model_ctx_destroy(e->ctx);
    model_free(e->m);
    *e = (engine){0};
}

int engine_new_seq(engine *e, const kv_policy_config *pc, kv_seq **out)
{
    const model_hparams *hp = model_get_hparams(e->m);
    const char *name = kv_policy_config_desc(pc)->name;
    const kv_policy *policy = kv_policy_find(name);
    if (!policy) {
        fprintf(stderr, "kvserve: KV policy '%s' is not available in this build\n", name);
        return KS_ERR_INVALID;
    }
    kv_policy_args args = {.config = pc,
                           .rope = model_rope_params(e->m, -1),
                           .rope_swa = model_rope_params_window(e->m),
                           .layer_window = model_layer_windows(e->m),
                           .n_layer = hp->n_layer,
                           .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim,
                           .n_ctx_train = hp->n_ctx_train};
    return engine_new_seq_args(e, policy, &args, out);
}

int engine_new_seq_args(engine *e, const kv_policy *policy, const void *args, kv_seq **out)
{
    const model_hparams *hp = model_get_hparams(e->m);
    kv_seq_params sp = {.n_layer = hp->n_layer,
                        .n_head_kv = hp->n_head_kv,
                        .policy = policy,
                        .policy_config = args,
                        .layer_window = model_layer_windows(e->m)};
    return kv_seq_create(e->pool, &sp, out);
}

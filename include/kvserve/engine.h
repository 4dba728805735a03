/* engine.h - a loaded model, its compute context and a KV pool, opened in one call.
 *
 * The set-up every offline program shares (kvserve run and perplexity, the benches, the
 * model tests): load the GGUF, create a model_ctx for n_seqs sequences and size a KV pool
 * for n_seqs sequences of n_ctx tokens. Errors are printed to stderr as "kvserve: ...".
 */
#ifndef KVSERVE_ENGINE_H
#define KVSERVE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/kvcache.h"
#include "kvserve/model.h"
#include "kvserve/policy_config.h"

/* A loaded model with a KV pool sized for n_seqs sequences of ctx tokens each. */
typedef struct engine {
    model *m;
    model_ctx *ctx;
    kv_pool *pool;
    int32_t n_ctx;
} engine;

typedef struct engine_params {
    const char *model_path;
    int32_t n_threads;
    int32_t n_ctx;   /* 0 = the model's trained context */
    int32_t n_batch; /* tokens per forward call */
    int32_t n_seqs;
    ks_dtype k_dtype; /* KV storage types (kvtype.h) */
    ks_dtype v_dtype;
    int32_t kv_residual; /* kivi types: tokens kept in f16 (kv_pool_params.kv_residual) */
    bool llama_numerics;
    bool llama_flash;
} engine_params;

int engine_open(const engine_params *p, engine *e) KS_WUR;
void engine_close(engine *e);
/* A fresh sequence cache on the engine's pool with the policy pc selects (NULL = full).
 * Prints a message and returns KS_ERR_INVALID for a policy this build does not have. */
int engine_new_seq(engine *e, const kv_policy_config *pc, kv_seq **out) KS_WUR;

/* The same with an explicit policy and init arguments (benches that build their own). */
int engine_new_seq_args(engine *e, const kv_policy *policy, const void *args, kv_seq **out) KS_WUR;

#endif

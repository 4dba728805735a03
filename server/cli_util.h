/* cli_util.h - shared pieces of the offline subcommands (run, perplexity): strict number
 * parsing for flags and the model + KV cache set-up they share. */
#ifndef KVSERVE_CLI_UTIL_H
#define KVSERVE_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/kvcache.h"
#include "kvserve/model.h"
#include "kvserve/policy_config.h"

/* Parses a whole string as a number in [lo, hi]; prints "kvserve: FLAG: reason" on error. */
int cli_parse_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out) KS_WUR;
int cli_parse_f32(const char *flag, const char *s, float lo, float hi, float *out) KS_WUR;
int cli_default_threads(void);
/* `--kv-dtype f16|f32`. */
int cli_parse_kv_dtype(const char *s, ks_dtype *out) KS_WUR;

/* A loaded model with a KV pool sized for n_seqs sequences of ctx tokens each. */
typedef struct cli_engine {
    model *m;
    model_ctx *ctx;
    kv_pool *pool;
    int32_t n_ctx;
} cli_engine;

typedef struct cli_engine_params {
    const char *model_path;
    int32_t n_threads;
    int32_t n_ctx;        /* 0 = the model's trained context */
    int32_t n_batch;      /* tokens per forward call */
    int32_t n_seqs;
    ks_dtype kv_dtype;
    bool llama_numerics;
    bool llama_flash;
} cli_engine_params;

int cli_engine_open(const cli_engine_params *p, cli_engine *e) KS_WUR;
void cli_engine_close(cli_engine *e);
/* A fresh sequence cache on the engine's pool with the policy pc selects (NULL = full).
 * Prints a message and returns KS_ERR_INVALID for a policy this build does not have. */
int cli_engine_new_seq(cli_engine *e, const kv_policy_config *pc, kv_seq **out) KS_WUR;

/* The same with an explicit policy and init arguments (benches that build their own). */
int cli_engine_new_seq_args(cli_engine *e, const kv_policy *policy, const void *args,
                            kv_seq **out) KS_WUR;

/* Handles `--kv-policy SPEC` ("NAME" or "NAME:key=value,..."): parses into pc, printing the
 * reason on error. */
int cli_parse_policy(const char *spec, kv_policy_config *pc) KS_WUR;

#endif

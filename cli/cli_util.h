/* cli_util.h - shared pieces of the offline subcommands (run, perplexity): strict number
 * parsing for flags. The model + KV cache set-up they share is engine_open (kvserve/engine.h). */
#ifndef KVSERVE_CLI_UTIL_H
#define KVSERVE_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/attention.h"
#include "kvserve/base.h"
#include "kvserve/policy_config.h"

/* Parses a whole string as a number in [lo, hi]; prints "kvserve: FLAG: reason" on error. */
int cli_parse_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out) KS_WUR;
int cli_parse_f32(const char *flag, const char *s, float lo, float hi, float *out) KS_WUR;
int cli_default_threads(void);
/* `--kv-dtype f16|f32`. */
int cli_parse_kv_dtype(const char *s, ks_dtype *out) KS_WUR;

/* Handles `--kv-policy SPEC` ("NAME" or "NAME:key=value,..."): parses into pc, printing the
 * reason on error. */
int cli_parse_policy(const char *spec, kv_policy_config *pc) KS_WUR;

#endif

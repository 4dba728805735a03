/* config.h - the server configuration: defaults, TOML loading, validation, environment.
 *
 * Every key, its type, default and range is documented in configs/default.toml. Loading is
 * strict: an unknown table or key, a wrong type or an out-of-range value fails with a ks_diag
 * whose msg reads "FILE:LINE: key: reason". cfg is a plain value (no pointers): copy freely.
 * Command-line flags may overwrite fields after loading; call cfg_validate afterwards.
 */
#ifndef KVSERVE_CONFIG_H
#define KVSERVE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/base.h"
#include "kvserve/kvtype.h"
#include "kvserve/policy_config.h"

#define CFG_STR_MAX 1024

/* KV storage types as config names (index = value; cfg_kv_dtype_ks maps them to kvtype.h).
 * CFG_KV_UNSET: k_dtype / v_dtype not given, so kvcache.dtype applies. */
typedef enum cfg_kv_dtype {
    CFG_KV_UNSET = -1,
    CFG_KV_F16,
    CFG_KV_F32,
    CFG_KV_BF16,
    CFG_KV_Q8_0,
    CFG_KV_Q4_0,
    CFG_KV_Q4_1,
    CFG_KV_Q5_0,
    CFG_KV_Q5_1,
    CFG_KV_IQ4_NL,
    CFG_KV_KIVI4,
    CFG_KV_KIVI2,
    CFG_KV_N
} cfg_kv_dtype;

typedef struct cfg_server {
    char host[256];                 /* default "127.0.0.1" */
    int32_t port;                   /* 1..65535, default 8080 */
    int32_t threads;                /* inference threads, >= 1, default: number of online CPUs */
    int64_t max_body_bytes;         /* >= 1, default 1 MiB */
    int64_t max_header_bytes;       /* >= 1, default 16 KiB */
    int32_t request_timeout_s;      /* >= 1, default 600 */
    int32_t max_queue;              /* >= 1, default 64 */
    int32_t queue_aging_s;          /* >= 1, default 5: a waiting request that does not fit lets
                                       later ones pass for this long, then holds them back */
    char api_key[256];              /* "" = no authentication (default) */
    int32_t shutdown_grace_s;       /* >= 0, default 30 */
    int32_t max_connections;        /* >= 1, default 256: beyond it a connection gets 503 */
    int32_t header_timeout_s;       /* >= 1, default 10: request line + headers must arrive in it */
    int32_t body_timeout_s;         /* >= 1, default 60: the body must arrive in it */
    int32_t idle_timeout_s;         /* >= 1, default 30: an idle keep-alive connection is closed */
    int64_t max_buffered_mb;        /* >= 1, default 64: request bytes buffered by all clients */
    int32_t max_client_concurrent;  /* >= 0, default 0 = off: generation requests in flight
                                       per client (API key, else address) */
    char cors_origins[CFG_STR_MAX]; /* "" (default): browsers' cross-origin requests are
                                       refused; else comma-separated origins, or "*" */
    int32_t ui; /* browser view at / and /v1/kv/stream: 1 on, 0 off, -1 (default)
                   on only when host is a loopback address (cfg_ui_enabled) */
} cfg_server;

typedef struct cfg_model {
    char path[CFG_STR_MAX]; /* GGUF file; default "" (must be given by file or flag) */
    int32_t ctx;            /* max context tokens per sequence, >= 16, default 4096 */
    int32_t threads;        /* 0 = server.threads (default) */
    char chat_template[32]; /* "auto" (default): the model's Jinja template; or a family
                               formatter: chatml, llama3, llama2, mistral, zephyr, phi3, gemma */
    char chat_template_file[CFG_STR_MAX]; /* a Jinja template file used instead of the GGUF's
                                             tokenizer.chat_template; default "" */
    bool chat_template_fallback; /* a template the Jinja engine cannot parse or render falls
                                    back to the family formatter; default false (an error) */
} cfg_model;

typedef struct cfg_kvcache {
    int64_t memory_mb;             /* KV budget, >= 1, default 1024 */
    int32_t block_tokens;          /* power of two 8..1024, default 64 */
    cfg_kv_dtype dtype;            /* default F16: K and V unless set below */
    cfg_kv_dtype k_dtype;          /* default UNSET (= dtype) */
    cfg_kv_dtype v_dtype;          /* default UNSET (= dtype) */
    int32_t kv_residual;           /* kivi4/kivi2: last N tokens kept f16, 0..65536, default 128 */
    bool allow_request_override;   /* default true */
    char persist_dir[CFG_STR_MAX]; /* prefix cache on disk; "" = off (default) */
    int32_t persist_interval_s;    /* also save every N s; 0 = only at shutdown (default) */
    int64_t persist_max_mb;        /* cap of persist_dir's *.kvpc files, default 1024 */
    kv_policy_config policy;       /* policy kind + per-policy parameter tables */
} cfg_kvcache;

typedef struct cfg_limits {
    int32_t default_max_tokens; /* 1..max_tokens, default 256 */
    int32_t max_tokens;         /* >= 1, default 4096 */
    int32_t max_concurrent;     /* active sequences, >= 1, default 16 */
    int32_t max_prompt_tokens;  /* 0 = model.ctx (default); else 1..model.ctx */
} cfg_limits;

typedef struct cfg {
    cfg_server server;
    cfg_model model;
    cfg_kvcache kvcache;
    cfg_limits limits;
} cfg;

/* Fills c with the defaults. */
void cfg_defaults(cfg *c);

/* Applies a TOML file / string over the current contents of c (call cfg_defaults first), then
 * validates. On error c may be partly updated and d names FILE:LINE: key: reason.
 * cfg_load_string's filename is used in messages only (NULL: "<string>"). */
int cfg_load_file(const char *path, cfg *c, ks_diag *d) KS_WUR;
int cfg_load_string(const char *text, size_t len, const char *filename, cfg *c, ks_diag *d) KS_WUR;

/* Environment overrides: KVSERVE_API_KEY (when set and non-empty) replaces server.api_key. */
int cfg_apply_env(cfg *c, ks_diag *d) KS_WUR;

/* Checks ranges and cross-field rules; d->key names the field, d->line is 0. */
int cfg_validate(const cfg *c, ks_diag *d) KS_WUR;

/* Effective values of the "0 = derived" fields. */
int32_t cfg_model_threads(const cfg *c);
int32_t cfg_max_prompt_tokens(const cfg *c);
/* Whether the browser view is served: server.ui, or when unset, host is loopback. */
bool cfg_ui_enabled(const cfg *c);

const char *cfg_kv_dtype_name(cfg_kv_dtype t);
int cfg_kv_dtype_from_name(const char *name); /* value or KS_ERR_INVALID */
/* The storage types the pool uses: k_dtype / v_dtype, else dtype. */
ks_dtype cfg_kv_dtype_ks(cfg_kv_dtype t);
ks_dtype cfg_kv_k_dtype(const cfg *c);
ks_dtype cfg_kv_v_dtype(const cfg *c);

#endif

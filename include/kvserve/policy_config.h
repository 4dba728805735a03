/* policy_config.h - KV-cache policy selection and per-policy parameters.
 *
 * A plain value type shared by the TOML configuration (server defaults), the HTTP API (per
 * request overrides) and the kvcache policies (which read it). It holds no pointers and may be
 * copied freely. Names accepted in TOML / JSON map to the enums through the *_from_name
 * functions below. Implemented in kvcache/policy_config.c.
 */
#ifndef KVSERVE_POLICY_CONFIG_H
#define KVSERVE_POLICY_CONFIG_H

#include <stdint.h>

#include "kvserve/base.h"

typedef enum kv_policy_kind {
    KV_POLICY_FULL,        /* keep everything */
    KV_POLICY_SINK_WINDOW, /* StreamingLLM: attention sinks + sliding window */
    KV_POLICY_SNAPKV,      /* SnapKV: prompt compression by observation-window votes */
    KV_POLICY_PYRAMID,     /* PyramidKV: SnapKV selection with per-layer pyramidal budgets */
    KV_POLICY_H2O,         /* H2O: heavy hitters + recent tokens */
    KV_POLICY_RETRIEVAL,   /* landmark / block retrieval with a spill tier */
    KV_POLICY_COUNT
} kv_policy_kind;

typedef enum kv_pos_mode {
    KV_POS_ORIGINAL, /* keys keep their original positions */
    KV_POS_COMPACT,  /* sink_window: positions re-numbered inside the cache (StreamingLLM) */
    KV_POS_WINDOW,   /* retrieval: positions relative to the attended window (InfLLM) */
} kv_pos_mode;

typedef enum kv_pooling { KV_POOL_MAX, KV_POOL_AVG } kv_pooling;
typedef enum kv_reduce { KV_REDUCE_MEAN, KV_REDUCE_MAX } kv_reduce;
typedef enum kv_landmark {
    KV_LANDMARK_MEAN,          /* MoBA: mean key of the block */
    KV_LANDMARK_BOUNDS,        /* Quest: per-channel min/max */
    KV_LANDMARK_REPRESENTATIVE /* InfLLM: a few representative keys */
} kv_landmark;
typedef enum kv_selection { KV_SELECT_HEAD, KV_SELECT_LAYER } kv_selection;
typedef enum kv_eviction { KV_EVICT_LRU, KV_EVICT_SCORE_LRU } kv_eviction;

typedef struct kv_sink_window_params {
    int32_t n_sink;        /* >= 0, default 4 */
    int32_t window;        /* >= 1, default 1020 */
    kv_pos_mode positions; /* ORIGINAL or COMPACT (default) */
} kv_sink_window_params;

typedef struct kv_snapkv_params {
    int32_t budget;     /* tokens kept per layer/head incl. the window, >= 1, default 1024 */
    int32_t window;     /* observation window (last prompt tokens), 1..budget, default 8 */
    int32_t kernel;     /* odd pooling kernel, 1..63, default 7 */
    kv_pooling pooling; /* default MAX */
    kv_reduce reduce;   /* how votes of the GQA query heads are combined, default MEAN */
    int32_t interval;   /* re-compress every N generated tokens, 0 = off (default) */
} kv_snapkv_params;

typedef struct kv_pyramid_params {
    int32_t budget;        /* average tokens per layer, >= 1, default 1024 */
    int32_t window;        /* 1..budget, default 8 */
    int32_t kernel;        /* odd, 1..63, default 7 */
    kv_pooling pooling;    /* default MAX */
    kv_reduce reduce;      /* default MEAN */
    int32_t beta;          /* pyramid steepness, >= 1, default 20 */
    double budget_fraction;/* 0 = use budget; else 0 < f <= 1 of the prompt length */
    int32_t interval;      /* 0 = off */
} kv_pyramid_params;

typedef struct kv_h2o_params {
    int32_t heavy;  /* heavy-hitter tokens kept, >= 0, default 512 */
    int32_t recent; /* most recent tokens kept, >= 1, default 512 */
} kv_h2o_params;

#define KV_SPILL_DIR_MAX 1024

typedef struct kv_retrieval_params {
    int32_t block_tokens;     /* power of two 8..1024, default 64 */
    kv_landmark landmark;     /* default MEAN */
    int32_t representatives;  /* keys per block for REPRESENTATIVE, 1..block_tokens, default 4 */
    int32_t top_k;            /* blocks retrieved per query, >= 1, default 8 */
    int32_t n_sink;           /* >= 0, default 4 */
    int32_t window;           /* local window tokens, >= 1, default 512 */
    kv_selection selection;   /* per HEAD (default) or per LAYER */
    int32_t dense_layers;     /* first layers kept dense (full attention), >= 0, default 2 */
    kv_pos_mode positions;    /* WINDOW (default) or ORIGINAL */
    int32_t chunk;            /* prefill chunk tokens, >= 1, default 512 */
    int64_t ram_mb;           /* hot-set budget in MiB, >= 1, default 512 */
    char spill_dir[KV_SPILL_DIR_MAX]; /* non-empty, default "/tmp/kvserve-spill" */
    kv_eviction eviction;     /* default LRU */
} kv_retrieval_params;

typedef struct kv_policy_config {
    kv_policy_kind kind; /* default FULL */
    kv_sink_window_params sink_window;
    kv_snapkv_params snapkv;
    kv_pyramid_params pyramid;
    kv_h2o_params h2o;
    kv_retrieval_params retrieval;
} kv_policy_config;

/* Fills every field with its default (documented above and in configs/default.toml). */
void kv_policy_config_defaults(kv_policy_config *pc);

/* Checks every parameter of every policy (not only the selected kind). On error fills d with
 * key = the TOML path of the offending parameter (e.g. "kvcache.snapkv.kernel"), line = 0 and
 * msg = "KEY: reason", and returns KS_ERR_RANGE or KS_ERR_INVALID. */
int kv_policy_config_validate(const kv_policy_config *pc, ks_diag *d) KS_WUR;

/* Accepted names, NULL-terminated, index = enum value (for messages and lookups). */
extern const char *const kv_policy_kind_names[];
extern const char *const kv_pos_mode_names[];
extern const char *const kv_pooling_names[];
extern const char *const kv_reduce_names[];
extern const char *const kv_landmark_names[];
extern const char *const kv_selection_names[];
extern const char *const kv_eviction_names[];
/* Index of name in a NULL-terminated list, or KS_ERR_INVALID (also for name == NULL). */
int kv_name_index(const char *const *names, const char *name);

/* Name <-> enum. *_from_name returns the value (>= 0) or KS_ERR_INVALID for unknown names;
 * *_name never returns NULL ("?" for out-of-range values). */
int kv_policy_kind_from_name(const char *name);
const char *kv_policy_kind_name(kv_policy_kind kind);
int kv_pos_mode_from_name(const char *name);
const char *kv_pos_mode_name(kv_pos_mode m);
int kv_pooling_from_name(const char *name);
int kv_reduce_from_name(const char *name);
int kv_landmark_from_name(const char *name);
int kv_selection_from_name(const char *name);
int kv_eviction_from_name(const char *name);

/* ---- parameters by name: the one table that the command line, the bench programs and the
 * HTTP API use to set a policy's parameters (TOML has its own key table in config.c, which
 * also knows each key's line). ---- */
typedef enum kv_param_type {
    KV_PARAM_INT, KV_PARAM_I64, KV_PARAM_DOUBLE, KV_PARAM_ENUM,
    KV_PARAM_PATH /* a char[KV_SPILL_DIR_MAX] */
} kv_param_type;

typedef struct kv_param_desc {
    kv_policy_kind kind; /* the policy whose table holds the parameter */
    const char *key;     /* e.g. "window" */
    kv_param_type type;
    size_t off;          /* byte offset within kv_policy_config */
    int (*from_name)(const char *); /* ENUM only */
    int request_ok;      /* may be overridden per request (spill settings may not) */
} kv_param_desc;

/* The whole table (*n entries), grouped by policy, for listings such as GET /v1/kv/policies. */
const kv_param_desc *kv_param_list(size_t *n);
/* The parameter `key` of policy `kind`, or NULL. */
const kv_param_desc *kv_param_find(kv_policy_kind kind, const char *key);
/* Typed setters: KS_ERR_INVALID when the value does not fit the parameter's type (an enum
 * takes a name, an int an integer that fits, a double any number). Ranges are checked by
 * kv_policy_config_validate. */
int kv_param_set_int(kv_policy_config *pc, const kv_param_desc *p, int64_t v) KS_WUR;
int kv_param_set_double(kv_policy_config *pc, const kv_param_desc *p, double v) KS_WUR;
int kv_param_set_name(kv_policy_config *pc, const kv_param_desc *p, const char *name) KS_WUR;
/* Parses the text form of a value by the parameter's type (integer, number, name or path). */
int kv_param_set_text(kv_policy_config *pc, const kv_param_desc *p, const char *text) KS_WUR;

/* Parses "NAME" or "NAME:key=value,key=value" (the command-line form, e.g.
 * "sink_window:n_sink=4,window=252") over the values already in pc: sets pc->kind and the
 * named parameters, then validates. Errors name the key: KS_ERR_INVALID / KS_ERR_RANGE. */
int kv_policy_config_parse_spec(kv_policy_config *pc, const char *spec, ks_diag *d) KS_WUR;

#endif

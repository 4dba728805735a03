/* policy_config.c - KV policy kinds and per-policy parameters: names, defaults, validation.
 *
 * Lives in kvcache so that both the policies (lowest layer that needs it) and the server
 * (TOML configuration, per-request JSON overrides) can use it. The validator is the only
 * place that knows the parameter ranges; it names the offending field by its TOML path so
 * the configuration loader can point at the line that set it.
 */
#include "kvserve/policy_config.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

const char *const kv_policy_kind_names[] = {"full", "sink_window", "snapkv", "pyramid", "h2o",
                                             "retrieval", NULL};
const char *const kv_pos_mode_names[] = {"original", "compact", "window", NULL};
const char *const kv_pooling_names[] = {"max", "avg", NULL};
const char *const kv_reduce_names[] = {"mean", "max", NULL};
const char *const kv_landmark_names[] = {"mean", "bounds", "representative", NULL};
const char *const kv_selection_names[] = {"head", "layer", NULL};
const char *const kv_eviction_names[] = {"lru", "score_lru", NULL};

int kv_name_index(const char *const *names, const char *name)
{
    if (!name) return KS_ERR_INVALID;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], name) == 0) return i;
    return KS_ERR_INVALID;
}

int kv_policy_kind_from_name(const char *n) { return kv_name_index(kv_policy_kind_names, n); }
int kv_pos_mode_from_name(const char *n) { return kv_name_index(kv_pos_mode_names, n); }
int kv_pooling_from_name(const char *n) { return kv_name_index(kv_pooling_names, n); }
int kv_reduce_from_name(const char *n) { return kv_name_index(kv_reduce_names, n); }
int kv_landmark_from_name(const char *n) { return kv_name_index(kv_landmark_names, n); }
int kv_selection_from_name(const char *n) { return kv_name_index(kv_selection_names, n); }
int kv_eviction_from_name(const char *n) { return kv_name_index(kv_eviction_names, n); }

const char *kv_policy_kind_name(kv_policy_kind k)
{
    return (unsigned)k < KV_POLICY_COUNT ? kv_policy_kind_names[k] : "?";
}

const char *kv_pos_mode_name(kv_pos_mode m)
{
    return (unsigned)m <= KV_POS_WINDOW ? kv_pos_mode_names[m] : "?";
}

/* ---- parameters ---- */

void kv_policy_config_defaults(kv_policy_config *pc)
{
    memset(pc, 0, sizeof(*pc));
    pc->kind = KV_POLICY_FULL;
    pc->sink_window = (kv_sink_window_params){.n_sink = 4, .window = 1020,
                                              .positions = KV_POS_COMPACT};
    pc->snapkv = (kv_snapkv_params){.budget = 1024, .window = 8, .kernel = 7,
                                    .pooling = KV_POOL_MAX, .reduce = KV_REDUCE_MEAN};
    /* field by field: the struct has padding, and memset-zeroed padding keeps cfg values
     * comparable with memcmp */
    kv_pyramid_params *py = &pc->pyramid;
    py->budget = 1024;
    py->window = 8;
    py->kernel = 7;
    py->pooling = KV_POOL_MAX;
    py->reduce = KV_REDUCE_MEAN;
    py->beta = 20;
    pc->h2o = (kv_h2o_params){.heavy = 512, .recent = 512};
    kv_retrieval_params *r = &pc->retrieval;
    r->block_tokens = 64;
    r->landmark = KV_LANDMARK_MEAN;
    r->representatives = 4;
    r->top_k = 8;
    r->n_sink = 4;
    r->window = 512;
    r->selection = KV_SELECT_HEAD;
    r->dense_layers = 2;
    r->positions = KV_POS_WINDOW;
    r->chunk = 512;
    r->ram_mb = 512;
    snprintf(r->spill_dir, sizeof(r->spill_dir), "%s", "/tmp/kvserve-spill");
    r->eviction = KV_EVICT_LRU;
}

static bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

#define RANGE(key, v, lo, hi)                                                                 \
    do {                                                                                      \
        int rc_ = ks_check_range(d, key, v, lo, hi);                                          \
        if (rc_) return rc_;                                                                  \
    } while (0)

static int validate_selection(ks_diag *d, const char *tbl, int32_t budget, int32_t window,
                              int32_t kernel, int32_t interval)
{
    char k[64];
    snprintf(k, sizeof(k), "kvcache.%s.budget", tbl);
    RANGE(k, budget, 1, INT32_MAX);
    snprintf(k, sizeof(k), "kvcache.%s.window", tbl);
    RANGE(k, window, 1, budget);
    snprintf(k, sizeof(k), "kvcache.%s.kernel", tbl);
    RANGE(k, kernel, 1, 63);
    if (kernel % 2 == 0) return ks_diag_key(d, KS_ERR_RANGE, k, "must be odd (got %d)", kernel);
    snprintf(k, sizeof(k), "kvcache.%s.interval", tbl);
    RANGE(k, interval, 0, INT32_MAX);
    return KS_OK;
}

int kv_policy_config_validate(const kv_policy_config *pc, ks_diag *d)
{
    if ((unsigned)pc->kind >= KV_POLICY_COUNT)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.policy", "unknown policy");
    const kv_sink_window_params *s = &pc->sink_window;
    RANGE("kvcache.sink_window.n_sink", s->n_sink, 0, INT32_MAX);
    RANGE("kvcache.sink_window.window", s->window, 1, INT32_MAX);
    if (s->positions != KV_POS_ORIGINAL && s->positions != KV_POS_COMPACT)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.sink_window.positions",
                   "must be \"original\" or \"compact\"");
    const kv_snapkv_params *sk = &pc->snapkv;
    int rc = validate_selection(d, "snapkv", sk->budget, sk->window, sk->kernel, sk->interval);
    if (rc) return rc;
    const kv_pyramid_params *py = &pc->pyramid;
    rc = validate_selection(d, "pyramid", py->budget, py->window, py->kernel, py->interval);
    if (rc) return rc;
    RANGE("kvcache.pyramid.beta", py->beta, 1, INT32_MAX);
    if (!(py->budget_fraction >= 0.0 && py->budget_fraction <= 1.0))
        return ks_diag_key(d, KS_ERR_RANGE, "kvcache.pyramid.budget_fraction",
                   "%g is out of range (0 < f <= 1, or 0 = use budget)", py->budget_fraction);
    RANGE("kvcache.h2o.heavy", pc->h2o.heavy, 0, INT32_MAX);
    RANGE("kvcache.h2o.recent", pc->h2o.recent, 1, INT32_MAX);
    const kv_retrieval_params *r = &pc->retrieval;
    if (!is_pow2(r->block_tokens) || r->block_tokens < 8 || r->block_tokens > 1024)
        return ks_diag_key(d, KS_ERR_RANGE, "kvcache.retrieval.block_tokens",
                   "%d must be a power of two in 8..1024", r->block_tokens);
    RANGE("kvcache.retrieval.representatives", r->representatives, 1, r->block_tokens);
    RANGE("kvcache.retrieval.top_k", r->top_k, 1, INT32_MAX);
    RANGE("kvcache.retrieval.n_sink", r->n_sink, 0, INT32_MAX);
    RANGE("kvcache.retrieval.window", r->window, 1, INT32_MAX);
    RANGE("kvcache.retrieval.dense_layers", r->dense_layers, 0, INT32_MAX);
    if (r->positions != KV_POS_ORIGINAL && r->positions != KV_POS_WINDOW)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.retrieval.positions",
                   "must be \"window\" or \"original\"");
    RANGE("kvcache.retrieval.chunk", r->chunk, 1, INT32_MAX);
    RANGE("kvcache.retrieval.ram_mb", r->ram_mb, 1, INT64_MAX);
    if (!r->spill_dir[0]) return ks_diag_key(d, KS_ERR_INVALID, "kvcache.retrieval.spill_dir", "empty");
    if ((unsigned)r->landmark > KV_LANDMARK_REPRESENTATIVE || (unsigned)r->selection > 1 ||
        (unsigned)r->eviction > 1 || (unsigned)sk->pooling > 1 || (unsigned)sk->reduce > 1 ||
        (unsigned)py->pooling > 1 || (unsigned)py->reduce > 1)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache", "invalid enum value");
    return KS_OK;
}


/* ---- parameters by name ---- */

#define PF(kind, sect, type, key, ty, fn, req)                                                 \
    {kind, #key, ty, offsetof(kv_policy_config, sect) + offsetof(type, key), fn, req}

static const kv_param_desc g_params[] = {
    PF(KV_POLICY_SINK_WINDOW, sink_window, kv_sink_window_params, n_sink, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_SINK_WINDOW, sink_window, kv_sink_window_params, window, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_SINK_WINDOW, sink_window, kv_sink_window_params, positions, KV_PARAM_ENUM,
       kv_pos_mode_from_name, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, budget, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, window, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, kernel, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, pooling, KV_PARAM_ENUM, kv_pooling_from_name, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, reduce, KV_PARAM_ENUM, kv_reduce_from_name, 1),
    PF(KV_POLICY_SNAPKV, snapkv, kv_snapkv_params, interval, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, budget, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, window, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, kernel, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, pooling, KV_PARAM_ENUM,
       kv_pooling_from_name, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, reduce, KV_PARAM_ENUM, kv_reduce_from_name,
       1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, beta, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, budget_fraction, KV_PARAM_DOUBLE, NULL, 1),
    PF(KV_POLICY_PYRAMID, pyramid, kv_pyramid_params, interval, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_H2O, h2o, kv_h2o_params, heavy, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_H2O, h2o, kv_h2o_params, recent, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, block_tokens, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, landmark, KV_PARAM_ENUM,
       kv_landmark_from_name, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, representatives, KV_PARAM_INT, NULL,
       1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, top_k, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, n_sink, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, window, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, selection, KV_PARAM_ENUM,
       kv_selection_from_name, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, dense_layers, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, positions, KV_PARAM_ENUM,
       kv_pos_mode_from_name, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, chunk, KV_PARAM_INT, NULL, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, eviction, KV_PARAM_ENUM,
       kv_eviction_from_name, 1),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, ram_mb, KV_PARAM_I64, NULL, 0),
    PF(KV_POLICY_RETRIEVAL, retrieval, kv_retrieval_params, spill_dir, KV_PARAM_PATH, NULL, 0),
};

const kv_param_desc *kv_param_list(size_t *n)
{
    *n = KS_ARRAY_LEN(g_params);
    return g_params;
}

const kv_param_desc *kv_param_find(kv_policy_kind kind, const char *key)
{
    for (size_t i = 0; key && i < KS_ARRAY_LEN(g_params); i++)
        if (g_params[i].kind == kind && strcmp(g_params[i].key, key) == 0) return &g_params[i];
    return NULL;
}

int kv_param_set_int(kv_policy_config *pc, const kv_param_desc *p, int64_t v)
{
    char *at = (char *)pc + p->off;
    if (p->type == KV_PARAM_DOUBLE) return kv_param_set_double(pc, p, (double)v);
    if (p->type == KV_PARAM_I64) {
        memcpy(at, &v, sizeof(v));
        return KS_OK;
    }
    if (p->type != KV_PARAM_INT || v < INT32_MIN || v > INT32_MAX) return KS_ERR_INVALID;
    int32_t x = (int32_t)v;
    memcpy(at, &x, sizeof(x));
    return KS_OK;
}

int kv_param_set_double(kv_policy_config *pc, const kv_param_desc *p, double v)
{
    if (p->type != KV_PARAM_DOUBLE || !isfinite(v)) return KS_ERR_INVALID;
    memcpy((char *)pc + p->off, &v, sizeof(v));
    return KS_OK;
}

int kv_param_set_name(kv_policy_config *pc, const kv_param_desc *p, const char *name)
{
    int e = p->type == KV_PARAM_ENUM ? p->from_name(name) : KS_ERR_INVALID;
    if (e < 0) return KS_ERR_INVALID;
    memcpy((char *)pc + p->off, &e, sizeof(int)); /* enums are int-sized (config.c asserts) */
    return KS_OK;
}

int kv_param_set_text(kv_policy_config *pc, const kv_param_desc *p, const char *text)
{
    if (p->type == KV_PARAM_ENUM) return kv_param_set_name(pc, p, text);
    if (p->type == KV_PARAM_PATH) {
        if (!*text || strlen(text) >= KV_SPILL_DIR_MAX) return KS_ERR_INVALID;
        memcpy((char *)pc + p->off, text, strlen(text) + 1);
        return KS_OK;
    }
    char *end = NULL;
    errno = 0;
    if (p->type == KV_PARAM_DOUBLE) {
        double v = strtod(text, &end);
        if (!*text || *end || errno) return KS_ERR_INVALID;
        return kv_param_set_double(pc, p, v);
    }
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno) return KS_ERR_INVALID;
    return kv_param_set_int(pc, p, v);
}

int kv_policy_config_parse_spec(kv_policy_config *pc, const char *spec, ks_diag *d)
{
    char buf[512];
    if (!spec || strlen(spec) >= sizeof(buf))
        return ks_diag_set(d, KS_ERR_INVALID, "policy spec is empty or too long");
    snprintf(buf, sizeof(buf), "%s", spec);
    char *params = strchr(buf, ':');
    if (params) *params++ = 0;
    int kind = kv_policy_kind_from_name(buf);
    if (kind < 0) return ks_diag_set(d, KS_ERR_INVALID, "unknown KV policy '%s'", buf);
    kv_policy_config next = *pc;
    next.kind = (kv_policy_kind)kind;
    for (char *save = NULL, *kv = params ? strtok_r(params, ",", &save) : NULL; kv;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return ks_diag_set(d, KS_ERR_INVALID, "%s: '%s' is not key=value", buf, kv);
        *eq = 0;
        const kv_param_desc *p = kv_param_find(next.kind, kv);
        if (!p) return ks_diag_set(d, KS_ERR_INVALID, "policy %s has no parameter '%s'", buf, kv);
        if (kv_param_set_text(&next, p, eq + 1))
            return ks_diag_set(d, KS_ERR_INVALID, "%s.%s: bad value '%s'", buf, kv, eq + 1);
    }
    int rc = kv_policy_config_validate(&next, d);
    if (rc) return rc;
    *pc = next;
    return KS_OK;
}

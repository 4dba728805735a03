/* config.c - server configuration: defaults, strict TOML loading, validation, environment.
 * The KV-policy parameter block (policy_config.h) lives in kvcache/policy_config.c.
 *
 * Loading is table driven: every accepted key is one row of `g_keys` (path, type, field), or
 * a policy parameter kvcache.NAME.KEY read from that policy's descriptor (policy_config.h),
 * so no policy is named here. The document tree is walked once; anything not in the table is an
 * error naming the file, line and key. Ranges live in the validators only (cfg_validate,
 * kv_policy_config_validate), which report the field's TOML path; the loader maps that path back to
 * the line where the file set it.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/kvcache.h"
#include "toml.h"

/* ---- names ---- */

static const char *const g_dtype_names[] = {"f16",  "f32",  "bf16",   "q8_0",  "q4_0",  "q4_1",
                                            "q5_0", "q5_1", "iq4_nl", "kivi4", "kivi2", NULL};
static const char *const g_templates[] = {"auto",   "chatml", "llama3", "llama2", "mistral",
                                          "zephyr", "phi3",   "gemma",  NULL};

static int name_lookup(const char *const *names, const char *name)
{
    return kv_name_index(names, name);
}

int cfg_kv_dtype_from_name(const char *n)
{
    return name_lookup(g_dtype_names, n);
}

const char *cfg_kv_dtype_name(cfg_kv_dtype t)
{
    return (unsigned)t < CFG_KV_N ? g_dtype_names[t] : "?";
}

ks_dtype cfg_kv_dtype_ks(cfg_kv_dtype t)
{
    /* in the order of g_dtype_names (test_config checks the names agree with kvtype.h) */
    static const ks_dtype map[CFG_KV_N] = {
        KS_DTYPE_F16,  KS_DTYPE_F32,  KS_DTYPE_BF16,   KS_DTYPE_Q8_0,  KS_DTYPE_Q4_0, KS_DTYPE_Q4_1,
        KS_DTYPE_Q5_0, KS_DTYPE_Q5_1, KS_DTYPE_IQ4_NL, KS_DTYPE_KIVI4, KS_DTYPE_KIVI2};
    return (unsigned)t < CFG_KV_N ? map[t] : KS_DTYPE_F16;
}

ks_dtype cfg_kv_k_dtype(const cfg *c)
{
    cfg_kv_dtype t = c->kvcache.k_dtype != CFG_KV_UNSET ? c->kvcache.k_dtype : c->kvcache.dtype;
    return cfg_kv_dtype_ks(t);
}

ks_dtype cfg_kv_v_dtype(const cfg *c)
{
    cfg_kv_dtype t = c->kvcache.v_dtype != CFG_KV_UNSET ? c->kvcache.v_dtype : c->kvcache.dtype;
    return cfg_kv_dtype_ks(t);
}

static bool is_pow2(int64_t v)
{
    return v > 0 && (v & (v - 1)) == 0;
}

#define RANGE(key, v, lo, hi)                                                                      \
    do {                                                                                           \
        int rc_ = ks_check_range(d, key, v, lo, hi);                                               \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* ---- whole configuration ---- */

void cfg_defaults(cfg *c)
{
    memset(c, 0, sizeof(*c));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg_server *s = &c->server;
    snprintf(s->host, sizeof(s->host), "127.0.0.1");
    s->port = 8080;
    s->threads = ncpu > 0 ? (int32_t)KS_MIN(ncpu, 1024) : 1;
    s->max_body_bytes = 1 << 20;
    s->max_header_bytes = 16 << 10;
    s->request_timeout_s = 600;
    s->max_queue = 64;
    s->queue_aging_s = 5;
    s->shutdown_grace_s = 30;
    s->max_connections = 256;
    s->header_timeout_s = 10;
    s->body_timeout_s = 60;
    s->idle_timeout_s = 30;
    s->max_buffered_mb = 64;
    s->max_client_concurrent = 0;
    s->ui = -1;
    c->model.ctx = 4096;
    snprintf(c->model.chat_template, sizeof(c->model.chat_template), "auto");
    c->kvcache.memory_mb = 1024;
    c->kvcache.block_tokens = 64;
    c->kvcache.dtype = CFG_KV_F16;
    c->kvcache.k_dtype = CFG_KV_UNSET;
    c->kvcache.v_dtype = CFG_KV_UNSET;
    c->kvcache.kv_residual = 128; /* KIVI's R */
    c->kvcache.allow_request_override = true;
    c->kvcache.persist_max_mb = 1024;
    kv_policy_config_defaults(&c->kvcache.policy);
    c->limits = (cfg_limits){.default_max_tokens = 256,
                             .max_tokens = 4096,
                             .max_concurrent = 16,
                             .max_prompt_tokens = 0};
}

int cfg_validate(const cfg *c, ks_diag *d)
{
    const cfg_server *s = &c->server;
    if (!s->host[0]) return ks_diag_key(d, KS_ERR_INVALID, "server.host", "empty");
    RANGE("server.port", s->port, 1, 65535);
    RANGE("server.threads", s->threads, 1, 1024);
    RANGE("server.max_body_bytes", s->max_body_bytes, 1, INT64_MAX);
    RANGE("server.max_header_bytes", s->max_header_bytes, 1024, INT32_MAX);
    RANGE("server.request_timeout_s", s->request_timeout_s, 1, INT32_MAX);
    RANGE("server.max_queue", s->max_queue, 1, INT32_MAX);
    RANGE("server.queue_aging_s", s->queue_aging_s, 1, 86400);
    RANGE("server.shutdown_grace_s", s->shutdown_grace_s, 0, INT32_MAX);
    RANGE("server.max_connections", s->max_connections, 1, 1 << 20);
    RANGE("server.header_timeout_s", s->header_timeout_s, 1, 86400);
    RANGE("server.body_timeout_s", s->body_timeout_s, 1, 86400);
    RANGE("server.idle_timeout_s", s->idle_timeout_s, 1, 86400);
    RANGE("server.max_buffered_mb", s->max_buffered_mb, 1, 1 << 20);
    RANGE("server.max_client_concurrent", s->max_client_concurrent, 0, INT32_MAX);
    RANGE("model.ctx", c->model.ctx, 16, 1 << 24);
    RANGE("model.threads", c->model.threads, 0, 1024);
    if (name_lookup(g_templates, c->model.chat_template) < 0)
        return ks_diag_key(
            d, KS_ERR_INVALID, "model.chat_template",
            "unknown template \"%s\" (auto, chatml, llama3, llama2, mistral, zephyr, "
            "phi3, gemma)",
            c->model.chat_template);
    RANGE("kvcache.memory_mb", c->kvcache.memory_mb, 1, INT64_MAX / (1 << 20));
    const int32_t bt = c->kvcache.block_tokens;
    if (!is_pow2(bt) || bt < 8 || bt > 1024)
        return ks_diag_key(d, KS_ERR_RANGE, "kvcache.block_tokens",
                           "%d must be a power of two in 8..1024", bt);
    if ((unsigned)c->kvcache.dtype >= CFG_KV_N)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.dtype", "invalid");
    if (c->kvcache.k_dtype < CFG_KV_UNSET || c->kvcache.k_dtype >= CFG_KV_N)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.k_dtype", "invalid");
    if (c->kvcache.v_dtype < CFG_KV_UNSET || c->kvcache.v_dtype >= CFG_KV_N)
        return ks_diag_key(d, KS_ERR_INVALID, "kvcache.v_dtype", "invalid");
    RANGE("kvcache.kv_residual", c->kvcache.kv_residual, 0, KV_RESIDUAL_MAX);
    /* KIVI blocks are quantised per block of tokens; only `full` never moves rows between
     * blocks (the other policies evict or spill rows, which a sealed group cannot do) */
    if ((ks_dtype_is_kivi(cfg_kv_k_dtype(c)) || ks_dtype_is_kivi(cfg_kv_v_dtype(c))) &&
        c->kvcache.policy.kind != 0)
        return ks_diag_key(d, KS_ERR_UNSUPPORTED, "kvcache.policy",
                           "kivi4/kivi2 KV types work with policy \"full\" only, not \"%s\"",
                           kv_policy_kind_name(c->kvcache.policy.kind));
    RANGE("kvcache.persist_interval_s", c->kvcache.persist_interval_s, 0, 1 << 24);
    RANGE("kvcache.persist_max_mb", c->kvcache.persist_max_mb, 1, 1 << 24);
    int rc = kv_policy_config_validate(&c->kvcache.policy, d);
    if (rc) return rc;
    const cfg_limits *l = &c->limits;
    RANGE("limits.max_tokens", l->max_tokens, 1, INT32_MAX);
    RANGE("limits.default_max_tokens", l->default_max_tokens, 1, l->max_tokens);
    RANGE("limits.max_concurrent", l->max_concurrent, 1, INT32_MAX);
    RANGE("limits.max_prompt_tokens", l->max_prompt_tokens, 0, c->model.ctx);
    return KS_OK;
}

int32_t cfg_model_threads(const cfg *c)
{
    return c->model.threads > 0 ? c->model.threads : c->server.threads;
}

int32_t cfg_max_prompt_tokens(const cfg *c)
{
    return c->limits.max_prompt_tokens > 0 ? c->limits.max_prompt_tokens : c->model.ctx;
}

bool cfg_ui_enabled(const cfg *c)
{
    if (c->server.ui >= 0) return c->server.ui == 1;
    const char *h = c->server.host; /* numeric addresses only (see http.h) */
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

int cfg_apply_env(cfg *c, ks_diag *d)
{
    const char *key = getenv("KVSERVE_API_KEY");
    if (!key || !key[0]) return KS_OK;
    if (strlen(key) >= sizeof(c->server.api_key))
        return ks_diag_key(d, KS_ERR_RANGE, "server.api_key",
                           "KVSERVE_API_KEY is too long (max %zu)", sizeof(c->server.api_key) - 1);
    snprintf(c->server.api_key, sizeof(c->server.api_key), "%s", key);
    return KS_OK;
}

/* ---- TOML loading ---- */

/* K_POLICY: a policy name from the registry (kvcache.policy). */
typedef enum key_type { K_I32, K_I64, K_BOOL, K_F64, K_STR, K_ENUM, K_POLICY, K_TRI } key_type;
/* K_TRI: a TOML boolean stored as int32 1 / 0 over a default of -1 ("not set: derive it"). */

typedef struct key_spec {
    const char *path;
    key_type type;
    size_t off;
    size_t size;              /* K_STR: buffer size */
    const char *const *names; /* K_ENUM: accepted names, index = enum value */
} key_spec;

#define KEY(p, t, f)                                                                               \
    {                                                                                              \
        p, t, offsetof(cfg, f), sizeof(((cfg *)0)->f), NULL                                        \
    }
#define KENUM(p, f, n)                                                                             \
    {                                                                                              \
        p, K_ENUM, offsetof(cfg, f), sizeof(((cfg *)0)->f), n                                      \
    }

_Static_assert(sizeof(kv_pos_mode) == sizeof(int) && sizeof(cfg_kv_dtype) == sizeof(int) &&
                   sizeof(kv_eviction) == sizeof(int),
               "enum fields are written through int pointers");

static const key_spec g_keys[] = {
    KEY("server.host", K_STR, server.host),
    KEY("server.port", K_I32, server.port),
    KEY("server.threads", K_I32, server.threads),
    KEY("server.max_body_bytes", K_I64, server.max_body_bytes),
    KEY("server.max_header_bytes", K_I64, server.max_header_bytes),
    KEY("server.request_timeout_s", K_I32, server.request_timeout_s),
    KEY("server.max_queue", K_I32, server.max_queue),
    KEY("server.queue_aging_s", K_I32, server.queue_aging_s),
    KEY("server.api_key", K_STR, server.api_key),
    KEY("server.shutdown_grace_s", K_I32, server.shutdown_grace_s),
    KEY("server.max_connections", K_I32, server.max_connections),
    KEY("server.header_timeout_s", K_I32, server.header_timeout_s),
    KEY("server.body_timeout_s", K_I32, server.body_timeout_s),
    KEY("server.idle_timeout_s", K_I32, server.idle_timeout_s),
    KEY("server.max_buffered_mb", K_I64, server.max_buffered_mb),
    KEY("server.max_client_concurrent", K_I32, server.max_client_concurrent),
    KEY("server.cors_origins", K_STR, server.cors_origins),
    KEY("server.ui", K_TRI, server.ui),
    KEY("model.path", K_STR, model.path),
    KEY("model.ctx", K_I32, model.ctx),
    KEY("model.threads", K_I32, model.threads),
    KEY("model.chat_template", K_STR, model.chat_template),
    KEY("model.chat_template_file", K_STR, model.chat_template_file),
    KEY("model.chat_template_fallback", K_BOOL, model.chat_template_fallback),
    KEY("kvcache.memory_mb", K_I64, kvcache.memory_mb),
    KEY("kvcache.block_tokens", K_I32, kvcache.block_tokens),
    KEY("kvcache.kv_residual", K_I32, kvcache.kv_residual),
    KENUM("kvcache.dtype", kvcache.dtype, g_dtype_names),
    KENUM("kvcache.k_dtype", kvcache.k_dtype, g_dtype_names),
    KENUM("kvcache.v_dtype", kvcache.v_dtype, g_dtype_names),
    {"kvcache.policy", K_POLICY, offsetof(cfg, kvcache.policy.kind), sizeof(int32_t), NULL},
    KEY("kvcache.allow_request_override", K_BOOL, kvcache.allow_request_override),
    KEY("kvcache.persist_dir", K_STR, kvcache.persist_dir),
    KEY("kvcache.persist_interval_s", K_I32, kvcache.persist_interval_s),
    KEY("kvcache.persist_max_mb", K_I64, kvcache.persist_max_mb),
    KEY("limits.default_max_tokens", K_I32, limits.default_max_tokens),
    KEY("limits.max_tokens", K_I32, limits.max_tokens),
    KEY("limits.max_concurrent", K_I32, limits.max_concurrent),
    KEY("limits.max_prompt_tokens", K_I32, limits.max_prompt_tokens),
};

/* Tables besides one kvcache.NAME per registered policy (read from the descriptors). */
static const char *const g_tables[] = {"server", "model", "kvcache", "limits", NULL};

typedef struct loader {
    cfg *c;
    ks_diag *d;
    const char *file;
} loader;

/* Where a key's value goes: a row of g_keys, or a policy parameter from its descriptor. */
typedef struct key_target {
    key_type type;
    void *dst;
    size_t size;              /* K_STR: buffer size */
    const char *const *names; /* K_ENUM */
} key_target;

static bool cfg_key_find(loader *L, const char *path, key_target *t)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(g_keys); i++) {
        const key_spec *k = &g_keys[i];
        if (strcmp(k->path, path) != 0) continue;
        *t = (key_target){k->type, (char *)L->c + k->off, k->size, k->names};
        if (k->type == K_POLICY) {
            t->type = K_ENUM;
            t->names = kv_policy_names();
        }
        return true;
    }
    return false;
}

/* "kvcache.NAME" for a registered policy: its descriptor, else NULL. */
static const kv_policy_desc *policy_table(const char *path)
{
    return strncmp(path, "kvcache.", 8) == 0 ? kv_policy_desc_find(path + 8) : NULL;
}

/* "kvcache.NAME.KEY": the parameter's field in the configuration's policy block. */
static bool policy_key_find(loader *L, const char *path, key_target *t)
{
    const char *dot = strncmp(path, "kvcache.", 8) == 0 ? strchr(path + 8, '.') : NULL;
    char name[64];
    if (!dot || (size_t)(dot - path - 8) >= sizeof(name)) return false;
    snprintf(name, sizeof(name), "%.*s", (int)(dot - path - 8), path + 8);
    const kv_policy_desc *d = kv_policy_desc_find(name);
    const kv_param_desc *p = d ? kv_param_find(kv_policy_desc_index(d), dot + 1) : NULL;
    if (!p) return false;
    static const key_type types[] = {K_I32, K_I64, K_F64, K_ENUM, K_STR};
    char *params = kv_policy_config_params_mut(&L->c->kvcache.policy, d);
    kv_param_mark_set(&L->c->kvcache.policy, kv_policy_desc_index(d), p); /* not derived */
    *t = (key_target){types[p->type], params + p->off, KV_PARAM_PATH_MAX, p->choices};
    return true;
}

/* Accepted names joined for messages: "f16", "f32". */
static void names_join(const char *const *names, char *buf, size_t n)
{
    buf[0] = 0;
    for (int i = 0; names[i]; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s\"%s\"", i ? ", " : "", names[i]);
    }
}

static int apply_value(loader *L, const char *path, const key_target *k, const toml_node *v)
{
    static const toml_kind want[] = {TOML_INT,    TOML_INT,    TOML_BOOL,   TOML_FLOAT,
                                     TOML_STRING, TOML_STRING, TOML_STRING, TOML_BOOL};
    static const char *want_name[] = {"an integer", "an integer", "a boolean", "a number",
                                      "a string",   "a string",   "a string",  "a boolean"};
    int line = toml_node_line(v);
    toml_kind kind = toml_node_kind(v);
    void *dst = k->dst;
    if (kind != want[k->type] && !(k->type == K_F64 && kind == TOML_INT))
        return toml_diag_set(L->d, KS_ERR_INVALID, L->file, line, path, "expected %s, got %s",
                             want_name[k->type], toml_kind_name(kind));
    if (k->type == K_I32 || k->type == K_I64) {
        int64_t x = toml_node_int(v);
        if (k->type == K_I32 && (x < INT32_MIN || x > INT32_MAX))
            return toml_diag_set(L->d, KS_ERR_RANGE, L->file, line, path, "%lld is out of range",
                                 (long long)x);
        if (k->type == K_I32)
            *(int32_t *)dst = (int32_t)x;
        else
            *(int64_t *)dst = x;
    } else if (k->type == K_BOOL) {
        *(bool *)dst = toml_node_bool(v);
    } else if (k->type == K_TRI) {
        *(int32_t *)dst = toml_node_bool(v) ? 1 : 0;
    } else if (k->type == K_F64) {
        *(double *)dst = kind == TOML_INT ? (double)toml_node_int(v) : toml_node_float(v);
    } else {
        size_t len;
        const char *s = toml_node_string(v, &len);
        if (strlen(s) != len)
            return toml_diag_set(L->d, KS_ERR_INVALID, L->file, line, path,
                                 "string contains a NUL character");
        if (k->type == K_STR) {
            if (len >= k->size)
                return toml_diag_set(L->d, KS_ERR_RANGE, L->file, line, path,
                                     "string too long (max %zu bytes)", k->size - 1);
            memcpy(dst, s, len + 1);
            return KS_OK;
        }
        int e = name_lookup(k->names, s);
        if (e < 0) {
            char choices[256];
            names_join(k->names, choices, sizeof(choices));
            return toml_diag_set(L->d, KS_ERR_INVALID, L->file, line, path,
                                 "unknown value \"%.64s\" (expected one of %s)", s, choices);
        }
        *(int *)dst = e; /* every enum field is an int-sized C enum */
    }
    return KS_OK;
}

static int load_table(loader *L, const toml_node *t, const char *prefix)
{
    for (size_t i = 0; i < toml_node_count(t); i++) {
        const toml_node *v = toml_node_at(t, i);
        char path[160];
        int w = snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "",
                         toml_table_key(t, i));
        if (w < 0 || (size_t)w >= sizeof(path)) path[sizeof(path) - 1] = 0;
        bool is_table = name_lookup(g_tables, path) >= 0 || policy_table(path);
        key_target k = {0};
        bool is_key = cfg_key_find(L, path, &k) || policy_key_find(L, path, &k);
        int line = toml_node_line(v);
        int rc;
        if (toml_node_kind(v) == TOML_TABLE && is_table) {
            rc = load_table(L, v, path);
        } else if (is_table) {
            rc = toml_diag_set(L->d, KS_ERR_INVALID, L->file, line, path,
                               "expected a table, got %s", toml_kind_name(toml_node_kind(v)));
        } else if (is_key) {
            rc = apply_value(L, path, &k, v);
        } else {
            rc = toml_diag_set(L->d, KS_ERR_INVALID, L->file, line, path, "unknown %s",
                               toml_node_kind(v) == TOML_TABLE ? "table" : "key");
        }
        if (rc) return rc;
    }
    return KS_OK;
}

/* Re-anchors a validator diagnostic at the line where the document set the key (or the
 * closest enclosing table it defines). */
static int locate_diag(const toml_doc *doc, int status, ks_diag *d)
{
    if (!d) return status;
    char key[sizeof(d->key)], reason[sizeof(d->msg)];
    snprintf(key, sizeof(key), "%s", d->key);
    size_t kl = strlen(key);
    snprintf(reason, sizeof(reason), "%s",
             strncmp(d->msg, key, kl) == 0 && d->msg[kl] == ':' ? d->msg + kl + 2 : d->msg);
    char path[sizeof(key)];
    snprintf(path, sizeof(path), "%s", key);
    int line = 0;
    while (path[0]) {
        const toml_node *n = toml_node_find(toml_doc_root(doc), path);
        if (n) {
            line = toml_node_line(n);
            break;
        }
        char *dot = strrchr(path, '.');
        if (dot)
            *dot = 0;
        else
            path[0] = 0;
    }
    return toml_diag_set(d, status, toml_doc_filename(doc), line, key, "%s", reason);
}

int cfg_load_string(const char *text, size_t len, const char *filename, cfg *c, ks_diag *d)
{
    toml_doc *doc;
    int rc = toml_parse(text, len, filename, &doc, d);
    if (rc) return rc;
    loader L = {.c = c, .d = d, .file = toml_doc_filename(doc)};
    rc = load_table(&L, toml_doc_root(doc), "");
    if (!rc) {
        rc = cfg_validate(c, d);
        if (rc) rc = locate_diag(doc, rc, d);
    }
    toml_doc_free(doc);
    return rc;
}

int cfg_load_file(const char *path, cfg *c, ks_diag *d)
{
    char *text;
    size_t len;
    int rc = ks_read_file(path, &text, &len, d);
    if (rc) return rc;
    rc = cfg_load_string(text, len, path, c, d);
    free(text);
    return rc;
}

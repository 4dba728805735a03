/* api_params.c - parsing and validation of the generation parameters of /v1/completions and
 * /v1/chat/completions (OpenAI names, plus llama.cpp's top_k, min_p, repeat_penalty) and of
 * the per-request "kv_policy" object. Every rejection names the parameter, so the handler
 * can answer 400 with OpenAI's error object ("param" set).
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_server.h"
#include "kvserve/tokenizer.h"

#define FAIL(p, ...)                                                                               \
    do {                                                                                           \
        snprintf(msg, cap, __VA_ARGS__);                                                           \
        *param = (p);                                                                              \
        return KS_ERR_INVALID;                                                                     \
    } while (0)

/* Reads an optional number field into *out within [lo, hi]. 1 = bad. */
static int get_num(json_t *root, const char *key, double lo, double hi, double *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return 1;
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return 1;
    *out = x;
    return 0;
}

static int get_int(json_t *root, const char *key, long long lo, long long hi, long long *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return 1;
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return 1;
    *out = x;
    return 0;
}

static int get_bool(json_t *root, const char *key, bool *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return 1;
    *out = json_is_true(v);
    return 0;
}

static int parse_stops(json_t *root, api_gen *g, char *msg, size_t cap, const char **param)
{
    json_t *st = json_object_get(root, "stop");
    if (!st || json_is_null(st)) return 0;
    if (json_is_string(st)) {
        if (json_string_length(st) == 0) FAIL("stop", "'stop' must not be empty");
        g->stops[g->n_stops++] = json_string_value(st);
        return 0;
    }
    if (!json_is_array(st)) FAIL("stop", "'stop' must be a string or a list of strings");
    if (json_array_size(st) > KS_ARRAY_LEN(g->stops))
        FAIL("stop", "'stop' holds at most %zu strings", KS_ARRAY_LEN(g->stops));
    size_t i;
    json_t *v;
    json_array_foreach(st, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0)
            FAIL("stop", "'stop' entries must be non-empty strings");
        g->stops[g->n_stops++] = json_string_value(v);
    }
    return 0;
}

static int parse_logprobs(json_t *root, bool chat, api_gen *g, char *msg, size_t cap,
                          const char **param)
{
    json_t *lp = json_object_get(root, "logprobs");
    long long k = 0;
    /* checked whether or not logprobs is on: a bad value is an error, not ignored */
    if (get_int(root, "top_logprobs", 0, SCH_MAX_TOP_LOGPROBS, &k))
        FAIL("top_logprobs", "'top_logprobs' must be an integer in 0..%d", SCH_MAX_TOP_LOGPROBS);
    if (k > 0 && (!chat || !json_is_true(lp)))
        FAIL("top_logprobs", chat ? "'top_logprobs' needs 'logprobs': true"
                                  : "'top_logprobs' is a chat parameter; completions take "
                                    "'logprobs': N");
    if (!lp || json_is_null(lp)) return 0;
    if (chat) {
        if (!json_is_boolean(lp)) FAIL("logprobs", "'logprobs' must be a boolean");
        if (!json_is_true(lp)) return 0;
        g->logprobs = true;
        g->sampling.n_logprobs = (int32_t)k;
        return 0;
    }
    if (json_is_boolean(lp)) {
        if (json_is_true(lp)) {
            g->logprobs = true;
            g->sampling.n_logprobs = 0;
        }
        return 0;
    }
    if (get_int(root, "logprobs", 0, SCH_MAX_TOP_LOGPROBS, &k))
        FAIL("logprobs", "'logprobs' must be an integer in 0..%d", SCH_MAX_TOP_LOGPROBS);
    g->logprobs = true;
    g->sampling.n_logprobs = (int32_t)k;
    return 0;
}

static int parse_sampling(json_t *root, api_gen *g, char *msg, size_t cap, const char **param)
{
    sch_sampling *s = &g->sampling;
    double x;
    long long i;
    x = s->temperature;
    if (get_num(root, "temperature", 0, 100, &x))
        FAIL("temperature", "'temperature' must be a number in 0..100");
    s->temperature = (float)x;
    x = s->top_p;
    if (get_num(root, "top_p", 0, 1, &x) || x <= 0)
        FAIL("top_p", "'top_p' must be a number in (0, 1]");
    s->top_p = (float)x;
    x = s->min_p;
    if (get_num(root, "min_p", 0, 1, &x)) FAIL("min_p", "'min_p' must be a number in 0..1");
    s->min_p = (float)x;
    i = s->top_k;
    if (get_int(root, "top_k", 0, 1 << 30, &i))
        FAIL("top_k", "'top_k' must be a non-negative integer");
    s->top_k = (int32_t)i;
    x = s->presence_penalty;
    if (get_num(root, "presence_penalty", -2, 2, &x))
        FAIL("presence_penalty", "'presence_penalty' must be a number in -2..2");
    s->presence_penalty = (float)x;
    x = s->frequency_penalty;
    if (get_num(root, "frequency_penalty", -2, 2, &x))
        FAIL("frequency_penalty", "'frequency_penalty' must be a number in -2..2");
    s->frequency_penalty = (float)x;
    x = s->repeat_penalty;
    if (get_num(root, "repeat_penalty", 0, 10, &x) || x <= 0)
        FAIL("repeat_penalty", "'repeat_penalty' must be a number in (0, 10]");
    s->repeat_penalty = (float)x;
    i = s->repeat_last_n;
    if (get_int(root, "repeat_last_n", 0, 1 << 20, &i))
        FAIL("repeat_last_n", "'repeat_last_n' must be a non-negative integer");
    s->repeat_last_n = (int32_t)i;
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) FAIL("seed", "'seed' must be an integer");
        s->seed = (uint64_t)json_integer_value(seed);
        s->has_seed = true;
    }
    return 0;
}

/* ignore_eos (llama-server's name): the end-of-generation tokens get a -inf logit bias, so
 * the output runs to max_tokens (benchmarks fix the output length with it). Appended to the
 * logit_bias list after it was parsed; g owns the arrays. */
static int apply_ignore_eos(const api_server *a, api_gen *g)
{
    int32_t n_vocab = a->vocab ? tok_vocab_n_tokens(a->vocab) : 0, n_eog = 0;
    for (int32_t id = 0; id < n_vocab; id++)
        n_eog += tok_is_eog(a->vocab, id);
    if (n_eog == 0) return 0;
    int32_t *ids = realloc(g->bias_ids, (size_t)(g->n_bias + n_eog) * sizeof(int32_t));
    if (!ids) return KS_ERR_NOMEM;
    g->bias_ids = ids;
    float *b = realloc(g->bias, (size_t)(g->n_bias + n_eog) * sizeof(float));
    if (!b) return KS_ERR_NOMEM;
    g->bias = b;
    for (int32_t id = 0; id < n_vocab; id++) {
        if (!tok_is_eog(a->vocab, id)) continue;
        g->bias_ids[g->n_bias] = id;
        g->bias[g->n_bias++] = -INFINITY;
    }
    return 0;
}

int api_gen_parse(const api_server *a, json_t *root, bool chat, api_gen *g, char *msg, size_t cap,
                  const char **param)
{
    memset(g, 0, sizeof(*g));
    sch_sampling_default(&g->sampling);
    const cfg_limits *lim = &a->cfg->limits;
    long long n = 1;
    if (get_int(root, "n", 1, API_MAX_CHOICES, &n))
        FAIL("n", "'n' must be an integer in 1..%d", API_MAX_CHOICES);
    g->n = (int32_t)n;
    long long mt = lim->default_max_tokens;
    const char *mt_key =
        json_object_get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (get_int(root, mt_key, 1, lim->max_tokens, &mt))
        FAIL(mt_key, "'%s' must be an integer in 1..%d", mt_key, lim->max_tokens);
    g->max_tokens = (int32_t)mt;
    if (parse_sampling(root, g, msg, cap, param)) return KS_ERR_INVALID;
    if (parse_stops(root, g, msg, cap, param)) return KS_ERR_INVALID;
    if (parse_logprobs(root, chat, g, msg, cap, param)) return KS_ERR_INVALID;
    if (get_bool(root, "stream", &g->stream)) FAIL("stream", "'stream' must be a boolean");
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so) || get_bool(so, "include_usage", &g->include_usage))
            FAIL("stream_options", "'stream_options' must be {\"include_usage\": bool}");
    }
    json_t *pol = json_object_get(root, "kv_policy");
    if (pol && !json_is_null(pol)) {
        g->policy_config = malloc(sizeof(kv_policy_config));
        if (!g->policy_config) FAIL("kv_policy", "out of memory");
        if (api_policy_parse(a, pol, g->policy_config, &g->policy, msg, cap)) {
            free(g->policy_config);
            g->policy_config = NULL;
            *param = "kv_policy";
            return KS_ERR_INVALID;
        }
    }
    bool ignore_eos = false;
    if (get_bool(root, "ignore_eos", &ignore_eos)) {
        api_gen_release(g);
        FAIL("ignore_eos", "'ignore_eos' must be a boolean");
    }
    if (api_structured_parse(a, root, chat, g, msg, cap, param)) {
        api_gen_release(g);
        return KS_ERR_INVALID;
    }
    if (ignore_eos && apply_ignore_eos(a, g)) {
        api_gen_release(g);
        FAIL("ignore_eos", "out of memory");
    }
    return 0;
}

/* ---------------------------------------------------------------- kv_policy */

/* A JSON value into a policy parameter, by the parameter's type (kvcache/policy_config.c). */
static int set_field(const kv_param_desc *f, json_t *v, kv_policy_config *out, char *msg,
                     size_t cap, const char *name)
{
    int rc = KS_ERR_INVALID;
    if (f->type == KV_PARAM_ENUM && json_is_string(v))
        rc = kv_param_set_name(out, out->kind, f, json_string_value(v));
    else if (f->type == KV_PARAM_DOUBLE && json_is_number(v))
        rc = kv_param_set_double(out, out->kind, f, json_number_value(v));
    else if ((f->type == KV_PARAM_INT || f->type == KV_PARAM_I64) && json_is_integer(v))
        rc = kv_param_set_int(out, out->kind, f, json_integer_value(v));
    if (rc) snprintf(msg, cap, "kv_policy %s: bad value for '%s'", name, f->key);
    return rc;
}

/* A request's "k_dtype" / "v_dtype": a KV type name, and the one the pool stores (one pool
 * holds one layout, so a request can state the type but not change it). */
static int kv_type_check(const api_server *a, const char *key, json_t *v, char *msg, size_t cap)
{
    ks_dtype t;
    if (!json_is_string(v) || ks_dtype_from_name(json_string_value(v), &t)) {
        snprintf(msg, cap, "kv_policy %s: expected one of %s", key, ks_dtype_names());
        return KS_ERR_INVALID;
    }
    ks_dtype have = !a->pool        ? t
                    : key[0] == 'k' ? kv_pool_k_dtype(a->pool)
                                    : kv_pool_v_dtype(a->pool);
    if (t != have) {
        snprintf(msg, cap,
                 "kv_policy %s: this server stores %c as %s (kvcache.%s); a request cannot "
                 "change it",
                 key, key[0] == 'k' ? 'K' : 'V', ks_dtype_name(have), key);
        return KS_ERR_INVALID;
    }
    return 0;
}

/* A request's own window or budget must fit in the context: a larger one can never be used
 * and, for admission, would only make the request look bigger than it can be. */
static int policy_check_ctx(const kv_policy_config *c, int32_t n_ctx, char *msg, size_t cap)
{
    /* The most tokens a table of this policy keeps however long the input (its window,
     * sinks, heavy hitters, retrieved blocks): a bounded policy whose bound is beyond the
     * context has a window or top_k that can never be used. */
    const kv_policy_desc *pd = kv_policy_config_desc(c);
    const int64_t huge = (int64_t)1 << 40;
    int32_t dense = 0;
    int64_t bound = pd->admission(kv_policy_config_params(c, pd), huge, 1, 1, &dense);
    if (n_ctx <= 0 || bound >= huge || bound <= n_ctx) return 0;
    snprintf(msg, cap,
             "kv_policy %s keeps up to %lld tokens (its window, sinks, heavy or "
             "retrieved blocks), more than the context of %d tokens",
             pd->name, (long long)bound, n_ctx);
    return KS_ERR_INVALID;
}

int api_policy_parse(const api_server *a, json_t *obj, kv_policy_config *out,
                     const kv_policy **policy, char *msg, size_t cap)
{
    if (!a->cfg->kvcache.allow_request_override) {
        snprintf(msg, cap, "per-request kv_policy is disabled on this server");
        return KS_ERR_INVALID;
    }
    json_t *jn = json_is_object(obj) ? json_object_get(obj, "name") : NULL;
    if (!jn || !json_is_string(jn)) {
        snprintf(msg, cap, "kv_policy must be an object with a string 'name'");
        return KS_ERR_INVALID;
    }
    const char *name = json_string_value(jn);
    int kind = kv_policy_kind_from_name(name);
    const kv_policy *pol = kind >= 0 ? kv_policy_find(name) : NULL;
    if (!pol) {
        snprintf(msg, cap, "unknown kv_policy '%s'", name);
        return KS_ERR_INVALID;
    }
    if (kind != 0 && a->pool && kv_pool_is_sealable(a->pool)) {
        snprintf(msg, cap,
                 "kv_policy '%s': this server stores kivi4/kivi2 KV, which works with policy "
                 "'full' only",
                 name);
        return KS_ERR_INVALID;
    }
    *out = a->cfg->kvcache.policy;
    out->kind = kind;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (!strcmp(key, "name")) continue;
        if (!strcmp(key, "k_dtype") || !strcmp(key, "v_dtype")) {
            if (kv_type_check(a, key, v, msg, cap)) return KS_ERR_INVALID;
            continue;
        }
        const kv_param_desc *f = kv_param_find(out->kind, key);
        if (!f || f->server_only) {
            snprintf(msg, cap, "kv_policy %s has no parameter '%s'", name, key);
            return KS_ERR_INVALID;
        }
        if (set_field(f, v, out, msg, cap, name)) return KS_ERR_INVALID;
    }
    ks_diag d;
    ks_diag_clear(&d);
    /* the parameters not given are derived for this model (policy_config.h) */
    const model_hparams *hp = a->model ? model_get_hparams(a->model) : NULL;
    kv_model_info mi = {0, 0, 0, 0};
    if (hp) mi = (kv_model_info){hp->n_ctx_train, hp->n_layer, hp->n_head_kv, hp->head_dim};
    if (kv_policy_config_validate(out, &d) || kv_policy_config_resolve(out, &mi, &d)) {
        snprintf(msg, cap, "kv_policy: %s", d.msg);
        return KS_ERR_INVALID;
    }
    if (json_object_size(obj) > 1 && policy_check_ctx(out, a->n_ctx, msg, cap))
        return KS_ERR_INVALID;
    *policy = pol;
    return 0;
}

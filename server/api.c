/* api.c - OpenAI-compatible endpoints: routing, API-key check and the simple endpoints
 * (health, models, tokenize, detokenize, metrics, kv). Generation lives in api_gen.c, the JSON
 * request/response helpers both use in api_json.c. Every answered request is counted in metrics by
 * status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_server.h"
#include "kv_feed.h"
#include "kvserve/gguf.h"
#include "sse.h"

static void h_health(api_server *a, http_request *req)
{
    char path[512], msg[700];
    if (gguf_mapping_lost(path, sizeof(path))) {
        snprintf(msg, sizeof(msg),
                 "the model file %s was truncated or replaced under the "
                 "server; restart kvserve",
                 path);
        api_respond_json(a, req, 503, json_pack("{s:s, s:s}", "status", "error", "message", msg));
    } else if (!a->model)
        api_respond_json(a, req, 503, json_pack("{s:s}", "status", "loading"));
    else
        api_respond_json(a, req, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_models(api_server *a, http_request *req)
{
    json_t *data = json_array();
    if (a->model) {
        const model_hparams *hp = model_get_hparams(a->model);
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:s}}", "id",
                                              a->model_id, "object", "model", "created",
                                              (json_int_t)time(NULL), "owned_by", "kvserve", "meta",
                                              "n_vocab", hp->n_vocab, "n_ctx", a->n_ctx, "arch",
                                              hp->arch_name));
    }
    api_respond_json(a, req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static void h_tokenize(api_server *a, http_request *req)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    json_t *c = json_object_get(root, "content");
    json_t *as = json_object_get(root, "add_special");
    json_t *ps = json_object_get(root, "parse_special");
    if (!json_is_string(c) || (as && !json_is_boolean(as)) || (ps && !json_is_boolean(ps))) {
        const char *param = !json_is_string(c)           ? "content"
                            : as && !json_is_boolean(as) ? "add_special"
                                                         : "parse_special";
        json_decref(root);
        api_respond_error(a, req, 400,
                          "'content' must be a string ('add_special', 'parse_special': booleans)",
                          param);
        return;
    }
    const char *text = json_string_value(c);
    size_t len = json_string_length(c);
    bool add = as ? json_is_true(as) : false;
    /* parse_special defaults to true here (llama.cpp's /tokenize); generation prompts
     * default to plain text */
    tok_span all = {0, len};
    int32_t *ids = NULL, n = -1;
    if (tok_encode_ex(a->vocab, text, len, add, &all, ps && !json_is_true(ps) ? 1 : 0, &ids, &n))
        n = -1;
    json_decref(root);
    if (n < 0) {
        free(ids);
        api_respond_error(a, req, 500, "tokenization failed", NULL);
        return;
    }
    json_t *arr = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    api_respond_json(a, req, 200, json_pack("{s:o}", "tokens", arr));
}

static void h_detokenize(api_server *a, http_request *req)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    json_t *t = json_object_get(root, "tokens");
    int32_t *ids = NULL;
    int32_t n = json_is_array(t) ? api_read_ids(a, t, &ids) : -1;
    json_decref(root);
    if (n < 0) {
        api_respond_error(a, req, 400, "'tokens' must be a list of valid token ids", "tokens");
        return;
    }
    int32_t need = tok_decode(a->vocab, ids, n, false, NULL, 0);
    char *buf = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (buf) tok_decode(a->vocab, ids, n, false, buf, need + 1);
    free(ids);
    if (!buf) {
        api_respond_error(a, req, 500, "detokenization failed", NULL);
        return;
    }
    api_respond_json(a, req, 200, json_pack("{s:o}", "content", api_json_text(buf, (size_t)need)));
    free(buf);
}

static void h_metrics(api_server *a, http_request *req)
{
    metrics_gauges g = {0};
    if (a->pool) {
        kv_pool_stats st;
        kv_pool_get_stats(a->pool, &st);
        g.kv_bytes_used = st.bytes_used;
        g.kv_bytes_budget = st.bytes_budget;
    }
    if (a->pool && a->model) {
        const model_hparams *hp = model_get_hparams(a->model);
        g.layers_total = hp->n_layer;
        g.bytes_per_token_layer =
            (uint64_t)hp->n_head_kv * (kv_pool_k_row_bytes(a->pool) + kv_pool_v_row_bytes(a->pool));
    }
    if (a->sch) {
        sch_counts c;
        sch_get_counts(a->sch, &c);
        g.seqs_active = c.active;
        g.seqs_queued = c.queued;
    }
    sch_seq_info *v = NULL;
    size_t n = 0;
    int64_t *kept = NULL;
    if (a->sch && sch_get_seq_info(a->sch, &v, &n) == 0 && n > 0) {
        g.n_layer = v[0].n_layer;
        kept = calloc(2 * (size_t)g.n_layer, sizeof(int64_t)); /* tokens, then bytes */
        for (size_t i = 0; i < n; i++) {
            for (int32_t l = 0; kept && l < v[i].n_layer && l < g.n_layer; l++) {
                kept[l] += v[i].tokens_kept[l];
                kept[g.n_layer + l] += v[i].tokens_kept[l] * (int64_t)v[i].kv_token_bytes;
            }
            if (!v[i].has_spill) continue;
            g.spill_blocks_ram += v[i].spill.blocks_ram;
            g.spill_blocks_disk += v[i].spill.blocks_disk;
            g.spill_hot_hits += v[i].spill.hot_hits;
            g.spill_hot_misses += v[i].spill.hot_misses;
            g.spill_bytes_read += v[i].spill.bytes_read;
        }
        g.tokens_kept = kept;
        g.kv_bytes = kept ? kept + g.n_layer : NULL;
    }
    sch_seq_info_free(v, n);
    metrics_count_request(a->metrics, 200);
    char *text = NULL;
    size_t len = 0;
    int rc = metrics_render(a->metrics, &g, &text, &len);
    free(kept);
    if (rc) {
        api_respond_error(a, req, 500, "cannot render metrics", NULL);
        return;
    }
    (void)http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

/* The storage types and what one token costs in each layer (/v1/kv). */
static void kv_types_json(const api_server *a, json_t *body)
{
    ks_dtype kt = kv_pool_k_dtype(a->pool), vt = kv_pool_v_dtype(a->pool);
    json_object_set_new(body, "k_dtype", json_string(ks_dtype_name(kt)));
    json_object_set_new(body, "v_dtype", json_string(ks_dtype_name(vt)));
    if (!a->model) return;
    const model_hparams *hp = model_get_hparams(a->model);
    json_int_t per = (json_int_t)hp->n_head_kv *
                     (json_int_t)(kv_pool_k_row_bytes(a->pool) + kv_pool_v_row_bytes(a->pool));
    json_t *layers = json_array();
    for (int32_t l = 0; l < hp->n_layer; l++)
        json_array_append_new(layers, json_integer(per));
    json_object_set_new(body, "bytes_per_token_per_layer", layers);
    json_object_set_new(body, "bytes_per_token", json_integer(per * hp->n_layer));
}

/* A policy's resolved parameters as a JSON object, by its descriptor's table. */
static json_t *params_json(const kv_policy_desc *pd, const void *params)
{
    json_t *o = json_object();
    for (int32_t i = 0; o && i < pd->n_params; i++) {
        const kv_param_desc *p = &pd->params_table[i];
        kv_param_value v;
        kv_param_get(params, p, &v);
        json_t *jv = p->type == KV_PARAM_DOUBLE                             ? json_real(v.f)
                     : p->type == KV_PARAM_ENUM || p->type == KV_PARAM_PATH ? json_string(v.s)
                                                                            : json_integer(v.i);
        json_object_set_new(o, p->key, jv);
    }
    return o;
}

/* The server's default policy: {"name": ..., "params": {...}}. */
static json_t *server_policy_json(const api_server *a)
{
    const kv_policy_config *pc = &a->cfg->kvcache.policy;
    const kv_policy_desc *pd = kv_policy_config_desc(pc);
    return json_pack("{s:s, s:o, s:b}", "name", pd->name, "params",
                     params_json(pd, kv_policy_config_params(pc, pd)), "request_override",
                     a->cfg->kvcache.allow_request_override);
}

/* The /v1/kv entries of v[0..n). */
static json_t *kv_seq_list(const sch_seq_info *v, size_t n)
{
    json_t *seqs = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *kept = json_array(), *kvb = json_array();
        for (int32_t l = 0; l < v[i].n_layer; l++) {
            json_array_append_new(kept, json_integer(v[i].tokens_kept[l]));
            json_array_append_new(
                kvb, json_integer(v[i].tokens_kept[l] * (json_int_t)v[i].kv_token_bytes));
        }
        json_t *o = json_pack("{s:I, s:s, s:I, s:o, s:I, s:i, s:i}", "id", (json_int_t)v[i].id,
                              "policy", v[i].policy, "tokens_seen", (json_int_t)v[i].tokens_seen,
                              "tokens_kept_per_layer", kept, "bytes", (json_int_t)v[i].bytes,
                              "prompt_tokens", v[i].n_prompt, "generated_tokens", v[i].n_generated);
        const kv_policy_desc *pd = kv_policy_desc_at(v[i].policy_kind);
        if (o && pd) json_object_set_new(o, "params", params_json(pd, v[i].params.bytes));
        if (o)
            json_object_set_new(o, "kv_bytes_per_layer", kvb);
        else
            json_decref(kvb);
        if (o && v[i].has_spill) { /* under the policy's name, e.g. "retrieval": {...} */
            const kv_retrieval_stats *rs = &v[i].spill;
            json_object_set_new(
                o, v[i].policy,
                json_pack("{s:I, s:I, s:f, s:I, s:I, s:I, s:I}", "blocks_ram",
                          (json_int_t)rs->blocks_ram, "blocks_disk", (json_int_t)rs->blocks_disk,
                          "hot_hit_rate", rs->hot_hit_rate, "spill_bytes_read",
                          (json_int_t)rs->bytes_read, "spill_bytes_written",
                          (json_int_t)rs->bytes_written, "landmark_bytes",
                          (json_int_t)rs->landmark_bytes, "ram_bytes", (json_int_t)rs->ram_bytes));
        }
        json_array_append_new(seqs, o);
    }
    return seqs;
}

static void h_kv(api_server *a, http_request *req)
{
    sch_seq_info *v = NULL, *fv = NULL;
    size_t n = 0, fn = 0;
    if (a->sch && (sch_get_seq_info(a->sch, &v, &n) || sch_get_finished_info(a->sch, &fv, &fn))) {
        sch_seq_info_free(v, n);
        api_respond_error(a, req, 500, "out of memory", NULL);
        return;
    }
    json_t *seqs = kv_seq_list(v, n), *finished = kv_seq_list(fv, fn);
    sch_seq_info_free(fv, fn);
    sch_seq_info_free(v, n);
    kv_pool_stats st = {0};
    if (a->pool) kv_pool_get_stats(a->pool, &st);
    kv_prefix_stats ps = {0};
    if (a->sch) sch_get_prefix_stats(a->sch, &ps);
    /* bytes_used counts the prefix cache's blocks too (they are reclaimed on demand). */
    json_t *pfx = json_pack("{s:I, s:I, s:I, s:I}", "entries", (json_int_t)ps.entries, "bytes",
                            (json_int_t)((size_t)ps.blocks_held * st.block_bytes), "hit_tokens",
                            (json_int_t)ps.hits_tokens, "evictions", (json_int_t)ps.evictions);
    json_t *body = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "object",
                             "kv_cache", "bytes_used", (json_int_t)st.bytes_used, "bytes_budget",
                             (json_int_t)st.bytes_budget, "block_bytes", (json_int_t)st.block_bytes,
                             "blocks_used", (json_int_t)st.blocks_used, "blocks_total",
                             (json_int_t)st.blocks_total, "sequences", seqs, "finished", finished,
                             "prefix_cache", pfx, "policy", server_policy_json(a));
    if (body && a->pool) kv_types_json(a, body);
    api_respond_json(a, req, 200, body);
}

/* ---------------------------------------------------------------- routing */

typedef void (*api_fn)(api_server *a, http_request *req);

typedef struct api_route {
    const char *path;
    const char *method;
    api_fn fn;
    bool needs_model;
} api_route;

static void h_completions(api_server *a, http_request *req)
{
    api_gen_handle(a, req, false);
}
static void h_kv_stream(api_server *a, http_request *req)
{
    if (!cfg_ui_enabled(a->cfg))
        api_respond_error(a, req, 404, "the browser view is off", NULL);
    else
        kv_feed_handle(a, req);
}
static void h_chat(api_server *a, http_request *req)
{
    api_gen_handle(a, req, true);
}

static const api_route routes[] = {
    {"/health", "GET", h_health, false},
    {"/v1/models", "GET", h_models, false},
    {"/v1/completions", "POST", h_completions, true},
    {"/v1/chat/completions", "POST", h_chat, true},
    {"/tokenize", "POST", h_tokenize, true},
    {"/detokenize", "POST", h_detokenize, true},
    {"/metrics", "GET", h_metrics, false},
    {"/v1/kv", "GET", h_kv, false},
    {"/v1/kv/save", "POST", api_kv_save_handle, true},
    {"/v1/kv/restore", "POST", api_kv_restore_handle, true},
    {"/v1/kv/stream", "GET", h_kv_stream, false},
    {"/v1/kv/policies", "GET", ui_policies_handle, false},
    {"/", "GET", ui_page_handle, false}, /* the page is public: it asks for the API key */
    {"/ui", "GET", ui_page_handle, false},
};

static bool authorized(const api_server *a, http_request *req)
{
    const char *key = a->cfg->server.api_key;
    if (!key[0]) return true;
    const char *h = http_request_header(req, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ')
        h++;
    size_t kl = strlen(key), hl = strlen(h);
    unsigned diff = kl != hl; /* constant-time over the key length */
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned)(key[i] ^ (i < hl ? h[i] : 0));
    return diff == 0;
}

static const api_route *route_find(const char *path)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(routes); i++)
        if (!strcmp(routes[i].path, path)) return &routes[i];
    return NULL;
}

/* The Origin names this server itself: scheme://HOST equals the Host header. */
static bool origin_same(const char *origin, const char *host)
{
    const char *o = strstr(origin, "://");
    return o && host && !strcasecmp(o + 3, host);
}

/* Listed in server.cors_origins (comma-separated, or "*"). */
static bool origin_listed(const api_server *a, const char *origin)
{
    const char *list = a->cfg->server.cors_origins;
    size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if ((n == 1 && *p == '*') || (n == ol && n && !strncasecmp(p, origin, n))) return true;
        p += n;
    }
    return false;
}

/* Runs when the headers are complete, before the body is read (http_headers_fn): a browser
 * page of another origin may only read (GET/HEAD) unless its origin is listed, and the API
 * key is checked here so that a client without it cannot make the server buffer a body. */
int api_on_headers(http_request *req, void *ud, char *msg, size_t cap)
{
    api_server *a = ud;
    const char *method = http_request_method(req);
    const char *origin = http_request_header(req, "origin");
    bool reads = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (origin && !origin_same(origin, http_request_header(req, "host"))) {
        if (origin_listed(a, origin)) {
            char h[512];
            snprintf(h, sizeof(h), "Access-Control-Allow-Origin: %.300s\r\nVary: Origin\r\n",
                     origin);
            if (http_request_add_headers(req, h)) return 503;
        } else if (!reads) {
            snprintf(msg, cap,
                     "cross-origin request from '%.80s' refused; list the origin in "
                     "server.cors_origins to allow it",
                     origin);
            metrics_count_request(a->metrics, 403);
            return 403;
        }
    }
    const api_route *match = route_find(http_request_path(req));
    bool public = match && (!strcmp(match->path, "/health") || match->fn == ui_page_handle);
    if (match && !public && strcmp(method, "OPTIONS") && !authorized(a, req)) {
        snprintf(msg, cap, "invalid or missing API key");
        metrics_count_request(a->metrics, 401);
        return 401;
    }
    return 0;
}

/* CORS preflight: what a listed origin may send (api_on_headers refused the others). */
static void respond_preflight(api_server *a, http_request *req, const api_route *match)
{
    char h[256];
    snprintf(h, sizeof(h),
             "Allow: %s, OPTIONS\r\nAccess-Control-Allow-Methods: %s, OPTIONS\r\n"
             "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
             "Access-Control-Max-Age: 600\r\n",
             match->method, match->method);
    metrics_count_request(a->metrics, 200);
    (void)http_respond(req, 200, "text/plain", h, "", 0);
}

void api_handle(http_request *req, void *ud)
{
    api_server *a = ud;
    const char *path = http_request_path(req);
    const char *method = http_request_method(req);
    const api_route *match = route_find(path);
    if (!match) {
        char msg[300];
        snprintf(msg, sizeof(msg), "no such endpoint: %.200s", path);
        api_respond_error(a, req, 404, msg, NULL);
        return;
    }
    bool public = !strcmp(match->path, "/health") || match->fn == ui_page_handle;
    if (!public && !authorized(a, req)) {
        api_respond_error(a, req, 401, "invalid or missing API key", NULL);
        return;
    }
    if (!strcmp(method, "OPTIONS")) {
        respond_preflight(a, req, match);
        return;
    }
    bool head_ok = !strcmp(method, "HEAD") && !strcmp(match->method, "GET");
    if (strcmp(method, match->method) && !head_ok) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s is not allowed here; use %s", method, match->method);
        char allow[64];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", match->method);
        size_t len;
        char *body = http_error_body(405, msg, NULL, &len);
        metrics_count_request(a->metrics, 405);
        (void)http_respond(req, 405, "application/json", allow, body, body ? len : 0);
        free(body);
        return;
    }
    if (match->needs_model && (!a->model || !a->sch)) {
        api_respond_error(a, req, 503, "the model is still loading", NULL);
        return;
    }
    if (match->needs_model && gguf_mapping_lost(NULL, 0)) {
        api_respond_error(a, req, 503,
                          "the model file was truncated or replaced under the "
                          "server; restart kvserve",
                          NULL);
        return;
    }
    if (match->needs_model && a->shutting_down) {
        api_respond_error(a, req, 503, "the server is shutting down", NULL);
        return;
    }
    match->fn(a, req);
}

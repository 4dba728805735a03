/* api.c - OpenAI-compatible endpoints: routing, API-key check and the simple endpoints
 * (health, models, tokenize, detokenize, metrics, kv). Generation lives in api_gen.c, the JSON
 * request/response helpers both use in api_json.c. Every answered request is counted in metrics by status.
 */
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_server.h"
#include "kv_feed.h"
#include "sse.h"


static void h_health(api_server *a, http_request *req)
{
    if (!a->model) api_respond_json(a, req, 503, json_pack("{s:s}", "status", "loading"));
    else api_respond_json(a, req, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_models(api_server *a, http_request *req)
{
    json_t *data = json_array();
    if (a->model) {
        const model_hparams *hp = model_get_hparams(a->model);
        json_array_append_new(
            data, json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:s}}", "id", a->model_id,
                            "object", "model", "created", (json_int_t)time(NULL), "owned_by",
                            "kvserve", "meta", "n_vocab", hp->n_vocab, "n_ctx", a->n_ctx, "arch",
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
    if (!json_is_string(c) || (as && !json_is_boolean(as))) {
        json_decref(root);
        api_respond_error(a, req, 400, "'content' must be a string", "content");
        return;
    }
    const char *text = json_string_value(c);
    size_t len = json_string_length(c);
    bool add = as ? json_is_true(as) : false;
    int32_t n = tok_encode(a->vocab, text, len, add, true, NULL, 0);
    int32_t *ids = n > 0 ? malloc((size_t)n * sizeof(int32_t)) : NULL;
    if (n > 0 && (!ids || tok_encode(a->vocab, text, len, add, true, ids, n) != n)) n = -1;
    json_decref(root);
    if (n < 0) {
        free(ids);
        api_respond_error(a, req, 500, "tokenization failed", NULL);
        return;
    }
    json_t *arr = json_array();
    for (int32_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
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
        kept = calloc((size_t)g.n_layer, sizeof(int64_t));
        for (size_t i = 0; i < n; i++) {
            for (int32_t l = 0; kept && l < v[i].n_layer && l < g.n_layer; l++)
                kept[l] += v[i].tokens_kept[l];
            if (!v[i].has_spill) continue;
            g.spill_blocks_ram += v[i].spill.blocks_ram;
            g.spill_blocks_disk += v[i].spill.blocks_disk;
            g.spill_hot_hits += v[i].spill.hot_hits;
            g.spill_hot_misses += v[i].spill.hot_misses;
            g.spill_bytes_read += v[i].spill.bytes_read;
        }
        g.tokens_kept = kept;
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

/* A policy's resolved parameters as a JSON object, by its descriptor's table. */
static json_t *params_json(const kv_policy_desc *pd, const void *params)
{
    json_t *o = json_object();
    for (int32_t i = 0; o && i < pd->n_params; i++) {
        const kv_param_desc *p = &pd->params_table[i];
        kv_param_value v;
        kv_param_get(params, p, &v);
        json_t *jv = p->type == KV_PARAM_DOUBLE                           ? json_real(v.f)
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
        json_t *kept = json_array();
        for (int32_t l = 0; l < v[i].n_layer; l++)
            json_array_append_new(kept, json_integer(v[i].tokens_kept[l]));
        json_t *o = json_pack("{s:I, s:s, s:I, s:o, s:I, s:i, s:i}", "id",
                              (json_int_t)v[i].id, "policy", v[i].policy, "tokens_seen",
                              (json_int_t)v[i].tokens_seen, "tokens_kept_per_layer", kept,
                              "bytes", (json_int_t)v[i].bytes, "prompt_tokens", v[i].n_prompt,
                              "generated_tokens", v[i].n_generated);
        const kv_policy_desc *pd = kv_policy_desc_at(v[i].policy_kind);
        if (o && pd) json_object_set_new(o, "params", params_json(pd, v[i].params.bytes));
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
    json_t *pfx = json_pack("{s:I, s:I, s:I, s:I}", "entries", (json_int_t)ps.entries,
                            "bytes", (json_int_t)((size_t)ps.blocks_held * st.block_bytes),
                            "hit_tokens", (json_int_t)ps.hits_tokens, "evictions",
                            (json_int_t)ps.evictions);
    api_respond_json(a, req, 200,
                 json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "object", "kv_cache",
                           "bytes_used", (json_int_t)st.bytes_used, "bytes_budget",
                           (json_int_t)st.bytes_budget, "block_bytes", (json_int_t)st.block_bytes,
                           "blocks_used", (json_int_t)st.blocks_used, "blocks_total",
                           (json_int_t)st.blocks_total, "sequences", seqs, "finished", finished,
                           "prefix_cache", pfx, "policy", server_policy_json(a)));
}


/* ---------------------------------------------------------------- routing */

typedef void (*api_fn)(api_server *a, http_request *req);

typedef struct api_route {
    const char *path;
    const char *method;
    api_fn fn;
    bool needs_model;
} api_route;

static void h_completions(api_server *a, http_request *req) { api_gen_handle(a, req, false); }
static void h_kv_stream(api_server *a, http_request *req)
{
    if (!cfg_ui_enabled(a->cfg)) api_respond_error(a, req, 404, "the browser view is off", NULL);
    else kv_feed_handle(a, req);
}
static void h_chat(api_server *a, http_request *req) { api_gen_handle(a, req, true); }

static const api_route routes[] = {
    {"/health", "GET", h_health, false},
    {"/v1/models", "GET", h_models, false},
    {"/v1/completions", "POST", h_completions, true},
    {"/v1/chat/completions", "POST", h_chat, true},
    {"/tokenize", "POST", h_tokenize, true},
    {"/detokenize", "POST", h_detokenize, true},
    {"/metrics", "GET", h_metrics, false},
    {"/v1/kv", "GET", h_kv, false},
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
    while (*h == ' ') h++;
    size_t kl = strlen(key), hl = strlen(h);
    unsigned diff = kl != hl; /* constant-time over the key length */
    for (size_t i = 0; i < kl; i++) diff |= (unsigned)(key[i] ^ (i < hl ? h[i] : 0));
    return diff == 0;
}

void api_handle(http_request *req, void *ud)
{
    api_server *a = ud;
    const char *path = http_request_path(req);
    const char *method = http_request_method(req);
    const api_route *match = NULL;
    for (size_t i = 0; i < KS_ARRAY_LEN(routes); i++)
        if (!strcmp(routes[i].path, path)) match = &routes[i];
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
    if (match->needs_model && a->shutting_down) {
        api_respond_error(a, req, 503, "the server is shutting down", NULL);
        return;
    }
    match->fn(a, req);
}

/* api_kv.c - the prefix cache on disk for `kvserve serve`: restore at start, save at shutdown
 * (and every persist_interval_s), and llama-server-style slot save/restore as
 * POST /v1/kv/save and POST /v1/kv/restore with {"name": "..."}.
 *
 * Why the server keeps going on every persistence error: a cache is an optimisation. A bad
 * persist_dir, a file for another model or KV type, a truncated or corrupt file, or a full
 * disk is logged as a warning and the server serves as if the cache were empty.
 * Names are [A-Za-z0-9._-]{1,64} (no path components) and map to persist_dir/NAME.kvpc; the
 * automatic file is persist_dir/prefix.kvpc. Runs on the loop thread.
 */
#include <stdio.h>
#include <string.h>

#include "api_server.h"

#define KV_AUTO_NAME "prefix"

static size_t cap_bytes(const api_server *a)
{
    return (size_t)a->cfg->kvcache.persist_max_mb << 20;
}

static void file_path(const api_server *a, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s.kvpc", a->cfg->kvcache.persist_dir, name);
}

/* Loads NAME.kvpc into the prefix cache; returns entries loaded or a negative status. */
static int64_t restore_file(api_server *a, const char *name, ks_diag *d)
{
    char path[CFG_STR_MAX + 80];
    file_path(a, name, path, sizeof(path));
    int64_t n = 0;
    kv_prefix *pc = sch_prefix(a->sch);
    if (!pc) return ks_diag_set(d, KS_ERR_UNSUPPORTED, "the server has no prefix cache");
    int rc = kv_persist_load(pc, a->pool, &a->persist_key, path, cap_bytes(a), &n, d);
    return rc ? rc : n;
}

/* Saves the prefix cache as NAME.kvpc and trims the directory to the cap (LRU by mtime). */
static int64_t save_file(api_server *a, const char *name, ks_diag *d)
{
    char path[CFG_STR_MAX + 80], base[80];
    file_path(a, name, path, sizeof(path));
    int64_t n = 0;
    kv_prefix *pc = sch_prefix(a->sch);
    if (!pc) return ks_diag_set(d, KS_ERR_UNSUPPORTED, "the server has no prefix cache");
    int rc = kv_persist_save(pc, a->pool, &a->persist_key, path, cap_bytes(a), &n, d);
    if (rc) return rc;
    snprintf(base, sizeof(base), "%s.kvpc", name);
    int del = kv_persist_trim_dir(a->cfg->kvcache.persist_dir, cap_bytes(a), base);
    if (del > 0)
        ks_info("persist_dir: removed %d least recently written file(s) over persist_max_mb", del);
    return n;
}

void api_kv_start(api_server *a)
{
    const cfg_kvcache *kc = &a->cfg->kvcache;
    if (!kc->persist_dir[0] || !a->model) return;
    ks_diag d;
    ks_diag_clear(&d);
    uint64_t mh;
    if (kv_persist_dir_prepare(kc->persist_dir, &d) ||
        kv_persist_model_hash(a->cfg->model.path, &mh, &d)) {
        ks_warn("prefix cache persistence off: %s", d.msg);
        return;
    }
    const model_hparams *hp = model_get_hparams(a->model);
    kv_persist_key_make(a->pool, hp->n_layer, hp->n_head_kv, mh, &a->persist_key);
    a->persist_on = true;
    int64_t n = restore_file(a, KV_AUTO_NAME, &d);
    if (n >= 0)
        ks_info("prefix cache: restored %lld block(s) of prompts from %s/%s.kvpc", (long long)n,
                kc->persist_dir, KV_AUTO_NAME);
    else if (n != KS_ERR_NOT_FOUND)
        ks_warn("prefix cache: %s/%s.kvpc skipped: %s", kc->persist_dir, KV_AUTO_NAME, d.msg);
}

void api_kv_autosave(api_server *a)
{
    if (!a->persist_on || !a->sch) return;
    ks_diag d;
    ks_diag_clear(&d);
    int64_t n = save_file(a, KV_AUTO_NAME, &d);
    if (n < 0)
        ks_warn("prefix cache: not saved: %s", d.msg);
    else
        ks_info("prefix cache: saved %lld block(s) of prompts to %s/%s.kvpc", (long long)n,
                a->cfg->kvcache.persist_dir, KV_AUTO_NAME);
}

/* The validated "name" of a save/restore body, or NULL after answering 400. */
static const char *body_name(api_server *a, http_request *req, json_t *root)
{
    const char *name = json_string_value(json_object_get(root, "name"));
    if (!name || !kv_persist_name_valid(name) || !strcmp(name, KV_AUTO_NAME)) {
        api_respond_error(a, req, 400,
                          "name must match [A-Za-z0-9._-]{1,64}, not be . or .., nor the "
                          "reserved name \"" KV_AUTO_NAME "\"",
                          "name");
        return NULL;
    }
    if (!a->persist_on) {
        api_respond_error(a, req, 400, "the server has no usable kvcache.persist_dir", NULL);
        return NULL;
    }
    return name;
}

static void kv_handle(api_server *a, http_request *req, bool save)
{
    json_t *root = api_parse_body(a, req);
    if (!root) return;
    const char *name = body_name(a, req, root);
    if (name) {
        ks_diag d;
        ks_diag_clear(&d);
        int64_t n = save ? save_file(a, name, &d) : restore_file(a, name, &d);
        if (n == KS_ERR_NOT_FOUND)
            api_respond_error(a, req, 404, "no saved cache with that name", "name");
        else if (n < 0)
            api_respond_error(a, req, save ? 500 : 400, d.msg, NULL);
        else
            api_respond_json(a, req, 200,
                             json_pack("{s:s, s:I}", "name", name,
                                       save ? "prompt_blocks_saved" : "prompt_blocks_restored",
                                       (json_int_t)n));
    }
    json_decref(root);
}

void api_kv_save_handle(api_server *a, http_request *req)
{
    kv_handle(a, req, true);
}

void api_kv_restore_handle(api_server *a, http_request *req)
{
    kv_handle(a, req, false);
}

/* ui.c - the browser view's page and the policy listing.
 *
 * GET / and GET /ui answer the single page that scripts/embed_ui.py turned into a C array at
 * build time (ui/index.html with ui/style.css and ui/app.js inlined), with a
 * Content-Security-Policy that allows exactly those inline hashes and connections to this
 * server, so the page cannot fetch anything from elsewhere. The page itself is public (it
 * asks for the API key); everything it reads goes through the authenticated endpoints.
 *
 * GET /v1/kv/policies lists every policy with its parameters, generated from the shared
 * parameter table (kv_param_list): type, the server's default, and for numbers the range and
 * step found by asking the validator (kv_policy_config_validate), which is the one place that
 * knows the ranges; for enums the names it accepts. The page builds its fields from this.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_feed.h"

/* The page, generated into ui_assets.c by scripts/embed_ui.py at build time. */
extern const unsigned char ui_page_html[];
extern const size_t ui_page_html_len;
extern const char ui_page_csp[]; /* names the hashes of the inline script and style */

void ui_page_handle(api_server *a, http_request *req)
{
    if (!cfg_ui_enabled(a->cfg)) {
        api_respond_error(a, req, 404, "the browser view is off ([server] ui = false)", NULL);
        return;
    }
    char headers[512];
    snprintf(headers, sizeof(headers),
             "Content-Security-Policy: %s\r\nX-Content-Type-Options: nosniff\r\n"
             "Referrer-Policy: no-referrer\r\nCache-Control: no-store\r\n",
             ui_page_csp);
    metrics_count_request(a->metrics, 200);
    (void)http_respond(req, 200, "text/html; charset=utf-8", headers, (const char *)ui_page_html,
                       ui_page_html_len);
}

/* ---------------------------------------------------------------- parameter ranges */

static bool valid_with(const kv_policy_config *base, const kv_param_desc *p, double v)
{
    kv_policy_config pc = *base;
    int rc = p->type == KV_PARAM_DOUBLE ? kv_param_set_double(&pc, p, v)
                                        : kv_param_set_int(&pc, p, (int64_t)v);
    ks_diag d;
    ks_diag_clear(&d);
    return rc == 0 && kv_policy_config_validate(&pc, &d) == 0;
}

/* Smallest / largest valid value on a ladder of candidates around the default. */
static json_t *number_json(const kv_policy_config *base, const kv_param_desc *p, double def)
{
    static const double ladder[] = {
        -2147483648.0, -1,    0,     0.001,   0.5,          1,     2, 3, 4, 7, 8, 63, 64, 127,
        1024,          65535, 65536, 1048576, 2147483647.0, 9.2e18};
    double lo = def, hi = def;
    for (size_t i = 0; i < KS_ARRAY_LEN(ladder); i++) {
        double v = ladder[i];
        if (p->type != KV_PARAM_DOUBLE && v != (double)(int64_t)v) continue;
        if (p->type == KV_PARAM_INT && (v > 2147483647.0 || v < -2147483648.0)) continue;
        if (!valid_with(base, p, v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    const char *type = p->type == KV_PARAM_DOUBLE ? "number" : "integer";
    double step = p->type == KV_PARAM_DOUBLE ? 0.01 : 1;
    bool pow2 = false;
    if (p->type != KV_PARAM_DOUBLE && !valid_with(base, p, def + 1)) {
        if (valid_with(base, p, def + 2))
            step = 2; /* odd kernels */
        else
            pow2 = valid_with(base, p, def * 2); /* block sizes */
    }
    bool is_int = p->type != KV_PARAM_DOUBLE;
#define UI_NUM(x) (is_int ? json_integer((json_int_t)(x)) : json_real(x))
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "name", p->key, "type", type, "default",
                          UI_NUM(def), "min", UI_NUM(lo), "max", UI_NUM(hi), "step", UI_NUM(step));
#undef UI_NUM
    if (o && pow2) json_object_set_new(o, "power_of_two", json_true());
    return o;
}

static const char *const *enum_names(const kv_param_desc *p)
{
    if (p->from_name == kv_pos_mode_from_name) return kv_pos_mode_names;
    if (p->from_name == kv_pooling_from_name) return kv_pooling_names;
    if (p->from_name == kv_reduce_from_name) return kv_reduce_names;
    if (p->from_name == kv_landmark_from_name) return kv_landmark_names;
    if (p->from_name == kv_selection_from_name) return kv_selection_names;
    if (p->from_name == kv_eviction_from_name) return kv_eviction_names;
    return NULL;
}

static json_t *enum_json(const kv_policy_config *base, const kv_param_desc *p)
{
    const char *const *names = enum_names(p);
    int def = *(const int *)((const char *)base + p->off);
    json_t *choices = json_array();
    for (int i = 0; names && names[i]; i++) {
        kv_policy_config pc = *base;
        ks_diag d;
        ks_diag_clear(&d);
        if (kv_param_set_name(&pc, p, names[i]) == 0 && kv_policy_config_validate(&pc, &d) == 0)
            json_array_append_new(choices, json_string(names[i]));
    }
    int count = 0;
    while (names && names[count])
        count++;
    const char *dn = def >= 0 && def < count ? names[def] : "";
    return json_pack("{s:s, s:s, s:s, s:o}", "name", p->key, "type", "enum", "default", dn,
                     "choices", choices);
}

static json_t *param_json(const kv_policy_config *base, const kv_param_desc *p)
{
    const char *at = (const char *)base + p->off;
    switch (p->type) {
    case KV_PARAM_INT:
        return number_json(base, p, (double)*(const int32_t *)at);
    case KV_PARAM_I64:
        return number_json(base, p, (double)*(const int64_t *)at);
    case KV_PARAM_DOUBLE:
        return number_json(base, p, *(const double *)at);
    case KV_PARAM_ENUM:
        return enum_json(base, p);
    default:
        return NULL; /* paths are server-side only */
    }
}

void ui_policies_handle(api_server *a, http_request *req)
{
    const kv_policy_config *base = &a->cfg->kvcache.policy;
    size_t n;
    const kv_param_desc *tab = kv_param_list(&n);
    json_t *data = json_array();
    for (int k = 0; k < KV_POLICY_COUNT; k++) {
        json_t *params = json_array();
        for (size_t i = 0; i < n; i++) {
            if ((int)tab[i].kind != k || !tab[i].request_ok) continue;
            json_t *pj = param_json(base, &tab[i]);
            if (pj) json_array_append_new(params, pj);
        }
        json_array_append_new(data,
                              json_pack("{s:s, s:o}", "name",
                                        kv_policy_kind_name((kv_policy_kind)k), "params", params));
    }
    api_respond_json(a, req, 200,
                     json_pack("{s:s, s:s, s:b, s:o}", "object", "list", "default",
                               kv_policy_kind_name(base->kind), "allow_request_override",
                               a->cfg->kvcache.allow_request_override, "data", data));
}

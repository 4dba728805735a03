/* ui.c - the browser view's page and the policy listing.
 *
 * GET / and GET /ui answer the single page that scripts/embed_ui.py turned into a C array at
 * build time (ui/index.html with ui/style.css and ui/app.js inlined), with a
 * Content-Security-Policy that allows exactly those inline hashes and connections to this
 * server, so the page cannot fetch anything from elsewhere. The page itself is public (it
 * asks for the API key); everything it reads goes through the authenticated endpoints.
 *
 * GET /v1/kv/policies lists every registered policy with its request-settable parameters,
 * generated from the policies' descriptors (kv_policy_desc): type, range, help, the server's
 * configured value as the default, enum names the validator accepts, and the step its rules
 * between values imply (odd kernels, power-of-two sizes). The page builds its fields from it.
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

/* ---------------------------------------------------------------- the policy listing */

/* Whether value v of parameter p (of policy kind) passes the whole validator over base. */
static bool valid_with(const kv_policy_config *base, int32_t kind, const kv_param_desc *p, double v)
{
    kv_policy_config pc = *base;
    int rc = p->type == KV_PARAM_DOUBLE ? kv_param_set_double(&pc, kind, p, v)
                                        : kv_param_set_int(&pc, kind, p, (int64_t)v);
    ks_diag d;
    ks_diag_clear(&d);
    return rc == 0 && kv_policy_config_validate(&pc, &d) == 0;
}

/* A number field: range from the descriptor; the step from the validator's rules between
 * values (odd kernels: 2; block sizes that must be powers of two: flagged). */
static json_t *number_json(const kv_policy_config *base, int32_t kind, const kv_param_desc *p,
                           double def)
{
    bool is_int = p->type != KV_PARAM_DOUBLE;
    double step = is_int ? 1 : 0.01;
    bool pow2 = false;
    if (is_int && !valid_with(base, kind, p, def + 1)) {
        if (valid_with(base, kind, p, def + 2))
            step = 2;
        else
            pow2 = valid_with(base, kind, p, def * 2);
    }
#define UI_NUM(x) (is_int ? json_integer((json_int_t)(x)) : json_real(x))
    json_t *o =
        json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:s}", "name", p->key, "type",
                  is_int ? "integer" : "number", "default", UI_NUM(def), "min", UI_NUM(p->lo),
                  "max", UI_NUM(p->hi), "step", UI_NUM(step), "help", p->help ? p->help : "");
#undef UI_NUM
    if (o && pow2) json_object_set_new(o, "power_of_two", json_true());
    return o;
}

/* An enum field: the names the validator accepts for this policy. */
static json_t *enum_json(const kv_policy_config *base, int32_t kind, const kv_param_desc *p,
                         const char *def)
{
    json_t *choices = json_array();
    for (int i = 0; p->choices && p->choices[i]; i++) {
        kv_policy_config pc = *base;
        ks_diag d;
        ks_diag_clear(&d);
        if (kv_param_set_name(&pc, kind, p, p->choices[i]) == 0 &&
            kv_policy_config_validate(&pc, &d) == 0)
            json_array_append_new(choices, json_string(p->choices[i]));
    }
    return json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", p->key, "type", "enum", "default",
                     def ? def : "", "choices", choices, "help", p->help ? p->help : "");
}

/* Defaults are the server's configured values (what a request gets when it omits them). */
static json_t *policy_json(const kv_policy_config *base, int32_t kind)
{
    const kv_policy_desc *d = kv_policy_desc_at(kind);
    const void *params = kv_policy_config_params(base, d);
    json_t *list = json_array();
    for (int32_t i = 0; i < d->n_params; i++) {
        const kv_param_desc *p = &d->params_table[i];
        if (p->server_only || p->type == KV_PARAM_PATH) continue;
        kv_param_value v;
        kv_param_get(params, p, &v);
        json_t *pj =
            p->type == KV_PARAM_ENUM
                ? enum_json(base, kind, p, v.s)
                : number_json(base, kind, p, p->type == KV_PARAM_DOUBLE ? v.f : (double)v.i);
        if (pj) json_array_append_new(list, pj);
    }
    return json_pack("{s:s, s:s, s:s, s:o}", "name", d->name, "summary",
                     d->summary ? d->summary : "", "reference", d->reference ? d->reference : "",
                     "params", list);
}

void ui_policies_handle(api_server *a, http_request *req)
{
    const kv_policy_config *base = &a->cfg->kvcache.policy;
    json_t *data = json_array();
    for (int32_t k = 0; k < kv_policy_count(); k++)
        json_array_append_new(data, policy_json(base, k));
    api_respond_json(a, req, 200,
                     json_pack("{s:s, s:s, s:b, s:o}", "object", "list", "default",
                               kv_policy_config_desc(base)->name, "allow_request_override",
                               a->cfg->kvcache.allow_request_override, "data", data));
}

/* chat_template.c - OpenAI messages through the model's Jinja chat template, with the
 * normalisations llama-server b9749 applies around the template so that prompts are the same
 * byte for byte (checked by tests/unit/test_jinja.c against fixtures recorded from
 * llama-server's /apply-template).
 *
 * The assistant prefill rule, as llama-server applies it when the last message is the
 * assistant's: render the conversation without that message (no generation prompt) = base,
 * and with it = whole; the prompt is base followed by whole from the first byte where the two
 * differ, cut right after the last message's content. The model then continues that content.
 */
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"

jinja_val api_json_to_jinja(jinja_ctx *c, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_STRING:
        return jinja_str(c, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return jinja_int(json_integer_value(j));
    case JSON_REAL:
        return jinja_float(json_real_value(j));
    case JSON_TRUE:
        return jinja_bool(true);
    case JSON_FALSE:
        return jinja_bool(false);
    case JSON_ARRAY: {
        jinja_val l = jinja_list_new(c);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            jinja_list_push(c, l, api_json_to_jinja(c, v));
        }
        return l;
    }
    case JSON_OBJECT: {
        jinja_val d = jinja_dict_new(c);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            jinja_dict_set(c, d, k, api_json_to_jinja(c, v));
        }
        return d;
    }
    default:
        return jinja_none();
    }
}

/* A tool call with its arguments string parsed into an object (as llama.cpp passes it). */
static jinja_val tool_call_value(jinja_ctx *c, const json_t *call)
{
    jinja_val v = api_json_to_jinja(c, call);
    const json_t *fn = json_object_get(call, "function");
    const json_t *args = fn ? json_object_get(fn, "arguments") : NULL;
    if (!json_is_string(args)) {
        return v;
    }
    json_t *parsed = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
    if (parsed) {
        jinja_val f = api_json_to_jinja(c, fn);
        jinja_dict_set(c, f, "arguments", api_json_to_jinja(c, parsed));
        jinja_dict_set(c, v, "function", f);
        json_decref(parsed);
    }
    return v;
}

static int message_value(jinja_ctx *c, const json_t *m, size_t i, jinja_val *out, ks_diag *d)
{
    if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
        return ks_diag_set(d, KS_ERR_INVALID, "messages[%zu] needs a string \"role\"", i);
    }
    jinja_val v = jinja_dict_new(c);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)m, k, x)
    {
        if (strcmp(k, "content") == 0 && json_is_null(x)) {
            jinja_dict_set(c, v, k, jinja_str(c, "", 0));
        } else if (strcmp(k, "tool_calls") == 0 && json_is_array(x)) {
            jinja_val calls = jinja_list_new(c);
            size_t ci;
            json_t *call;
            json_array_foreach(x, ci, call)
            {
                jinja_list_push(c, calls, tool_call_value(c, call));
            }
            jinja_dict_set(c, v, k, calls);
        } else {
            jinja_dict_set(c, v, k, api_json_to_jinja(c, x));
        }
    }
    if (!json_object_get(m, "content")) {
        jinja_dict_set(c, v, "content", jinja_str(c, "", 0));
    }
    *out = v;
    return 0;
}

/* One render of messages[0..n) with the given generation-prompt flag. */
static int render_once(const jinja_template *t, const json_t *messages, size_t n,
                       const json_t *tools, const api_chat_render_opts *o, bool gen, char **out,
                       ks_diag *d)
{
    jinja_ctx *c = jinja_ctx_create(0);
    if (!c) {
        return KS_ERR_NOMEM;
    }
    jinja_ctx_set_time(c, o->now);
    jinja_val msgs = jinja_list_new(c);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        jinja_val m;
        rc = message_value(c, json_array_get(messages, i), i, &m, d);
        jinja_list_push(c, msgs, m);
    }
    char date[64];
    struct tm tm;
    localtime_r(&o->now, &tm);
    strftime(date, sizeof date, "%d %b %Y", &tm);
    rc = rc ? rc : jinja_ctx_set(c, "messages", msgs);
    if (!rc && json_is_array(tools) && json_array_size(tools) > 0) {
        rc = jinja_ctx_set(c, "tools", api_json_to_jinja(c, tools));
    }
    rc = rc ? rc : jinja_ctx_set(c, "add_generation_prompt", jinja_bool(gen));
    rc = rc ? rc : jinja_ctx_set(c, "bos_token", jinja_cstr(c, o->bos_token ? o->bos_token : ""));
    rc = rc ? rc : jinja_ctx_set(c, "eos_token", jinja_cstr(c, o->eos_token ? o->eos_token : ""));
    rc = rc ? rc : jinja_ctx_set(c, "date_string", jinja_cstr(c, date));
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)o->kwargs, k, x)
    { /* never replaces what we bind above */
        static const char *const reserved[] = {"messages", "tools", "add_generation_prompt",
                                               "bos_token", "eos_token"};
        bool skip = false;
        for (size_t r = 0; r < sizeof(reserved) / sizeof(reserved[0]); r++) {
            skip |= strcmp(k, reserved[r]) == 0;
        }
        rc = rc || skip ? rc : jinja_ctx_set(c, k, api_json_to_jinja(c, x));
    }
    rc = rc ? rc : jinja_render(t, c, out, NULL, d);
    jinja_ctx_destroy(c);
    return rc;
}

static void strip_special(char *s, const api_chat_render_opts *o)
{
    size_t nb = o->bos_token ? strlen(o->bos_token) : 0;
    if (o->add_bos && nb && strncmp(s, o->bos_token, nb) == 0) {
        memmove(s, s + nb, strlen(s + nb) + 1);
    }
    size_t ne = o->eos_token ? strlen(o->eos_token) : 0, n = strlen(s);
    if (o->add_eos && ne && n >= ne && strcmp(s + n - ne, o->eos_token) == 0) {
        s[n - ne] = 0;
    }
}

/* Keeps base + full[common prefix:] up to the end of the last message's content. */
static int prefill_join(char *base, char *whole, const char *content, char **out)
{
    size_t p = 0;
    while (base[p] && base[p] == whole[p]) {
        p++;
    }
    char *tail = whole + p;
    size_t keep = strlen(tail);
    if (content && *content) {
        for (char *q = strstr(tail, content); q; q = strstr(q + 1, content)) {
            keep = (size_t)(q - tail) + strlen(content);
        }
    }
    size_t nb = strlen(base);
    char *r = malloc(nb + keep + 1);
    if (!r) {
        return KS_ERR_NOMEM;
    }
    memcpy(r, base, nb);
    memcpy(r + nb, tail, keep);
    r[nb + keep] = 0;
    *out = r;
    return 0;
}

int api_chat_template_render(const jinja_template *t, const json_t *messages, const json_t *tools,
                             const api_chat_render_opts *o, char **out, ks_diag *d)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        return ks_diag_set(d, KS_ERR_INVALID, "messages must be a non-empty array");
    }
    size_t n = json_array_size(messages);
    const json_t *last = json_array_get(messages, n - 1);
    const json_t *role = json_object_get(last, "role");
    bool prefill = json_is_string(role) && strcmp(json_string_value(role), "assistant") == 0;
    if (!prefill) {
        int rc = render_once(t, messages, n, tools, o, o->add_generation_prompt, out, d);
        if (!rc) {
            strip_special(*out, o);
        }
        return rc;
    }
    char *base = NULL, *whole = NULL;
    int rc = render_once(t, messages, n - 1, tools, o, false, &base, d);
    rc = rc ? rc : render_once(t, messages, n, tools, o, false, &whole, d);
    const json_t *content = json_object_get(last, "content");
    rc = rc ? rc : prefill_join(base, whole, json_string_value(content), out);
    free(base);
    free(whole);
    if (!rc) {
        strip_special(*out, o);
    }
    return rc;
}

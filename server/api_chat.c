/* api_chat.c - the chat prompt: OpenAI messages (and tools) through the model's own Jinja
 * chat template (tokenizer.chat_template, or model.chat_template_file), rendered as
 * llama-server --jinja renders it (server/chat_template.c), or through a hand-written family
 * formatter when model.chat_template names a family. A template the engine cannot parse (at
 * start-up) or render (per request) is an error, unless model.chat_template_fallback is on:
 * then the family formatter recognised from the template text is used (a warning at start-up,
 * per request silently), and tools are not rendered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_server.h"
#include "api_tools.h"
#include "chat_template.h"

/* The bytes of a special token's text ("" when the model has none). */
static void special_text(const tok_vocab *v, int32_t id, char *out, size_t cap)
{
    out[0] = 0;
    if (id < 0) return;
    int32_t n = tok_piece(v, id, true, out, (int32_t)cap - 1);
    out[n >= 0 && n < (int32_t)cap ? n : 0] = 0;
}

int api_chat_setup(api_server *a, const cfg *c, ks_diag *d)
{
    const char *name = c->model.chat_template;
    char *file_src = NULL;
    const char *src = tok_chat_template(a->vocab);
    special_text(a->vocab, tok_bos(a->vocab), a->bos_text, sizeof(a->bos_text));
    special_text(a->vocab, tok_eos(a->vocab), a->eos_text, sizeof(a->eos_text));
    a->tmpl_fallback = c->model.chat_template_fallback;
    if (strcmp(name, "auto") != 0) { /* a family formatter, by name */
        int f = tok_chat_family_from_name(name);
        a->chat = f < 0 ? TOK_CHAT_CHATML : (tok_chat_family)f;
        a->tool_format = API_TOOLS_HERMES;
        return 0;
    }
    if (c->model.chat_template_file[0]) {
        size_t n;
        int rc = ks_read_file(c->model.chat_template_file, &file_src, &n, d);
        if (rc) return rc;
        src = file_src;
    }
    a->chat = tok_chat_detect(src);
    a->tool_format = api_tool_format_detect(src);
    int rc = 0;
    if (src) {
        ks_diag pd;
        rc = jinja_template_parse(src, strlen(src), &a->tmpl, &pd);
        if (rc && a->tmpl_fallback) {
            ks_warn("%s; using the %s formatter (model.chat_template_fallback)", pd.msg,
                    tok_chat_family_name(a->chat));
            rc = 0;
        } else if (rc) {
            ks_diag_set(d, rc,
                        "%s (set model.chat_template_fallback = true to use the %s "
                        "formatter instead)",
                        pd.msg, tok_chat_family_name(a->chat));
        }
    }
    free(file_src);
    return rc;
}

void api_chat_teardown(api_server *a)
{
    jinja_template_destroy(a->tmpl);
    a->tmpl = NULL;
}

static char *family_text(const api_server *a, json_t *msgs, char *msg, size_t cap)
{
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0) {
        snprintf(msg, cap, "'messages' must be a non-empty list");
        return NULL;
    }
    tok_chat_msg *m = calloc(n, sizeof(*m));
    char **owned = calloc(n, sizeof(char *));
    char *out = NULL;
    if (!m || !owned) goto done;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i);
        json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_string(role)) {
            snprintf(msg, cap, "messages[%zu].role must be a string", i);
            goto done;
        }
        m[i].role = json_string_value(role);
        if (json_is_string(content)) {
            m[i].content = json_string_value(content);
        } else if (json_is_array(content)) { /* [{"type":"text","text":...}, ...] */
            size_t k, total = 1;
            json_t *part;
            json_array_foreach(content, k, part)
            {
                json_t *t = json_object_get(part, "text");
                if (!json_is_string(t)) {
                    snprintf(msg, cap, "messages[%zu].content parts must be text", i);
                    goto done;
                }
                total += json_string_length(t);
            }
            owned[i] = calloc(1, total);
            if (!owned[i]) goto done;
            json_array_foreach(content, k, part)
                strcat(owned[i], json_string_value(json_object_get(part, "text")));
            m[i].content = owned[i];
        } else if (json_is_null(content) || !content) {
            m[i].content = "";
        } else {
            snprintf(msg, cap, "messages[%zu].content must be a string", i);
            goto done;
        }
    }
    out = tok_chat_format(a->chat, m, n, true, a->vocab);
    if (!out) snprintf(msg, cap, "cannot format the chat messages");
done:
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(m);
    return out;
}

char *api_chat_text(const api_server *a, json_t *root, bool with_tools, char *msg, size_t cap)
{
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        snprintf(msg, cap, "'messages' must be a non-empty list");
        return NULL;
    }
    if (!a->tmpl) return family_text(a, msgs, msg, cap);
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    api_chat_render_opts o = {
        .bos_token = a->bos_text,
        .eos_token = a->eos_text,
        .add_bos = tok_add_bos(a->vocab),
        .add_eos = tok_add_eos(a->vocab),
        .add_generation_prompt = !json_is_false(json_object_get(root, "add_generation_prompt")),
        .kwargs = json_is_object(kw) ? kw : NULL,
        .now = time(NULL),
    };
    char *out = NULL;
    ks_diag d;
    ks_diag_clear(&d);
    int rc = api_chat_template_render(
        a->tmpl, msgs, with_tools ? json_object_get(root, "tools") : NULL, &o, &out, &d);
    if (rc == 0) return out;
    if (a->tmpl_fallback) return family_text(a, msgs, msg, cap);
    snprintf(msg, cap, "%s", d.msg[0] ? d.msg : "cannot render the chat template");
    return NULL;
}

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

/* ---------------------------------------------------------------- user text stays text */

/* Roles a message may have; the templates know these (others would be written verbatim
 * into the prompt, a way to forge turns). */
static bool role_known(const char *r)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < KS_ARRAY_LEN(roles); i++)
        if (!strcmp(r, roles[i])) return true;
    return false;
}

#define CHAT_FAIL(field, ...)                                                                      \
    do {                                                                                           \
        snprintf(msg, cap, __VA_ARGS__);                                                           \
        snprintf(param, pcap, "messages[%zu].%s", i, field);                                       \
        return KS_ERR_INVALID;                                                                     \
    } while (0)

/* An assistant message's tool_calls: a list of calls, each naming its function (the
 * template reads function.name and function.arguments; anything else would render as
 * nothing or fail deep inside the template). */
static bool tool_calls_valid(const json_t *tc)
{
    if (!json_is_array(tc)) return false;
    size_t k;
    json_t *call;
    json_array_foreach(tc, k, call)
    {
        json_t *fn = json_object_get(call, "function"), *ty = json_object_get(call, "type");
        json_t *args = json_object_get(fn, "arguments");
        if (!json_is_object(call) || !json_is_object(fn) ||
            !json_is_string(json_object_get(fn, "name")) ||
            (ty && !(json_is_string(ty) && !strcmp(json_string_value(ty), "function"))) ||
            (args && !json_is_string(args) && !json_is_object(args)))
            return false;
    }
    return true;
}

/* Checks message i and points *content at its text (into the JSON, or *owned, malloc'd, for
 * a list of text parts). */
static int chat_msg_read(json_t *e, size_t i, tok_chat_msg *m, char **owned, char *msg, size_t cap,
                         char *param, size_t pcap)
{
    if (!json_is_object(e)) CHAT_FAIL("role", "messages[%zu] must be an object", i);
    json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
    if (!json_is_string(role)) CHAT_FAIL("role", "messages[%zu].role must be a string", i);
    m->role = json_string_value(role);
    if (!role_known(m->role))
        CHAT_FAIL("role",
                  "messages[%zu].role '%.40s' is not one of system, developer, user, "
                  "assistant, tool",
                  i, m->role);
    json_t *tc = json_object_get(e, "tool_calls");
    if (tc && !json_is_null(tc) && !tool_calls_valid(tc))
        CHAT_FAIL("tool_calls",
                  "messages[%zu].tool_calls must be a list of {\"type\": \"function\", "
                  "\"function\": {\"name\": string, \"arguments\": string or object}}",
                  i);
    if (json_is_string(content)) {
        m->content = json_string_value(content);
        if (strlen(m->content) != json_string_length(content))
            CHAT_FAIL("content", "messages[%zu].content must not contain NUL characters", i);
        return 0;
    }
    bool calls = json_is_array(tc);
    if ((!content || json_is_null(content)) && !strcmp(m->role, "assistant") && calls) {
        m->content = "";
        return 0;
    }
    if (!json_is_array(content))
        CHAT_FAIL("content", "messages[%zu].content must be a string or a list of text parts%s", i,
                  content ? "" : " (it is missing)");
    size_t k, total = 1;
    json_t *part;
    json_array_foreach(content, k, part)
    {
        json_t *t = json_object_get(part, "text"), *ty = json_object_get(part, "type");
        if (!json_is_object(part) || !json_is_string(ty) || strcmp(json_string_value(ty), "text"))
            CHAT_FAIL("content",
                      "messages[%zu].content[%zu] must be {\"type\": \"text\", "
                      "\"text\": string} (other part types are not supported)",
                      i, k);
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
            CHAT_FAIL("content", "messages[%zu].content[%zu].text must be a string", i, k);
        total += json_string_length(t);
    }
    *owned = calloc(1, total);
    if (!*owned) {
        snprintf(msg, cap, "out of memory");
        return KS_ERR_NOMEM;
    }
    size_t at = 0;
    json_array_foreach(content, k, part)
    {
        json_t *t = json_object_get(part, "text");
        memcpy(*owned + at, json_string_value(t), json_string_length(t));
        at += json_string_length(t);
    }
    m->content = *owned;
    return 0;
}

/* Where the template put each message's text: the request is rendered once more with
 * sentinel contents and the real contents substituted at the sentinels; if that rebuilds the
 * real prompt exactly, the substituted ranges are the user text (plain), everything else is
 * the template's. Returns the range count, CHAT_TRANSFORMED when the template transformed
 * the text (trimmed it, split its parts...), or KS_ERR_NOMEM. */
#define CHAT_TRANSFORMED (-1000L)
static long chat_spans(const api_server *a, json_t *root, bool with_tools, const tok_chat_msg *m,
                       size_t n, const char *real, tok_span **out)
{
    json_t *copy = json_deep_copy(root);
    char(*tags)[32] = calloc(n, sizeof(*tags));
    tok_span *sp = calloc(n, sizeof(*sp));
    char *sent = NULL, msg[256];
    long ok = KS_ERR_NOMEM;
    json_t *msgs = copy ? json_object_get(copy, "messages") : NULL;
    if (!msgs || !tags || !sp) goto done;
    for (size_t i = 0; i < n; i++) {
        snprintf(tags[i], sizeof(tags[i]),
                 "\x1e"
                 "kvs%zu"
                 "\x1f",
                 i);
        json_t *e = json_array_get(msgs, i);
        if (m[i].content[0] && json_object_set_new(e, "content", json_string(tags[i]))) goto done;
    }
    msg[0] = 0;
    sent = api_chat_text(a, copy, with_tools, msg, sizeof(msg));
    if (!sent && (!msg[0] || strstr(msg, "out of memory") || strstr(msg, "cannot format")))
        goto done; /* out of memory */
    ok = CHAT_TRANSFORMED;
    if (!sent) goto done;
    const char *at = sent, *r = real;
    long ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (!m[i].content[0]) continue;
        const char *t = strstr(at, tags[i]);
        if (!t) continue; /* a template may drop a message */
        size_t pre = (size_t)(t - at), cl = strlen(m[i].content);
        if (strncmp(r, at, pre) || strncmp(r + pre, m[i].content, cl)) goto done;
        sp[ns++] = (tok_span){(size_t)(r + pre - real), cl};
        r += pre + cl;
        at = t + strlen(tags[i]);
    }
    if (strcmp(r, at)) goto done;
    ok = ns;
    *out = sp;
    sp = NULL;
done:
    free(sp);
    free(sent);
    free(tags);
    json_decref(copy);
    return ok;
}

int api_chat_prompt(const api_server *a, json_t *root, bool with_tools, api_prompt *out, char *msg,
                    size_t cap, char *param, size_t pcap)
{
    memset(out, 0, sizeof(*out));
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs), i = 0;
    snprintf(param, pcap, "messages");
    if (!json_is_array(msgs) || n == 0) {
        snprintf(msg, cap, "'messages' must be a non-empty list");
        return KS_ERR_INVALID;
    }
    tok_chat_msg *m = calloc(n, sizeof(*m));
    char **owned = calloc(n, sizeof(char *));
    int rc = KS_ERR_NOMEM;
    if (!m || !owned) goto done;
    for (i = 0; i < n; i++)
        if ((rc = chat_msg_read(json_array_get(msgs, i), i, &m[i], &owned[i], msg, cap, param,
                                pcap)))
            goto done;
    msg[0] = 0;
    out->text = api_chat_text(a, root, with_tools, msg, cap);
    if (!out->text) { /* the formatters fail without a reason only when out of memory */
        snprintf(param, pcap, "messages");
        bool oom = !msg[0] || strstr(msg, "out of memory") || strstr(msg, "cannot format");
        rc = oom ? KS_ERR_NOMEM : KS_ERR_INVALID;
        goto done;
    }
    rc = KS_ERR_NOMEM;
    out->len = strlen(out->text);
    long ns = chat_spans(a, root, with_tools, m, n, out->text, &out->plain);
    if (ns == KS_ERR_NOMEM) goto done;
    if (ns == CHAT_TRANSFORMED) { /* refuse control-token text rather than parse it */
        for (i = 0; i < n; i++)
            if (tok_text_has_control(a->vocab, m[i].content, strlen(m[i].content))) {
                snprintf(msg, cap,
                         "messages[%zu].content holds a control token's text, which "
                         "this chat template cannot keep as plain text",
                         i);
                snprintf(param, pcap, "messages[%zu].content", i);
                rc = KS_ERR_INVALID;
                goto done;
            }
        ns = 0;
    }
    out->n_plain = (size_t)ns;
    rc = 0;
done:
    for (size_t k = 0; owned && k < n; k++)
        free(owned[k]);
    free(owned);
    free(m);
    if (rc) {
        api_prompt_free(out);
        if (rc == KS_ERR_NOMEM) snprintf(msg, cap, "out of memory");
    }
    return rc;
}

void api_prompt_free(api_prompt *p)
{
    free(p->text);
    free(p->plain);
    free(p->ids);
    memset(p, 0, sizeof(*p));
}

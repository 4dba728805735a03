/* api_tools.c - tool calling: request validation and the parser of generated tool calls.
 *
 * Each chat-template family has its model write calls its own way (see api_tools.h); the
 * format is read off the template text. The parser is incremental so that a stream can show
 * content as soon as it is certainly content and a call as soon as it is complete: after each
 * push, `content_end` is the end of the leading text that cannot be (the start of) a call,
 * with trailing whitespace held back, and every call complete so far is in `calls` with an id
 * given once (ids never change). Text after the first call is not content (models put only
 * separators there). OpenAI's shape: ids "call_" + 24 letters/digits (Mistral's templates
 * insist on 9 letters/digits, so those get 9), arguments as a JSON string.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_tools.h"
#include "json_schema.h"
#include "kvserve/base.h"

typedef struct tags {
    const char *open, *close;
} tags;

static const tags g_tags[] = {
    [API_TOOLS_HERMES] = {"<tool_call>", "</tool_call>"},
    [API_TOOLS_LLAMA3] = {"<|python_tag|>", NULL},
    [API_TOOLS_MISTRAL] = {"[TOOL_CALLS]", NULL},
    [API_TOOLS_PHI4] = {"<|tool_call|>", "<|/tool_call|>"},
};

api_tool_format api_tool_format_detect(const char *t)
{
    if (!t) return API_TOOLS_HERMES;
    if (strstr(t, "<tool_call>")) return API_TOOLS_HERMES;
    if (strstr(t, "[TOOL_CALLS]")) return API_TOOLS_MISTRAL;
    if (strstr(t, "<|tool_call|>")) return API_TOOLS_PHI4;
    if (strstr(t, "<|start_header_id|>") && (strstr(t, "\"parameters\"") || strstr(t, "ipython")))
        return API_TOOLS_LLAMA3;
    return API_TOOLS_HERMES;
}

const char *api_tool_format_name(api_tool_format f)
{
    static const char *const n[] = {"hermes", "llama3", "mistral", "phi4"};
    return (unsigned)f < 4 ? n[f] : "hermes";
}

static int fail(char *msg, size_t cap, const char **param, const char *p, const char *m)
{
    snprintf(msg, cap, "%s", m);
    *param = p;
    return -1;
}

int api_tools_parse(json_t *root, api_tool_choice *choice, const char **forced, char *msg,
                    size_t cap, const char **param)
{
    json_t *tools = json_object_get(root, "tools"), *tc = json_object_get(root, "tool_choice");
    *choice = API_TOOL_CHOICE_AUTO;
    *forced = NULL;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return fail(msg, cap, param, "tools", "'tools' must be a list of functions");
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            json_t *fn = json_object_get(t, "function");
            json_t *params = json_object_get(fn, "parameters");
            if (!json_is_object(t) || !json_is_string(json_object_get(t, "type")) ||
                strcmp(json_string_value(json_object_get(t, "type")), "function") != 0 ||
                !json_is_object(fn) || !json_is_string(json_object_get(fn, "name")) ||
                (params && !json_is_object(params))) {
                snprintf(msg, cap,
                         "tools[%zu] must be {\"type\": \"function\", \"function\": "
                         "{\"name\": string, \"parameters\": object}}",
                         i);
                *param = "tools";
                return -1;
            }
        }
    }
    bool have = json_is_array(tools) && json_array_size(tools) > 0;
    if (!tc || json_is_null(tc)) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none"))
            *choice = API_TOOL_CHOICE_NONE;
        else if (!strcmp(s, "required"))
            *choice = API_TOOL_CHOICE_REQUIRED;
        else if (strcmp(s, "auto") != 0)
            return fail(msg, cap, param, "tool_choice",
                        "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                        "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    } else {
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (!json_is_object(tc) || !json_is_string(name))
            return fail(msg, cap, param, "tool_choice",
                        "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                        "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        *choice = API_TOOL_CHOICE_REQUIRED;
        *forced = json_string_value(name);
        bool found = false;
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            found |=
                !strcmp(json_string_value(json_object_get(json_object_get(t, "function"), "name")),
                        *forced);
        }
        if (!found)
            return fail(msg, cap, param, "tool_choice",
                        "'tool_choice' names a function that is not in 'tools'");
    }
    if (*choice == API_TOOL_CHOICE_REQUIRED && !have)
        return fail(msg, cap, param, "tool_choice", "'tool_choice' requires 'tools'");
    return 0;
}

void api_tool_stream_init(api_tool_stream *s, api_tool_format fmt, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    s->fmt = fmt;
    s->calls = json_array();
    s->rng = seed | 1;
    s->announced = -1;
}

void api_tool_stream_free(api_tool_stream *s)
{
    free(s->text);
    json_decref(s->calls);
    memset(s, 0, sizeof(*s));
}

static void make_id(api_tool_stream *s, char *out, size_t len)
{
    static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t k = 0;
    if (s->fmt != API_TOOLS_MISTRAL) {
        memcpy(out, "call_", 5);
        k = 5;
        len = 24;
    } else {
        len = 9;
    }
    for (size_t i = 0; i < len; i++) {
        s->rng ^= s->rng << 13;
        s->rng ^= s->rng >> 7;
        s->rng ^= s->rng << 17;
        out[k++] = abc[s->rng % (sizeof(abc) - 1)];
    }
    out[k] = 0;
}

/* Adds a call from the model's JSON object; returns false when it is not a call. */
static bool add_call(api_tool_stream *s, json_t *obj, size_t at)
{
    json_t *name = json_object_get(obj, "name");
    json_t *args = json_object_get(obj, "arguments");
    if (!args) args = json_object_get(obj, "parameters");
    if (!json_is_object(obj) || !json_is_string(name)) return false;
    /* a call streamed while it was written keeps the id and the argument bytes already sent */
    bool streamed = s->pend && s->pend_at == at && s->args_end > s->args_at &&
                    json_is_object(args) && !strcmp(s->pend_name, json_string_value(name));
    char *astr = streamed               ? strndup(s->text + s->args_at, s->args_end - s->args_at)
                 : json_is_string(args) ? strdup(json_string_value(args))
                 : args                 ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY)
                                        : strdup("{}");
    if (!astr) return false;
    char id[40];
    json_t *given = json_object_get(obj, "id");
    if (s->pend && s->pend_at == at && s->pend_announced)
        snprintf(id, sizeof(id), "%s", s->pend_id);
    else if (json_is_string(given) && json_string_length(given) > 0 &&
             json_string_length(given) < 40)
        snprintf(id, sizeof(id), "%s", json_string_value(given));
    else if (s->pend && s->pend_at == at)
        snprintf(id, sizeof(id), "%s", s->pend_id);
    else
        make_id(s, id, sizeof(id));
    if (s->pend && s->pend_at == at) {
        if (s->pend_announced) {
            s->announced = (long)json_array_size(s->calls);
            s->announced_sent = streamed ? s->args_sent : 0;
        }
        s->pend = s->pend_announced = false;
    }
    json_array_append_new(s->calls,
                          json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function",
                                    "function", "name", name, "arguments", astr));
    free(astr);
    return true;
}

/* Parses the JSON value at p (leading whitespace allowed). Returns it (and *end), or NULL:
 * *incomplete says whether more text could make it parse. */
static json_t *json_at(const char *p, size_t n, size_t *end, bool *incomplete)
{
    json_error_t e;
    size_t skip = 0;
    while (skip < n && strchr(" \t\r\n", p[skip]))
        skip++;
    *incomplete = skip == n;
    if (skip == n) return NULL;
    json_t *j = json_loadb(p + skip, n - skip, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &e);
    if (!j) {
        *incomplete = (size_t)e.position >= n - skip; /* ran out of text */
        return NULL;
    }
    *end = skip + (size_t)e.position;
    return j;
}

/* Tries a call starting at text[at] (its opening marker included). Returns the end offset of
 * the call, 0 when it is incomplete, or SIZE_MAX when it is not a call. */
static size_t try_call(api_tool_stream *s, size_t at, bool final)
{
    const tags *t = &g_tags[s->fmt];
    const char *p = s->text + at;
    size_t n = s->len - at, body = 0, end = 0;
    bool incomplete = false;
    if (t->open && n >= strlen(t->open) && !strncmp(p, t->open, strlen(t->open)))
        body = strlen(t->open);
    if (t->close) { /* tagged: the body is between the tags */
        const char *c = strstr(p + body, t->close);
        size_t blen = c ? (size_t)(c - (p + body)) : n - body;
        if (!c && !final) return 0;
        json_t *j = json_at(p + body, blen, &end, &incomplete);
        bool ok = j && add_call(s, j, at);
        json_decref(j);
        if (!ok) return SIZE_MAX;
        return c ? (size_t)(c - s->text) + strlen(t->close) : s->len;
    }
    json_t *j = json_at(p + body, n - body, &end, &incomplete);
    if (!j) return incomplete && !final ? 0 : SIZE_MAX;
    bool ok = false;
    if (s->fmt == API_TOOLS_MISTRAL && json_is_array(j)) {
        size_t i;
        json_t *c;
        ok = json_array_size(j) > 0;
        json_array_foreach(j, i, c) ok = add_call(s, c, i == 0 ? at : SIZE_MAX) && ok;
    } else if (s->fmt != API_TOOLS_MISTRAL) {
        ok = add_call(s, j, at);
    }
    json_decref(j);
    return ok ? at + body + end : SIZE_MAX;
}

/* Skips blanks and then expects the literal lit at text[*k]; false when the text differs
 * (or ends first: *more is then set). */
static bool expect_lit(const api_tool_stream *s, size_t *k, const char *lit, bool *more)
{
    while (*k < s->len && strchr(" \t\r\n", s->text[*k]))
        (*k)++;
    size_t n = strlen(lit), have = KS_MIN(n, s->len - *k);
    if (memcmp(s->text + *k, lit, have) != 0) return false;
    if (have < n) {
        *more = true;
        return false;
    }
    *k += n;
    return true;
}

/* Recognises the head of a call being written at `at`: its marker, then
 * {"name": "NAME", "arguments": (or "parameters") — then its id and name are known. */
static void pending_start(api_tool_stream *s, size_t at)
{
    size_t k = at;
    bool more = false;
    const char *open = g_tags[s->fmt].open;
    if (s->fmt == API_TOOLS_MISTRAL) return; /* its ids come from the model */
    if (!strncmp(s->text + k, open, KS_MIN(strlen(open), s->len - k)) && s->len - k >= strlen(open))
        k += strlen(open);
    if (!expect_lit(s, &k, "{", &more) || !expect_lit(s, &k, "\"name\"", &more) ||
        !expect_lit(s, &k, ":", &more) || !expect_lit(s, &k, "\"", &more))
        return;
    size_t name_at = k;
    while (k < s->len && s->text[k] != '"' && s->text[k] != '\\')
        k++;
    if (k >= s->len || s->text[k] != '"' || k - name_at >= sizeof(s->pend_name)) return;
    size_t name_end = k++;
    if (!expect_lit(s, &k, ",", &more)) return;
    if (!expect_lit(s, &k, s->fmt == API_TOOLS_LLAMA3 ? "\"parameters\"" : "\"arguments\"",
                    &more) ||
        !expect_lit(s, &k, ":", &more))
        return;
    s->pend = true;
    s->pend_at = at;
    memcpy(s->pend_name, s->text + name_at, name_end - name_at);
    s->pend_name[name_end - name_at] = 0;
    make_id(s, s->pend_id, sizeof(s->pend_id));
    s->args_at = s->scanned = k;
    s->args_end = s->args_sent = 0;
    s->depth = 0;
    s->in_str = s->esc = s->no_stream = false;
}

/* Follows the pending call's arguments to find where the object closes. */
static void pending_scan(api_tool_stream *s)
{
    for (; s->scanned < s->len && !s->args_end && !s->no_stream; s->scanned++) {
        char c = s->text[s->scanned];
        if (s->depth == 0) { /* before the value: blanks, then '{' */
            if (strchr(" \t\r\n", c)) {
                s->args_at = s->scanned + 1;
                continue;
            }
            s->no_stream = c != '{'; /* a string or other value: sent when complete */
            s->depth = c == '{';
            continue;
        }
        if (s->in_str) {
            s->in_str = s->esc || c != '"';
            s->esc = !s->esc && c == '\\';
            continue;
        }
        s->in_str = c == '"';
        s->depth += (c == '{' || c == '[') - (c == '}' || c == ']');
        if (s->depth == 0) s->args_end = s->scanned + 1;
    }
}

void api_tool_stream_args(api_tool_stream *s, const char **p, size_t *n)
{
    size_t upto = s->args_end ? s->args_end : s->scanned;
    *p = s->text ? s->text + s->args_at + s->args_sent : "";
    *n = 0;
    if (!s->pend || s->no_stream || upto <= s->args_at + s->args_sent) return;
    *n = upto - s->args_at - s->args_sent;
    s->args_sent += *n;
}

/* Where the next call may start at or after q: its offset, or len when none; *partial is the
 * length of a suffix that could be the start of an opening marker. */
static size_t find_start(const api_tool_stream *s, size_t q, size_t *partial)
{
    const char *open = g_tags[s->fmt].open;
    size_t ol = strlen(open);
    *partial = 0;
    if (s->fmt == API_TOOLS_LLAMA3 && q == 0) { /* a bare JSON object at the start */
        size_t k = 0;
        while (k < s->len && strchr(" \t\r\n", s->text[k]))
            k++;
        if (k < s->len && s->text[k] == '{') return k;
    }
    const char *f = memmem(s->text + q, s->len - q, open, ol);
    if (f) return (size_t)(f - s->text);
    for (size_t k = KS_MIN(ol - 1, s->len - q); k > 0; k--) {
        if (!memcmp(s->text + s->len - k, open, k)) {
            *partial = k;
            break;
        }
    }
    return s->len;
}

static void parse(api_tool_stream *s, bool final)
{
    size_t q = s->scan;
    for (;;) {
        size_t partial = 0, at = find_start(s, q, &partial);
        if (at >= s->len) {
            if (json_array_size(s->calls) == 0) {
                size_t e = final ? s->len : s->len - partial;
                while (!final && e > 0 && strchr(" \t\r\n", s->text[e - 1]))
                    e--;
                if (s->fmt == API_TOOLS_LLAMA3 && !final) { /* all blank so far: wait */
                    size_t k = 0;
                    while (k < s->len && strchr(" \t\r\n", s->text[k]))
                        k++;
                    if (k == s->len) e = 0;
                }
                s->content_end = KS_MAX(s->content_end, e);
            }
            return;
        }
        if (json_array_size(s->calls) == 0) {
            size_t e = at;
            while (e > 0 && strchr(" \t\r\n", s->text[e - 1]))
                e--;
            s->content_end = KS_MAX(s->content_end, e);
            s->first_call_at = at;
        }
        size_t end = try_call(s, at, final);
        if (end == 0) { /* wait for more text; meanwhile its head and arguments may show */
            if (!s->pend) pending_start(s, at);
            if (s->pend) pending_scan(s);
            return;
        }
        if (end == SIZE_MAX) { /* not a call: when nothing was, the whole text is content */
            if (json_array_size(s->calls) == 0 && final) s->content_end = s->len;
            return; /* (while streaming it is held: more text cannot turn it into a call) */
        }
        q = s->scan = end;
    }
}

int api_tool_stream_push(api_tool_stream *s, const char *text, size_t n, bool final)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = (s->len + n + 1) * 2;
        char *t = realloc(s->text, cap);
        if (!t) return -1;
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->len, text, n);
    s->len += n;
    s->text[s->len] = 0;
    parse(s, final);
    return 0;
}

void api_tool_stream_content(api_tool_stream *s, const char **p, size_t *n)
{
    size_t from = KS_MIN(s->content_sent, s->content_end);
    *p = s->text ? s->text + from : "";
    *n = s->content_end - from;
    s->content_sent = s->content_end;
}

/* ---------------------------------------------------------------- constrained calls */

/* Copies GBNF text with every rule name prefixed by `pfx` (names are [A-Za-z0-9_-]+ outside
 * string literals, character classes, repetition counts and comments). */
static int gbnf_prefix(const char *g, const char *pfx, char **out)
{
    size_t n = strlen(g), cap = n * 2 + 64, k = 0;
    char *o = malloc(cap);
    if (!o) return -1;
    for (size_t i = 0; i < n;) {
        char c = g[i];
        if (k + strlen(pfx) + 4 >= cap) {
            char *t = realloc(o, cap *= 2);
            if (!t) {
                free(o);
                return -1;
            }
            o = t;
        }
        if (c == '"' || c == '[' || c == '{') { /* literal, class, {m,n}: copy through */
            char close = c == '"' ? '"' : c == '[' ? ']' : '}';
            o[k++] = g[i++];
            while (i < n && g[i] != close) {
                if (g[i] == '\\' && i + 1 < n) o[k++] = g[i++];
                o[k++] = g[i++];
                if (k + 4 >= cap) {
                    char *t = realloc(o, cap *= 2);
                    if (!t) {
                        free(o);
                        return -1;
                    }
                    o = t;
                }
            }
            if (i < n) o[k++] = g[i++];
        } else if (c == '#') {
            while (i < n && g[i] != '\n')
                i++; /* comments are dropped */
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            memcpy(o + k, pfx, strlen(pfx));
            k += strlen(pfx);
            while (i < n && ((g[i] >= 'a' && g[i] <= 'z') || (g[i] >= 'A' && g[i] <= 'Z') ||
                             (g[i] >= '0' && g[i] <= '9') || g[i] == '_' || g[i] == '-')) {
                o[k++] = g[i++];
                if (k + 4 >= cap) {
                    char *t = realloc(o, cap *= 2);
                    if (!t) {
                        free(o);
                        return -1;
                    }
                    o = t;
                }
            }
        } else {
            o[k++] = g[i++];
        }
    }
    o[k] = 0;
    *out = o;
    return 0;
}

/* A growable text buffer for the grammar; oom remembers a failed append. */
typedef struct gbuf {
    char *p;
    size_t n, cap;
    bool oom;
} gbuf;

static void gb_add(gbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *t = realloc(b->p, cap);
        if (!t) {
            b->oom = true;
            return;
        }
        b->p = t;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void gb_str(gbuf *b, const char *s)
{
    gb_add(b, s, strlen(s));
}

/* The inside of a GBNF literal for s ('"', '\\' and newlines escaped). */
static void gb_lit(gbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') gb_add(b, "\\", 1);
        gb_add(b, *s == '\n' ? "\\n" : s, *s == '\n' ? 2 : 1);
    }
}

static const char *const g_pre[] = {
    [API_TOOLS_HERMES] = "<tool_call>\n{\"name\": \"",
    [API_TOOLS_LLAMA3] = "{\"name\": \"",
    [API_TOOLS_MISTRAL] = "[TOOL_CALLS][{\"name\": \"",
    [API_TOOLS_PHI4] = "<|tool_call|>{\"name\": \"",
};
static const char *const g_mid[] = {
    [API_TOOLS_HERMES] = "\", \"arguments\": ",
    [API_TOOLS_LLAMA3] = "\", \"parameters\": ",
    [API_TOOLS_MISTRAL] = "\", \"arguments\": ",
    [API_TOOLS_PHI4] = "\", \"arguments\": ",
};
static const char *const g_post[] = {
    [API_TOOLS_HERMES] = "}\n</tool_call>",
    [API_TOOLS_LLAMA3] = "}",
    [API_TOOLS_MISTRAL] = "}]",
    [API_TOOLS_PHI4] = "}<|/tool_call|>",
};

/* Adds tool i as one alternative of root (and its arguments' rules, prefixed "t<i>-"). */
static int add_tool(api_tool_format fmt, size_t i, const json_t *fn, gbuf *root, gbuf *rules,
                    ks_diag *d)
{
    const json_t *params = json_object_get(fn, "parameters");
    char *args = NULL, *renamed = NULL, pfx[32], ref[48];
    int rc = params ? api_schema_to_gbnf(params, &args, d) : 0;
    if (rc) {
        return ks_diag_set(d, rc, "tools[%zu].function.parameters: %.400s", i, d->msg);
    }
    snprintf(pfx, sizeof(pfx), "t%zu-", i);
    rc = gbnf_prefix(args ? args : api_json_object_gbnf(), pfx, &renamed) ? KS_ERR_NOMEM : 0;
    free(args);
    if (rc) return ks_diag_set(d, rc, "out of memory");
    gb_str(rules, renamed);
    gb_str(rules, "\n");
    free(renamed);
    gb_str(root, root->n > strlen("root ::= ") ? " | \"" : "\"");
    gb_lit(root, g_pre[fmt]);
    gb_lit(root, json_string_value(json_object_get(fn, "name")));
    gb_lit(root, g_mid[fmt]);
    snprintf(ref, sizeof(ref), "\" %sroot \"", pfx);
    gb_str(root, ref);
    gb_lit(root, g_post[fmt]);
    gb_str(root, "\"");
    return 0;
}

int api_tool_grammar(api_tool_format fmt, const json_t *tools, const char *forced, char **out,
                     ks_diag *d)
{
    gbuf root = {0}, rules = {0};
    size_t i, k = 0;
    json_t *t;
    int rc = 0;
    gb_str(&root, "root ::= ");
    json_array_foreach(tools, i, t)
    {
        const json_t *fn = json_object_get(t, "function");
        if (rc || (forced && strcmp(json_string_value(json_object_get(fn, "name")), forced)))
            continue;
        rc = add_tool(fmt, i, fn, &root, &rules, d);
        k++;
    }
    if (!rc && k == 0) rc = ks_diag_set(d, KS_ERR_INVALID, "no tool to call");
    gb_str(&root, "\n");
    gb_str(&root, rules.p ? rules.p : "");
    if (!rc && (root.oom || rules.oom)) rc = ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    free(rules.p);
    if (rc) {
        free(root.p);
        return rc;
    }
    *out = root.p;
    return 0;
}

/* api_json.c - JSON request and response helpers shared by the endpoint files (api.c,
 * api_gen.c): body parsing, UTF-8-safe strings, the OpenAI error object, usage counts and
 * token-id arrays. Calls no endpoint, so api.c and api_gen.c both depend on it, not on each
 * other.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_server.h"

/* ---------------------------------------------------------------- small helpers */

/* Copies s with invalid UTF-8 replaced by U+FFFD so jansson accepts it. */
static char *utf8_clean(const char *s, size_t n, size_t *out_len)
{
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && c != 0xC0 && c != 0xC1 && c < 0xF5;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (ok && c < 0x80 && c == 0) ok = true;
        if (ok) {
            memcpy(o + j, s + i, len);
            j += len;
            i += len;
        } else {
            memcpy(o + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        }
    }
    o[j] = 0;
    *out_len = j;
    return o;
}

json_t *api_json_text(const char *s, size_t n)
{
    size_t m;
    char *c = utf8_clean(s, n, &m);
    json_t *j = c ? json_stringn(c, m) : NULL;
    free(c);
    return j ? j : json_string("");
}

void api_respond_json(api_server *a, http_request *req, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        status = 500;
        s = http_error_body(500, "out of memory", NULL, NULL);
    }
    metrics_count_request(a->metrics, status);
    (void)http_respond(req, status, "application/json", NULL, s, s ? strlen(s) : 0);
    free(s);
}

void api_respond_error(api_server *a, http_request *req, int status, const char *msg,
                       const char *param)
{
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    char *s = http_error_body(status, msg, param, NULL);
    metrics_count_request(a->metrics, status);
    (void)http_respond(req, status, "application/json", extra, s, s ? strlen(s) : 0);
    free(s);
}

/* Parses the body as a JSON object; answers 400 itself and returns NULL on failure. */
json_t *api_parse_body(api_server *a, http_request *req)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t e;
    json_t *root = json_loadb(body, len, 0, &e);
    if (!root || !json_is_object(root)) {
        char msg[300];
        if (root)
            snprintf(msg, sizeof(msg), "the request body must be a JSON object");
        else
            snprintf(msg, sizeof(msg), "invalid JSON: %s (line %d, column %d)", e.text, e.line,
                     e.column);
        json_decref(root);
        api_respond_error(a, req, 400, msg, NULL);
        return NULL;
    }
    return root;
}

json_t *api_usage_json(const sch_usage *u)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                     "completion_tokens", u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", u->cached_tokens);
}

/* ---------------------------------------------------------------- simple endpoints */

/* Reads a JSON array of token ids; returns count or -1 (bad id / type). */
int32_t api_read_ids(api_server *a, json_t *arr, int32_t **out)
{
    size_t n = json_array_size(arr), i;
    int32_t *ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!ids) return -1;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= tok_vocab_n_tokens(a->vocab)) {
            free(ids);
            return -1;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    *out = ids;
    return (int32_t)n;
}

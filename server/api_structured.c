/* api_structured.c - the request fields that constrain or reshape generation:
 * response_format (text, json_object, json_schema), llama.cpp's `grammar` and `json_schema`,
 * logit_bias, and for /v1/completions echo and suffix (fill-in-the-middle).
 *
 * Grammars are compiled here, on the loop thread, so a bad one is a 400 naming its position
 * (line:column in a grammar, the JSON pointer in a schema) before anything is queued; the
 * compiled grammar then travels with the request to the scheduler, which owns it from submit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_server.h"
#include "json_schema.h"

#define FAIL(p, ...)                                                                               \
    do {                                                                                           \
        snprintf(msg, cap, __VA_ARGS__);                                                           \
        *param = (p);                                                                              \
        return KS_ERR_INVALID;                                                                     \
    } while (0)

static int compile(api_gen *g, const char *src, size_t n, const char *what, char *msg, size_t cap,
                   const char **param, const char *p)
{
    ks_diag d;
    if (gram_compile(src, n, &g->grammar, &d)) FAIL(p, "%s: %s", what, d.msg);
    free(g->grammar_src); /* kept for the other choices when n > 1 */
    g->grammar_src = malloc(n + 1);
    if (!g->grammar_src) FAIL(p, "out of memory");
    memcpy(g->grammar_src, src, n);
    g->grammar_src[n] = 0;
    g->grammar_len = n;
    return 0;
}

static int from_schema(api_gen *g, json_t *schema, const char *what, char *msg, size_t cap,
                       const char **param, const char *p)
{
    char *gbnf = NULL;
    ks_diag d;
    if (api_schema_to_gbnf(schema, &gbnf, &d))
        FAIL(p, "%s: %s (JSON pointer %s)", what, d.msg, d.key[0] ? d.key : "/");
    int rc = compile(g, gbnf, strlen(gbnf), what, msg, cap, param, p);
    free(gbnf);
    return rc;
}

static int parse_response_format(api_gen *g, json_t *rf, char *msg, size_t cap, const char **param)
{
    const char *p = "response_format";
    json_t *type = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(type))
        FAIL(p, "'response_format' must be an object with a string 'type'");
    const char *t = json_string_value(type);
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        json_t *schema = json_object_get(rf, "schema"); /* llama-server's extension */
        if (schema) return from_schema(g, schema, "response_format.schema", msg, cap, param, p);
        const char *src = api_json_object_gbnf();
        return compile(g, src, strlen(src), "response_format", msg, cap, param, p);
    }
    if (strcmp(t, "json_schema"))
        FAIL(p, "response_format type '%s' is not one of text, json_object, json_schema", t);
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js)) FAIL(p, "response_format json_schema needs a 'json_schema' object");
    json_t *name = json_object_get(js, "name"), *strict = json_object_get(js, "strict");
    if (name && !json_is_string(name)) FAIL(p, "response_format.json_schema.name must be a string");
    if (strict && !json_is_boolean(strict) && !json_is_null(strict))
        FAIL(p, "response_format.json_schema.strict must be a boolean");
    json_t *schema = json_object_get(js, "schema");
    if (!schema) FAIL(p, "response_format.json_schema needs a 'schema'");
    return from_schema(g, schema, "response_format.json_schema.schema", msg, cap, param, p);
}

static int parse_grammar(api_gen *g, json_t *root, char *msg, size_t cap, const char **param)
{
    json_t *rf = json_object_get(root, "response_format"), *gr = json_object_get(root, "grammar");
    json_t *js = json_object_get(root, "json_schema");
    if (rf && json_is_null(rf)) rf = NULL;
    if (gr && json_is_null(gr)) gr = NULL;
    if (js && json_is_null(js)) js = NULL;
    if ((rf != NULL) + (gr != NULL) + (js != NULL) > 1)
        FAIL("grammar", "give only one of 'response_format', 'grammar' and 'json_schema'");
    if (gr) {
        if (!json_is_string(gr)) FAIL("grammar", "'grammar' must be a GBNF string");
        return compile(g, json_string_value(gr), json_string_length(gr), "grammar", msg, cap, param,
                       "grammar");
    }
    if (js) return from_schema(g, js, "json_schema", msg, cap, param, "json_schema");
    return rf ? parse_response_format(g, rf, msg, cap, param) : 0;
}

/* {"<token id>": bias, ...} as OpenAI sends it (string keys), bias in -100..100. */
static int parse_logit_bias(const api_server *a, api_gen *g, json_t *root, char *msg, size_t cap,
                            const char **param)
{
    json_t *lb = json_object_get(root, "logit_bias");
    if (!lb || json_is_null(lb)) return 0;
    if (!json_is_object(lb)) FAIL("logit_bias", "'logit_bias' must map token ids to numbers");
    size_t n = json_object_size(lb);
    if (n == 0) return 0;
    if (n > 1024) FAIL("logit_bias", "'logit_bias' holds at most 1024 tokens");
    int32_t n_vocab = a->vocab ? tok_vocab_n_tokens(a->vocab) : 0;
    g->bias_ids = malloc(n * sizeof(int32_t));
    g->bias = malloc(n * sizeof(float));
    if (!g->bias_ids || !g->bias) FAIL("logit_bias", "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(lb, k, v)
    {
        char *end;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || id < 0)
            FAIL("logit_bias", "logit_bias key '%.40s' is not a token id", k);
        if (id >= n_vocab)
            FAIL("logit_bias",
                 "logit_bias token id %lld is out of range (the vocabulary has %d "
                 "tokens)",
                 id, n_vocab);
        double b = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(b >= -100 && b <= 100))
            FAIL("logit_bias", "logit_bias for token %lld must be a number in -100..100", id);
        g->bias_ids[g->n_bias] = (int32_t)id;
        g->bias[g->n_bias++] = (float)b;
    }
    return 0;
}

static int parse_fim(const api_server *a, api_gen *g, json_t *root, char *msg, size_t cap,
                     const char **param)
{
    json_t *echo = json_object_get(root, "echo"), *suffix = json_object_get(root, "suffix");
    if (echo && !json_is_null(echo)) {
        if (!json_is_boolean(echo)) FAIL("echo", "'echo' must be a boolean");
        g->echo = json_is_true(echo);
    }
    if (!suffix || json_is_null(suffix)) return 0;
    if (!json_is_string(suffix)) FAIL("suffix", "'suffix' must be a string");
    for (int k = 0; k < 3; k++)
        if (!a->vocab || tok_fim_token(a->vocab, (tok_fim)k) < 0)
            FAIL("suffix", "'suffix' needs fill-in-the-middle tokens (<|fim_prefix|>, "
                           "<|fim_suffix|>, <|fim_middle|>), which this model's vocabulary "
                           "lacks");
    if (g->echo) FAIL("suffix", "'echo' and 'suffix' cannot be combined");
    g->suffix = json_string_value(suffix);
    g->suffix_len = json_string_length(suffix);
    return 0;
}

int api_structured_parse(const api_server *a, json_t *root, bool chat, api_gen *g, char *msg,
                         size_t cap, const char **param)
{
    int rc = parse_logit_bias(a, g, root, msg, cap, param);
    if (!rc && !chat) rc = parse_fim(a, g, root, msg, cap, param);
    if (!rc) rc = parse_grammar(g, root, msg, cap, param);
    return rc;
}

void api_gen_release(api_gen *g)
{
    free(g->policy_config);
    gram_destroy(g->grammar);
    free(g->grammar_src);
    g->grammar_src = NULL;
    free(g->bias_ids);
    free(g->bias);
    g->policy_config = NULL;
    g->grammar = NULL;
    g->bias_ids = NULL;
    g->bias = NULL;
    g->n_bias = 0;
}

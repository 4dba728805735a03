/* test_tools.c - tool calling: the format read off each real chat template, "tools" and
 * "tool_choice" validation, and the parser of generated calls for the Hermes/Qwen, Llama 3,
 * Mistral and Phi-4 formats: whole messages (content, calls, arguments, ids) and the same
 * messages fed one byte at a time as a stream (content never shows a piece of a call marker,
 * a call appears exactly when it is complete, and the streamed result equals the whole). */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kvserve/base.h"
#include "kvserve/grammar.h"
#include "server/api_tools.h"

static api_tool_format detect_file(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/templates/%s.jinja", getenv("KVSERVE_SRC"), name);
    char *src = NULL;
    size_t n = 0;
    ks_diag d;
    ck_assert_msg(ks_read_file(path, &src, &n, &d) == 0, "%s", d.msg);
    api_tool_format f = api_tool_format_detect(src);
    free(src);
    return f;
}

START_TEST(test_formats_of_real_templates)
{
    ck_assert_ptr_nonnull(getenv("KVSERVE_SRC"));
    ck_assert_int_eq(detect_file("Qwen-Qwen2.5-7B-Instruct"), API_TOOLS_HERMES);
    ck_assert_int_eq(detect_file("Qwen-Qwen3-0.6B"), API_TOOLS_HERMES);
    ck_assert_int_eq(detect_file("meta-llama-Llama-3.1-8B-Instruct"), API_TOOLS_LLAMA3);
    ck_assert_int_eq(detect_file("meta-llama-Llama-3.2-3B-Instruct"), API_TOOLS_LLAMA3);
    ck_assert_int_eq(detect_file("meta-llama-Llama-3.3-70B-Instruct"), API_TOOLS_LLAMA3);
    ck_assert_int_eq(detect_file("mistralai-Mistral-Nemo-Instruct-2407"), API_TOOLS_MISTRAL);
    ck_assert_int_eq(detect_file("llama-cpp-microsoft-Phi-4-mini-instruct"), API_TOOLS_PHI4);
}
END_TEST

typedef struct want_call {
    const char *name, *args_json, *id; /* id NULL: generated */
} want_call;

static void check_calls(api_tool_stream *s, const want_call *w, size_t n, const char *what)
{
    ck_assert_msg(json_array_size(s->calls) == n, "%s: %zu calls, want %zu", what,
                  json_array_size(s->calls), n);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(s->calls, i);
        json_t *fn = json_object_get(c, "function");
        ck_assert_str_eq(json_string_value(json_object_get(c, "type")), "function");
        ck_assert_str_eq(json_string_value(json_object_get(fn, "name")), w[i].name);
        json_t *got = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
        json_t *want = json_loads(w[i].args_json, 0, NULL);
        ck_assert_msg(got && want && json_equal(got, want), "%s: arguments %s", what,
                      json_string_value(json_object_get(fn, "arguments")));
        json_decref(got);
        json_decref(want);
        const char *id = json_string_value(json_object_get(c, "id"));
        if (w[i].id) {
            ck_assert_str_eq(id, w[i].id);
        } else if (s->fmt == API_TOOLS_MISTRAL) {
            ck_assert_uint_eq(strlen(id), 9);
        } else {
            ck_assert_uint_eq(strlen(id), 29);
            ck_assert(strncmp(id, "call_", 5) == 0);
        }
    }
}

/* Parses text whole, then byte by byte as a stream; both must give content and calls. */
static void expect(api_tool_format f, const char *text, const char *content, const want_call *w,
                   size_t n)
{
    api_tool_stream s;
    api_tool_stream_init(&s, f, 42);
    ck_assert_int_eq(api_tool_stream_push(&s, text, strlen(text), true), 0);
    const char *p;
    size_t len;
    api_tool_stream_content(&s, &p, &len);
    ck_assert_msg(len == strlen(content) && !memcmp(p, content, len), "%s: content '%.*s'", text,
                  (int)len, p);
    check_calls(&s, w, n, text);
    api_tool_stream_free(&s);

    api_tool_stream_init(&s, f, 42);
    char streamed[1024] = "";
    size_t total = strlen(text), prev_calls = 0;
    for (size_t i = 0; i < total; i++) {
        ck_assert_int_eq(api_tool_stream_push(&s, text + i, 1, i + 1 == total), 0);
        api_tool_stream_content(&s, &p, &len);
        strncat(streamed, p, len);
        size_t nc = json_array_size(s.calls);
        ck_assert_uint_ge(nc, prev_calls); /* calls are never withdrawn */
        prev_calls = nc;
    }
    ck_assert_msg(strcmp(streamed, content) == 0, "%s: streamed content '%s'", text, streamed);
    check_calls(&s, w, n, text);
    api_tool_stream_free(&s);
}

START_TEST(test_hermes)
{
    const want_call weather[] = {{"get_weather", "{\"city\": \"Paris\"}", NULL}};
    expect(API_TOOLS_HERMES,
           "I'll check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
           "\"Paris\"}}\n</tool_call>",
           "I'll check.", weather, 1);
    const want_call two[] = {{"add", "{\"a\": 1, \"b\": 2}", NULL}, {"add", "{}", NULL}};
    expect(API_TOOLS_HERMES,
           "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>\n"
           "<tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call>",
           "", two, 2);
    expect(API_TOOLS_HERMES, "Just text, no <tool_ tags here.", "Just text, no <tool_ tags here.",
           NULL, 0);
    expect(API_TOOLS_HERMES, "<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>",
           NULL, 0);
    /* stopped before the closing tag: the JSON is complete, so it is a call */
    expect(API_TOOLS_HERMES,
           "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
           "{\"city\": \"Paris\"}}\n",
           "", weather, 1);
    /* arguments given as a string are passed through */
    const want_call str[] = {{"f", "{\"x\": 1}", NULL}};
    expect(API_TOOLS_HERMES,
           "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}"
           "</tool_call>",
           "", str, 1);
}
END_TEST

START_TEST(test_llama3_mistral_phi4)
{
    const want_call add[] = {{"add", "{\"a\": 1, \"b\": 2}", NULL}};
    expect(API_TOOLS_LLAMA3, "{\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": 2}}", "", add,
           1);
    expect(API_TOOLS_LLAMA3,
           "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 1, "
           "\"b\": 2}}",
           "", add, 1);
    expect(API_TOOLS_LLAMA3, "  The answer is {1}.", "  The answer is {1}.", NULL, 0);
    expect(API_TOOLS_LLAMA3, "{\"answer\": 3}", "{\"answer\": 3}", NULL, 0);
    const want_call given[] = {{"add", "{\"a\": 1}", "abc123XYZ"}};
    expect(API_TOOLS_MISTRAL,
           "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}, "
           "\"id\": \"abc123XYZ\"}]",
           "", given, 1);
    const want_call gen[] = {{"add", "{\"a\": 1}", NULL}, {"sub", "{}", NULL}};
    expect(API_TOOLS_MISTRAL,
           "Sure.[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1}},"
           " {\"name\": \"sub\", \"arguments\": {}}]",
           "Sure.", gen, 2);
    const want_call phi[] = {{"f", "{\"q\": \"x\"}", NULL}};
    expect(API_TOOLS_PHI4,
           "<|tool_call|>{\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}"
           "<|/tool_call|>",
           "", phi, 1);
}
END_TEST

START_TEST(test_stream_reveals_calls_only_when_complete)
{
    const char *text = "Hi<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
    api_tool_stream s;
    api_tool_stream_init(&s, API_TOOLS_HERMES, 7);
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(api_tool_stream_push(&s, text + i, 1, false), 0);
        ck_assert_uint_eq(json_array_size(s.calls), i + 1 == n ? 1 : 0);
        ck_assert_uint_le(s.content_end, 2); /* "Hi", never a byte of the tag */
    }
    const char *id = json_string_value(json_object_get(json_array_get(s.calls, 0), "id"));
    char first[64];
    snprintf(first, sizeof first, "%s", id);
    ck_assert_int_eq(api_tool_stream_push(&s, "", 0, true), 0); /* the id never changes */
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(s.calls, 0), "id")), first);
    api_tool_stream_free(&s);
}
END_TEST

/* A consumer like the server's stream: the call's id and name as soon as they are known, its
 * arguments as they grow; at completion the rest. Sent pieces must add up to the call. */
START_TEST(test_stream_sends_arguments_as_they_grow)
{
    const char *text = "Let me see.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                       "{\"city\": \"Pa}ris\\\"\", \"days\": [1, {\"x\": 2}]}}\n</tool_call>";
    api_tool_stream s;
    api_tool_stream_init(&s, API_TOOLS_HERMES, 9);
    char args[256] = "", id[64] = "", name[160] = "";
    size_t n = strlen(text), before_close = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(api_tool_stream_push(&s, text + i, 1, false), 0);
        if (s.pend && !s.pend_announced) {
            snprintf(id, sizeof id, "%s", s.pend_id);
            snprintf(name, sizeof name, "%s", s.pend_name);
            s.pend_announced = true;
        }
        const char *p;
        size_t len;
        api_tool_stream_args(&s, &p, &len);
        strncat(args, p, len);
        if (json_array_size(s.calls) == 0) before_close = strlen(args);
    }
    ck_assert_uint_eq(json_array_size(s.calls), 1);
    json_t *call = json_array_get(s.calls, 0);
    json_t *fn = json_object_get(call, "function");
    const char *full = json_string_value(json_object_get(fn, "arguments"));
    ck_assert_str_eq(name, "get_weather");
    ck_assert_str_eq(id, json_string_value(json_object_get(call, "id")));
    ck_assert_int_eq(s.announced, 0);
    ck_assert_uint_gt(before_close, 20); /* most of the arguments went out early */
    strcat(args, full + s.announced_sent);
    ck_assert_str_eq(args, full);
    json_t *parsed = json_loads(full, 0, NULL);
    ck_assert_ptr_nonnull(parsed);
    ck_assert_str_eq(json_string_value(json_object_get(parsed, "city")), "Pa}ris\"");
    json_decref(parsed);
    api_tool_stream_free(&s);
}
END_TEST

static int parse_req(const char *body, api_tool_choice *choice, const char **forced,
                     const char **param)
{
    json_t *root = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(root);
    char msg[256];
    *param = NULL;
    int rc = api_tools_parse(root, choice, forced, msg, sizeof msg, param);
    if (rc) {
        ck_assert_ptr_nonnull(*param);
        ck_assert(msg[0]);
    }
    if (*forced) {
        static char keep[64];
        snprintf(keep, sizeof keep, "%s", *forced);
        *forced = keep;
    }
    json_decref(root);
    return rc;
}

START_TEST(test_tools_and_tool_choice_validation)
{
    const char *tools = "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                        "\"parameters\": {\"type\": \"object\"}}}]";
    char body[512];
    api_tool_choice ch;
    const char *forced, *param;
    snprintf(body, sizeof body, "{%s}", tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), 0);
    ck_assert_int_eq(ch, API_TOOL_CHOICE_AUTO);
    snprintf(body, sizeof body, "{%s, \"tool_choice\": \"required\"}", tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), 0);
    ck_assert_int_eq(ch, API_TOOL_CHOICE_REQUIRED);
    ck_assert_ptr_null(forced);
    snprintf(body, sizeof body, "{%s, \"tool_choice\": \"none\"}", tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), 0);
    ck_assert_int_eq(ch, API_TOOL_CHOICE_NONE);
    snprintf(body, sizeof body,
             "{%s, \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}}",
             tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), 0);
    ck_assert_str_eq(forced, "f");
    snprintf(body, sizeof body,
             "{%s, \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"g\"}}}",
             tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), -1);
    ck_assert_str_eq(param, "tool_choice");
    snprintf(body, sizeof body, "{%s, \"tool_choice\": \"sometimes\"}", tools);
    ck_assert_int_eq(parse_req(body, &ch, &forced, &param), -1);
    ck_assert_int_eq(parse_req("{\"tool_choice\": \"required\"}", &ch, &forced, &param), -1);
    ck_assert_int_eq(parse_req("{\"tools\": {}}", &ch, &forced, &param), -1);
    ck_assert_str_eq(param, "tools");
    ck_assert_int_eq(parse_req("{\"tools\": [{\"type\": \"function\"}]}", &ch, &forced, &param),
                     -1);
    ck_assert_int_eq(parse_req("{\"tools\": [{\"type\": \"code\", \"function\": {\"name\": "
                               "\"f\"}}]}",
                               &ch, &forced, &param),
                     -1);
}
END_TEST

static bool grammar_accepts(const char *gbnf, const char *text)
{
    gram *g = NULL;
    gram_matcher *m = NULL;
    ks_diag d;
    ck_assert_msg(gram_compile(gbnf, strlen(gbnf), &g, &d) == 0, "%s\n%s", d.msg, gbnf);
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    bool ok = gram_matcher_accept_bytes(m, text, strlen(text)) == 0 && gram_matcher_can_end(m);
    gram_matcher_destroy(m);
    gram_destroy(g);
    return ok;
}

START_TEST(test_grammar_forces_a_valid_call)
{
    json_t *tools = json_loads(
        "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, "
        "\"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 7}}, "
        "\"required\": [\"city\"]}}},"
        " {\"type\": \"function\", \"function\": {\"name\": \"noargs\"}}]",
        0, NULL);
    ck_assert_ptr_nonnull(tools);
    char *g = NULL;
    ks_diag d;
    ck_assert_int_eq(api_tool_grammar(API_TOOLS_HERMES, tools, NULL, &g, &d), 0);
    ck_assert(grammar_accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                 "{\"city\": \"Paris\", \"days\": 3}}\n</tool_call>"));
    ck_assert(grammar_accepts(g, "<tool_call>\n{\"name\": \"noargs\", \"arguments\": "
                                 "{}}\n</tool_call>"));
    ck_assert(!grammar_accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                  "{\"days\": 3}}\n</tool_call>")); /* city is required */
    ck_assert(!grammar_accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                  "{\"city\": \"Paris\", \"days\": 9}}\n</tool_call>"));
    ck_assert(!grammar_accepts(g, "Sure! <tool_call>"));
    free(g);
    /* a named function excludes the others; each format has its own wrapper */
    ck_assert_int_eq(api_tool_grammar(API_TOOLS_LLAMA3, tools, "noargs", &g, &d), 0);
    ck_assert(grammar_accepts(g, "{\"name\": \"noargs\", \"parameters\": {}}"));
    ck_assert(!grammar_accepts(g, "{\"name\": \"get_weather\", \"parameters\": {\"city\": "
                                  "\"x\"}}"));
    free(g);
    ck_assert_int_eq(api_tool_grammar(API_TOOLS_MISTRAL, tools, "noargs", &g, &d), 0);
    ck_assert(grammar_accepts(g, "[TOOL_CALLS][{\"name\": \"noargs\", \"arguments\": {}}]"));
    free(g);
    ck_assert_int_eq(api_tool_grammar(API_TOOLS_PHI4, tools, "noargs", &g, &d), 0);
    ck_assert(grammar_accepts(g, "<|tool_call|>{\"name\": \"noargs\", \"arguments\": {}}"
                                 "<|/tool_call|>"));
    free(g);
    json_decref(tools);
    /* a schema the converter rejects is an error naming the tool */
    tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                       "\"parameters\": {\"type\": \"object\", \"patternProperties\": {}}}}]",
                       0, NULL);
    ck_assert_int_ne(api_tool_grammar(API_TOOLS_HERMES, tools, NULL, &g, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "tools[0]"));
    json_decref(tools);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = tcase_create("tools");
    tcase_add_test(tc, test_formats_of_real_templates);
    tcase_add_test(tc, test_hermes);
    tcase_add_test(tc, test_llama3_mistral_phi4);
    tcase_add_test(tc, test_stream_reveals_calls_only_when_complete);
    tcase_add_test(tc, test_stream_sends_arguments_as_they_grow);
    tcase_add_test(tc, test_tools_and_tool_choice_validation);
    tcase_add_test(tc, test_grammar_forces_a_valid_call);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, true);
}

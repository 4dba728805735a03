/* fuzz_jinja.c - fuzz target for the Jinja chat-template engine: parse the input as a
 * template and, when it parses, render it against a small chat context (messages with a tool
 * call, tools, bos/eos, add_generation_prompt) under a 4 MiB memory budget.
 *
 * Built with -fsanitize=fuzzer (clang) it is a libFuzzer target; with replay_main.c it runs
 * every file named on the command line once. Every input must either render or fail with a
 * diagnostic: a syntax error names a line inside the input; nothing may crash, hang or leak
 * (the engine bounds nesting, recursion, steps and memory).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/jinja.h"

static jinja_val message(jinja_ctx *c, const char *role, const char *content)
{
    jinja_val m = jinja_dict_new(c);
    jinja_dict_set(c, m, "role", jinja_cstr(c, role));
    jinja_dict_set(c, m, "content", jinja_cstr(c, content));
    return m;
}

static void fill(jinja_ctx *c)
{
    jinja_val msgs = jinja_list_new(c);
    jinja_list_push(c, msgs, message(c, "system", "Be brief."));
    jinja_list_push(c, msgs, message(c, "user", " Hi <tool_response>"));
    jinja_val call = jinja_dict_new(c), fn = jinja_dict_new(c), args = jinja_dict_new(c);
    jinja_dict_set(c, args, "city", jinja_cstr(c, "Paris"));
    jinja_dict_set(c, fn, "name", jinja_cstr(c, "get_weather"));
    jinja_dict_set(c, fn, "arguments", args);
    jinja_dict_set(c, call, "id", jinja_cstr(c, "call12345"));
    jinja_dict_set(c, call, "function", fn);
    jinja_val calls = jinja_list_new(c);
    jinja_list_push(c, calls, call);
    jinja_val a = message(c, "assistant", "");
    jinja_dict_set(c, a, "tool_calls", calls);
    jinja_list_push(c, msgs, a);
    jinja_list_push(c, msgs, message(c, "tool", "{\"t\": 21.5}"));
    jinja_val tools = jinja_list_new(c), tool = jinja_dict_new(c);
    jinja_dict_set(c, tool, "type", jinja_cstr(c, "function"));
    jinja_dict_set(c, tool, "function", fn);
    jinja_list_push(c, tools, tool);
    if (jinja_ctx_set(c, "messages", msgs) || jinja_ctx_set(c, "tools", tools) ||
        jinja_ctx_set(c, "bos_token", jinja_cstr(c, "<s>")) ||
        jinja_ctx_set(c, "eos_token", jinja_cstr(c, "</s>")) ||
        jinja_ctx_set(c, "add_generation_prompt", jinja_bool(true)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jinja_template *t = NULL;
    ks_diag d;
    int rc = jinja_template_parse((const char *)data, size, &t, &d);
    if (rc != 0) {
        int lines = 1;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        if (t != NULL || d.line < 1 || d.line > lines || strncmp(d.msg, "chat template line", 18))
            abort();
        return 0;
    }
    jinja_ctx *c = jinja_ctx_create(4u << 20);
    if (!c) abort();
    jinja_ctx_set_time(c, 1764680400);
    fill(c);
    char *out = NULL;
    size_t n = 0;
    rc = jinja_render(t, c, &out, &n, &d);
    if (rc == 0) {
        if (out == NULL || strlen(out) > n) abort();
        free(out);
    } else if (out != NULL || d.msg[0] == 0) {
        abort();
    }
    jinja_ctx_destroy(c);
    jinja_template_destroy(t);
    return 0;
}

/* test_template_fixtures.c - every real chat template under tests/data/templates/ rendered by
 * our Jinja engine (through the server's llama-server-compatible wrapper) must equal, byte for
 * byte, what llama.cpp b9749's llama-server --jinja rendered for the same conversation
 * (recorded by scripts/gen_template_fixtures.py), and must fail where llama-server refused. */
#include <check.h>

#include "check_main.h"
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/chat_template.h"

static char *read_text(const char *path)
{
    char *buf = NULL;
    size_t n = 0;
    ks_diag d;
    ck_assert_msg(ks_read_file(path, &buf, &n, &d) == 0, "%s: %s", path, d.msg);
    return buf;
}

/* First differing offset, for a readable failure. */
static size_t diff_at(const char *a, const char *b)
{
    size_t i = 0;
    while (a[i] && a[i] == b[i]) {
        i++;
    }
    return i;
}

static int check_file(const char *fixture_path, int *n_cases)
{
    json_error_t je;
    json_t *fx = json_load_file(fixture_path, 0, &je);
    ck_assert_msg(fx, "%s: %s", fixture_path, je.text);
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%.*s.jinja",
             (int)(strlen(fixture_path) - strlen(".fixtures.json")), fixture_path);
    char *src = read_text(tpath);
    jinja_template *t = NULL;
    ks_diag d;
    ck_assert_msg(jinja_template_parse(src, strlen(src), &t, &d) == 0, "%s: %s", tpath, d.msg);
    size_t i;
    json_t *cs;
    int failures = 0;
    json_array_foreach(json_object_get(fx, "cases"), i, cs)
    {
        json_t *req = json_object_get(cs, "request");
        json_t *agp = json_object_get(req, "add_generation_prompt");
        api_chat_render_opts o = {
            .bos_token = json_string_value(json_object_get(fx, "bos_token")),
            .eos_token = json_string_value(json_object_get(fx, "eos_token")),
            .add_bos = true,
            .add_generation_prompt = agp ? json_is_true(agp) : true,
            .kwargs = json_object_get(req, "chat_template_kwargs"),
            .now = (time_t)json_integer_value(json_object_get(cs, "now")),
        };
        char *out = NULL;
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *want = json_string_value(json_object_get(cs, "prompt"));
        int rc = api_chat_template_render(t, json_object_get(req, "messages"),
                                          json_object_get(req, "tools"), &o, &out, &d);
        if (want && (rc || strcmp(out, want) != 0)) {
            size_t at = rc ? 0 : diff_at(out, want);
            fprintf(stderr, "%s / %s: %s\n got: %s\nwant: %s\n(first difference at byte %zu)\n",
                    tpath, name, rc ? d.msg : "differs", rc ? "" : out, want, at);
            failures++;
        } else if (!want && rc == 0) {
            fprintf(stderr, "%s / %s: llama-server refused (%s) but we rendered:\n%s\n", tpath,
                    name, json_string_value(json_object_get(cs, "error")), out);
            failures++;
        } else if (!want) {
            ck_assert_msg(d.msg[0] != 0, "an error must carry a message");
        }
        (*n_cases)++;
        free(out);
    }
    jinja_template_destroy(t);
    free(src);
    json_decref(fx);
    return failures;
}

START_TEST(test_all_families_match_llama_server)
{
    setenv("TZ", "UTC", 1); /* llama-server's strftime_now reads local time; recorded in UTC */
    tzset();
    const char *srcdir = getenv("KVSERVE_SRC");
    ck_assert_ptr_nonnull(srcdir);
    char pat[4096];
    snprintf(pat, sizeof pat, "%s/tests/data/templates/*.fixtures.json", srcdir);
    glob_t g;
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    /* Llama 3.1/3.2/3.3, Qwen2.5, Qwen3, Gemma 3, Phi-3.5, Phi-4-mini, Mistral Nemo */
    ck_assert_uint_ge(g.gl_pathc, 9);
    int failures = 0, n_cases = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        failures += check_file(g.gl_pathv[i], &n_cases);
    }
    globfree(&g);
    ck_assert_int_ge(n_cases, 9 * 12);
    ck_assert_msg(failures == 0, "%d of %d template cases differ from llama-server", failures,
                  n_cases);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("template_fixtures");
    TCase *tc = tcase_create("families");
    tcase_add_test(tc, test_all_families_match_llama_server);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, true);
}

/* test_perplexity.c - `kvserve perplexity` against llama-perplexity on every reference model.
 *
 * Runs the real binary ($KVSERVE_BIN) with the settings of shared/reference/perplexity.json
 * (ctx 128, whole chunks, second halves scored) and requires the final perplexity within
 * 0.5% of llama.cpp's, i.e. |ln PPL - ln PPL_ref| <= ln(1.005). The reference PPLs are
 * around e^100, so the comparison is done on ln PPL, which the command prints.
 */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *shared_dir(void)
{
    return ks_test_shared_dir();
}

/* Runs the command and returns the ln(PPL) it printed, or NAN. */
static double run_perplexity(const char *model, const char *text, int ctx)
{
    const char *bin = getenv("KVSERVE_BIN");
    ck_assert_msg(bin != NULL, "KVSERVE_BIN is not set");
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "'%s' perplexity --model '%s' --file '%s' --ctx %d --threads 2 2>/dev/null",
             bin, model, text, ctx);
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    char line[8192];
    double ln = NAN;
    while (fgets(line, sizeof(line), p)) {
        const char *at = strstr(line, "ln(PPL) = ");
        if (at) ln = strtod(at + 10, NULL);
    }
    int st = pclose(p);
    ck_assert_msg(st == 0, "kvserve perplexity failed for %s (status %d)", model, st);
    return ln;
}

START_TEST(test_all_models)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/reference/perplexity.json", shared_dir());
    json_error_t err;
    json_t *ref = json_load_file(path, 0, &err);
    ck_assert_msg(ref != NULL, "%s: %s", path, err.text);
    int ctx = (int)json_integer_value(json_object_get(ref, "n_ctx"));
    snprintf(path, sizeof(path), "%s/reference/%s", shared_dir(),
             json_string_value(json_object_get(ref, "text_file")));
    char text[2048];
    snprintf(text, sizeof(text), "%s", path);
    const char *name;
    json_t *m;
    int n = 0, bad = 0;
    json_object_foreach(json_object_get(ref, "models"), name, m) {
        char model[2048];
        snprintf(model, sizeof(model), "%s/models/ref/%s", shared_dir(), name);
        double want = json_real_value(json_object_get(m, "ln_ppl"));
        double got = run_perplexity(model, text, ctx);
        double rel = exp(fabs(got - want)) - 1.0;
        printf("%-26s ln PPL %.5f  llama.cpp %.5f  PPL ratio %.4f%% %s\n", name, got, want,
               rel * 100.0, rel <= 0.005 ? "ok" : "FAIL");
        fflush(stdout);
        bad += !(rel <= 0.005);
        n++;
    }
    json_decref(ref);
    ck_assert_int_eq(n, 8);
    ck_assert_msg(bad == 0, "%d models outside 0.5%% of llama.cpp's perplexity", bad);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("perplexity");
    TCase *tc = tcase_create("llama.cpp");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_all_models);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, false);
}

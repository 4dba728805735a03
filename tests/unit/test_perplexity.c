/* test_perplexity.c - `kvserve perplexity` against llama-perplexity on every reference model.
 *
 * Runs the real binary ($KVSERVE_BIN) with the settings of shared/reference/perplexity.json
 * (ctx 128, whole chunks, second halves scored) and requires the final perplexity within
 * 0.5% of llama.cpp's, i.e. |ln PPL - ln PPL_ref| <= ln(1.005). The reference PPLs are
 * around e^100, so the comparison is done on ln PPL, which the command prints.
 *
 * Quantised KV caches: tests/data/kv/perplexity-kv.json holds llama-perplexity's figures with
 * -fa -ctk/-ctv (stored, not rerun); `kvserve perplexity --k-dtype --v-dtype` must land within
 * 0.02 of each ln PPL. Entries marked unavailable (llama.cpp cannot run them on this CPU) are
 * listed and skipped.
 */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *shared_dir(void)
{
    return ks_test_shared_dir();
}

/* Runs the command and returns the ln(PPL) it printed, or NAN. */
static double run_perplexity_args(const char *model, const char *text, int ctx, const char *extra);

static double run_perplexity(const char *model, const char *text, int ctx)
{
    return run_perplexity_args(model, text, ctx, "");
}

static double run_perplexity_args(const char *model, const char *text, int ctx, const char *extra)
{
    const char *bin = getenv("KVSERVE_BIN");
    ck_assert_msg(bin != NULL, "KVSERVE_BIN is not set");
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "'%s' perplexity --model '%s' --file '%s' --ctx %d --threads 1 %s 2>/dev/null", bin,
             model, text, ctx, extra);
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
    json_object_foreach(json_object_get(ref, "models"), name, m)
    {
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

START_TEST(test_kv_types)
{
    const char *src = getenv("KVSERVE_SRC");
    ck_assert_msg(src != NULL, "KVSERVE_SRC is not set");
    char path[2048], text[2048];
    snprintf(path, sizeof(path), "%s/tests/data/kv/perplexity-kv.json", src);
    json_error_t err;
    json_t *ref = json_load_file(path, 0, &err);
    ck_assert_msg(ref != NULL, "%s: %s", path, err.text);
    snprintf(text, sizeof(text), "%s/reference/perplexity-text.txt", shared_dir());
    int ctx = (int)json_integer_value(json_object_get(ref, "n_ctx"));
    size_t i;
    json_t *r;
    int n = 0, bad = 0;
    json_array_foreach(json_object_get(ref, "runs"), i, r)
    {
        const char *name = json_string_value(json_object_get(r, "model"));
        const char *ctk = json_string_value(json_object_get(r, "ctk"));
        const char *ctv = json_string_value(json_object_get(r, "ctv"));
        if (!json_object_get(r, "ln_ppl")) {
            printf("%-26s K %-5s V %-5s no llama.cpp figure (unavailable)\n", name, ctk, ctv);
            continue;
        }
        char model[2048], extra[128];
        snprintf(model, sizeof(model), "%s/models/ref/%s", shared_dir(), name);
        snprintf(extra, sizeof(extra), "--k-dtype %s --v-dtype %s", ctk, ctv);
        double want = json_real_value(json_object_get(r, "ln_ppl"));
        double got = run_perplexity_args(model, text, ctx, extra);
        bool ok = fabs(got - want) <= 0.02;
        printf("%-26s K %-5s V %-5s ln PPL %.5f  llama.cpp %.5f  %s\n", name, ctk, ctv, got, want,
               ok ? "ok" : "FAIL");
        fflush(stdout);
        bad += !ok;
        n++;
    }
    json_decref(ref);
    ck_assert_int_ge(n, 6);
    ck_assert_msg(bad == 0, "%d KV-type runs more than 0.02 from llama.cpp's ln PPL", bad);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("perplexity");
    TCase *tc = tcase_create("llama.cpp");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_all_models);
    tcase_add_test(tc, test_kv_types);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, false);
}

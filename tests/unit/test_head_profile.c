/* test_head_profile.c - head-profile files (kvcache/head_profile.c) and the `hybrid` policy's
 * parameters.
 *
 * References: a profile written and read back equals the original field by field (scores
 * bit for bit); hand-written bad files each fail with a message naming the field; the
 * policy's parameters resolve from the model by the documented rules and out-of-range values
 * are refused naming the key.
 */
#include <check.h>

#include "check_main.h"
#include "policy_params.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/head_profile.h"

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "/tmp/kvserve-test-hp-%d-%s", (int)getpid(), name);
}

START_TEST(test_roundtrip)
{
    kv_head_profile a, b;
    ck_assert_int_eq(kv_head_profile_alloc(&a, 5, 3), 0);
    snprintf(a.model, sizeof(a.model), "some model 1.0");
    a.hash = 0x0123456789abcdefull;
    for (int i = 0; i < 15; i++) {
        a.score[i] = (float)i / 14.0f * 0.999f + 1e-7f * (float)i;
        a.keep_full[i] = (uint8_t)(i % 4 == 1);
    }
    a.score[0] = 0.0f;
    a.score[14] = 1.0f;
    char path[256];
    tmp_path(path, sizeof(path), "rt.toml");
    ks_diag d;
    ck_assert_int_eq(kv_head_profile_save(&a, path, &d), 0);
    ck_assert_msg(kv_head_profile_load(path, &b, &d) == 0, "%s", d.msg);
    ck_assert_str_eq(b.model, a.model);
    ck_assert_int_eq(b.n_layer, 5);
    ck_assert_int_eq(b.n_head_kv, 3);
    ck_assert(b.hash == a.hash);
    ck_assert(memcmp(a.score, b.score, 15 * sizeof(float)) == 0);
    ck_assert(memcmp(a.keep_full, b.keep_full, 15) == 0);
    ck_assert_int_eq(kv_head_profile_check_shape(&b, 5, 3, &d), 0);
    ck_assert_int_eq(kv_head_profile_check_shape(&b, 4, 3, &d), KS_ERR_INVALID);
    ck_assert_str_eq(d.key, "n_layer");
    ck_assert_int_eq(kv_head_profile_check_shape(&b, 5, 2, &d), KS_ERR_INVALID);
    ck_assert_str_eq(d.key, "n_head_kv");
    kv_head_profile_free(&a);
    kv_head_profile_free(&b);
    unlink(path);
}
END_TEST

#define GOOD_HEAD "model = \"m\"\nn_layer = 2\nn_head_kv = 1\nhash = \"00000000000000ff\"\n"

START_TEST(test_bad_files)
{
    static const struct {
        const char *text, *field;
    } cases[] = {
        {GOOD_HEAD "scores = [0.1, 0.2]\n", "keep_full"},                     /* missing */
        {GOOD_HEAD "keep_full = [0, 1]\n", "scores"},                         /* missing */
        {GOOD_HEAD "scores = [0.1]\nkeep_full = [0, 1]\n", "scores"},         /* length */
        {GOOD_HEAD "scores = [0.1, 1.5]\nkeep_full = [0, 1]\n", "scores"},    /* range */
        {GOOD_HEAD "scores = [0.1, -0.5]\nkeep_full = [0, 1]\n", "scores"},   /* range */
        {GOOD_HEAD "scores = [0.1, 0.2]\nkeep_full = [0, 2]\n", "keep_full"}, /* range */
        {GOOD_HEAD "scores = [0.1, x]\nkeep_full = [0, 1]\n", "scores"},      /* malformed */
        {GOOD_HEAD "scores = [0.1, 0.2\nkeep_full = [0, 1]\n", "scores"},     /* unterminated */
        {GOOD_HEAD "scores = [0.1, 0.2]\nkeep_full = [0, 1]\nn_layer = 2\n", "n_layer"},
        {"model = \"m\"\nn_layer = 0\n", "n_layer"},
        {"model = \"m\"\nn_layer = 2.5\n", "n_layer"},
        {"model = \"m\"\nn_layer = 2\nn_head_kv = 1\nhash = \"xyz\"\n", "hash"},
        {"model = m\n", "model"},
        {"model = \"m\nn_layer = 2\n", "model"},
        {"model = \"m\" trailing\n", "model"},
        {"n_layer = 2\nn_head_kv = 1\nhash = \"00000000000000ff\"\nscores = [0, 0]\n"
         "keep_full = [0, 0]\n",
         "model"},
        {"model = \"m\"\nn_layer = 64\nn_head_kv = 128\nhash = \"00000000000000ff\"\n"
         "scores = []\nkeep_full = []\n",
         "n_head_kv"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kv_head_profile p;
        ks_diag d;
        int rc = kv_head_profile_parse(cases[i].text, strlen(cases[i].text), &p, &d);
        ck_assert_msg(rc < 0, "case %zu accepted", i);
        ck_assert_msg(strcmp(d.key, cases[i].field) == 0 && strstr(d.msg, cases[i].field),
                      "case %zu: want field %s, got key '%s' msg '%s'", i, cases[i].field, d.key,
                      d.msg);
        ck_assert_ptr_null(p.score);
    }
    /* unknown keys and NUL bytes name the line */
    kv_head_profile p;
    ks_diag d;
    ck_assert_int_lt(kv_head_profile_parse("colour = 3\n", 11, &p, &d), 0);
    ck_assert_msg(strstr(d.msg, "line 1") && strstr(d.msg, "colour"), "%s", d.msg);
    ck_assert_int_lt(kv_head_profile_parse("model = \"a\0\"\n", 13, &p, &d), 0);
    ck_assert_msg(strstr(d.msg, "NUL") != NULL, "%s", d.msg);
    /* a good file with comments, CRLF and blank lines is accepted */
    const char *ok = "# c\r\n" GOOD_HEAD "\nscores = [0.25, 1] # x\nkeep_full = [1, 0]\n";
    ck_assert_msg(kv_head_profile_parse(ok, strlen(ok), &p, &d) == 0, "%s", d.msg);
    ck_assert(p.score[0] == 0.25f && p.keep_full[0] == 1 && p.keep_full[1] == 0);
    kv_head_profile_free(&p);
    /* a missing file names the path */
    ck_assert_int_lt(kv_head_profile_load("/nonexistent/heads.toml", &p, &d), 0);
    ck_assert_msg(strstr(d.msg, "/nonexistent/heads.toml") != NULL, "%s", d.msg);
}
END_TEST

static long long hy_resolved(const kv_policy_config *pc, int32_t ctx, const char *key)
{
    const kv_policy_desc *d = kv_policy_desc_find("hybrid");
    kv_policy_params p;
    kv_model_info mi = {.n_ctx_train = ctx, .n_layer = 4, .n_head_kv = 2, .head_dim = 32};
    kv_policy_params_resolve(pc, d, &mi, p.bytes);
    char buf[64];
    kv_param_format(p.bytes, kv_param_find(kv_policy_desc_index(d), key), buf, sizeof(buf));
    return atoll(buf);
}

START_TEST(test_hybrid_params)
{
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    ks_diag d;
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), 0); /* profile "none" is valid */
    /* n_sink = C / 32, window = C / 16 + 4; the retrieval heads' window C / 2, chunk C / 4,
     * blocks C / 32 (a power of two in 8..128) and top_k 2C / block_tokens, by hand */
    ck_assert_int_eq(hy_resolved(&pc, 512, "n_sink"), 16);
    ck_assert_int_eq(hy_resolved(&pc, 512, "window"), 36);
    ck_assert_int_eq(hy_resolved(&pc, 512, "retrieval_window"), 256);
    ck_assert_int_eq(hy_resolved(&pc, 512, "chunk"), 128);
    ck_assert_int_eq(hy_resolved(&pc, 512, "block_tokens"), 16);
    ck_assert_int_eq(hy_resolved(&pc, 512, "top_k"), 64);
    ck_assert_int_eq(hy_resolved(&pc, 4096, "n_sink"), 128);
    ck_assert_int_eq(hy_resolved(&pc, 4096, "window"), 260);
    ck_assert_int_eq(hy_resolved(&pc, 4096, "block_tokens"), 128);
    ck_assert_int_eq(hy_resolved(&pc, 4096, "top_k"), 64);
    pseti(&pc, "hybrid", "block_tokens", 32);
    ck_assert_int_eq(hy_resolved(&pc, 512, "top_k"), 32); /* follows the given block size */
    pseti(&pc, "hybrid", "n_sink", 4);
    ck_assert_int_eq(hy_resolved(&pc, 512, "n_sink"), 4);
    /* the retrieval heads' parameters: out of range or not a power of two, named */
    pseti(&pc, "hybrid", "block_tokens", 24);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.block_tokens") && strstr(d.msg, "power of two"),
                  "%s", d.msg);
    pseti(&pc, "hybrid", "block_tokens", 4);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.block_tokens") != NULL, "%s", d.msg);
    pseti(&pc, "hybrid", "block_tokens", 32);
    static const char *const positive[] = {"top_k", "retrieval_window", "chunk", "ram_mb"};
    for (int i = 0; i < 4; i++) {
        char key[64];
        pseti(&pc, "hybrid", positive[i], 0);
        ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
        snprintf(key, sizeof(key), "kvcache.hybrid.%s", positive[i]);
        ck_assert_msg(strstr(d.msg, key) != NULL, "%s: %s", key, d.msg);
        pseti(&pc, "hybrid", positive[i], 64);
    }
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), 0);
    /* out of range: named */
    pseti(&pc, "hybrid", "window", 0);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.window") != NULL, "%s", d.msg);
    pseti(&pc, "hybrid", "window", 10);
    pseti(&pc, "hybrid", "n_sink", -1);
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.n_sink") != NULL, "%s", d.msg);
    pseti(&pc, "hybrid", "n_sink", 4);
    /* a profile that does not parse is refused when the config is validated, naming the
     * profile key and the field inside the file */
    char path[256];
    tmp_path(path, sizeof(path), "bad.toml");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(GOOD_HEAD "scores = [0.1, 7]\nkeep_full = [0, 1]\n", f);
    fclose(f);
    pset(&pc, "hybrid", "profile", path);
    ck_assert_int_lt(kv_policy_config_validate(&pc, &d), 0);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.profile") && strstr(d.msg, "scores"), "%s", d.msg);
    pset(&pc, "hybrid", "profile", "/nonexistent/heads.toml");
    ck_assert_int_lt(kv_policy_config_validate(&pc, &d), 0);
    ck_assert_msg(strstr(d.msg, "kvcache.hybrid.profile") != NULL, "%s", d.msg);
    unlink(path);
}
END_TEST

static Suite *hp_suite(void)
{
    Suite *s = suite_create("head_profile");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_hybrid_params);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(hp_suite(), true);
}

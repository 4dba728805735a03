/* test_config.c - server configuration: defaults, the shipped configs (configs/NAME.toml),
 * overrides, environment, policy names, and FILE:LINE: key: reason for every kind of bad value. */
#include <check.h>

#include "check_main.h"
#include "policy_params.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"

static int load(const char *text, cfg *c, ks_diag *d)
{
    cfg_defaults(c);
    return cfg_load_string(text, strlen(text), "c.toml", c, d);
}

/* [server] ui: on by default only on loopback; an explicit boolean wins; not a string. */
START_TEST(test_ui_switch)
{
    cfg c;
    ks_diag d;
    ck_assert_int_eq(load("", &c, &d), 0);
    ck_assert_int_eq(c.server.ui, -1);
    ck_assert(cfg_ui_enabled(&c)); /* 127.0.0.1 */
    ck_assert_int_eq(load("[server]\nhost = \"0.0.0.0\"\n", &c, &d), 0);
    ck_assert(!cfg_ui_enabled(&c));
    ck_assert_int_eq(load("[server]\nhost = \"::1\"\n", &c, &d), 0);
    ck_assert(cfg_ui_enabled(&c));
    ck_assert_int_eq(load("[server]\nhost = \"0.0.0.0\"\nui = true\n", &c, &d), 0);
    ck_assert(cfg_ui_enabled(&c));
    ck_assert_int_eq(load("[server]\nui = false\n", &c, &d), 0);
    ck_assert(!cfg_ui_enabled(&c));
    ck_assert_int_eq(load("[server]\nui = \"yes\"\n", &c, &d), KS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(d.msg, "c.toml:2: server.ui: expected a boolean"));
}
END_TEST

START_TEST(test_defaults)
{
    cfg c;
    cfg_defaults(&c);
    ks_diag d;
    ck_assert_int_eq(cfg_validate(&c, &d), 0);
    ck_assert_str_eq(c.server.host, "127.0.0.1");
    ck_assert_int_eq(c.server.port, 8080);
    ck_assert_int_eq(c.server.threads, (int)sysconf(_SC_NPROCESSORS_ONLN));
    ck_assert_int_eq(c.server.max_body_bytes, 1 << 20);
    ck_assert_int_eq(c.server.max_header_bytes, 16384);
    ck_assert_int_eq(c.server.request_timeout_s, 600);
    ck_assert_int_eq(c.server.max_queue, 64);
    ck_assert_str_eq(c.server.api_key, "");
    ck_assert_int_eq(c.server.shutdown_grace_s, 30);
    ck_assert_int_eq(c.model.ctx, 4096);
    ck_assert_str_eq(c.model.chat_template, "auto");
    ck_assert_int_eq(cfg_model_threads(&c), c.server.threads);
    ck_assert_int_eq(cfg_max_prompt_tokens(&c), 4096);
    ck_assert_int_eq(c.kvcache.memory_mb, 1024);
    ck_assert_int_eq(c.kvcache.block_tokens, 64);
    ck_assert_int_eq(c.kvcache.dtype, CFG_KV_F16);
    ck_assert(c.kvcache.allow_request_override);
    const kv_policy_config *p = &c.kvcache.policy;
    ck_assert_int_eq(p->kind, 0);
    ck_assert_str_eq(kv_policy_kind_name(p->kind), "full");
    static const char *const defaults[][3] = {
        {"sink_window", "n_sink", "4"},
        {"sink_window", "window", "4092"},
        {"sink_window", "positions", "compact"},
        {"snapkv", "budget", "1024"},
        {"snapkv", "window", "8"},
        {"snapkv", "kernel", "9"},
        {"snapkv", "pooling", "max"},
        {"snapkv", "reduce", "mean"},
        {"snapkv", "interval", "0"},
        {"pyramid", "budget", "1024"},
        {"pyramid", "beta", "20"},
        {"pyramid", "budget_fraction", "0"},
        {"h2o", "heavy", "512"},
        {"h2o", "budget", "1024"},
        {"sink_window", "budget", "4096"},
        {"snapkv", "compress_at", "first_token"},
        {"pyramid", "compress_at", "first_token"},
        {"h2o", "recent", "512"},
        {"retrieval", "block_tokens", "64"},
        {"retrieval", "representatives", "4"},
        {"retrieval", "top_k", "8"},
        {"retrieval", "n_sink", "4"},
        {"retrieval", "window", "512"},
        {"retrieval", "dense_layers", "2"},
        {"retrieval", "chunk", "512"},
        {"retrieval", "ram_mb", "512"},
        {"retrieval", "landmark", "mean"},
        {"retrieval", "selection", "head"},
        {"retrieval", "positions", "window"},
        {"retrieval", "eviction", "lru"},
        {"retrieval", "spill_dir", "/tmp/kvserve-spill"},
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(defaults); i++)
        ck_assert_msg(strcmp(pget(p, defaults[i][0], defaults[i][1]), defaults[i][2]) == 0,
                      "%s.%s = %s", defaults[i][0], defaults[i][1],
                      pget(p, defaults[i][0], defaults[i][1]));
    ck_assert_int_eq(c.limits.default_max_tokens, 256);
    ck_assert_int_eq(c.limits.max_tokens, 4096);
    ck_assert_int_eq(c.limits.max_concurrent, 16);
    /* an empty document changes nothing */
    cfg e;
    ck_assert_int_eq(load("# nothing\n", &e, &d), 0);
    ck_assert_int_eq(memcmp(&e, &c, sizeof(c)), 0);
}
END_TEST

START_TEST(test_overrides)
{
    cfg c;
    ks_diag d;
    int rc = load("[server]\n"
                  "host = \"0.0.0.0\"\n"
                  "port = 9000\n"
                  "threads = 3\n"
                  "api_key = 'sk-test'\n"
                  "[model]\n"
                  "path = \"/m/x.gguf\"\n"
                  "ctx = 8192\n"
                  "threads = 2\n"
                  "chat_template = \"llama3\"\n"
                  "[kvcache]\n"
                  "dtype = \"f32\"\n"
                  "policy = \"pyramid\"\n"
                  "allow_request_override = false\n"
                  "pyramid.budget_fraction = 1\n"
                  "pyramid.pooling = \"avg\"\n"
                  "[kvcache.retrieval]\n"
                  "landmark = \"bounds\"\n"
                  "selection = \"layer\"\n"
                  "positions = \"original\"\n"
                  "eviction = \"score_lru\"\n"
                  "ram_mb = 8000000000\n"
                  "[limits]\n"
                  "max_prompt_tokens = 1000\n",
                  &c, &d);
    ck_assert_msg(rc == 0, "%s", d.msg);
    ck_assert_str_eq(c.server.host, "0.0.0.0");
    ck_assert_int_eq(c.server.port, 9000);
    ck_assert_str_eq(c.server.api_key, "sk-test");
    ck_assert_str_eq(c.model.path, "/m/x.gguf");
    ck_assert_int_eq(c.model.ctx, 8192);
    ck_assert_int_eq(cfg_model_threads(&c), 2);
    ck_assert_str_eq(c.model.chat_template, "llama3");
    ck_assert_int_eq(c.kvcache.dtype, CFG_KV_F32);
    ck_assert_str_eq(kv_policy_kind_name(c.kvcache.policy.kind), "pyramid");
    ck_assert(!c.kvcache.allow_request_override);
    const kv_policy_config *pc = &c.kvcache.policy;
    ck_assert_str_eq(pget(pc, "pyramid", "budget_fraction"), "1");
    ck_assert_str_eq(pget(pc, "pyramid", "pooling"), "avg");
    ck_assert_str_eq(pget(pc, "retrieval", "landmark"), "bounds");
    ck_assert_str_eq(pget(pc, "retrieval", "selection"), "layer");
    ck_assert_str_eq(pget(pc, "retrieval", "positions"), "original");
    ck_assert_str_eq(pget(pc, "retrieval", "eviction"), "score_lru");
    ck_assert_str_eq(pget(pc, "retrieval", "ram_mb"), "8000000000");
    ck_assert_int_eq(cfg_max_prompt_tokens(&c), 1000);
    /* untouched keys keep their defaults */
    ck_assert_int_eq(c.server.max_queue, 64);
    ck_assert_str_eq(pget(&c.kvcache.policy, "pyramid", "budget"), "1024");
}
END_TEST

START_TEST(test_shipped_configs)
{
    const char *src = getenv("KVSERVE_SRC");
    ck_assert_ptr_nonnull(src);
    const char *names[] = {"default", "streaming", "pyramid", "retrieval"};
    const char *kinds[] = {"full", "sink_window", "pyramid", "retrieval"};
    for (int i = 0; i < 4; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/configs/%s.toml", src, names[i]);
        cfg c, def;
        ks_diag d;
        cfg_defaults(&c);
        cfg_defaults(&def);
        ck_assert_msg(cfg_load_file(path, &c, &d) == 0, "%s", d.msg);
        ck_assert_str_eq(kv_policy_kind_name(c.kvcache.policy.kind), kinds[i]);
        if (i == 0) { /* default.toml documents the defaults: loading it changes no value
                       * and pins no derived parameter (those lines are comments) */
            for (int32_t k = 0; k < kv_policy_count(); k++) {
                const kv_policy_desc *pd = kv_policy_desc_at(k);
                for (const kv_param_rule *r = pd->rules; r && r->key; r++)
                    ck_assert_msg(!kv_param_was_set(pd, c.kvcache.policy.set[k], r->key),
                                  "default.toml pins %s.%s", pd->name, r->key);
            }
            memset(c.kvcache.policy.set, 0, sizeof(c.kvcache.policy.set));
            ck_assert_int_eq(memcmp(&c, &def, sizeof(c)), 0);
        }
    }
    cfg c;
    ks_diag d;
    cfg_defaults(&c);
    ck_assert_int_eq(cfg_load_file("/nonexistent/k.toml", &c, &d), KS_ERR_IO);
}
END_TEST

typedef struct bad_case {
    const char *text;
    int line;
    const char *key;
    const char *fragment;
} bad_case;

static const bad_case g_bad[] = {
    {"[server]\nprot = 1\n", 2, "server.prot", "unknown key"},
    {"\n[srv]\nport = 1\n", 2, "srv", "unknown table"},
    {"[kvcache.foo]\nx = 1\n", 1, "kvcache.foo", "unknown table"},
    {"top = 1\n", 1, "top", "unknown key"},
    {"[server]\nport = \"80\"\n", 2, "server.port", "expected an integer, got string"},
    {"[model]\nctx = 4096.0\n", 2, "model.ctx", "expected an integer, got float"},
    {"[kvcache]\nallow_request_override = 1\n", 2, "kvcache.allow_request_override",
     "expected a boolean, got integer"},
    {"[model]\npath = 5\n", 2, "model.path", "expected a string"},
    {"[kvcache]\nsnapkv = 3\n", 2, "kvcache.snapkv", "expected a table, got integer"},
    {"[[server]]\nport = 1\n", 1, "server", "expected a table, got array"},
    {"[server.port]\n", 1, "server.port", "expected an integer, got table"},
    {"[server]\nport = 70000\n", 2, "server.port", "70000 is out of range (1..65535)"},
    {"server.port = 0\n", 1, "server.port", "out of range"},
    {"[server]\nthreads = 99999999999\n", 2, "server.threads", "out of range"},
    {"[server]\nthreads = 0\n", 2, "server.threads", "out of range"},
    {"[kvcache]\nblock_tokens = 48\n", 2, "kvcache.block_tokens", "power of two"},
    {"[kvcache]\nmemory_mb = 0\n", 2, "kvcache.memory_mb", "out of range"},
    {"[kvcache]\npolicy = \"lru\"\n", 2, "kvcache.policy", "expected one of \"full\""},
    {"[kvcache]\ndtype = \"q8_1\"\n", 2, "kvcache.dtype", "unknown value"},
    {"[kvcache]\nk_dtype = \"kivi3\"\n", 2, "kvcache.k_dtype", "unknown value"},
    {"[kvcache]\nv_dtype = \"q4_k\"\n", 2, "kvcache.v_dtype", "unknown value"},
    {"[kvcache]\nkv_residual = -1\n", 2, "kvcache.kv_residual", "out of range (0..65536)"},
    {"[kvcache]\nkv_residual = 65537\n", 2, "kvcache.kv_residual", "out of range"},
    {"[kvcache]\nk_dtype = \"kivi4\"\npolicy = \"h2o\"\n", 3, "kvcache.policy",
     "policy \"full\" only"},
    {"[kvcache.snapkv]\nkernel = 6\n", 2, "kvcache.snapkv.kernel", "must be odd"},
    {"[kvcache.snapkv]\nbudget = 64\nwindow = 65\n", 3, "kvcache.snapkv.window",
     "out of range (1..64)"},
    {"\n[kvcache.snapkv]\nbudget = 4\n", 2, "kvcache.snapkv.window", "out of range"},
    {"[kvcache.pyramid]\nbudget_fraction = 1.5\n", 2, "kvcache.pyramid.budget_fraction",
     "out of range"},
    {"[kvcache.pyramid]\nbeta = 0\n", 2, "kvcache.pyramid.beta", "out of range"},
    {"[kvcache.sink_window]\npositions = \"window\"\n", 2, "kvcache.sink_window.positions",
     "\"original\" or \"compact\""},
    {"[kvcache.sink_window]\nwindow = 0\n", 2, "kvcache.sink_window.window", "out of range"},
    {"[kvcache.retrieval]\nrepresentatives = 100\n", 2, "kvcache.retrieval.representatives",
     "out of range (1..64)"},
    {"[kvcache.retrieval]\nlandmark = \"median\"\n", 2, "kvcache.retrieval.landmark",
     "\"representative\""},
    {"[kvcache.retrieval]\nspill_dir = \"\"\n", 2, "kvcache.retrieval.spill_dir", "empty"},
    {"[kvcache.h2o]\nrecent = -1\n", 2, "kvcache.h2o.recent", "out of range"},
    {"[model]\nchat_template = \"foo\"\n", 2, "model.chat_template", "unknown template"},
    {"[limits]\nmax_tokens = 100\ndefault_max_tokens = 200\n", 3, "limits.default_max_tokens",
     "out of range (1..100)"},
    {"[model]\nctx = 100\n[limits]\nmax_prompt_tokens = 200\n", 4, "limits.max_prompt_tokens",
     "out of range"},
    {"[server]\nport = \n", 2, "server.port", "expected a value"},
    {"[server]\nhost = \"a\"\nhost = \"b\"\n", 3, "server.host", "duplicate key"},
};

START_TEST(test_bad_values)
{
    const bad_case *b = &g_bad[_i];
    cfg c;
    ks_diag d;
    int rc = load(b->text, &c, &d);
    ck_assert_msg(rc < 0, "case %d accepted", _i);
    ck_assert_msg(d.line == b->line, "case %d: line %d want %d: %s", _i, d.line, b->line, d.msg);
    ck_assert_msg(strcmp(d.key, b->key) == 0, "case %d: key %s: %s", _i, d.key, d.msg);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "c.toml:%d: %s: ", b->line, b->key);
    ck_assert_msg(strncmp(d.msg, prefix, strlen(prefix)) == 0, "case %d: %s", _i, d.msg);
    ck_assert_msg(strstr(d.msg, b->fragment) != NULL, "case %d: '%s' lacks '%s'", _i, d.msg,
                  b->fragment);
}
END_TEST

START_TEST(test_long_string)
{
    char text[600];
    char host[400];
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = 0;
    snprintf(text, sizeof(text), "[server]\nhost = \"%s\"\n", host);
    cfg c;
    ks_diag d;
    ck_assert_int_eq(load(text, &c, &d), KS_ERR_RANGE);
    ck_assert(strstr(d.msg, "c.toml:2: server.host: string too long") == d.msg);
    ck_assert_int_lt(load("[model]\npath = \"a\\u0000b\"\n", &c, &d), 0);
    ck_assert(strstr(d.msg, "NUL") != NULL);
}
END_TEST

START_TEST(test_env)
{
    cfg c;
    ks_diag d;
    ck_assert_int_eq(load("[server]\napi_key = \"file\"\n", &c, &d), 0);
    unsetenv("KVSERVE_API_KEY");
    ck_assert_int_eq(cfg_apply_env(&c, &d), 0);
    ck_assert_str_eq(c.server.api_key, "file");
    setenv("KVSERVE_API_KEY", "from-env", 1);
    ck_assert_int_eq(cfg_apply_env(&c, &d), 0);
    ck_assert_str_eq(c.server.api_key, "from-env");
    char big[400];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    setenv("KVSERVE_API_KEY", big, 1);
    ck_assert_int_eq(cfg_apply_env(&c, &d), KS_ERR_RANGE);
    ck_assert_str_eq(c.server.api_key, "from-env");
    unsetenv("KVSERVE_API_KEY");
}
END_TEST

START_TEST(test_policy_names)
{
    const char *names[] = {"full", "sink_window", "snapkv", "pyramid",
                           "h2o",  "retrieval",   "hybrid"};
    ck_assert_int_eq(kv_policy_count(), 7);
    for (int i = 0; i < kv_policy_count(); i++) {
        ck_assert_int_eq(kv_policy_kind_from_name(names[i]), i);
        ck_assert_str_eq(kv_policy_kind_name(i), names[i]);
        ck_assert_str_eq(kv_policy_desc_at(i)->name, names[i]);
        ck_assert_ptr_eq(kv_policy_desc_find(names[i]), kv_policy_desc_at(i));
    }
    ck_assert_int_eq(kv_policy_kind_from_name("Full"), KS_ERR_INVALID);
    ck_assert_int_eq(kv_policy_kind_from_name(NULL), KS_ERR_INVALID);
    ck_assert_str_eq(kv_policy_kind_name(kv_policy_count()), "?");
    ck_assert_ptr_null(kv_policy_desc_at(-1));
    ck_assert_int_eq(kv_pos_mode_from_name("compact"), KV_POS_COMPACT);
    ck_assert_int_eq(kv_name_index(kv_pooling_names, "avg"), KV_POOL_AVG);
    ck_assert_int_eq(kv_name_index(kv_reduce_names, "max"), KV_REDUCE_MAX);
    ck_assert_int_eq(kv_name_index(kv_landmark_names, "representative"),
                     KV_LANDMARK_REPRESENTATIVE);
    ck_assert_int_eq(kv_name_index(kv_selection_names, "layer"), KV_SELECT_LAYER);
    ck_assert_int_eq(kv_name_index(kv_eviction_names, "score_lru"), KV_EVICT_SCORE_LRU);
    ck_assert_int_eq(cfg_kv_dtype_from_name("f32"), CFG_KV_F32);
    ck_assert_str_eq(cfg_kv_dtype_name(CFG_KV_F16), "f16");
    /* every config KV type name maps to the kvtype.h type of the same name */
    for (int t = 0; t < CFG_KV_N; t++) {
        ks_dtype k;
        ck_assert_int_eq(ks_dtype_from_name(cfg_kv_dtype_name((cfg_kv_dtype)t), &k), 0);
        ck_assert_int_eq(k, cfg_kv_dtype_ks((cfg_kv_dtype)t));
    }
    /* k_dtype / v_dtype default to dtype and override it one at a time */
    {
        cfg kc;
        cfg_defaults(&kc);
        ks_diag kd;
        const char *t = "[kvcache]\ndtype = \"q4_0\"\nv_dtype = \"q8_0\"\n";
        ck_assert_int_eq(cfg_load_string(t, strlen(t), NULL, &kc, &kd), 0);
        ck_assert_int_eq(cfg_kv_k_dtype(&kc), KS_DTYPE_Q4_0);
        ck_assert_int_eq(cfg_kv_v_dtype(&kc), KS_DTYPE_Q8_0);
        t = "[kvcache]\nk_dtype = \"iq4_nl\"\n";
        cfg_defaults(&kc);
        ck_assert_int_eq(cfg_load_string(t, strlen(t), NULL, &kc, &kd), 0);
        ck_assert_int_eq(cfg_kv_k_dtype(&kc), KS_DTYPE_IQ4_NL);
        ck_assert_int_eq(cfg_kv_v_dtype(&kc), KS_DTYPE_F16);
    }

    /* the validator is usable on its own (per-request overrides) */
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    ks_diag d;
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), 0);
    pset(&pc, "retrieval", "block_tokens", "2048");
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), KS_ERR_RANGE);
    ck_assert_str_eq(d.key, "kvcache.retrieval.block_tokens");
    ck_assert(strstr(d.msg, "kvcache.retrieval.block_tokens: ") == d.msg);
    kv_policy_config_defaults(&pc);
    pset(&pc, "pyramid", "budget_fraction", "0.25");
    pset(&pc, "h2o", "heavy", "0");
    ck_assert_int_eq(kv_policy_config_validate(&pc, &d), 0);
    pc.kind = 99;
    ck_assert_int_lt(kv_policy_config_validate(&pc, &d), 0);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_ui_switch);
    tcase_add_test(tc, test_overrides);
    tcase_add_test(tc, test_shipped_configs);
    tcase_add_loop_test(tc, test_bad_values, 0, (int)(sizeof(g_bad) / sizeof(g_bad[0])));
    tcase_add_test(tc, test_long_string);
    tcase_add_test(tc, test_env);
    tcase_add_test(tc, test_policy_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(config_suite(), true);
}

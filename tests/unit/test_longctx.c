/* test_longctx.c - long-context behaviour on the trained model (../shared/models/kjv-tiny):
 * `retrieval` with only its name finds a pass key at 16x the trained context, and `hybrid`
 * keeps the whole context in the heads its profile marks and sinks + window in the others.
 *
 * References: the pass key itself (the model must print the 5 digits hidden in the prompt,
 * in the exact wording of the model's README; full attention gets 0/12 at this length), and
 * for hybrid the table sizes worked out from n_sink, window and the profile by hand, and the
 * `full` policy's logits (a profile marking every head must reproduce them bit for bit).
 */
#include <check.h>

#include "check_main.h"
#include "policy_params.h"
#include "shared_dir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvserve/engine.h"
#include "kvserve/head_profile.h"

static char g_model[1024], g_filler[1024], g_dir[256], g_profile[1024];

static void setup(void)
{
    const char *s = ks_test_shared_dir();
    snprintf(g_model, sizeof(g_model), "%s/models/kjv-tiny/kjv-tiny-f16.gguf", s);
    snprintf(g_filler, sizeof(g_filler), "%s/models/kjv-tiny/heldout-public.txt", s);
    /* `kvserve profile-heads --model kjv-tiny-f16.gguf` output, kept as a fuzz seed */
    const char *src = getenv("KVSERVE_SRC"); /* meson's test environment */
    snprintf(g_profile, sizeof(g_profile), "%s/tests/fuzz/corpus/head_profile/kjv-tiny.toml",
             src ? src : ".");
    snprintf(g_dir, sizeof(g_dir), "/tmp/kvserve-test-longctx-%d", (int)getpid());
    mkdir(g_dir, 0700);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Prompt of about n_target tokens: filler sentences from byte offset `start` of the held-out
 * text, the needle at `depth`, the question. Returns a malloc'd string. */
static char *passkey_prompt(const char *text, size_t len, size_t start, int n_target, double depth,
                            int key)
{
    size_t want = (size_t)n_target * 4; /* ~4 bytes per token on this text */
    char *out = malloc(want + 256), *w = out;
    size_t at = (size_t)(depth * (double)want), pos = start % len, done = 0;
    bool placed = false;
    while (done < want) {
        if (!placed && done >= at) {
            w += sprintf(w, "The pass key is %d. Remember it. %d is the pass key. ", key, key);
            placed = true;
        }
        char c = text[pos];
        pos = (pos + 1) % len;
        if (c == '\n' || c == '\r') c = ' ';
        if (c == ' ' && w > out && w[-1] == ' ') continue;
        *w++ = c;
        done++;
    }
    while (w > out && w[-1] == ' ')
        w--;
    w += sprintf(w, " What is the pass key? The pass key is");
    return out;
}

/* Greedy answer of the model under policy pc: the first 5 digits it prints, as an int. */
static int answer(engine *e, const kv_policy_config *pc, const char *prompt, int32_t chunk)
{
    const tok_vocab *v = model_get_vocab(e->m);
    size_t len = strlen(prompt);
    int32_t *toks = malloc((len + 8) * sizeof(int32_t));
    int32_t n = tok_encode(v, prompt, len, true, false, toks, (int32_t)len + 8);
    ck_assert_int_gt(n, 0);
    int32_t nv = model_get_hparams(e->m)->n_vocab;
    float *logits = malloc((size_t)nv * sizeof(float));
    kv_seq *seq;
    ck_assert_int_eq(engine_new_seq(e, pc, &seq), 0);
    for (int32_t i = 0; i < n; i += chunk) {
        int32_t m = KS_MIN(chunk, n - i);
        model_seq_batch b = {.kv = seq,
                             .tokens = toks + i,
                             .n_tokens = m,
                             .logits = i + m == n ? logits : NULL,
                             .prompt_chunk = true,
                             .prompt_last = i + m == n};
        ck_assert_int_eq(model_forward(e->ctx, &b, 1), 0);
    }
    char out[64] = "";
    size_t o = 0;
    for (int g = 0; g < 7; g++) {
        int32_t t = 0;
        for (int32_t j = 1; j < nv; j++)
            if (logits[j] > logits[t]) t = j;
        char piece[32];
        int32_t pl = tok_piece(v, t, false, piece, (int32_t)sizeof(piece));
        for (int32_t j = 0; j < pl && o < sizeof(out) - 1; j++)
            if (piece[j] >= '0' && piece[j] <= '9') out[o++] = piece[j];
        model_seq_batch b = {.kv = seq, .tokens = &t, .n_tokens = 1, .logits = logits};
        ck_assert_int_eq(model_forward(e->ctx, &b, 1), 0);
    }
    kv_seq_destroy(seq);
    free(toks);
    free(logits);
    out[KS_MIN(o, 5)] = 0;
    return atoi(out);
}

/* Asks `policy` by name only (plus a private spill directory and, for hybrid, the head
 * profile: neither is a knob) for each needle in a 7800-token prompt, 16x the trained 512
 * tokens; prompt i is cut from the filler at offset i * offset_step + offset_base. */
static void check_needles_16x(const char *policy, const char *profile, int n, const double *depths,
                              const int *keys, size_t offset_step, size_t offset_base)
{
    engine e;
    engine_params ep = {.model_path = g_model,
                        .n_threads = 1,
                        .n_ctx = 8400,
                        .n_batch = 512,
                        .n_seqs = 1,
                        .k_dtype = KS_DTYPE_F16,
                        .v_dtype = KS_DTYPE_F16};
    ck_assert_int_eq(engine_open(&ep, &e), 0);
    kv_policy_config pc;
    kv_policy_config_defaults(&pc);
    ck_assert_int_eq(kv_policy_config_parse_spec(&pc, policy, NULL), 0);
    if (profile) pset(&pc, policy, "profile", profile);
    pset(&pc, policy, "spill_dir", g_dir);
    const kv_policy_desc *d = kv_policy_desc_find(policy);
    kv_policy_params p;
    kv_model_info mi = {.n_ctx_train = model_get_hparams(e.m)->n_ctx_train};
    kv_policy_params_resolve(&pc, d, &mi, p.bytes);
    int32_t chunk = d->prefill_chunk(p.bytes, 512);
    ck_assert_int_eq(chunk, 128); /* the policy's own chunk: 512 / 4 */
    char *text = NULL;
    size_t len = 0;
    ks_diag dg;
    ck_assert_int_eq(ks_read_file(g_filler, &text, &len, &dg), 0);
    for (int i = 0; i < n; i++) {
        char *prompt = passkey_prompt(text, len, (size_t)i * offset_step + offset_base, 7800,
                                      depths[i], keys[i]);
        int got = answer(&e, &pc, prompt, chunk);
        ck_assert_msg(got == keys[i], "%s, depth %.2f: want %d, got %d", policy, depths[i], keys[i],
                      got);
        free(prompt);
    }
    free(text);
    engine_close(&e);
}

/* {"kv_policy": {"name": "retrieval"}} and nothing else, 16x the trained 512 tokens. Before
 * the defaults derived from the model (block 64, top_k 8, window 512, dense_layers 2,
 * chunk 512: window + chunk past the trained length), these cases fail. */
START_TEST(test_retrieval_needle_16x_defaults)
{
    static const double depths[] = {0.15, 0.5, 0.85};
    static const int keys[] = {52817, 30496, 71163};
    check_needles_16x("retrieval", NULL, 3, depths, keys, 100003, 0);
}
END_TEST

/* {"kv_policy": {"name": "hybrid"}} with the server's head profile and nothing else, 16x the
 * trained length: the retrieval head reads the needle's block at window positions. With
 * every kept head at its original positions (the policy before the retrieval engine) the
 * model got 0/4 here. Two prompts keep it to a few seconds. */
START_TEST(test_hybrid_needle_16x_defaults)
{
    static const double depths[] = {0.3, 0.7};
    static const int keys[] = {46190, 83527};
    check_needles_16x("hybrid", g_profile, 2, depths, keys, 77777, 5);
}
END_TEST

static void write_profile(const char *path, int32_t n_layer, int32_t n_head_kv, const int *full)
{
    kv_head_profile hp;
    ck_assert_int_eq(kv_head_profile_alloc(&hp, n_layer, n_head_kv), 0);
    snprintf(hp.model, sizeof(hp.model), "test");
    for (int32_t i = 0; i < n_layer * n_head_kv; i++) {
        hp.keep_full[i] = (uint8_t)full[i];
        hp.score[i] = full[i] ? 0.5f : 0.01f;
    }
    ks_diag d;
    ck_assert_int_eq(kv_head_profile_save(&hp, path, &d), 0);
    kv_head_profile_free(&hp);
}

/* Streaming heads hold n_sink + window tokens, keep_full heads every token; with every head
 * marked keep_full the logits equal full attention's. */
START_TEST(test_hybrid_tables_and_full_equivalence)
{
    engine e;
    engine_params ep = {.model_path = g_model,
                        .n_threads = 1,
                        .n_ctx = 512,
                        .n_batch = 64,
                        .n_seqs = 1,
                        .k_dtype = KS_DTYPE_F16,
                        .v_dtype = KS_DTYPE_F16};
    ck_assert_int_eq(engine_open(&ep, &e), 0);
    const model_hparams *h = model_get_hparams(e.m);
    ck_assert_int_eq(h->n_layer * h->n_head_kv, 8);
    char prof[300], prof_all[300];
    snprintf(prof, sizeof(prof), "%s/heads.toml", g_dir);
    snprintf(prof_all, sizeof(prof_all), "%s/all.toml", g_dir);
    static const int one[8] = {0, 0, 0, 0, 0, 1, 0, 0}, all[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    write_profile(prof, h->n_layer, h->n_head_kv, one);
    write_profile(prof_all, h->n_layer, h->n_head_kv, all);
    int32_t toks[400];
    for (int32_t i = 0; i < 400; i++)
        toks[i] = 3 + (i * 37) % 4000;
    kv_policy_config pcs[3];
    for (int k = 0; k < 3; k++)
        kv_policy_config_defaults(&pcs[k]);
    ck_assert_int_eq(kv_policy_config_parse_spec(&pcs[1], "hybrid", NULL), 0);
    pset(&pcs[1], "hybrid", "profile", prof);
    pseti(&pcs[1], "hybrid", "n_sink", 4);
    pseti(&pcs[1], "hybrid", "window", 50);
    ck_assert_int_eq(kv_policy_config_parse_spec(&pcs[2], "hybrid", NULL), 0);
    pset(&pcs[2], "hybrid", "profile", prof_all);
    int32_t nv = h->n_vocab;
    float *lg[3];
    for (int k = 0; k < 3; k++) {
        lg[k] = malloc((size_t)nv * sizeof(float));
        kv_seq *seq;
        ck_assert_int_eq(engine_new_seq(&e, &pcs[k], &seq), 0);
        for (int32_t i = 0; i < 400; i += 64) {
            int32_t m = KS_MIN(64, 400 - i);
            model_seq_batch b = {.kv = seq,
                                 .tokens = toks + i,
                                 .n_tokens = m,
                                 .logits = i + m == 400 ? lg[k] : NULL,
                                 .prompt_chunk = true,
                                 .prompt_last = i + m == 400};
            ck_assert_int_eq(model_forward(e.ctx, &b, 1), 0);
        }
        for (int32_t l = 0; l < h->n_layer; l++)
            for (int32_t hh = 0; hh < h->n_head_kv; hh++) {
                int32_t n_tok = kv_seq_table(seq, l, hh)->n_tok;
                bool full = k != 1 || one[l * h->n_head_kv + hh];
                ck_assert_msg(n_tok == (full ? 400 : 4 + 50), "policy %d layer %d head %d: %d", k,
                              l, hh, n_tok);
            }
        kv_seq_destroy(seq);
    }
    ck_assert(memcmp(lg[0], lg[2], (size_t)nv * sizeof(float)) == 0);
    ck_assert(memcmp(lg[0], lg[1], (size_t)nv * sizeof(float)) != 0);
    /* a profile for another shape is refused when the sequence starts */
    static const int six[6] = {0, 1, 0, 0, 0, 0};
    write_profile(prof, 3, 2, six);
    kv_seq *seq;
    ck_assert_int_ne(engine_new_seq(&e, &pcs[1], &seq), 0);
    for (int k = 0; k < 3; k++)
        free(lg[k]);
    engine_close(&e);
}
END_TEST

static Suite *longctx_suite(void)
{
    Suite *s = suite_create("longctx");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_retrieval_needle_16x_defaults);
    tcase_add_test(tc, test_hybrid_tables_and_full_equivalence);
    tcase_add_test(tc, test_hybrid_needle_16x_defaults);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(longctx_suite(), true);
}

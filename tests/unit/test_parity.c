/* test_parity.c - the forward pass against llama.cpp on the random-weight reference models.
 *
 * For every model in shared/models/ref and every prompt in shared/reference/<model>/:
 *  - the logits at the last prompt position match the .bin file within a per-type tolerance
 *    (F32 1e-3 as required; the others are justified in the README from sensitivity.json:
 *    what llama.cpp itself moves under a change of kernels);
 *  - teacher forcing over the 32 reference steps: our argmax equals llama.cpp's token wherever
 *    its top-1 margin is >= 0.05, and lies in its top 5 elsewhere;
 *  - free-running greedy decoding equals llama.cpp's continuation token for token up to the
 *    first step whose margin is < 0.05 (those steps are printed).
 */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/engine.h"

#define MARGIN_MIN 0.05
#define N_STEPS 32

typedef struct parity_model {
    const char *stem;
    double logit_tol; /* max abs diff allowed at the last prompt position */
} parity_model;

static const parity_model MODELS[] = {
    /* With llama.cpp's summation orders emulated, every model but F16 reproduces the .bin
     * to about 1e-4 (most prompts bit for bit); llama-q-f16 paragraph_300 is 0.014 off. */
    {"ref-llama-spm-f32", 1e-3}, {"ref-llama-q-f16", 0.05},  {"ref-llama-q-bf16", 0.05},
    {"ref-llama-q-q8_0", 0.05},  {"ref-llama-q-q4_0", 0.05}, {"ref-llama-q-q4_k_m", 0.05},
    {"ref-qwen2-f16", 0.05},     {"ref-qwen2-q8_0", 0.05},
};

static const char *shared_dir(void)
{
    return ks_test_shared_dir();
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int32_t *json_ids(json_t *arr, int32_t *n)
{
    *n = (int32_t)json_array_size(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int32_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static float *read_bin(const char *path, int32_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *x = malloc(sizeof(float) * (size_t)n);
    size_t r = fread(x, sizeof(float), (size_t)n, f);
    fclose(f);
    if (r != (size_t)n) {
        free(x);
        return NULL;
    }
    return x;
}

static int forward1(engine *e, kv_seq *seq, const int32_t *toks, int32_t n, float *logits,
                    bool prompt)
{
    model_seq_batch b = {.kv = seq,
                         .tokens = toks,
                         .n_tokens = n,
                         .logits = logits,
                         .prompt_chunk = prompt,
                         .prompt_last = prompt};
    return model_forward(e->ctx, &b, 1);
}

typedef struct prompt_result {
    double max_diff;
    int forced_mismatch;  /* steps with margin >= 0.05 where argmax differs */
    int forced_not_top5;  /* low-margin steps whose argmax is outside top 5 */
    int free_equal_until; /* free-running greedy equal for this many steps */
    int free_first_low;   /* first step with margin < 0.05 (N_STEPS if none) */
    int free_mismatch;    /* differing before the first low-margin step */
    double forced_top5;   /* max |logit - llama.cpp's| over each step's top 5, decoding */
    double batch_top5;    /* the same with prompt + continuation fed as one batch */
} prompt_result;

/* Largest difference between our logits and the step's top-5 logits from llama.cpp. */
static double top5_diff(json_t *st, const float *logits)
{
    json_t *top5 = json_object_get(st, "top5");
    double d = 0;
    for (size_t t = 0; t < json_array_size(top5); t++) {
        json_t *e = json_array_get(top5, t);
        int32_t id = (int32_t)json_integer_value(json_array_get(e, 0));
        d = fmax(d, fabs(logits[id] - json_number_value(json_array_get(e, 1))));
    }
    return d;
}

static void check_prompt(engine *e, const char *dir, const char *name, prompt_result *r)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    ck_assert_msg(j != NULL, "cannot read %s: %s", path, jerr.text);
    int32_t n_prompt, n_gen;
    int32_t *prompt = json_ids(json_object_get(j, "prompt_ids"), &n_prompt);
    int32_t *gen = json_ids(json_object_get(j, "generated_ids"), &n_gen);
    json_t *steps = json_object_get(j, "steps");
    ck_assert_int_eq(n_gen, N_STEPS);
    int32_t nv = model_get_hparams(e->m)->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)nv);
    snprintf(path, sizeof(path), "%s/%s.logits.bin", dir, name);
    float *ref = read_bin(path, nv);
    ck_assert_msg(ref != NULL, "cannot read %s", path);

    kv_seq *seq = NULL;
    ck_assert_int_eq(engine_new_seq(e, NULL, &seq), 0);
    ck_assert_int_eq(forward1(e, seq, prompt, n_prompt, logits, true), 0);
    r->max_diff = 0;
    for (int32_t i = 0; i < nv; i++)
        r->max_diff = fmax(r->max_diff, fabs(logits[i] - ref[i]));
    /* teacher forcing */
    r->forced_mismatch = r->forced_not_top5 = 0;
    r->forced_top5 = r->batch_top5 = 0;
    r->free_first_low = N_STEPS;
    for (int k = 0; k < N_STEPS; k++) {
        json_t *st = json_array_get(steps, (size_t)k);
        double margin = json_real_value(json_object_get(st, "margin"));
        int32_t want = (int32_t)json_integer_value(json_object_get(st, "id"));
        int32_t got = argmax(logits, nv);
        r->forced_top5 = fmax(r->forced_top5, top5_diff(st, logits));
        if (margin >= MARGIN_MIN) {
            if (got != want) r->forced_mismatch++;
        } else {
            if (r->free_first_low == N_STEPS) r->free_first_low = k;
            json_t *top5 = json_object_get(st, "top5");
            bool in = false;
            for (size_t t = 0; t < json_array_size(top5); t++)
                in = in || json_integer_value(json_array_get(json_array_get(top5, t), 0)) == got;
            if (!in) r->forced_not_top5++;
        }
        if (k + 1 < N_STEPS) ck_assert_int_eq(forward1(e, seq, &gen[k], 1, logits, false), 0);
    }
    kv_seq_destroy(seq);
    /* the prompt and the continuation as one batch: every row must match the step's top 5 */
    {
        int32_t nt = n_prompt + N_STEPS - 1;
        int32_t *all = malloc(sizeof(int32_t) * (size_t)nt);
        float *rows = malloc(sizeof(float) * (size_t)nv * (size_t)nt);
        memcpy(all, prompt, sizeof(int32_t) * (size_t)n_prompt);
        memcpy(all + n_prompt, gen, sizeof(int32_t) * (N_STEPS - 1));
        ck_assert_int_eq(engine_new_seq(e, NULL, &seq), 0);
        model_seq_batch b = {.kv = seq,
                             .tokens = all,
                             .n_tokens = nt,
                             .logits = rows,
                             .all_logits = true,
                             .prompt_chunk = true,
                             .prompt_last = true};
        ck_assert_int_eq(model_forward(e->ctx, &b, 1), 0);
        for (int k = 0; k < N_STEPS; k++)
            r->batch_top5 = fmax(r->batch_top5, top5_diff(json_array_get(steps, (size_t)k),
                                                          rows + (size_t)(n_prompt - 1 + k) * nv));
        kv_seq_destroy(seq);
        free(all);
        free(rows);
    }
    /* free-running greedy */
    ck_assert_int_eq(engine_new_seq(e, NULL, &seq), 0);
    ck_assert_int_eq(forward1(e, seq, prompt, n_prompt, logits, true), 0);
    r->free_equal_until = N_STEPS;
    r->free_mismatch = 0;
    for (int k = 0; k < N_STEPS; k++) {
        int32_t got = argmax(logits, nv);
        if (got != gen[k]) {
            r->free_equal_until = k;
            if (k < r->free_first_low) r->free_mismatch = 1;
            break;
        }
        if (k + 1 < N_STEPS) ck_assert_int_eq(forward1(e, seq, &got, 1, logits, false), 0);
    }
    kv_seq_destroy(seq);
    free(logits);
    free(ref);
    free(prompt);
    free(gen);
    json_decref(j);
}

START_TEST(test_model_parity)
{
    const parity_model *pm = &MODELS[_i];
    char mpath[1536], dir[1536];
    snprintf(mpath, sizeof(mpath), "%s/models/ref/%s.gguf", shared_dir(), pm->stem);
    snprintf(dir, sizeof(dir), "%s/reference/%s", shared_dir(), pm->stem);
    /* One thread: this test prints the same figures at 1 and 2 threads (the pool splits the
     * work, not the order of a sum), and meson runs the tests side by side, where a second
     * thread mostly spins. */
    engine_params ep = {.model_path = mpath,
                        .n_threads = 1,
                        .n_ctx = 512,
                        .n_batch = 512,
                        .n_seqs = 1,
                        .k_dtype = KS_DTYPE_F16,
                        .v_dtype = KS_DTYPE_F16,
                        .llama_numerics = true};
    engine e;
    ck_assert_int_eq(engine_open(&ep, &e), 0);
    static const char *prompts[] = {"en_sentence",   "code_c",        "numbers",
                                    "unicode_emoji", "paragraph_300", "single_word"};
    int fails = 0;
    for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++) {
        prompt_result r;
        check_prompt(&e, dir, prompts[i], &r);
        bool ok = r.max_diff <= pm->logit_tol && r.forced_mismatch == 0 && r.forced_not_top5 == 0 &&
                  r.free_mismatch == 0;
        printf("%-20s %-14s max|dlogit| %.5f  forced mismatches %d (not-top5 %d)  greedy equal "
               "%2d/32 (first margin<0.05 at step %d)  top5 diff decode %.4f batch %.4f %s\n",
               pm->stem, prompts[i], r.max_diff, r.forced_mismatch, r.forced_not_top5,
               r.free_equal_until, r.free_first_low, r.forced_top5, r.batch_top5,
               ok ? "ok" : "FAIL");
        fflush(stdout);
        fails += !ok;
    }
    engine_close(&e);
    ck_assert_msg(fails == 0, "%s: %d prompts out of tolerance", pm->stem, fails);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("llama.cpp");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_model_parity, 0, (int)(sizeof(MODELS) / sizeof(MODELS[0])));
    suite_add_tcase(s, tc);
    return ks_run_suite(s, false);
}

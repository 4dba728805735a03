/* test_sched_sample.c - the scheduler's sampler glue with constraints (server/sched_sample.c):
 * under a grammar, greedy picks the best token the grammar allows, end-of-generation waits
 * until the grammar can end, logit_bias moves logits, and temperature sampling (which first
 * tries the model's own draw and masks only on rejection) follows the masked softmax,
 * checked with a chi-square test against the distribution computed by hand. */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/sched_sample.h"
#include "server/scheduler.h"

static tok_vocab *g_vocab;
static gram_vocab *g_gv;
static int32_t g_nv;

static void setup(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/kjv-tiny/kjv-tiny-q8_0.gguf", ks_test_shared_dir());
    gguf_file *f = NULL;
    ks_diag d;
    ck_assert_msg(gguf_open(path, &f, &d) == 0, "%s", d.msg);
    ck_assert_msg(tok_vocab_load(f, &g_vocab, &d) == 0, "%s", d.msg);
    gguf_close(f);
    ck_assert_int_eq(gram_vocab_create(g_vocab, &g_gv), 0);
    g_nv = tok_vocab_n_tokens(g_vocab);
}

static void teardown(void)
{
    gram_vocab_destroy(g_gv);
    tok_vocab_free(g_vocab);
}

/* The token whose plain piece is exactly s. */
static int32_t piece_id(const char *s)
{
    for (int32_t t = 0; t < g_nv; t++) {
        char buf[64];
        int32_t n = tok_piece(g_vocab, t, false, buf, sizeof(buf));
        if (n == (int32_t)strlen(s) && !memcmp(buf, s, (size_t)n)) return t;
    }
    ck_abort_msg("no token '%s'", s);
    return -1;
}

static gram *compile(const char *src)
{
    gram *g = NULL;
    ks_diag d;
    ck_assert_msg(gram_compile(src, strlen(src), &g, &d) == 0, "%s", d.msg);
    return g;
}

static void init(sch_sampler *s, float temp, uint64_t seed, const gram *g, const int32_t *bias_ids,
                 const float *bias, int32_t n_bias)
{
    sch_sampling sp;
    sch_sampling_default(&sp);
    sp.temperature = temp;
    sp.seed = seed;
    sp.has_seed = true;
    sp.repeat_last_n = 0;
    sch_constraints c = {
        .grammar = g, .gvocab = g_gv, .bias_ids = bias_ids, .bias = bias, .n_bias = n_bias};
    int32_t prompt[1] = {1};
    ck_assert_int_eq(sch_sampler_init(s, &sp, &c, prompt, 1, g_nv), 0);
}

static int32_t draw(sch_sampler *s, const float *logits)
{
    float *l = malloc((size_t)g_nv * sizeof(float));
    memcpy(l, logits, (size_t)g_nv * sizeof(float));
    sch_event ev = {0};
    int32_t tok = sch_sampler_sample(s, l, g_nv, &ev);
    free(l);
    return tok;
}

START_TEST(test_greedy_bias_and_end)
{
    int32_t one = piece_id("1"), two = piece_id("2"), three = piece_id("3"), a = piece_id("a");
    int32_t eos = tok_eos(g_vocab);
    float *l = malloc((size_t)g_nv * sizeof(float));
    for (int32_t t = 0; t < g_nv; t++)
        l[t] = -5;
    l[one] = 2.0f, l[two] = 1.0f, l[three] = 0.5f, l[a] = 2.5f, l[eos] = 10;
    gram *g = compile("root ::= [0-9]+");
    sch_sampler s;
    init(&s, 0, 1, g, NULL, NULL, 0);
    ck_assert_int_eq(draw(&s, l), one); /* 'a' and EOS rank higher but are not allowed */
    sch_sampler_accept(&s, one);
    ck_assert_int_eq(draw(&s, l), eos); /* now the grammar can end */
    ck_assert(!sch_sampler_grammar_done(&s));
    sch_sampler_deinit(&s);
    int32_t ids[2] = {three, eos};
    float bias[2] = {2.1f, -100.0f};
    init(&s, 0, 1, NULL, ids, bias, 2); /* no grammar: bias alone, 0.5 + 2.1 beats 'a' */
    ck_assert_int_eq(draw(&s, l), three);
    sch_sampler_deinit(&s);
    bias[0] = 1.9f; /* 2.4: 'a' (2.5) wins again; EOS (10 - 100) stays banned */
    init(&s, 0, 1, NULL, ids, bias, 2);
    ck_assert_int_eq(draw(&s, l), a);
    sch_sampler_deinit(&s);
    gram_destroy(g);
    g = compile("root ::= \"12\"");
    init(&s, 0, 1, g, NULL, NULL, 0);
    sch_sampler_accept(&s, one);
    sch_sampler_accept(&s, two);
    ck_assert(sch_sampler_grammar_done(&s));
    sch_sampler_deinit(&s);
    gram_destroy(g);
    free(l);
}
END_TEST

START_TEST(test_temperature_follows_masked_softmax)
{
    const char *digits[3] = {"1", "2", "3"}, *letters[3] = {"a", "b", "c"};
    const float ld[3] = {1.0f, 0.3f, -0.4f}, ll[3] = {1.5f, 0.8f, 0.0f};
    int32_t id[3];
    float *l = malloc((size_t)g_nv * sizeof(float));
    for (int32_t t = 0; t < g_nv; t++)
        l[t] = -INFINITY;
    double z = 0;
    for (int k = 0; k < 3; k++) {
        id[k] = piece_id(digits[k]);
        l[id[k]] = ld[k];
        l[piece_id(letters[k])] = ll[k]; /* most of the mass sits on rejected tokens */
        z += exp(ld[k]);
    }
    gram *g = compile("root ::= [0-9]+");
    sch_sampler s;
    init(&s, 1.0f, 12345, g, NULL, NULL, 0);
    enum { N = 20000 };
    int count[3] = {0};
    for (int i = 0; i < N; i++) {
        int32_t tok = draw(&s, l);
        int k = tok == id[0] ? 0 : tok == id[1] ? 1 : tok == id[2] ? 2 : -1;
        ck_assert_msg(k >= 0, "drew token %d outside the grammar", tok);
        count[k]++;
    }
    double chi2 = 0;
    for (int k = 0; k < 3; k++) {
        double e = N * exp(ld[k]) / z;
        chi2 += (count[k] - e) * (count[k] - e) / e;
    }
    ck_assert_msg(chi2 < 13.8, "chi2 %.2f (2 dof, p = 0.001): %d %d %d", chi2, count[0], count[1],
                  count[2]);
    sch_sampler_deinit(&s);
    gram_destroy(g);
    free(l);
}
END_TEST

START_TEST(test_bad_constraints)
{
    sch_sampler s;
    sch_sampling sp;
    sch_sampling_default(&sp);
    int32_t ids[1] = {g_nv}, prompt[1] = {1};
    float bias[1] = {1};
    sch_constraints c = {.bias_ids = ids, .bias = bias, .n_bias = 1};
    ck_assert_int_eq(sch_sampler_init(&s, &sp, &c, prompt, 1, g_nv), KS_ERR_INVALID);
    gram *g = compile("root ::= \"x\"");
    sch_constraints c2 = {.grammar = g}; /* a grammar needs the token trie */
    ck_assert_int_eq(sch_sampler_init(&s, &sp, &c2, prompt, 1, g_nv), KS_ERR_INVALID);
    gram_destroy(g);
}
END_TEST

static Suite *sched_sample_suite(void)
{
    Suite *s = suite_create("sched_sample");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_greedy_bias_and_end);
    tcase_add_test(tc, test_temperature_follows_masked_softmax);
    tcase_add_test(tc, test_bad_constraints);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(sched_sample_suite(), true);
}

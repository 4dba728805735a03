/* test_grammar.c - GBNF grammars: the parser (valid grammars, errors with their line and
 * column), the matcher (strings accepted and rejected, UTF-8 split across calls), and the
 * token mask against independent references: a per-token check that does not use the trie,
 * a digit-only mask computed straight from the token pieces, and random generation under a
 * JSON grammar whose every output must parse with jansson. */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/grammar.h"
#include "kvserve/sampler.h"

static const char *shared_dir(void)
{
    return ks_test_shared_dir();
}

static tok_vocab *load_vocab(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", shared_dir(), rel);
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ks_diag d;
    ks_diag_clear(&d);
    ck_assert_msg(gguf_open(path, &f, &d) == 0, "%s: %s", path, d.msg);
    ck_assert_msg(tok_vocab_load(f, &v, &d) == 0, "%s: %s", path, d.msg);
    gguf_close(f);
    return v;
}

static gram *compile_ok(const char *src)
{
    gram *g = NULL;
    ks_diag d;
    int rc = gram_compile(src, strlen(src), &g, &d);
    ck_assert_msg(rc == 0, "grammar failed: %s\n%s", d.msg, src);
    return g;
}

/* Does g accept exactly s (whole text, complete)? */
static bool matches(const gram *g, const char *s)
{
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    bool ok = gram_matcher_accept_bytes(m, s, strlen(s)) == 0 && gram_matcher_can_end(m);
    gram_matcher_destroy(m);
    return ok;
}

/* A JSON grammar written the way llama.cpp's grammars/json.gbnf users write theirs. */
static const char *json_gbnf =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] "
    "[1-9]{0,15})? ws\n"
    "\n"
    "# Optional space: by convention, applied in this grammar after literal chars when allowed\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

START_TEST(test_parse_valid)
{
    const char *ok[] = {
        json_gbnf,
        "root ::= \"a\"",
        "root ::= \"\"",
        "root ::= ",
        "root ::= [a-z]+ (\",\" [a-z]+)* # trailing comment\n# another\n",
        "root ::= x{2} x{1,} x{,3} x{0,0} x{2,4}\nx ::= \"x\"",
        "root ::=\n  \"a\" |\n  \"b\"\n",
        "root ::= [^\\]\\\\] . [\\x41-\\x5A] [\\u00e9] [\\U0001F600] \"\\t\\r\\n\\\"\"",
        "root ::= (((\"a\")))\n",
        "root ::= item*\nitem ::= \"(\" item* \")\"", /* right recursion is fine */
        "root-rule_1 ::= \"x\"\nroot ::= root-rule_1",
        "root ::= \"é日本\" [à-ÿ]",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        gram_destroy(compile_ok(ok[i]));
    gram *g = compile_ok("root ::= (\"a\" | \"b\")* \"c\"?");
    ck_assert_int_ge(gram_n_rules(g), 3);
    gram_destroy(g);
}
END_TEST

/* A grammar of 55 000 rules (1 MB, the size a request body may have) compiles in far less than
 * a second: rules are found by name through a hash table. The scan it replaced cost n^2
 * string compares: this grammar held the server's event loop for about a minute. */
START_TEST(test_many_rules_fast)
{
    enum { N = 55000 };
    char *src = malloc((size_t)N * 32 + 64), *at = src;
    at += sprintf(at, "root ::= r0\n");
    for (int i = 0; i < N; i++)
        at += sprintf(at, "r%d ::= r%d\n", i, i + 1);
    sprintf(at, "r%d ::= \"x\"\n", N);
    double t0 = ks_time_now();
    gram *g = compile_ok(src);
    double dt = ks_time_now() - t0;
    ck_assert_int_ge(gram_n_rules(g), N + 2);
    ck_assert_msg(dt < 5.0, "55 000 rules took %.1f s to compile", dt);
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "x", 1), 0);
    ck_assert(gram_matcher_can_end(m));
    gram_matcher_destroy(m);
    gram_destroy(g);
    free(src);
}
END_TEST

/* A step over more parallel stacks than the matcher's memo holds (70 000 optional "a"s:
 * 70 000 stacks after the first "a", the memo has 65 536 slots) is refused as too complex.
 * It used to probe the full memo forever. */
START_TEST(test_too_many_stacks_refused)
{
    enum { N = 70000 };
    char *src = malloc((size_t)N * 5 + 64), *at = src;
    at += sprintf(at, "root ::= ");
    for (int i = 0; i < N; i++)
        at += sprintf(at, "\"a\"? ");
    sprintf(at, "\"b\"");
    gram *g = compile_ok(src);
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    ck_assert_int_ne(gram_matcher_accept_bytes(m, "aab", 3), 0);
    gram_matcher_destroy(m);
    gram_destroy(g);
    free(src);
}
END_TEST

START_TEST(test_parse_errors)
{
    struct {
        const char *src, *msg;
    } bad[] = {
        {"root ::= foo", "line 1, column 10: undefined rule 'foo'"},
        {"root ::= \"a\"\n\nx ::= \"b\" y\n", "line 3, column 11: undefined rule 'y'"},
        {"x ::= \"a\"", "the grammar has no 'root' rule"},
        {"root ::= \"abc", "line 1, column 10: unterminated string literal"},
        {"root ::= [a-", "unterminated character class"},
        {"root ::= [z-a]", "line 1, column 11: character range is reversed"},
        {"root ::= (\"a\"", "line 1, column 14: expected ')'"},
        {"root ::= \"a\")", "line 1, column 13: unmatched ')'"},
        {"root = \"a\"", "line 1, column 6: expected '::='"},
        {"root ::= \"\\q\"", "line 1, column 11: unknown escape"},
        {"root ::= \"\\x4\"", "expected 2 hex digits"},
        {"root ::= \"a\"{3,1}", "has max below min"},
        {"root ::= \"a\"{99999}", "repetition count above"},
        {"root ::= *", "line 1, column 10: unexpected '*'"},
        {"root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' is defined twice"},
        {"root ::= root \"a\" | \"b\"", "line 1, column 1: rule 'root' is left-recursive"},
        {"root ::= a\na ::= b? root \"x\"\nb ::= \"b\"", "left-recursive"},
        {"root ::= \"\xff\"", "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gram *g = NULL;
        ks_diag d;
        int rc = gram_compile(bad[i].src, strlen(bad[i].src), &g, &d);
        ck_assert_msg(rc < 0 && g == NULL, "accepted: %s", bad[i].src);
        ck_assert_msg(strstr(d.msg, bad[i].msg), "%s: got '%s', want '%s'", bad[i].src, d.msg,
                      bad[i].msg);
        ck_assert_int_ge(d.line, 1);
    }
}
END_TEST

START_TEST(test_match_strings)
{
    struct {
        const char *gbnf, *text;
        bool ok;
    } cases[] = {
        {"root ::= \"ab\" | \"cd\"", "ab", true},
        {"root ::= \"ab\" | \"cd\"", "cd", true},
        {"root ::= \"ab\" | \"cd\"", "ac", false},
        {"root ::= \"ab\" | \"cd\"", "a", false}, /* incomplete */
        {"root ::= [a-c]+", "abcabc", true},
        {"root ::= [a-c]+", "", false},
        {"root ::= [a-c]*", "", true},
        {"root ::= [^a-c]+", "xyz", true},
        {"root ::= [^a-c]+", "xaz", false},
        {"root ::= \"x\"{2,4}", "x", false},
        {"root ::= \"x\"{2,4}", "xx", true},
        {"root ::= \"x\"{2,4}", "xxxx", true},
        {"root ::= \"x\"{2,4}", "xxxxx", false},
        {"root ::= \"x\"{3}", "xxx", true},
        {"root ::= \"x\"{3}", "xxxx", false},
        {"root ::= \"x\"{2,}", "xxxxxxx", true},
        {"root ::= \"ab\"{,2} \"c\"", "ababc", true},
        {"root ::= \"ab\"{,2} \"c\"", "abac", false},
        {"root ::= (\"a\" | \"b\" \"c\")? \"d\"", "bcd", true},
        {"root ::= (\"a\" | \"b\" \"c\")? \"d\"", "d", true},
        {"root ::= (\"a\" | \"b\" \"c\")? \"d\"", "bd", false},
        {"root ::= . . .", "a日😀", true},
        {"root ::= [à-ÿ]+", "éàÿ", true},
        {"root ::= [à-ÿ]+", "éa", false},
        {"root ::= [\\U0001F600-\\U0001F64F]", "😀", true},
        {"root ::= item*\nitem ::= \"(\" item* \")\"", "(()(()))()", true},
        {"root ::= item*\nitem ::= \"(\" item* \")\"", "(()", false},
        {"root ::= \"\\x41\\u00e9\\n\"", "Aé\n", true},
        {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "xy", true},
        {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "y", true},
        {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "xxy", true},
        {"root ::= a b\na ::= \"x\"?\nb ::= a \"y\"", "xxxy", false},
        {json_gbnf, "{\"a\": [1, 2.5e3, -0, true, null, {\"b\": \"\\u00e9\\n\"}]}", true},
        {json_gbnf, "{\"a\": 01}", false},
        {json_gbnf, "{\"a\" 1}", false},
        {json_gbnf, "{\"a\": \"\x01\"}", false},
        {json_gbnf, "{\"日本\": \"語\"}", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gram *g = compile_ok(cases[i].gbnf);
        ck_assert_msg(matches(g, cases[i].text) == cases[i].ok, "case %zu: '%s' on %s", i,
                      cases[i].text, cases[i].gbnf);
        gram_destroy(g);
    }
}
END_TEST

START_TEST(test_match_state)
{
    gram *g = compile_ok("root ::= \"é\" \"x\"?");
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    ck_assert(!gram_matcher_can_end(m));
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xc3", 1), 0); /* half of é */
    ck_assert(!gram_matcher_can_end(m));
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xa8", 1), KS_ERR_INVALID); /* è */
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xa9", 1), 0);
    ck_assert(gram_matcher_can_end(m) && !gram_matcher_is_done(m));
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "y", 1), KS_ERR_INVALID); /* unchanged */
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "x", 1), 0);
    ck_assert(gram_matcher_can_end(m) && gram_matcher_is_done(m));
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xc3", 1), KS_ERR_INVALID);
    gram_matcher_destroy(m);
    /* A partial code point that no class can complete is refused at once. */
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xe6", 1), KS_ERR_INVALID);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\x80", 1), KS_ERR_INVALID);
    gram_matcher_destroy(m);
    gram_destroy(g);
    /* Partial sequences that can only become a surrogate or an overlong form are dead. */
    g = compile_ok("root ::= [^a]*");
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xed", 1), 0);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xa0", 1), KS_ERR_INVALID); /* U+D800.. */
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\x9f\xbf", 2), 0);          /* U+D7FF */
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xe0\x80", 2), KS_ERR_INVALID);
    ck_assert_int_eq(gram_matcher_accept_bytes(m, "\xf4\x90", 2), KS_ERR_INVALID);
    gram_matcher_destroy(m);
    gram_destroy(g);
    gram_matcher_destroy(NULL);
    gram_destroy(NULL);
    gram_vocab_destroy(NULL);
}
END_TEST

/* The longest token whose piece starts `text` (a tokenizer-independent segmentation). */
static int32_t longest_token(const tok_vocab *v, const char *text, int32_t *plen)
{
    int32_t best = -1, best_len = 0, nv = tok_vocab_n_tokens(v);
    for (int32_t t = 0; t < nv; t++) {
        char buf[512];
        int32_t n = tok_piece(v, t, false, buf, sizeof(buf));
        if (n > best_len && n <= (int32_t)sizeof(buf) && !strncmp(buf, text, (size_t)n) &&
            !tok_is_eog(v, t)) {
            best = t;
            best_len = n;
        }
    }
    *plen = best_len;
    return best;
}

/* The trie mask equals a token-by-token check (no trie, no cache) on every step of a walk
 * that feeds `text` as its longest tokens; every such token must be allowed. */
static void check_mask_walk(const tok_vocab *v, const gram_vocab *gv, const char *gbnf,
                            const char *text)
{
    gram *g = compile_ok(gbnf);
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, gv, &m), 0);
    int32_t nv = tok_vocab_n_tokens(v);
    float *l = malloc((size_t)nv * sizeof(float));
    for (int step = 0;; step++) {
        for (int32_t t = 0; t < nv; t++)
            l[t] = 0;
        int32_t allowed = gram_matcher_mask(m, l, nv);
        int32_t count = 0;
        for (int32_t t = 0; t < nv; t++) {
            bool ok = gram_matcher_token_ok(m, t);
            ck_assert_msg(ok == (l[t] == 0), "step %d token %d: mask %g check %d", step, t,
                          (double)l[t], ok);
            count += ok;
        }
        ck_assert_int_eq(allowed, count);
        if (!*text) break;
        int32_t n, tok = longest_token(v, text, &n);
        ck_assert_msg(tok >= 0 && l[tok] == 0, "step %d: token %d for '%s' is masked", step, tok,
                      text);
        ck_assert_int_eq(gram_matcher_accept_token(m, tok), 0);
        text += n;
    }
    ck_assert(gram_matcher_can_end(m));
    gram_matcher_destroy(m);
    gram_destroy(g);
    free(l);
}

START_TEST(test_mask_against_token_checks)
{
    const char *vocabs[] = {"models/kjv-tiny/kjv-tiny-q8_0.gguf", "vocab/ggml-vocab-qwen2.gguf"};
    for (int k = 0; k < 2; k++) {
        tok_vocab *v = load_vocab(vocabs[k]);
        gram_vocab *gv = NULL;
        ck_assert_int_eq(gram_vocab_create(v, &gv), 0);
        check_mask_walk(v, gv, json_gbnf, "{\"name\": \"the lord\", \"verse\": [3, 16]}");
        check_mask_walk(v, gv, "root ::= [a-zA-Z ]+ \".\"", "And God said unto Moses.");
        check_mask_walk(v, gv, "root ::= \"日本\" [^a]* ", "日本語の文");
        gram_vocab_destroy(gv);
        tok_vocab_free(v);
    }
}
END_TEST

static bool all_digits(const char *s, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return n > 0;
}

/* Independent reference: under [0-9]+ the allowed tokens are those whose piece is digits. */
START_TEST(test_mask_digits_reference)
{
    tok_vocab *v = load_vocab("vocab/ggml-vocab-qwen2.gguf");
    gram_vocab *gv = NULL;
    ck_assert_int_eq(gram_vocab_create(v, &gv), 0);
    gram *g = compile_ok("root ::= [0-9]+");
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, gv, &m), 0);
    int32_t nv = tok_vocab_n_tokens(v);
    float *l = malloc((size_t)nv * sizeof(float));
    for (int round = 0; round < 2; round++) {
        for (int32_t t = 0; t < nv; t++)
            l[t] = 1;
        int32_t allowed = gram_matcher_mask(m, l, nv), want = 0;
        for (int32_t t = 0; t < nv; t++) {
            char buf[512];
            int32_t n = tok_piece(v, t, false, buf, sizeof(buf));
            bool ok = (n > 0 && all_digits(buf, n)) || (round == 1 && tok_is_eog(v, t));
            want += ok;
            ck_assert_msg(ok == (l[t] == 1), "round %d token %d", round, t);
        }
        ck_assert_int_eq(allowed, want);
        ck_assert_int_ge(want, 10); /* qwen2 splits digits: exactly 0..9 */
        ck_assert_int_eq(gram_matcher_accept_bytes(m, "4", 1), 0); /* now it can end */
    }
    free(l);
    gram_matcher_destroy(m);
    gram_destroy(g);
    gram_vocab_destroy(gv);
    tok_vocab_free(v);
}
END_TEST

/* Sampling from random logits under the JSON grammar, masking every step, always yields
 * text that jansson parses, ended by an end-of-generation token the grammar allowed. */
START_TEST(test_sampler_masking_json)
{
    tok_vocab *v = load_vocab("models/kjv-tiny/kjv-tiny-q8_0.gguf");
    gram_vocab *gv = NULL;
    ck_assert_int_eq(gram_vocab_create(v, &gv), 0);
    gram *g = compile_ok("root ::= object\n"
                         "object ::= \"{\" (pair (\", \" pair){0,3})? \"}\"\n"
                         "pair ::= \"\\\"\" [a-z ]{1,8} \"\\\": \" value\n"
                         "value ::= [0-9]{1,3} | \"true\" | \"null\" | \"[\" [0-9]{1,2} \"]\"");
    int32_t nv = tok_vocab_n_tokens(v);
    float *l = malloc((size_t)nv * sizeof(float));
    smp_params sp;
    smp_params_default(&sp);
    sp.temperature = 1.5f;
    int ended = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        sp.seed = seed;
        smp_sampler *s = NULL;
        ck_assert_int_eq(smp_sampler_create(&sp, nv, &s), 0);
        gram_matcher *m = NULL;
        ck_assert_int_eq(gram_matcher_create(g, gv, &m), 0);
        char text[4096] = "";
        size_t len = 0;
        uint64_t r = seed * 0x9E3779B97F4A7C15ull;
        for (int step = 0; step < 300; step++) {
            for (int32_t t = 0; t < nv; t++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                l[t] = (float)((r >> 40) % 1000) / 100.0f;
            }
            ck_assert_int_gt(gram_matcher_mask(m, l, nv), 0);
            int32_t tok;
            ck_assert_int_eq(smp_sample(s, l, nv, NULL, 0, &tok), 0);
            ck_assert_int_eq(gram_matcher_accept_token(m, tok), 0);
            if (tok_is_eog(v, tok)) {
                ended++;
                break;
            }
            len += (size_t)tok_piece(v, tok, false, text + len, (int32_t)(sizeof(text) - len));
            ck_assert_uint_lt(len, sizeof(text));
        }
        ck_assert_msg(gram_matcher_can_end(m), "seed %llu did not end", (unsigned long long)seed);
        {
            json_error_t err;
            json_t *j = json_loadb(text, len, 0, &err);
            ck_assert_msg(j && json_is_object(j), "seed %llu: not JSON: %s (%s)",
                          (unsigned long long)seed, text, err.text);
            json_decref(j);
        }
        gram_matcher_destroy(m);
        smp_sampler_destroy(s);
    }
    ck_assert_int_eq(ended, 20); /* the grammar is finite: every walk reaches its end */
    free(l);
    gram_destroy(g);
    gram_vocab_destroy(gv);
    tok_vocab_free(v);
}
END_TEST

static Suite *grammar_suite(void)
{
    Suite *s = suite_create("grammar");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_parse_valid);
    tcase_add_test(tc, test_many_rules_fast);
    tcase_add_test(tc, test_too_many_stacks_refused);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_match_strings);
    tcase_add_test(tc, test_match_state);
    tcase_add_test(tc, test_mask_against_token_checks);
    tcase_add_test(tc, test_mask_digits_reference);
    tcase_add_test(tc, test_sampler_masking_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(grammar_suite(), true);
}

/* test_args.c - the table-driven command-line parser: every value type, ranges, `--name=value`,
 * short names, positionals, required options, repeated FUNC options, --help and the errors.
 * (The exact messages and every program's --help are checked by tests/e2e/test_cli.py.) */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <string.h>

#include "kvserve/args.h"

static const char *const kColors[] = {"red", "green", "blue", NULL};

typedef struct vals {
    int64_t n;
    int32_t k;
    float t;
    double x;
    const char *s, *pos;
    bool flag;
    int color;
    int funcs;
} vals;

static int count_fn(const char *v, void *dst, char *err, size_t err_len)
{
    if (strcmp(v, "ok") != 0) {
        snprintf(err, err_len, "expected ok");
        return KS_ERR_INVALID;
    }
    ((vals *)dst)->funcs++;
    return KS_OK;
}

static int parse(vals *v, int argc, const char *const *argv)
{
    *v = (vals){.n = 7, .k = 3, .t = 0.5f, .x = 2.0, .s = "def", .color = 1};
    const ks_arg args[] = {
        {"n-predict", 'n', KS_ARG_INT, &v->n, 1, 1000000, .help = "tokens"},
        {"k", 0, KS_ARG_I32, &v->k, -5, 5, .help = "k"},
        {"temp", 0, KS_ARG_FLOAT, &v->t, 0, 2, .help = "temperature"},
        {"x", 0, KS_ARG_DOUBLE, &v->x, 0, 1e300, .help = "x"},
        {"name", 0, KS_ARG_STRING, &v->s, .help = "name", .flags = KS_ARG_REQUIRED},
        {"flag", 'f', KS_ARG_BOOL, &v->flag, .help = "flag"},
        {"color", 0, KS_ARG_ENUM, &v->color, .choices = kColors, .help = "color"},
        {"fn", 0, KS_ARG_FUNC, v, .parse = count_fn, .help = "repeatable"},
        {"POS", 0, KS_ARG_STRING, &v->pos, .help = "positional", .flags = KS_ARG_POSITIONAL},
    };
    const ks_args_spec spec = {"t", "test", args, KS_ARRAY_LEN(args), NULL};
    return ks_args_parse(&spec, argc, (char **)argv);
}

START_TEST(test_values)
{
    vals v;
    const char *argv[] = {"t",    "--n-predict", "42",     "--k=-5",  "--temp", "1.5",
                          "--x",  "1e9",         "--name", "abc",     "-f",     "--color",
                          "blue", "--fn",        "ok",     "--fn=ok", "here"};
    ck_assert_int_eq(parse(&v, (int)KS_ARRAY_LEN(argv), argv), 0);
    ck_assert_int_eq(v.n, 42);
    ck_assert_int_eq(v.k, -5);
    ck_assert(v.t == 1.5f);
    ck_assert(v.x == 1e9);
    ck_assert_str_eq(v.s, "abc");
    ck_assert(v.flag);
    ck_assert_int_eq(v.color, 2);
    ck_assert_int_eq(v.funcs, 2);
    ck_assert_str_eq(v.pos, "here");
    const char *argv2[] = {"t", "-n", "9", "--name", "z"};
    ck_assert_int_eq(parse(&v, 5, argv2), 0);
    ck_assert_int_eq(v.n, 9);
    ck_assert_int_eq(v.k, 3); /* untouched defaults */
    ck_assert_int_eq(v.color, 1);
    ck_assert_ptr_null(v.pos);
}
END_TEST

START_TEST(test_errors)
{
    vals v;
    static const struct {
        const char *argv[4];
        int argc, rc;
    } cases[] = {
        {{"t", "--name", "a", "--bogus"}, 4, KS_ERR_INVALID},     /* unknown flag */
        {{"t", "--n-predict", "x", "--name"}, 3, KS_ERR_INVALID}, /* not an integer */
        {{"t", "--n-predict", "0"}, 3, KS_ERR_RANGE},             /* below the range */
        {{"t", "--n-predict", "12x"}, 3, KS_ERR_INVALID},         /* trailing garbage */
        {{"t", "--temp", "nan"}, 3, KS_ERR_INVALID},              /* not finite */
        {{"t", "--k", "6"}, 3, KS_ERR_RANGE},                     /* above the range */
        {{"t", "--color", "pink"}, 3, KS_ERR_INVALID},            /* not a choice */
        {{"t", "--fn", "no"}, 3, KS_ERR_INVALID},                 /* FUNC refuses */
        {{"t", "--name"}, 2, KS_ERR_INVALID},                     /* missing value */
        {{"t", "-f"}, 2, KS_ERR_INVALID},                         /* required --name absent */
        {{"t", "--name", "a", "--flag=1"}, 4, KS_ERR_INVALID},    /* a bool takes no value */
        {{"t", "--name", "a", "p"}, 4, 0},                        /* one positional is fine */
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++)
        ck_assert_msg(parse(&v, cases[i].argc, cases[i].argv) == cases[i].rc, "case %zu", i);
    const char *two[] = {"t", "--name", "a", "p", "q"}; /* a second positional is not */
    ck_assert_int_eq(parse(&v, 5, two), KS_ERR_INVALID);
}
END_TEST

START_TEST(test_help)
{
    vals v;
    /* --help wins over errors and the missing required option, and exits with usage */
    const char *argv[] = {"t", "--bogus", "--help"};
    FILE *saved = stdout;
    char buf[4096] = "";
    stdout = fmemopen(buf, sizeof(buf) - 1, "w");
    ck_assert_ptr_nonnull(stdout);
    int rc = parse(&v, 3, argv);
    fclose(stdout);
    stdout = saved;
    ck_assert_int_eq(rc, KS_ARGS_HELP);
    ck_assert_msg(strncmp(buf, "usage: t [options] [POS]\n", 25) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "--n-predict N, -n"));
    ck_assert_ptr_nonnull(strstr(buf, "an integer in [1, 1000000] (default 7)"));
    ck_assert_ptr_nonnull(strstr(buf, "one of red, green, blue (default green)"));
    ck_assert_ptr_nonnull(strstr(buf, "--name VALUE"));
    ck_assert_ptr_nonnull(strstr(buf, "(required)"));
}
END_TEST

static Suite *args_suite(void)
{
    Suite *s = suite_create("args");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_help);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(args_suite(), true);
}

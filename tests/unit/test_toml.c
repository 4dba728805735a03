/* test_toml.c - the TOML reader: every value kind, keys, tables, strings and escapes, and a
 * table of invalid documents with the expected error line and message fragment. */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/toml.h"

static toml_doc *parse_ok(const char *text)
{
    toml_doc *doc = NULL;
    ks_diag d;
    int rc = toml_parse(text, strlen(text), "t.toml", &doc, &d);
    ck_assert_msg(rc == 0, "parse failed: %s", d.msg);
    return doc;
}

static const toml_node *get(const toml_doc *doc, const char *path, toml_kind kind)
{
    const toml_node *n = toml_node_find(toml_doc_root(doc), path);
    ck_assert_msg(n != NULL, "missing %s", path);
    ck_assert_int_eq(toml_node_kind(n), kind);
    return n;
}

START_TEST(test_scalars)
{
    toml_doc *doc = parse_ok("# leading comment\n"
                             "i1 = 42\n"
                             "i2 = -17 # trailing\n"
                             "i3 = +1_000_000\n"
                             "i4 = 0xDEAD_beef\n"
                             "i5 = 0o755\n"
                             "i6 = 0b1101\n"
                             "i7 = 9223372036854775807\n"
                             "i8 = -9223372036854775808\n"
                             "i9 = -0\n"
                             "f1 = 3.1415\n"
                             "f2 = -2e-3\n"
                             "f3 = 6.626E+3_4\n"
                             "f4 = inf\n"
                             "f5 = -inf\n"
                             "f6 = nan\n"
                             "f7 = 1_0.2_5\n"
                             "b1 = true\n"
                             "b2 = false\n");
    ck_assert_int_eq(toml_node_int(get(doc, "i1", TOML_INT)), 42);
    ck_assert_int_eq(toml_node_int(get(doc, "i2", TOML_INT)), -17);
    ck_assert_int_eq(toml_node_int(get(doc, "i3", TOML_INT)), 1000000);
    ck_assert_int_eq(toml_node_int(get(doc, "i4", TOML_INT)), 0xdeadbeefLL);
    ck_assert_int_eq(toml_node_int(get(doc, "i5", TOML_INT)), 0755);
    ck_assert_int_eq(toml_node_int(get(doc, "i6", TOML_INT)), 13);
    ck_assert(toml_node_int(get(doc, "i7", TOML_INT)) == INT64_MAX);
    ck_assert(toml_node_int(get(doc, "i8", TOML_INT)) == INT64_MIN);
    ck_assert_int_eq(toml_node_int(get(doc, "i9", TOML_INT)), 0);
    ck_assert_double_eq(toml_node_float(get(doc, "f1", TOML_FLOAT)), 3.1415);
    ck_assert_double_eq(toml_node_float(get(doc, "f2", TOML_FLOAT)), -2e-3);
    ck_assert_double_eq(toml_node_float(get(doc, "f3", TOML_FLOAT)), 6.626e34);
    ck_assert(isinf(toml_node_float(get(doc, "f4", TOML_FLOAT))));
    ck_assert(toml_node_float(get(doc, "f5", TOML_FLOAT)) < 0);
    ck_assert(isnan(toml_node_float(get(doc, "f6", TOML_FLOAT))));
    ck_assert_double_eq(toml_node_float(get(doc, "f7", TOML_FLOAT)), 10.25);
    ck_assert(toml_node_bool(get(doc, "b1", TOML_BOOL)));
    ck_assert(!toml_node_bool(get(doc, "b2", TOML_BOOL)));
    ck_assert_int_eq(toml_node_line(get(doc, "i1", TOML_INT)), 2);
    ck_assert_int_eq(toml_node_line(get(doc, "b2", TOML_BOOL)), 19);
    /* keys keep definition order */
    ck_assert_str_eq(toml_table_key(toml_doc_root(doc), 0), "i1");
    ck_assert_str_eq(toml_table_key(toml_doc_root(doc), 17), "b2");
    ck_assert_uint_eq(toml_node_count(toml_doc_root(doc)), 18);
    toml_doc_free(doc);
}
END_TEST

START_TEST(test_strings)
{
    toml_doc *doc = parse_ok("s1 = \"tab\\there \\\"q\\\" \\\\ \\b\\f\\r\\n\"\n"
                             "s2 = \"\\u00e9\\U0001F600\"\n"
                             "s3 = 'C:\\no\\escapes'\n"
                             "s4 = \"\"\"\nline1\nline2\"\"\"\n"
                             "s5 = \"\"\"a \\\n     b\"\"\"\n"
                             "s6 = '''\nraw \\n ''q'' '''\n"
                             "s7 = \"\\u0000x\"\n"
                             "s8 = \"\"\"x\"\"\"\"\"\n"
                             "s9 = \"h\xc3\xa9\"\n");
    ck_assert_str_eq(toml_node_string(get(doc, "s1", TOML_STRING), NULL),
                     "tab\there \"q\" \\ \b\f\r\n");
    ck_assert_str_eq(toml_node_string(get(doc, "s2", TOML_STRING), NULL),
                     "\xc3\xa9\xf0\x9f\x98\x80");
    ck_assert_str_eq(toml_node_string(get(doc, "s3", TOML_STRING), NULL), "C:\\no\\escapes");
    ck_assert_str_eq(toml_node_string(get(doc, "s4", TOML_STRING), NULL), "line1\nline2");
    ck_assert_str_eq(toml_node_string(get(doc, "s5", TOML_STRING), NULL), "a b");
    ck_assert_str_eq(toml_node_string(get(doc, "s6", TOML_STRING), NULL), "raw \\n ''q'' ");
    size_t len;
    const char *s7 = toml_node_string(get(doc, "s7", TOML_STRING), &len);
    ck_assert_uint_eq(len, 2);
    ck_assert(s7[0] == 0 && s7[1] == 'x');
    ck_assert_str_eq(toml_node_string(get(doc, "s8", TOML_STRING), NULL), "x\"\"");
    ck_assert_str_eq(toml_node_string(get(doc, "s9", TOML_STRING), NULL), "h\xc3\xa9");
    ck_assert_int_eq(toml_node_line(get(doc, "s5", TOML_STRING)), 7);
    ck_assert_int_eq(toml_node_line(get(doc, "s6", TOML_STRING)), 9);
    toml_doc_free(doc);
}
END_TEST

START_TEST(test_keys_and_tables)
{
    toml_doc *doc = parse_ok("a.b.c = 1\n"
                             "a . b . d = 2\n"
                             "\"quoted key\" = 3\n"
                             "'lit.key' = 4\n"
                             "\"\" = 5\n"
                             "bare-key_1 = 6\n"
                             "[server]\n"
                             "port = 80\n"
                             "[x.y.z]\n"
                             "v = 1\n"
                             "[x]\n"
                             "w = 2\n"
                             "y.u = 3\n"
                             "[x.y.z.deep]\n"
                             "[[arr]]\n"
                             "n = 1\n"
                             "[[arr]]\n"
                             "n = 2\n"
                             "[arr.sub]\n"
                             "k = 3\n"
                             "[fruit]\n"
                             "apple.color = 'red'\n"
                             "[fruit.apple.texture]\n"
                             "smooth = true\n");
    const toml_node *root = toml_doc_root(doc);
    ck_assert_int_eq(toml_node_int(get(doc, "a.b.c", TOML_INT)), 1);
    ck_assert_int_eq(toml_node_int(get(doc, "a.b.d", TOML_INT)), 2);
    ck_assert_int_eq(toml_node_int(toml_table_get(root, "quoted key")), 3);
    ck_assert_int_eq(toml_node_int(toml_table_get(root, "lit.key")), 4);
    ck_assert_int_eq(toml_node_int(toml_table_get(root, "")), 5);
    ck_assert_int_eq(toml_node_int(get(doc, "bare-key_1", TOML_INT)), 6);
    ck_assert_int_eq(toml_node_int(get(doc, "server.port", TOML_INT)), 80);
    ck_assert_int_eq(toml_node_line(get(doc, "server", TOML_TABLE)), 7);
    ck_assert_int_eq(toml_node_int(get(doc, "x.y.z.v", TOML_INT)), 1);
    ck_assert_int_eq(toml_node_int(get(doc, "x.y.u", TOML_INT)), 3);
    get(doc, "x.y.z.deep", TOML_TABLE);
    const toml_node *arr = get(doc, "arr", TOML_ARRAY);
    ck_assert_uint_eq(toml_node_count(arr), 2);
    ck_assert_int_eq(toml_node_int(toml_table_get(toml_node_at(arr, 1), "n")), 2);
    ck_assert_int_eq(toml_node_int(toml_node_find(toml_node_at(arr, 1), "sub.k")), 3);
    ck_assert(toml_node_bool(get(doc, "fruit.apple.texture.smooth", TOML_BOOL)));
    ck_assert_ptr_null(toml_node_find(root, "nope.x"));
    ck_assert_ptr_null(toml_node_find(root, "server.port.x"));
    toml_doc_free(doc);
}
END_TEST

START_TEST(test_arrays_inline)
{
    toml_doc *doc = parse_ok("a = [1, 2, 3]\n"
                             "b = [ \"x\", 1.5, true, [1, [2]], {k = 'v'} ]\n"
                             "c = [\n"
                             "  1, # one\n"
                             "  2,\n"
                             "  # comment line\n"
                             "]\n"
                             "d = []\n"
                             "e = { x = 1, y.z = \"w\", t = { u = [] } }\n"
                             "f = {}\n"
                             "g = 7\n");
    const toml_node *a = get(doc, "a", TOML_ARRAY);
    ck_assert_uint_eq(toml_node_count(a), 3);
    ck_assert_int_eq(toml_node_int(toml_node_at(a, 2)), 3);
    const toml_node *b = get(doc, "b", TOML_ARRAY);
    ck_assert_uint_eq(toml_node_count(b), 5);
    ck_assert_int_eq(toml_node_kind(toml_node_at(b, 0)), TOML_STRING);
    ck_assert_int_eq(toml_node_kind(toml_node_at(b, 1)), TOML_FLOAT);
    ck_assert_int_eq(toml_node_kind(toml_node_at(b, 2)), TOML_BOOL);
    const toml_node *nested = toml_node_at(toml_node_at(b, 3), 1);
    ck_assert_int_eq(toml_node_int(toml_node_at(nested, 0)), 2);
    ck_assert_str_eq(toml_node_string(toml_table_get(toml_node_at(b, 4), "k"), NULL), "v");
    const toml_node *c = get(doc, "c", TOML_ARRAY);
    ck_assert_uint_eq(toml_node_count(c), 2);
    ck_assert_int_eq(toml_node_line(toml_node_at(c, 1)), 5);
    ck_assert_uint_eq(toml_node_count(get(doc, "d", TOML_ARRAY)), 0);
    ck_assert_str_eq(toml_node_string(get(doc, "e.y.z", TOML_STRING), NULL), "w");
    get(doc, "e.t.u", TOML_ARRAY);
    ck_assert_uint_eq(toml_node_count(get(doc, "f", TOML_TABLE)), 0);
    ck_assert_int_eq(toml_node_line(get(doc, "g", TOML_INT)), 11);
    toml_doc_free(doc);
}
END_TEST

START_TEST(test_crlf_and_bom)
{
    toml_doc *doc = parse_ok("\xef\xbb\xbf"
                             "a = 1\r\n# c\r\nb = \"\"\"x\r\ny\"\"\"\r\nc = 3");
    ck_assert_int_eq(toml_node_line(get(doc, "c", TOML_INT)), 5);
    ck_assert_str_eq(toml_node_string(get(doc, "b", TOML_STRING), NULL), "x\ny");
    toml_doc_free(doc);
}
END_TEST

typedef struct bad_case {
    const char *text;
    int line;
    const char *fragment;
} bad_case;

static const bad_case g_bad[] = {
    {"a = 1\na = 2\n", 2, "a: duplicate key"},
    {"[t]\nx = 1\n[t]\n", 3, "defined more than once"},
    {"a.b = 1\n[a]\n", 2, "defined more than once"},
    {"[a.b]\n[a]\nb.c = 1\n", 3, "already defined elsewhere"},
    {"x = \"abc\n", 1, "newline in single-line string"},
    {"x = \"a\\qb\"\n", 1, "invalid escape sequence '\\q'"},
    {"x = \"\\uD800\"\n", 1, "not a Unicode scalar value"},
    {"x = \"\\u12\"\n", 1, "hex digits"},
    {"ok = 1\nx = \"a\x01\"\n", 2, "control character 0x01"},
    {"ok = 1\n\nx = \"\xc3\x28\"\n", 3, "invalid UTF-8"},
    {"# \xff\n", 1, "invalid UTF-8"},
    {"x = 9223372036854775808\n", 1, "out of range"},
    {"x = -9223372036854775809\n", 1, "out of range"},
    {"x = 0xffffffffffffffffff\n", 1, "out of range"},
    {"x = 012\n", 1, "leading zeros"},
    {"x = 1__0\n", 1, "invalid integer"},
    {"x = _1\n", 1, "invalid value '_1'"},
    {"x = 1_\n", 1, "invalid integer"},
    {"x = +0x10\n", 1, "sign not allowed"},
    {"x = 1.\n", 1, "invalid number"},
    {"x = .5\n", 1, "invalid value"},
    {"x = 1e\n", 1, "invalid number"},
    {"x = 1979-05-27\n", 1, "unsupported"},
    {"x = 07:32:00\n", 1, "unsupported"},
    {"x = hello\n", 1, "strings need quotes"},
    {"x = \n", 1, "expected a value"},
    {"x 1\n", 1, "expected '='"},
    {"a = 1 b = 2\n", 1, "expected end of line"},
    {"a = [1, 2\nb = 3\n", 2, "expected ',' or ']'"},
    {"a = [1,,2]\n", 1, "expected a value"},
    {"a = {x = 1,}\n", 1, "trailing comma"},
    {"a = {x = 1\n}\n", 1, "expected ',' or '}'"},
    {"a = {x = 1}\n[a.y]\n", 2, "cannot extend inline table"},
    {"a = [1]\n[[a]]\n", 2, "static array"},
    {"[[a]]\n[a]\n", 2, "already an array of tables"},
    {"[a\n", 1, "expected ']'"},
    {"[]\n", 1, "expected a key"},
    {"a.b = 1\na.b.c = 2\n", 2, "already defined as a value"},
    {"x = \"\"\"abc\n", 2, "unterminated string"},
    {"x = 'abc\n", 1, "newline in single-line string"},
    {"a = 1\r\nb = 2\rc = 3\n", 2, "bare carriage return"},
    {"x = true1\n", 1, "invalid value 'true1'"},
    {"x = 1e999\n", 1, "float out of range"},
    {"\n\n[s]\nk = \"\\e\"\n", 4, "s.k: invalid escape"},
};

START_TEST(test_invalid)
{
    const bad_case *c = &g_bad[_i];
    toml_doc *doc = (toml_doc *)1;
    ks_diag d;
    int rc = toml_parse(c->text, strlen(c->text), "bad.toml", &doc, &d);
    ck_assert_msg(rc < 0, "case %d accepted: %s", _i, c->text);
    ck_assert_ptr_null(doc);
    ck_assert_msg(d.line == c->line, "case %d: line %d, want %d (%s)", _i, d.line, c->line, d.msg);
    ck_assert_msg(strstr(d.msg, c->fragment) != NULL, "case %d: '%s' lacks '%s'", _i, d.msg,
                  c->fragment);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "bad.toml:%d: ", c->line);
    ck_assert_msg(strncmp(d.msg, prefix, strlen(prefix)) == 0, "case %d: %s", _i, d.msg);
    ck_assert_str_eq(d.file, "bad.toml");
}
END_TEST

START_TEST(test_deep_nesting)
{
    char text[1024];
    size_t n = 0;
    n += (size_t)snprintf(text, sizeof(text), "x = ");
    for (int i = 0; i < 200; i++)
        text[n++] = '[';
    text[n] = 0;
    toml_doc *doc;
    ks_diag d;
    ck_assert_int_lt(toml_parse(text, n, NULL, &doc, &d), 0);
    ck_assert(strstr(d.msg, "nested too deeply") != NULL);
    ck_assert(strstr(d.msg, "<string>:1:") == d.msg);
    /* embedded NUL outside strings is an error, not a truncation */
    ck_assert_int_lt(toml_parse("a = 1\0b", 7, NULL, &doc, &d), 0);
}
END_TEST

START_TEST(test_parse_file)
{
    const char *src = getenv("KVSERVE_SRC");
    ck_assert_ptr_nonnull(src);
    char path[1024];
    snprintf(path, sizeof(path), "%s/configs/default.toml", src);
    toml_doc *doc;
    ks_diag d;
    ck_assert_msg(toml_parse_file(path, &doc, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(toml_node_int(get(doc, "server.port", TOML_INT)), 8080);
    ck_assert_str_eq(toml_doc_filename(doc), path);
    toml_doc_free(doc);
    ck_assert_int_eq(toml_parse_file("/nonexistent/x.toml", &doc, &d), KS_ERR_IO);
}
END_TEST

static Suite *toml_suite(void)
{
    Suite *s = suite_create("toml");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_scalars);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_keys_and_tables);
    tcase_add_test(tc, test_arrays_inline);
    tcase_add_test(tc, test_crlf_and_bom);
    tcase_add_loop_test(tc, test_invalid, 0, (int)KS_ARRAY_LEN(g_bad));
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_parse_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(toml_suite(), true);
}

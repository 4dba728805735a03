/* test_json_schema.c - JSON Schema -> GBNF: each schema's grammar must compile, accept
 * hand-checked valid instances and reject hand-checked invalid ones; integer ranges are
 * checked against every integer in a window (the reference is plain arithmetic); bad schemas
 * fail with the JSON pointer of the offending place. */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/grammar.h"
#include "server/json_schema.h"

static gram *schema_gram(const char *schema_text)
{
    json_error_t je;
    json_t *s = json_loads(schema_text, JSON_DECODE_ANY, &je);
    ck_assert_msg(s, "bad test schema: %s", schema_text);
    char *gbnf = NULL;
    ks_diag d;
    int rc = api_schema_to_gbnf(s, &gbnf, &d);
    ck_assert_msg(rc == 0, "%s: %s (%s)", schema_text, d.msg, d.key);
    gram *g = NULL;
    rc = gram_compile(gbnf, strlen(gbnf), &g, &d);
    ck_assert_msg(rc == 0, "grammar of %s: %s\n%s", schema_text, d.msg, gbnf);
    free(gbnf);
    json_decref(s);
    return g;
}

static bool accepts(const gram *g, const char *text)
{
    gram_matcher *m = NULL;
    ck_assert_int_eq(gram_matcher_create(g, NULL, &m), 0);
    bool ok = gram_matcher_accept_bytes(m, text, strlen(text)) == 0 && gram_matcher_can_end(m);
    gram_matcher_destroy(m);
    return ok;
}

typedef struct sc_case {
    const char *schema;
    const char *valid[6];
    const char *invalid[6];
} sc_case;

static const sc_case cases[] = {
    {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
     "\"integer\"}},\"required\":[\"name\"]}",
     {"{\"name\":\"Ann\"}", "{\"name\": \"Ann\", \"age\": 30}", "{ \"name\" : \"\\u00e9\" }"},
     {"{}", "{\"age\":30}", "{\"name\":\"a\",\"x\":1}", "{\"name\":1}", "{\"name\":\"a\",}"}},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"},\"b\":{\"type\":\"null\"}"
     "}}",
     {"{}", "{\"a\":true}", "{\"b\":null}", "{\"a\":false,\"b\":null}"},
     {"{\"b\":null,\"a\":true}", "{\"a\":1}", "{,}", "{\"a\":true,}"}},
    {"{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"integer\"}},\"additionalProperties\""
     ":true}",
     {"{}", "{\"k\":1,\"z\":[1]}", "{\"z\":\"y\"}", "{\"z\":1,\"w\":{}}", "{\"kk\":\"k\"}"},
     {"{\"k\":\"s\"}", "{\"z\"}"}},
    {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"number\"}}",
     {"{}", "{\"x\":1.5,\"y\":-2e3}"},
     {"{\"x\":\"1\"}"}},
    {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
     {"[1,2]", "[1, 2, 3]"},
     {"[]", "[1]", "[1,2,3,4]", "[1,\"2\"]", "[1,2,]"}},
    {"{\"type\":\"array\",\"maxItems\":0}", {"[]"}, {"[1]"}},
    {"{\"type\":\"array\",\"items\":{\"enum\":[\"red\",\"green\",1,null]}}",
     {"[]", "[\"red\",1,null,\"green\"]"},
     {"[\"blue\"]", "[2]"}},
    {"{\"const\":{\"a\":[1,\"x\"]}}", {"{\"a\":[1,\"x\"]}"}, {"{\"a\":[1]}"}},
    {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}",
     {"\"ab\"", "\"abcd\"", "\"日本\"", "\"a\\n\""},
     {"\"a\"", "\"abcde\"", "\"\""}},
    {"{\"type\":\"string\",\"format\":\"date\"}",
     {"\"2024-02-28\"", "\"1999-12-31\"", "\"2023-04-30\""},
     {"\"2024-13-01\"", "\"2024-1-01\"", "\"2024-01-32\"", "\"2023-04-31\"", "\"2023-02-30\""}},
    {"{\"type\":\"string\",\"format\":\"date-time\"}",
     {"\"2024-02-28T13:45:00Z\"", "\"2024-02-28T13:45:00.123+02:00\""},
     {"\"2024-02-28 13:45:00Z\"", "\"2024-02-28T24:00:00Z\""}},
    {"{\"type\":\"string\",\"format\":\"time\"}", {"\"23:59:59Z\""}, {"\"23:59\""}},
    {"{\"type\":\"string\",\"format\":\"uuid\"}",
     {"\"123e4567-e89b-12d3-a456-426614174000\""},
     {"\"123e4567e89b12d3a456426614174000\"", "\"123e4567-e89b-12d3-a456-42661417400\""}},
    {"{\"type\":\"number\"}", {"0", "-1.5", "3e10", "12.25E-3"}, {"01", "1.", ".5", "+1", "\"1\""}},
    {"{\"type\":\"number\",\"minimum\":0,\"maximum\":10}",
     {"0", "9.99", "10", "3.5"},
     {"-1", "10.5", "11", "-0.5"}},
    {"{\"type\":[\"string\",\"null\"]}", {"\"x\"", "null"}, {"1", "true"}},
    {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":1}]}",
     {"5", "\"a\""},
     {"\"ab\"", "1.5"}},
    {"{\"oneOf\":[{\"type\":\"boolean\"},{\"type\":\"object\",\"properties\":{\"v\":{\"type\":"
     "\"integer\"}},\"required\":[\"v\"]}]}",
     {"true", "{\"v\":1}"},
     {"{}", "null"}},
    {"{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},\"y\":"
     "{\"type\":\"integer\"}},\"required\":[\"x\",\"y\"],\"additionalProperties\":false}},"
     "\"type\":\"object\",\"properties\":{\"from\":{\"$ref\":\"#/$defs/pt\"},\"to\":{\"$ref\":\"#/"
     "$defs/pt\"}},\"required\":[\"from\",\"to\"]}",
     {"{\"from\":{\"x\":1,\"y\":2},\"to\":{\"x\":-3,\"y\":4}}"},
     {"{\"from\":{\"x\":1},\"to\":{\"x\":1,\"y\":2}}", "{\"from\":{\"x\":1,\"y\":2}}"}},
    {"{\"definitions\":{\"c\":{\"enum\":[\"a\",\"b\"]}},\"type\":\"array\",\"items\":{\"$ref\":"
     "\"#/definitions/c\"}}",
     {"[\"a\",\"b\"]"},
     {"[\"c\"]"}},
    {"{\"type\":\"object\",\"properties\":{\"t\":{\"type\":\"string\",\"description\":\"d\","
     "\"title\":\"T\",\"default\":\"x\"}},\"required\":[\"t\"],\"$schema\":\"https://json-schema."
     "org/draft/2020-12/schema\"}",
     {"{\"t\":\"\"}"},
     {"{}"}},
    {"{}", {"1", "{\"a\":[null]}", "\"s\""}, {"", "{"}},
    {"{\"allOf\":[{\"type\":\"integer\",\"maximum\":-5}]}", {"-5", "-123"}, {"-4", "0", "5"}},
};

START_TEST(test_schemas)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gram *g = schema_gram(cases[i].schema);
        for (int k = 0; k < 6 && cases[i].valid[k]; k++)
            ck_assert_msg(accepts(g, cases[i].valid[k]), "schema %zu rejects valid %s", i,
                          cases[i].valid[k]);
        for (int k = 0; k < 6 && cases[i].invalid[k]; k++)
            ck_assert_msg(!accepts(g, cases[i].invalid[k]), "schema %zu accepts invalid %s", i,
                          cases[i].invalid[k]);
        gram_destroy(g);
    }
}
END_TEST

/* Integer bounds are exact: every integer in a window around the range against arithmetic. */
START_TEST(test_integer_ranges)
{
    static const long long r[][2] = {{0, 0},     {0, 9},      {1, 10},    {7, 123},
                                     {-15, 27},  {-300, -12}, {99, 1000}, {5, 5},
                                     {100, 199}, {-9, 0},     {123, 4567}};
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
        char schema[200];
        snprintf(schema, sizeof(schema), "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}",
                 r[i][0], r[i][1]);
        gram *g = schema_gram(schema);
        for (long long v = r[i][0] - 60; v <= r[i][1] + 60; v++) {
            char text[32];
            snprintf(text, sizeof(text), "%lld", v);
            bool want = v >= r[i][0] && v <= r[i][1];
            ck_assert_msg(accepts(g, text) == want, "%s on %s", text, schema);
        }
        ck_assert(!accepts(g, "007") || r[i][0] > 7);
        gram_destroy(g);
    }
    /* one-sided and exclusive bounds */
    const char *one[] = {
        "{\"type\":\"integer\",\"minimum\":-7}", "{\"type\":\"integer\",\"exclusiveMinimum\":42}",
        "{\"type\":\"integer\",\"maximum\":13}", "{\"type\":\"integer\",\"exclusiveMaximum\":-20}"};
    long long lo[] = {-7, 43, -1000000, -1000000}, hi[] = {1000000, 1000000, 13, -21};
    for (int i = 0; i < 4; i++) {
        gram *g = schema_gram(one[i]);
        for (long long v = -1200; v <= 1200; v += 7) {
            char text[32];
            snprintf(text, sizeof(text), "%lld", v);
            ck_assert_msg(accepts(g, text) == (v >= lo[i] && v <= hi[i]), "%s on %s", text, one[i]);
        }
        gram_destroy(g);
    }
}
END_TEST

START_TEST(test_errors_name_pointer)
{
    struct {
        const char *schema, *key, *msg;
    } bad[] = {
        {"{\"type\":\"string\",\"pattern\":\"^a$\"}", "/pattern",
         "unsupported JSON Schema keyword"},
        {"{\"properties\":{\"a/b\":{\"type\":\"array\",\"uniqueItems\":true}}}",
         "/properties/a~1b/uniqueItems", "unsupported JSON Schema keyword 'uniqueItems'"},
        {"{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#/$defs/n\"}"
         "}}},\"$ref\":\"#/$defs/n\"}",
         "/$defs/n/properties/next/$ref", "recursive $ref"},
        {"{\"$ref\":\"#/$defs/missing\"}", "/$ref", "does not resolve"},
        {"{\"$ref\":\"http://example.com/s.json\"}", "/$ref", "not local"},
        {"{\"type\":\"string\",\"format\":\"email\"}", "/format", "unsupported format 'email'"},
        {"{\"type\":\"strin\"}", "/type", "unknown type 'strin'"},
        {"{\"type\":\"array\",\"minItems\":-1}", "/minItems", "non-negative integer"},
        {"{\"type\":\"string\",\"maxLength\":1000000}", "/maxLength", "above"},
        {"{\"type\":\"object\",\"properties\":{},\"required\":[\"x\"]}", "/required",
         "'x' is not in 'properties'"},
        {"{\"anyOf\":[]}", "/anyOf", "non-empty list"},
        {"{\"items\":[{\"type\":\"integer\"}]}", "/items", "tuple"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "/", "between the bounds"},
        {"{\"type\":\"integer\",\"maximum\":1e20}", "/maximum", "beyond"},
        {"[1]", "/", "must be an object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_loads(bad[i].schema, JSON_DECODE_ANY, NULL);
        ck_assert(s);
        char *gbnf = NULL;
        ks_diag d;
        int rc = api_schema_to_gbnf(s, &gbnf, &d);
        ck_assert_msg(rc < 0 && !gbnf, "accepted %s", bad[i].schema);
        ck_assert_msg(!strcmp(d.key, bad[i].key), "%s: key '%s', want '%s'", bad[i].schema, d.key,
                      bad[i].key);
        ck_assert_msg(strstr(d.msg, bad[i].msg), "%s: msg '%s'", bad[i].schema, d.msg);
        json_decref(s);
    }
}
END_TEST

START_TEST(test_json_object_grammar)
{
    gram *g = NULL;
    ks_diag d;
    const char *src = api_json_object_gbnf();
    ck_assert_int_eq(gram_compile(src, strlen(src), &g, &d), 0);
    ck_assert(accepts(g, "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}"));
    ck_assert(accepts(g, "{}"));
    ck_assert(!accepts(g, "[1]"));
    ck_assert(!accepts(g, "{\"a\": }"));
    gram_destroy(g);
}
END_TEST

/* A property name longer than the converter's 1 KiB formatting buffer beside
 * additionalProperties (found by the json_schema fuzz campaign: the rule was cut short and
 * did not parse). The grammar must compile and still tell the named key from the others. */
START_TEST(test_long_property_name)
{
    enum { LEN = 1500 };
    char name[LEN + 1];
    for (int i = 0; i < LEN; i++)
        name[i] = (char)('a' + (i * 7) % 26);
    name[LEN] = 0;
    char schema[LEN + 256], ok1[LEN + 32], bad[LEN + 32];
    snprintf(schema, sizeof(schema),
             "{\"type\":\"object\",\"properties\":{\"%s\":{\"type\":\"integer\"}},"
             "\"additionalProperties\":{\"type\":[\"boolean\",\"null\"]}}",
             name);
    snprintf(ok1, sizeof(ok1), "{\"%s\":12}", name);
    snprintf(bad, sizeof(bad), "{\"%s\":\"x\"}", name);
    gram *g = schema_gram(schema);
    ck_assert(accepts(g, ok1));
    ck_assert(accepts(g, "{\"other\":true}"));
    ck_assert(!accepts(g, bad));
    ck_assert(!accepts(g, "{\"other\":3}"));
    gram_destroy(g);
}
END_TEST

static Suite *json_schema_suite(void)
{
    Suite *s = suite_create("json_schema");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_schemas);
    tcase_add_test(tc, test_integer_ranges);
    tcase_add_test(tc, test_errors_name_pointer);
    tcase_add_test(tc, test_json_object_grammar);
    tcase_add_test(tc, test_long_property_name);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(json_schema_suite(), true);
}

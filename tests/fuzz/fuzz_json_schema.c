/* fuzz_json_schema.c - fuzz target for the JSON Schema -> GBNF converter.
 *
 * The input is a JSON document used as a schema. Conversion must either fail with a
 * diagnostic whose key is a JSON pointer ("/..."), or produce GBNF that compiles: a
 * converter output the grammar parser rejects is a converter bug, and aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/grammar.h"
#include "server/json_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *schema = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!schema) return 0;
    char *gbnf = NULL;
    ks_diag d;
    int rc = api_schema_to_gbnf(schema, &gbnf, &d);
    if (rc) {
        if (gbnf || (rc != KS_ERR_NOMEM && d.key[0] != '/')) abort();
    } else {
        gram *g = NULL;
        ks_diag gd;
        rc = gram_compile(gbnf, strlen(gbnf), &g, &gd);
        /* Large but legal schemas may exceed the grammar's size limit; nothing else may fail. */
        if (rc && rc != KS_ERR_RANGE && rc != KS_ERR_NOMEM) {
            fprintf(stderr, "converter output does not compile: %s\n%s\n", gd.msg, gbnf);
            abort();
        }
        gram_matcher *m = NULL;
        if (!rc && gram_matcher_create(g, NULL, &m) == 0) {
            if (gram_matcher_accept_bytes(m, "{\"a\": 1}", 8) == 0 && gram_matcher_is_done(m) &&
                !gram_matcher_can_end(m))
                abort(); /* done but cannot end: a dead state */
            gram_matcher_destroy(m);
        }
        gram_destroy(g);
        free(gbnf);
    }
    json_decref(schema);
    return 0;
}

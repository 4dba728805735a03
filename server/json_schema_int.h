/* json_schema_int.h - internal to server/json_schema*.c: the growable text buffer the
 * converter writes grammar into, and the integer-range patterns (json_schema_num.c). */
#ifndef KVSERVE_JSON_SCHEMA_INT_H
#define KVSERVE_JSON_SCHEMA_INT_H

#include <stddef.h>

#include "kvserve/base.h"

#define JS_INT_DIGITS 16 /* integers up to 16 digits, as JSON numbers from the grammar */

typedef struct js_buf {
    char *s;
    size_t n, cap;
    int oom; /* an append failed: the text is incomplete */
} js_buf;

void js_add(js_buf *b, const char *s);
void js_addn(js_buf *b, const char *s, size_t n);
void js_printf(js_buf *b, const char *fmt, ...) KS_PRINTF(2, 3);

/* Appends a parenthesised expression matching the decimal integers in the range (bounds
 * optional, |bound| < 10^15; lo <= hi when both are given). */
void js_int_range(js_buf *b, int has_lo, long long lo, int has_hi, long long hi);

#endif

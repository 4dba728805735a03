/* json_schema_num.c - the converter's text buffer, and integer ranges as grammar: the digit
 * patterns that match exactly the decimal integers in [lo, hi] (JSON Schema minimum /
 * maximum). json_schema.c builds on both; nothing here calls back into it.
 *
 * The classic construction for numeric ranges in regular languages: split [lo, hi] by digit
 * count, then for two numbers a <= z of the same length either their first digits agree
 * (emit it, recurse on the rest), or the range splits into a's first digit followed by
 * [rest of a .. 99..9], the full middle digits followed by any digits, and z's first digit
 * followed by [00..0 .. rest of z]. Negative ranges are a "-" and the range of magnitudes.
 * Numbers never have leading zeros (JSON forbids them).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_schema_int.h"

/* ---------------------------------------------------------------- text buffer */

void js_addn(js_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void js_add(js_buf *b, const char *s)
{
    js_addn(b, s, strlen(s));
}

/* Any length: a piece longer than the stack buffer (a 1 KiB property name, say) is formatted
 * again into the heap rather than dropped, since a dropped piece yields a grammar that does
 * not parse. */
void js_printf(js_buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (n < (int)sizeof(tmp)) {
        js_addn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    js_addn(b, big, (size_t)n);
    free(big);
}

static int all_digit(const char *s, int n, char c)
{
    for (int i = 0; i < n; i++)
        if (s[i] != c) return 0;
    return 1;
}

/* a and z: digit strings of the same length n, a <= z. */
static void same_len(js_buf *b, const char *a, const char *z, int n)
{
    if (n == 0) return;
    if (a[0] == z[0]) {
        js_printf(b, "\"%c\"", a[0]);
        if (n > 1) {
            js_add(b, " ");
            same_len(b, a + 1, z + 1, n - 1);
        }
        return;
    }
    char nines[24], zeros[24];
    memset(nines, '9', sizeof(nines));
    memset(zeros, '0', sizeof(zeros));
    int a_low = all_digit(a + 1, n - 1, '0'), z_high = all_digit(z + 1, n - 1, '9');
    char lo0 = a[0], hi0 = z[0];
    int first = 1;
    js_add(b, "(");
    if (!a_low) {
        js_printf(b, "\"%c\" ", a[0]);
        same_len(b, a + 1, nines, n - 1);
        lo0++;
        first = 0;
    }
    if (!z_high) hi0--;
    if (lo0 <= hi0) {
        js_printf(b, "%s[%c-%c]", first ? "" : " | ", lo0, hi0);
        if (n > 1) js_printf(b, " [0-9]{%d}", n - 1);
        first = 0;
    }
    if (!z_high) {
        js_printf(b, "%s\"%c\" ", first ? "" : " | ", z[0]);
        same_len(b, zeros, z + 1, n - 1);
    }
    js_add(b, ")");
}

static long long pow10ll(int n)
{
    long long p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

static int n_digits(long long v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* [lo, hi], 0 <= lo <= hi. */
static void nonneg_range(js_buf *b, long long lo, long long hi)
{
    int l0 = n_digits(lo), l1 = n_digits(hi);
    js_add(b, "(");
    for (int len = l0; len <= l1; len++) {
        long long a = len == l0 ? lo : pow10ll(len - 1);
        long long z = len == l1 ? hi : pow10ll(len) - 1;
        char sa[24], sz[24];
        snprintf(sa, sizeof(sa), "%lld", a);
        snprintf(sz, sizeof(sz), "%lld", z);
        if (len > l0) js_add(b, " | ");
        same_len(b, sa, sz, len);
    }
    js_add(b, ")");
}

/* [lo, infinity), lo >= 0: up to JS_INT_DIGITS digits. */
static void nonneg_from(js_buf *b, long long lo)
{
    int l0 = n_digits(lo);
    js_add(b, "(");
    nonneg_range(b, lo, pow10ll(l0) - 1);
    if (l0 < JS_INT_DIGITS) js_printf(b, " | [1-9] [0-9]{%d,%d}", l0, JS_INT_DIGITS - 1);
    js_add(b, ")");
}

void js_int_range(js_buf *b, int has_lo, long long lo, int has_hi, long long hi)
{
    if (!has_lo && !has_hi) {
        js_add(b, "(\"-\"? (\"0\" | [1-9] [0-9]{0,15}))");
        return;
    }
    js_add(b, "(");
    if (has_lo && has_hi) {
        if (lo < 0) js_add(b, "\"-\" "), nonneg_range(b, hi < 0 ? -hi : 1, -lo);
        if (lo < 0 && hi >= 0) js_add(b, " | ");
        if (hi >= 0) nonneg_range(b, lo < 0 ? 0 : lo, hi);
    } else if (has_lo) {
        if (lo < 0) js_add(b, "\"-\" "), nonneg_range(b, 1, -lo), js_add(b, " | ");
        nonneg_from(b, lo < 0 ? 0 : lo);
    } else if (hi >= 0) {
        js_add(b, "\"-\" ");
        nonneg_from(b, 1);
        js_add(b, " | ");
        nonneg_range(b, 0, hi);
    } else {
        js_add(b, "\"-\" ");
        nonneg_from(b, -hi);
    }
    js_add(b, ")");
}

/* unicode.c - UTF-8 decoding/encoding and code point flags for the tokenizers.
 *
 * Decoding is deliberately lenient and mirrors llama.cpp's unicode_cpts_from_utf8 so that
 * pre-tokenization of invalid input matches it: a lead byte with enough continuation bytes
 * decodes (overlong forms and surrogates included); anything else consumes one byte and
 * yields U+FFFD. Flag lookups binary-search the generated run table (unicode_data.c), with an
 * ASCII fast path.
 */
#include "unicode.h"

static uint32_t uni_ascii_flags[128];
static int uni_ascii_ready;

static uint32_t uni_flags_search(uint32_t cp)
{
    uint32_t lo = 0, hi = uni_run_count;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (uni_runs[mid].start <= cp) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return uni_runs[lo].flags;
}

uint32_t uni_flags(uint32_t cp)
{
    if (cp < 128) {
        /* Benign race: every thread computes the same values. */
        if (!__atomic_load_n(&uni_ascii_ready, __ATOMIC_ACQUIRE)) {
            for (uint32_t c = 0; c < 128; c++) {
                uni_ascii_flags[c] = uni_flags_search(c);
            }
            __atomic_store_n(&uni_ascii_ready, 1, __ATOMIC_RELEASE);
        }
        return uni_ascii_flags[cp];
    }
    if (cp > 0x10FFFF) {
        return 0;
    }
    return uni_flags_search(cp);
}

uint32_t uni_decode(const char *str, size_t n, size_t *off)
{
    const unsigned char *s = (const unsigned char *)str + *off;
    size_t left = n - *off;
    unsigned char c = s[0];
    if (c < 0x80) {
        *off += 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0 && left >= 2 && (s[1] & 0xC0) == 0x80) {
        *off += 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if ((c & 0xF0) == 0xE0 && left >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *off += 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    if ((c & 0xF8) == 0xF0 && left >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 &&
        (s[3] & 0xC0) == 0x80) {
        *off += 4;
        return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
    *off += 1;
    return 0xFFFD;
}

size_t uni_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | ((cp >> 18) & 0x07));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* unicode.h - internal: UTF-8 decoding and code point categories for the tokenizers.
 *
 * Categories are collapsed the way llama.cpp's unicode flags are: one flag per general
 * category major class (\p{N}, \p{L}, \p{Z}, \p{M}, \p{P}, \p{S}, \p{C}) plus "undefined"
 * for unassigned code points, and the White_Space property (regex \s) as a separate flag.
 */
#ifndef KVSERVE_UNICODE_H
#define KVSERVE_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    UNI_NUMBER = 0x01,
    UNI_LETTER = 0x02,
    UNI_SEPARATOR = 0x04,
    UNI_MARK = 0x08,
    UNI_PUNCT = 0x10,
    UNI_SYMBOL = 0x20,
    UNI_CONTROL = 0x40,
    UNI_UNDEFINED = 0x80,
    UNI_WHITESPACE = 0x100,
};

#include "unicode_data.h"

/* Flags of a code point (0 for values above U+10FFFF). */
uint32_t uni_flags(uint32_t cp);

/* Length of the UTF-8 sequence a lead byte announces (1 for continuation/invalid bytes, like
 * llama.cpp's unicode_len_utf8). */
static inline size_t uni_len_utf8(unsigned char c)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Decodes one code point at s[*off] (n bytes total), advancing *off. Lenient like llama.cpp:
 * no overlong/surrogate checks; an invalid or truncated sequence consumes one byte and gives
 * U+FFFD. */
uint32_t uni_decode(const char *s, size_t n, size_t *off);
/* Encodes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t uni_encode(uint32_t cp, char *out);

#endif

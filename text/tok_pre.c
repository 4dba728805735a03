/* tok_pre.c - pre-tokenizers of byte-level BPE vocabularies: each family's regex chain, written
 * by hand over code point flags.
 *
 * llama.cpp splits text with a list of regexes applied in turn: each regex re-splits every
 * fragment produced so far into its matches and the unmatched gaps between them (a gap stays
 * one fragment). Matching is leftmost with ordered alternation, as in ECMAScript regexes. Each
 * matcher below returns the length of the match at position i of the fragment [i, e) (0 when
 * the regex does not match there) and implements one regex of llama-vocab.cpp exactly,
 * including the backtracking of \s+(?!\S) and \s*[\r\n]+. \p{L}, \p{N}, \p{P} and \s come from
 * the generated Unicode tables; for ASCII they coincide with llama.cpp's collapsed classes.
 */
#include <string.h>

#include "tok_internal.h"
#include "unicode.h"

typedef size_t (*pre_match_fn)(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e);

#define IS_L(k) ((fl[k] & UNI_LETTER) != 0)
#define IS_N(k) ((fl[k] & UNI_NUMBER) != 0)
#define IS_WS(k) ((fl[k] & UNI_WHITESPACE) != 0)
#define IS_O(k) ((fl[k] & (UNI_LETTER | UNI_NUMBER | UNI_WHITESPACE)) == 0)
#define IS_NL(k) (cp[k] == '\r' || cp[k] == '\n')

static size_t run_mask(const uint32_t *fl, size_t i, size_t e, uint32_t mask)
{
    size_t k = i;
    while (k < e && (fl[k] & mask)) {
        k++;
    }
    return k - i;
}

static size_t run_other(const uint32_t *fl, size_t i, size_t e)
{
    size_t k = i;
    while (k < e && IS_O(k)) {
        k++;
    }
    return k - i;
}

static uint32_t ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* '(s|t|re|ve|m|ll|d), optionally ASCII case-insensitive. */
static size_t match_contraction(const uint32_t *cp, size_t i, size_t e, bool icase)
{
    if (cp[i] != '\'' || i + 1 >= e) {
        return 0;
    }
    uint32_t a = icase ? ascii_lower(cp[i + 1]) : cp[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if (i + 2 < e) {
        uint32_t b = icase ? ascii_lower(cp[i + 2]) : cp[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return 3;
        }
    }
    return 0;
}

/* \s+(?!\S): the whole whitespace run at the end of the fragment, else the run minus its last
 * character (which is followed by whitespace), else nothing. */
static size_t match_ws_not_before_nonws(const uint32_t *fl, size_t i, size_t e)
{
    size_t n = run_mask(fl, i, e, UNI_WHITESPACE);
    if (n == 0) {
        return 0;
    }
    if (i + n == e) {
        return n;
    }
    return n >= 2 ? n - 1 : 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static size_t m_gpt2(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    size_t n = match_contraction(cp, i, e, false);
    if (n) {
        return n;
    }
    bool sp = cp[i] == ' ' && i + 1 < e;
    if (sp && IS_L(i + 1)) {
        return 1 + run_mask(fl, i + 1, e, UNI_LETTER);
    }
    if (IS_L(i)) {
        return run_mask(fl, i, e, UNI_LETTER);
    }
    if (sp && IS_N(i + 1)) {
        return 1 + run_mask(fl, i + 1, e, UNI_NUMBER);
    }
    if (IS_N(i)) {
        return run_mask(fl, i, e, UNI_NUMBER);
    }
    if (sp && IS_O(i + 1)) {
        return 1 + run_other(fl, i + 1, e);
    }
    if (IS_O(i)) {
        return run_other(fl, i, e);
    }
    return match_ws_not_before_nonws(fl, i, e);
}

/* (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
 * \p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t m_llama3_common(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e,
                              size_t max_digits)
{
    size_t n = match_contraction(cp, i, e, true);
    if (n) {
        return n;
    }
    if (!IS_NL(i) && !IS_L(i) && !IS_N(i) && i + 1 < e && IS_L(i + 1)) {
        return 1 + run_mask(fl, i + 1, e, UNI_LETTER);
    }
    if (IS_L(i)) {
        return run_mask(fl, i, e, UNI_LETTER);
    }
    if (IS_N(i)) {
        n = 1;
        while (n < max_digits && i + n < e && IS_N(i + n)) {
            n++;
        }
        return n;
    }
    size_t j = (cp[i] == ' ' && i + 1 < e && IS_O(i + 1)) ? i + 1 : i;
    if (IS_O(j)) {
        size_t k = j + run_other(fl, j, e);
        while (k < e && IS_NL(k)) {
            k++;
        }
        return k - i;
    }
    if (!IS_WS(i)) {
        return 0;
    }
    size_t k = i + run_mask(fl, i, e, UNI_WHITESPACE);
    for (size_t t = k; t > i; t--) {
        if (IS_NL(t - 1)) {
            return t - i; /* \s*[\r\n]+ ends after the run's last newline */
        }
    }
    n = match_ws_not_before_nonws(fl, i, e);
    return n ? n : k - i;
}

static size_t m_llama3(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    return m_llama3_common(cp, fl, i, e, 3);
}

static size_t m_qwen2(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    return m_llama3_common(cp, fl, i, e, 1);
}

static bool is_ascii_sym(uint32_t c, bool backtick)
{
    return c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' ||
           c == '|' || (backtick && c == '`');
}

/* [\p{P}\$\+<=>\^~\|`]+ (falcon) */
static size_t m_punct_falcon(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    size_t k = i;
    while (k < e && ((fl[k] & UNI_PUNCT) || is_ascii_sym(cp[k], true))) {
        k++;
    }
    return k - i;
}

/* [\p{P}\$\+<=>\^~\|]+ (default) */
static size_t m_punct_default(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    size_t k = i;
    while (k < e && ((fl[k] & UNI_PUNCT) || is_ascii_sym(cp[k], false))) {
        k++;
    }
    return k - i;
}

/* [0-9][0-9][0-9] */
static size_t m_digits3(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)fl;
    for (size_t k = 0; k < 3; k++) {
        if (i + k >= e || cp[i + k] < '0' || cp[i + k] > '9') {
            return 0;
        }
    }
    return 3;
}

/* \p{N} */
static size_t m_number1(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)cp;
    (void)e;
    return IS_N(i) ? 1 : 0;
}

/* \p{N}+ */
static size_t m_numbers(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)cp;
    return run_mask(fl, i, e, UNI_NUMBER);
}

/* [\r\n] */
static size_t m_newline(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)fl;
    (void)e;
    return IS_NL(i) ? 1 : 0;
}

/* \s+$ */
static size_t m_trailing_ws(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)cp;
    size_t n = run_mask(fl, i, e, UNI_WHITESPACE);
    return (n && i + n == e) ? n : 0;
}

/* Character classes of the deepseek-llm regexes (code point ranges, as written there). */
static const uint32_t ds_letters[][2] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xB5, 0xB5},       {0xC0, 0xD6},
    {0xD8, 0xF6},       {0xF8, 0x1BA},      {0x1BC, 0x1BF},     {0x1C4, 0x293},
    {0x295, 0x2AF},     {0x370, 0x373},     {0x376, 0x377},     {0x37B, 0x37D},
    {0x37F, 0x37F},     {0x386, 0x386},     {0x388, 0x38A},     {0x38C, 0x38C},
    {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},
    {0x531, 0x556},     {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},
    {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},
    {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4},   {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},
    {0xA680, 0xA69B},   {0xA722, 0xA76F},   {0xA771, 0xA787},   {0xA78B, 0xA78E},
    {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
static const uint32_t ds_punct[][2] = {
    {0x21, 0x2F},     {0x3A, 0x7E},     {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF5E}, {0x2018, 0x201F}, {0x3000, 0x3002},
};
static const uint32_t ds_cjk[][2] = {{0x4E00, 0x9FA5}, {0x800, 0x4E00}, {0xAC00, 0xD7FF}};

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c)
{
    for (size_t k = 0; k < n; k++) {
        if (c >= r[k][0] && c <= r[k][1]) {
            return true;
        }
    }
    return false;
}

#define IN_DS(tab, c) in_ranges(tab, KS_ARRAY_LEN(tab), c)

/* \s?[class]+ over a deepseek range class. */
/* llama.cpp matches these classes with std::wregex after replacing non-ASCII whitespace by
 * U+000B, so such whitespace (U+3000 in ds_punct) never belongs to a class. */
static bool in_ds_class(const uint32_t *cp, const uint32_t *fl, size_t k, const uint32_t (*r)[2],
                        size_t nr)
{
    return in_ranges(r, nr, cp[k]) && !(cp[k] > 0x7F && IS_WS(k));
}

static size_t ds_ws_class(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e,
                          const uint32_t (*r)[2], size_t nr)
{
    size_t j = (IS_WS(i) && i + 1 < e && in_ds_class(cp, fl, i + 1, r, nr)) ? i + 1 : i;
    size_t k = j;
    while (k < e && in_ds_class(cp, fl, k, r, nr)) {
        k++;
    }
    return k > j ? k - i : 0;
}

static size_t m_ds_letters(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    return ds_ws_class(cp, fl, i, e, ds_letters, KS_ARRAY_LEN(ds_letters));
}

static size_t m_ds_punct(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    return ds_ws_class(cp, fl, i, e, ds_punct, KS_ARRAY_LEN(ds_punct));
}

/* [一-龥ࠀ-一가-퟿]+ */
static size_t m_ds_cjk(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)fl;
    size_t k = i;
    while (k < e && IN_DS(ds_cjk, cp[k])) {
        k++;
    }
    return k - i;
}

/* \s?\p{X}+ for a flag class (deepseek-coder). */
static size_t ws_flag_run(const uint32_t *fl, size_t i, size_t e, uint32_t mask)
{
    size_t j = (IS_WS(i) && i + 1 < e && (fl[i + 1] & mask)) ? i + 1 : i;
    size_t n = run_mask(fl, j, e, mask);
    return n ? (j - i) + n : 0;
}

static size_t m_dsc_letters(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)cp;
    return ws_flag_run(fl, i, e, UNI_LETTER);
}

static size_t m_dsc_punct(const uint32_t *cp, const uint32_t *fl, size_t i, size_t e)
{
    (void)cp;
    return ws_flag_run(fl, i, e, UNI_PUNCT);
}

typedef struct pre_chain {
    pre_match_fn steps[6];
    int n;
} pre_chain;

static pre_chain pre_chain_of(tok_pre pre)
{
    switch (pre) {
    case TOK_PRE_LLAMA3:
        return (pre_chain){{m_llama3}, 1};
    case TOK_PRE_QWEN2:
        return (pre_chain){{m_qwen2}, 1};
    case TOK_PRE_GPT2:
        return (pre_chain){{m_gpt2}, 1};
    case TOK_PRE_DEEPSEEK_LLM:
        return (pre_chain){
            {m_newline, m_ds_letters, m_ds_punct, m_trailing_ws, m_ds_cjk, m_numbers}, 6};
    case TOK_PRE_DEEPSEEK_CODER:
        return (pre_chain){{m_newline, m_dsc_letters, m_dsc_punct, m_ds_cjk, m_number1}, 5};
    case TOK_PRE_FALCON:
        return (pre_chain){{m_punct_falcon, m_gpt2, m_digits3}, 3};
    case TOK_PRE_STARCODER:
        return (pre_chain){{m_number1, m_gpt2}, 2};
    case TOK_PRE_DEFAULT:
    default:
        return (pre_chain){{m_punct_default, m_gpt2, m_numbers, m_digits3}, 4};
    }
}

size_t tok_pre_split(tok_pre pre, const uint32_t *cps, const uint32_t *fl, size_t n, uint32_t *lens,
                     uint32_t *tmp)
{
    if (n == 0) {
        return 0;
    }
    pre_chain chain = pre_chain_of(pre);
    uint32_t *cur = lens, *nxt = tmp;
    size_t n_cur = 1;
    cur[0] = (uint32_t)n;
    for (int s = 0; s < chain.n; s++) {
        size_t n_nxt = 0, start = 0;
        for (size_t f = 0; f < n_cur; f++) {
            size_t e = start + cur[f], i = start, gap = start;
            while (i < e) {
                size_t m = chain.steps[s](cps, fl, i, e);
                if (m == 0) {
                    i++;
                    continue;
                }
                if (i > gap) {
                    nxt[n_nxt++] = (uint32_t)(i - gap);
                }
                nxt[n_nxt++] = (uint32_t)m;
                i += m;
                gap = i;
            }
            if (gap < e) {
                nxt[n_nxt++] = (uint32_t)(e - gap);
            }
            start = e;
        }
        uint32_t *t = cur;
        cur = nxt;
        nxt = t;
        n_cur = n_nxt;
    }
    if (cur != lens) {
        memcpy(lens, cur, n_cur * sizeof(*lens));
    }
    return n_cur;
}

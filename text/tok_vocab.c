/* tok_vocab.c - the vocab's lookup tables, shared by every tokenizer algorithm: token text ->
 * id and merge pair -> rank (open-addressing hash maps built once at load), the growable id
 * vector, and GPT-2's byte <-> code point map. Calls nothing else in text/, so tokenizer.c,
 * tok_bpe.c and tok_load.c all depend on it and it on none of them.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- hash maps ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = mix64(h ^ k);
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    return mix64(h ^ k);
}

static uint64_t hash_u64(uint64_t x)
{
    return mix64(x);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) {
        c <<= 1;
    }
    return c;
}

int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & v->tmask;
    for (;;) {
        uint32_t slot = v->tmap[i];
        if (slot == 0) {
            return -1;
        }
        int32_t id = (int32_t)slot - 1;
        if (v->len[id] == n && memcmp(tok_text(v, id), s, n) == 0) {
            return id;
        }
        i = (i + 1) & v->tmask;
    }
}

/* Later duplicates replace earlier ones (llama.cpp: token_to_id[word] = i). */
static void tmap_insert(tok_vocab *v, int32_t id)
{
    const char *s = tok_text(v, id);
    size_t n = v->len[id];
    uint32_t i = (uint32_t)hash_bytes(s, n) & v->tmask;
    while (v->tmap[i] != 0) {
        int32_t o = (int32_t)v->tmap[i] - 1;
        if (v->len[o] == n && memcmp(tok_text(v, o), s, n) == 0) {
            break;
        }
        i = (i + 1) & v->tmask;
    }
    v->tmap[i] = (uint32_t)id + 1;
}

int32_t tok_merge_rank(const tok_vocab *v, int32_t left, int32_t right)
{
    if (!v->mkey) {
        return -1;
    }
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & v->mmask;
    while (v->mkey[i] != 0) {
        if (v->mkey[i] == key) {
            return v->mrank[i];
        }
        i = (i + 1) & v->mmask;
    }
    return -1;
}

/* First occurrence wins (llama.cpp: bpe_ranks.emplace). */
static void mmap_insert(tok_vocab *v, int32_t left, int32_t right, int32_t rank)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & v->mmask;
    while (v->mkey[i] != 0) {
        if (v->mkey[i] == key) {
            return;
        }
        i = (i + 1) & v->mmask;
    }
    v->mkey[i] = key;
    v->mrank[i] = rank;
}

int tok_index_tokens(tok_vocab *v)
{
    v->tmask = pow2_at_least((size_t)v->n_tokens * 2) - 1;
    v->tmap = calloc((size_t)v->tmask + 1, sizeof(*v->tmap));
    if (!v->tmap) {
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < v->n_tokens; i++) {
        tmap_insert(v, i);
    }
    return 0;
}

int tok_index_merges(tok_vocab *v, const int32_t *left, const int32_t *right, int32_t n)
{
    v->mmask = pow2_at_least((size_t)n * 2) - 1;
    v->mkey = calloc((size_t)v->mmask + 1, sizeof(*v->mkey));
    v->mrank = malloc(((size_t)v->mmask + 1) * sizeof(*v->mrank));
    if (!v->mkey || !v->mrank) {
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < n; i++) {
        if (left[i] >= 0 && right[i] >= 0) {
            mmap_insert(v, left[i], right[i], i);
        }
    }
    v->n_merges = n;
    return 0;
}

int tok_ids_push(tok_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *p = realloc(o->p, cap * sizeof(*p));
        if (!p) {
            return KS_ERR_NOMEM;
        }
        o->p = p;
        o->cap = cap;
    }
    o->p[o->n++] = id;
    return 0;
}

/* ---- GPT-2 byte map ---- */

const uint16_t tok_byte_to_cp[256] = {
#define R4(a) a, a + 1, a + 2, a + 3
    /* 0x00-0x20 -> U+0100..U+0120 */
    R4(256),
    R4(260),
    R4(264),
    R4(268),
    R4(272),
    R4(276),
    R4(280),
    R4(284),
    288,
    /* 0x21-0x7E map to themselves */
    33,
    34,
    35,
    R4(36),
    R4(40),
    R4(44),
    R4(48),
    R4(52),
    R4(56),
    R4(60),
    R4(64),
    R4(68),
    R4(72),
    R4(76),
    R4(80),
    R4(84),
    R4(88),
    R4(92),
    R4(96),
    R4(100),
    R4(104),
    R4(108),
    R4(112),
    R4(116),
    R4(120),
    124,
    125,
    126,
    /* 0x7F-0xA0 -> U+0121..U+0142 */
    R4(289),
    R4(293),
    R4(297),
    R4(301),
    R4(305),
    R4(309),
    R4(313),
    R4(317),
    321,
    322,
    /* 0xA1-0xAC themselves, 0xAD -> U+0143, 0xAE-0xFF themselves */
    161,
    162,
    163,
    164,
    165,
    166,
    167,
    168,
    169,
    170,
    171,
    172,
    323,
    R4(174),
    R4(178),
    R4(182),
    R4(186),
    R4(190),
    R4(194),
    R4(198),
    R4(202),
    R4(206),
    R4(210),
    R4(214),
    R4(218),
    R4(222),
    R4(226),
    R4(230),
    R4(234),
    R4(238),
    R4(242),
    R4(246),
    R4(250),
    254,
    255,
#undef R4
};

int tok_cp_to_byte(uint32_t cp)
{
    static int16_t inv[324];
    static int ready;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 324; i++) {
            inv[i] = -1;
        }
        for (int b = 0; b < 256; b++) {
            inv[tok_byte_to_cp[b]] = (int16_t)b;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    return cp < 324 ? inv[cp] : -1;
}

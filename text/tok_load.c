/* tok_load.c - builds a tok_vocab from the tokenizer.ggml.* metadata of a GGUF file.
 *
 * Defaults and overrides follow llama.cpp's llama_vocab::load: per-model default special ids,
 * the pre-tokenizer name table (with its ignore_merges / add_bos / clean_spaces quirks),
 * token types -> attributes, tokens that look like end-of-turn / FIM markers forced to CONTROL,
 * and the end-of-generation set. Every id read from the file is range-checked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode.h"

typedef struct pre_name {
    const char *name;
    tok_pre pre;
    bool clean_spaces, llama3_flags;
} pre_name;

static const pre_name pre_names[] = {
    {"default", TOK_PRE_DEFAULT, true, false},
    {"llama3", TOK_PRE_LLAMA3, true, true},
    {"llama-v3", TOK_PRE_LLAMA3, true, true},
    {"llama-bpe", TOK_PRE_LLAMA3, true, true},
    {"falcon3", TOK_PRE_LLAMA3, true, true},
    {"dbrx", TOK_PRE_LLAMA3, true, false},
    {"smaug-bpe", TOK_PRE_LLAMA3, true, false},
    {"deepseek-llm", TOK_PRE_DEEPSEEK_LLM, false, false},
    {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, false, false},
    {"falcon", TOK_PRE_FALCON, true, false},
    {"mpt", TOK_PRE_GPT2, true, false},
    {"gpt-2", TOK_PRE_GPT2, true, false},
    {"phi-2", TOK_PRE_GPT2, true, false},
    {"olmo", TOK_PRE_GPT2, true, false},
    {"jais", TOK_PRE_GPT2, true, false},
    {"roberta-bpe", TOK_PRE_GPT2, true, false},
    {"starcoder", TOK_PRE_STARCODER, true, false},
    {"refact", TOK_PRE_STARCODER, true, false},
    {"command-r", TOK_PRE_STARCODER, false, false},
    {"smollm", TOK_PRE_STARCODER, false, false},
    {"codeshell", TOK_PRE_STARCODER, true, false},
    {"exaone", TOK_PRE_STARCODER, true, false},
    {"qwen2", TOK_PRE_QWEN2, false, false},
    {"deepseek-r1-qwen", TOK_PRE_QWEN2, false, false},
    {"stablelm2", TOK_PRE_QWEN2, true, false},
    {"megrez", TOK_PRE_QWEN2, true, false},
};

/* Texts llama.cpp treats as end of generation (and forces to CONTROL). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>", "<EOT>",      "_<EOT>",  "<|end_of_text|>",
};
/* FIM markers llama.cpp forces to CONTROL. */
static const char *const fim_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>",        "\xe2\x96\x81<PRE>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",        "\xe2\x96\x81<SUF>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",        "\xe2\x96\x81<MID>",
    "<|fim_pad|>",    "<fim-pad>",    "<fim_pad>",    "<PAD>",        "<|fim_repo|>",
    "<|repo_name|>",  "<fim-repo>",   "<REPO>",       "<|file_sep|>",
};

static uint16_t attr_of_type(int32_t t)
{
    switch (t) {
    case 1:
        return TOKA_NORMAL;
    case 2:
        return TOKA_UNKNOWN;
    case 3:
        return TOKA_CONTROL;
    case 4:
        return TOKA_USER;
    case 5:
        return TOKA_UNUSED;
    case 6:
        return TOKA_BYTE;
    default:
        return 0;
    }
}

static char *gstr_dup(gguf_str s)
{
    char *p = malloc(s.len + 1);
    if (p) {
        memcpy(p, s.ptr, s.len);
        p[s.len] = 0;
    }
    return p;
}

static int load_tokens(tok_vocab *v, const gguf_file *f, ks_diag *d)
{
    gguf_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &data) != 0 || et != GGUF_TYPE_STRING ||
        n == 0 || n > INT32_MAX / 2) {
        return ks_diag_set(d, KS_ERR_FORMAT, "tokenizer.ggml.tokens missing or not a string array");
    }
    v->n_tokens = (int32_t)n;
    size_t pool = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s) != 0 || s.len > (1u << 20)) {
            return ks_diag_set(d, KS_ERR_FORMAT, "bad token string %llu", (unsigned long long)i);
        }
        pool += (s.len ? s.len : 24) + 1;
    }
    if (pool > UINT32_MAX) {
        return ks_diag_set(d, KS_ERR_FORMAT, "token strings too large");
    }
    v->pool = malloc(pool);
    v->off = malloc(n * sizeof(*v->off));
    v->len = malloc(n * sizeof(*v->len));
    v->score = calloc(n, sizeof(*v->score));
    v->attr = malloc(n * sizeof(*v->attr));
    if (!v->pool || !v->off || !v->len || !v->score || !v->attr) {
        return KS_ERR_NOMEM;
    }
    size_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s) != 0) {
            return KS_ERR_FORMAT;
        }
        v->off[i] = (uint32_t)at;
        if (s.len == 0) { /* llama.cpp renames empty tokens */
            at += (size_t)snprintf(v->pool + at, 24, "[EMPTY_%llu]", (unsigned long long)i);
        } else {
            memcpy(v->pool + at, s.ptr, s.len);
            at += s.len;
        }
        v->len[i] = (uint32_t)(at - v->off[i]);
        v->pool[at++] = 0;
        v->attr[i] = TOKA_NORMAL;
    }
    return tok_index_tokens(v);
}

static int load_scores_types(tok_vocab *v, const gguf_file *f, ks_diag *d)
{
    gguf_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, "tokenizer.ggml.scores", &et, &n, &data) == 0) {
        if (et != GGUF_TYPE_FLOAT32 || n != (uint64_t)v->n_tokens) {
            return ks_diag_set(d, KS_ERR_FORMAT, "tokenizer.ggml.scores: wrong type or length");
        }
        memcpy(v->score, data, n * sizeof(float));
    }
    if (gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &n, &data) == 0) {
        if ((et != GGUF_TYPE_INT32 && et != GGUF_TYPE_UINT32) || n != (uint64_t)v->n_tokens) {
            return ks_diag_set(d, KS_ERR_FORMAT, "tokenizer.ggml.token_type: wrong type or length");
        }
        for (uint64_t i = 0; i < n; i++) {
            int32_t t;
            memcpy(&t, (const char *)data + i * 4, 4);
            v->attr[i] = attr_of_type(t);
        }
    }
    return 0;
}

static int load_merges(tok_vocab *v, const gguf_file *f, ks_diag *d)
{
    gguf_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(f, "tokenizer.ggml.merges", &et, &n, &data) != 0 || et != GGUF_TYPE_STRING ||
        n > INT32_MAX / 2) {
        return ks_diag_set(d, KS_ERR_FORMAT, "tokenizer.ggml.merges missing or not strings");
    }
    int32_t *l = malloc((n ? n : 1) * sizeof(*l)), *r = malloc((n ? n : 1) * sizeof(*r));
    int rc = (l && r) ? 0 : KS_ERR_NOMEM;
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(f, "tokenizer.ggml.merges", i, &s) != 0) {
            rc = ks_diag_set(d, KS_ERR_FORMAT, "bad merge %llu", (unsigned long long)i);
            break;
        }
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        l[i] = r[i] = -1;
        if (sp) {
            size_t a = (size_t)(sp - s.ptr);
            l[i] = tok_find(v, s.ptr, a);
            r[i] = tok_find(v, sp + 1, s.len - a - 1);
        }
    }
    if (rc == 0) {
        rc = tok_index_merges(v, l, r, (int32_t)n);
    }
    free(l);
    free(r);
    return rc;
}

static void opt_id(const gguf_file *f, const char *key, int32_t n, int32_t *id)
{
    uint32_t u;
    if (gguf_get_u32(f, key, &u) == 0 && u < (uint32_t)n) {
        *id = (int32_t)u;
    }
}

/* FIM tokens: the metadata's ids, else the texts code models use (llama.cpp's list). */
static void find_fim(tok_vocab *v, const gguf_file *f, int32_t n)
{
    static const char *const keys[3] = {"tokenizer.ggml.fim_pre_token_id",
                                        "tokenizer.ggml.fim_suf_token_id",
                                        "tokenizer.ggml.fim_mid_token_id"};
    static const char *const texts[3][5] = {
        {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>"},
        {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>"},
        {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\xe2\x96\x81<MID>"}};
    for (int k = 0; k < 3; k++) {
        v->fim[k] = -1;
        opt_id(f, keys[k], n, &v->fim[k]);
        for (int i = 0; i < 5 && v->fim[k] < 0; i++)
            v->fim[k] = tok_find(v, texts[k][i], strlen(texts[k][i]));
    }
}

static void opt_bool(const gguf_file *f, const char *key, bool *b)
{
    bool t;
    if (gguf_get_bool(f, key, &t) == 0) {
        *b = t;
    }
}

static void mark_texts(tok_vocab *v, const char *const *texts, size_t n, uint16_t extra)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok_find(v, texts[i], strlen(texts[i]));
        if (id >= 0) {
            if (!(v->attr[id] & TOKA_CONTROL)) {
                v->attr[id] = TOKA_CONTROL;
            }
            v->attr[id] |= extra;
        }
    }
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const tok_vocab *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v->len[x] != v->len[y]) {
        return v->len[x] > v->len[y] ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

static int build_specials(tok_vocab *v)
{
    mark_texts(v, eog_texts, KS_ARRAY_LEN(eog_texts), TOKA_EOG);
    mark_texts(v, fim_texts, KS_ARRAY_LEN(fim_texts), 0);
    int32_t marks[] = {v->eos, v->eot, v->eom};
    for (size_t i = 0; i < KS_ARRAY_LEN(marks); i++) {
        if (marks[i] >= 0) {
            v->attr[marks[i]] |= TOKA_EOG;
        }
    }
    v->spm_split = v->kind == TOK_KIND_SPM;
    for (int32_t i = 0; v->spm_split && i < v->n_tokens; i++) {
        const char *t = tok_text(v, i), *m = t;
        while ((m = strstr(m + 1, "\xe2\x96\x81")) != NULL) {
            if (m - t < 3 || memcmp(m - 3, "\xe2\x96\x81", 3) != 0) {
                v->spm_split = false;
                break;
            }
        }
    }
    v->special = malloc((size_t)v->n_tokens * sizeof(*v->special));
    if (!v->special) {
        return KS_ERR_NOMEM;
    }
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (v->attr[i] & (TOKA_CONTROL | TOKA_USER | TOKA_UNKNOWN)) {
            v->special[v->n_special++] = i;
        }
    }
    qsort_r(v->special, (size_t)v->n_special, sizeof(int32_t), cmp_special, v);
    for (int b = 0; b < 256; b++) {
        char s[8];
        v->byte_tok[b] = -1;
        if (v->kind == TOK_KIND_SPM) {
            snprintf(s, sizeof(s), "<0x%02X>", b);
            v->byte_tok[b] = tok_find(v, s, 6);
            if (v->byte_tok[b] < 0) {
                s[0] = (char)b;
                v->byte_tok[b] = tok_find(v, s, 1);
            }
        } else {
            size_t n = uni_encode(tok_byte_to_cp[b], s);
            v->byte_tok[b] = tok_find(v, s, n);
        }
    }
    return 0;
}

static int load_kind(tok_vocab *v, const gguf_file *f, ks_diag *d)
{
    gguf_str model, pre;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) != 0) {
        return ks_diag_set(d, KS_ERR_FORMAT, "tokenizer.ggml.model missing");
    }
    v->eot = v->eom = v->pad = -1;
    if (gguf_str_eq(model, "llama")) {
        v->kind = TOK_KIND_SPM;
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_space_prefix = true, v->add_bos = true;
        return 0;
    }
    if (!gguf_str_eq(model, "gpt2")) {
        return ks_diag_set(d, KS_ERR_UNSUPPORTED, "unsupported tokenizer model '%.*s'",
                           (int)KS_MIN(model.len, 64), model.ptr);
    }
    v->kind = TOK_KIND_BPE;
    v->bos = 11, v->eos = 11, v->unk = -1;
    v->clean_spaces = true;
    if (gguf_get_str(f, "tokenizer.ggml.pre", &pre) != 0) {
        v->pre = TOK_PRE_DEFAULT; /* old files: llama.cpp warns and uses the default */
        return 0;
    }
    for (size_t i = 0; i < KS_ARRAY_LEN(pre_names); i++) {
        if (gguf_str_eq(pre, pre_names[i].name)) {
            v->pre = pre_names[i].pre;
            v->clean_spaces = pre_names[i].clean_spaces;
            v->ignore_merges = v->add_bos = pre_names[i].llama3_flags;
            return 0;
        }
    }
    return ks_diag_set(d, KS_ERR_UNSUPPORTED, "unsupported pre-tokenizer '%.*s'",
                       (int)KS_MIN(pre.len, 64), pre.ptr);
}

int tok_vocab_load(const gguf_file *f, tok_vocab **out, ks_diag *d)
{
    tok_vocab *v = calloc(1, sizeof(*v));
    if (!v) {
        return KS_ERR_NOMEM;
    }
    int rc = load_kind(v, f, d);
    if (rc == 0) {
        rc = load_tokens(v, f, d);
    }
    if (rc == 0) {
        rc = load_scores_types(v, f, d);
    }
    if (rc == 0 && v->kind == TOK_KIND_BPE) {
        rc = load_merges(v, f, d);
    }
    if (rc) {
        goto fail;
    }
    int32_t n = v->n_tokens;
    int32_t *defaults[] = {&v->bos, &v->eos, &v->unk};
    for (size_t i = 0; i < KS_ARRAY_LEN(defaults); i++) {
        if (*defaults[i] >= n) {
            *defaults[i] = -1;
        }
    }
    opt_id(f, "tokenizer.ggml.bos_token_id", n, &v->bos);
    opt_id(f, "tokenizer.ggml.eos_token_id", n, &v->eos);
    opt_id(f, "tokenizer.ggml.eot_token_id", n, &v->eot);
    opt_id(f, "tokenizer.ggml.eom_token_id", n, &v->eom);
    opt_id(f, "tokenizer.ggml.unknown_token_id", n, &v->unk);
    opt_id(f, "tokenizer.ggml.padding_token_id", n, &v->pad);
    find_fim(v, f, n);
    opt_bool(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
    opt_bool(f, "tokenizer.ggml.add_bos_token", &v->add_bos);
    opt_bool(f, "tokenizer.ggml.add_eos_token", &v->add_eos);
    gguf_str tmpl;
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl) == 0) {
        v->chat_template = gstr_dup(tmpl);
        if (!v->chat_template) {
            rc = KS_ERR_NOMEM;
            goto fail;
        }
    }
    rc = build_specials(v);
    if (rc) {
        goto fail;
    }
    *out = v;
    return 0;
fail:
    if (rc == KS_ERR_NOMEM) {
        ks_diag_set(d, rc, "out of memory loading the tokenizer");
    }
    tok_vocab_free(v);
    return rc;
}

void tok_vocab_free(tok_vocab *v)
{
    if (!v) {
        return;
    }
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->attr);
    free(v->tmap);
    free(v->mkey);
    free(v->mrank);
    free(v->special);
    free(v->chat_template);
    free(v);
}

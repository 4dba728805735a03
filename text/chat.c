/* chat.c - chat templates: recognises the family of a model's Jinja chat template by its
 * characteristic substrings (as llama.cpp's llm_chat_detect_template does) and formats a
 * message list the way that template renders it. No Jinja interpreter: each family is a
 * small hand-written formatter. ChatML is the fallback for unknown templates.
 */
#include <stdlib.h>
#include <string.h>

#include "kvserve/tokenizer.h"

static const char *const family_names[TOK_CHAT_COUNT] = {
    "chatml", "llama3", "llama2", "mistral", "zephyr", "phi3", "gemma",
};

static bool has(const char *s, const char *needle)
{
    return strstr(s, needle) != NULL;
}

tok_chat_family tok_chat_detect(const char *t)
{
    if (!t) {
        return TOK_CHAT_CHATML;
    }
    if (has(t, "<|im_start|>")) {
        return TOK_CHAT_CHATML;
    }
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) {
        return TOK_CHAT_LLAMA3;
    }
    if (has(t, "<start_of_turn>")) {
        return TOK_CHAT_GEMMA;
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) {
        return TOK_CHAT_PHI3;
    }
    if (has(t, "<|user|>")) {
        return TOK_CHAT_ZEPHYR;
    }
    if (has(t, "[INST]")) {
        /* llama 2 wraps the system prompt in <<SYS>>; mistral's templates do not */
        return has(t, "<<SYS>>") ? TOK_CHAT_LLAMA2 : TOK_CHAT_MISTRAL;
    }
    return TOK_CHAT_CHATML;
}

int tok_chat_family_from_name(const char *name)
{
    for (int i = 0; name && i < TOK_CHAT_COUNT; i++) {
        if (strcmp(name, family_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *tok_chat_family_name(tok_chat_family f)
{
    return (unsigned)f < TOK_CHAT_COUNT ? family_names[f] : "chatml";
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->oom) {
        return;
    }
    if (b->n + l + 1 > b->cap) {
        size_t cap = (b->n + l + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

static const char *safe(const char *s)
{
    return s ? s : "";
}

static void fmt_chatml(sbuf *b, const tok_chat_msg *m, size_t n, bool add_assistant)
{
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, safe(m[i].role));
        put(b, "\n");
        put(b, safe(m[i].content));
        put(b, "<|im_end|>\n");
    }
    if (add_assistant) {
        put(b, "<|im_start|>assistant\n");
    }
}

static void fmt_llama3(sbuf *b, const tok_chat_msg *m, size_t n, bool add_assistant)
{
    for (size_t i = 0; i < n; i++) {
        put(b, "<|start_header_id|>");
        put(b, safe(m[i].role));
        put(b, "<|end_header_id|>\n\n");
        put(b, safe(m[i].content));
        put(b, "<|eot_id|>");
    }
    if (add_assistant) {
        put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
}

/* [INST] families. llama2: the system prompt goes inside the first [INST] as <<SYS>>;
 * mistral: prepended to the first user message. The BOS of each turn is the tokenizer's job
 * for the first one (add_special) and written as "<s>" text for the later ones. */
static void fmt_inst(sbuf *b, const tok_chat_msg *m, size_t n, bool llama2, const char *eos)
{
    const char *sys = NULL;
    bool first_user = true;
    for (size_t i = 0; i < n; i++) {
        const char *role = safe(m[i].role);
        if (strcmp(role, "system") == 0) {
            sys = safe(m[i].content);
        } else if (strcmp(role, "user") == 0) {
            put(b, first_user ? "[INST] " : "<s>[INST] ");
            if (sys && first_user) {
                put(b, llama2 ? "<<SYS>>\n" : "");
                put(b, sys);
                put(b, llama2 ? "\n<</SYS>>\n\n" : "\n\n");
            }
            put(b, safe(m[i].content));
            put(b, " [/INST]");
            first_user = false;
        } else {
            put(b, " ");
            put(b, safe(m[i].content));
            put(b, eos);
        }
    }
}

static void fmt_tagged(sbuf *b, const tok_chat_msg *m, size_t n, bool add_assistant,
                       const char *end)
{
    for (size_t i = 0; i < n; i++) {
        put(b, "<|");
        put(b, safe(m[i].role));
        put(b, "|>\n");
        put(b, safe(m[i].content));
        put(b, end);
        put(b, "\n");
    }
    if (add_assistant) {
        put(b, "<|assistant|>\n");
    }
}

static void fmt_gemma(sbuf *b, const tok_chat_msg *m, size_t n, bool add_assistant)
{
    const char *sys = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *role = safe(m[i].role);
        if (strcmp(role, "system") == 0) {
            sys = safe(m[i].content); /* gemma has no system role: prefix the next user turn */
            continue;
        }
        put(b, "<start_of_turn>");
        put(b, strcmp(role, "assistant") == 0 ? "model" : role);
        put(b, "\n");
        if (sys) {
            put(b, sys);
            put(b, "\n\n");
            sys = NULL;
        }
        put(b, safe(m[i].content));
        put(b, "<end_of_turn>\n");
    }
    if (add_assistant) {
        put(b, "<start_of_turn>model\n");
    }
}

char *tok_chat_format(tok_chat_family f, const tok_chat_msg *msgs, size_t n, bool add_assistant,
                      const tok_vocab *v)
{
    (void)v;
    sbuf b = {0};
    put(&b, "");
    switch (f) {
    case TOK_CHAT_LLAMA3:
        fmt_llama3(&b, msgs, n, add_assistant);
        break;
    case TOK_CHAT_LLAMA2:
        fmt_inst(&b, msgs, n, true, "</s>");
        break;
    case TOK_CHAT_MISTRAL:
        fmt_inst(&b, msgs, n, false, "</s>");
        break;
    case TOK_CHAT_ZEPHYR:
        fmt_tagged(&b, msgs, n, add_assistant, "</s>");
        break;
    case TOK_CHAT_PHI3:
        fmt_tagged(&b, msgs, n, add_assistant, "<|end|>");
        break;
    case TOK_CHAT_GEMMA:
        fmt_gemma(&b, msgs, n, add_assistant);
        break;
    case TOK_CHAT_CHATML:
    default:
        fmt_chatml(&b, msgs, n, add_assistant);
        break;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

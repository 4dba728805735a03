/* jinja.h - a Jinja subset for chat templates: the language the tokenizer.chat_template of real
 * GGUF files is written in (Hugging Face renders it with Python Jinja2, trim_blocks and
 * lstrip_blocks on; llama-server --jinja renders it the same way).
 *
 * A template is parsed once (jinja_template_parse) and rendered many times. Each render owns a
 * jinja_ctx: an arena holding every value built for it (the caller's messages/tools and the
 * template's own intermediate values), freed at once by jinja_ctx_destroy. Values are small
 * structs passed by value; strings, lists and dicts point into the ctx's arena.
 *
 * Threads: a parsed template is read-only and may be rendered from several threads, each with
 * its own ctx.
 */
#ifndef KVSERVE_JINJA_H
#define KVSERVE_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kvserve/base.h"

typedef enum jinja_type {
    JINJA_UNDEFINED, /* a missing variable or attribute: prints "", is not defined */
    JINJA_NONE,
    JINJA_BOOL,
    JINJA_INT,
    JINJA_FLOAT,
    JINJA_STR,
    JINJA_LIST,
    JINJA_DICT,
    JINJA_MACRO, /* a {% macro %} or the caller() of a {% call %} block */
    JINJA_FUNC,  /* a built-in global function (range, namespace, raise_exception, ...) */
} jinja_type;

struct jinja_list;
struct jinja_dict;
struct jinja_node;
struct jinja_frame;

typedef struct jinja_val {
    jinja_type type;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p; /* UTF-8, not NUL-terminated */
            size_t n;
        } s;
        struct jinja_list *l;
        struct jinja_dict *d;
        struct {
            const struct jinja_node *node;
            struct jinja_frame *closure;
        } m;
        int fn;
    } u;
} jinja_val;

typedef struct jinja_template jinja_template;
typedef struct jinja_ctx jinja_ctx;

/* Parses `src` (len bytes). On error returns KS_ERR_FORMAT with d naming the line and the
 * problem. The template copies what it needs; src may be freed afterwards. */
int jinja_template_parse(const char *src, size_t len, jinja_template **out, ks_diag *d) KS_WUR;
void jinja_template_destroy(jinja_template *t);

/* A render context whose values may take at most max_bytes of memory (0: 64 MiB). */
jinja_ctx *jinja_ctx_create(size_t max_bytes);
void jinja_ctx_destroy(jinja_ctx *c);
/* The clock strftime_now() reads; defaults to time(NULL) at creation. */
void jinja_ctx_set_time(jinja_ctx *c, time_t now);
/* Binds a global variable (messages, tools, bos_token, add_generation_prompt, ...). */
int jinja_ctx_set(jinja_ctx *c, const char *name, jinja_val v) KS_WUR;

/* Value builders; all memory comes from c. A failed allocation is remembered by c and
 * reported by the next render (and jinja_ctx_ok), so builders can be chained unchecked. */
jinja_val jinja_none(void);
jinja_val jinja_bool(bool b);
jinja_val jinja_int(int64_t i);
jinja_val jinja_float(double f);
jinja_val jinja_str(jinja_ctx *c, const char *s, size_t n);
jinja_val jinja_cstr(jinja_ctx *c, const char *s);
jinja_val jinja_list_new(jinja_ctx *c);
void jinja_list_push(jinja_ctx *c, jinja_val list, jinja_val item);
jinja_val jinja_dict_new(jinja_ctx *c);
/* Sets key (insertion order is kept, as Python dicts do); replaces an existing key. */
void jinja_dict_set(jinja_ctx *c, jinja_val dict, const char *key, jinja_val v);
bool jinja_ctx_ok(const jinja_ctx *c);

/* Renders t with c's globals. *out is malloc'd and NUL-terminated (caller frees). Errors:
 * KS_ERR_INVALID for a template error at run time (undefined operation, raise_exception: d
 * carries its message), KS_ERR_FULL when the memory budget is exceeded, KS_ERR_NOMEM. */
int jinja_render(const jinja_template *t, jinja_ctx *c, char **out, size_t *out_len,
                 ks_diag *d) KS_WUR;

#endif

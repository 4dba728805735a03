/* chat_template.h - renders an OpenAI "messages" (and "tools") array through a model's Jinja
 * chat template the way llama-server --jinja does (internal to server/).
 */
#ifndef KVSERVE_CHAT_TEMPLATE_H
#define KVSERVE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <time.h>

#include <jansson.h>

#include "kvserve/jinja.h"

typedef struct api_chat_render_opts {
    const char *bos_token, *eos_token; /* texts of the model's BOS/EOS ("" when none) */
    bool add_bos, add_eos;             /* the tokenizer adds them: a rendered copy is removed */
    bool add_generation_prompt;
    const json_t *kwargs; /* chat_template_kwargs (enable_thinking, ...), or NULL */
    time_t now;           /* strftime_now() and date_string */
} api_chat_render_opts;

/* Renders messages (a JSON array of OpenAI messages) and tools (NULL or an array) into *out
 * (malloc'd). What llama-server does before and around the template is done here too:
 *   - a null content becomes "", tool-call arguments given as a JSON string are parsed into
 *     an object (templates print them with tojson);
 *   - `tools` is defined only when non-empty; date_string is the day of `now`;
 *   - a leading BOS text is removed when the tokenizer adds BOS (likewise a trailing EOS);
 *   - a final assistant message is a prefill: the reply continues it (llama-server's rule,
 *     which keeps the text up to that message's content).
 * Errors: KS_ERR_INVALID with d naming the template line (raise_exception, bad operation) or
 * the bad message; KS_ERR_FULL when rendering exceeds its memory budget. */
int api_chat_template_render(const jinja_template *t, const json_t *messages, const json_t *tools,
                             const api_chat_render_opts *o, char **out, ks_diag *d) KS_WUR;

/* A JSON value as a Jinja value in c (objects keep their key order). */
jinja_val api_json_to_jinja(jinja_ctx *c, const json_t *j);

#endif

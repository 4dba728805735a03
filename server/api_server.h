/* api_server.h - the OpenAI-compatible endpoint handlers (internal to server/): the state
 * they share (api_server) and the entry points of api.c, api_gen.c, api_json.c and
 * api_params.c. No .c file owns it, so each of those depends on it and none on another
 * through it (scripts/check_layers.py treats x.c + x.h as one module).
 *
 * api_handle is the http_server handler: it authenticates, routes, parses JSON bodies,
 * submits generation requests to the scheduler and writes JSON or SSE responses.
 * Everything runs on the loop thread.
 */
#ifndef KVSERVE_API_H
#define KVSERVE_API_H

#include <stdbool.h>

#include <jansson.h>

#include "config.h"
#include "http.h"
#include "kvserve/kvcache.h"
#include "kvserve/model.h"
#include "kvserve/persist.h"
#include "metrics.h"
#include "scheduler.h"

#define API_MAX_CHOICES 16

typedef struct api_server {
    const cfg *cfg;
    uv_loop_t *loop;    /* the loop thread's (prompt tokenization on its worker threads, timers
                           of the live view feed) */
    const model *model; /* NULL while loading */
    const tok_vocab *vocab;
    kv_pool *pool;
    sch *sch;
    metrics *metrics;
    tok_chat_family chat;        /* the family formatter (when tmpl is NULL, or as fallback) */
    struct jinja_template *tmpl; /* the model's Jinja chat template, NULL: family formatter */
    bool tmpl_fallback;          /* model.chat_template_fallback */
    int tool_format;             /* api_tool_format of the template */
    char bos_text[64], eos_text[64];
    char model_id[256];
    int32_t n_ctx;
    int32_t max_prompt;
    bool shutting_down;
    int64_t n_jobs;             /* generation requests in flight */
    struct api_client *clients; /* per-client counts of generation requests in flight */
    uint64_t next_id;
    /* Prefix cache on disk (api_kv.c): on when kvcache.persist_dir is set and usable. */
    bool persist_on;
    kv_persist_key persist_key;
} api_server;

void api_handle(http_request *req, void *ud);
/* The http_headers_fn: origin check (server.cors_origins) and API key, before the body. */
int api_on_headers(http_request *req, void *ud, char *msg, size_t cap);

/* Helpers shared by the handlers (api.c). Each answers the request and counts it. */
void api_respond_json(api_server *a, http_request *req, int status, json_t *body); /* steals */
void api_respond_error(api_server *a, http_request *req, int status, const char *msg,
                       const char *param);
/* The body as a JSON object, or NULL after answering 400. */
json_t *api_parse_body(api_server *a, http_request *req);
/* A JSON string of s with invalid UTF-8 replaced by U+FFFD. */
json_t *api_json_text(const char *s, size_t n);
json_t *api_usage_json(const sch_usage *u);
/* Token ids from a JSON array; returns the count or -1 for a bad entry (*out malloc'd). */
int32_t api_read_ids(api_server *a, json_t *arr, int32_t **out);

/* The prefix cache on disk (api_kv.c). api_kv_start checks persist_dir and restores
 * prefix.kvpc (a bad file is skipped with a warning); api_kv_autosave writes it (at shutdown
 * and every persist_interval_s); the handlers serve POST /v1/kv/save and /v1/kv/restore. */
void api_kv_start(api_server *a);
void api_kv_autosave(api_server *a);
void api_kv_save_handle(api_server *a, http_request *req);
void api_kv_restore_handle(api_server *a, http_request *req);

/* /v1/completions and /v1/chat/completions (api_gen.c). */
void api_gen_handle(api_server *a, http_request *req, bool chat);
/* The chat prompt text of a request's "messages" (and "tools", unless tool_choice is "none")
 * through the model's Jinja template (or the family formatter): malloc'd, or NULL with msg
 * set (bad messages, a template error, out of memory). */
char *api_chat_text(const api_server *a, json_t *root, bool with_tools, char *msg, size_t cap);
/* Sets up a->tmpl, a->chat and the tool-call format from the configuration and the model's
 * tokenizer.chat_template. On error (a template the engine cannot parse and no fallback)
 * returns non-zero with d set. */
int api_chat_setup(api_server *a, const cfg *c, ks_diag *d) KS_WUR;
void api_chat_teardown(api_server *a);

/* A prompt before submission: token ids, or text to tokenize in which the `plain` ranges
 * are user text (control tokens written there stay text; see tok_encode_ex). */
typedef struct api_prompt {
    char *text; /* malloc'd, or NULL when ids are given */
    size_t len;
    tok_span *plain; /* malloc'd */
    size_t n_plain;
    int32_t *ids; /* malloc'd: given, or the tokenization's result */
    int32_t n_ids;
} api_prompt;
void api_prompt_free(api_prompt *p);

/* The chat prompt of a request (api_chat_text) with every message's text marked plain, so
 * that control tokens a user writes stay text. Validates each message first (an object, a
 * known role, a content that is a string or a list of text parts); on error returns
 * KS_ERR_INVALID with msg and param ("messages[2].content") set, or KS_ERR_NOMEM. */
int api_chat_prompt(const api_server *a, json_t *root, bool with_tools, api_prompt *out, char *msg,
                    size_t cap, char *param, size_t pcap) KS_WUR;

/* Generation parameters common to both completion endpoints (api_params.c). */
typedef struct api_gen {
    int32_t n; /* choices, 1..API_MAX_CHOICES */
    sch_sampling sampling;
    int32_t max_tokens;
    const char *stops[16]; /* point into the request's JSON */
    size_t n_stops;
    bool stream;
    bool include_usage;
    bool logprobs;
    kv_policy_config *policy_config; /* malloc'd when the request names a policy */
    const kv_policy *policy;
    gram *grammar;     /* response_format / grammar / json_schema, compiled; owned */
    char *grammar_src; /* its GBNF (malloc'd): choices after the first compile their own */
    size_t grammar_len;
    int32_t *bias_ids; /* logit_bias (malloc'd) */
    float *bias;
    int32_t n_bias;
    bool echo;          /* completions: the prompt text starts the output */
    const char *suffix; /* completions: fill-in-the-middle suffix (in the request's JSON) */
    size_t suffix_len;
} api_gen;

/* Parses and validates; on error returns KS_ERR_INVALID with msg and *param set. */
int api_gen_parse(const api_server *a, json_t *root, bool chat, api_gen *g, char *msg, size_t cap,
                  const char **param) KS_WUR;
/* The structured-output fields (api_structured.c): response_format, grammar, json_schema,
 * logit_bias, and for completions echo and suffix. Called by api_gen_parse. */
int api_structured_parse(const api_server *a, json_t *root, bool chat, api_gen *g, char *msg,
                         size_t cap, const char **param) KS_WUR;
/* Frees what api_gen_parse allocated (policy config, grammar, bias) that was not handed on. */
void api_gen_release(api_gen *g);
/* Parses {"name": ..., params...} over the server's policy config. */
int api_policy_parse(const api_server *a, json_t *obj, kv_policy_config *out,
                     const kv_policy **policy, char *msg, size_t cap) KS_WUR;

#endif

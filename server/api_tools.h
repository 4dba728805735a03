/* api_tools.h - OpenAI tool calling (internal to server/): which format a chat template's
 * model writes its tool calls in, validation of "tools"/"tool_choice", and the parser that
 * turns generated text into content plus "tool_calls", whole or incrementally for streams.
 */
#ifndef KVSERVE_API_TOOLS_H
#define KVSERVE_API_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kvserve/base.h"

typedef enum api_tool_format {
    API_TOOLS_HERMES = 0, /* <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Qwen) */
    API_TOOLS_LLAMA3,     /* {"name": ..., "parameters": {...}} or <|python_tag|>{...} */
    API_TOOLS_MISTRAL,    /* [TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}] */
    API_TOOLS_PHI4,       /* <|tool_call|>{"name": ..., "arguments": {...}}<|/tool_call|> */
} api_tool_format;

/* The format of a Jinja chat template (Hermes when it shows none of the others). */
api_tool_format api_tool_format_detect(const char *template_src);
const char *api_tool_format_name(api_tool_format f);

typedef enum api_tool_choice {
    API_TOOL_CHOICE_AUTO = 0,
    API_TOOL_CHOICE_NONE,
    API_TOOL_CHOICE_REQUIRED, /* "required", or one named function */
} api_tool_choice;

/* Validates root's "tools" and "tool_choice". *choice and *forced (the named function, or
 * NULL; points into root) are set. Returns 0, or -1 with msg and *param set. */
int api_tools_parse(json_t *root, api_tool_choice *choice, const char **forced, char *msg,
                    size_t cap, const char **param);

/* The incremental parser of one generated message. Feed it the text as it grows; it tells
 * what content can be shown now and which tool calls are complete. */
typedef struct api_tool_stream {
    api_tool_format fmt;
    char *text; /* everything generated so far */
    size_t len, cap;
    size_t content_end;   /* text[0, content_end) is content for certain */
    size_t content_sent;  /* bytes of content already handed out */
    size_t scan;          /* where the next call is looked for (after the last complete one) */
    size_t first_call_at; /* offset of the first call's marker (valid when calls exist) */
    json_t *calls;        /* complete calls so far: [{"id","type","function":{name,arguments}}] */
    size_t calls_sent;    /* calls already handed out */
    uint64_t rng;
    /* The call being written (Hermes, Llama 3, Phi-4): once its name is known it gets its id,
     * and its arguments can be streamed as they grow; they become the complete call's
     * arguments byte for byte. */
    bool pend;           /* a call's id and name are known, its arguments still open */
    bool pend_announced; /* the caller sent its id and name */
    size_t pend_at;      /* offset of its marker */
    char pend_id[40], pend_name[128];
    size_t args_at;   /* offset of its arguments' '{' */
    size_t args_end;  /* one past their '}' once closed; 0 while open */
    size_t args_sent; /* bytes of the arguments handed out */
    size_t scanned;   /* the arguments are scanned up to here */
    int depth;
    bool in_str, esc, no_stream;
    long announced;        /* index in calls of the call completed after being announced, or -1 */
    size_t announced_sent; /* bytes of its arguments sent before it completed */
} api_tool_stream;

void api_tool_stream_init(api_tool_stream *s, api_tool_format fmt, uint64_t seed);
void api_tool_stream_free(api_tool_stream *s);
/* Appends generated text and re-parses. final: the message is complete (an unterminated call
 * is parsed if it holds valid JSON; otherwise it is content). Returns 0 or -1 (no memory). */
int api_tool_stream_push(api_tool_stream *s, const char *text, size_t n, bool final);
/* The arguments of the pending call that may be sent now and were not yet (none when no
 * call is pending). */
void api_tool_stream_args(api_tool_stream *s, const char **p, size_t *n);

/* The content that may be shown now and was not yet: [*off, *off + *n) of s->text (after a
 * final push with tool calls, the content outside them, without surrounding whitespace). */
void api_tool_stream_content(api_tool_stream *s, const char **p, size_t *n);

/* GBNF forcing one call (of `forced`, or of any tool when NULL) in format fmt, each tool's
 * arguments held to its "parameters" JSON Schema (server/json_schema.h). *out is malloc'd.
 * Errors: a schema the converter rejects (KS_ERR_UNSUPPORTED/INVALID, d names the tool),
 * KS_ERR_NOMEM. */
int api_tool_grammar(api_tool_format fmt, const json_t *tools, const char *forced, char **out,
                     ks_diag *d);

#endif

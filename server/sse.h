/* sse.h - server-sent event framing for streamed completions, and the stop-string filter
 * that decides which generated text may be sent.
 *
 * Framing: each event is `data: <payload>\n\n` (a payload with newlines becomes several
 * data: lines); a stream ends with `data: [DONE]\n\n`.
 *
 * Stop filter: generated text is fed piece by piece; text is released only when it cannot
 * be the start of a stop string, and a stop string itself is never released. Pure functions
 * and plain structs: usable from any thread, one thread per filter.
 */
#ifndef KVSERVE_SSE_H
#define KVSERVE_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "kvserve/base.h"

#define SSE_DONE "data: [DONE]\n\n"

/* Frames one event. Returns a malloc'd buffer (caller frees) of *out_len bytes, or NULL. */
char *sse_frame(const char *payload, size_t len, size_t *out_len);

typedef struct sse_stop {
    char **stops; /* owned copies */
    size_t n_stops;
    size_t max_len; /* longest stop string */
    char *held;     /* text not yet released */
    size_t n_held, cap_held;
    bool stopped;
} sse_stop;

/* Copies the stop strings (empty ones are ignored). Returns 0 or KS_ERR_NOMEM. */
int sse_stop_init(sse_stop *s, const char *const *stops, size_t n) KS_WUR;
void sse_stop_deinit(sse_stop *s);
/* Feeds text. Writes the bytes that are safe to send into out (cap must be at least
 * len + s->max_len) and returns their count, or a negative status. Sets s->stopped when a
 * stop string matched: the text before it is released, it and anything after are dropped,
 * and later calls release nothing. */
long sse_stop_push(sse_stop *s, const char *text, size_t len, char *out, size_t cap) KS_WUR;
/* Releases held text at the end of generation (no stop matched). Returns the byte count. */
long sse_stop_flush(sse_stop *s, char *out, size_t cap) KS_WUR;

#endif

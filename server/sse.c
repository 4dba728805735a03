/* sse.c - server-sent event framing and the stop-string filter.
 *
 * Why hold text back: a stop string can arrive split across tokens ("\n\n" as two "\n"
 * tokens). The filter keeps the longest tail of the unsent text that is a prefix of some
 * stop string; everything before that tail can no longer become part of a match and is
 * released. Invariant: held text never contains a complete stop string, and its length is
 * below the longest stop string.
 */
#include <stdlib.h>
#include <string.h>

#include "sse.h"

char *sse_frame(const char *payload, size_t len, size_t *out_len)
{
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += payload[i] == '\n';
    size_t cap = len + lines * 7 + 2;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t o = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || payload[i] == '\n') {
            memcpy(out + o, "data: ", 6);
            o += 6;
            memcpy(out + o, payload + start, i - start);
            o += i - start;
            out[o++] = '\n';
            start = i + 1;
        }
    }
    out[o++] = '\n';
    *out_len = o;
    return out;
}

int sse_stop_init(sse_stop *s, const char *const *stops, size_t n)
{
    memset(s, 0, sizeof(*s));
    if (n == 0) return 0;
    s->stops = calloc(n, sizeof(char *));
    if (!s->stops) return KS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (l == 0) continue;
        s->stops[s->n_stops] = strdup(stops[i]);
        if (!s->stops[s->n_stops]) {
            sse_stop_deinit(s);
            return KS_ERR_NOMEM;
        }
        s->n_stops++;
        if (l > s->max_len) s->max_len = l;
    }
    return 0;
}

void sse_stop_deinit(sse_stop *s)
{
    for (size_t i = 0; i < s->n_stops; i++)
        free(s->stops[i]);
    free(s->stops);
    free(s->held);
    memset(s, 0, sizeof(*s));
}

/* Length of the longest tail of buf[0..n) that is a proper prefix of a stop string. */
static size_t tail_prefix_len(const sse_stop *s, const char *buf, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < s->n_stops; i++) {
        size_t sl = strlen(s->stops[i]);
        size_t k = KS_MIN(sl - 1, n);
        for (; k > best; k--) {
            if (!memcmp(buf + n - k, s->stops[i], k)) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* Earliest position of any stop string in buf, or n if none. */
static size_t find_stop(const sse_stop *s, const char *buf, size_t n)
{
    size_t first = n;
    for (size_t i = 0; i < s->n_stops; i++) {
        size_t sl = strlen(s->stops[i]);
        for (size_t p = 0; p + sl <= n && p < first; p++) {
            if (!memcmp(buf + p, s->stops[i], sl)) {
                first = p;
                break;
            }
        }
    }
    return first;
}

long sse_stop_push(sse_stop *s, const char *text, size_t len, char *out, size_t cap)
{
    if (s->stopped) return 0;
    if (s->n_stops == 0) {
        if (len > cap) return KS_ERR_RANGE;
        memcpy(out, text, len);
        return (long)len;
    }
    size_t need = s->n_held + len;
    if (need > cap) return KS_ERR_RANGE;
    if (need + 1 > s->cap_held) {
        char *nb = realloc(s->held, need + 1);
        if (!nb) return KS_ERR_NOMEM;
        s->held = nb;
        s->cap_held = need + 1;
    }
    memcpy(s->held + s->n_held, text, len);
    s->n_held = need;
    size_t at = find_stop(s, s->held, s->n_held);
    size_t emit;
    if (at < s->n_held) {
        s->stopped = true;
        emit = at;
    } else {
        emit = s->n_held - tail_prefix_len(s, s->held, s->n_held);
    }
    memcpy(out, s->held, emit);
    if (s->stopped) {
        s->n_held = 0;
    } else {
        memmove(s->held, s->held + emit, s->n_held - emit);
        s->n_held -= emit;
    }
    return (long)emit;
}

long sse_stop_flush(sse_stop *s, char *out, size_t cap)
{
    if (s->stopped || s->n_held == 0) return 0;
    if (s->n_held > cap) return KS_ERR_RANGE;
    size_t n = s->n_held;
    memcpy(out, s->held, n);
    s->n_held = 0;
    return (long)n;
}

/* threadpool.h - a fixed pool of worker threads that run one parallel section at a time.
 *
 * tp_run(fn) runs fn(arg, ith, nth) on every thread (the caller is thread 0) and returns
 * when all have finished. Workers spin briefly between sections (decode issues thousands of
 * small sections per second) and then sleep on a condition variable.
 */
#ifndef KVSERVE_THREADPOOL_H
#define KVSERVE_THREADPOOL_H

#include "kvserve/base.h"

typedef struct tp_pool tp_pool;
typedef void (*tp_fn)(void *arg, int ith, int nth);

/* Creates a pool of n_threads (>= 1; the caller counts as one). */
int tp_create(int n_threads, tp_pool **out) KS_WUR;
void tp_destroy(tp_pool *p); /* accepts NULL */
int tp_n_threads(const tp_pool *p);
/* Runs a parallel section. Not reentrant: call from one thread at a time. */
void tp_run(tp_pool *p, tp_fn fn, void *arg);

/* Splits [0, n) into nth nearly equal parts aligned to `align`; part ith is [*b, *e). */
void tp_split(int64_t n, int64_t align, int ith, int nth, int64_t *b, int64_t *e);

#endif

/* threadpool.c - persistent workers for the forward pass.
 *
 * Why not a task queue: every matmul, norm and attention step of a forward pass is a
 * data-parallel section over all threads, thousands per second in decode. A generation
 * counter that workers spin on (then sleep on) makes a section start in well under a
 * microsecond when busy, and costs nothing when idle.
 * Invariant: `pending` counts workers that have not finished the current generation.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Spins before a worker sleeps; spinners yield the CPU every TP_YIELD_EVERY spins so that an
 * oversubscribed machine (more runnable threads than cores) still makes progress. */
#define TP_SPIN 100000
#define TP_YIELD_EVERY 2048

struct tp_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int generation;
    atomic_int pending;
    atomic_int n_sleeping;
    atomic_bool stop;
    tp_fn fn;
    void *arg;
};

typedef struct tp_worker_arg {
    tp_pool *pool;
    int ith;
} tp_worker_arg;

static inline void tp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *tp_worker_main(void *p_)
{
    tp_worker_arg *wa = p_;
    tp_pool *p = wa->pool;
    int ith = wa->ith;
    free(wa);
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < TP_SPIN) {
                if (spins % TP_YIELD_EVERY == 0)
                    sched_yield();
                else
                    tp_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        p->fn(p->arg, ith, p->n_threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

int tp_create(int n_threads, tp_pool **out)
{
    if (n_threads < 1 || n_threads > 1024) return KS_ERR_INVALID;
    tp_pool *p = calloc(1, sizeof(*p));
    if (!p) return KS_ERR_NOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) goto fail;
    for (int i = 1; i < n_threads; i++) {
        tp_worker_arg *wa = malloc(sizeof(*wa));
        if (!wa) goto fail;
        wa->pool = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, tp_worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i; /* join only the started ones */
            goto fail;
        }
    }
    *out = p;
    return KS_OK;
fail:
    tp_destroy(p);
    return KS_ERR_NOMEM;
}

void tp_destroy(tp_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->threads) {
        for (int i = 1; i < p->n_threads; i++)
            if (p->threads[i]) pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int tp_n_threads(const tp_pool *p)
{
    return p->n_threads;
}

void tp_run(tp_pool *p, tp_fn fn, void *arg)
{
    if (p->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n_threads);
    for (int spins = 1; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        if (spins % TP_YIELD_EVERY == 0)
            sched_yield();
        else
            tp_cpu_relax();
    }
}

void tp_split(int64_t n, int64_t align, int ith, int nth, int64_t *b, int64_t *e)
{
    if (align < 1) align = 1;
    int64_t units = (n + align - 1) / align;
    int64_t per = units / nth, rem = units % nth;
    int64_t ub = ith * per + (ith < rem ? ith : rem);
    int64_t ue = ub + per + (ith < rem ? 1 : 0);
    *b = ub * align < n ? ub * align : n;
    *e = ue * align < n ? ue * align : n;
}

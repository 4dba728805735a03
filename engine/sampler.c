/* sampler.c - picks the next token from logits: penalties, top-k, top-p, min-p, temperature.
 *
 * The chain follows llama.cpp's default order so outputs are comparable: penalties are
 * applied to the logits in place, then the candidate set is narrowed (top-k, then top-p on
 * the softmax of what is left, then min-p relative to the best candidate), and finally the
 * temperature scales the survivors before one draw from a xoshiro256** stream seeded through
 * splitmix64. temperature <= 0 is greedy (argmax, lowest id on ties).
 *
 * Finding the candidates never sorts the whole vocabulary: top-k keeps a k-element min-heap
 * over one pass; top-p without top-k finds the nucleus with a mass-tracking quickselect
 * (expected linear time, whatever the shape of the distribution).
 * Invariant: counts[] is all zero between calls (penalties restore it), and smp_sample
 * allocates nothing.
 */
#include "kvserve/sampler.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct cand {
    int32_t id;
    float logit;
    float w; /* exp(logit - max), set only where the nucleus search needs it */
} cand;

struct smp_sampler {
    smp_params p;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    cand *c;         /* [n_vocab] current candidates */
    cand *heap;      /* [n_vocab] selection heap */
    int32_t *counts; /* [n_vocab] occurrences in the penalty window; zero between calls */
};

/* ---- RNG ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_double(smp_sampler *s)
{
    return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53;
}

void smp_sampler_reseed(smp_sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

uint64_t smp_seed_random(void)
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    x ^= atomic_fetch_add(&counter, 1) * 0xd1b54a32d192ed03ULL;
    return splitmix64(&x);
}

/* ---- parameters and lifetime ---- */

void smp_params_default(smp_params *p)
{
    *p = (smp_params){.temperature = 1.0f,
                      .top_k = 0,
                      .top_p = 1.0f,
                      .min_p = 0.0f,
                      .repeat_penalty = 1.0f,
                      .repeat_last_n = 64,
                      .presence_penalty = 0.0f,
                      .frequency_penalty = 0.0f,
                      .seed = 0};
}

static int bad_param(ks_diag *d, const char *key, const char *what)
{
    if (d) {
        ks_diag_clear(d);
        snprintf(d->key, sizeof(d->key), "%s", key);
    }
    return ks_diag_set(d, KS_ERR_INVALID, "%s: %s", key, what);
}

int smp_params_validate(const smp_params *p, ks_diag *d)
{
    if (!(isfinite(p->temperature) && p->temperature >= 0))
        return bad_param(d, "temperature", "must be >= 0");
    if (p->top_k < 0) return bad_param(d, "top_k", "must be >= 0");
    if (!(p->top_p >= 0 && p->top_p <= 1)) return bad_param(d, "top_p", "must be in [0, 1]");
    if (!(p->min_p >= 0 && p->min_p <= 1)) return bad_param(d, "min_p", "must be in [0, 1]");
    if (!(isfinite(p->repeat_penalty) && p->repeat_penalty > 0))
        return bad_param(d, "repeat_penalty", "must be > 0");
    if (p->repeat_last_n < -1) return bad_param(d, "repeat_last_n", "must be >= -1");
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return bad_param(d, "presence_penalty", "must be in [-2, 2]");
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return bad_param(d, "frequency_penalty", "must be in [-2, 2]");
    return KS_OK;
}

int smp_sampler_create(const smp_params *p, int32_t n_vocab, smp_sampler **out)
{
    *out = NULL;
    if (n_vocab < 1 || smp_params_validate(p, NULL)) return KS_ERR_INVALID;
    smp_sampler *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc(sizeof(cand) * (size_t)n_vocab);
    s->heap = malloc(sizeof(cand) * (size_t)n_vocab);
    s->counts = calloc((size_t)n_vocab, sizeof(int32_t));
    if (!s->c || !s->heap || !s->counts) goto fail;
    smp_sampler_reseed(s, p->seed);
    *out = s;
    return KS_OK;
fail:
    smp_sampler_destroy(s);
    return KS_ERR_NOMEM;
}

void smp_sampler_destroy(smp_sampler *s)
{
    if (!s) return;
    free(s->c);
    free(s->heap);
    free(s->counts);
    free(s);
}

/* ---- candidate selection ---- */

/* a ranks before b: larger logit, then lower id. */
static inline int better(cand a, cand b)
{
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/* Min-heap on rank: h[0] is the worst kept candidate. */
static void sift_down(cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(h[w], h[l])) w = l;
        if (r < n && better(h[w], h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void sift_up(cand *h, int32_t i)
{
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!better(h[parent], h[i])) return;
        cand t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

/* The m best tokens of logits[0..n) into s->c, best first. */
static void select_top(smp_sampler *s, const float *logits, int32_t n, int32_t m)
{
    cand *h = s->heap;
    int32_t size = 0;
    for (int32_t i = 0; i < n; i++) {
        cand x = {i, logits[i], 0};
        if (size < m) {
            h[size] = x;
            sift_up(h, size++);
        } else if (better(x, h[0])) {
            h[0] = x;
            sift_down(h, size, 0);
        }
    }
    for (int32_t k = size - 1; k >= 0; k--) {
        s->c[k] = h[0];
        h[0] = h[--size];
        sift_down(h, size, 0);
    }
}

/* Applies repetition, presence and frequency penalties over the history window. */
static int apply_penalties(smp_sampler *s, float *logits, int32_t n_vocab, const int32_t *history,
                           int32_t n_history)
{
    const smp_params *p = &s->p;
    bool active =
        p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!active || p->repeat_last_n == 0 || n_history <= 0 || !history) return KS_OK;
    int32_t start = p->repeat_last_n < 0 ? 0 : KS_MAX(0, n_history - p->repeat_last_n);
    for (int32_t i = start; i < n_history; i++)
        if (history[i] < 0 || history[i] >= n_vocab) return KS_ERR_INVALID;
    for (int32_t i = start; i < n_history; i++)
        s->counts[history[i]]++;
    for (int32_t i = start; i < n_history; i++) {
        int32_t t = history[i], c = s->counts[t];
        if (c == 0) continue; /* already applied */
        float l = logits[t];
        if (p->repeat_penalty != 1.0f) l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
        logits[t] = l - (float)c * p->frequency_penalty - p->presence_penalty;
        s->counts[t] = 0;
    }
    return KS_OK;
}

/* Keeps the shortest prefix of the sorted candidates c[0..*n) whose softmax mass (with
 * normalizer exp(max) * z) reaches top_p; returns whether it was reached. */
static bool cut_top_p(const cand *c, int32_t *n, float max, double z, double top_p)
{
    double cum = 0;
    for (int32_t i = 0; i < *n; i++) {
        cum += exp((double)c[i].logit - max) / z;
        if (cum >= top_p) {
            *n = i + 1;
            return true;
        }
    }
    return false;
}

static double softmax_z(const cand *c, int32_t n, float max)
{
    double z = 0;
    for (int32_t i = 0; i < n; i++)
        z += exp((double)c[i].logit - max);
    return z;
}

/* Nucleus of the unsorted candidates c[0..n): moves the members of the shortest best-first
 * prefix whose mass (weights exp(logit - max) / z) reaches top_p to c[0..k) and returns k.
 * A quickselect on the candidate order that tracks mass instead of counts: expected O(n),
 * the same set as sorting, and no sort. */
static int32_t nucleus_select(cand *c, int32_t n, double z, double top_p)
{
    int32_t lo = 0, hi = n; /* c[0..lo) are in; the boundary lies in c[lo..hi) */
    double need = top_p * z;
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        cand t = c[mid]; /* pivot to the end, Lomuto partition: better ones first */
        c[mid] = c[hi - 1];
        c[hi - 1] = t;
        cand piv = t;
        int32_t k = lo;
        double m_hi = 0;
        for (int32_t i = lo; i < hi - 1; i++) {
            if (better(c[i], piv)) {
                m_hi += c[i].w;
                t = c[i];
                c[i] = c[k];
                c[k++] = t;
            }
        }
        c[hi - 1] = c[k];
        c[k] = piv;
        if (m_hi >= need) {
            hi = k;
            continue;
        }
        need -= m_hi;
        if (piv.w >= need) return k + 1;
        need -= piv.w;
        lo = k + 1;
    }
    return hi; /* one candidate left (it completes the mass), or rounding ran out */
}

/* top-k then top-p: fills s->c[0..*n_out) (sorted best first only after top-k). */
static void narrow_top_k_p(smp_sampler *s, const float *logits, int32_t n_vocab, float max,
                           int32_t *n_out)
{
    const smp_params *p = &s->p;
    int32_t n = n_vocab;
    if (p->top_k > 0 && p->top_k < n_vocab) {
        n = p->top_k;
        select_top(s, logits, n_vocab, n);
        if (p->top_p < 1.0f) cut_top_p(s->c, &n, max, softmax_z(s->c, n, max), p->top_p);
    } else {
        bool want_w = p->top_p < 1.0f;
        double z = 0;
        for (int32_t i = 0; i < n_vocab; i++) {
            float w = want_w ? expf(logits[i] - max) : 0.0f;
            s->c[i] = (cand){i, logits[i], w};
            z += w;
        }
        if (want_w) n = nucleus_select(s->c, n_vocab, z, p->top_p);
    }
    *n_out = n;
}

int smp_sample(smp_sampler *s, float *logits, int32_t n_vocab, const int32_t *history,
               int32_t n_history, int32_t *out_token)
{
    if (n_vocab < 1 || n_vocab > s->n_vocab) return KS_ERR_INVALID;
    for (int32_t i = 0; i < n_vocab; i++)
        if (isnan(logits[i])) logits[i] = -INFINITY;
    int rc = apply_penalties(s, logits, n_vocab, history, n_history);
    if (rc) return rc;
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    float max = logits[best];
    if (max == -INFINITY) return KS_ERR_INVALID;
    if (s->p.temperature <= 0.0f) {
        *out_token = best;
        return KS_OK;
    }
    int32_t n;
    narrow_top_k_p(s, logits, n_vocab, max, &n);
    cand *c = s->c;
    if (s->p.min_p > 0.0f) {
        /* the global argmax survives top-k and top-p, so it anchors min-p */
        float thr = max + logf(s->p.min_p);
        int32_t k = 0;
        for (int32_t i = 0; i < n; i++)
            if (c[i].logit >= thr) c[k++] = c[i];
        n = k;
    }
    /* temperature and draw; the best candidate has weight 1, so sum >= 1 */
    float inv_t = 1.0f / s->p.temperature;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += c[i].w = expf((c[i].logit - max) * inv_t);
    double u = rng_double(s) * sum;
    for (int32_t i = 0; i < n; i++) {
        u -= c[i].w;
        if (u < 0) {
            *out_token = c[i].id;
            return KS_OK;
        }
    }
    *out_token = c[n - 1].id; /* rounding: the walk ran past the end */
    return KS_OK;
}

/* ---- log-probabilities ---- */

int smp_logprobs(const float *logits, int32_t n_vocab, int32_t token, int32_t top_n,
                 float *out_logprob, int32_t *top_ids, float *top_logprobs)
{
    if (!logits || n_vocab < 1 || token < 0 || token >= n_vocab || top_n < 0 || top_n > n_vocab ||
        (top_n > 0 && (!top_ids || !top_logprobs)))
        return KS_ERR_INVALID;
    float max = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++)
        if (logits[i] > max) max = logits[i];
    if (max == -INFINITY) return KS_ERR_INVALID;
    double z = 0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (!isnan(logits[i])) z += exp((double)logits[i] - max);
    double log_z = (double)max + log(z);
    float lt = isnan(logits[token]) ? -INFINITY : logits[token];
    if (out_logprob) *out_logprob = (float)((double)lt - log_z);
    int32_t k = 0; /* kept so far in top_ids (descending, lower id first on ties) */
    for (int32_t i = 0; i < n_vocab && top_n > 0; i++) {
        float l = isnan(logits[i]) ? -INFINITY : logits[i];
        if (k == top_n && !(l > top_logprobs[k - 1])) continue; /* ids ascend: ties lose */
        int32_t j = k < top_n ? k++ : top_n - 1;
        while (j > 0 && l > top_logprobs[j - 1]) {
            top_logprobs[j] = top_logprobs[j - 1];
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_logprobs[j] = l;
        top_ids[j] = i;
    }
    for (int32_t j = 0; j < top_n; j++)
        top_logprobs[j] = (float)((double)top_logprobs[j] - log_z);
    return KS_OK;
}

/* landmark.c - building and scoring block landmarks for the `retrieval` policy.
 *
 * Three published ways to let a query pick blocks of a long context without touching their
 * keys (see landmark.h): MoBA's mean key, Quest's channel bounds and InfLLM's representative
 * tokens. MEAN is cheapest and ranks blocks by their average logit; BOUNDS never misses a
 * block that holds a key with a high logit (its score is an upper bound) but overestimates
 * blocks with spread-out keys; REPRESENTATIVE summarises the keys that mattered while the
 * block was recent. Scores are computed in double: the Quest bound's guarantee then holds
 * exactly against q·k summed in the same order (rounding is monotone). Landmarks live in
 * pages; with a spill file only the newest pages stay in RAM (landmark.h).
 */
#include "landmark.h"

#include <stdbool.h>

#include <stdlib.h>
#include <string.h>

int32_t kv_lm_width(kv_landmark kind, int32_t head_dim)
{
    return kind == KV_LANDMARK_BOUNDS ? 2 * head_dim : head_dim;
}

void kv_lm_set_init(kv_lm_set *s, kv_landmark kind, int32_t head_dim)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->head_dim = head_dim;
    s->width = kv_lm_width(kind, head_dim);
}

void kv_lm_set_deinit(kv_lm_set *s)
{
    for (int32_t p = 0; s->pages && p < s->cap_pages; p++)
        free(s->pages[p]);
    free(s->pages);
    memset(s, 0, sizeof(*s));
}

size_t kv_lm_page_bytes(const kv_lm_set *s)
{
    return (size_t)KV_LM_PAGE * (size_t)s->width * sizeof(float);
}

void kv_lm_set_spill(kv_lm_set *s, kv_spill *file, int64_t rec0, int64_t rec_stride,
                     int32_t max_ram)
{
    s->file = file;
    s->rec0 = rec0;
    s->rec_stride = rec_stride;
    s->max_ram = max_ram < 1 ? 1 : max_ram;
}

size_t kv_lm_ram_bytes(const kv_lm_set *s)
{
    int32_t n_pages = (s->n + KV_LM_PAGE - 1) / KV_LM_PAGE;
    return (size_t)(n_pages - s->n_cold) * kv_lm_page_bytes(s) +
           (size_t)s->cap_pages * sizeof(float *);
}

static void lm_mean(const float *keys, int32_t n, int32_t hd, const int32_t *pick, int32_t n_pick,
                    float *out)
{
    for (int32_t d = 0; d < hd; d++) {
        double acc = 0.0;
        for (int32_t i = 0; i < n_pick; i++)
            acc += keys[(size_t)(pick ? pick[i] : i) * hd + d];
        out[d] = (float)(acc / (double)n_pick);
    }
    (void)n;
}

static void lm_bounds(const float *keys, int32_t n, int32_t hd, float *out)
{
    float *mn = out, *mx = out + hd;
    memcpy(mn, keys, (size_t)hd * sizeof(float));
    memcpy(mx, keys, (size_t)hd * sizeof(float));
    for (int32_t i = 1; i < n; i++)
        for (int32_t d = 0; d < hd; d++) {
            float v = keys[(size_t)i * hd + d];
            mn[d] = v < mn[d] ? v : mn[d];
            mx[d] = v > mx[d] ? v : mx[d];
        }
}

/* The n_rep keys with the largest mass (ties: earlier key first). */
static int32_t lm_top_mass(const float *mass, int32_t n, int32_t n_rep, int32_t *pick)
{
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t j = k < n_rep ? k++ : n_rep;
        if (j == n_rep) {
            if (!(mass[i] > mass[pick[n_rep - 1]])) continue;
            j = n_rep - 1;
        }
        while (j > 0 && mass[i] > mass[pick[j - 1]]) {
            pick[j] = pick[j - 1];
            j--;
        }
        pick[j] = i;
    }
    return k;
}

void kv_lm_build(kv_landmark kind, const float *keys, int32_t n, int32_t hd, const float *mass,
                 int32_t n_rep, float *out)
{
    if (kind == KV_LANDMARK_BOUNDS) {
        lm_bounds(keys, n, hd, out);
        return;
    }
    bool informative = false;
    for (int32_t i = 0; mass && i < n; i++)
        informative |= mass[i] > 0.0f;
    if (kind == KV_LANDMARK_MEAN || !informative) {
        lm_mean(keys, n, hd, NULL, n, out);
        return;
    }
    n_rep = KS_MAX(1, KS_MIN(n_rep, n));
    int32_t pick_stack[256];
    int32_t *pick = n_rep <= 256 ? pick_stack : malloc((size_t)n_rep * sizeof(int32_t));
    if (!pick) {
        lm_mean(keys, n, hd, NULL, n, out);
        return;
    }
    int32_t k = lm_top_mass(mass, n, n_rep, pick);
    lm_mean(keys, n, hd, pick, k, out);
    if (pick != pick_stack) free(pick);
}

/* Writes the oldest RAM pages to the file while more than max_ram are in RAM (only full
 * pages: the newest, being filled, is never among them). */
static int lm_spill_pages(kv_lm_set *s)
{
    int32_t n_pages = (s->n + KV_LM_PAGE - 1) / KV_LM_PAGE;
    while (s->file && !s->stopped && n_pages - s->n_cold > s->max_ram) {
        int rc = kv_spill_write(s->file, s->rec0 + (int64_t)s->n_cold * s->rec_stride,
                                s->pages[s->n_cold]);
        if (rc) {
            s->stopped = true; /* keep new pages in RAM from now on */
            return rc;
        }
        free(s->pages[s->n_cold]);
        s->pages[s->n_cold++] = NULL;
    }
    return 0;
}

int kv_lm_set_push(kv_lm_set *s, const float *keys, int32_t n, const float *mass, int32_t n_rep)
{
    int32_t p = s->n / KV_LM_PAGE, r = s->n % KV_LM_PAGE;
    if (p >= s->cap_pages) { /* the index only: 8 bytes per KV_LM_PAGE blocks */
        int32_t cap = s->cap_pages < 16 ? 16 : s->cap_pages * 2;
        float **pg = realloc(s->pages, (size_t)cap * sizeof(float *));
        if (!pg) return KS_ERR_NOMEM;
        memset(pg + s->cap_pages, 0, (size_t)(cap - s->cap_pages) * sizeof(float *));
        s->pages = pg;
        s->cap_pages = cap;
    }
    if (!s->pages[p] && !(s->pages[p] = malloc(kv_lm_page_bytes(s)))) return KS_ERR_NOMEM;
    kv_lm_build(s->kind, keys, n, s->head_dim, mass, n_rep, s->pages[p] + (size_t)r * s->width);
    s->n++;
    return lm_spill_pages(s);
}

int kv_lm_page(const kv_lm_set *s, int32_t p, float *buf, const float **out)
{
    if (p < 0 || (int64_t)p * KV_LM_PAGE >= s->n) return KS_ERR_INVALID;
    if (p >= s->n_cold) {
        *out = s->pages[p];
        return 0;
    }
    *out = buf;
    return kv_spill_read(s->file, s->rec0 + (int64_t)p * s->rec_stride, buf);
}

double kv_lm_score(kv_landmark kind, const float *lm, const float *q, int32_t hd)
{
    double acc = 0.0;
    if (kind == KV_LANDMARK_BOUNDS) {
        const float *mn = lm, *mx = lm + hd;
        for (int32_t d = 0; d < hd; d++) {
            double a = (double)q[d] * mx[d], b = (double)q[d] * mn[d];
            acc += a > b ? a : b;
        }
        return acc;
    }
    for (int32_t d = 0; d < hd; d++)
        acc += (double)q[d] * lm[d];
    return acc;
}

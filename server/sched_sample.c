/* sched_sample.c - glue between a request's sampling parameters and the smp_ sampler:
 * maps sch_sampling to smp_params, keeps the token history the penalties look at, and
 * computes OpenAI logprobs from the raw logits before sampling modifies them.
 */
#include <stdlib.h>
#include <string.h>

#include "sched_sample.h"

int sch_sampler_init(sch_sampler *s, const sch_sampling *p, const int32_t *prompt,
                     int32_t n_prompt, int32_t n_vocab)
{
    memset(s, 0, sizeof(*s));
    smp_params sp;
    smp_params_default(&sp);
    sp.temperature = p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty;
    sp.repeat_last_n = p->repeat_last_n;
    sp.presence_penalty = p->presence_penalty;
    sp.frequency_penalty = p->frequency_penalty;
    sp.seed = p->has_seed ? p->seed : smp_seed_random();
    s->n_logprobs = p->n_logprobs;
    s->cap_hist = n_prompt + 256;
    s->hist = malloc((size_t)s->cap_hist * sizeof(int32_t));
    if (p->n_logprobs >= 0) s->scratch = malloc((size_t)n_vocab * sizeof(float));
    if (!s->hist || (p->n_logprobs >= 0 && !s->scratch)) {
        sch_sampler_deinit(s);
        return KS_ERR_NOMEM;
    }
    memcpy(s->hist, prompt, (size_t)n_prompt * sizeof(int32_t));
    s->n_hist = n_prompt;
    int rc = smp_sampler_create(&sp, n_vocab, &s->smp);
    if (rc) sch_sampler_deinit(s);
    return rc;
}

void sch_sampler_deinit(sch_sampler *s)
{
    smp_sampler_destroy(s->smp);
    free(s->hist);
    free(s->scratch);
    s->smp = NULL;
    s->hist = NULL;
    s->scratch = NULL;
}

void sch_sampler_accept(sch_sampler *s, int32_t tok)
{
    if (s->n_hist == s->cap_hist) {
        int32_t nc = s->cap_hist * 2;
        int32_t *nh = realloc(s->hist, (size_t)nc * sizeof(int32_t));
        if (!nh) { /* keep the newer half: penalties only look at a recent window */
            memmove(s->hist, s->hist + s->n_hist / 2,
                    (size_t)(s->n_hist - s->n_hist / 2) * sizeof(int32_t));
            s->n_hist -= s->n_hist / 2;
        } else {
            s->hist = nh;
            s->cap_hist = nc;
        }
    }
    s->hist[s->n_hist++] = tok;
}

int32_t sch_sampler_sample(sch_sampler *s, float *logits, int32_t n_vocab, sch_event *ev)
{
    /* With logprobs, sample on a copy so the raw distribution stays for smp_logprobs. */
    float *work = logits;
    if (s->n_logprobs >= 0 && s->scratch) {
        memcpy(s->scratch, logits, (size_t)n_vocab * sizeof(float));
        work = s->scratch;
    }
    int32_t tok;
    int rc = smp_sample(s->smp, work, n_vocab, s->hist, s->n_hist, &tok);
    if (rc) return rc;
    if (s->n_logprobs >= 0 && s->scratch) {
        int32_t k = KS_MIN(KS_MIN(s->n_logprobs, SCH_MAX_TOP_LOGPROBS), n_vocab);
        if (smp_logprobs(logits, n_vocab, tok, k, &ev->logprob, ev->top_ids,
                         ev->top_logprobs) == 0)
            ev->n_top = k;
    }
    return tok;
}

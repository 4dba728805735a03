/* sched_sample.c - glue between a request's sampling parameters and the smp_ sampler:
 * maps sch_sampling to smp_params, keeps the token history the penalties look at, and
 * computes OpenAI logprobs from the raw logits before sampling modifies them.
 *
 * Constraints: logit_bias is added to the logits first (so logprobs include it, as OpenAI's
 * do). A grammar is applied lazily: the token drawn from the unconstrained distribution is
 * kept when the grammar accepts it (one O(token bytes) check); only when it is rejected are
 * the logits masked (the trie walk) and the token drawn again. For a fixed distribution
 * this draws exactly from the masked one: P(t) = p(t) + (1 - p(A)) p(t) / p(A) = p(t) / p(A)
 * for t in the accepted set A, and greedy picks the same argmax. llama.cpp's sampler does the
 * same. Truncation filters (top-k/top-p) then act on the masked logits only when resampling.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_sample.h"

static int constraints_init(sch_sampler *s, const sch_constraints *c, int32_t n_vocab)
{
    if (!c) return 0;
    if (c->n_bias > 0) {
        s->bias_ids = malloc((size_t)c->n_bias * sizeof(int32_t));
        s->bias = malloc((size_t)c->n_bias * sizeof(float));
        if (!s->bias_ids || !s->bias) return KS_ERR_NOMEM;
        for (int32_t k = 0; k < c->n_bias; k++)
            if (c->bias_ids[k] < 0 || c->bias_ids[k] >= n_vocab) return KS_ERR_INVALID;
        memcpy(s->bias_ids, c->bias_ids, (size_t)c->n_bias * sizeof(int32_t));
        memcpy(s->bias, c->bias, (size_t)c->n_bias * sizeof(float));
        s->n_bias = c->n_bias;
    }
    if (c->grammar) {
        if (!c->gvocab) return KS_ERR_INVALID;
        s->work = malloc((size_t)n_vocab * sizeof(float));
        if (!s->work) return KS_ERR_NOMEM;
        return gram_matcher_create(c->grammar, c->gvocab, &s->gm);
    }
    return 0;
}

int sch_sampler_init(sch_sampler *s, const sch_sampling *p, const sch_constraints *c,
                     const int32_t *prompt, int32_t n_prompt, int32_t n_vocab)
{
    memset(s, 0, sizeof(*s));
    int rc = constraints_init(s, c, n_vocab);
    if (rc) {
        sch_sampler_deinit(s);
        return rc;
    }
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
    rc = smp_sampler_create(&sp, n_vocab, &s->smp);
    if (rc) sch_sampler_deinit(s);
    return rc;
}

void sch_sampler_deinit(sch_sampler *s)
{
    smp_sampler_destroy(s->smp);
    gram_matcher_destroy(s->gm);
    free(s->hist);
    free(s->scratch);
    free(s->work);
    free(s->bias_ids);
    free(s->bias);
    memset(s, 0, sizeof(*s));
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
    /* The sampler only returns tokens the grammar accepts, so this cannot fail; if it did,
     * the state stays as it was and the next mask still holds the grammar. */
    if (s->gm) (void)!gram_matcher_accept_token(s->gm, tok);
}

bool sch_sampler_grammar_done(const sch_sampler *s)
{
    return s->gm && gram_matcher_is_done(s->gm);
}

/* Draws from `logits` under the grammar: the unconstrained choice if it is accepted, else a
 * draw from the masked logits. */
static int grammar_sample(sch_sampler *s, const float *logits, int32_t n_vocab, int32_t *tok)
{
    memcpy(s->work, logits, (size_t)n_vocab * sizeof(float));
    int rc = smp_sample(s->smp, s->work, n_vocab, s->hist, s->n_hist, tok);
    if (rc == 0 && gram_matcher_token_ok(s->gm, *tok)) return 0;
    memcpy(s->work, logits, (size_t)n_vocab * sizeof(float));
    int32_t n_ok = gram_matcher_mask(s->gm, s->work, n_vocab);
    if (n_ok < 0) return n_ok;
    if (n_ok == 0) return KS_ERR_INVALID; /* the grammar needs a token this vocab lacks */
    return smp_sample(s->smp, s->work, n_vocab, s->hist, s->n_hist, tok);
}

int32_t sch_sampler_sample(sch_sampler *s, float *logits, int32_t n_vocab, sch_event *ev)
{
    for (int32_t k = 0; k < s->n_bias; k++)
        logits[s->bias_ids[k]] += s->bias[k];
    /* With logprobs, sample on a copy so the raw distribution stays for smp_logprobs. */
    float *work = logits;
    if (s->n_logprobs >= 0 && s->scratch) {
        memcpy(s->scratch, logits, (size_t)n_vocab * sizeof(float));
        work = s->scratch;
    }
    int32_t tok;
    int rc = s->gm ? grammar_sample(s, logits, n_vocab, &tok)
                   : smp_sample(s->smp, work, n_vocab, s->hist, s->n_hist, &tok);
    if (rc) return rc;
    if (s->n_logprobs >= 0 && s->scratch) {
        int32_t k = KS_MIN(KS_MIN(s->n_logprobs, SCH_MAX_TOP_LOGPROBS), n_vocab);
        if (smp_logprobs(logits, n_vocab, tok, k, &ev->logprob, ev->top_ids, ev->top_logprobs) == 0)
            ev->n_top = k;
    }
    return tok;
}

/* sampler.h - token sampling: penalties, top-k, top-p, min-p, temperature, seeded RNG, and
 * log-probabilities for the OpenAI `logprobs` field.
 *
 * Order of operations (llama.cpp's default chain): repetition / presence / frequency
 * penalties -> top-k -> top-p -> min-p -> temperature -> draw. temperature <= 0 is greedy:
 * the argmax of the penalized logits, lowest token id on ties.
 *
 * One smp_sampler per request; it owns its RNG state and all scratch (sized for n_vocab at
 * creation), so smp_sample allocates nothing. A sampler is used by one thread at a time.
 */
#ifndef KVSERVE_SAMPLER_H
#define KVSERVE_SAMPLER_H

#include <stdint.h>

#include "kvserve/base.h"

typedef struct smp_params {
    float temperature;       /* 0 (or less) = greedy; default 1 */
    int32_t top_k;           /* keep the k most likely tokens; 0 = off (default) */
    float top_p;             /* nucleus: smallest set with mass >= p; 1 = off (default) */
    float min_p;             /* drop tokens with p < min_p * p_max; 0 = off (default) */
    float repeat_penalty;    /* llama.cpp repetition penalty; 1 = off (default) */
    int32_t repeat_last_n;   /* history window for all penalties; default 64, 0 = no
                                penalties, -1 = the whole history given */
    float presence_penalty;  /* OpenAI: logit -= presence if the token occurred; 0 = off */
    float frequency_penalty; /* OpenAI: logit -= frequency * count; 0 = off */
    uint64_t seed;           /* RNG seed: the same seed gives the same tokens */
} smp_params;

typedef struct smp_sampler smp_sampler;

/* Neutral defaults: temperature 1, all filters and penalties off, repeat_last_n 64, seed 0. */
void smp_params_default(smp_params *p);

/* Checks ranges: temperature >= 0, top_k >= 0, top_p in [0, 1], min_p in [0, 1],
 * repeat_penalty > 0, repeat_last_n >= -1, presence/frequency in [-2, 2], all finite.
 * Returns KS_ERR_INVALID with d->key naming the field. */
int smp_params_validate(const smp_params *p, ks_diag *d) KS_WUR;

/* Creates a sampler for vocabularies of up to n_vocab tokens. Returns KS_ERR_INVALID for
 * invalid params or n_vocab < 1, KS_ERR_NOMEM. */
int smp_sampler_create(const smp_params *p, int32_t n_vocab, smp_sampler **out) KS_WUR;
void smp_sampler_destroy(smp_sampler *s); /* accepts NULL */

/* Restarts the RNG from `seed` (the params are kept). */
void smp_sampler_reseed(smp_sampler *s, uint64_t seed);

/* Picks the next token. `logits` [n_vocab] are modified in place (penalties are applied to
 * them; NaN becomes -inf). `history` [n_history] are the previous tokens (prompt and/or
 * generated, as the caller chooses) that the penalties look at, oldest first.
 * Returns KS_ERR_INVALID when n_vocab exceeds the creation size, a history token is out of
 * range, or every logit is -inf/NaN. */
int smp_sample(smp_sampler *s, float *logits, int32_t n_vocab, const int32_t *history,
               int32_t n_history, int32_t *out_token) KS_WUR;

/* Log-softmax of `logits` [n_vocab]: *out_logprob = log p(token), and the top_n most likely
 * tokens (descending, lowest id first on ties) into top_ids / top_logprobs [top_n]; top_n may
 * be 0 (arrays may then be NULL) and is at most n_vocab. Call it with the logits before
 * smp_sample modifies them. Allocates nothing. Returns KS_ERR_INVALID on bad arguments. */
int smp_logprobs(const float *logits, int32_t n_vocab, int32_t token, int32_t top_n,
                 float *out_logprob, int32_t *top_ids, float *top_logprobs) KS_WUR;

/* A seed from the clock and a process counter, for requests that give none. */
uint64_t smp_seed_random(void);

#endif

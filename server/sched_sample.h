/* sched_sample.h - the scheduler's per-sequence sampler: the smp_ sampler of a request plus
 * its token history (prompt and generated, for the penalties) and the logprobs it reports.
 * Internal to server/; worker thread only. */
#ifndef KVSERVE_SCHED_SAMPLE_H
#define KVSERVE_SCHED_SAMPLE_H

#include "kvserve/grammar.h"
#include "kvserve/sampler.h"
#include "sched_types.h"

/* Constraints on top of the sampling parameters (all optional). */
typedef struct sch_constraints {
    const gram *grammar;      /* not owned; outlives the sampler */
    const gram_vocab *gvocab; /* the token trie of the model's vocabulary (with grammar) */
    const int32_t *bias_ids;  /* copied */
    const float *bias;
    int32_t n_bias;
} sch_constraints;

typedef struct sch_sampler {
    smp_sampler *smp;
    gram_matcher *gm; /* grammar state, or NULL */
    float *work;      /* [n_vocab] logits the sampler may modify (grammar) */
    int32_t *bias_ids;
    float *bias;
    int32_t n_bias;
    int32_t n_logprobs; /* -1: none */
    int32_t *hist;      /* prompt + generated tokens */
    int32_t n_hist, cap_hist;
    float *scratch; /* [n_vocab] when logprobs are asked for */
} sch_sampler;

int sch_sampler_init(sch_sampler *s, const sch_sampling *p, const sch_constraints *c,
                     const int32_t *prompt, int32_t n_prompt, int32_t n_vocab) KS_WUR;
void sch_sampler_deinit(sch_sampler *s);
/* Picks a token from logits[n_vocab] (which it modifies: penalties); fills ev->logprob and
 * the top alternatives when asked for. Returns the token or a negative status. */
int32_t sch_sampler_sample(sch_sampler *s, float *logits, int32_t n_vocab, sch_event *ev);
/* Records a generated token for the penalties and advances the grammar. */
void sch_sampler_accept(sch_sampler *s, int32_t tok);
/* True when a grammar constrains the output and nothing more can follow. */
bool sch_sampler_grammar_done(const sch_sampler *s);

#endif

/* hybrid.c - the `hybrid` policy: full KV for retrieval heads, sinks + window for the rest.
 *
 * Papers: Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality"
 * (arXiv:2404.15574); Xiao et al., "DuoAttention: Efficient Long-Context LLM Inference with
 * Retrieval and Streaming Heads" (arXiv:2410.10819).
 *
 * The idea in plain words. Only a few heads of a model ever look far back to copy a token
 * (retrieval heads); the others attend to the first tokens (attention sinks) and to their
 * neighbourhood. So a retrieval head keeps every token of the context and every other head
 * (a streaming head) keeps n_sink + window tokens, StreamingLLM's set, through the same
 * eviction step as sink_window (sink_recent.c). Which heads retrieve is measured once per
 * model by `kvserve profile-heads` and read from the head-profile file named by `profile`
 * (head_profile.h). Without a profile every head is treated as a retrieval head (the policy
 * then equals full attention) and a warning says so.
 *
 * Positions are the original ones (pos = idx) for every head: a streaming head's window keeps
 * its true relative distances and its sinks stay at the start, as in the model's training.
 * The per-(layer, KV head) tables already hold different tokens per head, so nothing else
 * changes: attention reads each table's blocks as they are.
 *
 * Invariant: after every chunk each streaming table holds at most n_sink + window tokens
 * (n_sink + max(window, chunk) while a chunk goes in); retrieval tables hold every token.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/sink_recent.h"
#include "kvserve/head_profile.h"
#include "kvserve/kvcache.h"
#include "kvserve/policy_args.h"

typedef struct hy_params {
    int32_t n_sink;                  /* first tokens a streaming head keeps */
    int32_t window;                  /* recent tokens a streaming head keeps */
    char profile[KV_PARAM_PATH_MAX]; /* head-profile file, "none" = no profile */
} hy_params;

#define HY_NO_PROFILE "none"

extern const kv_policy_desc kv_policy_desc_hybrid;
_Static_assert(sizeof(hy_params) <= KV_POLICY_PARAMS_BYTES, "parameters fit the config");

typedef struct hy_state {
    int32_t n_layer, n_head_kv, n_sink, window;
    uint8_t *keep_full; /* [n_layer * n_head_kv] */
    int32_t *keep;
    int64_t cap_keep;
} hy_state;

static void hy_free(kv_seq *seq, void *state)
{
    (void)seq;
    hy_state *s = state;
    if (!s) return;
    free(s->keep_full);
    free(s->keep);
    free(s);
}

/* The classification of the profile, checked against the sequence's shape. */
static int hy_load_profile(hy_state *s, const char *path)
{
    kv_head_profile hp;
    ks_diag d;
    int rc = kv_head_profile_load(path, &hp, &d);
    if (!rc && (rc = kv_head_profile_check_shape(&hp, s->n_layer, s->n_head_kv, &d)))
        kv_head_profile_free(&hp);
    if (rc) {
        ks_warn("hybrid: %s", d.msg);
        return rc == KS_ERR_NOMEM ? rc : KS_ERR_INVALID;
    }
    memcpy(s->keep_full, hp.keep_full, (size_t)s->n_layer * s->n_head_kv);
    kv_head_profile_free(&hp);
    return 0;
}

static int hy_init(kv_seq *seq, const void *config, void **state)
{
    const kv_policy_args *a = config;
    hy_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(a ? a->config : NULL, &kv_policy_desc_hybrid, &mi, &p);
    if (p.n_sink < 0 || p.window < 1 || !memchr(p.profile, 0, sizeof(p.profile)))
        return KS_ERR_INVALID;
    hy_state *s = calloc(1, sizeof(*s));
    if (!s) return KS_ERR_NOMEM;
    s->n_layer = kv_seq_n_layer(seq);
    s->n_head_kv = kv_seq_n_head_kv(seq);
    s->n_sink = p.n_sink;
    s->window = p.window;
    s->keep_full = malloc((size_t)s->n_layer * s->n_head_kv);
    int rc = s->keep_full ? 0 : KS_ERR_NOMEM;
    if (!rc && strcmp(p.profile, HY_NO_PROFILE) != 0) {
        rc = hy_load_profile(s, p.profile);
    } else if (!rc) {
        static atomic_bool warned;
        if (!atomic_exchange(&warned, true))
            ks_warn("hybrid: no head profile (run kvserve profile-heads): every head keeps "
                    "the full context");
        memset(s->keep_full, 1, (size_t)s->n_layer * s->n_head_kv);
    }
    if (rc) {
        hy_free(seq, s);
        return rc;
    }
    *state = s;
    return 0;
}

/* Trims every streaming table to sinks + the last `recent` tokens. */
static int hy_trim(kv_seq *seq, hy_state *s, int32_t recent)
{
    for (int32_t i = 0; i < s->n_layer * s->n_head_kv; i++) {
        if (s->keep_full[i]) continue;
        kv_head_table *t = kv_seq_table(seq, i / s->n_head_kv, i % s->n_head_kv);
        if ((int64_t)t->n_tok <= (int64_t)s->n_sink + recent) continue;
        bool changed;
        int rc = kv_sink_recent_keep(t, s->n_sink, recent, &s->keep, &s->cap_keep, &changed);
        if (rc) return rc;
    }
    return 0;
}

/* Room for the chunk: the chunk's last token then sees sinks + the window ending at itself. */
static int hy_before_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    hy_state *s = kv_seq_policy_state(seq);
    return hy_trim(seq, s, KS_MAX(0, s->window - chunk->n_new));
}

static int hy_after_chunk(kv_seq *seq, const kv_chunk *chunk)
{
    (void)chunk;
    hy_state *s = kv_seq_policy_state(seq);
    return hy_trim(seq, s, s->window);
}

static const kv_policy kv_policy_hybrid = {
    .name = "hybrid",
    .init = hy_init,
    .free = hy_free,
    .before_chunk = hy_before_chunk,
    .after_chunk = hy_after_chunk,
};

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */

static const kv_param_desc hy_params_table[] = {
    {"n_sink", KV_PARAM_INT, offsetof(hy_params, n_sink), 0, 1 << 20, 4, NULL, NULL, false,
     "first tokens a streaming head keeps (attention sinks)"},
    {"window", KV_PARAM_INT, offsetof(hy_params, window), 1, 1 << 24, 64, NULL, NULL, false,
     "most recent tokens a streaming head keeps"},
    {"profile", KV_PARAM_PATH, offsetof(hy_params, profile), 0, 0, 0, HY_NO_PROFILE, NULL, true,
     "head-profile file from `kvserve profile-heads`; `none`: every head keeps everything "
     "(server-only: a request cannot make the server read a file)"},
};

/* A streaming head keeps C/8 + 4 tokens (StreamingLLM's 4 sinks on top of a C/8 window),
 * C/32 of them sinks: on kjv-tiny 16 sinks + 52 recent give a lower held-out perplexity
 * than 4 + 64 (19.67 vs 19.77; full 19.32). With one keep_full head in eight, the KV held
 * at the trained length C is 1/8 + 7/8 * (1/8 + 4/C), 24.1% of full attention's at 512. */
static void hy_derive(void *params, uint64_t set, const kv_model_info *info)
{
    hy_params *p = params;
    const kv_policy_desc *d = &kv_policy_desc_hybrid;
    int32_t c = kv_model_ctx(info);
    if (!kv_param_was_set(d, set, "n_sink")) p->n_sink = KS_MAX(1, c / 32);
    if (!kv_param_was_set(d, set, "window")) p->window = KS_MAX(8, c / 8 + 4 - p->n_sink);
}

static const kv_param_rule hy_rules[] = {
    {"n_sink", "context_length / 32"}, {"window", "context_length / 8 + 4 - n_sink"}, {NULL, NULL}};
/* A named profile must exist and parse (its shape is checked against the model when a
 * sequence starts). */
static int hy_validate(const void *params, const char *table, ks_diag *d)
{
    const hy_params *p = params;
    if (strcmp(p->profile, HY_NO_PROFILE) == 0) return KS_OK;
    kv_head_profile hp;
    ks_diag pd;
    int rc = kv_head_profile_load(p->profile, &hp, &pd);
    if (!rc) {
        kv_head_profile_free(&hp);
        return KS_OK;
    }
    char key[96];
    snprintf(key, sizeof(key), "%s.profile", table);
    return ks_diag_key(d, rc == KS_ERR_RANGE ? KS_ERR_RANGE : KS_ERR_INVALID, key, "%.400s",
                       pd.msg);
}

/* Retrieval heads keep every token: one table may hold the whole sequence. */
static int64_t hy_admission(const void *params, int64_t n_tokens, int64_t chunk, int32_t n_layer,
                            int32_t *dense_layers)
{
    (void)params;
    (void)chunk;
    (void)n_layer;
    (void)dense_layers;
    return n_tokens;
}

const kv_policy_desc kv_policy_desc_hybrid = {
    .name = "hybrid",
    .summary = "Retrieval heads (from a head profile) keep every token; the other heads keep "
               "sinks + a recent window.",
    .reference = "Retrieval heads (Wu et al., arXiv:2404.15574), DuoAttention (Xiao et al., "
                 "arXiv:2410.10819)",
    .ops = &kv_policy_hybrid,
    .params_table = hy_params_table,
    .n_params = (int32_t)KS_ARRAY_LEN(hy_params_table),
    .params_size = sizeof(hy_params),
    .validate = hy_validate,
    .admission = hy_admission,
    .derive = hy_derive,
    .rules = hy_rules,
};

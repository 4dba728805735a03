/* model.h - the forward pass over GGUF weights: llama (Llama 2/3.x), qwen2, qwen3, gemma3
 * (text) and phi3, one pass driven by a per-architecture description (model_arch.c).
 *
 * A `model` holds the mmapped weights, hyper-parameters and the tokenizer; it is immutable
 * after loading and shared by all workers. A `model_ctx` holds one worker's scratch buffers
 * and thread pool; it runs batches of sequences, each with its own KV cache (kv_seq). The
 * batch's tokens go through every weight matrix together (one matmul per weight per step),
 * attention runs per sequence through the shared attention core over the spans its KV
 * policy chooses.
 */
#ifndef KVSERVE_MODEL_H
#define KVSERVE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kvserve/attention.h"
#include "kvserve/base.h"
#include "kvserve/gguf.h"
#include "kvserve/rope.h"
#include "kvserve/tokenizer.h"

typedef struct kv_seq kv_seq; /* kvserve/kvcache.h */

typedef enum model_arch {
    MODEL_ARCH_LLAMA = 0,
    MODEL_ARCH_QWEN2 = 1,
    MODEL_ARCH_QWEN3 = 2,
    MODEL_ARCH_GEMMA3 = 3,
    MODEL_ARCH_PHI3 = 4
} model_arch;
typedef enum model_rope { MODEL_ROPE_NORM = 0, MODEL_ROPE_NEOX = 2 } model_rope;

typedef struct model_hparams {
    model_arch arch;
    char arch_name[16];
    char name[64]; /* general.name, may be empty */
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    float rms_eps;
    float rope_theta;
    float rope_freq_scale; /* 1 / linear scaling factor */
    model_rope rope_type;
    bool tied_output;
    bool has_qkv_bias;
    int32_t n_rot;        /* rotated dimensions per head (== head_dim unless partial) */
    int32_t n_swa;        /* sliding window of the local layers (gemma3); 0 = none */
    float rope_theta_swa; /* rope base of the sliding-window layers */
    float logit_softcap;  /* final logit soft-capping (0 = off) */
    /* YaRN, from rope.scaling.* (ext_factor 0 = off) */
    float yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
    int32_t n_ctx_orig; /* rope.scaling.original_context_length, else n_ctx_train */
} model_hparams;

typedef struct model model;

/* Loads a GGUF model. Errors name what is wrong (unsupported arch or tensor type, missing
 * tensor, shape mismatch). The tokenizer is loaded from the same file. */
int model_load(const char *path, model **out, ks_diag *d) KS_WUR;
void model_free(model *m); /* accepts NULL */
const model_hparams *model_get_hparams(const model *m);
const tok_vocab *model_get_vocab(const model *m);
/* Bytes of weights in the mapping. */
uint64_t model_weight_bytes(const model *m);
/* The rotary embedding of `layer` (its base, window layers' own base, frequency factors,
 * YaRN); layer -1 = the global layers' one. What KV policies that re-position keys use. */
rope_params model_rope_params(const model *m, int32_t layer);
/* The sliding window of `layer` in tokens (keys it sees, itself included); 0 = global. */
int32_t model_layer_window(const model *m, int32_t layer);
/* All layers' windows ([n_layer], for kv_seq_params.layer_window), or NULL if the model has
 * no sliding-window layers. */
const int32_t *model_layer_windows(const model *m);
/* The rotary embedding of the sliding-window layers (the global one if there are none). */
rope_params model_rope_params_window(const model *m);
/* Tells the model the context its sequences run with (tokens per sequence). Phi-3 su/longrope
 * files then use rope_factors_long when n_ctx, padded up to a multiple of 256 as llama.cpp
 * pads it, exceeds rope.scaling.original_context_length, else rope_factors_short (the choice
 * before any call). No effect on other models. Call before contexts run forwards (not thread
 * safe against a running forward); the last call wins for every context of the model. */
void model_set_n_ctx(model *m, int32_t n_ctx);
/* Whether the rotary embedding uses Phi-3's long factors (see model_set_n_ctx). */
bool model_uses_long_rope(const model *m);

typedef struct model_ctx_params {
    int32_t n_threads;        /* worker threads (>= 1) */
    int32_t max_batch_tokens; /* tokens per forward call over all sequences, e.g. 512 */
    int32_t max_seqs;         /* sequences per forward call */
    bool llama_flash;         /* attention as llama.cpp's CPU flash-attention kernel computes
                                 it (llama-perplexity's default); slow, for comparisons */
    bool llama_numerics;      /* emulate llama.cpp's numerics (activation quantisation is
                                 always on; this adds f16 rounding in attention) */
} model_ctx_params;

typedef struct model_ctx model_ctx;
int model_ctx_create(const model *m, const model_ctx_params *p, model_ctx **out) KS_WUR;
void model_ctx_destroy(model_ctx *c);

/* One sequence's part of a batch. The tokens continue the sequence: their sequence indices
 * are kv_seq's tokens-seen count onward. */
typedef struct model_seq_batch {
    kv_seq *kv;
    const int32_t *tokens;
    int32_t n_tokens;
    /* Logits out: if all_logits, [n_tokens][n_vocab], else [n_vocab] for the last token.
     * May be NULL when no logits are wanted (prefill chunk that is not the last). */
    float *logits;
    bool all_logits;
    bool prompt_chunk; /* the tokens belong to the prompt (prefill) */
    bool prompt_last;  /* this chunk completes the prompt (policies compress after it) */
} model_seq_batch;

/* Runs the batch: appends every sequence's tokens to its KV cache and writes logits.
 * Errors: KS_ERR_INVALID (too many tokens, bad token id), KS_ERR_FULL (KV budget) — on
 * error no sequence's cache is changed beyond what its policy already evicted. */
int model_forward(model_ctx *c, model_seq_batch *seqs, int32_t n_seqs) KS_WUR;

#endif

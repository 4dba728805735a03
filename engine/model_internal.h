/* model_internal.h - private structures of the model runtime (engine/model*.c). */
#ifndef KVSERVE_MODEL_INTERNAL_H
#define KVSERVE_MODEL_INTERNAL_H

#include "core/matmul.h"
#include "core/threadpool.h"
#include "kvserve/model.h"

typedef struct model_layer {
    mm_vec attn_norm;      /* [n_embd] */
    mm_weight wq;          /* [n_embd] -> [n_head*head_dim] */
    mm_weight wk;          /* [n_embd] -> [n_head_kv*head_dim] */
    mm_weight wv;          /* [n_embd] -> [n_head_kv*head_dim] */
    mm_weight wo;          /* [n_head*head_dim] -> [n_embd] */
    mm_vec bq, bk, bv;     /* qwen2 biases, else NULL */
    mm_vec q_norm, k_norm; /* [head_dim] per-head RMSNorm before RoPE (qwen3, gemma3) */
    mm_vec post_attn_norm; /* [n_embd] on the attention output (gemma3) */
    mm_vec ffn_norm;       /* [n_embd] */
    mm_weight w_gate;      /* [n_embd] -> [n_ff] */
    mm_weight w_up;        /* [n_embd] -> [n_ff] */
    mm_weight w_down;      /* [n_ff] -> [n_embd] */
    mm_vec post_ffn_norm;  /* [n_embd] on the FFN output (gemma3) */
    int32_t window;        /* sliding window in tokens; 0 = global layer */
    int32_t rope;          /* which of the model's rope variants: 0 global, 1 window layers */
} model_layer;

/* What distinguishes the architectures; the forward pass reads these flags instead of
 * branching on the architecture (model_arch.c holds the table). */
enum {
    ARCH_QKV_FUSED = 1u << 0,  /* attn_qkv.weight: Q, K and V rows in one tensor (phi3) */
    ARCH_FFN_FUSED = 1u << 1,  /* ffn_up.weight holds gate rows then up rows (phi3) */
    ARCH_QK_NORM = 1u << 2,    /* attn_q_norm / attn_k_norm per head (qwen3, gemma3) */
    ARCH_POST_NORMS = 1u << 3, /* post_attention_norm and post_ffw_norm (gemma3) */
    ARCH_EMBD_SCALE = 1u << 4, /* embeddings times sqrt(n_embd) (gemma3) */
    ARCH_GELU = 1u << 5,       /* GELU (tanh) gated FFN instead of SiLU (gemma3) */
    ARCH_Q_SCALE = 1u << 6,    /* Q scaled before attention, scores unscaled (gemma3, phi3) */
    ARCH_SWA_6 = 1u << 7,      /* every 6th layer global, the others sliding-window (gemma3) */
    ARCH_ROPE_FREQS = 1u << 8, /* optional rope_freqs.weight (llama 3.1+) */
    ARCH_ROPE_LONG = 1u << 9,  /* rope_factors_short/long.weight (phi3 su/longrope) */
};

typedef struct model_arch_desc {
    const char *name;
    model_arch arch;
    model_rope rope_type;
    unsigned flags;
} model_arch_desc;

/* The description of an architecture name; NULL if unsupported. */
const model_arch_desc *model_arch_find(const char *name);
/* "llama, qwen2, ..." for error messages. */
const char *model_arch_names(void);
/* Reads the architecture-specific metadata (windows, rope variants, soft-capping) into hp and
 * sets each layer's window and rope variant. */
int model_arch_hparams(const gguf_file *f, const model_arch_desc *a, model_hparams *hp,
                       model_layer *layers, ks_diag *d) KS_WUR;

struct model {
    gguf_file *file;
    model_hparams hp;
    tok_vocab *vocab;
    mm_weight tok_embd;  /* [n_embd] x n_vocab rows */
    mm_vec output_norm;  /* [n_embd] */
    mm_weight output;    /* [n_embd] -> [n_vocab]; == tok_embd when tied */
    model_layer *layers; /* [n_layer] */
    const model_arch_desc *desc;
    mm_vec rope_factors; /* the factors in use [n_rot/2]: rope_freqs, or Phi-3's short or
                            long ones (model_set_n_ctx picks); NULL if none */
    mm_vec rope_short;   /* Phi-3 rope_factors_short / _long [n_rot/2]; NULL if absent */
    mm_vec rope_long;
    int32_t *layer_window; /* [n_layer] windows, NULL without sliding-window layers */
    uint64_t weight_bytes;
};

#endif

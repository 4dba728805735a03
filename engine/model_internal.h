/* model_internal.h - private structures of the model runtime (engine/model*.c). */
#ifndef KVSERVE_MODEL_INTERNAL_H
#define KVSERVE_MODEL_INTERNAL_H

#include "kvserve/model.h"
#include "core/matmul.h"
#include "core/threadpool.h"

typedef struct model_layer {
    mm_vec attn_norm;       /* [n_embd] */
    mm_weight wq;           /* [n_embd] -> [n_head*head_dim] */
    mm_weight wk;           /* [n_embd] -> [n_head_kv*head_dim] */
    mm_weight wv;           /* [n_embd] -> [n_head_kv*head_dim] */
    mm_weight wo;           /* [n_head*head_dim] -> [n_embd] */
    mm_vec bq, bk, bv;      /* qwen2 biases, else NULL */
    mm_vec ffn_norm;        /* [n_embd] */
    mm_weight w_gate;       /* [n_embd] -> [n_ff] */
    mm_weight w_up;         /* [n_embd] -> [n_ff] */
    mm_weight w_down;       /* [n_ff] -> [n_embd] */
} model_layer;

struct model {
    gguf_file *file;
    model_hparams hp;
    tok_vocab *vocab;
    mm_weight tok_embd;   /* [n_embd] x n_vocab rows */
    mm_vec output_norm;   /* [n_embd] */
    mm_weight output;     /* [n_embd] -> [n_vocab]; == tok_embd when tied */
    model_layer *layers;  /* [n_layer] */
    uint64_t weight_bytes;
};

#endif

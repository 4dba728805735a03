/* model_arch.c - the architecture description table and the metadata that only some
 * architectures have (sliding windows, per-layer rope bases, soft-capping).
 *
 * One forward pass (model.c) serves every architecture; what differs is declared here as
 * flags (fused tensors, extra norms, activation, scaling, window pattern) and read by the
 * loader and the forward pass. Adding an architecture that only recombines these features is
 * one table row. The conventions follow what llama.cpp's converter writes into GGUF files:
 * Gemma's norm weights are stored with the +1 already added, so every norm is plain x*w.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

static const model_arch_desc k_archs[] = {
    {"llama", MODEL_ARCH_LLAMA, MODEL_ROPE_NORM, ARCH_ROPE_FREQS},
    {"qwen2", MODEL_ARCH_QWEN2, MODEL_ROPE_NEOX, 0},
    {"qwen3", MODEL_ARCH_QWEN3, MODEL_ROPE_NEOX, ARCH_QK_NORM},
    {"gemma3", MODEL_ARCH_GEMMA3, MODEL_ROPE_NEOX,
     ARCH_QK_NORM | ARCH_POST_NORMS | ARCH_EMBD_SCALE | ARCH_GELU | ARCH_Q_SCALE | ARCH_SWA_6},
    {"phi3", MODEL_ARCH_PHI3, MODEL_ROPE_NEOX,
     ARCH_QKV_FUSED | ARCH_FFN_FUSED | ARCH_Q_SCALE | ARCH_ROPE_LONG},
};

const model_arch_desc *model_arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof(k_archs) / sizeof(k_archs[0]); i++)
        if (!strcmp(k_archs[i].name, name)) return &k_archs[i];
    return NULL;
}

const char *model_arch_names(void)
{
    return "llama, qwen2, qwen3, gemma3, phi3";
}

static int arch_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t *out,
                    ks_diag *d)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_u32(f, key, out);
    if (rc == KS_ERR_NOT_FOUND) return KS_OK;
    if (rc) return ks_diag_set(d, rc, "metadata key '%s' has a bad type or value", key);
    return KS_OK;
}

static int arch_f32(const gguf_file *f, const char *arch, const char *suffix, float *out,
                    ks_diag *d)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_f32(f, key, out);
    if (rc == KS_ERR_NOT_FOUND) return KS_OK;
    if (rc) return ks_diag_set(d, rc, "metadata key '%s' has a bad type or value", key);
    return KS_OK;
}

int model_arch_hparams(const gguf_file *f, const model_arch_desc *a, model_hparams *hp,
                       model_layer *layers, ks_diag *d)
{
    uint32_t swa = 0;
    int rc;
    hp->rope_theta_swa = hp->rope_theta;
    if ((rc = arch_f32(f, a->name, "final_logit_softcapping", &hp->logit_softcap, d))) return rc;
    if (a->flags & ARCH_SWA_6) {
        /* llama.cpp: the window from metadata, local layers use base 10000 (unless the
         * file says otherwise), every 6th layer is global */
        if ((rc = arch_u32(f, a->name, "attention.sliding_window", &swa, d))) return rc;
        hp->rope_theta_swa = 10000.0f;
        if ((rc = arch_f32(f, a->name, "rope.freq_base_swa", &hp->rope_theta_swa, d))) return rc;
        if (swa > (1u << 30) || !(hp->rope_theta_swa > 0.0f))
            return ks_diag_set(d, KS_ERR_FORMAT, "%s: bad sliding window %u or rope base", a->name,
                               swa);
    }
    hp->n_swa = (int32_t)swa;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        bool local = swa > 0 && il % 6 < 5;
        layers[il].window = local ? hp->n_swa : 0;
        layers[il].rope = local ? 1 : 0;
    }
    return KS_OK;
}

rope_params model_rope_params(const model *m, int32_t layer)
{
    const model_hparams *hp = &m->hp;
    bool local = layer >= 0 && layer < hp->n_layer && m->layers[layer].rope == 1;
    rope_params rp = {.kind = hp->rope_type == MODEL_ROPE_NEOX ? ROPE_NEOX : ROPE_NORM,
                      .head_dim = hp->head_dim,
                      .theta = local ? hp->rope_theta_swa : hp->rope_theta,
                      .freq_scale = local ? 1.0f : hp->rope_freq_scale,
                      .n_rot = hp->n_rot,
                      .freq_factors = local ? NULL : m->rope_factors.data,
                      .ext_factor = local ? 0.0f : hp->yarn_ext_factor,
                      .attn_factor = local ? 1.0f : hp->yarn_attn_factor,
                      .beta_fast = hp->yarn_beta_fast,
                      .beta_slow = hp->yarn_beta_slow,
                      .n_ctx_orig = hp->n_ctx_orig};
    return rp;
}

/* llama.cpp (llama_model::get_rope_factors) takes Phi-3's long factors when the context a
 * sequence runs with exceeds the original trained one, the short ones otherwise; its context
 * is the requested one padded up to a multiple of 256, so the comparison uses that too. The
 * rope.scaling.attn_factor magnitude applies with either set (read at load). */
void model_set_n_ctx(model *m, int32_t n_ctx)
{
    if (!(m->desc->flags & ARCH_ROPE_LONG) || n_ctx <= 0) return;
    int64_t padded = ((int64_t)n_ctx + 255) / 256 * 256;
    m->rope_factors = padded > m->hp.n_ctx_orig ? m->rope_long : m->rope_short;
}

bool model_uses_long_rope(const model *m)
{
    return m->rope_long.data && m->rope_factors.data == m->rope_long.data;
}

rope_params model_rope_params_window(const model *m)
{
    for (int32_t l = 0; l < m->hp.n_layer; l++)
        if (m->layers[l].window > 0) return model_rope_params(m, l);
    return model_rope_params(m, -1);
}

const int32_t *model_layer_windows(const model *m)
{
    return m->layer_window;
}

int32_t model_layer_window(const model *m, int32_t layer)
{
    if (layer < 0 || layer >= m->hp.n_layer) return 0;
    return m->layers[layer].window;
}

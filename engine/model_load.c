/* model_load.c - builds a `model` from a GGUF file: hyper-parameters from the metadata,
 * weight views into the mapping (nothing is copied), and the tokenizer.
 *
 * Every tensor's type and shape is checked against the hyper-parameters here, so the
 * forward pass can trust them: a file that would make it read out of bounds is rejected
 * with the tensor's name and what was expected.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/repack.h"
#include "model_internal.h"

static int get_arch_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t *out,
                        bool required, ks_diag *d)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_u32(f, key, out);
    if (rc == KS_ERR_NOT_FOUND && !required) return KS_OK;
    if (rc != KS_OK) {
        snprintf(d->key, sizeof(d->key), "%s", key);
        return ks_diag_set(d, rc == KS_ERR_NOT_FOUND ? KS_ERR_FORMAT : rc, "metadata key '%s' %s",
                           key, rc == KS_ERR_NOT_FOUND ? "is missing" : "has a bad type or value");
    }
    return KS_OK;
}

static int get_arch_f32(const gguf_file *f, const char *arch, const char *suffix, float *out,
                        ks_diag *d)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_f32(f, key, out);
    if (rc == KS_ERR_NOT_FOUND) return KS_OK;
    if (rc != KS_OK) return ks_diag_set(d, rc, "metadata key '%s' has a bad type or value", key);
    return KS_OK;
}

/* rope.scaling.*: none, linear (factor) or yarn (factor, original context, ext/attn factors,
 * betas, with llama.cpp's defaults); the older rope.scale_linear key too. */
static int read_rope_scaling(const gguf_file *f, const char *a, model_hparams *hp, ks_diag *d)
{
    float factor = 0.0f;
    uint32_t orig = 0;
    char key[128];
    gguf_str s;
    int rc;
    bool yarn = false;
    if ((rc = get_arch_u32(f, a, "rope.scaling.original_context_length", &orig, false, d)))
        return rc;
    hp->n_ctx_orig = orig ? (int32_t)orig : hp->n_ctx_train;
    snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
    if (gguf_get_str(f, key, &s) == KS_OK && !gguf_str_eq(s, "none")) {
        yarn = gguf_str_eq(s, "yarn");
        if (!yarn && !gguf_str_eq(s, "linear"))
            return ks_diag_set(d, KS_ERR_UNSUPPORTED,
                               "rope scaling type '%.*s' is not supported (none, linear, yarn)",
                               (int)s.len, s.ptr);
        if ((rc = get_arch_f32(f, a, "rope.scaling.factor", &factor, d))) return rc;
    } else if ((rc = get_arch_f32(f, a, "rope.scale_linear", &factor, d))) {
        return rc;
    }
    if (factor > 0.0f) hp->rope_freq_scale = 1.0f / factor;
    hp->yarn_ext_factor = yarn ? 1.0f : 0.0f;
    hp->yarn_attn_factor = 1.0f;
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    /* Phi-3.5 / Phi-4-mini long-context files: a magnitude scale of cos and sin that
     * llama.cpp applies at every context length (with the short factors too) */
    if ((rc = get_arch_f32(f, a, "rope.scaling.attn_factor", &hp->yarn_attn_factor, d))) return rc;
    if (yarn) {
        if ((rc = get_arch_f32(f, a, "rope.scaling.yarn_ext_factor", &hp->yarn_ext_factor, d)) ||
            (rc = get_arch_f32(f, a, "rope.scaling.yarn_attn_factor", &hp->yarn_attn_factor, d)) ||
            (rc = get_arch_f32(f, a, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, d)) ||
            (rc = get_arch_f32(f, a, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, d)))
            return rc;
    }
    if (!(hp->rope_freq_scale > 0.0f) || !isfinite(hp->rope_freq_scale))
        return ks_diag_set(d, KS_ERR_FORMAT, "bad rope scaling factor");
    return KS_OK;
}

static int read_hparams(const gguf_file *f, model_hparams *hp, ks_diag *d)
{
    gguf_str s;
    if (gguf_get_str(f, "general.architecture", &s) != KS_OK)
        return ks_diag_set(d, KS_ERR_FORMAT, "metadata key 'general.architecture' is missing");
    if (s.len >= sizeof(hp->arch_name))
        return ks_diag_set(d, KS_ERR_UNSUPPORTED, "unsupported architecture (name too long)");
    memcpy(hp->arch_name, s.ptr, s.len);
    hp->arch_name[s.len] = 0;
    const model_arch_desc *desc = model_arch_find(hp->arch_name);
    if (!desc)
        return ks_diag_set(d, KS_ERR_UNSUPPORTED, "unsupported architecture '%s' (supported: %s)",
                           hp->arch_name, model_arch_names());
    hp->arch = desc->arch;
    hp->rope_type = desc->rope_type;
    if (gguf_get_str(f, "general.name", &s) == KS_OK) {
        size_t n = s.len < sizeof(hp->name) - 1 ? s.len : sizeof(hp->name) - 1;
        memcpy(hp->name, s.ptr, n);
        hp->name[n] = 0;
    }
    const char *a = hp->arch_name;
    uint32_t ctx = 2048, embd = 0, nl = 0, nff = 0, nh = 0, nhkv = 0, rope_dim = 0, key_len = 0;
    int rc;
    if ((rc = get_arch_u32(f, a, "context_length", &ctx, false, d))) return rc;
    if ((rc = get_arch_u32(f, a, "embedding_length", &embd, true, d))) return rc;
    if ((rc = get_arch_u32(f, a, "block_count", &nl, true, d))) return rc;
    if ((rc = get_arch_u32(f, a, "feed_forward_length", &nff, true, d))) return rc;
    if ((rc = get_arch_u32(f, a, "attention.head_count", &nh, true, d))) return rc;
    nhkv = nh;
    if ((rc = get_arch_u32(f, a, "attention.head_count_kv", &nhkv, false, d))) return rc;
    if ((rc = get_arch_u32(f, a, "rope.dimension_count", &rope_dim, false, d))) return rc;
    if ((rc = get_arch_u32(f, a, "attention.key_length", &key_len, false, d))) return rc;
    if (embd == 0 || embd > 65536 || nl == 0 || nl > 1024 || nh == 0 || nh > 1024 || nhkv == 0 ||
        nh % nhkv != 0 || (key_len == 0 && embd % nh != 0) || nff == 0 || nff > 1 << 20)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "inconsistent hyper-parameters: n_embd %u, n_layer %u, n_head %u, "
                           "n_head_kv %u, n_ff %u",
                           embd, nl, nh, nhkv, nff);
    hp->n_ctx_train = (int32_t)ctx;
    hp->n_embd = (int32_t)embd;
    hp->n_layer = (int32_t)nl;
    hp->n_ff = (int32_t)nff;
    hp->n_head = (int32_t)nh;
    hp->n_head_kv = (int32_t)nhkv;
    /* attention.key_length sets the head size when it is not n_embd / n_head (gemma3,
     * qwen3); values must have the same size */
    hp->head_dim = key_len ? (int32_t)key_len : (int32_t)(embd / nh);
    uint32_t val_len = 0;
    if ((rc = get_arch_u32(f, a, "attention.value_length", &val_len, false, d))) return rc;
    if (val_len && (int32_t)val_len != hp->head_dim)
        return ks_diag_set(d, KS_ERR_UNSUPPORTED,
                           "attention.value_length %u differs from key_length %d", val_len,
                           hp->head_dim);
    if (hp->head_dim % 2 != 0 || hp->head_dim > 256 || hp->head_dim < 2)
        return ks_diag_set(d, KS_ERR_UNSUPPORTED, "head dimension %d is not supported",
                           hp->head_dim);
    hp->n_rot = rope_dim ? (int32_t)rope_dim : hp->head_dim;
    if (hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "rope.dimension_count %u is not an even number "
                           "<= the head dimension %d",
                           rope_dim, hp->head_dim);
    hp->rms_eps = 1e-5f;
    hp->rope_theta = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    if ((rc = get_arch_f32(f, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps, d))) return rc;
    if ((rc = get_arch_f32(f, a, "rope.freq_base", &hp->rope_theta, d))) return rc;
    if ((rc = read_rope_scaling(f, a, hp, d))) return rc;
    if (!(hp->rms_eps > 0.0f) || !(hp->rope_theta > 0.0f))
        return ks_diag_set(d, KS_ERR_FORMAT, "bad rms epsilon or rope base");
    return KS_OK;
}

static int bind_weight(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out,
                       mm_weight *w, bool required, ks_diag *d)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        if (!required) return KS_ERR_NOT_FOUND;
        return ks_diag_set(d, KS_ERR_FORMAT, "tensor '%s' is missing", name);
    }
    if (!qt_type_supported(t->type))
        return ks_diag_set(d, KS_ERR_UNSUPPORTED,
                           "unsupported tensor type %s in %s (supported: F32, F16, BF16, Q4_0, "
                           "Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)",
                           gguf_ggml_type_name(t->type), name);
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return ks_diag_set(d, KS_ERR_FORMAT,
                           "tensor '%s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                           (long long)n_in, (long long)n_out);
    w->data = t->data;
    w->type = (qt_type)t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = qt_row_bytes(w->type, n_in);
    if (w->row_bytes == 0)
        return ks_diag_set(d, KS_ERR_FORMAT, "tensor '%s': row of %lld is not whole blocks", name,
                           (long long)n_in);
    return KS_OK;
}

static int bind_vec(const gguf_file *f, const char *name, int64_t n, mm_vec *v, bool required,
                    ks_diag *d)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        if (!required) return KS_OK;
        return ks_diag_set(d, KS_ERR_FORMAT, "tensor '%s' is missing", name);
    }
    int64_t total = 1;
    for (uint32_t i = 0; i < t->n_dims; i++)
        total *= t->ne[i];
    if (t->type != QT_F32 || total != n)
        return ks_diag_set(d, KS_ERR_FORMAT, "tensor '%s' must be F32 with %lld elements", name,
                           (long long)n);
    v->data = t->data;
    v->n = n;
    return KS_OK;
}

/* A view of rows [row0, row0 + n_out) of a fused weight (phi3's attn_qkv and ffn_up): rows
 * are contiguous, so each part is an ordinary weight and its products equal the fused
 * product's rows exactly. */
static mm_weight weight_rows(const mm_weight *w, int64_t row0, int64_t n_out)
{
    mm_weight v = *w;
    v.data = (const char *)w->data + (size_t)row0 * w->row_bytes;
    v.n_out = n_out;
    return v;
}

static int bind_layer(const gguf_file *f, const model *m, int il, model_layer *L, ks_diag *d)
{
    const model_hparams *hp = &m->hp;
    unsigned fl = m->desc->flags;
    char nm[96];
    int64_t e = hp->n_embd, q = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    mm_weight fused;
    int rc;
#define W(field, suffix, nin, nout)                                                                \
    snprintf(nm, sizeof(nm), "blk.%d.%s", il, suffix);                                             \
    if ((rc = bind_weight(f, nm, nin, nout, &L->field, true, d))) return rc;
#define V(field, suffix, n, req)                                                                   \
    snprintf(nm, sizeof(nm), "blk.%d.%s", il, suffix);                                             \
    if ((rc = bind_vec(f, nm, n, &L->field, req, d))) return rc;
    V(attn_norm, "attn_norm.weight", e, true);
    if (fl & ARCH_QKV_FUSED) {
        W(wq, "attn_qkv.weight", e, q + 2 * kv);
        fused = L->wq;
        L->wq = weight_rows(&fused, 0, q);
        L->wk = weight_rows(&fused, q, kv);
        L->wv = weight_rows(&fused, q + kv, kv);
    } else {
        W(wq, "attn_q.weight", e, q);
        W(wk, "attn_k.weight", e, kv);
        W(wv, "attn_v.weight", e, kv);
    }
    W(wo, "attn_output.weight", q, e);
    V(bq, "attn_q.bias", q, false);
    V(bk, "attn_k.bias", kv, false);
    V(bv, "attn_v.bias", kv, false);
    if (fl & ARCH_QK_NORM) {
        V(q_norm, "attn_q_norm.weight", hp->head_dim, true);
        V(k_norm, "attn_k_norm.weight", hp->head_dim, true);
    }
    if (fl & ARCH_POST_NORMS) {
        V(post_attn_norm, "post_attention_norm.weight", e, true);
        V(post_ffn_norm, "post_ffw_norm.weight", e, true);
    }
    V(ffn_norm, "ffn_norm.weight", e, true);
    if (fl & ARCH_FFN_FUSED) {
        W(w_up, "ffn_up.weight", e, 2 * ff);
        fused = L->w_up;
        L->w_gate = weight_rows(&fused, 0, ff);
        L->w_up = weight_rows(&fused, ff, ff);
    } else {
        W(w_gate, "ffn_gate.weight", e, ff);
        W(w_up, "ffn_up.weight", e, ff);
    }
    W(w_down, "ffn_down.weight", ff, e);
#undef W
#undef V
    return KS_OK;
}

/* Frequency factors: llama 3.1+'s rope_freqs, or phi3's short and long factors (the short ones
 * until model_set_n_ctx says the context is beyond the original one). */
static int bind_rope_factors(const gguf_file *f, model *m, ks_diag *d)
{
    int64_t n = m->hp.n_rot / 2;
    if (m->desc->flags & ARCH_ROPE_FREQS)
        return bind_vec(f, "rope_freqs.weight", n, &m->rope_factors, false, d);
    if (m->desc->flags & ARCH_ROPE_LONG) {
        int rc = bind_vec(f, "rope_factors_short.weight", n, &m->rope_short, false, d);
        if (!rc) rc = bind_vec(f, "rope_factors_long.weight", n, &m->rope_long, false, d);
        m->rope_factors = m->rope_short;
        return rc;
    }
    return KS_OK;
}

/* The matrices of a layer, for repacking and freeing the repacked copies. */
static int layer_weights(model_layer *L, mm_weight **w)
{
    mm_weight *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    memcpy(w, all, sizeof(all));
    return (int)(sizeof(all) / sizeof(all[0]));
}

/* Q4_0 matrices go to the 16-row layout of the VNNI GEMM (core/repack.h): same results,
 * prefill several times faster; the mapped originals are released as each is copied. The
 * token embedding is only read row by row and stays as it is (a tied output is a copy). */
static int repack_weights(model *m, ks_diag *d)
{
    bool drop = gguf_is_mapped(m->file);
    mm_weight *w[8];
    for (int il = 0; il <= m->hp.n_layer; il++) {
        int n = il < m->hp.n_layer ? layer_weights(&m->layers[il], w) : 1;
        if (il == m->hp.n_layer) w[0] = &m->output;
        for (int k = 0; k < n; k++)
            if (!w[k]->packed && rp_wanted(w[k]->type, w[k]->n_in) &&
                rp_repack(w[k]->data, w[k]->row_bytes, w[k]->n_in, w[k]->n_out, drop,
                          &w[k]->packed))
                return ks_diag_set(d, KS_ERR_NOMEM, "out of memory repacking the weights");
    }
    return KS_OK;
}

int model_load(const char *path, model **out, ks_diag *d)
{
    ks_diag local;
    if (!d) d = &local;
    ks_diag_clear(d);
    model *m = calloc(1, sizeof(*m));
    if (!m) return ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
    int rc = gguf_open(path, &m->file, d);
    if (rc) goto fail;
    if ((rc = read_hparams(m->file, &m->hp, d))) goto fail;
    m->desc = model_arch_find(m->hp.arch_name);
    model_hparams *hp = &m->hp;
    if ((rc = tok_vocab_load(m->file, &m->vocab, d))) goto fail;
    const gguf_tensor *te = gguf_find_tensor(m->file, "token_embd.weight");
    if (!te || te->n_dims != 2 || te->ne[0] != hp->n_embd || te->ne[1] < 1 ||
        te->ne[1] > (1 << 24)) {
        rc = ks_diag_set(d, KS_ERR_FORMAT,
                         "tensor 'token_embd.weight' is missing or has a bad "
                         "shape (expected [n_embd, n_vocab])");
        goto fail;
    }
    hp->n_vocab = (int32_t)te->ne[1];
    if (tok_vocab_n_tokens(m->vocab) > hp->n_vocab) {
        rc = ks_diag_set(d, KS_ERR_FORMAT, "tokenizer has %d tokens but the embedding only %d",
                         tok_vocab_n_tokens(m->vocab), hp->n_vocab);
        goto fail;
    }
    if ((rc = bind_weight(m->file, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, true,
                          d)))
        goto fail;
    if ((rc = bind_vec(m->file, "output_norm.weight", hp->n_embd, &m->output_norm, true, d)))
        goto fail;
    rc = bind_weight(m->file, "output.weight", hp->n_embd, hp->n_vocab, &m->output, false, d);
    if (rc == KS_ERR_NOT_FOUND) {
        m->output = m->tok_embd;
        hp->tied_output = true;
    } else if (rc) {
        goto fail;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof(model_layer));
    if (!m->layers) {
        rc = ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = bind_layer(m->file, m, il, &m->layers[il], d))) goto fail;
    if ((rc = bind_rope_factors(m->file, m, d))) goto fail;
    if ((rc = model_arch_hparams(m->file, m->desc, hp, m->layers, d))) goto fail;
    if (hp->n_swa > 0) {
        m->layer_window = calloc((size_t)hp->n_layer, sizeof(int32_t));
        if (!m->layer_window) {
            rc = ks_diag_set(d, KS_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int il = 0; il < hp->n_layer; il++)
            m->layer_window[il] = m->layers[il].window;
    }
    hp->has_qkv_bias = m->layers[0].bq.data != NULL;
    if ((rc = repack_weights(m, d))) goto fail;
    for (int64_t i = 0; i < gguf_n_tensors(m->file); i++)
        m->weight_bytes += gguf_tensor_at(m->file, i)->nbytes;
    *out = m;
    return KS_OK;
fail:
    if (!d->file[0]) snprintf(d->file, sizeof(d->file), "%s", path);
    model_free(m);
    return rc;
}

void model_free(model *m)
{
    if (!m) return;
    tok_vocab_free(m->vocab);
    mm_weight *w[8];
    for (int il = 0; m->layers && il < m->hp.n_layer; il++)
        for (int k = 0, n = layer_weights(&m->layers[il], w); k < n; k++)
            rp_free(w[k]->packed);
    rp_free(m->output.packed);
    free(m->layers);
    free(m->layer_window);
    gguf_close(m->file);
    free(m);
}

const model_hparams *model_get_hparams(const model *m)
{
    return &m->hp;
}

const tok_vocab *model_get_vocab(const model *m)
{
    return m->vocab;
}

uint64_t model_weight_bytes(const model *m)
{
    return m->weight_bytes;
}

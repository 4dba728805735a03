/* make_model.c - writes random-weight GGUF models of real shapes for benchmarks.
 *
 * Speed does not depend on weight values, so the weights are uniform noise; what matters is
 * the shape and the tensor types. The tokenizer metadata is copied from a vocab-only GGUF
 * (e.g. shared/vocab/ggml-vocab-qwen2.gguf) so the model loads like a real one.
 *
 *   make_model --shape qwen2.5-0.5b --type f16|q8_0|q4_0|f32 --vocab VOCAB.gguf --out FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/args.h"
#include "kvserve/gguf.h"
#include "kvserve/quant.h"

typedef struct shape {
    const char *name, *arch;
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, ctx;
    float theta, eps;
    int tied, bias;
} shape;

static const shape SHAPES[] = {
    {"qwen2.5-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, 32768, 1e6f, 1e-6f, 1, 1},
    {"tinyllama-1.1b", "llama", 22, 2048, 32, 4, 5632, 32000, 2048, 1e4f, 1e-5f, 0, 0},
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((float)(rng_state >> 40) / (float)(1 << 24) - 0.5f) * 0.07f;
}

/* Q4_0 weight quantisation: d = max/-8 by the element of largest magnitude. */
static void quantize_q4_0(const float *x, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float amax = 0, mx = 0;
        for (int i = 0; i < 32; i++)
            if (xb[i] > amax || -xb[i] > amax) {
                amax = xb[i] > 0 ? xb[i] : -xb[i];
                mx = xb[i];
            }
        float d = mx / -8.0f, id = d ? 1.0f / d : 0.0f;
        uint8_t *blk = out + b * 18;
        uint16_t dh = ks_f32_to_f16(d);
        memcpy(blk, &dh, 2);
        for (int i = 0; i < 16; i++) {
            int q0 = (int)(xb[i] * id + 8.5f), q1 = (int)(xb[i + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            blk[2 + i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static int add_matrix(gguf_writer *w, const char *name, int64_t n_in, int64_t n_out, qt_type t)
{
    size_t rb = qt_row_bytes(t, n_in);
    uint8_t *data = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    if (!data || !row) return KS_ERR_NOMEM;
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = frand();
        uint8_t *dst = data + (size_t)r * rb;
        if (t == QT_F32)
            memcpy(dst, row, rb);
        else if (t == QT_Q4_0)
            quantize_q4_0(row, dst, n_in);
        else
            qt_quantize_row(t, row, dst, n_in); /* F16, BF16 and Q8_0 round like weights */
    }
    int64_t ne[2] = {n_in, n_out};
    int rc = gguf_writer_add_tensor(w, name, 2, ne, t, data, rb * (size_t)n_out);
    free(data);
    free(row);
    return rc;
}

static int add_vector(gguf_writer *w, const char *name, int64_t n, float value)
{
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return KS_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++)
        v[i] = value == 0.0f ? frand() : value;
    int64_t ne[1] = {n};
    int rc = gguf_writer_add_tensor(w, name, 1, ne, QT_F32, v, sizeof(float) * (size_t)n);
    free(v);
    return rc;
}

/* Copies every tokenizer.* key of a vocab-only file. */
static int copy_tokenizer(gguf_writer *w, const gguf_file *v)
{
    for (int64_t i = 0; i < gguf_n_kv(v); i++) {
        gguf_str k = gguf_kv_key(v, i);
        char key[256];
        if (k.len >= sizeof(key) || k.len < 10 || memcmp(k.ptr, "tokenizer.", 10)) continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = 0;
        gguf_type t = gguf_kv_type(v, i);
        int rc = KS_OK;
        if (t == GGUF_TYPE_STRING) {
            gguf_str s;
            if (gguf_get_str(v, key, &s)) return KS_ERR_FORMAT;
            char *c = strndup(s.ptr, s.len);
            rc = c ? gguf_writer_set_str(w, key, c) : KS_ERR_NOMEM;
            free(c);
        } else if (t == GGUF_TYPE_ARRAY) {
            gguf_type et;
            uint64_t n;
            const void *data;
            if (gguf_get_arr(v, key, &et, &n, &data)) return KS_ERR_FORMAT;
            if (et == GGUF_TYPE_STRING) {
                char **strs = calloc(n ? n : 1, sizeof(char *));
                for (uint64_t j = 0; strs && j < n; j++) {
                    gguf_str s;
                    if (gguf_kv_arr_str(v, i, j, &s) == KS_OK) strs[j] = strndup(s.ptr, s.len);
                }
                rc = strs ? gguf_writer_set_arr_str(w, key, (const char *const *)strs, n)
                          : KS_ERR_NOMEM;
                for (uint64_t j = 0; strs && j < n; j++)
                    free(strs[j]);
                free(strs);
            } else {
                rc = gguf_writer_set_arr(w, key, et, data, n);
            }
        } else if (t == GGUF_TYPE_BOOL) {
            bool b;
            rc = gguf_get_bool(v, key, &b) ? KS_ERR_FORMAT : gguf_writer_set_bool(w, key, b);
        } else {
            int64_t x;
            rc =
                gguf_get_i64(v, key, &x) ? KS_ERR_FORMAT : gguf_writer_set_u32(w, key, (uint32_t)x);
        }
        if (rc) return rc;
    }
    return KS_OK;
}

static int build(const shape *s, qt_type t, const gguf_file *vocab, const char *out)
{
    gguf_writer *w;
    if (gguf_writer_create(&w)) return KS_ERR_NOMEM;
    char key[128];
    int rc = gguf_writer_set_str(w, "general.architecture", s->arch);
    rc = rc ? rc : gguf_writer_set_str(w, "general.name", s->name);
#define ARCH_U32(suffix, v)                                                                        \
    snprintf(key, sizeof(key), "%s.%s", s->arch, suffix);                                          \
    rc = rc ? rc : gguf_writer_set_u32(w, key, (uint32_t)(v));
    ARCH_U32("context_length", s->ctx);
    ARCH_U32("embedding_length", s->n_embd);
    ARCH_U32("block_count", s->n_layer);
    ARCH_U32("feed_forward_length", s->n_ff);
    ARCH_U32("attention.head_count", s->n_head);
    ARCH_U32("attention.head_count_kv", s->n_head_kv);
#undef ARCH_U32
    snprintf(key, sizeof(key), "%s.rope.freq_base", s->arch);
    rc = rc ? rc : gguf_writer_set_f32(w, key, s->theta);
    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", s->arch);
    rc = rc ? rc : gguf_writer_set_f32(w, key, s->eps);
    rc = rc ? rc : copy_tokenizer(w, vocab);
    int64_t e = s->n_embd, hd = s->n_embd / s->n_head, kv = hd * s->n_head_kv;
    /* like llama-quantize: the (tied) output matrix keeps more bits than Q4_0; Q6_K needs
     * rows of whole 256-blocks, so 896-wide models get Q8_0 */
    qt_type te = t == QT_Q4_0 ? QT_Q8_0 : t;
    rc = rc ? rc : add_matrix(w, "token_embd.weight", e, s->n_vocab, te);
    rc = rc ? rc : add_vector(w, "output_norm.weight", e, 1.0f);
    if (!s->tied) rc = rc ? rc : add_matrix(w, "output.weight", e, s->n_vocab, t);
    for (int l = 0; l < s->n_layer && !rc; l++) {
        char nm[96];
#define M(suffix, nin, nout)                                                                       \
    snprintf(nm, sizeof(nm), "blk.%d.%s", l, suffix);                                              \
    rc = rc ? rc : add_matrix(w, nm, nin, nout, t);
#define B(suffix, n, val)                                                                          \
    snprintf(nm, sizeof(nm), "blk.%d.%s", l, suffix);                                              \
    rc = rc ? rc : add_vector(w, nm, n, val);
        B("attn_norm.weight", e, 1.0f);
        M("attn_q.weight", e, e);
        M("attn_k.weight", e, kv);
        M("attn_v.weight", e, kv);
        M("attn_output.weight", e, e);
        if (s->bias) {
            B("attn_q.bias", e, 0.0f);
            B("attn_k.bias", kv, 0.0f);
            B("attn_v.bias", kv, 0.0f);
        }
        B("ffn_norm.weight", e, 1.0f);
        M("ffn_gate.weight", e, s->n_ff);
        M("ffn_up.weight", e, s->n_ff);
        M("ffn_down.weight", s->n_ff, e);
#undef M
#undef B
    }
    rc = rc ? rc : gguf_writer_write_file(w, out);
    gguf_writer_destroy(w);
    return rc;
}

int main(int argc, char **argv)
{
    static const char *const kTypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0", NULL};
    static const qt_type kTypeIds[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0};
    const char *shape_names[KS_ARRAY_LEN(SHAPES) + 1] = {NULL};
    for (size_t i = 0; i < KS_ARRAY_LEN(SHAPES); i++)
        shape_names[i] = SHAPES[i].name;
    const char *vocab_path = NULL, *out = NULL;
    int shape_i = 0, type_i = 1;
    const ks_arg args[] = {
        {"shape", 0, KS_ARG_ENUM, &shape_i, .choices = shape_names, .help = "model shape"},
        {"type", 0, KS_ARG_ENUM, &type_i, .choices = kTypes, .help = "weight type"},
        {"vocab", 0, KS_ARG_STRING, &vocab_path, .metavar = "FILE",
         .help = "GGUF file whose vocabulary the model gets", .flags = KS_ARG_REQUIRED},
        {"out", 'o', KS_ARG_STRING, &out, .metavar = "FILE", .help = "the GGUF file to write",
         .flags = KS_ARG_REQUIRED},
    };
    const ks_args_spec spec = {"make_model", "Writes a random-weight model of a real shape.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    const shape *s = &SHAPES[shape_i];
    qt_type t = kTypeIds[type_i];
    const char *type = kTypes[type_i];
    gguf_file *v;
    ks_diag d;
    if (gguf_open(vocab_path, &v, &d)) {
        fprintf(stderr, "make_model: %s: %s\n", vocab_path, d.msg);
        return 1;
    }
    int rc = build(s, t, v, out);
    gguf_close(v);
    if (rc) {
        fprintf(stderr, "make_model: failed: %s\n", ks_status_str(rc));
        return 1;
    }
    fprintf(stderr, "make_model: wrote %s (%s, %s)\n", out, s->name, type);
    return 0;
}

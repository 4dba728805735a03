/* test_gguf.c - GGUF reader and writer: real files, writer round trip, corrupt files.
 *
 * Real files are checked against facts published independently of our reader (the shared
 * models' README and tensor-types.json, the vocabularies' well-known sizes). Corrupt files
 * are made by the writer or by mutating bytes of a small writer-made file; each must be
 * rejected with a status and a message naming the problem. Every corrupt image is copied
 * into a heap buffer of exactly its length so ASan catches any read past the end.
 */
#include <check.h>

#include "check_main.h"
#include "shared_dir.h"
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvserve/gguf.h"

static char g_shared[512];

static const char *shared_path(char *buf, size_t cap, const char *rel)
{
    snprintf(buf, cap, "%s/%s", g_shared, rel);
    return buf;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static gguf_file *open_ok(const char *path)
{
    gguf_file *f = NULL;
    ks_diag d;
    int rc = gguf_open(path, &f, &d);
    ck_assert_msg(rc == 0, "%s: %s", path, d.msg);
    return f;
}

static void assert_u32(const gguf_file *f, const char *key, uint32_t want)
{
    uint32_t v = 0;
    ck_assert_msg(gguf_get_u32(f, key, &v) == 0, "missing %s", key);
    ck_assert_msg(v == want, "%s = %u, want %u", key, v, want);
}

static void assert_str(const gguf_file *f, const char *key, const char *want)
{
    gguf_str s;
    ck_assert_msg(gguf_get_str(f, key, &s) == 0, "missing %s", key);
    ck_assert_msg(gguf_str_eq(s, want), "%s = '%.*s', want '%s'", key, (int)s.len, s.ptr, want);
}

static void assert_shape(const gguf_file *f, const char *name, int64_t ne0, int64_t ne1)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    ck_assert_msg(t != NULL, "missing tensor %s", name);
    ck_assert_uint_eq(t->n_dims, ne1 ? 2 : 1);
    ck_assert_msg(t->ne[0] == ne0 && t->ne[1] == (ne1 ? ne1 : 1), "%s shape [%lld,%lld]", name,
                  (long long)t->ne[0], (long long)t->ne[1]);
    ck_assert(t->data != NULL);
}

/* ---- (a) real files ------------------------------------------------------------------- */

typedef struct model_facts {
    const char *arch;
    int64_t n_vocab, n_layer, n_embd, n_head, n_head_kv, n_ff, ctx;
    float theta, eps;
    bool tied, biases, unit_norms;
} model_facts;

static void check_model_shapes(const gguf_file *f, const model_facts *m)
{
    char key[128];
    int64_t hd = m->n_embd / m->n_head, kv = hd * m->n_head_kv;
    assert_str(f, "general.architecture", m->arch);
#define ARCH_KEY(s) (snprintf(key, sizeof(key), "%s." s, m->arch), key)
    assert_u32(f, ARCH_KEY("embedding_length"), (uint32_t)m->n_embd);
    assert_u32(f, ARCH_KEY("block_count"), (uint32_t)m->n_layer);
    assert_u32(f, ARCH_KEY("feed_forward_length"), (uint32_t)m->n_ff);
    assert_u32(f, ARCH_KEY("attention.head_count"), (uint32_t)m->n_head);
    assert_u32(f, ARCH_KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv);
    assert_u32(f, ARCH_KEY("context_length"), (uint32_t)m->ctx);
    float v = 0;
    ck_assert_int_eq(gguf_get_f32(f, ARCH_KEY("rope.freq_base"), &v), 0);
    ck_assert(fabsf(v - m->theta) <= 1e-6f * m->theta);
    ck_assert_int_eq(gguf_get_f32(f, ARCH_KEY("attention.layer_norm_rms_epsilon"), &v), 0);
    ck_assert(fabsf(v - m->eps) <= 1e-3f * m->eps);
#undef ARCH_KEY
    gguf_type et;
    uint64_t n;
    const void *data;
    ck_assert_int_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &data), 0);
    ck_assert_int_eq(et, GGUF_TYPE_STRING);
    ck_assert_uint_eq(n, (uint64_t)m->n_vocab);
    int64_t per_layer = 9 + (m->biases ? 3 : 0);
    ck_assert_int_eq(gguf_n_tensors(f), 2 + !m->tied + m->n_layer * per_layer);
    assert_shape(f, "token_embd.weight", m->n_embd, m->n_vocab);
    assert_shape(f, "output_norm.weight", m->n_embd, 0);
    if (m->tied)
        ck_assert(gguf_find_tensor(f, "output.weight") == NULL);
    else
        assert_shape(f, "output.weight", m->n_embd, m->n_vocab);
    for (int64_t l = 0; l < m->n_layer; l++) {
        char nm[96];
#define T(s) (snprintf(nm, sizeof(nm), "blk.%lld." s, (long long)l), nm)
        assert_shape(f, T("attn_norm.weight"), m->n_embd, 0);
        assert_shape(f, T("ffn_norm.weight"), m->n_embd, 0);
        assert_shape(f, T("attn_q.weight"), m->n_embd, m->n_embd);
        assert_shape(f, T("attn_k.weight"), m->n_embd, kv);
        assert_shape(f, T("attn_v.weight"), m->n_embd, kv);
        assert_shape(f, T("attn_output.weight"), m->n_embd, m->n_embd);
        assert_shape(f, T("ffn_gate.weight"), m->n_embd, m->n_ff);
        assert_shape(f, T("ffn_up.weight"), m->n_embd, m->n_ff);
        assert_shape(f, T("ffn_down.weight"), m->n_ff, m->n_embd);
        if (m->biases) {
            assert_shape(f, T("attn_q.bias"), m->n_embd, 0);
            assert_shape(f, T("attn_k.bias"), kv, 0);
            assert_shape(f, T("attn_v.bias"), kv, 0);
        }
#undef T
    }
    /* ref README: every norm weight is 1.0 (and norms are F32); kjv-tiny is trained. */
    const gguf_tensor *norm = gguf_find_tensor(f, "output_norm.weight");
    ck_assert_uint_eq(norm->type, 0);
    for (int64_t i = 0; m->unit_norms && i < m->n_embd; i++) {
        float x;
        memcpy(&x, (const char *)norm->data + 4 * i, 4);
        ck_assert(x == 1.0f);
    }
}

static const model_facts k_llama_q = {"llama", 32000, 2,     256,  4,     1,   768,
                                      2048,    1e4f,  1e-5f, true, false, true};
static const model_facts k_llama_spm = {"llama", 32000, 2,     64,    4,     2,   192,
                                        2048,    1e4f,  1e-5f, false, false, true};
static const model_facts k_qwen2 = {"qwen2", 151936, 2,     64,   4,    2,   192,
                                    4096,    1e6f,   1e-6f, true, true, true};

START_TEST(test_ref_models)
{
    char path[1024];
    json_error_t jerr;
    json_t *root =
        json_load_file(shared_path(path, sizeof(path), "models/ref/tensor-types.json"), 0, &jerr);
    ck_assert_msg(root != NULL, "tensor-types.json: %s", jerr.text);
    ck_assert_int_eq(json_object_size(root), 8);
    const char *fname;
    json_t *info;
    json_object_foreach(root, fname, info)
    {
        char rel[256];
        snprintf(rel, sizeof(rel), "models/ref/%s", fname);
        shared_path(path, sizeof(path), rel);
        gguf_file *f = open_ok(path);
        ck_assert_uint_eq(file_size(path), json_integer_value(json_object_get(info, "file_bytes")));
        assert_u32(f, "general.file_type",
                   (uint32_t)json_integer_value(json_object_get(info, "general.file_type")));
        ck_assert_uint_eq(gguf_version(f), 3);
        ck_assert_uint_eq(gguf_alignment(f), 32);
        json_t *tensors = json_object_get(info, "tensors");
        ck_assert_int_eq((int64_t)json_object_size(tensors), gguf_n_tensors(f));
        const char *tname;
        json_t *ttype;
        json_object_foreach(tensors, tname, ttype)
        {
            const gguf_tensor *t = gguf_find_tensor(f, tname);
            ck_assert_msg(t != NULL, "%s: no tensor %s", fname, tname);
            ck_assert_str_eq(gguf_ggml_type_name(t->type), json_string_value(ttype));
        }
        if (strstr(fname, "qwen2"))
            check_model_shapes(f, &k_qwen2);
        else if (strstr(fname, "spm-f32"))
            check_model_shapes(f, &k_llama_spm);
        else
            check_model_shapes(f, &k_llama_q);
        gguf_close(f);
    }
    json_decref(root);

    /* The brief's headline facts, spelled out. */
    gguf_file *f = open_ok(shared_path(path, sizeof(path), "models/ref/ref-llama-spm-f32.gguf"));
    assert_str(f, "general.architecture", "llama");
    ck_assert_int_eq(gguf_n_tensors(f), 21);
    assert_u32(f, "llama.embedding_length", 64);
    gguf_close(f);
}
END_TEST

START_TEST(test_kjv_tiny)
{
    static const char *const files[] = {"kjv-tiny-f32.gguf", "kjv-tiny-f16.gguf",
                                        "kjv-tiny-q8_0.gguf"};
    static const char *const types[] = {"F32", "F16", "Q8_0"};
    static const model_facts kjv = {"llama", 4096, 4,     256,   8,     2,    512,
                                    512,     1e4f, 1e-5f, false, false, false};
    for (size_t i = 0; i < 3; i++) {
        char rel[128], path[1024];
        snprintf(rel, sizeof(rel), "models/kjv-tiny/%s", files[i]);
        gguf_file *f = open_ok(shared_path(path, sizeof(path), rel));
        check_model_shapes(f, &kjv);
        assert_u32(f, "tokenizer.ggml.bos_token_id", 1);
        assert_u32(f, "tokenizer.ggml.eos_token_id", 2);
        assert_u32(f, "tokenizer.ggml.unknown_token_id", 0);
        bool add_bos = false;
        ck_assert_int_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos), 0);
        ck_assert(add_bos);
        ck_assert_str_eq(gguf_ggml_type_name(gguf_find_tensor(f, "blk.3.attn_q.weight")->type),
                         types[i]);
        /* 4.33 M parameters (README). */
        int64_t params = 0;
        for (int64_t t = 0; t < gguf_n_tensors(f); t++) {
            const gguf_tensor *ti = gguf_tensor_at(f, t);
            params += ti->ne[0] * ti->ne[1] * ti->ne[2] * ti->ne[3];
        }
        ck_assert_msg(params >= 4325000 && params < 4335000, "params %lld", (long long)params);
        gguf_close(f);
    }
}
END_TEST

START_TEST(test_vocab_files)
{
    static const struct {
        const char *name, *model, *pre;
        uint64_t n_vocab;
    } v[] = {
        {"llama-spm", "llama", NULL, 32000},
        {"llama-bpe", "gpt2", "llama-bpe", 128256},
        {"qwen2", "gpt2", "qwen2", 151936},
        {"gpt-2", "gpt2", "gpt-2", 50257},
        {"deepseek-llm", "gpt2", "deepseek-llm", 102400},
        {"falcon", "gpt2", "falcon", 65024},
        {"starcoder", "gpt2", "starcoder", 49152},
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(v); i++) {
        char rel[128], path[1024];
        snprintf(rel, sizeof(rel), "vocab/ggml-vocab-%s.gguf", v[i].name);
        shared_path(path, sizeof(path), rel);
        for (int meta = 0; meta < 2; meta++) {
            gguf_file *f = NULL;
            ks_diag d;
            int rc = meta ? gguf_open_meta(path, &f, &d) : gguf_open(path, &f, &d);
            ck_assert_msg(rc == 0, "%s: %s", path, d.msg);
            ck_assert_int_eq(gguf_n_tensors(f), 0);
            assert_str(f, "tokenizer.ggml.model", v[i].model);
            if (v[i].pre) assert_str(f, "tokenizer.ggml.pre", v[i].pre);
            gguf_type et;
            uint64_t n;
            const void *data;
            ck_assert_int_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &data), 0);
            ck_assert_uint_eq(n, v[i].n_vocab);
            gguf_str s;
            ck_assert_int_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", n, &s), KS_ERR_RANGE);
            if (strcmp(v[i].name, "gpt-2") == 0) {
                ck_assert_int_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 50256, &s), 0);
                ck_assert(gguf_str_eq(s, "<|endoftext|>"));
                ck_assert_int_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 0, &s), 0);
                ck_assert(gguf_str_eq(s, "!"));
            }
            if (strcmp(v[i].name, "llama-spm") == 0) {
                static const char *const first[] = {"<unk>", "<s>", "</s>", "<0x00>"};
                for (uint64_t k = 0; k < 4; k++) {
                    ck_assert_int_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", k, &s), 0);
                    ck_assert(gguf_str_eq(s, first[k]));
                }
            }
            gguf_close(f);
        }
    }
}
END_TEST

/* ---- (b) writer round trip ------------------------------------------------------------ */

static void *write_mem(gguf_writer *w, size_t *len)
{
    void *buf = NULL;
    ck_assert_int_eq(gguf_writer_write_memory(w, &buf, len), 0);
    gguf_writer_destroy(w);
    return buf;
}

START_TEST(test_writer_roundtrip)
{
    for (int variant = 0; variant < 2; variant++) {
        uint32_t align = variant ? 64 : 32;
        gguf_writer *w;
        ck_assert_int_eq(gguf_writer_create(&w), 0);
        if (variant) ck_assert_int_eq(gguf_writer_set_u32(w, "general.alignment", 64), 0);
        ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
        ck_assert_int_eq(gguf_writer_set_u32(w, "u", 4000000000u), 0);
        ck_assert_int_eq(gguf_writer_set_i32(w, "i", -7), 0);
        ck_assert_int_eq(gguf_writer_set_f32(w, "f", 0.25f), 0);
        ck_assert_int_eq(gguf_writer_set_bool(w, "b", true), 0);
        ck_assert_int_eq(gguf_writer_set_str(w, "empty", ""), 0);
        ck_assert_int_eq(gguf_writer_set_u32(w, "u", 1), KS_ERR_INVALID); /* duplicate */
        ck_assert_int_eq(gguf_writer_set_u32(w, "", 1), KS_ERR_INVALID);
        int32_t ia[5] = {1, -2, 3, -4, 5};
        ck_assert_int_eq(gguf_writer_set_arr(w, "ia", GGUF_TYPE_INT32, ia, 5), 0);
        double da[2] = {1.5, -2.5};
        ck_assert_int_eq(gguf_writer_set_arr(w, "da", GGUF_TYPE_FLOAT64, da, 2), 0);
        const char *strs[] = {"a", "", "h\xc3\xa9llo", "last"};
        ck_assert_int_eq(gguf_writer_set_arr_str(w, "sa", strs, 4), 0);
        ck_assert_int_eq(gguf_writer_set_arr_str(w, "sa0", NULL, 0), 0);
        float x[24];
        for (int i = 0; i < 24; i++)
            x[i] = (float)i * 0.5f;
        uint8_t q[2 * 34];
        for (int i = 0; i < 68; i++)
            q[i] = (uint8_t)(i * 7);
        int64_t ne_a[2] = {8, 3}, ne_q[2] = {32, 2}, ne_v[1] = {5};
        ck_assert_int_eq(gguf_writer_add_tensor(w, "a", 2, ne_a, 0, x, 96), 0);
        ck_assert_int_eq(gguf_writer_add_tensor(w, "q", 2, ne_q, 8, q, 68), 0);
        ck_assert_int_eq(gguf_writer_add_tensor(w, "v", 1, ne_v, 0, x, 20), 0);
        ck_assert_int_eq(gguf_writer_add_tensor(w, "v", 1, ne_v, 0, x, 20), KS_ERR_INVALID);
        ck_assert_int_eq(gguf_writer_add_tensor(w, "w", 1, ne_v, 0, x, 16), KS_ERR_INVALID);
        ck_assert_int_eq(gguf_writer_add_tensor(w, "w", 1, ne_a, 8, q, 34), KS_ERR_INVALID);
        size_t len;
        void *buf = write_mem(w, &len);
        gguf_file *f;
        ks_diag d;
        ck_assert_msg(gguf_open_memory(buf, len, &f, &d) == 0, "%s", d.msg);
        ck_assert_uint_eq(gguf_version(f), 3);
        ck_assert_uint_eq(gguf_alignment(f), align);
        ck_assert_int_eq(gguf_n_kv(f), 10 + variant);
        assert_str(f, "general.architecture", "llama");
        assert_u32(f, "u", 4000000000u);
        int64_t iv = 0;
        ck_assert_int_eq(gguf_get_i64(f, "u", &iv), 0);
        ck_assert_int_eq(iv, 4000000000ll);
        ck_assert_int_eq(gguf_get_i64(f, "i", &iv), 0);
        ck_assert_int_eq(iv, -7);
        uint32_t u = 99;
        ck_assert_int_eq(gguf_get_u32(f, "i", &u), KS_ERR_RANGE); /* -7 does not fit */
        ck_assert_uint_eq(u, 99);                                 /* untouched */
        ck_assert_int_eq(gguf_get_u32(f, "f", &u), KS_ERR_FORMAT);
        ck_assert_int_eq(gguf_get_u32(f, "nope", &u), KS_ERR_NOT_FOUND);
        float fv = 0;
        ck_assert_int_eq(gguf_get_f32(f, "f", &fv), 0);
        ck_assert(fv == 0.25f);
        ck_assert_int_eq(gguf_get_f32(f, "u", &fv), KS_ERR_FORMAT);
        bool b = false;
        ck_assert_int_eq(gguf_get_bool(f, "b", &b), 0);
        ck_assert(b);
        assert_str(f, "empty", "");
        gguf_type et;
        uint64_t n;
        const void *data;
        ck_assert_int_eq(gguf_get_arr(f, "ia", &et, &n, &data), 0);
        ck_assert(et == GGUF_TYPE_INT32 && n == 5 && memcmp(data, ia, sizeof(ia)) == 0);
        ck_assert_int_eq(gguf_get_arr(f, "da", &et, &n, &data), 0);
        ck_assert(et == GGUF_TYPE_FLOAT64 && n == 2 && memcmp(data, da, sizeof(da)) == 0);
        ck_assert_int_eq(gguf_get_arr(f, "u", &et, &n, &data), KS_ERR_FORMAT);
        int64_t kv = gguf_find_key(f, "sa");
        ck_assert_int_ge(kv, 0);
        ck_assert(gguf_str_eq(gguf_kv_key(f, kv), "sa"));
        ck_assert_int_eq(gguf_kv_type(f, kv), GGUF_TYPE_ARRAY);
        for (uint64_t i = 0; i < 4; i++) {
            gguf_str s;
            ck_assert_int_eq(gguf_kv_arr_str(f, kv, i, &s), 0);
            ck_assert(gguf_str_eq(s, strs[i]));
        }
        gguf_str s;
        ck_assert_int_eq(gguf_get_arr_str(f, "sa0", 0, &s), KS_ERR_RANGE);
        ck_assert_int_eq(gguf_get_arr_str(f, "ia", 0, &s), KS_ERR_FORMAT);
        ck_assert_int_eq(gguf_n_tensors(f), 3);
        const gguf_tensor *ta = gguf_find_tensor(f, "a"), *tq = gguf_find_tensor(f, "q");
        const gguf_tensor *tv = gguf_find_tensor(f, "v");
        ck_assert(ta && tq && tv && !gguf_find_tensor(f, "w"));
        ck_assert(ta == gguf_tensor_at(f, 0) && gguf_tensor_at(f, 3) == NULL);
        ck_assert(ta->n_dims == 2 && ta->ne[0] == 8 && ta->ne[1] == 3 && ta->ne[2] == 1);
        ck_assert(tq->type == 8 && tq->nbytes == 68 && tv->nbytes == 20);
        ck_assert(memcmp(ta->data, x, 96) == 0 && memcmp(tq->data, q, 68) == 0);
        ck_assert(memcmp(tv->data, x, 20) == 0);
        ck_assert_uint_eq(ta->offset, 0);
        ck_assert_uint_eq(tq->offset, align == 32 ? 96 : 128);
        ck_assert_uint_eq(tv->offset, align == 32 ? 192 : 256);
        ck_assert_uint_eq(((const char *)ta->data - (const char *)buf) % align, 0);
        ck_assert_uint_eq(((const char *)tv->data - (const char *)buf) % align, 0);
        gguf_close(f);

        /* Through a file on disk. */
        char path[] = "/tmp/kvserve_test_gguf_XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
        close(fd);
        ck_assert_int_eq(gguf_open(path, &f, &d), 0);
        ck_assert(memcmp(gguf_find_tensor(f, "q")->data, q, 68) == 0);
        gguf_close(f);
        unlink(path);
        free(buf);
    }
}
END_TEST

/* A llama-like model made with the writer (benches do the same at larger sizes). */
START_TEST(test_writer_write_file)
{
    gguf_writer *w;
    char path[] = "/tmp/kvserve_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(gguf_writer_create(&w), 0);
    ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(gguf_writer_set_u32(w, "llama.embedding_length", 256), 0);
    int64_t ne[2] = {256, 512};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, 14, NULL, 512 * 210),
                     0); /* Q6_K, zero-filled */
    ck_assert_int_eq(gguf_writer_write_file(w, path), 0);
    ck_assert_int_eq(gguf_writer_write_file(w, "/nonexistent-dir/x.gguf"), KS_ERR_IO);
    gguf_writer_destroy(w);
    gguf_file *f = open_ok(path);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    ck_assert(t && t->nbytes == 512 * 210 && ((const uint8_t *)t->data)[1000] == 0);
    ck_assert_str_eq(gguf_ggml_type_name(t->type), "Q6_K");
    gguf_close(f);
    unlink(path);
}
END_TEST

/* ---- (c) corrupt files ---------------------------------------------------------------- */

static uint8_t *g_base;
static size_t g_base_len;

/* A small valid file; the last tensor's size is a multiple of 32, so there is no trailing
 * padding and every proper prefix is missing required bytes. */
static void base_setup(void)
{
    gguf_writer *w;
    ck_assert_int_eq(gguf_writer_create(&w), 0);
    ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(gguf_writer_set_u32(w, "t.u32", 7), 0);
    ck_assert_int_eq(gguf_writer_set_bool(w, "t.bool", true), 0);
    ck_assert_int_eq(gguf_writer_set_str(w, "t.str", "hello"), 0);
    int32_t ia[3] = {1, 2, 3};
    ck_assert_int_eq(gguf_writer_set_arr(w, "t.arr", GGUF_TYPE_INT32, ia, 3), 0);
    const char *sa[3] = {"a", "bb", "ccc"};
    ck_assert_int_eq(gguf_writer_set_arr_str(w, "t.sarr", sa, 3), 0);
    ck_assert_int_eq(gguf_writer_set_u32(w, "dup.a", 1), 0);
    ck_assert_int_eq(gguf_writer_set_u32(w, "dup.b", 2), 0);
    float x[32] = {0};
    uint8_t q[68] = {0};
    int64_t ne_a[2] = {8, 4}, ne_b[2] = {32, 2}, ne_c[1] = {8};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "ta.weight", 2, ne_a, 0, x, 128), 0);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "tb.weight", 2, ne_b, 8, q, 68), 0);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "tc.weight", 1, ne_c, 0, x, 32), 0);
    g_base = write_mem(w, &g_base_len);
}

static void base_teardown(void)
{
    free(g_base);
    g_base = NULL;
}

static size_t find(const char *s)
{
    const uint8_t *p = memmem(g_base, g_base_len, s, strlen(s));
    ck_assert_msg(p != NULL, "'%s' not in base file", s);
    return (size_t)(p - g_base);
}

/* Opens an exact-size heap copy; expects `status` and a message with w1 and w2. */
static void expect_bad(const void *img, size_t len, int status, const char *w1, const char *w2,
                       const char *key)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, img, len);
    gguf_file *f = NULL;
    ks_diag d;
    int rc = gguf_open_memory(copy, len, &f, &d);
    ck_assert_msg(rc == status, "status %d (want %d): %s", rc, status, d.msg);
    ck_assert(f == NULL);
    ck_assert_msg(strstr(d.msg, w1), "'%s' not in: %s", w1, d.msg);
    ck_assert_msg(!w2 || strstr(d.msg, w2), "'%s' not in: %s", w2, d.msg);
    if (key) ck_assert_str_eq(d.key, key);
    ck_assert_str_eq(d.file, "<memory>");
    free(copy);
}

/* The base file with `width` bytes at `off` replaced by the low bytes of v. */
static void patch_bad(size_t off, uint64_t v, int width, int status, const char *w1, const char *w2,
                      const char *key)
{
    uint8_t *img = malloc(g_base_len);
    memcpy(img, g_base, g_base_len);
    memcpy(img + off, &v, (size_t)width);
    expect_bad(img, g_base_len, status, w1, w2, key);
    free(img);
}

/* Offsets inside a tensor info: the name's first byte is at find(name). */
static size_t ti_ndims(const char *name)
{
    return find(name) + strlen(name);
}
static size_t ti_ne(const char *name, int k)
{
    return ti_ndims(name) + 4 + 8 * (size_t)k;
}
static size_t ti_type(const char *name, int n_dims)
{
    return ti_ne(name, n_dims);
}
static size_t ti_off(const char *name, int n_dims)
{
    return ti_ne(name, n_dims) + 4;
}
/* Offsets inside a kv: value type right after the key, then the value. */
static size_t kv_type(const char *key)
{
    return find(key) + strlen(key);
}
static size_t kv_val(const char *key)
{
    return kv_type(key) + 4;
}

START_TEST(test_base_ok)
{
    gguf_file *f;
    ks_diag d;
    ck_assert_msg(gguf_open_memory(g_base, g_base_len, &f, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(gguf_n_tensors(f), 3);
    const gguf_tensor *tc = gguf_find_tensor(f, "tc.weight");
    ck_assert_ptr_eq((const uint8_t *)tc->data + 32, g_base + g_base_len);
    gguf_close(f);
    gguf_close(NULL);
    f = NULL;
    ck_assert_int_eq(gguf_open_memory(g_base, g_base_len - 1, &f, NULL), KS_ERR_FORMAT);
    ck_assert(f == NULL); /* a NULL diag is allowed */
}
END_TEST

START_TEST(test_truncated_everywhere)
{
    for (size_t n = 0; n < g_base_len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, g_base, n);
        gguf_file *f = NULL;
        ks_diag d;
        int rc = gguf_open_memory(copy, n, &f, &d);
        ck_assert_msg(rc == KS_ERR_FORMAT, "prefix %zu: status %d", n, rc);
        ck_assert(f == NULL && d.msg[0] != 0);
        free(copy);
    }
    expect_bad(g_base, 2, KS_ERR_FORMAT, "not a GGUF file", "too short", NULL);
    expect_bad(g_base, 10, KS_ERR_FORMAT, "tensor count", "ends", NULL);
    expect_bad(g_base, find("t.str") + 2, KS_ERR_FORMAT, "metadata count 8 is impossible",
               "file of", NULL);
    expect_bad(g_base, kv_val("t.str") + 3, KS_ERR_FORMAT, "metadata key 't.str'", "string value",
               "t.str");
    expect_bad(g_base, ti_off("tc.weight", 1) + 1, KS_ERR_FORMAT, "tensor 'tc.weight'", "offset",
               "tc.weight");
    expect_bad(g_base, g_base_len - 1, KS_ERR_FORMAT, "tensor 'tc.weight': data [offset",
               "extends past end of file", "tc.weight");
}
END_TEST

START_TEST(test_bad_header)
{
    patch_bad(0, 0x46554748, 4, KS_ERR_FORMAT, "bad magic", "48 47 55 46", NULL);
    patch_bad(4, 1, 4, KS_ERR_UNSUPPORTED, "version 1", "not supported", NULL);
    patch_bad(4, 99, 4, KS_ERR_UNSUPPORTED, "version 99", "not supported", NULL);
    patch_bad(4, 0, 4, KS_ERR_UNSUPPORTED, "version 0", NULL, NULL);
    patch_bad(4, 0x03000000, 4, KS_ERR_UNSUPPORTED, "big-endian", NULL, NULL);
    patch_bad(8, 1ull << 40, 8, KS_ERR_FORMAT, "tensor count 1099511627776", "impossible", NULL);
    patch_bad(16, 1ull << 40, 8, KS_ERR_FORMAT, "metadata count 1099511627776", "impossible", NULL);
    patch_bad(16, UINT64_MAX, 8, KS_ERR_FORMAT, "metadata count", "impossible", NULL);
    /* More tensors than the bytes left after the metadata can describe. */
    patch_bad(8, (g_base_len - find("ta.weight") + 8) / 32 + 1, 8, KS_ERR_FORMAT, "tensor count",
              "left after metadata", NULL);
    /* One fewer kv: the last kv is read as a tensor info and fails, cleanly. */
    patch_bad(16, 7, 8, KS_ERR_FORMAT, "tensor 'dup.b'", "unsupported tensor type", "dup.b");
}
END_TEST

START_TEST(test_bad_metadata)
{
    /* Huge string and key lengths. */
    patch_bad(kv_val("t.str"), 1000000000000000000ull, 8, KS_ERR_FORMAT,
              "metadata key 't.str' at byte", "string value length 1000000000000000000 exceeds",
              "t.str");
    patch_bad(find("t.u32") - 8, 1ull << 62, 8, KS_ERR_FORMAT, "key length", "exceeds file", NULL);
    /* Huge array lengths, numeric and string. */
    patch_bad(kv_val("t.arr") + 4, 1ull << 62, 8, KS_ERR_FORMAT, "array length 461168",
              "exceeds file", "t.arr");
    patch_bad(kv_val("t.sarr") + 4, 1ull << 40, 8, KS_ERR_FORMAT, "array length", "exceeds",
              "t.sarr");
    patch_bad(kv_val("t.sarr") + 4, 4, 8, KS_ERR_FORMAT, "exceeds file", NULL, NULL);
    /* Unknown value types. */
    patch_bad(kv_type("t.u32"), 13, 4, KS_ERR_FORMAT, "unknown value type 13", NULL, "t.u32");
    patch_bad(kv_type("t.u32"), 0xffffffffu, 4, KS_ERR_FORMAT, "unknown value type", NULL, "t.u32");
    patch_bad(kv_val("t.arr"), 77, 4, KS_ERR_FORMAT, "unknown array element type 77", NULL,
              "t.arr");
    /* Duplicate key: rename dup.b to dup.a. */
    patch_bad(find("dup.b") + 4, 'a', 1, KS_ERR_FORMAT, "metadata key 'dup.a'", "duplicate key",
              "dup.a");
    /* Bool not 0/1. */
    patch_bad(kv_val("t.bool"), 2, 1, KS_ERR_FORMAT, "bool value 2 is not 0 or 1", NULL, "t.bool");
    /* Key not UTF-8, key with NUL. */
    patch_bad(find("t.u32") + 1, 0xff, 1, KS_ERR_FORMAT, "not valid UTF-8", NULL, NULL);
    patch_bad(find("t.u32") + 1, 0x00, 1, KS_ERR_FORMAT, "not valid UTF-8", NULL, NULL);
}
END_TEST

static void alignment_bad(int kind, const char *w1)
{
    gguf_writer *w;
    ck_assert_int_eq(gguf_writer_create(&w), 0);
    if (kind == 0) ck_assert_int_eq(gguf_writer_set_u32(w, "general.alignment", 0), 0);
    if (kind == 1) ck_assert_int_eq(gguf_writer_set_u32(w, "general.alignment", 3), 0);
    if (kind == 2) ck_assert_int_eq(gguf_writer_set_i32(w, "general.alignment", 32), 0);
    size_t len;
    void *buf = write_mem(w, &len);
    expect_bad(buf, len, KS_ERR_FORMAT, "general.alignment", w1, "general.alignment");
    free(buf);
}

START_TEST(test_bad_alignment)
{
    alignment_bad(0, "not a non-zero power of two");
    alignment_bad(1, "alignment 3 is not");
    alignment_bad(2, "must be a uint32");
}
END_TEST

START_TEST(test_bad_tensor_info)
{
    patch_bad(find("tb.weight") + 1, 'a', 1, KS_ERR_FORMAT, "tensor 'ta.weight'",
              "duplicate tensor name", "ta.weight");
    patch_bad(ti_ndims("ta.weight"), 0, 4, KS_ERR_FORMAT, "n_dims 0 is out of range", NULL,
              "ta.weight");
    patch_bad(ti_ndims("ta.weight"), 5, 4, KS_ERR_FORMAT, "n_dims 5 is out of range", NULL,
              "ta.weight");
    patch_bad(ti_ne("ta.weight", 1), 0, 8, KS_ERR_FORMAT, "tensor 'ta.weight': dimension 1 is zero",
              NULL, "ta.weight");
    patch_bad(ti_ne("ta.weight", 0), (uint64_t)-5, 8, KS_ERR_FORMAT, "dimension 0 is negative",
              "-5", "ta.weight");
    /* 2^40 x 2^40 elements overflow; 2^31 x 2^31 F32 fits in elements but not in bytes. */
    uint8_t *img = malloc(g_base_len);
    for (int k = 0; k < 2; k++) {
        uint64_t big = k ? 1ull << 31 : 1ull << 40;
        memcpy(img, g_base, g_base_len);
        memcpy(img + ti_ne("ta.weight", 0), &big, 8);
        memcpy(img + ti_ne("ta.weight", 1), &big, 8);
        expect_bad(img, g_base_len, KS_ERR_FORMAT, "tensor 'ta.weight': shape [", "overflows",
                   "ta.weight");
    }
    free(img);
    patch_bad(ti_type("ta.weight", 2), 4, 4, KS_ERR_FORMAT, "unsupported tensor type 4", NULL,
              "ta.weight");
    patch_bad(ti_type("ta.weight", 2), 1000, 4, KS_ERR_FORMAT, "unsupported tensor type 1000", NULL,
              NULL);
    /* Q8_0 row of 16: not a multiple of 32. */
    patch_bad(ti_ne("tb.weight", 0), 16, 8, KS_ERR_FORMAT, "row length 16 is not a multiple",
              "block size 32 of type Q8_0", "tb.weight");
    patch_bad(ti_off("tb.weight", 2), 132, 8, KS_ERR_FORMAT, "data offset 132",
              "not a multiple of the alignment 32", "tb.weight");
    patch_bad(ti_off("tb.weight", 2), 96, 8, KS_ERR_FORMAT, "overlaps tensor 'ta.weight'",
              "[offset 0, size 128]", "tb.weight");
    patch_bad(ti_off("tc.weight", 1), 4096, 8, KS_ERR_FORMAT, "tensor 'tc.weight': data [offset",
              "extends past end of file", "tc.weight");
    patch_bad(ti_off("tc.weight", 1), UINT64_MAX - 31, 8, KS_ERR_FORMAT, "extends past end", NULL,
              "tc.weight");
    patch_bad(ti_ne("tc.weight", 0), 1ull << 20, 8, KS_ERR_FORMAT, "size 4194304",
              "extends past end of file", "tc.weight");
    patch_bad(find("tc.weight") - 8, 1ull << 50, 8, KS_ERR_FORMAT, "tensor info 2",
              "tensor name length", NULL);
}
END_TEST

/* Hand-made images for what neither the writer nor a byte patch can express. */
typedef struct raw {
    uint8_t b[8192];
    size_t n;
} raw;

static void raw_put(raw *r, const void *p, size_t n)
{
    ck_assert(r->n + n <= sizeof(r->b));
    memcpy(r->b + r->n, p, n);
    r->n += n;
}
static void raw_u32(raw *r, uint32_t v)
{
    raw_put(r, &v, 4);
}
static void raw_u64(raw *r, uint64_t v)
{
    raw_put(r, &v, 8);
}
static void raw_str(raw *r, const char *s)
{
    raw_u64(r, strlen(s));
    raw_put(r, s, strlen(s));
}
static void raw_header(raw *r, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    r->n = 0;
    raw_put(r, "GGUF", 4);
    raw_u32(r, version);
    raw_u64(r, n_tensors);
    raw_u64(r, n_kv);
}

START_TEST(test_handmade)
{
    raw r;
    /* Empty key. */
    raw_header(&r, 3, 0, 1);
    raw_str(&r, "");
    raw_u32(&r, GGUF_TYPE_UINT32);
    raw_u32(&r, 5);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "key is empty", NULL, NULL);
    /* Array nesting bomb: 100 levels of one-element arrays. */
    raw_header(&r, 3, 0, 1);
    raw_str(&r, "nest");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    for (int i = 0; i < 100; i++) {
        raw_u32(&r, GGUF_TYPE_ARRAY);
        raw_u64(&r, 1);
    }
    raw_u32(&r, GGUF_TYPE_UINT8);
    raw_u64(&r, 0);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "metadata key 'nest'", "arrays nested deeper than", "nest");
    /* Array of 2^50 arrays. */
    raw_header(&r, 3, 0, 1);
    raw_str(&r, "nest");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u64(&r, 1ull << 50);
    raw_u64(&r, 0);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "array length 1125899906842624", "12 per element", "nest");
    /* A string array that breaks off in its 2nd element (the string index must not be
     * overrun by the elements read before the failure: a fuzzer find). */
    raw_header(&r, 3, 0, 2);
    raw_str(&r, "first");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u32(&r, GGUF_TYPE_STRING);
    raw_u64(&r, 1);
    raw_str(&r, "a");
    raw_str(&r, "toks");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u32(&r, GGUF_TYPE_STRING);
    raw_u64(&r, 3);
    raw_str(&r, "ok");
    raw_u64(&r, 1000);
    raw_put(&r, "xxxxxxxxxxxxxxxxxxxxxxxxxxxx", 28);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "metadata key 'toks'", "array string length 1000", "toks");
    /* Bool array with a 5. */
    raw_header(&r, 2, 0, 1);
    raw_str(&r, "bools");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u32(&r, GGUF_TYPE_BOOL);
    raw_u64(&r, 3);
    raw_put(&r, "\x00\x01\x05", 3);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "bool value 5", NULL, "bools");
    /* Empty tensor name. */
    raw_header(&r, 3, 1, 0);
    raw_str(&r, "");
    raw_u32(&r, 1);
    raw_u64(&r, 8);
    raw_u32(&r, 0);
    raw_u64(&r, 0);
    expect_bad(r.b, r.n, KS_ERR_FORMAT, "tensor '' at byte 24", "name is empty", NULL);
}
END_TEST

/* Arrays of arrays are legal GGUF: validated and skipped; getters refuse them. v2 works. */
START_TEST(test_nested_array_ok)
{
    raw r;
    raw_header(&r, 2, 0, 2);
    raw_str(&r, "aa");
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u32(&r, GGUF_TYPE_ARRAY);
    raw_u64(&r, 2);
    raw_u32(&r, GGUF_TYPE_UINT32); /* [5] */
    raw_u64(&r, 1);
    raw_u32(&r, 5);
    raw_u32(&r, GGUF_TYPE_STRING); /* ["x"] */
    raw_u64(&r, 1);
    raw_str(&r, "x");
    raw_str(&r, "after");
    raw_u32(&r, GGUF_TYPE_STRING);
    raw_str(&r, "ok");
    gguf_file *f;
    ks_diag d;
    ck_assert_msg(gguf_open_memory(r.b, r.n, &f, &d) == 0, "%s", d.msg);
    ck_assert_uint_eq(gguf_version(f), 2);
    gguf_type et;
    uint64_t n;
    const void *data;
    ck_assert_int_eq(gguf_get_arr(f, "aa", &et, &n, &data), KS_ERR_UNSUPPORTED);
    gguf_str s;
    ck_assert_int_eq(gguf_get_arr_str(f, "aa", 0, &s), KS_ERR_FORMAT);
    ck_assert_int_eq(gguf_get_str(f, "after", &s), 0);
    ck_assert(gguf_str_eq(s, "ok"));
    gguf_close(f);
}
END_TEST

/* Integer getters convert every integer width and sign; floats widen from f64. */
START_TEST(test_scalar_types)
{
    raw r;
    raw_header(&r, 3, 0, 8);
    int8_t i8 = -1;
    uint8_t u8 = 200;
    int16_t i16 = -300;
    uint16_t u16 = 65535;
    int64_t i64 = -5;
    uint64_t u64 = 1ull << 63;
    double f64 = 2.5;
    raw_str(&r, "i8"), raw_u32(&r, GGUF_TYPE_INT8), raw_put(&r, &i8, 1);
    raw_str(&r, "u8"), raw_u32(&r, GGUF_TYPE_UINT8), raw_put(&r, &u8, 1);
    raw_str(&r, "i16"), raw_u32(&r, GGUF_TYPE_INT16), raw_put(&r, &i16, 2);
    raw_str(&r, "u16"), raw_u32(&r, GGUF_TYPE_UINT16), raw_put(&r, &u16, 2);
    raw_str(&r, "i64"), raw_u32(&r, GGUF_TYPE_INT64), raw_put(&r, &i64, 8);
    raw_str(&r, "u64"), raw_u32(&r, GGUF_TYPE_UINT64), raw_put(&r, &u64, 8);
    raw_str(&r, "f64"), raw_u32(&r, GGUF_TYPE_FLOAT64), raw_put(&r, &f64, 8);
    raw_str(&r, "u64s"), raw_u32(&r, GGUF_TYPE_UINT64), raw_u64(&r, 4000000000u);
    gguf_file *f;
    ks_diag d;
    ck_assert_msg(gguf_open_memory(r.b, r.n, &f, &d) == 0, "%s", d.msg);
    int64_t v = 0;
    uint32_t u = 0;
    ck_assert(gguf_get_i64(f, "i8", &v) == 0 && v == -1);
    ck_assert(gguf_get_i64(f, "u8", &v) == 0 && v == 200);
    ck_assert(gguf_get_i64(f, "i16", &v) == 0 && v == -300);
    ck_assert(gguf_get_i64(f, "u16", &v) == 0 && v == 65535);
    ck_assert(gguf_get_i64(f, "i64", &v) == 0 && v == -5);
    ck_assert_int_eq(gguf_get_i64(f, "u64", &v), KS_ERR_RANGE);
    ck_assert(gguf_get_u32(f, "u8", &u) == 0 && u == 200);
    ck_assert(gguf_get_u32(f, "u16", &u) == 0 && u == 65535);
    ck_assert(gguf_get_u32(f, "u64s", &u) == 0 && u == 4000000000u);
    ck_assert_int_eq(gguf_get_u32(f, "i8", &u), KS_ERR_RANGE);
    ck_assert_int_eq(gguf_get_u32(f, "u64", &u), KS_ERR_RANGE);
    float fv = 0;
    ck_assert(gguf_get_f32(f, "f64", &fv) == 0 && fv == 2.5f);
    ck_assert_int_eq(gguf_get_i64(f, "f64", &v), KS_ERR_FORMAT);
    bool b;
    ck_assert_int_eq(gguf_get_bool(f, "u8", &b), KS_ERR_FORMAT);
    gguf_close(f);
}
END_TEST

/* Every byte replaced by a few values: never a crash; what opens is safe to walk. */
START_TEST(test_byte_mutations)
{
    uint8_t *img = malloc(g_base_len);
    int n_ok = 0;
    for (size_t i = 0; i < g_base_len; i++) {
        const uint8_t vals[3] = {0x00, 0xff, (uint8_t)(g_base[i] ^ 0x80)};
        for (int k = 0; k < 3; k++) {
            memcpy(img, g_base, g_base_len);
            img[i] = vals[k];
            gguf_file *f;
            ks_diag d;
            if (gguf_open_memory(img, g_base_len, &f, &d) != 0) {
                ck_assert(d.msg[0] != 0);
                continue;
            }
            n_ok++;
            unsigned sum = 0;
            for (int64_t t = 0; t < gguf_n_tensors(f); t++) {
                const gguf_tensor *ti = gguf_tensor_at(f, t);
                const uint8_t *p = ti->data;
                sum += p[0] + p[ti->nbytes - 1] + (uint8_t)ti->name.ptr[ti->name.len - 1];
            }
            for (int64_t kv = 0; kv < gguf_n_kv(f); kv++) {
                gguf_str s = gguf_kv_key(f, kv);
                sum += (uint8_t)s.ptr[s.len - 1];
                for (uint64_t e = 0; gguf_kv_arr_str(f, kv, e, &s) == 0; e++)
                    sum += s.len ? (uint8_t)s.ptr[s.len - 1] : 0;
            }
            (void)sum;
            gguf_close(f);
        }
    }
    ck_assert_int_gt(n_ok, 0); /* e.g. tensor data bytes and string contents */
    free(img);
}
END_TEST

START_TEST(test_files_on_disk)
{
    gguf_file *f = NULL;
    ks_diag d;
    ck_assert_int_eq(gguf_open("/nonexistent/x.gguf", &f, &d), KS_ERR_IO);
    ck_assert_str_eq(d.file, "/nonexistent/x.gguf");
    char path[] = "/tmp/kvserve_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(gguf_open(path, &f, &d), KS_ERR_FORMAT); /* empty file */
    ck_assert(strstr(d.msg, "empty") != NULL);
    /* Data section cut short: gguf_open refuses, gguf_open_meta accepts with data NULL. */
    size_t cut = g_base_len - 256 + 40; /* inside tb.weight's data */
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, g_base, cut), (ssize_t)cut);
    close(fd);
    ck_assert_int_eq(gguf_open(path, &f, &d), KS_ERR_FORMAT);
    ck_assert_str_eq(d.file, path);
    ck_assert_str_eq(d.key, "ta.weight");
    ck_assert(strstr(d.msg, "extends past end of file (size") != NULL);
    ck_assert_int_eq(gguf_open_meta(path, &f, &d), 0);
    ck_assert(gguf_find_tensor(f, "ta.weight")->data == NULL);
    ck_assert(gguf_find_tensor(f, "tc.weight")->data == NULL);
    ck_assert(gguf_find_tensor(f, "tb.weight")->data == NULL);
    gguf_str s;
    ck_assert_int_eq(gguf_get_arr_str(f, "t.sarr", 2, &s), 0);
    ck_assert(gguf_str_eq(s, "ccc"));
    gguf_close(f);
    unlink(path);
}
END_TEST

START_TEST(test_type_table)
{
    static const struct {
        uint32_t id, blck, bytes;
        const char *name;
    } k[] = {{0, 1, 4, "F32"},       {1, 1, 2, "F16"},       {2, 32, 18, "Q4_0"},
             {3, 32, 20, "Q4_1"},    {6, 32, 22, "Q5_0"},    {7, 32, 24, "Q5_1"},
             {8, 32, 34, "Q8_0"},    {9, 32, 36, "Q8_1"},    {10, 256, 84, "Q2_K"},
             {11, 256, 110, "Q3_K"}, {12, 256, 144, "Q4_K"}, {13, 256, 176, "Q5_K"},
             {14, 256, 210, "Q6_K"}, {15, 256, 292, "Q8_K"}, {24, 1, 1, "I8"},
             {25, 1, 2, "I16"},      {26, 1, 4, "I32"},      {27, 1, 8, "I64"},
             {28, 1, 8, "F64"},      {30, 1, 2, "BF16"}};
    for (size_t i = 0; i < KS_ARRAY_LEN(k); i++) {
        uint32_t b = 0, s = 0;
        ck_assert_int_eq(gguf_ggml_type_layout(k[i].id, &b, &s), 0);
        ck_assert(b == k[i].blck && s == k[i].bytes);
        ck_assert_str_eq(gguf_ggml_type_name(k[i].id), k[i].name);
    }
    ck_assert_int_eq(gguf_ggml_type_layout(4, NULL, NULL), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(gguf_ggml_type_layout(5, NULL, NULL), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(gguf_ggml_type_layout(99, NULL, NULL), KS_ERR_UNSUPPORTED);
    ck_assert_str_eq(gguf_ggml_type_name(99), "unknown");
    int64_t ne[2] = {512, 3};
    uint64_t nb = 0;
    ck_assert_int_eq(gguf_tensor_nbytes(2, ne, 12, &nb), 0);
    ck_assert_uint_eq(nb, 2 * 144 * 3);
    ne[0] = 100;
    ck_assert_int_eq(gguf_tensor_nbytes(2, ne, 12, &nb), KS_ERR_INVALID);
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *real = tcase_create("real_files");
    tcase_add_test(real, test_ref_models);
    tcase_add_test(real, test_kjv_tiny);
    tcase_add_test(real, test_vocab_files);
    suite_add_tcase(s, real);
    TCase *wr = tcase_create("writer");
    tcase_add_test(wr, test_writer_roundtrip);
    tcase_add_test(wr, test_writer_write_file);
    tcase_add_test(wr, test_type_table);
    suite_add_tcase(s, wr);
    TCase *bad = tcase_create("corrupt");
    tcase_add_checked_fixture(bad, base_setup, base_teardown);
    tcase_add_test(bad, test_base_ok);
    tcase_add_test(bad, test_truncated_everywhere);
    tcase_add_test(bad, test_bad_header);
    tcase_add_test(bad, test_bad_metadata);
    tcase_add_test(bad, test_bad_alignment);
    tcase_add_test(bad, test_bad_tensor_info);
    tcase_add_test(bad, test_handmade);
    tcase_add_test(bad, test_nested_array_ok);
    tcase_add_test(bad, test_scalar_types);
    tcase_add_test(bad, test_byte_mutations);
    tcase_add_test(bad, test_files_on_disk);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    snprintf(g_shared, sizeof(g_shared), "%s", ks_test_shared_dir());
    return ks_run_suite(gguf_suite(), true);
}

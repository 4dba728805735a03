/* test_quant_types.c - the tensor types added for real-world files (Q4_1, Q5_0, Q5_1, Q2_K,
 * Q3_K, Q5_K, IQ4_NL, IQ4_XS) against independent references:
 *  - hand-made blocks dequantise exactly as gguf-py's numpy code does (fixtures made by
 *    scripts/gen_quant_fixtures.py, tests/data/quant/blocks-*.bin);
 *  - the scalar dot is the exact dot of the dequantised rows (double) to f32 rounding, and
 *    every SIMD implementation equals the scalar one within 1e-5 of the sum of |products|;
 *    the AVX2 and AVX-512 builds of the same llama.cpp order agree bit for bit;
 *  - files made by llama.cpp's llama-quantize (mixed types and fallbacks) dequantise to
 *    exactly gguf-py's values, load as models and run a forward pass;
 *  - the types kvserve does not implement fail at load with a message naming type and tensor.
 */
#include <check.h>

#include "check_main.h"
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/base.h"
#include "kvserve/engine.h"
#include "kvserve/gguf.h"
#include "kvserve/model.h"
#include "kvserve/quant.h"

static const qt_type k_new[] = {QT_Q4_1, QT_Q5_0, QT_Q5_1,   QT_Q2_K,
                                QT_Q3_K, QT_Q5_K, QT_IQ4_NL, QT_IQ4_XS};

static char g_data[1024];

static void setup_paths(void)
{
    const char *s = getenv("KVSERVE_SRC");
    snprintf(g_data, sizeof(g_data), "%s/tests/data/quant", s ? s : ".");
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    ck_assert(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* ---- (a) hand-made blocks vs gguf-py ---- */

START_TEST(test_dequant_matches_gguf_py)
{
    for (size_t t = 0; t < KS_ARRAY_LEN(k_new); t++) {
        qt_type ty = k_new[t];
        char path[1200];
        snprintf(path, sizeof(path), "%s/blocks-%s.bin", g_data, qt_type_name(ty));
        for (char *p = path + strlen(g_data); *p; p++)
            *p = (char)(*p == 'K' ? 'k' : *p);
        size_t len;
        uint8_t *buf = read_all(path, &len);
        size_t bb = qt_block_bytes(ty), be = (size_t)qt_block_elems(ty);
        size_t nb = len / (bb + 4 * be);
        ck_assert_msg(nb >= 4 && nb * (bb + 4 * be) == len, "%s: bad fixture", path);
        float *y = malloc(nb * be * 4);
        for (int impl = QT_IMPL_SCALAR; impl <= QT_IMPL_AVX512; impl++) {
            if (qt_set_impl((qt_impl)impl) != 0) continue;
            memset(y, 0xAB, nb * be * 4);
            qt_dequantize_row(ty, buf, y, (int64_t)(nb * be));
            for (size_t i = 0; i < nb * be; i++) {
                float want;
                memcpy(&want, buf + nb * bb + 4 * i, 4);
                ck_assert_msg(!memcmp(&y[i], &want, 4), "%s element %zu: %a vs gguf-py %a",
                              qt_type_name(ty), i, (double)y[i], (double)want);
            }
        }
        ck_assert_int_eq(qt_set_impl(qt_best_impl()), 0);
        free(y);
        free(buf);
    }
}
END_TEST

START_TEST(test_type_table)
{
    static const struct {
        qt_type t;
        const char *name;
        int64_t blck;
        size_t bytes;
        qt_type x;
    } want[] = {{QT_Q4_1, "q4_1", 32, 20, QT_Q8_1},     {QT_Q5_0, "q5_0", 32, 22, QT_Q8_0},
                {QT_Q5_1, "q5_1", 32, 24, QT_Q8_1},     {QT_Q2_K, "q2_K", 256, 84, QT_Q8_K},
                {QT_Q3_K, "q3_K", 256, 110, QT_Q8_K},   {QT_Q5_K, "q5_K", 256, 176, QT_Q8_K},
                {QT_IQ4_NL, "iq4_nl", 32, 18, QT_Q8_0}, {QT_IQ4_XS, "iq4_xs", 256, 136, QT_Q8_K}};
    for (size_t i = 0; i < KS_ARRAY_LEN(want); i++) {
        ck_assert(qt_type_supported(want[i].t));
        ck_assert_str_eq(qt_type_name(want[i].t), want[i].name);
        ck_assert_int_eq(qt_block_elems(want[i].t), want[i].blck);
        ck_assert_uint_eq(qt_block_bytes(want[i].t), want[i].bytes);
        ck_assert_int_eq(qt_vec_dot_type(want[i].t), want[i].x);
        uint32_t gb, gs; /* the GGUF parser's own table agrees */
        ck_assert_int_eq(gguf_ggml_type_layout(want[i].t, &gb, &gs), 0);
        ck_assert_uint_eq(gb, (uint32_t)want[i].blck);
        ck_assert_uint_eq(gs, (uint32_t)want[i].bytes);
    }
    ck_assert(!qt_type_supported(QT_Q8_1) && qt_row_bytes(QT_Q8_1, 64) == 72);
    static const uint32_t unsupported[] = {16, 17, 18, 19, 21, 22, 29, 34, 35, 39, 4, 5};
    for (size_t i = 0; i < KS_ARRAY_LEN(unsupported); i++)
        ck_assert(!qt_type_supported(unsupported[i]));
}
END_TEST

/* Q8_1 activations: llama.cpp's rule (d = amax/127, round half to even, s = fp16(d*sum)). */
START_TEST(test_quantize_q8_1)
{
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i - 20) * 0.37f;
    x[0] = -127.0f; /* block 0: id = 1 exactly, so these are exact ties */
    x[5] = 2.5f;
    x[6] = -3.5f;
    uint8_t q[72];
    qt_quantize_row(QT_Q8_1, x, q, 64);
    for (int b = 0; b < 2; b++) {
        const uint8_t *p = q + 36 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[32 * b + j]));
        uint16_t dh, sh;
        memcpy(&dh, p, 2);
        memcpy(&sh, p + 2, 2);
        ck_assert_uint_eq(dh, ks_f32_to_f16(amax / 127.f));
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int want = (int)rintf(x[32 * b + j] * (127.f / amax));
            ck_assert_int_eq((int8_t)p[4 + j], want);
            sum += want;
        }
        ck_assert_uint_eq(sh, ks_f32_to_f16(amax / 127.f * (float)sum));
    }
    ck_assert_int_eq((int8_t)q[4 + 5], 2); /* halves round to even */
    ck_assert_int_eq((int8_t)q[4 + 6], -4);
}
END_TEST

/* ---- (b) SIMD against the scalar oracle ---- */

static uint64_t g_rng = 0x243F6A8885A308D3ull;

static uint32_t rnd_u32(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = ks_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random bits with sane fp16 scales at the type's offsets (second one: the min). */
static void make_blocks(qt_type t, uint8_t *w, size_t bytes)
{
    int off[2] = {0, -1};
    switch (t) {
    case QT_Q4_1:
    case QT_Q5_1:
    case QT_Q5_K:
        off[1] = 2;
        break;
    case QT_Q2_K:
        off[0] = 80;
        off[1] = 82;
        break;
    case QT_Q3_K:
        off[0] = 108;
        break;
    default:
        break;
    }
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd_u32();
    size_t bb = qt_block_bytes(t);
    for (size_t b = 0; b < bytes / bb; b++) {
        float d = 0.001f * (float)(1 + rnd_u32() % 100);
        put_f16(w + b * bb + off[0], d);
        if (off[1] >= 0) put_f16(w + b * bb + off[1], (rnd_u32() & 1 ? -0.6f : 0.7f) * d);
    }
}

/* Double-precision dot of the dequantised rows and the sum of |products|. For Q8_1 pairs the
 * min term uses the stored s (an fp16 of d*sum), which is what the format defines. */
static double dot_ref(qt_type wt, int64_t n, const uint8_t *w, const uint8_t *x, double *as)
{
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    qt_dequantize_row(wt, w, a, n);
    qt_dequantize_row(qt_vec_dot_type(wt), x, b, n);
    double s = 0;
    *as = 0;
    for (int64_t i = 0; i < n; i++)
        *as += fabs((double)a[i] * b[i]);
    if (qt_vec_dot_type(wt) == QT_Q8_1) {
        size_t wb = qt_block_bytes(wt);
        for (int64_t k = 0; k < n / 32; k++) {
            uint16_t dh, mh, xd, xs;
            memcpy(&dh, w + k * wb, 2);
            memcpy(&mh, w + k * wb + 2, 2);
            memcpy(&xd, x + k * 36, 2);
            memcpy(&xs, x + k * 36 + 2, 2);
            double mt = 0; /* (d*q + m) * y: take the m part out, put m * s back */
            for (int j = 0; j < 32; j++)
                mt += (double)ks_f16_to_f32(mh) * b[32 * k + j];
            double sub = 0;
            for (int j = 0; j < 32; j++)
                sub += (double)a[32 * k + j] * b[32 * k + j];
            s += sub - mt + (double)ks_f16_to_f32(mh) * ks_f16_to_f32(xs);
            (void)dh;
            (void)xd;
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            s += (double)a[i] * b[i];
    }
    free(a);
    free(b);
    return s;
}

static void check_impls(qt_type wt, int64_t n)
{
    enum { R = 5, B = 3, YS = 4 };
    qt_type xt = qt_vec_dot_type(wt);
    size_t wb = qt_row_bytes(wt, n), xb = qt_row_bytes(xt, n);
    ck_assert(wb > 0 && xb > 0);
    uint8_t *w = malloc(wb * R), *x = malloc(xb * B);
    float *xf = malloc((size_t)n * 4 * B);
    make_blocks(wt, w, wb * R);
    for (int64_t i = 0; i < n * B; i++)
        xf[i] = (float)((int)(rnd_u32() % 2001) - 1000) / 700.0f;
    ck_assert_int_eq(qt_set_impl(QT_IMPL_SCALAR), 0);
    for (int b = 0; b < B; b++)
        qt_quantize_row(xt, xf + b * n, x + b * xb, n);
    float ref[R * B], as[R * B], first[R * B];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < B; b++) {
            double a, exact = dot_ref(wt, n, w + r * wb, x + b * xb, &a);
            float s = qt_vec_dot(wt, n, w + r * wb, x + b * xb);
            ck_assert_msg(fabs(s - exact) <= 3e-6 * a + 1e-30, "%s n=%ld scalar %.9g vs %.9g",
                          qt_type_name(wt), (long)n, (double)s, exact);
            ref[r * B + b] = s;
            as[r * B + b] = (float)a;
        }
    bool have_first = false;
    for (int impl = QT_IMPL_AVX2; impl <= QT_IMPL_AVX512; impl++) {
        if (qt_set_impl((qt_impl)impl) != 0) continue;
        float y[R * YS], yg[R * YS], d[R * B];
        for (int i = 0; i < R * YS; i++)
            y[i] = yg[i] = -777.0f;
        qt_matvec(wt, n, w, wb, R, x, xb, B, y, YS);
        qt_matvec_gemm(wt, n, w, wb, R, x, xb, B, yg, YS);
        for (int r = 0; r < R; r++) {
            ck_assert_float_eq(y[r * YS + B], -777.0f);
            ck_assert_float_eq(yg[r * YS + B], -777.0f);
            for (int b = 0; b < B; b++) {
                float want = ref[r * B + b], tol = 1e-5f * as[r * B + b] + 1e-30f;
                d[r * B + b] = qt_vec_dot(wt, n, w + r * wb, x + b * xb);
                ck_assert_msg(fabsf(d[r * B + b] - want) <= tol, "%s n=%ld impl %d %g vs %g",
                              qt_type_name(wt), (long)n, impl, (double)d[r * B + b], (double)want);
                ck_assert(!memcmp(&y[r * YS + b], &d[r * B + b], 4)); /* matvec = dot */
                ck_assert_msg(fabsf(yg[r * YS + b] - want) <= tol, "%s gemm", qt_type_name(wt));
            }
        }
        if (have_first) /* one llama.cpp order, two instruction sets: identical */
            ck_assert_msg(!memcmp(first, d, sizeof(d)), "%s: AVX2 and AVX-512 differ",
                          qt_type_name(wt));
        memcpy(first, d, sizeof(d));
        have_first = true;
    }
    ck_assert_int_eq(qt_set_impl(qt_best_impl()), 0);
    free(w);
    free(x);
    free(xf);
}

START_TEST(test_simd_matches_scalar)
{
    static const int64_t lens_k[] = {256, 512, 1280, 4096, 5632};
    static const int64_t lens_32[] = {32, 64, 96, 896, 2080, 4864};
    for (size_t t = 0; t < KS_ARRAY_LEN(k_new); t++) {
        bool k = qt_block_elems(k_new[t]) == 256;
        const int64_t *lens = k ? lens_k : lens_32;
        size_t nl = k ? KS_ARRAY_LEN(lens_k) : KS_ARRAY_LEN(lens_32);
        for (size_t l = 0; l < nl; l++)
            for (int rep = 0; rep < 3; rep++)
                check_impls(k_new[t], lens[l]);
    }
}
END_TEST

/* ---- (c) llama-quantize output vs gguf-py ---- */

static uint64_t fnv64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

START_TEST(test_llama_quantize_roundtrip)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/rt.txt", g_data);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char line[1024], cur[256] = "";
    static char fpath[1600];
    gguf_file *g = NULL;
    int n_checked = 0, seen_type[QT_TYPE_MAX] = {0};
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#') continue;
        char file[256], name[256];
        unsigned type;
        long long n;
        unsigned long long h;
        long long idx[3];
        unsigned bits[3];
        int got = sscanf(line, "%255s %255s %u %lld %llx %lld:%x %lld:%x %lld:%x", file, name,
                         &type, &n, &h, &idx[0], &bits[0], &idx[1], &bits[1], &idx[2], &bits[2]);
        ck_assert_int_eq(got, 11);
        if (strcmp(file, cur)) {
            gguf_close(g);
            ks_diag d;
            snprintf(fpath, sizeof(fpath), "%s/%s", g_data, file);
            ck_assert_msg(gguf_open(fpath, &g, &d) == 0, "%s: %s", fpath, d.msg);
            snprintf(cur, sizeof(cur), "%s", file);
        }
        const gguf_tensor *t = gguf_find_tensor(g, name);
        ck_assert_msg(t != NULL && t->type == type, "%s %s", file, name);
        ck_assert(qt_type_supported(type));
        seen_type[type] = 1;
        float *y = malloc((size_t)n * 4);
        int64_t rows = n / t->ne[0];
        size_t rb = qt_row_bytes((qt_type)type, t->ne[0]);
        for (int64_t r = 0; r < rows; r++)
            qt_dequantize_row((qt_type)type, (const uint8_t *)t->data + (size_t)r * rb,
                              y + r * t->ne[0], t->ne[0]);
        ck_assert_msg(fnv64(y, (size_t)n * 4) == h, "%s %s (%s): values differ from gguf-py", file,
                      name, qt_type_name(type));
        for (int k = 0; k < 3; k++) {
            uint32_t u;
            memcpy(&u, &y[idx[k]], 4);
            ck_assert_uint_eq(u, bits[k]);
        }
        free(y);
        n_checked++;
    }
    gguf_close(g);
    fclose(f);
    ck_assert_int_ge(n_checked, 100);
    for (size_t t = 0; t < KS_ARRAY_LEN(k_new); t++)
        ck_assert_msg(seen_type[k_new[t]], "no fixture tensor of %s", qt_type_name(k_new[t]));
}
END_TEST

static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double mx = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return mx / (scale > 0 ? scale : 1);
}

/* Every llama-quantize file loads and runs: a batched prefill with all logits and the same
 * tokens one at a time (the decode path) give finite logits that agree. */
START_TEST(test_mixed_files_load_and_run)
{
    static const char *files[] = {"q4_1",   "q5_0",   "q5_1",   "q2_k",   "q3_k_s", "q3_k_m",
                                  "q3_k_l", "q4_k_m", "q5_k_s", "q5_k_m", "iq4_nl", "iq4_xs"};
    enum { T = 6 };
    for (size_t i = 0; i < KS_ARRAY_LEN(files); i++) {
        char path[1200];
        snprintf(path, sizeof(path), "%s/rt-%s.gguf", g_data, files[i]);
        engine_params ep = {.model_path = path,
                            .n_threads = 1,
                            .n_ctx = 64,
                            .n_batch = 16,
                            .n_seqs = 2,
                            .k_dtype = KS_DTYPE_F16,
                            .v_dtype = KS_DTYPE_F16,
                            .llama_numerics = true};
        engine e;
        ck_assert_msg(engine_open(&ep, &e) == 0, "%s does not load", path);
        int64_t nv = model_get_hparams(e.m)->n_vocab;
        int32_t toks[T] = {1, 10, 20, 30, 40, 50};
        float *all = malloc((size_t)nv * T * 4), *one = malloc((size_t)nv * T * 4);
        kv_seq *a, *b;
        ck_assert_int_eq(engine_new_seq(&e, NULL, &a), 0);
        ck_assert_int_eq(engine_new_seq(&e, NULL, &b), 0);
        model_seq_batch pb = {.kv = a,
                              .tokens = toks,
                              .n_tokens = T,
                              .logits = all,
                              .all_logits = true,
                              .prompt_chunk = true,
                              .prompt_last = true};
        ck_assert_int_eq(model_forward(e.ctx, &pb, 1), 0);
        for (int t = 0; t < T; t++) {
            model_seq_batch db = {
                .kv = b, .tokens = &toks[t], .n_tokens = 1, .logits = one + (size_t)t * nv};
            ck_assert_int_eq(model_forward(e.ctx, &db, 1), 0);
        }
        for (int64_t j = 0; j < nv * T; j++)
            ck_assert(isfinite(all[j]) && isfinite(one[j]));
        double diff = max_rel_diff(one, all, nv * T);
        ck_assert_msg(diff < 1e-2, "%s: decode vs prefill logits differ by %g", files[i], diff);
        kv_seq_destroy(a);
        kv_seq_destroy(b);
        engine_close(&e);
        free(all);
        free(one);
    }
}
END_TEST

/* Copies src into out with tensor `name` stored as ggml type `type` (zeroed data of that
 * type's size); type ids the writer does not know are patched into the bytes afterwards. */
static void write_retyped(const char *src, const char *name, uint32_t type, const char *out)
{
    gguf_file *f;
    ks_diag d;
    ck_assert_int_eq(gguf_open(src, &f, &d), 0);
    gguf_writer *w;
    ck_assert_int_eq(gguf_writer_create(&w), 0);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        gguf_str k = gguf_kv_key(f, i);
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)k.len, k.ptr);
        gguf_type t = gguf_kv_type(f, i);
        if (t == GGUF_TYPE_STRING) {
            gguf_str s;
            ck_assert_int_eq(gguf_get_str(f, key, &s), 0);
            char *c = strndup(s.ptr, s.len);
            ck_assert_int_eq(gguf_writer_set_str(w, key, c), 0);
            free(c);
        } else if (t == GGUF_TYPE_ARRAY) {
            gguf_type et;
            uint64_t n;
            const void *data;
            ck_assert_int_eq(gguf_get_arr(f, key, &et, &n, &data), 0);
            if (et == GGUF_TYPE_STRING) {
                char **strs = calloc(n, sizeof(char *));
                for (uint64_t j = 0; j < n; j++) {
                    gguf_str s;
                    ck_assert_int_eq(gguf_kv_arr_str(f, i, j, &s), 0);
                    strs[j] = strndup(s.ptr, s.len);
                }
                ck_assert_int_eq(gguf_writer_set_arr_str(w, key, (const char *const *)strs, n), 0);
                for (uint64_t j = 0; j < n; j++)
                    free(strs[j]);
                free(strs);
            } else {
                ck_assert_int_eq(gguf_writer_set_arr(w, key, et, data, n), 0);
            }
        } else if (t == GGUF_TYPE_FLOAT32) {
            float x;
            ck_assert_int_eq(gguf_get_f32(f, key, &x), 0);
            ck_assert_int_eq(gguf_writer_set_f32(w, key, x), 0);
        } else {
            int64_t x;
            ck_assert_int_eq(gguf_get_i64(f, key, &x), 0);
            ck_assert_int_eq(t == GGUF_TYPE_INT32 ? gguf_writer_set_i32(w, key, (int32_t)x)
                                                  : gguf_writer_set_u32(w, key, (uint32_t)x),
                             0);
        }
    }
    bool known = gguf_ggml_type_layout(type, NULL, NULL) == 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char tn[256];
        snprintf(tn, sizeof(tn), "%.*s", (int)t->name.len, t->name.ptr);
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (strcmp(tn, name)) {
            ck_assert_int_eq(
                gguf_writer_add_tensor(w, tn, t->n_dims, ne, t->type, t->data, t->nbytes), 0);
            continue;
        }
        uint32_t ty = known ? type : QT_F32; /* unknown ids: patched below */
        uint64_t nbytes;
        ck_assert_int_eq(gguf_tensor_nbytes(t->n_dims, ne, ty, &nbytes), 0);
        void *zero = calloc(1, nbytes);
        ck_assert_int_eq(gguf_writer_add_tensor(w, tn, t->n_dims, ne, ty, zero, nbytes), 0);
        free(zero);
    }
    void *img;
    size_t len;
    ck_assert_int_eq(gguf_writer_write_memory(w, &img, &len), 0);
    if (!known) { /* tensor info: name, n_dims (u32), ne (u64 each), type (u32) */
        uint8_t *p = memmem(img, len, name, strlen(name));
        ck_assert(p != NULL);
        uint32_t nd;
        memcpy(&nd, p + strlen(name), 4);
        memcpy(p + strlen(name) + 4 + 8 * nd, &type, 4);
    }
    FILE *o = fopen(out, "wb");
    ck_assert(o && fwrite(img, 1, len, o) == len);
    fclose(o);
    free(img);
    gguf_writer_destroy(w);
    gguf_close(f);
}

START_TEST(test_unsupported_types_fail_cleanly)
{
    static const struct {
        uint32_t id;
        const char *want;
    } cases[] = {
        {16, "unsupported tensor type IQ2_XXS in blk.0.attn_k.weight"},
        {17, "unsupported tensor type IQ2_XS in blk.0.attn_k.weight"},
        {22, "unsupported tensor type IQ2_S in blk.0.attn_k.weight"},
        {18, "unsupported tensor type IQ3_XXS in blk.0.attn_k.weight"},
        {21, "unsupported tensor type IQ3_S in blk.0.attn_k.weight"},
        {19, "unsupported tensor type IQ1_S in blk.0.attn_k.weight"},
        {29, "unsupported tensor type IQ1_M in blk.0.attn_k.weight"},
        {34, "unsupported tensor type TQ1_0 in blk.0.attn_k.weight"},
        {35, "unsupported tensor type TQ2_0 in blk.0.attn_k.weight"},
        {24, "unsupported tensor type I8 in blk.0.attn_k.weight"},
        {39, "unsupported tensor type 39 (an unknown type id) in tensor 'blk.0.attn_k.weight'"},
        {4, "unsupported tensor type 4 (an unknown type id) in tensor 'blk.0.attn_k.weight'"},
        {1000, "unsupported tensor type 1000 (an unknown type id) in tensor 'blk.0.attn_k.weight'"},
    };
    char src[1200];
    snprintf(src, sizeof(src), "%s/rt-q4_k_m.gguf", g_data);
    for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++) {
        char path[] = "/tmp/kvserve-test-qtype-XXXXXX";
        int fd = mkstemp(path);
        ck_assert(fd >= 0);
        close(fd);
        write_retyped(src, "blk.0.attn_k.weight", cases[i].id, path);
        model *m = NULL;
        ks_diag d;
        int rc = model_load(path, &m, &d);
        unlink(path);
        ck_assert_msg(rc != 0 && m == NULL, "type %u should not load", cases[i].id);
        ck_assert_msg(strstr(d.msg, cases[i].want) != NULL, "message '%s' lacks '%s'", d.msg,
                      cases[i].want);
    }
}
END_TEST

int main(void)
{
    setup_paths();
    Suite *s = suite_create("quant_types");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_type_table);
    tcase_add_test(tc, test_dequant_matches_gguf_py);
    tcase_add_test(tc, test_quantize_q8_1);
    tcase_add_test(tc, test_simd_matches_scalar);
    tcase_add_test(tc, test_llama_quantize_roundtrip);
    tcase_add_test(tc, test_mixed_files_load_and_run);
    tcase_add_test(tc, test_unsupported_types_fail_cleanly);
    suite_add_tcase(s, tc);
    return ks_run_suite(s, true);
}

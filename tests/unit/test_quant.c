/* test_quant.c - quant module: hand-made blocks, llama.cpp rounding rules, quantise error
 * bounds, and every SIMD implementation this CPU has against the scalar oracle (which is
 * itself checked against a double-precision dot of dequantised rows).
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvserve/base.h"
#include "kvserve/quant.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float rnd_f(void) /* roughly normal, mean 0, sd 1 */
{
    float s = 0;
    for (int i = 0; i < 4; i++)
        s += (float)(rnd_u32() & 0xFFFF) / 65536.0f - 0.5f;
    return s * 1.7f;
}

static void fill_f(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rnd_f() * scale;
}

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = ks_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* ---- hand-made blocks ---- */

START_TEST(test_dequant_q8_0)
{
    uint8_t blk[34];
    put_f16(blk, 0.5f);
    for (int j = 0; j < 32; j++)
        blk[2 + j] = (uint8_t)(int8_t)(j - 16);
    float y[32];
    qt_dequantize_row(QT_Q8_0, blk, y, 32);
    for (int j = 0; j < 32; j++)
        ck_assert_float_eq(y[j], (float)(j - 16) * 0.5f);
    ck_assert_float_eq(y[0], -8.0f);
    ck_assert_float_eq(y[31], 7.5f);
}
END_TEST

START_TEST(test_dequant_q4_0)
{
    uint8_t blk[18];
    put_f16(blk, 0.5f);
    for (int j = 0; j < 16; j++)
        blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    qt_dequantize_row(QT_Q4_0, blk, y, 32);
    ck_assert_float_eq(y[0], -4.0f);  /* (0-8)*0.5 */
    ck_assert_float_eq(y[15], 3.5f);  /* (15-8)*0.5 */
    ck_assert_float_eq(y[16], 3.5f);  /* high nibble of byte 0 = 15 */
    ck_assert_float_eq(y[31], -4.0f); /* high nibble of byte 15 = 0 */
    for (int j = 0; j < 16; j++) {
        ck_assert_float_eq(y[j], (float)(j - 8) * 0.5f);
        ck_assert_float_eq(y[16 + j], (float)(7 - j) * 0.5f);
    }
}
END_TEST

START_TEST(test_dequant_q4_k)
{
    /* d = 1, dmin = 0.5; scales {1,2,3,4,17,33,63,20}, mins {0,1,2,3,16,40,5,63} */
    static const uint8_t sc[8] = {1, 2, 3, 4, 17, 33, 63, 20};
    static const uint8_t mn[8] = {0, 1, 2, 3, 16, 40, 5, 63};
    uint8_t blk[144] = {0};
    put_f16(blk, 1.0f);
    put_f16(blk + 2, 0.5f);
    uint8_t *s = blk + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    uint8_t *qs = blk + 16;
    for (int k = 0; k < 128; k++)
        qs[k] = (uint8_t)((k * 7 + 3) & 0xFF);
    float y[256];
    qt_dequantize_row(QT_Q4_K, blk, y, 256);
    /* elem 0: sub 0, low nibble of qs[0]=3: 1*1*3 - 0.5*0 = 3 */
    ck_assert_float_eq(y[0], 3.0f);
    /* elem 33: sub 1, high nibble of qs[1]=10 -> 0: 2*0 - 0.5*1 = -0.5 */
    ck_assert_float_eq(y[33], -0.5f);
    /* elem 130: sub 4, low nibble of qs[66]=(465&255=209)->1: 17*1 - 0.5*16 = 9 */
    ck_assert_float_eq(y[130], 9.0f);
    /* elem 255: sub 7, high nibble of qs[127]=(892&255=124)->7: 20*7 - 0.5*63 = 108.5 */
    ck_assert_float_eq(y[255], 108.5f);
    for (int e = 0; e < 256; e++) {
        int j = e / 32, k = 32 * (e / 64) + e % 32;
        int q = (j & 1) ? qs[k] >> 4 : qs[k] & 15;
        ck_assert_float_eq(y[e], (float)(sc[j] * q) - 0.5f * (float)mn[j]);
    }
}
END_TEST

START_TEST(test_dequant_q6_k)
{
    uint8_t blk[210] = {0};
    uint8_t *ql = blk, *qh = blk + 128;
    int8_t *scales = (int8_t *)(blk + 192);
    put_f16(blk + 208, 0.25f);
    for (int g = 0; g < 16; g++)
        scales[g] = (int8_t)(g - 8);
    for (int k = 0; k < 128; k++)
        ql[k] = (uint8_t)((k * 5 + 1) & 0xFF);
    for (int k = 0; k < 64; k++)
        qh[k] = (uint8_t)((k * 37 + 11) & 0xFF);
    float y[256];
    qt_dequantize_row(QT_Q6_K, blk, y, 256);
    /* elem 0: ql[0]&15=1, qh[0]&3 = 11&3=3 -> q=49, 0.25*(-8)*(49-32) = -34 */
    ck_assert_float_eq(y[0], -34.0f);
    /* elem 200: half 1, r=72, k=2, l=8: ql[64+8]=361&255=105 ->hi 6; qh[32+8]=(1491&255=211)>>4&3=1
       -> q=6|16=22; scale g=12 -> 4: 0.25*4*(22-32) = -10 */
    ck_assert_float_eq(y[200], -10.0f);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        int lo = ql[64 * h + l + 32 * (k & 1)];
        lo = k >= 2 ? lo >> 4 : lo & 15;
        int q = lo | (((qh[32 * h + l] >> (2 * k)) & 3) << 4);
        ck_assert_float_eq(y[e], 0.25f * (float)scales[e / 16] * (float)(q - 32));
    }
}
END_TEST

START_TEST(test_dequant_float_types)
{
    uint16_t h[4] = {0x3C00, 0xC000, 0x3555, 0x0001};
    float y[4];
    qt_dequantize_row(QT_F16, h, y, 4);
    ck_assert_float_eq(y[0], 1.0f);
    ck_assert_float_eq(y[1], -2.0f);
    ck_assert_float_eq(y[2], 0.333251953125f);
    ck_assert_float_eq(y[3], ldexpf(1.0f, -24));
    uint16_t b[3] = {0x3F80, 0xC040, 0x4049};
    qt_dequantize_row(QT_BF16, b, y, 3);
    ck_assert_float_eq(y[0], 1.0f);
    ck_assert_float_eq(y[1], -3.0f);
    ck_assert_float_eq(y[2], 3.140625f);
    ck_assert_uint_eq(qt_row_bytes(QT_Q4_K, 512), 288);
    ck_assert_uint_eq(qt_row_bytes(QT_Q8_0, 33), 0);
    ck_assert_uint_eq(qt_row_bytes(QT_Q8_K, 256), 292);
    ck_assert_uint_eq(qt_row_bytes(QT_Q6_K, 256), 210);
    ck_assert_str_eq(qt_type_name(QT_Q4_K), "q4_K");
    ck_assert(!qt_type_supported(QT_Q8_K) && qt_type_supported(QT_BF16));
    ck_assert(!qt_type_supported(16)); /* IQ2_XXS */
    ck_assert_int_eq(qt_vec_dot_type(QT_Q6_K), QT_Q8_K);
    ck_assert_int_eq(qt_vec_dot_type(QT_Q4_0), QT_Q8_0);
}
END_TEST

/* ---- llama.cpp rounding rules of activation quantisation ---- */

START_TEST(test_quantize_q8_0_rules)
{
    float x[32] = {0};
    x[0] = 127.0f;  /* amax 127: id = 1, d = 1 */
    x[1] = 2.5f;    /* half to even: 2 (roundf would give 3) */
    x[2] = -3.5f;   /* -4 */
    x[3] = 0.5f;    /* 0 */
    x[4] = -126.5f; /* -126 */
    uint8_t blk[34];
    qt_quantize_row(QT_Q8_0, x, blk, 32);
    uint16_t d;
    memcpy(&d, blk, 2);
    ck_assert_uint_eq(d, 0x3C00);
    int8_t *q = (int8_t *)(blk + 2);
    ck_assert_int_eq(q[0], 127);
    ck_assert_int_eq(q[1], 2);
    ck_assert_int_eq(q[2], -4);
    ck_assert_int_eq(q[3], 0);
    ck_assert_int_eq(q[4], -126);
    memset(x, 0, sizeof(x));
    qt_quantize_row(QT_Q8_0, x, blk, 32);
    for (int j = 0; j < 34; j++)
        ck_assert_uint_eq(blk[j], 0);
}
END_TEST

START_TEST(test_quantize_q8_k_rules)
{
    float x[512] = {0};
    x[5] = -127.0f; /* signed max: iscale = -127/-127 = 1 */
    x[6] = 127.0f;  /* same |x|, later: not picked */
    x[7] = 2.5f;
    x[8] = 3.5f;
    x[20] = -0.5f;
    uint8_t buf[2 * 292];
    qt_quantize_row(QT_Q8_K, x, buf, 512);
    float d;
    memcpy(&d, buf, 4);
    ck_assert_float_eq(d, 1.0f);
    int8_t *q = (int8_t *)(buf + 4);
    ck_assert_int_eq(q[5], -127);
    ck_assert_int_eq(q[6], 127);
    ck_assert_int_eq(q[7], 2);
    ck_assert_int_eq(q[8], 4);
    ck_assert_int_eq(q[20], 0);
    int16_t bs[16];
    memcpy(bs, buf + 260, 32);
    ck_assert_int_eq(bs[0], -127 + 127 + 2 + 4);
    ck_assert_int_eq(bs[1], 0);
    /* second block all zero: d = 0, everything zero */
    for (int j = 292; j < 584; j++)
        ck_assert_uint_eq(buf[j], 0);
    /* positive max: iscale = -127/max, d = -max/127 */
    x[5] = 0.0f;
    qt_quantize_row(QT_Q8_K, x, buf, 256);
    memcpy(&d, buf, 4);
    ck_assert_float_eq(d, 1.0f / (-127.0f / 127.0f));
    ck_assert_int_eq(q[6], -127);
}
END_TEST

/* ---- quantise -> dequantise error bounds ---- */

START_TEST(test_roundtrip_error)
{
    enum { N = 1024 };
    float *x = malloc(N * 4), *y = malloc(N * 4);
    void *tmp = malloc(qt_row_bytes(QT_F32, N));
    fill_f(x, N, 3.0f);
    x[100] = 1e-30f; /* tiny values must not break anything */
    qt_type types[] = {QT_F16, QT_BF16, QT_Q8_0, QT_Q8_K, QT_Q4_0, QT_Q4_K, QT_Q6_K};
    for (size_t t = 0; t < KS_ARRAY_LEN(types); t++) {
        qt_type ty = types[t];
        int64_t blk = ty == QT_F16 || ty == QT_BF16 ? 32 : qt_block_elems(ty);
        qt_roundtrip_row(ty, x, y, N, tmp);
        for (int64_t b0 = 0; b0 < N; b0 += blk) {
            float amax = 0;
            for (int64_t j = b0; j < b0 + blk; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            for (int64_t j = b0; j < b0 + blk; j++) {
                float e = fabsf(x[j] - y[j]), bound;
                switch (ty) {
                case QT_F16:
                    bound = fabsf(x[j]) * 0x1p-11f + 0x1p-25f;
                    break;
                case QT_BF16:
                    bound = fabsf(x[j]) * 0x1p-8f;
                    break;
                case QT_Q8_0:
                    bound = amax / 127 * 0.5f + amax * 0x1p-10f;
                    break;
                case QT_Q8_K:
                    bound = amax / 127 * 0.5f * 1.0001f;
                    break;
                case QT_Q4_0:
                    bound = amax / 8 * 1.01f;
                    break;
                case QT_Q4_K:
                    bound = amax * 0.15f;
                    break;
                default:
                    bound = amax * 0.05f;
                    break;
                }
                ck_assert_msg(e <= bound, "%s elem %ld: %g vs %g", qt_type_name(ty), (long)j,
                              (double)x[j], (double)y[j]);
            }
        }
    }
    free(x);
    free(y);
    free(tmp);
}
END_TEST

/* ---- SIMD implementations against the scalar oracle ---- */

static void make_weights(qt_type t, int64_t n, uint8_t *w, bool raw)
{
    size_t bytes = qt_row_bytes(t, n);
    if (!raw || t == QT_F32 || t == QT_F16 || t == QT_BF16) {
        float *f = malloc((size_t)n * 4);
        fill_f(f, n, 0.05f);
        qt_quantize_row(t, f, w, n);
        free(f);
        return;
    }
    /* random bits, with sane fp16 scales: covers every quant and scale pattern */
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd_u32();
    size_t bb = qt_block_bytes(t);
    for (size_t b = 0; b < bytes / bb; b++) {
        uint8_t *p = w + b * bb;
        float d = 0.001f * (float)(1 + rnd_u32() % 100);
        if (t == QT_Q6_K)
            put_f16(p + 208, d);
        else
            put_f16(p, d);
        if (t == QT_Q4_K) put_f16(p + 2, d * 0.7f);
    }
}

static double dot_ref(qt_type wt, int64_t n, const void *w, const void *x, double *abs_sum)
{
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    qt_dequantize_row(wt, w, a, n);
    qt_dequantize_row(qt_vec_dot_type(wt), x, b, n);
    double s = 0, as = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
        as += fabs((double)a[i] * b[i]);
    }
    free(a);
    free(b);
    *abs_sum = as;
    return s;
}

static void check_type_all_impls(qt_type wt, int64_t n, bool raw)
{
    enum { R = 5, B = 3, YS = 4 };
    qt_type xt = qt_vec_dot_type(wt);
    size_t wb = qt_row_bytes(wt, n), xb = qt_row_bytes(xt, n);
    ck_assert(wb > 0 && xb > 0);
    uint8_t *w = malloc(wb * R), *x = malloc(xb * B), *xq = malloc(xb);
    float *xf = malloc((size_t)n * 4 * B);
    for (int r = 0; r < R; r++)
        make_weights(wt, n, w + r * wb, raw);
    fill_f(xf, n * B, 1.0f);
    ck_assert_int_eq(qt_set_impl(QT_IMPL_SCALAR), 0);
    for (int b = 0; b < B; b++)
        qt_quantize_row(xt, xf + b * n, x + b * xb, n);
    float ref[R * B], absr[R * B];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < B; b++) {
            double as, exact = dot_ref(wt, n, w + r * wb, x + b * xb, &as);
            float s = qt_vec_dot(wt, n, w + r * wb, x + b * xb);
            ck_assert_msg(fabs(s - exact) <= 3e-5 * as + 1e-30, "%s n=%ld scalar %g vs %g",
                          qt_type_name(wt), (long)n, (double)s, exact);
            ref[r * B + b] = s;
            absr[r * B + b] = (float)as;
        }
    for (int impl = QT_IMPL_AVX2; impl <= QT_IMPL_AVX512; impl++) {
        if (qt_set_impl((qt_impl)impl) != 0) continue;
        for (int b = 0; b < B; b++) { /* activation quantisation is bit-identical */
            qt_quantize_row(xt, xf + b * n, xq, n);
            ck_assert_msg(!memcmp(xq, x + b * xb, xb), "%s quantize differs impl %d",
                          qt_type_name(xt), impl);
        }
        float y[R * YS];
        for (int i = 0; i < R * YS; i++)
            y[i] = -777.0f;
        qt_matvec(wt, n, w, wb, R, x, xb, B, y, YS);
        for (int r = 0; r < R; r++) {
            ck_assert_float_eq(y[r * YS + B], -777.0f); /* stride gap untouched */
            for (int b = 0; b < B; b++) {
                float want = ref[r * B + b], tol = 1e-5f * absr[r * B + b] + 1e-30f;
                float s = qt_vec_dot(wt, n, w + r * wb, x + b * xb);
                ck_assert_msg(fabsf(s - want) <= tol, "%s n=%ld impl %d dot %g vs %g",
                              qt_type_name(wt), (long)n, impl, (double)s, (double)want);
                ck_assert_msg(fabsf(y[r * YS + b] - want) <= tol, "%s impl %d matvec %g vs %g",
                              qt_type_name(wt), impl, (double)y[r * YS + b], (double)want);
            }
        }
    }
    ck_assert_int_eq(qt_set_impl(qt_best_impl()), 0);
    free(w);
    free(x);
    free(xq);
    free(xf);
}

START_TEST(test_impls_quant_types)
{
    static const int64_t lens[] = {256, 512, 1280, 4096};
    qt_type types[] = {QT_Q8_0, QT_Q4_0, QT_Q4_K, QT_Q6_K};
    for (size_t t = 0; t < KS_ARRAY_LEN(types); t++)
        for (size_t l = 0; l < KS_ARRAY_LEN(lens); l++) {
            check_type_all_impls(types[t], lens[l], false);
            check_type_all_impls(types[t], lens[l], true);
        }
    check_type_all_impls(QT_Q8_0, 32, true);
    check_type_all_impls(QT_Q4_0, 96, true);
}
END_TEST

START_TEST(test_impls_float_types)
{
    static const int64_t lens[] = {1, 17, 100, 256, 1000, 4096};
    qt_type types[] = {QT_F32, QT_F16, QT_BF16};
    for (size_t t = 0; t < KS_ARRAY_LEN(types); t++)
        for (size_t l = 0; l < KS_ARRAY_LEN(lens); l++)
            check_type_all_impls(types[t], lens[l], false);
}
END_TEST

START_TEST(test_f16_conversions)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
    float *f = malloc(N * 4);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    for (int impl = QT_IMPL_SCALAR; impl <= QT_IMPL_AVX512; impl++) {
        if (qt_set_impl((qt_impl)impl) != 0) continue;
        qt_f16_to_f32_row(h, f, N);
        qt_f32_to_f16_row(f, h2, N);
        for (int i = 0; i < N; i++) {
            float want = ks_f16_to_f32(h[i]);
            if (isnan(want)) {
                ck_assert(isnan(f[i]) && (h2[i] & 0x7c00) == 0x7c00 && (h2[i] & 0x3ff));
                continue;
            }
            ck_assert_msg(!memcmp(&f[i], &want, 4), "impl %d half %04x", impl, i);
            ck_assert_msg(h2[i] == h[i], "impl %d half %04x -> %04x", impl, i, h2[i]);
        }
        /* random f32 across the whole range incl. subnormal halves, ties and overflow;
         * odd length exercises the tails */
        for (int i = 0; i < N; i++) {
            uint32_t bits = rnd_u32();
            bits = (bits & 0x80000000u) | (0x32000000u + (bits % 0x16000000u));
            if (i % 7 == 0) bits &= ~0x0FFFu; /* many exact ties */
            memcpy(&f[i], &bits, 4);
        }
        qt_f32_to_f16_row(f, h2, N - 3);
        for (int i = 0; i < N - 3; i++)
            ck_assert_msg(h2[i] == ks_f32_to_f16(f[i]), "impl %d f32 %a", impl, (double)f[i]);
    }
    ck_assert_int_eq(qt_set_impl(qt_best_impl()), 0);
    free(h);
    free(h2);
    free(f);
}
END_TEST

START_TEST(test_impl_selection)
{
    ck_assert_int_eq(qt_set_impl(QT_IMPL_SCALAR), 0);
    ck_assert_int_eq(qt_get_impl(), QT_IMPL_SCALAR);
    ck_assert_int_eq(qt_set_impl((qt_impl)7), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(qt_get_impl(), QT_IMPL_SCALAR);
    ck_assert_int_eq(qt_set_impl(qt_best_impl()), 0);
    ck_assert_int_eq(qt_get_impl(), qt_best_impl());
}
END_TEST

static Suite *quant_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_dequant_q8_0);
    tcase_add_test(tc, test_dequant_q4_0);
    tcase_add_test(tc, test_dequant_q4_k);
    tcase_add_test(tc, test_dequant_q6_k);
    tcase_add_test(tc, test_dequant_float_types);
    tcase_add_test(tc, test_quantize_q8_0_rules);
    tcase_add_test(tc, test_quantize_q8_k_rules);
    tcase_add_test(tc, test_roundtrip_error);
    tcase_add_test(tc, test_impls_quant_types);
    tcase_add_test(tc, test_impls_float_types);
    tcase_add_test(tc, test_f16_conversions);
    tcase_add_test(tc, test_impl_selection);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(quant_suite(), true);
}

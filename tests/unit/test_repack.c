/* test_repack.c - core/repack: the 16-row repacked Q4_0 GEMM gives bit-identical results to
 * the plain Q4_0 kernels and to a scalar fma chain, for any row range, row count and token
 * count; mm_matmul with repacked weights equals the plain path; sources given back with
 * madvise still read correctly; KVSERVE_REPACK=0 turns it off.
 */
#include <check.h>

#include "check_main.h"
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/matmul.h"
#include "core/repack.h"
#include "kvserve/base.h"
#include "kvserve/quant.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static uint32_t rnd_u32(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float rnd_f(void)
{
    return ((float)(rnd_u32() & 0xFFFF) / 65536.0f - 0.5f) * 4.0f;
}

/* Random Q4_0 rows: every nibble pattern, scales of mixed sign and size (as real files). */
static void fill_q4_0(uint8_t *w, int64_t n_rows, int64_t n_in)
{
    int64_t nb = n_in / 32;
    for (int64_t b = 0; b < n_rows * nb; b++) {
        uint8_t *blk = w + b * 18;
        float d = rnd_f() * 0.05f;
        uint16_t h;
        qt_f32_to_f16_row(&d, &h, 1);
        memcpy(blk, &h, 2);
        for (int j = 0; j < 16; j++)
            blk[2 + j] = (uint8_t)rnd_u32();
    }
}

/* Q8_0 activations from random floats (the converter mm_matmul uses). */
static uint8_t *make_x(int64_t n_tok, int64_t n_in, float **xf_out)
{
    size_t xb = qt_row_bytes(QT_Q8_0, n_in);
    float *xf = malloc((size_t)(n_tok * n_in) * sizeof(float));
    uint8_t *xq = malloc(xb * (size_t)n_tok);
    for (int64_t i = 0; i < n_tok * n_in; i++)
        xf[i] = rnd_f() * (1 + (float)(i % 7));
    for (int64_t t = 0; t < n_tok; t++)
        qt_quantize_row(QT_Q8_0, xf + t * n_in, xq + t * xb, n_in);
    if (xf_out)
        *xf_out = xf;
    else
        free(xf);
    return xq;
}

/* The oracle: per output, acc = fma((float)(sum_j q_j * x_j), dw * dx, acc) over the blocks,
 * q_j = nibble - 8 (the chain of llama.cpp's repacked Q4_0 kernels). */
static float oracle(const uint8_t *wrow, const uint8_t *xrow, int64_t nb)
{
    float acc = 0;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *a = wrow + i * 18, *b = xrow + i * 34;
        int32_t s = 0;
        for (int j = 0; j < 16; j++) {
            s += ((a[2 + j] & 0xF) - 8) * (int8_t)b[2 + j];
            s += ((a[2 + j] >> 4) - 8) * (int8_t)b[2 + 16 + j];
        }
        float dw, dx;
        uint16_t hw, hx;
        memcpy(&hw, a, 2);
        memcpy(&hx, b, 2);
        qt_f16_to_f32_row(&hw, &dw, 1);
        qt_f16_to_f32_row(&hx, &dx, 1);
        acc = fmaf((float)s, dw * dx, acc);
    }
    return acc;
}

static bool have_avx512(void)
{
    return qt_best_impl() == QT_IMPL_AVX512;
}

/* One shape: every row range [lo, hi) in a set (aligned, unaligned, single rows) against the
 * oracle and qt_matvec, bit for bit. */
static void check_shape(int64_t n_rows, int64_t n_in, int64_t n_tok)
{
    int64_t nb = n_in / 32;
    size_t rb = (size_t)nb * 18, xb = (size_t)nb * 34;
    uint8_t *w = malloc(rb * (size_t)n_rows);
    fill_q4_0(w, n_rows, n_in);
    uint8_t *xq = make_x(n_tok, n_in, NULL);
    void *packed = NULL;
    ck_assert(rp_wanted(QT_Q4_0, n_in));
    ck_assert_int_eq(rp_repack(w, rb, n_in, n_rows, false, &packed), KS_OK);
    int32_t *off = malloc(sizeof(int32_t) * (size_t)(n_tok * nb));
    float *dx = malloc(sizeof(float) * (size_t)(n_tok * nb));
    for (int64_t t = 0; t < n_tok; t++)
        rp_prepare_x(xq + t * xb, nb, off + t * nb, dx + t * nb);
    float *y = malloc(sizeof(float) * (size_t)(n_tok * n_rows));
    float *ref = malloc(sizeof(float) * (size_t)(n_tok * n_rows));
    qt_matvec(QT_Q4_0, n_in, w, rb, n_rows, xq, xb, n_tok, ref, n_tok); /* ref[r][t] */
    int64_t ranges[][2] = {
        {0, n_rows}, {n_rows / 3, n_rows}, {1, n_rows - 1}, {n_rows - 1, n_rows}};
    for (int k = 0; k < 4; k++) {
        int64_t lo = ranges[k][0], hi = ranges[k][1];
        if (lo >= hi) continue;
        for (int64_t i = 0; i < n_tok * n_rows; i++)
            y[i] = -12345.0f; /* rows outside [lo, hi) must stay untouched */
        rp_matmul_rows(packed, n_in, lo, hi, xq, xb, off, dx, n_tok, y, n_rows);
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t r = 0; r < n_rows; r++) {
                float got = y[t * n_rows + r];
                if (r < lo || r >= hi) {
                    ck_assert_msg(got == -12345.0f, "row %lld outside [%lld,%lld) written",
                                  (long long)r, (long long)lo, (long long)hi);
                    continue;
                }
                float want = oracle(w + r * rb, xq + t * xb, nb), plain = ref[r * n_tok + t];
                ck_assert_msg(memcmp(&got, &want, 4) == 0 && memcmp(&got, &plain, 4) == 0,
                              "rows %lld in %lld, n_in %lld, tok %lld/%lld: %.9g vs oracle %.9g, "
                              "plain %.9g",
                              (long long)r, (long long)n_rows, (long long)n_in, (long long)t,
                              (long long)n_tok, got, want, plain);
            }
    }
    rp_free(packed);
    free(w);
    free(xq);
    free(off);
    free(dx);
    free(y);
    free(ref);
}

START_TEST(test_bit_exact_shapes)
{
    if (!have_avx512()) {
        ck_assert(!rp_wanted(QT_Q4_0, 32)); /* no VNNI kernels: never repacked */
        return;
    }
    const int64_t rows[] = {1, 5, 16, 17, 31, 48, 100};
    const int64_t ins[] = {32, 96, 896};
    const int64_t toks[] = {1, 2, 3, 5, 8, 9, 15, 16, 33, 70};
    for (size_t a = 0; a < sizeof(rows) / sizeof(rows[0]); a++)
        for (size_t b = 0; b < sizeof(ins) / sizeof(ins[0]); b++)
            for (size_t c = 0; c < sizeof(toks) / sizeof(toks[0]); c++)
                check_shape(rows[a], ins[b], toks[c]);
}
END_TEST

/* Through mm_matmul and the thread pool: repacked weights give the plain path's bytes (the
 * exact numerics, which is also what the plain kernels do for one token). */
START_TEST(test_matmul_equal)
{
    if (!have_avx512()) return;
    const int64_t n_in = 192, n_out = 83; /* a row count that splits unevenly over threads */
    size_t rb = qt_row_bytes(QT_Q4_0, n_in);
    uint8_t *w = malloc(rb * n_out);
    fill_q4_0(w, n_out, n_in);
    tp_pool *tp;
    ck_assert_int_eq(tp_create(2, &tp), KS_OK);
    mm_scratch *s;
    ck_assert_int_eq(mm_scratch_create(n_in, n_out, 64, 2, &s), KS_OK);
    mm_scratch_set_exact(s, true);
    const int64_t toks[] = {1, 4, 17, 64};
    for (size_t k = 0; k < 4; k++) {
        int64_t nt = toks[k];
        float *xf;
        free(make_x(nt, n_in, &xf));
        mm_weight plain = {
            .data = w, .type = QT_Q4_0, .n_in = n_in, .n_out = n_out, .row_bytes = rb};
        mm_weight pk = plain;
        ck_assert_int_eq(rp_repack(w, rb, n_in, n_out, false, &pk.packed), KS_OK);
        float *y0 = malloc(sizeof(float) * (size_t)(nt * n_out));
        float *y1 = malloc(sizeof(float) * (size_t)(nt * n_out));
        mm_matmul(tp, s, &plain, xf, y0, nt);
        mm_matmul(tp, s, &pk, xf, y1, nt);
        ck_assert_msg(memcmp(y0, y1, sizeof(float) * (size_t)(nt * n_out)) == 0,
                      "%lld tokens differ", (long long)nt);
        /* two repacked weights in one section (as Q/K/V) */
        mm_weight pk2 = pk;
        const mm_weight *ws[2] = {&pk, &pk2};
        float *y2 = malloc(sizeof(float) * (size_t)(nt * n_out));
        float *ys[2] = {y1, y2};
        mm_matmul_n(tp, s, ws, ys, 2, xf, nt);
        ck_assert(memcmp(y0, y1, sizeof(float) * (size_t)(nt * n_out)) == 0);
        ck_assert(memcmp(y0, y2, sizeof(float) * (size_t)(nt * n_out)) == 0);
        rp_free(pk.packed);
        free(xf);
        free(y0);
        free(y1);
        free(y2);
    }
    mm_scratch_destroy(s);
    tp_destroy(tp);
    free(w);
}
END_TEST

/* A file mapping released after repacking still reads back the same bytes. */
START_TEST(test_drop_source)
{
    if (!have_avx512()) return;
    const int64_t n_in = 1024, n_out = 300; /* ~170 KiB: whole pages to give back */
    size_t rb = qt_row_bytes(QT_Q4_0, n_in), len = rb * n_out;
    uint8_t *w = malloc(len);
    fill_q4_0(w, n_out, n_in);
    char path[] = "/tmp/kvs_repack_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, w, len), (ssize_t)len);
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink(path);
    ck_assert_ptr_ne(map, MAP_FAILED);
    void *p0 = NULL, *p1 = NULL;
    ck_assert_int_eq(rp_repack(map, rb, n_in, n_out, true, &p0), KS_OK);
    ck_assert(memcmp(map, w, len) == 0); /* the released pages read back from the file */
    ck_assert_int_eq(rp_repack(w, rb, n_in, n_out, false, &p1), KS_OK);
    ck_assert(memcmp(p0, p1, rp_packed_bytes(n_in, n_out)) == 0);
    rp_free(p0);
    rp_free(p1);
    munmap(map, len);
    free(w);
}
END_TEST

START_TEST(test_env_off)
{
    setenv("KVSERVE_REPACK", "0", 1);
    ck_assert(!rp_wanted(QT_Q4_0, 64));
    unsetenv("KVSERVE_REPACK");
    ck_assert(rp_wanted(QT_Q4_0, 64) == have_avx512());
    ck_assert(!rp_wanted(QT_Q8_0, 64)); /* only Q4_0 has the layout */
    ck_assert(!rp_wanted(QT_Q4_0, 48)); /* not whole blocks */
}
END_TEST

static Suite *repack_suite(void)
{
    Suite *s = suite_create("repack");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_bit_exact_shapes);
    tcase_add_test(tc, test_matmul_equal);
    tcase_add_test(tc, test_drop_source);
    tcase_add_test(tc, test_env_off);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ks_run_suite(repack_suite(), true);
}

/* kvtype.h - storage types of cached keys and values: f32, f16, bf16 and llama.cpp's block
 * types q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl (the same byte layouts as its -ctk/-ctv caches,
 * one block per 32 elements of a row). K and V may use different types.
 *
 * Rows are independent for every type but the KIVI ones: a K or V row of head_dim elements
 * takes ks_dtype_row_bytes bytes and converts to and from f32 on its own, so blocks, spans and
 * copies work per row as for f16. kivi4 / kivi2 (the KIVI paper's asymmetric 4/2-bit
 * quantisation) group K per channel over a block of tokens, so a K block can only be
 * quantised ("sealed") as a whole; their row functions below are the per-token V layout.
 */
#ifndef KVSERVE_KVTYPE_H
#define KVSERVE_KVTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values equal the GGML type ids (quant.h qt_type). */
typedef enum ks_dtype {
    KS_DTYPE_F32 = 0,
    KS_DTYPE_F16 = 1,
    KS_DTYPE_Q4_0 = 2,
    KS_DTYPE_Q4_1 = 3,
    KS_DTYPE_Q5_0 = 6,
    KS_DTYPE_Q5_1 = 7,
    KS_DTYPE_Q8_0 = 8,
    KS_DTYPE_IQ4_NL = 20,
    KS_DTYPE_BF16 = 30,
    /* KIVI-style types (core/kivi.c), not GGML ids: K is quantised per channel over a whole
     * pool block of tokens once it is sealed, V per token; rows stay f16 until then. */
    KS_DTYPE_KIVI4 = 200,
    KS_DTYPE_KIVI2 = 201,
} ks_dtype;

/* True for the ids above. */
bool ks_dtype_valid(int t);
/* True for kivi4 and kivi2. */
static inline bool ks_dtype_is_kivi(ks_dtype t)
{
    return t == KS_DTYPE_KIVI4 || t == KS_DTYPE_KIVI2;
}
/* True for f32, f16 and bf16 (no blocks). */
bool ks_dtype_is_float(ks_dtype t);
/* "f32", "f16", "q8_0", ... ("?" for an invalid id). */
const char *ks_dtype_name(ks_dtype t);
/* Parses a name as above; 0 or KS_ERR_INVALID. */
int ks_dtype_from_name(const char *name, ks_dtype *out);
/* The accepted names, comma separated, for error messages and help texts. */
const char *ks_dtype_names(void);
/* Bytes of one row of hd elements; 0 if hd is not a multiple of the type's block (32). */
size_t ks_dtype_row_bytes(ks_dtype t, int32_t hd);
/* Bytes per element as a fraction (row bytes / hd) for reports, e.g. 1.0625 for q8_0. */
double ks_dtype_elem_bytes(ks_dtype t);

/* Command-line parsers (kvserve/args.h KS_ARG_FUNC): dst is one ks_dtype (--k-dtype,
 * --v-dtype) or, for the pair version, ks_dtype[2] = {K, V} both set (--kv-dtype). */
int ks_dtype_parse_arg(const char *value, void *dst, char *err, size_t err_len);
int ks_dtype_pair_parse_arg(const char *value, void *dst, char *err, size_t err_len);
/* The three ks_arg table rows --kv-dtype, --k-dtype, --v-dtype over ks_dtype kv[2] (use in
 * a file that includes kvserve/args.h). */
#define KS_DTYPE_ARG_ROWS(kv)                                                                      \
    {"kv-dtype",                                                                                   \
     0,                                                                                            \
     KS_ARG_FUNC,                                                                                  \
     (kv),                                                                                         \
     .parse = ks_dtype_pair_parse_arg,                                                             \
     .metavar = "T",                                                                               \
     .help = "K and V cache type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl kivi4 kivi2 "       \
             "(default f16)",                                                                      \
     .flags = KS_ARG_NO_DEFAULT},                                                                  \
        {"k-dtype",                                                                                \
         0,                                                                                        \
         KS_ARG_FUNC,                                                                              \
         &(kv)[0],                                                                                 \
         .parse = ks_dtype_parse_arg,                                                              \
         .metavar = "T",                                                                           \
         .help = "K cache type alone (llama.cpp's -ctk)",                                          \
         .flags = KS_ARG_NO_DEFAULT},                                                              \
    {                                                                                              \
        "v-dtype", 0, KS_ARG_FUNC, &(kv)[1], .parse = ks_dtype_parse_arg, .metavar = "T",          \
                                             .help = "V cache type alone (llama.cpp's -ctv)",      \
                                             .flags = KS_ARG_NO_DEFAULT                            \
    }

/* One row of hd elements to f32 / from f32 (quantising with llama.cpp's rounding). For kivi
 * types this is the per-token V row. */
void ks_dtype_to_f32(ks_dtype t, const void *src, float *dst, int32_t hd);
void ks_dtype_from_f32(ks_dtype t, const float *src, void *dst, int32_t hd);

/* KIVI types (core/kivi.c). Bits per code: 4, 2, or 0 for another type. */
int32_t ks_kivi_bits(ks_dtype t);
/* Bytes of one sealed K group of bt tokens: [hd] f16 scales, [hd] f16 minima, then bt rows
 * of hd codes (token-major). 0 for a non-KIVI type or hd not a multiple of 32. */
size_t ks_kivi_k_group_bytes(ks_dtype t, int32_t hd, int32_t bt);
/* Quantises n rows [n][hd] of f32 keys as one group (per channel over the n rows) into dst
 * (ks_kivi_k_group_bytes(t, hd, n) bytes; the codes of rows n.. are not written). */
void ks_kivi_k_seal(ks_dtype t, const float *rows, int32_t n, int32_t hd, void *dst);
/* Rows j0..j0+n of a sealed K group to f32 [n][hd]. */
void ks_kivi_k_to_f32(ks_dtype t, const void *group, int32_t hd, int32_t j0, int32_t n, float *dst);
/* The per-token V row: bytes, quantise one row, dequantise n elements (whole rows). kivi4's V
 * row is q4_1's layout. */
size_t ks_kivi_v_row_bytes(ks_dtype t, int32_t hd);
void ks_kivi_v_from_f32(ks_dtype t, const float *src, void *dst, int32_t hd);
void ks_kivi_v_to_f32(ks_dtype t, const void *src, float *dst, int64_t n);

#endif

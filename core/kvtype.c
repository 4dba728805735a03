/* kvtype.c - names, sizes and row conversions of the KV storage types (kvtype.h). The block
 * types reuse quant.c's layouts, dequantisers and llama.cpp's reference quantisers, so a
 * q8_0 cache here holds the bytes llama.cpp's `-ctk q8_0` cache would.
 */
#include "kvserve/kvtype.h"

#include <stdio.h>
#include <string.h>

#include "kvserve/base.h"
#include "kvserve/quant.h"

static const struct {
    ks_dtype t;
    const char *name;
} g_types[] = {
    {KS_DTYPE_F32, "f32"},     {KS_DTYPE_F16, "f16"},     {KS_DTYPE_BF16, "bf16"},
    {KS_DTYPE_Q8_0, "q8_0"},   {KS_DTYPE_Q4_0, "q4_0"},   {KS_DTYPE_Q4_1, "q4_1"},
    {KS_DTYPE_Q5_0, "q5_0"},   {KS_DTYPE_Q5_1, "q5_1"},   {KS_DTYPE_IQ4_NL, "iq4_nl"},
    {KS_DTYPE_KIVI4, "kivi4"}, {KS_DTYPE_KIVI2, "kivi2"},
};

bool ks_dtype_valid(int t)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(g_types); i++)
        if ((int)g_types[i].t == t) return true;
    return false;
}

bool ks_dtype_is_float(ks_dtype t)
{
    return t == KS_DTYPE_F32 || t == KS_DTYPE_F16 || t == KS_DTYPE_BF16;
}

const char *ks_dtype_name(ks_dtype t)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(g_types); i++)
        if (g_types[i].t == t) return g_types[i].name;
    return "?";
}

int ks_dtype_from_name(const char *name, ks_dtype *out)
{
    for (size_t i = 0; name && i < KS_ARRAY_LEN(g_types); i++)
        if (!strcmp(g_types[i].name, name)) {
            *out = g_types[i].t;
            return 0;
        }
    return KS_ERR_INVALID;
}

const char *ks_dtype_names(void)
{
    return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, kivi4, kivi2";
}

size_t ks_dtype_row_bytes(ks_dtype t, int32_t hd)
{
    if (!ks_dtype_valid((int)t) || hd < 1) return 0;
    if (ks_dtype_is_kivi(t)) return ks_kivi_v_row_bytes(t, hd);
    return qt_row_bytes((qt_type)t, hd);
}

double ks_dtype_elem_bytes(ks_dtype t)
{
    /* KIVI: the V row; a K group of 32 tokens costs the same (stats over 32 tokens) */
    if (ks_dtype_is_kivi(t)) return (double)ks_kivi_v_row_bytes(t, 32) / 32.0;
    int64_t be = ks_dtype_valid((int)t) ? qt_block_elems((qt_type)t) : 0;
    return be > 0 ? (double)qt_block_bytes((qt_type)t) / (double)be : 0.0;
}

void ks_dtype_to_f32(ks_dtype t, const void *src, float *dst, int32_t hd)
{
    if (ks_dtype_is_kivi(t))
        ks_kivi_v_to_f32(t, src, dst, hd);
    else
        qt_dequantize_row((qt_type)t, src, dst, hd);
}

void ks_dtype_from_f32(ks_dtype t, const float *src, void *dst, int32_t hd)
{
    if (ks_dtype_is_kivi(t))
        ks_kivi_v_from_f32(t, src, dst, hd);
    else
        qt_quantize_row((qt_type)t, src, dst, hd);
}

int ks_dtype_parse_arg(const char *value, void *dst, char *err, size_t err_len)
{
    if (ks_dtype_from_name(value, dst) == 0) return 0;
    snprintf(err, err_len, "expected one of %s, got '%s'", ks_dtype_names(), value);
    return KS_ERR_INVALID;
}

int ks_dtype_pair_parse_arg(const char *value, void *dst, char *err, size_t err_len)
{
    ks_dtype *kv = dst;
    int rc = ks_dtype_parse_arg(value, &kv[0], err, err_len);
    if (rc == 0) kv[1] = kv[0];
    return rc;
}

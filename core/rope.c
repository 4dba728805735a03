/* rope.c - rotary position embeddings (see rope.h for the numerics contract).
 *
 * The angle of pair i at position pos follows ggml's rope cache: theta = pos * base^(-2i/n_rot)
 * built by repeated multiplication, divided by the pair's frequency factor, scaled by
 * freq_scale, and with YaRN blended with the unscaled angle by a ramp over the correction
 * dimensions; cos and sin are multiplied by the magnitude scale (1 without YaRN or
 * attn_factor, so those cases are bit-identical to the plain formula).
 */
#include "kvserve/rope.h"

#include <math.h>

/* The (fractional) dimension whose wavelength turns n_rot times over n_ctx_orig tokens. */
static float yarn_corr_dim(int32_t n_dims, int32_t n_ctx_orig, float n_rot, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot * 2.0f * (float)M_PI)) /
           (2.0f * logf(base));
}

static void yarn_corr_dims(const rope_params *p, int32_t n_dims, float dims[2])
{
    float start = floorf(yarn_corr_dim(n_dims, p->n_ctx_orig, p->beta_fast, p->theta));
    float end = ceilf(yarn_corr_dim(n_dims, p->n_ctx_orig, p->beta_slow, p->theta));
    dims[0] = start > 0.0f ? start : 0.0f;
    dims[1] = end < (float)(n_dims - 1) ? end : (float)(n_dims - 1);
}

void rope_angles(const rope_params *p, float pos, float *cs, float *sn)
{
    const int32_t n_rot = ROPE_N_ROT(p), half = n_rot / 2;
    const float theta_scale = powf(p->theta, -2.0f / (float)n_rot);
    float mscale = p->attn_factor > 0.0f ? p->attn_factor : 1.0f;
    float corr[2] = {0.0f, 0.0f};
    if (p->ext_factor != 0.0f) {
        yarn_corr_dims(p, n_rot, corr);
        mscale *= 1.0f + 0.1f * logf(1.0f / p->freq_scale);
    }
    if (p->relative) mscale = 1.0f;
    float theta = pos;
    for (int32_t i = 0; i < half; i++) {
        const float extrap = p->freq_factors ? theta / p->freq_factors[i] : theta;
        float th = extrap * p->freq_scale;
        if (p->ext_factor != 0.0f) {
            float y = ((float)i - corr[0]) / fmaxf(0.001f, corr[1] - corr[0]);
            float ramp = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * p->ext_factor;
            th = th * (1.0f - ramp) + extrap * ramp;
        }
        cs[i] = cosf(th) * mscale;
        sn[i] = sinf(th) * mscale;
        theta *= theta_scale;
    }
}

void rope_rotate(const rope_params *p, float *x, int32_t n_heads, const float *cs, const float *sn)
{
    const int32_t d = p->head_dim, half = ROPE_N_ROT(p) / 2;
    const int neox = p->kind == ROPE_NEOX;
    for (int32_t h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * d;
        for (int32_t i = 0; i < half; i++) {
            const int32_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float x0 = v[a], x1 = v[b];
            /* llama.cpp's C rope, compiled for FMA machines, contracts these into one fused
             * multiply-add each; matching that keeps 8-bit activation roundings identical */
            v[a] = __builtin_fmaf(x0, cs[i], -(x1 * sn[i]));
            v[b] = __builtin_fmaf(x0, sn[i], x1 * cs[i]);
        }
    }
}

void rope_rotate_pos(const rope_params *p, float *x, int32_t n_heads, float pos)
{
    float cs[512], sn[512];
    rope_angles(p, pos, cs, sn);
    rope_rotate(p, x, n_heads, cs, sn);
}

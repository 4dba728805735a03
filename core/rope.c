/* rope.c - rotary position embeddings (see rope.h for the numerics contract). */
#include "kvserve/rope.h"

#include <math.h>

void rope_angles(const rope_params *p, float pos, float *cs, float *sn)
{
    const int32_t half = p->head_dim / 2;
    const float theta_scale = powf(p->theta, -2.0f / (float)p->head_dim);
    float theta = pos;
    for (int32_t i = 0; i < half; i++) {
        const float th = theta * p->freq_scale;
        cs[i] = cosf(th);
        sn[i] = sinf(th);
        theta *= theta_scale;
    }
}

void rope_rotate(const rope_params *p, float *x, int32_t n_heads, const float *cs,
                 const float *sn)
{
    const int32_t d = p->head_dim, half = d / 2;
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

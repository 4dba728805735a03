/* attention_llama.h - llama.cpp's attention orders (attention_llama.c), called by
 * attn_forward for llama_numerics and llama_flash. Private to core/. */
#ifndef KVSERVE_CORE_ATTENTION_LLAMA_H
#define KVSERVE_CORE_ATTENTION_LLAMA_H

#include "attn_tiles.h"

/* The llama_numerics passes over a call whose state attn_forward has reset (m = -inf, l = 0,
 * acc = 0): leaves in acc each row's output, already normalised. */
void attn_llama_passes(attn_run *r, const attn_span *spans, int32_t n_spans);

/* llama_flash: llama.cpp's CPU flash-attention kernel, one query row at a time. Parameters
 * already checked; key_mass must be NULL. */
int attn_llama_flash(const attn_params *p, const attn_span *spans, int32_t n_spans,
                     attn_scratch *s);

#endif

/* policy_full.c - the `full` policy: keep every token, attend every block, original positions.
 *
 * The baseline every other policy is measured against (and the only one that reproduces the
 * model exactly). Memory grows linearly with the context; the pool budget bounds it, and
 * appends fail with KS_ERR_FULL when it is reached. No state, no eviction.
 */
#include "kvserve/kvcache.h"

#include <string.h>

static int full_positions(kv_seq *seq, const kv_chunk *chunk, int32_t *pos_out)
{
    (void)seq;
    if (chunk->n_new > 0)
        memcpy(pos_out, chunk->idx, (size_t)chunk->n_new * sizeof(int32_t));
    return 0;
}

static int full_spans(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                      attn_span *out, int32_t max, int32_t *n)
{
    (void)q;
    return kv_seq_spans(seq, layer, kv_head, out, max, n);
}

const kv_policy kv_policy_full = {
    .name = "full",
    .positions = full_positions,
    .spans = full_spans,
};

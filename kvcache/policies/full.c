/* full.c - the `full` policy: keep every token, attend every block, original positions.
 *
 * The baseline every other policy is measured against (and the only one that reproduces the
 * model exactly). Memory grows linearly with the context; the pool budget bounds it, and
 * appends fail with KS_ERR_FULL when it is reached. No state, no eviction.
 */
#include "kvserve/kvcache.h"

/* No hooks: the defaults (original positions, every block) are exactly this policy. Calling
 * nothing keeps the arrow one way: table.c names this policy as its default, full.c needs
 * nothing from the table. */
const kv_policy kv_policy_full = {
    .name = "full",
};

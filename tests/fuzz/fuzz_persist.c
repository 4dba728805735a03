/* fuzz_persist.c - fuzz target for the prefix-cache file reader (kvcache/persist.c).
 *
 * Built with -fsanitize=fuzzer (clang) it is a libFuzzer target; with replay_main.c it runs
 * every file named on the command line once. The input is a whole file image checked against
 * a fixed key (f16 K, q8_0 V, 1 layer, 2 KV heads, head dim 32, 8-token blocks: the layout of
 * the files in corpus/persist/); an accepted image is then loaded into a small pool and prefix
 * cache, whose block contents must equal the file's. Nothing may crash, leak or load from a
 * rejected image.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/kvcache.h"
#include "kvserve/persist.h"

typedef struct fz_ctx {
    int64_t entries;
} fz_ctx;

static int count_entry(void *ud, int64_t index, int32_t parent, const int32_t *tokens,
                       const uint8_t *blocks)
{
    fz_ctx *c = ud;
    if (parent >= index || !tokens || !blocks) abort(); /* parse must have checked */
    c->entries++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kv_pool_params pp = {.budget_bytes = 64 * 8 * (64 + 34),
                         .block_tokens = 8,
                         .head_dim = 32,
                         .k_dtype = KS_DTYPE_F16,
                         .v_dtype = KS_DTYPE_Q8_0};
    kv_pool *pool;
    if (kv_pool_create(&pp, &pool)) abort();
    kv_persist_key key;
    kv_persist_key_make(pool, 1, 2, 0x6b767365727665ull, &key);
    fz_ctx c = {0};
    ks_diag d;
    ks_diag_clear(&d);
    int rc = kv_persist_parse(data, size, &key, count_entry, &c, &d);
    if (rc == 0) { /* accepted: load it for real through a temporary file */
        kv_prefix_params xp = {.n_layer = 1, .n_head_kv = 2};
        kv_prefix *pc;
        if (kv_prefix_create(pool, &xp, &pc)) abort();
        char path[] = "/tmp/kvserve-fuzz-persist-XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) {
            if (write(fd, data, size) == (ssize_t)size) {
                int64_t n = 0;
                if (kv_persist_load(pc, pool, &key, path, size + 1, &n, &d) || n > c.entries)
                    abort();
            }
            close(fd);
            unlink(path);
        }
        kv_prefix_destroy(pc);
    } else if (d.msg[0] == 0) {
        abort(); /* a rejection always says why */
    }
    kv_pool_stats st;
    kv_pool_get_stats(pool, &st);
    if (st.blocks_used != 0) abort(); /* everything loaded went back with the cache */
    kv_pool_destroy(pool);
    return 0;
}

/* fuzz_head_profile.c - fuzz target for the head-profile parser (kvcache/head_profile.c).
 *
 * Built with -fsanitize=fuzzer (clang) it is a libFuzzer target; with replay_main.c it runs
 * every file named on the command line once. Every input must either parse into a profile
 * whose invariants hold (shape within bounds, scores in [0, 1], flags 0/1) and which writes
 * and reads back equal, or fail with a non-empty message; nothing may crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvserve/head_profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A parsed profile round-trips through a file (the writer is the parser's other half). */
static void roundtrip(const kv_head_profile *p)
{
    if (strpbrk(p->model, "\"\\\n\r")) return;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/fuzz-head-profile-%d.toml", (int)getpid());
    ks_diag d;
    kv_head_profile q;
    if (kv_head_profile_save(p, path, &d) != 0) return;
    if (kv_head_profile_load(path, &q, &d) != 0) abort();
    size_t n = (size_t)p->n_layer * (size_t)p->n_head_kv;
    if (q.n_layer != p->n_layer || q.n_head_kv != p->n_head_kv || q.hash != p->hash ||
        strcmp(q.model, p->model) || memcmp(q.score, p->score, n * sizeof(float)) ||
        memcmp(q.keep_full, p->keep_full, n))
        abort();
    kv_head_profile_free(&q);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kv_head_profile p;
    ks_diag d;
    int rc = kv_head_profile_parse((const char *)data, size, &p, &d);
    if (rc) {
        if (!d.msg[0] || p.score || p.keep_full) abort();
        return 0;
    }
    int64_t n = (int64_t)p.n_layer * p.n_head_kv;
    if (p.n_layer < 1 || p.n_head_kv < 1 || n > KV_HEAD_PROFILE_MAX_HEADS) abort();
    for (int64_t i = 0; i < n; i++)
        if (!(p.score[i] >= 0.0f && p.score[i] <= 1.0f) || p.keep_full[i] > 1) abort();
    roundtrip(&p);
    kv_head_profile_free(&p);
    return 0;
}

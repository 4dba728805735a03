/* cli_util.c - flag parsing and model/KV set-up shared by `kvserve run` and `perplexity`. */
#include "cli_util.h"

#include "kvserve/policy_args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_parse_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno) {
        fprintf(stderr, "kvserve: %s: '%s' is not an integer\n", flag, s ? s : "");
        return KS_ERR_INVALID;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "kvserve: %s: %lld is out of range [%lld, %lld]\n", flag, v,
                (long long)lo, (long long)hi);
        return KS_ERR_RANGE;
    }
    *out = v;
    return KS_OK;
}

int cli_parse_f32(const char *flag, const char *s, float lo, float hi, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "kvserve: %s: '%s' is not a number\n", flag, s ? s : "");
        return KS_ERR_INVALID;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "kvserve: %s: %g is out of range [%g, %g]\n", flag, v, lo, hi);
        return KS_ERR_RANGE;
    }
    *out = (float)v;
    return KS_OK;
}

int cli_parse_kv_dtype(const char *s, ks_dtype *out)
{
    if (!strcmp(s, "f16")) *out = KS_DTYPE_F16;
    else if (!strcmp(s, "f32")) *out = KS_DTYPE_F32;
    else {
        fprintf(stderr, "kvserve: --kv-dtype: '%s' is not f16 or f32\n", s);
        return KS_ERR_INVALID;
    }
    return KS_OK;
}

int cli_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)KS_MIN(n, 64);
}

int cli_engine_open(const cli_engine_params *p, cli_engine *e)
{
    ks_diag d;
    *e = (cli_engine){0};
    int rc = model_load(p->model_path, &e->m, &d);
    if (rc) {
        fprintf(stderr, "kvserve: cannot load model: %s%s%s\n", d.file[0] ? d.file : "",
                d.file[0] ? ": " : "", d.msg);
        return rc;
    }
    const model_hparams *hp = model_get_hparams(e->m);
    e->n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    model_ctx_params cp = {.n_threads = p->n_threads,
                           .max_batch_tokens = p->n_batch,
                           .max_seqs = KS_MAX(p->n_seqs, 1),
                           .llama_numerics = p->llama_numerics,
                           .llama_flash = p->llama_flash};
    if ((rc = model_ctx_create(e->m, &cp, &e->ctx))) {
        fprintf(stderr, "kvserve: cannot create the compute context: %s\n", ks_status_str(rc));
        goto fail;
    }
    kv_pool_params pp = {.block_tokens = 64, .head_dim = hp->head_dim, .dtype = p->kv_dtype};
    size_t row = (size_t)hp->head_dim * (p->kv_dtype == KS_DTYPE_F16 ? 2 : 4);
    size_t blocks_per_head = (size_t)(e->n_ctx + pp.block_tokens - 1) / pp.block_tokens + 1;
    pp.budget_bytes = blocks_per_head * (size_t)pp.block_tokens * row * 2 *
                      (size_t)hp->n_layer * (size_t)hp->n_head_kv * (size_t)KS_MAX(p->n_seqs, 1);
    if ((rc = kv_pool_create(&pp, &e->pool))) {
        fprintf(stderr, "kvserve: cannot create the KV pool: %s\n", ks_status_str(rc));
        goto fail;
    }
    return KS_OK;
fail:
    cli_engine_close(e);
    return rc;
}

void cli_engine_close(cli_engine *e)
{
    kv_pool_destroy(e->pool);
    model_ctx_destroy(e->ctx);
    model_free(e->m);
    *e = (cli_engine){0};
}

int cli_engine_new_seq(cli_engine *e, const kv_policy_config *pc, kv_seq **out)
{
    const model_hparams *hp = model_get_hparams(e->m);
    const char *name = pc ? kv_policy_kind_name(pc->kind) : "full";
    const kv_policy *policy = kv_policy_find(name);
    if (!policy) {
        fprintf(stderr, "kvserve: KV policy '%s' is not available in this build\n", name);
        return KS_ERR_INVALID;
    }
    kv_policy_args args = {.config = pc,
                           .rope = model_rope_params(e->m, -1),
                           .n_layer = hp->n_layer,
                           .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim,
                           .n_ctx_train = hp->n_ctx_train};
    return cli_engine_new_seq_args(e, policy, &args, out);
}

int cli_engine_new_seq_args(cli_engine *e, const kv_policy *policy, const void *args,
                            kv_seq **out)
{
    const model_hparams *hp = model_get_hparams(e->m);
    kv_seq_params sp = {.n_layer = hp->n_layer, .n_head_kv = hp->n_head_kv, .policy = policy,
                        .policy_config = args, .layer_window = model_layer_windows(e->m)};
    return kv_seq_create(e->pool, &sp, out);
}

int cli_parse_policy(const char *spec, kv_policy_config *pc)
{
    ks_diag d;
    ks_diag_clear(&d);
    int rc = kv_policy_config_parse_spec(pc, spec, &d);
    if (rc) fprintf(stderr, "kvserve: --kv-policy: %s\n", d.msg);
    return rc;
}

/* cli_util.c - flag parsing shared by `kvserve run` and `perplexity`. */
#include "cli_util.h"

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

int cli_parse_policy(const char *spec, kv_policy_config *pc)
{
    ks_diag d;
    ks_diag_clear(&d);
    int rc = kv_policy_config_parse_spec(pc, spec, &d);
    if (rc) fprintf(stderr, "kvserve: --kv-policy: %s\n", d.msg);
    return rc;
}

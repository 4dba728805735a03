/* policy_params.h - test support: read and set a policy's parameters by name, the way the
 * TOML loader and the API do (through the descriptors), since each policy's parameter struct
 * is private to its file. Failures are test failures. */
#ifndef KVSERVE_TEST_POLICY_PARAMS_H
#define KVSERVE_TEST_POLICY_PARAMS_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "kvserve/policy_config.h"

/* Sets parameter key of policy `pol` from its text form. */
static inline void pset(kv_policy_config *pc, const char *pol, const char *key, const char *v)
{
    ck_assert_msg(kv_policy_config_set(pc, pol, key, v) == 0, "%s.%s = %s", pol, key, v);
}

/* The same with an integer or a number. */
static inline void pseti(kv_policy_config *pc, const char *pol, const char *key, long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", v);
    pset(pc, pol, key, buf);
}

static inline void psetf(kv_policy_config *pc, const char *pol, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%.17g", v);
    pset(pc, pol, key, buf);
}

/* The text form of parameter key of policy `pol` (valid until the next call). */
static inline const char *pget(const kv_policy_config *pc, const char *pol, const char *key)
{
    static char buf[KV_PARAM_PATH_MAX];
    const kv_policy_desc *d = kv_policy_desc_find(pol);
    ck_assert_msg(d != NULL, "no policy %s", pol);
    const kv_param_desc *p = kv_param_find(kv_policy_desc_index(d), key);
    ck_assert_msg(p != NULL, "no parameter %s.%s", pol, key);
    kv_param_format(kv_policy_config_params(pc, d), p, buf, sizeof(buf));
    return buf;
}

/* Selects policy `pol` (its registry index). */
static inline void puse(kv_policy_config *pc, const char *pol)
{
    int k = kv_policy_kind_from_name(pol);
    ck_assert_msg(k >= 0, "no policy %s", pol);
    pc->kind = k;
}

#endif

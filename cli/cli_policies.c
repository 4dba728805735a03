/* cli_policies.c - `kvserve policies [--markdown]`: the registered KV policies and their
 * parameters, read from the descriptors. With --markdown it prints docs/policies.md exactly
 * (a test compares the committed file with this output). */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "kvserve/args.h"
#include "kvserve/policy_config.h"

static int print_markdown(void)
{
    size_t n = kv_policy_docs_markdown(NULL, 0) + 1;
    char *buf = malloc(n);
    if (!buf) return 1;
    kv_policy_docs_markdown(buf, n);
    fputs(buf, stdout);
    free(buf);
    return 0;
}

/* NAME: summary, then one line per parameter: key = default (range). */
static void print_plain(void)
{
    for (int32_t k = 0; k < kv_policy_count(); k++) {
        const kv_policy_desc *d = kv_policy_desc_at(k);
        printf("%s: %s\n", d->name, d->summary);
        for (int32_t i = 0; i < d->n_params; i++) {
            const kv_param_desc *p = &d->params_table[i];
            char def[KV_PARAM_PATH_MAX];
            kv_param_format_default(p, def, sizeof(def));
            const char *rule = kv_param_rule_of(d, p->key);
            if (rule)
                printf("  %-16s %s (else %s)%s\n", p->key, rule, def,
                       p->server_only ? " (server only)" : "");
            else
                printf("  %-16s %s%s\n", p->key, def, p->server_only ? " (server only)" : "");
        }
    }
}

int cli_policies_main(int argc, char **argv)
{
    bool markdown = false;
    const ks_arg args[] = {
        {"markdown", 0, KS_ARG_BOOL, &markdown,
         .help = "print the parameter tables as Markdown (docs/policies.md)"},
    };
    const ks_args_spec spec = {"kvserve policies",
                               "Lists the KV policies and their parameters with defaults.", args,
                               KS_ARRAY_LEN(args), NULL};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    if (markdown) return print_markdown();
    print_plain();
    return 0;
}

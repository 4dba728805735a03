/* main.c - entry point: dispatches to the subcommands (run, perplexity, tokenize, serve,
 * policies). It sits above both cli/ and server/, which never include each other. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "server/serve.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: kvserve <command> [options]\n"
               "commands:\n"
               "  serve       serve the HTTP API (--config FILE, --model M, --port P, ...)\n"
               "  run         generate a completion for one prompt (--model M --prompt P)\n"
               "  perplexity  perplexity of a text file (--model M --file F)\n"
               "  tokenize    tokenize stdin (--model M)\n"
               "  policies    list the KV policies and their parameters (--markdown)\n"
               "  profile-heads  score each (layer, KV head) on a passkey task, write a head\n"
               "              profile for the hybrid policy (--model M --out FILE)\n"
               "run `kvserve <command> --help` for the options of one command\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "run")) return cli_run_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return cli_perplexity_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cli_tokenize_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "policies")) return cli_policies_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "profile-heads")) return cli_profile_heads_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kvserve: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

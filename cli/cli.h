/* cli.h - the offline kvserve subcommands (run, perplexity, tokenize, policies, profile-heads).
 * Each takes the arguments after the subcommand name (argv[0] is the subcommand) and returns the
 * process exit status. */
#ifndef KVSERVE_CLI_H
#define KVSERVE_CLI_H

int cli_run_main(int argc, char **argv);           /* cli/cli_run.c */
int cli_perplexity_main(int argc, char **argv);    /* cli/cli_perplexity.c */
int cli_tokenize_main(int argc, char **argv);      /* cli/cli_tokenize.c */
int cli_policies_main(int argc, char **argv);      /* cli/cli_policies.c */
int cli_profile_heads_main(int argc, char **argv); /* cli/cli_profile.c */

#endif

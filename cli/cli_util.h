/* cli_util.h - pieces shared by the offline subcommands (run, perplexity) and the bench
 * drivers. Flags go through the table-driven parser (kvserve/args.h); the model + KV cache
 * set-up they share is engine_open (kvserve/engine.h). */
#ifndef KVSERVE_CLI_UTIL_H
#define KVSERVE_CLI_UTIL_H

#include "kvserve/base.h"

/* Compute threads by default: the online CPUs, 1..64. */
int cli_default_threads(void);

#endif

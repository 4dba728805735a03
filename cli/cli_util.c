/* cli_util.c - pieces shared by the offline subcommands and the bench drivers. Flags are
 * parsed by the table-driven parser (kvserve/args.h). */
#include "cli_util.h"

#include <unistd.h>

int cli_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)KS_MIN(n, 64);
}

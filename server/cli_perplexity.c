/* placeholder: not written yet */
#include <stdio.h>
#include "kvserve/cli.h"
int cli_perplexity_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvserve: 'perplexity' is not available yet\n");
    return 1;
}

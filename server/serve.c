/* placeholder: not written yet */
#include <stdio.h>
#include "kvserve/cli.h"
int cli_serve_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvserve: 'serve' is not available yet\n");
    return 1;
}

/* serve.h - `kvserve serve`: the server's one entry point. Called by the top-level main.c;
 * cli/ never includes it, and server/ never includes cli/. */
#ifndef KVSERVE_SERVE_H
#define KVSERVE_SERVE_H

/* Takes the arguments after "serve" (argv[0] is "serve"); returns the process exit status. */
int serve_main(int argc, char **argv);

#endif

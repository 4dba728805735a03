/* args.h - the one table-driven command-line parser of every kvserve program.
 *
 * Each program (the kvserve subcommands, the bench drivers, make_model) describes its options
 * in one const table of ks_arg: long name, type, range or choices, destination and a one-line
 * help. ks_args_parse reads argv against it: `--help` / `-h` prints a usage generated from the
 * table (with each option's default read from its destination before parsing) and the caller
 * exits 0; a bad value names the flag and what it wants ("--n-predict: expected an integer in
 * [1, 1000000], got 'x'"); unknown flags, missing values and missing required options are
 * errors. Options take `--name value` or `--name=value`; positional arguments are table rows
 * with KS_ARG_POSITIONAL, filled in order.
 *
 * It sits in the base layer (no dependency but libc) so that bench/ and tests can use it
 * without reaching into server/ or cli/.
 */
#ifndef KVSERVE_ARGS_H
#define KVSERVE_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvserve/base.h"

typedef enum ks_arg_type {
    KS_ARG_BOOL,   /* a flag without value: *(bool *)dst = true */
    KS_ARG_INT,    /* int64_t in [lo, hi] */
    KS_ARG_I32,    /* int32_t in [lo, hi] */
    KS_ARG_FLOAT,  /* float in [lo, hi] */
    KS_ARG_DOUBLE, /* double in [lo, hi] */
    KS_ARG_STRING, /* const char *, pointing into argv */
    KS_ARG_ENUM,   /* int: the index of the value in choices */
    KS_ARG_FUNC,   /* parse(value, dst, err, err_len) runs for every occurrence */
} ks_arg_type;

enum {
    KS_ARG_REQUIRED = 1u << 0,   /* an error when absent */
    KS_ARG_POSITIONAL = 1u << 1, /* filled from non-option arguments, in table order */
    KS_ARG_NO_DEFAULT = 1u << 2, /* the help text says the default itself */
};

/* Parses one value into dst; on error writes what the flag wants (e.g. "a policy spec NAME
 * or NAME:key=value,...: unknown KV policy 'x'") into err and returns a negative status. */
typedef int (*ks_arg_parse_fn)(const char *value, void *dst, char *err, size_t err_len);

typedef struct ks_arg {
    const char *name; /* long name without dashes ("n-predict"); positional: display name */
    char short_name;  /* 0 or a one-letter alias used as -x */
    ks_arg_type type;
    void *dst;                  /* see ks_arg_type */
    double lo, hi;              /* numeric range, inclusive */
    const char *const *choices; /* ENUM: NULL-terminated names */
    ks_arg_parse_fn parse;      /* FUNC */
    const char *metavar;        /* value placeholder in the usage ("N", "FILE"); NULL: derived */
    const char *help;           /* one line */
    unsigned flags;             /* KS_ARG_REQUIRED | KS_ARG_POSITIONAL | KS_ARG_NO_DEFAULT */
} ks_arg;

typedef struct ks_args_spec {
    const char *prog;    /* "kvserve run", "bench_eval" */
    const char *summary; /* one line printed under the usage line */
    const ks_arg *args;
    size_t n_args;
    const char *epilog; /* NULL or text printed after the options */
} ks_args_spec;

/* ks_args_parse returns KS_ARGS_HELP after printing the usage to stdout. */
#define KS_ARGS_HELP 1

/* Parses argv[1..argc) (argv[0] is the program or subcommand name). Returns 0, KS_ARGS_HELP,
 * or KS_ERR_INVALID / KS_ERR_RANGE after printing "PROG: --flag: reason" to stderr. Writes
 * destinations as it goes, so on error they may be partly updated. */
int ks_args_parse(const ks_args_spec *s, int argc, char **argv) KS_WUR;
/* Prints "usage: PROG [options] POSITIONALS", the summary and one line per option. */
void ks_args_usage(const ks_args_spec *s, FILE *f);
/* ks_args_parse mapped to a process exit status: -1 to go on, 0 after --help, 2 on error. */
int ks_args_run(const ks_args_spec *s, int argc, char **argv);

#endif

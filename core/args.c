/* args.c - the table-driven command-line parser (see kvserve/args.h).
 *
 * One pass over argv: `-h`/`--help` anywhere wins and prints the usage (defaults are read from
 * the destinations, which hold them before parsing); every other argument is matched against
 * the table, converted and range-checked by its row's type. Messages always name the flag and
 * say what it wants, so a user never sees a bare "invalid argument".
 */
#include "kvserve/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Ranges at or beyond this are printed as open-ended ("an integer >= 1"). */
#define ARGS_HUGE 9.0e15

static const char *type_metavar(const ks_arg *a)
{
    if (a->metavar) return a->metavar;
    switch (a->type) {
    case KS_ARG_INT:
    case KS_ARG_I32:
        return "N";
    case KS_ARG_FLOAT:
    case KS_ARG_DOUBLE:
        return "X";
    case KS_ARG_ENUM:
        return "NAME";
    default:
        return "VALUE";
    }
}

/* What a row accepts, e.g. "an integer in [1, 256]" or "one of f16, f32". */
static void arg_wants(const ks_arg *a, char *buf, size_t n)
{
    bool is_int = a->type == KS_ARG_INT || a->type == KS_ARG_I32;
    const char *what = is_int ? "an integer" : "a number";
    size_t w = 0;
    if (a->type == KS_ARG_ENUM) {
        w = (size_t)snprintf(buf, n, "one of ");
        for (int i = 0; a->choices[i] && w < n; i++)
            w += (size_t)snprintf(buf + w, n - w, "%s%s", i ? ", " : "", a->choices[i]);
    } else if (a->type == KS_ARG_STRING || a->type == KS_ARG_FUNC) {
        snprintf(buf, n, "a value (%s)", type_metavar(a));
    } else if (a->hi >= ARGS_HUGE) {
        snprintf(buf, n, "%s >= %.*f", what, is_int ? 0 : 6, a->lo);
    } else if (is_int) {
        snprintf(buf, n, "%s in [%.0f, %.0f]", what, a->lo, a->hi);
    } else {
        snprintf(buf, n, "%s in [%g, %g]", what, a->lo, a->hi);
    }
}

static int arg_fail(const ks_args_spec *s, const ks_arg *a, const char *value, int status)
{
    char wants[256];
    arg_wants(a, wants, sizeof(wants));
    const char *dash = a->flags & KS_ARG_POSITIONAL ? "" : "--";
    if (value)
        fprintf(stderr, "%s: %s%s: expected %s, got '%s'\n", s->prog, dash, a->name, wants, value);
    else
        fprintf(stderr, "%s: %s%s: expected %s, got nothing\n", s->prog, dash, a->name, wants);
    return status;
}

static int parse_number(const ks_arg *a, const char *v, double *out)
{
    char *end = NULL;
    errno = 0;
    bool is_int = a->type == KS_ARG_INT || a->type == KS_ARG_I32;
    double x = 0;
    if (is_int) {
        long long i = strtoll(v, &end, 10);
        x = (double)i;
    } else {
        x = strtod(v, &end);
    }
    if (!*v || *end || errno || !isfinite(x)) return KS_ERR_INVALID;
    if (x < a->lo || x > a->hi) return KS_ERR_RANGE;
    *out = x;
    return KS_OK;
}

/* Stores a numeric value; integers are re-read so that 64-bit values keep every digit. */
static void store_number(const ks_arg *a, const char *v, double x)
{
    switch (a->type) {
    case KS_ARG_INT:
        *(int64_t *)a->dst = strtoll(v, NULL, 10);
        break;
    case KS_ARG_I32:
        *(int32_t *)a->dst = (int32_t)strtol(v, NULL, 10);
        break;
    case KS_ARG_FLOAT:
        *(float *)a->dst = (float)x;
        break;
    default:
        *(double *)a->dst = x;
        break;
    }
}

static int arg_set(const ks_args_spec *s, const ks_arg *a, const char *v)
{
    if (!v) return arg_fail(s, a, NULL, KS_ERR_INVALID);
    switch (a->type) {
    case KS_ARG_STRING:
        *(const char **)a->dst = v;
        return KS_OK;
    case KS_ARG_ENUM:
        for (int i = 0; a->choices[i]; i++) {
            if (strcmp(a->choices[i], v) == 0) {
                *(int *)a->dst = i;
                return KS_OK;
            }
        }
        return arg_fail(s, a, v, KS_ERR_INVALID);
    case KS_ARG_FUNC: {
        char err[256] = "";
        int rc = a->parse(v, a->dst, err, sizeof(err));
        if (rc) fprintf(stderr, "%s: --%s: %s\n", s->prog, a->name, err[0] ? err : "bad value");
        return rc;
    }
    default: {
        double x = 0;
        int rc = parse_number(a, v, &x);
        if (rc) return arg_fail(s, a, v, rc);
        store_number(a, v, x);
        return KS_OK;
    }
    }
}

static const ks_arg *find_long(const ks_args_spec *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_args; i++) {
        const ks_arg *a = &s->args[i];
        if (!(a->flags & KS_ARG_POSITIONAL) && strlen(a->name) == len &&
            strncmp(a->name, name, len) == 0)
            return a;
    }
    return NULL;
}

static const ks_arg *find_short(const ks_args_spec *s, char c)
{
    for (size_t i = 0; c && i < s->n_args; i++)
        if (s->args[i].short_name == c && !(s->args[i].flags & KS_ARG_POSITIONAL))
            return &s->args[i];
    return NULL;
}

static const ks_arg *next_positional(const ks_args_spec *s, size_t *cursor)
{
    for (; *cursor < s->n_args; (*cursor)++)
        if (s->args[*cursor].flags & KS_ARG_POSITIONAL) return &s->args[(*cursor)++];
    return NULL;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

/* Matches one option argument (argv[*i]) and consumes its value. */
static int parse_option(const ks_args_spec *s, int argc, char **argv, int *i, bool *seen)
{
    const char *arg = argv[*i], *eq = NULL;
    const ks_arg *a = NULL;
    if (arg[1] == '-') {
        eq = strchr(arg + 2, '=');
        a = find_long(s, arg + 2, eq ? (size_t)(eq - arg - 2) : strlen(arg + 2));
    } else if (arg[2] == 0) {
        a = find_short(s, arg[1]);
    }
    if (!a) {
        fprintf(stderr, "%s: unknown option '%s' (see --help)\n", s->prog, arg);
        return KS_ERR_INVALID;
    }
    seen[a - s->args] = true;
    if (a->type == KS_ARG_BOOL) {
        if (eq) {
            fprintf(stderr, "%s: --%s takes no value\n", s->prog, a->name);
            return KS_ERR_INVALID;
        }
        *(bool *)a->dst = true;
        return KS_OK;
    }
    const char *v = eq ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    return arg_set(s, a, v);
}

static int check_required(const ks_args_spec *s, const bool *seen)
{
    for (size_t k = 0; k < s->n_args; k++) {
        const ks_arg *a = &s->args[k];
        if ((a->flags & KS_ARG_REQUIRED) && !seen[k]) {
            const char *dash = a->flags & KS_ARG_POSITIONAL ? "" : "--";
            fprintf(stderr, "%s: %s%s is required (see --help)\n", s->prog, dash, a->name);
            return KS_ERR_INVALID;
        }
    }
    return KS_OK;
}

int ks_args_parse(const ks_args_spec *s, int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        ks_args_usage(s, stdout);
        return KS_ARGS_HELP;
    }
    bool seen[128] = {false};
    if (s->n_args > KS_ARRAY_LEN(seen)) return KS_ERR_INVALID;
    size_t cursor = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = KS_OK;
        if (arg[0] == '-' && arg[1] && !(arg[1] >= '0' && arg[1] <= '9')) {
            rc = parse_option(s, argc, argv, &i, seen);
        } else {
            const ks_arg *a = next_positional(s, &cursor);
            if (!a) {
                fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", s->prog, arg);
                return KS_ERR_INVALID;
            }
            seen[a - s->args] = true;
            rc = arg_set(s, a, arg);
        }
        if (rc) return rc;
    }
    return check_required(s, seen);
}

/* The default of a row, from its destination before parsing ("" when there is none). */
static void arg_default(const ks_arg *a, char *buf, size_t n)
{
    buf[0] = 0;
    if (a->flags & (KS_ARG_NO_DEFAULT | KS_ARG_REQUIRED) || !a->dst) return;
    switch (a->type) {
    case KS_ARG_INT:
        snprintf(buf, n, "%lld", (long long)*(int64_t *)a->dst);
        break;
    case KS_ARG_I32:
        snprintf(buf, n, "%d", *(int32_t *)a->dst);
        break;
    case KS_ARG_FLOAT:
        snprintf(buf, n, "%g", *(float *)a->dst);
        break;
    case KS_ARG_DOUBLE:
        snprintf(buf, n, "%g", *(double *)a->dst);
        break;
    case KS_ARG_STRING:
        if (*(const char **)a->dst) snprintf(buf, n, "%s", *(const char **)a->dst);
        break;
    case KS_ARG_ENUM:
        snprintf(buf, n, "%s", a->choices[*(int *)a->dst]);
        break;
    default:
        break;
    }
}

static void usage_row(const ks_arg *a, FILE *f)
{
    char left[64], wants[256], def[128];
    if (a->flags & KS_ARG_POSITIONAL)
        snprintf(left, sizeof(left), "%s", a->name);
    else if (a->type == KS_ARG_BOOL)
        snprintf(left, sizeof(left), "--%s", a->name);
    else
        snprintf(left, sizeof(left), "--%s %s", a->name, type_metavar(a));
    if (a->short_name && !(a->flags & KS_ARG_POSITIONAL)) {
        size_t w = strlen(left);
        snprintf(left + w, sizeof(left) - w, ", -%c", a->short_name);
    }
    fprintf(f, "  %-26s %s", left, a->help ? a->help : "");
    bool ranged = a->type != KS_ARG_BOOL && a->type != KS_ARG_STRING && a->type != KS_ARG_FUNC;
    if (ranged) {
        arg_wants(a, wants, sizeof(wants));
        fprintf(f, "; %s", wants);
    }
    arg_default(a, def, sizeof(def));
    if (a->flags & KS_ARG_REQUIRED)
        fprintf(f, " (required)");
    else if (def[0])
        fprintf(f, " (default %s)", def);
    fputc('\n', f);
}

void ks_args_usage(const ks_args_spec *s, FILE *f)
{
    fprintf(f, "usage: %s [options]", s->prog);
    for (size_t i = 0; i < s->n_args; i++) {
        const ks_arg *a = &s->args[i];
        if (a->flags & KS_ARG_POSITIONAL)
            fprintf(f, a->flags & KS_ARG_REQUIRED ? " %s" : " [%s]", a->name);
    }
    fputc('\n', f);
    if (s->summary) fprintf(f, "%s\n", s->summary);
    fprintf(f, "options:\n");
    for (size_t i = 0; i < s->n_args; i++)
        usage_row(&s->args[i], f);
    fprintf(f, "  %-26s print this help and exit\n", "--help, -h");
    if (s->epilog) fprintf(f, "%s\n", s->epilog);
}

int ks_args_run(const ks_args_spec *s, int argc, char **argv)
{
    int rc = ks_args_parse(s, argc, argv);
    if (rc == KS_ARGS_HELP) return 0;
    return rc ? 2 : -1;
}

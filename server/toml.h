/* toml.h - a small, strict TOML 1.0 reader for the kvserve configuration.
 *
 * Supported: tables [a.b], arrays of tables [[a]], dotted / bare / quoted keys, basic and
 * literal strings (single and multi-line), integers (decimal, 0x, 0o, 0b, '_' separators),
 * floats (incl. inf, nan), booleans, arrays (multi-line, trailing comma, mixed types), inline
 * tables and comments. Offset/local dates and times are rejected as "unsupported".
 * Redefining a key or a table is an error. Every node remembers the line it was defined on.
 *
 * Errors fill a ks_diag: file, line, key (dotted path when known) and msg, where msg is the
 * complete text "FILE:LINE: key: reason" (or "FILE:LINE: reason" without a key).
 *
 * A parsed document is immutable and owns all its nodes and strings; pointers returned by the
 * accessors stay valid until toml_doc_free. Read-only use from several threads is safe.
 */
#ifndef KVSERVE_TOML_H
#define KVSERVE_TOML_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"

typedef enum toml_kind {
    TOML_STRING,
    TOML_INT,
    TOML_FLOAT,
    TOML_BOOL,
    TOML_ARRAY,
    TOML_TABLE,
} toml_kind;

typedef struct toml_doc toml_doc;
typedef struct toml_node toml_node;

/* Parses `len` bytes of `text` (need not be NUL-terminated). `filename` is used in
 * diagnostics only (may be NULL: "<string>"). On success *out owns the document (free with
 * toml_doc_free). Returns KS_ERR_FORMAT (syntax / redefinition), KS_ERR_UNSUPPORTED
 * (dates/times), KS_ERR_RANGE (integer overflow) or KS_ERR_NOMEM; *out is then NULL. */
int toml_parse(const char *text, size_t len, const char *filename, toml_doc **out,
               ks_diag *d) KS_WUR;
/* Reads and parses a file. */
int toml_parse_file(const char *path, toml_doc **out, ks_diag *d) KS_WUR;
void toml_doc_free(toml_doc *doc); /* accepts NULL */

const toml_node *toml_doc_root(const toml_doc *doc); /* the root table; never NULL */
const char *toml_doc_filename(const toml_doc *doc);

toml_kind toml_node_kind(const toml_node *n);
const char *toml_kind_name(toml_kind k); /* "string", "integer", ... */
int toml_node_line(const toml_node *n);  /* 1-based line of definition */

/* Value accessors: the node must be of the matching kind (asserted). Strings are
 * NUL-terminated UTF-8 and may contain embedded NULs (from \u0000); len is then useful. */
const char *toml_node_string(const toml_node *n, size_t *len);
int64_t toml_node_int(const toml_node *n);
double toml_node_float(const toml_node *n);
bool toml_node_bool(const toml_node *n);

/* Arrays and tables: number of elements / keys, element or value i (in definition order),
 * and for tables the key of entry i. */
size_t toml_node_count(const toml_node *n);
const toml_node *toml_node_at(const toml_node *n, size_t i);
const char *toml_table_key(const toml_node *table, size_t i);
/* Direct child of a table by (unquoted) key; NULL when absent or n is not a table. */
const toml_node *toml_table_get(const toml_node *table, const char *key);
/* Looks up a dotted path of bare keys ("kvcache.snapkv.budget") from a table; NULL when any
 * component is absent or not a table. An empty path returns `table`. */
const toml_node *toml_node_find(const toml_node *table, const char *path);

/* Fills d with file, line, key and msg = "FILE:LINE: KEY: reason" ("FILE:LINE: reason" when
 * key is NULL or empty); returns status. Shared by the configuration loader. */
int toml_diag_set(ks_diag *d, int status, const char *file, int line, const char *key,
                  const char *fmt, ...) KS_PRINTF(6, 7);
int toml_diag_vset(ks_diag *d, int status, const char *file, int line, const char *key,
                   const char *fmt, va_list ap);

#endif

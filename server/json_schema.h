/* json_schema.h - JSON Schema -> GBNF, for response_format json_schema and tool arguments
 * (internal to server/: it reads jansson trees; the grammar core in engine/ takes the GBNF).
 *
 * Supported: type (one or a list), properties / required / additionalProperties (absent =
 * false, as llama.cpp's converter does; true or a schema allows more keys after the declared
 * ones), items, minItems / maxItems, enum, const, minLength / maxLength, format (date,
 * date-time, time, uuid), minimum / maximum / exclusiveMinimum / exclusiveMaximum (exact
 * for integers; for numbers, a non-negative range allows fraction digits, other ranges are
 * held to the integers inside them), anyOf / oneOf (alternatives: oneOf's exclusivity is not
 * enforced), allOf with one member, $ref into the same document ($defs, definitions or any
 * "#/..." pointer). Annotations (title, description, default, examples, $schema, $id,
 * $comment, deprecated, readOnly, writeOnly) are ignored. Properties come out in the order the
 * schema declares them, required ones first.
 *
 * Rejected (KS_ERR_UNSUPPORTED / KS_ERR_INVALID) with d->key = the JSON pointer and d->msg
 * naming it: any other keyword, an unknown format, a recursive or non-local $ref, values of
 * the wrong type, lengths above GRAM_MAX_REPEAT, integer bounds beyond +-10^15.
 */
#ifndef KVSERVE_JSON_SCHEMA_H
#define KVSERVE_JSON_SCHEMA_H

#include <jansson.h>

#include "kvserve/base.h"

/* GBNF text (malloc'd, NUL-terminated, caller frees) whose root matches the JSON texts valid
 * under `schema` (compact or with single spaces / newlines between tokens). */
int api_schema_to_gbnf(const json_t *schema, char **out, ks_diag *d) KS_WUR;

/* GBNF for any JSON object (response_format json_object). Static text. */
const char *api_json_object_gbnf(void);

#endif

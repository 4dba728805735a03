/* gguf.h - read-only GGUF v2/v3 reader over mmap, and a small writer for tests and benches.
 *
 * The reader validates every count, offset, size and dimension product before use: a
 * corrupt, truncated or hostile file yields KS_ERR_FORMAT with a diagnostic naming what is
 * wrong, never a crash or an out-of-bounds read. Tensor data is never copied: tensor
 * pointers point into the mapping, which lives until gguf_close().
 */
#ifndef KVSERVE_GGUF_H
#define KVSERVE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/base.h"

/* Metadata value types (numbering of the GGUF spec). */
typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (fastest); unused dims are 1 */
    uint32_t type;             /* ggml type id (see quant.h qt_type) */
    uint64_t offset;           /* relative to the start of the data section */
    const void *data;          /* into the mapping */
    uint64_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and parses a file. On failure returns a negative status and fills d (file = path,
 * key = the offending metadata key or tensor name when there is one): KS_ERR_IO (open, mmap),
 * KS_ERR_FORMAT (malformed), KS_ERR_UNSUPPORTED (GGUF v1, v > 3, big-endian), KS_ERR_NOMEM.
 * Zero-sized dimensions are rejected (every ne[k] >= 1). The file is read-only once open:
 * any thread may call the getters concurrently. */
int gguf_open(const char *path, gguf_file **out, ks_diag *d) KS_WUR;
/* Parses an in-memory image (not copied; must outlive the gguf_file). For tests and fuzzing. */
int gguf_open_memory(const void *buf, size_t len, gguf_file **out, ks_diag *d) KS_WUR;
/* Like gguf_open, but tensor data need not lie inside the file (tensor infos are still fully
 * validated; a tensor whose data is absent gets data == NULL): for vocab-only or metadata-only
 * use of a file whose data section is missing or short. */
int gguf_open_meta(const char *path, gguf_file **out, ks_diag *d) KS_WUR;
void gguf_close(gguf_file *f); /* accepts NULL */
/* Whether the tensor data is a read-only file mapping (gguf_open) whose pages the kernel
 * can drop and fault in again, rather than a caller's buffer (gguf_open_memory). */
bool gguf_is_mapped(const gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_alignment(const gguf_file *f);

/* Metadata. Keys are looked up by exact name; -1 if absent. */
int64_t gguf_n_kv(const gguf_file *f);
int64_t gguf_find_key(const gguf_file *f, const char *key);
gguf_str gguf_kv_key(const gguf_file *f, int64_t i);
gguf_type gguf_kv_type(const gguf_file *f, int64_t i);

/* Typed getters. Integers of any integer type convert when the value fits (else
 * KS_ERR_RANGE); float getters accept FLOAT32/FLOAT64. Absent key: KS_ERR_NOT_FOUND;
 * wrong type: KS_ERR_FORMAT. Outputs are untouched on failure. */
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) KS_WUR;
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) KS_WUR;
int gguf_get_f32(const gguf_file *f, const char *key, float *out) KS_WUR;
int gguf_get_bool(const gguf_file *f, const char *key, bool *out) KS_WUR;
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) KS_WUR;

/* Arrays: element type and count. For numeric arrays *data points at the packed
 * little-endian elements in the mapping (may be unaligned: read with memcpy); for string
 * arrays at the first element's length prefix (use gguf_get_arr_str). Any out pointer may be
 * NULL. Not an array: KS_ERR_FORMAT; an array of arrays (legal GGUF, validated at open):
 * KS_ERR_UNSUPPORTED. */
int gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem_type, uint64_t *n,
                 const void **data) KS_WUR;
/* Element i of a string array (offsets are indexed at open time, so this is O(1)).
 * KS_ERR_NOT_FOUND, KS_ERR_FORMAT (not a string array) or KS_ERR_RANGE (i >= count). */
int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out) KS_WUR;
/* The same by kv index, for iterating: kv must be an array of strings. */
int gguf_kv_arr_str(const gguf_file *f, int64_t kv, uint64_t i, gguf_str *out) KS_WUR;

/* Tensors. */
int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */

/* ggml tensor type table (block layouts of the format; independent of what quant.h can
 * compute with). Name is "unknown" for an unknown id; layout returns KS_ERR_UNSUPPORTED. */
const char *gguf_ggml_type_name(uint32_t type);
int gguf_ggml_type_layout(uint32_t type, uint32_t *blck_elems, uint32_t *blck_bytes) KS_WUR;
/* Bytes of a tensor of this shape and type, overflow-checked: KS_ERR_INVALID for a bad
 * n_dims, a dimension < 1 or a row length not a multiple of the block size, KS_ERR_RANGE on
 * overflow, KS_ERR_UNSUPPORTED for an unknown type. */
int gguf_tensor_nbytes(uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t *out) KS_WUR;

/* Compares a gguf_str to a C string. */
bool gguf_str_eq(gguf_str s, const char *c);

/* ---- writer (tests, benches, tools) ----
 * Builds a GGUF v3 file in memory and writes it out. Tensor data is copied in. */
typedef struct gguf_writer gguf_writer;
int gguf_writer_create(gguf_writer **out) KS_WUR;
void gguf_writer_destroy(gguf_writer *w);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) KS_WUR;
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) KS_WUR;
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v) KS_WUR;
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) KS_WUR;
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) KS_WUR;
/* Numeric array of n elements of elem_type (packed little-endian). */
int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type, const void *data,
                        uint64_t n) KS_WUR;
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t n) KS_WUR;
/* Setters return KS_ERR_INVALID for an empty or duplicate key. Setting general.alignment
 * (u32, a power of two) also sets the layout's alignment (else 32); an invalid value is
 * written as given (for corrupt-file tests) and the layout stays at 32. */
/* Adds a tensor: ne[0..n_dims), ggml type, nbytes of raw data (must match the shape, else
 * KS_ERR_INVALID; duplicate names too). data == NULL adds a zero-filled tensor. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t type, const void *data, uint64_t nbytes) KS_WUR;
int gguf_writer_write_file(gguf_writer *w, const char *path) KS_WUR;
/* Serialises to a malloc'd buffer (caller frees). */
int gguf_writer_write_memory(gguf_writer *w, void **out, size_t *out_len) KS_WUR;

/* True once a mapped GGUF file lost pages under the process (it was truncated while open):
 * reads of those pages returned zeros instead of raising SIGBUS. Copies the file's path.
 * Whatever was computed from the file since is garbage: fail it and stop using the file.
 * Any thread. */
bool gguf_mapping_lost(char *path, size_t cap);

#endif

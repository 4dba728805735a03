/* base.h - status codes, diagnostics, logging, timing and a bump arena shared by every module.
 *
 * Every fallible function in kvserve returns 0 or a negative ks_status. Parsers also fill a
 * ks_diag so an error names the exact place (file, line, key) and what is wrong with it.
 */
#ifndef KVSERVE_BASE_H
#define KVSERVE_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KS_WUR __attribute__((warn_unused_result))
#define KS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define KS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef enum ks_status {
    KS_OK = 0,
    KS_ERR_NOMEM = -1,  /* allocation failed */
    KS_ERR_IO = -2,     /* open/read/write/mmap failed */
    KS_ERR_FORMAT = -3, /* malformed input file or document */
    KS_ERR_UNSUPPORTED = -4,
    KS_ERR_INVALID = -5, /* bad argument or parameter value */
    KS_ERR_NOT_FOUND = -6,
    KS_ERR_RANGE = -7, /* value out of the allowed range */
    KS_ERR_FULL = -8,  /* a budget or queue is exhausted */
    KS_ERR_CANCELLED = -9,
    KS_ERR_TIMEOUT = -10,
    KS_ERR_INTERNAL = -11,
} ks_status;

/* Human-readable name of a status; never NULL. */
const char *ks_status_str(int status);

/* A diagnostic filled by parsers and loaders. msg is always NUL-terminated. */
typedef struct ks_diag {
    char msg[512];
    char file[256];
    int line;      /* 0 when not applicable */
    char key[128]; /* empty when not applicable */
} ks_diag;

void ks_diag_clear(ks_diag *d);
/* Formats msg (d may be NULL); returns `status` so callers can `return ks_diag_set(...)`. */
int ks_diag_set(ks_diag *d, int status, const char *fmt, ...) KS_PRINTF(3, 4);

/* A validation failure about one key: clears d, sets d->key and msg = "KEY: reason";
 * returns status. */
int ks_diag_key(ks_diag *d, int status, const char *key, const char *fmt, ...) KS_PRINTF(4, 5);
/* 0 if lo <= v <= hi, else KS_ERR_RANGE with a ks_diag_key message naming the range. */
int ks_check_range(ks_diag *d, const char *key, int64_t v, int64_t lo, int64_t hi) KS_WUR;

/* Logging to stderr with a level prefix; thread-safe (one fprintf per line). */
typedef enum ks_log_level { KS_LOG_DEBUG, KS_LOG_INFO, KS_LOG_WARN, KS_LOG_ERROR } ks_log_level;
void ks_log_set_level(ks_log_level level);
void ks_log(ks_log_level level, const char *fmt, ...) KS_PRINTF(2, 3);
#define ks_info(...) ks_log(KS_LOG_INFO, __VA_ARGS__)
#define ks_warn(...) ks_log(KS_LOG_WARN, __VA_ARGS__)
#define ks_error(...) ks_log(KS_LOG_ERROR, __VA_ARGS__)
#define ks_debug(...) ks_log(KS_LOG_DEBUG, __VA_ARGS__)

/* Monotonic clock in seconds. */
double ks_time_now(void);

/* Aligned allocation (64 bytes) that can be released with free(). NULL on failure or n == 0. */
void *ks_aligned_alloc(size_t n);

/* Overflow-checked size arithmetic: return 0 and set *out, or -1 on overflow. */
static inline int ks_mul_size(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int ks_add_size(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* A bump arena: many allocations, one free. Used per request. Not thread-safe. */
typedef struct ks_arena {
    struct ks_arena_chunk *head;
    size_t chunk_size;
} ks_arena;

void ks_arena_init(ks_arena *a, size_t chunk_size);
void ks_arena_deinit(ks_arena *a);
/* Returns 16-byte aligned memory or NULL when out of memory. */
void *ks_arena_alloc(ks_arena *a, size_t n);
char *ks_arena_strdup(ks_arena *a, const char *s, size_t n);

/* CPU features for run-time kernel dispatch (cpuid plus the OS's xgetbv state), the same with
 * every compiler. Thread-safe; computed once. */
typedef enum ks_cpu_feature {
    KS_CPU_AVX2,
    KS_CPU_FMA,
    KS_CPU_F16C,
    KS_CPU_AVX512F,
    KS_CPU_AVX512BW,
    KS_CPU_AVX512VL,
    KS_CPU_AVX512DQ,
    KS_CPU_AVX512VNNI,
    KS_CPU_AVX512BF16,
    KS_CPU_FEATURE_COUNT
} ks_cpu_feature;
bool ks_cpu_has(ks_cpu_feature f);

/* Reads a whole file into a malloc'd, NUL-terminated buffer (caller frees). */
int ks_read_file(const char *path, char **out, size_t *out_len, ks_diag *d) KS_WUR;

/* A scratch buffer that only grows: makes *buf hold at least `need` elements of elem_size
 * bytes (reallocating to 1.5x when it must; *cap counts elements). Hot paths call it with a
 * bound reached once, so the steady state never allocates. 0 or KS_ERR_NOMEM (buffer kept). */
int ks_buf_reserve(void **buf, int64_t *cap, int64_t need, size_t elem_size) KS_WUR;

/* IEEE half and bfloat16 conversions (round to nearest even), usable in any module. */
float ks_f16_to_f32(uint16_t h);
uint16_t ks_f32_to_f16(float f);
float ks_bf16_to_f32(uint16_t h);
uint16_t ks_f32_to_bf16(float f);

#endif

/* base.c - status names, diagnostics, logging, clock, arena, file reading and f16/bf16
 * conversions: the small pieces every module needs, kept in one place so nobody writes them
 * twice. */
#include "kvserve/base.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ks_status_str(int status)
{
    switch (status) {
    case KS_OK:
        return "ok";
    case KS_ERR_NOMEM:
        return "out of memory";
    case KS_ERR_IO:
        return "I/O error";
    case KS_ERR_FORMAT:
        return "malformed input";
    case KS_ERR_UNSUPPORTED:
        return "unsupported";
    case KS_ERR_INVALID:
        return "invalid argument";
    case KS_ERR_NOT_FOUND:
        return "not found";
    case KS_ERR_RANGE:
        return "out of range";
    case KS_ERR_FULL:
        return "capacity exhausted";
    case KS_ERR_CANCELLED:
        return "cancelled";
    case KS_ERR_TIMEOUT:
        return "timed out";
    case KS_ERR_INTERNAL:
        return "internal error";
    default:
        return "unknown error";
    }
}

void ks_diag_clear(ks_diag *d)
{
    if (d) memset(d, 0, sizeof(*d));
}

int ks_diag_set(ks_diag *d, int status, const char *fmt, ...)
{
    if (d) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
        va_end(ap);
    }
    return status;
}

int ks_diag_key(ks_diag *d, int status, const char *key, const char *fmt, ...)
{
    if (!d) return status;
    char reason[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    ks_diag_clear(d);
    snprintf(d->key, sizeof(d->key), "%s", key);
    return ks_diag_set(d, status, "%s: %s", d->key, reason);
}

int ks_check_range(ks_diag *d, const char *key, int64_t v, int64_t lo, int64_t hi)
{
    if (v >= lo && v <= hi) return KS_OK;
    if (hi == INT32_MAX || hi == INT64_MAX)
        return ks_diag_key(d, KS_ERR_RANGE, key, "%lld is out of range (must be >= %lld)",
                           (long long)v, (long long)lo);
    return ks_diag_key(d, KS_ERR_RANGE, key, "%lld is out of range (%lld..%lld)", (long long)v,
                       (long long)lo, (long long)hi);
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static bool g_cpu[KS_CPU_FEATURE_COUNT];
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static void cpu_detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    const bool f16c = c & (1u << 29);
    if (!osxsave || !avx) return;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    const bool os_avx = (xlo & 0x6) == 0x6, os_avx512 = (xlo & 0xe6) == 0xe6;
    if (!os_avx || __get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    g_cpu[KS_CPU_FMA] = fma;
    g_cpu[KS_CPU_F16C] = f16c;
    g_cpu[KS_CPU_AVX2] = b & (1u << 5);
    if (!os_avx512) return;
    g_cpu[KS_CPU_AVX512F] = b & (1u << 16);
    g_cpu[KS_CPU_AVX512DQ] = b & (1u << 17);
    g_cpu[KS_CPU_AVX512BW] = b & (1u << 30);
    g_cpu[KS_CPU_AVX512VL] = b & (1u << 31);
    g_cpu[KS_CPU_AVX512VNNI] = c & (1u << 11);
    __cpuid_count(7, 1, a, b, c, d);
    g_cpu[KS_CPU_AVX512BF16] = a & (1u << 5);
}

bool ks_cpu_has(ks_cpu_feature f)
{
    pthread_once(&g_cpu_once, cpu_detect);
    return (unsigned)f < KS_CPU_FEATURE_COUNT && g_cpu[f];
}
#else
bool ks_cpu_has(ks_cpu_feature f)
{
    (void)f;
    return false;
}
#endif

static ks_log_level g_log_level = KS_LOG_INFO;

void ks_log_set_level(ks_log_level level)
{
    g_log_level = level;
}

void ks_log(ks_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < g_log_level) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "kvserve %s: %s\n", names[level], line);
}

double ks_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void *ks_aligned_alloc(size_t n)
{
    if (n == 0) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

struct ks_arena_chunk {
    struct ks_arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void ks_arena_init(ks_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
}

void ks_arena_deinit(ks_arena *a)
{
    struct ks_arena_chunk *c = a->head;
    while (c) {
        struct ks_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

void *ks_arena_alloc(ks_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct ks_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > a->chunk_size ? n : a->chunk_size;
        c = malloc(sizeof(*c) + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

char *ks_arena_strdup(ks_arena *a, const char *s, size_t n)
{
    char *p = ks_arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

int ks_read_file(const char *path, char **out, size_t *out_len, ks_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ks_diag_set(d, KS_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return ks_diag_set(d, KS_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return ks_diag_set(d, KS_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return ks_diag_set(d, KS_ERR_IO, "%s: read error", path);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return KS_OK;
}

float ks_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ks_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to 0 */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((absx >> 13) - (112u << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float ks_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ks_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

int ks_buf_reserve(void **buf, int64_t *cap, int64_t need, size_t elem_size)
{
    if (need <= *cap && *buf) return KS_OK;
    int64_t n = KS_MAX(KS_MAX(need, 16), *cap + *cap / 2);
    void *p = realloc(*buf, (size_t)n * elem_size);
    if (!p) return KS_ERR_NOMEM;
    *buf = p;
    *cap = n;
    return KS_OK;
}

/* gguf_guard.c - keeps a model file truncated under a running process from killing it.
 *
 * Why: GGUF files are read through an mmap (gguf.c). If the file shrinks while it is mapped
 * (a user overwrites or truncates the model), touching a page past the new end raises SIGBUS,
 * which by default kills the server with every request in flight. Checking the size at load
 * cannot prevent a later truncation, and copying the weights into memory would double the
 * footprint of every model.
 *
 * How: every mapping is registered here. A SIGBUS handler (installed once, on the first
 * registration) looks at the faulting address: inside a registered mapping, it maps a page of
 * zeros over the vanished page (MAP_FIXED, anonymous; mmap is safe to call from a handler on
 * Linux), records that the mapping lost data, and returns, so the faulting load reads zeros
 * instead of crashing. The caller checks gguf_mapping_lost() after its compute step and fails
 * what it computed from the file (the scheduler fails the batch and refuses new requests;
 * /health reports the file). A SIGBUS anywhere else restores the default action and re-faults,
 * so real bugs still crash.
 *
 * Invariant: the registry is a fixed array of atomics, read by the handler without locks.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gguf_guard.h"

#define GUARD_MAX 16

typedef struct guard_region {
    _Atomic(uintptr_t) base; /* 0 = free slot */
    _Atomic(size_t) len;
    char path[512];
} guard_region;

static guard_region g_regions[GUARD_MAX];
static atomic_int g_lost = -1; /* index of the first region that lost a page, -1 = none */
static atomic_flag g_installed = ATOMIC_FLAG_INIT;

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr;
    long ps = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < GUARD_MAX; i++) {
        uintptr_t b = atomic_load(&g_regions[i].base);
        size_t n = atomic_load(&g_regions[i].len);
        if (!b || a < b || a >= b + n) continue;
        void *page = (void *)(a & ~(uintptr_t)(ps - 1));
        if (mmap(page, (size_t)ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
            MAP_FAILED)
            break;
        int none = -1;
        atomic_compare_exchange_strong(&g_lost, &none, i);
        return;
    }
    signal(sig, SIG_DFL); /* not ours: fault again with the default action */
}

void gguf_guard_add(const void *base, size_t len, const char *path)
{
    if (!atomic_flag_test_and_set(&g_installed)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = guard_handler;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
    }
    for (int i = 0; i < GUARD_MAX; i++) {
        uintptr_t zero = 0;
        if (atomic_load(&g_regions[i].base) == 0) {
            snprintf(g_regions[i].path, sizeof(g_regions[i].path), "%s", path ? path : "");
            atomic_store(&g_regions[i].len, len);
            if (atomic_compare_exchange_strong(&g_regions[i].base, &zero, (uintptr_t)base)) return;
        }
    }
    /* more than GUARD_MAX files open at once: this one is unguarded (a SIGBUS kills) */
}

void gguf_guard_remove(const void *base)
{
    for (int i = 0; i < GUARD_MAX; i++)
        if (atomic_load(&g_regions[i].base) == (uintptr_t)base) {
            atomic_store(&g_regions[i].len, 0);
            atomic_store(&g_regions[i].base, 0);
        }
}

bool gguf_mapping_lost(char *path, size_t cap)
{
    int i = atomic_load(&g_lost);
    if (i < 0) return false;
    if (path && cap) snprintf(path, cap, "%s", g_regions[i].path);
    return true;
}

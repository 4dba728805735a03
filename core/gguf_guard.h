/* gguf_guard.h - registry of GGUF file mappings guarded against SIGBUS (gguf_guard.c).
 * Internal to core/: gguf.c registers and unregisters its mappings. */
#ifndef KVSERVE_GGUF_GUARD_H
#define KVSERVE_GGUF_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvserve/gguf.h"

/* Registers a mapping of the file at path (installs the SIGBUS handler the first time). */
void gguf_guard_add(const void *base, size_t len, const char *path);
/* Unregisters it (before munmap). */
void gguf_guard_remove(const void *base);

#endif

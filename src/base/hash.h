/* Checksums. Every on-disk checksum in Ombra is XXH3-64, seeded with the position the block
 * belongs at (page number, log generation and slot), so a block written at the wrong place
 * fails its check like a damaged one. */
#ifndef OM_BASE_HASH_H
#define OM_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t om_xxh3(const void *p, size_t n, uint64_t seed);

#endif

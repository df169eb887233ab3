#include "base/hash.h"

#include <xxhash.h>

uint64_t om_xxh3(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

/* The field encoding of store_mail_digest (mail.h), shared by the store and by anything that must
 * compute the same digest from another copy of the mail (the SQLite side of bench_mail):
 * every field is its length (u64 LE) then its bytes, so no two sequences of fields hash the
 * same bytes; each item starts with a tag byte saying what follows. */
#ifndef OM_STORE_MAIL_DIGEST_H
#define OM_STORE_MAIL_DIGEST_H

#include <stdint.h>
#include <xxhash.h>

#include "base/bytes.h"

static inline void mail_h_field(XXH3_state_t *x, const void *p, uint64_t n)
{
    uint8_t len[8];
    om_put64(len, n);
    XXH3_128bits_update(x, len, 8);
    if (n) XXH3_128bits_update(x, p, n);
}

static inline void mail_h_u64(XXH3_state_t *x, uint64_t v)
{
    uint8_t b[8];
    om_put64(b, v);
    mail_h_field(x, b, 8);
}

static inline void mail_h_tag(XXH3_state_t *x, char tag)
{
    XXH3_128bits_update(x, &tag, 1);
}

#endif

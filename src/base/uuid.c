#include "base/uuid.h"

#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>

#include "base/error.h"

void om_uuid_new(om_uuid *u)
{
    uuid_generate_random(u->b);
}

void om_uuid_str(const om_uuid *u, char out[37])
{
    uuid_unparse_lower(u->b, out);
}

int om_uuid_parse(const char *s, om_uuid *u)
{
    if (uuid_parse(s, u->b) != 0) return om_errf(OM_E_InvalidParameter, "'%s' is not a uuid", s);
    return 0;
}

int om_uuid_is_null(const om_uuid *u)
{
    return uuid_is_null(u->b);
}

void om_random(void *p, unsigned n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r <= 0) continue;
        b += r;
        n -= (unsigned)r;
    }
}

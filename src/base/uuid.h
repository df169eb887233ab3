#ifndef OM_BASE_UUID_H
#define OM_BASE_UUID_H

#include <stdint.h>

typedef struct om_uuid {
    uint8_t b[16];
} om_uuid;

void om_uuid_new(om_uuid *u);
/* 36 characters and a NUL. */
void om_uuid_str(const om_uuid *u, char out[37]);
/* 0 on success, InvalidParameter when s is not a uuid. */
int om_uuid_parse(const char *s, om_uuid *u);
int om_uuid_is_null(const om_uuid *u);
/* Fills n bytes from the kernel's random source. */
void om_random(void *p, unsigned n);

#endif

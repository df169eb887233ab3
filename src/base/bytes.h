/* Little-endian encoding for on-disk formats: every format is written field by field, never
 * as a raw struct, so padding and host byte order never reach the disk. */
#ifndef OM_BASE_BYTES_H
#define OM_BASE_BYTES_H

#include <stdint.h>
#include <string.h>

static inline void om_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void om_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void om_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t om_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t om_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t om_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* A cursor over a fixed buffer for writing or reading a format field by field. Reading past
 * the end sets `bad` and yields zeros, so parsers check once at the end. */
typedef struct om_cur {
    uint8_t *p;
    size_t len, off;
    int bad;
} om_cur;

static inline om_cur om_cur_make(void *p, size_t len)
{
    return (om_cur){(uint8_t *)p, len, 0, 0};
}
static inline uint8_t *om_cur_take(om_cur *c, size_t n)
{
    static uint8_t zero[64];
    if (c->bad || c->len - c->off < n) {
        c->bad = 1;
        memset(zero, 0, sizeof zero);
        return n <= sizeof zero ? zero : NULL;
    }
    uint8_t *r = c->p + c->off;
    c->off += n;
    return r;
}
static inline void om_w8(om_cur *c, uint8_t v)
{
    uint8_t *p = om_cur_take(c, 1);
    if (!c->bad) *p = v;
}
static inline void om_w16(om_cur *c, uint16_t v)
{
    uint8_t *p = om_cur_take(c, 2);
    if (!c->bad) om_put16(p, v);
}
static inline void om_w32(om_cur *c, uint32_t v)
{
    uint8_t *p = om_cur_take(c, 4);
    if (!c->bad) om_put32(p, v);
}
static inline void om_w64(om_cur *c, uint64_t v)
{
    uint8_t *p = om_cur_take(c, 8);
    if (!c->bad) om_put64(p, v);
}
static inline void om_wbytes(om_cur *c, const void *v, size_t n)
{
    uint8_t *p = om_cur_take(c, n);
    if (!c->bad && n) memcpy(p, v, n);
}
static inline uint8_t om_r8(om_cur *c)
{
    uint8_t *p = om_cur_take(c, 1);
    return c->bad ? 0 : *p;
}
static inline uint16_t om_r16(om_cur *c)
{
    uint8_t *p = om_cur_take(c, 2);
    return c->bad ? 0 : om_get16(p);
}
static inline uint32_t om_r32(om_cur *c)
{
    uint8_t *p = om_cur_take(c, 4);
    return c->bad ? 0 : om_get32(p);
}
static inline uint64_t om_r64(om_cur *c)
{
    uint8_t *p = om_cur_take(c, 8);
    return c->bad ? 0 : om_get64(p);
}
static inline void om_rbytes(om_cur *c, void *v, size_t n)
{
    uint8_t *p = om_cur_take(c, n);
    if (c->bad || !p)
        memset(v, 0, n);
    else
        memcpy(v, p, n);
}

#endif

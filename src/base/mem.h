/* Memory for large buffers: address space aligned to 2 MiB and advised to take huge pages.
 *
 * A buffer in huge pages costs one fault per 2 MiB to fill instead of one per 4 KiB, and a
 * direct write from it hands the device a few large segments instead of one per 4 KiB page: on
 * this project's virtual machines 8 MiB `O_DIRECT` writes from a buffer of 4 KiB pages took
 * about four times as long, and the writes with their `fdatasync` 1.2 to 2.2 times as long
 * (docs/design.md, "Laying down from huge pages"). The advice is a hint: where the kernel gives
 * no huge pages the buffer works as any other. */
#ifndef OM_BASE_MEM_H
#define OM_BASE_MEM_H

#include <stddef.h>

/* The size om_huge_reserve maps for n bytes: n rounded up to 2 MiB (0 for 0, and for an n
 * within 2 MiB of SIZE_MAX, which no reservation can have). */
size_t om_huge_len(size_t n);
/* Reserves om_huge_len(n) bytes (MAP_NORESERVE: only what is touched takes memory), aligned to
 * 2 MiB; NULL where the mapping is refused (the caller falls back to the heap). */
void *om_huge_reserve(size_t n);
/* Releases a reservation of n bytes (the same n as reserved); NULL is ignored. */
void om_huge_release(void *p, size_t n);

#endif

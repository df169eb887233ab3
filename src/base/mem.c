/* Memory for large buffers (mem.h). */
#include "base/mem.h"

#include <stdint.h>
#include <sys/mman.h>

enum { OM_HUGE_PAGE = 2u << 20 };

size_t om_huge_len(size_t n)
{
    return (n + OM_HUGE_PAGE - 1) / OM_HUGE_PAGE * OM_HUGE_PAGE;
}

void *om_huge_reserve(size_t n)
{
    size_t len = om_huge_len(n);
    if (!len) return NULL;
    /* a huge page's worth more, to cut an aligned range out of */
    uint8_t *m = mmap(NULL, len + OM_HUGE_PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uint8_t *a = (uint8_t *)(((uintptr_t)m + OM_HUGE_PAGE - 1) & ~(uintptr_t)(OM_HUGE_PAGE - 1));
    if (a > m) munmap(m, (size_t)(a - m));
    munmap(a + len, (size_t)(m + OM_HUGE_PAGE - a));
    (void)madvise(a, len, MADV_HUGEPAGE); /* a hint: refused, the range faults 4 KiB at a time */
    return a;
}

void om_huge_release(void *p, size_t n)
{
    if (p) munmap(p, om_huge_len(n));
}

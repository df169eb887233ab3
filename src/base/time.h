#ifndef OM_BASE_TIME_H
#define OM_BASE_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock time in nanoseconds since the epoch (stored in headers and log records). */
uint64_t om_now_ns(void);
/* Monotonic nanoseconds, for measuring durations. */
uint64_t om_mono_ns(void);
/* "2026-11-21 21:51:03.123" (UTC) into buf; "never" for 0. */
const char *om_time_str(uint64_t ns, char *buf, size_t len);
/* ISO-8601 UTC ("2026-11-21T21:51:03.123Z") for JSON output. */
const char *om_time_iso(uint64_t ns, char *buf, size_t len);

#endif

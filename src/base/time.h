/* Time: the clocks, and how a time is written for people and read back.
 *
 * Every time Ombra stores is nanoseconds since the epoch (UTC). Every time it prints names its
 * zone: ISO 8601 in UTC with 'Z' ("2026-11-21T21:51:03.123Z"), whatever TZ says, so a printed
 * time means one instant wherever it is read. Printed times carry milliseconds; the stored
 * value is truncated, never rounded up, so the instant printed is at or before the one stored.
 *
 * Reading a time back (om_time_parse) gives the whole span the text names: a time written to
 * the millisecond covers that millisecond, one written to the second covers that second. A
 * point in time given as a printed time therefore includes the instant that was printed
 * (docs/design.md, "Restore": why). A time without a zone is refused: read as local time it
 * would name another instant under another TZ. */
#ifndef OM_BASE_TIME_H
#define OM_BASE_TIME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Wall-clock time in nanoseconds since the epoch (stored in headers and log records). */
uint64_t om_now_ns(void);
/* Monotonic nanoseconds, for measuring durations. */
uint64_t om_mono_ns(void);
/* The CLOCK_REALTIME instant ms from now, for pthread_cond_timedwait. */
struct timespec om_deadline_ms(uint64_t ms);
/* ISO 8601 UTC to the millisecond ("2026-11-21T21:51:03.123Z") into buf (32 bytes are
 * enough); "never" for 0. For the text a person reads. */
const char *om_time_str(uint64_t ns, char *buf, size_t len);
/* The same text, for JSON output. */
const char *om_time_iso(uint64_t ns, char *buf, size_t len);

/* This boot of the machine: the kernel's boot id (36 characters and a NUL into out), new at
 * every start, so a file that names it tells whether the machine has restarted since it was
 * written. 0, or an error naming /proc/sys/kernel/random/boot_id. */
int om_boot_id(char out[37]);

/* Reads an ISO 8601 date and time with its zone:
 *   YYYY-MM-DD('T'|' ')HH:MM:SS[('.'|',')F{1,9}]('Z'|('+'|'-')HH[[':']MM])
 * ('t' and 'z' too). *first_ns: the instant written; *last_ns: the last nanosecond of the span
 * its precision names (first + 10^(9 - fraction digits) - 1: "…:19.668Z" covers up to
 * …:19.668999999). 0, or InvalidParameter with the detail naming the text and what is wrong
 * (no zone: a HINT to add Z or an offset). Times before 1970 or after 2262 are refused. */
int om_time_parse(const char *text, uint64_t *first_ns, uint64_t *last_ns);

#endif

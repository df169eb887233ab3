/* Errors: every fallible function returns an int from errors.def (0 = success, negative =
 * failure, ESE's numbers where ESE has the error). The specifics (which file, which page,
 * which value) go into a thread-local detail string, set where the failure is found and
 * read where it is reported. */
#ifndef OM_BASE_ERROR_H
#define OM_BASE_ERROR_H

#include <stdarg.h>

enum om_err {
#define OM_ERR(name, num, msg) OM_E_##name = (num),
#include "base/errors.def"
#undef OM_ERR
};

/* "ReadVerifyFailure" for -1018; "Unknown" for numbers not in the table. */
const char *om_err_name(int err);
/* The table's message for err. */
const char *om_err_msg(int err);

/* Sets the detail for this thread (printf format) and returns err, so a failure reads
 * `return om_errf(OM_E_DiskIO, "writing %s: %s", path, strerror(errno));`. */
int om_errf(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current detail with context ("opening E00.log: " + detail); returns err. */
int om_err_ctx(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The detail set last on this thread, or the table's message when none was set. */
const char *om_err_detail(void);
void om_err_clear(void);
/* Maps an errno to the closest error code (ENOSPC -> DiskFull, ENOENT -> FileNotFound...). */
int om_err_from_errno(int e);

/* A failure's code with its detail, kept together: to carry them from the thread that failed
 * to the one that reports (a worker's failure, base/pool.h), or past a cleanup call that may
 * set another detail before the failure is reported. */
#define OM_ERR_DETAIL_MAX 1024
typedef struct om_err_saved {
    int code;
    char detail[OM_ERR_DETAIL_MAX];
} om_err_saved;
/* Saves err and this thread's detail into s; returns err. */
int om_err_save(om_err_saved *s, int err);
/* Makes s's detail this thread's; returns s's code (0 when nothing failed). */
int om_err_restore(const om_err_saved *s);

/* "-1018 ReadVerifyFailure: <detail>" into buf. */
const char *om_err_format(int err, char *buf, unsigned len);

#endif

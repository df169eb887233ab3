#include "base/time.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/error.h"

uint64_t om_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct timespec om_deadline_ms(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

uint64_t om_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* gmtime_r, never localtime: the text must not depend on TZ. Milliseconds are truncated, so
 * the printed instant is never after the stored one (om_time_parse's span then covers it). */
static const char *fmt_time(uint64_t ns, char *buf, size_t len)
{
    if (ns == 0) {
        snprintf(buf, len, "never");
        return buf;
    }
    time_t s = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ns / 1000000ull % 1000));
    return buf;
}

const char *om_time_str(uint64_t ns, char *buf, size_t len)
{
    return fmt_time(ns, buf, len);
}

const char *om_time_iso(uint64_t ns, char *buf, size_t len)
{
    return fmt_time(ns, buf, len);
}

/* ---- reading ---- */

#define LAST_SECOND 9223372035ll /* the last second whose every nanosecond fits an int64 */

/* n decimal digits at *p into *v; advances *p. 0 when they are not all digits. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9') return 0;
        *v = *v * 10 + (**p - '0');
    }
    return 1;
}

static int leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}

/* Days from 1970-01-01 to y-m-d (y >= 1970; a few hundred years at most, so a loop is fine). */
static long long days_since_epoch(int y, int m, int d)
{
    long long n = 0;
    for (int i = 1970; i < y; i++)
        n += leap(i) ? 366 : 365;
    for (int i = 1; i < m; i++)
        n += month_days(y, i);
    return n + d - 1;
}

static int bad_form(const char *text)
{
    return om_errf(OM_E_InvalidParameter,
                   "'%s' is not a date and time such as 2026-12-04T08:45:19.668Z (ISO 8601: "
                   "YYYY-MM-DD, 'T' or a space, HH:MM:SS, an optional fraction, then Z or an "
                   "offset such as +05:30)",
                   text);
}

static int out_of_range(const char *text, const char *what, int v)
{
    return om_errf(OM_E_InvalidParameter, "'%s': %s %d is out of range", text, what, v);
}

/* The zone at p: its offset east of UTC in seconds. */
static int parse_zone(const char *text, const char *p, long long *east)
{
    *east = 0;
    if (!*p)
        return om_errf(OM_E_InvalidParameter,
                       "'%s' names no time zone, so it would mean another instant under another "
                       "TZ. HINT: add Z for UTC or the offset it is in, e.g. '%sZ' or '%s+05:30'",
                       text, text, text);
    if ((*p == 'Z' || *p == 'z') && !p[1]) return 0;
    int sign = *p == '+' ? 1 : *p == '-' ? -1 : 0, hh = 0, mm = 0;
    const char *q = p + 1;
    int ok = sign && digits(&q, 2, &hh);
    if (ok && *q == ':') {
        q++;
        ok = digits(&q, 2, &mm);
    } else if (ok && *q)
        ok = digits(&q, 2, &mm);
    if (!ok || *q)
        return om_errf(OM_E_InvalidParameter,
                       "'%s' has no zone I can read in '%s'. HINT: write Z for UTC or an offset "
                       "from UTC such as -05:00, +0530 or +01",
                       text, p);
    if (hh > 23) return out_of_range(text, "offset hour", hh);
    if (mm > 59) return out_of_range(text, "offset minute", mm);
    *east = sign * (hh * 3600ll + mm * 60ll);
    return 0;
}

int om_time_parse(const char *text, uint64_t *first_ns, uint64_t *last_ns)
{
    *first_ns = *last_ns = 0;
    const char *p = text;
    int y, mo, d, h, mi, s;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' ') || !(p++, digits(&p, 2, &h)) ||
        *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' || !digits(&p, 2, &s))
        return bad_form(text);
    if (mo < 1 || mo > 12) return out_of_range(text, "month", mo);
    if (y < 1970) return out_of_range(text, "year", y);
    if (d < 1 || d > month_days(y, mo)) return out_of_range(text, "day", d);
    if (h > 23) return out_of_range(text, "hour", h);
    if (mi > 59) return out_of_range(text, "minute", mi);
    if (s > 59) return out_of_range(text, "second", s);
    uint64_t frac = 0, unit = 1000000000ull;
    if (*p == '.' || *p == ',') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 9) {
                unit /= 10;
                frac += (uint64_t)(*p - '0') * unit;
            }
        if (!n) return bad_form(text);
        if (n > 9)
            return om_errf(OM_E_InvalidParameter,
                           "'%s' has %d fraction digits; nanoseconds (9) are the finest", text, n);
    }
    long long east;
    int rc = parse_zone(text, p, &east);
    if (rc) return rc;
    long long secs = days_since_epoch(y, mo, d) * 86400 + h * 3600ll + mi * 60ll + s - east;
    if (secs < 0 || secs > LAST_SECOND)
        return om_errf(OM_E_InvalidParameter,
                       "'%s' is outside the times Ombra can hold (1970 to 2262 UTC)", text);
    *first_ns = (uint64_t)secs * 1000000000ull + frac;
    *last_ns = *first_ns + unit - 1;
    return 0;
}

int om_boot_id(char out[37])
{
    static const char *path = "/proc/sys/kernel/random/boot_id";
    out[0] = 0;
    FILE *f = fopen(path, "re");
    char line[64] = "";
    int ok = f && fgets(line, sizeof line, f) && strlen(line) >= 36 && line[36] == '\n';
    if (f) fclose(f);
    if (!ok) return om_errf(OM_E_DiskIO, "%s: cannot read this boot's id", path);
    memcpy(out, line, 36);
    out[36] = 0;
    return 0;
}

#include "base/time.h"

#include <stdio.h>
#include <time.h>

uint64_t om_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t om_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *fmt_time(uint64_t ns, char *buf, size_t len, int iso)
{
    if (ns == 0) {
        snprintf(buf, len, "never");
        return buf;
    }
    time_t s = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&s, &tm);
    char tmp[40];
    if (iso)
        strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    else
        strftime(tmp, sizeof tmp, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03u%s", tmp, (unsigned)(ns / 1000000ull % 1000), iso ? "Z" : "");
    return buf;
}

const char *om_time_str(uint64_t ns, char *buf, size_t len)
{
    return fmt_time(ns, buf, len, 0);
}

const char *om_time_iso(uint64_t ns, char *buf, size_t len)
{
    return fmt_time(ns, buf, len, 1);
}

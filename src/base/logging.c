#include "base/logging.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *prog = "ombra";
static _Atomic int debug_on = -1; /* set on first use, from any thread */
static enum om_level min_level = OM_DEBUG;

void om_log_min_level(enum om_level lvl)
{
    min_level = lvl;
}

void om_log_init(const char *p)
{
    prog = p;
}

void om_log(enum om_level lvl, const char *fmt, ...)
{
    if (debug_on < 0) debug_on = getenv("OMBRA_DEBUG") != NULL;
    if (lvl == OM_DEBUG && !debug_on) return;
    if (lvl < min_level) return;
    static const char *names[] = {"debug", "info", "warning", "error"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from several threads do not interleave. */
    fprintf(stderr, "%s: %s: %s\n", prog, names[lvl], line);
}

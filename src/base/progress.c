#include "base/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "base/time.h"

void om_progress_start(om_progress *p, const char *label, uint64_t total, const char *unit)
{
    p->label = label;
    p->unit = unit ? unit : "";
    p->total = total;
    p->done = 0;
    p->start_ns = om_mono_ns();
    p->last_draw_ns = 0;
    p->tty = isatty(2);
}

static void draw(om_progress *p, uint64_t now)
{
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)p->done / secs : 0;
    unsigned pct = p->total ? (unsigned)(p->done * 100 / p->total) : 0;
    char bar[31];
    unsigned fill = p->total ? (unsigned)(p->done * 30 / p->total) : 0;
    for (unsigned i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
    fprintf(stderr, "\r%-10s [%s] %3u%%  %llu/%llu %s  %.0f/s  ETA %.0fs   ", p->label, bar, pct,
            (unsigned long long)p->done, (unsigned long long)p->total, p->unit, rate, eta);
    fflush(stderr);
    p->last_draw_ns = now;
}

void om_progress_update(om_progress *p, uint64_t done)
{
    p->done = done;
    if (!p->tty) return;
    uint64_t now = om_mono_ns();
    if (now - p->last_draw_ns >= 100000000ull) draw(p, now);
}

void om_progress_end(om_progress *p)
{
    if (!p->tty) return;
    draw(p, om_mono_ns());
    fputc('\n', stderr);
}

/* A progress bar on stderr, drawn only when stderr is a terminal, at most ten times a second:
 * "loading  [#########.........]  45%  12,345/27,000  1,234/s  ETA 12s". */
#ifndef OM_BASE_PROGRESS_H
#define OM_BASE_PROGRESS_H

#include <stdint.h>

typedef struct om_progress {
    const char *label, *unit;
    uint64_t total, done, start_ns, last_draw_ns;
    int tty;
} om_progress;

void om_progress_start(om_progress *p, const char *label, uint64_t total, const char *unit);
void om_progress_update(om_progress *p, uint64_t done);
/* Draws the final state and ends the line (nothing when not a terminal). */
void om_progress_end(om_progress *p);

#endif

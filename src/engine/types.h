/* The engine's plain types and sizes: what the on-disk formats (format.h) and the public API
 * (engine.h) both name. No functions, no handles: format.h includes this, not engine.h, so the
 * format layer never sees the database object. */
#ifndef OM_ENGINE_TYPES_H
#define OM_ENGINE_TYPES_H

#include <stdint.h>

#define ENG_PAGE_SIZE 32768u
#define ENG_PAGE_HDR  32u
#define ENG_PAGE_BODY (ENG_PAGE_SIZE - ENG_PAGE_HDR)
#define ENG_LOG_SIZE  (1024u * 1024u)

/* A log position: generation and byte offset in that generation's record stream. Ordered
 * as the 64-bit number (gen << 32 | off). */
typedef struct eng_lgpos {
    uint32_t gen, off;
} eng_lgpos;

static inline uint64_t eng_lgpos_u64(eng_lgpos p)
{
    return (uint64_t)p.gen << 32 | p.off;
}
static inline int eng_lgpos_cmp(eng_lgpos a, eng_lgpos b)
{
    uint64_t x = eng_lgpos_u64(a), y = eng_lgpos_u64(b);
    return x < y ? -1 : x > y;
}

/* A signature identifies a database or a log stream: random bits and the creation time. */
typedef struct eng_sig {
    uint64_t random, time;
} eng_sig;

static inline int eng_sig_eq(const eng_sig *a, const eng_sig *b)
{
    return a->random == b->random && a->time == b->time;
}

enum eng_state { ENG_STATE_JUST_CREATED = 1, ENG_STATE_DIRTY = 2, ENG_STATE_CLEAN = 3 };

/* The backup slots of the header (spec §5). */
enum eng_bkslot_id {
    ENG_BK_PREV_FULL,
    ENG_BK_PREV_INCREMENTAL,
    ENG_BK_PREV_COPY,
    ENG_BK_PREV_DIFFERENTIAL,
    ENG_BK_CUR_FULL,
    ENG_BK_CUR_SNAPSHOT,
    ENG_BK_NSLOTS
};

enum eng_bk_kind {
    ENG_BK_NONE = 0,
    ENG_BK_FULL = 1,
    ENG_BK_INCREMENTAL,
    ENG_BK_COPY,
    ENG_BK_DIFFERENTIAL
};

typedef struct eng_bkslot {
    uint32_t first_gen, last_gen; /* log generations the backup holds */
    eng_lgpos mark;               /* backup record position (written at freeze) */
    uint64_t mark_time;           /* ns since the epoch; 0 = empty slot */
    uint32_t kind;                /* enum eng_bk_kind */
} eng_bkslot;

#endif

/* Drives the engine from a real process for the kill -9 system test.
 *
 *   engine_loop write DIR START   opens DIR/mail.edb (creating it, or recovering it after a
 *                                 crash), then commits forever: transaction i stores the 8-byte
 *                                 value i at its own place, and once the commit has returned,
 *                                 prints i on stdout. Killing it at any moment must lose no
 *                                 printed i.
 *   engine_loop verify DIR        reads ids from stdin, opens the database (recovering it) and
 *                                 prints "ok N" when every id is there, else "missing I" and
 *                                 exits 1.
 *   engine_loop loghdr FILE WHAT  rewrites one field of a log file's header, with a valid
 *                                 checksum, as damage no checksum catches: WHAT is `stream`
 *                                 (another log signature of the same database) or `chain` (it
 *                                 follows another generation than the one before it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/vfs.h"
#include "engine/engine.h"
#include "engine/format.h"

#define PAGES 64u
#define SLOTS (ENG_PAGE_BODY / 8u)

static void die(int rc, const char *what)
{
    char b[2048];
    fprintf(stderr, "engine_loop: %s: %s\n", what, om_err_format(rc, b, sizeof b));
    exit(2);
}

static void place(uint64_t i, uint32_t *pg, uint32_t *off)
{
    *pg = 1 + (uint32_t)(i % PAGES);
    *off = (uint32_t)((i / PAGES) % SLOTS) * 8;
}

static int loghdr(const char *path, const char *what)
{
    om_vfs *v = om_vfs_posix();
    om_file *f = NULL;
    uint8_t slot[ENG_SLOT_SIZE];
    eng_loghdr h;
    int rc = om_open(v, path, 0, &f);
    if (!rc) rc = om_pread_full(f, slot, sizeof slot, 0);
    if (!rc) rc = eng_loghdr_decode(slot, &h);
    if (!rc && !strcmp(what, "stream"))
        h.log_sig.random ^= 0x5A5A5A5Aull;
    else if (!rc && !strcmp(what, "chain"))
        h.prev_created += 1;
    else if (!rc)
        rc = om_errf(OM_E_InvalidParameter, "loghdr: %s is not stream or chain", what);
    if (!rc) {
        eng_loghdr_encode(&h, slot);
        rc = om_pwrite(f, slot, sizeof slot, 0);
    }
    if (!rc) rc = om_sync(f);
    om_close(f);
    if (rc) die(rc, path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "loghdr")) return loghdr(argv[2], argv[3]);
    if (argc < 3) {
        fprintf(stderr, "usage: engine_loop write DIR START | verify DIR\n");
        return 2;
    }
    char edb[4096], logs[4096];
    snprintf(edb, sizeof edb, "%s/mail.edb", argv[2]);
    snprintf(logs, sizeof logs, "%s/logs", argv[2]);
    eng_opts o = {.edb_path = edb, .log_dir = logs, .checkpoint_gens = 4};
    eng_db *db = NULL;
    int rc;
    om_vfs *v = om_vfs_posix();
    if (v->exists(v, edb) == 1) {
        if ((rc = eng_db_open(&o, &db))) die(rc, "opening");
        eng_stats st;
        eng_db_stats(db, &st);
        fprintf(stderr, "engine_loop: opened, %llu log records replayed\n",
                (unsigned long long)st.replay_records);
    } else {
        if ((rc = eng_db_create(&o, &db))) die(rc, "creating");
        eng_txn *t;
        if ((rc = eng_txn_begin(db, &t))) die(rc, "begin");
        for (uint32_t p = 0; p < 2 * PAGES; p++) { /* ids, then filler */
            uint32_t pg;
            if ((rc = eng_page_alloc(t, 1, &pg))) die(rc, "alloc");
        }
        if ((rc = eng_txn_commit(t, 0))) die(rc, "commit");
    }
    if (!strcmp(argv[1], "write") && argc >= 4) {
        uint64_t i = strtoull(argv[3], NULL, 10);
        uint8_t filler[2048];
        memset(filler, 0xA5, sizeof filler);
        for (;; i++) {
            eng_txn *t;
            uint32_t pg, off;
            uint8_t val[8];
            place(i, &pg, &off);
            om_put64(val, i);
            if ((rc = eng_txn_begin(db, &t))) die(rc, "begin");
            if ((rc = eng_page_write(t, pg, off, val, 8))) die(rc, "write");
            /* Some bulk in the same transaction, on a filler page, so generations roll. */
            uint32_t other = PAGES + pg;
            if ((rc = eng_page_write(t, other, (uint32_t)(i % 8) * 2048, filler, sizeof filler)))
                die(rc, "write");
            if ((rc = eng_txn_commit(t, 0))) die(rc, "commit");
            printf("%llu\n", (unsigned long long)i);
            fflush(stdout);
        }
    }
    if (!strcmp(argv[1], "verify")) {
        unsigned long long id;
        uint64_t n = 0;
        static uint8_t body[ENG_PAGE_BODY];
        while (scanf("%llu", &id) == 1) {
            uint32_t pg, off;
            place(id, &pg, &off);
            if ((rc = eng_page_read(db, pg, body))) die(rc, "reading");
            if (om_get64(body + off) != id) {
                printf("missing %llu (found %llu)\n", id, (unsigned long long)om_get64(body + off));
                return 1;
            }
            n++;
        }
        printf("ok %llu\n", (unsigned long long)n);
        if ((rc = eng_db_close(db))) die(rc, "closing");
        return 0;
    }
    fprintf(stderr, "usage: engine_loop write DIR START | verify DIR | loghdr FILE WHAT\n");
    return 2;
}

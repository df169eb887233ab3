/* The crash harness: power loss at every sync point of a workload, recovery, and a check that
 * every acknowledged transaction is there and nothing else is, in the manner of SQLite's
 * crash tests.
 *
 * The workload (deterministic from its seed) mounts a prepared database, runs transactions
 * that change 1-3 pages with 1 byte to 8 KiB writes, allocate pages, roll back, commit lazily,
 * checkpoint, roll the log, freeze and record a backup slot, and closes and remounts in the
 * middle. A dry run without a crash records the model's state after every commit attempt
 * (states[k]: the pages after the first k commits). For each crash point, a copy of the
 * prepared disk loses power at the Nth sync call; the reboot keeps, drops or garbles each
 * unsynced 4 KiB block at random and applies a random prefix of the unsynced renames; one
 * time in three the recovery itself loses power too and runs again. Then:
 *   - the database must open (recovery succeeds);
 *   - its pages must equal states[k] for some k between the last commit known durable and
 *     the last commit attempted (a committed transaction is never lost, a rolled-back or
 *     half-written one never appears, and transactions are atomic and in order);
 *   - a backup slot whose recording returned success is in the header.
 * OMBRA_CRASH_POINTS sets how many crash points to try (default 2000). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/hash.h"
#include "crashvfs.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/log.h"

#define MAX_PAGES   40
#define MAX_COMMITS 400

static const eng_opts base_opts = {
    .edb_path = "/db/mail.edb",
    .log_dir = "/db/logs",
    .base = "E00",
    .cache_bytes = 24 * ENG_PAGE_SIZE, /* small: forces checkpoints from cache pressure */
    .checkpoint_gens = 2,
};

typedef struct model {
    uint8_t pages[MAX_PAGES + 1][ENG_PAGE_BODY];
    uint64_t page_hash[MAX_PAGES + 1];
    uint32_t npages;
} model;

typedef struct run {
    /* filled by the dry run */
    uint64_t states[MAX_COMMITS + 1];
    uint64_t page_hashes[MAX_COMMITS + 1][MAX_PAGES + 1]; /* for the report of a violation */
    uint32_t npages[MAX_COMMITS + 1];
    uint32_t total_commits;
    uint64_t syncs;
    /* filled by each run */
    uint32_t attempted, durable;
    int slot_recorded; /* eng_record_backup returned 0 */
    int stopped_rc;
} run;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t model_state(const model *m)
{
    uint64_t v[MAX_PAGES + 2];
    v[0] = m->npages;
    for (uint32_t i = 1; i <= m->npages; i++)
        v[i] = m->page_hash[i];
    return om_xxh3(v, (m->npages + 1) * sizeof v[0], 0);
}

static const eng_bkslot test_slot = {3, 7, {5, 128}, 1234567, ENG_BK_FULL};

/* Runs the workload; returns 0 when it ran to the end, else the error that stopped it (the
 * simulated power loss, or what the engine made of it). With dry set, fills r->states. */
static int workload(om_vfs *vfs, uint64_t seed, run *r, int dry)
{
    static model m; /* large: keep it off the stack */
    memset(&m, 0, sizeof m);
    eng_opts o = base_opts;
    o.vfs = vfs;
    eng_db *db = NULL;
    uint64_t s = seed * 2654435761u + 1;
    uint8_t buf[8192];
    int rc = eng_db_open(&o, &db);
    r->attempted = r->durable = 0;
    r->slot_recorded = 0;
    if (dry) r->states[0] = model_state(&m);
    int ntx = 60;
    for (int i = 0; i < ntx && !rc; i++) {
        eng_txn *t = NULL;
        if ((rc = eng_txn_begin(db, &t))) break;
        static model next;
        memcpy(&next, &m, sizeof m);
        int nops = 1 + (int)(rnd(&s) % 3);
        for (int op = 0; op < nops && !rc; op++) {
            uint32_t pg;
            if (next.npages == 0 || (next.npages < MAX_PAGES && rnd(&s) % 4 == 0)) {
                rc = eng_page_alloc(t, 1 + (uint32_t)(rnd(&s) % 5), &pg);
                if (rc) break;
                next.npages = pg;
                next.page_hash[pg] = om_xxh3(next.pages[pg], ENG_PAGE_BODY, 0);
            } else
                pg = 1 + (uint32_t)(rnd(&s) % next.npages);
            uint32_t len = 1 + (uint32_t)(rnd(&s) % sizeof buf);
            uint32_t off = (uint32_t)(rnd(&s) % (ENG_PAGE_BODY - len));
            for (uint32_t b = 0; b < len; b++)
                buf[b] = (uint8_t)rnd(&s);
            rc = eng_page_write(t, pg, off, buf, len);
            if (rc) break;
            memcpy(next.pages[pg] + off, buf, len);
            next.page_hash[pg] = om_xxh3(next.pages[pg], ENG_PAGE_BODY, 0);
        }
        if (rc) {
            eng_txn_rollback(t);
            break;
        }
        unsigned kind = (unsigned)(rnd(&s) % 10);
        if (kind == 0) { /* rolled back: must never appear */
            eng_txn_rollback(t);
            continue;
        }
        r->attempted++;
        if (dry) {
            r->states[r->attempted] = model_state(&next);
            memcpy(r->page_hashes[r->attempted], next.page_hash, sizeof next.page_hash);
            r->npages[r->attempted] = next.npages;
        }
        memcpy(&m, &next, sizeof m);
        rc = eng_txn_commit(t, kind < 3 ? ENG_COMMIT_LAZY : 0);
        if (rc) break;
        if (kind >= 3) r->durable = r->attempted;
        if (i % 9 == 8) {
            if ((rc = eng_checkpoint(db))) break;
            r->durable = r->attempted;
        }
        if (i == 20 && (rc = eng_db_roll_log(db))) break;
        if (i == 30) {
            if ((rc = eng_db_close(db))) {
                db = NULL;
                break;
            }
            r->durable = r->attempted;
            if ((rc = eng_db_open(&o, &db))) {
                db = NULL;
                break;
            }
        }
        if (i == 40) {
            eng_lgpos mark;
            uint32_t last;
            if ((rc = eng_backup_freeze(db, ENG_BK_FULL, &mark, &last))) break;
            r->durable = r->attempted;
            if ((rc = eng_backup_thaw(db))) break;
            if ((rc = eng_record_backup(db, ENG_BK_PREV_FULL, &test_slot))) break;
            r->slot_recorded = 1;
        }
    }
    if (!rc) {
        rc = eng_db_close(db);
        if (!rc) r->durable = r->attempted;
    } else if (db)
        eng_db_abandon(db);
    if (dry) r->total_commits = r->attempted;
    return rc;
}

/* Opens the rebooted disk, reads every page, and checks the result against the dry run. */
static int verify(om_vfs *vfs, const run *dryr, const run *r, char *why, size_t whylen)
{
    static model m;
    memset(&m, 0, sizeof m);
    eng_opts o = base_opts;
    o.vfs = vfs;
    eng_db *db = NULL;
    char eb[2048];
    int rc = eng_db_open(&o, &db);
    if (rc) {
        snprintf(why, whylen, "recovery failed: %s", om_err_format(rc, eb, sizeof eb));
        return 1;
    }
    if ((rc = eng_db_check_invariants(db))) {
        snprintf(why, whylen, "after recovery: %s", om_err_format(rc, eb, sizeof eb));
        eng_db_abandon(db);
        return 1;
    }
    eng_info info;
    rc = eng_db_info(db, &info);
    m.npages = info.pages;
    for (uint32_t p = 1; p <= m.npages && p <= MAX_PAGES && !rc; p++) {
        rc = eng_page_read(db, p, m.pages[p]);
        m.page_hash[p] = om_xxh3(m.pages[p], ENG_PAGE_BODY, 0);
    }
    int bad = 0;
    if (rc) {
        snprintf(why, whylen, "reading pages: %s", om_err_format(rc, eb, sizeof eb));
        bad = 1;
    } else if (m.npages > MAX_PAGES) {
        snprintf(why, whylen, "%u pages after recovery, the workload never has more than %u",
                 m.npages, MAX_PAGES);
        bad = 1;
    } else {
        uint64_t st = model_state(&m);
        int found = 0;
        for (uint32_t k = r->durable; k <= r->attempted && !found; k++)
            found = dryr->states[k] == st;
        if (!found) {
            int other = -1;
            for (uint32_t k = 0; k <= dryr->total_commits; k++)
                if (dryr->states[k] == st) other = (int)k;
            int n = snprintf(why, whylen,
                             "recovered state is not one of commits %u..%u (durable..attempted); "
                             "it matches commit %d; %u pages (expected %u); pages that differ from "
                             "commit %u:",
                             r->durable, r->attempted, other, m.npages, dryr->npages[r->durable],
                             r->durable);
            for (uint32_t p = 1; p <= m.npages && n > 0 && (size_t)n < whylen - 16; p++) {
                if (m.page_hash[p] == dryr->page_hashes[r->durable][p]) continue;
                int last = -1;
                for (uint32_t k = 0; k <= dryr->total_commits; k++)
                    if (dryr->page_hashes[k][p] == m.page_hash[p]) last = (int)k;
                n += snprintf(why + n, whylen - (size_t)n, " %u(=commit %d)", p, last);
            }
            bad = 1;
        }
    }
    if (!bad && r->slot_recorded &&
        memcmp(&info.slots[ENG_BK_PREV_FULL], &test_slot, sizeof test_slot)) {
        snprintf(why, whylen, "a backup slot recorded before the crash is missing");
        bad = 1;
    }
    eng_db_close(db);
    return bad;
}

/* With OMBRA_CRASH_ONLY: prints every log file's segments after the failed recovery. */
static int dump_one(void *arg, const char *name)
{
    om_vfs *v = arg;
    char p[512];
    snprintf(p, sizeof p, "/db/logs/%s", name);
    if (!strstr(name, ".log")) return 0;
    uint8_t *data = NULL;
    size_t n = 0;
    if (om_read_file(v, p, &data, &n)) return 0;
    eng_loghdr h;
    int rc = n >= ENG_SLOT_SIZE ? eng_loghdr_decode(data, &h) : -1;
    print_message("%s: %zu bytes, header %s gen %u\n", name, n, rc ? "BAD" : "ok", rc ? 0 : h.gen);
    for (uint16_t sl = 1; !rc && sl < ENG_LOG_SLOTS && (size_t)(sl + 1) * ENG_SLOT_SIZE <= n;
         sl++) {
        eng_seghdr sh;
        int st = eng_seg_decode(data + (size_t)sl * ENG_SLOT_SIZE, h.gen, sl, &sh);
        if (st == ENG_SEG_EMPTY) continue;
        print_message("  slot %u: status %d off %u len %u flush_first %u\n", sl, st, sh.stream_off,
                      sh.data_len, sh.flush_first);
    }
    free(data);
    eng_genread g;
    rc = eng_gen_read(v, p, &g);
    if (rc && rc != OM_E_LogFileCorrupt) return 0;
    uint32_t off = 0, at = 0;
    static eng_rec rec;
    while (at = off, (rc = eng_rec_decode(g.stream, g.len, &off, &rec)) == 1)
        if (at > 100000)
            print_message("    rec at %u: %s len %u txn %llu pg %u flags %u nr %u\n", at,
                          eng_rec_type_name(rec.type), rec.len, (unsigned long long)rec.txn,
                          rec.type == ENG_REC_PAGE ? rec.u.page.pgno : 0, rec.flags,
                          rec.type == ENG_REC_PAGE ? rec.u.page.nranges : 0);
    print_message("    stop at %u rc %d len %u\n", at, rc, g.len);
    eng_gen_free(&g);
    return 0;
}

static crashvfs *prepare_disk(uint64_t seed)
{
    crashvfs *c = crashvfs_new(seed);
    assert_non_null(c);
    eng_opts o = base_opts;
    o.vfs = crashvfs_vfs(c);
    eng_db *db = NULL;
    assert_int_equal(crashvfs_vfs(c)->mkdir(crashvfs_vfs(c), "/db"), 0);
    assert_int_equal(eng_db_create(&o, &db), 0);
    assert_int_equal(eng_db_close(db), 0);
    return c;
}

static void crash_points_lose_no_committed_transaction(void **state)
{
    (void)state;
    const char *env = getenv("OMBRA_CRASH_POINTS");
    long points = env ? atol(env) : 2000;
    if (points <= 0) points = 2000;
    long tried = 0, violations = 0, double_crashes = 0;
    /* OMBRA_CRASH_ONLY=W:N runs only workload W's crash point N (to debug one violation). */
    unsigned long only_w = 0, only_n = 0;
    const char *only = getenv("OMBRA_CRASH_ONLY");
    if (only && sscanf(only, "%lu:%lu", &only_w, &only_n) != 2) only_w = 0;
    static run dryr, r;
    for (uint64_t wseed = only_w ? only_w : 1; tried < points; wseed++) {
        crashvfs *disk = prepare_disk(wseed);
        /* Dry run: the states after each commit, and how many sync calls the workload makes. */
        crashvfs *c = crashvfs_clone(disk);
        uint64_t s0 = crashvfs_syncs(c);
        char eb[2048];
        int rc = workload(crashvfs_vfs(c), wseed, &dryr, 1);
        if (rc) fail_msg("dry run failed: %s", om_err_format(rc, eb, sizeof eb));
        dryr.syncs = crashvfs_syncs(c) - s0;
        crashvfs_free(c);
        for (uint64_t n = only_n ? only_n : 1; n <= dryr.syncs && tried < points; n++, tried++) {
            if (only_w && (wseed != only_w || n != only_n)) break;
            c = crashvfs_clone(disk);
            crashvfs_reseed(c, wseed * 1000003u + n);
            crashvfs_crash_at_sync(c, n);
            rc = workload(crashvfs_vfs(c), wseed, &r, 0);
            if (!crashvfs_crashed(c))
                fail_msg("crash point %llu was not reached", (unsigned long long)n);
            crashvfs_reboot(c);
            if (n % 3 == 0) {
                /* Lose power again during recovery, then recover once more. */
                crashvfs_crash_at_sync(c, 1 + n % 7);
                eng_opts o = base_opts;
                o.vfs = crashvfs_vfs(c);
                eng_db *db = NULL;
                if (eng_db_open(&o, &db) == 0) eng_db_close(db);
                if (crashvfs_crashed(c)) double_crashes++;
                crashvfs_reboot(c);
            }
            char why[2600];
            if (only_w)
                crashvfs_vfs(c)->list(crashvfs_vfs(c), "/db/logs", dump_one, crashvfs_vfs(c));
            if (verify(crashvfs_vfs(c), &dryr, &r, why, sizeof why)) {
                violations++;
                print_message("violation: workload %llu, crash at sync %llu of %llu: %s\n",
                              (unsigned long long)wseed, (unsigned long long)n,
                              (unsigned long long)dryr.syncs, why);
            }
            crashvfs_free(c);
        }
        crashvfs_free(disk);
        if (only_w) break;
    }
    print_message(
        "crash harness: %ld crash points tried (%ld with a second crash during recovery), "
        "%ld violations\n",
        tried, double_crashes, violations);
    assert_int_equal(violations, 0);
}

int main(void)
{
    /* The failures these tests cause on purpose would fill the output. */
    if (!getenv("OMBRA_DEBUG")) om_log_min_level(OM_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crash_points_lose_no_committed_transaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

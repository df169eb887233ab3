/* src/backup/retention and bk_expire_policy: which sets a retention policy keeps and why. Each
 * rule keeps what restic's forget would (per database, in UTC), kept sets keep their whole
 * chains, --db limits the policy to some databases, and on a repository of fulls and
 * incrementals over many simulated days the real run deletes exactly what the dry run listed and
 * leaves every remaining set restorable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "backup/chain.h"
#include "backup/repo.h"
#include "backup/retention.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/time.h"

#define NS   1000000000ull
#define HOUR (3600 * NS)
#define DAY  (24 * HOUR)

/* ---- summaries made by hand (the plan is a function of them) ---- */

/* 2026-11-02T00:00:00Z, a Monday. */
static uint64_t t0(void)
{
    uint64_t a = 0, b = 0;
    assert_int_equal(om_time_parse("2026-11-02T00:00:00Z", &a, &b), 0);
    return a;
}

static json_t *mk(const char *id, const char *type, const char *db, uint64_t t, const char *parent)
{
    return json_pack("{s:s, s:s, s:{s:s, s:s}, s:I, s:I, s:s?}", "id", id, "type", type, "database",
                     "id", db, "name", db, "mark_time_ns", (json_int_t)t, "committed_ns",
                     (json_int_t)t, "parent", parent);
}

static json_t *plan_of(json_t *sets, const bk_policy *p)
{
    json_t *plan = NULL;
    assert_int_equal(bk_retention_plan(sets, p, &plan), 0);
    return plan;
}

/* The ids of plan[which], newest first, joined with spaces. */
static const char *ids(json_t *plan, const char *which, char *buf, size_t len)
{
    size_t i, used = 0;
    json_t *e;
    buf[0] = 0;
    json_array_foreach(json_object_get(plan, which), i, e) used +=
        (size_t)snprintf(buf + used, len - used, "%s%s", i ? " " : "", om_json_str_or(e, "id", ""));
    return buf;
}

/* The reasons of set id in the plan, joined with "; ". */
static const char *why(json_t *plan, const char *id, char *buf, size_t len)
{
    const char *k[] = {"kept", "removed"};
    buf[0] = 0;
    for (int w = 0; w < 2; w++) {
        size_t i, j, used = 0;
        json_t *e, *r;
        json_array_foreach(json_object_get(plan, k[w]), i, e)
        {
            if (strcmp(om_json_str_or(e, "id", ""), id)) continue;
            json_array_foreach(json_object_get(e, "reasons"), j, r) used += (size_t)snprintf(
                buf + used, len - used, "%s%s", j ? "; " : "", json_string_value(r));
            return buf;
        }
    }
    return buf;
}

static void durations_parse_one_way_and_step_back_on_the_calendar(void **s)
{
    (void)s;
    bk_duration d;
    assert_int_equal(bk_duration_parse("7d", &d), 0);
    assert_int_equal(d.days, 7);
    assert_int_equal(bk_duration_parse("1y6m2w3d12h", &d), 0);
    assert_true(d.years == 1 && d.months == 6 && d.weeks == 2 && d.days == 3 && d.hours == 12);
    const char *bad[] = {"", "7", "d", "7x", "-1d", "1d1d", "0d", "7 d", "1.5d", "99999999d", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(bk_duration_parse(bad[i], &d), OM_E_InvalidParameter);
        assert_non_null(strstr(om_err_detail(), "is not a duration"));
    }
    uint64_t a = 0, b = 0, want = 0;
    assert_int_equal(om_time_parse("2026-03-31T10:00:00.5Z", &a, &b), 0);
    assert_int_equal(bk_duration_parse("1m", &d), 0); /* March 31 - 1 month: "February 31" */
    assert_int_equal(om_time_parse("2026-03-03T10:00:00.5Z", &want, &b), 0);
    assert_int_equal(bk_duration_before(a, &d), want);
    assert_int_equal(bk_duration_parse("1y36h", &d), 0);
    assert_int_equal(om_time_parse("2025-03-29T22:00:00.5Z", &want, &b), 0);
    assert_int_equal(bk_duration_before(a, &d), want);
}

static void a_policy_without_a_rule_is_refused(void **s)
{
    (void)s;
    json_t *sets = json_pack("[o]", mk("f1", "full", "A", t0(), NULL)), *plan = NULL;
    bk_policy p = {0};
    assert_int_equal(bk_retention_plan(sets, &p, &plan), OM_E_InvalidParameter);
    assert_null(plan);
    p.keep_within = "a week";
    assert_int_equal(bk_retention_plan(sets, &p, &plan), OM_E_InvalidParameter);
    json_decref(sets);
}

/* Database A: a full every Monday at 01:00, an incremental at 06:00 and 18:00 every other day, for
 * four weeks; the newest set is the incremental of 2026-11-29 18:00. Set ids: f<day>, i<day>a,
 * i<day>b. */
static json_t *four_weeks(void)
{
    json_t *sets = json_array();
    char id[16], prev[16] = "";
    for (int day = 0; day < 28; day++) {
        uint64_t t = t0() + (uint64_t)day * DAY;
        if (day % 7 == 0) {
            snprintf(id, sizeof id, "f%02d", day);
            json_array_append_new(sets, mk(id, "full", "A", t + HOUR, NULL));
            snprintf(prev, sizeof prev, "%s", id);
            continue;
        }
        for (int k = 0; k < 2; k++) {
            snprintf(id, sizeof id, "i%02d%c", day, 'a' + k);
            json_array_append_new(
                sets, mk(id, "incremental", "A", t + (6 + 12 * (uint64_t)k) * HOUR, prev));
            snprintf(prev, sizeof prev, "%s", id);
        }
    }
    return sets;
}

static void each_rule_keeps_what_restic_would(void **s)
{
    (void)s;
    json_t *sets = four_weeks(), *plan;
    char b[4000], w[400];

    /* last 3: the three newest, and their chain back to the Monday full */
    plan = plan_of(sets, &(bk_policy){.keep_last = 3});
    assert_string_equal(ids(plan, "kept", b, sizeof b),
                        "i27b i27a i26b i26a i25b i25a i24b i24a i23b i23a i22b i22a f21");
    assert_string_equal(why(plan, "i27b", w, sizeof w), "last 1");
    assert_string_equal(why(plan, "i26b", w, sizeof w), "last 3");
    assert_string_equal(why(plan, "i24a", w, sizeof w), "chain of i26b");
    assert_string_equal(why(plan, "f21", w, sizeof w), "chain of i26b");
    assert_string_equal(why(plan, "i20b", w, sizeof w), "no rule keeps it");
    json_decref(plan);

    /* daily 2: the newest of each of the last two days */
    plan = plan_of(sets, &(bk_policy){.keep_daily = 2});
    assert_string_equal(why(plan, "i27b", w, sizeof w), "daily 2026-11-29");
    assert_string_equal(why(plan, "i26b", w, sizeof w), "daily 2026-11-28");
    assert_string_equal(why(plan, "i27a", w, sizeof w), "chain of i27b");
    assert_string_equal(why(plan, "i26a", w, sizeof w), "chain of i26b");
    assert_int_equal(json_array_size(json_object_get(plan, "kept")), 13);
    json_decref(plan);

    /* weekly 2 (ISO weeks: Sunday 2026-11-29 is in W48, Sunday 11-22 in W47) */
    plan = plan_of(sets, &(bk_policy){.keep_weekly = 2});
    assert_string_equal(why(plan, "i27b", w, sizeof w), "weekly 2026-W48");
    assert_string_equal(why(plan, "i20b", w, sizeof w), "weekly 2026-W47");
    assert_string_equal(why(plan, "f14", w, sizeof w), "chain of i20b");
    assert_string_equal(why(plan, "f07", w, sizeof w), "no rule keeps it");
    json_decref(plan);

    /* monthly 3 and yearly 1: only November has sets, so one each */
    plan = plan_of(sets, &(bk_policy){.keep_monthly = 3, .keep_yearly = 1});
    assert_string_equal(why(plan, "i27b", w, sizeof w), "monthly 2026-11; yearly 2026");
    assert_int_equal(json_array_size(json_object_get(plan, "kept")), 13);
    json_decref(plan);

    /* within 36h of the newest set (11-29 18:00): newer than 11-28 06:00, so not i26a itself */
    plan = plan_of(sets, &(bk_policy){.keep_within = "36h"});
    assert_string_equal(why(plan, "i27a", w, sizeof w), "within 36h");
    assert_string_equal(why(plan, "i26b", w, sizeof w), "within 36h");
    assert_string_equal(why(plan, "i26a", w, sizeof w), "chain of i26b");
    json_decref(plan);

    /* full 2: the two newest fulls and everything committed after the older one */
    plan = plan_of(sets, &(bk_policy){.keep_full = 2});
    assert_string_equal(why(plan, "f21", w, sizeof w), "full 1");
    assert_string_equal(why(plan, "f14", w, sizeof w), "full 2");
    assert_string_equal(why(plan, "i15a", w, sizeof w), "after full f14");
    assert_string_equal(why(plan, "i13b", w, sizeof w), "no rule keeps it");
    assert_int_equal(json_array_size(json_object_get(plan, "kept")), 26);
    json_decref(plan);

    /* the combination: a set kept by several rules says so, and kept is the union */
    plan = plan_of(sets, &(bk_policy){.keep_last = 1, .keep_daily = 1, .keep_weekly = 3});
    assert_string_equal(why(plan, "i27b", w, sizeof w),
                        "last 1; daily 2026-11-29; weekly 2026-W48");
    assert_string_equal(why(plan, "i13b", w, sizeof w), "weekly 2026-W46");
    assert_string_equal(why(plan, "f07", w, sizeof w), "chain of i13b");
    assert_string_equal(why(plan, "f00", w, sizeof w), "no rule keeps it");
    assert_int_equal(json_array_size(json_object_get(plan, "kept")), 39);
    assert_int_equal(json_array_size(json_object_get(plan, "removed")), 13);
    json_decref(plan);
    json_decref(sets);
}

/* What the plan keeps never misses a set of a kept set's chain. */
static void chains_are_whole(json_t *sets, json_t *plan)
{
    json_t *kept = json_object(), *e;
    size_t i;
    json_array_foreach(json_object_get(plan, "kept"), i, e)
        json_object_set_new(kept, om_json_str_or(e, "id", ""), json_true());
    json_array_foreach(sets, i, e)
    {
        const char *par = om_json_str_or(e, "parent", "");
        if (json_object_get(kept, om_json_str_or(e, "id", "")) && *par)
            assert_non_null(json_object_get(kept, par));
    }
    json_decref(kept);
}

static void a_full_goes_with_its_dependents_only_when_none_is_kept(void **s)
{
    (void)s;
    uint64_t t = t0();
    /* F1 <- I1 <- I2, F1 <- D1 (a differential), then F2 <- I3; keep-last 1 keeps I3 and F2;
     * daily 1 with D1 the newest of its day keeps F1 through D1 but not I1, I2. */
    json_t *sets = json_pack("[o,o,o,o,o,o]", mk("F1", "full", "A", t, NULL),
                             mk("I1", "incremental", "A", t + HOUR, "F1"),
                             mk("I2", "incremental", "A", t + 2 * HOUR, "I1"),
                             mk("D1", "differential", "A", t + 3 * HOUR, "F1"),
                             mk("F2", "full", "A", t + DAY, NULL),
                             mk("I3", "incremental", "A", t + DAY + HOUR, "F2"));
    char b[400], w[400];
    json_t *plan = plan_of(sets, &(bk_policy){.keep_last = 1});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "I3 F2");
    assert_string_equal(ids(plan, "removed", b, sizeof b), "D1 I2 I1 F1");
    chains_are_whole(sets, plan);
    json_decref(plan);
    plan = plan_of(sets, &(bk_policy){.keep_daily = 2});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "I3 F2 D1 F1");
    assert_string_equal(why(plan, "F1", w, sizeof w), "chain of D1");
    assert_string_equal(ids(plan, "removed", b, sizeof b), "I2 I1");
    chains_are_whole(sets, plan);
    json_decref(plan);
    /* keeping I2 keeps I1 and F1, each named by the newest set that needs it */
    plan = plan_of(sets, &(bk_policy){.keep_within = "22h"}); /* D1 is at the limit: out */
    assert_string_equal(ids(plan, "kept", b, sizeof b), "I3 F2");
    json_decref(plan);
    plan = plan_of(sets, &(bk_policy){.keep_within = "1d"});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "I3 F2 D1 I2 I1 F1");
    assert_string_equal(why(plan, "I2", w, sizeof w), "within 1d");
    assert_string_equal(why(plan, "I1", w, sizeof w), "chain of I2");
    assert_string_equal(why(plan, "F1", w, sizeof w), "chain of D1");
    json_decref(plan);
    json_decref(sets);
}

static void the_policy_applies_per_database_and_to_the_databases_named(void **s)
{
    (void)s;
    uint64_t t = t0();
    json_t *sets = json_pack(
        "[o,o,o,o,o]", mk("A1", "full", "A", t, NULL), mk("B1", "full", "B", t + HOUR, NULL),
        mk("A2", "full", "A", t + 2 * HOUR, NULL), mk("B2", "full", "B", t + 3 * HOUR, NULL),
        mk("A3", "full", "A", t + 4 * HOUR, NULL));
    /* a set of both databases, older than all: kept when either keeps it */
    json_t *both = mk("AB", "copy", "A", t - HOUR, NULL);
    json_object_set_new(both, "databases", json_pack("[{s:s, s:s}]", "id", "B", "name", "B"));
    json_array_insert_new(sets, 0, both);
    char b[400], w[400];
    json_t *plan = plan_of(sets, &(bk_policy){.keep_last = 1});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "A3 B2"); /* each database's newest */
    json_decref(plan);
    plan = plan_of(sets, &(bk_policy){.keep_last = 3});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "A3 B2 A2 B1 A1 AB");
    assert_string_equal(why(plan, "AB", w, sizeof w), "B: last 3"); /* A keeps 3 without it */
    json_decref(plan);

    const char *only_a[] = {"A"};
    plan = plan_of(sets, &(bk_policy){.keep_last = 1, .dbs = only_a, .ndbs = 1});
    assert_string_equal(ids(plan, "kept", b, sizeof b), "A3 B2 B1 AB");
    assert_string_equal(why(plan, "B1", w, sizeof w), "database B not selected");
    assert_string_equal(why(plan, "AB", w, sizeof w), "B: database B not selected");
    assert_string_equal(ids(plan, "removed", b, sizeof b), "A2 A1");
    json_decref(plan);

    /* a default policy and one of B's own (as [retention] and a per-database section give) */
    const char *only_b[] = {"B"};
    const bk_policy two[] = {{.keep_last = 1}, {.keep_last = 2, .dbs = only_b, .ndbs = 1}};
    assert_int_equal(bk_retention_plan_n(sets, two, 2, &plan), 0);
    assert_string_equal(ids(plan, "kept", b, sizeof b), "A3 B2 B1");
    assert_string_equal(ids(plan, "removed", b, sizeof b), "A2 A1 AB");
    json_decref(plan);
    /* policies of their own only: a database none names keeps everything */
    assert_int_equal(bk_retention_plan_n(sets, two + 1, 1, &plan), 0);
    assert_string_equal(ids(plan, "removed", b, sizeof b), ""); /* B's third is AB, kept by A */
    assert_string_equal(why(plan, "A1", w, sizeof w), "database A not selected");
    assert_string_equal(why(plan, "AB", w, sizeof w), "A: database A not selected");
    json_decref(plan);

    /* a database no set names is an error naming those that exist */
    const char *typo[] = {"A", "C"};
    json_t *none = NULL;
    assert_int_equal(
        bk_retention_plan(sets, &(bk_policy){.keep_last = 1, .dbs = typo, .ndbs = 2}, &none),
        OM_E_SetNotFound);
    assert_null(none);
    assert_non_null(strstr(om_err_detail(), "database C"));
    assert_non_null(strstr(om_err_detail(), "A, B"));
    json_decref(sets);
}

/* ---- a repository of many simulated days, through bk_expire_policy ---- */

#define BS 4096u

static char tmpdir[256], repo[300];

static int setup_dir(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ombra-retention-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(repo, sizeof repo, "%s/repo", tmpdir);
    om_log_min_level(OM_ERROR);
    return 0;
}

static int teardown_dir(void **s)
{
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* One file of one block made from seed. */
static void put(bk_writer *w, const char *name, uint64_t seed)
{
    uint8_t b[BS], id[BK_ID_LEN], sum[32];
    unsigned l = 0;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < BS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)x;
    }
    EVP_Digest(b, BS, sum, &l, EVP_sha256(), NULL);
    assert_int_equal(bk_put_block(w, b, BS, id, NULL), 0);
    assert_int_equal(
        bk_set_add_file(w, name, BS, sum, NULL, (const uint8_t(*)[BK_ID_LEN])id, 1, json_object()),
        0);
}

/* A set as a backup writes it: a full holds the database and generation gen, an incremental
 * generation gen, continuing parent; taken at t. */
static void backup(bk_repo *r, const char *type, const char *db, uint32_t gen, uint64_t t,
                   const char *parent, char id[65])
{
    bk_writer *w = NULL;
    char name[64], iso[40];
    assert_int_equal(bk_set_begin(r, &w), 0);
    if (!strcmp(type, "full")) put(w, "edb/db.edb", t);
    snprintf(name, sizeof name, "logs/E00%08X.log", gen);
    put(w, name, t + 1);
    json_t *doc = json_pack("{s:s, s:{s:s, s:s, s:s}, s:s, s:[i,i], s:s?, s:s, s:I}", "type", type,
                            "database", "id", db, "name", db, "base", "E00", "server", "srv1",
                            "log_range", (int)gen, (int)gen, "parent", parent, "time",
                            om_time_iso(t, iso, sizeof iso), "mark_time_ns", (json_int_t)t);
    assert_int_equal(bk_set_commit(w, doc, id), 0);
    assert_int_equal(bk_set_publish(r, id), 0);
}

/* Two databases over 60 days: a full every Sunday (A) or every 10th day (B) at 01:00, an
 * incremental every other day at 01:00 and 13:00 (A) or at 22:00 (B). */
static void sixty_days(bk_repo *r)
{
    char parent[2][65] = {"", ""}, id[65];
    const char *db[2] = {"mail-a", "mail-b"};
    uint32_t gen[2] = {1, 1};
    uint64_t start = t0() - DAY; /* a Sunday */
    for (int day = 0; day < 60; day++)
        for (int d = 0; d < 2; d++) {
            uint64_t t = start + (uint64_t)day * DAY;
            int full = d == 0 ? day % 7 == 0 : day % 10 == 0;
            if (full) {
                backup(r, "full", db[d], gen[d], t + HOUR, NULL, id);
                memcpy(parent[d], id, 65);
                continue;
            }
            if (!*parent[d]) continue;
            int n = d == 0 ? 2 : 1;
            for (int k = 0; k < n; k++) {
                uint64_t at = t + (d == 0 ? (1 + 12 * (uint64_t)k) * HOUR : 22 * HOUR);
                backup(r, "incremental", db[d], ++gen[d], at, parent[d], id);
                memcpy(parent[d], id, 65);
            }
        }
}

static json_t *removed_ids(json_t *plan)
{
    json_t *out = json_array(), *e;
    size_t i;
    json_array_foreach(json_object_get(plan, "removed"), i, e)
        json_array_append_new(out, json_string(om_json_str_or(e, "id", "")));
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

static json_t *sorted(json_t *a)
{
    size_t n = json_array_size(a);
    json_t **v = calloc(n + 1, sizeof *v), *out = json_array();
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(a, i);
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    return out;
}

static void the_real_run_deletes_what_the_dry_run_listed_and_every_chain_stays_whole(void **s)
{
    (void)s;
    bk_init_opts o = {.block_size = BS, .pack_size = 64 << 10};
    assert_int_equal(bk_repo_init(repo, &o), 0);
    bk_repo *r = NULL;
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    sixty_days(r);
    json_t *before = NULL;
    assert_int_equal(bk_sets(r, &before), 0);
    size_t nbefore = json_array_size(before);
    assert_true(nbefore > 120);

    const char *dbs[] = {"mail-a"};
    const bk_policy rounds[] = {
        {.keep_daily = 7, .keep_weekly = 4, .keep_monthly = 6},
        {.keep_within = "10d", .keep_last = 3},
        {.keep_last = 2, .dbs = dbs, .ndbs = 1},
        {.keep_full = 1},
    };
    for (size_t k = 0; k < sizeof rounds / sizeof *rounds; k++) {
        json_t *dry = NULL, *real = NULL, *sets = NULL, *after = NULL;
        assert_int_equal(bk_expire_policy(r, &rounds[k], 1, 1, &dry), 0);
        assert_true(json_is_true(json_object_get(dry, "dry_run")));
        assert_int_equal(bk_sets(r, &sets), 0);
        assert_int_equal(json_array_size(sets),
                         json_array_size(json_object_get(dry, "kept")) +
                             json_array_size(json_object_get(dry, "removed")));
        json_decref(sets); /* the dry run removed nothing */

        assert_int_equal(bk_expire_policy(r, &rounds[k], 1, 0, &real), 0);
        json_t *rm = removed_ids(dry), *want = sorted(rm),
               *got = sorted(json_object_get(real, "sets_deleted"));
        json_decref(rm);
        assert_true(json_equal(want, got));
        assert_true(json_equal(json_object_get(dry, "kept"), json_object_get(real, "kept")));
        if (k == 0) assert_true(json_array_size(want) > 20);

        /* every remaining set is restorable: no chain was cut */
        assert_int_equal(bk_sets(r, &after), 0);
        assert_int_equal(json_array_size(after), json_array_size(json_object_get(dry, "kept")));
        json_t *plan = NULL, *e;
        assert_int_equal(bk_plan(after, &plan), 0);
        size_t i;
        json_array_foreach(plan, i, e) assert_true(json_is_true(json_object_get(e, "restorable")));
        json_decref(plan);
        json_decref(after);
        json_decref(want);
        json_decref(got);
        json_decref(dry);
        json_decref(real);
    }
    assert_int_equal(bk_verify(r, NULL, NULL, NULL, NULL), 0);
    json_decref(before);
    bk_repo_close(r);
}

static void a_dry_run_changes_nothing_and_runs_beside_another_handle(void **s)
{
    (void)s;
    bk_init_opts o = {.block_size = BS, .pack_size = 64 << 10};
    assert_int_equal(bk_repo_init(repo, &o), 0);
    bk_repo *r = NULL, *other = NULL;
    assert_int_equal(bk_repo_open(repo, NULL, &r), 0);
    char f[65], i1[65], pend[65];
    backup(r, "full", "A", 1, t0(), NULL, f);
    backup(r, "incremental", "A", 2, t0() + DAY, f, i1);
    /* a pending set (a backup that died): the dry run leaves it, the real run removes it */
    bk_writer *w = NULL;
    assert_int_equal(bk_set_begin(r, &w), 0);
    put(w, "logs/E0000000003.log", 99);
    assert_int_equal(bk_set_commit(w,
                                   json_pack("{s:s, s:{s:s, s:s, s:s}, s:[i,i], s:s}", "type",
                                             "incremental", "database", "id", "A", "name", "A",
                                             "base", "E00", "log_range", 3, 3, "parent", i1),
                                   pend),
                     0);
    char path[600];
    snprintf(path, sizeof path, "%s/sets/%s.pending", repo, pend);
    assert_int_equal(bk_repo_open(repo, NULL, &other), 0);
    json_t *rep = NULL;
    assert_int_equal(bk_expire_policy(r, &(bk_policy){.keep_last = 1}, 1, 1, &rep), 0);
    assert_int_equal(json_array_size(json_object_get(rep, "removed")), 0); /* I1 keeps F */
    json_decref(rep);
    assert_int_equal(access(path, F_OK), 0);
    /* the real run needs the repository alone */
    assert_int_equal(bk_expire_policy(r, &(bk_policy){.keep_last = 1}, 1, 0, &rep),
                     OM_E_RepositoryInUse);
    bk_repo_close(other);
    assert_int_equal(bk_expire_policy(r, &(bk_policy){0}, 1, 0, &rep), OM_E_InvalidParameter);
    assert_int_equal(access(path, F_OK), 0); /* a policy refused touches nothing */
    assert_int_equal(bk_expire_policy(r, &(bk_policy){.keep_last = 1}, 1, 0, &rep), 0);
    assert_int_equal(om_json_int_or(rep, "pending_removed", 0), 1);
    json_decref(rep);
    assert_int_equal(access(path, F_OK), -1);
    bk_repo_close(r);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations_parse_one_way_and_step_back_on_the_calendar),
        cmocka_unit_test(a_policy_without_a_rule_is_refused),
        cmocka_unit_test(each_rule_keeps_what_restic_would),
        cmocka_unit_test(a_full_goes_with_its_dependents_only_when_none_is_kept),
        cmocka_unit_test(the_policy_applies_per_database_and_to_the_databases_named),
        T(the_real_run_deletes_what_the_dry_run_listed_and_every_chain_stays_whole),
        T(a_dry_run_changes_nothing_and_runs_beside_another_handle),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Restore chains: which sets a restore uses, the way the spec decides it (§6) — a copy is a
 * restore point of its own and never takes a chain's place; the default restore reaches the
 * newest state any whole chain reaches; a point picks the chain that reaches it; a damaged,
 * orphaned or gapped set is never skipped in silence; `backups list` learns each set's chain.
 * The summaries are built here as bk_sets lists them. The last test draws random histories and
 * checks the rules against an oracle written from the generator's own knowledge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backup/chain.h"
#include "base/error.h"

/* ids are 16 characters so that messages (which give 12) can be told from whole ids */
static json_t *set(const char *id, const char *type, const char *db, uint32_t lo, uint32_t hi,
                   const char *parent)
{
    return json_pack("{s:s, s:s, s:{s:s}, s:[i,i], s:s?}", "id", id, "type", type, "database", "id",
                     db, "log_range", lo, hi, "parent", parent);
}

static void add(json_t *h, const char *id, const char *type, uint32_t lo, uint32_t hi,
                const char *parent)
{
    json_array_append_new(h, set(id, type, "db", lo, hi, parent));
}

static json_t *damaged(const char *id)
{
    return json_pack("{s:s, s:s}", "id", id, "damaged", "set file sets/x.json: bad checksum");
}

static const char *id_at(json_t *chain, size_t i)
{
    return json_string_value(json_object_get(json_array_get(chain, i), "id"));
}

static void assert_chain(json_t *chain, const char *const *ids, size_t n)
{
    assert_non_null(chain);
    assert_int_equal(json_array_size(chain), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(id_at(chain, i), ids[i]);
}

#define EXPECT_CHAIN(h, pt, ...)                                                                   \
    do {                                                                                           \
        const char *want_[] = {__VA_ARGS__};                                                       \
        json_t *c_ = NULL;                                                                         \
        int rc_ = bk_chain((h), "db", (pt), &c_);                                                  \
        if (rc_) fail_msg("bk_chain: %d %s", rc_, om_err_detail());                                \
        assert_chain(c_, want_, sizeof want_ / sizeof *want_);                                     \
        json_decref(c_);                                                                           \
    } while (0)

/* The restore is refused with err, and the message holds each of the strings. */
#define EXPECT_REFUSED(h, pt, err, ...)                                                            \
    do {                                                                                           \
        const char *has_[] = {__VA_ARGS__};                                                        \
        json_t *c_ = NULL;                                                                         \
        assert_int_equal(bk_chain((h), "db", (pt), &c_), (err));                                   \
        assert_null(c_);                                                                           \
        for (size_t k_ = 0; k_ < sizeof has_ / sizeof *has_; k_++)                                 \
            if (!strstr(om_err_detail(), has_[k_]))                                                \
                fail_msg("'%s' not in: %s", has_[k_], om_err_detail());                            \
    } while (0)

/* ---- copies ---- */

static void
a_copy_in_the_middle_of_an_incremental_chain_does_not_take_the_default_restore(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "c000000000000001", "copy", 6, 8, NULL);
    add(h, "i000000000000001", "incremental", 6, 12, "f000000000000001");
    EXPECT_CHAIN(h, NULL, "f000000000000001", "i000000000000001");
    /* nor does a copy between two incrementals */
    add(h, "c000000000000002", "copy", 6, 14, NULL);
    add(h, "i000000000000002", "incremental", 13, 16, "i000000000000001");
    EXPECT_CHAIN(h, NULL, "f000000000000001", "i000000000000001", "i000000000000002");
    json_decref(h);
}

static void a_copy_that_is_the_newest_point_is_restored_alone(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000001", "incremental", 6, 8, "f000000000000001");
    add(h, "c000000000000001", "copy", 9, 10, NULL);
    EXPECT_CHAIN(h, NULL, "c000000000000001");
    /* a copy alone, with no full at all, is a restore point */
    json_t *only = json_array();
    add(only, "c000000000000009", "copy", 3, 4, NULL);
    EXPECT_CHAIN(only, NULL, "c000000000000009");
    json_decref(only);
    /* reaching as far as a full-based chain, the full-based chain is used */
    add(h, "i000000000000002", "incremental", 9, 10, "i000000000000001");
    EXPECT_CHAIN(h, NULL, "f000000000000001", "i000000000000001", "i000000000000002");
    json_decref(h);
}

static void a_point_inside_an_incremental_range_after_a_copy_uses_the_full_chain(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "c000000000000001", "copy", 6, 8, NULL);
    add(h, "i000000000000001", "incremental", 6, 12, "f000000000000001");
    add(h, "i000000000000002", "incremental", 13, 15, "i000000000000001");
    bk_point p = {.until_gen = 10};
    EXPECT_CHAIN(h, &p, "f000000000000001", "i000000000000001");
    p.until_gen = 14;
    EXPECT_CHAIN(h, &p, "f000000000000001", "i000000000000001", "i000000000000002");
    p.until_gen = 7; /* before the copy's point: the copy cannot serve */
    EXPECT_CHAIN(h, &p, "f000000000000001", "i000000000000001");
    p.until_gen = 8; /* exactly the copy's point: it serves with no log past it */
    EXPECT_CHAIN(h, &p, "c000000000000001");
    /* and a differential after a copy */
    json_t *d = json_array();
    add(d, "f000000000000001", "full", 1, 5, NULL);
    add(d, "c000000000000001", "copy", 6, 8, NULL);
    add(d, "d000000000000001", "differential", 6, 12, "f000000000000001");
    p.until_gen = 9;
    EXPECT_CHAIN(d, &p, "f000000000000001", "d000000000000001");
    EXPECT_CHAIN(d, NULL, "f000000000000001", "d000000000000001");
    json_decref(d);
    json_decref(h);
}

/* ---- full, incrementals, differentials ---- */

/* full1 (1-5), inc1a (6-8), inc1b (9-12), diff1 (6-14) after full1; full2 (15-20), inc2a
 * (21-25); db2's own full. Oldest first, as the repository lists them. */
static json_t *history(void)
{
    json_t *a = json_array();
    add(a, "f1aaaaaaaaaaaaaa", "full", 1, 5, NULL);
    add(a, "i1aaaaaaaaaaaaaa", "incremental", 6, 8, "f1aaaaaaaaaaaaaa");
    add(a, "i1bbbbbbbbbbbbbb", "incremental", 9, 12, "i1aaaaaaaaaaaaaa");
    add(a, "d1aaaaaaaaaaaaaa", "differential", 6, 14, "f1aaaaaaaaaaaaaa");
    add(a, "f2aaaaaaaaaaaaaa", "full", 15, 20, NULL);
    add(a, "i2aaaaaaaaaaaaaa", "incremental", 21, 25, "f2aaaaaaaaaaaaaa");
    json_array_append_new(a, set("f9zzzzzzzzzzzzzz", "full", "db2", 1, 30, NULL));
    return a;
}

static void a_differential_or_the_incrementals_whichever_reaches_the_point_closest(void **state)
{
    (void)state;
    json_t *h = history();
    EXPECT_CHAIN(h, NULL, "f2aaaaaaaaaaaaaa", "i2aaaaaaaaaaaaaa"); /* not db2's newer full */
    bk_point p = {.until_gen = 7};
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "i1aaaaaaaaaaaaaa"); /* inc1a reaches 8 */
    p.until_gen = 12;
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "i1aaaaaaaaaaaaaa", "i1bbbbbbbbbbbbbb");
    p.until_gen = 13; /* only the differential reaches 13 from full1 */
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "d1aaaaaaaaaaaaaa");
    p.until_gen = 22;
    EXPECT_CHAIN(h, &p, "f2aaaaaaaaaaaaaa", "i2aaaaaaaaaaaaaa");
    p.until_gen = 4; /* full1's logs end at 5: nothing stops at 4 */
    EXPECT_REFUSED(h, &p, OM_E_SetNotFound, "older than the point");
    /* the newest differential of a full reaches further than its incrementals */
    json_t *d = json_array();
    add(d, "f000000000000001", "full", 1, 5, NULL);
    add(d, "i000000000000001", "incremental", 6, 8, "f000000000000001");
    add(d, "d000000000000001", "differential", 6, 9, "f000000000000001");
    add(d, "d000000000000002", "differential", 6, 11, "f000000000000001");
    EXPECT_CHAIN(d, NULL, "f000000000000001", "d000000000000002");
    json_decref(d);
    json_decref(h);
}

static void a_named_set_comes_with_the_sets_it_needs(void **state)
{
    (void)state;
    json_t *h = history();
    bk_point p = {.set_id = "i1bb"};
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "i1aaaaaaaaaaaaaa", "i1bbbbbbbbbbbbbb");
    p.set_id = "d1";
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "d1aaaaaaaaaaaaaa");
    p.set_id = "f1";
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa");
    p.set_id = "f9"; /* another database's set */
    EXPECT_REFUSED(h, &p, OM_E_SetNotFound, "no backup set f9");
    p.set_id = "i";
    EXPECT_REFUSED(h, &p, OM_E_InvalidParameter, "ambiguous");
    json_t *c = NULL;
    assert_int_equal(bk_chain(h, "nodb", NULL, &c), OM_E_SetNotFound);
    assert_non_null(strstr(om_err_detail(), "no backup set of database nodb"));
    json_decref(h);
}

static void a_point_in_time_picks_by_the_sets_freeze_times(void **state)
{
    (void)state;
    json_t *h = history(), *s;
    size_t i;
    json_array_foreach(h, i, s)
        json_object_set_new(s, "mark_time_ns", json_integer((json_int_t)(i + 1) * 100));
    bk_point p = {.until_time_ns = 250}; /* after i1a (200), before i1b (300) */
    EXPECT_CHAIN(h, &p, "f1aaaaaaaaaaaaaa", "i1aaaaaaaaaaaaaa", "i1bbbbbbbbbbbbbb");
    p.until_time_ns = 550; /* after full2 (500) */
    EXPECT_CHAIN(h, &p, "f2aaaaaaaaaaaaaa", "i2aaaaaaaaaaaaaa");
    p.until_time_ns = 50; /* before any full */
    EXPECT_REFUSED(h, &p, OM_E_SetNotFound, "older than the point");
    /* a copy frozen between the incrementals: it serves only at its own moment */
    json_t *c = json_array();
    add(c, "f000000000000001", "full", 1, 5, NULL);
    add(c, "c000000000000001", "copy", 6, 8, NULL);
    add(c, "i000000000000001", "incremental", 6, 12, "f000000000000001");
    uint64_t t[] = {100, 200, 300};
    json_array_foreach(c, i, s)
        json_object_set_new(s, "mark_time_ns", json_integer((json_int_t)t[i]));
    p.until_time_ns = 250;
    EXPECT_CHAIN(c, &p, "f000000000000001", "i000000000000001");
    p.until_time_ns = 200;
    EXPECT_CHAIN(c, &p, "c000000000000001");
    json_decref(c);
    json_decref(h);
}

/* ---- never in silence ---- */

static void
a_damaged_set_file_stops_the_restore_naming_it_and_the_set_to_restore_instead(void **state)
{
    (void)state;
    json_t *h = history();
    json_array_append_new(h, damaged("dddddddddddddddd"));
    EXPECT_REFUSED(h, NULL, OM_E_RepositoryCorrupt, "set file dddddddddddd is damaged",
                   "bad checksum", "HINT: --set i2aaaaaaaaaa", "incremental set i2aaaaaaaaaa");
    bk_point p = {.until_gen = 22}; /* any restore that does not name its set */
    EXPECT_REFUSED(h, &p, OM_E_RepositoryCorrupt, "dddddddddddd");
    p = (bk_point){.set_id = "f2aaaaaaaaaa"}; /* the hint's way: on purpose */
    EXPECT_CHAIN(h, &p, "f2aaaaaaaaaaaaaa");
    p.set_id = "i2a";
    EXPECT_CHAIN(h, &p, "f2aaaaaaaaaaaaaa", "i2aaaaaaaaaaaaaa");
    p.set_id = "dddd"; /* naming the damaged set itself */
    EXPECT_REFUSED(h, &p, OM_E_RepositoryCorrupt, "dddddddddddd is damaged");
    /* a damaged set listed first (commit order unknown) stops it just the same */
    json_t *first = json_array();
    json_array_append_new(first, damaged("dddddddddddddddd"));
    add(first, "f000000000000001", "full", 1, 5, NULL);
    EXPECT_REFUSED(first, NULL, OM_E_RepositoryCorrupt, "dddddddddddd", "--set f00000000000");
    json_decref(first);
    json_decref(h);
}

static void an_orphaned_incremental_newer_than_the_chain_stops_the_restore(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000002", "incremental", 9, 12, "i000000000000001"); /* i..01 is gone */
    EXPECT_REFUSED(h, NULL, OM_E_MissingLogFile, "incremental set i00000000000 (generations 9-12)",
                   "its parent i00000000000 is not in the repository",
                   "log generations 6-8 are in no backup set",
                   "HINT: --set f00000000000 restores that older point on purpose");
    bk_point p = {.until_gen = 10};
    EXPECT_REFUSED(h, &p, OM_E_MissingLogFile, "generations 9-12");
    p.until_gen = 5; /* the full alone reaches the point: nothing newer matters */
    EXPECT_CHAIN(h, &p, "f000000000000001");
    /* the sets after an orphan are named through it */
    add(h, "i000000000000003", "incremental", 13, 14, "i000000000000002");
    EXPECT_REFUSED(h, NULL, OM_E_MissingLogFile, "incremental set i00000000000 (generations 13-14)",
                   "incremental set i00000000000 (generations 9-12), in its chain",
                   "--set f00000000000");
    /* an orphaned differential (its full is gone) too */
    json_t *d = json_array();
    add(d, "f000000000000001", "full", 1, 5, NULL);
    add(d, "d000000000000001", "differential", 9, 12, "f0000000000000ff");
    EXPECT_REFUSED(d, NULL, OM_E_MissingLogFile, "differential set d00000000000",
                   "--set f00000000000");
    json_decref(d);
    /* nothing whole at all: the orphan is named, and no --set is offered */
    json_t *o = json_array();
    add(o, "i000000000000002", "incremental", 9, 12, "i000000000000001");
    EXPECT_REFUSED(o, NULL, OM_E_MissingLogFile, "i00000000000", "no whole chain");
    /* what a copy holds is not named as missing, but the parent still is */
    add(o, "c000000000000001", "copy", 1, 8, NULL);
    EXPECT_REFUSED(o, NULL, OM_E_MissingLogFile, "its parent i00000000000 is not in the repository",
                   "--set c00000000000");
    assert_null(strstr(om_err_detail(), "in no backup set"));
    json_decref(o);
    json_decref(h);
}

static void an_orphan_older_than_the_chosen_chain_is_no_obstacle(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000002", "incremental", 9, 12, "i000000000000001"); /* orphan */
    add(h, "f000000000000002", "full", 13, 20, NULL);
    add(h, "i000000000000003", "incremental", 21, 22, "f000000000000002");
    EXPECT_CHAIN(h, NULL, "f000000000000002", "i000000000000003");
    bk_point p = {.until_gen = 21};
    EXPECT_CHAIN(h, &p, "f000000000000002", "i000000000000003");
    /* but a point only the orphan could reach is refused, naming it */
    p.until_gen = 10;
    EXPECT_REFUSED(h, &p, OM_E_MissingLogFile, "i00000000000", "--set f00000000000");
    json_decref(h);
}

static void a_named_set_through_a_missing_or_damaged_parent_is_refused_naming_it(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000002", "incremental", 9, 12, "i000000000000001");
    add(h, "i000000000000003", "incremental", 13, 14, "i000000000000002");
    bk_point p = {.set_id = "i000000000000003"};
    EXPECT_REFUSED(h, &p, OM_E_MissingLogFile, "incremental set i00000000000 (generations 13-14)",
                   "its parent i00000000000 is not in the repository");
    json_decref(h);
    h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    json_array_append_new(h, damaged("dddddddddddddddd"));
    add(h, "i000000000000002", "incremental", 9, 12, "dddddddddddddddd");
    p.set_id = "i000000000000002";
    EXPECT_REFUSED(h, &p, OM_E_RepositoryCorrupt, "set file dddddddddddd, in its chain", "damaged");
    p.set_id = "f0";
    EXPECT_CHAIN(h, &p, "f000000000000001");
    json_decref(h);
}

static void a_gap_in_generations_is_refused_naming_them(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000001", "incremental", 9, 12, "f000000000000001");
    bk_point p = {.set_id = "i0"};
    EXPECT_REFUSED(h, &p, OM_E_MissingLogFile, "generations 6-8 are in no backup set",
                   "its parent f00000000000 ends at 5");
    EXPECT_REFUSED(h, NULL, OM_E_MissingLogFile, "generations 6-8 are in no backup set",
                   "--set f00000000000");
    p = (bk_point){.until_gen = 5};
    EXPECT_CHAIN(h, &p, "f000000000000001");
    /* overlapping ranges are no gap (the full's logs were not all truncated) */
    json_t *o = json_array();
    add(o, "f000000000000001", "full", 1, 5, NULL);
    add(o, "i000000000000001", "incremental", 4, 12, "f000000000000001");
    add(o, "i000000000000002", "incremental", 13, 13, "i000000000000001");
    EXPECT_CHAIN(o, NULL, "f000000000000001", "i000000000000001", "i000000000000002");
    json_decref(o);
    json_decref(h);
}

static void a_set_that_continues_what_it_may_not_is_refused(void **state)
{
    (void)state;
    json_t *h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "c000000000000001", "copy", 6, 7, NULL);
    add(h, "i000000000000001", "incremental", 6, 9, "c000000000000001");
    EXPECT_REFUSED(h, NULL, OM_E_InvalidBackupSequence, "a copy backup, which no set continues",
                   "--set c00000000000");
    json_decref(h);
    h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "i000000000000001", "incremental", 6, 8, "f000000000000001");
    add(h, "d000000000000001", "differential", 6, 9, "i000000000000001");
    bk_point p = {.set_id = "d0"};
    EXPECT_REFUSED(h, &p, OM_E_InvalidBackupSequence, "not a full backup");
    json_decref(h);
    /* parents that lead back to themselves: refused, not followed forever */
    h = json_array();
    add(h, "i000000000000001", "incremental", 6, 8, "i000000000000002");
    add(h, "i000000000000002", "incremental", 9, 10, "i000000000000001");
    p.set_id = "i000000000000002";
    EXPECT_REFUSED(h, &p, OM_E_RepositoryCorrupt, "lead back");
    EXPECT_REFUSED(h, NULL, OM_E_RepositoryCorrupt, "lead back");
    json_t *plan = NULL;
    assert_int_equal(bk_plan(h, &plan), 0);
    assert_int_equal(json_array_size(plan), 2);
    json_decref(plan);
    json_decref(h);
    /* another database's set as parent, and a type that is none */
    h = json_array();
    add(h, "f000000000000001", "full", 1, 5, NULL);
    json_array_append_new(h, set("f900000000000001", "full", "db2", 1, 5, NULL));
    add(h, "i000000000000001", "incremental", 6, 9, "f900000000000001");
    add(h, "x000000000000001", "snapshot", 6, 12, NULL);
    EXPECT_REFUSED(h, NULL, OM_E_RepositoryCorrupt, "snapshot", "--set f00000000000");
    p.set_id = "i0";
    EXPECT_REFUSED(h, &p, OM_E_SetNotFound, "another database");
    json_decref(h);
}

/* ---- the listing ---- */

static void the_plan_gives_each_set_its_chain_and_whether_it_can_be_restored(void **state)
{
    (void)state;
    json_t *h = json_array(), *plan = NULL;
    add(h, "f000000000000001", "full", 1, 5, NULL);
    add(h, "c000000000000001", "copy", 6, 8, NULL);
    add(h, "i000000000000001", "incremental", 6, 12, "f000000000000001");
    add(h, "i000000000000003", "incremental", 15, 16, "i000000000000002");
    json_array_append_new(h, damaged("dddddddddddddddd"));
    assert_int_equal(bk_plan(h, &plan), 0);
    assert_int_equal(json_array_size(plan), 5);
    const char *ids[5][3] = {{"f000000000000001"},
                             {"c000000000000001"},
                             {"f000000000000001", "i000000000000001"},
                             {"i000000000000003"},
                             {"dddddddddddddddd"}};
    int ok[5] = {1, 1, 1, 0, 0};
    for (size_t i = 0; i < 5; i++) {
        json_t *s = json_array_get(plan, i), *chain = json_object_get(s, "chain");
        assert_string_equal(json_string_value(json_object_get(s, "id")),
                            json_string_value(json_object_get(json_array_get(h, i), "id")));
        assert_int_equal(json_is_true(json_object_get(s, "restorable")), ok[i]);
        assert_int_equal(json_object_get(s, "why") != NULL, !ok[i]);
        size_t n = 0;
        while (n < 3 && ids[i][n])
            n++;
        assert_int_equal(json_array_size(chain), n);
        for (size_t k = 0; k < n; k++)
            assert_string_equal(json_string_value(json_array_get(chain, k)), ids[i][k]);
    }
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(plan, 3), "why")),
                           "its parent i00000000000 is not in the repository"));
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(plan, 4), "why")), "damaged"));
    /* the summaries keep their fields, and the caller's are untouched */
    assert_string_equal(json_string_value(json_object_get(json_array_get(plan, 2), "type")),
                        "incremental");
    assert_null(json_object_get(json_array_get(h, 2), "chain"));
    json_decref(plan);
    json_decref(h);
}

/* ---- random histories ---- */

#define MAXSETS 40

typedef struct hset {
    char id[32];
    int db; /* 0: "db", 1: "db2" */
    uint32_t lo, hi;
    int base;         /* index of the chain's base (itself for a full or a copy) */
    int anc[MAXSETS]; /* the sets of its chain, base first, itself last */
    int nanc;
} hset;

static uint64_t rnd_state;
static uint32_t rnd(uint32_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint32_t)(rnd_state % n);
}

/* A history as the writer makes it: each backup rolls at least one generation; every set holds
 * the logs still on disk; a full or an incremental truncates them up to at most the generation
 * being written; incrementals continue the last full or incremental, differentials the last
 * full (only while no incremental followed it: the logs it needs are then still there). */
static json_t *random_history(hset *hs, int *n)
{
    json_t *h = json_array();
    struct dbstate {
        uint32_t g, disk_lo;
        int last_full, last_fi, incr_since;
    } st[2] = {{0, 1, -1, -1, 0}, {0, 1, -1, -1, 0}};
    *n = 1 + (int)rnd(MAXSETS);
    for (int i = 0; i < *n; i++) {
        hset *x = &hs[i];
        x->db = rnd(5) == 0;
        struct dbstate *d = &st[x->db];
        d->g += 1 + rnd(3);
        const char *types[] = {"full", "copy", "incremental", "differential"};
        int t = d->last_full < 0 ? (int)rnd(2) : (int)rnd(4);
        if (t == 3 && d->incr_since) t = 2;
        snprintf(x->id, sizeof x->id, "%c%03d%012x", types[t][0], i, (unsigned)rnd(1u << 30));
        x->lo = d->disk_lo;
        x->hi = d->g;
        int parent = t == 2 ? d->last_fi : t == 3 ? d->last_full : -1;
        x->nanc = 0;
        if (parent >= 0) {
            memcpy(x->anc, hs[parent].anc, sizeof x->anc);
            x->nanc = hs[parent].nanc;
        }
        x->anc[x->nanc++] = i;
        x->base = x->anc[0];
        if (t == 0 || t == 2) d->disk_lo += rnd(d->g + 2 - d->disk_lo);
        if (t == 0) d->last_full = i, d->incr_since = 0;
        if (t == 0 || t == 2) d->last_fi = i;
        if (t == 2) d->incr_since = 1;
        json_t *s = set(x->id, types[t], x->db ? "db2" : "db", x->lo, x->hi,
                        parent >= 0 ? hs[parent].id : NULL);
        json_object_set_new(s, "mark_time_ns", json_integer((json_int_t)x->hi * 10));
        json_array_append_new(h, s);
    }
    return h;
}

/* What the plan ends with, checked to be a whole chain of db: a full (or a copy alone), then
 * sets each continuing the one before, with no gap. */
static uint32_t whole_chain_end(json_t *c, uint32_t *start)
{
    size_t n = json_array_size(c);
    assert_true(n >= 1);
    json_t *first = json_array_get(c, 0);
    const char *t0 = json_string_value(json_object_get(first, "type"));
    assert_true(!strcmp(t0, "full") || (!strcmp(t0, "copy") && n == 1));
    *start = (uint32_t)json_integer_value(json_array_get(json_object_get(first, "log_range"), 1));
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(c, i);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(s, "database"), "id")), "db");
        if (!i) continue;
        json_t *prev = json_array_get(c, i - 1);
        const char *t = json_string_value(json_object_get(s, "type"));
        assert_true(!strcmp(t, "incremental") || (!strcmp(t, "differential") && n == 2));
        assert_string_equal(json_string_value(json_object_get(s, "parent")),
                            json_string_value(json_object_get(prev, "id")));
        assert_true(json_integer_value(json_array_get(json_object_get(s, "log_range"), 0)) <=
                    json_integer_value(json_array_get(json_object_get(prev, "log_range"), 1)) + 1);
    }
    return (uint32_t)json_integer_value(
        json_array_get(json_object_get(json_array_get(c, n - 1), "log_range"), 1));
}

/* The oracle: the end of the chain a point should get, from the generator's knowledge of which
 * sets are whole (gone[i]: removed or damaged). until 0: the default. -1: no chain starts in
 * time. */
static long oracle_end(const hset *hs, int n, const int *gone, uint32_t until)
{
    long best = -1;
    int best_reaches = 0;
    for (int i = 0; i < n; i++) {
        int whole = !hs[i].db;
        for (int k = 0; k < hs[i].nanc; k++)
            whole = whole && !gone[hs[i].anc[k]];
        if (!whole || (until && hs[hs[i].base].hi > until)) continue;
        int reaches = until && hs[i].hi >= until;
        if (best < 0 || (reaches && (!best_reaches || hs[i].hi < best)) ||
            (!reaches && !best_reaches && hs[i].hi > best)) {
            best = hs[i].hi;
            best_reaches = reaches;
        }
    }
    return best;
}

/* The --set the refusal's hint names restores the oracle's best older point. */
static void the_hint_restores_the_best_whole_point(json_t *h, long want)
{
    const char *at = strstr(om_err_detail(), "HINT: --set ");
    if (want < 0) {
        assert_null(at);
        return;
    }
    if (!at) fail_msg("no --set hint in: %s", om_err_detail());
    char id[13];
    snprintf(id, sizeof id, "%.12s", at + strlen("HINT: --set "));
    bk_point p = {.set_id = id};
    json_t *c = NULL;
    if (bk_chain(h, "db", &p, &c)) fail_msg("the hint's --set %s: %s", id, om_err_detail());
    uint32_t start;
    assert_int_equal(whole_chain_end(c, &start), want);
    json_decref(c);
}

static void random_histories_restore_the_furthest_whole_chain_or_refuse_naming_a_set(void **state)
{
    (void)state;
    const char *env = getenv("OMBRA_CHAIN_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 0x0b5a1d2c3e4f5061ull;
    int rounds = getenv("OMBRA_CHAIN_ROUNDS") ? atoi(getenv("OMBRA_CHAIN_ROUNDS")) : 3000;
    int refused_damaged = 0, refused_orphan = 0, silent_ok = 0;
    for (int round = 0; round < rounds; round++) {
        rnd_state = seed + (uint64_t)round * 0x9E3779B97F4A7C15ull;
        if (!rnd_state) rnd_state = 1;
        hset hs[MAXSETS];
        int n, gone[MAXSETS] = {0};
        json_t *h = random_history(hs, &n), *c = NULL;
        uint32_t start, last = 0;
        for (int i = 0; i < n; i++)
            if (!hs[i].db && hs[i].hi > last) last = hs[i].hi;
        int rc = bk_chain(h, "db", NULL, &c);
        if (!last) { /* only db2's sets */
            assert_int_equal(rc, OM_E_SetNotFound);
        } else {
            if (rc) fail_msg("round %d: %s", round, om_err_detail());
            /* the default: the newest backup's state, whatever its type */
            assert_int_equal(whole_chain_end(c, &start), last);
            json_decref(c);
            /* a point by generation: started before it, reaching it with the fewest logs */
            uint32_t g = 1 + rnd(last + 2);
            bk_point p = {.until_gen = g};
            long want = oracle_end(hs, n, gone, g);
            rc = bk_chain(h, "db", &p, &c);
            if (want < 0) {
                assert_int_equal(rc, OM_E_SetNotFound);
            } else {
                if (rc) fail_msg("round %d gen %u: %s", round, g, om_err_detail());
                assert_int_equal(whole_chain_end(c, &start), want);
                assert_true(start <= g);
                json_decref(c);
            }
            /* the same by freeze time */
            p = (bk_point){.until_time_ns = (uint64_t)g * 10};
            rc = bk_chain(h, "db", &p, &c);
            if (want < 0) {
                assert_int_equal(rc, OM_E_SetNotFound);
            } else {
                if (rc) fail_msg("round %d time %u: %s", round, g * 10, om_err_detail());
                assert_int_equal(whole_chain_end(c, &start), want);
                json_decref(c);
            }
        }
        /* one set removed or damaged */
        int k = (int)rnd((uint32_t)n), dmg = rnd(3) == 0;
        gone[k] = 1;
        json_t *h2 = json_array();
        for (int i = 0; i < n; i++) {
            if (i != k)
                json_array_append(h2, json_array_get(h, i));
            else if (dmg)
                json_array_append_new(h2, damaged(hs[i].id));
        }
        long best = oracle_end(hs, n, gone, 0);
        /* the listing's verdict per set is the oracle's: whole back to its base, or not */
        json_t *plan = NULL;
        assert_int_equal(bk_plan(h2, &plan), 0);
        for (int i = 0, at = 0; i < n; i++) {
            if (i == k && !dmg) continue;
            json_t *e = json_array_get(plan, (size_t)at++);
            assert_string_equal(json_string_value(json_object_get(e, "id")), hs[i].id);
            int whole = 1;
            for (int a = 0; a < hs[i].nanc; a++)
                whole = whole && !gone[hs[i].anc[a]];
            assert_int_equal(json_is_true(json_object_get(e, "restorable")), whole);
            if (whole) assert_int_equal(json_array_size(json_object_get(e, "chain")), hs[i].nanc);
        }
        json_decref(plan);
        uint32_t furthest = 0; /* of every set of db still listed and readable */
        for (int i = 0; i < n; i++)
            if (!hs[i].db && !gone[i] && hs[i].hi > furthest) furthest = hs[i].hi;
        rc = bk_chain(h2, "db", NULL, &c);
        if (dmg) {
            char want_id[13];
            snprintf(want_id, sizeof want_id, "%.12s", hs[k].id);
            assert_int_equal(rc, OM_E_RepositoryCorrupt);
            assert_non_null(strstr(om_err_detail(), want_id));
            the_hint_restores_the_best_whole_point(h2, best);
            refused_damaged++;
        } else if (!rc) {
            /* restored without a word: nothing listed of db may reach further */
            assert_int_equal(whole_chain_end(c, &start), best);
            assert_true(furthest <= (uint32_t)best);
            json_decref(c);
            silent_ok++;
        } else if (furthest == 0) {
            assert_int_equal(rc, OM_E_SetNotFound);
        } else {
            /* refused: rightly only when a set of db that is not whole reaches further */
            if ((long)furthest <= best)
                fail_msg("round %d: refused for nothing: %s", round, om_err_detail());
            /* naming a set of db that is not whole and reaches further than the best chain */
            int named = 0;
            for (int i = 0; i < n; i++) {
                char pre[13];
                snprintf(pre, sizeof pre, "%.12s", hs[i].id);
                int whole = 1;
                for (int a = 0; a < hs[i].nanc; a++)
                    whole = whole && !gone[hs[i].anc[a]];
                if (!hs[i].db && !gone[i] && !whole && (long)hs[i].hi > best &&
                    strstr(om_err_detail(), pre))
                    named = 1;
            }
            if (!named) fail_msg("round %d: names no unrestorable set: %s", round, om_err_detail());
            the_hint_restores_the_best_whole_point(h2, best);
            refused_orphan++;
        }
        json_decref(h2);
        json_decref(h);
    }
    print_message("%d histories: %d refusals for a damaged set, %d for an unrestorable one, %d "
                  "restores of what remained whole\n",
                  rounds, refused_damaged, refused_orphan, silent_ok);
    assert_true(refused_orphan > 0 && refused_damaged > 0 && silent_ok > 0);
}

/* A set taken from a passive copy (the replica writer, "Replica\<server>\<id>") restores
 * through this server's store writer exactly as a set of the store writer does, under the store
 * writer's own component; so a full from a passive copy and an incremental from the active form
 * one chain that restores through one component. */
static void a_passive_copys_set_restores_through_the_store_writer_like_the_actives(void **state)
{
    (void)state;
    const char *id = "0c5e2b1a-7d44-4f0e-9a21-5b8c3d7e6f10";
    char replica[200], store[200];
    snprintf(replica, sizeof replica, "Replica\\b\\%s", id);
    snprintf(store, sizeof store, "Ombra Store\\a\\%s", id);
    bk_restore_via r, s;
    assert_int_equal(bk_restore_via_writer("set1", BK_REPLICA_WRITER_CLASS, replica, id, "c", &r),
                     0);
    assert_int_equal(bk_restore_via_writer("set2", BK_STORE_WRITER_CLASS, store, id, "c", &s), 0);
    assert_true(r.replica);
    assert_false(s.replica);
    assert_string_equal(r.cls, BK_STORE_WRITER_CLASS);
    assert_string_equal(s.cls, BK_STORE_WRITER_CLASS);
    assert_string_equal(r.saved_lp, "Replica\\b");
    assert_string_equal(s.saved_lp, "Ombra Store\\a");
    assert_string_equal(r.lp, "Ombra Store\\c");
    char want[200];
    snprintf(want, sizeof want, "Ombra Store\\c\\%s", id);
    assert_string_equal(r.comp, want);
    assert_string_equal(s.comp, want);
    /* the same server, the store writer: the saved names come back */
    assert_int_equal(bk_restore_via_writer("set2", BK_STORE_WRITER_CLASS, store, id, "a", &s), 0);
    assert_string_equal(s.comp, store);
    /* another writer's class keeps its class and its root */
    assert_int_equal(bk_restore_via_writer("set3", "11111111-2222-4333-8444-555555555555",
                                           "Other\\a\\0c5e2b1a-7d44-4f0e-9a21-5b8c3d7e6f10", id,
                                           "c", &s),
                     0);
    assert_string_equal(s.cls, "11111111-2222-4333-8444-555555555555");
    assert_string_equal(s.lp, "Other\\c");
    /* the full from the passive copy and the incremental from the active are one chain */
    json_t *h = json_array();
    json_array_append_new(h, set("full-on-b-000001", "full", "db", 3, 5, NULL));
    json_array_append_new(h,
                          set("incr-on-a-000002", "incremental", "db", 6, 8, "full-on-b-000001"));
    bk_point pt = {0};
    EXPECT_CHAIN(h, &pt, "full-on-b-000001", "incr-on-a-000002");
    json_decref(h);
    /* a component that is not <root>\<server>\<its database id> is refused, naming the set */
    const char *bad[] = {"Replica\\b", "Replica\\b\\other-id", "Replica", "",
                         "Replica\\0c5e2b1a-7d44-4f0e-9a21-5b8c3d7e6f10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(
            bk_restore_via_writer("badset", BK_REPLICA_WRITER_CLASS, bad[i], id, "c", &r),
            OM_E_RepositoryCorrupt);
        assert_non_null(strstr(om_err_detail(), "set badset"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            a_copy_in_the_middle_of_an_incremental_chain_does_not_take_the_default_restore),
        cmocka_unit_test(a_copy_that_is_the_newest_point_is_restored_alone),
        cmocka_unit_test(a_point_inside_an_incremental_range_after_a_copy_uses_the_full_chain),
        cmocka_unit_test(a_differential_or_the_incrementals_whichever_reaches_the_point_closest),
        cmocka_unit_test(a_named_set_comes_with_the_sets_it_needs),
        cmocka_unit_test(a_point_in_time_picks_by_the_sets_freeze_times),
        cmocka_unit_test(
            a_damaged_set_file_stops_the_restore_naming_it_and_the_set_to_restore_instead),
        cmocka_unit_test(an_orphaned_incremental_newer_than_the_chain_stops_the_restore),
        cmocka_unit_test(an_orphan_older_than_the_chosen_chain_is_no_obstacle),
        cmocka_unit_test(a_named_set_through_a_missing_or_damaged_parent_is_refused_naming_it),
        cmocka_unit_test(a_gap_in_generations_is_refused_naming_them),
        cmocka_unit_test(a_set_that_continues_what_it_may_not_is_refused),
        cmocka_unit_test(the_plan_gives_each_set_its_chain_and_whether_it_can_be_restored),
        cmocka_unit_test(random_histories_restore_the_furthest_whole_chain_or_refuse_naming_a_set),
        cmocka_unit_test(a_passive_copys_set_restores_through_the_store_writer_like_the_actives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Restore chains: the sets a restore uses, the way a user expects them picked (the newest full
 * and the incrementals after it, or its newest differential; a named set with what it needs; a
 * point by generation), and a gap refused naming the generations no set holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backup/chain.h"
#include "base/error.h"

static json_t *set(const char *id, const char *type, const char *db, uint32_t lo, uint32_t hi,
                   const char *parent)
{
    return json_pack("{s:s, s:s, s:{s:s}, s:[i,i], s:s?}", "id", id, "type", type, "database", "id",
                     db, "log_range", lo, hi, "parent", parent);
}

/* full1 (1-5), inc1a (6-8), inc1b (9-12), diff1 (6-14) after full1; full2 (15-20), inc2a
 * (21-25); a copy (26-26); db2's own full. Oldest first, as the repository lists them. */
static json_t *history(void)
{
    json_t *a = json_array();
    json_array_append_new(a, set("f1aaaa", "full", "db", 1, 5, NULL));
    json_array_append_new(a, set("i1aaaa", "incremental", "db", 6, 8, "f1aaaa"));
    json_array_append_new(a, set("i1bbbb", "incremental", "db", 9, 12, "i1aaaa"));
    json_array_append_new(a, set("d1aaaa", "differential", "db", 6, 14, "f1aaaa"));
    json_array_append_new(a, set("f2aaaa", "full", "db", 15, 20, NULL));
    json_array_append_new(a, set("i2aaaa", "incremental", "db", 21, 25, "f2aaaa"));
    json_array_append_new(a, set("cpaaaa", "copy", "db", 26, 26, NULL));
    json_array_append_new(a, set("f9zzzz", "full", "db2", 1, 3, NULL));
    return a;
}

static void assert_chain(json_t *chain, const char *const *ids, size_t n)
{
    assert_int_equal(json_array_size(chain), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(chain, i), "id")),
                            ids[i]);
}

static void the_newest_base_and_what_follows_it_by_default(void **state)
{
    json_t *h = history(), *c = NULL;
    assert_int_equal(bk_chain(h, "db", NULL, &c), 0);
    const char *want[] = {"cpaaaa"}; /* the copy is the newest whole backup */
    assert_chain(c, want, 1);
    json_decref(c);
    json_array_remove(h, 6);
    assert_int_equal(bk_chain(h, "db", NULL, &c), 0);
    const char *want2[] = {"f2aaaa", "i2aaaa"};
    assert_chain(c, want2, 2);
    json_decref(c);
    json_decref(h);
}

static void a_named_set_comes_with_the_sets_it_needs(void **state)
{
    json_t *h = history(), *c = NULL;
    bk_point p = {.set_id = "i1bb"};
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want[] = {"f1aaaa", "i1aaaa", "i1bbbb"};
    assert_chain(c, want, 3);
    json_decref(c);
    p.set_id = "d1";
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want2[] = {"f1aaaa", "d1aaaa"};
    assert_chain(c, want2, 2);
    json_decref(c);
    p.set_id = "f9"; /* another database's set */
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_SetNotFound);
    p.set_id = "i";
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "ambiguous"));
    json_decref(h);
}

static void a_point_by_generation_picks_the_shortest_chain_that_reaches_it(void **state)
{
    json_t *h = history(), *c = NULL;
    bk_point p = {.until_gen = 7};
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want[] = {"f1aaaa", "i1aaaa"}; /* inc1a reaches 8 with fewer logs */
    assert_chain(c, want, 2);
    json_decref(c);
    p.until_gen = 13; /* only the differential reaches 13 from full1 */
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want2[] = {"f1aaaa", "d1aaaa"};
    assert_chain(c, want2, 2);
    json_decref(c);
    p.until_gen = 22;
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want3[] = {"f2aaaa", "i2aaaa"};
    assert_chain(c, want3, 2);
    json_decref(c);
    json_decref(h);
}

static void a_point_in_time_picks_by_the_sets_freeze_times(void **state)
{
    json_t *h = history(), *c = NULL, *s;
    size_t i;
    json_array_foreach(h, i, s)
        json_object_set_new(s, "mark_time_ns", json_integer((json_int_t)(i + 1) * 100));
    bk_point p = {.until_time_ns = 250}; /* after i1a (200), before i1b (300) */
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want[] = {"f1aaaa", "i1aaaa", "i1bbbb"}; /* i1b holds the logs up to 300 */
    assert_chain(c, want, 3);
    json_decref(c);
    p.until_time_ns = 550; /* after full2 (500) */
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    const char *want2[] = {"f2aaaa", "i2aaaa"};
    assert_chain(c, want2, 2);
    json_decref(c);
    p.until_time_ns = 50; /* before any full */
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_SetNotFound);
    json_decref(h);
}

static void a_gap_or_a_missing_parent_is_refused_naming_it(void **state)
{
    json_t *h = json_array(), *c = NULL;
    json_array_append_new(h, set("faaaaa", "full", "db", 1, 5, NULL));
    json_array_append_new(h, set("iaaaaa", "incremental", "db", 9, 12, "faaaaa"));
    bk_point p = {.set_id = "iaaaaa"};
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_MissingLogFile);
    assert_non_null(strstr(om_err_detail(), "generations 6-8 are in no backup set"));
    json_array_append_new(h, set("ibbbbb", "incremental", "db", 13, 14, "gone00"));
    p.set_id = "ibbb";
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_SetNotFound);
    assert_non_null(strstr(om_err_detail(), "gone00"));
    assert_int_equal(bk_chain(h, "nodb", NULL, &c), OM_E_SetNotFound);
    json_decref(h);
    /* the newest chain (or one to a point) with an incremental in the middle gone: refused, not
     * silently cut short at the full */
    h = json_array();
    json_array_append_new(h, set("faaaaa", "full", "db", 1, 5, NULL));
    json_array_append_new(h, set("ibbbbb", "incremental", "db", 9, 12, "iaaaaa"));
    assert_int_equal(bk_chain(h, "db", NULL, &c), OM_E_MissingLogFile);
    assert_non_null(strstr(om_err_detail(), "generations 6-8 are in no backup set"));
    assert_non_null(strstr(om_err_detail(), "--set"));
    p = (bk_point){.until_gen = 10};
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_MissingLogFile);
    p.until_gen = 4; /* before the gap: the full alone */
    assert_int_equal(bk_chain(h, "db", &p, &c), OM_E_SetNotFound); /* its logs end at 5 */
    p.until_gen = 5;
    assert_int_equal(bk_chain(h, "db", &p, &c), 0);
    json_decref(c);
    json_decref(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_newest_base_and_what_follows_it_by_default),
        cmocka_unit_test(a_named_set_comes_with_the_sets_it_needs),
        cmocka_unit_test(a_point_by_generation_picks_the_shortest_chain_that_reaches_it),
        cmocka_unit_test(a_point_in_time_picks_by_the_sets_freeze_times),
        cmocka_unit_test(a_gap_or_a_missing_parent_is_refused_naming_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

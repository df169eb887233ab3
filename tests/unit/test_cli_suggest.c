/* "Did you mean" (src/cli/cli_suggest.c): which typo finds which name. A swap of two neighbours
 * is one edit, case does not count, a typo may be a third of the word (1 to 3 edits) and never
 * as many edits as the name has letters, the nearest wins and the first of equals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/near.h"
#include "cli/cli.h"

static const char *near(const char *word, const char *const *names)
{
    static om_near n; /* word and names outlive the call */
    om_near_init(&n, word);
    for (; *names; names++)
        om_near_try(&n, *names);
    return om_near_best(&n);
}

static const char *const groups[] = {"db",      "mail", "dbutil",  "vss",    "backup",
                                     "restore", "repo", "backups", "verify", "expire",
                                     "dag",     "help", NULL};

static void typos_of_a_group_find_it(void **st)
{
    (void)st;
    assert_string_equal(near("backpu", groups), "backup");  /* a swap */
    assert_string_equal(near("bakup", groups), "backup");   /* a letter left out */
    assert_string_equal(near("restor", groups), "restore"); /* cut short */
    assert_string_equal(near("Verfy", groups), "verify");   /* case, and a letter */
    assert_string_equal(near("hlep", groups), "help");
    assert_string_equal(near("expier", groups), "expire");
}

static void far_or_short_words_find_nothing(void **st)
{
    (void)st;
    assert_null(near("zzzzzzzz", groups));
    assert_null(near("x", groups));      /* "db" is 2 edits from it: more than a third */
    assert_null(near("verify", groups)); /* an exact name is no typo (ombra.c found it) */
    assert_null(near("snapshot", groups));
    assert_null(near("", groups));
    static const char *const one[] = {"db", NULL};
    assert_null(near("xy", one)); /* as many edits as the name has letters */
}

static void the_nearest_wins_then_the_first(void **st)
{
    (void)st;
    static const char *const dbs[] = {"mail2", "mail1", "archive", NULL};
    assert_string_equal(near("mial1", dbs), "mail1"); /* 1 edit beats mail2's 2 */
    assert_string_equal(near("mail3", dbs), "mail2"); /* both 1 edit: the first listed */
    static const char *const backups[] = {"backups", "backup", NULL};
    assert_string_equal(near("backupz", backups), "backups");
}

static void long_words_allow_three_edits_at_most(void **st)
{
    (void)st;
    static const char *const opts[] = {"passphrase-file", "no-roll-forward", NULL};
    assert_string_equal(near("pasphrase-fiel", opts), "passphrase-file"); /* 2 edits */
    assert_string_equal(near("no-rol-forwrd", opts), "no-roll-forward");
    assert_null(near("pass-file", opts)); /* 6 edits */
    char longword[100];
    memset(longword, 'a', sizeof longword - 1);
    longword[sizeof longword - 1] = 0;
    assert_null(near(longword, opts)); /* longer than any name: not compared */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(typos_of_a_group_find_it),
        cmocka_unit_test(far_or_short_words_find_nothing),
        cmocka_unit_test(the_nearest_wins_then_the_first),
        cmocka_unit_test(long_words_allow_three_edits_at_most),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

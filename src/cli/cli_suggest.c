/* "Did you mean": the closest known name to a mistyped one (cli.h), for ombra.c's unknown groups,
 * commands and options, and for a database the store does not have (cli_suggest_db, which
 * cli_fail calls). One distance for all three, so a typo is forgiven the same way everywhere. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/proto.h"
#include "cli/cli.h"
#include "store/client.h"

#define NEAR_MAX 64 /* longer words are not compared: no name of ours is that long */

/* Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a
 * substring): insertions, deletions, substitutions and swaps of two neighbours cost 1 each;
 * letters compared without case ("Mail1" is one typo from nothing). */
static int osa_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    int d[NEAR_MAX + 1][NEAR_MAX + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 &&
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

void cli_near_init(cli_near *n, const char *word)
{
    n->word = word;
    n->best = NULL;
    n->dist = 0;
}

void cli_near_try(cli_near *n, const char *cand)
{
    size_t wl = strlen(n->word), cl = strlen(cand);
    if (!wl || !cl || wl > NEAR_MAX || cl > NEAR_MAX) return;
    /* A third of the word, at least one and at most three edits: "backpu" finds "backup", "db"
     * does not find "dag". And never more edits than the candidate has letters. */
    int bound = (int)(wl / 3);
    if (bound < 1) bound = 1;
    if (bound > 3) bound = 3;
    int d = osa_distance(n->word, cand);
    if (d == 0 || d > bound || d >= (int)cl) return;
    if (!n->best || d < n->dist) { /* the first of equals wins: the tables' order */
        n->best = cand;
        n->dist = d;
    }
}

const char *cli_near_best(const cli_near *n)
{
    return n->best;
}

/* The database name in a "not found" detail: the store's registry and directory ("no database
 * named 'x'", a DAG's "... in DAG d"), a backup that finds no copy ("no copy of database 'x'"),
 * a restore that finds no set ("no backup set of a database named 'x'"). */
static int missing_db_name(const char *detail, char *out, size_t n)
{
    static const char *const pfx[] = {"no database named '", "no copy of database '",
                                      "of a database named '"};
    const char *p = NULL, *e;
    for (size_t i = 0; i < sizeof pfx / sizeof pfx[0] && !p; i++)
        if ((p = strstr(detail, pfx[i]))) p += strlen(pfx[i]);
    if (!p || !(e = strchr(p, '\'')) || e == p || (size_t)(e - p) >= n) return 0;
    snprintf(out, n, "%.*s", (int)(e - p), p);
    return 1;
}

void cli_suggest_db(int err)
{
    char name[NEAR_MAX + 1];
    om_err_saved was;
    if (err != OM_E_DatabaseNotFound && err != OM_E_SetNotFound) return;
    om_err_save(&was, err);
    if (!missing_db_name(was.detail, name, sizeof name)) return;
    store_client *sc = NULL;
    json_t *dbs = NULL, *db;
    size_t i;
    cli_near nr;
    cli_near_init(&nr, name);
    /* The store's list (db.list), on a connection of its own (cli_common's client is above
     * this file); when it cannot be had, the error stays as it was. */
    if (!store_client_new(NULL, &sc) && !store_client_db_list(sc, &dbs))
        json_array_foreach(dbs, i, db) cli_near_try(&nr, om_json_str_or(db, "name", ""));
    store_client_free(sc);
    if (cli_near_best(&nr) && strstr(was.detail, "HINT:")) /* a hint already: one more */
        om_errf(err, "%s; or did you mean '%s'?", was.detail, cli_near_best(&nr));
    else if (cli_near_best(&nr))
        om_errf(err, "%s. HINT: did you mean '%s'? (%s)", was.detail, cli_near_best(&nr),
                err == OM_E_SetNotFound ? "ombra backups list shows the sets"
                                        : "ombra db list shows the databases");
    else
        om_err_restore(&was);
    json_decref(dbs);
}

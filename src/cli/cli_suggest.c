/* "Did you mean": the closest known name to a mistyped one (cli.h), for ombra.c's unknown groups,
 * commands and options, and for a database the store does not have (cli_suggest_db, which
 * cli_fail calls). One distance for all three, so a typo is forgiven the same way everywhere. */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/near.h"
#include "cli/cli.h"
#include "store/client.h"

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
    char name[65]; /* base/near.h compares words of at most 64 letters */
    om_err_saved was;
    if (err != OM_E_DatabaseNotFound && err != OM_E_SetNotFound) return;
    om_err_save(&was, err);
    if (!missing_db_name(was.detail, name, sizeof name)) return;
    store_client *sc = NULL;
    json_t *dbs = NULL, *db;
    size_t i;
    om_near nr;
    om_near_init(&nr, name);
    /* The store's list (db.list), on a connection of its own (cli_common's client is above
     * this file); when it cannot be had, the error stays as it was. */
    if (!store_client_new(NULL, &sc) && !store_client_db_list(sc, &dbs))
        json_array_foreach(dbs, i, db) om_near_try(&nr, om_json_str_or(db, "name", ""));
    store_client_free(sc);
    if (om_near_best(&nr) && strstr(was.detail, "HINT:")) /* a hint already: one more */
        om_errf(err, "%s; or did you mean '%s'?", was.detail, om_near_best(&nr));
    else if (om_near_best(&nr))
        om_errf(err, "%s. HINT: did you mean '%s'? (%s)", was.detail, om_near_best(&nr),
                err == OM_E_SetNotFound ? "ombra backups list shows the sets"
                                        : "ombra db list shows the databases");
    else
        om_err_restore(&was);
    json_decref(dbs);
}

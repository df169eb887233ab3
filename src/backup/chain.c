/* Restore chains (chain.h has the rules). */
#include "backup/chain.h"

#include <string.h>

#include "base/error.h"

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static uint32_t gen_at(json_t *s, size_t i)
{
    return (uint32_t)json_integer_value(json_array_get(json_object_get(s, "log_range"), i));
}
#define LO(s) gen_at((s), 0)
#define HI(s) gen_at((s), 1)

/* How far a set reaches on the point's scale: its last generation, or its freeze time. */
static uint64_t reach(json_t *s, int by_time)
{
    return by_time ? (uint64_t)json_integer_value(json_object_get(s, "mark_time_ns")) : HI(s);
}

static int is_type(json_t *s, const char *t)
{
    return !strcmp(str(s, "type"), t);
}

static int is_base(json_t *s)
{
    return is_type(s, "full") || is_type(s, "copy");
}

/* The sets of the database, oldest first (as bk_sets lists them). */
static json_t *sets_of(json_t *sets, const char *db)
{
    json_t *mine = json_array(), *s;
    size_t i;
    json_array_foreach(sets, i, s) if (!json_object_get(s, "damaged") &&
                                       !strcmp(str(json_object_get(s, "database"), "id"), db))
        json_array_append(mine, s);
    return mine;
}

static json_t *by_id(json_t *mine, const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(mine, i, s) if (!strcmp(str(s, "id"), id)) return s;
    return NULL;
}

/* The set a prefix names: 0 and *out, or SetNotFound / InvalidParameter (ambiguous). */
static int by_prefix(json_t *mine, const char *prefix, json_t **out)
{
    size_t i, l = strlen(prefix);
    json_t *s;
    *out = NULL;
    json_array_foreach(mine, i, s) if (l && !strncmp(str(s, "id"), prefix, l))
    {
        if (*out)
            return om_errf(OM_E_InvalidParameter, "set %s is ambiguous: give more of its id",
                           prefix);
        *out = s;
    }
    return *out ? 0 : om_errf(OM_E_SetNotFound, "no backup set %s of this database", prefix);
}

/* From a set back to its base through the parents, oldest first. */
static int back_to_base(json_t *mine, json_t *x, json_t *chain)
{
    json_t *rev = json_array();
    int rc = 0;
    for (json_t *cur = x; cur && !rc;) {
        json_array_append(rev, cur);
        if (is_base(cur)) break;
        const char *pid = str(cur, "parent");
        json_t *p = by_id(mine, pid);
        if (!p)
            rc = om_errf(OM_E_SetNotFound,
                         "the chain of set %.12s is broken: its parent %.12s is not in the "
                         "repository",
                         str(cur, "id"), pid[0] ? pid : "(none)");
        else if (is_type(cur, "differential") && !is_type(p, "full"))
            rc = om_errf(OM_E_InvalidBackupSequence,
                         "differential set %.12s follows %.12s, which is not a full backup",
                         str(cur, "id"), pid);
        cur = p;
    }
    for (size_t i = json_array_size(rev); !rc && i-- > 0;)
        json_array_append(chain, json_array_get(rev, i));
    json_decref(rev);
    return rc;
}

/* The newest full (or copy) that reaches no further than until (0: any). */
static json_t *newest_base(json_t *mine, uint64_t until, int by_time)
{
    json_t *best = NULL, *s;
    size_t i;
    json_array_foreach(mine, i, s) if (is_base(s) && (!until || reach(s, by_time) <= until)) best =
        s;
    return best;
}

/* The incrementals after base through the parents, up to the first that reaches until. */
static void incrementals(json_t *mine, json_t *base, uint64_t until, int by_time, json_t *chain)
{
    json_t *last = base;
    for (;;) {
        if (until && reach(last, by_time) >= until) return;
        json_t *next = NULL, *s;
        size_t i;
        json_array_foreach(mine, i, s) if (is_type(s, "incremental") &&
                                           !strcmp(str(s, "parent"), str(last, "id")))
        {
            next = s;
            break;
        }
        if (!next) return;
        json_array_append(chain, next);
        last = next;
    }
}

/* The differential of base that reaches until with the fewest logs, else the one that reaches
 * furthest. */
static json_t *differential(json_t *mine, json_t *base, uint64_t until, int by_time)
{
    json_t *best = NULL, *s;
    size_t i;
    json_array_foreach(mine, i, s)
    {
        if (!is_type(s, "differential") || strcmp(str(s, "parent"), str(base, "id"))) continue;
        uint64_t r = reach(s, by_time), rb = best ? reach(best, by_time) : 0;
        int reaches = until && r >= until, best_reaches = best && until && rb >= until;
        if (!best || (reaches && (!best_reaches || r < rb)) ||
            (!reaches && !best_reaches && r > rb))
            best = s;
    }
    return best;
}

static int continuous(json_t *chain)
{
    for (size_t i = 1; i < json_array_size(chain); i++) {
        json_t *a = json_array_get(chain, i - 1), *b = json_array_get(chain, i);
        if (LO(b) > HI(a) + 1)
            return om_errf(OM_E_MissingLogFile,
                           "log generations %u-%u are in no backup set: set %.12s ends at %u "
                           "and set %.12s starts at %u",
                           HI(a) + 1, LO(b) - 1, str(a, "id"), HI(a), str(b, "id"), LO(b));
    }
    return 0;
}

/* The chain stops short of the point (or of the newest backup) because a set in between is
 * gone: an incremental or differential of the database starts later than the chain ends, and
 * nothing fills the generations between. */
static int stops_short(json_t *mine, json_t *chain, uint64_t until, int by_time)
{
    json_t *last = json_array_get(chain, json_array_size(chain) - 1), *next = NULL, *s;
    if (until && reach(last, by_time) >= until) return 0;
    size_t i;
    json_array_foreach(mine, i, s)
    {
        if (is_base(s) || LO(s) <= HI(last)) continue;
        if (!next || LO(s) < LO(next)) next = s;
    }
    if (!next || LO(next) == HI(last) + 1) return 0;
    return om_errf(OM_E_MissingLogFile,
                   "the chain is broken: log generations %u-%u are in no backup set (set %.12s "
                   "ends at %u, the next, %s set %.12s, starts at %u; a set between them is "
                   "gone). HINT: restore up to set %.12s with --set",
                   HI(last) + 1, LO(next) - 1, str(last, "id"), HI(last), str(next, "type"),
                   str(next, "id"), LO(next), str(last, "id"));
}

int bk_source_db(json_t *sets, const char *name, const char *store_id, int elsewhere, char id[37])
{
    const char *by_name = NULL, *own = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(sets, i, s)
    {
        const char *sid = str(json_object_get(s, "database"), "id");
        if (json_object_get(s, "damaged")) continue;
        if (!strcmp(sid, store_id[0] ? store_id : name)) own = sid;
        if (!strcmp(str(json_object_get(s, "database"), "name"), name)) by_name = sid;
    }
    if (own) {
        snprintf(id, 37, "%s", own);
        return 0;
    }
    if (store_id[0] && by_name && !elsewhere)
        return om_errf(OM_E_BadDbSignature,
                       "database '%s' is %s, but the repository's backups of '%s' are of %s, an "
                       "earlier database of that name. HINT: ombra restore %s --to %s restores "
                       "them into it",
                       name, store_id, name, by_name, by_name, name);
    if (by_name) {
        snprintf(id, 37, "%s", by_name);
        return 0;
    }
    return om_errf(OM_E_SetNotFound, "no backup set of a database named '%s'%s in the repository",
                   name, store_id[0] ? "" : " (or with that id)");
}

int bk_chain(json_t *sets, const char *db_id, const bk_point *p, json_t **out)
{
    *out = NULL;
    json_t *mine = sets_of(sets, db_id), *chain = json_array();
    int rc = 0;
    if (!json_array_size(mine))
        rc = om_errf(OM_E_SetNotFound, "no backup set of database %s in the repository", db_id);
    else if (p && p->set_id) {
        json_t *x = NULL;
        rc = by_prefix(mine, p->set_id, &x);
        if (!rc) rc = back_to_base(mine, x, chain);
    } else {
        int by_time = p && p->until_time_ns;
        uint64_t until = by_time ? p->until_time_ns : p ? p->until_gen : 0;
        json_t *base = newest_base(mine, until, by_time);
        if (!base)
            rc = until ? om_errf(OM_E_SetNotFound,
                                 "no full backup of database %s is older than the point", db_id)
                       : om_errf(OM_E_SetNotFound, "no full backup of database %s", db_id);
        else {
            json_t *inc = json_array();
            json_array_append(inc, base);
            incrementals(mine, base, until, by_time, inc);
            json_t *dif = differential(mine, base, until, by_time);
            uint64_t ireach = reach(json_array_get(inc, json_array_size(inc) - 1), by_time);
            uint64_t dreach = dif ? reach(dif, by_time) : 0;
            int use_dif =
                dif && (until ? (dreach >= until && (ireach < until || dreach <= ireach)) ||
                                    (ireach < until && dreach > ireach)
                              : dreach >= ireach);
            if (use_dif) {
                json_array_append(chain, base);
                json_array_append(chain, dif);
            } else
                json_array_extend(chain, inc);
            json_decref(inc);
            rc = stops_short(mine, chain, until, by_time);
        }
    }
    if (!rc) rc = continuous(chain);
    json_decref(mine);
    if (rc) {
        json_decref(chain);
        return rc;
    }
    *out = chain;
    return 0;
}

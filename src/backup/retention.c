/* Retention policy (retention.h has the rules): which sets a policy keeps and why. Each set gets
 * its reasons; the rules of each database mark the sets they keep, then every kept set's parents
 * are kept with it ("chain of"), so what goes never holds a part of a kept chain. */
#include "backup/retention.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"

#define NS 1000000000ull

/* ---- durations ---- */

int bk_duration_parse(const char *text, bk_duration *d)
{
    static const char units[] = "ymwdh";
    memset(d, 0, sizeof *d);
    unsigned *field[] = {&d->years, &d->months, &d->weeks, &d->days, &d->hours};
    int seen = 0, any = 0;
    const char *p = text ? text : "";
    while (*p) {
        if (!isdigit((unsigned char)*p)) break;
        unsigned long v = 0;
        while (isdigit((unsigned char)*p) && v <= 100000)
            v = v * 10 + (unsigned long)(*p++ - '0');
        const char *u = *p ? strchr(units, *p) : NULL;
        if (v > 100000 || !u || (seen & (1 << (u - units)))) {
            p = NULL;
            break;
        }
        seen |= 1 << (u - units);
        *field[u - units] = (unsigned)v;
        any |= v != 0;
        p++;
    }
    if (!p || *p || !any)
        return om_errf(OM_E_InvalidParameter,
                       "'%s' is not a duration: numbers with units y (years), m (months), w "
                       "(weeks), d (days), h (hours), each once, e.g. 7d, 36h, 2w, 1y6m",
                       text ? text : "");
    return 0;
}

uint64_t bk_duration_before(uint64_t t_ns, const bk_duration *d)
{
    time_t s = (time_t)(t_ns / NS);
    struct tm tm;
    gmtime_r(&s, &tm);
    tm.tm_year -= (int)d->years;
    tm.tm_mon -= (int)d->months;
    tm.tm_mday -= (int)(d->weeks * 7 + d->days);
    tm.tm_hour -= (int)d->hours;
    tm.tm_isdst = 0;
    time_t b = timegm(&tm);
    return b < 0 ? 0 : (uint64_t)b * NS + t_ns % NS;
}

uint64_t bk_set_time_ns(json_t *set)
{
    int64_t mark = om_json_int_or(set, "mark_time_ns", 0);
    if (mark > 0) return (uint64_t)mark;
    uint64_t first = 0, last = 0;
    const char *t = om_json_str_or(set, "time", NULL);
    if (t && om_time_parse(t, &first, &last) == 0) return first;
    om_err_clear();
    int64_t c = om_json_int_or(set, "committed_ns", 0);
    return c > 0 ? (uint64_t)c : 0;
}

/* ---- the plan ---- */

typedef struct rset {
    json_t *s;
    const char *id;
    uint64_t t;
    long parent; /* index of the parent set; -1: none named, or not in the repository */
    int kept;
    json_t *reasons;
    json_t *keys; /* its databases (bk_set_db_keys) */
} rset;

typedef struct plan {
    rset *v;
    size_t n;
    const bk_policy *ps; /* the policies */
    size_t np;
    json_t *names; /* database key -> a name the sets give it */
} plan;

static void keep(plan *pl, size_t i, const char *db, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void keep(plan *pl, size_t i, const char *db, const char *fmt, ...)
{
    char why[200];
    int off = 0;
    rset *x = &pl->v[i];
    /* A set of several databases says whose rule kept it. */
    if (db && json_array_size(x->keys) > 1)
        off = snprintf(why, sizeof why, "%.60s: ", om_json_str_or(pl->names, db, db));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + off, sizeof why - (size_t)off, fmt, ap);
    va_end(ap);
    x->kept = 1;
    json_array_append_new(x->reasons, json_string(why));
}

/* Newest first: by time, then by commit order. */
static int newest_first(const void *a, const void *b, void *arg)
{
    const rset *v = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (v[i].t != v[j].t) return v[i].t > v[j].t ? -1 : 1;
    return i > j ? -1 : i < j;
}

static void sort_newest(plan *pl, size_t *ix, size_t n)
{
    qsort_r(ix, n, sizeof *ix, newest_first, pl->v);
}

typedef struct bucket_rule {
    const char *name;
    unsigned n;
} bucket_rule;

/* The period of t a rule counts in, in UTC: 2026-12-03, 2026-W49 (ISO 8601), 2026-12, 2026. */
static void period(const char *rule, uint64_t t, char *buf, size_t len)
{
    time_t s = (time_t)(t / NS);
    struct tm tm;
    gmtime_r(&s, &tm);
    if (!strcmp(rule, "daily"))
        strftime(buf, len, "%Y-%m-%d", &tm);
    else if (!strcmp(rule, "weekly"))
        strftime(buf, len, "%G-W%V", &tm);
    else if (!strcmp(rule, "monthly"))
        strftime(buf, len, "%Y-%m", &tm);
    else
        strftime(buf, len, "%Y", &tm);
}

/* daily/weekly/monthly/yearly: the newest set of each of the last n periods that have one. */
static void by_period(plan *pl, const char *db, const size_t *order, size_t n, bucket_rule r)
{
    char last[32] = "", cur[32];
    unsigned used = 0;
    for (size_t k = 0; k < n && used < r.n; k++) {
        period(r.name, pl->v[order[k]].t, cur, sizeof cur);
        if (!strcmp(cur, last)) continue;
        snprintf(last, sizeof last, "%s", cur);
        used++;
        keep(pl, order[k], db, "%s %s", r.name, cur);
    }
}

/* The rule ombra expire --keep-full always had: the newest N fulls with every set committed
 * after the oldest of them (commit order, as a database's backups follow one another). */
static void by_fulls(plan *pl, unsigned want, const char *db, const size_t *mine, size_t n)
{
    unsigned fulls = 0;
    size_t cut = 0;
    for (size_t k = n; k-- > 0 && fulls < want;)
        if (!strcmp(om_json_str_or(pl->v[mine[k]].s, "type", ""), "full")) {
            fulls++;
            cut = k;
        }
    unsigned rank = fulls;
    for (size_t k = 0; k < n; k++) {
        int full = !strcmp(om_json_str_or(pl->v[mine[k]].s, "type", ""), "full");
        if (fulls < want)
            keep(pl, mine[k], db, "%u full backups or fewer", want);
        else if (k >= cut && full)
            keep(pl, mine[k], db, "full %u", rank--);
        else if (k > cut)
            keep(pl, mine[k], db, "after full %.12s", pl->v[mine[cut]].id);
    }
}

/* Every rule, over one database's sets (positions, oldest commit first). */
static void apply_rules(plan *pl, const bk_policy *p, const char *db, const size_t *mine, size_t n)
{
    bk_duration within = {0};
    if (p->keep_within) bk_duration_parse(p->keep_within, &within); /* checked before */
    size_t *order = malloc((n + 1) * sizeof *order);
    if (!order) return;
    memcpy(order, mine, n * sizeof *order);
    sort_newest(pl, order, n);
    for (size_t k = 0; k < n && k < p->keep_last; k++)
        keep(pl, order[k], db, "last %zu", k + 1);
    const bucket_rule rules[] = {{"daily", p->keep_daily},
                                 {"weekly", p->keep_weekly},
                                 {"monthly", p->keep_monthly},
                                 {"yearly", p->keep_yearly}};
    for (size_t r = 0; r < sizeof rules / sizeof *rules; r++)
        if (rules[r].n) by_period(pl, db, order, n, rules[r]);
    if (p->keep_within && n) {
        uint64_t limit = bk_duration_before(pl->v[order[0]].t, &within);
        for (size_t k = 0; k < n && pl->v[order[k]].t > limit; k++)
            keep(pl, order[k], db, "within %s", p->keep_within);
    }
    if (p->keep_full) by_fulls(pl, p->keep_full, db, mine, n);
    free(order);
}

/* The policy of database key: the first that names it, else the first that names none (the
 * default); NULL when neither (the database is not selected). */
static const bk_policy *policy_for(const plan *pl, const char *key)
{
    const char *name = om_json_str_or(pl->names, key, "");
    for (size_t k = 0; k < pl->np; k++)
        for (size_t i = 0; i < pl->ps[k].ndbs; i++)
            if (!strcmp(pl->ps[k].dbs[i], key) || !strcmp(pl->ps[k].dbs[i], name))
                return &pl->ps[k];
    for (size_t k = 0; k < pl->np; k++)
        if (!pl->ps[k].ndbs) return &pl->ps[k];
    return NULL;
}

/* database key -> name (the set's "database" {"id", "name"}, or a name alone). */
static void learn_names(plan *pl, json_t *s)
{
    json_t *all = json_array(), *one = json_object_get(s, "database");
    if (one) json_array_append(all, one);
    if (json_is_array(json_object_get(s, "databases")))
        json_array_extend(all, json_object_get(s, "databases"));
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d)
    {
        const char *name = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
        const char *key = json_is_string(d) ? name : om_json_str_or(d, "id", "");
        if (!*key) key = name;
        if (*key && *name) json_object_set_new(pl->names, key, json_string(name));
    }
    json_decref(all);
}

/* A database of dbs that no set names: a typo must not pass for "nothing to do". */
static int check_dbs(plan *pl, const bk_policy *p, json_t *bydb)
{
    for (size_t i = 0; i < p->ndbs; i++) {
        const char *want = p->dbs[i], *key;
        json_t *l;
        int found = 0;
        json_object_foreach(bydb, key, l)
        {
            found |= !strcmp(key, want) || !strcmp(om_json_str_or(pl->names, key, ""), want);
        }
        if (found) continue;
        char have[400] = "";
        size_t used = 0;
        json_object_foreach(bydb, key, l)
        {
            if (!*key) continue;
            int w = snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "",
                             om_json_str_or(pl->names, key, key));
            if (w < 0 || (size_t)w >= sizeof have - used) break;
            used += (size_t)w;
        }
        return om_errf(OM_E_SetNotFound,
                       "no backup set of database %s in the repository. HINT: it holds backups "
                       "of %s",
                       want, used ? have : "no database");
    }
    return 0;
}

/* Keeps every parent of every kept set, up to its base. */
static void keep_chains(plan *pl)
{
    for (size_t i = pl->n; i-- > 0;) {
        if (!pl->v[i].kept) continue;
        for (long p = pl->v[i].parent; p >= 0 && !pl->v[p].kept; p = pl->v[p].parent)
            keep(pl, (size_t)p, NULL, "chain of %.12s", pl->v[i].id);
    }
}

static json_t *entry(const rset *x)
{
    char t[40];
    json_t *e = json_pack("{s:s, s:s, s:s}", "id", x->id, "type", om_json_str_or(x->s, "type", "?"),
                          "time", x->t ? om_time_iso(x->t, t, sizeof t) : "unknown");
    if (json_object_get(x->s, "database"))
        json_object_set(e, "database", json_object_get(x->s, "database"));
    if (json_object_get(x->s, "databases"))
        json_object_set(e, "databases", json_object_get(x->s, "databases"));
    json_object_set(e, "reasons", x->reasons);
    return e;
}

static int build(plan *pl, json_t *sets)
{
    json_t *byid = json_object();
    pl->n = json_array_size(sets);
    pl->v = calloc(pl->n + 1, sizeof *pl->v);
    if (!pl->v || !byid) {
        json_decref(byid);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    for (size_t i = 0; i < pl->n; i++) {
        rset *x = &pl->v[i];
        x->s = json_array_get(sets, i);
        x->id = om_json_str_or(x->s, "id", "");
        x->t = bk_set_time_ns(x->s);
        x->parent = -1;
        x->reasons = json_array();
        x->keys = bk_set_db_keys(x->s);
        json_object_set_new(byid, x->id, json_integer((json_int_t)i));
        learn_names(pl, x->s);
    }
    for (size_t i = 0; i < pl->n; i++) {
        const char *par = om_json_str_or(pl->v[i].s, "parent", "");
        json_t *at = *par ? json_object_get(byid, par) : NULL;
        if (at && (size_t)json_integer_value(at) != i)
            pl->v[i].parent = (long)json_integer_value(at);
    }
    json_decref(byid);
    return 0;
}

/* database key -> [positions, oldest commit first]; sets of no database and damaged ones are
 * kept here and belong to none. */
static json_t *group(plan *pl)
{
    json_t *bydb = json_object();
    for (size_t i = 0; i < pl->n; i++) {
        rset *x = &pl->v[i];
        if (json_object_get(x->s, "damaged")) {
            keep(pl, i, NULL, "its set file is damaged (its database and chain are unknown)");
            continue;
        }
        size_t k;
        json_t *key;
        json_array_foreach(x->keys, k, key)
        {
            const char *kv = json_string_value(key);
            if (!*kv) {
                keep(pl, i, NULL, "it names no database");
                continue;
            }
            json_t *l = json_object_get(bydb, kv);
            if (!l) json_object_set_new(bydb, kv, l = json_array());
            json_array_append_new(l, json_integer((json_int_t)i));
        }
    }
    return bydb;
}

static void plan_free(plan *pl)
{
    for (size_t i = 0; pl->v && i < pl->n; i++) {
        json_decref(pl->v[i].reasons);
        json_decref(pl->v[i].keys);
    }
    free(pl->v);
    json_decref(pl->names);
}

int bk_policy_check(const bk_policy *p)
{
    bk_duration d;
    if (!p->keep_full && !p->keep_last && !p->keep_daily && !p->keep_weekly && !p->keep_monthly &&
        !p->keep_yearly && !p->keep_within)
        return om_errf(OM_E_InvalidParameter,
                       "a retention policy keeps something: give at least one rule (keep last, "
                       "daily, weekly, monthly, yearly, within or full)");
    return p->keep_within ? bk_duration_parse(p->keep_within, &d) : 0;
}

int bk_retention_plan(json_t *sets, const bk_policy *p, json_t **out)
{
    return bk_retention_plan_n(sets, p, 1, out);
}

int bk_retention_plan_n(json_t *sets, const bk_policy *ps, size_t np, json_t **out)
{
    *out = NULL;
    plan pl = {.ps = ps, .np = np, .names = json_object()};
    int rc = np ? 0 : om_errf(OM_E_InvalidParameter, "no retention policy given");
    for (size_t k = 0; k < np && !rc; k++)
        rc = bk_policy_check(&ps[k]);
    if (!rc) rc = build(&pl, sets);
    json_t *bydb = rc ? NULL : group(&pl);
    for (size_t k = 0; k < np && !rc; k++)
        rc = check_dbs(&pl, &ps[k], bydb);
    const char *key;
    json_t *l;
    size_t *mine = rc ? NULL : calloc(pl.n + 1, sizeof *mine);
    if (!rc && !mine) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    json_object_foreach(bydb, key, l)
    {
        if (rc) break;
        size_t n = json_array_size(l);
        for (size_t k = 0; k < n; k++)
            mine[k] = (size_t)json_integer_value(json_array_get(l, k));
        const bk_policy *p = policy_for(&pl, key);
        if (p) {
            apply_rules(&pl, p, key, mine, n);
            continue;
        }
        for (size_t k = 0; k < n; k++)
            keep(&pl, mine[k], key, "database %s not selected", om_json_str_or(pl.names, key, key));
    }
    if (!rc) {
        keep_chains(&pl);
        size_t *order = mine;
        for (size_t i = 0; i < pl.n; i++)
            order[i] = i;
        sort_newest(&pl, order, pl.n);
        json_t *kept = json_array(), *removed = json_array();
        for (size_t k = 0; k < pl.n; k++) {
            rset *x = &pl.v[order[k]];
            if (!x->kept) json_array_append_new(x->reasons, json_string("no rule keeps it"));
            json_array_append_new(x->kept ? kept : removed, entry(x));
        }
        *out = json_pack("{s:o, s:o}", "kept", kept, "removed", removed);
    }
    free(mine);
    json_decref(bydb);
    plan_free(&pl);
    return rc;
}

/* Restore chains (chain.h has the rules). One plan of every set of the repository is built
 * once: each set's kind, its parent, and whether its chain back to its base is whole (else why,
 * and which set breaks it). The restore's pick and the listing both read that plan, so the rule
 * of what a chain is lives here only. */
#include "backup/chain.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum kind { K_DAMAGED, K_UNKNOWN, K_FULL, K_COPY, K_INCR, K_DIFF };

static const char *const kind_name[] = {"damaged", "unknown",     "full",
                                        "copy",    "incremental", "differential"};

typedef struct node {
    json_t *s; /* the summary (borrowed from the caller's array) */
    const char *id, *db;
    enum kind kind;
    int ranged; /* "log_range" is [lo, hi] with 0 < lo <= hi */
    uint32_t lo, hi;
    uint64_t t;    /* the freeze it stands for; 0 when unknown */
    long parent;   /* index of the parent set; -1 when none is named or it is not there */
    int resolving; /* on the walk being resolved: reaching it again is a loop of parents */
    int resolved;
    int ok;
    long base;     /* ok: the chain's base */
    size_t len;    /* ok: sets in the chain */
    long root;     /* not ok: the set whose own fault breaks the chain (itself, or a parent) */
    int code;      /* not ok: the error a restore through it gives */
    char why[400]; /* not ok: the reason, for "cannot be restored: <why>" */
} node;

typedef struct plan {
    node *n;
    size_t count;
} plan;

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static enum kind kind_of(json_t *s)
{
    if (json_object_get(s, "damaged")) return K_DAMAGED;
    const char *t = str(s, "type");
    for (int k = K_FULL; k <= K_DIFF; k++)
        if (!strcmp(t, kind_name[k])) return (enum kind)k;
    return K_UNKNOWN;
}

static void node_init(node *x, json_t *s)
{
    memset(x, 0, sizeof *x);
    x->s = s;
    x->id = str(s, "id");
    x->db = str(json_object_get(s, "database"), "id");
    x->kind = kind_of(s);
    x->parent = -1;
    json_t *lr = json_object_get(s, "log_range");
    json_int_t lo = json_integer_value(json_array_get(lr, 0)),
               hi = json_integer_value(json_array_get(lr, 1));
    x->ranged = json_array_size(lr) == 2 && lo > 0 && lo <= hi && hi <= UINT32_MAX;
    if (x->ranged) {
        x->lo = (uint32_t)lo;
        x->hi = (uint32_t)hi;
    }
    json_int_t t = json_integer_value(json_object_get(s, "mark_time_ns"));
    x->t = t > 0 ? (uint64_t)t : 0;
}

/* "incremental set 1a2b3c4d5e6f (generations 6-8)", or "set file 1a2b3c4d5e6f". */
static const char *desc(const node *x, char *buf, size_t len)
{
    const char *type = x->kind == K_UNKNOWN ? str(x->s, "type") : kind_name[x->kind];
    if (x->kind == K_DAMAGED)
        snprintf(buf, len, "set file %.12s", x->id);
    else if (!x->ranged)
        snprintf(buf, len, "%.20s set %.12s", type, x->id);
    else if (x->lo == x->hi)
        snprintf(buf, len, "%.20s set %.12s (generation %u)", type, x->id, x->hi);
    else
        snprintf(buf, len, "%.20s set %.12s (generations %u-%u)", type, x->id, x->lo, x->hi);
    return buf;
}

static void fault(plan *p, node *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fault(plan *p, node *x, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->why, sizeof x->why, fmt, ap);
    va_end(ap);
    x->ok = 0;
    x->code = code;
    x->root = x - p->n;
}

/* A parent the set cannot be restored through: the reason is the set that breaks the chain. */
static void inherit(plan *p, node *x, const node *par)
{
    const node *r = &p->n[par->root];
    char d[120];
    x->ok = 0;
    x->code = r->code;
    x->root = par->root;
    snprintf(x->why, sizeof x->why, "%s, in its chain, cannot be restored: %.250s",
             desc(r, d, sizeof d), r->why);
}

/* Whether x may continue par (incrementals: a full or an incremental; differentials: a full). */
static const char *wrong_parent(const node *x, const node *par)
{
    if (par->kind == K_FULL || (x->kind == K_INCR && par->kind == K_INCR)) return NULL;
    if (par->kind == K_COPY) return "a copy backup, which no set continues";
    if (x->kind == K_DIFF) return "not a full backup (a differential continues its full)";
    return "not a full or incremental backup (an incremental continues one)";
}

/* The newest generation below x's first that a readable set of its database holds (0: none):
 * what a missing parent leaves out is named by the generations after it. */
static uint32_t held_below(const plan *p, const node *x)
{
    uint32_t held = 0;
    for (size_t i = 0; i < p->count; i++) {
        const node *y = &p->n[i];
        if (y == x || !y->ranged || y->kind == K_DAMAGED || strcmp(y->db, x->db) || y->lo >= x->lo)
            continue;
        uint32_t top = y->hi < x->lo ? y->hi : x->lo - 1;
        if (top > held) held = top;
    }
    return held;
}

/* Decides x once its parent (if any) is decided. */
static void finish(plan *p, node *x)
{
    x->resolving = 0;
    x->resolved = 1;
    x->ok = 1;
    x->base = x - p->n;
    x->len = 1;
    if (x->kind == K_DAMAGED) {
        fault(p, x, OM_E_RepositoryCorrupt, "its set file is damaged (%.300s)",
              str(x->s, "damaged"));
        return;
    }
    if (x->kind == K_UNKNOWN) {
        fault(p, x, OM_E_RepositoryCorrupt, "its type '%.40s' is not a backup type",
              str(x->s, "type"));
        return;
    }
    if (!x->ranged) {
        fault(p, x, OM_E_RepositoryCorrupt, "its log range is missing or not [first, last]");
        return;
    }
    if (x->kind == K_FULL || x->kind == K_COPY) return;
    const char *pid = str(x->s, "parent");
    if (!*pid) {
        fault(p, x, OM_E_MissingFullBackup, "it names no parent (the backup it continues)");
        return;
    }
    if (x->parent < 0) {
        uint32_t held = held_below(p, x);
        if (held + 1 < x->lo)
            fault(p, x, OM_E_MissingLogFile,
                  "its parent %.12s is not in the repository: log generations %u-%u are in no "
                  "backup set",
                  pid, held + 1, x->lo - 1);
        else
            fault(p, x, OM_E_MissingLogFile, "its parent %.12s is not in the repository", pid);
        return;
    }
    node *par = &p->n[x->parent];
    const char *wrong = wrong_parent(x, par);
    if (par->resolving)
        fault(p, x, OM_E_RepositoryCorrupt, "its parents lead back to itself (set %.12s)", pid);
    else if (par->kind == K_DAMAGED || par->kind == K_UNKNOWN)
        inherit(p, x, par);
    else if (strcmp(par->db, x->db))
        fault(p, x, OM_E_SetNotFound, "its parent %.12s is a backup of another database (%.40s)",
              pid, par->db);
    else if (wrong)
        fault(p, x, OM_E_InvalidBackupSequence, "its parent %.12s is %s", pid, wrong);
    else if (!par->ok)
        inherit(p, x, par);
    else if (x->lo > par->hi + 1)
        fault(p, x, OM_E_MissingLogFile,
              "log generations %u-%u are in no backup set (its parent %.12s ends at %u)",
              par->hi + 1, x->lo - 1, pid, par->hi);
    else if (x->hi < par->hi)
        fault(p, x, OM_E_RepositoryCorrupt, "its logs end at %u, before its parent %.12s's (%u)",
              x->hi, pid, par->hi);
    else {
        x->base = par->base;
        x->len = par->len + 1;
    }
}

/* Resolves i and the parents it needs, oldest first, without recursion (chains are long). */
static void resolve(plan *p, size_t i, size_t *path)
{
    size_t depth = 0;
    for (size_t cur = i; !p->n[cur].resolved && !p->n[cur].resolving;) {
        node *x = &p->n[cur];
        x->resolving = 1;
        path[depth++] = cur;
        if ((x->kind != K_INCR && x->kind != K_DIFF) || x->parent < 0) break;
        cur = (size_t)x->parent;
    }
    while (depth-- > 0)
        finish(p, &p->n[path[depth]]);
}

static void plan_free(plan *p)
{
    free(p->n);
    p->n = NULL;
}

static int plan_build(json_t *sets, plan *p)
{
    p->count = json_array_size(sets);
    p->n = calloc(p->count + 1, sizeof *p->n);
    size_t *path = calloc(p->count + 1, sizeof *path);
    if (!p->n || !path) {
        free(path);
        plan_free(p);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    for (size_t i = 0; i < p->count; i++)
        node_init(&p->n[i], json_array_get(sets, i));
    for (size_t i = 0; i < p->count; i++) {
        const char *pid = str(p->n[i].s, "parent");
        for (size_t k = 0; *pid && k < p->count && p->n[i].parent < 0; k++)
            if (k != i && !strcmp(p->n[k].id, pid)) p->n[i].parent = (long)k;
    }
    for (size_t i = 0; i < p->count; i++)
        resolve(p, i, path);
    free(path);
    return 0;
}

/* ---- the pick ---- */

static uint64_t reach(const node *x, int by_time)
{
    return by_time ? x->t : x->hi;
}

/* Whether chain a (ending at set a) serves the point better than chain b; until: 0 for none. */
static int better(const plan *p, const node *a, const node *b, uint64_t until, int by_time)
{
    uint64_t ea = reach(a, by_time), eb = reach(b, by_time);
    int ra = until && ea >= until, rb = until && eb >= until;
    if (ra != rb) return ra;
    if (ea != eb) return ra ? ea < eb : ea > eb;
    const node *ba = &p->n[a->base], *bb = &p->n[b->base];
    if ((ba->kind == K_FULL) != (bb->kind == K_FULL)) return ba->kind == K_FULL;
    if (reach(ba, by_time) != reach(bb, by_time)) return reach(ba, by_time) > reach(bb, by_time);
    if (a->len != b->len) return a->len < b->len;
    return a > b; /* the newer commit */
}

/* The set whose chain serves the point best: a restorable set of db whose base is not past the
 * point. NULL when there is none. */
static const node *pick(const plan *p, const char *db, uint64_t until, int by_time)
{
    const node *best = NULL;
    for (size_t i = 0; i < p->count; i++) {
        const node *x = &p->n[i];
        if (!x->ok || strcmp(x->db, db)) continue;
        if (until && reach(&p->n[x->base], by_time) > until) continue;
        if (!best || better(p, x, best, until, by_time)) best = x;
    }
    return best;
}

/* A set that may hold a newer state than best and cannot be restored: a damaged set file (its
 * database is unknown), then the set of db that reaches furthest past best when best stops short
 * of the point. NULL when nothing stands in the way. */
static const node *blocker(const plan *p, const char *db, const node *best, uint64_t until,
                           int by_time)
{
    for (size_t i = 0; i < p->count; i++)
        if (p->n[i].kind == K_DAMAGED) return &p->n[i];
    uint64_t have = best ? reach(best, by_time) : 0;
    if (best && until && have >= until) return NULL;
    const node *worst = NULL;
    for (size_t i = 0; i < p->count; i++) {
        const node *x = &p->n[i];
        if (x->ok || strcmp(x->db, db)) continue;
        int unknown = !x->ranged || (by_time && !x->t);
        if (!unknown && best && reach(x, by_time) <= have) continue;
        if (!worst || unknown || reach(x, by_time) > reach(worst, by_time)) worst = x;
        if (unknown) break;
    }
    return worst;
}

/* The chain back from x to its base, oldest first. */
static json_t *chain_of(const plan *p, const node *x)
{
    json_t *c = json_array();
    for (size_t k = 0, n = x->len; k < n; k++) {
        json_array_insert(c, 0, x->s);
        if (k + 1 < n) x = &p->n[x->parent];
    }
    return c;
}

/* Refuses the restore for b, naming it and the --set that restores best's point on purpose. */
static int refuse(const node *b, const node *best, const char *db)
{
    char d[120], bd[120], h[300];
    if (best)
        snprintf(h, sizeof h,
                 "the furthest whole chain of database %.40s ends with %s. HINT: --set %.12s "
                 "restores that older point on purpose",
                 db, desc(best, bd, sizeof bd), best->id);
    else
        snprintf(h, sizeof h, "no whole chain of database %.40s starts before the point", db);
    if (b->kind == K_DAMAGED)
        return om_errf(OM_E_RepositoryCorrupt,
                       "set file %.12s is damaged (%.300s): which database and generations it "
                       "holds cannot be known, so it may hold a newer state than this restore "
                       "would give; %s (ombra verify names the damage)",
                       b->id, str(b->s, "damaged"), h);
    return om_errf(b->code,
                   "%s reaches further than any whole chain but cannot be restored: %s; %s",
                   desc(b, d, sizeof d), b->why, h);
}

/* The set a prefix names among db's sets and the damaged ones (their database is unknown). */
static int by_prefix(const plan *p, const char *db, const char *prefix, const node **out)
{
    size_t l = strlen(prefix);
    *out = NULL;
    for (size_t i = 0; l && i < p->count; i++) {
        const node *x = &p->n[i];
        if (strncmp(x->id, prefix, l) || (x->kind != K_DAMAGED && strcmp(x->db, db))) continue;
        if (*out)
            return om_errf(OM_E_InvalidParameter, "set %s is ambiguous: give more of its id",
                           prefix);
        *out = x;
    }
    return *out ? 0 : om_errf(OM_E_SetNotFound, "no backup set %s of this database", prefix);
}

static int named(const plan *p, const char *db, const char *prefix, json_t **chain)
{
    const node *x = NULL;
    char d[120];
    int rc = by_prefix(p, db, prefix, &x);
    if (rc) return rc;
    if (x->ok) {
        *chain = chain_of(p, x);
        return 0;
    }
    if (x->kind == K_DAMAGED)
        return om_errf(x->code,
                       "set file %.12s is damaged (%.300s). HINT: ombra verify names "
                       "the damage",
                       x->id, str(x->s, "damaged"));
    return om_errf(x->code, "%s cannot be restored: %s", desc(x, d, sizeof d), x->why);
}

static int has_sets(const plan *p, const char *db)
{
    for (size_t i = 0; i < p->count; i++)
        if (!strcmp(p->n[i].db, db)) return 1;
    return 0;
}

int bk_chain(json_t *sets, const char *db_id, const bk_point *pt, json_t **out)
{
    *out = NULL;
    plan p;
    int rc = plan_build(sets, &p);
    if (rc) return rc;
    if (pt && pt->set_id)
        rc = named(&p, db_id, pt->set_id, out);
    else {
        int by_time = pt && pt->until_time_ns;
        uint64_t until = by_time ? pt->until_time_ns : pt ? pt->until_gen : 0;
        const node *best = pick(&p, db_id, until, by_time),
                   *b = blocker(&p, db_id, best, until, by_time);
        if (b)
            rc = refuse(b, best, db_id);
        else if (!has_sets(&p, db_id))
            rc = om_errf(OM_E_SetNotFound, "no backup set of database %s in the repository", db_id);
        else if (!best)
            rc = until ? om_errf(OM_E_SetNotFound,
                                 "no full or copy backup of database %s is older than the point",
                                 db_id)
                       : om_errf(OM_E_SetNotFound, "no full or copy backup of database %s", db_id);
        else
            *out = chain_of(&p, best);
    }
    plan_free(&p);
    return rc;
}

static int listed(json_t *ids, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) if (!strcmp(json_string_value(v), id)) return 1;
    return 0;
}

/* The ids from x's base to x, oldest first; for a set that cannot be restored, back to the set
 * where its parents stop being known (a parent that is missing is not listed; a damaged one, one
 * of another database or one seen before in a loop is, and ends it). */
static void known_chain(const plan *p, const node *x, json_t *ids)
{
    for (const node *c = x;;) {
        json_array_insert_new(ids, 0, json_string(c->id));
        if ((c->kind != K_INCR && c->kind != K_DIFF) || c->parent < 0 || strcmp(c->db, x->db))
            return;
        c = &p->n[c->parent];
        if (listed(ids, c->id)) {
            json_array_insert_new(ids, 0, json_string(c->id));
            return;
        }
    }
}

int bk_plan(json_t *sets, json_t **annotated)
{
    *annotated = NULL;
    plan p;
    int rc = plan_build(sets, &p);
    if (rc) return rc;
    json_t *all = json_array();
    for (size_t i = 0; i < p.count; i++) {
        node *x = &p.n[i];
        json_t *o = json_copy(x->s), *ids = json_array();
        known_chain(&p, x, ids);
        json_object_set_new(o, "chain", ids);
        json_object_set_new(o, "restorable", json_boolean(x->ok));
        if (!x->ok) json_object_set_new(o, "why", json_string(x->why));
        json_array_append_new(all, o);
    }
    plan_free(&p);
    *annotated = all;
    return 0;
}

int bk_source_db(json_t *sets, const char *name, const char *store_id, int elsewhere, char id[37])
{
    const char *by_name = NULL, *own = NULL, *damaged = NULL;
    size_t i, ndamaged = 0;
    json_t *s, *mine_bad = NULL;
    json_array_foreach(sets, i, s)
    {
        const char *sid = str(json_object_get(s, "database"), "id");
        if (json_object_get(s, "damaged")) {
            if (!ndamaged++) damaged = str(s, "id");
            /* readable but not what a backup writes: its database is known (for the message) */
            if (!mine_bad && (!strcmp(sid, store_id[0] ? store_id : name) ||
                              !strcmp(str(json_object_get(s, "database"), "name"), name)))
                mine_bad = s;
            continue;
        }
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
    if (mine_bad)
        return om_errf(OM_E_RepositoryCorrupt,
                       "no usable backup set of '%s': set %.12s is damaged (%s). HINT: ombra "
                       "verify --repo names every damage",
                       name, str(mine_bad, "id"), str(mine_bad, "damaged"));
    if (ndamaged)
        return om_errf(OM_E_SetNotFound,
                       "no readable backup set of a database named '%s'%s in the repository, and "
                       "%zu set file%s (set file %.12s%s) cannot be read: which database %s "
                       "cannot be known. HINT: ombra verify names the damage",
                       name, store_id[0] ? "" : " (or with that id)", ndamaged,
                       ndamaged == 1 ? "" : "s", damaged, ndamaged == 1 ? "" : ", ...",
                       ndamaged == 1 ? "it holds" : "they hold");
    return om_errf(OM_E_SetNotFound, "no backup set of a database named '%s'%s in the repository",
                   name, store_id[0] ? "" : " (or with that id)");
}

int bk_restore_via_writer(const char *set_id, const char *saved_cls, const char *scomp,
                          const char *db_id, const char *server, bk_restore_via *v)
{
    memset(v, 0, sizeof *v);
    size_t sl = strlen(scomp), il = strlen(db_id);
    const char *bs = strchr(scomp, '\\');
    if (!il || sl <= il + 1 || strcmp(scomp + sl - il, db_id) || scomp[sl - il - 1] != '\\' ||
        !bs || bs >= scomp + sl - il - 1 || sl >= sizeof v->saved_lp || strlen(server) > 255)
        return om_errf(OM_E_RepositoryCorrupt,
                       "set %.12s names component '%.300s' for database %s, not "
                       "<root>\\<server>\\%s",
                       set_id, scomp, db_id, db_id);
    v->replica = !strcmp(saved_cls, BK_REPLICA_WRITER_CLASS);
    snprintf(v->cls, sizeof v->cls, "%s", v->replica ? BK_STORE_WRITER_CLASS : saved_cls);
    snprintf(v->saved_lp, sizeof v->saved_lp, "%.*s", (int)(sl - il - 1), scomp);
    if (v->replica)
        snprintf(v->lp, sizeof v->lp, "%s\\%s", BK_STORE_WRITER_ROOT, server);
    else
        snprintf(v->lp, sizeof v->lp, "%.*s\\%s", (int)(bs - scomp), scomp, server);
    snprintf(v->comp, sizeof v->comp, "%s\\%s", v->lp, db_id);
    return 0;
}

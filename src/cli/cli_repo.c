/* ombra repo, backups, verify, expire: the backup repository from the command line
 * (backup/repo.h does the work; no daemon is involved). An encrypted repository's passphrase
 * comes from --passphrase-file F or OMBRA_REPO_PASSPHRASE, never from an argument: it would
 * show in ps and in the shell's history. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/chain.h"
#include "backup/repo.h"
#include "backup/retention.h"
#include "backup/stats.h"
#include "base/config.h"
#include "base/error.h"
#include "base/progress.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"

/* The repository's path as the command resolved it (cli_repo_path), for messages. */
static char *repo_shown;

/* Opens the repository the command names (cli_repo_path) with the passphrase, if any. CLI_OK,
 * or the printed error's status. */
static int open_repo(const cli_args *a, bk_repo **r)
{
    char buf[1024];
    const char *pass = NULL, *name;
    free(repo_shown);
    int st = cli_repo_path(a, &repo_shown, &name);
    if (st) return st;
    int rc = cli_repo_passphrase(a, buf, sizeof buf, &pass);
    if (!rc) rc = bk_repo_open(repo_shown, pass, r);
    memset(buf, 0, sizeof buf);
    return rc ? cli_fail(rc) : CLI_OK;
}

/* A repository's or a set's own format version is "format_version" in what is printed: the
 * top-level "version" of every document is the ombra that printed it (docs/cli.md). */
static json_t *format_version(json_t *o)
{
    json_t *v = json_object_get(o, "version");
    if (v) {
        json_object_set(o, "format_version", v);
        json_object_del(o, "version");
    }
    return o;
}

static int print_owned(json_t *o)
{
    int rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

/* The instant the set restores to (its freeze), as ombra prints every time: UTC with its 'Z', to
 * the millisecond, truncated, so that pasted into restore --until-time it covers the set
 * (base/time.h). Older sets without a freeze time: their "time" (already ISO 8601 UTC). */
static const char *set_time(json_t *s, char *buf, size_t len)
{
    uint64_t mark = (uint64_t)om_json_int_or(s, "mark_time_ns", 0);
    const char *t = om_json_str_or(s, "time", NULL);
    if (mark || !t)
        return om_time_str(mark ? mark : (uint64_t)om_json_int_or(s, "committed_ns", 0), buf, len);
    snprintf(buf, len, "%s", t);
    return buf;
}

/* The databases a set names: "mail1" or "mail1,mail2". */
static const char *set_dbs(json_t *s, char *buf, size_t len)
{
    json_t *all = json_array(), *one = json_object_get(s, "database");
    if (one) json_array_append(all, one);
    if (json_is_array(json_object_get(s, "databases")))
        json_array_extend(all, json_object_get(s, "databases"));
    size_t i, used = 0;
    json_t *d;
    buf[0] = 0;
    json_array_foreach(all, i, d)
    {
        const char *n = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
        if (!*n) n = om_json_str_or(d, "id", "?");
        int w = snprintf(buf + used, len - used, "%s%s", used ? "," : "", n);
        if (w < 0 || (size_t)w >= len - used) break;
        used += (size_t)w;
    }
    json_decref(all);
    if (!buf[0]) snprintf(buf, len, "-");
    return buf;
}

static const char *set_logs(json_t *s, char *buf, size_t len)
{
    json_t *lr = json_object_get(s, "log_range");
    if (json_is_array(lr) && json_array_size(lr) == 2)
        snprintf(buf, len, "%lld-%lld", (long long)json_integer_value(json_array_get(lr, 0)),
                 (long long)json_integer_value(json_array_get(lr, 1)));
    else
        snprintf(buf, len, "-");
    return buf;
}

/* The --db values, each possibly a comma-separated list, into a NULL-terminated array
 * (malloc'd, with the copies of the names after it). NULL when out of memory. */
static char **db_names(const cli_args *a, size_t *n)
{
    const char *const *v = NULL;
    int nv = cli_list(a, "db", &v);
    size_t bytes = 0, cap = 1;
    for (int i = 0; i < nv; i++) {
        bytes += strlen(v[i]) + 1;
        for (const char *c = v[i]; *c; c++)
            cap += *c == ',';
        cap++;
    }
    char **out = calloc(1, cap * sizeof *out + bytes + 1);
    if (!out) return NULL;
    char *store = (char *)(out + cap);
    *n = 0;
    for (int i = 0; i < nv; i++) {
        strcpy(store, v[i]);
        for (char *save = NULL, *t = strtok_r(store, ",", &save); t; t = strtok_r(NULL, ",", &save))
            out[(*n)++] = t;
        store += strlen(v[i]) + 1;
    }
    return out;
}

/* ---- repo init ---- */

static int cmd_init(const cli_args *a)
{
    bk_init_opts o = {.encrypt = cli_flag(a, "encrypt")};
    uint64_t v;
    int rc;
    if (cli_val(a, "block-size")) {
        if ((rc = cli_number(a, "--block-size", cli_val(a, "block-size"), 4096, 64u << 20, 1, &v)))
            return rc;
        if (v & (v - 1))
            return cli_usage(a, "--block-size must be a power of two, not '%s'",
                             cli_val(a, "block-size"));
        o.block_size = (uint32_t)v;
    }
    if (cli_val(a, "zstd-level")) {
        if ((rc = cli_number(a, "--zstd-level", cli_val(a, "zstd-level"), 1, 19, 0, &v))) return rc;
        o.zstd_level = (int)v;
    }
    if (cli_val(a, "pack-size")) {
        if ((rc = cli_number(a, "--pack-size", cli_val(a, "pack-size"), 64 << 10, 1u << 30, 1, &v)))
            return rc;
        o.pack_size = (uint32_t)v;
    }
    /* NAME|PATH: a repository of the configuration (its path and passphrase-file), or a path;
     * none: the default repository. */
    const char *w = a->npos ? a->pos[0] : cli_repo_default();
    if (!w) return cli_usage(a, "missing NAME|PATH (no default repository in the configuration)");
    char section[300];
    snprintf(section, sizeof section, "repo:%s", w);
    const char *path = !strchr(w, '/') && om_conf(section, "path") ? om_conf(section, "path") : w;
    cli_repo_choose(w);
    char buf[1024];
    const char *pass = NULL;
    if ((rc = cli_repo_passphrase(a, buf, sizeof buf, &pass))) return cli_fail(rc);
    if (o.encrypt && !pass)
        return cli_usage(a, "--encrypt needs a passphrase: --passphrase-file F, "
                            "OMBRA_REPO_PASSPHRASE or the repository's passphrase-file in the "
                            "configuration");
    if (!o.encrypt && cli_val(a, "passphrase-file"))
        return cli_usage(a, "--passphrase-file is for an encrypted repository: add --encrypt");
    if (!o.encrypt && path != w && om_conf(section, "passphrase-file"))
        return cli_usage(a,
                         "[repo:%s] has a passphrase-file: add --encrypt (or take the "
                         "passphrase-file out of the configuration)",
                         w);
    o.passphrase = o.encrypt ? pass : NULL;
    rc = bk_repo_init(path, &o);
    bk_repo *r = NULL;
    if (!rc) rc = bk_repo_open(path, o.passphrase, &r);
    memset(buf, 0, sizeof buf);
    if (rc) return cli_fail(rc);
    json_t *info = bk_repo_info(r);
    bk_repo_close(r);
    if (cli_flag(a, "json")) return print_owned(format_version(info));
    json_t *enc = json_object_get(info, "encryption");
    printf("initialised the backup repository %s\n", path);
    printf("  id:          %s\n", om_json_str_or(info, "id", "?"));
    int64_t bs = om_json_int_or(info, "block_size", 0);
    char hb[32];
    /* SI as every size shown (docs/cli.md), and the binary form --block-size reads. */
    printf("  block size:  %s (%lld bytes, %lld%s)\n", cli_human_bytes((uint64_t)bs, hb, sizeof hb),
           (long long)bs, (long long)(bs % (1 << 20) ? bs >> 10 : bs >> 20),
           bs % (1 << 20) ? "K" : "M");
    printf("  compression: zstd level %lld\n",
           (long long)om_json_int_or(json_object_get(info, "compression"), "level", 0));
    printf("  encryption:  %s\n",
           json_is_object(enc) ? "AES-256-GCM, key wrapped under the passphrase (scrypt)" : "none");
    json_decref(info);
    return CLI_OK;
}

/* ---- repo stats ---- */

static int cmd_stats(const cli_args *a)
{
    bk_repo *r = NULL;
    json_t *st = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    int err = bk_repo_stats(r, &st);
    bk_repo_close(r);
    if (err) return cli_fail(err);
    if (cli_flag(a, "json")) return print_owned(st);
    char b1[24], b2[24];
    json_t *ratio = json_object_get(st, "ratio");
    printf("sets:     %lld in %lld chains (%lld not restorable, %lld damaged set files)\n",
           (long long)om_json_int_or(st, "sets", 0), (long long)om_json_int_or(st, "chains", 0),
           (long long)om_json_int_or(st, "not_restorable", 0),
           (long long)om_json_int_or(st, "damaged", 0));
    printf("logical:  %s (the sets' files)\n",
           cli_human_bytes((uint64_t)om_json_int_or(st, "bytes", 0), b1, sizeof b1));
    printf("stored:   %s in %lld pack files\n",
           cli_human_bytes((uint64_t)om_json_int_or(st, "bytes_on_disk", 0), b1, sizeof b1),
           (long long)om_json_int_or(st, "packs", 0));
    /* the four parts of stored (backup/stats.h): they add up to it */
    printf("  used:          %s (blocks the sets use, each once: the databases' STORED below)\n",
           cli_human_bytes((uint64_t)om_json_int_or(st, "bytes_used", 0), b1, sizeof b1));
    printf("  unreferenced:  %s in %lld blocks no set uses (expire frees them)\n",
           cli_human_bytes((uint64_t)om_json_int_or(st, "bytes_unreferenced", 0), b1, sizeof b1),
           (long long)om_json_int_or(st, "blocks_unreferenced", 0));
    int64_t over = om_json_int_or(st, "bytes_pack_overhead", 0);
    printf("  pack overhead: %s%s (pack headers, second copies of a block)\n", over < 0 ? "-" : "",
           cli_human_bytes((uint64_t)(over < 0 ? -over : over), b1, sizeof b1));
    printf("  not indexed:   %s (leftovers of killed writers: expire removes them; packs being "
           "written)\n",
           cli_human_bytes((uint64_t)om_json_int_or(st, "bytes_not_indexed", 0), b1, sizeof b1));
    if (om_json_int_or(st, "blocks_missing", 0))
        printf("MISSING:  %lld blocks the sets use are in no pack (ombra verify --repo names "
               "them)\n",
               (long long)om_json_int_or(st, "blocks_missing", 0));
    if (json_is_number(ratio))
        printf("ratio:    %.2fx (deduplication and compression)\n", json_number_value(ratio));
    json_t *dbs = json_object_get(st, "databases"), *d;
    size_t i, wn = 8;
    json_array_foreach(dbs, i, d)
    {
        size_t l = strlen(om_json_str_or(json_object_get(d, "database"), "name", ""));
        if (l > wn) wn = l;
    }
    if (json_array_size(dbs))
        printf("\n%-*s  %5s  %5s  %6s  %-24s  %10s  %10s  %10s\n", (int)wn, "DATABASE", "SETS",
               "FULLS", "CHAINS", "NEWEST", "LOGICAL", "STORED", "REFERENCED");
    json_array_foreach(dbs, i, d)
    {
        char b3[24];
        printf("%-*s  %5lld  %5lld  %6lld  %-24s  %10s  %10s  %10s\n", (int)wn,
               om_json_str_or(json_object_get(d, "database"), "name", "?"),
               (long long)om_json_int_or(d, "sets", 0), (long long)om_json_int_or(d, "fulls", 0),
               (long long)om_json_int_or(d, "chains", 0), om_json_str_or(d, "newest", "-"),
               cli_human_bytes((uint64_t)om_json_int_or(d, "bytes", 0), b1, sizeof b1),
               cli_human_bytes((uint64_t)om_json_int_or(d, "bytes_stored", 0), b2, sizeof b2),
               cli_human_bytes((uint64_t)om_json_int_or(d, "bytes_referenced", 0), b3, sizeof b3));
    }
    json_decref(st);
    return CLI_OK;
}

/* ---- backups list / show ---- */

#define NCOLS 10
static const char *const col_head[NCOLS] = {"ID",   "TYPE", "TIME", "SERVER", "DATABASE",
                                            "LOGS", "SIZE", "NEW",  "PARENT", "CHAIN"};

static void put_row(const char *const *cell, const int *width)
{
    for (int c = 0; c < NCOLS - 1; c++)
        printf("%-*s  ", width[c], cell[c]);
    printf("%s\n", cell[NCOLS - 1]);
}

typedef struct row {
    char id[13], time[40], dbs[200], logs[40], size[24], fresh[24], parent[13], chain[600];
    const char *cell[NCOLS];
} row;

/* Whether a restore can use the set, and its chain (bk_plan's "restorable", "why", "chain"). */
static const char *set_chain(json_t *s, char *buf, size_t len)
{
    json_t *chain = json_object_get(s, "chain");
    size_t n = json_array_size(chain);
    if (!json_is_true(json_object_get(s, "restorable")))
        snprintf(buf, len, "NOT RESTORABLE: %s", om_json_str_or(s, "why", "?"));
    else if (n <= 1)
        snprintf(buf, len, "RESTORABLE: %s alone", om_json_str_or(s, "type", "?"));
    else
        snprintf(buf, len, "RESTORABLE: base %.12s, %zu sets",
                 json_string_value(json_array_get(chain, 0)), n);
    return buf;
}

static void row_cells(json_t *s, row *r)
{
    snprintf(r->id, sizeof r->id, "%.12s", om_json_str_or(s, "id", "?"));
    const char *p = om_json_str_or(s, "parent", NULL);
    snprintf(r->parent, sizeof r->parent, "%.12s", p && *p ? p : "-");
    r->cell[0] = r->id;
    r->cell[1] = om_json_str_or(s, "type", "?");
    r->cell[2] = set_time(s, r->time, sizeof r->time);
    r->cell[3] = om_json_str_or(s, "server", "-");
    r->cell[4] = set_dbs(s, r->dbs, sizeof r->dbs);
    r->cell[5] = set_logs(s, r->logs, sizeof r->logs);
    r->cell[6] = cli_human_bytes((uint64_t)om_json_int_or(s, "bytes", 0), r->size, sizeof r->size);
    r->cell[7] =
        cli_human_bytes((uint64_t)om_json_int_or(s, "bytes_stored", 0), r->fresh, sizeof r->fresh);
    r->cell[8] = r->parent;
    r->cell[9] = set_chain(s, r->chain, sizeof r->chain);
}

/* Whether one of the set's databases is one of names (by name or id). */
static int of_databases(json_t *s, char *const *names, size_t n)
{
    json_t *all = json_array(), *one = json_object_get(s, "database"), *d;
    if (one) json_array_append(all, one);
    if (json_is_array(json_object_get(s, "databases")))
        json_array_extend(all, json_object_get(s, "databases"));
    size_t i;
    int found = 0;
    json_array_foreach(all, i, d)
    {
        const char *name = json_is_string(d) ? json_string_value(d) : om_json_str_or(d, "name", "");
        const char *id = json_is_string(d) ? "" : om_json_str_or(d, "id", "");
        for (size_t k = 0; k < n && !found; k++)
            found = (*name && !strcmp(names[k], name)) || (*id && !strcmp(names[k], id));
    }
    json_decref(all);
    return found;
}

/* A --db name no set has: a note on stderr with the databases that have sets (a typo must not
 * pass for "nothing there", though the list is still right to be empty). */
static void note_unknown_dbs(json_t *sets, char *const *dbs, size_t ndb)
{
    for (size_t k = 0; k < ndb; k++) {
        size_t i;
        json_t *s;
        int found = 0;
        json_array_foreach(sets, i, s) found |= of_databases(s, &dbs[k], 1);
        if (found) continue;
        json_t *seen = json_object();
        char have[400] = "", one[400];
        size_t used = 0;
        json_array_foreach(sets, i, s)
        {
            if (json_object_get(s, "damaged")) continue;
            char *save = NULL;
            set_dbs(s, one, sizeof one);
            for (char *t = strtok_r(one, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "-") || json_object_get(seen, t)) continue;
                json_object_set_new(seen, t, json_true());
                int w = snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "", t);
                if (w < 0 || (size_t)w >= sizeof have - used) break;
                used += (size_t)w;
            }
        }
        json_decref(seen);
        fprintf(stderr, "ombra: note: no backup sets of database '%s' (%s%s)\n", dbs[k],
                used ? "databases with sets: " : "the repository has no sets", used ? have : "");
    }
}

/* backups list's --db, --type and --last over the annotated sets (oldest first): a new array.
 * A damaged set file is always listed (its database and type are unknown) and not counted in
 * --last. CLI_OK or CLI_USAGE (printed). */
static int filter_sets(const cli_args *a, json_t *sets, json_t **out)
{
    static const char *const types[] = {"full", "incremental", "differential", "copy"};
    const char *type = cli_val(a, "type");
    uint64_t last = 0;
    int rc = CLI_OK;
    *out = NULL;
    if (type) {
        size_t k = 0;
        while (k < 4 && strcmp(type, types[k]))
            k++;
        if (k == 4)
            return cli_usage(a, "--type is full, incremental, differential or copy, not '%s'",
                             type);
    }
    if (cli_val(a, "last") &&
        (rc = cli_number(a, "--last", cli_val(a, "last"), 1, 1000000000, 0, &last)))
        return rc;
    size_t ndb = 0;
    char **dbs = db_names(a, &ndb);
    if (!dbs) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    json_t *match = json_array(), *s;
    size_t i, n = 0;
    json_array_foreach(sets, i, s)
    {
        int ok = json_object_get(s, "damaged") ||
                 ((!ndb || of_databases(s, dbs, ndb)) &&
                  (!type || !strcmp(om_json_str_or(s, "type", ""), type)));
        json_array_append_new(match, json_boolean(ok));
        n += ok && !json_object_get(s, "damaged");
    }
    /* --last: skip the older matches */
    size_t skip = last && n > last ? n - (size_t)last : 0;
    *out = json_array();
    json_array_foreach(sets, i, s)
    {
        if (!json_is_true(json_array_get(match, i))) continue;
        if (!json_object_get(s, "damaged") && skip) {
            skip--;
            continue;
        }
        json_array_append(*out, s);
    }
    json_decref(match);
    note_unknown_dbs(sets, dbs, ndb);
    free(dbs);
    return CLI_OK;
}

static int cmd_list(const cli_args *a)
{
    bk_repo *r = NULL;
    json_t *summaries = NULL, *all = NULL, *sets = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    int err = bk_sets(r, &summaries);
    bk_repo_close(r);
    if (!err) err = bk_plan(summaries, &all);
    json_decref(summaries);
    if (err) return cli_fail(err);
    rc = filter_sets(a, all, &sets);
    int filtered = json_array_size(sets) != json_array_size(all);
    json_decref(all);
    if (rc) return rc;
    if (cli_flag(a, "json")) { /* an object, as every document */
        rc = cli_print_json_list("sets", sets);
        json_decref(sets);
        return rc;
    }
    if (!json_array_size(sets)) {
        printf("no backup sets in %s%s\n", repo_shown,
               filtered ? " match --db, --type and --last" : "");
        json_decref(sets);
        return CLI_OK;
    }
    int width[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        width[c] = (int)strlen(col_head[c]);
    size_t i;
    json_t *s;
    row rw;
    json_array_foreach(sets, i, s)
    {
        if (json_object_get(s, "damaged")) continue;
        row_cells(s, &rw);
        for (int c = 0; c < NCOLS; c++)
            if ((int)strlen(rw.cell[c]) > width[c]) width[c] = (int)strlen(rw.cell[c]);
    }
    put_row(col_head, width);
    json_array_foreach(sets, i, s)
    {
        if (json_object_get(s, "damaged")) {
            printf("%-*.12s  DAMAGED: %s\n", width[0], om_json_str_or(s, "id", "?"),
                   om_json_str_or(s, "damaged", ""));
            continue;
        }
        row_cells(s, &rw);
        put_row(rw.cell, width);
    }
    json_decref(sets);
    return CLI_OK;
}

static void put_files(json_t *files)
{
    size_t i, wn = 4;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        size_t l = strlen(om_json_str_or(f, "name", ""));
        if (l > wn) wn = l;
    }
    printf("files:\n  %-*s  %14s  %7s  %s\n", (int)wn, "NAME", "SIZE", "BLOCKS", "SHA-256");
    json_array_foreach(files, i, f)
    {
        printf("  %-*s  %14lld  %7zu  %s\n", (int)wn, om_json_str_or(f, "name", "?"),
               (long long)om_json_int_or(f, "size", 0),
               strlen(om_json_str_or(f, "blocks", "")) / 64,
               om_json_str_or(f, "sha256", om_json_str_or(f, "regions_sha256", "?")));
        json_t *m = json_object_get(f, "meta");
        if (json_object_get(m, "reused_from")) /* a synthetic full's .edb (docs/design.md) */
            printf("  %-*s  pages checked now %lld, reused from set %.12s %lld (regions of "
                   "slices: SHA-256 over the region ids)\n",
                   (int)wn, "", (long long)om_json_int_or(m, "pages_checked_now", 0),
                   om_json_str_or(m, "reused_from", "?"),
                   (long long)om_json_int_or(m, "pages_reused", 0));
    }
}

/* The set's "restorable", "why" and "chain", as backups list gives them (the plan needs every
 * set's summary). */
static int add_chain(bk_repo *r, json_t *set)
{
    json_t *sums = NULL, *plan = NULL, *x;
    int rc = bk_sets(r, &sums);
    if (!rc) rc = bk_plan(sums, &plan);
    const char *id = om_json_str_or(set, "id", "?");
    size_t i;
    json_array_foreach(plan, i, x)
    {
        if (strcmp(om_json_str_or(x, "id", ""), id)) continue;
        const char *k[] = {"restorable", "why", "chain"};
        for (size_t j = 0; j < 3; j++)
            if (json_object_get(x, k[j])) json_object_set(set, k[j], json_object_get(x, k[j]));
    }
    json_decref(sums);
    json_decref(plan);
    return rc;
}

static int cmd_show(const cli_args *a)
{
    bk_repo *r = NULL;
    json_t *s = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    int err = bk_set_load(r, a->pos[0], &s);
    if (!err) err = add_chain(r, s);
    bk_repo_close(r);
    if (err) {
        json_decref(s);
        return cli_fail(err);
    }
    if (cli_flag(a, "json")) return print_owned(format_version(s));
    char b1[200], b2[40], b3[24], b4[600];
    json_t *db = json_object_get(s, "database");
    const char *parent = om_json_str_or(s, "parent", NULL);
    printf("set:        %s\n", om_json_str_or(s, "id", "?"));
    printf("type:       %s\n", om_json_str_or(s, "type", "?"));
    printf("time:       %s\n", set_time(s, b2, sizeof b2));
    printf("committed:  %s\n",
           om_time_iso((uint64_t)om_json_int_or(s, "committed_ns", 0), b2, sizeof b2));
    printf("server:     %s\n", om_json_str_or(s, "server", "-"));
    printf("database:   %s", set_dbs(s, b1, sizeof b1));
    if (json_is_object(db) && *om_json_str_or(db, "id", ""))
        printf(" (%s)", om_json_str_or(db, "id", ""));
    printf("\nlog range:  %s\n", set_logs(s, b1, sizeof b1));
    printf("parent:     %s\n", parent && *parent ? parent : "none");
    printf("chain:      %s\n", set_chain(s, b4, sizeof b4));
    printf("size:       %s in %zu files",
           cli_human_bytes((uint64_t)om_json_int_or(s, "bytes", 0), b3, sizeof b3),
           json_array_size(json_object_get(s, "files")));
    printf(" (new in the repository: %s; %lld blocks new, %lld reused)\n",
           cli_human_bytes((uint64_t)om_json_int_or(s, "bytes_stored", 0), b3, sizeof b3),
           (long long)om_json_int_or(s, "blocks_new", 0),
           (long long)om_json_int_or(s, "blocks_reused", 0));
    json_t *cm = json_object_get(s, "changemap");
    if (json_is_true(json_object_get(cm, "read_all")))
        printf("pages:      every page read and checked (%s)\n", om_json_str_or(cm, "reason", "?"));
    else if (cm)
        printf("pages:      synthetic full: %lld read and checked now, %lld reused from set %s\n",
               (long long)om_json_int_or(cm, "pages_checked_now", 0),
               (long long)om_json_int_or(cm, "pages_reused", 0),
               om_json_str_or(cm, "reused_from", "?"));
    put_files(json_object_get(s, "files"));
    json_decref(s);
    return CLI_OK;
}

/* ---- verify ---- */

typedef struct vstate {
    int json, bar;
    json_t *damage;
    json_t *hit; /* the sets in which a block failed (id -> true) */
    om_progress pg;
    int started;
} vstate;

static void on_progress(void *arg, const char *what, uint64_t done, uint64_t total)
{
    vstate *v = arg;
    if (!v->bar) return;
    if (!v->started) {
        om_progress_start(&v->pg, what, total, !strcmp(what, "verify") ? "blocks" : "packs");
        v->started = 1;
    }
    v->pg.total = total;
    om_progress_update(&v->pg, done);
}

static void end_progress(vstate *v)
{
    if (v->started) om_progress_end(&v->pg);
    v->started = 0;
}

static void on_damage(void *arg, const bk_damage *d)
{
    vstate *v = arg;
    json_array_append_new(v->damage,
                          json_pack("{s:s?, s:s?, s:s?, s:s?, s:I, s:s}", "set_id", d->set, "file",
                                    d->file, "block", d->block, "pack", d->pack, "offset",
                                    (json_int_t)d->offset, "what", d->what ? d->what : "?"));
    if (d->marked)
        json_object_set_new(json_array_get(v->damage, json_array_size(v->damage) - 1),
                            "listed_damaged", json_true());
    if (d->set && d->block) json_object_set_new(v->hit, d->set, json_true());
    if (v->json) return;
    end_progress(v); /* the line goes above the bar */
    printf("damaged:");
    if (d->set) printf(" set %s", d->set);
    if (d->file) printf(" file %s", d->file);
    if (d->block) printf(" block %s", d->block);
    if (d->pack) printf(" (pack %s, offset %llu)", d->pack, (unsigned long long)d->offset);
    printf(": %s\n", d->what ? d->what : "?");
    fflush(stdout);
}

/* What verify listed as damaged (damaged.json) and what to do: {"blocks": the copies waiting
 * for a fresh one, "databases": the names of the databases whose sets had a block fail,
 * "hint"}, or NULL when nothing waits. */
static json_t *damaged_summary(bk_repo *r, json_t *hit)
{
    json_t *dl = NULL, *sums = NULL, *waiting = json_array(), *dbs = json_array(), *e;
    size_t i;
    if (bk_damaged_list(r, &dl) || bk_sets(r, &sums)) om_err_clear();
    json_array_foreach(json_object_get(dl, "blocks"), i, e)
    {
        if (json_is_true(json_object_get(e, "good_copy"))) continue;
        json_object_del(e, "good_copy");
        json_array_append(waiting, e);
    }
    json_array_foreach(sums, i, e)
    {
        const char *name = om_json_str_or(json_object_get(e, "database"), "name", NULL);
        size_t k;
        json_t *n;
        int have = 0;
        if (!name || !json_object_get(hit, om_json_str_or(e, "id", ""))) continue;
        json_array_foreach(dbs, k, n) have |= !strcmp(json_string_value(n), name);
        if (!have) json_array_append_new(dbs, json_string(name));
    }
    json_decref(dl);
    json_decref(sums);
    if (!json_array_size(waiting)) {
        json_decref(waiting);
        json_decref(dbs);
        return NULL;
    }
    char names[600] = "", hint[1000];
    json_array_foreach(dbs, i, e)
    {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", json_string_value(e));
    }
    snprintf(hint, sizeof hint,
             "the next full backup of %s%s stores again the blocks it still holds, and the sets "
             "that name them (older ones too) can be restored again (ombra backup --type full "
             "DB; then ombra verify); a block only a removed database or logs no longer on disk "
             "held stays damaged, and verify keeps naming it",
             json_array_size(dbs) ? "database " : "each database whose sets are named above",
             names);
    return json_pack("{s:o, s:o, s:s}", "blocks", waiting, "databases", dbs, "hint", hint);
}

static int cmd_verify(const cli_args *a)
{
    bk_repo *r = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    vstate v = {.json = cli_flag(a, "json"), .damage = json_array(), .hit = json_object()};
    v.bar = !v.json && isatty(2);
    bk_repo_set_progress(r, on_progress, &v);
    uint64_t checked = 0;
    const char *set = a->npos ? a->pos[0] : NULL;
    int err = bk_verify(r, set, on_damage, &v, &checked);
    end_progress(&v);
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", err ? om_err_detail() : "");
    json_t *listed = err == OM_E_RepositoryCorrupt ? damaged_summary(r, v.hit) : NULL;
    json_decref(v.hit);
    bk_repo_close(r);
    if (err && err != OM_E_RepositoryCorrupt) {
        om_errf(err, "%s", detail);
        json_decref(v.damage);
        return cli_fail(err);
    }
    if (v.json)
        rc = print_owned(json_pack("{s:b, s:s?, s:I, s:o, s:o?}", "ok", !err, "set_id", set,
                                   "blocks_checked", (json_int_t)checked, "damage", v.damage,
                                   "listed_damaged", listed));
    else {
        json_decref(v.damage);
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(listed, "blocks"), i, e)
            printf("listed as damaged in %s/damaged.json: block %s (pack %s, offset %lld), found "
                   "by %s %s\n",
                   repo_shown, om_json_str_or(e, "block", "?"), om_json_str_or(e, "pack", "?"),
                   (long long)om_json_int_or(e, "offset", 0), om_json_str_or(e, "by", "?"),
                   om_json_str_or(e, "found", "?"));
        if (listed)
            printf("%zu damaged block%s wait%s for a fresh copy. HINT: %s\n",
                   json_array_size(json_object_get(listed, "blocks")),
                   json_array_size(json_object_get(listed, "blocks")) == 1 ? "" : "s",
                   json_array_size(json_object_get(listed, "blocks")) == 1 ? "s" : "",
                   om_json_str_or(listed, "hint", ""));
        json_decref(listed);
        if (!err)
            printf("%s: %s verified, %llu block reads, no damage\n", repo_shown,
                   set ? "the set" : "every set", (unsigned long long)checked);
    }
    if (err) {
        om_errf(err,
                "%s. HINT: the lines above (or the JSON) name each damaged set, file and "
                "block",
                detail);
        return cli_fail(err);
    }
    return rc;
}

/* ---- expire ---- */

/* The policy from the --keep-* options: CLI_OK, or CLI_USAGE (printed). */
static int expire_policy(const cli_args *a, bk_policy *p)
{
    static const char *const names[] = {"keep-full",   "keep-last",    "keep-daily",
                                        "keep-weekly", "keep-monthly", "keep-yearly"};
    unsigned *field[] = {&p->keep_full,   &p->keep_last,    &p->keep_daily,
                         &p->keep_weekly, &p->keep_monthly, &p->keep_yearly};
    /* No rule on the command line: the repository's keep-* in the configuration, whole (the
     * command line replaces the file's policy, never adds to it). */
    int given = cli_val(a, "keep-within") != NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        given |= cli_val(a, names[i]) != NULL;
    const char *conf_repo = given ? NULL : cli_repo_name(a);
    char section[300];
    snprintf(section, sizeof section, "repo:%s", conf_repo ? conf_repo : "");
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = conf_repo ? om_conf(section, names[i]) : cli_val(a, names[i]);
        char what[40];
        uint64_t n = 0;
        snprintf(what, sizeof what, "--%s", names[i]);
        int rc = v ? cli_number(a, what, v, 1, 100000, 0, &n) : CLI_OK;
        if (rc) return rc;
        *field[i] = (unsigned)n;
    }
    p->keep_within = conf_repo ? om_conf(section, "keep-within") : cli_val(a, "keep-within");
    bk_duration d;
    if (p->keep_within && bk_duration_parse(p->keep_within, &d)) {
        char msg[400];
        snprintf(msg, sizeof msg, "--keep-within: %s", om_err_detail());
        om_err_clear();
        return cli_usage(a, "%s", msg);
    }
    if (bk_policy_check(p)) {
        om_err_clear();
        return cli_usage(a,
                         "give at least one rule: --keep-last, --keep-daily, --keep-weekly, "
                         "--keep-monthly, --keep-yearly, --keep-within or --keep-full, or keep-* "
                         "settings in the repository's [repo:NAME] (expire never deletes every "
                         "backup)");
    }
    return CLI_OK;
}

static const char *joined(json_t *a, char *buf, size_t len)
{
    size_t i, used = 0;
    json_t *v;
    buf[0] = 0;
    json_array_foreach(a, i, v)
    {
        int w = snprintf(buf + used, len - used, "%s%s", i ? "; " : "", json_string_value(v));
        if (w < 0 || (size_t)w >= len - used) break;
        used += (size_t)w;
    }
    return buf;
}

/* One line per set of the plan, newest first: what happens to it and why. */
static void print_plan(json_t *rep, int dry)
{
    json_t *all = json_array(), *e;
    json_array_extend(all, json_object_get(rep, "removed"));
    json_array_extend(all, json_object_get(rep, "kept"));
    size_t i, nrm = json_array_size(json_object_get(rep, "removed")), wd = 8;
    char dbs[200], why[1000];
    json_array_foreach(all, i, e)
    {
        size_t l = strlen(set_dbs(e, dbs, sizeof dbs));
        if (l > wd) wd = l;
    }
    json_array_foreach(all, i, e)
    {
        const char *verb = i < nrm ? (dry ? "remove" : "removed") : (dry ? "keep" : "kept");
        printf("%-7s  %.12s  %-12s  %-24s  %-*s  %s\n", verb, om_json_str_or(e, "id", "?"),
               om_json_str_or(e, "type", "?"), om_json_str_or(e, "time", "?"), (int)wd,
               set_dbs(e, dbs, sizeof dbs), joined(json_object_get(e, "reasons"), why, sizeof why));
    }
    json_decref(all);
}

static int cmd_expire(const cli_args *a)
{
    bk_policy pol = {0};
    int rc = expire_policy(a, &pol);
    if (rc) return rc;
    char **dbs = db_names(a, &pol.ndbs);
    if (!dbs) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    pol.dbs = (const char *const *)dbs;
    int dry = cli_flag(a, "dry-run");
    bk_repo *r = NULL;
    if ((rc = open_repo(a, &r))) {
        free(dbs);
        return rc;
    }
    vstate v = {.json = cli_flag(a, "json")};
    v.bar = !v.json && !dry && isatty(2);
    bk_repo_set_progress(r, on_progress, &v);
    json_t *rep = NULL;
    int err = bk_expire_policy(r, &pol, 1, dry, &rep);
    end_progress(&v);
    bk_repo_close(r);
    free(dbs);
    if (err) return cli_fail(err);
    if (v.json) return print_owned(rep);
    print_plan(rep, dry);
    if (dry) {
        printf("dry run: expire would remove %zu sets and keep %zu; nothing was changed\n",
               json_array_size(json_object_get(rep, "removed")),
               json_array_size(json_object_get(rep, "kept")));
        json_decref(rep);
        return CLI_OK;
    }
    json_t *del = json_object_get(rep, "sets_deleted");
    char b[24];
    printf("kept %lld sets, deleted %zu", (long long)om_json_int_or(rep, "sets_kept", 0),
           json_array_size(del));
    size_t i;
    json_t *id;
    json_array_foreach(del, i, id) printf("%s%.12s", i ? ", " : " (", json_string_value(id));
    printf("%s\n", json_array_size(del) ? ")" : "");
    printf("packs: %lld deleted, %lld rewritten (%lld small ones merged); %lld leftovers of "
           "interrupted backups removed; %s freed\n",
           (long long)om_json_int_or(rep, "packs_deleted", 0),
           (long long)om_json_int_or(rep, "packs_rewritten", 0),
           (long long)om_json_int_or(rep, "packs_merged", 0),
           (long long)om_json_int_or(rep, "leftovers_removed", 0),
           cli_human_bytes((uint64_t)om_json_int_or(rep, "bytes_freed", 0), b, sizeof b));
    json_decref(rep);
    return CLI_OK;
}

/* ---- the tables ---- */

static const cli_opt init_opts[] = {
    {"encrypt", NULL, "encrypt blocks and sets (AES-256-GCM); needs a passphrase", 0},
    {"block-size", "BYTES", "block size, a power of two (default 1M; K, M suffixes)", 0},
    {"zstd-level", "N", "zstd compression level, 1-19 (default 3)", 0},
    {"pack-size", "BYTES", "how much a pack file holds before a new one starts (default 32M)", 0},
    CLI_PASS_OPT,
    CLI_JSON_OPT,
    {0},
};
static const cli_opt list_opts[] = {
    CLI_REPO_OPT,
    {"db", "NAME...", "only these databases' sets (names or ids; a,b or repeated)", 0},
    {"type", "TYPE", "only sets of this type: full, incremental, differential or copy", 0},
    {"last", "N", "only the N newest sets (after --db and --type)", 0},
    CLI_PASS_OPT,
    CLI_JSON_OPT,
    {0}};
static const cli_opt show_opts[] = {CLI_REPO_OPT, CLI_PASS_OPT, CLI_JSON_OPT, {0}};
static const cli_opt verify_opts[] = {CLI_REPO_OPT, CLI_PASS_OPT, CLI_JSON_OPT, {0}};
static const cli_opt expire_opts[] = {
    CLI_REPO_OPT,
    {"keep-last", "N", "keep the N newest sets of each database", 0},
    {"keep-daily", "N", "keep the newest set of each of the last N days that have one", 0},
    {"keep-weekly", "N", "... of each of the last N ISO weeks (Monday first) that have one", 0},
    {"keep-monthly", "N", "... of each of the last N months that have one", 0},
    {"keep-yearly", "N", "... of each of the last N years that have one", 0},
    {"keep-within", "DURATION",
     "keep every set newer than the database's newest set minus DURATION (7d, 36h, 2w, 1m, 1y6m)",
     0},
    {"keep-full", "N", "keep the newest N full backups with every set committed after them", 0},
    {"db", "NAME...", "apply the policy to these databases only (names or ids; a,b or repeated)",
     0},
    {"dry-run", NULL, "print what would be removed and why each set stays; change nothing", 0},
    CLI_PASS_OPT,
    CLI_JSON_OPT,
    {0}};

static const cli_cmd repo_cmds[] = {
    {"init", "[NAME|PATH]", init_opts, "create a backup repository in a new or empty directory",
     "NAME: a [repo:NAME] of the configuration (its path, its passphrase-file); PATH: a folder; "
     "none: the default repository ($OMBRA_REPO, else the configuration's default-repo).\n\n"
     "The passphrase of an encrypted repository is read from --passphrase-file F (its first "
     "line),\nOMBRA_REPO_PASSPHRASE or the configuration's passphrase-file, never from the "
     "command line. Without it the backups cannot be read:\nkeep it somewhere else than the "
     "repository.",
     cmd_init},
    {"stats", "", show_opts, "what a repository holds: sets, chains, bytes stored and logical",
     "sets and restore chains (one per full or copy backup whose chain is whole); logical: the\n"
     "sum of the sets' file sizes (what they stand for); stored: the pack files on disk (what\n"
     "the data takes, after deduplication and compression), in four parts that add up to it:\n"
     "used (the blocks the sets use, whole or by a slice as a synthetic full does, each once),\n"
     "unreferenced (blocks no set uses: expire frees them), pack overhead (pack headers, a\n"
     "second copy of a block two writers stored at once) and not indexed (leftovers of killed\n"
     "writers, packs being written); ratio: logical / stored. Per database: its sets, fulls,\n"
     "chains, the newest set's time (UTC, as backups list prints it), the logical bytes of its\n"
     "sets, STORED: the blocks counted for it (each used block counts once, for the database\n"
     "of the oldest set that uses it; the column adds up to used) and REFERENCED: every block\n"
     "its sets use (what it would take alone). Sizes in SI units (kB, MB, GB: powers of 1000).\n"
     "--json: \"sets\", \"chains\", \"not_restorable\", \"damaged\", \"packs\", "
     "\"bytes_on_disk\",\n"
     "\"bytes\", \"ratio\", \"bytes_used\", \"bytes_unreferenced\", \"blocks_unreferenced\",\n"
     "\"bytes_pack_overhead\", \"bytes_not_indexed\", \"blocks_missing\", \"databases\":\n"
     "[{\"database\": {\"id\", \"name\"}, \"sets\", \"fulls\", \"chains\", \"newest\", \"bytes\",\n"
     "\"bytes_stored\", \"bytes_referenced\"}].",
     cmd_stats},
    {0},
};

static const cli_cmd backups_cmds[] = {
    {"list", "", list_opts,
     "backup sets, oldest first: type, time, server, database, log range, size, parent, chain",
     "CHAIN says whether a restore can use the set: RESTORABLE with the full its chain starts\n"
     "from (a full or copy backup alone is a restore point of its own), or NOT RESTORABLE and\n"
     "why (a parent missing or damaged, generations no set holds). Times are UTC (Z) and can be\n"
     "pasted into ombra restore --until-time. --json gives per set \"restorable\", \"why\" and\n"
     "\"chain\" (the ids from the base, oldest first).\n"
     "--db, --type and --last choose which sets are shown, in text and in --json; CHAIN is\n"
     "still worked out over every set. --last N shows the N newest (by commit) of the sets the\n"
     "other filters leave. A damaged set file is always shown (its database and type cannot\n"
     "be read) and --last does not count it.",
     cmd_list},
    {"show", "ID", show_opts, "one backup set and its files (ID: the id or a unique prefix)", NULL,
     cmd_show},
    {0},
};

static const cli_cmd verify_cmds[] = {
    {"", "[SET]", verify_opts,
     "read back every block of a set (or of every set) and check it and each file's SHA-256",
     "Each problem is printed on a line of its own naming the set, the file, the block and the\n"
     "pack; damaged set and index files are reported too. Exit 1 when anything is damaged.\n"
     "A stored copy of a block that fails is listed in the repository's damaged.json: the next\n"
     "backup that holds the block stores it again (a full backup for a database's file), and\n"
     "the older sets that name it then read the fresh copy. The lines after the problems name\n"
     "the blocks still waiting for a fresh copy and the databases to back up.",
     cmd_verify},
    {0},
};

static const cli_cmd expire_cmds[] = {
    {"", "", expire_opts, "delete old backup sets and the data nothing else uses",
     "The policy is applied to each database's sets separately; a set is kept when any rule\n"
     "keeps it (as restic's forget). At least one --keep-* rule is required: expire never\n"
     "deletes every backup by accident.\n"
     "  --keep-last N      the N newest sets (any type).\n"
     "  --keep-daily N     for the last N days that have one or more sets, the newest set of\n"
     "                     each day; --keep-weekly (ISO 8601 weeks), --keep-monthly and\n"
     "                     --keep-yearly alike. Days, weeks, months and years are UTC.\n"
     "  --keep-within D    every set newer than the database's NEWEST SET's time minus D (not\n"
     "                     now: a backup job that stopped does not age every set out). D is\n"
     "                     numbers with units y (calendar years), m (calendar months), w\n"
     "                     (weeks), d (days), h (hours), each once: 7d, 36h, 2w, 1m, 1y6m.\n"
     "  --keep-full N      the newest N full backups with every set committed after the oldest\n"
     "                     of them (copies never count as a full); a database with N fulls or\n"
     "                     fewer loses nothing.\n"
     "A set's time is its freeze (the time backups list shows). Whole chains, always: a kept\n"
     "incremental or differential keeps the sets it depends on, up to its full (\"chain of\n"
     "<id>\"); a full goes with its dependents only when none of them is kept.\n"
     "--db NAME applies the policy to those databases only; other databases keep every set. A\n"
     "set of several databases is kept when any of them keeps it. A name no set has is an\n"
     "error (a typo never passes for \"nothing to delete\").\n"
     "--dry-run prints each set with what would happen to it and why (\"daily 2026-12-03\",\n"
     "\"within 7d\", \"chain of <id>\", \"no rule keeps it\") and changes nothing: it takes no\n"
     "exclusive lock and leaves pending sets and leftovers alone, so it runs beside backups. The\n"
     "real run computes the same plan and deletes exactly the sets it calls removed. --json:\n"
     "{\"kept\": [...], \"removed\": [...]}, each {\"id\", \"type\", \"time\", \"database\",\n"
     "\"reasons\"}, with \"policies\" and \"dry_run\" (the real run adds \"sets_deleted\", packs\n"
     "and bytes freed).\n"
     "Then leftovers of killed backups and unused packs are deleted, packs less than half used\n"
     "are rewritten, and small packs (under a quarter of the pack size: a small backup's only\n"
     "one) are merged into full ones once 32 of them are there (each pack has an index file\n"
     "that every command loads). A full disk stops the rewrites, not expire\n"
     "(\"rewrites_stopped\" says why). The real run needs the repository to itself: a backup,\n"
     "restore or verify running on it makes it fail.",
     cmd_expire},
    {0},
};

const cli_group cli_repo_group = {"repo", "backup repositories: create one, see what one holds",
                                  repo_cmds};
const cli_group cli_backups_group = {"backups", "the backup sets of a repository", backups_cmds};
const cli_group cli_verify_group = {"verify", "check the backups of a repository", verify_cmds};
const cli_group cli_expire_group = {"expire", "retention: delete old backup sets", expire_cmds};

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
#include "base/error.h"
#include "base/progress.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"

/* Opens --repo with the passphrase, if any. CLI_OK, or CLI_FAIL (printed). */
static int open_repo(const cli_args *a, bk_repo **r)
{
    char buf[1024];
    const char *pass = NULL;
    int rc = cli_repo_passphrase(a, buf, sizeof buf, &pass);
    if (!rc) rc = bk_repo_open(cli_val(a, "repo"), pass, r);
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
    char buf[1024];
    const char *pass = NULL;
    if ((rc = cli_repo_passphrase(a, buf, sizeof buf, &pass))) return cli_fail(rc);
    if (o.encrypt && !pass)
        return cli_usage(a, "--encrypt needs a passphrase: --passphrase-file F or "
                            "OMBRA_REPO_PASSPHRASE");
    if (!o.encrypt && cli_val(a, "passphrase-file"))
        return cli_usage(a, "--passphrase-file is for an encrypted repository: add --encrypt");
    o.passphrase = o.encrypt ? pass : NULL;
    const char *path = a->pos[0];
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

static int cmd_list(const cli_args *a)
{
    bk_repo *r = NULL;
    json_t *summaries = NULL, *sets = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    int err = bk_sets(r, &summaries);
    bk_repo_close(r);
    if (!err) err = bk_plan(summaries, &sets);
    json_decref(summaries);
    if (err) return cli_fail(err);
    if (cli_flag(a, "json")) return print_owned(json_pack("{s:O}", "sets", sets)); /* an object */
    if (!json_array_size(sets)) {
        printf("no backup sets in %s\n", cli_val(a, "repo"));
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
               strlen(om_json_str_or(f, "blocks", "")) / 64, om_json_str_or(f, "sha256", "?"));
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
    put_files(json_object_get(s, "files"));
    json_decref(s);
    return CLI_OK;
}

/* ---- verify ---- */

typedef struct vstate {
    int json, bar;
    json_t *damage;
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

static int cmd_verify(const cli_args *a)
{
    bk_repo *r = NULL;
    int rc = open_repo(a, &r);
    if (rc) return rc;
    vstate v = {.json = cli_flag(a, "json"), .damage = json_array()};
    v.bar = !v.json && isatty(2);
    bk_repo_set_progress(r, on_progress, &v);
    uint64_t checked = 0;
    const char *set = a->npos ? a->pos[0] : NULL;
    int err = bk_verify(r, set, on_damage, &v, &checked);
    end_progress(&v);
    bk_repo_close(r);
    if (err && err != OM_E_RepositoryCorrupt) {
        json_decref(v.damage);
        return cli_fail(err);
    }
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", err ? om_err_detail() : "");
    if (v.json)
        rc = print_owned(json_pack("{s:b, s:s?, s:I, s:o}", "ok", !err, "set_id", set,
                                   "blocks_checked", (json_int_t)checked, "damage", v.damage));
    else {
        json_decref(v.damage);
        if (!err)
            printf("%s: %s verified, %llu block reads, no damage\n", cli_val(a, "repo"),
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

static int cmd_expire(const cli_args *a)
{
    uint64_t keep = 0;
    int rc = cli_number(a, "--keep-full", cli_val(a, "keep-full"), 1, 100000, 0, &keep);
    if (rc) return rc;
    bk_repo *r = NULL;
    if ((rc = open_repo(a, &r))) return rc;
    vstate v = {.json = cli_flag(a, "json")};
    v.bar = !v.json && isatty(2);
    bk_repo_set_progress(r, on_progress, &v);
    json_t *rep = NULL;
    int err = bk_expire(r, (unsigned)keep, &rep);
    end_progress(&v);
    bk_repo_close(r);
    if (err) return cli_fail(err);
    if (v.json) return print_owned(rep);
    json_t *del = json_object_get(rep, "sets_deleted");
    char b[24];
    printf("kept %lld sets, deleted %zu", (long long)om_json_int_or(rep, "sets_kept", 0),
           json_array_size(del));
    size_t i;
    json_t *id;
    json_array_foreach(del, i, id) printf("%s%.12s", i ? ", " : " (", json_string_value(id));
    printf("%s\n", json_array_size(del) ? ")" : "");
    printf("packs: %lld deleted, %lld rewritten; %lld leftovers of interrupted backups removed; "
           "%s freed\n",
           (long long)om_json_int_or(rep, "packs_deleted", 0),
           (long long)om_json_int_or(rep, "packs_rewritten", 0),
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
static const cli_opt list_opts[] = {CLI_REPO_OPT, CLI_PASS_OPT, CLI_JSON_OPT, {0}};
static const cli_opt verify_opts[] = {CLI_REPO_OPT, CLI_PASS_OPT, CLI_JSON_OPT, {0}};
static const cli_opt expire_opts[] = {
    CLI_REPO_OPT,
    {"keep-full", "N", "how many full backups (with their chains) to keep", 1},
    CLI_PASS_OPT,
    CLI_JSON_OPT,
    {0}};

static const cli_cmd repo_cmds[] = {
    {"init", "PATH", init_opts, "create a backup repository in a new or empty directory",
     "The passphrase of an encrypted repository is read from --passphrase-file F (its first "
     "line)\nor OMBRA_REPO_PASSPHRASE, never from the command line. Without it the backups "
     "cannot be read:\nkeep it somewhere else than the repository.",
     cmd_init},
    {0},
};

static const cli_cmd backups_cmds[] = {
    {"list", "", list_opts,
     "backup sets, oldest first: type, time, server, database, log range, size, parent, chain",
     "CHAIN says whether a restore can use the set: RESTORABLE with the full its chain starts\n"
     "from (a full or copy backup alone is a restore point of its own), or NOT RESTORABLE and\n"
     "why (a parent missing or damaged, generations no set holds). Times are UTC (Z) and can be\n"
     "pasted into ombra restore --until-time. --json gives per set \"restorable\", \"why\" and\n"
     "\"chain\" (the ids from the base, oldest first).",
     cmd_list},
    {"show", "ID", list_opts, "one backup set and its files (ID: the id or a unique prefix)", NULL,
     cmd_show},
    {0},
};

static const cli_cmd verify_cmds[] = {
    {"", "[SET]", verify_opts,
     "read back every block of a set (or of every set) and check it and each file's SHA-256",
     "Each problem is printed on a line of its own naming the set, the file, the block and the\n"
     "pack; damaged set and index files are reported too. Exit 1 when anything is damaged.",
     cmd_verify},
    {0},
};

static const cli_cmd expire_cmds[] = {
    {"", "", expire_opts, "delete old backup sets and the data nothing else uses",
     "Per database, the newest N full backups are kept with every set committed after the\n"
     "oldest of them (incremental, differential and copy backups); older sets go. Copy backups\n"
     "never count as a full. Then unused packs are deleted and packs less than half used are\n"
     "rewritten. Needs the repository to itself: a backup, restore or verify running on it\n"
     "makes it fail.",
     cmd_expire},
    {0},
};

const cli_group cli_repo_group = {"repo", "backup repositories: create one", repo_cmds};
const cli_group cli_backups_group = {"backups", "the backup sets of a repository", backups_cmds};
const cli_group cli_verify_group = {"verify", "check the backups of a repository", verify_cmds};
const cli_group cli_expire_group = {"expire", "retention: delete old backup sets", expire_cmds};

/* ombra dbutil recover of a restored database (eseutil /cc): when the log folder holds
 * _restoredLogs/<base>restore.env (store/writer.h: what PreRestore writes; the restore was laid
 * down with --no-replay, or its replay failed), hard recovery replays the restored logs into the
 * restored .edb, rolls forward through later logs of the folder, and removes _restoredLogs, so
 * the database mounts again. */
#include <stdio.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"
#include "backup/repo.h"
#include "base/vfs.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/format.h"

typedef struct env_find {
    char name[256];
} env_find;

static int env_name(void *arg, const char *name)
{
    env_find *f = arg;
    size_t l = strlen(name);
    if (!f->name[0] && l > 11 && l < sizeof f->name && !strcmp(name + l - 11, "restore.env"))
        snprintf(f->name, sizeof f->name, "%s", name);
    return 0;
}

/* f (opened as name in d) is still the file at that name. */
static int same_file_at(om_dir *d, const char *name, om_file *f, const char *path)
{
    om_file *g = NULL;
    om_stamp a, b;
    int rc = om_open_at(d, name, OM_O_RDONLY, &g);
    if (!rc) rc = om_fstamp(f, &a);
    if (!rc) rc = om_fstamp(g, &b);
    om_close(g);
    if (rc == OM_E_FileNotFound || (!rc && a.ino != b.ino))
        rc = om_errf(OM_E_RestoreInProgress,
                     "%s was replaced or removed while it was being opened (a restore of this "
                     "database may have started). HINT: wait for any restore of it to end, then "
                     "run this again",
                     path);
    return rc;
}

/* dir/_restoredLogs's first *restore.env, parsed: *env (NULL and 0 when there is no
 * _restoredLogs or no .env in it), its path in envp. Neither the folder nor the file is taken
 * through a symbolic link, and the folder must be the caller's own (OM_D_OWN, as the writer
 * made it): a link planted there would otherwise steer the recovery to another database's
 * restore. An error when something is there that is not so. *held: the .env, open and locked,
 * for the caller to close once the recovery is over (a restore of the folder is refused until
 * then, store/store_writer.c take_leftovers). */
static int load_env(const char *dir, char *envp, size_t en, json_t **env, om_file **held)
{
    *env = NULL;
    *held = NULL;
    envp[0] = 0;
    om_vfs *v = om_vfs_posix();
    om_dir *ld = NULL, *pd = NULL;
    om_file *f = NULL;
    env_find fd = {{0}};
    int rc = om_dir_open(v, NULL, dir, OM_D_FOLLOW, &ld);
    if (rc) return rc;
    int kind = om_kind_at(ld, "_restoredLogs");
    if (kind == OM_KIND_NONE) goto out;
    if ((rc = om_dir_open(v, ld, "_restoredLogs", OM_D_OWN, &pd))) goto out;
    if ((rc = om_list_at(pd, env_name, &fd)) || !fd.name[0]) goto out;
    snprintf(envp, en, "%.4000s/_restoredLogs/%s", dir, fd.name);
    if (om_kind_at(pd, fd.name) != OM_KIND_FILE) {
        rc = om_errf(OM_E_InvalidPath, "%s is not a regular file (never followed or opened)", envp);
        goto out;
    }
    if ((rc = om_open_at(pd, fd.name, OM_O_RDONLY, &f))) goto out;
    /* The store holds it locked from the restore's PreRestore until that restore is done. */
    if (f->vfs->lock && (rc = f->vfs->lock(f))) {
        if (rc == OM_E_DatabaseInUse)
            rc = om_errf(OM_E_RestoreInProgress,
                         "%s is held by another process (a restore of this database in progress "
                         "in the store, or another ombra dbutil recover of this folder): "
                         "recovering now would race it. HINT: wait for it to end (ombra restore "
                         "prints how it ended), then recover if it asks to",
                         envp);
        goto out;
    }
    /* Locked, and still the file at that name: a restore that replaced it between the open and
     * the lock holds the new one (and the store's PreRestore holds the old one's lock until its
     * own is taken), so from here on no restore of this folder starts until the lock goes. */
    if ((rc = same_file_at(pd, fd.name, f, envp))) goto out;
    rc = om_json_read_file(f, 1u << 20, env);
    if (!rc) {
        *held = f;
        f = NULL;
    }
out:
    om_close(f);
    om_dir_close(pd);
    om_dir_close(ld);
    return rc;
}

/* The folder that holds path, synced. */
static int sync_parent(const char *path)
{
    char d[4200];
    om_dirname(path, d, sizeof d);
    return om_vfs_posix()->sync_dir(om_vfs_posix(), d);
}

/* a and b name the same directory (after links, as the administrator's paths may go through
 * them). */
static int same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return !stat(a, &sa) && !stat(b, &sb) && S_ISDIR(sa.st_mode) && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static const char *field(json_t *env, const char *part, const char *k)
{
    return om_json_str_or(json_object_get(env, part), k, "");
}

static int recover_env(const char *dir, int json, const char *pending, const char *envp,
                       json_t *env);

int cli_dbutil_hard_recover(const char *dir, int json, int *found)
{
    char pending[4200], envp[4400];
    snprintf(pending, sizeof pending, "%.4000s/_restoredLogs", dir);
    json_t *env = NULL;
    om_file *held = NULL;
    int lrc = load_env(dir, envp, sizeof envp, &env, &held);
    *found = lrc || env;
    if (lrc) return cli_fail(lrc);
    if (!env) return CLI_OK;
    bk_pause_at("OMBRA_DBUTIL_PAUSE", "locked"); /* the test hook (backup/repo.h) */
    int rc = recover_env(dir, json, pending, envp, env);
    om_close(held); /* the lock goes once the recovery is over */
    return rc;
}

/* The hard recovery of the restore env (taken: decref'd here) describes, laid down in dir. */
static int recover_env(const char *dir, int json, const char *pending, const char *envp,
                       json_t *env)
{
    const char *tedb = field(env, "target", "edb"), *tlogs = field(env, "target", "logs"),
               *tbase = field(env, "target", "base"), *oedb = field(env, "original", "edb"),
               *base = om_json_str_or(env, "base", "");
    int original = field(env, "target", "id")[0] &&
                   !strcmp(field(env, "target", "id"), field(env, "original", "id"));
    if (!tedb[0] || !tlogs[0] || !eng_base_valid(tbase) || !eng_base_valid(base) || !oedb[0]) {
        json_decref(env);
        om_errf(OM_E_InvalidParameter, "%s names no target (target edb, logs, base)", envp);
        return cli_fail(OM_E_InvalidParameter);
    }
    /* The restore laid down is this folder's: a .env naming another database's folder (copied
     * or planted here) never steers the recovery there. */
    if (!same_dir(tlogs, dir)) {
        om_errf(OM_E_InvalidParameter,
                "%s names the log folder %s as the restore's target, not %s: it is not this "
                "folder's restore. HINT: run ombra dbutil recover on the folder it names",
                envp, tlogs, dir);
        json_decref(env);
        return cli_fail(OM_E_InvalidParameter);
    }
    /* The .edb was laid down under the target's own name (store/writer.c). */
    int rc = 0;
    /* Where the restore's replay would have ended (a .env of an older build says nothing: to
     * the end of the logs). */
    json_t *rp = json_object_get(env, "replay"), *rf = json_object_get(rp, "roll_forward");
    eng_restore_opts o = {.target = {.edb_path = tedb, .log_dir = tlogs, .base = tbase},
                          .restored_dir = original ? tlogs : pending,
                          .restored_base = base,
                          .roll_forward = rf ? json_is_true(rf) : 1,
                          .stop_gen = (uint32_t)json_integer_value(json_object_get(rp, "stop_gen")),
                          .stop_time_ns =
                              (uint64_t)json_integer_value(json_object_get(rp, "stop_time_ns"))};
    /* Logs laid down without a sync each (the restore's own replay was to read them, then they
     * go): in the boot that laid them what is there is what was written, made durable now; after
     * a restart a crash may have lost some of it, which no check could tell for the last
     * generation (an older state, and success said). */
    json_t *ubv = json_object_get(env, "logs_unsynced_boot");
    const char *ub = json_string_value(ubv);
    char boot[37] = "";
    if (ubv && !json_is_null(ubv) && !ub) { /* edited or damaged: never taken as synced */
        om_errf(OM_E_InvalidParameter,
                "%s: logs_unsynced_boot must be the boot id (a string) or null, not a JSON %s: "
                "whether its logs reached the disk is unknown. HINT: run the same ombra restore "
                "again; it takes the target up",
                envp,
                json_is_integer(ubv) || json_is_real(ubv) ? "number"
                : json_is_boolean(ubv)                    ? "boolean"
                : json_is_array(ubv)                      ? "array"
                                                          : "object");
        json_decref(env);
        return cli_fail(OM_E_InvalidParameter);
    }
    if (ub && (om_boot_id(boot) || strcmp(ub, boot))) {
        om_errf(OM_E_RequiredLogFilesMissing,
                "%s: the restore that laid these logs down left them unsynced for its own "
                "replay, and the machine has restarted since (boot %.36s, now %s): some may "
                "never have reached the disk. HINT: run the same ombra restore again; it takes "
                "the target up",
                dir, ub, boot[0] ? boot : "unknown");
        json_decref(env);
        return cli_fail(OM_E_RequiredLogFilesMissing);
    }
    if (ub && (rc = eng_restored_sync(om_vfs_posix(), o.restored_dir, base))) {
        json_decref(env);
        return cli_fail(rc);
    }
    /* A restore stopped before its last generation was laid (killed, failed, its machine down):
     * replaying what is there would end in an older state than the set's, and say success. */
    json_t *laid = json_object_get(env, "laid_range");
    uint32_t last = (uint32_t)json_integer_value(json_array_get(laid, 1));
    char lp[4400];
    if (last && !eng_log_path(lp, sizeof lp, o.restored_dir, base, last) && access(lp, F_OK) != 0) {
        om_errf(OM_E_RequiredLogFilesMissing,
                "%s: the restore that laid these logs down was stopped before its last "
                "generation %u (%s is not there): recovering now would give an older state "
                "than the backup. HINT: run the same ombra restore again; it takes the target up",
                dir, last, lp);
        json_decref(env);
        return cli_fail(OM_E_RequiredLogFilesMissing);
    }
    eng_restore_result r = {0};
    if (!json)
        printf("%s: a restore was laid down here (%s); hard recovery of %s%s\n", dir, envp, tedb,
               o.stop_gen || o.stop_time_ns || !o.roll_forward
                   ? ", stopping where the restore asked"
                   : "");
    if (!rc) rc = eng_db_hard_recover(&o, &r);
    if (rc) {
        json_decref(env);
        return cli_fail(rc);
    }
    /* The .edb's name on the disk first (a restore puts it in place before it syncs its
     * folder, restore.c): then only the names the restore wrote there go (the folder retired
     * first: from then on no restore is pending), then the folder. */
    if ((rc = sync_parent(tedb)) || (rc = eng_restored_remove(om_vfs_posix(), dir, base))) {
        json_decref(env);
        return cli_fail(rc);
    }
    if (json) {
        json_t *doc =
            json_pack("{s:s,s:s,s:s,s:s,s:o,s:I,s:I,s:f,s:s}", "recovery", "hard", "file", tedb,
                      "logs", dir, "restore_env", envp, "log_range",
                      r.first_gen ? json_pack("[i,i]", r.first_gen, r.last_gen) : json_null(),
                      "records", (json_int_t)r.records, "transactions", (json_int_t)r.transactions,
                      "seconds", (double)r.ns / 1e9, "state", "Clean Shutdown");
        json_decref(env);
        rc = cli_print_json(doc);
        json_decref(doc);
        return rc;
    }
    if (r.first_gen)
        printf("%s recovered: generations %u-%u replayed (%llu transactions) in %.2f s; now "
               "Clean Shutdown, and the database mounts again\n",
               tedb, r.first_gen, r.last_gen, (unsigned long long)r.transactions,
               (double)r.ns / 1e9);
    else
        printf("%s recovered: no log to replay; now Clean Shutdown\n", tedb);
    json_decref(env);
    return CLI_OK;
}

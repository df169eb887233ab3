/* ombra dbutil recover of a restored database (eseutil /cc): when the log folder holds
 * _restoredLogs/<base>restore.env (store/writer.h: what PreRestore writes; the restore was laid
 * down with --no-replay, or its replay failed), hard recovery replays the restored logs into the
 * restored .edb, rolls forward through later logs of the folder, and removes _restoredLogs, so
 * the database mounts again. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/time.h"
#include "base/vfs.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/format.h"

/* The first *restore.env in dir (a NUL name when there is none). */
static void find_env(const char *dir, char *out, size_t n)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 11 && !strcmp(de->d_name + l - 11, "restore.env")) {
            snprintf(out, n, "%.4000s/%.200s", dir, de->d_name);
            break;
        }
    }
    if (d) closedir(d);
}

static const char *field(json_t *env, const char *part, const char *k)
{
    return om_json_str_or(json_object_get(env, part), k, "");
}

int cli_dbutil_hard_recover(const char *dir, int json, int *found)
{
    char pending[4200], envp[4400];
    snprintf(pending, sizeof pending, "%.4000s/_restoredLogs", dir);
    find_env(pending, envp, sizeof envp);
    *found = envp[0] != 0;
    if (!*found) return CLI_OK;
    json_error_t je;
    json_t *env = json_load_file(envp, 0, &je);
    if (!env) {
        om_errf(OM_E_InvalidParameter, "%s: %s (line %d)", envp, je.text, je.line);
        return cli_fail(OM_E_InvalidParameter);
    }
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
    /* Only the names the restore wrote there go (the folder retired first: from then on no
     * restore is pending), then the folder. */
    if ((rc = eng_restored_remove(om_vfs_posix(), dir, base))) {
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

/* ombra backup: the backup application's backup command (backup/job.h does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/job.h"
#include "base/error.h"
#include "base/proto.h"
#include "cli/cli.h"

static int cmd_backup(const cli_args *a)
{
    const char *type = cli_val(a, "type");
    if (strcmp(type, "full") && strcmp(type, "copy") && strcmp(type, "incremental") &&
        strcmp(type, "differential"))
        return cli_usage(a, "--type must be full, copy, incremental or differential, not '%s'",
                         type);
    const char *prov = cli_val(a, "provider") ? cli_val(a, "provider") : "auto";
    if (strcmp(prov, "auto") && strcmp(prov, "held") && strcmp(prov, "reflink") &&
        strcmp(prov, "btrfs") && strcmp(prov, "copy"))
        return cli_usage(a, "--provider must be auto, held, reflink, btrfs or copy, not '%s'",
                         prov);
    uint64_t threads = 0;
    int rc;
    if (cli_val(a, "threads") &&
        (rc = cli_number(a, "--threads", cli_val(a, "threads"), 1, 64, 0, &threads)))
        return rc;
    char pbuf[1024];
    const char *pass = NULL;
    if ((rc = cli_repo_passphrase(a, pbuf, sizeof pbuf, &pass))) return cli_fail(rc);
    const char *from = cli_val(a, "from");
    if (from && !*from) return cli_usage(a, "--from needs active, passive or a server name");
    char *repo = cli_abs_path(cli_val(a, "repo"));
    bk_job_opts o = {.repo = repo,
                     .passphrase = pass,
                     .type = type,
                     .provider = prov,
                     .dbs = a->pos,
                     .ndb = (size_t)a->npos,
                     .threads = (int)threads,
                     .from = from,
                     .progress = isatty(2) && !cli_flag(a, "json")};
    json_t *res = NULL;
    om_err_saved failed; /* past the printing */
    rc = om_err_save(&failed, bk_backup_run(&o, &res));
    memset(pbuf, 0, sizeof pbuf);
    free(repo);
    int out = CLI_OK;
    if (cli_flag(a, "json"))
        out = cli_print_json(res);
    else {
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(res, "copies"), i, s)
        {
            if (!strcmp(om_json_str_or(s, "copy", ""), "passive"))
                printf("%s: backing up the passive copy on server %s\n",
                       om_json_str_or(s, "database", "?"), om_json_str_or(s, "server", "?"));
        }
        json_array_foreach(json_object_get(res, "sets"), i, s)
        {
            json_t *lr = json_object_get(s, "log_range");
            char hb[32];
            printf("%s: %s backup set %s, log generations %lld-%lld, %s stored\n",
                   json_string_value(json_object_get(s, "database")), type,
                   json_string_value(json_object_get(s, "set")),
                   (long long)json_integer_value(json_array_get(lr, 0)),
                   (long long)json_integer_value(json_array_get(lr, 1)),
                   cli_human_bytes((uint64_t)json_integer_value(json_object_get(s, "bytes_stored")),
                                   hb, sizeof hb));
        }
        double secs = json_real_value(json_object_get(res, "seconds"));
        double read = (double)json_integer_value(json_object_get(res, "bytes_read"));
        char hb[32];
        /* The summary of a backup that ran: a refusal before anything was read is one line. */
        if (!rc || json_array_size(json_object_get(res, "sets")) || read > 0)
            printf(
                "read %.1f MB in %.2f s (%.0f MB/s), stored %s; writes held %.1f ms\n", read / 1e6,
                secs, secs > 0 ? read / 1e6 / secs : 0.0,
                cli_human_bytes((uint64_t)json_integer_value(json_object_get(res, "bytes_stored")),
                                hb, sizeof hb),
                json_number_value(json_object_get(res, "freeze_ms")));
    }
    json_decref(res);
    if (rc) {
        om_err_restore(&failed);
        return cli_fail(rc);
    }
    return out;
}

static const cli_opt backup_opts[] = {
    CLI_REPO_OPT,
    {"type", "TYPE", "full, copy, incremental or differential", 1},
    {"provider", "P", "auto (default), held, reflink, btrfs or copy", 0},
    {"threads", "N", "threads reading, compressing and writing (default: all cores)", 0},
    {"from", "COPY",
     "in a DAG: active, passive, or this server's name (default: the copy this server holds)", 0},
    CLI_PASS_OPT,
    {"json", NULL, "print JSON: sets, type, databases, log ranges, bytes, seconds, freeze_ms", 0},
    {0}};

static const cli_cmd backup_cmds[] = {
    {"", "DB...", backup_opts, "back up databases of this server into a repository",
     "Drives the shadow copy sequence through ombra-vssd, checks the shadow copy (every page for "
     "full and copy backups, the log range for all), stores only blocks the repository does not "
     "have, and lets the writer truncate logs only for what was stored and verified. A database "
     "named twice is backed up once.",
     cmd_backup},
    {0},
};

const cli_group cli_backup_group = {"backup",
                                    "back up databases (full, copy, incremental, "
                                    "differential)",
                                    backup_cmds};

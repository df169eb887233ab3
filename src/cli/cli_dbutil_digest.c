/* ombra dbutil digest FILE.edb --logs DIR [--base E00]: the mail digest of a database that is not
 * mounted (a passive copy, a file set laid down by hand), as `mail digest` gives it for a mounted
 * one. The files are never changed: they are copied into a scratch folder under $TMPDIR while
 * the .edb is locked as the engine locks it (so a passive copy being replayed, or a mounted
 * database, is refused: suspend the copy first), the copy is soft-recovered and mounted
 * there, as a failover would mount it, and the scratch folder is removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "store/mail.h"

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return om_errf(OM_E_FileNotFound, "%s: %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = out < 0 ? om_errf(OM_E_DiskIO, "%s: %s", to, strerror(errno)) : 0;
    char buf[1 << 16];
    while (!rc) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 || write(out, buf, (size_t)n) != n)
            rc = om_errf(OM_E_DiskIO, "copying %s: %s", from, strerror(errno));
    }
    close(in);
    if (out >= 0) close(out);
    return rc;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4400];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            remove_tree(p);
        else
            unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

int cli_dbutil_digest(const cli_args *a)
{
    const char *edb = a->pos[0], *logs = cli_val(a, "logs"), *base = cli_val(a, "base");
    if (!base) base = "E00";
    if (strlen(base) != 3)
        return cli_usage(a, "--base takes a log base name like E00, not '%s'", base);
    int lock = open(edb, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (lock < 0) return cli_fail(om_errf(OM_E_FileNotFound, "%s: %s", edb, strerror(errno)));
    if (flock(lock, LOCK_EX | LOCK_NB)) {
        close(lock);
        return cli_fail(om_errf(OM_E_DatabaseInUse,
                                "%s is in use (a mounted database, or a passive copy being "
                                "replayed). HINT: ombra db copy suspend DB --server S first",
                                edb));
    }
    const char *tmp = getenv("TMPDIR");
    char scratch[4200], slogs[4300], sedb[4300];
    snprintf(scratch, sizeof scratch, "%s/ombra-digest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int rc = mkdtemp(scratch) ? 0 : om_errf(OM_E_DiskIO, "%s: %s", scratch, strerror(errno));
    snprintf(slogs, sizeof slogs, "%s/logs", scratch);
    snprintf(sedb, sizeof sedb, "%s/db.edb", scratch);
    if (!rc && mkdir(slogs, 0700)) rc = om_errf(OM_E_DiskIO, "%s: %s", slogs, strerror(errno));
    if (!rc) rc = copy_file(edb, sedb);
    DIR *d = rc ? NULL : opendir(logs);
    if (!rc && !d) rc = om_errf(OM_E_FileNotFound, "%s: %s", logs, strerror(errno));
    struct dirent *e;
    while (!rc && d && (e = readdir(d))) {
        uint32_t g;
        char cur[16], chk[16];
        snprintf(cur, sizeof cur, "%s.log", base);
        snprintf(chk, sizeof chk, "%s.chk", base);
        if (!eng_parse_log_name(e->d_name, base, &g) && strcmp(e->d_name, cur) &&
            strcmp(e->d_name, chk))
            continue;
        char f[4700], t[4700];
        snprintf(f, sizeof f, "%s/%s", logs, e->d_name);
        snprintf(t, sizeof t, "%s/%s", slogs, e->d_name);
        rc = copy_file(f, t);
    }
    if (d) closedir(d);
    close(lock);
    eng_opts o = {.edb_path = sedb, .log_dir = slogs, .base = base, .no_reserve_logs = 1};
    eng_db *db = NULL;
    mail_store *ms = NULL;
    char digest[33];
    if (!rc) rc = eng_db_open(&o, &db);
    if (!rc) rc = store_mail_open(db, &ms);
    if (!rc) rc = store_mail_digest(ms, digest);
    if (ms) store_mail_close(ms);
    if (db) eng_db_close(db);
    remove_tree(scratch);
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json")) { /* the files by their paths: a file does not know its name */
        json_t *doc = json_pack("{s:s,s:s,s:s,s:s}", "file", edb, "logs", logs, "base", base,
                                "digest", digest);
        rc = cli_print_json(doc);
        json_decref(doc);
        return rc;
    }
    printf("%s\n", digest);
    return CLI_OK;
}

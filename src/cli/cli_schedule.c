/* ombra schedule: scheduled backups from the configuration's [schedule:NAME] sections, run by
 * systemd timers (docs/configuration.md, "Schedules").
 *
 *   write    for each schedule a pair of units in the unit folder (/etc/systemd/system):
 *            ombra-schedule-NAME.timer (OnCalendar, RandomizedDelaySec, Persistent) and the
 *            ombra-schedule-NAME.service it starts (oneshot: `ombra schedule run NAME`); the
 *            pairs of schedules no longer configured are removed.
 *   list     the schedules, whether their timer is written, the next time it elapses.
 *   remove   the units of some or all schedules.
 *   run      one schedule's job: the backup, then `ombra expire` with the repository's keep-*
 *            settings when the schedule says expire = yes (the default) and it has some.
 *
 * Only files this command wrote are ever replaced or removed: each starts with UNIT_MARK, and a
 * name in the folder that is not a regular file (a planted link) is left alone, with an error.
 * The calendar is checked with `systemd-analyze calendar` when that is installed, so a timer
 * systemd would refuse is never written. Each run goes to the journal (the service's output,
 * and the backup's own records) and to the metrics (ombra backup records its runs). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/vfs.h"
#include "cli/cli.h"

extern char **environ;

#define UNIT_MARK        "# Written by `ombra schedule write`"
#define UNIT_PREFIX      "ombra-schedule-"
#define DEFAULT_UNIT_DIR "/etc/systemd/system"

/* One [schedule:NAME] with its defaults applied. */
typedef struct sched {
    const char *name, *databases, *type, *calendar, *repo, *provider;
    uint64_t delay_s;
    int persistent, expire;
    char section[300];
} sched;

/* Reads [schedule:name]; a missing key that has no default is one error naming the file. */
static int sched_get(const char *name, sched *s)
{
    memset(s, 0, sizeof *s);
    const char *const *all;
    size_t n = om_conf_names("schedule", &all), i = 0;
    while (i < n && strcmp(all[i], name))
        i++;
    if (i == n)
        return om_errf(OM_E_ConfigInvalid, "%s has no [schedule:%s] (%zu schedules%s%s)",
                       om_conf_file(), name, n, n ? ", the first: " : "", n ? all[0] : "");
    snprintf(s->section, sizeof s->section, "schedule:%s", name);
    s->name = name;
    s->databases = om_conf(s->section, "databases");
    s->type = om_conf(s->section, "type");
    s->calendar = om_conf(s->section, "calendar");
    s->repo = om_conf(s->section, "repo");
    s->provider = om_conf(s->section, "provider");
    s->persistent = om_conf_bool(s->section, "persistent", 1);
    s->expire = om_conf_bool(s->section, "expire", 1);
    const char *d = om_conf(s->section, "randomized-delay");
    if (d) om_duration_parse(d, &s->delay_s); /* checked when the file was read */
    const char *missing = !s->databases  ? "databases"
                          : !s->type     ? "type"
                          : !s->calendar ? "calendar"
                                         : NULL;
    if (missing)
        return om_errf(OM_E_ConfigInvalid, "%s: [schedule:%s] has no %s", om_conf_file(), name,
                       missing);
    if (!s->repo) {
        const char *const *names;
        s->repo = om_conf("ombra", "default-repo");
        if (!s->repo && om_conf_names("repo", &names) == 1) s->repo = names[0];
    }
    char rs[300];
    snprintf(rs, sizeof rs, "repo:%s", s->repo ? s->repo : "");
    if (!s->repo || !om_conf(rs, "path"))
        return om_errf(OM_E_ConfigInvalid,
                       "%s: [schedule:%s] names no repository of the file (repo = NAME of a "
                       "[repo:NAME] with a path, or a default-repo)",
                       om_conf_file(), name);
    return 0;
}

/* The schedules of the file, or the one name; CLI_OK or a printed error. */
static int sched_all(sched **out, size_t *n)
{
    const char *const *names;
    size_t k = om_conf_names("schedule", &names);
    *out = calloc(k + 1, sizeof **out);
    *n = 0;
    if (!*out) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    for (size_t i = 0; i < k; i++) {
        int rc = sched_get(names[i], &(*out)[i]);
        if (rc) return cli_fail(rc);
    }
    *n = k;
    return CLI_OK;
}

/* ---- running other programs ---- */

/* Runs argv (argv[0] found on the PATH, or a path), its stdout into *out (out NULL: inherited)
 * and its stderr into it too when err_too. *out: malloc'd, NUL-terminated, its first max bytes
 * (the rest read and dropped); the caller frees it (NULL when out of memory or it could not
 * run). Returns the exit status, or -1 when it could not run (errno). */
static int run_prog(char *const argv[], char **out, size_t max, int err_too)
{
    if (out) *out = NULL;
    int p[2] = {-1, -1};
    if (out && pipe2(p, O_CLOEXEC)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (out) {
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        if (err_too) posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    }
    pid_t pid;
    int e = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &fa, NULL, argv, environ)
                                 : posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (out) close(p[1]);
    if (e) {
        if (out) close(p[0]);
        errno = e;
        return -1;
    }
    if (out) {
        size_t got = 0, cap = 0;
        char *buf = NULL, sink[4096];
        ssize_t r = 0;
        do {
            if (got + 4096 > cap && got < max) { /* room for the next read */
                size_t nc = cap ? cap * 2 : 8192;
                char *nb = realloc(buf, nc);
                if (nb) buf = nb, cap = nc;
            }
            int keep = buf && got < max && got + 1 < cap;
            r = read(p[0], keep ? buf + got : sink,
                     keep ? (cap - 1 - got < max - got ? cap - 1 - got : max - got) : sizeof sink);
            if (r > 0 && keep) got += (size_t)r;
        } while (r > 0 || (r < 0 && errno == EINTR));
        close(p[0]);
        if (buf) buf[got] = 0;
        *out = buf;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* The calendar as systemd reads it: 0 and its "Next elapse" into next (may be empty), 1 when
 * systemd-analyze is not installed (nothing checked), else ConfigInvalid naming the schedule. */
static int calendar_check(const sched *s, char *next, size_t n)
{
    char out[2048], *got = NULL;
    char *argv[] = {"systemd-analyze", "calendar", "--", (char *)s->calendar, NULL};
    next[0] = 0;
    int st = run_prog(argv, &got, sizeof out - 1, 1);
    snprintf(out, sizeof out, "%s", got ? got : "");
    free(got);
    if (st < 0 || st == 127) return 1;
    if (st != 0) {
        char *nl = strchr(out, '\n');
        if (nl) *nl = 0;
        return om_errf(OM_E_ConfigInvalid,
                       "%s:%d: calendar '%s' of [schedule:%s] is not a systemd calendar "
                       "(systemd-analyze: %s)",
                       om_conf_file(), om_conf_line(s->section, "calendar"), s->calendar, s->name,
                       out);
    }
    const char *p = strstr(out, "Next elapse:");
    if (p) {
        p += strlen("Next elapse:");
        p += strspn(p, " ");
        snprintf(next, n, "%.*s", (int)strcspn(p, "\n"), p);
    }
    return 0;
}

/* ---- the units ---- */

/* This program's own path: the units run the same ombra. */
static int self_path(char *buf, size_t n)
{
    ssize_t l = readlink("/proc/self/exe", buf, n - 1);
    if (l <= 0)
        return om_errf(OM_E_FileNotFound, "cannot find this program's path: %s", strerror(errno));
    buf[l] = 0;
    return 0;
}

/* s as one word of a unit's command line: in double quotes, with '\\' and '"' escaped, '%'
 * doubled (systemd's specifiers) and '$' doubled (its variables), so a path with blanks stays
 * one argument and means itself. (Control characters never get here: unit_text refuses them.) */
static const char *unit_quote(const char *s, char *buf, size_t n)
{
    size_t k = 0;
    if (n < 3) return "\"\"";
    buf[k++] = '"';
    for (; *s && k + 4 < n; s++) {
        if (*s == '"' || *s == '\\') buf[k++] = '\\';
        if (*s == '%' || *s == '$') buf[k++] = *s;
        buf[k++] = *s;
    }
    buf[k++] = '"';
    buf[k] = 0;
    return buf;
}

/* A path that can go into a unit: no control character (a newline would start a directive of
 * its own in the unit, or end the marker's comment line). */
static int unit_path_ok(const char *what, const char *p)
{
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return om_errf(OM_E_InvalidPath,
                           "%s has a control character in its path: a systemd unit cannot name "
                           "it safely. HINT: move it to a plain path",
                           what);
    return 0;
}

static int unit_text(const sched *s, const char *self, int timer, char **out)
{
    char *conf = cli_abs_path(om_conf_file()), qself[8300], qconf[8300];
    if (!conf) return om_errf(OM_E_OutOfMemory, "out of memory");
    int bad = unit_path_ok("the configuration file", conf);
    if (!bad) bad = unit_path_ok("this ombra", self);
    if (bad) {
        free(conf);
        return bad;
    }
    char delay[64] = "";
    if (s->delay_s)
        snprintf(delay, sizeof delay, "RandomizedDelaySec=%llu\n", (unsigned long long)s->delay_s);
    int l;
    if (timer)
        l = asprintf(out,
                     UNIT_MARK " from %s [schedule:%s].\n"
                               "# Edit the configuration and run it again; do not edit this file.\n"
                               "[Unit]\nDescription=Ombra backup schedule %s (%s of %s)\n\n"
                               "[Timer]\nOnCalendar=%s\n%sPersistent=%s\nUnit=" UNIT_PREFIX
                               "%s.service\n\n"
                               "[Install]\nWantedBy=timers.target\n",
                     conf, s->name, s->name, s->type, s->databases, s->calendar, delay,
                     s->persistent ? "true" : "false", s->name);
    else
        l = asprintf(out,
                     UNIT_MARK " from %s [schedule:%s].\n"
                               "# Edit the configuration and run it again; do not edit this file.\n"
                               "[Unit]\nDescription=Ombra scheduled backup %s (%s of %s)\n"
                               "Wants=ombra-store.service ombra-vssd.service\n"
                               "After=ombra-store.service ombra-vssd.service\n\n"
                               "[Service]\nType=oneshot\nExecStart=%s --config %s schedule run %s\n"
                               "Nice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n"
                               /* the hardening of the package's ombra-backup@.service,
                                  line for line (test_schedule compares them) */
                               "ProtectSystem=full\nPrivateTmp=yes\nNoNewPrivileges=yes\n"
                               "ProtectKernelTunables=yes\nProtectKernelModules=yes\n"
                               "ProtectKernelLogs=yes\nProtectControlGroups=yes\n"
                               "ProtectClock=yes\nProtectHostname=yes\n"
                               "RestrictSUIDSGID=yes\nRestrictRealtime=yes\n"
                               "RestrictNamespaces=yes\nLockPersonality=yes\n"
                               "MemoryDenyWriteExecute=yes\nPrivateDevices=yes\n"
                               "ProtectProc=invisible\nUMask=0027\n"
                               "CapabilityBoundingSet=~CAP_SYS_PTRACE CAP_SYS_BOOT CAP_SYS_MODULE "
                               "CAP_SYS_TIME CAP_NET_ADMIN CAP_NET_RAW CAP_MKNOD CAP_SYS_RAWIO "
                               "CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_AUDIT_WRITE CAP_MAC_ADMIN "
                               "CAP_MAC_OVERRIDE CAP_BPF CAP_PERFMON CAP_SYS_PACCT "
                               "CAP_LINUX_IMMUTABLE CAP_SYS_TTY_CONFIG CAP_WAKE_ALARM "
                               "CAP_BLOCK_SUSPEND CAP_SYSLOG CAP_SYS_CHROOT CAP_KILL CAP_SETUID "
                               "CAP_SETGID CAP_SETPCAP CAP_SETFCAP CAP_LEASE CAP_IPC_LOCK "
                               "CAP_IPC_OWNER\n"
                               "SystemCallArchitectures=native\n"
                               "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
                     conf, s->name, s->name, s->type, s->databases,
                     unit_quote(self, qself, sizeof qself), unit_quote(conf, qconf, sizeof qconf),
                     s->name);
    free(conf);
    return l < 0 ? om_errf(OM_E_OutOfMemory, "out of memory") : 0;
}

/* What is at dir/name: 0 nothing, 1 a unit this command wrote, -1 anything else (not to be
 * touched: an administrator's own unit, a link, a folder). */
static int unit_ours(const char *dir, const char *name)
{
    char p[4096], head[sizeof UNIT_MARK];
    struct stat st;
    if (om_path_join(p, sizeof p, dir, name)) return -1;
    if (lstat(p, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISREG(st.st_mode)) return -1;
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, head, sizeof head - 1);
    close(fd);
    return r == (ssize_t)sizeof head - 1 && !memcmp(head, UNIT_MARK, sizeof head - 1) ? 1 : -1;
}

static int unit_write(const char *dir, const char *name, const char *text)
{
    char p[4096];
    int rc = om_path_join(p, sizeof p, dir, name);
    if (rc) return rc;
    if (unit_ours(dir, name) < 0)
        return om_errf(OM_E_FileAccessDenied,
                       "%s exists and was not written by ombra schedule: left as it is. HINT: "
                       "rename the schedule or move that file away",
                       p);
    rc = om_write_file_durable(om_vfs_posix(), p, text, strlen(text));
    if (!rc && chmod(p, 0644))
        rc = om_errf(om_err_from_errno(errno), "chmod %s: %s", p, strerror(errno));
    return rc;
}

/* Removes the pair of schedule name; *gone counts the files removed. */
static int unit_remove(const char *dir, const char *name, int *gone)
{
    static const char *const ext[] = {".timer", ".service"};
    for (int i = 0; i < 2; i++) {
        char f[512], p[4096];
        snprintf(f, sizeof f, UNIT_PREFIX "%s%s", name, ext[i]);
        int ours = unit_ours(dir, f);
        if (ours < 0)
            return om_errf(OM_E_FileAccessDenied,
                           "%s/%s was not written by ombra schedule: left as it is", dir, f);
        if (!ours) continue;
        if (om_path_join(p, sizeof p, dir, f) || unlink(p))
            return om_errf(om_err_from_errno(errno), "removing %s/%s: %s", dir, f, strerror(errno));
        ++*gone;
    }
    return 0;
}

/* 1 when the unit dir/name (ours) was written from this configuration file: its marker line
 * names the file. */
static int unit_from_this_file(const char *dir, const char *name)
{
    char p[4096], head[8400], want[8300];
    if (!om_conf_file()) return 0;
    char *conf = cli_abs_path(om_conf_file());
    if (!conf || om_path_join(p, sizeof p, dir, name)) {
        free(conf);
        return 0;
    }
    snprintf(want, sizeof want, UNIT_MARK " from %s [schedule:", conf);
    free(conf);
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t r = read(fd, head, sizeof head - 1);
    close(fd);
    if (r <= 0) return 0;
    head[r] = 0;
    return !strncmp(head, want, strlen(want));
}

/* The schedule names whose units are in dir (ours, written from this configuration file): into
 * a malloc'd array of strdup'd names. */
static size_t units_present(const char *dir, char ***names)
{
    size_t n = 0;
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), pl = strlen(UNIT_PREFIX);
        if (l <= pl + 6 || strncmp(e->d_name, UNIT_PREFIX, pl) ||
            strcmp(e->d_name + l - 6, ".timer") || unit_ours(dir, e->d_name) != 1 ||
            !unit_from_this_file(dir, e->d_name))
            continue;
        char **nn = realloc(*names, (n + 1) * sizeof *nn);
        if (!nn) break;
        *names = nn;
        if (!(nn[n] = strndup(e->d_name + pl, l - pl - 6))) break;
        n++;
    }
    closedir(d);
    return n;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The schedule's databases as every output shows a database: [{"id": null, "name"}] (the
 * configuration names them; their ids are the store's). */
static json_t *db_list(const char *names)
{
    json_t *l = json_array();
    for (const char *p = names; *p;) {
        p += strspn(p, " ,\t");
        size_t len = strcspn(p, " ,\t");
        if (len) json_array_append_new(l, json_pack("{s:n, s:s%}", "id", "name", p, len));
        p += len;
    }
    return l;
}

static const char *unit_dir(const cli_args *a)
{
    const char *d = cli_val(a, "unit-dir");
    return d ? d : DEFAULT_UNIT_DIR;
}

/* ---- the commands ---- */

static int need_file(void)
{
    if (om_conf_file()) return CLI_OK;
    return cli_fail(om_errf(OM_E_ConfigInvalid,
                            "no configuration file is read, so there are no schedules. HINT: "
                            "write [schedule:NAME] sections in " OM_CONF_DEFAULT_FILE
                            " (or name a file with --config)"));
}

static int cmd_write(const cli_args *a)
{
    int rc = need_file();
    if (rc) return rc;
    sched *s;
    size_t n;
    if ((rc = sched_all(&s, &n))) {
        free(s);
        return rc;
    }
    const char *dir = unit_dir(a);
    char self[4096], next[128];
    int err = self_path(self, sizeof self), unchecked = 0;
    for (size_t i = 0; i < n && !err; i++) {
        int c = calendar_check(&s[i], next, sizeof next);
        if (c < 0) err = c;
        unchecked |= c == 1;
    }
    json_t *written = json_array(), *removed = json_array();
    for (size_t i = 0; i < n && !err; i++) {
        char *svc = NULL, *tmr = NULL, f[512];
        err = unit_text(&s[i], self, 0, &svc);
        if (!err) err = unit_text(&s[i], self, 1, &tmr);
        snprintf(f, sizeof f, UNIT_PREFIX "%s.service", s[i].name);
        if (!err) err = unit_write(dir, f, svc);
        snprintf(f, sizeof f, UNIT_PREFIX "%s.timer", s[i].name);
        if (!err) err = unit_write(dir, f, tmr);
        if (!err) json_array_append_new(written, json_string(s[i].name));
        free(svc);
        free(tmr);
    }
    /* Schedules taken out of the file: their timers go too. */
    char **present;
    size_t np = err ? 0 : units_present(dir, &present);
    for (size_t i = 0; i < np && !err; i++) {
        int keep = 0, gone = 0;
        for (size_t j = 0; j < n; j++)
            keep |= !strcmp(present[i], s[j].name);
        if (!keep && !(err = unit_remove(dir, present[i], &gone)))
            json_array_append_new(removed, json_string(present[i]));
    }
    if (np) names_free(present, np);
    free(s);
    if (err) {
        json_decref(written);
        json_decref(removed);
        return cli_fail(err);
    }
    if (cli_flag(a, "json")) {
        json_t *doc = json_pack("{s:s, s:o, s:o, s:b}", "unit_dir", dir, "written", written,
                                "removed", removed, "calendars_checked", !unchecked);
        rc = cli_print_json(doc);
        json_decref(doc);
        return rc;
    }
    size_t i;
    json_t *v;
    json_array_foreach(written, i, v)
        printf("wrote %s/" UNIT_PREFIX "%s.timer and .service\n", dir, json_string_value(v));
    json_array_foreach(removed, i, v) printf("removed %s/" UNIT_PREFIX "%s.timer and .service "
                                             "(no longer in the configuration)\n",
                                             dir, json_string_value(v));
    if (unchecked) printf("systemd-analyze is not installed: the calendars were not checked\n");
    if (json_array_size(written))
        printf("next: systemctl daemon-reload && systemctl enable --now " UNIT_PREFIX
               "NAME.timer (each)\n");
    json_decref(written);
    json_decref(removed);
    return CLI_OK;
}

/* The names of a listed schedule's databases, blank-separated (into a static buffer). */
static const char *s_dbs(json_t *e)
{
    static char buf[512];
    size_t i, used = 0;
    json_t *d;
    buf[0] = 0;
    json_array_foreach(json_object_get(e, "databases"), i, d)
    {
        int w = snprintf(buf + used, sizeof buf - used, "%s%s", i ? " " : "",
                         om_json_str_or(d, "name", ""));
        if (w < 0 || (size_t)w >= sizeof buf - used) break;
        used += (size_t)w;
    }
    return buf;
}

static int cmd_list(const cli_args *a)
{
    sched *s = NULL;
    size_t n = 0;
    int rc = om_conf_file() ? sched_all(&s, &n) : CLI_OK;
    if (rc) {
        free(s);
        return rc;
    }
    const char *dir = unit_dir(a);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        char next[128], f[512];
        int c = calendar_check(&s[i], next, sizeof next);
        snprintf(f, sizeof f, UNIT_PREFIX "%s.timer", s[i].name);
        json_array_append_new(
            list, json_pack("{s:s, s:o, s:s, s:s, s:s, s:I, s:b, s:b, s:b, s:s?, s:s?}", "name",
                            s[i].name, "databases", db_list(s[i].databases), "type", s[i].type,
                            "calendar", s[i].calendar, "repo", s[i].repo, "randomized_delay_s",
                            (json_int_t)s[i].delay_s, "persistent", s[i].persistent, "expire",
                            s[i].expire, "timer_written", unit_ours(dir, f) == 1, "next",
                            c == 0 && next[0] ? next : NULL, "calendar_error",
                            c < 0 ? om_err_detail() : NULL));
    }
    free(s);
    if (cli_flag(a, "json")) {
        json_t *doc = json_pack("{s:s?, s:s, s:o}", "config", om_conf_file(), "unit_dir", dir,
                                "schedules", list);
        rc = cli_print_json(doc);
        json_decref(doc);
        return rc;
    }
    if (!json_array_size(list))
        printf("no schedules in %s\n", om_conf_file() ? om_conf_file() : "(no configuration file)");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        char dbs[512];
        snprintf(dbs, sizeof dbs, "%s", s_dbs(e));
        printf("%s: %s of %s to %s, %s%s; timer %s%s%s\n", om_json_str_or(e, "name", ""),
               om_json_str_or(e, "type", ""), dbs, om_json_str_or(e, "repo", ""),
               om_json_str_or(e, "calendar", ""),
               json_is_true(json_object_get(e, "persistent")) ? " (persistent)" : "",
               json_is_true(json_object_get(e, "timer_written")) ? "written" : "not written",
               om_json_str_or(e, "next", NULL) ? ", next " : "", om_json_str_or(e, "next", ""));
        if (om_json_str_or(e, "calendar_error", NULL))
            printf("  error: %s\n", om_json_str_or(e, "calendar_error", ""));
    }
    json_decref(list);
    return CLI_OK;
}

static int cmd_remove(const cli_args *a)
{
    const char *dir = unit_dir(a);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_fail(om_errf(OM_E_FileNotFound, "the unit folder %s is not a folder", dir));
    for (int i = 0; i < a->npos; i++) {
        const char *n = a->pos[i];
        int ok = (*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9');
        for (const char *c = n; ok && *c; c++)
            ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *c) &&
                 *c;
        if (!ok) return cli_usage(a, "'%s' is not a schedule's name", n);
    }
    char **present;
    size_t np = units_present(dir, &present);
    int err = 0, total = 0;
    for (int i = 0; i < a->npos && !err; i++) {
        int gone = 0;
        err = unit_remove(dir, a->pos[i], &gone);
        if (!err && !gone)
            err = om_errf(OM_E_FileNotFound, "no timer of schedule '%s' in %s", a->pos[i], dir);
        total += gone;
    }
    for (size_t i = 0; i < np && !err && a->npos == 0; i++)
        err = unit_remove(dir, present[i], &total);
    if (np) names_free(present, np);
    if (err) return cli_fail(err);
    if (cli_flag(a, "json")) {
        json_t *doc = json_pack("{s:s, s:i}", "unit_dir", dir, "files_removed", total);
        int rc = cli_print_json(doc);
        json_decref(doc);
        return rc;
    }
    printf("removed %d unit files from %s%s\n", total, dir,
           total ? "; next: systemctl daemon-reload" : "");
    return CLI_OK;
}

/* Runs this ombra again with args (the same configuration file); its exit status. */
/* Runs this ombra with args (and --config), stdout inherited, or (doc not NULL) with --json
 * after args[0] (the command) and its one document parsed into *doc (NULL when it printed none
 * that parses). Returns its exit status, or -1 when it could not run. */
static int run_self(const char *self, char **args, size_t nargs, json_t **doc)
{
    char **argv = calloc(nargs + 5, sizeof *argv);
    if (!argv) return -1;
    size_t k = 0;
    argv[k++] = (char *)self;
    argv[k++] = "--config";
    argv[k++] = (char *)om_conf_file();
    for (size_t i = 0; i < nargs; i++) {
        argv[k++] = args[i];
        if (i == 0 && doc) argv[k++] = "--json";
    }
    fflush(stdout);
    char *out = NULL;
    int st = run_prog(argv, doc ? &out : NULL, (size_t)64 << 20, 0);
    free(argv);
    if (doc) *doc = out ? json_loads(out, 0, NULL) : NULL;
    free(out);
    return st;
}

/* The end of schedule run: with --json its one document, {"schedule", "type", "repo",
 * "backup": the backup's document (its own error document when it failed; null when it printed
 * none), "expire": expire's document or null (not run: the backup failed, expire = no, or no
 * keep-* settings), "exit": this command's exit code}. Steals bdoc and edoc; returns ex. */
static int run_done(const sched *s, int json, json_t *bdoc, json_t *edoc, int ex)
{
    if (!json) return ex;
    json_t *doc = json_pack("{s:s, s:s, s:s, s:o, s:o, s:i}", "schedule", s->name, "type", s->type,
                            "repo", s->repo, "backup", bdoc ? bdoc : json_null(), "expire",
                            edoc ? edoc : json_null(), "exit", ex);
    int rc = cli_print_json(doc);
    json_decref(doc);
    return rc ? rc : ex;
}

static int run_backup_then_expire(const sched *sp, const char *self, int json, char *dbs,
                                  char **args);

static int cmd_run(const cli_args *a)
{
    int rc = need_file();
    if (rc) return rc;
    sched s;
    int err = sched_get(a->pos[0], &s);
    char self[4096];
    if (!err) err = self_path(self, sizeof self);
    if (err) return cli_fail(err);
    /* The backup: ombra backup --repo R --type T [--provider P] DB... (every database named:
     * ombra backup refuses more than a run takes, never one dropped here) */
    char *dbs = strdup(s.databases);
    size_t max = 20 + (strlen(s.databases) + 1) / 2; /* names of a letter, one blank apart */
    char **args = dbs ? calloc(max, sizeof *args) : NULL;
    if (!args) {
        free(dbs);
        return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    }
    rc = run_backup_then_expire(&s, self, cli_flag(a, "json"), dbs, args);
    free(args);
    free(dbs);
    return rc;
}

/* schedule run's job, args room for every database named and the options. */
static int run_backup_then_expire(const sched *sp, const char *self, int json, char *dbs,
                                  char **args)
{
    sched s = *sp;
    size_t n = 0;
    args[n++] = "backup";
    args[n++] = "--repo";
    args[n++] = (char *)s.repo;
    args[n++] = "--type";
    args[n++] = (char *)s.type;
    if (s.provider) {
        args[n++] = "--provider";
        args[n++] = (char *)s.provider;
    }
    args[n++] = "--"; /* what follows are databases, whatever they look like */
    char *save = NULL;
    for (char *d = strtok_r(dbs, " ,\t", &save); d; d = strtok_r(NULL, " ,\t", &save))
        args[n++] = d;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *bdoc = NULL, *edoc = NULL;
    if (!json) printf("schedule %s: %s backup of %s to %s\n", s.name, s.type, s.databases, s.repo);
    int st = run_self(self, args, n, json ? &bdoc : NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (st < 0 && json)
        return cli_fail(om_errf(OM_E_Internal, "schedule %s: cannot run %s: %s", s.name, self,
                                strerror(errno)));
    if (st != 0) {
        om_error("schedule %s: the %s backup of %s failed (exit %d) after %.1f s", s.name, s.type,
                 s.databases, st, secs);
        return run_done(&s, json, bdoc, NULL, st > 0 && st < 126 ? st : CLI_FAIL);
    }
    om_info("schedule %s: the %s backup of %s succeeded in %.1f s", s.name, s.type, s.databases,
            secs);
    /* Retention: the repository's keep-* settings, when it has some. */
    static const char *const keys[] = {"keep-last",   "keep-daily",  "keep-weekly", "keep-monthly",
                                       "keep-yearly", "keep-within", "keep-full"};
    char rs[300], opt[7][32];
    snprintf(rs, sizeof rs, "repo:%s", s.repo);
    n = 0;
    args[n++] = "expire";
    args[n++] = "--repo";
    args[n++] = (char *)s.repo;
    for (size_t i = 0; i < 7; i++) {
        const char *v = om_conf(rs, keys[i]);
        if (!v) continue;
        snprintf(opt[i], sizeof opt[i], "--%s", keys[i]);
        args[n++] = opt[i];
        args[n++] = (char *)v;
    }
    if (!s.expire || n == 3) return run_done(&s, json, bdoc, NULL, CLI_OK);
    st = run_self(self, args, n, json ? &edoc : NULL);
    if (st != 0) {
        om_error("schedule %s: retention of %s failed (exit %d) after the backup", s.name, s.repo,
                 st);
        return run_done(&s, json, bdoc, edoc, st > 0 && st < 126 ? st : CLI_FAIL);
    }
    return run_done(&s, json, bdoc, edoc, CLI_OK);
}

/* ---- the table ---- */

#define UNIT_DIR_OPT                                                                               \
    {                                                                                              \
        "unit-dir", "DIR", "where the systemd units go (default " DEFAULT_UNIT_DIR ")", 0          \
    }
static const cli_opt write_opts[] = {UNIT_DIR_OPT, CLI_JSON_OPT, {0}};
static const cli_opt list_opts[] = {UNIT_DIR_OPT, CLI_JSON_OPT, {0}};
static const cli_opt remove_opts[] = {UNIT_DIR_OPT, CLI_JSON_OPT, {0}};
static const cli_opt run_opts[] = {
    {"json", NULL,
     "run backup and expire with --json and print one document: {\"schedule\", \"type\", "
     "\"repo\", \"backup\": its document, \"expire\": its document or null, \"exit\"}",
     0},
    {0}};

static const cli_cmd schedule_cmds[] = {
    {"write", "", write_opts, "write a systemd timer for each [schedule:NAME] of the configuration",
     "Each schedule gets ombra-schedule-NAME.timer (OnCalendar = its calendar, "
     "RandomizedDelaySec = its randomized-delay, Persistent = its persistent: a run missed while "
     "the machine was off happens at boot) and ombra-schedule-NAME.service (ombra schedule run "
     "NAME). Timers written from this file for schedules no longer in it are removed (those of "
     "another configuration file stay). Calendars are checked with "
     "systemd-analyze. Files this command did not write are never replaced. Then: systemctl "
     "daemon-reload && systemctl enable --now ombra-schedule-NAME.timer.\n\nWithout systemd, "
     "cron runs the same job: e.g. '0 1 * * * root ombra schedule run nightly' in "
     "/etc/cron.d/ombra (docs/configuration.md).",
     cmd_write},
    {"list", "", list_opts,
     "the schedules of the configuration, their timers and when each runs next", NULL, cmd_list},
    {"remove", "[NAME...]", remove_opts,
     "remove the timers of the schedules named (default: those written from this configuration "
     "file)",
     "Only units this command wrote are removed (their first line says so); without names, those "
     "written from this configuration file (their first line names it): another file's "
     "schedules stay.",
     cmd_remove},
    {"run", "NAME", run_opts, "run one schedule now: its backup, then its retention",
     "What the timer's service runs: ombra backup --repo REPO --type TYPE DATABASES..., then, "
     "when the schedule says expire = yes (the default) and [repo:REPO] has keep-* settings, "
     "ombra expire with them. Exits with the backup's status (75: retryable; systemd's "
     "Restart= does not apply to timers: the next run retries).",
     cmd_run},
    {0},
};

const cli_group cli_schedule_group = {"schedule", "scheduled backups: systemd timers",
                                      schedule_cmds};

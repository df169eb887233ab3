/* The helpers every group of `ombra` shares (cli.h): errors and usage errors, option values,
 * the clients of the daemons, output, a repository's passphrase. Below the groups and ombra.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "cli/cli.h"
#include "store/client.h"

/* ---- printing errors ---- */

/* Prints s on one line: a detail that spans lines would break the one-line contract. */
static void put_one_line(const char *s)
{
    for (; *s; s++)
        fputc(*s == '\n' || *s == '\r' ? ' ' : *s, stderr);
}

static int json_mode;
static int json_printed; /* a document went out: it tells of the failure itself */

void cli_set_json(int on)
{
    json_mode = on;
}

/* With --json, an error is a document on stdout too: {"error": {"code", "name", "message",
 * "hint"}}, the hint being what follows "HINT: " in the detail (null when none); not after a
 * command's own document, which reports its failure (verify's damage, a backup's partial sets):
 * stdout holds one document either way. */
static json_t *error_object(int code, const char *name, const char *detail, int exit_status)
{
    const char *h = strstr(detail, "HINT: ");
    char *msg = h ? strndup(detail, (size_t)(h - detail)) : strdup(detail);
    size_t l = msg ? strlen(msg) : 0;
    while (l && (msg[l - 1] == ' ' || msg[l - 1] == '.'))
        msg[--l] = 0;
    json_t *e = json_pack("{s:i, s:s, s:s, s:s?, s:i}", "code", code, "name", name, "message",
                          msg ? msg : detail, "hint", h ? h + 6 : NULL, "exit", exit_status);
    free(msg);
    return e;
}

static void json_error(int code, const char *name, const char *detail, int exit_status)
{
    if (!json_mode || json_printed) return;
    json_t *doc = json_pack("{s:o}", "error", error_object(code, name, detail, exit_status));
    if (doc) cli_print_json(doc);
    json_decref(doc);
}

void cli_json_add_error(json_t *doc, int err)
{
    om_err_saved was;
    om_err_save(&was, err);
    cli_suggest_db(err); /* the HINT cli_fail's line will have */
    const char *d = om_err_detail();
    if (!d || !*d) d = om_err_msg(err);
    json_object_set_new(
        doc, "error",
        error_object(err, om_err_name(err), d, cli_retryable(err) ? CLI_TEMPFAIL : CLI_FAIL));
    om_err_restore(&was);
}

int cli_fail(int err)
{
    cli_suggest_db(err); /* "did you mean 'mail1'?" in the HINT of a mistyped database */
    const char *d = om_err_detail();
    if (!d || !*d) d = om_err_msg(err);
    fprintf(stderr, "%sombra: ", om_log_tool_prefix(OM_ERROR));
    put_one_line(d);
    fprintf(stderr, " (%d %s)\n", err, om_err_name(err));
    int status = cli_retryable(err) ? CLI_TEMPFAIL : CLI_FAIL;
    json_error(err, om_err_name(err), d, status);
    return status;
}

int cli_retryable(int err)
{
    /* EtcdUnavailable: the DAG's etcd not reached (a store whose directory is not reached yet
     * refuses before it commits anything): a temporary failure, as the others. */
    return err == OM_E_SyncCopiesUnavailable || err == OM_E_ActiveLeaseLapsed ||
           err == OM_E_DatabaseMoving || err == OM_E_WrongServer || err == OM_E_EtcdUnavailable;
}

/* The part after "ombra: " of a usage error, then where to look. */
static int usage_line(const char *see, const char *fmt, va_list ap)
{
    char msg[512], full[700];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "%sombra: ", om_log_tool_prefix(OM_ERROR));
    put_one_line(msg);
    size_t n = strlen(msg); /* "Did you mean 'x'?" ends its own sentence */
    fprintf(stderr, "%s See '%s --help'.\n", n && msg[n - 1] == '?' ? "" : ".", see);
    snprintf(full, sizeof full, "%s%s HINT: see '%s --help'", msg,
             n && msg[n - 1] == '?' ? "" : ".", see);
    json_error(CLI_USAGE, "Usage", full, CLI_USAGE);
    return CLI_USAGE;
}

int cli_usage_at(const char *see, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    usage_line(see, fmt, ap);
    va_end(ap);
    return CLI_USAGE;
}

int cli_usage(const cli_args *a, const char *fmt, ...)
{
    char see[128];
    snprintf(see, sizeof see, "ombra %s%s%s", a->group->name, a->cmd->name[0] ? " " : "",
             a->cmd->name);
    va_list ap;
    va_start(ap, fmt);
    usage_line(see, fmt, ap);
    va_end(ap);
    return CLI_USAGE;
}

/* ---- option values ---- */

static int opt_index(const cli_cmd *c, const char *name)
{
    for (int i = 0; c->opts && c->opts[i].name; i++)
        if (strcmp(c->opts[i].name, name) == 0) return i;
    return -1;
}

const char *cli_val(const cli_args *a, const char *name)
{
    int i = opt_index(a->cmd, name);
    if (i < 0) {
        fprintf(stderr, "ombra: bug: command '%s' has no option --%s\n", a->cmd->name, name);
        abort();
    }
    return a->val[i];
}

int cli_flag(const cli_args *a, const char *name)
{
    return cli_val(a, name) != NULL;
}

int cli_list(const cli_args *a, const char *name, const char *const **out)
{
    cli_val(a, name); /* aborts on a name the command does not have */
    int i = opt_index(a->cmd, name);
    *out = a->list[i];
    return a->nlist[i];
}

int cli_number(const cli_args *a, const char *what, const char *text, uint64_t min, uint64_t max,
               int allow_suffix, uint64_t *out)
{
    const char *p = text;
    if (*p < '0' || *p > '9') goto not_number;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno == ERANGE) return cli_usage(a, "%s is too large: '%s'", what, text);
    unsigned shift = 0;
    if (allow_suffix && *end) {
        static const char units[] = "KMG";
        const char *u = strchr(units, *end & ~0x20); /* upper case */
        if (!u) goto not_number;
        shift = 10 * (unsigned)(u - units + 1);
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
    }
    if (*end) goto not_number;
    if (shift && v > (UINT64_MAX >> shift))
        return cli_usage(a, "%s is too large: '%s'", what, text);
    v <<= shift;
    if (v < min || v > max) {
        if (max == UINT64_MAX || v <= max)
            return cli_usage(a, "%s must be at least %llu, not '%s'", what, (unsigned long long)min,
                             text);
        return cli_usage(a, "%s must be between %llu and %llu, not '%s'", what,
                         (unsigned long long)min, (unsigned long long)max, text);
    }
    *out = v;
    return CLI_OK;
not_number:
    return cli_usage(a, "%s must be a number, not '%s'", what, text);
}

int cli_onoff(const cli_args *a, const char *name, int *out)
{
    const char *v = cli_val(a, name);
    *out = -1;
    if (!v) return CLI_OK;
    if (strcmp(v, "on") == 0)
        *out = 1;
    else if (strcmp(v, "off") == 0)
        *out = 0;
    else
        return cli_usage(a, "--%s takes on or off, not '%s'", name, v);
    return CLI_OK;
}

/* ---- the daemons ---- */

static store_client *store; /* this run's client of the store (one command per run) */

int cli_store(store_client **out)
{
    int rc = store ? 0 : store_client_new(NULL, &store);
    *out = store;
    return rc;
}

void cli_store_close(void)
{
    store_client_free(store);
    store = NULL;
}

int cli_vss_call(json_t *req, json_t **reply)
{
    char dir[4096], path[4200];
    *reply = NULL;
    int rc = om_runtime_dir(dir, sizeof dir);
    if (!rc && snprintf(path, sizeof path, "%s/vss.sock", dir) >= (int)sizeof path)
        rc = om_errf(OM_E_InvalidPath, "path too long: %s/vss.sock", dir);
    if (!rc) rc = om_proto_call(path, req, NULL, 0, reply, NULL, NULL);
    json_decref(req);
    if (rc) {
        json_decref(*reply);
        *reply = NULL;
        return cli_fail(rc);
    }
    return CLI_OK;
}

/* ---- output ---- */

int cli_print_json(json_t *v)
{
    /* Every document says the version of its shape; a copy, so the caller's object is left as
     * it was (it may be printed in part, or kept). */
    json_t *doc = json_is_object(v) ? json_copy(v) : json_incref(v);
    if (json_is_object(doc))
        json_object_set_new(doc, "json_version", json_integer(CLI_JSON_VERSION));
    int bad = !doc || json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0 ||
              putchar('\n') == EOF;
    json_decref(doc);
    json_printed = 1;
    if (bad) {
        json_mode = 0; /* the error cannot go where this one failed */
        return cli_fail(om_errf(OM_E_DiskIO, "writing standard output: %s", strerror(errno)));
    }
    return CLI_OK;
}

int cli_print_json_list(const char *key, json_t *list)
{
    json_t *doc = json_pack("{s:O}", key, list);
    int rc = cli_print_json(doc);
    json_decref(doc);
    return rc;
}

int cli_write_stdout(const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, stdout) != n)
        return cli_fail(om_errf(OM_E_DiskIO, "writing standard output: %s", strerror(errno)));
    return CLI_OK;
}

const char *cli_human_bytes(uint64_t n, char *buf, size_t len)
{
    if (n < 1000)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else if (n < 1000000)
        snprintf(buf, len, "%.1f kB", (double)n / 1e3);
    else if (n < 1000000000)
        snprintf(buf, len, "%.1f MB", (double)n / 1e6);
    else
        snprintf(buf, len, "%.2f GB", (double)n / 1e9);
    return buf;
}

char *cli_abs_path(const char *path)
{
    if (path[0] == '/' || path[0] == 0) return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return strdup(path); /* the daemon will say what is wrong with it */
    char *out = NULL;
    const char *p = path;
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    if (asprintf(&out, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, p) < 0) out = NULL;
    free(cwd);
    return out;
}

/* ---- repositories ---- */

/* A passphrase file others can read gives the repository's key away; one others can write (or
 * owned by another user, who can chmod it) lets them choose the key of a new repository. As
 * OpenSSH with a private key, but a warning rather than a refusal (as restic and pgBackRest
 * read theirs without one): a backup that stops over a mode bit is worse than a warned one. The
 * file as opened is what is looked at, not its name again. */
static void warn_open_passphrase(FILE *f, const char *file)
{
    struct stat st;
    if (fstat(fileno(f), &st)) return;
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (st.st_uid != geteuid() && st.st_uid != 0)
        om_warn("the passphrase file %s is owned by uid %u, not by this user (uid %u; mode %04o). "
                "HINT: chown it to this user and chmod 600",
                file, (unsigned)st.st_uid, (unsigned)geteuid(), mode);
    else if (mode & 066)
        om_warn("the passphrase file %s is %s by others (mode %04o). HINT: chmod 600 %s", file,
                mode & 044 ? (mode & 022 ? "readable and writable" : "readable") : "writable", mode,
                file);
}

/* The repository the command means before it is made a path: --repo, $OMBRA_REPO, the
 * configuration's default-repo, its only [repo:NAME]; NULL when none says. */
static const char *repo_chosen; /* cli_repo_choose's */

void cli_repo_choose(const char *wanted)
{
    repo_chosen = wanted;
}

const char *cli_repo_default(void)
{
    const char *v = getenv("OMBRA_REPO");
    if (v && *v) return v;
    v = om_conf("ombra", "default-repo");
    if (v) return v;
    const char *const *names;
    return om_conf_names("repo", &names) == 1 ? names[0] : NULL;
}

static const char *repo_wanted(const cli_args *a)
{
    if (opt_index(a->cmd, "repo") < 0) return repo_chosen; /* repo init: an argument */
    const char *v = cli_val(a, "repo");
    return v ? v : cli_repo_default();
}

/* The configuration's name for the repository wanted, when it names it ([repo:NAME]). */
static const char *repo_configured(const char *wanted)
{
    char section[300];
    if (!wanted || strchr(wanted, '/')) return NULL;
    snprintf(section, sizeof section, "repo:%s", wanted);
    return om_conf(section, "path") ? wanted : NULL;
}

int cli_repo_path(const cli_args *a, char **path, const char **name)
{
    const char *w = repo_wanted(a), *file = om_conf_file();
    *path = NULL;
    *name = NULL;
    if (!w) {
        if (file) return cli_usage(a, "missing --repo NAME|PATH (%s names no default-repo)", file);
        return cli_usage(a, "missing --repo NAME|PATH (no configuration file gives a default)");
    }
    if (!*w) return cli_usage(a, "--repo needs a name or a path");
    *name = repo_configured(w);
    if (*name) {
        char section[300];
        snprintf(section, sizeof section, "repo:%s", *name);
        *path = strdup(om_conf(section, "path"));
    } else if (!strchr(w, '/') && file && !cli_val(a, "repo") &&
               !(getenv("OMBRA_REPO") && *getenv("OMBRA_REPO"))) {
        /* default-repo naming a section that is not there: the file is wrong, say where */
        return cli_fail(om_errf(OM_E_ConfigInvalid,
                                "%s:%d: default-repo names '%s', but there is no [repo:%s] with "
                                "a path",
                                file, om_conf_line("ombra", "default-repo"), w, w));
    } else {
        struct stat st;
        char where[700];
        const char *from = cli_val(a, "repo") ? "--repo" : "$OMBRA_REPO";
        if (file)
            snprintf(where, sizeof where, "%s names it, %s has no [repo:%s]", from, file, w);
        else
            snprintf(where, sizeof where, "%s names it, no configuration file is read", from);
        if (!strchr(w, '/') && stat(w, &st) != 0)
            return cli_fail(om_errf(OM_E_FileNotFound,
                                    "no repository named '%s': %s, and there is no folder %s "
                                    "here. HINT: a repository in this folder reads ./%s",
                                    w, where, w, w));
        *path = cli_abs_path(w);
    }
    if (!*path) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    return CLI_OK;
}

const char *cli_repo_name(const cli_args *a)
{
    return repo_configured(repo_wanted(a));
}

int cli_repo_path_opt(const cli_args *a, char **path, const char **name)
{
    *path = NULL;
    *name = NULL;
    return repo_wanted(a) ? cli_repo_path(a, path, name) : CLI_OK;
}

int cli_repo_passphrase(const cli_args *a, char *buf, size_t n, const char **out)
{
    const char *file = cli_val(a, "passphrase-file"), *env = getenv("OMBRA_REPO_PASSPHRASE");
    *out = NULL;
    if (!file && !(env && *env)) {
        const char *name = repo_configured(repo_wanted(a));
        char section[300];
        snprintf(section, sizeof section, "repo:%s", name ? name : "");
        if (name) file = om_conf(section, "passphrase-file");
    }
    if (!file) {
        if (env && *env) *out = env;
        return 0;
    }
    /* Not blocking on a FIFO nobody writes (a backup from a timer would hang), and only a
     * regular file: a device, a FIFO or a folder is not a passphrase. */
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return om_errf(om_err_from_errno(errno), "cannot read the passphrase file %s: %s", file,
                       strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        int dir = !fstat(fd, &st) && S_ISDIR(st.st_mode);
        close(fd);
        return om_errf(OM_E_InvalidParameter,
                       "the passphrase file %s is not a regular file (%s). HINT: put the "
                       "passphrase in a file of its own, mode 600",
                       file,
                       dir                    ? "a folder"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)
                           ? "a device"
                           : "a socket or another special file");
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return om_errf(OM_E_OutOfMemory, "cannot read the passphrase file %s", file);
    }
    warn_open_passphrase(f, file);
    size_t got = fread(buf, 1, n - 1, f);
    int more = got == n - 1 && fgetc(f) != EOF;
    fclose(f);
    buf[got] = 0;
    size_t line = 0; /* the first line's length, counting any zero byte in it */
    while (line < got && buf[line] != '\r' && buf[line] != '\n')
        line++;
    if (more && line == got)
        return om_errf(OM_E_InvalidParameter, "the passphrase in %s is longer than %zu bytes", file,
                       n - 2);
    /* A zero byte would end the passphrase there in silence (a binary key file): refused. */
    const char *z = memchr(buf, 0, line);
    if (z)
        return om_errf(OM_E_InvalidParameter,
                       "the passphrase file %s has a zero byte at offset %zu: a passphrase is "
                       "text. HINT: encode a binary key as text (base64) in the file",
                       file, (size_t)(z - buf));
    buf[line] = 0;
    if (!buf[0]) return om_errf(OM_E_InvalidParameter, "the passphrase file %s is empty", file);
    if (!buf[strspn(buf, " \t")])
        return om_errf(OM_E_InvalidParameter,
                       "the passphrase file %s holds only blanks on its first line", file);
    *out = buf;
    return 0;
}

int cli_local_dag(rp_dag **d, char *server, size_t n)
{
    /* The store's directory in etcd; else the local ombra-repld's, when one runs (a server
     * whose store kept its file directory holds passive copies all the same). */
    store_client *sc = NULL;
    json_t *st = NULL, *rs = NULL;
    char run[4096] = "", sock[4200];
    *d = NULL;
    int rc = cli_store(&sc);
    if (!rc) store_client_retry_busy(sc, 1); /* a busy store is no reason to fail a backup */
    if (!rc) rc = store_client_status(sc, &st);
    json_t *dir = json_object_get(st, "directory"), *where = dir;
    if (!rc && strcmp(om_json_str_or(dir, "backend", ""), "etcd")) {
        where = NULL;
        if (om_runtime_dir(run, sizeof run)) run[0] = 0;
        snprintf(sock, sizeof sock, "%s/repl.sock", run);
        json_t *req = json_pack("{s:s}", "op", "status");
        if (run[0] && !access(sock, F_OK) && !om_proto_call(sock, req, NULL, 0, &rs, NULL, NULL))
            where = rs;
        json_decref(req);
    }
    if (!rc) snprintf(server, n, "%s", om_json_str_or(st, "server", ""));
    if (!rc && where)
        rc = rp_dag_open(om_json_str_or(where, "etcd", ""), om_json_str_or(where, "dag", NULL), 1,
                         d);
    json_decref(st);
    json_decref(rs);
    return rc;
}

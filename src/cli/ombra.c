/* `ombra`: finds the group and the command in the tables, parses the arguments against the
 * command's declaration (cli.h), runs it, and holds the helpers every group shares. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "cli/cli.h"
#include "store/client.h"

#ifndef OMBRA_VERSION
#define OMBRA_VERSION "unknown"
#endif

static const cli_group *const groups[] = {
    &cli_db_group,     &cli_mail_group,    &cli_dbutil_group, &cli_vss_group,
    &cli_backup_group, &cli_restore_group, &cli_repo_group,   &cli_backups_group,
    &cli_verify_group, &cli_expire_group,  &cli_dag_group,
};
#define NGROUPS (sizeof groups / sizeof groups[0])

/* ---- printing errors ---- */

/* Prints s on one line: a detail that spans lines would break the one-line contract. */
static void put_one_line(const char *s)
{
    for (; *s; s++)
        fputc(*s == '\n' || *s == '\r' ? ' ' : *s, stderr);
}

int cli_fail(int err)
{
    const char *d = om_err_detail();
    fputs("ombra: ", stderr);
    put_one_line(d && *d ? d : om_err_msg(err));
    fprintf(stderr, " (%d %s)\n", err, om_err_name(err));
    return CLI_FAIL;
}

/* The part after "ombra: " of a usage error, then where to look. */
static int usage_line(const char *see, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fputs("ombra: ", stderr);
    put_one_line(msg);
    fprintf(stderr, ". See '%s --help'.\n", see);
    return CLI_USAGE;
}

static int usage_at(const char *see, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_at(const char *see, const char *fmt, ...)
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

static int is_list_opt(const cli_opt *o)
{
    size_t l = o->arg ? strlen(o->arg) : 0;
    return l > 3 && strcmp(o->arg + l - 3, "...") == 0;
}

/* Appends a value to list option k (room for every argument was allocated). */
static void list_add(cli_args *a, int k, const char *v)
{
    a->list[k][a->nlist[k]++] = v;
    if (!a->val[k]) a->val[k] = v;
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
    if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0 || putchar('\n') == EOF)
        return cli_fail(om_errf(OM_E_DiskIO, "writing standard output: %s", strerror(errno)));
    return CLI_OK;
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

/* ---- help ---- */

/* The usage line's tail: positional arguments, then options ([--x ARG] unless required). */
static void print_synopsis(FILE *f, const cli_group *g, const cli_cmd *c)
{
    fprintf(f, "ombra %s%s%s", g->name, c->name[0] ? " " : "", c->name);
    if (c->pos && *c->pos) fprintf(f, " %s", c->pos);
    for (int i = 0; c->opts && c->opts[i].name; i++) {
        const cli_opt *o = &c->opts[i];
        fprintf(f, " %s--%s%s%s%s", o->required ? "" : "[", o->name, o->arg ? " " : "",
                o->arg ? o->arg : "", o->required ? "" : "]");
    }
    fputc('\n', f);
}

static void print_cmd_help(const cli_group *g, const cli_cmd *c)
{
    fputs("usage: ", stdout);
    print_synopsis(stdout, g, c);
    printf("\n%s.\n", c->summary);
    if (c->help) printf("\n%s\n", c->help);
    printf("\noptions:\n");
    for (int i = 0; c->opts && c->opts[i].name; i++) {
        const cli_opt *o = &c->opts[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-26s %s\n", left, o->help);
    }
    printf("  %-26s %s\n", "--help", "show this help");
}

static void print_group_help(const cli_group *g)
{
    printf("usage: ombra %s COMMAND [ARGUMENTS] [OPTIONS]\n\n%s.\n\ncommands:\n", g->name,
           g->summary);
    for (const cli_cmd *c = g->cmds; c->name; c++) {
        fputs("  ", stdout);
        print_synopsis(stdout, g, c);
        printf("      %s\n", c->summary);
    }
    printf("\nRun 'ombra %s COMMAND --help' for a command's options.\n", g->name);
}

static void print_main_help(void)
{
    printf("usage: ombra [--help] [--version] GROUP COMMAND [ARGUMENTS] [OPTIONS]\n\n"
           "Exchange-style backup for Linux: the command line of the store, the shadow-copy\n"
           "service and the backup application.\n\ngroups:\n");
    for (size_t i = 0; i < NGROUPS; i++)
        printf("  %-10s %s\n", groups[i]->name, groups[i]->summary);
    printf("\nRun 'ombra GROUP --help' for a group's commands. The daemons' sockets are in\n"
           "$OMBRA_RUNTIME_DIR (else /run/ombra for root, else $XDG_RUNTIME_DIR/ombra).\n");
}

/* ---- parsing ---- */

/* Counts of the positional arguments the spec string declares. */
static void pos_counts(const char *spec, int *min, int *max)
{
    *min = *max = 0;
    for (const char *p = spec ? spec : ""; *p;) {
        while (*p == ' ')
            p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        int optional = *p == '[';
        int many = e - p >= 3 && strncmp(e - 3, "...", 3) == 0;
        if (!optional) (*min)++;
        *max = many || *max < 0 ? -1 : *max + 1;
        p = e;
    }
}

/* The name of positional argument i ("MAILBOX" from "DB MAILBOX ID") into buf. */
static const char *pos_name(const char *spec, int i, char *buf, size_t len)
{
    const char *p = spec;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if (i-- == 0 || !*e) {
            while (p < e && (*p == '['))
                p++;
            while (e > p && (e[-1] == ']' || e[-1] == '.'))
                e--;
            snprintf(buf, len, "%.*s", (int)(e - p), p);
            return buf;
        }
        p = e;
    }
}

static int is_help(const char *s)
{
    return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

/* Parses argv (after the command's name) into a; help when --help was given anywhere. Returns
 * CLI_OK, or CLI_USAGE after printing the first thing wrong. */
static int parse(cli_args *a, int argc, char **argv, int *help)
{
    const cli_cmd *c = a->cmd;
    char err[256] = "";
    int dashdash = 0;
    *help = 0;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!dashdash && strcmp(s, "--") == 0) {
            dashdash = 1;
            continue;
        }
        if (dashdash || s[0] != '-' || s[1] == 0) {
            a->pos[a->npos++] = s;
            continue;
        }
        if (is_help(s)) {
            *help = 1;
            continue;
        }
        if (err[0]) continue;
        const char *name = s + 2, *eq = strchr(s, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        if (s[1] == '-')
            for (int j = 0; c->opts && c->opts[j].name; j++)
                if (strlen(c->opts[j].name) == nlen && strncmp(c->opts[j].name, name, nlen) == 0)
                    k = j;
        if (k < 0) {
            snprintf(err, sizeof err, "unknown option '%.*s'", (int)(eq ? eq - s : (long)strlen(s)),
                     s);
            continue;
        }
        const cli_opt *o = &c->opts[k];
        if (!o->arg) {
            if (eq)
                snprintf(err, sizeof err, "--%s takes no value", o->name);
            else
                a->val[k] = "";
        } else if (is_list_opt(o)) {
            if (eq) list_add(a, k, eq + 1);
            while (i + 1 < argc && (argv[i + 1][0] != '-' || argv[i + 1][1] == 0))
                list_add(a, k, argv[++i]);
            if (!a->nlist[k]) snprintf(err, sizeof err, "--%s needs a value (%s)", o->name, o->arg);
        } else if (eq)
            a->val[k] = eq + 1;
        else if (i + 1 < argc)
            a->val[k] = argv[++i];
        else
            snprintf(err, sizeof err, "--%s needs a value (%s)", o->name, o->arg);
    }
    if (*help) return CLI_OK;
    if (err[0]) return cli_usage(a, "%s", err);
    int min, max;
    char nm[64];
    pos_counts(c->pos, &min, &max);
    if (a->npos < min) return cli_usage(a, "missing %s", pos_name(c->pos, a->npos, nm, sizeof nm));
    if (max >= 0 && a->npos > max) return cli_usage(a, "unexpected argument '%s'", a->pos[max]);
    for (int j = 0; c->opts && c->opts[j].name; j++)
        if (c->opts[j].required && !a->val[j])
            return cli_usage(a, "missing --%s %s", c->opts[j].name, c->opts[j].arg);
    return CLI_OK;
}

static int run_command(const cli_group *g, const cli_cmd *c, int argc, char **argv)
{
    cli_args a = {.group = g, .cmd = c};
    a.pos = calloc((size_t)argc + 1, sizeof *a.pos);
    int oom = !a.pos;
    for (int i = 0; c->opts && c->opts[i].name && !oom; i++)
        if (is_list_opt(&c->opts[i])) oom = !(a.list[i] = calloc((size_t)argc + 1, sizeof(char *)));
    int help, rc = oom ? cli_fail(om_errf(OM_E_OutOfMemory, "out of memory")) : CLI_OK;
    if (rc == CLI_OK) rc = parse(&a, argc, argv, &help);
    if (rc == CLI_OK) {
        if (help)
            print_cmd_help(g, c);
        else
            rc = c->run(&a);
    }
    free(a.pos);
    for (int i = 0; i < CLI_MAX_OPTS; i++)
        free(a.list[i]);
    return rc;
}

static int run_group(const cli_group *g, int argc, char **argv)
{
    char see[64];
    snprintf(see, sizeof see, "ombra %s", g->name);
    if (!g->cmds[0].name[0]) return run_command(g, &g->cmds[0], argc, argv); /* a command group */
    if (argc == 0) return usage_at(see, "missing %s command", g->name);
    if (is_help(argv[0])) {
        print_group_help(g);
        return CLI_OK;
    }
    for (const cli_cmd *c = g->cmds; c->name; c++)
        if (strcmp(c->name, argv[0]) == 0) return run_command(g, c, argc - 1, argv + 1);
    if (argv[0][0] == '-') return usage_at(see, "unknown option '%s'", argv[0]);
    return usage_at(see, "unknown %s command '%s'", g->name, argv[0]);
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) return usage_at("ombra", "missing command");
    const char *g = argv[1];
    if (is_help(g)) {
        print_main_help();
        return CLI_OK;
    }
    if (strcmp(g, "--version") == 0) {
        printf("ombra %s\n", OMBRA_VERSION);
        return CLI_OK;
    }
    if (!strcmp(g, "db") && argc > 2 && !strcmp(argv[2], "copy"))
        return run_group(&cli_copy_group, argc - 3, argv + 3);
    for (size_t i = 0; i < NGROUPS; i++)
        if (strcmp(groups[i]->name, g) == 0) return run_group(groups[i], argc - 2, argv + 2);
    if (g[0] == '-') return usage_at("ombra", "unknown option '%s'", g);
    return usage_at("ombra", "unknown command '%s'", g);
}

int main(int argc, char **argv)
{
    int rc = dispatch(argc, argv);
    store_client_free(store);
    /* Output that never reached its file (a full disk, a closed pipe) is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = errno;
        if (rc == CLI_OK)
            rc = cli_fail(om_errf(OM_E_DiskIO, "writing standard output: %s", strerror(e)));
    }
    return rc;
}

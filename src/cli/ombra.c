/* `ombra`: finds the group and the command in the tables, parses the arguments against the
 * command's declaration (cli.h) and runs it; cli_common.c holds the helpers every group shares. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/error.h"
#include "base/near.h"
#include "cli/cli.h"

#ifndef OMBRA_VERSION
#define OMBRA_VERSION "unknown"
#endif

static const cli_group *const groups[] = {
    &cli_db_group,     &cli_mail_group,    &cli_dbutil_group, &cli_vss_group,
    &cli_backup_group, &cli_restore_group, &cli_repo_group,   &cli_backups_group,
    &cli_verify_group, &cli_expire_group,  &cli_dag_group,    &cli_schedule_group,
    &cli_check_group,  &cli_metrics_group,
};
#define NGROUPS (sizeof groups / sizeof groups[0])

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
    printf("usage: ombra [--help] [--version] [--config FILE] GROUP COMMAND [ARGUMENTS] "
           "[OPTIONS]\n"
           "       ombra help [GROUP [COMMAND]]\n\n"
           "Exchange-style backup for Linux: the command line of the store, the shadow-copy\n"
           "service and the backup application.\n\ngroups:\n");
    for (size_t i = 0; i < NGROUPS; i++)
        printf("  %-10s %s\n", groups[i]->name, groups[i]->summary);
    printf("\nRun 'ombra GROUP --help' (or 'ombra help GROUP [COMMAND]') for a group's commands.\n"
           "Every command takes --config FILE (default $OMBRA_CONFIG, else /etc/ombra/ombra.conf\n"
           "if it exists: named repositories, directories, etcd). The daemons' sockets are in\n"
           "$OMBRA_RUNTIME_DIR (else the configuration's runtime-dir, else /run/ombra for root,\n"
           "else $XDG_RUNTIME_DIR/ombra). Exit codes, JSON output and units: docs/cli.md.\n");
}

/* ---- parsing ---- */

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

/* "unknown option '--jsno'. Did you mean '--json'?" for the first len bytes of s. */
static void unknown_option(const cli_cmd *c, const char *s, size_t len, char *err, size_t n)
{
    char typed[80];
    om_near nr;
    snprintf(typed, sizeof typed, "%.*s", (int)len, s);
    om_near_init(&nr, typed + strspn(typed, "-"));
    for (int j = 0; c->opts && c->opts[j].name; j++)
        om_near_try(&nr, c->opts[j].name);
    om_near_try(&nr, "help");
    if (om_near_best(&nr))
        snprintf(err, n, "unknown option '%s'. Did you mean '--%s'?", typed, om_near_best(&nr));
    else
        snprintf(err, n, "unknown option '%s'", typed);
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
            unknown_option(c, s, eq ? (size_t)(eq - s) : strlen(s), err, sizeof err);
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
    if (rc == CLI_USAGE && g == &cli_check_group) rc = CLI_CHECK_UNKNOWN;
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
    if (argc == 0) return cli_usage_at(see, "missing %s command", g->name);
    if (is_help(argv[0])) {
        print_group_help(g);
        return CLI_OK;
    }
    for (const cli_cmd *c = g->cmds; c->name; c++)
        if (strcmp(c->name, argv[0]) == 0) return run_command(g, c, argc - 1, argv + 1);
    if (argv[0][0] == '-') return cli_usage_at(see, "unknown option '%s'", argv[0]);
    om_near nr;
    om_near_init(&nr, argv[0]);
    for (const cli_cmd *c = g->cmds; c->name; c++)
        om_near_try(&nr, c->name);
    if (g == &cli_db_group) om_near_try(&nr, "copy");
    if (om_near_best(&nr))
        return cli_usage_at(see, "unknown %s command '%s'. Did you mean '%s'?", g->name, argv[0],
                            om_near_best(&nr));
    return cli_usage_at(see, "unknown %s command '%s'", g->name, argv[0]);
}

/* `ombra help [GROUP [COMMAND...]]`: the same as `ombra GROUP COMMAND --help` (argv[1] is
 * "help"), so the two can never differ; a mistyped name gets the same "did you mean". */
static int dispatch(int argc, char **argv);
static int run_help(int argc, char **argv)
{
    char **v = calloc((size_t)argc + 2, sizeof *v);
    if (!v) return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
    v[0] = argv[0];
    for (int i = 2; i < argc; i++)
        v[i - 1] = argv[i];
    v[argc - 1] = "--help";
    int rc = dispatch(argc, v);
    free(v);
    return rc;
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) return cli_usage_at("ombra", "missing command");
    const char *g = argv[1];
    if (is_help(g)) {
        print_main_help();
        return CLI_OK;
    }
    if (strcmp(g, "--version") == 0) {
        printf("ombra %s\n", OMBRA_VERSION);
        return CLI_OK;
    }
    if (strcmp(g, "--generate") == 0) return cli_generate(groups, NGROUPS, argc - 2, argv + 2);
    if (!strcmp(g, "db") && argc > 2 && !strcmp(argv[2], "copy"))
        return run_group(&cli_copy_group, argc - 3, argv + 3);
    for (size_t i = 0; i < NGROUPS; i++)
        if (strcmp(groups[i]->name, g) == 0) return run_group(groups[i], argc - 2, argv + 2);
    if (strcmp(g, "help") == 0) return run_help(argc, argv);
    if (g[0] == '-') return cli_usage_at("ombra", "unknown option '%s'", g);
    om_near nr;
    om_near_init(&nr, g);
    for (size_t i = 0; i < NGROUPS; i++)
        om_near_try(&nr, groups[i]->name);
    om_near_try(&nr, "help");
    if (om_near_best(&nr))
        return cli_usage_at("ombra", "unknown command '%s'. Did you mean '%s'?", g,
                            om_near_best(&nr));
    return cli_usage_at("ombra", "unknown command '%s'", g);
}

/* Takes --config FILE (or --config=FILE) out of argv, wherever it is before a "--": every
 * command reads the configuration, so it is an option of them all. NULL when absent; a usage
 * error (*bad) when it has no value. */
static const char *take_config(int *argc, char **argv, int *bad)
{
    const char *file = NULL;
    int out = 1;
    *bad = 0;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--")) {
            while (i < *argc)
                argv[out++] = argv[i++];
            break;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= *argc || !*argv[i + 1]) {
                *bad = 1;
                break;
            }
            file = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            file = argv[i] + 9;
            if (!*file) {
                *bad = 1;
                break;
            }
        } else
            argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    return file;
}

/* --json among the arguments (before a "--"): errors become JSON documents too. */
static int wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--json")) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int bad, rc;
    cli_set_json(wants_json(argc, argv));
    const char *config = take_config(&argc, argv, &bad);
    /* ombra check says UNKNOWN when it cannot check (cli.h, CLI_CHECK_UNKNOWN). */
    int check = argc >= 2 && !strcmp(argv[1], "check");
    if (bad) {
        rc = cli_usage_at("ombra", "--config needs a value (FILE)");
        return check ? CLI_CHECK_UNKNOWN : rc;
    }
    /* Help and the version need no configuration: they work while it is being fixed. */
    int plain = argc < 2 || is_help(argv[1]) || !strcmp(argv[1], "--version");
    if (!plain && (rc = om_conf_load(config))) {
        rc = cli_fail(rc);
        return check ? CLI_CHECK_UNKNOWN : rc;
    }
    rc = dispatch(argc, argv);
    cli_store_close();
    /* Output that never reached its file (a full disk, a closed pipe) is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = errno;
        if (rc == CLI_OK)
            rc = cli_fail(om_errf(OM_E_DiskIO, "writing standard output: %s", strerror(e)));
    }
    return rc;
}

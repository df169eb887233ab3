/* `ombra --generate man DIR [PAGE...]` and `ombra --generate bash-completion`: the manual pages
 * and the bash completion, written from the same command tables the parser reads (cli.h), so a
 * command, option or help line added to a table is documented and completed with no other edit.
 * The build runs both (dist/meson.build) and installs what they write. Hidden: `ombra --help`
 * does not list it, it is for the build.
 *
 * Pages: ombra(1), listing the groups, and one ombra-GROUP(1) per group with every command of
 * the group (and of its subgroups: `ombra db copy ...` is in ombra-db(1)): usage, summary, help
 * paragraphs, options, then the exit statuses, environment and files every command shares. The
 * roff is plain man(7) that groff -ww and mandoc -Tlint accept without a warning: text escaped
 * (backslash, a leading dot or quote, dashes that start a word, UTF-8 as \[uXXXX]), no
 * hyphenation, no adjustment. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "cli/cli.h"

#ifndef OMBRA_VERSION
#define OMBRA_VERSION "unknown"
#endif

/* Groups reached through another group's name (ombra.c dispatches `db copy`): documented in
 * their parent's page, completed after the parent's name. */
static const cli_group *const subgroups[] = {&cli_copy_group};
#define NSUB (sizeof subgroups / sizeof subgroups[0])

/* sub is a subgroup of g: its name is g's name, a space, one more word. */
static int is_sub_of(const cli_group *sub, const cli_group *g)
{
    size_t n = strlen(g->name);
    return strncmp(sub->name, g->name, n) == 0 && sub->name[n] == ' ';
}

/* A group whose only command is named "" is a command itself (`ombra backup ...`). */
static int is_command_group(const cli_group *g)
{
    return g->cmds[0].name && !g->cmds[0].name[0];
}

/* ---- roff ---- */

/* Writes s as roff text: backslashes escaped, a dash that starts a word as a minus (options
 * must copy and paste as ASCII), a dot or quote at a line's start protected, UTF-8 as a named
 * code point. In filled text a newline is a space, as the tables' hand-wrapped help wants. */
static void roff_text(FILE *f, const char *s)
{
    int line_start = 1;
    char prev = ' ';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (line_start && (c == '.' || c == '\'')) fputs("\\&", f);
        line_start = c == '\n';
        if (c == '\\')
            fputs("\\e", f);
        else if (c == '-' && (prev == ' ' || prev == '\n' || prev == '-' || prev == '(' ||
                              prev == '[' || prev == '\'' || prev == '`' || prev == '"'))
            fputs("\\-", f);
        else if (c < 0x80)
            fputc((int)c, f);
        else {
            /* A UTF-8 sequence; a byte that starts none is shown as U+FFFD. */
            unsigned cp = 0xfffd;
            int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
            if (more) {
                cp = c & (0x3fu >> more);
                for (int i = 1; i <= more && cp != 0xfffd; i++)
                    cp = (p[i] & 0xc0) == 0x80 ? (cp << 6) | (p[i] & 0x3fu) : 0xfffd;
                if (cp != 0xfffd) p += more;
            }
            fprintf(f, "\\[u%04X]", cp);
        }
        prev = (char)c;
    }
}

/* A name (an option's, a command's) with every dash a minus: copied from the page it types
 * what the parser wants, and a line never breaks inside it. */
static void roff_name(FILE *f, const char *s)
{
    for (; *s; s++)
        if (*s == '-')
            fputs("\\-", f);
        else if (*s == '\\')
            fputs("\\e", f);
        else
            fputc(*s, f);
}

/* An option as the usage shows it: \fB\-\-name\fR\ \fIARG\fR, bracketed unless required;
 * the non-breaking space keeps an option beside its value when the line wraps. */
static void roff_opt(FILE *f, const cli_opt *o, int brackets)
{
    fputs(brackets && !o->required ? "[\\fB" : "\\fB", f);
    fputs("\\-\\-", f);
    roff_name(f, o->name);
    fputs("\\fR", f);
    if (o->arg) {
        fputs("\\ \\fI", f);
        roff_text(f, o->arg);
        fputs("\\fR", f);
    }
    if (brackets && !o->required) fputc(']', f);
}

/* `ombra GROUP CMD POS [--opt ARG]...` as a filled paragraph with a hanging indent. */
static void roff_usage(FILE *f, const cli_group *g, const cli_cmd *c)
{
    fputs(".PP\n.in +4n\n.ti -4n\n\\fBombra ", f);
    roff_name(f, g->name);
    if (c->name[0]) {
        fputc(' ', f);
        roff_name(f, c->name);
    }
    fputs("\\fR", f);
    if (c->pos && *c->pos) {
        fputs(" \\fI", f);
        roff_text(f, c->pos);
        fputs("\\fR", f);
    }
    for (int i = 0; c->opts && c->opts[i].name; i++) {
        fputc(' ', f);
        roff_opt(f, &c->opts[i], 1);
    }
    fputs("\n.in\n", f);
}

/* Text with its first letter capitalised and a final period, as a sentence. */
static void roff_sentence(FILE *f, const char *s)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    if (buf[0] >= 'a' && buf[0] <= 'z') buf[0] = (char)(buf[0] - 'a' + 'A');
    roff_text(f, buf);
    size_t n = strlen(buf);
    fputs(n && buf[n - 1] != '.' ? ".\n" : "\n", f);
}

/* Help paragraphs (separated by an empty line in the table) as .PP paragraphs, filled (the
 * tables wrap their text by hand) unless indented lines make them a table. */
static void roff_paragraphs(FILE *f, const char *help)
{
    const char *p = help;
    while (*p) {
        const char *e = strstr(p, "\n\n");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *para = strndup(p, n);
        if (para) {
            /* A paragraph with indented lines is a table or an example: kept as written. */
            int pre = para[0] == ' ' || strstr(para, "\n ") != NULL;
            fputs(pre ? ".PP\n.nf\n" : ".PP\n", f);
            roff_text(f, para);
            fputs(pre ? "\n.fi\n" : "\n", f);
            free(para);
        }
        p += n;
        while (*p == '\n')
            p++;
    }
}

/* A command of a group: a subsection with its usage. A command group's one command is the
 * page's DESCRIPTION and OPTIONS themselves (the SYNOPSIS has its usage). */
static void roff_command(FILE *f, const cli_group *g, const cli_cmd *c)
{
    if (is_command_group(g)) {
        fputs(".SH DESCRIPTION\n", f);
    } else {
        fputs(".SS \"ombra ", f);
        roff_name(f, g->name);
        fputc(' ', f);
        roff_name(f, c->name);
        fputs("\"\n", f);
        roff_usage(f, g, c);
    }
    fputs(".PP\n", f);
    roff_sentence(f, c->summary);
    if (c->help) roff_paragraphs(f, c->help);
    if (is_command_group(g)) fputs(".SH OPTIONS\n", f);
    for (int i = 0; c->opts && c->opts[i].name; i++) {
        const cli_opt *o = &c->opts[i];
        fputs(".TP\n", f);
        roff_opt(f, o, 0);
        fputc('\n', f);
        roff_text(f, o->help);
        fputs(o->required ? " (required)\n" : "\n", f);
    }
    fputs(".TP\n\\fB\\-\\-help\\fR\nshow this help\n", f);
}

static void roff_header(FILE *f, const char *page, const char *section)
{
    char title[64];
    size_t i = 0;
    for (; page[i] && i < sizeof title - 1; i++)
        title[i] = (char)(page[i] >= 'a' && page[i] <= 'z' ? page[i] - 'a' + 'A' : page[i]);
    title[i] = 0;
    /* The date of the release when the package build gives one (reproducible), else none. */
    char date[32] = "";
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (sde && *sde) {
        time_t t = (time_t)strtoll(sde, NULL, 10);
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(date, sizeof date, "%Y-%m-%d", &tm);
    }
    fprintf(f,
            ".\\\" Generated by `ombra --generate man` from the command tables of src/cli;\n"
            ".\\\" edit the tables, not this page.\n"
            ".TH \"%s\" \"%s\" \"%s\" \"ombra %s\" \"Ombra Manual\"\n.nh\n.ad l\n",
            title, section, date, OMBRA_VERSION);
}

/* What every command shares: exit statuses (cli.h), environment, files. */
static void roff_common(FILE *f)
{
    fputs(".SH \"EXIT STATUS\"\n"
          ".TP\n0\nsuccess\n"
          ".TP\n1\nfailure: one line on standard error, the message, the error's number and "
          "name, and often a HINT with the next command\n"
          ".TP\n2\nusage error: a wrong or missing argument or option\n"
          ".TP\n75\nthe request may succeed if made again (EX_TEMPFAIL): a database moving, "
          "synchronous copies unavailable, the wrong server in a DAG\n"
          ".SH ENVIRONMENT\n"
          ".TP\n.B OMBRA_RUNTIME_DIR\n"
          "where the daemons' sockets are (store.sock, vss.sock, repl.sock); default /run/ombra "
          "for root, else $XDG_RUNTIME_DIR/ombra\n"
          ".TP\n.B OMBRA_HOME\n"
          "the data directory; default /var/lib/ombra for root, else "
          "$HOME/.local/share/ombra\n"
          ".TP\n.B OMBRA_REPO_PASSPHRASE\n"
          "an encrypted repository's passphrase, when no \\-\\-passphrase\\-file is given\n"
          ".TP\n.B OMBRA_ETCD\n"
          "in a DAG: the etcd endpoints, when no \\-\\-etcd is given\n"
          ".SH FILES\n"
          ".TP\n.I /etc/ombra/ombra.conf\n"
          "the configuration\n"
          ".TP\n.I /run/ombra/store.sock\n"
          "the store's socket (ombra\\-store(8))\n"
          ".TP\n.I /run/ombra/vss.sock\n"
          "the shadow copy service's socket (ombra\\-vssd(8))\n"
          ".TP\n.I /run/ombra/repl.sock\n"
          "the replication service's admin socket (ombra\\-repld(8))\n"
          ".TP\n.I /var/lib/ombra\n"
          "the daemons' data: databases, catalog, shadow copies\n",
          f);
}

/* The other pages: ombra(1), every group's but self's (a group's name, or NULL for ombra(1)),
 * the daemons'. */
static void roff_see_also(FILE *f, const cli_group *const *groups, size_t n, const char *self)
{
    fputs(".SH \"SEE ALSO\"\n", f);
    if (self) fputs(".BR ombra (1),\n", f);
    for (size_t i = 0; i < n; i++) {
        if (self && strcmp(groups[i]->name, self) == 0) continue;
        fputs(".BR ombra\\-", f);
        roff_name(f, groups[i]->name);
        fputs(" (1),\n", f);
    }
    fputs(".BR ombra\\-store (8),\n.BR ombra\\-vssd (8),\n.BR ombra\\-repld (8)\n", f);
}

static void page_main(FILE *f, const cli_group *const *groups, size_t n)
{
    roff_header(f, "ombra", "1");
    fputs(".SH NAME\nombra \\- the command line of Ombra, Exchange\\-style backup for Linux\n"
          ".SH SYNOPSIS\n.B ombra\n[\\fB\\-\\-help\\fR] [\\fB\\-\\-version\\fR]\n"
          ".I GROUP COMMAND\n[\\fIARGUMENTS\\fR] [\\fIOPTIONS\\fR]\n"
          ".SH DESCRIPTION\n"
          "The command line of the store (ombra\\-store(8)), the shadow copy service "
          "(ombra\\-vssd(8)), the replication service of a DAG (ombra\\-repld(8)) and the backup "
          "application. Commands are grouped; each group has its page, and "
          "\\fBombra\\fR \\fIGROUP\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR prints a command's "
          "usage and options.\n"
          ".SH \"COMMAND GROUPS\"\n",
          f);
    for (size_t i = 0; i < n; i++) {
        fputs(".TP\n\\fBombra ", f);
        roff_name(f, groups[i]->name);
        fputs("\\fR (\\fBombra\\-", f);
        roff_name(f, groups[i]->name);
        fputs("\\fR(1))\n", f);
        roff_sentence(f, groups[i]->summary);
    }
    fputs(".SH OPTIONS\n.TP\n.B \\-\\-help\nlist the groups\n"
          ".TP\n.B \\-\\-version\nprint the version\n",
          f);
    roff_common(f);
    roff_see_also(f, groups, n, NULL);
}

static void page_group(FILE *f, const cli_group *g, const cli_group *const *groups, size_t n)
{
    char page[64];
    snprintf(page, sizeof page, "ombra-%s", g->name);
    roff_header(f, page, "1");
    fputs(".SH NAME\nombra\\-", f);
    roff_name(f, g->name);
    fputs(" \\- ", f);
    roff_text(f, g->summary);
    fputs("\n.SH SYNOPSIS\n", f);
    for (const cli_cmd *c = g->cmds; c->name; c++)
        roff_usage(f, g, c);
    for (size_t s = 0; s < NSUB; s++)
        if (is_sub_of(subgroups[s], g))
            for (const cli_cmd *c = subgroups[s]->cmds; c->name; c++)
                roff_usage(f, subgroups[s], c);
    if (!is_command_group(g)) {
        fputs(".SH DESCRIPTION\n", f);
        roff_sentence(f, g->summary);
        fputs(".SH COMMANDS\n", f);
    }
    for (const cli_cmd *c = g->cmds; c->name; c++)
        roff_command(f, g, c);
    for (size_t s = 0; s < NSUB; s++)
        if (is_sub_of(subgroups[s], g)) {
            fputs(".SH \"", f);
            char up[64];
            size_t i = 0;
            for (const char *p = subgroups[s]->name; *p && i < sizeof up - 1; p++)
                up[i++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
            up[i] = 0;
            roff_text(f, up);
            fputs(" COMMANDS\"\n.PP\n", f);
            roff_sentence(f, subgroups[s]->summary);
            for (const cli_cmd *c = subgroups[s]->cmds; c->name; c++)
                roff_command(f, subgroups[s], c);
        }
    roff_common(f);
    roff_see_also(f, groups, n, g->name);
}

/* The page file name (ombra.1, ombra-db.1) of page i: 0 is ombra(1), i > 0 group i-1's. */
static void page_name(const cli_group *const *groups, size_t i, char *buf, size_t len)
{
    if (i == 0)
        snprintf(buf, len, "ombra.1");
    else
        snprintf(buf, len, "ombra-%s.1", groups[i - 1]->name);
}

static int write_page(const char *dir, const char *name, const cli_group *const *groups, size_t n,
                      size_t i)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return cli_fail(om_errf(om_err_from_errno(errno), "%s: %s", path, strerror(errno)));
    if (i == 0)
        page_main(f, groups, n);
    else
        page_group(f, groups[i - 1], groups, n);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return cli_fail(om_errf(OM_E_DiskIO, "writing %s: %s", path, strerror(errno)));
    return CLI_OK;
}

/* The base name of path (meson passes the outputs as paths). */
static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Writes every page into dir. listed (the pages the build declares, by file name or path): when
 * given, they must be exactly the pages the tables make, else the build would install a stale
 * set; the error names the difference. */
static int generate_man(const cli_group *const *groups, size_t n, const char *dir, int nlisted,
                        char **listed)
{
    char name[128];
    for (size_t i = 0; nlisted && i <= n; i++) {
        page_name(groups, i, name, sizeof name);
        int found = 0;
        for (int k = 0; k < nlisted && !found; k++)
            found = strcmp(base_name(listed[k]), name) == 0;
        if (!found)
            return cli_fail(om_errf(OM_E_InvalidParameter,
                                    "the command tables make %s, which the build does not list. "
                                    "HINT: add it to man_pages in dist/meson.build",
                                    name));
    }
    for (int k = 0; k < nlisted; k++) {
        int found = 0;
        for (size_t i = 0; i <= n && !found; i++) {
            page_name(groups, i, name, sizeof name);
            found = strcmp(base_name(listed[k]), name) == 0;
        }
        if (!found)
            return cli_fail(om_errf(OM_E_InvalidParameter,
                                    "the build lists %s, which no command group makes. HINT: "
                                    "remove it from man_pages in dist/meson.build",
                                    base_name(listed[k])));
    }
    for (size_t i = 0; i <= n; i++) {
        page_name(groups, i, name, sizeof name);
        int rc = write_page(dir, name, groups, n, i);
        if (rc) return rc;
    }
    return CLI_OK;
}

/* ---- bash completion ---- */

/* The options of a command as one word list: --a --b --help. */
static void bash_opts(FILE *f, const cli_cmd *c)
{
    for (int i = 0; c->opts && c->opts[i].name; i++)
        fprintf(f, "--%s ", c->opts[i].name);
    fputs("--help", f);
}

/* A value named like a path (PATH, DIR, FILE.edb, F: a file) completes file names. */
static int is_path_arg(const char *arg)
{
    return strstr(arg, "PATH") || strstr(arg, "DIR") || strstr(arg, "FILE") || !strcmp(arg, "F");
}

/* A value given as its choices ("on|off"), not as a name for it ("NAME|PATH"). */
static int is_choice_arg(const char *arg)
{
    if (!strchr(arg, '|')) return 0;
    for (const char *p = arg; *p; p++)
        if (*p >= 'A' && *p <= 'Z') return 0;
    return 1;
}

/* The case arm of each command of g (key "GROUP CMD"): its options; after an option that takes
 * a value, file names for a path, the choices of "a|b|c", nothing for the rest; positional
 * arguments named like paths complete file names. */
static void bash_cmd_arms(FILE *f, const cli_group *g)
{
    for (const cli_cmd *c = g->cmds; c->name; c++) {
        fprintf(f, "    \"%s%s%s\")\n        opts=\"", g->name, c->name[0] ? " " : "", c->name);
        bash_opts(f, c);
        fprintf(f, "\" posfiles=%d\n        case \"$prev\" in\n",
                c->pos && is_path_arg(c->pos) ? 1 : 0);
        for (int i = 0; c->opts && c->opts[i].name; i++) {
            const char *arg = c->opts[i].arg;
            if (!arg) continue;
            fprintf(f, "        --%s) ", c->opts[i].name);
            if (is_choice_arg(arg)) {
                fputs("COMPREPLY=($(compgen -W \"", f);
                for (const char *p = arg; *p; p++)
                    fputc(*p == '|' ? ' ' : *p, f);
                fputs("\" -- \"$cur\")) ;;\n", f);
            } else if (is_path_arg(arg))
                fputs("_ombra_files ;;\n", f);
            else
                fputs(";;\n", f);
        }
        fputs("        *) false ;;\n        esac && return ;;\n", f);
    }
}

static int generate_bash(const cli_group *const *groups, size_t n)
{
    FILE *f = stdout;
    fputs("# bash completion for ombra. Generated by `ombra --generate bash-completion` from the\n"
          "# command tables of src/cli: edit the tables, not this file.\n"
          "# File names (shown and quoted as such: a directory gets its slash).\n"
          "_ombra_files()\n{\n"
          "    compopt -o filenames 2>/dev/null\n"
          "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
          "}\n"
          "_ombra()\n{\n"
          "    local cur=${COMP_WORDS[COMP_CWORD]} prev=\n"
          "    [ \"$COMP_CWORD\" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}\n"
          "    COMPREPLY=()\n"
          "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
          "        COMPREPLY=($(compgen -W \"",
          f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s ", groups[i]->name);
    fputs("--help --version\" -- \"$cur\"))\n        return\n    fi\n"
          "    # The command's key: the group, then its command words (db copy status).\n"
          "    local key=${COMP_WORDS[1]} i=2\n"
          "    case \"$key\" in\n",
          f);
    /* Groups of commands: the word after the group is the command; a subgroup takes one more. */
    for (size_t i = 0; i < n; i++) {
        const cli_group *g = groups[i];
        if (is_command_group(g)) continue;
        fprintf(f,
                "    %s)\n        if [ \"$COMP_CWORD\" -eq 2 ]; then\n"
                "            COMPREPLY=($(compgen -W \"",
                g->name);
        for (const cli_cmd *c = g->cmds; c->name; c++)
            fprintf(f, "%s ", c->name);
        for (size_t s = 0; s < NSUB; s++)
            if (is_sub_of(subgroups[s], g))
                fprintf(f, "%s ", subgroups[s]->name + strlen(g->name) + 1);
        fputs("--help\" -- \"$cur\"))\n            return\n        fi\n", f);
        for (size_t s = 0; s < NSUB; s++) {
            if (!is_sub_of(subgroups[s], g)) continue;
            const char *word = subgroups[s]->name + strlen(g->name) + 1;
            fprintf(f,
                    "        if [ \"${COMP_WORDS[2]}\" = %s ]; then\n"
                    "            if [ \"$COMP_CWORD\" -eq 3 ]; then\n"
                    "                COMPREPLY=($(compgen -W \"",
                    word);
            for (const cli_cmd *c = subgroups[s]->cmds; c->name; c++)
                fprintf(f, "%s ", c->name);
            fprintf(f,
                    "--help\" -- \"$cur\"))\n                return\n            fi\n"
                    "            key=\"$key %s\"; i=3\n        fi\n",
                    word);
        }
        fputs("        key=\"$key ${COMP_WORDS[i]}\" ;;\n", f);
    }
    fputs("    esac\n"
          "    local opts= posfiles=0\n"
          "    case \"$key\" in\n",
          f);
    for (size_t i = 0; i < n; i++) {
        bash_cmd_arms(f, groups[i]);
        for (size_t s = 0; s < NSUB; s++)
            if (is_sub_of(subgroups[s], groups[i])) bash_cmd_arms(f, subgroups[s]);
    }
    fputs("    *) return ;;\n"
          "    esac\n"
          "    if [[ $cur == -* ]]; then\n"
          "        COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
          "    elif [ \"$posfiles\" = 1 ]; then\n"
          "        _ombra_files\n"
          "    fi\n"
          "}\n"
          "complete -F _ombra ombra\n",
          f);
    return ferror(f) ? cli_fail(om_errf(OM_E_DiskIO, "writing standard output")) : CLI_OK;
}

int cli_generate(const cli_group *const *groups, size_t n, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[0], "man") == 0)
        return generate_man(groups, n, argv[1], argc - 2, argv + 2);
    if (argc == 1 && strcmp(argv[0], "bash-completion") == 0) return generate_bash(groups, n);
    return cli_usage_at("ombra", "--generate takes 'man DIR [PAGE...]' or 'bash-completion'");
}

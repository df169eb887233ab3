/* The configuration file (config.h): read whole with libinih, checked against one table of keys,
 * kept as (section, key, value, line) entries the getters search. The file is small and read
 * once per process, so a list searched linearly is all it needs. */
#include "base/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/error.h"
#include "base/near.h"

/* ---- the table of keys ---- */

enum kind {
    K_CALENDAR, /* a systemd calendar: letters, digits, blanks and * : . , / ~ + - */
    K_NAME,     /* a name: letters, digits, '-', '_', '.' */
    K_NAMES,    /* names separated by spaces or commas */
    K_PATH,     /* an absolute path */
    K_URLS,     /* URL[,URL...]: http:// or https:// */
    K_BOOL,     /* yes/no */
    K_COUNT,    /* a whole number, 1 to 1000000 */
    K_KEEP,     /* a retention count, 1 to 100000 (what ombra expire's --keep-* take) */
    K_DURATION, /* om_duration_parse */
    K_WITHIN,   /* a calendar span as expire --keep-within takes it: 1y6m, 7d, 36h (m: months) */
    K_PERCENT,  /* 0 to 100 */
    K_HOSTPORT, /* HOST:PORT, [V6]:PORT */
    K_CHOICE,   /* one of choices */
};

typedef struct conf_key {
    const char *section; /* "repo" for [repo:NAME] */
    const char *key;
    enum kind kind;
    const char *choices; /* K_CHOICE: "a|b|c" */
} conf_key;

static const conf_key om_conf_keys[] = {
    {"ombra", "server", K_NAME, NULL},
    {"ombra", "data-dir", K_PATH, NULL},
    {"ombra", "runtime-dir", K_PATH, NULL},
    {"ombra", "etcd", K_URLS, NULL},
    {"ombra", "default-repo", K_NAME, NULL},
    {"ombra", "group", K_NAME, NULL},
    {"ombra", "read-all-every", K_COUNT, NULL},
    {"repl", "listen", K_HOSTPORT, NULL},
    {"repl", "dag", K_NAME, NULL},
    {"log", "target", K_CHOICE, "auto|journal|file|stderr"},
    {"log", "file", K_PATH, NULL},
    {"log", "level", K_CHOICE, "debug|info|warning|error"},
    {"check", "max-full-age", K_DURATION, NULL},
    {"check", "max-incremental-age", K_DURATION, NULL},
    {"check", "min-log-free", K_PERCENT, NULL},
    {"metrics", "listen", K_HOSTPORT, NULL},
    {"repo", "path", K_PATH, NULL},
    {"repo", "passphrase-file", K_PATH, NULL},
    {"repo", "keep-last", K_KEEP, NULL},
    {"repo", "keep-daily", K_KEEP, NULL},
    {"repo", "keep-weekly", K_KEEP, NULL},
    {"repo", "keep-monthly", K_KEEP, NULL},
    {"repo", "keep-yearly", K_KEEP, NULL},
    {"repo", "keep-within", K_WITHIN, NULL},
    {"repo", "keep-full", K_KEEP, NULL},
    {"repo", "read-all-every", K_COUNT, NULL},
    {"schedule", "databases", K_NAMES, NULL},
    {"schedule", "type", K_CHOICE, "full|incremental|differential|copy"},
    {"schedule", "calendar", K_CALENDAR, NULL},
    {"schedule", "repo", K_NAME, NULL},
    {"schedule", "randomized-delay", K_DURATION, NULL},
    {"schedule", "persistent", K_BOOL, NULL},
    {"schedule", "provider", K_CHOICE, "auto|held|reflink|btrfs|copy"},
    {"schedule", "expire", K_BOOL, NULL},
};
#define NKEYS (sizeof om_conf_keys / sizeof om_conf_keys[0])

/* Sections that take a name ([repo:main]) and those that must not ([log]). */
static int named_kind(const char *kind)
{
    return !strcmp(kind, "repo") || !strcmp(kind, "schedule");
}

static int known_kind(const char *kind)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(om_conf_keys[i].section, kind)) return 1;
    return 0;
}

/* ---- the entries read ---- */

typedef struct entry {
    char *section, *key, *value;
    int line;
} entry;

static struct {
    char *file;
    entry *e;
    size_t n;
    char **sections;    /* every section header seen, in order (for duplicates and om_conf_names) */
    int *section_lines; /* the line of each */
    size_t nsections;
    const char ***names; /* om_conf_names' answers, each valid until the next load */
    size_t nnames;
} conf;

static void conf_free(void)
{
    for (size_t i = 0; i < conf.n; i++) {
        free(conf.e[i].section);
        free(conf.e[i].key);
        free(conf.e[i].value);
    }
    for (size_t i = 0; i < conf.nsections; i++)
        free(conf.sections[i]);
    for (size_t i = 0; i < conf.nnames; i++)
        free(conf.names[i]);
    free(conf.e);
    free(conf.sections);
    free(conf.section_lines);
    free(conf.names);
    free(conf.file);
    memset(&conf, 0, sizeof conf);
}

/* ---- checking values ---- */

int om_duration_parse(const char *text, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)*text)) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || v > 100000000ull) return -1;
    static const struct {
        const char *unit;
        uint64_t secs;
    } units[] = {{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {"w", 604800}};
    if (!*end) {
        if (v != 0) return -1; /* "5": seconds or days? Say which. */
        *out = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].unit)) {
            *out = v * units[i].secs;
            return 0;
        }
    return -1;
}

static int is_name_char(int c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.';
}

/* A name starts with a letter, a digit or '_': never '-' (it would be read as an option where
 * the name is passed on: a schedule's databases) nor '.' (a path). */
static int name_ok(const char *p, size_t n)
{
    if (!n || !(isalnum((unsigned char)*p) || *p == '_')) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)p[i])) return 0;
    return 1;
}

static int check_bool(const char *v)
{
    static const char *const words[] = {"yes", "no", "true", "false", "on", "off", "1", "0"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (!strcasecmp(v, words[i])) return 1;
    return 0;
}

static int bool_value(const char *v)
{
    return !strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") ||
           !strcmp(v, "1");
}

/* What is wrong with value for k, into why; 0 when it is fine. */
static int check_value(const conf_key *k, const char *v, char *why, size_t n)
{
    if (!*v) return snprintf(why, n, "is empty"), -1;
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return snprintf(why, n, "holds a control character"), -1;
        if (*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t'))
            return snprintf(why, n,
                            "'%s': '#' starts a comment only at the start of a line (after a "
                            "value: ' ;')",
                            v),
                   -1;
    }
    switch (k->kind) {
    case K_CALENDAR:
        for (const char *p = v; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr(" \t*:.,/~+-", *p))
                return snprintf(why, n,
                                "'%s' is not a calendar (man systemd.time: 'Sun 01:00', "
                                "'Mon..Sat *-*-* 01:00:00')",
                                v),
                       -1;
        return 0;
    case K_NAME:
        if (!name_ok(v, strlen(v)))
            return snprintf(why, n,
                            "'%s' is not a name (letters, digits, '-', '_', '.'; not starting "
                            "with '-' or '.')",
                            v),
                   -1;
        return 0;
    case K_NAMES:
        for (const char *p = v; *p;) {
            size_t sep = strspn(p, " ,\t"), len;
            p += sep;
            len = strcspn(p, " ,\t");
            if (len && !name_ok(p, len))
                return snprintf(why, n,
                                "'%.*s' in '%s' is not a name (letters, digits, '-', '_', '.'; "
                                "not starting with '-' or '.')",
                                (int)len, p, v),
                       -1;
            p += len;
        }
        return 0;
    case K_PATH:
        if (v[0] != '/') return snprintf(why, n, "'%s' is not an absolute path", v), -1;
        return 0;
    case K_URLS: {
        char *dup = strdup(v), *save = NULL;
        int bad = !dup;
        for (char *u = dup ? strtok_r(dup, ",", &save) : NULL; u && !bad;
             u = strtok_r(NULL, ",", &save))
            bad = strncmp(u, "http://", 7) && strncmp(u, "https://", 8);
        free(dup);
        if (bad) return snprintf(why, n, "'%s' is not a list of http(s):// URLs", v), -1;
        return 0;
    }
    case K_BOOL:
        if (!check_bool(v)) return snprintf(why, n, "'%s' is neither yes nor no", v), -1;
        return 0;
    case K_COUNT:
    case K_KEEP: {
        char *end;
        errno = 0;
        unsigned long long c = strtoull(v, &end, 10), max = k->kind == K_KEEP ? 100000 : 1000000;
        if (!isdigit((unsigned char)*v) || *end || errno || c < 1 || c > max)
            return snprintf(why, n, "'%s' is not a whole number from 1 to %llu", v, max), -1;
        return 0;
    }
    case K_DURATION: {
        uint64_t s;
        if (om_duration_parse(v, &s))
            return snprintf(why, n, "'%s' is not a duration (a number and s, m, h, d or w: 36h)",
                            v),
                   -1;
        return 0;
    }
    case K_WITHIN: {
        /* numbers of at most 100000 each followed by one of y, m, w, d, h, each unit at most
         * once: what backup/retention.h's bk_duration_parse takes (ombra expire reads it) */
        const char *p = v;
        char seen[8] = "";
        int bad = 0, nonzero = 0;
        while (*p && !bad) {
            const char *digits = p;
            while (isdigit((unsigned char)*p))
                p++;
            bad = p == digits || p - digits > 6 || strtol(digits, NULL, 10) > 100000 || !*p ||
                  !strchr("ymwdh", *p) || strchr(seen, *p);
            nonzero |= strtol(digits, NULL, 10) > 0;
            if (!bad) seen[strlen(seen)] = *p++;
        }
        if (bad || p == v || !nonzero)
            return snprintf(why, n,
                            "'%s' is not a span such as 7d, 36h or 1y6m (y, m for months, w, d, "
                            "h)",
                            v),
                   -1;
        return 0;
    }
    case K_PERCENT: {
        char *end;
        errno = 0;
        unsigned long long c = strtoull(v, &end, 10);
        if (!isdigit((unsigned char)*v) || *end || errno || c > 100)
            return snprintf(why, n, "'%s' is not a percentage from 0 to 100", v), -1;
        return 0;
    }
    case K_HOSTPORT: {
        const char *colon = strrchr(v, ':');
        char *end;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
        if (!colon || colon == v || !isdigit((unsigned char)colon[1]) || *end || port > 65535 ||
            strlen(colon + 1) > 5) /* 0: any free port */
            return snprintf(why, n, "'%s' is not HOST:PORT", v), -1;
        return 0;
    }
    case K_CHOICE: {
        size_t l = strlen(v);
        for (const char *c = k->choices; *c;) {
            const char *e = strchr(c, '|');
            size_t cl = e ? (size_t)(e - c) : strlen(c);
            if (cl == l && !strncmp(c, v, l)) return 0;
            c += cl + (e ? 1 : 0);
        }
        char list[128];
        snprintf(list, sizeof list, "%s", k->choices);
        for (char *p = list; *p; p++)
            if (*p == '|') *p = ',';
        return snprintf(why, n, "'%s' is not one of %s", v, list), -1;
    }
    }
    return 0;
}

/* The known key of kind nearest to key (base/near.h), or NULL. */
static const char *nearest_key(const char *kind, const char *key)
{
    om_near n;
    om_near_init(&n, key);
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(om_conf_keys[i].section, kind)) om_near_try(&n, om_conf_keys[i].key);
    return om_near_best(&n);
}

/* ---- reading ---- */

typedef struct reader {
    FILE *f;
    const char *file;
    int line;      /* of the line handed to inih last */
    int err;       /* the first error (0: none yet) */
    char why[512]; /* its message, without the "FILE:LINE: " */
    int err_line;
    char section[256]; /* the section of the last header seen, to find repeated headers */
} reader;

static void fail_at(reader *r, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_at(reader *r, int line, const char *fmt, ...)
{
    if (r->err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
    r->err = OM_E_ConfigInvalid;
    r->err_line = line;
}

static int enter_section(reader *r, const char *section);

/* inih's reader: one line at a time, so the handler knows the line; leading blanks dropped (an
 * indented key is a key, never the continuation of the value above); a UTF-8 byte order mark
 * before the first line dropped (here, so the first header is checked as every other); a line
 * longer than the buffer, or holding a zero byte (a file zeroed by a crash, a binary file), is
 * an error rather than two lines or a value cut short in silence. After the first error the
 * file ends: nothing more is read (a device or a huge file is not read to its end). */
static char *read_line(char *buf, int n, void *arg)
{
    reader *r = arg;
    if (r->err) return NULL;
    int l = 0, c = EOF;
    while (l < n - 1 && (c = fgetc(r->f)) != EOF) {
        if (c == 0) {
            fail_at(r, r->line + 1, "a zero byte: this is not a text file");
            return NULL;
        }
        buf[l++] = (char)c;
        if (c == '\n') break;
    }
    if (l == 0) return NULL;
    buf[l] = 0;
    r->line++;
    if (r->line == 1 && l >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) {
        memmove(buf, buf + 3, (size_t)l - 2);
        l -= 3;
    }
    if (l == n - 1 && buf[l - 1] != '\n' && (c = fgetc(r->f)) != EOF) {
        fail_at(r, r->line, "the line is longer than %d characters", n - 2);
        return NULL;
    }
    size_t skip = strspn(buf, " \t");
    if (skip) memmove(buf, buf + skip, (size_t)l - skip + 1);
    if (buf[0] == '[') { /* a header: checked here, so an empty or repeated section is seen too */
        char *end = strchr(buf, ']');
        const char *after = end ? end + 1 : NULL;
        if (after) after += strspn(after, " \t\r\n");
        if (!end)
            fail_at(r, r->line, "the section header has no ']'");
        else if (*after && *after != '#' && *after != ';')
            fail_at(r, r->line, "'%.*s' after the section header [%.*s]",
                    (int)strcspn(after, "\r\n"), after, (int)(end - buf - 1), buf + 1);
        else {
            char section[256];
            snprintf(section, sizeof section, "%.*s", (int)(end - buf - 1), buf + 1);
            enter_section(r, section);
        }
        if (r->err) return NULL;
    }
    return buf;
}

static int seen_section(const char *s)
{
    for (size_t i = 0; i < conf.nsections; i++)
        if (!strcmp(conf.sections[i], s)) return 1;
    return 0;
}

/* A new section header: checks its kind and name, refuses a repeated one. */
static int enter_section(reader *r, const char *section)
{
    snprintf(r->section, sizeof r->section, "%s", section);
    const char *colon = strchr(section, ':');
    char kind[64];
    snprintf(kind, sizeof kind, "%.*s", colon ? (int)(colon - section) : (int)strlen(section),
             section);
    if (!known_kind(kind)) {
        fail_at(r, r->line,
                "unknown section [%s] (sections: ombra, log, repl, check, metrics, "
                "repo:NAME, schedule:NAME)",
                section);
        return 0;
    }
    if (named_kind(kind) != (colon != NULL) || (colon && !colon[1])) {
        fail_at(r, r->line,
                named_kind(kind) ? "section [%s] needs a name: [%s:NAME]"
                                 : "section [%s] takes no name: [%s]",
                section, kind);
        return 0;
    }
    if (colon && !name_ok(colon + 1, strlen(colon + 1))) {
        fail_at(r, r->line,
                "'%s' in [%s] is not a name (letters, digits, '-', '_', '.'; not starting with "
                "'-' or '.')",
                colon + 1, section);
        return 0;
    }
    if (seen_section(section)) {
        fail_at(r, r->line, "section [%s] is given twice", section);
        return 0;
    }
    char **ns = realloc(conf.sections, (conf.nsections + 1) * sizeof *ns);
    if (!ns || !(ns[conf.nsections] = strdup(section))) {
        if (ns) conf.sections = ns;
        fail_at(r, r->line, "out of memory");
        return 0;
    }
    conf.sections = ns;
    int *nl = realloc(conf.section_lines, (conf.nsections + 1) * sizeof *nl);
    if (!nl) {
        free(ns[conf.nsections]);
        fail_at(r, r->line, "out of memory");
        return 0;
    }
    conf.section_lines = nl;
    nl[conf.nsections++] = r->line;
    return 1;
}

/* The keys a named section cannot do without: a repository without its path, a schedule
 * without what to back up or when, is refused with the file (at the section's header) rather
 * than taken for another repository, or found out at 01:00 by the timer. */
static void check_required(reader *r)
{
    static const struct {
        const char *kind, *keys[3];
    } need[] = {{"repo", {"path"}}, {"schedule", {"databases", "type", "calendar"}}};
    for (size_t i = 0; i < conf.nsections && !r->err; i++)
        for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
            size_t kl = strlen(need[k].kind);
            if (strncmp(conf.sections[i], need[k].kind, kl) || conf.sections[i][kl] != ':')
                continue;
            for (size_t j = 0; j < 3 && need[k].keys[j] && !r->err; j++)
                if (!om_conf(conf.sections[i], need[k].keys[j]))
                    fail_at(r, conf.section_lines[i], "[%s] has no %s", conf.sections[i],
                            need[k].keys[j]);
        }
}

static int on_key(void *arg, const char *section, const char *key, const char *value)
{
    reader *r = arg;
    if (r->err) return 1; /* the first error is the one reported */
    if (!*section) {
        fail_at(r, r->line, "'%s' is outside any section: put it under [ombra]", key);
        return 1;
    }
    char kind[64];
    const char *colon = strchr(section, ':');
    snprintf(kind, sizeof kind, "%.*s", colon ? (int)(colon - section) : (int)strlen(section),
             section);
    const conf_key *k = NULL;
    for (size_t i = 0; i < NKEYS && !k; i++)
        if (!strcmp(om_conf_keys[i].section, kind) && !strcmp(om_conf_keys[i].key, key))
            k = &om_conf_keys[i];
    if (!k) {
        const char *near = nearest_key(kind, key);
        if (near)
            fail_at(r, r->line, "unknown key '%s' in [%s] (did you mean '%s'?)", key, section,
                    near);
        else
            fail_at(r, r->line, "unknown key '%s' in [%s]", key, section);
        return 1;
    }
    if (om_conf_line(section, key)) {
        fail_at(r, r->line, "'%s' in [%s] is given twice (first at line %d)", key, section,
                om_conf_line(section, key));
        return 1;
    }
    char why[400];
    if (check_value(k, value, why, sizeof why)) {
        fail_at(r, r->line, "%s in [%s]: %s", key, section, why);
        return 1;
    }
    entry *ne = realloc(conf.e, (conf.n + 1) * sizeof *ne);
    if (!ne) {
        fail_at(r, r->line, "out of memory");
        return 1;
    }
    conf.e = ne;
    entry *e = &conf.e[conf.n];
    *e = (entry){strdup(section), strdup(key), strdup(value), r->line};
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        fail_at(r, r->line, "out of memory");
        return 1;
    }
    conf.n++;
    return 1;
}

int om_conf_load(const char *path)
{
    conf_free();
    const char *env = getenv("OMBRA_CONFIG");
    const char *file = path && *path ? path : env && *env ? env : NULL;
    int must_exist = file != NULL;
    if (!file) file = OM_CONF_DEFAULT_FILE;
    /* Not blocking on a FIFO nobody writes; only a regular file (or /dev/null: no settings) is
     * read, and only a configuration's size (a device or a huge file is not one). */
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    FILE *f = NULL;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        int devnull = S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
        if (!S_ISREG(st.st_mode) && !devnull) {
            close(fd);
            return om_errf(OM_E_ConfigInvalid,
                           "the configuration file %s is not a regular file (%s)", file,
                           S_ISDIR(st.st_mode)                          ? "a folder"
                           : S_ISFIFO(st.st_mode)                       ? "a FIFO"
                           : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                        : "a special file");
        }
        if (st.st_size > (1 << 20)) {
            close(fd);
            return om_errf(OM_E_ConfigInvalid,
                           "the configuration file %s is %lld bytes: a configuration is not "
                           "above 1 MiB",
                           file, (long long)st.st_size);
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        f = fdopen(fd, "r");
    }
    if (!f && fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    if (!f) {
        int e = errno;
        if (!must_exist && e == ENOENT) return 0;
        return om_errf(om_err_from_errno(e), "cannot read the configuration file %s: %s%s", file,
                       strerror(e),
                       must_exist && e == ENOENT
                           ? (path ? " (named by --config)" : " (named by $OMBRA_CONFIG)")
                           : "");
    }
    reader r = {.f = f, .file = file};
    int prc = ini_parse_stream(read_line, &r, on_key, &r);
    int read_err = ferror(f);
    fclose(f);
    if (!r.err && read_err) {
        r.err = OM_E_DiskIO;
        snprintf(r.why, sizeof r.why, "read error");
        r.err_line = r.line;
    }
    /* inih's own refusals: a line that is neither a header, a key = value nor a comment. */
    if (!r.err && prc > 0)
        fail_at(&r, prc, "not a section header, a key = value line or a comment");
    if (!r.err && prc < 0) fail_at(&r, 0, "out of memory");
    if (!r.err) check_required(&r);
    if (r.err) {
        int err = om_errf(r.err,
                          "%s:%d: %s. HINT: correct the file; --config /dev/null runs "
                          "with none",
                          file, r.err_line, r.why);
        conf_free();
        return err;
    }
    conf.file = strdup(file);
    return 0;
}

const char *om_conf_file(void)
{
    return conf.file;
}

static const entry *find(const char *section, const char *key)
{
    for (size_t i = 0; i < conf.n; i++)
        if (!strcmp(conf.e[i].section, section) && !strcmp(conf.e[i].key, key)) return &conf.e[i];
    return NULL;
}

const char *om_conf(const char *section, const char *key)
{
    const entry *e = find(section, key);
    return e ? e->value : NULL;
}

int om_conf_line(const char *section, const char *key)
{
    const entry *e = find(section, key);
    return e ? e->line : 0;
}

size_t om_conf_names(const char *kind, const char *const **names)
{
    static const char *none[1];
    const char **list = calloc(conf.nsections + 1, sizeof *list);
    const char ***keep = list ? realloc(conf.names, (conf.nnames + 1) * sizeof *keep) : NULL;
    *names = none;
    if (!keep) {
        free(list);
        return 0;
    }
    conf.names = keep;
    conf.names[conf.nnames++] = list;
    size_t n = 0, kl = strlen(kind);
    for (size_t i = 0; i < conf.nsections; i++)
        if (!strncmp(conf.sections[i], kind, kl) && conf.sections[i][kl] == ':')
            list[n++] = conf.sections[i] + kl + 1;
    *names = list;
    return n;
}

const char *om_conf_setting(const char *env, const char *section, const char *key)
{
    const char *e = env ? getenv(env) : NULL;
    if (e && *e) return e;
    return om_conf(section, key);
}

int om_conf_bool(const char *section, const char *key, int dflt)
{
    const char *v = om_conf(section, key);
    return v ? bool_value(v) : dflt;
}

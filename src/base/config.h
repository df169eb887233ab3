/* The configuration file: /etc/ombra/ombra.conf (INI, read with Debian's libinih), or the file
 * --config or $OMBRA_CONFIG names. docs/configuration.md is the manual: every key, its default,
 * the environment variable and the option that override it.
 *
 * Precedence, for every setting: the command line, then the environment, then the file, then
 * the built-in default. This module holds the file's part; the callers apply the rest (base/
 * paths.c for the directories, the daemons for --server and --etcd, the CLI for --repo).
 *
 * Sections and their keys (om_conf_keys in config.c is the one table of them; anything else is
 * refused when the file is read):
 *   [ombra]          server, data-dir, runtime-dir, etcd, default-repo, group
 *   [log]            target, file, level
 *   [repl]           listen, dag
 *   [check]          max-full-age, max-incremental-age, min-log-free
 *   [metrics]        listen
 *   [repo:NAME]      path, passphrase-file, keep-last, keep-daily, keep-weekly, keep-monthly,
 *                    keep-yearly, keep-within, keep-full
 *   [schedule:NAME]  databases, type, calendar, repo, randomized-delay, persistent, provider,
 *                    expire
 *
 * A file is refused whole, with one error naming the file, the line and the key (ConfigInvalid):
 * an unknown section or key (with the nearest known key as a suggestion), a value of the wrong
 * kind (a relative path, a duration that is not one, a boolean that is neither yes nor no), a
 * key or a section given twice (the second would silently win), a line longer than the reader
 * takes. Lines may be indented; a value is one line (no continuation lines); comments start
 * with '#' or ';' at the start of a line, or " ;" after a value.
 *
 * Threads: om_conf_load runs once, before any thread starts; the getters only read. */
#ifndef OM_BASE_CONFIG_H
#define OM_BASE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* The install's sysconfdir (meson: /etc for the package, /usr/local/etc for a local install). */
#ifndef OM_CONF_DEFAULT_FILE
#define OM_CONF_DEFAULT_FILE "/etc/ombra/ombra.conf"
#endif

/* Reads the configuration: path (--config), else $OMBRA_CONFIG, else OM_CONF_DEFAULT_FILE when
 * it exists (no file there is no error: every setting has a default). A file named by path or
 * $OMBRA_CONFIG must exist. Replaces what an earlier call read. 0, or ConfigInvalid /
 * FileNotFound / FileAccessDenied with the detail "FILE:LINE: what is wrong". */
int om_conf_load(const char *path);
/* The file read last, or NULL when none was. */
const char *om_conf_file(void);

/* The value of key in section ("ombra", "repo:main"), or NULL when the file does not set it. */
const char *om_conf(const char *section, const char *key);
/* The line of the file that set it (0 when not set): for messages about a value that is valid
 * in the file but wrong where it is used ("the repository main (ombra.conf:12) ..."). */
int om_conf_line(const char *section, const char *key);
/* The names of the sections of a kind ("repo", "schedule"), in file order: *names is valid
 * until the next om_conf_load (each call's answer: calls may nest). Returns how many. */
size_t om_conf_names(const char *kind, const char *const **names);

/* A setting with its precedence below the command line: $env when set and not empty, else the
 * file's [section] key, else NULL. */
const char *om_conf_setting(const char *env, const char *section, const char *key);

/* yes/no, true/false, on/off, 1/0 (any case): 1 or 0; dflt when key is not set. Values were
 * checked when the file was read. */
int om_conf_bool(const char *section, const char *key, int dflt);

/* "90s", "15m", "36h", "7d", "2w" (a whole number and one unit; "0" alone is 0): seconds into
 * *out. 0, or -1 when text is not such a duration. The one parser of durations: the file's
 * keys, and the options that take one (--keep-within, --max-full-age). */
int om_duration_parse(const char *text, uint64_t *out);

#endif

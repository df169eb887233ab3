/* Diagnostics: the tools' lines on stderr, and the daemons' log (a file, stderr or the journal).
 *
 * Two modes.
 *   Tools (ombra, the test tools) call om_log_init(prog) and print "prog: warning: msg" on
 *   stderr: a person reads them at once, a timestamp would be noise.
 *   Daemons call om_log_setup() once, after detaching and before their threads start, and log
 *   one record per call to the target it names:
 *     file, stderr  one line: "2026-12-05T09:16:22.123Z ombra-store[4242] warning: msg"
 *                   (ISO 8601 UTC to the millisecond, level name: debug, info, warning, error),
 *                   one write(2) per line (the file opened O_APPEND, so logrotate's copies and
 *                   other writers never cut a line). The file's last component must be a
 *                   regular file, never a symbolic link (O_NOFOLLOW: root would append to
 *                   whatever a link planted in the log directory points at) nor a FIFO or
 *                   device: refused at setup; at a reopen the old file is kept and the
 *                   refusal logged in it;
 *     journal       one datagram per record in journald's native protocol to its socket
 *                   (/run/systemd/journal/socket; $OMBRA_JOURNAL_SOCKET names another, for
 *                   tests): MESSAGE, PRIORITY (syslog's: error 3, warning 4, info 6, debug 7),
 *                   SYSLOG_IDENTIFIER (the program), and OMBRA_<KEY> for every field the call
 *                   gives (below). The send never waits: a record the socket refuses (no
 *                   journald, too big, its queue full because journald stalls) is written as
 *                   the stderr line instead, so a stalled journal never stalls the daemon.
 *                   When stderr is a socket (journald's stream) that line is not waited on
 *                   either: one it does not take at once is lost, and counted.
 *     auto          the file when a path is given; else the journal when stderr is journald's
 *                   stream (systemd sets $JOURNAL_STREAM to "dev:inode" of the stream it gives
 *                   a unit's stderr; another program's stderr does not match); else stderr.
 *
 * Structured fields. A call that concerns a database, a backup session or a log generation
 * names them so an administrator can filter on them (`journalctl OMBRA_DATABASE=mail1`):
 *
 *   om_log_with(OM_WARN, OM_FIELDS({"DATABASE", name}, {"SESSION", sid}), "...", ...);
 *
 * Keys are upper case letters, digits and '_' (others become '_'); the journal gets them as
 * OMBRA_DATABASE, OMBRA_SESSION, OMBRA_GENERATION. A NULL or empty value is left out. The keys
 * in use: DATABASE (the database's name), SESSION (a VSS session id), GENERATION (a log
 * generation number, decimal). The file and stderr lines carry the message only: messages name
 * their database, session and generation in words as well, so a line says everything alone.
 *
 * Threads: any thread may log at any time; one mutex orders the writes (a record is one write
 * or one datagram, so records never interleave).
 * SIGHUP (logrotate): om_log_reopen() only sets a flag, so a signal handler may call it; the
 * next record reopens the file at its path first (the daemons' signal thread logs one line
 * right after, so the new file appears at once). */
#ifndef OM_BASE_LOG_H
#define OM_BASE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum om_level { OM_DEBUG, OM_INFO, OM_WARN, OM_ERROR };

/* One structured field of a record: key without the OMBRA_ prefix, value as text. A list ends
 * with {0}. */
typedef struct om_log_field {
    const char *key;
    const char *value;
} om_log_field;

/* A list of fields for om_log_with, ended for you: OM_FIELDS({"DATABASE", db}, ...). */
#define OM_FIELDS(...) ((const om_log_field[]){__VA_ARGS__, {0, 0}})

/* Tools: the program name of the lines. */
void om_log_init(const char *prog);
/* Records below lvl are not written (tests that make errors on purpose silence them; OM_ERROR
 * + 1 silences all). Debug records are written only with OMBRA_DEBUG set in the environment
 * or a daemon's level set to debug. */
void om_log_min_level(int lvl);
void om_log(enum om_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* om_log with structured fields (fields may be NULL). */
void om_log_with(enum om_level lvl, const om_log_field *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define om_debug(...) om_log(OM_DEBUG, __VA_ARGS__)
#define om_info(...)  om_log(OM_INFO, __VA_ARGS__)
#define om_warn(...)  om_log(OM_WARN, __VA_ARGS__)
#define om_error(...) om_log(OM_ERROR, __VA_ARGS__)

/* ---- daemons ---- */

enum om_log_target { OM_LOG_AUTO, OM_LOG_JOURNAL, OM_LOG_FILE, OM_LOG_STDERR };

typedef struct om_log_opts {
    const char *prog;          /* "ombra-store": the lines' program, SYSLOG_IDENTIFIER */
    enum om_log_target target; /* OM_LOG_AUTO: as the header says */
    const char *file;          /* the file target's path (NULL: none given); give it absolute:
                                  a detached daemon is in /, and SIGHUP reopens this path */
    int level;                 /* the least level written; -1: info (debug with OMBRA_DEBUG) */
    int stderr_to_file;        /* a detached daemon: fd 2 follows the file too (stray writes
                                  and sanitizer reports land in the log), reopened with it */
} om_log_opts;

/* Switches to the daemon mode with o. 0, or InvalidParameter (target file without a path) or
 * the open's error (the file cannot be opened) with the detail naming the path; on failure
 * nothing changes. Call it once, before other threads log. */
int om_log_setup(const om_log_opts *o);
/* The target om_log_setup chose (OM_LOG_STDERR before it). */
enum om_log_target om_log_target_now(void);
/* Records the journal's socket did not take (written to stderr instead); into *lost (may be
 * NULL) those stderr did not take either (a stalled journald stream). */
uint64_t om_log_journal_refused(uint64_t *lost);
/* Asks for the file to be reopened before the next record. Async-signal-safe. */
void om_log_reopen(void);
/* Reopens the file now (a thread that took SIGHUP with sigwait, not a handler): 0 (also when
 * the target is no file), or the open's error with the detail naming the path; the old file
 * stays in use then. */
int om_log_reopen_now(void);

/* Names: "auto", "journal", "file", "stderr"; "debug", "info", "warning" (or "warn"),
 * "error". 0, or InvalidParameter with the detail listing the names. */
int om_log_target_parse(const char *name, enum om_log_target *t);
int om_log_level_parse(const char *name, int *lvl);
const char *om_log_level_name(int lvl);

/* 1 when fd 2 is journald's stream ($JOURNAL_STREAM equals its st_dev:st_ino). */
int om_log_stderr_is_journal(void);
/* The tools' form under systemd: a scheduled `ombra schedule run`'s stderr is journald's stream,
 * whose lines all get the unit's default priority unless they start with "<N>" (syslog's: error
 * 3, warning 4, info 6, debug 7; systemd's SyslogLevelPrefix). That prefix for lvl when fd 2 is
 * journald's stream, else "": so `journalctl -p err` shows a failed scheduled backup. */
const char *om_log_tool_prefix(enum om_level lvl);

/* ---- the encodings (om_log writes these; tests check them) ---- */

/* The line of one record, newline included, into buf (NUL-terminated): "<ISO time> prog[pid]
 * level: msg\n". A message too long for buf is cut, the newline kept. Returns the length. */
size_t om_log_format_line(char *buf, size_t len, uint64_t now_ns, const char *prog, int pid,
                          enum om_level lvl, const char *msg);
/* One record in journald's native protocol into buf: for each field "KEY=value\n", or, for a
 * value holding a newline, "KEY\n", its length as 64-bit little-endian, the value, "\n".
 * Fields in order: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then OMBRA_<key> for each of fields.
 * Returns the length, 0 when it does not fit in len. */
size_t om_log_format_journal(char *buf, size_t len, const char *prog, enum om_level lvl,
                             const om_log_field *fields, const char *msg);

#endif

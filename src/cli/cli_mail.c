/* `ombra mail ...`: mail in the store's databases (docs/protocol.md, mail.* operations). Bodies
 * travel as raw data frames, never inside JSON, so they come back byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/progress.h"
#include "base/proto.h"
#include "base/time.h"
#include "cli/cli.h"

/* ---- deliver ---- */

/* The whole of stdin, binary safe. */
/* The most a delivery carries, as sizes are shown (SI, cli_human_bytes). */
static const char *max_data(void)
{
    static char b[32];
    return cli_human_bytes(OM_PROTO_MAX_DATA, b, sizeof b);
}

static int read_stdin(uint8_t **out, size_t *len)
{
    size_t n = 0, cap = 64 << 10;
    uint8_t *b = malloc(cap);
    if (!b) return om_errf(OM_E_OutOfMemory, "reading the message: out of memory");
    for (;;) {
        if (n == cap) {
            if (cap >= OM_PROTO_MAX_DATA + 1ull) {
                free(b);
                return om_errf(OM_E_InvalidParameter,
                               "the message is larger than the %s (%u bytes) a delivery may carry",
                               max_data(), (unsigned)OM_PROTO_MAX_DATA);
            }
            cap = cap * 2 > OM_PROTO_MAX_DATA + 1ull ? OM_PROTO_MAX_DATA + 1ull : cap * 2;
            uint8_t *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                return om_errf(OM_E_OutOfMemory, "reading the message: out of memory");
            }
            b = nb;
        }
        ssize_t r = read(0, b + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(b);
            return om_errf(om_err_from_errno(e), "reading the message from standard input: %s",
                           strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n > OM_PROTO_MAX_DATA) {
        free(b);
        return om_errf(OM_E_InvalidParameter,
                       "the message is larger than the %s (%u bytes) a delivery may carry",
                       max_data(), (unsigned)OM_PROTO_MAX_DATA);
    }
    *out = b;
    *len = n;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 when invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    size_t len;
    uint32_t min;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xe0) == 0xc0)
        len = 2, min = 0x80;
    else if ((p[0] & 0xf0) == 0xe0)
        len = 3, min = 0x800;
    else if ((p[0] & 0xf8) == 0xf0)
        len = 4, min = 0x10000;
    else
        return 0;
    if (len > n) return 0;
    uint32_t c = p[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    return len;
}

/* A header's subject as JSON can carry it: valid UTF-8 (a byte that is not becomes '?', as
 * legacy 8-bit subjects are common) and no control characters but tab (they become spaces).
 * Its length is the store's to judge: an oversized subject is refused there, not cut here. */
static char *clean_subject(const uint8_t *p, size_t n)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(p + i, n - i);
        if (l == 0 || (l == 1 && ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f))) {
            out[o++] = l == 0 ? '?' : ' ';
            i++;
            continue;
        }
        memcpy(out + o, p + i, l);
        o += l;
        i += l;
    }
    out[o] = 0;
    return out;
}

/* The value of the first "Subject:" line of the header block (the lines before the first empty
 * one), trailing CR/LF stripped; NULL when there is none. *oom on allocation failure. */
static char *header_subject(const uint8_t *msg, size_t n, int *oom)
{
    *oom = 0;
    for (size_t p = 0; p < n;) {
        const uint8_t *nl = memchr(msg + p, '\n', n - p);
        size_t e = nl ? (size_t)(nl - msg) : n; /* the line is [p, e) */
        size_t l = e - p;
        if (l == 0 || (l == 1 && msg[p] == '\r')) break; /* end of the header block */
        if (l >= 8 && strncasecmp((const char *)msg + p, "subject:", 8) == 0) {
            size_t s = p + 8;
            while (s < e && (msg[s] == ' ' || msg[s] == '\t'))
                s++;
            while (e > s && (msg[e - 1] == '\r' || msg[e - 1] == '\n'))
                e--;
            char *subj = clean_subject(msg + s, e - s);
            if (!subj) *oom = 1;
            return subj;
        }
        p = e + 1;
    }
    return NULL;
}

/* The store cannot be reached (not running, restarting, its directory not reached yet, busy). */
static int unreachable_store(int err)
{
    return err == OM_E_FileNotFound || err == OM_E_ConnectionClosed || err == OM_E_OutOfSessions ||
           err == OM_E_EtcdUnavailable;
}

/* Delivers m, and with --retry delivers it again after a retryable error or an unreachable
 * store until retry_s seconds have passed (pauses of 0.1 s doubling to 1 s, the last attempt at
 * the end). *unreachable: the last error was an unreachable store's, after retries (the exit is
 * then 75 too). */
static int deliver_retrying(const char *db, const store_mail_new *m, uint64_t retry_s,
                            store_mail_ack *ack, int *unreachable)
{
    uint64_t until = om_mono_ns() + retry_s * 1000000000ull, pause_ns = 100000000ull;
    for (;;) {
        store_client *sc;
        int rc = cli_store(&sc);
        if (!rc) rc = store_client_mail_deliver_ack(sc, db, m, ack);
        int again = cli_retryable(rc) || unreachable_store(rc);
        *unreachable = retry_s && unreachable_store(rc);
        uint64_t now = om_mono_ns();
        if (!rc || !again || now >= until) return rc;
        uint64_t ns = until - now < pause_ns ? until - now : pause_ns;
        struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                              .tv_nsec = (long)(ns % 1000000000ull)};
        nanosleep(&ts, NULL);
        pause_ns = pause_ns * 2 > 1000000000ull ? 1000000000ull : pause_ns * 2;
    }
}

static int run_deliver(const cli_args *a)
{
    uint8_t *msg = NULL;
    size_t n = 0;
    int rc = read_stdin(&msg, &n);
    if (rc) return cli_fail(rc);
    store_mail_new m = {
        .mailbox = a->pos[1], .folder = cli_val(a, "folder"), .body = msg, .size = n};
    char *hs = NULL;
    m.subject = cli_val(a, "subject");
    if (m.subject) {
        json_t *s = json_string(m.subject);
        if (!s) {
            free(msg);
            return cli_usage(a, "--subject must be UTF-8 text");
        }
        json_decref(s);
    } else {
        int oom;
        m.subject = hs = header_subject(msg, n, &oom);
        if (oom) {
            free(msg);
            return cli_fail(om_errf(OM_E_OutOfMemory, "out of memory"));
        }
    }
    uint64_t retry_s = 0;
    if (cli_val(a, "retry") &&
        (rc = cli_number(a, "--retry", cli_val(a, "retry"), 0, 86400, 0, &retry_s))) {
        free(msg);
        free(hs);
        return rc;
    }
    store_mail_ack ack;
    int unreachable = 0;
    rc = deliver_retrying(a->pos[0], &m, retry_s, &ack, &unreachable);
    free(msg);
    free(hs);
    if (rc) {
        int ex = cli_fail(rc);
        return unreachable ? CLI_TEMPFAIL : ex;
    }
    if (cli_flag(a, "json")) {
        json_t *o =
            json_pack("{s:I, s:s, s:I, s:I}", "id", (json_int_t)ack.id, "server", ack.server,
                      "epoch", (json_int_t)ack.epoch, "acked_ns", (json_int_t)ack.acked_ns);
        rc = cli_print_json(o);
        json_decref(o);
        return rc;
    }
    printf("%llu\n", (unsigned long long)ack.id);
    return CLI_OK;
}

/* ---- list ---- */

/* A name or subject on one line of a tab-separated listing. */
static void put_field(const char *s)
{
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

static int run_list(const cli_args *a)
{
    store_client *sc;
    json_t *msgs = NULL, *m;
    size_t i;
    int rc = cli_store(&sc);
    if (!rc) rc = store_client_mail_list(sc, a->pos[0], a->pos[1], cli_val(a, "folder"), &msgs);
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json")) {
        json_t *o = json_pack("{s:O}", "messages", msgs); /* a document is an object */
        rc = cli_print_json(o);
        json_decref(o);
    } else
        json_array_foreach(msgs, i, m)
        {
            printf("%lld\t", (long long)om_json_int_or(m, "id", 0));
            put_field(om_json_str_or(m, "folder", "-"));
            printf("\t%s\t%lld\t", om_json_str_or(m, "time", "-"),
                   (long long)om_json_int_or(m, "size", 0));
            put_field(om_json_str_or(m, "subject", ""));
            putchar('\n');
        }
    json_decref(msgs);
    return rc;
}

/* ---- get, delete ---- */

static int parse_id(const cli_args *a, int64_t *id)
{
    uint64_t v;
    int rc = cli_number(a, "ID", a->pos[2], 0, INT64_MAX, 0, &v);
    *id = (int64_t)v;
    return rc;
}

static int run_get(const cli_args *a)
{
    int64_t id;
    int rc = parse_id(a, &id);
    if (rc) return rc;
    store_client *sc;
    uint8_t *body = NULL;
    size_t n = 0;
    rc = cli_store(&sc);
    if (!rc) rc = store_client_mail_get(sc, a->pos[0], a->pos[1], (uint64_t)id, NULL, &body, &n);
    if (rc) return cli_fail(rc);
    rc = cli_write_stdout(body, n);
    free(body);
    return rc;
}

/* The database named db as every output refers to one, {"id", "name"} (docs/cli.md), asked
 * of the store: *out, or an error code (not printed). */
static int db_ref(store_client *sc, const char *db, json_t **out)
{
    json_t *info = NULL;
    int rc = store_client_db_show(sc, db, &info);
    if (!rc) *out = json_pack("{s:s,s:s}", "id", om_json_str_or(info, "id", ""), "name", db);
    json_decref(info);
    if (!rc && !*out) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    return rc;
}

static int run_delete(const cli_args *a)
{
    int64_t id;
    int rc = parse_id(a, &id);
    if (rc) return rc;
    store_client *sc;
    json_t *ref = NULL;
    int json = cli_flag(a, "json");
    rc = cli_store(&sc);
    if (!rc && json) rc = db_ref(sc, a->pos[0], &ref);
    if (!rc) rc = store_client_mail_delete(sc, a->pos[0], a->pos[1], (uint64_t)id);
    if (rc) {
        json_decref(ref);
        return cli_fail(rc);
    }
    if (!json) return CLI_OK; /* as rm: nothing to say */
    json_t *o = json_pack("{s:o,s:s,s:I,s:b}", "database", ref, "mailbox", a->pos[1], "id",
                          (json_int_t)id, "deleted", 1);
    rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

/* ---- load ---- */

static void load_progress(void *arg, uint64_t done, uint64_t total)
{
    om_progress_update(arg, done);
}

static int run_load(const cli_args *a)
{
    uint64_t mailboxes, messages, size, seed = 1;
    int rc = cli_number(a, "--mailboxes", cli_val(a, "mailboxes"), 1, UINT32_MAX, 0, &mailboxes);
    if (!rc) rc = cli_number(a, "--messages", cli_val(a, "messages"), 1, INT64_MAX, 0, &messages);
    if (!rc) rc = cli_number(a, "--size", cli_val(a, "size"), 0, INT64_MAX, 1, &size);
    if (!rc && cli_val(a, "seed"))
        rc = cli_number(a, "--seed", cli_val(a, "seed"), 0, INT64_MAX, 0, &seed);
    if (rc) return rc;
    store_client_load l = {
        .mailboxes = (uint32_t)mailboxes, .messages = messages, .size = size, .seed = seed};
    store_client *sc;
    json_t *reply = NULL;
    om_progress bar;
    rc = cli_store(&sc);
    if (rc) return cli_fail(rc);
    /* The store reports the messages delivered as it goes; the bar shows them on a terminal. */
    om_progress_start(&bar, "loading", messages, "messages");
    rc = store_client_mail_load(sc, a->pos[0], &l, load_progress, &bar, &reply);
    if (!rc) om_progress_update(&bar, messages);
    om_progress_end(&bar);
    if (rc) return cli_fail(rc);
    if (cli_flag(a, "json")) {
        rc = cli_print_json(reply);
    } else {
        printf("loaded %lld messages into %llu mailboxes in %.2f s: %.0f messages/s\n",
               (long long)om_json_int_or(reply, "messages", (json_int_t)messages),
               (unsigned long long)mailboxes, json_number_value(json_object_get(reply, "seconds")),
               json_number_value(json_object_get(reply, "rate")));
    }
    json_decref(reply);
    return rc;
}

/* ---- digest ---- */

static int run_digest(const cli_args *a)
{
    store_client *sc;
    char d[33];
    json_t *ref = NULL;
    int json = cli_flag(a, "json");
    int rc = cli_store(&sc);
    if (!rc && json) rc = db_ref(sc, a->pos[0], &ref);
    if (!rc) rc = store_client_mail_digest(sc, a->pos[0], d);
    if (rc) {
        json_decref(ref);
        return cli_fail(rc);
    }
    if (!json) {
        printf("%s\n", d);
        return CLI_OK;
    }
    json_t *o = json_pack("{s:o,s:s}", "database", ref, "digest", d);
    rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

/* ---- the table ---- */

static const cli_opt deliver_opts[] = {
    {"folder", "F", "the folder (default Inbox; created on first use)", 0},
    {"subject", "S", "the subject (default: the message's Subject: header)", 0},
    {"retry", "SECONDS",
     "deliver again after a retryable refusal or an unreachable store, for up to SECONDS", 0},
    {"json", NULL, "print {\"id\", \"server\", \"epoch\", \"acked_ns\"}: who acknowledged it, when",
     0},
    {0},
};
static const cli_opt list_opts[] = {
    {"folder", "F", "only the messages of this folder", 0},
    {"json", NULL, "print JSON: {\"messages\": [...]}", 0},
    {0},
};
static const cli_opt load_opts[] = {
    {"mailboxes", "N", "spread the messages over N mailboxes (user00000, ...)", 1},
    {"messages", "M", "how many messages to deliver", 1},
    {"size", "BYTES", "the size of each message body (K, M, G suffixes allowed)", 1},
    {"seed", "S", "the random seed (default 1): the same arguments give the same mail", 0},
    {"json", NULL, "print the result as JSON", 0},
    {0},
};
static const cli_opt no_opts[] = {{0}};
static const cli_opt delete_opts[] = {
    {"json", NULL, "print JSON: {\"database\": {id, name}, \"mailbox\", \"id\", \"deleted\": true}",
     0},
    {0}};
static const cli_opt digest_opts[] = {
    {"json", NULL, "print JSON: {\"database\": {id, name}, \"digest\"}", 0}, {0}};

static const cli_cmd mail_cmds[] = {
    {"deliver", "DB MAILBOX", deliver_opts,
     "Deliver the message on standard input and print its id once it is durable",
     "The mailbox is created on first delivery. The message is stored byte for byte. A "
     "retryable refusal (the database moving to another server, this server's lease on it "
     "lapsed, synchronous copies missing) exits 75 (EX_TEMPFAIL): deliver again, to the server "
     "the DAG names active.",
     run_deliver},
    {"list", "DB MAILBOX", list_opts, "List a mailbox's messages",
     "One line per message, tab-separated: id, folder, received time, size in bytes, subject.",
     run_list},
    {"get", "DB MAILBOX ID", no_opts, "Write a message's body to standard output, byte exact", NULL,
     run_get},
    {"delete", "DB MAILBOX ID", delete_opts, "Delete a message", NULL, run_delete},
    {"load", "DB", load_opts, "Deliver generated messages, for demos and benchmarks",
     "Shows a progress bar on a terminal and prints the messages per second at the end.", run_load},
    {"digest", "DB", digest_opts, "Print one hash of all the mailboxes' contents",
     "Two databases have the same digest exactly when they hold the same mail.", run_digest},
    {0},
};

const cli_group cli_mail_group = {"mail", "Deliver, list, read, delete and load mail", mail_cmds};

/* A writer process for the shadow copy system tests: it owns a directory shaped like a store
 * database, keeps changing it (--mutate) the way the store would, and follows the writer
 * contract of src/vss/writer.h, with faults on demand.
 *
 *   vss_test_writer --dir DIR --name NAME [--instance UUID] [--class UUID] [--can-hold]
 *                   [--socket PATH] [--fail EVENT:KIND[:COUNT]]... [--sleep EVENT:MS]...
 *                   [--die EVENT]... [--mutate]
 *   vss_test_writer digest DIR
 *
 * DIR holds data.edb (4 MiB, held), logs/E0000000001.log .. E0000000003.log (1 MiB each,
 * finished: held), logs/E00.log and logs/E00.chk (changing, not held); missing files are
 * created at start, existing ones kept. Identify describes one component "Test\NAME" \ NAME
 * with those files and the path DIR.
 *
 * --mutate: a thread rewrites random 4 KiB blocks of data.edb, appends to E00.log (finishing a
 * generation, E00.log -> E00<gen:08X>.log, once it reaches 1 MiB) and rewrites E00.chk every
 * few ms. Nothing is written between Freeze and Thaw (or Abort); after a Freeze with
 * hold=true, data.edb and the finished logs stay unchanged (and no generation is finished)
 * until BackupShutdown or Abort of that session.
 *
 * At Freeze, once writes have stopped, it writes DIR.freeze.json (next to DIR, durably
 * replaced): {"session": ..., "files": {"<path relative to DIR>": "<xxh3-128 hex>", ...}} of
 * every regular file under DIR. `digest DIR` prints the same document (session null) for any
 * tree, so a test compares a shadow copy with what DIR held at Freeze.
 *
 * Faults, applied at the start of the event's handler in this order: --sleep EVENT:MS sleeps;
 * --die EVENT calls _exit(9); --fail EVENT:KIND[:COUNT] fails the event with KIND (retryable,
 * non_retryable, timeout, out_of_resources, inconsistent_snapshot, recovery_failed) COUNT
 * times (default: every time). An Abort is always answered ok whatever its handler says.
 *
 * stdout, one flushed line each:
 *   registered <instance>                 after every registration
 *   disconnected <why>                    after losing the coordinator
 *   event <Name> session <uuid> -> ok     or "-> failed <kind>", per event handled
 *   autothaw session <uuid> -> ok         the SDK thawed by itself (no Thaw in thaw_limit_ms)
 *   lostabort session <uuid> -> ok        the SDK aborted a session whose coordinator vanished
 *   stopped                               after SIGTERM/SIGINT, before exit 0
 * Exit 2 on a usage or setup error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "base/error.h"
#include "base/vfs.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/uuid.h"
#include "vss/writer.h"

#define EDB_SIZE  (4u << 20)
#define LOG_SIZE  (1u << 20)
#define BLOCK     4096u
#define APPEND    512u
#define TICK_MS   4
#define MAX_RULES 32
#define MAX_SESS  16

#define DEFAULT_CLASS "7e570000-0b5a-4c1a-9d0e-000000000001"

typedef struct rule {
    char event[32];
    int kind; /* 'f' fail, 's' sleep, 'd' die */
    vss_failure failure;
    long count; /* fail: times left, -1 forever; sleep: ms */
} rule;

typedef struct tsess {
    char id[64];
    int frozen, hold;
} tsess;

static struct {
    char dir[PATH_MAX], name[128], instance[64], class_id[64];
    int can_hold;
    size_t edb_size; /* --edb-mb (default 4 MiB) */
    int no_digest;   /* --no-digest: no DIR.freeze.json (benchmarks: hashing would lengthen
                        the freeze) */
    rule rules[MAX_RULES];
    int nrules;

    pthread_mutex_t mu; /* everything below, and the files while a mutation tick runs */
    tsess sess[MAX_SESS];
    unsigned next_gen;
    uint64_t rng;
    int stopping;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .edb_size = EDB_SIZE};

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void die_setup(int rc, const char *what)
{
    char b[1200];
    fprintf(stderr, "vss_test_writer: %s: %s\n", what, om_err_format(rc, b, sizeof b));
    exit(2);
}

static uint64_t rnd(void)
{
    /* xorshift64*: fast, and reproducibility does not matter */
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return g.rng * 2685821657736338717ull;
}

static void fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rnd();
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* ---- files ---- */

static void path_of(char *out, size_t n, const char *rel)
{
    snprintf(out, n, "%s/%s", g.dir, rel);
}

static int write_file(const char *path, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return om_errf(om_err_from_errno(errno), "creating %s: %s", path, strerror(errno));
    uint8_t buf[65536];
    for (size_t off = 0; off < size; off += sizeof buf) {
        size_t n = size - off < sizeof buf ? size - off : sizeof buf;
        fill(buf, n);
        if (write(fd, buf, n) != (ssize_t)n) {
            int e = errno;
            close(fd);
            return om_errf(om_err_from_errno(e), "writing %s: %s", path, strerror(e));
        }
    }
    return close(fd) == 0 ? 0 : om_errf(OM_E_DiskIO, "closing %s", path);
}

static int ensure_file(const char *rel, size_t size)
{
    char p[PATH_MAX + 64];
    path_of(p, sizeof p, rel);
    struct stat st;
    if (stat(p, &st) == 0) return 0;
    return write_file(p, size);
}

/* The highest finished generation in logs/ (0 when none). */
static unsigned last_generation(void)
{
    char p[PATH_MAX + 16];
    path_of(p, sizeof p, "logs");
    DIR *d = opendir(p);
    unsigned last = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        unsigned gen;
        char tail[8];
        if (strlen(de->d_name) == 15 && sscanf(de->d_name, "E00%8X%4s", &gen, tail) == 2 &&
            !strcmp(tail, ".log") && gen > last)
            last = gen;
    }
    if (d) closedir(d);
    return last;
}

static void setup_files(void)
{
    int rc = om_mkdirs(g.dir);
    if (rc) die_setup(rc, "creating the directory");
    char p[PATH_MAX + 16];
    path_of(p, sizeof p, "logs");
    if ((rc = om_mkdirs(p))) die_setup(rc, "creating logs/");
    if ((rc = ensure_file("data.edb", g.edb_size))) die_setup(rc, "creating data.edb");
    if (last_generation() == 0)
        for (unsigned gen = 1; gen <= 3; gen++) {
            char rel[64];
            snprintf(rel, sizeof rel, "logs/E00%08X.log", gen);
            if ((rc = ensure_file(rel, LOG_SIZE))) die_setup(rc, "creating a log");
        }
    if ((rc = ensure_file("logs/E00.log", 64 * 1024))) die_setup(rc, "creating E00.log");
    if ((rc = ensure_file("logs/E00.chk", BLOCK))) die_setup(rc, "creating E00.chk");
    g.next_gen = last_generation() + 1;
}

/* ---- digests ---- */

static int digest_file(const char *path, char hex[33])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return om_errf(om_err_from_errno(errno), "opening %s: %s", path, strerror(errno));
    XXH3_state_t *st = XXH3_createState();
    XXH3_128bits_reset(st);
    uint8_t buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        XXH3_128bits_update(st, buf, (size_t)n);
    int e = errno;
    close(fd);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    XXH3_freeState(st);
    if (n < 0) return om_errf(om_err_from_errno(e), "reading %s: %s", path, strerror(e));
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
    return 0;
}

/* Adds every regular file under root/rel to files; symlinks are not followed. */
static int digest_tree(const char *root, const char *rel, json_t *files)
{
    char dpath[PATH_MAX];
    snprintf(dpath, sizeof dpath, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dpath);
    if (!d) return om_errf(om_err_from_errno(errno), "opening %s: %s", dpath, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char r[PATH_MAX], full[PATH_MAX * 2];
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        snprintf(full, sizeof full, "%s/%s", root, r);
        struct stat st;
        if (lstat(full, &st) != 0) {
            rc = om_errf(om_err_from_errno(errno), "lstat %s: %s", full, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = digest_tree(root, r, files);
        } else if (S_ISREG(st.st_mode)) {
            char hex[33];
            if (!(rc = digest_file(full, hex))) json_object_set_new(files, r, json_string(hex));
        }
    }
    closedir(d);
    return rc;
}

static int digest_doc(const char *root, const char *session, json_t **out)
{
    json_t *files = json_object();
    int rc = digest_tree(root, "", files);
    if (rc) {
        json_decref(files);
        return rc;
    }
    *out = json_pack("{s:s?, s:o}", "session", session, "files", files);
    return 0;
}

/* DIR.freeze.json, replaced durably (temp, fsync, rename, fsync the directory). */
static int write_freeze_doc(const char *session)
{
    json_t *doc = NULL;
    int rc = digest_doc(g.dir, session, &doc);
    if (rc) return rc;
    char path[PATH_MAX + 32], tmp[PATH_MAX + 48], parent[PATH_MAX];
    snprintf(path, sizeof path, "%s.freeze.json", g.dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(parent, sizeof parent, "%s", g.dir);
    char *slash = strrchr(parent, '/');
    if (slash) *(slash == parent ? slash + 1 : slash) = 0;
    char *s = json_dumps(doc, JSON_SORT_KEYS | JSON_INDENT(1));
    json_decref(doc);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    size_t n = s ? strlen(s) : 0;
    if (fd < 0 || !s || write(fd, s, n) != (ssize_t)n || fsync(fd) != 0)
        rc = om_errf(OM_E_DiskIO, "writing %s: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    free(s);
    if (!rc && rename(tmp, path) != 0)
        rc = om_errf(OM_E_DiskIO, "renaming %s: %s", tmp, strerror(errno));
    int dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return rc;
}

/* ---- the mutator ---- */

static int any(int hold)
{
    for (int i = 0; i < MAX_SESS; i++)
        if (g.sess[i].id[0] && (hold ? g.sess[i].hold : g.sess[i].frozen)) return 1;
    return 0;
}

static void pwrite_random(const char *rel, size_t len, off_t off, int append)
{
    char p[PATH_MAX + 64];
    path_of(p, sizeof p, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : 0), 0640);
    if (fd < 0) return;
    uint8_t buf[BLOCK];
    fill(buf, len);
    ssize_t w = append ? write(fd, buf, len) : pwrite(fd, buf, len, off);
    (void)w;
    close(fd);
}

/* One round of writes (mu held, nothing frozen). */
static void mutate_once(void)
{
    int held = any(1);
    if (!held) pwrite_random("data.edb", BLOCK, (off_t)(rnd() % (g.edb_size / BLOCK)) * BLOCK, 0);
    char p[PATH_MAX + 64];
    path_of(p, sizeof p, "logs/E00.log");
    struct stat st;
    off_t size = stat(p, &st) == 0 ? st.st_size : 0;
    if (size < (off_t)LOG_SIZE) {
        pwrite_random("logs/E00.log", APPEND, 0, 1);
    } else if (!held) { /* finish this generation */
        char fin[PATH_MAX + 64], rel[64];
        snprintf(rel, sizeof rel, "logs/E00%08X.log", g.next_gen++);
        path_of(fin, sizeof fin, rel);
        if (rename(p, fin) == 0) pwrite_random("logs/E00.log", APPEND, 0, 1);
    } else {
        pwrite_random("logs/E00.log", APPEND, (off_t)(rnd() % (LOG_SIZE / APPEND)) * APPEND, 0);
    }
    pwrite_random("logs/E00.chk", BLOCK, 0, 0);
}

static void *mutator(void *arg)
{
    (void)arg;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000000L};
    for (;;) {
        pthread_mutex_lock(&g.mu);
        int stop = g.stopping;
        if (!stop && !any(0)) mutate_once();
        pthread_mutex_unlock(&g.mu);
        if (stop) return NULL;
        nanosleep(&ts, NULL);
    }
}

/* ---- sessions (mu held) ---- */

static tsess *sess_find(const char *id, int create)
{
    tsess *free_slot = NULL;
    for (int i = 0; i < MAX_SESS; i++) {
        if (!strcmp(g.sess[i].id, id)) return &g.sess[i];
        if (!g.sess[i].id[0] && !free_slot) free_slot = &g.sess[i];
    }
    if (!create || !free_slot) return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    snprintf(free_slot->id, sizeof free_slot->id, "%s", id);
    return free_slot;
}

static void sess_end(const char *id)
{
    tsess *s = sess_find(id, 0);
    if (s) memset(s, 0, sizeof *s);
}

/* ---- handlers ---- */

/* The faults for this event: sleeps, dies, or returns the failure to report. */
static vss_failure faults(const char *event)
{
    vss_failure f = VSS_FAIL_NONE;
    for (int i = 0; i < g.nrules; i++) {
        rule *r = &g.rules[i];
        if (strcmp(r->event, event)) continue;
        if (r->kind == 's') {
            struct timespec ts = {.tv_sec = r->count / 1000,
                                  .tv_nsec = (r->count % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < g.nrules; i++)
        if (!strcmp(g.rules[i].event, event) && g.rules[i].kind == 'd') _exit(9);
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < g.nrules && !f; i++) {
        rule *r = &g.rules[i];
        if (strcmp(r->event, event) || r->kind != 'f' || r->count == 0) continue;
        if (r->count > 0) r->count--;
        f = r->failure;
    }
    pthread_mutex_unlock(&g.mu);
    return f;
}

static int identify(vss_event *e)
{
    vss_writer_info info = {
        .class_id = g.class_id, .instance_id = g.instance, .name = g.name, .can_hold = g.can_hold};
    json_t *md = vss_wmd_new(&info, NULL, NULL);
    char lp[256], p[PATH_MAX + 64], logs[PATH_MAX + 16];
    snprintf(lp, sizeof lp, "Test\\%s", g.name);
    json_t *c = vss_wmd_add_component(md, lp, g.name, g.name, 1);
    path_of(logs, sizeof logs, "logs");
    path_of(p, sizeof p, "data.edb");
    int rc = c ? vss_wmd_add_file(c, p, NULL, 0, 1) : OM_E_OutOfMemory;
    if (!rc) rc = vss_wmd_add_file(c, logs, "E00????????.log", 0, 1);
    path_of(p, sizeof p, "logs/E00.log");
    if (!rc) rc = vss_wmd_add_file(c, p, NULL, 0, 0);
    path_of(p, sizeof p, "logs/E00.chk");
    if (!rc) rc = vss_wmd_add_file(c, p, NULL, 0, 0);
    if (!rc) rc = vss_wmd_add_path(c, g.dir);
    if (rc) {
        json_decref(md);
        return rc;
    }
    json_object_set_new(e->result, "metadata", md);
    return 0;
}

static int freeze(vss_event *e)
{
    pthread_mutex_lock(&g.mu); /* waits for the tick in progress */
    tsess *s = sess_find(e->session, 1);
    if (s) {
        s->frozen = 1;
        s->hold = s->hold || json_is_true(json_object_get(e->args, "hold"));
    }
    pthread_mutex_unlock(&g.mu);
    if (!s) return vss_fail(e, VSS_FAIL_OUT_OF_RESOURCES, "too many sessions at once");
    int rc = g.no_digest ? 0 : write_freeze_doc(e->session);
    if (rc) return vss_fail(e, VSS_FAIL_NON_RETRYABLE, "%s", om_err_detail());
    return 0;
}

static int thaw(vss_event *e)
{
    pthread_mutex_lock(&g.mu);
    tsess *s = sess_find(e->session, 0);
    if (s) s->frozen = 0;
    pthread_mutex_unlock(&g.mu);
    return 0;
}

static int end_session(vss_event *e)
{
    pthread_mutex_lock(&g.mu);
    sess_end(e->session);
    pthread_mutex_unlock(&g.mu);
    return 0;
}

/* DIR.<Event>.json: what a restore event brought (the test checks the backup metadata and the
 * restore options reached the writer). */
static int keep_args(vss_event *e)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s.%s.json", g.dir, e->name);
    char *s = json_dumps(e->args, JSON_SORT_KEYS | JSON_INDENT(1));
    int rc = s ? om_write_file_durable(om_vfs_posix(), path, s, strlen(s))
               : om_errf(OM_E_OutOfMemory, "out of memory");
    free(s);
    return rc ? vss_fail(e, VSS_FAIL_NON_RETRYABLE, "%s", om_err_detail()) : 0;
}

/* Backup metadata for each component the event names, under the name the coordinator used. */
static int post_snapshot(vss_event *e)
{
    pthread_mutex_lock(&g.mu);
    unsigned gen = g.next_gen;
    pthread_mutex_unlock(&g.mu);
    json_t *comps = json_object(), *c;
    size_t i;
    json_array_foreach(json_object_get(e->args, "components"), i, c)
    {
        if (json_is_string(c))
            json_object_set_new(comps, json_string_value(c),
                                json_pack("{s:s, s:i}", "writer", "vss_test_writer",
                                          "current_generation", (int)gen));
    }
    json_object_set_new(e->result, "components", comps);
    return 0;
}

static int handle(void *ctx, vss_event *e)
{
    (void)ctx;
    int sdk_auto = json_is_true(json_object_get(e->args, "auto"));
    int sdk_lost = json_is_true(json_object_get(e->args, "disconnected"));
    vss_failure f = sdk_auto || sdk_lost ? VSS_FAIL_NONE : faults(e->name);
    int rc = 0;
    if (f)
        rc = vss_fail(e, f, "vss_test_writer: --fail %s", e->name);
    else if (!strcmp(e->name, "Identify"))
        rc = identify(e);
    else if (!strcmp(e->name, "Freeze"))
        rc = freeze(e);
    else if (!strcmp(e->name, "Thaw"))
        rc = thaw(e);
    else if (!strcmp(e->name, "Abort") || !strcmp(e->name, "BackupShutdown"))
        rc = end_session(e);
    else if (!strcmp(e->name, "PostSnapshot"))
        rc = post_snapshot(e);
    else if (!strcmp(e->name, "PreRestore") || !strcmp(e->name, "PostRestore"))
        rc = keep_args(e);
    const char *res = rc || e->failure ? "failed " : "ok";
    const char *kind =
        rc || e->failure ? vss_failure_name(e->failure ? e->failure : VSS_FAIL_NON_RETRYABLE) : "";
    if (sdk_auto)
        say("autothaw session %s -> %s%s", e->session, res, kind);
    else if (sdk_lost)
        say("lostabort session %s -> %s%s", e->session, res, kind);
    else
        say("event %s session %s -> %s%s", e->name, e->session, res, kind);
    return rc;
}

static void on_registered(void *ctx)
{
    (void)ctx;
    say("registered %s", g.instance);
}

static void on_disconnected(void *ctx, const char *why)
{
    (void)ctx;
    say("disconnected %s", why);
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: vss_test_writer --dir DIR --name NAME [--instance UUID] [--class UUID] "
            "[--can-hold] [--socket PATH] [--fail EVENT:KIND[:COUNT]]... [--sleep EVENT:MS]... "
            "[--die EVENT]... [--mutate] [--edb-mb N] [--no-digest]\n"
            "       vss_test_writer digest DIR\n");
    exit(2);
}

static void add_rule(int kind, const char *arg)
{
    if (g.nrules >= MAX_RULES) usage();
    rule *r = &g.rules[g.nrules++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", arg);
    char *a = strchr(buf, ':');
    if (a) *a++ = 0;
    if (strlen(buf) >= sizeof r->event) usage();
    memcpy(r->event, buf, strlen(buf) + 1);
    if (kind == 'd') return;
    if (!a) usage();
    if (kind == 's') {
        r->count = atol(a);
        return;
    }
    char *cnt = strchr(a, ':');
    if (cnt) *cnt++ = 0;
    if (vss_failure_parse(a, &r->failure)) {
        fprintf(stderr, "vss_test_writer: %s\n", om_err_detail());
        exit(2);
    }
    r->count = cnt ? atol(cnt) : -1;
}

static int digest_main(const char *dir)
{
    json_t *doc = NULL;
    int rc = digest_doc(dir, NULL, &doc);
    if (rc) die_setup(rc, "digest");
    char *s = json_dumps(doc, JSON_SORT_KEYS | JSON_INDENT(1));
    puts(s);
    free(s);
    json_decref(doc);
    return 0;
}

int main(int argc, char **argv)
{
    om_log_init("vss_test_writer");
    if (argc == 3 && !strcmp(argv[1], "digest")) return digest_main(argv[2]);
    static const struct option opts[] = {{"dir", required_argument, 0, 'D'},
                                         {"name", required_argument, 0, 'n'},
                                         {"instance", required_argument, 0, 'i'},
                                         {"class", required_argument, 0, 'c'},
                                         {"can-hold", no_argument, 0, 'h'},
                                         {"socket", required_argument, 0, 'S'},
                                         {"fail", required_argument, 0, 'f'},
                                         {"sleep", required_argument, 0, 's'},
                                         {"die", required_argument, 0, 'd'},
                                         {"mutate", no_argument, 0, 'm'},
                                         {"edb-mb", required_argument, 0, 'E'},
                                         {"no-digest", no_argument, 0, 'N'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL, *socket_path = NULL;
    int mutate = 0, c;
    snprintf(g.class_id, sizeof g.class_id, "%s", DEFAULT_CLASS);
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'D':
            dir = optarg;
            break;
        case 'E': {
            long mb = atol(optarg);
            if (mb < 1 || mb > 65536) usage();
            g.edb_size = (size_t)mb << 20;
            break;
        }
        case 'N':
            g.no_digest = 1;
            break;
        case 'n':
            snprintf(g.name, sizeof g.name, "%s", optarg);
            break;
        case 'i':
            snprintf(g.instance, sizeof g.instance, "%s", optarg);
            break;
        case 'c':
            snprintf(g.class_id, sizeof g.class_id, "%s", optarg);
            break;
        case 'h':
            g.can_hold = 1;
            break;
        case 'S':
            socket_path = optarg;
            break;
        case 'f':
        case 's':
        case 'd':
            add_rule(c, optarg);
            break;
        case 'm':
            mutate = 1;
            break;
        default:
            usage();
        }
    }
    if (!dir || !g.name[0] || optind != argc) usage();
    if (!g.instance[0]) {
        om_uuid u;
        om_uuid_new(&u);
        om_uuid_str(&u, g.instance);
    }
    om_random(&g.rng, sizeof g.rng);
    g.rng |= 1;
    int rc = om_mkdirs(dir);
    if (rc) die_setup(rc, "creating the directory");
    if (!realpath(dir, g.dir)) die_setup(OM_E_InvalidPath, "resolving --dir");
    setup_files();

    /* Only this thread takes SIGTERM/SIGINT: every thread started below inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    pthread_t mt;
    if (mutate && pthread_create(&mt, NULL, mutator, NULL) != 0)
        die_setup(OM_E_OutOfMemory, "starting the mutator");
    vss_writer_ops ops = {.identify = handle,
                          .prepare_backup = handle,
                          .prepare_snapshot = handle,
                          .freeze = handle,
                          .thaw = handle,
                          .post_snapshot = handle,
                          .backup_complete = handle,
                          .abort = handle,
                          .backup_shutdown = handle,
                          .pre_restore = handle,
                          .post_restore = handle,
                          .registered = on_registered,
                          .disconnected = on_disconnected};
    vss_writer_info info = {.class_id = g.class_id,
                            .instance_id = g.instance,
                            .name = g.name,
                            .can_hold = g.can_hold,
                            .socket_path = socket_path};
    vss_writer *w = NULL;
    if ((rc = vss_writer_start(&info, &ops, NULL, &w))) die_setup(rc, "starting the writer");

    int sig = 0;
    sigwait(&sigs, &sig);
    vss_writer_stop(w);
    pthread_mutex_lock(&g.mu);
    g.stopping = 1;
    pthread_mutex_unlock(&g.mu);
    if (mutate) pthread_join(mt, NULL);
    say("stopped");
    return 0;
}

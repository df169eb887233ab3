/* The store service's figures (issue 4), in one run:
 *  1. durable deliveries/s of 8 KiB messages into 1,000 mailboxes with 4 concurrent writers,
 *     through the daemon (4 clients, each on its own connection) and through the engine
 *     directly (4 threads calling store_mail_deliver): the protocol's overhead as a ratio;
 *  2. time to mount a database after a crash (kill -9 of the daemon) with about 200 MB of log
 *     to replay (the daemon runs with --checkpoint-depth 400 so no checkpoint comes first).
 * usage: bench_store --store PATH/ombra-store [--dir D] [--messages N] [--replay-mb M] [--json F]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "store/mail.h"

#define BODY      8192
#define MAILBOXES 1000

static const char *store_bin;
static char dir[2048], sock[4200];
static long messages = 8000, replay_mb = 200;

static void die(const char *what)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, om_err_detail()[0] ? om_err_detail() : "failed");
    exit(1);
}

static pid_t start_store(const char *extra)
{
    pid_t pid = fork();
    if (pid == 0) {
        char log[4200];
        snprintf(log, sizeof log, "%s/store.log", dir);
        if (!freopen(log, "a", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
        if (extra)
            execl(store_bin, store_bin, "--foreground", "--server", "bench", "--checkpoint-depth",
                  extra, "--cache-mb", "2048", (char *)NULL);
        else
            execl(store_bin, store_bin, "--foreground", "--server", "bench", (char *)NULL);
        _exit(127);
    }
    /* Ready when it answers (it mounts its databases before it serves). */
    for (int i = 0; i < 6000; i++) {
        json_t *req = json_pack("{s:s}", "op", "status"), *rep = NULL;
        int rc = om_proto_call(sock, req, NULL, 0, &rep, NULL, NULL);
        json_decref(req);
        json_decref(rep);
        if (rc == 0) return pid;
        usleep(10000);
    }
    die("the store did not start");
    return -1;
}

static void stop_store(pid_t pid, int sig)
{
    kill(pid, sig);
    int st;
    waitpid(pid, &st, 0);
}

static void call(json_t *req, const void *data, size_t n, json_t **rep)
{
    json_t *r = NULL;
    if (om_proto_call(sock, req, data, n, &r, NULL, NULL))
        die(json_string_value(json_object_get(req, "op")));
    json_decref(req);
    if (rep)
        *rep = r;
    else
        json_decref(r);
}

typedef struct wargs {
    int idx, nthreads;
    mail_store *ms; /* direct, or NULL: through the daemon */
    const char *db;
} wargs;

static void *writer(void *a)
{
    wargs *w = a;
    static _Thread_local uint8_t body[BODY];
    mail_load_buf b;
    mail_new m;
    int fd = -1;
    if (!w->ms && om_proto_connect(sock, &fd)) die("connect");
    for (long i = w->idx; i < messages; i += w->nthreads) {
        store_mail_load_message(7, MAILBOXES, BODY, (uint64_t)i, &b, body, &m);
        if (w->ms) {
            uint64_t id;
            if (store_mail_deliver(w->ms, &m, 0, &id)) die("deliver");
            continue;
        }
        json_t *req = json_pack("{s:s, s:s, s:s, s:s}", "op", "mail.deliver", "db", w->db,
                                "mailbox", m.mailbox, "subject", m.subject);
        json_t *rep = NULL;
        if (om_proto_send(fd, req, body, BODY) || om_proto_recv(fd, &rep, NULL, NULL) ||
            om_proto_check(rep))
            die("deliver through the store");
        json_decref(req);
        json_decref(rep);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static double run_writers(mail_store *ms, const char *db)
{
    pthread_t th[4];
    wargs w[4];
    uint64_t t0 = om_mono_ns();
    for (int i = 0; i < 4; i++) {
        w[i] = (wargs){i, 4, ms, db};
        pthread_create(&th[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    return (double)messages / ((double)(om_mono_ns() - t0) / 1e9);
}

int main(int argc, char **argv)
{
    const char *json_path = NULL, *parent = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--store") && i + 1 < argc)
            store_bin = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            parent = argv[++i];
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            messages = atol(argv[++i]);
        else if (!strcmp(argv[i], "--replay-mb") && i + 1 < argc)
            replay_mb = atol(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json_path = argv[++i];
        else {
            fprintf(stderr, "usage: bench_store --store PATH [--dir D] [--messages N] [--replay-mb "
                            "M] [--json F]\n");
            return 2;
        }
    }
    if (!store_bin || messages <= 0 || replay_mb <= 0) {
        fprintf(stderr, "bench_store: --store PATH/ombra-store is required\n");
        return 2;
    }
    snprintf(dir, sizeof dir, "%s/store-run-%d", parent, (int)getpid());
    if (om_mkdirs(dir)) die("scratch");
    char run[2100], home[2100];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(home, sizeof home, "%s/home", dir);
    setenv("OMBRA_RUNTIME_DIR", run, 1);
    setenv("OMBRA_HOME", home, 1);
    snprintf(sock, sizeof sock, "%s/store.sock", run);

    /* 1a. Through the engine directly. */
    char edb[4200], logs[4200];
    snprintf(edb, sizeof edb, "%s/direct/direct.edb", dir);
    snprintf(logs, sizeof logs, "%s/direct/logs", dir);
    eng_opts o = {.edb_path = edb, .log_dir = logs};
    eng_db *db;
    mail_store *ms;
    if (om_mkdirs(logs) || eng_db_create(&o, &db) || store_mail_open(db, &ms))
        die("direct database");
    printf("%ld durable deliveries of %d bytes, 4 writers, directly...\n", messages, BODY);
    fflush(stdout);
    double direct = run_writers(ms, NULL);
    store_mail_close(ms);
    eng_db_close(db);

    /* 1b. Through the daemon. */
    printf("the same through ombra-store, 4 clients...\n");
    fflush(stdout);
    pid_t pid = start_store(NULL);
    call(json_pack("{s:s, s:s}", "op", "db.new", "name", "bench"), NULL, 0, NULL);
    double daemon = run_writers(NULL, "bench");
    stop_store(pid, SIGTERM);

    /* 2. Mount after a crash with replay_mb of log. */
    printf("loading ~%ld MB of mail with checkpoints held off, then kill -9...\n", replay_mb);
    fflush(stdout);
    pid = start_store("400");
    call(json_pack("{s:s, s:s}", "op", "db.new", "name", "crash"), NULL, 0, NULL);
    long n = replay_mb * 1000000L / BODY;
    call(json_pack("{s:s, s:s, s:i, s:I, s:i}", "op", "mail.load", "db", "crash", "mailboxes",
                   MAILBOXES, "messages", (json_int_t)n, "size", BODY),
         NULL, 0, NULL);
    json_t *show = NULL;
    call(json_pack("{s:s, s:s}", "op", "db.show", "name", "crash"), NULL, 0, &show);
    json_t *dbo = json_object_get(show, "db");
    long gens =
        (long)(om_json_int_or(dbo, "gen_current", 0) - om_json_int_or(dbo, "checkpoint_gen", 0));
    json_decref(show);
    stop_store(pid, SIGKILL);
    printf("restarting the store: it mounts the database, replaying %ld generations (%ld MiB) of "
           "log...\n",
           gens, gens);
    fflush(stdout);
    uint64_t t0 = om_mono_ns();
    pid = start_store("400");
    double mount_s = (double)(om_mono_ns() - t0) / 1e9;
    call(json_pack("{s:s, s:s}", "op", "db.show", "name", "crash"), NULL, 0, &show);
    const char *state = om_json_str_or(json_object_get(show, "db"), "state", "?");
    int mounted = json_is_true(json_object_get(json_object_get(show, "db"), "mounted"));
    printf("  mounted: %s, state %s\n", mounted ? "yes" : "NO", state);
    json_decref(show);
    stop_store(pid, SIGTERM);

    printf("\nmetric                                          |      value\n");
    printf("------------------------------------------------+-----------\n");
    printf("durable deliveries/s, 4 writers, engine directly|  %9.0f\n", direct);
    printf("durable deliveries/s, 4 clients, via ombra-store|  %9.0f\n", daemon);
    printf("daemon / direct                                 |  %9.2f\n", daemon / direct);
    printf("mount after kill -9 with %4ld MiB of log (s)     |  %9.2f\n", gens, mount_s);
    printf("replay rate at that mount (MiB/s)               |  %9.0f\n",
           mount_s > 0 ? gens / mount_s : 0);
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (f) {
            fprintf(f,
                    "{\"messages\": %ld, \"body\": %d, \"direct_per_s\": %.1f, \"daemon_per_s\": "
                    "%.1f, \"ratio\": %.3f,\n"
                    " \"replay_mib\": %ld, \"mount_seconds\": %.3f}\n",
                    messages, BODY, direct, daemon, daemon / direct, gens, mount_s);
            fclose(f);
        }
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_store: could not remove %s\n", dir);
    return mounted ? 0 : 1;
}

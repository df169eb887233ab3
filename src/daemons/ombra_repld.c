/* ombra-repld [--foreground] --server NAME --listen ADDR:PORT --etcd URL [--dag NAME]
 * [--group GROUP] [--lease-seconds N] [--truncation-hold-limit SECONDS] [limits] [logging]: the
 * replication service of one server of a DAG (repl/repld.h; base/server.h's options). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/server.h"
#include "repl/repld.h"

static void usage(FILE *f)
{
    fputs("usage: ombra-repld [--foreground] [--config FILE] --server NAME --listen ADDR:PORT "
          "--etcd URL\n"
          "                   [--dag NAME] [--group GROUP] [--lease-seconds N]\n"
          "                   [--truncation-hold-limit SECONDS] [--backup-replay-queue N]\n"
          "                   [--log-target T] [--log-file PATH] [--log-level L] [--version]\n"
          "  The replication service of one server of a DAG: copies the closed log generations\n"
          "  of this server's passive copies from their active server and replays them, serves\n"
          "  its active copies to the other servers, keeps the server's lease in etcd. Reads\n"
          "  the DAG's certificates from $OMBRA_HOME/dag/ (ombra dag add-server); admin socket\n"
          "  repl.sock in the runtime directory ($OMBRA_RUNTIME_DIR). Without --foreground it\n"
          "  detaches and logs to $OMBRA_HOME/ombra-repld.log.\n"
          "  --config FILE          the configuration file (default $OMBRA_CONFIG, else\n"
          "                         /etc/ombra/ombra.conf): [ombra] server, etcd, group,\n"
          "                         [repl] listen, dag stand for the options not given\n"
          "  --server NAME          this server's name (as its certificate says)\n"
          "  --listen ADDR:PORT     the replication port (TLS 1.3, DAG certificates only)\n"
          "  --etcd URL[,URL...]    the DAG's etcd (default $OMBRA_ETCD)\n"
          "  --dag NAME             the DAG, when that etcd holds several\n"
          "  --group GROUP          the group allowed to use the admin socket\n"
          "  --lease-seconds N      the server's lease in etcd (default 5)\n"
          "  --truncation-hold-limit SECONDS\n"
          "                         how long a suspended, disconnected or down passive copy may\n"
          "                         hold this server's logs back from truncation before it is\n"
          "                         marked Failed, to be reseeded (default 86400:\n"
          "                         one day)\n"
          "  --backup-replay-queue N\n"
          "                         the most generations a passive copy may have copied but not\n"
          "                         replayed when a backup of it is prepared (default "
          "12)\n" OM_SERVER_LIMITS_USAGE OM_DAEMON_LOG_USAGE,
          f);
}

/* The value of option opt as a decimal number in [lo, hi]; else one line saying what it takes
 * (what) and -1. */
static int number(const char *opt, const char *text, long lo, long hi, const char *what, long *n)
{
    char *end;
    *n = strtol(text, &end, 10);
    if (!*text || *end || *n < lo || *n > hi) {
        fprintf(stderr, "ombra-repld: %s takes %s, not '%s'\n", opt, what, text);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    om_log_init("ombra-repld");
    om_log_opts log = {.level = -1};
    int fg = 0;
    long n;
    rp_repld_opts o = {.etcd = getenv("OMBRA_ETCD"), .limits = {.max_data = 1u << 20}};
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        int lo = om_server_limit_option("ombra-repld", argc, argv, &i, &o.limits);
        if (!lo) lo = om_daemon_log_option("ombra-repld", argc, argv, &i, &log);
        if (lo < 0) return 2;
        if (lo) continue;
        if (!strcmp(argv[i], "--version")) {
            printf("ombra-repld %s\n", OMBRA_VERSION);
            return 0;
        }
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--foreground"))
            fg = 1;
        else if (!strcmp(a, "--config") && v)
            config = argv[++i];
        else if (!strcmp(a, "--server") && v)
            o.server = argv[++i];
        else if (!strcmp(a, "--listen") && v)
            o.listen = argv[++i];
        else if (!strcmp(a, "--etcd") && v)
            o.etcd = argv[++i];
        else if (!strcmp(a, "--dag") && v)
            o.dag = argv[++i];
        else if (!strcmp(a, "--group") && v)
            o.group = argv[++i];
        else if (!strcmp(a, "--lease-seconds") && v) {
            if (number(a, argv[++i], 1, 3600, "1-3600", &n)) return 2;
            o.lease_s = (int)n;
        } else if (!strcmp(a, "--truncation-hold-limit") && v) {
            if (number(a, argv[++i], 1, 10L * 366 * 86400, "1 s to 10 years in seconds", &n))
                return 2;
            o.hold_limit_s = (unsigned)n;
        } else if (!strcmp(a, "--backup-replay-queue") && v) {
            if (number(a, argv[++i], 0, 1000000, "a number of generations (0-1000000)", &n))
                return 2;
            o.backup_replay_queue = (unsigned)n;
            o.backup_replay_queue_set = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ombra-repld: unknown argument '%s'. See 'ombra-repld --help'.\n", a);
            return 2;
        }
    }
    /* The file's settings below the command line's and the environment's (base/config.h). */
    if (om_daemon_config("ombra-repld", config, &log)) return 1;
    if (!o.server) o.server = om_conf("ombra", "server");
    if (!o.listen) o.listen = om_conf("repl", "listen");
    if (!o.etcd || !*o.etcd) o.etcd = om_conf("ombra", "etcd");
    if (!o.dag) o.dag = om_conf("repl", "dag");
    if (!o.group) o.group = om_conf("ombra", "group");
    const char *missing = !o.server             ? "--server NAME"
                          : !o.listen           ? "--listen ADDR:PORT"
                          : !o.etcd || !*o.etcd ? "--etcd URL"
                                                : NULL;
    if (missing) {
        fprintf(stderr, "ombra-repld: %s is required. See 'ombra-repld --help'.\n", missing);
        return 2;
    }
    char arun[4096], adata[4096];
    int rc = om_daemon_start("ombra-repld", o.group, fg, &log, arun, adata, sizeof arun);
    if (rc) return rc;
    o.runtime_dir = arun;
    o.data_dir = adata;
    rc = rp_repld_run(&o);
    if (rc) {
        om_error("%s", om_err_detail());
        if (fg) fprintf(stderr, "ombra-repld: %s (%d %s)\n", om_err_detail(), rc, om_err_name(rc));
        return 1;
    }
    return 0;
}

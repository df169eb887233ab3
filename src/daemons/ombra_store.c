/* ombra-store [--foreground] [--server NAME] [--group GROUP] [limits] [logging]: the store
 * daemon (service.h; the connection limits and the logging options of base/server.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/server.h"
#include "store/service.h"

static void usage(FILE *f)
{
    fputs(
        "usage: ombra-store [--foreground] [--config FILE] [--server NAME] [--etcd URL[,URL...]]\n"
        "                   [--group GROUP] [--checkpoint-depth N] [--cache-mb M]\n"
        "                   [--log-target T] [--log-file PATH] [--log-level L] [--version]\n"
        "  Hosts the databases of this server and serves store.sock in the runtime directory\n"
        "  ($OMBRA_RUNTIME_DIR); data in $OMBRA_HOME. Without --foreground it detaches and\n"
        "  logs to $OMBRA_HOME/ombra-store.log.\n"
        "  --config FILE          the configuration file (default $OMBRA_CONFIG, else\n"
        "                         /etc/ombra/ombra.conf): [ombra] server, etcd, group, data-dir,\n"
        "                         runtime-dir; the command line and the environment win\n"
        "  --server NAME          this server's name in the directory (default: the one\n"
        "                         directory.json names once the server joined a DAG, else the\n"
        "                         host name)\n"
        "  --etcd URL[,URL...]    once the server joined a DAG: the DAG's etcd, in place of the\n"
        "                         endpoints directory.json recorded at the join (default\n"
        "                         $OMBRA_ETCD, else those)\n"
        "  --group GROUP          the group allowed to use the socket (default: the daemon's "
        "group);\n"
        "                         its members act as the daemon's user: a store run as root\n"
        "                         creates databases and restores where they say\n"
        "  --checkpoint-depth N   log generations (1 MiB each) between checkpoints (default 32):\n"
        "                         deeper means fewer page writes, longer replay after a crash\n"
        "  --cache-mb M           dirty pages kept per database before a checkpoint (default "
        "256)\n" OM_SERVER_LIMITS_USAGE OM_DAEMON_LOG_USAGE,
        f);
}

int main(int argc, char **argv)
{
    om_log_init("ombra-store");
    om_log_opts log = {.level = -1};
    int fg = 0;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    store_opts o = {.server = host, .etcd = getenv("OMBRA_ETCD")};
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        int lo = om_server_limit_option("ombra-store", argc, argv, &i, &o.limits);
        if (!lo) lo = om_daemon_log_option("ombra-store", argc, argv, &i, &log);
        if (lo < 0) return 2;
        if (lo) continue;
        if (!strcmp(argv[i], "--version")) {
            printf("ombra-store %s\n", OMBRA_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--foreground"))
            fg = 1;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--server") && i + 1 < argc) {
            o.server = argv[++i];
            o.server_given = 1;
        } else if (!strcmp(argv[i], "--etcd") && i + 1 < argc)
            o.etcd = argv[++i];
        else if (!strcmp(argv[i], "--group") && i + 1 < argc)
            o.group = argv[++i];
        else if (!strcmp(argv[i], "--cache-mb") && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1000000) {
                fprintf(stderr, "ombra-store: --cache-mb takes a size in MiB (1-1000000)\n");
                return 2;
            }
            o.cache_mb = (unsigned)v;
        } else if (!strcmp(argv[i], "--checkpoint-depth") && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v == 0 || v > 100000) {
                fprintf(stderr, "ombra-store: --checkpoint-depth takes a number of log generations "
                                "(1-100000)\n");
                return 2;
            }
            o.checkpoint_gens = (unsigned)v;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ombra-store: unknown argument '%s'. See 'ombra-store --help'.\n",
                    argv[i]);
            return 2;
        }
    }
    /* The file's settings below the command line's and the environment's (base/config.h). */
    if (om_daemon_config("ombra-store", config, &log)) return 1;
    if (!o.server_given && om_conf("ombra", "server")) {
        o.server = om_conf("ombra", "server");
        o.server_given = 1;
    }
    if (!o.etcd || !*o.etcd) o.etcd = om_conf("ombra", "etcd");
    if (!o.group) o.group = om_conf("ombra", "group");
    /* Absolute paths: database paths derive from the data directory and are stored in the
     * directory, and the daemon changes its working directory when it detaches. */
    char arun[4096], adata[4096];
    int rc = om_daemon_start("ombra-store", o.group, fg, &log, arun, adata, sizeof arun);
    if (rc) return rc;
    o.runtime_dir = arun;
    o.data_dir = adata;
    rc = store_run(&o);
    if (rc) {
        char b[2048];
        om_error("%s", om_err_format(rc, b, sizeof b));
        return 1;
    }
    return 0;
}

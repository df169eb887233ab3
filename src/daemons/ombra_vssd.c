/* ombra-vssd [--foreground] [--group GROUP] [--freeze-limit-ms N] [--commit-limit-ms N]
 * [--event-limit-ms N] [--restore-limit-ms N] [--shadow-dir DIR] [connection limits] [logging]:
 * the shadow copy coordinator (vss/coordinator.h; the connection limits and the logging options
 * of base/server.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/server.h"
#include "vss/coordinator.h"

static void usage(FILE *f)
{
    fputs("usage: ombra-vssd [--foreground] [--config FILE] [--group GROUP] [--freeze-limit-ms N]\n"
          "                  [--commit-limit-ms N] [--event-limit-ms N] [--restore-limit-ms N]\n"
          "                  [--shadow-dir DIR] [--log-target T] [--log-file PATH]\n"
          "                  [--log-level L] [--version]\n"
          "  Coordinates writers, requesters and shadow copy providers on vss.sock in the\n"
          "  runtime directory ($OMBRA_RUNTIME_DIR); catalog in $OMBRA_HOME/vss. Without\n"
          "  --foreground it detaches and logs to $OMBRA_HOME/ombra-vssd.log.\n"
          "  --config FILE          the configuration file (default $OMBRA_CONFIG, else\n"
          "                         /etc/ombra/ombra.conf): [ombra] group, data-dir, runtime-dir\n"
          "  --group GROUP          the group allowed to use the socket (default: the daemon's)\n"
          "  --freeze-limit-ms N    longest Freeze to Thaw (default 60000)\n"
          "  --commit-limit-ms N    longest provider commit (default 10000)\n"
          "  --event-limit-ms N     longest a writer may take to answer an event (default 60000)\n"
          "  --restore-limit-ms N   longest a writer may take to answer PostRestore, which\n"
          "                         replays the restored logs (default 86400000, a day)\n"
          "  --shadow-dir DIR       where shadow copies go (default "
          "$OMBRA_HOME/shadows)\n" OM_SERVER_LIMITS_USAGE
          "  (writers and open sessions may stay silent past "
          "--idle-timeout-ms)\n" OM_DAEMON_LOG_USAGE,
          f);
}

static int limit(const char *arg, const char *name, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);
    if (*end || v < 1 || v > 604800000) {
        fprintf(stderr, "ombra-vssd: %s takes milliseconds (1-604800000), not '%s'\n", name, arg);
        return 2;
    }
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    om_log_init("ombra-vssd");
    om_log_opts log = {.level = -1};
    int fg = 0, rc = 0;
    /* Nothing sent to the coordinator carries data: one MiB is plenty. */
    vss_coord_opts o = {.fail_provider_step = getenv("OMBRA_VSSD_TEST_FAIL_PROVIDER"),
                        .limits = {.max_data = 1u << 20}};
    const char *config = NULL;
    for (int i = 1; i < argc && !rc; i++) {
        int lo = om_server_limit_option("ombra-vssd", argc, argv, &i, &o.limits);
        if (!lo) lo = om_daemon_log_option("ombra-vssd", argc, argv, &i, &log);
        if (lo < 0) return 2;
        if (lo) continue;
        if (!strcmp(argv[i], "--version")) {
            printf("ombra-vssd %s\n", OMBRA_VERSION);
            return 0;
        }
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--foreground"))
            fg = 1;
        else if (!strcmp(a, "--config") && v)
            config = argv[++i];
        else if (!strcmp(a, "--group") && v)
            o.group = argv[++i];
        else if (!strcmp(a, "--shadow-dir") && v)
            o.shadow_dir = argv[++i];
        else if (!strcmp(a, "--freeze-limit-ms") && v)
            rc = limit(argv[++i], a, &o.freeze_limit_ms);
        else if (!strcmp(a, "--commit-limit-ms") && v)
            rc = limit(argv[++i], a, &o.commit_limit_ms);
        else if (!strcmp(a, "--event-limit-ms") && v)
            rc = limit(argv[++i], a, &o.event_limit_ms);
        else if (!strcmp(a, "--restore-limit-ms") && v)
            rc = limit(argv[++i], a, &o.restore_limit_ms);
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ombra-vssd: unknown argument '%s'. See 'ombra-vssd --help'.\n", a);
            return 2;
        }
    }
    if (rc) return rc;
    /* The file's settings below the command line's and the environment's (base/config.h). */
    if (om_daemon_config("ombra-vssd", config, &log)) return 1;
    if (!o.group) o.group = om_conf("ombra", "group");
    char arun[4096], adata[4096], ashadow[4096];
    if (o.shadow_dir && o.shadow_dir[0] != '/') { /* before detaching changes the directory */
        if (!getcwd(ashadow, sizeof ashadow - 1024)) ashadow[0] = 0;
        strncat(ashadow, "/", sizeof ashadow - strlen(ashadow) - 1);
        strncat(ashadow, o.shadow_dir, sizeof ashadow - strlen(ashadow) - 1);
        o.shadow_dir = ashadow;
    }
    if ((rc = om_daemon_start("ombra-vssd", o.group, fg, &log, arun, adata, sizeof arun)))
        return rc;
    o.runtime_dir = arun;
    o.data_dir = adata;
    rc = vss_coord_run(&o);
    if (rc) {
        om_error("%s", om_err_detail());
        if (fg) fprintf(stderr, "ombra-vssd: %s (%d %s)\n", om_err_detail(), rc, om_err_name(rc));
        return 1;
    }
    return 0;
}

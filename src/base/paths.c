#include "base/paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/vfs.h"

static int put(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s%s", a, b);
    if (n < 0 || (size_t)n >= len) return om_errf(OM_E_InvalidPath, "path too long: %s%s", a, b);
    return 0;
}

int om_runtime_dir(char *out, size_t len)
{
    const char *e = getenv("OMBRA_RUNTIME_DIR");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/run/ombra", "");
    e = getenv("XDG_RUNTIME_DIR");
    if (e && *e) return put(out, len, e, "/ombra");
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/ombra-%u", (unsigned)geteuid());
    return put(out, len, tmp, "");
}

int om_data_dir(char *out, size_t len)
{
    const char *e = getenv("OMBRA_HOME");
    if (e && *e) return put(out, len, e, "");
    if (geteuid() == 0) return put(out, len, "/var/lib/ombra", "");
    e = getenv("HOME");
    if (!e || !*e) return om_errf(OM_E_InvalidPath, "no data directory: set OMBRA_HOME or HOME");
    return put(out, len, e, "/.local/share/ombra");
}

int om_mkdirs(const char *dir)
{
    om_dir *d = NULL;
    int rc = om_dir_open(om_vfs_posix(), NULL, dir, OM_D_CREATE | OM_D_FOLLOW, &d);
    om_dir_close(d);
    return rc;
}

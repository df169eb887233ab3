/* Names of a set's files (setfiles.h has the rules). */
#include "backup/setfiles.h"

#include <string.h>

#include "base/error.h"

static int alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int bk_base_ok(const char *base)
{
    return base && strlen(base) == 3 && alnum(base[0]) && alnum(base[1]) && alnum(base[2]);
}

/* One path component of a database file name: "<file>.edb". */
static int edb_name_ok(const char *n)
{
    size_t l = strlen(n);
    if (l < 5 || l > 200 || n[0] == '.' || strcmp(n + l - 4, ".edb")) return 0;
    for (size_t i = 0; i < l; i++)
        if (!alnum(n[i]) && n[i] != '-' && n[i] != '_' && n[i] != '.') return 0;
    return 1;
}

/* "<base>XXXXXXXX.log": the generation, 0 when it is not such a name. */
static uint32_t log_gen(const char *n, const char *base)
{
    if (strlen(n) != 15 || strncmp(n, base, 3) || strcmp(n + 11, ".log")) return 0;
    uint32_t g = 0;
    for (int i = 3; i < 11; i++) {
        char c = n[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        g = g << 4 | (uint32_t)d;
    }
    return g;
}

int bk_set_file_kind(const char *name, const char *base, uint32_t *gen)
{
    *gen = 0;
    if (!name) name = "";
    if (bk_base_ok(base)) {
        if (!strncmp(name, "edb/", 4) && edb_name_ok(name + 4)) return BK_FILE_EDB;
        if (!strncmp(name, "logs/", 5)) {
            const char *n = name + 5;
            if ((*gen = log_gen(n, base))) return BK_FILE_LOG;
            if (strlen(n) == 7 && !strncmp(n, base, 3) && !strcmp(n + 3, ".chk"))
                return BK_FILE_CHK;
        }
    }
    om_errf(OM_E_InvalidName,
            "'%.300s' is not a name a backup set holds (edb/NAME.edb, logs/%sXXXXXXXX.log, "
            "logs/%s.chk)",
            name, bk_base_ok(base) ? base : "BASE", bk_base_ok(base) ? base : "BASE");
    return 0;
}

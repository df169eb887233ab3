/* The sets' summaries kept in the data directory (repo_internal.h; docs/design.md, "The sets'
 * summaries"). A set file's name is the id of its content (its SHA-256, or the MAC under the
 * repository's key), so the summary of a set that read and checked well once is what the same
 * name gives forever: it is kept here, and bk_sets reads only the sets it has not seen.
 *
 *   <data>/cache/sets-<repository id>.json:
 *     "ombra-set-summaries <SUM_FORMAT> <XXH3-64 of the rest, 16 hex>\n" then {"<set id>": summary}
 *
 * It is only ever a shortcut: a file that is missing, torn, of another format, or not a regular
 * file (a link is not followed) is as none, and the next bk_sets writes it again; a failure to
 * write it changes no result. A restore checks every set it loads against the summary it chose
 * the set by (restore.c, load_chain). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backup/repo_internal.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/paths.h"
#include "base/vfs.h"

/* Raised with any change to what a summary holds or to bk_set_check: a file of another
 * format is rebuilt from the sets. */
#define SUM_FORMAT    1
#define SUM_HEAD      "ombra-set-summaries"
#define SUM_MAX_BYTES (1u << 30)

/* The cache folder (made 0700 when missing; NULL and no error when it cannot be had). */
static om_dir *cache_dir(void)
{
    char data[4096];
    om_dir *d = NULL, *c = NULL;
    if (om_data_dir(data, sizeof data) || om_mkdirs(data) ||
        om_dir_open(om_vfs_posix(), NULL, data, OM_D_FOLLOW, &d)) {
        om_err_clear();
        return NULL;
    }
    if (om_dir_open(om_vfs_posix(), d, "cache", 0, &c) == OM_E_FileNotFound) {
        om_err_clear();
        char p[4200];
        if (snprintf(p, sizeof p, "%s/cache", data) < (int)sizeof p && mkdir(p, 0700) == 0)
            (void)om_dir_sync(d);
        (void)om_dir_open(om_vfs_posix(), d, "cache", 0, &c);
    }
    om_dir_close(d);
    om_err_clear();
    return c;
}

static void file_name(const bk_repo *r, char *out, size_t n)
{
    snprintf(out, n, "sets-%s.json", r->uuid_str);
}

json_t *bk_summaries_load(const bk_repo *r)
{
    char name[80];
    file_name(r, name, sizeof name);
    om_dir *d = cache_dir();
    om_file *f = NULL;
    uint64_t sz = 0;
    uint8_t *b = NULL;
    json_t *m = NULL;
    if (d && !om_open_at(d, name, OM_O_RDONLY, &f) && !om_fsize(f, &sz) && sz < SUM_MAX_BYTES &&
        (b = malloc(sz + 1)) && !om_pread_full(f, b, sz, 0)) {
        b[sz] = 0;
        char head[80];
        int fmt = 0;
        unsigned long long sum = 0;
        const char *nl = memchr(b, '\n', sz);
        size_t hl = nl ? (size_t)(nl - (const char *)b) : 0;
        if (nl && hl < sizeof head) {
            memcpy(head, b, hl);
            head[hl] = 0;
            char tag[sizeof SUM_HEAD + 1];
            if (sscanf(head, "%19s %d %16llx", tag, &fmt, &sum) == 3 && !strcmp(tag, SUM_HEAD) &&
                fmt == SUM_FORMAT && om_xxh3(nl + 1, sz - hl - 1, 0) == sum)
                m = json_loadb(nl + 1, sz - hl - 1, 0, NULL);
        }
    }
    free(b);
    om_close(f);
    om_dir_close(d);
    om_err_clear();
    if (!json_is_object(m)) {
        json_decref(m);
        m = json_object();
    }
    return m;
}

void bk_summaries_save(const bk_repo *r, json_t *m)
{
    char name[80];
    file_name(r, name, sizeof name);
    char *body = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    om_dir *d = body ? cache_dir() : NULL;
    size_t bl = body ? strlen(body) : 0;
    char head[80];
    int hl = snprintf(head, sizeof head, "%s %d %016llx\n", SUM_HEAD, SUM_FORMAT,
                      (unsigned long long)om_xxh3(body ? body : "", bl, 0));
    om_durable out = {0};
    if (d && !om_durable_begin_private(d, name, &out)) {
        if (om_pwrite(out.f, head, (size_t)hl, 0) || om_pwrite(out.f, body, bl, (uint64_t)hl) ||
            om_durable_place(&out, OM_RENAME_REPLACE))
            om_durable_abort(&out);
    }
    free(body);
    om_dir_close(d);
    om_err_clear();
}

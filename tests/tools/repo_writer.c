/* repo_writer: writes one backup set into a repository straight through backup/repo.h, so the
 * repository's commands can be tested without a store, a coordinator or `ombra backup`.
 *
 *   repo_writer REPO TYPE DB FILE...     (passphrase: $OMBRA_REPO_PASSPHRASE)
 *
 * Each FILE goes into the set under the name a backup gives it (backup/setfiles.h): a *.edb as
 * edb/<base name>, a log or checkpoint as logs/<base name>, anything else under its base name;
 * cut into blocks of the repository's block size. The log range is that of the logs given (1-1
 * without any). The set is published, unless REPO_WRITER_PENDING=1 (a backup that died between
 * commit and publish). REPO_WRITER_TIME=ISO-8601 gives the set that time and freeze time
 * ("mark_time_ns") instead of now (retention tests: sets of many simulated days);
 * REPO_WRITER_PARENT=ID names the set an incremental or differential continues. Prints the new
 * set's id. */
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/repo.h"
#include "backup/setfiles.h"
#include "base/error.h"
#include "base/time.h"

/* The name in the set of a file called base; *gen (may be NULL) its log generation or 0. */
static void set_name(const char *base, char *name, size_t len, uint32_t *gen)
{
    size_t l = strlen(base);
    uint32_t g = 0;
    snprintf(name, len, "logs/%s", base);
    if (l > 4 && !strcmp(base + l - 4, ".edb"))
        snprintf(name, len, "edb/%s", base);
    else if (!bk_set_file_kind(name, "E00", &g))
        snprintf(name, len, "%s", base);
    om_err_clear(); /* not a name a set holds: kept as it is */
    if (gen) *gen = g;
}

static int add_file(bk_repo *r, bk_writer *w, const char *path)
{
    uint32_t bs = bk_repo_block_size(r);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return om_errf(OM_E_FileNotFound, "cannot open %s", path);
    off_t size = lseek(fd, 0, SEEK_END);
    size_t n = (size_t)((size + bs - 1) / bs);
    uint8_t(*ids)[BK_ID_LEN] = calloc(n + 1, BK_ID_LEN), *buf = malloc(bs), sum[32];
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    unsigned sl = 0;
    int rc = ids && buf && sha ? 0 : om_errf(OM_E_OutOfMemory, "out of memory");
    if (!rc) EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    for (size_t i = 0; i < n && !rc; i++) {
        ssize_t got = pread(fd, buf, bs, (off_t)i * bs);
        if (got <= 0) {
            rc = om_errf(OM_E_DiskIO, "reading %s", path);
            break;
        }
        EVP_DigestUpdate(sha, buf, (size_t)got);
        rc = bk_put_block(w, buf, (size_t)got, ids[i], NULL);
    }
    if (!rc) EVP_DigestFinal_ex(sha, sum, &sl);
    const char *base = strrchr(path, '/');
    char name[300];
    if (!rc) set_name(base ? base + 1 : path, name, sizeof name, NULL);
    if (!rc)
        rc = bk_set_add_file(w, name, (uint64_t)size, sum, NULL, (const uint8_t(*)[BK_ID_LEN])ids,
                             n, json_pack("{s:s}", "source", path));
    EVP_MD_CTX_free(sha);
    free(ids);
    free(buf);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: repo_writer REPO TYPE DB FILE...\n");
        return 2;
    }
    bk_repo *r = NULL;
    bk_writer *w = NULL;
    char id[65], t[40];
    int rc = bk_repo_open(argv[1], getenv("OMBRA_REPO_PASSPHRASE"), &r);
    if (!rc) rc = bk_set_begin(r, &w);
    uint32_t lo = 0, hi = 0;
    for (int i = 4; i < argc && !rc; i++) {
        const char *base = strrchr(argv[i], '/');
        char name[300];
        uint32_t g = 0;
        set_name(base ? base + 1 : argv[i], name, sizeof name, &g);
        if (g && (!lo || g < lo)) lo = g;
        if (g > hi) hi = g;
        rc = add_file(r, w, argv[i]);
    }
    if (!rc) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:[i,i], s:n}", "type", argv[2],
                                "time", om_time_iso(om_now_ns(), t, sizeof t), "server", "srv1",
                                "database", "id", argv[3], "name", argv[3], "base", "E00",
                                "log_range", lo ? (int)lo : 1, lo ? (int)hi : 1, "parent");
        const char *when = getenv("REPO_WRITER_TIME"), *parent = getenv("REPO_WRITER_PARENT");
        uint64_t first = 0, last = 0;
        if (when && *when && !(rc = om_time_parse(when, &first, &last))) {
            json_object_set_new(doc, "time", json_string(om_time_iso(first, t, sizeof t)));
            json_object_set_new(doc, "mark_time_ns", json_integer((json_int_t)first));
        }
        if (parent && *parent) json_object_set_new(doc, "parent", json_string(parent));
        if (rc) {
            json_decref(doc);
            bk_set_abort(w);
        } else
            rc = bk_set_commit(w, doc, id);
        w = NULL;
        const char *pending = getenv("REPO_WRITER_PENDING");
        if (!rc && !(pending && !strcmp(pending, "1"))) rc = bk_set_publish(r, id);
    }
    if (w) bk_set_abort(w);
    bk_repo_close(r);
    if (rc) {
        char b[1024];
        fprintf(stderr, "repo_writer: %s\n", om_err_format(rc, b, sizeof b));
        return 1;
    }
    printf("%s\n", id);
    return 0;
}

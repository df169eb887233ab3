/* The restore job (restore.h has the sequence). */
#include "backup/restore.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/chain.h"
#include "backup/job.h"
#include "backup/repo.h"
#include "base/error.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"
#include "vss/requester.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int a = hexval(h[2 * i]), b = a < 0 ? -1 : hexval(h[2 * i + 1]);
        if (b < 0) return -1;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

/* Writes one file of a set to dst, block by block, checking every block (bk_get_block) and the
 * file's SHA-256. */
static int restore_file(bk_repo *r, const char *set, json_t *f, const char *dst, uint64_t *bytes)
{
    const char *name = json_string_value(json_object_get(f, "name"));
    const char *blocks = json_string_value(json_object_get(f, "blocks"));
    const char *want = json_string_value(json_object_get(f, "sha256"));
    uint64_t size = (uint64_t)json_integer_value(json_object_get(f, "size"));
    if (!name || !blocks || !want || strlen(blocks) % (2 * BK_ID_LEN))
        return om_errf(OM_E_RepositoryCorrupt, "set %.12s: file entry %s is malformed", set,
                       name ? name : "?");
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return om_errf(om_err_from_errno(errno), "creating %s: %s", dst, strerror(errno));
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    int rc = 0;
    uint64_t off = 0;
    for (size_t i = 0; !rc && blocks[i * 2 * BK_ID_LEN]; i++) {
        uint8_t id[BK_ID_LEN], *data = NULL;
        size_t len = 0;
        if (unhex(blocks + i * 2 * BK_ID_LEN, id, BK_ID_LEN))
            rc = om_errf(OM_E_RepositoryCorrupt, "set %.12s: %s: bad block id", set, name);
        if (!rc && (rc = bk_get_block(r, id, &data, &len)))
            rc = om_err_ctx(rc, "set %.12s, file %s, block %zu (%.16s)", set, name, i,
                            blocks + i * 2 * BK_ID_LEN);
        if (!rc && pwrite(fd, data, len, (off_t)off) != (ssize_t)len)
            rc = om_errf(OM_E_DiskIO, "writing %s: %s", dst, strerror(errno));
        if (!rc) EVP_DigestUpdate(sha, data, len);
        off += len;
        free(data);
    }
    uint8_t got[32];
    unsigned gl = 0;
    EVP_DigestFinal_ex(sha, got, &gl);
    EVP_MD_CTX_free(sha);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", got[i]);
    if (!rc && (off != size || strcmp(hex, want)))
        rc = om_errf(OM_E_RepositoryCorrupt,
                     "set %.12s, file %s: the restored content does not match its SHA-256", set,
                     name);
    if (!rc && fsync(fd) != 0) rc = om_errf(OM_E_DiskIO, "syncing %s", dst);
    close(fd);
    *bytes += off;
    return rc;
}

static int store_db_id(const char *name, char id[40])
{
    json_t *db = NULL;
    int rc = bk_store_db(name, &db);
    if (!rc) snprintf(id, 40, "%s", om_json_str_or(db, "id", ""));
    json_decref(db);
    return rc;
}

/* The restore options the store writer understands (store/writer.h). */
static json_t *writer_options(const bk_restore_opts *o, const char *orig_id)
{
    json_t *ro = json_object();
    if (o->recovery) {
        json_object_set_new(ro, "target", json_string(o->recovery));
        json_object_set_new(ro, "recovery", json_true());
    } else if (o->to)
        json_object_set_new(ro, "target", json_string(o->to));
    else if (!o->edb) {
        json_object_set_new(ro, "target", json_string(o->db));
        json_object_set_new(ro, "target_id", json_string(orig_id));
    }
    if (o->mount) json_object_set_new(ro, "mount", json_true());
    if (o->until_gen) json_object_set_new(ro, "stop_gen", json_integer(o->until_gen));
    if (o->until_time_ns)
        json_object_set_new(ro, "stop_time_ns", json_integer((json_int_t)o->until_time_ns));
    return ro;
}

/* Lays the chain's files where PreRestore said: the .edb of the base, the logs of every set. */
static int lay_files(bk_repo *r, json_t *docs, json_t *target, uint64_t *bytes)
{
    const char *edb = om_json_str_or(target, "edb", NULL),
               *logs = om_json_str_or(target, "logs", NULL);
    if (!edb || !logs) return om_errf(OM_E_Internal, "the writer did not say where the files go");
    size_t i, k;
    json_t *d, *f;
    json_array_foreach(docs, i, d)
    {
        const char *sid = om_json_str_or(d, "id", "?");
        json_array_foreach(json_object_get(d, "files"), k, f)
        {
            const char *name = om_json_str_or(f, "name", "");
            char dst[4400];
            if (!strncmp(name, "edb/", 4)) {
                if (i) continue; /* only the base set holds the database file */
                snprintf(dst, sizeof dst, "%s", edb);
            } else if (!strncmp(name, "logs/", 5) && strstr(name, ".log"))
                snprintf(dst, sizeof dst, "%.4000s/%.200s", logs, name + 5);
            else
                continue; /* the checkpoint: hard recovery starts from the header */
            int rc = restore_file(r, sid, f, dst, bytes);
            if (rc) return rc;
        }
    }
    return 0;
}

int bk_restore_run(const bk_restore_opts *o, json_t **result)
{
    uint64_t t0 = om_mono_ns();
    json_t *res = json_pack("{s:s, s:[]}", "database", o->db, "sets");
    *result = res;
    bk_repo *r = NULL;
    vss_req *q = NULL;
    json_t *sets = NULL, *chain = NULL, *docs = json_array(), *targets = NULL, *done = NULL;
    char id[40] = "";
    uint64_t bytes = 0;
    int rc = bk_repo_open(o->repo, o->passphrase, &r);
    if (!rc) rc = store_db_id(o->db, id);
    if (!rc) rc = bk_sets(r, &sets);
    bk_point pt = {
        .set_id = o->set_id, .until_gen = o->until_gen, .until_time_ns = o->until_time_ns};
    if (!rc) rc = bk_chain(sets, id, &pt, &chain);
    size_t i;
    json_t *s;
    json_array_foreach(chain, i, s)
    {
        json_t *d = NULL;
        if (rc || (rc = bk_set_load(r, om_json_str_or(s, "id", ""), &d))) break;
        json_array_append_new(docs, d);
        json_array_append_new(json_object_get(res, "sets"),
                              json_pack("{s:s, s:s, s:O}", "set", om_json_str_or(s, "id", ""),
                                        "type", om_json_str_or(s, "type", ""), "log_range",
                                        json_object_get(s, "log_range")));
    }
    json_t *last = json_array_get(docs, json_array_size(docs) - 1);
    json_t *wmd = json_object_get(last, "writer_metadata"),
           *cdoc = json_object_get(last, "components_document");
    const char *inst = om_json_str_or(json_object_get(wmd, "writer"), "instance_id", "");
    const char *comp =
        om_json_str_or(json_array_get(json_object_get(cdoc, "components"), 0), "component", "");
    if (!rc && (!wmd || !cdoc || !*comp))
        rc = om_errf(OM_E_RepositoryCorrupt, "set %s lacks its writer documents",
                     om_json_str_or(last, "id", "?"));
    if (!rc) rc = vss_req_begin(NULL, VSS_SESSION_RESTORE, &q);
    if (!rc) {
        json_t *md = json_pack("[{s:s, s:O}]", "instance_id", inst, "metadata", wmd);
        rc = vss_req_load_documents(q, md, cdoc);
        json_decref(md);
    }
    if (!rc) {
        json_t *ro = writer_options(o, id), *nt = NULL;
        if (o->edb) nt = json_pack("{s:s, s:s}", "edb", o->edb, "logs", o->logs);
        rc = vss_req_add_restore_component(q, inst, comp, ro, nt);
        json_decref(ro);
        json_decref(nt);
    }
    if (!rc && o->no_replay) rc = vss_req_set_additional_restores(q, 1);
    if (!rc) rc = vss_req_pre_restore(q, &targets);
    if (!rc) rc = lay_files(r, docs, json_object_get(targets, comp), &bytes);
    if (!rc) rc = vss_req_post_restore(q, &done);
    char detail[1400] = "";
    if (rc) snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (q) vss_req_release(q);
    json_t *t = json_object_get(done, comp);
    json_object_set_new(res, "target",
                        json_string(om_json_str_or(t, "name", o->to ? o->to : o->db)));
    json_object_set(res, "replay",
                    json_object_get(t, "replay") ? json_object_get(t, "replay") : json_null());
    json_object_set_new(res, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(res, "seconds", json_real((double)(om_mono_ns() - t0) / 1e9));
    json_decref(sets);
    json_decref(chain);
    json_decref(docs);
    json_decref(targets);
    json_decref(done);
    bk_repo_close(r);
    if (rc) om_errf(rc, "%s", detail);
    return rc;
}

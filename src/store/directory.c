/* The directory document and its file backend (directory.h). */
#include "store/directory.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/error.h"
#include "base/proto.h"
#include "base/vfs.h"

#define DIR_VERSION 1

static int file_load(void *arg, json_t **doc)
{
    const char *path = arg;
    om_vfs *v = om_vfs_posix();
    *doc = NULL;
    if (v->exists(v, path) == 0) return 0;
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = om_read_file(v, path, &data, &n);
    if (rc) return rc;
    json_error_t jerr;
    *doc = json_loadb((const char *)data, n, 0, &jerr);
    free(data);
    if (!*doc) return om_errf(OM_E_InvalidParameter, "%s: line %d: %s", path, jerr.line, jerr.text);
    return 0;
}

static int file_save(void *arg, json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!s) return om_errf(OM_E_OutOfMemory, "directory: out of memory");
    int rc = om_write_file_durable(om_vfs_posix(), arg, s, strlen(s));
    free(s);
    return rc;
}

static json_t *ent_json(const store_dbent *e)
{
    char id[37];
    om_uuid_str(&e->id, id);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:b}", "name", e->name, "id",
                     id, "server", e->server, "edb", e->edb, "logs", e->logs, "base", e->base,
                     "circular_logging", e->circular, "allow_restore", e->allow_restore, "recovery",
                     e->recovery, "mounted", e->mounted);
}

static int copy_str(char *dst, size_t len, json_t *o, const char *key)
{
    const char *s;
    int rc = om_json_str(o, key, &s);
    if (rc) return rc;
    if (strlen(s) >= len)
        return om_errf(OM_E_InvalidParameter, "directory: \"%s\" is too long", key);
    strcpy(dst, s);
    return 0;
}

static int ent_parse(json_t *o, store_dbent *e)
{
    memset(e, 0, sizeof *e);
    const char *id;
    int rc = copy_str(e->name, sizeof e->name, o, "name");
    if (!rc) rc = copy_str(e->server, sizeof e->server, o, "server");
    if (!rc) rc = copy_str(e->edb, sizeof e->edb, o, "edb");
    if (!rc) rc = copy_str(e->logs, sizeof e->logs, o, "logs");
    if (!rc) rc = copy_str(e->base, sizeof e->base, o, "base");
    if (!rc) rc = om_json_str(o, "id", &id);
    if (!rc) rc = om_uuid_parse(id, &e->id);
    e->circular = json_is_true(json_object_get(o, "circular_logging"));
    e->allow_restore = json_is_true(json_object_get(o, "allow_restore"));
    e->recovery = json_is_true(json_object_get(o, "recovery"));
    e->mounted = json_is_true(json_object_get(o, "mounted"));
    return rc;
}

static int grow(store_dir *d)
{
    if (d->n < d->cap) return 0;
    size_t nc = d->cap ? d->cap * 2 : 16;
    store_dbent *ne = realloc(d->ents, nc * sizeof *ne);
    if (!ne) return om_errf(OM_E_OutOfMemory, "directory: out of memory");
    d->ents = ne;
    d->cap = nc;
    return 0;
}

int store_dir_open_file(const char *path, store_dir **out)
{
    store_dir *d = calloc(1, sizeof *d);
    char *p = strdup(path);
    if (!d || !p) {
        free(d);
        free(p);
        return om_errf(OM_E_OutOfMemory, "directory: out of memory");
    }
    d->be = (store_dir_backend){file_load, file_save, p};
    json_t *doc = NULL;
    int rc = d->be.load(d->be.arg, &doc);
    if (!rc && doc) {
        json_t *dbs = json_object_get(doc, "databases");
        if (json_integer_value(json_object_get(doc, "version")) != DIR_VERSION ||
            !json_is_array(dbs))
            rc = om_errf(OM_E_InvalidParameter, "%s is not a version %d directory", path,
                         DIR_VERSION);
        size_t i;
        json_t *o;
        json_array_foreach(dbs, i, o)
        {
            if (rc) break;
            if (!(rc = grow(d))) rc = ent_parse(o, &d->ents[d->n]);
            if (rc)
                rc = om_err_ctx(rc, "%s: database %zu", path, i);
            else
                d->n++;
        }
    }
    json_decref(doc);
    if (rc) {
        store_dir_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void store_dir_close(store_dir *d)
{
    if (!d) return;
    free(d->be.arg);
    free(d->ents);
    free(d);
}

store_dbent *store_dir_find(store_dir *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->ents[i].name, name)) return &d->ents[i];
    return NULL;
}

/* Saves the directory as it would be with `e` put (or `remove_name` removed). */
static int save_with(store_dir *d, const store_dbent *e, const char *remove_name)
{
    json_t *arr = json_array();
    int replaced = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (remove_name && !strcmp(d->ents[i].name, remove_name)) continue;
        if (e && !strcmp(d->ents[i].name, e->name)) {
            json_array_append_new(arr, ent_json(e));
            replaced = 1;
        } else
            json_array_append_new(arr, ent_json(&d->ents[i]));
    }
    if (e && !replaced) json_array_append_new(arr, ent_json(e));
    json_t *doc = json_pack("{s:i, s:o}", "version", DIR_VERSION, "databases", arr);
    int rc = d->be.save(d->be.arg, doc);
    json_decref(doc);
    return rc;
}

int store_dir_put(store_dir *d, const store_dbent *e)
{
    int rc = grow(d);
    if (!rc) rc = save_with(d, e, NULL);
    if (rc) return rc;
    store_dbent *cur = store_dir_find(d, e->name);
    if (cur)
        *cur = *e;
    else
        d->ents[d->n++] = *e;
    return 0;
}

int store_dir_remove(store_dir *d, const char *name)
{
    store_dbent *cur = store_dir_find(d, name);
    if (!cur) return om_errf(OM_E_DatabaseNotFound, "no database named '%s'", name);
    int rc = save_with(d, NULL, name);
    if (rc) return rc;
    *cur = d->ents[--d->n];
    return 0;
}

int store_same_place(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    const char *x = realpath(a, ra) ? ra : a, *y = realpath(b, rb) ? rb : b;
    return !strcmp(x, y);
}

const store_dbent *store_dir_place_taken(const store_dir *d, const char *edb, const char *logs,
                                         const char *base, const store_dbent *skip, char *why,
                                         size_t n)
{
    char edir[4096];
    om_dirname(edb, edir, sizeof edir);
    for (size_t i = 0; i < d->n; i++) {
        const store_dbent *o = &d->ents[i];
        char odir[4096];
        if (o == skip) continue;
        om_dirname(o->edb, odir, sizeof odir);
        const char *what = store_same_place(o->edb, edb) ? "its database file is that file"
                           : store_same_place(o->logs, logs) && !strcmp(o->base, base)
                               ? "its log stream is in that folder under that base name"
                           : store_same_place(o->logs, edir) ? "that folder is its log folder"
                           : store_same_place(odir, logs)    ? "its database file is in that folder"
                                                             : NULL;
        if (what) {
            snprintf(why, n, "%s", what);
            return o;
        }
    }
    return NULL;
}

int store_check_edb_name(const char *edb, const char *what)
{
    static const char *const LOG_SUFFIXES[] = {".log", ".chk", ".pgj", ".jrs", ".env"};
    size_t l = strlen(edb);
    for (size_t i = 0; i < sizeof LOG_SUFFIXES / sizeof *LOG_SUFFIXES; i++) {
        size_t k = strlen(LOG_SUFFIXES[i]);
        if (l >= k && !strcasecmp(edb + l - k, LOG_SUFFIXES[i]))
            return om_errf(OM_E_InvalidPath,
                           "%s %s is named as a log folder's own files are (*%s): a log roll or a "
                           "truncation could take it. HINT: name the database file *.edb",
                           what, edb, LOG_SUFFIXES[i]);
    }
    return 0;
}

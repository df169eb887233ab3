/* One database's .edb under a shadow copy (shadow.h). */
#include "backup/shadow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/proto.h"
#include "store/client.h"
#include "vss/requester.h"

int bk_shadow_path(json_t *shadows, const char *p, char *out, size_t n)
{
    size_t i, best = 0;
    json_t *s, *pick = NULL;
    json_array_foreach(shadows, i, s)
    {
        const char *orig = om_json_str_or(s, "original", "");
        size_t l = strlen(orig);
        if (!strncmp(p, orig, l) && (p[l] == '/' || p[l] == 0) && l >= best) {
            best = l;
            pick = s;
        }
    }
    if (!pick) return om_errf(OM_E_FileNotFound, "%s is in no shadow copy of the set", p);
    snprintf(out, n, "%s%s", om_json_str_or(pick, "exposed", ""), p + best);
    return 0;
}

int bk_shadow_db_take(const char *name, const char *provider, bk_shadow_db **out)
{
    *out = NULL;
    bk_shadow_db *s = calloc(1, sizeof *s);
    if (!s) return om_errf(OM_E_OutOfMemory, "shadow copy of %s", name);
    store_client *sc = NULL;
    json_t *info = NULL, *writers = NULL, *snap = NULL;
    vss_req *r = NULL;
    char id[40] = "", component[400] = "", instance[40] = "";
    const char *edb = NULL;
    int rc = store_client_new(NULL, &sc);
    if (!rc) store_client_retry_busy(sc, 1);
    if (!rc) rc = store_client_db_show(sc, name, &info);
    if (!rc) {
        snprintf(id, sizeof id, "%s", om_json_str_or(info, "id", ""));
        edb = om_json_str_or(info, "edb", "");
        snprintf(s->name, sizeof s->name, "%s", name);
        snprintf(s->mount_id, sizeof s->mount_id, "%s", om_json_str_or(info, "mount_id", ""));
        if (!s->mount_id[0])
            rc = om_errf(OM_E_DatabaseUnavailable,
                         "database '%s' is not mounted here: no shadow copy of it is taken", name);
    }
    if (!rc) rc = vss_req_begin(NULL, VSS_SESSION_BACKUP, &r);
    if (!rc) rc = vss_req_gather_metadata(r, &writers);
    json_t *paths = NULL;
    if (!rc) {
        size_t i, k;
        json_t *w, *c;
        json_array_foreach(writers, i, w)
            json_array_foreach(json_object_get(json_object_get(w, "metadata"), "components"), k, c)
        {
            if (strcmp(om_json_str_or(c, "name", ""), id)) continue;
            snprintf(component, sizeof component, "%s\\%s", om_json_str_or(c, "logical_path", ""),
                     id);
            snprintf(instance, sizeof instance, "%s", om_json_str_or(w, "instance_id", ""));
            paths = json_object_get(c, "paths");
        }
        if (!instance[0])
            rc = om_errf(OM_E_ObjectNotFound,
                         "no writer offers database '%s' (%s): is it mounted, and is ombra-store "
                         "registered with ombra-vssd? HINT: ombra vss writers",
                         name, id);
    }
    if (!rc) rc = vss_req_set_backup_state(r, "copy");
    if (!rc) rc = vss_req_add_component(r, instance, component);
    if (!rc) rc = vss_req_prepare_backup(r);
    char set[37];
    if (!rc) rc = vss_req_start_snapshot_set(r, 0, set);
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p) if (!rc) rc =
        vss_req_add_path(r, json_string_value(p), provider ? provider : "held", NULL, 0);
    if (!rc) rc = vss_req_do_snapshot_set(r, &snap);
    if (!rc) {
        json_t *shadows = json_object_get(snap, "shadows");
        rc = bk_shadow_path(shadows, edb, s->edb, sizeof s->edb);
        size_t k;
        json_t *c;
        json_array_foreach(
            json_object_get(json_object_get(snap, "components_document"), "components"), k,
            c) if (!strcmp(om_json_str_or(c, "component", ""), component))
        {
            json_t *range = json_object_get(json_object_get(c, "backup_metadata"), "log_range");
            s->lo = (uint32_t)json_integer_value(json_array_get(range, 0));
            s->hi = (uint32_t)json_integer_value(json_array_get(range, 1));
        }
    }
    json_decref(snap);
    json_decref(writers);
    json_decref(info);
    store_client_free(sc);
    if (rc) {
        om_err_saved e;
        om_err_save(&e, rc);
        if (r) {
            vss_req_abort(r);
            vss_req_release(r);
        }
        free(s);
        return om_err_restore(&e);
    }
    s->req = r;
    *out = s;
    return 0;
}

int bk_shadow_db_check(const bk_shadow_db *s)
{
    store_client *sc = NULL;
    json_t *info = NULL;
    int rc = store_client_new(NULL, &sc);
    if (!rc) store_client_retry_busy(sc, 1);
    if (!rc) rc = store_client_db_show(sc, s->name, &info);
    const char *now = om_json_str_or(info, "mount_id", "");
    if (!rc && strcmp(now, s->mount_id))
        rc = om_errf(OM_E_DatabaseUnavailable,
                     "database '%s' was %s while its shadow copy was read: what was read is not "
                     "one moment of it",
                     s->name, now[0] ? "dismounted and mounted again" : "dismounted");
    else if (rc)
        rc = om_errf(rc,
                     "database '%s': whether it stayed mounted while its shadow copy was read "
                     "cannot be told: %s",
                     s->name, om_err_detail());
    json_decref(info);
    store_client_free(sc);
    return rc;
}

void bk_shadow_db_release(bk_shadow_db *s)
{
    if (!s) return;
    om_err_saved e;
    om_err_save(&e, 0);
    vss_req_abort(s->req);
    vss_req_release(s->req);
    om_err_restore(&e);
    free(s);
}

/* ombra-vssd's shadow copy catalog (coord_internal.h): the copies made, saved durably at
 * every change so a restarted coordinator finds what a dead one left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/vfs.h"
#include "vss/coord_internal.h"

json_t *vss_coord_shadow_json(const shadow_ent *e)
{
    json_t *j = vss_shadow_to_json(&e->s);
    json_object_set_new(j, "session", json_string(e->session));
    json_object_set_new(j, "persistent", json_boolean(e->persistent));
    json_object_set_new(j, "valid", json_boolean(e->valid));
    return j;
}

int vss_coord_save_catalog(coord *c)
{
    json_t *arr = json_array();
    for (int i = 0; i < c->nshadows; i++)
        json_array_append_new(arr, vss_coord_shadow_json(c->shadows[i]));
    char *text = json_dumps(arr, JSON_INDENT(1));
    json_decref(arr);
    if (!text) return om_errf(OM_E_OutOfMemory, "saving the shadow copy catalog");
    int rc = om_write_file_durable(om_vfs_posix(), c->catalog, text, strlen(text));
    free(text);
    if (rc) om_error("saving %s: %s", c->catalog, om_err_detail());
    return rc;
}

shadow_ent *vss_coord_add_shadow(coord *c, const shadow_ent *e)
{
    if (c->nshadows == VSS_MAX_SHADOWS) {
        om_errf(OM_E_OutOfMemory, "too many shadow copies (%d)", VSS_MAX_SHADOWS);
        return NULL;
    }
    shadow_ent *n = malloc(sizeof *n);
    if (!n) {
        om_errf(OM_E_OutOfMemory, "out of memory");
        return NULL;
    }
    *n = *e;
    c->shadows[c->nshadows++] = n;
    vss_coord_save_catalog(c);
    return n;
}

void vss_coord_update_shadow(coord *c, shadow_ent *e, const vss_shadow *s, int save)
{
    pthread_mutex_lock(&c->mu);
    e->s = *s;
    if (save) vss_coord_save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

void vss_coord_remove_shadow(coord *c, int i)
{
    shadow_ent *e = c->shadows[i];
    const vss_provider *p = vss_provider_find(e->s.provider);
    if (p && p->remove(&e->s))
        om_error("deleting shadow copy %s (%s): %s", e->s.id, e->s.storage, om_err_detail());
    free(e);
    c->shadows[i] = c->shadows[--c->nshadows];
}

void vss_coord_drop_shadows(coord *c, const char *sid, int keep_persistent)
{
    pthread_mutex_lock(&c->mu);
    int changed = 0;
    for (int i = c->nshadows; i-- > 0;) {
        shadow_ent *e = c->shadows[i];
        if (strcmp(e->session, sid)) continue;
        if (keep_persistent && e->persistent && e->valid) {
            e->session[0] = 0; /* outlives its session */
            changed = 1;
            continue;
        }
        vss_coord_remove_shadow(c, i);
        changed = 1;
    }
    if (changed) vss_coord_save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

void vss_coord_expose_shadows(coord *c, const char *sid)
{
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nshadows; i++)
        if (!strcmp(c->shadows[i]->session, sid)) c->shadows[i]->exposed = 1;
    vss_coord_save_catalog(c);
    pthread_mutex_unlock(&c->mu);
}

void vss_coord_load_catalog(coord *c)
{
    json_error_t je;
    json_t *arr = json_load_file(c->catalog, 0, &je);
    if (!arr) return;
    size_t i;
    json_t *j;
    int dropped = 0;
    json_array_foreach(arr, i, j)
    {
        shadow_ent e = {0};
        if (vss_shadow_from_json(j, &e.s)) {
            om_warn("%s: entry %zu: %s (ignored)", c->catalog, i, om_err_detail());
            continue;
        }
        e.persistent = json_is_true(json_object_get(j, "persistent"));
        e.valid = json_is_true(json_object_get(j, "valid")) && strcmp(e.s.provider, "held");
        e.exposed = 1;
        if (e.persistent && e.valid && c->nshadows < VSS_MAX_SHADOWS) {
            vss_coord_add_shadow(c, &e);
            continue;
        }
        const vss_provider *p = vss_provider_find(e.s.provider);
        if (p && p->remove(&e.s))
            om_error("deleting leftover shadow copy %s: %s", e.s.id, om_err_detail());
        dropped++;
    }
    json_decref(arr);
    if (dropped) om_info("deleted %d shadow copies a previous run left behind", dropped);
    vss_coord_save_catalog(c);
}

/* The provider registry, auto's choice and the catalog record's JSON: the top of the providers
 * (common.c holds the steps they share, tree.c the walking and copying). */
#include "vss/provider/provider.h"

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/proto.h"
#include "vss/provider/provider_internal.h"

/* --- Registry and auto -------------------------------------------------------------------- */

static const vss_provider *const all[] = {&vss_btrfs_provider, &vss_reflink_provider,
                                          &vss_held_provider, &vss_copy_provider};
#define NPROVIDERS (sizeof all / sizeof all[0])

const vss_provider *vss_provider_find(const char *name)
{
    for (size_t i = 0; name && i < NPROVIDERS; i++)
        if (!strcmp(all[i]->name, name)) return all[i];
    return NULL;
}

const vss_provider *const *vss_providers(size_t *n)
{
    *n = NPROVIDERS;
    return all;
}

/* Appends "name: reason" to the list of providers passed over. */
static void pass_over(char *list, size_t n, const char *name, const char *reason)
{
    size_t len = strlen(list);
    if (len < n) snprintf(list + len, n - len, "%s%s: %s", len ? "; " : "", name, reason);
}

const vss_provider *vss_provider_auto(const char *path, const char *shadow_root,
                                      int writers_can_hold, char *why, size_t n)
{
    char passed[2048] = "", reason[1024];
    for (size_t i = 0; i < NPROVIDERS; i++) {
        const vss_provider *p = all[i];
        if (p == &vss_held_provider && !writers_can_hold) {
            pass_over(passed, sizeof passed, p->name, "a writer cannot hold its files");
            continue;
        }
        reason[0] = 0;
        int rc = p->supports(path, shadow_root, reason, sizeof reason);
        if (rc == 1) {
            snprintf(why, n, "%s%s%s", p->name, passed[0] ? ", passed over " : "", passed);
            return p;
        }
        pass_over(passed, sizeof passed, p->name, rc < 0 ? om_err_detail() : reason);
    }
    snprintf(why, n, "no provider can shadow %s: %s", path, passed);
    return NULL;
}

/* --- The catalog record ------------------------------------------------------------------- */

json_t *vss_shadow_to_json(const vss_shadow *s)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id", s->id, "set_id",
                     s->set_id, "provider", s->provider, "original", s->original, "storage",
                     s->storage, "exposed", s->exposed, "created_ns", (json_int_t)s->created_ns,
                     "bytes", (json_int_t)s->bytes, "files", (json_int_t)s->files);
}

static int get_str(json_t *j, const char *key, char *out, size_t n)
{
    const char *v;
    int rc = om_json_str(j, key, &v);
    if (rc) return rc;
    if (strlen(v) >= n)
        return om_errf(OM_E_InvalidParameter, "field \"%s\" is longer than %zu bytes", key, n - 1);
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

static int get_uint(json_t *j, const char *key, uint64_t max, uint64_t *out)
{
    int64_t v;
    int rc = om_json_int(j, key, &v);
    if (!rc && (v < 0 || (uint64_t)v > max))
        rc =
            om_errf(OM_E_InvalidParameter, "field \"%s\" is out of range: %lld", key, (long long)v);
    if (!rc) *out = (uint64_t)v;
    return rc;
}

int vss_shadow_from_json(json_t *j, vss_shadow *s)
{
    uint64_t files = 0;
    memset(s, 0, sizeof *s);
    int rc = get_str(j, "id", s->id, sizeof s->id);
    if (!rc) rc = get_str(j, "set_id", s->set_id, sizeof s->set_id);
    if (!rc) rc = get_str(j, "provider", s->provider, sizeof s->provider);
    if (!rc) rc = get_str(j, "original", s->original, sizeof s->original);
    if (!rc) rc = get_str(j, "storage", s->storage, sizeof s->storage);
    if (!rc) rc = get_str(j, "exposed", s->exposed, sizeof s->exposed);
    if (!rc) rc = get_uint(j, "created_ns", INT64_MAX, &s->created_ns);
    if (!rc) rc = get_uint(j, "bytes", INT64_MAX, &s->bytes);
    if (!rc) rc = get_uint(j, "files", UINT32_MAX, &files);
    s->files = (uint32_t)files;
    return rc ? om_err_ctx(rc, "reading a shadow copy record") : 0;
}

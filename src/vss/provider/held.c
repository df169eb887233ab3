/* held: the writer keeps the big files unchanged while the shadow copy exists (page writes to
 * the .edb are held, finished log generations never change), so the shadow tree holds hard
 * links to them; the few files that do change (checkpoint, current log) are copied during the
 * freeze. Hard links need the original's mount, so storage goes there (provider.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/time.h"
#include "vss/provider/provider_internal.h"

/* The held files as paths relative to the shadowed path, sorted, with a mark for each found by
 * the commit. */
typedef struct heldset {
    const char **rel;
    unsigned char *seen;
    size_t n;
} heldset;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No empty, "." or ".." component: the walk spells relative paths this way. */
static int rel_is_clean(const char *rel)
{
    for (const char *c = rel;;) {
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (!c[len]) return 1;
        c += len + 1;
    }
}

/* The path of held relative to path ("" when they are the same), NULL when not under it. */
static const char *rel_of(const char *path, const char *held)
{
    size_t len = strlen(path);
    while (len && path[len - 1] == '/')
        len--;
    if (strncmp(held, path, len) != 0) return NULL;
    if (!held[len]) return len ? held + len : NULL;
    if (held[len] != '/' || !rel_is_clean(held + len + 1)) return NULL;
    return held + len + 1;
}

static int held_check(const char *path, const char *held)
{
    struct stat st;
    if (!rel_of(path, held))
        return om_errf(OM_E_InvalidParameter, "held file %s is not under %s", held, path);
    if (lstat(held, &st) != 0) return vss_sys_err("reading the held file", held);
    if (!S_ISREG(st.st_mode))
        return om_errf(OM_E_InvalidParameter, "held file %s is not a regular file", held);
    return 0;
}

static void heldset_free(heldset *h)
{
    free(h->rel);
    free(h->seen);
}

/* check: each held file must exist as a regular file under the path (prepare). */
static int heldset_make(const vss_shadow_path *p, int check, heldset *h)
{
    *h = (heldset){0};
    h->rel = calloc(p->nheld + 1, sizeof *h->rel);
    h->seen = calloc(p->nheld + 1, 1);
    if (!h->rel || !h->seen) {
        heldset_free(h);
        return om_errf(OM_E_OutOfMemory, "shadow copy of %s: out of memory", p->path);
    }
    for (size_t i = 0; i < p->nheld; i++) {
        int rc = check ? held_check(p->path, p->held[i]) : 0;
        if (!rc && !(h->rel[h->n++] = rel_of(p->path, p->held[i])))
            rc =
                om_errf(OM_E_InvalidParameter, "held file %s is not under %s", p->held[i], p->path);
        if (rc) {
            heldset_free(h);
            return rc;
        }
    }
    if (h->n) qsort(h->rel, h->n, sizeof *h->rel, cmp_str);
    size_t k = 0; /* the same file listed twice counts once */
    for (size_t i = 0; i < h->n; i++)
        if (!k || strcmp(h->rel[k - 1], h->rel[i]) != 0) h->rel[k++] = h->rel[i];
    h->n = k;
    return 0;
}

/* 1 when rel is held (marked as found when mark). */
static int heldset_has(heldset *h, const char *rel, int mark)
{
    const char **f = h->n ? bsearch(&rel, h->rel, h->n, sizeof *h->rel, cmp_str) : NULL;
    if (f && mark) h->seen[f - h->rel] = 1;
    return f != NULL;
}

static int copies_unheld(void *arg, const char *rel)
{
    return !heldset_has(arg, rel, 0);
}

static int held_file(void *arg, const char *src, const char *dst, const char *rel,
                     const struct stat *st, uint64_t deadline_ns)
{
    if (!heldset_has(arg, rel, 1)) return vss_copy_file(src, dst, st, deadline_ns);
    return link(src, dst) == 0 ? 0 : vss_op_err("linking", src, dst);
}

static int probe_link(const char *src, const char *dst)
{
    return link(src, dst) == 0 ? 0 : errno;
}

static int held_supports(const char *path, const char *shadow_root, char *why, size_t n)
{
    return vss_probe_supports(path, shadow_root, probe_link, "no hard links", "link", why, n);
}

/* At prepare: only the held files, linked (a link names the inode, whose content the writer
 * keeps from Freeze on, so linking early gives the same shadow and keeps thousands of finished
 * log generations out of the freeze); the others are noted in the plan, for the commit to copy. */
typedef struct prep {
    heldset *h;
    json_t *plan; /* rel paths of the regular files commit copies */
} prep;

static int link_held_only(void *arg, const char *src, const char *dst, const char *rel,
                          const struct stat *st, uint64_t deadline_ns)
{
    prep *x = arg;
    if (!heldset_has(x->h, rel, 0)) {
        if (x->plan) json_array_append_new(x->plan, json_string(rel));
        return 0;
    }
    return link(src, dst) == 0 ? 0 : vss_op_err("linking", src, dst);
}

static int held_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s)
{
    heldset h;
    int rc = p && p->path ? heldset_make(p, 1, &h) : vss_shadow_begin(p, s, "held");
    if (rc) return rc;
    vss_tree_opts o = {.same_mount = 1, .copies = copies_unheld, .arg = &h};
    prep x = {.h = &h, .plan = p->plan ? json_array() : NULL};
    rc = vss_tree_prepare(p, shadow_root, s, "held", &o);
    if (!rc) rc = vss_tree_build(p, s, UINT64_MAX, link_held_only, &x, 0);
    if (!rc && p->plan) {
        json_decref(*p->plan);
        *p->plan = x.plan;
    } else {
        json_decref(x.plan);
    }
    heldset_free(&h);
    return rc;
}

/* The walk of old (held_new_only unset, or no plan): every entry of the tree looked at. */
static int held_commit_walk(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    heldset h;
    int rc = heldset_make(p, 0, &h);
    if (rc) return rc;
    /* What prepare linked stays; new generations are linked, the rest copied, now. */
    rc = vss_tree_build(p, s, deadline_ns, held_file, &h, 1);
    char have[VSS_PATH_MAX];
    struct stat st;
    for (size_t i = 0; !rc && i < h.n; i++)
        if (!h.seen[i] &&
            (h.rel[i][0] ? vss_join(have, sizeof have, s->exposed, h.rel[i])
                         : vss_fmt_path(have, sizeof have, "%s", s->exposed)) == 0 &&
            lstat(have, &st) != 0)
            rc =
                om_errf(OM_E_ProviderVeto, "held shadow copy of %s: the held file %s/%s is missing",
                        s->original, s->original, h.rel[i]);
    heldset_free(&h);
    return rc;
}

/* One file of the plan copied: gone since prepare is right (it was not there at the freeze). */
static int copy_planned(vss_shadow *s, const char *rel, uint64_t deadline_ns)
{
    char src[VSS_PATH_MAX], dst[VSS_PATH_MAX];
    struct stat st;
    int rc = rel[0] ? vss_join(src, sizeof src, s->original, rel)
                    : vss_fmt_path(src, sizeof src, "%s", s->original);
    if (!rc)
        rc = rel[0] ? vss_join(dst, sizeof dst, s->exposed, rel)
                    : vss_fmt_path(dst, sizeof dst, "%s", s->exposed);
    if (rc) return rc;
    if (lstat(src, &st) != 0) return errno == ENOENT ? 0 : vss_sys_err("reading", src);
    if (!S_ISREG(st.st_mode)) return 0;
    if ((rc = vss_copy_file_sparse(src, dst, &st, deadline_ns, &s->commit_bytes))) return rc;
    s->commit_copies++;
    return 0;
}

/* One held file that appeared since prepare, linked (linked at prepare already: EEXIST). A held
 * file the writer names must be there: the shadow copy would miss a log. */
static int link_new(const vss_shadow_path *p, vss_shadow *s, const char *held)
{
    const char *rel = rel_of(p->path, held);
    char dst[VSS_PATH_MAX];
    if (!rel) return om_errf(OM_E_InvalidParameter, "held file %s is not under %s", held, p->path);
    int rc = rel[0] ? vss_join(dst, sizeof dst, s->exposed, rel)
                    : vss_fmt_path(dst, sizeof dst, "%s", s->exposed);
    if (rc) return rc;
    if (link(held, dst) == 0) {
        s->commit_links++;
        return 0;
    }
    if (errno == EEXIST) return 0;
    if (errno == ENOENT)
        return om_errf(OM_E_ProviderVeto, "held shadow copy of %s: the held file %s is missing",
                       s->original, held);
    return vss_op_err("linking", held, dst);
}

/* What changes after the freeze is copied now (the plan: checkpoint, current log), and the held
 * files finished since prepare are linked; the held files prepare linked are not looked at. */
static int held_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    s->commit_links = s->commit_copies = 0;
    s->commit_bytes = 0;
    json_t *plan = p->plan ? *p->plan : NULL;
    if (!p->held_new_only || !json_is_array(plan)) return held_commit_walk(p, s, deadline_ns);
    int rc = 0;
    size_t i;
    json_t *r;
    json_array_foreach(plan, i, r)
    {
        if (!rc) rc = vss_check_deadline(deadline_ns, s->original);
        if (!rc) rc = copy_planned(s, json_string_value(r), deadline_ns);
    }
    for (size_t k = 0; !rc && k < p->nheld; k++)
        rc = link_new(p, s, p->held[k]);
    if (!rc) s->created_ns = om_now_ns();
    return rc ? om_err_ctx(rc, "held shadow copy of %s", s->original) : 0;
}

const vss_provider vss_held_provider = {
    .name = "held",
    .supports = held_supports,
    .prepare = held_prepare,
    .commit = held_commit,
    .expose = vss_tree_expose,
    .remove = vss_tree_remove,
};

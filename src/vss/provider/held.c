/* held: the writer keeps the big files unchanged while the shadow copy exists (page writes to
 * the .edb are held, finished log generations never change), so the shadow tree holds hard
 * links to them; the few files that do change (checkpoint, current log) are copied during the
 * freeze. Hard links need the original's mount, so storage goes there (provider.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/proto.h"
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

/* The plan, from prepare to settle: the regular files that are not held (checkpoint, current
 * log, anything else in the folders), and what commit read of each during the freeze. */
typedef struct planned {
    char *rel;
    int have;      /* commit read it (0: gone at the freeze, or copied at commit) */
    uint8_t *data; /* its first len bytes; zeros from there to size */
    size_t len;
    uint64_t size;
    int fd;           /* stable: opened at commit, read at settle (-1: none) */
    int64_t data_end; /* stable: the bytes that matter (-1: all of it) */
    struct timespec times[2];
} planned;

typedef struct held_plan {
    planned *v;
    size_t n, cap;
    int committed; /* commit took the short way: settle has work */
} held_plan;

static void plan_drop(void *arg)
{
    held_plan *pl = arg;
    if (!pl) return;
    for (size_t i = 0; i < pl->n; i++) {
        free(pl->v[i].rel);
        free(pl->v[i].data);
        if (pl->v[i].fd >= 0) close(pl->v[i].fd);
    }
    free(pl->v);
    free(pl);
}

static int plan_add(held_plan *pl, const char *rel)
{
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 8;
        planned *nv = realloc(pl->v, nc * sizeof *nv);
        if (!nv) return om_errf(OM_E_OutOfMemory, "held shadow copy: out of memory");
        pl->v = nv;
        pl->cap = nc;
    }
    planned *e = &pl->v[pl->n];
    memset(e, 0, sizeof *e);
    e->fd = -1;
    if (!(e->rel = strdup(rel)))
        return om_errf(OM_E_OutOfMemory, "held shadow copy: out of memory");
    pl->n++;
    return 0;
}

/* At prepare: only the held files, linked (a link names the inode, whose content the writer
 * keeps from Freeze on, so linking early gives the same shadow and keeps thousands of finished
 * log generations out of the freeze); the others are noted in the plan, for the commit. */
typedef struct prep {
    heldset *h;
    held_plan *plan;
} prep;

static int link_held_only(void *arg, const char *src, const char *dst, const char *rel,
                          const struct stat *st, uint64_t deadline_ns)
{
    prep *x = arg;
    if (!heldset_has(x->h, rel, 0)) return x->plan ? plan_add(x->plan, rel) : 0;
    return link(src, dst) == 0 ? 0 : vss_op_err("linking", src, dst);
}

static int held_prepare(const vss_shadow_path *p, const char *shadow_root, vss_shadow *s)
{
    heldset h;
    int rc = p && p->path ? heldset_make(p, 1, &h) : vss_shadow_begin(p, s, "held");
    if (rc) return rc;
    vss_tree_opts o = {.same_mount = 1, .copies = copies_unheld, .arg = &h};
    prep x = {.h = &h, .plan = p->plan ? calloc(1, sizeof(held_plan)) : NULL};
    if (p->plan && !x.plan) rc = om_errf(OM_E_OutOfMemory, "held shadow copy: out of memory");
    if (!rc) rc = vss_tree_prepare(p, shadow_root, s, "held", &o);
    if (!rc) rc = vss_tree_build(p, s, UINT64_MAX, link_held_only, &x, 0);
    if (!rc && p->plan) {
        plan_drop(*p->plan);
        *p->plan = x.plan;
    } else {
        plan_drop(x.plan);
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

#define READ_WHOLE (64u << 10) /* files up to this size are read into memory at commit */

/* What the writers say of src at the freeze (Freeze's "stable"): what the shadow copy needs of
 * it stays readable through the file opened now until the session ends: its first *data_end
 * bytes, zeros from there to *size; *data_end -1 ("unchanged"): all of it. 0 when they say
 * nothing. */
static int stable_of(const vss_shadow_path *p, const char *src, uint64_t *size, int64_t *data_end)
{
    size_t i;
    json_t *f;
    json_array_foreach(p->stable, i, f)
    {
        if (strcmp(om_json_str_or(f, "path", ""), src)) continue;
        if (json_is_true(json_object_get(f, "unchanged"))) {
            *size = 0;
            *data_end = -1;
            return 1;
        }
        int64_t sz = om_json_int_or(f, "size", -1), de = om_json_int_or(f, "data_end", -1);
        if (sz < 0 || de < 0 || de > sz || de > (int64_t)(1u << 30)) return 0;
        *size = (uint64_t)sz;
        *data_end = de;
        return 1;
    }
    return 0;
}

/* Opens src without touching its access time where the kernel lets us (a read that updates it
 * dirties the inode, which can wait for the journal). */
static int open_quiet(const char *src)
{
    int fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    return fd;
}

static int read_fd(int fd, const char *src, uint8_t *buf, size_t n, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return vss_sys_err("reading", src);
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/* Reads the first n bytes of src (or what it has) into e. */
static int read_into(planned *e, int fd, const char *src, size_t n)
{
    if (!(e->data = malloc(n ? n : 1)))
        return om_errf(OM_E_OutOfMemory, "reading %s: out of memory", src);
    return read_fd(fd, src, e->data, n, &e->len);
}

/* One file of the plan during the freeze: gone since prepare is right (it was not there at the
 * freeze). A stable one is only opened (settle reads it); a small one is read into memory; a
 * large one is copied now. No file is created while writes are held: on a busy ext4 a create
 * can wait milliseconds for the journal. */
static int capture(const vss_shadow_path *p, vss_shadow *s, planned *e, uint64_t deadline_ns)
{
    char src[VSS_PATH_MAX], dst[VSS_PATH_MAX];
    struct stat st;
    uint64_t size = 0;
    int64_t data_end = -1;
    int rc = e->rel[0] ? vss_join(src, sizeof src, s->original, e->rel)
                       : vss_fmt_path(src, sizeof src, "%s", s->original);
    if (rc) return rc;
    if (lstat(src, &st) != 0) return errno == ENOENT ? 0 : vss_sys_err("reading", src);
    if (!S_ISREG(st.st_mode)) return 0;
    int stable = stable_of(p, src, &size, &data_end);
    if (!stable && (uint64_t)st.st_size > READ_WHOLE) {
        rc = e->rel[0] ? vss_join(dst, sizeof dst, s->exposed, e->rel)
                       : vss_fmt_path(dst, sizeof dst, "%s", s->exposed);
        if (!rc) rc = vss_copy_file_sparse(src, dst, &st, deadline_ns, &s->commit_bytes);
        if (!rc) s->commit_copies++;
        return rc;
    }
    int fd = open_quiet(src);
    if (fd < 0) return errno == ENOENT ? 0 : vss_sys_err("opening", src);
    e->times[0] = st.st_atim;
    e->times[1] = st.st_mtim;
    e->have = 1;
    s->commit_copies++;
    if (stable) { /* read after the thaw, through fd */
        e->fd = fd;
        e->size = size;
        e->data_end = data_end;
        return 0;
    }
    rc = read_into(e, fd, src, (size_t)st.st_size);
    close(fd);
    e->size = e->len; /* shrank meanwhile: what was read is the file */
    s->commit_bytes += e->len;
    return rc;
}

/* After the thaw, a stable file's part that matters, read through the descriptor commit
 * opened. */
static int read_stable(vss_shadow *s, planned *e)
{
    struct stat st;
    if (fstat(e->fd, &st) != 0) return vss_sys_err("reading", e->rel);
    size_t n = e->data_end < 0 ? (size_t)st.st_size : (size_t)e->data_end;
    if (e->data_end < 0) e->size = (uint64_t)st.st_size;
    int rc = read_into(e, e->fd, e->rel, n);
    close(e->fd);
    e->fd = -1;
    return rc;
}

/* After the thaw: the files commit read, written into the shadow copy. */
static int write_captured(vss_shadow *s, const planned *e)
{
    char dst[VSS_PATH_MAX];
    int rc = e->rel[0] ? vss_join(dst, sizeof dst, s->exposed, e->rel)
                       : vss_fmt_path(dst, sizeof dst, "%s", s->exposed);
    if (rc) return rc;
    int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return vss_sys_err("creating", dst);
    for (size_t done = 0; !rc && done < e->len;) {
        ssize_t w = pwrite(fd, e->data + done, e->len - done, (off_t)done);
        if (w < 0 && errno != EINTR) rc = vss_sys_err("writing", dst);
        if (w > 0) done += (size_t)w;
    }
    if (!rc && ftruncate(fd, (off_t)e->size) != 0) rc = vss_sys_err("sizing", dst);
    if (!rc && futimens(fd, e->times) != 0) rc = vss_sys_err("setting the times of", dst);
    if (close(fd) != 0 && !rc) rc = vss_sys_err("closing", dst);
    return rc;
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
    if (link(held, dst) == 0 || errno == EEXIST) return 0;
    if (errno == ENOENT)
        return om_errf(OM_E_ProviderVeto, "held shadow copy of %s: the held file %s is missing",
                       s->original, held);
    return vss_op_err("linking", held, dst);
}

/* During the freeze only what changes after it is read (the plan: checkpoint, current log);
 * the held files are not looked at: those prepare linked stay, those finished since (the
 * writers name them, held_new_only) are linked by settle, as they never change either. */
static int held_commit(const vss_shadow_path *p, vss_shadow *s, uint64_t deadline_ns)
{
    s->commit_links = s->commit_copies = 0;
    s->commit_bytes = 0;
    held_plan *pl = p->plan ? *p->plan : NULL;
    if (!p->held_new_only || !pl) return held_commit_walk(p, s, deadline_ns);
    int rc = 0;
    for (size_t i = 0; !rc && i < pl->n; i++) {
        rc = vss_check_deadline(deadline_ns, s->original);
        if (!rc) rc = capture(p, s, &pl->v[i], deadline_ns);
    }
    if (!rc) {
        s->created_ns = om_now_ns();
        pl->committed = 1;
    }
    return rc ? om_err_ctx(rc, "held shadow copy of %s", s->original) : 0;
}

static int held_settle(const vss_shadow_path *p, vss_shadow *s)
{
    held_plan *pl = p->plan ? *p->plan : NULL;
    if (!pl || !pl->committed) return 0; /* commit walked the tree: nothing left */
    int rc = 0;
    for (size_t i = 0; !rc && i < pl->n; i++) {
        planned *e = &pl->v[i];
        if (e->have && e->fd >= 0) rc = read_stable(s, e);
        if (!rc && e->have) rc = write_captured(s, e);
    }
    for (size_t k = 0; !rc && k < p->nheld; k++)
        rc = link_new(p, s, p->held[k]);
    return rc ? om_err_ctx(rc, "held shadow copy of %s", s->original) : 0;
}

const vss_provider vss_held_provider = {
    .name = "held",
    .supports = held_supports,
    .prepare = held_prepare,
    .commit = held_commit,
    .settle = held_settle,
    .expose = vss_tree_expose,
    .remove = vss_tree_remove,
    .drop_plan = plan_drop,
};

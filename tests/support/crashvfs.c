/* crashvfs: an in-memory om_vfs that loses power at the Nth sync (see crashvfs.h).
 *
 * The model: what is durable when.
 *
 * Files (cv_inode). `data` is the current content, what reads see (a page cache). The durable
 * content is not kept as a second copy: it is `data` itself for every 4 KiB block that is
 * clean, and `blk[b].old` for a block changed since the file's last sync. The first change to
 * a block after a sync copies that block's durable bytes aside (copy on first dirty), so a
 * write costs its own size plus at most one 4 KiB copy per block, and a sync costs the number
 * of dirty blocks, never the size of the file. `dsize` is the durable size, `size` the
 * current one. An unsynced shrink leaves the bytes past `size` in `data`, because up to
 * `dsize` they are still durable content of clean blocks; growing again zero-fills them as a
 * change like any write.
 *
 *   write/resize  -> block dirty, old bytes kept in blk[b].old     (inode_change)
 *   sync          -> every block clean, dsize = size               (inode_sync)
 *   reboot        -> each dirty block kept, dropped or garbled;
 *                    size = dsize or size; then all clean          (inode_reboot)
 *
 * Names. Two namespaces: `visible`, which every method reads and changes at once, and
 * `durable`, what a reboot starts from. Every name change (create, mkdir, unlink, rename) is
 * also appended to `ops`, the pending list, in order. sync_dir(d) moves the operations that
 * touch d, and the earlier ones they depend on, from `ops` into `durable` (dir_sync);
 * a reboot applies a random prefix of what is left (names_reboot). This is stricter than
 * committing the whole list up to d's last operation, as ext4's journal would: a missing
 * sync_dir of one directory is not hidden by a sync_dir of another. Directories are never
 * renamed, and removed only when empty, so a dependency is simply a shared name, the mkdir of
 * a parent, or (for the rmdir of a directory) an operation on a name inside it.
 *
 * Directory handles (om_dir) hold their directory's path: every *_at method works on
 * path + "/" + name. There are no symbolic links here, so "never follow a link" is trivially
 * kept; what the handles add is the name rules (one component) and the same durability as
 * the path methods. A handle to a directory that was removed fails (no such directory), and
 * one whose path was made again names the new directory: a simplification of POSIX that the
 * code under test never relies on.
 *
 * An inode lives while a name (visible or durable), a pending operation or an open handle
 * refers to it: `refs` counts them all. A reboot detaches every handle (ino = NULL), so the
 * inodes left are exactly those of the durable names.
 *
 * Power loss: `syncs` counts sync calls; the one that reaches `crash_at` sets `crashed` and
 * fails without doing anything; from then on every method fails with OM_E_Crashed until
 * crashvfs_reboot().
 *
 * One mutex (`mu`) guards everything, including the handles' fields. list() calls its
 * callback after releasing it, so a callback may use the VFS. */
#include "crashvfs.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"

#define CV_BLOCK    4096u
#define CV_PATH_MAX 4096
/* What free_space() reports without a limit: plenty, but far from overflowing a sum. */
#define CV_UNLIMITED_FREE ((uint64_t)1 << 40)
/* Files are held in memory; a larger size is surely a bug in the caller's arithmetic. */
#define CV_MAX_FILE ((uint64_t)1 << 36)

typedef struct cv_link {
    struct cv_link *prev, *next;
} cv_link;

/* One 4 KiB block of a file, as far as durability is concerned. */
typedef struct cv_block {
    /* The block as it was at its first change since the last sync, of which the first
     * min(4096, dsize - start) bytes are durable content; NULL when the block starts at or
     * past dsize. */
    uint8_t *old;
    uint16_t lo, hi; /* [lo, hi): the bytes changed since the last sync */
    uint8_t dirty;
} cv_block;

typedef struct cv_inode {
    cv_link link; /* first: in crashvfs.inodes, creation order */
    int refs;     /* visible and durable names, pending operations, open handles */
    int visible;  /* visible names (0 or 1): counts towards the space limit */
    int nopen;    /* open handles: an unlinked open file still takes space */
    uint8_t *data;
    size_t cap; /* a multiple of CV_BLOCK, never below max(size, dsize) */
    uint64_t size, dsize;
    cv_block *blk; /* cap / CV_BLOCK entries */
    size_t *dirty; /* indexes of the dirty blocks, so a sync need not scan the file */
    size_t ndirty, dirty_cap;
    struct cv_inode *copy; /* scratch for crashvfs_clone */
    /* The stamp (om_stamp): id for the inode number, version (from crashvfs.clock) for the
     * times: a new one at every write or resize, and at a reboot that changed the content. */
    uint64_t id, version;
} cv_inode;

typedef struct cv_entry {
    char *path;
    cv_inode *ino; /* NULL: a directory */
} cv_entry;

typedef struct cv_ns {
    cv_entry *e;
    size_t n, cap;
    int is_visible; /* maintains cv_inode.visible */
} cv_ns;

enum { OP_CREATE, OP_MKDIR, OP_UNLINK, OP_RENAME, OP_RMDIR, OP_RENAME_DIR };

typedef struct cv_op {
    int kind;
    char *path;
    char *to;      /* OP_RENAME: the new name */
    cv_inode *ino; /* OP_CREATE: the new file */
    int mark;      /* scratch for dir_sync */
} cv_op;

typedef struct cv_file {
    om_file base;
    cv_link link; /* in crashvfs.files while ino != NULL */
    struct crashvfs *c;
    cv_inode *ino; /* NULL once a reboot has detached the handle */
    int rdonly;
} cv_file;

struct crashvfs {
    om_vfs vfs; /* first: the methods get back to the crashvfs with a cast */
    pthread_mutex_t mu;
    uint64_t rng;
    uint64_t syncs, crash_at; /* power is lost when syncs reaches crash_at (0: never) */
    int crashed;
    uint64_t limit;
    unsigned sync_delay_us; /* each file sync takes this long, as a disk's would */
    int fail[CRASHVFS_NOPS];
    cv_ns visible, durable;
    cv_op *ops;
    size_t nops, ops_cap;
    cv_link inodes, files;
    uint64_t clock; /* the last inode id or version given */
};

/* ---- small helpers ---- */

static void lock(crashvfs *c)
{
    pthread_mutex_lock(&c->mu);
}
static void unlock(crashvfs *c)
{
    pthread_mutex_unlock(&c->mu);
}

static void link_init(cv_link *l)
{
    l->prev = l->next = l;
}
static void link_add_tail(cv_link *head, cv_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}
static void link_del(cv_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

static cv_file *file_of(cv_link *l)
{
    return (cv_file *)((char *)l - offsetof(cv_file, link));
}

/* splitmix64: tiny, and good enough to pick outcomes and garbage. */
static uint64_t rnd(crashvfs *c)
{
    uint64_t z = (c->rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}
static uint64_t rnd_below(crashvfs *c, uint64_t n)
{
    return rnd(c) % n;
}

static int oom(const char *what, const char *path)
{
    return om_errf(OM_E_OutOfMemory, "%s %s: out of memory", what, path);
}

/* Paths are compared as strings, so they are first brought to one spelling: "/a/b", no
 * repeated or trailing slash. "." and ".." are refused rather than resolved: the engine
 * never makes them, and refusing keeps "one spelling per file" trivially true. */
static int norm_path(const char *in, char *out, const char *what)
{
    if (!in || in[0] != '/')
        return om_errf(OM_E_InvalidPath, "%s %s: crashvfs paths must be absolute", what,
                       in ? in : "(null)");
    size_t o = 0;
    const char *p = in;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
            return om_errf(OM_E_InvalidPath, "%s %s: '.' and '..' are not supported", what, in);
        if (o + 1 + len + 1 > CV_PATH_MAX)
            return om_errf(OM_E_InvalidPath, "%s %s: path too long", what, in);
        out[o++] = '/';
        memcpy(out + o, s, len);
        o += len;
    }
    if (o == 0) out[o++] = '/';
    out[o] = 0;
    return 0;
}

/* Is d the directory that holds the name p? (p is normalised and not "/".) */
static int parent_is(const char *p, const char *d)
{
    size_t k = (size_t)(strrchr(p, '/') - p);
    if (k == 0) return strcmp(d, "/") == 0;
    return strlen(d) == k && memcmp(p, d, k) == 0;
}

/* Is p strictly below the directory d? */
static int under(const char *p, const char *d)
{
    size_t k = strlen(d);
    if (!strcmp(d, "/")) return strcmp(p, "/") != 0;
    return strlen(p) > k && !memcmp(p, d, k) && p[k] == '/';
}

static void parent_of(const char *p, char *out)
{
    size_t k = (size_t)(strrchr(p, '/') - p);
    if (k == 0) k = 1;
    memcpy(out, p, k);
    out[k] = 0;
}

/* ---- inodes ---- */

static cv_inode *inode_new(crashvfs *c)
{
    cv_inode *ino = calloc(1, sizeof *ino);
    if (!ino) return NULL;
    link_add_tail(&c->inodes, &ino->link);
    ino->id = ino->version = ++c->clock;
    return ino;
}

static void inode_clean(cv_inode *ino)
{
    for (size_t i = 0; i < ino->ndirty; i++) {
        cv_block *b = &ino->blk[ino->dirty[i]];
        free(b->old);
        memset(b, 0, sizeof *b);
    }
    ino->ndirty = 0;
}

static void inode_unref(cv_inode *ino)
{
    if (!ino || --ino->refs > 0) return;
    inode_clean(ino);
    link_del(&ino->link);
    free(ino->data);
    free(ino->blk);
    free(ino->dirty);
    free(ino);
}

static int inode_reserve(cv_inode *ino, uint64_t need)
{
    if (need <= ino->cap) return 0;
    size_t cap = ino->cap ? ino->cap : 4 * CV_BLOCK;
    while (cap < need)
        cap *= 2;
    uint8_t *data = realloc(ino->data, cap);
    if (!data) return -1;
    ino->data = data;
    cv_block *blk = realloc(ino->blk, cap / CV_BLOCK * sizeof *blk);
    if (!blk) return -1; /* data grew, harmlessly: cap stays what blk covers */
    /* Zeroed so that the whole-block copies of inode_change never read uninitialised bytes. */
    memset(data + ino->cap, 0, cap - ino->cap);
    memset(blk + ino->cap / CV_BLOCK, 0, (cap - ino->cap) / CV_BLOCK * sizeof *blk);
    ino->blk = blk;
    ino->cap = cap;
    return 0;
}

/* Called before bytes [from, to) of data change: saves the durable bytes of every block
 * changed for the first time since the last sync. Marking a block that then does not change
 * is harmless (its saved bytes equal its content), so a failure here leaves a valid state. */
static int inode_change(cv_inode *ino, uint64_t from, uint64_t to)
{
    for (size_t b = (size_t)(from / CV_BLOCK); (uint64_t)b * CV_BLOCK < to; b++) {
        uint64_t start = (uint64_t)b * CV_BLOCK;
        uint16_t lo = (uint16_t)(from > start ? from - start : 0);
        uint16_t hi = (uint16_t)(to - start < CV_BLOCK ? to - start : CV_BLOCK);
        cv_block *blk = &ino->blk[b];
        if (blk->dirty) {
            if (lo < blk->lo) blk->lo = lo;
            if (hi > blk->hi) blk->hi = hi;
            continue;
        }
        if (ino->ndirty == ino->dirty_cap) {
            size_t n = ino->dirty_cap ? 2 * ino->dirty_cap : 16;
            size_t *d = realloc(ino->dirty, n * sizeof *d);
            if (!d) return -1;
            ino->dirty = d;
            ino->dirty_cap = n;
        }
        if (start < ino->dsize) {
            /* Only the part before dsize matters; the whole block is as cheap to copy. */
            if (!(blk->old = malloc(CV_BLOCK))) return -1;
            memcpy(blk->old, ino->data + start, CV_BLOCK);
        }
        blk->dirty = 1;
        blk->lo = lo;
        blk->hi = hi;
        ino->dirty[ino->ndirty++] = b;
    }
    return 0;
}

static void inode_sync(cv_inode *ino)
{
    inode_clean(ino);
    ino->dsize = ino->size;
}

/* Total size of the files a running system sees: named ones and unlinked ones still open. */
static uint64_t space_used(crashvfs *c)
{
    uint64_t used = 0;
    for (cv_link *l = c->inodes.next; l != &c->inodes; l = l->next) {
        cv_inode *ino = (cv_inode *)l;
        if (ino->visible || ino->nopen) used += ino->size;
    }
    return used;
}

/* Growing the file at path from its size to `to`: refused as a full disk would, before
 * anything changes. */
static int grow_check(crashvfs *c, cv_inode *ino, uint64_t to, const char *what, const char *path)
{
    if (to > CV_MAX_FILE)
        return om_errf(OM_E_DiskFull, "%s %s: size %llu is past the crashvfs maximum file size",
                       what, path, (unsigned long long)to);
    if (!c->limit || to <= ino->size) return 0;
    uint64_t used = space_used(c), grow = to - ino->size;
    if (used + grow > c->limit)
        return om_errf(OM_E_DiskFull,
                       "%s %s: %llu more bytes do not fit: %llu of %llu used. HINT: the "
                       "crashvfs space limit is set",
                       what, path, (unsigned long long)grow, (unsigned long long)used,
                       (unsigned long long)c->limit);
    return 0;
}

/* Zero-fills [size, to) as a change: the bytes there may be stale ones kept by a shrink. */
static int inode_extend(cv_inode *ino, uint64_t to)
{
    if (to <= ino->size) return 0;
    uint64_t fresh = ino->cap; /* inode_reserve zeroes what it adds: no need to do it twice */
    if (inode_reserve(ino, to) || inode_change(ino, ino->size, to)) return -1;
    if (ino->size < fresh)
        memset(ino->data + ino->size, 0, (size_t)((to < fresh ? to : fresh) - ino->size));
    ino->size = to;
    return 0;
}

/* How many bytes of block b lie below the durable size (those are saved in blk[b].old). */
static size_t durable_len(const cv_inode *ino, size_t b)
{
    uint64_t start = (uint64_t)b * CV_BLOCK;
    if (start >= ino->dsize) return 0;
    return ino->dsize - start < CV_BLOCK ? (size_t)(ino->dsize - start) : CV_BLOCK;
}

/* A torn write: random bytes over a random part of what changed in the block. Bytes equal to
 * their durable value are left alone, because they may be bytes that were synced and never
 * rewritten (lo..hi is only the hull of the changes), and the contract promises those. */
static void block_garble(crashvfs *c, cv_inode *ino, size_t b)
{
    cv_block *blk = &ino->blk[b];
    uint8_t *p = ino->data + (uint64_t)b * CV_BLOCK, noise[CV_BLOCK];
    size_t dlen = durable_len(ino, b), a = blk->lo, e = blk->hi;
    if (rnd_below(c, 2)) {
        a = blk->lo + (size_t)rnd_below(c, (uint64_t)(blk->hi - blk->lo));
        e = a + 1 + (size_t)rnd_below(c, (uint64_t)(blk->hi - a));
    }
    /* Eight random bytes per draw: this runs over every garbled block of every reboot. */
    for (size_t i = a; i < e; i += 8) {
        uint64_t r = rnd(c);
        memcpy(noise + i, &r, e - i < 8 ? e - i : 8);
    }
    for (size_t i = a; i < e; i++)
        if (i >= dlen || p[i] != blk->old[i]) p[i] = noise[i];
}

static void block_drop(cv_inode *ino, size_t b)
{
    uint8_t *p = ino->data + (uint64_t)b * CV_BLOCK;
    size_t len = durable_len(ino, b);
    if (len) memcpy(p, ino->blk[b].old, len);
    memset(p + len, 0, CV_BLOCK - len);
}

static void inode_reboot(crashvfs *c, cv_inode *ino)
{
    uint64_t size = ino->dsize;
    if (ino->ndirty || ino->size != ino->dsize) ino->version = ++c->clock;
    if (ino->size != ino->dsize && rnd_below(c, 2)) size = ino->size;
    for (size_t i = 0; i < ino->ndirty; i++) {
        size_t b = ino->dirty[i];
        switch (rnd_below(c, 3)) {
        case 0: /* the block reached the disk */
            break;
        case 1:
            block_drop(ino, b);
            break;
        default:
            block_garble(c, ino, b);
            break;
        }
    }
    inode_clean(ino);
    ino->size = ino->dsize = size;
}

/* A copy of src in c; NULL when out of memory, leaving an unreferenced inode for the caller
 * to sweep. */
static cv_inode *inode_copy(crashvfs *c, const cv_inode *src)
{
    cv_inode *ino = inode_new(c);
    if (!ino) return NULL;
    ino->size = src->size;
    ino->dsize = src->dsize;
    ino->id = src->id;
    ino->version = src->version;
    if (src->cap) {
        ino->data = malloc(src->cap);
        ino->blk = calloc(src->cap / CV_BLOCK, sizeof *ino->blk);
        if (!ino->data || !ino->blk) return NULL;
        memcpy(ino->data, src->data, src->cap);
        ino->cap = src->cap;
    }
    if (src->ndirty && !(ino->dirty = malloc(src->ndirty * sizeof *ino->dirty))) return NULL;
    ino->dirty_cap = src->ndirty;
    for (size_t i = 0; i < src->ndirty; i++) {
        size_t b = src->dirty[i];
        cv_block *blk = &ino->blk[b];
        *blk = src->blk[b];
        blk->old = NULL;
        ino->dirty[ino->ndirty++] = b;
        if (src->blk[b].old) {
            if (!(blk->old = malloc(CV_BLOCK))) return NULL;
            memcpy(blk->old, src->blk[b].old, CV_BLOCK);
        }
    }
    return ino;
}

/* ---- namespaces ---- */

static cv_entry *ns_find(const cv_ns *ns, const char *path)
{
    for (size_t i = 0; i < ns->n; i++)
        if (!strcmp(ns->e[i].path, path)) return &ns->e[i];
    return NULL;
}

static int ns_reserve(cv_ns *ns)
{
    if (ns->n < ns->cap) return 0;
    size_t cap = ns->cap ? 2 * ns->cap : 16;
    cv_entry *e = realloc(ns->e, cap * sizeof *e);
    if (!e) return -1;
    ns->e = e;
    ns->cap = cap;
    return 0;
}

static void ns_hold(cv_ns *ns, cv_inode *ino)
{
    if (!ino) return;
    ino->refs++;
    if (ns->is_visible) ino->visible++;
}

static void ns_release(cv_ns *ns, cv_inode *ino)
{
    if (!ino) return;
    if (ns->is_visible) ino->visible--;
    inode_unref(ino);
}

/* Points path at ino (NULL: a directory), replacing what was there. Takes ownership of path;
 * the caller has reserved room for a new entry. */
static void ns_put(cv_ns *ns, char *path, cv_inode *ino)
{
    ns_hold(ns, ino);
    cv_entry *e = ns_find(ns, path);
    if (e) {
        free(path);
        ns_release(ns, e->ino);
        e->ino = ino;
        return;
    }
    ns->e[ns->n++] = (cv_entry){path, ino};
}

static void ns_del(cv_ns *ns, const char *path)
{
    cv_entry *e = ns_find(ns, path);
    if (!e) return;
    cv_entry gone = *e;
    *e = ns->e[--ns->n];
    free(gone.path);
    ns_release(ns, gone.ino);
}

static void ns_clear(cv_ns *ns)
{
    while (ns->n)
        ns_del(ns, ns->e[ns->n - 1].path);
}

/* Makes dst a copy of src; with map, inodes are translated through cv_inode.copy. */
static int ns_copy(cv_ns *dst, const cv_ns *src, int map)
{
    for (size_t i = 0; i < src->n; i++) {
        char *p = strdup(src->e[i].path);
        if (!p || ns_reserve(dst)) {
            free(p);
            return -1;
        }
        cv_inode *ino = src->e[i].ino;
        ns_put(dst, p, map && ino ? ino->copy : ino);
    }
    return 0;
}

/* Renames the directory from, and every name below it, to to (anything at or below to is
 * dropped first). Allocation failure leaves the names as they were. */
static int ns_move_dir(cv_ns *ns, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    for (size_t i = ns->n; i-- > 0;)
        if (!strcmp(ns->e[i].path, to) || under(ns->e[i].path, to)) ns_del(ns, ns->e[i].path);
    char **np = calloc(ns->n + 1, sizeof *np);
    int rc = np ? 0 : -1;
    for (size_t i = 0; !rc && i < ns->n; i++) {
        const char *p = ns->e[i].path;
        if (strcmp(p, from) && !under(p, from)) continue;
        if (!(np[i] = malloc(tl + strlen(p) - fl + 1))) rc = -1;
        if (!rc) memcpy(np[i], to, tl);
        if (!rc) strcpy(np[i] + tl, p + fl);
    }
    for (size_t i = 0; np && i < ns->n; i++) {
        if (!np[i]) continue;
        if (rc) {
            free(np[i]);
            continue;
        }
        free(ns->e[i].path);
        ns->e[i].path = np[i];
    }
    free(np);
    return rc;
}

/* 1 for a file, 2 for a directory, 0 for nothing. */
static int kind_of(const crashvfs *c, const char *path, cv_inode **ino)
{
    if (ino) *ino = NULL;
    if (!strcmp(path, "/")) return 2;
    cv_entry *e = ns_find(&c->visible, path);
    if (!e) return 0;
    if (ino) *ino = e->ino;
    return e->ino ? 1 : 2;
}

/* The directory that would hold a new name at path must exist. */
static int parent_check(const crashvfs *c, const char *path, const char *what)
{
    char dir[CV_PATH_MAX];
    parent_of(path, dir);
    switch (kind_of(c, dir, NULL)) {
    case 2:
        return 0;
    case 1:
        return om_errf(OM_E_InvalidPath, "%s %s: %s is not a directory", what, path, dir);
    default:
        return om_errf(OM_E_FileNotFound, "%s %s: directory %s does not exist", what, path, dir);
    }
}

/* ---- pending name operations ---- */

static int ops_reserve(crashvfs *c)
{
    if (c->nops < c->ops_cap) return 0;
    size_t cap = c->ops_cap ? 2 * c->ops_cap : 16;
    cv_op *ops = realloc(c->ops, cap * sizeof *ops);
    if (!ops) return -1;
    c->ops = ops;
    c->ops_cap = cap;
    return 0;
}

/* Appends an operation; path and to are copied. Nothing changes on failure. */
static int ops_add(crashvfs *c, int kind, const char *path, const char *to, cv_inode *ino)
{
    cv_op op = {kind, strdup(path), to ? strdup(to) : NULL, ino, 0};
    if (!op.path || (to && !op.to) || ops_reserve(c)) {
        free(op.path);
        free(op.to);
        return -1;
    }
    if (ino) ino->refs++;
    c->ops[c->nops++] = op;
    return 0;
}

static void op_free(cv_op *op)
{
    free(op->path);
    free(op->to);
    inode_unref(op->ino);
}

/* Replays op on the durable names. The operations it depends on are already there (dir_sync
 * and reboots only ever apply a set closed under dependencies, in order), so durable holds for
 * op's names what visible held when op was made. Allocation failure leaves durable without
 * the change, as if the journal had not committed it. */
static void op_apply(cv_ns *durable, const cv_op *op)
{
    char *p = strdup(op->kind == OP_RENAME ? op->to : op->path);
    if (!p || ns_reserve(durable)) {
        free(p);
        return;
    }
    switch (op->kind) {
    case OP_CREATE:
        ns_put(durable, p, op->ino);
        break;
    case OP_MKDIR:
        ns_put(durable, p, NULL);
        break;
    case OP_UNLINK:
    case OP_RMDIR:
        free(p);
        ns_del(durable, op->path);
        break;
    case OP_RENAME_DIR:
        free(p);
        if (ns_find(durable, op->path)) ns_move_dir(durable, op->path, op->to);
        break;
    case OP_RENAME: {
        cv_entry *e = ns_find(durable, op->path);
        if (!e) {
            free(p);
            break;
        }
        ns_put(durable, p, e->ino);
        ns_del(durable, op->path);
        break;
    }
    }
}

static int op_touches(const cv_op *op, const char *dir)
{
    return parent_is(op->path, dir) || (op->to && parent_is(op->to, dir));
}

/* Must `earlier` be durable before `later` can be? Yes when they share a name (the later one
 * builds on what the earlier one left there), or when `earlier` made the directory a name of
 * `later` lives in. */
static int op_depends(const cv_op *later, const cv_op *earlier)
{
    const char *lp[2] = {later->path, later->to}, *ep[2] = {earlier->path, earlier->to};
    for (int i = 0; i < 2 && lp[i]; i++) {
        for (int j = 0; j < 2 && ep[j]; j++)
            if (!strcmp(lp[i], ep[j])) return 1;
        if (earlier->kind == OP_MKDIR && parent_is(lp[i], earlier->path)) return 1;
    }
    /* A directory moves with what is in it: what was made below it comes first; what is made
     * below its new name later comes after it. */
    for (int j = 0; later->kind == OP_RENAME_DIR && j < 2 && ep[j]; j++)
        if (under(ep[j], later->path) || under(ep[j], later->to)) return 1;
    for (int i = 0; earlier->kind == OP_RENAME_DIR && i < 2 && lp[i]; i++)
        if (under(lp[i], earlier->path) || under(lp[i], earlier->to)) return 1;
    /* A directory is removed once empty: what emptied it (and made its names) comes first. */
    for (int j = 0; later->kind == OP_RMDIR && j < 2 && ep[j]; j++)
        if (strcmp(ep[j], "/") && parent_is(ep[j], later->path)) return 1;
    return 0;
}

/* sync_dir(dir): the pending operations in dir, and the ones they depend on, become durable.
 * The rest stays pending, in order. */
static void dir_sync(crashvfs *c, const char *dir)
{
    for (size_t i = 0; i < c->nops; i++)
        c->ops[i].mark = op_touches(&c->ops[i], dir);
    /* Walking down, every marked operation marks its dependencies before they are reached. */
    for (size_t j = c->nops; j-- > 0;) {
        if (!c->ops[j].mark) continue;
        for (size_t i = 0; i < j; i++)
            if (!c->ops[i].mark && op_depends(&c->ops[j], &c->ops[i])) c->ops[i].mark = 1;
    }
    size_t kept = 0;
    for (size_t i = 0; i < c->nops; i++) {
        if (c->ops[i].mark) {
            op_apply(&c->durable, &c->ops[i]);
            op_free(&c->ops[i]);
        } else {
            c->ops[kept++] = c->ops[i];
        }
    }
    c->nops = kept;
}

static void ops_clear(crashvfs *c)
{
    for (size_t i = 0; i < c->nops; i++)
        op_free(&c->ops[i]);
    c->nops = 0;
}

/* ---- checks every method starts with ---- */

static int crashed_check(crashvfs *c, const char *what, const char *path)
{
    if (c->crashed) return om_errf(OM_E_Crashed, "%s %s: simulated power loss", what, path);
    return 0;
}

static int injected(crashvfs *c, int op, const char *what, const char *path)
{
    int err = c->fail[op];
    if (!err) return 0;
    c->fail[op] = 0;
    return om_errf(err, "%s %s: injected failure", what, path);
}

/* A sync call: counted, and the one where the power goes. */
static int sync_point(crashvfs *c, const char *what, const char *path)
{
    c->syncs++;
    if (c->crash_at && c->syncs == c->crash_at) {
        c->crashed = 1;
        return om_errf(OM_E_Crashed, "%s %s: simulated power loss at sync call %llu", what, path,
                       (unsigned long long)c->syncs);
    }
    return 0;
}

static int handle_check(cv_file *f, const char *what)
{
    int rc = crashed_check(f->c, what, f->base.path);
    if (!rc && !f->ino)
        rc = om_errf(OM_E_Crashed, "%s %s: handle opened before the simulated power loss", what,
                     f->base.path);
    return rc;
}

/* ---- file methods ---- */

static int cv_close(om_file *bf)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    if (f->ino) {
        link_del(&f->link);
        f->ino->nopen--;
        inode_unref(f->ino);
    }
    unlock(f->c);
    free(bf->path);
    free(f);
    return 0;
}

static int cv_pread(om_file *bf, void *buf, size_t n, uint64_t off, size_t *got)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    int rc = handle_check(f, "reading");
    if (!rc) rc = injected(f->c, CRASHVFS_READ, "reading", bf->path);
    if (!rc) {
        uint64_t size = f->ino->size;
        size_t k = off >= size ? 0 : (size - off < n ? (size_t)(size - off) : n);
        if (k) memcpy(buf, f->ino->data + off, k);
        *got = k;
    }
    unlock(f->c);
    return rc;
}

static int write_locked(cv_file *f, const void *buf, size_t n, uint64_t off)
{
    cv_inode *ino = f->ino;
    const char *path = f->base.path;
    if (f->rdonly) return om_errf(OM_E_FileAccessDenied, "writing %s: opened read-only", path);
    if (n == 0) return 0;
    if (off > CV_MAX_FILE || n > CV_MAX_FILE - off)
        return om_errf(OM_E_DiskFull,
                       "writing %s: offset %llu is past the crashvfs maximum file size", path,
                       (unsigned long long)off);
    int rc = grow_check(f->c, ino, off + n, "writing", path);
    if (rc) return rc;
    if (inode_reserve(ino, off + n) || inode_change(ino, off, off + n) || inode_extend(ino, off))
        return oom("writing", path);
    memcpy(ino->data + off, buf, n);
    if (off + n > ino->size) ino->size = off + n;
    ino->version = ++f->c->clock;
    return 0;
}

static int cv_pwrite(om_file *bf, const void *buf, size_t n, uint64_t off)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    int rc = handle_check(f, "writing");
    if (!rc) rc = injected(f->c, CRASHVFS_WRITE, "writing", bf->path);
    if (!rc) rc = write_locked(f, buf, n, off);
    unlock(f->c);
    return rc;
}

static int cv_sync(om_file *bf)
{
    cv_file *f = (cv_file *)bf;
    /* Outside the lock: a slow disk does not stop other threads from using the VFS. */
    unsigned delay = __atomic_load_n(&f->c->sync_delay_us, __ATOMIC_RELAXED);
    if (delay) usleep(delay);
    lock(f->c);
    int rc = handle_check(f, "syncing");
    if (!rc) rc = sync_point(f->c, "syncing", bf->path);
    if (!rc) rc = injected(f->c, CRASHVFS_SYNC, "syncing", bf->path);
    if (!rc) inode_sync(f->ino);
    unlock(f->c);
    return rc;
}

static int cv_size(om_file *bf, uint64_t *size)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    int rc = handle_check(f, "stat of");
    if (!rc) *size = f->ino->size;
    unlock(f->c);
    return rc;
}

static int cv_stamp(om_file *bf, om_stamp *out)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    int rc = handle_check(f, "stat of");
    if (!rc) *out = (om_stamp){f->ino->id, f->ino->size, f->ino->version, f->ino->version};
    unlock(f->c);
    return rc;
}

static int resize_locked(cv_file *f, uint64_t size)
{
    const char *path = f->base.path;
    if (f->rdonly) return om_errf(OM_E_FileAccessDenied, "resizing %s: opened read-only", path);
    int rc = grow_check(f->c, f->ino, size, "resizing", path);
    if (rc) return rc;
    f->ino->version = ++f->c->clock;
    if (size < f->ino->size) {
        f->ino->size = size; /* the bytes stay in data: they may still be durable content */
        return 0;
    }
    return inode_extend(f->ino, size) ? oom("resizing", path) : 0;
}

static int cv_resize(om_file *bf, uint64_t size)
{
    cv_file *f = (cv_file *)bf;
    lock(f->c);
    int rc = handle_check(f, "resizing");
    if (!rc) rc = injected(f->c, CRASHVFS_RESIZE, "resizing", bf->path);
    if (!rc) rc = resize_locked(f, size);
    unlock(f->c);
    return rc;
}

/* ---- namespace methods ---- */

static int open_locked(crashvfs *c, const char *path, int flags, om_file **out)
{
    cv_inode *ino;
    int kind = kind_of(c, path, &ino);
    if (kind == 2) return om_errf(OM_E_InvalidPath, "opening %s: is a directory", path);
    if (kind == 1 && (flags & OM_O_CREATE) && (flags & OM_O_EXCL))
        return om_errf(OM_E_FileAlreadyExists, "opening %s: file already exists", path);
    if (kind == 0 && !(flags & OM_O_CREATE))
        return om_errf(OM_E_FileNotFound, "opening %s: no such file", path);
    int rc = kind == 0 ? parent_check(c, path, "opening") : 0;
    if (rc) return rc;

    cv_file *f = calloc(1, sizeof *f);
    char *name = kind == 0 ? strdup(path) : NULL;
    if (!f || !(f->base.path = strdup(path)) || (kind == 0 && !name) || ns_reserve(&c->visible))
        goto fail;
    if (kind == 0) {
        if (!(ino = inode_new(c))) goto fail;
        if (ops_add(c, OP_CREATE, path, NULL, ino)) {
            ino->refs = 1; /* nothing refers to it yet: let the last unref free it */
            inode_unref(ino);
            goto fail;
        }
        ns_put(&c->visible, name, ino);
    }
    f->base.vfs = &c->vfs;
    f->c = c;
    f->ino = ino;
    f->rdonly = !!(flags & OM_O_RDONLY);
    ino->refs++;
    ino->nopen++;
    link_add_tail(&c->files, &f->link);
    *out = &f->base;
    return 0;
fail:
    free(name);
    if (f) free(f->base.path);
    free(f);
    return oom("opening", path);
}

static int cv_open(om_vfs *v, const char *path, int flags, om_file **out)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "opening", path);
    if (!rc) rc = injected(c, CRASHVFS_OPEN, "opening", path);
    if (!rc) rc = norm_path(path, p, "opening");
    if (!rc) rc = open_locked(c, p, flags, out);
    unlock(c);
    return rc;
}

static int rename_locked(crashvfs *c, const char *from, const char *to)
{
    cv_inode *ino;
    int kind = kind_of(c, from, &ino);
    if (kind == 0) return om_errf(OM_E_FileNotFound, "renaming %s to %s: no such file", from, to);
    if (!strcmp(from, to)) return 0;
    if (kind == 2) {
        if (under(to, from))
            return om_errf(OM_E_InvalidPath, "renaming %s to %s: into itself", from, to);
        if (kind_of(c, to, NULL) != 0)
            return om_errf(OM_E_FileAlreadyExists,
                           "renaming directory %s to %s: crashvfs renames a directory only to a "
                           "free name",
                           from, to);
        int rc = parent_check(c, to, "renaming to");
        if (rc) return rc;
        if (ops_add(c, OP_RENAME_DIR, from, to, NULL)) return oom("renaming", from);
        if (ns_move_dir(&c->visible, from, to)) {
            op_free(&c->ops[--c->nops]);
            return oom("renaming", from);
        }
        return 0;
    }
    if (kind_of(c, to, NULL) == 2)
        return om_errf(OM_E_InvalidPath, "renaming %s to %s: target is a directory", from, to);
    int rc = parent_check(c, to, "renaming to");
    if (rc) return rc;
    char *name = strdup(to);
    if (!name || ns_reserve(&c->visible) || ops_add(c, OP_RENAME, from, to, NULL)) {
        free(name);
        return oom("renaming", from);
    }
    ns_put(&c->visible, name, ino);
    ns_del(&c->visible, from);
    return 0;
}

static int cv_rename(om_vfs *v, const char *from, const char *to)
{
    crashvfs *c = (crashvfs *)v;
    char pf[CV_PATH_MAX], pt[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "renaming", from);
    if (!rc) rc = injected(c, CRASHVFS_RENAME, "renaming", from);
    if (!rc) rc = norm_path(from, pf, "renaming");
    if (!rc) rc = norm_path(to, pt, "renaming to");
    if (!rc) rc = rename_locked(c, pf, pt);
    unlock(c);
    return rc;
}

static int unlink_locked(crashvfs *c, const char *path)
{
    int kind = kind_of(c, path, NULL);
    if (kind == 0) return om_errf(OM_E_FileNotFound, "removing %s: no such file", path);
    if (kind == 2) return om_errf(OM_E_InvalidPath, "removing %s: is a directory", path);
    if (ops_add(c, OP_UNLINK, path, NULL, NULL)) return oom("removing", path);
    ns_del(&c->visible, path);
    return 0;
}

static int cv_unlink(om_vfs *v, const char *path)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "removing", path);
    if (!rc) rc = injected(c, CRASHVFS_UNLINK, "removing", path);
    if (!rc) rc = norm_path(path, p, "removing");
    if (!rc) rc = unlink_locked(c, p);
    unlock(c);
    return rc;
}

static int dir_check(crashvfs *c, const char *dir, const char *what)
{
    switch (kind_of(c, dir, NULL)) {
    case 2:
        return 0;
    case 1:
        return om_errf(OM_E_InvalidPath, "%s %s: not a directory", what, dir);
    default:
        return om_errf(OM_E_FileNotFound, "%s %s: no such directory", what, dir);
    }
}

static int cv_sync_dir(om_vfs *v, const char *dir)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "syncing directory", dir);
    if (!rc) rc = norm_path(dir, p, "syncing directory");
    if (!rc) rc = dir_check(c, p, "syncing directory");
    if (!rc) rc = sync_point(c, "syncing directory", p);
    if (!rc) rc = injected(c, CRASHVFS_SYNC_DIR, "syncing directory", p);
    if (!rc) dir_sync(c, p);
    unlock(c);
    return rc;
}

static int cv_exists(om_vfs *v, const char *path)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "stat of", path);
    if (!rc) rc = norm_path(path, p, "stat of");
    if (!rc) rc = kind_of(c, p, NULL);
    unlock(c);
    return rc;
}

static int mkdir_locked(crashvfs *c, const char *path)
{
    int kind = kind_of(c, path, NULL);
    if (kind == 2) return 0;
    if (kind == 1)
        return om_errf(OM_E_FileAlreadyExists, "creating directory %s: a file has that name", path);
    int rc = parent_check(c, path, "creating directory");
    if (rc) return rc;
    char *name = strdup(path);
    if (!name || ns_reserve(&c->visible) || ops_add(c, OP_MKDIR, path, NULL, NULL)) {
        free(name);
        return oom("creating directory", path);
    }
    ns_put(&c->visible, name, NULL);
    return 0;
}

static int cv_mkdir(om_vfs *v, const char *path)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "creating directory", path);
    if (!rc) rc = injected(c, CRASHVFS_MKDIR, "creating directory", path);
    if (!rc) rc = norm_path(path, p, "creating directory");
    if (!rc) rc = mkdir_locked(c, p);
    unlock(c);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir, sorted (so listings are deterministic), as malloc'd strings. */
static int list_locked(crashvfs *c, const char *dir, char ***names, size_t *n)
{
    int rc = dir_check(c, dir, "listing");
    if (rc) return rc;
    char **v = calloc(c->visible.n + 1, sizeof *v);
    if (!v) return oom("listing", dir);
    size_t k = 0;
    for (size_t i = 0; i < c->visible.n; i++) {
        const char *p = c->visible.e[i].path;
        if (!parent_is(p, dir)) continue;
        if (!(v[k] = strdup(strrchr(p, '/') + 1))) {
            while (k)
                free(v[--k]);
            free(v);
            return oom("listing", dir);
        }
        k++;
    }
    qsort(v, k, sizeof *v, name_cmp);
    *names = v;
    *n = k;
    return 0;
}

static int cv_list(om_vfs *v, const char *dir, om_list_cb cb, void *arg)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    char **names = NULL;
    size_t n = 0;
    lock(c);
    int rc = crashed_check(c, "listing", dir);
    if (!rc) rc = norm_path(dir, p, "listing");
    if (!rc) rc = list_locked(c, p, &names, &n);
    unlock(c);
    for (size_t i = 0; i < n; i++) {
        if (!rc) rc = cb(arg, names[i]);
        free(names[i]);
    }
    free(names);
    return rc;
}

static int cv_free_space(om_vfs *v, const char *path, uint64_t *bytes)
{
    crashvfs *c = (crashvfs *)v;
    lock(c);
    int rc = crashed_check(c, "statvfs of", path);
    if (!rc) {
        uint64_t used = c->limit ? space_used(c) : 0;
        *bytes = !c->limit ? CV_UNLIMITED_FREE : used < c->limit ? c->limit - used : 0;
    }
    unlock(c);
    return rc;
}

/* ---- directory handles ---- */

typedef struct cv_dir {
    om_dir base; /* base.path: the normalised path */
    crashvfs *c;
} cv_dir;

/* d's path + "/" + name into out, after the name rules of base/vfs.h. */
static int at_path(om_dir *d, const char *name, char *out, const char *what)
{
    if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return om_errf(OM_E_InvalidPath, "%s %s/%s: not a single name", what, d->path,
                       name ? name : "");
    size_t dl = strlen(d->path), nl = strlen(name);
    if (dl + 1 + nl + 1 > CV_PATH_MAX)
        return om_errf(OM_E_InvalidPath, "%s %s/%s: path too long", what, d->path, name);
    memcpy(out, d->path, dl);
    if (dl > 1) out[dl++] = '/';
    memcpy(out + dl, name, nl + 1);
    return 0;
}

/* Makes every missing directory of the normalised path p, from the top. */
static int mkdirs_locked(crashvfs *c, const char *p)
{
    char q[CV_PATH_MAX];
    size_t l = strlen(p);
    memcpy(q, p, l + 1);
    for (size_t i = 1; i <= l; i++) {
        if (q[i] != '/' && q[i]) continue;
        char keep = q[i];
        q[i] = 0;
        int rc = mkdir_locked(c, q);
        q[i] = keep;
        if (rc) return rc;
    }
    return 0;
}

static int cv_dir_open(om_vfs *v, om_dir *at, const char *path, int flags, om_dir **out)
{
    crashvfs *c = (crashvfs *)v;
    char p[CV_PATH_MAX];
    *out = NULL;
    lock(c);
    int rc = crashed_check(c, "opening directory", path);
    if (!rc && (flags & OM_D_CREATE)) rc = injected(c, CRASHVFS_MKDIR, "creating directory", path);
    if (!rc)
        rc = at ? at_path(at, path, p, "opening directory")
                : norm_path(path, p, "opening directory");
    if (!rc && (flags & OM_D_CREATE)) rc = at ? mkdir_locked(c, p) : mkdirs_locked(c, p);
    if (!rc) rc = dir_check(c, p, "opening directory");
    cv_dir *d = NULL;
    if (!rc && (!(d = calloc(1, sizeof *d)) || !(d->base.path = strdup(p)))) {
        free(d);
        rc = oom("opening directory", p);
    }
    unlock(c);
    if (rc) return rc;
    d->base.vfs = v;
    d->c = c;
    *out = &d->base;
    return 0;
}

static int cv_dir_close(om_dir *bd)
{
    if (!bd) return 0;
    free(bd->path);
    free(bd);
    return 0;
}

static int cv_dir_sync(om_dir *bd)
{
    return cv_sync_dir(bd->vfs, bd->path);
}

static int cv_open_at(om_dir *bd, const char *name, int flags, om_file **out)
{
    crashvfs *c = ((cv_dir *)bd)->c;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "opening", name);
    if (!rc) rc = injected(c, CRASHVFS_OPEN, "opening", name);
    if (!rc) rc = at_path(bd, name, p, "opening");
    if (!rc) rc = dir_check(c, bd->path, "opening in");
    if (!rc) rc = open_locked(c, p, flags, out);
    unlock(c);
    return rc;
}

static int cv_rename_at(om_dir *from, const char *fname, om_dir *to, const char *tname, int flags)
{
    crashvfs *c = ((cv_dir *)from)->c;
    char pf[CV_PATH_MAX], pt[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "renaming", fname);
    if (!rc) rc = injected(c, CRASHVFS_RENAME, "renaming", fname);
    if (!rc) rc = at_path(from, fname, pf, "renaming");
    if (!rc) rc = at_path(to, tname, pt, "renaming to");
    if (!rc && !(flags & OM_RENAME_REPLACE) && strcmp(pf, pt) && kind_of(c, pt, NULL) != 0)
        rc = om_errf(OM_E_FileAlreadyExists, "renaming %s to %s: the name exists", pf, pt);
    if (!rc) rc = rename_locked(c, pf, pt);
    unlock(c);
    return rc;
}

static int cv_unlink_at(om_dir *bd, const char *name)
{
    crashvfs *c = ((cv_dir *)bd)->c;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "removing", name);
    if (!rc) rc = injected(c, CRASHVFS_UNLINK, "removing", name);
    if (!rc) rc = at_path(bd, name, p, "removing");
    if (!rc) rc = unlink_locked(c, p);
    unlock(c);
    return rc;
}

static int rmdir_locked(crashvfs *c, const char *path)
{
    int kind = kind_of(c, path, NULL);
    if (kind == 0)
        return om_errf(OM_E_FileNotFound, "removing directory %s: no such directory", path);
    if (kind == 1) return om_errf(OM_E_InvalidPath, "removing directory %s: not a directory", path);
    for (size_t i = 0; i < c->visible.n; i++)
        if (parent_is(c->visible.e[i].path, path))
            return om_errf(OM_E_InvalidParameter, "removing directory %s: it is not empty (%s)",
                           path, c->visible.e[i].path);
    if (ops_add(c, OP_RMDIR, path, NULL, NULL)) return oom("removing directory", path);
    ns_del(&c->visible, path);
    return 0;
}

static int cv_rmdir_at(om_dir *bd, const char *name)
{
    crashvfs *c = ((cv_dir *)bd)->c;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "removing directory", name);
    if (!rc) rc = injected(c, CRASHVFS_RMDIR, "removing directory", name);
    if (!rc) rc = at_path(bd, name, p, "removing directory");
    if (!rc) rc = rmdir_locked(c, p);
    unlock(c);
    return rc;
}

static int cv_kind_at(om_dir *bd, const char *name)
{
    crashvfs *c = ((cv_dir *)bd)->c;
    char p[CV_PATH_MAX];
    lock(c);
    int rc = crashed_check(c, "stat of", name);
    if (!rc) rc = at_path(bd, name, p, "stat of");
    if (!rc) rc = kind_of(c, p, NULL);
    unlock(c);
    return rc;
}

static int cv_list_at(om_dir *bd, om_list_cb cb, void *arg)
{
    return cv_list(bd->vfs, bd->path, cb, arg);
}

static const om_vfs cv_methods = {
    .open = cv_open,
    .close = cv_close,
    .pread = cv_pread,
    .pwrite = cv_pwrite,
    .sync = cv_sync,
    .size = cv_size,
    .resize = cv_resize,
    .rename = cv_rename,
    .unlink = cv_unlink,
    .sync_dir = cv_sync_dir,
    .exists = cv_exists,
    .mkdir = cv_mkdir,
    .list = cv_list,
    .free_space = cv_free_space,
    .dir_open = cv_dir_open,
    .dir_close = cv_dir_close,
    .dir_sync = cv_dir_sync,
    .open_at = cv_open_at,
    .rename_at = cv_rename_at,
    .unlink_at = cv_unlink_at,
    .rmdir_at = cv_rmdir_at,
    .kind_at = cv_kind_at,
    .list_at = cv_list_at,
    .stamp = cv_stamp,
};

/* ---- the test's controls ---- */

crashvfs *crashvfs_new(uint64_t seed)
{
    crashvfs *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->mu, NULL)) {
        free(c);
        return NULL;
    }
    c->vfs = cv_methods;
    c->rng = seed;
    c->visible.is_visible = 1;
    link_init(&c->inodes);
    link_init(&c->files);
    return c;
}

/* Drops every handle's hold on its inode; the handles themselves belong to their owners. */
static void files_detach(crashvfs *c)
{
    while (c->files.next != &c->files) {
        cv_file *f = file_of(c->files.next);
        link_del(&f->link);
        f->ino->nopen--;
        inode_unref(f->ino);
        f->ino = NULL;
    }
}

void crashvfs_free(crashvfs *c)
{
    if (!c) return;
    files_detach(c);
    ops_clear(c);
    ns_clear(&c->visible);
    ns_clear(&c->durable);
    free(c->visible.e);
    free(c->durable.e);
    free(c->ops);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

om_vfs *crashvfs_vfs(crashvfs *c)
{
    return &c->vfs;
}

void crashvfs_crash_at_sync(crashvfs *c, uint64_t n)
{
    lock(c);
    c->crash_at = n ? c->syncs + n : 0;
    unlock(c);
}

uint64_t crashvfs_syncs(crashvfs *c)
{
    lock(c);
    uint64_t n = c->syncs;
    unlock(c);
    return n;
}

int crashvfs_crashed(crashvfs *c)
{
    lock(c);
    int r = c->crashed;
    unlock(c);
    return r;
}

/* A journaled filesystem replays its journal in order: some prefix of the pending name
 * operations made it. */
static void names_reboot(crashvfs *c)
{
    size_t k = (size_t)rnd_below(c, (uint64_t)c->nops + 1);
    for (size_t i = 0; i < k; i++)
        op_apply(&c->durable, &c->ops[i]);
    ops_clear(c);
}

int crashvfs_reboot(crashvfs *c)
{
    lock(c);
    names_reboot(c);
    files_detach(c);
    ns_clear(&c->visible);
    /* Only the inodes of durable names are left now. */
    for (cv_link *l = c->inodes.next; l != &c->inodes; l = l->next)
        inode_reboot(c, (cv_inode *)l);
    if (ns_copy(&c->visible, &c->durable, 0)) {
        /* Out of memory in a test: better to stop than to boot a disk missing files. */
        abort();
    }
    c->crashed = 0;
    c->crash_at = 0;
    memset(c->fail, 0, sizeof c->fail);
    unlock(c);
    return 0;
}

void crashvfs_set_space_limit(crashvfs *c, uint64_t bytes)
{
    lock(c);
    c->limit = bytes;
    unlock(c);
}

int crashvfs_fail_next(crashvfs *c, int op, int err)
{
    if (op < 0 || op >= CRASHVFS_NOPS || err >= 0) return OM_E_InvalidParameter;
    lock(c);
    c->fail[op] = err;
    unlock(c);
    return 0;
}

void crashvfs_set_sync_delay(crashvfs *c, unsigned usec)
{
    __atomic_store_n(&c->sync_delay_us, usec, __ATOMIC_RELAXED);
}

uint64_t crashvfs_every(void)
{
    const char *e = getenv("OMBRA_CRASH_EVERY");
    long n = e ? atol(e) : 0;
    return n > 1 ? (uint64_t)n : 1;
}

void crashvfs_reseed(crashvfs *c, uint64_t seed)
{
    lock(c);
    c->rng = seed;
    unlock(c);
}

/* Copies, in creation order (so the copy makes the same random choices as the original),
 * the inodes that something other than an open handle refers to; cv_inode.copy points at the
 * copy. */
static int inodes_copy(crashvfs *c, crashvfs *src)
{
    for (cv_link *l = src->inodes.next; l != &src->inodes; l = l->next) {
        cv_inode *ino = (cv_inode *)l;
        if (ino->refs == ino->nopen) continue;
        if (!(ino->copy = inode_copy(c, ino))) return -1;
    }
    return 0;
}

static int state_copy(crashvfs *c, crashvfs *src)
{
    c->rng = src->rng;
    c->syncs = src->syncs;
    c->crash_at = src->crash_at;
    c->crashed = src->crashed;
    c->limit = src->limit;
    c->clock = src->clock;
    memcpy(c->fail, src->fail, sizeof c->fail);
    if (inodes_copy(c, src) || ns_copy(&c->visible, &src->visible, 1) ||
        ns_copy(&c->durable, &src->durable, 1))
        return -1;
    for (size_t i = 0; i < src->nops; i++) {
        const cv_op *op = &src->ops[i];
        if (ops_add(c, op->kind, op->path, op->to, op->ino ? op->ino->copy : NULL)) return -1;
    }
    return 0;
}

/* Inodes copied but not yet referenced (refs == 0) would be missed by the refcounting. */
static void unreferenced_free(crashvfs *c)
{
    cv_link *l = c->inodes.next;
    while (l != &c->inodes) {
        cv_inode *ino = (cv_inode *)l;
        l = l->next;
        if (ino->refs == 0) {
            ino->refs = 1;
            inode_unref(ino);
        }
    }
}

crashvfs *crashvfs_clone(const crashvfs *src)
{
    /* Locking is the only change made to src (and the copy pointers, reset before return). */
    crashvfs *s = (crashvfs *)src;
    crashvfs *c = crashvfs_new(0);
    if (!c) return NULL;
    lock(s);
    int rc = state_copy(c, s);
    for (cv_link *l = s->inodes.next; l != &s->inodes; l = l->next)
        ((cv_inode *)l)->copy = NULL;
    unlock(s);
    unreferenced_free(c);
    if (rc) {
        crashvfs_free(c);
        return NULL;
    }
    return c;
}

/* The B+tree: search, insert with splits, delete with merges, cursors, checks. Node format
 * and invariants at the top of btree.h.
 *
 * Writes edit the transaction's private copies of pages in place (eng_txn_page_mut); the commit
 * logs what changed by comparing each page with its committed version, so the code here never
 * describes its changes to the log. A split or merge rebuilds the pages it touches from a
 * scratch copy. */
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "engine/btree.h"

/* ---- node accessors ---- */

static uint16_t n_count(const uint8_t *b)
{
    return om_get16(b + 2);
}
static uint16_t n_cell_lo(const uint8_t *b)
{
    return om_get16(b + 4);
}
static uint16_t n_frag(const uint8_t *b)
{
    return om_get16(b + 6);
}
static uint32_t n_link(const uint8_t *b)
{
    return om_get32(b + 8);
}
static uint16_t n_slot(const uint8_t *b, uint32_t i)
{
    return om_get16(b + BT_HDR + 2 * i);
}
static void n_set_link(uint8_t *b, uint32_t v)
{
    om_put32(b + 8, v);
}
/* Bytes in use: slots and live cells. */
static uint32_t n_used(const uint8_t *b)
{
    return 2u * n_count(b) + (ENG_PAGE_BODY - n_cell_lo(b)) - n_frag(b);
}

static void n_reset(uint8_t *b, uint8_t kind, uint32_t link)
{
    memset(b, 0, BT_HDR);
    b[0] = kind;
    om_put16(b + 4, (uint16_t)ENG_PAGE_BODY);
    n_set_link(b, link);
}

void eng_bt_init_leaf(uint8_t *body)
{
    n_reset(body, BT_LEAF, 0);
}

int eng_bt_keycmp(const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    int r = memcmp(a, b, alen < blen ? alen : blen);
    if (r) return r;
    return alen < blen ? -1 : alen > blen;
}

static int corrupt(bt_ctx *c, uint32_t pgno, const char *why)
{
    (void)c;
    return om_errf(OM_E_DatabaseCorrupted, "tree page %u: %s", pgno, why);
}

/* Parses the cell at slot i; returns 0 or DatabaseCorrupted when it does not fit the page. */
static int n_cell(bt_ctx *c, uint32_t pgno, const uint8_t *b, uint32_t i, bt_cell *cell)
{
    uint32_t off = n_slot(b, i);
    if (off < BT_HDR || off + 8 > ENG_PAGE_BODY)
        return corrupt(c, pgno, "cell offset out of the page");
    const uint8_t *p = b + off;
    memset(cell, 0, sizeof *cell);
    cell->pgno = pgno;
    cell->klen = om_get16(p);
    cell->key = p + 8;
    if (b[0] == BT_INTERNAL) {
        cell->child = om_get32(p + 4);
        cell->size = 8 + cell->klen;
    } else {
        cell->vkind = p[2];
        cell->vlen = om_get32(p + 4);
        cell->val = p + 8 + cell->klen;
        cell->size = 8 + cell->klen + (cell->vkind ? 8 : cell->vlen);
        if (cell->vkind > 1) return corrupt(c, pgno, "unknown value kind");
    }
    if (cell->klen == 0 || cell->klen > ENG_MAX_KEY || off + cell->size > ENG_PAGE_BODY)
        return corrupt(c, pgno, "cell runs past the page");
    return 0;
}

static int page_node(bt_ctx *c, uint32_t pgno, const uint8_t **b)
{
    int rc = eng_space_page_ro(c, pgno, b);
    if (rc) return rc;
    if ((*b)[0] != BT_LEAF && (*b)[0] != BT_INTERNAL) return corrupt(c, pgno, "not a tree page");
    if (n_cell_lo(*b) < BT_HDR + 2u * n_count(*b) || n_cell_lo(*b) > ENG_PAGE_BODY)
        return corrupt(c, pgno, "slot array and cells overlap");
    return 0;
}

/* First slot whose key is >= key (n_count when none). */
static int lower_bound(bt_ctx *c, uint32_t pgno, const uint8_t *b, const void *key, uint32_t klen,
                       uint32_t *pos, int *exact)
{
    uint32_t lo = 0, hi = n_count(b);
    *exact = 0;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        bt_cell cell;
        int rc = n_cell(c, pgno, b, mid, &cell);
        if (rc) return rc;
        int cmp = eng_bt_keycmp(cell.key, cell.klen, key, klen);
        if (cmp < 0)
            lo = mid + 1;
        else {
            if (cmp == 0) *exact = 1;
            hi = mid;
        }
    }
    *pos = lo;
    return 0;
}

/* ---- descent ---- */

typedef struct bt_path {
    uint32_t pgno[BT_MAX_DEPTH];
    int idx[BT_MAX_DEPTH]; /* internal: the child taken (-1 = leftmost); leaf: the slot */
    int depth;             /* index of the leaf */
} bt_path;

/* Walks from the root to the leaf that holds (or would hold) key. In the leaf, idx is the
 * lower bound and *exact says whether the key is there. */
static int descend(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, bt_path *path,
                   int *exact)
{
    uint32_t pgno = root;
    for (int d = 0; d < BT_MAX_DEPTH; d++) {
        const uint8_t *b;
        int rc = page_node(c, pgno, &b);
        if (rc) return rc;
        path->pgno[d] = pgno;
        uint32_t pos;
        rc = lower_bound(c, pgno, b, key, klen, &pos, exact);
        if (rc) return rc;
        if (b[0] == BT_LEAF) {
            path->idx[d] = (int)pos;
            path->depth = d;
            return 0;
        }
        /* The child for key is the last cell with a key <= key. */
        int child = *exact ? (int)pos : (int)pos - 1;
        path->idx[d] = child;
        if (child < 0)
            pgno = n_link(b);
        else {
            bt_cell cell;
            if ((rc = n_cell(c, pgno, b, (uint32_t)child, &cell))) return rc;
            pgno = cell.child;
        }
        if (pgno == 0) return corrupt(c, path->pgno[d], "internal node points to page 0");
    }
    return corrupt(c, root, "tree deeper than any this engine builds");
}

int eng_bt_find(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, bt_cell *cell)
{
    bt_path path;
    int exact;
    int rc = descend(c, root, key, klen, &path, &exact);
    if (rc) return rc;
    if (!exact) return om_errf(OM_E_RecordNotFound, "key not found");
    const uint8_t *b;
    if ((rc = eng_space_page_ro(c, path.pgno[path.depth], &b))) return rc;
    return n_cell(c, path.pgno[path.depth], b, (uint32_t)path.idx[path.depth], cell);
}

/* ---- building nodes ---- */

/* A cell to place: bytes and size (the bytes may live in a scratch copy). */
typedef struct cref {
    const uint8_t *p;
    uint32_t size;
} cref;

/* Rewrites b as a node of kind/link holding cells in order. Cells that do not fit (sizes read
 * from a damaged page) leave b untouched: DatabaseCorrupted. */
static int n_build(uint8_t *b, uint8_t kind, uint32_t link, const cref *cells, uint32_t n)
{
    uint64_t need = 2ull * n;
    for (uint32_t i = 0; i < n; i++)
        need += cells[i].size;
    if (need > BT_CAP)
        return om_errf(OM_E_DatabaseCorrupted,
                       "tree page: its cells take more room than a page has");
    n_reset(b, kind, link);
    uint32_t lo = ENG_PAGE_BODY;
    for (uint32_t i = 0; i < n; i++) {
        lo -= cells[i].size;
        memcpy(b + lo, cells[i].p, cells[i].size);
        om_put16(b + BT_HDR + 2 * i, (uint16_t)lo);
    }
    om_put16(b + 2, (uint16_t)n);
    om_put16(b + 4, (uint16_t)lo);
    return 0;
}

static uint32_t crefs_bytes(const cref *cells, uint32_t from, uint32_t to)
{
    uint32_t s = 0;
    for (uint32_t i = from; i < to; i++)
        s += cells[i].size + 2;
    return s;
}

/* Collects b's cells (pointing into b) with `extra` inserted at position pos (pos < 0: none). */
static int collect(bt_ctx *c, uint32_t pgno, const uint8_t *b, cref *out, int pos, cref extra,
                   uint32_t *n)
{
    uint32_t cnt = n_count(b), k = 0;
    for (uint32_t i = 0; i <= cnt; i++) {
        if ((int)i == pos) out[k++] = extra;
        if (i == cnt) break;
        bt_cell cell;
        int rc = n_cell(c, pgno, b, i, &cell);
        if (rc) return rc;
        out[k++] = (cref){b + n_slot(b, i), cell.size};
    }
    *n = k;
    return 0;
}

/* Inserts cell bytes at slot pos if they fit (compacting when that makes room). Returns 1 when
 * they do not fit, <0 for a damaged page. */
static int n_try_insert(bt_ctx *c, uint32_t pgno, uint8_t *b, uint32_t pos, const uint8_t *cell,
                        uint32_t size, uint8_t *scratch, cref *cells)
{
    uint32_t n = n_count(b);
    uint32_t free_now = n_cell_lo(b) - BT_HDR - 2 * n;
    if (free_now < size + 2) {
        if (free_now + n_frag(b) < size + 2) return 1;
        /* Compact: rebuild from a copy, cells in slot order, their sizes checked. */
        memcpy(scratch, b, ENG_PAGE_BODY);
        uint32_t k = 0;
        int rc = collect(c, pgno, scratch, cells, -1, (cref){0}, &k);
        if (rc) return rc;
        if (crefs_bytes(cells, 0, k) + size + 2 > BT_CAP) return 1; /* frag lied: split */
        if ((rc = n_build(b, b[0], n_link(scratch), cells, k))) return rc;
    }
    uint32_t lo = n_cell_lo(b) - size;
    memcpy(b + lo, cell, size);
    memmove(b + BT_HDR + 2 * (pos + 1), b + BT_HDR + 2 * pos, 2 * (n - pos));
    om_put16(b + BT_HDR + 2 * pos, (uint16_t)lo);
    om_put16(b + 2, (uint16_t)(n + 1));
    om_put16(b + 4, (uint16_t)lo);
    return 0;
}

static void n_remove(uint8_t *b, uint32_t pos, uint32_t size)
{
    uint32_t n = n_count(b);
    memmove(b + BT_HDR + 2 * pos, b + BT_HDR + 2 * (pos + 1), 2 * (n - pos - 1));
    om_put16(b + 2, (uint16_t)(n - 1));
    if (n == 1) {
        om_put16(b + 4, (uint16_t)ENG_PAGE_BODY);
        om_put16(b + 6, 0);
    } else
        om_put16(b + 6, (uint16_t)(n_frag(b) + size));
}

static uint32_t make_leaf_cell(uint8_t *out, const void *key, uint32_t klen, uint8_t vkind,
                               const void *val, uint32_t vlen)
{
    om_put16(out, (uint16_t)klen);
    out[2] = vkind;
    out[3] = 0;
    om_put32(out + 4, vlen);
    memcpy(out + 8, key, klen);
    uint32_t vbytes = vkind ? 8 : vlen;
    if (vbytes) memcpy(out + 8 + klen, val, vbytes);
    return 8 + klen + vbytes;
}

static uint32_t make_internal_cell(uint8_t *out, const void *key, uint32_t klen, uint32_t child)
{
    om_put16(out, (uint16_t)klen);
    om_put16(out + 2, 0);
    om_put32(out + 4, child);
    memcpy(out + 8, key, klen);
    return 8 + klen;
}

/* ---- insert ---- */

typedef struct scratch {
    uint8_t page[ENG_PAGE_BODY];
    uint8_t cell[ENG_MAX_INLINE + 16];
    uint8_t sep[ENG_MAX_KEY + 16];
    cref cells[ENG_PAGE_BODY / 8];
} scratch;

/* Splits cells [0, n) of a node into two halves by bytes: returns the first index of the right
 * half (1..n-1). */
static uint32_t split_point(const cref *cells, uint32_t n)
{
    uint32_t total = crefs_bytes(cells, 0, n), acc = 0, k = 0;
    while (k < n - 1 && acc + cells[k].size + 2 <= total / 2)
        acc += cells[k++].size + 2;
    if (k == 0) k = 1;
    return k;
}

/* Puts cells [0,k) and [k,n) of a root that must split into two new children; the root keeps
 * its page number and becomes an internal node over them. For an internal root the cell at k
 * moves up instead (its child becomes the right node's leftmost). */
static int split_root(bt_ctx *c, uint8_t *root, uint8_t kind, uint32_t link, scratch *s, uint32_t n,
                      uint32_t k)
{
    uint32_t lp, rp;
    uint8_t *lb, *rb;
    int rc = eng_space_alloc(c->t, c->objid, &lp, &lb);
    if (!rc) rc = eng_space_alloc(c->t, c->objid, &rp, &rb);
    if (rc) return rc;
    const uint8_t *up = s->cells[k].p;
    uint32_t upklen = om_get16(up);
    memcpy(s->sep, up + 8, upklen);
    if (kind == BT_LEAF) {
        if ((rc = n_build(lb, BT_LEAF, rp, s->cells, k)) ||
            (rc = n_build(rb, BT_LEAF, 0, s->cells + k, n - k)))
            return rc;
    } else {
        if ((rc = n_build(lb, BT_INTERNAL, link, s->cells, k)) ||
            (rc = n_build(rb, BT_INTERNAL, om_get32(up + 4), s->cells + k + 1, n - k - 1)))
            return rc;
    }
    uint8_t cell[ENG_MAX_KEY + 16];
    uint32_t sz = make_internal_cell(cell, s->sep, upklen, rp);
    cref one = {cell, sz};
    return n_build(root, BT_INTERNAL, lp, &one, 1);
}

/* Inserts `cell` at slot pos of the node at path level d, splitting upward as needed. */
static int insert_at(bt_ctx *c, bt_path *path, int d, uint32_t pos, const uint8_t *cell,
                     uint32_t size, scratch *s)
{
    for (;;) {
        uint32_t pgno = path->pgno[d];
        uint8_t *b;
        int rc = eng_txn_page_mut(c->t, pgno, &b);
        if (rc) return rc;
        rc = n_try_insert(c, pgno, b, pos, cell, size, s->page, s->cells);
        if (rc <= 0) return rc;
        /* Split: work from a copy of the node, with the new cell in place. */
        uint8_t kind = b[0];
        uint32_t link = n_link(b), n;
        memcpy(s->page, b, ENG_PAGE_BODY);
        uint8_t newcell[ENG_MAX_INLINE + 16];
        memcpy(newcell, cell, size);
        if ((rc = collect(c, pgno, s->page, s->cells, (int)pos, (cref){newcell, size}, &n)))
            return rc;
        uint32_t k;
        if (kind == BT_LEAF && pos == n - 1 && link == 0 && d > 0)
            k = n - 1; /* appending to the last leaf: keep the full page full */
        else
            k = split_point(s->cells, n);
        if (kind == BT_INTERNAL && k >= n - 1)
            k = n - 2; /* the cell at k moves up: both sides keep one */
        if (d == 0) return split_root(c, b, kind, link, s, n, k);
        uint32_t rp;
        uint8_t *rb;
        if ((rc = eng_space_alloc(c->t, c->objid, &rp, &rb))) return rc;
        /* The page may have been copied again by the allocation (same page object): refetch. */
        if ((rc = eng_txn_page_mut(c->t, pgno, &b))) return rc;
        const uint8_t *up = s->cells[k].p;
        uint32_t upklen = om_get16(up);
        memcpy(s->sep, up + 8, upklen);
        if (kind == BT_LEAF)
            rc = n_build(rb, BT_LEAF, link, s->cells + k, n - k);
        else
            rc = n_build(rb, BT_INTERNAL, om_get32(up + 4), s->cells + k + 1, n - k - 1);
        if (!rc) rc = n_build(b, kind, kind == BT_LEAF ? rp : link, s->cells, k);
        if (rc) return rc;
        /* The separator goes into the parent, right after the child we came down. */
        size = make_internal_cell(s->cell, s->sep, upklen, rp);
        cell = s->cell;
        d--;
        pos = (uint32_t)(path->idx[d] + 1);
    }
}

int eng_bt_insert(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, uint8_t vkind,
                  const void *val, uint32_t vlen)
{
    bt_path path;
    int exact;
    int rc = descend(c, root, key, klen, &path, &exact);
    if (rc) return rc;
    if (exact) return om_errf(OM_E_KeyDuplicate, "key already exists");
    scratch *s = malloc(sizeof *s);
    if (!s) return om_errf(OM_E_OutOfMemory, "tree insert: out of memory");
    uint8_t *cell = malloc(ENG_MAX_INLINE + 16);
    if (!cell) {
        free(s);
        return om_errf(OM_E_OutOfMemory, "tree insert: out of memory");
    }
    uint32_t size = make_leaf_cell(cell, key, klen, vkind, val, vlen);
    rc = insert_at(c, &path, path.depth, (uint32_t)path.idx[path.depth], cell, size, s);
    free(cell);
    free(s);
    return rc;
}

/* ---- delete ---- */

/* A root internal node left with no cells takes its only child's content. */
static int collapse_root(bt_ctx *c, uint32_t root)
{
    uint8_t *rb;
    const uint8_t *cb;
    int rc = eng_txn_page_mut(c->t, root, &rb);
    if (rc || rb[0] != BT_INTERNAL || n_count(rb) != 0) return rc;
    uint32_t child = n_link(rb);
    if ((rc = eng_space_page_ro(c, child, &cb))) return rc;
    uint8_t *copy = malloc(ENG_PAGE_BODY);
    if (!copy) return om_errf(OM_E_OutOfMemory, "tree delete: out of memory");
    memcpy(copy, cb, ENG_PAGE_BODY);
    if ((rc = eng_txn_page_mut(c->t, root, &rb))) {
        free(copy);
        return rc;
    }
    memcpy(rb, copy, ENG_PAGE_BODY);
    free(copy);
    return eng_space_free(c->t, child);
}

/* After a removal at level d: merge an underfull node with a sibling while the two fit in one
 * page, removing the separator from the parent (which may underflow in turn). */
static int rebalance(bt_ctx *c, bt_path *path, int d, scratch *s)
{
    while (d > 0) {
        uint8_t *b;
        int rc = eng_txn_page_mut(c->t, path->pgno[d], &b);
        if (rc) return rc;
        if (n_used(b) >= BT_CAP / 4) return 0;
        uint32_t parent = path->pgno[d - 1];
        const uint8_t *pb;
        if ((rc = eng_space_page_ro(c, parent, &pb))) return rc;
        int idx = path->idx[d - 1], pn = n_count(pb);
        /* Pair (left, right) of adjacent children; sep is the parent slot of right. */
        int sep = idx + 1 < pn ? idx + 1 : idx;
        if (sep < 0) return 0; /* the parent has a single child: nothing to merge with */
        bt_cell sc;
        if ((rc = n_cell(c, parent, pb, (uint32_t)sep, &sc))) return rc;
        uint32_t right = sc.child, left;
        if (sep == 0)
            left = n_link(pb);
        else {
            bt_cell lc;
            if ((rc = n_cell(c, parent, pb, (uint32_t)sep - 1, &lc))) return rc;
            left = lc.child;
        }
        const uint8_t *lb, *rb;
        if ((rc = page_node(c, left, &lb)) || (rc = page_node(c, right, &rb))) return rc;
        uint8_t kind = lb[0];
        uint32_t extra = kind == BT_INTERNAL ? 8 + sc.klen + 2 : 0;
        if (n_used(lb) + n_used(rb) + extra > BT_CAP) return 0;
        /* Merge right into left, from scratch copies. */
        memcpy(s->page, lb, ENG_PAGE_BODY);
        uint8_t *rcopy = malloc(ENG_PAGE_BODY);
        if (!rcopy) return om_errf(OM_E_OutOfMemory, "tree delete: out of memory");
        memcpy(rcopy, rb, ENG_PAGE_BODY);
        uint32_t n = 0, m = 0;
        rc = collect(c, left, s->page, s->cells, -1, (cref){0}, &n);
        uint32_t newlink = kind == BT_LEAF ? n_link(rcopy) : n_link(s->page);
        if (!rc && kind == BT_INTERNAL) {
            /* The parent's separator comes down, over the right node's leftmost child. */
            s->cells[n++] =
                (cref){s->cell, make_internal_cell(s->cell, sc.key, sc.klen, n_link(rcopy))};
        }
        if (!rc) rc = collect(c, right, rcopy, s->cells + n, -1, (cref){0}, &m);
        uint8_t *wl;
        if (!rc) rc = eng_txn_page_mut(c->t, left, &wl);
        if (!rc) rc = n_build(wl, kind, newlink, s->cells, n + m);
        free(rcopy);
        if (rc) return rc;
        uint8_t *wp;
        if ((rc = eng_txn_page_mut(c->t, parent, &wp))) return rc;
        n_remove(wp, (uint32_t)sep, 8 + sc.klen);
        if ((rc = eng_space_free(c->t, right))) return rc;
        d--;
    }
    return collapse_root(c, path->pgno[0]);
}

int eng_bt_delete(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, uint8_t *old_vkind,
                  uint64_t *old_lvid)
{
    bt_path path;
    int exact;
    int rc = descend(c, root, key, klen, &path, &exact);
    if (rc) return rc;
    if (!exact) return om_errf(OM_E_RecordNotFound, "key not found");
    uint32_t leaf = path.pgno[path.depth];
    uint8_t *b;
    if ((rc = eng_txn_page_mut(c->t, leaf, &b))) return rc;
    bt_cell cell;
    if ((rc = n_cell(c, leaf, b, (uint32_t)path.idx[path.depth], &cell))) return rc;
    if (old_vkind) *old_vkind = cell.vkind;
    if (old_lvid) *old_lvid = cell.vkind ? om_get64(cell.val) : 0;
    n_remove(b, (uint32_t)path.idx[path.depth], cell.size);
    scratch *s = malloc(sizeof *s);
    if (!s) return om_errf(OM_E_OutOfMemory, "tree delete: out of memory");
    rc = rebalance(c, &path, path.depth, s);
    free(s);
    return rc;
}

/* ---- clear (drop) ---- */

static int clear_rec(bt_ctx *c, uint32_t pgno, int depth, int free_self,
                     int (*on_record)(bt_ctx *, const bt_cell *, void *), void *arg)
{
    if (depth >= BT_MAX_DEPTH) return corrupt(c, pgno, "tree deeper than any this engine builds");
    const uint8_t *b;
    int rc = page_node(c, pgno, &b);
    if (rc) return rc;
    uint32_t n = n_count(b);
    uint32_t *kids = NULL, nk = 0;
    if (b[0] == BT_INTERNAL) {
        kids = malloc((n + 1) * sizeof *kids);
        if (!kids) return om_errf(OM_E_OutOfMemory, "drop: out of memory");
        kids[nk++] = n_link(b);
    }
    for (uint32_t i = 0; i < n && !rc; i++) {
        bt_cell cell;
        if ((rc = n_cell(c, pgno, b, i, &cell))) break;
        if (b[0] == BT_INTERNAL)
            kids[nk++] = cell.child;
        else if (on_record)
            rc = on_record(c, &cell, arg);
        if (!rc) rc = eng_space_page_ro(c, pgno, &b); /* on_record may have changed pages */
    }
    for (uint32_t i = 0; i < nk && !rc; i++)
        rc = clear_rec(c, kids[i], depth + 1, 1, on_record, arg);
    free(kids);
    if (!rc && free_self) rc = eng_space_free(c->t, pgno);
    return rc;
}

int eng_bt_clear(bt_ctx *c, uint32_t root, int (*on_record)(bt_ctx *, const bt_cell *, void *),
                 void *arg)
{
    int rc = clear_rec(c, root, 0, 0, on_record, arg);
    uint8_t *b;
    if (!rc) rc = eng_txn_page_mut(c->t, root, &b);
    if (!rc) eng_bt_init_leaf(b);
    return rc;
}

/* ---- cursors ---- */

static int skip_empty(bt_ctx *c, bt_pos *pos)
{
    for (int guard = 0; guard < 1 << 30; guard++) {
        const uint8_t *b;
        int rc = page_node(c, pos->leaf, &b);
        if (rc) return rc;
        if (b[0] != BT_LEAF) return corrupt(c, pos->leaf, "leaf chain reaches an internal page");
        if (pos->slot < n_count(b)) return 0;
        uint32_t next = n_link(b);
        if (next == 0) return om_errf(OM_E_RecordNotFound, "no more records");
        pos->leaf = next;
        pos->slot = 0;
    }
    return corrupt(c, pos->leaf, "leaf chain loops");
}

int eng_bt_seek(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, bt_pos *pos)
{
    bt_path path;
    int exact;
    static const uint8_t none[1];
    int rc = descend(c, root, key ? key : none, key ? klen : 0, &path, &exact);
    if (rc) return rc;
    pos->leaf = path.pgno[path.depth];
    pos->slot = path.idx[path.depth];
    return skip_empty(c, pos);
}

int eng_bt_next(bt_ctx *c, bt_pos *pos)
{
    pos->slot++;
    return skip_empty(c, pos);
}

int eng_bt_cell_at(bt_ctx *c, const bt_pos *pos, bt_cell *cell)
{
    const uint8_t *b;
    int rc = page_node(c, pos->leaf, &b);
    if (rc) return rc;
    if (pos->slot < 0 || pos->slot >= n_count(b))
        return om_errf(OM_E_RecordNotFound, "no current record");
    return n_cell(c, pos->leaf, b, (uint32_t)pos->slot, cell);
}

/* ---- check ---- */

typedef struct check_ctx {
    uint64_t records;
    int leaf_depth;
    uint32_t prev_leaf;   /* the last leaf seen in key order */
    uint32_t expect_next; /* what that leaf's link said */
} check_ctx;

static int check_rec(bt_ctx *c, uint32_t pgno, int depth, const uint8_t *lo, uint32_t lolen,
                     const uint8_t *hi, uint32_t hilen, check_ctx *k)
{
    if (depth >= BT_MAX_DEPTH) return corrupt(c, pgno, "tree too deep (a loop?)");
    const uint8_t *b;
    int rc = page_node(c, pgno, &b);
    if (rc) return rc;
    uint32_t objid = om_get32(b - ENG_PAGE_HDR + 12);
    if (objid != c->objid) return corrupt(c, pgno, "page belongs to another object");
    if (n_used(b) > BT_CAP) return corrupt(c, pgno, "more bytes in use than the page holds");
    uint32_t n = n_count(b);
    const uint8_t *prev = NULL;
    uint32_t prevlen = 0;
    for (uint32_t i = 0; i < n; i++) {
        bt_cell cell;
        if ((rc = n_cell(c, pgno, b, i, &cell))) return rc;
        if (i == 0 && lo && eng_bt_keycmp(cell.key, cell.klen, lo, lolen) < 0)
            return corrupt(c, pgno, "key below its parent's separator");
        if (i > 0 && eng_bt_keycmp(prev, prevlen, cell.key, cell.klen) >= 0)
            return corrupt(c, pgno, "keys out of order");
        if (hi && eng_bt_keycmp(cell.key, cell.klen, hi, hilen) >= 0)
            return corrupt(c, pgno, "key not below its parent's next separator");
        prev = cell.key;
        prevlen = cell.klen;
    }
    if (b[0] == BT_LEAF) {
        if (k->leaf_depth < 0) k->leaf_depth = depth;
        if (k->leaf_depth != depth) return corrupt(c, pgno, "leaves at different depths");
        if (k->prev_leaf && k->expect_next != pgno)
            return corrupt(c, k->prev_leaf, "leaf chain skips a leaf");
        k->prev_leaf = pgno;
        k->expect_next = n_link(b);
        k->records += n;
        return 0;
    }
    if (n == 0 && depth > 0) return corrupt(c, pgno, "internal node without keys");
    /* Leftmost child: keys in [lo, first key); child i: [key i, key i+1). */
    for (int i = -1; i < (int)n; i++) {
        bt_cell a, z;
        const uint8_t *clo = lo, *chi = hi;
        uint32_t clolen = lolen, chilen = hilen, child;
        if (i >= 0) {
            if ((rc = n_cell(c, pgno, b, (uint32_t)i, &a))) return rc;
            clo = a.key;
            clolen = a.klen;
            child = a.child;
        } else
            child = n_link(b);
        if (i + 1 < (int)n) {
            if ((rc = n_cell(c, pgno, b, (uint32_t)(i + 1), &z))) return rc;
            chi = z.key;
            chilen = z.klen;
        }
        /* Copy the bounds: the recursion may move the page (it does not change it). */
        uint8_t lob[ENG_MAX_KEY], hib[ENG_MAX_KEY];
        if (clo) memcpy(lob, clo, clolen);
        if (chi) memcpy(hib, chi, chilen);
        if ((rc = check_rec(c, child, depth + 1, clo ? lob : NULL, clolen, chi ? hib : NULL, chilen,
                            k)))
            return rc;
        if ((rc = page_node(c, pgno, &b))) return rc;
    }
    return 0;
}

int eng_bt_check(bt_ctx *c, uint32_t root, uint64_t *records)
{
    check_ctx k = {0, -1, 0, 0};
    int rc = check_rec(c, root, 0, NULL, 0, NULL, 0, &k);
    if (!rc && k.prev_leaf && k.expect_next != 0)
        rc = corrupt(c, k.prev_leaf, "last leaf links onward");
    if (!rc && records) *records = k.records;
    return rc;
}

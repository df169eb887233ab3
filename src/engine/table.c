/* Tables over the B+tree (table.h): the catalog, long values, views and cursors.
 *
 * The meta page and the free list are in space.c (layout in btree.h). A long value is cut into
 * BT_LV_CHUNK-byte chunks stored in the long-value tree under (long-value id, chunk number),
 * big-endian so a value's chunks are adjacent. */
#include <stdlib.h>
#include <string.h>

#include "base/bytes.h"
#include "base/error.h"
#include "engine/btree.h"

/* ---- catalog ---- */

int eng_catalog_create(eng_db *db)
{
    eng_txn *t = NULL;
    int rc = eng_txn_begin(db, &t);
    if (rc) return rc;
    if (eng_page_count(db) != 0) {
        eng_txn_rollback(t);
        return om_errf(OM_E_InvalidParameter,
                       "the database already has pages; a catalog goes into an empty one");
    }
    uint32_t pg[3];
    uint8_t *b[3];
    const uint32_t obj[3] = {OBJ_META, OBJ_CATALOG, OBJ_LV};
    for (int i = 0; i < 3 && !rc; i++)
        rc = eng_txn_page_alloc(t, obj[i], &pg[i], &b[i]);
    if (!rc && (pg[0] != META_PGNO || pg[1] != 2 || pg[2] != 3))
        rc = om_errf(OM_E_Internal, "catalog pages landed at %u, %u, %u", pg[0], pg[1], pg[2]);
    if (rc) {
        eng_txn_rollback(t);
        return rc;
    }
    memset(b[0], 0, BT_HDR);
    b[0][0] = BT_META;
    om_put32(b[0] + M_MAGIC, META_MAGIC);
    om_put32(b[0] + M_VERSION, META_VERSION);
    om_put32(b[0] + M_CATALOG, pg[1]);
    om_put32(b[0] + M_LV, pg[2]);
    om_put32(b[0] + M_OBJID, OBJ_FIRST_TABLE);
    om_put64(b[0] + M_LVID, 1);
    eng_bt_init_leaf(b[1]);
    eng_bt_init_leaf(b[2]);
    return eng_txn_commit(t, 0);
}

int eng_catalog_exists(eng_db *db)
{
    eng_view *v;
    if (eng_view_begin(db, &v)) return 0;
    bt_ctx c = {NULL, db, OBJ_META};
    const uint8_t *m;
    int ok = eng_page_count(db) >= META_PGNO && eng_space_meta_ro(&c, &m) == 0;
    eng_view_end(v);
    return ok;
}

static int catalog_roots(bt_ctx *c, uint32_t *catalog, uint32_t *lv)
{
    const uint8_t *m;
    int rc = eng_space_meta_ro(c, &m);
    if (rc) return rc;
    if (catalog) *catalog = om_get32(m + M_CATALOG);
    if (lv) *lv = om_get32(m + M_LV);
    return 0;
}

/* ---- views ---- */

int eng_view_begin(eng_db *db, eng_view **out)
{
    eng_view *v = calloc(1, sizeof *v);
    if (!v) return om_errf(OM_E_OutOfMemory, "view: out of memory");
    v->db = db;
    eng_read_lock(db);
    *out = v;
    return 0;
}

void eng_view_end(eng_view *v)
{
    if (!v || v->t) return; /* a transaction's view ends with the transaction */
    eng_read_unlock(v->db);
    free(v);
}

uint64_t eng_view_epoch(eng_view *v)
{
    return v->db->published;
}

void eng_commits_hold(eng_db *db)
{
    eng_role_acquire(db);
}

/* A reader's view still open elsewhere keeps the trim for later (its own end cannot trim while
 * the role is held). */
void eng_commits_trim(eng_db *db)
{
    eng_cache_trim_now(db);
}

void eng_commits_resume(eng_db *db)
{
    eng_role_release(db);
}

static bt_ctx view_ctx(eng_view *v, uint32_t objid)
{
    return (bt_ctx){v->t, v->db, objid};
}

/* ---- validation ---- */

static int check_key(const void *key, uint32_t klen)
{
    if (!key || klen == 0)
        return om_errf(OM_E_InvalidParameter, "a key must have at least one byte");
    if (klen > ENG_MAX_KEY)
        return om_errf(OM_E_InvalidParameter, "key of %u bytes is longer than the %u allowed", klen,
                       ENG_MAX_KEY);
    return 0;
}

static int check_name(const char *name, uint32_t *len)
{
    if (!name || !*name) return om_errf(OM_E_InvalidParameter, "a table needs a name");
    size_t n = strlen(name);
    if (n > ENG_MAX_TABLE_NAME)
        return om_errf(OM_E_InvalidParameter,
                       "table name of %zu bytes is longer than the %u allowed", n,
                       ENG_MAX_TABLE_NAME);
    *len = (uint32_t)n;
    return 0;
}

/* ---- long values ---- */

static void lv_key(uint8_t k[12], uint64_t lvid, uint32_t chunk)
{
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(lvid >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        k[8 + i] = (uint8_t)(chunk >> (24 - 8 * i));
}

static int lv_write(eng_txn *t, const uint8_t *val, uint64_t vlen, uint64_t *lvid)
{
    uint8_t *m;
    int rc = eng_space_meta_mut(t, &m);
    if (rc) return rc;
    *lvid = om_get64(m + M_LVID);
    om_put64(m + M_LVID, *lvid + 1);
    uint32_t lvroot = om_get32(m + M_LV);
    bt_ctx c = {t, eng_txn_db(t), OBJ_LV};
    uint8_t k[12];
    for (uint64_t off = 0, i = 0; off < vlen && !rc; off += BT_LV_CHUNK, i++) {
        lv_key(k, *lvid, (uint32_t)i);
        uint32_t n = vlen - off < BT_LV_CHUNK ? (uint32_t)(vlen - off) : BT_LV_CHUNK;
        rc = eng_bt_insert(&c, lvroot, k, sizeof k, 0, val + off, n);
    }
    return rc;
}

static int lv_free(eng_txn *t, uint64_t lvid)
{
    uint32_t lvroot;
    bt_ctx c = {t, eng_txn_db(t), OBJ_LV};
    int rc = catalog_roots(&c, NULL, &lvroot);
    uint8_t k[12];
    for (uint32_t i = 0; !rc; i++) {
        lv_key(k, lvid, i);
        rc = eng_bt_delete(&c, lvroot, k, sizeof k, NULL, NULL);
    }
    return rc == OM_E_RecordNotFound ? 0 : rc;
}

static int lv_read(bt_ctx *vc, uint32_t rec_pgno, uint64_t lvid, uint64_t vlen, uint64_t off,
                   uint8_t *buf, uint64_t len)
{
    uint32_t lvroot;
    bt_ctx c = {vc->t, vc->db, OBJ_LV};
    int rc = catalog_roots(&c, NULL, &lvroot);
    uint8_t k[12];
    while (!rc && len > 0) {
        uint32_t chunk = (uint32_t)(off / BT_LV_CHUNK), in = (uint32_t)(off % BT_LV_CHUNK);
        lv_key(k, lvid, chunk);
        bt_cell cell;
        rc = eng_bt_find(&c, lvroot, k, sizeof k, &cell);
        if (rc == OM_E_RecordNotFound || (!rc && cell.vlen <= in))
            return om_errf(
                OM_E_DatabaseCorrupted,
                "tree page %u: the long value of a record (id %llu, %llu bytes) is missing its "
                "chunk %u",
                rec_pgno, (unsigned long long)lvid, (unsigned long long)vlen, chunk);
        if (rc) return rc;
        uint64_t n = cell.vlen - in < len ? cell.vlen - in : len;
        memcpy(buf, cell.val + in, n);
        buf += n;
        off += n;
        len -= n;
    }
    return rc;
}

static int free_record_lv(bt_ctx *c, const bt_cell *cell, void *arg)
{
    (void)arg;
    return cell->vkind ? lv_free(c->t, om_get64(cell->val)) : 0;
}

/* ---- tables ---- */

static int catalog_find(bt_ctx *c, const char *name, uint32_t nlen, eng_tbl *tb)
{
    uint32_t croot;
    int rc = catalog_roots(c, &croot, NULL);
    if (rc) return rc;
    bt_ctx cc = {c->t, c->db, OBJ_CATALOG};
    bt_cell cell;
    rc = eng_bt_find(&cc, croot, name, nlen, &cell);
    if (rc == OM_E_RecordNotFound) return om_errf(OM_E_ObjectNotFound, "no table named '%s'", name);
    if (rc) return rc;
    if (cell.vkind || cell.vlen != 8)
        return om_errf(OM_E_DatabaseCorrupted, "catalog entry of '%s' is damaged", name);
    tb->root = om_get32(cell.val);
    tb->objid = om_get32(cell.val + 4);
    return 0;
}

int eng_table_create(eng_txn *t, const char *name, eng_tbl *out)
{
    uint32_t nlen = 0;
    int rc = check_name(name, &nlen);
    if (rc) return rc;
    bt_ctx c = {t, eng_txn_db(t), OBJ_CATALOG};
    eng_tbl tb;
    if ((rc = catalog_roots(&c, NULL, NULL))) return rc; /* no catalog at all */
    rc = catalog_find(&c, name, nlen, &tb);
    if (rc == 0) return om_errf(OM_E_KeyDuplicate, "a table named '%s' already exists", name);
    if (rc != OM_E_ObjectNotFound) return rc;
    uint8_t *m, *rb;
    if ((rc = eng_space_meta_mut(t, &m))) return rc;
    tb.objid = om_get32(m + M_OBJID);
    om_put32(m + M_OBJID, tb.objid + 1);
    uint32_t croot = om_get32(m + M_CATALOG);
    if ((rc = eng_space_alloc(t, tb.objid, &tb.root, &rb))) return rc;
    eng_bt_init_leaf(rb);
    uint8_t v[8];
    om_put32(v, tb.root);
    om_put32(v + 4, tb.objid);
    if ((rc = eng_bt_insert(&c, croot, name, nlen, 0, v, sizeof v))) return rc;
    *out = tb;
    return 0;
}

int eng_table_open(eng_view *v, const char *name, eng_tbl *out)
{
    uint32_t nlen = 0;
    int rc = check_name(name, &nlen);
    if (rc) return rc;
    bt_ctx c = view_ctx(v, OBJ_CATALOG);
    return catalog_find(&c, name, nlen, out);
}

int eng_table_drop(eng_txn *t, const char *name)
{
    uint32_t nlen = 0, croot = 0;
    int rc = check_name(name, &nlen);
    if (rc) return rc;
    bt_ctx c = {t, eng_txn_db(t), OBJ_CATALOG};
    eng_tbl tb;
    if ((rc = catalog_find(&c, name, nlen, &tb))) return rc;
    bt_ctx tc = {t, eng_txn_db(t), tb.objid};
    if ((rc = eng_bt_clear(&tc, tb.root, free_record_lv, NULL))) return rc;
    if ((rc = eng_space_free(t, tb.root))) return rc;
    if ((rc = catalog_roots(&c, &croot, NULL))) return rc;
    return eng_bt_delete(&c, croot, name, nlen, NULL, NULL);
}

/* ---- records ---- */

int eng_put(eng_txn *t, eng_tbl tb, const void *key, uint32_t klen, const void *val, uint64_t vlen,
            unsigned flags)
{
    int rc = check_key(key, klen);
    if (rc) return rc;
    if (vlen > ENG_MAX_VALUE)
        return om_errf(OM_E_InvalidParameter, "value of %llu bytes is larger than the %llu allowed",
                       (unsigned long long)vlen, (unsigned long long)ENG_MAX_VALUE);
    if (vlen && !val)
        return om_errf(OM_E_InvalidParameter, "no value bytes given for %llu bytes",
                       (unsigned long long)vlen);
    bt_ctx c = {t, eng_txn_db(t), tb.objid};
    uint8_t vkind = 0;
    uint64_t lvid = 0;
    bt_cell old;
    rc = eng_bt_find(&c, tb.root, key, klen, &old);
    if (rc == 0 && (flags & ENG_PUT_NOOVERWRITE))
        return om_errf(OM_E_KeyDuplicate, "key already exists");
    if (rc == 0) rc = eng_bt_delete(&c, tb.root, key, klen, &vkind, &lvid);
    if (rc == 0 && vkind) rc = lv_free(t, lvid);
    if (rc == OM_E_RecordNotFound) rc = 0;
    if (rc) return rc;
    if (8 + klen + vlen <= ENG_MAX_INLINE)
        return eng_bt_insert(&c, tb.root, key, klen, 0, val, (uint32_t)vlen);
    if ((rc = lv_write(t, val, vlen, &lvid))) return rc;
    uint8_t id[8];
    om_put64(id, lvid);
    return eng_bt_insert(&c, tb.root, key, klen, 1, id, (uint32_t)vlen);
}

int eng_del(eng_txn *t, eng_tbl tb, const void *key, uint32_t klen)
{
    int rc = check_key(key, klen);
    if (rc) return rc;
    bt_ctx c = {t, eng_txn_db(t), tb.objid};
    uint8_t vkind = 0;
    uint64_t lvid = 0;
    rc = eng_bt_delete(&c, tb.root, key, klen, &vkind, &lvid);
    if (!rc && vkind) rc = lv_free(t, lvid);
    return rc;
}

static int cell_read(bt_ctx *c, const bt_cell *cell, uint64_t off, void *buf, uint64_t len)
{
    if (off > cell->vlen || len > cell->vlen - off)
        return om_errf(OM_E_InvalidParameter,
                       "read of %llu bytes at %llu is past the value's %u bytes",
                       (unsigned long long)len, (unsigned long long)off, cell->vlen);
    if (!cell->vkind) {
        if (len) memcpy(buf, cell->val + off, len);
        return 0;
    }
    return lv_read(c, cell->pgno, om_get64(cell->val), cell->vlen, off, buf, len);
}

int eng_get(eng_view *v, eng_tbl tb, const void *key, uint32_t klen, void **val, uint64_t *vlen)
{
    int rc = check_key(key, klen);
    if (rc) return rc;
    bt_ctx c = view_ctx(v, tb.objid);
    bt_cell cell;
    if ((rc = eng_bt_find(&c, tb.root, key, klen, &cell))) return rc;
    *vlen = cell.vlen;
    *val = NULL;
    if (cell.vlen == 0) return 0;
    uint8_t *buf = malloc(cell.vlen);
    if (!buf)
        return om_errf(OM_E_OutOfMemory, "reading a value of %u bytes: out of memory", cell.vlen);
    if ((rc = cell_read(&c, &cell, 0, buf, cell.vlen))) {
        free(buf);
        return rc;
    }
    *val = buf;
    return 0;
}

/* ---- cursors ---- */

struct eng_cursor {
    eng_view *v;
    eng_tbl tb;
    bt_pos pos;
    int valid;
};

int eng_cursor_open(eng_view *v, eng_tbl tb, eng_cursor **out)
{
    eng_cursor *c = calloc(1, sizeof *c);
    if (!c) return om_errf(OM_E_OutOfMemory, "cursor: out of memory");
    c->v = v;
    c->tb = tb;
    *out = c;
    return 0;
}

void eng_cursor_close(eng_cursor *c)
{
    free(c);
}

static int cursor_moved(eng_cursor *c, int rc)
{
    c->valid = rc == 0;
    return rc;
}

int eng_cursor_seek(eng_cursor *c, const void *key, uint32_t klen)
{
    int rc = check_key(key, klen);
    if (rc) return rc;
    bt_ctx bc = view_ctx(c->v, c->tb.objid);
    return cursor_moved(c, eng_bt_seek(&bc, c->tb.root, key, klen, &c->pos));
}

int eng_cursor_first(eng_cursor *c)
{
    bt_ctx bc = view_ctx(c->v, c->tb.objid);
    return cursor_moved(c, eng_bt_seek(&bc, c->tb.root, NULL, 0, &c->pos));
}

int eng_cursor_next(eng_cursor *c)
{
    if (!c->valid) return om_errf(OM_E_RecordNotFound, "the cursor is not on a record");
    bt_ctx bc = view_ctx(c->v, c->tb.objid);
    return cursor_moved(c, eng_bt_next(&bc, &c->pos));
}

static int cursor_cell(eng_cursor *c, bt_ctx *bc, bt_cell *cell)
{
    if (!c->valid) return om_errf(OM_E_RecordNotFound, "the cursor is not on a record");
    *bc = view_ctx(c->v, c->tb.objid);
    return eng_bt_cell_at(bc, &c->pos, cell);
}

int eng_cursor_key(eng_cursor *c, const void **key, uint32_t *klen)
{
    bt_ctx bc;
    bt_cell cell;
    int rc = cursor_cell(c, &bc, &cell);
    if (rc) return rc;
    *key = cell.key;
    *klen = cell.klen;
    return 0;
}

int eng_cursor_vlen(eng_cursor *c, uint64_t *vlen)
{
    bt_ctx bc;
    bt_cell cell;
    int rc = cursor_cell(c, &bc, &cell);
    if (!rc) *vlen = cell.vlen;
    return rc;
}

int eng_cursor_read(eng_cursor *c, uint64_t off, void *buf, uint64_t len)
{
    bt_ctx bc;
    bt_cell cell;
    int rc = cursor_cell(c, &bc, &cell);
    return rc ? rc : cell_read(&bc, &cell, off, buf, len);
}

/* ---- information ---- */

int eng_space_info(eng_view *v, eng_space *s)
{
    bt_ctx c = view_ctx(v, OBJ_META);
    const uint8_t *m;
    int rc = eng_space_meta_ro(&c, &m);
    if (rc) return rc;
    s->pages = eng_page_count(v->db);
    s->free_pages = om_get32(m + M_NFREE);
    s->lv_count = om_get64(m + M_LVID) - 1;
    return 0;
}

int eng_table_check(eng_view *v, eng_tbl tb, uint64_t *records)
{
    bt_ctx c = view_ctx(v, tb.objid);
    return eng_bt_check(&c, tb.root, records);
}

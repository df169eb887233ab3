/* Where the trees' pages come from (btree.h): a page through the transaction or the committed
 * view of a bt_ctx, the meta page (data page 1, layout in btree.h), and the free-page list it
 * heads: pages freed by a tree go there, and a tree's new pages come from it before the file
 * grows. Called by the tree (btree.c) and the tables (table.c); calls only the transaction
 * layer's page access (txn.c). */
#include "base/bytes.h"
#include "base/error.h"
#include "engine/btree.h"

int eng_space_page_ro(bt_ctx *c, uint32_t pgno, const uint8_t **body)
{
    int rc = c->t ? eng_txn_page_ro(c->t, pgno, body) : eng_view_page(c->db, pgno, body);
    /* A page number the database does not have can only come from a damaged tree. */
    if (rc == OM_E_InvalidParameter)
        rc =
            om_errf(OM_E_DatabaseCorrupted, "a tree points to page %u, which does not exist", pgno);
    return rc;
}

int eng_space_meta_ro(bt_ctx *c, const uint8_t **m)
{
    int rc = eng_space_page_ro(c, META_PGNO, m);
    if (rc) return om_err_ctx(rc, "this database holds no tables");
    if ((*m)[0] != BT_META || om_get32(*m + M_MAGIC) != META_MAGIC)
        return om_errf(OM_E_ObjectNotFound,
                       "this database holds no tables (page 1 is not a table catalog)");
    if (om_get32(*m + M_VERSION) != META_VERSION)
        return om_errf(OM_E_InvalidDatabase, "table catalog version %u is not supported",
                       om_get32(*m + M_VERSION));
    return 0;
}

int eng_space_meta_mut(eng_txn *t, uint8_t **m)
{
    bt_ctx c = {t, eng_txn_db(t), OBJ_META};
    const uint8_t *ro;
    int rc = eng_space_meta_ro(&c, &ro);
    return rc ? rc : eng_txn_page_mut(t, META_PGNO, m);
}

int eng_space_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno, uint8_t **body)
{
    uint8_t *m;
    int rc = eng_space_meta_mut(t, &m);
    if (rc) return rc;
    uint32_t head = om_get32(m + M_FREE);
    if (head == 0) return eng_txn_page_alloc(t, objid, pgno, body);
    const uint8_t *fb;
    bt_ctx c = {t, eng_txn_db(t), OBJ_META};
    if ((rc = eng_space_page_ro(&c, head, &fb))) return rc;
    if (fb[0] != BT_FREE)
        return om_errf(OM_E_DatabaseCorrupted, "free list: page %u is not free", head);
    uint32_t next = om_get32(fb + 8);
    if ((rc = eng_space_meta_mut(t, &m))) return rc;
    om_put32(m + M_FREE, next);
    om_put32(m + M_NFREE, om_get32(m + M_NFREE) - 1);
    *pgno = head;
    return eng_txn_page_reinit(t, head, objid, body);
}

int eng_space_free(eng_txn *t, uint32_t pgno)
{
    uint8_t *m, *b;
    int rc = eng_space_meta_mut(t, &m);
    if (rc) return rc;
    uint32_t head = om_get32(m + M_FREE);
    if ((rc = eng_txn_page_reinit(t, pgno, 0, &b))) return rc;
    b[0] = BT_FREE;
    om_put32(b + 8, head);
    om_put32(m + M_FREE, pgno);
    om_put32(m + M_NFREE, om_get32(m + M_NFREE) + 1);
    return 0;
}

/* B+tree internals shared by space.c (where pages come from), btree.c (the tree) and table.c
 * (catalog, long values, the public API of table.h). Not for use outside src/engine.
 *
 * Node (a page body of ENG_PAGE_BODY bytes), a slotted page:
 *    0 u8  kind      BT_LEAF, BT_INTERNAL, BT_FREE, BT_META
 *    2 u16 nslots    4 u16 cell_lo (cells fill [cell_lo, ENG_PAGE_BODY))
 *    6 u16 frag      bytes of dead cells inside the cell area
 *    8 u32 link      leaf: next leaf (0 = last); internal: leftmost child; free: next free
 *   16 u16 slot[nslots]  cell offsets, in key order
 * Leaf cell:     u16 klen, u8 vkind (0 inline, 1 long), u8 0, u32 vlen, key, value
 *                (a long value's cell holds its 8-byte long-value id instead of the value)
 * Internal cell: u16 klen, u16 0, u32 child, key  (child holds keys >= key)
 *
 * Invariants: keys strictly increase along the slots and across the leaf chain; every key in
 * the subtree of an internal cell is >= its key and < the next cell's; all leaves are at the
 * same depth; a table's root page never changes (a root split moves the root's content into
 * two new children; a root left with one child takes that child's content back). */
#ifndef OM_ENGINE_BTREE_H
#define OM_ENGINE_BTREE_H

#include "engine/db_internal.h"
#include "engine/table.h"

enum { BT_LEAF = 1, BT_INTERNAL = 2, BT_FREE = 3, BT_META = 4 };

#define BT_HDR       16u
#define BT_CAP       (ENG_PAGE_BODY - BT_HDR)
#define BT_MAX_DEPTH 20
#define BT_LV_CHUNK  8100u /* long-value chunk: four chunk cells fill a page */

/* Where pages come from: a transaction (reads see its changes; writes allowed) or a
 * committed view (the read lock held; read-only). */
typedef struct bt_ctx {
    eng_txn *t;
    eng_db *db;
    uint32_t objid; /* object id for pages this tree allocates */
} bt_ctx;

typedef struct bt_cell {
    const uint8_t *key;
    uint32_t klen;
    uint8_t vkind;
    uint32_t vlen;        /* inline length, or the long value's length */
    const uint8_t *val;   /* inline value, or the 8-byte long-value id */
    uint32_t child, size; /* internal cells: child; both: bytes of the cell */
    uint32_t pgno;        /* the page the cell is on */
} bt_cell;

int eng_bt_keycmp(const void *a, uint32_t alen, const void *b, uint32_t blen);

/* A new empty leaf at the given page (a new table's root). */
void eng_bt_init_leaf(uint8_t *body);
/* Finds key; RecordNotFound when absent. *cell points into the page (valid as in table.h). */
int eng_bt_find(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, bt_cell *cell);
/* Inserts a leaf cell (vkind 0: val/vlen inline; 1: val is the 8-byte id, vlen the length).
 * The key must not exist. */
int eng_bt_insert(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, uint8_t vkind,
                  const void *val, uint32_t vlen);
/* Removes key's cell; *old gets a copy of what it held (vkind, vlen, and the long-value id
 * in *old_lvid when vkind is 1). RecordNotFound when absent. */
int eng_bt_delete(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, uint8_t *old_vkind,
                  uint64_t *old_lvid);
/* Frees every page of the tree but the root, and empties the root; calls on_record for each
 * record first (to free long values). */
int eng_bt_clear(bt_ctx *c, uint32_t root,
                 int (*on_record)(bt_ctx *c, const bt_cell *cell, void *arg), void *arg);
/* Structural check (see table.h, eng_table_check). */
int eng_bt_check(bt_ctx *c, uint32_t root, uint64_t *records);

/* Cursor positions: a leaf and a slot. */
typedef struct bt_pos {
    uint32_t leaf;
    int slot;
} bt_pos;
/* First record with key >= key (NULL key: the first record). RecordNotFound: none. */
int eng_bt_seek(bt_ctx *c, uint32_t root, const void *key, uint32_t klen, bt_pos *pos);
int eng_bt_next(bt_ctx *c, bt_pos *pos);
int eng_bt_cell_at(bt_ctx *c, const bt_pos *pos, bt_cell *cell);

/* ---- space (space.c) ----
 * Meta page (data page 1), after the node header:
 *   16 u32 magic   20 u32 version   24 u32 catalog root   28 u32 long-value tree root
 *   32 u32 free list head   36 u32 free pages   40 u32 next object id   44 u64 next long-value id
 * Object ids: 1 meta and free pages' last owner, 2 the catalog, 3 the long-value tree, tables
 * from 16. */
#define META_PGNO       1u
#define META_MAGIC      0x4254424fu /* "OBTB" */
#define META_VERSION    1u
#define OBJ_META        1u
#define OBJ_CATALOG     2u
#define OBJ_LV          3u
#define OBJ_FIRST_TABLE 16u

enum {
    M_MAGIC = 16,
    M_VERSION = 20,
    M_CATALOG = 24,
    M_LV = 28,
    M_FREE = 32,
    M_NFREE = 36,
    M_OBJID = 40,
    M_LVID = 44
};

/* A page of the tree's context: through its transaction (its own changes included) or its
 * committed view. A page number the database does not have is DatabaseCorrupted (only a
 * damaged tree points there). */
int eng_space_page_ro(bt_ctx *c, uint32_t pgno, const uint8_t **body);
/* The meta page, checked (ObjectNotFound: the database holds no tables), read-only or as the
 * transaction's private copy. */
int eng_space_meta_ro(bt_ctx *c, const uint8_t **m);
int eng_space_meta_mut(eng_txn *t, uint8_t **m);
/* A page for a tree: from the free list, else a new one at the end of the file; zeroed, owned
 * by objid. */
int eng_space_alloc(eng_txn *t, uint32_t objid, uint32_t *pgno, uint8_t **body);
/* Puts a tree's page on the free list. */
int eng_space_free(eng_txn *t, uint32_t pgno);

#endif

/* What the repository's files share (repo.c, pack.c, writer.c, verify.c, expire.c, refs.c,
 * stats.c): the handle, the in-memory index, the crypto and the pack record format. Not for
 * other parts. */
#ifndef OM_BACKUP_REPO_INTERNAL_H
#define OM_BACKUP_REPO_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "backup/repo.h"
#include "base/uuid.h"
#include "base/vfs.h"

#define BK_PATH_MAX 4096

/* The repository format this code writes and reads (config.json "version", the pack header's
 * version, index files' and sealed sets' "version"). */
#define BK_FORMAT_VERSION 2

/* How a sealed set file starts (its JSON is written with sorted keys; a plain set document's
 * first key sorts before "encryption", so a plain one never starts so). */
#define BK_SEALED_SET_HEAD "{\"encryption\":"

/* ---- a hash table keyed by 32-byte ids ---- */

/* The ids are hashes, so their first 8 bytes spread well on their own. */
typedef struct bk_ent {
    uint8_t id[BK_ID_LEN];
    uint8_t used;
    uint32_t pack;   /* index in bk_repo.packs (the repository's index) */
    uint32_t stored; /* payload length in the pack */
    uint32_t raw;    /* block length */
    uint64_t off;    /* of the record header */
} bk_ent;

typedef struct bk_map {
    bk_ent *slot;
    size_t cap, n; /* cap: a power of two, or 0 */
} bk_map;

bk_ent *bk_map_get(const bk_map *m, const uint8_t id[BK_ID_LEN]);
/* Adds e unless its id is there; returns the entry for the id (NULL: out of memory). *added
 * (may be NULL) says which. */
bk_ent *bk_map_put(bk_map *m, const bk_ent *e, int *added);
void bk_map_free(bk_map *m);

/* ---- the handle ---- */

typedef struct bk_pack {
    char name[33];
    char **index; /* the index files that list it (normally one) */
    int nindex;
} bk_pack;

struct bk_repo {
    char *path;
    om_vfs *vfs;
    /* The repository's folder, opened once (the configured path may pass through links):
     * every file is written as a name in a folder opened from it without following a link
     * (bk_dir_open), through the durable-file helper of base/vfs.h. */
    om_dir *root;
    om_uuid uuid;
    char uuid_str[37];
    json_t *config;
    uint32_t block_size, pack_size;
    int zstd_level;
    int encrypted;
    uint8_t data_key[32], id_key[32];
    void *mac; /* EVP_MAC_CTX keyed with id_key, duplicated per use */
    int lock_fd;
    int writers; /* open on this handle (atomic) */

    /* The index: guarded by lk. refresh serialises loading index files (two threads starting
     * sets at once would load the same new file twice). */
    pthread_rwlock_t lk;
    pthread_mutex_t refresh;
    bk_map index;  /* block id -> pack, offset, lengths */
    bk_map loaded; /* index file names (as ids) already loaded */
    bk_pack *packs;
    uint32_t npacks, cappacks;
    bk_map packno;  /* pack name (its 16 bytes) -> index in packs (the entry's pack field) */
    json_t *damage; /* [{"index": name, "pack": name or null, "what"}] found while loading */
    /* Another stored copy of an id the index already had (two writers stored one block, a
     * fresh copy of a damaged one, expire's rewrite before the old pack goes): kept so the
     * index can turn to it when the copy it points at is found damaged (bk_index_avoid). */
    bk_ent *alts;
    size_t nalts, capalts;
    /* Stored copies found damaged (damaged.c, damaged.json): location keys (bk_loc_key), under
     * lk. The index never points at one of them while it knows another copy of the id. */
    bk_map bad;
    /* damaged.c's state, under dmg_m: the entries of damaged.json as loaded and as marked
     * through this handle ({"block", "pack", "offset", "found", "by", "what"}), the ones not
     * saved yet, and what was wrong with the file when it could not be used ("" when nothing). */
    pthread_mutex_t dmg_m;
    json_t *dmg_all, *dmg_new;
    int dmg_loaded;
    char dmg_problem[400];
    /* "verify" or "expire" while it reads: damage found is listed as found "by" it; NULL: a
     * restore */
    const char *finder;
    /* A plain repository: the first file found that belongs to an encrypted one ("sets/<s>"
     * or "index/<h>.json"), or "". Once set, the repository is refused (bk_plain_check). */
    char sealed[100];

    bk_progress_fn progress;
    void *progress_arg;
};

/* "<repo>/<rel>" into out. */
int bk_path(const bk_repo *r, char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A folder of the repository: sub is "packs", "index", "sets", "locks" or "." (the root), or
 * "packs/ab" (made when missing, and made durable: its parent synced). Never through a link:
 * a link in its place is InvalidPath. */
int bk_dir_open(bk_repo *r, const char *sub, om_dir **out);

/* ---- ids, hex, crypto ---- */

/* The repository's id function: SHA-256, or HMAC-SHA256 with the id key. */
int bk_id_of(const bk_repo *r, const void *data, size_t len, uint8_t id[BK_ID_LEN]);
/* AES-256-GCM with a random nonce: out = nonce | ciphertext | tag (len + 28 bytes). */
int bk_seal(const uint8_t key[32], const void *aad, size_t aadlen, const void *in, size_t len,
            uint8_t *out);
/* The reverse; RepositoryCorrupt (detail "authentication failed") when it does not verify. out
 * has room for len - 28 bytes. */
int bk_open_sealed(const uint8_t key[32], const void *aad, size_t aadlen, const uint8_t *in,
                   size_t len, uint8_t *out);
#define BK_SEAL_OVERHEAD 28

/* ---- packs (pack.c) ---- */

#define BK_PACK_HDR       32
#define BK_PACK_ENCRYPTED 1u /* the pack header's flags */
#define BK_REC_HDR        56
#define BK_REC_MAGIC      0x314b424fu /* "OBK1" */
#define BK_REC_ZSTD       1u
#define BK_REC_AESGCM     2u

typedef struct bk_rec {
    uint32_t flags, raw, stored;
    uint8_t id[BK_ID_LEN];
} bk_rec;

/* 0 when the open pack starts with this repository's header (magic, format version, flags,
 * id); RepositoryCorrupt naming what differs. */
int bk_pack_header_check(const bk_repo *r, om_file *f);
void bk_rec_encode(const bk_rec *h, uint64_t off, uint8_t out[BK_REC_HDR]);
/* 0, or RepositoryCorrupt with what is wrong in the detail. */
int bk_rec_decode(const uint8_t in[BK_REC_HDR], uint64_t off, bk_rec *h);
/* Compresses (when it helps) and encrypts one block into a malloc'd payload. */
int bk_block_encode(const bk_repo *r, void *zctx, const uint8_t id[BK_ID_LEN], const void *data,
                    size_t len, uint8_t **payload, uint32_t *stored, uint32_t *flags);
/* Reads the record at (pack, off) whose index entry says stored/raw, and checks it all; *data
 * malloc'd. The detail of a failure is what is wrong (without the pack's name). */
int bk_block_read(const bk_repo *r, const char *pack, uint64_t off, const uint8_t id[BK_ID_LEN],
                  uint32_t stored, uint32_t raw, uint8_t **data);
/* bk_reader_get of the block the index entry e of pack says where it is (buf: room for e->raw
 * bytes); the detail of a failure is what is wrong. */
int bk_reader_read(bk_reader *rd, const uint8_t id[BK_ID_LEN], const bk_ent *e, const char *pack,
                   uint8_t *buf);
/* bk_reader_read, and when that copy fails its checks (and is listed), every other copy the
 * index knows, each checked against the id, as a restore reads: 0 with *e and pack naming the
 * copy read, else the first copy's failure. */
int bk_reader_read_any(bk_reader *rd, const uint8_t id[BK_ID_LEN], bk_ent *e, char pack[33],
                       uint8_t *buf);
/* The raw record (header and payload) at off, checked as bk_block_read does. */
int bk_record_read(const bk_repo *r, const char *pack, uint64_t off, const uint8_t id[BK_ID_LEN],
                   uint32_t stored, uint32_t raw, uint8_t **rec);

/* A pack being written: one thread at a time appends to it. */
typedef struct bk_packw {
    char name[33];
    om_dir *dir;     /* packs/ab */
    om_durable file; /* the pack under its temporary name until bk_packw_finish */
    uint64_t off;
    bk_ent *ents;
    size_t n, cap;
} bk_packw;

int bk_packw_create(bk_repo *r, bk_packw **out);
/* Appends a record (payload already encoded). */
int bk_packw_append(bk_packw *p, const bk_rec *h, const uint8_t *payload);
/* Makes the pack durable and listed: om_durable_commit (fsync, rename, directory fsync), index
 * written durably, entries added to the in-memory index. Frees p, whatever the result. An
 * empty pack is removed. */
int bk_packw_finish(bk_repo *r, bk_packw *p);
/* Drops an unfinished pack and its temporary file. */
void bk_packw_discard(bk_repo *r, bk_packw *p);

/* ---- the index (repo.c) ---- */

/* Loads index files not loaded yet. A plain repository in which an encrypted repository's file
 * was found is RepositoryCorrupt (bk_plain_check). */
int bk_index_refresh(bk_repo *r);
/* 0, or (plain repository only) RepositoryCorrupt when one of its set or index files is an
 * encrypted repository's: its config.json was edited or replaced, and writing into it would
 * put plaintext beside ciphertext. Looks at the first bytes of every set file. */
int bk_plain_check(bk_repo *r);
/* Forgets the in-memory index and loads it again (after bk_expire removed packs). */
int bk_index_reload(bk_repo *r);
/* Adds one pack's entries, found in index file idxname (its name as 64 hex digits). Takes
 * lk. */
int bk_index_add(bk_repo *r, const char *pack, const char *idxname, const bk_ent *ents, size_t n);
/* The pack's index in r->packs, or -1 when no index lists it. lk held. */
int64_t bk_pack_find(const bk_repo *r, const char *name);
/* Copies the entry for id (0), or ObjectNotFound; pack gets the pack's name. The entry may be
 * a copy known damaged when the index knows no other (a read of it then fails and says so). */
int bk_index_find(bk_repo *r, const uint8_t id[BK_ID_LEN], bk_ent *e, char pack[33]);

/* ---- copies known damaged (the index's side; damaged.c keeps the list) ---- */

/* The key of one stored copy in bk_repo.bad: SHA-256 of the id, the pack's name and the
 * record's offset. */
void bk_loc_key(const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off,
                uint8_t key[BK_ID_LEN]);
/* Whether the copy at (pack, off) is known damaged. lk held (either way). */
int bk_loc_bad(const bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off);
/* After bk.bad changed for id: points the index at a copy of id not known damaged when it knows
 * one. 1 when the index now points at such a copy, 0 when every copy it knows is damaged (or it
 * knows none). Takes lk. */
int bk_index_avoid(bk_repo *r, const uint8_t id[BK_ID_LEN]);
/* Whether the entry of (pack, off) is in the index, as the copy it points at or another one.
 * Takes lk. */
int bk_index_has_copy(bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off);
/* The copies of id the index knows, listed damaged or not: the one it points at first, then the
 * others; up to cap into e and packs (their packs' names). Returns how many it knows. Takes
 * lk. */
size_t bk_index_copies(bk_repo *r, const uint8_t id[BK_ID_LEN], bk_ent *e, char (*packs)[33],
                       size_t cap);

/* ---- damaged.json (damaged.c) ---- */

/* Loads damaged.json into the handle (its entries join the ones marked through it) and turns
 * the index away from the copies it names. again: read it even when this handle did already
 * (a backup starting: another process's verify may have marked copies since). A file that
 * cannot be used (garbled, another repository's, not a regular file) is ignored with its
 * reason kept (bk_damaged_list's "problem"): 0 all the same. */
int bk_damaged_load(bk_repo *r, int again);
/* The copy of id at (pack, off) failed its checks (what: why): marked damaged in this handle at
 * once (the index turns to another copy when it knows one; a backup stores the block again) and
 * kept for bk_damaged_save. by: "verify" or "restore". Keeps the thread's error as it was. 1
 * when the index now points at a copy not known damaged. */
int bk_damaged_note(bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off,
                    const char *by, const char *what);
/* For bk_expire (the repository to itself): drops the entries whose copy the index no longer
 * lists (expire removed it with its pack, or rewrote the pack without it), and writes the file
 * when that changed anything (*dropped: how many went). A file that could not be used is left
 * as it is. */
int bk_damaged_prune(bk_repo *r, size_t *dropped);

/* ---- sets (repo.c) ---- */

/* The set ids (64 hex digits each, unsorted) in sets/; the index files written since are loaded
 * after the listing (bk_index_refresh), so the index holds the blocks of every set listed. */
int bk_set_ids(bk_repo *r, char (**ids)[65], size_t *n);
/* One listed set file by full id, checked against its name and this repository's id. */
int bk_set_read(bk_repo *r, const char *id, json_t **set);
/* The size in bytes of the file of set id (full id). */
int bk_set_file_size(bk_repo *r, const char *id, uint64_t *n);
/* The AAD of a sealed set: binds it to this repository. */
void bk_set_aad(const bk_repo *r, char aad[64]);
/* The database keys a set names ("database" id or name; "databases"): a JSON array of strings,
 * ["" ] when it names none. */
json_t *bk_set_db_keys(json_t *set);

void bk_progress(bk_repo *r, const char *what, uint64_t done, uint64_t total);

/* ---- the blocks a set uses (refs.c) ---- */

/* Called with each stored block a file entry uses; a nonzero return stops the walk. */
typedef int (*bk_ref_fn)(void *arg, const uint8_t id[BK_ID_LEN]);
/* The stored blocks file (one entry of a set document's "files") uses: each id of its "blocks",
 * or for the regions form (repo.h) the block of each whole region and the blocks each sliced
 * region's pieces come from (a sliced region's own id is no stored block and is not given). A
 * block used twice comes twice. Text that is no id is skipped. 0, or fn's nonzero return. */
int bk_file_refs(json_t *file, bk_ref_fn fn, void *arg);

/* The sets' summaries kept in the data directory (summaries.c): {"<set id>": {"size": the set
 * file's bytes, "summary": as bk_sets gives it}}, an empty object when there is no usable file
 * (never an error); saved best effort (a failure is cleared and changes nothing). */
json_t *bk_summaries_load(const bk_repo *r);
/* Saves summaries (entries may be dropped from it). loaded: what bk_summaries_load gave the
 * caller (NULL: every entry was read from its set now): an entry of summaries that is one of
 * loaded's (the same object) is kept only as the file still has it, so a forget between the
 * load and the save holds. Each save and forget is one read and write under the file's lock. */
void bk_summaries_save(const bk_repo *r, json_t *summaries, json_t *loaded);
/* As bk_sets_whole, each set whole as bk_set_read gives it (its files and documents too):
 * expire's retention and references. */
int bk_sets_full(bk_repo *r, json_t **sets);
/* Drops the summaries kept for the n sets ids, found damaged (nothing for one none is kept
 * for): one load and one save for all of them. */
void bk_summaries_forget(const bk_repo *r, char (*ids)[65], size_t n);
#endif

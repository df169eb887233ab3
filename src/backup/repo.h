/* The backup repository: a directory that holds backup sets, their files cut into blocks, each
 * block stored once however many sets and files use it (ARCHITECTURE.md, "Backup repository";
 * docs/design.md, "Backup repository", has the reasons).
 *
 * Layout, format version 2 (all JSON is UTF-8; ids are lower-case hex). Every file names the
 * repository's id, so a file from another repository is refused wherever it is read:
 *
 *   config.json        {"format": "ombra-backup-repository", "version": 2, "id": uuid,
 *                       "created": ISO time, "block_size": bytes, "pack_size": bytes,
 *                       "compression": {"algorithm": "zstd", "level": L},
 *                       "encryption": null | {"cipher": "aes-256-gcm",
 *                           "kdf": {"name": "scrypt", "n": N, "r": R, "p": P, "salt": hex},
 *                           "key": hex(nonce 12 | wrapped keys 64 | tag 16)},
 *                       "auth": hex}
 *                      "auth" covers every other field (their JSON, compact with sorted keys):
 *                      plain, its SHA-256 (damage is found); encrypted, HMAC-SHA256 under a key
 *                      derived from the id key (no setting can be changed without the
 *                      passphrase). The wrapped keys' AAD is the repository id with every
 *                      encryption parameter. Written last by bk_repo_init: a directory without
 *                      it is no repository. Other versions are refused (no conversion).
 *   packs/ab/<pack>    <pack> = 32 random hex digits, ab = its first two. A 32-byte header
 *                      ("OMBRAPAK", u32 version 2, u32 flags (1: encrypted), the repository's
 *                      uuid), then records, each a 56-byte header and its payload:
 *                        u32 magic "OBK1", u32 flags (1: zstd, 2: AES-256-GCM), u32 raw length,
 *                        u32 stored length, 32-byte block id, u64 XXH3-64 of the 48 bytes
 *                        before it seeded with the record's offset in the pack;
 *                        payload: the block, zstd-compressed when that makes it smaller, then
 *                        when encrypted: nonce 12 | ciphertext | tag 16, the block id as AAD.
 *                      The headers make a pack walkable without its index. A pack whose header
 *                      is not this repository's is not read.
 *                      Written through the durable-file helper (base/vfs.h): under a temporary
 *                      name (.<pack>.<random>.tmp), fsynced, renamed, directory fsynced;
 *                      packs/ab itself is made durable (packs/ fsynced) when it is made.
 *   index/<h>.json     {"version": 2, "repository": uuid, "encryption": null | "aes-256-gcm",
 *                       "pack": <pack>, "blocks": [[id, offset, stored, raw]...]}:
 *                      where each block of one pack is (offset of its record header). <h> is the
 *                      id function of the file's bytes, so a damaged index is recognised as such.
 *                      Written durably right after its pack, before any set that uses it.
 *   sets/<s>.pending   a set committed but not published: never listed, never read (restore,
 *                      verify, retention do not see it). Same content and id as below.
 *   sets/<s>.json      one listed backup set. Plain repository: the set document, <s> = SHA-256
 *                      of the file's bytes. Encrypted: {"encryption": "aes-256-gcm",
 *                      "repository": uuid, "sealed": base64(nonce 12 | AES-256-GCM ciphertext |
 *                      tag 16), "version": 2} (keys sorted, so the file starts with
 *                      {"encryption": which no plain set does; AAD: "ombra-set:" uuid),
 *                      <s> = HMAC of the plaintext document (file names and checksums would
 *                      otherwise show what the backups hold).
 *   damaged.json       {"format": "ombra-damaged-blocks", "version": 1, "repository": uuid,
 *                       "blocks": [{"block": id, "pack": <pack>, "offset": of the record,
 *                         "found": ISO time, "by": "verify" | "restore", "what": why}...],
 *                       "sha256": SHA-256 of "blocks" (compact JSON, sorted keys)}
 *                      stored copies of blocks that failed their checks when read (optional;
 *                      written whole by the durable-file helper). The index never points at a
 *                      listed copy while it knows another copy of the id, and a backup stores
 *                      again a block whose every copy is listed (damaged.c has the rules). A
 *                      file that fails its checks is ignored (bk_damaged_list says why) and
 *                      replaced by the next bk_damaged_save.
 *   locks/repo.lock    flock: every open handle holds it shared, bk_expire exclusively.
 *   locks/damaged.lock flock: held exclusively while damaged.json is read, merged and written.
 *
 * Block id: SHA-256 of the block (plain), HMAC-SHA256 with the repository's id key (encrypted:
 * equal content in two repositories with different keys gets different ids, so ids do not
 * reveal content). Encrypted repositories keep two random 256-bit keys (data, id) wrapped with
 * AES-256-GCM under a key derived from the passphrase with scrypt; a wrong passphrase fails the
 * wrap's authentication: BadPassphrase.
 *
 * Encryption is bound to the repository: a repository made encrypted is never written or read
 * in plaintext. Its config.json cannot be edited to say otherwise unnoticed: a passphrase given
 * for a repository whose config.json says plain is refused (BadPassphrase: a plaintext
 * repository may have been swapped in), and a plain config.json beside an encrypted
 * repository's set or index files is refused (RepositoryCorrupt) with or without one.
 *
 * Set document: what the caller gave bk_set_commit, plus (set by the repository, overriding the
 * caller's): "files": [{"name", "size", "sha256": hex, "xxh3_128": hex (32 lower-case digits, the
 * canonical XXH3-128 of the content: the restore's check of the laid file, docs/design.md "In
 * an encrypted repository the file's check is its XXH3-128" and "In a plain repository each
 * block by its id, the file by its XXH3-128"; sets of earlier builds (and plain ones written
 * between f2fa5bf and 2424631) and the regions form have none, and are checked by their
 * SHA-256),
 * "blocks": the ids concatenated (64 hex digits each), "meta":
 * object}, or the regions form (a synthetic full's .edb,
 * bk_set_add_file_regions): {"name", "size", "regions_sha256": SHA-256 of the region ids (binary,
 * in order), "blocks": one id per region (block size bytes each, the last the rest), "pieces":
 * {"i": "id:off:len,id:off:len,..."}, "meta"}: region i is block i whole, or, when "pieces" has
 * "i", those slices of those blocks (decimal byte offset and length inside the block, adding up
 * to the region), its id then the repository's id function over "ombra-pieces:" and that text.
 * Such an entry has no "sha256", so builds before it refuse the set], "bytes" (sum of the file
 * sizes), "bytes_stored" and "blocks_new", "blocks_reused" (what this set added), "committed_ns"
 * (commit time), "repository" (the repository's id: a set of another repository is
 * RepositoryCorrupt when read), and "time" (ISO) when the caller gave none. bk_set_load adds "id".
 * The backup job adds "changemap" to a full: {"epoch", "read_all", "reason" (when it read all),
 * "fulls_since_read_all", "pages_checked_now", "pages_reused", "reused_from" (a set id)}.
 * Fields the repository reads from the caller's part: "type" (full, copy, incremental,
 * differential), "database": {"id", "name", "base"} (or "databases": [...] of such objects or
 * names), "time", "server", "log_range": [first, last], "parent" (set id or null). Summaries
 * (bk_sets) leave out "files" and every top-level field whose name ends in "_metadata" or
 * "_document", and add "nfiles"; everything else the caller gave is there (no need to load each
 * set). bk_verify holds a set to what a backup writes (backup/setfiles.h: the file names).
 *
 * Crash safety: kill -9 at any moment leaves a valid repository. A set is written only after
 * every pack and index it uses is durable, first as sets/<s>.pending (durably), and it is
 * listed only once bk_set_publish renamed it to sets/<s>.json: a crash leaves either a pending
 * file (never listed; bk_expire removes it) or a listed set that is whole. Blocks in the packs a
 * dead writer had finished are indexed and reused by the next set; the packs it had open stay
 * *.tmp (removed by bk_expire). A pack shorter than its index says (damaged storage) loses those
 * entries when the index is loaded, so the next set stores those blocks again.
 *
 * Threads: one bk_repo may be used from any number of threads; many writers may be open on it
 * at once (and in other processes: concurrent backups of different databases), and
 * bk_put_block may be called from many threads on one writer. */
#ifndef OM_BACKUP_REPO_H
#define OM_BACKUP_REPO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/retention.h"
#include "base/vfs.h"

#define BK_ID_LEN 32 /* SHA-256, or HMAC-SHA256 with the repository key when encrypted */

/* Ids in set documents and indexes are lower-case hex. */
void bk_hex(const uint8_t *b, size_t n, char *out); /* 2n digits and a NUL */
/* 0, or -1 when s is not exactly 2n hex digits. */
int bk_unhex(const char *s, uint8_t *b, size_t n);

#define BK_DEFAULT_BLOCK_SIZE (1u << 20)
#define BK_DEFAULT_PACK_SIZE  (32u << 20)
#define BK_DEFAULT_ZSTD_LEVEL 3

typedef struct bk_repo bk_repo;

typedef struct bk_init_opts {
    uint32_t block_size; /* 0: 1 MiB; a power of two from 4 KiB to 64 MiB */
    int zstd_level;      /* 0: 3; 1..19 */
    int encrypt;         /* needs passphrase */
    const char *passphrase;
    uint32_t pack_size; /* 0: 32 MiB; a pack is finished once it holds this much (>= 64 KiB) */
} bk_init_opts;

/* Creates a repository at path (created when missing; a non-empty directory is refused with
 * FileAlreadyExists). o may be NULL for the defaults. */
int bk_repo_init(const char *path, const bk_init_opts *o);

/* Opens a repository and takes its lock shared (waits while bk_expire runs). passphrase: NULL
 * (or "") for a plain repository; an encrypted repository without one or with a wrong one is
 * BadPassphrase, and so is a plain repository given one (it may have been put in the place of
 * an encrypted one). A directory without config.json is NotRepository, another format version
 * NotRepository, a config.json that fails its "auth" RepositoryCorrupt, a plain config.json
 * beside an encrypted repository's files RepositoryCorrupt. */
int bk_repo_open(const char *path, const char *passphrase, bk_repo **out);
/* As bk_repo_init and bk_repo_open, on the file system v (base/vfs.h) instead of the real one:
 * the crash tests put tests/support/crashvfs.c under a repository. Every file the repository
 * writes goes through v. The lock between processes (locks/repo.lock) is taken on the real file
 * system only: another one lives in one process. */
int bk_repo_init_vfs(om_vfs *v, const char *path, const bk_init_opts *o);
int bk_repo_open_vfs(om_vfs *v, const char *path, const char *passphrase, bk_repo **out);
/* Closes; writers still open on it must be committed or aborted first. */
void bk_repo_close(bk_repo *r);
uint32_t bk_repo_block_size(const bk_repo *r);
/* 1 when the repository is encrypted (its blocks and sets authenticated under its key). */
int bk_repo_encrypted(const bk_repo *r);
/* The repository's config.json (without the wrapped key); the caller decrefs. */
json_t *bk_repo_info(const bk_repo *r);

/* Long operations (bk_verify, bk_expire) report progress here: what, done, total. */
typedef void (*bk_progress_fn)(void *arg, const char *what, uint64_t done, uint64_t total);
void bk_repo_set_progress(bk_repo *r, bk_progress_fn fn, void *arg);

/* ---- writing one backup set ---- */

typedef struct bk_writer bk_writer;

/* Starts a set (first loading the index files other processes wrote since the open). */
int bk_set_begin(bk_repo *r, bk_writer **out);
/* Stores one block (1 <= len <= block size) unless the repository, or this writer, already has
 * it: hash, look up, compress, encrypt, append to one of the writer's packs. Many threads may
 * call it at once. *id gets the block's id; *stored_new (may be NULL) 1 when it was stored now.
 * A failure here means the set cannot be committed (bk_set_commit returns it again). */
int bk_put_block(bk_writer *w, const void *data, size_t len, uint8_t id[BK_ID_LEN],
                 int *stored_new);
/* One file of the set: its name (relative path in the set, unique in it), size, SHA-256 of the
 * whole content, its XXH3-128 (canonical, big-endian; NULL: the entry has none, as from builds
 * before it) and its block ids in order (every id must be in the repository or put by this
 * writer, and their lengths must add up to size: InvalidParameter otherwise). meta: any JSON
 * object kept with the file, or NULL (stolen). Thread-safe. */
int bk_set_add_file(bk_writer *w, const char *name, uint64_t size, const uint8_t sha256[32],
                    const uint8_t xxh3_128[16], const uint8_t (*ids)[BK_ID_LEN], size_t nblocks,
                    json_t *meta);
/* A file of the regions form (a synthetic full's .edb; the set format at the top): region i
 * (block size bytes, the last the rest) is block ids[i] whole, or, when pieces (a JSON object,
 * stolen) has the key "i", the slices of blocks that string names (bk_pieces_parse), ids[i]
 * being their id (bk_pieces_id). Every block named must be in the repository or put by this
 * writer, every slice inside its block, the lengths must make each region: InvalidParameter
 * otherwise. The entry gets "regions_sha256" (SHA-256 of the ids in order) instead of "sha256". */
int bk_set_add_file_regions(bk_writer *w, const char *name, uint64_t size,
                            const uint8_t (*ids)[BK_ID_LEN], size_t nregions, json_t *pieces,
                            json_t *meta);
/* Finishes the set: every pack it wrote is fsynced, renamed and indexed (durably), then the set
 * file is written durably, last, as PENDING: nobody sees it (bk_sets, bk_set_load, bk_verify,
 * bk_expire's retention) until bk_set_publish. doc: the set's own fields (see the top of this
 * file), stolen. set_id gets the new set's id (64 hex digits). The writer is freed whatever the
 * result; on failure nothing is pending. No call to bk_put_block may still be running. */
int bk_set_commit(bk_writer *w, json_t *doc, char set_id[65]);
/* Lists a committed set (the backup it holds succeeded): sets/<s>.pending renamed to
 * sets/<s>.json, the directory fsynced. 0 too when it is listed already; SetNotFound when
 * there is no such pending set. */
int bk_set_publish(bk_repo *r, const char set_id[65]);
/* Removes a pending set (its backup failed); its blocks stay, reused by the next set or freed
 * by bk_expire. SetNotFound when there is no such pending set (a published one is never
 * removed here). */
int bk_set_discard(bk_repo *r, const char set_id[65]);
/* Drops the set: nothing is listed; the packs already written are finished and indexed so the
 * next set reuses their blocks. Frees the writer. */
void bk_set_abort(bk_writer *w);
/* bytes given to bk_put_block, bytes written to packs (after compression and encryption), and
 * how many blocks were new and how many were already there. Thread-safe. */
void bk_writer_stats(const bk_writer *w, uint64_t *bytes_in, uint64_t *bytes_stored,
                     uint64_t *blocks_new, uint64_t *blocks_reused);
/* How many of the blocks new here the repository had only as copies known damaged
 * (damaged.json): stored again by this writer, they serve the older sets that name them too.
 * The set document gets it as "blocks_stored_again". Thread-safe. */
uint64_t bk_writer_stored_again(const bk_writer *w);
/* 1 when the repository holds a copy of block id not known damaged (a backup may refer to it
 * without storing it), 0 otherwise. */
int bk_block_usable(bk_repo *r, const uint8_t id[BK_ID_LEN]);

/* ---- reading ---- */

/* Summaries of every set, oldest commit first (*sets: a JSON array; decref it). A set file
 * that cannot be read is listed as {"id", "damaged": why}. A set that read and checked well is
 * read once: its summary is kept in the data directory (summaries.c) and taken from there
 * after, while its file keeps its size (its name is its content's id). A set damaged in place
 * after that is listed as it was (verify reads every set). */
int bk_sets(bk_repo *r, json_t **sets);
/* As bk_sets, every set file read whole and checked now, nothing kept used (what is kept is
 * written again from what was read): what a restore decides by (which database a name is,
 * which chain, which point), and repo stats. */
int bk_sets_whole(bk_repo *r, json_t **sets);
/* One whole set by id or unique id prefix (SetNotFound; InvalidParameter when ambiguous);
 * a set file whose content does not match its name is RepositoryCorrupt. A whole id is read by
 * its name (sets/ is listed only for a prefix). */
int bk_set_load(bk_repo *r, const char *set_id, json_t **set);
/* The checks bk_verify makes of a set document without reading its blocks (file names, sizes
 * against block counts, the log range against the log files, the writer's documents against
 * the set's database): 0, or RepositoryCorrupt naming the first problem. bk_sets lists a set
 * that fails them as damaged, and a restore refuses it, so a crafted document (a log range
 * that lies, another database's paths) never steers a restore. */
int bk_set_check(bk_repo *r, json_t *set);
/* One block: read, authenticated (encrypted), decompressed, and its id checked. *data is
 * malloc'd. ObjectNotFound when no index lists it, RepositoryCorrupt when it is damaged. */
int bk_get_block(bk_repo *r, const uint8_t id[BK_ID_LEN], uint8_t **data, size_t *len);

/* Reading many blocks (restore): a reader keeps its last pack open, its buffers and a
 * decompression context. One thread per reader; any number of readers on one repository. */
typedef struct bk_reader bk_reader;
int bk_reader_new(bk_repo *r, bk_reader **out);
void bk_reader_free(bk_reader *rd);
/* bk_get_block into buf (cap bytes, at least the block's length; the repository's block size
 * always is): *len gets the length. The same errors. */
int bk_reader_get(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap,
                  size_t *len);
/* As bk_reader_get, except that the content is not hashed against its id: for a caller whose
 * own hash covers every byte of the block and is checked before the content is used (the
 * restore checks each file's SHA-256, or in an encrypted repository, where this read also
 * authenticates the block under its id, its XXH3-128, before the file takes its name, and on a
 * mismatch reads
 * the file's blocks again with bk_reader_get to name the damaged one). Everything else is
 * checked as there: the index entry, the record's header (its checksum, id and lengths),
 * decryption's authentication tag, decompression and the length. */
int bk_reader_get_covered(bk_reader *rd, const uint8_t id[BK_ID_LEN], uint8_t *buf, size_t cap,
                          size_t *len);

/* Regions made of slices of blocks (a synthetic full's .edb; the set format at the top):
 * bk_pieces_parse: "id:off:len,..." into *v (malloc'd), RepositoryCorrupt when malformed or when
 *   the lengths do not add up to region_len.
 * bk_pieces_id: a region's id: the repository's id function over "ombra-pieces:" and the string.
 * bk_reader_get_ref: region i's bytes into buf: the block id itself when pieces is NULL
 *   (bk_reader_get), else the pieces read, each block's id checked and each slice inside its
 *   block, and the pieces' id equal to id. The same errors as bk_reader_get. */
typedef struct bk_piece {
    uint8_t id[BK_ID_LEN];
    uint32_t off, len;
} bk_piece;
int bk_pieces_parse(const char *s, uint32_t region_len, bk_piece **v, size_t *n);
int bk_pieces_id(const bk_repo *r, const char *s, uint8_t id[BK_ID_LEN]);
int bk_reader_get_ref(bk_reader *rd, const uint8_t id[BK_ID_LEN], const char *pieces,
                      uint32_t region_len, uint8_t *buf, size_t cap, size_t *len);

/* ---- verify ---- */

/* One problem bk_verify found. Any of set, file, block, pack may be NULL when it does not
 * apply (a damaged index file names no set; a damaged set file no block). */
typedef struct bk_damage {
    const char *set;   /* set id */
    const char *file;  /* file name in the set */
    const char *block; /* block id, hex */
    const char *pack;  /* pack id */
    uint64_t offset;   /* of the block's record in the pack */
    const char *what;  /* what is wrong, one line */
    int marked;        /* the copy at pack/offset is listed in damaged.json now */
} bk_damage;
typedef void (*bk_damage_cb)(void *arg, const bk_damage *d);

/* Reads every block the set references (every listed set when set_id is NULL; a unique prefix
 * is enough), checks each block's id and length, and each file's size, SHA-256 and XXH3-128 (when
 * the entry has one); checks each
 * set document against what a backup writes (its type, database, log range, file names by
 * backup/setfiles.h, sizes against block counts, no name twice, logs within the range and every
 * generation of it held, one database file in a full or copy, the writer's metadata naming
 * that file); with set_id NULL also reports damaged or foreign set and index files and packs
 * whose header is not this repository's. cb (may be NULL) gets each problem, from one thread at
 * a time. *blocks_checked (may be NULL): block reads done. Returns 0 when all is well,
 * RepositoryCorrupt when anything was reported, or the error that stopped it. Runs on every
 * core. */
int bk_verify(bk_repo *r, const char *set_id, bk_damage_cb cb, void *arg, uint64_t *blocks_checked);
/* bk_verify (and a restore that reads one) list each stored copy that fails its checks in
 * damaged.json; bk_verify reports (cb) a damaged.json that cannot be used, and replaces it.
 *
 * bk_damaged_save: writes the copies this handle found damaged into damaged.json (merged with
 *   what the file holds; serialised with other processes by locks/damaged.lock). bk_verify
 *   calls it; a restore calls it before it closes the repository. 0 when there was nothing.
 * bk_damaged_list: *out {"file": "damaged.json", "problem": why the file could not be used, or
 *   null, "blocks": [the file's entries whose copy the index still lists, each with "good_copy":
 *   whether the repository holds another copy of the block not known damaged (a backup stored
 *   it again, or it had one)], "waiting": how many have none (a backup of what they held stores
 *   them again)}. */
int bk_damaged_save(bk_repo *r);
int bk_damaged_list(bk_repo *r, json_t **out);

/* ---- expire ---- */

/* Retention, per database (the set's "database" id, else its name): the newest keep_full full
 * sets are kept with everything committed after the oldest of them (their incremental and
 * differential chains, and copies); every older set of that database is deleted. A database
 * with keep_full or fewer full sets loses nothing. Copy sets never count as a full (an
 * incremental's base is the last full, not a copy), and a set naming several databases is
 * deleted only when every one of them lets it go. Then packs: a pack no remaining set uses is
 * deleted (its index first); a pack less than half used is rewritten with only its used blocks
 * (new pack and index durable first, then the old ones removed), and so are the packs under a
 * quarter of the pack size once 32 of them read back sound (merged into full-sized ones: each
 * pack has an index file, which every open loads; a block with a sound copy in a pack that
 * stays is dropped, not copied again; a full disk stops rewrites and merges, not expire);
 * leftovers of killed writers
 * (*.tmp, packs no index lists, pending sets: the pending ones first of all) are removed. Needs
 * the repository to itself (RepositoryInUse while another handle or a writer has it) and every
 * set file readable (RepositoryCorrupt otherwise: nothing but pending sets is deleted). keep_full
 * >= 1. *report (may be NULL): {"keep_full", "sets_deleted": [ids], "sets_kept", "packs_deleted",
 * "packs_rewritten", "packs_merged" (of those rewritten, the small ones), "rewrites_stopped"
 * (null, or why rewrites and merges stopped: the disk full; expire still returns 0, with the
 * sets, unused packs and leftovers done), "bytes_freed" (of packs and leftovers removed, net
 * of the packs written), "leftovers_removed", "pending_removed"}: leftovers count every
 * file removed as such, pending sets (sets/<s>.pending: no writer can be mid-backup while expire
 * has the repository, so a pending set is one whose backup died) among them. */
int bk_expire(bk_repo *r, unsigned keep_full, json_t **report);
/* Retention by policies (backup/retention.h: the rules, whole chains, per database; np >= 1
 * policies as bk_retention_plan_n takes them, one for the command line): the sets the plan does
 * not keep are deleted, then packs and leftovers as bk_expire does (it is this with keep_full
 * alone). *report: bk_expire's fields plus "dry_run": false, "policies" (the rules each gave:
 * "keep_full", "keep_last", ..., "keep_within", "databases"), and the plan's "kept" and
 * "removed". dry_run: the same sets read the same way and the same plan, under the shared lock
 * only; nothing is written or removed (not even pending sets or leftovers), so it runs beside
 * backups; *report is the plan with "dry_run": true and "policies". The sets a real run deletes
 * ("sets_deleted") are the ones its plan, and a dry run just before it, call "removed". Errors:
 * those of bk_expire and bk_retention_plan_n. */
int bk_expire_policy(bk_repo *r, const bk_policy *p, size_t np, int dry_run, json_t **report);

/* The test hook of backup, restore and expire: when the environment variable var names stage,
 * prints "paused <stage>" on stderr and stops the process (SIGSTOP), for a test to damage files,
 * kill it (SIGKILL) or let it go on (SIGCONT). expire's: OMBRA_EXPIRE_PAUSE=deleting (after the
 * first set file it deletes). A second hook of expire's: OMBRA_EXPIRE_MERGE_MIN=N (2 to 1000000)
 * merges the small packs once there are N of them instead of 32 (the campaigns' few sets).
 * A listing's: OMBRA_SUMMARIES_PAUSE=save (before it saves the sets' summaries it changed). */
void bk_pause_at(const char *var, const char *stage);

#endif

/* The repository handle: creating and opening (config.json, the keys), the lock, the in-memory
 * index, reading set files. repo.h has the format; repo_internal.h what the other files of
 * the part share. Blocks are read in pack.c (bk_get_block, the readers) and the sets listed in
 * verify.c (bk_sets checks each): both call this file, never the reverse.
 *
 * Invariants the rest relies on:
 * - every entry of the in-memory index points into a pack that was durable before its index
 *   file was written, and whose size covers the entry (checked when the index file is loaded);
 * - index files and set files are named by the id function of their content, so reading one
 *   checks it;
 * - while a handle is open its flock on locks/repo.lock is held shared, so no bk_expire (which
 *   holds it exclusively) deletes anything under it. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "backup/repo_internal.h"
#include "base/bytes.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/paths.h"
#include "base/proto.h"
#include "base/time.h"

#define FORMAT_NAME "ombra-backup-repository"
#define FORMAT_VER  BK_FORMAT_VERSION

/* scrypt: 32 MiB and about 0.1 s per derivation; only bk_repo_open pays it. */
#define SCRYPT_N      32768
#define SCRYPT_R      8
#define SCRYPT_P      1
#define SCRYPT_MAXMEM (256u << 20)

/* ---- the id map ---- */

static size_t slot_of(const bk_map *m, const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return (size_t)h & (m->cap - 1);
}

bk_ent *bk_map_get(const bk_map *m, const uint8_t id[BK_ID_LEN])
{
    if (!m->cap) return NULL;
    for (size_t i = slot_of(m, id);; i = (i + 1) & (m->cap - 1)) {
        bk_ent *e = &m->slot[i];
        if (!e->used) return NULL;
        if (memcmp(e->id, id, BK_ID_LEN) == 0) return e;
    }
}

static int map_grow(bk_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    bk_ent *s = calloc(cap, sizeof *s);
    if (!s) return -1;
    bk_map nm = {s, cap, 0};
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].used) {
            size_t j = slot_of(&nm, m->slot[i].id);
            while (s[j].used)
                j = (j + 1) & (cap - 1);
            s[j] = m->slot[i];
            nm.n++;
        }
    free(m->slot);
    *m = nm;
    return 0;
}

bk_ent *bk_map_put(bk_map *m, const bk_ent *e, int *added)
{
    if (added) *added = 0;
    bk_ent *have = bk_map_get(m, e->id);
    if (have) return have;
    if ((m->n + 1) * 10 > m->cap * 7 && map_grow(m)) return NULL;
    size_t i = slot_of(m, e->id);
    while (m->slot[i].used)
        i = (i + 1) & (m->cap - 1);
    m->slot[i] = *e;
    m->slot[i].used = 1;
    m->n++;
    if (added) *added = 1;
    return &m->slot[i];
}

void bk_map_free(bk_map *m)
{
    free(m->slot);
    *m = (bk_map){0};
}

/* ---- paths, hex, crypto ---- */

int bk_path(const bk_repo *r, char *out, size_t len, const char *fmt, ...)
{
    char rel[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    return om_path_join(out, len, r->path, rel);
}

int bk_dir_open(bk_repo *r, const char *sub, om_dir **out)
{
    char top[16];
    const char *slash = strchr(sub, '/');
    *out = NULL;
    if (!slash) return om_dir_open(r->vfs, r->root, sub, 0, out);
    snprintf(top, sizeof top, "%.*s", (int)(slash - sub), sub);
    om_dir *parent = NULL;
    int rc = om_dir_open(r->vfs, r->root, top, 0, &parent), kind = 0;
    if (!rc) kind = om_kind_at(parent, slash + 1);
    if (!rc && kind < 0) rc = kind;
    if (!rc) rc = om_dir_open(r->vfs, parent, slash + 1, kind ? 0 : OM_D_CREATE, out);
    /* A folder made now: until its name is durable a crash could take it, and the packs that
     * are durable in it, away. (Two writers may both make it: both sync.) */
    if (!rc && !kind) rc = om_dir_sync(parent);
    if (rc) {
        om_dir_close(*out);
        *out = NULL;
    }
    om_dir_close(parent);
    return rc;
}

void bk_hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int bk_unhex(const char *s, uint8_t *b, size_t n)
{
    if (!s || strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int is_hex_name(const char *name, size_t digits, const char *suffix)
{
    size_t l = strlen(name), sl = strlen(suffix);
    if (l != digits + sl || strcmp(name + digits, suffix)) return 0;
    for (size_t i = 0; i < digits; i++)
        if (hexval(name[i]) < 0 || (name[i] >= 'A' && name[i] <= 'F')) return 0;
    return 1;
}

static int crypto_err(const char *what)
{
    return om_errf(OM_E_Internal, "%s failed in OpenSSL", what);
}

int bk_id_of(const bk_repo *r, const void *data, size_t len, uint8_t id[BK_ID_LEN])
{
    if (!r->encrypted) {
        unsigned n = 0;
        return EVP_Digest(data, len, id, &n, EVP_sha256(), NULL) == 1 ? 0 : crypto_err("SHA-256");
    }
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(r->mac);
    size_t n = 0;
    int ok = c && EVP_MAC_update(c, data, len) == 1 && EVP_MAC_final(c, id, &n, BK_ID_LEN) == 1 &&
             n == BK_ID_LEN;
    EVP_MAC_CTX_free(c);
    return ok ? 0 : crypto_err("HMAC-SHA256");
}

int bk_seal(const uint8_t key[32], const void *aad, size_t aadlen, const void *in, size_t len,
            uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0;
    int ok = c && RAND_bytes(out, 12) == 1 &&
             EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, out) == 1 &&
             (!aadlen || EVP_EncryptUpdate(c, NULL, &n, aad, (int)aadlen) == 1) &&
             EVP_EncryptUpdate(c, out + 12, &n, in, (int)len) == 1 &&
             EVP_EncryptFinal_ex(c, out + 12 + n, &m) == 1 && (size_t)(n + m) == len &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + 12 + len) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : crypto_err("AES-256-GCM encryption");
}

int bk_open_sealed(const uint8_t key[32], const void *aad, size_t aadlen, const uint8_t *in,
                   size_t len, uint8_t *out)
{
    if (len < BK_SEAL_OVERHEAD)
        return om_errf(OM_E_RepositoryCorrupt, "encrypted data of %zu bytes is too short", len);
    size_t clen = len - BK_SEAL_OVERHEAD;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0;
    if (!c) return om_errf(OM_E_OutOfMemory, "out of memory");
    int ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, in) == 1 &&
             (!aadlen || EVP_DecryptUpdate(c, NULL, &n, aad, (int)aadlen) == 1) &&
             EVP_DecryptUpdate(c, out, &n, in + 12, (int)clen) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(in + 12 + clen)) == 1;
    int fin = ok && EVP_DecryptFinal_ex(c, out + n, &m) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) return crypto_err("AES-256-GCM decryption");
    return fin ? 0 : om_errf(OM_E_RepositoryCorrupt, "authentication failed (damaged or altered)");
}

static int mac_init(bk_repo *r)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    if (!c || EVP_MAC_init(c, r->id_key, sizeof r->id_key, params) != 1) {
        EVP_MAC_CTX_free(c);
        return crypto_err("HMAC setup");
    }
    r->mac = c;
    return 0;
}

/* The key that wraps the repository's keys, from the passphrase. */
static int derive_kek(const char *pass, const uint8_t *salt, size_t saltlen, uint64_t n,
                      uint64_t rr, uint64_t p, uint8_t kek[32])
{
    if (EVP_PBE_scrypt(pass, strlen(pass), salt, saltlen, n, rr, p, SCRYPT_MAXMEM, kek, 32) != 1)
        return om_errf(OM_E_Internal, "scrypt (n=%llu, r=%llu, p=%llu) failed",
                       (unsigned long long)n, (unsigned long long)rr, (unsigned long long)p);
    return 0;
}

/* The wrap's AAD: the repository's id and every encryption parameter, so the wrapped keys open
 * only in the repository they were made for and under the settings they were made with. */
static void wrap_aad(const char *uuid, int64_t n, int64_t rr, int64_t p, const char *salthex,
                     char *aad, size_t len)
{
    snprintf(aad, len, "ombra-repository-keys:%d:%s:aes-256-gcm:scrypt:%lld:%lld:%lld:%s",
             FORMAT_VER, uuid, (long long)n, (long long)rr, (long long)p, salthex);
}

/* config.json's "auth", over the canonical JSON (compact, sorted keys) of everything else in it.
 * Plain (id_key NULL): its SHA-256, which finds damage. Encrypted: HMAC-SHA256 under a key
 * derived from the repository's id key, which only a holder of the passphrase can make, so no
 * setting, "encryption" least of all, can be changed unnoticed. */
static int config_auth(const uint8_t *id_key, json_t *cfg, char hex[65])
{
    json_t *c = json_deep_copy(cfg);
    if (c) json_object_del(c, "auth");
    char *text = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(c);
    if (!text) return om_errf(OM_E_OutOfMemory, "out of memory");
    static const char label[] = "ombra-repository-config";
    uint8_t key[32], mac[32];
    size_t n = 0;
    unsigned dn = 0;
    int ok = id_key
                 ? EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, id_key, 32,
                             (const unsigned char *)label, sizeof label - 1, key, sizeof key, &n) &&
                       EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof key,
                                 (const unsigned char *)text, strlen(text), mac, sizeof mac, &n)
                 : EVP_Digest(text, strlen(text), mac, &dn, EVP_sha256(), NULL) == 1;
    OPENSSL_cleanse(key, sizeof key);
    free(text);
    if (!ok) return crypto_err(id_key ? "HMAC-SHA256" : "SHA-256");
    bk_hex(mac, sizeof mac, hex);
    return 0;
}

/* ---- creating ---- */

/* Stops the listing at the first name: the directory is not empty. */
static int any_entry(void *arg, const char *name)
{
    (void)arg;
    (void)name;
    return 1;
}

static json_t *encryption_json(const char *uuid, const char *pass, uint8_t keys[64], int *rc)
{
    uint8_t salt[32], kek[32], wrapped[64 + BK_SEAL_OVERHEAD];
    char aad[256], salthex[65], keyhex[2 * sizeof wrapped + 1];
    *rc = RAND_bytes(salt, sizeof salt) == 1 && RAND_bytes(keys, 64) == 1
              ? 0
              : crypto_err("random key generation");
    if (!*rc) *rc = derive_kek(pass, salt, sizeof salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, kek);
    bk_hex(salt, sizeof salt, salthex);
    wrap_aad(uuid, SCRYPT_N, SCRYPT_R, SCRYPT_P, salthex, aad, sizeof aad);
    if (!*rc) *rc = bk_seal(kek, aad, strlen(aad), keys, 64, wrapped);
    OPENSSL_cleanse(kek, sizeof kek);
    if (*rc) return NULL;
    bk_hex(wrapped, sizeof wrapped, keyhex);
    return json_pack("{s:s, s:{s:s, s:i, s:i, s:i, s:s}, s:s}", "cipher", "aes-256-gcm", "kdf",
                     "name", "scrypt", "n", SCRYPT_N, "r", SCRYPT_R, "p", SCRYPT_P, "salt", salthex,
                     "key", keyhex);
}

/* The folders of a new repository and its lock file, in root (empty); their names become
 * durable with the sync of root that puts config.json in place. */
static int make_layout(om_vfs *v, om_dir *root)
{
    static const char *const dirs[] = {"packs", "index", "sets", "locks"};
    int rc = 0;
    for (size_t i = 0; i < 4 && !rc; i++) {
        om_dir *d = NULL;
        rc = om_dir_open(v, root, dirs[i], OM_D_CREATE, &d);
        if (!rc && !strcmp(dirs[i], "locks")) rc = om_durable_write_at(d, "repo.lock", "", 0, 0);
        om_dir_close(d);
    }
    return rc;
}

/* The configured path's parent: it holds the repository's name, made durable at the end of
 * bk_repo_init when the folder was made there. */
static int sync_parent(om_vfs *v, const char *path)
{
    char parent[BK_PATH_MAX];
    om_dir *d = NULL;
    if (strlen(path) >= sizeof parent) return om_errf(OM_E_InvalidPath, "path too long: %s", path);
    om_dirname(path, parent, sizeof parent);
    int rc = om_dir_open(v, NULL, parent, OM_D_FOLLOW, &d);
    if (!rc) rc = om_dir_sync(d);
    om_dir_close(d);
    return rc;
}

int bk_repo_init(const char *path, const bk_init_opts *o)
{
    return bk_repo_init_vfs(om_vfs_posix(), path, o);
}

int bk_repo_init_vfs(om_vfs *v, const char *path, const bk_init_opts *o)
{
    bk_init_opts d = {0};
    if (!o) o = &d;
    uint32_t bs = o->block_size ? o->block_size : BK_DEFAULT_BLOCK_SIZE;
    uint32_t ps = o->pack_size ? o->pack_size : BK_DEFAULT_PACK_SIZE;
    int lvl = o->zstd_level ? o->zstd_level : BK_DEFAULT_ZSTD_LEVEL;
    if (bs < 4096 || bs > (64u << 20) || (bs & (bs - 1)))
        return om_errf(OM_E_InvalidParameter,
                       "block size %u: must be a power of two from 4 KiB to 64 MiB", bs);
    if (ps < (64u << 10))
        return om_errf(OM_E_InvalidParameter, "pack size %u: must be at least 64 KiB", ps);
    if (lvl < 1 || lvl > 19)
        return om_errf(OM_E_InvalidParameter, "zstd level %d: must be from 1 to 19", lvl);
    if (o->encrypt && (!o->passphrase || !*o->passphrase))
        return om_errf(OM_E_InvalidParameter, "an encrypted repository needs a passphrase");

    om_dir *root = NULL;
    int made = v->exists(v, path) == 0;
    int rc = om_dir_open(v, NULL, path, OM_D_CREATE | OM_D_FOLLOW, &root);
    if (!rc) rc = om_list_at(root, any_entry, NULL);
    if (rc == 1)
        rc = om_errf(OM_E_FileAlreadyExists,
                     "%s is not empty. HINT: a repository is created in a new or empty directory",
                     path);
    char uuid[37], t[40];
    om_uuid u;
    om_uuid_new(&u);
    om_uuid_str(&u, uuid);
    if (!rc) rc = make_layout(v, root);
    json_t *enc = json_null();
    uint8_t keys[64] = {0};
    if (!rc && o->encrypt) enc = encryption_json(uuid, o->passphrase, keys, &rc);
    json_t *cfg = rc ? NULL
                     : json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:{s:s, s:i}, s:o}", "format",
                                 FORMAT_NAME, "version", FORMAT_VER, "id", uuid, "created",
                                 om_time_iso(om_now_ns(), t, sizeof t), "block_size",
                                 (json_int_t)bs, "pack_size", (json_int_t)ps, "compression",
                                 "algorithm", "zstd", "level", lvl, "encryption", enc);
    if (rc) json_decref(enc);
    char auth[65];
    if (!rc)
        rc = cfg ? config_auth(o->encrypt ? keys + 32 : NULL, cfg, auth)
                 : om_errf(OM_E_OutOfMemory, "out of memory");
    OPENSSL_cleanse(keys, sizeof keys);
    if (!rc) json_object_set_new(cfg, "auth", json_string(auth));
    char *text = !rc ? json_dumps(cfg, JSON_INDENT(2)) : NULL;
    json_decref(cfg);
    if (!rc && !text) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    /* Last: until config.json exists the directory is not a repository. Its commit syncs the
     * root, which makes the folders made above durable with it. */
    if (!rc) rc = om_durable_write_at(root, "config.json", text, strlen(text), 0);
    if (!rc && made) rc = sync_parent(v, path);
    free(text);
    om_dir_close(root);
    return rc;
}

/* ---- opening ---- */

static int unwrap_keys(bk_repo *r, json_t *enc, const char *pass)
{
    if (!pass || !*pass)
        return om_errf(OM_E_BadPassphrase,
                       "%s is encrypted: a passphrase is needed. HINT: --passphrase-file F or "
                       "OMBRA_REPO_PASSPHRASE",
                       r->path);
    json_t *kdf = json_object_get(enc, "kdf");
    int64_t n = om_json_int_or(kdf, "n", 0), rr = om_json_int_or(kdf, "r", 0),
            p = om_json_int_or(kdf, "p", 0);
    uint8_t salt[32], wrapped[64 + BK_SEAL_OVERHEAD], keys[64], kek[32];
    const char *salthex = om_json_str_or(kdf, "salt", "");
    if (strcmp(om_json_str_or(enc, "cipher", ""), "aes-256-gcm") ||
        strcmp(om_json_str_or(kdf, "name", ""), "scrypt") || n < 2 || n > (1 << 22) ||
        (n & (n - 1)) || rr < 1 || rr > 32 || p < 1 || p > 16 ||
        bk_unhex(salthex, salt, sizeof salt) ||
        bk_unhex(om_json_str_or(enc, "key", ""), wrapped, sizeof wrapped))
        return om_errf(OM_E_NotRepository, "%s/config.json: unsupported or damaged encryption",
                       r->path);
    char aad[256];
    wrap_aad(r->uuid_str, n, rr, p, salthex, aad, sizeof aad);
    int rc = derive_kek(pass, salt, sizeof salt, (uint64_t)n, (uint64_t)rr, (uint64_t)p, kek);
    if (!rc) rc = bk_open_sealed(kek, aad, strlen(aad), wrapped, sizeof wrapped, keys);
    OPENSSL_cleanse(kek, sizeof kek);
    /* The AAD binds the id and the parameters: an edited one fails like a wrong passphrase. */
    if (rc == OM_E_RepositoryCorrupt)
        return om_errf(OM_E_BadPassphrase,
                       "wrong passphrase for the repository %s (or its config.json was altered)",
                       r->path);
    if (rc) return rc;
    memcpy(r->data_key, keys, 32);
    memcpy(r->id_key, keys + 32, 32);
    OPENSSL_cleanse(keys, sizeof keys);
    r->encrypted = 1;
    return mac_init(r);
}

/* The "auth" of config.json against its content (encrypted: the keys are unwrapped by now). */
static int check_config_auth(bk_repo *r)
{
    char want[65];
    const char *have = om_json_str_or(r->config, "auth", "");
    int rc = config_auth(r->encrypted ? r->id_key : NULL, r->config, want);
    if (rc || !strcmp(have, want)) return rc;
    if (r->encrypted)
        return om_errf(OM_E_RepositoryCorrupt,
                       "%s/config.json was altered: its settings do not match their "
                       "authentication code under the repository's key. HINT: a repository's "
                       "settings cannot change after ombra repo init; put back its own config.json",
                       r->path);
    return om_errf(OM_E_RepositoryCorrupt,
                   "%s/config.json is damaged or was edited: its content does not match its "
                   "checksum (\"auth\"). HINT: a repository's settings cannot change after ombra "
                   "repo init; put back its own config.json",
                   r->path);
}

static int read_config(bk_repo *r, const char *pass)
{
    char p[BK_PATH_MAX];
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = bk_path(r, p, sizeof p, "config.json");
    if (!rc) rc = om_read_file(r->vfs, p, &data, &n);
    if (rc == OM_E_FileNotFound)
        return om_errf(OM_E_NotRepository,
                       "%s is not a backup repository (no config.json). HINT: ombra repo init %s",
                       r->path, r->path);
    if (rc) return rc;
    json_error_t je;
    json_t *c = json_loadb((const char *)data, n, 0, &je);
    free(data);
    if (!json_is_object(c) || strcmp(om_json_str_or(c, "format", ""), FORMAT_NAME)) {
        json_decref(c);
        return om_errf(OM_E_NotRepository, "%s is not an ombra backup repository (config.json)",
                       r->path);
    }
    r->config = c;
    int64_t ver = om_json_int_or(c, "version", 0);
    if (ver != FORMAT_VER)
        return om_errf(OM_E_NotRepository,
                       "%s: repository format version %lld is not supported: this ombra reads "
                       "version %d only. HINT: make a new repository (ombra repo init) and back up "
                       "into it",
                       r->path, (long long)ver, FORMAT_VER);
    int64_t bs = om_json_int_or(c, "block_size", 0), ps = om_json_int_or(c, "pack_size", 0);
    r->zstd_level = (int)om_json_int_or(json_object_get(c, "compression"), "level", 3);
    json_t *enc = json_object_get(c, "encryption");
    if (bs < 4096 || bs > (64 << 20) || (bs & (bs - 1)) || ps < (64 << 10) || ps > INT32_MAX ||
        r->zstd_level < 1 || r->zstd_level > 19 ||
        om_uuid_parse(om_json_str_or(c, "id", ""), &r->uuid) ||
        strcmp(om_json_str_or(json_object_get(c, "compression"), "algorithm", ""), "zstd") ||
        !(json_is_object(enc) || json_is_null(enc)))
        return om_errf(OM_E_NotRepository, "%s/config.json is damaged", r->path);
    r->block_size = (uint32_t)bs;
    r->pack_size = (uint32_t)ps;
    om_uuid_str(&r->uuid, r->uuid_str);
    if (json_is_object(enc))
        rc = unwrap_keys(r, enc, pass);
    else if (pass && *pass)
        /* Whoever gives a passphrase expects encryption: never write or trust plaintext then. */
        rc = om_errf(OM_E_BadPassphrase,
                     "%s is not encrypted, but a passphrase was given: a plaintext repository (or "
                     "an edited config.json) may have been put in the place of an encrypted one. "
                     "HINT: if %s was made without --encrypt, give no passphrase (no "
                     "--passphrase-file, OMBRA_REPO_PASSPHRASE unset); if it was made encrypted, "
                     "do not use it: it was replaced",
                     r->path, r->path);
    if (!rc) rc = check_config_auth(r);
    return rc;
}

/* A repository whose config.json says plain, but whose sets are sealed: its config.json was
 * edited (or replaced). The first bytes of a sealed set file say so (see repo.h). */
static int sniff_sealed_set(void *arg, const char *name)
{
    bk_repo *r = arg;
    size_t l = strlen(name);
    if (l < 64 || !(is_hex_name(name, 64, ".json") || is_hex_name(name, 64, ".pending"))) return 0;
    char p[BK_PATH_MAX], head[sizeof BK_SEALED_SET_HEAD] = {0};
    om_file *f = NULL;
    size_t got = 0;
    if (bk_path(r, p, sizeof p, "sets/%s", name) || om_open(r->vfs, p, OM_O_RDONLY, &f)) {
        om_err_clear();
        return 0;
    }
    int rc = f->vfs->pread(f, head, sizeof head - 1, 0, &got);
    om_close(f);
    om_err_clear();
    if (!rc && got == sizeof head - 1 && !memcmp(head, BK_SEALED_SET_HEAD, got))
        snprintf(r->sealed, sizeof r->sealed, "sets/%s", name);
    return r->sealed[0] ? 1 : 0;
}

int bk_plain_check(bk_repo *r)
{
    if (r->encrypted) return 0;
    if (!r->sealed[0]) {
        char p[BK_PATH_MAX];
        int rc = bk_path(r, p, sizeof p, "sets");
        if (!rc) rc = r->vfs->list(r->vfs, p, sniff_sealed_set, r);
        if (rc < 0) return rc;
    }
    if (!r->sealed[0]) return 0;
    return om_errf(OM_E_RepositoryCorrupt,
                   "%s/config.json says the repository is not encrypted, but %s is encrypted: "
                   "config.json was edited or replaced, and nothing is written in plaintext into "
                   "an encrypted repository. HINT: put back the repository's own config.json and "
                   "give its passphrase",
                   r->path, r->sealed);
}

static int take_lock(bk_repo *r)
{
    char p[BK_PATH_MAX];
    /* Another file system (bk_repo_open_vfs) lives in this one process: nobody to lock out. */
    if (r->vfs != om_vfs_posix()) return 0;
    int rc = bk_path(r, p, sizeof p, "locks/repo.lock");
    if (rc) return rc;
    /* A raw descriptor: the lock is shared (om_vfs's lock is exclusive only). */
    r->lock_fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (r->lock_fd < 0)
        return om_errf(om_err_from_errno(errno), "opening %s: %s", p, strerror(errno));
    while (flock(r->lock_fd, LOCK_SH) != 0)
        if (errno != EINTR)
            return om_errf(om_err_from_errno(errno), "locking %s: %s", p, strerror(errno));
    return 0;
}

int bk_repo_open(const char *path, const char *passphrase, bk_repo **out)
{
    return bk_repo_open_vfs(om_vfs_posix(), path, passphrase, out);
}

int bk_repo_open_vfs(om_vfs *v, const char *path, const char *passphrase, bk_repo **out)
{
    *out = NULL;
    bk_repo *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return om_errf(OM_E_OutOfMemory, "out of memory");
    }
    size_t l = strlen(r->path);
    while (l > 1 && r->path[l - 1] == '/')
        r->path[--l] = 0;
    r->vfs = v;
    r->lock_fd = -1;
    r->damage = json_array();
    r->dmg_all = json_array();
    r->dmg_new = json_array();
    pthread_mutex_init(&r->dmg_m, NULL);
    pthread_rwlock_init(&r->lk, NULL);
    pthread_mutex_init(&r->refresh, NULL);
    int rc = read_config(r, passphrase);
    if (!rc) rc = om_dir_open(v, NULL, r->path, OM_D_FOLLOW, &r->root);
    if (!rc) rc = take_lock(r);
    if (!rc) rc = bk_index_refresh(r);
    if (!rc) rc = bk_plain_check(r);
    if (rc) {
        bk_repo_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void forget_index(bk_repo *r)
{
    bk_map_free(&r->index);
    bk_map_free(&r->loaded);
    bk_map_free(&r->packno);
    for (uint32_t i = 0; i < r->npacks; i++) {
        for (int k = 0; k < r->packs[i].nindex; k++)
            free(r->packs[i].index[k]);
        free(r->packs[i].index);
    }
    free(r->packs);
    r->packs = NULL;
    r->npacks = r->cappacks = 0;
    free(r->alts);
    r->alts = NULL;
    r->nalts = r->capalts = 0;
    json_array_clear(r->damage);
}

void bk_repo_close(bk_repo *r)
{
    if (!r) return;
    if (__atomic_load_n(&r->writers, __ATOMIC_ACQUIRE))
        om_warn("closing the repository %s with %d writers still open", r->path, r->writers);
    forget_index(r);
    bk_map_free(&r->bad);
    json_decref(r->dmg_all);
    json_decref(r->dmg_new);
    pthread_mutex_destroy(&r->dmg_m);
    json_decref(r->damage);
    json_decref(r->config);
    EVP_MAC_CTX_free(r->mac);
    OPENSSL_cleanse(r->data_key, sizeof r->data_key);
    OPENSSL_cleanse(r->id_key, sizeof r->id_key);
    if (r->lock_fd >= 0) close(r->lock_fd); /* releases the flock */
    om_dir_close(r->root);
    pthread_rwlock_destroy(&r->lk);
    pthread_mutex_destroy(&r->refresh);
    free(r->path);
    free(r);
}

uint32_t bk_repo_block_size(const bk_repo *r)
{
    return r->block_size;
}

int bk_repo_encrypted(const bk_repo *r)
{
    return r->encrypted;
}

json_t *bk_repo_info(const bk_repo *r)
{
    json_t *c = json_deep_copy(r->config);
    json_t *enc = json_object_get(c, "encryption");
    if (json_is_object(enc)) json_object_del(enc, "key");
    json_object_set_new(c, "path", json_string(r->path));
    return c;
}

void bk_repo_set_progress(bk_repo *r, bk_progress_fn fn, void *arg)
{
    r->progress = fn;
    r->progress_arg = arg;
}

void bk_progress(bk_repo *r, const char *what, uint64_t done, uint64_t total)
{
    if (r->progress) r->progress(r->progress_arg, what, done, total);
}

/* ---- the index ---- */

/* Damage found while loading the index is kept, not printed: verify reports it, and a read
 * that misses a block names it in its one error line (bk_index_find). */
static void add_damage(bk_repo *r, const char *idx, const char *pack, const char *what)
{
    pthread_rwlock_wrlock(&r->lk);
    json_array_append_new(r->damage,
                          json_pack("{s:s, s:s?, s:s}", "index", idx, "pack", pack, "what", what));
    pthread_rwlock_unlock(&r->lk);
}

static int pack_key(const char *name, uint8_t key[BK_ID_LEN])
{
    memset(key, 0, BK_ID_LEN);
    return bk_unhex(name, key, 16);
}

int64_t bk_pack_find(const bk_repo *r, const char *name)
{
    uint8_t key[BK_ID_LEN];
    const bk_ent *e = pack_key(name, key) ? NULL : bk_map_get(&r->packno, key);
    return e ? (int64_t)e->pack : -1;
}

/* The pack's number in r->packs (added when new), or -1 when out of memory. lk held. */
static int64_t pack_no(bk_repo *r, const char *name)
{
    int64_t have = bk_pack_find(r, name);
    if (have >= 0) return have;
    if (r->npacks == r->cappacks) {
        uint32_t cap = r->cappacks ? r->cappacks * 2 : 64;
        bk_pack *p = realloc(r->packs, cap * sizeof *p);
        if (!p) return -1;
        r->packs = p;
        r->cappacks = cap;
    }
    bk_ent k = {.pack = r->npacks};
    if (pack_key(name, k.id) || !bk_map_put(&r->packno, &k, NULL)) return -1;
    bk_pack *p = &r->packs[r->npacks];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    return r->npacks++;
}

static int ent_bad(const bk_repo *r, const bk_ent *e);

/* One entry into the index (lk held for writing). A second copy of an id is kept aside
 * (r->alts); it takes the first one's place when that one is known damaged and it is not. */
static int index_put(bk_repo *r, const bk_ent *e)
{
    int added = 0;
    bk_ent *have = bk_map_put(&r->index, e, &added);
    if (!have) return om_errf(OM_E_OutOfMemory, "out of memory");
    if (added || (have->pack == e->pack && have->off == e->off)) return 0;
    if (r->nalts == r->capalts) {
        size_t cap = r->capalts ? r->capalts * 2 : 16;
        bk_ent *a = realloc(r->alts, cap * sizeof *a);
        if (!a) return om_errf(OM_E_OutOfMemory, "out of memory");
        r->alts = a;
        r->capalts = cap;
    }
    if (ent_bad(r, have) && !ent_bad(r, e)) {
        r->alts[r->nalts++] = *have;
        *have = *e;
        have->used = 1;
    } else
        r->alts[r->nalts++] = *e;
    return 0;
}

int bk_index_add(bk_repo *r, const char *pack, const char *idxname, const bk_ent *ents, size_t n)
{
    int rc = 0, added = 0;
    bk_ent k = {0};
    if (bk_unhex(idxname, k.id, BK_ID_LEN))
        return om_errf(OM_E_Internal, "index name %s is not an id", idxname);
    pthread_rwlock_wrlock(&r->lk);
    /* Once per index file: a refresh may have loaded it between its rename and this call. */
    if (!bk_map_put(&r->loaded, &k, &added)) rc = om_errf(OM_E_OutOfMemory, "out of memory");
    if (rc || !added) goto out;
    int64_t no = pack_no(r, pack);
    bk_pack *p = no >= 0 ? &r->packs[no] : NULL;
    char **ix = p ? realloc(p->index, (size_t)(p->nindex + 1) * sizeof *ix) : NULL;
    if (!ix || !(ix[p->nindex] = strdup(idxname))) {
        if (ix) p->index = ix;
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
        goto out;
    }
    p->index = ix;
    p->nindex++;
    for (size_t i = 0; i < n && !rc; i++) {
        bk_ent e = ents[i];
        e.pack = (uint32_t)no;
        rc = index_put(r, &e);
    }
out:
    pthread_rwlock_unlock(&r->lk);
    return rc;
}

void bk_loc_key(const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off, uint8_t key[BK_ID_LEN])
{
    uint8_t b[BK_ID_LEN + 32 + 8];
    unsigned n = 0;
    memcpy(b, id, BK_ID_LEN);
    memset(b + BK_ID_LEN, 0, 32);
    memcpy(b + BK_ID_LEN, pack, strnlen(pack, 32));
    om_put64(b + BK_ID_LEN + 32, off);
    if (EVP_Digest(b, sizeof b, key, &n, EVP_sha256(), NULL) != 1) memcpy(key, id, BK_ID_LEN);
}

int bk_loc_bad(const bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off)
{
    if (!r->bad.n) return 0;
    uint8_t key[BK_ID_LEN];
    bk_loc_key(id, pack, off, key);
    return bk_map_get(&r->bad, key) != NULL;
}

static int ent_bad(const bk_repo *r, const bk_ent *e)
{
    return bk_loc_bad(r, e->id, r->packs[e->pack].name, e->off);
}

int bk_index_avoid(bk_repo *r, const uint8_t id[BK_ID_LEN])
{
    pthread_rwlock_wrlock(&r->lk);
    bk_ent *have = bk_map_get(&r->index, id);
    int good = have && !ent_bad(r, have);
    for (size_t i = 0; have && !good && i < r->nalts; i++)
        if (!memcmp(r->alts[i].id, id, BK_ID_LEN) && !ent_bad(r, &r->alts[i])) {
            bk_ent t = *have;
            *have = r->alts[i];
            have->used = 1;
            r->alts[i] = t;
            good = 1;
        }
    pthread_rwlock_unlock(&r->lk);
    return good;
}

int bk_index_has_copy(bk_repo *r, const uint8_t id[BK_ID_LEN], const char *pack, uint64_t off)
{
    pthread_rwlock_rdlock(&r->lk);
    int64_t no = bk_pack_find(r, pack);
    const bk_ent *have = no >= 0 ? bk_map_get(&r->index, id) : NULL;
    int found = have && have->pack == (uint32_t)no && have->off == off;
    for (size_t i = 0; have && !found && i < r->nalts; i++)
        found = !memcmp(r->alts[i].id, id, BK_ID_LEN) && r->alts[i].pack == (uint32_t)no &&
                r->alts[i].off == off;
    pthread_rwlock_unlock(&r->lk);
    return found;
}

size_t bk_index_copies(bk_repo *r, const uint8_t id[BK_ID_LEN], bk_ent *e, char (*packs)[33],
                       size_t cap)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&r->lk);
    const bk_ent *have = bk_map_get(&r->index, id);
    for (size_t i = 0; have && i <= r->nalts; i++) {
        const bk_ent *c = i ? &r->alts[i - 1] : have;
        if (i && memcmp(c->id, id, BK_ID_LEN)) continue;
        if (n < cap) {
            e[n] = *c;
            memcpy(packs[n], r->packs[c->pack].name, 33);
        }
        n++;
    }
    pthread_rwlock_unlock(&r->lk);
    return n;
}

int bk_block_usable(bk_repo *r, const uint8_t id[BK_ID_LEN])
{
    pthread_rwlock_rdlock(&r->lk);
    const bk_ent *have = bk_map_get(&r->index, id);
    int good = have && !ent_bad(r, have);
    pthread_rwlock_unlock(&r->lk);
    return good;
}

int bk_index_find(bk_repo *r, const uint8_t id[BK_ID_LEN], bk_ent *e, char pack[33])
{
    pthread_rwlock_rdlock(&r->lk);
    const bk_ent *f = bk_map_get(&r->index, id);
    if (f) {
        *e = *f;
        if (pack) memcpy(pack, r->packs[f->pack].name, 33);
    }
    pthread_rwlock_unlock(&r->lk);
    if (f) return 0;
    char hex[65], why[600] = "";
    bk_hex(id, BK_ID_LEN, hex);
    pthread_rwlock_rdlock(&r->lk);
    json_t *d = json_array_get(r->damage, 0);
    if (d)
        snprintf(why, sizeof why, " (index/%.70s.json: %s%s)", om_json_str_or(d, "index", "?"),
                 om_json_str_or(d, "what", "is damaged"),
                 json_array_size(r->damage) > 1 ? ", and more index damage" : "");
    pthread_rwlock_unlock(&r->lk);
    return om_errf(OM_E_ObjectNotFound,
                   "block %s is not in any index%s. HINT: ombra verify --repo %s names the damage",
                   hex, why, r->path);
}

typedef struct names {
    char (*v)[65];
    size_t n, cap;
} names;

static int collect_name(void *arg, const char *name)
{
    names *ns = arg;
    if (!is_hex_name(name, 64, ".json")) return 0;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        char(*v)[65] = realloc(ns->v, cap * sizeof *v);
        if (!v) return om_errf(OM_E_OutOfMemory, "out of memory");
        ns->v = v;
        ns->cap = cap;
    }
    memcpy(ns->v[ns->n], name, 64);
    ns->v[ns->n++][64] = 0;
    return 0;
}

/* Parses one index file's blocks into ents (malloc'd), dropping (as damage) the ones its pack
 * does not cover. */
static int parse_index(bk_repo *r, const char *name, json_t *j, const char **pack, bk_ent **ents,
                       size_t *n)
{
    char p[BK_PATH_MAX], what[200];
    json_t *blocks = json_object_get(j, "blocks");
    *pack = om_json_str_or(j, "pack", "");
    *ents = NULL;
    *n = 0;
    json_t *enc = json_object_get(j, "encryption");
    if (om_json_int_or(j, "version", 0) != FORMAT_VER || !is_hex_name(*pack, 32, "") ||
        !json_is_array(blocks) || !enc || json_is_null(enc) == r->encrypted) {
        add_damage(r, name, NULL, "not an index file of this repository's format");
        return 0;
    }
    int rc = bk_path(r, p, sizeof p, "packs/%.2s/%s", *pack, *pack);
    if (rc) return rc;
    uint64_t size = 0;
    om_file *pf = NULL;
    rc = om_open(r->vfs, p, OM_O_RDONLY, &pf);
    if (!rc) rc = om_fsize(pf, &size);
    om_close(pf);
    if (rc) { /* as missing: nothing of it can be read */
        om_err_clear();
        snprintf(what, sizeof what, "its pack %s is missing", *pack);
        add_damage(r, name, *pack, what);
        return 0;
    }
    bk_ent *e = calloc(json_array_size(blocks) + 1, sizeof *e);
    if (!e) return om_errf(OM_E_OutOfMemory, "out of memory");
    size_t i, k = 0, shortfall = 0;
    json_t *b;
    json_array_foreach(blocks, i, b)
    {
        json_int_t off = json_integer_value(json_array_get(b, 1)),
                   stored = json_integer_value(json_array_get(b, 2)),
                   raw = json_integer_value(json_array_get(b, 3));
        if (json_array_size(b) != 4 ||
            bk_unhex(json_string_value(json_array_get(b, 0)), e[k].id, BK_ID_LEN) ||
            off < BK_PACK_HDR || stored < 1 || raw < 1 || stored > (1ll << 30) ||
            raw > (1ll << 30)) {
            snprintf(what, sizeof what, "entry %zu is malformed", i);
            add_damage(r, name, *pack, what);
            continue;
        }
        if ((uint64_t)off + BK_REC_HDR + (uint64_t)stored > size) {
            shortfall++;
            continue;
        }
        e[k].off = (uint64_t)off;
        e[k].stored = (uint32_t)stored;
        e[k].raw = (uint32_t)raw;
        k++;
    }
    if (shortfall) {
        snprintf(what, sizeof what, "its pack %s ends at %lld bytes, before %zu of its %zu blocks",
                 *pack, (long long)size, shortfall, json_array_size(blocks));
        add_damage(r, name, *pack, what);
    }
    *ents = e;
    *n = k;
    return 0;
}

/* Why an index file whose content does not match its name is refused: another repository's
 * (its "repository" says so), an encrypted repository's in a plain one (the evidence
 * bk_plain_check refuses on), or damage. */
static void index_mismatch(bk_repo *r, const char *name, json_t *j)
{
    const char *owner = om_json_str_or(j, "repository", NULL);
    json_t *enc = json_object_get(j, "encryption");
    char what[200];
    if (r->encrypted && owner && strcmp(owner, r->uuid_str)) {
        /* Plain: another repository's index keeps a valid name, so a mismatch is damage. */
        snprintf(what, sizeof what,
                 "its content does not match its name and it names repository %.40s, not this "
                 "one (%s): another repository's index file, or damaged",
                 owner, r->uuid_str);
        add_damage(r, name, NULL, what);
    } else if (!r->encrypted && json_is_string(enc)) {
        if (!r->sealed[0]) snprintf(r->sealed, sizeof r->sealed, "index/%s.json", name);
    } else
        add_damage(r, name, NULL, "its content does not match its name (damaged)");
}

static int load_index(bk_repo *r, const char *name)
{
    char p[BK_PATH_MAX];
    uint8_t *data = NULL, want[BK_ID_LEN], got[BK_ID_LEN];
    size_t n = 0;
    int rc = bk_path(r, p, sizeof p, "index/%s.json", name);
    if (!rc) rc = om_read_file(r->vfs, p, &data, &n);
    if (rc == OM_E_FileNotFound) return 0; /* removed meanwhile */
    if (!rc) rc = bk_id_of(r, data, n, got);
    if (rc) goto out;
    bk_unhex(name, want, sizeof want);
    json_t *j = json_loadb((const char *)data, n, 0, NULL);
    const char *owner = om_json_str_or(j, "repository", "");
    char what[200];
    int named = memcmp(want, got, BK_ID_LEN) == 0;
    if (!named)
        index_mismatch(r, name, j);
    else if (!json_is_object(j))
        add_damage(r, name, NULL, "not JSON");
    else if (strcmp(owner, r->uuid_str)) {
        /* Plain: a copy from another repository has a valid name; the id tells. */
        snprintf(what, sizeof what, "it belongs to repository %.40s, not to this one (%s)",
                 *owner ? owner : "(none named)", r->uuid_str);
        add_damage(r, name, NULL, what);
    }
    if (!named || !json_is_object(j) || strcmp(owner, r->uuid_str)) {
        json_decref(j);
        j = NULL;
    }
    const char *pack = NULL;
    bk_ent *ents = NULL;
    size_t ne = 0;
    if (j) rc = parse_index(r, name, j, &pack, &ents, &ne);
    if (!rc && j && pack && *pack && ents) rc = bk_index_add(r, pack, name, ents, ne);
    if (!rc && !ents) {
        /* Damaged: remember it was seen, so it is reported once. */
        bk_ent k = {0};
        memcpy(k.id, want, sizeof want);
        pthread_rwlock_wrlock(&r->lk);
        if (!bk_map_put(&r->loaded, &k, NULL)) rc = om_errf(OM_E_OutOfMemory, "out of memory");
        pthread_rwlock_unlock(&r->lk);
    }
    free(ents);
    json_decref(j);
out:
    free(data);
    return rc;
}

int bk_index_refresh(bk_repo *r)
{
    char p[BK_PATH_MAX];
    names ns = {0};
    pthread_mutex_lock(&r->refresh);
    int rc = bk_path(r, p, sizeof p, "index");
    if (!rc) rc = r->vfs->list(r->vfs, p, collect_name, &ns);
    for (size_t i = 0; i < ns.n && !rc; i++) {
        uint8_t key[BK_ID_LEN];
        bk_unhex(ns.v[i], key, sizeof key);
        pthread_rwlock_rdlock(&r->lk);
        int have = bk_map_get(&r->loaded, key) != NULL;
        pthread_rwlock_unlock(&r->lk);
        if (!have) rc = load_index(r, ns.v[i]);
    }
    pthread_mutex_unlock(&r->refresh);
    free(ns.v);
    if (!rc && !r->encrypted && r->sealed[0]) rc = bk_plain_check(r);
    return rc;
}

int bk_index_reload(bk_repo *r)
{
    pthread_mutex_lock(&r->refresh);
    pthread_rwlock_wrlock(&r->lk);
    forget_index(r);
    pthread_rwlock_unlock(&r->lk);
    pthread_mutex_unlock(&r->refresh);
    return bk_index_refresh(r);
}

/* ---- sets ---- */

int bk_set_ids(bk_repo *r, char (**ids)[65], size_t *n)
{
    char p[BK_PATH_MAX];
    names ns = {0};
    int rc = bk_path(r, p, sizeof p, "sets");
    if (!rc) rc = r->vfs->list(r->vfs, p, collect_name, &ns);
    /* The index files written since the handle's last look, loaded after the sets are listed:
     * a set is published only once the index files of its packs are durable, so every set
     * listed here has its blocks in the index. Loaded at open only, a set another process
     * published since (a backup beside this restore or verify) named blocks "not in any
     * index". */
    if (!rc) rc = bk_index_refresh(r);
    if (rc) {
        free(ns.v);
        return rc;
    }
    *ids = ns.v;
    *n = ns.n;
    return 0;
}

static int b64_decode(const char *s, uint8_t **out, size_t *n)
{
    size_t l = strlen(s);
    if (l % 4) return -1;
    uint8_t *b = malloc(l / 4 * 3 + 1);
    if (!b) return -1;
    int got = EVP_DecodeBlock(b, (const unsigned char *)s, (int)l);
    if (got < 0) {
        free(b);
        return -1;
    }
    /* EVP_DecodeBlock counts the padding's zero bytes too. */
    while (l && s[l - 1] == '=' && got > 0) {
        l--;
        got--;
    }
    *out = b;
    *n = (size_t)got;
    return 0;
}

void bk_set_aad(const bk_repo *r, char aad[64])
{
    snprintf(aad, 64, "ombra-set:%s", r->uuid_str);
}

static int foreign(const bk_repo *r, const char *owner)
{
    return om_errf(OM_E_RepositoryCorrupt, "it belongs to repository %.40s, not to this one (%s)",
                   *owner ? owner : "(none named)", r->uuid_str);
}

/* The plaintext of an encrypted set file. */
static int unseal_set(bk_repo *r, const uint8_t *data, size_t n, uint8_t **plain, size_t *pn)
{
    json_t *env = json_loadb((const char *)data, n, 0, NULL);
    uint8_t *sealed = NULL;
    size_t sn = 0;
    int rc = 0;
    const char *owner = om_json_str_or(env, "repository", "");
    if (!env || om_json_int_or(env, "version", 0) != FORMAT_VER ||
        strcmp(om_json_str_or(env, "encryption", ""), "aes-256-gcm") ||
        b64_decode(om_json_str_or(env, "sealed", ""), &sealed, &sn) || sn < BK_SEAL_OVERHEAD) {
        rc = om_errf(OM_E_RepositoryCorrupt, "not an encrypted set file of this format");
        goto out;
    }
    *plain = malloc(sn - BK_SEAL_OVERHEAD + 1);
    if (!*plain) {
        rc = om_errf(OM_E_OutOfMemory, "out of memory");
        goto out;
    }
    char aad[64];
    bk_set_aad(r, aad);
    rc = bk_open_sealed(r->data_key, aad, strlen(aad), sealed, sn, *plain);
    /* The owner is named in the clear to say whose a set is that does not open here; one that
     * opens (the AAD holds this repository's id) but names another is damaged. */
    if (rc == OM_E_RepositoryCorrupt && strcmp(owner, r->uuid_str))
        rc = foreign(r, owner);
    else if (!rc && strcmp(owner, r->uuid_str))
        rc = om_errf(OM_E_RepositoryCorrupt,
                     "it names repository %.40s, not this one (%s), in its envelope (damaged)",
                     owner, r->uuid_str);
    if (rc) {
        free(*plain);
        *plain = NULL;
    } else
        *pn = sn - BK_SEAL_OVERHEAD;
out:
    free(sealed);
    json_decref(env);
    return rc;
}

int bk_set_file_size(bk_repo *r, const char *id, uint64_t *n)
{
    char p[BK_PATH_MAX];
    om_file *f = NULL;
    *n = 0;
    int rc = bk_path(r, p, sizeof p, "sets/%s.json", id);
    if (!rc) rc = om_open(r->vfs, p, OM_O_RDONLY, &f);
    if (!rc) rc = om_fsize(f, n);
    om_close(f);
    return rc;
}

int bk_set_read(bk_repo *r, const char *id, json_t **set)
{
    char p[BK_PATH_MAX];
    uint8_t *data = NULL, *plain = NULL, want[BK_ID_LEN], got[BK_ID_LEN];
    size_t n = 0, pn = 0;
    *set = NULL;
    int rc = bk_path(r, p, sizeof p, "sets/%s.json", id);
    if (!rc) rc = om_read_file(r->vfs, p, &data, &n);
    if (rc == OM_E_FileNotFound) return om_errf(OM_E_SetNotFound, "no set %s in %s", id, r->path);
    if (rc) return rc;
    const size_t hl = sizeof BK_SEALED_SET_HEAD - 1;
    if (r->encrypted)
        rc = unseal_set(r, data, n, &plain, &pn);
    else if (n >= hl && !memcmp(data, BK_SEALED_SET_HEAD, hl))
        rc = om_errf(OM_E_RepositoryCorrupt,
                     "it is encrypted, but config.json says the repository is not: config.json "
                     "was edited or replaced. HINT: put back the repository's own config.json");
    else {
        plain = data;
        pn = n;
        data = NULL;
    }
    if (!rc) rc = bk_id_of(r, plain, pn, got);
    if (!rc && (bk_unhex(id, want, sizeof want) || memcmp(want, got, BK_ID_LEN)))
        rc = om_errf(OM_E_RepositoryCorrupt, "its content does not match its name");
    json_t *j = rc ? NULL : json_loadb((const char *)plain, pn, 0, NULL);
    if (!rc && !json_is_object(j)) /* a macro: evaluates its argument twice */
        rc = om_errf(OM_E_RepositoryCorrupt, "not a set document");
    /* Plain: a set copied from another repository has a valid name; its id tells. */
    if (!rc && strcmp(om_json_str_or(j, "repository", ""), r->uuid_str))
        rc = foreign(r, om_json_str_or(j, "repository", ""));
    if (!rc) {
        json_object_set_new(j, "id", json_string(id));
        *set = j;
        j = NULL;
    } else
        om_err_ctx(rc, "set file sets/%s.json", id);
    json_decref(j);
    free(data);
    free(plain);
    return rc;
}

json_t *bk_set_db_keys(json_t *set)
{
    json_t *keys = json_array(), *one = json_object_get(set, "database"),
           *many = json_object_get(set, "databases");
    json_t *all = json_array();
    if (one) json_array_append(all, one);
    if (json_is_array(many)) json_array_extend(all, many);
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d)
    {
        const char *k = json_is_string(d) ? json_string_value(d) : NULL;
        if (json_is_object(d)) {
            k = om_json_str_or(d, "id", "");
            if (!*k) k = om_json_str_or(d, "name", "");
        }
        if (k && *k) json_array_append_new(keys, json_string(k));
    }
    json_decref(all);
    if (!json_array_size(keys)) json_array_append_new(keys, json_string(""));
    return keys;
}

int bk_set_load(bk_repo *r, const char *set_id, json_t **set)
{
    *set = NULL;
    size_t pl = set_id ? strlen(set_id) : 0;
    if (!pl || pl > 64)
        return om_errf(OM_E_InvalidParameter, "'%s' is not a set id", set_id ? set_id : "");
    char want[65];
    for (size_t i = 0; i < pl; i++) {
        if (hexval(set_id[i]) < 0)
            return om_errf(OM_E_InvalidParameter, "'%s' is not a set id (hex digits)", set_id);
        want[i] = (char)(set_id[i] | 0x20); /* lower case */
    }
    want[pl] = 0;
    char(*ids)[65] = NULL;
    size_t n = 0, found = 1, at = 0;
    const char *id = want;
    int rc = 0;
    if (pl < 64) { /* a prefix: the one set whose id begins so */
        if ((rc = bk_set_ids(r, &ids, &n))) return rc;
        found = 0;
        for (size_t i = 0; i < n; i++)
            if (strncmp(ids[i], want, pl) == 0) {
                found++;
                at = i;
            }
        if (found == 1) id = ids[at];
    }
    if (found == 1) {
        /* A whole id names its file: sets/ (a name a backup) is not listed. The index files
         * written since are loaded after the set is read, as bk_set_ids does after its listing:
         * a set is published only once its packs' index files are durable. */
        rc = bk_set_read(r, id, set);
        if (rc == OM_E_RepositoryCorrupt) { /* listings take it for damaged from now on */
            om_err_saved e;
            om_err_save(&e, rc);
            char one[1][65];
            snprintf(one[0], sizeof one[0], "%s", id);
            bk_summaries_forget(r, one, 1);
            rc = om_err_restore(&e);
        } else if (!rc && pl == 64 && (rc = bk_index_refresh(r))) {
            json_decref(*set); /* an index file's failure is not this set's damage */
            *set = NULL;
        }
    }
    if (rc == OM_E_SetNotFound || !found) {
        om_err_clear();
        rc = om_errf(OM_E_SetNotFound, "no set %s in %s. HINT: ombra backups list --repo %s", want,
                     r->path, r->path);
    } else if (found > 1)
        rc = om_errf(OM_E_InvalidParameter, "set id prefix %s is ambiguous: %zu sets start so",
                     want, found);
    free(ids);
    return rc;
}

void bk_pause_at(const char *var, const char *stage)
{
    const char *want = getenv(var);
    if (!want || strcmp(want, stage)) return;
    fprintf(stderr, "paused %s\n", stage);
    fflush(stderr);
    raise(SIGSTOP); /* the test damages files, kills us (SIGKILL) or lets us go on (SIGCONT) */
}

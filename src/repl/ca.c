/* The DAG's certificate authority: names, addresses, keys and certificates (ca.h). */
#include "repl/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "base/error.h"
#include "base/vfs.h"

/* A certificate or key file is a few hundred bytes; anything much larger is not one. */
#define PEM_MAX (64u << 10)

const char *rp_ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, len, "no detail");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static int ssl_fail(int err, const char *what)
{
    char b[256];
    return om_errf(err, "%s: %s", what, rp_ssl_error(b, sizeof b));
}

int rp_name_check(const char *what, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    int ok = n >= 1 && n <= RP_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = name[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        ok = alnum || (i > 0 && (c == '.' || c == '_' || c == '-'));
    }
    if (ok) return 0;
    return om_errf(OM_E_InvalidParameter,
                   "\"%.80s%s\" is not a valid %s. HINT: 1 to %d letters, digits, '.', '_' or "
                   "'-', beginning with a letter or a digit",
                   name ? name : "", n > 80 ? "..." : "", what, RP_NAME_MAX);
}

/* A DNS name as a certificate may name it: labels of letters, digits and '-'. */
static int dns_name_ok(const char *h)
{
    size_t n = strlen(h), label = 0;
    if (!n || n > 253 || h[0] == '.' || h[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.') {
            if (!label) return 0;
            label = 0;
            continue;
        }
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0)) return 0;
        if (++label > 63) return 0;
    }
    return 1;
}

int rp_addr_parse(const char *addr_port, char *host, size_t hostlen, unsigned *port, int *family)
{
    const char *a = addr_port ? addr_port : "", *colon, *h = a;
    size_t hl;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (!close || close[1] != ':') goto bad;
        h = a + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(a, ':');
        if (!colon || strchr(a, ':') != colon) goto bad;
        hl = (size_t)(colon - a);
    }
    if (!hl || hl >= hostlen || hl > 253) goto bad;
    memcpy(host, h, hl);
    host[hl] = 0;
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p)) goto bad;
    unsigned long v = strtoul(p, NULL, 10);
    if (v > 65535) goto bad;
    *port = (unsigned)v;
    unsigned char bin[16];
    if (a[0] == '[') {
        if (inet_pton(AF_INET6, host, bin) != 1) goto bad;
        *family = AF_INET6;
    } else if (inet_pton(AF_INET, host, bin) == 1) {
        *family = AF_INET;
    } else {
        /* Not an address: a name, or an address mistyped ("10.0.0.300" would be a "name"). */
        if (!dns_name_ok(host) || strspn(host, "0123456789.") == strlen(host)) goto bad;
        *family = AF_UNSPEC;
    }
    return 0;
bad:
    return om_errf(OM_E_InvalidParameter,
                   "\"%.120s\" is not an address. HINT: HOST:PORT, HOST an IPv4 address "
                   "(A.B.C.D), an IPv6 address in brackets ([::1]) or a DNS name; PORT 0 to 65535",
                   a);
}

/* ---- reading files: no link followed, a key readable by its owner only ---- */

/* The whole small file at path into a malloc'd buffer (0-terminated). private: refuse it
 * unless only its owner can read or write it. */
static int read_pem(const char *path, int private, char **out, size_t *outn)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            return om_errf(OM_E_FileAccessDenied,
                           "%s is a symbolic link, which is never followed. HINT: put the file "
                           "itself there",
                           path);
        return om_errf(om_err_from_errno(e), "opening %s: %s", path, strerror(e));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = om_errf(OM_E_DiskIO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = om_errf(OM_E_InvalidPath, "%s is not a regular file", path);
    else if (private && (st.st_mode & 077))
        rc = om_errf(OM_E_FileAccessDenied,
                     "%s has mode %04o: other users can read or change this private key. HINT: "
                     "chmod 600 %s; if others may have read it, issue a new one",
                     path, (unsigned)(st.st_mode & 07777), path);
    else if ((uint64_t)st.st_size > PEM_MAX)
        rc = om_errf(OM_E_InvalidParameter, "%s is %lld bytes: too large for a PEM file", path,
                     (long long)st.st_size);
    char *b = rc ? NULL : malloc((size_t)st.st_size + 1);
    if (!rc && !b) rc = om_errf(OM_E_OutOfMemory, "reading %s: out of memory", path);
    size_t got = 0;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            rc = om_errf(OM_E_DiskIO, "reading %s: %s", path, r ? strerror(errno) : "short");
        got += r > 0 ? (size_t)r : 0;
    }
    close(fd);
    if (rc) {
        if (b) OPENSSL_cleanse(b, got);
        free(b);
        return rc;
    }
    b[got] = 0;
    *out = b;
    *outn = got;
    return 0;
}

int rp_cert_read(const char *path, X509 **out)
{
    char *b;
    size_t n;
    int rc = read_pem(path, 0, &b, &n);
    if (rc) return rc;
    BIO *bio = BIO_new_mem_buf(b, (int)n);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    free(b);
    if (!x) {
        char e[256];
        return om_errf(OM_E_InvalidParameter, "%s holds no PEM certificate (%s)", path,
                       rp_ssl_error(e, sizeof e));
    }
    *out = x;
    return 0;
}

int rp_key_read(const char *path, EVP_PKEY **out)
{
    char *b;
    size_t n;
    int rc = read_pem(path, 1, &b, &n);
    if (rc) return rc;
    BIO *bio = BIO_new_mem_buf(b, (int)n);
    /* An empty passphrase callback: an encrypted key fails instead of prompting on a tty. */
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
    BIO_free(bio);
    OPENSSL_cleanse(b, n);
    free(b);
    if (!k) {
        char e[256];
        return om_errf(OM_E_InvalidParameter, "%s holds no PEM private key (%s)", path,
                       rp_ssl_error(e, sizeof e));
    }
    *out = k;
    return 0;
}

int rp_cert_name(X509 *crt, int nid, const char *what, char out[RP_NAME_MAX + 1])
{
    const char *field = nid == NID_commonName ? "CN" : "O";
    X509_NAME *nm = X509_get_subject_name(crt);
    int i = X509_NAME_get_index_by_NID(nm, nid, -1);
    if (i < 0)
        return om_errf(OM_E_InvalidParameter,
                       "%s: its subject has no %s: not a certificate of "
                       "an ombra DAG",
                       what, field);
    if (X509_NAME_get_index_by_NID(nm, nid, i) >= 0)
        return om_errf(OM_E_InvalidParameter,
                       "%s: its subject has two %s: not a certificate "
                       "of an ombra DAG",
                       what, field);
    unsigned char *s = NULL;
    int n = ASN1_STRING_to_UTF8(&s, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i)));
    int rc = 0;
    if (n < 0)
        rc = ssl_fail(OM_E_InvalidParameter, what);
    else if (n > RP_NAME_MAX || memchr(s, 0, (size_t)n))
        rc = om_errf(OM_E_InvalidParameter, "%s: its %s is not a DAG or server name", what, field);
    else {
        memcpy(out, s, (size_t)n);
        out[n] = 0;
        if (rp_name_check(field, out))
            rc = om_errf(OM_E_InvalidParameter, "%s: its %s \"%s\" is not a DAG or server name",
                         what, field, out);
    }
    OPENSSL_free(s);
    return rc;
}

int rp_cert_fingerprint(const char *crt, char out[65])
{
    X509 *x = NULL;
    int rc = rp_cert_read(crt, &x);
    if (rc) return rc;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!X509_digest(x, EVP_sha256(), md, &n) || n != 32) rc = ssl_fail(OM_E_Internal, crt);
    X509_free(x);
    for (unsigned i = 0; !rc && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return rc;
}

/* ---- making keys and certificates ---- */

static int new_key(EVP_PKEY **out)
{
    *out = EVP_EC_gen("P-256");
    return *out ? 0 : ssl_fail(OM_E_Internal, "making an EC P-256 key");
}

/* Adds the extension nid = value (OpenSSL's configuration syntax), issued by issuer. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : ssl_fail(OM_E_Internal, "making a certificate extension");
}

typedef struct certspec {
    const char *cn, *org;
    EVP_PKEY *key;        /* the subject's */
    X509 *issuer;         /* NULL: self-signed */
    EVP_PKEY *issuer_key; /* with issuer */
    const char *san;      /* "IP:..." or "DNS:...", or NULL */
} certspec;

static int set_validity(X509 *x, X509 *issuer)
{
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), RP_CERT_DAYS, 0, NULL))
        return ssl_fail(OM_E_Internal, "setting a certificate's validity");
    if (issuer && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(issuer)) > 0 &&
        !X509_set1_notAfter(x, X509_get0_notAfter(issuer)))
        return ssl_fail(OM_E_Internal, "setting a certificate's validity");
    return 0;
}

/* A random positive 127-bit serial number: unique without a counter to keep. */
static int set_serial(X509 *x)
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1) return ssl_fail(OM_E_Internal, "random serial number");
    r[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(r, sizeof r, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    return ok ? 0 : ssl_fail(OM_E_Internal, "setting a serial number");
}

static int make_cert(const certspec *s, X509 **out)
{
    X509 *x = X509_new();
    if (!x) return om_errf(OM_E_OutOfMemory, "making a certificate: out of memory");
    X509 *issuer = s->issuer ? s->issuer : x;
    EVP_PKEY *ikey = s->issuer ? s->issuer_key : s->key;
    X509_NAME *nm = X509_get_subject_name(x);
    int rc = 0;
    if (!X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, s->key) ||
        !X509_NAME_add_entry_by_NID(nm, NID_organizationName, MBSTRING_UTF8,
                                    (const unsigned char *)s->org, -1, -1, 0) ||
        !X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8, (const unsigned char *)s->cn,
                                    -1, -1, 0) ||
        !X509_set_issuer_name(x, X509_get_subject_name(issuer)))
        rc = ssl_fail(OM_E_Internal, "making a certificate");
    if (!rc) rc = set_serial(x);
    if (!rc) rc = set_validity(x, s->issuer);
    if (!s->issuer) {
        /* pathlen 0: what this CA signs can sign nothing. */
        if (!rc) rc = add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        if (!rc) rc = add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        if (!rc) rc = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (!rc) rc = add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        if (!rc) rc = add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
        if (!rc) rc = add_ext(x, issuer, NID_subject_alt_name, s->san);
    }
    if (!rc) rc = add_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (!rc) rc = add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    if (!rc && !X509_sign(x, ikey, EVP_sha256())) rc = ssl_fail(OM_E_Internal, "signing");
    if (rc) {
        X509_free(x);
        return rc;
    }
    *out = x;
    return 0;
}

/* ---- writing them: durably, keys private from their creation ---- */

/* PEM text of a certificate (key NULL) or of a key into a memory BIO; *p, *n point into it. */
static BIO *pem_of(X509 *x, EVP_PKEY *key, char **p, size_t *n)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = b && (key ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
                       : PEM_write_bio_X509(b, x));
    long l = ok ? BIO_get_mem_data(b, p) : 0;
    if (l <= 0) {
        BIO_free(b);
        return NULL;
    }
    *n = (size_t)l;
    return b;
}

/* Writes name in d durably (flags: OM_RENAME_REPLACE or 0). */
static int write_pem(om_dir *d, const char *name, X509 *x, EVP_PKEY *key, int flags)
{
    char *p;
    size_t n;
    BIO *b = pem_of(x, key, &p, &n);
    if (!b) return ssl_fail(OM_E_Internal, name);
    int rc;
    if (!key) {
        rc = om_durable_write_at(d, name, p, n, flags);
    } else {
        om_durable w;
        rc = om_durable_begin_private(d, name, &w);
        if (!rc && (rc = om_pwrite(w.f, p, n, 0))) om_durable_abort(&w);
        if (!rc) rc = om_durable_commit(&w, flags);
        OPENSSL_cleanse(p, n);
    }
    BIO_free(b);
    return rc;
}

static int ca_exists(const char *dir, const char *file)
{
    return om_errf(OM_E_FileAlreadyExists,
                   "a DAG's certificate authority is already in %s (%s is there): it is never "
                   "replaced. HINT: use that DAG, or another directory; if `dag init` was "
                   "interrupted before ca.crt was written, remove %s/ca.key and run it again",
                   dir, file, dir);
}

int rp_ca_create(const char *dir, const char *dag_name)
{
    int rc = rp_name_check("DAG name", dag_name);
    if (rc) return rc;
    om_dir *d = NULL;
    EVP_PKEY *key = NULL;
    X509 *crt = NULL;
    char cn[RP_NAME_MAX + 32];
    snprintf(cn, sizeof cn, "ombra DAG %s CA", dag_name);
    if ((rc = om_dir_open(om_vfs_posix(), NULL, dir, OM_D_CREATE, &d))) return rc;
    const char *files[] = {"ca.key", "ca.crt"};
    for (int i = 0; i < 2 && !rc; i++) {
        int k = om_kind_at(d, files[i]);
        if (k < 0) rc = k;
        if (k > 0) rc = ca_exists(dir, files[i]);
    }
    if (!rc) rc = new_key(&key);
    certspec s = {.cn = cn, .org = dag_name, .key = key};
    if (!rc) rc = make_cert(&s, &crt);
    /* The key first: a ca.crt without its key would be a CA nobody can use. Neither rename
     * replaces a name: a CA made meanwhile by another `dag init` stays. */
    if (!rc && (rc = write_pem(d, "ca.key", NULL, key, 0)) == OM_E_FileAlreadyExists)
        rc = ca_exists(dir, "ca.key");
    if (!rc && (rc = write_pem(d, "ca.crt", crt, NULL, 0)) == OM_E_FileAlreadyExists)
        rc = ca_exists(dir, "ca.crt");
    X509_free(crt);
    EVP_PKEY_free(key);
    om_dir_close(d);
    return rc;
}

/* The CA of cadir: its certificate and key, which must belong together. */
static int load_ca(const char *cadir, X509 **crt, EVP_PKEY **key)
{
    char p[4096];
    int rc = om_path_join(p, sizeof p, cadir, "ca.key");
    if (!rc && (rc = rp_key_read(p, key)) == OM_E_FileNotFound)
        return om_errf(rc,
                       "no DAG certificate authority in %s (no ca.key). HINT: issue "
                       "certificates on the machine that ran `ombra dag init`",
                       cadir);
    if (!rc) rc = om_path_join(p, sizeof p, cadir, "ca.crt");
    if (!rc) rc = rp_cert_read(p, crt);
    if (!rc && X509_check_private_key(*crt, *key) != 1) {
        ERR_clear_error();
        rc = om_errf(OM_E_InvalidParameter, "%s/ca.key is not the key of %s/ca.crt", cadir, cadir);
    }
    return rc;
}

/* 0 when outdir has no ca.crt or this CA's one (*same set); FileAlreadyExists for another's. */
static int check_out_ca(om_dir *out, const char *outdir, X509 *ca, int *same)
{
    *same = 0;
    int k = om_kind_at(out, "ca.crt");
    if (k <= 0) return k;
    char p[4096];
    X509 *old = NULL;
    int rc = om_path_join(p, sizeof p, outdir, "ca.crt");
    if (!rc) rc = rp_cert_read(p, &old);
    if (rc) return rc;
    *same = X509_cmp(old, ca) == 0;
    X509_free(old);
    if (*same) return 0;
    return om_errf(OM_E_FileAlreadyExists,
                   "%s/ca.crt is another certificate authority's: that directory belongs to "
                   "another DAG, and its certificates are left alone. HINT: issue into another "
                   "directory (--out)",
                   outdir);
}

int rp_ca_issue(const char *cadir, const char *server, const char *address, const char *outdir)
{
    char host[256], san[300], dag[RP_NAME_MAX + 1];
    unsigned port = 0;
    int family = 0;
    int rc = rp_name_check("server name", server);
    if (!rc) rc = rp_addr_parse(address, host, sizeof host, &port, &family);
    if (!rc && port == 0)
        rc = om_errf(OM_E_InvalidParameter,
                     "\"%s\": the port of a server's address cannot be "
                     "0. HINT: the port its replication service listens on",
                     address);
    if (rc) return rc;
    snprintf(san, sizeof san, "%s:%s", family == AF_UNSPEC ? "DNS" : "IP", host);
    X509 *ca = NULL, *crt = NULL;
    EVP_PKEY *cakey = NULL, *key = NULL;
    om_dir *d = NULL;
    int same = 0;
    rc = load_ca(cadir, &ca, &cakey);
    if (!rc) rc = rp_cert_name(ca, NID_organizationName, "ca.crt", dag);
    if (!rc) rc = om_dir_open(om_vfs_posix(), NULL, outdir, OM_D_CREATE, &d);
    if (!rc) rc = check_out_ca(d, outdir, ca, &same);
    if (!rc) rc = new_key(&key);
    certspec s = {
        .cn = server, .org = dag, .key = key, .issuer = ca, .issuer_key = cakey, .san = san};
    if (!rc) rc = make_cert(&s, &crt);
    /* The CA first (a server directory names its DAG before it holds anything of it), then
     * the key, then the certificate: a crash between the last two leaves a key that does not
     * match its certificate, which rp_tls_load refuses, and issuing again mends. */
    if (!rc && !same) rc = write_pem(d, "ca.crt", ca, NULL, 0);
    if (!rc) rc = write_pem(d, "server.key", NULL, key, OM_RENAME_REPLACE);
    if (!rc) rc = write_pem(d, "server.crt", crt, NULL, OM_RENAME_REPLACE);
    X509_free(crt);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(cakey);
    om_dir_close(d);
    return rc;
}

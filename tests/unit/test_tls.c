/* src/repl/tls, src/repl/ca: the DAG's certificates, and who a server lets in. Servers of one
 * DAG connect over TLS 1.3 and exchange messages whose bulk comes back byte for byte; a peer
 * with another DAG's certificate, a forged DAG name, no certificate, no TLS or an older TLS is
 * refused during the handshake, logged, and nothing it sends is read; a frame over the caps is
 * refused before anything is allocated for it. Only 127.0.0.1. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/bytes.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/time.h"
#include "repl/ca.h"
#include "repl/tls.h"

static char tmp[256];
static rp_tls *ta, *tb, *tx; /* servers a and b of DAG prod; x of another CA's DAG prod */

static void path(char *out, const char *a, const char *b)
{
    snprintf(out, 512, "%s/%s%s%s", tmp, a, b ? "/" : "", b ? b : "");
}

static int file_mode(const char *dir, const char *name)
{
    char p[512];
    path(p, dir, name);
    struct stat st;
    return stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static void copy_file(const char *from_dir, const char *name, const char *to_dir, int mode)
{
    char a[512], b[512];
    path(a, from_dir, name);
    path(b, to_dir, name);
    FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    assert_int_equal(chmod(b, (mode_t)mode), 0);
}

/* A certificate signed by cadir's CA with any subject O: what someone holding the CA's key
 * could make outside `dag add-server` (or a second DAG sharing one CA by mistake). */
static void forge(const char *cadir, const char *outdir, const char *cn, const char *org)
{
    char p[512], o[512];
    path(o, outdir, NULL);
    assert_int_equal(mkdir(o, 0700), 0);
    X509 *ca = NULL;
    EVP_PKEY *cakey = NULL;
    path(p, cadir, "ca.crt");
    assert_int_equal(rp_cert_read(p, &ca), 0);
    path(p, cadir, "ca.key");
    assert_int_equal(rp_key_read(p, &cakey), 0);
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_UTF8, (const unsigned char *)org, -1, -1, 0);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    const char *ext[][2] = {{"basicConstraints", "critical,CA:FALSE"},
                            {"keyUsage", "critical,digitalSignature"},
                            {"extendedKeyUsage", "serverAuth,clientAuth"},
                            {"subjectAltName", "IP:127.0.0.1"},
                            {"subjectKeyIdentifier", "hash"},
                            {"authorityKeyIdentifier", "keyid:always"}};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &ctx, ext[i][0], ext[i][1]);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
    path(p, outdir, "server.crt");
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    path(p, outdir, "server.key");
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    copy_file(cadir, "ca.crt", outdir, 0644);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(cakey);
}

static int forged;

/* fo/: a certificate signed by this DAG's CA that names DAG "other". */
static void ensure_forged(void)
{
    if (!forged) forge("ca", "fo", "f", "other");
    forged = 1;
}

static int setup(void **s)
{
    (void)s;
    snprintf(tmp, sizeof tmp, "/tmp/ombra-tls-XXXXXX");
    if (!mkdtemp(tmp)) return -1;
    om_log_min_level(OM_ERROR); /* refusals warn on purpose */
    char ca[512], ca2[512], d[512];
    path(ca, "ca", NULL);
    path(ca2, "ca2", NULL);
    if (rp_ca_create(ca, "prod") || rp_ca_create(ca2, "prod")) return -1;
    path(d, "a", NULL);
    if (rp_ca_issue(ca, "a", "127.0.0.1:7001", d) || rp_tls_load(d, &ta)) return -1;
    path(d, "b", NULL);
    if (rp_ca_issue(ca, "b", "127.0.0.1:7002", d) || rp_tls_load(d, &tb)) return -1;
    path(d, "x", NULL);
    if (rp_ca_issue(ca2, "a", "127.0.0.1:7001", d) || rp_tls_load(d, &tx)) return -1;
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    rp_tls_free(ta);
    rp_tls_free(tb);
    rp_tls_free(tx);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- a server in a thread ---- */

typedef struct server {
    rp_tls *t;
    int lfd, port, timeout_ms, rc;
    rp_conn *c;
    char detail[1024];
    uint64_t ms; /* how long rp_accept took */
    pthread_t th;
} server;

static void *server_main(void *arg)
{
    server *s = arg;
    uint64_t t0 = om_mono_ns();
    s->rc = rp_accept(s->t, s->lfd, s->timeout_ms, &s->c);
    s->ms = (om_mono_ns() - t0) / 1000000;
    if (s->rc) snprintf(s->detail, sizeof s->detail, "%s", om_err_detail());
    return NULL;
}

static void server_start(server *s, rp_tls *t, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    s->t = t;
    s->timeout_ms = timeout_ms;
    assert_int_equal(rp_listen("127.0.0.1:0", &s->lfd), 0);
    s->port = rp_local_port(s->lfd);
    assert_true(s->port > 0);
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_join(server *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static void addr_of(const server *s, char *out)
{
    snprintf(out, 64, "127.0.0.1:%d", s->port);
}

static int tcp_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    /* A client that waits for an answer gives up rather than hang the test. */
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* A TLS client written with OpenSSL alone, to be what rp_connect never is: it trusts this
 * DAG's ca.crt (public) but shows dir's certificate, or none (dir NULL), and may stop at
 * max_version. Returns SSL_connect's result; *ssl and *fd for more. */
static int raw_client(int port, const char *dir, int max_version, SSL_CTX **ctx, SSL **ssl, int *fd)
{
    char p[512], k[512];
    *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(*ctx);
    if (max_version) SSL_CTX_set_max_proto_version(*ctx, max_version);
    path(p, "a", "ca.crt");
    assert_int_equal(SSL_CTX_load_verify_locations(*ctx, p, NULL), 1);
    SSL_CTX_set_verify(*ctx, SSL_VERIFY_PEER, NULL);
    if (dir) {
        path(p, dir, "server.crt");
        path(k, dir, "server.key");
        assert_int_equal(SSL_CTX_use_certificate_file(*ctx, p, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(*ctx, k, SSL_FILETYPE_PEM), 1);
    }
    *fd = tcp_to(port);
    *ssl = SSL_new(*ctx);
    SSL_set_fd(*ssl, *fd);
    int r = SSL_connect(*ssl);
    ERR_clear_error();
    return r;
}

static void raw_close(SSL_CTX *ctx, SSL *ssl, int fd)
{
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    ERR_clear_error();
}

/* A client of one of the kinds above against a server of DAG prod: refused by the server,
 * quickly, with these words in the error. */
static void refused_raw(const char *dir, int max_version, const char *why)
{
    server s;
    server_start(&s, tb, 5000);
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    int r = raw_client(s.port, dir, max_version, &ctx, &ssl, &fd);
    /* TLS 1.3: a client's certificate goes last, so its connect may succeed; a read then
     * shows the server's refusal. */
    if (r == 1) {
        char b[16];
        assert_true(SSL_read(ssl, b, sizeof b) <= 0);
    }
    server_join(&s);
    raw_close(ctx, ssl, fd);
    rp_close(s.c); /* none, unless it was let in */
    assert_int_equal(s.rc, OM_E_FileAccessDenied);
    assert_null(s.c);
    if (!strstr(s.detail, why)) fail_msg("refusal says \"%s\", not \"%s\"", s.detail, why);
    assert_non_null(strstr(s.detail, "127.0.0.1:"));
    assert_true(s.ms < 3000);
}

/* ---- the certificate authority ---- */

static void ext_text(X509 *x, int nid, char *out, size_t len)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    assert_true(i >= 0);
    BIO *b = BIO_new(BIO_s_mem());
    X509V3_EXT_print(b, X509_get_ext(x, i), 0, 0);
    int n = BIO_read(b, out, (int)len - 1);
    out[n > 0 ? n : 0] = 0;
    BIO_free(b);
}

static void test_ca_and_certificates(void **s)
{
    (void)s;
    /* Keys are for root's eyes only, from their creation. */
    assert_int_equal(file_mode("ca", "ca.key"), 0600);
    assert_int_equal(file_mode("a", "server.key"), 0600);
    char p[512], t[512];
    X509 *x = NULL;
    path(p, "a", "server.crt");
    assert_int_equal(rp_cert_read(p, &x), 0);
    char name[RP_NAME_MAX + 1];
    assert_int_equal(rp_cert_name(x, NID_commonName, "server.crt", name), 0);
    assert_string_equal(name, "a");
    assert_int_equal(rp_cert_name(x, NID_organizationName, "server.crt", name), 0);
    assert_string_equal(name, "prod");
    ext_text(x, NID_subject_alt_name, t, sizeof t);
    assert_string_equal(t, "IP Address:127.0.0.1");
    ext_text(x, NID_ext_key_usage, t, sizeof t);
    assert_non_null(strstr(t, "TLS Web Server Authentication"));
    assert_non_null(strstr(t, "TLS Web Client Authentication"));
    assert_int_equal(X509_check_ca(x), 0);
    X509_free(x);
    /* The CA names its DAG where a verifier reads it, and says what it is. */
    path(p, "ca", "ca.crt");
    assert_int_equal(rp_cert_read(p, &x), 0);
    assert_int_equal(rp_cert_name(x, NID_organizationName, "ca.crt", name), 0);
    assert_string_equal(name, "prod");
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, t, sizeof t);
    assert_string_equal(t, "ombra DAG prod CA");
    assert_true(X509_check_ca(x) > 0);
    X509_free(x);
    /* A DNS name goes into the certificate as one. */
    char ca[512], d[512];
    path(ca, "ca", NULL);
    path(d, "dns", NULL);
    assert_int_equal(rp_ca_issue(ca, "db-3.x", "db-3.example.org:7000", d), 0);
    path(p, "dns", "server.crt");
    assert_int_equal(rp_cert_read(p, &x), 0);
    ext_text(x, NID_subject_alt_name, t, sizeof t);
    assert_string_equal(t, "DNS:db-3.example.org");
    X509_free(x);
    /* Issuing into the CA's own directory (the machine that ran `dag init` is a server too). */
    assert_int_equal(rp_ca_issue(ca, "first", "[::1]:7000", ca), 0);
    assert_int_equal(file_mode("ca", "server.key"), 0600);
    path(p, "ca", "server.crt");
    assert_int_equal(rp_cert_read(p, &x), 0);
    ext_text(x, NID_subject_alt_name, t, sizeof t);
    assert_string_equal(t, "IP Address:0:0:0:0:0:0:0:1");
    X509_free(x);
    rp_tls *t1 = NULL;
    assert_int_equal(rp_tls_load(ca, &t1), 0);
    assert_string_equal(rp_tls_server(t1), "first");
    assert_string_equal(rp_tls_dag(t1), "prod");
    rp_tls_free(t1);
}

static void test_ca_twice_refused(void **s)
{
    (void)s;
    char ca[512], p[512];
    path(ca, "ca", NULL);
    path(p, "ca", "ca.crt");
    char fp[65], fp2[65];
    assert_int_equal(rp_cert_fingerprint(p, fp), 0);
    assert_int_equal(rp_ca_create(ca, "prod"), OM_E_FileAlreadyExists);
    assert_non_null(strstr(om_err_detail(), "a DAG's certificate authority is already in"));
    assert_int_equal(rp_ca_create(ca, "other"), OM_E_FileAlreadyExists);
    /* Nothing changed. */
    assert_int_equal(rp_cert_fingerprint(p, fp2), 0);
    assert_string_equal(fp, fp2);
    assert_int_equal(file_mode("ca", "ca.key"), 0600);
    /* A server's directory holds a copy of its DAG's ca.crt: no CA is made over it either. */
    char a[512];
    path(a, "a", NULL);
    assert_int_equal(rp_ca_create(a, "other"), OM_E_FileAlreadyExists);
    /* Nor does issuing put another CA's certificates into a DAG's directory. */
    char ca2[512];
    path(ca2, "ca2", NULL);
    assert_int_equal(rp_ca_issue(ca2, "z", "127.0.0.1:7009", a), OM_E_FileAlreadyExists);
    assert_non_null(strstr(om_err_detail(), "another DAG"));
    /* A CA key others could read issues nothing. */
    char key[512], out[512];
    path(key, "ca", "ca.key");
    path(out, "z", NULL);
    assert_int_equal(chmod(key, 0640), 0);
    assert_int_equal(rp_ca_issue(ca, "z", "127.0.0.1:7009", out), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "ca.key has mode 0640"));
    assert_int_equal(chmod(key, 0600), 0);
    assert_int_equal(rp_ca_issue(ca, "z", "127.0.0.1:7009", out), 0);
}

static void test_fingerprint(void **s)
{
    (void)s;
    char p[512], cmd[700], line[512], fp[65];
    path(p, "a", "server.crt");
    assert_int_equal(rp_cert_fingerprint(p, fp), 0);
    assert_int_equal(strlen(fp), 64);
    /* The same as OpenSSL's command prints (colons and case aside). */
    snprintf(cmd, sizeof cmd, "openssl x509 -in %s -noout -fingerprint -sha256 2>/dev/null", p);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    if (!fgets(line, sizeof line, f)) {
        pclose(f);
        skip(); /* no openssl command on this machine */
    }
    pclose(f);
    char want[65] = {0};
    size_t n = 0;
    for (const char *c = strchr(line, '=') + 1; *c && n < 64; c++)
        if (*c != ':' && *c != '\n') want[n++] = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
    assert_string_equal(fp, want);
    /* Two servers, two fingerprints. */
    char fp2[65];
    path(p, "b", "server.crt");
    assert_int_equal(rp_cert_fingerprint(p, fp2), 0);
    assert_string_not_equal(fp, fp2);
}

static void test_bad_names_and_addresses(void **s)
{
    (void)s;
    char ca[512], d[512], ext[512];
    path(ca, "ca", NULL);
    path(d, "bad", NULL);
    path(ext, "ext", NULL);
    const char *bad[] = {
        "a/b",     "",
        ".hidden", "-opt",
        "..",      "sp ace",
        "x\n",     "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rp_ca_issue(ca, bad[i], "127.0.0.1:7000", d), OM_E_InvalidParameter);
        assert_non_null(strstr(om_err_detail(), "is not a valid server name"));
        assert_int_equal(rp_ca_create(ext, bad[i]), OM_E_InvalidParameter);
        assert_non_null(strstr(om_err_detail(), "is not a valid DAG name"));
    }
    assert_int_equal(rp_ca_issue(ca, "a/b", "127.0.0.1:7000", d), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "\"a/b\""));
    assert_int_equal(rp_ca_issue(ca, "ok-name_1.x", "127.0.0.1:7000", d), 0);
    const char *addrs[] = {"127.0.0.1",    "127.0.0.1:",     "127.0.0.1:65536", "::1:7000",
                           "[::1]7000",    "10.0.0.300:700", "bad_host:7000",   ":7000",
                           "127.0.0.1:-1", "[zz]:7000",      "127.0.0.1:0"};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        if (rp_ca_issue(ca, "c", addrs[i], d) != OM_E_InvalidParameter)
            fail_msg("address \"%s\" accepted", addrs[i]);
        assert_non_null(strstr(om_err_detail(), addrs[i]));
    }
    /* Nothing was written into the CA's folder or made where a refused name pointed. */
    struct stat st;
    assert_int_equal(stat(ext, &st), -1);
    /* No CA there: issuing says where to do it. */
    assert_int_equal(rp_ca_issue(d, "c", "127.0.0.1:7000", d), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "ombra dag init"));
}

/* ---- loading a server's directory ---- */

static void test_load_refusals(void **s)
{
    (void)s;
    char d[512], p[512];
    rp_tls *t = NULL;
    /* A key others can read. */
    path(d, "lk", NULL);
    mkdir(d, 0700);
    copy_file("a", "ca.crt", "lk", 0644);
    copy_file("a", "server.crt", "lk", 0644);
    copy_file("a", "server.key", "lk", 0640);
    assert_int_equal(rp_tls_load(d, &t), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "server.key has mode 0640"));
    path(p, "lk", "server.key");
    assert_int_equal(chmod(p, 0604), 0);
    assert_int_equal(rp_tls_load(d, &t), OM_E_FileAccessDenied);
    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(rp_tls_load(d, &t), 0);
    rp_tls_free(t);
    /* A key file that is a link is not followed. */
    char target[512];
    path(target, "a", "server.key");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink(target, p), 0);
    assert_int_equal(rp_tls_load(d, &t), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "symbolic link"));
    /* A certificate the DAG's CA did not sign (another CA's, with its own key). */
    path(d, "nc", NULL);
    mkdir(d, 0700);
    copy_file("a", "ca.crt", "nc", 0644);
    copy_file("x", "server.crt", "nc", 0644);
    copy_file("x", "server.key", "nc", 0600);
    assert_int_equal(rp_tls_load(d, &t), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "is not a valid certificate of this DAG's CA"));
    /* A key that is not the certificate's. */
    path(d, "mk", NULL);
    mkdir(d, 0700);
    copy_file("a", "ca.crt", "mk", 0644);
    copy_file("a", "server.crt", "mk", 0644);
    copy_file("b", "server.key", "mk", 0600);
    assert_int_equal(rp_tls_load(d, &t), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "server.key is not the key of"));
    /* A certificate of the CA but with another DAG's name. */
    ensure_forged();
    path(d, "fo", NULL);
    assert_int_equal(rp_tls_load(d, &t), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "is of DAG other"));
    /* Nothing issued yet. */
    path(d, "empty", NULL);
    mkdir(d, 0700);
    copy_file("a", "ca.crt", "empty", 0644);
    assert_int_equal(rp_tls_load(d, &t), OM_E_FileNotFound);
    assert_non_null(strstr(om_err_detail(), "ombra dag add-server"));
}

/* ---- connections ---- */

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)x;
    }
}

/* a connects to b: both ends know who the other is. */
static void connect_pair(server *s, rp_conn **client)
{
    char addr[64];
    server_start(s, tb, 5000);
    addr_of(s, addr);
    assert_int_equal(rp_connect(ta, addr, "b", 5000, client), 0);
    server_join(s);
    assert_int_equal(s->rc, 0);
    assert_string_equal(rp_conn_peer(*client), "b");
    assert_string_equal(rp_conn_peer(s->c), "a");
    assert_non_null(strstr(rp_conn_addr(s->c), "127.0.0.1:"));
}

typedef struct bulk_sender {
    rp_conn *c;
    const void *data;
    size_t n;
    int rc;
    json_t *hdr; /* NULL: {"op": "generation"} */
} bulk_sender;

static void *bulk_send_main(void *arg)
{
    bulk_sender *b = arg;
    json_t *h = b->hdr ? json_incref(b->hdr) : json_pack("{s:s}", "op", "generation");
    b->rc = rp_send(b->c, h, b->data, b->n);
    json_decref(h);
    return NULL;
}

static void test_round_trip(void **st)
{
    (void)st;
    server s;
    rp_conn *c = NULL;
    connect_pair(&s, &c);
    /* A header alone. */
    json_t *h = json_pack("{s:s, s:I}", "op", "hello", "gen", (json_int_t)123456789012);
    assert_int_equal(rp_send(c, h, NULL, 0), 0);
    json_decref(h);
    json_t *got = NULL;
    void *bulk = (void *)1;
    size_t n = 99;
    assert_int_equal(rp_recv(s.c, &got, &bulk, &n, 5000), 0);
    assert_string_equal(json_string_value(json_object_get(got, "op")), "hello");
    assert_int_equal(json_integer_value(json_object_get(got, "gen")), 123456789012);
    assert_null(bulk);
    assert_int_equal(n, 0);
    json_decref(got);
    /* A bulk of a few MiB, there and back, byte for byte. */
    size_t big = (5u << 20) + 12345;
    uint8_t *data = malloc(big);
    fill(data, big, 7);
    /* (sent from another thread: the sockets' buffers hold far less than it) */
    bulk_sender bs = {c, data, big, -1, NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bulk_send_main, &bs), 0);
    assert_int_equal(rp_recv(s.c, &got, &bulk, &n, 5000), 0);
    pthread_join(th, NULL);
    assert_int_equal(bs.rc, 0);
    assert_int_equal(n, big);
    assert_memory_equal(bulk, data, big);
    bs = (bulk_sender){s.c, bulk, n, -1, NULL};
    bs.hdr = got;
    assert_int_equal(pthread_create(&th, NULL, bulk_send_main, &bs), 0);
    void *echoed = bulk;
    json_t *sent = got;
    assert_int_equal(rp_recv(c, &got, &bulk, &n, 5000), 0);
    pthread_join(th, NULL);
    assert_int_equal(bs.rc, 0);
    json_decref(sent);
    free(echoed);
    assert_string_equal(json_string_value(json_object_get(got, "op")), "generation");
    assert_int_equal(n, big);
    assert_memory_equal(bulk, data, big);
    json_decref(got);
    free(bulk);
    free(data);
    /* Nothing to receive: a timeout, and the connection goes on. */
    uint64_t t0 = om_mono_ns();
    assert_int_equal(rp_recv(s.c, &got, &bulk, &n, 150), OM_E_DiskIO);
    assert_true((om_mono_ns() - t0) / 1000000 < 2000);
    assert_non_null(strstr(om_err_detail(), "within 150 ms"));
    assert_true(rp_conn_ok(s.c));
    h = json_pack("{s:s}", "op", "later");
    assert_int_equal(rp_send(c, h, "xyz", 3), 0);
    json_decref(h);
    assert_int_equal(rp_recv(s.c, &got, &bulk, &n, 5000), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(bulk, "xyz", 3);
    json_decref(got);
    free(bulk);
    /* A bulk where the receiver expects none is refused. */
    h = json_pack("{s:s}", "op", "unexpected");
    assert_int_equal(rp_send(c, h, "xyz", 3), 0);
    json_decref(h);
    assert_int_equal(rp_recv(s.c, &got, NULL, NULL, 5000), OM_E_InvalidParameter);
    assert_null(got);
    assert_false(rp_conn_ok(s.c));
    /* Over the caps: refused before anything is sent; the connection stays usable. */
    h = json_pack("{s:s}", "op", "huge");
    static const char one = 1;
    assert_int_equal(rp_send(c, h, &one, (size_t)RP_MAX_BULK + 1), OM_E_InvalidParameter);
    json_decref(h);
    char *pad = malloc(RP_MAX_HDR + 16);
    memset(pad, 'x', RP_MAX_HDR + 15);
    pad[RP_MAX_HDR + 15] = 0;
    h = json_pack("{s:s}", "pad", pad);
    free(pad);
    assert_int_equal(rp_send(c, h, NULL, 0), OM_E_InvalidParameter);
    assert_non_null(strstr(om_err_detail(), "larger than"));
    json_decref(h);
    assert_true(rp_conn_ok(c));
    /* The peer goes: the other end sees ConnectionClosed. */
    rp_close(s.c);
    assert_int_equal(rp_recv(c, &got, &bulk, &n, 5000), OM_E_ConnectionClosed);
    assert_false(rp_conn_ok(c));
    assert_int_equal(rp_recv(c, &got, &bulk, &n, 5000), OM_E_ConnectionClosed);
    rp_close(c);
}

/* Two threads send on one connection at once; every message arrives whole. */
typedef struct sender {
    rp_conn *c;
    int id, n, rc;
} sender;

#define MSG_BYTES 70000

static void *sender_main(void *arg)
{
    sender *s = arg;
    uint8_t *b = malloc(MSG_BYTES);
    for (int i = 0; i < s->n && !s->rc; i++) {
        fill(b, MSG_BYTES, (uint64_t)(s->id * 1000 + i));
        json_t *h = json_pack("{s:i, s:i}", "id", s->id, "i", i);
        s->rc = rp_send(s->c, h, b, MSG_BYTES - (size_t)i);
        json_decref(h);
    }
    free(b);
    return NULL;
}

static void test_concurrent_senders(void **st)
{
    (void)st;
    server s;
    rp_conn *c = NULL;
    connect_pair(&s, &c);
    sender w[2] = {{c, 1, 40, 0}, {c, 2, 40, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sender_main, &w[i]), 0);
    int next[3] = {0, 0, 0};
    uint8_t *want = malloc(MSG_BYTES);
    for (int m = 0; m < 80; m++) {
        json_t *h = NULL;
        void *bulk = NULL;
        size_t n = 0;
        assert_int_equal(rp_recv(s.c, &h, &bulk, &n, 10000), 0);
        int id = (int)json_integer_value(json_object_get(h, "id"));
        int i = (int)json_integer_value(json_object_get(h, "i"));
        assert_true(id == 1 || id == 2);
        assert_int_equal(i, next[id]++); /* in order per sender */
        fill(want, MSG_BYTES, (uint64_t)(id * 1000 + i));
        assert_int_equal(n, MSG_BYTES - (size_t)i);
        assert_memory_equal(bulk, want, n);
        json_decref(h);
        free(bulk);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].rc, 0);
    }
    free(want);
    rp_close(c);
    rp_close(s.c);
}

/* ---- who is refused ---- */

static void test_refused_other_dag(void **st)
{
    (void)st;
    /* A certificate of another DAG's CA (even one also called prod). */
    refused_raw("x", 0, "not signed by the CA of DAG prod");
    /* And the other way: a server of this DAG is refused by a client of the other one, and a
     * client of the other one by a server of this DAG. */
    server s;
    char addr[64];
    rp_conn *c = NULL;
    server_start(&s, tb, 5000);
    addr_of(&s, addr);
    assert_int_equal(rp_connect(tx, addr, NULL, 5000, &c), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "not signed by the CA of DAG prod"));
    assert_null(c);
    server_join(&s);
    assert_int_equal(s.rc, OM_E_FileAccessDenied);
}

static void test_refused_forged_dag_name(void **st)
{
    (void)st;
    /* Signed by this DAG's CA, but naming another DAG. */
    ensure_forged();
    refused_raw("fo", 0, "its certificate is of DAG other, not prod");
}

static void test_refused_no_certificate(void **st)
{
    (void)st;
    refused_raw(NULL, 0, "it sent no certificate");
}

static void test_refused_tls12(void **st)
{
    (void)st;
    /* A good certificate over TLS 1.2. */
    refused_raw("a", TLS1_2_VERSION, "does not speak TLS 1.3");
}

/* A plain TCP client writing garbage: refused at once, not after the handshake timeout. */
static void test_refused_plain_tcp(void **st)
{
    (void)st;
    /* Text; a record that claims to be a handshake and holds no hello; binary noise. */
    static const char g0[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                      g1[] = "\x16\x03\x01\x00\x10this is not a client hello at all",
                      g2[] = "\x00\x01\x02\x03\xff\xfe\xfd\xfc\x80\x81";
    const char *garbage[] = {g0, g1, g2};
    size_t len[] = {sizeof g0 - 1, sizeof g1 - 1, sizeof g2 - 1};
    for (int i = 0; i < 3; i++) {
        server s;
        server_start(&s, tb, 10000);
        int fd = tcp_to(s.port);
        assert_int_equal(write(fd, garbage[i], len[i]), (ssize_t)len[i]);
        server_join(&s);
        if (s.rc != OM_E_FileAccessDenied) fail_msg("garbage %d: %d %s", i, s.rc, s.detail);
        if (!strstr(s.detail, "does not speak TLS") && !strstr(s.detail, "handshake failed"))
            fail_msg("garbage refused with \"%s\"", s.detail);
        assert_true(s.ms < 3000);
        close(fd);
    }
    /* One that says nothing is refused when the handshake's time is up. */
    server s;
    server_start(&s, tb, 300);
    int fd = tcp_to(s.port);
    server_join(&s);
    assert_int_equal(s.rc, OM_E_DiskIO);
    assert_non_null(strstr(s.detail, "no TLS handshake within 300 ms"));
    close(fd);
}

static void test_wrong_expected_server(void **st)
{
    (void)st;
    server s;
    char addr[64];
    rp_conn *c = NULL;
    server_start(&s, tb, 5000);
    addr_of(&s, addr);
    assert_int_equal(rp_connect(ta, addr, "c", 5000, &c), OM_E_FileAccessDenied);
    assert_non_null(strstr(om_err_detail(), "it is server b, not the expected c"));
    assert_null(c);
    server_join(&s);
    assert_int_equal(s.rc, OM_E_FileAccessDenied);
    /* Nothing listening: a clear error, not a hang. */
    int lfd;
    assert_int_equal(rp_listen("127.0.0.1:0", &lfd), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rp_local_port(lfd));
    close(lfd);
    assert_int_equal(rp_connect(ta, addr, "b", 2000, &c), OM_E_DiskIO);
    assert_non_null(strstr(om_err_detail(), "refused"));
}

/* A frame over its cap is refused when its length arrives: the sender sends nothing after it,
 * so waiting for the body would time out instead. */
static void test_oversized_frames(void **st)
{
    (void)st;
    uint8_t hdr_ok[64];
    const char *js = "{\"op\":\"x\"}";
    size_t jl = strlen(js);
    om_put32(hdr_ok, (uint32_t)jl);
    memcpy(hdr_ok + 4, js, jl);
    for (int k = 0; k < 2; k++) {
        server s;
        server_start(&s, tb, 5000);
        SSL_CTX *ctx;
        SSL *ssl;
        int fd;
        assert_int_equal(raw_client(s.port, "a", 0, &ctx, &ssl, &fd), 1);
        server_join(&s);
        assert_int_equal(s.rc, 0);
        uint8_t f[80];
        size_t n;
        if (k == 0) { /* a header of 1 MiB + 1 */
            om_put32(f, RP_MAX_HDR + 1);
            n = 4;
        } else { /* a good header, then a bulk of 4 GiB - 1 */
            memcpy(f, hdr_ok, 4 + jl);
            om_put32(f + 4 + jl, 0xffffffffu);
            n = 8 + jl;
        }
        assert_int_equal(SSL_write(ssl, f, (int)n), (int)n);
        json_t *h = NULL;
        void *bulk = NULL;
        size_t bn = 0;
        uint64_t t0 = om_mono_ns();
        assert_int_equal(rp_recv(s.c, &h, &bulk, &bn, 4000), OM_E_InvalidParameter);
        assert_true((om_mono_ns() - t0) / 1000000 < 2000);
        assert_non_null(strstr(om_err_detail(), "refused before reading it"));
        assert_null(h);
        assert_null(bulk);
        assert_false(rp_conn_ok(s.c));
        rp_close(s.c);
        raw_close(ctx, ssl, fd);
    }
}

/* The refusal is in the log, with the address and the reason. */
static void test_refusal_logged(void **st)
{
    (void)st;
    char logp[512];
    path(logp, "log.txt", NULL);
    fflush(stderr);
    int saved = dup(2), lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && lf >= 0);
    dup2(lf, 2);
    om_log_min_level(OM_WARN);
    server s;
    server_start(&s, tb, 5000);
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    raw_client(s.port, NULL, 0, &ctx, &ssl, &fd);
    char b[8];
    SSL_read(ssl, b, sizeof b);
    server_join(&s);
    raw_close(ctx, ssl, fd);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(lf);
    om_log_min_level(OM_ERROR);
    FILE *f = fopen(logp, "r");
    char line[1024] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_non_null(strstr(line, "refused a connection from 127.0.0.1:"));
    assert_non_null(strstr(line, "it sent no certificate"));
}

static void test_listen_addresses(void **st)
{
    (void)st;
    int fd;
    assert_int_equal(rp_listen("localhost:0", &fd), OM_E_InvalidParameter);
    assert_int_equal(rp_listen("127.0.0.1", &fd), OM_E_InvalidParameter);
    assert_int_equal(rp_listen("127.0.0.1:0", &fd), 0);
    int port = rp_local_port(fd);
    char a[64];
    snprintf(a, sizeof a, "127.0.0.1:%d", port);
    int fd2;
    assert_int_equal(rp_listen(a, &fd2), OM_E_DiskIO);
    assert_non_null(strstr(om_err_detail(), "another process has this port"));
    close(fd);
    /* IPv6 where the machine has it. */
    if (rp_listen("[::1]:0", &fd) == 0) {
        server s;
        memset(&s, 0, sizeof s);
        s.t = tb;
        s.lfd = fd;
        s.timeout_ms = 5000;
        s.port = rp_local_port(fd);
        assert_int_equal(pthread_create(&s.th, NULL, server_main, &s), 0);
        snprintf(a, sizeof a, "[::1]:%d", s.port);
        rp_conn *c = NULL;
        assert_int_equal(rp_connect(ta, a, "b", 5000, &c), 0);
        server_join(&s);
        assert_int_equal(s.rc, 0);
        assert_non_null(strstr(rp_conn_addr(s.c), "[::1]:"));
        rp_close(c);
        rp_close(s.c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_and_certificates),
        cmocka_unit_test(test_ca_twice_refused),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_bad_names_and_addresses),
        cmocka_unit_test(test_load_refusals),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_concurrent_senders),
        cmocka_unit_test(test_refused_other_dag),
        cmocka_unit_test(test_refused_forged_dag_name),
        cmocka_unit_test(test_refused_no_certificate),
        cmocka_unit_test(test_refused_tls12),
        cmocka_unit_test(test_refused_plain_tcp),
        cmocka_unit_test(test_wrong_expected_server),
        cmocka_unit_test(test_oversized_frames),
        cmocka_unit_test(test_refusal_logged),
        cmocka_unit_test(test_listen_addresses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

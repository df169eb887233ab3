/* The DAG's certificate authority and its servers' certificates (ARCHITECTURE.md, "Several
 * servers: the DAG", decision "Certificates"; docs/design.md, "Between servers").
 *
 * One DAG, one certificate authority. `ombra dag init` makes it (rp_ca_create) on the machine
 * that keeps it; `ombra dag add-server` issues each server's certificate and key with it
 * (rp_ca_issue). A server's replication service reads three files from its DAG directory
 * (tls.h, rp_tls_load):
 *
 *   ca.key      the CA's private key: PEM (PKCS#8, not encrypted: its protection is the file's
 *               mode), mode 0600, only on the machine that ran `dag init`. Never replaced.
 *   ca.crt      the CA's self-signed certificate, the only certificate a server trusts.
 *               Subject CN "ombra DAG <name> CA", O "<name>" (the DAG's name). Never replaced.
 *   server.key  this server's private key: PEM, mode 0600. Replaced when issued again.
 *   server.crt  this server's certificate, signed by ca.key: subject CN "<server>" (the
 *               server's name, which peers check), O "<DAG name>" (which peers compare with
 *               their own DAG's), subjectAltName the host of its address (IP or DNS),
 *               extendedKeyUsage serverAuth and clientAuth (a server is both ends of
 *               connections). Replaced when issued again.
 *
 * Keys are EC on P-256 with ECDSA-SHA256 signatures: TLS 1.3 requires every implementation
 * to support that signature scheme (RFC 8446, 9.1), so etcd's Go TLS and libcurl, which the
 * same CA's certificates serve too, accept it; Ed25519 is optional there. Certificates are
 * valid 10 years (RP_CERT_DAYS) from an hour before they are made (clocks of two servers
 * differ a little), a server's never past its CA's.
 *
 * Every file is written through the durable-file helper (base/vfs.h): a temporary name
 * created O_EXCL without following a link (keys with mode 0600 from their creation), fsync,
 * rename, fsync of the directory. A crash leaves each file whole or absent. ca.key and ca.crt
 * are renamed without replacing: a CA that exists is never overwritten, not even by two
 * `dag init` running at once.
 *
 * Names (DAG and server): 1 to 63 of [A-Za-z0-9._-], the first a letter or a digit (no name
 * looks like an option, a hidden file or "..": names become etcd keys and file names).
 *
 * Every function returns 0 or an error from errors.def with its detail set (base/error.h). */
#ifndef OM_REPL_CA_H
#define OM_REPL_CA_H

#include <stddef.h>

#include <openssl/types.h>

#define RP_NAME_MAX  63
#define RP_CERT_DAYS 3650

/* 0 when name is a valid DAG or server name; else InvalidParameter naming the value, with
 * what ("server name", "DAG name") in the message. */
int rp_name_check(const char *what, const char *name);

/* Splits "HOST:PORT" ("A.B.C.D:PORT", "[v6]:PORT", "dns.name:PORT") into host (brackets
 * removed), its port (0 to 65535) and *family: AF_INET, AF_INET6, or AF_UNSPEC for a DNS name.
 * InvalidParameter naming the value otherwise. */
int rp_addr_parse(const char *addr_port, char *host, size_t hostlen, unsigned *port, int *family);

/* Makes a DAG's certificate authority in dir (created, mode 0750, when missing): dir/ca.key
 * and dir/ca.crt for the DAG dag_name. FileAlreadyExists when dir holds a ca.key or a ca.crt
 * already ("a DAG's certificate authority is already in DIR"): nothing is changed then. */
int rp_ca_create(const char *dir, const char *dag_name);

/* Issues the certificate of server (its name), reachable at address ("HOST:PORT", the port
 * not 0), with the CA in cadir: writes outdir/server.key (mode 0600), outdir/server.crt and
 * outdir/ca.crt (a copy of cadir's; outdir may be cadir). A server.key and server.crt there are
 * replaced (a new key each time). Refused: a ca.key readable by other users (FileAccessDenied),
 * an outdir whose ca.crt is another CA's (FileAlreadyExists: that directory is another DAG's),
 * a bad name or address (InvalidParameter). */
int rp_ca_issue(const char *cadir, const char *server, const char *address, const char *outdir);

/* SHA-256 of the DER encoding of the certificate in the PEM file crt, as 64 lower-case hex
 * digits (what the directory's servers/<server> record holds; what `openssl x509 -fingerprint
 * -sha256` prints, without the colons). */
int rp_cert_fingerprint(const char *crt, char out[65]);

/* ---- for tls.c (and tests): the files and fields above ---- */

/* The first certificate of the PEM file at path (a link there is refused). *out: the caller
 * frees it with X509_free. */
int rp_cert_read(const char *path, X509 **out);
/* The private key in the PEM file at path, refused (FileAccessDenied, with the mode) when the
 * file can be read or written by anyone but its owner, or is a link. EVP_PKEY_free. */
int rp_key_read(const char *path, EVP_PKEY **out);
/* The subject's single entry nid (NID_commonName: the server; NID_organizationName: the DAG)
 * into out, checked as a name (rp_name_check). InvalidParameter when missing, repeated or not a
 * name; what ("server.crt") names the certificate in the message. */
int rp_cert_name(X509 *crt, int nid, const char *what, char out[RP_NAME_MAX + 1]);
/* The first error of OpenSSL's queue of this thread, as text into buf (the queue is emptied);
 * "no detail" when it is empty. */
const char *rp_ssl_error(char *buf, size_t len);

#endif

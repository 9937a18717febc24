/* t_tls.h: throwaway certificates for TLS tests, made in memory at test time with libcrypto (no
 * private key is committed): a CA, a server certificate it signs for given names, and the CA
 * written to a PEM file a client can trust. */
#ifndef PINGVAS_T_TLS_H
#define PINGVAS_T_TLS_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>

typedef struct t_cert {
    EVP_PKEY *key;
    X509 *cert;
} t_cert_t;

/* Adds the extension nid (its value in openssl.cnf's syntax) to x, issued by issuer. */
static inline void t_tls_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v;
    X509V3_set_ctx_nodb(&v);
    X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, nid, value);
    if (!e || !X509_add_ext(x, e, -1)) {
        fprintf(stderr, "t_tls: cannot add extension %s\n", value);
        abort();
    }
    X509_EXTENSION_free(e);
}

/* A P-256 key and a certificate for it named cn, valid from an hour ago for a day: a CA when
 * issuer is NULL (self-signed), else signed by issuer for the subjectAltName san
 * ("IP:127.0.0.1,DNS:localhost"). Free with t_cert_free. */
static inline t_cert_t t_cert_make(const char *cn, const t_cert_t *issuer, const char *san)
{
    static long serial = 1;
    t_cert_t c = {EVP_EC_gen("P-256"), X509_new()};
    if (!c.key || !c.cert)
        abort();
    X509_set_version(c.cert, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(c.cert), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c.cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c.cert), 86400);
    X509_set_pubkey(c.cert, c.key);
    X509_NAME *name = X509_get_subject_name(c.cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *ic = issuer ? issuer->cert : c.cert;
    X509_set_issuer_name(c.cert, X509_get_subject_name(ic));
    t_tls_ext(c.cert, ic, NID_basic_constraints, issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
    t_tls_ext(c.cert, ic, NID_key_usage,
              issuer ? "critical,digitalSignature" : "critical,keyCertSign,cRLSign");
    t_tls_ext(c.cert, ic, NID_subject_key_identifier, "hash");
    t_tls_ext(c.cert, ic, NID_authority_key_identifier, "keyid:always");
    if (issuer)
        t_tls_ext(c.cert, ic, NID_subject_alt_name, san);
    if (!X509_sign(c.cert, issuer ? issuer->key : c.key, EVP_sha256()))
        abort();
    return c;
}

static inline void t_cert_free(t_cert_t *c)
{
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
    c->cert = NULL;
    c->key = NULL;
}

/* Writes c's certificate as PEM to path. */
static inline void t_cert_write(const t_cert_t *c, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || !PEM_write_X509(f, c->cert)) {
        fprintf(stderr, "t_tls: cannot write %s\n", path);
        abort();
    }
    fclose(f);
}

#endif

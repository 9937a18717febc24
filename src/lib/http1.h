/* http1.h: HTTP/1.1 over one kept-alive TCP connection, http:// as is and https:// over OpenSSL's
 * libssl directly, without libcurl.
 *
 * httpc sends requests here so that a worker (to its server, its engine, the instance metadata
 * service, the Kubernetes API) never loads libcurl, and with it GnuTLS, Kerberos, LDAP and
 * libcurl's own OpenSSL set-up (about 3 to 9 MB of a worker's peak RSS, bench row (e)). libssl
 * itself is loaded on the first https:// request (lib/lazydeps.c). What this module does not take
 * (userinfo in the URL, a proxy from the environment) stays with libcurl.
 *
 * https://: TLS 1.2 or later; the peer's certificate chain is verified against req->ca_file when
 * given (that file alone), otherwise the system store, one per process: the bundle and hashed
 * directories OpenSSL's SSL_CERT_FILE and SSL_CERT_DIR name when set, else OpenSSL's hashed
 * directory (/etc/ssl/certs); the certificate must name the URL's host (a DNS name, also sent as
 * SNI, or an IP address). A refusal says why ("SSL certificate problem: hostname mismatch (host
 * ...)"). Same timeouts (the TLS handshake within the connect timeout), keep-alive and one retry
 * as plain HTTP.
 * Same contract as httpc_do (httpc.h): no redirects, no content encoding, the body capped. */
#ifndef PINGVAS_HTTP1_H
#define PINGVAS_HTTP1_H

#include "lib/httpc.h"

struct ssl_st;
struct ssl_ctx_st;
struct ssl_session_st;

typedef struct http1_conn {
    int fd; /* -1 when not connected */
    /* scheme, host, port (and CA file) of the connection: reused only for the same */
    char key[900];
    struct ssl_st *ssl;     /* the TLS session on fd (https://), or NULL */
    struct ssl_ctx_st *ctx; /* TLS settings and trusted CAs, kept for the next connection */
    char ctx_ca[600];       /* the CA file ctx trusts ("" the system store) */
    /* that file's inode, size and mtime when read (a changed file is read again) */
    long long ctx_ca_id[3];
    int served; /* a response came over ssl: its session may be resumed */
    /* the last TLS session (verified with ctx), resumed by the next connection with its key */
    struct ssl_session_st *session;
    char session_key[900];
} http1_conn_t;

/* 1 when http1_do takes req: an http:// or https:// URL with no userinfo, no proxy variable set in
 * the environment for its scheme, and req->protocols (if any) allowing the scheme. */
int http1_takes(const httpc_req_t *req);

/* Performs req on c (connecting, or reusing c's connection to the same host and port). Returns 0
 * when a response arrived (any status), -1 with out->error set otherwise; always fills out. */
int http1_do(http1_conn_t *c, const httpc_req_t *req, httpc_resp_t *out);

/* Closes c's connection, if any, and frees its TLS settings. */
void http1_close(http1_conn_t *c);

#endif

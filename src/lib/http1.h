/* http1.h: plain HTTP/1.1 over one kept-alive TCP connection, without libcurl.
 *
 * httpc sends http:// requests here so that a worker that talks plain HTTP (to its server, its
 * engine, the instance metadata service) never loads libcurl, and with it OpenSSL's and GnuTLS's
 * initialisation (about 3 MB of a worker's peak RSS, bench row (e)). https:// and anything this
 * module does not take (userinfo in the URL, a proxy from the environment) stay with libcurl.
 * Same contract as httpc_do (httpc.h): no redirects, no content encoding, the body capped. */
#ifndef PINGVAS_HTTP1_H
#define PINGVAS_HTTP1_H

#include "lib/httpc.h"

typedef struct http1_conn {
    int fd;        /* -1 when not connected */
    char key[300]; /* "host port" the connection was made to (reused only for the same key) */
} http1_conn_t;

/* 1 when http1_do takes req: an http:// URL with no userinfo, no proxy variable set in the
 * environment, and req->protocols (if any) allowing http. */
int http1_takes(const httpc_req_t *req);

/* Performs req on c (connecting, or reusing c's connection to the same host and port). Returns 0
 * when a response arrived (any status), -1 with out->error set otherwise; always fills out. */
int http1_do(http1_conn_t *c, const httpc_req_t *req, httpc_resp_t *out);

/* Closes c's connection, if any. */
void http1_close(http1_conn_t *c);

#endif

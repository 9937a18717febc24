/* httpc.h: a small blocking HTTP client for workers, the CLI and webhooks. http:// and https://
 * requests go over HTTP/1.1 without libcurl (lib/http1.h: TLS on libssl directly); a request
 * through a proxy from the environment, or with userinfo in its URL, through a libcurl easy handle
 * made on first need, so that a worker never loads libcurl and its TLS stacks. */
#ifndef PINGVAS_HTTPC_H
#define PINGVAS_HTTPC_H

#include <stdatomic.h>
#include <stddef.h>

#define HTTPC_RESPONSE_MAX (4 * 1024 * 1024) /* cap on a response body */

typedef struct httpc_resp {
    long status; /* 0 when the request did not complete (network error) */
    char *body;  /* malloc'd, NUL-terminated (may be NULL when empty); caller frees */
    size_t len;
    char error[256]; /* transport error text when status == 0 */
} httpc_resp_t;

typedef struct httpc_req {
    const char *method; /* "GET", "POST", "PUT" */
    const char *url;
    const char *bearer;       /* Authorization: Bearer ..., or NULL */
    const char *extra_header; /* one "Name: value" header, or NULL */
    const void *body;
    size_t body_len;
    const char *content_type; /* default application/json when a body is given */
    long timeout_ms;
    atomic_int *abort_flag;     /* when nonzero the transfer is aborted (status 0) */
    size_t max_response;        /* cap on the response body; 0 = HTTPC_RESPONSE_MAX */
    const char *ca_file;        /* PEM bundle to verify https peers with (it alone), or NULL:
                                 * the system store (lib/http1.h says which files) */
    const char *const *headers; /* more "Name: value" headers, NULL-terminated, or NULL */
    const char *resolve;        /* "host:port:address": connect there, not where DNS says */
    const char *protocols;      /* allowed schemes ("https", "http,https"), or NULL for any */
} httpc_req_t;

typedef struct httpc httpc_t;

/* A client: its connections are kept alive between requests. Used by one thread at a time.
 * NULL when out of memory; httpc_free(NULL) does nothing. */
httpc_t *httpc_new(void);
void httpc_free(httpc_t *h);

/* Performs req on h. Returns 0 when a response arrived (any status), -1 on a transport error
 * (h NULL included). Always fills out; free out->body with httpc_resp_free. */
int httpc_do(httpc_t *h, const httpc_req_t *req, httpc_resp_t *out);
void httpc_resp_free(httpc_resp_t *r);

#endif

/* sigv4.h: AWS Signature Version 4 (AWS4-HMAC-SHA256), the pure parts: signing-key derivation,
 * SigV4 URI encoding, header-based signatures and presigned (query-string) URLs. Every function
 * takes the time as an argument, so tests reproduce AWS's published examples byte for byte.
 * No I/O and no global state; thread safe. Errors are -1 (an output buffer too small, or an
 * argument missing); nothing here allocates. */
#ifndef PINGVAS_SIGV4_H
#define PINGVAS_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#define SIGV4_MAX_EXPIRES 604800 /* seconds: SigV4 presigned URLs live at most 7 days */
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

/* Formats t (seconds since the Unix epoch, UTC) as the ISO 8601 basic form SigV4 uses,
 * "20130524T000000Z" (amz_date, 17 bytes with the NUL), and its date "20130524" (9 bytes).
 * Either output may be NULL. 0, or -1 when t is out of range. */
int sigv4_format_time(int64_t t, char amz_date[17], char date[9]);

/* Lowercase hex SHA-256 of data (64 characters and a NUL). */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
 * 0 or -1. */
int sigv4_signing_key(const char *secret, const char *date, const char *region, const char *service,
                      unsigned char out[32]);

/* URI-encodes s as SigV4 requires: A-Z a-z 0-9 - . _ ~ stay, every other byte becomes %XX
 * (uppercase hex); '/' stays when keep_slash is nonzero (object key paths) and becomes %2F
 * otherwise (query names and values). Writes a NUL-terminated string; returns its length, or
 * -1 when it does not fit in size bytes. */
int sigv4_uri_encode(const char *s, int keep_slash, char *out, size_t size);

/* One signed header: name in lowercase, value already trimmed. */
typedef struct sigv4_header {
    const char *name;
    const char *value;
} sigv4_header_t;

/* The parts of a request that a header-based signature covers. */
typedef struct sigv4_request {
    const char *method;            /* "GET" */
    const char *canonical_uri;     /* already URI-encoded path, e.g. "/test.txt" */
    const char *canonical_query;   /* already canonical (sorted, encoded), "" when none */
    const sigv4_header_t *headers; /* the signed headers, sorted by name */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
} sigv4_request_t;

/* The signer: who signs, for which scope, when. session_token may be NULL. */
typedef struct sigv4_signer {
    const char *access_key;
    const char *secret_key;
    const char *session_token;
    const char *region;  /* "us-east-1" */
    const char *service; /* "s3" */
    int64_t now;         /* seconds since the Unix epoch */
} sigv4_signer_t;

/* Computes the hex signature of req (64 characters and a NUL) and, when auth is not NULL, the
 * full Authorization header value ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=..."). 0, or -1 when an argument is missing or auth does not fit in auth_size. */
int sigv4_sign(const sigv4_signer_t *sg, const sigv4_request_t *req, char sig[65], char *auth,
               size_t auth_size);

/* Presigns a request (query-string authentication with X-Amz-SignedHeaders=host and an
 * UNSIGNED-PAYLOAD body). host is the Host header the client will send ("bucket.s3.amazonaws.com"
 * or "127.0.0.1:9000"); path is the unencoded object path ("/bucket/jobs/x.png"), encoded here
 * with '/' kept. Writes the whole query string, ending in X-Amz-Signature, to query (no leading
 * '?'). expires_s is 1..SIGV4_MAX_EXPIRES. 0, or -1 on a bad argument or a short buffer. */
int sigv4_presign(const sigv4_signer_t *sg, const char *method, const char *host, const char *path,
                  int64_t expires_s, char *query, size_t query_size);

#endif

/* test_sigv4.c: SigV4 against AWS's published examples. The S3 examples come from the Amazon S3
 * API Reference, "Authenticating Requests (AWS Signature Version 4)": header-based examples
 * (sig-v4-header-based-auth) and the presigned URL example (sigv4-query-string-auth), all with
 * AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY on examplebucket at
 * 20130524T000000Z in us-east-1. The signing-key example is the General Reference's "iam" one. */
#include <stdlib.h>
#include <string.h>

#include "blob/sigv4.h"
#include "t.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define T20130524 INT64_C(1369353600) /* 2013-05-24T00:00:00Z */
#define HOST "examplebucket.s3.amazonaws.com"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const sigv4_signer_t aws_example = {
    .access_key = AK, .secret_key = SK, .region = "us-east-1", .service = "s3", .now = T20130524};

static void test_signing_key_iam_example(void)
{
    unsigned char k[32];
    char hex[65];
    CHECK_INT(sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1",
                                "iam", k),
              0);
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = d[k[i] >> 4];
        hex[2 * i + 1] = d[k[i] & 15];
    }
    hex[64] = '\0';
    CHECK_STR(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

static void test_format_time(void)
{
    char amz[17], date[9];
    CHECK_INT(sigv4_format_time(T20130524, amz, date), 0);
    CHECK_STR(amz, "20130524T000000Z");
    CHECK_STR(date, "20130524");
    CHECK_INT(sigv4_format_time(INT64_C(1329264000) + 86399, amz, NULL), 0);
    CHECK_STR(amz, "20120215T235959Z");
    CHECK_INT(sigv4_format_time(-1, amz, date), -1);
}

static void test_sha256_hex(void)
{
    char h[65];
    sigv4_sha256_hex("", 0, h);
    CHECK_STR(h, EMPTY_SHA);
    sigv4_sha256_hex("Welcome to Amazon S3.", 21, h);
    CHECK_STR(h, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
}

static void test_uri_encode(void)
{
    char out[64];
    CHECK_INT(sigv4_uri_encode("/test$file.text", 1, out, sizeof out), 17);
    CHECK_STR(out, "/test%24file.text");
    sigv4_uri_encode("a b/c~d_e-f.g+h=", 1, out, sizeof out);
    CHECK_STR(out, "a%20b/c~d_e-f.g%2Bh%3D");
    sigv4_uri_encode("AKID/20130524/us-east-1/s3/aws4_request", 0, out, sizeof out);
    CHECK_STR(out, "AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request");
    sigv4_uri_encode("\xc3\xa9", 1, out, sizeof out); /* UTF-8 bytes, each encoded */
    CHECK_STR(out, "%C3%A9");
    CHECK_INT(sigv4_uri_encode("abcdef", 1, out, 6), -1); /* needs 7 bytes with the NUL */
    CHECK_INT(sigv4_uri_encode("abcde", 1, out, 6), 5);
    CHECK_INT(sigv4_uri_encode("$", 1, out, 3), -1);
}

/* "Example: GET Object": GET /test.txt with Range: bytes=0-9. */
static void test_header_get_object_range(void)
{
    sigv4_header_t h[] = {{"host", HOST},
                          {"range", "bytes=0-9"},
                          {"x-amz-content-sha256", EMPTY_SHA},
                          {"x-amz-date", "20130524T000000Z"}};
    sigv4_request_t r = {.method = "GET",
                         .canonical_uri = "/test.txt",
                         .canonical_query = "",
                         .headers = h,
                         .n_headers = 4,
                         .payload_hash = EMPTY_SHA};
    char sig[65], auth[512];
    CHECK_INT(sigv4_sign(&aws_example, &r, sig, auth, sizeof auth), 0);
    CHECK_STR(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK_STR(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                    "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK_INT(sigv4_sign(&aws_example, &r, sig, auth, 40), -1); /* Authorization does not fit */
}

/* "Example: PUT Object": PUT /test$file.text with a body and a storage class. */
static void test_header_put_object(void)
{
    char body_hash[65], key[64];
    sigv4_sha256_hex("Welcome to Amazon S3.", 21, body_hash);
    CHECK(sigv4_uri_encode("/test$file.text", 1, key, sizeof key) > 0);
    sigv4_header_t h[] = {{"date", "Fri, 24 May 2013 00:00:00 GMT"},
                          {"host", HOST},
                          {"x-amz-content-sha256", body_hash},
                          {"x-amz-date", "20130524T000000Z"},
                          {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    sigv4_request_t r = {.method = "PUT",
                         .canonical_uri = key,
                         .canonical_query = "",
                         .headers = h,
                         .n_headers = 5,
                         .payload_hash = body_hash};
    char sig[65];
    CHECK_INT(sigv4_sign(&aws_example, &r, sig, NULL, 0), 0);
    CHECK_STR(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

/* "Example: GET Bucket Lifecycle" (a subresource with an empty value) and "Example: Get Bucket
 * (List Objects)" (sorted query parameters). */
static void test_header_bucket_queries(void)
{
    sigv4_header_t h[] = {
        {"host", HOST}, {"x-amz-content-sha256", EMPTY_SHA}, {"x-amz-date", "20130524T000000Z"}};
    sigv4_request_t r = {.method = "GET",
                         .canonical_uri = "/",
                         .canonical_query = "lifecycle=",
                         .headers = h,
                         .n_headers = 3,
                         .payload_hash = EMPTY_SHA};
    char sig[65];
    CHECK_INT(sigv4_sign(&aws_example, &r, sig, NULL, 0), 0);
    CHECK_STR(sig, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    r.canonical_query = "max-keys=2&prefix=J";
    CHECK_INT(sigv4_sign(&aws_example, &r, sig, NULL, 0), 0);
    CHECK_STR(sig, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

/* The presigned URL example: GET /test.txt, valid 86400 s. */
static void test_presign_aws_example(void)
{
    char q[1024];
    CHECK_INT(sigv4_presign(&aws_example, "GET", HOST, "/test.txt", 86400, q, sizeof q), 0);
    CHECK_STR(q, "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                 "&X-Amz-Signature="
                 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
}

static void test_presign_session_token_and_errors(void)
{
    sigv4_signer_t sg = aws_example;
    sg.session_token = "tok/en+=";
    char q[1024], q2[1024];
    CHECK_INT(sigv4_presign(&sg, "PUT", HOST, "/jobs/a b.png", 3600, q, sizeof q), 0);
    /* The token is signed, sorted between X-Amz-Expires and X-Amz-SignedHeaders. */
    CHECK(strstr(q, "&X-Amz-Expires=3600&X-Amz-Security-Token=tok%2Fen%2B%3D&X-Amz-SignedHeaders="
                    "host&X-Amz-Signature=") != NULL);
    CHECK(strstr(q, SK) == NULL);
    /* The signature depends on the method, the path and the time. */
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/jobs/a b.png", 3600, q2, sizeof q2), 0);
    CHECK(strcmp(q, q2) != 0);
    sg.now++;
    CHECK_INT(sigv4_presign(&sg, "PUT", HOST, "/jobs/a b.png", 3600, q2, sizeof q2), 0);
    CHECK(strcmp(q, q2) != 0);
    /* Bad arguments. */
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/x", 0, q, sizeof q), -1);
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/x", SIGV4_MAX_EXPIRES + 1, q, sizeof q), -1);
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/x", SIGV4_MAX_EXPIRES, q, sizeof q), 0);
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "x", 60, q, sizeof q), -1);
    CHECK_INT(sigv4_presign(&sg, "GET", "", "/x", 60, q, sizeof q), -1);
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/x", 60, q, 100), -1);
    CHECK_STR(q, "");
    sg.access_key = NULL;
    CHECK_INT(sigv4_presign(&sg, "GET", HOST, "/x", 60, q, sizeof q), -1);
}

#define TESTS(X)                                                                                   \
    X(test_signing_key_iam_example)                                                                \
    X(test_format_time)                                                                            \
    X(test_sha256_hex)                                                                             \
    X(test_uri_encode)                                                                             \
    X(test_header_get_object_range)                                                                \
    X(test_header_put_object)                                                                      \
    X(test_header_bucket_queries)                                                                  \
    X(test_presign_aws_example)                                                                    \
    X(test_presign_session_token_and_errors)
#include "t_main.h"

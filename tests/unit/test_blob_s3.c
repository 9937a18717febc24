/* test_blob_s3.c: what the S3 store refuses before it talks to S3 (the configuration errors a
 * server must not start with). The store against a real S3-compatible server is tested in
 * tests/integration/test_s3.py. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "blob/blob.h"
#include "t.h"

static char err[1024];

static void set_creds(void)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret-test", 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_ENDPOINT_URL_S3");
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9", 1); /* discard port: nothing listens */
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1); /* never reach for link-local IMDS here */
}

static blob_t *open_s3(const char *url)
{
    err[0] = '\0';
    return blob_open(url, NULL, "http://server", err, sizeof err);
}

static void test_missing_credentials_named(void)
{
    set_creds();
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK(open_s3("s3://bucket/prefix") == NULL);
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID") && strstr(err, "AWS_SECRET_ACCESS_KEY"));
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    CHECK(open_s3("s3://bucket/prefix") == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY is missing") != NULL);
    setenv("AWS_SECRET_ACCESS_KEY", "", 1); /* empty counts as unset */
    CHECK(open_s3("s3://bucket/prefix") == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY") != NULL);
}

static void test_bad_bucket_and_prefix(void)
{
    set_creds();
    static const char *bad[] = {
        "s3://",
        "s3://ab/x",
        "s3://Upper/x",
        "s3://under_score",
        "s3://-leading/x",
        "s3://trailing-/x",
        "s3://a-bucket-name-that-is-far-too-long-for-s3-to-accept-it-0123456789/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(open_s3(bad[i]) == NULL);
        CHECK(strstr(err, "bucket name") != NULL);
    }
    CHECK(open_s3("s3://bucket/a/../b") == NULL);
    CHECK(strstr(err, "unsafe segment") != NULL);
    CHECK(open_s3("s3://bucket/p?x=1") == NULL);
    CHECK(open_s3("s3://bucket?x=1") == NULL);
    CHECK(strstr(err, "no query") != NULL);
}

static void test_bad_endpoint_and_region(void)
{
    set_creds();
    setenv("AWS_ENDPOINT_URL", "ftp://127.0.0.1:9", 1);
    CHECK(open_s3("s3://bucket/p") == NULL);
    CHECK(strstr(err, "AWS_ENDPOINT_URL") && strstr(err, "http://"));
    setenv("AWS_ENDPOINT_URL", "http://user:pw@127.0.0.1:9", 1);
    CHECK(open_s3("s3://bucket/p") == NULL);
    CHECK(strstr(err, "AWS_ENDPOINT_URL") != NULL);
    set_creds();
    setenv("AWS_REGION", "us east 1", 1);
    CHECK(open_s3("s3://bucket/p") == NULL);
    CHECK(strstr(err, "AWS_REGION") != NULL);
}

/* Nothing listens on the discard port: open fails at the bucket check and says where. */
static void test_unreachable_endpoint_fails_open(void)
{
    set_creds();
    CHECK(open_s3("s3://bucket//images//") == NULL);
    CHECK(strstr(err, "unreachable") && strstr(err, "http://127.0.0.1:9") &&
          strstr(err, "AWS_ENDPOINT_URL"));
    setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9/base/", 1); /* the S3-only override wins */
    setenv("AWS_ENDPOINT_URL", "ftp://ignored", 1);
    CHECK(open_s3("s3://bucket") == NULL);
    CHECK(strstr(err, "http://127.0.0.1:9/base") != NULL);
    setenv("AWS_ENDPOINT_URL_S3", "http://[::1]:9/v6//", 1); /* IPv6 loopback, read by curl_url */
    CHECK(open_s3("s3://bucket") == NULL);
    CHECK(strstr(err, "unreachable") && strstr(err, "http://[::1]:9/v6"));
    setenv("AWS_ENDPOINT_URL_S3", "http://[::1/", 1);
    CHECK(open_s3("s3://bucket") == NULL);
    CHECK(strstr(err, "AWS_ENDPOINT_URL") != NULL);
}

#define T_SETUP() curl_global_init(CURL_GLOBAL_DEFAULT)
#define T_TEARDOWN() curl_global_cleanup()
#define TESTS(X)                                                                                   \
    X(test_missing_credentials_named)                                                              \
    X(test_bad_bucket_and_prefix)                                                                  \
    X(test_bad_endpoint_and_region)                                                                \
    X(test_unreachable_endpoint_fails_open)
#include "t_main.h"

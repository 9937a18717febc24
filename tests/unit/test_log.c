/* test_log.c: secrets never reach a log line (log_redact_url), and logged values cannot forge
 * quotes or lines (log_format escapes every %s argument). Issue 16, findings 6 and 7. */
#include <stdint.h>
#include <string.h>

#include "bridge/celery.h"
#include "lib/log.h"
#include "t.h"

static void check_redacted(const char *url, const char *want)
{
    char buf[512];
    CHECK_STR(log_redact_url(url, buf, sizeof buf), want);
    CHECK(strstr(buf, "s3cr") == NULL);
}

static void test_redact_url(void)
{
    check_redacted("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0");
    check_redacted("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x");
    check_redacted("redis://127.0.0.1:6379/0?password=s3cret",
                   "redis://127.0.0.1:6379/0?password=***");
    check_redacted("postgresql://db/x?sslmode=require&password=s3cret&pool=4",
                   "postgresql://db/x?sslmode=require&password=***&pool=4");
    check_redacted("postgresql://db/x?PassWord=s3cret#frag", "postgresql://db/x?PassWord=***#frag");
    check_redacted("postgresql://db/x?sslpassword=s3cret", "postgresql://db/x?sslpassword=***");
    /* an unencoded '@', '/' or '?' inside the password */
    check_redacted("redis://:s3c@ret@host:1/0", "redis://:***@host:1/0");
    check_redacted("redis://u:s3cr/et@host/0", "redis://u:***@host/0");
    check_redacted("redis://u:s3cr?et@host/0", "redis://u:***@host/0");
    /* an empty password (found by fuzz_url: the scan used to loop forever on it) */
    check_redacted("redis://user:@host/0", "redis://user:***@host/0");
    check_redacted(":/\xff\xff://:@", ":/\xff\xff://:***@");
    /* a key=value connection string */
    check_redacted("host=db user=app password=s3cret dbname=x",
                   "host=db user=app password=*** dbname=x");
    check_redacted("https://b.s3.amazonaws.com/k?X-Amz-Signature=s3cret&X-Amz-Date=1",
                   "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Date=1");
    /* nothing secret: unchanged */
    check_redacted("sqlite:///data/pingvas.db?synchronous=full",
                   "sqlite:///data/pingvas.db?synchronous=full");
    check_redacted("redis://user@host:6379/0", "redis://user@host:6379/0");
    check_redacted("postgresql://db:5432/x?pool=8", "postgresql://db:5432/x?pool=8");
    char small[8];
    log_redact_url("redis://:s3cret@h", small, sizeof small);
    CHECK_STR(small, "redis:/"); /* truncated, never overflowed */
    CHECK_STR(log_redact_url(NULL, small, sizeof small), "");
}

static void test_celery_errors_redacted(void)
{
    celery_redis_addr_t a;
    char err[256];
    static const char *bad[] = {"redis://:s3cret@host:99999/0",
                                "redis://:s3cret@:1/0",
                                "redis://:s3cret@host:1/x",
                                "rediss://:s3cret@host/0",
                                "redis://host/0?password=s3cret&db=x",
                                "redis://:s3cret@host:0/0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = celery_parse_redis_url(bad[i], &a, err, sizeof err);
        CHECK(rc != 0 || strstr(bad[i], "?password") != NULL);
        CHECK(strstr(err, "s3cret") == NULL);
    }
}

static void test_format_escapes_values(void)
{
    char buf[256];
    log_format(buf, sizeof buf, "event=scaling reason=\"%s\" n=%d", "x\ny=\"z", 3);
    CHECK_STR(buf, "event=scaling reason=\"x\\ny=\\\"z\" n=3");
    CHECK(strchr(buf, '\n') == NULL);
    log_format(buf, sizeof buf, "a=%s b=%s", "back\\slash\r\t", "\x01\x7f\x1b[31m");
    CHECK_STR(buf, "a=back\\\\slash\\r\\t b=\\x01\\x7f\\x1b[31m");
    const char *volatile none =
        NULL; /* hidden from the format checker: log lines must survive it */
    log_format(buf, sizeof buf, "%.*s|%.2s|%s", 3, "abc\n", "xyz", none);
    CHECK_STR(buf, "abc|xy|(null)");
    log_format(buf, sizeof buf, "%d %ld %lld %zu %u %x %5.2f %.3f %c %% %05d %-3d|", -1, -2L, -3LL,
               (size_t)4, 5u, 255u, 1.5, 2.0, 'q', 42, 7);
    CHECK_STR(buf, "-1 -2 -3 4 5 ff  1.50 2.000 q % 00042 7  |");
    log_format(buf, sizeof buf, "%*d|%.*f", 4, 9, 1, 2.25);
    CHECK_STR(buf, "   9|2.2");
    char small[6];
    log_format(small, sizeof small, "%s", "\n\n\n\n");
    CHECK_STR(small, "\\n\\n\\"); /* truncated inside an escape: still bounded */
}

#define TESTS(X)                                                                                   \
    X(test_redact_url)                                                                             \
    X(test_celery_errors_redacted)                                                                 \
    X(test_format_escapes_values)
#include "t_main.h"

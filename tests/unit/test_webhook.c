/* test_webhook.c: the Standard Webhooks signature (the specification's reference vector), the
 * secret forms, the retry backoff, and the address and URL checks of lib/netguard.c. */
#include "t.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "api/webhook.h"
#include "lib/netguard.h"

static void test_reference_signature(void)
{
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t keylen = 0;
    char sig[96];
    /* from the Standard Webhooks libraries' tests */
    CHECK_INT(webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &keylen), 0);
    CHECK_INT(keylen, 24);
    const char *body = "{\"test\": 2432232314}";
    CHECK_INT(webhook_sign(key, keylen, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                           strlen(body), sig, sizeof sig),
              0);
    CHECK_STR(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* a plain secret is its own bytes */
    CHECK_INT(webhook_key("0123456789abcdef", key, &keylen), 0);
    CHECK_INT(keylen, 16);
    CHECK(memcmp(key, "0123456789abcdef", 16) == 0);
    CHECK_INT(webhook_key("whsec_%%%", key, &keylen), -1);
    CHECK_INT(webhook_key("", key, &keylen), -1);
}

static void test_backoff(void)
{
    CHECK_INT(webhook_backoff_ms(1000, 1, 0.5), 500);
    CHECK_INT(webhook_backoff_ms(1000, 2, 0.5), 1000);
    CHECK_INT(webhook_backoff_ms(1000, 3, 0.75), 3000);
    CHECK_INT(webhook_backoff_ms(1000, 40, 0.5), WEBHOOK_MAX_DELAY_MS / 2); /* capped */
    CHECK(webhook_backoff_ms(1000, 1, 0.999) < 1000);
    CHECK_INT(webhook_backoff_ms(1000, 1, 7.0), 500); /* r out of range: the least */
}

static int v4(const char *a)
{
    struct sockaddr_in s = {.sin_family = AF_INET};
    inet_pton(AF_INET, a, &s.sin_addr);
    return netguard_addr_public((struct sockaddr *)&s);
}

static int v6(const char *a)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, a, &s.sin6_addr);
    return netguard_addr_public((struct sockaddr *)&s);
}

static void test_addresses(void)
{
    static const char *const blocked4[] = {
        "0.0.0.0",     "10.0.0.1",        "100.64.0.1",     "127.0.0.1",      "127.255.255.254",
        "169.254.1.1", "169.254.169.254", "172.16.0.1",     "172.31.255.255", "192.0.0.8",
        "192.0.2.1",   "192.168.1.1",     "198.18.0.1",     "198.51.100.7",   "203.0.113.9",
        "224.0.0.1",   "239.1.1.1",       "255.255.255.255"};
    for (size_t i = 0; i < sizeof blocked4 / sizeof *blocked4; i++)
        if (v4(blocked4[i])) {
            CHECK(!"blocked IPv4 address passed");
            fprintf(stderr, "  %s\n", blocked4[i]);
        }
    CHECK(v4("8.8.8.8"));
    CHECK(v4("93.184.216.34"));
    CHECK(v4("172.32.0.1"));
    CHECK(v4("100.128.0.1"));
    static const char *const blocked6[] = {"::",
                                           "::1",
                                           "::ffff:127.0.0.1",
                                           "::ffff:169.254.169.254",
                                           "::ffff:10.0.0.1",
                                           "64:ff9b::7f00:1",
                                           "fe80::1",
                                           "fc00::1",
                                           "fd00:ec2::254",
                                           "ff02::1",
                                           "2001:db8::1",
                                           "2002:7f00:1::1",
                                           "2001:0:4136:e378::1",
                                           "fec0::1",
                                           "4000::1"};
    for (size_t i = 0; i < sizeof blocked6 / sizeof *blocked6; i++)
        if (v6(blocked6[i])) {
            CHECK(!"blocked IPv6 address passed");
            fprintf(stderr, "  %s\n", blocked6[i]);
        }
    CHECK(v6("2606:4700:4700::1111"));
    CHECK(v6("::ffff:8.8.8.8"));
}

static void test_urls(void)
{
    net_url_t u;
    char why[128];
    CHECK_INT(netguard_parse_url("https://hooks.example.com/a/b?x=1", &u, why, sizeof why), 0);
    CHECK_STR(u.scheme, "https");
    CHECK_STR(u.host, "hooks.example.com");
    CHECK_INT(u.port, 443);
    CHECK_INT(netguard_parse_url("HTTP://[2001:db8::1]:8080", &u, why, sizeof why), 0);
    CHECK_STR(u.host, "2001:db8::1");
    CHECK_INT(u.port, 8080);
    static const char *const bad[] = {"",
                                      "ftp://x/",
                                      "https://",
                                      "https:///p",
                                      "https://u:p@h/",
                                      "https://h/#f",
                                      "https://h:0/",
                                      "https://h:65536/",
                                      "https://h:80x/",
                                      "https://[::1/",
                                      "https://[::1]x/",
                                      "https://h /",
                                      "https://h\x01/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (netguard_parse_url(bad[i], &u, why, sizeof why) == 0) {
            CHECK(!"a bad URL parsed");
            fprintf(stderr, "  %s\n", bad[i]);
        }
    /* numeric forms resolve like the address they mean: checked after resolving */
    char addr[64];
    CHECK_INT(netguard_parse_url("https://2130706433/", &u, why, sizeof why), 0);
    CHECK_INT(netguard_check(&u, 0, addr, sizeof addr, why, sizeof why), -1);
    CHECK(strstr(why, "127.0.0.1") != NULL);
    CHECK_INT(netguard_check(&u, 1, addr, sizeof addr, why, sizeof why), 0);
    CHECK_STR(addr, "127.0.0.1");
    CHECK_INT(netguard_parse_url("http://93.184.216.34/", &u, why, sizeof why), 0);
    CHECK_INT(netguard_check(&u, 0, addr, sizeof addr, why, sizeof why), -1); /* https only */
    CHECK_INT(netguard_parse_url("https://93.184.216.34/", &u, why, sizeof why), 0);
    CHECK_INT(netguard_check(&u, 0, addr, sizeof addr, why, sizeof why), 0);
}

#define TESTS(X) X(test_reference_signature) X(test_backoff) X(test_addresses) X(test_urls)
#include "t_main.h"

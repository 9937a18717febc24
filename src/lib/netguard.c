/* netguard.c: checks of user-given outbound URLs against request forgery (netguard.h). */
#include "lib/netguard.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int netguard_parse_url(const char *url, net_url_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(url);
    if (len == 0 || len > NETGUARD_URL_MAX)
        return snprintf(why, whylen, "must be 1 to %d characters", NETGUARD_URL_MAX), -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return snprintf(why, whylen, "must not contain spaces or non-ASCII bytes"), -1;
    const char *rest;
    if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(out->scheme, sizeof out->scheme, "https");
        out->port = 443;
        rest = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        snprintf(out->scheme, sizeof out->scheme, "http");
        out->port = 80;
        rest = url + 7;
    } else {
        return snprintf(why, whylen, "must be an https:// URL"), -1;
    }
    size_t auth = strcspn(rest, "/?#");
    if (rest[auth] == '#' || strchr(rest, '#'))
        return snprintf(why, whylen, "must not have a #fragment"), -1;
    if (memchr(rest, '@', auth))
        return snprintf(why, whylen, "must not carry a user name or password"), -1;
    const char *h = rest, *hend, *port = NULL;
    if (*h == '[') {
        hend = memchr(h, ']', auth);
        if (!hend)
            return snprintf(why, whylen, "has an unclosed [IPv6 address]"), -1;
        h++;
        if (hend + 1 < rest + auth) {
            if (hend[1] != ':')
                return snprintf(why, whylen, "has junk after the [IPv6 address]"), -1;
            port = hend + 2;
        }
    } else {
        const char *colon = memchr(h, ':', auth);
        hend = colon ? colon : rest + auth;
        port = colon ? colon + 1 : NULL;
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0 || hl >= sizeof out->host)
        return snprintf(why, whylen, "must name a host"), -1;
    memcpy(out->host, h, hl);
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (end == port || end != rest + auth || p < 1 || p > 65535)
            return snprintf(why, whylen, "has a bad port"), -1;
        out->port = (int)p;
    }
    return 0;
}

/* 1 when the IPv4 address (host order) is public. */
static int v4_public(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } blocked[] = {
        {0x00000000, 0xff000000}, /* 0.0.0.0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 private */
        {0x64400000, 0xffc00000}, /* 100.64/10 carrier-grade NAT */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local, cloud metadata */
        {0xac100000, 0xfff00000}, /* 172.16/12 private */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 IETF protocol assignments */
        {0xc0000200, 0xffffff00}, /* 192.0.2/24 documentation */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 private */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xc6336400, 0xffffff00}, /* 198.51.100/24 documentation */
        {0xcb007100, 0xffffff00}, /* 203.0.113/24 documentation */
        {0xe0000000, 0xe0000000}, /* 224/3 multicast, reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
        if ((a & blocked[i].mask) == blocked[i].net)
            return 0;
    return 1;
}

static int v6_public(const unsigned char *b)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char zero[12] = {0};
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 || memcmp(b, zero, 12) == 0) {
        /* ::ffff:a.b.c.d, 64:ff9b::a.b.c.d, and ::a.b.c.d (:: and ::1 among them) */
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_public(a);
    }
    if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 unique local (fd00:ec2::254) */
        return 0;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
        return 0;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) /* fec0::/10 site-local (deprecated) */
        return 0;
    if (b[0] == 0xff) /* multicast */
        return 0;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) /* 2001:db8::/32 docs */
        return 0;
    if (b[0] == 0x20 && b[1] == 0x02) /* 2002::/16 6to4: may embed any IPv4 address */
        return 0;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) /* 2001::/32 Teredo */
        return 0;
    return (b[0] & 0xe0) == 0x20; /* only 2000::/3 is global unicast */
}

int netguard_addr_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_public(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6)
        return v6_public(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
    return 0;
}

int netguard_check(const net_url_t *u, int allow_private, char *addr, size_t addrlen, char *why,
                   size_t whylen)
{
    if (!allow_private && strcmp(u->scheme, "https") != 0)
        return snprintf(why, whylen, "must be an https:// URL"), -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(u->host, NULL, &hints, &res);
    if (rc != 0)
        return snprintf(why, whylen, "host '%s' does not resolve (%s)", u->host, gai_strerror(rc)),
               -1;
    rc = -1;
    addr[0] = '\0';
    why[0] = '\0';
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN] = "";
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, a, text, sizeof text);
        if (!allow_private && !netguard_addr_public(ai->ai_addr)) {
            snprintf(why, whylen,
                     "host '%s' resolves to %s, a private, loopback, link-local or reserved "
                     "address (refused unless the server runs with --allow-private-webhooks)",
                     u->host, text);
            rc = -1;
            break;
        }
        if (!addr[0])
            snprintf(addr, addrlen, "%s", text);
        rc = 0;
    }
    freeaddrinfo(res);
    if (rc != 0 && !why[0])
        snprintf(why, whylen, "host '%s' has no address", u->host);
    return rc;
}

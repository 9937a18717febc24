/* netguard.h: outbound URLs a user gave us (webhooks), checked against server-side request
 * forgery: the URL's form, then every address its host resolves to. A URL passes only when it
 * is https and every address is public: no loopback, private (RFC 1918, unique local), link-local
 * (the cloud metadata services at 169.254.169.254 and fd00:ec2::254 included), carrier-grade NAT,
 * unspecified, multicast, broadcast, documentation or reserved range, also when written as an
 * IPv4-mapped or NAT64 IPv6 address. allow_private (--allow-private-webhooks: tests, private
 * networks) lifts both the address and the https rule. The address the check passed is the one
 * to connect to (netguard_check fills it), so a DNS answer that changes afterwards cannot
 * redirect the request. */
#ifndef PINGVAS_NETGUARD_H
#define PINGVAS_NETGUARD_H

#include <stddef.h>
#include <sys/socket.h>

#define NETGUARD_URL_MAX 2048

typedef struct net_url {
    char scheme[8]; /* "http" or "https" */
    char host[256]; /* a name, an IPv4 address or an IPv6 address without brackets */
    int port;       /* from the URL, else 80 or 443 */
} net_url_t;

/* Parses an absolute http(s) URL: scheme, host, optional port, optional path and query; no
 * userinfo, no fragment, no spaces or control bytes, at most NETGUARD_URL_MAX bytes. 0, or -1
 * with a reason in why. */
int netguard_parse_url(const char *url, net_url_t *out, char *why, size_t whylen);
/* 1 when the address may be reached from a server on the public internet's behalf. */
int netguard_addr_public(const struct sockaddr *sa);
/* Resolves u->host and checks the scheme and every address (see above). 0 with the first
 * address in addr (numeric, no brackets, at least 64 bytes), or -1 with a reason in why. */
int netguard_check(const net_url_t *u, int allow_private, char *addr, size_t addrlen, char *why,
                   size_t whylen);

#endif

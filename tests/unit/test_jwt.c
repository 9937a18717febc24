/* test_jwt.c: HS256 tokens: minting, verification, every way to be refused, base64url. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>

#include "lib/jwt.h"
#include "t.h"

#define SECRET "correct horse battery staple"
#define NOW 1700000000LL

static int verify(const char *tok, int64_t now, char *sub, size_t sub_size)
{
    return jwt_verify_hs256(tok, strlen(tok), SECRET, strlen(SECRET), now, sub, sub_size);
}

/* Builds a token from raw header and payload JSON text, signed with HS256 under key when key
 * is not NULL, or with the given literal signature part otherwise. Caller frees. */
static char *craft(const char *header, const char *payload, const char *key, const char *sig)
{
    char *h = b64url_encode((const unsigned char *)header, strlen(header));
    char *p = b64url_encode((const unsigned char *)payload, strlen(payload));
    char *s = NULL, *tok = NULL;
    if (!h || !p)
        goto out;
    size_t n = strlen(h) + 1 + strlen(p);
    char *signing = malloc(n + 1);
    if (!signing)
        goto out;
    int w = snprintf(signing, n + 1, "%s.%s", h, p);
    if (w < 0 || (size_t)w != n) {
        free(signing);
        goto out;
    }
    if (key) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)signing, n, mac, &mac_len);
        s = b64url_encode(mac, mac_len);
    } else {
        s = strdup(sig);
    }
    if (s) {
        size_t total = n + 1 + strlen(s) + 1;
        tok = malloc(total);
        if (tok && snprintf(tok, total, "%s.%s", signing, s) != (int)(total - 1)) {
            free(tok);
            tok = NULL;
        }
    }
    free(signing);
out:
    free(h);
    free(p);
    free(s);
    return tok;
}

#define HS256_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* Crafts with HS256_HDR under SECRET and checks the verification result. */
static void check_payload(const char *payload, int64_t now, int want)
{
    char sub[65];
    char *tok = craft(HS256_HDR, payload, SECRET, NULL);
    CHECK(tok != NULL);
    if (!tok)
        return;
    int rc = verify(tok, now, sub, sizeof sub);
    if (rc != want)
        fprintf(stderr, "  payload %s: got %d (%s), expected %d\n", payload, rc, jwt_strerror(rc),
                want);
    CHECK_INT(rc, want);
    free(tok);
}

static void check_header(const char *header, int want)
{
    char sub[65];
    char *tok = craft(header, "{\"sub\":\"alice\",\"exp\":1700000100}", SECRET, NULL);
    CHECK(tok != NULL);
    if (!tok)
        return;
    int rc = verify(tok, NOW, sub, sizeof sub);
    if (rc != want)
        fprintf(stderr, "  header %s: got %d, expected %d\n", header, rc, want);
    CHECK_INT(rc, want);
    free(tok);
}

static void test_sign_verify(void)
{
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, 3600);
    CHECK(tok != NULL);
    if (!tok)
        return;
    char sub[65] = "junk";
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_OK);
    CHECK_STR(sub, "alice");
    CHECK_INT(verify(tok, NOW + 3600, sub, sizeof sub), JWT_OK);
    /* Three parts, URL-safe characters only, no padding. */
    int dots = 0;
    for (const char *c = tok; *c; c++) {
        dots += *c == '.';
        CHECK(*c != '=' && *c != '+' && *c != '/');
    }
    CHECK_INT(dots, 2);
    /* The header decodes to the HS256 header. */
    const char *d = strchr(tok, '.');
    size_t n = 0;
    unsigned char *h = b64url_decode(tok, (size_t)(d - tok), &n);
    CHECK(h != NULL);
    CHECK(h && strstr((const char *)h, "\"alg\":\"HS256\"") != NULL);
    free(h);
    free(tok);

    /* Sign refuses what it cannot mint. */
    CHECK(jwt_sign_hs256(SECRET, strlen(SECRET), "", NOW, 60) == NULL);
    CHECK(jwt_sign_hs256(SECRET, strlen(SECRET), NULL, NOW, 60) == NULL);
    CHECK(jwt_sign_hs256("", 0, "alice", NOW, 60) == NULL);
    CHECK(jwt_sign_hs256(NULL, 5, "alice", NOW, 60) == NULL);
    CHECK(jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, -1) == NULL);
    CHECK(jwt_sign_hs256(SECRET, strlen(SECRET), "alice", INT64_MAX, 60) == NULL);

    /* A subject with characters JSON must escape round-trips. */
    tok = jwt_sign_hs256(SECRET, strlen(SECRET), "a\"b\\c\xc3\xa9", NOW, 60);
    CHECK(tok != NULL);
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_OK);
    CHECK_STR(sub, "a\"b\\c\xc3\xa9");
    free(tok);

    /* A secret with NUL bytes is used whole. */
    static const char bin_key[] = {'k', '\0', 'x'};
    static const char bin_key2[] = {'k', '\0', 'y'};
    tok = jwt_sign_hs256(bin_key, sizeof bin_key, "bob", NOW, 60);
    CHECK(tok != NULL);
    CHECK_INT(jwt_verify_hs256(tok, strlen(tok), bin_key, sizeof bin_key, NOW, sub, sizeof sub),
              JWT_OK);
    CHECK_INT(jwt_verify_hs256(tok, strlen(tok), bin_key2, sizeof bin_key2, NOW, sub, sizeof sub),
              JWT_BAD_SIG);
    free(tok);
}

static void test_expiry(void)
{
    char sub[65];
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, 100); /* exp NOW+100 */
    CHECK(tok != NULL);
    if (!tok)
        return;
    CHECK_INT(verify(tok, NOW + 100, sub, sizeof sub), JWT_OK);
    CHECK_INT(verify(tok, NOW + 100 + 59, sub, sizeof sub), JWT_OK);           /* leeway */
    CHECK_INT(verify(tok, NOW + 100 + JWT_LEEWAY_S, sub, sizeof sub), JWT_OK); /* edge */
    CHECK_INT(verify(tok, NOW + 100 + JWT_LEEWAY_S + 1, sub, sizeof sub), JWT_EXPIRED);
    CHECK_INT(verify(tok, NOW + 86400, sub, sizeof sub), JWT_EXPIRED);
    CHECK_STR(sub, ""); /* nothing copied on failure */
    /* iat = NOW: a verifier whose clock is behind by up to the leeway accepts. */
    CHECK_INT(verify(tok, NOW - JWT_LEEWAY_S, sub, sizeof sub), JWT_OK);
    CHECK_INT(verify(tok, NOW - JWT_LEEWAY_S - 1, sub, sizeof sub), JWT_NOT_YET);
    free(tok);

    /* Crafted claims. */
    check_payload("{\"sub\":\"a\",\"exp\":1700000000}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\",\"exp\":1699999940}", NOW, JWT_OK); /* exactly the leeway */
    check_payload("{\"sub\":\"a\",\"exp\":1699999939}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":1699999939.5}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":1699999940.5}", NOW, JWT_OK); /* fractional */
    check_payload("{\"sub\":\"a\",\"exp\":0}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":-1}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":1e300}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\",\"exp\":9223372036854775807}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\"}", NOW, JWT_EXPIRED); /* missing exp */
    check_payload("{\"sub\":\"a\",\"exp\":\"1800000000\"}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":null}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":true}", NOW, JWT_EXPIRED);
    check_payload("{\"sub\":\"a\",\"exp\":[1800000000]}", NOW, JWT_EXPIRED);
}

static void test_not_yet(void)
{
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1700000000}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1700000060}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1700000061}", NOW, JWT_NOT_YET);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":1800000000}", NOW, JWT_NOT_YET);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":\"0\"}", NOW, JWT_MALFORMED);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"iat\":1700000060}", NOW, JWT_OK);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"iat\":1700000061}", NOW, JWT_NOT_YET);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"iat\":null}", NOW, JWT_MALFORMED);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000,\"iat\":1}", NOW, JWT_OK);
    /* An expired token from the future is still expired. */
    check_payload("{\"sub\":\"a\",\"exp\":1,\"nbf\":1800000000}", NOW, JWT_EXPIRED);
}

static void test_subject(void)
{
    char sub[65];
    check_payload("{\"exp\":1800000000}", NOW, JWT_NO_SUBJECT);
    check_payload("{\"sub\":\"\",\"exp\":1800000000}", NOW, JWT_NO_SUBJECT);
    check_payload("{\"sub\":42,\"exp\":1800000000}", NOW, JWT_NO_SUBJECT);
    check_payload("{\"sub\":null,\"exp\":1800000000}", NOW, JWT_NO_SUBJECT);
    check_payload("{\"sub\":[\"a\"],\"exp\":1800000000}", NOW, JWT_NO_SUBJECT);
    check_payload("{\"sub\":\"a\\u0000b\",\"exp\":1800000000}", NOW, JWT_MALFORMED);

    /* sub must fit in sub_size - 1 bytes: truncation is an error. */
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), "abcd", NOW, 60);
    CHECK(tok != NULL);
    if (!tok)
        return;
    CHECK_INT(verify(tok, NOW, sub, 5), JWT_OK);
    CHECK_STR(sub, "abcd");
    CHECK_INT(verify(tok, NOW, sub, 4), JWT_NO_SUBJECT);
    CHECK_INT(verify(tok, NOW, sub, 1), JWT_NO_SUBJECT);
    CHECK_INT(verify(tok, NOW, sub, 0), JWT_NO_SUBJECT);
    CHECK_INT(verify(tok, NOW, NULL, 0), JWT_NO_SUBJECT);
    free(tok);
}

static void test_wrong_key_and_tamper(void)
{
    char sub[65];
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, 3600);
    CHECK(tok != NULL);
    if (!tok)
        return;
    size_t len = strlen(tok);
    CHECK_INT(jwt_verify_hs256(tok, len, "other", 5, NOW, sub, sizeof sub), JWT_BAD_SIG);
    CHECK_INT(jwt_verify_hs256(tok, len, SECRET, strlen(SECRET) - 1, NOW, sub, sizeof sub),
              JWT_BAD_SIG);
    CHECK_INT(jwt_verify_hs256(tok, len, "", 0, NOW, sub, sizeof sub), JWT_BAD_SIG);
    CHECK_INT(jwt_verify_hs256(tok, len, NULL, 0, NOW, sub, sizeof sub), JWT_BAD_SIG);

    /* Payload swapped for one naming another user: signature no longer matches. */
    char *evil = craft(HS256_HDR, "{\"sub\":\"root\",\"iat\":1700000000,\"exp\":1700003600}",
                       "other key", NULL);
    CHECK(evil != NULL);
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    const char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');
    char spliced[1024];
    int w = snprintf(spliced, sizeof spliced, "%.*s.%.*s%s", (int)(d1 - tok), tok,
                     (int)(e2 - e1 - 1), e1 + 1, d2);
    CHECK(w > 0 && (size_t)w < sizeof spliced);
    CHECK_INT(verify(spliced, NOW, sub, sizeof sub), JWT_BAD_SIG);
    free(evil);

    /* Flip each character of the token in turn: never JWT_OK. */
    char *copy = strdup(tok);
    CHECK(copy != NULL);
    for (size_t i = 0; copy && i < len; i++) {
        char orig = copy[i];
        copy[i] = orig == 'A' ? 'B' : 'A';
        if (orig == '.')
            copy[i] = 'A';
        int rc = verify(copy, NOW, sub, sizeof sub);
        if (rc == JWT_OK)
            fprintf(stderr, "  tamper at %zu accepted\n", i);
        CHECK(rc != JWT_OK);
        copy[i] = orig;
    }
    /* Signature truncated or extended. */
    if (copy) {
        copy[len - 1] = '\0';
        CHECK(verify(copy, NOW, sub, sizeof sub) != JWT_OK);
        copy[len - 4] = '\0';
        CHECK(verify(copy, NOW, sub, sizeof sub) != JWT_OK);
    }
    free(copy);
    char longer[1024];
    w = snprintf(longer, sizeof longer, "%sAAAA", tok);
    CHECK(w > 0 && (size_t)w < sizeof longer);
    CHECK_INT(verify(longer, NOW, sub, sizeof sub), JWT_BAD_SIG);
    /* token_len is honoured: a valid prefix followed by junk the length excludes. */
    w = snprintf(longer, sizeof longer, "%s.junk", tok);
    CHECK(w > 0 && (size_t)w < sizeof longer);
    CHECK_INT(jwt_verify_hs256(longer, len, SECRET, strlen(SECRET), NOW, sub, sizeof sub), JWT_OK);
    CHECK(jwt_verify_hs256(tok, len - 1, SECRET, strlen(SECRET), NOW, sub, sizeof sub) != JWT_OK);
    free(tok);
}

static void test_algorithms(void)
{
    char sub[65];
    const char *claims = "{\"sub\":\"root\",\"exp\":1800000000}";
    /* alg none with an empty signature, the classic forgery. */
    char *tok = craft("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, NULL, "");
    CHECK(tok != NULL);
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_BAD_ALG);
    free(tok);
    tok = craft("{\"alg\":\"none\"}", claims, SECRET, NULL);
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_BAD_ALG);
    free(tok);
    tok = craft("{\"alg\":\"None\"}", claims, NULL, "");
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_BAD_ALG);
    free(tok);
    /* A real HS256 signature over an RS256/HS512 header is still refused. */
    check_header("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"HS384\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"ES256\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"hs256\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"HS256 \"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"HS2560\"}", JWT_BAD_ALG);
    check_header("{\"alg\":\"\"}", JWT_BAD_ALG);
    check_header("{\"alg\":null}", JWT_BAD_ALG);
    check_header("{\"alg\":256}", JWT_BAD_ALG);
    check_header("{\"alg\":[\"HS256\"]}", JWT_BAD_ALG);
    check_header("{\"typ\":\"JWT\"}", JWT_BAD_ALG);
    check_header("{}", JWT_BAD_ALG);
    check_header("{\"alg\":\"HS256\"}", JWT_OK);
    check_header("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k1\"}", JWT_OK);
    /* Duplicate alg (a parser-confusion trick) and unknown critical extensions. */
    check_header("{\"alg\":\"HS256\",\"alg\":\"none\"}", JWT_MALFORMED);
    check_header("{\"alg\":\"none\",\"alg\":\"HS256\"}", JWT_MALFORMED);
    check_header("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", JWT_MALFORMED);
    /* Header JSON that is not an object. */
    check_header("[\"HS256\"]", JWT_MALFORMED);
    check_header("\"HS256\"", JWT_MALFORMED);
    check_header("null", JWT_MALFORMED);
    check_header("{\"alg\":\"HS256\"", JWT_MALFORMED);
    check_header("{\"alg\":\"HS256\"} ", JWT_OK); /* trailing whitespace is still JSON */
}

static void test_malformed(void)
{
    char sub[65];
    static const char *const bad[] = {
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c.d",
        "garbage",
        "not a token at all",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        "eyJhbGciOiJIUzI1NiJ9.e30",                 /* 2 parts */
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA.AAAA",       /* 4 parts */
        "eyJhbGciOiJIUzI1NiJ9..AAAA",               /* empty payload */
        ".e30.AAAA",                                /* empty header */
        "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",           /* padding */
        "eyJhbGciOiJIUzI1NiJ9.e30=.AAAA",           /* padding */
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA=",           /* padding */
        "eyJhbGciOiJIUzI1NiJ9.e3+.AAAA",            /* standard base64 alphabet */
        "eyJhbGciOiJIUzI1NiJ9.e3/.AAAA",            /* standard base64 alphabet */
        "eyJhbGciOiJIUzI1NiJ9.e 30.AAAA",           /* space */
        "eyJhbGciOiJIUzI1NiJ9.e30.A",               /* length 1 mod 4 */
        "eyJhbGciOiJIUzI1NiJ9.e31.AAAA",            /* non-canonical trailing bits */
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA",    /* "not json" */
        "eyJhbGciOiJIUzI1NiJ9.W10.AAAA",            /* "[]": checked after the signature */
        "bm9wZQ.e30.AAAA",                          /* header "nope" */
        "eyJhbGciOiJIUzI1NiJ9.e30.\xc3\xa9\xc3\xa9" /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = verify(bad[i], NOW, sub, sizeof sub);
        if (rc == JWT_OK)
            fprintf(stderr, "  accepted garbage \"%s\"\n", bad[i]);
        CHECK(rc != JWT_OK);
        CHECK(rc == JWT_MALFORMED || rc == JWT_BAD_SIG);
    }
    /* Shape errors are JWT_MALFORMED specifically. */
    CHECK_INT(verify("a.b.c.d", NOW, sub, sizeof sub), JWT_MALFORMED);
    CHECK_INT(verify("eyJhbGciOiJIUzI1NiJ9.e30", NOW, sub, sizeof sub), JWT_MALFORMED);
    CHECK_INT(verify("eyJhbGciOiJIUzI1NiJ9.e30=.AAAA", NOW, sub, sizeof sub), JWT_MALFORMED);
    CHECK_INT(verify("eyJhbGciOiJIUzI1NiJ9.e3+.AAAA", NOW, sub, sizeof sub), JWT_MALFORMED);
    CHECK_INT(jwt_verify_hs256(NULL, 0, SECRET, strlen(SECRET), NOW, sub, sizeof sub),
              JWT_MALFORMED);

    /* A valid token with an extra part, or with a part removed. */
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, 60);
    CHECK(tok != NULL);
    if (tok) {
        char buf[1024];
        int w = snprintf(buf, sizeof buf, "%s.%s", tok, strrchr(tok, '.') + 1);
        CHECK(w > 0 && (size_t)w < sizeof buf);
        CHECK_INT(verify(buf, NOW, sub, sizeof sub), JWT_MALFORMED);
        w = snprintf(buf, sizeof buf, "%.*s", (int)(strrchr(tok, '.') - tok), tok);
        CHECK(w > 0 && (size_t)w < sizeof buf);
        CHECK_INT(verify(buf, NOW, sub, sizeof sub), JWT_MALFORMED);
        /* A NUL inside token_len. */
        size_t len = strlen(tok);
        memcpy(buf, tok, len + 1);
        buf[len / 2] = '\0';
        CHECK(jwt_verify_hs256(buf, len, SECRET, strlen(SECRET), NOW, sub, sizeof sub) != JWT_OK);
        free(tok);
    }

    /* Payload JSON that is not an object, correctly signed. */
    check_payload("[]", NOW, JWT_MALFORMED);
    check_payload("\"alice\"", NOW, JWT_MALFORMED);
    check_payload("42", NOW, JWT_MALFORMED);
    check_payload("{\"sub\":\"a\",\"exp\":1800000000", NOW, JWT_MALFORMED);
    check_payload("{\"sub\":\"a\",\"sub\":\"root\",\"exp\":1800000000}", NOW, JWT_MALFORMED);
    check_payload("", NOW, JWT_MALFORMED);
}

static void test_overlong(void)
{
    char sub[65];
    /* A correctly signed token just over JWT_MAX_LEN, with a long subject. */
    size_t n = JWT_MAX_LEN;
    char *big = malloc(n + 1);
    CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 'x', n);
    big[n] = '\0';
    char *tok = jwt_sign_hs256(SECRET, strlen(SECRET), big, NOW, 60);
    CHECK(tok != NULL);
    if (tok) {
        CHECK(strlen(tok) > JWT_MAX_LEN);
        CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_MALFORMED);
        free(tok);
    }
    /* A subject that keeps the token just under the limit verifies (given room for sub). */
    char *sub_big = malloc(n);
    CHECK(sub_big != NULL);
    for (size_t len = 5000; sub_big && len < n; len += 1) {
        big[len] = '\0';
        tok = jwt_sign_hs256(SECRET, strlen(SECRET), big, NOW, 60);
        big[len] = 'x';
        if (!tok)
            break;
        size_t tl = strlen(tok);
        int rc = jwt_verify_hs256(tok, tl, SECRET, strlen(SECRET), NOW, sub_big, n);
        free(tok);
        if (tl > JWT_MAX_LEN) {
            CHECK_INT(rc, JWT_MALFORMED);
            break;
        }
        CHECK_INT(rc, JWT_OK);
        CHECK_INT(strlen(sub_big), len);
    }
    free(sub_big);
    free(big);

    /* Length is checked before anything else: a huge garbage string is just malformed. */
    char *junk = malloc(1 << 20);
    CHECK(junk != NULL);
    if (junk) {
        memset(junk, 'A', 1 << 20);
        junk[100] = '.';
        junk[200] = '.';
        CHECK_INT(jwt_verify_hs256(junk, 1 << 20, SECRET, strlen(SECRET), NOW, sub, sizeof sub),
                  JWT_MALFORMED);
        free(junk);
    }
}

static void test_b64url(void)
{
    unsigned char data[41];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 37 + 0xf8); /* covers '-' and '_' outputs */
    for (size_t len = 0; len <= 40; len++) {
        char *s = b64url_encode(data, len);
        CHECK(s != NULL);
        if (!s)
            continue;
        size_t sl = strlen(s);
        CHECK_INT(sl, (len * 4 + 2) / 3);
        CHECK(strchr(s, '=') == NULL && strchr(s, '+') == NULL && strchr(s, '/') == NULL);
        size_t out_len = 999;
        unsigned char *d = b64url_decode(s, sl, &out_len);
        CHECK(d != NULL);
        if (d) {
            CHECK_INT(out_len, len);
            CHECK(memcmp(d, data, len) == 0);
            CHECK_INT(d[len], 0); /* NUL-terminated */
        }
        free(d);
        free(s);
    }
    /* Known vectors (RFC 4648 section 10, URL alphabet, no padding). */
    static const struct {
        const char *raw, *enc;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
             {"\xff\xfe", "__4"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *s = b64url_encode((const unsigned char *)v[i].raw, strlen(v[i].raw));
        CHECK_STR(s, v[i].enc);
        free(s);
    }
    /* Invalid inputs. */
    static const char *const invalid[] = {"A",     "Zg==", "Zg=", "Zm9v=",  "Z+8",  "Z/8", "Zm 9",
                                          "Zm\n9", "Zh",   "Zm9", "Zm9vYh", "====", "*"};
    /* "Zh", "Zm9" non-canonical: low bits set; Zm9 is fine ("fo") so check separately. */
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (strcmp(invalid[i], "Zm9") == 0)
            continue;
        size_t ol = 0;
        unsigned char *d = b64url_decode(invalid[i], strlen(invalid[i]), &ol);
        if (d)
            fprintf(stderr, "  decoded invalid \"%s\"\n", invalid[i]);
        CHECK(d == NULL);
        free(d);
    }
    size_t ol = 1;
    unsigned char *d = b64url_decode("", 0, &ol);
    CHECK(d != NULL);
    CHECK_INT(ol, 0);
    free(d);
    d = b64url_decode("Zm9v\0Zm9v", 9, &ol); /* NUL inside len */
    CHECK(d == NULL);
    free(d);
    d = b64url_decode("Zm9vYmFyXXX", 8, &ol); /* len honoured */
    CHECK(d != NULL);
    CHECK_STR((const char *)d, "foobar");
    free(d);
}

static void test_strerror(void)
{
    const int rcs[] = {JWT_OK,      JWT_MALFORMED, JWT_BAD_ALG,    JWT_BAD_SIG,
                       JWT_EXPIRED, JWT_NOT_YET,   JWT_NO_SUBJECT, 12345};
    for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++) {
        const char *s = jwt_strerror(rcs[i]);
        CHECK(s != NULL && s[0] != '\0');
    }
    CHECK(strstr(jwt_strerror(JWT_EXPIRED), "expired") != NULL);
}

/* The operator role: minted, read back, absent on ordinary tokens, refused when not a string or
 * too long, and never reported from a token that fails verification. */
static void test_role(void)
{
    char sub[65], role[JWT_ROLE_MAX] = "junk";
    char *tok = jwt_sign_hs256_role(SECRET, strlen(SECRET), "ops", JWT_ROLE_ADMIN, NOW, 60);
    CHECK(tok != NULL);
    if (!tok)
        return;
    CHECK_INT(
        jwt_verify_hs256_role(tok, strlen(tok), SECRET, strlen(SECRET), NOW, sub, sizeof sub, role),
        JWT_OK);
    CHECK_STR(sub, "ops");
    CHECK_STR(role, "admin");
    CHECK_INT(verify(tok, NOW, sub, sizeof sub), JWT_OK); /* the plain verifier accepts it */
    CHECK_INT(jwt_verify_hs256_role(tok, strlen(tok), SECRET, strlen(SECRET), NOW + 3600, sub,
                                    sizeof sub, role),
              JWT_EXPIRED);
    CHECK_STR(role, "");
    free(tok);

    tok = jwt_sign_hs256(SECRET, strlen(SECRET), "alice", NOW, 60);
    snprintf(role, sizeof role, "junk");
    CHECK(tok && jwt_verify_hs256_role(tok, strlen(tok), SECRET, strlen(SECRET), NOW, sub,
                                       sizeof sub, role) == JWT_OK);
    CHECK_STR(role, "");
    free(tok);

    CHECK(jwt_sign_hs256_role(SECRET, strlen(SECRET), "ops", "", NOW, 60) == NULL);
    CHECK(jwt_sign_hs256_role(SECRET, strlen(SECRET), "ops", "a-role-name-of-32-bytes-is-long!",
                              NOW, 60) == NULL);
    const char *bad[] = {"{\"sub\":\"ops\",\"exp\":1800000000,\"role\":1}",
                         "{\"sub\":\"ops\",\"exp\":1800000000,\"role\":[\"admin\"]}",
                         "{\"sub\":\"ops\",\"exp\":1800000000,\"role\":"
                         "\"a-role-name-of-32-bytes-is-long!\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", bad[i], SECRET, NULL);
        CHECK(tok && jwt_verify_hs256_role(tok, strlen(tok), SECRET, strlen(SECRET), NOW, sub,
                                           sizeof sub, role) == JWT_MALFORMED);
        CHECK_STR(role, "");
        free(tok);
    }
}

#define TESTS(X)                                                                                   \
    X(test_sign_verify)                                                                            \
    X(test_role)                                                                                   \
    X(test_expiry)                                                                                 \
    X(test_not_yet)                                                                                \
    X(test_subject)                                                                                \
    X(test_wrong_key_and_tamper)                                                                   \
    X(test_algorithms)                                                                             \
    X(test_malformed)                                                                              \
    X(test_overlong)                                                                               \
    X(test_b64url)                                                                                 \
    X(test_strerror)
#include "t_main.h"

/* test_awscreds.c: the AWS credential chain (awscreds.h) against loopback stand-ins of STS
 * (AssumeRoleWithWebIdentity, documented XML answer), the EKS Pod Identity / ECS container
 * credentials endpoint, and IMDSv2. Each stand-in checks every field it receives (method, path,
 * content type, form fields, authorization headers). Expiry is steered with the clock module;
 * nothing sleeps. Also: nothing secret reaches the log. */
#include <curl/curl.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob/awscreds.h"
#include "blob/blob.h"
#include "blob/sigv4.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "t.h"
#include "t_peer.h"

static char err[2048];
static char dir[] = "/tmp/pingvas-awscreds-XXXXXX";
static char token_path[512];

/* What the stand-ins expect and how they answer. */
static struct {
    char token[256];  /* the web identity / authorization token the file holds now */
    int fail;         /* 1: answer with an error */
    int64_t lifetime; /* ms of validity of the credentials handed out */
    int issued;       /* credentials handed out so far */
    char expiration[40];
    char last_token[1400]; /* the session token handed out last */
} st;

static void write_token(const char *tok)
{
    snprintf(st.token, sizeof st.token, "%s", tok);
    FILE *f = fopen(token_path, "w");
    fprintf(f, "%s\n", tok);
    fclose(f);
}

static void clear_env(void)
{
    static const char *const vars[] = {"AWS_ACCESS_KEY_ID",
                                       "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN",
                                       "AWS_ROLE_ARN",
                                       "AWS_WEB_IDENTITY_TOKEN_FILE",
                                       "AWS_ROLE_SESSION_NAME",
                                       "AWS_ENDPOINT_URL_STS",
                                       "AWS_ENDPOINT_URL",
                                       "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                       "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                                       "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                       "AWS_EC2_METADATA_SERVICE_ENDPOINT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    memset(&st, 0, sizeof st);
    st.lifetime = 15 * 60 * 1000;
}

/* The next credentials: ASIA...N, secret-N, a 1200-byte session token with '/', '+', '='. */
static void next_creds(char *ak, char *sk, char *tok, size_t toksize)
{
    st.issued++;
    sprintf(ak, "ASIATESTKEY%04d", st.issued);
    sprintf(sk, "secret/with+chars-%d", st.issued);
    size_t n = 0;
    n += (size_t)snprintf(tok, toksize, "IQoJb3JpZ2luX2VjE%d/", st.issued);
    while (n + 4 < 1200 && n + 4 < toksize) {
        memcpy(tok + n, "Ab+/", 4);
        n += 4;
    }
    tok[n++] = '=';
    tok[n] = '\0';
    snprintf(st.last_token, sizeof st.last_token, "%s", tok);
    int64_t exp = clock_now_ms() + st.lifetime;
    char buf[40];
    clock_format_rfc3339(exp, buf, sizeof buf);
    snprintf(st.expiration, sizeof st.expiration, "%.19sZ", buf);
}

static void sts_peer(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    char v[4096];
    int nf = 0;
    PEER_EXPECT(p, strcmp(r->method, "POST") == 0);
    PEER_EXPECT(p, strcmp(r->path, "/") == 0);
    const char *ct = t_peer_header(r, "Content-Type");
    PEER_EXPECT(p, ct && strncmp(ct, "application/x-www-form-urlencoded", 33) == 0);
    PEER_EXPECT(p, t_peer_header(r, "Authorization") == NULL); /* the call is unsigned */
    PEER_EXPECT(p, t_peer_form_get(r->body, "Action", v, sizeof v, &nf) &&
                       strcmp(v, "AssumeRoleWithWebIdentity") == 0);
    PEER_EXPECT(p, nf == 5);
    PEER_EXPECT(p, t_peer_form_get(r->body, "Version", v, sizeof v, NULL) &&
                       strcmp(v, "2011-06-15") == 0);
    PEER_EXPECT(p, t_peer_form_get(r->body, "RoleArn", v, sizeof v, NULL) &&
                       strcmp(v, "arn:aws:iam::123456789012:role/pingvas-server") == 0);
    PEER_EXPECT(p, t_peer_form_get(r->body, "RoleSessionName", v, sizeof v, NULL) &&
                       strcmp(v, "pingvas-test") == 0);
    PEER_EXPECT(p, t_peer_form_get(r->body, "WebIdentityToken", v, sizeof v, NULL) &&
                       strcmp(v, st.token) == 0);
    out->content_type = "text/xml";
    if (st.fail) {
        out->status = 400;
        snprintf(out->body, sizeof out->body,
                 "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
                 "<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn&apos;t "
                 "retrieve verification key from your identity provider</Message></Error>"
                 "<RequestId>4e0c2a2b-0000-0000-0000-000000000000</RequestId></ErrorResponse>");
        return;
    }
    char ak[64], sk[64], tok[1400];
    next_creds(ak, sk, tok, sizeof tok);
    out->status = 200;
    snprintf(out->body, sizeof out->body,
             "<AssumeRoleWithWebIdentityResponse "
             "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
             "  <AssumeRoleWithWebIdentityResult>\n"
             "    <SubjectFromWebIdentityToken>system:serviceaccount:pingvas:pingvas-server"
             "</SubjectFromWebIdentityToken>\n"
             "    <Audience>sts.amazonaws.com</Audience>\n"
             "    <AssumedRoleUser>\n"
             "      <Arn>arn:aws:sts::123456789012:assumed-role/pingvas-server/pingvas-test</Arn>\n"
             "      <AssumedRoleId>AROA0000000000EXAMPLE:pingvas-test</AssumedRoleId>\n"
             "    </AssumedRoleUser>\n"
             "    <Credentials>\n"
             "      <SessionToken>%s</SessionToken>\n"
             "      <SecretAccessKey>%s</SecretAccessKey>\n"
             "      <Expiration>%s</Expiration>\n"
             "      <AccessKeyId>%s</AccessKeyId>\n"
             "    </Credentials>\n"
             "    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.example</Provider>\n"
             "  </AssumeRoleWithWebIdentityResult>\n"
             "  <ResponseMetadata><RequestId>ad4156e9-0000</RequestId></ResponseMetadata>\n"
             "</AssumeRoleWithWebIdentityResponse>\n",
             tok, sk, st.expiration, ak);
}

/* Captures stderr (the log) into a file while f runs; returns its text (static buffer). */
static char logbuf[65536];
static int saved_fd = -1;
static void capture_start(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/log", dir);
    fflush(stderr);
    saved_fd = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
}
static const char *capture_end(void)
{
    char path[600];
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    snprintf(path, sizeof path, "%s/log", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(logbuf, 1, sizeof logbuf - 1, f) : 0;
    logbuf[n] = '\0';
    if (f)
        fclose(f);
    return logbuf;
}

static void setup_web_identity(t_peer_t *p)
{
    clear_env();
    CHECK(t_peer_start(p, sts_peer, NULL) == 0);
    write_token("eyJhbGciOiJSUzI1NiJ9.first-projected-token.sig");
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pingvas-server", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token_path, 1);
    setenv("AWS_ROLE_SESSION_NAME", "pingvas-test", 1);
    setenv("AWS_ENDPOINT_URL_STS", p->url, 1);
}

static void test_web_identity_fetch_and_refresh(void)
{
    t_peer_t p;
    setup_web_identity(&p);
    aws_creds_t *c = malloc(sizeof *c);
    capture_start();
    aws_chain_t *ch = aws_chain_open("us-east-1", err, sizeof err);
    CHECK(ch != NULL);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(ch ? aws_chain_source(ch) : "", "web-identity");
    CHECK_STR(c->access_key, "ASIATESTKEY0001");
    CHECK_STR(c->secret_key, "secret/with+chars-1");
    CHECK(strlen(c->session_token) == 1200 && c->session_token[1199] == '=');
    CHECK(c->expires_ms > clock_now_ms() + 14 * 60 * 1000);
    CHECK_INT(p.requests, 1);
    /* Ten minutes on: still more than the 5-minute margin left, no STS call. */
    clock_advance_ms(9 * 60 * 1000);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_INT(p.requests, 1);
    CHECK_STR(c->access_key, "ASIATESTKEY0001");
    /* Inside the margin: refreshed with the token file as it is now (the kubelet rotates it). */
    write_token("eyJhbGciOiJSUzI1NiJ9.rotated-projected-token.sig");
    clock_advance_ms(2 * 60 * 1000);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_INT(p.requests, 2);
    CHECK_STR(c->access_key, "ASIATESTKEY0002");
    CHECK(strncmp(c->session_token, "IQoJb3JpZ2luX2VjE2/", 19) == 0);
    const char *log = capture_end();
    CHECK(strstr(log, "event=aws_credentials source=web-identity") != NULL);
    CHECK(strstr(log, "event=aws_credentials_refreshed") != NULL);
    CHECK(strstr(log, "secret/with") == NULL && strstr(log, "IQoJb3Jp") == NULL &&
          strstr(log, "projected-token") == NULL && strstr(log, "ASIATESTKEY") == NULL);
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    aws_chain_close(ch);
    free(c);
}

/* A refresh that fails keeps the still-valid credentials; once they expire, get fails. */
static void test_web_identity_refresh_failure(void)
{
    t_peer_t p;
    setup_web_identity(&p);
    aws_creds_t *c = malloc(sizeof *c);
    aws_chain_t *ch = aws_chain_open("us-east-1", err, sizeof err);
    CHECK(ch != NULL);
    st.fail = 1;
    clock_advance_ms(11 * 60 * 1000);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(c->access_key, "ASIATESTKEY0001");
    CHECK_INT(p.requests, 2);
    /* No retry storm: the next call within AWS_CREDS_RETRY_MS does not ask again. */
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_INT(p.requests, 2);
    clock_advance_ms(5 * 60 * 1000); /* past the expiry */
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == -1);
    CHECK(strstr(err, "expired") && strstr(err, "InvalidIdentityToken"));
    CHECK_STR(c->access_key, "");
    CHECK_INT(p.requests, 3);
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    aws_chain_close(ch);
    free(c);
}

static void test_web_identity_errors(void)
{
    t_peer_t p;
    setup_web_identity(&p);
    st.fail = 1;
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "web-identity") && strstr(err, "HTTP 400") &&
          strstr(err, "InvalidIdentityToken") && strstr(err, "Couldn't retrieve"));
    CHECK(strstr(err, "first-projected-token") == NULL);
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    /* STS unreachable (the stand-in is gone): says where. */
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "unreachable") && strstr(err, p.url));
    unsetenv("AWS_ROLE_ARN");
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_ROLE_ARN is missing") != NULL);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/x", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token", 1);
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/token") != NULL);
}

static void container_peer(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    PEER_EXPECT(p, strcmp(r->method, "GET") == 0);
    PEER_EXPECT(p, strcmp(r->path, "/v1/credentials") == 0);
    const char *auth = t_peer_header(r, "Authorization");
    PEER_EXPECT(p, auth && strcmp(auth, st.token) == 0);
    PEER_EXPECT(p, r->body_len == 0);
    out->content_type = "application/json";
    if (!auth || strcmp(auth, st.token) != 0) {
        out->status = 401;
        snprintf(out->body, sizeof out->body, "{\"code\":\"AccessDenied\"}");
        return;
    }
    char ak[64], sk[64], tok[1400];
    next_creds(ak, sk, tok, sizeof tok);
    out->status = 200;
    snprintf(out->body, sizeof out->body,
             "{\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"%s\",\"Token\":\"%s\","
             "\"AccountId\":\"123456789012\"%s%s%s}",
             ak, sk, tok, st.fail ? "" : ",\"Expiration\":\"", st.fail ? "" : st.expiration,
             st.fail ? "" : "\"");
}

static void test_container_credentials(void)
{
    t_peer_t p;
    clear_env();
    CHECK(t_peer_start(&p, container_peer, NULL) == 0);
    write_token("eks-pod-identity-token-1");
    char uri[128];
    snprintf(uri, sizeof uri, "%s/v1/credentials", p.url);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_path, 1);
    aws_creds_t *c = malloc(sizeof *c);
    aws_chain_t *ch = aws_chain_open("us-east-1", err, sizeof err);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(ch ? aws_chain_source(ch) : "", "container");
    CHECK_STR(c->access_key, "ASIATESTKEY0001");
    CHECK(strlen(c->session_token) == 1200);
    write_token("eks-pod-identity-token-2");
    clock_advance_ms(11 * 60 * 1000);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(c->access_key, "ASIATESTKEY0002");
    CHECK_INT(p.requests, 2);
    aws_chain_close(ch);
    /* Temporary credentials without an Expiration would never be renewed: refused. */
    st.fail = 1;
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "Expiration") != NULL);
    st.fail = 0;
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    /* An http URI to anything but loopback or the ECS/EKS agent is refused before any request. */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/creds", 1);
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_CONTAINER_CREDENTIALS_FULL_URI") && strstr(err, "169.254.170.23"));
    free(c);
}

static void imds_peer(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    out->status = 200;
    out->content_type = "text/plain";
    if (strcmp(r->path, "/latest/api/token") == 0) {
        PEER_EXPECT(p, strcmp(r->method, "PUT") == 0);
        const char *ttl = t_peer_header(r, "X-aws-ec2-metadata-token-ttl-seconds");
        PEER_EXPECT(p, ttl && strcmp(ttl, "21600") == 0);
        snprintf(out->body, sizeof out->body, "AQAEAimds-session-token==");
        return;
    }
    PEER_EXPECT(p, strcmp(r->method, "GET") == 0);
    const char *tok = t_peer_header(r, "X-aws-ec2-metadata-token");
    PEER_EXPECT(p, tok && strcmp(tok, "AQAEAimds-session-token==") == 0);
    if (!tok || strcmp(tok, "AQAEAimds-session-token==") != 0) {
        out->status = 401;
        return;
    }
    if (strcmp(r->path, "/latest/meta-data/iam/security-credentials/") == 0) {
        snprintf(out->body, sizeof out->body, "KarpenterNodeRole-pingvas");
        return;
    }
    PEER_EXPECT(p, strcmp(r->path,
                          "/latest/meta-data/iam/security-credentials/KarpenterNodeRole-pingvas") ==
                       0);
    char ak[64], sk[64], t[1400];
    next_creds(ak, sk, t, sizeof t);
    out->content_type = "application/json";
    snprintf(out->body, sizeof out->body,
             "{\"Code\":\"Success\",\"LastUpdated\":\"2026-11-29T19:00:00Z\",\"Type\":\"AWS-HMAC\","
             "\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"%s\",\"Token\":\"%s\","
             "\"Expiration\":\"%s\"}",
             ak, sk, t, st.expiration);
}

static void test_imds_instance_profile(void)
{
    t_peer_t p;
    clear_env();
    CHECK(t_peer_start(&p, imds_peer, NULL) == 0);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", p.url, 1);
    aws_creds_t *c = malloc(sizeof *c);
    aws_chain_t *ch = aws_chain_open("us-east-1", err, sizeof err);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(ch ? aws_chain_source(ch) : "", "imds");
    CHECK_STR(c->access_key, "ASIATESTKEY0001");
    CHECK_INT(p.requests, 3);
    aws_chain_close(ch);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    free(c);
}

static void test_environment_and_nothing(void)
{
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKIDSTATIC", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "static-secret", 1);
    setenv("AWS_SESSION_TOKEN", "static-session", 1);
    /* The environment comes first even with web identity configured. */
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/never-asked", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent", 1);
    aws_creds_t *c = malloc(sizeof *c);
    aws_chain_t *ch = aws_chain_open("us-east-1", err, sizeof err);
    CHECK(ch && aws_chain_get(ch, c, err, sizeof err) == 0);
    CHECK_STR(c->access_key, "AKIDSTATIC");
    CHECK_STR(c->session_token, "static-session");
    CHECK_INT(c->expires_ms, 0);
    aws_chain_close(ch);
    clear_env();
    setenv("AWS_ACCESS_KEY_ID", "AKIDSTATIC", 1);
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY is missing") != NULL);
    clear_env();
    CHECK(aws_chain_open("us-east-1", err, sizeof err) == NULL);
    CHECK(strstr(err, "no AWS credentials found") && strstr(err, "AWS_WEB_IDENTITY_TOKEN_FILE") &&
          strstr(err, "AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    free(c);
}

/* S3 as the store sees it: a HEAD of the bucket signed with the STS credentials, carrying the
 * session token as x-amz-security-token (and signing it). */
static void s3_peer(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    const char *auth = t_peer_header(r, "Authorization");
    const char *tok = t_peer_header(r, "x-amz-security-token");
    PEER_EXPECT(p, strcmp(r->method, "HEAD") == 0 && strcmp(r->path, "/boot-bucket") == 0);
    PEER_EXPECT(p, auth && strncmp(auth, "AWS4-HMAC-SHA256 Credential=ASIATESTKEY0001/", 44) == 0);
    PEER_EXPECT(p, auth && strstr(auth, "x-amz-security-token") != NULL);
    PEER_EXPECT(p, tok && strcmp(tok, st.last_token) == 0);
    PEER_EXPECT(p, t_peer_header(r, "x-amz-content-sha256") != NULL);
    out->status = 200;
}

/* The S3 store on web-identity credentials: signed calls and presigned URLs carry the session
 * token, and a presigned URL does not outlive the credentials it is signed with. */
static void test_s3_store_uses_the_chain(void)
{
    t_peer_t p, s3;
    setup_web_identity(&p);
    st.lifetime = 10 * 60 * 1000;
    CHECK(t_peer_start(&s3, s3_peer, NULL) == 0);
    setenv("AWS_ENDPOINT_URL_S3", s3.url, 1);
    setenv("AWS_REGION", "us-east-1", 1);
    blob_t *b = blob_open("s3://boot-bucket/images", NULL, "http://server", err, sizeof err);
    CHECK(b != NULL);
    CHECK_INT(s3.requests, 1);
    upload_target_t *t = malloc(sizeof *t);
    CHECK(b && blob_upload_target(b, "jobs/x.png", "x", 3600, t) == 0);
    char enc[4096];
    CHECK(sigv4_uri_encode(st.last_token, 0, enc, sizeof enc) > 0);
    CHECK(strstr(t->url, "X-Amz-Security-Token=") && strstr(t->url, enc));
    const char *e = strstr(t->url, "X-Amz-Expires=");
    long expires = e ? strtol(e + 14, NULL, 10) : 0;
    CHECK(expires > 590 && expires <= 600); /* not the 3600 s asked: the credentials end sooner */
    char *get = b ? blob_public_url(b, "jobs/x.png") : NULL;
    CHECK(get && strstr(get, "X-Amz-Security-Token=") && strstr(get, "X-Amz-Expires=") &&
          strtol(strstr(get, "X-Amz-Expires=") + 14, NULL, 10) <= 600);
    free(get);
    free(t);
    blob_close(b);
    unsetenv("AWS_ENDPOINT_URL_S3");
    t_peer_stop(&s3);
    t_peer_stop(&p);
    CHECK_STR(s3.problems, "");
    CHECK_STR(p.problems, "");
}

static void test_xml_and_time(void)
{
    char out[32];
    const char *doc = "<a><B>x&amp;y&lt;&gt;&quot;&apos;</B><C><D>1</D></C><E>&nbsp;</E></a>";
    CHECK(aws_xml_text(doc, strlen(doc), "B", out, sizeof out) == 0);
    CHECK_STR(out, "x&y<>\"'");
    CHECK(aws_xml_text(doc, strlen(doc), "C", out, sizeof out) == -1); /* child element */
    CHECK(aws_xml_text(doc, strlen(doc), "E", out, sizeof out) == -1); /* unknown entity */
    CHECK(aws_xml_text(doc, strlen(doc), "Z", out, sizeof out) == -1);
    CHECK(aws_xml_text(doc, strlen(doc), "B", out, 4) == -1); /* does not fit */
    CHECK(aws_xml_text(doc, 10, "B", out, sizeof out) == -1); /* bounded by len */
    int64_t ms = 0;
    CHECK(aws_parse_time("2014-10-24T23:00:23Z", &ms) == 0 && ms == 1414191623000LL);
    CHECK(aws_parse_time("2014-10-24T23:00:23.123Z", &ms) == 0 && ms == 1414191623000LL);
    CHECK(aws_parse_time("2014-10-24T23:00:23+00:00", &ms) == 0);
    CHECK(aws_parse_time("2014-10-24T23:00:23+02:00", &ms) == -1);
    CHECK(aws_parse_time("tomorrow", &ms) == -1);
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(token_path, sizeof token_path, "%s/token", dir);
    log_set_component("test");
}

static void teardown(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/log", dir);
    unlink(path);
    unlink(token_path);
    rmdir(dir);
    curl_global_cleanup();
}

#define T_SETUP() setup()
#define T_TEARDOWN() teardown()
#define TESTS(X)                                                                                   \
    X(test_xml_and_time)                                                                           \
    X(test_environment_and_nothing)                                                                \
    X(test_web_identity_fetch_and_refresh)                                                         \
    X(test_web_identity_refresh_failure)                                                           \
    X(test_web_identity_errors)                                                                    \
    X(test_container_credentials)                                                                  \
    X(test_imds_instance_profile)                                                                  \
    X(test_s3_store_uses_the_chain)
#include "t_main.h"

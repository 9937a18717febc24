/* awscreds.c: the AWS SDKs' default credential chain (environment, web identity, container,
 * IMDSv2). Contract and order in awscreds.h; design in docs/deploy.md ("AWS credentials"). */
#include "blob/awscreds.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blob/sigv4.h"
#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"

#define AWS_URL_MAX 2048
#define AWS_RESP_MAX (64 * 1024)      /* cap on an STS, container or IMDS answer */
#define AWS_WEB_TOKEN_MAX (16 * 1024) /* cap on the web identity token file */
#define AWS_STS_TIMEOUT_MS 10000
#define AWS_LOCAL_TIMEOUT_MS 2000 /* container endpoint and IMDS: local, answer fast */
#define AWS_IMDS_TOKEN_TTL_S 21600

enum aws_source { SRC_ENV, SRC_WEB_IDENTITY, SRC_CONTAINER, SRC_IMDS };

static const char *const source_names[] = {"environment", "web-identity", "container", "imds"};

struct aws_chain {
    enum aws_source src;
    char region[64];
    char url[AWS_URL_MAX];      /* STS endpoint, container URI, or IMDS base */
    char role_arn[AWS_URL_MAX]; /* web identity: the role; imds: the role name once known */
    char session_name[80];
    char token_file[AWS_URL_MAX]; /* web identity token, or container authorization token */
    const char *token_env;        /* container: AWS_CONTAINER_AUTHORIZATION_TOKEN, or NULL */
    pthread_mutex_t mu;
    httpc_t *h;
    aws_creds_t cur;
    int64_t retry_after_ms; /* no refresh attempt before this (after a failure) */
};

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

void aws_creds_wipe(aws_creds_t *c)
{
    volatile unsigned char *p = (volatile unsigned char *)c;
    for (size_t i = 0; i < sizeof *c; i++)
        p[i] = 0;
}

int aws_on_ec2(void)
{
    char buf[64] = "";
    FILE *f = fopen("/sys/devices/virtual/dmi/id/sys_vendor", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = '\0';
        fclose(f);
    }
    if (strstr(buf, "Amazon"))
        return 1;
    f = fopen("/sys/devices/virtual/dmi/id/board_asset_tag", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = '\0';
        fclose(f);
        if (strncmp(buf, "i-", 2) == 0)
            return 1;
    }
    return 0;
}

int aws_parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end)
        return -1;
    if (*end == '.') {
        end++;
        while (*end >= '0' && *end <= '9')
            end++;
    }
    if (!(strcmp(end, "Z") == 0 || strcmp(end, "+00:00") == 0 || *end == '\0'))
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *ms = (int64_t)t * 1000;
    return 0;
}

/* Decodes the XML text [s, e) into out (the five predefined entities only). 0 or -1. */
static int xml_unescape(const char *s, const char *e, char *out, size_t size)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    while (s < e) {
        char c = *s;
        if (c == '<')
            return -1; /* a child element: not text */
        if (c == '&') {
            size_t i, n = 0;
            for (i = 0; i < sizeof ents / sizeof ents[0]; i++) {
                n = strlen(ents[i].ent);
                if ((size_t)(e - s) >= n && memcmp(s, ents[i].ent, n) == 0)
                    break;
            }
            if (i == sizeof ents / sizeof ents[0])
                return -1;
            c = ents[i].c;
            s += n;
        } else {
            s++;
        }
        if (o + 1 >= size)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int aws_xml_text(const char *doc, size_t len, const char *name, char *out, size_t size)
{
    char open[96], close[96];
    int a = snprintf(open, sizeof open, "<%s>", name);
    int b = snprintf(close, sizeof close, "</%s>", name);
    if (!doc || size == 0 || a < 0 || (size_t)a >= sizeof open || b < 0 ||
        (size_t)b >= sizeof close)
        return -1;
    out[0] = '\0';
    const char *s = memmem(doc, len, open, (size_t)a);
    if (!s)
        return -1;
    s += a;
    const char *e = memmem(s, len - (size_t)(s - doc), close, (size_t)b);
    if (!e)
        return -1;
    return xml_unescape(s, e, out, size);
}

/* Reads a small token file (trailing newline dropped) into a malloc'd string; NULL with err. */
static char *read_token_file(const char *path, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read the %s file %s", what, path);
        return NULL;
    }
    char *buf = malloc(AWS_WEB_TOKEN_MAX + 1);
    size_t n = buf ? fread(buf, 1, AWS_WEB_TOKEN_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > AWS_WEB_TOKEN_MAX) {
        snprintf(err, errlen, "the %s file %s is %s", what, path,
                 !buf     ? "unreadable (out of memory)"
                 : n == 0 ? "empty"
                          : "larger than 16 KiB");
        free(buf);
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (strpbrk(buf, "\r\n") || strlen(buf) != n) {
        snprintf(err, errlen, "the %s file %s holds more than one line", what, path);
        free(buf);
        return NULL;
    }
    return buf;
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = 0;
    free(s);
}

/* Copies the parts into c->cur (all of them, or nothing). 0 or -1 (a part missing or too long). */
static int set_creds(aws_creds_t *dst, const char *ak, const char *sk, const char *tok,
                     const char *expiration)
{
    aws_creds_t n;
    memset(&n, 0, sizeof n);
    int ok = ak && sk && ak[0] && sk[0] && strlen(ak) < sizeof n.access_key &&
             strlen(sk) < sizeof n.secret_key && (!tok || strlen(tok) < sizeof n.session_token);
    if (ok && expiration && aws_parse_time(expiration, &n.expires_ms) != 0)
        ok = 0;
    if (ok) {
        memcpy(n.access_key, ak, strlen(ak) + 1);
        memcpy(n.secret_key, sk, strlen(sk) + 1);
        if (tok)
            memcpy(n.session_token, tok, strlen(tok) + 1);
        *dst = n;
    }
    aws_creds_wipe(&n);
    return ok ? 0 : -1;
}

/* ---------- web identity (STS AssumeRoleWithWebIdentity) ---------- */

/* Appends "&name=urlencoded(value)" (no '&' when first) to the form. 0 or -1. */
static int form_add(char *form, size_t size, const char *name, const char *value)
{
    size_t used = strlen(form);
    int n = snprintf(form + used, size - used, "%s%s=", used ? "&" : "", name);
    if (n < 0 || (size_t)n >= size - used)
        return -1;
    used += (size_t)n;
    return sigv4_uri_encode(value, 0, form + used, size - used) < 0 ? -1 : 0;
}

/* Explains a non-200 STS answer: its <Code> and <Message>, which carry no secret. */
static void sts_error(const httpc_resp_t *r, const char *url, char *err, size_t errlen)
{
    char code[128] = "", msg[512] = "";
    if (r->body) {
        aws_xml_text(r->body, r->len, "Code", code, sizeof code);
        aws_xml_text(r->body, r->len, "Message", msg, sizeof msg);
    }
    if (r->status == 0)
        snprintf(err, errlen, "STS endpoint %s is unreachable (%s)", url, r->error);
    else
        snprintf(err, errlen, "STS AssumeRoleWithWebIdentity at %s answered HTTP %ld %s: %s", url,
                 r->status, code[0] ? code : "(no error code)", msg[0] ? msg : "(no message)");
}

int aws_parse_sts(const char *body, size_t len, aws_creds_t *out)
{
    const char *res = memmem(body, len, "<AssumeRoleWithWebIdentityResult>", 33);
    const char *cr = res ? memmem(res, len - (size_t)(res - body), "<Credentials>", 13) : NULL;
    const char *ce = cr ? memmem(cr, len - (size_t)(cr - body), "</Credentials>", 14) : NULL;
    if (!ce)
        return -1;
    size_t n = (size_t)(ce - cr);
    char *ak = malloc(AWS_KEY_MAX), *sk = malloc(AWS_KEY_MAX), *tok = malloc(AWS_TOKEN_MAX);
    char exp[64];
    int rc = -1;
    if (ak && sk && tok && aws_xml_text(cr, n, "AccessKeyId", ak, AWS_KEY_MAX) == 0 &&
        aws_xml_text(cr, n, "SecretAccessKey", sk, AWS_KEY_MAX) == 0 &&
        aws_xml_text(cr, n, "SessionToken", tok, AWS_TOKEN_MAX) == 0 &&
        aws_xml_text(cr, n, "Expiration", exp, sizeof exp) == 0 && tok[0])
        rc = set_creds(out, ak, sk, tok, exp);
    if (sk)
        memset(sk, 0, AWS_KEY_MAX);
    if (tok)
        memset(tok, 0, AWS_TOKEN_MAX);
    free(ak);
    free(sk);
    free(tok);
    return rc;
}

static int fetch_web_identity(aws_chain_t *c, char *err, size_t errlen)
{
    char *jwt = read_token_file(c->token_file, "web identity token", err, errlen);
    if (!jwt)
        return -1;
    size_t fsize = 3 * strlen(jwt) + 3 * strlen(c->role_arn) + 512;
    char *form = calloc(1, fsize);
    int rc = -1;
    if (!form || form_add(form, fsize, "Action", "AssumeRoleWithWebIdentity") != 0 ||
        form_add(form, fsize, "Version", "2011-06-15") != 0 ||
        form_add(form, fsize, "RoleArn", c->role_arn) != 0 ||
        form_add(form, fsize, "RoleSessionName", c->session_name) != 0 ||
        form_add(form, fsize, "WebIdentityToken", jwt) != 0) {
        snprintf(err, errlen, "cannot build the STS request (out of memory)");
        goto out;
    }
    httpc_req_t req = {.method = "POST",
                       .url = c->url,
                       .body = form,
                       .body_len = strlen(form),
                       .content_type = "application/x-www-form-urlencoded; charset=utf-8",
                       .extra_header = "Accept: text/xml",
                       .timeout_ms = AWS_STS_TIMEOUT_MS,
                       .max_response = AWS_RESP_MAX};
    httpc_resp_t r;
    httpc_do(c->h, &req, &r);
    if (r.status != 200)
        sts_error(&r, c->url, err, errlen);
    else if (aws_parse_sts(r.body ? r.body : "", r.len, &c->cur) != 0)
        snprintf(err, errlen,
                 "STS at %s answered 200 without complete <Credentials> (AccessKeyId, "
                 "SecretAccessKey, SessionToken, Expiration)",
                 c->url);
    else
        rc = 0;
    if (r.body)
        memset(r.body, 0, r.len);
    httpc_resp_free(&r);
out:
    if (form)
        memset(form, 0, fsize);
    free(form);
    wipe_free(jwt);
    return rc;
}

/* ---------- container credentials and IMDS (JSON documents) ---------- */

int aws_parse_json_creds(const char *body, size_t len, int need_success, aws_creds_t *out)
{
    json_t *o = body ? json_loadb(body, len, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(o, "Code"));
    const char *exp = json_string_value(json_object_get(o, "Expiration"));
    int rc = -1;
    /* Temporary credentials without an expiry would never be renewed: refused. */
    if (json_is_object(o) && exp && (!need_success || (code && strcmp(code, "Success") == 0)))
        rc = set_creds(out, json_string_value(json_object_get(o, "AccessKeyId")),
                       json_string_value(json_object_get(o, "SecretAccessKey")),
                       json_string_value(json_object_get(o, "Token")), exp);
    json_decref(o);
    return rc;
}

static int fetch_container(aws_chain_t *c, char *err, size_t errlen)
{
    char *tok = NULL, hdr[AWS_WEB_TOKEN_MAX + 32];
    if (c->token_file[0]) {
        tok = read_token_file(c->token_file, "container authorization token", err, errlen);
        if (!tok)
            return -1;
    } else if (c->token_env) {
        tok = strdup(c->token_env);
    }
    if (tok && (strpbrk(tok, "\r\n") || strlen(tok) > AWS_WEB_TOKEN_MAX)) {
        snprintf(err, errlen, "the container authorization token has a line break or is too long");
        wipe_free(tok);
        return -1;
    }
    if (tok)
        snprintf(hdr, sizeof hdr, "Authorization: %s", tok);
    httpc_req_t req = {.method = "GET",
                       .url = c->url,
                       .extra_header = tok ? hdr : NULL,
                       .timeout_ms = AWS_LOCAL_TIMEOUT_MS,
                       .max_response = AWS_RESP_MAX};
    httpc_resp_t r;
    httpc_do(c->h, &req, &r);
    memset(hdr, 0, sizeof hdr);
    wipe_free(tok);
    int rc = r.status == 200 ? aws_parse_json_creds(r.body, r.len, 0, &c->cur) : -1;
    if (rc != 0 && r.status == 200)
        snprintf(err, errlen,
                 "container credentials at %s: the answer lacks AccessKeyId, "
                 "SecretAccessKey, Token or Expiration",
                 c->url);
    else if (rc != 0)
        snprintf(err, errlen, "container credentials endpoint %s answered %s%ld%s", c->url,
                 r.status ? "HTTP " : "nothing (", r.status, r.status ? "" : ")");
    if (r.body)
        memset(r.body, 0, r.len);
    httpc_resp_free(&r);
    return rc;
}

/* One IMDSv2 call: PUT for the session token when token is NULL, else GET path with it. The
 * answer is in r (caller frees). Returns the HTTP status (0: no answer). */
static long imds_call(aws_chain_t *c, const char *path, const char *token, httpc_resp_t *r)
{
    char url[AWS_URL_MAX + 128], hdr[1024];
    snprintf(url, sizeof url, "%s%s", c->url, path);
    if (token)
        snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", token);
    else
        snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: %d", AWS_IMDS_TOKEN_TTL_S);
    httpc_req_t req = {.method = token ? "GET" : "PUT",
                       .url = url,
                       .extra_header = hdr,
                       .timeout_ms = AWS_LOCAL_TIMEOUT_MS,
                       .max_response = AWS_RESP_MAX};
    httpc_do(c->h, &req, r);
    memset(hdr, 0, sizeof hdr);
    return r->status;
}

static int fetch_imds(aws_chain_t *c, char *err, size_t errlen)
{
    static const char creds_path[] = "/latest/meta-data/iam/security-credentials/";
    char token[1024] = "", path[sizeof creds_path + 256];
    httpc_resp_t r;
    int rc = -1;
    if (imds_call(c, "/latest/api/token", NULL, &r) != 200 || !r.body || r.len >= sizeof token ||
        strpbrk(r.body, "\r\n")) {
        snprintf(err, errlen, "IMDSv2 at %s gave no session token (HTTP %ld)", c->url, r.status);
        goto out;
    }
    memcpy(token, r.body, r.len + 1);
    httpc_resp_free(&r);
    if (imds_call(c, creds_path, token, &r) != 200 || !r.body || !r.body[0]) {
        snprintf(err, errlen, "IMDS at %s lists no instance profile role (HTTP %ld)", c->url,
                 r.status);
        goto out;
    }
    size_t rl = strcspn(r.body, "\r\n/");
    if (rl == 0 || rl > 128) {
        snprintf(err, errlen, "IMDS at %s lists a malformed role name", c->url);
        goto out;
    }
    snprintf(c->role_arn, sizeof c->role_arn, "%.*s", (int)rl, r.body);
    httpc_resp_free(&r);
    snprintf(path, sizeof path, "%s%s", creds_path, c->role_arn);
    if (imds_call(c, path, token, &r) != 200 ||
        aws_parse_json_creds(r.body, r.len, 1, &c->cur) != 0)
        snprintf(err, errlen, "IMDS at %s gave no usable credentials for role %s (HTTP %ld)",
                 c->url, c->role_arn, r.status);
    else
        rc = 0;
out:
    if (r.body)
        memset(r.body, 0, r.len);
    httpc_resp_free(&r);
    memset(token, 0, sizeof token);
    return rc;
}

/* Fetches new credentials from the chain's source into c->cur. 0 or -1 with err. */
static int fetch(aws_chain_t *c, char *err, size_t errlen)
{
    switch (c->src) {
    case SRC_WEB_IDENTITY:
        return fetch_web_identity(c, err, errlen);
    case SRC_CONTAINER:
        return fetch_container(c, err, errlen);
    case SRC_IMDS:
        return fetch_imds(c, err, errlen);
    default:
        return 0;
    }
}

/* ---------- picking the source ---------- */

/* An http:// container URI must name a loopback or the ECS/EKS link-local agent (as the SDKs
 * require), so a misconfigured URI cannot send the token elsewhere in clear text. */
static int container_host_ok(const char *uri)
{
    if (strncmp(uri, "https://", 8) == 0)
        return 1;
    if (strncmp(uri, "http://", 7) != 0)
        return 0;
    const char *h = uri + 7;
    static const char *const ok[] = {
        "127.",           "localhost:",      "localhost/",      "[::1]",         "169.254.170.2:",
        "169.254.170.2/", "169.254.170.23:", "169.254.170.23/", "[fd00:ec2::23]"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strncmp(h, ok[i], strlen(ok[i])) == 0)
            return 1;
    return strcmp(h, "localhost") == 0 || strcmp(h, "169.254.170.2") == 0 ||
           strcmp(h, "169.254.170.23") == 0;
}

static int pick_env(aws_chain_t *c, char *err, size_t errlen)
{
    const char *ak = env_nonempty("AWS_ACCESS_KEY_ID"), *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
    if (!ak && !sk)
        return 0;
    if (!ak || !sk) {
        snprintf(err, errlen,
                 "environment credentials are incomplete: %s is set but %s is missing (set "
                 "both, or neither to use IRSA, EKS Pod Identity or the instance profile)",
                 ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                 ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return -1;
    }
    c->src = SRC_ENV;
    if (set_creds(&c->cur, ak, sk, env_nonempty("AWS_SESSION_TOKEN"), NULL) != 0) {
        snprintf(err, errlen,
                 "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN is "
                 "too long");
        return -1;
    }
    return 1;
}

static int pick_web_identity(aws_chain_t *c, char *err, size_t errlen)
{
    const char *file = env_nonempty("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *role = env_nonempty("AWS_ROLE_ARN");
    if (!file && !role)
        return 0;
    if (!file || !role || strlen(file) >= sizeof c->token_file ||
        strlen(role) >= sizeof c->role_arn || strncmp(role, "arn:", 4) != 0) {
        snprintf(err, errlen,
                 "web identity needs both AWS_ROLE_ARN (an arn:aws:iam::ACCOUNT:role/NAME) and "
                 "AWS_WEB_IDENTITY_TOKEN_FILE (the projected service-account token); %s",
                 !file   ? "AWS_WEB_IDENTITY_TOKEN_FILE is missing"
                 : !role ? "AWS_ROLE_ARN is missing"
                         : "one of them is malformed");
        return -1;
    }
    c->src = SRC_WEB_IDENTITY;
    snprintf(c->token_file, sizeof c->token_file, "%s", file);
    snprintf(c->role_arn, sizeof c->role_arn, "%s", role);
    const char *sn = env_nonempty("AWS_ROLE_SESSION_NAME");
    if (sn && strlen(sn) >= 2 && strlen(sn) <= 64 &&
        strspn(sn, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-") ==
            strlen(sn))
        snprintf(c->session_name, sizeof c->session_name, "%s", sn);
    else
        snprintf(c->session_name, sizeof c->session_name, "pingvas-%lld",
                 (long long)(clock_now_ms() / 1000));
    const char *ep = env_nonempty("AWS_ENDPOINT_URL_STS");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    if (ep)
        snprintf(c->url, sizeof c->url, "%s", ep);
    else
        snprintf(c->url, sizeof c->url, "https://sts.%s.amazonaws.com/", c->region);
    return 1;
}

static int pick_container(aws_chain_t *c, char *err, size_t errlen)
{
    const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *rel = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if (!full && !rel)
        return 0;
    if (rel)
        snprintf(c->url, sizeof c->url, "http://169.254.170.2%s", rel);
    else
        snprintf(c->url, sizeof c->url, "%s", full);
    if (!rel && !container_host_ok(full)) {
        snprintf(err, errlen,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\" must be https, or http to a loopback "
                 "address or the ECS/EKS agent (169.254.170.2, 169.254.170.23)",
                 full);
        return -1;
    }
    c->src = SRC_CONTAINER;
    const char *tf = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (tf)
        snprintf(c->token_file, sizeof c->token_file, "%s", tf);
    c->token_env = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    return 1;
}

static int pick_imds(aws_chain_t *c)
{
    const char *off = env_nonempty("AWS_EC2_METADATA_DISABLED");
    if (off && strcasecmp(off, "true") == 0)
        return 0;
    const char *ep = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!ep && !aws_on_ec2())
        return 0;
    snprintf(c->url, sizeof c->url, "%s", ep ? ep : "http://169.254.169.254");
    size_t n = strlen(c->url);
    while (n && c->url[n - 1] == '/')
        c->url[--n] = '\0';
    c->src = SRC_IMDS;
    return 1;
}

static int pick_source(aws_chain_t *c, char *err, size_t errlen)
{
    int r = pick_env(c, err, errlen);
    if (r == 0)
        r = pick_web_identity(c, err, errlen);
    if (r == 0)
        r = pick_container(c, err, errlen);
    if (r == 0)
        r = pick_imds(c);
    if (r == 0)
        snprintf(err, errlen,
                 "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                 "AWS_SESSION_TOKEN for temporary ones), or run with IRSA (AWS_ROLE_ARN + "
                 "AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity "
                 "(AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) "
                 "or an EC2 instance profile");
    return r > 0 ? 0 : -1;
}

aws_chain_t *aws_chain_open(const char *region, char *err, size_t errlen)
{
    aws_chain_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "AWS credentials: out of memory");
        return NULL;
    }
    snprintf(c->region, sizeof c->region, "%s", region && region[0] ? region : "us-east-1");
    pthread_mutex_init(&c->mu, NULL);
    if (pick_source(c, err, errlen) != 0)
        goto fail;
    if (c->src != SRC_ENV) {
        c->h = httpc_new();
        if (!c->h) {
            snprintf(err, errlen, "AWS credentials: cannot create an HTTP client");
            goto fail;
        }
        char ferr[768];
        if (fetch(c, ferr, sizeof ferr) != 0) {
            snprintf(err, errlen, "AWS credentials (%s): %s", source_names[c->src], ferr);
            goto fail;
        }
    }
    char until[40] = "never";
    if (c->cur.expires_ms)
        clock_format_rfc3339(c->cur.expires_ms, until, sizeof until);
    log_info("event=aws_credentials source=%s role=\"%s\" expires=%s", source_names[c->src],
             c->src == SRC_WEB_IDENTITY || c->src == SRC_IMDS ? c->role_arn : "", until);
    return c;
fail:
    aws_chain_close(c);
    return NULL;
}

int aws_chain_get(aws_chain_t *c, aws_creds_t *out, char *err, size_t errlen)
{
    pthread_mutex_lock(&c->mu);
    int64_t now = clock_now_ms();
    int rc = 0;
    if (c->cur.expires_ms && now >= c->cur.expires_ms - AWS_CREDS_REFRESH_MARGIN_MS &&
        now >= c->retry_after_ms) {
        char ferr[768];
        aws_creds_t old = c->cur;
        if (fetch(c, ferr, sizeof ferr) == 0) {
            char until[40];
            clock_format_rfc3339(c->cur.expires_ms, until, sizeof until);
            log_info("event=aws_credentials_refreshed source=%s expires=%s", source_names[c->src],
                     until);
        } else {
            c->cur = old;
            c->retry_after_ms = now + AWS_CREDS_RETRY_MS;
            log_warn("event=aws_credentials_refresh_failed source=%s err=\"%s\"",
                     source_names[c->src], ferr);
            if (now >= c->cur.expires_ms) {
                snprintf(err, errlen, "AWS credentials (%s) expired and cannot be renewed: %s",
                         source_names[c->src], ferr);
                rc = -1;
            }
        }
        aws_creds_wipe(&old);
    }
    if (rc == 0)
        *out = c->cur;
    else
        aws_creds_wipe(out);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

const char *aws_chain_source(const aws_chain_t *c)
{
    return source_names[c->src];
}

void aws_chain_close(aws_chain_t *c)
{
    if (!c)
        return;
    if (c->h)
        httpc_free(c->h);
    pthread_mutex_destroy(&c->mu);
    aws_creds_wipe(&c->cur);
    free(c);
}

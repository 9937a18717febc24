/* awscreds.h: the AWS SDKs' default credential chain, for the S3 store. In the SDKs' order, the
 * first source whose configuration is present is used:
 *   1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   2. web identity (IRSA): AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, exchanged with STS
 *      AssumeRoleWithWebIdentity on the regional endpoint (https://sts.REGION.amazonaws.com, or
 *      AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL); optional AWS_ROLE_SESSION_NAME;
 *   3. container credentials (EKS Pod Identity, ECS): AWS_CONTAINER_CREDENTIALS_FULL_URI or
 *      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, with the Authorization value from
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read on each refresh) or
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN;
 *   4. the EC2 instance profile through IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT, default
 *      http://169.254.169.254; off with AWS_EC2_METADATA_DISABLED=true; tried only on EC2 or when
 *      the endpoint is set, so a laptop does not wait on a link-local timeout).
 * Temporary credentials are refreshed AWS_CREDS_REFRESH_MARGIN_MS before they expire (time from
 * clock.h, so tests steer it). No secret, session token or web identity token is ever logged or
 * put in an error message. Shared config and credential files (~/.aws) are not read. */
#ifndef PINGVAS_AWSCREDS_H
#define PINGVAS_AWSCREDS_H

#include <stddef.h>
#include <stdint.h>

#define AWS_KEY_MAX 256                    /* access key id / secret, with the NUL */
#define AWS_TOKEN_MAX 8192                 /* session token, with the NUL */
#define AWS_CREDS_REFRESH_MARGIN_MS 300000 /* refresh 5 minutes before expiry */
#define AWS_CREDS_RETRY_MS 10000           /* after a failed refresh, wait this long to retry */

typedef struct aws_creds {
    char access_key[AWS_KEY_MAX];
    char secret_key[AWS_KEY_MAX];
    char session_token[AWS_TOKEN_MAX]; /* "" when the credentials have none */
    int64_t expires_ms;                /* ms since the epoch; 0: they do not expire */
} aws_creds_t;

typedef struct aws_chain aws_chain_t;

/* Picks the source and fetches the first credentials (so a bad role or token stops the start).
 * region names the STS endpoint. Returns a chain the caller frees with aws_chain_close, or NULL
 * with err saying which source failed and what to set. */
aws_chain_t *aws_chain_open(const char *region, char *err, size_t errlen);

/* Copies the current credentials into out, refreshing them first when they expire within the
 * margin. Thread safe. 0, or -1 with err when there are no valid credentials (out is wiped). */
int aws_chain_get(aws_chain_t *c, aws_creds_t *out, char *err, size_t errlen);

/* "environment", "web-identity", "container" or "imds". */
const char *aws_chain_source(const aws_chain_t *c);

void aws_chain_close(aws_chain_t *c);

/* Overwrites the secret parts of c. */
void aws_creds_wipe(aws_creds_t *c);

/* 1 when this machine is an EC2 instance (DMI vendor or asset tag), else 0. No network. */
int aws_on_ec2(void);

/* Parses an ISO 8601 UTC time ("2014-10-24T23:00:23Z", fractional seconds or "+00:00" allowed)
 * into ms since the epoch. 0 or -1. */
int aws_parse_time(const char *s, int64_t *ms);

/* Extracts the text of the first <name>...</name> inside [doc, doc+len) into out, decoding the
 * five predefined XML entities. 0; -1 when the element is missing, has attributes or child
 * elements, uses another entity, or does not fit in size bytes. */
int aws_xml_text(const char *doc, size_t len, const char *name, char *out, size_t size);

/* The <Credentials> of an STS AssumeRoleWithWebIdentityResponse (AccessKeyId, SecretAccessKey,
 * SessionToken, Expiration, all required). 0 with *out set, or -1 (*out untouched). */
int aws_parse_sts(const char *body, size_t len, aws_creds_t *out);
/* A JSON credentials document (container endpoint, IMDS role): AccessKeyId, SecretAccessKey,
 * Token, Expiration (required); with need_success, "Code" must be "Success" (IMDS). 0 with *out
 * set, or -1 (*out untouched). */
int aws_parse_json_creds(const char *body, size_t len, int need_success, aws_creds_t *out);

#endif

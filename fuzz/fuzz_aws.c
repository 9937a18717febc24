/* fuzz_aws.c: libFuzzer target for the answers of AWS's credential and metadata endpoints
 * (src/blob/awscreds.c, src/worker/imds.c): the first input byte picks the reader, the rest is
 * the body. Built by scripts/fuzz.sh (see fuzz/README.md).
 *
 *   0: STS AssumeRoleWithWebIdentity XML;  1: container credentials JSON;  2: IMDS role
 *   credentials JSON ("Code": "Success" required);  3: an XML element's text;  4: an AWS
 *   timestamp;  5: IMDS spot/instance-action JSON.
 *
 * Invariants: no crash, no leak; accepted credentials have a non-empty access key and secret,
 * NUL-terminated within their fields, and an expiry; refused ones leave the output untouched. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob/awscreds.h"
#include "worker/imds.h"

static void check_creds(int rc, const aws_creds_t *c)
{
    static aws_creds_t zero;
    if (rc != 0) {
        if (memcmp(c, &zero, sizeof zero) != 0)
            abort(); /* a refusal left something behind */
        return;
    }
    if (!c->access_key[0] || !c->secret_key[0] || c->expires_ms == 0 ||
        strnlen(c->access_key, AWS_KEY_MAX) >= AWS_KEY_MAX ||
        strnlen(c->secret_key, AWS_KEY_MAX) >= AWS_KEY_MAX ||
        strnlen(c->session_token, AWS_TOKEN_MAX) >= AWS_TOKEN_MAX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    aws_creds_t *c = calloc(1, sizeof *c);
    char *text = calloc(1, len + 1);
    char out[64];
    int64_t ms = 0;
    if (!c || !text)
        abort();
    memcpy(text, body, len); /* the readers that take a C string get one */
    switch (data[0] % 6) {
    case 0:
        check_creds(aws_parse_sts(body, len, c), c);
        break;
    case 1:
    case 2:
        check_creds(aws_parse_json_creds(body, len, data[0] % 6 == 2, c), c);
        break;
    case 3:
        if (aws_xml_text(body, len, "Code", out, sizeof out) == 0 &&
            strnlen(out, sizeof out) >= sizeof out)
            abort();
        break;
    case 4:
        aws_parse_time(text, &ms);
        break;
    default:
        imds_parse_instance_action(body, len, &ms);
    }
    free(text);
    free(c);
    return 0;
}

/* images.c: the keys of job images (see images.h). */
#include "api/images.h"

#include <stdio.h>
#include <string.h>

#include "lib/b64.h"
#include "lib/hmac.h"

#define TAG_BYTES 16 /* 128 bits of HMAC in the key */
#define ID_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

int image_key(const char *secret, const char *job_id, char *buf, size_t size)
{
    unsigned char mac[HMAC_SHA256_LEN];
    char tag[2 * TAG_BYTES + 1];
    if (hmac_sha256(secret, strlen(secret), job_id, strlen(job_id), mac) != 0)
        return -1;
    hex_encode(mac, TAG_BYTES, tag);
    int n = snprintf(buf, size, "jobs/%s-%s.png", job_id, tag);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int image_key_job(const char *key, char *job_id, size_t size)
{
    if (strncmp(key, "jobs/", 5) != 0)
        return -1;
    const char *id = key + 5;
    size_t n = strspn(id, ID_CHARS);
    if (n == 0 || strcmp(id + n, ".png") != 0)
        return -1;
    /* "<id>-<32 hex>": the id is what comes before the tag */
    const size_t tl = 2 * TAG_BYTES + 1;
    if (n > tl && id[n - tl] == '-' && strspn(id + n - tl + 1, "0123456789abcdef") == tl - 1)
        n -= tl;
    if (n >= size)
        return -1;
    memcpy(job_id, id, n);
    job_id[n] = '\0';
    return 0;
}

/* The keys a job's image may have: under the current and the previous secret, and the key before
 * this scheme. Returns how many (2 or 3), or -1. */
static int keys(const image_secrets_t *sec, const char *job_id, char k[3][IMAGE_KEY_MAX])
{
    int n = 0;
    if (image_key(sec->current, job_id, k[n++], IMAGE_KEY_MAX) != 0)
        return -1;
    if (sec->previous && sec->previous[0] &&
        image_key(sec->previous, job_id, k[n++], IMAGE_KEY_MAX) != 0)
        return -1;
    int len = snprintf(k[n], IMAGE_KEY_MAX, "jobs/%s.png", job_id);
    return len < 0 || len >= IMAGE_KEY_MAX ? -1 : n + 1;
}

int image_uploaded(blob_t *b, const image_secrets_t *sec, const char *job_id, char *key)
{
    char k[3][IMAGE_KEY_MAX];
    int n = keys(sec, job_id, k);
    if (n < 0)
        return -1;
    for (int i = 0; i < n - 1; i++) { /* never the old key: it is no upload target any more */
        int rc = blob_exists(b, k[i]);
        if (rc == 1)
            memcpy(key, k[i], IMAGE_KEY_MAX);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int image_discard(blob_t *b, const image_secrets_t *sec, const char *job_id)
{
    char k[3][IMAGE_KEY_MAX];
    int n = keys(sec, job_id, k), rc = 0;
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++)
        rc |= blob_delete(b, k[i]);
    return rc ? -1 : 0;
}

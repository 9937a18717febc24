/* images.c: staging, publishing and deleting job images (see images.h). */
#include "api/images.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#define STAGING_TAG_BYTES 16 /* 128 bits of HMAC in the staging key */

int image_public_key(const char *job_id, char *buf, size_t size)
{
    int n = snprintf(buf, size, "jobs/%s.png", job_id);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int image_staging_key(const char *secret, const char *job_id, char *buf, size_t size)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    char tag[2 * STAGING_TAG_BYTES + 1];
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)job_id,
              strlen(job_id), mac, &mlen) ||
        mlen < STAGING_TAG_BYTES)
        return -1;
    for (int i = 0; i < STAGING_TAG_BYTES; i++)
        snprintf(tag + 2 * i, 3, "%02x", mac[i]);
    int n = snprintf(buf, size, "staging/%s-%s.png", job_id, tag);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int image_key_job(const char *key, char *job_id, size_t size)
{
    if (strncmp(key, "jobs/", 5) != 0)
        return -1;
    const char *id = key + 5;
    size_t n = strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    if (n == 0 || n >= size || strcmp(id + n, ".png") != 0)
        return -1;
    memcpy(job_id, id, n);
    job_id[n] = '\0';
    return 0;
}

/* Every key a job's image may have: staged under the current (and previous) secret, public. */
typedef struct job_keys {
    char staged[2][IMAGE_KEY_MAX];
    int nstaged;
    char public[IMAGE_KEY_MAX];
} job_keys_t;

static int keys(const image_secrets_t *sec, const char *job_id, job_keys_t *k)
{
    k->nstaged = 0;
    if (image_staging_key(sec->current, job_id, k->staged[k->nstaged++], IMAGE_KEY_MAX) != 0)
        return -1;
    if (sec->previous && sec->previous[0] &&
        image_staging_key(sec->previous, job_id, k->staged[k->nstaged++], IMAGE_KEY_MAX) != 0)
        return -1;
    return image_public_key(job_id, k->public, IMAGE_KEY_MAX);
}

/* The index of the staged key that exists, -1 when none does, -2 on a storage error. */
static int find_staged(blob_t *b, const job_keys_t *k)
{
    for (int i = 0; i < k->nstaged; i++) {
        int rc = blob_exists(b, k->staged[i]);
        if (rc != 0)
            return rc == 1 ? i : -2;
    }
    return -1;
}

int image_uploaded(blob_t *b, const image_secrets_t *sec, const char *job_id)
{
    job_keys_t k;
    if (keys(sec, job_id, &k) != 0)
        return -1;
    int i = find_staged(b, &k);
    return i >= 0 ? 1 : i == -2 ? -1 : blob_exists(b, k.public);
}

int image_publish(blob_t *b, const image_secrets_t *sec, const char *job_id)
{
    job_keys_t k;
    if (keys(sec, job_id, &k) != 0)
        return -1;
    int i = find_staged(b, &k);
    if (i >= 0)
        return blob_move(b, k.staged[i], k.public);
    if (i == -2)
        return -1;
    return blob_exists(b, k.public) == 1 ? 0 : -1; /* a replay: published already */
}

int image_discard(blob_t *b, const image_secrets_t *sec, const char *job_id)
{
    job_keys_t k;
    int rc = 0;
    if (keys(sec, job_id, &k) != 0)
        return -1;
    for (int i = 0; i < k.nstaged; i++)
        rc |= blob_delete(b, k.staged[i]);
    rc |= blob_delete(b, k.public);
    return rc ? -1 : 0;
}

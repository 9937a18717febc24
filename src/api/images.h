/* images.h: the life of a job's image in the blob store, so that nobody sees an image before its
 * job is completed and charged (issue 16, finding 1):
 *   - the worker uploads to a staging key, "staging/<id>-<tag>.png", where tag is an HMAC of the
 *     job id under a server secret: users cannot name it, on a CDN or anywhere else;
 *   - the server publishes it to the public key "jobs/<id>.png" (a rename on the filesystem, an
 *     S3 CopyObject) only after the transaction that completes and charges the job has committed;
 *   - a canceled or failed job's staging image is deleted.
 * The filesystem store's /images/ route also serves only "jobs/<id>.png" of completed jobs. */
#ifndef PINGVAS_IMAGES_H
#define PINGVAS_IMAGES_H

#include <stddef.h>

#include "blob/blob.h"

#define IMAGE_KEY_MAX 192

/* "jobs/<id>.png" into buf. 0, or -1 when it does not fit. */
int image_public_key(const char *job_id, char *buf, size_t size);
/* "staging/<id>-<32 hex of HMAC-SHA256(secret, id)>.png" into buf. 0 or -1. */
int image_staging_key(const char *secret, const char *job_id, char *buf, size_t size);
/* If key is exactly "jobs/<id>.png" with id of [A-Za-z0-9_-] (1..size-1 bytes), copies the id
 * into job_id and returns 0; else -1. */
int image_key_job(const char *key, char *job_id, size_t size);
/* The secrets that name staging keys: the current one (uploads go there), and during a rotation
 * (JWT_SECRET_PREVIOUS) the previous one, whose staged images are still found; previous may be
 * NULL or "". */
typedef struct image_secrets {
    const char *current;
    const char *previous;
} image_secrets_t;

/* 1 when the job's image was uploaded (staged, or already published), 0 when not, -1 on a
 * storage error. */
int image_uploaded(blob_t *b, const image_secrets_t *sec, const char *job_id);
/* Publishes a completed job's staged image: 0 when the public key holds it (now or already),
 * -1 when neither the staged nor the public image is there or the storage failed. */
int image_publish(blob_t *b, const image_secrets_t *sec, const char *job_id);
/* Deletes a job's staged and public images (canceled, failed, or past retention). 0 or -1. */
int image_discard(blob_t *b, const image_secrets_t *sec, const char *job_id);

#endif

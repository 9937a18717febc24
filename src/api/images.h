/* images.h: the key of a job's image in the blob store, chosen so that nobody sees an image before
 * its job is completed and charged (issue 16, finding 1).
 *
 * The image lives at "jobs/<id>-<tag>.png", where tag is 128 bits of HMAC-SHA256 of the job id
 * under a server secret (JWT_SECRET). The worker uploads straight to it (a presigned PUT for S3,
 * the server's PUT endpoint for the filesystem), and until the job is completed only the server
 * and that worker can name it: a user learns it from image_url, which the API shows only once the
 * transaction that completes and charges the job has stored the key (and /images/ serves only a
 * completed job's stored key). So the image becomes reachable in that very transaction, with no
 * copy after it, and a client that sees "completed" can fetch the image at once. Canceled and
 * failed jobs' images are deleted. "jobs/<id>.png", the key before this scheme, still serves the
 * jobs completed under it. */
#ifndef PINGVAS_IMAGES_H
#define PINGVAS_IMAGES_H

#include <stddef.h>

#include "blob/blob.h"

#define IMAGE_KEY_MAX 192

/* "jobs/<id>-<32 hex of HMAC-SHA256(secret, id)>.png" into buf. 0, or -1 when it does not fit. */
int image_key(const char *secret, const char *job_id, char *buf, size_t size);
/* If key is "jobs/<id>-<32 hex>.png" or "jobs/<id>.png" with id of [A-Za-z0-9_-] (1..size-1
 * bytes), copies the id into job_id and returns 0; else -1. */
int image_key_job(const char *key, char *job_id, size_t size);

/* The secrets that name image keys: the current one (uploads go there), and during a rotation
 * (JWT_SECRET_PREVIOUS) the previous one, whose uploads are still found; previous may be NULL or
 * "". */
typedef struct image_secrets {
    const char *current;
    const char *previous;
} image_secrets_t;

/* 1 when the job's image was uploaded, with its key copied into key (IMAGE_KEY_MAX bytes); 0 when
 * not; -1 on a storage error. */
int image_uploaded(blob_t *b, const image_secrets_t *sec, const char *job_id, char *key);
/* Deletes every image a job may have (canceled, failed, or past retention). 0 or -1. */
int image_discard(blob_t *b, const image_secrets_t *sec, const char *job_id);

#endif

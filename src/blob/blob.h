/* blob.h: the image store contract (filesystem or S3). Workers never hold storage credentials:
 * the server hands each one an upload target per job. */
#ifndef PINGVAS_BLOB_H
#define PINGVAS_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob blob_t;

typedef struct upload_target {
    char method[8]; /* "PUT" */
    char url[8192]; /* where the worker sends the PNG body (a presigned URL with a session token) */
    int needs_lease; /* 1: send the lease in X-Pingvas-Lease (server-hosted upload) */
} upload_target_t;

/* Opens "file:///dir" (or a bare dir) or "s3://bucket/prefix". public_base: the prefix for
 * image URLs (PUBLIC_IMAGE_BASE_URL), or NULL. server_url: this server's external URL, used for
 * server-hosted uploads and /images/ URLs. NULL on error with message in err. */
blob_t *blob_open(const char *url, const char *public_base, const char *server_url, char *err,
                  size_t errlen);
void blob_close(blob_t *b);
/* 1 when url (a STORAGE_URL, or NULL) names the S3 store that blob_open would open, else 0. */
int blob_url_is_s3(const char *url);
/* Stores data under key. 0 or -1; on -1, errno is ENOSPC (or EDQUOT) when the store is full. */
int blob_put(blob_t *b, const char *key, const void *data, size_t len);
/* One image of blob_put_many: key, data, len in; rc (0 or -1) and err (the errno of a -1) out. */
typedef struct blob_item {
    const char *key;
    const void *data;
    size_t len;
    int rc, err;
} blob_item_t;
/* Stores n images, each as blob_put would, and makes them durable together: the filesystem store
 * writes them all in one transaction of its database, one fsync for the batch; other stores put
 * them one by one. Every item gets its own rc. */
void blob_put_many(blob_t *b, blob_item_t *items, size_t n);
/* 1 if the key exists, 0 if not, -1 on error. */
int blob_exists(blob_t *b, const char *key);
/* Removes key; a key that does not exist is not an error. 0 or -1. */
int blob_delete(blob_t *b, const char *key);
/* Where a worker uploads the image for key (job_id given for server-hosted uploads). 0 or -1. */
int blob_upload_target(blob_t *b, const char *key, const char *job_id, int64_t ttl_s,
                       upload_target_t *out);
/* The URL clients fetch the image from. malloc'd; caller frees. */
char *blob_public_url(blob_t *b, const char *key);
/* Filesystem store only: the path key's file had under the root in the layout before images.db
 * (one file per image; such files are still read, found and deleted), or -1 if this store is
 * not a filesystem store or the key is unsafe (.., absolute, NUL). */
int blob_local_path(blob_t *b, const char *key, char *buf, size_t size);
/* Filesystem store only: the image of key into *data (malloc'd; caller frees) and *len. 0, or -1
 * with errno: ENOENT when there is no such image, ENOTSUP for a store that cannot read (S3:
 * clients fetch from the bucket), EINVAL for an unsafe key, another on a storage error. */
int blob_read(blob_t *b, const char *key, void **data, size_t *len);

struct blob_ops {
    const char *name;
    void (*close)(blob_t *b);
    int (*put)(blob_t *b, const char *key, const void *data, size_t len);
    void (*put_many)(blob_t *b, blob_item_t *items, size_t n); /* NULL: put, one by one */
    int (*exists)(blob_t *b, const char *key);
    int (*del)(blob_t *b, const char *key);
    int (*upload_target)(blob_t *b, const char *key, const char *job_id, int64_t ttl_s,
                         upload_target_t *out);
    char *(*public_url)(blob_t *b, const char *key);
    int (*local_path)(blob_t *b, const char *key, char *buf, size_t size);
    int (*read)(blob_t *b, const char *key, void **data, size_t *len); /* NULL: not supported */
};

struct blob {
    const struct blob_ops *ops;
};

blob_t *blob_fs_open(const char *dir, const char *public_base, const char *server_url, char *err,
                     size_t errlen);
blob_t *blob_s3_open(const char *url, const char *public_base, char *err, size_t errlen);

#endif

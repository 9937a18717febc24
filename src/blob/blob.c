/* blob.c: opens the image store named by STORAGE_URL and forwards each operation to it. */
#include "blob/blob.h"

#include <errno.h>

#include <stdio.h>
#include <string.h>

int blob_url_is_s3(const char *url)
{
    return url && strncmp(url, "s3://", 5) == 0;
}

/* "file:///dir", "file://localhost/dir" or a bare path open the filesystem store; "s3://" the S3
 * store (blob_s3.c, credentials from the environment). */
blob_t *blob_open(const char *url, const char *public_base, const char *server_url, char *err,
                  size_t errlen)
{
    if (!url || !url[0]) {
        snprintf(err, errlen, "storage URL is empty (use file:///dir or s3://bucket/prefix)");
        return NULL;
    }
    if (strncmp(url, "file://", 7) == 0) {
        const char *path = url + 7;
        if (strncmp(path, "localhost/", 10) == 0)
            path += 9;
        if (path[0] != '/') {
            snprintf(err, errlen,
                     "storage URL \"%s\": a file URL needs an absolute path (file:///dir)", url);
            return NULL;
        }
        return blob_fs_open(path, public_base, server_url, err, errlen);
    }
    if (blob_url_is_s3(url))
        return blob_s3_open(url, public_base, err, errlen);
    if (strstr(url, "://")) {
        snprintf(err, errlen,
                 "storage URL \"%s\": unsupported scheme (use file:///dir, a directory path, or "
                 "s3://bucket/prefix)",
                 url);
        return NULL;
    }
    return blob_fs_open(url, public_base, server_url, err, errlen);
}

void blob_close(blob_t *b)
{
    if (b)
        b->ops->close(b);
}

int blob_put(blob_t *b, const char *key, const void *data, size_t len)
{
    return b->ops->put(b, key, data, len);
}

void blob_put_many(blob_t *b, blob_item_t *items, size_t n)
{
    if (b->ops->put_many) {
        b->ops->put_many(b, items, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].rc = b->ops->put(b, items[i].key, items[i].data, items[i].len);
        items[i].err = items[i].rc == 0 ? 0 : errno;
    }
}

int blob_exists(blob_t *b, const char *key)
{
    return b->ops->exists(b, key);
}

int blob_delete(blob_t *b, const char *key)
{
    return b->ops->del(b, key);
}

int blob_upload_target(blob_t *b, const char *key, const char *job_id, int64_t ttl_s,
                       upload_target_t *out)
{
    return b->ops->upload_target(b, key, job_id, ttl_s, out);
}

char *blob_public_url(blob_t *b, const char *key)
{
    return b->ops->public_url(b, key);
}

int blob_local_path(blob_t *b, const char *key, char *buf, size_t size)
{
    if (!b->ops->local_path)
        return -1;
    return b->ops->local_path(b, key, buf, size);
}

int blob_read(blob_t *b, const char *key, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!b->ops->read) {
        errno = ENOTSUP;
        return -1;
    }
    return b->ops->read(b, key, data, len);
}

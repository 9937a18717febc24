/* blob_fs.c: the filesystem image store. Keys such as "jobs/<id>.png" are files under a root
 * directory; the server serves them at /images/<key> and receives worker uploads at
 * PUT /internal/v1/jobs/<id>/image. Writes are atomic: a reader sees the whole image or none. */
#include "blob/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/wire.h"

#define BLOB_KEY_MAX 512 /* bytes; keys are short ("jobs/<uuid>.png") */
#define BLOB_URL_MAX 4096

typedef struct blob_fs {
    blob_t base;       /* first: a blob_t * is a blob_fs_t * */
    char *root;        /* owned; no trailing slash unless it is "/" */
    char *public_base; /* owned; NULL when unset; no trailing slash */
    char *server_url;  /* owned; NULL when unset; no trailing slash */
} blob_fs_t;

/* A key is safe when it is a relative path of plain segments: 1..BLOB_KEY_MAX bytes, no
 * backslash or control character, and no segment that is empty or starts with '.' (which rules
 * out "." and "..", and hides the temporary files put() writes). This is what stops
 * /images/../../etc/passwd. */
static int key_is_safe(const char *key)
{
    if (!key || !key[0])
        return 0;
    size_t len = strnlen(key, BLOB_KEY_MAX + 1);
    if (len > BLOB_KEY_MAX)
        return 0;
    int seg_start = 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            return 0;
        if (seg_start && (c == '/' || c == '.'))
            return 0;
        seg_start = c == '/';
    }
    return !seg_start; /* no trailing slash */
}

/* strdup without trailing slashes (keeping a lone "/"); NULL for NULL or "". */
static char *dup_trimmed(const char *s)
{
    if (!s || !s[0])
        return NULL;
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        n--;
    return strndup(s, n);
}

/* Creates dir and its missing parents with mode 0755, assuming the first `known` bytes of dir
 * name a directory that exists already. 0, or -1 with errno set. */
static int mkdir_p(const char *dir, size_t known)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + (known > 0 ? known : 1); *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int fs_local_path(blob_t *b, const char *key, char *buf, size_t size)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    if (!key_is_safe(key) || !buf || size == 0)
        return -1;
    const char *sep = strcmp(fs->root, "/") == 0 ? "" : "/";
    int n = snprintf(buf, size, "%s%s%s", fs->root, sep, key);
    if (n < 0 || (size_t)n >= size) {
        buf[0] = '\0';
        return -1;
    }
    return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Syncs a directory so a rename inside it survives a crash. */
static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Copies the directory part of path (a local path of a key: root "/" key, no trailing slash)
 * into dir (PATH_MAX bytes); returns the length of that part with its final '/'. */
static size_t parent_dir(const char *path, char *dir)
{
    const char *base = strrchr(path, '/') + 1;
    size_t dlen = (size_t)(base - path);
    memcpy(dir, path, dlen);
    dir[dlen > 1 ? dlen - 1 : dlen] = '\0';
    return dlen;
}

/* Writes a temporary file beside the target (a dot name, so never a valid key and never served),
 * fsyncs it, then renames it over the target: readers see the old image, or the whole new one. */
static int fs_put(blob_t *b, const char *key, const void *data, size_t len)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    char path[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
    int fd = -1, rc = -1, tmp_made = 0;
    if (fs_local_path(b, key, path, sizeof path) != 0 || (len > 0 && !data))
        return -1;
    size_t dlen = parent_dir(path, dir);
    int n = snprintf(tmp, sizeof tmp, "%.*s.%s.tmp-XXXXXX", (int)dlen, path, path + dlen);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    if (mkdir_p(dir, strlen(fs->root)) != 0)
        goto out;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        goto out;
    tmp_made = 1;
    if (fchmod(fd, 0644) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0)
        goto out;
    int close_rc = close(fd);
    fd = -1;
    if (close_rc != 0 || rename(tmp, path) != 0)
        goto out;
    tmp_made = 0;
    fsync_dir(dir);
    rc = 0;
out:;
    int saved = errno; /* ENOSPC tells the server the store is full */
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp);
    errno = saved;
    return rc;
}

static int fs_exists(blob_t *b, const char *key)
{
    char path[PATH_MAX];
    if (fs_local_path(b, key, path, sizeof path) != 0)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    return S_ISREG(st.st_mode) ? 1 : 0;
}

static int fs_delete(blob_t *b, const char *key)
{
    char path[PATH_MAX];
    if (fs_local_path(b, key, path, sizeof path) != 0)
        return -1;
    if (unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR)
        return -1;
    return 0;
}

/* Job ids are UUIDs; anything outside [A-Za-z0-9_-] would need escaping in a URL path. */
static int job_id_is_safe(const char *id)
{
    if (!id || !id[0] || strlen(id) >= 128)
        return 0;
    for (; *id; id++) {
        char c = *id;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* The server hosts uploads for the filesystem store; the worker proves its lease. */
static int fs_upload_target(blob_t *b, const char *key, const char *job_id, int64_t ttl_s,
                            upload_target_t *out)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    memset(out, 0, sizeof *out);
    if (!fs->server_url || !key_is_safe(key) || !job_id_is_safe(job_id))
        return -1;
    if (wire_job_url(out->url, sizeof out->url, fs->server_url, job_id, "image") != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    snprintf(out->method, sizeof out->method, "PUT");
    out->needs_lease = 1;
    return 0;
}

/* public_base + "/" + key, or server_url + "/images/" + key (a relative "/images/" + key when no
 * server URL is configured). Bytes outside [A-Za-z0-9-._~/] in the key are percent-encoded.
 * malloc'd; caller frees. NULL for an unsafe key or on allocation failure. */
static char *fs_public_url(blob_t *b, const char *key)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    if (!key_is_safe(key))
        return NULL;
    const char *base = fs->public_base ? fs->public_base : fs->server_url ? fs->server_url : "";
    const char *mid = fs->public_base ? "/" : "/images/";
    size_t blen = strlen(base), mlen = strlen(mid), klen = strlen(key);
    size_t need = blen + mlen + 3 * klen + 1; /* each key byte at most "%XX" */
    if (need > BLOB_URL_MAX)
        return NULL;
    char *url = malloc(need);
    if (!url)
        return NULL;
    memcpy(url, base, blen);
    memcpy(url + blen, mid, mlen);
    char *p = url + blen + mlen;
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
        unsigned char c = *k;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return url;
}

static void fs_close(blob_t *b)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    free(fs->root);
    free(fs->public_base);
    free(fs->server_url);
    free(fs);
}

static const struct blob_ops fs_ops = {
    .name = "fs",
    .close = fs_close,
    .put = fs_put,
    .exists = fs_exists,
    .del = fs_delete,
    .upload_target = fs_upload_target,
    .public_url = fs_public_url,
    .local_path = fs_local_path,
};

/* Checks that files can be created in dir by creating and removing one. 0 or -1 (errno set). */
static int probe_writable(const char *dir)
{
    char probe[PATH_MAX];
    int n = snprintf(probe, sizeof probe, "%s/.pingvas-probe-XXXXXX", dir);
    if (n < 0 || (size_t)n >= sizeof probe) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkostemp(probe, O_CLOEXEC);
    if (fd < 0)
        return -1;
    close(fd);
    unlink(probe);
    return 0;
}

/* Opens (creating with mode 0755 when missing) the store rooted at dir. public_base and
 * server_url are copied; either may be NULL. Returns a store the caller frees with
 * blob_close, or NULL with err naming the directory and the reason. */
blob_t *blob_fs_open(const char *dir, const char *public_base, const char *server_url, char *err,
                     size_t errlen)
{
    if (!dir || !dir[0]) {
        snprintf(err, errlen, "image directory is empty");
        return NULL;
    }
    if (strlen(dir) >= PATH_MAX - BLOB_KEY_MAX - 32) {
        snprintf(err, errlen, "image directory path is too long (%zu bytes)", strlen(dir));
        return NULL;
    }
    blob_fs_t *fs = calloc(1, sizeof *fs);
    if (!fs) {
        snprintf(err, errlen, "image store: out of memory");
        return NULL;
    }
    fs->base.ops = &fs_ops;
    fs->root = dup_trimmed(dir);
    fs->public_base = dup_trimmed(public_base);
    fs->server_url = dup_trimmed(server_url);
    if (!fs->root || (public_base && public_base[0] && !fs->public_base) ||
        (server_url && server_url[0] && !fs->server_url)) {
        snprintf(err, errlen, "image store: out of memory");
        goto fail;
    }
    if (mkdir_p(fs->root, 0) != 0) {
        snprintf(err, errlen, "cannot create image directory %s: %s", fs->root, strerror(errno));
        goto fail;
    }
    if (probe_writable(fs->root) != 0) {
        snprintf(err, errlen, "image directory %s is not writable: %s", fs->root, strerror(errno));
        goto fail;
    }
    return &fs->base;
fail:
    fs_close(&fs->base);
    return NULL;
}

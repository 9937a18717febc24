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

#include "core/job.h"
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

/* One image of a put in progress: its temporary file beside the target (a dot name, so never a
 * valid key and never served), open until it is fsynced. */
typedef struct pending {
    char path[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
    int fd;
} pending_t;

/* Writes item's data to a new temporary file (p->fd open, p->tmp made). 0, or -1 with errno and
 * nothing left behind. */
static int put_begin(blob_fs_t *fs, const blob_item_t *item, pending_t *p)
{
    p->fd = -1;
    p->tmp[0] = '\0';
    if (fs_local_path(&fs->base, item->key, p->path, sizeof p->path) != 0 ||
        (item->len > 0 && !item->data)) {
        errno = EINVAL;
        return -1;
    }
    size_t dlen = parent_dir(p->path, p->dir);
    if (mkdir_p(p->dir, strlen(fs->root)) != 0)
        return -1;
    /* open(2) with a random name rather than mkostemp: the same file, created through the call
     * that tests/lazyfs_shim.c interposes, so the power-loss test sees these writes too. */
    for (int tries = 0; p->fd < 0 && tries < 8; tries++) {
        char rnd[17];
        random_hex(rnd, 8);
        int n = snprintf(p->tmp, sizeof p->tmp, "%.*s.%s.tmp-%s", (int)dlen, p->path,
                         p->path + dlen, rnd);
        if (n < 0 || (size_t)n >= sizeof p->tmp) {
            p->tmp[0] = '\0';
            errno = ENAMETOOLONG;
            return -1;
        }
        p->fd = open(p->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (p->fd < 0 && errno != EEXIST)
            break;
    }
    if (p->fd < 0) {
        p->tmp[0] = '\0';
        return -1;
    }
    if (fchmod(p->fd, 0644) != 0 || write_all(p->fd, item->data, item->len) != 0)
        return -1;
    /* Start writing the data back now: the fsyncs that follow (put_end) then find the batch's
     * files on their way to the disk and share their journal commits. */
    sync_file_range(p->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return 0;
}

/* Ends p: on rc 0 fsyncs the file, closes it and renames it over the target; on failure (or
 * when that fails) removes the temporary file. Returns rc, or -1 with errno. */
static int put_end(pending_t *p, int rc)
{
    int saved = errno;
    if (rc == 0 && fsync(p->fd) != 0)
        rc = -1, saved = errno;
    if (p->fd >= 0 && close(p->fd) != 0 && rc == 0)
        rc = -1, saved = errno;
    p->fd = -1;
    if (rc == 0 && rename(p->tmp, p->path) != 0)
        rc = -1, saved = errno;
    if (rc != 0 && p->tmp[0])
        unlink(p->tmp);
    errno = saved; /* ENOSPC tells the server the store is full */
    return rc;
}

static int fs_put(blob_t *b, const char *key, const void *data, size_t len);

/* Writes every image to its temporary file, then fsyncs each and renames it over its target
 * (readers see the old image or the whole new one), then fsyncs each directory that got a new
 * name once: a batch of images costs one fsync each plus one per directory. */
static void fs_put_many(blob_t *b, blob_item_t *items, size_t n)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    pending_t one, *p = n > 1 ? calloc(n, sizeof *p) : &one;
    for (size_t i = 0; i < n; i++) {
        if (!p) {
            items[i].rc = fs_put(b, items[i].key, items[i].data, items[i].len);
            items[i].err = items[i].rc == 0 ? 0 : errno;
            continue;
        }
        items[i].rc = put_begin(fs, &items[i], &p[i]);
        items[i].err = items[i].rc == 0 ? 0 : errno;
    }
    for (size_t i = 0; p && i < n; i++) {
        items[i].rc = put_end(&p[i], items[i].rc);
        items[i].err = items[i].rc == 0 ? 0 : errno;
    }
    for (size_t i = 0; p && i < n; i++) {
        int synced = items[i].rc != 0;
        for (size_t k = 0; k < i && !synced; k++)
            synced = items[k].rc == 0 && strcmp(p[k].dir, p[i].dir) == 0;
        if (!synced)
            fsync_dir(p[i].dir);
    }
    if (p != &one)
        free(p);
}

static int fs_put(blob_t *b, const char *key, const void *data, size_t len)
{
    blob_item_t item = {.key = key, .data = data, .len = len};
    fs_put_many(b, &item, 1);
    errno = item.err;
    return item.rc;
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
    .put_many = fs_put_many,
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

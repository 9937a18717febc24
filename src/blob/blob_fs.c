/* blob_fs.c: the filesystem image store. Images live in ONE SQLite database, images.db in the
 * root directory (WAL, synchronous=FULL), keyed by their key ("jobs/<id>.png"): a batch of
 * images is one transaction and one fsync, where a file per image cost an inode, an fsync and a
 * rename each (and the kernel's inode allocation was about half the server's CPU at a few hundred
 * completes a second). Images stored as files under the root by earlier versions are still
 * served, found and deleted. The server serves images at /images/<key> (blob_read) and receives
 * worker uploads at PUT /internal/v1/jobs/<id>/image or in the complete itself. A reader sees
 * the whole image or none; an acknowledged put survives a power loss. */
#include "blob/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/job.h"
#include "core/wire.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/sqlmem.h"

#define BLOB_KEY_MAX 512 /* bytes; keys are short ("jobs/<uuid>.png") */
#define BLOB_URL_MAX 4096
#define IMAGES_DB "images.db" /* in the root; never a key's file (see legacy_key) */
/* Page caches of images.db's connections, in KiB: small, images go through them once. */
#define WRITE_CACHE_KIB 1024
#define READ_CACHE_KIB 256
#define RECLAIM_EVERY 256  /* deletions between looks at the free list */
#define RECLAIM_PAGES 2048 /* free pages (8 MiB of 4 KiB pages) worth giving back */

/* A connection to images.db and its prepared statements, used under mu by one thread at a time. */
typedef struct imgconn {
    sqlite3 *db;
    pthread_mutex_t mu;
    sqlite3_stmt *stmt[10]; /* by S_ id */
} imgconn_t;

typedef struct blob_fs {
    blob_t base;       /* first: a blob_t * is a blob_fs_t * */
    char *root;        /* owned; no trailing slash unless it is "/" */
    char *public_base; /* owned; NULL when unset; no trailing slash */
    char *server_url;  /* owned; NULL when unset; no trailing slash */
    imgconn_t w;       /* writes: puts from the complete writer and upload handlers, deletes */
    imgconn_t r;       /* reads (WAL: never waits for the writer's fsync) */
    unsigned deletes;  /* under w.mu */
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

/* ---------- the images database ---------- */

enum { S_BEGIN, S_COMMIT, S_ROLLBACK, S_PUT, S_DEL, S_FREE, S_GET, S_HAS, S_LAZY, S_FULL };
static const char *const stmt_sql[] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_PUT] = "INSERT OR REPLACE INTO images (key, stored_at, data) VALUES (?1, ?2, ?3)",
    [S_DEL] = "DELETE FROM images WHERE key = ?1",
    [S_FREE] = "PRAGMA freelist_count",
    [S_GET] = "SELECT data FROM images WHERE key = ?1",
    [S_HAS] = "SELECT 1 FROM images WHERE key = ?1",
    [S_LAZY] = "PRAGMA synchronous = NORMAL",
    [S_FULL] = "PRAGMA synchronous = FULL",
};

/* The statement id of c, prepared on first use and reset; NULL when it cannot be prepared. */
static sqlite3_stmt *stmt(imgconn_t *c, int id)
{
    if (c->stmt[id]) {
        sqlite3_reset(c->stmt[id]);
        sqlite3_clear_bindings(c->stmt[id]);
        return c->stmt[id];
    }
    if (sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[id],
                           NULL) != SQLITE_OK) {
        log_error("event=image_db_error op=prepare err=\"%s\"", sqlite3_errmsg(c->db));
        c->stmt[id] = NULL;
    }
    return c->stmt[id];
}

/* The errno for SQLite result rc on c: ENOSPC (or EDQUOT) when the disk is full, as the file
 * store answered, so the server knows the image store is full. */
static int sql_errno(imgconn_t *c, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return ENOSPC;
    case SQLITE_IOERR: {
        int e = sqlite3_system_errno(c->db);
        return e == ENOSPC || e == EDQUOT ? e : EIO;
    }
    case SQLITE_NOMEM:
        return ENOMEM;
    case SQLITE_TOOBIG:
        return EFBIG;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EAGAIN;
    default:
        return EIO;
    }
}

/* Steps the statement id of c with key bound (and, for S_PUT, the item's data) to its first
 * row or its end. SQLITE_ROW, SQLITE_DONE or the error. */
static int run(imgconn_t *c, int id, const char *key, const blob_item_t *item)
{
    sqlite3_stmt *st = stmt(c, id);
    if (!st)
        return SQLITE_ERROR;
    if (key)
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (item) {
        sqlite3_bind_int64(st, 2, clock_now_ms() / 1000);
        /* never NULL: an empty image is an empty blob */
        sqlite3_bind_blob(st, 3, item->len ? item->data : "", (int)item->len, SQLITE_STATIC);
    }
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE && (rc & 0xff) != SQLITE_FULL)
        log_error("event=image_db_error sql=\"%s\" err=\"%s\"", stmt_sql[id],
                  sqlite3_errmsg(c->db));
    return rc;
}

/* A key written before images.db (one file per image) is read from, and deleted as, its file.
 * The database's own files are never such a key. 1 or 0. */
static int legacy_key(const char *key)
{
    return strncmp(key, IMAGES_DB, strlen(IMAGES_DB)) != 0;
}

/* Marks the items before items+n that were stored as failed with err: their transaction is gone. */
static void unstore(blob_item_t *items, size_t n, int err)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].rc == 0)
            items[i].rc = -1, items[i].err = err;
}

/* Stores every image in ONE transaction of the write connection: one fsync of the write-ahead
 * log for the whole batch (a reader sees the old image or the whole new one, and every image
 * acknowledged has been synced). An item with a bad key fails alone; a storage error fails
 * every item the transaction held. */
static void fs_put_many(blob_t *b, blob_item_t *items, size_t n)
{
    imgconn_t *w = &((blob_fs_t *)b)->w;
    pthread_mutex_lock(&w->mu);
    int rc = run(w, S_BEGIN, NULL, NULL);
    int err = rc == SQLITE_DONE ? 0 : sql_errno(w, rc); /* set: the transaction is gone */
    for (size_t i = 0; i < n; i++) {
        blob_item_t *it = &items[i];
        it->rc = -1;
        if (!key_is_safe(it->key) || (it->len > 0 && !it->data)) {
            it->err = EINVAL;
        } else if (it->len > INT_MAX) {
            it->err = EFBIG;
        } else if (err) {
            it->err = err;
        } else if ((rc = run(w, S_PUT, it->key, it)) == SQLITE_DONE) {
            it->rc = it->err = 0;
        } else {
            it->err = sql_errno(w, rc);
            if (sqlite3_get_autocommit(w->db)) { /* SQLite rolled the whole transaction back */
                err = it->err;
                unstore(items, i, err);
            } /* else that statement alone was undone */
        }
    }
    if (!err && (rc = run(w, S_COMMIT, NULL, NULL)) != SQLITE_DONE)
        unstore(items, n, sql_errno(w, rc));
    if (!sqlite3_get_autocommit(w->db))
        run(w, S_ROLLBACK, NULL, NULL);
    pthread_mutex_unlock(&w->mu);
}

static int fs_put(blob_t *b, const char *key, const void *data, size_t len)
{
    blob_item_t item = {.key = key, .data = data, .len = len};
    fs_put_many(b, &item, 1);
    errno = item.err;
    return item.rc;
}

/* Looks key up in images.db: 1 (with the image in *data, *len when data is not NULL), 0 when
 * it is not there, -1 with errno on error. */
static int db_get(blob_fs_t *fs, const char *key, void **data, size_t *len)
{
    imgconn_t *r = &fs->r;
    pthread_mutex_lock(&r->mu);
    int rc = run(r, data ? S_GET : S_HAS, key, NULL), found = -1, err = 0;
    if (rc == SQLITE_ROW && data) {
        int n = sqlite3_column_bytes(r->stmt[S_GET], 0);
        const void *p = sqlite3_column_blob(r->stmt[S_GET], 0);
        *data = malloc(n > 0 ? (size_t)n : 1);
        if (*data) {
            if (n > 0)
                memcpy(*data, p, (size_t)n);
            *len = (size_t)n;
            found = 1;
        } else {
            err = ENOMEM;
        }
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        found = rc == SQLITE_ROW;
    } else {
        err = sql_errno(r, rc);
    }
    sqlite3_reset(r->stmt[data ? S_GET : S_HAS]); /* ends the read transaction */
    pthread_mutex_unlock(&r->mu);
    errno = err;
    return found;
}

/* Reads the whole file at path (the layout before images.db) into *data, *len (malloc'd). 0, or
 * -1 with errno (ENOENT when there is no such regular file). */
static int file_read(const char *path, void **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno = errno == ELOOP || errno == ENOTDIR ? ENOENT : errno, -1;
    struct stat st;
    unsigned char *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        errno = ENOENT;
        goto fail;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf)
        goto fail;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errno = n == 0 ? EIO : errno;
            goto fail;
        }
        got += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = got;
    return 0;
fail:;
    int saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return -1;
}

/* The image of key into *data (malloc'd; caller frees) and *len: from images.db, else from its
 * file in the layout before it. 0, or -1 with errno (ENOENT: no such image; EINVAL: bad key). */
static int fs_read(blob_t *b, const char *key, void **data, size_t *len)
{
    char path[PATH_MAX];
    *data = NULL;
    *len = 0;
    if (!key_is_safe(key))
        return errno = EINVAL, -1;
    int found = db_get((blob_fs_t *)b, key, data, len);
    if (found != 0)
        return found == 1 ? 0 : -1;
    if (!legacy_key(key) || fs_local_path(b, key, path, sizeof path) != 0)
        return errno = ENOENT, -1;
    return file_read(path, data, len);
}

static int fs_exists(blob_t *b, const char *key)
{
    char path[PATH_MAX];
    if (!key_is_safe(key))
        return -1;
    int found = db_get((blob_fs_t *)b, key, NULL, NULL);
    if (found != 0 || !legacy_key(key))
        return found;
    if (fs_local_path(b, key, path, sizeof path) != 0)
        return -1;
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    return S_ISREG(st.st_mode) ? 1 : 0;
}

/* Gives the free pages of images.db back to the file system when they are many (after
 * retention purges): auto_vacuum=INCREMENTAL keeps them in the free list, where new images
 * reuse them, until then. */
static void reclaim(imgconn_t *w)
{
    if (run(w, S_FREE, NULL, NULL) != SQLITE_ROW)
        return;
    int free_pages = sqlite3_column_int(w->stmt[S_FREE], 0);
    sqlite3_reset(w->stmt[S_FREE]);
    if (free_pages >= RECLAIM_PAGES &&
        sqlite3_exec(w->db, "PRAGMA incremental_vacuum", NULL, NULL, NULL) != SQLITE_OK)
        log_warn("event=image_db_vacuum_failed err=\"%s\"", sqlite3_errmsg(w->db));
}

/* Deletes key from images.db and its file from the layout before it. 0 or -1. */
static int fs_delete(blob_t *b, const char *key)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    char path[PATH_MAX];
    if (fs_local_path(b, key, path, sizeof path) != 0)
        return -1;
    pthread_mutex_lock(&fs->w.mu);
    /* A deletion is not synced on its own: the next put's commit syncs the log, and it with
     * it (a power loss before that keeps the image, as an unlinked file's name could survive
     * one). So a retention purge costs no fsync per image. */
    run(&fs->w, S_LAZY, NULL, NULL);
    int rc = run(&fs->w, S_DEL, key, NULL);
    int err = rc == SQLITE_DONE ? 0 : sql_errno(&fs->w, rc);
    int deleted = rc == SQLITE_DONE && sqlite3_changes(fs->w.db) > 0;
    run(&fs->w, S_FULL, NULL, NULL);
    if (deleted && ++fs->deletes % RECLAIM_EVERY == 0)
        reclaim(&fs->w);
    pthread_mutex_unlock(&fs->w.mu);
    if (err) {
        errno = err;
        return -1;
    }
    if (legacy_key(key) && unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR)
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

/* Finalizes c's statements and closes its connection (a no-op on one never opened). */
static void conn_close(imgconn_t *c)
{
    for (size_t i = 0; i < sizeof c->stmt / sizeof c->stmt[0]; i++)
        sqlite3_finalize(c->stmt[i]);
    if (c->db)
        sqlite3_close(c->db);
    pthread_mutex_destroy(&c->mu);
}

static void fs_close(blob_t *b)
{
    blob_fs_t *fs = (blob_fs_t *)b;
    conn_close(&fs->r);
    conn_close(&fs->w);
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
    .read = fs_read,
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

/* Syncs a directory so a name created inside it survives a crash. */
static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Opens c on path with the page cache cache_kib and the rest of setup (SQL run once). 0, or -1
 * with err. */
static int conn_open(imgconn_t *c, const char *path, int flags, int cache_kib, const char *setup,
                     char *err, size_t errlen)
{
    char *sql = sqlite3_mprintf("PRAGMA cache_size = -%d; %s", cache_kib, setup);
    int rc = sql ? sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL) : SQLITE_NOMEM;
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(c->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    if (rc == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "cannot open the image database %s: %s", path,
             c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
    return -1;
}

/* Opens (creating) root/images.db: the write connection, which sets the database up, and the
 * read connection. auto_vacuum must be chosen before the first table. 0, or -1 with err. */
static int db_open(blob_fs_t *fs, char *err, size_t errlen)
{
    sqlmem_setup();
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", strcmp(fs->root, "/") ? fs->root : "", IMAGES_DB);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "image directory path is too long");
        return -1;
    }
    if (conn_open(&fs->w, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, WRITE_CACHE_KIB,
                  "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;"
                  " PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 16777216;"
                  " CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY,"
                  " stored_at INTEGER NOT NULL, data BLOB NOT NULL);",
                  err, errlen) != 0 ||
        conn_open(&fs->r, path, SQLITE_OPEN_READWRITE, READ_CACHE_KIB, "PRAGMA query_only = ON;",
                  err, errlen) != 0)
        return -1;
    fsync_dir(fs->root); /* the database's own name, made durable once */
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
    pthread_mutex_init(&fs->w.mu, NULL);
    pthread_mutex_init(&fs->r.mu, NULL);
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
    if (db_open(fs, err, errlen) != 0)
        goto fail;
    return &fs->base;
fail:
    fs_close(&fs->base);
    return NULL;
}

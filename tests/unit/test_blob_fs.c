/* test_blob_fs.c: the filesystem image store and the blob_open dispatcher. */
#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blob/blob.h"
#include "t.h"

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pingvas-blob-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
}

static void remove_tmpdir(void)
{
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens a store rooted at a fresh, not yet existing, nested directory under tmpdir. */
static blob_t *open_store(const char *public_base, const char *server_url, char *root,
                          size_t rootlen)
{
    char err[512] = "";
    make_tmpdir();
    snprintf(root, rootlen, "%s/images/nested", tmpdir);
    blob_t *b = blob_fs_open(root, public_base, server_url, err, sizeof err);
    if (!b)
        fprintf(stderr, "blob_fs_open: %s\n", err);
    return b;
}

/* 1 when key's image reads back as exactly data/len. */
static int reads_back(blob_t *b, const char *key, const void *data, size_t len)
{
    void *got = NULL;
    size_t n = 0;
    int ok =
        blob_read(b, key, &got, &n) == 0 && n == len && (len == 0 || memcmp(got, data, len) == 0);
    free(got);
    return ok;
}

/* The names in dir other than "." and "..", counted; *db set when images.db is among them. */
static int dir_entries(const char *dir, int *db)
{
    DIR *d = opendir(dir);
    int entries = 0;
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            entries++;
            if (db && strcmp(e->d_name, "images.db") == 0)
                *db = 1;
        }
    closedir(d);
    return entries;
}

static void test_put_read_exists(void)
{
    char root[300], path[1024];
    blob_t *b = open_store(NULL, "http://localhost:8080", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    struct stat st;
    CHECK(stat(root, &st) == 0 && S_ISDIR(st.st_mode)); /* created, parents too */
    CHECK_INT(blob_exists(b, "jobs/abc.png"), 0);
    void *got = (void *)1;
    size_t n = 1;
    CHECK_INT(blob_read(b, "jobs/abc.png", &got, &n), -1);
    CHECK_INT(errno, ENOENT);
    CHECK(got == NULL && n == 0);
    const char data[] = "\x89PNG fake image bytes";
    CHECK_INT(blob_put(b, "jobs/abc.png", data, sizeof data), 0);
    CHECK_INT(blob_exists(b, "jobs/abc.png"), 1);
    CHECK_INT(blob_exists(b, "jobs"), 0); /* a prefix is not a blob */
    CHECK(reads_back(b, "jobs/abc.png", data, sizeof data));
    /* The path the key's file had before images.db. */
    CHECK_INT(blob_local_path(b, "jobs/abc.png", path, sizeof path), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s/jobs/abc.png", root);
    CHECK_STR(path, want);

    /* Replacing gives the whole new image; empty images and deep keys are images too. */
    CHECK_INT(blob_put(b, "jobs/abc.png", "xy", 2), 0);
    CHECK(reads_back(b, "jobs/abc.png", "xy", 2));
    CHECK_INT(blob_put(b, "a/b/c/d.png", "z", 1), 0);
    CHECK_INT(blob_exists(b, "a/b/c/d.png"), 1);
    CHECK_INT(blob_put(b, "empty.png", NULL, 0), 0);
    CHECK_INT(blob_exists(b, "empty.png"), 1);
    CHECK(reads_back(b, "empty.png", "", 0));
    /* A large image (many database pages) comes back byte for byte. */
    size_t big = 3 * 1024 * 1024 + 17;
    unsigned char *buf = malloc(big);
    CHECK(buf != NULL);
    if (buf) {
        for (size_t i = 0; i < big; i++)
            buf[i] = (unsigned char)(i * 131 + (i >> 9));
        CHECK_INT(blob_put(b, "jobs/big.png", buf, big), 0);
        CHECK(reads_back(b, "jobs/big.png", buf, big));
    }

    /* No file per image: the root holds the database (and its WAL files) only. */
    int db = 0;
    CHECK(dir_entries(root, &db) >= 1);
    CHECK(db);
    snprintf(path, sizeof path, "%s/jobs", root);
    CHECK(access(path, F_OK) != 0);
    blob_close(b);

    /* Reopening an existing root works and sees the data. */
    char err[512] = "";
    b = blob_open(root, NULL, NULL, err, sizeof err);
    CHECK(b != NULL);
    if (b) {
        CHECK_INT(blob_exists(b, "jobs/abc.png"), 1);
        CHECK(reads_back(b, "jobs/abc.png", "xy", 2));
        if (buf)
            CHECK(reads_back(b, "jobs/big.png", buf, big));
        blob_close(b);
    }
    free(buf);
    remove_tmpdir();
}

/* A batch stores each item with its own result: a bad key fails alone. */
static void test_put_many(void)
{
    char root[300];
    blob_t *b = open_store(NULL, "http://h", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    blob_item_t items[] = {
        {.key = "jobs/1.png", .data = "one", .len = 3},
        {.key = "../escape.png", .data = "bad", .len = 3},
        {.key = "jobs/2.png", .data = "two!", .len = 4},
        {.key = "jobs/3.png", .data = NULL, .len = 5},  /* no data for 5 bytes */
        {.key = "jobs/1.png", .data = "uno", .len = 3}, /* the same key later in the batch wins */
        {.key = "jobs/4.png", .data = "", .len = 0},
    };
    size_t n = sizeof items / sizeof items[0];
    for (size_t i = 0; i < n; i++)
        items[i].rc = items[i].err = 99;
    blob_put_many(b, items, n);
    CHECK_INT(items[0].rc, 0);
    CHECK_INT(items[0].err, 0);
    CHECK_INT(items[1].rc, -1);
    CHECK_INT(items[1].err, EINVAL);
    CHECK_INT(items[2].rc, 0);
    CHECK_INT(items[3].rc, -1);
    CHECK_INT(items[3].err, EINVAL);
    CHECK_INT(items[4].rc, 0);
    CHECK_INT(items[5].rc, 0);
    CHECK(reads_back(b, "jobs/1.png", "uno", 3));
    CHECK(reads_back(b, "jobs/2.png", "two!", 4));
    CHECK(reads_back(b, "jobs/4.png", "", 0));
    CHECK_INT(blob_exists(b, "jobs/3.png"), 0);
    char outside[512];
    snprintf(outside, sizeof outside, "%s/images/escape.png", tmpdir);
    CHECK(access(outside, F_OK) != 0);
    blob_put_many(b, items, 0); /* an empty batch is fine */
    blob_close(b);
    remove_tmpdir();
}

/* Images stored as files under the root (the layout before images.db) are still read, found
 * and deleted; the database's own files are never served as a key. */
static void test_files_of_older_layout(void)
{
    char root[300], path[1024];
    blob_t *b = open_store(NULL, "http://h", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    snprintf(path, sizeof path, "%s/jobs", root);
    CHECK(mkdir(path, 0755) == 0);
    CHECK_INT(blob_local_path(b, "jobs/old.png", path, sizeof path), 0);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite("old image", 1, 9, f);
        fclose(f);
    }
    CHECK_INT(blob_exists(b, "jobs/old.png"), 1);
    CHECK(reads_back(b, "jobs/old.png", "old image", 9));
    /* A new put of the same key goes to the database, which wins. */
    CHECK_INT(blob_put(b, "jobs/old.png", "new", 3), 0);
    CHECK(reads_back(b, "jobs/old.png", "new", 3));
    CHECK_INT(blob_delete(b, "jobs/old.png"), 0); /* both go */
    CHECK(access(path, F_OK) != 0);
    CHECK_INT(blob_exists(b, "jobs/old.png"), 0);
    /* A directory or a symlink is not an image. */
    snprintf(path, sizeof path, "%s/jobs/dir.png", root);
    CHECK(mkdir(path, 0755) == 0);
    CHECK_INT(blob_exists(b, "jobs/dir.png"), 0);
    void *got = NULL;
    size_t n = 0;
    CHECK_INT(blob_read(b, "jobs/dir.png", &got, &n), -1);
    CHECK_INT(errno, ENOENT);
    snprintf(path, sizeof path, "%s/jobs/link.png", root);
    CHECK(symlink("/etc/passwd", path) == 0);
    CHECK_INT(blob_exists(b, "jobs/link.png"), 0);
    CHECK_INT(blob_read(b, "jobs/link.png", &got, &n), -1);
    /* The database file is never a key's file. */
    CHECK_INT(blob_exists(b, "images.db"), 0);
    CHECK_INT(blob_read(b, "images.db", &got, &n), -1);
    CHECK_INT(blob_delete(b, "images.db"), 0);
    snprintf(path, sizeof path, "%s/images.db", root);
    CHECK(access(path, F_OK) == 0);
    CHECK(got == NULL);
    blob_close(b);
    remove_tmpdir();
}

static void test_unsafe_keys_rejected(void)
{
    char root[300], path[1024];
    blob_t *b = open_store(NULL, "http://h", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    char longkey[2000];
    memset(longkey, 'a', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    const char *bad[] = {"../x",    "a/../../b", "/etc/passwd", "a\\b",  "",
                         "..",      ".",         "a/./b",       "a//b",  "a/",
                         ".hidden", "x/..",      "a\nb.png",    "a\x7f", "jobs/.x.png.tmp-123456",
                         longkey};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(blob_local_path(b, bad[i], path, sizeof path), -1);
        CHECK_INT(blob_put(b, bad[i], "x", 1), -1);
        CHECK_INT(blob_exists(b, bad[i]), -1);
        CHECK_INT(blob_delete(b, bad[i]), -1);
        void *got = NULL;
        size_t n = 0;
        CHECK_INT(blob_read(b, bad[i], &got, &n), -1);
        CHECK(got == NULL);
        char *url = blob_public_url(b, bad[i]);
        CHECK(url == NULL);
        free(url);
    }
    CHECK_INT(blob_local_path(b, NULL, path, sizeof path), -1);
    /* A path that does not fit the caller's buffer is an error, not a truncation. */
    char tiny[8];
    CHECK_INT(blob_local_path(b, "jobs/abc.png", tiny, sizeof tiny), -1);
    /* Nothing escaped the root. */
    char outside[512];
    snprintf(outside, sizeof outside, "%s/images/x", tmpdir);
    CHECK(access(outside, F_OK) != 0);
    blob_close(b);
    remove_tmpdir();
}

static void test_upload_target(void)
{
    char root[300];
    blob_t *b = open_store(NULL, "http://10.0.0.5:8080/", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    upload_target_t t;
    CHECK_INT(blob_upload_target(b, "jobs/j-1.png", "j-1", 600, &t), 0);
    CHECK_STR(t.method, "PUT");
    CHECK_STR(t.url, "http://10.0.0.5:8080/internal/v1/jobs/j-1/image");
    CHECK_INT(t.needs_lease, 1);
    CHECK_INT(blob_upload_target(b, "jobs/j-1.png", "../x", 600, &t), -1);
    CHECK_INT(blob_upload_target(b, "jobs/j-1.png", "", 600, &t), -1);
    CHECK_INT(blob_upload_target(b, "../j-1.png", "j-1", 600, &t), -1);
    blob_close(b);
    remove_tmpdir();

    /* Without a server URL there is nowhere to upload to. */
    b = open_store(NULL, NULL, root, sizeof root);
    CHECK(b != NULL);
    if (b) {
        CHECK_INT(blob_upload_target(b, "jobs/j-1.png", "j-1", 600, &t), -1);
        blob_close(b);
    }
    remove_tmpdir();
}

static void test_public_url(void)
{
    char root[300];
    struct {
        const char *public_base, *server_url, *key, *want;
    } cases[] = {
        {NULL, "http://localhost:8080", "jobs/a.png", "http://localhost:8080/images/jobs/a.png"},
        {NULL, "http://localhost:8080/", "jobs/a.png", "http://localhost:8080/images/jobs/a.png"},
        {"", "http://s", "jobs/a.png", "http://s/images/jobs/a.png"},
        {"https://cdn.example.com/img", "http://s", "jobs/a.png",
         "https://cdn.example.com/img/jobs/a.png"},
        {"https://cdn.example.com/img/", "http://s", "jobs/a.png",
         "https://cdn.example.com/img/jobs/a.png"},
        {"https://cdn.example.com/", NULL, "jobs/a b.png",
         "https://cdn.example.com/jobs/a%20b.png"},
        {NULL, NULL, "jobs/a.png", "/images/jobs/a.png"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        blob_t *b = open_store(cases[i].public_base, cases[i].server_url, root, sizeof root);
        CHECK(b != NULL);
        if (!b)
            continue;
        char *url = blob_public_url(b, cases[i].key);
        CHECK_STR(url, cases[i].want);
        free(url);
        blob_close(b);
        remove_tmpdir();
    }
}

static void test_open_dispatch(void)
{
    char err[512], url[400];
    make_tmpdir();
    snprintf(url, sizeof url, "file://%s/via-url", tmpdir);
    blob_t *b = blob_open(url, NULL, "http://s", err, sizeof err);
    CHECK(b != NULL);
    if (b) {
        char path[1024], want[1024];
        CHECK_INT(blob_local_path(b, "k.png", path, sizeof path), 0);
        snprintf(want, sizeof want, "%s/via-url/k.png", tmpdir);
        CHECK_STR(path, want);
        blob_close(b);
    }
    snprintf(url, sizeof url, "file://localhost%s/via-host", tmpdir);
    b = blob_open(url, NULL, "http://s", err, sizeof err);
    CHECK(b != NULL);
    blob_close(b);

    err[0] = '\0';
    /* s3:// goes to the S3 store (test_blob_s3.c); without credentials it names them. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK(blob_open("s3://bucket/prefix", NULL, "http://s", err, sizeof err) == NULL);
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID") != NULL);
    CHECK(blob_open("ftp://x/y", NULL, "http://s", err, sizeof err) == NULL);
    CHECK(strstr(err, "ftp://x/y") != NULL);
    CHECK(blob_open("file://relative/dir", NULL, "http://s", err, sizeof err) == NULL);
    CHECK(strstr(err, "absolute") != NULL);
    CHECK(blob_open("", NULL, "http://s", err, sizeof err) == NULL);
    CHECK(blob_open(NULL, NULL, "http://s", err, sizeof err) == NULL);
    blob_close(NULL);
    remove_tmpdir();
}

static void test_unwritable_root(void)
{
    char err[512] = "", path[400];
    make_tmpdir();
    /* A regular file where a parent directory should be: fails even when running as root. */
    snprintf(path, sizeof path, "%s/file", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    snprintf(path, sizeof path, "%s/file/images", tmpdir);
    CHECK(blob_fs_open(path, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, path) != NULL);
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/ro", tmpdir);
        CHECK(mkdir(path, 0555) == 0);
        err[0] = '\0';
        CHECK(blob_fs_open(path, NULL, NULL, err, sizeof err) == NULL);
        CHECK(strstr(err, path) != NULL && strstr(err, "not writable") != NULL);
        chmod(path, 0755);
    }
    remove_tmpdir();
}

/* delete removes a blob; a missing one is fine; an unsafe key is refused. */
static void test_delete(void)
{
    char root[300];
    blob_t *b = open_store(NULL, "http://h", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    CHECK_INT(blob_put(b, "jobs/a.png", "png", 3), 0);
    CHECK_INT(blob_delete(b, "jobs/a.png"), 0);
    CHECK_INT(blob_exists(b, "jobs/a.png"), 0);
    CHECK_INT(blob_delete(b, "jobs/a.png"), 0); /* already gone: fine */
    CHECK_INT(blob_delete(b, "never/was.png"), 0);
    CHECK_INT(blob_delete(b, "../etc/passwd"), -1);
    /* Deleted images' pages are reused, and given back once many are free: the file does not
     * grow without bound under put-and-delete churn. */
    static unsigned char img[64 * 1024];
    memset(img, 0x5a, sizeof img);
    char key[64], path[1024];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 300; i++) {
            snprintf(key, sizeof key, "jobs/%d.png", i);
            CHECK_INT(blob_put(b, key, img, sizeof img), 0);
        }
        for (int i = 0; i < 300; i++) {
            snprintf(key, sizeof key, "jobs/%d.png", i);
            CHECK_INT(blob_delete(b, key), 0);
        }
    }
    snprintf(path, sizeof path, "%s/images.db", root);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    /* 300 images of 64 KiB are about 19 MiB: without the free pages given back the file
     * stays that big; the last reclaim (at the 768th delete) leaves about 132 images' worth. */
    CHECK(st.st_size < 12 * 1024 * 1024);
    CHECK_INT(blob_exists(b, "jobs/0.png"), 0);
    blob_close(b);
    remove_tmpdir();
}

/* Writes a filler file in dir until the file system is full. 0 or -1. */
static int fill_disk(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/filler", dir);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    setvbuf(f, NULL, _IONBF, 0);
    static const char zero[4096];
    for (size_t chunk = sizeof zero; chunk > 0; chunk /= 2)
        while (fwrite(zero, 1, chunk, f) == chunk)
            ;
    int full = ferror(f) && errno == ENOSPC;
    fclose(f);
    return full ? 0 : -1;
}

/* The child of test_full_disk, in a mount namespace of its own with a 1 MiB tmpfs as the root of
 * the store. Returns its count of failed checks (or 1 when the tmpfs cannot be mounted). */
static int full_disk_child(void)
{
    char root[400], filler[420], err[512] = "";
    snprintf(root, sizeof root, "%s/full", tmpdir);
    snprintf(filler, sizeof filler, "%s/filler", root);
    int flags = CLONE_NEWNS | (geteuid() != 0 ? CLONE_NEWUSER : 0);
    if (mkdir(root, 0700) != 0 || unshare(flags) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", root, "tmpfs", 0, "size=1m") != 0) {
        perror("test_full_disk: a tmpfs in a mount namespace");
        return 1;
    }
    blob_t *b = blob_fs_open(root, NULL, "http://h", err, sizeof err);
    CHECK(b != NULL);
    if (!b)
        return t_failed_checks;
    static unsigned char img[64 * 1024];
    memset(img, 0xa5, sizeof img);
    CHECK_INT(blob_put(b, "jobs/kept.png", img, 1000), 0);
    CHECK_INT(fill_disk(root), 0);
    blob_item_t items[] = {{.key = "jobs/a.png", .data = img, .len = sizeof img},
                           {.key = "/bad", .data = img, .len = 1},
                           {.key = "jobs/b.png", .data = img, .len = sizeof img}};
    blob_put_many(b, items, 3);
    CHECK_INT(items[0].rc, -1);
    CHECK_INT(items[0].err, ENOSPC);
    CHECK_INT(items[1].err, EINVAL);
    CHECK_INT(items[2].rc, -1);
    CHECK_INT(items[2].err, ENOSPC);
    errno = 0;
    CHECK_INT(blob_put(b, "jobs/c.png", img, sizeof img), -1);
    CHECK_INT(errno, ENOSPC);
    CHECK_INT(blob_exists(b, "jobs/a.png"), 0);
    CHECK(reads_back(b, "jobs/kept.png", img, 1000));
    /* Space again: puts succeed, nothing lost. */
    CHECK(unlink(filler) == 0);
    CHECK_INT(blob_put(b, "jobs/c.png", img, sizeof img), 0);
    CHECK(reads_back(b, "jobs/c.png", img, sizeof img));
    CHECK(reads_back(b, "jobs/kept.png", img, 1000));
    blob_close(b);
    return t_failed_checks;
}

/* A full disk: every item of a batch, and a single put, fail with ENOSPC (what the server's
 * storage_full answer and /readyz rely on); freeing space lets puts succeed again. The store
 * lives on a small tmpfs mounted in a child process's own mount namespace. */
static void test_full_disk(void)
{
    make_tmpdir();
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(full_disk_child() ? 1 : 0);
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    remove_tmpdir();
}

#define TESTS(X)                                                                                   \
    X(test_put_read_exists)                                                                        \
    X(test_put_many)                                                                               \
    X(test_files_of_older_layout)                                                                  \
    X(test_delete)                                                                                 \
    X(test_full_disk)                                                                              \
    X(test_unsafe_keys_rejected)                                                                   \
    X(test_upload_target)                                                                          \
    X(test_public_url)                                                                             \
    X(test_open_dispatch)                                                                          \
    X(test_unwritable_root)
#include "t_main.h"

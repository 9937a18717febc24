/* test_blob_fs.c: the filesystem image store and the blob_open dispatcher. */
#include <dirent.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static void test_put_exists_local_path(void)
{
    char root[300], path[1024];
    blob_t *b = open_store(NULL, "http://localhost:8080", root, sizeof root);
    CHECK(b != NULL);
    if (!b)
        return;
    struct stat st;
    CHECK(stat(root, &st) == 0 && S_ISDIR(st.st_mode)); /* created, parents too */
    CHECK_INT(blob_exists(b, "jobs/abc.png"), 0);
    const char data[] = "\x89PNG fake image bytes";
    CHECK_INT(blob_put(b, "jobs/abc.png", data, sizeof data), 0);
    CHECK_INT(blob_exists(b, "jobs/abc.png"), 1);
    CHECK_INT(blob_exists(b, "jobs"), 0); /* a directory is not a blob */
    CHECK_INT(blob_local_path(b, "jobs/abc.png", path, sizeof path), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s/jobs/abc.png", root);
    CHECK_STR(path, want);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        char buf[64];
        size_t n = fread(buf, 1, sizeof buf, f);
        CHECK_INT(n, sizeof data);
        CHECK(memcmp(buf, data, sizeof data) == 0);
        fclose(f);
    }
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);

    /* Overwrite replaces the whole content; deep keys create their directories. */
    CHECK_INT(blob_put(b, "jobs/abc.png", "xy", 2), 0);
    CHECK(stat(path, &st) == 0 && st.st_size == 2);
    CHECK_INT(blob_put(b, "a/b/c/d.png", "z", 1), 0);
    CHECK_INT(blob_exists(b, "a/b/c/d.png"), 1);
    CHECK_INT(blob_put(b, "empty.png", NULL, 0), 0);
    CHECK_INT(blob_exists(b, "empty.png"), 1);

    /* No temporary files are left behind. */
    char jobs[1024];
    snprintf(jobs, sizeof jobs, "%s/jobs", root);
    DIR *d = opendir(jobs);
    CHECK(d != NULL);
    int entries = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                entries++;
                CHECK(e->d_name[0] != '.');
            }
        closedir(d);
    }
    CHECK_INT(entries, 1);
    blob_close(b);

    /* Reopening an existing root works and sees the data. */
    char err[512] = "";
    b = blob_open(root, NULL, NULL, err, sizeof err);
    CHECK(b != NULL);
    if (b) {
        CHECK_INT(blob_exists(b, "jobs/abc.png"), 1);
        blob_close(b);
    }
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
    CHECK_INT(blob_delete(b, "../etc/passwd"), -1);
    blob_close(b);
    remove_tmpdir();
}

#define TESTS(X)                                                                                   \
    X(test_put_exists_local_path)                                                                  \
    X(test_delete)                                                                                 \
    X(test_unsafe_keys_rejected)                                                                   \
    X(test_upload_target)                                                                          \
    X(test_public_url)                                                                             \
    X(test_open_dispatch)                                                                          \
    X(test_unwritable_root)
#include "t_main.h"

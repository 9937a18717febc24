/* test_images.c: image keys (unguessable, the /images/ pattern), finding and discarding uploads. */
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/images.h"
#include "t.h"

static void test_keys(void)
{
    char k[IMAGE_KEY_MAX], k2[IMAGE_KEY_MAX], id[64];
    CHECK_INT(image_key("secret-one", "abc-1", k, sizeof k), 0);
    CHECK(strncmp(k, "jobs/abc-1-", 11) == 0 && strlen(k) == 11 + 32 + 4);
    CHECK_INT(image_key("secret-one", "abc-1", k2, sizeof k2), 0);
    CHECK_STR(k, k2); /* the same for every replica and attempt */
    CHECK_INT(image_key("secret-two", "abc-1", k2, sizeof k2), 0);
    CHECK(strcmp(k, k2) != 0); /* unguessable without the secret */
    CHECK_INT(image_key("s", "abc-1", k2, 20), -1);
    CHECK_INT(image_key_job(k, id, sizeof id), 0);
    CHECK_STR(id, "abc-1");
    CHECK_INT(image_key_job("jobs/abc-1.png", id, sizeof id), 0); /* the key before the tag */
    CHECK_STR(id, "abc-1");
    static const char *bad[] = {"jobs/.png",
                                "jobs/a/b.png",
                                "jobs/a.png.x",
                                "worker_token",
                                "pingvas.db",
                                "staging/a.png",
                                "jobs/a.PNG",
                                "jobs/../a.png",
                                "xjobs/a.png",
                                "jobs/a b.png",
                                "",
                                "jobs/a.pngx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(image_key_job(bad[i], id, sizeof id), -1);
    CHECK_INT(image_key_job("jobs/abcdef.png", id, 4), -1); /* id longer than the buffer */
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void test_uploaded_discard(void)
{
    char dir[] = "/tmp/pingvas-images-XXXXXX", err[256], key[IMAGE_KEY_MAX], found[IMAGE_KEY_MAX];
    CHECK(mkdtemp(dir) != NULL);
    blob_t *b = blob_fs_open(dir, NULL, "http://h", err, sizeof err);
    CHECK(b != NULL);
    if (!b)
        return;
    image_secrets_t sec = {"sec", NULL}, rotated = {"new", "sec"};
    CHECK_INT(image_uploaded(b, &sec, "j1", found), 0);
    CHECK_INT(blob_put(b, "jobs/j1.png", "old", 3), 0); /* the old key is no upload */
    CHECK_INT(image_uploaded(b, &sec, "j1", found), 0);
    image_key("sec", "j1", key, sizeof key);
    CHECK_INT(blob_put(b, key, "png", 3), 0);
    CHECK_INT(image_uploaded(b, &sec, "j1", found), 1);
    CHECK_STR(found, key);
    /* uploaded before a rotation of the secret: still found under the previous one */
    found[0] = '\0';
    CHECK_INT(image_uploaded(b, &rotated, "j1", found), 1);
    CHECK_STR(found, key);
    CHECK_INT(image_discard(b, &rotated, "j1"), 0);
    CHECK_INT(blob_exists(b, key), 0);
    CHECK_INT(blob_exists(b, "jobs/j1.png"), 0);
    CHECK_INT(image_discard(b, &sec, "j1"), 0); /* nothing left: fine */
    blob_close(b);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define TESTS(X)                                                                                   \
    X(test_keys)                                                                                   \
    X(test_uploaded_discard)
#include "t_main.h"

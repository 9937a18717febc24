/* test_random.c: random_bytes' per-thread pool (core/job.h): draws that cross the pool's refills
 * never repeat, draws larger than the pool, random_hex's text, job_new_id's UUIDs, and a forked
 * child that never hands out the bytes its parent hands out next. */
#include "t.h"

#include <sys/wait.h>
#include <unistd.h>

#include "core/job.h"

static void test_draws_do_not_repeat(void)
{
    enum { N = 2000, W = 10 }; /* 20,000 bytes: about 80 refills of the pool */
    static unsigned char d[N][W];
    for (int i = 0; i < N; i++)
        random_bytes(d[i], W);
    int same = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            same += memcmp(d[i], d[j], W) == 0;
    CHECK_INT(same, 0);
    unsigned char big[1000], zero[1000] = {0};
    random_bytes(big, sizeof big);
    CHECK(memcmp(big, zero, sizeof big) != 0);
}

static void test_random_hex(void)
{
    char a[65], b[65];
    random_hex(a, 32);
    random_hex(b, 32);
    CHECK_INT(strlen(a), 64);
    CHECK_INT(strspn(a, "0123456789abcdef"), 64);
    CHECK(strcmp(a, b) != 0);
    random_hex(a, 0);
    CHECK_STR(a, "");
}

/* job_new_id: a UUID version 7 as 8-4-4-4-12 lowercase hex digits, its first 48 bits the
 * creation time in milliseconds, version 7, variant 10; two ids differ. */
static void test_job_new_id(void)
{
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE];
    job_new_id(a, INT64_C(0x0123456789ab));
    job_new_id(b, INT64_C(0x0123456789ab));
    CHECK_INT(strlen(a), 36);
    CHECK(strncmp(a, "01234567-89ab-7", 15) == 0);
    CHECK(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    CHECK(strchr("89ab", a[19]) != NULL);
    for (int i = 0; i < 36; i++)
        if (i != 8 && i != 13 && i != 18 && i != 23)
            CHECK(strchr("0123456789abcdef", a[i]) != NULL && a[i] != '\0');
    CHECK(strcmp(a, b) != 0);
}

/* Without the fork handler, the child's first draw would be the bytes its parent draws next (both
 * start from the same copy of the pool). */
static void test_fork_child_draws_other_bytes(void)
{
    unsigned char warm[8], mine[16], child[16];
    random_bytes(warm, sizeof warm); /* the pool holds unused bytes now */
    int fd[2];
    CHECK_INT(pipe(fd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned char b[16];
        random_bytes(b, sizeof b);
        _exit(write(fd[1], b, sizeof b) == (ssize_t)sizeof b ? 0 : 1);
    }
    CHECK(pid > 0);
    random_bytes(mine, sizeof mine);
    CHECK_INT(read(fd[0], child, sizeof child), (long long)sizeof child);
    int status = 1;
    waitpid(pid, &status, 0);
    CHECK_INT(status, 0);
    CHECK(memcmp(mine, child, sizeof mine) != 0);
    close(fd[0]);
    close(fd[1]);
}

#define TESTS(X)                                                                                   \
    X(test_draws_do_not_repeat)                                                                    \
    X(test_random_hex) X(test_job_new_id) X(test_fork_child_draws_other_bytes)
#include "t_main.h"

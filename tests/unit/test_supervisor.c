/* test_supervisor.c: supervisor_new under allocation failure (strdup is replaced in this binary,
 * which the static core library links to, so that the Nth copy fails), and the start deadline:
 * a worker process that never says it started is killed and restarted, one that did is left. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/clock.h"
#include "scale/supervisor.h"
#include "t.h"

static int strdup_fail_at = -1; /* the strdup call (0-based) that returns NULL; -1: none */
static int strdup_calls;

char *strdup(const char *s)
{
    if (strdup_calls++ == strdup_fail_at)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void test_argv_copy_failure_is_an_error(void)
{
    static const char *const args[] = {"--backend", "synthetic", "--time-scale", "0", NULL};
    int gpus[1] = {0};
    for (int fail = 0; fail < 4; fail++) {
        strdup_calls = 0;
        strdup_fail_at = fail;
        supervisor_t *s = supervisor_new("/bin/true", "http://127.0.0.1:1", "t", args, gpus, 0);
        if (s)
            fprintf(stderr, "strdup %d failed and the supervisor was made anyway\n", fail);
        CHECK(s == NULL); /* never a worker started with its argv cut short */
        supervisor_free(s);
    }
    strdup_fail_at = -1;
    supervisor_t *s = supervisor_new("/bin/true", "http://127.0.0.1:1", "t", args, gpus, 0);
    CHECK(s != NULL);
    supervisor_free(s);
}

/* A stand-in worker: a shell script that ignores the worker's arguments, optionally says what a
 * worker says first on its status pipe, and then waits. Its path in buf: a directory of its own
 * under the working directory (the build tree; /tmp may be mounted noexec). */
static void fake_worker(char *buf, size_t size, const char *first_word)
{
    char cwd[512], dir[600];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(dir, sizeof dir, "%s/pingvas-sup-XXXXXX", cwd);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(buf, size, "%s/worker.sh", dir);
    FILE *f = fopen(buf, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "#!/bin/sh\n");
    if (first_word)
        fprintf(f, "printf %s >&\"$PINGVAS_STATUS_FD\"\n", first_word);
    fprintf(f, "exec sleep 300\n");
    fclose(f);
    chmod(buf, 0700);
}

/* Removes fake_worker's script and its directory. */
static void fake_worker_remove(char *exe)
{
    unlink(exe);
    char *slash = strrchr(exe, '/');
    if (slash) {
        *slash = '\0';
        rmdir(exe);
    }
}

/* The one live standard worker's info, after ticking until cond holds or 10 s of real time. */
static sup_worker_info_t tick_until(supervisor_t *s, int (*cond)(const sup_worker_info_t *))
{
    sup_worker_info_t w;
    memset(&w, 0, sizeof w);
    for (int i = 0; i < 1000; i++) {
        supervisor_tick(s);
        if (supervisor_list(s, "standard", &w, 1) == 1 && cond(&w))
            break;
        clock_sleep_ms(10);
    }
    return w;
}

static int running(const sup_worker_info_t *w)
{
    return w->pid > 0;
}

static int not_running(const sup_worker_info_t *w)
{
    return w->pid == 0;
}

static int ready(const sup_worker_info_t *w)
{
    return w->ready_ms != 0;
}

static void test_silent_start_is_killed_and_restarted(void)
{
    char exe[700];
    fake_worker(exe, sizeof exe, NULL);
    supervisor_t *s = supervisor_new(exe, "http://127.0.0.1:1", "t", NULL, NULL, 0);
    CHECK(s != NULL);
    supervisor_set_target(s, "standard", 1);
    sup_worker_info_t w = tick_until(s, running);
    pid_t first = w.pid;
    CHECK(first > 0);
    clock_advance_ms(SUP_START_DEADLINE_MS - 1000);
    supervisor_tick(s);
    CHECK(kill(first, 0) == 0); /* not yet */
    clock_advance_ms(1000);
    w = tick_until(s, not_running); /* killed at the deadline, then reaped */
    CHECK_INT(w.pid, 0);
    CHECK(kill(first, 0) != 0);
    clock_advance_ms(1000); /* the crash backoff */
    w = tick_until(s, running);
    CHECK(w.pid > 0 && w.pid != first);
    supervisor_stop_all(s, 100);
    supervisor_free(s);
    fake_worker_remove(exe);
}

static void test_started_worker_is_left_to_load(void)
{
    char exe[700];
    fake_worker(exe, sizeof exe, "SR"); /* started, then its model loaded */
    supervisor_t *s = supervisor_new(exe, "http://127.0.0.1:1", "t", NULL, NULL, 0);
    CHECK(s != NULL);
    supervisor_set_target(s, "standard", 1);
    sup_worker_info_t w = tick_until(s, ready);
    CHECK(w.pid > 0 && w.ready_ms != 0);
    clock_advance_ms(10 * SUP_START_DEADLINE_MS);
    supervisor_tick(s);
    supervisor_tick(s);
    sup_worker_info_t again;
    CHECK_INT(supervisor_list(s, "standard", &again, 1), 1);
    CHECK_INT(again.pid, w.pid);
    CHECK(kill(w.pid, 0) == 0);
    supervisor_stop_all(s, 100);
    supervisor_free(s);
    fake_worker_remove(exe);
}

#define TESTS(X)                                                                                   \
    X(test_argv_copy_failure_is_an_error)                                                          \
    X(test_silent_start_is_killed_and_restarted)                                                   \
    X(test_started_worker_is_left_to_load)
#include "t_main.h"

#include "scale/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/job.h"
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"

#define MAX_ARGS 48

typedef struct slot {
    int used;
    int status_fd; /* read end of the worker's status pipe, or -1 */
    int heard;     /* a status byte came from this process (or it was killed for sending none) */
    char tier[16];
    sup_worker_info_t info;
    int restarts;
    int64_t restart_at; /* mono; 0 = none pending */
    int64_t backoff_ms;
} slot_t;

struct supervisor {
    pthread_mutex_t mu;
    char exe[1024];
    char server_url[512];
    char token[256];
    char *args[MAX_ARGS];
    int nargs;
    int gpus[SUP_MAX_SLOTS];
    int ngpus;
    int target[2]; /* standard, enterprise; -1 unmanaged */
    sup_cold_start_fn cold_fn;
    void *cold_arg;
    slot_t slots[SUP_MAX_SLOTS];
    int seq;
};

/* The tier's index; an unknown name counts as standard. */
static int tier_of(const char *tier)
{
    return tier_index(tier) > 0 ? tier_index(tier) : 0;
}

supervisor_t *supervisor_new(const char *exe, const char *server_url, const char *worker_token,
                             const char *const *worker_args, const int *gpus, int ngpus)
{
    supervisor_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->exe, sizeof s->exe, "%s", exe);
    snprintf(s->server_url, sizeof s->server_url, "%s", server_url);
    snprintf(s->token, sizeof s->token, "%s", worker_token);
    for (int i = 0; worker_args && worker_args[i] && s->nargs < MAX_ARGS - 1; i++)
        if (!(s->args[s->nargs++] = strdup(worker_args[i]))) { /* never a worker's argv cut short */
            supervisor_free(s);
            return NULL;
        }
    s->ngpus = ngpus > SUP_MAX_SLOTS ? SUP_MAX_SLOTS : ngpus;
    for (int i = 0; i < s->ngpus; i++)
        s->gpus[i] = gpus[i];
    s->target[0] = s->target[1] = -1;
    return s;
}

void supervisor_free(supervisor_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nargs; i++)
        free(s->args[i]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int gpu_in_use(supervisor_t *s, int gpu)
{
    for (int i = 0; i < SUP_MAX_SLOTS; i++)
        if (s->slots[i].used && s->slots[i].info.gpu == gpu)
            return 1;
    return 0;
}

/* What only the server needs: a worker holds no signing key, database or storage credential
 * (DESIGN section 1; issue 16, finding 8), so local workers do not inherit them. */
static const char *const server_only_env[] = {
    "JWT_SECRET",
    "JWT_SECRET_PREVIOUS",
    "PINGVAS_WORKER_TOKEN_PREVIOUS",
    "DATABASE_URL",
    "PGPASSWORD",
    "REDIS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
};

/* Whether environment entry e, whose name is its first n bytes, is named name. */
static int env_named(const char *e, size_t n, const char *name)
{
    return strlen(name) == n && strncmp(e, name, n) == 0;
}

/* 1 when the environment entry e ("NAME=value") names one a worker must not inherit from the
 * server or one worker_env sets itself. */
static int env_dropped(const char *e, int gpu)
{
    size_t n = strcspn(e, "=");
    for (size_t i = 0; i < sizeof server_only_env / sizeof server_only_env[0]; i++)
        if (env_named(e, n, server_only_env[i]))
            return 1;
    return env_named(e, n, "PINGVAS_STATUS_FD") || env_named(e, n, "PINGVAS_WORKER_TOKEN") ||
           (gpu >= 0 && env_named(e, n, "CUDA_VISIBLE_DEVICES"));
}

/* "name=value", malloc'd, or NULL. */
static char *env_entry(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 2;
    char *e = malloc(n);
    if (e)
        snprintf(e, n, "%s=%s", name, value);
    return e;
}

/* A worker's environment: envp (execve's), the server's own entries and the ones made here. */
typedef struct worker_env {
    char **envp;
    char *own[3]; /* PINGVAS_STATUS_FD, PINGVAS_WORKER_TOKEN, CUDA_VISIBLE_DEVICES (or NULL) */
} worker_env_t;

static void worker_env_free(worker_env_t *w)
{
    free(w->envp);
    for (int i = 0; i < 3; i++)
        free(w->own[i]);
}

/* The environment of the worker of slot sl: the server's, without what only the server needs,
 * with status_fd (its status pipe), the worker token and the slot's GPU. 0, or -1 when out of
 * memory. */
static int worker_env(const supervisor_t *s, const slot_t *sl, int status_fd, worker_env_t *w)
{
    char fd_s[16], gpu_s[16];
    snprintf(fd_s, sizeof fd_s, "%d", status_fd);
    snprintf(gpu_s, sizeof gpu_s, "%d", sl->info.gpu);
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    memset(w, 0, sizeof *w);
    w->envp = calloc(nenv + 4, sizeof *w->envp);
    w->own[0] = env_entry("PINGVAS_STATUS_FD", fd_s);
    w->own[1] = env_entry("PINGVAS_WORKER_TOKEN", s->token);
    if (sl->info.gpu >= 0)
        w->own[2] = env_entry("CUDA_VISIBLE_DEVICES", gpu_s);
    if (!w->envp || !w->own[0] || !w->own[1] || (sl->info.gpu >= 0 && !w->own[2])) {
        worker_env_free(w);
        return -1;
    }
    size_t ne = 0;
    for (size_t i = 0; i < nenv; i++)
        if (!env_dropped(environ[i], sl->info.gpu))
            w->envp[ne++] = environ[i];
    for (int i = 0; i < 3; i++)
        if (w->own[i])
            w->envp[ne++] = w->own[i];
    w->envp[ne] = NULL;
    return 0;
}

/* Forks and execs one worker into slot; returns 0 or -1. Caller holds mu.
 * The server has threads, so the child calls only async-signal-safe functions between fork and
 * exec (no malloc, no setenv: a lock another thread held at the fork would never be released in
 * the child); its environment is built before the fork (worker_env). */
static int spawn(supervisor_t *s, slot_t *sl)
{
    char *argv[MAX_ARGS + 12];
    int n = 0;
    argv[n++] = s->exe;
    argv[n++] = "worker";
    argv[n++] = "--server";
    argv[n++] = s->server_url;
    argv[n++] = "--tier";
    argv[n++] = sl->tier;
    argv[n++] = "--worker-id";
    argv[n++] = sl->info.worker_id;
    for (int i = 0; i < s->nargs; i++)
        argv[n++] = s->args[i];
    argv[n] = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        log_error("event=spawn_failed err=\"pipe: %s\"", strerror(errno));
        return -1;
    }
    worker_env_t env;
    if (worker_env(s, sl, pfd[1], &env) != 0) {
        log_error("event=spawn_failed err=\"out of memory\"");
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        /* The write end survives exec (under the number PINGVAS_STATUS_FD names); the worker
         * reports its state through it. */
        if (fcntl(pfd[1], F_SETFD, 0) != 0)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(s->exe, argv, env.envp);
        _exit(127);
    }
    int fork_errno = errno;
    worker_env_free(&env);
    close(pfd[1]);
    if (pid < 0) {
        log_error("event=spawn_failed err=\"%s\"", strerror(fork_errno));
        close(pfd[0]);
        return -1;
    }
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    if (sl->status_fd >= 0)
        close(sl->status_fd);
    sl->status_fd = pfd[0];
    sl->heard = 0;
    sl->info.pid = pid;
    sl->info.started_ms = clock_mono_ms();
    sl->info.ready_ms = 0;
    sl->info.first_claim_ms = 0;
    sl->info.state = 'S';
    sl->info.stopping = 0;
    sl->info.retiring = 0;
    log_info("event=worker_spawned worker=%s pid=%d tier=%s gpu=%d", sl->info.worker_id, (int)pid,
             sl->tier, sl->info.gpu);
    return 0;
}

static int live_count(supervisor_t *s, const char *tier)
{
    int n = 0;
    for (int i = 0; i < SUP_MAX_SLOTS; i++)
        if (s->slots[i].used && !s->slots[i].info.stopping && !s->slots[i].info.retiring &&
            strcmp(s->slots[i].tier, tier) == 0)
            n++;
    return n;
}

static int scale_up_locked(supervisor_t *s, const char *tier, int n)
{
    while (live_count(s, tier) < n) {
        slot_t *sl = NULL;
        for (int i = 0; i < SUP_MAX_SLOTS && !sl; i++)
            if (!s->slots[i].used)
                sl = &s->slots[i];
        int gpu = -1;
        if (s->ngpus > 0) {
            for (int g = 0; g < s->ngpus && gpu < 0; g++)
                if (!gpu_in_use(s, s->gpus[g]))
                    gpu = s->gpus[g];
            if (gpu < 0)
                break; /* never two workers on one GPU */
        }
        if (!sl)
            break;
        memset(sl, 0, sizeof *sl);
        sl->status_fd = -1;
        sl->used = 1;
        snprintf(sl->tier, sizeof sl->tier, "%s", tier);
        sl->info.gpu = gpu;
        sl->backoff_ms = 1000;
        snprintf(sl->info.worker_id, sizeof sl->info.worker_id, "local-%s-%d-%d", tier,
                 (int)getpid(), s->seq++);
        if (spawn(s, sl) != 0) {
            sl->used = 0;
            break;
        }
    }
    return live_count(s, tier);
}

int supervisor_scale_up(supervisor_t *s, const char *tier, int n)
{
    pthread_mutex_lock(&s->mu);
    int r = scale_up_locked(s, tier, n);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int supervisor_stop_worker(supervisor_t *s, const char *worker_id)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->used && strcmp(sl->info.worker_id, worker_id) == 0) {
            sl->info.stopping = 1;
            sl->restart_at = 0;
            if (sl->info.pid > 0)
                kill(sl->info.pid, SIGTERM);
            else
                sl->used = 0;
            log_info("event=worker_stop worker=%s pid=%d", worker_id, (int)sl->info.pid);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int supervisor_retire_worker(supervisor_t *s, const char *worker_id)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->used && !sl->info.stopping && strcmp(sl->info.worker_id, worker_id) == 0) {
            sl->info.retiring = 1;
            if (sl->info.pid > 0)
                kill(sl->info.pid, SIGUSR1);
            else
                sl->used = 0;
            log_info("event=worker_retire worker=%s pid=%d", worker_id, (int)sl->info.pid);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void supervisor_set_cold_start_hook(supervisor_t *s, sup_cold_start_fn fn, void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->cold_fn = fn;
    s->cold_arg = arg;
    pthread_mutex_unlock(&s->mu);
}

/* Reads state bytes from every worker's status pipe. Caller holds mu. */
static void read_status(supervisor_t *s)
{
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->used || sl->status_fd < 0)
            continue;
        char buf[64];
        ssize_t n;
        while ((n = read(sl->status_fd, buf, sizeof buf)) > 0) {
            for (ssize_t k = 0; k < n; k++) {
                char c = buf[k];
                sl->heard = 1;
                if (c != 'R' && c != 'I' && c != 'B')
                    continue;
                int64_t now = clock_mono_ms();
                if (c == 'R' && !sl->info.ready_ms)
                    sl->info.ready_ms = now;
                if (c == 'I' && !sl->info.first_claim_ms) {
                    sl->info.first_claim_ms = now;
                    if (!sl->info.ready_ms)
                        sl->info.ready_ms = now;
                    log_info("event=worker_cold_start worker=%s spawn_to_ready_ms=%lld "
                             "spawn_to_first_claim_ms=%lld",
                             sl->info.worker_id,
                             (long long)(sl->info.ready_ms - sl->info.started_ms),
                             (long long)(now - sl->info.started_ms));
                    if (s->cold_fn)
                        s->cold_fn(s->cold_arg, sl->tier, sl->info.worker_id,
                                   sl->info.ready_ms - sl->info.started_ms,
                                   now - sl->info.started_ms);
                }
                sl->info.state = c;
            }
        }
        if (n == 0) { /* the worker closed its end: it is exiting */
            close(sl->status_fd);
            sl->status_fd = -1;
        }
    }
}

int supervisor_count(supervisor_t *s, const char *tier)
{
    pthread_mutex_lock(&s->mu);
    int n = live_count(s, tier);
    pthread_mutex_unlock(&s->mu);
    return n;
}

int supervisor_list(supervisor_t *s, const char *tier, sup_worker_info_t *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < SUP_MAX_SLOTS && n < max; i++)
        if (s->slots[i].used && !s->slots[i].info.stopping && !s->slots[i].info.retiring &&
            strcmp(s->slots[i].tier, tier) == 0)
            out[n++] = s->slots[i].info;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void supervisor_set_target(supervisor_t *s, const char *tier, int n)
{
    pthread_mutex_lock(&s->mu);
    s->target[tier_of(tier)] = n;
    pthread_mutex_unlock(&s->mu);
}

int supervisor_target(supervisor_t *s, const char *tier)
{
    pthread_mutex_lock(&s->mu);
    int n = s->target[tier_of(tier)];
    pthread_mutex_unlock(&s->mu);
    return n;
}

void supervisor_tick(supervisor_t *s)
{
    pthread_mutex_lock(&s->mu);
    read_status(s);
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < SUP_MAX_SLOTS; i++) {
            slot_t *sl = &s->slots[i];
            if (!sl->used || sl->info.pid != pid)
                continue;
            sl->info.pid = 0;
            if (sl->status_fd >= 0) {
                close(sl->status_fd);
                sl->status_fd = -1;
            }
            if (sl->info.stopping || sl->info.retiring) {
                log_info("event=worker_exited worker=%s pid=%d (stopped)", sl->info.worker_id,
                         (int)pid);
                sl->used = 0;
                break;
            }
            int64_t up = clock_mono_ms() - sl->info.started_ms;
            if (up > 60000)
                sl->backoff_ms = 1000; /* it ran fine for a while: start the backoff over */
            if (WIFSIGNALED(status))
                log_warn("event=worker_crashed worker=%s pid=%d signal=%d restart_in_ms=%lld",
                         sl->info.worker_id, (int)pid, WTERMSIG(status), (long long)sl->backoff_ms);
            else
                log_warn("event=worker_exited worker=%s pid=%d status=%d restart_in_ms=%lld",
                         sl->info.worker_id, (int)pid, WEXITSTATUS(status),
                         (long long)sl->backoff_ms);
            sl->restart_at = clock_mono_ms() + sl->backoff_ms;
            sl->backoff_ms = sl->backoff_ms * 2 > 30000 ? 30000 : sl->backoff_ms * 2;
            sl->restarts++;
            break;
        }
    }
    int64_t now = clock_mono_ms();
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->used && sl->info.pid > 0 && !sl->heard && !sl->info.stopping &&
            now - sl->info.started_ms >= SUP_START_DEADLINE_MS) {
            log_warn("event=worker_start_stuck worker=%s pid=%d waited_ms=%lld msg=\"no word from "
                     "the process since its spawn; killed, to be restarted\"",
                     sl->info.worker_id, (int)sl->info.pid, (long long)(now - sl->info.started_ms));
            kill(sl->info.pid, SIGKILL);
            sl->heard = 1; /* once: its exit is reaped and restarted as a crash's */
        }
    }
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->used && sl->info.pid == 0 && !sl->info.stopping && sl->restart_at &&
            now >= sl->restart_at) {
            sl->restart_at = 0;
            if (spawn(s, sl) != 0)
                sl->restart_at = now + sl->backoff_ms;
        }
    }
    for (int t = 0; t < 2; t++)
        if (s->target[t] >= 0)
            scale_up_locked(s, tier_names[t], s->target[t]);
    pthread_mutex_unlock(&s->mu);
}

void supervisor_stop_all(supervisor_t *s, int64_t timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    s->target[0] = s->target[1] = -1;
    for (int i = 0; i < SUP_MAX_SLOTS; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->used) {
            sl->info.stopping = 1;
            if (sl->info.pid > 0)
                kill(sl->info.pid, SIGTERM);
            else
                sl->used = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    int64_t end = clock_mono_ms() + timeout_ms;
    for (;;) {
        supervisor_tick(s);
        int left = 0;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < SUP_MAX_SLOTS; i++)
            if (s->slots[i].used)
                left++;
        if (left && clock_mono_ms() >= end) {
            for (int i = 0; i < SUP_MAX_SLOTS; i++)
                if (s->slots[i].used && s->slots[i].info.pid > 0)
                    kill(s->slots[i].info.pid, SIGKILL);
        }
        pthread_mutex_unlock(&s->mu);
        if (!left)
            break;
        clock_sleep_ms(50);
    }
}

/* simulate.c: the fleet model of simulate.h. Time is integer milliseconds; events live in a
 * binary heap ordered by (time, sequence), so runs are deterministic. */
#include "scale/simulate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/job.h"
#include "backend/backend.h"
#include "scale/sim_rng.h"

enum ev_type { EV_READY, EV_DONE, EV_EVAL, EV_NOTICE, EV_RECLAIM, EV_CONSOLIDATE };
enum w_state { W_FREE = 0, W_START, W_IDLE, W_BUSY, W_DRAIN };
enum n_state { N_FREE = 0, N_ALIVE };

typedef struct ev {
    int64_t t;
    uint64_t seq;
    int type, id;
    uint32_t gen;
} ev_t;

typedef struct worker {
    int state, tier, node;
    uint32_t gen;
    int64_t job;       /* index while BUSY or DRAIN */
    int64_t job_start; /* ms */
    int64_t job_end;   /* ms */
    int64_t created;   /* ms */
} worker_t;

typedef struct node {
    int state, tier, worker; /* worker -1: empty */
    int interrupted, cached;
    uint32_t gen; /* bumped whenever a worker lands: stale consolidation checks are ignored */
    uint32_t incarnation;
    int64_t launched, up; /* ms */
} node_t;

typedef struct pool_rt {
    const sim_pool_t *cfg;
    autoscale_history_t history;
    int64_t *queue; /* ring of job indexes; the front is the next to run */
    size_t qhead, qlen, qcap;
    int replicas, idle, running; /* replicas: START+IDLE+BUSY; idle: START+IDLE */
    uint32_t eval_gen;
    int started; /* the policy has been evaluated once */
    double load_ms;
    double price_per_ms;
} pool_rt_t;

typedef struct sim {
    const sim_config_t *cfg;
    const sim_jobs_t *jobs;
    double *dur_ms;  /* per job: GPU time */
    double *wait_ms; /* per job: first start - arrival; < 0 before */
    ev_t *heap;
    size_t nheap, capheap;
    uint64_t seq, rng;
    worker_t *w;
    node_t *n;
    int nw, nn; /* slots allocated */
    pool_rt_t pool[SIM_TIERS];
    int64_t now;
    int64_t done, restarted, interruptions;
    int workers_alive, nodes_alive, max_workers;
    double busy_ms, node_ms[2], worker_ms, cost_closed, open_rate, open_base, work_ms_done;
    sim_point_t *tl;
    size_t ntl, captl;
    int64_t next_point;
    int oom;
} sim_t;

/* ---------- the event heap ---------- */

static int ev_less(const ev_t *a, const ev_t *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void ev_push(sim_t *s, int64_t t, int type, int id, uint32_t gen)
{
    if (s->nheap == s->capheap) {
        size_t ncap = s->capheap ? s->capheap * 2 : 256;
        ev_t *nh = realloc(s->heap, ncap * sizeof *nh);
        if (!nh) {
            s->oom = 1;
            return;
        }
        s->heap = nh;
        s->capheap = ncap;
    }
    ev_t e = {t, s->seq++, type, id, gen};
    size_t i = s->nheap++;
    while (i > 0 && ev_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static ev_t ev_pop(sim_t *s)
{
    ev_t top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && ev_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap > 0)
        s->heap[i] = last;
    return top;
}

/* ---------- queues, cost and the timeline ---------- */

static void queue_push(pool_rt_t *p, int64_t job, int front)
{
    if (front) {
        p->qhead = (p->qhead + p->qcap - 1) % p->qcap;
        p->queue[p->qhead] = job;
    } else {
        p->queue[(p->qhead + p->qlen) % p->qcap] = job;
    }
    p->qlen++;
}

static int64_t queue_pop(pool_rt_t *p)
{
    int64_t job = p->queue[p->qhead];
    p->qhead = (p->qhead + 1) % p->qcap;
    p->qlen--;
    return job;
}

static double cost_at(const sim_t *s, int64_t t)
{
    return s->cost_closed + s->open_rate * (double)t - s->open_base;
}

static void timeline_to(sim_t *s, int64_t t)
{
    int64_t step = (int64_t)llround(s->cfg->plot_step_s * 1000.0);
    if (step <= 0)
        return;
    for (; s->next_point <= t; s->next_point += step) {
        if (s->ntl == s->captl) {
            size_t ncap = s->captl ? s->captl * 2 : 1024;
            sim_point_t *nt = realloc(s->tl, ncap * sizeof *nt);
            if (!nt) {
                s->oom = 1;
                return;
            }
            s->tl = nt;
            s->captl = ncap;
        }
        int backlog = 0;
        for (int i = 0; i < SIM_TIERS; i++)
            backlog += (int)s->pool[i].qlen + s->pool[i].running;
        s->tl[s->ntl++] = (sim_point_t){(double)s->next_point / 1000.0, backlog, s->workers_alive,
                                        s->nodes_alive, cost_at(s, s->next_point)};
    }
}

/* ---------- nodes ---------- */

static int node_launch(sim_t *s, int tier)
{
    int i = 0;
    while (i < s->nn && s->n[i].state != N_FREE)
        i++;
    if (i == s->nn) {
        node_t *nn = realloc(s->n, (size_t)(s->nn * 2 + 16) * sizeof *nn);
        if (!nn) {
            s->oom = 1;
            return -1;
        }
        memset(nn + s->nn, 0, (size_t)(s->nn + 16) * sizeof *nn);
        s->n = nn;
        s->nn = s->nn * 2 + 16;
    }
    const sim_pool_t *pc = s->pool[tier].cfg;
    node_t *n = &s->n[i];
    double boot = pc->boot_min_s + (pc->boot_max_s - pc->boot_min_s) * sim_rng_unit(&s->rng);
    *n = (node_t){.state = N_ALIVE,
                  .tier = tier,
                  .worker = -1,
                  .gen = n->gen + 1,
                  .incarnation = n->incarnation + 1,
                  .launched = s->now,
                  .up = s->now + (int64_t)llround(boot * 1000.0)};
    s->nodes_alive++;
    s->open_rate += s->pool[tier].price_per_ms;
    s->open_base += s->pool[tier].price_per_ms * (double)s->now;
    if (pc->spot && pc->interruptions_per_node_hour > 0) {
        double h = sim_rng_exp(&s->rng, pc->interruptions_per_node_hour);
        if (h < SIM_MAX_HOURS * 4)
            ev_push(s, s->now + (int64_t)llround(h * 3600000.0), EV_NOTICE, i, n->incarnation);
    }
    return i;
}

static void node_terminate(sim_t *s, int i)
{
    node_t *n = &s->n[i];
    double life = (double)(s->now - n->launched), rate = s->pool[n->tier].price_per_ms;
    s->node_ms[s->pool[n->tier].cfg->spot ? 0 : 1] += life;
    s->cost_closed += rate * life;
    s->open_rate -= rate;
    s->open_base -= rate * (double)n->launched;
    s->nodes_alive--;
    n->state = N_FREE;
    n->gen++;
    n->incarnation++;
}

/* The node lost its worker: Karpenter removes it once it has been empty for consolidateAfter
 * (counted from when it is up), unless a worker lands first. */
static void node_emptied(sim_t *s, int i)
{
    node_t *n = &s->n[i];
    n->worker = -1;
    if (n->interrupted)
        return; /* reclaimed at the end of the notice */
    int64_t from = n->up > s->now ? n->up : s->now;
    ev_push(s, from + (int64_t)llround(s->pool[n->tier].cfg->consolidate_s * 1000.0),
            EV_CONSOLIDATE, i, n->gen);
}

/* ---------- workers ---------- */

static int worker_slot(sim_t *s)
{
    for (int i = 0; i < s->nw; i++)
        if (s->w[i].state == W_FREE)
            return i;
    int first = s->nw;
    worker_t *nw = realloc(s->w, (size_t)(first * 2 + 16) * sizeof *nw);
    if (!nw) {
        s->oom = 1;
        return -1;
    }
    memset(nw + first, 0, (size_t)(first + 16) * sizeof *nw);
    s->w = nw;
    s->nw = first * 2 + 16;
    return first;
}

/* A new replica: on an empty node of the pool that is not going away, else on a new node. */
static void worker_start(sim_t *s, int tier)
{
    int wi = worker_slot(s), ni = -1;
    if (wi < 0)
        return;
    for (int i = 0; i < s->nn && ni < 0; i++)
        if (s->n[i].state == N_ALIVE && s->n[i].tier == tier && s->n[i].worker < 0 &&
            !s->n[i].interrupted)
            ni = i;
    if (ni < 0 && (ni = node_launch(s, tier)) < 0)
        return;
    pool_rt_t *p = &s->pool[tier];
    node_t *n = &s->n[ni];
    int64_t from = n->up > s->now ? n->up : s->now;
    double prep = (n->cached ? 0 : p->cfg->pull_s * 1000.0) + p->load_ms;
    n->worker = wi;
    n->gen++;
    n->cached = 1;
    worker_t *w = &s->w[wi];
    *w = (worker_t){.state = W_START,
                    .tier = tier,
                    .node = ni,
                    .gen = w->gen + 1,
                    .job = -1,
                    .created = s->now};
    p->replicas++;
    p->idle++;
    s->workers_alive++;
    if (s->workers_alive > s->max_workers)
        s->max_workers = s->workers_alive;
    ev_push(s, from + (int64_t)llround(prep), EV_READY, wi, w->gen);
}

/* The worker process ends (stopped, drained or its node reclaimed). */
static void worker_gone(sim_t *s, int wi)
{
    worker_t *w = &s->w[wi];
    s->worker_ms += (double)(s->now - w->created);
    s->workers_alive--;
    w->state = W_FREE;
    w->gen++;
    node_emptied(s, w->node);
}

/* Accounts the run of the worker's job up to now (busy GPU time). */
static void job_ran(sim_t *s, worker_t *w)
{
    s->busy_ms += (double)(s->now - w->job_start);
}

/* Stops a replica (scale-down or interruption notice). A busy one drains: it finishes a job that
 * ends within the drain window, otherwise releases it to the front of the queue at once. */
static void worker_stop(sim_t *s, int wi)
{
    worker_t *w = &s->w[wi];
    pool_rt_t *p = &s->pool[w->tier];
    p->replicas--;
    if (w->state == W_START || w->state == W_IDLE) {
        p->idle--;
        worker_gone(s, wi);
        return;
    }
    if (w->state != W_BUSY)
        return;
    if (w->job_end - s->now <= (int64_t)llround(s->cfg->drain_s * 1000.0)) {
        w->state = W_DRAIN; /* EV_DONE ends it */
        return;
    }
    job_ran(s, w);
    queue_push(p, w->job, 1);
    p->running--;
    s->restarted++;
    worker_gone(s, wi);
}

/* Gives idle, ready workers of a tier the jobs at the front of its queue. */
static void dispatch(sim_t *s, int tier)
{
    pool_rt_t *p = &s->pool[tier];
    for (int i = 0; i < s->nw && p->qlen > 0; i++) {
        worker_t *w = &s->w[i];
        if (w->state != W_IDLE || w->tier != tier)
            continue;
        int64_t job = queue_pop(p);
        if (s->wait_ms[job] < 0)
            s->wait_ms[job] = (double)(s->now - s->jobs->v[job].at_ms);
        w->state = W_BUSY;
        w->job = job;
        w->job_start = s->now;
        w->job_end = s->now + (int64_t)llround(s->dur_ms[job]);
        p->idle--;
        p->running++;
        ev_push(s, w->job_end, EV_DONE, i, w->gen);
    }
}

/* ---------- the policy ---------- */

/* Picks the replica to stop: starting first, then idle, then (when allowed) busy; the newest of
 * its kind. -1 when none qualifies. */
static int pick_victim(sim_t *s, int tier, int allow_busy)
{
    static const int order[] = {W_START, W_IDLE, W_BUSY};
    for (int k = 0; k < (allow_busy ? 3 : 2); k++) {
        int best = -1;
        for (int i = 0; i < s->nw; i++)
            if (s->w[i].state == order[k] && s->w[i].tier == tier &&
                (best < 0 || s->w[i].created >= s->w[best].created))
                best = i;
        if (best >= 0)
            return best;
    }
    return -1;
}

static void evaluate(sim_t *s, int tier)
{
    pool_rt_t *p = &s->pool[tier];
    const autoscale_policy_t *pol = &p->cfg->policy;
    if (pol->max_replicas <= 0)
        return;
    p->started = 1;
    autoscale_metrics_t m = {.queued = (int64_t)p->qlen,
                             .running = p->running,
                             .current_replicas = p->replicas,
                             .idle_replicas = p->idle};
    autoscale_decision_t d;
    if (autoscale_decide(pol, &m, &p->history, s->now, &d) != 0)
        return; /* cannot happen with a validated policy and consistent counts */
    int local = pol->mode == AUTOSCALE_LOCAL;
    int stop = local ? (d.stop_idle > 0 ? d.stop_idle : 0) : p->replicas - d.desired_replicas;
    if (local && stop == 0 && d.desired_replicas < p->replicas)
        stop = p->replicas - d.desired_replicas;
    for (int i = p->replicas; i < d.desired_replicas; i++)
        worker_start(s, tier);
    for (int i = 0; i < stop; i++) {
        int v = pick_victim(s, tier, !local);
        if (v < 0)
            break;
        worker_stop(s, v);
    }
    dispatch(s, tier);
    if (d.next_eval_ms != AUTOSCALE_NO_DEADLINE && d.next_eval_ms > s->now)
        ev_push(s, d.next_eval_ms, EV_EVAL, tier, ++p->eval_gen);
}

/* ---------- events ---------- */

static void on_done(sim_t *s, int wi)
{
    worker_t *w = &s->w[wi];
    pool_rt_t *p = &s->pool[w->tier];
    job_ran(s, w);
    s->work_ms_done += s->dur_ms[w->job];
    s->done++;
    p->running--;
    w->job = -1;
    if (w->state == W_DRAIN) {
        worker_gone(s, wi);
    } else {
        w->state = W_IDLE;
        p->idle++;
    }
    dispatch(s, w->tier);
}

/* A spot interruption notice: the worker drains, the Deployment replaces it at once, and the
 * node is reclaimed when the notice runs out. */
static void on_notice(sim_t *s, int ni)
{
    node_t *n = &s->n[ni];
    s->interruptions++;
    n->interrupted = 1;
    ev_push(s, s->now + (int64_t)llround(s->cfg->notice_s * 1000.0), EV_RECLAIM, ni,
            n->incarnation);
    if (n->worker < 0)
        return;
    int tier = n->tier;
    worker_stop(s, n->worker);
    worker_start(s, tier);
}

static void on_reclaim(sim_t *s, int ni)
{
    node_t *n = &s->n[ni];
    int wi = n->worker;
    if (wi >= 0) { /* a drain longer than the notice: the job is lost with the node */
        worker_t *w = &s->w[wi];
        pool_rt_t *p = &s->pool[w->tier];
        job_ran(s, w);
        queue_push(p, w->job, 1);
        p->running--;
        s->restarted++;
        worker_gone(s, wi);
        dispatch(s, w->tier);
    }
    node_terminate(s, ni);
}

/* Handles one event; returns the tier whose policy should look again (local mode), or -1. */
static int handle(sim_t *s, const ev_t *e)
{
    switch (e->type) {
    case EV_READY:
        if (s->w[e->id].gen != e->gen || s->w[e->id].state != W_START)
            return -1;
        s->w[e->id].state = W_IDLE;
        dispatch(s, s->w[e->id].tier);
        return s->w[e->id].tier;
    case EV_DONE:
        if (s->w[e->id].gen != e->gen)
            return -1;
        on_done(s, e->id);
        return s->w[e->id].tier;
    case EV_EVAL:
        if (s->pool[e->id].eval_gen == e->gen)
            evaluate(s, e->id);
        return -1;
    case EV_NOTICE:
        if (s->n[e->id].state != N_ALIVE || s->n[e->id].incarnation != e->gen)
            return -1;
        on_notice(s, e->id);
        return s->n[e->id].tier;
    case EV_RECLAIM:
        if (s->n[e->id].state != N_ALIVE || s->n[e->id].incarnation != e->gen)
            return -1;
        on_reclaim(s, e->id);
        return s->n[e->id].tier;
    case EV_CONSOLIDATE:
        if (s->n[e->id].state == N_ALIVE && s->n[e->id].gen == e->gen && s->n[e->id].worker < 0)
            node_terminate(s, e->id);
        return -1;
    }
    return -1;
}

/* ---------- the run ---------- */

void sim_config_defaults(sim_config_t *c, autoscale_mode_t mode)
{
    memset(c, 0, sizeof *c);
    for (int t = 0; t < SIM_TIERS; t++) {
        sim_pool_t *p = &c->pool[t];
        p->policy = autoscale_policy_defaults(mode);
        p->gpu_profile = t == 0 ? "t4" : "a10g";
        p->spot = t == 0;
        p->boot_min_s = 45;
        p->boot_max_s = 90;
        p->pull_s = 20;
        p->load_s = -1;
        p->consolidate_s = t == 0 ? 30 : 300;
        p->interruptions_per_node_hour = t == 0 ? 0.01 : 0;
    }
    c->pool[1].policy.max_replicas = 5;
    c->drain_s = 90;
    c->notice_s = 120;
    c->hours = 24;
    c->seed = 1;
    c->time_scale = 1;
}

/* Job durations from the synthetic backend of each tier's profile; load times. */
static int sim_durations(sim_t *s, char *err, size_t errlen)
{
    for (int t = 0; t < SIM_TIERS; t++) {
        const sim_pool_t *pc = &s->cfg->pool[t];
        backend_config_t bc = {
            .name = "synthetic", .gpu_profile = pc->gpu_profile, .time_scale = s->cfg->time_scale};
        backend_t *b = backend_synthetic_create(&bc, err, errlen);
        if (!b)
            return -1;
        s->pool[t].load_ms =
            (pc->load_s >= 0 ? pc->load_s : backend_synthetic_load_seconds(b)) * 1000.0;
        for (size_t i = 0; i < s->jobs->n; i++) {
            const sim_job_t *j = &s->jobs->v[i];
            if (j->tier != t)
                continue;
            job_params_t jp = {.width = j->width, .height = j->height, .steps = j->steps};
            s->dur_ms[i] = b->ops->estimate_seconds(b, &jp) * 1000.0;
        }
        b->ops->destroy(b);
    }
    return 0;
}

static int sim_check(const sim_config_t *cfg, const sim_jobs_t *jobs, char *err, size_t errlen)
{
    const char *const *names = tier_names;
    int has[SIM_TIERS] = {0, 0};
    for (size_t i = 0; i < jobs->n; i++)
        has[jobs->v[i].tier != 0] = 1;
    for (int t = 0; t < SIM_TIERS; t++) {
        const sim_pool_t *p = &cfg->pool[t];
        char why[200];
        if (has[t] && p->policy.max_replicas <= 0) {
            snprintf(err, errlen, "the jobs include %s jobs but that tier has no workers (max 0)",
                     names[t]);
            return -1;
        }
        if (p->policy.max_replicas > 0 && autoscale_policy_validate(&p->policy, why, sizeof why)) {
            snprintf(err, errlen, "%s policy: %s", names[t], why);
            return -1;
        }
        if (!(p->boot_min_s >= 0 && p->boot_max_s >= p->boot_min_s && p->pull_s >= 0 &&
              p->consolidate_s >= 0 && p->interruptions_per_node_hour >= 0 &&
              p->price_gpu_hour >= 0 && p->boot_max_s < 86400 && p->pull_s < 86400)) {
            snprintf(err, errlen,
                     "%s pool: boot, pull, consolidation, interruption rate and "
                     "price must be >= 0 (boot and pull under a day)",
                     names[t]);
            return -1;
        }
    }
    if (!(cfg->hours > 0 && cfg->hours <= SIM_MAX_HOURS && cfg->drain_s >= 0 &&
          cfg->notice_s >= 0 && cfg->plot_step_s >= 0 && cfg->time_scale > 0)) {
        snprintf(err, errlen, "hours must be in (0, %g], drain and notice >= 0, time scale > 0",
                 SIM_MAX_HOURS);
        return -1;
    }
    return 0;
}

static int sim_init(sim_t *s, const sim_config_t *cfg, const sim_jobs_t *jobs, char *err,
                    size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->jobs = jobs;
    s->rng = cfg->seed ^ 0x666c656574ULL; /* "fleet": not the arrivals' stream */
    size_t n = jobs->n ? jobs->n : 1;
    s->dur_ms = calloc(n, sizeof *s->dur_ms);
    s->wait_ms = malloc(n * sizeof *s->wait_ms);
    for (int t = 0; t < SIM_TIERS; t++) {
        pool_rt_t *p = &s->pool[t];
        p->cfg = &cfg->pool[t];
        p->qcap = n + 1;
        p->queue = malloc(p->qcap * sizeof *p->queue);
        p->price_per_ms = p->cfg->price_gpu_hour / 3600000.0;
        autoscale_history_init(&p->history);
        if (!p->queue)
            s->oom = 1;
    }
    if (!s->dur_ms || !s->wait_ms || s->oom) {
        snprintf(err, errlen, "out of memory for %zu jobs", jobs->n);
        return -1;
    }
    for (size_t i = 0; i < jobs->n; i++)
        s->wait_ms[i] = -1;
    return sim_durations(s, err, errlen);
}

static void sim_free(sim_t *s)
{
    free(s->dur_ms);
    free(s->wait_ms);
    free(s->heap);
    free(s->w);
    free(s->n);
    free(s->tl);
    for (int t = 0; t < SIM_TIERS; t++)
        free(s->pool[t].queue);
}

static void advance(sim_t *s, int64_t t)
{
    timeline_to(s, t);
    s->now = t;
}

/* The event loop: arrivals from the sorted job list, everything else from the heap. Runs to the
 * horizon, and past it until every job has ended (bounded by 30 more days). */
static void sim_loop(sim_t *s)
{
    const int64_t horizon = (int64_t)llround(s->cfg->hours * 3600000.0);
    const int64_t hard_end = horizon + 30LL * 86400000;
    size_t next = 0;
    /* The controllers' clocks start with the first job of the tier (so a replay lines up with
     * docs/autoscaling.md), or at 0 when a minimum must be running from the start. */
    for (int t = 0; t < SIM_TIERS; t++)
        if (s->pool[t].cfg->policy.min_replicas > 0)
            evaluate(s, t);
    while (!s->oom) {
        int64_t ta = next < s->jobs->n ? s->jobs->v[next].at_ms : INT64_MAX;
        int64_t te = s->nheap ? s->heap[0].t : INT64_MAX;
        int64_t t = ta < te ? ta : te;
        if (t == INT64_MAX || t > hard_end ||
            (t > horizon && next == s->jobs->n && s->done == (int64_t)s->jobs->n))
            break;
        advance(s, t);
        int tier;
        if (te <= ta) {
            ev_t e = ev_pop(s);
            tier = handle(s, &e);
        } else {
            tier = s->jobs->v[next].tier;
            queue_push(&s->pool[tier], (int64_t)next, 0);
            next++;
            dispatch(s, tier);
        }
        if (tier >= 0 &&
            (s->pool[tier].cfg->policy.mode == AUTOSCALE_LOCAL || !s->pool[tier].started))
            evaluate(s, tier);
    }
    if (s->now < horizon)
        advance(s, horizon);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(p * (double)n);
    return v[k > 0 ? k - 1 : 0];
}

/* Ends the run at s->now (every node and worker still alive is paid up to here) and fills r. */
static void sim_finish(sim_t *s, sim_result_t *r)
{
    for (int i = 0; i < s->nw; i++)
        if (s->w[i].state != W_FREE)
            s->worker_ms += (double)(s->now - s->w[i].created);
    for (int i = 0; i < s->nn; i++)
        if (s->n[i].state == N_ALIVE)
            node_terminate(s, i);
    size_t nw = 0;
    for (size_t i = 0; i < s->jobs->n; i++)
        if (s->wait_ms[i] >= 0)
            s->wait_ms[nw++] = s->wait_ms[i] / 1000.0;
    qsort(s->wait_ms, nw, sizeof *s->wait_ms, cmp_double);
    double paid = s->node_ms[0] + s->node_ms[1];
    *r = (sim_result_t){
        .jobs = (int64_t)s->jobs->n,
        .completed = s->done,
        .cost_usd = s->cost_closed,
        .cost_per_1000_images = s->done ? s->cost_closed / (double)s->done * 1000.0 : 0,
        .lower_bound_usd = s->work_ms_done / 3600000.0 * s->cfg->lower_bound_gpu_hour,
        .gpu_utilization = paid > 0 ? s->busy_ms / paid : 0,
        .node_hours_spot = s->node_ms[0] / 3600000.0,
        .node_hours_on_demand = s->node_ms[1] / 3600000.0,
        .wait_p50_s = percentile(s->wait_ms, nw, 0.50),
        .wait_p95_s = percentile(s->wait_ms, nw, 0.95),
        .wait_p99_s = percentile(s->wait_ms, nw, 0.99),
        .interruptions = s->interruptions,
        .jobs_restarted = s->restarted,
        .max_workers = s->max_workers,
        .worker_seconds = s->worker_ms / 1000.0,
        .end_s = (double)s->now / 1000.0,
        .timeline = s->tl,
        .npoints = s->ntl,
    };
    s->tl = NULL;
}

int sim_run(const sim_config_t *cfg, const sim_jobs_t *jobs, sim_result_t *out, char *err,
            size_t errlen)
{
    memset(out, 0, sizeof *out);
    sim_t s;
    if (sim_check(cfg, jobs, err, errlen) != 0)
        return -1;
    int rc = sim_init(&s, cfg, jobs, err, errlen);
    if (rc == 0)
        sim_loop(&s);
    if (rc == 0 && s.oom) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    if (rc == 0)
        sim_finish(&s, out);
    sim_free(&s);
    return rc;
}

void sim_result_free(sim_result_t *r)
{
    free(r->timeline);
    r->timeline = NULL;
    r->npoints = 0;
}

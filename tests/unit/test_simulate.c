/* test_simulate.c: the fleet simulator: the arrivals grammar, traces, the price catalog,
 * determinism, and the policy engine's behaviour as the simulated fleet shows it. */
#include <stdlib.h>
#include <unistd.h>

#include "core/prices.h"
#include "scale/simulate.h"
#include "t.h"

static void test_grammar(void)
{
    sim_arrivals_t a;
    char err[256];
    CHECK_INT(sim_arrivals_parse("poisson:1.5", &a, err, sizeof err), 0);
    CHECK(a.kind == SIM_POISSON && a.rate == 1.5);
    CHECK_INT(sim_arrivals_parse("burst:0.5,20,2h,5m", &a, err, sizeof err), 0);
    CHECK(a.kind == SIM_BURST && a.rate == 0.5 && a.peak == 20 && a.every_s == 7200 &&
          a.length_s == 300);
    CHECK_INT(sim_arrivals_parse("diurnal:1.2,0.8", &a, err, sizeof err), 0);
    CHECK(a.kind == SIM_DIURNAL && a.rate == 1.2 && a.peak == 0.8 && a.peak_hour == 15);
    CHECK_INT(sim_arrivals_parse("diurnal:1,0.5,9", &a, err, sizeof err), 0);
    CHECK(a.peak_hour == 9);
    const char *bad[] = {"",
                         "poisson",
                         "poisson:",
                         "poisson:-1",
                         "poisson:1,2",
                         "poisson:abc",
                         "poisson:1e9",
                         "burst:1,2,3",
                         "burst:1,2,5m,10m", /* LENGTH > EVERY */
                         "burst:1,2,0s,0s",
                         "diurnal:1,1.5",
                         "diurnal:1,0.5,25",
                         "diurnal:1,0.5,3,4",
                         "uniform:3",
                         "poisson:nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(sim_arrivals_parse(bad[i], &a, err, sizeof err) == -1);
        CHECK(strstr(err, "--arrivals") != NULL);
    }
    CHECK(sim_arrivals_parse(NULL, &a, err, sizeof err) == -1);
}

static void test_generate(void)
{
    sim_arrivals_t a;
    char err[256];
    sim_shape_t shape = {512, 512, 20, 0.25};
    sim_jobs_t j1 = {0}, j2 = {0};
    CHECK_INT(sim_arrivals_parse("poisson:2", &a, err, sizeof err), 0);
    CHECK_INT(sim_arrivals_generate(&a, &shape, 1, 7, &j1, err, sizeof err), 0);
    CHECK(j1.n > 6500 && j1.n < 7900); /* 7200 expected */
    size_t ent = 0;
    for (size_t i = 0; i < j1.n; i++) {
        ent += j1.v[i].tier == 1;
        CHECK(i == 0 || j1.v[i].at_ms >= j1.v[i - 1].at_ms);
        CHECK(j1.v[i].at_ms < 3600000);
    }
    CHECK(ent > j1.n / 5 && ent < j1.n * 3 / 10);
    CHECK_INT(sim_arrivals_generate(&a, &shape, 1, 7, &j2, err, sizeof err), 0);
    CHECK(j1.n == j2.n && memcmp(j1.v, j2.v, j1.n * sizeof *j1.v) == 0);
    CHECK_INT(sim_arrivals_generate(&a, &shape, 1, 8, &j2, err, sizeof err), 0);
    CHECK(j1.n != j2.n || memcmp(j1.v, j2.v, j1.n * sizeof *j1.v) != 0);
    /* Bursts: between bursts the base rate, inside them the peak. */
    CHECK_INT(sim_arrivals_parse("burst:0.1,10,1h,6m", &a, err, sizeof err), 0);
    CHECK_INT(sim_arrivals_generate(&a, &shape, 2, 7, &j1, err, sizeof err), 0);
    size_t in = 0;
    for (size_t i = 0; i < j1.n; i++)
        in += j1.v[i].at_ms >= 3600000 && j1.v[i].at_ms < 3960000;
    CHECK(in > 3200 && in < 4000);             /* 3600 expected */
    CHECK(j1.n - in > 600 && j1.n - in < 900); /* 0.1/s over 6840 s: 684 */
    /* Diurnal: more at the peak hour than twelve hours away. */
    CHECK_INT(sim_arrivals_parse("diurnal:1,0.9,12", &a, err, sizeof err), 0);
    CHECK_INT(sim_arrivals_generate(&a, &shape, 24, 7, &j1, err, sizeof err), 0);
    size_t peak = 0, low = 0;
    for (size_t i = 0; i < j1.n; i++) {
        peak += j1.v[i].at_ms / 3600000 == 12;
        low += j1.v[i].at_ms / 3600000 == 0;
    }
    CHECK(peak > 5 * low);
    sim_jobs_free(&j1);
    sim_jobs_free(&j2);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_trace(void)
{
    char path[] = "/tmp/pingvas-trace-XXXXXX", err[512];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    sim_jobs_t j = {0};
    write_file(path, "time_s,tier,width,height,steps\n5.5,standard,512,512,20\n"
                     "1,enterprise,1024,768,30\n5.5,standard,64,64,1\n");
    CHECK_INT(sim_trace_load(path, &j, err, sizeof err), 0);
    CHECK_INT(j.n, 3);
    if (j.n == 3) {
        CHECK(j.v[0].at_ms == 1000 && j.v[0].tier == 1 && j.v[0].width == 1024);
        CHECK(j.v[1].at_ms == 5500 && j.v[1].steps == 20); /* equal times keep file order */
        CHECK(j.v[2].at_ms == 5500 && j.v[2].steps == 1);
    }
    CHECK_INT(sim_trace_write(path, &j), 0);
    sim_jobs_t k = {0};
    CHECK_INT(sim_trace_load(path, &k, err, sizeof err), 0);
    CHECK(k.n == j.n && memcmp(k.v, j.v, j.n * sizeof *j.v) == 0);
    const char *bad[][2] = {{"1,gold,512,512,20\n", ":1: tier"},
                            {"time_s,tier\n1,standard,500,512,20\n", ":2: width"},
                            {"1,standard,512,512,0\n", ":1: width"},
                            {"x,standard,512,512,20\n", ":1: expected"},
                            {"1,standard,512,512\n", ":1: expected"},
                            {"-1,standard,512,512,20\n", ":1: expected"},
                            {"# only a comment\n", "no jobs"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i][0]);
        err[0] = '\0';
        CHECK(sim_trace_load(path, &k, err, sizeof err) == -1);
        if (!strstr(err, bad[i][1]))
            fprintf(stderr, "  trace %zu: %s\n", i, err);
        CHECK(strstr(err, bad[i][1]) != NULL);
    }
    unlink(path);
    CHECK(sim_trace_load(path, &k, err, sizeof err) == -1 && strstr(err, path));
    sim_jobs_free(&j);
    sim_jobs_free(&k);
}

static void test_prices(void)
{
    price_catalog_t c;
    char err[256];
    prices_default(&c);
    CHECK_STR(c.region, "us-east-1");
    CHECK(c.date[0] && c.source[0]);
    const price_entry_t *e = prices_find(&c, "g4dn.xlarge");
    CHECK(e && e->on_demand == 0.526 && e->spot_low == 0.20 && e->spot_high == 0.22);
    CHECK(e && fabs(prices_gpu_hour(e, 1) - 0.21) < 1e-12 && prices_gpu_hour(e, 0) == 0.526);
    CHECK(prices_find(&c, "g5.8xlarge") && !prices_find(&c, "p5.48xlarge"));
    CHECK(prices_cheapest_spot_gpu_hour(&c) == 0.20);
    const char *ok = "region eu-west-1\ndate 2026-01-01\nsource test\n"
                     "p4d.24xlarge 8 32.77 9.0 12.0 # eight GPUs\n";
    CHECK_INT(prices_parse(ok, strlen(ok), &c, err, sizeof err), 0);
    CHECK(c.n == 1 && fabs(prices_gpu_hour(&c.e[0], 0) - 32.77 / 8) < 1e-12);
    const char *bad[] = {"region x\ndate y\nsource z\ng4 1 0.5 0.3 0.2\n", /* low > high */
                         "region x\ndate y\nsource z\ng4 0 0.5 0.2 0.3\n", /* no GPU */
                         "region x\ndate y\nsource z\ng4 1 0.5 0.2\n",
                         "region x\ndate y\nsource z\ng4 1 -1 0.2 0.3\n",
                         "region x\ndate y\nsource z\ng4 1 1 .2 .3\ng4 1 1 .2 .3\n",
                         "date y\nsource z\ng4 1 1 0.2 0.3\n", /* no region */
                         "region x\ndate y\nsource z\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(prices_parse(bad[i], strlen(bad[i]), &c, err, sizeof err) == -1);
    CHECK(prices_load("/nonexistent/prices.txt", &c, err, sizeof err) == -1);
}

/* A fleet with fixed times and nothing random unless asked. */
static sim_config_t fleet(autoscale_mode_t mode, double boot_s)
{
    sim_config_t c;
    sim_config_defaults(&c, mode);
    for (int t = 0; t < SIM_TIERS; t++) {
        c.pool[t].boot_min_s = c.pool[t].boot_max_s = boot_s;
        c.pool[t].interruptions_per_node_hour = 0;
        c.pool[t].price_gpu_hour = t == 0 ? 0.21 : 1.624;
    }
    c.lower_bound_gpu_hour = 0.20;
    c.hours = 1;
    return c;
}

static sim_jobs_t burst_at_zero(int n, int width, int steps)
{
    sim_jobs_t j = {calloc((size_t)n, sizeof(sim_job_t)), (size_t)n, (size_t)n};
    for (int i = 0; i < n && j.v; i++)
        j.v[i] = (sim_job_t){0, 0, width, width, steps};
    return j;
}

/* One job, local policy: every second of the cost is accounted for. */
static void test_one_job_cost(void)
{
    sim_config_t c = fleet(AUTOSCALE_LOCAL, 60);
    sim_jobs_t j = burst_at_zero(1, 512, 20);
    sim_result_t r;
    char err[256];
    CHECK_INT(sim_run(&c, &j, &r, err, sizeof err), 0);
    double job = 20 / 6.9 + 0.35;   /* the synthetic backend's t4 profile */
    double ready = 60 + 20 + 6;     /* boot, image pull, model load */
    double stop = ready + job + 30; /* local cooldown */
    double gone = stop + 30;        /* consolidateAfter */
    CHECK_INT(r.jobs, 1);
    CHECK_INT(r.completed, 1);
    CHECK_NEAR(r.wait_p50_s, ready, 1e-3);
    CHECK_NEAR(r.wait_p99_s, ready, 1e-3);
    CHECK_NEAR(r.worker_seconds, stop, 2e-3);
    CHECK_NEAR(r.node_hours_spot * 3600, gone, 2e-3);
    CHECK_NEAR(r.cost_usd, gone / 3600 * 0.21, 1e-6);
    CHECK_NEAR(r.cost_per_1000_images, r.cost_usd * 1000, 1e-9);
    CHECK_NEAR(r.lower_bound_usd, job / 3600 * 0.20, 1e-6);
    CHECK_NEAR(r.gpu_utilization, job / gone, 1e-4);
    CHECK_INT(r.max_workers, 1);
    CHECK(r.node_hours_on_demand == 0 && r.interruptions == 0 && r.jobs_restarted == 0);
    sim_jobs_free(&j);
}

/* keda from 0 with 100 long jobs: KEDA activates, then the HPA doubles every sync (the timeline
 * of docs/autoscaling.md): 1 at 0 s, 4 at 15 s, 8 at 30 s, 16 at 45 s, 20 at 60 s. local starts
 * all 20 at once. */
static void test_policy_scale_up(void)
{
    sim_config_t c = fleet(AUTOSCALE_KEDA, 0);
    c.plot_step_s = 1;
    sim_jobs_t j = burst_at_zero(100, 1024, 150); /* 87 s each on a t4 */
    sim_result_t r;
    char err[256];
    CHECK_INT(sim_run(&c, &j, &r, err, sizeof err), 0);
    const int at[] = {1, 16, 31, 46, 61}, want[] = {1, 4, 8, 16, 20};
    for (int i = 0; i < 5; i++)
        CHECK(r.npoints > 61 && r.timeline[at[i]].workers == want[i]);
    CHECK_INT(r.max_workers, 20);
    CHECK_INT(r.completed, 100);
    sim_result_free(&r);

    c = fleet(AUTOSCALE_LOCAL, 0);
    c.plot_step_s = 1;
    CHECK_INT(sim_run(&c, &j, &r, err, sizeof err), 0);
    CHECK(r.npoints > 2 && r.timeline[1].workers == 20);
    CHECK_INT(r.completed, 100);
    /* 5 rounds of 87.4 s after a 26 s start; the last 20 wait 4 rounds. */
    CHECK_NEAR(r.wait_p99_s, 26 + 4 * (150 / 6.9 * 4 + 0.35), 0.01);
    sim_result_free(&r);
    sim_jobs_free(&j);
}

/* The seed's queued-only metric scales a fleet busy with long jobs to 0: KEDA's cooldown runs
 * out while every job is running, the workers drain, cannot finish within 90 s and release
 * their jobs. The backlog metric (queued + running) does not. */
static void test_policy_queued_metric_restarts(void)
{
    sim_config_t c = fleet(AUTOSCALE_KEDA, 0);
    for (int t = 0; t < SIM_TIERS; t++) {
        c.pool[t].policy.cooldown_ms = 60000;
        c.pool[t].policy.target = 1;
    }
    sim_jobs_t j = burst_at_zero(3, 2048, 150); /* 348 s each */
    sim_result_t r;
    char err[256];
    CHECK_INT(sim_run(&c, &j, &r, err, sizeof err), 0);
    CHECK_INT(r.completed, 3);
    CHECK_INT(r.jobs_restarted, 0);
    c.pool[0].policy.metric = AUTOSCALE_METRIC_QUEUED;
    CHECK_INT(sim_run(&c, &j, &r, err, sizeof err), 0);
    CHECK(r.jobs_restarted >= 3);
    CHECK(r.completed < 3); /* every attempt is cut short again: the seed's pathology */
    sim_jobs_free(&j);
}

/* Spot interruptions: deterministic for a seed, different for another; each one drains or
 * restarts, and the lost capacity is replaced. */
static void test_determinism_and_interruptions(void)
{
    sim_config_t c = fleet(AUTOSCALE_KEDA, 60);
    c.pool[0].boot_min_s = 45;
    c.pool[0].boot_max_s = 90;
    c.pool[0].interruptions_per_node_hour = 3;
    c.hours = 6;
    sim_arrivals_t a;
    sim_shape_t shape = {512, 512, 50, 0.1};
    sim_jobs_t j = {0};
    char err[256];
    CHECK_INT(sim_arrivals_parse("diurnal:1,0.8,3", &a, err, sizeof err), 0);
    CHECK_INT(sim_arrivals_generate(&a, &shape, c.hours, 3, &j, err, sizeof err), 0);
    sim_result_t r1, r2, r3;
    CHECK_INT(sim_run(&c, &j, &r1, err, sizeof err), 0);
    CHECK_INT(sim_run(&c, &j, &r2, err, sizeof err), 0);
    CHECK(memcmp(&r1, &r2, sizeof r1) == 0);
    c.seed = 2;
    CHECK_INT(sim_run(&c, &j, &r3, err, sizeof err), 0);
    CHECK(r3.cost_usd != r1.cost_usd);
    CHECK_INT(r1.completed, r1.jobs);
    CHECK(r1.interruptions > 10);
    CHECK(r1.jobs_restarted <= r1.interruptions);
    CHECK(r1.node_hours_on_demand > 0 && r1.node_hours_spot > 0);
    /* Nothing interrupted without the rate. */
    c.pool[0].interruptions_per_node_hour = 0;
    CHECK_INT(sim_run(&c, &j, &r3, err, sizeof err), 0);
    CHECK(r3.interruptions == 0 && r3.jobs_restarted == 0);
    CHECK(r3.wait_p95_s <= r1.wait_p95_s + 1e-9 || r3.cost_usd < r1.cost_usd);
    sim_jobs_free(&j);
}

static void test_bad_config(void)
{
    sim_config_t c = fleet(AUTOSCALE_KEDA, 0);
    sim_jobs_t j = burst_at_zero(2, 512, 20);
    j.v[1].tier = 1;
    sim_result_t r;
    char err[256];
    c.pool[1].policy.max_replicas = 0;
    CHECK(sim_run(&c, &j, &r, err, sizeof err) == -1 && strstr(err, "enterprise"));
    c = fleet(AUTOSCALE_KEDA, 0);
    c.pool[0].policy.target = 0;
    CHECK(sim_run(&c, &j, &r, err, sizeof err) == -1 && strstr(err, "standard policy"));
    c = fleet(AUTOSCALE_KEDA, 0);
    c.pool[0].gpu_profile = "v100";
    CHECK(sim_run(&c, &j, &r, err, sizeof err) == -1 && strstr(err, "v100"));
    c = fleet(AUTOSCALE_KEDA, 0);
    c.pool[0].boot_min_s = 10;
    c.pool[0].boot_max_s = 5;
    CHECK(sim_run(&c, &j, &r, err, sizeof err) == -1);
    sim_jobs_free(&j);
}

#define TESTS(X)                                                                                   \
    X(test_grammar)                                                                                \
    X(test_generate)                                                                               \
    X(test_trace)                                                                                  \
    X(test_prices)                                                                                 \
    X(test_one_job_cost)                                                                           \
    X(test_policy_scale_up)                                                                        \
    X(test_policy_queued_metric_restarts)                                                          \
    X(test_determinism_and_interruptions)                                                          \
    X(test_bad_config)
#include "t_main.h"

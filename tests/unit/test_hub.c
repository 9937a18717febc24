/* test_hub.c: how the event hub moves its watermark over the sequence (api/hub.h): contiguous
 * events pass at once; at a gap (a seq taken by a transaction not yet committed) it waits
 * HUB_GAP_WAIT_MS for the missing event, then moves past it. */
#include "t.h"

#include "api/hub.h"

static store_event_t ev(int64_t seq)
{
    store_event_t e;
    memset(&e, 0, sizeof e);
    e.seq = seq;
    return e;
}

static void test_contiguous(void)
{
    store_event_t v[3] = {ev(5), ev(6), ev(7)};
    hub_gap_t g = {.at = -1};
    CHECK_INT(hub_advance(v, 3, 4, 1000, &g), 7);
    CHECK_INT(hub_advance(v, 0, 7, 1000, &g), 7);
}

static void test_gap_waits_then_passes(void)
{
    store_event_t v[3] = {ev(5), ev(7), ev(8)}; /* 6 not committed yet */
    hub_gap_t g = {.at = -1};
    CHECK_INT(hub_advance(v, 3, 4, 1000, &g), 5);
    CHECK_INT(g.at, 5);
    /* still waiting a moment later (read again after 5) */
    CHECK_INT(hub_advance(v + 1, 2, 5, 1000 + HUB_GAP_WAIT_MS - 1, &g), 5);
    /* 6 commits: everything passes */
    store_event_t w[3] = {ev(6), ev(7), ev(8)};
    CHECK_INT(hub_advance(w, 3, 5, 1000 + HUB_GAP_WAIT_MS - 1, &g), 8);
    /* a gap that never fills (a rolled-back transaction) is passed after the wait */
    store_event_t x[2] = {ev(10), ev(11)};
    CHECK_INT(hub_advance(x, 2, 8, 50000, &g), 8);
    CHECK_INT(hub_advance(x, 2, 8, 50000 + HUB_GAP_WAIT_MS, &g), 11);
    /* a new gap later waits again from its own start */
    store_event_t y[1] = {ev(13)};
    CHECK_INT(hub_advance(y, 1, 11, 90000, &g), 11);
    CHECK_INT(g.at, 11);
    CHECK_INT(hub_advance(y, 1, 11, 90000 + HUB_GAP_WAIT_MS - 1, &g), 11);
}

#define TESTS(X) X(test_contiguous) X(test_gap_waits_then_passes)
#include "t_main.h"

/* Event loop: timers fire in deadline order, deleted timers never fire, fd events dispatch. */
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fl.h"
#include "../../reactor/ev.c"
#include "test.h"

static int order[8], norder;

static void rec(fl_loop_t *l, void *data)
{
    order[norder++] = (int)(intptr_t)data;
    if (norder == 3)
        fl_loop_stop(l);
}

static void test_timers_in_order(void)
{
    fl_loop_t *l = fl_loop_new(64);
    norder = 0;
    fl_timer_add(l, 30, rec, (void *)3);
    fl_timer_add(l, 10, rec, (void *)1);
    fl_timer_id gone = fl_timer_add(l, 15, rec, (void *)9);
    fl_timer_add(l, 20, rec, (void *)2);
    fl_timer_del(l, gone);
    int64_t t0 = fl_now_ms();
    fl_loop_run(l);
    CU_ASSERT_EQUAL(norder, 3);
    CU_ASSERT_EQUAL(order[0], 1);
    CU_ASSERT_EQUAL(order[1], 2);
    CU_ASSERT_EQUAL(order[2], 3);
    CU_ASSERT(fl_now_ms() - t0 >= 30);
    fl_loop_free(l);
}

static int got_events;

static void on_read(fl_loop_t *l, int fd, int events, void *data)
{
    char buf[16];
    CU_ASSERT(events & FL_EV_READ);
    CU_ASSERT_EQUAL(read(fd, buf, sizeof(buf)), 3);
    got_events++;
    *(int *)data = 1;
    fl_loop_stop(l);
}

static void test_io_dispatch(void)
{
    fl_loop_t *l = fl_loop_new(64);
    int p[2];
    CU_ASSERT_EQUAL(pipe(p), 0);
    int flag = 0;
    CU_ASSERT_EQUAL(fl_io_set(l, p[0], FL_EV_READ, on_read, &flag), 0);
    CU_ASSERT_EQUAL(fl_io_mask(l, p[0]), FL_EV_READ);
    CU_ASSERT_EQUAL(write(p[1], "abc", 3), 3);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(flag, 1);
    fl_io_del(l, p[0]);
    CU_ASSERT_EQUAL(fl_io_mask(l, p[0]), 0);
    CU_ASSERT_EQUAL(fl_io_set(l, 1000, FL_EV_READ, on_read, NULL), -1); /* beyond setsize */
    close(p[0]);
    close(p[1]);
    fl_loop_free(l);
}

static int hooks;
static void hook(fl_loop_t *l, void *data)
{
    FL_UNUSED(data);
    if (++hooks == 3)
        fl_loop_stop(l);
}
static void noop(fl_loop_t *l, void *d)
{
    FL_UNUSED(l);
    FL_UNUSED(d);
}

static void test_before_sleep_runs_each_iteration(void)
{
    fl_loop_t *l = fl_loop_new(16);
    hooks = 0;
    fl_loop_before_sleep(l, hook, NULL);
    /* Three wake-ups at most 2 s apart whatever the machine's load: the hook stops the loop on
     * its third call, and a slow run that merges the short timers still has the long one. */
    for (int i = 0; i < 3; i++)
        fl_timer_add(l, i * 20, noop, NULL);
    fl_timer_add(l, 2000, noop, NULL);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(hooks, 3);
    fl_loop_free(l);
}

/* Random adds and deletes: a deleted timer never fires, every other one fires exactly once.
 * (fl_timer_add once returned the id of whichever timer heap_up had moved into its slot.) */
static char alive[50000];
static int fired_deleted, fired_twice;

static void stress_cb(fl_loop_t *l, void *d)
{
    FL_UNUSED(l);
    size_t i = (size_t)d;
    if (alive[i] == 0)
        fired_deleted++;
    if (alive[i] == 2)
        fired_twice++;
    alive[i] = 2;
}

static void test_deleted_timers_never_fire(void)
{
    fl_loop_t *l = fl_loop_new(16);
    static fl_timer_id ids[50000];
    size_t n = 0;
    srand(7);
    while (n < FL_ARRAY_SIZE(ids)) {
        if (rand() % 3 < 2) {
            ids[n] = fl_timer_add(l, rand() % 20, stress_cb, (void *)n);
            alive[n++] = 1;
        } else if (n) {
            size_t k = (size_t)rand() % n;
            if (alive[k] == 1) {
                fl_timer_del(l, ids[k]);
                alive[k] = 0;
            }
        }
        if (n % 500 == 0)
            run_timers(l, false);
    }
    usleep(30000);
    run_timers(l, false);
    CU_ASSERT_EQUAL(fired_deleted, 0);
    CU_ASSERT_EQUAL(fired_twice, 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_NOT_EQUAL_FATAL(alive[i], 1); /* every live timer fired */
    fl_loop_free(l);
}

/* Two readable pipes in one batch: while the first callback runs, the second fd is still
 * pending (pool.c relies on it instead of a MSG_PEEK); once its callback ran, it is not. A
 * forgotten fd gets no callback and costs no epoll_ctl. */
static int pa[2], pb[2], first_fd, pending_seen, pending_after, calls;

static void on_pending(fl_loop_t *l, int fd, int events, void *data)
{
    FL_UNUSED(events);
    FL_UNUSED(data);
    char buf[4];
    CU_ASSERT_EQUAL(read(fd, buf, sizeof(buf)), 1);
    if (calls++ == 0) {
        first_fd = fd;
        int other = fd == pa[0] ? pb[0] : pa[0];
        pending_seen = fl_io_pending(l, other);
        CU_ASSERT_FALSE(fl_io_pending(l, fd)); /* its own event is being handled */
    } else {
        pending_after = fl_io_pending(l, first_fd) || fl_io_pending(l, fd);
        fl_loop_stop(l);
    }
}

static void test_io_pending_and_forget(void)
{
    fl_loop_t *l = fl_loop_new(64);
    CU_ASSERT_EQUAL(pipe(pa), 0);
    CU_ASSERT_EQUAL(pipe(pb), 0);
    calls = 0;
    CU_ASSERT_EQUAL(fl_io_set(l, pa[0], FL_EV_READ, on_pending, NULL), 0);
    CU_ASSERT_EQUAL(fl_io_set(l, pb[0], FL_EV_READ, on_pending, NULL), 0);
    CU_ASSERT_FALSE(fl_io_pending(l, pa[0]));
    CU_ASSERT_EQUAL(write(pa[1], "a", 1), 1);
    CU_ASSERT_EQUAL(write(pb[1], "b", 1), 1);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(calls, 2);
    CU_ASSERT_TRUE(pending_seen);
    CU_ASSERT_FALSE(pending_after);
    CU_ASSERT_FALSE(fl_io_pending(l, -1));
    CU_ASSERT_FALSE(fl_io_pending(l, 1000));
    /* forget, then close: the kernel drops the registration with the last close */
    fl_io_forget(l, pa[0]);
    CU_ASSERT_EQUAL(fl_io_mask(l, pa[0]), 0);
    close(pa[0]);
    close(pa[1]);
    CU_ASSERT_EQUAL(write(pb[1], "c", 1), 1);
    calls = 1; /* the next callback stops the loop */
    fl_loop_run(l);
    CU_ASSERT_EQUAL(calls, 2);
    close(pb[0]);
    close(pb[1]);
    fl_loop_free(l);
}

/* Quiet mode: the loop waits only for fds registered without FL_EV_DEFER, and for the write
 * side of those with it; deferred input is reported once quiet ends (level-triggered). Fds
 * registered before the quiet set existed are mirrored into it, deleted ones leave it. */
static int q_calls[3], q_events[3];

static void on_quiet(fl_loop_t *l, int fd, int events, void *data)
{
    int k = (int)(intptr_t)data;
    q_calls[k]++;
    q_events[k] = events;
    char buf[8];
    if (events & FL_EV_READ)
        CU_ASSERT(read(fd, buf, sizeof(buf)) > 0);
    if (k == 2 && (events & FL_EV_WRITE))
        fl_io_set(l, fd, FL_EV_READ | FL_EV_DEFER, on_quiet, data); /* written: read only */
    fl_loop_stop(l);
}

static void q_stop(fl_loop_t *l, void *data)
{
    FL_UNUSED(data);
    fl_loop_stop(l);
}

/* One run, bounded: a callback stops it, or the timer does. */
static void q_run(fl_loop_t *l)
{
    fl_timer_id t = fl_timer_add(l, 500, q_stop, NULL);
    fl_loop_run(l);
    fl_timer_del(l, t);
}

static void test_quiet_defers_input(void)
{
    fl_loop_t *l = fl_loop_new(64);
    int plain[2], deferred[2], sp[2], gone[2];
    CU_ASSERT_EQUAL(pipe(plain), 0);
    CU_ASSERT_EQUAL(pipe(deferred), 0);
    CU_ASSERT_EQUAL(pipe(gone), 0);
    CU_ASSERT_EQUAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    memset(q_calls, 0, sizeof(q_calls));
    /* registered before the quiet set exists */
    CU_ASSERT_EQUAL(fl_io_set(l, deferred[0], FL_EV_READ | FL_EV_DEFER, on_quiet, (void *)1), 0);
    CU_ASSERT_EQUAL(fl_io_set(l, gone[0], FL_EV_READ, on_quiet, (void *)0), 0);
    CU_ASSERT_EQUAL(fl_loop_quiet(l, true), 0);
    /* ... and after */
    CU_ASSERT_EQUAL(fl_io_set(l, plain[0], FL_EV_READ, on_quiet, (void *)0), 0);
    fl_io_del(l, gone[0]); /* leaves both sets */
    CU_ASSERT_EQUAL(write(gone[1], "g", 1), 1);
    CU_ASSERT_EQUAL(write(deferred[1], "d", 1), 1);
    CU_ASSERT_EQUAL(write(plain[1], "p", 1), 1);
    q_run(l); /* the plain pipe only */
    CU_ASSERT_EQUAL(q_calls[0], 1);
    CU_ASSERT_EQUAL(q_calls[1], 0);
    /* a deferred fd's write side is watched while quiet, its input is not */
    CU_ASSERT_EQUAL(write(sp[1], "s", 1), 1);
    CU_ASSERT_EQUAL(
        fl_io_set(l, sp[0], FL_EV_READ | FL_EV_WRITE | FL_EV_DEFER, on_quiet, (void *)2), 0);
    q_run(l);
    CU_ASSERT_EQUAL(q_calls[2], 1);
    CU_ASSERT_EQUAL(q_events[2], FL_EV_WRITE);
    CU_ASSERT_EQUAL(q_calls[1], 0);
    /* quiet off: the deferred input is there */
    CU_ASSERT_EQUAL(fl_loop_quiet(l, false), 0);
    for (int i = 0; i < 4 && (q_calls[1] < 1 || q_calls[2] < 2); i++)
        q_run(l);
    CU_ASSERT_EQUAL(q_calls[1], 1);
    CU_ASSERT_EQUAL(q_calls[2], 2);
    CU_ASSERT_EQUAL(q_events[2], FL_EV_READ);
    CU_ASSERT_EQUAL(q_calls[0], 1); /* the deleted pipe never fired */
    int fds[] = {plain[0], plain[1], deferred[0], deferred[1], gone[0], gone[1], sp[0], sp[1]};
    for (size_t i = 0; i < FL_ARRAY_SIZE(fds); i++)
        close(fds[i]);
    fl_loop_free(l);
}

static bool spin_yes(void *data);

/* The busy-poll window follows the haltpoll rule: it opens (from a quarter of the cap, then
 * doubling) for wake-ups that come within the cap, and halves down to off for ones that don't. */
static void test_spin_window_adapts(void)
{
    fl_loop_t *l = fl_loop_new(16);
    fl_loop_spin(l, 100, spin_yes, NULL);
    spin_adapt(l, 30000);
    CU_ASSERT_EQUAL(l->spin_ns, 25000);
    spin_adapt(l, 30000);
    CU_ASSERT_EQUAL(l->spin_ns, 50000);
    spin_adapt(l, 30000); /* caught by the window: no change */
    CU_ASSERT_EQUAL(l->spin_ns, 50000);
    spin_adapt(l, 90000);
    CU_ASSERT_EQUAL(l->spin_ns, 100000);
    spin_adapt(l, 95000);
    CU_ASSERT_EQUAL(l->spin_ns, 100000); /* capped */
    spin_adapt(l, 5000000);
    CU_ASSERT_EQUAL(l->spin_ns, 50000);
    spin_adapt(l, 5000000);
    CU_ASSERT_EQUAL(l->spin_ns, 25000);
    spin_adapt(l, 5000000);
    CU_ASSERT_EQUAL(l->spin_ns, 0);
    fl_loop_spin(l, 0, spin_yes, NULL); /* off */
    CU_ASSERT_EQUAL(l->spin_max_ns, 0);
    fl_loop_free(l);
}

static bool spin_yes(void *data)
{
    FL_UNUSED(data);
    return true;
}

static bool spin_no(void *data)
{
    (*(int *)data)++;
    return false;
}

static int ticks;
static void tick(fl_loop_t *l, void *data)
{
    FL_UNUSED(data);
    if (++ticks == 3)
        fl_loop_stop(l);
}

/* An idle loop (wake-ups 10 ms apart, far above the cap) closes a fully open window after two
 * waits and then polls no more; a loop whose want() says no never polls. */
static void test_spin_idle_loop_stops_polling(void)
{
    fl_loop_t *l = fl_loop_new(16);
    fl_loop_spin(l, 200, spin_yes, NULL);
    l->spin_ns = l->spin_max_ns;
    ticks = 0;
    for (int i = 1; i <= 3; i++)
        fl_timer_add(l, 10 * i, tick, NULL);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(l->spin_ns, 0);
    CU_ASSERT(fl_loop_spun_ns(l) <= 400000); /* 200 + 100 µs, and a little */
    int asked = 0;
    fl_loop_spin(l, 200, spin_no, &asked);
    l->spin_ns = l->spin_max_ns;
    int64_t before = fl_loop_spun_ns(l);
    ticks = 0;
    for (int i = 1; i <= 3; i++)
        fl_timer_add(l, 2 * i, tick, NULL);
    fl_loop_run(l);
    CU_ASSERT(asked >= 3);
    CU_ASSERT_EQUAL(fl_loop_spun_ns(l), before);
    fl_loop_free(l);
}

/* A peer that answers at once: the window opens and every answer is still dispatched. */
static int echo_fd, echoes;

static void *echo_thread(void *arg)
{
    FL_UNUSED(arg);
    char c;
    while (read(echo_fd, &c, 1) == 1 && c != 'q')
        if (write(echo_fd, &c, 1) != 1)
            break;
    return NULL;
}

static void on_echo(fl_loop_t *l, int fd, int events, void *data)
{
    FL_UNUSED(events);
    FL_UNUSED(data);
    char c;
    if (read(fd, &c, 1) != 1 || ++echoes == 300) {
        fl_loop_stop(l);
        return;
    }
    CU_ASSERT_EQUAL(write(fd, "e", 1), 1);
}

static void test_spin_opens_for_a_fast_peer(void)
{
    int sp[2];
    CU_ASSERT_EQUAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    echo_fd = sp[1];
    pthread_t t;
    CU_ASSERT_EQUAL(pthread_create(&t, NULL, echo_thread, NULL), 0);
    fl_loop_t *l = fl_loop_new(16);
    fl_loop_spin(l, 10000, spin_yes, NULL); /* a cap a loaded test machine stays under */
    echoes = 0;
    CU_ASSERT_EQUAL(fl_io_set(l, sp[0], FL_EV_READ, on_echo, NULL), 0);
    CU_ASSERT_EQUAL(write(sp[0], "e", 1), 1);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(echoes, 300);
    CU_ASSERT(l->spin_ns > 0);
    CU_ASSERT(fl_loop_spun_ns(l) > 0);
    CU_ASSERT_EQUAL(write(sp[0], "q", 1), 1);
    pthread_join(t, NULL);
    close(sp[0]);
    close(sp[1]);
    fl_loop_free(l);
}

static const fl_test_t tests[] = {
    {"busy-poll window adapts", test_spin_window_adapts},
    {"busy-poll stops on an idle loop", test_spin_idle_loop_stops_polling},
    {"busy-poll opens for a fast peer", test_spin_opens_for_a_fast_peer},
    {"quiet mode defers input", test_quiet_defers_input},
    {"pending events and forgotten fds", test_io_pending_and_forget},
    {"deleted timers never fire", test_deleted_timers_never_fire},
    {"timers fire in deadline order", test_timers_in_order},
    {"fd events dispatch", test_io_dispatch},
    {"before-sleep hook", test_before_sleep_runs_each_iteration},
    {NULL, NULL},
};
FL_TEST_MAIN("ev", tests)

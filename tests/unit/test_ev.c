/* Event loop: timers fire in deadline order, deleted timers never fire, fd events dispatch. */
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
    for (int i = 0; i < 5; i++)
        fl_timer_add(l, i, noop, NULL);
    fl_loop_run(l);
    CU_ASSERT_EQUAL(hooks, 3);
    fl_loop_free(l);
}

static const fl_test_t tests[] = {
    {"timers fire in deadline order", test_timers_in_order},
    {"fd events dispatch", test_io_dispatch},
    {"before-sleep hook", test_before_sleep_runs_each_iteration},
    {NULL, NULL},
};
FL_TEST_MAIN("ev", tests)

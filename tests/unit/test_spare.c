/* The busy-poll governor: a spare CPU is at least half a CPU idle over the period, the loop's own
 * polling counted as idle; /proc/stat is read lazily and re-sampled only after the period. */
#include <unistd.h>

#include "fl.h"
#include "../../reactor/ev.c"
#include "../../master/spare.c"
#include "test.h"

static void test_decide(void)
{
    uint64_t hz = (uint64_t)sysconf(_SC_CLK_TCK);
    int64_t sec = 1000000000;
    /* 2 CPUs over 1 s: 2*hz ticks */
    CU_ASSERT_FALSE(fl_spare_decide(0, 2 * hz, sec, 0));           /* saturated */
    CU_ASSERT_TRUE(fl_spare_decide(hz, 2 * hz, sec, 0));           /* one CPU idle */
    CU_ASSERT_TRUE(fl_spare_decide(hz / 2, 2 * hz, sec, 0));       /* half a CPU */
    CU_ASSERT_FALSE(fl_spare_decide(hz / 5, 2 * hz, sec, 0));      /* 0.2 CPU */
    CU_ASSERT_TRUE(fl_spare_decide(hz / 5, 2 * hz, sec, sec / 2)); /* + 0.5 CPU of our polling */
    CU_ASSERT_FALSE(fl_spare_decide(hz / 5, 2 * hz, sec, sec / 10));
    /* 16 CPUs, 10 % idle: 1.6 CPUs spare */
    CU_ASSERT_TRUE(fl_spare_decide(16 * hz / 10, 16 * hz, sec, 0));
    CU_ASSERT_FALSE(fl_spare_decide(0, 0, sec, 0)); /* no ticks: no claim */
}

static void test_samples_lazily(void)
{
    fl_loop_t *l = fl_loop_new(16);
    fl_spare_t s;
    fl_spare_init(&s, l);
    CU_ASSERT(s.fd >= 0);
    CU_ASSERT_TRUE(fl_spare_cpu(&s)); /* no period yet: allowed */
    int64_t at = s.at_ns;
    CU_ASSERT(at > 0);
    CU_ASSERT(s.total > 0);
    fl_spare_cpu(&s); /* within the period: the same sample */
    CU_ASSERT_EQUAL(s.at_ns, at);
    s.at_ns -= SPARE_PERIOD_NS; /* as if the period had passed */
    fl_spare_cpu(&s);
    CU_ASSERT(s.at_ns > at);
    fl_spare_close(&s);
    CU_ASSERT_FALSE(fl_spare_cpu(&s)); /* unreadable: never poll */
    fl_loop_free(l);
}

static const fl_test_t tests[] = {
    {"spare CPU decision", test_decide},
    {"/proc/stat sampled once per period", test_samples_lazily},
    {NULL, NULL},
};
FL_TEST_MAIN("spare", tests)

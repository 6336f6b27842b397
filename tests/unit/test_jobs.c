/* Unit tests for the jobs broker of the master (master/jobs.c): job priority order, stride
 * scheduling between pipelines, the JOB message (context JSON per spec §7.1), requeue with
 * merged headers, and requeue of everything in flight when a reactor's channel goes away. A
 * SOCK_SEQPACKET socketpair stands in for the reactor channel. */
#include <sys/socket.h>
#include <unistd.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../protocols/pb.c"
#include "../../protocols/rpc.c"
#include "../../reactor/ev.c"
#include "../../lib/net.c"
#include "../../master/rpc.c"
#include "../../master/conftree.c"
#include "../../master/jobs.c"
#include "test.h"

static int sv[2];
static fl_loop_t *tloop;
static int peer_key;

static void t_setup(const char *const *names, const int64_t *prios, size_t n)
{
    static struct fl_conf_pipeline pl[4];
    static char *consume[5];
    fl_conf_t c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++) {
        pl[i] = (struct fl_conf_pipeline){(char *)names[i], "memory", prios[i], 100000};
        consume[i] = (char *)names[i];
    }
    c.jobs.enabled = true;
    c.jobs.pipelines = pl;
    c.jobs.npipelines = n;
    c.jobs.consume = consume;
    c.jobs.nconsume = n;
    tloop = fl_loop_new(64);
    fl_conf_err_t err;
    CU_ASSERT_EQUAL(fl_jobs_start(NULL, tloop, &c, &err), 0);
    CU_ASSERT_EQUAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
}

static void t_teardown(void)
{
    fl_jobs_stop();
    close(sv[0]);
    close(sv[1]);
    fl_loop_free(tloop);
}

static void t_push(const char *pipe, const char *id, int64_t prio)
{
    job_t *j = calloc(1, sizeof(*j));
    j->id = strdup(id);
    j->name = strdup("N");
    j->payload = (uint8_t *)strdup("P");
    j->plen = 1;
    j->p = pipe_find(pipe, strlen(pipe));
    j->prio = prio ? prio : j->p->priority;
    enqueue(j, 0);
}

/* Reads one JOB message from the fake reactor's end: *seq, the context into ctx. */
static int t_recv(unsigned long long *seq, char *ctx, size_t max)
{
    static char buf[FL_JOBS_MSG_MAX];
    ssize_t n = recv(sv[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    size_t clen;
    if (sscanf(buf, "JOB %llu %zu", seq, &clen) != 2 || clen >= max)
        return -1;
    memcpy(ctx, strchr(buf, '\n') + 1, clen);
    ctx[clen] = 0;
    return 0;
}

static void t_cap(unsigned n)
{
    char m[32];
    int k = snprintf(m, sizeof(m), "JCAP %u", n);
    CU_ASSERT(fl_jobs_chan_msg(&peer_key, sv[0], m, (size_t)k));
}

static void t_done(unsigned long long seq, const char *rest)
{
    char m[256];
    int k = snprintf(m, sizeof(m), "JDONE %llu %s", seq, rest);
    CU_ASSERT(fl_jobs_chan_msg(&peer_key, sv[0], m, (size_t)k));
}

static void t_priority_and_context(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    t_push("p", "a", 0);
    t_push("p", "b", 5); /* lower job priority goes first */
    t_push("p", "c", 0);
    t_cap(10);
    char ctx[512];
    unsigned long long seq;
    const char *want[] = {"b", "a", "c"};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
        char exp[256];
        snprintf(exp, sizeof(exp),
                 "{\"id\":\"%s\",\"job\":\"N\",\"driver\":\"memory\",\"queue\":\"p\","
                 "\"headers\":null,\"pipeline\":\"p\"}",
                 want[i]);
        CU_ASSERT_STRING_EQUAL(ctx, exp);
    }
    CU_ASSERT_EQUAL(t_recv(&seq, ctx, sizeof(ctx)), -1);
    CU_ASSERT_EQUAL(J.pipes->nreserved, 3);
    /* requeue the last one with headers: it comes back with them */
    t_done(seq, "r 0 {\"x\":[\"1\"]}");
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    CU_ASSERT(strstr(ctx, "\"headers\":{\"x\":[\"1\"]}") != NULL);
    t_done(seq, "a 0");
    t_done(seq, "a 0"); /* a late duplicate is ignored */
    CU_ASSERT_EQUAL(J.pipes->nreserved, 2);
    /* the reactor goes away: its two jobs in flight go back and wait for another reactor */
    fl_jobs_chan_gone(&peer_key);
    CU_ASSERT_EQUAL(J.pipes->nreserved, 0);
    CU_ASSERT_EQUAL(J.pipes->nready, 2);
    t_teardown();
}

static void t_stride(void)
{
    const char *names[] = {"hi", "lo"};
    int64_t prios[] = {1, 5};
    t_setup(names, prios, 2);
    char id[16];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof(id), "h%d", i);
        t_push("hi", id, 0);
        snprintf(id, sizeof(id), "l%d", i);
        t_push("lo", id, 0);
    }
    int hi = 0, lo = 0;
    char ctx[512];
    unsigned long long seq;
    t_cap(1);
    for (int i = 0; i < 60; i++) { /* one at a time, acked at once */
        CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
        if (strstr(ctx, "\"pipeline\":\"hi\""))
            hi++;
        else
            lo++;
        t_done(seq, "a 0");
    }
    CU_ASSERT_EQUAL(hi, 50); /* weights 1 : 5 → 5 high turns per low turn */
    CU_ASSERT_EQUAL(lo, 10);
    /* paused pipelines are skipped (after the job already sent by the last ack) */
    J.pipes->paused = true;
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, "a 0");
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
        CU_ASSERT(strstr(ctx, "\"pipeline\":\"lo\"") != NULL);
        t_done(seq, "a 0");
    }
    t_teardown();
}

static const fl_test_t tests[] = {
    {"job priority, context, requeue, reactor gone", t_priority_and_context},
    {"stride scheduling between pipelines", t_stride},
    {NULL, NULL},
};

FL_TEST_MAIN("jobs", tests)

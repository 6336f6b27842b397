/* Unit tests for the jobs broker of the master (master/jobs.c) with its memory driver: job
 * priority order, stride scheduling between pipelines, the JOB message (context JSON per spec
 * §7.1), the JDONE kinds (ack, drop, requeue with merged headers, failed run, back), attempts
 * and max_attempts, prefetch and pipeline_size, requeue of everything in flight when a reactor's
 * channel goes away, destroy with jobs in flight, and reconfigure (reload). A SOCK_SEQPACKET
 * socketpair stands in for the reactor channel. */
#include <sys/socket.h>
#include <unistd.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../protocols/pb.c"
#include "../../protocols/rpc.c"
#include "../../reactor/ev.c"
#include "../../lib/net.c"
#include "../../relay/spawn.c"
#include "../../reactor/pool.c"
#include "../../master/srvmetrics.c"
#include "../../master/rpc.c"
#include "../../master/conftree.c"
#include "../../master/config.c"
#include "../../master/svcconf.c"
#include "../../master/hmap.c"
#include "../../master/redis.c"
#include "../../master/jobs.c"
#include "../../master/jobs_redis.c"
#include "test.h"

static int sv[2];
static size_t t_have, t_at; /* t_recv: the message being read, and where */
static fl_loop_t *tloop;
static int peer_key;

static fl_conf_t t_conf(const char *const *names, const int64_t *prios, size_t n, bool consume)
{
    static struct fl_conf_pipeline pl[4];
    static char *cons[5];
    fl_conf_t c;
    memset(&c, 0, sizeof(c));
    memset(cons, 0, sizeof(cons));
    for (size_t i = 0; i < n; i++) {
        memset(&pl[i], 0, sizeof(pl[i]));
        pl[i].name = (char *)names[i];
        pl[i].driver = "memory";
        pl[i].priority = prios[i];
        cons[i] = consume ? (char *)names[i] : NULL;
    }
    c.jobs.enabled = true;
    c.jobs.pipeline_size = 1000000;
    c.jobs.pipelines = pl;
    c.jobs.npipelines = n;
    c.jobs.consume = consume ? cons : NULL;
    c.jobs.nconsume = consume ? n : 0;
    return c;
}

static void t_setup(const char *const *names, const int64_t *prios, size_t n)
{
    fl_conf_t c = t_conf(names, prios, n, true);
    tloop = fl_loop_new(64);
    t_have = t_at = 0;
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
    job_t *j = fl_jobs_job_new();
    j->id = strdup(id);
    j->name = strdup("N");
    j->payload = (uint8_t *)strdup("P");
    j->plen = 1;
    j->p = pipe_find(pipe, strlen(pipe));
    j->prio = prio ? prio : j->p->conf.priority;
    mem_enqueue(j, 0);
}

/* Reads the next JOB record from the fake reactor's end (a message may carry several): *seq,
 * the context into ctx. */
static int t_recv(unsigned long long *seq, char *ctx, size_t max)
{
    static char buf[FL_JOBS_MSG_MAX + 1];
    size_t have = t_have, at = t_at;
    if (at >= have) {
        ssize_t n = recv(sv[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n <= 0)
            return -1;
        buf[n] = 0;
        have = (size_t)n;
        at = 0;
    }
    size_t clen, plen;
    if (sscanf(buf + at, "JOB %llu %zu %zu", seq, &clen, &plen) != 3 || clen >= max) {
        t_have = t_at = 0;
        return -1;
    }
    char *nl = strchr(buf + at, '\n');
    memcpy(ctx, nl + 1, clen);
    ctx[clen] = 0;
    t_have = have;
    t_at = (size_t)(nl + 1 - buf) + clen + plen;
    return 0;
}

static void t_cap(unsigned n)
{
    char m[32];
    int k = snprintf(m, sizeof(m), "JCAP %u", n);
    CU_ASSERT(fl_jobs_chan_msg(&peer_key, sv[0], m, (size_t)k));
}

/* kind, delay, headers JSON (or ""), reason (or "") */
static void t_done(unsigned long long seq, char kind, long delay, const char *headers,
                   const char *why)
{
    char m[512];
    int k = snprintf(m, sizeof(m), "JDONE %llu %c %ld %zu %zu\n%s%s", seq, kind, delay,
                     strlen(headers), strlen(why), headers, why);
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
    t_done(seq, 'r', 0, "{\"x\":[\"1\"]}", "again");
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    CU_ASSERT(strstr(ctx, "\"headers\":{\"x\":[\"1\"]}") != NULL);
    t_done(seq, 'a', 0, "", "");
    t_done(seq, 'a', 0, "", ""); /* a late duplicate is ignored */
    CU_ASSERT_EQUAL(J.pipes->nreserved, 2);
    /* a malformed JDONE is logged and changes nothing */
    CU_ASSERT(fl_jobs_chan_msg(&peer_key, sv[0], "JDONE 1 a", 9));
    CU_ASSERT_EQUAL(J.pipes->nreserved, 2);
    /* the reactor goes away: its two jobs in flight go back and wait for another reactor */
    fl_jobs_chan_gone(&peer_key);
    CU_ASSERT_EQUAL(J.pipes->nreserved, 0);
    CU_ASSERT_EQUAL(J.pipes->nready, 2);
    t_teardown();
}

/* The context is JSON whatever the id, name and pipeline hold. */
static void t_context_escapes(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    t_push("p", "q\"\\\n\x01\xc3\xa9", 0);
    t_cap(1);
    char ctx[512];
    unsigned long long seq;
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    cJSON *o = cJSON_Parse(ctx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(o, "id")->valuestring, "q\"\\\n\x01\xc3\xa9");
    cJSON_Delete(o);
    t_teardown();
}

/* A reactor's answers of one loop turn arrive in one message. */
static void t_done_batch(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    for (int i = 0; i < 3; i++)
        t_push("p", i == 0 ? "a" : i == 1 ? "b" : "c", 0);
    t_cap(3);
    char ctx[512];
    unsigned long long seq[3];
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(t_recv(&seq[i], ctx, sizeof(ctx)), 0);
    char m[512];
    int k = snprintf(m, sizeof(m),
                     "JDONE %llu a 0 0 0\nJDONE %llu r 0 8 4\n{\"x\":[]}boomJDONE %llu d 0 0 2\nno",
                     seq[0], seq[1], seq[2]);
    CU_ASSERT(fl_jobs_chan_msg(&peer_key, sv[0], m, (size_t)k));
    CU_ASSERT_EQUAL(J.pipes->nreserved, 1); /* the requeued one went out again at once */
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq[0], ctx, sizeof(ctx)), 0);
    CU_ASSERT(strstr(ctx, "\"id\":\"b\"") && strstr(ctx, "\"x\":[]"));
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
        t_done(seq, 'a', 0, "", "");
    }
    CU_ASSERT_EQUAL(hi, 50); /* weights 1 : 5 → 5 high turns per low turn */
    CU_ASSERT_EQUAL(lo, 10);
    /* paused pipelines are skipped (after the job already sent by the last ack) */
    J.pipes->paused = true;
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, 'a', 0, "", "");
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
        CU_ASSERT(strstr(ctx, "\"pipeline\":\"lo\"") != NULL);
        t_done(seq, 'a', 0, "", "");
    }
    t_teardown();
}

/* 'f' (failed run) and 'r' count attempts; max_attempts drops the job; 'b' and a reactor that
 * goes away do not count. */
static void t_attempts(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    J.pipes->conf.max_attempts = 3;
    t_push("p", "x", 0);
    t_cap(1);
    char ctx[512];
    unsigned long long seq;
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, 'b', 0, "", "pool is stopping"); /* no attempt */
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, 'f', 0, "", "exec_ttl elapsed"); /* attempt 1 */
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, 'r', 0, "", "boom"); /* attempt 2 */
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    t_done(seq, 'f', 0, "", "worker died"); /* attempt 3: max_attempts reached, dropped */
    CU_ASSERT_EQUAL(t_recv(&seq, ctx, sizeof(ctx)), -1);
    CU_ASSERT_EQUAL(J.pipes->nready + J.pipes->nreserved + J.pipes->ndelayed, 0);
    t_teardown();
}

/* prefetch caps the jobs of a pipeline in flight; pipeline_size caps what a memory pipeline
 * queues (checked by the push RPC). */
static void t_prefetch_and_size(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    J.pipes->conf.prefetch = 2;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "j%d", i);
        t_push("p", id, 0);
    }
    t_cap(10);
    char ctx[512];
    unsigned long long seq[3];
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq[0], ctx, sizeof(ctx)), 0);
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq[1], ctx, sizeof(ctx)), 0);
    CU_ASSERT_EQUAL(t_recv(&seq[2], ctx, sizeof(ctx)), -1); /* prefetch 2 */
    t_done(seq[0], 'a', 0, "", "");
    CU_ASSERT_EQUAL(t_recv(&seq[2], ctx, sizeof(ctx)), 0);
    CU_ASSERT_EQUAL(J.pipes->nreserved, 2);
    J.pipeline_size = 3;
    job_t *j = fl_jobs_job_new();
    j->p = J.pipes;
    char eb[300];
    CU_ASSERT_PTR_NULL(check_sizes(j, eb, sizeof(eb))); /* 2 queued + 1 <= 3 */
    j->next = fl_jobs_job_new();
    j->next->p = J.pipes;
    CU_ASSERT_PTR_NOT_NULL(check_sizes(j, eb, sizeof(eb)));
    CU_ASSERT(strstr(eb, "pipeline p is full") != NULL);
    free_list(j);
    t_teardown();
}

static void t_stored(void *ctx, const char *err)
{
    FL_UNUSED(ctx);
    CU_ASSERT_PTR_NULL(err);
}

/* Delayed memory jobs wait on the loop's timer. */
static void t_delay(void)
{
    const char *names[] = {"p"};
    int64_t prios[] = {10};
    t_setup(names, prios, 1);
    t_cap(4);
    job_t *j = fl_jobs_job_new();
    j->id = strdup("later");
    j->name = strdup("N");
    j->p = J.pipes;
    j->prio = 10;
    j->delay_s = 1;
    mem_push(J.pipes, j, t_stored, NULL);
    char ctx[512];
    unsigned long long seq;
    CU_ASSERT_EQUAL(J.pipes->ndelayed, 1);
    CU_ASSERT_EQUAL(t_recv(&seq, ctx, sizeof(ctx)), -1);
    int64_t t0 = fl_now_ms();
    while (t_recv(&seq, ctx, sizeof(ctx)) < 0 && fl_now_ms() - t0 < 3000) {
        fl_timer_id t = fl_timer_add(tloop, 50, stop_wait_cb, NULL);
        fl_loop_run(tloop);
        fl_timer_del(tloop, t);
    }
    int64_t waited = fl_now_ms() - t0;
    CU_ASSERT(waited >= 900 && waited < 1500);
    CU_ASSERT(strstr(ctx, "\"id\":\"later\"") != NULL);
    t_teardown();
}

/* Destroy with a job in flight: the pipeline leaves the list at once, its queued jobs are
 * dropped, and it is freed when the job in flight answers. */
static void t_destroy_inflight(void)
{
    const char *names[] = {"p", "q"};
    int64_t prios[] = {10, 10};
    t_setup(names, prios, 2);
    t_push("p", "a", 0);
    t_push("p", "b", 0);
    t_cap(1);
    char ctx[512];
    unsigned long long seq;
    CU_ASSERT_EQUAL_FATAL(t_recv(&seq, ctx, sizeof(ctx)), 0);
    pipe_destroy(pipe_find("p", 1));
    CU_ASSERT_PTR_NULL(pipe_find("p", 1));
    CU_ASSERT_PTR_NOT_NULL(J.graveyard);
    t_done(seq, 'r', 0, "", ""); /* a requeue of a destroyed memory pipeline's job drops it */
    CU_ASSERT_PTR_NULL(J.graveyard);
    CU_ASSERT_EQUAL(t_recv(&seq, ctx, sizeof(ctx)), -1);
    t_teardown();
}

/* Reload: a pipeline gone from the config is destroyed, a new one is created, consume changes
 * pause or resume, options change in place; pipelines declared over RPC are left alone. */
static void t_reconfigure(void)
{
    const char *names[] = {"a", "b"};
    int64_t prios[] = {10, 10};
    t_setup(names, prios, 2);
    struct fl_conf_pipeline dyn = {.name = "dyn", .driver = "memory", .priority = 3};
    char eb[300];
    CU_ASSERT_PTR_NOT_NULL(pipe_new(&dyn, false, eb, sizeof(eb))); /* as jobs.Declare does */
    t_push("a", "queued-in-a", 0);
    const char *n2[] = {"a", "c"};
    int64_t p2[] = {4, 10};
    fl_conf_t c = t_conf(n2, p2, 2, false); /* "a" no longer consumed, "c" new, "b" gone */
    fl_jobs_reconfigure(&c);
    jpipe_t *a = pipe_find("a", 1), *cc = pipe_find("c", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cc);
    CU_ASSERT_PTR_NULL(pipe_find("b", 1));
    CU_ASSERT_PTR_NOT_NULL(pipe_find("dyn", 3));
    CU_ASSERT(a->paused && cc->paused);
    CU_ASSERT_EQUAL(a->conf.priority, 4);
    CU_ASSERT_EQUAL(a->nready, 1); /* its queued job survived the reload */
    CU_ASSERT_EQUAL(a->conf.prefetch, 100000);
    c = t_conf(n2, p2, 2, true);
    fl_jobs_reconfigure(&c);
    CU_ASSERT(!a->paused && !cc->paused);
    t_teardown();
}

/* The redis driver's entry format (docs/jobs-redis.md): a stream entry read back into a job,
 * the delayed-set member, and which config changes keep a pipeline (no real server here: the
 * driver itself runs against redis-server in tests/integration/test_jobs_redis.py). */
static redisReply *t_str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = (char *)s;
    r->len = strlen(s);
    return r;
}

static void t_redis_format(void)
{
    fl_jpipe_t p = {.name = "rq"};
    p.conf.priority = 7;
    rpipe_t rp = {.p = &p};
    const char *kv[] = {"id",      "abc", "job",      "App\\Mail", "headers", "{\"h\":[\"v\"]}",
                        "payload", "PAY", "attempts", "2",         "extra",   "ignored"};
    redisReply fields = {.type = REDIS_REPLY_ARRAY, .elements = 12};
    redisReply *el[12];
    for (int i = 0; i < 12; i++)
        el[i] = t_str(kv[i]);
    fields.element = el;
    redisReply *id = t_str("1700000000000-1");
    job_t *j = entry_job(&rp, id, &fields);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(j->id, "abc");
    CU_ASSERT_STRING_EQUAL(j->name, "App\\Mail");
    CU_ASSERT_STRING_EQUAL(j->ref, "1700000000000-1");
    CU_ASSERT_EQUAL(j->plen, 3);
    CU_ASSERT_EQUAL(j->attempts, 2);
    CU_ASSERT_EQUAL(j->prio, 7);
    char *h = cJSON_PrintUnformatted(j->headers);
    CU_ASSERT_STRING_EQUAL(h, "{\"h\":[\"v\"]}");
    cJSON_free(h);
    fl_buf_t m = {0};
    CU_ASSERT_EQUAL(delayed_member(j, &m), 0);
    const char *want = "2:id,3:abc,3:job,8:App\\Mail,7:headers,11:{\"h\":[\"v\"]},7:payload,3:PAY,"
                       "8:attempts,1:2,";
    CU_ASSERT_EQUAL(m.len, strlen(want));
    CU_ASSERT(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0);
    fl_buf_free(&m);
    fl_jobs_job_free(j);
    /* a foreign producer's bare entry: the entry id stands in for the job id */
    fields.elements = 2;
    free(el[0]);
    el[0] = t_str("payload");
    j = entry_job(&rp, id, &fields);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(j->id, "1700000000000-1");
    CU_ASSERT_STRING_EQUAL(j->name, "");
    CU_ASSERT_PTR_NULL(j->headers);
    fl_jobs_job_free(j);
    free(el[0]);
    for (int i = 1; i < 12; i++)
        free(el[i]);
    free(id);
    /* defaults, and which changes replace a running pipeline */
    struct fl_conf_pipeline a = {.name = "rq", .driver = "redis"}, b = a;
    a.name = strdup("rq");
    a.driver = NULL;
    CU_ASSERT_EQUAL(fill_defaults(&a), 0);
    CU_ASSERT_STRING_EQUAL(a.redis.addr, "127.0.0.1:6379");
    CU_ASSERT_STRING_EQUAL(a.redis.stream, "forkline:jobs:rq");
    CU_ASSERT_STRING_EQUAL(a.redis.group, "forkline");
    CU_ASSERT_STRING_EQUAL(a.redis.delayed, "forkline:jobs:rq:delayed");
    CU_ASSERT_STRING_EQUAL(a.redis.dead_letter, "forkline:jobs:rq:dead");
    CU_ASSERT(rd_same(&a, &b)); /* the same, with its defaults written out */
    b.prefetch = 5;
    b.max_attempts = 9;
    b.redis.visibility_timeout_ms = 5000;
    CU_ASSERT(rd_same(&a, &b)); /* updated in place */
    b.redis.stream = "other";
    CU_ASSERT(!rd_same(&a, &b));
    b.redis.stream = NULL;
    b.redis.db = 2;
    CU_ASSERT(!rd_same(&a, &b));
    fl_conf_pipeline_free(&a);
}

static const fl_test_t tests[] = {
    {"job priority, context, requeue, reactor gone", t_priority_and_context},
    {"several answers in one message", t_done_batch},
    {"context JSON escapes", t_context_escapes},
    {"stride scheduling between pipelines", t_stride},
    {"attempts, max_attempts, back without an attempt", t_attempts},
    {"prefetch and pipeline_size", t_prefetch_and_size},
    {"delayed job", t_delay},
    {"destroy with a job in flight", t_destroy_inflight},
    {"reconfigure (reload)", t_reconfigure},
    {"redis entry format and config identity", t_redis_format},
    {NULL, NULL},
};

FL_TEST_MAIN("jobs", tests)

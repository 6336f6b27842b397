/* master/srvmetrics.c: the shared-memory counters of the built-in metrics. A real forked
 * "reactor" writes its slot and exits (the master folds its counters: nothing goes backwards),
 * a real pool of php-cli workers (tests/php/behave.php) drives the worker gauges and the
 * restart reasons through reactor/pool.c's hooks, and the text exposition is checked line by
 * line. Run from the repository root (tests/run.sh does). */
#include <signal.h>
#include <sys/wait.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../relay/spawn.c"
#include "../../reactor/ev.c"
#include "../../reactor/pool.c"
#include "../../master/srvmetrics.c"
#include "test.h"

extern char **environ;

static uint64_t t0_at(uint64_t ago_ns)
{
    return fl_srvm_clock() - ago_ns;
}

/* ---- fork: a child writes its slot, the master folds it at exit ---- */

static void test_fork_fold_and_reuse(void)
{
    CU_ASSERT_EQUAL_FATAL(fl_srvm_init(true), 0);
    int slot = fl_srvm_acquire();
    CU_ASSERT_FATAL(slot >= 0);
    int up[2], down[2]; /* child -> parent "written", parent -> child "exit now" */
    CU_ASSERT_FATAL(pipe(up) == 0 && pipe(down) == 0);
    pid_t pid = fork();
    fl_srvm_forked(slot, pid);
    if (pid == 0) {
        char c;
        for (int i = 0; i < 1000; i++) {
            uint64_t t0 = t0_at(i < 10 ? 2000000000ull : 1000); /* 10 slow ones: > 1 s */
            fl_srvm_http_done(&t0, i % 2 ? "GET" : "PROPFIND", i % 3 ? 200 : 503, 10, 100);
        }
        fl_srvm_worker("http", -1, FL_W_INACTIVE, false);
        fl_srvm_worker("http", FL_W_INACTIVE, FL_W_READY, false);
        fl_srvm_worker("jobs", -1, FL_W_READY, false);
        fl_srvm_queue("http", 7);
        if (write(up[1], "x", 1) != 1 || read(down[0], &c, 1) != 1) /* wait for the parent */
            _exit(2);
        _exit(0);
    }
    CU_ASSERT_FATAL(pid > 0);
    char c;
    CU_ASSERT(read(up[0], &c, 1) == 1);
    /* the master sees the live slot */
    fl_srvm_counters_t t;
    fl_srvm_sum(&t);
    CU_ASSERT_EQUAL(t.requests[fl_srvm_method("GET")][1] + t.requests[fl_srvm_method("GET")][4],
                    500);
    CU_ASSERT_EQUAL(t.requests[FL_SRVM_METHODS - 1][1] + t.requests[FL_SRVM_METHODS - 1][4], 500);
    CU_ASSERT_EQUAL(t.requests[0][4] + t.requests[FL_SRVM_METHODS - 1][4], 334); /* i % 3 == 0 */
    CU_ASSERT_EQUAL(t.bytes_in, 10000);
    CU_ASSERT_EQUAL(t.bytes_out, 100000);
    CU_ASSERT_EQUAL(t.dur_bucket[1][FL_SRVM_NBUCKETS - 3] + t.dur_bucket[4][FL_SRVM_NBUCKETS - 3],
                    10); /* 2 s: the 2.5 bucket */
    CU_ASSERT_EQUAL(t.workers[FL_SRVM_HTTP][FL_W_READY], 1);
    CU_ASSERT_EQUAL(t.workers[FL_SRVM_HTTP][FL_W_INACTIVE], 0);
    CU_ASSERT_EQUAL(t.workers[FL_SRVM_JOBS][FL_W_READY], 1);
    CU_ASSERT_EQUAL(t.queued[FL_SRVM_HTTP], 7);
    CU_ASSERT(write(down[1], "x", 1) == 1);
    int st;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fl_srvm_exited(pid);
    /* counters kept, gauges gone, the slot free and clean */
    fl_srvm_counters_t u;
    fl_srvm_sum(&u);
    CU_ASSERT_EQUAL(memcmp(u.requests, t.requests, sizeof(t.requests)), 0);
    CU_ASSERT_EQUAL(memcmp(u.dur_bucket, t.dur_bucket, sizeof(t.dur_bucket)), 0);
    CU_ASSERT_EQUAL(u.bytes_in, 10000);
    CU_ASSERT_EQUAL(u.workers[FL_SRVM_HTTP][FL_W_READY], 0);
    CU_ASSERT_EQUAL(u.queued[FL_SRVM_HTTP], 0);
    int again = fl_srvm_acquire();
    CU_ASSERT_EQUAL(again, slot);
    CU_ASSERT_EQUAL(S.seg[again].c.bytes_in, 0);
    fl_srvm_forked(again, -1); /* a failed fork gives it back */
    CU_ASSERT_EQUAL(S.owner[again], 0);
    fl_srvm_exited(pid); /* twice, or an unknown pid: nothing */
    fl_srvm_sum(&u);
    CU_ASSERT_EQUAL(u.bytes_in, 10000);
    for (int i = 0; i < 2; i++) {
        close(up[i]);
        close(down[i]);
    }
    fl_srvm_free();
}

static void test_full_and_off(void)
{
    CU_ASSERT_EQUAL(fl_srvm_acquire(), -1); /* not mapped: no slot, hooks are no-ops */
    fl_srvm_forked(-1, 0);
    CU_ASSERT_PTR_NULL(fl_srvm_mine());
    uint64_t t0 = 5;
    fl_srvm_http_done(&t0, "GET", 200, 1, 1);
    CU_ASSERT_EQUAL(t0, 0);
    CU_ASSERT_EQUAL_FATAL(fl_srvm_init(false), 0);
    for (int i = 0; i < FL_SRVM_SLOTS; i++) {
        int s = fl_srvm_acquire();
        CU_ASSERT_EQUAL(s, i);
        fl_srvm_forked(s, 100000 + i);
    }
    fl_log_level = FL_LOG_OFF; /* the warning is expected */
    CU_ASSERT_EQUAL(fl_srvm_acquire(), -1);
    fl_log_level = FL_LOG_INFO;
    fl_srvm_exited(100000 + 5);
    CU_ASSERT_EQUAL(fl_srvm_acquire(), 5);
    fl_srvm_free();
}

/* ---- restart reasons from transition sequences (pool.c's hook) ---- */

static void test_restart_reasons(void)
{
    CU_ASSERT_EQUAL_FATAL(fl_srvm_init(false), 0);
    int slot = fl_srvm_acquire();
    fl_srvm_forked(slot, 0); /* this process plays the reactor */
    const int seqs[][5] = {
        {FL_W_READY, FL_W_MAX_JOBS, FL_W_STOPPING, FL_W_ERRORED, -1}, /* stop frame failed */
        {FL_W_WORKING, FL_W_INVALID, FL_W_TTL, FL_W_STOPPING, FL_W_STOPPED},
        {FL_W_WORKING, FL_W_INVALID, FL_W_STOPPING, FL_W_STOPPED, -1}, /* asked to stop */
        {FL_W_WORKING, FL_W_EXEC_TTL, -1, -1, -1},
        {FL_W_READY, FL_W_DESTROYED, -1, -1, -1}, /* reset */
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(seqs); i++) {
        int from = FL_W_INACTIVE;
        fl_srvm_worker("http", -1, from, false);
        for (int k = 0; k < 5 && seqs[i][k] >= 0; k++) {
            fl_srvm_worker("http", from, seqs[i][k], false);
            from = seqs[i][k];
        }
        fl_srvm_worker("http", from, -1, true);
    }
    /* a shutdown is not a restart */
    fl_srvm_worker("http", -1, FL_W_READY, false);
    fl_srvm_worker("http", FL_W_READY, FL_W_DESTROYED, true);
    fl_srvm_worker("http", FL_W_DESTROYED, -1, true);
    const fl_srvm_counters_t *c = &S.seg[slot].c;
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_MAX_JOBS], 1);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_ERRORED], 0);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_TTL], 1);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_INVALID], 1);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_EXEC_TTL], 1);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_DESTROYED], 1);
    for (int s = 0; s < FL_W_NSTATES; s++)
        CU_ASSERT_EQUAL(c->workers[0][s], 0);
    fl_srvm_free();
}

/* ---- a real pool of php-cli workers ---- */

static fl_loop_t *loop;
static fl_pool_t *pool;
static bool pool_ready, pool_stopped;
static bool (*until)(void);
static int64_t until_deadline;
static int done_tasks;

static void on_ready(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    FL_UNUSED(data);
    pool_ready = true;
}

static void on_stopped(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    FL_UNUSED(data);
    pool_stopped = true;
}

static void poll_tick(fl_loop_t *l, void *data)
{
    FL_UNUSED(data);
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        if (pool)
            fl_pool_reaped(pool, pid, st);
    if ((until && until()) || fl_now_ms() > until_deadline) {
        fl_loop_stop(l);
        return;
    }
    fl_timer_add(l, 5, poll_tick, NULL);
}

static bool run_until(bool (*pred)(void), int64_t ms)
{
    until = pred;
    until_deadline = fl_now_ms() + ms;
    fl_timer_add(loop, 5, poll_tick, NULL);
    fl_loop_run(loop);
    return pred();
}

static void task_frame(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body)
{
    FL_UNUSED(t);
    FL_UNUSED(ctx);
    FL_UNUSED(body);
    if (!(f->stream & FL_STREAM_MORE))
        done_tasks++;
}

static void task_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    FL_UNUSED(t);
    FL_UNUSED(why);
    FL_UNUSED(detail);
    done_tasks++;
}

static void task_init(fl_task_t *t, const char *path)
{
    memset(t, 0, sizeof(*t));
    char ctx[256];
    int n = snprintf(ctx, sizeof(ctx), "{\"method\":\"GET\",\"uri\":\"http://t%s\"}", path);
    uint32_t opt = (uint32_t)n;
    fl_frame_encode(&t->frame, FL_FRAME_JSON, 0, &opt, 1, ctx, (size_t)n);
    t->on_frame = task_frame;
    t->on_fail = task_fail;
}

static bool is_ready(void)
{
    return pool_ready;
}
static bool is_stopped(void)
{
    return pool_stopped;
}
static int want_done;
static bool tasks_done(void)
{
    return done_tasks >= want_done;
}
static bool two_ready(void)
{
    return fl_srvm_mine()->workers[0][FL_W_READY] == 2;
}

static void test_real_pool_gauges_and_restarts(void)
{
    static char *argv[] = {"php", "tests/php/behave.php", NULL};
    CU_ASSERT_EQUAL_FATAL(fl_srvm_init(false), 0);
    fl_srvm_forked(fl_srvm_acquire(), 0);
    const fl_srvm_counters_t *c = fl_srvm_mine();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    loop = fl_loop_new(1024);
    fl_pool_opts_t o = {.argv = argv,
                        .envp = environ,
                        .num_workers = 2,
                        .max_jobs = 2,
                        .allocate_timeout_ms = 10000,
                        .destroy_timeout_ms = 5000,
                        .reset_timeout_ms = 5000,
                        .name = "http",
                        .on_ready = on_ready,
                        .on_stopped = on_stopped};
    pool = fl_pool_new(loop, &o);
    CU_ASSERT_EQUAL_FATAL(fl_pool_start(pool), 0);
    CU_ASSERT_EQUAL(c->workers[0][FL_W_INACTIVE], 2);
    CU_ASSERT_FATAL(run_until(is_ready, 10000));
    CU_ASSERT_EQUAL(c->workers[0][FL_W_READY], 2);
    /* 3 tasks at once: two run, one waits in the queue */
    fl_task_t t[6];
    for (int i = 0; i < 3; i++) {
        task_init(&t[i], "/sleep?ms=200");
        fl_pool_submit(pool, &t[i]);
    }
    CU_ASSERT_EQUAL(c->workers[0][FL_W_WORKING], 2);
    CU_ASSERT_EQUAL(c->queued[0], 1);
    want_done = 3;
    CU_ASSERT(run_until(tasks_done, 10000));
    CU_ASSERT_EQUAL(c->queued[0], 0);
    /* 4 tasks with max_jobs 2 on 2 workers: both recycled once (their 2nd task) at least */
    for (int i = 3; i < 5; i++) {
        task_init(&t[i], "/pid");
        fl_pool_submit(pool, &t[i]);
    }
    want_done = 5;
    CU_ASSERT(run_until(tasks_done, 10000));
    CU_ASSERT(run_until(two_ready, 10000));
    CU_ASSERT(c->restarts[0][FL_W_MAX_JOBS] >= 2);
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_ERRORED], 0);
    /* a worker that dies mid-task */
    task_init(&t[5], "/exit?code=3");
    fl_pool_submit(pool, &t[5]);
    want_done = 6;
    CU_ASSERT(run_until(tasks_done, 10000));
    CU_ASSERT_EQUAL(c->restarts[0][FL_W_ERRORED], 1);
    CU_ASSERT(run_until(two_ready, 10000));
    /* shutdown: no restart counted, no worker left */
    uint64_t before[FL_W_NSTATES];
    memcpy(before, c->restarts[0], sizeof(before));
    fl_pool_shutdown(pool);
    CU_ASSERT(run_until(is_stopped, 10000));
    CU_ASSERT_EQUAL(memcmp(before, c->restarts[0], sizeof(before)), 0);
    int64_t live = 0;
    for (int s = 0; s < FL_W_NSTATES; s++)
        live += c->workers[0][s];
    CU_ASSERT_EQUAL(live, 0);
    for (int i = 0; i < 6; i++)
        fl_buf_free(&t[i].frame);
    fl_pool_free(pool);
    pool = NULL;
    fl_loop_free(loop);
    fl_srvm_free();
}

/* ---- the text exposition ---- */

static void test_render(void)
{
    CU_ASSERT_EQUAL_FATAL(fl_srvm_init(true), 0);
    int slot = fl_srvm_acquire();
    fl_srvm_forked(slot, 0);
    uint64_t t0 = t0_at(30000000); /* 30 ms */
    fl_srvm_http_done(&t0, "POST", 201, 5, 6);
    t0 = 0; /* never parsed: duration 0, method "other" */
    fl_srvm_http_done(&t0, NULL, 400, 0, 12);
    fl_srvm_worker("jobs", -1, FL_W_READY, false);
    fl_srvm_worker("http", -1, FL_W_WORKING, false);
    fl_srvm_worker("http", FL_W_WORKING, FL_W_MAX_JOBS, false);
    fl_srvm_rpc_call("kv.Set");
    fl_srvm_rpc_call("kv.Set");
    fl_srvm_rpc_call("lock.Lock");
    fl_srvm_job_count("emails", FL_SRVM_JOB_PUSHED);
    fl_srvm_job_count("we\"ird\\", FL_SRVM_JOB_DEAD);
    fl_srvm_job_count("emails", FL_SRVM_JOB_NACKED);
    fl_srvm_job_count("emails", 99); /* ignored */
    S.owner[slot] = getpid();        /* counted as a live slot */
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_srvm_render(&b), 0);
    fl_buf_append(&b, "", 1);
    const char *want[] = {
        "# TYPE rr_http_request_total counter\n",
        "rr_http_request_total{method=\"POST\",status=\"2xx\"} 1\n",
        "rr_http_request_total{method=\"other\",status=\"4xx\"} 1\n",
        "rr_http_request_duration_seconds_bucket{status=\"2xx\",le=\"0.025\"} 0\n",
        "rr_http_request_duration_seconds_bucket{status=\"2xx\",le=\"0.05\"} 1\n",
        "rr_http_request_duration_seconds_bucket{status=\"2xx\",le=\"+Inf\"} 1\n",
        "rr_http_request_duration_seconds_count{status=\"2xx\"} 1\n",
        "rr_http_request_duration_seconds_bucket{status=\"4xx\",le=\"0.005\"} 1\n",
        "rr_http_read_bytes_total 5\n",
        "rr_http_write_bytes_total 18\n",
        "rr_http_total_workers 1\n",
        "rr_http_workers_by_state{state=\"maxJobsReached\"} 1\n",
        "rr_http_worker_restarts_total{reason=\"maxJobsReached\"} 1\n",
        "rr_jobs_workers_ready 1\n",
        "rr_jobs_push_ok{pipeline=\"emails\"} 1\n",
        "rr_jobs_jobs_err{pipeline=\"emails\"} 1\n",
        "rr_jobs_jobs_err{pipeline=\"we\\\"ird\\\\\"} 1\n",
        "rr_jobs_jobs_dead{pipeline=\"we\\\"ird\\\\\"} 1\n",
        "rr_rpc_calls_total{method=\"kv.Set\"} 2\n",
        "rr_rpc_calls_total{method=\"lock.Lock\"} 1\n",
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(want); i++)
        if (!strstr(b.data, want[i])) {
            printf("missing: %s", want[i]);
            CU_FAIL("a line is missing from the exposition");
        }
    CU_ASSERT_PTR_NULL(strstr(b.data, "rr_http_request_total{method=\"GET\""));
    /* each line is a HELP, a TYPE or a sample "name[{...}] value" */
    for (char *line = b.data; *line;) {
        char *nl = strchr(line, '\n');
        CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
        bool ok = !strncmp(line, "# HELP rr_", 10) || !strncmp(line, "# TYPE rr_", 10) ||
                  (!strncmp(line, "rr_", 3) && memchr(line, ' ', (size_t)(nl - line)));
        CU_ASSERT(ok);
        line = nl + 1;
    }
    fl_buf_free(&b);
    fl_srvm_free();
}

static const fl_test_t tests[] = {
    {"fork: a slot is summed live and folded at exit", test_fork_fold_and_reuse},
    {"no mapping, and every slot taken", test_full_and_off},
    {"restart reasons from transitions", test_restart_reasons},
    {"a real pool drives gauges and restarts", test_real_pool_gauges_and_restarts},
    {"text exposition", test_render},
    {NULL, NULL},
};

FL_TEST_MAIN("srvmetrics", tests)

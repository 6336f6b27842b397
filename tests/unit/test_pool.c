/* reactor/pool.c with real php-cli workers (tests/php/behave.php) on a real event loop: the
 * state table, the informer snapshot, the rolling reset (no task lost, every worker replaced,
 * a busy one after its task or at reset_timeout), debug mode, and a shutdown that lets a busy
 * worker finish. Run from the repository root (tests/run.sh does). */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../relay/spawn.c"
#include "../../reactor/ev.c"
#include "../../reactor/pool.c"
#include "test.h"

extern char **environ;

static char *worker_argv[] = {"php", "tests/php/behave.php", NULL};

/* ---- a request as the HTTP side would submit it (legacy JSON codec) ---- */

typedef struct {
    fl_task_t t;
    int status;
    char body[64];
    const char *err; /* fl_task_err_* on failure */
    bool done;
} req_t;

static void req_frame(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body)
{
    req_t *r = t->data;
    if (f->stream & FL_STREAM_MORE)
        return;
    char c[256];
    snprintf(c, sizeof(c), "%.*s", (int)ctx.len, ctx.base);
    const char *st = strstr(c, "\"status\":");
    r->status = st ? atoi(st + 9) : -1;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)body.len, body.base);
    r->done = true;
}

static void req_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    FL_UNUSED(detail);
    req_t *r = t->data;
    r->err = why;
    r->done = true;
}

static void req_init(req_t *r, const char *path, const char *query)
{
    fl_buf_free(&r->t.frame);
    memset(r, 0, sizeof(*r));
    char ctx[256];
    int n =
        snprintf(ctx, sizeof(ctx),
                 "{\"method\":\"GET\",\"uri\":\"http://t%s\",\"rawQuery\":\"%s\"}", path, query);
    uint32_t opt = (uint32_t)n;
    fl_frame_encode(&r->t.frame, FL_FRAME_JSON, 0, &opt, 1, ctx, (size_t)n);
    r->t.label = fl_slice_cstr(path);
    r->t.on_frame = req_frame;
    r->t.on_fail = req_fail;
    r->t.data = r;
}

/* ---- driving the loop ---- */

static fl_loop_t *loop;
static fl_pool_t *pool;
static bool pool_ready, pool_stopped;
static bool (*until)(void);
static int64_t until_deadline;

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

/* Every 5 ms: reap children (the reactor does it on SIGCHLD), check the condition. */
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

static bool is_ready(void)
{
    return pool_ready;
}
static bool is_stopped(void)
{
    return pool_stopped;
}

static req_t *watched[8];
static size_t nwatched;
static bool all_done(void)
{
    for (size_t i = 0; i < nwatched; i++)
        if (!watched[i]->done)
            return false;
    return true;
}

static bool run_reqs(req_t **rs, size_t n, int64_t ms)
{
    nwatched = n;
    for (size_t i = 0; i < n; i++)
        watched[i] = rs[i];
    return run_until(all_done, ms);
}

static pid_t get_pid(void)
{
    req_t r = {0};
    req_init(&r, "/pid", "");
    fl_pool_submit(pool, &r.t);
    req_t *rs[] = {&r};
    run_reqs(rs, 1, 5000);
    pid_t pid = r.done && !r.err && r.status == 200 ? (pid_t)atoi(r.body) : -1;
    fl_buf_free(&r.t.frame);
    return pid;
}

static void start_pool(unsigned n, void (*tweak)(fl_pool_opts_t *))
{
    fl_pool_opts_t o = {
        .argv = worker_argv,
        .envp = environ,
        .num_workers = n,
        .allocate_timeout_ms = 10000,
        .destroy_timeout_ms = 5000,
        .reset_timeout_ms = 10000,
        .name = "test",
        .on_ready = on_ready,
        .on_stopped = on_stopped,
    };
    if (tweak)
        tweak(&o);
    signal(SIGPIPE, SIG_IGN); /* as the reactor: a dead worker's socket is an error, not a kill */
    loop = fl_loop_new(1024);
    pool = fl_pool_new(loop, &o);
    pool_ready = pool_stopped = false;
    CU_ASSERT_EQUAL_FATAL(fl_pool_start(pool), 0);
    CU_ASSERT_FATAL(run_until(is_ready, 10000));
}

/* Children SIGKILLed by fl_pool_free: collect them so no zombie outlives the test. */
static void reap_all(void)
{
    for (int i = 0; i < 100 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
        usleep(2000);
}

static void stop_pool(void)
{
    fl_pool_shutdown(pool);
    CU_ASSERT(run_until(is_stopped, 15000));
    fl_pool_free(pool);
    pool = NULL;
    reap_all();
    fl_loop_free(loop);
    loop = NULL;
}

static size_t snapshot(fl_worker_info_t *out, size_t max)
{
    return fl_pool_workers(pool, out, max);
}

static bool has_pid(const fl_worker_info_t *ws, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++)
        if (ws[i].pid == pid)
            return true;
    return false;
}

/* ---- tests ---- */

static void test_transition_table(void)
{
    /* rr-config §5.1 */
    CU_ASSERT(fl_worker_transition_allowed(FL_W_INACTIVE, FL_W_READY));
    CU_ASSERT(fl_worker_transition_allowed(FL_W_WORKING, FL_W_READY));
    CU_ASSERT(!fl_worker_transition_allowed(FL_W_INVALID, FL_W_READY));
    CU_ASSERT(!fl_worker_transition_allowed(FL_W_STOPPING, FL_W_READY));
    CU_ASSERT(fl_worker_transition_allowed(FL_W_READY, FL_W_WORKING));
    CU_ASSERT(!fl_worker_transition_allowed(FL_W_INACTIVE, FL_W_WORKING));
    CU_ASSERT(!fl_worker_transition_allowed(FL_W_INVALID, FL_W_WORKING));
    for (int s = 0; s < FL_W_NSTATES; s++) {
        CU_ASSERT(fl_worker_transition_allowed(s, FL_W_DESTROYED));
        CU_ASSERT(fl_worker_transition_allowed(s, FL_W_ERRORED) == (s != FL_W_DESTROYED));
        CU_ASSERT(fl_worker_transition_allowed(s, FL_W_STOPPING) == (s != FL_W_DESTROYED));
    }
    CU_ASSERT(!fl_worker_transition_allowed(FL_W_DESTROYED, FL_W_STOPPED));
    CU_ASSERT_STRING_EQUAL(fl_worker_status_str(FL_W_MAX_JOBS), "maxJobsReached");
    CU_ASSERT_STRING_EQUAL(fl_worker_status_str(FL_W_IDLE_TTL), "idleTTLReached");
    CU_ASSERT_STRING_EQUAL(fl_worker_status_str(FL_W_MAX_MEMORY), "maxMemoryReached");
    CU_ASSERT_STRING_EQUAL(fl_worker_status_str(FL_W_READY), "ready");
    CU_ASSERT_STRING_EQUAL(fl_worker_status_str(99), "undefined");
}

static void test_snapshot(void)
{
    start_pool(2, NULL);
    fl_worker_info_t ws[8];
    size_t n = snapshot(ws, 8);
    CU_ASSERT_EQUAL(n, 2);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(ws[i].status, FL_W_READY);
        CU_ASSERT_STRING_EQUAL(ws[i].status_str, "ready");
        CU_ASSERT(ws[i].rss > (1u << 20) && ws[i].rss < (1u << 30));
        CU_ASSERT(ws[i].created_ns <= now_ns && ws[i].created_ns > now_ns - 60000000000LL);
        CU_ASSERT_EQUAL(ws[i].num_execs, 0);
    }
    CU_ASSERT_EQUAL(snapshot(ws, 1), 1);

    req_t slow = {0};
    req_init(&slow, "/sleep", "ms=300");
    fl_pool_submit(pool, &slow.t);
    n = snapshot(ws, 8);
    int working = 0;
    for (size_t i = 0; i < n; i++)
        working += ws[i].status == FL_W_WORKING && strcmp(ws[i].status_str, "working") == 0;
    CU_ASSERT_EQUAL(working, 1);
    req_t *rs[] = {&slow};
    CU_ASSERT(run_reqs(rs, 1, 5000));
    CU_ASSERT_EQUAL(slow.status, 200);
    n = snapshot(ws, 8);
    uint64_t execs = 0;
    for (size_t i = 0; i < n; i++)
        execs += ws[i].num_execs;
    CU_ASSERT_EQUAL(execs, 1);
    fl_buf_free(&slow.t.frame);
    stop_pool();
}

static pid_t old_pids[4];
static size_t nold;

static bool all_replaced_pids_gone(void)
{
    fl_worker_info_t ws[8];
    size_t n = snapshot(ws, 8);
    if (n != 2)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ws[i].status != FL_W_READY)
            return false;
    for (size_t i = 0; i < nold; i++)
        if (has_pid(ws, n, old_pids[i]) || kill(old_pids[i], 0) == 0)
            return false;
    return true;
}

static void test_reset_rolls_every_worker(void)
{
    start_pool(2, NULL);
    fl_worker_info_t ws[8];
    nold = snapshot(ws, 8);
    for (size_t i = 0; i < nold; i++)
        old_pids[i] = ws[i].pid;

    req_t slow = {0};
    req_init(&slow, "/sleep", "ms=700");
    fl_pool_submit(pool, &slow.t);
    pid_t busy = slow.t.worker->pid;
    fl_pool_reset(pool);
    /* replacements boot beside the old workers, which keep serving meanwhile */
    CU_ASSERT(snapshot(ws, 8) == 4);
    int fails = 0, served = 0;
    for (int i = 0; i < 20; i++) {
        req_t r = {0};
        req_init(&r, "/pid", "");
        fl_pool_submit(pool, &r.t);
        req_t *rs[] = {&r};
        run_reqs(rs, 1, 5000);
        fails += r.err != NULL;
        served += r.status == 200;
        fl_buf_free(&r.t.frame);
    }
    CU_ASSERT_EQUAL(fails, 0);
    CU_ASSERT_EQUAL(served, 20);
    req_t *rs[] = {&slow};
    CU_ASSERT(run_reqs(rs, 1, 5000));
    CU_ASSERT_PTR_NULL(slow.err); /* the busy old worker finished its task first */
    CU_ASSERT_EQUAL(slow.status, 200);
    CU_ASSERT_STRING_EQUAL(slow.body, "slept 700");
    CU_ASSERT(run_until(all_replaced_pids_gone, 15000));
    CU_ASSERT(kill(busy, 0) < 0);
    pid_t now = get_pid();
    CU_ASSERT(now > 0 && now != old_pids[0] && now != old_pids[1]);
    fl_buf_free(&slow.t.frame);
    stop_pool();
}

static void short_reset_timeout(fl_pool_opts_t *o)
{
    o->reset_timeout_ms = 300;
}

static void test_reset_timeout_kills_a_busy_worker(void)
{
    start_pool(1, short_reset_timeout);
    pid_t old = get_pid();
    req_t slow = {0};
    req_init(&slow, "/sleep", "ms=5000");
    fl_pool_submit(pool, &slow.t);
    int64_t t0 = fl_now_ms();
    fl_pool_reset(pool);
    req_t *rs[] = {&slow};
    CU_ASSERT(run_reqs(rs, 1, 4000));
    int64_t took = fl_now_ms() - t0;
    CU_ASSERT(slow.err == fl_task_err_died);
    CU_ASSERT(took >= 300 && took < 3000);
    pid_t now = get_pid();
    CU_ASSERT(now > 0 && now != old);
    fl_buf_free(&slow.t.frame);
    stop_pool();
}

static void debug_mode(fl_pool_opts_t *o)
{
    o->debug = true;
}

static void test_debug_mode_spawns_per_task(void)
{
    start_pool(1, debug_mode);
    fl_worker_info_t ws[4];
    CU_ASSERT_EQUAL(snapshot(ws, 4), 0); /* nothing in advance */
    pid_t a = get_pid(), b = get_pid(), c = get_pid();
    CU_ASSERT(a > 0 && b > 0 && c > 0);
    CU_ASSERT(a != b && b != c && a != c);
    stop_pool();
}

static void test_shutdown_lets_a_busy_worker_finish(void)
{
    start_pool(1, NULL);
    req_t slow = {0};
    req_init(&slow, "/sleep", "ms=300");
    fl_pool_submit(pool, &slow.t);
    fl_pool_shutdown(pool);
    req_t late = {0};
    req_init(&late, "/pid", "");
    fl_pool_submit(pool, &late.t);
    CU_ASSERT(late.err == fl_task_err_stopping);
    CU_ASSERT(run_until(is_stopped, 5000));
    CU_ASSERT_EQUAL(slow.status, 200);
    CU_ASSERT_PTR_NULL(slow.err);
    fl_pool_free(pool);
    pool = NULL;
    reap_all();
    fl_loop_free(loop);
    loop = NULL;
    fl_buf_free(&slow.t.frame);
    fl_buf_free(&late.t.frame);
}

static bool respawn_pending(void)
{
    return pool->respawn[0].id != 0;
}
static bool settled(void)
{
    return fl_pool_settled(pool);
}

/* informer.AddWorker / RemoveWorker: growing moves the respawn timers' array (a respawn is
 * pending in slot 0 meanwhile: ASan sees a stale pointer), a removal with every worker busy
 * waits for the next task to end and fails none, and the last worker stays. */
static void test_add_and_remove_workers(void)
{
    start_pool(1, NULL);
    pid_t first = get_pid();
    pool->fail_streak = 3; /* the respawn waits 400 ms: still pending when the array moves */
    kill(first, SIGKILL);
    CU_ASSERT_FATAL(run_until(respawn_pending, 5000));
    CU_ASSERT_EQUAL(fl_pool_add_worker(pool), 0);
    CU_ASSERT_EQUAL(fl_pool_size(pool), 2);
    CU_ASSERT(run_until(settled, 5000));
    fl_worker_info_t ws[8];
    CU_ASSERT_EQUAL(snapshot(ws, 8), 2);
    CU_ASSERT_FALSE(has_pid(ws, 2, first));

    req_t a = {0}, b = {0};
    req_init(&a, "/sleep", "ms=300");
    req_init(&b, "/sleep", "ms=300");
    fl_pool_submit(pool, &a.t);
    fl_pool_submit(pool, &b.t);
    CU_ASSERT_EQUAL(fl_pool_remove_worker(pool), 0);
    CU_ASSERT_EQUAL(fl_pool_remove_worker(pool), -1); /* one would be left with none */
    CU_ASSERT_FALSE(fl_pool_settled(pool));
    CU_ASSERT_EQUAL(fl_pool_size(pool), 2); /* both busy: nobody goes yet */
    req_t *rs[] = {&a, &b};
    CU_ASSERT(run_reqs(rs, 2, 5000));
    CU_ASSERT(a.status == 200 && b.status == 200 && !a.err && !b.err);
    CU_ASSERT(run_until(settled, 5000));
    CU_ASSERT_EQUAL(fl_pool_size(pool), 1);
    CU_ASSERT_EQUAL(snapshot(ws, 8), 1);
    CU_ASSERT(get_pid() == ws[0].pid);
    /* an idle worker goes at once; an add cancels a removal still waiting */
    CU_ASSERT_EQUAL(fl_pool_add_worker(pool), 0);
    CU_ASSERT(run_until(settled, 5000));
    CU_ASSERT_EQUAL(fl_pool_remove_worker(pool), 0);
    CU_ASSERT(run_until(settled, 5000));
    CU_ASSERT_EQUAL(snapshot(ws, 8), 1);
    fl_buf_free(&a.t.frame);
    fl_buf_free(&b.t.frame);
    stop_pool();
}

static char *official_argv[] = {"php", "tests/php/official_http.php", NULL};
static void official_worker(fl_pool_opts_t *o)
{
    o->argv = official_argv;
}

static void submit_pair(req_t *a, req_t *b)
{
    fl_pool_submit(pool, &a->t);
    fl_pool_submit(pool, &b->t);
    req_t *rs[] = {a, b};
    CU_ASSERT(run_reqs(rs, 2, 5000));
}

/* Frames that trail an answer (goridge spec §14 item 3), with the next task already sent to
 * the worker when they arrive: an ERROR 100 ms after respond(500), a stop 100 ms after an
 * answer. The PID barrier tells them from the next task's answer: that task gets its own
 * answer and runs once; the worker that asked to stop goes after it. An ERROR that is the
 * answer still fails its task. */
static void test_frames_left_over_from_the_previous_task(void)
{
    start_pool(1, official_worker);
    pid_t pid = get_pid();
    CU_ASSERT_FATAL(pid > 0);
    req_t a = {0}, b = {0};
    req_init(&a, "/throw500", "ms=100");
    req_init(&b, "/pid", "");
    submit_pair(&a, &b);
    CU_ASSERT(a.status == 500 && !a.err);
    CU_ASSERT(b.status == 200 && !b.err && atoi(b.body) == pid);
    req_init(&a, "/throw", "");
    req_init(&b, "/pid", "");
    submit_pair(&a, &b);
    CU_ASSERT_PTR_EQUAL(a.err, fl_task_err_worker);
    CU_ASSERT(b.status == 200 && !b.err && atoi(b.body) == pid);
    req_init(&a, "/stop-idle", "ms=100");
    req_init(&b, "/pid", "");
    submit_pair(&a, &b);
    CU_ASSERT(a.status == 200 && !a.err);
    CU_ASSERT(b.status == 200 && !b.err && atoi(b.body) == pid);
    pid_t next = get_pid();
    CU_ASSERT(next > 0 && next != pid);
    fl_buf_free(&a.t.frame);
    fl_buf_free(&b.t.frame);
    stop_pool();
}

static const fl_test_t tests[] = {
    {"transition table and names", test_transition_table},
    {"informer snapshot", test_snapshot},
    {"reset rolls every worker, no task lost", test_reset_rolls_every_worker},
    {"reset_timeout kills a busy worker", test_reset_timeout_kills_a_busy_worker},
    {"debug mode: a fresh worker per task", test_debug_mode_spawns_per_task},
    {"shutdown lets a busy worker finish", test_shutdown_lets_a_busy_worker_finish},
    {"add and remove workers at run time", test_add_and_remove_workers},
    {"frames left over from the previous task", test_frames_left_over_from_the_previous_task},
    {NULL, NULL},
};

FL_TEST_MAIN("pool", tests)

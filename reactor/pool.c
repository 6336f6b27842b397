#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"
#include "spawn.h"

const char fl_task_err_worker[] = "worker error";
const char fl_task_err_died[] = "worker died";
const char fl_task_err_no_workers[] = "no free workers";
const char fl_task_err_queue_full[] = "max queue size reached";
const char fl_task_err_stopping[] = "pool is stopping";

#define SOFT_STOP_MS 10000 /* RoadRunner's fixed wait after a stop frame before SIGKILL */
#define READ_CHUNK 65536

struct fl_worker {
    fl_pool_t *pool;
    unsigned slot;
    pid_t pid;
    int fd, errfd;
    int state;
    fl_buf_t in;
    fl_buf_t ctl;            /* queued control frames (PID request, stop, PONG) */
    size_t task_off;         /* bytes of task->frame already written */
    fl_task_t *task;
    bool orphan;             /* the task's owner went away; discard the answer */
    uint64_t jobs, max_jobs;
    fl_timer_id timer;       /* handshake deadline, or kill deadline after a stop */
    fl_worker_t *next_idle;
    fl_worker_t *next_dead;
    fl_worker_t *next_all;   /* every live worker, retiring ones included */
    bool dead;               /* freed at the next collect: callers up the stack may hold it */
};

typedef struct {
    fl_pool_t *pool;
    unsigned slot;
    fl_timer_id id;
} fl_respawn_t;

#define NO_SLOT ((unsigned)-1)

struct fl_pool {
    fl_loop_t *loop;
    fl_pool_opts_t o;
    fl_worker_t **slots;
    fl_worker_t *idle;
    fl_worker_t *all;
    unsigned nidle, nlive;
    fl_task_t *qhead, *qtail;
    unsigned nqueued;
    unsigned fail_streak;    /* consecutive workers lost before their handshake */
    bool starting, ready_sent, stopping, stopped_sent;
    fl_respawn_t *respawn;   /* per slot */
    fl_worker_t *graveyard;
    fl_timer_id collect_timer;
};

static void worker_io(fl_loop_t *loop, int fd, int events, void *data);
static void worker_fail(fl_worker_t *w, const char *reason);
static void spawn_slot(fl_pool_t *p, unsigned slot);
static void dispatch(fl_pool_t *p);

static const char *pname(const fl_pool_t *p)
{
    return p->o.name ? p->o.name : "pool";
}

fl_pool_t *fl_pool_new(fl_loop_t *loop, const fl_pool_opts_t *o)
{
    fl_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->o = *o;
    if (p->o.max_frame == 0)
        p->o.max_frame = 1024u * 1024 * 1024;
    unsigned n = o->num_workers ? o->num_workers : 1;
    p->slots = calloc(n, sizeof(*p->slots));
    p->respawn = calloc(n, sizeof(*p->respawn));
    if (!p->slots || !p->respawn) {
        fl_pool_free(p);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        p->respawn[i].pool = p;
        p->respawn[i].slot = i;
    }
    p->o.num_workers = n;
    return p;
}

unsigned fl_pool_idle(const fl_pool_t *p) { return p->nidle; }
unsigned fl_pool_queued(const fl_pool_t *p) { return p->nqueued; }
unsigned fl_pool_size(const fl_pool_t *p) { return p->o.num_workers; }

/* ---- worker output: control frames and the task frame, flushed without blocking ---- */

static void worker_want_write(fl_worker_t *w, bool on)
{
    int mask = FL_EV_READ | (on ? FL_EV_WRITE : 0);
    if (fl_io_mask(w->pool->loop, w->fd) != mask)
        fl_io_set(w->pool->loop, w->fd, mask, worker_io, w);
}

static int flush_bytes(fl_worker_t *w, const char *p, size_t n, size_t *off)
{
    while (*off < n) {
        ssize_t k = write(w->fd, p + *off, n - *off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            return 1;
        if (k <= 0)
            return -1;
        *off += (size_t)k;
    }
    return 0;
}

static void worker_flush(fl_worker_t *w)
{
    if (w->dead)
        return;
    size_t off = 0;
    int r = flush_bytes(w, w->ctl.data, w->ctl.len, &off);
    fl_buf_consume(&w->ctl, off);
    if (r == 0 && w->task && !w->orphan && w->task_off < w->task->frame.len)
        r = flush_bytes(w, w->task->frame.data, w->task->frame.len, &w->task_off);
    if (r < 0) {
        worker_fail(w, strerror(errno));
        return;
    }
    worker_want_write(w, r == 1);
}

static void worker_send_ctl(fl_worker_t *w, int (*make)(fl_buf_t *))
{
    if (make(&w->ctl) < 0)
        return;
    worker_flush(w);
}

/* ---- lifecycle ---- */

static void idle_push(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    w->state = FL_W_READY;
    w->next_idle = p->idle;
    p->idle = w;
    p->nidle++;
}

static void idle_remove(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    for (fl_worker_t **pp = &p->idle; *pp; pp = &(*pp)->next_idle) {
        if (*pp == w) {
            *pp = w->next_idle;
            p->nidle--;
            w->next_idle = NULL;
            return;
        }
    }
}

static void check_stopped(fl_pool_t *p)
{
    if (p->stopping && p->nlive == 0 && !p->stopped_sent) {
        p->stopped_sent = true;
        if (p->o.on_stopped)
            p->o.on_stopped(p, p->o.data);
    }
}

static void collect(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_pool_t *p = data;
    p->collect_timer = 0;
    while (p->graveyard) {
        fl_worker_t *w = p->graveyard;
        p->graveyard = w->next_dead;
        free(w);
    }
}

/* Releases the worker's resources now; the struct itself at the next collect, because the
 * callers up the stack (frame parsing, io callbacks) may still look at w->dead. */
static void worker_free(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (w->dead)
        return;
    if (w->state == FL_W_READY)
        idle_remove(w);
    fl_timer_del(p->loop, w->timer);
    w->timer = 0;
    fl_io_del(p->loop, w->fd);
    close(w->fd);
    /* stderr stays open until EOF so the worker's last words are logged; see stderr_io. */
    fl_buf_free(&w->in);
    fl_buf_free(&w->ctl);
    if (w->slot != NO_SLOT && p->slots[w->slot] == w)
        p->slots[w->slot] = NULL;
    for (fl_worker_t **pp = &p->all; *pp; pp = &(*pp)->next_all) {
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    }
    p->nlive--;
    w->dead = true;
    w->next_dead = p->graveyard;
    p->graveyard = w;
    if (!p->collect_timer)
        p->collect_timer = fl_timer_add(p->loop, 0, collect, p);
}

static void respawn_cb(fl_loop_t *loop, void *data);

static void schedule_respawn(fl_pool_t *p, unsigned slot)
{
    if (p->stopping || slot == NO_SLOT)
        return;
    /* Back off while workers keep dying before they can even answer the handshake. */
    int64_t delay = 0;
    if (p->fail_streak) {
        delay = 100LL << (p->fail_streak > 6 ? 6 : p->fail_streak - 1);
        if (delay > 5000)
            delay = 5000;
    }
    if (p->fail_streak >= 5)
        fl_error("%s pool: workers keep dying before start-up (%u in a row); next try in %lld ms",
                 pname(p), p->fail_streak, (long long)delay);
    fl_timer_del(p->loop, p->respawn[slot].id);
    p->respawn[slot].id = fl_timer_add(p->loop, delay, respawn_cb, &p->respawn[slot]);
}

static void respawn_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_respawn_t *r = data;
    r->id = 0;
    spawn_slot(r->pool, r->slot);
}

static void fatal(fl_pool_t *p, const char *msg)
{
    fl_error("%s pool: %s", pname(p), msg);
    if (p->starting && p->o.on_fatal) {
        p->starting = false;
        p->o.on_fatal(p, msg, p->o.data);
    }
}

/* Fatal for the worker: kill it, fail its task, replace it. */
static void worker_fail(fl_worker_t *w, const char *reason)
{
    fl_pool_t *p = w->pool;
    bool before_handshake = w->state == FL_W_INACTIVE;
    unsigned slot = w->slot;
    if (w->state != FL_W_STOPPING)
        fl_error("%s pool: worker %d failed: %s", pname(p), (int)w->pid, reason);
    kill(w->pid, SIGKILL);
    fl_task_t *t = w->orphan ? NULL : w->task;
    bool stopping = w->state == FL_W_STOPPING;
    worker_free(w);
    if (t) {
        t->worker = NULL;
        t->on_fail(t, fl_task_err_died, fl_slice_cstr(reason));
    }
    if (before_handshake) {
        p->fail_streak++;
        if (p->starting) {
            char msg[512];
            snprintf(msg, sizeof(msg), "worker failed during start-up: %s", reason);
            fatal(p, msg);
            return;
        }
    }
    if (!stopping)
        schedule_respawn(p, slot);
    check_stopped(p);
    dispatch(p);
}

static void handshake_timeout(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_worker_t *w = data;
    w->timer = 0;
    worker_fail(w, w->state == FL_W_STOPPING ? "did not exit after stop" : "PID handshake timed out");
}

static void stderr_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    char buf[READ_CHUNK];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        fl_info("worker %d: %.*s", (int)(intptr_t)data, (int)n, buf);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    fl_io_del(loop, fd);
    close(fd);
}

static void worker_retire(fl_worker_t *w, const char *why)
{
    fl_debug("%s pool: worker %d stopping: %s", pname(w->pool), (int)w->pid, why);
    if (w->state == FL_W_READY)
        idle_remove(w);
    w->state = FL_W_STOPPING;
    /* The slot is freed at once so the replacement starts while this one winds down. */
    unsigned slot = w->slot;
    fl_pool_t *p = w->pool;
    p->slots[slot] = NULL;
    w->slot = NO_SLOT;
    worker_send_ctl(w, fl_frame_stop);
    if (!w->dead) {
        fl_timer_del(p->loop, w->timer);
        w->timer = fl_timer_add(p->loop, SOFT_STOP_MS, handshake_timeout, w);
    }
    schedule_respawn(p, slot);
}

static void spawn_slot(fl_pool_t *p, unsigned slot)
{
    if (p->stopping || p->slots[slot])
        return;
    fl_spawned_t s;
    char err[512];
    if (fl_spawn(p->o.argv, p->o.envp, &s, err, sizeof(err)) < 0) {
        p->fail_streak++;
        if (p->starting) {
            fatal(p, err);
            return;
        }
        fl_error("%s pool: %s", pname(p), err);
        schedule_respawn(p, slot);
        return;
    }
    fl_worker_t *w = calloc(1, sizeof(*w));
    if (!w) {
        kill(s.pid, SIGKILL);
        close(s.relay_fd);
        close(s.err_fd);
        schedule_respawn(p, slot);
        return;
    }
    w->pool = p;
    w->slot = slot;
    w->pid = s.pid;
    w->fd = s.relay_fd;
    w->errfd = s.err_fd;
    w->state = FL_W_INACTIVE;
    /* Jitter max_jobs by 0-14% so workers do not all restart at once (as RoadRunner). */
    if (p->o.max_jobs)
        w->max_jobs = p->o.max_jobs + (uint64_t)p->o.max_jobs * (uint64_t)(rand() % 15) / 100;
    p->slots[slot] = w;
    w->next_all = p->all;
    p->all = w;
    p->nlive++;
    fl_io_set(p->loop, w->errfd, FL_EV_READ, stderr_io, (void *)(intptr_t)w->pid);
    fl_io_set(p->loop, w->fd, FL_EV_READ, worker_io, w);
    w->timer = fl_timer_add(p->loop, p->o.allocate_timeout_ms, handshake_timeout, w);
    fl_buf_t b = {0};
    if (fl_frame_pid_request(&b, (int)getpid()) == 0)
        fl_buf_append(&w->ctl, b.data, b.len);
    fl_buf_free(&b);
    worker_flush(w);
    fl_debug("%s pool: spawned worker %d in slot %u", pname(p), (int)w->pid, slot);
}

int fl_pool_start(fl_pool_t *p)
{
    p->starting = true;
    for (unsigned i = 0; i < p->o.num_workers && p->starting; i++)
        spawn_slot(p, i);
    return p->starting || p->ready_sent ? 0 : -1;
}

/* ---- frames from a worker ---- */

static void became_idle(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    w->task = NULL;
    w->orphan = false;
    w->task_off = 0;
    w->jobs++;
    if (w->max_jobs && w->jobs >= w->max_jobs) {
        worker_retire(w, "max_jobs reached");
        return;
    }
    idle_push(w);
    if (p->o.on_idle)
        p->o.on_idle(p, p->o.data);
}

static void on_handshake(fl_worker_t *w, const fl_frame_t *f)
{
    fl_pool_t *p = w->pool;
    long pid = (f->flags & FL_FRAME_CONTROL) ? fl_frame_parse_pid_reply(f) : -1;
    if (pid <= 0) {
        worker_fail(w, "invalid PID handshake reply");
        return;
    }
    fl_timer_del(p->loop, w->timer);
    w->timer = 0;
    p->fail_streak = 0;
    idle_push(w);
    fl_debug("%s pool: worker %d ready", pname(p), (int)w->pid);
    if (p->starting) {
        unsigned ready = 0;
        for (unsigned i = 0; i < p->o.num_workers; i++)
            ready += p->slots[i] && p->slots[i]->state == FL_W_READY;
        if (ready == p->o.num_workers) {
            p->starting = false;
            p->ready_sent = true;
            if (p->o.on_ready)
                p->o.on_ready(p, p->o.data);
        }
    }
    dispatch(p);
    if (p->o.on_idle)
        p->o.on_idle(p, p->o.data);
}

static void on_unsolicited(fl_worker_t *w, const fl_frame_t *f)
{
    if (fl_frame_is_stop_request(f)) {
        worker_retire(w, "the worker asked to be stopped");
        return;
    }
    fl_warn("%s pool: worker %d sent an unexpected frame while idle (flags 0x%02x, %u bytes); "
            "discarded",
            pname(w->pool), (int)w->pid, f->flags, f->len);
}

static void on_task_frame(fl_worker_t *w, const fl_frame_t *f)
{
    fl_pool_t *p = w->pool;
    fl_task_t *t = w->orphan ? NULL : w->task;
    if (f->stream & FL_STREAM_PING)
        worker_send_ctl(w, fl_frame_pong);
    if (f->flags & FL_FRAME_CONTROL)
        return; /* a late PID reply or similar: not an answer */
    if (f->flags & FL_FRAME_ERROR) {
        if (t) {
            t->worker = NULL;
            t->on_fail(t, fl_task_err_worker, fl_slice((const char *)f->payload, f->len));
        }
        became_idle(w);
        dispatch(p);
        return;
    }
    if (fl_frame_is_stop_request(f)) {
        /* The worker wants out: re-run the task elsewhere (it never ran it: see the idle drain). */
        w->task = NULL;
        worker_retire(w, "the worker asked to be stopped");
        if (t) {
            t->worker = NULL;
            fl_pool_submit(p, t);
        }
        return;
    }
    fl_slice_t ctx, body;
    const char *err;
    if (fl_frame_split(f, &ctx, &body, &err) < 0) {
        worker_fail(w, err);
        return;
    }
    bool more = f->stream & FL_STREAM_MORE;
    if (!more) {
        became_idle(w);
        if (t)
            t->worker = NULL;
    }
    if (t)
        t->on_frame(t, f, ctx, body);
    if (!more)
        dispatch(p);
}

static void handle_frame(fl_worker_t *w, const fl_frame_t *f)
{
    switch (w->state) {
    case FL_W_INACTIVE:
        on_handshake(w, f);
        break;
    case FL_W_READY:
        on_unsolicited(w, f);
        break;
    case FL_W_WORKING:
        on_task_frame(w, f);
        break;
    default:
        break; /* stopping: whatever it says now is of no use */
    }
}

static void report_not_found(fl_worker_t *w)
{
    /* PHP printed "Could not open input file: X" on stdout instead of speaking the protocol. */
    char msg[600];
    size_t n = w->in.len < 500 ? w->in.len : 500;
    while (n && (w->in.data[n - 1] == '\n' || w->in.data[n - 1] == '\r'))
        n--;
    snprintf(msg, sizeof(msg), "worker printed instead of speaking the protocol: %.*s", (int)n,
             w->in.data);
    worker_fail(w, msg);
}

static void parse_frames(fl_worker_t *w)
{
    size_t off = 0;
    fl_pool_t *p = w->pool;
    while (off < w->in.len) {
        fl_frame_t f;
        const char *err = NULL;
        ssize_t n = fl_frame_parse((const uint8_t *)w->in.data + off, w->in.len - off,
                                   p->o.max_frame, &f, &err);
        if (n == 0)
            break;
        if (n < 0) {
            if (err == fl_frame_err_not_found)
                report_not_found(w);
            else
                worker_fail(w, err);
            return;
        }
        off += (size_t)n;
        handle_frame(w, &f);
        if (w->dead)
            return;
    }
    fl_buf_consume(&w->in, off);
}

static void worker_read(fl_worker_t *w)
{
    for (int i = 0; i < 16; i++) {
        if (fl_buf_reserve(&w->in, READ_CHUNK) < 0) {
            worker_fail(w, "out of memory");
            return;
        }
        ssize_t n = read(w->fd, w->in.data + w->in.len, w->in.cap - w->in.len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            if (w->in.len >= 12 && memcmp(w->in.data, "Could not op", 12) == 0)
                report_not_found(w);
            else
                worker_fail(w, n == 0 ? "EOF on the relay (the worker exited)" : strerror(errno));
            return;
        }
        w->in.len += (size_t)n;
        parse_frames(w);
        if (w->dead)
            return;
    }
}

static void worker_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    fl_worker_t *w = data;
    if (events & FL_EV_READ) {
        worker_read(w);
        if (w->dead)
            return;
    }
    if (events & FL_EV_WRITE)
        worker_flush(w);
}

bool fl_pool_reaped(fl_pool_t *p, pid_t pid, int status)
{
    fl_worker_t *w = p->all;
    while (w && w->pid != pid)
        w = w->next_all;
    if (!w)
        return false;
    char why[128];
    if (WIFSIGNALED(status))
        snprintf(why, sizeof(why), "killed by signal %d", WTERMSIG(status));
    else
        snprintf(why, sizeof(why), "exited with status %d", WEXITSTATUS(status));
    if (w->state == FL_W_STOPPING) {
        fl_debug("%s pool: worker %d stopped (%s)", pname(p), (int)pid, why);
        worker_free(w);
        check_stopped(p);
    } else {
        worker_fail(w, why);
    }
    return true;
}

/* ---- dispatch ---- */

static void queue_unlink(fl_pool_t *p, fl_task_t *t)
{
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        p->qhead = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        p->qtail = t->qprev;
    t->qnext = t->qprev = NULL;
    t->queued = false;
    p->nqueued--;
    fl_timer_del(p->loop, t->timer);
    t->timer = 0;
}

static void run_on(fl_worker_t *w, fl_task_t *t)
{
    w->state = FL_W_WORKING;
    w->task = t;
    w->task_off = 0;
    w->orphan = false;
    t->worker = w;
    worker_flush(w);
}

static void dispatch(fl_pool_t *p)
{
    while (p->qhead && p->idle) {
        fl_worker_t *w = p->idle;
        p->idle = w->next_idle;
        p->nidle--;
        w->next_idle = NULL;
        fl_task_t *t = p->qhead;
        queue_unlink(p, t);
        run_on(w, t);
    }
}

static void alloc_timeout(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_task_t *t = data;
    fl_pool_t *p = t->pool;
    t->timer = 0;
    queue_unlink(p, t);
    fl_warn("%s pool: no free worker within allocate_timeout (%lld ms)", pname(p),
            (long long)p->o.allocate_timeout_ms);
    t->on_fail(t, fl_task_err_no_workers, FL_SLICE("no free workers in the pool"));
}

void fl_pool_submit(fl_pool_t *p, fl_task_t *t)
{
    t->worker = NULL;
    t->pool = p;
    if (p->stopping && p->nlive == 0) {
        t->on_fail(t, fl_task_err_stopping, FL_SLICE("the pool is stopping"));
        return;
    }
    if (p->idle && !p->qhead) {
        fl_worker_t *w = p->idle;
        p->idle = w->next_idle;
        p->nidle--;
        w->next_idle = NULL;
        run_on(w, t);
        return;
    }
    if (p->o.max_queue_size && p->nqueued >= p->o.max_queue_size) {
        t->on_fail(t, fl_task_err_queue_full, FL_SLICE("max queue size reached"));
        return;
    }
    t->queued = true;
    t->qnext = NULL;
    t->qprev = p->qtail;
    if (p->qtail)
        p->qtail->qnext = t;
    else
        p->qhead = t;
    p->qtail = t;
    p->nqueued++;
    t->timer = fl_timer_add(p->loop, p->o.allocate_timeout_ms, alloc_timeout, t);
    dispatch(p);
}

void fl_pool_cancel(fl_pool_t *p, fl_task_t *t)
{
    if (t->queued) {
        queue_unlink(p, t);
    } else if (t->worker) {
        t->worker->orphan = true;
        t->worker = NULL;
    }
}

static void stop_worker(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (w->state == FL_W_STOPPING)
        return;
    /* The reactor drains its requests before it stops the pool; whatever still runs is moot. */
    if (w->state == FL_W_WORKING)
        w->orphan = true;
    if (w->state == FL_W_READY)
        idle_remove(w);
    w->state = FL_W_STOPPING;
    worker_send_ctl(w, fl_frame_stop);
    if (w->dead)
        return;
    fl_timer_del(p->loop, w->timer);
    int64_t grace = p->o.destroy_timeout_ms < SOFT_STOP_MS ? p->o.destroy_timeout_ms : SOFT_STOP_MS;
    w->timer = fl_timer_add(p->loop, grace, handshake_timeout, w);
}

void fl_pool_shutdown(fl_pool_t *p)
{
    if (p->stopping)
        return;
    p->stopping = true;
    p->starting = false;
    for (fl_task_t *t = p->qhead; t; t = p->qhead) {
        queue_unlink(p, t);
        t->on_fail(t, fl_task_err_stopping, FL_SLICE("the pool is stopping"));
    }
    for (unsigned i = 0; i < p->o.num_workers; i++) {
        fl_timer_del(p->loop, p->respawn[i].id);
        p->respawn[i].id = 0;
    }
    fl_worker_t *next;
    for (fl_worker_t *w = p->all; w; w = next) {
        next = w->next_all; /* stop_worker may free w (write error) */
        stop_worker(w);
    }
    check_stopped(p);
}

void fl_pool_free(fl_pool_t *p)
{
    if (!p)
        return;
    while (p->all) {
        kill(p->all->pid, SIGKILL);
        worker_free(p->all);
    }
    for (unsigned i = 0; p->respawn && i < p->o.num_workers; i++)
        fl_timer_del(p->loop, p->respawn[i].id);
    fl_timer_del(p->loop, p->collect_timer);
    collect(p->loop, p);
    free(p->slots);
    free(p->respawn);
    free(p);
}

/* The worker pool of one reactor. Every worker is one php-cli process on two pipes; the pool
 * keeps exactly one task in flight per worker and a FIFO of tasks waiting for one.
 *
 * Control flow rests on a few flags per worker (up, busy, settling, retiring); w->state is the
 * RoadRunner state the informer shows, moved only through set_state() so every transition obeys
 * the table of rr-config §5.1 and is logged at debug level ("http pool: worker 12: ready ->
 * working"). Everything a worker sends is read as it arrives, idle or not, and a worker's
 * buffered frames are all handled before it can take the next task, so a stale frame is never
 * read as the answer to a new task. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"
#include "spawn.h"
#include "srvmetrics.h"

const char fl_task_err_worker[] = "worker error";
const char fl_task_err_died[] = "worker died";
const char fl_task_err_exec_ttl[] = "exec_ttl elapsed";
const char fl_task_err_no_workers[] = "no free workers";
const char fl_task_err_queue_full[] = "max queue size reached";
const char fl_task_err_stopping[] = "pool is stopping";

#define SOFT_STOP_MS 10000 /* RoadRunner's fixed wait after a stop frame before SIGKILL */
#define READ_CHUNK 65536
#define STDERR_LINE_MAX 65536 /* a longer stderr "line" is logged in pieces of this size */
#define EXCERPT_MAX 160       /* bytes of a worker's stray output quoted in the log */

/* A worker's stderr outlives the worker struct: its last words arrive after the relay EOF. */
typedef struct fl_errpipe {
    fl_pool_t *pool;
    int fd;
    pid_t pid;
    fl_buf_t line; /* a partial line, until its '\n' or EOF */
    struct fl_errpipe *next, *prev;
} fl_errpipe_t;

struct fl_worker {
    fl_pool_t *pool;
    unsigned slot; /* NO_SLOT once retiring, or once a reset gave the slot to a replacement */
    pid_t pid;
    int fd;                 /* the relay: the read end of the worker's stdout pipe */
    int wfd;                /* the write end of its stdin pipe, watched only while it is full */
    int statm_fd;           /* /proc/PID/statm, opened on first use, read with pread */
    int state;              /* FL_W_*, what the informer shows; only set_state() changes it */
    bool up;                /* the PID handshake is done */
    bool busy;              /* a task is in flight: the frames are its answer */
    bool settling;          /* a PID request is out as a barrier: waiting for its answer */
    bool held;              /* an ERROR or stop frame came before any answer to the task: a
                               leftover of the previous task, or the answer? (hold_answer) */
    bool answering;         /* a data frame of the current task has arrived */
    bool held_err;          /* the held frame was an ERROR; its message is in w->err */
    bool retiring;          /* stop frame sent or about to be killed: its frames are moot */
    bool in_idle;           /* on the idle list */
    bool parsing;           /* its input is being handled (see make_available) */
    bool pending_idle;      /* became free while parsing: goes idle once the input is handled */
    bool orphan;            /* the task's owner went away; discard the answer */
    bool dead;              /* freed at the next collect: callers up the stack may hold it */
    bool exited;            /* reaped: never signal its pid again */
    bool removed;           /* retired by informer.RemoveWorker: counted in pool->removing */
    const char *retire_why; /* a limit hit while busy: retire once the task is done */
    int retire_state;
    const char *deadline_why; /* what w->timer means when it fires */
    int deadline_state;
    fl_buf_t in;
    fl_buf_t ctl;    /* queued control frames (PID request, stop, PONG) */
    fl_buf_t err;    /* the held ERROR frame's message; freed with the struct (collect) */
    size_t task_off; /* bytes of task->frame, then task->tail, already written */
    fl_task_t *task;
    uint64_t execs, max_jobs;
    int64_t created_ms, created_ns, last_used_ms, exec_deadline;
    fl_timer_id timer;      /* handshake, settle, reset or stop deadline */
    fl_timer_id exec_timer; /* exec_ttl, re-armed lazily (see exec_ttl_cb) */
    fl_worker_t *next_idle;
    fl_worker_t *next_dead;
    fl_worker_t *next_all; /* every live worker, retiring ones included */
};

typedef struct {
    fl_pool_t *pool;
    unsigned slot;
    fl_timer_id id;
    int64_t due_ms; /* when id fires: re-armed at the same time if the array moves (grow) */
} fl_respawn_t;

#define NO_SLOT ((unsigned)-1)

static const char stream_why[] = "stream_timeout elapsed after the stream STOP";

struct fl_pool {
    fl_loop_t *loop;
    fl_pool_opts_t o;
    fl_worker_t **slots;
    pid_t *replace; /* per slot: the old worker to retire once the slot's new one is up (reset) */
    fl_worker_t *idle;
    fl_worker_t *all;
    unsigned nidle, nlive;
    fl_task_t *qhead, *qtail;
    unsigned nqueued;
    unsigned fail_streak; /* consecutive workers lost before their handshake */
    unsigned shrink;      /* RemoveWorker calls waiting for a worker to finish its task */
    unsigned removing;    /* workers removed by RemoveWorker that have not exited yet */
    bool starting, ready_sent, stopping, stopped_sent, dispatching;
    fl_respawn_t *respawn; /* per slot */
    fl_worker_t *graveyard;
    fl_errpipe_t *errpipes;
    fl_timer_id collect_timer, tick_timer, destroy_timer, ready_timer;
};

static void worker_io(fl_loop_t *loop, int fd, int events, void *data);
static void worker_wio(fl_loop_t *loop, int fd, int events, void *data);
static void worker_kill(fl_worker_t *w, int state, const char *task_err, const char *reason,
                        bool log);
static void worker_read(fl_worker_t *w);
static void spawn_slot(fl_pool_t *p, unsigned slot);
static void dispatch(fl_pool_t *p);
static void spawn_on_demand(fl_pool_t *p);
static void queue_unlink(fl_pool_t *p, fl_task_t *t);
static void enqueue(fl_pool_t *p, fl_task_t *t, bool front);
static bool shrink_take(fl_worker_t *w);

static const char *pname(const fl_pool_t *p)
{
    return p->o.name ? p->o.name : "pool";
}

/* ---- states (spec goridge §3.8, rr-config §5.1) ---- */

const char *fl_worker_status_str(int status)
{
    static const char *const names[FL_W_NSTATES] = {
        "inactive",
        "ready",
        "working",
        "invalid",
        "stopping",
        "stopped",
        "destroyed",
        "maxJobsReached",
        "errored",
        "idleTTLReached",
        "ttlReached",
        "maxMemoryReached",
        /* RR v2025 prints "undefined" (missing from its switch); the real name is more use. */
        "execTTLReached",
    };
    return status >= 0 && status < FL_W_NSTATES ? names[status] : "undefined";
}

bool fl_worker_transition_allowed(int from, int to)
{
    if (to == FL_W_DESTROYED)
        return true;
    if (from == FL_W_DESTROYED)
        return false;
    if (to == FL_W_READY)
        return from == FL_W_WORKING || from == FL_W_INACTIVE;
    if (to == FL_W_WORKING)
        return from == FL_W_READY;
    return to >= 0 && to < FL_W_NSTATES;
}

static void set_state(fl_worker_t *w, int to)
{
    int from = w->state;
    if (from == to)
        return;
    if (!fl_worker_transition_allowed(from, to)) {
        fl_debug("%s pool: worker %d: %s -> %s is not allowed; ignored", pname(w->pool),
                 (int)w->pid, fl_worker_status_str(from), fl_worker_status_str(to));
        return;
    }
    w->state = to;
    fl_srvm_worker(w->pool->o.name, from, to, w->pool->stopping); /* gauges, restarts */
    fl_debug("%s pool: worker %d: %s -> %s", pname(w->pool), (int)w->pid,
             fl_worker_status_str(from), fl_worker_status_str(to));
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
    if (p->o.debug) {
        /* RoadRunner's debug mode: one task per worker, nothing waits in a queue limit. */
        p->o.max_jobs = 1;
        p->o.max_queue_size = 0;
    }
    unsigned n = o->num_workers ? o->num_workers : 1;
    p->slots = calloc(n, sizeof(*p->slots));
    p->replace = calloc(n, sizeof(*p->replace));
    p->respawn = calloc(n, sizeof(*p->respawn));
    if (!p->slots || !p->replace || !p->respawn) {
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

unsigned fl_pool_idle(const fl_pool_t *p)
{
    return p->nidle;
}
unsigned fl_pool_queued(const fl_pool_t *p)
{
    return p->nqueued;
}
unsigned fl_pool_size(const fl_pool_t *p)
{
    return p->o.num_workers;
}

/* ---- what a worker prints: stderr lines, and stray bytes on the relay ---- */

static void log_stderr_line(const fl_errpipe_t *e, const char *s, size_t n)
{
    if (n && s[n - 1] == '\r')
        n--;
    /* the raw text as the message, never interpreted (RoadRunner logs it under "server") */
    fl_log_field_t pid = FL_LF_INT("pid", e->pid);
    fl_logf(FL_LOG_INFO, "server", s, n, &pid, 1);
}

static void errpipe_feed(fl_errpipe_t *e, const char *s, size_t n)
{
    while (n) {
        const char *nl = memchr(s, '\n', n);
        size_t take = nl ? (size_t)(nl - s) : n;
        size_t room = STDERR_LINE_MAX - e->line.len;
        if (take > room) {
            take = room; /* over the cap: log what fits as one line, go on with the rest */
            nl = NULL;
        }
        if (nl && e->line.len == 0) {
            log_stderr_line(e, s, take); /* a whole line in this chunk: no copy */
        } else {
            if (fl_buf_append(&e->line, s, take) < 0)
                e->line.len = 0; /* out of memory: lose the partial line, keep reading */
            if (nl || e->line.len >= STDERR_LINE_MAX) {
                log_stderr_line(e, e->line.data, e->line.len);
                e->line.len = 0;
            }
        }
        size_t used = take + (nl ? 1 : 0);
        s += used;
        n -= used;
    }
}

static void errpipe_close(fl_errpipe_t *e)
{
    if (e->line.len)
        log_stderr_line(e, e->line.data, e->line.len); /* the last words need no newline */
    fl_io_del(e->pool->loop, e->fd);
    close(e->fd);
    if (e->prev)
        e->prev->next = e->next;
    else
        e->pool->errpipes = e->next;
    if (e->next)
        e->next->prev = e->prev;
    fl_buf_free(&e->line);
    free(e);
}

/* One read per wake-up: a worker flooding stderr is read as fast as it writes, but it never
 * holds the loop; other workers' relays and clients get their turn in between. */
static void stderr_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(events);
    FL_UNUSED(fd);
    fl_errpipe_t *e = data;
    char buf[READ_CHUNK];
    ssize_t n = read(e->fd, buf, sizeof(buf));
    if (n > 0) {
        errpipe_feed(e, buf, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    errpipe_close(e);
}

static void errpipe_open(fl_pool_t *p, int fd, pid_t pid)
{
    fl_errpipe_t *e = calloc(1, sizeof(*e));
    if (!e) {
        close(fd);
        return;
    }
    e->pool = p;
    e->fd = fd;
    e->pid = pid;
    e->next = p->errpipes;
    if (e->next)
        e->next->prev = e;
    p->errpipes = e;
    fl_io_set(p->loop, fd, FL_EV_READ, stderr_io, e);
}

/* Quotes up to EXCERPT_MAX bytes with control bytes escaped, for "the worker printed ...". */
static void excerpt(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < EXCERPT_MAX && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            dst[o++] = (char)c;
        else
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
    }
    if (n > EXCERPT_MAX && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = 0;
}

/* ---- memory ---- */

static uint64_t worker_rss(fl_worker_t *w)
{
    static long page;
    if (w->dead || w->exited)
        return 0;
    if (!page)
        page = sysconf(_SC_PAGESIZE);
    if (w->statm_fd < 0) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/statm", (int)w->pid);
        w->statm_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (w->statm_fd < 0)
            return 0;
    }
    char buf[128];
    ssize_t n = pread(w->statm_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long size, rss;
    if (sscanf(buf, "%llu %llu", &size, &rss) != 2)
        return 0;
    return (uint64_t)rss * (uint64_t)(page > 0 ? page : 4096);
}

/* ---- worker output: control frames and the task frame, flushed without blocking ---- */

static void worker_want_write(fl_worker_t *w, bool on)
{
    int mask = on ? FL_EV_WRITE : 0;
    if (fl_io_mask(w->pool->loop, w->wfd) != mask)
        fl_io_set(w->pool->loop, w->wfd, mask, worker_wio, w);
}

/* Writes the concatenation of parts[0..nparts) from byte *off on, without blocking: 0 once it
 * is all written, 1 when the relay is full, -1 on an error. Two parts (a task frame and the
 * body after it, not copied) go out with one writev. */
static int flush_parts(fl_worker_t *w, const fl_slice_t *parts, int nparts, size_t *off)
{
    size_t total = 0;
    for (int i = 0; i < nparts; i++)
        total += parts[i].len;
    while (*off < total) {
        struct iovec iov[2];
        int n = 0;
        size_t skip = *off;
        for (int i = 0; i < nparts && n < 2; i++) {
            if (skip >= parts[i].len) {
                skip -= parts[i].len;
                continue;
            }
            iov[n++] = (struct iovec){(char *)parts[i].base + skip, parts[i].len - skip};
            skip = 0;
        }
        ssize_t k =
            n == 1 ? write(w->wfd, iov[0].iov_base, iov[0].iov_len) : writev(w->wfd, iov, n);
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

static int flush_bytes(fl_worker_t *w, const char *p, size_t n, size_t *off)
{
    fl_slice_t part = fl_slice(p, n);
    return flush_parts(w, &part, 1, off);
}

static size_t task_len(const fl_task_t *t)
{
    return t->frame.len + t->tail.len;
}

static int flush_task(fl_worker_t *w, const fl_task_t *t, size_t *off)
{
    fl_slice_t parts[2] = {fl_slice(t->frame.data, t->frame.len), t->tail};
    return flush_parts(w, parts, 2, off);
}

/* Control frames and the task frame never interleave: a task frame already begun is finished
 * first (a PID request or PONG may be queued while a big upload is on its way), else the
 * control bytes go first, so a partly written control frame is finished before the task. */
static void worker_flush(fl_worker_t *w)
{
    if (w->dead)
        return;
    size_t off = 0;
    bool task_left = w->busy && !w->orphan && w->task_off < task_len(w->task);
    int r = 0;
    if (task_left && w->task_off > 0) {
        r = flush_task(w, w->task, &w->task_off);
        task_left = false;
    }
    if (r == 0)
        r = flush_bytes(w, w->ctl.data, w->ctl.len, &off);
    fl_buf_consume(&w->ctl, off);
    if (r == 0 && task_left)
        r = flush_task(w, w->task, &w->task_off);
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "write to the relay: %s", strerror(errno));
        worker_kill(w, FL_W_ERRORED, fl_task_err_died, why, true);
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

static int make_pid_request(fl_buf_t *b)
{
    return fl_frame_pid_request(b, (int)getpid());
}

/* ---- idle list ---- */

static void idle_push(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    w->next_idle = p->idle;
    p->idle = w;
    w->in_idle = true;
    p->nidle++;
}

static void idle_remove(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (!w->in_idle)
        return;
    for (fl_worker_t **pp = &p->idle; *pp; pp = &(*pp)->next_idle) {
        if (*pp == w) {
            *pp = w->next_idle;
            break;
        }
    }
    p->nidle--;
    w->next_idle = NULL;
    w->in_idle = false;
}

/* A worker free for the next task. While its input is being handled, only once that is done:
 * a stop frame right behind the answer must be seen before the worker gets another task. */
static void make_available(fl_worker_t *w)
{
    if (w->parsing)
        w->pending_idle = true;
    else if (!w->in_idle)
        idle_push(w);
}

/* Something changed (a worker freed, a task gone): hand out work, let the reactor re-check. */
static void changed(fl_pool_t *p)
{
    dispatch(p);
    if (p->o.on_idle)
        p->o.on_idle(p, p->o.data);
}

/* ---- freeing ---- */

static void check_stopped(fl_pool_t *p)
{
    if (p->stopping && p->nlive == 0 && !p->stopped_sent) {
        p->stopped_sent = true;
        fl_timer_del(p->loop, p->destroy_timer);
        p->destroy_timer = 0;
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
        fl_buf_free(&w->err);
        free(w);
    }
}

static unsigned detach_slot(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    unsigned slot = w->slot;
    w->slot = NO_SLOT;
    if (slot != NO_SLOT && p->slots[slot] == w) {
        p->slots[slot] = NULL;
        return slot;
    }
    return NO_SLOT;
}

/* Releases the worker's resources now; the struct itself at the next collect, because the
 * callers up the stack (frame parsing, io callbacks) may still look at w->dead. */
static void worker_free(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (w->dead)
        return;
    idle_remove(w);
    detach_slot(w);
    fl_timer_del(p->loop, w->timer);
    fl_timer_del(p->loop, w->exec_timer);
    w->timer = w->exec_timer = 0;
    fl_io_del(p->loop, w->fd);
    close(w->fd);
    fl_io_del(p->loop, w->wfd);
    close(w->wfd);
    if (w->statm_fd >= 0)
        close(w->statm_fd);
    w->statm_fd = -1;
    /* stderr stays open until EOF so the worker's last words are logged; see stderr_io. */
    fl_buf_free(&w->in);
    fl_buf_free(&w->ctl);
    for (fl_worker_t **pp = &p->all; *pp; pp = &(*pp)->next_all) {
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    }
    p->nlive--;
    fl_srvm_worker(p->o.name, w->state, -1, true);
    if (w->removed)
        p->removing--;
    w->dead = true;
    w->busy = false;
    w->next_dead = p->graveyard;
    p->graveyard = w;
    if (!p->collect_timer)
        p->collect_timer = fl_timer_add(p->loop, 0, collect, p);
}

/* ---- respawn, with back-off while workers die young ---- */

static void respawn_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_respawn_t *r = data;
    r->id = 0;
    spawn_slot(r->pool, r->slot);
    if (r->pool->o.debug)
        spawn_on_demand(r->pool);
}

static unsigned booting(const fl_pool_t *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->o.num_workers; i++)
        n += (p->slots[i] && !p->slots[i]->up) || p->respawn[i].id;
    return n;
}

static void schedule_respawn(fl_pool_t *p, unsigned slot)
{
    if (p->stopping || slot == NO_SLOT)
        return;
    /* debug mode spawns on demand: a worker per waiting task, none kept in advance */
    if (p->o.debug && p->nqueued <= booting(p))
        return;
    int64_t delay = 0;
    if (p->fail_streak) {
        delay = 100LL << (p->fail_streak > 6 ? 6 : p->fail_streak - 1);
        if (delay > 5000)
            delay = 5000;
    }
    if (p->fail_streak >= 3)
        fl_error("%s pool: workers keep dying before start-up (%u in a row); next try in %lld ms",
                 pname(p), p->fail_streak, (long long)delay);
    fl_timer_del(p->loop, p->respawn[slot].id);
    p->respawn[slot].id = fl_timer_add(p->loop, delay, respawn_cb, &p->respawn[slot]);
    p->respawn[slot].due_ms = fl_now_ms() + delay;
}

static void spawn_on_demand(fl_pool_t *p)
{
    for (unsigned i = 0; i < p->o.num_workers && p->nqueued > booting(p); i++)
        if (!p->slots[i] && !p->respawn[i].id)
            schedule_respawn(p, i);
}

static void fatal(fl_pool_t *p, const char *msg)
{
    fl_error("%s pool: %s", pname(p), msg);
    if (p->starting && p->o.on_fatal) {
        p->starting = false;
        p->o.on_fatal(p, msg, p->o.data);
    }
}

/* ---- hard and soft stops ---- */

/* Hard: SIGKILL now, fail its task with task_err, replace it (unless it was retiring). */
static void worker_kill(fl_worker_t *w, int state, const char *task_err, const char *reason,
                        bool log)
{
    fl_pool_t *p = w->pool;
    if (w->dead)
        return;
    bool before_handshake = !w->up && !w->retiring;
    if (log && !w->retiring)
        fl_error("%s pool: worker %d failed: %s", pname(p), (int)w->pid, reason);
    if (!w->retiring || fl_worker_transition_allowed(w->state, state))
        set_state(w, state);
    if (!w->exited)
        kill(w->pid, SIGKILL); /* once reaped, the pid may already belong to someone else */
    fl_task_t *t = w->busy && !w->orphan ? w->task : NULL;
    /* It died with a frame held (hold_answer): that frame was its answer after all. */
    bool held = w->held && task_err == fl_task_err_died;
    unsigned slot = detach_slot(w);
    worker_free(w); /* w->err lives on until collect */
    if (t && held && !w->held_err && !p->stopping) {
        t->worker = NULL;
        enqueue(p, t, true); /* it asked to be stopped instead of answering */
    } else if (t) {
        t->worker = NULL;
        if (held && w->held_err)
            t->on_fail(t, fl_task_err_worker, fl_slice(w->err.data, w->err.len));
        else
            t->on_fail(t, task_err, fl_slice_cstr(reason));
    }
    if (before_handshake && !p->stopping) {
        p->fail_streak++;
        if (p->starting) {
            char msg[700];
            snprintf(msg, sizeof(msg), "worker failed during start-up: %s", reason);
            fatal(p, msg);
            return;
        }
        if (p->o.debug && p->qhead) {
            /* nobody else will run it: say why now rather than after allocate_timeout */
            fl_task_t *q = p->qhead;
            queue_unlink(p, q);
            q->on_fail(q, fl_task_err_died, fl_slice_cstr(reason));
        }
    }
    schedule_respawn(p, slot);
    check_stopped(p);
    changed(p);
}

static void deadline_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_worker_t *w = data;
    w->timer = 0;
    bool log = !w->retiring;
    if (w->retiring)
        fl_warn("%s pool: worker %d: %s; killing it", pname(w->pool), (int)w->pid, w->deadline_why);
    worker_kill(w, w->deadline_state, fl_task_err_died, w->deadline_why, log);
}

static void arm_deadline(fl_worker_t *w, int64_t ms, const char *why, int state)
{
    fl_timer_del(w->pool->loop, w->timer);
    w->deadline_why = why;
    w->deadline_state = state;
    w->timer = fl_timer_add(w->pool->loop, ms, deadline_cb, w);
}

/* Soft: the stop frame, SIGKILL if it has not exited SOFT_STOP_MS later; its slot is freed at
 * once so the replacement boots while this one winds down. Never called while busy. */
static void worker_retire(fl_worker_t *w, int state, const char *why)
{
    fl_pool_t *p = w->pool;
    if (w->retiring || w->dead)
        return;
    if (state == FL_W_MAX_JOBS || state == FL_W_DESTROYED || state == FL_W_IDLE_TTL)
        fl_debug("%s pool: worker %d: %s; stopping it", pname(p), (int)w->pid, why);
    else
        fl_info("%s pool: worker %d: %s; stopping it", pname(p), (int)w->pid, why);
    idle_remove(w);
    w->pending_idle = false;
    w->settling = false;
    w->retiring = true;
    set_state(w, state);
    if (state != FL_W_DESTROYED)
        set_state(w, FL_W_STOPPING);
    unsigned slot = detach_slot(w);
    int64_t wait = SOFT_STOP_MS;
    if (p->stopping && p->o.destroy_timeout_ms < wait)
        wait = p->o.destroy_timeout_ms;
    arm_deadline(w, wait, "did not exit after the stop frame", w->state);
    worker_send_ctl(w, fl_frame_stop); /* a write error kills it: then it is simply gone */
    schedule_respawn(p, slot);
}

/* A limit was reached: a worker in the middle of a task finishes it first (soft limit). */
static void worker_limit(fl_worker_t *w, int state, const char *why)
{
    if (w->retiring || w->retire_why)
        return;
    if (!w->busy && !w->settling) {
        worker_retire(w, state, why);
        return;
    }
    set_state(w, FL_W_INVALID);
    w->retire_why = why;
    w->retire_state = state;
}

/* ---- spawning ---- */

static int64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void spawn_slot(fl_pool_t *p, unsigned slot)
{
    if (p->stopping || p->slots[slot])
        return;
    fl_spawned_t s;
    char err[512];
    fl_spawn_cred_t cred = {p->o.set_ids, p->o.uid, p->o.gid};
    if (fl_spawn_as(p->o.argv, p->o.envp, &cred, &s, err, sizeof(err)) < 0) {
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
        close(s.relay_wfd);
        close(s.err_fd);
        schedule_respawn(p, slot);
        return;
    }
    w->pool = p;
    w->slot = slot;
    w->pid = s.pid;
    w->fd = s.relay_fd;
    w->wfd = s.relay_wfd;
    w->statm_fd = -1;
    w->state = FL_W_INACTIVE;
    fl_srvm_worker(p->o.name, -1, FL_W_INACTIVE, false);
    w->created_ms = w->last_used_ms = fl_now_ms();
    w->created_ns = unix_ns();
    /* Jitter max_jobs by 0-14% so workers do not all restart at once (as RoadRunner). */
    w->max_jobs = p->o.max_jobs;
    if (p->o.max_jobs > 1)
        w->max_jobs += (uint64_t)p->o.max_jobs * (uint64_t)(rand() % 15) / 100;
    p->slots[slot] = w;
    w->next_all = p->all;
    p->all = w;
    p->nlive++;
    errpipe_open(p, s.err_fd, s.pid);
    fl_io_set(p->loop, w->fd, FL_EV_READ, worker_io, w);
    arm_deadline(w, p->o.allocate_timeout_ms, "PID handshake timed out", FL_W_ERRORED);
    fl_debug("%s pool: spawned worker %d in slot %u", pname(p), (int)w->pid, slot);
    worker_send_ctl(w, make_pid_request);
}

static void debug_ready(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_pool_t *p = data;
    p->ready_timer = 0;
    if (p->o.on_ready)
        p->o.on_ready(p, p->o.data);
}

static void supervise(fl_loop_t *loop, void *data);

int fl_pool_start(fl_pool_t *p)
{
    if (p->o.watch_tick_ms > 0)
        p->tick_timer = fl_timer_add(p->loop, p->o.watch_tick_ms, supervise, p);
    if (p->o.debug) {
        /* As RoadRunner: no worker in advance, so every task runs on freshly loaded code. */
        fl_info("%s pool: debug mode: a fresh worker for every request", pname(p));
        p->ready_sent = true;
        p->ready_timer = fl_timer_add(p->loop, 0, debug_ready, p);
        return 0;
    }
    p->starting = true;
    for (unsigned i = 0; i < p->o.num_workers && p->starting; i++)
        spawn_slot(p, i);
    return p->starting || p->ready_sent ? 0 : -1;
}

/* ---- the end of a task ---- */

static void exec_done(fl_worker_t *w)
{
    w->busy = false;
    w->task = NULL;
    w->orphan = false;
    w->answering = w->held = w->held_err = false;
    if (w->timer && w->deadline_why == stream_why) { /* the stopped stream did end */
        fl_timer_del(w->pool->loop, w->timer);
        w->timer = 0;
    }
    w->task_off = 0;
    w->execs++;
    w->last_used_ms = fl_now_ms();
    w->exec_deadline = 0; /* the exec timer, if armed, finds it idle and lets go */
}

/* The task is over and the worker is in a state to take another: unless a limit says no. */
static void worker_free_up(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (shrink_take(w))
        return; /* a RemoveWorker was waiting for the next worker to finish */
    if (w->retire_why) {
        worker_retire(w, w->retire_state, w->retire_why);
        return;
    }
    if (p->stopping) {
        worker_retire(w, FL_W_DESTROYED, "the pool is stopping");
        return;
    }
    if (w->max_jobs && w->execs >= w->max_jobs) {
        worker_retire(w, FL_W_MAX_JOBS,
                      p->o.debug ? "debug mode: one request per worker" : "max_jobs reached");
        return;
    }
    if (p->o.max_worker_memory) {
        /* Checked after every task, not only on the tick: a soft limit, applied between two
         * tasks, so the task that crossed it has its answer and the next one a new worker. */
        uint64_t rss = worker_rss(w);
        if (rss >= p->o.max_worker_memory) {
            fl_info("%s pool: worker %d uses %llu MB, max_worker_memory is %llu MB", pname(p),
                    (int)w->pid, (unsigned long long)(rss >> 20),
                    (unsigned long long)(p->o.max_worker_memory >> 20));
            worker_retire(w, FL_W_MAX_MEMORY, "max_worker_memory reached");
            return;
        }
    }
    set_state(w, FL_W_READY);
    make_available(w);
}

static const char settle_why[] = "did not answer a PID request after its ERROR frame";

/* After an ERROR frame a worker may still have something to say: Octane sends {"stop":true}
 * right after it, from an event listener, so perhaps milliseconds later. A PID request is a
 * barrier: the worker answers it only once back in its wait loop, after any such frame. */
static void begin_settle(fl_worker_t *w)
{
    if (w->settling)
        return; /* one barrier is out already: its answer comes after this frame too */
    w->settling = true;
    if (!w->timer) /* busy: a reset deadline may be armed, and it is the shorter wait */
        arm_deadline(w, w->pool->o.allocate_timeout_ms, settle_why, FL_W_ERRORED);
    worker_send_ctl(w, make_pid_request);
}

static void settle_done(fl_worker_t *w)
{
    w->settling = false;
    if (w->timer && w->deadline_why == settle_why) {
        fl_timer_del(w->pool->loop, w->timer);
        w->timer = 0;
    }
}

/* An ERROR frame (f) or a stop request (f NULL) came before any answer to the task. It may be
 * the answer, or a leftover of the previous task that arrived after this one was sent: the
 * documented worker loop answers an exception with respond(500) and then error(), Octane may
 * stop() after its answer (§14 item 3). The barrier decides: a data frame before the PID
 * reply is the real answer and the held frame was stale; the PID reply first means the held
 * frame was the answer (release_held). A stop is acted on either way, after the task. */
static void hold_answer(fl_worker_t *w, const fl_frame_t *f)
{
    if (f) {
        w->err.len = 0;
        if (fl_buf_append(&w->err, (const char *)f->payload, f->len) < 0)
            w->err.len = 0; /* out of memory: the task still fails, without the text */
        w->held_err = true;
    } else {
        worker_limit(w, FL_W_INVALID, "the worker asked to be stopped");
    }
    w->held = true;
    begin_settle(w);
}

/* The PID reply came before any answer: the held frame was the answer. */
static void release_held(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    fl_task_t *t = w->orphan ? NULL : w->task;
    settle_done(w);
    w->held = false;
    if (w->held_err) {
        w->held_err = false;
        exec_done(w);
        if (t) {
            t->worker = NULL;
            t->on_fail(t, fl_task_err_worker, fl_slice(w->err.data, w->err.len));
        }
    } else {
        /* {"stop":true} instead of an answer: the task runs on another worker (§3.6) */
        w->busy = false;
        w->task = NULL;
        w->task_off = 0;
        w->exec_deadline = 0;
        if (t) {
            t->worker = NULL;
            enqueue(p, t, true); /* w is on no idle list: it cannot take the task back */
        }
    }
    w->err.len = 0;
    if (!w->dead)
        worker_free_up(w); /* retires it if it asked to be stopped */
}

/* ---- frames from a worker ---- */

static void retire_replaced(fl_pool_t *p, pid_t pid);

static void on_handshake(fl_worker_t *w, const fl_frame_t *f)
{
    fl_pool_t *p = w->pool;
    long pid = (f->flags & FL_FRAME_CONTROL) ? fl_frame_parse_pid_reply(f) : -1;
    if (pid <= 0) {
        worker_kill(w, FL_W_ERRORED, fl_task_err_died, "invalid PID handshake reply", true);
        return;
    }
    fl_timer_del(p->loop, w->timer);
    w->timer = 0;
    w->up = true;
    p->fail_streak = 0;
    set_state(w, FL_W_READY);
    make_available(w);
    if (w->slot != NO_SLOT && p->replace[w->slot]) {
        pid_t old = p->replace[w->slot];
        p->replace[w->slot] = 0;
        retire_replaced(p, old);
    }
    if (p->starting) {
        unsigned ready = 0;
        for (unsigned i = 0; i < p->o.num_workers; i++)
            ready += p->slots[i] && p->slots[i]->up;
        if (ready == p->o.num_workers) {
            p->starting = false;
            p->ready_sent = true;
            if (p->o.on_ready)
                p->o.on_ready(p, p->o.data);
        }
    }
    shrink_take(w); /* a RemoveWorker waits, and this one serves nobody yet */
}

static void discard_frame(fl_worker_t *w, const fl_frame_t *f, const char *when)
{
    fl_warn("%s pool: worker %d sent an unexpected frame %s (flags 0x%02x, %u bytes); discarded",
            pname(w->pool), (int)w->pid, when, f->flags, f->len);
}

static void on_settle_frame(fl_worker_t *w, const fl_frame_t *f)
{
    if (fl_frame_is_stop_request(f)) {
        worker_retire(w, FL_W_INVALID, "the worker asked to be stopped");
    } else if ((f->flags & FL_FRAME_CONTROL) && fl_frame_parse_pid_reply(f) > 0) {
        settle_done(w);
        worker_free_up(w);
    } else if (!(f->flags & FL_FRAME_CONTROL)) {
        discard_frame(w, f, "after its ERROR frame");
    }
}

static void on_unsolicited(fl_worker_t *w, const fl_frame_t *f)
{
    if (fl_frame_is_stop_request(f))
        worker_retire(w, FL_W_INVALID, "the worker asked to be stopped");
    else if (!(f->flags & FL_FRAME_CONTROL)) /* a late PID reply is harmless */
        discard_frame(w, f, "while idle");
}

static void on_task_frame(fl_worker_t *w, const fl_frame_t *f)
{
    fl_pool_t *p = w->pool;
    fl_task_t *t = w->orphan ? NULL : w->task;
    if (f->stream & FL_STREAM_PING)
        worker_send_ctl(w, fl_frame_pong);
    if (w->dead)
        return;
    if (f->flags & FL_FRAME_CONTROL) {
        /* the barrier's answer; anything else (a late handshake reply) is not an answer */
        if (w->settling && fl_frame_parse_pid_reply(f) > 0) {
            if (w->held)
                release_held(w);
            else
                settle_done(w); /* passed while the real answer is still streaming */
        }
        return;
    }
    bool stop = fl_frame_is_stop_request(f);
    if ((stop || (f->flags & FL_FRAME_ERROR)) && t && !w->answering) {
        hold_answer(w, stop ? NULL : f);
        return;
    }
    if (f->flags & FL_FRAME_ERROR) {
        w->held = w->held_err = false;
        exec_done(w);
        if (t) {
            t->worker = NULL;
            t->on_fail(t, fl_task_err_worker, fl_slice((const char *)f->payload, f->len));
        }
        if (!w->dead)
            begin_settle(w);
        return;
    }
    if (stop) {
        /* Orphaned, or in the middle of its answer: nothing can run again; it goes. */
        w->busy = false;
        w->task = NULL;
        worker_retire(w, FL_W_INVALID, "the worker asked to be stopped");
        if (t) {
            t->worker = NULL;
            t->on_fail(t, fl_task_err_died, FL_SLICE("the worker asked to be stopped mid-answer"));
        }
        return;
    }
    if (w->held) {
        /* a data frame before the barrier's answer: the held frame belonged to the last task */
        if (w->held_err)
            fl_warn("%s pool: worker %d: an ERROR frame left over from its previous task "
                    "(\"%.*s\"); discarded",
                    pname(p), (int)w->pid, (int)(w->err.len > 200 ? 200 : w->err.len),
                    w->err.data ? w->err.data : "");
        w->held = w->held_err = false;
        w->err.len = 0;
    }
    w->answering = true;
    fl_slice_t ctx, body;
    const char *err;
    if (fl_frame_split(f, &ctx, &body, &err) < 0) {
        char q[EXCERPT_MAX * 4 + 8], msg[EXCERPT_MAX * 4 + 200];
        excerpt(q, sizeof(q), (const char *)f->payload, f->len);
        snprintf(msg, sizeof(msg), "%s; the frame carried \"%s\"", err, q);
        worker_kill(w, FL_W_ERRORED, fl_task_err_died, msg, true);
        return;
    }
    if (f->stream & FL_STREAM_MORE) {
        if (p->o.exec_ttl_ms)
            w->exec_deadline = fl_now_ms() + p->o.exec_ttl_ms; /* each frame has its own */
        if (t)
            t->on_frame(t, f, ctx, body);
        return;
    }
    exec_done(w);
    if (t) {
        t->worker = NULL;
        t->on_frame(t, f, ctx, body); /* before anything that could free the frame's bytes */
    }
    if (!w->dead && !w->settling) /* settling: free once the barrier's answer is in */
        worker_free_up(w);
}

static void handle_frame(fl_worker_t *w, const fl_frame_t *f)
{
    if (w->retiring)
        return; /* whatever it says now is of no use */
    if (!w->up)
        on_handshake(w, f);
    else if (w->busy)
        on_task_frame(w, f);
    else if (w->settling)
        on_settle_frame(w, f);
    else
        on_unsolicited(w, f);
}

/* PHP printed something on stdout instead of speaking the protocol ("Could not open input
 * file: X", a warning before the worker started, garbage): kill it and show what it said. */
static void report_garbage(fl_worker_t *w, const char *what, size_t off)
{
    char q[EXCERPT_MAX * 4 + 8], msg[EXCERPT_MAX * 4 + 200];
    size_t n = w->in.len - off;
    while (n && (w->in.data[off + n - 1] == '\n' || w->in.data[off + n - 1] == '\r'))
        n--;
    excerpt(q, sizeof(q), w->in.data + off, n);
    snprintf(msg, sizeof(msg), "%s; the worker printed \"%s\"", what, q);
    worker_kill(w, FL_W_ERRORED, fl_task_err_died, msg, true);
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
            report_garbage(w, err == fl_frame_err_not_found ? "not a frame" : err, off);
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
            worker_kill(w, FL_W_ERRORED, fl_task_err_died, "out of memory", true);
            return;
        }
        ssize_t n = read(w->fd, w->in.data + w->in.len, w->in.cap - w->in.len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            const char *why = n == 0 ? "EOF on the relay (the worker exited)" : strerror(errno);
            if (w->in.len && !w->retiring)
                report_garbage(w, why, 0); /* a partial frame or "Could not open ..." */
            else
                worker_kill(w, w->retiring ? FL_W_STOPPED : FL_W_ERRORED, fl_task_err_died, why,
                            true);
            return;
        }
        w->in.len += (size_t)n;
        bool drained = (size_t)n < w->in.cap - (w->in.len - (size_t)n); /* a short read */
        parse_frames(w);
        if (w->dead || drained)
            return; /* level-triggered: anything later wakes us again, no EAGAIN read */
    }
}

/* Reads and handles everything the worker sent; a worker freed on the way becomes idle only
 * at the end, so nothing can hand it a task while frames of its are still unread. */
static void worker_drain(fl_worker_t *w)
{
    w->parsing = true;
    worker_read(w);
    w->parsing = false;
    if (w->pending_idle && !w->dead) {
        w->pending_idle = false;
        if (w->up && !w->busy && !w->settling && !w->retiring && !w->in_idle)
            idle_push(w);
    }
}

static void worker_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    FL_UNUSED(events); /* an error or hang-up comes as readable too: the read sees it */
    fl_worker_t *w = data;
    worker_drain(w);
    changed(w->pool);
}

/* Room again in the worker's stdin pipe (or its reader is gone: the write says EPIPE). */
static void worker_wio(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    FL_UNUSED(events);
    worker_flush(data);
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
    w->exited = true;
    if (w->retiring) {
        fl_debug("%s pool: worker %d stopped (%s)", pname(p), (int)pid, why);
        if (w->state != FL_W_DESTROYED)
            set_state(w, FL_W_STOPPED);
        worker_free(w);
        check_stopped(p);
    } else {
        worker_kill(w, FL_W_ERRORED, fl_task_err_died, why, true);
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
    fl_srvm_queue(p->o.name, p->nqueued);
    fl_timer_del(p->loop, t->timer);
    t->timer = 0;
}

/* An idle worker whose relay has anything unread (a frame, EOF) is dealt with first: a stop
 * or a death while idle must not cost the task about to be handed to it. */
static bool idle_worker_clean(fl_worker_t *w)
{
    /* The loop knows whether the relay has an event not handled yet in this batch (a stop
     * frame, EOF): no MSG_PEEK system call per request. */
    if (!fl_io_pending(w->pool->loop, w->fd))
        return true;
    worker_drain(w);
    return !w->dead && w->in_idle;
}

static fl_worker_t *take_idle(fl_pool_t *p)
{
    while (p->idle) {
        fl_worker_t *w = p->idle;
        if (!idle_worker_clean(w))
            continue; /* retired or killed: it left the idle list */
        idle_remove(w);
        return w;
    }
    return NULL;
}

static void exec_ttl_cb(fl_loop_t *loop, void *data);

static void run_on(fl_worker_t *w, fl_task_t *t)
{
    fl_pool_t *p = w->pool;
    set_state(w, FL_W_WORKING);
    w->busy = true;
    w->task = t;
    w->task_off = 0;
    w->orphan = false;
    w->answering = w->held = w->held_err = false;
    t->worker = w;
    if (p->o.exec_ttl_ms) {
        w->exec_deadline = fl_now_ms() + p->o.exec_ttl_ms;
        if (!w->exec_timer)
            w->exec_timer = fl_timer_add(p->loop, p->o.exec_ttl_ms, exec_ttl_cb, w);
    }
    worker_flush(w);
}

/* The timer is armed at most once per worker and re-armed when it fires early, so a request
 * costs no timer deletion (a heap scan) when exec_ttl is on, as Octane always has it. */
static void exec_ttl_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_worker_t *w = data;
    fl_pool_t *p = w->pool;
    w->exec_timer = 0;
    if (!w->busy || !w->exec_deadline)
        return;
    int64_t left = w->exec_deadline - fl_now_ms();
    if (left > 0) {
        w->exec_timer = fl_timer_add(p->loop, left, exec_ttl_cb, w);
        return;
    }
    fl_slice_t label = w->task && !w->orphan ? w->task->label : FL_SLICE_NULL;
    char why[300];
    snprintf(why, sizeof(why), "exec_ttl elapsed (%lld ms) serving %.*s",
             (long long)p->o.exec_ttl_ms, (int)(label.len > 200 ? 200 : label.len),
             label.len ? label.base : "a request");
    fl_error("%s pool: worker %d: %s; killing it", pname(p), (int)w->pid, why);
    worker_kill(w, FL_W_EXEC_TTL, fl_task_err_exec_ttl, why, false);
}

static void dispatch(fl_pool_t *p)
{
    if (p->dispatching)
        return; /* re-entered from a worker dropped on the way: the outer loop goes on */
    p->dispatching = true;
    while (p->qhead) {
        fl_worker_t *w = take_idle(p);
        if (!w || !p->qhead) {
            if (w)
                idle_push(w);
            break;
        }
        fl_task_t *t = p->qhead;
        queue_unlink(p, t);
        run_on(w, t);
    }
    p->dispatching = false;
    if (p->o.debug)
        spawn_on_demand(p);
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
    if (p->o.on_idle)
        p->o.on_idle(p, p->o.data);
}

static void enqueue(fl_pool_t *p, fl_task_t *t, bool front)
{

    t->pool = p;
    t->worker = NULL;
    t->queued = true;
    if (front) {
        t->qprev = NULL;
        t->qnext = p->qhead;
        if (p->qhead)
            p->qhead->qprev = t;
        else
            p->qtail = t;
        p->qhead = t;
    } else {
        t->qnext = NULL;
        t->qprev = p->qtail;
        if (p->qtail)
            p->qtail->qnext = t;
        else
            p->qhead = t;
        p->qtail = t;
    }
    p->nqueued++;
    fl_srvm_queue(p->o.name, p->nqueued);
    t->timer = fl_timer_add(p->loop, p->o.allocate_timeout_ms, alloc_timeout, t);
    dispatch(p);
}

void fl_pool_submit(fl_pool_t *p, fl_task_t *t)
{
    t->worker = NULL;
    t->pool = p;
    t->queued = false;
    if (p->stopping) {
        t->on_fail(t, fl_task_err_stopping, FL_SLICE("the pool is stopping"));
        return;
    }
    if (!p->qhead) {
        fl_worker_t *w = take_idle(p);
        if (w) {
            run_on(w, t);
            return;
        }
    }
    if (p->o.max_queue_size && p->nqueued >= p->o.max_queue_size) {
        fl_warn("%s pool: max_queue_size (%u) reached", pname(p), p->o.max_queue_size);
        t->on_fail(t, fl_task_err_queue_full, FL_SLICE("max queue size reached"));
        return;
    }
    enqueue(p, t, false);
}

void fl_pool_cancel(fl_pool_t *p, fl_task_t *t)
{
    if (t->queued) {
        queue_unlink(p, t);
    } else if (t->worker) {
        fl_worker_t *w = t->worker;
        t->worker = NULL;
        w->orphan = true;
        if (w->task_off < task_len(t)) {
            /* The task frame is half written and its buffer goes away with the request: the
             * worker would wait forever for the rest. Replace it rather than lose it. */
            worker_kill(w, FL_W_ERRORED, NULL, "the client went away while its request was sent",
                        false);
            return;
        }
        /* A streaming worker stops early (§5.3); one that is not streaming skips the frame. */
        worker_send_ctl(w, fl_frame_stream_stop);
        /* A stream that does not end after its STOP (a library that never looks, an endless
         * generator) would hold the worker for good: killed after stream_timeout, as RR. */
        if (!w->dead && w->answering && p->o.stream_timeout_ms > 0 && !w->timer)
            arm_deadline(w, p->o.stream_timeout_ms, stream_why, FL_W_ERRORED);
    }
}

/* ---- supervisor (rr-config §5.3): ttl, idle_ttl, max_worker_memory, every watch_tick ---- */

static void supervise(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_pool_t *p = data;
    p->tick_timer = fl_timer_add(p->loop, p->o.watch_tick_ms, supervise, p);
    int64_t now = fl_now_ms();
    fl_worker_t *next;
    for (fl_worker_t *w = p->all; w; w = next) {
        next = w->next_all; /* a retire may kill w on a write error */
        if (w->dead || !w->up || w->retiring || w->retire_why)
            continue; /* dead: dropped by a callback of this very loop */
        if (p->o.ttl_ms && now - w->created_ms >= p->o.ttl_ms) {
            worker_limit(w, FL_W_TTL, "ttl reached");
        } else if (p->o.max_worker_memory && worker_rss(w) >= p->o.max_worker_memory) {
            worker_limit(w, FL_W_MAX_MEMORY, "max_worker_memory reached");
        } else if (p->o.idle_ttl_ms && !w->busy && !w->settling && w->execs > 0 &&
                   now - w->last_used_ms >= p->o.idle_ttl_ms) {
            worker_limit(w, FL_W_IDLE_TTL, "idle_ttl reached");
        }
    }
}

/* ---- rolling reset ---- */

static void retire_replaced(fl_pool_t *p, pid_t pid)
{
    fl_worker_t *w = p->all;
    while (w && w->pid != pid)
        w = w->next_all;
    if (!w || w->retiring)
        return;
    if (w->busy || w->settling) {
        worker_limit(w, FL_W_DESTROYED, "reset");
        if (w->busy)
            arm_deadline(w, p->o.reset_timeout_ms, "reset_timeout elapsed", FL_W_DESTROYED);
        return;
    }
    worker_retire(w, FL_W_DESTROYED, "reset");
}

void fl_pool_reset(fl_pool_t *p)
{
    if (p->stopping)
        return;
    fl_info("%s pool: reset: replacing every worker", pname(p));
    if (p->o.debug) {
        /* workers are fresh per request anyway; just drop any not yet used */
        fl_worker_t *next;
        for (fl_worker_t *w = p->all; w; w = next) {
            next = w->next_all;
            if (w->up && !w->busy && !w->settling)
                worker_retire(w, FL_W_DESTROYED, "reset");
        }
        return;
    }
    for (unsigned i = 0; i < p->o.num_workers; i++) {
        fl_worker_t *w = p->slots[i];
        if (!w)
            continue; /* a respawn is pending: it loads the new code anyway */
        if (!w->up) {
            /* still booting the old code and serving nobody: start over */
            w->retiring = true; /* on purpose: not a start-up failure */
            worker_kill(w, FL_W_DESTROYED, fl_task_err_died, "reset", false);
        } else {
            /* it keeps serving until the slot's new worker is up (on_handshake) */
            p->replace[i] = w->pid;
            detach_slot(w);
        }
        fl_timer_del(p->loop, p->respawn[i].id);
        p->respawn[i].id = 0;
        spawn_slot(p, i);
    }
}

/* ---- scaling at run time (informer.AddWorker / RemoveWorker) ---- */

/* One more slot. The respawn timers point into p->respawn, so the ones pending are re-armed for
 * the same moment once the array has moved. */
static int grow(fl_pool_t *p)
{
    unsigned n = p->o.num_workers;
    fl_worker_t **slots = realloc(p->slots, (n + 1) * sizeof(*slots));
    if (slots)
        p->slots = slots;
    pid_t *replace = slots ? realloc(p->replace, (n + 1) * sizeof(*replace)) : NULL;
    if (replace)
        p->replace = replace;
    fl_respawn_t *old = p->respawn, *rs = replace ? malloc((n + 1) * sizeof(*rs)) : NULL;
    if (!rs)
        return -1;
    memcpy(rs, old, n * sizeof(*rs));
    p->respawn = rs;
    int64_t now = fl_now_ms();
    for (unsigned i = 0; i < n; i++) {
        if (!rs[i].id)
            continue;
        fl_timer_del(p->loop, rs[i].id);
        int64_t left = rs[i].due_ms > now ? rs[i].due_ms - now : 0;
        rs[i].id = fl_timer_add(p->loop, left, respawn_cb, &rs[i]);
    }
    free(old);
    p->slots[n] = NULL;
    p->replace[n] = 0;
    p->respawn[n] = (fl_respawn_t){.pool = p, .slot = n};
    return 0;
}

/* Takes slot k out (its worker, if any, already detached); the last slot moves into its place,
 * so the slots stay 0 .. num_workers-1. */
static void drop_slot(fl_pool_t *p, unsigned k)
{
    unsigned last = p->o.num_workers - 1;
    fl_timer_del(p->loop, p->respawn[k].id);
    p->respawn[k].id = 0;
    pid_t replaced = p->replace[k]; /* a reset's old worker: nothing replaces it now */
    p->replace[k] = 0;
    if (k != last) {
        p->slots[k] = p->slots[last];
        if (p->slots[k])
            p->slots[k]->slot = k;
        p->replace[k] = p->replace[last];
        if (p->respawn[last].id) {
            fl_timer_del(p->loop, p->respawn[last].id);
            p->respawn[last].id = 0;
            schedule_respawn(p, k);
        }
    }
    p->slots[last] = NULL;
    p->replace[last] = 0;
    p->o.num_workers--;
    if (replaced)
        retire_replaced(p, replaced);
}

static void remove_retire(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    unsigned k = detach_slot(w);
    w->removed = true;
    p->removing++;
    if (k != NO_SLOT)
        drop_slot(p, k);
    fl_info("%s pool: worker %d removed (informer.RemoveWorker): %u workers now", pname(p),
            (int)w->pid, p->o.num_workers);
    if (w->up)
        worker_retire(w, FL_W_DESTROYED, "removed"); /* the stop frame: it exits by itself */
    else
        worker_kill(w, FL_W_DESTROYED, NULL, "removed", false); /* booting: serves nobody */
}

/* A worker that just became free (task done, or handshake done) goes, when a RemoveWorker waits. */
static bool shrink_take(fl_worker_t *w)
{
    fl_pool_t *p = w->pool;
    if (!p->shrink || p->stopping || w->slot == NO_SLOT || w->retiring || w->dead)
        return false;
    p->shrink--;
    remove_retire(w);
    return true;
}

int fl_pool_add_worker(fl_pool_t *p)
{
    if (p->stopping)
        return -1;
    if (p->shrink) { /* a removal still waits for its worker: it simply does not happen */
        p->shrink--;
        fl_info("%s pool: informer.AddWorker cancels a pending removal: %u workers", pname(p),
                p->o.num_workers);
        return 0;
    }
    if (grow(p) < 0)
        return -1;
    unsigned k = p->o.num_workers++;
    fl_info("%s pool: informer.AddWorker: %u workers now", pname(p), p->o.num_workers);
    if (!p->o.debug) /* debug mode spawns on demand: the slot only raises the ceiling */
        spawn_slot(p, k);
    return 0;
}

int fl_pool_remove_worker(fl_pool_t *p)
{
    if (p->stopping || p->o.num_workers <= p->shrink + 1)
        return -1;
    /* Cheapest first: a slot with no worker, one still booting, an idle worker; never a task. */
    unsigned empty = NO_SLOT, booting_slot = NO_SLOT;
    for (unsigned i = 0; i < p->o.num_workers; i++) {
        fl_worker_t *w = p->slots[i];
        if (!w && empty == NO_SLOT)
            empty = i;
        else if (w && !w->up && booting_slot == NO_SLOT)
            booting_slot = i;
    }
    if (empty != NO_SLOT) {
        drop_slot(p, empty);
        fl_info("%s pool: informer.RemoveWorker: %u workers now", pname(p), p->o.num_workers);
        return 0;
    }
    if (booting_slot != NO_SLOT) {
        fl_worker_t *w = p->slots[booting_slot];
        w->retiring = true; /* on purpose: not a start-up failure */
        remove_retire(w);
        return 0;
    }
    for (fl_worker_t *w = p->idle; w; w = w->next_idle) {
        if (w->slot != NO_SLOT && !w->retiring && !w->busy && !w->settling) {
            remove_retire(w);
            return 0;
        }
    }
    p->shrink++; /* every worker is busy: the next one to finish goes (worker_free_up) */
    fl_info("%s pool: informer.RemoveWorker: every worker is busy; the next to finish goes",
            pname(p));
    return 0;
}

bool fl_pool_settled(const fl_pool_t *p)
{
    if (p->shrink || p->removing)
        return false;
    for (unsigned i = 0; i < p->o.num_workers && !p->o.debug; i++)
        if (!p->slots[i] || !p->slots[i]->up)
            return false;
    return true;
}

/* ---- shutdown ---- */

static void destroy_deadline(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_pool_t *p = data;
    p->destroy_timer = 0;
    fl_warn("%s pool: destroy_timeout (%lld ms) elapsed: killing %u workers", pname(p),
            (long long)p->o.destroy_timeout_ms, p->nlive);
    while (p->all)
        worker_kill(p->all, FL_W_DESTROYED, fl_task_err_stopping, "destroy_timeout elapsed", false);
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
    fl_timer_del(p->loop, p->tick_timer);
    p->tick_timer = 0;
    fl_worker_t *next;
    for (fl_worker_t *w = p->all; w; w = next) {
        next = w->next_all; /* each of these may free w */
        if (!w->up)
            worker_kill(w, FL_W_DESTROYED, fl_task_err_stopping, "the pool is stopping", false);
        else
            worker_limit(w, FL_W_DESTROYED, "the pool is stopping"); /* busy: after its task */
    }
    if (p->nlive)
        p->destroy_timer = fl_timer_add(p->loop, p->o.destroy_timeout_ms, destroy_deadline, p);
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
    while (p->errpipes)
        errpipe_close(p->errpipes);
    for (unsigned i = 0; p->respawn && i < p->o.num_workers; i++)
        fl_timer_del(p->loop, p->respawn[i].id);
    fl_timer_del(p->loop, p->collect_timer);
    fl_timer_del(p->loop, p->tick_timer);
    fl_timer_del(p->loop, p->destroy_timer);
    fl_timer_del(p->loop, p->ready_timer);
    collect(p->loop, p);
    free(p->slots);
    free(p->replace);
    free(p->respawn);
    free(p);
}

/* ---- informer ---- */

size_t fl_pool_workers(const fl_pool_t *p, fl_worker_info_t *out, size_t max)
{
    size_t n = 0;
    for (fl_worker_t *w = p->all; w && n < max; w = w->next_all, n++) {
        out[n] = (fl_worker_info_t){
            .pid = w->pid,
            .status = w->state,
            .status_str = fl_worker_status_str(w->state),
            .num_execs = w->execs,
            .created_ns = w->created_ns,
            .rss = worker_rss(w),
        };
    }
    return n;
}

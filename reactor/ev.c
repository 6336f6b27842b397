#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ev.h"

#include "ev_epoll.c"

typedef struct {
    int mask;
    int qmask;   /* what the quiet set watches (quiet_mask of mask, once the set exists) */
    int pending; /* in the batch being dispatched, callback not yet called */
    fl_io_cb cb;
    void *data;
} fl_io_t;

typedef struct {
    int64_t when;
    fl_timer_id id;
    fl_timer_cb cb;
    void *data;
} fl_timer_t;

struct fl_loop {
    int setsize;
    int stop;
    fl_io_t *io;
    int *ready_fd, *ready_mask;
    fl_poll_t poll;
    fl_timer_t *heap;
    size_t nheap, capheap;
    fl_timer_id next_id;
    fl_hook_cb before_sleep;
    void *before_sleep_data;
    bool quiet, has_quiet, quiet_failed; /* waiting on the quiet set; it exists; it broke */
    int64_t spin_max_ns, spin_ns;        /* busy-poll: the cap, the current window (0: off) */
    int64_t spun_ns;                     /* polled so far, in all */
    fl_spin_cb spin_want;                /* true while polling is worth it */
    void *spin_data;
};

/* While the loop runs a callback, the clock is read once for it and every fl_now_ms() in it
 * (a request asks a dozen times) gets that value: a clock read is not free in a VM. Per
 * thread, so a helper thread never sees a loop's cache. */
static _Thread_local int64_t now_cache;
static _Thread_local int now_cached;

static int64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void now_refresh(void)
{
    now_cache = clock_ms();
    now_cached = 1;
}

int64_t fl_now_ms(void)
{
    return now_cached ? now_cache : clock_ms();
}

fl_loop_t *fl_loop_new(int setsize)
{
    fl_loop_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->setsize = setsize;
    l->next_id = 1;
    l->io = calloc((size_t)setsize, sizeof(*l->io));
    l->ready_fd = calloc((size_t)setsize, sizeof(int));
    l->ready_mask = calloc((size_t)setsize, sizeof(int));
    l->poll.epfd = -1;
    if (!l->io || !l->ready_fd || !l->ready_mask || poll_create(&l->poll, setsize) < 0) {
        fl_loop_free(l);
        return NULL;
    }
    return l;
}

void fl_loop_free(fl_loop_t *l)
{
    if (!l)
        return;
    poll_free(&l->poll);
    free(l->io);
    free(l->ready_fd);
    free(l->ready_mask);
    free(l->heap);
    free(l);
}

/* The quiet set watches everything but deferrable input. */
static int quiet_mask(int mask)
{
    if (mask & FL_EV_DEFER)
        mask &= FL_EV_WRITE;
    return mask & ~FL_EV_DEFER;
}

/* Mirrors fd's registration into the quiet set. Should that ever fail (no memory for epoll
 * entries), quiet mode is off for good: a missing fd would be missed while quiet. */
static void quiet_sync(fl_loop_t *l, int fd)
{
    fl_io_t *io = &l->io[fd];
    int q = quiet_mask(io->mask);
    if (q == io->qmask || l->quiet_failed)
        return;
    if (poll_set_quiet(&l->poll, fd, io->qmask, q) < 0 && q) {
        l->quiet_failed = true;
        l->quiet = false;
    }
    io->qmask = q;
}

int fl_io_set(fl_loop_t *l, int fd, int mask, fl_io_cb cb, void *data)
{
    if (fd < 0 || fd >= l->setsize) {
        errno = ERANGE;
        return -1;
    }
    fl_io_t *io = &l->io[fd];
    if (io->mask != mask && poll_set(&l->poll, fd, io->mask, mask) < 0)
        return -1;
    io->mask = mask;
    if (l->has_quiet)
        quiet_sync(l, fd);
    io->cb = cb;
    io->data = data;
    return 0;
}

void fl_io_del(fl_loop_t *l, int fd)
{
    if (fd < 0 || fd >= l->setsize || l->io[fd].mask == 0)
        return;
    poll_set(&l->poll, fd, l->io[fd].mask, 0);
    if (l->io[fd].qmask)
        poll_set_quiet(&l->poll, fd, l->io[fd].qmask, 0);
    l->io[fd] = (fl_io_t){0};
}

void fl_io_forget(fl_loop_t *l, int fd)
{
    if (fd >= 0 && fd < l->setsize)
        l->io[fd] = (fl_io_t){0};
}

int fl_io_pending(fl_loop_t *l, int fd)
{
    return fd >= 0 && fd < l->setsize && l->io[fd].pending;
}

int fl_io_mask(fl_loop_t *l, int fd)
{
    return fd >= 0 && fd < l->setsize ? l->io[fd].mask : 0;
}

static void heap_swap(fl_timer_t *h, size_t a, size_t b)
{
    fl_timer_t t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static void heap_up(fl_timer_t *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].when > h[i].when) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(fl_timer_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].when < h[m].when)
            m = l;
        if (r < n && h[r].when < h[m].when)
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

fl_timer_id fl_timer_add(fl_loop_t *l, int64_t ms, fl_timer_cb cb, void *data)
{
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        fl_timer_t *h = realloc(l->heap, cap * sizeof(*h));
        if (!h)
            return 0;
        l->heap = h;
        l->capheap = cap;
    }
    fl_timer_id id = l->next_id++;
    fl_timer_t *t = &l->heap[l->nheap];
    t->when = fl_now_ms() + ms;
    t->id = id;
    t->cb = cb;
    t->data = data;
    heap_up(l->heap, l->nheap++); /* moves *t: the id must not be read back from it */
    return id;
}

/* Deleting is O(n) to find the id; timers are few (per worker, per request deadline). */
void fl_timer_del(fl_loop_t *l, fl_timer_id id)
{
    if (!id)
        return;
    for (size_t i = 0; i < l->nheap; i++) {
        if (l->heap[i].id != id)
            continue;
        l->heap[i] = l->heap[--l->nheap];
        if (i < l->nheap) {
            heap_down(l->heap, l->nheap, i);
            heap_up(l->heap, i);
        }
        return;
    }
}

void fl_loop_before_sleep(fl_loop_t *l, fl_hook_cb cb, void *data)
{
    l->before_sleep = cb;
    l->before_sleep_data = data;
}

int fl_loop_quiet(fl_loop_t *l, bool on)
{
    if (on && !l->has_quiet && !l->quiet_failed) {
        if (poll_create_quiet(&l->poll) < 0) {
            l->quiet_failed = true;
        } else {
            l->has_quiet = true;
            for (int fd = 0; fd < l->setsize; fd++) /* once: what is registered so far */
                if (l->io[fd].mask)
                    quiet_sync(l, fd);
        }
    }
    l->quiet = on && !l->quiet_failed;
    return on && l->quiet_failed ? -1 : 0;
}

void fl_loop_spin(fl_loop_t *l, int max_us, fl_spin_cb want, void *data)
{
    l->spin_max_ns = max_us > 0 && want ? (int64_t)max_us * 1000 : 0;
    l->spin_ns = 0;
    l->spin_want = want;
    l->spin_data = data;
}

/* The window adapts as the cpuidle haltpoll governor's does: a wake-up that came within the cap
 * but after the window doubles it (from a quarter of the cap); one that took longer than the
 * cap halves it, and below that start it is off. So an idle loop, whose wake-ups are timers
 * seconds apart, goes back to sleeping at once after a few of them. */
static void spin_adapt(fl_loop_t *l, int64_t waited_ns)
{
    int64_t start = l->spin_max_ns / 4;
    if (waited_ns <= l->spin_ns)
        return;
    if (waited_ns < l->spin_max_ns) {
        int64_t w = l->spin_ns ? l->spin_ns * 2 : start;
        l->spin_ns = w < l->spin_max_ns ? w : l->spin_max_ns;
    } else {
        l->spin_ns /= 2;
        if (l->spin_ns < start)
            l->spin_ns = 0;
    }
}

/* While want() allows, a wait that polls first for as long as the window: in a VM that halts
 * idle vCPUs, going to sleep and being woken by a peer's send costs an IPI and a VM exit, more
 * than the microseconds a local redis or PHP client takes to send. */
static int loop_wait(fl_loop_t *l, int timeout)
{
    if (!l->spin_max_ns || timeout == 0 || !l->spin_want(l->spin_data))
        return poll_wait(&l->poll, l->quiet, l->setsize, timeout, l->ready_fd, l->ready_mask);
    int64_t t0 = fl_now_ns(), t = t0, win = l->spin_ns;
    if (timeout > 0 && win > (int64_t)timeout * 1000000)
        win = (int64_t)timeout * 1000000;
    int n = 0;
    while (t - t0 < win) {
        n = poll_wait(&l->poll, l->quiet, l->setsize, 0, l->ready_fd, l->ready_mask);
        if (n)
            break;
        sched_yield(); /* a task that wants this CPU gets it: we only use what is idle */
        t = fl_now_ns();
    }
    l->spun_ns += t - t0;
    if (!n) {
        n = poll_wait(&l->poll, l->quiet, l->setsize, timeout, l->ready_fd, l->ready_mask);
        t = fl_now_ns();
    }
    spin_adapt(l, t - t0);
    return n;
}

int64_t fl_loop_spun_ns(const fl_loop_t *l)
{
    return l->spun_ns;
}

void fl_loop_stop(fl_loop_t *l)
{
    l->stop = 1;
}

/* clocked: a callback of this turn read the clock; that reading will do (a timer it misses by
 * microseconds fires on the next turn), one clock read fewer per turn. */
static void run_timers(fl_loop_t *l, bool clocked)
{
    if (clocked)
        now_cached = 1;
    else
        now_refresh();
    int64_t now = now_cache;
    while (l->nheap && l->heap[0].when <= now) {
        fl_timer_t t = l->heap[0];
        l->heap[0] = l->heap[--l->nheap];
        heap_down(l->heap, l->nheap, 0);
        t.cb(l, t.data);
    }
    now_cached = 0;
}

void fl_loop_run(fl_loop_t *l)
{
    l->stop = 0;
    while (!l->stop) {
        if (l->before_sleep) {
            now_refresh();
            l->before_sleep(l, l->before_sleep_data);
            now_cached = 0;
        }
        int timeout = -1;
        if (l->nheap) {
            /* the clock as read for the hook: a millisecond timer may fire a few µs late */
            int64_t d = l->heap[0].when - (l->before_sleep ? now_cache : clock_ms());
            timeout = d < 0 ? 0 : (int)(d > 60000 ? 60000 : d);
        }
        int n = loop_wait(l, timeout);
        for (int i = 0; i < n; i++)
            l->io[l->ready_fd[i]].pending = 1;
        bool clocked = false;
        for (int i = 0; i < n; i++) {
            int fd = l->ready_fd[i];
            fl_io_t *io = &l->io[fd];
            io->pending = 0;
            /* A callback earlier in this batch may have removed or replaced this fd. */
            int m = l->ready_mask[i] & io->mask;
            if (m && io->cb) {
                now_refresh();
                clocked = true;
                io->cb(l, fd, m, io->data);
            }
        }
        now_cached = 0;
        run_timers(l, clocked);
    }
}

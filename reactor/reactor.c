#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "informer.h"
#include "jobs.h"
#include "log.h"
#include "proctitle.h"
#include "reactor.h"

typedef struct {
    fl_reactor_opts_t o;
    fl_loop_t *loop;
    fl_pool_t *pool;
    fl_http_server_t http;
    int sigfd;
    bool accepting, ready, stopping;
    bool quiet;    /* the loop waits without the clients' new input (before_sleep) */
    bool quiet_ok; /* ... which the configuration allows (quiet) */
    int exit_code;
    fl_informer_t informer; /* answers the master's informer / resetter requests */
    fl_informer_t jinformer; /* the same for the jobs pool: requests prefixed with "J" */
    fl_pool_t *jobs_pool;   /* jobs.pool, NULL when not configured (reactor/jobs.c) */
    fl_rjobs_t *jobs;
    unsigned pools_running; /* the loop stops once every pool has stopped */
} fl_reactor_t;

static void send_msg(fl_reactor_t *r, const char *msg)
{
    if (send(r->o.chan_fd, msg, strlen(msg), MSG_NOSIGNAL) < 0)
        fl_warn("cannot report to the master: %s", strerror(errno));
}

static void accept_io(fl_loop_t *loop, int fd, int events, void *data);

/* Accept only while this reactor can take the work: with no idle worker and a queue as long as
 * the pool, stop so that the kernel wakes a reactor with capacity (EPOLLEXCLUSIVE). */
static bool saturated(fl_reactor_t *r)
{
    return fl_pool_idle(r->pool) == 0 && fl_pool_queued(r->pool) >= fl_pool_size(r->pool);
}

static void update_accepting(fl_reactor_t *r)
{
    bool want = r->ready && !r->stopping && !saturated(r);
    if (want == r->accepting)
        return;
    int fds[2] = {r->o.listen_fd, r->o.ssl_listen_fd}; /* plain, TLS; -1 when absent */
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0)
            continue;
        if (want)
            fl_io_set(r->loop, fds[i], FL_EV_READ | FL_EV_EXCLUSIVE | FL_EV_DEFER, accept_io, r);
        else
            fl_io_del(r->loop, fds[i]);
    }
    r->accepting = want;
}

/* One connection per wake-up, as nginx without multi_accept: the listener is level-triggered,
 * so when more are waiting the next epoll_wait (due anyway) reports it again at once, and no
 * accept4 is spent finding the queue empty. */
static void accept_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(events);
    fl_reactor_t *r = data;
    if (!r->accepting)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            fl_warn("accept: %s", strerror(errno));
        return;
    }
    /* TCP_NODELAY came from the listener (tune_listeners) */
    fl_http_accept(&r->http, c, (struct sockaddr *)&ss, len, fd == r->o.ssl_listen_fd);
    update_accepting(r);
}

/* Socket options of the shared listeners, set by every reactor (idempotent: the master owns the
 * sockets, and a reload or an upgrade hands them over as they are). Accepted sockets inherit
 * TCP_NODELAY from their listener: no setsockopt per connection. TCP_DEFER_ACCEPT (plain HTTP
 * only) makes the kernel hand a connection over once its request has come, so accepting it and
 * reading the request take one wake-up instead of two. Returns whether the deferral is on. */
static bool tune_listeners(fl_reactor_t *r)
{
    int one = 1, fds[2] = {r->o.listen_fd, r->o.ssl_listen_fd};
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0 && setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
            fl_warn("listener: TCP_NODELAY: %s", strerror(errno));
    return r->o.listen_fd >= 0 &&
           setsockopt(r->o.listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one)) == 0;
}

static void on_pool_ready(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    fl_reactor_t *r = data;
    r->ready = true;
    fl_info("reactor %u ready: %u workers", r->o.slot, fl_pool_size(r->pool));
    send_msg(r, FL_MSG_READY);
    update_accepting(r);
}

static void on_pool_fatal(fl_pool_t *p, const char *msg, void *data)
{
    FL_UNUSED(p);
    fl_reactor_t *r = data;
    char m[600];
    snprintf(m, sizeof(m), FL_MSG_FAIL "%s", msg);
    send_msg(r, m);
    r->exit_code = FL_REACTOR_EXIT_STARTUP;
    r->stopping = true;
    fl_loop_stop(r->loop);
}

static void on_pool_idle(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    update_accepting(data);
}

static void on_pool_stopped(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    fl_reactor_t *r = data;
    if (--r->pools_running == 0)
        fl_loop_stop(r->loop);
}

static void on_jobs_ready(fl_pool_t *p, void *data)
{
    FL_UNUSED(p);
    fl_reactor_t *r = data;
    fl_info("reactor %u: jobs pool ready: %u workers", r->o.slot, fl_pool_size(p));
    fl_rjobs_ready(r->jobs);
}

static void on_jobs_scaled(void *data, int delta)
{
    fl_reactor_t *r = data;
    fl_rjobs_scaled(r->jobs, delta);
}

static void on_drained(fl_http_server_t *s, void *data)
{
    FL_UNUSED(s);
    fl_reactor_t *r = data;
    fl_debug("all connections closed; stopping the PHP workers");
    fl_pool_shutdown(r->pool);
}

static void grace_expired(fl_loop_t *loop, void *data)
{
    fl_reactor_t *r = data;
    fl_warn("graceful stop took longer than %lld ms: closing what is left",
            (long long)r->o.grace_period_ms);
    fl_http_close_all(&r->http);
    r->exit_code = 1;
    fl_loop_stop(loop);
}

static void begin_stop(fl_reactor_t *r, const char *why)
{
    if (r->stopping)
        return;
    fl_debug("stopping: %s", why);
    r->stopping = true;
    update_accepting(r);
    if (r->jobs_pool) { /* jobs in flight finish; queued ones go back to the master */
        fl_rjobs_stop(r->jobs);
        fl_pool_shutdown(r->jobs_pool);
    }
    fl_timer_add(r->loop, r->o.grace_period_ms, grace_expired, r);
    fl_http_drain(&r->http);
}

static void reap(fl_reactor_t *r)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (!(r->pool && fl_pool_reaped(r->pool, pid, status)) && r->jobs_pool)
            fl_pool_reaped(r->jobs_pool, pid, status);
}

static void signal_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(events);
    fl_reactor_t *r = data;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(r);
            break;
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            begin_stop(r, "signal");
            break;
        case SIGUSR1:
            fl_log_reopen();
            break;
        default:
            break;
        }
    }
}

/* jobs.pool.num_workers below the number of reactors leaves some without a jobs pool: they
 * answer the master's jobs-pool requests at once (no workers, nothing to reset). */
static void no_jobs_pool(fl_reactor_t *r, const char *msg, size_t n)
{
    char out[64];
    const char *verb = NULL, *reply = NULL, *tail = "";
    if (n > strlen(FL_MSG_WORKERS) && !memcmp(msg, FL_MSG_WORKERS, strlen(FL_MSG_WORKERS)))
        verb = FL_MSG_WORKERS, reply = FL_MSG_WORKERS, tail = " []";
    else if (n > strlen(FL_MSG_RESET_ID) && !memcmp(msg, FL_MSG_RESET_ID, strlen(FL_MSG_RESET_ID)))
        verb = FL_MSG_RESET_ID, reply = FL_MSG_RESET_DONE;
    else if (n > strlen(FL_MSG_SCALE) && !memcmp(msg, FL_MSG_SCALE, strlen(FL_MSG_SCALE)))
        verb = FL_MSG_SCALE, reply = FL_MSG_SCALE_DONE, tail = " this reactor has no jobs pool";
    if (!verb)
        return;
    unsigned id = (unsigned)strtoul(msg + strlen(verb), NULL, 10);
    int k = snprintf(out, sizeof(out), "%s%u%s", reply, id, tail);
    if (send(r->o.chan_fd, out, (size_t)k, MSG_NOSIGNAL) < 0)
        fl_warn("cannot answer the master: %s", strerror(errno));
}

static void chan_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    fl_reactor_t *r = data;
    static char buf[FL_JOBS_MSG_MAX]; /* a JOB message carries a whole job */
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        /* The master is gone: nobody supervises us any more, so wind down. */
        fl_io_del(loop, fd);
        begin_stop(r, "the master went away");
    } else if (n == (ssize_t)strlen(FL_MSG_RESET) && memcmp(buf, FL_MSG_RESET, (size_t)n) == 0) {
        fl_pool_reset(r->pool); /* rr reset: rolling restart of the PHP workers */
    } else if (n > 0 && r->jobs && fl_rjobs_msg(r->jobs, buf, (size_t)n)) {
        /* a job for the jobs pool */
    } else if (n > 1 && buf[0] == 'J') { /* "JWORKERS id", "JRESET id": the jobs pool */
        if (r->jobs_pool)
            fl_informer_handle(&r->jinformer, buf + 1, (size_t)n - 1);
        else
            no_jobs_pool(r, buf + 1, (size_t)n - 1);
    } else if (n > 0) {
        fl_informer_handle(&r->informer, buf, (size_t)n); /* RPC: "WORKERS id", "RESET id" */
    }
}

/* Saturated, the reactor reads no new request: its workers have all they can do until one of
 * them answers, and a request read now would only be queued. Without this the loop also woke
 * for each client's next request as its answer went out, preempting the PHP worker it shares a
 * core with (c=64, 2 workers per reactor, 100 µs of PHP per request: 1.3-1.8 epoll_wait per
 * request, 0.8-1.0 with it). The requests wait in the kernel and are read in one batch once
 * the queue is empty. Not with a max_queue_size (that limit must still be reachable), nor
 * when the reactor answers some requests itself (static files, the https redirect): those must
 * not wait for PHP. */
static bool quiet(fl_reactor_t *r)
{
    return fl_pool_queued(r->pool) > 0 && fl_pool_idle(r->pool) == 0 && r->quiet_ok && r->ready &&
           !r->stopping;
}

static void before_sleep(fl_loop_t *loop, void *data)
{
    fl_reactor_t *r = data;
    fl_http_flush(&r->http);
    if (r->jobs)
        fl_rjobs_flush(r->jobs); /* the jobs answered this turn, in one message */
    bool q = quiet(r);
    if (q != r->quiet)
        r->quiet = fl_loop_quiet(loop, q) == 0 && q;
}

static int setup_signals(fl_reactor_t *r)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    r->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return r->sigfd < 0 ? -1 : fl_io_set(r->loop, r->sigfd, FL_EV_READ, signal_io, r);
}

int fl_reactor_main(const fl_reactor_opts_t *o)
{
    char title[64];
    snprintf(title, sizeof(title), "forkline: reactor %u", o->slot);
    fl_proctitle_set(title);
    snprintf(title, sizeof(title), "reactor %u", o->slot);
    fl_log_set_role(title);
    srand((unsigned)getpid());

    fl_reactor_t r = {.o = *o};
    r.loop = fl_loop_new(65536);
    if (!r.loop || setup_signals(&r) < 0) {
        fl_error("cannot set up the event loop: %s", strerror(errno));
        return 1;
    }
    fl_pool_opts_t po = o->pool;
    po.on_ready = on_pool_ready;
    po.on_fatal = on_pool_fatal;
    po.on_idle = on_pool_idle;
    po.on_stopped = on_pool_stopped;
    po.data = &r;
    r.pool = fl_pool_new(r.loop, &po);
    r.pools_running = 1;
    if (o->jobs_pool.num_workers) {
        fl_pool_opts_t jo = o->jobs_pool;
        jo.on_ready = on_jobs_ready;
        jo.on_fatal = on_pool_fatal;
        jo.on_stopped = on_pool_stopped;
        jo.data = &r;
        r.jobs_pool = fl_pool_new(r.loop, &jo);
        r.jobs = fl_rjobs_new(r.loop, r.jobs_pool, o->chan_fd, o->slot);
        r.pools_running++;
    }
    fl_http_init(&r.http, r.loop, r.pool, &o->http);
    r.http.defer_accept = tune_listeners(&r);
    r.quiet_ok = o->pool.max_queue_size == 0 && !o->http.static_files.dir && !o->http.ssl_redirect;
    r.http.on_drained = on_drained;
    r.http.data = &r;
    fl_informer_init(&r.informer, r.loop, r.pool, o->chan_fd,
                     o->pool.reset_timeout_ms + o->pool.allocate_timeout_ms);
    if (r.jobs_pool) {
        fl_informer_init(&r.jinformer, r.loop, r.jobs_pool, o->chan_fd,
                         o->jobs_pool.reset_timeout_ms + o->jobs_pool.allocate_timeout_ms);
        /* AddWorker / RemoveWorker move the capacity the master's broker uses */
        r.jinformer.on_scale = on_jobs_scaled;
        r.jinformer.scale_data = &r;
    }
    fl_io_set(r.loop, o->chan_fd, FL_EV_READ, chan_io, &r);
    fl_loop_before_sleep(r.loop, before_sleep, &r);
    if (fl_pool_start(r.pool) == 0 && (!r.jobs_pool || fl_pool_start(r.jobs_pool) == 0))
        fl_loop_run(r.loop);
    fl_informer_stop(&r.informer);
    if (r.jobs_pool)
        fl_informer_stop(&r.jinformer);
    fl_http_flush(&r.http);
    fl_http_close_all(&r.http);
    fl_http_free(&r.http);
    fl_pool_free(r.pool); /* SIGKILLs whatever worker is left */
    r.pool = NULL;
    if (r.jobs_pool)
        fl_pool_free(r.jobs_pool);
    r.jobs_pool = NULL;
    fl_rjobs_free(r.jobs);
    reap(&r);
    fl_loop_free(r.loop);
    return r.exit_code;
}

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "master.h"
#include "proctitle.h"
#include "reactor.h"
#include "spawn.h"

extern char **environ;

typedef struct {
    pid_t pid;
    int chan;            /* master's end of the channel */
    bool ready;
    int64_t started_ms;
    unsigned crashes;    /* consecutive short-lived runs */
    fl_timer_id respawn;
    unsigned workers;
} fl_rslot_t;

enum { M_STARTING, M_RUNNING, M_STOPPING };

typedef struct {
    const fl_conf_t *conf;
    fl_loop_t *loop;
    int listen_fd;
    int sigfd;
    unsigned nreactors;
    fl_rslot_t *slots;
    char **envp;
    int state;
    int exit_code;
    unsigned stop_signals;
    fl_timer_id deadline;
} fl_master_t;

typedef struct {
    fl_master_t *m;
    unsigned slot;
} fl_slot_ref_t;

static fl_slot_ref_t *refs;

/* ---- listening socket ---- */

int fl_listen_tcp(const char *address, char *err, size_t errlen)
{
    const char *colon = strrchr(address, ':');
    if (!colon) {
        snprintf(err, errlen, "%s: address must be host:port", address);
        return -1;
    }
    char host[256];
    size_t hl = (size_t)(colon - address);
    if (hl >= sizeof(host))
        hl = sizeof(host) - 1;
    memcpy(host, address, hl);
    host[hl] = 0;
    char *h = host;
    if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", address, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
            snprintf(err, errlen, "listen on %s: %s", address, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- worker environment (spec §3.1: later entries win) ---- */

static void env_put(char ***env, size_t *n, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < *n; i++) {
        if (strncmp((*env)[i], kv, klen) == 0 && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = strdup(kv);
            return;
        }
    }
    *env = realloc(*env, (*n + 2) * sizeof(char *));
    (*env)[(*n)++] = strdup(kv);
    (*env)[*n] = NULL;
}

static char **build_env(const fl_conf_t *c, const char *mode)
{
    char **env = NULL;
    size_t n = 0;
    char kv[4096];
    for (char **e = environ; *e; e++)
        env_put(&env, &n, *e);
    snprintf(kv, sizeof(kv), "RR_RELAY=%s", c->server.relay ? c->server.relay : "pipes");
    env_put(&env, &n, kv);
    if (c->rpc.enabled && c->rpc.listen && *c->rpc.listen) {
        snprintf(kv, sizeof(kv), "RR_RPC=%s", c->rpc.listen);
        env_put(&env, &n, kv);
    }
    for (size_t i = 0; i < c->server.nenv; i++)
        env_put(&env, &n, c->server.env[i]);
    env_put(&env, &n, "RR_VERSION=" FL_RR_VERSION);
    snprintf(kv, sizeof(kv), "RR_MODE=%s", mode);
    env_put(&env, &n, kv);
    return env;
}

static void free_env(char **env)
{
    for (char **e = env; e && *e; e++)
        free(*e);
    free(env);
}

/* ---- reactors ---- */

static unsigned ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void chan_io(fl_loop_t *loop, int fd, int events, void *data);

static void fill_reactor_opts(fl_master_t *m, unsigned slot, int chan, fl_reactor_opts_t *o)
{
    const fl_conf_t *c = m->conf;
    const fl_pool_conf_t *pc = &c->http.pool;
    memset(o, 0, sizeof(*o));
    o->slot = slot;
    o->listen_fd = m->listen_fd;
    o->chan_fd = chan;
    o->pool.argv = pc->command.argc ? pc->command.argv : c->server.command.argv;
    o->pool.envp = m->envp;
    o->pool.num_workers = m->slots[slot].workers;
    o->pool.max_jobs = pc->max_jobs;
    o->pool.max_queue_size = pc->max_queue_size;
    o->pool.allocate_timeout_ms = pc->allocate_timeout_ms;
    o->pool.destroy_timeout_ms = pc->destroy_timeout_ms;
    o->pool.name = "http";
    o->http.internal_error_code = c->http.internal_error_code;
    o->http.max_request_size = c->http.max_request_size;
    o->http.codec = c->http.codec == FL_CODEC_JSON ? 1 : 0;
    o->http.debug = pc->debug;
    o->grace_period_ms = c->endure.grace_period_ms;
}

static int spawn_reactor(fl_master_t *m, unsigned slot)
{
    fl_rslot_t *s = &m->slots[slot];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        fl_error("socketpair: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fl_error("fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        for (unsigned i = 0; i < m->nreactors; i++)
            if (m->slots[i].chan >= 0)
                close(m->slots[i].chan);
        close(m->sigfd);
        fl_reactor_opts_t o;
        fill_reactor_opts(m, slot, sv[1], &o);
        _exit(fl_reactor_main(&o));
    }
    close(sv[1]);
    s->pid = pid;
    s->chan = sv[0];
    s->ready = false;
    s->started_ms = fl_now_ms();
    fl_io_set(m->loop, s->chan, FL_EV_READ, chan_io, &refs[slot]);
    fl_debug("reactor %u started: pid %d, %u workers", slot, (int)pid, s->workers);
    return 0;
}

static void signal_reactors(fl_master_t *m, int sig)
{
    for (unsigned i = 0; i < m->nreactors; i++)
        if (m->slots[i].pid > 0)
            kill(m->slots[i].pid, sig);
}

static unsigned live_reactors(fl_master_t *m)
{
    unsigned n = 0;
    for (unsigned i = 0; i < m->nreactors; i++)
        n += m->slots[i].pid > 0;
    return n;
}

static void force_stop(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_master_t *m = data;
    m->deadline = 0;
    fl_warn("reactors did not stop in time: killing them");
    signal_reactors(m, SIGKILL);
    m->exit_code = 1;
}

static void begin_stop(fl_master_t *m, int exit_code, const char *why)
{
    if (m->state == M_STOPPING)
        return;
    fl_info("stopping: %s (grace period %lld ms)", why, (long long)m->conf->endure.grace_period_ms);
    m->state = M_STOPPING;
    m->exit_code = exit_code;
    for (unsigned i = 0; i < m->nreactors; i++) {
        fl_timer_del(m->loop, m->slots[i].respawn);
        m->slots[i].respawn = 0;
    }
    signal_reactors(m, SIGTERM);
    m->deadline = fl_timer_add(m->loop, m->conf->endure.grace_period_ms + 1000, force_stop, m);
    if (live_reactors(m) == 0)
        fl_loop_stop(m->loop);
}

static void check_all_ready(fl_master_t *m)
{
    if (m->state != M_STARTING)
        return;
    for (unsigned i = 0; i < m->nreactors; i++)
        if (!m->slots[i].ready)
            return;
    m->state = M_RUNNING;
    unsigned workers = 0;
    for (unsigned i = 0; i < m->nreactors; i++)
        workers += m->slots[i].workers;
    fl_info("forkline %s ready: http://%s, %u reactors, %u PHP workers", FL_VERSION,
            m->conf->http.address, m->nreactors, workers);
}

static void chan_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    fl_slot_ref_t *ref = data;
    fl_master_t *m = ref->m;
    fl_rslot_t *s = &m->slots[ref->slot];
    char buf[1024];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fl_io_del(loop, fd);
        close(fd);
        s->chan = -1;
        return;
    }
    buf[n] = 0;
    if (strcmp(buf, FL_MSG_READY) == 0) {
        s->ready = true;
        s->crashes = 0;
        check_all_ready(m);
    } else if (strncmp(buf, FL_MSG_FAIL, strlen(FL_MSG_FAIL)) == 0) {
        const char *why = buf + strlen(FL_MSG_FAIL);
        if (m->state == M_STARTING) {
            fl_error("start-up failed: reactor %u: %s", ref->slot, why);
            begin_stop(m, 1, "start-up failed");
        } else {
            fl_error("reactor %u could not start its PHP workers: %s", ref->slot, why);
        }
    }
}

static void respawn_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_slot_ref_t *ref = data;
    ref->m->slots[ref->slot].respawn = 0;
    if (ref->m->state != M_STOPPING)
        spawn_reactor(ref->m, ref->slot);
}

static void reactor_exited(fl_master_t *m, unsigned slot, int status)
{
    fl_rslot_t *s = &m->slots[slot];
    if (s->chan >= 0) {
        fl_io_del(m->loop, s->chan);
        close(s->chan);
        s->chan = -1;
    }
    s->pid = 0;
    s->ready = false;
    if (m->state == M_STOPPING) {
        if (live_reactors(m) == 0)
            fl_loop_stop(m->loop);
        return;
    }
    if (WIFSIGNALED(status))
        fl_error("reactor %u was killed by signal %d", slot, WTERMSIG(status));
    else
        fl_error("reactor %u exited with status %d", slot, WEXITSTATUS(status));
    if (m->state == M_STARTING) {
        begin_stop(m, 1, "a reactor died during start-up");
        return;
    }
    /* Back off while it keeps dying young, and say so: a crash loop is reported, not hidden. */
    bool young = fl_now_ms() - s->started_ms < 5000;
    s->crashes = young ? s->crashes + 1 : 0;
    int64_t delay = s->crashes ? 100LL << (s->crashes > 7 ? 7 : s->crashes - 1) : 0;
    if (delay > 10000)
        delay = 10000;
    if (s->crashes >= 3)
        fl_error("reactor %u is in a crash loop (%u quick deaths in a row); respawn in %lld ms",
                 slot, s->crashes, (long long)delay);
    s->respawn = fl_timer_add(m->loop, delay, respawn_cb, &refs[slot]);
}

static void reap(fl_master_t *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (unsigned i = 0; i < m->nreactors; i++) {
            if (m->slots[i].pid == pid) {
                reactor_exited(m, i, status);
                break;
            }
        }
    }
}

static void signal_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(events);
    fl_master_t *m = data;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(m);
            break;
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            if (m->state == M_STOPPING) {
                fl_warn("exit forced");
                signal_reactors(m, SIGKILL);
                m->exit_code = 1;
                break;
            }
            begin_stop(m, m->state == M_STARTING ? 1 : 0, strsignal((int)si.ssi_signo));
            break;
        case SIGHUP:
            fl_warn("SIGHUP: configuration reload is not implemented yet; still serving");
            break;
        default:
            break;
        }
    }
}

static int setup_signals(fl_master_t *m)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < FL_ARRAY_SIZE(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    m->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sigfd < 0)
        return -1;
    return fl_io_set(m->loop, m->sigfd, FL_EV_READ, signal_io, m);
}

static void startup_timeout(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_master_t *m = data;
    if (m->state == M_STARTING) {
        fl_error("start-up failed: the PHP workers did not become ready in time");
        begin_stop(m, 1, "start-up timed out");
    }
}

/* num_workers is the total across reactors. A reactor without a worker would accept requests
 * it cannot serve, so there are never more reactors than workers. */
static void plan_reactors(fl_master_t *m)
{
    const fl_conf_t *c = m->conf;
    unsigned r = c->reactors ? c->reactors : ncpus();
    unsigned w = c->http.pool.debug ? r : c->http.pool.num_workers;
    if (w == 0)
        w = ncpus();
    if (w < r) {
        fl_info("%u PHP workers for %u reactors: running %u reactors, one worker each", w, r, w);
        r = w;
    }
    m->nreactors = r;
    m->slots = calloc(r, sizeof(*m->slots));
    refs = calloc(r, sizeof(*refs));
    for (unsigned i = 0; i < r; i++) {
        m->slots[i].workers = w / r + (i < w % r ? 1 : 0);
        m->slots[i].chan = -1;
        refs[i].m = m;
        refs[i].slot = i;
    }
}

int fl_master_run(const fl_conf_t *c, const fl_master_flags_t *f)
{
    fl_master_t m = {.conf = c, .listen_fd = -1, .sigfd = -1};
    char err[512];
    fl_log_set_role("master");
    fl_proctitle_set("forkline: master");
    if (!c->http.address) {
        fl_error("%s: http.address is not set: nothing to serve", c->path ? c->path : "config");
        return 1;
    }
    const fl_argv_t *cmd = c->http.pool.command.argc ? &c->http.pool.command : &c->server.command;
    if (!cmd->argc || fl_check_command(cmd->argv[0], err, sizeof(err)) < 0) {
        fl_error("server.command: %s", cmd->argc ? err : "command should not be empty");
        return 1;
    }
    m.listen_fd = fl_listen_tcp(c->http.address, err, sizeof(err));
    if (m.listen_fd < 0) {
        fl_error("%s", err);
        return 1;
    }
    m.loop = fl_loop_new(1024);
    if (!m.loop || setup_signals(&m) < 0) {
        fl_error("cannot set up the master loop: %s", strerror(errno));
        return 1;
    }
    if (f->pidfile) {
        FILE *pf = fopen(".pid", "w");
        if (pf) {
            fprintf(pf, "%d", (int)getpid());
            fclose(pf);
        }
    }
    m.envp = build_env(c, "http");
    plan_reactors(&m);
    if (!f->silent)
        printf("[INFO] RoadRunner server started; version: %s, buildtime: forkline %s\n",
               FL_RR_VERSION, FL_VERSION);
    fflush(stdout);
    m.state = M_STARTING;
    for (unsigned i = 0; i < m.nreactors; i++)
        if (spawn_reactor(&m, i) < 0)
            begin_stop(&m, 1, "cannot fork a reactor");
    fl_timer_add(m.loop, c->http.pool.allocate_timeout_ms + 5000, startup_timeout, &m);
    fl_loop_run(m.loop);
    reap(&m);
    close(m.listen_fd);
    free_env(m.envp);
    free(m.slots);
    free(refs);
    refs = NULL;
    fl_loop_free(m.loop);
    fl_info("stopped");
    return m.exit_code;
}

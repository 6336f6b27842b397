#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <sched.h>
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
#include "sdnotify.h"
#include "spawn.h"

extern char **environ;

enum { M_STARTING, M_RUNNING, M_STOPPING };
enum { G_STARTING, G_ACTIVE, G_RETIRING };

typedef struct fl_gen fl_gen_t;
typedef struct fl_master fl_master_t;

typedef struct {
    fl_gen_t *gen;
    unsigned index;
    pid_t pid;
    int chan;            /* master's end of the channel */
    bool ready;
    int64_t started_ms;
    unsigned crashes;    /* consecutive short-lived runs */
    fl_timer_id respawn;
    unsigned workers;
} fl_rslot_t;

/* One generation of reactors, built from one cycle (config). A reload starts a new generation
 * beside the live one and retires the old one only once every new reactor is READY. */
struct fl_gen {
    fl_master_t *m;
    unsigned id;
    fl_conf_t conf;
    char **envp;
    int listen_fd;       /* borrowed from the master's listener table */
    unsigned nreactors;
    fl_rslot_t *slots;
    int state;
    int64_t grace_ms;    /* endure.grace_period of its cycle */
    bool adopted;        /* inherited over a SIGUSR2 re-exec: no config, never respawned */
    fl_timer_id timer;   /* start-up deadline, then the retire deadline */
    fl_gen_t *next;
};

typedef struct {
    char *address;
    int fd;
} fl_listener_t;

struct fl_master {
    const fl_master_flags_t *flags;
    fl_loop_t *loop;
    int sigfd;
    fl_gen_t *gens;      /* every generation with live reactors */
    fl_gen_t *active;    /* the one that serves (and is respawned) */
    fl_gen_t *pending;   /* a reload's generation, until it is READY */
    unsigned next_gen;
    fl_listener_t listeners[16];
    unsigned nlisteners;
    int state;
    int exit_code;
    bool reload_queued;
    int last_stop_sig;
    int64_t last_stop_ms;
    unsigned reloads;
};

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

/* A reactor and its PHP workers ping-pong on every request: sharing a core, a round trip costs a
 * few µs; across cores, tens of µs of wake-ups (DESIGN.md "Core affinity"). So reactor i is pinned
 * to the i-th CPU this process may use (mod their count) before it forks its workers, which
 * inherit the mask through fork and exec. `auto` = on; see BENCHMARKS.md for the numbers. */
static void pin_reactor(const fl_conf_t *c, unsigned slot)
{
    cpu_set_t allowed, one;
    if (c->cpu_affinity == FL_AFFINITY_OFF || sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
        return;
    int left = (int)(slot % (unsigned)CPU_COUNT(&allowed));
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || left-- > 0)
            continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof(one), &one) < 0)
            fl_warn("reactor %u: sched_setaffinity(cpu %d): %s", slot, cpu, strerror(errno));
        return;
    }
}

static void chan_io(fl_loop_t *loop, int fd, int events, void *data);
static void begin_stop(fl_master_t *m, int exit_code, const char *why);
static void reload_finished(fl_master_t *m, const char *error);

/* ---- listeners: opened once, kept across reloads while some generation uses them ---- */

static int listener_get(fl_master_t *m, const char *address, char *err, size_t errlen)
{
    for (unsigned i = 0; i < m->nlisteners; i++)
        if (strcmp(m->listeners[i].address, address) == 0)
            return m->listeners[i].fd;
    if (m->nlisteners == FL_ARRAY_SIZE(m->listeners)) {
        snprintf(err, errlen, "too many listening addresses");
        return -1;
    }
    int fd = fl_listen_tcp(address, err, errlen);
    if (fd < 0)
        return -1;
    m->listeners[m->nlisteners].address = strdup(address);
    m->listeners[m->nlisteners++].fd = fd;
    fl_info("listening on %s", address);
    return fd;
}

static void listeners_gc(fl_master_t *m)
{
    for (unsigned i = 0; i < m->nlisteners;) {
        bool used = false;
        for (fl_gen_t *g = m->gens; g && !used; g = g->next)
            used = g->listen_fd == m->listeners[i].fd;
        if (used) {
            i++;
            continue;
        }
        fl_info("no longer listening on %s", m->listeners[i].address);
        close(m->listeners[i].fd);
        free(m->listeners[i].address);
        m->listeners[i] = m->listeners[--m->nlisteners];
    }
}

/* ---- reactors ---- */

static void fill_reactor_opts(fl_gen_t *g, unsigned slot, int chan, fl_reactor_opts_t *o)
{
    const fl_conf_t *c = &g->conf;
    const fl_pool_conf_t *pc = &c->http.pool;
    memset(o, 0, sizeof(*o));
    o->slot = slot;
    o->listen_fd = g->listen_fd;
    o->chan_fd = chan;
    o->pool.argv = pc->command.argc ? pc->command.argv : c->server.command.argv;
    o->pool.envp = g->envp;
    o->pool.num_workers = g->slots[slot].workers;
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

static void close_all_channels(fl_master_t *m)
{
    for (fl_gen_t *g = m->gens; g; g = g->next)
        for (unsigned i = 0; i < g->nreactors; i++)
            if (g->slots[i].chan >= 0)
                close(g->slots[i].chan);
}

static int spawn_reactor(fl_gen_t *g, unsigned slot)
{
    fl_master_t *m = g->m;
    fl_rslot_t *s = &g->slots[slot];
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
        close_all_channels(m);
        close(m->sigfd);
        /* Other generations' sockets are not this reactor's business. */
        for (unsigned i = 0; i < m->nlisteners; i++)
            if (m->listeners[i].fd != g->listen_fd)
                close(m->listeners[i].fd);
        pin_reactor(&g->conf, slot);
        fl_reactor_opts_t o;
        fill_reactor_opts(g, slot, sv[1], &o);
        fl_loop_free(m->loop); /* the reactor runs its own loop; drop the master's epoll fd */
        _exit(fl_reactor_main(&o));
    }
    close(sv[1]);
    s->pid = pid;
    s->chan = sv[0];
    s->ready = false;
    s->started_ms = fl_now_ms();
    fl_io_set(m->loop, s->chan, FL_EV_READ, chan_io, s);
    fl_debug("generation %u: reactor %u started: pid %d, %u workers", g->id, slot, (int)pid,
             s->workers);
    return 0;
}

static void gen_signal(fl_gen_t *g, int sig)
{
    for (unsigned i = 0; i < g->nreactors; i++)
        if (g->slots[i].pid > 0)
            kill(g->slots[i].pid, sig);
}

static unsigned gen_live(const fl_gen_t *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < g->nreactors; i++)
        n += g->slots[i].pid > 0;
    return n;
}


/* num_workers is the total across reactors. A reactor without a worker would accept requests
 * it cannot serve, so there are never more reactors than workers. */
static void plan_reactors(fl_gen_t *g)
{
    const fl_conf_t *c = &g->conf;
    unsigned r = c->reactors ? c->reactors : ncpus();
    unsigned w = c->http.pool.debug ? r : c->http.pool.num_workers;
    if (w == 0)
        w = ncpus();
    if (w < r) {
        fl_info("%u PHP workers for %u reactors: running %u reactors, one worker each", w, r, w);
        r = w;
    }
    g->nreactors = r;
    g->slots = calloc(r, sizeof(*g->slots));
    for (unsigned i = 0; i < r; i++) {
        g->slots[i].gen = g;
        g->slots[i].index = i;
        g->slots[i].workers = w / r + (i < w % r ? 1 : 0);
        g->slots[i].chan = -1;
    }
}

static void gen_free(fl_master_t *m, fl_gen_t *g)
{
    for (fl_gen_t **pp = &m->gens; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    if (m->active == g)
        m->active = NULL;
    if (m->pending == g)
        m->pending = NULL;
    fl_timer_del(m->loop, g->timer);
    for (unsigned i = 0; i < g->nreactors; i++) {
        fl_timer_del(m->loop, g->slots[i].respawn);
        if (g->slots[i].chan >= 0) {
            fl_io_del(m->loop, g->slots[i].chan);
            close(g->slots[i].chan);
        }
    }
    free_env(g->envp);
    fl_conf_free(&g->conf);
    free(g->slots);
    free(g);
    listeners_gc(m);
}

/* Builds a generation from a loaded config (ownership of *c moves in). */
static fl_gen_t *gen_new(fl_master_t *m, fl_conf_t *c, char *err, size_t errlen)
{
    if (!c->http.address) {
        snprintf(err, errlen, "%s: http.address is not set: nothing to serve",
                 c->path ? c->path : "config");
        return NULL;
    }
    const fl_argv_t *cmd = c->http.pool.command.argc ? &c->http.pool.command : &c->server.command;
    char why[512];
    if (!cmd->argc || fl_check_command(cmd->argv[0], why, sizeof(why)) < 0) {
        snprintf(err, errlen, "server.command: %s", cmd->argc ? why : "command should not be empty");
        return NULL;
    }
    int fd = listener_get(m, c->http.address, err, errlen);
    if (fd < 0)
        return NULL;
    fl_gen_t *g = calloc(1, sizeof(*g));
    g->m = m;
    g->id = m->next_gen++;
    g->conf = *c;
    memset(c, 0, sizeof(*c));
    g->listen_fd = fd;
    g->grace_ms = g->conf.endure.grace_period_ms;
    g->envp = build_env(&g->conf, "http");
    g->state = G_STARTING;
    plan_reactors(g);
    g->next = m->gens;
    m->gens = g;
    return g;
}

static void gen_retire(fl_gen_t *g, int64_t grace_ms);

static void start_timeout(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_gen_t *g = data;
    g->timer = 0;
    if (g->state != G_STARTING)
        return;
    const char *msg = "the PHP workers did not become ready in time";
    if (g->m->pending == g) {
        gen_retire(g, 0);
        reload_finished(g->m, msg);
    } else {
        fl_error("start-up failed: %s", msg);
        begin_stop(g->m, 1, "start-up timed out");
    }
}

static int gen_start(fl_gen_t *g)
{
    for (unsigned i = 0; i < g->nreactors; i++)
        if (spawn_reactor(g, i) < 0)
            return -1;
    g->timer = fl_timer_add(g->m->loop, g->conf.http.pool.allocate_timeout_ms + 5000,
                            start_timeout, g);
    return 0;
}

static void retire_deadline(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_gen_t *g = data;
    g->timer = 0;
    if (gen_live(g)) {
        fl_warn("generation %u did not stop within its grace period: killing it", g->id);
        gen_signal(g, SIGKILL);
    }
}

/* Graceful: each reactor stops accepting, finishes in-flight requests, stops its PHP workers. */
static void gen_retire(fl_gen_t *g, int64_t grace_ms)
{
    fl_master_t *m = g->m;
    g->state = G_RETIRING;
    if (m->active == g)
        m->active = NULL;
    if (m->pending == g)
        m->pending = NULL;
    for (unsigned i = 0; i < g->nreactors; i++) {
        fl_timer_del(m->loop, g->slots[i].respawn);
        g->slots[i].respawn = 0;
    }
    gen_signal(g, SIGTERM);
    fl_timer_del(m->loop, g->timer);
    g->timer = fl_timer_add(m->loop, grace_ms + 2000, retire_deadline, g);
    if (gen_live(g) == 0)
        gen_free(m, g);
}

/* ---- reload (SIGHUP): a new cycle beside the live one ---- */

static void write_reload_status(fl_master_t *m, const char *error)
{
    if (!m->flags->pidfile)
        return;
    FILE *f = fopen(FL_RELOAD_STATUS_FILE, "w");
    if (!f)
        return;
    fprintf(f, "%u %s\n", m->reloads, error ? error : "ok");
    fclose(f);
}

static void reload_finished(fl_master_t *m, const char *error)
{
    m->reloads++;
    if (error) {
        fl_error("reload failed, still serving the previous configuration: %s", error);
        fl_sd_notify("READY=1\nSTATUS=Reload failed: %s", error);
    } else {
        fl_info("reload complete: generation %u serves", m->active ? m->active->id : 0);
        fl_sd_notify("READY=1\nSTATUS=serving (generation %u)", m->active ? m->active->id : 0);
    }
    write_reload_status(m, error);
    if (m->reload_queued && m->state == M_RUNNING) {
        m->reload_queued = false;
        kill(getpid(), SIGHUP);
    }
}

static void begin_reload(fl_master_t *m)
{
    if (m->state != M_RUNNING)
        return;
    if (m->pending) {
        m->reload_queued = true; /* one at a time: run it once the current one is decided */
        return;
    }
    fl_info("SIGHUP: reloading %s", m->flags->config_path ? m->flags->config_path : "(overrides)");
    fl_sd_reloading();
    fl_conf_t c;
    fl_conf_err_t err;
    if (fl_conf_load(&c, m->flags->config_path, m->flags->overrides, m->flags->noverrides, &err) < 0) {
        reload_finished(m, err.msg);
        return;
    }
    char msg[600];
    fl_gen_t *g = gen_new(m, &c, msg, sizeof(msg));
    if (!g) {
        fl_conf_free(&c);
        reload_finished(m, msg);
        listeners_gc(m);
        return;
    }
    m->pending = g;
    if (gen_start(g) < 0) {
        gen_retire(g, 0);
        reload_finished(m, "cannot start the new reactors");
    }
}

/* ---- supervision ---- */

static void gen_ready(fl_gen_t *g)
{
    fl_master_t *m = g->m;
    g->state = G_ACTIVE;
    fl_timer_del(m->loop, g->timer);
    g->timer = 0;
    unsigned workers = 0;
    for (unsigned i = 0; i < g->nreactors; i++)
        workers += g->slots[i].workers;
    fl_gen_t *old = m->active;
    m->active = g;
    if (m->pending == g)
        m->pending = NULL;
    fl_info("forkline %s ready: http://%s, %u reactors, %u PHP workers", FL_VERSION,
            g->conf.http.address, g->nreactors, workers);
    if (old) {
        /* Only now does the old generation stop accepting: no connection is ever refused. */
        gen_retire(old, old->grace_ms);
        reload_finished(m, NULL);
    } else {
        m->state = M_RUNNING;
        fl_sd_notify("READY=1\nSTATUS=serving (generation %u)", g->id);
    }
}

static void check_all_ready(fl_gen_t *g)
{
    if (g->state != G_STARTING)
        return;
    for (unsigned i = 0; i < g->nreactors; i++)
        if (!g->slots[i].ready)
            return;
    gen_ready(g);
}

static void start_failed(fl_gen_t *g, const char *why)
{
    fl_master_t *m = g->m;
    if (m->pending == g) {
        gen_retire(g, 0);
        reload_finished(m, why);
    } else if (m->state == M_STARTING) {
        fl_error("start-up failed: %s", why);
        begin_stop(m, 1, "start-up failed");
    }
}

static void chan_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    fl_rslot_t *s = data;
    fl_gen_t *g = s->gen;
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
        s->ready = true; /* crashes is reset only by a long life: see reactor_exited */
        check_all_ready(g);
    } else if (strncmp(buf, FL_MSG_FAIL, strlen(FL_MSG_FAIL)) == 0) {
        char why[1100];
        snprintf(why, sizeof(why), "reactor %u: %s", s->index, buf + strlen(FL_MSG_FAIL));
        if (g->state == G_STARTING)
            start_failed(g, why);
        else
            fl_error("%s", why);
    }
}

static void respawn_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_rslot_t *s = data;
    s->respawn = 0;
    if (s->gen->m->state != M_STOPPING && s->gen->state == G_ACTIVE && !s->gen->adopted)
        spawn_reactor(s->gen, s->index);
}

static void reactor_exited(fl_rslot_t *s, int status)
{
    fl_gen_t *g = s->gen;
    fl_master_t *m = g->m;
    if (s->chan >= 0) {
        fl_io_del(m->loop, s->chan);
        close(s->chan);
        s->chan = -1;
    }
    s->pid = 0;
    s->ready = false;
    if (g->state == G_RETIRING || m->state == M_STOPPING) {
        if (gen_live(g) == 0)
            gen_free(m, g);
        if (m->state == M_STOPPING && !m->gens)
            fl_loop_stop(m->loop);
        return;
    }
    if (WIFSIGNALED(status))
        fl_error("reactor %u was killed by signal %d", s->index, WTERMSIG(status));
    else
        fl_error("reactor %u exited with status %d", s->index, WEXITSTATUS(status));
    if (g->state == G_STARTING) {
        start_failed(g, "a reactor died during start-up");
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
                 s->index, s->crashes, (long long)delay);
    s->respawn = fl_timer_add(m->loop, delay, respawn_cb, s);
}

static void reap(fl_master_t *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        fl_rslot_t *hit = NULL;
        for (fl_gen_t *g = m->gens; g && !hit; g = g->next)
            for (unsigned i = 0; i < g->nreactors && !hit; i++)
                if (g->slots[i].pid == pid)
                    hit = &g->slots[i];
        if (hit)
            reactor_exited(hit, status);
    }
}

/* ---- stopping ---- */

static void force_stop(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_master_t *m = data;
    fl_warn("reactors did not stop in time: killing them");
    for (fl_gen_t *g = m->gens; g; g = g->next)
        gen_signal(g, SIGKILL);
    m->exit_code = 1;
}

static void begin_stop(fl_master_t *m, int exit_code, const char *why)
{
    if (m->state == M_STOPPING)
        return;
    int64_t grace = m->active ? m->active->grace_ms : 30000;
    fl_info("stopping: %s (grace period %lld ms)", why, (long long)grace);
    fl_sd_notify("STOPPING=1\nSTATUS=stopping");
    m->state = M_STOPPING;
    m->exit_code = exit_code;
    for (fl_gen_t *g = m->gens; g; g = g->next) {
        for (unsigned i = 0; i < g->nreactors; i++) {
            fl_timer_del(m->loop, g->slots[i].respawn);
            g->slots[i].respawn = 0;
        }
        gen_signal(g, SIGTERM);
        if (gen_live(g) == 0) {
            gen_free(m, g);
            g = m->gens;
            if (!g)
                break;
        }
    }
    fl_timer_add(m->loop, grace + 1000, force_stop, m);
    if (!m->gens)
        fl_loop_stop(m->loop);
}

static void on_stop_signal(fl_master_t *m, int sig)
{
    int64_t now = fl_now_ms();
    if (m->state == M_STOPPING) {
        /* Ctrl-C under Laravel Octane sends SIGINT and then SIGTERM: that is one stop. */
        if (m->last_stop_sig == SIGINT && sig == SIGTERM && now - m->last_stop_ms < 1000) {
            m->last_stop_sig = sig;
            return;
        }
        fl_warn("exit forced");
        for (fl_gen_t *g = m->gens; g; g = g->next)
            gen_signal(g, SIGKILL);
        m->exit_code = 1;
        return;
    }
    m->last_stop_sig = sig;
    m->last_stop_ms = now;
    begin_stop(m, m->state == M_STARTING ? 1 : 0, strsignal(sig));
}

/* ---- binary upgrade (SIGUSR2): re-exec in place, same pid, sockets and reactors inherited ---- */

static void set_cloexec(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC));
}

static void upgrade_fds(fl_master_t *m, bool cloexec)
{
    for (unsigned i = 0; i < m->nlisteners; i++)
        set_cloexec(m->listeners[i].fd, cloexec);
    for (unsigned i = 0; m->active && i < m->active->nreactors; i++)
        if (m->active->slots[i].chan >= 0)
            set_cloexec(m->active->slots[i].chan, cloexec);
}

static void begin_upgrade(fl_master_t *m)
{
    fl_gen_t *g = m->active;
    if (m->state != M_RUNNING || !g || m->gens != g || g->next) {
        fl_warn("SIGUSR2 ignored: a start-up, reload or stop is in progress; try again later");
        return;
    }
    fl_buf_t b = {0};
    for (unsigned i = 0; i < m->nlisteners; i++)
        fl_buf_printf(&b, "L|%d|%s;", m->listeners[i].fd, m->listeners[i].address);
    for (unsigned i = 0; i < g->nreactors; i++)
        if (g->slots[i].pid > 0 && g->slots[i].chan >= 0)
            fl_buf_printf(&b, "R|%d|%d|%d|%u|%lld;", (int)g->slots[i].pid, g->slots[i].chan,
                          g->listen_fd, g->slots[i].workers, (long long)g->grace_ms);
    fl_buf_append(&b, "", 1);
    fl_info("SIGUSR2: re-executing %s in place", m->flags->argv[0]);
    upgrade_fds(m, false);
    setenv(FL_UPGRADE_ENV, b.data, 1);
    fl_buf_free(&b);
    char here[4096];
    bool have_here = getcwd(here, sizeof(here)) != NULL;
    if (m->flags->orig_cwd && chdir(m->flags->orig_cwd) < 0)
        fl_warn("cannot return to %s: %s", m->flags->orig_cwd, strerror(errno));
    execv("/proc/self/exe", m->flags->argv);
    fl_error("upgrade failed, still serving: exec: %s", strerror(errno));
    if (have_here && chdir(here) < 0)
        fl_warn("cannot return to %s: %s", here, strerror(errno));
    unsetenv(FL_UPGRADE_ENV);
    upgrade_fds(m, true);
}

/* In the new image: take over the listeners and the reactors the old image left running. */
static void adopt_upgrade(fl_master_t *m, const char *spec)
{
    fl_gen_t *g = calloc(1, sizeof(*g));
    g->m = m;
    g->id = m->next_gen++;
    g->adopted = true;
    g->state = G_ACTIVE;
    g->grace_ms = 30000;
    g->listen_fd = -1;
    g->slots = calloc(64, sizeof(*g->slots));
    char *copy = strdup(spec), *save = NULL;
    for (char *e = strtok_r(copy, ";", &save); e; e = strtok_r(NULL, ";", &save)) {
        int fd, pid, chan, lfd;
        unsigned workers;
        long long grace;
        char addr[256];
        if (sscanf(e, "L|%d|%255[^;]", &fd, addr) == 2 && m->nlisteners < FL_ARRAY_SIZE(m->listeners)) {
            set_cloexec(fd, true);
            m->listeners[m->nlisteners].fd = fd;
            m->listeners[m->nlisteners++].address = strdup(addr);
        } else if (sscanf(e, "R|%d|%d|%d|%u|%lld", &pid, &chan, &lfd, &workers, &grace) == 5 &&
                   g->nreactors < 64) {
            fl_rslot_t *s = &g->slots[g->nreactors];
            *s = (fl_rslot_t){.gen = g, .index = g->nreactors, .pid = pid, .chan = chan,
                              .ready = true, .started_ms = fl_now_ms(), .workers = workers};
            set_cloexec(chan, true);
            fl_io_set(m->loop, chan, FL_EV_READ, chan_io, s);
            g->listen_fd = lfd;
            g->grace_ms = grace;
            g->nreactors++;
        }
    }
    free(copy);
    g->next = m->gens;
    m->gens = g;
    m->active = g;
    m->state = M_RUNNING;
    fl_info("upgrade: adopted %u listeners and %u running reactors", m->nlisteners, g->nreactors);
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
            on_stop_signal(m, (int)si.ssi_signo);
            break;
        case SIGHUP:
            begin_reload(m);
            break;
        case SIGUSR2:
            begin_upgrade(m);
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

int fl_master_run(fl_conf_t *c, const fl_master_flags_t *f)
{
    fl_master_t m = {.flags = f, .sigfd = -1, .next_gen = 1};
    char err[600];
    fl_log_set_role("master");
    fl_proctitle_set("forkline: master");
    fl_sd_init();
    m.loop = fl_loop_new(1024);
    if (!m.loop || setup_signals(&m) < 0) {
        fl_error("cannot set up the master loop: %s", strerror(errno));
        return 1;
    }
    const char *up = getenv(FL_UPGRADE_ENV);
    char *upgrade = up ? strdup(up) : NULL;
    unsetenv(FL_UPGRADE_ENV);
    if (upgrade) {
        adopt_upgrade(&m, upgrade);
        free(upgrade);
    }
    fl_gen_t *g = c ? gen_new(&m, c, err, sizeof(err)) : NULL;
    if (!g && !m.active) {
        fl_error("%s", err);
        fl_loop_free(m.loop);
        return 1;
    }
    if (f->pidfile) {
        FILE *pf = fopen(".pid", "w");
        if (pf) {
            fprintf(pf, "%d", (int)getpid());
            fclose(pf);
        }
    }
    if (!f->silent && !m.active)
        printf("[INFO] RoadRunner server started; version: %s, buildtime: forkline %s\n",
               FL_RR_VERSION, FL_VERSION);
    fflush(stdout);
    if (m.active) {
        /* after SIGUSR2: the new image starts its own generation like a reload */
        if (!g) {
            reload_finished(&m, c ? err : "the new image could not load the configuration");
        } else {
            m.pending = g;
            if (gen_start(g) < 0) {
                gen_retire(g, 0);
                reload_finished(&m, "cannot start the new reactors");
            }
        }
    } else {
        m.state = M_STARTING;
        if (gen_start(g) < 0)
            begin_stop(&m, 1, "cannot fork a reactor");
    }
    fl_loop_run(m.loop);
    reap(&m);
    while (m.gens)
        gen_free(&m, m.gens);
    for (unsigned i = 0; i < m.nlisteners; i++) {
        close(m.listeners[i].fd);
        free(m.listeners[i].address);
    }
    fl_loop_free(m.loop);
    fl_info("stopped");
    return m.exit_code;
}

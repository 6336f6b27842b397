#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ev.h"
#include "informer.h"
#include "jobs.h"
#include "log.h"
#include "logconf.h"
#include "master.h"
#include "net.h"
#include "proctitle.h"
#include "reactor.h"
#include "rpc.h"
#include "sdnotify.h"
#include "services.h"
#include "spare.h"
#include "spawn.h"
#include "srvmetrics.h"
#include "status.h"

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
    unsigned jobs_workers; /* its jobs pool's size; 0: it runs none */
} fl_rslot_t;

/* One generation of reactors, built from one cycle (config). A reload starts a new generation
 * beside the live one and retires the old one only once every new reactor is READY. */
struct fl_gen {
    fl_master_t *m;
    unsigned id;
    fl_conf_t conf;
    char **envp;
    int listen_fd;       /* borrowed from the master's listener table; -1 = none */
    int ssl_fd;          /* http.ssl listener, borrowed too; -1 = none */
    fl_tls_ctx_t *tls;   /* http.ssl context, shared by its reactors (session tickets) */
    unsigned nreactors;
    fl_rslot_t *slots;
    int state;
    int64_t grace_ms;    /* endure.grace_period of its cycle */
    bool adopted;        /* inherited over a SIGUSR2 re-exec: no config, never respawned */
    fl_timer_id timer;   /* start-up deadline, then the retire deadline */
    fl_spawn_cred_t cred; /* server.user / server.group for its PHP workers */
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
    fl_spare_t spare; /* the busy-poll governor of the loop */
};

/* ---- listening socket ---- */


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
    int fd = fl_listen_tcp(address, 4096, err, errlen);
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
            used = g->listen_fd == m->listeners[i].fd || g->ssl_fd == m->listeners[i].fd;
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

static bool has_middleware(const fl_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->http.nmiddleware; i++)
        if (strcmp(c->http.middleware[i], name) == 0)
            return true;
    return false;
}

/* The HTTP front's own options: forms, uploads, proxies, TLS, timeouts. */
static void fill_http_opts(fl_gen_t *g, fl_http_opts_t *h)
{
    const fl_conf_t *c = &g->conf;
    h->read_header_timeout_ms = c->http.read_header_timeout_ms;
    h->read_timeout_ms = c->http.read_timeout_ms;
    h->write_timeout_ms = c->http.write_timeout_ms;
    h->keepalive_timeout_ms = c->http.idle_timeout_ms;
    h->raw_body = c->http.raw_body;
    h->access_logs = c->http.access_logs;
    h->uploads_dir = c->http.uploads.dir;
    h->uploads_forbid = c->http.uploads.forbid;
    h->uploads_allow = c->http.uploads.allow;
    if (g->cred.set_ids) { /* temp files readable by workers that run as server.user */
        h->uploads_uid = g->cred.uid;
        h->uploads_gid = g->cred.gid;
    }
    /* RoadRunner reads trusted_subnets only through the proxy_ip_parser middleware */
    if (has_middleware(c, "proxy_ip_parser"))
        h->trusted_subnets = c->http.trusted_subnets;
    h->tls = g->tls;
    h->ssl_redirect = g->tls && c->http.ssl.redirect;
    h->ssl_port = c->http.ssl.port;
}

/* jobs.pool (master/jobs.c): the slot's share of num_workers (plan_reactors); called in the
 * reactor child only, so its RR_MODE=jobs environment is never freed by the master. */
static void fill_jobs_opts(fl_gen_t *g, unsigned slot, fl_reactor_opts_t *o)
{
    const fl_conf_t *c = &g->conf;
    const fl_pool_conf_t *jc = &c->jobs.pool;
    if (!c->jobs.has_pool || g->adopted)
        return;
    o->jobs_pool = o->pool;
    o->jobs_pool.argv = jc->command.argc ? jc->command.argv : c->server.command.argv;
    o->jobs_pool.envp = build_env(c, "jobs");
    o->jobs_pool.num_workers = g->slots[slot].jobs_workers;
    o->jobs_pool.max_jobs = jc->max_jobs;
    o->jobs_pool.max_queue_size = 0; /* the master sends at most 2 jobs per worker */
    o->jobs_pool.allocate_timeout_ms = jc->allocate_timeout_ms;
    o->jobs_pool.destroy_timeout_ms = jc->destroy_timeout_ms;
    o->jobs_pool.reset_timeout_ms = jc->reset_timeout_ms;
    o->jobs_pool.debug = false;
    o->jobs_pool.watch_tick_ms = jc->supervisor ? jc->watch_tick_ms : 0;
    o->jobs_pool.ttl_ms = jc->ttl_ms;
    o->jobs_pool.idle_ttl_ms = jc->idle_ttl_ms;
    /* jobs.timeout bounds every job's run (the worker is killed, the job requeued) */
    o->jobs_pool.exec_ttl_ms = jc->exec_ttl_ms && jc->exec_ttl_ms < c->jobs.timeout_ms
                                   ? jc->exec_ttl_ms
                                   : c->jobs.timeout_ms;
    o->jobs_pool.max_worker_memory = jc->max_worker_memory;
    o->jobs_pool.name = "jobs";
}

static void fill_reactor_opts(fl_gen_t *g, unsigned slot, int chan, fl_reactor_opts_t *o)
{
    const fl_conf_t *c = &g->conf;
    const fl_pool_conf_t *pc = &c->http.pool;
    memset(o, 0, sizeof(*o));
    o->slot = slot;
    o->listen_fd = g->listen_fd;
    o->ssl_listen_fd = g->ssl_fd;
    o->chan_fd = chan;
    fill_http_opts(g, &o->http);
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
    if (c->http.static_files.enabled)
        o->http.static_files = (fl_static_opts_t){
            .dir = c->http.static_files.dir,
            .forbid = c->http.static_files.forbid,
            .allow = c->http.static_files.allow,
            .calculate_etag = c->http.static_files.calculate_etag,
            .weak = c->http.static_files.weak,
            .response = c->http.static_files.response,
            .symlinks = c->http.static_files.symlinks,
        };
    o->grace_period_ms = c->endure.grace_period_ms;
    o->pool.reset_timeout_ms = pc->reset_timeout_ms;
    o->pool.debug = pc->debug;
    o->pool.watch_tick_ms = pc->supervisor ? pc->watch_tick_ms : 0;
    o->pool.ttl_ms = pc->ttl_ms;
    o->pool.idle_ttl_ms = pc->idle_ttl_ms;
    o->pool.exec_ttl_ms = pc->exec_ttl_ms;
    o->pool.stream_timeout_ms = pc->stream_timeout_ms;
    o->pool.max_worker_memory = pc->max_worker_memory;
    o->pool.set_ids = g->cred.set_ids;
    o->pool.uid = g->cred.uid;
    o->pool.gid = g->cred.gid;
    fill_jobs_opts(g, slot, o);
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
    int mslot = fl_srvm_acquire(); /* its shared-memory counters (srvmetrics.h) */
    pid_t pid = fork();
    fl_srvm_forked(mslot, pid);
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
            if (m->listeners[i].fd != g->listen_fd && m->listeners[i].fd != g->ssl_fd)
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
    /* jobs.pool.num_workers is spread the same way (0: one per reactor) */
    unsigned jw = !c->jobs.has_pool ? 0 : c->jobs.pool.num_workers ? c->jobs.pool.num_workers : r;
    g->nreactors = r;
    g->slots = calloc(r, sizeof(*g->slots));
    for (unsigned i = 0; i < r; i++) {
        g->slots[i].gen = g;
        g->slots[i].index = i;
        g->slots[i].workers = w / r + (i < w % r ? 1 : 0);
        g->slots[i].jobs_workers = jw / r + (i < jw % r ? 1 : 0);
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
    fl_tls_ctx_free(g->tls);
    free(g->slots);
    free(g);
    listeners_gc(m);
}

/* server.user / server.group → who the PHP workers run as (spec §2.2; the group, when given,
 * replaces the user's primary group). Switching users needs root: anything else is an error. */
static int resolve_cred(const char *user, const char *group, fl_spawn_cred_t *cred, char *err,
                        size_t errlen)
{
    memset(cred, 0, sizeof(*cred));
    if (!user && !group)
        return 0;
    struct passwd *pw = user ? getpwnam(user) : NULL;
    if (user && !pw) {
        snprintf(err, errlen, "server.user: no such user: %s", user);
        return -1;
    }
    cred->uid = pw ? pw->pw_uid : geteuid();
    cred->gid = pw ? pw->pw_gid : getegid();
    if (group) {
        struct group *gr = getgrnam(group);
        if (!gr) {
            snprintf(err, errlen, "server.group: no such group: %s", group);
            return -1;
        }
        cred->gid = gr->gr_gid;
    }
    if (cred->uid == geteuid() && cred->gid == getegid())
        return 0;
    if (geteuid() != 0) {
        snprintf(err, errlen, "server.user: running workers as %s needs root", user ? user : group);
        return -1;
    }
    cred->set_ids = true;
    return 0;
}

/* Logs the complete lines of b under "server" (all of it with flush) and keeps the rest. */
static void log_output_lines(fl_buf_t *b, bool flush)
{
    size_t off = 0;
    for (char *nl; off < b->len && (nl = memchr(b->data + off, '\n', b->len - off));
         off = (size_t)(nl - b->data) + 1)
        fl_logf(FL_LOG_INFO, "server", b->data + off, (size_t)(nl - b->data) - off, NULL, 0);
    if (flush && off < b->len) {
        fl_logf(FL_LOG_INFO, "server", b->data + off, b->len - off, NULL, 0);
        off = b->len;
    }
    fl_buf_consume(b, off);
}

/* server.on_init: runs once, before the first workers start, bounded by exec_timeout; its
 * stdout and stderr are logged. -1 only if it failed and exit_on_error is set. */
static int run_on_init(const fl_conf_t *c)
{
    const char *cmd = c->server.on_init.command.argc ? c->server.on_init.command.argv[0] : NULL;
    if (!c->server.on_init.enabled || !cmd)
        return 0;
    char err[600] = "";
    fl_spawn_cred_t cred;
    fl_spawned_t s;
    int status = -1;
    if (resolve_cred(c->server.on_init.user, NULL, &cred, err, sizeof(err)) == 0) {
        char **env = NULL;
        size_t n = 0;
        for (char **e = environ; *e; e++)
            env_put(&env, &n, *e);
        for (size_t i = 0; i < c->server.on_init.nenv; i++)
            env_put(&env, &n, c->server.on_init.env[i]);
        int rc = fl_spawn_as(c->server.on_init.command.argv, env, &cred, &s, err, sizeof(err));
        free_env(env);
        if (rc == 0) {
            fl_info("server.on_init: running %s (pid %d)", cmd, (int)s.pid);
            close(s.relay_wfd); /* its stdin: EOF at once */
            struct pollfd pf[2] = {{s.relay_fd, POLLIN, 0}, {s.err_fd, POLLIN, 0}};
            fl_buf_t out[2] = {{0}, {0}};
            int64_t deadline = fl_now_ms() + c->server.on_init.exec_timeout_ms;
            while (status < 0 && fl_now_ms() < deadline) {
                if (poll(pf, 2, pf[0].fd < 0 && pf[1].fd < 0 ? 10 : 100) < 0 && errno != EINTR)
                    break;
                for (int i = 0; i < 2; i++) {
                    if (pf[i].fd < 0 || !pf[i].revents || fl_buf_reserve(&out[i], 65536) < 0)
                        continue;
                    ssize_t k = read(pf[i].fd, out[i].data + out[i].len, 65536);
                    if (k > 0) {
                        out[i].len += (size_t)k;
                        log_output_lines(&out[i], false);
                    } else if (k == 0 || errno != EAGAIN) {
                        log_output_lines(&out[i], true);
                        close(pf[i].fd);
                        pf[i].fd = -1;
                    }
                }
                int st;
                if (waitpid(s.pid, &st, WNOHANG) == s.pid)
                    status = st;
            }
            if (status < 0) {
                kill(s.pid, SIGKILL);
                waitpid(s.pid, NULL, 0);
                snprintf(err, sizeof(err), "%s did not finish within exec_timeout (%lld ms): killed",
                         cmd, (long long)c->server.on_init.exec_timeout_ms);
            } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                snprintf(err, sizeof(err), "%s %s %d", cmd,
                         WIFEXITED(status) ? "exited with status" : "was killed by signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            }
            for (int i = 0; i < 2; i++) {
                log_output_lines(&out[i], true);
                fl_buf_free(&out[i]);
                if (pf[i].fd >= 0)
                    close(pf[i].fd);
            }
        }
    }
    if (!err[0]) {
        fl_info("server.on_init: %s finished", cmd);
        return 0;
    }
    fl_error("server.on_init: %s", err);
    return c->server.on_init.exit_on_error ? -1 : 0;
}

/* Builds a generation from a loaded config (ownership of *c moves in). */
static fl_gen_t *gen_new(fl_master_t *m, fl_conf_t *c, char *err, size_t errlen)
{
    if (!c->http.address && !c->http.ssl.enabled) {
        snprintf(err, errlen, "%s: neither http.address nor http.ssl is set: nothing to serve",
                 c->path ? c->path : "config");
        return NULL;
    }
    const fl_argv_t *cmd = c->http.pool.command.argc ? &c->http.pool.command : &c->server.command;
    char why[512];
    if (!cmd->argc || fl_check_command(cmd->argv[0], why, sizeof(why)) < 0) {
        snprintf(err, errlen, "server.command: %s", cmd->argc ? why : "command should not be empty");
        return NULL;
    }
    fl_spawn_cred_t cred;
    if (resolve_cred(c->server.user, c->server.group, &cred, err, errlen) < 0)
        return NULL;
    struct stat sb;
    const char *sdir = c->http.static_files.dir;
    if (c->http.static_files.section && (stat(sdir, &sb) < 0 || !S_ISDIR(sb.st_mode))) {
        snprintf(err, errlen, "http.static.dir: root directory %s does not exist or is not a "
                 "directory", sdir);
        return NULL;
    }
    fl_tls_ctx_t *tls = NULL;
    if (c->http.ssl.enabled) {
        fl_tls_conf_t tc = {c->http.ssl.cert, c->http.ssl.key, c->http.ssl.root_ca,
                            c->http.ssl.client_auth};
        if (!(tls = fl_tls_ctx_new(&tc, err, errlen)))
            return NULL;
    }
    int fd = c->http.address ? listener_get(m, c->http.address, err, errlen) : -1;
    int ssl_fd = tls && (fd >= 0 || !c->http.address)
                     ? listener_get(m, c->http.ssl.address, err, errlen) : -1;
    if ((c->http.address && fd < 0) || (tls && ssl_fd < 0)) {
        fl_tls_ctx_free(tls);
        listeners_gc(m);
        return NULL;
    }
    fl_gen_t *g = calloc(1, sizeof(*g));
    g->ssl_fd = ssl_fd;
    g->tls = tls;
    g->cred = cred;
    g->m = m;
    g->id = m->next_gen++;
    g->conf = *c;
    memset(c, 0, sizeof(*c));
    g->listen_fd = fd;
    g->grace_ms = g->conf.endure.grace_period_ms;
    g->envp = build_env(&g->conf, "http");
    g->state = G_STARTING;
    if (g->conf.http.static_files.section && !g->conf.http.static_files.enabled)
        fl_warn("http.static is configured but \"static\" is not in http.middleware: "
                "static files are not served (RoadRunner's rule)");
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
        fl_services_abort(); /* what the reload had opened beside the live services */
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
    /* rpc, kv, metrics, status of the new config beside the live ones (services.c) */
    if (fl_services_prepare(&g->conf, msg, sizeof(msg)) < 0) {
        gen_free(m, g);
        reload_finished(m, msg);
        return;
    }
    m->pending = g;
    /* the new generation's reactors inherit the new logging; the old ones keep theirs */
    if (fl_conf_apply_logs(&g->conf) < 0)
        fl_warn("reload: the logs section was not applied; logging stays as it was");
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
    fl_loop_spin(m->loop, g->conf.busy_poll_us, fl_spare_cpu, &m->spare);
    fl_info("forkline %s ready: %s://%s, %u reactors, %u PHP workers", FL_VERSION,
            g->conf.http.address ? "http" : "https",
            g->conf.http.address ? g->conf.http.address : g->conf.http.ssl.address, g->nreactors,
            workers);
    if (old) {
        fl_jobs_reconfigure(&g->conf); /* pipelines of the new config (master/jobs.c) */
        fl_services_commit(&g->conf);  /* and its rpc, kv, metrics, status (services.c) */
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

/* The RPC services on top of the reactors: at the end of this file. */
static int rpc_start(fl_master_t *m, const fl_conf_t *c);
static void rpc_stop(void);
static bool rpc_chan_msg(fl_rslot_t *s, const char *msg, size_t n);

static void chan_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    fl_rslot_t *s = data;
    fl_gen_t *g = s->gen;
    static char buf[FL_INFORMER_MSG_MAX + 1]; /* a WORKERS answer is one big message */
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fl_io_del(loop, fd);
        close(fd);
        s->chan = -1;
        fl_jobs_chan_gone(s); /* its jobs in flight go back to their pipelines */
        return;
    }
    buf[n] = 0;
    if (strcmp(buf, FL_MSG_READY) == 0) {
        s->ready = true; /* crashes is reset only by a long life: see reactor_exited */
        check_all_ready(g);
    } else if (strncmp(buf, FL_MSG_FAIL, strlen(FL_MSG_FAIL)) == 0) {
        char why[1100];
        snprintf(why, sizeof(why), "reactor %u: %.1000s", s->index, buf + strlen(FL_MSG_FAIL));
        if (g->state == G_STARTING)
            start_failed(g, why);
        else
            fl_error("%s", why);
    } else if (!fl_jobs_chan_msg(s, fd, buf, (size_t)n)) {
        rpc_chan_msg(s, buf, (size_t)n);
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
    fl_jobs_chan_gone(s);
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
        fl_srvm_exited(pid); /* its counters join the totals */
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
    fl_status_stopping(); /* /ready fails; the listener stays open through the grace period */
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
    g->ssl_fd = -1; /* not passed through the upgrade environment (yet) */
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
        case SIGUSR1:
            /* logrotate moved the files: reopen ours, and each reactor its own */
            fl_log_reopen();
            for (fl_gen_t *g = m->gens; g; g = g->next)
                gen_signal(g, SIGUSR1);
            fl_info("SIGUSR1: log files reopened");
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
    if (m.loop)
        fl_spare_init(&m.spare, m.loop);
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
    if (!g && c)
        fl_conf_free(c); /* gen_new takes the config only when it succeeds */
    if (!g && !m.active) {
        fl_error("%s", err);
        fl_loop_free(m.loop);
        return 1;
    }
    if (rpc_start(&m, g ? &g->conf : NULL) < 0 && !m.active) {
        gen_free(&m, g);
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
        if (run_on_init(&g->conf) < 0)
            m.exit_code = 1; /* nothing was started: no loop to run */
        else if (gen_start(g) < 0)
            begin_stop(&m, 1, "cannot fork a reactor");
    }
    /* a stop decided before the loop ran (fl_loop_run clears the stop flag) must hold */
    bool stopped = m.state == M_STOPPING && !m.gens;
    bool failed = m.state == M_STARTING && m.exit_code != 0;
    if (!stopped && !failed)
        fl_loop_run(m.loop);
    rpc_stop();
    reap(&m);
    while (m.gens)
        gen_free(&m, m.gens);
    for (unsigned i = 0; i < m.nlisteners; i++) {
        close(m.listeners[i].fd);
        free(m.listeners[i].address);
    }
    fl_loop_free(m.loop);
    fl_spare_close(&m.spare);
    fl_info("stopped");
    return m.exit_code;
}

/* ---- RPC (rpc.listen): resetter and informer on top of the reactors ----
 * The server (rpc.c) decodes calls; these operations ask every reactor of the serving generation
 * over its channel ("RESET <id>", "WORKERS <id>", see informer.h) and complete the call once all
 * of them answered. A reactor that dies meanwhile no longer counts (its replacement starts with
 * fresh workers anyway); a deadline bounds every operation. */

typedef struct rpc_op {
    unsigned id;
    bool workers; /* informer.Workers, else resetter.Reset (or a scale) */
    int scale;    /* informer.AddWorker +1 / RemoveWorker -1, else 0 */
    bool jobs;    /* the scale is of the jobs pool */
    fl_rpc_call_t *call;
    pid_t waiting[1024]; /* reactors that have not answered (reactors: at most 1024) */
    unsigned nwaiting;
    fl_buf_t items; /* WORKERS: the JSON items gathered so far */
    char error[256];
    int64_t deadline_ms;
    struct rpc_op *next;
} rpc_op_t;

static struct {
    fl_master_t *m;
    fl_rpc_server_t *srv;
    rpc_op_t *ops;
    unsigned next_id;
    fl_timer_id tick;
} rpcm;

static size_t rpc_plugins(void *m, const char **names, size_t max)
{
    FL_UNUSED(m);
    const fl_gen_t *g = rpcm.m->active ? rpcm.m->active : rpcm.m->gens;
    size_t n = 0;
    if (n < max)
        names[n++] = "http";
    if (n < max && g && !g->adopted && g->conf.jobs.has_pool)
        names[n++] = "jobs"; /* the jobs pool (reactor.c answers "J"-prefixed requests) */
    return n;
}

static void rpc_op_finish(rpc_op_t *op)
{
    for (rpc_op_t **pp = &rpcm.ops; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
    if (op->workers) {
        fl_buf_t b = {0};
        if (fl_buf_puts(&b, "{\"workers\":[") == 0 &&
            fl_buf_append(&b, op->items.data, op->items.len) == 0 && fl_buf_puts(&b, "]}") == 0)
            fl_rpc_reply_json(op->call, b.data, b.len);
        else
            fl_rpc_fail(op->call, "out of memory");
        fl_buf_free(&b);
    } else if (op->error[0]) {
        fl_rpc_fail(op->call, "%s", op->error);
    } else if (op->scale) {
        fl_rpc_reply_json(op->call, "false", 5); /* RR never sets the reply (§9.3) */
    } else {
        fl_info("reset: every PHP worker was replaced");
        fl_rpc_reply_json(op->call, "true", 4);
    }
    fl_buf_free(&op->items);
    free(op);
}

static bool rpc_pid_alive(pid_t pid)
{
    for (fl_gen_t *g = rpcm.m->gens; g; g = g->next)
        for (unsigned i = 0; i < g->nreactors; i++)
            if (g->slots[i].pid == pid && g->slots[i].chan >= 0)
                return true;
    return false;
}

static void rpc_tick(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(data);
    rpcm.tick = 0;
    int64_t now = fl_now_ms();
    for (rpc_op_t *op = rpcm.ops, *next; op; op = next) {
        next = op->next;
        for (unsigned i = 0; i < op->nwaiting;)
            if (rpc_pid_alive(op->waiting[i]))
                i++;
            else
                op->waiting[i] = op->waiting[--op->nwaiting];
        if (op->nwaiting && now >= op->deadline_ms && !op->error[0])
            snprintf(op->error, sizeof(op->error), "%s: %u reactor(s) did not answer in time",
                     op->workers || op->scale ? "informer" : "reset", op->nwaiting);
        if (op->nwaiting == 0 || now >= op->deadline_ms)
            rpc_op_finish(op);
    }
    if (rpcm.ops)
        rpcm.tick = fl_timer_add(rpcm.m->loop, 100, rpc_tick, NULL);
}

/* Sends "<verb> <id>" to the reactors concerned. A reset goes to every generation that is not
 * retiring: one still starting (or a reload's) may already run workers that loaded the old code.
 * informer.Workers shows the serving generation, or the starting one before anything serves. */
static void rpc_broadcast(fl_rpc_call_t *call, bool workers, bool jobs)
{
    fl_master_t *m = rpcm.m;
    rpc_op_t *op = calloc(1, sizeof(*op));
    if (!op) {
        fl_rpc_fail(call, "out of memory");
        return;
    }
    op->id = ++rpcm.next_id;
    op->workers = workers;
    op->call = call;
    int64_t timeout = 120000;
    char msg[64];
    int k = snprintf(msg, sizeof(msg), "%s%s%u", jobs ? "J" : "",
                     workers ? FL_MSG_WORKERS : FL_MSG_RESET_ID, op->id);
    for (fl_gen_t *g = m->gens; g; g = g->next) {
        if (g->state == G_RETIRING || (workers && m->active && g != m->active))
            continue;
        const fl_pool_conf_t *pc = jobs ? &g->conf.jobs.pool : &g->conf.http.pool;
        if (!g->adopted)
            timeout = pc->reset_timeout_ms + pc->allocate_timeout_ms;
        for (unsigned i = 0; i < g->nreactors && op->nwaiting < FL_ARRAY_SIZE(op->waiting); i++) {
            fl_rslot_t *s = &g->slots[i];
            if (s->pid > 0 && s->chan >= 0 &&
                send(s->chan, msg, (size_t)k, MSG_NOSIGNAL | MSG_DONTWAIT) == k)
                op->waiting[op->nwaiting++] = s->pid;
        }
    }
    op->deadline_ms = fl_now_ms() + (workers ? 5000 : timeout + 5000);
    op->next = rpcm.ops;
    rpcm.ops = op;
    if (!workers)
        fl_info("reset: replacing the PHP workers of %u reactor(s)", op->nwaiting);
    if (op->nwaiting == 0)
        rpc_op_finish(op); /* no reactor: whatever starts next runs the new code */
    else if (!rpcm.tick)
        rpcm.tick = fl_timer_add(m->loop, 100, rpc_tick, NULL);
}

static void rpc_reset(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    rpc_broadcast(call, false, strcmp(plugin, "jobs") == 0);
}

static void rpc_workers(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    rpc_broadcast(call, true, strcmp(plugin, "jobs") == 0);
}

/* informer.AddWorker / RemoveWorker: one worker more or fewer in the serving generation, on the
 * reactor with the fewest workers (add) or the most (remove), so N calls change the total by N.
 * The count is the slot's (g->slots[i].workers, .jobs_workers for the jobs pool), so a respawned
 * reactor keeps it; a reload builds its generation from the config again, which restores the
 * configured size. A reactor never goes below one worker: it would accept connections it cannot
 * serve (http), or hold a jobs pool with no capacity (jobs). A reactor without a jobs pool
 * (jobs.pool.num_workers below the number of reactors) does not get one: the pools it could
 * grow are the ones it has. The reactor tells the jobs broker its new capacity (JCAP). */
static void rpc_scale(fl_rpc_call_t *call, int delta, bool jobs)
{
    fl_master_t *m = rpcm.m;
    fl_gen_t *g = m->active;
    for (fl_gen_t *x = m->gens; !g && x; x = x->next)
        if (x->state != G_RETIRING)
            g = x;
    if (jobs && (!g || g->adopted || !g->conf.jobs.has_pool)) {
        fl_rpc_fail(call, "plugin jobs does not support workers management");
        return;
    }
    fl_rslot_t *best = NULL;
    unsigned total = 0, ready = 0;
    for (unsigned i = 0; g && i < g->nreactors; i++) {
        fl_rslot_t *s = &g->slots[i];
        unsigned n = jobs ? s->jobs_workers : s->workers;
        total += n;
        /* a reactor still starting has no pool to resize yet: its start-up counts its workers */
        if (s->pid <= 0 || s->chan < 0 || !s->ready || n == 0)
            continue;
        ready++;
        if (delta < 0 && n <= 1)
            continue;
        unsigned bn = !best ? 0 : jobs ? best->jobs_workers : best->workers;
        if (!best || (delta > 0 ? n < bn : n > bn))
            best = s;
    }
    if (delta > 0 && total >= 500) { /* the config's limit (<plugin>.pool.num_workers) */
        fl_rpc_fail(call, "number of workers can't be more than 500");
        return;
    }
    if (!best) {
        fl_rpc_fail(call, !ready ? "no reactor is ready to change its pool; try again"
                                 : "cannot remove a worker: every reactor has only one");
        return;
    }
    rpc_op_t *op = calloc(1, sizeof(*op));
    char msg[64];
    int k = op ? snprintf(msg, sizeof(msg), "%s" FL_MSG_SCALE "%u %s", jobs ? "J" : "",
                          ++rpcm.next_id, delta > 0 ? "+1" : "-1")
               : 0;
    if (!op || send(best->chan, msg, (size_t)k, MSG_NOSIGNAL | MSG_DONTWAIT) != k) {
        free(op);
        fl_rpc_fail(call, "cannot reach reactor %u", best->index);
        return;
    }
    unsigned *count = jobs ? &best->jobs_workers : &best->workers;
    *count = (unsigned)((int)*count + delta);
    op->id = rpcm.next_id;
    op->scale = delta;
    op->jobs = jobs;
    op->call = call;
    op->waiting[op->nwaiting++] = best->pid;
    const fl_pool_conf_t *pc = jobs ? &g->conf.jobs.pool : &g->conf.http.pool;
    int64_t timeout = g->adopted ? 120000 : pc->reset_timeout_ms + pc->allocate_timeout_ms;
    op->deadline_ms = fl_now_ms() + timeout + 5000;
    op->next = rpcm.ops;
    rpcm.ops = op;
    fl_info("informer: %s a %s worker %s reactor %u (%u there now)",
            delta > 0 ? "adding" : "removing", jobs ? "jobs" : "http", delta > 0 ? "to" : "from",
            best->index, *count);
    if (!rpcm.tick)
        rpcm.tick = fl_timer_add(m->loop, 100, rpc_tick, NULL);
}

/* The plugins with pools: http, and jobs when jobs.pool is configured (rpc_scale checks). */
static void rpc_add_worker(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    bool jobs = strcmp(plugin, "jobs") == 0;
    if (!jobs && strcmp(plugin, "http") != 0)
        fl_rpc_fail(call, "plugin %s does not support workers management", plugin);
    else
        rpc_scale(call, +1, jobs);
}

static void rpc_remove_worker(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    bool jobs = strcmp(plugin, "jobs") == 0;
    if (!jobs && strcmp(plugin, "http") != 0)
        fl_rpc_fail(call, "plugin %s does not support workers management", plugin);
    else
        rpc_scale(call, -1, jobs);
}

static int rpc_config(void *mp, fl_buf_t *out)
{
    fl_master_t *m = mp;
    const char *path = m->flags->config_path;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && out->len < (16u << 20))
        fl_buf_append(out, chunk, n);
    fclose(f);
    return 0;
}

/* "WORKERS <id> [..]" / "RESET-DONE <id>[ error]" / "SCALE-DONE <id>[ error]" from a reactor. */
static bool rpc_chan_msg(fl_rslot_t *s, const char *msg, size_t n)
{
    bool workers =
        n > strlen(FL_MSG_WORKERS) && !memcmp(msg, FL_MSG_WORKERS, strlen(FL_MSG_WORKERS));
    bool reset =
        n > strlen(FL_MSG_RESET_DONE) && !memcmp(msg, FL_MSG_RESET_DONE, strlen(FL_MSG_RESET_DONE));
    bool scale =
        n > strlen(FL_MSG_SCALE_DONE) && !memcmp(msg, FL_MSG_SCALE_DONE, strlen(FL_MSG_SCALE_DONE));
    if (!workers && !reset && !scale)
        return false;
    const char *prefix = workers ? FL_MSG_WORKERS : reset ? FL_MSG_RESET_DONE : FL_MSG_SCALE_DONE;
    reset = reset || scale; /* the same answer: done, or an error text */
    char *end;
    unsigned id = (unsigned)strtoul(msg + strlen(prefix), &end, 10);
    rpc_op_t *op = rpcm.ops;
    while (op && op->id != id)
        op = op->next;
    unsigned i = 0;
    while (op && i < op->nwaiting && op->waiting[i] != s->pid)
        i++;
    if (!op || i == op->nwaiting)
        return true; /* late: the operation was finished without this reactor */
    op->waiting[i] = op->waiting[--op->nwaiting];
    const char *rest = end < msg + n && *end == ' ' ? end + 1 : end;
    size_t rlen = (size_t)(msg + n - rest);
    if (workers && rlen >= 2 && rest[0] == '[' && rest[rlen - 1] == ']' && rlen > 2) {
        if (op->items.len)
            fl_buf_append(&op->items, ",", 1);
        fl_buf_append(&op->items, rest + 1, rlen - 2);
    } else if (reset && rlen && !op->error[0]) {
        snprintf(op->error, sizeof(op->error), "reactor %u: %.*s", s->index, (int)rlen, rest);
        /* a refused scale left the pool as it was: so is the count a respawn starts with */
        if (op->scale) {
            unsigned *count = op->jobs ? &s->jobs_workers : &s->workers;
            *count = (unsigned)((int)*count - op->scale);
        }
    }
    if (op->nwaiting == 0)
        rpc_op_finish(op);
    return true;
}

static int rpc_start(fl_master_t *m, const fl_conf_t *c)
{
    rpcm.m = m;
    if (!c || !c->rpc.enabled || !c->rpc.listen)
        return c ? fl_services_start(NULL, m->loop, c) : 0; /* metrics, status still listen */
    char err[600];
    rpcm.srv = fl_rpc_server_new(m->loop, c->rpc.listen, NULL, err, sizeof(err));
    if (!rpcm.srv) {
        fl_error("%s", err);
        return -1;
    }
    fl_rpc_ops_t ops = {.plugins = rpc_plugins,
                        .reset = rpc_reset,
                        .workers = rpc_workers,
                        .add_worker = rpc_add_worker,
                        .remove_worker = rpc_remove_worker,
                        .config = rpc_config};
    fl_rpc_add_builtin(rpcm.srv, &ops, m);
    if (fl_services_start(rpcm.srv, m->loop, c) < 0) /* kv, lock, metrics, ...: services.c */
        return -1;
    fl_logn(FL_LOG_DEBUG, "rpc", "RPC listening on %s", c->rpc.listen);
    return 0;
}

static void rpc_stop(void)
{
    while (rpcm.ops) {
        snprintf(rpcm.ops->error, sizeof(rpcm.ops->error), "the server is stopping");
        rpcm.ops->workers = false;
        rpc_op_finish(rpcm.ops);
    }
    fl_timer_del(rpcm.m->loop, rpcm.tick);
    rpcm.tick = 0;
    fl_rpc_server_free(rpcm.srv);
    rpcm.srv = NULL;
    fl_services_stop(); /* after the server: waiting calls are orphans by now */
}

/* The master's RPC server. See rpc.h; framing in protocols/rpc.c; spec §9. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "rpc.h"
#include "srvmetrics.h"

#define RPCS_DEF_MAX_FRAME (64u * 1024 * 1024 - 4096) /* + header: the buffer stays <= 64 MiB */
#define RPCS_DEF_MAX_CONNS 1024u
#define RPCS_DEF_STALL_MS 10000
#define RPCS_DEF_BACKLOG (4u * 1024 * 1024)
#define RPCS_DEF_PENDING 256u
#define RPCS_READ_CHUNK 65536

typedef struct {
    const fl_rpc_method_t *methods;
    size_t n;
    void *ctx;
} rpcs_table_t;

struct fl_rpc_server {
    fl_loop_t *loop;
    int fd;
    char *unix_path;      /* unlinked when the server is freed */
    int next_fd;          /* a reload's new listener, accepting beside fd until decided; -1 */
    char *next_unix_path; /* its socket file */
    fl_rpc_limits_t lim;
    rpcs_table_t *tables;
    size_t ntables;
    fl_rpc_conn_t *conns;
    unsigned nconns;
    int64_t last_refusal_log;
    fl_rpc_ops_t ops; /* the built-in services */
    void *master;
    fl_rpc_server_t *next_all; /* every server of the process, for the fork handler */
};

struct fl_rpc_conn {
    fl_rpc_server_t *s;
    int fd;
    fl_buf_t in, out;
    fl_rpc_call_t *calls; /* in flight */
    unsigned ncalls;
    int64_t last_progress;
    fl_timer_id stall_timer;
    fl_timer_id resume_timer; /* parse frames held back while the backlog was full */
    bool eof;                 /* the client half-closed: answer what is in flight, then close */
    bool in_io;               /* inside its own io callback: a failure only marks it dead */
    bool dead;
    fl_rpc_conn_t *next, *prev;
};

static fl_rpc_server_t *rpcs_all;

/* ---- the process's forks (reactors) must not keep client connections open ---- */

static void rpcs_atfork_child(void)
{
    for (fl_rpc_server_t *s = rpcs_all; s; s = s->next_all) {
        if (s->fd >= 0)
            close(s->fd);
        if (s->next_fd >= 0)
            close(s->next_fd);
        for (fl_rpc_conn_t *c = s->conns; c; c = c->next)
            close(c->fd);
    }
    rpcs_all = NULL;
}

static void rpcs_register_atfork(void)
{
    static bool done;
    if (!done && pthread_atfork(NULL, NULL, rpcs_atfork_child) == 0)
        done = true;
}

/* ---- listening ---- */

static int rpcs_listen_tcp(const char *addr, char *err, size_t errlen)
{
    char why[512];
    int fd = fl_listen_tcp(addr, 511, why, sizeof(why));
    if (fd < 0)
        snprintf(err, errlen, "rpc.listen tcp://%s", why);
    return fd;
}

static int rpcs_listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "rpc.listen unix://%s: bad socket path", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    struct stat st;
    /* A socket file left by a previous run would make bind fail; anything else is not ours. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 511) < 0) {
        snprintf(err, errlen, "rpc.listen unix://%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ---- connections ---- */

static void rpcs_conn_io(fl_loop_t *loop, int fd, int events, void *data);
static void rpcs_conn_close(fl_rpc_conn_t *c, const char *why);

static size_t rpcs_backlog(const fl_rpc_conn_t *c)
{
    return c->out.len;
}

static bool rpcs_wants_read(const fl_rpc_conn_t *c)
{
    return !c->eof && rpcs_backlog(c) <= c->s->lim.max_backlog && c->ncalls < c->s->lim.max_pending;
}

static void rpcs_conn_update(fl_rpc_conn_t *c)
{
    int mask = (rpcs_wants_read(c) ? FL_EV_READ : 0) | (c->out.len ? FL_EV_WRITE : 0);
    if (fl_io_mask(c->s->loop, c->fd) == mask)
        return;
    if (mask == 0)
        fl_io_del(c->s->loop, c->fd);
    else
        fl_io_set(c->s->loop, c->fd, mask, rpcs_conn_io, c);
}

/* Closes a connection that is done: the client half-closed and everything was answered. */
static bool rpcs_conn_finished(fl_rpc_conn_t *c)
{
    if (c->eof && c->ncalls == 0 && c->out.len == 0) {
        rpcs_conn_close(c, NULL);
        return true;
    }
    return false;
}

static void rpcs_conn_fail(fl_rpc_conn_t *c, const char *why)
{
    if (c->in_io)
        c->dead = true; /* the io callback closes it on its way out */
    else
        rpcs_conn_close(c, why);
}

static void rpcs_resume(fl_loop_t *loop, void *data)
{
    fl_rpc_conn_t *c = data;
    c->resume_timer = 0;
    c->last_progress = fl_now_ms(); /* the pause was ours, not the client's */
    rpcs_conn_io(loop, c->fd, 0, c);
}

/* Frames that arrived while reading was paused are parsed from a timer, never from inside a
 * handler's completion (which may come from anywhere in the master). */
static void rpcs_maybe_resume(fl_rpc_conn_t *c)
{
    if (!c->in_io && c->in.len && rpcs_wants_read(c) && !c->resume_timer)
        c->resume_timer = fl_timer_add(c->s->loop, 0, rpcs_resume, c);
}

/* Returns -1 when the connection failed (it may be closed already unless in_io). */
static int rpcs_flush(fl_rpc_conn_t *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            fl_buf_consume(&c->out, off);
            rpcs_conn_fail(c, strerror(errno));
            return -1;
        }
        off += (size_t)n;
        c->last_progress = fl_now_ms();
    }
    fl_buf_consume(&c->out, off);
    if (c->out.len == 0 && c->out.cap > RPCS_READ_CHUNK * 4)
        fl_buf_free(&c->out); /* a big reply went out: give the memory back */
    if (!c->in_io && rpcs_conn_finished(c))
        return 0;
    if (!c->dead) {
        rpcs_conn_update(c);
        rpcs_maybe_resume(c);
    }
    return 0;
}

static void rpcs_stall_check(fl_loop_t *loop, void *data);

static void rpcs_arm_stall(fl_rpc_conn_t *c)
{
    if (!c->stall_timer)
        c->stall_timer = fl_timer_add(c->s->loop, c->s->lim.stall_ms, rpcs_stall_check, c);
}

/* Stalled = something half-done (a partial request, unsent replies) and no byte moved either way
 * for stall_ms. An idle connection between frames is fine: PHP keeps one for its whole life. */
static void rpcs_stall_check(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_rpc_conn_t *c = data;
    c->stall_timer = 0;
    /* Reading paused on our side (calls in flight) and nothing to send: the client owes nothing. */
    bool client_owes = (c->in.len && rpcs_wants_read(c)) || c->out.len;
    if (!client_owes)
        return;
    int64_t idle = fl_now_ms() - c->last_progress;
    if (idle >= c->s->lim.stall_ms) {
        rpcs_conn_close(c, c->in.len ? "stalled in the middle of a frame" : "not reading replies");
        return;
    }
    c->stall_timer = fl_timer_add(c->s->loop, c->s->lim.stall_ms - idle, rpcs_stall_check, c);
}

static void rpcs_call_unlink(fl_rpc_call_t *call)
{
    fl_rpc_conn_t *c = call->conn;
    if (!c)
        return;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    c->ncalls--;
    call->conn = NULL;
    call->next = call->prev = NULL;
}

static void rpcs_conn_close(fl_rpc_conn_t *c, const char *why)
{
    fl_rpc_server_t *s = c->s;
    if (why)
        fl_logn(FL_LOG_WARN, "rpc", "closing RPC connection %d: %s", c->fd, why);
    while (c->calls)
        rpcs_call_unlink(c->calls); /* orphans: their handlers still complete them */
    fl_timer_del(s->loop, c->stall_timer);
    fl_timer_del(s->loop, c->resume_timer);
    fl_io_del(s->loop, c->fd);
    close(c->fd);
    fl_buf_free(&c->in);
    fl_buf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    free(c);
}

/* ---- calls ---- */

/* Appends one encoded frame and sends what it can. enc returns 0/-1. */
static void rpcs_call_done(fl_rpc_call_t *call,
                           int (*enc)(fl_buf_t *, const fl_rpc_call_t *, const void *, size_t),
                           const void *p, size_t n)
{
    fl_rpc_conn_t *c = call->conn;
    if (!c) {
        free(call);
        return;
    }
    rpcs_call_unlink(call);
    if (enc(&c->out, call, p, n) < 0) {
        /* Out of memory or a reply above 4 GiB: tell the client instead of hanging it. */
        static const char msg[] = "reply too large to encode";
        fl_rpc_encode_error(&c->out, call->req.seq, call->req.codec, call->req.method,
                            FL_SLICE(msg));
    }
    free(call);
    if (c->out.len)
        rpcs_arm_stall(c);
    rpcs_flush(c);
}

static int rpcs_enc_reply(fl_buf_t *out, const fl_rpc_call_t *call, const void *p, size_t n)
{
    return fl_rpc_encode_reply(out, call->req.seq, call->req.codec, call->req.method, p, n);
}

static int rpcs_enc_error(fl_buf_t *out, const fl_rpc_call_t *call, const void *p, size_t n)
{
    return fl_rpc_encode_error(out, call->req.seq, call->req.codec, call->req.method,
                               fl_slice(p, n));
}

bool fl_rpc_call_alive(const fl_rpc_call_t *call)
{
    return call->conn && !call->conn->eof && !call->conn->dead;
}

void fl_rpc_reply(fl_rpc_call_t *call, const void *body, size_t len)
{
    rpcs_call_done(call, rpcs_enc_reply, body, len);
}

void fl_rpc_fail(fl_rpc_call_t *call, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof(text) ? sizeof(text) - 1 : (size_t)n;
    rpcs_call_done(call, rpcs_enc_error, text, len);
}

void fl_rpc_reply_json(fl_rpc_call_t *call, const char *json, size_t len)
{
    switch (call->req.codec) {
    case FL_RPC_JSON:
        fl_rpc_reply(call, json, len);
        break;
    case FL_RPC_RAW:
        fl_rpc_fail(call, "%s", fl_rpc_err_raw_reply);
        break;
    case FL_RPC_PROTO:
        fl_rpc_fail(call, "%s", fl_rpc_err_not_proto);
        break;
    default:
        fl_rpc_fail(call, "%s", fl_rpc_err_codec);
        break;
    }
}

/* ---- dispatch ---- */

static const fl_rpc_method_t *rpcs_lookup(fl_rpc_server_t *s, fl_slice_t name, void **ctx,
                                          bool *service_known)
{
    fl_slice_t svc, meth;
    bool dotted = fl_rpc_split_method(name, &svc, &meth);
    *service_known = false;
    for (size_t t = s->ntables; t-- > 0;) {
        for (size_t i = 0; i < s->tables[t].n; i++) {
            const fl_rpc_method_t *m = &s->tables[t].methods[i];
            if (fl_slice_eq(name, m->name, strlen(m->name))) {
                *ctx = s->tables[t].ctx;
                return m;
            }
            if (dotted && strncmp(m->name, svc.base, svc.len) == 0 && m->name[svc.len] == '.')
                *service_known = true;
        }
    }
    return NULL;
}

/* A request the server answers itself with an error: no call object needed. */
static void rpcs_reply_error_now(fl_rpc_conn_t *c, const fl_rpc_req_t *r, fl_slice_t text)
{
    if (fl_rpc_encode_error(&c->out, r->seq, r->codec, r->method, text) == 0)
        rpcs_arm_stall(c);
}

static void rpcs_dispatch(fl_rpc_conn_t *c, const fl_rpc_req_t *r)
{
    void *ctx = NULL;
    bool service_known;
    const fl_rpc_method_t *m = rpcs_lookup(c->s, r->method, &ctx, &service_known);
    if (!m) {
        fl_buf_t text = {0};
        fl_slice_t svc, name;
        int what = !fl_rpc_split_method(r->method, &svc, &name) ? FL_RPC_ILL_FORMED
                   : service_known                              ? FL_RPC_NO_METHOD
                                                                : FL_RPC_NO_SERVICE;
        if (fl_rpc_lookup_error(&text, what, r->method) == 0)
            rpcs_reply_error_now(c, r, fl_slice(text.data, text.len));
        fl_buf_free(&text);
        return;
    }
    /* Go decodes the argument before the method runs: no codec bit, or one we cannot decode,
     * fails the same way for every method. */
    if (!r->codec_given || r->codec == FL_RPC_GOB || r->codec == FL_RPC_MSGPACK) {
        const char *e = !r->codec_given ? fl_rpc_err_no_decoder : fl_rpc_err_codec;
        rpcs_reply_error_now(c, r, fl_slice_cstr(e));
        return;
    }
    /* The call owns copies: the input buffer moves on before an asynchronous reply. */
    fl_rpc_call_t *call = malloc(sizeof(*call) + r->method.len + r->arg.len + 1);
    if (!call) {
        rpcs_reply_error_now(c, r, FL_SLICE("out of memory"));
        return;
    }
    char *p = (char *)(call + 1);
    memcpy(p, r->method.base, r->method.len);
    if (r->arg.len)
        memcpy(p + r->method.len, r->arg.base, r->arg.len);
    p[r->method.len + r->arg.len] = 0;
    *call = (fl_rpc_call_t){.req = *r, .ctx = ctx, .conn = c};
    call->req.method = fl_slice(p, r->method.len);
    call->req.arg = fl_slice(p + r->method.len, r->arg.len);
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    c->ncalls++;
    fl_srvm_rpc(m->name); /* rr_rpc_calls_total */
    m->fn(call);
}

/* Parses every whole frame in the input. -1 when the framing broke (the caller closes). */
static int rpcs_parse(fl_rpc_conn_t *c, const char **why)
{
    size_t off = 0;
    while (off < c->in.len && !c->dead) {
        fl_frame_t f;
        fl_rpc_req_t r;
        ssize_t n = fl_frame_parse((const uint8_t *)c->in.data + off, c->in.len - off,
                                   c->s->lim.max_frame, &f, why);
        if (n == 0)
            break;
        if (n < 0 || fl_rpc_parse_request(&f, &r, why) < 0)
            return -1;
        off += (size_t)n;
        rpcs_dispatch(c, &r);
        if (c->ncalls >= c->s->lim.max_pending || c->out.len > c->s->lim.max_backlog)
            break; /* the rest waits in the buffer until the backlog shrinks */
    }
    fl_buf_consume(&c->in, off);
    return 0;
}

static void rpcs_read(fl_rpc_conn_t *c)
{
    for (int i = 0; i < 16 && rpcs_wants_read(c) && !c->dead; i++) {
        if (fl_buf_reserve(&c->in, RPCS_READ_CHUNK) < 0) {
            c->dead = true;
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n = recv(c->fd, c->in.data + c->in.len, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            c->dead = true;
            return;
        }
        if (n == 0) {
            c->eof = true;
            return;
        }
        c->in.len += (size_t)n;
        c->last_progress = fl_now_ms();
        const char *why = NULL;
        if (rpcs_parse(c, &why) < 0) {
            fl_logn(FL_LOG_WARN, "rpc", "RPC client sent a malformed frame: %s", why);
            c->dead = true;
            return;
        }
        /* A short read drained the socket: spare the recv that would say EAGAIN (one per call
         * of a synchronous client; epoll is level-triggered and reports what arrives later). */
        if ((size_t)n < room)
            break;
    }
}

static void rpcs_conn_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    fl_rpc_conn_t *c = data;
    c->in_io = true;
    if (events & FL_EV_READ)
        rpcs_read(c);
    /* Frames kept back by the backlog limit go once there is room again. */
    if (!c->dead && c->in.len && rpcs_wants_read(c)) {
        const char *why = NULL;
        if (rpcs_parse(c, &why) < 0)
            c->dead = true;
    }
    if (!c->dead && c->out.len)
        rpcs_flush(c);
    c->in_io = false;
    if (c->dead) {
        rpcs_conn_close(c, NULL);
        return;
    }
    if (rpcs_conn_finished(c))
        return;
    if (c->in.len)
        rpcs_arm_stall(c);
    rpcs_conn_update(c);
}

static void rpcs_accept_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(events);
    fl_rpc_server_t *s = data;
    for (int i = 0; i < 64; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                fl_logn(FL_LOG_WARN, "rpc", "accept: %s", strerror(errno));
            return;
        }
        fl_rpc_conn_t *c = s->nconns < s->lim.max_conns ? calloc(1, sizeof(*c)) : NULL;
        if (c) {
            *c = (fl_rpc_conn_t){.s = s, .fd = cfd, .last_progress = fl_now_ms()};
            /* Replies to pipelined calls leave in separate writes (an async handler answers
             * later): Nagle would hold one behind the client's delayed ACK. Fails on unix. */
            int one = 1;
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (fl_io_set(loop, cfd, FL_EV_READ, rpcs_conn_io, c) < 0) {
                free(c);
                c = NULL;
            }
        }
        if (!c) {
            /* Refuse at once, so the backlog does not fill with clients that wait forever. */
            close(cfd);
            int64_t now = fl_now_ms();
            if (now - s->last_refusal_log > 5000) {
                s->last_refusal_log = now;
                fl_logn(FL_LOG_WARN, "rpc", "RPC connection refused: %u connections open",
                        s->nconns);
            }
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
    }
}

/* ---- server ---- */

/* The listener of "tcp://..." or "unix://..." (*unix_path then points into dsn). -1 with err. */
static int rpcs_listen_dsn(const char *dsn, const char **unix_path, char *err, size_t errlen)
{
    *unix_path = NULL;
    if (strncmp(dsn, "tcp://", 6) == 0)
        return rpcs_listen_tcp(dsn + 6, err, errlen);
    if (strncmp(dsn, "unix://", 7) == 0) {
        *unix_path = dsn + 7;
        return rpcs_listen_unix(*unix_path, err, errlen);
    }
    snprintf(err, errlen, "rpc.listen: invalid DSN %s (tcp://:6001, unix://file.sock)", dsn);
    return -1;
}

static void rpcs_close_listener(fl_rpc_server_t *s, int fd, char *unix_path)
{
    if (fd >= 0) {
        fl_io_del(s->loop, fd);
        close(fd);
    }
    if (unix_path)
        unlink(unix_path);
    free(unix_path);
}

fl_rpc_server_t *fl_rpc_server_new(fl_loop_t *loop, const char *dsn, const fl_rpc_limits_t *limits,
                                   char *err, size_t errlen)
{
    const char *unix_path;
    int fd = rpcs_listen_dsn(dsn, &unix_path, err, errlen);
    if (fd < 0)
        return NULL;
    fl_rpc_server_t *s = calloc(1, sizeof(*s));
    if (!s || (unix_path && !(s->unix_path = strdup(unix_path)))) {
        snprintf(err, errlen, "out of memory");
        free(s);
        close(fd);
        return NULL;
    }
    s->loop = loop;
    s->fd = fd;
    s->next_fd = -1;
    fl_rpc_limits_t def = {RPCS_DEF_MAX_FRAME, RPCS_DEF_MAX_CONNS, RPCS_DEF_STALL_MS,
                           RPCS_DEF_BACKLOG, RPCS_DEF_PENDING};
    s->lim = limits ? *limits : def;
    if (!s->lim.max_frame)
        s->lim.max_frame = def.max_frame;
    if (!s->lim.max_conns)
        s->lim.max_conns = def.max_conns;
    if (s->lim.stall_ms <= 0)
        s->lim.stall_ms = def.stall_ms;
    if (!s->lim.max_backlog)
        s->lim.max_backlog = def.max_backlog;
    if (!s->lim.max_pending)
        s->lim.max_pending = def.max_pending;
    if (fl_io_set(loop, fd, FL_EV_READ, rpcs_accept_io, s) < 0) {
        snprintf(err, errlen, "rpc.listen %s: cannot watch the socket: %s", dsn, strerror(errno));
        fl_rpc_server_free(s);
        return NULL;
    }
    rpcs_register_atfork();
    s->next_all = rpcs_all;
    rpcs_all = s;
    return s;
}

int fl_rpc_server_add(fl_rpc_server_t *s, const fl_rpc_method_t *methods, size_t n, void *ctx)
{
    rpcs_table_t *t = realloc(s->tables, (s->ntables + 1) * sizeof(*t));
    if (!t)
        return -1;
    s->tables = t;
    s->tables[s->ntables++] = (rpcs_table_t){methods, n, ctx};
    return 0;
}

int fl_rpc_server_remove(fl_rpc_server_t *s, const fl_rpc_method_t *methods)
{
    size_t n = 0;
    for (size_t t = 0; t < s->ntables; t++)
        if (s->tables[t].methods != methods)
            s->tables[n++] = s->tables[t];
    bool hit = n != s->ntables;
    s->ntables = n;
    return hit;
}

int fl_rpc_server_relisten(fl_rpc_server_t *s, const char *dsn, char *err, size_t errlen)
{
    fl_rpc_server_relisten_done(s, false); /* one at a time */
    const char *path;
    int fd = rpcs_listen_dsn(dsn, &path, err, errlen);
    if (fd < 0)
        return -1;
    char *copy = path ? strdup(path) : NULL;
    if ((path && !copy) || fl_io_set(s->loop, fd, FL_EV_READ, rpcs_accept_io, s) < 0) {
        snprintf(err, errlen, "rpc.listen %s: cannot watch the socket", dsn);
        rpcs_close_listener(s, fd, copy);
        return -1;
    }
    s->next_fd = fd;
    s->next_unix_path = copy;
    return 0;
}

void fl_rpc_server_relisten_done(fl_rpc_server_t *s, bool commit)
{
    if (!s || s->next_fd < 0)
        return;
    if (commit) {
        rpcs_close_listener(s, s->fd, s->unix_path);
        s->fd = s->next_fd;
        s->unix_path = s->next_unix_path;
    } else {
        rpcs_close_listener(s, s->next_fd, s->next_unix_path);
    }
    s->next_fd = -1;
    s->next_unix_path = NULL;
}

unsigned fl_rpc_server_conns(const fl_rpc_server_t *s)
{
    return s->nconns;
}

void fl_rpc_server_free(fl_rpc_server_t *s)
{
    if (!s)
        return;
    for (fl_rpc_server_t **pp = &rpcs_all; *pp; pp = &(*pp)->next_all) {
        if (*pp == s) {
            *pp = s->next_all;
            break;
        }
    }
    while (s->conns)
        rpcs_conn_close(s->conns, NULL);
    rpcs_close_listener(s, s->fd, s->unix_path);
    rpcs_close_listener(s, s->next_fd, s->next_unix_path);
    free(s->tables);
    free(s);
}

/* ---- built-in services: resetter, informer, rpc ---- */

#define RPCS_MAX_PLUGINS 16

static fl_rpc_server_t *rpcs_of(fl_rpc_call_t *call)
{
    return call->ctx;
}

static size_t rpcs_plugins(fl_rpc_server_t *s, const char **names)
{
    return s->ops.plugins ? s->ops.plugins(s->master, names, RPCS_MAX_PLUGINS) : 0;
}

static void rpcs_list(fl_rpc_call_t *call)
{
    fl_rpc_server_t *s = rpcs_of(call);
    const char *names[RPCS_MAX_PLUGINS];
    size_t n = rpcs_plugins(s, names);
    fl_buf_t b = {0};
    int rc = fl_buf_puts(&b, "[");
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            rc = fl_buf_puts(&b, ",");
        if (rc == 0)
            rc = fl_rpc_json_string(&b, names[i], strlen(names[i]));
    }
    if (rc == 0 && fl_buf_puts(&b, "]") == 0)
        fl_rpc_reply_json(call, b.data, b.len);
    else
        fl_rpc_fail(call, "out of memory");
    fl_buf_free(&b);
}

/* The string argument, or NULL after failing the call. */
static char *rpcs_arg(fl_rpc_call_t *call)
{
    char ebuf[200];
    const char *err = NULL;
    char *s = fl_rpc_arg_string(&call->req, ebuf, sizeof(ebuf), &err);
    if (!s)
        fl_rpc_fail(call, "%s", err);
    return s;
}

static bool rpcs_known(fl_rpc_server_t *s, const char *plugin)
{
    const char *names[RPCS_MAX_PLUGINS];
    size_t n = rpcs_plugins(s, names);
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], plugin) == 0)
            return true;
    return false;
}

static void rpcs_reset(fl_rpc_call_t *call)
{
    fl_rpc_server_t *s = rpcs_of(call);
    char *plugin = rpcs_arg(call);
    if (!plugin)
        return;
    if (!rpcs_known(s, plugin) || !s->ops.reset)
        fl_rpc_fail(call, "no such plugin: %s", plugin);
    else
        s->ops.reset(s->master, call, plugin);
    free(plugin);
}

static void rpcs_workers(fl_rpc_call_t *call)
{
    fl_rpc_server_t *s = rpcs_of(call);
    char *plugin = rpcs_arg(call);
    if (!plugin)
        return;
    if (!rpcs_known(s, plugin) || !s->ops.workers)
        fl_rpc_reply_json(call, "{\"workers\":null}", 16); /* what RR answers (§9.3) */
    else
        s->ops.workers(s->master, call, plugin);
    free(plugin);
}

static void rpcs_jobs(fl_rpc_call_t *call)
{
    char *plugin = rpcs_arg(call);
    if (!plugin)
        return;
    fl_rpc_reply_json(call, "[]", 2); /* no jobs pipelines yet */
    free(plugin);
}

static void rpcs_scale(fl_rpc_call_t *call, bool add)
{
    fl_rpc_server_t *s = rpcs_of(call);
    char *plugin = rpcs_arg(call);
    if (!plugin)
        return;
    void (*op)(void *, fl_rpc_call_t *, const char *) =
        add ? s->ops.add_worker : s->ops.remove_worker;
    if (!rpcs_known(s, plugin))
        fl_rpc_fail(call, "plugin %s does not support workers management", plugin);
    else if (!op)
        fl_rpc_fail(call, "informer.%s: not supported yet by forkline (plugin %s)",
                    add ? "AddWorker" : "RemoveWorker", plugin);
    else
        op(s->master, call, plugin);
    free(plugin);
}

static void rpcs_add_worker(fl_rpc_call_t *call)
{
    rpcs_scale(call, true);
}

static void rpcs_remove_worker(fl_rpc_call_t *call)
{
    rpcs_scale(call, false);
}

static void rpcs_version(fl_rpc_call_t *call)
{
    static const char v[] = "\"" FL_RR_VERSION "\"";
    fl_rpc_reply_json(call, v, sizeof(v) - 1);
}

/* Go's []byte: base64 in JSON, the bytes themselves with the raw codec. */
static void rpcs_config(fl_rpc_call_t *call)
{
    fl_rpc_server_t *s = rpcs_of(call);
    fl_buf_t raw = {0}, b = {0};
    if (!s->ops.config || s->ops.config(s->master, &raw) < 0) {
        fl_buf_free(&raw);
        fl_rpc_fail(call, "rpc_config: no configuration file");
        return;
    }
    if (call->req.codec == FL_RPC_RAW) {
        fl_rpc_reply(call, raw.data, raw.len);
    } else if (fl_buf_puts(&b, "\"") == 0 && fl_rpc_base64(&b, raw.data, raw.len) == 0 &&
               fl_buf_puts(&b, "\"") == 0) {
        fl_rpc_reply_json(call, b.data, b.len);
    } else {
        fl_rpc_fail(call, "out of memory");
    }
    fl_buf_free(&raw);
    fl_buf_free(&b);
}

static const fl_rpc_method_t rpcs_builtin[] = {
    {"resetter.List", rpcs_list},
    {"resetter.Reset", rpcs_reset},
    {"informer.List", rpcs_list},
    {"informer.Workers", rpcs_workers},
    {"informer.Jobs", rpcs_jobs},
    {"informer.AddWorker", rpcs_add_worker},
    {"informer.RemoveWorker", rpcs_remove_worker},
    {"rpc.Version", rpcs_version},
    {"rpc.Config", rpcs_config},
};

int fl_rpc_add_builtin(fl_rpc_server_t *s, const fl_rpc_ops_t *ops, void *m)
{
    s->ops = *ops;
    s->master = m;
    return fl_rpc_server_add(s, rpcs_builtin, FL_ARRAY_SIZE(rpcs_builtin), s);
}

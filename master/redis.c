/* See redis.h. One connection, one state machine:
 *
 *   WAIT ──retry timer──▶ RESOLVING (names only, in a thread) ──▶ CONNECTING ──▶ [TLS] ──▶ HELLO
 *   (AUTH / SELECT / CLIENT SETNAME, pipelined) ──▶ UP ──drop──▶ WAIT
 *
 * Commands issued while a connection attempt is in progress are held and sent once it is UP (so a
 * caller starting at boot does not race the first connect); commands issued in WAIT fail with
 * FL_REDIS_EDOWN from a 0 ms timer. Writes are coalesced: a command only appends to the output
 * buffer and arms a 0 ms timer, which the loop runs after this iteration's I/O, so a burst of
 * commands leaves in one write (the master's single before-sleep slot is not ours to take). */
#include <arpa/inet.h>
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
#include <sys/un.h>
#include <unistd.h>

#include <hiredis/read.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fl.h"
#include "log.h"
#include "redis.h"

const char FL_REDIS_EDOWN[] = "redis: not connected";
const char FL_REDIS_ELOST[] = "redis: connection lost";
const char FL_REDIS_ETIMEOUT[] = "redis: command timed out";
const char FL_REDIS_ECLOSED[] = "redis: client closed";

enum { RS_WAIT, RS_RESOLVING, RS_CONNECTING, RS_TLS, RS_HELLO, RS_UP };

#define RE_BLOCKING 1
#define RE_HELLO 2 /* AUTH / SELECT / SETNAME of the handshake: data is the command's name */

#define R_MAXADDRS 8

typedef struct {
    fl_redis_cb cb;
    void *data;
    int64_t sent_ms;
    int flags;
} rentry_t;

/* A FIFO ring (power-of-two capacity). */
typedef struct {
    rentry_t *e;
    size_t head, n, cap;
} rq_t;

struct fl_redis {
    fl_loop_t *loop;
    fl_redis_opts_t o; /* strings owned */
    char *host, *path, port[8];
    fl_redis_state_cb on_state;
    void *data;

    int state, fd, rfd; /* rfd: the resolver thread's answer */
    struct sockaddr_storage addrs[R_MAXADDRS];
    socklen_t addrlens[R_MAXADDRS];
    int naddrs, ai;
    SSL_CTX *ctx;
    SSL *ssl;
    redisReader *reader;

    fl_buf_t out, held; /* out: bytes for the socket; held: commands waiting for UP */
    size_t out_pos;
    rq_t q, downq; /* q: sent or held, in reply order; downq: to fail with EDOWN */
    int nhello;

    fl_timer_id t_dial, t_retry, t_flush, t_rt, t_down;
    int64_t backoff, last_reply_ms;
    int depth;    /* > 0 while the loop is inside one of our callbacks */
    bool closing; /* fl_redis_free was called; the struct goes when depth drops to 0 */
    bool failing; /* a failure streak is being logged; the next UP says so */
    char lasterr[256];
    fl_redis_t *next_all, *prev_all;
};

/* ---- the process's forks (reactors) must not keep our connections open ---- */

static fl_redis_t *r_all;

/* A reactor forked from the master would hold the socket open after the master dropped it (the
 * server would never see the close), and would share the TLS stream. */
static void r_atfork_child(void)
{
    for (fl_redis_t *r = r_all; r; r = r->next_all) {
        if (r->fd >= 0)
            close(r->fd);
        if (r->rfd >= 0)
            close(r->rfd);
    }
    r_all = NULL;
}

static void r_link(fl_redis_t *r)
{
    static bool atfork;
    if (!atfork && pthread_atfork(NULL, NULL, r_atfork_child) == 0)
        atfork = true;
    r->next_all = r_all;
    if (r_all)
        r_all->prev_all = r;
    r_all = r;
}

static void r_unlink(fl_redis_t *r)
{
    if (r->prev_all)
        r->prev_all->next_all = r->next_all;
    else if (r_all == r)
        r_all = r->next_all;
    if (r->next_all)
        r->next_all->prev_all = r->prev_all;
    r->next_all = r->prev_all = NULL;
}

/* ---- the queue ---- */

static int rq_push(rq_t *q, rentry_t e)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        rentry_t *a = malloc(cap * sizeof(*a));
        if (!a)
            return -1;
        for (size_t i = 0; i < q->n; i++)
            a[i] = q->e[(q->head + i) & (q->cap - 1)];
        free(q->e);
        q->e = a;
        q->head = 0;
        q->cap = cap;
    }
    q->e[(q->head + q->n++) & (q->cap - 1)] = e;
    return 0;
}

static rentry_t rq_pop(rq_t *q)
{
    rentry_t e = q->e[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->n--;
    return e;
}

static rentry_t *rq_front(rq_t *q)
{
    return q->n ? &q->e[q->head] : NULL;
}

/* Each entry popped before its callback runs: a callback may queue or free freely. At most the
 * entries present on entry are failed (a callback retrying at once lands on the next round). */
static void rq_fail(fl_redis_t *r, rq_t *q, const char *err)
{
    for (size_t n = q->n; n && q->n; n--) {
        rentry_t e = rq_pop(q);
        if (e.cb)
            e.cb(r, NULL, err, e.data);
    }
}

/* ---- helpers ---- */

static void r_enter(fl_redis_t *r)
{
    r->depth++;
}

static void r_destroy(fl_redis_t *r);

static void r_leave(fl_redis_t *r)
{
    if (--r->depth == 0 && r->closing)
        r_destroy(r);
}

static void r_timer_del(fl_redis_t *r, fl_timer_id *t)
{
    if (*t)
        fl_timer_del(r->loop, *t);
    *t = 0;
}

static const char *r_addr(const fl_redis_t *r)
{
    return r->o.addr;
}

static void r_set_mask(fl_redis_t *r, int mask);
static void r_io(fl_loop_t *loop, int fd, int events, void *data);

static void r_set_mask(fl_redis_t *r, int mask)
{
    if (r->fd >= 0 && fl_io_mask(r->loop, r->fd) != mask)
        fl_io_set(r->loop, r->fd, mask, r_io, r);
}

/* The OpenSSL error queue as one line (or the verify result, which says more). */
static void r_ssl_why(fl_redis_t *r, char *buf, size_t len, const char *what)
{
    long v = r->ssl ? SSL_get_verify_result(r->ssl) : X509_V_OK;
    unsigned long e = ERR_get_error();
    if (v != X509_V_OK)
        snprintf(buf, len, "%s: certificate verify failed: %s", what,
                 X509_verify_cert_error_string(v));
    else if (e)
        snprintf(buf, len, "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(buf, len, "%s: %s", what, errno ? strerror(errno) : "connection closed");
    ERR_clear_error();
}

/* ---- teardown and reconnect ---- */

static void r_close_conn(fl_redis_t *r)
{
    if (r->fd >= 0) {
        fl_io_del(r->loop, r->fd);
        close(r->fd); /* no close_notify: Redis does not need it and it could not wait */
        r->fd = -1;
    }
    if (r->ssl)
        SSL_free(r->ssl);
    r->ssl = NULL;
    if (r->rfd >= 0) {
        fl_io_del(r->loop, r->rfd);
        close(r->rfd); /* a resolver still running frees its own answer */
        r->rfd = -1;
    }
    if (r->reader)
        redisReaderFree(r->reader);
    r->reader = NULL;
    r->out.len = r->out_pos = 0;
    r->held.len = 0;
    r->nhello = 0;
    r_timer_del(r, &r->t_dial);
    r_timer_del(r, &r->t_flush);
    r_timer_del(r, &r->t_rt);
}

static void r_connect(fl_redis_t *r);

static void r_retry_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_redis_t *r = data;
    r->t_retry = 0;
    r_enter(r);
    r_connect(r);
    r_leave(r);
}

static void r_log_failure(fl_redis_t *r, const char *why, bool was_up)
{
    snprintf(r->lasterr, sizeof(r->lasterr), "%s", why);
    /* the first failure of a streak is a warning, the retries are debug noise */
    int level = was_up || !r->failing ? FL_LOG_WARN : FL_LOG_DEBUG;
    fl_logn(level, "redis", "%s%s%s: %s; reconnecting in %lld ms", r_addr(r), r->o.name ? " " : "",
            r->o.name ? r->o.name : "", why, (long long)r->backoff);
    r->failing = true;
}

/* The connection is gone (or never came up): every queued callback learns it, then the owner,
 * then a retry is scheduled with back-off. */
static void r_drop(fl_redis_t *r, const char *err, const char *why)
{
    bool was_up = r->state == RS_UP;
    r_close_conn(r);
    r->state = RS_WAIT;
    if (was_up)
        r->backoff = r->o.reconnect_min_ms;
    r_log_failure(r, why, was_up);
    r_timer_del(r, &r->t_retry);
    r->t_retry = fl_timer_add(r->loop, r->backoff, r_retry_fire, r);
    r->backoff = r->backoff * 2 > r->o.reconnect_max_ms ? r->o.reconnect_max_ms : r->backoff * 2;
    rq_fail(r, &r->q, was_up ? err : FL_REDIS_EDOWN);
    if (!r->closing && was_up && r->on_state)
        r->on_state(r, false, r->data);
}

static void r_dropf(fl_redis_t *r, const char *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void r_dropf(fl_redis_t *r, const char *err, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    r_drop(r, err, why);
}

/* ---- writing ---- */

/* 0, or -1 when the connection dropped. Leaves WRITE interest on while bytes remain. */
static int r_flush(fl_redis_t *r)
{
    bool want_write = false;
    while (r->out_pos < r->out.len) {
        size_t left = r->out.len - r->out_pos;
        const char *p = r->out.data + r->out_pos;
        ssize_t n;
        if (r->ssl) {
            ERR_clear_error();
            int k = SSL_write(r->ssl, p, left > INT32_MAX ? INT32_MAX : (int)left);
            if (k > 0) {
                r->out_pos += (size_t)k;
                continue;
            }
            int e = SSL_get_error(r->ssl, k);
            if (e == SSL_ERROR_WANT_WRITE) {
                want_write = true;
                break;
            }
            if (e == SSL_ERROR_WANT_READ) /* a TLS record must be read first; READ is on */
                break;
            char why[256];
            r_ssl_why(r, why, sizeof(why), "tls write");
            r_drop(r, FL_REDIS_ELOST, why);
            return -1;
        }
        n = send(r->fd, p, left, MSG_NOSIGNAL);
        if (n > 0) {
            r->out_pos += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            want_write = true;
            break;
        }
        r_dropf(r, FL_REDIS_ELOST, "write: %s", strerror(errno));
        return -1;
    }
    if (r->out_pos == r->out.len) {
        r->out.len = r->out_pos = 0;
    } else if (r->out_pos > 65536 && r->out_pos > r->out.len / 2) {
        fl_buf_consume(&r->out, r->out_pos);
        r->out_pos = 0;
    }
    r_set_mask(r, FL_EV_READ | (want_write ? FL_EV_WRITE : 0));
    return 0;
}

static void r_flush_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_redis_t *r = data;
    r->t_flush = 0;
    r_enter(r);
    if (r->state == RS_UP || r->state == RS_HELLO)
        r_flush(r);
    r_leave(r);
}

static void r_want_flush(fl_redis_t *r)
{
    if (r->out_pos < r->out.len && !r->t_flush && !(fl_io_mask(r->loop, r->fd) & FL_EV_WRITE))
        r->t_flush = fl_timer_add(r->loop, 0, r_flush_fire, r);
}

/* ---- read timeout: one lazy timer for the oldest command waiting for its reply ---- */

static void r_rt_fire(fl_loop_t *loop, void *data);

static void r_rt_arm(fl_redis_t *r, int64_t ms)
{
    if (!r->t_rt && r->o.read_timeout_ms > 0)
        r->t_rt = fl_timer_add(r->loop, ms, r_rt_fire, r);
}

/* A command must get its reply within read_timeout of being sent or of the previous reply,
 * whichever is later (a pipeline making progress does not time out, as go-redis's per-read
 * deadline). A blocking command at the head is exempt; the timer re-arms behind it. */
static void r_rt_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_redis_t *r = data;
    r->t_rt = 0;
    rentry_t *e = rq_front(&r->q);
    if (r->state != RS_UP || !e || (e->flags & RE_BLOCKING))
        return;
    int64_t from = e->sent_ms > r->last_reply_ms ? e->sent_ms : r->last_reply_ms;
    int64_t left = from + r->o.read_timeout_ms - fl_now_ms();
    if (left > 0) {
        r_rt_arm(r, left);
        return;
    }
    r_enter(r);
    r_dropf(r, FL_REDIS_ETIMEOUT, "no reply within %lld ms", (long long)r->o.read_timeout_ms);
    r_leave(r);
}

/* ---- reading ---- */

static void r_up(fl_redis_t *r)
{
    int64_t now = fl_now_ms();
    if (fl_buf_append(&r->out, r->held.data, r->held.len) < 0) {
        r_drop(r, FL_REDIS_ELOST, "out of memory");
        return;
    }
    r->held.len = 0;
    for (size_t i = 0; i < r->q.n; i++)
        r->q.e[(r->q.head + i) & (r->q.cap - 1)].sent_ms = now;
    r->state = RS_UP;
    r->last_reply_ms = now;
    r_timer_del(r, &r->t_dial);
    r->backoff = r->o.reconnect_min_ms;
    r->lasterr[0] = 0;
    if (r->failing)
        fl_logn(FL_LOG_INFO, "redis", "%s%s%s: connected", r_addr(r), r->o.name ? " " : "",
                r->o.name ? r->o.name : "");
    r->failing = false;
    if (r->q.n)
        r_rt_arm(r, r->o.read_timeout_ms);
    r_want_flush(r);
    if (r->on_state)
        r->on_state(r, true, r->data);
}

/* One reply for the head of the queue. -1 when the connection is gone or the client closing. */
static int r_reply(fl_redis_t *r, redisReply *reply)
{
    if (!r->q.n) {
        freeReplyObject(reply);
        r_drop(r, FL_REDIS_ELOST, "a reply nobody asked for");
        return -1;
    }
    rentry_t e = rq_pop(&r->q);
    r->last_reply_ms = fl_now_ms();
    if (e.flags & RE_HELLO) {
        if (reply->type == REDIS_REPLY_ERROR) {
            r_dropf(r, FL_REDIS_EDOWN, "%s: %.*s", (const char *)e.data, (int)reply->len,
                    reply->str);
            freeReplyObject(reply);
            return -1;
        }
        freeReplyObject(reply);
        if (--r->nhello == 0)
            r_up(r);
        return r->closing || r->state == RS_WAIT ? -1 : 0;
    }
    e.cb(r, reply, NULL, e.data);
    freeReplyObject(reply);
    return r->closing ? -1 : 0;
}

static int r_replies(fl_redis_t *r)
{
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            r_dropf(r, FL_REDIS_ELOST, "protocol error: %s", r->reader->errstr);
            return -1;
        }
        if (!reply)
            break;
        if (r_reply(r, reply) < 0)
            return -1;
    }
    rentry_t *h = rq_front(&r->q);
    if (h && !(h->flags & RE_BLOCKING) && r->state == RS_UP)
        r_rt_arm(r, r->o.read_timeout_ms);
    return 0;
}

/* Reads until the socket (and OpenSSL's buffer) is empty: level-triggered epoll would wake us
 * for the socket, but not for bytes OpenSSL already holds. */
static void r_read(fl_redis_t *r)
{
    char buf[16384];
    for (;;) {
        ssize_t n;
        if (r->ssl) {
            ERR_clear_error();
            int k = SSL_read(r->ssl, buf, sizeof(buf));
            if (k <= 0) {
                int e = SSL_get_error(r->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return;
                char why[256];
                if (e == SSL_ERROR_ZERO_RETURN)
                    snprintf(why, sizeof(why), "closed by the server");
                else
                    r_ssl_why(r, why, sizeof(why), "tls read");
                r_drop(r, FL_REDIS_ELOST, why);
                return;
            }
            n = k;
        } else {
            n = recv(r->fd, buf, sizeof(buf), 0);
            if (n == 0) {
                r_drop(r, FL_REDIS_ELOST, "closed by the server");
                return;
            }
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    r_dropf(r, FL_REDIS_ELOST, "read: %s", strerror(errno));
                return;
            }
        }
        if (redisReaderFeed(r->reader, buf, (size_t)n) != REDIS_OK) {
            r_drop(r, FL_REDIS_ELOST, "out of memory");
            return;
        }
        if (r_replies(r) < 0)
            return;
        /* a short plain read drained the socket: spare the recv that would say EAGAIN (epoll
         * is level-triggered and reports what arrives meanwhile) */
        if (!r->ssl && (size_t)n < sizeof(buf))
            return;
    }
}

/* ---- connecting ---- */

static void r_hello_or_up(fl_redis_t *r)
{
    if (!r->nhello) {
        r_up(r);
        return;
    }
    r->state = RS_HELLO;
    r_flush(r);
}

static void r_tls_step(fl_redis_t *r)
{
    ERR_clear_error();
    int rc = SSL_connect(r->ssl);
    if (rc == 1) {
        r_set_mask(r, FL_EV_READ);
        r_hello_or_up(r);
        return;
    }
    int e = SSL_get_error(r->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        r_set_mask(r, e == SSL_ERROR_WANT_READ ? FL_EV_READ : FL_EV_WRITE);
        return;
    }
    char why[256];
    r_ssl_why(r, why, sizeof(why), "tls handshake");
    r_drop(r, FL_REDIS_EDOWN, why);
}

static bool r_host_is_ip(const char *h)
{
    unsigned char a[16];
    return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

static void r_tls_start(fl_redis_t *r)
{
    r->ssl = SSL_new(r->ctx);
    if (!r->ssl || SSL_set_fd(r->ssl, r->fd) != 1) {
        r_drop(r, FL_REDIS_EDOWN, "tls: out of memory");
        return;
    }
    /* verify the name the user wrote, as Go's tls does: an IP against IP SANs, a name via SNI */
    if (r->host && r_host_is_ip(r->host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), r->host);
    } else if (r->host) {
        SSL_set_tlsext_host_name(r->ssl, r->host);
        SSL_set1_host(r->ssl, r->host);
    }
    r->state = RS_TLS;
    r_tls_step(r);
}

static void r_try_addr(fl_redis_t *r);

static void r_connected(fl_redis_t *r)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        fl_io_del(r->loop, r->fd);
        close(r->fd);
        r->fd = -1;
        if (++r->ai < r->naddrs) {
            r_try_addr(r);
            return;
        }
        r_dropf(r, FL_REDIS_EDOWN, "connect: %s", strerror(err));
        return;
    }
    if (r->addrs[r->ai].ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(r->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    }
    r_set_mask(r, FL_EV_READ);
    if (r->ctx)
        r_tls_start(r);
    else
        r_hello_or_up(r);
}

/* Connects to addrs[ai], falling through to the next address on an immediate error. The result
 * always arrives as a WRITE event, so UP is never reached inside fl_redis_new. */
static void r_try_addr(fl_redis_t *r)
{
    int last = 0;
    for (; r->ai < r->naddrs; r->ai++) {
        int fd = socket(r->addrs[r->ai].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, (struct sockaddr *)&r->addrs[r->ai], r->addrlens[r->ai]) < 0 &&
            errno != EINPROGRESS) {
            last = errno;
            close(fd);
            continue;
        }
        r->fd = fd;
        r->state = RS_CONNECTING;
        if (fl_io_set(r->loop, fd, FL_EV_WRITE, r_io, r) < 0) {
            r_dropf(r, FL_REDIS_EDOWN, "connect: %s", strerror(errno));
            return;
        }
        return;
    }
    r_dropf(r, FL_REDIS_EDOWN, "connect: %s", strerror(last));
}

/* ---- name resolution: getaddrinfo may wait seconds on DNS, so it runs in a thread ---- */

typedef struct {
    int fd, rc;
    struct addrinfo *res;
    char *host;
    char port[8];
} rres_t;

static void *r_resolver(void *arg)
{
    rres_t *q = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int fd = q->fd;
    q->rc = getaddrinfo(q->host, q->port, &hints, &q->res);
    free(q->host);
    q->host = NULL;
    /* once sent, q belongs to the loop; if the client gave up (closed its end), it is ours */
    if (send(fd, &q, sizeof(q), MSG_NOSIGNAL) != (ssize_t)sizeof(q)) {
        if (q->res)
            freeaddrinfo(q->res);
        free(q);
    }
    close(fd);
    return NULL;
}

static void r_resolved(fl_loop_t *loop, int fd, int events, void *data)
{
    (void)loop, (void)events;
    fl_redis_t *r = data;
    rres_t *q = NULL;
    ssize_t n = recv(fd, &q, sizeof(q), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    r_enter(r);
    fl_io_del(r->loop, r->rfd);
    close(r->rfd);
    r->rfd = -1;
    if (n != (ssize_t)sizeof(q) || !q) {
        r_drop(r, FL_REDIS_EDOWN, "resolve: the resolver thread failed");
    } else if (q->rc != 0) {
        r_dropf(r, FL_REDIS_EDOWN, "resolve %s: %s", r->host, gai_strerror(q->rc));
    } else {
        r->naddrs = r->ai = 0;
        for (struct addrinfo *a = q->res; a && r->naddrs < R_MAXADDRS; a = a->ai_next) {
            memcpy(&r->addrs[r->naddrs], a->ai_addr, a->ai_addrlen);
            r->addrlens[r->naddrs++] = a->ai_addrlen;
        }
        r_try_addr(r);
    }
    if (q && n == (ssize_t)sizeof(q)) {
        if (q->res)
            freeaddrinfo(q->res);
        free(q);
    }
    r_leave(r);
}

static void r_resolve(fl_redis_t *r)
{
    int sv[2];
    rres_t *q = calloc(1, sizeof(*q));
    if (!q || !(q->host = strdup(r->host)) ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        if (q)
            free(q->host);
        free(q);
        r_drop(r, FL_REDIS_EDOWN, "resolve: out of memory");
        return;
    }
    memcpy(q->port, r->port, sizeof(q->port));
    q->fd = sv[1];
    r->rfd = sv[0];
    r->state = RS_RESOLVING;
    pthread_attr_t at;
    pthread_t th;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, r_resolver, q);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        close(sv[1]);
        free(q->host);
        free(q);
        r_dropf(r, FL_REDIS_EDOWN, "resolve: %s", strerror(rc));
        return;
    }
    if (fl_io_set(r->loop, r->rfd, FL_EV_READ, r_resolved, r) < 0)
        r_dropf(r, FL_REDIS_EDOWN, "resolve: %s", strerror(errno));
}

/* A numeric address or a unix path needs no resolver. */
static bool r_numeric(fl_redis_t *r)
{
    r->naddrs = r->ai = 0;
    memset(r->addrs, 0, sizeof(r->addrs));
    if (r->path) {
        struct sockaddr_un *u = (struct sockaddr_un *)&r->addrs[0];
        u->sun_family = AF_UNIX;
        memcpy(u->sun_path, r->path, strlen(r->path) + 1);
        r->addrlens[0] = sizeof(*u);
        r->naddrs = 1;
        return true;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&r->addrs[0];
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&r->addrs[0];
    int port = atoi(r->port);
    if (inet_pton(AF_INET, r->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        r->addrlens[0] = sizeof(*a4);
    } else if (inet_pton(AF_INET6, r->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        r->addrlens[0] = sizeof(*a6);
    } else {
        return false;
    }
    r->naddrs = 1;
    return true;
}

static void r_dial_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_redis_t *r = data;
    r->t_dial = 0;
    r_enter(r);
    r_dropf(r, FL_REDIS_EDOWN, "no connection within dial_timeout (%lld ms)",
            (long long)r->o.dial_timeout_ms);
    r_leave(r);
}

static int r_hello_cmd(fl_redis_t *r, const char *what, int argc, const char **argv)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    if (len < 0)
        return -1;
    int rc = fl_buf_append(&r->out, cmd, (size_t)len);
    redisFreeCommand(cmd);
    if (rc < 0 || rq_push(&r->q, (rentry_t){NULL, (void *)what, 0, RE_HELLO}) < 0)
        return -1;
    r->nhello++;
    return 0;
}

/* AUTH / SELECT / SETNAME / PING go first in the output and the queue, before any held command. */
static int r_hello(fl_redis_t *r)
{
    char db[16];
    snprintf(db, sizeof(db), "%d", r->o.db);
    const char *auth2[] = {"AUTH", r->o.username, r->o.password};
    const char *auth1[] = {"AUTH", r->o.password};
    const char *sel[] = {"SELECT", db};
    const char *name[] = {"CLIENT", "SETNAME", r->o.name};
    bool user = r->o.username && *r->o.username;
    if (r->o.password && *r->o.password &&
        r_hello_cmd(r, "AUTH", user ? 3 : 2, user ? auth2 : auth1) < 0)
        return -1;
    if (r->o.db > 0 && r_hello_cmd(r, "SELECT", 2, sel) < 0)
        return -1;
    if (r->o.name && *r->o.name && r_hello_cmd(r, "CLIENT SETNAME", 3, name) < 0)
        return -1;
    /* Last, and always: a server still loading its data set accepts the connection but answers
     * -LOADING to every command, so the connection is up only once PING says PONG (until then
     * it is retried with back-off and calls fail as while the server is down). */
    const char *ping[] = {"PING"};
    return r_hello_cmd(r, "PING", 1, ping);
}

static void r_connect(fl_redis_t *r)
{
    r->t_dial = fl_timer_add(r->loop, r->o.dial_timeout_ms, r_dial_fire, r);
    if (!(r->reader = redisReaderCreate()) || r_hello(r) < 0) {
        r_drop(r, FL_REDIS_EDOWN, "out of memory");
        return;
    }
    if (r_numeric(r))
        r_try_addr(r);
    else
        r_resolve(r);
}

/* ---- the I/O callback ---- */

static void r_io(fl_loop_t *loop, int fd, int events, void *data)
{
    (void)loop, (void)fd;
    fl_redis_t *r = data;
    r_enter(r);
    switch (r->state) {
    case RS_CONNECTING:
        r_connected(r);
        break;
    case RS_TLS:
        r_tls_step(r);
        break;
    case RS_HELLO:
    case RS_UP:
        /* with TLS either direction may be what a stalled read or write waits for */
        if ((events & FL_EV_WRITE || r->ssl) && r->out_pos < r->out.len && r_flush(r) < 0)
            break;
        if (events & FL_EV_READ || r->ssl)
            r_read(r);
        break;
    }
    r_leave(r);
}

/* ---- options ---- */

static int r_parse_addr(fl_redis_t *r, const char *addr, char *err, size_t errlen)
{
    if (strncmp(addr, "unix://", 7) == 0 || addr[0] == '/') {
        const char *p = addr[0] == '/' ? addr : addr + 7;
        if (!*p || strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, errlen, "%s: bad unix socket path", addr);
            return -1;
        }
        r->path = strdup(p);
        return r->path ? 0 : -1;
    }
    const char *colon = strrchr(addr, ':');
    const char *h = addr, *he = colon;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        colon = rb && rb[1] == ':' ? rb + 1 : NULL;
        h = addr + 1;
        he = rb;
    }
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || !colon[1] || *end || port < 1 || port > 65535) {
        snprintf(err, errlen, "%s: address must be host:port, [ipv6]:port or unix:///path", addr);
        return -1;
    }
    snprintf(r->port, sizeof(r->port), "%ld", port);
    r->host = he > h ? strndup(h, (size_t)(he - h)) : strdup("127.0.0.1");
    return r->host ? 0 : -1;
}

static int r_tls_ctx(fl_redis_t *r, char *err, size_t errlen)
{
    const fl_redis_opts_t *o = &r->o;
    if (!!o->tls_cert != !!o->tls_key) {
        snprintf(err, errlen, "%s: tls needs both cert and key for a client certificate",
                 r_addr(r));
        return -1;
    }
    const char *what = NULL;
    ERR_clear_error();
    if (!(r->ctx = SSL_CTX_new(TLS_client_method())))
        goto ssl_err;
    SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(r->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    what = o->tls_root_ca ? o->tls_root_ca : "the default CA store";
    if ((o->tls_root_ca ? SSL_CTX_load_verify_locations(r->ctx, o->tls_root_ca, NULL)
                        : SSL_CTX_set_default_verify_paths(r->ctx)) != 1)
        goto ssl_err;
    what = o->tls_cert;
    if (o->tls_cert && SSL_CTX_use_certificate_chain_file(r->ctx, o->tls_cert) != 1)
        goto ssl_err;
    what = o->tls_key;
    if (o->tls_key && (SSL_CTX_use_PrivateKey_file(r->ctx, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
                       SSL_CTX_check_private_key(r->ctx) != 1))
        goto ssl_err;
    return 0;
ssl_err:
    snprintf(err, errlen, "%s: tls: %s: %s", r_addr(r), what ? what : "context",
             ERR_reason_error_string(ERR_get_error()));
    ERR_clear_error();
    return -1;
}

static char *r_dup(const char *s, bool *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = true;
    return d;
}

static int r_copy_opts(fl_redis_t *r, const fl_redis_opts_t *o)
{
    bool oom = false;
    r->o = *o;
    r->o.addr = r_dup(o->addr, &oom);
    r->o.username = r_dup(o->username, &oom);
    r->o.password = r_dup(o->password, &oom);
    r->o.tls_root_ca = r_dup(o->tls_root_ca, &oom);
    r->o.tls_cert = r_dup(o->tls_cert, &oom);
    r->o.tls_key = r_dup(o->tls_key, &oom);
    r->o.name = r_dup(o->name, &oom);
    r->o.tls = o->tls || o->tls_root_ca || o->tls_cert || o->tls_key;
    if (r->o.dial_timeout_ms <= 0)
        r->o.dial_timeout_ms = 5000;
    if (r->o.read_timeout_ms < 0)
        r->o.read_timeout_ms = 0;
    if (r->o.reconnect_min_ms <= 0)
        r->o.reconnect_min_ms = 100;
    if (r->o.reconnect_max_ms <= 0)
        r->o.reconnect_max_ms = 5000;
    if (r->o.reconnect_max_ms < r->o.reconnect_min_ms)
        r->o.reconnect_max_ms = r->o.reconnect_min_ms;
    return oom ? -1 : 0;
}

static void r_destroy(fl_redis_t *r)
{
    r_unlink(r);
    free((char *)r->o.addr);
    free((char *)r->o.username);
    free((char *)r->o.password);
    free((char *)r->o.tls_root_ca);
    free((char *)r->o.tls_cert);
    free((char *)r->o.tls_key);
    free((char *)r->o.name);
    free(r->host);
    free(r->path);
    if (r->ctx)
        SSL_CTX_free(r->ctx);
    fl_buf_free(&r->out);
    fl_buf_free(&r->held);
    free(r->q.e);
    free(r->downq.e);
    free(r);
}

/* ---- the API ---- */

fl_redis_t *fl_redis_new(fl_loop_t *loop, const fl_redis_opts_t *o, fl_redis_state_cb on_state,
                         void *data, char *errbuf, size_t errlen)
{
    fl_redis_t *r = calloc(1, sizeof(*r));
    snprintf(errbuf, errlen, "out of memory");
    if (!r)
        return NULL;
    r->loop = loop;
    r->fd = r->rfd = -1;
    r->on_state = on_state;
    r->data = data;
    if (!o->addr || !*o->addr) {
        snprintf(errbuf, errlen, "redis: an address is required");
        r_destroy(r);
        return NULL;
    }
    if (r_copy_opts(r, o) < 0 || r_parse_addr(r, r->o.addr, errbuf, errlen) < 0 ||
        (r->o.tls && r_tls_ctx(r, errbuf, errlen) < 0)) {
        r_destroy(r);
        return NULL;
    }
    r->backoff = r->o.reconnect_min_ms;
    errbuf[0] = 0;
    r_link(r);
    r_connect(r);
    return r;
}

static void r_down_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_redis_t *r = data;
    r->t_down = 0;
    r_enter(r);
    rq_fail(r, &r->downq, FL_REDIS_EDOWN);
    if (!r->closing && r->downq.n)
        r->t_down = fl_timer_add(r->loop, 0, r_down_fire, r);
    r_leave(r);
}

/* Takes cmd (a hiredis-formatted command, freed here). */
static int r_queue(fl_redis_t *r, fl_redis_cb cb, void *data, char *cmd, int len, int flags)
{
    if (len < 0)
        return -1;
    if (r->closing) {
        redisFreeCommand(cmd);
        return -1;
    }
    if (r->state == RS_WAIT) {
        redisFreeCommand(cmd);
        if (rq_push(&r->downq, (rentry_t){cb, data, 0, flags}) < 0)
            return -1;
        if (!r->t_down)
            r->t_down = fl_timer_add(r->loop, 0, r_down_fire, r);
        return 0;
    }
    fl_buf_t *b = r->state == RS_UP ? &r->out : &r->held;
    size_t was = b->len;
    int rc = fl_buf_append(b, cmd, (size_t)len);
    redisFreeCommand(cmd);
    if (rc < 0 || rq_push(&r->q, (rentry_t){cb, data, fl_now_ms(), flags}) < 0) {
        b->len = was;
        return -1;
    }
    if (r->state == RS_UP) {
        if (!(flags & RE_BLOCKING))
            r_rt_arm(r, r->o.read_timeout_ms);
        r_want_flush(r);
    }
    return 0;
}

int fl_redis_cmd(fl_redis_t *r, fl_redis_cb cb, void *data, int argc, const char **argv,
                 const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return r_queue(r, cb, data, cmd, len, 0);
}

int fl_redis_cmd_blocking(fl_redis_t *r, fl_redis_cb cb, void *data, int argc, const char **argv,
                          const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return r_queue(r, cb, data, cmd, len, RE_BLOCKING);
}

int fl_redis_cmdf(fl_redis_t *r, fl_redis_cb cb, void *data, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return r_queue(r, cb, data, cmd, len, 0);
}

bool fl_redis_up(const fl_redis_t *r)
{
    return r->state == RS_UP && !r->closing;
}

const char *fl_redis_last_error(const fl_redis_t *r)
{
    return r->lasterr;
}

void fl_redis_free(fl_redis_t *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    r_enter(r);
    r_close_conn(r);
    r->state = RS_WAIT;
    r_timer_del(r, &r->t_retry);
    r_timer_del(r, &r->t_down);
    rq_fail(r, &r->q, FL_REDIS_ECLOSED);
    rq_fail(r, &r->downq, FL_REDIS_ECLOSED);
    r_leave(r);
}

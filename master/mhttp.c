/* See mhttp.h. */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mhttp.h"
#include "net.h"

#define MH_MAX_HEAD 16384
#define MH_MAX_CONNS 256

typedef struct mh_conn mh_conn_t;

struct fl_mhttp {
    fl_loop_t *loop;
    int fd;
    int64_t timeout_ms;
    fl_mhttp_fn fn;
    void *ctx;
    mh_conn_t *conns;
    unsigned nconns;
    fl_mhttp_t *next_all;
};

struct mh_conn {
    fl_mhttp_t *s;
    int fd;
    fl_buf_t in, out;
    size_t sent;
    fl_timer_id timer;
    mh_conn_t *next, *prev;
};

static fl_mhttp_t *mh_all;

static void mh_atfork_child(void)
{
    for (fl_mhttp_t *s = mh_all; s; s = s->next_all) {
        close(s->fd);
        for (mh_conn_t *c = s->conns; c; c = c->next)
            close(c->fd);
    }
    mh_all = NULL;
}

static void mh_close(mh_conn_t *c)
{
    fl_mhttp_t *s = c->s;
    fl_timer_del(s->loop, c->timer);
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

static void mh_timeout(fl_loop_t *loop, void *data)
{
    (void)loop;
    mh_conn_t *c = data;
    c->timer = 0;
    mh_close(c);
}

static const char *mh_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

static void mh_io(fl_loop_t *loop, int fd, int events, void *data);

/* Sends what it can; closes when all is out. */
static void mh_flush(mh_conn_t *c)
{
    while (c->sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            fl_io_set(c->s->loop, c->fd, FL_EV_WRITE, mh_io, c);
            return;
        }
        if (n <= 0)
            break;
        c->sent += (size_t)n;
    }
    mh_close(c);
}

static void mh_respond(mh_conn_t *c, fl_slice_t method, fl_slice_t target, bool head)
{
    fl_mhttp_resp_t r = {.status = 200, .ctype = "text/plain; charset=utf-8"};
    const char *q = memchr(target.base, '?', target.len);
    fl_slice_t path = fl_slice(target.base, q ? (size_t)(q - target.base) : target.len);
    fl_slice_t query = q ? fl_slice(q + 1, target.len - path.len - 1) : FL_SLICE_NULL;
    if (!fl_slice_eq(method, "GET", 3) && !head) {
        r.status = 405;
        fl_buf_puts(&r.body, "method not allowed\n");
    } else {
        c->s->fn(c->s->ctx, method, path, query, &r);
    }
    if (fl_buf_printf(&c->out,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      r.status, mh_reason(r.status), r.ctype, r.body.len) == 0 &&
        !head && r.body.len)
        fl_buf_append(&c->out, r.body.data, r.body.len);
    fl_buf_free(&r.body);
    mh_flush(c);
}

/* The request line of a complete head; 400 for anything unparsable. */
static void mh_request(mh_conn_t *c)
{
    const char *p = c->in.data, *eol = memchr(p, '\r', c->in.len);
    const char *sp1 = eol ? memchr(p, ' ', (size_t)(eol - p)) : NULL;
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2 || sp1 == p || sp2 == sp1 + 1 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        fl_buf_puts(&c->out, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: "
                             "close\r\n\r\n");
        mh_flush(c);
        return;
    }
    fl_slice_t method = fl_slice(p, (size_t)(sp1 - p));
    mh_respond(c, method, fl_slice(sp1 + 1, (size_t)(sp2 - sp1 - 1)),
               fl_slice_eq(method, "HEAD", 4));
}

static void mh_io(fl_loop_t *loop, int fd, int events, void *data)
{
    (void)loop;
    (void)fd;
    mh_conn_t *c = data;
    if (c->out.len) { /* writing the response */
        if (events & FL_EV_WRITE)
            mh_flush(c);
        return;
    }
    if (fl_buf_reserve(&c->in, 4096) < 0) {
        mh_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        mh_close(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = 0;
    if (memmem(c->in.data, c->in.len, "\r\n\r\n", 4) || memmem(c->in.data, c->in.len, "\n\n", 2))
        mh_request(c);
    else if (c->in.len > MH_MAX_HEAD)
        mh_close(c);
}

static void mh_accept(fl_loop_t *loop, int fd, int events, void *data)
{
    (void)events;
    fl_mhttp_t *s = data;
    for (int i = 0; i < 32; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        mh_conn_t *c = s->nconns < MH_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (!c || fl_io_set(loop, cfd, FL_EV_READ, mh_io, c) < 0) {
            free(c);
            close(cfd);
            continue;
        }
        c->s = s;
        c->fd = cfd;
        c->timer = fl_timer_add(loop, s->timeout_ms, mh_timeout, c);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
    }
}


fl_mhttp_t *fl_mhttp_listen(fl_loop_t *loop, const char *addr, int64_t timeout_ms, fl_mhttp_fn fn,
                            void *ctx, char *err, size_t errlen)
{
    static bool atfork;
    int fd = fl_listen_tcp(addr, 128, err, errlen);
    if (fd < 0)
        return NULL;
    fl_mhttp_t *s = calloc(1, sizeof(*s));
    if (!s || fl_io_set(loop, fd, FL_EV_READ, mh_accept, s) < 0) {
        snprintf(err, errlen, "%s: cannot watch the socket", addr);
        free(s);
        close(fd);
        return NULL;
    }
    *s = (fl_mhttp_t){.loop = loop,
                      .fd = fd,
                      .timeout_ms = timeout_ms > 0 ? timeout_ms : 10000,
                      .fn = fn,
                      .ctx = ctx,
                      .next_all = mh_all};
    mh_all = s;
    if (!atfork && pthread_atfork(NULL, NULL, mh_atfork_child) == 0)
        atfork = true;
    return s;
}

void fl_mhttp_set_timeout(fl_mhttp_t *s, int64_t timeout_ms)
{
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000; /* connections accepted from now on */
}

void fl_mhttp_free(fl_mhttp_t *s)
{
    if (!s)
        return;
    for (fl_mhttp_t **pp = &mh_all; *pp; pp = &(*pp)->next_all) {
        if (*pp == s) {
            *pp = s->next_all;
            break;
        }
    }
    while (s->conns)
        mh_close(s->conns);
    fl_io_del(s->loop, s->fd);
    close(s->fd);
    free(s);
}

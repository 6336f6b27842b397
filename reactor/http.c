#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "httpv1.h"
#include "llhttp.h"
#include "log.h"

/* how long an idle keep-alive connection may still send a request once draining began */
#define FL_DRAIN_IDLE_MS 1000
#define MAX_URL 8192
#define MAX_HEADER_BYTES 65536
#define MAX_HEADERS 128
#define READ_CHUNK 65536
#define OUT_HIGH_WATER (1u << 20) /* stop parsing pipelined requests while this much is unsent */

typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_idx_t;

struct fl_conn {
    fl_http_server_t *srv;
    fl_conn_t *next, *prev; /* srv->conns */
    fl_conn_t *next_flush;
    bool in_flushq;
    int fd;
    char remote[INET6_ADDRSTRLEN];
    llhttp_t parser;
    fl_buf_t in;
    fl_buf_t out;
    size_t out_off;
    /* the request being read */
    fl_buf_t hbuf; /* URL, then header names and values, back to back */
    uint32_t url_len;
    hdr_idx_t hdrs[MAX_HEADERS];
    unsigned nhdrs;
    bool in_value;
    fl_buf_t body;
    int error_status; /* set by a parser callback: answer this and close */
    bool complete;     /* a whole request is parsed and waits for (or has) its answer */
    bool busy;         /* its task is with the pool */
    bool head;
    bool keepalive;
    bool close_after;  /* close once the output is flushed */
    bool closed;
    int http_minor;
    /* the answer */
    fl_task_t task;
    int status;
    fl_buf_t rhead;    /* response header lines from the worker context */
    fl_buf_t rbody;
    fl_timer_id idle_timer;
};

static llhttp_settings_t settings;

static void conn_io(fl_loop_t *loop, int fd, int events, void *data);
static void conn_process(fl_conn_t *c);
static void conn_close(fl_conn_t *c);

/* ---- small helpers ---- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* The Date header changes once a second: format it once a second. */
static const char *http_date(void)
{
    static char buf[64];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

static fl_slice_t hslice(fl_conn_t *c, uint32_t off, uint32_t len)
{
    return fl_slice(c->hbuf.data + off, len);
}

static void queue_flush(fl_conn_t *c)
{
    if (!c->in_flushq) {
        c->in_flushq = true;
        c->next_flush = c->srv->flushq;
        c->srv->flushq = c;
    }
}

/* ---- llhttp callbacks: copy the request into the connection's buffers ---- */

static int on_message_begin(llhttp_t *p)
{
    fl_conn_t *c = p->data;
    c->hbuf.len = 0;
    c->url_len = 0;
    c->nhdrs = 0;
    c->in_value = false;
    c->body.len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    fl_conn_t *c = p->data;
    if (c->url_len + len > MAX_URL) {
        c->error_status = 414;
        return HPE_USER;
    }
    if (fl_buf_append(&c->hbuf, at, len) < 0)
        return -1;
    c->url_len += (uint32_t)len;
    return 0;
}

static int header_room(fl_conn_t *c, size_t len)
{
    if (c->hbuf.len + len > MAX_HEADER_BYTES) {
        c->error_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    fl_conn_t *c = p->data;
    if (header_room(c, len))
        return HPE_USER;
    if (c->nhdrs == 0 || c->in_value) {
        if (c->nhdrs == MAX_HEADERS) {
            c->error_status = 431;
            return HPE_USER;
        }
        hdr_idx_t *h = &c->hdrs[c->nhdrs++];
        h->name_off = (uint32_t)c->hbuf.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        c->in_value = false;
    }
    c->hdrs[c->nhdrs - 1].name_len += (uint32_t)len;
    return fl_buf_append(&c->hbuf, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    fl_conn_t *c = p->data;
    if (header_room(c, len))
        return HPE_USER;
    hdr_idx_t *h = &c->hdrs[c->nhdrs - 1];
    if (!c->in_value) {
        c->in_value = true;
        h->value_off = (uint32_t)c->hbuf.len;
    }
    h->value_len += (uint32_t)len;
    return fl_buf_append(&c->hbuf, at, len);
}

static int on_headers_complete(llhttp_t *p)
{
    fl_conn_t *c = p->data;
    uint64_t max = c->srv->o.max_request_size;
    if ((p->flags & F_CONTENT_LENGTH) && max && p->content_length > max) {
        c->error_status = 413;
        return HPE_USER;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fl_conn_t *c = p->data;
    uint64_t max = c->srv->o.max_request_size;
    if (max && c->body.len + len > max) {
        c->error_status = 413;
        return HPE_USER;
    }
    return fl_buf_append(&c->body, at, len);
}

static int on_message_complete(llhttp_t *p)
{
    fl_conn_t *c = p->data;
    c->complete = true;
    c->keepalive = llhttp_should_keep_alive(p);
    c->head = p->method == HTTP_HEAD;
    c->http_minor = p->http_minor;
    /* One request at a time per connection: answers go out in request order. */
    return HPE_PAUSED;
}

static void settings_init(void)
{
    static bool done;
    if (done)
        return;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    done = true;
}

/* ---- responses ---- */

static void begin_response(fl_conn_t *c, int status, fl_slice_t extra_headers, size_t body_len)
{
    bool close = c->close_after || !c->keepalive || c->srv->stopping;
    c->close_after = close;
    fl_buf_t *o = &c->out;
    fl_buf_printf(o, "HTTP/1.%d %d %s\r\nDate: %s\r\n", c->http_minor == 0 ? 0 : 1, status,
                  reason(status), http_date());
    fl_buf_append(o, extra_headers.base, extra_headers.len);
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    if (!no_body)
        fl_buf_printf(o, "Content-Length: %zu\r\n", body_len);
    if (close)
        fl_buf_puts(o, "Connection: close\r\n");
    else if (c->http_minor == 0)
        fl_buf_puts(o, "Connection: keep-alive\r\n");
    fl_buf_puts(o, "\r\n");
}

static void finish_request(fl_conn_t *c)
{
    c->complete = false;
    c->busy = false;
    c->rhead.len = 0;
    c->rbody.len = 0;
    c->body.len = 0;
    if (c->body.cap > (1u << 20))
        fl_buf_free(&c->body); /* do not keep a 5 MB upload buffer around on an idle conn */
    queue_flush(c);
}

static void send_simple(fl_conn_t *c, int status, const char *body, const char *extra)
{
    size_t n = body ? strlen(body) : 0;
    fl_slice_t hdr = extra ? fl_slice_cstr(extra) : FL_SLICE("Content-Type: text/plain; charset=utf-8\r\n");
    begin_response(c, status, hdr, n);
    if (!c->head && n)
        fl_buf_append(&c->out, body, n);
    finish_request(c);
}

/* A client error found by the parser: answer it and close, as nginx does. */
static void send_parse_error(fl_conn_t *c, int status, const char *why)
{
    fl_info("%s: bad request (%d): %s", c->remote, status, why);
    c->keepalive = false;
    c->close_after = true;
    c->head = false;
    c->http_minor = 1;
    char body[128];
    snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
    send_simple(c, status, body, NULL);
}

static bool skip_response_header(fl_slice_t name)
{
    /* framing is ours to decide */
    return fl_slice_ieq(name, "content-length") || fl_slice_ieq(name, "transfer-encoding") ||
           fl_slice_ieq(name, "connection");
}

static int apply_context(fl_conn_t *c, const fl_frame_t *f, fl_slice_t ctx)
{
    if (ctx.len == 0 || c->status)
        return 0; /* the first status wins; later contexts of a stream repeat it */
    fl_http_resp_t r = {0};
    const char *err = NULL;
    if (fl_httpv1_decode_response(f->flags, ctx, &r, &err) < 0) {
        fl_error("%s: cannot decode the worker's response context: %s", c->remote, err);
        fl_http_resp_free(&r);
        return -1;
    }
    int status = r.status ? r.status : 200;
    if (status < 100 || status > 599) {
        fl_error("unknown status code from worker: %d", status);
        fl_http_resp_free(&r);
        return -1;
    }
    c->status = status;
    for (size_t i = 0; i < r.nheaders; i++) {
        fl_header_t *h = &r.headers[i];
        if (skip_response_header(h->name))
            continue;
        /* a header value must not smuggle in a line break */
        if (memchr(h->value.base, '\n', h->value.len) || memchr(h->value.base, '\r', h->value.len) ||
            memchr(h->name.base, '\n', h->name.len) || memchr(h->name.base, '\r', h->name.len))
            continue;
        fl_buf_append(&c->rhead, h->name.base, h->name.len);
        fl_buf_append(&c->rhead, ": ", 2);
        fl_buf_append(&c->rhead, h->value.base, h->value.len);
        fl_buf_append(&c->rhead, "\r\n", 2);
    }
    fl_http_resp_free(&r);
    return 0;
}

static void internal_error(fl_conn_t *c, const char *detail, bool no_workers)
{
    int code = c->srv->o.internal_error_code;
    const char *extra = no_workers ? "Content-Type: text/plain; charset=utf-8\r\nNo-Workers: true\r\n"
                                   : NULL;
    send_simple(c, code, c->srv->o.debug ? detail : NULL, extra);
}

static void task_frame(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body)
{
    fl_conn_t *c = t->data;
    bool more = f->stream & FL_STREAM_MORE;
    if (apply_context(c, f, ctx) < 0) {
        if (more)
            fl_pool_cancel(c->srv->pool, t);
        c->srv->inflight--;
        c->rhead.len = 0;
        internal_error(c, "invalid response from the worker", false);
        conn_process(c);
        return;
    }
    /* 1xx interim answers (103 Early Hints) go out at once with their own headers. */
    if (c->status >= 100 && c->status < 200 && more) {
        fl_buf_printf(&c->out, "HTTP/1.1 %d %s\r\n", c->status, reason(c->status));
        fl_buf_append(&c->out, c->rhead.data, c->rhead.len);
        fl_buf_puts(&c->out, "\r\n");
        queue_flush(c);
        c->status = 0;
        c->rhead.len = 0;
        return;
    }
    fl_buf_append(&c->rbody, body.base, body.len);
    if (more)
        return;
    c->srv->inflight--;
    int status = c->status ? c->status : 200;
    begin_response(c, status, fl_slice(c->rhead.data, c->rhead.len), c->rbody.len);
    if (!c->head)
        fl_buf_append(&c->out, c->rbody.data, c->rbody.len);
    c->status = 0;
    finish_request(c);
    conn_process(c);
}

static void task_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    fl_conn_t *c = t->data;
    c->srv->inflight--;
    c->status = 0;
    c->rhead.len = 0;
    c->rbody.len = 0;
    char msg[512];
    snprintf(msg, sizeof(msg), "%.*s", (int)(detail.len < 500 ? detail.len : 500), detail.base);
    if (why == fl_task_err_worker)
        fl_warn("%s: worker error: %s", c->remote, msg);
    internal_error(c, msg, why == fl_task_err_no_workers);
    conn_process(c);
}

/* ---- requests to the pool ---- */

static void build_request(fl_conn_t *c, fl_http_req_t *r, fl_header_t *hv, fl_buf_t *uri)
{
    fl_slice_t target = hslice(c, 0, c->url_len);
    fl_slice_t host = FL_SLICE("");
    for (unsigned i = 0; i < c->nhdrs; i++) {
        hv[i].name = hslice(c, c->hdrs[i].name_off, c->hdrs[i].name_len);
        hv[i].value = hslice(c, c->hdrs[i].value_off, c->hdrs[i].value_len);
        if (!host.len && fl_slice_ieq(hv[i].name, "host"))
            host = hv[i].value;
    }
    if (target.len >= 7 && (memcmp(target.base, "http://", 7) == 0 ||
                            (target.len >= 8 && memcmp(target.base, "https://", 8) == 0))) {
        fl_buf_append(uri, target.base, target.len);
    } else {
        fl_buf_puts(uri, "http://");
        fl_buf_append(uri, host.base, host.len);
        fl_buf_append(uri, target.base, target.len);
    }
    const char *q = memchr(target.base, '?', target.len);
    const char *hash = memchr(target.base, '#', target.len);
    fl_slice_t query = FL_SLICE("");
    if (q) {
        const char *end = hash && hash > q ? hash : target.base + target.len;
        query = fl_slice(q + 1, (size_t)(end - q - 1));
    }
    const char *m = llhttp_method_name((llhttp_method_t)c->parser.method);
    *r = (fl_http_req_t){
        .remote_addr = fl_slice_cstr(c->remote),
        .protocol = c->http_minor == 0 ? FL_SLICE("HTTP/1.0") : FL_SLICE("HTTP/1.1"),
        .method = fl_slice_cstr(m),
        .uri = fl_slice(uri->data, uri->len),
        .raw_query = query,
        .headers = hv,
        .nheaders = c->nhdrs,
    };
}

static int encode_task(fl_conn_t *c)
{
    fl_header_t hv[MAX_HEADERS];
    fl_buf_t uri = {0};
    fl_http_req_t r;
    build_request(c, &r, hv, &uri);
    fl_buf_t *fr = &c->task.frame;
    fr->len = 0;
    size_t hl = fl_frame_header_len(1);
    int rc = fl_buf_reserve(fr, hl + 512 + c->hbuf.len * 2 + c->body.len);
    if (rc == 0) {
        fr->len = hl;
        rc = c->srv->o.codec ? fl_httpv1_encode_json(fr, &r) : fl_httpv1_encode_proto(fr, &r);
    }
    fl_buf_free(&uri);
    if (rc < 0)
        return -1;
    uint32_t ctx_len = (uint32_t)(fr->len - hl);
    if (fl_buf_append(fr, c->body.data, c->body.len) < 0)
        return -1;
    uint8_t flags = c->srv->o.codec ? FL_FRAME_JSON : FL_FRAME_PROTO;
    fl_frame_header((uint8_t *)fr->data, flags, 0, &ctx_len, 1, (uint32_t)(fr->len - hl));
    return 0;
}

static void dispatch_request(fl_conn_t *c)
{
    c->busy = true;
    c->status = 0;
    if (encode_task(c) < 0) {
        c->busy = false;
        internal_error(c, "out of memory", false);
        return;
    }
    c->task.on_frame = task_frame;
    c->task.on_fail = task_fail;
    c->task.data = c;
    c->srv->inflight++;
    fl_pool_submit(c->srv->pool, &c->task);
}

/* ---- the connection state machine ---- */

static void set_interest(fl_conn_t *c)
{
    if (c->closed)
        return;
    int mask = 0;
    if (!c->busy && !c->close_after && c->out.len - c->out_off < OUT_HIGH_WATER)
        mask |= FL_EV_READ;
    if (c->out_off < c->out.len)
        mask |= FL_EV_WRITE;
    fl_io_set(c->srv->loop, c->fd, mask, conn_io, c);
}

static void idle_timeout(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_conn_t *c = data;
    c->idle_timer = 0;
    if (!c->busy && !c->complete && c->out_off == c->out.len)
        conn_close(c);
}

/* Parse what has been read; dispatch at most one request; answer parse errors. */
static void conn_process(fl_conn_t *c)
{
    if (c->closed)
        return;
    while (!c->closed && !c->busy && !c->close_after && c->in.len > 0 &&
           c->out.len - c->out_off < OUT_HIGH_WATER) {
        llhttp_errno_t e = llhttp_execute(&c->parser, c->in.data, c->in.len);
        size_t used = c->in.len;
        if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.data);
            llhttp_resume(&c->parser);
        } else if (e != HPE_OK) {
            int status = c->error_status ? c->error_status : 400;
            const char *why = c->error_status ? "limit exceeded" : llhttp_get_error_reason(&c->parser);
            c->in.len = 0;
            send_parse_error(c, status, why ? why : "malformed request");
            break;
        }
        fl_buf_consume(&c->in, used);
        if (!c->complete)
            break;
        if (c->srv->stopping)
            c->close_after = true;
        dispatch_request(c);
    }
    if (c->closed)
        return;
    set_interest(c);
    if (!c->busy && !c->complete && c->out_off == c->out.len && !c->close_after) {
        fl_timer_del(c->srv->loop, c->idle_timer);
        int64_t idle = c->srv->stopping ? FL_DRAIN_IDLE_MS : c->srv->o.keepalive_timeout_ms;
        c->idle_timer = fl_timer_add(c->srv->loop, idle, idle_timeout, c);
    }
}

static void conn_flush(fl_conn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        if (c->out.cap > (1u << 20))
            fl_buf_free(&c->out);
        if (c->close_after && !c->busy) {
            conn_close(c);
            return;
        }
        conn_process(c); /* resume pipelined requests held back by the high-water mark */
        return;
    }
    set_interest(c);
}

static void conn_read(fl_conn_t *c)
{
    for (int i = 0; i < 4; i++) {
        if (fl_buf_reserve(&c->in, READ_CHUNK) < 0) {
            conn_close(c);
            return;
        }
        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->in.len += (size_t)n;
        if ((size_t)n < READ_CHUNK)
            break;
    }
    fl_timer_del(c->srv->loop, c->idle_timer);
    c->idle_timer = 0;
    conn_process(c);
}

static void conn_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    fl_conn_t *c = data;
    if (events & FL_EV_WRITE) {
        conn_flush(c);
        if (c->closed)
            return;
    }
    if (events & FL_EV_READ)
        conn_read(c);
}

static void conn_free_later(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_conn_t *c = data;
    fl_buf_free(&c->in);
    fl_buf_free(&c->out);
    fl_buf_free(&c->hbuf);
    fl_buf_free(&c->body);
    fl_buf_free(&c->rhead);
    fl_buf_free(&c->rbody);
    fl_buf_free(&c->task.frame);
    free(c);
}

static void conn_close(fl_conn_t *c)
{
    if (c->closed)
        return;
    fl_http_server_t *s = c->srv;
    c->closed = true;
    if (c->busy) {
        fl_pool_cancel(s->pool, &c->task);
        s->inflight--;
        c->busy = false;
    }
    fl_timer_del(s->loop, c->idle_timer);
    fl_io_del(s->loop, c->fd);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->in_flushq) {
        for (fl_conn_t **pp = &s->flushq; *pp; pp = &(*pp)->next_flush) {
            if (*pp == c) {
                *pp = c->next_flush;
                break;
            }
        }
    }
    /* Freed from a timer: callers up the stack may still hold c. */
    fl_timer_add(s->loop, 0, conn_free_later, c);
    if (s->stopping && s->nconns == 0 && s->on_drained)
        s->on_drained(s, s->data);
}

/* ---- server ---- */

void fl_http_init(fl_http_server_t *s, fl_loop_t *loop, fl_pool_t *pool, const fl_http_opts_t *o)
{
    settings_init();
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->pool = pool;
    s->o = *o;
    if (!s->o.keepalive_timeout_ms)
        s->o.keepalive_timeout_ms = 75000;
}

void fl_http_accept(fl_http_server_t *s, int fd, const struct sockaddr *sa, socklen_t salen)
{
    FL_UNUSED(salen);
    fl_conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->srv = s;
    c->fd = fd;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->remote, sizeof(c->remote));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->remote,
                  sizeof(c->remote));
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (fl_io_set(s->loop, fd, FL_EV_READ, conn_io, c) < 0) {
        conn_close(c);
        return;
    }
    c->idle_timer = fl_timer_add(s->loop, s->o.keepalive_timeout_ms, idle_timeout, c);
}

void fl_http_flush(fl_http_server_t *s)
{
    while (s->flushq) {
        fl_conn_t *c = s->flushq;
        s->flushq = c->next_flush;
        c->in_flushq = false;
        conn_flush(c);
    }
}

void fl_http_drain(fl_http_server_t *s)
{
    s->stopping = true;
    fl_conn_t *next;
    for (fl_conn_t *c = s->conns; c; c = next) {
        next = c->next;
        if (c->busy || c->complete) {
            c->close_after = true; /* its response, not written yet, will say so */
            continue;
        }
        /* Closing an idle keep-alive connection races with a request the client may be sending
         * right now. Give it a short window instead: a request that arrives is served with
         * "Connection: close" (stopping is set), and only a connection still idle is closed. */
        fl_timer_del(s->loop, c->idle_timer);
        c->idle_timer = fl_timer_add(s->loop, FL_DRAIN_IDLE_MS, idle_timeout, c);
    }
    if (s->nconns == 0 && s->on_drained)
        s->on_drained(s, s->data);
}

void fl_http_close_all(fl_http_server_t *s)
{
    while (s->conns)
        conn_close(s->conns);
}

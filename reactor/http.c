#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "httpv1.h"
#include "llhttp.h"
#include "log.h"
#include "srvmetrics.h"

/* how long an idle keep-alive connection may still send a request once draining began */
#define FL_DRAIN_IDLE_MS 1000
#define MAX_URL 8192
#define MAX_HEADER_BYTES 65536
#define MAX_HEADERS 128
#define READ_CHUNK 65536
#define OUT_HIGH_WATER (1u << 20) /* stop parsing pipelined requests while this much is unsent */
/* After an error answer the client may still be sending a body it thinks we want: read and
 * drop it this long before closing, or the kernel resets the connection and the client never
 * sees our answer (nginx's lingering close). */
#define LINGER_MS 2000
#define MAX_TRAILERS 16
/* How long the kernel holds a connection that sends nothing under TCP_DEFER_ACCEPT = 1 s:
 * until its first SYN-ACK retransmission (TCP_TIMEOUT_INIT). */
#define FL_DEFER_ACCEPT_MS 1000

enum { BODY_NONE, BODY_RAW, BODY_URLENC, BODY_MULTIPART };
/* How a response body is delimited. */
enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE, FRAME_NOBODY };

typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_idx_t;

struct fl_conn {
    fl_http_server_t *srv;
    fl_conn_t *next, *prev; /* srv->conns */
    fl_conn_t *next_flush;
    bool in_flushq;
    bool rd_parked; /* EPOLLIN was disarmed because the client spoke while busy (set_interest) */
    int fd;
    fl_tls_t *ssl;           /* NULL on a plain connection */
    bool tls_rd_wants_write; /* OpenSSL must write (handshake) before it can read */
    bool tls_wr_wants_read;  /* ... or read before it can write */
    char peer[INET6_ADDRSTRLEN]; /* the socket's peer address */
    bool peer_trusted;           /* in http.trusted_subnets */
    char remote[INET6_ADDRSTRLEN + 1]; /* the client for PHP and the log (proxy headers) */
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
    bool in_message;   /* between a request's first byte and its end */
    bool headers_done; /* ... and past its headers */
    int body_mode;     /* BODY_*: where the body bytes go */
    uint64_t body_bytes;
    fl_buf_t body;     /* raw and urlencoded bodies */
    fl_form_t form;    /* parsed forms and uploads (temp files) */
    int body_error;    /* answered instead of dispatching (a form that does not parse) */
    const char *body_why;
    int error_status;  /* set by a parser callback: answer this and close */
    const char *error_why;
    bool complete;     /* a whole request is parsed and waits for (or has) its answer */
    bool busy;         /* its task is with the pool */
    bool head;
    bool keepalive;
    bool close_after;  /* close once the output is flushed */
    bool linger;       /* ... through a lingering close */
    bool lingering;
    bool eof;          /* the client closed its side */
    bool closed;
    int http_minor;
    unsigned nreqs;    /* requests answered on this connection */
    /* timeouts: one lazy timer, re-armed from these when it fires (see conn_deadline) */
    fl_timer_id timer;
    int64_t timer_at;
    int64_t idle_since, req_start_ms, hdr_done_ms, last_read_ms, last_write_ms, linger_until;
    uint64_t metrics_t0; /* fl_srvm_clock() at the end of the head, for the duration histogram */
    bool write_blocked; /* output waits for the client to read */
    /* the answer */
    fl_task_t task;
    int status;         /* the worker's first final status; 0 = none yet */
    bool resp_started;  /* a streamed answer: its head is out */
    bool chunked;
    bool body_dropped;  /* HEAD, 204, 304: stream chunks are swallowed */
    bool has_date;      /* the worker sent its own Date */
    int64_t clen;       /* the worker's Content-Length, -1 if none */
    int64_t clen_left;  /* a streamed identity body: bytes still due */
    int log_status;
    uint64_t log_bytes;
    fl_buf_t rhead;     /* response header lines from the worker context */
    fl_buf_t rtrail;    /* trailer lines (the worker's Trailer header named them) */
    fl_buf_t rbody;
    /* a file body queued after out (static files): file_off..file_end of file_fd */
    bool sending_file;
    bool file_copy; /* the writer cannot take sendfile (TLS): copy through out instead */
    int file_fd;
    off_t file_off, file_end;
};

static llhttp_settings_t settings;

static void conn_io(fl_loop_t *loop, int fd, int events, void *data);
static void conn_process(fl_conn_t *c);
static void conn_read(fl_conn_t *c);
static void conn_close(fl_conn_t *c);
static void conn_arm_timer(fl_conn_t *c);

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
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
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

static bool slice_contains(fl_slice_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && memmem(s.base, s.len, lit, n) != NULL;
}

static fl_slice_t slice_trim(fl_slice_t s)
{
    while (s.len && (s.base[0] == ' ' || s.base[0] == '\t')) {
        s.base++;
        s.len--;
    }
    while (s.len && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        s.len--;
    return s;
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
    c->in_message = true;
    c->headers_done = false;
    c->body_mode = BODY_NONE;
    c->body_bytes = 0;
    c->body_error = 0;
    c->body_why = NULL;
    c->req_start_ms = fl_now_ms();
    c->hdr_done_ms = 0;
    memcpy(c->remote, c->peer, sizeof(c->peer)); /* until trusted proxy headers say otherwise */
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

static int refuse(fl_conn_t *c, int status, const char *why)
{
    c->error_status = status;
    c->error_why = why;
    return HPE_USER;
}

/* As Go's server: HTTP/1.1 needs exactly one Host; more than one is refused in any version. */
static int check_host(fl_conn_t *c, const llhttp_t *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nhdrs; i++)
        n += fl_slice_ieq(hslice(c, c->hdrs[i].name_off, c->hdrs[i].name_len), "host");
    if (n > 1)
        return refuse(c, 400, "too many Host headers");
    if (n == 0 && p->http_major == 1 && p->http_minor >= 1)
        return refuse(c, 400, "missing required Host header");
    return 0;
}

static bool expects_body(const llhttp_t *p)
{
    return (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
}

/* Expect: 100-continue gets its go-ahead now (HTTP/1.1 with a body, as Go), any other
 * expectation 417. */
static int expect_continue(fl_conn_t *c, const llhttp_t *p)
{
    fl_slice_t e = fl_conn_header(c, "expect");
    if (!e.base || !e.len)
        return 0;
    if (!fl_slice_ieq(slice_trim(e), "100-continue"))
        return refuse(c, 417, "unsupported Expect");
    if (p->http_minor >= 1 && expects_body(p)) {
        fl_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        queue_flush(c);
    }
    return 0;
}

static int form_refused(fl_conn_t *c, const char *err)
{
    return refuse(c, err == fl_form_err_too_large ? 413 : err == fl_form_err_nomem ? 500 : 400, err);
}

/* Where the body goes (spec §6.4): HEAD/OPTIONS bodies are dropped; urlencoded and multipart
 * are parsed unless http.raw_body; anything else goes to PHP as is. */
static int choose_body_mode(fl_conn_t *c, const llhttp_t *p)
{
    c->body_mode = BODY_RAW;
    if (p->method == HTTP_HEAD || p->method == HTTP_OPTIONS) {
        c->body_mode = BODY_NONE;
        return 0;
    }
    fl_slice_t ct = fl_conn_header(c, "content-type");
    if (c->srv->o.raw_body || !ct.base)
        return 0;
    if (slice_contains(ct, "application/x-www-form-urlencoded")) {
        c->body_mode = BODY_URLENC;
    } else if (slice_contains(ct, "multipart/form-data")) {
        const char *err;
        fl_form_free(&c->form);
        if (fl_multipart_begin(&c->form, ct, &c->srv->uploads, &err) < 0)
            return form_refused(c, err);
        c->body_mode = BODY_MULTIPART;
    }
    return 0;
}

/* A body with a Content-Length gets its buffer at once, of that exact size: growing it by
 * doubling costs a copy of everything so far at each step, and a 5 MB body in an 8 MB buffer
 * is past jemalloc's oversize threshold, where every free is an madvise and every request
 * faults its pages in anew. Bounded: a Content-Length alone (headers, then nothing) must not
 * make the reactor map much memory; bigger bodies grow from there. A failed allocation is
 * not an error: the appends retry. */
#define BODY_PRESIZE_MAX (16u << 20)
static void presize_body(fl_conn_t *c, const llhttp_t *p)
{
    if ((c->body_mode != BODY_RAW && c->body_mode != BODY_URLENC) ||
        !(p->flags & F_CONTENT_LENGTH) || p->content_length <= 4096 || c->body.len)
        return;
    size_t n = p->content_length < BODY_PRESIZE_MAX ? (size_t)p->content_length : BODY_PRESIZE_MAX;
    if (c->body.cap >= n)
        return;
    char *d = malloc(n); /* not realloc: that would copy the old buffer's bytes for nothing */
    if (!d)
        return;
    free(c->body.data);
    c->body = (fl_buf_t){.data = d, .cap = n};
}

static int on_headers_complete(llhttp_t *p)
{
    fl_conn_t *c = p->data;
    c->headers_done = true;
    c->hdr_done_ms = c->last_read_ms = fl_now_ms();
    c->metrics_t0 = fl_srvm_clock();
    uint64_t max = c->srv->o.max_request_size;
    if ((p->flags & F_CONTENT_LENGTH) && max && p->content_length > max)
        return refuse(c, 413, "request body larger than http.max_request_size");
    if (check_host(c, p) || expect_continue(c, p))
        return HPE_USER;
    int r = choose_body_mode(c, p);
    if (!r)
        presize_body(c, p);
    return r;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fl_conn_t *c = p->data;
    uint64_t max = c->srv->o.max_request_size;
    c->body_bytes += len;
    if (max && c->body_bytes > max)
        return refuse(c, 413, "request body larger than http.max_request_size");
    const char *err;
    switch (c->body_mode) {
    case BODY_NONE:
        return 0;
    case BODY_MULTIPART:
        return fl_multipart_feed(&c->form, at, len, &err) < 0 ? form_refused(c, err) : 0;
    default:
        return fl_buf_append(&c->body, at, len) < 0 ? refuse(c, 500, "out of memory") : 0;
    }
}

static int on_message_complete(llhttp_t *p)
{
    fl_conn_t *c = p->data;
    c->complete = true;
    c->in_message = false;
    c->keepalive = llhttp_should_keep_alive(p);
    c->head = p->method == HTTP_HEAD;
    c->http_minor = p->http_minor;
    const char *err;
    if (c->body_mode == BODY_MULTIPART && fl_multipart_end(&c->form, &err) < 0) {
        c->body_error = err == fl_form_err_too_large ? 413 : 400;
        c->body_why = err;
    }
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

/* Appends the decimal digits of v (the head is built without printf: it was half of the
 * reactor's instructions per request). The caller reserved the room. */
static void put_uint(fl_buf_t *o, uint64_t v)
{
    char tmp[20], *p = tmp + sizeof(tmp);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    fl_buf_append(o, p, (size_t)(tmp + sizeof(tmp) - p));
}

static void write_head(fl_conn_t *c, int status, fl_slice_t headers, int framing, uint64_t len)
{
    bool close = c->close_after || !c->keepalive || c->srv->stopping || framing == FRAME_CLOSE;
    c->close_after = close;
    c->log_status = status;
    fl_buf_t *o = &c->out;
    const char *why = reason(status);
    fl_buf_reserve(o, headers.len + strlen(why) + 160); /* one reservation for the head */
    fl_buf_puts(o, c->http_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ");
    put_uint(o, (uint64_t)(status < 0 ? 0 : status));
    fl_buf_append(o, " ", 1);
    fl_buf_puts(o, why);
    fl_buf_append(o, "\r\n", 2);
    if (!c->has_date) {
        fl_buf_append(o, "Date: ", 6);
        fl_buf_puts(o, http_date());
        fl_buf_append(o, "\r\n", 2);
    }
    fl_buf_append(o, headers.base, headers.len);
    if (framing == FRAME_LENGTH) {
        fl_buf_append(o, "Content-Length: ", 16);
        put_uint(o, len);
        fl_buf_append(o, "\r\n", 2);
    } else if (framing == FRAME_CHUNKED)
        fl_buf_puts(o, "Transfer-Encoding: chunked\r\n");
    if (close)
        fl_buf_puts(o, "Connection: close\r\n");
    else if (c->http_minor == 0)
        fl_buf_puts(o, "Connection: keep-alive\r\n");
    fl_buf_puts(o, "\r\n");
    queue_flush(c);
}

static void begin_response(fl_conn_t *c, int status, fl_slice_t extra_headers, size_t body_len)
{
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    write_head(c, status, extra_headers, no_body ? FRAME_NOBODY : FRAME_LENGTH, body_len);
    c->log_bytes = no_body ? 0 : body_len;
}

static void task_release(fl_conn_t *c)
{
    if (c->busy) {
        c->busy = false;
        c->srv->inflight--;
    }
}

/* Uploaded temp files live exactly as long as the request: answered, failed or abandoned. */
static void request_cleanup(fl_conn_t *c)
{
    fl_form_t *f = &c->form;
    if (!f->strs.data && !f->fields && !f->uploads && !f->mp)
        return; /* no form: nothing to free (spares the allocator and a memset per request) */
    fl_form_remove_files(f);
    fl_form_free(f);
}

/* One line per answered request (rr-config §2.5): as RoadRunner, "http access log" at info when
 * http.access_logs is true, else "http log" at debug (not in production logs by default). */
static void access_log(fl_conn_t *c)
{
    bool detailed = c->srv->o.access_logs;
    int level = detailed ? FL_LOG_INFO : FL_LOG_DEBUG;
    if (!fl_log_enabled(level, "http"))
        return;
    bool parsed = c->complete || c->headers_done;
    const char *m = parsed ? llhttp_method_name((llhttp_method_t)c->parser.method) : "";
    int64_t start = c->hdr_done_ms ? c->hdr_done_ms : c->req_start_ms;
    fl_log_field_t f[] = {
        FL_LF_INT("status", c->log_status),
        FL_LF_STR("method", m),
        FL_LF_STRN("URI", c->hbuf.data ? c->hbuf.data : "", parsed ? c->url_len : 0),
        FL_LF_STR("remote_address", c->remote),
        FL_LF_INT("elapsed", start ? fl_now_ms() - start : 0),
        FL_LF_INT("read_bytes", c->body_bytes),
        FL_LF_INT("write_bytes", c->log_bytes),
    };
    const char *msg = detailed ? "http access log" : "http log";
    fl_logf(level, "http", msg, strlen(msg), f, detailed ? 7 : 5);
}

static void finish_request(fl_conn_t *c)
{
    access_log(c);
    fl_srvm_http_done(&c->metrics_t0, /* built-in metrics: shared-memory counters */
                      c->complete || c->headers_done ? llhttp_method_name(c->parser.method) : NULL,
                      c->log_status, c->body_bytes, c->log_bytes);
    request_cleanup(c);
    task_release(c);
    c->complete = false;
    c->status = 0;
    c->resp_started = c->chunked = c->body_dropped = c->has_date = false;
    c->clen = -1;
    c->rhead.len = 0;
    c->rtrail.len = 0;
    c->rbody.len = 0;
    c->body.len = 0;
    c->hdr_done_ms = c->req_start_ms = 0;
    c->nreqs++;
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
    c->linger = true;
    c->head = false;
    c->http_minor = 1;
    char body[160];
    snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
    send_simple(c, status, body, NULL);
}

/* A header name is an RFC 9110 token; a value never holds CR, LF or NUL. Anything else
 * would let a worker split the response (header injection). */
static bool header_ok(const fl_header_t *h)
{
    if (!fl_http_is_token(h->name))
        return false;
    return !memchr(h->value.base, '\r', h->value.len) && !memchr(h->value.base, '\n', h->value.len) &&
           !memchr(h->value.base, '\0', h->value.len);
}

static bool is_trailer(const fl_slice_t *names, size_t n, fl_slice_t name)
{
    for (size_t i = 0; i < n; i++)
        if (names[i].len == name.len && strncasecmp(names[i].base, name.base, name.len) == 0)
            return true;
    return false;
}

/* The names a Trailer header lists (comma-separated, any number of Trailer headers). */
static size_t trailer_names(const fl_http_resp_t *r, fl_slice_t *names)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!fl_slice_ieq(r->headers[i].name, "trailer"))
            continue;
        fl_slice_t v = r->headers[i].value;
        while (v.len && n < MAX_TRAILERS) {
            const char *comma = memchr(v.base, ',', v.len);
            size_t k = comma ? (size_t)(comma - v.base) : v.len;
            fl_slice_t name = slice_trim(fl_slice(v.base, k));
            if (name.len)
                names[n++] = name;
            v = comma ? fl_slice(comma + 1, v.len - k - 1) : fl_slice(v.base + v.len, 0);
        }
    }
    return n;
}

static int64_t parse_clen(fl_slice_t v)
{
    v = slice_trim(v);
    int64_t n = 0;
    if (!v.len || v.len > 18)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return -1;
        n = n * 10 + (v.base[i] - '0');
    }
    return n;
}

/* Worker headers → rhead and rtrail lines (§6.6): every value added, names listed in Trailer
 * moved to the trailers, framing headers (ours to decide) taken out. */
static void add_worker_headers(fl_conn_t *c, const fl_http_resp_t *r)
{
    fl_slice_t trailers[MAX_TRAILERS];
    size_t nt = trailer_names(r, trailers);
    for (size_t i = 0; i < r->nheaders; i++) {
        const fl_header_t *h = &r->headers[i];
        if (fl_slice_ieq(h->name, "trailer") || fl_slice_ieq(h->name, "transfer-encoding") ||
            fl_slice_ieq(h->name, "keep-alive"))
            continue;
        if (fl_slice_ieq(h->name, "content-length")) {
            c->clen = parse_clen(h->value);
            continue;
        }
        if (fl_slice_ieq(h->name, "connection")) {
            if (h->value.len >= 5 && memmem(h->value.base, h->value.len, "close", 5))
                c->close_after = true; /* the application asked for it, as Go honours it */
            continue;
        }
        fl_buf_t *b = is_trailer(trailers, nt, h->name) ? &c->rtrail : &c->rhead;
        if (b == &c->rhead && fl_slice_ieq(h->name, "date"))
            c->has_date = true; /* the worker's Date replaces ours (one Date per response) */
        fl_buf_append(b, h->name.base, h->name.len);
        fl_buf_append(b, ": ", 2);
        fl_buf_append(b, h->value.base, h->value.len);
        fl_buf_append(b, "\r\n", 2);
    }
}

/* Applies the first context of an answer. Returns 0, or the status to answer instead. */
static int apply_context(fl_conn_t *c, const fl_frame_t *f, fl_slice_t ctx)
{
    if (ctx.len == 0 || c->status)
        return 0; /* the first status wins; later contexts of a stream repeat it */
    fl_http_resp_t r; /* the decoder sets every field but the inline array: no 600-byte memset */
    const char *err = NULL;
    if (fl_httpv1_decode_response(f->flags, ctx, &r, &err) < 0) {
        fl_error("%s: cannot decode the worker's response context: %s", c->remote, err);
        return c->srv->o.internal_error_code;
    }
    int status = r.status ? r.status : 200;
    int bad = 0;
    if (status < 100 || status > 599) {
        fl_error("unknown status code from worker: %d", status);
        bad = 500;
    }
    for (size_t i = 0; !bad && i < r.nheaders; i++) {
        if (header_ok(&r.headers[i]))
            continue;
        fl_error("%s: response rejected (500): the worker's header %.*s holds CR, LF, NUL or an "
                 "invalid name (header injection)",
                 c->remote, (int)(r.headers[i].name.len > 100 ? 100 : r.headers[i].name.len),
                 r.headers[i].name.base);
        bad = 500;
    }
    if (!bad) {
        c->status = status;
        add_worker_headers(c, &r);
    }
    fl_http_resp_free(&r);
    return bad;
}

static void answer_error(fl_conn_t *c, int code, const char *detail, bool no_workers)
{
    c->status = 0;
    c->rhead.len = c->rtrail.len = c->rbody.len = 0;
    c->has_date = false;
    const char *extra = no_workers ? "Content-Type: text/plain; charset=utf-8\r\nNo-Workers: true\r\n"
                                   : NULL;
    send_simple(c, code, c->srv->o.debug ? detail : NULL, extra);
}

static void internal_error(fl_conn_t *c, const char *detail, bool no_workers)
{
    answer_error(c, c->srv->o.internal_error_code, detail, no_workers);
}

/* A 1xx before the answer (103 Early Hints): out at once with only its own headers; a 101
 * would switch protocols under us, so it is dropped (as RoadRunner's fixed handler does). */
static void interim_response(fl_conn_t *c)
{
    if (c->status == 101)
        fl_warn("%s: the worker sent 101 Switching Protocols as an interim answer: ignored",
                c->remote);
    else if (c->http_minor >= 1)
        fl_buf_printf(&c->out, "HTTP/1.1 %d %s\r\n%.*s\r\n", c->status, reason(c->status),
                      (int)c->rhead.len, c->rhead.data ? c->rhead.data : "");
    queue_flush(c);
    c->status = 0;
    c->rhead.len = c->rtrail.len = 0;
    c->has_date = false;
    c->clen = -1;
}

static void append_chunk(fl_conn_t *c, fl_slice_t body)
{
    if (!body.len)
        return; /* an empty chunk would end the body */
    fl_buf_printf(&c->out, "%zx\r\n", body.len);
    fl_buf_append(&c->out, body.base, body.len);
    fl_buf_puts(&c->out, "\r\n");
}

static void append_last_chunk(fl_conn_t *c)
{
    fl_buf_puts(&c->out, "0\r\n");
    fl_buf_append(&c->out, c->rtrail.data, c->rtrail.len);
    fl_buf_puts(&c->out, "\r\n");
}

/* A whole answer in one frame: Content-Length, or chunked when trailers must follow. */
static void respond_whole(fl_conn_t *c, fl_slice_t body)
{
    int status = c->status ? c->status : 200;
    fl_slice_t h = fl_slice(c->rhead.data, c->rhead.len);
    if (status == 204 || status == 304) {
        write_head(c, status, h, FRAME_NOBODY, 0);
    } else if (c->head) {
        /* Go: the worker's length, else the length of what it wrote (nothing: none) */
        int64_t n = c->clen >= 0 ? c->clen : (int64_t)body.len;
        write_head(c, status, h, n || c->clen == 0 ? FRAME_LENGTH : FRAME_NOBODY, (uint64_t)n);
    } else if (c->rtrail.len && c->http_minor >= 1) {
        write_head(c, status, h, FRAME_CHUNKED, 0);
        append_chunk(c, body);
        append_last_chunk(c);
    } else {
        write_head(c, status, h, FRAME_LENGTH, body.len);
        fl_buf_append(&c->out, body.base, body.len);
    }
    c->log_bytes = c->head ? 0 : body.len;
    finish_request(c);
}

/* The first frame of a streamed answer: the head goes out now, each later frame is flushed
 * as it arrives (§5, §6.6): chunked, or the worker's Content-Length, or (HTTP/1.0) until
 * the connection closes. */
static void stream_start(fl_conn_t *c)
{
    int status = c->status ? c->status : 200;
    fl_slice_t h = fl_slice(c->rhead.data, c->rhead.len);
    c->resp_started = true;
    c->log_bytes = 0;
    if (c->head || status == 204 || status == 304) {
        c->body_dropped = true;
        bool len = c->head && c->clen >= 0 && status != 204 && status != 304;
        write_head(c, status, h, len ? FRAME_LENGTH : FRAME_NOBODY, (uint64_t)(len ? c->clen : 0));
    } else if (c->clen >= 0 && !c->rtrail.len) {
        c->clen_left = c->clen;
        write_head(c, status, h, FRAME_LENGTH, (uint64_t)c->clen);
    } else if (c->http_minor >= 1) {
        c->chunked = true;
        write_head(c, status, h, FRAME_CHUNKED, 0);
    } else {
        write_head(c, status, h, FRAME_CLOSE, 0);
    }
}

static void stream_chunk(fl_conn_t *c, fl_slice_t body)
{
    if (!body.len || c->body_dropped)
        return;
    if (c->chunked) {
        append_chunk(c, body);
    } else if (c->clen >= 0) {
        size_t n = (uint64_t)c->clen_left < body.len ? (size_t)c->clen_left : body.len;
        if (n < body.len)
            fl_warn("%s: the worker streamed more than its Content-Length: %zu bytes dropped",
                    c->remote, body.len - n);
        fl_buf_append(&c->out, body.base, n);
        c->clen_left -= (int64_t)n;
        body.len = n;
    } else {
        fl_buf_append(&c->out, body.base, body.len);
    }
    c->log_bytes += body.len;
    queue_flush(c);
}

static void stream_end(fl_conn_t *c)
{
    if (c->chunked)
        append_last_chunk(c);
    else if (!c->body_dropped && c->clen >= 0 && c->clen_left > 0)
        c->close_after = true; /* short of its Content-Length: only a close can say so */
    finish_request(c);
}

static void task_frame(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body)
{
    fl_conn_t *c = t->data;
    bool more = f->stream & FL_STREAM_MORE;
    if (c->resp_started) {
        stream_chunk(c, body);
        if (!more) {
            stream_end(c);
            conn_process(c);
        }
        return;
    }
    int bad = apply_context(c, f, ctx);
    if (!bad && c->status >= 100 && c->status < 200) {
        if (more) {
            interim_response(c); /* a body that comes with a 1xx is dropped */
            return;
        }
        fl_error("%s: the worker ended its answer with status %d", c->remote, c->status);
        bad = 500;
    }
    if (bad) {
        if (more)
            fl_pool_cancel(c->srv->pool, t);
        answer_error(c, bad, "invalid response from the worker", false);
        conn_process(c);
        return;
    }
    if (more) {
        stream_start(c);
        stream_chunk(c, body);
        return;
    }
    respond_whole(c, body);
    conn_process(c);
}

static void task_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    fl_conn_t *c = t->data;
    char msg[512];
    snprintf(msg, sizeof(msg), "%.*s", (int)(detail.len < 500 ? detail.len : 500), detail.base);
    if (why == fl_task_err_worker)
        fl_warn("%s: worker error: %s", c->remote, msg);
    if (c->resp_started) {
        /* The head is out, so no status can tell: end the connection without the final
         * chunk, and the client sees a truncated body. */
        c->close_after = true;
        finish_request(c);
    } else {
        internal_error(c, msg, why == fl_task_err_no_workers);
    }
    conn_process(c);
}

/* ---- requests to the pool ---- */

/* Go's URL.RawQuery of a request-target: everything after the first '?' (a request URI
 * carries no fragment for Go, so a '#' stays in the query). */
static fl_slice_t raw_query(fl_slice_t target)
{
    const char *q = memchr(target.base, '?', target.len);
    return q ? fl_slice(q + 1, (size_t)(target.base + target.len - q - 1)) : FL_SLICE("");
}

static bool is_absolute(fl_slice_t t)
{
    return (t.len >= 7 && strncasecmp(t.base, "http://", 7) == 0) ||
           (t.len >= 8 && strncasecmp(t.base, "https://", 8) == 0);
}

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
    if (is_absolute(target)) {
        fl_buf_append(uri, target.base, target.len);
    } else {
        fl_buf_puts(uri, c->ssl ? "https://" : "http://");
        fl_buf_append(uri, host.base, host.len);
        fl_buf_append(uri, target.base, target.len);
    }
    const char *m = llhttp_method_name((llhttp_method_t)c->parser.method);
    *r = (fl_http_req_t){
        .remote_addr = fl_slice_cstr(c->remote),
        .protocol = c->http_minor == 0 ? FL_SLICE("HTTP/1.0") : FL_SLICE("HTTP/1.1"),
        .method = fl_slice_cstr(m),
        .uri = fl_slice(uri->data, uri->len),
        .raw_query = raw_query(target),
        .headers = hv,
        .nheaders = c->nhdrs,
    };
}

/* Go parses urlencoded bodies of POST, PUT and PATCH only; other methods get an empty form. */
static bool form_method(const fl_conn_t *c)
{
    int m = c->parser.method;
    return m == HTTP_POST || m == HTTP_PUT || m == HTTP_PATCH;
}

static int form_status(fl_conn_t *c, const char *err)
{
    if (err == fl_form_err_conflict)
        fl_info("%s: bad request (400): invalid multiple values to key '%s' in tree", c->remote,
                c->form.errkey);
    else
        fl_info("%s: bad request: %s", c->remote, err);
    return err == fl_form_err_nomem ? 500 : err == fl_form_err_too_large ? 413 : 400;
}

/* Forms: the uploads tree for the context, the data tree as the body (§6.4, §6.5). Returns
 * 0, or the status to answer. */
static int prepare_form(fl_conn_t *c, fl_buf_t *uploads)
{
    const char *err = NULL;
    if (c->body_mode == BODY_URLENC && form_method(c) &&
        fl_form_urlencoded(&c->form, fl_slice(c->body.data, c->body.len), &err) < 0)
        return form_status(c, err);
    if (c->body_mode == BODY_MULTIPART && fl_uploads_json(&c->form, uploads, &err) < 0)
        return form_status(c, err);
    return 0;
}

/* Returns 0, or the status to answer instead. */
static int encode_task(fl_conn_t *c)
{
    /* The full URI only lives until the frame is encoded: one buffer for the whole reactor
     * (single-threaded), kept between requests, so a request allocates nothing for it. */
    static fl_buf_t uri;
    fl_header_t hv[MAX_HEADERS];
    fl_buf_t uploads = {0};
    fl_http_req_t r;
    bool parsed = c->body_mode == BODY_URLENC || c->body_mode == BODY_MULTIPART;
    int status = parsed ? prepare_form(c, &uploads) : 0;
    uri.len = 0;
    build_request(c, &r, hv, &uri);
    r.parsed = parsed;
    r.uploads = fl_slice(uploads.data, uploads.len);
    fl_buf_t *fr = &c->task.frame;
    fr->len = 0;
    size_t hl = fl_frame_header_len(1);
    size_t body_guess = parsed ? c->body.len + 64 : 0;
    if (!status && fl_buf_reserve(fr, hl + 512 + uploads.len + c->hbuf.len * 2 + body_guess) < 0)
        status = 500;
    if (!status) {
        fr->len = hl;
        if ((c->srv->o.codec ? fl_httpv1_encode_json(fr, &r) : fl_httpv1_encode_proto(fr, &r)) < 0)
            status = 500;
    }
    uint32_t ctx_len = (uint32_t)(fr->len - hl);
    const char *err = NULL;
    if (!status && parsed && fl_form_json(&c->form, fr, &err) < 0)
        status = form_status(c, err);
    /* A raw body is not copied: the pool writes it after the frame (task.tail). It stays put
     * in c->body until the answer (the parser is paused until then). */
    c->task.tail = !status && !parsed ? fl_slice(c->body.data, c->body.len) : fl_slice(NULL, 0);
    if (uri.cap > (64u << 10))
        fl_buf_free(&uri); /* a rare huge Host or target does not stay */
    if (uploads.data)
        fl_buf_free(&uploads);
    if (status)
        return status;
    uint8_t flags = c->srv->o.codec ? FL_FRAME_JSON : FL_FRAME_PROTO;
    fl_frame_header((uint8_t *)fr->data, flags, 0, &ctx_len, 1,
                    (uint32_t)(fr->len - hl + c->task.tail.len));
    return 0;
}

static void dispatch_request(fl_conn_t *c)
{
    if (c->srv->o.static_files.dir && fl_static_try(c, &c->srv->o.static_files))
        return;
    c->status = 0;
    int status = encode_task(c);
    if (status) {
        answer_error(c, status, "cannot encode the request", false);
        return;
    }
    c->busy = true;
    c->task.on_frame = task_frame;
    c->task.on_fail = task_fail;
    c->task.label = hslice(c, 0, c->url_len); /* for the pool's log lines (exec_ttl) */
    c->task.data = c;
    c->srv->inflight++;
    fl_pool_submit(c->srv->pool, &c->task);
}

/* ---- trusted proxies (RoadRunner's proxy_ip_parser middleware) ---- */

int fl_cidr_parse(const char *s, fl_cidr_t *out)
{
    const char *slash = strchr(s, '/');
    char addr[INET6_ADDRSTRLEN];
    if (!slash || slash == s || (size_t)(slash - s) >= sizeof(addr) || !slash[1])
        return -1;
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    char *end;
    unsigned long bits = strtoul(slash + 1, &end, 10);
    if (*end || slash[1] < '0' || slash[1] > '9' || bits > max)
        return -1;
    out->bits = (unsigned)bits;
    return 0;
}

static bool cidr_match(const fl_cidr_t *n, int family, const uint8_t *a)
{
    if (n->family != family)
        return false;
    unsigned full = n->bits / 8, rest = n->bits % 8;
    if (memcmp(n->addr, a, full) != 0)
        return false;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return !rest || (n->addr[full] & mask) == (a[full] & mask);
}

/* The peer as net.ParseIP sees it: an IPv4-mapped IPv6 address is IPv4. */
static void peer_of(fl_conn_t *c, const struct sockaddr *sa)
{
    uint8_t a[16];
    int family = sa->sa_family;
    if (family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
            memmove(a, a + 12, 4);
            family = AF_INET;
        }
    } else {
        return;
    }
    if (family == AF_INET) { /* by hand: inet_ntop's sprintf was a tenth of a connection's cost */
        char *p = c->peer;
        for (int i = 0; i < 4; i++) {
            if (a[i] >= 100)
                *p++ = (char)('0' + a[i] / 100);
            if (a[i] >= 10)
                *p++ = (char)('0' + a[i] / 10 % 10);
            *p++ = (char)('0' + a[i] % 10);
            *p++ = i < 3 ? '.' : '\0';
        }
    } else {
        inet_ntop(family, a, c->peer, sizeof(c->peer));
    }
    for (size_t i = 0; i < c->srv->ntrusted; i++)
        if (cidr_match(&c->srv->trusted[i], family, a))
            c->peer_trusted = true;
}

/* `for=` of a Forwarded header: the first for= followed by a value, up to ; , space or
 * parenthesis, quotes trimmed (the middleware's regular expression). */
static fl_slice_t forwarded_for(fl_slice_t v)
{
    for (size_t i = 0; i + 4 <= v.len; i++) {
        if (strncasecmp(v.base + i, "for=", 4) != 0)
            continue;
        size_t s = i + 4, e = s;
        while (e < v.len && !strchr("(;|, )", v.base[e]))
            e++;
        if (e == s)
            continue;
        while (s < e && v.base[s] == '"')
            s++;
        while (e > s && v.base[e - 1] == '"')
            e--;
        return fl_slice(v.base + s, e - s);
    }
    return FL_SLICE_NULL;
}

static fl_slice_t proxy_client(fl_conn_t *c)
{
    fl_slice_t v = slice_trim(fl_conn_header(c, "forwarded"));
    if (v.base && v.len) {
        fl_slice_t f = forwarded_for(v);
        if (f.len)
            return f;
    } else if ((v = slice_trim(fl_conn_header(c, "x-forwarded-for"))).base && v.len) {
        const char *comma = memchr(v.base, ',', v.len);
        return slice_trim(comma ? fl_slice(v.base, (size_t)(comma - v.base)) : v);
    } else if ((v = slice_trim(fl_conn_header(c, "x-real-ip"))).base && v.len) {
        return v;
    }
    if ((v = slice_trim(fl_conn_header(c, "true-client-ip"))).base && v.len)
        return v;
    if ((v = slice_trim(fl_conn_header(c, "cf-connecting-ip"))).base && v.len)
        return v;
    return FL_SLICE_NULL;
}

static bool is_ip(fl_slice_t s)
{
    char b[INET6_ADDRSTRLEN];
    uint8_t bin[16];
    if (!s.len || s.len >= sizeof(b))
        return false;
    memcpy(b, s.base, s.len);
    b[s.len] = '\0';
    return inet_pton(AF_INET, b, bin) == 1 || inet_pton(AF_INET6, b, bin) == 1;
}

/* The client IP without its port, as RoadRunner derives it from the (rewritten) remote
 * address: split host:port; failing that, a bare IP; failing that, "". */
static void fetch_ip(fl_slice_t s, char *out, size_t cap)
{
    fl_slice_t host = FL_SLICE_NULL;
    const char *colon = memchr(s.base, ':', s.len);
    if (s.len && s.base[0] == '[') {
        const char *rb = memchr(s.base, ']', s.len);
        if (rb && rb + 1 < s.base + s.len && rb[1] == ':')
            host = fl_slice(s.base + 1, (size_t)(rb - s.base - 1));
    } else if (colon && !memchr(colon + 1, ':', s.len - (size_t)(colon - s.base) - 1)) {
        host = fl_slice(s.base, (size_t)(colon - s.base));
    }
    if (!host.base)
        host = is_ip(s) ? s : FL_SLICE("");
    snprintf(out, cap, "%.*s", (int)host.len, host.base);
}

static void set_remote(fl_conn_t *c)
{
    memcpy(c->remote, c->peer, sizeof(c->peer));
    if (!c->peer_trusted)
        return;
    fl_slice_t v = proxy_client(c);
    if (v.base && v.len)
        fetch_ip(v, c->remote, sizeof(c->remote));
}

/* ---- https redirect (http.ssl.redirect) ---- */

static void html_escape(fl_buf_t *b, fl_slice_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        switch (s.base[i]) {
        case '<': fl_buf_puts(b, "&lt;"); break;
        case '>': fl_buf_puts(b, "&gt;"); break;
        case '&': fl_buf_puts(b, "&amp;"); break;
        case '"': fl_buf_puts(b, "&#34;"); break;
        case '\'': fl_buf_puts(b, "&#39;"); break;
        default: fl_buf_append(b, s.base + i, 1);
        }
    }
}

/* 308 to https://host[:ssl port]/path?query, as RoadRunner's redirect handler answers every
 * request on the plain listener. */
static void send_redirect(fl_conn_t *c)
{
    fl_slice_t target = hslice(c, 0, c->url_len);
    fl_slice_t host = slice_trim(fl_conn_header(c, "host"));
    if (is_absolute(target)) {
        const char *auth = memchr(target.base, ':', target.len) + 3;
        const char *end = target.base + target.len;
        const char *slash = memchr(auth, '/', (size_t)(end - auth));
        host = fl_slice(auth, (size_t)((slash ? slash : end) - auth));
        target = slash ? fl_slice(slash, (size_t)(end - slash)) : FL_SLICE("/");
    }
    if (!host.base)
        host = FL_SLICE("");
    const char *cut = host.len && host.base[0] == '[' ? memchr(host.base, ']', host.len) : NULL;
    cut = cut ? cut + 1 : memchr(host.base, ':', host.len);
    if (cut)
        host.len = (size_t)(cut - host.base);
    fl_buf_t loc = {0}, hdr = {0}, body = {0};
    fl_buf_printf(&loc, "https://%.*s", (int)host.len, host.base);
    if (c->srv->o.ssl_port && c->srv->o.ssl_port != 443)
        fl_buf_printf(&loc, ":%u", c->srv->o.ssl_port);
    fl_buf_append(&loc, target.base, target.len);
    fl_buf_printf(&hdr, "Location: %.*s\r\n", (int)loc.len, loc.data);
    int m = c->parser.method;
    if (m == HTTP_GET || m == HTTP_HEAD) {
        fl_buf_puts(&hdr, "Content-Type: text/html; charset=utf-8\r\n");
        fl_buf_puts(&body, "<a href=\"");
        html_escape(&body, fl_slice(loc.data, loc.len));
        fl_buf_puts(&body, "\">Permanent Redirect</a>.\n\n");
    }
    begin_response(c, 308, fl_slice(hdr.data, hdr.len), body.len);
    if (!c->head)
        fl_buf_append(&c->out, body.data, body.len);
    finish_request(c);
    fl_buf_free(&loc);
    fl_buf_free(&hdr);
    fl_buf_free(&body);
}

/* A complete request, before anyone answers it: the client address, the https redirect, a
 * form that did not parse. False when it has been answered already. */
static bool request_ready(fl_conn_t *c)
{
    set_remote(c);
    if (c->srv->o.ssl_redirect && !c->ssl) {
        send_redirect(c);
        return false;
    }
    if (c->body_error) {
        form_status(c, c->body_why);
        answer_error(c, c->body_error, c->body_why, false);
        return false;
    }
    return true;
}

/* ---- the connection state machine ---- */

/* Reading the socket is wanted: parsing the next request, or draining a lingering close. */
static bool want_read(const fl_conn_t *c)
{
    if (c->lingering)
        return true;
    return !c->busy && !c->close_after && !c->sending_file && !c->eof &&
           c->out.len - c->out_off < OUT_HIGH_WATER;
}

/* No epoll_ctl in the usual round trip: EPOLLIN is disarmed lazily, when input comes while we
 * do not want it (a worker has the request, the answer is being written, the connection is to
 * close); the client is normally silent then, and if it does send or close, conn_io parks it.
 * EPOLLOUT is only asked for once a write would block (queued output is written before the
 * loop sleeps, fl_http_flush). */
static void set_interest(fl_conn_t *c)
{
    if (c->closed)
        return;
    int mask = 0;
    bool rd = want_read(c);
    if (rd)
        c->rd_parked = false;
    else if (!c->rd_parked)
        rd = fl_io_mask(c->srv->loop, c->fd) & FL_EV_READ;
    if (rd)
        mask = FL_EV_READ | FL_EV_DEFER; /* new input: may wait while the reactor is saturated */
    if (c->tls_wr_wants_read)
        mask = FL_EV_READ; /* ... but not what a TLS write waits for */
    if (!c->lingering && !c->in_flushq && (c->out_off < c->out.len || c->sending_file))
        mask |= FL_EV_WRITE;
    if (!c->lingering && c->tls_rd_wants_write)
        mask |= FL_EV_WRITE;
    fl_io_set(c->srv->loop, c->fd, mask, conn_io, c);
}

/* When this connection times out in its present state; 0 = no deadline (a worker has it). */
static int64_t conn_deadline(const fl_conn_t *c)
{
    const fl_http_opts_t *o = &c->srv->o;
    if (c->lingering)
        return c->linger_until;
    if (c->write_blocked)
        return c->last_write_ms + o->write_timeout_ms;
    if (c->busy || c->complete || c->sending_file || c->out_off < c->out.len)
        return 0;
    if (c->in_message)
        return c->headers_done ? c->last_read_ms + o->read_timeout_ms
                               : c->req_start_ms + o->read_header_timeout_ms;
    /* waiting for a request: the first one (and the TLS handshake) under the header timeout */
    int64_t d = c->idle_since + (c->nreqs ? o->keepalive_timeout_ms : o->read_header_timeout_ms);
    if (c->srv->stopping) {
        int64_t from = c->idle_since > c->srv->drain_ms ? c->idle_since : c->srv->drain_ms;
        if (from + FL_DRAIN_IDLE_MS < d)
            d = from + FL_DRAIN_IDLE_MS;
    }
    return d;
}

static void conn_timeout(fl_conn_t *c)
{
    if (c->write_blocked)
        fl_info("%s: closed: the client did not read for %lld ms (write timeout)", c->remote,
                (long long)c->srv->o.write_timeout_ms);
    else if (c->in_message && !c->headers_done)
        fl_info("%s: closed: request headers not complete after %lld ms (read header timeout)",
                c->peer, (long long)c->srv->o.read_header_timeout_ms);
    else if (c->in_message)
        fl_info("%s: closed: no request body data for %lld ms (read timeout)", c->peer,
                (long long)c->srv->o.read_timeout_ms);
    conn_close(c); /* a busy worker is cancelled there, uploads removed */
}

/* Input the loop has not reported: it defers new input while the reactor is saturated. */
static bool conn_unread_input(const fl_conn_t *c)
{
    char b;
    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) >= 0; /* data, or EOF */
}

/* One timer per connection, armed lazily: the deadline moves on every read and write, but the
 * timer is only replaced when the deadline comes earlier; when it fires it re-checks. */
static void conn_timer(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_conn_t *c = data;
    c->timer = 0;
    int64_t d = conn_deadline(c);
    if (!d)
        return;
    if (fl_now_ms() >= d && !c->lingering && !c->write_blocked && want_read(c) &&
        conn_unread_input(c)) {
        /* A read deadline, with input waiting that was deferred: the client did its part. */
        conn_read(c);
        if (c->closed)
            return;
        d = conn_deadline(c);
        if (!d)
            return;
    }
    if (fl_now_ms() >= d) {
        conn_timeout(c);
        return;
    }
    conn_arm_timer(c);
}

static void conn_arm_timer(fl_conn_t *c)
{
    if (c->closed)
        return;
    int64_t d = conn_deadline(c);
    if (!d || (c->timer && c->timer_at <= d))
        return;
    fl_timer_del(c->srv->loop, c->timer);
    int64_t left = d - fl_now_ms();
    c->timer = fl_timer_add(c->srv->loop, left > 0 ? left : 0, conn_timer, c);
    c->timer_at = d;
}

/* Parse what has been read; dispatch at most one request; answer parse errors. */
static void conn_process(fl_conn_t *c)
{
    if (c->closed)
        return;
    while (!c->closed && !c->busy && !c->close_after && !c->sending_file && c->in.len > 0 &&
           c->out.len - c->out_off < OUT_HIGH_WATER) {
        llhttp_errno_t e = llhttp_execute(&c->parser, c->in.data, c->in.len);
        size_t used = c->in.len;
        if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.data);
            llhttp_resume(&c->parser);
        } else if (e != HPE_OK) {
            int status = c->error_status ? c->error_status : 400;
            const char *why = c->error_why ? c->error_why
                              : c->error_status ? "limit exceeded"
                                                : llhttp_get_error_reason(&c->parser);
            c->in.len = 0;
            c->in_message = false;
            send_parse_error(c, status, why ? why : "malformed request");
            break;
        }
        fl_buf_consume(&c->in, used);
        if (!c->complete)
            break;
        if (c->srv->stopping)
            c->close_after = true;
        if (request_ready(c))
            dispatch_request(c);
    }
    if (c->closed)
        return;
    set_interest(c);
    conn_arm_timer(c);
}

/* The file body of a static response, once out is written: sendfile, bounded per call so one
 * big download does not hold up the loop. 1 = all sent, 0 = later (EPOLLOUT), -1 = close. In
 * copy mode (TLS, or a file system without sendfile) a chunk is read into out instead, which the
 * ordinary writer sends (2 = out refilled). */
#define FILE_CHUNK (512u << 10)
#define FILE_ROUND (4u << 20)
static int conn_send_file(fl_conn_t *c)
{
    size_t round = 0;
    while (c->file_off < c->file_end) {
        size_t want = c->file_end - c->file_off < FILE_CHUNK ? (size_t)(c->file_end - c->file_off)
                                                              : FILE_CHUNK;
        if (c->file_copy) {
            if (fl_buf_reserve(&c->out, want) < 0)
                return -1;
            ssize_t n = pread(c->file_fd, c->out.data, want, c->file_off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return -1; /* the file shrank under us: the promised length cannot be kept */
            c->out.len = (size_t)n;
            c->out_off = 0;
            c->file_off += n;
            return 2;
        }
        if (round >= FILE_ROUND)
            return 0;
        ssize_t n = sendfile(c->fd, c->file_fd, &c->file_off, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
            c->file_copy = true;
            continue;
        }
        if (n <= 0)
            return -1;
        round += (size_t)n;
    }
    close(c->file_fd);
    c->sending_file = false;
    return 1;
}

/* Socket or TLS: > 0 bytes, 0 EOF, -1 error, -2 try again later. */
static ssize_t conn_recv(fl_conn_t *c, char *buf, size_t n)
{
    if (c->ssl) {
        c->tls_rd_wants_write = false;
        ssize_t r = fl_tls_read(c->ssl, buf, n);
        c->tls_rd_wants_write = r == FL_TLS_WANT_WRITE;
        return r == FL_TLS_WANT_READ || r == FL_TLS_WANT_WRITE ? -2 : r;
    }
    for (;;) {
        ssize_t r = read(c->fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? (errno == EAGAIN ? -2 : -1) : r;
    }
}

static ssize_t conn_send(fl_conn_t *c, const char *buf, size_t n)
{
    if (c->ssl) {
        c->tls_wr_wants_read = false;
        ssize_t r = fl_tls_write(c->ssl, buf, n);
        c->tls_wr_wants_read = r == FL_TLS_WANT_READ;
        return r == FL_TLS_WANT_READ || r == FL_TLS_WANT_WRITE ? -2 : r == 0 ? -1 : r;
    }
    for (;;) {
        ssize_t r = write(c->fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? (errno == EAGAIN ? -2 : -1) : r;
    }
}

/* Everything is written and the connection is to end: close it, or first drain what the
 * client may still be sending so that it gets to read our answer. */
static void conn_end(fl_conn_t *c)
{
    if (!c->linger || c->eof) {
        conn_close(c);
        return;
    }
    if (c->ssl)
        fl_tls_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->linger_until = fl_now_ms() + LINGER_MS;
    set_interest(c);
    conn_arm_timer(c);
}

static void conn_flush(fl_conn_t *c)
{
    bool progress = false;
again:
    while (c->out_off < c->out.len) {
        ssize_t n = conn_send(c, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n == -2)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
        progress = true;
    }
    if (c->out_off == c->out.len && c->sending_file) {
        c->out.len = c->out_off = 0;
        off_t before = c->file_off;
        int r = conn_send_file(c);
        if (r < 0) {
            conn_close(c);
            return;
        }
        progress |= c->file_off != before; /* EAGAIN at once is no progress (write timeout) */
        if (r == 2)
            goto again;
    }
    if (c->out_off == c->out.len && !c->sending_file) {
        c->write_blocked = false;
        c->out.len = c->out_off = 0;
        if (c->out.cap > (1u << 20))
            fl_buf_free(&c->out);
        if (c->close_after && !c->busy) {
            conn_end(c);
            return;
        }
        if (progress && !c->busy && !c->complete)
            c->idle_since = fl_now_ms(); /* an answer went out: the keep-alive wait starts */
        conn_process(c); /* resume pipelined requests held back by the high-water mark */
        return;
    }
    if (progress || !c->write_blocked)
        c->last_write_ms = fl_now_ms();
    c->write_blocked = true;
    set_interest(c);
    conn_arm_timer(c);
}

/* Lingering close: whatever still comes is dropped, until EOF or the deadline. */
static void linger_read(fl_conn_t *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_close(c);
            return;
        }
    }
}

static void conn_read(fl_conn_t *c)
{
    if (c->lingering) {
        linger_read(c);
        return;
    }
    size_t got = 0;
    while (got < 4 * READ_CHUNK) {
        if (fl_buf_reserve(&c->in, READ_CHUNK) < 0) {
            conn_close(c);
            return;
        }
        ssize_t n = conn_recv(c, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (n == -2)
            break;
        if (n < 0) {
            conn_close(c);
            return;
        }
        if (n == 0) {
            c->eof = true;
            break;
        }
        c->in.len += (size_t)n;
        got += (size_t)n;
        /* a short plain read drained the socket; TLS hands out one record per call */
        if (!c->ssl && (size_t)n < READ_CHUNK)
            break;
    }
    if (got)
        c->last_read_ms = fl_now_ms();
    conn_process(c);
    if (c->closed || !c->eof)
        return;
    /* The client is done sending: answer what it asked for, then close. */
    if (c->busy || c->complete || c->sending_file || c->out_off < c->out.len)
        c->close_after = true;
    else
        conn_close(c);
}

static void conn_io(fl_loop_t *loop, int fd, int events, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(fd);
    fl_conn_t *c = data;
    if ((events & FL_EV_WRITE) || ((events & FL_EV_READ) && c->tls_wr_wants_read)) {
        conn_flush(c);
        if (c->closed)
            return;
    }
    if (((events & FL_EV_READ) && want_read(c)) || ((events & FL_EV_WRITE) && c->tls_rd_wants_write)) {
        conn_read(c);
    } else if (events & FL_EV_READ) {
        c->rd_parked = true; /* input while busy: stop watching it until we want it */
        set_interest(c);
    }
}

static void conn_release(fl_conn_t *c)
{
    fl_buf_free(&c->in);
    fl_buf_free(&c->out);
    fl_buf_free(&c->hbuf);
    fl_buf_free(&c->body);
    fl_buf_free(&c->rhead);
    fl_buf_free(&c->rtrail);
    fl_buf_free(&c->rbody);
    fl_buf_free(&c->task.frame);
    fl_form_free(&c->form);
    free(c);
}

/* Closed connections are kept for the next accept with the buffers every request uses
 * (emptied, at most CONN_CACHE_BUF each): with `Connection: close` a request then costs no
 * allocation either. The reactor is single-threaded: one cache per process. */
#define CONN_CACHE_MAX 64
#define CONN_CACHE_BUF (64u << 10)
static fl_conn_t *conn_cache;
static unsigned conn_cache_n;

static void conn_cache_keep(fl_buf_t *b)
{
    if (b->cap > CONN_CACHE_BUF)
        fl_buf_free(b);
    b->len = 0;
}

static fl_conn_t *conn_new(void)
{
    fl_conn_t *c = conn_cache;
    if (!c)
        return calloc(1, sizeof(*c));
    conn_cache = c->next;
    conn_cache_n--;
    fl_buf_t in = c->in, out = c->out, hbuf = c->hbuf, rhead = c->rhead, frame = c->task.frame;
    memset(c, 0, sizeof(*c));
    c->in = in;
    c->out = out;
    c->hbuf = hbuf;
    c->rhead = rhead;
    c->task.frame = frame;
    return c;
}

static void conn_free(fl_conn_t *c)
{
    if (conn_cache_n >= CONN_CACHE_MAX) {
        conn_release(c);
        return;
    }
    fl_buf_t *drop[] = {&c->body, &c->rtrail, &c->rbody};
    for (size_t i = 0; i < FL_ARRAY_SIZE(drop); i++)
        if (drop[i]->data)
            fl_buf_free(drop[i]);
    request_cleanup(c); /* the form, if any (conn_close ran it already: usually nothing) */
    conn_cache_keep(&c->in);
    conn_cache_keep(&c->out);
    conn_cache_keep(&c->hbuf);
    conn_cache_keep(&c->rhead);
    conn_cache_keep(&c->task.frame);
    c->next = conn_cache;
    conn_cache = c;
    conn_cache_n++;
}

static void conn_close(fl_conn_t *c)
{
    if (c->closed)
        return;
    fl_http_server_t *s = c->srv;
    c->closed = true;
    if (c->busy) {
        fl_pool_cancel(s->pool, &c->task); /* the pool stops a stream and drains the worker */
        task_release(c);
    }
    request_cleanup(c);
    fl_timer_del(s->loop, c->timer);
    c->timer = 0;
    fl_io_forget(s->loop, c->fd); /* close() below takes it out of epoll: no epoll_ctl */
    if (c->ssl) {
        if (!c->lingering && !c->eof)
            fl_tls_shutdown(c->ssl);
        fl_tls_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    if (c->sending_file)
        close(c->file_fd);
    c->sending_file = false;
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
    /* Freed after the next flush: callers up the stack may still hold c. Not from a 0 ms
     * timer: that made the loop poll once more (epoll_wait with no timeout) per connection. */
    c->next = s->closed;
    s->closed = c;
    if (s->stopping && s->nconns == 0 && s->on_drained)
        s->on_drained(s, s->data);
}

/* Called where no connection is on the stack (before the loop sleeps, at exit). */
static void free_closed(fl_http_server_t *s)
{
    while (s->closed) {
        fl_conn_t *c = s->closed;
        s->closed = c->next;
        conn_free(c);
    }
}

/* ---- server ---- */

static void uploads_init(fl_http_server_t *s)
{
    const char *dir = s->o.uploads_dir;
    if (dir && *dir) {
        /* PHP gets absolute tmpName paths (§6.5), whatever the working directory */
        s->uploads_dir = realpath(dir, NULL);
        if (!s->uploads_dir) {
            fl_warn("http.uploads.dir %s: %s (uploads will fail with error 6)", dir, strerror(errno));
            s->uploads_dir = strdup(dir);
        }
    }
    s->uploads = (fl_upload_conf_t){
        .dir = s->uploads_dir,
        .forbid = s->o.uploads_forbid,
        .allow = s->o.uploads_allow,
        .uid = s->o.uploads_uid,
        .gid = s->o.uploads_gid,
    };
}

static void trusted_init(fl_http_server_t *s)
{
    size_t n = 0;
    for (char *const *p = s->o.trusted_subnets; p && *p; p++)
        n++;
    if (!n || !(s->trusted = calloc(n, sizeof(*s->trusted))))
        return;
    for (char *const *p = s->o.trusted_subnets; *p; p++) {
        if (fl_cidr_parse(*p, &s->trusted[s->ntrusted]) == 0)
            s->ntrusted++;
        else
            fl_warn("http.trusted_subnets: %s is not a CIDR: ignored", *p);
    }
}

void fl_http_init(fl_http_server_t *s, fl_loop_t *loop, fl_pool_t *pool, const fl_http_opts_t *o)
{
    settings_init();
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->pool = pool;
    s->o = *o;
    if (s->o.keepalive_timeout_ms <= 0)
        s->o.keepalive_timeout_ms = 75000;
    if (s->o.read_header_timeout_ms <= 0)
        s->o.read_header_timeout_ms = 60000;
    if (s->o.read_timeout_ms <= 0)
        s->o.read_timeout_ms = 60000;
    if (s->o.write_timeout_ms <= 0)
        s->o.write_timeout_ms = 60000;
    uploads_init(s);
    trusted_init(s);
}

void fl_http_free(fl_http_server_t *s)
{
    free_closed(s);
    while (conn_cache) {
        fl_conn_t *c = conn_cache;
        conn_cache = c->next;
        conn_release(c);
    }
    conn_cache_n = 0;
    free(s->uploads_dir);
    free(s->trusted);
    s->uploads_dir = NULL;
    s->trusted = NULL;
    s->ntrusted = 0;
}

/* The kernel handed the connection over once its first bytes came (TCP_DEFER_ACCEPT): read
 * and dispatch them now, in the wake-up that accepted it. The socket joins the epoll set only
 * when conn_process has something to wait for (usually after the answer, for the next request
 * on a keep-alive connection): a `Connection: close` request costs no epoll_ctl at all. */
static void accept_read(fl_conn_t *c)
{
    conn_read(c);
    if (c->closed || c->in.len || c->in_message || c->complete || c->nreqs || c->eof)
        return;
    /* Nothing came: the kernel gives up deferring after one SYN-ACK retransmission (1 s), so
     * the connection is that old already; the header timeout counts from the connect. */
    c->idle_since -= FL_DEFER_ACCEPT_MS;
    conn_arm_timer(c);
}

void fl_http_accept(fl_http_server_t *s, int fd, const struct sockaddr *sa, socklen_t salen,
                    bool tls)
{
    FL_UNUSED(salen);
    fl_conn_t *c = conn_new();
    if (!c) {
        close(fd);
        return;
    }
    c->srv = s;
    c->fd = fd;
    c->clen = -1;
    peer_of(c, sa);
    memcpy(c->remote, c->peer, sizeof(c->peer));
    if (tls && (!s->o.tls || !(c->ssl = fl_tls_new(s->o.tls, fd)))) {
        fl_warn("%s: cannot start a TLS session: %s", c->peer, fl_tls_last_error());
        close(fd);
        conn_release(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    c->idle_since = fl_now_ms();
    if (s->defer_accept && !c->ssl) {
        accept_read(c);
        return;
    }
    if (fl_io_set(s->loop, fd, FL_EV_READ, conn_io, c) < 0) {
        conn_close(c);
        return;
    }
    conn_arm_timer(c);
}

void fl_http_flush(fl_http_server_t *s)
{
    while (s->flushq) {
        fl_conn_t *c = s->flushq;
        s->flushq = c->next_flush;
        c->in_flushq = false;
        conn_flush(c);
    }
    free_closed(s);
}

void fl_http_drain(fl_http_server_t *s)
{
    s->stopping = true;
    s->drain_ms = fl_now_ms();
    fl_conn_t *next;
    for (fl_conn_t *c = s->conns; c; c = next) {
        next = c->next;
        if (c->busy || c->complete || c->sending_file) {
            c->close_after = true; /* its response, not written yet, will say so */
            continue;
        }
        /* Closing an idle keep-alive connection races with a request the client may be sending
         * right now. Give it a short window instead: a request that arrives is served with
         * "Connection: close" (stopping is set), and only a connection still idle is closed. */
        conn_arm_timer(c);
    }
    if (s->nconns == 0 && s->on_drained)
        s->on_drained(s, s->data);
}

void fl_http_close_all(fl_http_server_t *s)
{
    while (s->conns)
        conn_close(s->conns);
}

/* ---- answering from outside (reactor/static.c) ---- */

fl_slice_t fl_conn_method(const fl_conn_t *c)
{
    return fl_slice_cstr(llhttp_method_name((llhttp_method_t)c->parser.method));
}

fl_slice_t fl_conn_target(const fl_conn_t *c)
{
    return fl_slice(c->hbuf.data, c->url_len);
}

fl_slice_t fl_conn_header(const fl_conn_t *c, const char *name)
{
    for (unsigned i = 0; i < c->nhdrs; i++) {
        const hdr_idx_t *h = &c->hdrs[i];
        if (fl_slice_ieq(fl_slice(c->hbuf.data + h->name_off, h->name_len), name))
            return fl_slice(h->value_len ? c->hbuf.data + h->value_off : "", h->value_len);
    }
    return FL_SLICE_NULL;
}

void fl_conn_respond(fl_conn_t *c, int status, fl_slice_t headers, fl_slice_t body)
{
    begin_response(c, status, headers, body.len);
    if (!c->head && body.len)
        fl_buf_append(&c->out, body.base, body.len);
    finish_request(c);
}

void fl_conn_respond_file(fl_conn_t *c, int status, fl_slice_t headers, int fd, uint64_t off,
                          uint64_t len)
{
    begin_response(c, status, headers, (size_t)len);
    if (c->head || len == 0) {
        close(fd);
    } else {
        c->sending_file = true;
        c->file_copy = c->ssl != NULL; /* OpenSSL encrypts in user space: no sendfile */
        c->file_fd = fd;
        c->file_off = (off_t)off;
        c->file_end = (off_t)(off + len);
    }
    finish_request(c);
}

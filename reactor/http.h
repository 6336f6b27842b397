/* The HTTP/1.1 server side of a reactor: connections, llhttp parsing, requests handed to the
 * local PHP pool, responses written in order (pipelining), keep-alive. */
#ifndef FL_HTTP_H
#define FL_HTTP_H

#include <sys/socket.h>

#include "ev.h"
#include "form.h"
#include "pool.h"
#include "static.h"
#include "tls.h"

typedef struct fl_conn fl_conn_t;

typedef struct {
    int internal_error_code;
    uint64_t max_request_size;
    int codec; /* 0 = protobuf http.v1, 1 = legacy JSON */
    bool debug;
    /* Timeouts, each 0 = the default. Header: from a request's first byte to the end of its
     * headers (slowloris). Read/write: the longest pause while a body comes in, or while
     * the client does not take our output. Keep-alive: idle wait for the next request. */
    int64_t read_header_timeout_ms; /* 60 s */
    int64_t read_timeout_ms;        /* 60 s */
    int64_t write_timeout_ms;       /* 60 s */
    int64_t keepalive_timeout_ms;   /* 75 s */
    bool raw_body;    /* http.raw_body: forms go to PHP unparsed */
    bool access_logs; /* "http access log" with byte counts instead of "http log" */
    /* http.uploads */
    const char *uploads_dir; /* NULL = $TMPDIR or /tmp */
    char *const *uploads_forbid, *const *uploads_allow;
    uid_t uploads_uid; /* the temp files are chowned when both are non-zero */
    gid_t uploads_gid;
    /* http.trusted_subnets, only when the proxy_ip_parser middleware is listed; NULL = off */
    char *const *trusted_subnets;
    /* http.ssl */
    fl_tls_ctx_t *tls;  /* for connections accepted on the TLS listener */
    bool ssl_redirect;  /* plain connections get 308 to https */
    unsigned ssl_port;
    fl_static_opts_t static_files; /* http.static; dir NULL = off */
} fl_http_opts_t;

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned bits;
} fl_cidr_t;

typedef struct fl_http_server {
    fl_loop_t *loop;
    fl_pool_t *pool;
    fl_http_opts_t o;
    fl_conn_t *conns;   /* all open connections */
    fl_conn_t *flushq;  /* connections with output queued since the last flush */
    fl_conn_t *closed;  /* closed this loop turn: freed at the end of the next flush */
    unsigned nconns;
    unsigned inflight;  /* requests handed to the pool, not answered yet */
    bool stopping;
    /* The listener has TCP_DEFER_ACCEPT (set by the reactor): a new connection's request is read
     * at once, and its socket only joins the epoll set when there is something to wait for. */
    bool defer_accept;
    int64_t drain_ms;         /* when draining began */
    fl_upload_conf_t uploads; /* from the opts, dir made absolute */
    char *uploads_dir;
    fl_cidr_t *trusted;
    size_t ntrusted;
    void (*on_drained)(struct fl_http_server *s, void *data);
    void *data;
} fl_http_server_t;

void fl_http_init(fl_http_server_t *s, fl_loop_t *loop, fl_pool_t *pool, const fl_http_opts_t *o);
/* Takes ownership of an accepted, non-blocking socket; tls: it came from the TLS listener. */
void fl_http_accept(fl_http_server_t *s, int fd, const struct sockaddr *sa, socklen_t salen,
                    bool tls);
/* Writes everything queued; called once per loop iteration, just before sleeping. */
void fl_http_flush(fl_http_server_t *s);
/* Graceful stop: idle connections close now, busy ones after their response; on_drained
 * once none is left. */
void fl_http_drain(fl_http_server_t *s);
/* Hard stop: close everything now. */
void fl_http_close_all(fl_http_server_t *s);
/* Frees what fl_http_init allocated (after fl_http_close_all). */
void fl_http_free(fl_http_server_t *s);
/* "10.0.0.0/8" → binary; 0, or -1 when it is not a CIDR. */
int fl_cidr_parse(const char *s, fl_cidr_t *out);

/* For modules that answer a complete request themselves (reactor/static.c). */
fl_slice_t fl_conn_method(const fl_conn_t *c);
fl_slice_t fl_conn_target(const fl_conn_t *c);
/* The first value of a request header (case-insensitive name); base NULL when absent. */
fl_slice_t fl_conn_header(const fl_conn_t *c, const char *name);
/* A whole answer. headers: "Name: value\r\n" lines; Date, Content-Length and Connection are
 * added; a HEAD request gets the head only. */
void fl_conn_respond(fl_conn_t *c, int status, fl_slice_t headers, fl_slice_t body);
/* The body is len bytes of fd from off, sent after the head (sendfile). Takes fd. */
void fl_conn_respond_file(fl_conn_t *c, int status, fl_slice_t headers, int fd, uint64_t off,
                          uint64_t len);

#endif

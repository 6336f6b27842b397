/* The HTTP/1.1 server side of a reactor: connections, llhttp parsing, requests handed to the
 * local PHP pool, responses written in order (pipelining), keep-alive. */
#ifndef FL_HTTP_H
#define FL_HTTP_H

#include <sys/socket.h>

#include "ev.h"
#include "pool.h"

typedef struct fl_conn fl_conn_t;

typedef struct {
    int internal_error_code;
    uint64_t max_request_size;
    int codec; /* 0 = protobuf http.v1, 1 = legacy JSON */
    bool debug;
    int64_t keepalive_timeout_ms;
} fl_http_opts_t;

typedef struct fl_http_server {
    fl_loop_t *loop;
    fl_pool_t *pool;
    fl_http_opts_t o;
    fl_conn_t *conns;   /* all open connections */
    fl_conn_t *flushq;  /* connections with output queued since the last flush */
    unsigned nconns;
    unsigned inflight;  /* requests handed to the pool, not answered yet */
    bool stopping;
    void (*on_drained)(struct fl_http_server *s, void *data);
    void *data;
} fl_http_server_t;

void fl_http_init(fl_http_server_t *s, fl_loop_t *loop, fl_pool_t *pool, const fl_http_opts_t *o);
/* Takes ownership of an accepted, non-blocking socket. */
void fl_http_accept(fl_http_server_t *s, int fd, const struct sockaddr *sa, socklen_t salen);
/* Writes everything queued; called once per loop iteration, just before sleeping. */
void fl_http_flush(fl_http_server_t *s);
/* Graceful stop: idle connections close now, busy ones after their response; on_drained
 * once none is left. */
void fl_http_drain(fl_http_server_t *s);
/* Hard stop: close everything now. */
void fl_http_close_all(fl_http_server_t *s);

#endif

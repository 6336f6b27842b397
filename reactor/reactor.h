/* A reactor process: one epoll loop that accepts on the shared listening socket, serves
 * HTTP/1.1 and runs its own pool of PHP workers. It talks to the master over one channel. */
#ifndef FL_REACTOR_H
#define FL_REACTOR_H

#include "http.h"
#include "pool.h"

/* Channel messages (SOCK_SEQPACKET: one message per send, text). */
#define FL_MSG_READY "READY"       /* reactor → master: pool warm, accepting */
#define FL_MSG_FAIL "FAIL "        /* reactor → master: start-up failed, then the reason */
#define FL_MSG_RESET "RESET"       /* master → reactor: rolling restart of its PHP workers */

typedef struct {
    unsigned slot;
    int listen_fd;
    int ssl_listen_fd; /* http.ssl listener, -1 when there is none (TLS context in http.tls) */
    int chan_fd;
    fl_pool_opts_t pool;     /* argv, envp, sizes, timeouts; callbacks are the reactor's */
    fl_pool_opts_t jobs_pool; /* RR_MODE=jobs pool (reactor/jobs.c); num_workers 0 = none */
    fl_http_opts_t http;
    int64_t grace_period_ms; /* how long a graceful stop may take */
} fl_reactor_opts_t;

/* Runs the reactor until it is stopped; returns the process exit code. */
int fl_reactor_main(const fl_reactor_opts_t *o);

/* Exit codes the master understands. */
#define FL_REACTOR_EXIT_OK 0
#define FL_REACTOR_EXIT_STARTUP 3 /* the PHP pool could not start: do not respawn blindly */

#endif

/* A tiny HTTP/1.x server on the master's loop for the metrics and status endpoints: GET only,
 * one request per connection (Connection: close), bounded request head and a timeout. Not for
 * user traffic - that is the reactors' job. Listening fds are closed in forked children. */
#ifndef FL_MHTTP_H
#define FL_MHTTP_H

#include "ev.h"
#include "fl.h"

typedef struct {
    int status;        /* 200 */
    const char *ctype; /* "text/plain; charset=utf-8" */
    fl_buf_t body;
} fl_mhttp_resp_t;

/* method "GET", path without the query, query without '?'. Fills resp. */
typedef void (*fl_mhttp_fn)(void *ctx, fl_slice_t method, fl_slice_t path, fl_slice_t query,
                            fl_mhttp_resp_t *resp);

typedef struct fl_mhttp fl_mhttp_t;

/* addr "host:port" (":port" = all interfaces). NULL with err filled. */
fl_mhttp_t *fl_mhttp_listen(fl_loop_t *loop, const char *addr, int64_t timeout_ms, fl_mhttp_fn fn,
                            void *ctx, char *err, size_t errlen);
/* A reload changed the timeout: it applies to the connections accepted from now on. */
void fl_mhttp_set_timeout(fl_mhttp_t *s, int64_t timeout_ms);
void fl_mhttp_free(fl_mhttp_t *s);

#endif

/* Built-in server metrics (issue 10; names in docs/metrics.md): HTTP requests by status class and
 * method, a request-duration histogram, body bytes in/out, PHP workers by state, queue depth and
 * worker restarts by reason per pool - counted by the reactors, summed by the master at scrape
 * time, with no message per request.
 *
 * How: before it forks any reactor, the master maps one shared anonymous segment
 * (MAP_SHARED|MAP_ANONYMOUS) of FL_SRVM_SLOTS cache-line-aligned slots. Each reactor process gets
 * a slot of its own at fork and is its only writer (plain relaxed atomic load + store: no locked
 * instruction on the hot path); the master only reads. When a reactor exits, the master folds
 * its counters into a private total and frees the slot, so counters never go backwards across
 * reloads and respawns, and gauges vanish with their process.
 *
 * The reactor-side hooks are inline and reach the segment through a weak pointer: code that does
 * not link this module (unit tests of pool.c) runs them as no-ops. */
#ifndef FL_SRVMETRICS_H
#define FL_SRVMETRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "fl.h"
#include "pool.h"

enum { FL_SRVM_HTTP, FL_SRVM_JOBS, FL_SRVM_POOLS };
/* GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE, then "other" (and unparsed requests). */
#define FL_SRVM_METHODS 10
#define FL_SRVM_CLASSES 5   /* 1xx .. 5xx */
#define FL_SRVM_NBUCKETS 11 /* Prometheus' default buckets; one more slot for +Inf */
#define FL_SRVM_SLOTS 2048  /* reactors of every live generation, respawns reuse freed slots */

typedef struct {
    /* counters */
    uint64_t requests[FL_SRVM_METHODS][FL_SRVM_CLASSES];
    uint64_t dur_bucket[FL_SRVM_CLASSES][FL_SRVM_NBUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t dur_sum_ns[FL_SRVM_CLASSES];
    uint64_t bytes_in, bytes_out; /* request and response bodies, as the access log counts */
    uint64_t restarts[FL_SRVM_POOLS][FL_W_NSTATES]; /* by the state that ended the worker */
    /* gauges: what the owning reactor has now */
    int64_t workers[FL_SRVM_POOLS][FL_W_NSTATES];
    int64_t queued[FL_SRVM_POOLS];
} fl_srvm_counters_t;

typedef struct {
    _Alignas(64) fl_srvm_counters_t c; /* no false sharing between reactors */
} fl_srvm_slot_t;

extern const uint64_t fl_srvm_bucket_ns[FL_SRVM_NBUCKETS];
extern const char *const fl_srvm_method_names[FL_SRVM_METHODS];

/* ---- reactor side: the slot this process writes, NULL in the master or without metrics ---- */

extern fl_srvm_slot_t *fl_srvm_self __attribute__((weak));

static inline fl_srvm_counters_t *fl_srvm_mine(void)
{
    return &fl_srvm_self && fl_srvm_self ? &fl_srvm_self->c : NULL;
}

/* Single writer: a relaxed load and store, so the master never reads a torn value. */
#define FL_SRVM_ADD(field, n)                                                                      \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define FL_SRVM_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

static inline uint64_t fl_srvm_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int fl_srvm_pool(const char *name)
{
    return name && strcmp(name, "jobs") == 0 ? FL_SRVM_JOBS : FL_SRVM_HTTP;
}

static inline int fl_srvm_method(const char *m)
{
    for (int i = 0; m && i < FL_SRVM_METHODS - 1; i++)
        if (strcmp(m, fl_srvm_method_names[i]) == 0)
            return i;
    return FL_SRVM_METHODS - 1;
}

/* A response is complete (reactor/http.c). *t0: fl_srvm_clock() when its head was parsed, 0 if
 * it never was; it is reset here. method NULL: the request did not parse. */
static inline void fl_srvm_http_done(uint64_t *t0, const char *method, int status, uint64_t in,
                                     uint64_t out)
{
    fl_srvm_counters_t *c = fl_srvm_mine();
    uint64_t start = *t0;
    *t0 = 0;
    if (!c)
        return;
    int k = status >= 100 && status < 600 ? status / 100 - 1 : FL_SRVM_CLASSES - 1;
    uint64_t ns = start ? fl_srvm_clock() - start : 0;
    int b = 0;
    while (b < FL_SRVM_NBUCKETS && ns > fl_srvm_bucket_ns[b])
        b++;
    FL_SRVM_ADD(c->requests[fl_srvm_method(method)][k], 1);
    FL_SRVM_ADD(c->dur_bucket[k][b], 1);
    FL_SRVM_ADD(c->dur_sum_ns[k], ns);
    FL_SRVM_ADD(c->bytes_in, in);
    FL_SRVM_ADD(c->bytes_out, out);
}

/* A worker moved from state `from` to `to` (reactor/pool.c); -1 = it did not exist / is gone.
 * Leaving a live state for one that ends the worker counts a restart by that reason, unless
 * the pool is stopping (a shutdown is not a restart). Its stop after an INVALID mark (it asked
 * to stop) counts as "invalid". */
static inline void fl_srvm_worker(const char *pool, int from, int to, bool stopping)
{
    fl_srvm_counters_t *c = fl_srvm_mine();
    if (!c)
        return;
    int p = fl_srvm_pool(pool);
    if (from >= 0 && from < FL_W_NSTATES)
        FL_SRVM_ADD(c->workers[p][from], -1);
    if (to >= 0 && to < FL_W_NSTATES)
        FL_SRVM_ADD(c->workers[p][to], 1);
    bool live =
        from == FL_W_INACTIVE || from == FL_W_READY || from == FL_W_WORKING || from == FL_W_INVALID;
    bool ends = to > FL_W_INVALID && to != FL_W_STOPPED && to < FL_W_NSTATES;
    if (!stopping && live && ends)
        FL_SRVM_ADD(c->restarts[p][to == FL_W_STOPPING ? FL_W_INVALID : to], 1);
}

/* Tasks waiting for a worker in that pool (reactor/pool.c). */
static inline void fl_srvm_queue(const char *pool, unsigned n)
{
    fl_srvm_counters_t *c = fl_srvm_mine();
    if (c)
        FL_SRVM_SET(c->queued[fl_srvm_pool(pool)], (int64_t)n);
}

/* ---- master side ---- */

/* Maps the segment (once; later calls do nothing). jobs: render the jobs pool and broker
 * families too. 0, or -1 when mmap fails. */
int fl_srvm_init(bool jobs);
bool fl_srvm_enabled(void);
/* Around fork() of a reactor: slot = fl_srvm_acquire() before (-1 when off or full), then
 * fl_srvm_forked(slot, pid) in both processes (pid 0: the child binds it; < 0: fork failed). */
int fl_srvm_acquire(void);
void fl_srvm_forked(int slot, pid_t pid);
/* A child of the master was reaped: if it owned a slot, fold its counters into the totals. */
void fl_srvm_exited(pid_t pid);
/* Totals plus every live slot. */
void fl_srvm_sum(fl_srvm_counters_t *out);
/* Appends the text exposition of the built-in families. 0, or -1 (out of memory). */
int fl_srvm_render(fl_buf_t *out);
void fl_srvm_free(void);

/* The jobs broker (master/jobs.c): a job of that pipeline was pushed, acked, nacked and
 * requeued, or nacked and dropped (dead). Weak: a no-op where not linked. */
enum {
    FL_SRVM_JOB_PUSHED,
    FL_SRVM_JOB_ACKED,
    FL_SRVM_JOB_NACKED,
    FL_SRVM_JOB_DEAD,
    FL_SRVM_JOB_NCOUNTS
};
void fl_srvm_job_count(const char *pipeline, int what) __attribute__((weak));
static inline void fl_srvm_job(const char *pipeline, int what)
{
    if (fl_srvm_job_count)
        fl_srvm_job_count(pipeline, what);
}

/* An RPC call was dispatched to a method (master/rpc.c); weak: a no-op where not linked. */
void fl_srvm_rpc_call(const char *method) __attribute__((weak));
static inline void fl_srvm_rpc(const char *method)
{
    if (fl_srvm_rpc_call)
        fl_srvm_rpc_call(method);
}

#endif

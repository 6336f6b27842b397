/* A reactor's local pool of long-lived PHP workers: spawn + PID handshake, one task in flight
 * per worker, a FIFO of tasks waiting for a worker, replacement of workers that die. */
#ifndef FL_POOL_H
#define FL_POOL_H

#include <stdbool.h>
#include <sys/types.h>

#include "ev.h"
#include "fl.h"
#include "frame.h"

typedef struct fl_pool fl_pool_t;
typedef struct fl_worker fl_worker_t;
typedef struct fl_task fl_task_t;

/* Worker states, numbered as RoadRunner's informer reports them (spec §3.8). */
enum {
    FL_W_INACTIVE = 0,
    FL_W_READY = 1,
    FL_W_WORKING = 2,
    FL_W_INVALID = 3,
    FL_W_STOPPING = 4,
    FL_W_STOPPED = 5,
};

/* Why a task failed: the caller maps it to a status. Static strings, compared by identity. */
extern const char fl_task_err_worker[];     /* the worker sent an ERROR frame */
extern const char fl_task_err_died[];       /* the worker died or broke the protocol mid-task */
extern const char fl_task_err_no_workers[]; /* none free within allocate_timeout */
extern const char fl_task_err_queue_full[]; /* max_queue_size reached */
extern const char fl_task_err_stopping[];   /* the pool is shutting down */

struct fl_task {
    fl_buf_t frame; /* the encoded task frame, owned by the submitter */
    /* One call per data frame of the answer; f->stream & FL_STREAM_MORE says more follow. */
    void (*on_frame)(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body);
    /* The task failed; why is one of the fl_task_err_* strings, detail a message. */
    void (*on_fail)(fl_task_t *t, const char *why, fl_slice_t detail);
    void *data;
    /* pool-private */
    fl_pool_t *pool;
    fl_worker_t *worker;
    fl_task_t *qnext, *qprev;
    fl_timer_id timer;
    bool queued;
};

typedef struct {
    char **argv;
    char **envp;
    unsigned num_workers;
    unsigned max_jobs;       /* 0 = unlimited */
    unsigned max_queue_size; /* 0 = unlimited */
    int64_t allocate_timeout_ms;
    int64_t destroy_timeout_ms;
    uint32_t max_frame;      /* largest payload accepted from a worker */
    const char *name;        /* "http" */
    /* Called once every initial worker answered the handshake. */
    void (*on_ready)(fl_pool_t *p, void *data);
    /* Start-up failed: the command cannot run or a first worker died before its handshake. */
    void (*on_fatal)(fl_pool_t *p, const char *msg, void *data);
    /* A worker became idle (the reactor may resume accepting). */
    void (*on_idle)(fl_pool_t *p, void *data);
    /* Every worker is gone after fl_pool_shutdown. */
    void (*on_stopped)(fl_pool_t *p, void *data);
    void *data;
} fl_pool_opts_t;

fl_pool_t *fl_pool_new(fl_loop_t *loop, const fl_pool_opts_t *o);
int fl_pool_start(fl_pool_t *p);
void fl_pool_submit(fl_pool_t *p, fl_task_t *t);
/* The submitter lost interest (client gone): a queued task is dropped, a running one detached. */
void fl_pool_cancel(fl_pool_t *p, fl_task_t *t);
/* A child exited (from the reactor's SIGCHLD handling); returns true if it was ours. */
bool fl_pool_reaped(fl_pool_t *p, pid_t pid, int status);
unsigned fl_pool_idle(const fl_pool_t *p);
unsigned fl_pool_queued(const fl_pool_t *p);
unsigned fl_pool_size(const fl_pool_t *p);
/* Soft-stop every worker (stop frame, then SIGKILL after destroy_timeout); on_stopped at the end. */
void fl_pool_shutdown(fl_pool_t *p);
void fl_pool_free(fl_pool_t *p);

#endif

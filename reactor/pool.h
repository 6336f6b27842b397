/* A reactor's local pool of long-lived PHP workers: spawn + PID handshake, one task in flight
 * per worker, a FIFO of tasks waiting for a worker, the worker state machine of RoadRunner's
 * pool (spec goridge §3.8, rr-config §5), the supervisor (ttl, idle_ttl, exec_ttl, memory),
 * rolling reset, and replacement of workers that die. */
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
    FL_W_INACTIVE = 0,    /* spawned, handshake not finished */
    FL_W_READY = 1,       /* idle */
    FL_W_WORKING = 2,     /* executing a task */
    FL_W_INVALID = 3,     /* marked for removal once its current task is done */
    FL_W_STOPPING = 4,    /* stop frame sent, waiting for the exit */
    FL_W_STOPPED = 5,     /* exited */
    FL_W_DESTROYED = 6,   /* removed on purpose (reset, shutdown): not replaced by the pool */
    FL_W_MAX_JOBS = 7,    /* max_jobs reached */
    FL_W_ERRORED = 8,     /* protocol error, relay error, unexpected exit */
    FL_W_IDLE_TTL = 9,    /* supervisor.idle_ttl reached */
    FL_W_TTL = 10,        /* supervisor.ttl reached */
    FL_W_MAX_MEMORY = 11, /* supervisor.max_worker_memory reached */
    FL_W_EXEC_TTL = 12,   /* supervisor.exec_ttl elapsed: killed */
    FL_W_NSTATES
};

/* "ready", "maxJobsReached", ... (RoadRunner's statusStr). */
const char *fl_worker_status_str(int status);
/* The transition table of rr-config §5.1: may a worker in state from move to state to? */
bool fl_worker_transition_allowed(int from, int to);

/* Why a task failed: the caller maps it to a status. Static strings, compared by identity. */
extern const char fl_task_err_worker[];     /* the worker sent an ERROR frame */
extern const char fl_task_err_died[];       /* the worker died or broke the protocol mid-task */
extern const char fl_task_err_exec_ttl[];   /* supervisor.exec_ttl elapsed: the worker was killed */
extern const char fl_task_err_no_workers[]; /* none free within allocate_timeout */
extern const char fl_task_err_queue_full[]; /* max_queue_size reached */
extern const char fl_task_err_stopping[];   /* the pool is shutting down */

struct fl_task {
    fl_buf_t frame; /* the encoded task frame, owned by the submitter */
    /* Bytes written right after frame, part of its payload (counted in the header): a big
     * request body goes to the worker from where it was collected, not copied into frame.
     * Borrowed like frame; empty for most tasks. */
    fl_slice_t tail;
    /* What the task is about, for log lines ("exec_ttl elapsed ... /slow?x=1"); borrowed,
     * must stay valid while the task is with the pool. May be empty. */
    fl_slice_t label;
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
    unsigned max_jobs;       /* 0 = unlimited; a 0-14 % jitter is added per worker */
    unsigned max_queue_size; /* tasks waiting for a worker; 0 = unlimited */
    int64_t allocate_timeout_ms;
    int64_t destroy_timeout_ms; /* shutdown: how long busy workers may finish */
    int64_t reset_timeout_ms;   /* reset: how long busy old workers may finish */
    uint32_t max_frame;         /* largest payload accepted from a worker */
    bool debug;                 /* a fresh worker per task, spawned on demand */
    /* Supervisor; watch_tick_ms 0 = no supervisor (the config has no supervisor section). */
    int64_t watch_tick_ms, ttl_ms, idle_ttl_ms, exec_ttl_ms;
    int64_t stream_timeout_ms;  /* after a stream STOP: wait for its end, then kill; 0 = none */
    uint64_t max_worker_memory; /* bytes of RSS, 0 = no limit; a soft limit */
    bool set_ids;               /* run workers as uid/gid (server.user, needs root) */
    uid_t uid;
    gid_t gid;
    const char *name; /* "http" */
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

/* One worker as the informer shows it (informer.Workers). */
typedef struct {
    pid_t pid;
    int status;             /* FL_W_* */
    const char *status_str; /* fl_worker_status_str(status) */
    uint64_t num_execs;
    int64_t created_ns; /* unix time in ns */
    uint64_t rss;       /* resident memory in bytes (/proc/PID/statm), 0 if unknown */
} fl_worker_info_t;

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
/* Up to max live workers (retiring ones included) into out; returns how many were written. */
size_t fl_pool_workers(const fl_pool_t *p, fl_worker_info_t *out, size_t max);
/* Rolling restart of every worker (rr reset): for each one a replacement is spawned first; the
 * old worker keeps serving until its replacement is ready, then it is stopped (a busy one after
 * its task, or killed once reset_timeout elapsed). No task fails because of a reset. */
void fl_pool_reset(fl_pool_t *p);
/* informer.AddWorker: one more worker slot, its worker spawned now. The new size holds for the
 * pool's life: a worker that dies is replaced, a reset replaces every slot. 0, or -1 (stopping,
 * out of memory). */
int fl_pool_add_worker(fl_pool_t *p);
/* informer.RemoveWorker: one slot fewer without failing a request: an empty or booting slot goes
 * at once, else an idle worker is stopped gracefully, else the next worker to finish its task.
 * -1 when the pool would be left without a worker, or is stopping. */
int fl_pool_remove_worker(fl_pool_t *p);
/* The pool has the size asked for: every slot's worker is up, no removal waits, and every
 * removed worker has exited. */
bool fl_pool_settled(const fl_pool_t *p);
/* Soft-stop every worker: idle ones now, busy ones after their task, all killed after
 * destroy_timeout; on_stopped at the end. */
void fl_pool_shutdown(fl_pool_t *p);
void fl_pool_free(fl_pool_t *p);

#endif

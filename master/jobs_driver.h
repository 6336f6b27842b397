/* The jobs broker's storage drivers (master/jobs.c ↔ its drivers): a pipeline keeps its jobs in
 * a driver (memory in jobs.c, redis in jobs_redis.c) behind this small vtable, and the broker
 * core does the rest — the local queue of ready jobs, fair dispatch to the reactors, jobs in
 * flight, the RPC methods.
 *
 * A driver feeds ready jobs into the core's queue (fl_jobs_ready_put: memory when a job is
 * pushed or due, redis when it read entries from its stream) and hears back from the core how
 * each job it handed out ended: ack, retry (counts an attempt), drop, or back (never reached a
 * worker: no attempt). */
#ifndef FL_JOBS_DRIVER_H
#define FL_JOBS_DRIVER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ev.h"
#include "hmap.h"

typedef struct fl_jpipe fl_jpipe_t;
typedef struct fl_job fl_job_t;

struct fl_job {
    fl_job_t *next;
    char *id, *name;
    cJSON *headers; /* object of string lists, or NULL */
    uint8_t *payload;
    size_t plen;
    int64_t prio;      /* lower first */
    int64_t delay_s;   /* push: how long to wait before it is ready */
    int64_t due_ms;    /* memory: delayed until (monotonic) */
    uint64_t seq;      /* in flight: the id the reactor answers with */
    uint32_t attempts; /* failed runs so far */
    fl_jpipe_t *p;
    void *peer;      /* in flight: the reactor it went to */
    fl_hnode_t node; /* redis: in the driver's set of held entries, keyed by ref */
    char ref[48];    /* redis: the stream entry id */
    char rop;        /* redis: the broker command under way for it (0: none) */
    int64_t rdue;    /* redis: a retry's due time (Unix ms) */
    char *note;      /* redis: why it failed (dead-letter reason); owned */
};

typedef struct {
    int64_t active, delayed, reserved;
    char error[200]; /* informer.Jobs ErrorMessage; "" when fine */
} fl_jstat_t;

typedef void (*fl_jdone_cb)(void *ctx, const char *err); /* err NULL: stored */
typedef void (*fl_jstat_cb)(void *ctx, const fl_jstat_t *st);

typedef struct {
    const char *name; /* "memory": the context's "driver" */
    /* p->conf is filled (defaults included); sets p->queue. 0, or -1 with errbuf. */
    int (*open)(fl_jpipe_t *p, char *errbuf, size_t errlen);
    /* Stores a list of checked jobs (next-linked, delay_s set; ownership moves in); done is
     * called exactly once, maybe before push returns. */
    void (*push)(fl_jpipe_t *p, fl_job_t *list, fl_jdone_cb done, void *ctx);
    void (*ack)(fl_jpipe_t *p, fl_job_t *j);
    /* The run failed or the worker asked for it again: one more attempt after delay_s, unless
     * max_attempts is reached. why: a short text for logs and the dead-letter entry. */
    void (*retry)(fl_jpipe_t *p, fl_job_t *j, int64_t delay_s, const char *why);
    void (*drop)(fl_jpipe_t *p, fl_job_t *j, const char *why);
    /* Never reached a worker (pool stopping, reactor gone): no attempt is counted. */
    void (*back)(fl_jpipe_t *p, fl_job_t *j);
    /* The pipeline's state changed (capacity freed, resumed, paused): fetch if it wants. */
    void (*kick)(fl_jpipe_t *p);
    /* Counts for jobs.Stat and informer.Jobs; cb exactly once. */
    void (*stat)(fl_jpipe_t *p, fl_jstat_cb cb, void *ctx);
    /* The best counts known right now, without asking the broker. */
    void (*stat_now)(fl_jpipe_t *p, fl_jstat_t *st);
    /* May p (opened with conf a) take conf b without a new driver (only the core's options,
     * max_attempts and timeouts differ)? */
    bool (*same)(const struct fl_conf_pipeline *a, const struct fl_conf_pipeline *b);
    /* A reload kept p but replaced p->conf with the new config's: fill its defaults again. */
    void (*refill)(fl_jpipe_t *p);
    /* Destroyed or stopping: give undelivered jobs back to the broker, let jobs in flight
     * finish, then call fl_jobs_pipe_gone(p) (maybe from inside close). */
    void (*close)(fl_jpipe_t *p);
    /* Commands still on the wire (the master waits for them before it exits). */
    unsigned (*busy)(void);
    /* The master exits: free every connection and state (pipelines are freed after). */
    void (*shutdown)(void);
} fl_jdriver_t;

struct fl_jpipe {
    char *name;
    struct fl_conf_pipeline conf; /* owned copy */
    const fl_jdriver_t *drv;
    void *ds;          /* the driver's state */
    const char *queue; /* the context's "queue" (memory: the name; redis: the stream key) */
    bool paused, dead, from_conf;
    fl_job_t *head, *tail; /* ready, by job priority then FIFO */
    size_t nready, ndelayed, nreserved;
    uint64_t pass; /* stride scheduling, see jobs.h */
    fl_jpipe_t *next;
};

/* ---- the core, for drivers ---- */
fl_loop_t *fl_jobs_loop(void);
/* A job became ready (read from the broker, or due). */
void fl_jobs_ready_put(fl_jpipe_t *p, fl_job_t *j);
/* Takes every ready job off p's queue (a list linked by next). */
fl_job_t *fl_jobs_ready_take_all(fl_jpipe_t *p);
/* Hand ready jobs to the reactors now. */
void fl_jobs_dispatch(void);
fl_job_t *fl_jobs_job_new(void);
void fl_jobs_job_free(fl_job_t *j);
/* The driver finished closing p: the core frees it. */
void fl_jobs_pipe_gone(fl_jpipe_t *p);
/* Another (closing) pipeline of the same name still has jobs: a durable driver waits for it
 * before it re-reads what the broker holds for this consumer. */
bool fl_jobs_name_busy(const fl_jpipe_t *p);
/* Whether p should take jobs from its broker now (consuming, not paused, not destroyed). */
bool fl_jobs_wants(const fl_jpipe_t *p);

extern const fl_jdriver_t fl_jobs_memory;
extern const fl_jdriver_t fl_jobs_redis;

#endif

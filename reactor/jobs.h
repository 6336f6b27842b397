/* A reactor's jobs pool (RR_MODE=jobs): jobs come from the master's broker (master/jobs.c) over
 * the channel, each becomes a task frame (spec §7.1) for a local PHP worker, and the worker's
 * answer (§7.2) goes back to the master as an ack, a drop or a requeue.
 *
 * Channel messages (SOCK_SEQPACKET, one per send):
 *   reactor → master  "JCAP <n>"             how many jobs it takes at once (0 = stopping)
 *   master → reactor  "JOB <seq> <ctxlen> <plen>\n" + context JSON + payload; the jobs of one
 *                     dispatch travel in one message (up to 32 KiB, or one bigger job)
 *   reactor → master  "JDONE <seq> <kind> <delay_s> <hlen> <rlen>\n" + headers JSON (hlen
 *                     bytes) + reason text (rlen bytes); several records per message (one
 *                     message per loop turn, fl_rjobs_flush), kind:
 *                     a  ack
 *                     d  drop: nack without requeue, an ERROR frame, a streamed answer
 *                     r  requeue asked by the worker (nack with requeue, type 4) after delay_s,
 *                        the headers merged into the job's; counts an attempt
 *                     f  the run failed: the worker died mid-job or ran past jobs.timeout (and
 *                        was killed); requeued, counts an attempt
 *                     b  back: it never reached a worker (pool stopping, no worker in time);
 *                        requeued without counting an attempt */
#ifndef FL_REACTOR_JOBS_H
#define FL_REACTOR_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "pool.h"

#define FL_MSG_JCAP "JCAP "
#define FL_MSG_JOB "JOB "
#define FL_MSG_JDONE "JDONE "
/* A job message (context + payload + header) is at most this big: jobs.Push refuses larger
 * payloads, so one job is always one channel message. */
#define FL_JOBS_MSG_MAX (128 * 1024)

typedef struct fl_rjobs fl_rjobs_t;

/* pool: the reactor's jobs pool (already created); chan_fd: the channel to the master. */
fl_rjobs_t *fl_rjobs_new(fl_loop_t *loop, fl_pool_t *pool, int chan_fd, unsigned slot);
/* The pool is warm: announce the capacity. */
void fl_rjobs_ready(fl_rjobs_t *j);
/* informer.AddWorker (+1) / RemoveWorker (-1) was accepted by the pool: announce the capacity
 * of the new size (a lower one before the removed worker is gone, so it gets nothing new). */
void fl_rjobs_scaled(fl_rjobs_t *j, int delta);
/* Stopping: announce capacity 0 (queued tasks fail with "stopping" and are requeued). */
void fl_rjobs_stop(fl_rjobs_t *j);
/* Sends the answers gathered this loop turn (the reactor's before-sleep hook). */
void fl_rjobs_flush(fl_rjobs_t *j);
/* A channel message; false if it is not a jobs message. */
bool fl_rjobs_msg(fl_rjobs_t *j, const char *msg, size_t n);
void fl_rjobs_free(fl_rjobs_t *j);

/* §7.2 decision for one worker answer (body = the ack JSON); exposed for unit tests. */
typedef struct {
    char kind;     /* 'a' ack, 'd' drop, 'r' requeue */
    long delay;    /* seconds */
    char *headers; /* JSON object text to merge, or NULL (cJSON_free) */
    char *message; /* data.message, or NULL (cJSON_free) */
} fl_rjobs_answer_t;
/* Returns a static log message for odd answers, or NULL. */
const char *fl_rjobs_decide(const char *body, size_t len, fl_rjobs_answer_t *a);

#endif

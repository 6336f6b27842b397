/* A reactor's jobs pool (RR_MODE=jobs): jobs come from the master's broker (master/jobs.c) over
 * the channel, each becomes a task frame (spec §7.1) for a local PHP worker, and the worker's
 * answer (§7.2) goes back to the master as an ack, a drop or a requeue.
 *
 * Channel messages (SOCK_SEQPACKET, one per send):
 *   reactor → master  "JCAP <n>"             how many jobs it takes at once (0 = stopping)
 *   master → reactor  "JOB <seq> <ctxlen>\n" + context JSON + payload
 *   reactor → master  "JDONE <seq> <a|d|r> <delay_s> [headers JSON]"
 *                     a = ack, d = drop (nack without requeue), r = requeue after delay_s with
 *                     the headers merged into the job's. */
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
/* Stopping: announce capacity 0 (queued tasks fail with "stopping" and are requeued). */
void fl_rjobs_stop(fl_rjobs_t *j);
/* A channel message; false if it is not a jobs message. */
bool fl_rjobs_msg(fl_rjobs_t *j, const char *msg, size_t n);
void fl_rjobs_free(fl_rjobs_t *j);

/* §7.2 decision for one worker answer (body = the ack JSON); exposed for unit tests.
 * kind: 'a' ack, 'd' drop, 'r' requeue; *delay seconds; *headers the malloc'd JSON object text
 * to merge (or NULL). Returns a static log message for odd answers, or NULL. */
const char *fl_rjobs_decide(const char *body, size_t len, char *kind, long *delay, char **headers);

#endif

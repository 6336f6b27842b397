/* The jobs broker of the master (issue 8): pipelines from jobs.pipelines (or declared over RPC),
 * the jobs.* RPC methods (protobuf jobs.v1, spec §9.3), informer.Jobs, and dispatch of ready
 * jobs to the reactors' jobs pools over their channels (messages in reactor/jobs.h).
 *
 * Storage is a driver per pipeline (jobs_driver.h):
 * - memory: jobs live only in the master's memory and are lost when the master stops or is
 *   killed (by nature). At most jobs.pipeline_size queued per pipeline (pushes beyond are
 *   refused).
 * - redis (jobs_redis.c, docs/jobs-redis.md): a Redis stream per pipeline read through a
 *   consumer group; durable, at-least-once, retries with a dead-letter stream.
 * Delivery is at-least-once: a job leaves its driver only on the reactor's ack; a worker that
 * dies mid-job or runs past jobs.timeout, a reactor that dies, or a pool that stops with the job
 * queued sends it back, so it can run twice if a worker dies after its side effects but before
 * its ack.
 *
 * Fairness: among pipelines with ready jobs and room under their prefetch, the one with the
 * smallest "pass" is served and its pass grows by its priority (stride scheduling): a pipeline
 * of priority 1 gets ten turns for each turn of a pipeline of priority 10 while both have work,
 * so a flooded pipeline slows another one down to its share but never starves it. Within a
 * pipeline, lower job priority first (0 inherits the pipeline's), FIFO among equals (a redis
 * pipeline is FIFO: the stream's order). */
#ifndef FL_JOBS_H
#define FL_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "rpc.h"

/* rpc may be NULL. 0, or -1 with err filled. */
int fl_jobs_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
/* A reload was committed: apply the new config's jobs section (see jobs.c). */
void fl_jobs_reconfigure(const fl_conf_t *c);
void fl_jobs_stop(void);
/* A message from a reactor channel; peer identifies the reactor (its slot), fd is the channel.
 * Returns false if it is not a jobs message. */
bool fl_jobs_chan_msg(void *peer, int fd, const char *msg, size_t n);
/* The reactor's channel closed: its jobs in flight go back to their pipelines. */
void fl_jobs_chan_gone(void *peer);
/* informer.Jobs as a JSON array into out, at once (a durable driver gives its last known
 * counts; the RPC method asks the broker). 0, or -1 when out of memory. */
int fl_jobs_informer(fl_buf_t *out);

#endif

/* The reactor's side of the master's `informer` and `resetter` RPC services (master/rpc.h): the
 * master asks every reactor over its channel and gathers the answers.
 *
 *   master → reactor   "WORKERS <id>"           reactor → master  "WORKERS <id> [{...},...]"
 *   master → reactor   "RESET <id>"             reactor → master  "RESET-DONE <id>[ <error>]"
 *   master → reactor   "SCALE <id> +1" / "-1"   reactor → master  "SCALE-DONE <id>[ <error>]"
 *
 * A reset is done when every worker the pool lists was spawned after the reset began and has
 * finished its handshake (the old ones are gone, not merely asked to go). A scale (informer.
 * AddWorker / RemoveWorker) is done when the pool has its new size: the added worker is up, the
 * removed one has exited (fl_pool_settled). */
#ifndef FL_INFORMER_H
#define FL_INFORMER_H

#include <stdbool.h>
#include <stddef.h>

#include "ev.h"
#include "pool.h"

#define FL_MSG_WORKERS "WORKERS "
#define FL_MSG_RESET_ID "RESET "
#define FL_MSG_RESET_DONE "RESET-DONE "
#define FL_MSG_SCALE "SCALE "
#define FL_MSG_SCALE_DONE "SCALE-DONE "
/* A WORKERS answer never exceeds this (the channel is SOCK_SEQPACKET: one message). */
#define FL_INFORMER_MSG_MAX 65536

#define FL_INFORMER_MAX_RESETS 16

typedef struct {
    fl_loop_t *loop;
    fl_pool_t *pool;
    int chan;
    int64_t timeout_ms; /* how long a reset may take before it is reported as failed */
    struct {
        unsigned id;
        int64_t since_ns, deadline_ms;
    } resets[FL_INFORMER_MAX_RESETS];
    unsigned nresets;
    struct {
        unsigned id;
        int64_t deadline_ms;
    } scales[FL_INFORMER_MAX_RESETS];
    unsigned nscales;
    fl_timer_id tick;
    /* Optional: a scale request was accepted by the pool (delta +1 / -1); the jobs pool's
     * capacity toward the master's broker follows it (reactor/jobs.c). Set after init. */
    void (*on_scale)(void *data, int delta);
    void *scale_data;
} fl_informer_t;

void fl_informer_init(fl_informer_t *in, fl_loop_t *loop, fl_pool_t *pool, int chan,
                      int64_t timeout_ms);
/* Handles one channel message; false when it is not an informer/resetter request. */
bool fl_informer_handle(fl_informer_t *in, const char *msg, size_t n);
void fl_informer_stop(fl_informer_t *in);

/* The pool's workers as informer.Workers items (the eight keys of spec §9.3), a JSON array of at
 * most cap bytes (items that do not fit are left out). Returns its length. */
size_t fl_informer_workers_json(const fl_pool_t *p, char *out, size_t cap);
/* Whether a reset that began at since_ns (CLOCK_REALTIME) is complete. */
bool fl_informer_reset_done(const fl_pool_t *p, int64_t since_ns);

#endif

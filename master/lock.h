/* The lock service (spec §9.3 lock, lock.v1beta1 over RPC): exclusive and shared locks on named
 * resources, owned by ids, with a ttl and a bounded wait, all in microseconds on the wire.
 *
 * Waiters queue per resource and are served in arrival order when a holder goes (release, force
 * release, ttl expiry) - no polling. A shared request does not overtake a queued exclusive one,
 * so writers do not starve. A waiter whose client went away is never granted: it is dropped when
 * its turn comes, and a sweep drops it earlier (the RPC server has no close notification). */
#ifndef FL_LOCK_H
#define FL_LOCK_H

#include <stdbool.h>

#include "deadline.h"
#include "fl.h"
#include "hmap.h"
#include "rpc.h"

typedef void (*fl_lock_done_cb)(void *ud, bool ok);
typedef bool (*fl_lock_alive_cb)(void *ud);

typedef struct {
    fl_loop_t *loop;
    fl_hmap_t res;
    fl_deadlines_t dl;
    fl_timer_id sweep;
    size_t nwaiters;
} fl_locks_t;

void fl_locks_init(fl_locks_t *l, fl_loop_t *loop);
/* Waiters still queued are answered false. */
void fl_locks_destroy(fl_locks_t *l);
/* ttl_us 0 = about a year; wait_us 0 = try for 1 ms. done runs exactly once, maybe before this
 * returns. alive may be NULL. */
void fl_lock_acquire(fl_locks_t *l, fl_slice_t res, fl_slice_t id, bool exclusive, int64_t ttl_us,
                     int64_t wait_us, fl_lock_done_cb done, fl_lock_alive_cb alive, void *ud);
bool fl_lock_release(fl_locks_t *l, fl_slice_t res, fl_slice_t id);
bool fl_lock_force_release(fl_locks_t *l, fl_slice_t res);
/* id "*" = held by anyone. */
bool fl_lock_exists(fl_locks_t *l, fl_slice_t res, fl_slice_t id);
bool fl_lock_update_ttl(fl_locks_t *l, fl_slice_t res, fl_slice_t id, int64_t ttl_us);

/* lock.* on the RPC server (rpc may be NULL: nothing to do). */
int fl_lock_register(fl_rpc_server_t *rpc, fl_loop_t *loop);
void fl_lock_shutdown(void);

#endif

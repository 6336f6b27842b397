/* The event loop: one API, the poller backend chosen at compile time (redis ae style).
 * File events are indexed by fd; timers live in a binary heap; a before-sleep hook lets
 * callers flush queued writes once per loop iteration. */
#ifndef FL_EV_H
#define FL_EV_H

#include <stdbool.h>
#include <stdint.h>

#define FL_EV_READ 1
#define FL_EV_WRITE 2
#define FL_EV_EXCLUSIVE 4 /* wake only one of the processes waiting on a shared fd */
#define FL_EV_DEFER 8     /* with FL_EV_READ: input that may wait while the loop is quiet */

typedef struct fl_loop fl_loop_t;
typedef void (*fl_io_cb)(fl_loop_t *loop, int fd, int events, void *data);
typedef void (*fl_timer_cb)(fl_loop_t *loop, void *data);
typedef void (*fl_hook_cb)(fl_loop_t *loop, void *data);
typedef uint64_t fl_timer_id;

fl_loop_t *fl_loop_new(int setsize);
void fl_loop_free(fl_loop_t *loop);
/* Sets (replaces) the interest mask of fd; mask 0 removes it. */
int fl_io_set(fl_loop_t *loop, int fd, int mask, fl_io_cb cb, void *data);
void fl_io_del(fl_loop_t *loop, int fd);
/* As fl_io_del for an fd the caller closes right away: closing removes it from the kernel's
 * interest list, so no system call is spent on it (nginx's NGX_CLOSE_EVENT). Only for fds no
 * other process holds open (a fork's copy would keep the registration alive). */
void fl_io_forget(fl_loop_t *loop, int fd);
int fl_io_mask(fl_loop_t *loop, int fd);
/* True when fd has an event in the batch being dispatched that its callback has not had yet:
 * a caller about to rely on fd being quiet can handle it first instead of asking the kernel. */
int fl_io_pending(fl_loop_t *loop, int fd);
/* One-shot timer; returns an id > 0, 0 on failure. */
fl_timer_id fl_timer_add(fl_loop_t *loop, int64_t ms, fl_timer_cb cb, void *data);
void fl_timer_del(fl_loop_t *loop, fl_timer_id id);
void fl_loop_before_sleep(fl_loop_t *loop, fl_hook_cb cb, void *data);
/* Quiet: until it is turned off, the loop waits only for the fds registered without
 * FL_EV_DEFER (and for FL_EV_WRITE of those with it): a reactor whose workers all have work
 * queued lets its clients' new requests wait in the kernel instead of waking up for each one to
 * queue it. Level-triggered: what was deferred is reported once the loop is no longer quiet.
 * Set from the before-sleep hook; the second epoll set is made on first use (0, or -1). */
int fl_loop_quiet(fl_loop_t *loop, bool on);
/* While want(data) allows (asked before each wait that would block), poll for up to max_us
 * (0: never) before sleeping, in a window that adapts as the cpuidle haltpoll governor's: it
 * opens while events come within max_us of each other and closes when they stop (an idle loop
 * polls for nothing). */
typedef bool (*fl_spin_cb)(void *data);
void fl_loop_spin(fl_loop_t *loop, int max_us, fl_spin_cb want, void *data);
int64_t fl_loop_spun_ns(const fl_loop_t *loop); /* time spent polling so far */
void fl_loop_run(fl_loop_t *loop);
void fl_loop_stop(fl_loop_t *loop);
int64_t fl_now_ms(void); /* monotonic */
int64_t fl_now_ns(void); /* monotonic, read now (never the cached clock) */

#endif

/* Many deadlines on one loop timer: an intrusive min-heap with O(log n) removal. The loop's own
 * fl_timer_del scans its heap linearly, which is too slow for one timer per lock or waiter. */
#ifndef FL_DEADLINE_H
#define FL_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

#include "ev.h"

typedef struct fl_deadline fl_deadline_t;
struct fl_deadline {
    int64_t when; /* fl_now_ms() clock */
    size_t idx;   /* SIZE_MAX when not armed */
    void (*fire)(fl_deadline_t *d);
};

typedef struct {
    fl_loop_t *loop;
    fl_deadline_t **h;
    size_t n, cap;
    fl_timer_id timer;
    int64_t timer_for;
} fl_deadlines_t;

void fl_dl_init(fl_deadlines_t *s, fl_loop_t *loop);
/* Arms (or re-arms) d for `when`; d->fire must be set. 0 or -1 (out of memory). */
int fl_dl_add(fl_deadlines_t *s, fl_deadline_t *d, int64_t when);
void fl_dl_del(fl_deadlines_t *s, fl_deadline_t *d);
static inline void fl_dl_clear(fl_deadline_t *d)
{
    d->idx = SIZE_MAX;
}
void fl_dl_destroy(fl_deadlines_t *s);

#endif

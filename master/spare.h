/* The master's busy-poll governor: poll before sleeping only while the machine has a CPU to
 * spare. Polling saves the wake-up of a halted vCPU on every RPC and redis round trip (an IPI and
 * a VM exit each, tens of µs here), but a poller on a saturated box takes a core from the PHP
 * workers: measured, 12-18 % fewer requests/s for an HTTP app making an RPC call per request. */
#ifndef FL_SPARE_H
#define FL_SPARE_H

#include <stdbool.h>
#include <stdint.h>

#include "ev.h"

typedef struct {
    fl_loop_t *loop;
    int fd;               /* /proc/stat, kept open; -1: unreadable, never poll */
    int64_t at_ns;        /* when the last sample was taken (0: none yet) */
    uint64_t idle, total; /* its idle+iowait and all ticks */
    int64_t spun_ns;      /* fl_loop_spun_ns() then */
    bool ok;              /* the last period had a spare CPU */
} fl_spare_t;

/* Opens /proc/stat; without it the governor says no. */
void fl_spare_init(fl_spare_t *s, fl_loop_t *loop);
void fl_spare_close(fl_spare_t *s);
/* The loop's fl_spin_cb: true when, over the last period (re-sampled lazily every 200 ms of the
 * loop's wake-ups), the CPUs were idle for at least half a CPU, counting the loop's own polling
 * as idle (it is, to everyone else). */
bool fl_spare_cpu(void *spare);
/* The same decision from two samples, for the unit test: d_idle/d_total in ticks over ncpu
 * CPUs during wall_ns, of which the loop polled spun_ns. */
bool fl_spare_decide(uint64_t d_idle, uint64_t d_total, int64_t wall_ns, int64_t spun_ns);

#endif

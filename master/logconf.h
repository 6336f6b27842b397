/* The `logs` section of a cycle applied to the logger (at start-up and on every reload). */
#ifndef FL_LOGCONF_H
#define FL_LOGCONF_H

#include "config.h"

/* Returns 0, or -1 after printing why on stderr; the previous settings then stay. */
int fl_conf_apply_logs(const fl_conf_t *c);

#endif

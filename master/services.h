/* The master's shared services (kv, lock, metrics, status, app logger) started together on the
 * master's loop, with their RPC methods on the RPC server when there is one. */
#ifndef FL_SERVICES_H
#define FL_SERVICES_H

#include "config.h"
#include "rpc.h"

/* rpc may be NULL (no rpc section): the listeners (metrics, status) still start. 0, or -1 after
 * logging why. */
int fl_services_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c);
/* After the RPC server is freed: answers what still waits, frees everything. */
void fl_services_stop(void);

#endif

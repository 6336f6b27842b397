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

/* A reload, as a cycle: prepare builds the services of the new config c beside the live ones -
 * a changed rpc.listen, metrics.address or status.address is opened (and accepts) beside the old
 * one, a new or changed kv storage is created, metrics.collect is checked - and leaves every
 * unchanged piece alone. If any piece fails (an address in use: "status.address
 * 127.0.0.1:2114: Address already in use"), nothing changed: -1 with err. Then exactly one of:
 * commit (the new generation serves: old listeners close, removed storages are freed, collectors
 * follow metrics.collect; c must carry what prepare saw), or abort (the reload failed: what
 * prepare opened is closed). What cannot be applied (adding or removing the rpc section) is
 * logged at warn by commit. */
int fl_services_prepare(const fl_conf_t *c, char *err, size_t errlen);
void fl_services_commit(const fl_conf_t *c);
void fl_services_abort(void);

#endif

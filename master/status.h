/* Health checks (config §2.7, spec §9.3 status): `status.address` serves GET /health, /ready and
 * /jobs on the master's loop, and status.Status / status.Ready answer over RPC.
 *
 * Plugins: "http" (always), "jobs" (when the jobs section has a pool). A plugin is healthy when
 * one of its PHP workers, in any reactor, is ready or working, and ready when one is ready -
 * read from the reactors' shared-memory gauges (srvmetrics.h), so a check costs no message to
 * the reactors. Once a graceful stop began, /ready and /jobs answer unavailable_status_code
 * while /health keeps reporting the workers that still finish their requests.
 *
 * /health and /ready take ?plugin=NAME (repeatable; none = every plugin) and answer a JSON array
 * of {"plugin_name","error_message","status_code"}, with the HTTP status 200 when every plugin
 * checked is fine, else unavailable_status_code (an unknown plugin counts as not fine, with
 * status_code 404 in its entry). /jobs answers the pipelines as a JSON array. */
#ifndef FL_STATUS_H
#define FL_STATUS_H

#include "config.h"
#include "rpc.h"

/* Nothing when the status section is absent; rpc may be NULL. 0, or -1 with err. The shared
 * counters (fl_srvm_init) must be mapped already. */
int fl_status_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
void fl_status_stop(void);
/* A reload: prepare opens a changed status.address beside the live one (0, or -1 with err and
 * nothing changed); commit switches to it and applies the rest of the section (or closes it all
 * when the section is gone); abort closes what prepare opened. */
int fl_status_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
void fl_status_commit(fl_rpc_server_t *rpc, const fl_conf_t *c);
void fl_status_abort(void);
/* The master began a graceful stop. */
void fl_status_stopping(void);

/* One plugin's check: 200, or 503 with a static reason in *why; -1 for an unknown plugin.
 * ready: readiness, else health. */
int fl_status_check(const char *plugin, bool ready, const char **why);

#endif

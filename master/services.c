/* See services.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services.h"
#include "applog.h"
#include "jobs.h"
#include "kv.h"
#include "lock.h"
#include "metrics.h"
#include "srvmetrics.h"
#include "status.h"
#include "log.h"

static struct {
    fl_loop_t *loop;
    fl_rpc_server_t *rpc; /* master.c's; NULL without an rpc section */
    char *listen;         /* the rpc.listen it serves */
    char *next_listen;    /* a reload's rpc.listen, accepting beside it until commit or abort */
    bool prepared;
    bool srvm_jobs; /* the jobs families the shared counters were mapped with (fl_srvm_init) */
} sv;

int fl_services_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c)
{
    fl_conf_err_t err = {{0}};
    sv.loop = loop;
    sv.rpc = rpc;
    sv.listen = rpc && c->rpc.listen ? strdup(c->rpc.listen) : NULL;
    /* the reactors' shared counters: mapped before any reactor is forked */
    bool shm = c->metrics.enabled || c->status.enabled;
    if (fl_kv_register(rpc, loop, c, &err) < 0 || fl_lock_register(rpc, loop) < 0 ||
        fl_applog_register(rpc) < 0 || (shm && fl_srvm_init(c->jobs.enabled) < 0) ||
        fl_status_start(rpc, loop, c, &err) < 0 || fl_metrics_start(rpc, loop, c, &err) < 0 ||
        fl_jobs_start(rpc, loop, c, &err) < 0) {
        fl_error("%s", err.msg[0] ? err.msg : "cannot start the services: out of memory");
        fl_services_stop();
        return -1;
    }
    sv.srvm_jobs = c->jobs.enabled;
    return 0;
}

void fl_services_stop(void)
{
    /* the RPC server is gone by now (it closed a pending listener itself) */
    free(sv.next_listen);
    free(sv.listen);
    memset(&sv, 0, sizeof(sv));
    fl_jobs_stop();
    fl_status_stop();
    fl_metrics_stop();
    fl_srvm_free();
    fl_lock_shutdown();
    fl_kv_shutdown();
}

/* ---- reload ---- */

static bool rpc_wanted(const fl_conf_t *c)
{
    return c->rpc.enabled && c->rpc.listen;
}

/* A changed rpc.listen: the new address accepts beside the old one from now on, so PHP workers
 * of the new generation can call in while they boot. Adding or removing the rpc section is not
 * applied (the server and its built-in methods belong to master.c): commit says so. */
static int rpc_prepare(const fl_conf_t *c, fl_conf_err_t *err)
{
    if (!sv.rpc || !rpc_wanted(c) || (sv.listen && strcmp(sv.listen, c->rpc.listen) == 0))
        return 0;
    char why[sizeof(err->msg)];
    if (fl_rpc_server_relisten(sv.rpc, c->rpc.listen, why, sizeof(why)) < 0)
        return fl_conf_error(err, "%s", why);
    if (!(sv.next_listen = strdup(c->rpc.listen))) {
        fl_rpc_server_relisten_done(sv.rpc, false);
        return fl_conf_error(err, "out of memory");
    }
    return 0;
}

static void rpc_commit(const fl_conf_t *c)
{
    if (sv.next_listen) {
        fl_rpc_server_relisten_done(sv.rpc, true);
        fl_logn(FL_LOG_INFO, "rpc",
                "RPC listens on %s now (no longer on %s; connections made "
                "there stay open)",
                sv.next_listen, sv.listen ? sv.listen : "-");
        free(sv.listen);
        sv.listen = sv.next_listen;
        sv.next_listen = NULL;
    } else if (!sv.rpc && rpc_wanted(c)) {
        fl_logn(FL_LOG_WARN, "rpc",
                "the rpc section was added (rpc.listen %s): not applied, "
                "restart needed; there is no RPC server until then",
                c->rpc.listen);
    } else if (sv.rpc && !rpc_wanted(c)) {
        fl_logn(FL_LOG_WARN, "rpc",
                "the rpc section was removed: not applied, restart needed; "
                "RPC keeps listening on %s until then",
                sv.listen ? sv.listen : "-");
    }
}

void fl_services_abort(void)
{
    if (sv.next_listen)
        fl_rpc_server_relisten_done(sv.rpc, false);
    free(sv.next_listen);
    sv.next_listen = NULL;
    fl_kv_abort();
    fl_metrics_abort();
    fl_status_abort();
    sv.prepared = false;
}

int fl_services_prepare(const fl_conf_t *c, char *err, size_t errlen)
{
    fl_conf_err_t e = {{0}};
    fl_services_abort();
    bool shm = c->metrics.enabled || c->status.enabled, was_on = fl_srvm_enabled();
    if (rpc_prepare(c, &e) < 0 || fl_kv_prepare(sv.loop, c, &e) < 0 ||
        fl_metrics_prepare(sv.loop, c, &e) < 0 || fl_status_prepare(sv.loop, c, &e) < 0 ||
        /* before the new reactors fork; kept even if the reload fails (it only counts) */
        (shm && fl_srvm_init(c->jobs.enabled) < 0 &&
         fl_conf_error(&e, "metrics: cannot map the shared counters") < 0)) {
        fl_services_abort();
        snprintf(err, errlen, "%s", e.msg[0] ? e.msg : "cannot prepare the services");
        return -1;
    }
    if (shm && !was_on)
        sv.srvm_jobs = c->jobs.enabled;
    sv.prepared = true;
    return 0;
}

void fl_services_commit(const fl_conf_t *c)
{
    if (!sv.prepared)
        return;
    sv.prepared = false;
    rpc_commit(c);
    if (fl_srvm_enabled() && sv.srvm_jobs != c->jobs.enabled)
        fl_logn(FL_LOG_WARN, "metrics",
                "the jobs section is %s now: not applied to the built-in rr_jobs_* families, "
                "restart needed",
                c->jobs.enabled ? "present" : "gone");
    fl_kv_commit();
    fl_metrics_commit(sv.rpc, c);
    fl_status_commit(sv.rpc, c);
}

/* See services.h. */
#include "services.h"
#include "applog.h"
#include "jobs.h"
#include "kv.h"
#include "lock.h"
#include "metrics.h"
#include "log.h"

int fl_services_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c)
{
    fl_conf_err_t err = {{0}};
    if (fl_kv_register(rpc, loop, c, &err) < 0 || fl_lock_register(rpc, loop) < 0 ||
        fl_applog_register(rpc) < 0 || fl_metrics_start(rpc, loop, c, &err) < 0 ||
        fl_jobs_start(rpc, loop, c, &err) < 0) {
        fl_error("%s", err.msg[0] ? err.msg : "cannot start the services: out of memory");
        fl_services_stop();
        return -1;
    }
    return 0;
}

void fl_services_stop(void)
{
    fl_jobs_stop();
    fl_metrics_stop();
    fl_lock_shutdown();
    fl_kv_shutdown();
}

/* The kv `redis` driver: not built yet (see kv.h). */
#include "kv.h"

fl_kv_storage_t *fl_kv_redis_new(const struct fl_conf_kv *k, fl_loop_t *loop, fl_conf_err_t *err)
{
    (void)loop;
    fl_conf_error(err, "kv.%s: the redis driver is not available in this build yet", k->name);
    return NULL;
}

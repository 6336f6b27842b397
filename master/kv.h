/* The kv service over RPC (spec §9.3 kv, config §2.10): kv.Has, Set, MGet, MExpire, TTL, Delete,
 * Clear on the storages of the `kv` section, protobuf kv.v1 in and out.
 *
 * A storage is a driver behind one function: it receives the parsed items and completes the call
 * (at once for `memory`, from the loop later for `redis`). Error texts keep upstream's phrases
 * ("no such storage", "_plugin_ttl") because PHP matches on them. */
#ifndef FL_KV_H
#define FL_KV_H

#include "config.h"
#include "rpc.h"

typedef struct {
    fl_slice_t key, value, timeout; /* into the call's argument */
} fl_kv_item_t;

enum { FL_KV_HAS, FL_KV_SET, FL_KV_MGET, FL_KV_MEXPIRE, FL_KV_TTL, FL_KV_DELETE, FL_KV_CLEAR };

typedef struct fl_kv_storage fl_kv_storage_t;
struct fl_kv_storage {
    char *name;
    /* Completes call. items live as long as the call (they point into its argument). */
    void (*exec)(fl_kv_storage_t *st, int op, fl_rpc_call_t *call, const fl_kv_item_t *items,
                 size_t n);
    void (*free)(fl_kv_storage_t *st);
};

/* Registers kv.* on rpc with the storages of c (rpc may be NULL: storages are still built, so a
 * bad redis address is reported the same way). 0, or -1 with err. */
int fl_kv_register(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
/* Frees the storages (at master exit, after the RPC server is gone). */
void fl_kv_shutdown(void);
/* A reload: prepare builds the storages of c beside the live ones (an unchanged storage - same
 * name, same decoded config - is shared, not rebuilt; 0, or -1 with err and nothing changed);
 * commit makes them the live set and frees the storages no longer configured (a redis one's
 * calls in flight get an error); abort frees what prepare built. */
int fl_kv_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
void fl_kv_commit(void);
void fl_kv_abort(void);

/* Helpers for drivers. */
extern const char *const fl_kv_rpc_ops[]; /* "rpc_has", ... by FL_KV_* */
/* Response{items}: value and timeout only when given (proto3 omits empty fields). */
int fl_kv_encode(fl_buf_t *out, const fl_kv_item_t *items, size_t n);
/* Replies Response{items} (n may be 0: an empty Response). */
void fl_kv_reply(fl_rpc_call_t *call, const fl_kv_item_t *items, size_t n);
/* A key that is empty or only whitespace (the memory driver rejects it). */
bool fl_kv_key_blank(fl_slice_t key);

/* The memory driver. */
fl_kv_storage_t *fl_kv_memory_new(const char *name, fl_loop_t *loop);
/* The redis driver (kv_redis.c). NULL with err filled. */
fl_kv_storage_t *fl_kv_redis_new(const struct fl_conf_kv *k, fl_loop_t *loop, fl_conf_err_t *err);

#endif

/* The RPC server of the master (`rpc.listen`, spec §9): goridge RPC over tcp:// or unix:// on the
 * master's event loop.
 *
 * Services plug in as method tables, { "resetter.Reset", handler }, each with its own context.
 * A handler receives a call and completes it whenever it likes - at once or after the reactors
 * answered - with fl_rpc_reply() or fl_rpc_fail(); every call must be completed exactly once,
 * even when the client has gone meanwhile (the call then only frees itself). Calls of one
 * connection run concurrently and their replies go out whole, in completion order.
 *
 * A client that breaks the framing, stalls mid-frame, or sends a length above the frame cap
 * loses its own connection; memory per connection is bounded by the frame cap plus the output
 * backlog (reading pauses while replies pile up).
 *
 * The codec is protocols/rpc.h (included here). */
#ifndef FL_RPC_SERVER_H
#define FL_RPC_SERVER_H

#include "../protocols/rpc.h"
#include "ev.h"

typedef struct fl_rpc_server fl_rpc_server_t;
typedef struct fl_rpc_conn fl_rpc_conn_t;
typedef struct fl_rpc_call fl_rpc_call_t;

typedef void (*fl_rpc_fn)(fl_rpc_call_t *call);

typedef struct {
    const char *name; /* "service.Method", as Go exports it */
    fl_rpc_fn fn;
} fl_rpc_method_t;

struct fl_rpc_call {
    fl_rpc_req_t req; /* seq, codec, method, arg: owned by the call until it completes */
    void *ctx;        /* the context its method table was registered with */
    /* server-private */
    fl_rpc_conn_t *conn; /* NULL once the client has gone */
    fl_rpc_call_t *next, *prev;
};

typedef struct {
    uint32_t max_frame;   /* largest request payload; default 64 MiB */
    unsigned max_conns;   /* default 1024 */
    int64_t stall_ms;     /* a frame left half-sent this long closes the connection; 10 s */
    size_t max_backlog;   /* unsent reply bytes above which reading pauses; 4 MiB */
    unsigned max_pending; /* calls in flight per connection above which reading pauses; 256 */
} fl_rpc_limits_t;

/* Listens on "tcp://host:port" or "unix:///path" (a stale socket file is replaced).
 * limits may be NULL. NULL with err filled on failure. */
fl_rpc_server_t *fl_rpc_server_new(fl_loop_t *loop, const char *dsn, const fl_rpc_limits_t *limits,
                                   char *err, size_t errlen);
/* Registers n methods (the table must outlive the server). Later names win over earlier ones. */
int fl_rpc_server_add(fl_rpc_server_t *s, const fl_rpc_method_t *methods, size_t n, void *ctx);
/* Unregisters a table added with fl_rpc_server_add (calls in flight still complete). 1 if it was
 * there, else 0. */
int fl_rpc_server_remove(fl_rpc_server_t *s, const fl_rpc_method_t *methods);
/* A reload moves the server to another address in two steps: relisten opens dsn and accepts on
 * it beside the current listener (-1 with err, nothing changed, when it cannot); relisten_done
 * then closes the old listener (commit) or the new one. Connections are never touched. */
int fl_rpc_server_relisten(fl_rpc_server_t *s, const char *dsn, char *err, size_t errlen);
void fl_rpc_server_relisten_done(fl_rpc_server_t *s, bool commit);
/* Closes the listener and every connection; calls still in flight become orphans that their
 * handlers complete as usual. */
void fl_rpc_server_free(fl_rpc_server_t *s);
unsigned fl_rpc_server_conns(const fl_rpc_server_t *s);

/* Completes a call with a reply already encoded in call->req.codec. */
void fl_rpc_reply(fl_rpc_call_t *call, const void *body, size_t len);
/* Completes a call whose Go reply type is not []byte (bool, string, struct): the JSON text is sent
 * under the JSON codec; other codecs get the error Go's codec would give. */
void fl_rpc_reply_json(fl_rpc_call_t *call, const char *json, size_t len);
/* Completes a call with an error reply (ERROR flag, the text). */
void fl_rpc_fail(fl_rpc_call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* False once the client has gone, or has closed its sending side (a peer that exits looks the
 * same): a long wait (lock.Lock) should then give up. A half-closed client that still reads gets
 * the reply all the same. */
bool fl_rpc_call_alive(const fl_rpc_call_t *call);

/* The built-in services: resetter, informer and rpc. The master implements the operations that
 * need its reactors; each completes the call itself (fl_rpc_reply_json / fl_rpc_fail). */
typedef struct {
    /* Plugins with worker pools ("http", later "jobs"): fills names, returns the count. */
    size_t (*plugins)(void *m, const char **names, size_t max);
    /* resetter.Reset(plugin), plugin already checked against plugins(): reply `true`. */
    void (*reset)(void *m, fl_rpc_call_t *call, const char *plugin);
    /* informer.Workers(plugin), plugin known: reply {"workers":[...]}. */
    void (*workers)(void *m, fl_rpc_call_t *call, const char *plugin);
    /* informer.AddWorker / RemoveWorker; NULL = not supported yet (an error reply). */
    void (*add_worker)(void *m, fl_rpc_call_t *call, const char *plugin);
    void (*remove_worker)(void *m, fl_rpc_call_t *call, const char *plugin);
    /* rpc.Config: the config file's bytes into out (0), or -1 when there is none. */
    int (*config)(void *m, fl_buf_t *out);
} fl_rpc_ops_t;

/* Registers resetter.*, informer.* and rpc.* with ops (copied) and m as the master. */
int fl_rpc_add_builtin(fl_rpc_server_t *s, const fl_rpc_ops_t *ops, void *m);

#endif

/* A Redis client on the master's event loop, shared by the kv `redis` driver and the jobs `redis`
 * driver.
 *
 * Why our own transport: Debian 12 ships hiredis 0.14, whose async API has no TLS and no timers.
 * We keep hiredis for what it does well (redisFormatCommandArgv to encode, redisReader to parse
 * replies) and own the socket: non-blocking connect with dial timeout, optional TLS with OpenSSL,
 * AUTH/SELECT on every (re)connect, per-command read timeout, reconnect with exponential back-off.
 *
 * Contract: every command's callback is called exactly once — with the reply, or with reply NULL
 * and a static error string (compare by identity with FL_REDIS_E*) when the connection is down,
 * drops, or the command times out. A command is never silently retried: after a drop the caller
 * decides (kv returns the error to PHP; jobs re-reads its pending entries). */
#ifndef FL_REDIS_H
#define FL_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ev.h"

extern const char FL_REDIS_EDOWN[];    /* "redis: not connected" */
extern const char FL_REDIS_ELOST[];    /* "redis: connection lost" */
extern const char FL_REDIS_ETIMEOUT[]; /* "redis: command timed out" */
extern const char FL_REDIS_ECLOSED[];  /* "redis: client closed" (fl_redis_free) */

typedef struct {
    const char *addr;         /* "host:port", "[v6]:port", "unix:///path" or "/path"; copied */
    const char *username;     /* AUTH username password (Redis 6 ACL) when set; may be NULL */
    const char *password;     /* AUTH password when set */
    int db;                   /* SELECT db when > 0 */
    int64_t dial_timeout_ms;  /* connect + TLS handshake + AUTH/SELECT; 5000 when 0 */
    int64_t read_timeout_ms;  /* longest wait for the next reply, counted from the later of the
                               * command's send and the previous reply (not while a blocking
                               * command is at the head); then the connection is dropped and
                               * every pending command gets FL_REDIS_ETIMEOUT; 0: none */
    int64_t reconnect_min_ms; /* first back-off; 100 when 0 */
    int64_t reconnect_max_ms; /* back-off cap; 5000 when 0 */
    bool tls;                 /* also true when any tls_* is set */
    const char *tls_root_ca;  /* CA file to verify the server; NULL: system default store */
    const char *tls_cert, *tls_key;
    const char *name; /* CLIENT SETNAME on connect (e.g. "forkline-kv-default"); may be NULL */
} fl_redis_opts_t;

typedef struct fl_redis fl_redis_t;

/* reply is NULL exactly when err is set. The reply is owned by the client (freed after return). */
typedef void (*fl_redis_cb)(fl_redis_t *r, redisReply *reply, const char *err, void *data);
/* Called when the connection becomes usable (up=true, after AUTH/SELECT/SETNAME) and when it is
 * lost (up=false, after every pending callback got FL_REDIS_ELOST). */
typedef void (*fl_redis_state_cb)(fl_redis_t *r, bool up, void *data);

/* Starts connecting at once (never blocks). NULL only when out of memory or the options are
 * invalid (errbuf gets why). */
fl_redis_t *fl_redis_new(fl_loop_t *loop, const fl_redis_opts_t *o, fl_redis_state_cb on_state,
                         void *data, char *errbuf, size_t errlen);
/* Queues a command (flushed after this loop iteration's I/O, so a burst leaves in one write).
 * While a connection attempt is in progress the command is held and sent once it is up (or gets
 * FL_REDIS_EDOWN if the attempt fails); while disconnected and waiting to retry, cb gets
 * FL_REDIS_EDOWN from the loop (never re-entrantly from inside this call). 0, or -1 when out of
 * memory or after fl_redis_free (cb is then never called). */
int fl_redis_cmd(fl_redis_t *r, fl_redis_cb cb, void *data, int argc, const char **argv,
                 const size_t *argvlen);
/* printf-style with hiredis's %s/%b/%d/%lld (redisvFormatCommand). */
int fl_redis_cmdf(fl_redis_t *r, fl_redis_cb cb, void *data, const char *fmt, ...);
/* Like fl_redis_cmd, but the command may block server-side (XREADGROUP BLOCK, BLPOP):
 * read_timeout does not apply to it. */
int fl_redis_cmd_blocking(fl_redis_t *r, fl_redis_cb cb, void *data, int argc, const char **argv,
                          const size_t *argvlen);
bool fl_redis_up(const fl_redis_t *r);
/* Why the last connection attempt failed or the connection dropped ("" while up), e.g.
 * "AUTH: WRONGPASS invalid username-password pair or user is disabled." */
const char *fl_redis_last_error(const fl_redis_t *r);
/* Pending callbacks get FL_REDIS_ECLOSED before this returns; then the fd is closed. */
void fl_redis_free(fl_redis_t *r);

#endif

/* The client side of the command line (spec rr-config-cli-octane.md §3.3): `reset`, `workers`,
 * `jobs` talk to a running server over its RPC listener, like `rr` does, with a small blocking
 * goridge RPC client (JSON and proto codecs). */
#ifndef FL_CTL_H
#define FL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fl.h"

typedef struct {
    const char *config; /* absolute path, or NULL when there is no file */
    char *const *overrides;
    size_t noverrides;
    bool silent;       /* -s */
    bool interactive;  /* workers -i */
    char *const *args; /* plugin names after the command */
    size_t nargs;
    const char *jobs_mode; /* jobs: "list", "pause", "resume", "destroy" */
    const char *jobs_arg;  /* the comma-separated pipelines */
} fl_ctl_opts_t;

/* Each returns the process exit code (0, or 1 with a message on stderr). */
int fl_ctl_reset(const fl_ctl_opts_t *o);
int fl_ctl_workers(const fl_ctl_opts_t *o);
int fl_ctl_jobs(const fl_ctl_opts_t *o);

/* rpc.listen from the config file and -o overrides with RoadRunner's client rules: no version
 * check, env interpolation and overrides applied, "rpc service not specified in the
 * configuration" when the section is absent. Returns a malloc'd DSN or NULL with err filled. */
char *fl_ctl_rpc_listen(const char *config, char *const *overrides, size_t n, char *err,
                        size_t errlen);

/* A blocking RPC client. */
typedef struct {
    int fd;
    fl_buf_t in;
    int timeout_ms;
} fl_rpc_client_t;

int fl_rpc_client_connect(fl_rpc_client_t *c, const char *dsn, int timeout_ms, char *err,
                          size_t errlen);
void fl_rpc_client_close(fl_rpc_client_t *c);
int fl_rpc_client_send(fl_rpc_client_t *c, uint32_t seq, uint8_t codec, const char *method,
                       const void *arg, size_t len, char *err, size_t errlen);
/* Waits for the next reply frame: its seq, whether it is an error, and its body (copied into
 * body). 0, or -1 with err filled (timeout, EOF, bad frame). */
int fl_rpc_client_recv(fl_rpc_client_t *c, uint32_t *seq, bool *is_error, fl_buf_t *body, char *err,
                       size_t errlen);
/* send + recv of one call. Returns 0 (reply in body), 1 (error reply, text in body) or -1. */
int fl_rpc_client_call(fl_rpc_client_t *c, uint8_t codec, const char *method, const void *arg,
                       size_t len, fl_buf_t *body, char *err, size_t errlen);

/* humanize-style renderings used by `workers` (exposed for tests). */
void fl_ctl_human_bytes(uint64_t n, char *out, size_t len);    /* 21 MB, 8.5 MB, 5 B */
void fl_ctl_human_ago(int64_t seconds, char *out, size_t len); /* now, 5 seconds ago */

#endif

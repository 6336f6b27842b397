/* The master's configuration "cycle": .rr.yaml (plus -o overrides) decoded into an immutable
 * struct. It is built beside the live one (nginx ngx_cycle style): fl_conf_load() fills a fresh
 * struct and on any error leaves the caller's untouched, so a bad reload disturbs nothing. */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conftree.h" /* fl_conf_err_t, the tree and the typed getters section decoders use */

/* http.codec: how the HTTP request context is encoded for PHP. */
enum { FL_CODEC_PROTO = 0, FL_CODEC_JSON = 1 };
/* http.ssl.client_auth_type, in RoadRunner's order. */
enum {
    FL_CLIENT_AUTH_NONE = 0,    /* no_client_cert */
    FL_CLIENT_AUTH_REQUEST,     /* request_client_cert */
    FL_CLIENT_AUTH_REQUIRE_ANY, /* require_any_client_cert */
    FL_CLIENT_AUTH_VERIFY_IF_GIVEN, /* verify_client_cert_if_given */
    FL_CLIENT_AUTH_REQUIRE_VERIFY,  /* require_and_verify_client_cert */
};

/* busy_poll: the master polls up to this long before sleeping while CPU is spare (spare.h). From
 * scripts/bench_kv.py on 2 vCPUs: 100us served RPC+redis 1.6x as many calls/s as 0; 200us no
 * more. */
#define FL_BUSY_POLL_US 100

/* cpu_affinity: pin reactor i and its PHP workers to one core (see master.c pin_reactor). */
enum { FL_AFFINITY_AUTO = 0, FL_AFFINITY_ON = 1, FL_AFFINITY_OFF = 2 };

typedef struct {
    char **argv; /* NULL-terminated */
    size_t argc;
} fl_argv_t;

typedef struct {
    fl_argv_t command;    /* pool override; argc 0 = use server.command */
    unsigned num_workers; /* 0 = number of CPUs (resolved later by the caller) */
    unsigned max_jobs, max_queue_size;
    /* 60000 each by default */
    int64_t allocate_timeout_ms, reset_timeout_ms, destroy_timeout_ms, stream_timeout_ms;
    bool debug;      /* fresh worker per request; the pool applies its semantics */
    bool supervisor; /* the supervisor section exists */
    int64_t watch_tick_ms /*5000*/, ttl_ms, idle_ttl_ms, exec_ttl_ms;
    uint64_t max_worker_memory; /* bytes (config value is MB) */
} fl_pool_conf_t;

typedef struct fl_conf {
    char *path; /* absolute config path, or NULL when no file */
    char *version;
    unsigned reactors; /* forkline key `reactors: auto|N`; 0 = auto */
    int cpu_affinity;  /* forkline key `cpu_affinity: auto|on|off`: FL_AFFINITY_* */
    int busy_poll_us;  /* forkline key `busy_poll: 100us` (the master loop's cap; 0 = off) */
    struct {
        fl_argv_t command;
        char *relay; /* "pipes" by default */
        char **env;  /* "KEY=VALUE", KEY upper-cased, VALUE $VAR-expanded; NULL-terminated */
        size_t nenv;
        char *user;  /* NULL = current user */
        char *group; /* NULL = the user's primary group */
        struct {
            bool enabled; /* the on_init section exists (then command is required) */
            fl_argv_t command;
            int64_t exec_timeout_ms; /* 60000 */
            bool exit_on_error;
            char **env; /* like server.env: "KEY=VALUE", KEY upper-cased; NULL-terminated */
            size_t nenv;
            char *user; /* NULL = as the master */
        } on_init;
    } server;
    struct {
        bool enabled; /* the rpc section exists */
        char *listen; /* default tcp://127.0.0.1:6001 when enabled; NULL when disabled */
    } rpc;
    struct {
        char *mode;     /* development | production | raw | off | none (unknown → development) */
        char *level;    /* lower-cased; "debug" when absent; NULL = an unknown level was given, so
                         * the mode's built-in level applies (v2025 behaviour) */
        char *encoding; /* console | json; default json in production mode, console otherwise */
        char **output;  /* NULL-terminated; default {"stderr"} */
        size_t noutput;
        char **err_output; /* NULL-terminated; default {"stderr"} */
        size_t nerr_output;
        /* logs.channels.<logger>: the same keys, each NULL / empty when not given there */
        struct fl_conf_log_channel {
            char *name, *mode, *level, *encoding;
            char **output, **err_output;
            size_t noutput, nerr_output;
        } *channels;
        size_t nchannels;
    } logs;
    struct {
        bool enabled;              /* the http section exists */
        char *address;             /* NULL if absent (the caller reports "unable to run http
                                    * service" when no listener is configured at all) */
        int internal_error_code;   /* 500 */
        uint64_t max_request_size; /* bytes; MB in config, 0/absent → 1000 MB */
        bool raw_body, access_logs;
        int codec; /* http.codec: "proto" (FL_CODEC_PROTO, default) | "json" */
        char **middleware; /* NULL-terminated names, as listed */
        size_t nmiddleware;
        char **trusted_subnets; /* CIDRs, validated; used when proxy_ip_parser is listed */
        size_t ntrusted_subnets;
        struct {
            char *dir; /* NULL = the OS temp dir */
            char **forbid, **allow; /* ".php" style, lower-cased */
            size_t nforbid, nallow;
        } uploads;
        struct {
            bool section; /* http.static exists */
            bool enabled; /* ... and "static" is in middleware (RoadRunner's rule) */
            char *dir;    /* made absolute; must be a directory */
            char **forbid, **allow; /* lower-cased */
            size_t nforbid, nallow;
            bool calculate_etag, weak;
            char **request, **response; /* name, value, ..., NULL; names canonical (X-Foo) */
            int symlinks; /* forkline's own: FL_STATIC_SYMLINKS_* (reactor/static.h), 0 = follow */
        } static_files;
        struct {
            bool enabled;  /* cert or key set */
            char *address; /* default 127.0.0.1:443 */
            unsigned port; /* from address, for the redirect */
            bool redirect; /* plain listener answers 308 to https */
            char *cert, *key, *root_ca;
            int client_auth; /* FL_CLIENT_AUTH_* */
        } ssl;
        /* forkline's own server timeouts (RoadRunner hard-codes its own) */
        int64_t read_header_timeout_ms; /* whole request head: 60s (slowloris) */
        int64_t read_timeout_ms;        /* body: longest pause between reads, 60s */
        int64_t write_timeout_ms;       /* longest pause while the client does not read, 60s */
        int64_t idle_timeout_ms;        /* keep-alive wait for the next request, 75s */
        fl_pool_conf_t pool;
    } http;
    struct {
        int64_t grace_period_ms; /* 30000 default; read without env expansion or -o (§2.14) */
    } endure;
    /* The master's services (decoded in svcconf.c; kv.c, metrics.c, status.c use them). */
    struct {
        struct fl_conf_kv {
            char *name, *driver; /* driver: "memory" | "redis" */
            char **addrs;        /* redis: host:port list (default localhost:6379) */
            size_t naddrs;
            char *username, *password;
            int db;
            int64_t dial_timeout_ms, read_timeout_ms, write_timeout_ms; /* 5s, 3s, 3s */
            char *tls_root_ca, *tls_cert, *tls_key; /* tls.* (any set = TLS) */
        } *storages;
        size_t n;
    } kv;
    struct {
        bool enabled;  /* the metrics section exists */
        char *address; /* 127.0.0.1:2112 */
        struct fl_conf_collector {
            char *name, *type, *help, *namespace_, *subsystem;
            char **labels;
            size_t nlabels;
            double *buckets; /* histogram */
            size_t nbuckets;
            double *objectives; /* summary: quantile, error, quantile, error, ... */
            size_t nobjectives; /* pairs */
        } *collect;
        size_t ncollect;
    } metrics;
    struct {
        bool enabled;                /* the status section exists */
        char *address;               /* required when enabled */
        int unavailable_status_code; /* 503 */
        int64_t check_timeout_ms;    /* 60 s */
    } status;
    /* jobs (§2.9), decoded in config.c conf_jobs; the broker is master/jobs.c. */
    struct {
        bool enabled;  /* the jobs section exists */
        bool has_pool; /* jobs.pool exists: each reactor runs an RR_MODE=jobs pool */
        fl_pool_conf_t pool;
        int64_t timeout_ms;     /* jobs.timeout (seconds in config), 60 s: longest run of a job */
        uint64_t pipeline_size; /* jobs.pipeline_size: most jobs queued in a memory pipeline */
        char **consume;         /* pipelines consumed at boot; NULL-terminated */
        size_t nconsume;
        struct fl_conf_pipeline {
            char *name, *driver;   /* driver: "memory" or "redis" */
            int64_t priority;      /* 10; lower is served more often (see jobs.c) */
            uint64_t prefetch;     /* most jobs of this pipeline taken at once; 0: driver's */
            unsigned max_attempts; /* failed runs before a job is dropped/dead-lettered; 0 */
            struct fl_conf_jredis { /* driver: redis (docs/jobs-redis.md); NULL: default */
                char *addr, *username, *password;
                int db;
                bool tls;
                char *tls_root_ca, *tls_cert, *tls_key;
                char *stream, *group, *consumer, *delayed, *dead_letter;
                int64_t visibility_timeout_ms; /* 0: 60 s */
            } redis;
        } *pipelines;
        size_t npipelines;
    } jobs;
} fl_conf_t;

/* path may be NULL (no file: empty config + overrides). Returns 0 or -1 with err->msg like
 * "/abs/.rr.yaml:12:5: http.pool.num_workers: expected an unsigned integer, got \"abc\"" or
 * "-o http.pool.num_workers=abc: expected an unsigned integer" for override-sourced values.
 * On success *c is overwritten (the caller frees the previous cycle's conf itself); on failure
 * *c is not touched. */
int fl_conf_load(fl_conf_t *c, const char *path, char *const *overrides, size_t noverrides,
                 fl_conf_err_t *err);
void fl_conf_free(fl_conf_t *c);

/* Go durations "1h3m40s500ms", "2.5h", ".2m", "0", "300ms", "10us" (rounded up to 1 ms if > 0).
 * A bare number without unit is an error ("missing unit") except "0". Returns 0 or -1. */
int fl_parse_duration_ms(const char *s, int64_t *ms);

/* Frees the strings of one jobs pipeline (and zeroes it). */
void fl_conf_pipeline_free(struct fl_conf_pipeline *p);

/* Building blocks for section decoders (jobs.pool, grpc.pool, ... reuse them). */
int fl_pool_conf_decode(fl_pool_conf_t *p, const fl_cnode_t *pool, fl_conf_err_t *err);
void fl_pool_conf_free(fl_pool_conf_t *p);
/* A command: a list is argv as is; a single string (or one-element list) is split on single
 * spaces, as v2025 does (two spaces give an empty argument). Absent: argv left untouched. */
int fl_conf_get_argv(const fl_cnode_t *base, const char *path, fl_argv_t *argv, fl_conf_err_t *err);
void fl_argv_free(fl_argv_t *argv);

/* kv, metrics and status sections (svcconf.c); root is the whole tree (kv falls back to a root
 * section named like the storage). */
int fl_conf_services(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err);
void fl_conf_services_free(fl_conf_t *c);

#endif

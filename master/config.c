/* .rr.yaml → fl_conf_t (the master's cycle). Loading order follows the spec §1.1 step 5–7:
 * parse, endure (raw), env interpolation, -o overrides, version check, include, then each section
 * decodes itself from the tree through the typed getters of conftree.h. A new section is one
 * function plus one row in conf_sections[]. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "fl.h"
#include "config.h"

#define POOL_TIMEOUT_MS 60000  /* pool allocate/reset/destroy/stream timeouts: 1 minute */
#define WATCH_TICK_MS 5000     /* supervisor.watch_tick */
#define GRACE_PERIOD_MS 30000  /* endure.grace_period */
#define MAX_REQUEST_MB 1000ull /* http.max_request_size when 0 or absent */
#define MAX_NUM_WORKERS 500u
#define MAX_REACTORS 1024u
#define RPC_DEFAULT_LISTEN "tcp://127.0.0.1:6001"
#define VERSION_MISSING "rr configuration file should contain a version e.g: version: 3"

static int conf_oom(fl_conf_err_t *err)
{
    return fl_conf_error(err, "out of memory while loading the configuration");
}

/* Replaces a NULL or empty string by a default. */
static int conf_str_default(char **s, const char *def, fl_conf_err_t *err)
{
    if (*s && **s)
        return 0;
    free(*s);
    if (!(*s = strdup(def)))
        return conf_oom(err);
    return 0;
}

static void conf_lower(char *s)
{
    for (; s && *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static bool conf_in_set(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static int conf_strv_push(char ***v, size_t *n, char *s)
{
    if (!s)
        return -1;
    char **p = realloc(*v, (*n + 2) * sizeof(*p));
    if (!p) {
        free(s);
        return -1;
    }
    p[(*n)++] = s;
    p[*n] = NULL;
    *v = p;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* durations                                                                                     */

int fl_parse_duration_ms(const char *s, int64_t *ms)
{
    int64_t ns;
    if (fl_parse_duration_ns(s, &ns, NULL) < 0)
        return -1;
    /* Round the magnitude up so that a tiny positive timeout never becomes "no timeout". */
    uint64_t mag = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    uint64_t m = mag / 1000000 + (mag % 1000000 != 0);
    *ms = ns < 0 ? -(int64_t)m : (int64_t)m;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* commands                                                                                      */

void fl_argv_free(fl_argv_t *a)
{
    fl_strlist_free(a->argv);
    a->argv = NULL;
    a->argc = 0;
}

/* Go's strings.Split(s, " "): every single space separates, so "a  b" has an empty middle. */
static int split_spaces(const char *s, char ***v, size_t *n)
{
    for (;;) {
        const char *sp = strchr(s, ' ');
        size_t len = sp ? (size_t)(sp - s) : strlen(s);
        if (conf_strv_push(v, n, strndup(s, len)) < 0)
            return -1;
        if (!sp)
            return 0;
        s = sp + 1;
    }
}

int fl_conf_get_argv(const fl_cnode_t *base, const char *path, fl_argv_t *argv, fl_conf_err_t *err)
{
    char **list = NULL;
    size_t n = 0;
    if (fl_cget_strlist(base, path, &list, &n, err) < 0)
        return -1;
    if (!fl_cnode_get(base, path))
        return 0;
    if (n == 1) {
        /* One element: the v2025 server plugin treats it as a space-separated command line. */
        char **words = NULL;
        size_t nwords = 0;
        int rc = split_spaces(list[0], &words, &nwords);
        fl_strlist_free(list);
        if (rc < 0) {
            fl_strlist_free(words);
            return conf_oom(err);
        }
        list = words;
        n = nwords;
    }
    fl_argv_free(argv);
    argv->argv = list;
    argv->argc = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* pool object (§2.6)                                                                            */

/* clang-format off */
#define POOL_FIELD(path, kind, member) {path, kind, offsetof(fl_pool_conf_t, member), 0}
/* clang-format on */

static const fl_cfield_t pool_fields[] = {
    POOL_FIELD("num_workers", FL_CF_UINT, num_workers),
    POOL_FIELD("max_jobs", FL_CF_UINT, max_jobs),
    POOL_FIELD("max_queue_size", FL_CF_UINT, max_queue_size),
    POOL_FIELD("allocate_timeout", FL_CF_DURATION_MS, allocate_timeout_ms),
    POOL_FIELD("reset_timeout", FL_CF_DURATION_MS, reset_timeout_ms),
    POOL_FIELD("destroy_timeout", FL_CF_DURATION_MS, destroy_timeout_ms),
    POOL_FIELD("stream_timeout", FL_CF_DURATION_MS, stream_timeout_ms),
    POOL_FIELD("debug", FL_CF_BOOL, debug),
    POOL_FIELD("supervisor.watch_tick", FL_CF_DURATION_MS, watch_tick_ms),
    POOL_FIELD("supervisor.ttl", FL_CF_DURATION_MS, ttl_ms),
    POOL_FIELD("supervisor.idle_ttl", FL_CF_DURATION_MS, idle_ttl_ms),
    POOL_FIELD("supervisor.exec_ttl", FL_CF_DURATION_MS, exec_ttl_ms),
    POOL_FIELD("supervisor.max_worker_memory", FL_CF_SIZE_MB, max_worker_memory),
};

void fl_pool_conf_free(fl_pool_conf_t *p)
{
    fl_argv_free(&p->command);
}

/* Upstream applies defaults to zero values, so an explicit 0 also means "the default". */
static void pool_zero_defaults(fl_pool_conf_t *p)
{
    int64_t *timeouts[] = {&p->allocate_timeout_ms, &p->reset_timeout_ms, &p->destroy_timeout_ms,
                           &p->stream_timeout_ms};
    for (size_t i = 0; i < FL_ARRAY_SIZE(timeouts); i++)
        if (*timeouts[i] == 0)
            *timeouts[i] = POOL_TIMEOUT_MS;
    if (p->watch_tick_ms == 0)
        p->watch_tick_ms = WATCH_TICK_MS;
}

int fl_pool_conf_decode(fl_pool_conf_t *p, const fl_cnode_t *pool, fl_conf_err_t *err)
{
    fl_pool_conf_t np;
    memset(&np, 0, sizeof(np));
    const fl_cnode_t *sup = NULL;
    if (fl_cget_map(pool, "supervisor", &sup, err) < 0 ||
        fl_cget_fields(pool, &np, pool_fields, FL_ARRAY_SIZE(pool_fields), err) < 0 ||
        fl_conf_get_argv(pool, "command", &np.command, err) < 0)
        goto fail;
    np.supervisor = sup != NULL;
    pool_zero_defaults(&np);
    if (np.num_workers > MAX_NUM_WORKERS) {
        fl_cnode_error_value(fl_cnode_get(pool, "num_workers"), err,
                             "number of workers can't be more than 500");
        goto fail;
    }
    *p = np;
    return 0;
fail:
    fl_pool_conf_free(&np);
    return -1;
}

/* ------------------------------------------------------------------------------------------- */
/* sections                                                                                      */

/* An env map (server.env, server.on_init.env): keys upper-cased, values expanded again with the
 * plain $VAR syntax (no ":-"), as the server plugin does when it builds the worker environment. */
static int conf_env_map(const fl_cnode_t *sec, char ***out, size_t *nout, fl_conf_err_t *err)
{
    const fl_cnode_t *env;
    if (fl_cget_map(sec, "env", &env, err) < 0)
        return -1;
    for (size_t i = 0; env && i < env->n; i++) {
        const fl_cnode_t *kv = env->items[i];
        char *raw = NULL;
        if (fl_cget_str(kv, "", &raw, err) < 0)
            return -1;
        char *val = fl_env_expand(raw ? raw : "", false);
        fl_buf_t b = {0};
        int rc = (!val || fl_buf_printf(&b, "%s=%s", kv->key, val) < 0) ? -1 : 0;
        free(raw);
        free(val);
        if (rc == 0) {
            for (char *k = b.data; *k != '='; k++)
                *k = (char)toupper((unsigned char)*k);
        }
        if (rc < 0 || conf_strv_push(out, nout, b.data) < 0) {
            fl_buf_free(&b);
            return conf_oom(err);
        }
    }
    return 0;
}

static void conf_empty_null(char **s)
{
    if (*s && !**s) {
        free(*s);
        *s = NULL;
    }
}

/* server.on_init: a command the master runs once before the workers start. */
static int conf_on_init(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    const fl_cnode_t *oi = NULL;
    if (fl_cget_map(sec, "on_init", &oi, err) < 0)
        return -1;
    c->server.on_init.exec_timeout_ms = POOL_TIMEOUT_MS;
    if (!oi)
        return 0;
    c->server.on_init.enabled = true;
    if (fl_conf_get_argv(oi, "command", &c->server.on_init.command, err) < 0 ||
        fl_cget_duration_ms(oi, "exec_timeout", &c->server.on_init.exec_timeout_ms, err) < 0 ||
        fl_cget_bool(oi, "exit_on_error", &c->server.on_init.exit_on_error, err) < 0 ||
        fl_cget_str(oi, "user", &c->server.on_init.user, err) < 0 ||
        conf_env_map(oi, &c->server.on_init.env, &c->server.on_init.nenv, err) < 0)
        return -1;
    conf_empty_null(&c->server.on_init.user);
    if (c->server.on_init.exec_timeout_ms == 0)
        c->server.on_init.exec_timeout_ms = POOL_TIMEOUT_MS;
    if (c->server.on_init.command.argc == 0 || !*c->server.on_init.command.argv[0])
        return fl_cnode_error(fl_cnode_get(oi, "command") ? fl_cnode_get(oi, "command") : oi,
                              err, "the on_init command should not be empty");
    return 0;
}

static int conf_server(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    if (fl_conf_get_argv(sec, "command", &c->server.command, err) < 0 ||
        fl_cget_str(sec, "relay", &c->server.relay, err) < 0 ||
        fl_cget_str(sec, "user", &c->server.user, err) < 0 ||
        fl_cget_str(sec, "group", &c->server.group, err) < 0 ||
        conf_env_map(sec, &c->server.env, &c->server.nenv, err) < 0 || conf_on_init(c, sec, err) < 0)
        return -1;
    conf_empty_null(&c->server.user);
    conf_empty_null(&c->server.group);
    return conf_str_default(&c->server.relay, "pipes", err);
}

/* rpc: present = enabled, even when empty (`rpc: {}` or -o rpc.listen=...). */
static int conf_rpc(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    c->rpc.enabled = sec != NULL;
    if (!sec)
        return 0;
    if (fl_cget_str(sec, "listen", &c->rpc.listen, err) < 0)
        return -1;
    return conf_str_default(&c->rpc.listen, RPC_DEFAULT_LISTEN, err);
}

static const char *const conf_log_modes[] = {"development", "production", "raw", "off", "none",
                                             NULL};
static const char *const conf_log_levels[] = {"debug",  "info",  "warn",  "error",
                                              "dpanic", "panic", "fatal", NULL};

/* logs.channels.<logger>: raw values; log.c fills the gaps from the root (see log.h). */
static int conf_log_channels(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    const fl_cnode_t *chs = NULL;
    if (fl_cget_map(sec, "channels", &chs, err) < 0 || !chs)
        return 0;
    c->logs.channels = calloc(chs->n ? chs->n : 1, sizeof(*c->logs.channels));
    if (!c->logs.channels)
        return conf_oom(err);
    for (size_t i = 0; i < chs->n; i++) {
        struct fl_conf_log_channel *ch = &c->logs.channels[c->logs.nchannels++];
        const fl_cnode_t *n = chs->items[i];
        if (!(ch->name = strdup(n->key)))
            return conf_oom(err);
        if (fl_cget_map(chs, n->key, &n, err) < 0 || fl_cget_str(n, "mode", &ch->mode, err) < 0 ||
            fl_cget_str(n, "level", &ch->level, err) < 0 ||
            fl_cget_str(n, "encoding", &ch->encoding, err) < 0 ||
            fl_cget_strlist(n, "output", &ch->output, &ch->noutput, err) < 0 ||
            fl_cget_strlist(n, "err_output", &ch->err_output, &ch->nerr_output, err) < 0)
            return -1;
        conf_lower(ch->mode);
        conf_lower(ch->level);
        conf_lower(ch->encoding);
        if (ch->mode && !conf_in_set(ch->mode, conf_log_modes))
            ch->mode[0] = '\0';
        if (ch->level && !conf_in_set(ch->level, conf_log_levels)) {
            free(ch->level);
            ch->level = NULL;
        }
    }
    return 0;
}

static int conf_logs(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    const char *const *modes = conf_log_modes, *const *levels = conf_log_levels;
    if (fl_cget_str(sec, "mode", &c->logs.mode, err) < 0 ||
        fl_cget_str(sec, "level", &c->logs.level, err) < 0 ||
        fl_cget_str(sec, "encoding", &c->logs.encoding, err) < 0 ||
        fl_cget_strlist(sec, "output", &c->logs.output, &c->logs.noutput, err) < 0 ||
        fl_cget_strlist(sec, "err_output", &c->logs.err_output, &c->logs.nerr_output, err) < 0 ||
        conf_log_channels(c, sec, err) < 0)
        return -1;
    conf_lower(c->logs.mode);
    conf_lower(c->logs.level);
    conf_lower(c->logs.encoding);
    if (c->logs.mode && !conf_in_set(c->logs.mode, modes))
        c->logs.mode[0] = '\0'; /* unknown mode: zap's default branch, development */
    if (conf_str_default(&c->logs.mode, "development", err) < 0 ||
        conf_str_default(&c->logs.level, "debug", err) < 0)
        return -1;
    if (!conf_in_set(c->logs.level, levels)) {
        /* v2025 ignores a level it cannot parse: the mode's built-in level applies. */
        free(c->logs.level);
        c->logs.level = NULL;
    }
    bool prod = strcmp(c->logs.mode, "production") == 0;
    if (conf_str_default(&c->logs.encoding, prod ? "json" : "console", err) < 0)
        return -1;
    if (c->logs.noutput == 0) {
        fl_strlist_free(c->logs.output);
        c->logs.output = NULL;
        if (conf_strv_push(&c->logs.output, &c->logs.noutput, strdup("stderr")) < 0)
            return conf_oom(err);
    }
    return 0;
}

static int conf_http_checks(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    if (c->http.address && !*c->http.address) {
        free(c->http.address); /* "" (e.g. an unset ${VAR}): no plain listener */
        c->http.address = NULL;
    }
    if (c->http.address && !strchr(c->http.address, ':'))
        return fl_cnode_error_value(fl_cnode_get(sec, "address"), err,
                                    "malformed http server address, expected host:port");
    if (c->http.internal_error_code == 0)
        c->http.internal_error_code = 500;
    if (c->http.internal_error_code < 100 || c->http.internal_error_code > 999)
        return fl_cnode_error_value(fl_cnode_get(sec, "internal_error_code"), err,
                                    "expected an HTTP status code (100-999)");
    if (c->http.max_request_size == 0)
        c->http.max_request_size = MAX_REQUEST_MB << 20;
    return 0;
}

/* clang-format off */
#define HTTP_FIELD(path, kind, member) {path, kind, offsetof(fl_conf_t, http.member), 0}
/* clang-format on */

/* clang-format off */
#define HTTP_LIST(path, member, count)                                                           \
    {path, FL_CF_STRLIST, offsetof(fl_conf_t, http.member), offsetof(fl_conf_t, http.count)}
/* clang-format on */

static const fl_cfield_t http_fields[] = {
    HTTP_FIELD("address", FL_CF_STR, address),
    HTTP_FIELD("internal_error_code", FL_CF_INT, internal_error_code),
    HTTP_FIELD("max_request_size", FL_CF_SIZE_MB, max_request_size),
    HTTP_FIELD("raw_body", FL_CF_BOOL, raw_body),
    HTTP_FIELD("access_logs", FL_CF_BOOL, access_logs),
    HTTP_LIST("middleware", middleware, nmiddleware),
    HTTP_LIST("trusted_subnets", trusted_subnets, ntrusted_subnets),
    HTTP_FIELD("uploads.dir", FL_CF_STR, uploads.dir),
    HTTP_LIST("uploads.forbid", uploads.forbid, uploads.nforbid),
    HTTP_LIST("uploads.allow", uploads.allow, uploads.nallow),
    HTTP_FIELD("ssl.address", FL_CF_STR, ssl.address),
    HTTP_FIELD("ssl.redirect", FL_CF_BOOL, ssl.redirect),
    HTTP_FIELD("ssl.cert", FL_CF_STR, ssl.cert),
    HTTP_FIELD("ssl.key", FL_CF_STR, ssl.key),
    HTTP_FIELD("ssl.root_ca", FL_CF_STR, ssl.root_ca),
    HTTP_FIELD("read_header_timeout", FL_CF_DURATION_MS, read_header_timeout_ms),
    HTTP_FIELD("read_timeout", FL_CF_DURATION_MS, read_timeout_ms),
    HTTP_FIELD("write_timeout", FL_CF_DURATION_MS, write_timeout_ms),
    HTTP_FIELD("idle_timeout", FL_CF_DURATION_MS, idle_timeout_ms),
};

/* A CIDR as net.ParseCIDR accepts it: an IPv4 or IPv6 address, '/', a prefix length that fits. */
static bool conf_cidr_ok(const char *s)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || (size_t)(slash - s) >= INET6_ADDRSTRLEN || !slash[1])
        return false;
    char addr[INET6_ADDRSTRLEN];
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    unsigned char bin[16];
    int max = inet_pton(AF_INET, addr, bin) == 1 ? 32 : inet_pton(AF_INET6, addr, bin) == 1 ? 128 : -1;
    char *end;
    long bits = strtol(slash + 1, &end, 10);
    return max > 0 && *end == '\0' && isdigit((unsigned char)slash[1]) && bits >= 0 && bits <= max;
}

/* Extension lists are compared lower-cased, as RoadRunner does with the file's extension. */
static void conf_lower_list(char **list)
{
    for (; list && *list; list++)
        conf_lower(*list);
}

static int conf_http_ssl(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    static const char *const auth[] = {"no_client_cert", "request_client_cert",
                                       "require_any_client_cert", "verify_client_cert_if_given",
                                       "require_and_verify_client_cert", NULL};
    if (fl_cget_enum(sec, "ssl.client_auth_type", auth, &c->http.ssl.client_auth, err) < 0)
        return -1;
    c->http.ssl.enabled = (c->http.ssl.cert && *c->http.ssl.cert) ||
                          (c->http.ssl.key && *c->http.ssl.key);
    if (!c->http.ssl.enabled)
        return 0;
    if (conf_str_default(&c->http.ssl.address, "127.0.0.1:443", err) < 0)
        return -1;
    const char *colon = strrchr(c->http.ssl.address, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || !end || *end || port < 1 || port > 65535)
        return fl_cnode_error_value(fl_cnode_get(sec, "ssl.address"), err,
                                    "malformed ssl address, expected host:port");
    c->http.ssl.port = (unsigned)port;
    const char *files[][2] = {{"cert", c->http.ssl.cert ? c->http.ssl.cert : ""},
                              {"key", c->http.ssl.key ? c->http.ssl.key : ""},
                              {"root_ca", c->http.ssl.root_ca}};
    for (size_t i = 0; i < FL_ARRAY_SIZE(files); i++) {
        if (!files[i][1] || (i == 2 && !*files[i][1]) || access(files[i][1], R_OK) == 0)
            continue;
        char path[32];
        snprintf(path, sizeof(path), "ssl.%s", files[i][0]);
        const fl_cnode_t *n = fl_cnode_get(sec, path);
        if (n)
            return fl_cnode_error(n, err, "%s file '%.500s' does not exist or is not readable",
                                  files[i][0], files[i][1]);
        return fl_conf_error(err, "http.ssl.%s: %s file is required with TLS", files[i][0],
                             files[i][0]);
    }
    return 0;
}

/* forkline's own timeouts: absent or 0 means the default, never "no timeout". */
static void conf_http_timeouts(fl_conf_t *c)
{
    int64_t *t[] = {&c->http.read_header_timeout_ms, &c->http.read_timeout_ms,
                    &c->http.write_timeout_ms, &c->http.idle_timeout_ms};
    static const int64_t def[] = {60000, 60000, 60000, 75000};
    for (size_t i = 0; i < FL_ARRAY_SIZE(t); i++)
        if (*t[i] <= 0)
            *t[i] = def[i];
}

static int conf_http_extras(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    for (size_t i = 0; i < c->http.ntrusted_subnets; i++) {
        if (conf_cidr_ok(c->http.trusted_subnets[i]))
            continue;
        return fl_cnode_error(fl_cnode_get(sec, "trusted_subnets"), err,
                              "invalid CIDR address: %.200s", c->http.trusted_subnets[i]);
    }
    conf_lower_list(c->http.uploads.forbid);
    conf_lower_list(c->http.uploads.allow);
    if (c->http.uploads.dir && !*c->http.uploads.dir) {
        free(c->http.uploads.dir);
        c->http.uploads.dir = NULL;
    }
    conf_http_timeouts(c);
    return conf_http_ssl(c, sec, err);
}

/* ---- http.static ---- */

/* clang-format off */
#define STATIC_FIELD(path, kind, member)                                                         \
    {path, kind, offsetof(fl_conf_t, http.static_files.member), 0}
#define STATIC_LIST(path, member, count)                                                         \
    {path, FL_CF_STRLIST, offsetof(fl_conf_t, http.static_files.member),                          \
     offsetof(fl_conf_t, http.static_files.count)}
/* clang-format on */

static const fl_cfield_t static_fields[] = {
    STATIC_FIELD("static.dir", FL_CF_STR, dir),
    STATIC_LIST("static.forbid", forbid, nforbid),
    STATIC_LIST("static.allow", allow, nallow),
    STATIC_FIELD("static.calculate_etag", FL_CF_BOOL, calculate_etag),
    STATIC_FIELD("static.weak", FL_CF_BOOL, weak),
};

/* The tree lower-cased the keys; Go writes header names as textproto.CanonicalMIMEHeaderKey. */
static void conf_canonical_header(char *s)
{
    for (bool up = true; *s; s++) {
        *s = (char)(up ? toupper((unsigned char)*s) : tolower((unsigned char)*s));
        up = *s == '-';
    }
}

/* A map of header name → value, flattened to name, value, ..., NULL. */
static int conf_header_map(const fl_cnode_t *sec, const char *path, char ***dst, fl_conf_err_t *err)
{
    const fl_cnode_t *m = NULL;
    if (fl_cget_map(sec, path, &m, err) < 0)
        return -1;
    size_t n = 0;
    if (!m)
        return 0;
    for (size_t i = 0; i < m->n; i++) {
        const fl_cnode_t *it = m->items[i];
        char *val = NULL;
        if (it->type != FL_CNODE_SCALAR)
            return fl_cnode_error(it, err, "expected a header value (a string)");
        if (it->kind != FL_CSCALAR_NULL && !(val = strdup(it->value)))
            return conf_oom(err);
        if (!*it->key || strpbrk(it->key, " \t\r\n:()<>@,;\\\"/[]?={}") ||
            (val && strpbrk(val, "\r\n"))) {
            free(val);
            return fl_cnode_error(it, err, "not a valid header name or value");
        }
        char *name = strdup(it->key);
        if (name)
            conf_canonical_header(name);
        if (conf_strv_push(dst, &n, name) < 0 ||
            conf_strv_push(dst, &n, val ? val : strdup("")) < 0) {
            free(val);
            return conf_oom(err);
        }
    }
    return 0;
}

/* The section may exist without "static" in middleware: then it is checked but not used. */
static int conf_http_static(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    static const char *const symlinks[] = {"follow", "inside", "off", NULL}; /* static.h order */
    const fl_cnode_t *st = NULL;
    if (fl_cget_map(sec, "static", &st, err) < 0)
        return -1;
    if (!st)
        return 0;
    c->http.static_files.section = true;
    for (size_t i = 0; i < c->http.nmiddleware; i++)
        if (strcmp(c->http.middleware[i], "static") == 0)
            c->http.static_files.enabled = true;
    if (fl_cget_fields(sec, c, static_fields, FL_ARRAY_SIZE(static_fields), err) < 0 ||
        conf_header_map(st, "request", &c->http.static_files.request, err) < 0 ||
        conf_header_map(st, "response", &c->http.static_files.response, err) < 0 ||
        fl_cget_enum(st, "symlinks", symlinks, &c->http.static_files.symlinks, err) < 0)
        return -1;
    conf_lower_list(c->http.static_files.forbid);
    conf_lower_list(c->http.static_files.allow);
    char **dir = &c->http.static_files.dir;
    if (!*dir || !**dir)
        return fl_cnode_error(st, err, "dir is required");
    /* That it is a directory is checked when a generation starts (master.c gen_new), not here:
     * loading a config never depends on the file system (Octane's overrides name paths of the
     * machine the app runs on). */
    char cwd[PATH_MAX];
    if (**dir != '/' && getcwd(cwd, sizeof(cwd))) { /* reactors must not depend on the cwd */
        char *abs = NULL;
        if (asprintf(&abs, "%s/%s", cwd, *dir) < 0)
            return conf_oom(err);
        free(*dir);
        *dir = abs;
    }
    return 0;
}

static int conf_http(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    static const char *const codecs[] = {"proto", "json", NULL}; /* index = FL_CODEC_* */
    const fl_cnode_t *pool = NULL;
    c->http.enabled = sec != NULL;
    c->http.codec = FL_CODEC_PROTO;
    if (fl_cget_fields(sec, c, http_fields, FL_ARRAY_SIZE(http_fields), err) < 0 ||
        fl_cget_enum(sec, "codec", codecs, &c->http.codec, err) < 0 ||
        fl_cget_map(sec, "pool", &pool, err) < 0 ||
        fl_pool_conf_decode(&c->http.pool, pool, err) < 0)
        return -1;
    if (conf_http_extras(c, sec, err) < 0 || conf_http_static(c, sec, err) < 0)
        return -1;
    return conf_http_checks(c, sec, err);
}

/* jobs.pipelines.<name>.tls: true/false, or a map {root_ca, cert, key} (TLS on). */
static int conf_jredis_tls(struct fl_conf_jredis *r, const fl_cnode_t *base, fl_conf_err_t *err)
{
    const fl_cnode_t *t = fl_cnode_get(base, "tls");
    if (!t)
        return 0;
    if (t->type != FL_CNODE_MAP)
        return fl_cget_bool(base, "tls", &r->tls, err);
    r->tls = true;
    return fl_cget_str(t, "root_ca", &r->tls_root_ca, err) < 0 ||
                   fl_cget_str(t, "cert", &r->tls_cert, err) < 0 ||
                   fl_cget_str(t, "key", &r->tls_key, err) < 0
               ? -1
               : 0;
}

/* The redis driver's options (docs/jobs-redis.md); defaults are filled by master/jobs_redis.c. */
static int conf_jredis(struct fl_conf_pipeline *p, const fl_cnode_t *base, fl_conf_err_t *err)
{
    struct fl_conf_jredis *r = &p->redis;
    char **addrs = NULL;
    size_t naddrs = 0;
    if (fl_cget_strlist(base, "addrs", &addrs, &naddrs, err) < 0)
        return -1;
    if (naddrs > 1) {
        fl_strlist_free(addrs);
        return fl_cnode_error(fl_cnode_get(base, "addrs"), err,
                              "the redis jobs driver talks to one node: give one address");
    }
    if (naddrs == 1) {
        free(r->addr);
        r->addr = addrs[0];
        addrs[0] = NULL;
    }
    fl_strlist_free(addrs);
    if (fl_cget_str(base, "username", &r->username, err) < 0 ||
        fl_cget_str(base, "password", &r->password, err) < 0 ||
        fl_cget_int(base, "db", &r->db, err) < 0 || conf_jredis_tls(r, base, err) < 0 ||
        fl_cget_str(base, "stream", &r->stream, err) < 0 ||
        fl_cget_str(base, "group", &r->group, err) < 0 ||
        fl_cget_str(base, "consumer", &r->consumer, err) < 0 ||
        fl_cget_str(base, "delayed", &r->delayed, err) < 0 ||
        fl_cget_str(base, "dead_letter", &r->dead_letter, err) < 0 ||
        fl_cget_duration_ms(base, "visibility_timeout", &r->visibility_timeout_ms, err) < 0)
        return -1;
    const char *empty = r->stream && !*r->stream     ? "stream"
                        : r->group && !*r->group       ? "group"
                        : r->consumer && !*r->consumer ? "consumer"
                                                       : NULL;
    if (empty)
        return fl_cnode_error(fl_cnode_get(base, empty) ? fl_cnode_get(base, empty) : base, err,
                              "%s must not be empty", empty);
    return 0;
}

/* jobs.pipelines.<name>: options on the pipeline itself first, then under `config` (§2.9). */
static int conf_pipeline(struct fl_conf_pipeline *p, const fl_cnode_t *n, fl_conf_err_t *err)
{
    const fl_cnode_t *cfg = NULL;
    if (n->type != FL_CNODE_MAP)
        return fl_cnode_error(n, err, "expected a pipeline section (driver, config)");
    if (!(p->name = strdup(n->key)))
        return conf_oom(err);
    p->priority = 10;
    if (fl_cget_str(n, "driver", &p->driver, err) < 0 || fl_cget_map(n, "config", &cfg, err) < 0)
        return -1;
    bool redis = p->driver && strcasecmp(p->driver, "redis") == 0;
    if (!p->driver || (strcasecmp(p->driver, "memory") != 0 && !redis))
        return fl_cnode_error_value(fl_cnode_get(n, "driver") ? fl_cnode_get(n, "driver") : n, err,
                                    "unsupported jobs driver (forkline has memory and redis)");
    const fl_cnode_t *src[2] = {cfg, n};
    for (int i = 0; i < 2; i++)
        if (src[i] && (fl_cget_i64(src[i], "priority", &p->priority, err) < 0 ||
                       fl_cget_u64(src[i], "prefetch", &p->prefetch, err) < 0 ||
                       fl_cget_uint(src[i], "max_attempts", &p->max_attempts, err) < 0 ||
                       (redis && conf_jredis(p, src[i], err) < 0)))
            return -1;
    if (p->priority <= 0)
        p->priority = 10;
    return 0;
}

/* Two redis pipelines on one stream would steal each other's jobs. */
static int conf_jobs_streams(fl_conf_t *c, const fl_cnode_t *pl, fl_conf_err_t *err)
{
    for (size_t i = 0; i < c->jobs.npipelines; i++)
        for (size_t k = 0; k < i; k++) {
            const struct fl_conf_pipeline *a = &c->jobs.pipelines[k], *b = &c->jobs.pipelines[i];
            if (!a->redis.stream || !b->redis.stream || strcmp(a->redis.stream, b->redis.stream))
                continue;
            return fl_cnode_error(pl->items[i], err, "stream \"%s\" is already used by pipeline %s",
                                  b->redis.stream, a->name);
        }
    return 0;
}

static int conf_jobs(fl_conf_t *c, const fl_cnode_t *sec, fl_conf_err_t *err)
{
    const fl_cnode_t *pool = NULL, *pl = NULL;
    c->jobs.enabled = sec != NULL;
    c->jobs.timeout_ms = 60000;
    c->jobs.pipeline_size = 1000000;
    int64_t secs = 60;
    if (!sec)
        return 0;
    if (fl_cget_i64(sec, "timeout", &secs, err) < 0 ||
        fl_cget_strlist(sec, "consume", &c->jobs.consume, &c->jobs.nconsume, err) < 0 ||
        fl_cget_map(sec, "pool", &pool, err) < 0 || fl_cget_map(sec, "pipelines", &pl, err) < 0)
        return -1;
    c->jobs.timeout_ms = secs > 0 ? secs * 1000 : 60000;
    if (fl_cget_u64(sec, "pipeline_size", &c->jobs.pipeline_size, err) < 0)
        return -1;
    c->jobs.has_pool = pool != NULL;
    if (fl_pool_conf_decode(&c->jobs.pool, pool, err) < 0)
        return -1;
    if (pl && pl->n) {
        if (!(c->jobs.pipelines = calloc(pl->n, sizeof(*c->jobs.pipelines))))
            return conf_oom(err);
        for (size_t i = 0; i < pl->n; i++)
            if (conf_pipeline(&c->jobs.pipelines[c->jobs.npipelines++], pl->items[i], err) < 0)
                return -1;
    }
    return conf_jobs_streams(c, pl, err);
}

void fl_conf_pipeline_free(struct fl_conf_pipeline *p)
{
    struct fl_conf_jredis *r = &p->redis;
    char *strs[] = {p->name,        p->driver,      r->addr,         r->username,
                    r->password,    r->tls_root_ca, r->tls_cert,     r->tls_key,
                    r->stream,      r->group,       r->consumer,     r->delayed,
                    r->dead_letter};
    for (size_t i = 0; i < FL_ARRAY_SIZE(strs); i++)
        free(strs[i]);
    memset(p, 0, sizeof(*p));
}

static void conf_jobs_free(fl_conf_t *c)
{
    fl_pool_conf_free(&c->jobs.pool);
    fl_strlist_free(c->jobs.consume);
    for (size_t i = 0; i < c->jobs.npipelines; i++)
        fl_conf_pipeline_free(&c->jobs.pipelines[i]);
    free(c->jobs.pipelines);
}

/* forkline's own top-level key: `reactors: auto` (0) or 1..1024. */
static int conf_reactors(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    const fl_cnode_t *n = fl_cnode_get(root, "reactors");
    if (!n)
        return 0;
    if (n->type == FL_CNODE_SCALAR && (n->value[0] == '\0' || strcasecmp(n->value, "auto") == 0)) {
        c->reactors = 0;
        return 0;
    }
    unsigned v = 0;
    fl_conf_err_t ignored;
    if (fl_cget_uint(root, "reactors", &v, &ignored) < 0 || v < 1 || v > MAX_REACTORS)
        return fl_cnode_error_value(n, err, "expected \"auto\" or a number from 1 to 1024");
    c->reactors = v;
    return 0;
}

/* forkline's own top-level key: `cpu_affinity: auto|on|off` (auto when absent). */
static int conf_cpu_affinity(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    static const char *const modes[] = {"auto", "on", "off", NULL}; /* index = FL_AFFINITY_* */
    c->cpu_affinity = FL_AFFINITY_AUTO;
    return fl_cget_enum(root, "cpu_affinity", modes, &c->cpu_affinity, err);
}

/* forkline's own top-level key: `busy_poll: 100us` (the default), a duration up to 10ms, or 0 /
 * off. */
static int conf_busy_poll(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    c->busy_poll_us = FL_BUSY_POLL_US;
    const fl_cnode_t *n = fl_cnode_get(root, "busy_poll");
    if (!n)
        return 0;
    if (n->type != FL_CNODE_SCALAR)
        return fl_cnode_error(n, err, "expected a duration such as 100us, or off");
    if (strcasecmp(n->value, "off") == 0 || strcasecmp(n->value, "false") == 0) {
        c->busy_poll_us = 0;
        return 0;
    }
    int64_t ns;
    if (fl_parse_duration_ns(n->value, &ns, NULL) < 0 || ns < 0 || ns > 10000000)
        return fl_cnode_error_value(n, err,
                                    "expected a duration from 0 to 10ms (such as 100us), or off");
    c->busy_poll_us = (int)((ns + 999) / 1000);
    return 0;
}

typedef int (*conf_section_fn)(fl_conf_t *c, const fl_cnode_t *section, fl_conf_err_t *err);

/* Each decoder is called even when its section is absent (section NULL) so it can set defaults. */
static const struct {
    const char *key;
    conf_section_fn decode;
} conf_sections[] = {
    {"server", conf_server},
    {"rpc", conf_rpc},
    {"logs", conf_logs},
    {"http", conf_http},
    {"jobs", conf_jobs},
};

static int conf_decode_sections(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    if (conf_reactors(c, root, err) < 0 || conf_cpu_affinity(c, root, err) < 0 ||
        conf_busy_poll(c, root, err) < 0)
        return -1;
    for (size_t i = 0; i < FL_ARRAY_SIZE(conf_sections); i++) {
        const fl_cnode_t *sec;
        if (fl_cget_map(root, conf_sections[i].key, &sec, err) < 0 ||
            conf_sections[i].decode(c, sec, err) < 0)
            return -1;
    }
    return fl_conf_services(c, root, err); /* kv, metrics, status: svcconf.c */
}

/* The server plugin refuses to start without a command, and http cannot run without the server
 * plugin: so either section makes server.command required. */
static int conf_check_command(const fl_conf_t *c, const fl_ctree_t *t, fl_conf_err_t *err)
{
    const fl_cnode_t *server = fl_cnode_get(t->root, "server");
    if ((!server && !c->http.enabled) || c->server.command.argc > 0)
        return 0;
    const fl_cnode_t *cmd = fl_cnode_get(server, "command");
    if (cmd)
        return fl_cnode_error(cmd, err, "command should not be empty");
    char where[300];
    if (server) {
        fl_cnode_where(server, where, sizeof(where));
        return fl_conf_error(err, "%s%sserver.command: command should not be empty", where,
                             where[0] ? ": " : "");
    }
    return fl_conf_error(err,
                         "%s%sserver.command: command should not be empty (the http section "
                         "needs a server section with the worker command)",
                         t->file ? t->file : "", t->file ? ": " : "");
}

/* ------------------------------------------------------------------------------------------- */
/* version, include, endure                                                                      */

static int check_version(const fl_ctree_t *t, const fl_cnode_t **out, fl_conf_err_t *err)
{
    const fl_cnode_t *v = fl_cnode_get(t->root, "version");
    if (!v)
        return fl_conf_error(err, "%s%s" VERSION_MISSING, t->file ? t->file : "",
                             t->file ? ": " : "");
    if (v->type != FL_CNODE_SCALAR || v->kind != FL_CSCALAR_STR)
        return fl_cnode_error(v, err, "version should be a string, write version: \"3\"");
    *out = v;
    return 0;
}

static int conf_version(fl_conf_t *c, const fl_ctree_t *t, fl_conf_err_t *err)
{
    const fl_cnode_t *v = NULL;
    if (check_version(t, &v, err) < 0)
        return -1;
    if (!(c->version = strdup(v->value)))
        return conf_oom(err);
    return 0;
}

/* Like Go's filepath.Clean for an absolute path: drops "", "." and resolves "..". */
static void path_clean(char *p)
{
    size_t o = 0, i = 0, len = strlen(p);
    while (i < len) {
        while (p[i] == '/')
            i++;
        size_t start = i;
        while (i < len && p[i] != '/')
            i++;
        size_t seg = i - start;
        if (seg == 0 || (seg == 1 && p[start] == '.'))
            continue;
        if (seg == 2 && p[start] == '.' && p[start + 1] == '.') {
            while (o > 0 && p[--o] != '/') {
            }
            continue;
        }
        p[o++] = '/';
        memmove(p + o, p + start, seg); /* o <= start: the result never outruns the input */
        o += seg;
    }
    if (o == 0)
        p[o++] = '/';
    p[o] = '\0';
}

/* dir may be NULL (relative to the working directory). */
static char *path_join_abs(const char *dir, const char *file)
{
    char cwd[PATH_MAX];
    fl_buf_t b = {0};
    if (file[0] != '/' && !dir)
        dir = getcwd(cwd, sizeof(cwd));
    int rc = (file[0] == '/' || !dir) ? fl_buf_printf(&b, "%s", file)
                                      : fl_buf_printf(&b, "%s/%s", dir, file);
    if (rc < 0) {
        fl_buf_free(&b);
        return NULL;
    }
    if (b.data[0] == '/')
        path_clean(b.data);
    return b.data;
}

static char *dir_of(const char *path)
{
    char *d = strdup(path);
    char *slash = d ? strrchr(d, '/') : NULL;
    if (slash)
        *(slash == d ? slash + 1 : slash) = '\0';
    return d;
}

static int include_one(fl_conf_t *c, fl_ctree_t *t, const char *file, fl_conf_err_t *err)
{
    char *dir = c->path ? dir_of(c->path) : NULL;
    char *path = (c->path && !dir) ? NULL : path_join_abs(dir, file);
    free(dir);
    if (!path)
        return conf_oom(err);
    fl_ctree_t inc;
    const fl_cnode_t *v = NULL;
    int rc = fl_ctree_load(&inc, path, err);
    free(path);
    if (rc < 0)
        return -1;
    if (check_version(&inc, &v, err) < 0)
        rc = -1;
    else if (strcmp(v->value, c->version) != 0)
        rc = fl_cnode_error(v, err, "version in included file must be the same as in root (\"%s\")",
                            c->version);
    else if (fl_ctree_interpolate(&inc, err) < 0)
        rc = -1;
    if (rc < 0) {
        fl_ctree_free(&inc);
        return -1;
    }
    return fl_ctree_merge_top(t, &inc, err);
}

/* include: extra files whose top-level sections replace the root's (§1.1 6f). Relative paths are
 * relative to the config file's directory. Included files' own includes are not followed. */
static int conf_includes(fl_conf_t *c, fl_ctree_t *t, fl_conf_err_t *err)
{
    char **files = NULL;
    size_t n = 0;
    if (fl_cget_strlist(t->root, "include", &files, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (files[i][0])
            rc = include_one(c, t, files[i], err);
    fl_strlist_free(files);
    return rc;
}

/* endure is read from the file as written: no env expansion, no -o (§2.14). */
static int conf_endure(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    c->endure.grace_period_ms = 0;
    if (fl_cget_duration_ms(root, "endure.grace_period", &c->endure.grace_period_ms, err) < 0)
        return -1;
    if (c->endure.grace_period_ms == 0)
        c->endure.grace_period_ms = GRACE_PERIOD_MS;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* load                                                                                          */

static int conf_build(fl_conf_t *c, fl_ctree_t *t, const char *path, char *const *overrides,
                      size_t noverrides, fl_conf_err_t *err)
{
    if (path && !(c->path = path_join_abs(NULL, path)))
        return conf_oom(err);
    if (fl_ctree_load(t, c->path, err) < 0 || conf_endure(c, t->root, err) < 0 ||
        fl_ctree_interpolate(t, err) < 0)
        return -1;
    for (size_t i = 0; i < noverrides; i++)
        if (fl_ctree_override(t, overrides[i], err) < 0)
            return -1;
    if (conf_version(c, t, err) < 0 || conf_includes(c, t, err) < 0 ||
        conf_decode_sections(c, t->root, err) < 0)
        return -1;
    return conf_check_command(c, t, err);
}

int fl_conf_load(fl_conf_t *c, const char *path, char *const *overrides, size_t noverrides,
                 fl_conf_err_t *err)
{
    fl_conf_t nc;
    fl_ctree_t t;
    memset(&nc, 0, sizeof(nc));
    memset(&t, 0, sizeof(t));
    int rc = conf_build(&nc, &t, path, overrides, noverrides, err);
    fl_ctree_free(&t);
    if (rc < 0) {
        fl_conf_free(&nc);
        return -1;
    }
    *c = nc;
    return 0;
}

void fl_conf_free(fl_conf_t *c)
{
    free(c->path);
    free(c->version);
    fl_argv_free(&c->server.command);
    free(c->server.relay);
    fl_strlist_free(c->server.env);
    free(c->server.user);
    free(c->server.group);
    fl_argv_free(&c->server.on_init.command);
    fl_strlist_free(c->server.on_init.env);
    free(c->server.on_init.user);
    free(c->rpc.listen);
    free(c->logs.mode);
    free(c->logs.level);
    free(c->logs.encoding);
    fl_strlist_free(c->logs.output);
    fl_strlist_free(c->logs.err_output);
    for (size_t i = 0; i < c->logs.nchannels; i++) {
        struct fl_conf_log_channel *ch = &c->logs.channels[i];
        free(ch->name);
        free(ch->mode);
        free(ch->level);
        free(ch->encoding);
        fl_strlist_free(ch->output);
        fl_strlist_free(ch->err_output);
    }
    free(c->logs.channels);
    free(c->http.address);
    fl_strlist_free(c->http.middleware);
    fl_strlist_free(c->http.trusted_subnets);
    free(c->http.uploads.dir);
    fl_strlist_free(c->http.uploads.forbid);
    fl_strlist_free(c->http.uploads.allow);
    free(c->http.static_files.dir);
    fl_strlist_free(c->http.static_files.forbid);
    fl_strlist_free(c->http.static_files.allow);
    fl_strlist_free(c->http.static_files.request);
    fl_strlist_free(c->http.static_files.response);
    free(c->http.ssl.address);
    free(c->http.ssl.cert);
    free(c->http.ssl.key);
    free(c->http.ssl.root_ca);
    fl_pool_conf_free(&c->http.pool);
    fl_conf_services_free(c);
    conf_jobs_free(c);
    memset(c, 0, sizeof(*c));
}

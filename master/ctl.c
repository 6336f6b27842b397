/* `reset`, `workers`, `jobs`: RPC clients of a running server. See ctl.h and spec §3.3. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../protocols/rpc.h"
#include "conftree.h"
#include "ctl.h"
#include "pb.h"

#define CTL_TIMEOUT_MS 10000
/* A reset waits for new workers to boot: as long as the server's own reset_timeout allows. */
#define CTL_RESET_TIMEOUT_MS 300000
#define CTL_MAX_REPLY (256u * 1024 * 1024)

/* ---- config: only rpc.listen matters ---- */

char *fl_ctl_rpc_listen(const char *config, char *const *overrides, size_t n, char *err,
                        size_t errlen)
{
    fl_ctree_t t;
    fl_conf_err_t e;
    char *listen = NULL;
    memset(&t, 0, sizeof(t));
    int rc = fl_ctree_load(&t, config, &e) < 0 || fl_ctree_interpolate(&t, &e) < 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = fl_ctree_override(&t, overrides[i], &e);
    const fl_cnode_t *rpc = NULL;
    if (rc == 0)
        rc = fl_cget_map(t.root, "rpc", &rpc, &e);
    if (rc == 0 && rpc)
        rc = fl_cget_str(rpc, "listen", &listen, &e);
    if (rc < 0)
        snprintf(err, errlen, "%s", e.msg);
    else if (!fl_cnode_child(t.root, "rpc"))
        snprintf(err, errlen, "rpc service not specified in the configuration");
    else if (!listen || !*listen) {
        free(listen);
        listen = strdup("tcp://127.0.0.1:6001");
    }
    bool have_rpc = rc == 0 && fl_cnode_child(t.root, "rpc");
    fl_ctree_free(&t);
    if (!have_rpc) {
        free(listen);
        return NULL;
    }
    return listen;
}

/* ---- the client ---- */

static int ctl_connect_tcp(const char *addr, char *err, size_t errlen)
{
    const char *colon = strrchr(addr, ':');
    if (!colon) {
        snprintf(err, errlen, "invalid rpc address tcp://%s", addr);
        return -1;
    }
    char host[256];
    size_t hl = (size_t)(colon - addr);
    snprintf(host, sizeof(host), "%.*s", (int)hl, addr);
    char *h = host;
    if (h[0] == '[' && strlen(h) > 1 && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    int rc = getaddrinfo(*h ? h : "127.0.0.1", colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "rpc address %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            snprintf(err, errlen, "cannot connect to tcp://%s: %s", addr, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int ctl_connect_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "rpc socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "cannot connect to unix://%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int fl_rpc_client_connect(fl_rpc_client_t *c, const char *dsn, int timeout_ms, char *err,
                          size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : CTL_TIMEOUT_MS;
    if (strncmp(dsn, "tcp://", 6) == 0)
        c->fd = ctl_connect_tcp(dsn + 6, err, errlen);
    else if (strncmp(dsn, "unix://", 7) == 0)
        c->fd = ctl_connect_unix(dsn + 7, err, errlen);
    else {
        snprintf(err, errlen, "invalid rpc.listen %s (tcp://host:port or unix://path)", dsn);
        c->fd = -1;
    }
    return c->fd < 0 ? -1 : 0;
}

void fl_rpc_client_close(fl_rpc_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    fl_buf_free(&c->in);
}

int fl_rpc_client_send(fl_rpc_client_t *c, uint32_t seq, uint8_t codec, const char *method,
                       const void *arg, size_t len, char *err, size_t errlen)
{
    fl_buf_t b = {0};
    if (fl_rpc_encode_request(&b, seq, codec, fl_slice_cstr(method), arg, len) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t n = send(c->fd, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "rpc write failed: %s", strerror(errno));
            fl_buf_free(&b);
            return -1;
        }
        off += (size_t)n;
    }
    fl_buf_free(&b);
    return 0;
}

int fl_rpc_client_recv(fl_rpc_client_t *c, uint32_t *seq, bool *is_error, fl_buf_t *body, char *err,
                       size_t errlen)
{
    for (;;) {
        fl_frame_t f;
        fl_rpc_reply_t r;
        const char *why = NULL;
        ssize_t n = fl_frame_parse((const uint8_t *)c->in.data, c->in.len, CTL_MAX_REPLY, &f, &why);
        if (n > 0) {
            if (fl_rpc_parse_reply(&f, &r, &why) < 0) {
                snprintf(err, errlen, "bad RPC reply: %s", why);
                return -1;
            }
            *seq = r.seq;
            *is_error = r.error;
            body->len = 0;
            fl_buf_append(body, r.body.base, r.body.len);
            fl_buf_consume(&c->in, (size_t)n);
            return 0;
        }
        if (n < 0) {
            snprintf(err, errlen, "bad RPC reply: %s", why);
            return -1;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, c->timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            snprintf(err, errlen, "no RPC reply within %d ms", c->timeout_ms);
            return -1;
        }
        if (fl_buf_reserve(&c->in, 65536) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        ssize_t k = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, errlen, "rpc connection closed: %s", k == 0 ? "EOF" : strerror(errno));
            return -1;
        }
        c->in.len += (size_t)k;
    }
}

static uint32_t ctl_seq = 1;

int fl_rpc_client_call(fl_rpc_client_t *c, uint8_t codec, const char *method, const void *arg,
                       size_t len, fl_buf_t *body, char *err, size_t errlen)
{
    uint32_t seq = ctl_seq++, got;
    bool is_error;
    if (fl_rpc_client_send(c, seq, codec, method, arg, len, err, errlen) < 0 ||
        fl_rpc_client_recv(c, &got, &is_error, body, err, errlen) < 0)
        return -1;
    if (got != seq) {
        snprintf(err, errlen, "RPC sequence mismatch: sent %u, got %u", seq, got);
        return -1;
    }
    return is_error ? 1 : 0;
}

/* ---- shared helpers ---- */

/* Go's log package: "2006/01/02 15:04:05 message" on stderr. */
static void ctl_log(const char *fmt, const char *arg)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    fprintf(stderr, "%04d/%02d/%02d %02d:%02d:%02d ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
            tm.tm_hour, tm.tm_min, tm.tm_sec);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
}

static int ctl_open(const fl_ctl_opts_t *o, fl_rpc_client_t *c, int timeout_ms)
{
    char err[600];
    char *dsn = fl_ctl_rpc_listen(o->config, o->overrides, o->noverrides, err, sizeof(err));
    if (!dsn) {
        fprintf(stderr, "Error: %s\n", err);
        return -1;
    }
    int rc = fl_rpc_client_connect(c, dsn, timeout_ms, err, sizeof(err));
    free(dsn);
    if (rc < 0)
        fprintf(stderr, "Error: %s\n", err);
    return rc;
}

/* A JSON call whose reply is a list of strings (resetter.List, informer.List). */
static cJSON *ctl_call_json(fl_rpc_client_t *c, const char *method, const char *arg)
{
    fl_buf_t body = {0};
    char err[600];
    int rc = fl_rpc_client_call(c, FL_RPC_JSON, method, arg, strlen(arg), &body, err, sizeof(err));
    cJSON *v = NULL;
    if (rc < 0)
        fprintf(stderr, "Error: %s: %s\n", method, err);
    else if (rc == 1)
        fprintf(stderr, "Error: %s: %.*s\n", method, (int)body.len, body.data);
    else if (!(v = cJSON_ParseWithLength(body.data, body.len)))
        fprintf(stderr, "Error: %s: reply is not JSON\n", method);
    fl_buf_free(&body);
    return v;
}

/* The plugins named on the command line, or what `list_method` returns. */
static char **ctl_plugins(fl_rpc_client_t *c, const fl_ctl_opts_t *o, const char *list_method,
                          size_t *n)
{
    *n = 0;
    if (o->nargs) {
        char **v = calloc(o->nargs, sizeof(char *));
        for (size_t i = 0; v && i < o->nargs; i++)
            v[(*n)++] = strdup(o->args[i]);
        return v;
    }
    cJSON *list = ctl_call_json(c, list_method, "true");
    if (!list)
        return NULL;
    size_t cnt = cJSON_IsArray(list) ? (size_t)cJSON_GetArraySize(list) : 0;
    char **v = calloc(cnt ? cnt : 1, sizeof(char *));
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (v && cJSON_IsString(it))
            v[(*n)++] = strdup(it->valuestring);
    }
    cJSON_Delete(list);
    return v;
}

static void ctl_free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- reset ---- */

/* All resets in parallel on one connection, answered in any order (§3.3). */
int fl_ctl_reset(const fl_ctl_opts_t *o)
{
    fl_rpc_client_t c;
    if (ctl_open(o, &c, CTL_RESET_TIMEOUT_MS) < 0)
        return 1;
    size_t n;
    char **plugins = ctl_plugins(&c, o, "resetter.List", &n);
    if (!plugins) {
        fl_rpc_client_close(&c);
        return 1;
    }
    char err[600];
    int rc = 0;
    uint32_t first = ctl_seq;
    size_t sent = 0;
    for (; sent < n; sent++) {
        if (!o->silent)
            ctl_log("resetting plugin: [%s] ", plugins[sent]);
        fl_buf_t arg = {0};
        fl_rpc_json_string(&arg, plugins[sent], strlen(plugins[sent]));
        int s = fl_rpc_client_send(&c, ctl_seq++, FL_RPC_JSON, "resetter.Reset", arg.data, arg.len,
                                   err, sizeof(err));
        fl_buf_free(&arg);
        if (s < 0) {
            fprintf(stderr, "Error: %s\n", err);
            rc = 1;
            break;
        }
    }
    fl_buf_t body = {0};
    for (size_t done = 0; done < sent; done++) {
        uint32_t seq;
        bool is_error;
        if (fl_rpc_client_recv(&c, &seq, &is_error, &body, err, sizeof(err)) < 0) {
            fprintf(stderr, "Error: %s\n", err);
            rc = 1;
            break;
        }
        const char *name = seq >= first && seq - first < n ? plugins[seq - first] : "?";
        if (is_error) {
            /* Unlike rr, a failed reset is an error exit: a deploy script should notice. */
            fprintf(stderr, "Error: reset of [%s] failed: %.*s\n", name, (int)body.len, body.data);
            rc = 1;
        } else if (!o->silent) {
            ctl_log("plugin reset: [%s]", name);
        }
    }
    fl_buf_free(&body);
    ctl_free_list(plugins, n);
    fl_rpc_client_close(&c);
    return rc;
}

/* ---- workers ---- */

void fl_ctl_human_bytes(uint64_t n, char *out, size_t len)
{
    static const char *const sizes[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (n < 10) {
        snprintf(out, len, "%llu B", (unsigned long long)n);
        return;
    }
    int e = 0;
    double v = (double)n;
    while (v >= 1000 && e < 6) {
        v /= 1000;
        e++;
    }
    double val = (double)(long long)(v * 10 + 0.5) / 10;
    snprintf(out, len, val < 10 ? "%.1f %s" : "%.0f %s", val, sizes[e]);
}

void fl_ctl_human_ago(int64_t s, char *out, size_t len)
{
    static const struct {
        int64_t below, unit;
        const char *one, *many;
    } mags[] = {
        {1, 1, "now", NULL},
        {2, 1, "1 second ago", NULL},
        {60, 1, NULL, "%lld seconds ago"},
        {120, 1, "1 minute ago", NULL},
        {3600, 60, NULL, "%lld minutes ago"},
        {7200, 1, "1 hour ago", NULL},
        {86400, 3600, NULL, "%lld hours ago"},
        {172800, 1, "1 day ago", NULL},
        {604800, 86400, NULL, "%lld days ago"},
        {1209600, 1, "1 week ago", NULL},
        {2592000, 604800, NULL, "%lld weeks ago"},
    };
    if (s < 0)
        s = 0;
    for (size_t i = 0; i < FL_ARRAY_SIZE(mags); i++) {
        if (s < mags[i].below) {
            if (mags[i].one)
                snprintf(out, len, "%s", mags[i].one);
            else
                snprintf(out, len, mags[i].many, (long long)(s / mags[i].unit));
            return;
        }
    }
    snprintf(out, len, "%lld months ago", (long long)(s / 2592000));
}

/* humanize.Comma: 1234567 -> "1,234,567". */
static void ctl_comma(uint64_t v, char *out, size_t len)
{
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
}

#define CTL_COLS 6

/* tablewriter's ASCII layout: +---+ borders, upper-case centred header, left-aligned cells. */
static void ctl_table_rule(const size_t *w, int ncols)
{
    for (int i = 0; i < ncols; i++) {
        putchar('+');
        for (size_t k = 0; k < w[i] + 2; k++)
            putchar('-');
    }
    puts("+");
}

static void ctl_table(const char *const *head, int ncols, char (*cells)[CTL_COLS][64], size_t rows)
{
    size_t w[CTL_COLS];
    for (int i = 0; i < ncols; i++) {
        w[i] = strlen(head[i]);
        for (size_t r = 0; r < rows; r++)
            if (strlen(cells[r][i]) > w[i])
                w[i] = strlen(cells[r][i]);
    }
    ctl_table_rule(w, ncols);
    for (int i = 0; i < ncols; i++) {
        size_t pad = w[i] - strlen(head[i]);
        printf("| %*s%s%*s ", (int)(pad / 2), "", head[i], (int)(pad - pad / 2), "");
    }
    puts("|");
    ctl_table_rule(w, ncols);
    for (size_t r = 0; r < rows; r++) {
        for (int i = 0; i < ncols; i++)
            printf("| %-*s ", (int)w[i], cells[r][i]);
        puts("|");
    }
    ctl_table_rule(w, ncols);
}

static int ctl_cmp_pid(const void *a, const void *b)
{
    long x = atol(((const char(*)[64])a)[0]), y = atol(((const char(*)[64])b)[0]);
    return (x > y) - (x < y);
}

static double ctl_num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void ctl_show_workers(const char *plugin, const cJSON *workers)
{
    static const char *const head[] = {"PID", "STATUS", "EXECS", "MEMORY", "CPU%", "CREATED"};
    size_t n = cJSON_IsArray(workers) ? (size_t)cJSON_GetArraySize(workers) : 0;
    if (n == 0)
        return;
    char(*cells)[CTL_COLS][64] = calloc(n, sizeof(*cells));
    if (!cells)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t r = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, workers)
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(w, "statusStr");
        double created_ns = ctl_num(w, "created");
        snprintf(cells[r][0], 64, "%.0f", ctl_num(w, "pid"));
        snprintf(cells[r][1], 64, "%s", cJSON_IsString(st) ? st->valuestring : "?");
        ctl_comma((uint64_t)ctl_num(w, "numExecs"), cells[r][2], 64);
        fl_ctl_human_bytes((uint64_t)ctl_num(w, "memoryUsage"), cells[r][3], 64);
        snprintf(cells[r][4], 64, "%.2f", ctl_num(w, "CPUPercent"));
        fl_ctl_human_ago((int64_t)now.tv_sec - (int64_t)(created_ns / 1e9), cells[r][5], 64);
        r++;
    }
    qsort(cells, r, sizeof(*cells), ctl_cmp_pid);
    printf("Workers of [%s]:\n", plugin);
    ctl_table(head, CTL_COLS, cells, r);
    free(cells);
}

static int ctl_workers_once(fl_rpc_client_t *c, char **plugins, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fl_buf_t arg = {0};
        if (fl_rpc_json_string(&arg, plugins[i], strlen(plugins[i])) < 0 ||
            fl_buf_append(&arg, "", 1) < 0) {
            fl_buf_free(&arg);
            return -1;
        }
        cJSON *v = ctl_call_json(c, "informer.Workers", arg.data);
        fl_buf_free(&arg);
        if (!v)
            return -1;
        ctl_show_workers(plugins[i], cJSON_GetObjectItemCaseSensitive(v, "workers"));
        cJSON_Delete(v);
    }
    fflush(stdout);
    return 0;
}

static volatile sig_atomic_t ctl_stop;

static void ctl_on_signal(int sig)
{
    FL_UNUSED(sig);
    ctl_stop = 1;
}

int fl_ctl_workers(const fl_ctl_opts_t *o)
{
    fl_rpc_client_t c;
    if (ctl_open(o, &c, CTL_TIMEOUT_MS) < 0)
        return 1;
    size_t n;
    char **plugins = ctl_plugins(&c, o, "informer.List", &n);
    int rc = plugins ? 0 : 1;
    if (plugins && !o->interactive) {
        rc = ctl_workers_once(&c, plugins, n) < 0 ? 1 : 0;
    } else if (plugins) {
        struct sigaction sa = {.sa_handler = ctl_on_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        fputs("\033[2J", stdout);
        while (!ctl_stop) {
            fputs("\033[1;1H", stdout);
            if (ctl_workers_once(&c, plugins, n) < 0) {
                rc = 1;
                break;
            }
            struct timespec ts = {1, 0};
            while (!ctl_stop && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
            }
        }
    }
    if (plugins)
        ctl_free_list(plugins, n);
    fl_rpc_client_close(&c);
    return rc;
}

/* ---- jobs (proto jobs.v1) ---- */

/* Pipelines{pipelines=1 repeated string} from "a,b,c". */
static void ctl_pipelines(fl_buf_t *b, const char *csv)
{
    while (csv && *csv) {
        size_t n = strcspn(csv, ",");
        if (n)
            pb_put_bytes(b, 1, csv, n);
        csv += n + (csv[n] == ',');
    }
}

int fl_ctl_jobs(const fl_ctl_opts_t *o)
{
    static const char *const methods[][2] = {{"list", "jobs.List"},
                                             {"pause", "jobs.Pause"},
                                             {"resume", "jobs.Resume"},
                                             {"destroy", "jobs.Destroy"}};
    const char *method = NULL;
    for (size_t i = 0; o->jobs_mode && i < FL_ARRAY_SIZE(methods); i++)
        if (strcmp(o->jobs_mode, methods[i][0]) == 0)
            method = methods[i][1];
    if (!method) {
        fprintf(stderr, "Error: command should be in form of: `rr jobs --pause pipe1,pipe2`, "
                        "`--resume`, `--destroy` or `--list`\n");
        return 1;
    }
    if (strcmp(o->jobs_mode, "list") != 0 && (!o->jobs_arg || !*o->jobs_arg)) {
        fprintf(stderr, "Error: --%s needs the comma-separated pipelines, e.g. --%s p1,p2\n",
                o->jobs_mode, o->jobs_mode);
        return 1;
    }
    fl_rpc_client_t c;
    if (ctl_open(o, &c, CTL_TIMEOUT_MS) < 0)
        return 1;
    fl_buf_t arg = {0}, body = {0};
    ctl_pipelines(&arg, o->jobs_arg);
    char err[600];
    int rc =
        fl_rpc_client_call(&c, FL_RPC_PROTO, method, arg.data, arg.len, &body, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "Error: %s: %s\n", method, err);
    else if (rc == 1)
        fprintf(stderr, "Error: %s: %.*s\n", method, (int)body.len, body.data);
    else if (!o->silent || strcmp(o->jobs_mode, "list") == 0) {
        const uint8_t *p = (const uint8_t *)body.data, *end = p + body.len;
        pb_field_t f;
        printf("Pipeline(s)\n");
        while (pb_next_field(&p, end, &f) == 1)
            if (f.field == 1 && f.wire == PB_LEN)
                printf("%.*s\n", (int)f.len, (const char *)f.data);
    }
    fl_buf_free(&arg);
    fl_buf_free(&body);
    fl_rpc_client_close(&c);
    return rc == 0 ? 0 : 1;
}

/* The reactor's answers to the master's informer / resetter requests. See informer.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "informer.h"
#include "log.h"

#define INFORMER_TICK_MS 50
#define INFORMER_MAX_WORKERS 1024

static int64_t informer_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* gopsutil's CPUPercent: CPU time used over the process's whole life, in percent. */
static double informer_cpu_percent(pid_t pid, int64_t created_ns)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    double alive = (double)(informer_unix_ns() - created_ns) / 1e9;
    if (hz <= 0 || alive <= 0)
        return 0;
    return (double)(utime + stime) / (double)hz / alive * 100.0;
}

size_t fl_informer_workers_json(const fl_pool_t *p, char *out, size_t cap)
{
    static fl_worker_info_t w[INFORMER_MAX_WORKERS];
    size_t n = p ? fl_pool_workers(p, w, INFORMER_MAX_WORKERS) : 0;
    size_t len = 0;
    if (cap < 3)
        return 0;
    out[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        char item[512];
        int k =
            snprintf(item, sizeof(item),
                     "%s{\"pid\":%d,\"status\":%d,\"numExecs\":%llu,\"created\":%lld,"
                     "\"memoryUsage\":%llu,\"CPUPercent\":%.4g,\"command\":\"\","
                     "\"statusStr\":\"%s\"}",
                     len > 1 ? "," : "", (int)w[i].pid, w[i].status,
                     (unsigned long long)w[i].num_execs, (long long)w[i].created_ns,
                     (unsigned long long)w[i].rss, informer_cpu_percent(w[i].pid, w[i].created_ns),
                     w[i].status_str ? w[i].status_str : "undefined");
        if (k < 0 || (size_t)k >= sizeof(item) || len + (size_t)k + 1 >= cap)
            break; /* what does not fit one channel message is left out */
        memcpy(out + len, item, (size_t)k);
        len += (size_t)k;
    }
    out[len++] = ']';
    out[len] = 0;
    return len;
}

bool fl_informer_reset_done(const fl_pool_t *p, int64_t since_ns)
{
    static fl_worker_info_t w[INFORMER_MAX_WORKERS];
    size_t n = p ? fl_pool_workers(p, w, INFORMER_MAX_WORKERS) : 0;
    for (size_t i = 0; i < n; i++)
        if (w[i].created_ns < since_ns ||
            (w[i].status != FL_W_READY && w[i].status != FL_W_WORKING))
            return false;
    return true;
}

static void informer_send(fl_informer_t *in, const char *msg, size_t n)
{
    if (send(in->chan, msg, n, MSG_NOSIGNAL) < 0)
        fl_warn("cannot answer the master: %s", strerror(errno));
}

static void informer_tick(fl_loop_t *loop, void *data);

static void informer_scale_done(fl_informer_t *in, unsigned id, const char *error)
{
    char msg[160];
    int k = snprintf(msg, sizeof(msg), FL_MSG_SCALE_DONE "%u%s%s", id, error ? " " : "",
                     error ? error : "");
    informer_send(in, msg, (size_t)k);
}

static void informer_arm(fl_informer_t *in)
{
    if ((in->nresets || in->nscales) && !in->tick)
        in->tick = fl_timer_add(in->loop, INFORMER_TICK_MS, informer_tick, in);
}

static void informer_tick(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_informer_t *in = data;
    in->tick = 0;
    int64_t now = fl_now_ms();
    for (unsigned i = 0; i < in->nresets;) {
        bool done = fl_informer_reset_done(in->pool, in->resets[i].since_ns);
        if (!done && now < in->resets[i].deadline_ms) {
            i++;
            continue;
        }
        char msg[128];
        int k = snprintf(msg, sizeof(msg), FL_MSG_RESET_DONE "%u%s", in->resets[i].id,
                         done ? "" : " the new workers did not become ready in time");
        informer_send(in, msg, (size_t)k);
        in->resets[i] = in->resets[--in->nresets];
    }
    bool settled = fl_pool_settled(in->pool);
    for (unsigned i = 0; i < in->nscales;) {
        if (!settled && now < in->scales[i].deadline_ms) {
            i++;
            continue;
        }
        informer_scale_done(in, in->scales[i].id,
                            settled ? NULL : "the pool did not reach its new size in time");
        in->scales[i] = in->scales[--in->nscales];
    }
    informer_arm(in);
}

/* "SCALE <id> +1" / "SCALE <id> -1": informer.AddWorker / RemoveWorker on this reactor's pool. */
static void informer_scale(fl_informer_t *in, unsigned id, bool add)
{
    if (in->nscales == FL_INFORMER_MAX_RESETS) {
        informer_scale_done(in, id, "too many scale requests at once");
        return;
    }
    if ((add ? fl_pool_add_worker(in->pool) : fl_pool_remove_worker(in->pool)) < 0) {
        informer_scale_done(in, id,
                            add ? "cannot add a worker (the pool is stopping)"
                                : "cannot remove the last worker of a reactor");
        return;
    }
    in->scales[in->nscales].id = id;
    in->scales[in->nscales].deadline_ms = fl_now_ms() + in->timeout_ms;
    in->nscales++;
    if (in->on_scale)
        in->on_scale(in->scale_data, add ? +1 : -1);
    informer_arm(in);
}

void fl_informer_init(fl_informer_t *in, fl_loop_t *loop, fl_pool_t *pool, int chan,
                      int64_t timeout_ms)
{
    memset(in, 0, sizeof(*in));
    in->loop = loop;
    in->pool = pool;
    in->chan = chan;
    in->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
}

static bool informer_id(const char *msg, size_t n, size_t plen, unsigned *id)
{
    char tmp[32];
    if (n <= plen || n - plen >= sizeof(tmp))
        return false;
    memcpy(tmp, msg + plen, n - plen);
    tmp[n - plen] = 0;
    char *end;
    unsigned long v = strtoul(tmp, &end, 10);
    *id = (unsigned)v;
    return *end == 0 && end != tmp;
}

bool fl_informer_handle(fl_informer_t *in, const char *msg, size_t n)
{
    unsigned id;
    size_t wl = strlen(FL_MSG_WORKERS), rl = strlen(FL_MSG_RESET_ID);
    if (n > wl && memcmp(msg, FL_MSG_WORKERS, wl) == 0 && informer_id(msg, n, wl, &id)) {
        static char out[FL_INFORMER_MSG_MAX];
        int k = snprintf(out, 64, FL_MSG_WORKERS "%u ", id);
        size_t len = fl_informer_workers_json(in->pool, out + k, sizeof(out) - (size_t)k);
        informer_send(in, out, (size_t)k + len);
        return true;
    }
    if (n > rl && memcmp(msg, FL_MSG_RESET_ID, rl) == 0 && informer_id(msg, n, rl, &id)) {
        if (in->nresets == FL_INFORMER_MAX_RESETS) {
            char m[96];
            int k = snprintf(m, sizeof(m), FL_MSG_RESET_DONE "%u too many resets at once", id);
            informer_send(in, m, (size_t)k);
            return true;
        }
        int64_t since = informer_unix_ns();
        fl_pool_reset(in->pool);
        in->resets[in->nresets].id = id;
        in->resets[in->nresets].since_ns = since;
        in->resets[in->nresets].deadline_ms = fl_now_ms() + in->timeout_ms;
        in->nresets++;
        informer_arm(in);
        return true;
    }
    size_t sl = strlen(FL_MSG_SCALE);
    if (n > sl + 3 && memcmp(msg, FL_MSG_SCALE, sl) == 0 && msg[n - 3] == ' ' &&
        (msg[n - 2] == '+' || msg[n - 2] == '-') && msg[n - 1] == '1' &&
        informer_id(msg, n - 3, sl, &id)) {
        informer_scale(in, id, msg[n - 2] == '+');
        return true;
    }
    return false;
}

void fl_informer_stop(fl_informer_t *in)
{
    fl_timer_del(in->loop, in->tick);
    in->tick = 0;
    in->nresets = 0;
    in->nscales = 0;
}

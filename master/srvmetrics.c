/* See srvmetrics.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "srvmetrics.h"

fl_srvm_slot_t *fl_srvm_self;

const uint64_t fl_srvm_bucket_ns[FL_SRVM_NBUCKETS] = {
    5000000,   10000000,   25000000,   50000000,   100000000,   250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
static const char *const bucket_le[FL_SRVM_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};
const char *const fl_srvm_method_names[FL_SRVM_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
};
static const char *const pool_names[FL_SRVM_POOLS] = {"http", "jobs"};

typedef struct {
    const char *name; /* a method table's static string */
    uint64_t n;
} rpc_count_t;

typedef struct {
    char *name; /* a pipeline */
    uint64_t n[FL_SRVM_JOB_NCOUNTS];
} job_count_t;

static struct {
    bool on, jobs;
    fl_srvm_slot_t *seg;
    pid_t owner[FL_SRVM_SLOTS]; /* 0 = free */
    unsigned used;              /* slots below this index may be owned */
    fl_srvm_counters_t total;   /* counters of the reactors that exited */
    rpc_count_t *rpc;
    size_t nrpc, caprpc;
    job_count_t *pipes; /* every pipeline that ever counted, destroyed ones included */
    size_t npipes;
} S;

int fl_srvm_init(bool jobs)
{
    if (S.on)
        return 0;
    void *p = mmap(NULL, sizeof(fl_srvm_slot_t) * FL_SRVM_SLOTS, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fl_error("metrics: cannot map the shared counters: %s", strerror(errno));
        return -1;
    }
    memset(&S, 0, sizeof(S));
    S.seg = p;
    S.on = true;
    S.jobs = jobs;
    return 0;
}

bool fl_srvm_enabled(void)
{
    return S.on;
}

void fl_srvm_free(void)
{
    if (!S.on)
        return;
    munmap(S.seg, sizeof(fl_srvm_slot_t) * FL_SRVM_SLOTS);
    free(S.rpc);
    for (size_t i = 0; i < S.npipes; i++)
        free(S.pipes[i].name);
    free(S.pipes);
    memset(&S, 0, sizeof(S));
    fl_srvm_self = NULL;
}

int fl_srvm_acquire(void)
{
    if (!S.on)
        return -1;
    for (unsigned i = 0; i < FL_SRVM_SLOTS; i++) {
        if (S.owner[i] == 0) {
            S.owner[i] = -1; /* reserved until the fork says who owns it */
            if (i >= S.used)
                S.used = i + 1;
            return (int)i;
        }
    }
    fl_warn("metrics: all %d shared counter slots are taken: this reactor is not counted",
            FL_SRVM_SLOTS);
    return -1;
}

void fl_srvm_forked(int slot, pid_t pid)
{
    if (slot < 0 || !S.on)
        return;
    if (pid == 0)
        fl_srvm_self = &S.seg[slot];
    else if (pid > 0)
        S.owner[slot] = pid;
    else
        S.owner[slot] = 0;
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* out += the counters of c (gauges too when with_gauges). */
static void add_counters(fl_srvm_counters_t *out, const fl_srvm_counters_t *c, bool with_gauges)
{
    for (int m = 0; m < FL_SRVM_METHODS; m++)
        for (int k = 0; k < FL_SRVM_CLASSES; k++)
            out->requests[m][k] += LOAD(c->requests[m][k]);
    for (int k = 0; k < FL_SRVM_CLASSES; k++) {
        for (int b = 0; b <= FL_SRVM_NBUCKETS; b++)
            out->dur_bucket[k][b] += LOAD(c->dur_bucket[k][b]);
        out->dur_sum_ns[k] += LOAD(c->dur_sum_ns[k]);
    }
    out->bytes_in += LOAD(c->bytes_in);
    out->bytes_out += LOAD(c->bytes_out);
    for (int p = 0; p < FL_SRVM_POOLS; p++) {
        for (int s = 0; s < FL_W_NSTATES; s++) {
            out->restarts[p][s] += LOAD(c->restarts[p][s]);
            if (with_gauges)
                out->workers[p][s] += LOAD(c->workers[p][s]);
        }
        if (with_gauges)
            out->queued[p] += LOAD(c->queued[p]);
    }
}

void fl_srvm_exited(pid_t pid)
{
    if (!S.on || pid <= 0)
        return;
    for (unsigned i = 0; i < S.used; i++) {
        if (S.owner[i] != pid)
            continue;
        /* It can no longer write: keep its counters, drop its gauges, free the slot. */
        add_counters(&S.total, &S.seg[i].c, false);
        memset(&S.seg[i], 0, sizeof(S.seg[i]));
        S.owner[i] = 0;
        while (S.used && S.owner[S.used - 1] == 0)
            S.used--;
        return;
    }
}

void fl_srvm_sum(fl_srvm_counters_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!S.on)
        return;
    add_counters(out, &S.total, false);
    for (unsigned i = 0; i < S.used; i++)
        if (S.owner[i] > 0)
            add_counters(out, &S.seg[i].c, true);
}

void fl_srvm_rpc_call(const char *method)
{
    if (!S.on || !method)
        return;
    for (size_t i = 0; i < S.nrpc; i++) {
        if (S.rpc[i].name == method || strcmp(S.rpc[i].name, method) == 0) {
            S.rpc[i].n++;
            return;
        }
    }
    if (S.nrpc == S.caprpc) {
        size_t cap = S.caprpc ? 2 * S.caprpc : 32;
        rpc_count_t *p = realloc(S.rpc, cap * sizeof(*p));
        if (!p)
            return;
        S.rpc = p;
        S.caprpc = cap;
    }
    S.rpc[S.nrpc++] = (rpc_count_t){method, 1};
}

/* ---- text exposition (format 0.0.4) ---- */

static int put_family(fl_buf_t *b, const char *name, const char *type, const char *help)
{
    return fl_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format wants (backslash, quote, newline). */
static int put_label(fl_buf_t *b, const char *v)
{
    int rc = 0;
    for (const char *p = v; *p && rc == 0; p++) {
        if (*p == '\\' || *p == '"')
            rc = fl_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            rc = fl_buf_puts(b, "\\n");
        else
            rc = fl_buf_append(b, p, 1);
    }
    return rc;
}

static int render_http(fl_buf_t *b, const fl_srvm_counters_t *t)
{
    static const char *const cls[FL_SRVM_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    int rc = put_family(b, "rr_http_request_total", "counter",
                        "Total number of handled HTTP requests, by status class and method.");
    for (int m = 0; m < FL_SRVM_METHODS; m++)
        for (int k = 0; k < FL_SRVM_CLASSES; k++)
            if (t->requests[m][k])
                rc |= fl_buf_printf(b, "rr_http_request_total{method=\"%s\",status=\"%s\"} %llu\n",
                                    fl_srvm_method_names[m], cls[k],
                                    (unsigned long long)t->requests[m][k]);
    rc |= put_family(b, "rr_http_request_duration_seconds", "histogram",
                     "HTTP request duration, from the end of its head to the end of its response.");
    for (int k = 0; k < FL_SRVM_CLASSES; k++) {
        uint64_t cum = 0;
        for (int i = 0; i <= FL_SRVM_NBUCKETS; i++)
            cum += t->dur_bucket[k][i];
        if (!cum)
            continue;
        uint64_t run = 0;
        for (int i = 0; i < FL_SRVM_NBUCKETS; i++) {
            run += t->dur_bucket[k][i];
            rc |= fl_buf_printf(
                b, "rr_http_request_duration_seconds_bucket{status=\"%s\",le=\"%s\"} %llu\n",
                cls[k], bucket_le[i], (unsigned long long)run);
        }
        rc |= fl_buf_printf(b,
                            "rr_http_request_duration_seconds_bucket{status=\"%s\",le=\"+Inf\"} "
                            "%llu\nrr_http_request_duration_seconds_sum{status=\"%s\"} %.9f\n"
                            "rr_http_request_duration_seconds_count{status=\"%s\"} %llu\n",
                            cls[k], (unsigned long long)cum, cls[k], (double)t->dur_sum_ns[k] / 1e9,
                            cls[k], (unsigned long long)cum);
    }
    rc |=
        put_family(b, "rr_http_read_bytes_total", "counter", "Bytes of HTTP request bodies read.");
    rc |= fl_buf_printf(b, "rr_http_read_bytes_total %llu\n", (unsigned long long)t->bytes_in);
    rc |= put_family(b, "rr_http_write_bytes_total", "counter",
                     "Bytes of HTTP response bodies written.");
    rc |= fl_buf_printf(b, "rr_http_write_bytes_total %llu\n", (unsigned long long)t->bytes_out);
    return rc ? -1 : 0;
}

/* One gauge family of a pool: name suffix, help, value. */
static int pool_gauge(fl_buf_t *b, const char *pool, const char *suffix, const char *help,
                      long long v)
{
    int rc = fl_buf_printf(b, "# HELP rr_%s_%s %s\n# TYPE rr_%s_%s gauge\n", pool, suffix, help,
                           pool, suffix);
    return rc | fl_buf_printf(b, "rr_%s_%s %lld\n", pool, suffix, v);
}

static int render_pool(fl_buf_t *b, const fl_srvm_counters_t *t, int p)
{
    const char *pn = pool_names[p];
    const int64_t *w = t->workers[p];
    long long total = 0, invalid = 0;
    for (int s = 0; s < FL_W_NSTATES; s++)
        total += w[s];
    /* RoadRunner's "invalid": invalid, killing, destroyed, errored, inactive */
    invalid = w[FL_W_INVALID] + w[FL_W_DESTROYED] + w[FL_W_ERRORED] + w[FL_W_INACTIVE];
    int rc = pool_gauge(b, pn, "total_workers", "Live PHP workers of the pool.", total);
    rc |= pool_gauge(b, pn, "workers_ready", "Workers ready for a task.", w[FL_W_READY]);
    rc |= pool_gauge(b, pn, "workers_working", "Workers running a task.", w[FL_W_WORKING]);
    rc |= pool_gauge(b, pn, "workers_invalid",
                     "Workers in the invalid, destroyed, errored or inactive states.", invalid);
    rc |= fl_buf_printf(b,
                        "# HELP rr_%s_workers_by_state Live PHP workers by state.\n"
                        "# TYPE rr_%s_workers_by_state gauge\n",
                        pn, pn);
    for (int s = 0; s < FL_W_NSTATES; s++)
        rc |= fl_buf_printf(b, "rr_%s_workers_by_state{state=\"%s\"} %lld\n", pn,
                            fl_worker_status_str(s), (long long)w[s]);
    rc |= fl_buf_printf(b,
                        "# HELP rr_%s_worker_restarts_total Workers replaced, by the reason that "
                        "ended them.\n# TYPE rr_%s_worker_restarts_total counter\n",
                        pn, pn);
    for (int s = 0; s < FL_W_NSTATES; s++)
        if (t->restarts[p][s])
            rc |= fl_buf_printf(b, "rr_%s_worker_restarts_total{reason=\"%s\"} %llu\n", pn,
                                fl_worker_status_str(s), (unsigned long long)t->restarts[p][s]);
    rc |= pool_gauge(b, pn, "requests_queue", "Tasks waiting for a free worker.",
                     (long long)t->queued[p]);
    return rc ? -1 : 0;
}

/* ---- jobs broker (master/jobs.c) ---- */

void fl_srvm_job_count(const char *pipeline, int what)
{
    if (!S.on || !pipeline || what < 0 || what >= FL_SRVM_JOB_NCOUNTS)
        return;
    size_t i = 0;
    while (i < S.npipes && strcmp(S.pipes[i].name, pipeline) != 0)
        i++;
    if (i == S.npipes) {
        job_count_t *p = realloc(S.pipes, (S.npipes + 1) * sizeof(*p));
        char *name = p ? strdup(pipeline) : NULL;
        if (p)
            S.pipes = p;
        if (!name)
            return;
        S.pipes[S.npipes++] = (job_count_t){.name = name};
    }
    S.pipes[i].n[what]++;
}

static int render_jobs(fl_buf_t *b)
{
    static const struct {
        const char *name, *help;
        int what, plus; /* plus: a second counter added in, -1 none */
    } fam[] = {
        {"rr_jobs_push_ok", "Jobs pushed into the pipeline.", FL_SRVM_JOB_PUSHED, -1},
        {"rr_jobs_jobs_ok", "Jobs acknowledged by a worker.", FL_SRVM_JOB_ACKED, -1},
        {"rr_jobs_jobs_err", "Jobs a worker failed (nacked): requeued or dropped.",
         FL_SRVM_JOB_NACKED, FL_SRVM_JOB_DEAD},
        {"rr_jobs_jobs_dead", "Jobs nacked without requeue: dropped for good.", FL_SRVM_JOB_DEAD,
         -1},
    };
    int rc = 0;
    for (size_t f = 0; f < FL_ARRAY_SIZE(fam); f++) {
        rc |= put_family(b, fam[f].name, "counter", fam[f].help);
        for (size_t i = 0; i < S.npipes; i++) {
            uint64_t v = S.pipes[i].n[fam[f].what];
            if (fam[f].plus >= 0)
                v += S.pipes[i].n[fam[f].plus];
            rc |= fl_buf_printf(b, "%s{pipeline=\"", fam[f].name);
            rc |= put_label(b, S.pipes[i].name);
            rc |= fl_buf_printf(b, "\"} %llu\n", (unsigned long long)v);
        }
    }
    return rc ? -1 : 0;
}

static int render_rpc(fl_buf_t *b)
{
    int rc = put_family(b, "rr_rpc_calls_total", "counter", "RPC calls dispatched, by method.");
    for (size_t i = 0; i < S.nrpc; i++) {
        rc |= fl_buf_puts(b, "rr_rpc_calls_total{method=\"");
        rc |= put_label(b, S.rpc[i].name);
        rc |= fl_buf_printf(b, "\"} %llu\n", (unsigned long long)S.rpc[i].n);
    }
    return rc ? -1 : 0;
}

int fl_srvm_render(fl_buf_t *out)
{
    if (!S.on)
        return 0;
    fl_srvm_counters_t t;
    fl_srvm_sum(&t);
    int rc = render_http(out, &t);
    rc |= render_pool(out, &t, FL_SRVM_HTTP);
    if (S.jobs)
        rc |= render_pool(out, &t, FL_SRVM_JOBS) | render_jobs(out);
    rc |= render_rpc(out);
    return rc ? -1 : 0;
}

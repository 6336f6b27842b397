/* See jobs.h. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "jobs.h"
#include "log.h"

typedef struct {
    fl_task_t task;
    fl_rjobs_t *owner;
    unsigned long long seq;
    bool streamed;
    char id[64]; /* for log lines */
} rjob_t;

struct fl_rjobs {
    fl_loop_t *loop;
    fl_pool_t *pool;
    int chan_fd;
    unsigned slot;
    bool stopping;
};

/* A malformed answer is requeued after this long: the job is not lost, and a worker that
 * always answers garbage does not spin on it. */
#define MALFORMED_DELAY_S 5

static void send_str(fl_rjobs_t *j, const char *msg, size_t n)
{
    if (send(j->chan_fd, msg, n, MSG_NOSIGNAL) < 0)
        fl_warn("jobs: cannot report to the master: %s", strerror(errno));
}

static void report(rjob_t *r, char kind, long delay, const char *headers)
{
    fl_buf_t b = {0};
    if (fl_buf_printf(&b, FL_MSG_JDONE "%llu %c %ld%s%s", r->seq, kind, delay, headers ? " " : "",
                      headers ? headers : "") == 0) {
        if (b.len > 60000) { /* headers too big for one message: requeue without them */
            b.len = 0;
            fl_buf_printf(&b, FL_MSG_JDONE "%llu %c %ld", r->seq, kind, delay);
        }
        send_str(r->owner, b.data, b.len);
    }
    fl_buf_free(&b);
}

static void rjob_free(rjob_t *r)
{
    fl_buf_free(&r->task.frame);
    free(r);
}

static long num_field(const cJSON *data, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, key);
    return cJSON_IsNumber(v) && v->valuedouble > 0 ? (long)v->valuedouble : 0;
}

static char *headers_field(const cJSON *data)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(data, "headers");
    return cJSON_IsObject(h) && h->child ? cJSON_PrintUnformatted(h) : NULL;
}

const char *fl_rjobs_decide(const char *body, size_t len, char *kind, long *delay, char **headers)
{
    *kind = 'r';
    *delay = MALFORMED_DELAY_S;
    *headers = NULL;
    cJSON *o = cJSON_ParseWithLength(body, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsObject(o) || !cJSON_IsNumber(type)) {
        cJSON_Delete(o);
        return "malformed acknowledgement (not {\"type\":N,...}): requeued in 5 s";
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    if (!cJSON_IsObject(data))
        data = NULL; /* PHP sends [] for an empty data */
    bool requeue = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "requeue"));
    const char *msg = NULL;
    *delay = 0;
    switch (type->valueint) {
    case 0: /* SUCCESS (deprecated complete()) */
    case 2: /* ACK */
        *kind = 'a';
        break;
    case 1: /* ERROR (deprecated fail()): requeue if asked, else ack */
    case 3: /* NACK: redelivered only if asked */
        *kind = requeue ? 'r' : 'd';
        *delay = requeue ? num_field(data, "delay_seconds") : 0;
        *headers = requeue ? headers_field(data) : NULL;
        break;
    case 4: /* REQUEUE */
        *kind = 'r';
        *delay = num_field(data, "delay_seconds");
        *headers = headers_field(data);
        break;
    default:
        *kind = 'a';
        msg = "unknown acknowledgement type: acked";
    }
    cJSON_Delete(o);
    return msg;
}

static void job_frame(fl_task_t *t, const fl_frame_t *f, fl_slice_t ctx, fl_slice_t body)
{
    FL_UNUSED(ctx);
    rjob_t *r = t->data;
    if (f->stream & FL_STREAM_MORE) {
        r->streamed = true; /* wait for the end of the stream, then nack */
        return;
    }
    if (r->streamed) {
        fl_warn("jobs: job %s: streaming is not supported: nacked", r->id);
        report(r, 'd', 0, NULL);
    } else {
        char kind, *headers;
        long delay;
        const char *odd = fl_rjobs_decide(body.base, body.len, &kind, &delay, &headers);
        if (odd)
            fl_warn("jobs: job %s: %s", r->id, odd);
        report(r, kind, delay, headers);
        cJSON_free(headers);
    }
    rjob_free(r);
}

static void job_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    rjob_t *r = t->data;
    if (why == fl_task_err_worker || why == fl_task_err_exec_ttl) {
        /* RR: an ERROR frame or exec failure is a nack; no requeue, or a job that always
         * fails (or hangs) would loop for ever. */
        fl_warn("jobs: job %s failed: %.*s", r->id, (int)(detail.len > 500 ? 500 : detail.len),
                detail.base);
        report(r, 'd', 0, NULL);
    } else {
        /* The worker died mid-job, or the pool could not run it: back to the broker. */
        fl_info("jobs: job %s: %.*s: requeued", r->id, (int)(detail.len > 200 ? 200 : detail.len),
                detail.base);
        report(r, 'r', 0, NULL);
    }
    rjob_free(r);
}

/* "JOB <seq> <ctxlen>\n" + ctx + payload → a task frame (§7.1: RAW, one option = ctx length). */
static void on_job(fl_rjobs_t *j, const char *msg, size_t n)
{
    const char *nl = memchr(msg, '\n', n > 64 ? 64 : n);
    unsigned long long seq;
    size_t clen;
    if (!nl || sscanf(msg + strlen(FL_MSG_JOB), "%llu %zu", &seq, &clen) != 2 ||
        clen > (size_t)(msg + n - nl - 1)) {
        fl_error("jobs: malformed job message from the master");
        return;
    }
    const char *ctx = nl + 1, *payload = ctx + clen;
    size_t plen = (size_t)(msg + n - payload);
    rjob_t *r = calloc(1, sizeof(*r));
    if (!r) {
        fl_error("jobs: out of memory");
        return;
    }
    r->owner = j;
    r->seq = seq;
    /* the id, for log lines: "id":"..." is the context's first key */
    const char *id = clen > 7 ? ctx + 7 : "";
    size_t il = 0;
    while (il < sizeof(r->id) - 1 && id + il < payload && id[il] != '"')
        il++;
    memcpy(r->id, id, il);
    uint32_t opt = (uint32_t)clen;
    /* ctx and payload are adjacent in the message: they are the frame's payload as is */
    if (fl_frame_encode(&r->task.frame, FL_FRAME_RAW, 0, &opt, 1, ctx, clen + plen) < 0) {
        free(r);
        fl_error("jobs: out of memory");
        return;
    }
    r->task.label = fl_slice_cstr(r->id);
    r->task.on_frame = job_frame;
    r->task.on_fail = job_fail;
    r->task.data = r;
    fl_pool_submit(j->pool, &r->task);
}

fl_rjobs_t *fl_rjobs_new(fl_loop_t *loop, fl_pool_t *pool, int chan_fd, unsigned slot)
{
    fl_rjobs_t *j = calloc(1, sizeof(*j));
    if (j) {
        j->loop = loop;
        j->pool = pool;
        j->chan_fd = chan_fd;
        j->slot = slot;
    }
    return j;
}

static void send_cap(fl_rjobs_t *j, unsigned cap)
{
    char m[32];
    int k = snprintf(m, sizeof(m), FL_MSG_JCAP "%u", cap);
    send_str(j, m, (size_t)k);
}

void fl_rjobs_ready(fl_rjobs_t *j)
{
    /* Twice the workers: the next job waits in the pool while one runs, so a worker never idles
     * for a round trip to the master. */
    if (!j->stopping)
        send_cap(j, 2 * fl_pool_size(j->pool));
}

void fl_rjobs_stop(fl_rjobs_t *j)
{
    if (!j->stopping) {
        j->stopping = true;
        send_cap(j, 0);
    }
}

bool fl_rjobs_msg(fl_rjobs_t *j, const char *msg, size_t n)
{
    size_t l = strlen(FL_MSG_JOB);
    if (n <= l || memcmp(msg, FL_MSG_JOB, l) != 0)
        return false;
    on_job(j, msg, n);
    return true;
}

void fl_rjobs_free(fl_rjobs_t *j)
{
    free(j);
}

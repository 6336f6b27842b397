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
    bool ready;      /* the capacity was announced: scaling announces the new one */
    unsigned target; /* the pool's size once its pending informer scales are done */
    fl_buf_t done;   /* JDONE records not sent yet: one message per loop turn (fl_rjobs_flush) */
};

/* A malformed answer is requeued after this long: the job is not lost, and a worker that
 * always answers garbage does not spin on it. */
#define MALFORMED_DELAY_S 5

static void send_str(fl_rjobs_t *j, const char *msg, size_t n)
{
    if (send(j->chan_fd, msg, n, MSG_NOSIGNAL) < 0)
        fl_warn("jobs: cannot report to the master: %s", strerror(errno));
}

/* Records leave together: under load a message carries the answers of several jobs, so the
 * master and the reactor pay one system call for them. */
#define DONE_MSG_MAX 60000 /* the master reads messages of up to 64 KiB */

void fl_rjobs_flush(fl_rjobs_t *j)
{
    if (j && j->done.len) {
        send_str(j, j->done.data, j->done.len);
        j->done.len = 0;
    }
}

/* "JDONE <seq> <kind> <delay> <hlen> <rlen>\n" + headers + reason (jobs.h). */
static void report(rjob_t *r, char kind, long delay, const char *headers, fl_slice_t why)
{
    fl_rjobs_t *j = r->owner;
    size_t hl = headers ? strlen(headers) : 0;
    if (hl > DONE_MSG_MAX - 1000)
        hl = 0, headers = NULL; /* too big for one message: requeued without them */
    if (why.len > 400)
        why.len = 400;
    char head[96];
    int k = snprintf(head, sizeof(head), FL_MSG_JDONE "%llu %c %ld %zu %zu\n", r->seq, kind, delay,
                     hl, why.len);
    if (j->done.len + (size_t)k + hl + why.len > DONE_MSG_MAX)
        fl_rjobs_flush(j);
    size_t was = j->done.len;
    if (fl_buf_append(&j->done, head, (size_t)k) < 0 ||
        fl_buf_append(&j->done, headers ? headers : "", hl) < 0 ||
        fl_buf_append(&j->done, why.base ? why.base : "", why.len) < 0) {
        j->done.len = was;
        fl_error("jobs: out of memory: job %s stays in flight until this reactor stops", r->id);
    }
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

static char *message_field(const cJSON *data)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(data, "message");
    if (!cJSON_IsString(m) || !m->valuestring[0])
        return NULL;
    size_t n = strlen(m->valuestring) + 1;
    char *out = cJSON_malloc(n);
    if (out)
        memcpy(out, m->valuestring, n);
    return out;
}

const char *fl_rjobs_decide(const char *body, size_t len, fl_rjobs_answer_t *a)
{
    static const char ack[] = "{\"type\":2,\"data\":[]}"; /* what PHP sends for ack() */
    if (len == sizeof(ack) - 1 && memcmp(body, ack, len) == 0) {
        *a = (fl_rjobs_answer_t){'a', 0, NULL, NULL};
        return NULL;
    }
    *a = (fl_rjobs_answer_t){'r', MALFORMED_DELAY_S, NULL, NULL};
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
    a->delay = 0;
    switch (type->valueint) {
    case 0: /* SUCCESS (deprecated complete()) */
    case 2: /* ACK */
        a->kind = 'a';
        break;
    case 1: /* ERROR (deprecated fail()): requeue if asked, else ack */
        a->kind = requeue ? 'r' : 'a';
        a->delay = requeue ? num_field(data, "delay_seconds") : 0;
        a->headers = requeue ? headers_field(data) : NULL;
        a->message = message_field(data);
        if (!requeue)
            msg = "the worker reported an error (deprecated fail()): acked";
        break;
    case 3: /* NACK: redelivered only if asked */
        a->kind = requeue ? 'r' : 'd';
        a->delay = requeue ? num_field(data, "delay_seconds") : 0;
        a->headers = requeue ? headers_field(data) : NULL;
        a->message = message_field(data);
        break;
    case 4: /* REQUEUE */
        a->kind = 'r';
        a->delay = num_field(data, "delay_seconds");
        a->headers = headers_field(data);
        a->message = message_field(data);
        break;
    default:
        a->kind = 'a';
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
        report(r, 'd', 0, NULL, FL_SLICE("streaming is not supported"));
    } else {
        fl_rjobs_answer_t a;
        const char *odd = fl_rjobs_decide(body.base, body.len, &a);
        if (odd)
            fl_warn("jobs: job %s: %s%s%s", r->id, odd, a.message ? ": " : "",
                    a.message ? a.message : "");
        report(r, a.kind, a.delay, a.headers, fl_slice_cstr(a.message));
        cJSON_free(a.headers);
        cJSON_free(a.message);
    }
    rjob_free(r);
}

static void job_fail(fl_task_t *t, const char *why, fl_slice_t detail)
{
    rjob_t *r = t->data;
    int dl = (int)(detail.len > 300 ? 300 : detail.len);
    if (why == fl_task_err_worker) {
        /* RR: an ERROR frame is a nack without requeue (a job that always fails would loop). */
        fl_warn("jobs: job %s failed: %.*s", r->id, dl, detail.base);
        report(r, 'd', 0, NULL, detail);
    } else if (why == fl_task_err_exec_ttl || why == fl_task_err_died) {
        /* It ran and did not finish: the worker was killed (jobs.timeout, exec_ttl) or died. */
        fl_warn("jobs: job %s: %.*s: requeued", r->id, dl, detail.base);
        report(r, 'f', 0, NULL, detail);
    } else {
        /* The pool could not run it (stopping, no worker in time): back to the broker. */
        fl_info("jobs: job %s: %.*s: back to the broker", r->id, dl, detail.base);
        report(r, 'b', 0, NULL, detail);
    }
    rjob_free(r);
}

/* One record "JOB <seq> <ctxlen> <plen>\n" + ctx + payload → a task frame (§7.1: RAW, one option =
 * ctx length). Returns the record's length, 0 when malformed. */
static size_t on_job(fl_rjobs_t *j, const char *msg, size_t n)
{
    const char *nl = memchr(msg, '\n', n > 80 ? 80 : n);
    unsigned long long seq;
    size_t clen, plen;
    if (!nl || sscanf(msg + strlen(FL_MSG_JOB), "%llu %zu %zu", &seq, &clen, &plen) != 3 ||
        clen > (size_t)(msg + n - nl - 1) || plen > (size_t)(msg + n - nl - 1) - clen) {
        fl_error("jobs: malformed job message from the master");
        return 0;
    }
    const char *ctx = nl + 1, *payload = ctx + clen;
    rjob_t *r = calloc(1, sizeof(*r));
    rjob_t oom = {.owner = j, .seq = seq};
    uint32_t opt = (uint32_t)clen;
    /* ctx and payload are adjacent in the message: they are the frame's payload as is */
    if (!r || fl_frame_encode(&r->task.frame, FL_FRAME_RAW, 0, &opt, 1, ctx, clen + plen) < 0) {
        free(r);
        fl_error("jobs: out of memory: job %llu goes back to the broker", seq);
        report(&oom, 'b', 0, NULL, FL_SLICE("out of memory in a reactor"));
        return (size_t)(payload + plen - msg);
    }
    r->owner = j;
    r->seq = seq;
    /* the id, for log lines: "id":"..." is the context's first key */
    const char *id = clen > 7 ? ctx + 7 : "";
    size_t il = 0;
    while (il < sizeof(r->id) - 1 && id + il < payload && id[il] != '"')
        il++;
    memcpy(r->id, id, il);
    r->task.label = fl_slice_cstr(r->id);
    r->task.on_frame = job_frame;
    r->task.on_fail = job_fail;
    r->task.data = r;
    fl_pool_submit(j->pool, &r->task);
    return (size_t)(payload + plen - msg);
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
    fl_rjobs_flush(j);
    char m[32];
    int k = snprintf(m, sizeof(m), FL_MSG_JCAP "%u", cap);
    send_str(j, m, (size_t)k);
}

void fl_rjobs_ready(fl_rjobs_t *j)
{
    /* Twice the workers: the next job waits in the pool while one runs, so a worker never idles
     * for a round trip to the master. */
    if (j->stopping)
        return;
    j->ready = true;
    j->target = fl_pool_size(j->pool);
    send_cap(j, 2 * j->target);
}

/* Counted from the requests rather than read from the pool: a removal that waits for a busy
 * worker leaves the pool's size as it was until then, but the broker should stop filling that
 * worker's share now. Jobs already sent over the old capacity simply run on the workers left. */
void fl_rjobs_scaled(fl_rjobs_t *j, int delta)
{
    if (!j || !j->ready || j->stopping)
        return; /* not announced yet: fl_rjobs_ready reads the pool's size then */
    if (delta < 0 && j->target <= 1)
        return;
    j->target = (unsigned)((int)j->target + delta);
    send_cap(j, 2 * j->target);
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
    while (n > l && memcmp(msg, FL_MSG_JOB, l) == 0) { /* one dispatch may carry several */
        size_t k = on_job(j, msg, n);
        if (!k)
            break;
        msg += k;
        n -= k;
    }
    return true;
}

void fl_rjobs_free(fl_rjobs_t *j)
{
    if (!j)
        return;
    fl_rjobs_flush(j); /* the loop may have stopped right after the last answers */
    fl_buf_free(&j->done);
    free(j);
}

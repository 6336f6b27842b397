/* See jobs.h. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../reactor/jobs.h"
#include "jobs.h"
#include "log.h"
#include "pb.h"

typedef struct jpipe jpipe_t;
typedef struct jpeer jpeer_t;

typedef struct job {
    struct job *next;
    char *id, *name;
    cJSON *headers; /* object of string lists, or NULL */
    uint8_t *payload;
    size_t plen;
    int64_t prio;   /* lower first */
    int64_t due_ms; /* delayed until */
    uint64_t seq;   /* in flight: the id the reactor answers with */
    jpipe_t *p;
    jpeer_t *peer;
} job_t;

struct jpipe {
    char *name;
    int64_t priority;
    uint64_t prefetch;
    bool paused;
    job_t *head, *tail; /* ready, by job priority then FIFO */
    size_t nready, ndelayed, nreserved;
    uint64_t pass; /* stride scheduling, see jobs.h */
    bool dead;     /* destroyed, kept (off the list) until its jobs in flight come back */
    jpipe_t *next;
};

struct jpeer {
    void *key;
    int fd;
    unsigned cap, inflight;
    bool blocked; /* the channel was full: retried by the timer */
    job_t *jobs;  /* in flight */
    jpeer_t *next;
};

static struct {
    fl_loop_t *loop;
    bool started;
    jpipe_t *pipes;
    jpipe_t *graveyard; /* destroyed pipelines with jobs still in flight */
    jpeer_t *peers;
    job_t *delayed; /* by due_ms */
    fl_timer_id timer;
    int64_t timer_due;
    uint64_t seq, vtime;
} J;

static const char err_wire[] = "proto: cannot parse invalid wire-format data";

static void job_free(job_t *j)
{
    free(j->id);
    free(j->name);
    cJSON_Delete(j->headers);
    free(j->payload);
    free(j);
}

static jpipe_t *pipe_find(const char *name, size_t n)
{
    for (jpipe_t *p = J.pipes; p; p = p->next)
        if (strlen(p->name) == n && memcmp(p->name, name, n) == 0)
            return p;
    return NULL;
}

static void dispatch(void);
static void arm_timer(void);

/* ---- queues ---- */

static void ready_put(job_t *j)
{
    jpipe_t *p = j->p;
    if (!p->nready && p->pass < J.vtime)
        p->pass = J.vtime; /* an idle pipeline does not bank turns */
    j->next = NULL;
    if (!p->tail || p->tail->prio <= j->prio) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
    } else {
        job_t **pp = &p->head;
        while ((*pp)->prio <= j->prio)
            pp = &(*pp)->next;
        j->next = *pp;
        *pp = j;
    }
    p->nready++;
}

static void enqueue(job_t *j, int64_t delay_s)
{
    if (delay_s <= 0) {
        ready_put(j);
        return;
    }
    j->due_ms = fl_now_ms() + delay_s * 1000;
    job_t **pp = &J.delayed;
    while (*pp && (*pp)->due_ms <= j->due_ms)
        pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    j->p->ndelayed++;
}

static void timer_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    FL_UNUSED(data);
    J.timer = 0;
    int64_t now = fl_now_ms();
    while (J.delayed && J.delayed->due_ms <= now) {
        job_t *j = J.delayed;
        J.delayed = j->next;
        j->p->ndelayed--;
        ready_put(j);
    }
    for (jpeer_t *e = J.peers; e; e = e->next)
        e->blocked = false;
    dispatch();
}

static void arm_timer(void)
{
    bool blocked = false;
    for (jpeer_t *e = J.peers; e; e = e->next)
        blocked |= e->blocked;
    int64_t due = blocked ? fl_now_ms() + 10 : J.delayed ? J.delayed->due_ms : 0;
    if (!due || (J.timer && J.timer_due <= due))
        return;
    fl_timer_del(J.loop, J.timer);
    int64_t ms = due - fl_now_ms();
    J.timer = fl_timer_add(J.loop, ms > 0 ? ms : 0, timer_cb, NULL);
    J.timer_due = due;
}

static void pipe_free(jpipe_t *p);

/* A job came back from a reactor: requeue it (kind 'r') or drop it. Jobs of a destroyed
 * pipeline are dropped, and the pipeline is freed with its last one. */
static void job_back(job_t *j, bool requeue, int64_t delay_s)
{
    jpipe_t *p = j->p;
    if (requeue && !p->dead) {
        enqueue(j, delay_s);
        return;
    }
    job_free(j);
    if (p->dead && p->nreserved == 0) {
        for (jpipe_t **pp = &J.graveyard; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        pipe_free(p);
    }
}

/* ---- dispatch ---- */

static int send_job(jpeer_t *e, job_t *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "job", j->name);
    cJSON_AddStringToObject(o, "driver", "memory");
    cJSON_AddStringToObject(o, "queue", j->p->name);
    if (j->headers)
        cJSON_AddItemReferenceToObject(o, "headers", j->headers);
    else
        cJSON_AddNullToObject(o, "headers");
    cJSON_AddStringToObject(o, "pipeline", j->p->name);
    char *ctx = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!ctx)
        return -1;
    fl_buf_t b = {0};
    size_t clen = strlen(ctx);
    int rc = -2; /* too large (headers added by requeues): the job cannot be delivered */
    if (fl_buf_printf(&b, FL_MSG_JOB "%llu %zu\n", (unsigned long long)j->seq, clen) == 0 &&
        fl_buf_append(&b, ctx, clen) == 0 && fl_buf_append(&b, j->payload, j->plen) == 0 &&
        b.len <= FL_JOBS_MSG_MAX)
        rc = send(e->fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)b.len ? 0 : -1;
    if (rc == -1 && errno == EMSGSIZE)
        rc = -2; /* the channel's buffer is smaller than this job: it can never be sent */
    free(ctx);
    fl_buf_free(&b);
    return rc;
}

static jpeer_t *pick_peer(void)
{
    jpeer_t *best = NULL;
    for (jpeer_t *e = J.peers; e; e = e->next)
        if (!e->blocked && e->inflight < e->cap &&
            (!best || (uint64_t)e->inflight * best->cap < (uint64_t)best->inflight * e->cap))
            best = e;
    return best;
}

static jpipe_t *pick_pipe(void)
{
    jpipe_t *best = NULL;
    for (jpipe_t *p = J.pipes; p; p = p->next)
        if (!p->paused && p->nready && p->nreserved < p->prefetch &&
            (!best || p->pass < best->pass))
            best = p;
    return best;
}

static void dispatch(void)
{
    jpeer_t *e;
    jpipe_t *p;
    while ((e = pick_peer()) && (p = pick_pipe())) {
        job_t *j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->nready--;
        j->seq = ++J.seq;
        int rc = send_job(e, j);
        if (rc == -2) {
            fl_error("jobs: job %s of pipeline %s no longer fits a channel message: dropped", j->id,
                     p->name);
            job_free(j);
            continue;
        }
        if (rc < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fl_warn("jobs: cannot hand job %s to a reactor: %s", j->id, strerror(errno));
            e->blocked = true; /* retried shortly; the job keeps its place */
            j->next = p->head;
            p->head = j;
            if (!p->tail)
                p->tail = j;
            p->nready++;
            continue;
        }
        J.vtime = p->pass;
        p->pass += (uint64_t)p->priority;
        p->nreserved++;
        j->peer = e;
        j->next = e->jobs;
        e->jobs = j;
        e->inflight++;
    }
    arm_timer();
}

/* ---- reactor channel ---- */

static jpeer_t *peer_get(void *key, int fd, bool create)
{
    for (jpeer_t *e = J.peers; e; e = e->next)
        if (e->key == key) {
            e->fd = fd >= 0 ? fd : e->fd;
            return e;
        }
    if (!create)
        return NULL;
    jpeer_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->key = key;
    e->fd = fd;
    e->next = J.peers;
    J.peers = e;
    return e;
}

static job_t *peer_take(jpeer_t *e, uint64_t seq)
{
    for (job_t **pp = &e->jobs; *pp; pp = &(*pp)->next)
        if ((*pp)->seq == seq) {
            job_t *j = *pp;
            *pp = j->next;
            e->inflight--;
            j->p->nreserved--;
            j->peer = NULL;
            return j;
        }
    return NULL;
}

/* Requeue headers from the worker (§7.2 type 4): merged into the job's, theirs win. */
static void merge_headers(job_t *j, const char *json)
{
    cJSON *h = cJSON_Parse(json);
    if (!cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return;
    }
    if (!j->headers)
        j->headers = cJSON_CreateObject();
    cJSON *it = h->child;
    while (it) {
        cJSON *next = it->next;
        cJSON_DetachItemViaPointer(h, it);
        char *k = it->string;
        it->string = NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(j->headers, k);
        cJSON_AddItemToObject(j->headers, k, it);
        cJSON_free(k);
        it = next;
    }
    cJSON_Delete(h);
}

static void on_done(jpeer_t *e, const char *msg, size_t n)
{
    static char tmp[FL_JOBS_MSG_MAX];
    if (n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    memcpy(tmp, msg, n);
    tmp[n] = 0;
    unsigned long long seq = 0;
    char kind = 0;
    long delay = 0;
    int used = 0;
    if (sscanf(tmp + strlen(FL_MSG_JDONE), "%llu %c %ld%n", &seq, &kind, &delay, &used) < 3) {
        fl_warn("jobs: malformed message from a reactor: %.80s", tmp);
        return;
    }
    job_t *j = peer_take(e, seq);
    if (!j)
        return; /* already requeued (the reactor was presumed gone) */
    const char *rest = tmp + strlen(FL_MSG_JDONE) + used;
    while (*rest == ' ')
        rest++;
    if (kind == 'r' && *rest)
        merge_headers(j, rest);
    job_back(j, kind == 'r', delay);
}

bool fl_jobs_chan_msg(void *peer, int fd, const char *msg, size_t n)
{
    size_t cl = strlen(FL_MSG_JCAP), dl = strlen(FL_MSG_JDONE);
    if (n > cl && memcmp(msg, FL_MSG_JCAP, cl) == 0) {
        if (!J.started)
            return true;
        char num[16] = {0};
        memcpy(num, msg + cl, n - cl < 15 ? n - cl : 15);
        jpeer_t *e = peer_get(peer, fd, true);
        if (e)
            e->cap = (unsigned)strtoul(num, NULL, 10);
        dispatch();
        return true;
    }
    if (n > dl && memcmp(msg, FL_MSG_JDONE, dl) == 0) {
        jpeer_t *e = J.started ? peer_get(peer, fd, false) : NULL;
        if (e) {
            on_done(e, msg, n);
            dispatch();
        }
        return true;
    }
    return false;
}

void fl_jobs_chan_gone(void *peer)
{
    for (jpeer_t **pp = &J.peers; *pp; pp = &(*pp)->next) {
        jpeer_t *e = *pp;
        if (e->key != peer)
            continue;
        *pp = e->next;
        unsigned n = 0;
        while (e->jobs) {
            job_back(peer_take(e, e->jobs->seq), true, 0);
            n++;
        }
        if (n)
            fl_warn("jobs: a reactor went away with %u job(s) in flight: requeued", n);
        free(e);
        dispatch();
        return;
    }
}

/* ---- jobs.v1 codec ---- */

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* headers=4 map entry {key=1, value=2 HeaderValue{value=1 repeated string}}. */
static int parse_header(job_t *j, const pb_field_t *f)
{
    const uint8_t *p = f->data, *end = p + f->len;
    pb_field_t g;
    int rc;
    char *key = NULL;
    cJSON *list = cJSON_CreateArray();
    while ((rc = pb_next_field(&p, end, &g)) > 0) {
        if (g.field == 1 && g.wire == PB_LEN) {
            free(key);
            key = dup_n(g.data, g.len);
        } else if (g.field == 2 && g.wire == PB_LEN) {
            const uint8_t *q = g.data, *qe = q + g.len;
            pb_field_t h;
            while ((rc = pb_next_field(&q, qe, &h)) > 0)
                if (h.field == 1 && h.wire == PB_LEN) {
                    char *v = dup_n(h.data, h.len);
                    cJSON_AddItemToArray(list, cJSON_CreateString(v ? v : ""));
                    free(v);
                }
            if (rc < 0)
                break;
        }
    }
    if (rc < 0 || !key) {
        free(key);
        cJSON_Delete(list);
        return rc < 0 ? -1 : 0;
    }
    if (!j->headers)
        j->headers = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(j->headers, key);
    cJSON_AddItemToObject(j->headers, key, list);
    free(key);
    return 0;
}

/* Options{priority=1, pipeline=2, delay=3}. */
static int parse_options(const pb_field_t *f, int64_t *prio, fl_slice_t *pipe, int64_t *delay)
{
    const uint8_t *p = f->data, *end = p + f->len;
    pb_field_t g;
    int rc;
    while ((rc = pb_next_field(&p, end, &g)) > 0) {
        if (g.field == 1 && g.wire == PB_VARINT)
            *prio = (int64_t)g.value;
        else if (g.field == 2 && g.wire == PB_LEN)
            *pipe = fl_slice((const char *)g.data, g.len);
        else if (g.field == 3 && g.wire == PB_VARINT)
            *delay = (int64_t)g.value;
    }
    return rc;
}

/* Job{job=1, id=2, payload=3, headers=4, options=5}. On error, *why is the message. */
static job_t *parse_job(const uint8_t *p, const uint8_t *end, int64_t *delay, const char **why,
                        char *errbuf, size_t errlen)
{
    job_t *j = calloc(1, sizeof(*j));
    pb_field_t f;
    int rc;
    fl_slice_t pipe = FL_SLICE_NULL;
    *delay = 0;
    *why = err_wire;
    if (!j)
        return NULL;
    while ((rc = pb_next_field(&p, end, &f)) > 0) {
        if (f.wire != PB_LEN)
            continue;
        if (f.field == 1) {
            free(j->name);
            j->name = dup_n(f.data, f.len);
        } else if (f.field == 2) {
            free(j->id);
            j->id = dup_n(f.data, f.len);
        } else if (f.field == 3) {
            free(j->payload);
            j->payload = (uint8_t *)dup_n(f.data, f.len);
            j->plen = f.len;
        } else if (f.field == 4 && parse_header(j, &f) < 0) {
            rc = -1;
            break;
        } else if (f.field == 5 && parse_options(&f, &j->prio, &pipe, delay) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc < 0)
        goto fail;
    if (!j->id || !*j->id) {
        *why = "empty ID field not allowed";
        goto fail;
    }
    if (!j->name)
        j->name = strdup("");
    j->p = pipe_find(pipe.base ? pipe.base : "", pipe.len);
    if (!j->p) {
        snprintf(errbuf, errlen, "no such pipeline, requested: %.*s", (int)pipe.len,
                 pipe.base ? pipe.base : "");
        *why = errbuf;
        goto fail;
    }
    if (j->plen + strlen(j->id) + strlen(j->name) + 2 * strlen(j->p->name) + 1024 >
        FL_JOBS_MSG_MAX) {
        snprintf(errbuf, errlen,
                 "job %s is too large: %zu bytes of payload (forkline's memory "
                 "driver takes up to about %d KiB per job)",
                 j->id, j->plen, FL_JOBS_MSG_MAX / 1024 - 2);
        *why = errbuf;
        goto fail;
    }
    if (j->prio == 0)
        j->prio = j->p->priority; /* §2.9: priority 0 inherits the pipeline's */
    if (*delay < 0)
        *delay = 0;
    *why = NULL;
    return j;
fail:
    job_free(j);
    return NULL;
}

static bool need_proto(fl_rpc_call_t *call)
{
    if (call->req.codec == FL_RPC_PROTO)
        return true;
    fl_rpc_fail(call, "%.*s takes a jobs.v1 message: use the proto codec",
                (int)call->req.method.len, call->req.method.base);
    return false;
}

/* Push (batch false: PushRequest{job=1}) and PushBatch (PushBatchRequest{jobs=1 repeated}):
 * every job is checked before any is queued, so a bad batch queues nothing. */
static void rpc_push_any(fl_rpc_call_t *call, bool batch)
{
    if (!need_proto(call))
        return;
    const uint8_t *p = (const uint8_t *)call->req.arg.base, *end = p + call->req.arg.len;
    pb_field_t f;
    int rc;
    job_t *list = NULL, **tail = &list;
    size_t n = 0;
    char errbuf[300];
    const char *why = NULL;
    while ((rc = pb_next_field(&p, end, &f)) > 0) {
        if (f.field != 1 || f.wire != PB_LEN)
            continue;
        int64_t delay;
        job_t *j = parse_job(f.data, f.data + f.len, &delay, &why, errbuf, sizeof(errbuf));
        if (!j)
            break;
        j->due_ms = delay; /* seconds for now; enqueue() turns it into a time */
        *tail = j;
        tail = &j->next;
        n++;
        if (!batch)
            break;
    }
    if (rc < 0)
        why = err_wire;
    if (!why && n == 0)
        why = batch ? NULL : "empty ID field not allowed";
    if (why) {
        while (list) {
            job_t *j = list;
            list = j->next;
            job_free(j);
        }
        fl_rpc_fail(call, "%s", why);
        return;
    }
    while (list) {
        job_t *j = list;
        list = j->next;
        int64_t d = j->due_ms;
        j->due_ms = 0;
        enqueue(j, d);
    }
    dispatch();
    fl_rpc_reply(call, "", 0);
}

static void rpc_push(fl_rpc_call_t *call)
{
    rpc_push_any(call, false);
}

static void rpc_push_batch(fl_rpc_call_t *call)
{
    rpc_push_any(call, true);
}

/* Pipelines{pipelines=1 repeated string}: every name must exist, then paused is set on all. */
static void rpc_pause_any(fl_rpc_call_t *call, bool paused)
{
    if (!need_proto(call))
        return;
    const uint8_t *p = (const uint8_t *)call->req.arg.base, *end = p + call->req.arg.len;
    pb_field_t f;
    int rc;
    for (int pass = 0; pass < 2; pass++) {
        p = (const uint8_t *)call->req.arg.base;
        while ((rc = pb_next_field(&p, end, &f)) > 0) {
            if (f.field != 1 || f.wire != PB_LEN)
                continue;
            jpipe_t *pp = pipe_find((const char *)f.data, f.len);
            if (!pp) {
                fl_rpc_fail(call, "no such pipeline, requested: %.*s", (int)f.len, f.data);
                return;
            }
            if (pass == 1 && pp->paused != paused) {
                pp->paused = paused;
                fl_info("jobs: pipeline %s %s", pp->name, paused ? "paused" : "resumed");
            }
        }
        if (rc < 0) {
            fl_rpc_fail(call, "%s", err_wire);
            return;
        }
    }
    dispatch();
    fl_rpc_reply(call, "", 0);
}

static void rpc_pause(fl_rpc_call_t *call)
{
    rpc_pause_any(call, true);
}

static void rpc_resume(fl_rpc_call_t *call)
{
    rpc_pause_any(call, false);
}

static void rpc_list(fl_rpc_call_t *call)
{
    if (!need_proto(call))
        return;
    fl_buf_t b = {0};
    for (jpipe_t *p = J.pipes; p; p = p->next)
        pb_put_bytes(&b, 1, p->name, strlen(p->name));
    fl_rpc_reply(call, b.data ? b.data : "", b.len);
    fl_buf_free(&b);
}

static void put_varint_field(fl_buf_t *b, uint32_t field, uint64_t v)
{
    pb_put_tag(b, field, PB_VARINT);
    pb_put_varint(b, v);
}

static void rpc_stat(fl_rpc_call_t *call)
{
    if (!need_proto(call))
        return;
    fl_buf_t b = {0}, s = {0};
    for (jpipe_t *p = J.pipes; p; p = p->next) {
        s.len = 0;
        pb_put_bytes(&s, 1, p->name, strlen(p->name));
        pb_put_bytes(&s, 2, "memory", 6);
        pb_put_bytes(&s, 3, p->name, strlen(p->name));
        put_varint_field(&s, 4, p->nready);
        put_varint_field(&s, 5, p->ndelayed);
        put_varint_field(&s, 6, p->nreserved);
        put_varint_field(&s, 7, !p->paused);
        put_varint_field(&s, 8, (uint64_t)p->priority);
        pb_put_bytes(&b, 1, s.data, s.len);
    }
    fl_rpc_reply(call, b.data ? b.data : "", b.len);
    fl_buf_free(&b);
    fl_buf_free(&s);
}

int fl_jobs_informer(fl_buf_t *out)
{
    int rc = fl_buf_puts(out, "[");
    for (jpipe_t *p = J.pipes; p && rc == 0; p = p->next)
        rc = fl_buf_printf(out,
                           "%s{\"Pipeline\":\"%s\",\"Driver\":\"memory\",\"Queue\":\"%s\","
                           "\"Active\":%zu,\"Delayed\":%zu,\"Reserved\":%zu,\"Ready\":%s,"
                           "\"Priority\":%lld,\"ErrorMessage\":\"\"}",
                           p == J.pipes ? "" : ",", p->name, p->name, p->nready, p->ndelayed,
                           p->nreserved, p->paused ? "false" : "true", (long long)p->priority);
    return rc == 0 ? fl_buf_puts(out, "]") : rc;
}

static void free_list(job_t *j);

static void pipe_free(jpipe_t *p)
{
    free_list(p->head);
    free(p->name);
    free(p);
}

static jpipe_t *pipe_new(const char *name, int64_t priority, uint64_t prefetch, bool paused)
{
    jpipe_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    p->priority = priority > 0 ? priority : 10;
    p->prefetch = prefetch ? prefetch : 100000;
    p->paused = paused;
    p->pass = J.vtime;
    jpipe_t **tail = &J.pipes;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    return p;
}

/* DeclareRequest{pipeline=1 map<string,string>}: driver (memory), name, priority, prefetch.
 * A declared pipeline consumes at once, as upstream. */
static void rpc_declare(fl_rpc_call_t *call)
{
    if (!need_proto(call))
        return;
    const uint8_t *p = (const uint8_t *)call->req.arg.base, *end = p + call->req.arg.len;
    pb_field_t f, g;
    int rc;
    char *name = NULL, *driver = NULL, *priority = NULL, *prefetch = NULL;
    while ((rc = pb_next_field(&p, end, &f)) > 0) {
        if (f.field != 1 || f.wire != PB_LEN)
            continue;
        const uint8_t *q = f.data, *qe = q + f.len;
        fl_slice_t k = FL_SLICE_NULL, v = FL_SLICE_NULL;
        while ((rc = pb_next_field(&q, qe, &g)) > 0)
            if (g.wire == PB_LEN && (g.field == 1 || g.field == 2))
                *(g.field == 1 ? &k : &v) = fl_slice((const char *)g.data, g.len);
        if (rc < 0)
            break;
        char **dst = fl_slice_eq(k, "name", 4)       ? &name
                     : fl_slice_eq(k, "driver", 6)   ? &driver
                     : fl_slice_eq(k, "priority", 8) ? &priority
                     : fl_slice_eq(k, "prefetch", 8) ? &prefetch
                                                     : NULL;
        if (dst) {
            free(*dst);
            *dst = dup_n((const uint8_t *)(v.base ? v.base : ""), v.len);
        }
    }
    if (rc < 0)
        fl_rpc_fail(call, "%s", err_wire);
    else if (!name || !*name)
        fl_rpc_fail(call, "pipeline name is required");
    else if (!driver || strcmp(driver, "memory") != 0)
        fl_rpc_fail(call, "unsupported jobs driver: %s (forkline has memory)",
                    driver ? driver : "");
    else if (pipe_find(name, strlen(name)))
        fl_rpc_fail(call, "pipeline already exists, name: %s, driver: memory", name);
    else if (!pipe_new(name, priority ? strtoll(priority, NULL, 10) : 10,
                       prefetch ? strtoull(prefetch, NULL, 10) : 100000, false))
        fl_rpc_fail(call, "out of memory");
    else {
        fl_info("jobs: pipeline %s declared", name);
        fl_rpc_reply(call, "", 0);
    }
    free(name);
    free(driver);
    free(priority);
    free(prefetch);
}

/* Drops the pipeline's queued and delayed jobs; its jobs in flight finish, and are dropped
 * whatever their answer. */
static void pipe_destroy(jpipe_t *p)
{
    for (jpipe_t **pp = &J.pipes; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    for (job_t **jj = &J.delayed; *jj;) {
        job_t *j = *jj;
        if (j->p == p) {
            *jj = j->next;
            job_free(j);
        } else {
            jj = &j->next;
        }
    }
    fl_info("jobs: pipeline %s destroyed (%zu queued job(s) dropped)", p->name,
            p->nready + p->ndelayed);
    free_list(p->head);
    p->head = p->tail = NULL;
    p->nready = p->ndelayed = 0;
    if (p->nreserved == 0) {
        pipe_free(p);
        return;
    }
    p->dead = true;
    p->next = J.graveyard;
    J.graveyard = p;
}

static void rpc_destroy(fl_rpc_call_t *call)
{
    if (!need_proto(call))
        return;
    const uint8_t *p, *end = (const uint8_t *)call->req.arg.base + call->req.arg.len;
    pb_field_t f;
    int rc = 0;
    fl_buf_t out = {0};
    for (int pass = 0; pass < 2; pass++) {
        p = (const uint8_t *)call->req.arg.base;
        while ((rc = pb_next_field(&p, end, &f)) > 0) {
            if (f.field != 1 || f.wire != PB_LEN)
                continue;
            jpipe_t *pp = pipe_find((const char *)f.data, f.len);
            if (!pp && pass == 0) {
                fl_rpc_fail(call, "no such pipeline, requested: %.*s", (int)f.len, f.data);
                return;
            }
            if (pass == 1 && pp) {
                pb_put_bytes(&out, 1, f.data, f.len);
                pipe_destroy(pp);
            }
        }
        if (rc < 0) {
            fl_rpc_fail(call, "%s", err_wire);
            return;
        }
    }
    fl_rpc_reply(call, out.data ? out.data : "", out.len);
    fl_buf_free(&out);
}

/* informer.Jobs(plugin): replaces the built-in empty answer once jobs are configured. */
static void rpc_informer(fl_rpc_call_t *call)
{
    fl_buf_t b = {0};
    if (fl_jobs_informer(&b) == 0)
        fl_rpc_reply_json(call, b.data, b.len);
    else
        fl_rpc_fail(call, "out of memory");
    fl_buf_free(&b);
}

static const fl_rpc_method_t methods[] = {
    {"informer.Jobs", rpc_informer},
    {"jobs.Push", rpc_push},
    {"jobs.PushBatch", rpc_push_batch},
    {"jobs.Pause", rpc_pause},
    {"jobs.Resume", rpc_resume},
    {"jobs.List", rpc_list},
    {"jobs.Stat", rpc_stat},
    {"jobs.Declare", rpc_declare},
    {"jobs.Destroy", rpc_destroy},
};

/* ---- life ---- */

static bool consumed(const fl_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->jobs.nconsume; i++)
        if (strcmp(c->jobs.consume[i], name) == 0)
            return true;
    return false;
}

int fl_jobs_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    J.loop = loop;
    if (!c->jobs.enabled)
        return 0;
    for (size_t i = 0; i < c->jobs.npipelines; i++) {
        const struct fl_conf_pipeline *cp = &c->jobs.pipelines[i];
        if (!pipe_new(cp->name, cp->priority, cp->prefetch, !consumed(c, cp->name)))
            return fl_conf_error(err, "out of memory");
    }
    J.started = true;
    if (rpc && fl_rpc_server_add(rpc, methods, FL_ARRAY_SIZE(methods), NULL) < 0)
        return fl_conf_error(err, "out of memory");
    return 0;
}

static void free_list(job_t *j)
{
    while (j) {
        job_t *next = j->next;
        job_free(j);
        j = next;
    }
}

void fl_jobs_stop(void)
{
    if (J.loop)
        fl_timer_del(J.loop, J.timer);
    while (J.peers) {
        jpeer_t *e = J.peers;
        J.peers = e->next;
        free_list(e->jobs);
        free(e);
    }
    free_list(J.delayed);
    jpipe_t *lists[2] = {J.pipes, J.graveyard};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            jpipe_t *p = lists[i];
            lists[i] = p->next;
            pipe_free(p);
        }
    memset(&J, 0, sizeof(J));
}

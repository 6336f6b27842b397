/* See jobs.h; the driver interface is jobs_driver.h. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "../reactor/jobs.h"
#include "jobs.h"
#include "jobs_driver.h"
#include "log.h"
#include "pb.h"
#include "srvmetrics.h"

typedef fl_jpipe_t jpipe_t;
typedef fl_job_t job_t;
typedef struct jpeer jpeer_t;

struct jpeer {
    void *key;
    int fd;
    unsigned cap, inflight;
    bool blocked; /* the channel was full: retried by the timer */
    bool solo;    /* the channel refused a batch as too big: one job per message */
    job_t *jobs;  /* in flight; the first `unsent` of them are still in out */
    fl_buf_t out; /* JOB records of this dispatch, sent as one message */
    unsigned unsent;
    jpeer_t *next;
};

/* Jobs handed to one reactor in one dispatch leave in one message of at most this size (a bigger
 * job leaves alone). */
#define JOB_BATCH_MAX (32 * 1024)

static struct {
    fl_loop_t *loop;
    fl_rpc_server_t *rpc;
    bool started, methods_added;
    jpipe_t *pipes;
    jpipe_t *graveyard; /* destroyed pipelines with jobs still in flight */
    jpeer_t *peers;
    job_t *delayed; /* memory driver: by due_ms */
    fl_timer_id timer;
    int64_t timer_due;
    uint64_t seq, vtime;
    uint64_t pipeline_size;
    char **consume; /* the consume list of the config in force (reload compares) */
} J;

static const char err_wire[] = "proto: cannot parse invalid wire-format data";

static const fl_jdriver_t *const drivers[] = {&fl_jobs_memory, &fl_jobs_redis};

static const fl_jdriver_t *driver_find(const char *name)
{
    for (size_t i = 0; name && i < FL_ARRAY_SIZE(drivers); i++)
        if (strcasecmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

/* ---- jobs ---- */

fl_job_t *fl_jobs_job_new(void)
{
    return calloc(1, sizeof(job_t));
}

void fl_jobs_job_free(fl_job_t *j)
{
    if (!j)
        return;
    free(j->id);
    free(j->name);
    cJSON_Delete(j->headers);
    free(j->payload);
    free(j->note);
    free(j);
}

static void free_list(job_t *j)
{
    while (j) {
        job_t *next = j->next;
        fl_jobs_job_free(j);
        j = next;
    }
}

fl_loop_t *fl_jobs_loop(void)
{
    return J.loop;
}

static jpipe_t *pipe_find(const char *name, size_t n)
{
    for (jpipe_t *p = J.pipes; p; p = p->next)
        if (strlen(p->name) == n && memcmp(p->name, name, n) == 0)
            return p;
    return NULL;
}

bool fl_jobs_name_busy(const fl_jpipe_t *p)
{
    for (jpipe_t *g = J.graveyard; g; g = g->next)
        if (g != p && strcmp(g->name, p->name) == 0)
            return true;
    return false;
}

bool fl_jobs_wants(const fl_jpipe_t *p)
{
    return J.started && !p->paused && !p->dead;
}

static void arm_timer(void);

/* ---- the ready queue of a pipeline ---- */

void fl_jobs_ready_put(fl_jpipe_t *p, fl_job_t *j)
{
    if (!p->nready && p->pass < J.vtime)
        p->pass = J.vtime; /* an idle pipeline does not bank turns */
    j->p = p;
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

static job_t *ready_take(jpipe_t *p)
{
    job_t *j = p->head;
    p->head = j->next;
    if (!p->head)
        p->tail = NULL;
    p->nready--;
    j->next = NULL;
    return j;
}

/* Puts a job the channel refused back at the head: it keeps its place. */
static void ready_unget(jpipe_t *p, job_t *j)
{
    j->next = p->head;
    p->head = j;
    if (!p->tail)
        p->tail = j;
    p->nready++;
}

fl_job_t *fl_jobs_ready_take_all(fl_jpipe_t *p)
{
    job_t *list = p->head;
    p->head = p->tail = NULL;
    p->nready = 0;
    return list;
}

/* ---- the memory driver: the pipeline's ready queue is the storage ---- */

static void mem_gone_if_done(jpipe_t *p)
{
    if (p->dead && p->nreserved == 0)
        fl_jobs_pipe_gone(p);
}

static void mem_enqueue(job_t *j, int64_t delay_s)
{
    if (delay_s <= 0) {
        fl_jobs_ready_put(j->p, j);
        return;
    }
    j->due_ms = fl_now_ms() + delay_s * 1000;
    job_t **pp = &J.delayed;
    while (*pp && (*pp)->due_ms <= j->due_ms)
        pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    j->p->ndelayed++;
    arm_timer();
}

static void mem_refill(jpipe_t *p)
{
    if (!p->conf.prefetch)
        p->conf.prefetch = 100000;
}

static int mem_open(jpipe_t *p, char *errbuf, size_t errlen)
{
    FL_UNUSED(errbuf);
    FL_UNUSED(errlen);
    p->queue = p->name;
    mem_refill(p);
    return 0;
}

static void mem_push(jpipe_t *p, job_t *list, fl_jdone_cb done, void *ctx)
{
    FL_UNUSED(p);
    while (list) {
        job_t *j = list;
        list = j->next;
        mem_enqueue(j, j->delay_s);
    }
    done(ctx, NULL);
}

static void mem_ack(jpipe_t *p, job_t *j)
{
    fl_jobs_job_free(j);
    mem_gone_if_done(p);
}

static void mem_drop(jpipe_t *p, job_t *j, const char *why)
{
    FL_UNUSED(why);
    fl_jobs_job_free(j);
    mem_gone_if_done(p);
}

static void mem_retry(jpipe_t *p, job_t *j, int64_t delay_s, const char *why)
{
    j->attempts++;
    if (p->dead) {
        mem_drop(p, j, why);
        return;
    }
    if (p->conf.max_attempts && j->attempts >= p->conf.max_attempts) {
        fl_warn("jobs: job %s of pipeline %s failed %u time(s) (max_attempts): dropped; last: %s",
                j->id, p->name, j->attempts, why);
        fl_jobs_job_free(j);
        return;
    }
    mem_enqueue(j, delay_s);
}

static void mem_back(jpipe_t *p, job_t *j)
{
    if (p->dead)
        mem_drop(p, j, "destroyed");
    else
        fl_jobs_ready_put(p, j);
}

static void mem_kick(jpipe_t *p)
{
    FL_UNUSED(p);
}

static void mem_stat_now(jpipe_t *p, fl_jstat_t *st)
{
    *st = (fl_jstat_t){(int64_t)p->nready, (int64_t)p->ndelayed, (int64_t)p->nreserved, ""};
}

static void mem_stat(jpipe_t *p, fl_jstat_cb cb, void *ctx)
{
    fl_jstat_t st;
    mem_stat_now(p, &st);
    cb(ctx, &st);
}

static bool mem_same(const struct fl_conf_pipeline *a, const struct fl_conf_pipeline *b)
{
    FL_UNUSED(a);
    FL_UNUSED(b);
    return true; /* priority, prefetch and max_attempts are read from p->conf when used */
}

/* Destroyed: its queued and delayed jobs are dropped (they live nowhere else); jobs in flight
 * finish, whatever their answer they are dropped too. */
static void mem_close(jpipe_t *p)
{
    size_t n = p->nready + p->ndelayed;
    for (job_t **jj = &J.delayed; *jj;) {
        job_t *j = *jj;
        if (j->p == p) {
            *jj = j->next;
            fl_jobs_job_free(j);
        } else {
            jj = &j->next;
        }
    }
    free_list(fl_jobs_ready_take_all(p));
    p->ndelayed = 0;
    if (n)
        fl_warn("jobs: pipeline %s (memory) closed with %zu queued job(s): dropped", p->name, n);
    mem_gone_if_done(p);
}

static unsigned mem_busy(void)
{
    return 0;
}

static void mem_shutdown(void) {}

const fl_jdriver_t fl_jobs_memory = {
    .name = "memory",
    .open = mem_open,
    .push = mem_push,
    .ack = mem_ack,
    .retry = mem_retry,
    .drop = mem_drop,
    .back = mem_back,
    .kick = mem_kick,
    .stat = mem_stat,
    .stat_now = mem_stat_now,
    .same = mem_same,
    .refill = mem_refill,
    .close = mem_close,
    .busy = mem_busy,
    .shutdown = mem_shutdown,
};

/* Reload replaces a memory pipeline: its queued and delayed jobs (delay_s = what is left). */
static job_t *mem_take_queued(jpipe_t *p)
{
    job_t *list = fl_jobs_ready_take_all(p), **tail = &list;
    while (*tail)
        tail = &(*tail)->next;
    int64_t now = fl_now_ms();
    for (job_t **jj = &J.delayed; *jj;) {
        job_t *j = *jj;
        if (j->p != p) {
            jj = &j->next;
            continue;
        }
        *jj = j->next;
        j->delay_s = j->due_ms > now ? (j->due_ms - now + 999) / 1000 : 0;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
    }
    p->ndelayed = 0;
    for (job_t *j = list; j; j = j->next)
        if (j->due_ms <= now)
            j->delay_s = 0;
    return list;
}

static size_t list_len(const job_t *j)
{
    size_t n = 0;
    for (; j; j = j->next)
        n++;
    return n;
}

static void moved_done(void *ctx, const char *err)
{
    if (err)
        fl_error("jobs: reload: moving the queued jobs into pipeline %s failed: %s (they are lost)",
                 (const char *)ctx, err);
}

/* ---- timer: delayed memory jobs, and channels that were full ---- */

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
        fl_jobs_ready_put(j->p, j);
    }
    for (jpeer_t *e = J.peers; e; e = e->next)
        e->blocked = false;
    fl_jobs_dispatch();
}

static void arm_timer(void)
{
    bool blocked = false;
    for (jpeer_t *e = J.peers; e; e = e->next)
        blocked |= e->blocked;
    int64_t due = blocked ? fl_now_ms() + 10 : J.delayed ? J.delayed->due_ms : 0;
    if (!due || !J.loop || (J.timer && J.timer_due <= due))
        return;
    fl_timer_del(J.loop, J.timer);
    int64_t ms = due - fl_now_ms();
    J.timer = fl_timer_add(J.loop, ms > 0 ? ms : 0, timer_cb, NULL);
    J.timer_due = due;
}

/* ---- dispatch ---- */

/* Sends the records gathered for e. On failure its unsent jobs go back to the head of their
 * queues (a full channel: retried by the timer), or — one job the channel can never carry —
 * are dropped. 0 when sent. */
static int flush_peer(jpeer_t *e)
{
    if (!e->out.len)
        return 0;
    ssize_t k = send(e->fd, e->out.data, e->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    int err = errno;
    unsigned n = e->unsent;
    e->out.len = 0;
    e->unsent = 0;
    if (k >= 0)
        return 0;
    if (err != EAGAIN && err != EWOULDBLOCK && err != EMSGSIZE)
        fl_warn("jobs: cannot hand %u job(s) to a reactor: %s", n, strerror(err));
    bool never = err == EMSGSIZE && n == 1;
    e->solo |= err == EMSGSIZE;
    e->blocked = true; /* the timer dispatches again shortly */
    while (n--) {      /* the most recent first: each goes in front of the one taken after it */
        job_t *j = e->jobs;
        e->jobs = j->next;
        e->inflight--;
        j->p->nreserved--;
        j->peer = NULL;
        if (never) {
            fl_error("jobs: job %s of pipeline %s does not fit a channel message: dropped", j->id,
                     j->p->name);
            j->p->drv->drop(j->p, j, "too large for a channel message");
        } else {
            ready_unget(j->p, j);
        }
    }
    return -1;
}

/* "JOB <seq> <ctxlen> <plen>\n" + context JSON (spec §7.1) + payload, into e->out. -2 when the job
 * can never be carried (too large), -1 when the batch before it could not be sent. */
/* A JSON string, quoted and escaped (RFC 8259: ", \ and control characters). */
static int json_put_str(fl_buf_t *b, const char *s)
{
    int rc = fl_buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s && rc == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rc |= fl_buf_append(b, run, (size_t)(s - run));
        rc |= c == '"'    ? fl_buf_puts(b, "\\\"")
              : c == '\\' ? fl_buf_puts(b, "\\\\")
                          : fl_buf_printf(b, "\\u%04x", c);
        run = s + 1;
    }
    rc |= fl_buf_append(b, run, (size_t)(s - run));
    return rc | fl_buf_append(b, "\"", 1);
}

/* The context of spec §7.1: {"id","job","driver","queue","headers","pipeline"} (malloc'd). */
static char *job_context(const job_t *j)
{
    fl_buf_t b = {0};
    int rc = fl_buf_puts(&b, "{\"id\":") | json_put_str(&b, j->id) | fl_buf_puts(&b, ",\"job\":") |
             json_put_str(&b, j->name) | fl_buf_puts(&b, ",\"driver\":") |
             json_put_str(&b, j->p->drv->name) | fl_buf_puts(&b, ",\"queue\":") |
             json_put_str(&b, j->p->queue) | fl_buf_puts(&b, ",\"headers\":");
    char *h = j->headers ? cJSON_PrintUnformatted(j->headers) : NULL;
    rc |= fl_buf_puts(&b, h ? h : "null");
    cJSON_free(h);
    rc |= fl_buf_puts(&b, ",\"pipeline\":") | json_put_str(&b, j->p->name) |
          fl_buf_append(&b, "}", 2);
    if (rc || (j->headers && !h)) {
        fl_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int encode_job(jpeer_t *e, job_t *j)
{
    char *ctx = job_context(j);
    if (!ctx)
        return -1;
    char head[80];
    size_t clen = strlen(ctx);
    int hl = snprintf(head, sizeof(head), FL_MSG_JOB "%llu %zu %zu\n", (unsigned long long)j->seq,
                      clen, j->plen);
    size_t len = (size_t)hl + clen + j->plen;
    int rc = 0;
    if (len > FL_JOBS_MSG_MAX)
        rc = -2; /* headers added by requeues made it too large: it cannot be delivered */
    else if (e->out.len && (e->solo || e->out.len + len > JOB_BATCH_MAX) && flush_peer(e) < 0)
        rc = -1;
    else if (fl_buf_reserve(&e->out, len) < 0)
        rc = -1;
    if (rc == 0) {
        fl_buf_append(&e->out, head, (size_t)hl);
        fl_buf_append(&e->out, ctx, clen);
        fl_buf_append(&e->out, j->payload, j->plen);
    }
    free(ctx);
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
        if (!p->paused && p->nready && p->nreserved < p->conf.prefetch &&
            (!best || p->pass < best->pass))
            best = p;
    return best;
}

void fl_jobs_dispatch(void)
{
    jpeer_t *e;
    jpipe_t *p;
    while ((e = pick_peer()) && (p = pick_pipe())) {
        job_t *j = ready_take(p);
        j->seq = ++J.seq;
        int rc = encode_job(e, j);
        if (rc == -2) {
            fl_error("jobs: job %s of pipeline %s no longer fits a channel message: dropped", j->id,
                     p->name);
            p->drv->drop(p, j, "too large for a channel message");
            continue;
        }
        if (rc < 0) {
            e->blocked = true; /* retried shortly; the job keeps its place */
            ready_unget(p, j);
            continue;
        }
        J.vtime = p->pass;
        p->pass += (uint64_t)p->conf.priority;
        p->nreserved++;
        j->peer = e;
        j->next = e->jobs;
        e->jobs = j;
        e->inflight++;
        e->unsent++;
    }
    for (e = J.peers; e; e = e->next)
        flush_peer(e);
    for (p = J.pipes; p; p = p->next)
        p->drv->kick(p); /* a durable driver refills what was taken */
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
            j->next = NULL;
            e->inflight--;
            j->p->nreserved--;
            j->peer = NULL;
            return j;
        }
    return NULL;
}

/* Requeue headers from the worker (§7.2 type 4): merged into the job's, theirs win. */
static void merge_headers(job_t *j, const char *json, size_t len)
{
    cJSON *h = cJSON_ParseWithLength(json, len);
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

/* One record "JDONE <seq> <kind> <delay_s> <hlen> <rlen>\n" + headers JSON (hlen bytes) +
 * reason (rlen bytes) (reactor/jobs.h); returns its length, or 0 when malformed. */
static size_t on_done(jpeer_t *e, const char *msg, size_t n)
{
    const char *nl = memchr(msg, '\n', n < 96 ? n : 96);
    char head[96];
    unsigned long long seq = 0;
    char kind = 0;
    long delay = 0;
    size_t hlen = 0, rlen = 0;
    if (nl) {
        memcpy(head, msg, (size_t)(nl - msg));
        head[nl - msg] = 0;
    }
    if (!nl ||
        sscanf(head + strlen(FL_MSG_JDONE), "%llu %c %ld %zu %zu", &seq, &kind, &delay, &hlen,
               &rlen) != 5 ||
        hlen > (size_t)(msg + n - nl - 1) || rlen > (size_t)(msg + n - nl - 1) - hlen) {
        fl_warn("jobs: malformed message from a reactor: %.80s", msg);
        return 0;
    }
    const char *body = nl + 1;
    size_t len = (size_t)(body - msg) + hlen + rlen;
    job_t *j = peer_take(e, seq);
    if (!j)
        return len; /* already requeued (the reactor was presumed gone) */
    jpipe_t *p = j->p;
    char why[512];
    size_t wl = rlen < sizeof(why) ? rlen : sizeof(why) - 1;
    memcpy(why, body + hlen, wl);
    why[wl] = 0;
    switch (kind) {
    case 'a':
        fl_srvm_job(p->name, FL_SRVM_JOB_ACKED);
        p->drv->ack(p, j);
        break;
    case 'd':
        fl_srvm_job(p->name, FL_SRVM_JOB_DEAD);
        p->drv->drop(p, j, wl ? why : "nacked without requeue");
        break;
    case 'r':
        fl_srvm_job(p->name, FL_SRVM_JOB_NACKED);
        if (hlen)
            merge_headers(j, body, hlen);
        p->drv->retry(p, j, delay, wl ? why : "requeued by the worker");
        break;
    case 'f':
        fl_srvm_job(p->name, FL_SRVM_JOB_NACKED);
        p->drv->retry(p, j, delay, wl ? why : "the run failed");
        break;
    default: /* 'b': it never reached a worker */
        p->drv->back(p, j);
    }
    return len;
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
        fl_jobs_dispatch();
        return true;
    }
    if (n > dl && memcmp(msg, FL_MSG_JDONE, dl) == 0) {
        jpeer_t *e = J.started ? peer_get(peer, fd, false) : NULL;
        while (e && n > dl && memcmp(msg, FL_MSG_JDONE, dl) == 0) { /* one record after another */
            size_t k = on_done(e, msg, n);
            if (!k)
                break;
            msg += k;
            n -= k;
        }
        if (e)
            fl_jobs_dispatch();
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
            job_t *j = peer_take(e, e->jobs->seq);
            j->p->drv->back(j->p, j);
            n++;
        }
        if (n)
            fl_warn("jobs: a reactor went away with %u job(s) in flight: requeued", n);
        fl_buf_free(&e->out);
        free(e);
        fl_jobs_dispatch();
        return;
    }
}

/* ---- jobs.v1 codec ---- */

static char *dup_n(const void *p, size_t n)
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
static job_t *parse_job(const uint8_t *p, const uint8_t *end, const char **why, char *errbuf,
                        size_t errlen)
{
    job_t *j = fl_jobs_job_new();
    pb_field_t f;
    int rc;
    fl_slice_t pipe = FL_SLICE_NULL;
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
        } else if (f.field == 5 && parse_options(&f, &j->prio, &pipe, &j->delay_s) < 0) {
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
    if (j->plen + strlen(j->id) + strlen(j->name) + strlen(j->p->name) + strlen(j->p->queue) +
            1024 >
        FL_JOBS_MSG_MAX) {
        snprintf(errbuf, errlen,
                 "job %s is too large: %zu bytes of payload (forkline takes up to about %d KiB "
                 "per job)",
                 j->id, j->plen, FL_JOBS_MSG_MAX / 1024 - 2);
        *why = errbuf;
        goto fail;
    }
    if (j->prio == 0)
        j->prio = j->p->conf.priority; /* §2.9: priority 0 inherits the pipeline's */
    if (j->delay_s < 0)
        j->delay_s = 0;
    *why = NULL;
    return j;
fail:
    fl_jobs_job_free(j);
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

/* ---- RPC: push ---- */

typedef struct {
    fl_rpc_call_t *call;
    unsigned left;
    char err[300];
} pushop_t;

typedef struct { /* the part of a push that went to one pipeline */
    pushop_t *op;
    char *pipeline;
    size_t n;
} pushpart_t;

static void push_done(void *ctx, const char *err);

static void push_part_done(void *ctx, const char *err)
{
    pushpart_t *part = ctx;
    for (size_t i = 0; !err && i < part->n; i++)
        fl_srvm_job(part->pipeline, FL_SRVM_JOB_PUSHED);
    push_done(part->op, err);
    free(part->pipeline);
    free(part);
}

static void push_done(void *ctx, const char *err)
{
    pushop_t *op = ctx;
    if (err && !op->err[0])
        snprintf(op->err, sizeof(op->err), "%s", err);
    if (--op->left)
        return;
    if (op->err[0])
        fl_rpc_fail(op->call, "%s", op->err);
    else
        fl_rpc_reply(op->call, "", 0);
    free(op);
}

/* A memory pipeline holds at most jobs.pipeline_size queued jobs: beyond, pushes are refused
 * (RR would block the push up to jobs.timeout; an error at once loses nothing either). */
static const char *check_sizes(job_t *list, char *errbuf, size_t errlen)
{
    for (jpipe_t *p = J.pipes; p; p = p->next) {
        size_t n = 0;
        for (job_t *k = list; k; k = k->next)
            n += k->p == p;
        if (n && p->drv == &fl_jobs_memory && p->nready + p->ndelayed + n > J.pipeline_size) {
            snprintf(errbuf, errlen,
                     "pipeline %s is full: %zu job(s) queued + %zu pushed > jobs.pipeline_size "
                     "%llu",
                     p->name, p->nready + p->ndelayed, n, (unsigned long long)J.pipeline_size);
            return errbuf;
        }
    }
    return NULL;
}

/* Push (batch false: PushRequest{job=1}) and PushBatch (PushBatchRequest{jobs=1 repeated}):
 * every job is checked before any is stored, so a bad batch stores nothing. A batch over several
 * pipelines goes to each driver in one piece (a redis pipeline stores its part atomically). */
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
        job_t *j = parse_job(f.data, f.data + f.len, &why, errbuf, sizeof(errbuf));
        if (!j)
            break;
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
    if (!why)
        why = check_sizes(list, errbuf, sizeof(errbuf));
    if (why) {
        free_list(list);
        fl_rpc_fail(call, "%s", why);
        return;
    }
    pushop_t *op = calloc(1, sizeof(*op));
    if (!op) {
        free_list(list);
        fl_rpc_fail(call, "out of memory");
        return;
    }
    op->call = call;
    op->left = 1; /* held until every part is handed over */
    while (list) {
        jpipe_t *pp = list->p;
        job_t *mine = NULL, **mt = &mine, **rest = &list;
        size_t n = 0;
        while (*rest) {
            job_t *j = *rest;
            if (j->p == pp) {
                *rest = j->next;
                j->next = NULL;
                *mt = j;
                mt = &j->next;
                n++;
            } else {
                rest = &j->next;
            }
        }
        pushpart_t *part = calloc(1, sizeof(*part));
        if (part && !(part->pipeline = strdup(pp->name))) {
            free(part);
            part = NULL;
        }
        op->left++;
        if (!part) {
            free_list(mine);
            push_done(op, "out of memory");
            continue;
        }
        part->op = op;
        part->n = n;
        pp->drv->push(pp, mine, push_part_done, part);
    }
    fl_jobs_dispatch();
    push_done(op, NULL);
}

static void rpc_push(fl_rpc_call_t *call)
{
    rpc_push_any(call, false);
}

static void rpc_push_batch(fl_rpc_call_t *call)
{
    rpc_push_any(call, true);
}

/* ---- RPC: pause, resume, list ---- */

static void pipe_set_paused(jpipe_t *p, bool paused)
{
    if (p->paused == paused)
        return;
    p->paused = paused;
    fl_info("jobs: pipeline %s %s", p->name, paused ? "paused" : "resumed");
    p->drv->kick(p);
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
            if (pass == 1)
                pipe_set_paused(pp, paused);
        }
        if (rc < 0) {
            fl_rpc_fail(call, "%s", err_wire);
            return;
        }
    }
    fl_jobs_dispatch();
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

/* ---- RPC: Stat and informer.Jobs (drivers may answer later) ---- */

typedef struct statop statop_t;
typedef struct {
    statop_t *op;
    char *name, *queue;
    const char *driver;
    int64_t priority;
    bool ready;
    fl_jstat_t st;
} statrow_t;

struct statop {
    fl_rpc_call_t *call;
    bool informer;
    size_t n, left;
    statrow_t *rows;
};

static void put_varint_field(fl_buf_t *b, uint32_t field, uint64_t v)
{
    pb_put_tag(b, field, PB_VARINT);
    pb_put_varint(b, v);
}

static uint64_t nonneg(int64_t v)
{
    return v > 0 ? (uint64_t)v : 0;
}

static void stat_reply_proto(statop_t *op)
{
    fl_buf_t b = {0}, s = {0};
    for (size_t i = 0; i < op->n; i++) {
        statrow_t *r = &op->rows[i];
        s.len = 0;
        pb_put_bytes(&s, 1, r->name, strlen(r->name));
        pb_put_bytes(&s, 2, r->driver, strlen(r->driver));
        pb_put_bytes(&s, 3, r->queue, strlen(r->queue));
        put_varint_field(&s, 4, nonneg(r->st.active));
        put_varint_field(&s, 5, nonneg(r->st.delayed));
        put_varint_field(&s, 6, nonneg(r->st.reserved));
        put_varint_field(&s, 7, r->ready);
        put_varint_field(&s, 8, (uint64_t)r->priority);
        pb_put_bytes(&b, 1, s.data, s.len);
    }
    fl_rpc_reply(op->call, b.data ? b.data : "", b.len);
    fl_buf_free(&b);
    fl_buf_free(&s);
}

static int informer_json(fl_buf_t *b, const statrow_t *rows, size_t n)
{
    int rc = fl_buf_puts(b, "[");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const statrow_t *r = &rows[i];
        rc |= fl_buf_puts(b, i ? ",{\"Pipeline\":" : "{\"Pipeline\":");
        rc |= json_put_str(b, r->name);
        rc |= fl_buf_printf(b, ",\"Driver\":\"%s\",\"Queue\":", r->driver);
        rc |= json_put_str(b, r->queue);
        rc |= fl_buf_printf(b,
                            ",\"Active\":%llu,\"Delayed\":%llu,\"Reserved\":%llu,\"Ready\":%s,"
                            "\"Priority\":%lld,\"ErrorMessage\":",
                            (unsigned long long)nonneg(r->st.active),
                            (unsigned long long)nonneg(r->st.delayed),
                            (unsigned long long)nonneg(r->st.reserved), r->ready ? "true" : "false",
                            (long long)r->priority);
        rc |= json_put_str(b, r->st.error);
        rc |= fl_buf_puts(b, "}");
    }
    return rc == 0 ? fl_buf_puts(b, "]") : -1;
}

static void stat_reply_informer(statop_t *op)
{
    fl_buf_t b = {0};
    if (informer_json(&b, op->rows, op->n) == 0)
        fl_rpc_reply_json(op->call, b.data, b.len);
    else
        fl_rpc_fail(op->call, "out of memory");
    fl_buf_free(&b);
}

static void row_fill(statrow_t *r, statop_t *op, const jpipe_t *p)
{
    r->op = op;
    r->name = (char *)p->name;
    r->queue = (char *)p->queue;
    r->driver = p->drv->name;
    r->priority = p->conf.priority;
    r->ready = !p->paused;
}

int fl_jobs_informer(fl_buf_t *out)
{
    size_t n = 0;
    for (jpipe_t *p = J.pipes; p; p = p->next)
        n++;
    statrow_t *rows = calloc(n + 1, sizeof(*rows));
    if (!rows)
        return -1;
    size_t i = 0;
    for (jpipe_t *p = J.pipes; p; p = p->next, i++) {
        row_fill(&rows[i], NULL, p);
        p->drv->stat_now(p, &rows[i].st);
    }
    int rc = informer_json(out, rows, n);
    free(rows);
    return rc;
}

static void stat_row_done(void *ctx, const fl_jstat_t *st)
{
    statrow_t *r = ctx;
    statop_t *op = r->op;
    r->st = *st;
    if (--op->left)
        return;
    if (op->informer)
        stat_reply_informer(op);
    else
        stat_reply_proto(op);
    for (size_t i = 0; i < op->n; i++) {
        free(op->rows[i].name);
        free(op->rows[i].queue);
    }
    free(op->rows);
    free(op);
}

static void stat_start(fl_rpc_call_t *call, bool informer)
{
    size_t n = 0;
    for (jpipe_t *p = J.pipes; p; p = p->next)
        n++;
    statop_t *op = calloc(1, sizeof(*op));
    statrow_t *rows = calloc(n + 1, sizeof(*rows));
    if (!op || !rows) {
        free(op);
        free(rows);
        fl_rpc_fail(call, "out of memory");
        return;
    }
    op->call = call;
    op->informer = informer;
    op->rows = rows;
    op->n = n;
    op->left = n + 1; /* held until every driver was asked */
    size_t i = 0;
    for (jpipe_t *p = J.pipes; p; p = p->next, i++) {
        row_fill(&rows[i], op, p);
        rows[i].name = strdup(p->name); /* the pipeline may be destroyed before the answer */
        rows[i].queue = strdup(p->queue);
    }
    /* rows are filled first: a driver may answer from inside stat() */
    i = 0;
    for (jpipe_t *p = J.pipes; p; p = p->next, i++)
        p->drv->stat(p, stat_row_done, &rows[i]);
    fl_jstat_t none = {0, 0, 0, ""};
    rows[n].op = op;
    stat_row_done(&rows[n], &none);
}

static void rpc_stat(fl_rpc_call_t *call)
{
    if (need_proto(call))
        stat_start(call, false);
}

/* informer.Jobs(plugin): replaces the built-in empty answer once jobs are configured. */
static void rpc_informer(fl_rpc_call_t *call)
{
    stat_start(call, true);
}

/* ---- pipelines ---- */

static int conf_dup(struct fl_conf_pipeline *d, const struct fl_conf_pipeline *s)
{
    *d = *s;
    const struct fl_conf_jredis *r = &s->redis;
    struct fl_conf_jredis *q = &d->redis;
    char **dst[] = {&d->name,        &d->driver,   &q->addr,       &q->username, &q->password,
                    &q->tls_root_ca, &q->tls_cert, &q->tls_key,    &q->stream,   &q->group,
                    &q->consumer,    &q->delayed,  &q->dead_letter};
    const char *src[] = {s->name,        s->driver,   r->addr,       r->username, r->password,
                         r->tls_root_ca, r->tls_cert, r->tls_key,    r->stream,   r->group,
                         r->consumer,    r->delayed,  r->dead_letter};
    int rc = 0;
    for (size_t i = 0; i < FL_ARRAY_SIZE(dst); i++)
        if (src[i] && !(*dst[i] = strdup(src[i])))
            rc = -1;
    if (rc < 0)
        fl_conf_pipeline_free(d);
    return rc;
}

static void pipe_free(jpipe_t *p)
{
    free_list(fl_jobs_ready_take_all(p));
    fl_conf_pipeline_free(&p->conf);
    free(p->name);
    free(p);
}

static jpipe_t *pipe_new(const struct fl_conf_pipeline *cp, bool paused, char *errbuf,
                         size_t errlen)
{
    const fl_jdriver_t *drv = driver_find(cp->driver);
    if (!drv) {
        snprintf(errbuf, errlen, "unsupported jobs driver: %s (forkline has memory and redis)",
                 cp->driver ? cp->driver : "");
        return NULL;
    }
    jpipe_t *p = calloc(1, sizeof(*p));
    if (!p || conf_dup(&p->conf, cp) < 0 || !(p->name = strdup(cp->name))) {
        if (p)
            fl_conf_pipeline_free(&p->conf);
        free(p);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    if (p->conf.priority <= 0)
        p->conf.priority = 10;
    p->drv = drv;
    p->paused = paused;
    p->pass = J.vtime;
    if (drv->open(p, errbuf, errlen) < 0) {
        fl_conf_pipeline_free(&p->conf);
        free(p->name);
        free(p);
        return NULL;
    }
    jpipe_t **tail = &J.pipes;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    return p;
}

void fl_jobs_pipe_gone(fl_jpipe_t *p)
{
    for (jpipe_t **pp = &J.graveyard; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    char *name = strdup(p->name);
    pipe_free(p);
    /* a pipeline of the same name may have waited for this one (fl_jobs_name_busy) */
    for (jpipe_t *q = J.pipes; q && name; q = q->next)
        if (strcmp(q->name, name) == 0)
            q->drv->kick(q);
    free(name);
}

/* Off the list at once (the name is free again); the driver finishes with its jobs. */
static void pipe_destroy(jpipe_t *p)
{
    for (jpipe_t **pp = &J.pipes; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    p->dead = true;
    p->next = J.graveyard;
    J.graveyard = p;
    p->drv->close(p);
}

/* DeclareRequest{pipeline=1 map<string,string>}: driver, name, and the pipeline's options as
 * strings (the keys of the config, docs/jobs-redis.md). A declared pipeline consumes at once, as
 * upstream. */
static int declare_opt(struct fl_conf_pipeline *c, fl_slice_t k, fl_slice_t v, char *errbuf,
                       size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } strs[] = {
        {"name", offsetof(struct fl_conf_pipeline, name)},
        {"driver", offsetof(struct fl_conf_pipeline, driver)},
        {"addrs", offsetof(struct fl_conf_pipeline, redis.addr)},
        {"addr", offsetof(struct fl_conf_pipeline, redis.addr)},
        {"username", offsetof(struct fl_conf_pipeline, redis.username)},
        {"password", offsetof(struct fl_conf_pipeline, redis.password)},
        {"tls_root_ca", offsetof(struct fl_conf_pipeline, redis.tls_root_ca)},
        {"tls_cert", offsetof(struct fl_conf_pipeline, redis.tls_cert)},
        {"tls_key", offsetof(struct fl_conf_pipeline, redis.tls_key)},
        {"stream", offsetof(struct fl_conf_pipeline, redis.stream)},
        {"group", offsetof(struct fl_conf_pipeline, redis.group)},
        {"consumer", offsetof(struct fl_conf_pipeline, redis.consumer)},
        {"delayed", offsetof(struct fl_conf_pipeline, redis.delayed)},
        {"dead_letter", offsetof(struct fl_conf_pipeline, redis.dead_letter)},
    };
    char val[512];
    if (v.len >= sizeof(val)) {
        snprintf(errbuf, errlen, "option %.*s: value too long", (int)(k.len > 40 ? 40 : k.len),
                 k.base);
        return -1;
    }
    memcpy(val, v.base ? v.base : "", v.len);
    val[v.len] = 0;
    for (size_t i = 0; i < FL_ARRAY_SIZE(strs); i++)
        if (k.len == strlen(strs[i].key) && memcmp(k.base, strs[i].key, k.len) == 0) {
            char **dst = (char **)((char *)c + strs[i].off);
            free(*dst);
            *dst = strdup(val);
            return *dst ? 0 : -1;
        }
    char *end = val;
    long long n = 0;
    int64_t ms = 0;
    if (fl_slice_eq(k, "visibility_timeout", 18)) {
        if (fl_parse_duration_ms(val, &ms) < 0 && (ms = strtoll(val, &end, 10) * 1000, *end)) {
            snprintf(errbuf, errlen, "option visibility_timeout: not a duration: %.200s", val);
            return -1;
        }
        c->redis.visibility_timeout_ms = ms;
        return 0;
    }
    if (fl_slice_eq(k, "tls", 3)) {
        c->redis.tls = strcmp(val, "true") == 0 || strcmp(val, "1") == 0;
        return 0;
    }
    if (*val)
        n = strtoll(val, &end, 10);
    if (*end || n < 0) {
        snprintf(errbuf, errlen, "option %.*s: not a number: %.200s",
                 (int)(k.len > 40 ? 40 : k.len), k.base, val);
        return -1;
    }
    if (fl_slice_eq(k, "priority", 8))
        c->priority = n;
    else if (fl_slice_eq(k, "prefetch", 8))
        c->prefetch = (uint64_t)n;
    else if (fl_slice_eq(k, "max_attempts", 12))
        c->max_attempts = (unsigned)n;
    else if (fl_slice_eq(k, "db", 2))
        c->redis.db = (int)n;
    /* other keys (queue, ...) belong to drivers forkline does not have: ignored */
    return 0;
}

static void rpc_declare(fl_rpc_call_t *call)
{
    if (!need_proto(call))
        return;
    const uint8_t *p = (const uint8_t *)call->req.arg.base, *end = p + call->req.arg.len;
    pb_field_t f, g;
    int rc;
    struct fl_conf_pipeline c;
    memset(&c, 0, sizeof(c));
    char errbuf[300] = "";
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
        if (k.base && declare_opt(&c, k, v, errbuf, sizeof(errbuf)) < 0) {
            rc = 0;
            break;
        }
    }
    if (rc < 0)
        fl_rpc_fail(call, "%s", err_wire);
    else if (errbuf[0])
        fl_rpc_fail(call, "%s", errbuf);
    else if (!c.name || !*c.name)
        fl_rpc_fail(call, "pipeline name is required");
    else if (!driver_find(c.driver))
        fl_rpc_fail(call, "unsupported jobs driver: %s (forkline has memory and redis)",
                    c.driver ? c.driver : "");
    else if (pipe_find(c.name, strlen(c.name)))
        fl_rpc_fail(call, "pipeline already exists, name: %s, driver: %s", c.name,
                    pipe_find(c.name, strlen(c.name))->drv->name);
    else if (!pipe_new(&c, false, errbuf, sizeof(errbuf)))
        fl_rpc_fail(call, "%s", errbuf);
    else {
        fl_info("jobs: pipeline %s declared (%s)", c.name, c.driver);
        fl_jobs_dispatch();
        fl_rpc_reply(call, "", 0);
    }
    fl_conf_pipeline_free(&c);
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
                fl_info("jobs: pipeline %s destroyed", pp->name);
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

static bool in_list(char *const *list, const char *name)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

static void set_consume(const fl_conf_t *c)
{
    fl_strlist_free(J.consume);
    J.consume = calloc(c->jobs.nconsume + 1, sizeof(char *));
    for (size_t i = 0; J.consume && i < c->jobs.nconsume; i++)
        J.consume[i] = strdup(c->jobs.consume[i]);
}

static int add_methods(void)
{
    if (!J.rpc || J.methods_added)
        return 0;
    J.methods_added = true;
    return fl_rpc_server_add(J.rpc, methods, FL_ARRAY_SIZE(methods), NULL);
}

int fl_jobs_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    J.loop = loop;
    J.rpc = rpc;
    J.pipeline_size = c->jobs.pipeline_size ? c->jobs.pipeline_size : 1000000;
    if (!c->jobs.enabled)
        return 0;
    J.started = true;
    set_consume(c);
    char errbuf[300];
    for (size_t i = 0; i < c->jobs.npipelines; i++) {
        const struct fl_conf_pipeline *cp = &c->jobs.pipelines[i];
        jpipe_t *p = pipe_new(cp, !in_list(c->jobs.consume, cp->name), errbuf, sizeof(errbuf));
        if (!p)
            return fl_conf_error(err, "jobs.pipelines.%s: %s", cp->name, errbuf);
        p->from_conf = true;
    }
    if (add_methods() < 0)
        return fl_conf_error(err, "out of memory");
    return 0;
}

/* Reload: the new config's pipelines replace the old config's. A pipeline whose driver or
 * broker identity changed is replaced (the old one finishes its jobs in flight, gives back what
 * it holds); one whose other options changed is updated in place; consume changes pause or
 * resume. Pipelines declared over RPC are left alone unless the config names them. */
void fl_jobs_reconfigure(const fl_conf_t *c)
{
    if (!J.loop)
        return;
    J.pipeline_size = c->jobs.pipeline_size ? c->jobs.pipeline_size : 1000000;
    if (!c->jobs.enabled && !J.started)
        return;
    J.started = true;
    if (add_methods() < 0)
        fl_error("jobs: cannot register the jobs RPC methods: out of memory");
    for (jpipe_t *p = J.pipes, *next; p; p = next) {
        next = p->next;
        bool kept = false;
        for (size_t i = 0; i < c->jobs.npipelines; i++)
            kept |= strcmp(c->jobs.pipelines[i].name, p->name) == 0;
        if (p->from_conf && !kept) {
            fl_info("jobs: reload: pipeline %s is no longer configured: destroyed", p->name);
            pipe_destroy(p);
        }
    }
    char errbuf[300];
    for (size_t i = 0; i < c->jobs.npipelines; i++) {
        const struct fl_conf_pipeline *cp = &c->jobs.pipelines[i];
        bool was = in_list(J.consume, cp->name), now = in_list(c->jobs.consume, cp->name);
        jpipe_t *p = pipe_find(cp->name, strlen(cp->name));
        bool paused = p && was == now ? p->paused : !now;
        if (p && driver_find(cp->driver) == p->drv && p->drv->same(&p->conf, cp)) {
            struct fl_conf_pipeline nc;
            if (conf_dup(&nc, cp) == 0) {
                fl_conf_pipeline_free(&p->conf);
                p->conf = nc;
                if (p->conf.priority <= 0)
                    p->conf.priority = 10;
                p->drv->refill(p);
            }
            p->from_conf = true;
            pipe_set_paused(p, paused);
            continue;
        }
        job_t *moved = NULL; /* a memory pipeline's queue is its storage: it moves over */
        if (p) {
            fl_info("jobs: reload: pipeline %s changed its driver or broker: replaced", p->name);
            if (p->drv == &fl_jobs_memory)
                moved = mem_take_queued(p);
            pipe_destroy(p);
        }
        jpipe_t *np = pipe_new(cp, paused, errbuf, sizeof(errbuf));
        if (!np) {
            fl_error("jobs: reload: pipeline %s: %s", cp->name, errbuf);
            if (moved)
                fl_error("jobs: reload: pipeline %s: its %zu queued job(s) are lost", cp->name,
                         list_len(moved));
            free_list(moved);
            continue;
        }
        np->from_conf = true;
        if (moved) {
            for (job_t *j = moved; j; j = j->next)
                j->p = np;
            fl_info("jobs: reload: %zu queued job(s) moved into the new pipeline %s",
                    list_len(moved), np->name);
            np->drv->push(np, moved, moved_done, np->name);
        }
    }
    set_consume(c);
    fl_jobs_dispatch();
}

static void stop_wait_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(data);
    fl_loop_stop(loop);
}

static unsigned drivers_busy(void)
{
    unsigned n = 0;
    for (size_t i = 0; i < FL_ARRAY_SIZE(drivers); i++)
        n += drivers[i]->busy();
    return n;
}

/* The master is exiting (its reactors are gone): every pipeline gives back what it holds, and
 * the commands that do it (durable drivers) get up to 3 s on the loop to reach the broker. */
void fl_jobs_stop(void)
{
    while (J.peers) {
        jpeer_t *e = J.peers;
        J.peers = e->next;
        while (e->jobs) {
            job_t *j = peer_take(e, e->jobs->seq);
            j->p->drv->back(j->p, j);
        }
        fl_buf_free(&e->out);
        free(e);
    }
    while (J.pipes)
        pipe_destroy(J.pipes);
    if (J.loop) {
        int64_t deadline = fl_now_ms() + 3000;
        while (drivers_busy() && fl_now_ms() < deadline) {
            fl_timer_id t = fl_timer_add(J.loop, 20, stop_wait_cb, NULL);
            fl_loop_run(J.loop);
            fl_timer_del(J.loop, t);
        }
        fl_timer_del(J.loop, J.timer);
    }
    free_list(J.delayed);
    for (size_t i = 0; i < FL_ARRAY_SIZE(drivers); i++)
        drivers[i]->shutdown(); /* what is still on the wire is abandoned */
    while (J.graveyard) {
        jpipe_t *p = J.graveyard;
        J.graveyard = p->next;
        pipe_free(p);
    }
    fl_strlist_free(J.consume);
    memset(&J, 0, sizeof(J));
}

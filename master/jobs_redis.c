/* The jobs `redis` driver (jobs_driver.h): a pipeline is a Redis stream read through a consumer
 * group; durable and at-least-once. The entry format and the options are in docs/jobs-redis.md.
 *
 * Connections are a constant number, however many pipelines and PHP workers:
 *  - one command connection per Redis server (addr, user, password, db, tls): pushes, acks,
 *    retries, non-blocking reads, housekeeping;
 *  - one blocking-read connection per (server, group, consumer): one XREADGROUP ... BLOCK over
 *    every drained pipeline at once. A blocking command stalls whatever is pipelined behind it on
 *    its connection, hence the second one; when the set of streams it should wait on changes,
 *    CLIENT UNBLOCK (sent on the command connection) ends it and it is issued again.
 * So one server with the default group and consumer costs two connections.
 *
 * Flow: while a stream has entries, reads are non-blocking (XREADGROUP COUNT n, on the command
 * connection), triggered by capacity: when what the pipeline holds (ready here + in flight) falls
 * to half its prefetch. A read that comes back empty marks the pipeline drained and the blocking
 * reader waits for it; an entry arriving ends that wait. Nothing polls the stream.
 *
 * Every entry read is held (a hash of entry ids) until Redis confirmed its ack or retry, so a
 * re-read of this consumer's pending entries (XREADGROUP id 0: after a reconnect, a restart, or
 * kill -9 of the whole tree) hands out only what nobody here has. Commands that failed because the
 * connection went away are re-sent once it is back; each of them is idempotent (the scripts act
 * only if XACK says the entry was still pending), so nothing is lost or acked twice. Held entries
 * are kept fresh (XCLAIM JUSTID every visibility_timeout / 3) so that XAUTOCLAIM, run here every
 * visibility_timeout / 2, only takes entries whose consumer died. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobs_driver.h"
#include "log.h"
#include "redis.h"

#define R_BLOCK_MS 5000   /* one blocking read; re-issued at once */
#define R_SCAN_COUNT 200  /* pending entries per re-read page */
#define R_ACK_BATCH 256   /* ids per ack command */
#define R_ACK_DELAY_MS 2  /* acks wait this long to share one command (Redis CPU per job) */
#define R_TICK_MS 1000    /* housekeeping: delayed jobs, heartbeat, XAUTOCLAIM, counts */
#define R_CLAIM_COUNT 100 /* entries per XAUTOCLAIM */
#define R_READ_TIMEOUT 15000

typedef fl_job_t job_t;
typedef struct rbroker rbroker_t;
typedef struct rreader rreader_t;
typedef struct rpipe rpipe_t;

struct rbroker {
    char *key; /* addr, user, password, db, tls: one connection per distinct key */
    fl_redis_t *cmd;
    unsigned refs;
    rpipe_t *pipes;
    rreader_t *readers;
    rbroker_t *next;
};

struct rreader {
    rbroker_t *b;
    char *group, *consumer;
    fl_redis_t *r;
    long long client_id; /* CLIENT ID of the connection, for CLIENT UNBLOCK; 0 unknown */
    bool reading, unblocking;
    int64_t read_since;
    fl_timer_id retry;
    unsigned refs;
    rreader_t *next;
};

struct rpipe {
    fl_jpipe_t *p;
    rbroker_t *b;
    rreader_t *rd;
    char *stream, *group, *consumer, *delayed, *dead;
    fl_hmap_t held; /* entry id → job, from the read until Redis confirmed its end */
    bool inited, initing, scanned, scanning, fetching, drained, in_read;
    bool closing, gone, need_scan;
    char cursor[48], claim_cursor[48];
    job_t *acks, **acks_tail; /* waiting for the batched ack */
    size_t nacks;
    job_t *redo;   /* commands to send again once the connection is back */
    unsigned busy; /* commands on the wire */
    fl_timer_id flush_t, tick_t;
    int64_t tick_due, next_due_ms, last_beat_ms, last_claim_ms;
    fl_jstat_t cached;
    rpipe_t *bnext;
};

static struct {
    rbroker_t *brokers;
    unsigned busy;
    bool shutting;
} R;

static void fetch(rpipe_t *rp);
static void reader_kick(rreader_t *rd);
static void job_op(rpipe_t *rp, job_t *j);
static void pipe_start(rpipe_t *rp);
static void maybe_gone(rpipe_t *rp);
static void arm_tick(rpipe_t *rp, int64_t ms);

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- scripts (Lua, EVAL: Redis caches them by hash) ---- */

/* KEYS stream; ARGV group, id... : ack = XACK + XDEL, atomically. */
static const char lua_ack[] = "redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))\n"
                              "return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))\n";

/* KEYS stream, delayed, dead; ARGV group, id, mode, due, member-or-fields...
 * Acts only if the entry was still pending (so it can be sent again after a lost reply):
 * mode q: a new entry with these fields at the end of the stream; d: into the delayed set at
 * due (member = ARGV[5]); x: into the dead-letter stream. */
static const char lua_move[] =
    "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "if ARGV[3] == 'd' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])\n"
    "elseif ARGV[3] == 'x' then redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5))\n"
    "else redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5)) end\n"
    "return 1\n";

/* KEYS stream, delayed, dead; ARGV now (Unix ms), limit, group.
 * Moves due delayed jobs (members: netstrings "len:field,len:value,...") to the stream, then
 * returns {moved, next due or '', XLEN, ZCARD, pending}. */
static const char lua_promote[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "for _, m in ipairs(due) do\n"
    "  local f, i = {}, 1\n"
    "  while i <= #m do\n"
    "    local c = string.find(m, ':', i, true)\n"
    "    local n = c and tonumber(string.sub(m, i, c - 1))\n"
    "    if not n or string.sub(m, c + n + 1, c + n + 1) ~= ',' then f = nil break end\n"
    "    f[#f + 1] = string.sub(m, c + 1, c + n)\n"
    "    i = c + n + 2\n"
    "  end\n"
    "  if f and #f >= 2 and #f % 2 == 0 then redis.call('XADD', KEYS[1], '*', unpack(f))\n"
    "  else redis.call('XADD', KEYS[3], '*', 'member', m, 'reason', 'malformed delayed job') end\n"
    "  redis.call('ZREM', KEYS[2], m)\n"
    "end\n"
    "local nx = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
    "local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[3])\n"
    "return {#due, nx[2] or '', redis.call('XLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]),\n"
    "        ok and p[1] or 0}\n";

/* ---- commands on the command connection, counted so that closing waits for them ---- */

typedef void (*rdone_fn)(rpipe_t *rp, redisReply *reply, const char *err, void *arg);

typedef struct {
    rpipe_t *rp;
    rdone_fn fn;
    void *arg;
} jr_call_t;

static void jr_call_cb(fl_redis_t *r, redisReply *reply, const char *err, void *data)
{
    FL_UNUSED(r);
    jr_call_t *c = data;
    rpipe_t *rp = c->rp;
    rp->busy--;
    R.busy--;
    if (!err && reply->type == REDIS_REPLY_ERROR)
        err = reply->str; /* a command error: the connection is fine */
    if (c->fn)
        c->fn(rp, err ? NULL : reply, err, c->arg);
    free(c);
    maybe_gone(rp);
}

static void jr_cmd(rpipe_t *rp, rdone_fn fn, void *arg, int argc, const char **argv,
                   const size_t *lens)
{
    jr_call_t *c = malloc(sizeof(*c));
    if (c) {
        *c = (jr_call_t){rp, fn, arg};
        rp->busy++;
        R.busy++;
        if (fl_redis_cmd(rp->b->cmd, jr_call_cb, c, argc, argv, lens) == 0)
            return;
        rp->busy--;
        R.busy--;
        free(c);
    }
    if (fn)
        fn(rp, NULL, "out of memory", arg);
}

static bool cmd_up(const rpipe_t *rp)
{
    return fl_redis_up(rp->b->cmd);
}

static bool is_err(const char *err, const char *prefix)
{
    return err && strncmp(err, prefix, strlen(prefix)) == 0;
}

/* A command error (WRONGTYPE: the key is not a stream, NOPERM, ...): logged when it changes,
 * shown by informer.Jobs (ErrorMessage) until things work again. */
static void note_error(rpipe_t *rp, const char *what, const char *err)
{
    char msg[sizeof(rp->cached.error)];
    snprintf(msg, sizeof(msg), "%s %s: %s", what, rp->stream, err);
    if (strcmp(msg, rp->cached.error) != 0)
        fl_error("jobs: pipeline %s: %s", rp->p->name, msg);
    memcpy(rp->cached.error, msg, sizeof(msg));
}

/* ---- jobs and entries ---- */

static void held_del(rpipe_t *rp, job_t *j)
{
    if (j->node.key)
        fl_hmap_del(&rp->held, &j->node);
    j->node.key = NULL;
}

static void job_done(rpipe_t *rp, job_t *j)
{
    held_del(rp, j);
    fl_jobs_job_free(j);
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* [id, [field, value, ...]] → a job (fields: docs/jobs-redis.md); NULL when unusable. */
static job_t *entry_job(rpipe_t *rp, const redisReply *id, const redisReply *fields)
{
    job_t *j = fl_jobs_job_new();
    if (!j || id->len >= sizeof(j->ref)) {
        free(j);
        return NULL;
    }
    memcpy(j->ref, id->str, id->len);
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (k->len == 2 && !memcmp(k->str, "id", 2) && !j->id)
            j->id = dupn(v->str, v->len);
        else if (k->len == 3 && !memcmp(k->str, "job", 3) && !j->name)
            j->name = dupn(v->str, v->len);
        else if (k->len == 7 && !memcmp(k->str, "payload", 7) && !j->payload) {
            j->payload = (uint8_t *)dupn(v->str, v->len);
            j->plen = v->len;
        } else if (k->len == 7 && !memcmp(k->str, "headers", 7) && !j->headers) {
            cJSON *h = cJSON_ParseWithLength(v->str, v->len);
            if (cJSON_IsObject(h) && h->child)
                j->headers = h;
            else
                cJSON_Delete(h);
        } else if (k->len == 8 && !memcmp(k->str, "attempts", 8)) {
            char num[24];
            size_t n = v->len < sizeof(num) - 1 ? v->len : sizeof(num) - 1;
            memcpy(num, v->str, n);
            num[n] = 0;
            j->attempts = (uint32_t)strtoul(num, NULL, 10);
        }
    }
    if (!j->id || !*j->id) { /* a foreign producer may leave it out: the entry id stands in */
        free(j->id);
        j->id = strdup(j->ref);
    }
    if (!j->name)
        j->name = strdup("");
    if (!j->payload)
        j->payload = (uint8_t *)strdup("");
    if (!j->id || !j->name || !j->payload) {
        fl_jobs_job_free(j);
        return NULL;
    }
    j->prio = rp->p->conf.priority;
    j->p = rp->p;
    return j;
}

static void ignore_reply(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(reply);
    FL_UNUSED(arg);
    if (err && err != FL_REDIS_ECLOSED && err != FL_REDIS_ELOST && err != FL_REDIS_EDOWN)
        fl_warn("jobs: pipeline %s: redis: %s", rp->p->name, err);
}

/* An array of [id, fields] entries (XREADGROUP, XAUTOCLAIM): each one nobody here holds becomes
 * a ready job. Returns how many; *last gets the last id seen. */
static size_t add_entries(rpipe_t *rp, const redisReply *list, char *last, size_t lastlen)
{
    size_t added = 0;
    for (size_t i = 0; list && list->type == REDIS_REPLY_ARRAY && i < list->elements; i++) {
        const redisReply *e = list->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const redisReply *id = e->element[0], *fields = e->element[1];
        if (last && id->len < lastlen) {
            memcpy(last, id->str, id->len);
            last[id->len] = 0;
        }
        if (fl_hmap_get(&rp->held, id->str, id->len))
            continue; /* ours already: in flight, ready, or being acked */
        if (fields->type != REDIS_REPLY_ARRAY) {
            /* deleted but still pending (acked by XDEL before XACK elsewhere): let it go */
            const char *argv[] = {"XACK", rp->stream, rp->group, id->str};
            jr_cmd(rp, ignore_reply, NULL, 4, argv, NULL);
            continue;
        }
        job_t *j = entry_job(rp, id, fields);
        if (!j) {
            fl_warn("jobs: pipeline %s: entry %.*s is unusable: left pending", rp->p->name,
                    (int)id->len, id->str);
            continue;
        }
        j->node.key = j->ref;
        j->node.klen = strlen(j->ref);
        if (fl_hmap_put(&rp->held, &j->node) < 0) {
            j->node.key = NULL;
            fl_jobs_job_free(j);
            continue;
        }
        added++;
        if (rp->closing) {
            j->rop = 'q'; /* read while closing: straight back to the stream */
            job_op(rp, j);
        } else {
            fl_jobs_ready_put(rp->p, j);
        }
    }
    return added;
}

/* ---- acks, retries, dead letters ---- */

static void redo(rpipe_t *rp, job_t *j)
{
    j->next = rp->redo;
    rp->redo = j;
}

static void op_failed(rpipe_t *rp, job_t *j, const char *err)
{
    if (err == FL_REDIS_ECLOSED || R.shutting) {
        job_done(rp, j); /* the master exits: the entry stays pending for the next start */
    } else if (err == FL_REDIS_ELOST || err == FL_REDIS_EDOWN || err == FL_REDIS_ETIMEOUT) {
        redo(rp, j); /* sent again when the connection is back */
    } else {
        fl_error("jobs: pipeline %s: job %s (entry %s): %s; it stays pending in Redis", rp->p->name,
                 j->id, j->ref, err);
        job_done(rp, j);
    }
}

static void acks_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(reply);
    job_t *list = arg;
    while (list) {
        job_t *j = list;
        list = j->next;
        if (err)
            op_failed(rp, j, err);
        else
            job_done(rp, j);
    }
}

static void acks_flush(rpipe_t *rp)
{
    fl_timer_del(fl_jobs_loop(), rp->flush_t);
    rp->flush_t = 0;
    while (rp->acks) {
        const char *argv[5 + R_ACK_BATCH];
        size_t n = 0;
        argv[n++] = "EVAL";
        argv[n++] = lua_ack;
        argv[n++] = "1";
        argv[n++] = rp->stream;
        argv[n++] = rp->group;
        job_t *batch = rp->acks, *last = NULL;
        for (job_t *j = batch; j && n < FL_ARRAY_SIZE(argv); j = j->next) {
            argv[n++] = j->ref;
            last = j;
        }
        rp->acks = last->next;
        last->next = NULL;
        jr_cmd(rp, acks_done, batch, (int)n, argv, NULL);
    }
    rp->acks_tail = &rp->acks;
    rp->nacks = 0;
}

static void acks_flush_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    rpipe_t *rp = data;
    rp->flush_t = 0;
    acks_flush(rp);
}

static void move_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(reply);
    if (err)
        op_failed(rp, arg, err);
    else
        job_done(rp, arg);
}

static void put_netstring(fl_buf_t *b, const char *s, size_t n)
{
    fl_buf_printf(b, "%zu:", n);
    fl_buf_append(b, s, n);
    fl_buf_append(b, ",", 1);
}

/* The job's fields (docs/jobs-redis.md) into argv/lens from index *n; strings live in tmp. */
static void job_fields(const job_t *j, const char **argv, size_t *lens, size_t *n, char *hbuf,
                       char *att, size_t attlen)
{
    snprintf(att, attlen, "%u", j->attempts);
    const char *vals[] = {j->id, j->name, hbuf, (const char *)j->payload, att};
    size_t vlens[] = {strlen(j->id), strlen(j->name), strlen(hbuf), j->plen, strlen(att)};
    static const char *const keys[] = {"id", "job", "headers", "payload", "attempts"};
    for (size_t i = 0; i < 5; i++) {
        argv[*n] = keys[i];
        lens[(*n)++] = strlen(keys[i]);
        argv[*n] = vals[i];
        lens[(*n)++] = vlens[i];
    }
}

static char *headers_json(const job_t *j)
{
    return j->headers ? cJSON_PrintUnformatted(j->headers) : strdup("{}");
}

/* The member of a delayed job: the fields as netstrings (docs/jobs-redis.md). */
static int delayed_member(const job_t *j, fl_buf_t *b)
{
    const char *argv[10];
    size_t lens[10], n = 0;
    char att[16];
    char *h = headers_json(j);
    if (!h)
        return -1;
    job_fields(j, argv, lens, &n, h, att, sizeof(att));
    for (size_t i = 0; i < n; i++)
        put_netstring(b, argv[i], lens[i]);
    free(h);
    return b->data ? 0 : -1;
}

/* Sends the command j->rop stands for: 'a' ack (batched), 'r' back to the stream counting an
 * attempt, 'q' back to the stream (no attempt), 'd' into the delayed set, 'x' dead letter. */
static void job_op(rpipe_t *rp, job_t *j)
{
    if (j->rop == 'a') {
        j->next = NULL;
        *rp->acks_tail = j;
        rp->acks_tail = &j->next;
        if (++rp->nacks >= R_ACK_BATCH || rp->closing)
            acks_flush(rp);
        else if (!rp->flush_t)
            rp->flush_t = fl_timer_add(fl_jobs_loop(), R_ACK_DELAY_MS, acks_flush_cb, rp);
        return;
    }
    const char *argv[24];
    size_t lens[24], n = 0;
    char due[24], att[16], now[24];
    char *h = headers_json(j);
    fl_buf_t member = {0};
    const char *mode = j->rop == 'd' ? "d" : j->rop == 'x' ? "x" : "q";
    snprintf(due, sizeof(due), "%lld", (long long)j->rdue);
    const char *head[] = {"EVAL",   lua_move,  "3",    rp->stream, rp->delayed,
                          rp->dead, rp->group, j->ref, mode,       due};
    for (; n < FL_ARRAY_SIZE(head); n++) {
        argv[n] = head[n];
        lens[n] = strlen(head[n]);
    }
    if (!h || (j->rop == 'd' && delayed_member(j, &member) < 0)) {
        free(h);
        fl_buf_free(&member);
        op_failed(rp, j, FL_REDIS_EDOWN); /* out of memory: try again later */
        return;
    }
    if (j->rop == 'd') {
        argv[n] = member.data;
        lens[n++] = member.len;
    } else {
        job_fields(j, argv, lens, &n, h, att, sizeof(att));
        if (j->rop == 'x') {
            snprintf(now, sizeof(now), "%lld", (long long)unix_ms());
            const char *extra[] = {"reason", j->note ? j->note : "", "failed_at", now};
            for (size_t i = 0; i < 4; i++) {
                argv[n] = extra[i];
                lens[n++] = strlen(extra[i]);
            }
        }
    }
    jr_cmd(rp, move_done, j, (int)n, argv, lens);
    free(h);
    fl_buf_free(&member);
}

static void redo_flush(rpipe_t *rp)
{
    job_t *list = rp->redo;
    rp->redo = NULL;
    while (list) {
        job_t *j = list;
        list = j->next;
        job_op(rp, j);
    }
}

/* ---- reading ---- */

static void fetch_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(arg);
    rp->fetching = false;
    if (err) {
        if (is_err(err, "NOGROUP")) { /* the stream or group was deleted: create them again */
            fl_warn("jobs: pipeline %s: %s: creating the group again", rp->p->name, err);
            rp->inited = false;
            pipe_start(rp);
        } else if (err != FL_REDIS_ECLOSED && err != FL_REDIS_ELOST && err != FL_REDIS_EDOWN) {
            note_error(rp, "read", err);
            rp->drained = true; /* the blocking reader tries again, paced by its 1 s retry */
            reader_kick(rp->rd);
        }
        rp->need_scan = err == FL_REDIS_ELOST || err == FL_REDIS_ETIMEOUT;
        return;
    }
    size_t added = 0;
    /* [[stream, [[id, fields], ...]]] or nil */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements && reply->element[0]->elements == 2)
        added = add_entries(rp, reply->element[0]->element[1], NULL, 0);
    if (!added) {
        rp->drained = true; /* the blocking reader waits for it now */
        reader_kick(rp->rd);
    }
    fl_jobs_dispatch(); /* also fetches again (kick) while the stream has entries */
}

/* A non-blocking read when what the pipeline holds fell to half its prefetch. */
static void fetch(rpipe_t *rp)
{
    fl_jpipe_t *p = rp->p;
    if (rp->closing || rp->fetching || rp->drained || !rp->inited || !rp->scanned || !cmd_up(rp) ||
        !fl_jobs_wants(p))
        return;
    size_t have = p->nready + p->nreserved, prefetch = p->conf.prefetch;
    if (have >= prefetch || (have && have > prefetch / 2))
        return;
    char count[24];
    snprintf(count, sizeof(count), "%zu", prefetch - have);
    const char *argv[] = {"XREADGROUP", "GROUP",   rp->group,  rp->consumer, "COUNT",
                          count,        "STREAMS", rp->stream, ">"};
    rp->fetching = true;
    jr_cmd(rp, fetch_done, NULL, 9, argv, NULL);
}

static void scan_step(rpipe_t *rp);

/* This consumer's pending entries from id 0: what it read before a reconnect or a restart and
 * nobody here holds goes out again. */
static void scan_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(arg);
    if (err) {
        rp->scanning = false;
        if (is_err(err, "NOGROUP")) {
            rp->inited = false;
            pipe_start(rp);
        } else if (err != FL_REDIS_ECLOSED && err != FL_REDIS_ELOST && err != FL_REDIS_EDOWN) {
            fl_warn("jobs: pipeline %s: re-reading pending entries: %s", rp->p->name, err);
        }
        return;
    }
    size_t seen = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements && reply->element[0]->elements == 2) {
        const redisReply *list = reply->element[0]->element[1];
        seen = list->type == REDIS_REPLY_ARRAY ? list->elements : 0;
        size_t added = add_entries(rp, list, rp->cursor, sizeof(rp->cursor));
        if (added)
            fl_info("jobs: pipeline %s: %zu pending job(s) of consumer %s taken up again",
                    rp->p->name, added, rp->consumer);
    }
    if (seen && !rp->closing) {
        scan_step(rp);
        return;
    }
    rp->scanning = false;
    rp->scanned = true;
    fl_jobs_dispatch();
    reader_kick(rp->rd);
}

static void scan_step(rpipe_t *rp)
{
    char count[16];
    snprintf(count, sizeof(count), "%d", R_SCAN_COUNT);
    const char *argv[] = {"XREADGROUP", "GROUP",   rp->group,  rp->consumer, "COUNT",
                          count,        "STREAMS", rp->stream, rp->cursor};
    jr_cmd(rp, scan_done, NULL, 9, argv, NULL);
}

static void scan_start(rpipe_t *rp)
{
    if (rp->scanning || rp->closing || !rp->inited || !cmd_up(rp) || fl_jobs_name_busy(rp->p))
        return; /* a closing pipeline of the same name still holds entries: wait for it */
    rp->scanning = true;
    rp->need_scan = false;
    snprintf(rp->cursor, sizeof(rp->cursor), "0");
    scan_step(rp);
}

static void init_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(reply);
    FL_UNUSED(arg);
    rp->initing = false;
    if (err && !is_err(err, "BUSYGROUP")) {
        if (err != FL_REDIS_ECLOSED && err != FL_REDIS_ELOST && err != FL_REDIS_EDOWN)
            note_error(rp, "XGROUP CREATE", err);
        return; /* tried again by the tick */
    }
    rp->cached.error[0] = 0;
    rp->inited = true;
    rp->drained = false;
    redo_flush(rp);
    scan_start(rp);
}

/* The command connection is up (or the stream's group went missing): create the group (from the
 * start of the stream: entries pushed before any consumer existed are jobs too), then re-read
 * this consumer's pending entries, then read new ones. */
static void pipe_start(rpipe_t *rp)
{
    if (rp->initing || rp->inited || !cmd_up(rp))
        return;
    rp->initing = true;
    rp->scanned = false;
    const char *argv[] = {"XGROUP", "CREATE", rp->stream, rp->group, "0", "MKSTREAM"};
    jr_cmd(rp, init_done, NULL, 6, argv, NULL);
}

/* ---- the blocking reader ---- */

static bool reader_wants(const rpipe_t *rp)
{
    return !rp->closing && rp->inited && rp->scanned && rp->drained && fl_jobs_wants(rp->p);
}

static void unblock_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(rp);
    FL_UNUSED(reply);
    FL_UNUSED(err);
    FL_UNUSED(arg);
}

static void reader_cb(fl_redis_t *r, redisReply *reply, const char *err, void *data);

static void reader_retry_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    rreader_t *rd = data;
    rd->retry = 0;
    reader_kick(rd);
}

/* Issues the blocking read over every drained pipeline of this reader, or, when one is
 * outstanding and a pipeline joins or leaves, ends it (CLIENT UNBLOCK) so it is issued again. */
static void reader_kick(rreader_t *rd)
{
    if (!rd || !rd->r || !fl_redis_up(rd->r) || rd->retry || R.shutting)
        return;
    rpipe_t *any = NULL;
    if (rd->reading) {
        bool change = false;
        for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext)
            if (rp->rd == rd && rp->in_read != reader_wants(rp))
                change = true; /* joins, or leaves (paused, closing): read again */
        for (rpipe_t *rp = rd->b->pipes; rp && !any; rp = rp->bnext)
            any = cmd_up(rp) && !rp->gone ? rp : NULL;
        if (change && !rd->unblocking && rd->client_id && any) {
            char id[24];
            snprintf(id, sizeof(id), "%lld", rd->client_id);
            const char *argv[] = {"CLIENT", "UNBLOCK", id};
            rd->unblocking = true;
            jr_cmd(any, unblock_done, NULL, 3, argv, NULL);
        }
        return;
    }
    size_t k = 0, n = 0;
    uint64_t count = 1;
    for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext) {
        if (rp->rd != rd || !reader_wants(rp))
            continue;
        k++;
        size_t have = rp->p->nready + rp->p->nreserved;
        if (rp->p->conf.prefetch > have && rp->p->conf.prefetch - have > count)
            count = rp->p->conf.prefetch - have;
    }
    const char **argv = k ? malloc((9 + 2 * k) * sizeof(*argv)) : NULL;
    if (!argv)
        return;
    char cbuf[24], bbuf[24];
    snprintf(cbuf, sizeof(cbuf), "%llu", (unsigned long long)count);
    snprintf(bbuf, sizeof(bbuf), "%d", R_BLOCK_MS);
    const char *head[] = {"XREADGROUP", "GROUP", rd->group, rd->consumer, "COUNT",
                          cbuf,         "BLOCK", bbuf,      "STREAMS"};
    for (; n < 9; n++)
        argv[n] = head[n];
    for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext)
        if (rp->rd == rd && reader_wants(rp)) {
            argv[n++] = rp->stream;
            rp->in_read = true;
        }
    for (size_t i = 0; i < k; i++)
        argv[n++] = ">";
    rd->reading = true;
    rd->read_since = fl_now_ms();
    if (fl_redis_cmd_blocking(rd->r, reader_cb, rd, (int)n, argv, NULL) < 0) {
        rd->reading = false;
        for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext)
            if (rp->rd == rd)
                rp->in_read = false;
    }
    free(argv);
}

static void reader_cb(fl_redis_t *r, redisReply *reply, const char *err, void *data)
{
    FL_UNUSED(r);
    rreader_t *rd = data;
    rd->reading = false;
    rd->unblocking = false;
    for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext)
        if (rp->rd == rd) {
            if (err == FL_REDIS_ELOST || err == FL_REDIS_ETIMEOUT)
                rp->need_scan = rp->in_read; /* it may have taken entries nobody saw */
            rp->in_read = false;
        }
    if (err == FL_REDIS_ECLOSED || R.shutting)
        return;
    if (!err && reply->type == REDIS_REPLY_ERROR)
        err = reply->str;
    if (err) {
        if (err != FL_REDIS_ELOST && err != FL_REDIS_EDOWN && err != FL_REDIS_ETIMEOUT)
            fl_warn("jobs: redis blocking read: %s", err);
        for (rpipe_t *rp = rd->b->pipes; is_err(err, "NOGROUP") && rp; rp = rp->bnext)
            if (rp->rd == rd)
                rp->drained = false; /* the non-blocking read finds out which one */
        rd->retry = fl_timer_add(fl_jobs_loop(), 1000, reader_retry_cb, rd);
        fl_jobs_dispatch();
        return;
    }
    /* [[stream, [[id, fields], ...]], ...] or nil (timed out, or CLIENT UNBLOCK) */
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        const redisReply *s = reply->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING)
            continue;
        rpipe_t *rp = rd->b->pipes;
        while (rp && (rp->rd != rd || rp->gone || strcmp(rp->stream, s->element[0]->str)))
            rp = rp->bnext;
        if (!rp)
            continue; /* destroyed meanwhile: its entries stay pending (XAUTOCLAIM) */
        if (add_entries(rp, s->element[1], NULL, 0))
            rp->drained = false;
    }
    fl_jobs_dispatch();
    reader_kick(rd);
}

static void client_id_cb(fl_redis_t *r, redisReply *reply, const char *err, void *data)
{
    FL_UNUSED(r);
    rreader_t *rd = data;
    if (!err && reply->type == REDIS_REPLY_INTEGER)
        rd->client_id = reply->integer;
}

static void reader_state(fl_redis_t *r, bool up, void *data)
{
    rreader_t *rd = data;
    rd->client_id = 0;
    if (!up)
        return;
    fl_redis_cmdf(r, client_id_cb, rd, "CLIENT ID");
    for (rpipe_t *rp = rd->b->pipes; rp; rp = rp->bnext)
        if (rp->rd == rd && rp->need_scan && rp->inited && rp->scanned) {
            rp->scanned = false; /* re-read what the lost blocking read may have taken */
            scan_start(rp);
        }
    reader_kick(rd);
}

/* ---- the command connection ---- */

static void broker_state(fl_redis_t *r, bool up, void *data)
{
    FL_UNUSED(r);
    rbroker_t *b = data;
    for (rpipe_t *rp = b->pipes, *next; rp; rp = next) {
        next = rp->bnext;
        if (up) {
            pipe_start(rp);
            continue;
        }
        rp->inited = rp->initing = rp->scanned = rp->scanning = rp->fetching = false;
        rp->drained = false;
        snprintf(rp->cached.error, sizeof(rp->cached.error), "%.190s", fl_redis_last_error(b->cmd));
        if (rp->closing) { /* nobody waits for these: the entries stay pending in Redis */
            while (rp->redo) {
                job_t *j = rp->redo;
                rp->redo = j->next;
                job_done(rp, j);
            }
            maybe_gone(rp);
        }
    }
}

static char *broker_key(const struct fl_conf_jredis *c)
{
    fl_buf_t b = {0};
    fl_buf_printf(&b, "%s|%s|%s|%d|%d|%s|%s|%s", c->addr, c->username ? c->username : "",
                  c->password ? c->password : "", c->db, c->tls,
                  c->tls_root_ca ? c->tls_root_ca : "", c->tls_cert ? c->tls_cert : "",
                  c->tls_key ? c->tls_key : "");
    return b.data;
}

static fl_redis_opts_t redis_opts(const struct fl_conf_jredis *c, const char *name)
{
    return (fl_redis_opts_t){.addr = c->addr,
                             .username = c->username,
                             .password = c->password,
                             .db = c->db,
                             .read_timeout_ms = R_READ_TIMEOUT,
                             .reconnect_min_ms = 100,
                             .reconnect_max_ms = 2000,
                             .tls = c->tls,
                             .tls_root_ca = c->tls_root_ca,
                             .tls_cert = c->tls_cert,
                             .tls_key = c->tls_key,
                             .name = name};
}

static rbroker_t *broker_get(const struct fl_conf_jredis *c, char *errbuf, size_t errlen)
{
    char *key = broker_key(c);
    if (!key) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    for (rbroker_t *b = R.brokers; b; b = b->next)
        if (strcmp(b->key, key) == 0) {
            free(key);
            b->refs++;
            return b;
        }
    rbroker_t *b = calloc(1, sizeof(*b));
    if (!b) {
        free(key);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    b->key = key;
    b->refs = 1;
    fl_redis_opts_t o = redis_opts(c, "forkline-jobs");
    b->cmd = fl_redis_new(fl_jobs_loop(), &o, broker_state, b, errbuf, errlen);
    if (!b->cmd) {
        free(key);
        free(b);
        return NULL;
    }
    b->next = R.brokers;
    R.brokers = b;
    return b;
}

static void broker_put(rbroker_t *b)
{
    if (--b->refs)
        return;
    for (rbroker_t **pp = &R.brokers; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    fl_redis_free(b->cmd);
    free(b->key);
    free(b);
}

static rreader_t *reader_get(rbroker_t *b, const struct fl_conf_jredis *c, char *errbuf,
                             size_t errlen)
{
    for (rreader_t *rd = b->readers; rd; rd = rd->next)
        if (!strcmp(rd->group, c->group) && !strcmp(rd->consumer, c->consumer)) {
            rd->refs++;
            return rd;
        }
    rreader_t *rd = calloc(1, sizeof(*rd));
    if (!rd || !(rd->group = strdup(c->group)) || !(rd->consumer = strdup(c->consumer))) {
        if (rd)
            free(rd->group);
        free(rd);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    rd->b = b;
    rd->refs = 1;
    fl_redis_opts_t o = redis_opts(c, "forkline-jobs-reader");
    rd->r = fl_redis_new(fl_jobs_loop(), &o, reader_state, rd, errbuf, errlen);
    if (!rd->r) {
        free(rd->group);
        free(rd->consumer);
        free(rd);
        return NULL;
    }
    rd->next = b->readers;
    b->readers = rd;
    return rd;
}

static void reader_put(rreader_t *rd)
{
    if (--rd->refs)
        return;
    for (rreader_t **pp = &rd->b->readers; *pp; pp = &(*pp)->next)
        if (*pp == rd) {
            *pp = rd->next;
            break;
        }
    fl_timer_del(fl_jobs_loop(), rd->retry);
    fl_redis_free(rd->r); /* an outstanding blocking read gets ECLOSED */
    free(rd->group);
    free(rd->consumer);
    free(rd);
}

/* ---- housekeeping: delayed jobs, heartbeat, XAUTOCLAIM, counts ---- */

static void promote_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    fl_jstat_t *out = arg;
    if (err) {
        if (out) {
            *out = rp->cached;
            snprintf(out->error, sizeof(out->error), "%s", err);
        }
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5)
        return;
    redisReply **e = reply->element;
    rp->next_due_ms = e[1]->type == REDIS_REPLY_STRING && e[1]->len ? atoll(e[1]->str) : 0;
    long long xlen = e[2]->integer, pend = e[4]->integer;
    rp->cached.active = xlen > pend ? xlen - pend : 0;
    rp->cached.delayed = e[3]->integer;
    rp->cached.reserved = pend;
    rp->cached.error[0] = 0;
    if (out)
        *out = rp->cached;
    if (e[0]->integer)
        rp->drained = false; /* the moved jobs wake the blocking read anyway */
    if (rp->next_due_ms && !rp->closing)
        arm_tick(rp, rp->next_due_ms - unix_ms());
}

static void promote(rpipe_t *rp, fl_jstat_t *out)
{
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)unix_ms());
    const char *argv[] = {"EVAL",   lua_promote, "3",    rp->stream, rp->delayed,
                          rp->dead, now,         "1000", rp->group};
    jr_cmd(rp, promote_done, out, 9, argv, NULL);
}

static void claim_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(arg);
    if (err) {
        if (is_err(err, "NOGROUP"))
            rp->inited = false;
        return;
    }
    /* [next cursor, [[id, fields], ...], (7.0+) [deleted ids]] */
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    snprintf(rp->claim_cursor, sizeof(rp->claim_cursor), "%s", reply->element[0]->str);
    size_t added = add_entries(rp, reply->element[1], NULL, 0);
    if (added)
        fl_warn("jobs: pipeline %s: %zu job(s) idle longer than visibility_timeout (their "
                "consumer died) taken over by %s",
                rp->p->name, added, rp->consumer);
    fl_jobs_dispatch();
}

static void heartbeat(rpipe_t *rp)
{
    const char *argv[8 + 200];
    size_t n = 0;
    size_t i;
    fl_hnode_t *h = fl_hmap_first(&rp->held, &i);
    while (h) {
        n = 0;
        argv[n++] = "XCLAIM";
        argv[n++] = rp->stream;
        argv[n++] = rp->group;
        argv[n++] = rp->consumer;
        argv[n++] = "0";
        for (; h && n < FL_ARRAY_SIZE(argv) - 1; h = fl_hmap_next(&rp->held, h, &i))
            argv[n++] = h->key;
        argv[n++] = "JUSTID";
        jr_cmd(rp, ignore_reply, NULL, (int)n, argv, NULL);
    }
}

static void tick_cb(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    rpipe_t *rp = data;
    rp->tick_t = 0;
    int64_t now = fl_now_ms(), vis = rp->p->conf.redis.visibility_timeout_ms;
    if (!cmd_up(rp)) {
        arm_tick(rp, R_TICK_MS);
        return;
    }
    if (!rp->inited) {
        pipe_start(rp);
    } else {
        promote(rp, NULL);
        if (now - rp->last_beat_ms >= vis / 3 && rp->held.n) {
            rp->last_beat_ms = now;
            heartbeat(rp);
        }
        size_t have = rp->p->nready + rp->p->nreserved;
        if (now - rp->last_claim_ms >= vis / 2 && rp->scanned && fl_jobs_wants(rp->p) &&
            have < rp->p->conf.prefetch) {
            rp->last_claim_ms = now;
            char ms[24], count[24];
            snprintf(ms, sizeof(ms), "%lld", (long long)vis);
            size_t c = rp->p->conf.prefetch - have;
            snprintf(count, sizeof(count), "%zu", c < R_CLAIM_COUNT ? c : R_CLAIM_COUNT);
            const char *argv[] = {"XAUTOCLAIM", rp->stream,       rp->group, rp->consumer,
                                  ms,           rp->claim_cursor, "COUNT",   count};
            jr_cmd(rp, claim_done, NULL, 8, argv, NULL);
        }
    }
    /* the reader's connection may be half-dead (no RST): a read that never returns */
    rreader_t *rd = rp->rd;
    if (rd->reading && now - rd->read_since > R_BLOCK_MS + R_READ_TIMEOUT) {
        fl_warn("jobs: redis blocking read got no answer for %lld ms: reconnecting it",
                (long long)(now - rd->read_since));
        char eb[200];
        fl_redis_t *old = rd->r;
        rpipe_t *any = rp;
        fl_redis_opts_t o = redis_opts(&any->p->conf.redis, "forkline-jobs-reader");
        rd->r = fl_redis_new(fl_jobs_loop(), &o, reader_state, rd, eb, sizeof(eb));
        if (rd->r)
            fl_redis_free(old); /* its read gets ECLOSED */
        else
            rd->r = old;
        rd->reading = false;
        for (rpipe_t *q = rd->b->pipes; q; q = q->bnext)
            if (q->rd == rd && q->in_read)
                q->in_read = false, q->need_scan = true;
    }
    arm_tick(rp, R_TICK_MS);
}

static void arm_tick(rpipe_t *rp, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    int64_t due = fl_now_ms() + ms;
    if (rp->tick_t && rp->tick_due <= due)
        return;
    fl_timer_del(fl_jobs_loop(), rp->tick_t);
    rp->tick_t = fl_timer_add(fl_jobs_loop(), ms, tick_cb, rp);
    rp->tick_due = due;
}

/* ---- the driver ---- */

static char *default_consumer(void)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
        snprintf(host, sizeof(host), "forkline");
    return strdup(host);
}

/* Fills the defaults into c (docs/jobs-redis.md). 0, or -1 when out of memory. */
static int fill_defaults(struct fl_conf_pipeline *c)
{
    struct fl_conf_jredis *r = &c->redis;
    char buf[600];
    if (!r->addr && !(r->addr = strdup("127.0.0.1:6379")))
        return -1;
    if (!r->stream) {
        snprintf(buf, sizeof(buf), "forkline:jobs:%s", c->name);
        if (!(r->stream = strdup(buf)))
            return -1;
    }
    if (!r->group && !(r->group = strdup("forkline")))
        return -1;
    if (!r->consumer && !(r->consumer = default_consumer()))
        return -1;
    if (!r->delayed) {
        snprintf(buf, sizeof(buf), "%s:delayed", r->stream);
        if (!(r->delayed = strdup(buf)))
            return -1;
    }
    if (!r->dead_letter) {
        snprintf(buf, sizeof(buf), "%s:dead", r->stream);
        if (!(r->dead_letter = strdup(buf)))
            return -1;
    }
    return 0;
}

static int rd_open(fl_jpipe_t *p, char *errbuf, size_t errlen)
{
    struct fl_conf_pipeline *c = &p->conf;
    if (fill_defaults(c) < 0) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    if (!c->prefetch)
        c->prefetch = 100;
    if (!c->max_attempts)
        c->max_attempts = 3;
    if (c->redis.visibility_timeout_ms <= 0)
        c->redis.visibility_timeout_ms = 60000;
    if (c->redis.visibility_timeout_ms < 1000)
        c->redis.visibility_timeout_ms = 1000;
    rpipe_t *rp = calloc(1, sizeof(*rp));
    if (!rp) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    rp->p = p;
    rp->acks_tail = &rp->acks;
    snprintf(rp->claim_cursor, sizeof(rp->claim_cursor), "0-0");
    char *strs[] = {c->redis.stream, c->redis.group, c->redis.consumer, c->redis.delayed,
                    c->redis.dead_letter};
    char **dst[] = {&rp->stream, &rp->group, &rp->consumer, &rp->delayed, &rp->dead};
    bool oom = false;
    for (size_t i = 0; i < 5; i++)
        oom |= !(*dst[i] = strdup(strs[i]));
    if (oom || !(rp->b = broker_get(&c->redis, errbuf, errlen)) ||
        !(rp->rd = reader_get(rp->b, &c->redis, errbuf, errlen))) {
        if (oom)
            snprintf(errbuf, errlen, "out of memory");
        if (rp->b)
            broker_put(rp->b);
        for (size_t i = 0; i < 5; i++)
            free(*dst[i]);
        free(rp);
        return -1;
    }
    p->ds = rp;
    p->queue = rp->stream;
    rp->bnext = rp->b->pipes;
    rp->b->pipes = rp;
    rp->last_beat_ms = rp->last_claim_ms = fl_now_ms();
    pipe_start(rp); /* at once if this server's connection is up already, else when it is */
    arm_tick(rp, R_TICK_MS);
    return 0;
}

static void finalize(rpipe_t *rp)
{
    rp->gone = true;
    for (rpipe_t **pp = &rp->b->pipes; *pp; pp = &(*pp)->bnext)
        if (*pp == rp) {
            *pp = rp->bnext;
            break;
        }
    fl_timer_del(fl_jobs_loop(), rp->tick_t);
    fl_timer_del(fl_jobs_loop(), rp->flush_t);
    reader_put(rp->rd);
    broker_put(rp->b);
    fl_hmap_free(&rp->held);
    char *strs[] = {rp->stream, rp->group, rp->consumer, rp->delayed, rp->dead};
    for (size_t i = 0; i < 5; i++)
        free(strs[i]);
    fl_jpipe_t *p = rp->p;
    p->ds = NULL;
    free(rp);
    fl_jobs_pipe_gone(p);
}

static void maybe_gone(rpipe_t *rp)
{
    if (rp->closing && !rp->gone && !R.shutting && rp->busy == 0 && rp->held.n == 0 && !rp->acks &&
        !rp->redo)
        finalize(rp);
}

static void rd_push_done(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    FL_UNUSED(rp);
    void **op = arg; /* {done, ctx} */
    fl_jdone_cb done = (fl_jdone_cb)(uintptr_t)op[0];
    for (size_t i = 0; !err && reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements;
         i++)
        if (reply->element[i]->type == REDIS_REPLY_ERROR)
            err = reply->element[i]->str;
    if (!err && reply && reply->type == REDIS_REPLY_NIL)
        err = "redis: the push transaction was aborted";
    char why[300];
    if (err)
        snprintf(why, sizeof(why), "pipeline %s: %s", rp->p->name, err);
    done(op[1], err ? why : NULL);
    free(op);
}

/* One transaction per push: every job of the batch is stored, or none (XADD, or ZADD into the
 * delayed set for a delayed job). */
static void rd_push(fl_jpipe_t *p, fl_job_t *list, fl_jdone_cb done, void *ctx)
{
    rpipe_t *rp = p->ds;
    void **op = malloc(2 * sizeof(void *));
    if (!op) {
        while (list) {
            job_t *j = list;
            list = j->next;
            fl_jobs_job_free(j);
        }
        done(ctx, "out of memory");
        return;
    }
    op[0] = (void *)(uintptr_t)done;
    op[1] = ctx;
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    jr_cmd(rp, NULL, NULL, 1, multi, NULL);
    int64_t now = unix_ms();
    while (list) {
        job_t *j = list;
        list = j->next;
        const char *argv[16];
        size_t lens[16], n = 0;
        char att[16], due[24];
        char *h = headers_json(j);
        fl_buf_t member = {0};
        if (j->delay_s > 0 && h && delayed_member(j, &member) == 0) {
            int64_t at = now + j->delay_s * 1000;
            snprintf(due, sizeof(due), "%lld", (long long)at);
            const char *z[] = {"ZADD", rp->delayed, due};
            for (; n < 3; n++) {
                argv[n] = z[n];
                lens[n] = strlen(z[n]);
            }
            argv[n] = member.data;
            lens[n++] = member.len;
            if (!rp->next_due_ms || at < rp->next_due_ms) {
                rp->next_due_ms = at;
                arm_tick(rp, at - now);
            }
        } else if (h) {
            const char *x[] = {"XADD", rp->stream, "*"};
            for (; n < 3; n++) {
                argv[n] = x[n];
                lens[n] = strlen(x[n]);
            }
            job_fields(j, argv, lens, &n, h, att, sizeof(att));
        }
        if (n)
            jr_cmd(rp, NULL, NULL, (int)n, argv, lens);
        else
            fl_warn("jobs: out of memory pushing job %s: the transaction is aborted", j->id);
        if (!n) /* an empty command makes EXEC fail: nothing of the batch is stored */
            jr_cmd(rp, NULL, NULL, 1, (const char *[]){"XADD"}, NULL);
        free(h);
        fl_buf_free(&member);
        fl_jobs_job_free(j);
    }
    jr_cmd(rp, rd_push_done, op, 1, exec, NULL);
}

static void rd_ack(fl_jpipe_t *p, fl_job_t *j)
{
    j->rop = 'a';
    job_op(p->ds, j);
}

static void rd_drop(fl_jpipe_t *p, fl_job_t *j, const char *why)
{
    rpipe_t *rp = p->ds;
    free(j->note);
    j->note = strdup(why);
    j->rop = 'x';
    fl_warn("jobs: job %s of pipeline %s failed (%s): moved to %s", j->id, p->name, why, rp->dead);
    job_op(rp, j);
}

static void rd_retry(fl_jpipe_t *p, fl_job_t *j, int64_t delay_s, const char *why)
{
    rpipe_t *rp = p->ds;
    j->attempts++;
    if (j->attempts >= p->conf.max_attempts) {
        char note[400];
        snprintf(note, sizeof(note), "max_attempts (%u) reached: %s", p->conf.max_attempts, why);
        rd_drop(p, j, note);
        return;
    }
    j->rop = delay_s > 0 ? 'd' : 'r';
    j->rdue = unix_ms() + delay_s * 1000;
    if (delay_s > 0 && (!rp->next_due_ms || j->rdue < rp->next_due_ms)) {
        rp->next_due_ms = j->rdue;
        arm_tick(rp, delay_s * 1000);
    }
    job_op(rp, j);
}

static void rd_back(fl_jpipe_t *p, fl_job_t *j)
{
    rpipe_t *rp = p->ds;
    if (!rp->closing) {
        fl_jobs_ready_put(p, j);
        return;
    }
    j->rop = 'q'; /* never ran: back to the stream for whoever consumes it next */
    job_op(rp, j);
}

static void rd_kick(fl_jpipe_t *p)
{
    rpipe_t *rp = p->ds;
    if (!rp || rp->closing)
        return;
    if (!rp->scanned && !rp->scanning && rp->inited)
        scan_start(rp); /* was waiting for a closing pipeline of the same name */
    fetch(rp);
    reader_kick(rp->rd);
}

static void stat_done_cb(rpipe_t *rp, redisReply *reply, const char *err, void *arg)
{
    void **op = arg; /* {cb, ctx, fl_jstat_t} */
    fl_jstat_t *st = op[2];
    promote_done(rp, reply, err, st);
    ((fl_jstat_cb)(uintptr_t)op[0])(op[1], st);
    free(st);
    free(op);
}

static void rd_stat(fl_jpipe_t *p, fl_jstat_cb cb, void *ctx)
{
    rpipe_t *rp = p->ds;
    void **op = malloc(3 * sizeof(void *));
    fl_jstat_t *st = calloc(1, sizeof(*st));
    if (!op || !st || !cmd_up(rp)) {
        fl_jstat_t now = rp->cached;
        if (!now.error[0])
            snprintf(now.error, sizeof(now.error), "%s",
                     !op || !st ? "out of memory" : FL_REDIS_EDOWN);
        free(op);
        free(st);
        cb(ctx, &now);
        return;
    }
    op[0] = (void *)(uintptr_t)cb;
    op[1] = ctx;
    op[2] = st;
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)unix_ms());
    const char *argv[] = {"EVAL",   lua_promote, "3",    rp->stream, rp->delayed,
                          rp->dead, now,         "1000", rp->group};
    jr_cmd(rp, stat_done_cb, op, 9, argv, NULL);
}

static void rd_stat_now(fl_jpipe_t *p, fl_jstat_t *st)
{
    rpipe_t *rp = p->ds;
    *st = rp->cached;
    if (!cmd_up(rp) && !st->error[0])
        snprintf(st->error, sizeof(st->error), "%s", FL_REDIS_EDOWN);
}

static bool eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* a is the running pipeline's conf (defaults filled), b a new one (not yet). */
static bool rd_same(const struct fl_conf_pipeline *a, const struct fl_conf_pipeline *b)
{
    struct fl_conf_pipeline n = *b;
    memset(&n.redis, 0, sizeof(n.redis));
    const struct fl_conf_jredis *x = &a->redis, *y = &b->redis;
    n.name = b->name;
    n.redis.addr = y->addr;
    n.redis.stream = y->stream;
    n.redis.group = y->group;
    n.redis.consumer = y->consumer;
    n.redis.delayed = y->delayed;
    n.redis.dead_letter = y->dead_letter;
    /* fill_defaults on a shallow copy: only the NULL fields get (owned) defaults */
    bool owned[6] = {!y->addr, !y->stream, !y->group, !y->consumer, !y->delayed, !y->dead_letter};
    bool same = fill_defaults(&n) == 0 && eq(x->addr, n.redis.addr) &&
                eq(x->username, y->username) && eq(x->password, y->password) && x->db == y->db &&
                x->tls == y->tls && eq(x->tls_root_ca, y->tls_root_ca) &&
                eq(x->tls_cert, y->tls_cert) && eq(x->tls_key, y->tls_key) &&
                eq(x->stream, n.redis.stream) && eq(x->group, n.redis.group) &&
                eq(x->consumer, n.redis.consumer) && eq(x->delayed, n.redis.delayed) &&
                eq(x->dead_letter, n.redis.dead_letter);
    char *f[] = {n.redis.addr,     n.redis.stream,  n.redis.group,
                 n.redis.consumer, n.redis.delayed, n.redis.dead_letter};
    for (size_t i = 0; i < 6; i++)
        if (owned[i])
            free(f[i]);
    return same;
}

/* The reload that keeps this pipeline may have changed its timeouts, prefetch or attempts:
 * p->conf was replaced with the new (raw) conf, whose defaults are filled here again. */
static void rd_refill(fl_jpipe_t *p)
{
    struct fl_conf_pipeline *c = &p->conf;
    fill_defaults(c);
    if (!c->max_attempts)
        c->max_attempts = 3;
    if (c->redis.visibility_timeout_ms <= 0)
        c->redis.visibility_timeout_ms = 60000;
    if (c->redis.visibility_timeout_ms < 1000)
        c->redis.visibility_timeout_ms = 1000;
}

static void rd_close(fl_jpipe_t *p)
{
    rpipe_t *rp = p->ds;
    rp->closing = true;
    fl_timer_del(fl_jobs_loop(), rp->tick_t);
    rp->tick_t = 0;
    acks_flush(rp);
    job_t *list = fl_jobs_ready_take_all(p);
    size_t n = 0;
    while (list) { /* prefetched, never handed out: back to the broker */
        job_t *j = list;
        list = j->next;
        n++;
        if (cmd_up(rp)) {
            j->rop = 'q';
            job_op(rp, j);
        } else {
            job_done(rp, j); /* stays pending in Redis: re-read or claimed later */
        }
    }
    if (n)
        fl_info("jobs: pipeline %s: %zu prefetched job(s) given back to %s", p->name, n,
                rp->stream);
    if (!cmd_up(rp))
        while (rp->redo) {
            job_t *j = rp->redo;
            rp->redo = j->next;
            job_done(rp, j);
        }
    reader_kick(rp->rd); /* stops reading for it */
    maybe_gone(rp);
}

static unsigned rd_busy(void)
{
    return R.busy;
}

static void free_held(fl_hnode_t *n, void *arg)
{
    FL_UNUSED(arg);
    job_t *j = (job_t *)((char *)n - offsetof(job_t, node));
    j->node.key = NULL;
    fl_jobs_job_free(j);
}

/* The master exits: what is still on the wire is abandoned (the entries stay pending in Redis
 * and are re-read at the next start). */
static void rd_shutdown(void)
{
    R.shutting = true;
    for (rbroker_t *b = R.brokers; b; b = b->next) {
        for (rreader_t *rd = b->readers; rd; rd = rd->next)
            fl_redis_free(rd->r);
        fl_redis_free(b->cmd);
    }
    while (R.brokers) {
        rbroker_t *b = R.brokers;
        R.brokers = b->next;
        while (b->pipes) {
            rpipe_t *rp = b->pipes;
            b->pipes = rp->bnext;
            fl_timer_del(fl_jobs_loop(), rp->tick_t);
            fl_timer_del(fl_jobs_loop(), rp->flush_t);
            fl_hmap_clear(&rp->held, free_held, NULL);
            fl_hmap_free(&rp->held);
            char *strs[] = {rp->stream, rp->group, rp->consumer, rp->delayed, rp->dead};
            for (size_t i = 0; i < 5; i++)
                free(strs[i]);
            rp->p->ds = NULL;
            free(rp);
        }
        while (b->readers) {
            rreader_t *rd = b->readers;
            b->readers = rd->next;
            fl_timer_del(fl_jobs_loop(), rd->retry);
            free(rd->group);
            free(rd->consumer);
            free(rd);
        }
        free(b->key);
        free(b);
    }
    memset(&R, 0, sizeof(R));
}

const fl_jdriver_t fl_jobs_redis = {
    .name = "redis",
    .open = rd_open,
    .push = rd_push,
    .ack = rd_ack,
    .retry = rd_retry,
    .drop = rd_drop,
    .back = rd_back,
    .kick = rd_kick,
    .stat = rd_stat,
    .stat_now = rd_stat_now,
    .same = rd_same,
    .refill = rd_refill,
    .close = rd_close,
    .busy = rd_busy,
    .shutdown = rd_shutdown,
};

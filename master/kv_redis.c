/* The kv `redis` driver (config §2.10, upstream roadrunner-server/redis kv/driver.go) over one
 * fl_redis_t connection on the master's loop.
 *
 * Each RPC call becomes one command (MGET, DEL, FLUSHDB) or one pipeline (EXISTS, SET, PEXPIRE,
 * PTTL per key) whose replies are gathered before the call completes. Any failure - the connection
 * is down, dropped or timed out, or Redis answered an error - fails the whole call with the text,
 * so PHP sees an error and never a partial or stale answer.
 *
 * Semantics follow the memory driver where upstream's drivers differ, so one test suite fits both:
 * blank keys are refused for every op but Clear; Set with a deadline in the past stores without a
 * TTL (as go-redis does with a negative duration); MExpire with a past deadline deletes; TTL
 * returns existing keys, with "" when they have no TTL (upstream's redis driver omits those). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv.h"
#include "kv_memory.h"
#include "log.h"
#include "redis.h"

typedef struct {
    fl_kv_storage_t base;
    fl_redis_t *r;
} kvr_storage_t;

static const char *const kvr_ops[] = {
    "redis_driver_has", "redis_driver_set",    "redis_driver_mget", "redis_driver_mexpire",
    "redis_driver_ttl", "redis_driver_delete", "redis_driver_clear"};

/* Upstream's nested error: "rpc_has:\n\tredis_driver_has: empty key". */
#define KVR_FAIL(call, op, fmt, ...)                                                               \
    fl_rpc_fail(call, "%s:\n\t%s: " fmt, fl_kv_rpc_ops[op], kvr_ops[op], __VA_ARGS__)

/* One call in flight: the items (slices into the call's argument, which outlives us), what came
 * back so far, and one slot per command so each reply knows its item. */
typedef struct kvr_op kvr_op_t;
typedef struct {
    kvr_op_t *op;
    size_t i;
} kvr_slot_t;

struct kvr_op {
    fl_rpc_call_t *call;
    int op;
    size_t n, left;
    const char *err; /* the first failure: a static redis.c error, or errbuf */
    char errbuf[256];
    fl_kv_item_t *items; /* n, copied: kv.c frees its array when exec returns */
    int64_t *ttl_ms;     /* TTL: PTTL per key (-2 missing, -1 none) */
    bool *has;           /* Has: EXISTS per key */
    kvr_slot_t slots[];
};

static kvr_op_t *kvr_op_new(fl_rpc_call_t *call, int op, const fl_kv_item_t *items, size_t n)
{
    size_t sz = sizeof(kvr_op_t) +
                n * (sizeof(kvr_slot_t) + sizeof(fl_kv_item_t) + sizeof(int64_t) + sizeof(bool));
    kvr_op_t *o = calloc(1, sz);
    if (!o)
        return NULL;
    o->call = call;
    o->op = op;
    o->n = o->left = n;
    o->items = (fl_kv_item_t *)(o->slots + n);
    o->ttl_ms = (int64_t *)(o->items + n);
    o->has = (bool *)(o->ttl_ms + n);
    if (n)
        memcpy(o->items, items, n * sizeof(*items));
    for (size_t i = 0; i < n; i++)
        o->slots[i] = (kvr_slot_t){o, i};
    return o;
}

static void kvr_set_err(kvr_op_t *o, redisReply *rep, const char *err)
{
    if (o->err)
        return;
    if (err) {
        o->err = err;
    } else {
        snprintf(o->errbuf, sizeof(o->errbuf), "%.*s", (int)rep->len, rep->str);
        o->err = o->errbuf;
    }
}

/* 2026-08-22T10:00:00+00:00, as PHP writes it. PHP's deadlines are whole seconds and PTTL is
 * relative, so the nearest second gives back the deadline that was set. */
static size_t kvr_rfc3339(char *buf, size_t len, int64_t wall_ms)
{
    time_t t = (time_t)((wall_ms + 500) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    return strftime(buf, len, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

/* Has, TTL: the keys that exist, with their deadline for TTL. */
static void kvr_reply_keys(kvr_op_t *o)
{
    fl_kv_item_t *out = malloc(o->n * sizeof(*out));
    char(*tbuf)[40] = malloc(o->n * sizeof(*tbuf));
    size_t m = 0;
    int64_t now = fl_wall_ms();
    if (!out || !tbuf) {
        KVR_FAIL(o->call, o->op, "%s", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < o->n; i++) {
        if (o->op == FL_KV_HAS ? !o->has[i] : o->ttl_ms[i] == -2)
            continue;
        out[m] = (fl_kv_item_t){o->items[i].key, FL_SLICE_NULL, FL_SLICE_NULL};
        if (o->op == FL_KV_TTL && o->ttl_ms[i] >= 0) /* -1: no TTL, "" */
            out[m].timeout =
                fl_slice(tbuf[i], kvr_rfc3339(tbuf[i], sizeof(tbuf[i]), now + o->ttl_ms[i]));
        m++;
    }
    fl_kv_reply(o->call, out, m);
done:
    free(out);
    free(tbuf);
}

/* All replies are in: answer the call. */
static void kvr_finish(kvr_op_t *o)
{
    if (o->err)
        KVR_FAIL(o->call, o->op, "%s", o->err);
    else if (o->op == FL_KV_HAS || o->op == FL_KV_TTL)
        kvr_reply_keys(o);
    else
        fl_kv_reply(o->call, NULL, 0); /* Set, MExpire, Delete, Clear: an empty Response */
    free(o);
}

/* ---- replies ---- */

/* Set, MExpire, Has, TTL: one reply per item. */
static void kvr_on_item(fl_redis_t *r, redisReply *rep, const char *err, void *data)
{
    (void)r;
    kvr_slot_t *s = data;
    kvr_op_t *o = s->op;
    if (err || rep->type == REDIS_REPLY_ERROR)
        kvr_set_err(o, rep, err);
    else if (o->op == FL_KV_HAS)
        o->has[s->i] = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0;
    else if (o->op == FL_KV_TTL)
        o->ttl_ms[s->i] = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    if (--o->left == 0)
        kvr_finish(o);
}

/* MGet: one MGET; the values are encoded before the reply is freed. */
static void kvr_on_mget(fl_redis_t *r, redisReply *rep, const char *err, void *data)
{
    (void)r;
    kvr_op_t *o = data;
    if (err)
        kvr_set_err(o, NULL, err);
    else if (rep->type == REDIS_REPLY_ERROR)
        kvr_set_err(o, rep, NULL);
    else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != o->n)
        kvr_set_err(o, NULL, "unexpected reply");
    if (o->err) {
        kvr_finish(o);
        return;
    }
    fl_kv_item_t *out = malloc(o->n * sizeof(*out));
    size_t m = 0;
    if (!out) {
        kvr_set_err(o, NULL, "out of memory");
        kvr_finish(o);
        return;
    }
    for (size_t i = 0; i < o->n; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue; /* nil: missing (or not a string) */
        out[m++] = (fl_kv_item_t){o->items[i].key, fl_slice(e->str, e->len), FL_SLICE_NULL};
    }
    fl_kv_reply(o->call, out, m);
    free(out);
    free(o);
}

/* Delete, Clear: one command, any non-error reply is success. */
static void kvr_on_one(fl_redis_t *r, redisReply *rep, const char *err, void *data)
{
    (void)r;
    kvr_op_t *o = data;
    if (err || rep->type == REDIS_REPLY_ERROR)
        kvr_set_err(o, rep, err);
    kvr_finish(o);
}

/* ---- requests ---- */

static int kvr_check_keys(fl_rpc_call_t *call, int op, const fl_kv_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fl_kv_key_blank(items[i].key)) {
            KVR_FAIL(call, op, "%s", "empty key");
            return -1;
        }
    }
    return 0;
}

/* Every deadline parsed before anything is sent (all or nothing, as the memory driver). */
static int kvr_deadlines(fl_rpc_call_t *call, int op, const fl_kv_item_t *items, size_t n)
{
    int64_t ms;
    for (size_t i = 0; i < n; i++) {
        fl_slice_t t = items[i].timeout;
        if (op == FL_KV_MEXPIRE && !t.len) {
            KVR_FAIL(call, op, "%s", "timeout for the key should be set");
            return -1;
        }
        if (t.len && fl_rfc3339_ms(t, &ms) < 0) {
            KVR_FAIL(call, op,
                     "parsing time \"%.*s\" as \"2006-01-02T15:04:05Z07:00\": not RFC 3339",
                     (int)t.len, t.base);
            return -1;
        }
    }
    return 0;
}

/* One command per item: EXISTS, SET [PX], PEXPIRE or PTTL. */
static int kvr_item_cmd(fl_redis_t *r, kvr_op_t *o, size_t i, int64_t now)
{
    const fl_kv_item_t *it = &o->items[i];
    char num[24];
    int64_t deadline = 0;
    if (it->timeout.len)
        fl_rfc3339_ms(it->timeout, &deadline);
    snprintf(num, sizeof(num), "%lld", (long long)(deadline > now ? deadline - now : 0));
    const char *argv[5] = {NULL, it->key.base, it->value.base, "PX", num};
    size_t len[5] = {0, it->key.len, it->value.len, 2, strlen(num)};
    int argc = 2;
    switch (o->op) {
    case FL_KV_HAS:
        argv[0] = "EXISTS";
        break;
    case FL_KV_TTL:
        argv[0] = "PTTL";
        break;
    case FL_KV_MEXPIRE: /* a deadline passed deletes the key, as PEXPIRE 0 does */
        argv[0] = "PEXPIRE";
        argv[2] = num;
        len[2] = len[4];
        argc = 3;
        break;
    default: /* SET; a deadline passed (or none) stores without a TTL */
        argv[0] = "SET";
        if (!argv[2])
            argv[2] = "";
        argc = deadline > now ? 5 : 3;
        break;
    }
    len[0] = strlen(argv[0]);
    return fl_redis_cmd(r, kvr_on_item, &o->slots[i], argc, argv, len);
}

static void kvr_pipeline(kvr_storage_t *s, kvr_op_t *o)
{
    int64_t now = fl_wall_ms();
    for (size_t i = 0; i < o->n; i++) {
        if (kvr_item_cmd(s->r, o, i, now) < 0) {
            /* the commands already queued still answer; the rest never will */
            kvr_set_err(o, NULL, "out of memory");
            o->left -= o->n - i;
            if (o->left == 0)
                kvr_finish(o);
            return;
        }
    }
}

/* MGET k... or DEL k... */
static void kvr_keys_cmd(kvr_storage_t *s, kvr_op_t *o, const char *name, fl_redis_cb cb)
{
    const char **argv = malloc((o->n + 1) * sizeof(*argv));
    size_t *len = malloc((o->n + 1) * sizeof(*len));
    int rc = -1;
    if (argv && len) {
        argv[0] = name;
        len[0] = strlen(name);
        for (size_t i = 0; i < o->n; i++) {
            argv[i + 1] = o->items[i].key.base;
            len[i + 1] = o->items[i].key.len;
        }
        rc = fl_redis_cmd(s->r, cb, o, (int)o->n + 1, argv, len);
    }
    free(argv);
    free(len);
    if (rc < 0) {
        kvr_set_err(o, NULL, "out of memory");
        kvr_finish(o);
    }
}

static void kvr_exec(fl_kv_storage_t *st, int op, fl_rpc_call_t *call, const fl_kv_item_t *items,
                     size_t n)
{
    kvr_storage_t *s = (kvr_storage_t *)st;
    if (op != FL_KV_CLEAR && kvr_check_keys(call, op, items, n) < 0)
        return;
    if ((op == FL_KV_SET || op == FL_KV_MEXPIRE) && kvr_deadlines(call, op, items, n) < 0)
        return;
    if (op != FL_KV_CLEAR && n == 0) {
        fl_kv_reply(call, NULL, 0); /* nothing to ask Redis */
        return;
    }
    kvr_op_t *o = kvr_op_new(call, op, items, op == FL_KV_CLEAR ? 0 : n);
    if (!o) {
        KVR_FAIL(call, op, "%s", "out of memory");
        return;
    }
    switch (op) {
    case FL_KV_MGET:
        kvr_keys_cmd(s, o, "MGET", kvr_on_mget);
        break;
    case FL_KV_DELETE:
        kvr_keys_cmd(s, o, "DEL", kvr_on_one);
        break;
    case FL_KV_CLEAR: /* upstream: FLUSHDB of the storage's db */
        if (fl_redis_cmdf(s->r, kvr_on_one, o, "FLUSHDB") < 0) {
            kvr_set_err(o, NULL, "out of memory");
            kvr_finish(o);
        }
        break;
    default:
        kvr_pipeline(s, o);
        break;
    }
}

static void kvr_free(fl_kv_storage_t *st)
{
    kvr_storage_t *s = (kvr_storage_t *)st;
    fl_redis_free(s->r); /* calls in flight fail with "redis: client closed" */
    free(s->base.name);
    free(s);
}

fl_kv_storage_t *fl_kv_redis_new(const struct fl_conf_kv *k, fl_loop_t *loop, fl_conf_err_t *err)
{
    if (k->naddrs != 1) { /* svcconf.c refuses it first, with the line */
        fl_conf_error(err, "kv.%s: redis: forkline supports one redis node; give one address",
                      k->name);
        return NULL;
    }
    kvr_storage_t *s = calloc(1, sizeof(*s));
    char name[128], why[256];
    if (!s || !(s->base.name = strdup(k->name))) {
        free(s);
        fl_conf_error(err, "kv.%s: out of memory", k->name);
        return NULL;
    }
    snprintf(name, sizeof(name), "forkline-kv-%s", k->name);
    fl_redis_opts_t o = {
        .addr = k->addrs[0],
        .username = k->username,
        .password = k->password,
        .db = k->db,
        .dial_timeout_ms = k->dial_timeout_ms,
        .read_timeout_ms = k->read_timeout_ms,
        .tls_root_ca = k->tls_root_ca,
        .tls_cert = k->tls_cert,
        .tls_key = k->tls_key,
        .name = name,
        /* write_timeout has no use here: writes never block, the read timeout bounds a call */
        /* a kv call during an outage fails at once: come back soon after Redis does */
        .reconnect_min_ms = 100,
        .reconnect_max_ms = 1000,
    };
    if (!(s->r = fl_redis_new(loop, &o, NULL, NULL, why, sizeof(why)))) {
        fl_conf_error(err, "kv.%s: redis: %s", k->name, why);
        free(s->base.name);
        free(s);
        return NULL;
    }
    s->base.exec = kvr_exec;
    s->base.free = kvr_free;
    return &s->base;
}

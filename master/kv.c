/* See kv.h. The RPC side (decode kv.v1.Request, find the storage, encode kv.v1.Response) and the
 * memory driver on kv_memory.c's store. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv.h"
#include "kv_memory.h"
#include "log.h"
#include "pb.h"

const char *const fl_kv_rpc_ops[] = {"rpc_has", "rpc_set",    "rpc_mget", "rpc_mexpire",
                                     "rpc_ttl", "rpc_delete", "rpc_clear"};

static struct {
    fl_kv_storage_t **st;
    size_t n;
} kvs;

/* ---- kv.v1 codec ---- */

static const char kv_err_wire[] = "proto: cannot parse invalid wire-format data";

static int kv_parse_item(const pb_field_t *f, fl_kv_item_t *it)
{
    const uint8_t *p = f->data, *end = f->data + f->len;
    pb_field_t g;
    int rc;
    *it = (fl_kv_item_t){{"", 0}, {"", 0}, {"", 0}};
    while ((rc = pb_next_field(&p, end, &g)) > 0) {
        if (g.wire != PB_LEN)
            continue;
        fl_slice_t v = fl_slice((const char *)g.data, g.len);
        if (g.field == 1)
            it->key = v;
        else if (g.field == 2)
            it->value = v;
        else if (g.field == 3)
            it->timeout = v;
    }
    return rc;
}

/* Request{storage=1, items=2}: *items is malloc'd (NULL when none). 0 or -1. */
static int kv_parse(fl_slice_t arg, fl_slice_t *storage, fl_kv_item_t **items, size_t *n)
{
    const uint8_t *p = (const uint8_t *)arg.base, *end = p + arg.len;
    pb_field_t f;
    size_t count = 0;
    int rc;
    *storage = FL_SLICE_NULL;
    *items = NULL;
    *n = 0;
    while ((rc = pb_next_field(&p, end, &f)) > 0)
        count += f.field == 2 && f.wire == PB_LEN;
    if (rc < 0)
        return -1;
    if (count && !(*items = malloc(count * sizeof(**items))))
        return -1;
    p = (const uint8_t *)arg.base;
    while (pb_next_field(&p, end, &f) > 0) {
        if (f.wire != PB_LEN)
            continue;
        if (f.field == 1) {
            *storage = fl_slice((const char *)f.data, f.len);
        } else if (f.field == 2) {
            if (kv_parse_item(&f, &(*items)[*n]) < 0) {
                free(*items);
                *items = NULL;
                return -1;
            }
            (*n)++;
        }
    }
    return 0;
}

int fl_kv_encode(fl_buf_t *out, const fl_kv_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const fl_kv_item_t *it = &items[i];
        size_t inner = pb_bytes_size(1, it->key.len);
        inner += it->value.len ? pb_bytes_size(2, it->value.len) : 0;
        inner += it->timeout.len ? pb_bytes_size(3, it->timeout.len) : 0;
        if (fl_buf_reserve(out, pb_bytes_size(1, inner)) < 0)
            return -1;
        uint8_t *p = (uint8_t *)out->data + out->len;
        p = pb_w_len(p, 1, inner);
        p = pb_w_bytes(p, 1, it->key.base, it->key.len);
        if (it->value.len)
            p = pb_w_bytes(p, 2, it->value.base, it->value.len);
        if (it->timeout.len)
            p = pb_w_bytes(p, 3, it->timeout.base, it->timeout.len);
        out->len = (size_t)((char *)p - out->data);
    }
    return 0;
}

void fl_kv_reply(fl_rpc_call_t *call, const fl_kv_item_t *items, size_t n)
{
    fl_buf_t b = {0};
    if (fl_kv_encode(&b, items, n) < 0)
        fl_rpc_fail(call, "out of memory");
    else
        fl_rpc_reply(call, b.data, b.len);
    fl_buf_free(&b);
}

bool fl_kv_key_blank(fl_slice_t key)
{
    for (size_t i = 0; i < key.len; i++)
        if (!isspace((unsigned char)key.base[i]))
            return false;
    return true;
}

/* ---- the RPC methods ---- */

static fl_kv_storage_t *kv_find(fl_slice_t name)
{
    for (size_t i = 0; i < kvs.n; i++)
        if (fl_slice_eq(name, kvs.st[i]->name, strlen(kvs.st[i]->name)))
            return kvs.st[i];
    return NULL;
}

static void kv_call(fl_rpc_call_t *call, int op)
{
    const char *opname = fl_kv_rpc_ops[op];
    if (call->req.codec != FL_RPC_PROTO) {
        fl_rpc_fail(call, "%s: kv takes a kv.v1.Request: use the proto codec", opname);
        return;
    }
    fl_slice_t storage;
    fl_kv_item_t *items;
    size_t n;
    if (kv_parse(call->req.arg, &storage, &items, &n) < 0) {
        fl_rpc_fail(call, "%s: %s", opname, kv_err_wire);
        return;
    }
    fl_kv_storage_t *st = storage.len ? kv_find(storage) : NULL;
    if (!storage.len)
        fl_rpc_fail(call, "%s: no storage provided", opname);
    else if (!st)
        fl_rpc_fail(call, "%s: no such storage: %.*s", opname, (int)storage.len, storage.base);
    else
        st->exec(st, op, call, items, n);
    free(items);
}

static void kv_has(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_HAS);
}
static void kv_set(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_SET);
}
static void kv_mget(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_MGET);
}
static void kv_mexpire(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_MEXPIRE);
}
static void kv_ttl(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_TTL);
}
static void kv_delete(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_DELETE);
}
static void kv_clear(fl_rpc_call_t *c)
{
    kv_call(c, FL_KV_CLEAR);
}

static const fl_rpc_method_t kv_methods[] = {
    {"kv.Has", kv_has},         {"kv.Set", kv_set}, {"kv.MGet", kv_mget},
    {"kv.MExpire", kv_mexpire}, {"kv.TTL", kv_ttl}, {"kv.Delete", kv_delete},
    {"kv.Clear", kv_clear},
};

int fl_kv_register(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    if (c->kv.n && !(kvs.st = calloc(c->kv.n, sizeof(*kvs.st))))
        return fl_conf_error(err, "out of memory");
    for (size_t i = 0; i < c->kv.n; i++) {
        const struct fl_conf_kv *k = &c->kv.storages[i];
        fl_kv_storage_t *st = strcasecmp(k->driver, "redis") == 0 ? fl_kv_redis_new(k, loop, err)
                                                                  : fl_kv_memory_new(k->name, loop);
        if (!st) {
            if (strcasecmp(k->driver, "redis") != 0)
                fl_conf_error(err, "kv.%s: out of memory", k->name);
            fl_kv_shutdown();
            return -1;
        }
        kvs.st[kvs.n++] = st;
        fl_logn(FL_LOG_DEBUG, "kv", "storage %s: driver %s", k->name, k->driver);
    }
    if (rpc && fl_rpc_server_add(rpc, kv_methods, FL_ARRAY_SIZE(kv_methods), NULL) < 0) {
        fl_kv_shutdown();
        return fl_conf_error(err, "out of memory");
    }
    return 0;
}

void fl_kv_shutdown(void)
{
    for (size_t i = 0; i < kvs.n; i++)
        kvs.st[i]->free(kvs.st[i]);
    free(kvs.st);
    kvs.st = NULL;
    kvs.n = 0;
}

/* ---- the memory driver ---- */

typedef struct {
    fl_kv_storage_t base;
    fl_kvmem_t mem;
} kvmem_storage_t;

static const char *const kvm_ops[] = {"in_memory_plugin_has",  "in_memory_plugin_set",
                                      "in_memory_plugin_mget", "in_memory_plugin_mexpire",
                                      "in_memory_plugin_ttl",  "in_memory_plugin_delete",
                                      "in_memory_plugin_clear"};

/* Upstream's nested error: "rpc_has:\n\tin_memory_plugin_has: empty key". */
#define KVM_FAIL(call, op, fmt, ...)                                                               \
    fl_rpc_fail(call, "%s:\n\t%s: " fmt, fl_kv_rpc_ops[op], kvm_ops[op], __VA_ARGS__)

static int kvm_check_keys(fl_rpc_call_t *call, int op, const fl_kv_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fl_kv_key_blank(items[i].key)) {
            KVM_FAIL(call, op, "%s", "empty key");
            return -1;
        }
    }
    return 0;
}

static int kvm_deadline(fl_rpc_call_t *call, int op, fl_slice_t t, int64_t *ms)
{
    *ms = 0;
    if (!t.len || fl_rfc3339_ms(t, ms) == 0)
        return 0;
    KVM_FAIL(call, op, "parsing time \"%.*s\" as \"2006-01-02T15:04:05Z07:00\": not RFC 3339",
             (int)t.len, t.base);
    return -1;
}

static void kvm_set(kvmem_storage_t *s, fl_rpc_call_t *call, const fl_kv_item_t *items, size_t n)
{
    /* all or nothing: check every deadline before storing anything */
    int64_t ms;
    for (size_t i = 0; i < n; i++)
        if (kvm_deadline(call, FL_KV_SET, items[i].timeout, &ms) < 0)
            return;
    for (size_t i = 0; i < n; i++) {
        kvm_deadline(call, FL_KV_SET, items[i].timeout, &ms);
        if (fl_kvmem_set(&s->mem, items[i].key, items[i].value, ms, items[i].timeout) < 0) {
            KVM_FAIL(call, FL_KV_SET, "%s", "out of memory");
            return;
        }
    }
    fl_kv_reply(call, NULL, 0);
}

static void kvm_mexpire(kvmem_storage_t *s, fl_rpc_call_t *call, const fl_kv_item_t *items,
                        size_t n)
{
    int64_t ms;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].timeout.len) {
            KVM_FAIL(call, FL_KV_MEXPIRE, "%s", "timeout for the key should be set");
            return;
        }
        if (kvm_deadline(call, FL_KV_MEXPIRE, items[i].timeout, &ms) < 0)
            return;
    }
    for (size_t i = 0; i < n; i++) {
        kvm_deadline(call, FL_KV_MEXPIRE, items[i].timeout, &ms);
        fl_kvmem_expire(&s->mem, items[i].key, ms, items[i].timeout);
    }
    fl_kv_reply(call, NULL, 0);
}

/* Has / MGet / TTL: the existing keys, with what each op returns. */
static void kvm_read(kvmem_storage_t *s, int op, fl_rpc_call_t *call, const fl_kv_item_t *items,
                     size_t n)
{
    fl_kv_item_t *out = n ? malloc(n * sizeof(*out)) : NULL;
    size_t m = 0;
    if (n && !out) {
        KVM_FAIL(call, op, "%s", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const fl_kv_entry_t *e = fl_kvmem_get(&s->mem, items[i].key);
        if (!e)
            continue;
        out[m] = (fl_kv_item_t){items[i].key, FL_SLICE_NULL, FL_SLICE_NULL};
        if (op == FL_KV_MGET)
            out[m].value = fl_kv_value(e);
        else if (op == FL_KV_TTL)
            out[m].timeout = fl_kv_timeout(e);
        m++;
    }
    fl_kv_reply(call, out, m);
    free(out);
}

static void kvm_exec(fl_kv_storage_t *st, int op, fl_rpc_call_t *call, const fl_kv_item_t *items,
                     size_t n)
{
    kvmem_storage_t *s = (kvmem_storage_t *)st;
    if (op != FL_KV_CLEAR && kvm_check_keys(call, op, items, n) < 0)
        return;
    switch (op) {
    case FL_KV_SET:
        kvm_set(s, call, items, n);
        break;
    case FL_KV_MEXPIRE:
        kvm_mexpire(s, call, items, n);
        break;
    case FL_KV_DELETE:
        for (size_t i = 0; i < n; i++)
            fl_kvmem_del(&s->mem, items[i].key);
        fl_kv_reply(call, NULL, 0);
        break;
    case FL_KV_CLEAR:
        fl_kvmem_clear(&s->mem);
        fl_kv_reply(call, NULL, 0);
        break;
    default:
        kvm_read(s, op, call, items, n);
        break;
    }
}

static void kvm_free(fl_kv_storage_t *st)
{
    kvmem_storage_t *s = (kvmem_storage_t *)st;
    fl_kvmem_destroy(&s->mem);
    free(s->base.name);
    free(s);
}

fl_kv_storage_t *fl_kv_memory_new(const char *name, fl_loop_t *loop)
{
    kvmem_storage_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->base.name = strdup(name))) {
        free(s);
        return NULL;
    }
    s->base.exec = kvm_exec;
    s->base.free = kvm_free;
    fl_kvmem_init(&s->mem, loop);
    return &s->base;
}

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

/* A set of storages, each with the config it was built from (kv_conf_key). */
typedef struct {
    fl_kv_storage_t **st;
    char **key;
    size_t n;
} kv_set_t;

static struct {
    kv_set_t live, next; /* next: a reload's set until it is committed or aborted */
    bool prepared;
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
    for (size_t i = 0; i < kvs.live.n; i++)
        if (fl_slice_eq(name, kvs.live.st[i]->name, strlen(kvs.live.st[i]->name)))
            return kvs.live.st[i];
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

/* ---- the storage sets: built at start, rebuilt beside the live one by a reload ---- */

static int kv_key_str(fl_buf_t *b, const char *v)
{
    return v ? fl_buf_printf(b, "|%zu:%s", strlen(v), v) : fl_buf_puts(b, "|-");
}

/* Everything a storage is built from, as one string: equal strings = an unchanged storage. A
 * memory storage has nothing but its driver. NULL when out of memory. */
static char *kv_conf_key(const struct fl_conf_kv *k)
{
    fl_buf_t b = {0};
    int rc = 0;
    if (strcasecmp(k->driver, "redis") != 0) {
        rc = fl_buf_puts(&b, "memory");
    } else {
        rc = fl_buf_printf(&b, "redis|%d|%lld|%lld|%lld", k->db, (long long)k->dial_timeout_ms,
                           (long long)k->read_timeout_ms, (long long)k->write_timeout_ms);
        for (size_t i = 0; i < k->naddrs; i++)
            rc |= kv_key_str(&b, k->addrs[i]);
        const char *more[] = {k->username, k->password, k->tls_root_ca, k->tls_cert, k->tls_key};
        for (size_t i = 0; i < FL_ARRAY_SIZE(more); i++)
            rc |= kv_key_str(&b, more[i]);
    }
    if (rc < 0 || fl_buf_append(&b, "", 1) < 0) {
        fl_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static bool kv_set_has(const kv_set_t *set, const fl_kv_storage_t *st)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->st[i] == st)
            return true;
    return false;
}

/* Frees set, but not the storages that keep (the other set) still holds. */
static void kv_set_free(kv_set_t *set, const kv_set_t *keep)
{
    for (size_t i = 0; i < set->n; i++) {
        if (!kv_set_has(keep, set->st[i]))
            set->st[i]->free(set->st[i]); /* redis: calls in flight fail ("client closed") */
        free(set->key[i]);
    }
    free(set->st);
    free(set->key);
    memset(set, 0, sizeof(*set));
}

/* The storages of c into *set: taken from live when name and config are unchanged (a memory
 * storage keeps its keys and TTLs, a redis one its connection), else built new. 0, or -1 with
 * err and *set empty. */
static int kv_set_build(kv_set_t *set, const kv_set_t *live, fl_loop_t *loop, const fl_conf_t *c,
                        fl_conf_err_t *err)
{
    memset(set, 0, sizeof(*set));
    if (c->kv.n && (!(set->st = calloc(c->kv.n, sizeof(*set->st))) ||
                    !(set->key = calloc(c->kv.n, sizeof(*set->key))))) {
        kv_set_free(set, live);
        return fl_conf_error(err, "out of memory");
    }
    for (size_t i = 0; i < c->kv.n; i++) {
        const struct fl_conf_kv *k = &c->kv.storages[i];
        char *key = kv_conf_key(k);
        fl_kv_storage_t *st = NULL;
        for (size_t j = 0; key && j < live->n && !st; j++)
            if (strcmp(live->st[j]->name, k->name) == 0 && strcmp(live->key[j], key) == 0)
                st = live->st[j];
        if (key && !st)
            st = strcasecmp(k->driver, "redis") == 0 ? fl_kv_redis_new(k, loop, err)
                                                     : fl_kv_memory_new(k->name, loop);
        if (!st) {
            if (!key || strcasecmp(k->driver, "redis") != 0)
                fl_conf_error(err, "kv.%s: out of memory", k->name);
            free(key);
            kv_set_free(set, live);
            return -1;
        }
        set->st[set->n] = st;
        set->key[set->n++] = key;
    }
    return 0;
}

int fl_kv_register(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    kv_set_t none = {0};
    if (kv_set_build(&kvs.live, &none, loop, c, err) < 0)
        return -1;
    for (size_t i = 0; i < c->kv.n; i++)
        fl_logn(FL_LOG_DEBUG, "kv", "storage %s: driver %s", c->kv.storages[i].name,
                c->kv.storages[i].driver);
    if (rpc && fl_rpc_server_add(rpc, kv_methods, FL_ARRAY_SIZE(kv_methods), NULL) < 0) {
        fl_kv_shutdown();
        return fl_conf_error(err, "out of memory");
    }
    return 0;
}

int fl_kv_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    fl_kv_abort();
    if (kv_set_build(&kvs.next, &kvs.live, loop, c, err) < 0)
        return -1;
    kvs.prepared = true;
    return 0;
}

void fl_kv_commit(void)
{
    if (!kvs.prepared)
        return;
    kv_set_t old = kvs.live;
    kvs.live = kvs.next;
    memset(&kvs.next, 0, sizeof(kvs.next));
    kvs.prepared = false;
    for (size_t i = 0; i < kvs.live.n; i++) {
        fl_kv_storage_t *st = kvs.live.st[i];
        bool named = false;
        for (size_t j = 0; j < old.n && !named; j++)
            named = strcmp(old.st[j]->name, st->name) == 0;
        if (!kv_set_has(&old, st))
            fl_logn(FL_LOG_INFO, "kv", "storage %s: %s", st->name,
                    named ? "config changed: a new storage replaces it (empty if memory)"
                          : "added");
    }
    for (size_t j = 0; j < old.n; j++) {
        bool named = false;
        for (size_t i = 0; i < kvs.live.n && !named; i++)
            named = strcmp(old.st[j]->name, kvs.live.st[i]->name) == 0;
        if (!named)
            fl_logn(FL_LOG_INFO, "kv", "storage %s: removed", old.st[j]->name);
    }
    kv_set_free(&old, &kvs.live);
}

void fl_kv_abort(void)
{
    if (kvs.prepared)
        kv_set_free(&kvs.next, &kvs.live);
    kvs.prepared = false;
}

void fl_kv_shutdown(void)
{
    fl_kv_abort();
    kv_set_t none = {0};
    kv_set_free(&kvs.live, &none);
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

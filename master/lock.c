/* See lock.h. */
#include <stdlib.h>
#include <string.h>

#include "lock.h"
#include "log.h"
#include "pb.h"

#define LK_YEAR_MS (365LL * 24 * 3600 * 1000)
#define LK_SWEEP_MS 1000

typedef struct lk_res lk_res_t;

typedef struct lk_holder {
    fl_deadline_t dl; /* first: the deadline's fire recovers the holder from it */
    fl_locks_t *l;
    lk_res_t *res;
    struct lk_holder *next, *prev;
    bool exclusive;
    size_t idlen;
    char id[];
} lk_holder_t;

typedef struct lk_waiter {
    fl_deadline_t dl;
    fl_locks_t *l;
    lk_res_t *res;
    struct lk_waiter *next, *prev;
    bool exclusive, ok;
    int64_t ttl_ms;
    fl_lock_done_cb done;
    fl_lock_alive_cb alive;
    void *ud;
    size_t idlen;
    char id[];
} lk_waiter_t;

struct lk_res {
    fl_hnode_t h;
    lk_holder_t *holders;
    size_t nholders;
    bool exclusive; /* the one holder holds it exclusively */
    lk_waiter_t *whead, *wtail;
    char name[];
};

static int64_t lk_ms(int64_t us)
{
    return us <= 0 ? 0 : (us + 999) / 1000;
}

static lk_res_t *lk_get(fl_locks_t *l, fl_slice_t name, bool create)
{
    fl_hnode_t *n = fl_hmap_get(&l->res, name.base, name.len);
    if (n || !create)
        return (lk_res_t *)n;
    lk_res_t *r = calloc(1, sizeof(*r) + name.len);
    if (!r)
        return NULL;
    memcpy(r->name, name.base, name.len);
    r->h.key = r->name;
    r->h.klen = name.len;
    if (fl_hmap_put(&l->res, &r->h) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void lk_maybe_free(fl_locks_t *l, lk_res_t *r)
{
    if (r->holders || r->whead)
        return;
    fl_hmap_del(&l->res, &r->h);
    free(r);
}

static lk_holder_t *lk_holder_of(lk_res_t *r, fl_slice_t id)
{
    for (lk_holder_t *h = r->holders; h; h = h->next)
        if (h->idlen == id.len && memcmp(h->id, id.base, id.len) == 0)
            return h;
    return NULL;
}

static bool lk_can_grant(const lk_res_t *r, bool exclusive)
{
    return exclusive ? r->nholders == 0 : !r->exclusive;
}

static void lk_serve(fl_locks_t *l, lk_res_t *r);

static void lk_holder_remove(fl_locks_t *l, lk_holder_t *h)
{
    lk_res_t *r = h->res;
    if (h->prev)
        h->prev->next = h->next;
    else
        r->holders = h->next;
    if (h->next)
        h->next->prev = h->prev;
    r->nholders--;
    if (h->exclusive)
        r->exclusive = false;
    fl_dl_del(&l->dl, &h->dl);
    free(h);
}

static void lk_holder_expired(fl_deadline_t *d)
{
    lk_holder_t *h = (lk_holder_t *)d;
    fl_locks_t *l = h->l;
    lk_res_t *r = h->res;
    lk_holder_remove(l, h);
    lk_serve(l, r);
}

static lk_holder_t *lk_grant(fl_locks_t *l, lk_res_t *r, fl_slice_t id, bool exclusive,
                             int64_t ttl_ms)
{
    lk_holder_t *h = calloc(1, sizeof(*h) + id.len);
    if (!h)
        return NULL;
    *h = (lk_holder_t){.l = l, .res = r, .exclusive = exclusive, .idlen = id.len};
    memcpy(h->id, id.base, id.len);
    h->dl.fire = lk_holder_expired;
    fl_dl_clear(&h->dl);
    if (fl_dl_add(&l->dl, &h->dl, fl_now_ms() + (ttl_ms ? ttl_ms : LK_YEAR_MS)) < 0) {
        free(h);
        return NULL;
    }
    h->next = r->holders;
    if (r->holders)
        r->holders->prev = h;
    r->holders = h;
    r->nholders++;
    if (exclusive)
        r->exclusive = true;
    return h;
}

static void lk_waiter_unlink(fl_locks_t *l, lk_waiter_t *w)
{
    lk_res_t *r = w->res;
    if (w->prev)
        w->prev->next = w->next;
    else
        r->whead = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        r->wtail = w->prev;
    w->next = w->prev = NULL;
    fl_dl_del(&l->dl, &w->dl);
    l->nwaiters--;
}

/* Grants queued waiters in order while they fit; answers them after the state is consistent,
 * since an answer may come back into this module. */
static void lk_serve(fl_locks_t *l, lk_res_t *r)
{
    lk_waiter_t *answered = NULL, **tail = &answered;
    lk_waiter_t *w;
    while ((w = r->whead)) {
        bool dead = w->alive && !w->alive(w->ud);
        if (!dead && !lk_can_grant(r, w->exclusive))
            break;
        lk_waiter_unlink(l, w);
        w->ok = !dead && lk_grant(l, r, fl_slice(w->id, w->idlen), w->exclusive, w->ttl_ms);
        *tail = w;
        tail = &w->next;
    }
    lk_maybe_free(l, r);
    while ((w = answered)) {
        answered = w->next;
        w->done(w->ud, w->ok);
        free(w);
    }
}

static void lk_waiter_expired(fl_deadline_t *d)
{
    lk_waiter_t *w = (lk_waiter_t *)d;
    fl_locks_t *l = w->l;
    lk_res_t *r = w->res;
    lk_waiter_unlink(l, w);
    w->done(w->ud, false);
    free(w);
    lk_serve(l, r); /* it may have held back shared waiters behind it */
}

/* Drops waiters whose clients are gone, so they do not sit there until their wait ends. */
static void lk_sweep(fl_loop_t *loop, void *data)
{
    fl_locks_t *l = data;
    l->sweep = 0;
    size_t cap = l->res.n, nr = 0, i;
    lk_res_t **todo = cap ? malloc(cap * sizeof(*todo)) : NULL;
    for (fl_hnode_t *n = fl_hmap_first(&l->res, &i); n && todo; n = fl_hmap_next(&l->res, n, &i)) {
        lk_res_t *r = (lk_res_t *)n;
        for (lk_waiter_t *w = r->whead; w; w = w->next) {
            if (w->alive && !w->alive(w->ud)) {
                todo[nr++] = r;
                break;
            }
        }
    }
    for (size_t k = 0; k < nr; k++) {
        lk_res_t *r = todo[k];
        for (lk_waiter_t *w = r->whead, *next; w; w = next) {
            next = w->next;
            if (w->alive && !w->alive(w->ud)) {
                lk_waiter_unlink(l, w);
                w->done(w->ud, false);
                free(w);
            }
        }
        lk_serve(l, r);
    }
    free(todo);
    if (l->nwaiters && loop)
        l->sweep = fl_timer_add(loop, LK_SWEEP_MS, lk_sweep, l);
}

void fl_locks_init(fl_locks_t *l, fl_loop_t *loop)
{
    memset(l, 0, sizeof(*l));
    l->loop = loop;
    fl_dl_init(&l->dl, loop);
}

void fl_lock_acquire(fl_locks_t *l, fl_slice_t res, fl_slice_t id, bool exclusive, int64_t ttl_us,
                     int64_t wait_us, fl_lock_done_cb done, fl_lock_alive_cb alive, void *ud)
{
    lk_res_t *r = lk_get(l, res, true);
    if (!r || lk_holder_of(r, id)) { /* out of memory, or this owner holds it already */
        done(ud, false);
        return;
    }
    if (!r->whead && lk_can_grant(r, exclusive)) {
        bool ok = lk_grant(l, r, id, exclusive, lk_ms(ttl_us)) != NULL;
        lk_maybe_free(l, r);
        done(ud, ok);
        return;
    }
    lk_waiter_t *w = calloc(1, sizeof(*w) + id.len);
    if (!w) {
        lk_maybe_free(l, r);
        done(ud, false);
        return;
    }
    *w = (lk_waiter_t){.l = l,
                       .res = r,
                       .exclusive = exclusive,
                       .ttl_ms = lk_ms(ttl_us),
                       .done = done,
                       .alive = alive,
                       .ud = ud,
                       .idlen = id.len};
    memcpy(w->id, id.base, id.len);
    w->dl.fire = lk_waiter_expired;
    fl_dl_clear(&w->dl);
    int64_t wait_ms = wait_us > 0 ? lk_ms(wait_us) : 1; /* upstream: 0 = try for 1 ms */
    if (fl_dl_add(&l->dl, &w->dl, fl_now_ms() + wait_ms) < 0) {
        free(w);
        lk_maybe_free(l, r);
        done(ud, false);
        return;
    }
    w->prev = r->wtail;
    if (r->wtail)
        r->wtail->next = w;
    else
        r->whead = w;
    r->wtail = w;
    l->nwaiters++;
    if (!l->sweep && l->loop && alive)
        l->sweep = fl_timer_add(l->loop, LK_SWEEP_MS, lk_sweep, l);
}

bool fl_lock_release(fl_locks_t *l, fl_slice_t res, fl_slice_t id)
{
    lk_res_t *r = lk_get(l, res, false);
    lk_holder_t *h = r ? lk_holder_of(r, id) : NULL;
    if (!h)
        return false;
    lk_holder_remove(l, h);
    lk_serve(l, r);
    return true;
}

bool fl_lock_force_release(fl_locks_t *l, fl_slice_t res)
{
    lk_res_t *r = lk_get(l, res, false);
    if (!r || !r->holders)
        return false;
    while (r->holders)
        lk_holder_remove(l, r->holders);
    lk_serve(l, r);
    return true;
}

bool fl_lock_exists(fl_locks_t *l, fl_slice_t res, fl_slice_t id)
{
    lk_res_t *r = lk_get(l, res, false);
    if (!r)
        return false;
    if (fl_slice_eq(id, "*", 1))
        return r->nholders > 0;
    return lk_holder_of(r, id) != NULL;
}

bool fl_lock_update_ttl(fl_locks_t *l, fl_slice_t res, fl_slice_t id, int64_t ttl_us)
{
    lk_res_t *r = lk_get(l, res, false);
    lk_holder_t *h = r ? lk_holder_of(r, id) : NULL;
    if (!h)
        return false;
    int64_t ms = lk_ms(ttl_us);
    return fl_dl_add(&l->dl, &h->dl, fl_now_ms() + (ms ? ms : LK_YEAR_MS)) == 0;
}

static void lk_destroy_one(fl_hnode_t *n, void *arg)
{
    fl_locks_t *l = arg;
    lk_res_t *r = (lk_res_t *)n;
    while (r->holders) {
        lk_holder_t *h = r->holders;
        r->holders = h->next;
        free(h);
    }
    while (r->whead) {
        lk_waiter_t *w = r->whead;
        r->whead = w->next;
        l->nwaiters--;
        w->done(w->ud, false);
        free(w);
    }
    free(r);
}

void fl_locks_destroy(fl_locks_t *l)
{
    fl_hmap_clear(&l->res, lk_destroy_one, l);
    fl_hmap_free(&l->res);
    fl_dl_destroy(&l->dl);
    if (l->loop)
        fl_timer_del(l->loop, l->sweep);
    l->sweep = 0;
}

/* ---- lock.v1beta1 over RPC ---- */

static fl_locks_t lk_rpc;
static bool lk_rpc_on;

typedef struct {
    fl_slice_t resource, id;
    int64_t ttl, wait;
} lk_req_t;

static int lk_parse(fl_slice_t arg, lk_req_t *q)
{
    const uint8_t *p = (const uint8_t *)arg.base, *end = p + arg.len;
    pb_field_t f;
    int rc;
    *q = (lk_req_t){FL_SLICE(""), FL_SLICE(""), 0, 0};
    while ((rc = pb_next_field(&p, end, &f)) > 0) {
        if (f.field == 1 && f.wire == PB_LEN)
            q->resource = fl_slice((const char *)f.data, f.len);
        else if (f.field == 2 && f.wire == PB_LEN)
            q->id = fl_slice((const char *)f.data, f.len);
        else if (f.field == 3 && f.wire == PB_VARINT)
            q->ttl = (int64_t)f.value;
        else if (f.field == 4 && f.wire == PB_VARINT)
            q->wait = (int64_t)f.value;
    }
    return rc;
}

static void lk_reply(fl_rpc_call_t *call, bool ok)
{
    static const char yes[] = {0x08, 0x01};
    fl_rpc_reply(call, yes, ok ? 2 : 0);
}

static void lk_done(void *ud, bool ok)
{
    lk_reply(ud, ok);
}

static bool lk_alive(void *ud)
{
    return fl_rpc_call_alive(ud);
}

enum { LK_LOCK, LK_READ, LK_RELEASE, LK_FORCE, LK_EXISTS, LK_TTL };

static void lk_call(fl_rpc_call_t *call, int op)
{
    lk_req_t q;
    if (call->req.codec != FL_RPC_PROTO) {
        fl_rpc_fail(call, "lock takes a lock.v1beta1.Request: use the proto codec");
        return;
    }
    if (lk_parse(call->req.arg, &q) < 0) {
        fl_rpc_fail(call, "proto: cannot parse invalid wire-format data");
        return;
    }
    if (op != LK_FORCE && !q.id.len) {
        fl_rpc_fail(call, "empty ID is not allowed");
        return;
    }
    switch (op) {
    case LK_LOCK:
    case LK_READ:
        fl_lock_acquire(&lk_rpc, q.resource, q.id, op == LK_LOCK, q.ttl, q.wait, lk_done, lk_alive,
                        call);
        break;
    case LK_RELEASE:
        lk_reply(call, fl_lock_release(&lk_rpc, q.resource, q.id));
        break;
    case LK_FORCE:
        lk_reply(call, fl_lock_force_release(&lk_rpc, q.resource));
        break;
    case LK_EXISTS:
        lk_reply(call, fl_lock_exists(&lk_rpc, q.resource, q.id));
        break;
    default:
        lk_reply(call, fl_lock_update_ttl(&lk_rpc, q.resource, q.id, q.ttl));
        break;
    }
}

static void lk_lock(fl_rpc_call_t *c)
{
    lk_call(c, LK_LOCK);
}
static void lk_lock_read(fl_rpc_call_t *c)
{
    lk_call(c, LK_READ);
}
static void lk_release(fl_rpc_call_t *c)
{
    lk_call(c, LK_RELEASE);
}
static void lk_force(fl_rpc_call_t *c)
{
    lk_call(c, LK_FORCE);
}
static void lk_exists(fl_rpc_call_t *c)
{
    lk_call(c, LK_EXISTS);
}
static void lk_update_ttl(fl_rpc_call_t *c)
{
    lk_call(c, LK_TTL);
}

static const fl_rpc_method_t lk_methods[] = {
    {"lock.Lock", lk_lock},       {"lock.LockRead", lk_lock_read},
    {"lock.Release", lk_release}, {"lock.ForceRelease", lk_force},
    {"lock.Exists", lk_exists},   {"lock.UpdateTTL", lk_update_ttl},
};

int fl_lock_register(fl_rpc_server_t *rpc, fl_loop_t *loop)
{
    if (!rpc)
        return 0;
    fl_locks_init(&lk_rpc, loop);
    lk_rpc_on = true;
    return fl_rpc_server_add(rpc, lk_methods, FL_ARRAY_SIZE(lk_methods), NULL);
}

void fl_lock_shutdown(void)
{
    if (lk_rpc_on)
        fl_locks_destroy(&lk_rpc);
    lk_rpc_on = false;
}

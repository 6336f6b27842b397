/* Unit tests for the master's service data structures: master/hmap.c, master/kv_memory.c (the
 * kv memory store with its expiry heap), master/deadline.c and master/lock.c (locks, shared
 * locks, wait queues, ttl expiry), driven by a real event loop where timers matter. */
#include <stdio.h>
#include <stdlib.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../reactor/ev.c"
#include "../../relay/frame.c"
#include "../../protocols/pb.c"
#include "../../protocols/rpc.c"
#include "../../lib/net.c"
#include "../../master/rpc.c"
#include "../../master/hmap.c"
#include "../../master/deadline.c"
#include "../../master/kv_memory.c"
#include "../../master/lock.c"
#include "test.h"

static int64_t fake_now;
static int64_t t_now(void)
{
    return fake_now;
}

#define S(lit) FL_SLICE(lit)

static void t_hmap_grow_shrink(void)
{
    fl_hmap_t m = {0};
    enum { N = 20000 };
    static fl_hnode_t nodes[N];
    static char keys[N][16];
    for (int i = 0; i < N; i++) {
        int n = snprintf(keys[i], sizeof(keys[i]), "key%d", i);
        nodes[i] = (fl_hnode_t){.key = keys[i], .klen = (size_t)n};
        CU_ASSERT_EQUAL(fl_hmap_put(&m, &nodes[i]), 0);
    }
    CU_ASSERT_EQUAL(m.n, N);
    CU_ASSERT(m.nb >= N);
    CU_ASSERT_PTR_EQUAL(fl_hmap_get(&m, "key123", 6), &nodes[123]);
    CU_ASSERT_PTR_NULL(fl_hmap_get(&m, "key", 3));
    size_t it, count = 0;
    for (fl_hnode_t *n = fl_hmap_first(&m, &it); n; n = fl_hmap_next(&m, n, &it))
        count++;
    CU_ASSERT_EQUAL(count, N);
    for (int i = 0; i < N - 3; i++)
        fl_hmap_del(&m, &nodes[i]);
    CU_ASSERT_EQUAL(m.n, 3);
    CU_ASSERT(m.nb <= 64); /* shrank with its content */
    CU_ASSERT_PTR_EQUAL(fl_hmap_get(&m, keys[N - 1], strlen(keys[N - 1])), &nodes[N - 1]);
    fl_hmap_free(&m);
}

static void t_rfc3339(void)
{
    int64_t ms;
    CU_ASSERT_EQUAL(fl_rfc3339_ms(S("2026-08-22T10:00:00+00:00"), &ms), 0);
    CU_ASSERT_EQUAL(ms, 1787392800000LL);
    CU_ASSERT_EQUAL(fl_rfc3339_ms(S("2026-08-22T12:00:00+02:00"), &ms), 0);
    CU_ASSERT_EQUAL(ms, 1787392800000LL);
    CU_ASSERT_EQUAL(fl_rfc3339_ms(S("2026-08-22T10:00:00.250Z"), &ms), 0);
    CU_ASSERT_EQUAL(ms, 1787392800250LL);
    CU_ASSERT_EQUAL(fl_rfc3339_ms(S("2026-08-22T10:00:00.123456789-00:30"), &ms), 0);
    CU_ASSERT_EQUAL(ms, 1787392800123LL + 1800000);
    const char *bad[] = {"",
                         "tomorrow",
                         "2026-08-22 10:00:00Z",
                         "2026-08-22T10:00:00",
                         "2026-13-22T10:00:00Z",
                         "2026-08-22T10:00:00.Z",
                         "2026-08-22T10:00:00+0000",
                         "2026-08-22T10:00:00Zjunk"};
    for (size_t i = 0; i < FL_ARRAY_SIZE(bad); i++)
        CU_ASSERT_EQUAL(fl_rfc3339_ms(fl_slice_cstr(bad[i]), &ms), -1);
}

static void t_kvmem_basic(void)
{
    fl_kvmem_t s;
    fl_kvmem_init(&s, NULL);
    s.now = t_now;
    fake_now = 1000000;
    CU_ASSERT_EQUAL(fl_kvmem_set(&s, S("a"), S("1"), 0, S("")), 0);
    CU_ASSERT_EQUAL(fl_kvmem_set(&s, S("b"), fl_slice("\0\1\2", 3), fake_now + 500, S("T")), 0);
    CU_ASSERT_EQUAL(fl_kvmem_set(&s, S("past"), S("x"), fake_now - 1, S("P")), 0);
    const fl_kv_entry_t *e = fl_kvmem_get(&s, S("b"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_EQUAL(fl_kv_value(e).len, 3);
    CU_ASSERT_EQUAL(memcmp(fl_kv_value(e).base, "\0\1\2", 3), 0);
    CU_ASSERT(fl_slice_eq(fl_kv_timeout(e), "T", 1));
    e = fl_kvmem_get(&s, S("past")); /* a past deadline = no TTL (upstream) */
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_EQUAL(e->expire_ms, 0);
    CU_ASSERT_EQUAL(fl_kv_timeout(e).len, 0);
    /* overwrite drops the old TTL */
    CU_ASSERT_EQUAL(fl_kvmem_set(&s, S("b"), S("2"), 0, S("")), 0);
    CU_ASSERT_EQUAL(s.nheap, 0);
    CU_ASSERT(fl_kvmem_expire(&s, S("b"), fake_now + 100, S("T2")));
    CU_ASSERT_EQUAL(s.nheap, 1);
    CU_ASSERT(!fl_kvmem_expire(&s, S("nope"), fake_now + 100, S("T2")));
    fake_now += 100;
    CU_ASSERT_PTR_NULL(fl_kvmem_get(&s, S("b"))); /* due: gone even before the sweep */
    CU_ASSERT_EQUAL(fl_kvmem_count(&s), 2);
    CU_ASSERT(fl_kvmem_del(&s, S("a")));
    CU_ASSERT(!fl_kvmem_del(&s, S("a")));
    fl_kvmem_clear(&s);
    CU_ASSERT_EQUAL(fl_kvmem_count(&s), 0);
    CU_ASSERT_EQUAL(s.bytes, 0);
    fl_kvmem_destroy(&s);
}

/* Churn: many keys with TTLs, the heap frees them in deadline order and nothing stays. */
static void t_kvmem_churn(void)
{
    fl_kvmem_t s;
    fl_kvmem_init(&s, NULL);
    s.now = t_now;
    fake_now = 5000;
    char key[32];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(key, sizeof(key), "k%d", (i * 7919) % 100000);
            int64_t when = fake_now + 1 + (i % 1000);
            fl_kvmem_set(&s, fl_slice(key, (size_t)n), S("value"), when, S("t"));
        }
        CU_ASSERT_EQUAL(fl_kvmem_count(&s), 100000);
        CU_ASSERT_EQUAL(fl_kvmem_expire_due(&s, fake_now + 500), 50000);
        fake_now += 1001;
        CU_ASSERT_EQUAL(fl_kvmem_expire_due(&s, fake_now), 50000);
        CU_ASSERT_EQUAL(fl_kvmem_count(&s), 0);
        CU_ASSERT_EQUAL(s.bytes, 0);
        CU_ASSERT(s.capheap <= 64);
        CU_ASSERT(s.map.nb <= 64);
    }
    fl_kvmem_destroy(&s);
}

static void t_stop(fl_loop_t *loop, void *data)
{
    (void)data;
    fl_loop_stop(loop);
}

/* Runs the loop for ms (ev.c keeps a stop requested earlier: clear it, the test owns the loop). */
static void t_run_ms(fl_loop_t *loop, int64_t ms)
{
    loop->stop = 0;
    fl_timer_add(loop, ms, t_stop, NULL);
    fl_loop_run(loop);
}

/* With a real loop: the timer frees keys when their deadline passes. */
static void t_kvmem_timer(void)
{
    fl_loop_t *loop = fl_loop_new(64);
    fl_kvmem_t s;
    fl_kvmem_init(&s, loop);
    int64_t now = fl_wall_ms();
    fl_kvmem_set(&s, S("late"), S("v"), now + 150, S("t"));
    fl_kvmem_set(&s, S("early"), S("v"), now + 50, S("t"));
    fl_kvmem_set(&s, S("never"), S("v"), 0, S(""));
    t_run_ms(loop, 100);
    CU_ASSERT_EQUAL(fl_kvmem_count(&s), 2); /* early freed by the timer, no read needed */
    t_run_ms(loop, 120);
    CU_ASSERT_EQUAL(fl_kvmem_count(&s), 1);
    CU_ASSERT_PTR_NOT_NULL(fl_kvmem_get(&s, S("never")));
    fl_kvmem_destroy(&s);
    fl_loop_free(loop);
}

/* ---- locks ---- */

typedef struct {
    int calls;
    bool ok;
    bool alive;
    int order; /* when it was answered */
} t_waiter;
static int t_answers;

static void t_done(void *ud, bool ok)
{
    t_waiter *w = ud;
    w->calls++;
    w->ok = ok;
    w->order = ++t_answers;
}

static bool t_alive(void *ud)
{
    return ((t_waiter *)ud)->alive;
}

static void t_lock_basic(void)
{
    fl_loop_t *loop = fl_loop_new(64);
    fl_locks_t l;
    fl_locks_init(&l, loop);
    t_waiter a = {.alive = true}, b = {.alive = true}, c = {.alive = true};
    fl_lock_acquire(&l, S("r"), S("A"), true, 0, 0, t_done, t_alive, &a);
    CU_ASSERT(a.calls == 1 && a.ok);
    fl_lock_acquire(&l, S("r"), S("A"), true, 0, 0, t_done, t_alive, &b);
    CU_ASSERT(b.calls == 1 && !b.ok); /* the owner already holds it */
    b.calls = 0;
    fl_lock_acquire(&l, S("r"), S("B"), false, 0, 0, t_done, t_alive, &b);
    CU_ASSERT_EQUAL(b.calls, 0); /* waits 1 ms */
    t_run_ms(loop, 20);
    CU_ASSERT(b.calls == 1 && !b.ok);
    CU_ASSERT(fl_lock_exists(&l, S("r"), S("*")));
    CU_ASSERT(!fl_lock_exists(&l, S("r"), S("B")));
    CU_ASSERT(!fl_lock_release(&l, S("r"), S("B")));
    CU_ASSERT(fl_lock_release(&l, S("r"), S("A")));
    CU_ASSERT(!fl_lock_exists(&l, S("r"), S("*")));
    CU_ASSERT_EQUAL(l.res.n, 0); /* resource freed */
    /* shared */
    a = b = c = (t_waiter){.alive = true};
    fl_lock_acquire(&l, S("s"), S("A"), false, 0, 0, t_done, t_alive, &a);
    fl_lock_acquire(&l, S("s"), S("B"), false, 0, 0, t_done, t_alive, &b);
    CU_ASSERT(a.ok && b.ok);
    CU_ASSERT(fl_lock_force_release(&l, S("s")));
    CU_ASSERT(!fl_lock_force_release(&l, S("s")));
    CU_ASSERT_EQUAL(l.res.n, 0);
    fl_locks_destroy(&l);
    fl_loop_free(loop);
}

/* Queue order: W1 (excl), R2, R3 (shared), W4 (excl): after A releases, W1 gets it; after W1,
 * R2 and R3 together; W4 after both; a dead waiter is skipped; a new reader does not overtake
 * a queued writer. */
static void t_lock_queue(void)
{
    fl_loop_t *loop = fl_loop_new(64);
    fl_locks_t l;
    fl_locks_init(&l, loop);
    t_waiter a = {.alive = true}, w1 = {.alive = true}, dead = {.alive = true},
             r2 = {.alive = true}, r3 = {.alive = true}, w4 = {.alive = true},
             late = {.alive = true};
    t_answers = 0;
    fl_lock_acquire(&l, S("q"), S("A"), true, 0, 0, t_done, t_alive, &a);
    fl_lock_acquire(&l, S("q"), S("W1"), true, 0, 5000000, t_done, t_alive, &w1);
    fl_lock_acquire(&l, S("q"), S("D"), true, 0, 5000000, t_done, t_alive, &dead);
    fl_lock_acquire(&l, S("q"), S("R2"), false, 0, 5000000, t_done, t_alive, &r2);
    fl_lock_acquire(&l, S("q"), S("R3"), false, 0, 5000000, t_done, t_alive, &r3);
    fl_lock_acquire(&l, S("q"), S("W4"), true, 0, 5000000, t_done, t_alive, &w4);
    dead.alive = false;
    CU_ASSERT_EQUAL(l.nwaiters, 5);
    CU_ASSERT(fl_lock_release(&l, S("q"), S("A")));
    CU_ASSERT(w1.calls == 1 && w1.ok && r2.calls == 0);
    fl_lock_acquire(&l, S("q"), S("L"), false, 0, 5000000, t_done, t_alive, &late);
    CU_ASSERT(fl_lock_release(&l, S("q"), S("W1")));
    CU_ASSERT(dead.calls == 1 && !dead.ok); /* answered false, never granted */
    CU_ASSERT(r2.ok && r3.ok && w4.calls == 0 && late.calls == 0);
    CU_ASSERT(fl_lock_exists(&l, S("q"), S("R2")) && fl_lock_exists(&l, S("q"), S("R3")));
    CU_ASSERT(!fl_lock_exists(&l, S("q"), S("D")));
    CU_ASSERT(fl_lock_release(&l, S("q"), S("R2")));
    CU_ASSERT(w4.calls == 0);
    CU_ASSERT(fl_lock_release(&l, S("q"), S("R3")));
    CU_ASSERT(w4.ok && late.calls == 0);
    CU_ASSERT(fl_lock_release(&l, S("q"), S("W4")));
    CU_ASSERT(late.ok);
    CU_ASSERT(w1.order < r2.order && r3.order < w4.order && w4.order < late.order);
    CU_ASSERT_EQUAL(l.nwaiters, 0);
    fl_locks_destroy(&l);
    fl_loop_free(loop);
}

/* ttl expiry hands the lock to the next waiter; UpdateTTL moves the deadline; a waiter whose
 * wait ends is answered false and lets shared waiters behind it through. */
static void t_lock_ttl_wait(void)
{
    fl_loop_t *loop = fl_loop_new(64);
    fl_locks_t l;
    fl_locks_init(&l, loop);
    t_waiter a = {.alive = true}, b = {.alive = true}, r = {.alive = true}, w = {.alive = true},
             r2 = {.alive = true};
    fl_lock_acquire(&l, S("t"), S("A"), true, 30000, 0, t_done, t_alive, &a); /* 30 ms */
    fl_lock_acquire(&l, S("t"), S("B"), true, 0, 1000000, t_done, t_alive, &b);
    t_run_ms(loop, 15);
    CU_ASSERT(b.calls == 0);
    t_run_ms(loop, 40);
    CU_ASSERT(b.calls == 1 && b.ok);
    CU_ASSERT(!fl_lock_exists(&l, S("t"), S("A")));
    CU_ASSERT(fl_lock_update_ttl(&l, S("t"), S("B"), 20000));
    CU_ASSERT(!fl_lock_update_ttl(&l, S("t"), S("A"), 20000));
    t_run_ms(loop, 40);
    CU_ASSERT(!fl_lock_exists(&l, S("t"), S("*")));
    CU_ASSERT_EQUAL(l.res.n, 0);
    /* reader holds; writer waits 20 ms; reader r2 queued behind it gets in when the writer
     * gives up */
    fl_lock_acquire(&l, S("u"), S("R"), false, 0, 0, t_done, t_alive, &r);
    fl_lock_acquire(&l, S("u"), S("W"), true, 0, 20000, t_done, t_alive, &w);
    fl_lock_acquire(&l, S("u"), S("R2"), false, 0, 1000000, t_done, t_alive, &r2);
    CU_ASSERT(r.ok && w.calls == 0 && r2.calls == 0);
    t_run_ms(loop, 40);
    CU_ASSERT(w.calls == 1 && !w.ok);
    CU_ASSERT(r2.calls == 1 && r2.ok);
    fl_locks_destroy(&l);
    fl_loop_free(loop);
}

/* The sweep drops waiters of clients that went away without waiting for their turn. */
static void t_lock_sweep(void)
{
    fl_loop_t *loop = fl_loop_new(64);
    fl_locks_t l;
    fl_locks_init(&l, loop);
    t_waiter a = {.alive = true}, g = {.alive = true};
    fl_lock_acquire(&l, S("x"), S("A"), true, 0, 0, t_done, t_alive, &a);
    fl_lock_acquire(&l, S("x"), S("G"), true, 0, 60000000, t_done, t_alive, &g);
    g.alive = false;
    t_run_ms(loop, LK_SWEEP_MS + 100);
    CU_ASSERT(g.calls == 1 && !g.ok);
    CU_ASSERT_EQUAL(l.nwaiters, 0);
    CU_ASSERT_EQUAL(l.dl.n, 1); /* only A's ttl left */
    fl_locks_destroy(&l);
    fl_loop_free(loop);
}

static const fl_test_t tests[] = {
    {"hmap grows and shrinks", t_hmap_grow_shrink},
    {"rfc3339", t_rfc3339},
    {"kv memory basics", t_kvmem_basic},
    {"kv memory churn frees everything", t_kvmem_churn},
    {"kv memory timer", t_kvmem_timer},
    {"lock basics", t_lock_basic},
    {"lock queue order", t_lock_queue},
    {"lock ttl and wait", t_lock_ttl_wait},
    {"lock sweep of gone waiters", t_lock_sweep},
    {NULL, NULL},
};

FL_TEST_MAIN("kv", tests)

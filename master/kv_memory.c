/* See kv_memory.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_memory.h"

#define KVM_NOHEAP SIZE_MAX

int64_t fl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fl_kvmem_init(fl_kvmem_t *s, fl_loop_t *loop)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->now = fl_wall_ms;
}

/* ---- the expiry heap ---- */

static bool kvm_less(const fl_kv_entry_t *a, const fl_kv_entry_t *b)
{
    return a->expire_ms < b->expire_ms;
}

static void kvm_heap_set(fl_kvmem_t *s, size_t i, fl_kv_entry_t *e)
{
    s->heap[i] = e;
    e->heap_idx = i;
}

static void kvm_sift_up(fl_kvmem_t *s, size_t i)
{
    fl_kv_entry_t *e = s->heap[i];
    while (i > 0 && kvm_less(e, s->heap[(i - 1) / 2])) {
        kvm_heap_set(s, i, s->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    kvm_heap_set(s, i, e);
}

static void kvm_sift_down(fl_kvmem_t *s, size_t i)
{
    fl_kv_entry_t *e = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && kvm_less(s->heap[c + 1], s->heap[c]))
            c++;
        if (!kvm_less(s->heap[c], e))
            break;
        kvm_heap_set(s, i, s->heap[c]);
        i = c;
    }
    kvm_heap_set(s, i, e);
}

static int kvm_heap_push(fl_kvmem_t *s, fl_kv_entry_t *e)
{
    if (s->nheap == s->capheap) {
        size_t cap = s->capheap ? s->capheap * 2 : 64;
        fl_kv_entry_t **h = realloc(s->heap, cap * sizeof(*h));
        if (!h)
            return -1;
        s->heap = h;
        s->capheap = cap;
    }
    kvm_heap_set(s, s->nheap++, e);
    kvm_sift_up(s, e->heap_idx);
    return 0;
}

static void kvm_heap_remove(fl_kvmem_t *s, fl_kv_entry_t *e)
{
    size_t i = e->heap_idx;
    if (i == KVM_NOHEAP)
        return;
    e->heap_idx = KVM_NOHEAP;
    fl_kv_entry_t *last = s->heap[--s->nheap];
    if (i < s->nheap) {
        kvm_heap_set(s, i, last);
        kvm_sift_up(s, i);
        kvm_sift_down(s, last->heap_idx);
    }
    /* give memory back after a burst of TTL keys */
    if (s->capheap > 64 && s->nheap < s->capheap / 8) {
        fl_kv_entry_t **h = realloc(s->heap, s->capheap / 4 * sizeof(*h));
        if (h) {
            s->heap = h;
            s->capheap /= 4;
        }
    }
}

/* ---- the timer: armed for the earliest deadline ---- */

static void kvm_rearm(fl_kvmem_t *s);

static void kvm_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_kvmem_t *s = data;
    s->timer = 0;
    fl_kvmem_expire_due(s, s->now());
    kvm_rearm(s);
}

static void kvm_rearm(fl_kvmem_t *s)
{
    if (!s->loop)
        return;
    int64_t want = s->nheap ? s->heap[0]->expire_ms : 0;
    if (s->timer && want == s->timer_for)
        return;
    if (s->timer)
        fl_timer_del(s->loop, s->timer);
    s->timer = 0;
    if (!want)
        return;
    int64_t delay = want - s->now();
    /* a wall-clock step would leave a far deadline stale: check at least once a minute */
    delay = delay < 0 ? 0 : delay > 60000 ? 60000 : delay;
    s->timer = fl_timer_add(s->loop, delay, kvm_fire, s);
    s->timer_for = want;
}

/* ---- entries ---- */

static void kvm_free_entry(fl_kvmem_t *s, fl_kv_entry_t *e)
{
    kvm_heap_remove(s, e);
    s->bytes -= e->h.klen + e->vlen + e->tlen;
    free(e);
}

static void kvm_unlink(fl_kvmem_t *s, fl_kv_entry_t *e)
{
    fl_hmap_del(&s->map, &e->h);
    kvm_free_entry(s, e);
}

static fl_kv_entry_t *kvm_find(fl_kvmem_t *s, fl_slice_t key)
{
    fl_hnode_t *n = fl_hmap_get(&s->map, key.base, key.len);
    if (!n)
        return NULL;
    fl_kv_entry_t *e = (fl_kv_entry_t *)n;
    if (e->expire_ms && e->expire_ms <= s->now()) {
        /* due but the timer has not run yet: it is gone already */
        kvm_unlink(s, e);
        kvm_rearm(s);
        return NULL;
    }
    return e;
}

int fl_kvmem_set(fl_kvmem_t *s, fl_slice_t key, fl_slice_t value, int64_t expire_ms,
                 fl_slice_t timeout)
{
    if (expire_ms && expire_ms <= s->now()) {
        expire_ms = 0; /* upstream stores a past deadline as "no TTL" */
        timeout = FL_SLICE_NULL;
    }
    if (!expire_ms)
        timeout = FL_SLICE_NULL;
    fl_kv_entry_t *e = malloc(sizeof(*e) + key.len + value.len + timeout.len);
    if (!e)
        return -1;
    memcpy(e->data, key.base, key.len);
    if (value.len)
        memcpy(e->data + key.len, value.base, value.len);
    if (timeout.len)
        memcpy(e->data + key.len + value.len, timeout.base, timeout.len);
    e->h = (fl_hnode_t){.key = e->data, .klen = key.len};
    e->expire_ms = expire_ms;
    e->heap_idx = KVM_NOHEAP;
    e->vlen = value.len;
    e->tlen = timeout.len;
    if (expire_ms && kvm_heap_push(s, e) < 0) {
        free(e);
        return -1;
    }
    fl_hnode_t *old = fl_hmap_get(&s->map, key.base, key.len);
    if (old)
        kvm_unlink(s, (fl_kv_entry_t *)old);
    if (fl_hmap_put(&s->map, &e->h) < 0) {
        kvm_heap_remove(s, e);
        free(e);
        kvm_rearm(s);
        return -1;
    }
    s->bytes += key.len + value.len + timeout.len;
    kvm_rearm(s);
    return 0;
}

const fl_kv_entry_t *fl_kvmem_get(fl_kvmem_t *s, fl_slice_t key)
{
    return kvm_find(s, key);
}

bool fl_kvmem_del(fl_kvmem_t *s, fl_slice_t key)
{
    fl_kv_entry_t *e = kvm_find(s, key);
    if (!e)
        return false;
    kvm_unlink(s, e);
    kvm_rearm(s);
    return true;
}

bool fl_kvmem_expire(fl_kvmem_t *s, fl_slice_t key, int64_t expire_ms, fl_slice_t timeout)
{
    fl_kv_entry_t *e = kvm_find(s, key);
    if (!e)
        return false;
    if (expire_ms <= s->now()) {
        kvm_unlink(s, e);
        kvm_rearm(s);
        return true;
    }
    /* the timeout text changes size: a fresh entry with the same key and value */
    return fl_kvmem_set(s, key, fl_kv_value(e), expire_ms, timeout) == 0;
}

static void kvm_clear_one(fl_hnode_t *n, void *arg)
{
    kvm_free_entry(arg, (fl_kv_entry_t *)n);
}

void fl_kvmem_clear(fl_kvmem_t *s)
{
    fl_hmap_clear(&s->map, kvm_clear_one, s);
    kvm_rearm(s);
}

size_t fl_kvmem_expire_due(fl_kvmem_t *s, int64_t now)
{
    size_t n = 0;
    while (s->nheap && s->heap[0]->expire_ms <= now) {
        kvm_unlink(s, s->heap[0]);
        n++;
    }
    return n;
}

void fl_kvmem_destroy(fl_kvmem_t *s)
{
    fl_kvmem_clear(s);
    if (s->timer)
        fl_timer_del(s->loop, s->timer);
    s->timer = 0;
    fl_hmap_free(&s->map);
    free(s->heap);
    s->heap = NULL;
    s->nheap = s->capheap = 0;
}

/* ---- RFC 3339 ---- */

static int kvm_digits(const char *p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

int fl_rfc3339_ms(fl_slice_t s, int64_t *ms)
{
    const char *p = s.base, *end = s.base + s.len;
    /* YYYY-MM-DDTHH:MM:SS */
    if (s.len < 20 || p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != 't') ||
        p[13] != ':' || p[16] != ':')
        return -1;
    int Y = kvm_digits(p, 4), M = kvm_digits(p + 5, 2), D = kvm_digits(p + 8, 2);
    int h = kvm_digits(p + 11, 2), mi = kvm_digits(p + 14, 2), sec = kvm_digits(p + 17, 2);
    if (Y < 0 || M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        sec < 0 || sec > 60)
        return -1;
    p += 19;
    int frac_ms = 0;
    if (p < end && *p == '.') {
        int digits = 0;
        for (p++; p < end && *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        if (!digits)
            return -1;
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int off = 0;
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (end - p == 6 && (*p == '+' || *p == '-') && p[3] == ':') {
        int oh = kvm_digits(p + 1, 2), om = kvm_digits(p + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return -1;
        off = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (p != end)
        return -1;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm);
    *ms = (t - (int64_t)off * 60) * 1000 + frac_ms;
    return 0;
}

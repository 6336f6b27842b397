/* The kv `memory` driver's store: a hash table of entries plus a min-heap of their expiry times
 * driven by one timer of the master's loop (not a goroutine or timer per key, as upstream's).
 * An expired key is freed when the timer fires (and never returned in between), and the table
 * shrinks as it empties, so memory stays flat under set-with-TTL churn.
 *
 * Times are wall-clock Unix milliseconds, because PHP sends absolute RFC 3339 deadlines. */
#ifndef FL_KV_MEMORY_H
#define FL_KV_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

#include "ev.h"
#include "fl.h"
#include "hmap.h"

typedef struct fl_kv_entry {
    fl_hnode_t h;      /* key in data[0 .. klen) */
    int64_t expire_ms; /* 0 = no TTL */
    size_t heap_idx;   /* position in the expiry heap; SIZE_MAX when none */
    size_t vlen;
    size_t tlen; /* the timeout text as PHP sent it, returned by kv.TTL */
    char data[]; /* key | value | timeout */
} fl_kv_entry_t;

static inline fl_slice_t fl_kv_value(const fl_kv_entry_t *e)
{
    return fl_slice(e->data + e->h.klen, e->vlen);
}
static inline fl_slice_t fl_kv_timeout(const fl_kv_entry_t *e)
{
    return fl_slice(e->data + e->h.klen + e->vlen, e->tlen);
}

typedef struct fl_kvmem {
    fl_loop_t *loop; /* NULL: no timer (tests call fl_kvmem_expire_due) */
    fl_hmap_t map;
    fl_kv_entry_t **heap;
    size_t nheap, capheap;
    fl_timer_id timer;
    int64_t timer_for;    /* the deadline the timer is armed for */
    int64_t (*now)(void); /* wall-clock ms; replaceable in tests */
    size_t bytes;         /* key + value + timeout bytes held */
} fl_kvmem_t;

int64_t fl_wall_ms(void);
void fl_kvmem_init(fl_kvmem_t *s, fl_loop_t *loop);
void fl_kvmem_destroy(fl_kvmem_t *s);
/* Stores a copy; expire_ms 0 or already past = no TTL (upstream's memory driver). 0 or -1 (OOM,
 * the old value kept). */
int fl_kvmem_set(fl_kvmem_t *s, fl_slice_t key, fl_slice_t value, int64_t expire_ms,
                 fl_slice_t timeout);
/* NULL when absent or expired. */
const fl_kv_entry_t *fl_kvmem_get(fl_kvmem_t *s, fl_slice_t key);
bool fl_kvmem_del(fl_kvmem_t *s, fl_slice_t key);
/* A new deadline for an existing key (a past one deletes it). false when the key is absent. */
bool fl_kvmem_expire(fl_kvmem_t *s, fl_slice_t key, int64_t expire_ms, fl_slice_t timeout);
void fl_kvmem_clear(fl_kvmem_t *s);
/* Frees every entry whose deadline is <= now; returns how many. */
size_t fl_kvmem_expire_due(fl_kvmem_t *s, int64_t now);
static inline size_t fl_kvmem_count(const fl_kvmem_t *s)
{
    return s->map.n;
}

/* RFC 3339 ("2026-08-22T10:00:00+00:00", "...Z", fractional seconds) to Unix ms. 0 or -1. */
int fl_rfc3339_ms(fl_slice_t s, int64_t *ms);

#endif

/* See hmap.h. Chained buckets, power-of-two sizes, a per-process random seed in the hash so
 * that keys chosen by a client cannot be aimed at one bucket cheaply. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hmap.h"

#define HMAP_MIN 16

static uint64_t hmap_seed;

uint64_t fl_hash(const void *p, size_t n)
{
    if (!hmap_seed) {
        if (getrandom(&hmap_seed, sizeof(hmap_seed), GRND_NONBLOCK) != sizeof(hmap_seed))
            hmap_seed = (uint64_t)(uintptr_t)&hmap_seed ^ 0x9e3779b97f4a7c15ull;
        hmap_seed |= 1;
    }
    /* FNV-1a over the seed, then a murmur finalizer to spread the low bits. */
    uint64_t h = 0xcbf29ce484222325ull ^ hmap_seed;
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static int hmap_resize(fl_hmap_t *m, size_t nb)
{
    fl_hnode_t **b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nb; i++) {
        for (fl_hnode_t *n = m->b[i], *next; n; n = next) {
            next = n->next;
            size_t j = n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

fl_hnode_t *fl_hmap_get(const fl_hmap_t *m, const char *key, size_t klen)
{
    if (!m->n)
        return NULL;
    uint64_t h = fl_hash(key, klen);
    for (fl_hnode_t *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0)
            return n;
    return NULL;
}

int fl_hmap_put(fl_hmap_t *m, fl_hnode_t *node)
{
    if (m->n + 1 > m->nb && hmap_resize(m, m->nb ? m->nb * 2 : HMAP_MIN) < 0 && !m->nb)
        return -1; /* a failed grow with buckets present only makes chains longer */
    node->hash = fl_hash(node->key, node->klen);
    size_t j = node->hash & (m->nb - 1);
    node->next = m->b[j];
    m->b[j] = node;
    m->n++;
    return 0;
}

void fl_hmap_del(fl_hmap_t *m, fl_hnode_t *node)
{
    for (fl_hnode_t **pp = &m->b[node->hash & (m->nb - 1)]; *pp; pp = &(*pp)->next) {
        if (*pp == node) {
            *pp = node->next;
            m->n--;
            break;
        }
    }
    node->next = NULL;
    if (m->nb > HMAP_MIN && m->n < m->nb / 8)
        hmap_resize(m, m->nb / 4 < HMAP_MIN ? HMAP_MIN : m->nb / 4); /* failure: keep the size */
}

void fl_hmap_clear(fl_hmap_t *m, void (*fn)(fl_hnode_t *, void *), void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (fl_hnode_t *n = m->b[i], *next; n; n = next) {
            next = n->next;
            n->next = NULL;
            if (fn)
                fn(n, arg);
        }
        m->b[i] = NULL;
    }
    m->n = 0;
    if (m->nb > HMAP_MIN) {
        free(m->b);
        m->b = NULL;
        m->nb = 0;
    }
}

void fl_hmap_free(fl_hmap_t *m)
{
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}

fl_hnode_t *fl_hmap_first(const fl_hmap_t *m, size_t *i)
{
    for (*i = 0; *i < m->nb; (*i)++)
        if (m->b[*i])
            return m->b[*i];
    return NULL;
}

fl_hnode_t *fl_hmap_next(const fl_hmap_t *m, fl_hnode_t *n, size_t *i)
{
    if (n->next)
        return n->next;
    for ((*i)++; *i < m->nb; (*i)++)
        if (m->b[*i])
            return m->b[*i];
    return NULL;
}

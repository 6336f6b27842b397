/* A small intrusive hash table keyed by byte strings, for the master's services (kv, locks,
 * metrics). The caller embeds an fl_hnode_t in its entry and owns the key bytes; the table only
 * links nodes. It grows and shrinks with its content, so churn leaves memory flat. */
#ifndef FL_HMAP_H
#define FL_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct fl_hnode {
    struct fl_hnode *next;
    uint64_t hash;
    const char *key; /* owned by the entry */
    size_t klen;
} fl_hnode_t;

typedef struct {
    fl_hnode_t **b;
    size_t nb, n;
} fl_hmap_t;

uint64_t fl_hash(const void *p, size_t n);
fl_hnode_t *fl_hmap_get(const fl_hmap_t *m, const char *key, size_t klen);
/* Links node (key and klen set, not present yet). 0, or -1 when memory runs out. */
int fl_hmap_put(fl_hmap_t *m, fl_hnode_t *node);
void fl_hmap_del(fl_hmap_t *m, fl_hnode_t *node);
/* Unlinks every node, calling fn on each (it may free it). */
void fl_hmap_clear(fl_hmap_t *m, void (*fn)(fl_hnode_t *, void *), void *arg);
void fl_hmap_free(fl_hmap_t *m);

/* Iteration: for (fl_hnode_t *n = fl_hmap_first(m, &i); n; n = fl_hmap_next(m, n, &i)). The
 * current node must not be removed while iterating. */
fl_hnode_t *fl_hmap_first(const fl_hmap_t *m, size_t *i);
fl_hnode_t *fl_hmap_next(const fl_hmap_t *m, fl_hnode_t *n, size_t *i);

#endif

/* Generic configuration tree: YAML → nodes, env interpolation, -o overrides, weak typed getters.
 * See conftree.h. The RoadRunner rules mirrored here come from the spec §1 (config plugin +
 * viper + mapstructure with WeaklyTypedInput). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include <yaml.h>

#include "fl.h"
#include "conftree.h"

/* Bounds that keep hostile or broken input from exhausting the stack or memory: nesting depth
 * (recursion in the loader and in free/copy), total nodes (alias "billion laughs"), file size. */
#define CTREE_MAX_DEPTH 128
#define CTREE_MAX_NODES (1u << 18)
#define CTREE_MAX_FILE (16u << 20)

/* ------------------------------------------------------------------------------------------- */
/* errors                                                                                        */

int fl_conf_error(fl_conf_err_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(fl_conf_err_t *err)
{
    return fl_conf_error(err, "out of memory while loading the configuration");
}

/* ------------------------------------------------------------------------------------------- */
/* nodes                                                                                         */

static fl_cnode_t *cnode_new(fl_cnode_type_t type, const char *file, const char *origin)
{
    fl_cnode_t *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->type = type;
    n->file = file;
    n->origin = origin;
    return n;
}

static void cnode_free(fl_cnode_t *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        cnode_free(n->items[i]);
    free(n->items);
    free(n->key);
    free(n->value);
    free(n);
}

static int cnode_push(fl_cnode_t *parent, fl_cnode_t *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        fl_cnode_t **p = realloc(parent->items, cap * sizeof(*p));
        if (!p)
            return -1;
        parent->items = p;
        parent->cap = cap;
    }
    parent->items[parent->n++] = child;
    child->parent = parent;
    return 0;
}

/* Deep copy for aliases and merge keys. *budget bounds the total node count, so that nested
 * aliases cannot blow up exponentially. */
static fl_cnode_t *cnode_copy(const fl_cnode_t *n, size_t *budget)
{
    if (*budget == 0)
        return NULL;
    (*budget)--;
    fl_cnode_t *c = cnode_new(n->type, n->file, n->origin);
    if (!c)
        return NULL;
    c->kind = n->kind;
    c->quoted = n->quoted;
    c->line = n->line;
    c->col = n->col;
    if ((n->key && !(c->key = strdup(n->key))) || (n->value && !(c->value = strdup(n->value))))
        goto fail;
    for (size_t i = 0; i < n->n; i++) {
        fl_cnode_t *item = cnode_copy(n->items[i], budget);
        if (!item || cnode_push(c, item) < 0) {
            cnode_free(item);
            goto fail;
        }
    }
    return c;
fail:
    cnode_free(c);
    return NULL;
}

static size_t cnode_index(const fl_cnode_t *n)
{
    for (size_t i = 0; n->parent && i < n->parent->n; i++)
        if (n->parent->items[i] == n)
            return i;
    return 0;
}

static fl_cnode_t *child_n(const fl_cnode_t *map, const char *key, size_t len)
{
    if (!map || map->type != FL_CNODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++) {
        const char *k = map->items[i]->key;
        if (k && strlen(k) == len && strncasecmp(k, key, len) == 0)
            return map->items[i];
    }
    return NULL;
}

fl_cnode_t *fl_cnode_child(const fl_cnode_t *map, const char *key)
{
    return child_n(map, key, strlen(key));
}

static void str_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Keep a string for the lifetime of the tree (file names and -o flags nodes point at). */
static const char *ctree_keep(fl_ctree_t *t, const char *s)
{
    char **p = realloc(t->strs, (t->nstrs + 1) * sizeof(*p));
    if (!p)
        return NULL;
    t->strs = p;
    if (!(p[t->nstrs] = strdup(s)))
        return NULL;
    return p[t->nstrs++];
}

void fl_ctree_free(fl_ctree_t *t)
{
    cnode_free(t->root);
    for (size_t i = 0; i < t->nstrs; i++)
        free(t->strs[i]);
    free(t->strs);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------------------------------- */
/* scalar typing (go-yaml v3 resolution of plain scalars)                                        */

static bool is_one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

/* Digits of a base with '_' separators allowed, at least one digit. */
static bool digits_ok(const char *s, int base)
{
    bool any = false;
    for (; *s; s++) {
        int c = tolower((unsigned char)*s);
        int d = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c == '_' ? -2 : -1);
        if (d == -2 && any)
            continue;
        if (d < 0 || d >= base)
            return false;
        any = true;
    }
    return any;
}

static int int_base(const char **s)
{
    const char *p = *s;
    if (p[0] == '0' && p[1] && strchr("xXoObB", p[1])) {
        *s = p + 2;
        return strchr("xX", p[1]) ? 16 : strchr("oO", p[1]) ? 8 : 2;
    }
    return 10;
}

static bool looks_int(const char *s)
{
    if (*s == '-' || *s == '+')
        s++;
    int base = int_base(&s);
    return digits_ok(s, base);
}

static bool looks_float(const char *s)
{
    static const char *const special[] = {".inf",  ".Inf",  ".INF",  "-.inf", "-.Inf",
                                          "-.INF", "+.inf", "+.Inf", "+.INF", ".nan",
                                          ".NaN",  ".NAN",  NULL};
    if (is_one_of(s, special))
        return true;
    if (*s == '-' || *s == '+')
        s++;
    size_t whole = strspn(s, "0123456789");
    s += whole;
    size_t frac = 0;
    if (*s == '.') {
        frac = strspn(s + 1, "0123456789");
        s += 1 + frac;
    }
    if (whole + frac == 0)
        return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+')
            s++;
        size_t exp = strspn(s, "0123456789");
        if (exp == 0)
            return false;
        s += exp;
    }
    return *s == '\0';
}

static fl_cscalar_kind_t resolve_plain(const char *s)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const bools[] = {"true", "True", "TRUE", "false", "False", "FALSE", NULL};
    if (is_one_of(s, nulls))
        return FL_CSCALAR_NULL;
    if (is_one_of(s, bools))
        return FL_CSCALAR_BOOL;
    if (looks_int(s))
        return FL_CSCALAR_INT;
    if (looks_float(s))
        return FL_CSCALAR_FLOAT;
    return FL_CSCALAR_STR;
}

static fl_cscalar_kind_t scalar_kind(const yaml_event_t *ev, const char *value)
{
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag && strcmp(tag, "!") != 0) {
        /* An explicit tag decides: `!!str 3` is the string "3". */
        if (strcmp(tag, YAML_INT_TAG) == 0)
            return FL_CSCALAR_INT;
        if (strcmp(tag, YAML_FLOAT_TAG) == 0)
            return FL_CSCALAR_FLOAT;
        if (strcmp(tag, YAML_BOOL_TAG) == 0)
            return FL_CSCALAR_BOOL;
        if (strcmp(tag, YAML_NULL_TAG) == 0)
            return FL_CSCALAR_NULL;
        if (strcmp(tag, YAML_STR_TAG) == 0 || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            return FL_CSCALAR_STR;
        return resolve_plain(value);
    }
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && ev->data.scalar.plain_implicit)
        return resolve_plain(value);
    return FL_CSCALAR_STR;
}

/* ------------------------------------------------------------------------------------------- */
/* YAML loading (libyaml event API: it keeps tags and the plain/quoted distinction)             */

typedef struct {
    char *name;
    fl_cnode_t *node;
} anchor_t;

typedef struct {
    yaml_parser_t p;
    const char *file;
    const char *buf;
    size_t len;
    fl_conf_err_t *err;
    anchor_t *anchors;
    size_t nanchors;
    size_t budget;
    /* Key nodes and merge sources: not part of the tree but possibly anchored, so an alias may
     * still copy them later. They are freed when loading ends. */
    fl_cnode_t *limbo;
} yload_t;

static int yl_fail(yload_t *L, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int yl_fail(yload_t *L, size_t line, size_t col, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (L->file)
        return fl_conf_error(L->err, "%s:%zu:%zu: %s", L->file, line, col, what);
    return fl_conf_error(L->err, "%zu:%zu: %s", line, col, what);
}

/* The reader reports a byte offset only (bad UTF-8, NUL); turn it into a line and column. */
static void offset_to_pos(const yload_t *L, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < L->len; i++) {
        if (L->buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int yl_syntax_error(yload_t *L)
{
    const yaml_parser_t *p = &L->p;
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return oom(L->err);
    if (p->error == YAML_READER_ERROR) {
        size_t line, col;
        offset_to_pos(L, p->problem_offset, &line, &col);
        if (p->problem_value != -1)
            return yl_fail(L, line, col, "%s (byte 0x%02x)", problem, (unsigned)p->problem_value);
        return yl_fail(L, line, col, "%s", problem);
    }
    if (p->context)
        return yl_fail(L, p->problem_mark.line + 1, p->problem_mark.column + 1,
                       "%s (%s at line %zu)", problem, p->context, p->context_mark.line + 1);
    return yl_fail(L, p->problem_mark.line + 1, p->problem_mark.column + 1, "%s", problem);
}

static int yl_next(yload_t *L, yaml_event_t *ev)
{
    if (yaml_parser_parse(&L->p, ev))
        return 0;
    return yl_syntax_error(L);
}

static fl_cnode_t *yl_new(yload_t *L, fl_cnode_type_t type, yaml_mark_t mark)
{
    if (L->budget == 0) {
        yl_fail(L, mark.line + 1, mark.column + 1, "too many YAML nodes");
        return NULL;
    }
    L->budget--;
    fl_cnode_t *n = cnode_new(type, L->file, NULL);
    if (!n) {
        oom(L->err);
        return NULL;
    }
    n->line = (unsigned)mark.line + 1;
    n->col = (unsigned)mark.column + 1;
    return n;
}

static fl_cnode_t *yl_scalar(yload_t *L, const yaml_event_t *ev)
{
    fl_cnode_t *n = yl_new(L, FL_CNODE_SCALAR, ev->start_mark);
    if (!n)
        return NULL;
    size_t len = ev->data.scalar.length;
    if (!(n->value = malloc(len + 1))) {
        cnode_free(n);
        oom(L->err);
        return NULL;
    }
    memcpy(n->value, ev->data.scalar.value, len);
    n->value[len] = '\0';
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    n->kind = scalar_kind(ev, n->value);
    return n;
}

static fl_cnode_t *yl_alias(yload_t *L, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    yaml_mark_t m = ev->start_mark;
    /* Search backwards: a redefined anchor refers to its latest definition. */
    for (size_t i = L->nanchors; i-- > 0;) {
        if (strcmp(L->anchors[i].name, name) != 0)
            continue;
        fl_cnode_t *c = cnode_copy(L->anchors[i].node, &L->budget);
        if (!c) {
            yl_fail(L, m.line + 1, m.column + 1, "alias *%s expands to too many nodes", name);
            return NULL;
        }
        free(c->key); /* the copy gets the key of the place it is used at */
        c->key = NULL;
        return c;
    }
    yl_fail(L, m.line + 1, m.column + 1, "unknown anchor '%s' referenced", name);
    return NULL;
}

static int yl_register_anchor(yload_t *L, char *name, fl_cnode_t *node)
{
    anchor_t *a = realloc(L->anchors, (L->nanchors + 1) * sizeof(*a));
    if (!a) {
        free(name);
        return oom(L->err);
    }
    L->anchors = a;
    a[L->nanchors++] = (anchor_t){name, node};
    return 0;
}

static const yaml_char_t *event_anchor(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT:
        return ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT:
        return ev->data.mapping_start.anchor;
    default:
        return NULL;
    }
}

static fl_cnode_t *yl_node(yload_t *L, yaml_event_t *ev, unsigned depth);

static fl_cnode_t *yl_seq(yload_t *L, yaml_mark_t mark, unsigned depth)
{
    fl_cnode_t *seq = yl_new(L, FL_CNODE_SEQ, mark);
    if (!seq)
        return NULL;
    for (;;) {
        yaml_event_t ev;
        if (yl_next(L, &ev) < 0)
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return seq;
        }
        fl_cnode_t *item = yl_node(L, &ev, depth + 1);
        if (!item)
            break;
        if (cnode_push(seq, item) < 0) {
            cnode_free(item);
            oom(L->err);
            break;
        }
    }
    cnode_free(seq);
    return NULL;
}

static int yl_limbo(yload_t *L, fl_cnode_t *n)
{
    if (cnode_push(L->limbo, n) == 0)
        return 0;
    cnode_free(n);
    return oom(L->err);
}

/* Merge key `<<: *base` (or a list of them): copy in the keys the map does not set itself.
 * Earlier sources win over later ones, explicit keys over all (go-yaml semantics). */
static int yl_merge_one(yload_t *L, fl_cnode_t *map, const fl_cnode_t *src)
{
    if (src->type != FL_CNODE_MAP)
        return yl_fail(L, src->line, src->col,
                       "map merge requires map or sequence of maps as the value");
    for (size_t i = 0; i < src->n; i++) {
        if (fl_cnode_child(map, src->items[i]->key))
            continue;
        fl_cnode_t *c = cnode_copy(src->items[i], &L->budget);
        if (!c)
            return yl_fail(L, src->line, src->col, "merge expands to too many nodes");
        if (cnode_push(map, c) < 0) {
            cnode_free(c);
            return oom(L->err);
        }
    }
    return 0;
}

static int yl_merge(yload_t *L, fl_cnode_t *map, const fl_cnode_t *merges)
{
    for (size_t i = 0; i < merges->n; i++) {
        const fl_cnode_t *m = merges->items[i];
        if (m->type != FL_CNODE_SEQ) {
            if (yl_merge_one(L, map, m) < 0)
                return -1;
            continue;
        }
        for (size_t j = 0; j < m->n; j++)
            if (yl_merge_one(L, map, m->items[j]) < 0)
                return -1;
    }
    return 0;
}

/* Adds key: value to map. Takes ownership of both nodes in every case. */
static int yl_map_entry(yload_t *L, fl_cnode_t *map, fl_cnode_t *merges, fl_cnode_t *key,
                        fl_cnode_t *val)
{
    if (yl_limbo(L, key) < 0) {
        cnode_free(val);
        return -1;
    }
    if (key->type != FL_CNODE_SCALAR) {
        cnode_free(val);
        return yl_fail(L, key->line, key->col, "a mapping key must be a plain value");
    }
    if (!key->quoted && key->kind == FL_CSCALAR_STR && strcmp(key->value, "<<") == 0) {
        if (cnode_push(merges, val) == 0)
            return 0;
        cnode_free(val);
        return oom(L->err);
    }
    const fl_cnode_t *dup = fl_cnode_child(map, key->value);
    if (dup) {
        cnode_free(val);
        return yl_fail(L, key->line, key->col, "mapping key \"%s\" already defined at line %u",
                       key->value, dup->line);
    }
    /* viper lower-cases every key: `HTTP:` and `http:` are the same section. */
    if (!(val->key = strdup(key->value)) || cnode_push(map, val) < 0) {
        cnode_free(val);
        return oom(L->err);
    }
    str_lower(val->key);
    return 0;
}

static fl_cnode_t *yl_map(yload_t *L, yaml_mark_t mark, unsigned depth)
{
    fl_cnode_t *map = yl_new(L, FL_CNODE_MAP, mark);
    if (!map)
        return NULL;
    fl_cnode_t *merges = cnode_new(FL_CNODE_SEQ, NULL, NULL);
    if (!merges) {
        oom(L->err);
        goto fail;
    }
    for (;;) {
        yaml_event_t ev;
        if (yl_next(L, &ev) < 0)
            goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        fl_cnode_t *key = yl_node(L, &ev, depth + 1);
        if (!key)
            goto fail;
        fl_cnode_t *val = NULL;
        if (yl_next(L, &ev) < 0 || !(val = yl_node(L, &ev, depth + 1))) {
            cnode_free(key);
            goto fail;
        }
        if (yl_map_entry(L, map, merges, key, val) < 0)
            goto fail;
    }
    if (yl_merge(L, map, merges) < 0)
        goto fail;
    /* Merge sources may be anchored themselves: park them instead of freeing. */
    if (merges->n == 0)
        cnode_free(merges);
    else if (yl_limbo(L, merges) < 0)
        goto fail_map;
    return map;
fail:
    cnode_free(merges);
fail_map:
    cnode_free(map);
    return NULL;
}

/* Builds the node that starts with *ev (consuming the events up to its end). ev is deleted. */
static fl_cnode_t *yl_node(yload_t *L, yaml_event_t *ev, unsigned depth)
{
    const yaml_char_t *a = event_anchor(ev);
    char *anchor = a ? strdup((const char *)a) : NULL;
    yaml_mark_t mark = ev->start_mark;
    yaml_event_type_t type = ev->type;
    fl_cnode_t *n = NULL;
    if (a && !anchor)
        oom(L->err);
    else if (depth > CTREE_MAX_DEPTH)
        yl_fail(L, mark.line + 1, mark.column + 1, "nesting is too deep");
    else if (type == YAML_SCALAR_EVENT)
        n = yl_scalar(L, ev);
    else if (type == YAML_ALIAS_EVENT)
        n = yl_alias(L, ev);
    yaml_event_delete(ev);
    bool failed = (a && !anchor) || depth > CTREE_MAX_DEPTH;
    if (!failed && type == YAML_SEQUENCE_START_EVENT)
        n = yl_seq(L, mark, depth);
    else if (!failed && type == YAML_MAPPING_START_EVENT)
        n = yl_map(L, mark, depth);
    else if (!failed && type != YAML_SCALAR_EVENT && type != YAML_ALIAS_EVENT)
        yl_fail(L, mark.line + 1, mark.column + 1, "unexpected YAML event");
    if (!n || !anchor) {
        free(anchor);
        return n;
    }
    if (yl_register_anchor(L, anchor, n) < 0) {
        cnode_free(n);
        return NULL;
    }
    return n;
}

/* The root of the first document; NULL root with 0 = no document at all. */
static int yl_document(yload_t *L, fl_cnode_t **root)
{
    yaml_event_t ev;
    *root = NULL;
    if (yl_next(L, &ev) < 0)
        return -1;
    yaml_event_delete(&ev); /* STREAM-START */
    if (yl_next(L, &ev) < 0)
        return -1;
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        yaml_event_delete(&ev); /* STREAM-END: an empty file */
        return 0;
    }
    yaml_event_delete(&ev);
    if (yl_next(L, &ev) < 0 || !(*root = yl_node(L, &ev, 0)))
        return -1;
    /* Read DOCUMENT-END so that junk after the root node is reported. Later documents are
     * ignored, as yaml.Unmarshal does. */
    if (yl_next(L, &ev) < 0)
        return -1;
    yaml_event_delete(&ev);
    return 0;
}

static int yl_root(yload_t *L, fl_cnode_t *node, fl_cnode_t **root)
{
    if (!node || (node->type == FL_CNODE_SCALAR && node->kind == FL_CSCALAR_NULL)) {
        cnode_free(node);
        yaml_mark_t m = {0, 0, 0};
        if (!(*root = yl_new(L, FL_CNODE_MAP, m)))
            return -1;
        (*root)->line = (*root)->col = 1;
        return 0;
    }
    if (node->type != FL_CNODE_MAP) {
        yl_fail(L, node->line, node->col, "the configuration must be a mapping of keys to values");
        cnode_free(node);
        return -1;
    }
    *root = node;
    return 0;
}

static void yl_cleanup(yload_t *L)
{
    yaml_parser_delete(&L->p);
    for (size_t i = 0; i < L->nanchors; i++)
        free(L->anchors[i].name);
    free(L->anchors);
    cnode_free(L->limbo);
}

static int ctree_init(fl_ctree_t *t, const char *name, fl_conf_err_t *err)
{
    memset(t, 0, sizeof(*t));
    if (name && !(t->file = ctree_keep(t, name))) {
        fl_ctree_free(t);
        return oom(err);
    }
    return 0;
}

int fl_ctree_load_string(fl_ctree_t *t, const char *name, const char *yaml, size_t len,
                         fl_conf_err_t *err)
{
    if (ctree_init(t, name, err) < 0)
        return -1;
    yload_t L = {.file = t->file, .buf = yaml, .len = len, .err = err, .budget = CTREE_MAX_NODES};
    if (!yaml_parser_initialize(&L.p) || !(L.limbo = cnode_new(FL_CNODE_SEQ, NULL, NULL))) {
        yl_cleanup(&L);
        fl_ctree_free(t);
        return oom(err);
    }
    yaml_parser_set_input_string(&L.p, (const unsigned char *)yaml, len);
    fl_cnode_t *node = NULL;
    int rc = yl_document(&L, &node);
    if (rc == 0)
        rc = yl_root(&L, node, &t->root);
    else
        cnode_free(node);
    yl_cleanup(&L);
    if (rc < 0)
        fl_ctree_free(t);
    return rc;
}

static int read_file(const char *path, char **data, size_t *len, fl_conf_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fl_conf_error(err, "%s: %s", path, strerror(errno));
    fl_buf_t b = {0};
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + n > CTREE_MAX_FILE) {
            rc = fl_conf_error(err, "%s: file is too large for a configuration", path);
            break;
        }
        if (fl_buf_append(&b, chunk, n) < 0) {
            rc = oom(err);
            break;
        }
    }
    if (rc == 0 && ferror(f))
        rc = fl_conf_error(err, "%s: %s", path, strerror(errno));
    fclose(f);
    if (rc < 0) {
        fl_buf_free(&b);
        return -1;
    }
    *data = b.data;
    *len = b.len;
    return 0;
}

int fl_ctree_load(fl_ctree_t *t, const char *path, fl_conf_err_t *err)
{
    if (!path)
        return fl_ctree_load_string(t, NULL, "", 0, err);
    char *data = NULL;
    size_t len = 0;
    if (read_file(path, &data, &len, err) < 0) {
        memset(t, 0, sizeof(*t));
        return -1;
    }
    int rc = fl_ctree_load_string(t, path, data ? data : "", len, err);
    free(data);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* environment interpolation (§1.2; Go's os.Expand with RoadRunner's ":-" default)              */

static bool shell_special(char c)
{
    return c && strchr("*#$@!?-0123456789", c) != NULL;
}

static bool shell_alnum(char c)
{
    return c == '_' || isalnum((unsigned char)c);
}

/* What follows a '$': sets the name (possibly empty) and how many bytes it spans (w). An empty
 * name with w > 0 is bad syntax to be eaten ("${}" or an unterminated "${"); w == 0 means a lone
 * '$' that stays literal. */
static void shell_name(const char *s, const char **name, size_t *nlen, size_t *w)
{
    *name = s;
    if (s[0] == '{') {
        if (s[1] && shell_special(s[1]) && s[2] == '}') {
            *name = s + 1;
            *nlen = 1;
            *w = 3;
            return;
        }
        const char *close = strchr(s + 1, '}');
        *name = s + 1;
        *nlen = close ? (size_t)(close - s - 1) : 0;
        *w = close ? (close == s + 1 ? 2 : *nlen + 2) : 1;
        return;
    }
    if (shell_special(s[0])) {
        *nlen = 1;
        *w = 1;
        return;
    }
    size_t i = 0;
    while (shell_alnum(s[i]))
        i++;
    *nlen = *w = i;
}

static int env_append(fl_buf_t *b, const char *name, size_t nlen, bool defaults)
{
    char *key = strndup(name, nlen);
    if (!key)
        return -1;
    const char *def = NULL;
    char *sep = defaults ? strstr(key, ":-") : NULL;
    if (sep) {
        /* ${NAME:-default}: the default also replaces an empty value. */
        *sep = '\0';
        def = sep + 2;
    }
    const char *v = getenv(key);
    if (def && (!v || !*v))
        v = def;
    int rc = v ? fl_buf_puts(b, v) : 0;
    free(key);
    return rc;
}

char *fl_env_expand(const char *s, bool defaults)
{
    fl_buf_t b = {0};
    int rc = 0;
    size_t i = 0;
    while (s[i] && rc == 0) {
        const char *dollar = strchr(s + i, '$');
        size_t plain = dollar ? (size_t)(dollar - (s + i)) : strlen(s + i);
        rc = fl_buf_append(&b, s + i, plain);
        i += plain;
        if (!dollar || rc < 0)
            break;
        const char *name;
        size_t nlen, w;
        if (s[i + 1] == '\0') {
            rc = fl_buf_append(&b, "$", 1); /* a trailing '$' is literal */
            i++;
            continue;
        }
        shell_name(s + i + 1, &name, &nlen, &w);
        if (nlen > 0)
            rc = env_append(&b, name, nlen, defaults);
        else if (w == 0)
            rc = fl_buf_append(&b, "$", 1);
        i += 1 + w;
    }
    if (rc < 0 || fl_buf_append(&b, "", 1) < 0) {
        fl_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int interpolate(fl_cnode_t *n, fl_conf_err_t *err)
{
    if (n->type == FL_CNODE_SCALAR) {
        if (n->kind != FL_CSCALAR_STR || !strchr(n->value, '$'))
            return 0;
        char *v = fl_env_expand(n->value, true);
        if (!v)
            return oom(err);
        free(n->value);
        n->value = v;
        return 0;
    }
    for (size_t i = 0; i < n->n; i++)
        if (interpolate(n->items[i], err) < 0)
            return -1;
    return 0;
}

int fl_ctree_interpolate(fl_ctree_t *t, fl_conf_err_t *err)
{
    return t->root ? interpolate(t->root, err) : 0;
}

/* ------------------------------------------------------------------------------------------- */
/* -o key=value (§1.3)                                                                           */

static char *trim_dup(const char *s, size_t len)
{
    while (len && strchr(" \n\t", *s)) {
        s++;
        len--;
    }
    while (len && strchr(" \n\t", s[len - 1]))
        len--;
    return strndup(s, len);
}

/* A value starting with a quote loses every leading and trailing quote of that kind, and
 * escaped quotes of that kind are unescaped (Go strings.Trim + ReplaceAll). */
static void unquote(char *v)
{
    char q = v[0];
    if (q != '"' && q != '\'' && q != '`')
        return;
    size_t start = strspn(v, (char[]){q, 0});
    size_t end = strlen(v);
    while (end > start && v[end - 1] == q)
        end--;
    size_t o = 0;
    for (size_t i = start; i < end; i++) {
        if (v[i] == '\\' && i + 1 < end && v[i + 1] == q)
            i++;
        v[o++] = v[i];
    }
    v[o] = '\0';
}

static int parse_flag(const char *flag, char **key, char **val, fl_conf_err_t *err)
{
    *key = *val = NULL;
    if (!strchr(flag, '='))
        return fl_conf_error(err, "-o %s: invalid flag (expected -o key=value)", flag);
    const char *p = flag + strspn(flag, " \"'`");
    const char *eq = strchr(p, '=');
    if (!(*key = trim_dup(p, (size_t)(eq - p))) || !(*val = trim_dup(eq + 1, strlen(eq + 1)))) {
        free(*key);
        *key = NULL;
        return oom(err);
    }
    const char *why = !**key   ? "key should not be empty"
                      : !**val ? "value should not be empty"
                               : NULL;
    if (why) {
        free(*key);
        free(*val);
        *key = *val = NULL;
        return fl_conf_error(err, "-o %s: invalid flag: %s", flag, why);
    }
    unquote(*val);
    str_lower(*key);
    return 0;
}

/* Puts n under map at key, replacing (and freeing) what was there, keeping its position. */
static int map_set(fl_cnode_t *map, const char *key, size_t klen, fl_cnode_t *n)
{
    if (!(n->key = strndup(key, klen)))
        return -1;
    fl_cnode_t *old = child_n(map, key, klen);
    if (!old)
        return cnode_push(map, n);
    map->items[cnode_index(old)] = n;
    n->parent = map;
    cnode_free(old);
    return 0;
}

/* Walks "a.b.c" from the root, creating (or replacing non-map) intermediate sections. */
static fl_cnode_t *override_parent(fl_cnode_t *root, const char *key, const char **leaf,
                                   const char *origin)
{
    fl_cnode_t *cur = root;
    const char *dot;
    while ((dot = strchr(key, '.')) != NULL) {
        fl_cnode_t *next = child_n(cur, key, (size_t)(dot - key));
        if (!next || next->type != FL_CNODE_MAP) {
            if (!(next = cnode_new(FL_CNODE_MAP, NULL, origin)))
                return NULL;
            if (map_set(cur, key, (size_t)(dot - key), next) < 0) {
                cnode_free(next);
                return NULL;
            }
        }
        cur = next;
        key = dot + 1;
    }
    *leaf = key;
    return cur;
}

static bool key_path_ok(const char *key)
{
    size_t depth = 0;
    for (const char *p = key;; p++) {
        if (*p == '.' || *p == '\0') {
            if (p == key || p[-1] == '.' || ++depth > CTREE_MAX_DEPTH)
                return false;
        }
        if (*p == '\0')
            return true;
    }
}

int fl_ctree_override(fl_ctree_t *t, const char *flag, fl_conf_err_t *err)
{
    char *key, *val;
    if (parse_flag(flag, &key, &val, err) < 0)
        return -1;
    int rc = -1;
    const char *origin, *leaf;
    fl_cnode_t *parent, *n = NULL;
    char *expanded = NULL;
    if (!key_path_ok(key)) {
        fl_conf_error(err, "-o %s: invalid flag: empty key segment", flag);
        goto out;
    }
    if (!t->root && !(t->root = cnode_new(FL_CNODE_MAP, t->file, NULL)))
        goto nomem;
    if (!(origin = ctree_keep(t, flag)) || !(expanded = fl_env_expand(val, true)) ||
        !(n = cnode_new(FL_CNODE_SCALAR, NULL, origin)))
        goto nomem;
    n->kind = FL_CSCALAR_STR; /* viper override values are always strings */
    n->value = expanded;
    expanded = NULL;
    if (!(parent = override_parent(t->root, key, &leaf, origin)) ||
        map_set(parent, leaf, strlen(leaf), n) < 0)
        goto nomem;
    n = NULL;
    rc = 0;
    goto out;
nomem:
    oom(err);
out:
    cnode_free(n);
    free(expanded);
    free(key);
    free(val);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* include                                                                                       */

int fl_ctree_merge_top(fl_ctree_t *dst, fl_ctree_t *src, fl_conf_err_t *err)
{
    /* Move the strings first: the moved nodes point into them. */
    char **s = realloc(dst->strs, (dst->nstrs + src->nstrs + 1) * sizeof(*s));
    if (!s)
        return oom(err);
    dst->strs = s;
    memcpy(s + dst->nstrs, src->strs, src->nstrs * sizeof(*s));
    dst->nstrs += src->nstrs;
    free(src->strs);
    src->strs = NULL;
    src->nstrs = 0;
    int rc = 0;
    for (size_t i = 0; src->root && i < src->root->n; i++) {
        fl_cnode_t *n = src->root->items[i];
        char *key = n->key;
        n->key = NULL; /* map_set sets it again */
        src->root->items[i] = NULL;
        if (rc == 0 && map_set(dst->root, key, strlen(key), n) < 0)
            rc = oom(err);
        if (rc < 0 && n->parent != dst->root)
            cnode_free(n);
        free(key);
    }
    if (src->root)
        src->root->n = 0;
    fl_ctree_free(src);
    return rc;
}

/* ------------------------------------------------------------------------------------------- */
/* paths and error messages                                                                      */

static size_t put(char *buf, size_t len, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static size_t put(char *buf, size_t len, size_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(off < len ? buf + off : NULL, off < len ? len - off : 0, fmt, ap);
    va_end(ap);
    return off + (n > 0 ? (size_t)n : 0);
}

static size_t path_put(const fl_cnode_t *n, char *buf, size_t len, size_t off)
{
    if (!n || !n->parent)
        return off;
    off = path_put(n->parent, buf, len, off);
    if (n->key)
        return put(buf, len, off, "%s%s", n->parent->parent ? "." : "", n->key);
    return put(buf, len, off, "[%zu]", cnode_index(n));
}

size_t fl_cnode_path(const fl_cnode_t *n, char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    return path_put(n, buf, len, 0);
}

void fl_cnode_where(const fl_cnode_t *n, char *buf, size_t len)
{
    if (n && n->origin)
        snprintf(buf, len, "-o %s", n->origin);
    else if (n && n->file && n->line)
        snprintf(buf, len, "%s:%u:%u", n->file, n->line, n->col);
    else if (n && n->file)
        snprintf(buf, len, "%s", n->file);
    else if (n && n->line)
        snprintf(buf, len, "%u:%u", n->line, n->col);
    else if (len)
        buf[0] = '\0';
}

static int node_error(const fl_cnode_t *n, fl_conf_err_t *err, const char *what)
{
    char where[300], path[200];
    fl_cnode_where(n, where, sizeof(where));
    fl_cnode_path(n, path, sizeof(path));
    if (n->origin || !path[0])
        return fl_conf_error(err, "%s%s%s", where, where[0] ? ": " : "", what);
    return fl_conf_error(err, "%s%s%s: %s", where, where[0] ? ": " : "", path, what);
}

int fl_cnode_error(const fl_cnode_t *n, fl_conf_err_t *err, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return node_error(n, err, what);
}

int fl_cnode_error_value(const fl_cnode_t *n, fl_conf_err_t *err, const char *what)
{
    if (n->type != FL_CNODE_SCALAR)
        return fl_cnode_error(n, err, "%s, got a %s", what,
                              n->type == FL_CNODE_MAP ? "mapping" : "list");
    /* A -o flag already shows its value, unless env expansion changed it. */
    if (n->origin && !strchr(n->origin, '$'))
        return node_error(n, err, what);
    return fl_cnode_error(n, err, "%s, got \"%.120s%s\"", what, n->value,
                          strlen(n->value) > 120 ? "..." : "");
}

/* ------------------------------------------------------------------------------------------- */
/* look-ups                                                                                      */

static bool is_null(const fl_cnode_t *n)
{
    return n->type == FL_CNODE_SCALAR && n->kind == FL_CSCALAR_NULL;
}

const fl_cnode_t *fl_cnode_get(const fl_cnode_t *base, const char *path)
{
    const fl_cnode_t *n = base;
    while (n && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        n = child_n(n, path, len);
        path += len + (dot ? 1 : 0);
    }
    return n && !is_null(n) ? n : NULL;
}

/* Like fl_cnode_get, but an intermediate that exists and is not a map is an error (decoding a
 * string into a struct fails upstream too). */
static int lookup(const fl_cnode_t *base, const char *path, const fl_cnode_t **out,
                  fl_conf_err_t *err)
{
    const fl_cnode_t *n = base;
    *out = NULL;
    while (n && *path) {
        if (is_null(n))
            return 0;
        if (n->type != FL_CNODE_MAP)
            return fl_cnode_error_value(n, err, "expected a mapping");
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        n = child_n(n, path, len);
        path += len + (dot ? 1 : 0);
    }
    *out = n && !is_null(n) ? n : NULL;
    return 0;
}

int fl_cget_map(const fl_cnode_t *base, const char *path, const fl_cnode_t **dst,
                fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    if (lookup(base, path, &n, err) < 0)
        return -1;
    if (n && n->type != FL_CNODE_MAP)
        return fl_cnode_error_value(n, err, "expected a mapping");
    *dst = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* weak conversions                                                                              */

/* Integer text: optional sign, 0x / 0o / 0b prefixes, '_' separators. */
static bool parse_uint_text(const char *s, uint64_t *mag, bool *neg)
{
    *neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    int base = int_base(&s);
    if (!digits_ok(s, base))
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s == '_')
            continue;
        int c = tolower((unsigned char)*s);
        unsigned d = isdigit(c) ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
        if (v > (UINT64_MAX - d) / (unsigned)base)
            return false;
        v = v * (unsigned)base + d;
    }
    *mag = v;
    return true;
}

enum { NUM_OK, NUM_BAD, NUM_RANGE };

/* A scalar as a signed magnitude. Weak typing: bools are 0/1, "" is 0, floats must be whole. */
static int node_number(const fl_cnode_t *n, uint64_t *mag, bool *neg)
{
    *mag = 0;
    *neg = false;
    if (n->type != FL_CNODE_SCALAR)
        return NUM_BAD;
    switch (n->kind) {
    case FL_CSCALAR_BOOL:
        *mag = (n->value[0] == 't' || n->value[0] == 'T');
        return NUM_OK;
    case FL_CSCALAR_FLOAT: {
        char *end;
        double d = strtod(n->value, &end);
        *neg = d < 0;
        d = *neg ? -d : d;
        if (*end || d != d) /* d != d: NaN */
            return NUM_BAD;
        if (d >= 18446744073709551616.0)
            return NUM_RANGE;
        *mag = (uint64_t)d;
        return (double)*mag == d ? NUM_OK : NUM_BAD; /* weak typing takes whole floats only */
    }
    default:
        if (n->value[0] == '\0')
            return NUM_OK;
        if (parse_uint_text(n->value, mag, neg))
            return NUM_OK;
        /* Distinguish "too big" from "not a number" for a better message. */
        const char *s = n->value + (n->value[0] == '-' || n->value[0] == '+');
        return (*s && strspn(s, "0123456789_") == strlen(s)) ? NUM_RANGE : NUM_BAD;
    }
}

static int get_signed(const fl_cnode_t *base, const char *path, int64_t min, int64_t max,
                      int64_t *out, const fl_cnode_t **node, fl_conf_err_t *err)
{
    if (lookup(base, path, node, err) < 0)
        return -1;
    if (!*node)
        return 0;
    uint64_t mag;
    bool neg;
    int r = node_number(*node, &mag, &neg);
    if (r == NUM_BAD)
        return fl_cnode_error_value(*node, err, "expected an integer");
    if (r == NUM_RANGE || (!neg && mag > (uint64_t)max) ||
        (neg && mag > (uint64_t)(-(min + 1)) + 1))
        return fl_cnode_error_value(*node, err, "value out of range");
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

static int get_unsigned(const fl_cnode_t *base, const char *path, uint64_t max, uint64_t *out,
                        const fl_cnode_t **node, fl_conf_err_t *err)
{
    if (lookup(base, path, node, err) < 0)
        return -1;
    if (!*node)
        return 0;
    uint64_t mag;
    bool neg;
    int r = node_number(*node, &mag, &neg);
    if (r == NUM_BAD || (neg && mag > 0))
        return fl_cnode_error_value(*node, err, "expected an unsigned integer");
    if (r == NUM_RANGE || mag > max)
        return fl_cnode_error_value(*node, err, "value out of range");
    *out = mag;
    return 0;
}

int fl_cget_uint(const fl_cnode_t *base, const char *path, unsigned *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    uint64_t v = 0;
    if (get_unsigned(base, path, UINT_MAX, &v, &n, err) < 0)
        return -1;
    if (n)
        *dst = (unsigned)v;
    return 0;
}

int fl_cget_u64(const fl_cnode_t *base, const char *path, uint64_t *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    uint64_t v = 0;
    if (get_unsigned(base, path, UINT64_MAX, &v, &n, err) < 0)
        return -1;
    if (n)
        *dst = v;
    return 0;
}

int fl_cget_int(const fl_cnode_t *base, const char *path, int *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    int64_t v = 0;
    if (get_signed(base, path, INT_MIN, INT_MAX, &v, &n, err) < 0)
        return -1;
    if (n)
        *dst = (int)v;
    return 0;
}

int fl_cget_i64(const fl_cnode_t *base, const char *path, int64_t *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    int64_t v = 0;
    if (get_signed(base, path, INT64_MIN, INT64_MAX, &v, &n, err) < 0)
        return -1;
    if (n)
        *dst = v;
    return 0;
}

int fl_cget_size_mb(const fl_cnode_t *base, const char *path, uint64_t *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    uint64_t mb = 0;
    if (get_unsigned(base, path, UINT64_MAX >> 20, &mb, &n, err) < 0)
        return -1;
    if (n)
        *dst = mb << 20;
    return 0;
}

int fl_cget_bool(const fl_cnode_t *base, const char *path, bool *dst, fl_conf_err_t *err)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True", NULL};
    static const char *const no[] = {"", "0", "f", "F", "FALSE", "false", "False", NULL};
    const fl_cnode_t *n;
    if (lookup(base, path, &n, err) < 0)
        return -1;
    if (!n)
        return 0;
    uint64_t mag;
    bool neg;
    if (n->type == FL_CNODE_SCALAR && n->kind == FL_CSCALAR_INT &&
        node_number(n, &mag, &neg) == NUM_OK) {
        *dst = mag != 0; /* weak typing: a number is true when not zero */
        return 0;
    }
    if (n->type == FL_CNODE_SCALAR && n->kind == FL_CSCALAR_FLOAT) {
        *dst = strtod(n->value, NULL) != 0;
        return 0;
    }
    if (n->type == FL_CNODE_SCALAR && is_one_of(n->value, yes))
        *dst = true;
    else if (n->type == FL_CNODE_SCALAR && is_one_of(n->value, no))
        *dst = false;
    else
        return fl_cnode_error_value(n, err, "expected a boolean");
    return 0;
}

/* A scalar's text as a Go string would hold it after weak decoding (bools become "1"/"0"). */
static char *scalar_text(const fl_cnode_t *n)
{
    if (n->kind == FL_CSCALAR_BOOL)
        return strdup((n->value[0] == 't' || n->value[0] == 'T') ? "1" : "0");
    if (n->kind == FL_CSCALAR_NULL)
        return strdup("");
    return strdup(n->value);
}

int fl_cget_str(const fl_cnode_t *base, const char *path, char **dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    if (lookup(base, path, &n, err) < 0)
        return -1;
    if (!n)
        return 0;
    if (n->type != FL_CNODE_SCALAR)
        return fl_cnode_error_value(n, err, "expected a string");
    char *s = scalar_text(n);
    if (!s)
        return oom(err);
    free(*dst);
    *dst = s;
    return 0;
}

int fl_cget_enum(const fl_cnode_t *base, const char *path, const char *const *names, int *dst,
                 fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    if (lookup(base, path, &n, err) < 0)
        return -1;
    if (!n)
        return 0;
    for (int i = 0; n->type == FL_CNODE_SCALAR && names[i]; i++) {
        if (strcasecmp(n->value, names[i]) == 0) {
            *dst = i;
            return 0;
        }
    }
    char want[200];
    size_t off = put(want, sizeof(want), 0, "expected one of:");
    for (int i = 0; names[i]; i++)
        off = put(want, sizeof(want), off, "%s %s", i ? "," : "", names[i]);
    return fl_cnode_error_value(n, err, want);
}

void fl_strlist_free(char **list)
{
    for (size_t i = 0; list && list[i]; i++)
        free(list[i]);
    free(list);
}

static int list_add(char ***list, size_t *n, char *s)
{
    if (!s)
        return -1;
    char **p = realloc(*list, (*n + 2) * sizeof(*p));
    if (!p) {
        free(s);
        return -1;
    }
    p[(*n)++] = s;
    p[*n] = NULL;
    *list = p;
    return 0;
}

/* mapstructure's string→slice hook: "" is an empty list, otherwise split on every comma. */
static int split_commas(const char *s, char ***list, size_t *n)
{
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (list_add(list, n, strndup(s, len)) < 0)
            return -1;
        s += len;
        if (comma && *++s == '\0')
            return list_add(list, n, strdup("")); /* "a," → ["a", ""] as strings.Split */
    }
    return 0;
}

static int seq_strings(const fl_cnode_t *seq, char ***list, size_t *n, fl_conf_err_t *err)
{
    for (size_t i = 0; i < seq->n; i++) {
        const fl_cnode_t *item = seq->items[i];
        if (item->type != FL_CNODE_SCALAR)
            return fl_cnode_error_value(item, err, "expected a string");
        if (list_add(list, n, scalar_text(item)) < 0)
            return oom(err);
    }
    return 0;
}

int fl_cget_strlist(const fl_cnode_t *base, const char *path, char ***dst, size_t *n,
                    fl_conf_err_t *err)
{
    const fl_cnode_t *node;
    if (lookup(base, path, &node, err) < 0)
        return -1;
    if (!node)
        return 0;
    char **list = NULL;
    size_t cnt = 0;
    int rc = 0;
    if (node->type == FL_CNODE_MAP)
        rc = fl_cnode_error_value(node, err, "expected a list");
    else if (node->type == FL_CNODE_SEQ)
        rc = seq_strings(node, &list, &cnt, err);
    else if (node->kind == FL_CSCALAR_STR)
        rc = split_commas(node->value, &list, &cnt) < 0 ? oom(err) : 0;
    else
        rc = list_add(&list, &cnt, scalar_text(node)) < 0 ? oom(err) : 0;
    if (rc < 0) {
        fl_strlist_free(list);
        return -1;
    }
    fl_strlist_free(*dst);
    *dst = list;
    *n = cnt;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* durations (Go's time.ParseDuration)                                                           */

static uint64_t duration_unit(const char *u, size_t len)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1ull},           {"us", 1000ull},
        {"\xc2\xb5s", 1000ull}, /* U+00B5 micro sign */
        {"\xce\xbcs", 1000ull}, /* U+03BC greek mu */
        {"ms", 1000000ull},     {"s", 1000000000ull},
        {"m", 60000000000ull},  {"h", 3600000000000ull},
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(units); i++)
        if (strlen(units[i].name) == len && memcmp(units[i].name, u, len) == 0)
            return units[i].ns;
    return 0;
}

/* One "<number><unit>" element; adds its nanoseconds to *total. */
static const char *duration_elem(const char *s, uint64_t *total, const char **why)
{
    uint64_t v = 0, f = 0;
    double scale = 1;
    const char *start = s;
    bool overflow = false;
    for (; isdigit((unsigned char)*s); s++) {
        overflow |= v > (UINT64_MAX - 9) / 10;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    bool pre = s > start, post = false;
    if (*s == '.') {
        for (s++; isdigit((unsigned char)*s); s++) {
            post = true;
            if (f <= (UINT64_MAX - 9) / 10) { /* extra digits beyond precision are dropped */
                f = f * 10 + (uint64_t)(*s - '0');
                scale *= 10;
            }
        }
    }
    if (!pre && !post)
        return *why = "invalid duration", NULL;
    const char *u = s;
    while (*s && *s != '.' && !isdigit((unsigned char)*s))
        s++;
    if (s == u)
        return *why = "missing unit", NULL;
    uint64_t unit = duration_unit(u, (size_t)(s - u));
    if (!unit)
        return *why = "unknown unit", NULL;
    if (overflow || v > (1ull << 63) / unit)
        return *why = "invalid duration (out of range)", NULL;
    v *= unit;
    if (f > 0)
        v += (uint64_t)((double)f * ((double)unit / scale));
    if (v > (1ull << 63) || *total > (1ull << 63) - v)
        return *why = "invalid duration (out of range)", NULL;
    *total += v;
    return s;
}

int fl_parse_duration_ns(const char *s, int64_t *ns, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    bool neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (!*s) {
        *why = "invalid duration";
        return -1;
    }
    uint64_t total = 0;
    while (*s)
        if (!(s = duration_elem(s, &total, why)))
            return -1;
    if (!neg && total > (uint64_t)INT64_MAX) {
        *why = "invalid duration (out of range)";
        return -1;
    }
    *ns = neg ? (int64_t)(0 - total) : (int64_t)total;
    return 0;
}

static int64_t ns_to_ms_up(int64_t ns)
{
    return ns / 1000000 + (ns % 1000000 > 0);
}

int fl_cget_duration_ms(const fl_cnode_t *base, const char *path, int64_t *dst, fl_conf_err_t *err)
{
    const fl_cnode_t *n;
    if (lookup(base, path, &n, err) < 0)
        return -1;
    if (!n)
        return 0;
    int64_t ns;
    if (n->type == FL_CNODE_SCALAR && n->kind == FL_CSCALAR_STR) {
        const char *why;
        if (fl_parse_duration_ns(n->value, &ns, &why) < 0) {
            char what[120];
            snprintf(what, sizeof(what), "expected a duration like \"30s\" or \"1m30s\" (%s)", why);
            return fl_cnode_error_value(n, err, what);
        }
    } else if (n->type == FL_CNODE_SCALAR &&
               (n->kind == FL_CSCALAR_INT || n->kind == FL_CSCALAR_FLOAT)) {
        /* A bare YAML number is time.Duration's unit: nanoseconds (the sample config warns). */
        if (n->kind == FL_CSCALAR_FLOAT) {
            double d = strtod(n->value, NULL);
            if (d != d || d >= 9.2e18 || d <= -9.2e18)
                return fl_cnode_error_value(n, err, "value out of range");
            ns = (int64_t)d; /* truncated, as Go converts float64 to Duration */
        } else if (get_signed(n, "", INT64_MIN, INT64_MAX, &ns, &n, err) < 0) {
            return -1;
        }
    } else {
        return fl_cnode_error_value(n, err, "expected a duration like \"30s\" or \"1m30s\"");
    }
    if (ns < 0)
        return fl_cnode_error_value(n, err, "a duration must not be negative");
    *dst = ns_to_ms_up(ns);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* field tables                                                                                  */

static int field_get(const fl_cnode_t *sec, char *p, const fl_cfield_t *f, char *base,
                     fl_conf_err_t *err)
{
    switch (f->kind) {
    case FL_CF_STR:
        return fl_cget_str(sec, f->path, (char **)(void *)p, err);
    case FL_CF_BOOL:
        return fl_cget_bool(sec, f->path, (bool *)(void *)p, err);
    case FL_CF_UINT:
        return fl_cget_uint(sec, f->path, (unsigned *)(void *)p, err);
    case FL_CF_INT:
        return fl_cget_int(sec, f->path, (int *)(void *)p, err);
    case FL_CF_I64:
        return fl_cget_i64(sec, f->path, (int64_t *)(void *)p, err);
    case FL_CF_U64:
        return fl_cget_u64(sec, f->path, (uint64_t *)(void *)p, err);
    case FL_CF_DURATION_MS:
        return fl_cget_duration_ms(sec, f->path, (int64_t *)(void *)p, err);
    case FL_CF_SIZE_MB:
        return fl_cget_size_mb(sec, f->path, (uint64_t *)(void *)p, err);
    case FL_CF_STRLIST:
        return fl_cget_strlist(sec, f->path, (char ***)(void *)p,
                               (size_t *)(void *)(base + f->off_n), err);
    }
    return fl_conf_error(err, "internal error: bad field kind for %s", f->path);
}

int fl_cget_fields(const fl_cnode_t *section, void *dst, const fl_cfield_t *fields, size_t nfields,
                   fl_conf_err_t *err)
{
    char *base = dst;
    for (size_t i = 0; i < nfields; i++)
        if (field_get(section, base + fields[i].off, &fields[i], base, err) < 0)
            return -1;
    return 0;
}

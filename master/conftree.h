/* A generic configuration tree: YAML parsed into map / seq / scalar nodes that remember where they
 * came from (file:line:col, or the -o flag that set them), plus RoadRunner's loading rules that
 * work on the tree as a whole (env interpolation, -o overrides) and typed getters with weak typing
 * (mapstructure-style) that produce "FILE:LINE:COL: key.path: what went wrong" errors.
 *
 * The tree knows nothing of sections; config.c decodes sections from it. */
#ifndef FL_CONFTREE_H
#define FL_CONFTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fl.h"

/* One error message; every failing function here fills it and returns -1. */
typedef struct fl_conf_err {
    char msg[512];
} fl_conf_err_t;

typedef enum { FL_CNODE_MAP, FL_CNODE_SEQ, FL_CNODE_SCALAR } fl_cnode_type_t;

/* The type YAML (go-yaml v3 resolution) gives a scalar. Only plain (unquoted, untagged) scalars
 * can be anything but a string, so `version: 3` is an INT and `version: "3"` a STR. Values that
 * came from -o are always STR, like viper's override strings. */
typedef enum {
    FL_CSCALAR_STR,
    FL_CSCALAR_INT,   /* 3, -1, 0x1f, 0o17, 0b101, 1_000 */
    FL_CSCALAR_FLOAT, /* 2.5, 1e3, .inf, .nan */
    FL_CSCALAR_BOOL,  /* true / false (any of the three YAML 1.2 spellings) */
    FL_CSCALAR_NULL,  /* ~, null, or nothing at all */
} fl_cscalar_kind_t;

typedef struct fl_cnode fl_cnode_t;
struct fl_cnode {
    fl_cnode_type_t type;
    fl_cscalar_kind_t kind; /* scalars only */
    bool quoted;            /* scalar written quoted or as a block scalar (| or >) */
    unsigned line, col;     /* 1-based source position; 0 when created by -o */
    char *key;              /* lower-cased key in the parent map; NULL for the root, seq items */
    char *value;            /* scalars: the text (after interpolation), NUL-terminated */
    fl_cnode_t *parent;
    fl_cnode_t **items; /* map entries (each with ->key) or seq items, in source order */
    size_t n, cap;
    const char *file;   /* source file, owned by the tree; NULL when there is none */
    const char *origin; /* the -o flag that set this node, owned by the tree; NULL if from a file */
};

typedef struct {
    fl_cnode_t *root; /* always a map */
    const char *file; /* the file the root came from (NULL if none); owned below */
    /* Strings that nodes point at (file names, -o flags). Kept apart from the nodes so that a
     * subtree moved from one tree into another (include) keeps valid pointers. */
    char **strs;
    size_t nstrs;
} fl_ctree_t;

/* --- building ------------------------------------------------------------------------------- */

/* Parse a YAML file. path NULL gives an empty tree. An empty file (or only comments) is an empty
 * map. Keys are lower-cased. Syntax errors read "FILE:LINE:COL: <libyaml problem>". On error the
 * tree is left empty (nothing to free). */
int fl_ctree_load(fl_ctree_t *t, const char *path, fl_conf_err_t *err);
/* The same from memory; name is used in messages (may be NULL). */
int fl_ctree_load_string(fl_ctree_t *t, const char *name, const char *yaml, size_t len,
                         fl_conf_err_t *err);
void fl_ctree_free(fl_ctree_t *t);

/* §1.2: expand ${NAME}, $NAME and ${NAME:-default} in every string scalar (map values and list
 * elements at any depth; never keys). */
int fl_ctree_interpolate(fl_ctree_t *t, fl_conf_err_t *err);

/* §1.3: apply one `-o key=value` flag: creates intermediate maps, replaces the leaf, env-expands
 * the value. The nodes it creates remember the flag so that errors can name it. */
int fl_ctree_override(fl_ctree_t *t, const char *flag, fl_conf_err_t *err);

/* include (§1.1 6f): each top-level entry of src replaces the same entry of dst (whole section,
 * no deep merge). src is consumed (its nodes and strings move into dst) and left empty. */
int fl_ctree_merge_top(fl_ctree_t *dst, fl_ctree_t *src, fl_conf_err_t *err);

/* Environment expansion with Go's os.Expand syntax. defaults=true is RoadRunner's config flavour
 * (${NAME:-default} honoured), false the plain one used for server.env at spawn time.
 * Returns a malloc'd string, NULL when out of memory. */
char *fl_env_expand(const char *s, bool defaults);

/* --- looking up ----------------------------------------------------------------------------- */

/* Child of a map by key (case-insensitive); NULL if absent or n is not a map. Null scalars are
 * returned as they are (see fl_cnode_get for "absent or null"). */
fl_cnode_t *fl_cnode_child(const fl_cnode_t *map, const char *key);
/* Dot path below base ("pool.supervisor.ttl"); NULL when absent, null, or when an intermediate is
 * not a map. base may be NULL (absent section). */
const fl_cnode_t *fl_cnode_get(const fl_cnode_t *base, const char *path);
/* "http.pool.num_workers", "logs.output[1]"; returns the length it wanted (snprintf style). */
size_t fl_cnode_path(const fl_cnode_t *n, char *buf, size_t len);
/* "FILE:LINE:COL", "-o FLAG", "FILE" or "" depending on what is known. */
void fl_cnode_where(const fl_cnode_t *n, char *buf, size_t len);

/* Errors about a node. For file nodes: "FILE:L:C: key.path: <msg>"; for -o nodes: "-o FLAG: <msg>"
 * (the flag already names the key). Always return -1. */
int fl_cnode_error(const fl_cnode_t *n, fl_conf_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with the offending value: file nodes get `, got "VALUE"` appended; -o nodes only when
 * env expansion made the value differ from what the flag says. */
int fl_cnode_error_value(const fl_cnode_t *n, fl_conf_err_t *err, const char *what);
int fl_conf_error(fl_conf_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- typed getters (weak typing, as mapstructure with WeaklyTypedInput) ---------------------
 * Each looks up path below base. Absent or null: returns 0 and leaves *dst untouched, so set the
 * default first. Present but unusable: -1 with an error pointing at the value. */

/* A section: *dst = the map, or NULL when absent/null; error when it is a scalar or a list. */
int fl_cget_map(const fl_cnode_t *base, const char *path, const fl_cnode_t **dst,
                fl_conf_err_t *err);
/* A string; numbers and bools give their text. Replaces (frees) the old *dst. */
int fl_cget_str(const fl_cnode_t *base, const char *path, char **dst, fl_conf_err_t *err);
/* true/false, "true"/"1"/"t"/..., a number (non-zero = true); "" = false. */
int fl_cget_bool(const fl_cnode_t *base, const char *path, bool *dst, fl_conf_err_t *err);
/* Integers: YAML ints, integral floats, numeric strings ("4", "0x10"); "" = 0; bools = 0/1. */
int fl_cget_uint(const fl_cnode_t *base, const char *path, unsigned *dst, fl_conf_err_t *err);
int fl_cget_int(const fl_cnode_t *base, const char *path, int *dst, fl_conf_err_t *err);
int fl_cget_i64(const fl_cnode_t *base, const char *path, int64_t *dst, fl_conf_err_t *err);
int fl_cget_u64(const fl_cnode_t *base, const char *path, uint64_t *dst, fl_conf_err_t *err);
/* A Go duration string ("1m30s"); a bare YAML integer is nanoseconds (§1.4). Rounded up to whole
 * milliseconds. Negative durations are rejected. */
int fl_cget_duration_ms(const fl_cnode_t *base, const char *path, int64_t *dst, fl_conf_err_t *err);
/* An unsigned integer of megabytes, returned in bytes ("10MB" is an error, as upstream). */
int fl_cget_size_mb(const fl_cnode_t *base, const char *path, uint64_t *dst, fl_conf_err_t *err);
/* A list of strings: a YAML sequence of scalars, or one scalar split on commas ("" = empty list).
 * *dst is NULL-terminated (or NULL when empty) and replaces (frees) the old list. */
int fl_cget_strlist(const fl_cnode_t *base, const char *path, char ***dst, size_t *n,
                    fl_conf_err_t *err);
/* One of names[] (case-insensitive, names NULL-terminated); *dst = its index. */
int fl_cget_enum(const fl_cnode_t *base, const char *path, const char *const *names, int *dst,
                 fl_conf_err_t *err);
void fl_strlist_free(char **list);

/* Table-driven decoding of a section into a struct: one row per key. */
typedef enum {
    FL_CF_STR,         /* char * */
    FL_CF_BOOL,        /* bool */
    FL_CF_UINT,        /* unsigned */
    FL_CF_INT,         /* int */
    FL_CF_I64,         /* int64_t */
    FL_CF_U64,         /* uint64_t */
    FL_CF_DURATION_MS, /* int64_t milliseconds */
    FL_CF_SIZE_MB,     /* uint64_t bytes */
    FL_CF_STRLIST,     /* char ** at off, size_t count at off_n */
} fl_cfield_kind_t;

typedef struct {
    const char *path; /* below the section: "supervisor.ttl" */
    fl_cfield_kind_t kind;
    size_t off;   /* offsetof(struct, field) */
    size_t off_n; /* FL_CF_STRLIST only: offsetof the count */
} fl_cfield_t;

/* Decode every row; absent keys keep what dst already holds (the defaults). */
int fl_cget_fields(const fl_cnode_t *section, void *dst, const fl_cfield_t *fields, size_t nfields,
                   fl_conf_err_t *err);

/* Go's time.ParseDuration, in nanoseconds. why (may be NULL) gets a short reason on error. */
int fl_parse_duration_ns(const char *s, int64_t *ns, const char **why);

#endif

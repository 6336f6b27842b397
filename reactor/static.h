/* Static files served by the reactor itself (RoadRunner's `static` middleware, `http.static`):
 * sendfile, conditional GET (ETag, Last-Modified), single byte ranges, Content-Type by extension.
 * A miss (no such file, a directory, no extension, a forbidden or not allowed extension, a method
 * other than GET/HEAD) falls through to PHP; a path with a `..` segment is answered 403. Symlinks
 * below the root are followed wherever they point, as nginx does by default (Laravel's
 * public/storage -> ../storage/app/public); http.static.symlinks narrows that (403 otherwise). */
#ifndef FL_STATIC_H
#define FL_STATIC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fl.h"

struct fl_conn;
struct fl_static_root;

/* http.static.symlinks (forkline's own key), in the order of the config's names. */
enum {
    FL_STATIC_SYMLINKS_FOLLOW, /* "follow" (default): any symlink (nginx: disable_symlinks off) */
    FL_STATIC_SYMLINKS_INSIDE, /* "inside": only symlinks that resolve below the root */
    FL_STATIC_SYMLINKS_OFF,    /* "off": no symlink below the root (the root itself may be one) */
};

typedef struct {
    const char *dir;     /* NULL = the static middleware is off */
    char *const *forbid; /* extensions, lower-case, with or without the dot; NULL-terminated */
    char *const *allow;  /* empty or NULL = every extension that is not forbidden */
    bool calculate_etag, weak;   /* ETag from mtime (ns) + size; weak adds W/ */
    char *const *response;       /* extra response headers: name, value, name, value, ..., NULL */
    int symlinks;                /* FL_STATIC_SYMLINKS_* */
    struct fl_static_root *root; /* opened on first use (per reactor process) */
} fl_static_opts_t;

/* The hook in the HTTP server: true when the request was answered (file, 304, 206, 403, ...);
 * false to pass it on to PHP. */
bool fl_static_try(struct fl_conn *c, fl_static_opts_t *o);
void fl_static_free(fl_static_opts_t *o);

/* ---- the pure parts, exported for tests ---- */

/* The request target as a path below the root: absolute-form and query stripped, %XX decoded,
 * empty and "." segments dropped. Returns the length written to out (no leading '/'), 0 for
 * the root itself, FL_STATIC_MISS when it cannot name a file, FL_STATIC_FORBIDDEN for `..`. */
#define FL_STATIC_MISS (-1)
#define FL_STATIC_FORBIDDEN (-2)
int fl_static_path(fl_slice_t target, char *out, size_t cap);
/* The extension of a path's last segment, without the dot; empty slice when there is none. */
fl_slice_t fl_static_ext(const char *path, size_t len);
/* Whether forbid/allow let the extension through. */
bool fl_static_ext_ok(const fl_static_opts_t *o, fl_slice_t ext);
/* Content-Type for an extension (case-insensitive); application/octet-stream when unknown. */
const char *fl_static_mime(fl_slice_t ext);

/* A single byte range of a representation of size bytes. */
typedef enum {
    FL_RANGE_NONE, /* no usable Range: send the whole file (also multi-range, bad syntax) */
    FL_RANGE_OK,   /* [*first, *first + *len) */
    FL_RANGE_UNSATISFIABLE, /* 416 */
} fl_range_t;
fl_range_t fl_static_range(fl_slice_t h, uint64_t size, uint64_t *first, uint64_t *len);

/* IMF-fixdate (and the two obsolete forms RFC 9110 asks recipients to accept) → Unix time;
 * -1 when the value is not a date. */
int64_t fl_static_parse_date(fl_slice_t s);
/* Whether an If-None-Match / If-Match list names etag ("*" matches anything). weak selects the
 * comparison: weak ignores W/ on both sides; strong never matches a weak tag. */
bool fl_static_etag_match(fl_slice_t list, fl_slice_t etag, bool weak);

#endif

/* Request bodies that PHP receives parsed (spec §6.4, §6.5): application/x-www-form-urlencoded
 * and multipart/form-data become RoadRunner's JSON form tree (PHP-style `a[b][]` names, its
 * conflict rules, keys sorted as Go's encoding/json writes maps), and each multipart file is
 * streamed into its own temp file as the body arrives, so an upload never sits in memory. */
#ifndef FL_FORM_H
#define FL_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fl.h"

/* PHP UPLOAD_ERR_* codes RoadRunner reports (§6.5). */
enum {
    FL_UPLOAD_OK = 0,
    FL_UPLOAD_NO_FILE = 4,
    FL_UPLOAD_NO_TMP_DIR = 6,
    FL_UPLOAD_CANT_WRITE = 7,
    FL_UPLOAD_EXTENSION = 8,
};

/* Static error strings; compare by identity. */
extern const char fl_form_err_syntax[];    /* bad escape or ';' in urlencoded data (400) */
extern const char fl_form_err_boundary[];  /* multipart Content-Type without a boundary (400) */
extern const char fl_form_err_multipart[]; /* malformed or truncated multipart body (400) */
extern const char fl_form_err_too_large[]; /* too many parts or too many value bytes (413) */
extern const char fl_form_err_conflict[];  /* "invalid multiple values to key" (400) */
extern const char fl_form_err_nomem[];

typedef struct {
    const char *dir;     /* absolute; NULL = $TMPDIR or /tmp */
    char *const *forbid; /* NULL-terminated ".ext" lists, lower-case; may be NULL */
    char *const *allow;  /* non-empty: only these pass; forbid wins */
    uid_t uid;           /* chown the temp file when uid and gid are both non-zero */
    gid_t gid;
    size_t max_value_bytes; /* non-file field bytes kept in memory; 0 = 32 MiB */
    unsigned max_parts;     /* 0 = 1000, as Go's multipart reader */
} fl_upload_conf_t;

typedef struct {
    size_t name_off, name_len; /* into fl_form_t.strs */
    size_t value_off, value_len;
} fl_form_field_t;

typedef struct {
    size_t field_off, field_len; /* form field name, into strs */
    size_t file_off, file_len;   /* client file name (base name), into strs */
    size_t mime_off, mime_len;   /* the part's Content-Type */
    char *tmp;                   /* absolute temp path, or NULL */
    int fd;                      /* open while the part is being written, else -1 */
    uint64_t size;
    int error; /* FL_UPLOAD_* */
} fl_upload_t;

typedef struct fl_form fl_form_t;

struct fl_form {
    fl_buf_t strs; /* every name and value, back to back */
    fl_form_field_t *fields;
    size_t nfields, cap_fields;
    fl_upload_t *uploads;
    size_t nuploads, cap_uploads;
    char errkey[128];        /* the key named by fl_form_err_conflict */
    struct fl_multipart *mp; /* multipart parser state, between begin and end */
};

void fl_form_init(fl_form_t *f);
/* Frees memory and closes files; temp files stay (see fl_form_remove_files). */
void fl_form_free(fl_form_t *f);
/* Deletes every temp file created so far; safe to call more than once. */
void fl_form_remove_files(fl_form_t *f);

/* Parses urlencoded bytes (url.ParseQuery): '&' separated, '+' is a space, %XX escapes.
 * Returns 0, or -1 with *err (fl_form_err_syntax, fl_form_err_nomem). */
int fl_form_urlencoded(fl_form_t *f, fl_slice_t body, const char **err);

/* Streaming multipart: begin with the request's Content-Type, feed the body as it arrives,
 * end once it is complete. Each returns 0, or -1 with *err. conf must outlive the parse. */
int fl_multipart_begin(fl_form_t *f, fl_slice_t content_type, const fl_upload_conf_t *conf,
                       const char **err);
int fl_multipart_feed(fl_form_t *f, const char *p, size_t n, const char **err);
int fl_multipart_end(fl_form_t *f, const char **err);

/* The JSON trees. Each appends nothing when there is nothing to say (no fields, no files).
 * Returns 0, or -1 with *err: fl_form_err_conflict (key in f->errkey) or fl_form_err_nomem. */
int fl_form_json(fl_form_t *f, fl_buf_t *out, const char **err);
int fl_uploads_json(fl_form_t *f, fl_buf_t *out, const char **err);

/* PHP-style name → path segments (RoadRunner's fetchIndexes): "a[b][]" → a, b, "". Spaces are
 * dropped; invalid UTF-8 bytes become U+FFFD. Segments are written to seg_bytes (room for
 * 3 * name.len bytes), their lengths to lens (room for name.len + 1). Returns the count. */
size_t fl_form_split_name(fl_slice_t name, char *seg_bytes, size_t *lens);

#endif

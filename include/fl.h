/* Shared basics: slices, growable buffers, static error strings. */
#ifndef FL_H
#define FL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#define FL_VERSION "0.1.0"
#define FL_RR_VERSION "2025.1.0"

/* A borrowed view into someone else's bytes (h2o style): never freed. */
typedef struct {
    const char *base;
    size_t len;
} fl_slice_t;

#define FL_SLICE(s) ((fl_slice_t){(s), sizeof(s) - 1})
#define FL_SLICE_NULL ((fl_slice_t){NULL, 0})

static inline fl_slice_t fl_slice(const char *p, size_t n) { return (fl_slice_t){p, n}; }
static inline fl_slice_t fl_slice_cstr(const char *s) { return (fl_slice_t){s, s ? strlen(s) : 0}; }
static inline bool fl_slice_eq(fl_slice_t a, const char *lit, size_t n)
{
    return a.len == n && memcmp(a.base, lit, n) == 0;
}
/* ASCII case-insensitive vs a C string. Inline: the other side is nearly always a literal,
 * whose strlen then folds, so most mismatches cost one length compare (a hot-path helper). */
static inline bool fl_slice_ieq(fl_slice_t a, const char *s)
{
    size_t n = strlen(s);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a.base[i], y = (unsigned char)s[i], l = x | 0x20;
        if (x != y && (l != (y | 0x20) || l < 'a' || l > 'z'))
            return false;
    }
    return true;
}

/* An owned, growable byte buffer. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} fl_buf_t;

/* All return 0, or -1 when memory runs out (the buffer is left intact). */
int fl_buf_reserve(fl_buf_t *b, size_t extra);
int fl_buf_append_slow(fl_buf_t *b, const void *p, size_t n);
/* Inline when the bytes fit (the hot path appends many short pieces); grows otherwise. */
static inline int fl_buf_append(fl_buf_t *b, const void *p, size_t n)
{
    if (n && b->cap - b->len >= n) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
    }
    return fl_buf_append_slow(b, p, n);
}
static inline int fl_buf_puts(fl_buf_t *b, const char *s) { return fl_buf_append(b, s, strlen(s)); }
int fl_buf_printf(fl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fl_buf_consume(fl_buf_t *b, size_t n); /* drop n bytes from the front */
void fl_buf_free(fl_buf_t *b);

#define FL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define FL_UNUSED(x) ((void)(x))

#endif

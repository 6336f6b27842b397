/* Static files (RoadRunner's `static` middleware) served inside the reactor.
 *
 * Path safety: the target is %-decoded and split into segments; a `..` segment is 403 (RR's
 * rule, per segment rather than per substring so that "a..b.css" is a name, not an attack), so a
 * request can never climb out of the root by itself; only a symlink someone put below the root
 * can lead elsewhere. What happens then is http.static.symlinks:
 *   follow (default)  followed wherever it points, as nginx (disable_symlinks off) and RR do:
 *                     Laravel's `public/storage -> ../storage/app/public` must be served.
 *   inside            followed only while it stays below the root: the kernel resolves the whole
 *                     path with openat2(RESOLVE_BENEATH) relative to a descriptor of the root, so
 *                     there is no window between a check and the open. Where openat2 is missing
 *                     (old kernel, seccomp), or for an absolute symlink (which RESOLVE_BENEATH
 *                     refuses even when it points inside), the file is opened normally and the
 *                     path the kernel reports for the open descriptor (/proc/self/fd) must lie
 *                     below the root's real path: the check is on what was opened, race-free too.
 *   off               no symlink below the root at all (RESOLVE_NO_SYMLINKS, or the descriptor's
 *                     real path must be exactly the root's plus the request's).
 * A refused symlink is 403.
 *
 * The root descriptor is re-resolved at most once a second when `dir` starts naming another
 * directory, so a deploy that swaps a `current -> releases/N` symlink is picked up.
 *
 * ETag (calculate_etag): "<mtime in ns, hex>-<size, hex>", W/ prefixed when weak. RoadRunner
 * hashes the whole file with CRC32 on every request (and, when weak, only the file name, which
 * never changes); mtime+size is what nginx does, costs nothing, and changes on every write. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/openat2.h>
#endif

#include "log.h"
#include "static.h"

#define ROOT_RECHECK_MS 1000

struct fl_static_root {
    int fd; /* O_PATH descriptor of the directory `dir` named when last checked */
    dev_t dev;
    ino_t ino;
    char real[PATH_MAX]; /* its real path, for the /proc check */
    size_t real_len;
    int64_t checked_ms;
    bool warned;
};

/* ---- Content-Type ---- */

typedef struct {
    const char *ext, *type;
} mime_t;

/* Sorted by extension (bsearch). Text types carry charset=utf-8, as Go's mime package gives them.
 */
static const mime_t mime_types[] = {
    {"7z", "application/x-7z-compressed"},
    {"aac", "audio/aac"},
    {"apng", "image/apng"},
    {"atom", "application/atom+xml"},
    {"avif", "image/avif"},
    {"bin", "application/octet-stream"},
    {"bmp", "image/bmp"},
    {"bz2", "application/x-bzip2"},
    {"css", "text/css; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"doc", "application/msword"},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    {"eot", "application/vnd.ms-fontobject"},
    {"epub", "application/epub+zip"},
    {"flac", "audio/flac"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"heic", "image/heic"},
    {"htm", "text/html; charset=utf-8"},
    {"html", "text/html; charset=utf-8"},
    {"ico", "image/vnd.microsoft.icon"},
    {"ics", "text/calendar; charset=utf-8"},
    {"jar", "application/java-archive"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"jsonld", "application/ld+json"},
    {"jxl", "image/jxl"},
    {"m4a", "audio/mp4"},
    {"m4v", "video/mp4"},
    {"map", "application/json"},
    {"md", "text/markdown; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"mpeg", "video/mpeg"},
    {"mpg", "video/mpeg"},
    {"odp", "application/vnd.oasis.opendocument.presentation"},
    {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
    {"odt", "application/vnd.oasis.opendocument.text"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"opus", "audio/opus"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"ppt", "application/vnd.ms-powerpoint"},
    {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
    {"rar", "application/vnd.rar"},
    {"rss", "application/rss+xml"},
    {"rtf", "application/rtf"},
    {"svg", "image/svg+xml"},
    {"svgz", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"tgz", "application/gzip"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"vtt", "text/vtt; charset=utf-8"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xhtml", "application/xhtml+xml"},
    {"xls", "application/vnd.ms-excel"},
    {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    {"xml", "text/xml; charset=utf-8"},
    {"xz", "application/x-xz"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"zip", "application/zip"},
    {"zst", "application/zstd"},
};

static int ext_cmp(fl_slice_t ext, const char *name)
{
    size_t n = strlen(name);
    int r = strncasecmp(ext.base, name, ext.len < n ? ext.len : n);
    if (r)
        return r;
    return ext.len < n ? -1 : ext.len > n ? 1 : 0;
}

const char *fl_static_mime(fl_slice_t ext)
{
    size_t lo = 0, hi = FL_ARRAY_SIZE(mime_types);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = ext_cmp(ext, mime_types[mid].ext);
        if (r == 0)
            return mime_types[mid].type;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return "application/octet-stream";
}

/* ---- the path ---- */

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Closes the segment that ends at out[n]: drops "" and ".", refuses "..". Returns the new n. */
static int end_segment(char *out, size_t seg, size_t n)
{
    size_t len = n - seg;
    if (len == 2 && out[seg] == '.' && out[seg + 1] == '.')
        return FL_STATIC_FORBIDDEN;
    if (len == 1 && out[seg] == '.')
        return (int)seg;
    return (int)n;
}

int fl_static_path(fl_slice_t target, char *out, size_t cap)
{
    const char *p = target.base, *end = p + target.len;
    if (p == end)
        return FL_STATIC_MISS;
    if (*p != '/') { /* absolute-form: http://host/path; "*" and authority-form name no file */
        const char *s = memmem(p, target.len, "://", 3);
        if (!s || !(p = memchr(s + 3, '/', (size_t)(end - s - 3))))
            return FL_STATIC_MISS;
    }
    for (const char *q = p; q < end; q++)
        if (*q == '?' || *q == '#') {
            end = q;
            break;
        }
    size_t n = 0, seg = 0;
    for (; p < end; p++) {
        int ch = (unsigned char)*p;
        if (ch == '%') {
            int hi = p + 2 < end ? unhex(p[1]) : -1, lo = hi >= 0 ? unhex(p[2]) : -1;
            if (lo < 0 || (hi | lo) == 0)
                return FL_STATIC_MISS; /* a bad escape or %00 names no file */
            ch = hi << 4 | lo;
            p += 2;
        }
        if (ch == '/') {
            int r = end_segment(out, seg, n);
            if (r < 0)
                return r;
            n = (size_t)r;
            if (n > seg)
                out[n++] = '/';
            seg = n;
            continue;
        }
        if (n + 2 >= cap)
            return FL_STATIC_MISS;
        out[n++] = (char)ch;
    }
    int r = end_segment(out, seg, n);
    if (r < 0)
        return r;
    n = (size_t)r;
    if (n > 0 && out[n - 1] == '/')
        n--;
    out[n] = '\0';
    return (int)n;
}

fl_slice_t fl_static_ext(const char *path, size_t len)
{
    for (size_t i = len; i > 0; i--) {
        if (path[i - 1] == '/')
            break;
        if (path[i - 1] == '.')
            return fl_slice(path + i, len - i);
    }
    return fl_slice(path + len, 0);
}

static bool ext_listed(char *const *list, fl_slice_t ext)
{
    for (; list && *list; list++) {
        const char *e = *list[0] == '.' ? *list + 1 : *list;
        if (*e && ext_cmp(ext, e) == 0)
            return true;
    }
    return false;
}

bool fl_static_ext_ok(const fl_static_opts_t *o, fl_slice_t ext)
{
    if (ext_listed(o->forbid, ext))
        return false;
    bool any_allow = false;
    for (char *const *a = o->allow; a && *a; a++)
        any_allow |= (*a)[0] && strcmp(*a, ".") != 0; /* RR skips empty entries */
    return !any_allow || ext_listed(o->allow, ext);
}

/* ---- Range ---- */

static fl_slice_t trim(fl_slice_t s)
{
    while (s.len && (s.base[0] == ' ' || s.base[0] == '\t'))
        s.base++, s.len--;
    while (s.len && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Digits at *p (at least one); saturates at UINT64_MAX. */
static bool parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    for (; *p < end && **p >= '0' && **p <= '9'; (*p)++) {
        unsigned d = (unsigned)(**p - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    *v = x;
    return *p > s;
}

fl_range_t fl_static_range(fl_slice_t h, uint64_t size, uint64_t *first, uint64_t *len)
{
    h = trim(h);
    if (h.len < 6 || strncasecmp(h.base, "bytes=", 6) != 0 || memchr(h.base, ',', h.len))
        return FL_RANGE_NONE; /* another unit, or several ranges: the whole file (RFC 9110 14.2) */
    fl_slice_t spec = trim(fl_slice(h.base + 6, h.len - 6));
    const char *p = spec.base, *end = p + spec.len;
    uint64_t a, b = UINT64_MAX;
    if (p < end && *p == '-') {
        p++;
        if (!parse_u64(&p, end, &a) || p != end)
            return FL_RANGE_NONE;
        if (a == 0 || size == 0)
            return FL_RANGE_UNSATISFIABLE;
        *len = a < size ? a : size;
        *first = size - *len;
        return FL_RANGE_OK;
    }
    if (!parse_u64(&p, end, &a) || p == end || *p++ != '-')
        return FL_RANGE_NONE;
    if (p < end && (!parse_u64(&p, end, &b) || b < a))
        return FL_RANGE_NONE;
    if (p != end)
        return FL_RANGE_NONE;
    if (a >= size)
        return FL_RANGE_UNSATISFIABLE;
    uint64_t last = b < size - 1 ? b : size - 1;
    *first = a;
    *len = last - a + 1;
    return FL_RANGE_OK;
}

/* ---- dates and entity tags ---- */

int64_t fl_static_parse_date(fl_slice_t s)
{
    static const char *const fmts[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%a, %d-%b-%y %H:%M:%S GMT", /* RFC 850 (%a takes the full day name too) */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    char buf[64];
    s = trim(s);
    if (s.len == 0 || s.len >= sizeof(buf))
        return -1;
    memcpy(buf, s.base, s.len);
    buf[s.len] = '\0';
    for (size_t i = 0; i < FL_ARRAY_SIZE(fmts); i++) {
        struct tm tm = {0};
        const char *e = strptime(buf, fmts[i], &tm);
        if (e && *e == '\0')
            return (int64_t)timegm(&tm);
    }
    return -1;
}

static void format_date(char *buf, size_t cap, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

bool fl_static_etag_match(fl_slice_t list, fl_slice_t etag, bool weak)
{
    list = trim(list);
    if (fl_slice_eq(list, "*", 1))
        return true;
    bool etag_weak = etag.len >= 2 && etag.base[0] == 'W' && etag.base[1] == '/';
    fl_slice_t opaque = etag_weak ? fl_slice(etag.base + 2, etag.len - 2) : etag;
    if (!opaque.len || (!weak && etag_weak))
        return false;
    const char *p = list.base, *end = p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        bool w = end - p >= 2 && p[0] == 'W' && p[1] == '/';
        const char *t = w ? p + 2 : p;
        const char *close = t < end && *t == '"' ? memchr(t + 1, '"', (size_t)(end - t - 1)) : NULL;
        if (!close) { /* not a tag: skip to the next element */
            const char *comma = memchr(p, ',', (size_t)(end - p));
            p = comma ? comma + 1 : end;
            continue;
        }
        size_t n = (size_t)(close + 1 - t);
        if ((weak || !w) && n == opaque.len && memcmp(t, opaque.base, n) == 0)
            return true;
        p = close + 1;
    }
    return false;
}

/* ---- opening a file below the root ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The path the kernel gives for an open descriptor; 0 or -1. */
static int fd_path(int fd, char *buf, size_t cap, size_t *len)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, buf, cap - 1);
    if (n < 0 || (size_t)n >= cap - 1)
        return -1;
    buf[n] = '\0';
    *len = (size_t)n;
    return 0;
}

/* (Re)opens the root when it is missing or `dir` now names another directory. */
static struct fl_static_root *root_get(fl_static_opts_t *o)
{
    struct fl_static_root *r = o->root;
    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return NULL;
        r->fd = -1;
        o->root = r;
    }
    int64_t now = now_ms();
    if (r->fd >= 0 && now - r->checked_ms < ROOT_RECHECK_MS)
        return r;
    r->checked_ms = now;
    struct stat st;
    int rc = stat(o->dir, &st);
    if (rc < 0 || !S_ISDIR(st.st_mode)) {
        if (!r->warned)
            fl_warn("http.static.dir %s: %s", o->dir, rc < 0 ? strerror(errno) : "not a directory");
        r->warned = true;
        return r->fd >= 0 ? r : NULL; /* keep serving the last good root */
    }
    if (r->fd >= 0 && st.st_dev == r->dev && st.st_ino == r->ino)
        return r;
    int fd = open(o->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat fst;
    if (fd < 0 || fstat(fd, &fst) < 0) {
        if (fd >= 0)
            close(fd);
        return r->fd >= 0 ? r : NULL;
    }
    size_t len = 0;
    if (fd_path(fd, r->real, sizeof(r->real), &len) < 0) {
        if (!realpath(o->dir, r->real)) {
            close(fd);
            return r->fd >= 0 ? r : NULL;
        }
        len = strlen(r->real);
    }
    if (r->fd >= 0)
        close(r->fd);
    r->fd = fd;
    r->dev = fst.st_dev;
    r->ino = fst.st_ino;
    r->real_len = len;
    r->warned = false;
    return r;
}

static bool below_root(const struct fl_static_root *r, const char *path, size_t len)
{
    if (r->real_len == 1 && r->real[0] == '/')
        return true;
    return len > r->real_len && memcmp(path, r->real, r->real_len) == 0 && path[r->real_len] == '/';
}

static bool have_openat2 = true;

#define OPEN_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

/* Open rel below the root with symlinks followed, verified by where the descriptor really is. */
static int open_verified(const struct fl_static_root *r, const char *rel)
{
    int fd = openat(r->fd, rel, OPEN_FLAGS);
    if (fd < 0)
        return -errno;
    char real[PATH_MAX];
    size_t len;
    if (fd_path(fd, real, sizeof(real), &len) < 0 || !below_root(r, real, len)) {
        close(fd);
        return -EXDEV;
    }
    return fd;
}

/* A descriptor for rel (no leading '/', no `..` segment), or -errno; -EXDEV when the path leaves
 * the root through a symlink. force_verified skips openat2 (tests). */
static int open_beneath(const struct fl_static_root *r, const char *rel, bool force_verified)
{
#if defined(__linux__) && defined(SYS_openat2)
    if (have_openat2 && !force_verified) {
        struct open_how how = {.flags = OPEN_FLAGS,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        int fd = (int)syscall(SYS_openat2, r->fd, rel, &how, sizeof(how));
        if (fd >= 0)
            return fd;
        if (errno == ENOSYS || errno == EPERM) /* old kernel, or a seccomp filter */
            have_openat2 = false;
        else if (errno != EXDEV) /* EXDEV: maybe an absolute symlink that stays inside */
            return -errno;
    }
#endif
    return open_verified(r, rel);
}

/* symlinks: off. -EXDEV when a component below the root is a symlink. */
static int open_no_symlinks(const struct fl_static_root *r, const char *rel, bool force_verified)
{
#if defined(__linux__) && defined(SYS_openat2)
    if (have_openat2 && !force_verified) {
        struct open_how how = {.flags = OPEN_FLAGS,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
        int fd = (int)syscall(SYS_openat2, r->fd, rel, &how, sizeof(how));
        if (fd >= 0)
            return fd;
        if (errno == ELOOP || errno == EXDEV)
            return -EXDEV;
        if (errno != ENOSYS && errno != EPERM)
            return -errno;
        have_openat2 = false;
    }
#endif
    int fd = openat(r->fd, rel, OPEN_FLAGS | O_NOFOLLOW);
    if (fd < 0)
        return errno == ELOOP ? -EXDEV : -errno;
    /* No symlink crossed <=> the kernel's path for it is the root's real path + "/" + rel. */
    char real[PATH_MAX];
    size_t len, rl = strlen(rel), base = r->real_len == 1 ? 0 : r->real_len; /* root "/" */
    if (fd_path(fd, real, sizeof(real), &len) < 0 || len != base + 1 + rl ||
        memcmp(real, r->real, base) != 0 || real[base] != '/' ||
        memcmp(real + base + 1, rel, rl) != 0) {
        close(fd);
        return -EXDEV;
    }
    return fd;
}

/* rel (no leading '/', no `..` segment) opened as http.static.symlinks says; -errno, -EXDEV for
 * a symlink it refuses. */
static int open_rel(const struct fl_static_root *r, const char *rel, int symlinks)
{
    if (symlinks == FL_STATIC_SYMLINKS_INSIDE)
        return open_beneath(r, rel, false);
    if (symlinks == FL_STATIC_SYMLINKS_OFF)
        return open_no_symlinks(r, rel, false);
    int fd = openat(r->fd, rel, OPEN_FLAGS);
    return fd < 0 ? -errno : fd;
}

void fl_static_free(fl_static_opts_t *o)
{
    if (o->root && o->root->fd >= 0)
        close(o->root->fd);
    free(o->root);
    o->root = NULL;
}

#ifndef FL_STATIC_NO_CONN /* the unit test includes this file without the HTTP server */

#include "http.h"

static void header_line(fl_buf_t *b, const char *name, const char *value)
{
    fl_buf_puts(b, name);
    fl_buf_puts(b, ": ");
    fl_buf_puts(b, value);
    fl_buf_puts(b, "\r\n");
}

/* RFC 9110 13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since.
 * Returns 412, 304 or 0 (go on). */
static int preconditions(fl_conn_t *c, fl_slice_t etag, time_t mtime)
{
    fl_slice_t h = fl_conn_header(c, "if-match");
    if (h.base) {
        if (!fl_static_etag_match(h, etag, false))
            return 412;
    } else if ((h = fl_conn_header(c, "if-unmodified-since")).base) {
        int64_t t = fl_static_parse_date(h);
        if (t >= 0 && (int64_t)mtime > t)
            return 412;
    }
    h = fl_conn_header(c, "if-none-match");
    if (h.base)
        return fl_static_etag_match(h, etag, true) ? 304 : 0;
    h = fl_conn_header(c, "if-modified-since");
    if (h.base) {
        int64_t t = fl_static_parse_date(h);
        if (t >= 0 && (int64_t)mtime <= t)
            return 304;
    }
    return 0;
}

/* If-Range: the range applies only while the validator still names this representation. */
static bool if_range_ok(fl_conn_t *c, fl_slice_t etag, const char *last_modified)
{
    fl_slice_t h = trim(fl_conn_header(c, "if-range"));
    if (!h.base)
        return true;
    if (h.len && (h.base[0] == '"' || h.base[0] == 'W'))
        return fl_static_etag_match(h, etag, false);
    return fl_slice_eq(h, last_modified, strlen(last_modified));
}

static bool has_header(char *const *pairs, const char *name)
{
    for (; pairs && pairs[0] && pairs[1]; pairs += 2)
        if (strcasecmp(pairs[0], name) == 0)
            return true;
    return false;
}

static void serve(fl_conn_t *c, fl_static_opts_t *o, int fd, const struct stat *st, fl_slice_t ext,
                  bool head)
{
    char etag_buf[64] = "", lm[64];
    if (o->calculate_etag) {
        uint64_t ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
        snprintf(etag_buf, sizeof(etag_buf), "%s\"%llx-%llx\"", o->weak ? "W/" : "",
                 (unsigned long long)ns, (unsigned long long)st->st_size);
    }
    fl_slice_t etag = fl_slice_cstr(etag_buf);
    format_date(lm, sizeof(lm), st->st_mtim.tv_sec);
    int status = preconditions(c, etag, st->st_mtim.tv_sec);

    fl_buf_t h = {0};
    if (status != 304 && !has_header(o->response, "content-type"))
        header_line(&h, "Content-Type", fl_static_mime(ext));
    if (status != 304 || !etag.len)
        header_line(&h, "Last-Modified", lm);
    if (etag.len)
        header_line(&h, "ETag", etag_buf);
    for (char *const *p = o->response; p && p[0] && p[1]; p += 2)
        header_line(&h, p[0], p[1]);
    uint64_t size = (uint64_t)st->st_size, first = 0, len = size;
    if (status == 0) {
        header_line(&h, "Accept-Ranges", "bytes");
        fl_slice_t range = fl_conn_header(c, "range");
        fl_range_t rr = range.base && !head && if_range_ok(c, etag, lm)
                            ? fl_static_range(range, size, &first, &len)
                            : FL_RANGE_NONE;
        if (rr == FL_RANGE_UNSATISFIABLE) {
            fl_buf_printf(&h, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
            status = 416;
        } else if (rr == FL_RANGE_OK) {
            fl_buf_printf(&h, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                          (unsigned long long)(first + len - 1), (unsigned long long)size);
            status = 206;
        } else {
            first = 0, len = size;
        }
    }
    fl_slice_t hs = fl_slice(h.data ? h.data : "", h.len);
    if (status == 0 || status == 206) {
        fl_conn_respond_file(c, status ? status : 200, hs, fd, first, len);
    } else {
        close(fd);
        fl_conn_respond(c, status, hs, FL_SLICE(""));
    }
    fl_buf_free(&h);
}

bool fl_static_try(fl_conn_t *c, fl_static_opts_t *o)
{
    char rel[PATH_MAX];
    int n = fl_static_path(fl_conn_target(c), rel, sizeof(rel));
    if (n == FL_STATIC_FORBIDDEN) {
        fl_conn_respond(c, 403, FL_SLICE("Content-Type: text/plain; charset=utf-8\r\n"),
                        FL_SLICE("403 Forbidden\n"));
        return true;
    }
    fl_slice_t m = fl_conn_method(c);
    bool head = fl_slice_eq(m, "HEAD", 4);
    if (n <= 0 || (!head && !fl_slice_eq(m, "GET", 3)))
        return false;
    fl_slice_t ext = fl_static_ext(rel, (size_t)n);
    if (!ext.len || !fl_static_ext_ok(o, ext))
        return false;
    struct fl_static_root *r = root_get(o);
    if (!r)
        return false;
    int fd = open_rel(r, rel, o->symlinks);
    if (fd == -EXDEV) {
        fl_info("static: /%s %s %s (http.static.symlinks: %s): 403", rel,
                o->symlinks == FL_STATIC_SYMLINKS_OFF ? "goes through a symlink below"
                                                      : "leaves through a symlink",
                o->dir, o->symlinks == FL_STATIC_SYMLINKS_OFF ? "off" : "inside");
        fl_conn_respond(c, 403, FL_SLICE("Content-Type: text/plain; charset=utf-8\r\n"),
                        FL_SLICE("403 Forbidden\n"));
        return true;
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd); /* a directory, a fifo, a device: PHP's business, as in RR */
        return false;
    }
    serve(c, o, fd, &st, ext, head);
    return true;
}

#endif

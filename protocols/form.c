/* Form bodies and uploads. See form.h and spec §6.4–§6.5.
 *
 * The parsers only collect (name, value) pairs and upload records into flat arrays; the JSON
 * trees are built at the end, the way RoadRunner does it: values grouped per exact name (Go's
 * url.Values map), each group mounted into the tree by its PHP-style path, then every map
 * written with its keys sorted. Children are found through one hash table keyed by
 * (parent, key), so a body with 100k fields costs linear time, not quadratic. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "form.h"
#include "httpv1.h"
#include "log.h"

const char fl_form_err_syntax[] = "malformed urlencoded form data";
const char fl_form_err_boundary[] = "no multipart boundary param in Content-Type";
const char fl_form_err_multipart[] = "malformed multipart body";
const char fl_form_err_too_large[] = "multipart: message too large";
const char fl_form_err_conflict[] = "invalid multiple values to key in tree";
const char fl_form_err_nomem[] = "out of memory";

#define FORM_MAX_LEVEL 127               /* deeper paths are dropped (RoadRunner's MaxLevel) */
#define FORM_MAX_VALUE_BYTES (32u << 20) /* Go keeps 32 MiB of multipart data in memory */
#define FORM_MAX_PARTS 1000u
#define FORM_MAX_PART_HEADER 16384

/* ------------------------------------------------------------------------------------ */
/* Storage                                                                                */

void fl_form_init(fl_form_t *f)
{
    memset(f, 0, sizeof(*f));
}

static int form_grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int form_add_field(fl_form_t *f, size_t name_off, size_t name_len, size_t value_off,
                          size_t value_len)
{
    if (form_grow((void **)&f->fields, &f->cap_fields, f->nfields, sizeof(*f->fields)) < 0)
        return -1;
    f->fields[f->nfields++] = (fl_form_field_t){name_off, name_len, value_off, value_len};
    return 0;
}

static fl_slice_t form_str(const fl_form_t *f, size_t off, size_t len)
{
    return fl_slice(f->strs.data + off, len);
}

void fl_form_remove_files(fl_form_t *f)
{
    for (size_t i = 0; i < f->nuploads; i++) {
        fl_upload_t *u = &f->uploads[i];
        if (u->fd >= 0) {
            close(u->fd);
            u->fd = -1;
        }
        if (u->tmp && unlink(u->tmp) < 0 && errno != ENOENT)
            fl_warn("cannot remove the upload %s: %s", u->tmp, strerror(errno));
        free(u->tmp);
        u->tmp = NULL;
    }
}

/* ------------------------------------------------------------------------------------ */
/* application/x-www-form-urlencoded (url.ParseQuery)                                     */

static int form_hex(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* url.QueryUnescape into f->strs; -1 on a bad escape, -2 out of memory. */
static int form_unescape(fl_form_t *f, const char *p, size_t n, size_t *off, size_t *len)
{
    if (fl_buf_reserve(&f->strs, n + 1) < 0)
        return -2;
    *off = f->strs.len;
    char *d = f->strs.data + f->strs.len;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi = i + 2 < n ? form_hex((uint8_t)p[i + 1]) : -1;
            int lo = i + 2 < n ? form_hex((uint8_t)p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            *d++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *d++ = p[i] == '+' ? ' ' : p[i];
        }
    }
    *len = (size_t)(d - (f->strs.data + *off));
    f->strs.len += *len;
    return 0;
}

/* Go keeps parsing after a bad pair but reports the first error, which fails the request. */
int fl_form_urlencoded(fl_form_t *f, fl_slice_t body, const char **err)
{
    const char *p = body.base, *end = body.base + body.len;
    const char *bad = NULL;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *pair = p;
        p = amp ? amp + 1 : end;
        if (stop == pair)
            continue;
        if (memchr(pair, ';', (size_t)(stop - pair))) {
            bad = fl_form_err_syntax;
            continue;
        }
        const char *eq = memchr(pair, '=', (size_t)(stop - pair));
        const char *kend = eq ? eq : stop;
        size_t ko, kl, vo = 0, vl = 0;
        size_t mark = f->strs.len;
        int rc = form_unescape(f, pair, (size_t)(kend - pair), &ko, &kl);
        if (rc == 0 && eq)
            rc = form_unescape(f, eq + 1, (size_t)(stop - eq - 1), &vo, &vl);
        if (rc == -1) {
            f->strs.len = mark;
            bad = fl_form_err_syntax;
            continue;
        }
        if (rc < 0 || form_add_field(f, ko, kl, eq ? vo : f->strs.len, vl) < 0) {
            *err = fl_form_err_nomem;
            return -1;
        }
    }
    if (bad) {
        *err = bad;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* multipart/form-data, streamed                                                          */

enum { MP_PREAMBLE, MP_AFTER_DELIM, MP_HEADERS, MP_BODY, MP_EPILOGUE };
enum { SINK_SKIP, SINK_VALUE, SINK_FILE };

typedef struct fl_multipart {
    const fl_upload_conf_t *conf;
    int state;
    fl_buf_t buf;    /* bytes not consumed yet */
    char delim[208]; /* nl + "--" + boundary */
    size_t dlen;
    const char *nl; /* "\r\n", or "\n" when the first boundary line ends that way */
    size_t nllen;
    unsigned parts;
    size_t value_bytes;
    int sink;
    size_t name_off, name_len; /* current value part */
    size_t value_off;
    size_t upload; /* current file part: index into uploads */
} fl_multipart_t;

/* Media type parameters, RFC 2045 / 2231 light: token or quoted-string values, names
 * case-insensitive; a name*=charset'lang'%XX value wins over the plain one (Go's
 * mime.ParseMediaType). Looks up one parameter into out. */
static void mp_param_value(const char **pp, const char *end, fl_buf_t *val)
{
    const char *p = *pp;
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' && p + 1 < end)
                p++;
            fl_buf_append(val, p, 1);
        }
        p += p < end;
    } else {
        const char *s = p;
        while (p < end && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        fl_buf_append(val, s, (size_t)(p - s));
    }
    *pp = p;
}

/* charset'lang'percent-encoded → the bytes (UTF-8 and ASCII alike); false if malformed. */
static bool mp_decode_2231(const fl_buf_t *v, fl_buf_t *out)
{
    const char *e = v->data + v->len;
    const char *q1 = v->len ? memchr(v->data, '\'', v->len) : NULL;
    const char *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(e - q1 - 1)) : NULL;
    if (!q2)
        return false;
    out->len = 0;
    for (const char *s = q2 + 1; s < e; s++) {
        int hi = *s == '%' && s + 2 < e ? form_hex((uint8_t)s[1]) : -1;
        int lo = hi >= 0 ? form_hex((uint8_t)s[2]) : -1;
        char c = hi >= 0 && lo >= 0 ? (char)(hi << 4 | lo) : *s;
        fl_buf_append(out, &c, 1);
        s += hi >= 0 && lo >= 0 ? 2 : 0;
    }
    return true;
}

static bool mp_param(fl_slice_t v, const char *want, fl_buf_t *out)
{
    const char *p = memchr(v.base, ';', v.len), *end = v.base + v.len;
    size_t wl = strlen(want);
    bool plain = false, ext = false;
    while (p && p < end) {
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *k = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        const char *kend = p;
        while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        if (p >= end || *p != '=')
            continue;
        for (p++; p < end && (*p == ' ' || *p == '\t');)
            p++;
        size_t kl = (size_t)(kend - k);
        fl_buf_t val = {0};
        mp_param_value(&p, end, &val);
        if (!ext && kl == wl + 1 && k[wl] == '*' && strncasecmp(k, want, wl) == 0)
            ext = mp_decode_2231(&val, out);
        else if (!ext && !plain && kl == wl && strncasecmp(k, want, wl) == 0) {
            out->len = 0;
            fl_buf_append(out, val.data, val.len);
            plain = true;
        }
        fl_buf_free(&val);
        p = memchr(p, ';', (size_t)(end - p));
    }
    return plain || ext;
}

int fl_multipart_begin(fl_form_t *f, fl_slice_t ct, const fl_upload_conf_t *conf, const char **err)
{
    fl_buf_t b = {0};
    bool ok = mp_param(ct, "boundary", &b);
    if (!ok || b.len == 0 || b.len > 200) {
        fl_buf_free(&b);
        *err = fl_form_err_boundary;
        return -1;
    }
    fl_multipart_t *m = calloc(1, sizeof(*m));
    if (!m) {
        fl_buf_free(&b);
        *err = fl_form_err_nomem;
        return -1;
    }
    m->conf = conf;
    m->state = MP_PREAMBLE;
    /* Until the first boundary line tells us its line ending, look for "\n--boundary"; a
     * virtual "\n" in front of the body lets a boundary on the very first line match. */
    m->dlen = (size_t)snprintf(m->delim, sizeof(m->delim), "\n--%.*s", (int)b.len, b.data);
    fl_buf_free(&b);
    m->nl = "\r\n";
    m->nllen = 2;
    if (fl_buf_append(&m->buf, "\n", 1) < 0) {
        free(m);
        *err = fl_form_err_nomem;
        return -1;
    }
    f->mp = m;
    return 0;
}

/* Go's path.Ext of the client name, lower-cased, checked against the lists. */
static bool mp_ext_allowed(const fl_upload_conf_t *c, fl_slice_t name)
{
    const char *dot = NULL;
    for (size_t i = name.len; i-- > 0;) {
        if (name.base[i] == '/')
            break;
        if (name.base[i] == '.') {
            dot = name.base + i;
            break;
        }
    }
    char ext[64];
    size_t n = dot ? (size_t)(name.base + name.len - dot) : 0;
    if (n >= sizeof(ext))
        n = sizeof(ext) - 1; /* no configured extension is that long: it will not match */
    for (size_t i = 0; i < n; i++)
        ext[i] = (char)((dot[i] >= 'A' && dot[i] <= 'Z') ? dot[i] + 32 : dot[i]);
    ext[n] = '\0';
    for (char *const *p = c->forbid; p && *p; p++)
        if (strcmp(*p, ext) == 0)
            return false;
    if (!c->allow || !c->allow[0])
        return true;
    for (char *const *p = c->allow; *p; p++)
        if (strcmp(*p, ext) == 0)
            return true;
    return false;
}

/* os.CreateTemp(dir, "upload"): "upload" + random digits, created exclusively, mode 0600. */
static int mp_create_temp(const fl_upload_conf_t *c, char **path)
{
    const char *dir = c->dir;
    if (!dir || !*dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    for (int tries = 0; tries < 100; tries++) {
        uint32_t r;
        if (getrandom(&r, sizeof(r), 0) != sizeof(r))
            r = (uint32_t)rand() ^ (uint32_t)getpid() << 16;
        char name[4096];
        int len = snprintf(name, sizeof(name), "%s%supload%u", dir,
                           dir[strlen(dir) - 1] == '/' ? "" : "/", r);
        if (len < 0 || (size_t)len >= sizeof(name))
            return -1;
        int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return -1;
        if (!(*path = strdup(name))) {
            close(fd);
            unlink(name);
            return -1;
        }
        if (c->uid && c->gid && fchown(fd, c->uid, c->gid) < 0)
            fl_warn("cannot chown the upload %s: %s", name, strerror(errno));
        return fd;
    }
    return -1;
}

/* filepath.Base as Go's multipart FileName() applies it. */
static fl_slice_t mp_basename(fl_slice_t s)
{
    while (s.len > 1 && s.base[s.len - 1] == '/')
        s.len--;
    for (size_t i = s.len; i-- > 0;)
        if (s.base[i] == '/' && s.len > 1)
            return fl_slice(s.base + i + 1, s.len - i - 1);
    return s;
}

static int mp_push_str(fl_form_t *f, fl_slice_t s, size_t *off)
{
    *off = f->strs.len;
    return fl_buf_append(&f->strs, s.base, s.len);
}

static int mp_start_file(fl_form_t *f, fl_multipart_t *m, fl_slice_t name, fl_slice_t file,
                         fl_slice_t mime)
{
    if (form_grow((void **)&f->uploads, &f->cap_uploads, f->nuploads, sizeof(*f->uploads)) < 0)
        return -1;
    fl_upload_t *u = &f->uploads[f->nuploads];
    memset(u, 0, sizeof(*u));
    u->fd = -1;
    u->field_len = name.len;
    u->file_len = file.len;
    u->mime_len = mime.len;
    if (mp_push_str(f, name, &u->field_off) < 0 || mp_push_str(f, file, &u->file_off) < 0 ||
        mp_push_str(f, mime, &u->mime_off) < 0)
        return -1;
    f->nuploads++;
    m->upload = f->nuploads - 1;
    m->sink = SINK_FILE;
    if (!mp_ext_allowed(m->conf, file)) {
        u->error = FL_UPLOAD_EXTENSION;
        return 0;
    }
    u->fd = mp_create_temp(m->conf, &u->tmp);
    if (u->fd < 0)
        u->error = FL_UPLOAD_NO_TMP_DIR;
    return 0;
}

/* One header line "Name: value" of a part; returns the value when the name matches. */
static bool mp_header(fl_slice_t line, const char *want, fl_slice_t *value)
{
    const char *colon = memchr(line.base, ':', line.len);
    size_t wl = strlen(want);
    if (!colon)
        return false;
    size_t nl = (size_t)(colon - line.base);
    while (nl && (line.base[nl - 1] == ' ' || line.base[nl - 1] == '\t'))
        nl--;
    if (nl != wl || strncasecmp(line.base, want, wl) != 0)
        return false;
    const char *v = colon + 1, *e = line.base + line.len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    *value = fl_slice(v, (size_t)(e - v));
    return true;
}

/* The part's header block (without the blank line) decides where its bytes go. */
static int mp_begin_part(fl_form_t *f, fl_multipart_t *m, fl_slice_t block, const char **err)
{
    fl_slice_t disp = FL_SLICE_NULL, type = FL_SLICE("");
    const char *p = block.base, *end = block.base + block.len;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        fl_slice_t line = fl_slice(p, (size_t)((lf ? lf : end) - p));
        p = lf ? lf + 1 : end;
        fl_slice_t v;
        if (!disp.base && mp_header(line, "content-disposition", &v))
            disp = v;
        else if (mp_header(line, "content-type", &v))
            type = v;
    }
    if (++m->parts > (m->conf->max_parts ? m->conf->max_parts : FORM_MAX_PARTS)) {
        *err = fl_form_err_too_large;
        return -1;
    }
    m->sink = SINK_SKIP;
    /* FormName(): only "form-data" dispositions have a name; nameless parts are skipped. */
    size_t tl = 0;
    while (disp.base && tl < disp.len && disp.base[tl] != ';' && disp.base[tl] != ' ')
        tl++;
    if (!disp.base || tl != 9 || strncasecmp(disp.base, "form-data", 9) != 0)
        return 0;
    fl_buf_t name = {0}, file = {0};
    int rc = 0;
    if (mp_param(disp, "name", &name) && name.len) {
        if (mp_param(disp, "filename", &file) && file.len) {
            rc = mp_start_file(f, m, fl_slice(name.data, name.len),
                               mp_basename(fl_slice(file.data, file.len)), type);
        } else {
            m->sink = SINK_VALUE;
            rc = mp_push_str(f, fl_slice(name.data, name.len), &m->name_off);
            m->name_len = name.len;
            m->value_off = f->strs.len;
        }
    }
    fl_buf_free(&name);
    fl_buf_free(&file);
    if (rc < 0)
        *err = fl_form_err_nomem;
    return rc;
}

static int mp_sink(fl_form_t *f, fl_multipart_t *m, const char *p, size_t n, const char **err)
{
    if (!n)
        return 0;
    if (m->sink == SINK_VALUE) {
        size_t max = m->conf->max_value_bytes ? m->conf->max_value_bytes : FORM_MAX_VALUE_BYTES;
        m->value_bytes += n;
        if (m->value_bytes > max) {
            *err = fl_form_err_too_large;
            return -1;
        }
        if (fl_buf_append(&f->strs, p, n) < 0) {
            *err = fl_form_err_nomem;
            return -1;
        }
    } else if (m->sink == SINK_FILE) {
        fl_upload_t *u = &f->uploads[m->upload];
        while (u->fd >= 0 && n) {
            ssize_t w = write(u->fd, p, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                close(u->fd);
                u->fd = -1;
                u->error = FL_UPLOAD_CANT_WRITE;
                break;
            }
            u->size += (uint64_t)w;
            p += w;
            n -= (size_t)w;
        }
    }
    return 0;
}

static int mp_end_part(fl_form_t *f, fl_multipart_t *m, const char **err)
{
    if (m->sink == SINK_VALUE) {
        if (form_add_field(f, m->name_off, m->name_len, m->value_off, f->strs.len - m->value_off) <
            0) {
            *err = fl_form_err_nomem;
            return -1;
        }
    } else if (m->sink == SINK_FILE) {
        fl_upload_t *u = &f->uploads[m->upload];
        if (u->fd >= 0) {
            close(u->fd);
            u->fd = -1;
        }
    }
    m->sink = SINK_SKIP;
    return 0;
}

/* After "<nl>--boundary": "--" ends the body; optional blanks then a newline starts a part.
 * Returns bytes used (> 0), 0 when more input is needed, -1 when it is not a boundary. */
static ssize_t mp_after_delim(fl_multipart_t *m, const char *p, size_t n, bool *final)
{
    *final = false;
    if (n < 2)
        return 0;
    if (p[0] == '-' && p[1] == '-') {
        *final = true;
        return 2;
    }
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i == n || (p[i] == '\r' && i + 1 == n))
        return 0;
    if (p[i] == '\n')
        return (ssize_t)(i + 1);
    if (p[i] == '\r' && p[i + 1] == '\n')
        return (ssize_t)(i + 2);
    (void)m;
    return -1;
}

/* The first boundary line fixes the newline style of every later delimiter (Go does this). */
static void mp_fix_newline(fl_multipart_t *m, const char *line_end, size_t used)
{
    bool crlf = used >= 2 && line_end[used - 2] == '\r';
    m->nl = crlf ? "\r\n" : "\n";
    m->nllen = crlf ? 2 : 1;
    size_t blen = m->dlen - 1; /* "--boundary" */
    memmove(m->delim + m->nllen, m->delim + 1, blen);
    memcpy(m->delim, m->nl, m->nllen);
    m->dlen = m->nllen + blen;
}

/* One step of the state machine over buf[*pos..]; returns 1 to go on, 0 for more input. */
static int mp_step(fl_form_t *f, fl_multipart_t *m, size_t *pos, const char **err)
{
    const char *p = m->buf.data + *pos;
    size_t n = m->buf.len - *pos;
    switch (m->state) {
    case MP_PREAMBLE:
    case MP_BODY: {
        const char *d = memmem(p, n, m->delim, m->dlen);
        size_t upto = d ? (size_t)(d - p) : (n >= m->dlen ? n - m->dlen + 1 : 0);
        if (m->state == MP_BODY && mp_sink(f, m, p, upto, err) < 0)
            return -1;
        *pos += upto;
        if (!d)
            return 0;
        bool final;
        ssize_t used = mp_after_delim(m, d + m->dlen, n - upto - m->dlen, &final);
        if (used == 0)
            return 0; /* keep the delimiter until we see what follows it */
        if (used < 0) {
            /* not a boundary line: its first byte is data */
            if (m->state == MP_BODY && mp_sink(f, m, d, 1, err) < 0)
                return -1;
            *pos += 1;
            return 1;
        }
        *pos += m->dlen + (size_t)used;
        if (m->state == MP_PREAMBLE && !final)
            mp_fix_newline(m, d + m->dlen, (size_t)used);
        if (m->state == MP_BODY && mp_end_part(f, m, err) < 0)
            return -1;
        m->state = final ? MP_EPILOGUE : MP_HEADERS;
        return 1;
    }
    case MP_HEADERS: {
        const char *hend = NULL;
        size_t skip = 0;
        if (n >= m->nllen && memcmp(p, m->nl, m->nllen) == 0) {
            hend = p;
            skip = m->nllen;
        } else {
            char dbl[4];
            memcpy(dbl, m->nl, m->nllen);
            memcpy(dbl + m->nllen, m->nl, m->nllen);
            const char *x = memmem(p, n, dbl, 2 * m->nllen);
            if (x) {
                hend = x + m->nllen;
                skip = m->nllen;
            }
        }
        if (!hend) {
            if (n > FORM_MAX_PART_HEADER) {
                *err = fl_form_err_multipart;
                return -1;
            }
            return 0;
        }
        if (mp_begin_part(f, m, fl_slice(p, (size_t)(hend - p)), err) < 0)
            return -1;
        *pos += (size_t)(hend - p) + skip;
        m->state = MP_BODY;
        return 1;
    }
    default: /* epilogue: ignored */
        *pos = m->buf.len;
        return 0;
    }
}

int fl_multipart_feed(fl_form_t *f, const char *p, size_t n, const char **err)
{
    fl_multipart_t *m = f->mp;
    if (!m || fl_buf_append(&m->buf, p, n) < 0) {
        *err = m ? fl_form_err_nomem : fl_form_err_multipart;
        return -1;
    }
    size_t pos = 0;
    int rc;
    while ((rc = mp_step(f, m, &pos, err)) > 0)
        ;
    fl_buf_consume(&m->buf, pos);
    return rc < 0 ? -1 : 0;
}

int fl_multipart_end(fl_form_t *f, const char **err)
{
    fl_multipart_t *m = f->mp;
    if (!m) {
        *err = fl_form_err_multipart;
        return -1;
    }
    bool ok = m->state == MP_EPILOGUE;
    mp_end_part(f, m, err); /* closes a file left open by a truncated body */
    fl_buf_free(&m->buf);
    free(m);
    f->mp = NULL;
    if (!ok) {
        *err = fl_form_err_multipart; /* Go: "multipart: NextPart: EOF" */
        return -1;
    }
    return 0;
}

void fl_form_free(fl_form_t *f)
{
    if (f->mp) {
        fl_buf_free(&f->mp->buf);
        free(f->mp);
        f->mp = NULL;
    }
    for (size_t i = 0; i < f->nuploads; i++) {
        if (f->uploads[i].fd >= 0)
            close(f->uploads[i].fd);
        free(f->uploads[i].tmp);
    }
    free(f->uploads);
    free(f->fields);
    fl_buf_free(&f->strs);
    memset(f, 0, sizeof(*f));
}

/* ------------------------------------------------------------------------------------ */
/* Names → path segments (fetchIndexes)                                                   */

size_t fl_form_split_name(fl_slice_t name, char *out, size_t *lens)
{
    const uint8_t *s = (const uint8_t *)name.base;
    size_t nkeys = 1, w = 0;
    int pos = 0;
    lens[0] = 0;
    for (size_t i = 0; i < name.len;) {
        uint8_t c = s[i];
        if (c == ' ' || c == '[') {
            pos = c == '[' ? 1 : pos;
            i++;
            continue;
        }
        if (c == ']') {
            if (pos == 1)
                lens[nkeys++] = 0;
            pos = 2;
            i++;
            continue;
        }
        if (pos)
            lens[nkeys++] = 0;
        pos = 0;
        size_t k = c < 0x80 ? 1 : fl_utf8_len(s + i, name.len - i);
        if (k) {
            memcpy(out + w, s + i, k);
            w += k;
            lens[nkeys - 1] += k;
            i += k;
        } else {
            memcpy(out + w, "\xef\xbf\xbd", 3); /* Go ranges over runes: RuneError */
            w += 3;
            lens[nkeys - 1] += 3;
            i++;
        }
    }
    return nkeys;
}

/* ------------------------------------------------------------------------------------ */
/* The tree                                                                               */

enum { N_BRANCH, N_ONE, N_LIST };

typedef struct tnode {
    int kind;
    const char *key;
    size_t klen;
    /* N_ONE: vals[0]; N_LIST: vals[0..nvals); indexes of fields or uploads */
    size_t *vals;
    size_t nvals;
    /* N_BRANCH: children, in creation order (sorted when written) */
    struct tnode **kids;
    size_t nkids, cap_kids;
} tnode_t;

typedef struct {
    const tnode_t *parent;
    tnode_t *child;
} tslot_t;

typedef struct {
    fl_form_t *f;
    bool files;     /* the uploads tree: values are uploads, a single leaf takes the first */
    tslot_t *slots; /* (parent, key) → child */
    size_t nslots, used;
    fl_buf_t keys; /* segment bytes of every name, stable: offsets, not pointers */
    tnode_t root;
    tnode_t groups; /* parent of the name → group entries (see tree_group) */
    const char *err;
} tree_t;

static uint64_t tree_hash(const tnode_t *parent, const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)parent;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static tslot_t *tree_slot(tree_t *t, const tnode_t *parent, const char *k, size_t n)
{
    size_t i = (size_t)tree_hash(parent, k, n) & (t->nslots - 1);
    for (;; i = (i + 1) & (t->nslots - 1)) {
        tslot_t *s = &t->slots[i];
        if (!s->child ||
            (s->parent == parent && s->child->klen == n && memcmp(s->child->key, k, n) == 0))
            return s;
    }
}

static int tree_rehash(tree_t *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 64;
    tslot_t *old = t->slots;
    size_t oldn = t->nslots;
    if (!(t->slots = calloc(n, sizeof(*t->slots)))) {
        t->slots = old;
        return -1;
    }
    t->nslots = n;
    for (size_t i = 0; i < oldn; i++)
        if (old[i].child)
            *tree_slot(t, old[i].parent, old[i].child->key, old[i].child->klen) = old[i];
    free(old);
    return 0;
}

/* Only leaves (and fresh, childless branches) are ever cleared: see tree_mount. */
static void tnode_clear(tnode_t *n)
{
    free(n->vals);
    n->vals = NULL;
    n->nvals = 0;
    n->kind = N_BRANCH;
}

static tnode_t *tree_child(tree_t *t, tnode_t *parent, const char *k, size_t n, bool create)
{
    if (!t->nslots && tree_rehash(t) < 0)
        return NULL;
    tslot_t *s = tree_slot(t, parent, k, n);
    if (s->child || !create)
        return s->child;
    tnode_t *c = calloc(1, sizeof(*c));
    if (!c || form_grow((void **)&parent->kids, &parent->cap_kids, parent->nkids,
                        sizeof(*parent->kids)) < 0) {
        free(c);
        return NULL;
    }
    c->key = k;
    c->klen = n;
    parent->kids[parent->nkids++] = c;
    s->parent = parent;
    s->child = c;
    if (++t->used * 2 > t->nslots && tree_rehash(t) < 0)
        return NULL;
    return c;
}

static fl_slice_t tree_value(const tree_t *t, size_t i)
{
    const fl_form_field_t *fd = &t->f->fields[i];
    return form_str(t->f, fd->value_off, fd->value_len);
}

/* isDataEmpty of what a node holds: "", [] or [""]; uploads are never empty. */
static bool tnode_empty(const tree_t *t, const tnode_t *n)
{
    if (n->kind == N_BRANCH || t->files)
        return false;
    return n->nvals == 0 || (n->nvals == 1 && tree_value(t, n->vals[0]).len == 0);
}

static bool tree_values_empty(const tree_t *t, const size_t *v, size_t nv)
{
    return !t->files && (nv == 0 || (nv == 1 && tree_value(t, v[0]).len == 0));
}

static int tree_set_leaf(tree_t *t, tnode_t *n, const size_t *v, size_t nv, bool list)
{
    tnode_clear(n);
    size_t keep = list ? nv : 1;
    if (!(n->vals = malloc(keep * sizeof(size_t)))) {
        t->err = fl_form_err_nomem;
        return -1;
    }
    if (list)
        memcpy(n->vals, v, nv * sizeof(size_t));
    else
        n->vals[0] = t->files ? v[0] : v[nv - 1]; /* data: last value wins; files: the first */
    n->nvals = keep;
    n->kind = list ? N_LIST : N_ONE;
    return 0;
}

static int tree_conflict(tree_t *t, const char *k, size_t n)
{
    snprintf(t->f->errkey, sizeof(t->f->errkey), "%.*s", (int)(n > 120 ? 120 : n), k);
    t->err = fl_form_err_conflict;
    return -1;
}

/* RoadRunner's mount + prepareTreeNode, one segment per iteration. Where Go would panic
 * (descending into a leaf), an empty leaf becomes a branch and a full one is a conflict. */
static int tree_mount(tree_t *t, const char *segs, const size_t *lens, size_t nseg, const size_t *v,
                      size_t nv)
{
    tnode_t *node = &t->root;
    bool in_empty = tree_values_empty(t, v, nv);
    for (size_t i = 0; i < nseg; i++) {
        const char *k = segs;
        size_t rem = nseg - i;
        bool next_empty = rem > 1 && lens[i + 1] == 0;
        bool leaf_in = rem == 1 || (rem == 2 && next_empty);
        tnode_t *c = tree_child(t, node, k, lens[i], false);
        if (!c) {
            if (!(c = tree_child(t, node, k, lens[i], true))) {
                t->err = fl_form_err_nomem;
                return -1;
            }
        } else if (c->kind != N_BRANCH) {
            bool have_empty = tnode_empty(t, c);
            if (!have_empty && rem > 1 && !next_empty)
                return tree_conflict(t, k, lens[i]);
            if (!have_empty && in_empty)
                return 0;
            if (have_empty && !in_empty)
                tnode_clear(c);
        } else if (leaf_in) {
            return in_empty ? 0 : tree_conflict(t, k, lens[i]);
        }
        if (rem <= 2 && leaf_in)
            return tree_set_leaf(t, c, v, nv, rem == 2);
        if (c->kind != N_BRANCH) {
            if (!tnode_empty(t, c))
                return tree_conflict(t, k, lens[i]);
            tnode_clear(c);
        }
        node = c;
        segs += lens[i];
    }
    return 0;
}

/* Values grouped by exact name, in order of first appearance (Go: one url.Values entry). */
typedef struct {
    size_t first;  /* index of the first item with this name */
    size_t *items; /* every item's index */
    size_t n, cap;
} tgroup_t;

static fl_slice_t tree_item_name(const tree_t *t, size_t i)
{
    if (t->files)
        return form_str(t->f, t->f->uploads[i].field_off, t->f->uploads[i].field_len);
    return form_str(t->f, t->f->fields[i].name_off, t->f->fields[i].name_len);
}

/* Groups through the same hash, under a parent that is not part of the tree. */
static int tree_group(tree_t *t, size_t nitems, tgroup_t **out, size_t *nout)
{
    tgroup_t *g = NULL;
    size_t ng = 0, capg = 0;
    for (size_t i = 0; i < nitems; i++) {
        fl_slice_t name = tree_item_name(t, i);
        tnode_t *slot = tree_child(t, &t->groups, name.base, name.len, false);
        size_t gi;
        if (slot) {
            gi = slot->nvals; /* the group index is parked in the entry */
        } else {
            if (form_grow((void **)&g, &capg, ng, sizeof(*g)) < 0 ||
                !(slot = tree_child(t, &t->groups, name.base, name.len, true)))
                goto oom;
            slot->nvals = gi = ng;
            g[ng++] = (tgroup_t){i, NULL, 0, 0};
        }
        tgroup_t *gr = &g[gi];
        if (form_grow((void **)&gr->items, &gr->cap, gr->n, sizeof(size_t)) < 0)
            goto oom;
        gr->items[gr->n++] = i;
    }
    *out = g;
    *nout = ng;
    return 0;
oom:
    for (size_t i = 0; i < ng; i++)
        free(g[i].items);
    free(g);
    t->err = fl_form_err_nomem;
    return -1;
}

static void tree_free(tree_t *t)
{
    /* nodes orphaned by tnode_clear are still in the hash: free through it */
    for (size_t i = 0; i < t->nslots; i++) {
        tnode_t *c = t->slots[i].child;
        if (!c)
            continue;
        free(c->vals);
        free(c->kids);
        free(c);
    }
    free(t->root.kids);
    free(t->groups.kids);
    free(t->slots);
    fl_buf_free(&t->keys);
}

static int tree_build(tree_t *t, size_t nitems)
{
    tgroup_t *g;
    size_t ng;
    if (tree_group(t, nitems, &g, &ng) < 0)
        return -1;
    /* Every name's segments go into one buffer sized up front: node keys point into it. */
    size_t total = 0;
    for (size_t i = 0; i < ng; i++)
        total += 3 * tree_item_name(t, g[i].first).len + 1;
    int rc = fl_buf_reserve(&t->keys, total) < 0 ? -1 : 0;
    size_t *lens = NULL;
    for (size_t i = 0; rc == 0 && i < ng; i++) {
        fl_slice_t name = tree_item_name(t, g[i].first);
        size_t *nl = realloc(lens, (name.len + 1) * sizeof(size_t));
        if (!nl) {
            rc = -1;
            break;
        }
        lens = nl;
        char *segs = t->keys.data + t->keys.len;
        size_t nseg = fl_form_split_name(name, segs, lens);
        for (size_t k = 0; k < nseg; k++)
            t->keys.len += lens[k];
        if (nseg <= FORM_MAX_LEVEL)
            rc = tree_mount(t, segs, lens, nseg, g[i].items, g[i].n);
    }
    if (rc < 0 && !t->err)
        t->err = fl_form_err_nomem;
    free(lens);
    for (size_t i = 0; i < ng; i++)
        free(g[i].items);
    free(g);
    return rc;
}

/* ---- JSON ---- */

static int tnode_cmp(const void *a, const void *b)
{
    const tnode_t *x = *(tnode_t *const *)a, *y = *(tnode_t *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static int json_upload(const tree_t *t, fl_buf_t *o, size_t i)
{
    const fl_upload_t *u = &t->f->uploads[i];
    int rc = fl_buf_puts(o, "{\"name\":");
    rc |= fl_httpv1_json_str(o, form_str(t->f, u->file_off, u->file_len));
    rc |= fl_buf_puts(o, ",\"mime\":");
    rc |= fl_httpv1_json_str(o, form_str(t->f, u->mime_off, u->mime_len));
    rc |= fl_buf_printf(o, ",\"size\":%llu,\"error\":%d,\"tmpName\":", (unsigned long long)u->size,
                        u->error);
    rc |= fl_httpv1_json_str(o, fl_slice_cstr(u->tmp ? u->tmp : ""));
    rc |= fl_buf_puts(o, "}");
    return rc ? -1 : 0;
}

static int json_value(const tree_t *t, fl_buf_t *o, size_t i)
{
    return t->files ? json_upload(t, o, i) : fl_httpv1_json_str(o, tree_value(t, i));
}

static int json_node(const tree_t *t, fl_buf_t *o, tnode_t *n)
{
    int rc = 0;
    if (n->kind == N_ONE)
        return json_value(t, o, n->vals[0]);
    if (n->kind == N_LIST) {
        rc |= fl_buf_puts(o, "[");
        for (size_t i = 0; i < n->nvals; i++) {
            if (i)
                rc |= fl_buf_puts(o, ",");
            rc |= json_value(t, o, n->vals[i]);
        }
        return rc | fl_buf_puts(o, "]");
    }
    qsort(n->kids, n->nkids, sizeof(*n->kids), tnode_cmp);
    rc |= fl_buf_puts(o, "{");
    for (size_t i = 0; i < n->nkids; i++) {
        if (i)
            rc |= fl_buf_puts(o, ",");
        rc |= fl_httpv1_json_str(o, fl_slice(n->kids[i]->key, n->kids[i]->klen));
        rc |= fl_buf_puts(o, ":");
        rc |= json_node(t, o, n->kids[i]);
    }
    return rc | fl_buf_puts(o, "}");
}

static int tree_json(fl_form_t *f, bool files, fl_buf_t *out, const char **err)
{
    size_t nitems = files ? f->nuploads : f->nfields;
    if (nitems == 0)
        return 0;
    tree_t t = {.f = f, .files = files};
    size_t start = out->len;
    int rc = tree_build(&t, nitems);
    if (rc == 0 && t.root.nkids && json_node(&t, out, &t.root) < 0) {
        t.err = fl_form_err_nomem;
        rc = -1;
    }
    tree_free(&t);
    if (rc < 0) {
        out->len = start;
        *err = t.err;
    }
    return rc;
}

int fl_form_json(fl_form_t *f, fl_buf_t *out, const char **err)
{
    return tree_json(f, false, out, err);
}

int fl_uploads_json(fl_form_t *f, fl_buf_t *out, const char **err)
{
    return tree_json(f, true, out, err);
}

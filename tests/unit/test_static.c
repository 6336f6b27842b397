/* Unit tests for reactor/static.c, the parts that need no connection: target → path (`..`,
 * %-escapes, absolute-form), extensions and forbid/allow, the MIME table, single byte ranges,
 * HTTP dates, entity-tag comparison, and opening below the root with real symlinks (openat2 and
 * the /proc-verified fallback), including a root whose symlink is swapped by a deploy. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define FL_STATIC_NO_CONN
#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../reactor/static.c"
#include "test.h"

/* ---- helpers ---- */

static int path_of(const char *target, char *out)
{
    return fl_static_path(fl_slice_cstr(target), out, PATH_MAX);
}

static void expect_path(const char *target, const char *want)
{
    char out[PATH_MAX];
    int n = path_of(target, out);
    CU_ASSERT_EQUAL(n, (int)strlen(want));
    if (n >= 0) {
        CU_ASSERT_STRING_EQUAL(out, want);
        if (strcmp(out, want) != 0)
            printf("\n  %s -> %s, want %s\n", target, out, want);
    }
}

static fl_range_t range_of(const char *h, uint64_t size, uint64_t *first, uint64_t *len)
{
    *first = *len = 12345;
    return fl_static_range(fl_slice_cstr(h), size, first, len);
}

static bool etag_eq(const char *list, const char *etag, bool weak)
{
    return fl_static_etag_match(fl_slice_cstr(list), fl_slice_cstr(etag), weak);
}

/* ---- target → path ---- */

static void test_path_plain(void)
{
    expect_path("/a.css", "a.css");
    expect_path("/css/app.css", "css/app.css");
    expect_path("/css/app.css?v=3#x", "css/app.css");
    expect_path("//css///./app.css", "css/app.css");
    expect_path("/css/app.css/", "css/app.css");
    expect_path("/", "");
    expect_path("/?x", "");
    expect_path("http://example.com/img/a.png?x=1", "img/a.png");
    expect_path("/a%20b.txt", "a b.txt");
    expect_path("/a%2fb.txt", "a/b.txt");
    expect_path("/a..b.css", "a..b.css"); /* a name, not a parent reference */
    expect_path("/...", "...");
}

static void test_path_forbidden(void)
{
    char out[PATH_MAX];
    CU_ASSERT_EQUAL(path_of("/../etc/passwd", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("/a/../../etc/passwd", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("/a/..", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("/%2e%2e/etc/passwd", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("/%2E%2e%2fetc/passwd", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("/a/.%2e/b.txt", out), FL_STATIC_FORBIDDEN);
    CU_ASSERT_EQUAL(path_of("http://h/../x.txt", out), FL_STATIC_FORBIDDEN);
}

static void test_path_miss(void)
{
    char out[PATH_MAX], small[8];
    CU_ASSERT_EQUAL(path_of("", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(path_of("*", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(path_of("example.com:443", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(path_of("/a%00.txt", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(path_of("/a%zz.txt", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(path_of("/a%2", out), FL_STATIC_MISS);
    CU_ASSERT_EQUAL(fl_static_path(FL_SLICE("/longer-than-8.txt"), small, sizeof(small)),
                    FL_STATIC_MISS);
}

/* ---- extensions ---- */

static void test_ext(void)
{
    const char *p = "css/app.min.CSS";
    fl_slice_t e = fl_static_ext(p, strlen(p));
    CU_ASSERT_TRUE(fl_slice_eq(e, "CSS", 3));
    p = "dir.d/README";
    CU_ASSERT_EQUAL(fl_static_ext(p, strlen(p)).len, 0);
    p = ".htaccess";
    CU_ASSERT_TRUE(fl_slice_eq(fl_static_ext(p, strlen(p)), "htaccess", 8));
    p = "file.";
    CU_ASSERT_EQUAL(fl_static_ext(p, strlen(p)).len, 0);
}

static void test_ext_lists(void)
{
    char *forbid[] = {".php", "htaccess", NULL};
    char *allow[] = {".css", ".js", ".php", NULL};
    char *empty_allow[] = {"", NULL};
    fl_static_opts_t o = {.forbid = forbid};
    CU_ASSERT_TRUE(fl_static_ext_ok(&o, FL_SLICE("css")));
    CU_ASSERT_FALSE(fl_static_ext_ok(&o, FL_SLICE("php")));
    CU_ASSERT_FALSE(fl_static_ext_ok(&o, FL_SLICE("PHP")));
    CU_ASSERT_FALSE(fl_static_ext_ok(&o, FL_SLICE("htaccess")));
    CU_ASSERT_TRUE(fl_static_ext_ok(&o, FL_SLICE("phps")));
    o.allow = allow;
    CU_ASSERT_TRUE(fl_static_ext_ok(&o, FL_SLICE("js")));
    CU_ASSERT_FALSE(fl_static_ext_ok(&o, FL_SLICE("png")));
    CU_ASSERT_FALSE(fl_static_ext_ok(&o, FL_SLICE("php"))); /* forbid wins over allow */
    o.allow = empty_allow;                                  /* [""] allows everything */
    CU_ASSERT_TRUE(fl_static_ext_ok(&o, FL_SLICE("png")));
}

/* ---- Content-Type ---- */

static void test_mime(void)
{
    for (size_t i = 1; i < FL_ARRAY_SIZE(mime_types); i++) {
        bool sorted = strcmp(mime_types[i - 1].ext, mime_types[i].ext) < 0;
        CU_ASSERT_TRUE(sorted);
        if (!sorted)
            printf("\n  mime table not sorted at %s\n", mime_types[i].ext);
    }
    for (size_t i = 0; i < FL_ARRAY_SIZE(mime_types); i++) /* every row is found */
        CU_ASSERT_PTR_EQUAL(fl_static_mime(fl_slice_cstr(mime_types[i].ext)), mime_types[i].type);
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("css")), "text/css; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("JS")), "text/javascript; charset=utf-8");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("Png")), "image/png");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("woff2")), "font/woff2");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("svg")), "image/svg+xml");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("json")), "application/json");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("jsx")), "application/octet-stream");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("j")), "application/octet-stream");
    CU_ASSERT_STRING_EQUAL(fl_static_mime(FL_SLICE("zzzz")), "application/octet-stream");
}

/* ---- Range ---- */

static void test_range_ok(void)
{
    uint64_t f, l;
    CU_ASSERT_EQUAL(range_of("bytes=0-4", 10, &f, &l), FL_RANGE_OK);
    CU_ASSERT(f == 0 && l == 5);
    CU_ASSERT_EQUAL(range_of("bytes=5-", 10, &f, &l), FL_RANGE_OK);
    CU_ASSERT(f == 5 && l == 5);
    CU_ASSERT_EQUAL(range_of("bytes=-3", 10, &f, &l), FL_RANGE_OK);
    CU_ASSERT(f == 7 && l == 3);
    CU_ASSERT_EQUAL(range_of("bytes=-30", 10, &f, &l), FL_RANGE_OK); /* longer suffix: whole */
    CU_ASSERT(f == 0 && l == 10);
    CU_ASSERT_EQUAL(range_of("bytes=8-100", 10, &f, &l), FL_RANGE_OK); /* end clamped */
    CU_ASSERT(f == 8 && l == 2);
    CU_ASSERT_EQUAL(range_of(" Bytes = 9-9 ", 10, &f, &l), FL_RANGE_NONE); /* no space in unit */
    CU_ASSERT_EQUAL(range_of(" bytes= 9-9 ", 10, &f, &l), FL_RANGE_OK);
    CU_ASSERT(f == 9 && l == 1);
    CU_ASSERT_EQUAL(range_of("bytes=0-99999999999999999999999", 10, &f, &l), FL_RANGE_OK);
    CU_ASSERT(f == 0 && l == 10);
}

static void test_range_unsatisfiable(void)
{
    uint64_t f, l;
    CU_ASSERT_EQUAL(range_of("bytes=10-", 10, &f, &l), FL_RANGE_UNSATISFIABLE);
    CU_ASSERT_EQUAL(range_of("bytes=10-20", 10, &f, &l), FL_RANGE_UNSATISFIABLE);
    CU_ASSERT_EQUAL(range_of("bytes=-0", 10, &f, &l), FL_RANGE_UNSATISFIABLE);
    CU_ASSERT_EQUAL(range_of("bytes=0-", 0, &f, &l), FL_RANGE_UNSATISFIABLE);
    CU_ASSERT_EQUAL(range_of("bytes=-5", 0, &f, &l), FL_RANGE_UNSATISFIABLE);
    CU_ASSERT_EQUAL(range_of("bytes=99999999999999999999999-", 10, &f, &l), FL_RANGE_UNSATISFIABLE);
}

static void test_range_ignored(void)
{
    uint64_t f, l;
    const char *bad[] = {"",           "bytes",     "bytes=",    "bytes=-",
                         "bytes=a-b",  "bytes=5-3", "items=0-1", "bytes=0-1,3-4",
                         "bytes=1-2x", "bytes=--1", "bytes=1"};
    for (size_t i = 0; i < FL_ARRAY_SIZE(bad); i++) {
        fl_range_t r = range_of(bad[i], 10, &f, &l);
        CU_ASSERT_EQUAL(r, FL_RANGE_NONE);
        if (r != FL_RANGE_NONE)
            printf("\n  Range %s: %d\n", bad[i], r);
    }
}

/* ---- dates, entity tags ---- */

static void test_dates(void)
{
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("Sun, 06 Nov 1994 08:49:37 GMT")), 784111777);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("Sunday, 06-Nov-94 08:49:37 GMT")), 784111777);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("Sun Nov  6 08:49:37 1994")), 784111777);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE(" Sun, 06 Nov 1994 08:49:37 GMT ")), 784111777);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("Sun, 06 Nov 1994 08:49:37")), -1);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("yesterday")), -1);
    CU_ASSERT_EQUAL(fl_static_parse_date(FL_SLICE("")), -1);
    char buf[64];
    format_date(buf, sizeof(buf), 784111777);
    CU_ASSERT_STRING_EQUAL(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
}

static void test_etags(void)
{
    CU_ASSERT_TRUE(etag_eq("\"abc\"", "\"abc\"", false));
    CU_ASSERT_TRUE(etag_eq("\"x\", \"abc\"", "\"abc\"", true));
    CU_ASSERT_TRUE(etag_eq("*", "\"abc\"", false));
    CU_ASSERT_TRUE(etag_eq("*", "", true)); /* "*": any current representation */
    CU_ASSERT_FALSE(etag_eq("\"abc\"", "", true));
    CU_ASSERT_FALSE(etag_eq("\"abcd\"", "\"abc\"", true));
    CU_ASSERT_FALSE(etag_eq("\"ab\"", "\"abc\"", true));
    /* weak comparison ignores W/ on both sides; strong never matches a weak tag */
    CU_ASSERT_TRUE(etag_eq("W/\"abc\"", "\"abc\"", true));
    CU_ASSERT_TRUE(etag_eq("\"abc\"", "W/\"abc\"", true));
    CU_ASSERT_FALSE(etag_eq("W/\"abc\"", "\"abc\"", false));
    CU_ASSERT_FALSE(etag_eq("\"abc\"", "W/\"abc\"", false));
    /* junk elements are skipped, not fatal */
    CU_ASSERT_TRUE(etag_eq("junk, \"abc\"", "\"abc\"", true));
    CU_ASSERT_FALSE(etag_eq("\"abc", "\"abc\"", true));
}

/* ---- opening below the root ---- */

static char tdir[] = "/tmp/fl_test_static.XXXXXX";

static void put(const char *rel, const char *content)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tdir, rel);
    FILE *f = fopen(p, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(content, f);
    fclose(f);
}

static void mk(const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tdir, rel);
    CU_ASSERT_EQUAL(mkdir(p, 0755), 0);
}

static void link_to(const char *target, const char *rel)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tdir, rel);
    CU_ASSERT_EQUAL(symlink(target, p), 0);
}

/* What rel reads as through open_beneath: its first bytes, "EXDEV", or "ENOENT"... */
static const char *read_rel(const struct fl_static_root *r, const char *rel, bool verified)
{
    static char buf[64];
    int fd = open_beneath(r, rel, verified);
    if (fd == -EXDEV)
        return "EXDEV";
    if (fd < 0)
        return "ERR";
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_open_beneath(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tdir));
    mk("pub");
    mk("pub/css");
    put("pub/a.txt", "A");
    put("pub/css/b.css", "B");
    put("secret.txt", "SECRET");
    link_to("a.txt", "pub/in.txt");          /* relative, inside */
    link_to("../secret.txt", "pub/out.txt"); /* relative, escaping */
    link_to("..", "pub/up");                 /* a directory escaping */
    link_to("/etc", "pub/etc");              /* absolute, escaping */
    char abs_in[PATH_MAX];
    snprintf(abs_in, sizeof(abs_in), "%s/pub/css/b.css", tdir);
    link_to(abs_in, "pub/abs_in.css"); /* absolute, inside: allowed via the fallback */

    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/pub", tdir);
    fl_static_opts_t o = {.dir = dir};
    struct fl_static_root *r = root_get(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    for (int verified = 0; verified < 2; verified++) {
        CU_ASSERT_STRING_EQUAL(read_rel(r, "a.txt", verified), "A");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "css/b.css", verified), "B");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "in.txt", verified), "A");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "abs_in.css", verified), "B");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "out.txt", verified), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "up/secret.txt", verified), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "etc/hostname", verified), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_rel(r, "none.txt", verified), "ERR");
    }
    fl_static_free(&o);
}

/* What an open returned, read as in read_rel. */
static const char *read_fd(int fd)
{
    static char buf[64];
    if (fd == -EXDEV)
        return "EXDEV";
    if (fd < 0)
        return "ERR";
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* http.static.symlinks: follow goes anywhere (nginx's default), off refuses every symlink below
 * the root, with openat2 and with the /proc check alike (same tree as test_open_beneath). */
static void test_open_symlink_modes(void)
{
    link_to("css", "pub/cssl"); /* a directory symlink that stays inside */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/pub", tdir);
    fl_static_opts_t o = {.dir = dir};
    struct fl_static_root *r = root_get(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "out.txt", FL_STATIC_SYMLINKS_FOLLOW)), "SECRET");
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "up/secret.txt", FL_STATIC_SYMLINKS_FOLLOW)),
                           "SECRET");
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "in.txt", FL_STATIC_SYMLINKS_FOLLOW)), "A");
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "none.txt", FL_STATIC_SYMLINKS_FOLLOW)), "ERR");
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "out.txt", FL_STATIC_SYMLINKS_INSIDE)), "EXDEV");
    CU_ASSERT_STRING_EQUAL(read_fd(open_rel(r, "cssl/b.css", FL_STATIC_SYMLINKS_INSIDE)), "B");
    for (int verified = 0; verified < 2; verified++) {
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "a.txt", verified)), "A");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "css/b.css", verified)), "B");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "in.txt", verified)), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "cssl/b.css", verified)), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "abs_in.css", verified)), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "out.txt", verified)), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "up/secret.txt", verified)), "EXDEV");
        CU_ASSERT_STRING_EQUAL(read_fd(open_no_symlinks(r, "none.txt", verified)), "ERR");
    }
    fl_static_free(&o);
}

/* A deploy swaps the `current` symlink that `dir` goes through: the root follows within the
 * recheck interval (forced here), files of the old release are no longer served. */
static void test_root_follows_symlink_swap(void)
{
    mk("r1");
    mk("r2");
    put("r1/v.txt", "one");
    put("r2/v.txt", "two");
    link_to("r1", "current");
    char dir[PATH_MAX], cur[PATH_MAX], tmp[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/current", tdir);
    fl_static_opts_t o = {.dir = dir};
    struct fl_static_root *r = root_get(&o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(read_rel(r, "v.txt", false), "one");
    snprintf(cur, sizeof(cur), "%s/current", tdir);
    snprintf(tmp, sizeof(tmp), "%s/current.new", tdir);
    CU_ASSERT_EQUAL(symlink("r2", tmp), 0);
    CU_ASSERT_EQUAL(rename(tmp, cur), 0);
    CU_ASSERT_STRING_EQUAL(read_rel(root_get(&o), "v.txt", false), "one"); /* within 1 s */
    r->checked_ms -= 2 * ROOT_RECHECK_MS;
    r = root_get(&o);
    CU_ASSERT_STRING_EQUAL(read_rel(r, "v.txt", false), "two");
    CU_ASSERT_STRING_EQUAL(read_rel(r, "v.txt", true), "two");
    fl_static_free(&o);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

static const fl_test_t tests[] = {
    {"path: plain targets", test_path_plain},
    {"path: .. is forbidden", test_path_forbidden},
    {"path: targets that name no file", test_path_miss},
    {"extension of the last segment", test_ext},
    {"forbid and allow lists", test_ext_lists},
    {"MIME table", test_mime},
    {"Range: satisfiable", test_range_ok},
    {"Range: unsatisfiable", test_range_unsatisfiable},
    {"Range: ignored", test_range_ignored},
    {"HTTP dates", test_dates},
    {"entity tags", test_etags},
    {"open below the root, symlinks", test_open_beneath},
    {"symlinks: follow, inside, off", test_open_symlink_modes},
    {"root follows a swapped symlink", test_root_follows_symlink_swap},
    {NULL, NULL},
};

FL_TEST_MAIN("static", tests)

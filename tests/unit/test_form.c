/* Unit tests for protocols/form.c: urlencoded and multipart bodies → RoadRunner's JSON form and
 * upload trees (spec §6.4, §6.5), temp files, extension filters, conflicts and limits. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../protocols/pb.c"
#include "../../protocols/httpv1.c"
#include "../../protocols/form.c"
#include "test.h"

static char t_dir[] = "/tmp/fl_test_form.XXXXXX";

static const char *t_tmpdir(void)
{
    static bool made;
    if (!made)
        made = mkdtemp(t_dir) != NULL;
    return t_dir;
}

static unsigned t_files_in_dir(void)
{
    unsigned n = 0;
    DIR *d = opendir(t_tmpdir());
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* NUL-terminates a buffer without counting the NUL. */
static void t_cstr(fl_buf_t *b)
{
    fl_buf_append(b, "", 1);
    b->len--;
}

/* Parses urlencoded text and returns the form JSON (static buffer), or "ERR:<key>". */
static const char *t_urlenc(const char *body)
{
    static char out[4096];
    fl_form_t f;
    fl_form_init(&f);
    fl_buf_t b = {0};
    const char *err = NULL;
    if (fl_form_urlencoded(&f, fl_slice_cstr(body), &err) < 0)
        snprintf(out, sizeof(out), "SYNTAX");
    else if (fl_form_json(&f, &b, &err) < 0)
        snprintf(out, sizeof(out), "ERR:%s", err == fl_form_err_conflict ? f.errkey : err);
    else
        snprintf(out, sizeof(out), "%.*s", (int)b.len, b.data ? b.data : "");
    fl_buf_free(&b);
    fl_form_free(&f);
    return out;
}

#define T_EQ(got, want)                                                                            \
    do {                                                                                           \
        const char *g_ = (got);                                                                    \
        if (strcmp(g_, (want)) != 0)                                                               \
            printf("\n  got  %s\n  want %s\n", g_, (want));                                        \
        CU_ASSERT_STRING_EQUAL(g_, (want));                                                        \
    } while (0)

static void test_split_name(void)
{
    struct {
        const char *name;
        const char *want; /* segments joined by '|' */
    } cases[] = {
        {"a", "a"},       {"a[b][c]", "a|b|c"}, {"a[]", "a|"},
        {"a[][]", "a||"}, {"a b[ c ]", "ab|c"}, {"[a]", "|a"},
        {"a]b", "a|b"},   {"a[b", "a|b"},       {"a[b]c", "a|b|c"},
        {"", ""},         {"a[0][x]", "a|0|x"},
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(cases); i++) {
        size_t n = strlen(cases[i].name);
        char segs[64];
        size_t lens[32];
        size_t k = fl_form_split_name(fl_slice(cases[i].name, n), segs, lens);
        char got[128] = "";
        size_t off = 0, w = 0;
        for (size_t j = 0; j < k; j++) {
            if (j)
                got[w++] = '|';
            memcpy(got + w, segs + off, lens[j]);
            w += lens[j];
            off += lens[j];
        }
        got[w] = '\0';
        T_EQ(got, cases[i].want);
    }
    /* an invalid UTF-8 byte becomes U+FFFD, as Go's range over a string yields RuneError */
    char segs[16];
    size_t lens[8];
    CU_ASSERT_EQUAL(fl_form_split_name(FL_SLICE("a\xff"), segs, lens), 1);
    CU_ASSERT_EQUAL(lens[0], 4);
    CU_ASSERT_EQUAL(memcmp(segs, "a\xef\xbf\xbd", 4), 0);
}

static void test_urlencoded_tree(void)
{
    T_EQ(t_urlenc("a=1&b=2&a=3"), "{\"a\":\"3\",\"b\":\"2\"}"); /* last value wins */
    T_EQ(t_urlenc("b=1&a=2"), "{\"a\":\"2\",\"b\":\"1\"}");     /* keys sorted, as Go writes maps */
    T_EQ(t_urlenc("a[]=1&a[]=2"), "{\"a\":[\"1\",\"2\"]}");
    T_EQ(t_urlenc("a[b][c]=1&a[b][d]=2"), "{\"a\":{\"b\":{\"c\":\"1\",\"d\":\"2\"}}}");
    T_EQ(t_urlenc("a[0][x]=1&a[1][x]=2"), "{\"a\":{\"0\":{\"x\":\"1\"},\"1\":{\"x\":\"2\"}}}");
    T_EQ(t_urlenc("q=a+b%20c%2B&e=%C3%A9"), "{\"e\":\"\xc3\xa9\",\"q\":\"a b c+\"}");
    T_EQ(t_urlenc("a b=1"), "{\"ab\":\"1\"}"); /* spaces in names are ignored */
    T_EQ(t_urlenc("flag&x="), "{\"flag\":\"\",\"x\":\"\"}");
    T_EQ(t_urlenc("&&a=1&"), "{\"a\":\"1\"}");
    T_EQ(t_urlenc(""), "");
    T_EQ(t_urlenc("s=%22q%22%5C%0A"), "{\"s\":\"\\\"q\\\"\\\\\\u000a\"}");
}

static void test_urlencoded_conflicts(void)
{
    /* a leaf that later receives sub-keys, or the reverse: the request fails */
    T_EQ(t_urlenc("a=1&a[b]=2"), "ERR:a");
    T_EQ(t_urlenc("a[b]=2&a=1"), "ERR:a");
    T_EQ(t_urlenc("x[y][z]=1&x[y]=2"), "ERR:y");
    /* an empty value never overwrites existing data (RoadRunner's Laravel "options" case) */
    T_EQ(t_urlenc("options=&options[0][id]=7"), "{\"options\":{\"0\":{\"id\":\"7\"}}}");
    T_EQ(t_urlenc("options[0][id]=7&options="), "{\"options\":{\"0\":{\"id\":\"7\"}}}");
    T_EQ(t_urlenc("a=1&a[]="), "{\"a\":\"1\"}");
    /* a list is a leaf: a later scalar replaces it */
    T_EQ(t_urlenc("a[]=1&a[]=2&a=3"), "{\"a\":\"3\"}");
    /* where Go would panic (descending into a leaf), a full leaf is a conflict */
    T_EQ(t_urlenc("a=1&a[][b]=2"), "ERR:a");
}

static void test_urlencoded_syntax(void)
{
    T_EQ(t_urlenc("a=%zz"), "SYNTAX");
    T_EQ(t_urlenc("a=%4"), "SYNTAX");
    T_EQ(t_urlenc("a=1;b=2"), "SYNTAX"); /* Go: invalid semicolon separator in query */
}

static void test_depth_limit(void)
{
    /* 127 segments are kept, 128 dropped silently */
    char name[2048];
    for (int depth = 127; depth <= 128; depth++) {
        size_t w = (size_t)snprintf(name, sizeof(name), "a");
        for (int i = 1; i < depth; i++)
            w += (size_t)snprintf(name + w, sizeof(name) - w, "[k]");
        snprintf(name + w, sizeof(name) - w, "=v&z=1");
        const char *got = t_urlenc(name);
        if (depth == 127) {
            CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"v\""));
        } else {
            T_EQ(got, "{\"z\":\"1\"}");
        }
    }
}

static void test_many_fields_fast(void)
{
    /* 100k distinct fields: the hash keeps this linear */
    fl_buf_t body = {0};
    for (int i = 0; i < 100000; i++)
        fl_buf_printf(&body, "%sf%d[x]=%d", i ? "&" : "", i, i);
    fl_form_t f;
    fl_form_init(&f);
    const char *err = NULL;
    CU_ASSERT_EQUAL(fl_form_urlencoded(&f, fl_slice(body.data, body.len), &err), 0);
    fl_buf_t out = {0};
    CU_ASSERT_EQUAL(fl_form_json(&f, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(memmem(out.data, out.len, "\"f99999\":{\"x\":\"99999\"}", 22));
    fl_buf_free(&out);
    fl_buf_free(&body);
    fl_form_free(&f);
}

/* ---- multipart ---- */

#define T_CT "multipart/form-data; boundary=XyZ"
static const char t_mp_body[] =
    "preamble, ignored\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"title\"\r\n"
    "\r\n"
    "Hello\r\n--not the boundary\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"docs[]\"; filename=\"a.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "first file\r\n"
    "--XyZ  \r\n"
    "content-disposition: form-data; name=\"docs[]\"; filename=\"C/dir/b.bin\"\r\n"
    "\r\n"
    "\x00\x01\r\n--XyZ-not-it\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"avatar\"; filename=\"me.php\"\r\n"
    "Content-Type: application/x-php\r\n"
    "\r\n"
    "<?php evil();\r\n"
    "--XyZ\r\n"
    "Content-Disposition: attachment; name=\"skipped\"\r\n"
    "\r\n"
    "not form-data\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"user[name]\"\r\n"
    "\r\n"
    "Bob\r\n"
    "--XyZ--\r\n"
    "epilogue, ignored";

static char *const t_forbid[] = {".php", NULL};

static void t_read_file(const char *path, char *buf, size_t cap, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    *len = fp ? fread(buf, 1, cap, fp) : 0;
    if (fp)
        fclose(fp);
}

/* Feeds t_mp_body in pieces of `step` bytes and checks both trees and the temp files. */
static void t_multipart(size_t step)
{
    fl_upload_conf_t conf = {.dir = t_tmpdir(), .forbid = t_forbid};
    fl_form_t f;
    fl_form_init(&f);
    const char *err = NULL;
    CU_ASSERT_EQUAL_FATAL(fl_multipart_begin(&f, FL_SLICE(T_CT), &conf, &err), 0);
    size_t n = sizeof(t_mp_body) - 1;
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        CU_ASSERT_EQUAL_FATAL(fl_multipart_feed(&f, t_mp_body + off, k, &err), 0);
    }
    CU_ASSERT_EQUAL_FATAL(fl_multipart_end(&f, &err), 0);
    fl_buf_t j = {0};
    CU_ASSERT_EQUAL(fl_form_json(&f, &j, &err), 0);
    t_cstr(&j);
    T_EQ(j.data,
         "{\"title\":\"Hello\\u000d\\u000a--not the boundary\",\"user\":{\"name\":\"Bob\"}}");
    CU_ASSERT_EQUAL_FATAL(f.nuploads, 3);
    fl_upload_t *a = &f.uploads[0], *b = &f.uploads[1], *php = &f.uploads[2];
    CU_ASSERT_EQUAL(a->error, 0);
    CU_ASSERT_EQUAL(a->size, 10);
    CU_ASSERT_EQUAL(b->error, 0);
    CU_ASSERT_EQUAL(b->size, 16);
    CU_ASSERT_EQUAL(php->error, FL_UPLOAD_EXTENSION);
    CU_ASSERT_PTR_NULL(php->tmp);
    char data[64];
    size_t len;
    t_read_file(a->tmp, data, sizeof(data), &len);
    CU_ASSERT(len == 10 && memcmp(data, "first file", 10) == 0);
    t_read_file(b->tmp, data, sizeof(data), &len);
    CU_ASSERT(len == 16 && memcmp(data, "\x00\x01\r\n--XyZ-not-it", 16) == 0);
    CU_ASSERT_EQUAL(strncmp(a->tmp, t_tmpdir(), strlen(t_tmpdir())), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a->tmp, "/upload"));
    struct stat st;
    CU_ASSERT(stat(a->tmp, &st) == 0 && (st.st_mode & 0777) == 0600);
    fl_buf_t u = {0};
    CU_ASSERT_EQUAL(fl_uploads_json(&f, &u, &err), 0);
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"avatar\":{\"name\":\"me.php\",\"mime\":\"application/x-php\",\"size\":0,"
             "\"error\":8,\"tmpName\":\"\"},"
             "\"docs\":[{\"name\":\"a.txt\",\"mime\":\"text/plain\",\"size\":10,\"error\":0,"
             "\"tmpName\":\"%s\"},{\"name\":\"b.bin\",\"mime\":\"\",\"size\":16,\"error\":0,"
             "\"tmpName\":\"%s\"}]}",
             a->tmp, b->tmp);
    t_cstr(&u);
    T_EQ(u.data, want);
    CU_ASSERT_EQUAL(t_files_in_dir(), 2);
    fl_form_remove_files(&f);
    fl_form_remove_files(&f); /* idempotent */
    CU_ASSERT_EQUAL(t_files_in_dir(), 0);
    fl_buf_free(&j);
    fl_buf_free(&u);
    fl_form_free(&f);
}

static void test_multipart_whole(void)
{
    t_multipart(1 << 20);
}

static void test_multipart_byte_by_byte(void)
{
    t_multipart(1);
    t_multipart(7);
}

/* Runs one body through the parser; returns the error string or NULL. */
static const char *t_mp_run(const char *ct, const char *body, const fl_upload_conf_t *conf,
                            fl_form_t *f)
{
    const char *err = NULL;
    fl_form_init(f);
    if (fl_multipart_begin(f, fl_slice_cstr(ct), conf, &err) < 0 ||
        fl_multipart_feed(f, body, strlen(body), &err) < 0 || fl_multipart_end(f, &err) < 0)
        return err;
    return NULL;
}

static void test_multipart_lf_and_quirks(void)
{
    fl_upload_conf_t conf = {.dir = t_tmpdir()};
    fl_form_t f;
    /* LF-only line endings, a quoted boundary, filename* (RFC 2231) */
    const char *body = "--b q\n"
                       "Content-Disposition: form-data; name=\"x\"\n\n1\n"
                       "--b q\n"
                       "Content-Disposition: form-data; name=f; filename=\"old\"; "
                       "filename*=UTF-8''na%C3%AFve.txt\n\nzz\n"
                       "--b q--\n";
    CU_ASSERT_PTR_NULL(t_mp_run("multipart/form-data; boundary=\"b q\"", body, &conf, &f));
    fl_buf_t j = {0};
    const char *err;
    CU_ASSERT_EQUAL(fl_form_json(&f, &j, &err), 0);
    t_cstr(&j);
    T_EQ(j.data, "{\"x\":\"1\"}");
    CU_ASSERT_EQUAL_FATAL(f.nuploads, 1);
    CU_ASSERT_EQUAL(f.uploads[0].size, 2);
    CU_ASSERT(f.uploads[0].file_len == 10 &&
              memcmp(f.strs.data + f.uploads[0].file_off, "na\xc3\xafve.txt", 10) == 0);
    fl_form_remove_files(&f);
    fl_form_free(&f);
    fl_buf_free(&j);
    /* an empty multipart body (only the final boundary) is fine and yields nothing */
    CU_ASSERT_PTR_NULL(t_mp_run(T_CT, "--XyZ--\r\n", &conf, &f));
    CU_ASSERT_EQUAL(f.nfields + f.nuploads, 0);
    fl_form_free(&f);
}

static void test_multipart_errors(void)
{
    fl_upload_conf_t conf = {.dir = t_tmpdir()};
    fl_form_t f;
    const char *part = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"
                       "data";
    /* truncated: no final boundary; the temp file is still removable */
    CU_ASSERT_PTR_EQUAL(t_mp_run(T_CT, part, &conf, &f), fl_form_err_multipart);
    CU_ASSERT_EQUAL(f.nuploads, 1);
    CU_ASSERT_EQUAL(t_files_in_dir(), 1);
    fl_form_remove_files(&f);
    CU_ASSERT_EQUAL(t_files_in_dir(), 0);
    fl_form_free(&f);
    CU_ASSERT_PTR_EQUAL(t_mp_run("multipart/form-data", "", &conf, &f), fl_form_err_boundary);
    fl_form_free(&f);
    CU_ASSERT_PTR_EQUAL(t_mp_run("multipart/form-data; boundary=", "", &conf, &f),
                        fl_form_err_boundary);
    fl_form_free(&f);
    /* too many parts */
    fl_upload_conf_t few = {.dir = t_tmpdir(), .max_parts = 2};
    const char *three = "--XyZ\r\n\r\na\r\n--XyZ\r\n\r\nb\r\n--XyZ\r\n\r\nc\r\n--XyZ--";
    CU_ASSERT_PTR_EQUAL(t_mp_run(T_CT, three, &few, &f), fl_form_err_too_large);
    fl_form_free(&f);
    /* value bytes beyond the in-memory budget */
    fl_upload_conf_t tiny = {.dir = t_tmpdir(), .max_value_bytes = 4};
    const char *big = "--XyZ\r\nContent-Disposition: form-data; name=\"v\"\r\n\r\n12345\r\n--XyZ--";
    CU_ASSERT_PTR_EQUAL(t_mp_run(T_CT, big, &tiny, &f), fl_form_err_too_large);
    fl_form_free(&f);
    /* a header block that never ends */
    fl_buf_t hb = {0};
    fl_buf_puts(&hb, "--XyZ\r\nX: ");
    for (int i = 0; i < 20000; i++)
        fl_buf_puts(&hb, "a");
    t_cstr(&hb);
    CU_ASSERT_PTR_EQUAL(t_mp_run(T_CT, hb.data, &conf, &f), fl_form_err_multipart);
    fl_form_free(&f);
    fl_buf_free(&hb);
}

static void test_upload_errors(void)
{
    /* no temp dir: error 6, no tmpName; allow list: only listed extensions pass */
    static char *const allow[] = {".txt", NULL};
    fl_upload_conf_t conf = {.dir = "/nonexistent/forkline-test", .allow = allow};
    fl_form_t f;
    const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"x.TXT\"\r\n"
                       "\r\nabc\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"y.png\"\r\n"
                       "\r\nabc\r\n--XyZ--\r\n";
    CU_ASSERT_PTR_NULL(t_mp_run(T_CT, body, &conf, &f));
    CU_ASSERT_EQUAL_FATAL(f.nuploads, 2);
    CU_ASSERT_EQUAL(f.uploads[0].error, FL_UPLOAD_NO_TMP_DIR);
    CU_ASSERT_EQUAL(f.uploads[1].error, FL_UPLOAD_EXTENSION);
    fl_buf_t u = {0};
    const char *err;
    CU_ASSERT_EQUAL(fl_uploads_json(&f, &u, &err), 0);
    t_cstr(&u);
    T_EQ(u.data,
         "{\"a\":{\"name\":\"x.TXT\",\"mime\":\"\",\"size\":0,\"error\":6,\"tmpName\":\"\"},"
         "\"b\":{\"name\":\"y.png\",\"mime\":\"\",\"size\":0,\"error\":8,\"tmpName\":\"\"}}");
    fl_buf_free(&u);
    fl_form_free(&f);
    /* one name with two files and no []: the first file is the leaf (RoadRunner: v[0]) */
    fl_upload_conf_t ok = {.dir = t_tmpdir()};
    const char *two = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"1\"\r\n"
                      "\r\n1\r\n"
                      "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"2\"\r\n"
                      "\r\n22\r\n--XyZ--\r\n";
    CU_ASSERT_PTR_NULL(t_mp_run(T_CT, two, &ok, &f));
    CU_ASSERT_EQUAL(fl_uploads_json(&f, &u, &err), 0);
    t_cstr(&u);
    CU_ASSERT_PTR_NOT_NULL(strstr(u.data, "{\"f\":{\"name\":\"1\""));
    CU_ASSERT_EQUAL(t_files_in_dir(), 2); /* both temp files exist and both are cleaned up */
    fl_form_remove_files(&f);
    CU_ASSERT_EQUAL(t_files_in_dir(), 0);
    fl_buf_free(&u);
    fl_form_free(&f);
}

static void t_cleanup(void)
{
    rmdir(t_tmpdir());
}

static const fl_test_t tests[] = {
    {"split_name", test_split_name},
    {"urlencoded_tree", test_urlencoded_tree},
    {"urlencoded_conflicts", test_urlencoded_conflicts},
    {"urlencoded_syntax", test_urlencoded_syntax},
    {"depth_limit", test_depth_limit},
    {"many_fields_fast", test_many_fields_fast},
    {"multipart_whole", test_multipart_whole},
    {"multipart_byte_by_byte", test_multipart_byte_by_byte},
    {"multipart_lf_and_quirks", test_multipart_lf_and_quirks},
    {"multipart_errors", test_multipart_errors},
    {"upload_errors", test_upload_errors},
    {"cleanup", t_cleanup},
    {NULL, NULL},
};

FL_TEST_MAIN("form", tests)

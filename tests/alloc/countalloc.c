/* A counting allocator for tests: LD_PRELOAD it into forkline and every process of the tree
 * counts its allocator calls into $FL_ALLOC_DIR/<pid> (a shared mapping the test reads while
 * the process runs). The calls are forwarded to the next allocator (jemalloc or libc).
 *
 *   cc -shared -fPIC -O2 -o countalloc.so tests/alloc/countalloc.c -ldl
 *   LD_PRELOAD=./countalloc.so FL_ALLOC_DIR=/tmp/x ./forkline serve -c ...
 *
 * Each file holds FL_ALLOC_SLOTS little-endian uint64 counters, see the enum. Used by
 * tests/integration/test_alloc.py: steady-state requests must not allocate in the reactor.
 * Nothing here may allocate: the path is built by hand and the counters live in the mapping. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { C_MALLOC, C_CALLOC, C_REALLOC, C_MEMALIGN, C_FREE, C_BYTES, FL_ALLOC_SLOTS = 8 };

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static uint64_t *counters; /* this process's mapping, NULL until the first count */
static int resolving;

/* dlsym may allocate before the real functions are known: serve it from here. */
static char boot[8192] __attribute__((aligned(16)));
static size_t boot_used;

static void *boot_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (boot_used + n > sizeof boot)
        return NULL;
    void *p = boot + boot_used;
    boot_used += n;
    return p;
}

static int is_boot(const void *p)
{
    return (const char *)p >= boot && (const char *)p < boot + sizeof boot;
}

static void resolve(void)
{
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    resolving = 0;
}

static void after_fork(void)
{
    counters = NULL; /* the child counts into a file of its own */
}

__attribute__((constructor)) static void init(void)
{
    resolve();
    pthread_atfork(NULL, NULL, after_fork);
}

/* $FL_ALLOC_DIR/<pid>, written without snprintf (which could allocate). */
static void open_counters(void)
{
    const char *dir = getenv("FL_ALLOC_DIR");
    if (!dir)
        return;
    char path[512];
    size_t n = 0;
    while (dir[n] && n < sizeof path - 24) {
        path[n] = dir[n];
        n++;
    }
    path[n++] = '/';
    char digits[16];
    int k = 0;
    for (unsigned long v = (unsigned long)getpid(); v || !k; v /= 10)
        digits[k++] = (char)('0' + v % 10);
    while (k)
        path[n++] = digits[--k];
    path[n] = '\0';
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    size_t len = FL_ALLOC_SLOTS * sizeof(uint64_t);
    void *m = ftruncate(fd, (off_t)len) == 0
                  ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    close(fd);
    if (m != MAP_FAILED)
        counters = m;
}

static void count(int slot, size_t bytes)
{
    if (!counters) {
        static int opening; /* open/mmap must not recurse into a count */
        if (opening)
            return;
        opening = 1;
        open_counters();
        opening = 0;
        if (!counters)
            return;
    }
    __atomic_fetch_add(&counters[slot], 1, __ATOMIC_RELAXED);
    if (bytes)
        __atomic_fetch_add(&counters[C_BYTES], bytes, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    resolve();
    if (!real_malloc)
        return boot_alloc(n);
    count(C_MALLOC, n);
    return real_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    resolve();
    if (!real_calloc) {
        void *p = boot_alloc(a * b); /* static storage: already zero */
        return p;
    }
    count(C_CALLOC, a * b);
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    resolve();
    if (is_boot(p)) { /* a boot block moving to the real heap */
        void *q = malloc(n);
        if (q) {
            size_t room = (size_t)(boot + sizeof boot - (char *)p);
            for (size_t i = 0; i < n && i < room; i++)
                ((char *)q)[i] = ((char *)p)[i];
        }
        return q;
    }
    if (!real_realloc)
        return NULL;
    count(C_REALLOC, n);
    return real_realloc(p, n);
}

void free(void *p)
{
    if (!p || is_boot(p))
        return;
    resolve();
    count(C_FREE, 0);
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    resolve();
    count(C_MEMALIGN, n);
    return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    resolve();
    count(C_MEMALIGN, n);
    return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
    resolve();
    count(C_MEMALIGN, n);
    return real_memalign(align, n);
}

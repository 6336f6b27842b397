#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "proctitle.h"

extern char **environ;
static char *area;     /* where argv[0] started */
static size_t area_len; /* contiguous bytes of argv + environ strings we may overwrite */
/* What was moved to the heap, for good. Held here because setenv() replaces environ's array and
 * unsetenv() drops a string's pointer from it: to ASan they would be leaks. */
__attribute__((used)) static char **env_array, **env_copies, **argv_copies;

void fl_proctitle_init(int argc, char **argv)
{
    if (argc < 1 || !argv[0])
        return;
    char *start = argv[0];
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++)
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    size_t n = 0;
    while (environ[n])
        n++;
    /* The environment usually follows argv: move it to the heap so the title can use the room. */
    char **env = malloc((n + 1) * sizeof(char *));
    env_copies = malloc((n + 1) * sizeof(char *));
    if (!env || !env_copies) {
        free(env);
        free(env_copies);
        env_copies = NULL;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (environ[i] == end)
            end = environ[i] + strlen(environ[i]) + 1;
        env[i] = env_copies[i] = strdup(environ[i]);
    }
    env[n] = env_copies[n] = NULL;
    environ = env_array = env;
    /* The caller keeps using argv: give it copies, the originals become the title area. */
    argv_copies = calloc((size_t)argc, sizeof(char *));
    for (int i = 0; i < argc; i++)
        argv[i] = strdup(argv[i]);
    if (argv_copies)
        memcpy(argv_copies, argv, (size_t)argc * sizeof(char *));
    area = start;
    area_len = (size_t)(end - start);
}

void fl_proctitle_set(const char *title)
{
    prctl(PR_SET_NAME, title, 0, 0, 0);
    if (!area || area_len < 2)
        return;
    size_t n = strlen(title);
    if (n >= area_len)
        n = area_len - 1;
    memcpy(area, title, n);
    memset(area + n, 0, area_len - n);
}

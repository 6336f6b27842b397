/* Starting a worker process with its relay: two pipes, as RoadRunner's `pipes` relay (one the
 * child's stdin, one its stdout; real pipes, not a socketpair, because PHP's stream layer
 * reads a socket STDIN with poll + recvfrom + sendto but a pipe with plain read + write),
 * stderr on a third pipe. */
#ifndef FL_SPAWN_H
#define FL_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    int relay_fd;  /* read end of the child's stdout, non-blocking, close-on-exec */
    int relay_wfd; /* write end of the child's stdin, non-blocking, close-on-exec */
    int err_fd;    /* read end of the child's stderr, non-blocking, close-on-exec */
} fl_spawned_t;

/* Forks and execs argv with envp. Fails (returning -1 with a message in err) when exec
 * itself fails, e.g. "exec php-nope: No such file or directory", so a command that cannot
 * run is reported at once instead of looking like a worker that died. */
int fl_spawn(char *const argv[], char *const envp[], fl_spawned_t *out, char *err, size_t errlen);

/* Who the child runs as (server.user): with set_ids, it drops to uid/gid (and gid as its only
 * group) before exec; a failure is reported like an exec failure ("setuid(33): ..."). */
typedef struct {
    bool set_ids;
    uid_t uid;
    gid_t gid;
} fl_spawn_cred_t;

int fl_spawn_as(char *const argv[], char *const envp[], const fl_spawn_cred_t *cred,
                fl_spawned_t *out, char *err, size_t errlen);

/* Where argv[0] resolves on PATH (like execvp); 0 if runnable, else -1 with a message. */
int fl_check_command(const char *argv0, char *err, size_t errlen);

#endif

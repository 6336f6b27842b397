/* The master process: owns the listening sockets and the cycle (config), runs one generation of
 * reactors (two during a reload), supervises them, handles signals. It never runs PHP and never
 * parses client HTTP. */
#ifndef FL_MASTER_H
#define FL_MASTER_H

#include "config.h"

typedef struct {
    bool silent;              /* -s: no start-up banner */
    bool pidfile;             /* -p: write .pid into the working directory */
    const char *config_path;  /* absolute, or NULL when the overrides alone make the config */
    char *const *overrides;   /* -o flags, re-applied on every reload */
    size_t noverrides;
    char **argv;              /* for SIGUSR2: re-exec the same command line */
    const char *orig_cwd;     /* ... from the directory it was started in */
} fl_master_flags_t;

/* Set in the environment of a re-exec'ed master (SIGUSR2): the inherited listening fds and
 * reactors. "L|fd|address;R|pid|chan|listen_fd|workers|grace_ms;..." */
#define FL_UPGRADE_ENV "FORKLINE_UPGRADE"


/* Runs the server until stopped; takes ownership of *c (it is zeroed); returns the exit code.
 * c may be NULL only after a SIGUSR2 re-exec whose config failed to load: the inherited
 * reactors then keep serving. */
int fl_master_run(fl_conf_t *c, const fl_master_flags_t *f);


/* The file where the master records the outcome of each reload (next to .pid; see `reload`). */
#define FL_RELOAD_STATUS_FILE ".pid.reload"

#endif

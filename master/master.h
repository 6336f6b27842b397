/* The master process: owns the listening socket and the cycle (config), forks one reactor per
 * slot, supervises them, handles signals. It never runs PHP and never parses client HTTP. */
#ifndef FL_MASTER_H
#define FL_MASTER_H

#include "config.h"

typedef struct {
    bool silent;   /* -s: no start-up banner */
    bool pidfile;  /* -p: write .pid into the working directory */
} fl_master_flags_t;

/* Runs the server with cycle c until stopped; returns the process exit code. */
int fl_master_run(const fl_conf_t *c, const fl_master_flags_t *f);

/* Opens a listening TCP socket for "host:port" (host may be empty, a name, an IPv4 address or a
 * bracketed IPv6 one). Returns the fd or -1 with err filled. */
int fl_listen_tcp(const char *address, char *err, size_t errlen);

#endif

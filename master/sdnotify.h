/* systemd notifications without libsystemd: one AF_UNIX datagram to $NOTIFY_SOCKET. */
#ifndef FL_SDNOTIFY_H
#define FL_SDNOTIFY_H

/* Reads NOTIFY_SOCKET once and removes it (and LISTEN_*) from the environment, so reactors and
 * PHP workers can never talk to systemd: only the master, which is MAINPID, does. */
void fl_sd_init(void);
/* Sends "KEY=VALUE\n..." (printf style); a no-op when not under systemd. */
void fl_sd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* RELOADING=1 with the MONOTONIC_USEC that recent systemd needs to match the reload. */
void fl_sd_reloading(void);

#endif

/* Listening sockets shared by the HTTP front, the RPC server and the metrics endpoint. */
#ifndef FL_NET_H
#define FL_NET_H

#include <stddef.h>

/* Opens a non-blocking, close-on-exec TCP listener for "host:port" (host may be empty, a name,
 * an IPv4 address or a bracketed IPv6 one). Returns the fd, or -1 with err = "ADDRESS: why". */
int fl_listen_tcp(const char *address, int backlog, char *err, size_t errlen);

#endif

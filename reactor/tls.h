/* TLS for the HTTP server (OpenSSL 3): one server context per generation, built by the master
 * from http.ssl before it forks the reactors (so they share session-ticket keys and a bad
 * certificate fails the start or the reload, not a request), and one non-blocking session per
 * accepted connection. TLS 1.2 and 1.3 only, ALPN http/1.1, session resumption. */
#ifndef FL_TLS_H
#define FL_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ssl_ctx_st fl_tls_ctx_t; /* OpenSSL's SSL_CTX */
typedef struct ssl_st fl_tls_t;         /* OpenSSL's SSL */

typedef struct {
    const char *cert;    /* PEM chain, leaf first */
    const char *key;     /* PEM private key */
    const char *root_ca; /* PEM CAs for client certificates, or NULL */
    int client_auth;     /* FL_TLS_CLIENT_* (RoadRunner's client_auth_type order) */
} fl_tls_conf_t;

enum {
    FL_TLS_CLIENT_NONE = 0,
    FL_TLS_CLIENT_REQUEST,
    FL_TLS_CLIENT_REQUIRE_ANY,
    FL_TLS_CLIENT_VERIFY_IF_GIVEN,
    FL_TLS_CLIENT_REQUIRE_VERIFY,
};

/* Results of fl_tls_read / fl_tls_write besides a byte count (> 0). */
enum {
    FL_TLS_EOF = 0,
    FL_TLS_ERROR = -1,
    FL_TLS_WANT_READ = -2,  /* retry once the socket is readable */
    FL_TLS_WANT_WRITE = -3, /* retry once the socket is writable */
};

/* NULL with err filled ("http.ssl.cert: cannot load /x.pem: ...") on failure. */
fl_tls_ctx_t *fl_tls_ctx_new(const fl_tls_conf_t *c, char *err, size_t errlen);
void fl_tls_ctx_free(fl_tls_ctx_t *ctx);

/* A server-side session over an accepted non-blocking socket; the handshake runs inside the
 * first reads and writes. NULL when out of memory. */
fl_tls_t *fl_tls_new(fl_tls_ctx_t *ctx, int fd);
void fl_tls_free(fl_tls_t *t);
ssize_t fl_tls_read(fl_tls_t *t, void *buf, size_t n);
ssize_t fl_tls_write(fl_tls_t *t, const void *buf, size_t n);
/* Decrypted bytes OpenSSL holds that epoll cannot know about. */
size_t fl_tls_pending(fl_tls_t *t);
/* Sends close_notify, best effort (never blocks). */
void fl_tls_shutdown(fl_tls_t *t);
/* The last OpenSSL error of this thread as text (for logs), and clears the queue. */
const char *fl_tls_last_error(void);

#endif

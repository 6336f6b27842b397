/* TLS sessions over OpenSSL 3. See tls.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

/* Mozilla's "intermediate" TLS 1.2 suites; TLS 1.3 keeps OpenSSL's defaults. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"

static const unsigned char alpn_http11[] = "\x08http/1.1";

const char *fl_tls_last_error(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return errno ? strerror(errno) : "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* We speak HTTP/1.1 only: pick it when offered, otherwise go on without ALPN (a client that
 * insists on h2 then fails on its own terms rather than with a handshake alert). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* request_client_cert / require_any_client_cert: a certificate is asked for, never verified. */
static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

static int setup_client_auth(SSL_CTX *ctx, const fl_tls_conf_t *c, char *err, size_t errlen)
{
    if (c->root_ca && *c->root_ca && SSL_CTX_load_verify_locations(ctx, c->root_ca, NULL) != 1) {
        snprintf(err, errlen, "http.ssl.root_ca: cannot load %s: %s", c->root_ca,
                 fl_tls_last_error());
        return -1;
    }
    switch (c->client_auth) {
    case FL_TLS_CLIENT_REQUEST:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
        break;
    case FL_TLS_CLIENT_REQUIRE_ANY:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_any);
        break;
    case FL_TLS_CLIENT_VERIFY_IF_GIVEN:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        break;
    case FL_TLS_CLIENT_REQUIRE_VERIFY:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        break;
    default:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return 0;
}

static int load_cert(SSL_CTX *ctx, const fl_tls_conf_t *c, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
        snprintf(err, errlen, "http.ssl.cert: cannot load %s: %s", c->cert, fl_tls_last_error());
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "http.ssl.key: cannot load %s: %s", c->key, fl_tls_last_error());
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "http.ssl: the key %s does not match the certificate %s", c->key,
                 c->cert);
        return -1;
    }
    return 0;
}

fl_tls_ctx_t *fl_tls_ctx_new(const fl_tls_conf_t *c, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "http.ssl: %s", fl_tls_last_error());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Partial writes let one big response go out as the socket takes it; the retry may come
     * from a grown (moved) output buffer. Idle connections give their buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* Resumption: an in-process session cache plus tickets. The context is created before the
     * reactors fork, so they share the ticket keys and any reactor resumes any session. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"forkline", 8);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, 3600);
    if (load_cert(ctx, c, err, errlen) < 0 || setup_client_auth(ctx, c, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void fl_tls_ctx_free(fl_tls_ctx_t *ctx)
{
    SSL_CTX_free(ctx);
}

fl_tls_t *fl_tls_new(fl_tls_ctx_t *ctx, int fd)
{
    SSL *s = SSL_new(ctx);
    if (!s)
        return NULL;
    if (SSL_set_fd(s, fd) != 1) {
        SSL_free(s);
        return NULL;
    }
    SSL_set_accept_state(s);
    return s;
}

void fl_tls_free(fl_tls_t *t)
{
    SSL_free(t);
}

/* Maps SSL_get_error; a peer that closed without close_notify is plain EOF, as browsers and
 * curl often do exactly that. */
static ssize_t tls_result(SSL *s, int r)
{
    if (r > 0)
        return r;
    switch (SSL_get_error(s, r)) {
    case SSL_ERROR_WANT_READ:
        return FL_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return FL_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return FL_TLS_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno == 0 || errno == ECONNRESET ? FL_TLS_EOF : FL_TLS_ERROR;
    default:
        ERR_clear_error();
        return FL_TLS_ERROR;
    }
}

ssize_t fl_tls_read(fl_tls_t *t, void *buf, size_t n)
{
    errno = 0;
    int r = SSL_read(t, buf, n > 0x7fffffff ? 0x7fffffff : (int)n);
    return tls_result(t, r);
}

ssize_t fl_tls_write(fl_tls_t *t, const void *buf, size_t n)
{
    errno = 0;
    int r = SSL_write(t, buf, n > 0x7fffffff ? 0x7fffffff : (int)n);
    return tls_result(t, r);
}

size_t fl_tls_pending(fl_tls_t *t)
{
    return (size_t)SSL_pending(t);
}

void fl_tls_shutdown(fl_tls_t *t)
{
    /* Only after a finished handshake; SSL_shutdown on a half-open session just errors. */
    if (SSL_is_init_finished(t))
        SSL_shutdown(t);
    ERR_clear_error();
}

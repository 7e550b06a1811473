/*
 * pair.c - a TLS connection over bytes the caller moves (Node's createSecurePair): OpenSSL on
 * two memory BIOs; the kernel never takes such a connection (reason not_tcp).
 */
#include <errno.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "internal.h"

TLSK_PUBLIC int tlsk_pair_new(struct tlsk_socket **out, struct tlsk_context *ctx, int is_server,
                              const struct tlsk_socket_options *opts)
{
    struct tlsk_socket_options o = { 0 };

    if (opts) {
        o = *opts;
    }
    o.flags &= ~(unsigned)TLSK_SOCKET_OWN_FD;
    return tlsk__socket_new(out, ctx, TLSK__PAIR_FD, is_server != 0, &o);
}

TLSK_PUBLIC ssize_t tlsk_pair_feed(struct tlsk_socket *s, const void *buf, size_t len)
{
    if (!s || !s->is_pair || (len && !buf) || len > INT_MAX) {
        return TLSK_ECONFIG;
    }
    if (len == 0) {
        return 0;
    }
    if (BIO_write(s->sock_bio, buf, (int)len) != (int)len) {
        return TLSK_ENOMEM;
    }
    return (ssize_t)len;
}

TLSK_PUBLIC ssize_t tlsk_pair_pull(struct tlsk_socket *s, void *buf, size_t len)
{
    BIO *w;
    int n;

    if (!s || !s->is_pair || (len && !buf)) {
        return TLSK_ECONFIG;
    }
    w = SSL_get_wbio(s->ssl);
    if (len == 0 || BIO_ctrl_pending(w) == 0) {
        return 0;
    }
    n = BIO_read(w, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : 0;
}

TLSK_PUBLIC size_t tlsk_pair_pending(const struct tlsk_socket *s)
{
    if (!s || !s->is_pair) {
        return 0;
    }
    return BIO_ctrl_pending(SSL_get_wbio(s->ssl));
}

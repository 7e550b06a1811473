/*
 * lean.c - a server connection that no longer needs OpenSSL (TLSK_SOCKET_LEAN).
 *
 * Once the kernel has both directions, OpenSSL's SSL object moves no data: every record is
 * the kernel's, and the bridge speaks for OpenSSL only on post-handshake messages.  What is
 * left for a server to say or hear then is small (docs/KERNEL.md §14): KeyUpdates both ways,
 * alerts, close_notify, and the refusal of a TLS 1.2 renegotiation.  The bridge does those
 * itself on a lean socket (bridge.c), so the SSL object (about 12 KB per connection, most of
 * an idle connection's memory) is freed, and what the getters read of it is kept here.
 * Clients are never lean: their tickets come after the handshake and only OpenSSL can
 * turn them into sessions.
 */
#include <stdlib.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"

int tlsk__version(const struct tlsk_socket *s)
{
    return s->lean ? s->lean->version : SSL_version(s->ssl);
}

const SSL_CIPHER *tlsk__cipher(const struct tlsk_socket *s)
{
    return s->lean ? s->lean->cipher : SSL_get_current_cipher(s->ssl);
}

/* Nothing of OpenSSL's may still be in flight: no record in its write BIO or parked, no key
 * update or ticket it was asked for, no unread byte in its read BIO, no piece of a KeyUpdate
 * it holds for the rest. */
bool tlsk__lean_quiet(const struct tlsk_socket *s)
{
    return s->pend_len == 0 && !s->ku_pending && s->ctrl_len == 0 && !s->rx_hs_partial &&
           BIO_ctrl_pending(SSL_get_wbio(s->ssl)) == 0 &&
           BIO_ctrl_pending(SSL_get_rbio(s->ssl)) == 0 && !SSL_has_pending(s->ssl) &&
           SSL_get_key_update_type(s->ssl) == SSL_KEY_UPDATE_NONE;
}

void tlsk__lean_release(struct tlsk_socket *s)
{
    struct tlsk__lean *l;
    int version;
    STACK_OF(X509) *chain;

    if (!(s->flags & TLSK_SOCKET_LEAN) || s->lean || !s->ssl || !s->is_server || s->is_pair ||
        !s->tx_kernel || !s->rx_kernel || s->state != TLSK__OPEN || !tlsk__lean_quiet(s)) {
        return;
    }
    version = SSL_version(s->ssl);
    if (version != TLS1_2_VERSION && version != TLS1_3_VERSION) {
        return;
    }
    if (!(l = calloc(1, sizeof *l))) {
        return; /* stays with OpenSSL, which works as before */
    }
    l->version = version;
    l->cipher = SSL_get_current_cipher(s->ssl);
    l->reused = SSL_session_reused(s->ssl) == 1;
    l->asked_cert = (SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER) != 0;
    l->verify_result = SSL_get_verify_result(s->ssl);
    if ((l->peer = SSL_get1_peer_certificate(s->ssl)) &&
        (chain = SSL_get_peer_cert_chain(s->ssl)) && !(l->chain = X509_chain_up_ref(chain))) {
        X509_free(l->peer);
        free(l);
        return;
    }
    /* A clean connection's session stays resumable: freed without shutdown flags OpenSSL
     * would take it out of the server's cache (docs/OPENSSL.md §6). */
    SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(s->ssl);
    s->ssl = NULL;
    BIO_free(s->sock_bio);
    s->sock_bio = NULL;
    s->lean = l;
}

TLSK_PUBLIC int tlsk_socket_lean(const struct tlsk_socket *s)
{
    return s && s->lean ? 1 : 0;
}

void tlsk__lean_free(struct tlsk_socket *s)
{
    if (s->lean) {
        X509_free(s->lean->peer);
        sk_X509_pop_free(s->lean->chain, X509_free);
        free(s->lean);
        s->lean = NULL;
    }
}

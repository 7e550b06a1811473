/*
 * rekey.c - keys over a connection's life: record counts against the key limit (RFC 8446
 * 5.5), TLS 1.3 key updates and extra tickets, TLS 1.2 renegotiation and its limit.
 *
 * In userspace OpenSSL does all of it.  With a direction in the kernel, OpenSSL still decides
 * and writes the messages; the bridge carries them and moves the kernel to the next key where
 * the kernel can (Linux 6.14+, docs/KERNEL.md §7).  Before 6.14 a kernel key is for life, and
 * the limits end the connection cleanly instead.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

/* Application data a server-initiated renegotiation holds for tlsk_socket_read() at most. */
#define RENEG_HOLD_MAX (64 * 1024)

/* CLIENT_RENEG_LIMIT per CLIENT_RENEG_WINDOW: the count restarts when at least a window has
 * passed since the previous attempt (docs/NODE.md §1.7). */
int tlsk__reneg_attempt(struct tlsk_socket *s)
{
    int limit, window;
    int64_t now = tlsk__now_ms();

    tlsk__reneg_limits(s->ctx, &limit, &window);
    if (s->reneg_window_start && now - s->reneg_window_start >= (int64_t)window * 1000) {
        s->reneg_count = 0;
    }
    s->reneg_window_start = now;
    if (++s->reneg_count > limit) {
        return tlsk__set_detail(s, TLSK_ERENEG_LIMIT,
                                "TLS session renegotiation attack detected: more than %d "
                                "client renegotiations within %d s",
                                limit, window);
    }
    return 0;
}

uint64_t tlsk__key_limit(const struct tlsk_socket *s)
{
    const SSL_CIPHER *c = tlsk__cipher(s);

    if (tlsk__version(s) != TLS1_3_VERSION) {
        return UINT64_MAX;
    }
    if (s->ctx->key_update_records) {
        return s->ctx->key_update_records;
    }
    /* RFC 8446 5.5: AES-GCM keys wear out after 2^24.5 full-size records; ChaCha20 does
     * not within any practical count. */
    if (c && SSL_CIPHER_get_cipher_nid(c) == NID_chacha20_poly1305) {
        return UINT64_MAX;
    }
    return (uint64_t)1 << 24;
}

/* Have OpenSSL write the post-handshake message just scheduled (KeyUpdate, ticket): to the
 * socket, or to its memory BIO, from which the bridge sends it through the kernel (and for a
 * KeyUpdate re-keys the kernel).  A write that waits for room keeps ku_pending. */
static int post_handshake_write(struct tlsk_socket *s)
{
    int r, rc;

    ERR_clear_error();
    r = SSL_do_handshake(s->ssl);
    if (r != 1) {
        rc = tlsk__ossl_error(s, r, TLSK__OP_WRITE);
        s->ku_pending = rc == -EAGAIN;
        return rc == -EAGAIN ? rc : tlsk__fail(s, rc);
    }
    s->ku_pending = false;
    rc = tlsk__bridge_flush_out(s);
    return rc == 0 ? 0 : tlsk__fail(s, rc);
}

/* Start a TLS 1.3 key update now. */
static int key_update_now(struct tlsk_socket *s, int request_peer)
{
    if (s->lean) {
        int rc = tlsk__bridge_key_update(s, request_peer);
        return rc == 0 || rc == -EAGAIN ? rc : tlsk__fail(s, rc);
    }
    if (!s->ku_pending &&
        SSL_key_update(s->ssl, request_peer ? SSL_KEY_UPDATE_REQUESTED
                                            : SSL_KEY_UPDATE_NOT_REQUESTED) != 1) {
        ERR_clear_error();
        return tlsk__set_detail(s, TLSK_ESTATE, "a key update is already pending");
    }
    return post_handshake_write(s);
}

/* Userspace receive: our key is worn out, so ask the peer for new keys (and renew ours). */
void tlsk__user_rx_limit(struct tlsk_socket *s)
{
    if (s->rx_after_fin - s->rx_key_base >= tlsk__key_limit(s) && !s->ku_pending) {
        if (SSL_key_update(s->ssl, SSL_KEY_UPDATE_REQUESTED) == 1) {
            s->rx_key_base = s->rx_after_fin;
        }
        ERR_clear_error();
    }
}

/* Userspace transmit: our key is worn out, so OpenSSL sends a KeyUpdate first. */
void tlsk__user_tx_limit(struct tlsk_socket *s)
{
    if (s->tx_after_fin - s->tx_key_base >= tlsk__key_limit(s)) {
        if (SSL_key_update(s->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) == 1) {
            s->tx_key_base = s->tx_after_fin;
        }
        ERR_clear_error();
    }
}

/* Kernel receive: the peer's key is worn out.  Where the kernel can re-key, ask the peer for
 * an update (once; its KeyUpdate re-keys the kernel in the bridge); otherwise the connection
 * cannot go on.  0 or a negative code. */
int tlsk__kernel_rx_limit(struct tlsk_socket *s)
{
    int rc;

    if (!s->kernel_rekey) {
        return tlsk__set_detail(s, TLSK_EKEY_LIMIT,
                                "%llu records received under one key: the kernel cannot re-key "
                                "receive",
                                (unsigned long long)s->krx_recs);
    }
    if (s->rx_ku_asked) {
        return 0;
    }
    rc = key_update_now(s, 1);
    if (rc == 0) {
        s->rx_ku_asked = true;
    }
    return rc == -EAGAIN ? 0 : rc;
}

/* How many more bytes the kernel may send under its key (RFC 8446 5.5).  At the limit a
 * kernel that can re-key gets the next key; one that cannot ends the connection cleanly:
 * close_notify, then TLSK_EKEY_LIMIT.  Returns the byte budget, or a negative code. */
ssize_t tlsk__kernel_budget(struct tlsk_socket *s, size_t want)
{
    static const unsigned char close_notify[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
    uint64_t limit = tlsk__key_limit(s);
    uint64_t left;

    if (limit == UINT64_MAX) {
        return (ssize_t)(want > SSIZE_MAX ? SSIZE_MAX : want);
    }
    /* Keep one record for close_notify (or the KeyUpdate). */
    left = s->ktx_recs + 1 < limit ? limit - 1 - s->ktx_recs : 0;
    if (left == 0 && s->kernel_rekey) {
        int rc = key_update_now(s, 0);
        if (rc != 0) {
            return rc;
        }
        if (s->pend_len) {
            s->want = POLLOUT;
            return -EAGAIN; /* the KeyUpdate waits for room; data goes after it */
        }
        left = s->ktx_recs + 1 < limit ? limit - 1 - s->ktx_recs : 0;
    }
    if (left == 0) {
        int ignored = s->sent_close_notify
                          ? 0
                          : tlsk__send_control(s, TLSK_REC_ALERT, close_notify, sizeof close_notify);
        (void)ignored;
        s->sent_close_notify = true;
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EKEY_LIMIT,
                                              "%llu records sent under one key: the kernel "
                                              "cannot re-key transmit, so the connection was "
                                              "closed",
                                              (unsigned long long)s->ktx_recs));
    }
    if (left < want / TLSK_MAX_PLAINTEXT + 1) {
        return (ssize_t)(left * TLSK_MAX_PLAINTEXT);
    }
    return (ssize_t)(want > SSIZE_MAX ? SSIZE_MAX : want);
}

TLSK_PUBLIC int tlsk_socket_new_session_ticket(struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN || !s->is_server || tlsk__version(s) != TLS1_3_VERSION) {
        return TLSK_ESTATE;
    }
    if (s->lean) {
        return tlsk__set_detail(s, TLSK_ESTATE, "OpenSSL's state was freed after offload "
                                                "(TLSK_SOCKET_LEAN): no more tickets");
    }
    if (!s->ku_pending && SSL_new_session_ticket(s->ssl) != 1) {
        ERR_clear_error();
        return tlsk__set_detail(s, TLSK_ESTATE, "tickets are disabled on this context");
    }
    return post_handshake_write(s);
}

TLSK_PUBLIC int tlsk_socket_key_update(struct tlsk_socket *s, int request_peer)
{
    if (!s || s->state != TLSK__OPEN || tlsk__version(s) != TLS1_3_VERSION) {
        return TLSK_ESTATE;
    }
    if (s->tx_kernel && !s->kernel_rekey) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE,
                                "transmit is in the kernel, which cannot change its key before "
                                "Linux 6.14; nothing was sent");
    }
    if (request_peer && s->rx_kernel && !s->kernel_rekey) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE,
                                "the peer's answering KeyUpdate would reach a kernel receive "
                                "path that cannot re-key; nothing was sent");
    }
    return key_update_now(s, request_peer);
}

TLSK_PUBLIC int tlsk_socket_renegotiate(struct tlsk_socket *s, unsigned flags)
{
    unsigned char tmp[TLSK_MAX_PLAINTEXT];

    if (!s || s->state != TLSK__OPEN) {
        return s && s->state == TLSK__FAILED ? s->fail_code : TLSK_ESTATE;
    }
    if (tlsk__version(s) != TLS1_2_VERSION) {
        return tlsk__set_detail(s, TLSK_ERENEG_UNAVAILABLE,
                                "renegotiation is unavailable: TLS 1.3 has none");
    }
    if (s->tx_kernel || s->rx_kernel) {
        return tlsk__set_detail(s, TLSK_ERENEG_UNAVAILABLE,
                                "renegotiation is unavailable: the connection is offloaded to "
                                "kernel TLS, which cannot change TLS 1.2 keys (allow "
                                "renegotiation in the context to keep it in userspace)");
    }
    if (!s->reneg_running) {
        if (s->is_server && (flags & (TLSK_REQUEST_PEER_CERT | TLSK_REQUIRE_PEER_CERT))) {
            tlsk__apply_verify_flags(s->ssl, flags, true);
        }
        /* A full handshake, as Node: a resumed one would bring no new certificate. */
        SSL_set_options(s->ssl, SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
        ERR_clear_error();
        if (SSL_renegotiate(s->ssl) != 1) {
            s->detail[0] = '\0';
            tlsk__append_ossl_errors(s->detail, sizeof s->detail);
            return TLSK_ERENEG_UNAVAILABLE;
        }
        s->reneg_running = true;
        s->own_reneg = true;
        if (s->ev) {
            s->ev->hooks->wake(s); /* evented: the loop drives it from now on (events.c) */
            return -EAGAIN;
        }
    }
    for (;;) {
        size_t n = 0;
        int r, rc;

        ERR_clear_error();
        r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            rc = tlsk__ossl_error(s, r, TLSK__OP_HANDSHAKE);
            if (rc == -EAGAIN) {
                return rc;
            }
            s->reneg_running = s->own_reneg = false;
            s->reneg_phase = 0;
            return tlsk__fail(s, rc);
        }
        if (s->is_server && s->reneg_phase == 0) {
            s->reneg_phase = 1; /* HelloRequest sent: now wait for the client's handshake */
        }
        if (s->is_server ? s->reneg_phase == 7 : !SSL_renegotiate_pending(s->ssl)) {
            s->reneg_running = s->own_reneg = false;
            s->reneg_phase = 0;
            return 0;
        }
        /* The peer's half arrives through the record layer: read, keeping any application
         * data for the next tlsk_socket_read().  Without AUTO_RETRY, OpenSSL returns after
         * each handshake record instead of blocking for application data. */
        SSL_clear_mode(s->ssl, SSL_MODE_AUTO_RETRY);
        r = SSL_read_ex(s->ssl, tmp, sizeof tmp, &n);
        SSL_set_mode(s->ssl, SSL_MODE_AUTO_RETRY);
        if (r != 1 && s->is_server && s->reneg_phase == 7) {
            ERR_clear_error();
            continue; /* finished inside that read */
        }
        if (r == 1) {
            unsigned char *h;
            if (s->held_len - s->held_off + n > RENEG_HOLD_MAX) {
                /* A peer that only writes would make us hold without end: stop, loudly. */
                s->reneg_running = s->own_reneg = false;
                return tlsk__fail(s, tlsk__set_detail(s, -ENOBUFS,
                                                      "renegotiation: the peer sent over %d bytes "
                                                      "of data instead of answering",
                                                      RENEG_HOLD_MAX));
            }
            if (!(h = realloc(s->held, s->held_len + n))) {
                s->reneg_running = s->own_reneg = false;
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_ENOMEM, "renegotiation: out of "
                                                                      "memory for held data"));
            }
            memcpy(h + s->held_len, tmp, n);
            s->held = h;
            s->held_len += n;
            continue;
        }
        rc = tlsk__ossl_error(s, r, TLSK__OP_READ);
        if (rc == -EAGAIN) {
            return rc;
        }
        s->reneg_running = s->own_reneg = false;
        return tlsk__fail(s, rc == 0 ? TLSK_ECLOSED : rc);
    }
}

TLSK_PUBLIC uint64_t tlsk_socket_key_updates(const struct tlsk_socket *s)
{
    return s ? s->key_updates : 0;
}

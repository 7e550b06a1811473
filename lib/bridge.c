/*
 * bridge.c - control records between the kernel record layer and OpenSSL's state machine.
 *
 * After offload OpenSSL still owns the protocol; the kernel only moves application data.
 * Kernel -> OpenSSL: a control record read from kTLS RX is re-encrypted with OpenSSL's read
 * key at OpenSSL's read sequence and fed to it through a memory BIO (docs/OPENSSL.md §5.2).
 * OpenSSL -> kernel: records OpenSSL writes to its memory BIO are decrypted with its write key
 * at its write sequence and sent as plaintext control records (TLS_SET_RECORD_TYPE).
 * The record crypto itself is record.c.
 * A lean socket (lean.c) has no OpenSSL left: the bridge itself then speaks the little a
 * server still hears and says after the handshake (KeyUpdate, alerts, close_notify), with
 * the same answers OpenSSL gives (docs/KERNEL.md §14).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "internal.h"
#include "kconst.h"

int tlsk__send_control(struct tlsk_socket *s, int type, const void *data, size_t len)
{
    ssize_t n = s->soft ? tlsk__soft_send(s, type, data, len) : tlsk__ksend(s->fd, type, data, len);

    if (n < 0) {
        return (int)n;
    }
    /* A control record goes whole or not at all (docs/KERNEL.md §4.3). */
    s->bytes_written += len + tlsk__record_overhead(s);
    return 0;
}

/* Feed one reassembled TLS 1.3 handshake record to OpenSSL (client NewSessionTicket). */
static int reinject(struct tlsk_socket *s, int type, const unsigned char *msg, size_t len)
{
    unsigned char rec[5 + TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN];
    struct tlsk__keys k;
    size_t rec_len;
    char dummy;
    int rc, r, err;

    rc = SSL_version(s->ssl) == TLS1_3_VERSION ? tlsk__derive_keys_from(s, &s->orx_secret, &k)
                                               : tlsk__derive_keys(s, s->is_server, &k);
    if (rc != 0) {
        return rc;
    }
    rc = tlsk__record_seal(&k, s->ossl_read_seq, type, msg, len, rec, sizeof rec, &rec_len);
    OPENSSL_cleanse(&k, sizeof k);
    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EINTERNAL, "cannot re-encrypt a control record: %s",
                                strerror(-rc));
    }
    s->ossl_read_seq++;
    if (BIO_write(SSL_get_rbio(s->ssl), rec, (int)rec_len) != (int)rec_len) {
        return tlsk__set_detail(s, TLSK_ENOMEM, "cannot queue a control record");
    }
    OPENSSL_cleanse(rec, rec_len);
    ERR_clear_error();
    r = SSL_read(s->ssl, &dummy, 1);
    err = SSL_get_error(s->ssl, r);
    if (r > 0) {
        return tlsk__set_detail(s, TLSK_EINTERNAL, "control record produced application data");
    }
    if (err != SSL_ERROR_WANT_READ) {
        /* OpenSSL refused the message and wrote its alert, as it would on the wire: that
         * alert goes out before the failure is reported. */
        rc = tlsk__ossl_error(s, r, TLSK__OP_READ);
        int ignored = tlsk__bridge_flush_out(s);
        (void)ignored;
        return rc < 0 && rc != -EAGAIN ? rc : TLSK_EPROTO;
    }
    return tlsk__bridge_flush_out(s);
}

/* The peer's KeyUpdate was taken (by OpenSSL, or by a lean socket): the kernel's receive path,
 * paused after it (docs/KERNEL.md §7), gets the next key where the kernel can re-key; where it
 * cannot, nothing can be received any more.  0 or a code. */
static int follow_peer_key_update(struct tlsk_socket *s)
{
    int rc;

    if (!s->kernel_rekey) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE,
                                "peer sent a TLS 1.3 KeyUpdate and this kernel cannot re-key "
                                "receive (Linux 6.14+ can); the connection cannot continue");
    }
    if ((rc = tlsk__tls13_next_secret(s, &s->orx_secret)) != 0) {
        return rc;
    }
    s->ossl_read_seq = 0;
    s->rx_ku_asked = false;
    return tlsk__kernel_rekey(s, false);
}

/*
 * A post-handshake message from kernel RX goes to OpenSSL, which answers exactly as it would
 * from the wire: a ticket is stored, a KeyUpdate moves its read key (and when requested its
 * write key, see tlsk__bridge_flush_out), anything unexpected or malformed gets its alert.
 * After a KeyUpdate the kernel's receive path waits for the next key (docs/KERNEL.md §7).
 */
static int handshake_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    uint64_t seen = s->rx_ku_seen;
    int rc = reinject(s, TLSK_REC_HANDSHAKE, msg, len);

    if (rc != 0 || SSL_version(s->ssl) != TLS1_3_VERSION) {
        return rc;
    }
    if (s->rx_ku_seen != seen) {
        /* OpenSSL took a KeyUpdate, whole in this record or ending in it (a malformed one,
         * or one with more after it, got its alert above). */
        s->rx_hs_partial = false;
        if ((rc = follow_peer_key_update(s)) != 0) {
            return rc;
        }
        return tlsk__bridge_answer_key_update(s);
    }
    if (len > 0 && msg[0] == SSL3_MT_KEY_UPDATE) {
        /* A KeyUpdate that goes on in the next record (RFC 8446 5.1 lets a handshake message
         * span records; only a key change may not fall inside one), which is still under the
         * current key: a kernel that re-keys paused after this record, so it gets that key
         * again.  No data may come before the rest (io.c). */
        s->rx_hs_partial = true;
        return s->kernel_rekey ? tlsk__kernel_rx_resume(s) : 0;
    }
    return 0;
}

/*
 * OpenSSL answers a peer's update_requested only from its next SSL_write (it just notes
 * the update, SSL_get_key_update_type), and with transmit in the kernel there is no next
 * SSL_write: send the answer now (RFC 8446 4.6.3 says the receiver MUST).  Before Linux 6.14
 * the answer could not be sent anyway (tlsk__bridge_flush_out), so it is left noted.
 */
int tlsk__bridge_answer_key_update(struct tlsk_socket *s)
{
    int type, r;

    if (!s->ssl) {
        return 0; /* a lean socket answers as it reads the KeyUpdate (lean_key_update_in) */
    }
    type = SSL_get_key_update_type(s->ssl);
    if (!s->tx_kernel || !s->kernel_rekey || type == SSL_KEY_UPDATE_NONE) {
        return 0;
    }
    ERR_clear_error();
    if (SSL_key_update(s->ssl, type) != 1 || (r = SSL_do_handshake(s->ssl)) != 1) {
        s->detail[0] = '\0';
        tlsk__append_ossl_errors(s->detail, sizeof s->detail);
        return TLSK_EKEYUPDATE;
    }
    return tlsk__bridge_flush_out(s);
}

/* A received alert, judged as OpenSSL 3.0 judges one (ssl3_read_bytes), so that the peer
 * gets the same answer in both modes: 0 to read on, 1 for close_notify, or the failure. */
static int alert_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    bool tls13 = tlsk__version(s) == TLS1_3_VERSION;

    if (len != 2) {
        tlsk__bridge_fatal_alert(s, SSL_AD_UNEXPECTED_MESSAGE); /* SSL_R_INVALID_ALERT */
        return tlsk__set_detail(s, TLSK_EPROTO, "malformed alert record (%zu bytes)", len);
    }
    if (msg[1] == SSL_AD_CLOSE_NOTIFY && (tls13 || msg[0] == SSL3_AL_WARNING)) {
        s->got_close_notify = true;
        if (s->ssl) {
            SSL_set_shutdown(s->ssl, SSL_get_shutdown(s->ssl) | SSL_RECEIVED_SHUTDOWN);
        }
        return 1;
    }
    if (tls13 && msg[1] == SSL_AD_USER_CANCELLED) {
        return 0; /* the only TLS 1.3 alert that is not an error (RFC 8446 6.1) */
    }
    if (msg[0] == SSL3_AL_FATAL || tls13) {
        return tlsk__set_detail(s, TLSK_EALERT(msg[1]), "peer sent fatal alert %d", msg[1]);
    }
    if (msg[1] == SSL_AD_NO_RENEGOTIATION) {
        /* OpenSSL ends the connection on this warning, as on a refused renegotiation. */
        tlsk__bridge_fatal_alert(s, SSL_AD_HANDSHAKE_FAILURE);
        return tlsk__set_detail(s, TLSK_EPROTO, "peer sent no_renegotiation");
    }
    if (msg[0] == SSL3_AL_WARNING) {
        return 0; /* any other TLS 1.2 warning */
    }
    tlsk__bridge_fatal_alert(s, SSL_AD_ILLEGAL_PARAMETER); /* SSL_R_UNKNOWN_ALERT_TYPE */
    return tlsk__set_detail(s, TLSK_EPROTO, "alert of unknown level %d", msg[0]);
}

static int forward(struct tlsk_socket *s, int type, const unsigned char *pt, size_t len,
                   bool rekey);

/* A lean socket sends a KeyUpdate itself, as OpenSSL would (RFC 8446 4.6.3): under the old key,
 * then the kernel takes the next one.  0 when sent or parked, -EAGAIN while another record is
 * parked (nothing sent), or a code. */
int tlsk__bridge_key_update(struct tlsk_socket *s, int request_peer)
{
    const unsigned char ku[5] = { SSL3_MT_KEY_UPDATE, 0, 0, 1,
                                  request_peer ? SSL_KEY_UPDATE_REQUESTED
                                               : SSL_KEY_UPDATE_NOT_REQUESTED };
    int rc;

    if (s->pend_len && (rc = tlsk__bridge_flush_out(s)) != 0) {
        return rc;
    }
    if (s->pend_len) {
        s->want = POLLOUT;
        return -EAGAIN;
    }
    if ((rc = tlsk__tls13_next_secret(s, &s->otx_secret)) != 0) {
        return rc;
    }
    s->key_updates++;
    return forward(s, TLSK_REC_HANDSHAKE, ku, sizeof ku, true);
}

/* A lean socket's fatal answer to a post-handshake message: the alert OpenSSL would send. */
static int lean_refuse(struct tlsk_socket *s, int alert, const char *why, int mt)
{
    tlsk__bridge_fatal_alert(s, alert);
    return tlsk__set_detail(s, TLSK_EPROTO, "%s (handshake message type %d after the handshake)",
                            why, mt);
}

/* A KeyUpdate, judged in the order OpenSSL 3.0 judges one (the message size limit in
 * tls_get_message_header, then tls_process_key_update: record boundary, length, type), then
 * followed: the kernel's receive key moves on, and update_requested gets our own KeyUpdate.
 * msg holds the message's first bytes (its header, and its body when there is one) and len
 * counts the message's bytes up to the end of the record that holds its last one. */
static int lean_key_update_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    size_t body = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];
    int rc;

    if (body > 1) {
        return lean_refuse(s, SSL_AD_ILLEGAL_PARAMETER, "KeyUpdate too long", msg[0]);
    }
    if (4 + body != len) {
        /* Cut short (the rest would be under the next key) or followed by more: RFC 8446 5.1
         * wants a key change on a record boundary. */
        return lean_refuse(s, SSL_AD_UNEXPECTED_MESSAGE,
                           "KeyUpdate not aligned with a record boundary", msg[0]);
    }
    if (body != 1) {
        return lean_refuse(s, SSL_AD_DECODE_ERROR, "empty KeyUpdate", msg[0]);
    }
    if (msg[4] != SSL_KEY_UPDATE_NOT_REQUESTED && msg[4] != SSL_KEY_UPDATE_REQUESTED) {
        return lean_refuse(s, SSL_AD_ILLEGAL_PARAMETER, "KeyUpdate of unknown type", msg[0]);
    }
    if ((rc = follow_peer_key_update(s)) != 0) {
        return rc;
    }
    s->key_updates++; /* as OpenSSL's message callback counts them (socket.c) */
    s->rx_ku_seen++;
    if (msg[4] != SSL_KEY_UPDATE_REQUESTED) {
        return 0;
    }
    rc = tlsk__bridge_key_update(s, 0);
    if (rc == -EAGAIN) {
        s->lean->ku_owed = true; /* sent after the parked record (tlsk__bridge_flush_out) */
        rc = 0;
    }
    return rc;
}

/* TLS 1.2 handshake bytes on a lean socket (a server), followed across records as OpenSSL
 * reassembles them: only ClientHellos may come (renegotiation attempts), and each whole one is
 * refused once (2, by the caller).  An empty record is nothing, as for OpenSSL. */
static int lean_tls12_handshake_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    struct tlsk__lean *l = s->lean;
    int rc = 0;

    while (len > 0) {
        size_t take;

        if (l->hs_hdr_len < sizeof l->hs_hdr) {
            take = sizeof l->hs_hdr - l->hs_hdr_len < len ? sizeof l->hs_hdr - l->hs_hdr_len : len;
            memcpy(l->hs_hdr + l->hs_hdr_len, msg, take);
            l->hs_hdr_len += take;
            if (l->hs_hdr_len < sizeof l->hs_hdr) {
                break;
            }
            if (l->hs_hdr[0] != SSL3_MT_CLIENT_HELLO) {
                return lean_refuse(s, SSL_AD_UNEXPECTED_MESSAGE, "unexpected message",
                                   l->hs_hdr[0]);
            }
            l->hs_left = (size_t)l->hs_hdr[1] << 16 | (size_t)l->hs_hdr[2] << 8 | l->hs_hdr[3];
        } else {
            take = l->hs_left < len ? l->hs_left : len;
            l->hs_left -= take;
        }
        msg += take;
        len -= take;
        if (l->hs_hdr_len == sizeof l->hs_hdr && l->hs_left == 0) {
            l->hs_hdr_len = 0; /* a whole ClientHello: refused */
            rc = 2;
        }
    }
    return rc;
}

/* TLS 1.3 handshake bytes on a lean socket (a server): only a KeyUpdate may come, judged as
 * OpenSSL judges one (lean_key_update_in) once its header is in, and followed across records
 * as OpenSSL reassembles it: a record that begins one the next record completes leaves the
 * kernel paused (docs/KERNEL.md §7.8), which then gets the same key again. */
static int lean_tls13_handshake_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    struct tlsk__lean *l = s->lean;
    bool starts = l->ku_len == 0;
    size_t total = l->ku_len + len, take, body;
    int rc;

    if (len == 0 || (starts && msg[0] != SSL3_MT_KEY_UPDATE)) {
        return lean_refuse(s, SSL_AD_UNEXPECTED_MESSAGE, "unexpected message",
                           len ? msg[0] : -1);
    }
    take = sizeof l->ku - l->ku_len < len ? sizeof l->ku - l->ku_len : len;
    memcpy(l->ku + l->ku_len, msg, take);
    l->ku_len += take;
    body = l->ku_len >= 4 ? (size_t)l->ku[1] << 16 | (size_t)l->ku[2] << 8 | l->ku[3] : 0;
    if (l->ku_len < 4 || (body <= 1 && total < 4 + body)) {
        /* Not whole yet: the rest comes in the next record, and no data before it (io.c). */
        s->rx_hs_partial = true;
        return starts && s->kernel_rekey ? tlsk__kernel_rx_resume(s) : 0;
    }
    s->rx_hs_partial = false;
    rc = lean_key_update_in(s, l->ku, total);
    OPENSSL_cleanse(l->ku, sizeof l->ku);
    l->ku_len = 0;
    return rc;
}

/* A handshake record on a lean socket (a server), by version. */
static int lean_handshake_in(struct tlsk_socket *s, const unsigned char *msg, size_t len)
{
    if (tlsk__version(s) == TLS1_2_VERSION) {
        return lean_tls12_handshake_in(s, msg, len);
    }
    return lean_tls13_handshake_in(s, msg, len);
}

/* A control record (type != 23) received from kTLS RX, reassembled up to MSG_EOR.
 * Returns 0 to continue reading, 1 for close_notify, 2 for a TLS 1.2 renegotiation attempt
 * (to be counted, then refused), or a negative code. */
int tlsk__bridge_control_in(struct tlsk_socket *s, int type, const unsigned char *msg, size_t len)
{
    int version = tlsk__version(s);

    if (type == TLSK_REC_ALERT) {
        return alert_in(s, msg, len);
    }
    if (type == TLSK_REC_HANDSHAKE && s->lean) {
        return lean_handshake_in(s, msg, len);
    }
    if (type == TLSK_REC_HANDSHAKE) {
        int mt = len >= 1 ? msg[0] : -1;
        /* A server refuses a ClientHello here only when the record holds the whole message:
         * the pieces of a split one go to OpenSSL, which reassembles it and refuses it as
         * from the wire (a piece may start with any byte). */
        bool whole = len >= 4 && (size_t)(msg[1] << 16 | msg[2] << 8 | msg[3]) == len - 4;
        if (version == TLS1_2_VERSION &&
            ((s->is_server && mt == SSL3_MT_CLIENT_HELLO && whole) ||
             (!s->is_server && mt == SSL3_MT_HELLO_REQUEST))) {
            /* The kernel cannot change TLS 1.2 keys: the caller counts the attempt against
             * the renegotiation limit, then refuses (tlsk__bridge_refuse_renegotiation). */
            return 2;
        }
        return handshake_in(s, msg, len);
    }
    /* A ChangeCipherSpec after the handshake or an unknown type (RFC 8446 5, RFC 5246 6). */
    tlsk__bridge_fatal_alert(s, SSL_AD_UNEXPECTED_MESSAGE);
    return tlsk__set_detail(s, TLSK_ECONTROL, "unexpected record type %d after the handshake",
                            type);
}

/* Refuse a TLS 1.2 renegotiation with a no_renegotiation warning (RFC 5246 7.4.1.1 lets a
 * client ignore a HelloRequest; a server may refuse a ClientHello so). */
int tlsk__bridge_refuse_renegotiation(struct tlsk_socket *s)
{
    static const unsigned char refuse[2] = { SSL3_AL_WARNING, SSL_AD_NO_RENEGOTIATION };

    if (!s->tx_kernel) {
        return tlsk__set_detail(s, TLSK_ECONTROL, "renegotiation on a connection whose receive "
                                                  "side is offloaded");
    }
    /* Through the parking lot: with a full send buffer it waits instead of being lost. */
    return forward(s, TLSK_REC_ALERT, refuse, sizeof refuse, false);
}

/* A fatal alert through kernel TX.  After the kernel rejected a record it leaves the error
 * pending on the socket, and a send would fail with it: consume it first (docs/KERNEL.md
 * §8).  Best effort: the connection is failing anyway. */
void tlsk__bridge_fatal_alert(struct tlsk_socket *s, int desc)
{
    unsigned char alert[2] = { SSL3_AL_FATAL, (unsigned char)desc };
    int err = 0;
    socklen_t l = sizeof err;

    if (!s->tx_kernel || s->sent_close_notify || s->fd < 0) {
        return;
    }
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 &&
        tlsk__send_control(s, TLSK_REC_ALERT, alert, sizeof alert) == 0) {
        s->sent_close_notify = true; /* nothing may follow a fatal alert */
    }
}

/* Keep a control record that met a full send buffer: it has left OpenSSL and its sequence
 * number is spent, so it goes first once the socket is writable (tlsk__bridge_flush_out). */
static int park(struct tlsk_socket *s, int type, const unsigned char *pt, size_t len, bool rekey)
{
    if (!s->pend && !(s->pend = malloc(TLSK_MAX_PLAINTEXT + 256))) {
        return tlsk__set_detail(s, TLSK_ENOMEM, "out of memory");
    }
    memcpy(s->pend, pt, len);
    s->pend_len = len;
    s->pend_type = type;
    s->pend_rekey = rekey;
    s->want = POLLOUT;
    return 0;
}

/* Send one control record, then with rekey move the kernel to the next transmit key (RFC
 * 8446 4.6.3: the KeyUpdate goes under the old key).  0 when sent or parked. */
static int forward(struct tlsk_socket *s, int type, const unsigned char *pt, size_t len,
                   bool rekey)
{
    int rc = tlsk__send_control(s, type, pt, len);

    if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
        return park(s, type, pt, len, rekey);
    }
    if (rc != 0) {
        return tlsk__set_detail(s, rc, "sending a control record: %s", strerror(-rc));
    }
    return rekey ? tlsk__kernel_rekey(s, true) : 0;
}

/* The parked record, if any: 0 once it is gone, -EAGAIN while the buffer is still full. */
static int send_parked(struct tlsk_socket *s)
{
    int rc;

    if (s->pend_len == 0) {
        return 0;
    }
    rc = tlsk__send_control(s, s->pend_type, s->pend, s->pend_len);
    if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
        s->want = POLLOUT;
        return -EAGAIN;
    }
    OPENSSL_cleanse(s->pend, s->pend_len);
    s->pend_len = 0;
    if (rc != 0) {
        return tlsk__set_detail(s, rc, "sending a control record: %s", strerror(-rc));
    }
    return s->pend_rekey ? tlsk__kernel_rekey(s, true) : 0;
}

/* Forward what OpenSSL wrote to its memory BIO after TX offload.  0 when everything went,
 * or waits parked behind a record that met a full send buffer (s->pend_len). */
int tlsk__bridge_flush_out(struct tlsk_socket *s)
{
    BIO *w = s->ssl ? SSL_get_wbio(s->ssl) : NULL;
    unsigned char rec[5 + TLSK_MAX_PLAINTEXT + 256 + TLSK_TAG_LEN];
    unsigned char pt[TLSK_MAX_PLAINTEXT + 256];
    struct tlsk__keys k;
    int rc = 0;

    if (!s->tx_kernel || (!w && !s->lean)) {
        return 0;
    }
    rc = send_parked(s);
    if (rc == 0 && s->lean && s->lean->ku_owed) {
        /* The answer to a peer's update_requested waited behind a parked record. */
        s->lean->ku_owed = false;
        rc = tlsk__bridge_key_update(s, 0);
    }
    if (rc != 0 || !w || BIO_ctrl_pending(w) == 0) {
        return rc == -EAGAIN ? 0 : rc;
    }
    rc = SSL_version(s->ssl) == TLS1_3_VERSION ? tlsk__derive_keys_from(s, &s->otx_secret, &k)
                                               : tlsk__derive_keys(s, !s->is_server, &k);
    if (rc != 0) {
        return rc;
    }
    while (BIO_ctrl_pending(w) >= 5 && s->pend_len == 0) {
        size_t len, pt_len;
        int type;
        bool ku;

        if (BIO_read(w, rec, 5) != 5) {
            rc = TLSK_EINTERNAL;
            break;
        }
        len = (size_t)rec[3] << 8 | rec[4];
        if (len > sizeof rec - 5 || BIO_read(w, rec + 5, (int)len) != (int)len) {
            rc = tlsk__set_detail(s, TLSK_EINTERNAL, "OpenSSL wrote a malformed record");
            break;
        }
        rc = tlsk__record_open(&k, s->ossl_write_seq, rec, 5 + len, &type, pt, sizeof pt,
                               &pt_len);
        if (rc != 0) {
            rc = tlsk__set_detail(s, TLSK_EINTERNAL, "cannot decrypt OpenSSL's record (%s)",
                                  strerror(-rc));
            break;
        }
        s->ossl_write_seq++;
        ku = type == TLSK_REC_HANDSHAKE && pt_len >= 1 && pt[0] == SSL3_MT_KEY_UPDATE;
        if (ku) {
            /* OpenSSL moved to its next write secret (our update, or its answer to the
             * peer's update_requested): its later records are under the next key. */
            OPENSSL_cleanse(&k, sizeof k);
            if ((rc = tlsk__tls13_next_secret(s, &s->otx_secret)) != 0 ||
                (rc = tlsk__derive_keys_from(s, &s->otx_secret, &k)) != 0) {
                break;
            }
            s->ossl_write_seq = 0;
            if (!s->kernel_rekey) {
                /* Before Linux 6.14 the kernel cannot follow: the KeyUpdate is not sent and
                 * the kernel keeps its key, which stays valid since the peer is never told
                 * otherwise.  The stream stays consistent; the update does not happen. */
                OPENSSL_cleanse(pt, pt_len);
                s->key_updates_refused++;
                continue;
            }
        }
        rc = forward(s, type, pt, pt_len, ku);
        OPENSSL_cleanse(pt, pt_len);
        if (rc != 0) {
            break;
        }
    }
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/*
 * io.c - data on an open connection: read, write, writev, shutdown, in both modes.
 *
 * Kernel direction: plain syscalls; reads go through recvmsg with a record-type control
 * buffer so control records reach the bridge (docs/KERNEL.md §3).  Userspace direction:
 * SSL_read/SSL_write.  Also the descriptor handed over to code that knows nothing of TLS
 * (tlsk_socket_detach, tlsk_fd_read).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

#define CTRL_CAP (TLSK_MAX_PLAINTEXT + 256) /* a reassembled control record */

/* A failed kernel read.  The kernel sends no alert of its own: send the one OpenSSL would have
 * sent for the same record (docs/KERNEL.md §8). */
static ssize_t kernel_read_error(struct tlsk_socket *s, int e)
{
    if (e == EAGAIN) {
        s->want = POLLIN;
        return -EAGAIN;
    }
    if (e == EBADMSG) {
        tlsk__bridge_fatal_alert(s, SSL_AD_BAD_RECORD_MAC);
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EBADRECORD,
                                              "kernel: record failed authentication (EBADMSG)"));
    }
    if (e == EMSGSIZE || e == EINVAL) {
        tlsk__bridge_fatal_alert(s, e == EMSGSIZE                             ? SSL_AD_RECORD_OVERFLOW
                                    : tlsk__version(s) == TLS1_3_VERSION ? SSL_AD_DECODE_ERROR
                                                                             : SSL_AD_PROTOCOL_VERSION);
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EPROTO, "kernel: malformed record (%s)",
                                              strerror(e)));
    }
    if (e == EPROTO) {
        /* Only tlsk's own record layer says this (soft.c): what OpenSSL refuses with
         * unexpected_message. */
        tlsk__bridge_fatal_alert(s, SSL_AD_UNEXPECTED_MESSAGE);
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EPROTO, "record refused: unexpected "
                                                              "record type or an empty record "
                                                              "too many"));
    }
    if (e == EKEYEXPIRED) {
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EKEYUPDATE, "kernel: receive key expired"));
    }
    return tlsk__fail(s, tlsk__set_detail(s, -e, "recvmsg: %s", strerror(e)));
}

/* OpenSSL ends a connection at the fifth warning alert in a row (MAX_WARN_ALERT_COUNT in
 * ssl3_read_bytes; a non-empty record of another type starts the count again).  With receive
 * in the kernel the same records arrive here, so the same count is kept. */
#define MAX_WARN_ALERTS 5

/* A record came through the kernel: a warning alert counts (true for the fifth in a row),
 * any other non-empty record resets the count. */
static bool warn_alerts(struct tlsk_socket *s, bool warning)
{
    if (!warning) {
        s->warn_alerts = 0;
        return false;
    }
    return ++s->warn_alerts >= MAX_WARN_ALERTS;
}

/* n bytes of application data arrived through the kernel. */
static ssize_t kernel_data(struct tlsk_socket *s, void *buf, ssize_t n)
{
    uint64_t limit = tlsk__key_limit(s);

    if (s->rx_hs_partial) {
        /* RFC 8446 5.1: no other record between the pieces of a handshake message (OpenSSL:
         * SSL_R_MIXED_HANDSHAKE_AND_NON_HANDSHAKE_DATA, unexpected_message). */
        OPENSSL_cleanse(buf, (size_t)n);
        tlsk__bridge_fatal_alert(s, SSL_AD_UNEXPECTED_MESSAGE);
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EPROTO, "application data inside a "
                                                              "KeyUpdate split across records"));
    }
    warn_alerts(s, false);

    /* One read may return many records: the kernel's own sequence number counts them.  Asked
     * for every read when the limit is near enough to matter. */
    if (limit != UINT64_MAX && (limit < ((uint64_t)1 << 20) || ++s->rx_reads % 64 == 0)) {
        uint64_t seq;
        if (tlsk__kernel_seq(s, false, &seq) == 0) {
            s->krx_recs = seq - s->rx_seq0;
        }
    }
    if (s->krx_recs >= limit) {
        int rc = tlsk__kernel_rx_limit(s);
        if (rc != 0) {
            return tlsk__fail(s, rc);
        }
    }
    /* Plaintext only: the records' overhead is added from the kernel's sequence number by
     * tlsk_socket_bytes_read(), since one read may span many records. */
    s->bytes_read += (size_t)n;
    return n;
}

/* A whole control record in s->ctrl goes to the bridge: 0 to read on, 1 for close_notify,
 * or the failure. */
static int kernel_control(struct tlsk_socket *s)
{
    bool alert = s->ctrl_type == TLSK_REC_ALERT, warning;
    int rc;

    s->bytes_read += s->ctrl_len;
    warning = alert && s->ctrl_len == 2 &&
              (s->ctrl[0] == SSL3_AL_WARNING ||
               (tlsk__version(s) == TLS1_3_VERSION && s->ctrl[1] == SSL_AD_USER_CANCELLED));
    if (warning && warn_alerts(s, true)) {
        OPENSSL_cleanse(s->ctrl, s->ctrl_len);
        s->ctrl_len = 0;
        tlsk__bridge_fatal_alert(s, SSL_AD_UNEXPECTED_MESSAGE); /* SSL_R_TOO_MANY_WARN_ALERTS */
        return tlsk__fail(s, tlsk__set_detail(s, TLSK_EPROTO, "too many warning alerts"));
    }
    if (!alert && s->ctrl_len > 0) {
        warn_alerts(s, false);
    }
    rc = tlsk__bridge_control_in(s, s->ctrl_type, s->ctrl, s->ctrl_len);
    OPENSSL_cleanse(s->ctrl, s->ctrl_len);
    s->ctrl_len = 0;
    if (rc == 2) {
        /* A renegotiation attempt: a client's count against the limit. */
        rc = s->is_server ? tlsk__reneg_attempt(s) : 0;
        if (rc == 0) {
            rc = tlsk__bridge_refuse_renegotiation(s);
        }
    }
    if (rc == 0 && s->reneg_err) {
        rc = s->reneg_err; /* counted by OpenSSL's info callback (a re-injected ClientHello) */
    }
    return rc < 0 ? tlsk__fail(s, rc) : rc;
}

/* One receive from the kernel, or from tlsk's record layer in its place (soft.c). */
static ssize_t krecv(struct tlsk_socket *s, void *buf, size_t len, int *type, bool *eor)
{
    return s->soft ? tlsk__soft_recv(s, buf, len, type, eor)
                   : tlsk__krecv(s->fd, buf, len, type, eor);
}

/* Kernel RX: data, or control records reassembled up to MSG_EOR for the bridge. */
static ssize_t kernel_read(struct tlsk_socket *s, void *buf, size_t len)
{
    for (;;) {
        bool in_ctrl = s->ctrl_len > 0, eor;
        int type, rc;
        ssize_t n = in_ctrl ? krecv(s, s->ctrl + s->ctrl_len, CTRL_CAP - s->ctrl_len, &type, &eor)
                            : krecv(s, buf, len, &type, &eor);

        if (n < 0) {
            return kernel_read_error(s, (int)-n);
        }
        if (n == 0 && !in_ctrl && type != TLSK_REC_APPDATA) {
            /* A zero-length control record, not the end of the stream: OpenSSL judges it
             * as it would from the wire. */
            if (!s->ctrl && !(s->ctrl = malloc(CTRL_CAP))) {
                return tlsk__fail(s, TLSK_ENOMEM);
            }
            s->ctrl_type = type;
            s->ctrl_len = 0;
            if ((rc = kernel_control(s)) != 0) {
                return rc == 1 ? 0 : rc;
            }
            continue;
        }
        if (n == 0) {
            if (in_ctrl || !s->got_close_notify) {
                /* OpenSSL answers an unexpected EOF with decode_error (3.0: SSLfatal in
                 * ssl3_read_n): so does the kernel path. */
                tlsk__bridge_fatal_alert(s, SSL_AD_DECODE_ERROR);
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_ETRUNCATED,
                                                      in_ctrl ? "EOF inside a control record"
                                                              : "peer closed TCP without "
                                                                "close_notify"));
            }
            return 0;
        }
        if (in_ctrl) {
            s->ctrl_len += (size_t)n;
        } else if (type == TLSK_REC_APPDATA) {
            return kernel_data(s, buf, n);
        } else {
            /* A control record landed in the caller's buffer: move it to ours. */
            if (!s->ctrl && !(s->ctrl = malloc(CTRL_CAP))) {
                return tlsk__fail(s, TLSK_ENOMEM);
            }
            memcpy(s->ctrl, buf, (size_t)n);
            s->ctrl_type = type;
            s->ctrl_len = (size_t)n;
        }
        if (!eor && s->ctrl_len < CTRL_CAP) {
            continue;
        }
        if ((rc = kernel_control(s)) != 0) {
            return rc == 1 ? 0 : rc;
        }
    }
}

TLSK_PUBLIC ssize_t tlsk_socket_read(struct tlsk_socket *s, void *buf, size_t len)
{
    size_t got = 0;
    int r, rc;

    if ((rc = tlsk__ensure_open(s)) != 0) {
        return rc;
    }
    if (len == 0) {
        return -EINVAL;
    }
    if (s->held_off < s->held_len) {
        /* Application data that arrived while renegotiating. */
        size_t n = s->held_len - s->held_off < len ? s->held_len - s->held_off : len;
        memcpy(buf, s->held + s->held_off, n);
        s->held_off += n;
        if (s->held_off == s->held_len) {
            s->held_off = s->held_len = 0;
        }
        return (ssize_t)n;
    }
    if (s->got_close_notify) {
        return 0;
    }
    if (s->pend_len && (rc = tlsk__bridge_flush_out(s)) != 0) {
        return tlsk__fail(s, rc);
    }
    if (s->rx_kernel) {
        return kernel_read(s, buf, len);
    }
    /* Queued records go first; what OpenSSL writes while reading queues behind them.  A send
     * that fails here fails the next write. */
    (void)tlsk__txq_flush(s);
    tlsk__user_rx_limit(s);
    tlsk__err_reset();
    errno = 0;
    r = SSL_read_ex(s->ssl, buf, len, &got);
    (void)tlsk__txq_flush(s);
    if (s->reneg_err) {
        return tlsk__fail(s, s->reneg_err);
    }
    if (r == 1) {
        s->data_in = true;
        rc = tlsk__bridge_answer_key_update(s);
        if (rc == 0) {
            rc = tlsk__bridge_flush_out(s);
        }
        if (rc != 0) {
            return tlsk__fail(s, rc);
        }
        return (ssize_t)got;
    }
    rc = tlsk__ossl_error(s, r, TLSK__OP_READ);
    if (rc == -EAGAIN || rc == 0) {
        int frc = tlsk__bridge_answer_key_update(s);
        if (frc == 0) {
            frc = tlsk__bridge_flush_out(s);
        }
        if (frc != 0) {
            return tlsk__fail(s, frc);
        }
        if (rc == 0) {
            SSL_set_shutdown(s->ssl, SSL_get_shutdown(s->ssl) | SSL_RECEIVED_SHUTDOWN);
        } else if (s->soft_later && s->data_in && (frc = tlsk__idle(s)) != 0) {
            return frc; /* lean at the first wait after data (idle.c) */
        }
        return rc;
    }
    {
        /* Best effort: forward the alert OpenSSL wrote, if any; the failure is rc. */
        int ignored = tlsk__bridge_flush_out(s);
        (void)ignored;
    }
    return tlsk__fail(s, rc);
}

/* The outcome of a send-like syscall on a TX-offloaded socket: -EAGAIN with the wait noted,
 * a named error, or the count (with the TLS bytes it becomes on the wire: one header, tag
 * and, for TLS 1.3, inner type byte, or TLS 1.2 explicit nonce per 16 KiB record). */
ssize_t tlsk__kernel_sent(struct tlsk_socket *s, ssize_t n, const char *what)
{
    size_t recs, per;

    if (n < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK) {
            s->want = POLLOUT;
            return -EAGAIN;
        }
        return tlsk__set_detail(s, -e, "%s: %s", what, strerror(e));
    }
    recs = ((size_t)n + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT;
    per = tlsk__record_overhead(s);
    s->bytes_written += (size_t)n + recs * per;
    s->ktx_recs += recs;
    return n;
}

/* Whether a send failed only on an error that kernel receive left on the socket (a refused
 * record: docs/KERNEL.md §8; TX reports it without clearing it).  Consumes it: true when
 * the send may be tried again. */
static bool rx_error_consumed(struct tlsk_socket *s, int e)
{
    int err = 0;
    socklen_t l = sizeof err;

    return s->rx_kernel && (e == EBADMSG || e == EMSGSIZE || e == EINVAL) &&
           getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == e;
}

static ssize_t kernel_write_iov(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t n, r;
    int rx_err = 0;

    for (;;) {
        n = s->soft ? tlsk__soft_sendmsg(s, iov, iovcnt) : sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && !rx_err && rx_error_consumed(s, errno)) {
            rx_err = errno;
            continue;
        }
        break;
    }
    r = tlsk__kernel_sent(s, n, "send");
    if (rx_err) {
        /* The kernel refused a record behind the data just read, and the caller answered
         * that data: as OpenSSL would, the answer goes first, then the alert, and the next
         * read reports the failure (after an oversized record the kernel would not say it
         * again: its error was the only trace). */
        (void)kernel_read_error(s, rx_err);
    }
    return r;
}

/* A userspace write that failed with r: would-block and a gone peer are answered as they are,
 * anything else fails the socket (0, OpenSSL's "closed", as TLSK_ECLOSED). */
static ssize_t user_write_failed(struct tlsk_socket *s, int r)
{
    if (r == -EAGAIN || r == -EPIPE) {
        return r;
    }
    return tlsk__fail(s, r == 0 ? TLSK_ECLOSED : r);
}

/* Userspace write of one buffer: OpenSSL in partial-write mode returns after each record. */
ssize_t tlsk__user_write(struct tlsk_socket *s, const unsigned char *buf, size_t len)
{
    size_t done = 0;

    tlsk__user_tx_limit(s);

    /* Two records or more go out in one send (txq.c); so does anything after records still
     * queued.  Not while a TLS 1.2 renegotiation runs (OpenSSL may want to read) and not on
     * the memory transport. */
    if (!s->is_pair && ((len > TLSK_MAX_PLAINTEXT && !SSL_in_init(s->ssl) && !s->reneg_running) ||
                        tlsk__txq_pending(s))) {
        ssize_t n = tlsk__txq_write(s, buf, len);
        return n > 0 ? n : user_write_failed(s, (int)n);
    }
    while (done < len) {
        size_t w = 0;
        int r;

        tlsk__err_reset();
        errno = 0;
        r = SSL_write_ex(s->ssl, buf + done, len - done, &w);
        if (r == 1) {
            done += w;
            continue;
        }
        r = tlsk__ossl_error(s, r, TLSK__OP_WRITE);
        if (done > 0 && r == -EAGAIN) {
            break;
        }
        return user_write_failed(s, r);
    }
    return (ssize_t)done;
}

/* A control record parked on a full send buffer (a KeyUpdate, a ticket) goes before any data
 * the kernel sends, and a KeyUpdate's new key with it.  0, -EAGAIN or the failure. */
static int tx_unparked(struct tlsk_socket *s)
{
    int rc;

    if (s->pend_len == 0) {
        return 0;
    }
    if ((rc = tlsk__bridge_flush_out(s)) != 0) {
        return tlsk__fail(s, rc);
    }
    if (s->pend_len) {
        s->want = POLLOUT;
        return -EAGAIN;
    }
    return 0;
}

/* Open, nothing closed for writing, and any parked control record gone: 0 or a code. */
static int check_writable(struct tlsk_socket *s)
{
    int rc = tlsk__ensure_open(s);
    if (rc != 0) {
        return rc;
    }
    if (s->sent_close_notify) {
        return TLSK_ECLOSED;
    }
    return tx_unparked(s);
}

ssize_t tlsk__tx_allowance(struct tlsk_socket *s, size_t want)
{
    int rc = check_writable(s);

    if (rc != 0) {
        return rc;
    }
    if (want == 0) {
        return 0;
    }
    /* Lean (idle.c) before bulk, or once a write has waited for the socket: tlsk's record
     * layer sends data for half of OpenSSL's instructions (docs/KERNEL.md §16.1). */
    if (s->soft_later && (want >= TLSK__LEAN_BULK || s->want == POLLOUT) &&
        (rc = tlsk__idle(s)) != 0) {
        return rc;
    }
    if (s->tx_kernel) {
        return tlsk__kernel_budget(s, want);
    }
    return (ssize_t)(want > SSIZE_MAX ? SSIZE_MAX : want);
}

TLSK_PUBLIC ssize_t tlsk_socket_write(struct tlsk_socket *s, const void *buf, size_t len)
{
    ssize_t n = tlsk__tx_allowance(s, len);

    if (n <= 0) {
        return n;
    }
    if (s->tx_kernel) {
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = (size_t)n };
        return kernel_write_iov(s, &iov, 1);
    }
    return tlsk__user_write(s, buf, len);
}

TLSK_PUBLIC ssize_t tlsk_socket_writev(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    unsigned char small[TLSK_MAX_PLAINTEXT];
    size_t total = 0, off = 0;
    ssize_t done = 0, allowed;

    if (iovcnt < 0 || (iovcnt > 0 && !iov)) {
        return -EINVAL;
    }
    for (int i = 0; i < iovcnt; i++) {
        /* As writev(2): a total that does not fit ssize_t is EINVAL (and never wraps). */
        if (iov[i].iov_len > (size_t)SSIZE_MAX - total) {
            return -EINVAL;
        }
        total += iov[i].iov_len;
    }
    if ((allowed = tlsk__tx_allowance(s, total)) <= 0) {
        return allowed;
    }
    if (s->tx_kernel) {
        if ((size_t)allowed < total) {
            /* Rare: only near the key limit.  Send the first piece alone. */
            struct iovec one = { iov[0].iov_base, iov[0].iov_len < (size_t)allowed
                                                      ? iov[0].iov_len
                                                      : (size_t)allowed };
            return kernel_write_iov(s, &one, 1);
        }
        return kernel_write_iov(s, iov, iovcnt);
    }
    if (total <= sizeof small) {
        /* Small pieces in one record, not one record each. */
        for (int i = 0; i < iovcnt; i++) {
            memcpy(small + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        return total ? tlsk__user_write(s, small, total) : 0;
    }
    for (int i = 0; i < iovcnt; i++) {
        ssize_t n;
        if (iov[i].iov_len == 0) {
            continue;
        }
        n = tlsk__user_write(s, iov[i].iov_base, iov[i].iov_len);
        if (n < 0) {
            return done > 0 && n == -EAGAIN ? done : n;
        }
        done += n;
        if ((size_t)n < iov[i].iov_len) {
            break;
        }
    }
    return done;
}

TLSK_PUBLIC int tlsk_socket_shutdown(struct tlsk_socket *s)
{
    static const unsigned char close_notify[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
    int rc = tlsk__ensure_open(s);

    if (rc != 0) {
        return rc;
    }
    if (s->sent_close_notify) {
        return tlsk__soft_flush(s);
    }
    if (s->tx_kernel) {
        if ((rc = tx_unparked(s)) != 0) {
            return rc;
        }
        /* The kernel never sends close_notify (docs/KERNEL.md §4.4). */
        rc = tlsk__send_control(s, TLSK_REC_ALERT, close_notify, sizeof close_notify);
        if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
            s->want = POLLOUT;
            return -EAGAIN;
        }
        if (rc != 0) {
            return tlsk__set_detail(s, rc, "sending close_notify: %s", strerror(-rc));
        }
        if (s->ssl) {
            SSL_set_shutdown(s->ssl, SSL_get_shutdown(s->ssl) | SSL_SENT_SHUTDOWN);
        }
    } else {
        int r;
        /* Records still queued leave before close_notify. */
        if ((rc = tlsk__txq_flush(s)) != 0) {
            return rc;
        }
        ERR_clear_error();
        errno = 0;
        r = SSL_shutdown(s->ssl);
        if (r < 0) {
            rc = tlsk__ossl_error(s, r, TLSK__OP_WRITE);
            return rc == 0 ? 0 : rc;
        }
    }
    s->sent_close_notify = true;
    /* With tlsk's record layer, done once close_notify and all before it have left (0 for
     * every other socket). */
    return tlsk__soft_flush(s);
}

TLSK_PUBLIC int tlsk_socket_detach(struct tlsk_socket *s)
{
    int fd;

    if (!s || s->state != TLSK__OPEN || !s->tx_kernel || !s->rx_kernel || s->soft) {
        return TLSK_ESTATE;
    }
    fd = s->fd;
    s->flags &= ~(unsigned)TLSK_SOCKET_OWN_FD;
    tlsk_socket_free(s);
    return fd;
}

TLSK_PUBLIC ssize_t tlsk_fd_read(int fd, void *buf, size_t len)
{
    if (len == 0) {
        return -EINVAL;
    }
    for (;;) {
        unsigned char ctrl[CTRL_CAP];
        int type;
        bool eor;
        size_t have;
        ssize_t n = tlsk__krecv(fd, buf, len, &type, &eor);

        if (n <= 0 || type == TLSK_REC_APPDATA) {
            return n;
        }
        /* A control record: gather it whole (it may have been cut by a small buffer). */
        have = (size_t)n < sizeof ctrl ? (size_t)n : sizeof ctrl;
        memcpy(ctrl, buf, have);
        while (!eor && have < sizeof ctrl) {
            n = tlsk__krecv(fd, ctrl + have, sizeof ctrl - have, &type, &eor);
            if (n <= 0) {
                return n < 0 ? n : TLSK_ETRUNCATED;
            }
            have += (size_t)n;
        }
        if (type == TLSK_REC_ALERT && have == 2) {
            if (ctrl[1] == SSL_AD_CLOSE_NOTIFY) {
                return 0;
            }
            if (ctrl[0] == SSL3_AL_FATAL) {
                return TLSK_EALERT(ctrl[1]);
            }
            continue; /* a warning alert */
        }
        return TLSK_ECONTROL;
    }
}

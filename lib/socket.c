/* socket.c - one TLS connection: handshake driver, read/write/sendfile, shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "kconst.h"

#define SF_BUF_SIZE (16 * TLSK_MAX_PLAINTEXT)
#define SF_MAP_SIZE (64 * TLSK_MAX_PLAINTEXT)
#define PAIR_FD (-2) /* socket_new(): a memory transport instead of an fd */

/* Count records after each side's Finished: the kernel's starting sequence numbers
 * (docs/OPENSSL.md §3).  Also count TLS bytes on the transport while OpenSSL moves records. */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    struct tlsk_socket *s = arg;
    const unsigned char *p = buf;

    (void)version;
    (void)ssl;
    if (content_type == SSL3_RT_HEADER && len >= 5) {
        size_t rec = 5 + ((size_t)p[3] << 8 | p[4]);
        if (p[0] == SSL3_RT_CHANGE_CIPHER_SPEC) {
            /* TLS 1.2: the epoch starts after this record; the records after it are
             * numbered from 0.  (OpenSSL 3.0 reports a received ChangeCipherSpec only as
             * this header, not as a message.) */
            if (write_p) {
                s->bytes_written += rec;
                s->own_ccs = true;
                s->tx_after_ccs = 0;
            } else {
                s->bytes_read += rec;
                s->peer_ccs = true;
                s->rx_after_ccs = 0;
            }
            return;
        }
        if (write_p) {
            s->bytes_written += rec;
            if (s->own_finished) {
                s->tx_after_fin++;
            }
            if (s->own_ccs) {
                s->tx_after_ccs++;
            }
        } else {
            s->bytes_read += rec;
            if (s->peer_finished) {
                s->rx_after_fin++;
            }
            if (s->peer_ccs) {
                s->rx_after_ccs++;
            }
        }
        return;
    }
    if (content_type == SSL3_RT_HANDSHAKE && len >= 1 && p[0] == SSL3_MT_FINISHED) {
        if (write_p) {
            s->own_finished = true;
        } else {
            s->peer_finished = true;
        }
        if (s->own_reneg && s->reneg_phase >= 1) {
            /* Our renegotiation is done once both Finished messages of the new handshake
             * went by (OpenSSL's handshake-start/done signals fire without one). */
            s->reneg_phase |= write_p ? 2 : 4;
        }
    }
    if (content_type == SSL3_RT_HANDSHAKE && len >= 1 && p[0] == SSL3_MT_KEY_UPDATE) {
        /* A new key in that direction: the record count under it starts again. */
        if (write_p) {
            s->tx_key_base = s->tx_after_fin;
        } else {
            s->rx_key_base = s->rx_after_fin;
            s->rx_ku_seen++;
        }
        s->key_updates++;
    }
}

/* TLS 1.2 servers: count client-initiated handshakes (the first is not one). */
static void info_cb(const SSL *ssl, int where, int ret)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);

    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_START) || !s || !s->is_server || s->state != TLSK__OPEN ||
        s->own_reneg || SSL_version(ssl) != TLS1_2_VERSION) {
        return;
    }
    if (!s->reneg_err) {
        s->reneg_err = tlsk__reneg_attempt(s);
    }
}

static bool is_ip_literal(const char *name)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

/* Clients with a check_identity callback: chain verification as usual, then the
 * application's identity check on the leaf (depth 0 is verified last). */
static int identity_verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tlsk_socket *s = ssl ? SSL_get_app_data(ssl) : NULL;

    if (!s) {
        return ok;
    }
    if (ok && X509_STORE_CTX_get_error_depth(x) == 0) {
        struct tlsk_cert_info *ci = NULL;
        int rc = tlsk__cert_info_new(X509_STORE_CTX_get_current_cert(x), &ci);
        if (rc == 0) {
            rc = s->check_identity(s->servername, ci, s->check_identity_data);
        }
        tlsk_cert_info_free(ci);
        if (rc != 0) {
            X509_STORE_CTX_set_error(x, X509_V_ERR_HOSTNAME_MISMATCH);
            ok = 0;
        }
    }
    return (s->ctx->flags & TLSK_VERIFY_NONE_INSECURE) ? 1 : ok;
}

static int socket_new(struct tlsk_socket **out, struct tlsk_context *ctx, int fd, bool server,
                      const struct tlsk_socket_options *o)
{
    static const struct tlsk_socket_options zero;
    struct tlsk_socket *s;
    BIO *b;

    if (!o) {
        o = &zero;
    }
    if (!out || !ctx) {
        return TLSK_ECONFIG;
    }
    if (fd != PAIR_FD && (fd < 0 || fcntl(fd, F_GETFD) < 0)) {
        return -EBADF;
    }
    if ((unsigned)o->offload > TLSK_OFFLOAD_REQUIRE) {
        return TLSK_ECONFIG;
    }
    if (!server && !o->servername && !(ctx->flags & TLSK_VERIFY_NONE_INSECURE)) {
        /* A chain check without a name check accepts any certificate from a trusted CA. */
        return TLSK_ECONFIG;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        return TLSK_ENOMEM;
    }
    s->ssl = SSL_new(ctx->ssl_ctx);
    b = fd == PAIR_FD ? BIO_new(BIO_s_mem()) : BIO_new_socket(fd, BIO_NOCLOSE);
    if (!s->ssl || !b) {
        BIO_free(b);
        SSL_free(s->ssl);
        free(s);
        return TLSK_ENOMEM;
    }
    s->ctx = tlsk_context_ref(ctx);
    s->is_pair = fd == PAIR_FD;
    s->fd = s->is_pair ? -1 : fd;
    if (!s->is_pair) {
        s->laddr_len = sizeof s->laddr;
        s->raddr_len = sizeof s->raddr;
        if (getsockname(fd, (struct sockaddr *)&s->laddr, &s->laddr_len) != 0) {
            s->laddr_len = 0;
        }
        if (getpeername(fd, (struct sockaddr *)&s->raddr, &s->raddr_len) != 0) {
            s->raddr_len = 0;
        }
    }
    s->flags = o->flags;
    s->is_server = server;
    s->policy = o->offload != TLSK_OFFLOAD_DEFAULT ? o->offload : ctx->offload;
    s->want = POLLIN;
    /* Keep our own reference to the socket BIO: OpenSSL's may be swapped for memory BIOs. */
    BIO_up_ref(b);
    s->sock_bio = b;
    if (s->is_pair) {
        /* Two memory BIOs: sock_bio is what arrives (fed), the write BIO what leaves. */
        BIO *w = BIO_new(BIO_s_mem());
        if (!w) {
            BIO_free(b);
            BIO_free(b);
            SSL_free(s->ssl);
            tlsk_context_free(s->ctx);
            free(s);
            return TLSK_ENOMEM;
        }
        BIO_set_mem_eof_return(b, -1);
        SSL_set_bio(s->ssl, b, w);
    } else {
        SSL_set_bio(s->ssl, b, b);
    }
    SSL_set_app_data(s->ssl, s);
    SSL_set_msg_callback(s->ssl, msg_cb);
    SSL_set_msg_callback_arg(s->ssl, s);
    SSL_set_info_callback(s->ssl, info_cb);
    s->on_session = o->on_session;
    s->on_session_data = o->on_session_data;

    s->sni = o->sni;
    s->sni_cb = o->sni_cb;
    s->sni_data = o->sni_data;
    tlsk__apply_verify(s->ssl, ctx, server);
    if (server) {
        SSL_set_accept_state(s->ssl);
    } else {
        SSL_set_connect_state(s->ssl);
        if (o->servername) {
            /* The name is checked even with TLSK_VERIFY_NONE_INSECURE, so that
             * tlsk_socket_authorization_error() can say HOSTNAME_MISMATCH. */
            X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
            int ok;
            s->servername = strdup(o->servername);
            if (o->check_identity) {
                /* The application's check replaces the name match. */
                ok = is_ip_literal(o->servername) ||
                     SSL_set_tlsext_host_name(s->ssl, o->servername) == 1;
            } else if (is_ip_literal(o->servername)) {
                /* RFC 6066 3: no SNI for IP literals; match IP SANs instead. */
                ok = X509_VERIFY_PARAM_set1_ip_asc(vp, o->servername) == 1;
            } else {
                ok = SSL_set_tlsext_host_name(s->ssl, o->servername) == 1 &&
                     SSL_set1_host(s->ssl, o->servername) == 1;
            }
            if (!ok || !s->servername) {
                ERR_clear_error();
                tlsk_socket_free(s);
                return TLSK_ECONFIG;
            }
        }
    }
    if (!server && o->check_identity) {
        s->check_identity = o->check_identity;
        s->check_identity_data = o->check_identity_data;
        SSL_set_verify(s->ssl, SSL_VERIFY_PEER, identity_verify_cb);
    }
    if (o->session) {
        const unsigned char *p = o->session;
        SSL_SESSION *sess;

        if (server || o->session_len == 0 || o->session_len > LONG_MAX ||
            !(sess = d2i_SSL_SESSION(NULL, &p, (long)o->session_len))) {
            ERR_clear_error();
            tlsk_socket_free(s);
            return TLSK_ECONFIG;
        }
        if (SSL_set_session(s->ssl, sess) != 1) {
            ERR_clear_error();
            SSL_SESSION_free(sess);
            tlsk_socket_free(s);
            return TLSK_ECONFIG;
        }
        SSL_SESSION_free(sess);
    }
    *out = s;
    return 0;
}

TLSK_PUBLIC int tlsk_socket_new_server(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                                       const struct tlsk_socket_options *opts)
{
    return socket_new(out, ctx, fd, true, opts);
}

TLSK_PUBLIC int tlsk_socket_new_client(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                                       const struct tlsk_socket_options *opts)
{
    return socket_new(out, ctx, fd, false, opts);
}

TLSK_PUBLIC int tlsk_connect(struct tlsk_socket **out, struct tlsk_context *ctx, const char *host,
                             const char *port, const struct tlsk_socket_options *opts)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP };
    struct addrinfo *res = NULL, *ai;
    struct tlsk_socket_options o = { 0 };
    int fd = -1, rc = 0;

    if (!out || !ctx || !port) {
        return TLSK_ECONFIG;
    }
    if (!host) {
        host = "localhost";
    }
    if (opts) {
        o = *opts;
    }
    if (!o.servername) {
        o.servername = host;
    }
    o.flags |= TLSK_SOCKET_OWN_FD;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        return TLSK_ECONFIG;
    }
    rc = -ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (rc != 0) {
        return rc;
    }
    rc = socket_new(out, ctx, fd, false, &o);
    if (rc != 0) {
        close(fd);
    }
    return rc;
}

TLSK_PUBLIC int tlsk_socket_handshake(struct tlsk_socket *s)
{
    int r, rc;

    if (!s) {
        return TLSK_ECONFIG;
    }
    if (s->state == TLSK__OPEN) {
        return 0;
    }
    if (s->state == TLSK__FAILED) {
        return s->fail_code;
    }
    ERR_clear_error();
    errno = 0;
    r = SSL_do_handshake(s->ssl);
    if (r != 1) {
        rc = tlsk__ossl_error(s, r, TLSK__OP_HANDSHAKE);
        if (rc == -EAGAIN) {
            return rc;
        }
        if (rc == 0) {
            rc = tlsk__set_detail(s, -ECONNRESET, "peer sent close_notify during the handshake");
        }
        if (s->sni_err) {
            rc = s->sni_err;
        }
        return tlsk__fail(s, rc);
    }
    rc = tlsk__offload(s);
    if (rc != 0) {
        return tlsk__fail(s, rc);
    }
    s->state = TLSK__OPEN;
    s->detail[0] = '\0';
    return 0;
}

static int ensure_open(struct tlsk_socket *s)
{
    if (!s) {
        return TLSK_ECONFIG;
    }
    if (s->state == TLSK__OPEN) {
        return 0;
    }
    return tlsk_socket_handshake(s);
}

/* Kernel RX: recvmsg with a record-type control buffer (docs/KERNEL.md §3.2). */
static ssize_t kernel_read(struct tlsk_socket *s, void *buf, size_t len)
{
    for (;;) {
        char cbuf[CMSG_SPACE(sizeof(unsigned char))];
        struct iovec iov;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        struct cmsghdr *cm;
        int type = TLSK_REC_APPDATA;
        bool in_ctrl = s->ctrl_len > 0;
        ssize_t n;

        if (in_ctrl) {
            /* Finish a control record that arrived in pieces. */
            iov.iov_base = s->ctrl + s->ctrl_len;
            iov.iov_len = TLSK_MAX_PLAINTEXT + 256 - s->ctrl_len;
        } else {
            iov.iov_base = buf;
            iov.iov_len = len;
        }
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof cbuf;
        n = recvmsg(s->fd, &msg, 0);
        if (n < 0) {
            int e = errno;
            if (e == EINTR) {
                continue;
            }
            if (e == EAGAIN || e == EWOULDBLOCK) {
                s->want = POLLIN;
                return -EAGAIN;
            }
            /* The kernel sends no alert of its own: send the one OpenSSL would have sent
             * for the same record (docs/KERNEL.md §8). */
            if (e == EBADMSG) {
                tlsk__bridge_fatal_alert(s, SSL_AD_BAD_RECORD_MAC);
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_EBADRECORD,
                                                "kernel: record failed authentication (EBADMSG)"));
            }
            if (e == EMSGSIZE || e == EINVAL) {
                tlsk__bridge_fatal_alert(s, e == EMSGSIZE ? SSL_AD_RECORD_OVERFLOW
                                            : SSL_version(s->ssl) == TLS1_3_VERSION
                                                ? SSL_AD_DECODE_ERROR
                                                : SSL_AD_PROTOCOL_VERSION);
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_EPROTO, "kernel: malformed record (%s)",
                                                strerror(e)));
            }
            if (e == EKEYEXPIRED) {
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_EKEYUPDATE, "kernel: receive key expired"));
            }
            return tlsk__fail(s, tlsk__set_detail(s, -e, "recvmsg: %s", strerror(e)));
        }
        if (n == 0) {
            if (in_ctrl) {
                return tlsk__fail(s, tlsk__set_detail(s, TLSK_ETRUNCATED, "EOF inside a control record"));
            }
            if (s->got_close_notify) {
                return 0;
            }
            return tlsk__fail(s, tlsk__set_detail(s, TLSK_ETRUNCATED,
                                            "peer closed TCP without close_notify"));
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == TLSK_SOL_TLS && cm->cmsg_type == TLSK_TLS_GET_RECORD_TYPE) {
                type = *CMSG_DATA(cm);
            }
        }
        if (type == TLSK_REC_APPDATA && !in_ctrl) {
            uint64_t limit = tlsk__key_limit(s);
            /* One read may return many records: the kernel's own sequence number counts
             * them.  Asked for every read when the limit is near enough to matter. */
            if (limit != UINT64_MAX && (limit < ((uint64_t)1 << 20) || ++s->rx_reads % 64 == 0)) {
                uint64_t seq;
                if (tlsk__kernel_seq(s->fd, false, &seq) == 0) {
                    s->krx_recs = seq - s->rx_seq0;
                }
            }
            if (s->krx_recs >= limit) {
                int rc = tlsk__kernel_rx_limit(s);
                if (rc != 0) {
                    return tlsk__fail(s, rc);
                }
            }
            /* Plaintext only: the records' overhead is added from the kernel's sequence
             * number by tlsk_socket_bytes_read(), since one read may span many records. */
            s->bytes_read += (size_t)n;
            return n;
        }
        if (!in_ctrl) {
            /* A control record landed in the caller's buffer: move it to ours. */
            if (!s->ctrl) {
                s->ctrl = malloc(TLSK_MAX_PLAINTEXT + 256);
                if (!s->ctrl) {
                    return tlsk__fail(s, TLSK_ENOMEM);
                }
            }
            memcpy(s->ctrl, buf, (size_t)n);
            s->ctrl_type = type;
            s->ctrl_len = (size_t)n;
        } else {
            s->ctrl_len += (size_t)n;
        }
        if (!(msg.msg_flags & MSG_EOR) && s->ctrl_len < TLSK_MAX_PLAINTEXT + 256) {
            continue;
        }
        s->bytes_read += s->ctrl_len;
        {
            int rc = tlsk__bridge_control_in(s, s->ctrl_type, s->ctrl, s->ctrl_len);
            OPENSSL_cleanse(s->ctrl, s->ctrl_len);
            s->ctrl_len = 0;
            if (rc == 2) {
                /* A renegotiation attempt: a client's count against the limit. */
                rc = s->is_server ? tlsk__reneg_attempt(s) : 0;
                if (rc == 0) {
                    rc = tlsk__bridge_refuse_renegotiation(s);
                }
            }
            if (rc < 0) {
                return tlsk__fail(s, rc);
            }
            if (rc == 1) {
                return 0;
            }
        }
    }
}

TLSK_PUBLIC ssize_t tlsk_socket_read(struct tlsk_socket *s, void *buf, size_t len)
{
    size_t got = 0;
    int r, rc;

    if ((rc = ensure_open(s)) != 0) {
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
    tlsk__user_rx_limit(s);
    ERR_clear_error();
    errno = 0;
    r = SSL_read_ex(s->ssl, buf, len, &got);
    if (s->reneg_err) {
        return tlsk__fail(s, s->reneg_err);
    }
    if (r == 1) {
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
static ssize_t kernel_sent(struct tlsk_socket *s, ssize_t n, const char *what)
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

static ssize_t kernel_write_iov(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t n;

    do {
        n = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return kernel_sent(s, n, "send");
}

/* Userspace write of one buffer: OpenSSL in partial-write mode returns after each record. */
static ssize_t user_write(struct tlsk_socket *s, const unsigned char *buf, size_t len)
{
    size_t done = 0;

    tlsk__user_tx_limit(s);

    while (done < len) {
        size_t w = 0;
        int r;

        ERR_clear_error();
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
        if (r == -EAGAIN || r == -EPIPE) {
            return r;
        }
        return tlsk__fail(s, r == 0 ? TLSK_ECLOSED : r);
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

static int check_writable(struct tlsk_socket *s)
{
    int rc = ensure_open(s);
    if (rc != 0) {
        return rc;
    }
    if (s->sent_close_notify) {
        return TLSK_ECLOSED;
    }
    return tx_unparked(s);
}

TLSK_PUBLIC ssize_t tlsk_socket_write(struct tlsk_socket *s, const void *buf, size_t len)
{
    int rc = check_writable(s);

    if (rc != 0) {
        return rc;
    }
    if (len == 0) {
        return 0;
    }
    if (s->tx_kernel) {
        ssize_t budget = tlsk__kernel_budget(s, len);
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        if (budget < 0) {
            return budget;
        }
        iov.iov_len = (size_t)budget < len ? (size_t)budget : len;
        return kernel_write_iov(s, &iov, 1);
    }
    return user_write(s, buf, len);
}

TLSK_PUBLIC ssize_t tlsk_socket_writev(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    unsigned char small[TLSK_MAX_PLAINTEXT];
    size_t total = 0, off = 0;
    ssize_t done = 0;
    int rc = check_writable(s);

    if (rc != 0) {
        return rc;
    }
    if (iovcnt < 0 || (iovcnt > 0 && !iov)) {
        return -EINVAL;
    }
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    if (s->tx_kernel) {
        ssize_t budget = tlsk__kernel_budget(s, total);
        if (budget < 0) {
            return budget;
        }
        if ((size_t)budget < total) {
            /* Rare: only near the key limit.  Send the first piece alone. */
            struct iovec one = { iov[0].iov_base,
                                 iov[0].iov_len < (size_t)budget ? iov[0].iov_len : (size_t)budget };
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
        return total ? user_write(s, small, total) : 0;
    }
    for (int i = 0; i < iovcnt; i++) {
        ssize_t n;
        if (iov[i].iov_len == 0) {
            continue;
        }
        n = user_write(s, iov[i].iov_base, iov[i].iov_len);
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

static ssize_t kernel_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    ssize_t n;

    do {
        n = sendfile(s->fd, file_fd, offset, count);
    } while (n < 0 && errno == EINTR);
    return kernel_sent(s, n, "sendfile");
}

/* Userspace sendfile from a mapping of the page cache: OpenSSL encrypts straight from the
 * file's pages, saving the copy into a buffer.  Returns bytes, 0 at EOF, -EAGAIN, an error,
 * or -ENODEV when the file cannot be mapped. */
static ssize_t mapped_sendfile(struct tlsk_socket *s, int file_fd, off_t pos, size_t count)
{
    static long page;
    struct stat st;
    size_t chunk, delta;
    off_t base;
    void *m;
    ssize_t n;

    if (!page) {
        page = sysconf(_SC_PAGESIZE);
    }
    if (fstat(file_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return -ENODEV;
    }
    if (pos >= st.st_size) {
        return 0;
    }
    if (s->sf_pending > 0 && s->sf_pending_off == pos) {
        chunk = s->sf_pending; /* OpenSSL wants the same bytes again */
    } else {
        chunk = count < SF_MAP_SIZE ? count : SF_MAP_SIZE;
    }
    if ((off_t)chunk > st.st_size - pos) {
        chunk = (size_t)(st.st_size - pos);
    }
    base = pos & ~(off_t)(page - 1);
    delta = (size_t)(pos - base);
    m = mmap(NULL, chunk + delta, PROT_READ, MAP_SHARED | MAP_POPULATE, file_fd, base);
    if (m == MAP_FAILED) {
        return -ENODEV;
    }
    s->sf_pending = 0;
    n = user_write(s, (const unsigned char *)m + delta, chunk);
    munmap(m, chunk + delta);
    if (n == -EAGAIN) {
        s->sf_pending = chunk;
        s->sf_pending_off = pos;
    } else if (n > 0 && (size_t)n < chunk) {
        s->sf_pending = chunk - (size_t)n;
        s->sf_pending_off = pos + n;
    }
    return n;
}

/* Userspace sendfile: read into a reused buffer, write full-size records.  When OpenSSL
 * stops with a record half-sent, the bytes it holds stay in sf_buf: OpenSSL requires the
 * retry to present the same data. */
static ssize_t user_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    off_t pos;
    size_t chunk;
    ssize_t n;

    if (offset) {
        pos = *offset;
    } else if ((pos = lseek(file_fd, 0, SEEK_CUR)) < 0) {
        return -errno;
    }
    if (!s->sf_buf) {
        s->sf_buf = malloc(SF_BUF_SIZE);
        if (!s->sf_buf) {
            return TLSK_ENOMEM;
        }
    }
    if (s->flags & TLSK_SOCKET_SENDFILE_MMAP) {
        n = mapped_sendfile(s, file_fd, pos, count);
        if (n != -ENODEV) {
            if (n > 0) {
                if (offset) {
                    *offset = pos + n;
                } else if (lseek(file_fd, pos + n, SEEK_SET) < 0) {
                    return -errno;
                }
            }
            return n;
        }
        /* Not mappable (a pipe, procfs...): the buffered path below. */
    }
    if (s->sf_pending > 0 && s->sf_pending_off == pos) {
        chunk = s->sf_pending;
    } else {
        chunk = count < SF_BUF_SIZE ? count : SF_BUF_SIZE;
        do {
            n = pread(file_fd, s->sf_buf, chunk, pos);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            return 0;
        }
        chunk = (size_t)n;
    }
    s->sf_pending = 0;
    n = user_write(s, s->sf_buf, chunk);
    if (n == -EAGAIN) {
        s->sf_pending = chunk;
        s->sf_pending_off = pos;
        return n;
    }
    if (n < 0) {
        return n;
    }
    if ((size_t)n < chunk) {
        /* OpenSSL may hold part of the next record: keep the rest where it is. */
        memmove(s->sf_buf, s->sf_buf + n, chunk - (size_t)n);
        s->sf_pending = chunk - (size_t)n;
        s->sf_pending_off = pos + n;
    }
    if (offset) {
        *offset = pos + n;
    } else if (lseek(file_fd, pos + n, SEEK_SET) < 0) {
        return -errno;
    }
    return n;
}

TLSK_PUBLIC ssize_t tlsk_socket_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset,
                                         size_t count)
{
    int rc = check_writable(s);

    if (rc != 0) {
        return rc;
    }
    if (count == 0) {
        return 0;
    }
    if (s->tx_kernel) {
        ssize_t budget = tlsk__kernel_budget(s, count);
        if (budget < 0) {
            return budget;
        }
        return kernel_sendfile(s, file_fd, offset, (size_t)budget < count ? (size_t)budget : count);
    }
    return user_sendfile(s, file_fd, offset, count);
}

TLSK_PUBLIC int tlsk_socket_shutdown(struct tlsk_socket *s)
{
    static const unsigned char close_notify[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
    int rc = ensure_open(s);

    if (rc != 0) {
        return rc;
    }
    if (s->sent_close_notify) {
        return 0;
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
        SSL_set_shutdown(s->ssl, SSL_get_shutdown(s->ssl) | SSL_SENT_SHUTDOWN);
    } else {
        int r;
        ERR_clear_error();
        errno = 0;
        r = SSL_shutdown(s->ssl);
        if (r < 0) {
            rc = tlsk__ossl_error(s, r, TLSK__OP_WRITE);
            return rc == 0 ? 0 : rc;
        }
    }
    s->sent_close_notify = true;
    return 0;
}

TLSK_PUBLIC int tlsk_socket_events(const struct tlsk_socket *s)
{
    return s ? s->want | (s->pend_len ? POLLOUT : 0) : 0;
}

TLSK_PUBLIC void tlsk_socket_free(struct tlsk_socket *s)
{
    if (!s) {
        return;
    }
    if (s->ev) {
        /* An evented socket belongs to its loop: released after its close callback. */
        tlsk_socket_close(s);
        return;
    }
    if (s->ssl) {
        /* Freed without shutdown flags OpenSSL marks the session not resumable
         * (docs/OPENSSL.md §6); after a clean connection it must stay resumable. */
        if (s->state == TLSK__OPEN) {
            SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        }
        SSL_free(s->ssl);
    }
    BIO_free(s->sock_bio);
    if (s->pend) {
        OPENSSL_cleanse(s->pend, s->pend_len);
        free(s->pend);
    }
    if (s->flags & TLSK_SOCKET_OWN_FD) {
        close(s->fd);
    }
    OPENSSL_cleanse(&s->client_secret, sizeof s->client_secret);
    OPENSSL_cleanse(&s->server_secret, sizeof s->server_secret);
    free(s->ctrl);
    free(s->sf_buf);
    free(s->servername);
    free(s->held);
    if (s->resume_data) {
        OPENSSL_cleanse(s->resume_data, s->resume_data_len);
        free(s->resume_data);
    }
    OPENSSL_cleanse(&s->otx_secret, sizeof s->otx_secret);
    OPENSSL_cleanse(&s->orx_secret, sizeof s->orx_secret);
    tlsk_context_free(s->sni_ctx);
    tlsk_context_free(s->sni_answer);
    tlsk_context_free(s->ctx);
    free(s);
}

TLSK_PUBLIC int tlsk_socket_fd(const struct tlsk_socket *s)
{
    return s ? s->fd : -1;
}

TLSK_PUBLIC void *tlsk_socket_get_data(const struct tlsk_socket *s)
{
    return s ? s->data : NULL;
}

TLSK_PUBLIC void tlsk_socket_set_data(struct tlsk_socket *s, void *data)
{
    if (s) {
        s->data = data;
    }
}

TLSK_PUBLIC struct tlsk_offload tlsk_socket_offload(const struct tlsk_socket *s)
{
    struct tlsk_offload o = { { 0 }, { 0 } };
    return s ? s->off : o;
}

TLSK_PUBLIC const char *tlsk_socket_error_detail(const struct tlsk_socket *s)
{
    return s ? s->detail : "";
}

TLSK_PUBLIC const char *tlsk_socket_version(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    return SSL_get_version(s->ssl);
}

TLSK_PUBLIC const char *tlsk_socket_cipher(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    return SSL_get_cipher_name(s->ssl);
}

TLSK_PUBLIC int tlsk_socket_version_number(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return 0;
    }
    return SSL_version(s->ssl);
}

TLSK_PUBLIC int tlsk_socket_session_reused(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return 0;
    }
    return SSL_session_reused(s->ssl);
}

TLSK_PUBLIC ssize_t tlsk_socket_session(const struct tlsk_socket *s, void *buf, size_t len)
{
    SSL_SESSION *sess;
    unsigned char *p;
    int need;

    if (!s) {
        return TLSK_ECONFIG;
    }
    sess = SSL_get_session(s->ssl);
    if (!sess || !SSL_SESSION_is_resumable(sess)) {
        return -ENOENT;
    }
    need = i2d_SSL_SESSION(sess, NULL);
    if (need <= 0) {
        return TLSK_EINTERNAL;
    }
    if (!buf && len == 0) {
        return need;
    }
    if (!buf || len < (size_t)need) {
        return -ENOBUFS;
    }
    p = buf;
    return i2d_SSL_SESSION(sess, &p);
}

TLSK_PUBLIC uint64_t tlsk_socket_bytes_written(const struct tlsk_socket *s)
{
    return s ? s->bytes_written : 0;
}

TLSK_PUBLIC uint64_t tlsk_socket_bytes_read(const struct tlsk_socket *s)
{
    uint64_t seq;

    if (!s) {
        return 0;
    }
    if (s->rx_kernel && s->fd >= 0 && tlsk__kernel_seq(s->fd, false, &seq) == 0) {
        return s->bytes_read + (s->rx_recs_done + seq - s->rx_seq0) * tlsk__record_overhead(s);
    }
    return s->bytes_read;
}

/* ---- SNI ------------------------------------------------------------------------------ */

/* The server name from the ClientHello extension, or NULL. */
static char *hello_servername(SSL *ssl)
{
    const unsigned char *p;
    size_t len, n;
    char *name;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5) {
        return NULL;
    }
    /* server_name_list length, then name_type 0 (host_name) and its length. */
    if ((size_t)(p[0] << 8 | p[1]) != len - 2 || p[2] != TLSEXT_NAMETYPE_host_name) {
        return NULL;
    }
    n = (size_t)(p[3] << 8 | p[4]);
    if (n == 0 || n > len - 5 || memchr(p + 5, 0, n)) {
        return NULL;
    }
    name = malloc(n + 1);
    if (name) {
        memcpy(name, p + 5, n);
        name[n] = '\0';
    }
    return name;
}

static int sni_apply(struct tlsk_socket *s, struct tlsk_context *c, int *al)
{
    if (!c || c == s->ctx) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (!c->has_cert) {
        s->sni_err = tlsk__set_detail(s, TLSK_EINVALID_SNI_CONTEXT,
                                      "SNI chose a context without a certificate");
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (SSL_set_SSL_CTX(s->ssl, c->ssl_ctx) != c->ssl_ctx) {
        s->sni_err = tlsk__set_detail(s, TLSK_EINTERNAL, "SSL_set_SSL_CTX failed");
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    /* Client certificates are requested and checked as the chosen context says (SC-4). */
    tlsk__apply_verify(s->ssl, c, true);
    tlsk_context_free(s->sni_ctx);
    s->sni_ctx = tlsk_context_ref(c);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static int sni_select(struct tlsk_socket *s, int *al)
{
    struct tlsk_context *c = NULL;
    int rc;

    if (!s->is_server) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->sni_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (s->sni_state == 2) {
        s->sni_state = 0;
        c = s->sni_answer;
        s->sni_answer = NULL;
        if (s->sni_err) {
            *al = SSL_AD_INTERNAL_ERROR;
            tlsk_context_free(c);
            return SSL_CLIENT_HELLO_ERROR;
        }
        rc = sni_apply(s, c, al);
        tlsk_context_free(c);
        return rc;
    }
    free(s->servername);
    s->servername = hello_servername(s->ssl);
    if (!s->servername || (!s->sni_cb && !s->sni)) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->sni_cb) {
        rc = s->sni_cb(s, s->servername, s->sni_data, &c);
        if (rc == TLSK_SNI_PENDING) {
            s->sni_state = 1;
            return SSL_CLIENT_HELLO_RETRY;
        }
        if (rc < 0) {
            s->sni_err = tlsk__set_detail(s, rc, "SNI callback failed: %s", tlsk_strerror(rc));
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        return sni_apply(s, c, al);
    }
    return sni_apply(s, tlsk_sni_lookup(s->sni, s->servername), al);
}

TLSK_PUBLIC int tlsk_socket_sni_answer(struct tlsk_socket *s, struct tlsk_context *ctx, int err)
{
    if (!s || s->sni_state != 1) {
        return TLSK_ESTATE;
    }
    s->sni_state = 2;
    s->sni_answer = tlsk_context_ref(ctx);
    if (err < 0) {
        s->sni_err = tlsk__set_detail(s, err, "SNI callback failed: %s", tlsk_strerror(err));
    }
    if (s->ev) {
        tlsk__handle_timer(&s->ev->h, 0); /* resume the handshake from the loop */
    }
    return 0;
}

/* ---- connection information ----------------------------------------------------------- */

static const struct {
    int code;
    const char *name;
} verify_names[] = {
    { X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "UNABLE_TO_GET_ISSUER_CERT" },
    { X509_V_ERR_UNABLE_TO_GET_CRL, "UNABLE_TO_GET_CRL" },
    { X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE, "UNABLE_TO_DECRYPT_CERT_SIGNATURE" },
    { X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE, "UNABLE_TO_DECRYPT_CRL_SIGNATURE" },
    { X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY, "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY" },
    { X509_V_ERR_CERT_SIGNATURE_FAILURE, "CERT_SIGNATURE_FAILURE" },
    { X509_V_ERR_CRL_SIGNATURE_FAILURE, "CRL_SIGNATURE_FAILURE" },
    { X509_V_ERR_CERT_NOT_YET_VALID, "CERT_NOT_YET_VALID" },
    { X509_V_ERR_CERT_HAS_EXPIRED, "CERT_HAS_EXPIRED" },
    { X509_V_ERR_CRL_NOT_YET_VALID, "CRL_NOT_YET_VALID" },
    { X509_V_ERR_CRL_HAS_EXPIRED, "CRL_HAS_EXPIRED" },
    { X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "DEPTH_ZERO_SELF_SIGNED_CERT" },
    { X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "SELF_SIGNED_CERT_IN_CHAIN" },
    { X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" },
    { X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, "UNABLE_TO_VERIFY_LEAF_SIGNATURE" },
    { X509_V_ERR_CERT_CHAIN_TOO_LONG, "CERT_CHAIN_TOO_LONG" },
    { X509_V_ERR_CERT_REVOKED, "CERT_REVOKED" },
    { X509_V_ERR_INVALID_CA, "INVALID_CA" },
    { X509_V_ERR_PATH_LENGTH_EXCEEDED, "PATH_LENGTH_EXCEEDED" },
    { X509_V_ERR_INVALID_PURPOSE, "INVALID_PURPOSE" },
    { X509_V_ERR_CERT_UNTRUSTED, "CERT_UNTRUSTED" },
    { X509_V_ERR_CERT_REJECTED, "CERT_REJECTED" },
    { X509_V_ERR_HOSTNAME_MISMATCH, "HOSTNAME_MISMATCH" },
    { X509_V_ERR_EMAIL_MISMATCH, "EMAIL_MISMATCH" },
    { X509_V_ERR_IP_ADDRESS_MISMATCH, "IP_ADDRESS_MISMATCH" },
    { X509_V_ERR_INVALID_CALL, "INVALID_CALL" },
    { X509_V_ERR_STORE_LOOKUP, "STORE_LOOKUP" },
    { X509_V_ERR_CA_KEY_TOO_SMALL, "CA_KEY_TOO_SMALL" },
    { X509_V_ERR_EE_KEY_TOO_SMALL, "EE_KEY_TOO_SMALL" },
    { X509_V_ERR_CA_MD_TOO_WEAK, "CA_MD_TOO_WEAK" },
};

TLSK_PUBLIC int tlsk_socket_authorized(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN || !SSL_get0_peer_certificate(s->ssl)) {
        return 0;
    }
    return SSL_get_verify_result(s->ssl) == X509_V_OK;
}

TLSK_PUBLIC const char *tlsk_socket_authorization_error(const struct tlsk_socket *s)
{
    long v;

    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    if (!SSL_get0_peer_certificate(s->ssl)) {
        /* A server that asked for no certificate has nothing to report (row 1 of the
         * verify table); one that asked and got none says so (A4). */
        if (s->is_server && !(SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER)) {
            return NULL;
        }
        return "NO_PEER_CERTIFICATE";
    }
    v = SSL_get_verify_result(s->ssl);
    if (v == X509_V_OK) {
        return NULL;
    }
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(verify_names); i++) {
        if (verify_names[i].code == v) {
            return verify_names[i].name;
        }
    }
    return "UNSPECIFIED";
}

TLSK_PUBLIC const char *tlsk_socket_servername(const struct tlsk_socket *s)
{
    return s ? s->servername : NULL;
}

TLSK_PUBLIC const char *tlsk_socket_alpn_protocol(const struct tlsk_socket *s)
{
    static _Thread_local char buf[256];
    const unsigned char *p = NULL;
    unsigned n = 0;

    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    SSL_get0_alpn_selected(s->ssl, &p, &n);
    if (!p || n == 0) {
        return NULL;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

TLSK_PUBLIC const char *tlsk_socket_npn_protocol(const struct tlsk_socket *s)
{
    static _Thread_local char buf[256];
    const unsigned char *p = NULL;
    unsigned n = 0;

    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    SSL_get0_next_proto_negotiated(s->ssl, &p, &n);
    if (!p || n == 0) {
        return NULL;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

/* ---- handing the descriptor over ------------------------------------------------------ */

TLSK_PUBLIC int tlsk_socket_detach(struct tlsk_socket *s)
{
    int fd;

    if (!s || s->state != TLSK__OPEN || !s->tx_kernel || !s->rx_kernel) {
        return TLSK_ESTATE;
    }
    fd = s->fd;
    s->flags &= ~(unsigned)TLSK_SOCKET_OWN_FD;
    tlsk_socket_free(s);
    return fd;
}

TLSK_PUBLIC ssize_t tlsk_fd_read(int fd, void *buf, size_t len)
{
    for (;;) {
        char cbuf[CMSG_SPACE(sizeof(unsigned char))];
        unsigned char ctrl[TLSK_MAX_PLAINTEXT + 256];
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                              .msg_controllen = sizeof cbuf };
        struct cmsghdr *cm;
        int type = TLSK_REC_APPDATA;
        size_t have;
        ssize_t n;

        if (len == 0) {
            return -EINVAL;
        }
        n = recvmsg(fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == TLSK_SOL_TLS && cm->cmsg_type == TLSK_TLS_GET_RECORD_TYPE) {
                type = *CMSG_DATA(cm);
            }
        }
        if (n == 0 || type == TLSK_REC_APPDATA) {
            return n;
        }
        /* A control record: gather it whole (it may have been cut by a small buffer). */
        have = (size_t)n < sizeof ctrl ? (size_t)n : sizeof ctrl;
        memcpy(ctrl, buf, have);
        while (!(msg.msg_flags & MSG_EOR) && have < sizeof ctrl) {
            iov.iov_base = ctrl + have;
            iov.iov_len = sizeof ctrl - have;
            msg.msg_control = cbuf;
            msg.msg_controllen = sizeof cbuf;
            n = recvmsg(fd, &msg, 0);
            if (n <= 0) {
                return n < 0 ? -errno : TLSK_ETRUNCATED;
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

/* ---- a TLS pair over caller-supplied bytes -------------------------------------------- */

TLSK_PUBLIC int tlsk_pair_new(struct tlsk_socket **out, struct tlsk_context *ctx, int is_server,
                              const struct tlsk_socket_options *opts)
{
    struct tlsk_socket_options o = { 0 };

    if (opts) {
        o = *opts;
    }
    o.flags &= ~(unsigned)TLSK_SOCKET_OWN_FD;
    return socket_new(out, ctx, PAIR_FD, is_server != 0, &o);
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

/* ---- sessions, renegotiation, key updates --------------------------------------------- */

static bool hello_offers_tls13(SSL *ssl)
{
    const unsigned char *p;
    size_t len;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) || len < 1 ||
        (size_t)p[0] + 1 > len) {
        return false;
    }
    for (size_t i = 1; i + 1 < (size_t)p[0] + 1; i += 2) {
        if (p[i] == 3 && p[i + 1] == 4) {
            return true;
        }
    }
    return false;
}

/* The id the external store should look up: a TLS 1.2 session id, or the first identity of
 * a TLS 1.3 pre_shared_key (stateful tickets).  0 when there is none (D6). */
static size_t hello_resume_id(struct tlsk_socket *s, unsigned char *out, size_t cap)
{
    const unsigned char *p;
    size_t len;
    int max = SSL_get_max_proto_version(s->ssl);

    if (hello_offers_tls13(s->ssl) && (max == 0 || max >= TLS1_3_VERSION)) {
        size_t n;
        if (!(s->ctx->flags & TLSK_STATEFUL_TICKETS) ||
            !SSL_client_hello_get0_ext(s->ssl, TLSEXT_TYPE_psk, &p, &len) || len < 4) {
            return 0;
        }
        n = (size_t)(p[2] << 8 | p[3]);
        if (n == 0 || n + 4 > len || n > cap) {
            return 0;
        }
        memcpy(out, p + 4, n);
        return n;
    }
    if (SSL_client_hello_get0_ext(s->ssl, TLSEXT_TYPE_session_ticket, &p, &len) && len > 0) {
        /* A TLS 1.2 ticket: the session id beside it is the client's random marker, and
         * ticket sessions fire neither callback (SS-7). */
        return 0;
    }
    len = SSL_client_hello_get0_session_id(s->ssl, &p);
    if (len == 0 || len > cap) {
        return 0;
    }
    memcpy(out, p, len);
    return len;
}

int tlsk__client_hello(struct tlsk_socket *s, int *al)
{
    const struct tlsk_context *c;
    int rc = sni_select(s, al);

    if (rc != SSL_CLIENT_HELLO_SUCCESS || !s->is_server) {
        return rc;
    }
    c = s->sni_ctx ? s->sni_ctx : s->ctx;
    if (!c->has_store) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->resume_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (s->resume_state == 2) {
        if (s->resume_err) {
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    s->resume_id_len = hello_resume_id(s, s->resume_id, sizeof s->resume_id);
    if (s->resume_id_len == 0) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    s->resume_state = 1;
    rc = c->store.resume_session(s, s->resume_id, s->resume_id_len, c->store.ud);
    if (rc == TLSK_SESSION_PENDING && s->resume_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (rc < 0) {
        s->resume_state = 2;
        s->resume_err = tlsk__set_detail(s, TLSK_ESESSION, "session store lookup failed: %s",
                                         tlsk_strerror(rc));
        s->sni_err = s->resume_err;
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (s->resume_state == 1) {
        s->resume_state = 2; /* answered "not found" by returning 0 without an answer */
    }
    if (s->resume_err) {
        /* Answered with an error from inside the callback. */
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

TLSK_PUBLIC int tlsk_socket_resume_answer(struct tlsk_socket *s, const void *data, size_t len,
                                          int err)
{
    if (!s || s->resume_state != 1) {
        return TLSK_ESTATE;
    }
    s->resume_state = 2;
    if (err < 0) {
        s->resume_err = tlsk__set_detail(s, TLSK_ESESSION, "session store lookup failed: %s",
                                         tlsk_strerror(err));
        s->sni_err = s->resume_err;
    } else if (data && len) {
        s->resume_data = malloc(len);
        if (!s->resume_data) {
            return TLSK_ENOMEM;
        }
        memcpy(s->resume_data, data, len);
        s->resume_data_len = len;
    }
    if (s->ev) {
        tlsk__handle_timer(&s->ev->h, 0);
    }
    return 0;
}

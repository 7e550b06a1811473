/*
 * socket.c - one TLS connection's life: creation (server, client, connect), the handshake
 * driver and the callbacks that count records for the offload, free.
 *
 * What happens after the handshake lives beside it: io.c (read, write, shutdown), sendfile.c,
 * rekey.c (key updates, limits, renegotiation), hello.c (what is decided at ClientHello),
 * peer.c (connection information), pair.c (a TLS pair over memory).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "kconst.h"

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
        /* After offload the bridge counts what crosses the wire (it moves OpenSSL's records
         * through memory, not the socket). */
        if (write_p) {
            s->bytes_written += s->tx_kernel ? 0 : rec;
            if (s->own_finished) {
                s->tx_after_fin++;
            }
            if (s->own_ccs) {
                s->tx_after_ccs++;
            }
        } else {
            s->bytes_read += s->rx_kernel ? 0 : rec;
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

/* The first application traffic secrets (TLS 1.3), for the install (docs/OPENSSL.md §2.1);
 * installed on every context (context.c). */
void tlsk__keylog_cb(const SSL *ssl, const char *line)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);
    struct tlsk__secret *dst = NULL;
    const char *p;
    size_t n = 0;

    if (!s) {
        return;
    }
    /* Only the first application secrets: later ones (after KeyUpdate) are derived by the
     * bridge itself, which must know exactly which key OpenSSL used for each record. */
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        dst = s->is_server ? &s->orx_secret : &s->otx_secret;
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        dst = s->is_server ? &s->otx_secret : &s->orx_secret;
    } else {
        return;
    }
    /* "<LABEL> <client_random hex> <secret hex>" */
    p = strchr(line, ' ');
    p = p ? strchr(p + 1, ' ') : NULL;
    if (!p) {
        return;
    }
    p++;
    while (n < sizeof dst->b) {
        int hi = OPENSSL_hexchar2int((unsigned char)p[0]), lo;
        if (hi < 0 || (lo = OPENSSL_hexchar2int((unsigned char)p[1])) < 0) {
            break;
        }
        dst->b[n++] = (unsigned char)(hi << 4 | lo);
        p += 2;
    }
    dst->len = n;
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

/* A client's server name (SNI and the name the certificate must carry) and identity check:
 * 0, or -1 for a name that cannot be used. */
static int client_setup(struct tlsk_socket *s, const struct tlsk_socket_options *o)
{
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
            return -1;
        }
    }
    if (o->check_identity) {
        s->check_identity = o->check_identity;
        s->check_identity_data = o->check_identity_data;
        SSL_set_verify(s->ssl, SSL_VERIFY_PEER, identity_verify_cb);
    }
    return 0;
}

/* A client's session to resume (tlsk_socket_session() bytes): 0, or -1. */
static int set_session(struct tlsk_socket *s, const struct tlsk_socket_options *o)
{
    const unsigned char *p = o->session;
    SSL_SESSION *sess;
    int ok;

    if (s->is_server || o->session_len == 0 || o->session_len > LONG_MAX ||
        !(sess = d2i_SSL_SESSION(NULL, &p, (long)o->session_len))) {
        return -1;
    }
    ok = SSL_set_session(s->ssl, sess) == 1;
    SSL_SESSION_free(sess);
    return ok ? 0 : -1;
}

/* OpenSSL's BIOs on b, the socket BIO (two references on it are the caller's: one for
 * sock_bio, one for OpenSSL).  0, or TLSK_ENOMEM with nothing given to OpenSSL. */
static int attach_bios(struct tlsk_socket *s, BIO *b)
{
    BIO *other;

    if (s->is_pair) {
        /* Two memory BIOs: sock_bio is what arrives (fed), the write BIO what leaves. */
        if (!(other = BIO_new(BIO_s_mem()))) {
            return TLSK_ENOMEM;
        }
        BIO_set_mem_eof_return(b, -1);
        SSL_set_bio(s->ssl, b, other);
    } else if (s->is_server && (s->flags & TLSK_SOCKET_LEAN_IDLE) &&
               (s->ctx->flags & TLSK_LEAN_USERSPACE) && !tlsk_kernel_probe()->ulp) {
        /* soft.c takes the connection only at a wait, when OpenSSL holds no byte it read
         * ahead (idle.c): OpenSSL reads ahead as in userspace mode. */
        SSL_set_bio(s->ssl, b, b);
        SSL_set_read_ahead(s->ssl, 1);
    } else if (s->is_server && (s->flags & TLSK_SOCKET_LEAN) &&
               (s->ctx->flags & TLSK_LEAN_USERSPACE) && !tlsk_kernel_probe()->ulp &&
               (other = BIO_new(BIO_f_buffer()))) {
        /* A connection soft.c will likely carry: OpenSSL reads one record at a time (no
         * read-ahead, context.c), from a buffer that takes what has arrived in one read(2),
         * so the handshake costs no more reads than with read-ahead, and whatever the client
         * sent after its Finished is still ours to give soft.c (docs/KERNEL.md §16). */
        BIO_up_ref(b); /* the chain's reference; the write BIO has the one made for OpenSSL */
        BIO_push(other, b);
        SSL_set_bio(s->ssl, other, b);
        s->hs_rbuf = true;
    } else {
        SSL_set_bio(s->ssl, b, b);
    }
    return 0;
}

int tlsk__socket_new(struct tlsk_socket **out, struct tlsk_context *ctx, int fd, bool server,
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
    if (fd != TLSK__PAIR_FD && fd < 0) {
        return -EBADF; /* an fd that is not open: getsockname below */
    }
    if ((unsigned)o->offload > TLSK_OFFLOAD_REQUIRE || (o->flags & ~(unsigned)TLSK__SOCKET_FLAGS)) {
        return TLSK_ECONFIG; /* a context flag here would, say, hand the fd over unasked */
    }
    if (server && !ctx->has_cert && !o->sni && !o->sni_cb) {
        return TLSK_ECONFIG; /* every handshake would fail: no certificate to present */
    }
    if (!server && !o->servername && !(ctx->flags & TLSK_VERIFY_NONE_INSECURE)) {
        /* A chain check without a name check accepts any certificate from a trusted CA. */
        return TLSK_ECONFIG;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        return TLSK_ENOMEM;
    }
    if (fd != TLSK__PAIR_FD) {
        /* The local address, and the check that fd is open in one syscall: a descriptor
         * that is not a socket (ENOTSOCK) is taken, and offload says not_tcp. */
        s->laddr_len = sizeof s->laddr;
        if (getsockname(fd, &s->laddr.sa, &s->laddr_len) != 0) {
            if (errno == EBADF) {
                free(s);
                return -EBADF;
            }
            s->laddr_len = 0;
        }
        if (s->laddr_len > sizeof s->laddr) {
            s->laddr_len = sizeof s->laddr; /* cut (a unix socket's path): the family stays */
        }
    }
    s->ssl = SSL_new(ctx->ssl_ctx);
    b = fd == TLSK__PAIR_FD ? BIO_new(BIO_s_mem()) : BIO_new_socket(fd, BIO_NOCLOSE);
    if (!s->ssl || !b) {
        BIO_free(b);
        SSL_free(s->ssl);
        free(s);
        return TLSK_ENOMEM;
    }
    s->ctx = tlsk_context_ref(ctx);
    s->is_pair = fd == TLSK__PAIR_FD;
    s->fd = s->is_pair ? -1 : fd;
    if (!s->is_pair) {
        s->raddr_len = sizeof s->raddr;
        if (getpeername(fd, &s->raddr.sa, &s->raddr_len) != 0) {
            s->raddr_len = 0;
        }
        if (s->raddr_len > sizeof s->raddr) {
            s->raddr_len = sizeof s->raddr;
        }
    }
    s->flags = o->flags | (o->flags & TLSK_SOCKET_LEAN_IDLE ? TLSK_SOCKET_LEAN : 0);
    s->is_server = server;
    s->policy = o->offload != TLSK_OFFLOAD_DEFAULT ? o->offload : ctx->offload;
    s->want = POLLIN;
    /* Keep our own reference to the socket BIO: OpenSSL's may be swapped for memory BIOs. */
    BIO_up_ref(b);
    s->sock_bio = b;
    if (attach_bios(s, b) != 0) {
        BIO_free(b);
        BIO_free(b);
        SSL_free(s->ssl);
        tlsk_context_free(s->ctx);
        free(s);
        return TLSK_ENOMEM;
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
    }
    if ((!server && client_setup(s, o) != 0) || (o->session && set_session(s, o) != 0)) {
        ERR_clear_error();
        tlsk_socket_free(s);
        return TLSK_ECONFIG;
    }
    *out = s;
    return 0;
}

TLSK_PUBLIC int tlsk_socket_new_server(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                                       const struct tlsk_socket_options *opts)
{
    return tlsk__socket_new(out, ctx, fd, true, opts);
}

TLSK_PUBLIC int tlsk_socket_new_client(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                                       const struct tlsk_socket_options *opts)
{
    return tlsk__socket_new(out, ctx, fd, false, opts);
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
    rc = tlsk__socket_new(out, ctx, fd, false, &o);
    if (rc != 0) {
        close(fd);
    }
    return rc;
}

static void wipe_free(void *p, size_t len)
{
    if (p) {
        OPENSSL_cleanse(p, len);
        free(p);
    }
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
    if ((rc = tlsk__peer_opened(s)) != 0) {
        return tlsk__fail(s, rc);
    }
    /* An external store's lookup is over: what it needed goes now, not with the socket. */
    wipe_free(s->resume_data, s->resume_data_len);
    s->resume_data = NULL;
    s->resume_data_len = 0;
    free(s->resume_id);
    s->resume_id = NULL;
    s->state = TLSK__OPEN;
    s->detail[0] = '\0';
    tlsk__lean_release(s);
    return 0;
}

int tlsk__ensure_open(struct tlsk_socket *s)
{
    if (!s) {
        return TLSK_ECONFIG;
    }
    if (s->state == TLSK__OPEN) {
        return 0;
    }
    return tlsk_socket_handshake(s);
}

TLSK_PUBLIC int tlsk_socket_events(const struct tlsk_socket *s)
{
    return s ? s->want | (s->pend_len || tlsk__txq_busy(s) ? POLLOUT : 0) : 0;
}

TLSK_PUBLIC int tlsk_socket_pending(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return 1; /* a read answers now, or drives the handshake and says what to wait for */
    }
    if (s->held_off < s->held_len || s->got_close_notify || s->pend_len) {
        return 1;
    }
    /* Kernel receive: what arrived is in the socket, and readiness shows it. */
    if (s->soft) {
        return tlsk__soft_pending(s);
    }
    return !s->rx_kernel && s->ssl &&
           (SSL_has_pending(s->ssl) ||
            (s->hs_rbuf && BIO_ctrl_pending(SSL_get_rbio(s->ssl)) > 0));
}

TLSK_PUBLIC void tlsk_socket_free(struct tlsk_socket *s)
{
    if (!s) {
        return;
    }
    if (s->ev) {
        /* An evented socket belongs to its loop: released after its close callback. */
        s->ev->hooks->close(s);
        return;
    }
    if (s->resume_state == 1) {
        /* A session lookup still pending: the store must not answer a freed socket. */
        const struct tlsk_context *c = s->sni_ctx ? s->sni_ctx : s->ctx;
        s->resume_state = 2;
        if (c && c->has_store && c->store.cancel) {
            c->store.cancel(s, c->store.ud);
        }
    }
    if (s->ssl) {
        /* Freed without shutdown flags OpenSSL marks the session not resumable
         * (docs/OPENSSL.md §6); after a clean connection it must stay resumable. */
        if (s->state == TLSK__OPEN) {
            SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        }
        SSL_free(s->ssl);
    }
    tlsk__lean_free(s);
    BIO_free(s->sock_bio);
    tlsk__txq_free(s);
    tlsk__soft_free(s);
    wipe_free(s->pend, s->pend_len);
    if (s->flags & TLSK_SOCKET_OWN_FD) {
        close(s->fd);
    }
    free(s->ctrl);
    free(s->sf_buf);
    free(s->servername);
    free(s->held);
    wipe_free(s->resume_data, s->resume_data_len);
    free(s->resume_id);
    free(s->alpn);
    free(s->npn);
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

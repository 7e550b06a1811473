/*
 * test_reneg.c - tlsk_socket_renegotiate() with tlsk at both ends (docs/NODE.md §1.6 RN-1
 * to RN-3, §1.7 RL-6, §2.2 A1, §4.3):
 *  - RN-1: a userspace TLS 1.2 server (TLSK_ALLOW_RENEGOTIATION, kTLS tier: reason
 *    renegotiation) renegotiates with TLSK_REQUEST_PEER_CERT: a client with agent1 is then
 *    authorized, one without a certificate gets NO_PEER_CERTIFICATE; data flows afterwards;
 *    also with a client renegotiation limit of 0 (RL-6: the server's own are not counted);
 *  - RN-2: TLS 1.3 gives TLSK_ERENEG_UNAVAILABLE and the connection keeps working;
 *  - RN-3: an offloaded TLS 1.2 connection (kTLS tier) gives TLSK_ERENEG_UNAVAILABLE naming
 *    the offload, the connection unharmed; natively the same connection is in userspace and
 *    the renegotiation succeeds (4.3);
 *  - RN-7: on the evented server the loop drives a renegotiation started in a data callback,
 *    the renegotiated callback reports it, and the server's handshake_timeout_ms bounds it
 *    (Node's handshakeTimeout applies to renegotiations): a client that never answers the
 *    HelloRequest gets its connection closed with -ETIMEDOUT (error and clientError,
 *    detail HANDSHAKE_TIMEOUT); one that answers stays open past the deadline; with the
 *    timeout disabled a silent client is not cut.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "echo.h"
#include "harness.h"
#include "pair.h"
#include "tap.h"

/* Server: r[0] authorized before, r[1] renegotiate's result, r[2] authorized after,
 * note = authorization error after, then x and the echo of the client's y. */
static int rn_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    const char *ae;

    e->r[0] = tlsk_socket_authorized(s);
    while ((rc = tlsk_socket_renegotiate(s, TLSK_REQUEST_PEER_CERT)) == -EAGAIN) {
        e->v[0]++;
        if ((rc = tp_wait(s)) != 0) {
            break;
        }
    }
    e->r[1] = rc;
    if (rc != 0) {
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
    }
    e->r[2] = tlsk_socket_authorized(s);
    ae = tlsk_socket_authorization_error(s);
    snprintf(e->note, sizeof e->note, "%s", ae ? ae : "(null)");
    if ((rc = h_write_all(s, "x", 1)) != 0 || (rc = tp_expect_byte(s, 'y')) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

/* Client (non-blocking fd): wait at most 5 s for x; on a timeout shut the TCP connection so
 * that a server stuck in a blocking read comes back. */
static int rn_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    char b;
    int rc;
    for (int waited = 0;;) {
        ssize_t n = tlsk_socket_read(s, &b, 1);
        if (n == -EAGAIN) {
            struct pollfd p = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
            if (waited >= 5000) {
                e->r[0] = -ETIMEDOUT;
                shutdown(e->fd, SHUT_RDWR);
                return -ETIMEDOUT;
            }
            poll(&p, 1, 100);
            waited += 100;
            continue;
        }
        if (n != 1 || b != 'x') {
            return n < 0 ? (int)n : -EPROTO;
        }
        break;
    }
    if ((rc = h_write_all(s, "y", 1)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void rn1(const char *client_cert, int limit, bool server_nonblock)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    char what[160];

    snprintf(what, sizeof what, "RN-1 client %s, client_reneg_limit %d, %s server fd",
             client_cert ? client_cert : "without cert", limit,
             server_nonblock ? "non-blocking" : "blocking");
    sv.ctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, "agent1", 0, limit, limit ? 600 : 0);
    cl.ctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, client_cert, 0, 0, 0);
    if (!TAP_OK(sv.ctx && cl.ctx, "%s: contexts", what)) {
        return;
    }
    sv.body = rn_server_body;
    cl.body = rn_client_body;
    sv.nonblock = server_nonblock;
    cl.nonblock = true;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    if (cl.r[0] == -ETIMEDOUT) {
        tap_diag("  the client waited 5 s for the server's data after the renegotiation");
    }
    TAP_IS(sv.r[0], 0, "%s: not authorized before (no certificate requested)", what);
    tap_diag("  renegotiate returned -EAGAIN %lld times before its result", sv.v[0]);
    if (!TAP_OK(sv.r[1] == 0, "%s: renegotiate completed", what)) {
        tap_diag("  %s: %s", tlsk_err_name(sv.r[1]), sv.detail);
    }
    if (client_cert) {
        TAP_OK(sv.r[2] == 1, "%s: authorized afterwards (%s)", what, sv.note);
    } else {
        TAP_OK(sv.r[2] == 0 && strcmp(sv.note, "NO_PEER_CERTIFICATE") == 0,
               "%s: not authorized afterwards, NO_PEER_CERTIFICATE (%s)", what, sv.note);
    }
    TAP_OK(sv.off.tx.mode == TLSK_MODE_USERSPACE && sv.off.rx.mode == TLSK_MODE_USERSPACE &&
               !sv.kernel_tx && !sv.kernel_rx,
           "%s: server stays in userspace (%s)", what, tlsk_reason_name(sv.off.tx.reason));
    if (h_expect_ktls()) {
        TAP_OK(sv.off.tx.reason == TLSK_REASON_RENEGOTIATION &&
                   sv.off.rx.reason == TLSK_REASON_RENEGOTIATION,
               "%s: reason renegotiation (%s)", what, tlsk_reason_name(sv.off.tx.reason));
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* RN-2 / RN-3: renegotiate must fail at once, the connection unharmed. */
static int un_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    e->r[1] = tlsk_socket_renegotiate(s, TLSK_REQUEST_PEER_CERT);
    while (e->r[1] == -EAGAIN) {
        if ((rc = tp_wait(s)) != 0) {
            return rc;
        }
        e->r[1] = tlsk_socket_renegotiate(s, TLSK_REQUEST_PEER_CERT);
    }
    snprintf(e->note, sizeof e->note, "%s", tlsk_socket_error_detail(s));
    if ((rc = h_write_all(s, "x", 1)) != 0 || (rc = tp_expect_byte(s, 'y')) != 0) {
        return rc;
    }
    if ((rc = h_send_pattern(s, 5, 200000)) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

static int un_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    (void)e;
    if ((rc = tp_expect_byte(s, 'x')) != 0 || (rc = h_write_all(s, "y", 1)) != 0 ||
        (rc = h_recv_pattern(s, 5, 200000)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void rn2(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "RN-2 TLS 1.3";

    sv.ctx = tp_ctx(TLSK_TLS1_3, TLSK_ALLOW_RENEGOTIATION, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.body = un_server_body;
    cl.body = un_client_body;
    tp_conn(&sv, &cl);
    TAP_OK(sv.r[1] == TLSK_ERENEG_UNAVAILABLE, "%s: TLSK_ERENEG_UNAVAILABLE (%s: %s)", what,
           tlsk_err_name(sv.r[1]), sv.note);
    TAP_OK(strstr(sv.note, "TLS 1.3") != NULL, "%s: the detail names TLS 1.3", what);
    tp_conn_ok(&sv, &cl, "RN-2: the connection keeps working (echo, 200 kB, close_notify)");
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

static void rn3(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "RN-3 TLS 1.2 without TLSK_ALLOW_RENEGOTIATION";

    sv.ctx = tp_ctx(TLSK_TLS1_2, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_2, 0, "agent1", 0, 0, 0);
    sv.body = un_server_body;
    cl.body = un_client_body;
    /* Natively the renegotiation runs: non-blocking fds (a blocking server deadlocks, see
     * the RN-1 blocking case). */
    sv.nonblock = cl.nonblock = true;
    tp_conn(&sv, &cl);
    if (h_expect_ktls()) {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_KERNEL && sv.off.rx.mode == TLSK_MODE_KERNEL &&
                   sv.kernel_tx && sv.kernel_rx,
               "%s: offloaded both ways", what);
        TAP_OK(sv.r[1] == TLSK_ERENEG_UNAVAILABLE, "%s: TLSK_ERENEG_UNAVAILABLE (%s)", what,
               tlsk_err_name(sv.r[1]));
        TAP_OK(strstr(sv.note, "offload") != NULL || strstr(sv.note, "kernel") != NULL,
               "%s: the detail names the offload (%s)", what, sv.note);
    } else {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_USERSPACE, "%s: userspace natively (%s)", what,
               tlsk_reason_name(sv.off.tx.reason));
        TAP_OK(sv.r[1] == 0, "%s: userspace: the server's renegotiation succeeds (%s: %s)", what,
               tlsk_err_name(sv.r[1]), sv.note);
    }
    tp_conn_ok(&sv, &cl, "RN-3: the connection keeps working (echo, 200 kB, close_notify)");
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* A client that only writes while the server renegotiates: the server holds at most 64 KiB
 * of its data for later reads, then fails with -ENOBUFS and a detail saying why, instead of
 * buffering without end (296 MiB were seen) or dropping bytes silently. */
static int hold_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;

    while ((rc = tlsk_socket_renegotiate(s, 0)) == -EAGAIN) {
        if ((rc = tp_wait(s)) != 0) {
            break;
        }
    }
    e->r[1] = rc;
    snprintf(e->note, sizeof e->note, "%s", tlsk_socket_error_detail(s));
    /* Reset the connection now (the harness closes the descriptor only after both ends are
     * done): a FIN would not do, since a client blocked on a full window never sends the new
     * data that would draw the RST (seen on 6.1 when the client was 2 MiB ahead). */
    {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        int z = open("/dev/null", O_RDONLY | O_CLOEXEC);
        setsockopt(e->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (z >= 0) {
            dup2(z, e->fd); /* the socket's last reference goes: RST */
            close(z);
        }
    }
    return 0;
}

static int hold_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    static _Thread_local unsigned char buf[16384];
    long long sent = 0;

    memset(buf, 'z', sizeof buf);
    while (sent < (8 << 20)) {
        int rc = h_write_all(s, buf, sizeof buf);
        if (rc != 0) {
            e->r[0] = rc;
            break;
        }
        sent += (long long)sizeof buf;
    }
    e->v[0] = sent;
    return 0;
}

static void rn_hold(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "renegotiation against a client that only writes";

    sv.ctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 0, 0);
    sv.body = hold_server_body;
    cl.body = hold_client_body;
    tp_conn(&sv, &cl);
    if (!TAP_OK(sv.r[1] == -ENOBUFS && strstr(sv.note, "instead of answering") != NULL,
                "%s: the server fails with -ENOBUFS after 64 KiB held (%s: %s)", what,
                tlsk_err_name(sv.r[1]), sv.note)) {
        tap_diag("  the client wrote %lld bytes", cl.v[0]);
    }
    TAP_OK(cl.r[0] != 0 && cl.v[0] < (8 << 20),
           "%s: the client's writes then fail instead of filling the server (%s after %lld bytes)",
           what, tlsk_err_name(cl.r[0]), cl.v[0]);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* RN-7: what the evented server saw of its one connection. */
struct rn7 {
    struct tlsk_context *cctx;
    int port;
    bool client_answers;    /* the client reads (and so renegotiates) after asking */
    int reneg_rc;           /* renegotiate()'s first answer */
    int64_t t_reneg, t_err; /* when it was started; when error came (te_now_ms) */
    int renegs, authorized; /* renegotiated callbacks; tlsk_socket_authorized() in it */
    int err, client_errors, closes;
    char detail[256];
    /* Client side (its thread). */
    int crc;                /* 0 or the first failure */
    int64_t t_client_end;   /* when the client saw the connection end (silent clients) */
    int64_t t_client_shut;  /* when the silent client shut the connection itself */
    atomic_bool client_done;
};

static void rn7_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct rn7 *st = ud;
    if (len == 1 && *(const char *)buf == 'R') {
        st->t_reneg = te_now_ms();
        st->reneg_rc = tlsk_socket_renegotiate(s, TLSK_REQUEST_PEER_CERT);
        return;
    }
    (void)tlsk_socket_send(s, buf, len);
}

static void rn7_renegotiated(struct tlsk_socket *s, void *ud)
{
    struct rn7 *st = ud;
    st->renegs++;
    st->authorized = tlsk_socket_authorized(s);
    (void)tlsk_socket_send(s, "done", 4);
}

static void rn7_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err;
    (void)ud;
    tlsk_socket_end(s);
}

static void rn7_error(struct tlsk_socket *s, int err, void *ud)
{
    struct rn7 *st = ud;
    st->err = err;
    st->t_err = te_now_ms();
    snprintf(st->detail, sizeof st->detail, "%s", tlsk_socket_error_detail(s));
}

static void rn7_close(struct tlsk_socket *s, void *ud)
{
    (void)s;
    ((struct rn7 *)ud)->closes++;
}

static const struct tlsk_socket_callbacks rn7_sock_cb = {
    .data = rn7_data,
    .renegotiated = rn7_renegotiated,
    .end = rn7_end,
    .error = rn7_error,
    .close = rn7_close,
};

static void rn7_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    (void)srv;
    tlsk_socket_set_data(s, data);
    tlsk_socket_set_callbacks(s, &rn7_sock_cb);
}

static void rn7_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    (void)srv;
    (void)err;
    (void)s;
    ((struct rn7 *)data)->client_errors++;
}

static const struct tlsk_server_callbacks rn7_srv_cb = {
    .secure_connection = rn7_secure,
    .client_error = rn7_client_error,
};

/* The client: ask for a renegotiation ('R'), then either read "done" (OpenSSL answers the
 * HelloRequest inside that read), wait past the server's deadline and check an echo; or
 * stay silent for hold_ms and then see how the connection ends. */
static void *rn7_client(void *arg)
{
    struct rn7 *st = arg;
    struct tlsk_socket *s = NULL;
    char port[16], b[8];
    int rc;

    snprintf(port, sizeof port, "%d", st->port);
    rc = tlsk_connect(&s, st->cctx, "localhost", port, NULL);
    if (rc == 0) {
        rc = h_handshake(s);
    }
    if (rc == 0) {
        rc = h_write_all(s, "R", 1);
    }
    if (rc == 0 && st->client_answers) {
        ssize_t n = h_read_full(s, b, 4);
        rc = n == 4 && memcmp(b, "done", 4) == 0 ? 0 : n < 0 ? (int)n : -EPROTO;
        if (rc == 0) {
            usleep(900 * 1000); /* past the 400 ms the renegotiation had */
            rc = h_write_all(s, "hello", 5);
        }
        if (rc == 0) {
            n = h_read_full(s, b, 5);
            rc = n == 5 && memcmp(b, "hello", 5) == 0 ? 0 : n < 0 ? (int)n : -EPROTO;
        }
        if (rc == 0) {
            rc = h_shutdown(s);
        }
    } else if (rc == 0) {
        /* Silent: do not read (the HelloRequest stays unanswered) for 1.5 s, then read:
         * the connection must have been closed by then, or still be open (no timeout). */
        struct pollfd p = { .fd = tlsk_socket_fd(s), .events = POLLRDHUP };
        int64_t end = te_now_ms() + 1500;
        while (te_now_ms() < end) {
            if (poll(&p, 1, 50) > 0 && !st->t_client_end) {
                st->t_client_end = te_now_ms(); /* the server's FIN */
            }
        }
        if (!st->t_client_end) {
            st->t_client_shut = te_now_ms();
            shutdown(tlsk_socket_fd(s), SHUT_RDWR); /* let the server's read come back */
        }
        (void)h_read_some(s, b, sizeof b);
    }
    st->crc = rc;
    tlsk_socket_free(s);
    atomic_store(&st->client_done, true);
    return NULL;
}

static void rn7(bool answers, int timeout_ms)
{
    struct tlsk_context *sctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, "agent1", 0, 0, 0);
    struct rn7 st = { .client_answers = answers };
    struct tlsk_loop *loop = NULL;
    struct tlsk_server *srv = NULL;
    struct tlsk_server_options o = { .ctx = sctx, .handshake_timeout_ms = timeout_ms };
    char what[128], host[64];
    pthread_t t;

    snprintf(what, sizeof what, "RN-7 evented server, handshake_timeout_ms %d, client %s",
             timeout_ms, answers ? "answers" : "silent");
    st.cctx = tp_ctx(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, "agent1", 0, 0, 0);
    if (!TAP_OK(sctx && st.cctx && tlsk_loop_new(&loop) == 0 &&
                    tlsk_server_new(&srv, loop, &o, &rn7_srv_cb, &st) == 0 &&
                    tlsk_server_listen(srv, "127.0.0.1", "0", 16) == 0 &&
                    tlsk_server_address(srv, host, sizeof host, &st.port) == 0,
                "%s: server listening", what)) {
        return;
    }
    h_spawn(&t, rn7_client, &st);
    for (int64_t end = te_now_ms() + 15000; !atomic_load(&st.client_done) && te_now_ms() < end;) {
        tlsk_loop_run(loop, 50);
    }
    pthread_join(t, NULL);
    tlsk_loop_run(loop, 300); /* the close after the client's */
    TAP_IS(st.reneg_rc, -EAGAIN, "%s: renegotiate() in a data callback returns -EAGAIN", what);
    if (answers) {
        TAP_OK(st.crc == 0, "%s: the client got \"done\", then its echo after the deadline (%s)",
               what, tlsk_err_name(st.crc));
        TAP_IS(st.renegs, 1, "%s: one renegotiated callback", what);
        TAP_IS(st.authorized, 1, "%s: the client's certificate is verified in it", what);
        TAP_IS(st.err, 0, "%s: no error (the deadline passed with the renegotiation done)", what);
        TAP_IS(st.client_errors, 0, "%s: no clientError", what);
    } else if (timeout_ms > 0) {
        int64_t after = st.t_err - st.t_reneg;
        TAP_IS(st.renegs, 0, "%s: no renegotiated callback", what);
        TAP_IS(st.err, -ETIMEDOUT, "%s: error -ETIMEDOUT", what);
        TAP_OK(strstr(st.detail, "HANDSHAKE_TIMEOUT") && strstr(st.detail, "renegotiation"),
               "%s: detail names the renegotiation's timeout (%s)", what, st.detail);
        TAP_OK(st.t_err && after >= timeout_ms && after <= timeout_ms + 700,
               "%s: error %lld ms after renegotiate() (%d..%d)", what, (long long)after,
               timeout_ms, timeout_ms + 700);
        TAP_IS(st.client_errors, 1, "%s: clientError once on the server (as Node)", what);
        TAP_OK(st.t_client_end && st.t_client_end - st.t_reneg < 1500,
               "%s: the silent client sees the connection closed (%lld ms)", what,
               (long long)(st.t_client_end ? st.t_client_end - st.t_reneg : -1));
    } else {
        TAP_OK(st.t_client_shut && (st.err == 0 || st.t_err >= st.t_client_shut),
               "%s: no error within 1.5 s (no timeout; %s after the client left)", what,
               tlsk_err_name(st.err));
        TAP_OK(!st.t_client_end, "%s: the connection stayed open", what);
        TAP_IS(st.renegs, 0, "%s: and the renegotiation still waited", what);
    }
    TAP_IS(st.closes, 1, "%s: the connection closed once", what);
    tlsk_server_close(srv);
    tlsk_loop_run(loop, 2000);
    TAP_IS(tlsk_loop_free(loop), 0, "%s: loop freed with nothing left on it", what);
    tlsk_context_free(sctx);
    tlsk_context_free(st.cctx);
}

/* ---- hostile review item 9: the refusal meets a full send buffer ------------------------- */

/* A TLS 1.2 server with transmit in the kernel and receive in userspace refuses a client's
 * renegotiation with a no_renegotiation warning, which OpenSSL writes and the bridge sends
 * as a kernel control record.  With the send buffer full it must wait (parked) and go out
 * after the data, not be lost with the socket failing -EAGAIN for ever (before the fix the
 * client never heard the refusal). */
struct refusal {
    int fd;
    atomic_int full;  /* the server's send buffer is full */
    long long sent;   /* bytes the server wrote before it was full */
    int kernel_tx, kernel_rx;
    int read_rc;      /* the server's last read: the client's fatal answer */
    int rc;
};

static void *refusal_server(void *arg)
{
    struct refusal *r = arg;
    struct tlsk_context *ctx = h_server_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_TX, 0);
    struct tlsk_socket_options o = { 0 };
    struct tlsk_socket *s = NULL;
    static unsigned char buf[65536];
    struct pollfd p = { .fd = r->fd };

    r->rc = ctx ? tlsk_socket_new_server(&s, ctx, r->fd, &o) : -EINVAL;
    if (r->rc == 0 && (r->rc = h_handshake(s)) == 0) {
        r->kernel_tx = h_kernel_has(r->fd, true, NULL, NULL) == 1;
        r->kernel_rx = h_kernel_has(r->fd, false, NULL, NULL) == 1;
        for (;;) {
            ssize_t n;
            h_pattern(31, (uint64_t)r->sent, buf, sizeof buf);
            n = tlsk_socket_write(s, buf, sizeof buf);
            if (n < 0) {
                r->rc = n == -EAGAIN ? 0 : (int)n;
                break;
            }
            r->sent += n;
        }
    }
    atomic_store(&r->full, 1);
    /* Read until the client's fatal alert ends it (bounded: 20 s). */
    for (int i = 0; r->rc == 0 && i < 200; i++) {
        ssize_t n = tlsk_socket_read(s, buf, sizeof buf);
        if (n != -EAGAIN) {
            r->read_rc = (int)n;
            break;
        }
        p.events = (short)tlsk_socket_events(s);
        poll(&p, 1, 100);
    }
    tlsk_socket_free(s);
    tlsk_context_free(ctx);
    return NULL;
}

static void msg_cb(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                   void *arg)
{
    (void)version, (void)ssl;
    if (!write_p && type == SSL3_RT_ALERT && len == 2) {
        const unsigned char *a = buf;
        *(int *)arg = a[0] << 8 | a[1]; /* level, description */
    }
}

static void refusal_parked(void)
{
    const char *what = "a refused renegotiation meeting a full send buffer";
    struct refusal r = { 0 };
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    pthread_t th;
    int cfd, alert = 0, rc;
    long long got = 0, wrong = -1;
    static unsigned char buf[65536];
    struct timeval tv = { .tv_sec = 10 };

    if (!TAP_OK(cctx && h_tcp_pair(&cfd, &r.fd) == 0, "%s: TCP pair", what)) {
        SSL_CTX_free(cctx);
        return;
    }
    h_set_nonblock(r.fd, true);
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* a lost refusal: no hang */
    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    ssl = SSL_new(cctx);
    SSL_set_fd(ssl, cfd);
    SSL_set_msg_callback(ssl, msg_cb);
    SSL_set_msg_callback_arg(ssl, &alert);
    h_spawn(&th, refusal_server, &r);
    rc = SSL_connect(ssl);
    TAP_IS(rc, 1, "%s: the OpenSSL client's handshake", what);
    while (!atomic_load(&r.full)) {
        usleep(10 * 1000);
    }
    TAP_OK(r.rc == 0 && r.kernel_tx && !r.kernel_rx,
           "%s: server transmit in the kernel, receive in userspace, send buffer full (%lld "
           "bytes)", what, r.sent);
    rc = SSL_renegotiate(ssl);
    TAP_IS(rc, 1, "%s: the client asks to renegotiate", what);
    /* The ClientHello goes out with the first read; data keeps coming until the refusal. */
    for (;;) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        if (wrong < 0 && h_pattern_check(31, (uint64_t)got, buf, (size_t)n) >= 0) {
            wrong = got;
        }
        got += n;
    }
    TAP_OK(got == r.sent && wrong < 0, "%s: every byte before the refusal arrived intact (%lld "
           "of %lld)", what, got, r.sent);
    TAP_IS(alert, SSL3_AL_WARNING << 8 | SSL_AD_NO_RENEGOTIATION,
           "%s: the client received the warning no_renegotiation after the data", what);
    pthread_join(th, NULL);
    TAP_OK(r.read_rc < 0 && r.read_rc != -EAGAIN,
           "%s: the server hears the client's answer, not -EAGAIN for ever (%s)", what,
           tlsk_err_name(r.read_rc));
    SSL_free(ssl);
    SSL_CTX_free(cctx);
    close(cfd);
}

int main(void)
{
    /* OpenSSL's socket writes (an alert to a peer that already left) can raise SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    rn1("agent1", 0, true);
    rn1(NULL, 0, true);
    rn1("agent1", -1, true); /* RL-6: limit 0 does not count the server's own */
    rn1("agent1", 0, false);
    rn2();
    rn3();
    rn_hold();
    rn7(true, 400);
    rn7(false, 400);
    rn7(false, -1);
    if (h_expect_ktls()) {
        refusal_parked(); /* a kernel-transmit mechanism: userspace OpenSSL queues it itself */
    }
    return tap_done();
}

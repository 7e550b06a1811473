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
 *    the renegotiation succeeds (4.3).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
    shutdown(e->fd, SHUT_RDWR);
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
    return tap_done();
}

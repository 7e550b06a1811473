/*
 * test_edges.c - the moments around offload that are easy to get wrong:
 *  - application data the peer sends right after its Finished, while this side is still in
 *    the handshake, must be in the kernel's queue where the kernel has a tls ULP (OpenSSL
 *    must not have read it; without one OpenSSL reads ahead by design) and must arrive intact
 *    after receive offload (docs/OPENSSL.md §4);
 *  - a TLS 1.3 client with receive offload gets the server's NewSessionTickets through the
 *    kernel, re-injected into OpenSSL, and a second connection resumes with them (docs/OPENSSL.md §5);
 *  - resumed handshakes (TLS 1.2 and 1.3) offload like full ones: their sequence numbers are
 *    counted, not assumed.
 * Runs in both tiers; with TLSK_EXPECT_KTLS=1 the receive side must be in the kernel.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define EARLY_LEN 100000

struct peer {
    struct tlsk_context *ctx;
    int fd;
    bool server;
    bool lazy; /* sleep 300 ms on each -EAGAIN in the handshake: the peer finishes first */
    int rc;
    int queued; /* FIONREAD right after the handshake */
    struct tlsk_offload off;
    const void *session;
    size_t session_len;
    unsigned char session_out[8192];
    ssize_t session_out_len;
    ssize_t session_before_read;
    int reused;
    char detail[256];
};

/* The writer's progress, so the lazy reader never finishes before the early data is out
 * (under sanitizers or in user-mode Linux a fixed delay alone is not enough). */
static atomic_int wr_hs_done, wr_sent;

/* After each -EAGAIN: wait (up to 10 s) for the writer's next flight to reach this socket,
 * then give the writer a second to say it has finished its handshake (its Finished is on the
 * wire before it says so, and then it installs its keys), then, once it has, wait until all
 * its data is out.  The second is counted from the flight's arrival, not from the -EAGAIN:
 * counted from the -EAGAIN it once ran out while the writer was still computing (6.1 tier,
 * two guests sharing the host's CPUs: the reader finished first, FIONREAD 0).  A writer
 * that is still waiting for this side's next flight costs the second. */
static bool readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1;
}

static int lazy_handshake(struct tlsk_socket *s, int fd)
{
    int rc;
    while ((rc = tlsk_socket_handshake(s)) == -EAGAIN) {
        for (int i = 0; i < 1000 && !readable(fd) && !atomic_load(&wr_hs_done); i++) {
            usleep(10 * 1000);
        }
        for (int i = 0; i < 100 && !atomic_load(&wr_hs_done); i++) {
            usleep(10 * 1000);
        }
        for (int i = 0; i < 1000 && atomic_load(&wr_hs_done) && !atomic_load(&wr_sent); i++) {
            usleep(10 * 1000);
        }
    }
    return rc;
}

/* Reader: the lazy side.  Checks the early bytes are still in the kernel, then reads them. */
static void *reader(void *arg)
{
    struct peer *p = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost" };
    char b[16];

    p->rc = p->server ? tlsk_socket_new_server(&s, p->ctx, p->fd, NULL)
                      : tlsk_socket_new_client(&s, p->ctx, p->fd, &o);
    if (p->rc) {
        return NULL;
    }
    if ((p->rc = lazy_handshake(s, p->fd)) != 0) {
        goto out;
    }
    p->off = tlsk_socket_offload(s);
    ioctl(p->fd, FIONREAD, &p->queued);
    if ((p->rc = h_recv_pattern(s, 7, EARLY_LEN)) != 0) {
        goto out;
    }
    if ((p->rc = h_shutdown(s)) != 0) {
        goto out;
    }
    p->rc = (int)h_read_some(s, b, sizeof b);
out:
    snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    return NULL;
}

/* Writer: finishes its handshake first and sends at once. */
static void *writer(void *arg)
{
    struct peer *p = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost" };
    char b[16];

    p->rc = p->server ? tlsk_socket_new_server(&s, p->ctx, p->fd, NULL)
                      : tlsk_socket_new_client(&s, p->ctx, p->fd, &o);
    if (p->rc) {
        return NULL;
    }
    if ((p->rc = h_handshake(s)) != 0) {
        goto out;
    }
    atomic_store(&wr_hs_done, 1);
    p->off = tlsk_socket_offload(s);
    if ((p->rc = h_send_pattern(s, 7, EARLY_LEN)) != 0) {
        goto out;
    }
    atomic_store(&wr_sent, 1);
    p->rc = (int)h_read_some(s, b, sizeof b); /* close_notify: 0 */
    if (p->rc == 0) {
        p->rc = h_shutdown(s);
    }
out:
    snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    return NULL;
}

static void early_data(int version, const char *suite, unsigned flags)
{
    /* TLS 1.2: the server sends the last Finished, so the client reads lazily.
     * TLS 1.3: the client sends the last Finished, so the server reads lazily. */
    bool reader_is_server = version == TLSK_TLS1_3;
    struct peer sv = { .server = true }, cl = { .server = false };
    struct peer *rd = reader_is_server ? &sv : &cl, *wr = reader_is_server ? &cl : &sv;
    pthread_t a, b;
    const char *v = version == TLSK_TLS1_3 ? "1.3" : "1.2";

    sv.ctx = h_server_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, flags);
    cl.ctx = h_client_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, flags);
    if (!TAP_OK(sv.ctx && cl.ctx && h_tcp_pair(&cl.fd, &sv.fd) == 0, "%s early data: setup", v)) {
        return;
    }
    h_set_nonblock(rd->fd, true);
    rd->lazy = true;
    atomic_store(&wr_hs_done, 0);
    atomic_store(&wr_sent, 0);
    h_spawn(&a, reader, rd);
    h_spawn(&b, writer, wr);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    if (tlsk_kernel_probe()->ulp) {
        TAP_OK(rd->queued > 0, "%s %s: peer's data sent right after its Finished was still queued "
               "in the kernel when the %s finished its handshake (FIONREAD %d)", v, suite,
               reader_is_server ? "server" : "client", rd->queued);
    } else {
        /* Without a tls ULP nothing can go to the kernel and OpenSSL reads ahead by design
         * (docs/OPENSSL.md §4; test_userio checks it reads ahead here and not with a ULP):
         * whether these bytes were still queued is a race, so it is not asserted. */
        tap_diag("%s %s: no tls ULP, read-ahead on: FIONREAD %d after the handshake (not "
                 "checked)", v, suite, rd->queued);
    }
    if (!TAP_OK(rd->rc == 0, "%s %s: %d bytes arrived intact, close_notify both ways", v, suite,
                EARLY_LEN)) {
        tap_diag("  reader: %s: %s", tlsk_err_name(rd->rc), rd->detail);
    }
    if (!TAP_OK(wr->rc == 0, "%s %s: writer completed", v, suite)) {
        tap_diag("  writer: %s: %s", tlsk_err_name(wr->rc), wr->detail);
    }
    if (h_expect_ktls()) {
        TAP_OK(rd->off.rx.mode == TLSK_MODE_KERNEL, "%s: the reader received through kTLS (%s)",
               v, tlsk_reason_name(rd->off.rx.reason));
    }
    close(sv.fd);
    close(cl.fd);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* One connection of the resumption tests: the server writes a byte and waits for close. */
static void *res_server(void *arg)
{
    struct peer *p = arg;
    struct tlsk_socket *s = NULL;
    char b[16];

    if ((p->rc = tlsk_socket_new_server(&s, p->ctx, p->fd, NULL)) != 0) {
        return NULL;
    }
    if ((p->rc = h_handshake(s)) == 0 && (p->rc = h_write_all(s, "x", 1)) == 0) {
        p->off = tlsk_socket_offload(s);
        p->reused = tlsk_socket_session_reused(s);
        p->rc = (int)h_read_some(s, b, sizeof b);
        if (p->rc == 0) {
            p->rc = h_shutdown(s);
        }
    }
    snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    return NULL;
}

static void *res_client(void *arg)
{
    struct peer *p = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost", .session = p->session,
                                     .session_len = p->session_len };
    char b[16];

    if ((p->rc = tlsk_socket_new_client(&s, p->ctx, p->fd, &o)) != 0) {
        return NULL;
    }
    if ((p->rc = h_handshake(s)) != 0) {
        goto out;
    }
    p->off = tlsk_socket_offload(s);
    p->reused = tlsk_socket_session_reused(s);
    p->session_before_read = tlsk_socket_session(s, p->session_out, sizeof p->session_out);
    if (h_read_full(s, b, 1) != 1 || b[0] != 'x') {
        p->rc = -EPROTO;
        goto out;
    }
    p->session_out_len = tlsk_socket_session(s, p->session_out, sizeof p->session_out);
    if ((p->rc = h_shutdown(s)) == 0) {
        p->rc = (int)h_read_some(s, b, sizeof b);
    }
out:
    snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    return NULL;
}

static void one_conn(struct peer *sv, struct peer *cl)
{
    pthread_t a, b;

    if (h_tcp_pair(&cl->fd, &sv->fd) != 0) {
        sv->rc = cl->rc = -EIO;
        return;
    }
    h_spawn(&a, res_server, sv);
    h_spawn(&b, res_client, cl);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    close(sv->fd);
    close(cl->fd);
}

static void resumption(int version, const char *suite, unsigned client_flags)
{
    struct peer sv1 = { 0 }, cl1 = { 0 }, sv2 = { 0 }, cl2 = { 0 };
    const char *v = version == TLSK_TLS1_3 ? "1.3" : "1.2";
    struct tlsk_context *sctx = h_server_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_context *cctx = h_client_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, client_flags);

    if (!TAP_OK(sctx && cctx, "%s resumption: contexts", v)) {
        return;
    }
    sv1.ctx = sv2.ctx = sctx;
    cl1.ctx = cl2.ctx = cctx;
    one_conn(&sv1, &cl1);
    if (!TAP_OK(sv1.rc == 0 && cl1.rc == 0, "%s %s: first connection", v, suite)) {
        tap_diag("  server %s: %s; client %s: %s", tlsk_err_name(sv1.rc), sv1.detail,
                 tlsk_err_name(cl1.rc), cl1.detail);
    }
    if (version == TLSK_TLS1_3) {
        TAP_IS(cl1.session_before_read, -ENOENT,
               "1.3: no resumable session before the tickets were read");
    }
    TAP_OK(cl1.session_out_len > 0, "%s: client holds a resumable session after reading (%zd bytes)",
           v, cl1.session_out_len);
    if (h_expect_ktls()) {
        TAP_OK(cl1.off.rx.mode == TLSK_MODE_KERNEL,
               "%s: client received (tickets included) through kTLS (%s)", v,
               tlsk_reason_name(cl1.off.rx.reason));
        TAP_OK(sv1.off.tx.mode == TLSK_MODE_KERNEL, "%s: server sent through kTLS", v);
    }
    if (cl1.session_out_len <= 0) {
        goto out;
    }
    cl2.session = cl1.session_out;
    cl2.session_len = (size_t)cl1.session_out_len;
    one_conn(&sv2, &cl2);
    if (!TAP_OK(sv2.rc == 0 && cl2.rc == 0, "%s %s: second connection", v, suite)) {
        tap_diag("  server %s: %s; client %s: %s", tlsk_err_name(sv2.rc), sv2.detail,
                 tlsk_err_name(cl2.rc), cl2.detail);
    }
    TAP_OK(cl2.reused == 1 && sv2.reused == 1, "%s: second connection resumed (client %d, server %d)",
           v, cl2.reused, sv2.reused);
    if (h_expect_ktls()) {
        /* Offload after an abbreviated handshake: the counted sequence numbers must be right
         * or the data and close_notify above would have failed authentication. */
        TAP_OK(sv2.off.tx.mode == TLSK_MODE_KERNEL && cl2.off.rx.mode == TLSK_MODE_KERNEL,
               "%s: resumed connection offloaded (server tx %s, client rx %s)", v,
               tlsk_reason_name(sv2.off.tx.reason), tlsk_reason_name(cl2.off.rx.reason));
        if (version == TLSK_TLS1_2) {
            TAP_OK(sv2.off.rx.mode == TLSK_MODE_KERNEL && cl2.off.tx.mode == TLSK_MODE_KERNEL,
                   "1.2: resumed connection offloaded in the other direction too");
        }
    }
out:
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

int main(void)
{
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    early_data(TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", 0);
    early_data(TLSK_TLS1_2, "ECDHE-RSA-CHACHA20-POLY1305", 0);
    early_data(TLSK_TLS1_3, "TLS_AES_256_GCM_SHA384", TLSK_OFFLOAD_RX_TLS13);
    early_data(TLSK_TLS1_3, "TLS_CHACHA20_POLY1305_SHA256", TLSK_OFFLOAD_RX_TLS13);

    resumption(TLSK_TLS1_3, "TLS_AES_128_GCM_SHA256", TLSK_OFFLOAD_RX_TLS13);
    resumption(TLSK_TLS1_3, "TLS_AES_256_GCM_SHA384", TLSK_OFFLOAD_RX_TLS13);
    resumption(TLSK_TLS1_3, "TLS_CHACHA20_POLY1305_SHA256", TLSK_OFFLOAD_RX_TLS13);
    resumption(TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", 0);
    resumption(TLSK_TLS1_2, "ECDHE-RSA-AES256-GCM-SHA384", 0);
    return tap_done();
}

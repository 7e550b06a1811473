/*
 * test_matrix.c - tlsk server against tlsk client: TLS 1.2 and 1.3 x AES-128-GCM, AES-256-GCM,
 * ChaCha20-Poly1305 (plus AES-128-CCM, a CBC suite and policy cases), blocking and
 * non-blocking: handshake, echo, bulk both ways, sendfile, close_notify both ways, all
 * byte-exact.  Runs in both tiers: natively every direction must report no_ulp; with
 * TLSK_EXPECT_KTLS=1 the kernel must really hold the keys (getsockopt(SOL_TLS) and
 * /proc/net/tls_stat), as the "auto" policy says.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kconst.h"
#include "tap.h"

struct tcase {
    const char *name;
    int version;
    const char *suite;
    int kcipher;
    bool nonblock;
    enum tlsk_offload_policy policy;
    unsigned flags;     /* context flags for both sides */
    bool kernel_cipher; /* the kernel can take this suite */
    unsigned sock_flags; /* server socket flags (TLSK_SOCKET_SENDFILE_MMAP) */
};

struct side {
    const struct tcase *tc;
    struct tlsk_context *ctx;
    int fd;
    size_t bulk;
    int file_fd;
    int rc;
    const char *step;
    char detail[256];
    struct tlsk_offload off;
    pthread_barrier_t *bar;
};

static int kernel_tx_ok, kernel_rx_ok;

static void *server_main(void *arg)
{
    struct side *sd = arg;
    struct tlsk_socket *s = NULL;
    char buf[64];
    ssize_t n;

    struct tlsk_socket_options so = { .flags = sd->tc->sock_flags };
    sd->rc = tlsk_socket_new_server(&s, sd->ctx, sd->fd, &so);
    sd->step = "new";
    if (sd->rc) {
        pthread_barrier_wait(sd->bar);
        return NULL;
    }
    sd->step = "handshake";
    sd->rc = h_handshake(s);
    sd->off = tlsk_socket_offload(s);
    pthread_barrier_wait(sd->bar);
    if (sd->rc) {
        goto out;
    }
    sd->step = "echo";
    n = h_read_full(s, buf, 6);
    if (n != 6) {
        sd->rc = n < 0 ? (int)n : -EPIPE;
        goto out;
    }
    if ((sd->rc = h_write_all(s, buf, 6)) != 0) {
        goto out;
    }
    sd->step = "bulk in";
    if ((sd->rc = h_recv_pattern(s, 1, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "bulk out";
    if ((sd->rc = h_send_pattern(s, 2, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "sendfile";
    if ((sd->rc = h_sendfile_all(s, sd->file_fd, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "close_notify in";
    n = h_read_some(s, buf, sizeof buf);
    if (n != 0) {
        sd->rc = n < 0 ? (int)n : -EPROTO;
        goto out;
    }
    sd->step = "close_notify out";
    sd->rc = h_shutdown(s);
out:
    if (sd->rc) {
        snprintf(sd->detail, sizeof sd->detail, "%s", tlsk_socket_error_detail(s));
    }
    tlsk_socket_free(s);
    return NULL;
}

static void *client_main(void *arg)
{
    struct side *sd = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost" };
    char buf[64];
    ssize_t n;

    sd->rc = tlsk_socket_new_client(&s, sd->ctx, sd->fd, &o);
    sd->step = "new";
    if (sd->rc) {
        pthread_barrier_wait(sd->bar);
        return NULL;
    }
    sd->step = "handshake";
    sd->rc = h_handshake(s);
    sd->off = tlsk_socket_offload(s);
    pthread_barrier_wait(sd->bar);
    if (sd->rc) {
        goto out;
    }
    sd->step = "echo (writev)";
    {
        /* Three pieces in one call: writev must deliver them in order as one message. */
        struct iovec iov[3] = { { "he", 2 }, { "llo", 3 }, { "\n", 1 } };
        ssize_t w;
        while ((w = tlsk_socket_writev(s, iov, 3)) == -EAGAIN) {
            usleep(1000);
        }
        if (w != 6) {
            sd->rc = w < 0 ? (int)w : -EIO;
            goto out;
        }
    }
    n = h_read_full(s, buf, 6);
    if (n != 6 || memcmp(buf, "hello\n", 6) != 0) {
        sd->rc = n < 0 ? (int)n : -EILSEQ;
        goto out;
    }
    sd->step = "bulk out";
    if ((sd->rc = h_send_pattern(s, 1, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "bulk in";
    if ((sd->rc = h_recv_pattern(s, 2, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "sendfile in";
    if ((sd->rc = h_recv_pattern(s, 3, sd->bulk)) != 0) {
        goto out;
    }
    sd->step = "close_notify out";
    if ((sd->rc = h_shutdown(s)) != 0) {
        goto out;
    }
    sd->step = "close_notify in";
    n = h_read_some(s, buf, sizeof buf);
    if (n != 0) {
        sd->rc = n < 0 ? (int)n : -EPROTO;
    }
out:
    if (sd->rc) {
        snprintf(sd->detail, sizeof sd->detail, "%s", tlsk_socket_error_detail(s));
    }
    tlsk_socket_free(s);
    return NULL;
}

/* What the policy in docs/KERNEL.md §10.2 says this direction should be. */
static void expected(const struct tcase *tc, bool tx, enum tlsk_mode *m, enum tlsk_reason *r)
{
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();

    *m = TLSK_MODE_USERSPACE;
    if (tc->policy == TLSK_OFFLOAD_OFF) {
        *r = TLSK_REASON_POLICY;
    } else if (!caps->ulp) {
        *r = TLSK_REASON_NO_ULP;
    } else if (!tc->kernel_cipher) {
        *r = TLSK_REASON_CIPHER;
    } else if (!tx && tc->version == TLSK_TLS1_3 && !(tc->flags & TLSK_OFFLOAD_RX_TLS13) &&
               !caps->rekey) {
        *r = TLSK_REASON_NO_REKEY;
    } else {
        *m = TLSK_MODE_KERNEL;
        *r = TLSK_REASON_NONE;
    }
}

static void check_dir(const char *who, const char *dir, const struct tlsk_direction *d,
                      enum tlsk_mode m, enum tlsk_reason r)
{
    if (!TAP_OK(d->mode == m && d->reason == r, "  %s %s: %s (%s)", who, dir,
                d->mode == TLSK_MODE_KERNEL ? "kernel" : "userspace", tlsk_reason_name(d->reason))) {
        tap_diag("  expected %s (%s)", m == TLSK_MODE_KERNEL ? "kernel" : "userspace",
                 tlsk_reason_name(r));
    }
}

static void run_case(const struct tcase *tc, size_t bulk, int file_fd)
{
    struct side sv = { .tc = tc, .bulk = bulk, .file_fd = file_fd };
    struct side cl = { .tc = tc, .bulk = bulk };
    pthread_barrier_t bar;
    pthread_t ts, tcl;
    long long curr_tx0 = h_tls_stat("TlsCurrTxSw"), curr_rx0 = h_tls_stat("TlsCurrRxSw");
    long long tx0 = h_tls_stat("TlsTxSw"), rx0 = h_tls_stat("TlsRxSw");
    enum tlsk_mode m;
    enum tlsk_reason r;
    int cfd, sfd, want_tx = 0, want_rx = 0;

    tap_diag("case %s", tc->name);
    sv.ctx = h_server_ctx(tc->version, tc->suite, tc->policy, tc->flags);
    cl.ctx = h_client_ctx(tc->version, tc->suite, tc->policy, tc->flags);
    if (!TAP_OK(sv.ctx && cl.ctx, "%s: contexts", tc->name) ||
        !TAP_OK(h_tcp_pair(&cfd, &sfd) == 0, "%s: tcp pair", tc->name)) {
        tlsk_context_free(sv.ctx);
        tlsk_context_free(cl.ctx);
        return;
    }
    if (tc->nonblock) {
        h_set_nonblock(cfd, true);
        h_set_nonblock(sfd, true);
    }
    sv.fd = sfd;
    cl.fd = cfd;
    pthread_barrier_init(&bar, NULL, 3);
    sv.bar = cl.bar = &bar;
    h_spawn(&ts, server_main, &sv);
    h_spawn(&tcl, client_main, &cl);
    pthread_barrier_wait(&bar);

    /* Both handshakes are done and nothing has been closed: look at the kernel now. */
    if (TAP_OK(sv.rc == 0 && cl.rc == 0, "%s: handshake (server %s, client %s)", tc->name,
               tlsk_err_name(sv.rc), tlsk_err_name(cl.rc))) {
        expected(tc, true, &m, &r);
        check_dir("server", "tx", &sv.off.tx, m, r);
        check_dir("client", "tx", &cl.off.tx, m, r);
        want_tx = m == TLSK_MODE_KERNEL ? 2 : 0;
        expected(tc, false, &m, &r);
        check_dir("server", "rx", &sv.off.rx, m, r);
        check_dir("client", "rx", &cl.off.rx, m, r);
        want_rx = m == TLSK_MODE_KERNEL ? 2 : 0;

        int v = 0, c = 0;
        int has = h_kernel_has(sfd, true, &v, &c) + h_kernel_has(cfd, true, &v, &c);
        TAP_IS(has, want_tx, "  %s: getsockopt(TLS_TX) holds keys on %d of 2 ends", tc->name,
               want_tx);
        if (want_tx) {
            TAP_OK(v == tc->version && c == tc->kcipher, "  kernel TX version %#x cipher %d", v, c);
        }
        has = h_kernel_has(sfd, false, NULL, NULL) + h_kernel_has(cfd, false, NULL, NULL);
        TAP_IS(has, want_rx, "  %s: getsockopt(TLS_RX) holds keys on %d of 2 ends", tc->name,
               want_rx);
        if (curr_tx0 >= 0) {
            TAP_IS(h_tls_stat("TlsCurrTxSw") - curr_tx0, want_tx, "  tls_stat TlsCurrTxSw +%d",
                   want_tx);
            TAP_IS(h_tls_stat("TlsCurrRxSw") - curr_rx0, want_rx, "  tls_stat TlsCurrRxSw +%d",
                   want_rx);
            TAP_IS(h_tls_stat("TlsTxSw") - tx0, want_tx, "  tls_stat TlsTxSw +%d", want_tx);
            TAP_IS(h_tls_stat("TlsRxSw") - rx0, want_rx, "  tls_stat TlsRxSw +%d", want_rx);
        } else if (h_expect_ktls()) {
            TAP_OK(0, "  /proc/net/tls_stat exists on a kTLS kernel");
        }
        kernel_tx_ok += want_tx > 0;
        kernel_rx_ok += want_rx > 0;
    }
    pthread_join(ts, NULL);
    pthread_join(tcl, NULL);
    if (!TAP_OK(sv.rc == 0, "%s: server echo, bulk, sendfile, close_notify", tc->name)) {
        tap_diag("  server failed at %s: %s: %s", sv.step, tlsk_err_name(sv.rc), sv.detail);
    }
    if (!TAP_OK(cl.rc == 0, "%s: client echo, bulk, sendfile, close_notify", tc->name)) {
        tap_diag("  client failed at %s: %s: %s", cl.step, tlsk_err_name(cl.rc), cl.detail);
    }
    pthread_barrier_destroy(&bar);
    close(cfd);
    close(sfd);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

int main(void)
{
    static const struct {
        int version;
        const char *suite;
        int kcipher;
    } suites[] = {
        { TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", TLSK_KCIPHER_AES_GCM_128 },
        { TLSK_TLS1_2, "ECDHE-RSA-AES256-GCM-SHA384", TLSK_KCIPHER_AES_GCM_256 },
        { TLSK_TLS1_2, "ECDHE-RSA-CHACHA20-POLY1305", TLSK_KCIPHER_CHACHA20_POLY1305 },
        { TLSK_TLS1_3, "TLS_AES_128_GCM_SHA256", TLSK_KCIPHER_AES_GCM_128 },
        { TLSK_TLS1_3, "TLS_AES_256_GCM_SHA384", TLSK_KCIPHER_AES_GCM_256 },
        { TLSK_TLS1_3, "TLS_CHACHA20_POLY1305_SHA256", TLSK_KCIPHER_CHACHA20_POLY1305 },
    };
    size_t bulk = h_bulk_bytes(64);
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();
    char name[128];
    int file_fd;

    tap_diag("kernel %s, tls ULP %s, bulk %zu MiB", caps->release, caps->ulp ? "yes" : "no",
             bulk >> 20);
    if (h_expect_ktls() && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    if (!h_expect_ktls()) {
        TAP_OK(!caps->ulp || getenv("TLSK_PROBE_DISABLE"), "native tier: no tls ULP on this host "
               "(set TLSK_EXPECT_KTLS=1 on a kTLS kernel)");
    }
    file_fd = h_pattern_file(3, bulk);
    if (!TAP_OK(file_fd >= 0, "pattern file of %zu bytes", bulk)) {
        return tap_done();
    }
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        for (int nb = 0; nb < 2; nb++) {
            struct tcase tc = { .version = suites[i].version, .suite = suites[i].suite,
                                .kcipher = suites[i].kcipher, .nonblock = nb,
                                .kernel_cipher = true };
            snprintf(name, sizeof name, "%s %s %s", tc.version == TLSK_TLS1_3 ? "1.3" : "1.2",
                     tc.suite, nb ? "non-blocking" : "blocking");
            tc.name = name;
            run_case(&tc, bulk, file_fd);
        }
    }
    /* TLS 1.3 receive offload by opt-in (the kernel cannot re-key before 6.14). */
    for (int nb = 0; nb < 2; nb++) {
        struct tcase tc = { .name = nb ? "1.3 AES-128-GCM rx opt-in non-blocking"
                                       : "1.3 AES-128-GCM rx opt-in blocking",
                            .version = TLSK_TLS1_3, .suite = "TLS_AES_128_GCM_SHA256",
                            .kcipher = TLSK_KCIPHER_AES_GCM_128, .nonblock = nb,
                            .flags = TLSK_OFFLOAD_RX_TLS13, .kernel_cipher = true };
        run_case(&tc, bulk / 4, file_fd);
    }
    {
        struct tcase tc = { .name = "1.3 ChaCha20 rx opt-in", .version = TLSK_TLS1_3,
                            .suite = "TLS_CHACHA20_POLY1305_SHA256",
                            .kcipher = TLSK_KCIPHER_CHACHA20_POLY1305,
                            .flags = TLSK_OFFLOAD_RX_TLS13, .kernel_cipher = true };
        run_case(&tc, bulk / 4, file_fd);
    }
    {
        /* AES-128-CCM: in the kernel where the probe says it is taken. */
        struct tcase tc = { .name = "1.3 AES-128-CCM", .version = TLSK_TLS1_3,
                            .suite = "TLS_AES_128_CCM_SHA256",
                            .kcipher = TLSK_KCIPHER_AES_CCM_128, .flags = TLSK_OFFLOAD_RX_TLS13,
                            .kernel_cipher = caps->cipher[1][TLSK_CIPHER_AES_128_CCM][0] &&
                                             caps->cipher[1][TLSK_CIPHER_AES_128_CCM][1] };
        run_case(&tc, bulk / 8, file_fd);
        struct tcase tc2 = { .name = "1.2 AES128-CCM", .version = TLSK_TLS1_2,
                             .suite = "AES128-CCM", .kcipher = TLSK_KCIPHER_AES_CCM_128,
                             .kernel_cipher = caps->cipher[0][TLSK_CIPHER_AES_128_CCM][0] &&
                                              caps->cipher[0][TLSK_CIPHER_AES_128_CCM][1] };
        run_case(&tc2, bulk / 8, file_fd);
    }
    {
        /* A CBC suite the kernel lacks: userspace with reason "cipher". */
        struct tcase tc = { .name = "1.2 CBC suite", .version = TLSK_TLS1_2,
                            .suite = "ECDHE-RSA-AES128-SHA256", .kernel_cipher = false };
        run_case(&tc, bulk / 8, file_fd);
    }
    for (int nb = 0; nb < 2; nb++) {
        /* Userspace sendfile straight from a mapping of the file. */
        struct tcase tc = { .name = nb ? "1.3 sendfile from a mapping, policy off, non-blocking"
                                       : "1.3 sendfile from a mapping, policy off",
                            .version = TLSK_TLS1_3, .suite = "TLS_AES_128_GCM_SHA256",
                            .kcipher = TLSK_KCIPHER_AES_GCM_128, .kernel_cipher = true,
                            .policy = TLSK_OFFLOAD_OFF, .nonblock = nb,
                            .sock_flags = TLSK_SOCKET_SENDFILE_MMAP };
        run_case(&tc, bulk, file_fd);
    }
    {
        struct tcase tc = { .name = "1.2 policy off", .version = TLSK_TLS1_2,
                            .suite = "ECDHE-RSA-AES128-GCM-SHA256", .kernel_cipher = true,
                            .policy = TLSK_OFFLOAD_OFF };
        run_case(&tc, bulk / 8, file_fd);
    }
    close(file_fd);
    if (h_expect_ktls()) {
        TAP_OK(kernel_tx_ok >= 10 && kernel_rx_ok >= 6,
               "kernel held TX keys in %d cases and RX keys in %d", kernel_tx_ok, kernel_rx_ok);
    }
    return tap_done();
}

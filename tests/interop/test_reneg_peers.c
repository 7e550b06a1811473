/*
 * test_reneg_peers.c - client-initiated renegotiation against a tlsk server (docs/NODE.md
 * §1.7 RL-1 to RL-5, §2.1 D7, §4.3):
 *  - userspace TLS 1.2 (TLSK_ALLOW_RENEGOTIATION; kTLS tier: reason renegotiation): openssl
 *    s_client sending R lines: up to the limit they complete and the echo works; one more
 *    gives RENEG_LIMIT on the server's socket, the connection closes, and s_client printed
 *    RENEGOTIATING limit+1 times; limits 0, 1, 2, 3, 5 (RL-1, RL-2); the window (RL-3);
 *    gnutls-cli --inline-commands ^renegotiate^ (RL-4);
 *  - without the allow flag (RL-5): one R is answered with a no_renegotiation warning
 *    (s_client -msg shows it): by the kernel path when offloaded (kTLS tier) and by OpenSSL
 *    itself natively; gnutls-cli retrying after each warning is cut off by the limit when
 *    offloaded;
 *  - a flood of R lines is cut off by the limit while a concurrent healthy connection on the
 *    same server keeps echoing.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "tap.h"

static char g_out[1 << 20];

static const char *SC12 = "openssl s_client -connect 127.0.0.1:$P -CAfile $F/ca1-cert.pem -tls1_2";

/* s_client sending n R lines (gap seconds apart, first after 1 s), then "hello". */
static int r_lines(struct p_srv *st, int n, const char *gap, bool msg)
{
    char script[1024];
    snprintf(script, sizeof script,
             "(sleep 1; for i in $(seq %d); do echo R; sleep %s; done; echo hello; sleep 1.5) | "
             "timeout 30 %s %s",
             n, gap, SC12, msg ? "-msg" : "");
    return p_run_peer(script, st->port, 40, g_out, sizeof g_out);
}

static void rl_limit(int limit, int n)
{
    char what[128];
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0,
                                       limit == 0 ? -1 : limit, 600, NULL);
    int rc, reneg;

    snprintf(what, sizeof what, "RL limit %d, %d R lines", limit, n);
    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = r_lines(&st, n, "0.5", false);
    reneg = p_count(g_out, "RENEGOTIATING");
    TAP_IS(st.secure, 1, "%s: one secureConnection (renegotiations do not repeat it)", what);
    TAP_OK(st.off.tx.mode == TLSK_MODE_USERSPACE && st.off.rx.mode == TLSK_MODE_USERSPACE &&
               !st.kernel_tx && !st.kernel_rx,
           "%s: the connection stays in userspace (%s)", what, tlsk_reason_name(st.off.tx.reason));
    if (h_expect_ktls()) {
        TAP_IS(st.off.tx.reason, TLSK_REASON_RENEGOTIATION, "%s: reason renegotiation", what);
    }
    if (n <= limit) {
        TAP_OK(reneg == n && p_count(g_out, "hello") >= 1 && st.sock_errors == 0,
               "%s: %d renegotiations completed, then the echo works (%d RENEGOTIATING, "
               "error %s, exit %d)",
               what, n, reneg, tlsk_err_name(st.last_sock_err), rc);
    } else {
        TAP_IS(reneg, limit + 1, "%s: s_client printed RENEGOTIATING limit+1 times", what);
        if (!TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
                    "%s: the server's socket got TLSK_ERENEG_LIMIT (%s)", what,
                    tlsk_err_name(st.last_sock_err))) {
            tap_diag("  detail: %s", st.detail);
        }
        TAP_OK(p_count(g_out, "hello") == 0 && st.closes == 1,
               "%s: the connection was closed (no echo afterwards, closes %d)", what, st.closes);
        TAP_OK(strstr(st.detail, "renegotiation") != NULL, "%s: the detail says why (%s)", what,
               st.detail);
    }
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-3: limit 1, window 1 s. */
static void rl_window(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 1, 1, NULL);
    int reneg;

    if (!TAP_OK(p_srv_start(&st, ctx), "RL-3: server")) {
        tlsk_context_free(ctx);
        return;
    }
    r_lines(&st, 3, "1.5", false);
    reneg = p_count(g_out, "RENEGOTIATING");
    TAP_OK(reneg == 3 && st.sock_errors == 0 && p_count(g_out, "hello") >= 1,
           "RL-3 limit 1 window 1 s: R, 1.5 s, R, 1.5 s, R: no error (%d, %s)", reneg,
           tlsk_err_name(st.last_sock_err));
    p_reset_counts(&st);
    r_lines(&st, 2, "0.3", false);
    TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
           "RL-3: R then R 0.3 s later: TLSK_ERENEG_LIMIT (%s)", tlsk_err_name(st.last_sock_err));
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-4: gnutls-cli --inline-commands. */
static void rl_gnutls(int n)
{
    char what[96], script[1024];
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 3, 600, NULL);

    snprintf(what, sizeof what, "RL-4 gnutls-cli, %d ^renegotiate^ lines (limit 3)", n);
    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    snprintf(script, sizeof script,
             "(sleep 1; for i in $(seq %d); do echo '^renegotiate^'; sleep 0.5; done; echo hello; "
             "sleep 1.5) | timeout 30 gnutls-cli -p $P --x509cafile $F/ca1-cert.pem localhost "
             "--inline-commands --priority NORMAL:-VERS-ALL:+VERS-TLS1.2",
             n);
    p_run_peer(script, st.port, 40, g_out, sizeof g_out);
    if (n <= 3) {
        if (!TAP_OK(st.sock_errors == 0 && p_count(g_out, "hello") >= 1,
                    "%s: renegotiations accepted, echo works (%s)", what,
                    tlsk_err_name(st.last_sock_err))) {
            tap_diag("  %.800s", g_out);
        }
    } else {
        if (!TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
                    "%s: the 4th triggers TLSK_ERENEG_LIMIT (%s)", what,
                    tlsk_err_name(st.last_sock_err))) {
            tap_diag("  %.800s", g_out);
        }
    }
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-5: no allow flag. */
static void rl_refused(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, 0, NULL, 0, 0, 0, NULL);
    const char *what = "RL-5 one R without TLSK_ALLOW_RENEGOTIATION";

    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    r_lines(&st, 1, "1", true);
    if (h_expect_ktls()) {
        TAP_OK(st.off.tx.mode == TLSK_MODE_KERNEL && st.off.rx.mode == TLSK_MODE_KERNEL &&
                   st.kernel_tx && st.kernel_rx,
               "%s: offloaded both ways", what);
    } else {
        TAP_OK(st.off.tx.mode == TLSK_MODE_USERSPACE, "%s: userspace natively (%s)", what,
               tlsk_reason_name(st.off.tx.reason));
    }
    if (!TAP_OK(strstr(g_out, "warning no_renegotiation") != NULL,
                "%s: s_client -msg shows a warning no_renegotiation from the server (%s)", what,
                h_expect_ktls() ? "sent through the kernel" : "OpenSSL's own refusal")) {
        tap_diag("  %.1500s", g_out);
    }
    TAP_IS(p_count(g_out, "RENEGOTIATING"), 1, "%s: one RENEGOTIATING", what);
    TAP_OK(st.last_sock_err != TLSK_ERENEG_LIMIT,
           "%s: the connection ends without RENEG_LIMIT (%s)", what,
           tlsk_err_name(st.last_sock_err));
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-5, gnutls-cli retrying after each warning: offloaded, the limit cuts it off. */
static void rl_refused_gnutls(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, 0, NULL, 0, 3, 600, NULL);
    const char *what = "RL-5 gnutls-cli one ^renegotiate^, offloaded";

    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    p_run_peer("(sleep 1; echo '^renegotiate^'; sleep 3) | timeout 20 gnutls-cli -p $P "
             "--x509cafile $F/ca1-cert.pem localhost --inline-commands "
             "--priority NORMAL:-VERS-ALL:+VERS-TLS1.2",
             st.port, 30, g_out, sizeof g_out);
    TAP_IS(p_count(g_out, "Received alert [100]"), 3, "%s: exactly 3 no_renegotiation warnings", what);
    TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
           "%s: then TLSK_ERENEG_LIMIT (%s)", what, tlsk_err_name(st.last_sock_err));
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

/* A flood of R lines with a healthy connection alongside. */
struct healthy {
    int port;
    int rc;
    size_t len;
};

static void *healthy_client(void *arg)
{
    struct healthy *h = arg;
    struct tlsk_context *c = h_client_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16];
    static unsigned char buf[65536], got[65536];

    snprintf(port, sizeof port, "%d", h->port);
    h->rc = c ? tlsk_connect(&s, c, "localhost", port, NULL) : -ENOMEM;
    if (h->rc == 0) {
        h->rc = h_handshake(s);
    }
    for (size_t off = 0; h->rc == 0 && off < h->len; off += sizeof buf) {
        /* Write a chunk, read its echo, pause: the exchange spans the flood. */
        h_pattern(11, off, buf, sizeof buf);
        if ((h->rc = h_write_all(s, buf, sizeof buf)) != 0) {
            break;
        }
        if (h_read_full(s, got, sizeof got) != (ssize_t)sizeof got ||
            memcmp(buf, got, sizeof got) != 0) {
            h->rc = -EILSEQ;
            break;
        }
        usleep(20 * 1000);
    }
    if (h->rc == 0) {
        h->rc = h_shutdown(s);
    }
    if (h->rc == 0) {
        h->rc = (int)h_read_some(s, got, sizeof got);
    }
    tlsk_socket_free(s);
    tlsk_context_free(c);
    return NULL;
}

static void rl_flood(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 3, 600, NULL);
    struct healthy h = { .len = 64 * 65536 };
    pthread_t t;

    if (!TAP_OK(p_srv_start(&st, ctx), "flood: server")) {
        tlsk_context_free(ctx);
        return;
    }
    h.port = st.port;
    h_spawn(&t, healthy_client, &h);
    r_lines(&st, 30, "0.05", false);
    for (int i = 0; i < 3000; i++) {
        p_spin(10);
        if (pthread_tryjoin_np(t, NULL) == 0) {
            goto joined;
        }
    }
    pthread_join(t, NULL);
joined:
    TAP_OK(p_count(g_out, "RENEGOTIATING") <= 4, "flood: s_client got at most 4 renegotiations in (%d)",
           p_count(g_out, "RENEGOTIATING"));
    TAP_OK(st.last_sock_err == TLSK_ERENEG_LIMIT, "flood: the attacker was cut off with "
           "TLSK_ERENEG_LIMIT (%s)", tlsk_err_name(st.last_sock_err));
    TAP_IS(st.sock_errors, 1, "flood: only the attacking connection failed");
    if (!TAP_OK(h.rc == 0, "flood: the concurrent connection echoed 4 MiB intact and closed cleanly")) {
        tap_diag("  %s", tlsk_err_name(h.rc));
    }
    p_srv_stop(&st);
    tlsk_context_free(ctx);
}

int main(void)
{
    alarm(900);
    p_peer_setup();
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    if (!p_have("openssl")) {
        tap_skip_all("openssl not installed");
    }
    rl_limit(3, 3);
    rl_limit(3, 4);
    rl_limit(0, 1);
    rl_limit(1, 2);
    rl_limit(2, 3);
    rl_limit(5, 6);
    rl_window();
    rl_refused();
    if (p_have("gnutls-cli")) {
        rl_gnutls(3);
        rl_gnutls(4);
        if (h_expect_ktls()) {
            rl_refused_gnutls();
        }
    }
    rl_flood();
    p_peer_teardown();
    return tap_done();
}

/*
 * test_reneg_peers.c - client-initiated renegotiation against a tlsk server (NODE-SEMANTICS
 * 1.7 RL-1 to RL-5, D7, 4.3):
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
#include "tap.h"

/* ---------------------------------------------------------------------------------------- */
/* An evented tlsk echo server on the built-in loop, and peers run by /bin/sh                */

static struct tlsk_loop *g_loop;
static char g_tmp[256];

struct srv {
    struct tlsk_server *srv;
    int port;
    int secure, client_errors, sock_errors, closes, reused;
    int last_client_err, last_sock_err;
    struct tlsk_offload off;
    bool kernel_tx, kernel_rx;
    size_t echoed;
    int closed;
    char detail[256];
};

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct srv *st = ud;
    st->echoed += len;
    tlsk_socket_send(s, buf, len);
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err;
    (void)ud;
    tlsk_socket_end(s);
}

static void on_sock_error(struct tlsk_socket *s, int err, void *ud)
{
    struct srv *st = ud;
    st->sock_errors++;
    st->last_sock_err = err;
    snprintf(st->detail, sizeof st->detail, "%s", tlsk_socket_error_detail(s));
}

static void on_sock_close(struct tlsk_socket *s, void *ud)
{
    struct srv *st = ud;
    (void)s;
    st->closes++;
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct srv *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .error = on_sock_error,
                                                     .close = on_sock_close };
    (void)srv;
    st->secure++;
    st->off = tlsk_socket_offload(s);
    st->kernel_tx = h_kernel_has(tlsk_socket_fd(s), true, NULL, NULL);
    st->kernel_rx = h_kernel_has(tlsk_socket_fd(s), false, NULL, NULL);
    st->reused += tlsk_socket_session_reused(s) == 1;
    tlsk_socket_set_data(s, st);
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    struct srv *st = data;
    (void)srv;
    st->client_errors++;
    st->last_client_err = err;
    snprintf(st->detail, sizeof st->detail, "%s", s ? tlsk_socket_error_detail(s) : "");
}

static void on_srv_close(struct tlsk_server *srv, void *data)
{
    struct srv *st = data;
    (void)srv;
    st->closed = 1;
}

static void (*g_tick)(void); /* called between loop slices */

static long long spin_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Run the loop for about ms milliseconds (it returns at once when nothing is active). */
static void spin(int ms)
{
    for (int t = 0; t < ms; t += 10) {
        long long t0 = spin_now_us(), left;
        tlsk_loop_run(g_loop, 10);
        if (g_tick) {
            g_tick();
        }
        left = 10000 - (spin_now_us() - t0);
        if (left > 0) {
            usleep((useconds_t)left);
        }
    }
}

static bool srv_start(struct srv *st, struct tlsk_context *ctx)
{
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = 10000 };
    struct tlsk_server_callbacks cb = { on_secure, on_client_error, on_srv_close };
    char host[64];

    memset(st, 0, sizeof *st);
    if (!ctx || tlsk_server_new(&st->srv, g_loop, &o, &cb, st) != 0) {
        return false;
    }
    if (tlsk_server_listen(st->srv, "127.0.0.1", "0", 16) != 0 ||
        tlsk_server_address(st->srv, host, sizeof host, &st->port) != 0) {
        return false;
    }
    return true;
}

static void srv_stop(struct srv *st)
{
    if (!st->srv) {
        return;
    }
    tlsk_server_close(st->srv);
    for (int i = 0; i < 500 && !st->closed; i++) {
        spin(10);
    }
    st->srv = NULL;
}

__attribute__((unused)) static void reset_counts(struct srv *st)
{
    st->secure = st->client_errors = st->sock_errors = st->closes = st->reused = 0;
    st->last_client_err = st->last_sock_err = 0;
    st->echoed = 0;
    st->detail[0] = '\0';
}

/* Start script with sh -c ($P = port, $F = fixtures, $T = scratch dir), output (stdout and
 * stderr) into an unlinked file *fd.  Returns the pid or -errno. */
static pid_t spawn_peer(const char *script, int port, int *fd)
{
    char path[512], ps[16];
    pid_t p;

    snprintf(path, sizeof path, "%s/out-XXXXXX", g_tmp);
    *fd = mkstemp(path);
    if (*fd < 0) {
        return -errno;
    }
    unlink(path);
    snprintf(ps, sizeof ps, "%d", port);
    setenv("P", ps, 1);
    p = fork();
    if (p == 0) {
        setpgid(0, 0);
        dup2(*fd, 1);
        dup2(*fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    return p;
}

/* Spin the loop until the peer exits (at most timeout_s, then it is killed); collect its
 * output into out.  Returns the exit status, or -ETIMEDOUT. */
static int wait_peer(pid_t p, int fd, int timeout_s, char *out, size_t outlen)
{
    int st = 0, rc = -ETIMEDOUT;
    ssize_t n;

    for (int t = 0; p > 0 && t < timeout_s * 100; t++) {
        spin(10);
        if (waitpid(p, &st, WNOHANG) == p) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
    }
    if (p > 0 && rc == -ETIMEDOUT) {
        kill(-p, SIGKILL);
        waitpid(p, &st, 0);
    }
    spin(100);
    n = pread(fd, out, outlen - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

static int run_peer(const char *script, int port, int timeout_s, char *out, size_t outlen)
{
    int fd;
    pid_t p = spawn_peer(script, port, &fd);
    if (p < 0) {
        out[0] = '\0';
        return p;
    }
    return wait_peer(p, fd, timeout_s, out, outlen);
}

static int count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
        c++;
    }
    return c;
}

static bool have(const char *exe)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", exe);
    return system(cmd) == 0;
}

static struct tlsk_context *ctx_new(int version, unsigned flags,
                                    const struct tlsk_session_store *store, long timeout,
                                    int reneg_limit, int reneg_window, const char *ciphers)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = h_fixture("agent1-cert.pem");
    o.key_file = h_fixture("agent1-key.pem");
    o.min_version = o.max_version = version;
    o.flags = flags;
    o.session_store = store;
    o.session_timeout = timeout;
    o.client_reneg_limit = reneg_limit;
    o.client_reneg_window_s = reneg_window;
    o.ciphers = ciphers;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
        return NULL;
    }
    return c;
}

static void peer_setup(void)
{
    char fx[512];
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof g_tmp, "%s/tlsk-peers-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        tap_bail("mkdtemp");
    }
    snprintf(fx, sizeof fx, "%s", h_fixture(""));
    fx[strlen(fx) - 1] = '\0'; /* drop the trailing '/' */
    setenv("F", fx, 1);
    setenv("T", g_tmp, 1);
    if (tlsk_loop_new(&g_loop) != 0) {
        tap_bail("loop");
    }
}

static void peer_teardown(void)
{
    char cmd[300];
    tlsk_loop_free(g_loop);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) {
        /* leave it */
    }
}

static char g_out[1 << 20];

static const char *SC12 = "openssl s_client -connect 127.0.0.1:$P -CAfile $F/ca1-cert.pem -tls1_2";

/* s_client sending n R lines (gap seconds apart, first after 1 s), then "hello". */
static int r_lines(struct srv *st, int n, const char *gap, bool msg)
{
    char script[1024];
    snprintf(script, sizeof script,
             "(sleep 1; for i in $(seq %d); do echo R; sleep %s; done; echo hello; sleep 1.5) | "
             "timeout 30 %s %s",
             n, gap, SC12, msg ? "-msg" : "");
    return run_peer(script, st->port, 40, g_out, sizeof g_out);
}

static void rl_limit(int limit, int n)
{
    char what[128];
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0,
                                       limit == 0 ? -1 : limit, 600, NULL);
    int rc, reneg;

    snprintf(what, sizeof what, "RL limit %d, %d R lines", limit, n);
    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = r_lines(&st, n, "0.5", false);
    reneg = count(g_out, "RENEGOTIATING");
    TAP_IS(st.secure, 1, "%s: one secureConnection (renegotiations do not repeat it)", what);
    TAP_OK(st.off.tx.mode == TLSK_MODE_USERSPACE && st.off.rx.mode == TLSK_MODE_USERSPACE &&
               !st.kernel_tx && !st.kernel_rx,
           "%s: the connection stays in userspace (%s)", what, tlsk_reason_name(st.off.tx.reason));
    if (h_expect_ktls()) {
        TAP_IS(st.off.tx.reason, TLSK_REASON_RENEGOTIATION, "%s: reason renegotiation", what);
    }
    if (n <= limit) {
        TAP_OK(reneg == n && count(g_out, "hello") >= 1 && st.sock_errors == 0,
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
        TAP_OK(count(g_out, "hello") == 0 && st.closes == 1,
               "%s: the connection was closed (no echo afterwards, closes %d)", what, st.closes);
        TAP_OK(strstr(st.detail, "renegotiation") != NULL, "%s: the detail says why (%s)", what,
               st.detail);
    }
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-3: limit 1, window 1 s. */
static void rl_window(void)
{
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 1, 1, NULL);
    int reneg;

    if (!TAP_OK(srv_start(&st, ctx), "RL-3: server")) {
        tlsk_context_free(ctx);
        return;
    }
    r_lines(&st, 3, "1.5", false);
    reneg = count(g_out, "RENEGOTIATING");
    TAP_OK(reneg == 3 && st.sock_errors == 0 && count(g_out, "hello") >= 1,
           "RL-3 limit 1 window 1 s: R, 1.5 s, R, 1.5 s, R: no error (%d, %s)", reneg,
           tlsk_err_name(st.last_sock_err));
    reset_counts(&st);
    r_lines(&st, 2, "0.3", false);
    TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
           "RL-3: R then R 0.3 s later: TLSK_ERENEG_LIMIT (%s)", tlsk_err_name(st.last_sock_err));
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-4: gnutls-cli --inline-commands. */
static void rl_gnutls(int n)
{
    char what[96], script[1024];
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 3, 600, NULL);

    snprintf(what, sizeof what, "RL-4 gnutls-cli, %d ^renegotiate^ lines (limit 3)", n);
    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    snprintf(script, sizeof script,
             "(sleep 1; for i in $(seq %d); do echo '^renegotiate^'; sleep 0.5; done; echo hello; "
             "sleep 1.5) | timeout 30 gnutls-cli -p $P --x509cafile $F/ca1-cert.pem localhost "
             "--inline-commands --priority NORMAL:-VERS-ALL:+VERS-TLS1.2",
             n);
    run_peer(script, st.port, 40, g_out, sizeof g_out);
    if (n <= 3) {
        if (!TAP_OK(st.sock_errors == 0 && count(g_out, "hello") >= 1,
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
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-5: no allow flag. */
static void rl_refused(void)
{
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, 0, NULL, 0, 0, 0, NULL);
    const char *what = "RL-5 one R without TLSK_ALLOW_RENEGOTIATION";

    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
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
    TAP_IS(count(g_out, "RENEGOTIATING"), 1, "%s: one RENEGOTIATING", what);
    TAP_OK(st.last_sock_err != TLSK_ERENEG_LIMIT,
           "%s: the connection ends without RENEG_LIMIT (%s)", what,
           tlsk_err_name(st.last_sock_err));
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* RL-5, gnutls-cli retrying after each warning: offloaded, the limit cuts it off. */
static void rl_refused_gnutls(void)
{
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, 0, NULL, 0, 3, 600, NULL);
    const char *what = "RL-5 gnutls-cli one ^renegotiate^, offloaded";

    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    run_peer("(sleep 1; echo '^renegotiate^'; sleep 3) | timeout 20 gnutls-cli -p $P "
             "--x509cafile $F/ca1-cert.pem localhost --inline-commands "
             "--priority NORMAL:-VERS-ALL:+VERS-TLS1.2",
             st.port, 30, g_out, sizeof g_out);
    TAP_IS(count(g_out, "Received alert [100]"), 3, "%s: exactly 3 no_renegotiation warnings", what);
    TAP_OK(st.sock_errors == 1 && st.last_sock_err == TLSK_ERENEG_LIMIT,
           "%s: then TLSK_ERENEG_LIMIT (%s)", what, tlsk_err_name(st.last_sock_err));
    srv_stop(&st);
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
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_2, TLSK_ALLOW_RENEGOTIATION, NULL, 0, 3, 600, NULL);
    struct healthy h = { .len = 64 * 65536 };
    pthread_t t;

    if (!TAP_OK(srv_start(&st, ctx), "flood: server")) {
        tlsk_context_free(ctx);
        return;
    }
    h.port = st.port;
    pthread_create(&t, NULL, healthy_client, &h);
    r_lines(&st, 30, "0.05", false);
    for (int i = 0; i < 3000; i++) {
        spin(10);
        if (pthread_tryjoin_np(t, NULL) == 0) {
            goto joined;
        }
    }
    pthread_join(t, NULL);
joined:
    TAP_OK(count(g_out, "RENEGOTIATING") <= 4, "flood: s_client got at most 4 renegotiations in (%d)",
           count(g_out, "RENEGOTIATING"));
    TAP_OK(st.last_sock_err == TLSK_ERENEG_LIMIT, "flood: the attacker was cut off with "
           "TLSK_ERENEG_LIMIT (%s)", tlsk_err_name(st.last_sock_err));
    TAP_IS(st.sock_errors, 1, "flood: only the attacking connection failed");
    if (!TAP_OK(h.rc == 0, "flood: the concurrent connection echoed 4 MiB intact and closed cleanly")) {
        tap_diag("  %s", tlsk_err_name(h.rc));
    }
    srv_stop(&st);
    tlsk_context_free(ctx);
}

int main(void)
{
    alarm(900);
    peer_setup();
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    if (!have("openssl")) {
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
    if (have("gnutls-cli")) {
        rl_gnutls(3);
        rl_gnutls(4);
        if (h_expect_ktls()) {
            rl_refused_gnutls();
        }
    }
    rl_flood();
    peer_teardown();
    return tap_done();
}

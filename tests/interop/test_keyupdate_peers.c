/*
 * test_keyupdate_peers.c - TLS 1.3 KeyUpdate between tlsk and independent peers
 * (NODE-SEMANTICS 4.2 rows "KeyUpdate (TLS 1.3)" and "KeyUpdate from the server", 4.3;
 * KTLS-FACTS 1.9; lib/bridge.c):
 *  - openssl s_client -tls1_3 sending k and K against a tlsk server (auto policy: the kTLS
 *    tier has TX offloaded, RX userspace): echo continues, no bad_record_mac; natively the
 *    server answers K with its own KeyUpdate, with TX in the kernel it does not (the stream
 *    stays consistent);
 *  - gnutls-cli --inline-commands ^rekey1^ and ^rekey^;
 *  - 200 K lines interleaved with data lines, echo intact, while a concurrent tlsk
 *    connection on the same server keeps echoing (a peer flooding KeyUpdates);
 *  - openssl s_server -tls1_3 with k and K on stdin against a tlsk client: the client keeps
 *    reading; with TLSK_OFFLOAD_RX_TLS13 in the kTLS tier the client fails cleanly with
 *    TLSK_EKEYUPDATE instead of reading corrupted data.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

static void check_server_offload(struct srv *st, const char *what)
{
    if (h_expect_ktls()) {
        TAP_OK(st->off.tx.mode == TLSK_MODE_KERNEL && st->kernel_tx &&
                   st->off.rx.mode == TLSK_MODE_USERSPACE && !st->kernel_rx,
               "%s: server TX in kTLS, RX in userspace (%s)", what,
               tlsk_reason_name(st->off.rx.reason));
    }
}

static void ku_s_client(void)
{
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    const char *what = "s_client -tls1_3 k, K";
    int rc, theirs;

    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = run_peer("(sleep 1; echo k; sleep .5; echo K; sleep .5; echo ping; sleep 1.5) | "
                  "timeout 20 openssl s_client -connect 127.0.0.1:$P -CAfile $F/ca1-cert.pem "
                  "-tls1_3 -msg",
                  st.port, 30, g_out, sizeof g_out);
    TAP_IS(count(g_out, "KEYUPDATE"), 2, "%s: s_client sent both updates", what);
    if (!TAP_OK(count(g_out, "\nping") >= 1 && st.sock_errors == 0,
                "%s: the echo continues afterwards (exit %d, server %s)", what, rc,
                tlsk_err_name(st.last_sock_err))) {
        tap_diag("  %s", st.detail);
    }
    TAP_OK(strstr(g_out, "bad record mac") == NULL && strstr(g_out, "bad_record_mac") == NULL,
           "%s: no bad_record_mac", what);
    theirs = count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate");
    if (h_expect_ktls()) {
        TAP_IS(theirs, 0, "%s: TX offloaded: the server's answer to K is not sent "
               "(lib/bridge.c), and the stream stays consistent", what);
    } else {
        TAP_IS(theirs, 1, "%s: userspace: after K, s_client -msg shows the server's KeyUpdate",
               what);
    }
    check_server_offload(&st, what);
    srv_stop(&st);
    tlsk_context_free(ctx);
}

static void ku_gnutls(void)
{
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    const char *what = "gnutls-cli ^rekey1^, ^rekey^";
    int rc;

    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = run_peer("(sleep 1; echo '^rekey1^'; sleep .5; echo one; sleep .5; echo '^rekey^'; "
                  "sleep .5; echo two; sleep 1.5) | timeout 20 gnutls-cli -p $P --x509cafile "
                  "$F/ca1-cert.pem localhost --inline-commands "
                  "--priority NORMAL:-VERS-ALL:+VERS-TLS1.3",
                  st.port, 30, g_out, sizeof g_out);
    if (!TAP_OK(count(g_out, "\none") >= 1 && count(g_out, "\ntwo") >= 1 && st.sock_errors == 0,
                "%s: echo continues after both (exit %d, server %s)", what, rc,
                tlsk_err_name(st.last_sock_err))) {
        tap_diag("  %.800s | %s", g_out, st.detail);
    }
    TAP_OK(strstr(g_out, "Error") == NULL && strstr(g_out, "alert") == NULL,
           "%s: gnutls-cli reports no error or alert", what);
    check_server_offload(&st, what);
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* A concurrent healthy TLS 1.3 connection. */
struct healthy {
    int port;
    int rc;
    size_t len;
};

static void *healthy_client(void *arg)
{
    struct healthy *h = arg;
    struct tlsk_context *c = h_client_ctx(TLSK_TLS1_3, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16];
    static unsigned char buf[65536], got[65536];

    snprintf(port, sizeof port, "%d", h->port);
    h->rc = c ? tlsk_connect(&s, c, "localhost", port, NULL) : -ENOMEM;
    if (h->rc == 0) {
        h->rc = h_handshake(s);
    }
    for (size_t off = 0; h->rc == 0 && off < h->len; off += sizeof buf) {
        h_pattern(11, off, buf, sizeof buf);
        if ((h->rc = h_write_all(s, buf, sizeof buf)) != 0) {
            break;
        }
        if (h_read_full(s, got, sizeof got) != (ssize_t)sizeof got ||
            memcmp(buf, got, sizeof got) != 0) {
            h->rc = -EILSEQ;
            break;
        }
        usleep(30 * 1000);
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

static void ku_flood(int n)
{
    char what[96], script[1024];
    struct srv st;
    struct tlsk_context *ctx = ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    struct healthy h = { .len = 64 * 65536 };
    pthread_t t;
    int rc, lines = 0;

    snprintf(what, sizeof what, "%d K lines interleaved with data", n);
    if (!TAP_OK(srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    h.port = st.port;
    pthread_create(&t, NULL, healthy_client, &h);
    snprintf(script, sizeof script,
             "python3 -c \"import sys, time\n"
             "time.sleep(1)\n"
             "for i in range(%d):\n"
             "    sys.stdout.write('K\\n'); sys.stdout.flush(); time.sleep(0.01)\n"
             "    sys.stdout.write('line%%04d\\n' %% i); sys.stdout.flush(); time.sleep(0.01)\n"
             "time.sleep(2)\n\" | timeout 60 openssl s_client -connect 127.0.0.1:$P "
             "-CAfile $F/ca1-cert.pem -tls1_3",
             n);
    rc = run_peer(script, st.port, 90, g_out, sizeof g_out);
    for (int i = 0; i < n; i++) {
        char l[16];
        snprintf(l, sizeof l, "\nline%04d\n", i);
        lines += strstr(g_out, l) != NULL;
    }
    for (int i = 0; i < 1000 && pthread_tryjoin_np(t, NULL) != 0; i++) {
        spin(10);
    }
    /* s_client looks at the first byte of each stdin read: a K that arrives in the same read
     * as the line before it goes out as data (and is echoed).  Nearly all must be commands. */
    TAP_OK(count(g_out, "KEYUPDATE") >= n - n / 10, "%s: s_client sent (nearly) every update "
           "(%d)", what, count(g_out, "KEYUPDATE"));
    if (!TAP_OK(lines == n && st.sock_errors == 0,
                "%s: every data line echoed (%d of %d, exit %d, server %s)", what, lines, n, rc,
                tlsk_err_name(st.last_sock_err))) {
        tap_diag("  %s", st.detail);
    }
    TAP_OK(strstr(g_out, "bad record mac") == NULL, "%s: no bad_record_mac", what);
    if (!TAP_OK(h.rc == 0, "%s: a concurrent connection echoed 4 MiB intact meanwhile", what)) {
        tap_diag("  %s", tlsk_err_name(h.rc));
    }
    check_server_offload(&st, what);
    srv_stop(&st);
    tlsk_context_free(ctx);
}

/* s_server sending k and K to a tlsk client. */
struct client {
    int port;
    unsigned flags;
    int rc;       /* reading up to "hello" */
    int end_rc;
    struct tlsk_offload off;
    bool kernel_rx;
    char detail[256];
    uint64_t key_updates;
};

static void *ku_client(void *arg)
{
    struct client *c = arg;
    struct tlsk_context *ctx = h_client_ctx(TLSK_TLS1_3, NULL, TLSK_OFFLOAD_DEFAULT, c->flags);
    struct tlsk_socket *s = NULL;
    char port[16], buf[4096];
    size_t got = 0;

    snprintf(port, sizeof port, "%d", c->port);
    c->rc = -ECONNREFUSED;
    for (int i = 0; i < 300 && c->rc == -ECONNREFUSED; i++) {
        struct tlsk_socket_options o = { .servername = "localhost" };
        c->rc = tlsk_connect(&s, ctx, "127.0.0.1", port, &o);
        if (c->rc == -ECONNREFUSED) {
            usleep(50 * 1000);
        }
    }
    if (c->rc == 0) {
        c->rc = h_handshake(s);
    }
    if (c->rc == 0) {
        c->off = tlsk_socket_offload(s);
        c->kernel_rx = h_kernel_has(tlsk_socket_fd(s), false, NULL, NULL);
    }
    while (c->rc == 0) {
        ssize_t n = h_read_some(s, buf + got, sizeof buf - 1 - got);
        if (n <= 0) {
            c->rc = n == 0 ? -EPIPE : (int)n;
            break;
        }
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "hello\n")) {
            break;
        }
    }
    snprintf(c->detail, sizeof c->detail, "%s", tlsk_socket_error_detail(s));
    if (c->rc == 0) {
        c->end_rc = h_write_all(s, "bye\n", 4);
        if (c->end_rc == 0) {
            usleep(300 * 1000);
            c->end_rc = h_shutdown(s);
        }
    }
    c->key_updates = s ? tlsk_socket_key_updates(s) : 0;
    tlsk_socket_free(s);
    tlsk_context_free(ctx);
    return NULL;
}

static void ku_s_server(unsigned flags)
{
    char what[96];
    struct client c = { .flags = flags };
    pthread_t t;
    int port, lfd = h_listen(&port), rc;
    bool forced = (flags & TLSK_OFFLOAD_RX_TLS13) != 0;

    snprintf(what, sizeof what, "s_server -tls1_3 k, K -> tlsk client%s",
             forced ? " (TLSK_OFFLOAD_RX_TLS13)" : "");
    int ofd;
    pid_t pid;

    close(lfd);
    c.port = port;
    pid = spawn_peer("(sleep 2; echo k; sleep .5; echo K; sleep .5; echo hello; sleep 2) | "
                  "timeout 20 openssl s_server -accept $P -tls1_3 -cert $F/agent1-cert.pem "
                  "-key $F/agent1-key.pem -msg -naccept 1",
                  port, &ofd);
    pthread_create(&t, NULL, ku_client, &c);
    rc = wait_peer(pid, ofd, 30, g_out, sizeof g_out);
    pthread_join(t, NULL);
    /* With receive forced into the kernel the client gives up after the first. */
    if (!TAP_OK(count(g_out, ">>> TLS 1.3, Handshake [length 0005], KeyUpdate") ==
                    (forced && h_expect_ktls() ? 1 : 2),
                "%s: s_server sent %s (exit %d)", what,
                forced && h_expect_ktls() ? "its first update" : "both updates", rc)) {
        tap_diag("  %.600s", g_out);
    }
    if (forced && h_expect_ktls()) {
        TAP_OK(c.off.rx.mode == TLSK_MODE_KERNEL && c.kernel_rx, "%s: client RX in kTLS", what);
        if (!TAP_OK(c.rc == TLSK_EKEYUPDATE,
                    "%s: the read fails cleanly with TLSK_EKEYUPDATE (%s)", what,
                    tlsk_err_name(c.rc))) {
            tap_diag("  %s", c.detail);
        }
        TAP_OK(strstr(c.detail, "KeyUpdate") != NULL, "%s: the detail names it (%s)", what,
               c.detail);
    } else {
        if (!TAP_OK(c.rc == 0, "%s: the client kept reading up to \"hello\" (%s)", what,
                    tlsk_err_name(c.rc))) {
            tap_diag("  %s", c.detail);
        }
        TAP_OK(c.end_rc == 0 && strstr(g_out, "bye") != NULL,
               "%s: s_server received the client's reply (%s)", what, tlsk_err_name(c.end_rc));
        if (h_expect_ktls()) {
            TAP_OK(c.off.tx.mode == TLSK_MODE_KERNEL && c.off.rx.mode == TLSK_MODE_USERSPACE,
                   "%s: client TX in kTLS, RX userspace (%s)", what,
                   tlsk_reason_name(c.off.rx.reason));
            TAP_IS(count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 0,
                   "%s: TX offloaded: the client's answer to K is not sent", what);
        } else {
            TAP_IS(count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 1,
                   "%s: userspace: s_server logs the client's KeyUpdate after K", what);
        }
        TAP_OK(strstr(g_out, "bad record mac") == NULL && strstr(g_out, "alert") == NULL,
               "%s: no alert at s_server", what);
    }
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
    ku_s_client();
    if (have("gnutls-cli")) {
        ku_gnutls();
    }
    if (have("python3")) {
        ku_flood(h_expect_ktls() ? 100 : 200);
    }
    ku_s_server(0);
    ku_s_server(TLSK_OFFLOAD_RX_TLS13);
    peer_teardown();
    return tap_done();
}

/*
 * test_keyupdate_peers.c - TLS 1.3 KeyUpdate between tlsk and independent peers
 * (docs/NODE.md, KeyUpdate rows; docs/KERNEL.md §7; lib/bridge.c, lib/rekey.c):
 *  - openssl s_client -tls1_3 sending k and K against a tlsk server (auto policy): echo
 *    continues, no bad_record_mac.  Natively and on a kernel that re-keys (6.14+: TX and RX
 *    in the kernel) the server answers K with its own KeyUpdate, and tls_stat's
 *    TlsRxRekeyOk/TlsTxRekeyOk move by exactly the updates received/sent; on 6.1 (TX in the
 *    kernel, RX userspace) it does not answer and the stream stays consistent;
 *  - gnutls-cli --inline-commands ^rekey1^ and ^rekey^;
 *  - 200 K and 200 k lines interleaved with data lines, echo intact, while a concurrent tlsk
 *    connection on the same server keeps echoing (a peer flooding KeyUpdates);
 *  - openssl s_server -tls1_3 with k and K on stdin against a tlsk client: the client keeps
 *    reading and answers K; with TLSK_OFFLOAD_RX_TLS13 on 6.1 the client fails cleanly with
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
#include "peers.h"
#include "tap.h"

static char g_out[1 << 20];

/* Re-key counters of /proc/net/tls_stat (6.14+). */
struct rk {
    long long tx, rx, err;
};

static struct rk rk_now(void)
{
    struct rk r = { h_tls_stat("TlsTxRekeyOk"), h_tls_stat("TlsRxRekeyOk"),
                    h_tls_stat("TlsTxRekeyError") + h_tls_stat("TlsRxRekeyError") };
    return r;
}

/* Where the kernel re-keys: it took exactly tx transmit and rx receive keys since a. */
static void rk_check(struct rk a, long long tx, long long rx, const char *what)
{
    struct rk b;

    if (!h_kernel_rekey()) {
        return;
    }
    b = rk_now();
    TAP_OK(b.tx - a.tx == tx && b.rx - a.rx == rx && b.err == a.err,
           "%s: tls_stat TlsTxRekeyOk +%lld (want %lld), TlsRxRekeyOk +%lld (want %lld), no "
           "re-key errors",
           what, b.tx - a.tx, tx, b.rx - a.rx, rx);
}

static void check_server_offload(struct p_srv *st, const char *what)
{
    if (h_kernel_rekey()) {
        TAP_OK(st->off.tx.mode == TLSK_MODE_KERNEL && st->kernel_tx &&
                   st->off.rx.mode == TLSK_MODE_KERNEL && st->kernel_rx,
               "%s: server TX and RX in kTLS (the kernel re-keys)", what);
    } else if (h_expect_ktls()) {
        TAP_OK(st->off.tx.mode == TLSK_MODE_KERNEL && st->kernel_tx &&
                   st->off.rx.mode == TLSK_MODE_USERSPACE && !st->kernel_rx,
               "%s: server TX in kTLS, RX in userspace (%s)", what,
               tlsk_reason_name(st->off.rx.reason));
    }
}

static void ku_s_client(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    const char *what = "s_client -tls1_3 k, K";
    int rc, theirs;
    struct rk before = rk_now();

    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = p_run_peer("(sleep 1; echo k; sleep .5; echo K; sleep .5; echo ping; sleep 1.5) | "
                  "timeout 20 openssl s_client -connect 127.0.0.1:$P -CAfile $F/ca1-cert.pem "
                  "-tls1_3 -msg",
                  st.port, 30, g_out, sizeof g_out);
    TAP_IS(p_count(g_out, "KEYUPDATE"), 2, "%s: s_client sent both updates", what);
    if (!TAP_OK(p_count(g_out, "\nping") >= 1 && st.sock_errors == 0,
                "%s: the echo continues afterwards (exit %d, server %s)", what, rc,
                tlsk_err_name(st.last_sock_err))) {
        tap_diag("  %s", st.detail);
    }
    TAP_OK(strstr(g_out, "bad record mac") == NULL && strstr(g_out, "bad_record_mac") == NULL,
           "%s: no bad_record_mac", what);
    theirs = p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate");
    if (h_expect_ktls() && !h_kernel_rekey()) {
        TAP_IS(theirs, 0, "%s: TX offloaded before 6.14: the server's answer to K is not sent "
               "(lib/bridge.c), and the stream stays consistent", what);
    } else {
        TAP_IS(theirs, 1, "%s: after K, s_client -msg shows the server's KeyUpdate", what);
    }
    check_server_offload(&st, what);
    p_srv_stop(&st);
    rk_check(before, 1, 2, what);
    tlsk_context_free(ctx);
}

static void ku_gnutls(void)
{
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    const char *what = "gnutls-cli ^rekey1^, ^rekey^";
    int rc;
    struct rk before = rk_now();

    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    rc = p_run_peer("(sleep 1; echo '^rekey1^'; sleep .5; echo one; sleep .5; echo '^rekey^'; "
                  "sleep .5; echo two; sleep 1.5) | timeout 20 gnutls-cli -p $P --x509cafile "
                  "$F/ca1-cert.pem localhost --inline-commands "
                  "--priority NORMAL:-VERS-ALL:+VERS-TLS1.3",
                  st.port, 30, g_out, sizeof g_out);
    if (!TAP_OK(p_count(g_out, "\none") >= 1 && p_count(g_out, "\ntwo") >= 1 && st.sock_errors == 0,
                "%s: echo continues after both (exit %d, server %s)", what, rc,
                tlsk_err_name(st.last_sock_err))) {
        tap_diag("  %.800s | %s", g_out, st.detail);
    }
    TAP_OK(strstr(g_out, "Error") == NULL && strstr(g_out, "alert") == NULL,
           "%s: gnutls-cli reports no error or alert", what);
    check_server_offload(&st, what);
    p_srv_stop(&st);
    /* Two updates received; ^rekey1^ asks for the server's, which it sends. */
    rk_check(before, 1, 2, what);
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

/* The floods' driver: openssl s_client or s_server on pipes, each line on its stdin written
 * only once it has acted on the one before.  Both look at the first bytes of each read from
 * stdin (apps/s_client.c and apps/s_server.c, OpenSSL 3.0): a "K\n" and the line after it
 * that arrive in one read are one KeyUpdate, and the line is lost.  A pipeline with sleeps
 * between the writes let a slow host (user-mode Linux 6.1) merge them now and then: 399 of
 * 400 lines echoed, with tlsk at no fault.  The driver waits instead for s_client's
 * "KEYUPDATE" (stderr, unbuffered) or s_server's ">>> ... KeyUpdate" (-msg, flushed after
 * each message), and for the echo of each data line, so that every count is exact.  It stops
 * at the first wait that times out, says so, and prints everything the peer printed.
 *   flood.py client PORT CA N      N commands K, k, K..., each followed by a data line
 *   flood.py server PORT FIXTURES N  N commands k, K, k..., then "hello"; waits for "bye" */
static const char FLOOD_PY[] =
    "import os, subprocess, sys, threading, time\n"
    "mode, port, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])\n"
    "if mode == 'client':\n"
    "    argv = ['s_client', '-connect', '127.0.0.1:' + port, '-CAfile', path, '-tls1_3']\n"
    "    ready, done, cmds = b'Verify return code', b'KEYUPDATE\\n', b'Kk'\n"
    "else:\n"
    "    argv = ['s_server', '-accept', port, '-tls1_3', '-naccept', '1',\n"
    "            '-cert', path + '/agent1-cert.pem', '-key', path + '/agent1-key.pem']\n"
    "    ready, done, cmds = b'CIPHER is', b'>>> TLS 1.3, Handshake [length 0005], KeyUpdate', b'kK'\n"
    "p = subprocess.Popen(['openssl'] + argv + ['-msg'], stdin=subprocess.PIPE,\n"
    "                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
    "out = bytearray(); cv = threading.Condition(); eof = [False]\n"
    "def pump():\n"
    "    while True:\n"
    "        d = os.read(p.stdout.fileno(), 65536)\n"
    "        with cv:\n"
    "            out.extend(d); eof[0] = not d; cv.notify_all()\n"
    "        if not d:\n"
    "            return\n"
    "threading.Thread(target=pump, daemon=True).start()\n"
    "def wait(needle, count, what):\n"
    "    end = time.time() + 20\n"
    "    with cv:\n"
    "        while out.count(needle) < count and not eof[0] and time.time() < end:\n"
    "            cv.wait(end - time.time())\n"
    "        if out.count(needle) < count:\n"
    "            out.extend(b'\\ndriver: gave up waiting for ' + what + b'\\n')\n"
    "            return False\n"
    "        return True\n"
    "def send(line):\n"
    "    p.stdin.write(line + b'\\n'); p.stdin.flush()\n"
    "ok = wait(ready, 1, b'the handshake')\n"
    "for i in range(n if ok else 0):\n"
    "    send(cmds[i % 2:i % 2 + 1])\n"
    "    if not wait(done, i + 1, b'update %d' % i):\n"
    "        ok = False; break\n"
    "    time.sleep(0.005)\n"
    "    if mode == 'client':\n"
    "        send(b'line%04d' % i)\n"
    "        if not wait(b'line%04d\\n' % i, 1, b'the echo of line%04d' % i):\n"
    "            ok = False; break\n"
    "        time.sleep(0.005)\n"
    "if ok and mode == 'server':\n"
    "    send(b'hello')\n"
    "    wait(b'bye', 1, b'bye')\n"
    "time.sleep(0.5)\n"
    "p.stdin.close()\n"
    "try:\n"
    "    p.wait(20)\n"
    "except subprocess.TimeoutExpired:\n"
    "    p.kill(); p.wait()\n"
    "with cv:\n"
    "    while not eof[0]:\n"
    "        cv.wait(5)\n"
    "    sys.stdout.write(out.decode('latin-1'))\n"
    "sys.exit(p.returncode)\n";

/* Writes the floods' driver to $T/flood.py. */
static bool flood_driver(void)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/flood.py", p_sh_tmp);
    f = fopen(path, "w");
    if (!f) {
        return false;
    }
    return (fputs(FLOOD_PY, f) >= 0) & (fclose(f) == 0);
}

/* n K and n k lines, each followed by a data line. */
static void ku_flood(int n)
{
    char what[96], script[512];
    struct p_srv st;
    struct tlsk_context *ctx = p_ctx_new(TLSK_TLS1_3, 0, NULL, 0, 0, 0, NULL);
    struct healthy h = { .len = 64 * 65536 };
    struct rk before = rk_now();
    pthread_t t;
    int rc, lines = 0, sent, answered;

    snprintf(what, sizeof what, "%d K and %d k lines interleaved with data", n, n);
    if (!TAP_OK(p_srv_start(&st, ctx), "%s: server", what)) {
        tlsk_context_free(ctx);
        return;
    }
    h.port = st.port;
    h_spawn(&t, healthy_client, &h);
    snprintf(script, sizeof script, "timeout 100 python3 $T/flood.py client $P $F/ca1-cert.pem %d",
             2 * n);
    rc = p_run_peer(script, st.port, 120, g_out, sizeof g_out);
    for (int i = 0; i < 2 * n; i++) {
        char l[16];
        snprintf(l, sizeof l, "\nline%04d\n", i);
        lines += strstr(g_out, l) != NULL;
    }
    for (int i = 0; i < 1000 && pthread_tryjoin_np(t, NULL) != 0; i++) {
        p_spin(10);
    }
    /* -msg shows exactly which KeyUpdates went each way. */
    sent = p_count(g_out, ">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    answered = p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate");
    TAP_OK(sent == 2 * n, "%s: s_client sent every update (%d)", what, sent);
    if (!TAP_OK(lines == 2 * n && st.sock_errors == 0,
                "%s: every data line echoed (%d of %d, exit %d, server %s)", what, lines, 2 * n,
                rc, tlsk_err_name(st.last_sock_err))) {
        const char *d = strstr(g_out, "driver:");
        tap_diag("  %s | %.80s", st.detail, d ? d : "(the driver saw every echo)");
    }
    TAP_OK(strstr(g_out, "bad record mac") == NULL, "%s: no bad_record_mac", what);
    if (!h_expect_ktls() || h_kernel_rekey()) {
        TAP_IS(answered, n, "%s: the server answered every K", what);
    }
    if (!TAP_OK(h.rc == 0, "%s: a concurrent connection echoed 4 MiB intact meanwhile", what)) {
        tap_diag("  %s", tlsk_err_name(h.rc));
    }
    check_server_offload(&st, what);
    p_srv_stop(&st);
    rk_check(before, answered, sent, what);
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
    /* Receive forced into a kernel that cannot re-key: the client gives up at the first. */
    bool forced = (flags & TLSK_OFFLOAD_RX_TLS13) != 0 && !h_kernel_rekey();
    struct rk before = rk_now();

    snprintf(what, sizeof what, "s_server -tls1_3 k, K -> tlsk client%s",
             flags & TLSK_OFFLOAD_RX_TLS13 ? " (TLSK_OFFLOAD_RX_TLS13)" : "");
    int ofd;
    pid_t pid;

    close(lfd);
    c.port = port;
    pid = p_spawn_peer("(sleep 2; echo k; sleep .5; echo K; sleep .5; echo hello; sleep 2) | "
                  "timeout 20 openssl s_server -accept $P -tls1_3 -cert $F/agent1-cert.pem "
                  "-key $F/agent1-key.pem -msg -naccept 1",
                  port, &ofd);
    h_spawn(&t, ku_client, &c);
    rc = p_wait_peer(pid, ofd, 30, g_out, sizeof g_out);
    pthread_join(t, NULL);
    /* With receive forced into the kernel the client gives up after the first. */
    if (!TAP_OK(p_count(g_out, ">>> TLS 1.3, Handshake [length 0005], KeyUpdate") ==
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
        if (h_kernel_rekey()) {
            TAP_OK(c.off.tx.mode == TLSK_MODE_KERNEL && c.off.rx.mode == TLSK_MODE_KERNEL &&
                       c.kernel_rx,
                   "%s: client TX and RX in kTLS (the kernel re-keys)", what);
            TAP_IS(p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 1,
                   "%s: s_server logs the client's KeyUpdate after K, sent through the kernel",
                   what);
            rk_check(before, 1, 2, what);
        } else if (h_expect_ktls()) {
            TAP_OK(c.off.tx.mode == TLSK_MODE_KERNEL && c.off.rx.mode == TLSK_MODE_USERSPACE,
                   "%s: client TX in kTLS, RX userspace (%s)", what,
                   tlsk_reason_name(c.off.rx.reason));
            TAP_IS(p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 0,
                   "%s: TX offloaded: the client's answer to K is not sent", what);
        } else {
            TAP_IS(p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 1,
                   "%s: userspace: s_server logs the client's KeyUpdate after K", what);
        }
        TAP_OK(strstr(g_out, "bad record mac") == NULL && strstr(g_out, "alert") == NULL,
               "%s: no alert at s_server", what);
    }
}

/* s_server sending n k and n K to a tlsk client (auto policy), then "hello": the client
 * keeps reading, answers every K, and on a re-keying kernel every update moves its kernel. */
static void ku_s_server_flood(int n)
{
    char what[96], script[256];
    struct client c = { 0 };
    struct rk before = rk_now();
    pthread_t t;
    int port, lfd = h_listen(&port), rc, sent, answered, ofd;
    pid_t pid;

    snprintf(what, sizeof what, "s_server sending %d k and %d K -> tlsk client", n, n);
    close(lfd);
    c.port = port;
    snprintf(script, sizeof script, "timeout 80 python3 $T/flood.py server $P $F %d", 2 * n);
    pid = p_spawn_peer(script, port, &ofd);
    h_spawn(&t, ku_client, &c);
    rc = p_wait_peer(pid, ofd, 90, g_out, sizeof g_out);
    pthread_join(t, NULL);
    sent = p_count(g_out, ">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    answered = p_count(g_out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate");
    if (!TAP_OK(sent == 2 * n, "%s: s_server sent every update (%d, exit %d)", what, sent, rc)) {
        const char *d = strstr(g_out, "driver:");
        tap_diag("  %.80s", d ? d : "");
    }
    if (!TAP_OK(c.rc == 0 && c.end_rc == 0 && strstr(g_out, "bye") != NULL,
                "%s: the client read up to \"hello\" and s_server got its reply (%s, %s)", what,
                tlsk_err_name(c.rc), tlsk_err_name(c.end_rc))) {
        tap_diag("  %s", c.detail);
    }
    TAP_OK(strstr(g_out, "bad record mac") == NULL && strstr(g_out, "alert") == NULL,
           "%s: no alert at s_server", what);
    if (!h_expect_ktls() || h_kernel_rekey()) {
        TAP_IS(answered, n, "%s: the client answered every K", what);
    }
    if (h_kernel_rekey()) {
        TAP_OK(c.off.rx.mode == TLSK_MODE_KERNEL && c.off.tx.mode == TLSK_MODE_KERNEL,
               "%s: client TX and RX in kTLS", what);
        rk_check(before, answered, sent, what);
    }
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
    bool py = p_have("python3") && TAP_OK(flood_driver(), "the floods' driver written to $T");

    ku_s_client();
    if (p_have("gnutls-cli")) {
        ku_gnutls();
    }
    if (py) {
        ku_flood(200);
    }
    ku_s_server(0);
    ku_s_server(TLSK_OFFLOAD_RX_TLS13);
    if (py) {
        ku_s_server_flood(200);
    }
    p_peer_teardown();
    return tap_done();
}

/*
 * test_proxy.c - tools/tlsk-proxy against real peers and backends, in both tiers.
 *
 *   P1  s_client (TLS 1.2 and 1.3) -> tlsk-proxy -> socat TCP-LISTEN,fork EXEC:cat: byte-exact
 *       echo; the proxy's log names the mode ("mode splice" when the kernel holds both
 *       directions, "mode copy" natively) and /proc/net/tls_stat moved in the kernel tier
 *   P2  curl --cacert ca1 https://localhost:P/file.bin -> tlsk-proxy -> python3 -m http.server
 *   P3  half-close: a tlsk client sends, then close_notify; the backend (socat SYSTEM
 *       "cat >/dev/null; echo done") only answers after EOF: the client still gets "done" and
 *       then the proxy's close_notify
 *   P4  backend down: the client's connection ends with close_notify, the proxy logs it, keeps
 *       serving, and its descriptor count returns to where it was
 *   P5  SNI: --sni-cert serves a.example.com's certificate, --sni routes exact and wildcard names
 *   P6  PROXY protocol v2 to a unix-socket backend: addresses, ALPN, authority, SSL TLVs
 *   P7  --origin to openssl s_server -www: ALPN, verification, and session reuse on the second
 *       upstream connection ("Reused," in s_server's page, "session reused" in the log)
 *   P8  plain client -> --origin -> tlsk-proxy terminator -> socat echo: bulk byte-exact, and
 *       the client's EOF travels through both proxies and back
 *   P9  --origin with the upstream down
 * Hostile clients (issue 10):
 *   P10 records of random bytes after the handshake: the client reads the fatal alert
 *       (bad_record_mac), then FIN, never a reset (the proxy closes lingering)
 *   P11 a client that closes TCP without close_notify: the backend gets the bytes before it,
 *       then ECONNRESET (SO_LINGER 0), never a clean EOF
 *   P12 a client reset after the handshake, before the PROXY header (the backend's accept
 *       queue is kept full so the proxy's connect waits): no header at all, dropped
 *   P13 server names with an ANSI escape, a space, a '/': refused in the handshake, logged
 *       escaped (\x1b), no raw control byte in the log
 *   P14 1,100 TCP connections that never send a ClientHello: a real client is still served
 *       within seconds, and every idle one is cut at --handshake-timeout
 *   P15 --help: handshake timeout 10 s and idle timeout 300 s by default
 *
 * Every wait is bounded (poll timeouts, waitpid deadlines, a per-case alarm that kills all
 * children); every child is killed and reaped; ports come from binding port 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "tap.h"

/* ---------------------------------------------------------------------------------------- */
/* Fixtures of this test                                                                    */

struct proxy {
    struct p_kid k;
    int port;
    unsigned long conns; /* connections made to it so far (its log numbers them from 1) */
};

static int start_proxy(struct proxy *p, const char *what, const char **argv)
{
    memset(p, 0, sizeof *p);
    p->port = p_start_tool(&p->k, what, argv);
    return p->port;
}

/* Wait for the log line that ends connection number id ("conn N closed:" or a failure). */
static char *conn_end(struct proxy *p, unsigned long id)
{
    char n1[64], n2[64];
    long long end = p_now_ms() + p_to;
    snprintf(n1, sizeof n1, "conn %lu closed:", id);
    snprintf(n2, sizeof n2, "conn %lu from", id);
    for (;;) {
        char *l = p_log_line(&p->k, n1);
        if (*l) {
            return l;
        }
        free(l);
        l = p_log_line(&p->k, n2);
        if (strstr(l, "unavailable") || strstr(l, "failed")) {
            return l;
        }
        free(l);
        if (p_now_ms() > end) {
            return strdup("");
        }
        usleep(20000);
    }
}

static char *conn_start(struct proxy *p, unsigned long id)
{
    char n[64];
    snprintf(n, sizeof n, "conn %lu from", id);
    p_wait_log(&p->k, n, p_to);
    return p_log_line(&p->k, n);
}

/* The relay mode the log must name for a connection of this version. */
static const char *want_mode(int version, bool rx13)
{
    if (!p_ktls) {
        return "mode copy";
    }
    /* TLS 1.3 receive is in the kernel where it re-keys (6.14+), or with --tls13-rx. */
    return version == TLSK_TLS1_2 || rx13 || h_kernel_rekey() ? "mode splice"
                                                               : "mode splice tx, copy rx";
}

static void check_mode(const char *tn, struct proxy *p, unsigned long id, int version, bool rx13)
{
    char *l = conn_start(p, id);
    const char *m = want_mode(version, rx13);
    char *at = strstr(l, "mode ");
    if (!TAP_OK(at && strcmp(at, m) == 0, "%s: proxy log says \"%s\"", tn, m)) {
        tap_diag("  line: %s", l);
    }
    free(l);
}

static const char *vname(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : "1.2";
}

static struct proxy g_term;       /* the terminator: backend echo, SNI routes */
static struct p_kid g_echo, g_half, g_routed, g_http;
static int g_echo_port, g_http_port, g_dead_port;
static char g_www[PATH_MAX];

static int start_socat(struct p_kid *k, const char *what, const char *addr2)
{
    char a1[96];
    int port = p_free_port();
    const char *argv[] = { "socat", a1, addr2, NULL };
    snprintf(a1, sizeof a1, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port);
    if (p_kid_spawn(k, what, argv, NULL, NULL, P_KID_NULL, false) != 0 || !p_wait_port(port, k)) {
        return -1;
    }
    return port;
}

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                */

static void p1_sclient_echo(struct proxy *px, bool rx13, int version, size_t n)
{
    char tn[128], portarg[32];
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", p_ca,
                           "-verify_return_error", "-verify_hostname", "localhost",
                           "-servername", "localhost",
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet",
                           "-no_ign_eof", "-nocommands", NULL };
    unsigned char *data = malloc(n);
    struct p_buf out = { 0 };
    struct p_kid k;
    long long tx0 = h_tls_stat("TlsTxSw"), rx0 = h_tls_stat("TlsRxSw");
    unsigned long id = ++px->conns;
    int rc, st;

    snprintf(tn, sizeof tn, "P1 TLS %s s_client echo %zu bytes%s", vname(version), n,
             rx13 ? " (--tls13-rx)" : "");
    p_begin(tn);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", px->port);
    h_pattern(11, 0, data, n);
    rc = p_kid_spawn(&k, "openssl s_client", argv, NULL, NULL, P_KID_PIPE, true);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        free(data);
        return;
    }
    /* stdin stays open until the whole echo is back: at EOF s_client sends close_notify and
     * exits at once (-no_ign_eof). */
    rc = p_kid_io(&k, data, n, n, &out);
    st = p_kid_wait(&k, p_to);
    p_tis(rc, 0, "%s: s_client output ended", tn);
    if (!TAP_OK(out.len == n && memcmp(out.p, data, n) == 0, "%s: echo byte-exact", tn)) {
        tap_diag("  got %zu of %zu bytes", out.len, n);
        p_kid_diag(&k);
    }
    p_tis(st, 0, "%s: s_client exited 0", tn);
    check_mode(tn, px, id, version, rx13);
    char *l = conn_end(px, id), want[160];
    snprintf(want, sizeof want, "%zu bytes client->backend, %zu bytes backend->client; client "
             "sent close_notify; backend sent EOF", n, n);
    if (!TAP_OK(strstr(l, want) != NULL, "%s: proxy log: %s", tn, want)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    if (p_ktls) {
        long long tx1 = h_tls_stat("TlsTxSw"), rx1 = h_tls_stat("TlsRxSw");
        TAP_OK(tx1 > tx0, "%s: /proc/net/tls_stat TlsTxSw moved (%lld -> %lld)", tn, tx0, tx1);
        if (version == TLSK_TLS1_2 || rx13 || h_kernel_rekey()) {
            TAP_OK(rx1 > rx0, "%s: /proc/net/tls_stat TlsRxSw moved (%lld -> %lld)", tn, rx0,
                   rx1);
        }
    }
    p_kid_free(&k);
    p_buf_free(&out);
    free(data);
    alarm(0);
}

static void p2_curl(int version, size_t n)
{
    char tn[128], url[96], resolve[64], outp[PATH_MAX + 16];
    const char *argv[] = { "curl", "-sS", "--cacert", p_ca, "--resolve", resolve,
                           version == TLSK_TLS1_3 ? "--tlsv1.3" : "--tlsv1.2", "--tls-max",
                           version == TLSK_TLS1_3 ? "1.3" : "1.2", "-o", outp, url, NULL };
    struct p_kid k;
    unsigned long id = ++g_term.conns;
    int rc, st;

    snprintf(tn, sizeof tn, "P2 TLS %s curl GET %zu bytes via http.server", vname(version), n);
    p_begin(tn);
    /* Route by name: "localhost" goes to the echo backend, www.test.com to http.server. */
    snprintf(resolve, sizeof resolve, "www.test.com:%d:127.0.0.1", g_term.port);
    snprintf(url, sizeof url, "https://www.test.com:%d/file.bin", g_term.port);
    snprintf(outp, sizeof outp, "%s/curl.out", p_tmp);
    unlink(outp);
    rc = p_kid_spawn(&k, "curl", argv, NULL, NULL, P_KID_NULL, false);
    if (!TAP_OK(rc == 0, "%s: start curl", tn)) {
        return;
    }
    st = p_kid_wait(&k, p_to * 2);
    if (!p_tis(st, 0, "%s: curl exited 0", tn)) {
        p_kid_diag(&k);
    }
    int64_t bad = p_check_pattern_file(outp, 5, n);
    if (!TAP_OK(bad < 0, "%s: body byte-exact", tn)) {
        tap_diag("  first bad offset %lld", (long long)bad);
    }
    check_mode(tn, &g_term, id, version, false);
    char *l = conn_end(&g_term, id);
    TAP_OK(strstr(l, "backend sent EOF") != NULL, "%s: connection ended cleanly", tn);
    free(l);
    unlink(outp);
    p_kid_free(&k);
    alarm(0);
}

static void p3_half_close(int version)
{
    char tn[128], b[256];
    size_t len = 0;
    unsigned long id = ++g_term.conns;
    int rc;

    snprintf(tn, sizeof tn, "P3 TLS %s half-close: close_notify, then the backend answers",
             vname(version));
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(g_term.port, "half.test.com", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake with SNI half.test.com (wildcard certificate)", tn)) {
        return;
    }
    rc = h_write_all(s, "hello, then EOF\n", 16);
    p_tis(rc, 0, "%s: wrote a line", tn);
    rc = h_shutdown(s);
    p_tis(rc, 0, "%s: sent close_notify", tn);
    rc = p_tls_read_all(s, b, sizeof b, &len);
    if (!TAP_OK(strcmp(b, "done\n") == 0, "%s: still received the backend's answer", tn)) {
        tap_diag("  got \"%s\"", b);
    }
    if (!p_tis(rc, 0, "%s: then the proxy's close_notify (read 0, not %s)", tn,
             tlsk_err_name(rc))) {
        tap_diag("  %s", tlsk_socket_error_detail(s));
    }
    tlsk_socket_free(s);
    char *l = conn_end(&g_term, id);
    if (!TAP_OK(strstr(l, "client sent close_notify; backend sent EOF; close_notify sent"),
                "%s: log shows both half-closes", tn)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    alarm(0);
}

static void p4_backend_down(int version)
{
    char tn[128], b[256];
    size_t len = 0;
    unsigned long id = ++g_term.conns;
    int rc, before = p_fd_count(g_term.k.pid);

    snprintf(tn, sizeof tn, "P4 TLS %s backend down", vname(version));
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(g_term.port, "down.test.com", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    rc = p_tls_read_all(s, b, sizeof b, &len);
    p_tis(rc, 0, "%s: the client's connection ends with close_notify (%s)", tn,
        tlsk_err_name(rc));
    p_tis((long long)len, 0, "%s: and no data", tn);
    tlsk_socket_free(s);
    char *l = conn_end(&g_term, id);
    if (!TAP_OK(strstr(l, "unavailable: Connection refused"), "%s: proxy logged it", tn)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    /* The proxy keeps serving: one more connection to a live backend. */
    id = ++g_term.conns;
    s = p_tls_dial(g_term.port, "a.example.com", version, NULL, &rc);
    if (TAP_OK(s != NULL, "%s: next connection handshakes", tn)) {
        rc = p_tls_read_all(s, b, sizeof b, &len);
        TAP_OK(rc == 0 && strcmp(b, "routed-a\n") == 0, "%s: and is served", tn);
        tlsk_socket_free(s);
    }
    free(conn_end(&g_term, id));
    /* Connection threads close everything before logging the end; allow them to return. */
    long long end = p_now_ms() + 5000;
    int after;
    while ((after = p_fd_count(g_term.k.pid)) > before && p_now_ms() < end) {
        usleep(20000);
    }
    TAP_OK(after >= 0 && after <= before, "%s: no descriptor leaked (%d before, %d after)", tn,
           before, after);
    TAP_OK(p_kid_alive(&g_term.k), "%s: proxy still running", tn);
    alarm(0);
}

static void p5_sni(int version)
{
    char tn[128], b[256];
    size_t len = 0;
    int rc;

    snprintf(tn, sizeof tn, "P5 TLS %s SNI certificate and routing", vname(version));
    p_begin(tn);
    ++g_term.conns;
    struct tlsk_socket *s = p_tls_dial(g_term.port, "a.example.com", version, NULL, &rc);
    if (TAP_OK(s != NULL, "%s: a.example.com verifies (its own certificate served)", tn)) {
        rc = p_tls_read_all(s, b, sizeof b, &len);
        TAP_OK(rc == 0 && strcmp(b, "routed-a\n") == 0, "%s: routed to its backend (\"%s\")", tn,
               b);
        tlsk_socket_free(s);
    }
    free(conn_end(&g_term, g_term.conns));
    ++g_term.conns;
    s = p_tls_dial(g_term.port, "localhost", version, NULL, &rc);
    if (TAP_OK(s != NULL, "%s: localhost gets the default certificate", tn)) {
        rc = h_write_all(s, "ping\n", 5);
        size_t got = 0;
        while (rc == 0 && got < 5) {
            ssize_t n = h_read_some(s, b + got, 5 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
        TAP_OK(got == 5 && memcmp(b, "ping\n", 5) == 0, "%s: and the default backend (echo)",
               tn);
        h_shutdown(s);
        p_tls_read_all(s, b, sizeof b, &len);
        tlsk_socket_free(s);
    }
    free(conn_end(&g_term, g_term.conns));
    alarm(0);
}

static void p6_proxy_protocol(int version)
{
    char tn[128], path[PATH_MAX], bk[PATH_MAX + 8], b[256], ph[600];
    struct proxy pp;
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    int lfd, bfd = -1, rc;
    size_t len;

    snprintf(tn, sizeof tn, "P6 TLS %s PROXY v2 header to a unix backend", vname(version));
    p_begin(tn);
    snprintf(path, sizeof path, "%s/backend.sock", p_tmp);
    unlink(path);
    if (strlen(path) >= sizeof un.sun_path) {
        TAP_OK(0, "%s: scratch path too long for a unix socket", tn);
        return;
    }
    memcpy(un.sun_path, path, strlen(path));
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!TAP_OK(lfd >= 0 && bind(lfd, (struct sockaddr *)&un, sizeof un) == 0 &&
                    listen(lfd, 4) == 0,
                "%s: unix backend listening", tn)) {
        return;
    }
    snprintf(bk, sizeof bk, "unix:%s", path);
    const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                           "127.0.0.1:0", "--backend", bk, "--proxy-protocol", "--alpn",
                           "http/1.1", NULL };
    if (!TAP_OK(start_proxy(&pp, "tlsk-proxy --proxy-protocol", argv) > 0, "%s: proxy up", tn)) {
        close(lfd);
        p_kid_free(&pp.k);
        return;
    }
    struct tlsk_socket *s = p_tls_dial(pp.port, "localhost", version, "http/1.1", &rc);
    if (!TAP_OK(s != NULL, "%s: handshake with ALPN http/1.1", tn)) {
        goto out;
    }
    struct pollfd pf = { .fd = lfd, .events = POLLIN };
    if (poll(&pf, 1, p_to) == 1) {
        bfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    }
    if (!TAP_OK(bfd >= 0, "%s: proxy connected to the unix backend", tn)) {
        goto out;
    }
    /* Read the 16-byte fixed part, then the announced length. */
    size_t have = 0, need = 16;
    while (have < need) {
        struct pollfd q = { .fd = bfd, .events = POLLIN };
        if (poll(&q, 1, p_to) != 1) {
            break;
        }
        ssize_t n = read(bfd, ph + have, need - have);
        if (n <= 0) {
            break;
        }
        have += (size_t)n;
        if (have == 16) {
            need = 16 + (((unsigned char)ph[14] << 8) | (unsigned char)ph[15]);
            if (need > sizeof ph) {
                break;
            }
        }
    }
    static const unsigned char sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
    TAP_OK(have >= 16 && have == need && memcmp(ph, sig, 12) == 0 && ph[12] == 0x21 &&
               ph[13] == 0x11,
           "%s: PROXY v2 signature, PROXY command, TCP over IPv4 (%zu bytes)", tn, have);
    if (have >= 28 && have == need) {
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(tlsk_socket_fd(s), (struct sockaddr *)&me, &ml);
        unsigned sport = ((unsigned char)ph[24] << 8) | (unsigned char)ph[25];
        unsigned dport = ((unsigned char)ph[26] << 8) | (unsigned char)ph[27];
        TAP_OK(memcmp(ph + 16, "\x7f\0\0\1", 4) == 0 && sport == ntohs(me.sin_port) &&
                   dport == (unsigned)pp.port,
               "%s: source is the client (port %u), destination the listener (port %u)", tn,
               sport, dport);
        bool alpn = false, auth = false, ssl = false;
        for (size_t i = 28; i + 3 <= have;) {
            unsigned t = (unsigned char)ph[i], l = ((unsigned char)ph[i + 1] << 8) |
                                                  (unsigned char)ph[i + 2];
            const char *v = ph + i + 3;
            if (i + 3 + l > have) {
                break;
            }
            alpn |= t == 0x01 && l == 8 && memcmp(v, "http/1.1", 8) == 0;
            auth |= t == 0x02 && l == 9 && memcmp(v, "localhost", 9) == 0;
            ssl |= t == 0x20 && l > 5 && v[0] == 0x01 &&
                   memmem(v, l, version == TLSK_TLS1_3 ? "TLSv1.3" : "TLSv1.2", 7);
            i += 3 + l;
        }
        TAP_OK(alpn, "%s: TLV ALPN http/1.1", tn);
        TAP_OK(auth, "%s: TLV authority localhost (SNI)", tn);
        TAP_OK(ssl, "%s: TLV SSL with the client flag and version", tn);
    }
    /* Then plain data both ways, and the backend's close becomes close_notify. */
    rc = h_write_all(s, "ping", 4);
    len = 0;
    while (rc == 0 && len < 4) {
        struct pollfd q = { .fd = bfd, .events = POLLIN };
        if (poll(&q, 1, p_to) != 1) {
            break;
        }
        ssize_t n = read(bfd, b + len, 4 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    TAP_OK(len == 4 && memcmp(b, "ping", 4) == 0, "%s: client -> unix backend", tn);
    TAP_OK(write(bfd, "pong", 4) == 4, "%s: backend answers", tn);
    close(bfd);
    bfd = -1;
    rc = p_tls_read_all(s, b, sizeof b, &len);
    TAP_OK(rc == 0 && strcmp(b, "pong") == 0, "%s: client got \"pong\" then close_notify (%s)",
           tn, tlsk_err_name(rc));
out:
    if (s) {
        tlsk_socket_free(s);
    }
    if (bfd >= 0) {
        close(bfd);
    }
    close(lfd);
    unlink(path);
    p_kid_free(&pp.k);
    alarm(0);
}

/* Plain TCP exchange: send in (then SHUT_WR), collect everything until EOF. */
static int plain_xfer(int port, const void *in, size_t in_len, struct p_buf *out)
{
    int fd = p_connect_retry(port, NULL);
    size_t off = 0;
    bool shut = false;

    if (fd < 0) {
        return fd;
    }
    if (!out->cap) {
        out->cap = in_len + 65536;
        out->p = malloc(out->cap);
    }
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN | (off < in_len ? POLLOUT : 0) };
        if (off == in_len && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        int r = poll(&p, 1, p_to);
        if (r <= 0) {
            close(fd);
            return r == 0 ? -ETIMEDOUT : -errno;
        }
        if ((p.revents & POLLOUT) && off < in_len) {
            ssize_t n = write(fd, (const char *)in + off, in_len - off);
            if (n > 0) {
                off += (size_t)n;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            if (out->len == out->cap) {
                out->cap *= 2;
                out->p = realloc(out->p, out->cap);
            }
            ssize_t n = read(fd, out->p + out->len, out->cap - out->len);
            if (n == 0) {
                break;
            }
            if (n < 0 && errno != EAGAIN) {
                close(fd);
                return -errno;
            }
            if (n > 0) {
                out->len += (size_t)n;
            }
        }
    }
    close(fd);
    return 0;
}

static void p7_origin_sserver(int version, bool rx13)
{
    char tn[128], sport[16], up[32];
    const char *sargv[] = { "openssl", "s_server", "-accept", sport, "-cert", p_cert, "-key",
                            p_key, "-www", "-alpn", "http/1.1",
                            version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", NULL };
    struct p_kid srv;
    struct proxy org;
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";

    snprintf(tn, sizeof tn, "P7 TLS %s --origin to openssl s_server -www%s", vname(version),
             rx13 ? " (--tls13-rx: tickets arrive through kTLS RX)" : "");
    p_begin(tn);
    int port = p_free_port();
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(up, sizeof up, "127.0.0.1:%d", port);
    if (!TAP_OK(p_kid_spawn(&srv, "openssl s_server", sargv, NULL, NULL, P_KID_NULL, false) == 0 &&
                    p_wait_port(port, &srv),
                "%s: s_server up", tn)) {
        p_kid_free(&srv);
        return;
    }
    const char *argv[] = { "tlsk-proxy", "--origin", "--listen", "127.0.0.1:0", "--upstream",
                           up, "--servername", "localhost", "--ca", p_ca, "--alpn", "http/1.1",
                           rx13 ? "--tls13-rx" : NULL, NULL };
    if (!TAP_OK(start_proxy(&org, "tlsk-proxy --origin", argv) > 0, "%s: origin up", tn)) {
        goto out;
    }
    /* p_wait_port() above made one TCP connection to s_server that it answers with an error;
     * each request below is a fresh upstream connection. */
    for (int i = 1; i <= 3; i++) {
        struct p_buf out = { 0 };
        int rc = plain_xfer(org.port, req, sizeof req - 1, &out);
        if (out.p) {
            out.p[out.len < out.cap ? out.len : out.cap - 1] = 0;
        }
        bool ok = rc == 0 && out.p && strstr((char *)out.p, "HTTP/1.0 200 ok");
        if (!TAP_OK(ok, "%s: request %d answered through the origin", tn, i)) {
            tap_diag("  rc %d, %zu bytes", rc, out.len);
        }
        if (ok && i >= 2) {
            TAP_OK(strstr((char *)out.p, "Reused,") != NULL,
                   "%s: request %d resumed the upstream session (s_server: Reused)", tn, i);
        } else if (ok) {
            TAP_OK(strstr((char *)out.p, "New,") != NULL, "%s: first upstream session is new",
                   tn);
        }
        char *l = conn_end(&org, (unsigned long)i);
        char *s0 = conn_start(&org, (unsigned long)i);
        TAP_OK(strstr(s0, i == 1 ? "session new" : "session reused") && strstr(s0, "alpn "
                                                                                    "http/1.1"),
               "%s: origin log: session %s, alpn http/1.1", tn, i == 1 ? "new" : "reused");
        if (i == 1) {
            char *at = strstr(s0, "mode ");
            if (!TAP_OK(at && strcmp(at, want_mode(version, rx13)) == 0,
                        "%s: origin log says \"%s\"", tn, want_mode(version, rx13))) {
                tap_diag("  line: %s", s0);
            }
        }
        TAP_OK(strstr(l, "upstream sent close_notify") != NULL,
               "%s: upstream closed with close_notify", tn);
        free(l);
        free(s0);
        p_buf_free(&out);
    }
out:
    p_kid_free(&org.k);
    p_kid_free(&srv);
    alarm(0);
}

static void p8_origin_chain(int version, size_t n)
{
    char tn[128], up[32];
    struct proxy org;
    struct p_buf out = { 0 };
    unsigned char *data = malloc(n);

    snprintf(tn, sizeof tn, "P8 TLS %s plain -> --origin -> terminator -> echo, %zu bytes",
             vname(version), n);
    p_begin(tn);
    h_pattern(13, 0, data, n);
    snprintf(up, sizeof up, "127.0.0.1:%d", g_term.port);
    const char *argv[] = { "tlsk-proxy", "--origin", "--listen", "127.0.0.1:0", "--upstream",
                           up, "--servername", "localhost", "--ca", p_ca, "--tls-max",
                           vname(version), "--tls-min", vname(version), NULL };
    if (!TAP_OK(start_proxy(&org, "tlsk-proxy --origin (chain)", argv) > 0, "%s: origin up",
                tn)) {
        p_kid_free(&org.k);
        free(data);
        return;
    }
    ++g_term.conns;
    int rc = plain_xfer(org.port, data, n, &out);
    p_tis(rc, 0, "%s: exchange ended with EOF", tn);
    if (!TAP_OK(out.len == n && memcmp(out.p, data, n) == 0, "%s: echo byte-exact", tn)) {
        tap_diag("  got %zu of %zu", out.len, n);
    }
    char *l = conn_end(&org, 1);
    if (!TAP_OK(strstr(l, "upstream sent close_notify; client sent EOF; close_notify sent"),
                "%s: origin: client EOF -> close_notify, upstream close_notify -> EOF", tn)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    l = conn_end(&g_term, g_term.conns);
    TAP_OK(strstr(l, "client sent close_notify; backend sent EOF; close_notify sent") != NULL,
           "%s: terminator saw the same", tn);
    free(l);
    p_buf_free(&out);
    free(data);
    p_kid_free(&org.k);
    alarm(0);
}

/* --origin with the upstream down: the client's connection is closed, the origin logs it and
 * keeps its descriptors. */
static void p9_origin_down(void)
{
    char tn[] = "P9 --origin with the upstream down", up[32];
    struct proxy org;
    struct p_buf out = { 0 };

    p_begin(tn);
    snprintf(up, sizeof up, "127.0.0.1:%d", g_dead_port);
    const char *argv[] = { "tlsk-proxy", "--origin", "--listen", "127.0.0.1:0", "--upstream",
                           up, "--servername", "localhost", "--ca", p_ca, NULL };
    if (!TAP_OK(start_proxy(&org, "tlsk-proxy --origin (down)", argv) > 0, "%s: origin up",
                tn)) {
        p_kid_free(&org.k);
        return;
    }
    int before = p_fd_count(org.k.pid);
    for (int i = 1; i <= 3; i++) {
        int rc = plain_xfer(org.port, "hello", 5, &out);
        if (!TAP_OK(rc == 0 && out.len == 0, "%s: connection %d closed (EOF, no data)", tn, i)) {
            tap_diag("  rc %d (%s), %zu bytes", rc, tlsk_err_name(rc), out.len);
        }
        char *l = conn_end(&org, (unsigned long)i);
        TAP_OK(strstr(l, "unavailable: Connection refused") != NULL, "%s: logged", tn);
        free(l);
        p_buf_free(&out);
    }
    long long end = p_now_ms() + 5000;
    int after;
    while ((after = p_fd_count(org.k.pid)) > before && p_now_ms() < end) {
        usleep(20000);
    }
    TAP_OK(after >= 0 && after <= before, "%s: no descriptor leaked (%d before, %d after)", tn,
           before, after);
    p_kid_free(&org.k);
    alarm(0);
}

/* ---------------------------------------------------------------------------------------- */
/* Issue 10: hostile clients                                                                 */

/* A tlsk client to 127.0.0.1:port, handshake done, everything in userspace (so that raw bytes
 * written to its descriptor go out as they are).  insecure: no verification at all (for
 * server names no certificate carries).  NULL with *rc on failure. */
static struct tlsk_socket *dial_user(int port, const char *servername, int version,
                                     bool insecure, int *rc)
{
    struct tlsk_context_options o = { .ca_file = p_ca, .min_version = version,
                                      .max_version = version, .offload = TLSK_OFFLOAD_OFF,
                                      .flags = insecure ? TLSK_VERIFY_NONE_INSECURE : 0 };
    struct tlsk_context *c = NULL;
    struct tlsk_socket *s = NULL;
    char err[256];
    int fd;

    if ((*rc = tlsk_context_new(&c, &o, err, sizeof err)) != 0) {
        tap_diag("client context: %s", err);
        return NULL;
    }
    fd = p_connect_retry(port, NULL);
    if (fd < 0) {
        *rc = fd;
        tlsk_context_free(c);
        return NULL;
    }
    *rc = tlsk_socket_new_client(&s, c, fd, &(struct tlsk_socket_options){
                                                .servername = servername,
                                                .flags = TLSK_SOCKET_OWN_FD });
    tlsk_context_free(c);
    if (*rc != 0) {
        close(fd);
        return NULL;
    }
    if ((*rc = h_handshake(s)) != 0) {
        tlsk_socket_free(s);
        return NULL;
    }
    return s;
}

/* Send n records that look like application data but are random bytes (they fail
 * authentication), then read: the peer's fatal alert must arrive, then its FIN (read 0) and
 * not a reset.  Returns a description for the TAP line in why. */
static bool garbage_then_alert(struct tlsk_socket *s, int *alert, char *why, size_t whylen)
{
    unsigned char rec[5 + 64], b[4096];
    int fd = tlsk_socket_fd(s);
    ssize_t n;
    long long end;

    *alert = 0;
    for (int i = 0; i < 8; i++) {
        rec[0] = 23;
        rec[1] = 3;
        rec[2] = 3;
        rec[3] = 0;
        rec[4] = 64;
        h_pattern(77, (uint64_t)i * 64, rec + 5, 64);
        if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec) {
            break; /* the peer may have answered (and closed) already */
        }
    }
    do {
        n = h_read_some(s, b, sizeof b);
    } while (n > 0);
    *alert = (int)n;
    if (!TLSK_IS_ALERT(n)) {
        snprintf(why, whylen, "no alert: read gave %s", tlsk_err_name((int)n));
        return false;
    }
    /* Then the end of the TCP stream: FIN (0) after a lingering close, not ECONNRESET. */
    end = p_now_ms() + p_to;
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 200) < 0 || p_now_ms() > end) {
            snprintf(why, whylen, "alert %d, then nothing", (int)TLSK_ALERT_NUMBER(n));
            return false;
        }
        n = read(fd, b, sizeof b);
        if (n == 0) {
            snprintf(why, whylen, "alert %d, then FIN", TLSK_ALERT_NUMBER(*alert));
            return true;
        }
        if (n < 0 && errno != EAGAIN) {
            snprintf(why, whylen, "alert %d, then %s", TLSK_ALERT_NUMBER(*alert),
                     strerror(errno));
            return false;
        }
    }
}

static void p10_garbage(int version)
{
    char tn[128], why[128];
    int rc, alert;

    snprintf(tn, sizeof tn, "P10 TLS %s garbage records after the handshake", vname(version));
    p_begin(tn);
    unsigned long id = ++g_term.conns;
    struct tlsk_socket *s = dial_user(g_term.port, "localhost", version, false, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    bool ok = garbage_then_alert(s, &alert, why, sizeof why);
    TAP_OK(TLSK_IS_ALERT(alert) && TLSK_ALERT_NUMBER(alert) == 20,
           "%s: the client reads the proxy's alert bad_record_mac (%s)", tn,
           tlsk_err_name(alert));
    TAP_OK(ok, "%s: then FIN, not a reset: %s", tn, why);
    tlsk_socket_free(s);
    char *l = conn_end(&g_term, id);
    if (!TAP_OK(strstr(l, "error in tls read") != NULL, "%s: proxy logged the bad record", tn)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    alarm(0);
}

/* A TCP listener of our own on 127.0.0.1 (the backend), with the given backlog. */
static int own_listener(int backlog, int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int accept_within(int lfd, int ms)
{
    struct pollfd pf = { .fd = lfd, .events = POLLIN };
    if (poll(&pf, 1, ms) != 1) {
        return -1;
    }
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* Read from a plain socket until EOF or an error (bounded): the bytes, and how it ended
 * (0 for EOF, -errno). */
static int plain_read_end(int fd, char *b, size_t cap, size_t *len)
{
    long long end = p_now_ms() + p_to;
    *len = 0;
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (p_now_ms() > end) {
            return -ETIMEDOUT;
        }
        if (poll(&pf, 1, 200) <= 0) {
            continue;
        }
        ssize_t n = read(fd, b + *len, cap - *len);
        if (n == 0) {
            return 0;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return -errno;
        }
        *len += (size_t)n;
        if (*len == cap) {
            return -ENOBUFS;
        }
    }
}

static void p11_truncation(int version)
{
    char tn[128], bk[32], b[256];
    struct proxy px;
    int port, lfd, bfd = -1, rc;
    size_t len;

    snprintf(tn, sizeof tn, "P11 TLS %s client truncates (FIN without close_notify)",
             vname(version));
    p_begin(tn);
    lfd = own_listener(8, &port);
    if (!TAP_OK(lfd >= 0, "%s: backend listening", tn)) {
        return;
    }
    snprintf(bk, sizeof bk, "127.0.0.1:%d", port);
    const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                           "127.0.0.1:0", "--backend", bk, NULL };
    if (!TAP_OK(start_proxy(&px, "tlsk-proxy (truncation)", argv) > 0, "%s: proxy up", tn)) {
        goto out;
    }
    struct tlsk_socket *s = p_tls_dial(px.port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        goto out;
    }
    bfd = accept_within(lfd, p_to);
    rc = h_write_all(s, "abc", 3);
    p_tis(rc, 0, "%s: sent abc", tn);
    /* TCP FIN with no close_notify before it (the kernel never sends one either). */
    shutdown(tlsk_socket_fd(s), SHUT_WR);
    rc = bfd < 0 ? -ENOTCONN : plain_read_end(bfd, b, sizeof b, &len);
    TAP_OK(bfd >= 0 && len == 3 && memcmp(b, "abc", 3) == 0, "%s: backend got abc", tn);
    if (!TAP_OK(rc == -ECONNRESET, "%s: then a reset (ECONNRESET), not EOF: got %s", tn,
                rc == 0 ? "EOF" : strerror(-rc))) {
        p_kid_diag(&px.k);
    }
    tlsk_socket_free(s);
    char *l = conn_end(&px, 1);
    TAP_OK(strstr(l, "client closed without close_notify (truncated)") &&
               strstr(l, "backend reset"),
           "%s: proxy log: truncated, backend reset", tn);
    free(l);
out:
    if (bfd >= 0) {
        close(bfd);
    }
    close(lfd);
    p_kid_free(&px.k);
    alarm(0);
}

/* The client resets its connection after the handshake, while the proxy is still connecting
 * to the backend (whose accept queue we keep full, so the proxy's SYN waits for a retry): the
 * proxy must not send a PROXY header built from an address it cannot read any more. */
static void p12_proxy_header_reset(int version)
{
    char tn[128], bk[32], b[600];
    struct proxy px;
    int port, lfd, filler = -1, bfd = -1, rc;
    size_t len = 0;

    snprintf(tn, sizeof tn, "P12 TLS %s client reset before the PROXY header", vname(version));
    p_begin(tn);
    lfd = own_listener(0, &port);
    if (!TAP_OK(lfd >= 0, "%s: backend listening (backlog 0)", tn)) {
        return;
    }
    snprintf(bk, sizeof bk, "127.0.0.1:%d", port);
    const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                           "127.0.0.1:0", "--backend", bk, "--proxy-protocol", NULL };
    if (!TAP_OK(start_proxy(&px, "tlsk-proxy --proxy-protocol (reset)", argv) > 0,
                "%s: proxy up", tn)) {
        goto out;
    }
    /* Fill the backend's accept queue: the proxy's connect then waits for its SYN retry. */
    filler = p_connect_retry(port, NULL);
    struct tlsk_socket *s = p_tls_dial(px.port, "localhost", version, NULL, &rc);
    if (!TAP_OK(filler >= 0 && s != NULL, "%s: handshake (backend queue full)", tn)) {
        if (s) {
            tlsk_socket_free(s);
        }
        goto out;
    }
    usleep(300000); /* the proxy finished its side and is connecting */
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(tlsk_socket_fd(s), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tlsk_socket_free(s); /* RST */
    usleep(200000);
    int q = accept_within(lfd, p_to); /* the filler: now the proxy's retry gets in */
    if (q >= 0) {
        close(q);
    }
    bfd = accept_within(lfd, p_to);
    if (!TAP_OK(bfd >= 0, "%s: the proxy connected to the backend", tn)) {
        goto out;
    }
    rc = plain_read_end(bfd, b, sizeof b, &len);
    if (!TAP_OK(len == 0 && (rc == 0 || rc == -ECONNRESET),
                "%s: the backend got no PROXY header, the connection was dropped (%zu bytes, %s)",
                tn, len, rc == 0 ? "EOF" : strerror(-rc))) {
        if (len >= 14) {
            tap_diag("  header command 0x%02x, family 0x%02x", (unsigned char)b[12],
                     (unsigned char)b[13]);
        }
    }
    TAP_OK(p_wait_log(&px.k, "the client is gone", p_to), "%s: proxy logged the drop", tn);
out:
    if (filler >= 0) {
        close(filler);
    }
    if (bfd >= 0) {
        close(bfd);
    }
    close(lfd);
    p_kid_free(&px.k);
    alarm(0);
}

/* A server name with control bytes (an ANSI escape) and one with a space: refused during the
 * handshake, logged escaped, never at the backend. */
static void p13_hostile_sni(void)
{
    static const char *names[] = { "evil\x1b[31m.example", "a b.example", "x/y" };
    char tn[] = "P13 hostile server names", b[64];
    int rc;

    p_begin(tn);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        unsigned long id = ++g_term.conns;
        struct tlsk_socket *s = dial_user(g_term.port, names[i], TLSK_TLS1_3, true, &rc);
        if (!TAP_OK(s == NULL, "%s: name %zu: handshake refused (%s)", tn, i,
                    tlsk_err_name(rc))) {
            size_t len;
            h_write_all(s, "x\n", 2);
            h_shutdown(s);
            p_tls_read_all(s, b, sizeof b, &len);
            tlsk_socket_free(s);
        }
        char *l = conn_start(&g_term, id);
        bool escaped = i != 0 || strstr(l, "evil\\x1b[31m.example") != NULL;
        if (!TAP_OK(strstr(l, "handshake refused: server name") && escaped,
                    "%s: name %zu: logged as refused%s", tn, i,
                    i == 0 ? ", the escape byte written \\x1b" : "")) {
            tap_diag("  line: %s", l);
        }
        free(l);
    }
    char *log = p_kid_log(&g_term.k);
    TAP_OK(log && !strchr(log, '\x1b'), "%s: no raw control byte anywhere in the log", tn);
    free(log);
    /* An ordinary name still works. */
    ++g_term.conns;
    struct tlsk_socket *s = dial_user(g_term.port, "localhost", TLSK_TLS1_3, false, &rc);
    TAP_OK(s != NULL, "%s: localhost still served", tn);
    if (s) {
        size_t len;
        h_shutdown(s);
        p_tls_read_all(s, b, sizeof b, &len);
        tlsk_socket_free(s);
    }
    free(conn_end(&g_term, g_term.conns));
    alarm(0);
}

/* 1,100 TCP connections that never send a ClientHello must not lock a real client out, and
 * are cut at the handshake timeout. */
static void p14_idle_flood(void)
{
    char tn[] = "P14 1100 idle connections", echo_b[32], b[16];
    struct proxy px;
    struct rlimit rl;
    int want = 1100, n = 0, *fds, rc;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

    p_begin(tn);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (long)rl.rlim_cur < want + 100) {
        want = (int)rl.rlim_cur - 100;
        tap_diag("  descriptor limit %ld: %d idle connections", (long)rl.rlim_cur, want);
    }
    /* All of them must fit the accept queue (cli_listen: SOMAXCONN, capped by the kernel). */
    FILE *sm = fopen("/proc/sys/net/core/somaxconn", "r");
    int somax = 0;
    if (sm && fscanf(sm, "%d", &somax) == 1 && somax > 0 && somax < want + 1) {
        want = somax - 1;
        tap_diag("  net.core.somaxconn %d: %d idle connections", somax, want);
    }
    if (sm) {
        fclose(sm);
    }
    snprintf(echo_b, sizeof echo_b, "127.0.0.1:%d", g_echo_port);
    const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                           "127.0.0.1:0", "--backend", echo_b, "--handshake-timeout", "3",
                           NULL };
    if (!TAP_OK(start_proxy(&px, "tlsk-proxy (idle flood)", argv) > 0, "%s: proxy up", tn)) {
        p_kid_free(&px.k);
        return;
    }
    a.sin_port = htons((uint16_t)px.port);
    fds = calloc((size_t)want, sizeof *fds);
    for (int i = 0; fds && i < want; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            break;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
            close(fd);
            break;
        }
        fds[n++] = fd;
    }
    /* Wait (bounded) until every connect has completed. */
    long long end = p_now_ms() + p_to;
    int up = 0;
    for (int i = 0; i < n && p_now_ms() < end; i++) {
        struct pollfd pf = { .fd = fds[i], .events = POLLOUT };
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&pf, 1, (int)(end - p_now_ms())) == 1 &&
            getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) {
            up++;
        }
    }
    TAP_OK(up == want, "%s: %d of %d idle TCP connections established", tn, up, want);
    /* A real client, while they sit there. */
    long long t0 = p_now_ms();
    struct tlsk_socket *s = p_tls_dial(px.port, "localhost", TLSK_TLS1_3, NULL, &rc);
    size_t got = 0;
    if (s) {
        rc = h_write_all(s, "ping\n", 5);
        while (rc == 0 && got < 5) {
            ssize_t r = h_read_some(s, b + got, 5 - got);
            if (r <= 0) {
                break;
            }
            got += (size_t)r;
        }
    }
    long long ms = p_now_ms() - t0, limit = p_ktls ? 15000 : 5000;
    if (!TAP_OK(s && got == 5 && memcmp(b, "ping\n", 5) == 0,
                "%s: a real client is served (handshake and echo)", tn)) {
        tap_diag("  %s", tlsk_err_name(rc));
        char *l = p_log_line(&px.k, "refus");
        tap_diag("  proxy: %s", l);
        free(l);
    }
    TAP_OK(ms < limit, "%s: ... within %lld ms (%lld ms)", tn, limit, ms);
    if (s) {
        size_t len;
        h_shutdown(s);
        p_tls_read_all(s, b, sizeof b, &len);
        tlsk_socket_free(s);
    }
    /* Every idle connection is closed by the proxy (the 3 s handshake timeout). */
    int closed = 0;
    end = p_now_ms() + 3000 + p_to;
    for (int i = 0; i < n; i++) {
        for (;;) {
            struct pollfd pf = { .fd = fds[i], .events = POLLIN };
            long long left = end - p_now_ms();
            if (left <= 0 || poll(&pf, 1, (int)left) != 1) {
                break;
            }
            ssize_t r = read(fds[i], b, sizeof b);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                closed++;
                break;
            }
        }
    }
    TAP_OK(closed == n, "%s: the proxy closed all %d of them (handshake timeout): %d", tn, n,
           closed);
    TAP_OK(p_log_has(&px.k, "handshake failed: ETIMEDOUT (--handshake-timeout)"),
           "%s: logged as handshake timeouts", tn);
    TAP_OK(p_kid_alive(&px.k), "%s: proxy still running", tn);
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
    free(fds);
    p_kid_free(&px.k);
    alarm(0);
}

static void p15_help(void)
{
    char exe[sizeof p_tools + 16], *log;
    struct p_kid k;
    const char *argv[] = { exe, "--help", NULL };

    p_begin("P15 --help");
    snprintf(exe, sizeof exe, "%s/tlsk-proxy", p_tools);
    if (!TAP_OK(p_kid_spawn(&k, "tlsk-proxy --help", argv, NULL, NULL, P_KID_NULL, false) == 0,
                "P15: run --help")) {
        return;
    }
    p_tis(p_kid_wait(&k, p_to), 0, "P15: --help exits 0");
    log = p_kid_log(&k);
    TAP_OK(log && strstr(log, "--handshake-timeout S (10)") && strstr(log, "--idle-timeout S (300"),
           "P15: default handshake timeout 10 s, idle timeout 300 s");
    TAP_OK(log && strstr(log, "--max-handshakes"), "P15: --max-handshakes documented");
    free(log);
    p_kid_free(&k);
    alarm(0);
}

static void cleanup_tmp(void)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/file.bin", g_www);
    unlink(p);
    rmdir(g_www);
    rmdir(p_tmp);
}

int main(void)
{
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();
    const char *td = getenv("TMPDIR");
    char wfile[PATH_MAX + 16], dead[32], echo_b[32], routed[64], half[64], http_b[64];
    struct sigaction sa;
    size_t bulk;

    p_t0 = p_now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = p_on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    p_ktls = h_expect_ktls();
    p_to = p_ktls ? 60000 : 20000;
    p_case_secs = p_ktls ? 300 : 60;
    bulk = h_bulk_bytes(4);
    p_ca = strdup(h_fixture("ca1-cert.pem"));
    p_cert = strdup(h_fixture("agent1-cert.pem"));
    p_key = strdup(h_fixture("agent1-key.pem"));
    p_tools_dir();

    tap_diag("kernel %s, tls ULP %s, bulk %zu bytes, %s tier, tools in %s", caps->release,
             caps->ulp ? "yes" : "no", bulk, p_ktls ? "kTLS" : "native", p_tools);
    if (p_ktls && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    {
        char exe[PATH_MAX];
        static const char *need[] = { "openssl", "curl", "socat", "python3" };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
            if (!TAP_OK(p_find_exe(need[i], exe, sizeof exe), "peer %s is installed", need[i])) {
                return tap_done();
            }
        }
        char tool[sizeof p_tools + 16];
        snprintf(tool, sizeof tool, "%s/tlsk-proxy", p_tools);
        if (!TAP_OK(access(tool, X_OK) == 0, "%s is built", tool)) {
            return tap_done();
        }
    }
    snprintf(p_tmp, sizeof p_tmp, "%s/tlsk-proxy-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(p_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_www, sizeof g_www, "%s/www", p_tmp);
    snprintf(wfile, sizeof wfile, "%s/file.bin", g_www);
    if (!TAP_OK(mkdir(g_www, 0755) == 0 && p_write_pattern_file(wfile, 5, bulk) == 0,
                "scratch files in %s", p_tmp)) {
        cleanup_tmp();
        return tap_done();
    }

    p_begin("backends: socat echo, socat answer-after-EOF, socat fixed answer, http.server");
    g_echo_port = start_socat(&g_echo, "socat echo", "EXEC:cat");
    int half_port = start_socat(&g_half, "socat half-close", "SYSTEM:cat >/dev/null; echo done");
    int routed_port = start_socat(&g_routed, "socat routed-a", "SYSTEM:echo routed-a");
    g_http_port = p_free_port();
    {
        char p[16];
        snprintf(p, sizeof p, "%d", g_http_port);
        const char *argv[] = { "python3", "-m", "http.server", p, "--bind", "127.0.0.1",
                               "--directory", g_www, NULL };
        if (p_kid_spawn(&g_http, "python3 -m http.server", argv, NULL, NULL, P_KID_NULL, false) !=
                0 ||
            !p_wait_port(g_http_port, &g_http)) {
            g_http_port = -1;
        }
    }
    g_dead_port = p_free_port(); /* nothing listens there */
    if (!TAP_OK(g_echo_port > 0 && half_port > 0 && routed_port > 0 && g_http_port > 0 &&
                    g_dead_port > 0,
                "backends are up")) {
        goto out;
    }
    snprintf(echo_b, sizeof echo_b, "127.0.0.1:%d", g_echo_port);
    snprintf(half, sizeof half, "*.test.com=127.0.0.1:%d", half_port);
    snprintf(routed, sizeof routed, "a.example.com=127.0.0.1:%d", routed_port);
    snprintf(http_b, sizeof http_b, "www.test.com=127.0.0.1:%d", g_http_port);
    snprintf(dead, sizeof dead, "down.test.com=127.0.0.1:%d", g_dead_port);
    {
        char sa_cert[PATH_MAX * 2 + 32], sw_cert[PATH_MAX * 2 + 32];
        snprintf(sa_cert, sizeof sa_cert, "a.example.com=%s,%s", h_fixture("sni-a-cert.pem"),
                 h_fixture("sni-a-key.pem"));
        snprintf(sw_cert, sizeof sw_cert, "*.test.com=%s,%s", h_fixture("sni-wild-cert.pem"),
                 h_fixture("sni-wild-key.pem"));
        const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                               "127.0.0.1:0", "--backend", echo_b, "--sni", routed, "--sni",
                               half, "--sni", dead, "--sni", http_b, "--sni-cert", sa_cert,
                               "--sni-cert", sw_cert, NULL };
        if (!TAP_OK(start_proxy(&g_term, "tlsk-proxy", argv) > 0, "tlsk-proxy is listening")) {
            p_kid_diag(&g_term.k);
            goto out;
        }
    }
    alarm(0);

    static const int versions[] = { TLSK_TLS1_2, TLSK_TLS1_3 };
    for (size_t v = 0; v < 2; v++) {
        p1_sclient_echo(&g_term, false, versions[v], (512u << 10) + 77);
        p2_curl(versions[v], bulk);
        p3_half_close(versions[v]);
        p4_backend_down(versions[v]);
        p5_sni(versions[v]);
        p6_proxy_protocol(versions[v]);
        p7_origin_sserver(versions[v], false);
        p8_origin_chain(versions[v], bulk);
        p10_garbage(versions[v]);
        p11_truncation(versions[v]);
        p12_proxy_header_reset(versions[v]);
    }
    p9_origin_down();
    p13_hostile_sni();
    p14_idle_flood();
    p15_help();
    /* TLS 1.3 with receive offloaded too (--tls13-rx): splice both ways; at the origin the
     * server's NewSessionTickets arrive as control records in the middle of the splice. */
    p7_origin_sserver(TLSK_TLS1_3, true);
    {
        struct proxy p13;
        const char *argv[] = { "tlsk-proxy", "--cert", p_cert, "--key", p_key, "--listen",
                               "127.0.0.1:0", "--backend", echo_b, "--tls13-rx", NULL };
        if (TAP_OK(start_proxy(&p13, "tlsk-proxy --tls13-rx", argv) > 0,
                   "tlsk-proxy --tls13-rx is listening")) {
            p1_sclient_echo(&p13, true, TLSK_TLS1_3, (512u << 10) + 77);
        }
        p_kid_free(&p13.k);
    }
    if (!TAP_OK(p_kid_alive(&g_term.k), "tlsk-proxy survived everything")) {
        p_kid_diag(&g_term.k);
    }
out:
    if (tap_failed) {
        p_kid_diag(&g_term.k);
    }
    p_kid_free(&g_term.k);
    p_kid_free(&g_echo);
    p_kid_free(&g_half);
    p_kid_free(&g_routed);
    p_kid_free(&g_http);
    cleanup_tmp();
    tap_diag("elapsed %.1f s", (double)(p_now_ms() - p_t0) / 1000.0);
    return tap_done();
}

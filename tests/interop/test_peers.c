/*
 * test_peers.c - tlsk against independent TLS implementations: OpenSSL 3.0 (s_client,
 * s_server), GnuTLS 3.7 (gnutls-cli, gnutls-serv) and curl, for TLS 1.2 and 1.3 with
 * AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305.
 *
 *   A  tlsk echo server  <- openssl s_client -quiet fed a pattern file (byte-exact echo)
 *   B  tlsk echo server  <- gnutls-cli, a small and a ~1 MiB input (128 KiB under UML)
 *   C  tlsk HTTP server answering with tlsk_socket_sendfile <- openssl s_client, curl
 *   D  tlsk client -> openssl s_server -rev (lines), gnutls-serv --echo (bulk)
 *   E  kTLS oracle: openssl s_server -WWW -sendfile with "Options = KTLS" -> tlsk client, and
 *      openssl s_client with the same config -> tlsk server (both ends in the kernel)
 *   F  close_notify: s_client -msg sees tlsk's close_notify alert; a tlsk client reading from
 *      a peer that closes cleanly gets 0, not TLSK_ETRUNCATED
 *
 * Runs in both tiers.  Natively every direction must report userspace/no_ulp; with
 * TLSK_EXPECT_KTLS=1 (user-mode Linux with tls.ko) the "auto" policy must put TLS 1.2 in the
 * kernel both ways and TLS 1.3 TX in the kernel (RX userspace, no_rekey, unless the kernel can
 * re-key or TLSK_OFFLOAD_RX_TLS13 is set), cross-checked with getsockopt(SOL_TLS).
 *
 * Every child is tracked: waits are bounded (poll timeouts, waitpid deadlines, a per-case
 * alarm that kills all children and bails out) and every child is killed and reaped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "kconst.h"
#include "tap.h"

extern char **environ;

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */

struct suite {
    int version;
    const char *name;   /* OpenSSL name (what tlsk_socket_cipher() reports) */
    const char *gnutls; /* GnuTLS priority cipher keyword */
    int kcipher;        /* TLS_CIPHER_* of the kernel */
};

static const struct suite suites[] = {
    { TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", "AES-128-GCM", TLSK_KCIPHER_AES_GCM_128 },
    { TLSK_TLS1_2, "ECDHE-RSA-AES256-GCM-SHA384", "AES-256-GCM", TLSK_KCIPHER_AES_GCM_256 },
    { TLSK_TLS1_2, "ECDHE-RSA-CHACHA20-POLY1305", "CHACHA20-POLY1305",
      TLSK_KCIPHER_CHACHA20_POLY1305 },
    { TLSK_TLS1_3, "TLS_AES_128_GCM_SHA256", "AES-128-GCM", TLSK_KCIPHER_AES_GCM_128 },
    { TLSK_TLS1_3, "TLS_AES_256_GCM_SHA384", "AES-256-GCM", TLSK_KCIPHER_AES_GCM_256 },
    { TLSK_TLS1_3, "TLS_CHACHA20_POLY1305_SHA256", "CHACHA20-POLY1305",
      TLSK_KCIPHER_CHACHA20_POLY1305 },
};
#define NSUITES (sizeof suites / sizeof suites[0])

static size_t g_bulk;        /* A, C, D, E transfer size */
static char g_cnf[PATH_MAX]; /* OpenSSL config with Options = KTLS */

static const char *vname(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : "1.2";
}

/* ---------------------------------------------------------------------------------------- */
/* Child processes                                                                          */

/* p_on_alarm, with this program's name in the message: kill the children peers.c tracks. */
static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_peers: case timed out (alarm); children killed\n";
    (void)sig;
    for (int i = 0; i < P_MAX_KIDS; i++) {
        pid_t p = (pid_t)p_kid_pid[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
        }
    }
    if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing left to do */
    }
    _exit(1);
}

/* ---------------------------------------------------------------------------------------- */
/* Offload expectations                                                                     */

static void expect_dir(const struct suite *su, unsigned flags, bool tx, enum tlsk_mode *m,
                       enum tlsk_reason *r)
{
    /* Not from the library's own probe (a wrong probe must fail here): the tier decides.
     * Only re-key support, which no kernel before 6.14 has, is taken from the probe. */
    *m = TLSK_MODE_USERSPACE;
    if (!p_ktls) {
        *r = TLSK_REASON_NO_ULP;
    } else if (!tx && su->version == TLSK_TLS1_3 && !tlsk_kernel_probe()->rekey &&
               !(flags & TLSK_OFFLOAD_RX_TLS13)) {
        *r = TLSK_REASON_NO_REKEY;
    } else {
        *m = TLSK_MODE_KERNEL;
        *r = TLSK_REASON_NONE;
    }
}

static const char *mode_name(enum tlsk_mode m)
{
    return m == TLSK_MODE_KERNEL ? "kernel" : m == TLSK_MODE_USERSPACE ? "userspace" : "pending";
}

/* What a tlsk end saw right after its handshake, while the connection was open. */
struct endstate {
    bool valid;
    struct tlsk_offload off;
    int has_tx, has_rx, kver, kcipher;
    int vnum;
    char cipher[64];
};

static void endstate_take(struct endstate *e, struct tlsk_socket *s)
{
    const char *c = tlsk_socket_cipher(s);
    e->valid = true;
    e->off = tlsk_socket_offload(s);
    e->has_tx = h_kernel_has(tlsk_socket_fd(s), true, &e->kver, &e->kcipher);
    e->has_rx = h_kernel_has(tlsk_socket_fd(s), false, NULL, NULL);
    e->vnum = tlsk_socket_version_number(s);
    snprintf(e->cipher, sizeof e->cipher, "%s", c ? c : "(null)");
}

/* Assert the negotiated suite, the offload report and the kernel's view of one tlsk end. */
static void check_end(const char *tn, const char *who, const struct suite *su, unsigned flags,
                      const struct endstate *e)
{
    enum tlsk_mode m;
    enum tlsk_reason r;

    if (!TAP_OK(e->valid, "%s: %s finished its handshake", tn, who)) {
        return;
    }
    if (!TAP_OK(e->vnum == su->version && strcmp(e->cipher, su->name) == 0,
                "%s: %s negotiated TLS %s %s", tn, who, vname(su->version), su->name)) {
        tap_diag("  got version %#x cipher %s", e->vnum, e->cipher);
    }
    expect_dir(su, flags, true, &m, &r);
    if (!TAP_OK(e->off.tx.mode == m && e->off.tx.reason == r, "%s: %s tx %s (%s)", tn, who,
                mode_name(e->off.tx.mode), tlsk_reason_name(e->off.tx.reason))) {
        tap_diag("  expected %s (%s), err %d", mode_name(m), tlsk_reason_name(r), e->off.tx.err);
    }
    if (!p_tis(e->has_tx, m == TLSK_MODE_KERNEL,
                "%s: %s getsockopt(SOL_TLS, TLS_TX) %s while open", tn, who,
                m == TLSK_MODE_KERNEL ? "holds the keys" : "has no keys")) {
        tap_diag("  (kernel tier expected: %s)", p_ktls ? "yes" : "no");
    }
    if (e->has_tx && m == TLSK_MODE_KERNEL) {
        TAP_OK(e->kver == su->version && e->kcipher == su->kcipher,
               "%s: %s kernel TX version %#x cipher %d", tn, who, e->kver, e->kcipher);
    }
    expect_dir(su, flags, false, &m, &r);
    if (!TAP_OK(e->off.rx.mode == m && e->off.rx.reason == r, "%s: %s rx %s (%s)", tn, who,
                mode_name(e->off.rx.mode), tlsk_reason_name(e->off.rx.reason))) {
        tap_diag("  expected %s (%s), err %d", mode_name(m), tlsk_reason_name(r), e->off.rx.err);
    }
    p_tis(e->has_rx, m == TLSK_MODE_KERNEL, "%s: %s getsockopt(SOL_TLS, TLS_RX) %s", tn, who,
           m == TLSK_MODE_KERNEL ? "holds the keys" : "has no keys");
}

static int kernel_dirs(const struct suite *su, unsigned flags, bool tx)
{
    enum tlsk_mode m;
    enum tlsk_reason r;
    expect_dir(su, flags, tx, &m, &r);
    return m == TLSK_MODE_KERNEL;
}

/* ---------------------------------------------------------------------------------------- */
/* tlsk I/O loops (non-blocking fds, bounded waits)                                         */

static int wait_fd(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r;
    do {
        r = poll(&p, 1, p_to);
    } while (r < 0 && errno == EINTR);
    return r == 0 ? -ETIMEDOUT : r < 0 ? -errno : 0;
}

/* Echo exactly n bytes, reading ahead while writes wait (the peer may not read until it has
 * written everything).  Returns 0 or a code. */
static int echo_n(struct tlsk_socket *s, size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    size_t rd = 0, wr = 0, wpend = 0; /* wpend: length of a write that returned -EAGAIN */
    short rev = POLLIN, wev = POLLOUT;
    int rc = 0;

    if (!b) {
        return -ENOMEM;
    }
    while (wr < n) {
        bool progress = false, rwait = false, wwait = false;
        if (rd < n) {
            ssize_t r = tlsk_socket_read(s, b + rd, n - rd < 65536 ? n - rd : 65536);
            if (r > 0) {
                rd += (size_t)r;
                progress = true;
            } else if (r == 0) {
                rc = -EPIPE; /* close_notify before all data came */
                break;
            } else if (r == -EAGAIN) {
                rwait = true;
                rev = (short)tlsk_socket_events(s);
            } else {
                rc = (int)r;
                break;
            }
        }
        if (wr < rd) {
            size_t len = wpend ? wpend : (rd - wr < 65536 ? rd - wr : 65536);
            ssize_t w = tlsk_socket_write(s, b + wr, len);
            if (w > 0) {
                wr += (size_t)w;
                wpend = 0;
                progress = true;
            } else if (w == -EAGAIN) {
                wpend = len;
                wwait = true;
                wev = (short)tlsk_socket_events(s);
            } else {
                rc = w < 0 ? (int)w : -EIO;
                break;
            }
        }
        if (!progress) {
            short ev = (short)((rwait ? rev : 0) | (wwait ? wev : 0));
            if ((rc = wait_fd(tlsk_socket_fd(s), ev ? ev : POLLIN)) != 0) {
                break;
            }
        }
    }
    free(b);
    return rc;
}

/* Printable text derived from the pattern: a line feed every 73 bytes and as the last byte
 * of n, no NULs (gnutls-serv --echo echoes C strings line by line). */
static void text_pattern(uint32_t seed, uint64_t off, unsigned char *b, size_t len, size_t n)
{
    h_pattern(seed, off, b, len);
    for (size_t i = 0; i < len; i++) {
        uint64_t o = off + i;
        b[i] = (o % 73 == 72 || o + 1 == n) ? '\n' : (unsigned char)(0x21 + b[i] % 94);
    }
}

static int64_t text_check(uint32_t seed, uint64_t off, const unsigned char *b, size_t len,
                          size_t n)
{
    unsigned char tmp[4096];
    for (size_t i = 0; i < len; i += sizeof tmp) {
        size_t k = len - i < sizeof tmp ? len - i : sizeof tmp;
        text_pattern(seed, off + i, tmp, k, n);
        for (size_t j = 0; j < k; j++) {
            if (tmp[j] != b[i + j]) {
                return (int64_t)(off + i + j);
            }
        }
    }
    return -1;
}

/* Client: send n bytes of text pattern seed while receiving and checking their echo. */
static int duplex_text(struct tlsk_socket *s, uint32_t seed, size_t n, int64_t *bad)
{
    static unsigned char wb[65536], rb[65536];
    size_t sent = 0, got = 0, wlen = 0, woff = 0; /* wb[woff..wlen) is pending at sent */
    short rev = POLLIN, wev = POLLOUT;
    int rc = 0;

    *bad = -1;
    while (got < n) {
        bool progress = false, rwait = false, wwait = false;
        if (sent < n) {
            if (woff == wlen) {
                woff = 0;
                wlen = n - sent < sizeof wb ? n - sent : sizeof wb;
                /* Vary the write sizes a little. */
                if (wlen > 1000 && (sent / sizeof wb) % 3 == 1) {
                    wlen = wlen / 2 + 17;
                }
                text_pattern(seed, sent, wb, wlen, n);
            }
            ssize_t w = tlsk_socket_write(s, wb + woff, wlen - woff);
            if (w > 0) {
                sent += (size_t)w;
                woff += (size_t)w;
                progress = true;
            } else if (w == -EAGAIN) {
                wwait = true;
                wev = (short)tlsk_socket_events(s);
            } else {
                return w < 0 ? (int)w : -EIO;
            }
        }
        ssize_t r = tlsk_socket_read(s, rb, sizeof rb);
        if (r > 0) {
            if (got + (size_t)r > n) {
                *bad = (int64_t)n;
                return -EILSEQ;
            }
            int64_t x = text_check(seed, got, rb, (size_t)r, n);
            if (x >= 0) {
                *bad = x;
                return -EILSEQ;
            }
            got += (size_t)r;
            progress = true;
        } else if (r == 0) {
            return -EPIPE;
        } else if (r == -EAGAIN) {
            rwait = true;
            rev = (short)tlsk_socket_events(s);
        } else {
            return (int)r;
        }
        if (!progress) {
            short ev = (short)((rwait ? rev : 0) | (wwait ? wev : 0));
            if ((rc = wait_fd(tlsk_socket_fd(s), ev ? ev : POLLIN)) != 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* Read until close: returns 0 (close_notify) or the code that ended it; *extra counts
 * application bytes that came first. */
static int read_to_close(struct tlsk_socket *s, size_t *extra)
{
    char b[4096];
    *extra = 0;
    for (;;) {
        ssize_t n = h_read_some(s, b, sizeof b);
        if (n <= 0) {
            return (int)n;
        }
        *extra += (size_t)n;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The tlsk server thread                                                                   */

enum srv_mode {
    SRV_ECHO, /* echo n bytes, then close_notify */
    SRV_HTTP, /* read a GET /big.bin request, answer n bytes of file_fd with sendfile */
    SRV_SEND, /* write text, then close_notify */
};

struct srv {
    const char *tn;
    int lfd;
    struct tlsk_context *ctx;
    enum srv_mode mode;
    size_t n;
    int file_fd;
    const char *text;
    /* results */
    int rc;
    const char *step;
    char detail[256];
    struct endstate st;
    int peer_close; /* what a read after our close_notify gave: 0 = the peer's close_notify */
    size_t peer_extra;
    char req[512];
    pthread_t th;
};

static void *srv_main(void *arg)
{
    struct srv *sd = arg;
    struct tlsk_socket *s = NULL;
    int fd = -1;

    sd->peer_close = -ENOTCONN; /* never got that far */
    sd->step = "accept";
    if ((sd->rc = wait_fd(sd->lfd, POLLIN)) != 0) {
        return NULL;
    }
    fd = accept4(sd->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        sd->rc = -errno;
        return NULL;
    }
    sd->step = "new";
    if ((sd->rc = tlsk_socket_new_server(&s, sd->ctx, fd, NULL)) != 0) {
        close(fd);
        return NULL;
    }
    sd->step = "handshake";
    if ((sd->rc = h_handshake(s)) != 0) {
        goto out;
    }
    endstate_take(&sd->st, s);
    switch (sd->mode) {
    case SRV_ECHO:
        sd->step = "echo";
        sd->rc = echo_n(s, sd->n);
        break;
    case SRV_HTTP: {
        size_t len = 0;
        char hdr[256];
        sd->step = "read request";
        while (!memmem(sd->req, len, "\r\n\r\n", 4)) {
            ssize_t r;
            if (len >= sizeof sd->req - 1) {
                sd->rc = -EMSGSIZE;
                goto out;
            }
            r = h_read_some(s, sd->req + len, sizeof sd->req - 1 - len);
            if (r <= 0) {
                sd->rc = r < 0 ? (int)r : -EPIPE;
                goto out;
            }
            len += (size_t)r;
            sd->req[len] = 0;
        }
        if (strncmp(sd->req, "GET /big.bin HTTP/1.", 20) != 0) {
            sd->rc = -EPROTO;
            goto out;
        }
        sd->step = "response header";
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n",
                 sd->n);
        if ((sd->rc = h_write_all(s, hdr, strlen(hdr))) != 0) {
            goto out;
        }
        sd->step = "sendfile body";
        sd->rc = h_sendfile_all(s, sd->file_fd, sd->n);
        break;
    }
    case SRV_SEND:
        sd->step = "write";
        sd->rc = h_write_all(s, sd->text, strlen(sd->text));
        break;
    }
    if (sd->rc) {
        goto out;
    }
    sd->step = "close_notify out";
    if ((sd->rc = h_shutdown(s)) != 0) {
        goto out;
    }
    sd->peer_close = read_to_close(s, &sd->peer_extra);
out:
    if (sd->rc) {
        snprintf(sd->detail, sizeof sd->detail, "%s", tlsk_socket_error_detail(s));
    }
    tlsk_socket_free(s);
    close(fd);
    return NULL;
}

/* Listen, build the context and start the server thread.  Returns the port or -1. */
static int srv_start(struct srv *sd, const char *tn, const struct suite *su, unsigned flags,
                     enum srv_mode mode, size_t n)
{
    int port;
    memset(sd, 0, sizeof *sd);
    sd->tn = tn;
    sd->mode = mode;
    sd->n = n;
    sd->file_fd = -1;
    sd->lfd = h_listen(&port);
    sd->ctx = h_server_ctx(su->version, su->name, TLSK_OFFLOAD_DEFAULT, flags);
    if (!TAP_OK(sd->lfd >= 0 && sd->ctx, "%s: server context and listener", tn)) {
        if (sd->lfd >= 0) {
            close(sd->lfd);
        }
        tlsk_context_free(sd->ctx);
        sd->ctx = NULL;
        sd->lfd = -1;
        return -1;
    }
    return port;
}

static void srv_run(struct srv *sd)
{
    h_spawn(&sd->th, srv_main, sd);
}

/* Join and report the server's own result.  Returns whether it succeeded. */
static bool srv_finish(struct srv *sd, const char *what)
{
    pthread_join(sd->th, NULL);
    close(sd->lfd);
    tlsk_context_free(sd->ctx);
    if (!TAP_OK(sd->rc == 0, "%s: tlsk server %s", sd->tn, what)) {
        tap_diag("  server failed at %s: %s: %s", sd->step, tlsk_err_name(sd->rc), sd->detail);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                */

static void push_cipher_args(const char **a, int *i, const struct suite *su)
{
    a[(*i)++] = su->version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2";
    a[(*i)++] = su->version == TLSK_TLS1_3 ? "-ciphersuites" : "-cipher";
    a[(*i)++] = su->name;
}

/* openssl s_client -connect 127.0.0.1:P with verification of "localhost". */
static int s_client_args(const char **a, const char *portarg, const struct suite *su)
{
    int i = 0;
    a[i++] = "openssl";
    a[i++] = "s_client";
    a[i++] = "-connect";
    a[i++] = portarg;
    a[i++] = "-CAfile";
    a[i++] = p_ca;
    a[i++] = "-verify_return_error";
    a[i++] = "-verify_hostname";
    a[i++] = "localhost";
    a[i++] = "-servername";
    a[i++] = "localhost";
    push_cipher_args(a, &i, su);
    return i;
}

/* A: tlsk echo server <- s_client -quiet fed a pattern file. */
static void scenario_a(const struct suite *su, size_t n, int in_file)
{
    char tn[128], portarg[32];
    const char *argv[24];
    struct srv sd;
    struct p_kid k;
    struct p_buf out = { 0 };
    int port, i, rc;

    snprintf(tn, sizeof tn, "A %s %s s_client echo %zu bytes", vname(su->version), su->name, n);
    p_begin(tn);
    if ((port = srv_start(&sd, tn, su, 0, SRV_ECHO, n)) < 0) {
        return;
    }
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    i = s_client_args(argv, portarg, su);
    argv[i++] = "-quiet";
    argv[i] = NULL;
    srv_run(&sd);
    lseek(in_file, 0, SEEK_SET);
    rc = p_kid_spawn(&k, "openssl s_client", argv, NULL, NULL, in_file, true);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        return;
    }
    rc = p_kid_io(&k, NULL, 0, 0, &out);
    if (rc) {
        p_kid_stop(&k);
    }
    int st = p_kid_wait(&k, p_to);
    bool fine = srv_finish(&sd, "echoed everything and sent close_notify");
    p_tis(rc, 0, "%s: s_client output ended (EOF on its stdout)", tn);
    if (!TAP_OK(out.len == n && h_pattern_check(7, 0, out.p, out.len) < 0,
                "%s: s_client printed the %zu bytes it sent, byte-exact", tn, n)) {
        tap_diag("  got %zu bytes, first bad offset %lld", out.len,
                 (long long)(out.len ? h_pattern_check(7, 0, out.p, out.len < n ? out.len : n)
                                     : -1));
        fine = false;
    }
    if (!p_tis(st, 0, "%s: s_client exited 0 after close_notify", tn)) {
        fine = false;
    }
    check_end(tn, "server", su, 0, &sd.st);
    p_tis(sd.peer_close, 0, "%s: s_client answered with close_notify (server read 0: %s)", tn,
           tlsk_err_name(sd.peer_close));
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    p_buf_free(&out);
    alarm(0);
}

/* B: tlsk echo server <- gnutls-cli; stdin stays open until the echo is back. */
static void scenario_b(const struct suite *su, size_t n, uint32_t seed)
{
    char tn[128], portarg[16], prio[160], logpath[PATH_MAX];
    const char *argv[24];
    struct srv sd;
    struct p_kid k;
    struct p_buf out = { 0 };
    unsigned char *in;
    int port, i = 0, rc;

    snprintf(tn, sizeof tn, "B %s %s gnutls-cli echo %zu bytes", vname(su->version), su->name, n);
    p_begin(tn);
    in = malloc(n);
    if (!TAP_OK(in != NULL, "%s: input buffer", tn)) {
        return;
    }
    h_pattern(seed, 0, in, n);
    if ((port = srv_start(&sd, tn, su, 0, SRV_ECHO, n)) < 0) {
        free(in);
        return;
    }
    snprintf(portarg, sizeof portarg, "%d", port);
    snprintf(prio, sizeof prio, "NORMAL:-VERS-ALL:+VERS-TLS%s:-CIPHER-ALL:+%s",
             vname(su->version), su->gnutls);
    snprintf(logpath, sizeof logpath, "%s/gnutls-cli.log", p_tmp);
    argv[i++] = "gnutls-cli";
    argv[i++] = "-p";
    argv[i++] = portarg;
    argv[i++] = "--x509cafile";
    argv[i++] = p_ca;
    argv[i++] = "--verify-hostname";
    argv[i++] = "localhost";
    argv[i++] = "--sni-hostname";
    argv[i++] = "localhost";
    argv[i++] = "--priority";
    argv[i++] = prio;
    argv[i++] = "--logfile";
    argv[i++] = logpath;
    argv[i++] = "127.0.0.1";
    argv[i] = NULL;
    srv_run(&sd);
    rc = p_kid_spawn(&k, "gnutls-cli", argv, NULL, NULL, P_KID_PIPE, true);
    if (!TAP_OK(rc == 0, "%s: start gnutls-cli", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        free(in);
        return;
    }
    rc = p_kid_io(&k, in, n, n, &out);
    if (rc) {
        p_kid_stop(&k);
    }
    int st = p_kid_wait(&k, p_to);
    bool fine = srv_finish(&sd, "echoed everything and sent close_notify");
    p_tis(rc, 0, "%s: gnutls-cli output ended", tn);
    if (!TAP_OK(out.len == n && memcmp(out.p, in, n) == 0,
                "%s: gnutls-cli printed the %zu bytes it sent, byte-exact", tn, n)) {
        tap_diag("  got %zu bytes, first bad offset %lld", out.len,
                 (long long)(out.len ? h_pattern_check(seed, 0, out.p, out.len < n ? out.len : n)
                                     : -1));
        fine = false;
    }
    if (!p_tis(st, 0, "%s: gnutls-cli exited 0", tn)) {
        fine = false;
    }
    check_end(tn, "server", su, 0, &sd.st);
    tap_diag("  after close_notify the server read: %s", tlsk_err_name(sd.peer_close));
    if (!fine) {
        int lfd = open(logpath, O_RDONLY | O_CLOEXEC);
        if (lfd >= 0) {
            struct p_kid tmp = { .what = "gnutls-cli --logfile", .log = lfd, .pid = k.pid };
            p_kid_diag(&tmp);
            close(lfd);
        }
        p_kid_diag(&k);
    }
    unlink(logpath);
    p_kid_free(&k);
    p_buf_free(&out);
    free(in);
    alarm(0);
}

/* Split an HTTP response: returns the header length (through \r\n\r\n) or 0. */
static size_t http_header_len(const struct p_buf *b)
{
    const unsigned char *e = memmem(b->p, b->len, "\r\n\r\n", 4);
    return e ? (size_t)(e - b->p) + 4 : 0;
}

/* C1: tlsk HTTP server with sendfile <- s_client -quiet sending a GET. */
static void scenario_c_sclient(const struct suite *su, size_t n, int file_fd)
{
    static const char req[] = "GET /big.bin HTTP/1.0\r\n\r\n";
    char tn[128], portarg[32];
    const char *argv[24];
    struct srv sd;
    struct p_kid k;
    struct p_buf out = { 0 };
    int port, i, rc;

    snprintf(tn, sizeof tn, "C %s %s sendfile %zu bytes to s_client", vname(su->version),
             su->name, n);
    p_begin(tn);
    if ((port = srv_start(&sd, tn, su, 0, SRV_HTTP, n)) < 0) {
        return;
    }
    sd.file_fd = file_fd;
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    i = s_client_args(argv, portarg, su);
    argv[i++] = "-quiet";
    argv[i] = NULL;
    srv_run(&sd);
    rc = p_kid_spawn(&k, "openssl s_client", argv, NULL, NULL, P_KID_PIPE, true);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        return;
    }
    rc = p_kid_io(&k, req, sizeof req - 1, 0, &out);
    if (rc) {
        p_kid_stop(&k);
    }
    int st = p_kid_wait(&k, p_to);
    bool fine = srv_finish(&sd, "answered with sendfile and sent close_notify");
    size_t hl = http_header_len(&out);
    char want[64];
    snprintf(want, sizeof want, "Content-Length: %zu\r\n", n);
    p_tis(rc, 0, "%s: s_client output ended", tn);
    if (!TAP_OK(hl && memmem(out.p, hl, want, strlen(want)) && out.len - hl == n &&
                    h_pattern_check(3, 0, out.p + hl, n) < 0,
                "%s: response header and %zu body bytes, byte-exact", tn, n)) {
        tap_diag("  got %zu bytes, header %zu", out.len, hl);
        fine = false;
    }
    if (!p_tis(st, 0, "%s: s_client exited 0", tn)) {
        fine = false;
    }
    check_end(tn, "server", su, 0, &sd.st);
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    p_buf_free(&out);
    alarm(0);
}

/* C2: tlsk HTTP server with sendfile <- curl -o out. */
static void scenario_c_curl(const struct suite *su, size_t n, int file_fd)
{
    char tn[128], resolve[64], url[64], outpath[PATH_MAX], maxtime[16];
    const char *argv[32];
    struct srv sd;
    struct p_kid k;
    int port, i = 0, rc;

    snprintf(tn, sizeof tn, "C %s %s sendfile %zu bytes to curl", vname(su->version), su->name,
             n);
    p_begin(tn);
    if ((port = srv_start(&sd, tn, su, 0, SRV_HTTP, n)) < 0) {
        return;
    }
    sd.file_fd = file_fd;
    snprintf(resolve, sizeof resolve, "localhost:%d:127.0.0.1", port);
    snprintf(url, sizeof url, "https://localhost:%d/big.bin", port);
    snprintf(outpath, sizeof outpath, "%s/curl.out", p_tmp);
    snprintf(maxtime, sizeof maxtime, "%d", p_to / 1000);
    unlink(outpath);
    argv[i++] = "curl";
    argv[i++] = "-sS";
    argv[i++] = "--fail";
    argv[i++] = "--max-time";
    argv[i++] = maxtime;
    argv[i++] = "--cacert";
    argv[i++] = p_ca;
    argv[i++] = "--resolve";
    argv[i++] = resolve;
    if (su->version == TLSK_TLS1_3) {
        argv[i++] = "--tlsv1.3";
        argv[i++] = "--tls-max";
        argv[i++] = "1.3";
        argv[i++] = "--tls13-ciphers";
    } else {
        argv[i++] = "--tlsv1.2";
        argv[i++] = "--tls-max";
        argv[i++] = "1.2";
        argv[i++] = "--ciphers";
    }
    argv[i++] = su->name;
    argv[i++] = "-o";
    argv[i++] = outpath;
    argv[i++] = url;
    argv[i] = NULL;
    srv_run(&sd);
    rc = p_kid_spawn(&k, "curl", argv, NULL, NULL, P_KID_NULL, false);
    if (!TAP_OK(rc == 0, "%s: start curl", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        return;
    }
    int st = p_kid_wait(&k, p_to + 5000);
    bool fine = srv_finish(&sd, "answered with sendfile and sent close_notify");
    if (!p_tis(st, 0, "%s: curl exited 0", tn)) {
        fine = false;
    }
    int64_t bad = p_check_pattern_file(outpath, 3, n);
    if (!TAP_OK(bad < 0, "%s: curl -o file equals the %zu-byte file (cmp)", tn, n)) {
        tap_diag("  first difference at %lld", (long long)bad);
        fine = false;
    }
    check_end(tn, "server", su, 0, &sd.st);
    tap_diag("  after close_notify the server read: %s", tlsk_err_name(sd.peer_close));
    if (!fine) {
        p_kid_diag(&k);
    }
    unlink(outpath);
    p_kid_free(&k);
    alarm(0);
}

/* Connect a tlsk client to a peer server the child runs, with retries, and handshake. */
static struct tlsk_socket *client_connect(const char *tn, const struct suite *su, unsigned flags,
                                          int port, struct p_kid *k, struct tlsk_context **ctx,
                                          struct endstate *st)
{
    struct tlsk_socket_options o = { .servername = "localhost", .flags = TLSK_SOCKET_OWN_FD };
    struct tlsk_socket *s = NULL;
    int fd, rc;

    *ctx = h_client_ctx(su->version, su->name, TLSK_OFFLOAD_DEFAULT, flags);
    if (!TAP_OK(*ctx != NULL, "%s: client context", tn)) {
        return NULL;
    }
    fd = p_connect_retry(port, k);
    if (!TAP_OK(fd >= 0, "%s: connect to %s on port %d", tn, k->what, port)) {
        tap_diag("  %s", tlsk_err_name(fd));
        return NULL;
    }
    if (!TAP_OK((rc = tlsk_socket_new_client(&s, *ctx, fd, &o)) == 0, "%s: new client", tn)) {
        close(fd);
        return NULL;
    }
    rc = h_handshake(s);
    if (!TAP_OK(rc == 0, "%s: handshake with %s", tn, k->what)) {
        tap_diag("  %s: %s", tlsk_err_name(rc), tlsk_socket_error_detail(s));
        tlsk_socket_free(s);
        return NULL;
    }
    endstate_take(st, s);
    return s;
}

/* D1 + F: tlsk client -> s_server -rev: lines come back reversed; "CLOSE" makes s_server
 * send close_notify, which must read as 0. */
static void scenario_d_rev(const struct suite *su)
{
    char tn[128], acc[32];
    const char *argv[24];
    struct tlsk_context *ctx = NULL;
    struct tlsk_socket *s = NULL;
    struct endstate st = { 0 };
    struct p_kid k;
    int port = p_free_port(), i = 0, rc, bad_line = -1;
    bool fine = true;

    snprintf(tn, sizeof tn, "D %s %s client vs s_server -rev", vname(su->version), su->name);
    p_begin(tn);
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    argv[i++] = "openssl";
    argv[i++] = "s_server";
    argv[i++] = "-accept";
    argv[i++] = acc;
    argv[i++] = "-cert";
    argv[i++] = p_cert;
    argv[i++] = "-key";
    argv[i++] = p_key;
    argv[i++] = "-naccept";
    argv[i++] = "1";
    argv[i++] = "-rev";
    push_cipher_args(argv, &i, su);
    argv[i] = NULL;
    if (!TAP_OK(port > 0 && p_kid_spawn(&k, "openssl s_server -rev", argv, NULL, NULL, P_KID_NULL,
                                      false) == 0,
                "%s: start s_server", tn)) {
        return;
    }
    s = client_connect(tn, su, 0, port, &k, &ctx, &st);
    if (!s) {
        fine = false;
        goto out;
    }
    check_end(tn, "client", su, 0, &st);
    {
        char line[4100], want[4100], got[4100];
        int lines = 40;
        for (int l = 0; l < lines && bad_line < 0; l++) {
            size_t len = 1 + (size_t)(l * 997 + l * l * 13) % 4000;
            unsigned char p[4100];
            h_pattern((uint32_t)l, 0, p, len);
            for (size_t x = 0; x < len; x++) {
                line[x] = (char)('a' + p[x] % 26);
                want[len - 1 - x] = line[x];
            }
            line[len] = want[len] = '\n';
            if ((rc = h_write_all(s, line, len + 1)) != 0 ||
                h_read_full(s, got, len + 1) != (ssize_t)len + 1 ||
                memcmp(got, want, len + 1) != 0) {
                bad_line = l;
            }
        }
        if (!TAP_OK(bad_line < 0, "%s: %d lines of 1..4000 bytes came back reversed", tn,
                    lines)) {
            tap_diag("  line %d wrong", bad_line);
            fine = false;
        }
    }
    rc = h_write_all(s, "CLOSE\n", 6);
    size_t extra = 0;
    int r = rc ? rc : read_to_close(s, &extra);
    if (!TAP_OK(r == 0 && extra == 0,
                "F %s %s: client read from s_server after CLOSE returns 0 (close_notify), "
                "not TLSK_ETRUNCATED",
                vname(su->version), su->name)) {
        tap_diag("  got %s (%s) after %zu extra bytes", tlsk_err_name(r),
                 tlsk_socket_error_detail(s), extra);
        fine = false;
    }
out:
    tlsk_socket_free(s);
    tlsk_context_free(ctx);
    if (!p_tis(p_kid_wait(&k, p_to), 0, "%s: s_server exited 0", tn)) {
        fine = false;
    }
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    alarm(0);
}

/* D2: tlsk client -> gnutls-serv --echo, bulk echo checked while streaming. */
static void scenario_d_gnutls(const struct suite *su, size_t n)
{
    char tn[128], portarg[16];
    const char *argv[24];
    struct tlsk_context *ctx = NULL;
    struct tlsk_socket *s = NULL;
    struct endstate st = { 0 };
    struct p_kid k;
    int port = p_free_port(), i = 0, rc;
    bool fine = true;

    snprintf(tn, sizeof tn, "D %s %s client vs gnutls-serv --echo %zu bytes", vname(su->version),
             su->name, n);
    p_begin(tn);
    snprintf(portarg, sizeof portarg, "%d", port);
    argv[i++] = "gnutls-serv";
    argv[i++] = "--echo";
    argv[i++] = "-p";
    argv[i++] = portarg;
    argv[i++] = "--x509certfile";
    argv[i++] = p_cert;
    argv[i++] = "--x509keyfile";
    argv[i++] = p_key;
    argv[i] = NULL;
    if (!TAP_OK(port > 0 && p_kid_spawn(&k, "gnutls-serv --echo", argv, NULL, NULL, P_KID_NULL,
                                      false) == 0,
                "%s: start gnutls-serv", tn)) {
        return;
    }
    s = client_connect(tn, su, 0, port, &k, &ctx, &st);
    if (!s) {
        fine = false;
        goto out;
    }
    check_end(tn, "client", su, 0, &st);
    int64_t bad = -1;
    rc = duplex_text(s, 11, n, &bad);
    if (!TAP_OK(rc == 0, "%s: %zu bytes of text echoed back byte-exact", tn, n)) {
        tap_diag("  %s (%s), bad offset %lld", tlsk_err_name(rc), tlsk_socket_error_detail(s),
                 (long long)bad);
        fine = false;
    }
    rc = h_shutdown(s);
    p_tis(rc, 0, "%s: client sent close_notify", tn);
    size_t extra = 0;
    int r = read_to_close(s, &extra);
    if (!TAP_OK(r == 0 && extra == 0,
                "F %s %s: after our close_notify gnutls-serv's close reads as 0 (close_notify)",
                vname(su->version), su->name)) {
        tap_diag("  got %s (%s) after %zu extra bytes", tlsk_err_name(r),
                 tlsk_socket_error_detail(s), extra);
        fine = false;
    }
out:
    tlsk_socket_free(s);
    tlsk_context_free(ctx);
    if (!TAP_OK(p_kid_alive(&k), "%s: gnutls-serv still running at the end", tn)) {
        fine = false;
    }
    p_kid_stop(&k);
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    alarm(0);
}

/* E1: kTLS oracle: s_server -WWW -sendfile with Options = KTLS -> tlsk client. */
static void scenario_e_www(const struct suite *su, unsigned flags, const char *wwwdir, size_t n)
{
    static const char req[] = "GET /file.bin HTTP/1.0\r\n\r\n";
    char tn[160], acc[32], envc[PATH_MAX + 16];
    const char *argv[24], *env[2];
    struct tlsk_context *ctx = NULL;
    struct tlsk_socket *s = NULL;
    struct endstate st = { 0 };
    struct p_kid k;
    int port = p_free_port(), i = 0, rc;
    long long tx0 = h_tls_stat("TlsTxSw"), rx0 = h_tls_stat("TlsRxSw");
    bool fine = true;

    snprintf(tn, sizeof tn, "E %s %s%s client vs KTLS s_server -WWW -sendfile",
             vname(su->version), su->name, flags & TLSK_OFFLOAD_RX_TLS13 ? " rx-opt-in" : "");
    p_begin(tn);
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    snprintf(envc, sizeof envc, "OPENSSL_CONF=%s", g_cnf);
    env[0] = envc;
    env[1] = NULL;
    argv[i++] = "openssl";
    argv[i++] = "s_server";
    argv[i++] = "-accept";
    argv[i++] = acc;
    argv[i++] = "-cert";
    argv[i++] = p_cert;
    argv[i++] = "-key";
    argv[i++] = p_key;
    argv[i++] = "-naccept";
    argv[i++] = "1";
    argv[i++] = "-WWW";
    argv[i++] = "-sendfile";
    push_cipher_args(argv, &i, su);
    argv[i] = NULL;
    if (!TAP_OK(port > 0 && p_kid_spawn(&k, "openssl s_server -WWW -sendfile", argv, env, wwwdir,
                                      P_KID_NULL, false) == 0,
                "%s: start s_server", tn)) {
        return;
    }
    s = client_connect(tn, su, flags, port, &k, &ctx, &st);
    if (!s) {
        fine = false;
        goto out;
    }
    check_end(tn, "client", su, flags, &st);
    rc = h_write_all(s, req, sizeof req - 1);
    p_tis(rc, 0, "%s: sent GET /file.bin", tn);
    {
        struct p_buf b = { 0 };
        size_t cap = n + 4096;
        int end = 0;
        b.p = malloc(cap);
        while (b.p && b.len < cap) {
            ssize_t r = h_read_some(s, b.p + b.len, cap - b.len);
            if (r <= 0) {
                end = (int)r;
                break;
            }
            b.len += (size_t)r;
        }
        size_t hl = b.p ? http_header_len(&b) : 0;
        if (!TAP_OK(hl && strncmp((char *)b.p, "HTTP/1.0 200", 12) == 0 && b.len - hl == n &&
                        h_pattern_check(5, 0, b.p + hl, n) < 0,
                    "%s: body of %zu bytes byte-exact", tn, n)) {
            tap_diag("  got %zu bytes, header %zu, ended with %s", b.len, hl, tlsk_err_name(end));
            fine = false;
        }
        if (!p_tis(end, 0, "%s: response ends with close_notify (read 0)", tn)) {
            tap_diag("  %s", tlsk_socket_error_detail(s));
            fine = false;
        }
        p_buf_free(&b);
    }
out:
    tlsk_socket_free(s);
    tlsk_context_free(ctx);
    if (!p_tis(p_kid_wait(&k, p_to), 0, "%s: s_server exited 0", tn)) {
        fine = false;
    }
    {
        char *log = p_kid_log(&k);
        const char *want = p_ktls ? "KTLS SENDFILE '" : "sendfile requested but KTLS is not "
                                                         "available";
        if (!TAP_OK(log && strstr(log, want), "%s: s_server printed \"%s\"", tn, want)) {
            fine = false;
        }
        if (p_ktls && log) {
            TAP_OK(strstr(log, "KTLS SENDFILE 'file.bin' OK") != NULL,
                   "%s: s_server's SSL_sendfile of file.bin succeeded", tn);
        }
        free(log);
    }
    if (tx0 >= 0) {
        /* Both ends in the kernel: s_server (OpenSSL's own kTLS) and tlsk. */
        int want_tx = 1 + kernel_dirs(su, flags, true);
        int want_rx = (su->version == TLSK_TLS1_2) + kernel_dirs(su, flags, false);
        p_tis(h_tls_stat("TlsTxSw") - tx0, want_tx, "%s: tls_stat TlsTxSw +%d (s_server, tlsk)",
               tn, want_tx);
        p_tis(h_tls_stat("TlsRxSw") - rx0, want_rx, "%s: tls_stat TlsRxSw +%d", tn, want_rx);
    } else if (p_ktls) {
        TAP_OK(0, "%s: /proc/net/tls_stat exists on a kTLS kernel", tn);
    }
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    alarm(0);
}

/* E2: s_client with Options = KTLS -> tlsk server: both ends kernel. */
static void scenario_e_sclient(const struct suite *su)
{
    char tn[128], portarg[32], envc[PATH_MAX + 16];
    const char *argv[24], *env[2];
    struct srv sd;
    struct p_kid k;
    int port, i, rc;
    long long tx0 = h_tls_stat("TlsTxSw"), rx0 = h_tls_stat("TlsRxSw");

    snprintf(tn, sizeof tn, "E %s %s KTLS s_client vs tlsk server", vname(su->version),
             su->name);
    p_begin(tn);
    if ((port = srv_start(&sd, tn, su, 0, SRV_SEND, 0)) < 0) {
        return;
    }
    sd.text = "hello from tlsk\n";
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    snprintf(envc, sizeof envc, "OPENSSL_CONF=%s", g_cnf);
    env[0] = envc;
    env[1] = NULL;
    i = s_client_args(argv, portarg, su);
    argv[i++] = "-ign_eof";
    argv[i] = NULL;
    srv_run(&sd);
    rc = p_kid_spawn(&k, "openssl s_client (KTLS)", argv, env, NULL, P_KID_NULL, false);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        return;
    }
    int st = p_kid_wait(&k, p_to);
    bool fine = srv_finish(&sd, "wrote and sent close_notify");
    char *log = p_kid_log(&k);
    if (!p_tis(st, 0, "%s: s_client exited 0", tn)) {
        fine = false;
    }
    if (!TAP_OK(log && strstr(log, "hello from tlsk\n"), "%s: s_client received the data", tn)) {
        fine = false;
    }
    bool snd = log && strstr(log, "Using Kernel TLS for sending");
    bool rcv = log && strstr(log, "Using Kernel TLS for receiving");
    if (!TAP_OK(snd == p_ktls, "%s: s_client %s \"Using Kernel TLS for sending\"", tn,
                p_ktls ? "prints" : "does not print")) {
        fine = false;
    }
    if (!TAP_OK(rcv == (p_ktls && su->version == TLSK_TLS1_2),
                "%s: s_client %s \"Using Kernel TLS for receiving\"", tn,
                p_ktls && su->version == TLSK_TLS1_2 ? "prints" : "does not print")) {
        fine = false;
    }
    free(log);
    check_end(tn, "server", su, 0, &sd.st);
    p_tis(sd.peer_close, 0, "%s: s_client answered with close_notify (server read 0: %s)", tn,
           tlsk_err_name(sd.peer_close));
    if (tx0 >= 0) {
        int want_tx = p_ktls + kernel_dirs(su, 0, true);
        int want_rx = (p_ktls && su->version == TLSK_TLS1_2) + kernel_dirs(su, 0, false);
        p_tis(h_tls_stat("TlsTxSw") - tx0, want_tx, "%s: tls_stat TlsTxSw +%d (s_client, tlsk)",
               tn, want_tx);
        p_tis(h_tls_stat("TlsRxSw") - rx0, want_rx, "%s: tls_stat TlsRxSw +%d", tn, want_rx);
    }
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    alarm(0);
}

/* F1: s_client -msg must show tlsk's close_notify alert arriving. */
static void scenario_f_msg(const struct suite *su)
{
    char tn[128], portarg[32];
    const char *argv[24];
    struct srv sd;
    struct p_kid k;
    int port, i, rc;

    snprintf(tn, sizeof tn, "F %s %s s_client -msg sees close_notify", vname(su->version),
             su->name);
    p_begin(tn);
    if ((port = srv_start(&sd, tn, su, 0, SRV_SEND, 0)) < 0) {
        return;
    }
    sd.text = "bye\n";
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    i = s_client_args(argv, portarg, su);
    argv[i++] = "-msg";
    argv[i++] = "-quiet";
    argv[i] = NULL;
    srv_run(&sd);
    rc = p_kid_spawn(&k, "openssl s_client -msg", argv, NULL, NULL, P_KID_NULL, false);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        shutdown(sd.lfd, SHUT_RDWR);
        srv_finish(&sd, "(no client)");
        return;
    }
    int st = p_kid_wait(&k, p_to);
    bool fine = srv_finish(&sd, "wrote \"bye\" and sent close_notify");
    char *log = p_kid_log(&k);
    bool got_bye = false, got_cn = false, fatal = false;
    for (char *line = log, *e; line && *line; line = e ? e + 1 : NULL) {
        e = strchr(line, '\n');
        if (e) {
            *e = 0;
        }
        if (strcmp(line, "bye") == 0) {
            got_bye = true;
        }
        if (strncmp(line, "<<< ", 4) == 0 && strstr(line, "Alert") &&
            strstr(line, "close_notify")) {
            got_cn = true;
        }
        if (strstr(line, "Alert") && strstr(line, "fatal")) {
            fatal = true;
        }
    }
    free(log);
    if (!p_tis(st, 0, "%s: s_client exited 0", tn)) {
        fine = false;
    }
    if (!TAP_OK(got_bye, "%s: s_client printed \"bye\"", tn)) {
        fine = false;
    }
    if (!TAP_OK(got_cn && !fatal, "%s: -msg shows a received Alert ... close_notify, no fatal "
                                  "alert", tn)) {
        fine = false;
    }
    check_end(tn, "server", su, 0, &sd.st);
    p_tis(sd.peer_close, 0, "%s: s_client's close_notify read as 0 by the server (%s)", tn,
           tlsk_err_name(sd.peer_close));
    if (!fine) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    alarm(0);
}

/* ---------------------------------------------------------------------------------------- */

static void cleanup_tmp(void)
{
    static const char *files[] = { "ktls.cnf", "www/file.bin", "gnutls-cli.log", "curl.out" };
    char p[PATH_MAX + 32];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", p_tmp, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/www", p_tmp);
    rmdir(p);
    rmdir(p_tmp);
}

int main(void)
{
    static const char cnf[] = "openssl_conf = openssl_init\n"
                              "[openssl_init]\n"
                              "ssl_conf = ssl_module\n"
                              "[ssl_module]\n"
                              "system_default = ktls_sect\n"
                              "[ktls_sect]\n"
                              "Options = KTLS\n";
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();
    const char *td = getenv("TMPDIR");
    char www[PATH_MAX + 8], wfile[PATH_MAX + 32];
    struct sigaction sa;
    int in_file, body_fd;
    bool slow;

    p_t0 = p_now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    p_ktls = h_expect_ktls();
    slow = p_ktls || getenv("TLSK_TEST_BULK_MIB");
    p_to = p_ktls ? 60000 : 20000;
    p_case_secs = p_ktls ? 240 : 60;
    g_bulk = h_bulk_bytes(8);
    p_ca = strdup(h_fixture("ca1-cert.pem"));
    p_cert = strdup(h_fixture("agent1-cert.pem"));
    p_key = strdup(h_fixture("agent1-key.pem"));

    tap_diag("kernel %s, tls ULP %s, bulk %zu bytes, %s tier", caps->release,
             caps->ulp ? "yes" : "no", g_bulk, p_ktls ? "kTLS" : "native");
    if (p_ktls && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    if (!p_ktls) {
        TAP_OK(!caps->ulp || getenv("TLSK_PROBE_DISABLE"),
               "native tier: no tls ULP on this host (set TLSK_EXPECT_KTLS=1 on a kTLS kernel)");
    }
    if (access(p_ca, R_OK) != 0 || access(p_cert, R_OK) != 0 || access(p_key, R_OK) != 0) {
        tap_bail("fixtures missing: run scripts/gen-fixtures.sh build/fixtures and set "
                 "TLSK_FIXTURES");
    }
    {
        char exe[PATH_MAX];
        static const char *need[] = { "openssl", "gnutls-cli", "gnutls-serv", "curl" };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
            if (!TAP_OK(p_find_exe(need[i], exe, sizeof exe), "peer %s is installed", need[i])) {
                return tap_done();
            }
        }
    }

    snprintf(p_tmp, sizeof p_tmp, "%s/tlsk-peers-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(p_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_cnf, sizeof g_cnf, "%s/ktls.cnf", p_tmp);
    snprintf(www, sizeof www, "%s/www", p_tmp);
    snprintf(wfile, sizeof wfile, "%s/file.bin", www);
    in_file = h_pattern_file(7, g_bulk);
    body_fd = h_pattern_file(3, g_bulk);
    if (!TAP_OK(p_write_file(g_cnf, cnf, sizeof cnf - 1) == 0 && mkdir(www, 0755) == 0 &&
                    p_write_pattern_file(wfile, 5, g_bulk) == 0 && in_file >= 0 && body_fd >= 0,
                "scratch files in %s", p_tmp)) {
        cleanup_tmp();
        return tap_done();
    }
    fcntl(in_file, F_SETFD, FD_CLOEXEC);
    fcntl(body_fd, F_SETFD, FD_CLOEXEC);

    for (size_t x = 0; x < NSUITES; x++) {
        scenario_a(&suites[x], g_bulk, in_file);
    }
    /* gnutls-cli writes what it receives to stdout one byte per write(2): a MiB costs ~3 s
     * natively and minutes under user-mode Linux, where every syscall is trapped.  In the
     * slow tier the large echo shrinks to 128 KiB and runs once per version (the small echo
     * still covers every cipher). */
    for (size_t x = 0; x < NSUITES; x++) {
        scenario_b(&suites[x], 5000 + 17 * x, 20 + (uint32_t)x);
        if (!slow) {
            scenario_b(&suites[x], (1u << 20) + 333, 30 + (uint32_t)x);
        } else if (x % 3 == 0) {
            scenario_b(&suites[x], (128u << 10) + 333, 30 + (uint32_t)x);
        }
    }
    for (size_t x = 0; x < NSUITES; x++) {
        scenario_c_sclient(&suites[x], g_bulk, body_fd);
        scenario_c_curl(&suites[x], g_bulk, body_fd);
    }
    for (size_t x = 0; x < NSUITES; x++) {
        scenario_d_rev(&suites[x]);
        scenario_d_gnutls(&suites[x], g_bulk);
    }
    for (size_t x = 0; x < NSUITES; x++) {
        scenario_e_www(&suites[x], 0, www, g_bulk);
        scenario_e_sclient(&suites[x]);
    }
    /* TLS 1.3 receive offload by opt-in: s_server's tickets then arrive through kTLS RX. */
    scenario_e_www(&suites[3], TLSK_OFFLOAD_RX_TLS13, www, g_bulk);
    scenario_e_www(&suites[5], TLSK_OFFLOAD_RX_TLS13, www, g_bulk);
    for (size_t x = 0; x < NSUITES; x++) {
        scenario_f_msg(&suites[x]);
    }

    close(in_file);
    close(body_fd);
    cleanup_tmp();
    tap_diag("elapsed %.1f s", (double)(p_now_ms() - p_t0) / 1000.0);
    return tap_done();
}

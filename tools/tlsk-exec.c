/*
 * tlsk-exec - kernel TLS for programs that know nothing of TLS (inetd / UCSPI style).
 *
 *   tlsk-exec --cert C --key K -l [HOST]:PORT [options] -- PROGRAM [ARGS...]
 *
 * One process per connection: it completes the handshake and, when the kernel holds both
 * directions, detaches the kTLS socket (tlsk_socket_detach) and runs PROGRAM with it as
 * stdin and stdout, so PROGRAM's read/write/sendfile/splice are TLS with no process in
 * between.  Otherwise a relay (relay.c) runs between the TLS connection and a socketpair
 * that is PROGRAM's stdin and stdout.  See usage() for what PROGRAM sees.
 */
#include <errno.h>
#include <linux/tls.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "relay.h"
#include "tlsk.h"

#define MAX_ALPN 8

static struct {
    const char *listen_at;
    char **prog;
    bool force_relay;
    int hs_ms, idle_ms, max_conns;
} cfg = { .hs_ms = 30000, .max_conns = 64 };

static struct tlsk_context *ctx;

static void usage(FILE *f)
{
    fputs(
        "usage: tlsk-exec --cert CERT --key KEY -l [HOST]:PORT [options] -- PROGRAM [ARGS...]\n"
        "\n"
        "Accepts TLS connections and runs PROGRAM once per connection with the connection as\n"
        "its stdin and stdout (inetd / UCSPI style).  The handshake runs first; then:\n"
        "\n"
        "  kernel mode: when kTLS holds both directions, PROGRAM gets the kTLS socket itself\n"
        "    (logged \"detached: kernel\", TLSK_MODE=kernel).  read/write/sendfile/splice on\n"
        "    fds 0 and 1 are TLS, encrypted and decrypted by the kernel, with no process in\n"
        "    between.  What PROGRAM sees that a plain socket would not show:\n"
        "      - read() fails with EIO (\"Input/output error\") when a TLS control record is\n"
        "        next instead of data.  The usual one is the peer's close_notify, i.e. where a\n"
        "        plain socket would read EOF; the record is not consumed, so every later read\n"
        "        fails with EIO too.  Treat EIO on stdin as end of input (or link tlsk and call\n"
        "        tlsk_fd_read(), which returns 0 there).\n"
        "      - a peer that closes TCP without close_notify (truncation: it crashed, or an\n"
        "        attacker cut the stream) reads as a plain EOF, read() = 0: here 0 is NOT a\n"
        "        clean end (EIO is).  TLSK_TRUNCATION=eof says so; treat 0 as an error (the\n"
        "        kernel gives no other sign, and tlsk-exec does not sit in between).  The log\n"
        "        says how the client ended once PROGRAM has exited.\n"
        "      - a corrupted record makes read() fail with EBADMSG and the connection is dead.\n"
        "      - TLS 1.3: receive is offloaded even on kernels that cannot re-key (< 6.14); if\n"
        "        the peer then sends a KeyUpdate the kernel keeps the old key, the next read\n"
        "        fails with EBADMSG and the connection is lost.  OpenSSL, curl and browsers do\n"
        "        not send KeyUpdate on their own; Java does after jdk.tls.keyLimits.  Use\n"
        "        --no-tls13-rx to keep TLS 1.3 receive in userspace (then the relay runs).\n"
        "      - the kernel never sends close_notify: when PROGRAM exits, tlsk-exec (which\n"
        "        waits for it) sends close_notify and closes the connection.  Nor does it send\n"
        "        alerts: a record that fails authentication is EBADMSG for PROGRAM and the\n"
        "        peer then sees our close_notify (or nothing) rather than bad_record_mac.\n"
        "  relay mode: when the kernel cannot take both directions (no tls module, a cipher it\n"
        "    lacks, --offload, --no-tls13-rx with TLS 1.3, --relay), PROGRAM's stdin and\n"
        "    stdout are a unix socketpair and tlsk-exec relays through OpenSSL (logged\n"
        "    \"relay\", TLSK_MODE=relay).  The peer's close_notify is EOF on stdin; PROGRAM's\n"
        "    exit (or shutdown(1, SHUT_WR)) sends close_notify.  A peer that closes TCP\n"
        "    without close_notify (truncation) is not EOF: what came before it is delivered,\n"
        "    then reading stdin fails with ECONNRESET (TLSK_TRUNCATION=reset).  A TLS error\n"
        "    (a record that fails authentication: the peer gets the fatal alert) ends the\n"
        "    relay too, and PROGRAM's stdin then reads EOF.\n"
        "\n"
        "Environment for PROGRAM: TLSK_MODE (kernel|relay), TLSK_TRUNCATION (eof|reset: how a\n"
        "peer's close without close_notify shows on stdin, see above), TLSK_VERSION (TLSv1.3),\n"
        "TLSK_CIPHER (OpenSSL name), TLSK_ALPN, TLSK_SERVERNAME (SNI), TLSK_PEER_SUBJECT (the\n"
        "client certificate's subject, with --ca, as an RFC 4514 string: \"CN=agent1,O=tlsk\n"
        "test\", last RDN first, values escaped: , + \" \\ < > ; = / and a leading or trailing\n"
        "space or leading # with a backslash, control bytes as \\XX, so a value can never pose\n"
        "as another field), and UCSPI's PROTO=TCP, TCPLOCALIP, TCPLOCALPORT, TCPREMOTEIP,\n"
        "TCPREMOTEPORT.  Unknown values are unset.  A client's server name that is not 1-255\n"
        "letters, digits, '-', '_' and '.' refuses the handshake (logged escaped): PROGRAM\n"
        "never sees such bytes.  After a fatal error tlsk-exec closes lingering (FIN, then up\n"
        "to 1 s / 256 KiB of the client's bytes dropped) so the alert is read, not reset.\n"
        "PROGRAM's stderr is tlsk-exec's.\n"
        "\n"
        "Options:\n"
        "  -l, --listen [HOST]:PORT  (port 0 picks one; \"listening on\" is logged)\n"
        "  --cert FILE, --key FILE    server certificate chain and key (PEM)\n"
        "  --ca FILE                  require a client certificate issued by FILE\n"
        "  --alpn PROTO               offer ALPN protocols (repeatable, server preference)\n"
        "  --offload auto|tx|off|require  kTLS policy (default auto)\n"
        "  --no-tls13-rx              keep TLS 1.3 receive in userspace on every kernel\n"
        "  --relay                    always relay (never hand PROGRAM the kTLS socket)\n"
        "  --max-conns N              concurrent connections (64); more wait in the backlog\n"
        "  --handshake-timeout S (30), --idle-timeout S (relay only, 0 = none)\n",
        f);
}

/* close_notify on a detached kTLS socket: alert(warning, close_notify) sent as a control
 * record (docs/KERNEL.md §4.4; the kernel never sends it itself). */
static int send_close_notify(int fd)
{
    unsigned char alert[2] = { 1, 0 };
    char cbuf[CMSG_SPACE(1)] = { 0 };
    struct iovec iov = { .iov_base = alert, .iov_len = sizeof alert };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);

    c->cmsg_level = SOL_TLS;
    c->cmsg_type = TLS_SET_RECORD_TYPE;
    c->cmsg_len = CMSG_LEN(1);
    *CMSG_DATA(c) = 21; /* alert */
    return sendmsg(fd, &m, MSG_NOSIGNAL) == (ssize_t)sizeof alert ? 0 : -errno;
}

/* RFC 4514 (section 2.4) escaping of one attribute value, appended at out[*n]; false when it
 * does not fit.  Besides what 2.4 requires (, + " \\ < > ; a leading space or '#', a
 * trailing space, NUL), '=' and '/' are escaped so that neither RFC 4514 nor the old
 * "/K=V" readers can be fooled into seeing another field, and every control byte (and DEL)
 * is written \\XX. */
static bool dn_value(const char *v, char *out, size_t len, size_t *n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t vl = strlen(v);

    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)v[i];
        char e[4];
        size_t el = 0;
        if (c < 0x20 || c == 0x7f) {
            e[el++] = '\\';
            e[el++] = hex[c >> 4];
            e[el++] = hex[c & 15];
        } else if (strchr(",+\"\\<>;=/", c) || (i == 0 && (c == ' ' || c == '#')) ||
                   (i == vl - 1 && c == ' ')) {
            e[el++] = '\\';
            e[el++] = (char)c;
        } else {
            e[el++] = (char)c;
        }
        if (*n + el >= len) {
            return false;
        }
        memcpy(out + *n, e, el);
        *n += el;
    }
    return true;
}

/* The subject as an RFC 4514 string, built from tlsk's fields (no OpenSSL formatting): the
 * last RDN first, "KEY=value" joined by ','.  Keys come from the library (short names or
 * dotted OIDs); one with any other character is left out.  "" when it does not fit: a
 * truncated name could be another name. */
static void dn_rfc4514(const struct tlsk_name_entry *e, size_t count, char *out, size_t len)
{
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = count; i-- > 0;) {
        const char *k = e[i].key, *v = e[i].value ? e[i].value : "";
        size_t kl = k ? strlen(k) : 0;
        if (kl == 0 || strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789.-") != kl) {
            continue;
        }
        if (n + (n ? 1 : 0) + kl + 1 >= len) {
            out[0] = '\0';
            return;
        }
        if (n) {
            out[n++] = ',';
        }
        memcpy(out + n, k, kl);
        n += kl;
        out[n++] = '=';
        if (!dn_value(v, out, len, &n)) {
            out[0] = '\0';
            return;
        }
    }
    out[n] = '\0';
}

/* The client's server name must be a plain host name (cli_servername_ok): anything else
 * refuses the handshake, so it never reaches TLSK_SERVERNAME. */
static bool sni_refused;

static int sni_check(struct tlsk_socket *s, const char *name, void *data,
                     struct tlsk_context **out)
{
    (void)s;
    (void)data;
    if (!cli_servername_ok(name)) {
        sni_refused = true;
        return -EINVAL;
    }
    *out = NULL;
    return 0;
}

static void set_or_unset(const char *name, const char *value)
{
    if (value && *value) {
        setenv(name, value, 1);
    } else {
        unsetenv(name);
    }
}

static void set_env(struct tlsk_socket *s, int fd, const char *mode)
{
    struct tlsk_cert_info *ci = NULL;
    char subj[4096] = "", host[64], num[16];
    const char *sn = tlsk_socket_servername(s);
    int port;

    setenv("TLSK_MODE", mode, 1);
    setenv("TLSK_TRUNCATION", strcmp(mode, "kernel") == 0 ? "eof" : "reset", 1);
    set_or_unset("TLSK_VERSION", tlsk_socket_version(s));
    set_or_unset("TLSK_CIPHER", tlsk_socket_cipher(s));
    set_or_unset("TLSK_ALPN", tlsk_socket_alpn_protocol(s));
    set_or_unset("TLSK_SERVERNAME", sn && cli_servername_ok(sn) ? sn : NULL);
    if (tlsk_socket_peer_certificate(s, 0, &ci) == 0) {
        dn_rfc4514(ci->subject, ci->subject_count, subj, sizeof subj);
        tlsk_cert_info_free(ci);
    }
    set_or_unset("TLSK_PEER_SUBJECT", subj);
    setenv("PROTO", "TCP", 1);
    if (cli_sockaddr(fd, false, host, sizeof host, &port) > 0) {
        snprintf(num, sizeof num, "%d", port);
        setenv("TCPLOCALIP", host, 1);
        setenv("TCPLOCALPORT", num, 1);
    }
    if (cli_sockaddr(fd, true, host, sizeof host, &port) > 0) {
        snprintf(num, sizeof num, "%d", port);
        setenv("TCPREMOTEIP", host, 1);
        setenv("TCPREMOTEPORT", num, 1);
    }
}

/* Start PROGRAM with fd as stdin and stdout.  Returns the pid or -errno. */
static pid_t spawn(int fd)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid < 0 ? -errno : pid;
    }
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0) {
        _exit(126);
    }
    if (fd > 1) {
        close(fd);
    }
    execvp(cfg.prog[0], cfg.prog);
    fprintf(stderr, "tlsk-exec: %s: %s\n", cfg.prog[0], strerror(errno));
    _exit(127);
}

/* Wait for pid; after timeout_ms (< 0: forever) SIGTERM, and SIGKILL a second later. */
static int reap(pid_t pid, int timeout_ms)
{
    long long deadline = cli_now_ms() + timeout_ms;
    int st = 0, sig = 0;

    for (;;) {
        pid_t r = waitpid(pid, &st, timeout_ms < 0 ? 0 : WNOHANG);
        if (r == pid) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
        if (timeout_ms >= 0 && cli_now_ms() > deadline) {
            kill(pid, sig ? SIGKILL : SIGTERM);
            sig = 1;
            deadline = cli_now_ms() + 1000;
        }
        if (timeout_ms >= 0) {
            poll(NULL, 0, 10);
        }
    }
}

/* After PROGRAM: how did the client end?  Reads what is left on the kTLS socket (PROGRAM is
 * gone), control records with their type: "sent close_notify", "closed without close_notify
 * (truncated)", "still open", or an alert / error. */
static const char *client_end(int fd, char *buf, size_t len)
{
    for (int i = 0; i < 64; i++) {
        unsigned char data[16384];
        union {
            char b[CMSG_SPACE(sizeof(unsigned char))];
            struct cmsghdr align;
        } cbuf;
        struct iovec iov = { .iov_base = data, .iov_len = sizeof data };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
                            .msg_controllen = sizeof cbuf.b };
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        unsigned char type = 23;

        if (n == 0) {
            return "closed without close_notify (truncated)";
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return "still open";
            }
            snprintf(buf, len, "failed (%s)", strerror(errno));
            return buf;
        }
        if (c && c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) {
            type = *CMSG_DATA(c);
        }
        if (type == 21 && n >= 2) {
            if (data[1] == 0) {
                return "sent close_notify";
            }
            snprintf(buf, len, "sent alert %u", data[1]);
            return buf;
        }
    }
    return "still sending";
}

static int run_kernel(unsigned long id, struct tlsk_socket *s, const char *peer,
                      const char *info)
{
    int fd = tlsk_socket_detach(s), st, rc;
    pid_t pid;

    if (fd < 0) {
        return fd; /* s untouched: the caller relays */
    }
    cli_set_nonblock(fd, false); /* programs expect blocking stdio */
    cli_log("conn %lu from %s: %s; detached: kernel; running %s on the kTLS socket", id, peer,
            info, cfg.prog[0]);
    pid = spawn(fd);
    if (pid < 0) {
        cli_log("conn %lu: fork: %s", id, strerror((int)-pid));
        close(fd);
        return 0;
    }
    st = reap(pid, -1);
    char how[64];
    const char *end = client_end(fd, how, sizeof how);
    rc = send_close_notify(fd);
    cli_log("conn %lu closed: %s exited with status %d; client %s; %s", id, cfg.prog[0], st,
            end, rc == 0 ? "close_notify sent" : "close_notify not sent (connection gone)");
    cli_linger_close(fd);
    return 0;
}

static void run_relay(unsigned long id, struct tlsk_socket *s, const char *peer,
                      const char *info, const char *why)
{
    struct relay_result res;
    int sp[2], pidfd, st, prog_end;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        cli_log("conn %lu: socketpair: %s", id, strerror(errno));
        return;
    }
    cli_log("conn %lu from %s: %s; relay: %s; running %s on a socketpair, relayed through "
            "userspace",
            id, peer, info, why, cfg.prog[0]);
    pid = spawn(sp[1]);
    if (pid < 0) {
        cli_log("conn %lu: fork: %s", id, strerror((int)-pid));
        close(sp[1]);
        close(sp[0]);
        return;
    }
    cli_set_nonblock(sp[0], true);
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    /* We keep PROGRAM's end while it runs (the relay lets go when the pidfd says it exited):
     * at a truncation one byte queued from it makes closing ours ECONNRESET for PROGRAM. */
    prog_end = sp[1];
    if (pidfd < 0) {
        close(prog_end); /* no exit notice: its exit must close the pair by itself */
        prog_end = -1;
    }
    relay_run(s, sp[0],
              &(struct relay_options){ .idle_ms = cfg.idle_ms, .stop_fd = pidfd,
                                       .plain_peer_fd = &prog_end },
              &res);
    close(sp[0]);
    if (prog_end >= 0) {
        close(prog_end);
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    st = reap(pid, 10000);
    cli_log("conn %lu closed: %llu bytes to %s, %llu bytes from it; %s exited with status %d; "
            "client %s%s%s%s%s%s%s",
            id, (unsigned long long)res.to_plain, cfg.prog[0], (unsigned long long)res.to_tls,
            cfg.prog[0], st,
            res.peer_close_notify ? "sent close_notify"
            : res.peer_truncated  ? "closed without close_notify (truncated)"
                                  : "still open",
            res.plain_reset ? "; program's stdin reset" : "",
            res.sent_close_notify ? "; close_notify sent" : "", res.err ? "; " : "",
            res.err ? res.err_where : "", res.err ? ": " : "",
            res.err ? tlsk_strerror(res.err) : "");
}

static int handle(unsigned long id, int cfd)
{
    struct tlsk_socket *s = NULL;
    char peer[80], info[256], why[256];
    int rc;

    cli_sockname(cfd, true, peer, sizeof peer);
    cli_set_nonblock(cfd, true);
    rc = tlsk_socket_new_server(&s, ctx, cfd,
                                &(struct tlsk_socket_options){ .flags = TLSK_SOCKET_OWN_FD,
                                                               .sni_cb = sni_check });
    if (rc != 0) {
        cli_log("conn %lu from %s: %s", id, peer, tlsk_strerror(rc));
        close(cfd);
        return 1;
    }
    if ((rc = cli_handshake(s, cfg.hs_ms)) != 0) {
        char esc[1100];
        if (sni_refused) {
            cli_log("conn %lu from %s: handshake refused: server name \"%s\" is not a host name",
                    id, peer, cli_escape(tlsk_socket_servername(s), esc, sizeof esc));
        } else {
            cli_log("conn %lu from %s: handshake failed: %s %s", id, peer, tlsk_err_name(rc),
                    cli_escape(tlsk_socket_error_detail(s), esc, sizeof esc));
        }
        cli_free_lingering(s);
        return 1;
    }
    cli_describe(s, info, sizeof info);
    struct tlsk_offload o = tlsk_socket_offload(s);
    bool both = o.tx.mode == TLSK_MODE_KERNEL && o.rx.mode == TLSK_MODE_KERNEL;
    if (both && !cfg.force_relay) {
        set_env(s, cfd, "kernel");
        if (run_kernel(id, s, peer, info) == 0) {
            return 0;
        }
        snprintf(why, sizeof why, "detach failed");
    } else if (both) {
        snprintf(why, sizeof why, "--relay given");
    } else {
        snprintf(why, sizeof why, "the kernel cannot take both directions (tx %s, rx %s)",
                 o.tx.mode == TLSK_MODE_KERNEL ? "kernel" : tlsk_reason_name(o.tx.reason),
                 o.rx.mode == TLSK_MODE_KERNEL ? "kernel" : tlsk_reason_name(o.rx.reason));
    }
    set_env(s, cfd, "relay");
    run_relay(id, s, peer, info, why);
    cli_free_lingering(s);
    return 0;
}

int main(int argc, char **argv)
{
    struct tlsk_context_options o = { .flags = TLSK_OFFLOAD_RX_TLS13 };
    const char *alpn[MAX_ALPN + 1] = { 0 };
    size_t nalpn = 0;
    char err[512], bound[128];
    unsigned long seq = 0;
    int lfd, active = 0, i;

    cli_prog = "tlsk-exec";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-') {
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--relay") == 0) {
            cfg.force_relay = true;
            continue;
        }
        if (strcmp(a, "--no-tls13-rx") == 0) {
            o.flags &= ~(unsigned)TLSK_OFFLOAD_RX_TLS13;
            o.flags |= TLSK_NO_RX_TLS13;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tlsk-exec: %s needs a value (try --help)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--cert") == 0) {
            o.cert_file = v;
        } else if (strcmp(a, "--key") == 0) {
            o.key_file = v;
        } else if (strcmp(a, "--ca") == 0) {
            o.ca_file = v;
            o.flags |= TLSK_REQUIRE_PEER_CERT;
        } else if (strcmp(a, "-l") == 0 || strcmp(a, "--listen") == 0) {
            cfg.listen_at = v;
        } else if (strcmp(a, "--alpn") == 0) {
            if (nalpn == MAX_ALPN) {
                fprintf(stderr, "tlsk-exec: at most %d --alpn\n", MAX_ALPN);
                return 2;
            }
            alpn[nalpn++] = v;
        } else if (strcmp(a, "--offload") == 0) {
            if (cli_parse_offload(v, &o.offload) != 0) {
                fprintf(stderr, "tlsk-exec: --offload auto|tx|off|require\n");
                return 2;
            }
        } else if (strcmp(a, "--max-conns") == 0) {
            cfg.max_conns = atoi(v);
        } else if (strcmp(a, "--handshake-timeout") == 0) {
            cfg.hs_ms = atoi(v) * 1000;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            cfg.idle_ms = atoi(v) * 1000;
        } else {
            fprintf(stderr, "tlsk-exec: unknown option %s (try --help)\n", a);
            return 2;
        }
    }
    if (i >= argc || !cfg.listen_at || !o.cert_file || !o.key_file) {
        usage(stderr);
        return 2;
    }
    if (cfg.max_conns <= 0 || cfg.hs_ms <= 0 || cfg.idle_ms < 0) {
        fprintf(stderr, "tlsk-exec: timeouts and --max-conns must be positive\n");
        return 2;
    }
    cfg.prog = argv + i;
    o.alpn = nalpn ? alpn : NULL;
    if (tlsk_context_new(&ctx, &o, err, sizeof err) != 0) {
        fprintf(stderr, "tlsk-exec: %s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    lfd = cli_listen(cfg.listen_at, bound, sizeof bound);
    if (lfd < 0) {
        fprintf(stderr, "tlsk-exec: -l %s: %s\n", cfg.listen_at, strerror(-lfd));
        return 1;
    }
    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    cli_log("listening on %s; running %s per connection; kTLS %s (kernel %s)", bound,
            cfg.prog[0], k->ulp ? "available" : "not available, relaying in userspace",
            k->release);
    for (;;) {
        struct pollfd pf = { .fd = lfd, .events = POLLIN };
        pid_t p;
        int cfd;

        while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
            active--;
        }
        if (active >= cfg.max_conns) {
            poll(NULL, 0, 50);
            continue;
        }
        if (poll(&pf, 1, 1000) <= 0) {
            continue;
        }
        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                cli_log("accept: %s; pausing", strerror(errno));
                poll(NULL, 0, 100);
            } else if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN) {
                cli_log("accept: %s", strerror(errno));
                return 1;
            }
            continue;
        }
        seq++;
        p = fork();
        if (p == 0) {
            close(lfd);
            _exit(handle(seq, cfd));
        }
        if (p < 0) {
            cli_log("fork: %s; dropping the connection", strerror(errno));
        } else {
            active++;
        }
        close(cfd);
    }
}

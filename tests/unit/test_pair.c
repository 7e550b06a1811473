/*
 * test_pair.c - a TLS pair over caller-supplied bytes (Node's createSecurePair) and a socket
 * over a transport that is not TCP.
 *
 *   PAIR-1  server pair (agent1) + client pair (ca1) wired in memory: both handshakes finish,
 *           1 MiB each way intact, cipher / peer certificate / authorized as on a socket
 *   PAIR-2  server pair requiring a client certificate (ca1): agent1 is authorized; agent2
 *           fails both sides, the client with TLSK_EALERT(48) unknown_ca (TLS 1.2 and 1.3)
 *   PAIR-3  encrypted bytes fed one at a time, then in 64 KiB chunks: same results
 *   PAIR-4  a server pair whose encrypted side the test pumps to a TCP connection from
 *           `openssl s_client`: echo works; bytes pulled == tlsk_socket_bytes_written
 *   TS-4    tlsk server and client sockets over an AF_UNIX socketpair: 1 MiB echo
 *
 * A pair never uses the kernel and neither does an AF_UNIX socket: offload is userspace with
 * reason not_tcp in both tiers.
 */
#include <errno.h>
#include <fcntl.h>
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
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "tap.h"

#define MIB (1u << 20)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct tlsk_context *mkctx(const char *cert, const char *key, const char *ca, int version,
                                  unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = cert ? h_fixture(cert) : NULL;
    o.key_file = key ? h_fixture(key) : NULL;
    o.ca_file = ca ? h_fixture(ca) : NULL;
    o.min_version = o.max_version = version;
    o.flags = flags;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
        return NULL;
    }
    return c;
}

/* Move every pending encrypted byte of from into to, in pieces of at most chunk bytes.
 * Returns how many moved, or a negative code from feed. */
static ssize_t pump(struct tlsk_socket *from, struct tlsk_socket *to, size_t chunk,
                    uint64_t *total)
{
    static unsigned char buf[65536];
    ssize_t moved = 0;

    if (chunk > sizeof buf) {
        chunk = sizeof buf;
    }
    for (;;) {
        ssize_t n = tlsk_pair_pull(from, buf, chunk), f;
        if (n <= 0) {
            return n < 0 ? n : moved;
        }
        f = tlsk_pair_feed(to, buf, (size_t)n);
        if (f != n) {
            return f < 0 ? f : -EIO;
        }
        moved += n;
        if (total) {
            *total += (uint64_t)n;
        }
    }
}

struct wire {
    struct tlsk_socket *c, *s;
    size_t chunk;
    uint64_t c2s, s2c; /* bytes pumped each way */
};

/* Handshake both pairs.  With chunk 1 every byte is fed singly and both sides step after
 * each.  Returns 0, or the first error (*who: 'c' or 's'). */
static int wire_handshake(struct wire *w, int *crc, int *src)
{
    static unsigned char b[65536];
    int cdone = 0, sdone = 0;

    *crc = *src = -EAGAIN;
    for (int round = 0; round < 2000000 && !(cdone && sdone); round++) {
        ssize_t n;
        int progress = 0;

        if (!cdone) {
            *crc = tlsk_socket_handshake(w->c);
            cdone = *crc != -EAGAIN;
        }
        if (!sdone) {
            *src = tlsk_socket_handshake(w->s);
            sdone = *src != -EAGAIN;
        }
        /* One piece each way, then step again. */
        if ((n = tlsk_pair_pull(w->c, b, w->chunk)) > 0) {
            tlsk_pair_feed(w->s, b, (size_t)n);
            w->c2s += (uint64_t)n;
            progress = 1;
        }
        if ((n = tlsk_pair_pull(w->s, b, w->chunk)) > 0) {
            tlsk_pair_feed(w->c, b, (size_t)n);
            w->s2c += (uint64_t)n;
            progress = 1;
        }
        if (!progress && !(cdone && sdone) && (cdone || sdone)) {
            /* One side finished or failed and nothing moves: step the other once more. */
            if (!cdone) {
                *crc = tlsk_socket_handshake(w->c);
                cdone = 1;
            }
            if (!sdone) {
                *src = tlsk_socket_handshake(w->s);
                sdone = 1;
            }
        } else if (!progress && !cdone && !sdone) {
            break; /* stuck */
        }
    }
    return *crc == 0 && *src == 0 ? 0 : -1;
}

/* Read what is readable on s, checking it against pattern seed at *off. */
static int drain_check(struct tlsk_socket *s, uint32_t seed, uint64_t *off, uint64_t want)
{
    static unsigned char b[65536];

    while (*off < want) {
        ssize_t n = tlsk_socket_read(s, b, sizeof b);
        if (n == -EAGAIN) {
            return 0;
        }
        if (n <= 0) {
            return n == 0 ? -EPIPE : (int)n;
        }
        if (h_pattern_check(seed, *off, b, (size_t)n) >= 0) {
            return -EILSEQ;
        }
        *off += (uint64_t)n;
    }
    return 0;
}

/* len bytes each way (seeds 11 c->s, 12 s->c), writes of up to 16 KiB + 3, encrypted bytes
 * moved in w->chunk pieces with a read attempt after each piece.  0 or an error. */
static int wire_transfer(struct wire *w, uint64_t len)
{
    static unsigned char b[16387], piece[65536];
    uint64_t csent = 0, ssent = 0, cgot = 0, sgot = 0;
    int rc;

    for (int guard = 0; guard < 10000000 && (cgot < len || sgot < len); guard++) {
        ssize_t n;
        int progress = 0;

        if (csent < len) {
            size_t k = len - csent < sizeof b ? (size_t)(len - csent) : sizeof b;
            h_pattern(11, csent, b, k);
            n = tlsk_socket_write(w->c, b, k);
            if (n < 0 && n != -EAGAIN) {
                return (int)n;
            }
            if (n > 0) {
                csent += (uint64_t)n;
                progress = 1;
            }
        }
        if (ssent < len) {
            size_t k = len - ssent < sizeof b ? (size_t)(len - ssent) : sizeof b;
            h_pattern(12, ssent, b, k);
            n = tlsk_socket_write(w->s, b, k);
            if (n < 0 && n != -EAGAIN) {
                return (int)n;
            }
            if (n > 0) {
                ssent += (uint64_t)n;
                progress = 1;
            }
        }
        while ((n = tlsk_pair_pull(w->c, piece, w->chunk)) > 0) {
            tlsk_pair_feed(w->s, piece, (size_t)n);
            w->c2s += (uint64_t)n;
            progress = 1;
            if ((rc = drain_check(w->s, 11, &sgot, len)) != 0) {
                return rc;
            }
        }
        while ((n = tlsk_pair_pull(w->s, piece, w->chunk)) > 0) {
            tlsk_pair_feed(w->c, piece, (size_t)n);
            w->s2c += (uint64_t)n;
            progress = 1;
            if ((rc = drain_check(w->c, 12, &cgot, len)) != 0) {
                return rc;
            }
        }
        if ((rc = drain_check(w->s, 11, &sgot, len)) != 0 ||
            (rc = drain_check(w->c, 12, &cgot, len)) != 0) {
            return rc;
        }
        if (!progress && (cgot < len || sgot < len)) {
            return -EDEADLK;
        }
    }
    return cgot == len && sgot == len ? 0 : -EIO;
}

static int is_not_tcp(const struct tlsk_socket *s)
{
    struct tlsk_offload o = tlsk_socket_offload(s);
    return o.tx.mode == TLSK_MODE_USERSPACE && o.rx.mode == TLSK_MODE_USERSPACE &&
           o.tx.reason == TLSK_REASON_NOT_TCP && o.rx.reason == TLSK_REASON_NOT_TCP;
}

static const char *subject_cn(const struct tlsk_cert_info *ci)
{
    for (size_t i = 0; ci && i < ci->subject_count; i++) {
        if (strcmp(ci->subject[i].key, "CN") == 0) {
            return ci->subject[i].value;
        }
    }
    return "";
}

/* PAIR-1 (chunk 64 KiB) and PAIR-3 (chunk 1, then 64 KiB). */
static void pair_basic(const char *tag, size_t hs_chunk, size_t data_chunk1, uint64_t len1,
                       uint64_t len2)
{
    struct tlsk_context *sctx = mkctx("agent1-cert.pem", "agent1-key.pem", NULL, 0, 0);
    struct tlsk_context *cctx = mkctx(NULL, NULL, "ca1-cert.pem", 0, 0);
    struct tlsk_socket_options co = { .servername = "localhost" };
    struct wire w = { .chunk = hs_chunk };
    struct tlsk_cipher_info sci, cci;
    struct tlsk_cert_info *ci = NULL;
    int crc, src, rc;
    int64_t t0 = now_ms();

    if (!sctx || !cctx) {
        TAP_OK(0, "%s: contexts", tag);
        goto out;
    }
    TAP_IS(tlsk_pair_new(&w.s, sctx, 1, NULL), 0, "%s: server pair", tag);
    TAP_IS(tlsk_pair_new(&w.c, cctx, 0, &co), 0, "%s: client pair", tag);
    if (!w.s || !w.c) {
        goto out;
    }
    TAP_IS(tlsk_socket_fd(w.s), -1, "%s: a pair has no fd", tag);
    TAP_OK(tlsk_socket_get_cipher(w.c, &cci) == TLSK_ESTATE, "%s: get_cipher before: ESTATE", tag);
    TAP_OK(tlsk_socket_version(w.c) == NULL, "%s: version before: NULL", tag);
    rc = wire_handshake(&w, &crc, &src);
    TAP_OK(rc == 0,
           "%s: both handshakes complete, fed %zu byte(s) at a time (client %s, server %s)", tag,
           hs_chunk, tlsk_err_name(crc), tlsk_err_name(src));
    if (rc != 0) {
        tap_diag("client: %s / server: %s", tlsk_socket_error_detail(w.c),
                 tlsk_socket_error_detail(w.s));
        goto out;
    }
    TAP_IS(tlsk_socket_authorized(w.c), 1, "%s: client authorized (agent1 via ca1, localhost)",
           tag);
    TAP_OK(tlsk_socket_authorization_error(w.c) == NULL, "%s: no authorizationError", tag);
    memset(&cci, 0, sizeof cci);
    memset(&sci, 0, sizeof sci);
    rc = tlsk_socket_get_cipher(w.c, &cci) | tlsk_socket_get_cipher(w.s, &sci);
    TAP_OK(rc == 0 && cci.name && sci.name && strcmp(cci.name, sci.name) == 0 &&
               strcmp(cci.version, sci.version) == 0 && cci.bits >= 128,
           "%s: get_cipher agrees on both sides (%s %s %d)", tag, cci.name, cci.version, cci.bits);
    TAP_OK(tlsk_socket_cipher(w.c) && cci.name && strcmp(tlsk_socket_cipher(w.c), cci.name) == 0,
           "%s: tlsk_socket_cipher == get_cipher().name", tag);
    rc = tlsk_socket_peer_certificate(w.c, 0, &ci);
    TAP_OK(rc == 0 && strcmp(subject_cn(ci), "agent1") == 0 &&
               ci->subjectaltname && strstr(ci->subjectaltname, "DNS:localhost"),
           "%s: client's peer certificate is agent1 (%s, SAN %s)", tag,
           rc == 0 ? subject_cn(ci) : "-",
           rc == 0 && ci->subjectaltname ? ci->subjectaltname : "-");
    tlsk_cert_info_free(ci);
    ci = NULL;
    TAP_IS(tlsk_socket_peer_certificate(w.s, 0, &ci), -ENOENT,
           "%s: server pair without requestCert: no peer certificate", tag);
    tlsk_cert_info_free(ci);
    ci = NULL;
    TAP_OK(tlsk_socket_servername(w.s) && strcmp(tlsk_socket_servername(w.s), "localhost") == 0,
           "%s: server sees servername localhost", tag);
    TAP_OK(is_not_tcp(w.c) && is_not_tcp(w.s), "%s: offload userspace/not_tcp both directions, "
                                               "both pairs", tag);

    w.chunk = data_chunk1;
    rc = wire_transfer(&w, len1);
    TAP_OK(rc == 0, "%s: %llu bytes each way intact, fed in %zu-byte pieces (%s)", tag,
           (unsigned long long)len1, data_chunk1, tlsk_err_name(rc));
    if (len2) {
        w.chunk = 65536;
        rc = wire_transfer(&w, len2);
        TAP_OK(rc == 0, "%s: then %llu bytes each way in 64 KiB pieces (%s)", tag,
               (unsigned long long)len2, tlsk_err_name(rc));
    }
    TAP_IS(tlsk_socket_bytes_written(w.c), w.c2s, "%s: client bytes_written == bytes pumped", tag);
    TAP_IS(tlsk_socket_bytes_written(w.s), w.s2c, "%s: server bytes_written == bytes pumped", tag);
    TAP_IS(tlsk_socket_bytes_read(w.s), w.c2s, "%s: server bytes_read == bytes fed", tag);
    TAP_IS(tlsk_socket_bytes_read(w.c), w.s2c, "%s: client bytes_read == bytes fed", tag);

    /* close_notify both ways through the wire. */
    {
        unsigned char b[64];
        int r1 = tlsk_socket_shutdown(w.c);
        ssize_t r2;
        pump(w.c, w.s, 65536, &w.c2s);
        r2 = tlsk_socket_read(w.s, b, sizeof b);
        TAP_OK(r1 == 0 && r2 == 0, "%s: client shutdown -> server read 0 (close_notify) (%d, %zd)",
               tag, r1, r2);
        r1 = tlsk_socket_shutdown(w.s);
        pump(w.s, w.c, 65536, &w.s2c);
        r2 = tlsk_socket_read(w.c, b, sizeof b);
        TAP_OK(r1 == 0 && r2 == 0, "%s: server shutdown -> client read 0 (%d, %zd)", tag, r1, r2);
        TAP_IS(tlsk_socket_write(w.c, "x", 1), TLSK_ECLOSED, "%s: write after shutdown: ECLOSED",
               tag);
    }
    tap_diag("%s: %lld ms", tag, (long long)(now_ms() - t0));
out:
    tlsk_socket_free(w.c);
    tlsk_socket_free(w.s);
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* PAIR-2 */
static void pair_client_cert(int version)
{
    const char *v = version == TLSK_TLS1_3 ? "1.3" : "1.2";
    struct tlsk_context *sctx =
        mkctx("agent1-cert.pem", "agent1-key.pem", "ca1-cert.pem", version, TLSK_REQUIRE_PEER_CERT);
    struct tlsk_context *good =
        mkctx("agent1-cert.pem", "agent1-key.pem", "ca1-cert.pem", version, 0);
    struct tlsk_context *bad =
        mkctx("agent2-cert.pem", "agent2-key.pem", "ca1-cert.pem", version, 0);
    struct tlsk_socket_options co = { .servername = "localhost" };
    struct tlsk_cert_info *ci = NULL;
    struct wire w = { .chunk = 65536 };
    int crc, src, cerr;

    if (!sctx || !good || !bad) {
        TAP_OK(0, "PAIR-2 %s: contexts", v);
        goto out;
    }
    tlsk_pair_new(&w.s, sctx, 1, NULL);
    tlsk_pair_new(&w.c, good, 0, &co);
    wire_handshake(&w, &crc, &src);
    TAP_OK(crc == 0 && src == 0, "PAIR-2 %s: client pair with agent1: both complete (%s, %s)", v,
           tlsk_err_name(crc), tlsk_err_name(src));
    TAP_IS(tlsk_socket_authorized(w.s), 1, "PAIR-2 %s: server pair: client authorized", v);
    TAP_OK(tlsk_socket_peer_certificate(w.s, 0, &ci) == 0 && strcmp(subject_cn(ci), "agent1") == 0,
           "PAIR-2 %s: server sees the client's certificate agent1", v);
    tlsk_cert_info_free(ci);
    ci = NULL;
    tlsk_socket_free(w.c);
    tlsk_socket_free(w.s);
    w = (struct wire){ .chunk = 65536 };

    tlsk_pair_new(&w.s, sctx, 1, NULL);
    tlsk_pair_new(&w.c, bad, 0, &co);
    wire_handshake(&w, &crc, &src);
    TAP_OK(src < 0 && src != -EAGAIN, "PAIR-2 %s: agent2: the server pair fails (%s: %s)", v,
           tlsk_err_name(src), tlsk_socket_error_detail(w.s));
    TAP_OK(tlsk_socket_authorized(w.s) != 1, "PAIR-2 %s: agent2 not authorized", v);
    /* The server's fatal alert is now pending: deliver it. */
    pump(w.s, w.c, 65536, NULL);
    cerr = crc;
    if (crc == 0) {
        /* TLS 1.3: the client's handshake ends before the server checks its certificate; the
         * alert arrives on the next read. */
        unsigned char b[64];
        cerr = (int)tlsk_socket_read(w.c, b, sizeof b);
    }
    if (version == TLSK_TLS1_2) {
        TAP_IS(crc, TLSK_EALERT(48), "PAIR-2 1.2: the client's handshake fails with alert 48 "
                                     "unknown_ca");
    } else {
        TAP_IS(cerr, TLSK_EALERT(48), "PAIR-2 1.3: the client errors with alert 48 unknown_ca "
                                      "(handshake %s)", tlsk_err_name(crc));
    }
out:
    tlsk_socket_free(w.c);
    tlsk_socket_free(w.s);
    tlsk_context_free(sctx);
    tlsk_context_free(good);
    tlsk_context_free(bad);
}

/* ---------------------------------------------------------------------------------------- */
/* PAIR-4: openssl s_client over TCP, the test pumping the pair.                             */

static pid_t g_kid = -1;

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_pair: timed out\n";
    (void)sig;
    if (g_kid > 0) {
        kill(g_kid, SIGKILL);
    }
    if (write(1, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    _exit(1);
}

/* Spawn argv with stdin from a pipe (*in) and stdout+stderr to a pipe (*out). */
static pid_t spawn(char *const argv[], int *in, int *out)
{
    int ip[2], op[2];
    pid_t p;

    if (pipe2(ip, O_CLOEXEC) != 0 || pipe2(op, O_CLOEXEC) != 0) {
        return -1;
    }
    p = fork();
    if (p == 0) {
        dup2(ip[0], 0);
        dup2(op[1], 1);
        dup2(op[1], 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(ip[0]);
    close(op[1]);
    *in = ip[1];
    *out = op[0];
    return p;
}

static int reap(pid_t p, int ms)
{
    int64_t end = now_ms() + ms;
    int st;

    for (;;) {
        pid_t r = waitpid(p, &st, WNOHANG);
        if (r == p) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (now_ms() > end) {
            kill(p, SIGKILL);
            waitpid(p, &st, 0);
            return -ETIMEDOUT;
        }
        usleep(5000);
    }
}

static void pair_s_client(void)
{
    struct tlsk_context *sctx = mkctx("agent1-cert.pem", "agent1-key.pem", NULL, 0, 0);
    struct tlsk_socket *p = NULL;
    char port[16], ca[512];
    int lp, lfd = h_listen(&lp), fd = -1, kin = -1, kout = -1, st;
    static char out[65536];
    size_t outlen = 0;
    uint64_t pulled = 0, fed = 0;
    int hs = -EAGAIN, got_eof = 0, saw_echo = 0, sent_line = 0, ended = 0;
    const char line[] = "hello through a pair\n";
    size_t echoed = 0;
    int64_t end;

    snprintf(port, sizeof port, "127.0.0.1:%d", lp);
    snprintf(ca, sizeof ca, "%s", h_fixture("ca1-cert.pem"));
    char *argv[] = { "openssl", "s_client", "-connect", port, "-CAfile", ca, "-servername",
                     "localhost", "-verify_return_error", "-verify_hostname", "localhost",
                     NULL };
    if (!sctx || lfd < 0 || tlsk_pair_new(&p, sctx, 1, NULL) != 0) {
        TAP_OK(0, "PAIR-4: setup");
        goto out;
    }
    g_kid = spawn(argv, &kin, &kout);
    {
        struct pollfd a = { .fd = lfd, .events = POLLIN };
        if (poll(&a, 1, 10000) == 1) {
            fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        }
    }
    if (!TAP_OK(fd >= 0, "PAIR-4: s_client connected")) {
        goto out;
    }
    h_set_nonblock(fd, true);
    h_set_nonblock(kout, true);
    end = now_ms() + 20000;
    while (now_ms() < end && !(got_eof && ended)) {
        struct pollfd pf[2] = { { .fd = fd, .events = POLLIN }, { .fd = kout, .events = POLLIN } };
        unsigned char b[16384];
        ssize_t n;

        /* Pump out whatever the pair has. */
        while ((n = tlsk_pair_pull(p, b, sizeof b)) > 0) {
            ssize_t off = 0;
            while (off < n) {
                ssize_t w = write(fd, b + off, (size_t)(n - off));
                if (w > 0) {
                    off += w;
                } else if (w < 0 && errno == EAGAIN) {
                    struct pollfd o = { .fd = fd, .events = POLLOUT };
                    poll(&o, 1, 1000);
                } else {
                    break;
                }
            }
            pulled += (uint64_t)n;
        }
        if (ended && got_eof) {
            break;
        }
        if (poll(pf, kout >= 0 ? 2 : 1, 200) < 0) {
            break;
        }
        if (pf[0].revents) {
            n = read(fd, b, sizeof b);
            if (n > 0) {
                tlsk_pair_feed(p, b, (size_t)n);
                fed += (uint64_t)n;
            } else if (n == 0) {
                got_eof = 1;
                ended = 1;
            }
        }
        if (kout >= 0 && pf[1].revents) {
            n = read(kout, out + outlen, sizeof out - 1 - outlen);
            if (n > 0) {
                outlen += (size_t)n;
                out[outlen] = 0;
            } else if (n == 0) {
                close(kout);
                kout = -1;
            }
        }
        if (hs == -EAGAIN) {
            hs = tlsk_socket_handshake(p);
            if (hs != 0 && hs != -EAGAIN) {
                break;
            }
        }
        if (hs == 0) {
            if (!sent_line && strstr(out, "Verify return code")) {
                /* s_client is in its data phase: type a line. */
                if (write(kin, line, sizeof line - 1) != (ssize_t)(sizeof line - 1)) {
                    break;
                }
                sent_line = 1;
            }
            for (;;) {
                n = tlsk_socket_read(p, b, sizeof b);
                if (n > 0) {
                    tlsk_socket_write(p, b, (size_t)n); /* echo */
                    echoed += (size_t)n;
                    continue;
                }
                if (n == 0 && !ended) {
                    /* s_client's close_notify: answer with ours. */
                    tlsk_socket_shutdown(p);
                    ended = 1;
                }
                break;
            }
            if (!saw_echo && sent_line) {
                /* s_client's stdout carries only what the server sent: this is the echo. */
                if (strstr(out, "hello through a pair")) {
                    saw_echo = 1;
                    close(kin); /* EOF on stdin: s_client sends close_notify and exits */
                    kin = -1;
                }
            }
        }
    }
    TAP_IS(hs, 0, "PAIR-4: the pair's handshake with s_client completed");
    TAP_OK(strstr(out, "Verify return code: 0 (ok)") != NULL, "PAIR-4: s_client verified agent1");
    TAP_IS(echoed, sizeof line - 1, "PAIR-4: the pair received the line");
    TAP_OK(saw_echo, "PAIR-4: s_client printed the echo");
    TAP_IS(pulled, tlsk_socket_bytes_written(p),
           "PAIR-4: bytes pulled (%llu) == tlsk_socket_bytes_written", (unsigned long long)pulled);
    TAP_IS(fed, tlsk_socket_bytes_read(p), "PAIR-4: bytes fed (%llu) == tlsk_socket_bytes_read",
           (unsigned long long)fed);
    TAP_OK(is_not_tcp(p), "PAIR-4: offload userspace/not_tcp even though the test's transport "
                          "is TCP");
    if (kin >= 0) {
        close(kin);
        kin = -1;
    }
    st = reap(g_kid, 5000);
    g_kid = -1;
    TAP_IS(st, 0, "PAIR-4: s_client exited 0");
    if (st != 0 || !saw_echo) {
        tap_diag("s_client output: %.1500s", out);
    }
out:
    if (kin >= 0) {
        close(kin);
    }
    if (kout >= 0) {
        close(kout);
    }
    if (g_kid > 0) {
        reap(g_kid, 100);
        g_kid = -1;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (lfd >= 0) {
        close(lfd);
    }
    tlsk_socket_free(p);
    tlsk_context_free(sctx);
}

/* ---------------------------------------------------------------------------------------- */
/* TS-4: sockets over an AF_UNIX socketpair.                                                 */

struct ts4 {
    struct tlsk_socket *s;
    int rc;
    size_t echoed;
};

static void *ts4_server(void *arg)
{
    struct ts4 *t = arg;
    static unsigned char b[65536];

    t->rc = h_handshake(t->s);
    while (t->rc == 0) {
        ssize_t n = h_read_some(t->s, b, sizeof b);
        if (n == 0) {
            t->rc = h_shutdown(t->s);
            break;
        }
        if (n < 0) {
            t->rc = (int)n;
            break;
        }
        t->echoed += (size_t)n;
        t->rc = h_write_all(t->s, b, (size_t)n);
    }
    return NULL;
}

struct ts4c {
    struct tlsk_socket *s;
    size_t len;
    int rc;
};

static void *ts4_sender(void *arg)
{
    struct ts4c *c = arg;
    c->rc = h_send_pattern(c->s, 21, c->len);
    return NULL;
}

static void test_ts4(void)
{
    struct tlsk_context *sctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket_options co = { .servername = "localhost" };
    struct ts4 srv = { 0 };
    struct ts4c snd = { .len = MIB };
    struct tlsk_socket *c = NULL;
    pthread_t ts, tc;
    int sv[2], rc;
    char b[16];

    if (!sctx || !cctx || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        TAP_OK(0, "TS-4: setup");
        return;
    }
    TAP_IS(tlsk_socket_new_server(&srv.s, sctx, sv[1], NULL), 0, "TS-4: server over AF_UNIX");
    TAP_IS(tlsk_socket_new_client(&c, cctx, sv[0], &co), 0, "TS-4: client over AF_UNIX");
    h_spawn(&ts, ts4_server, &srv);
    rc = h_handshake(c);
    TAP_IS(rc, 0, "TS-4: handshake over a socketpair (%s)", tlsk_err_name(rc));
    if (rc == 0) {
        /* One thread per socket at a time (tlsk.h): send a chunk, read its echo, repeat. */
        static unsigned char out[16384], in[16384];
        (void)tc;
        (void)ts4_sender;
        for (size_t off = 0; off < MIB && snd.rc == 0 && rc == 0; off += sizeof out) {
            h_pattern(21, off, out, sizeof out);
            snd.rc = h_write_all(c, out, sizeof out);
            if (snd.rc == 0) {
                ssize_t n = h_read_full(c, in, sizeof in);
                rc = n == (ssize_t)sizeof in && memcmp(in, out, sizeof in) == 0 ? 0
                     : n < 0                                                 ? (int)n
                                                                             : -EILSEQ;
            }
        }
        TAP_OK(snd.rc == 0 && rc == 0, "TS-4: 1 MiB echoed intact (%s / %s)",
               tlsk_err_name(snd.rc), tlsk_err_name(rc));
        rc = h_shutdown(c);
        TAP_OK(rc == 0 && h_read_some(c, b, sizeof b) == 0, "TS-4: close_notify both ways");
        TAP_OK(is_not_tcp(c), "TS-4: client offload userspace/not_tcp (tx %s, rx %s)",
               tlsk_reason_name(tlsk_socket_offload(c).tx.reason),
               tlsk_reason_name(tlsk_socket_offload(c).rx.reason));
    } else {
        shutdown(sv[0], SHUT_RDWR);
    }
    pthread_join(ts, NULL);
    TAP_IS(srv.rc, 0, "TS-4: server side finished cleanly (%s)", tlsk_err_name(srv.rc));
    TAP_IS(srv.echoed, MIB, "TS-4: server echoed 1 MiB");
    TAP_OK(is_not_tcp(srv.s), "TS-4: server offload userspace/not_tcp (tx %s)",
           tlsk_reason_name(tlsk_socket_offload(srv.s).tx.reason));
    tlsk_socket_free(c);
    tlsk_socket_free(srv.s);
    close(sv[0]);
    close(sv[1]);
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* Argument checks of the pair calls. */
static void pair_negative(void)
{
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *p = NULL, *fdsock = NULL;
    struct tlsk_socket_options co = { .servername = "localhost" };
    unsigned char b[8];
    int sv[2];

    TAP_IS(tlsk_pair_new(&p, cctx, 0, NULL), TLSK_ECONFIG,
           "pair client without servername (and verification on): ECONFIG");
    TAP_IS(tlsk_pair_new(&p, cctx, 0, &co), 0, "pair client");
    TAP_IS(tlsk_pair_pending(p), 0, "nothing pending before the handshake starts");
    TAP_IS(tlsk_socket_handshake(p), -EAGAIN, "handshake: -EAGAIN (feed more / pull)");
    TAP_OK(tlsk_pair_pending(p) > 0, "ClientHello pending (%zu bytes)", tlsk_pair_pending(p));
    TAP_IS(tlsk_pair_feed(p, NULL, 3), TLSK_ECONFIG, "feed(NULL, 3): ECONFIG");
    TAP_IS(tlsk_pair_feed(p, b, 0), 0, "feed of 0 bytes: 0");
    TAP_IS(tlsk_pair_pull(p, b, 0), 0, "pull into 0 bytes: 0");
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    tlsk_socket_new_client(&fdsock, cctx, sv[0], &co);
    TAP_OK(tlsk_pair_feed(fdsock, b, 1) < 0, "feed on an fd socket: error");
    TAP_OK(tlsk_pair_pull(fdsock, b, 1) < 0, "pull on an fd socket: error");
    TAP_IS(tlsk_pair_pending(fdsock), 0, "pending on an fd socket: 0");
    tlsk_socket_free(fdsock);
    close(sv[0]);
    close(sv[1]);
    tlsk_socket_free(p);
    tlsk_context_free(cctx);
}

int main(void)
{
    uint64_t big = MIB;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(300);
    pair_basic("PAIR-1", 65536, 65536, big, 0);
    pair_basic("PAIR-3", 1, 1, 65536, big);
    pair_client_cert(TLSK_TLS1_2);
    pair_client_cert(TLSK_TLS1_3);
    pair_s_client();
    test_ts4();
    pair_negative();
    return tap_done();
}

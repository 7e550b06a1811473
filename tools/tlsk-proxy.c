/*
 * tlsk-proxy - TLS terminator (TLS in, plaintext to a backend) and TLS origin (plaintext in,
 * TLS to an upstream), moving bytes with splice(2) when the kernel holds both directions.
 *
 *   tlsk-proxy --cert C --key K --listen HOST:PORT --backend HOST:PORT|unix:/path
 *              [--sni NAME=BACKEND ...] [--sni-cert NAME=CERT,KEY ...] [--proxy-protocol]
 *              [--alpn P ...] [--offload auto|tx|off|require] [--tls13-rx] [--no-splice]
 *   tlsk-proxy --origin --listen HOST:PORT --upstream HOST:PORT [--servername NAME]
 *              [--ca FILE] [--alpn P ...] [--offload ...] [--tls13-rx] [--no-splice]
 *
 * Connection model.  Worker threads (one per CPU) share the listening socket, each with an
 * epoll loop over the connections it accepted whose TLS handshake has not finished: a client
 * that connects and sends nothing, or trickles its ClientHello, costs a descriptor and a few
 * kilobytes there, no thread; it is cut at --handshake-timeout (10 s), and a worker holding
 * its share of --max-handshakes drops its oldest to admit the newest, so idle or slow clients
 * cannot lock anyone out.  A connection whose handshake completed gets a thread of its own
 * (backend connect, PROXY header, then relay.c's poll loop over two non-blocking sockets with
 * bounded buffers), at most --max-conns of them, each cut after --idle-timeout (300 s)
 * without progress.  Origin mode (plaintext in) has no handshake to wait for: an accepted
 * connection gets its thread at once.  Every connection is logged on stderr once when it
 * starts (offload, mode) and once when it ends (bytes, how each side closed); bytes a client
 * chose (its server name, error details quoting it) are escaped (cli_escape).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "relay.h"
#include "service.h"
#include "tlsk.h"

#define MAX_ALPN 8
#define MAX_ROUTES 32
#define MAX_SESSION 8192

struct route {
    const char *pattern; /* "host" or "*.suffix" */
    const char *backend;
};

static struct {
    bool origin;
    const char *listen_at, *backend, *upstream, *servername;
    struct route routes[MAX_ROUTES];
    size_t nroutes;
    bool proxy_protocol, no_splice;
    int hs_ms, connect_ms, idle_ms, max_conns, max_handshakes, workers;
} cfg = { .hs_ms = 10000, .connect_ms = 10000, .idle_ms = 300000 };

static struct tlsk_context *ctx;
static struct tlsk_sni *sni_table;
static atomic_int nconns;
static atomic_ulong conn_seq;
static int lfd = -1;

/* One accepted connection.  While its handshake runs it is on its worker's list (oldest
 * first); then it belongs to its relay thread. */
struct worker;
struct conn {
    struct conn *prev, *next;
    struct worker *w;
    unsigned long id;
    int fd;
    struct tlsk_socket *s;  /* NULL while lingering */
    long long deadline;     /* end of the handshake, or of the lingering close */
    bool lingering;         /* handshake failed or refused: draining before the close */
    bool sni_refused;
    size_t drained;
    uint32_t armed;
    struct sockaddr_storage peer_sa, local_sa; /* from accept(2): still there after a reset */
    char peer[80];
};

struct worker {
    pthread_t thread;
    int ep;
    struct conn *head, *tail;
    int npending, max_pending;
};

/* Origin mode: the latest resumable upstream session, shared by all connections. */
static pthread_mutex_t sess_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char sess[MAX_SESSION];
static size_t sess_len;

static void usage(FILE *f)
{
    fputs(
        "usage: tlsk-proxy --cert CERT --key KEY --listen HOST:PORT --backend HOST:PORT|unix:PATH\n"
        "                  [--sni NAME=BACKEND]... [--sni-cert NAME=CERT,KEY]...\n"
        "                  [--proxy-protocol] [--alpn PROTO]... [common options]\n"
        "       tlsk-proxy --origin --listen HOST:PORT --upstream HOST:PORT [--servername NAME]\n"
        "                  [--ca FILE] [--alpn PROTO]... [common options]\n"
        "\n"
        "Terminator (default): accepts TLS on --listen and forwards the plaintext to --backend\n"
        "(TCP, or a unix socket as unix:/path).  --sni routes by the name the client sent\n"
        "(exact names beat \"*.example.com\" wildcards; others go to --backend);\n"
        "--sni-cert serves another certificate for a name.  --proxy-protocol sends a PROXY\n"
        "protocol v2 header (client and listener addresses, ALPN, SNI, TLS version and\n"
        "cipher) to the backend.\n"
        "\n"
        "Under systemd (systemd/tlsk-proxy@.service and .socket), a listening socket passed by\n"
        "socket activation (LISTEN_FDS) replaces --listen, and READY=1 goes to NOTIFY_SOCKET\n"
        "once listening.\n"
        "\n"
        "Origin (--origin): accepts plaintext on --listen and connects to the TLS --upstream as\n"
        "a verifying client (SNI and host name --servername, default the upstream host; trust\n"
        "--ca, default the system store), resuming the last session on later connections.\n"
        "\n"
        "When the kernel holds both directions of a TLS connection, bytes move with splice(2)\n"
        "through a pipe each way and never enter userspace (\"mode splice\" in the log);\n"
        "otherwise they are copied through OpenSSL (\"mode copy\", or mixed per direction).\n"
        "Half-close propagates: the peer's close_notify becomes shutdown(SHUT_WR) on the plain\n"
        "side, and EOF on the plain side becomes close_notify.  A TLS peer that closes TCP\n"
        "without close_notify (truncation) is not passed on as a clean end: the plain side is\n"
        "reset (SO_LINGER 0, RST: the backend reads ECONNRESET, never EOF), and so it is after a\n"
        "TLS error.  A backend or upstream that is down closes the client's connection cleanly\n"
        "and is logged.  After a fatal error the client's connection is closed lingering\n"
        "(FIN, then up to 1 s / 256 KiB of its bytes read and dropped) so that our alert is\n"
        "read, not destroyed by a reset.\n"
        "\n"
        "A server name (SNI) that is not 1-255 letters, digits, '-', '_' and '.' refuses the\n"
        "handshake (logged escaped): such bytes never reach a backend, a PROXY header or a log.\n"
        "The PROXY header carries the addresses captured when the connection was accepted; a\n"
        "client gone (reset) before it is sent drops the connection (the backend is reset).\n"
        "\n"
        "Handshakes run in --workers epoll loops without a thread each: a client that sends\n"
        "nothing is cut at --handshake-timeout, and when --max-handshakes are waiting the\n"
        "oldest is dropped for the newest.  Each connection past its handshake has a thread.\n"
        "\n"
        "Common options:\n"
        "  --offload auto|tx|off|require   kTLS policy (default auto)\n"
        "  --tls13-rx             offload TLS 1.3 receive on kernels without re-key (< 6.14);\n"
        "                         a peer KeyUpdate then kills that connection\n"
        "  --tls-min 1.2|1.3, --tls-max 1.2|1.3\n"
        "  --no-splice            copy even when both directions are in the kernel\n"
        "  --handshake-timeout S (10), --connect-timeout S (10), --idle-timeout S (300, 0 = none)\n"
        "  --max-conns N          connections past the handshake (default 10000, lowered to fit\n"
        "                         the descriptor limit); a handshake completing beyond is refused\n"
        "  --max-handshakes N     handshakes in progress (default 10000, lowered to fit); beyond,\n"
        "                         the oldest is dropped\n"
        "  --workers N            handshake threads (default: the CPUs this process may use)\n"
        "The address actually bound is logged (\"listening on HOST:PORT\"): port 0 picks one.\n",
        f);
}

/* ---------------------------------------------------------------------------------------- */

static bool route_match(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcasecmp(dot, pattern + 1) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

static const char *pick_backend(const char *name)
{
    if (name) {
        for (size_t i = 0; i < cfg.nroutes; i++) {
            if (cfg.routes[i].pattern[0] != '*' && route_match(cfg.routes[i].pattern, name)) {
                return cfg.routes[i].backend;
            }
        }
        for (size_t i = 0; i < cfg.nroutes; i++) {
            if (cfg.routes[i].pattern[0] == '*' && route_match(cfg.routes[i].pattern, name)) {
                return cfg.routes[i].backend;
            }
        }
    }
    return cfg.backend;
}

/* Write all of buf to a non-blocking socket within timeout_ms.  Returns 0 or -errno. */
static int send_all(int fd, const void *buf, size_t len, int timeout_ms)
{
    const unsigned char *p = buf;
    long long deadline = cli_now_ms() + timeout_ms;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -errno;
        }
        long long left = deadline - cli_now_ms();
        struct pollfd pf = { .fd = fd, .events = POLLOUT };
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        poll(&pf, 1, (int)left);
    }
    return 0;
}

static size_t tlv(unsigned char *p, unsigned char type, const void *v, size_t len)
{
    p[0] = type;
    p[1] = (unsigned char)(len >> 8);
    p[2] = (unsigned char)len;
    memcpy(p + 3, v, len);
    return 3 + len;
}

/* PROXY protocol v2 (haproxy's proxy-protocol.txt 2.2): PROXY command, TCP over IPv4/IPv6
 * with the client's address as source and ours as destination, then TLVs for ALPN (0x01),
 * authority = SNI (0x02) and SSL (0x20: client flag, verify, version and cipher sub-TLVs).
 * The addresses are the ones accept(2) gave, never what getpeername() says later: after a
 * reset it fails.  Returns the header's length, or 0 when no honest header can be built. */
static size_t proxy_v2(unsigned char *out, size_t cap, const struct conn *c,
                       const struct tlsk_socket *s)
{
    static const unsigned char sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
    const struct sockaddr_storage *src = &c->peer_sa, *dst = &c->local_sa;
    size_t n = 16;
    const char *alpn = tlsk_socket_alpn_protocol(s), *sni = tlsk_socket_servername(s);
    const char *ver = tlsk_socket_version(s), *cip = tlsk_socket_cipher(s);

    if (cap < 512) {
        return 0;
    }
    memcpy(out, sig, sizeof sig);
    out[12] = 0x21; /* version 2, PROXY */
    if (src->ss_family == AF_INET && dst->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
        out[13] = 0x11;
        memcpy(out + n, &a->sin_addr, 4);
        memcpy(out + n + 4, &b->sin_addr, 4);
        memcpy(out + n + 8, &a->sin_port, 2);
        memcpy(out + n + 10, &b->sin_port, 2);
        n += 12;
    } else if (src->ss_family == AF_INET6 && dst->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
        out[13] = 0x21;
        memcpy(out + n, &a->sin6_addr, 16);
        memcpy(out + n + 16, &b->sin6_addr, 16);
        memcpy(out + n + 32, &a->sin6_port, 2);
        memcpy(out + n + 34, &b->sin6_port, 2);
        n += 36;
    } else {
        return 0;
    }
    if (alpn && strlen(alpn) < 256) {
        n += tlv(out + n, 0x01, alpn, strlen(alpn));
    }
    if (sni && cli_servername_ok(sni)) {
        n += tlv(out + n, 0x02, sni, strlen(sni));
    }
    if (ver && cip && strlen(ver) < 32 && strlen(cip) < 96) {
        unsigned char ssl[160];
        size_t m = 0;
        ssl[m++] = 0x01;                         /* PP2_CLIENT_SSL */
        memcpy(ssl + m, "\0\0\0\1", 4);          /* verify: no client certificate checked */
        m += 4;
        m += tlv(ssl + m, 0x21, ver, strlen(ver)); /* PP2_SUBTYPE_SSL_VERSION */
        m += tlv(ssl + m, 0x23, cip, strlen(cip)); /* PP2_SUBTYPE_SSL_CIPHER */
        n += tlv(out + n, 0x20, ssl, m);
    }
    out[14] = (unsigned char)((n - 16) >> 8);
    out[15] = (unsigned char)(n - 16);
    return n;
}


static void log_end(unsigned long id, const struct tlsk_socket *s, const struct relay_result *r,
                    const char *tls_side, const char *plain_side)
{
    char detail[512];

    cli_escape(r->err ? tlsk_socket_error_detail(s) : "", detail, sizeof detail);
    cli_log("conn %lu closed: %llu bytes %s->%s, %llu bytes %s->%s; %s %s; %s %s"
            "%s%s%s%s%s%s%s%s%s%s",
            id, (unsigned long long)r->to_plain, tls_side, plain_side,
            (unsigned long long)r->to_tls, plain_side, tls_side, tls_side,
            r->peer_close_notify ? "sent close_notify"
            : r->peer_truncated  ? "closed without close_notify (truncated)"
                                 : "did not finish",
            plain_side, r->plain_eof ? "sent EOF" : "did not finish",
            r->sent_close_notify ? "; close_notify sent" : "",
            r->plain_reset || r->err ? "; " : "", r->plain_reset || r->err ? plain_side : "",
            r->plain_reset || r->err ? " reset" : "", r->err ? "; error in " : "",
            r->err ? r->err_where : "", r->err ? ": " : "", r->err ? tlsk_strerror(r->err) : "",
            detail[0] ? ": " : "", detail);
}

/* Best effort close_notify within a second, then a lingering close (cli_free_lingering). */
static void close_clean(struct tlsk_socket *s)
{
    long long deadline = cli_now_ms() + 1000;
    int r;
    while ((r = tlsk_socket_shutdown(s)) == -EAGAIN && cli_now_ms() < deadline) {
        struct pollfd pf = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
        poll(&pf, 1, 100);
    }
    cli_free_lingering(s);
}

/* The plain side after a relay: reset when the TLS side did not end cleanly (truncation, a
 * TLS error, the idle timeout), so that it never looks like a complete stream. */
static void close_plain_after(int fd, const struct relay_result *r)
{
    if (r->plain_reset || r->err) {
        cli_abort_close(fd);
    } else {
        cli_linger_close(fd);
    }
}

static void session_store(const struct tlsk_socket *s)
{
    unsigned char buf[MAX_SESSION];
    ssize_t n = tlsk_socket_session(s, buf, sizeof buf);
    if (n > 0) {
        pthread_mutex_lock(&sess_lock);
        memcpy(sess, buf, (size_t)n);
        sess_len = (size_t)n;
        pthread_mutex_unlock(&sess_lock);
    }
}

/* Whether the client is still connected: after a reset getpeername() fails (ENOTCONN). */
static bool client_connected(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    return getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* After the handshake: one thread per connection                                           */

static void terminate_conn(struct conn *c)
{
    struct tlsk_socket *s = c->s;
    struct relay_result res;
    char info[256], pp[1024], esni[1100];
    const char *sni = tlsk_socket_servername(s), *alpn = tlsk_socket_alpn_protocol(s);
    const char *backend = pick_backend(sni);
    int bfd, rc;

    cli_escape(sni, esni, sizeof esni);
    cli_describe(s, info, sizeof info);
    bfd = cli_connect(backend, cfg.connect_ms);
    if (bfd < 0) {
        cli_log("conn %lu from %s: %s; sni %s; backend %s unavailable: %s; closing the client "
                "with close_notify",
                c->id, c->peer, info, esni, backend, strerror(-bfd));
        close_clean(s);
        return;
    }
    if (cfg.proxy_protocol) {
        /* The addresses were captured at accept; a client reset since then is not served. */
        size_t n = client_connected(c->fd) ? proxy_v2((unsigned char *)pp, sizeof pp, c, s) : 0;
        if (n == 0) {
            cli_log("conn %lu from %s: %s; sni %s; backend %s: the client is gone (reset) or "
                    "its address is unknown; no PROXY header sent, dropping the connection",
                    c->id, c->peer, info, esni, backend);
            cli_abort_close(bfd);
            tlsk_socket_free(s);
            return;
        }
        if ((rc = send_all(bfd, pp, n, cfg.connect_ms)) != 0) {
            cli_log("conn %lu from %s: backend %s: PROXY header: %s; closing", c->id, c->peer,
                    backend, strerror(-rc));
            cli_abort_close(bfd);
            close_clean(s);
            return;
        }
    }
    cli_log("conn %lu from %s: %s; sni %s; alpn %s; backend %s; mode %s", c->id, c->peer, info,
            esni, alpn ? alpn : "-", backend, relay_mode_name(s, cfg.no_splice));
    relay_run(s, bfd, &(struct relay_options){ .idle_ms = cfg.idle_ms, .stop_fd = -1,
                                               .no_splice = cfg.no_splice },
              &res);
    log_end(c->id, s, &res, "client", "backend");
    close_plain_after(bfd, &res);
    cli_free_lingering(s);
}

static void origin_conn(struct conn *c)
{
    struct tlsk_socket *s = NULL;
    struct relay_result res;
    unsigned char sbuf[MAX_SESSION];
    size_t slen;
    char info[256], detail[512];
    int ufd, rc, cfd = c->fd;

    ufd = cli_connect(cfg.upstream, cfg.connect_ms);
    if (ufd < 0) {
        cli_log("conn %lu from %s: upstream %s unavailable: %s; closing the client", c->id,
                c->peer, cfg.upstream, strerror(-ufd));
        cli_linger_close(cfd);
        return;
    }
    pthread_mutex_lock(&sess_lock);
    slen = sess_len;
    memcpy(sbuf, sess, slen);
    pthread_mutex_unlock(&sess_lock);
    rc = tlsk_socket_new_client(&s, ctx, ufd,
                                &(struct tlsk_socket_options){ .servername = cfg.servername,
                                                               .flags = TLSK_SOCKET_OWN_FD,
                                                               .session = slen ? sbuf : NULL,
                                                               .session_len = slen });
    if (rc != 0) {
        cli_log("conn %lu from %s: %s", c->id, c->peer, tlsk_strerror(rc));
        close(ufd);
        cli_linger_close(cfd);
        return;
    }
    if ((rc = cli_handshake(s, cfg.hs_ms)) != 0) {
        cli_log("conn %lu from %s: upstream %s: handshake failed: %s %s; closing the client",
                c->id, c->peer, cfg.upstream, tlsk_err_name(rc),
                cli_escape(tlsk_socket_error_detail(s), detail, sizeof detail));
        cli_free_lingering(s);
        cli_abort_close(cfd);
        return;
    }
    session_store(s);
    cli_describe(s, info, sizeof info);
    const char *alpn = tlsk_socket_alpn_protocol(s);
    cli_log("conn %lu from %s: upstream %s: %s; session %s; alpn %s; mode %s", c->id, c->peer,
            cfg.upstream, info, tlsk_socket_session_reused(s) ? "reused" : "new",
            alpn ? alpn : "-", relay_mode_name(s, cfg.no_splice));
    relay_run(s, cfd, &(struct relay_options){ .idle_ms = cfg.idle_ms, .stop_fd = -1,
                                               .no_splice = cfg.no_splice },
              &res);
    session_store(s); /* TLS 1.3 tickets arrive after the handshake */
    log_end(c->id, s, &res, "upstream", "client");
    cli_free_lingering(s);
    close_plain_after(cfd, &res);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;

    if (cfg.origin) {
        origin_conn(c);
    } else {
        terminate_conn(c);
    }
    free(c);
    atomic_fetch_sub(&nconns, 1);
    return NULL;
}

/* Give c a thread of its own; false (nothing done) when the limit or the system says no. */
static bool start_thread(struct conn *c)
{
    pthread_t t;
    pthread_attr_t at;
    int rc;

    if (atomic_fetch_add(&nconns, 1) >= cfg.max_conns) {
        atomic_fetch_sub(&nconns, 1);
        cli_log("conn %lu from %s: refused: %d connections open (--max-conns)", c->id, c->peer,
                cfg.max_conns);
        return false;
    }
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256u << 10);
    rc = pthread_create(&t, &at, conn_main, c);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        atomic_fetch_sub(&nconns, 1);
        cli_log("conn %lu from %s: cannot start a thread (%s); closing the connection", c->id,
                c->peer, strerror(rc));
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Before the handshake completes: the workers' epoll loops                                 */

/* The client's server name: refused unless it is a plain host name (cli_servername_ok),
 * otherwise the SNI table's context for it. */
static int sni_check(struct tlsk_socket *s, const char *name, void *data,
                     struct tlsk_context **out)
{
    struct conn *c = data;

    (void)s;
    if (!cli_servername_ok(name)) {
        c->sni_refused = true;
        return -EINVAL;
    }
    *out = sni_table ? tlsk_sni_lookup(sni_table, name) : NULL;
    return 0;
}

static void list_unlink(struct conn *c)
{
    struct worker *w = c->w;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->head = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    } else {
        w->tail = c->prev;
    }
    c->prev = c->next = NULL;
    w->npending--;
}

static void list_append(struct worker *w, struct conn *c)
{
    c->w = w;
    c->prev = w->tail;
    c->next = NULL;
    if (w->tail) {
        w->tail->next = c;
    } else {
        w->head = c;
    }
    w->tail = c;
    w->npending++;
}

/* Forget c entirely: off the list and the epoll set, descriptor closed. */
static void conn_drop(struct conn *c)
{
    list_unlink(c);
    epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->s) {
        tlsk_socket_free(c->s); /* owns the fd */
    } else {
        close(c->fd);
    }
    free(c);
}

static void arm(struct conn *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (c->armed != ev && epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0) {
        c->armed = ev;
    }
}

/* Drain what the client still sends until its FIN, the deadline or CLI_LINGER_BYTES (the
 * handshake stage never has a kernel TLS layer: plain reads). */
static void linger_step(struct conn *c)
{
    char junk[16384];

    for (;;) {
        ssize_t n = read(c->fd, junk, sizeof junk);
        if (n > 0 && (c->drained += (size_t)n) < CLI_LINGER_BYTES) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        conn_drop(c);
        return;
    }
}

/* The handshake failed, or the connection is refused: FIN after whatever tlsk sent (an
 * alert), then linger, so that the client reads it instead of a reset. */
static void start_linger(struct conn *c)
{
    int fd = dup(c->fd);

    epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    tlsk_socket_free(c->s);
    c->s = NULL;
    c->fd = fd;
    c->armed = 0;
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0 ||
        epoll_ctl(c->w->ep, EPOLL_CTL_ADD, fd,
                  &(struct epoll_event){ .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c }) != 0) {
        if (fd < 0) {
            c->fd = -1;
        }
        list_unlink(c);
        if (c->fd >= 0) {
            close(c->fd);
        }
        free(c);
        return;
    }
    c->lingering = true;
    c->deadline = cli_now_ms() + CLI_LINGER_MS;
    linger_step(c);
}

static void hs_step(struct conn *c)
{
    int rc = tlsk_socket_handshake(c->s);
    char detail[512];

    if (rc == -EAGAIN) {
        int ev = tlsk_socket_events(c->s);
        arm(c, ((ev & POLLOUT) ? EPOLLOUT : 0) | ((ev & POLLIN) || !(ev & POLLOUT) ? EPOLLIN : 0));
        return;
    }
    if (rc != 0) {
        if (c->sni_refused) {
            cli_log("conn %lu from %s: handshake refused: server name \"%s\" is not a host name",
                    c->id, c->peer,
                    cli_escape(tlsk_socket_servername(c->s), detail, sizeof detail));
        } else {
            cli_log("conn %lu from %s: handshake failed: %s %s", c->id, c->peer,
                    tlsk_err_name(rc),
                    cli_escape(tlsk_socket_error_detail(c->s), detail, sizeof detail));
        }
        start_linger(c);
        return;
    }
    /* Done: the connection leaves this loop for a thread of its own. */
    epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->armed = 0;
    list_unlink(c);
    if (!start_thread(c)) {
        struct worker *w = c->w;
        list_append(w, c);
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd,
                      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c }) == 0) {
            c->armed = EPOLLIN;
        }
        start_linger(c);
    }
}

/* Make room: the oldest connection still in its handshake goes. */
static void drop_oldest(struct worker *w, const char *why)
{
    struct conn *c = w->head;
    if (c) {
        if (!c->lingering) {
            cli_log("conn %lu from %s: dropped before its handshake completed (%s)", c->id,
                    c->peer, why);
        }
        conn_drop(c);
    }
}

static void accept_some(struct worker *w)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa, ll;
        struct conn *c;
        int fd, rc;

        fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (w->head && !cfg.origin) {
                    drop_oldest(w, "out of descriptors");
                    continue;
                }
                cli_log("accept: %s; pausing", strerror(errno));
                poll(NULL, 0, 100);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                cli_log("accept: %s", strerror(errno));
                poll(NULL, 0, 100);
            }
            return;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->id = atomic_fetch_add(&conn_seq, 1) + 1;
        memcpy(&c->peer_sa, &sa, sl < sizeof sa ? sl : sizeof sa);
        cli_addr_name((struct sockaddr *)&c->peer_sa, c->peer, sizeof c->peer);
        ll = sizeof c->local_sa;
        if (getsockname(fd, (struct sockaddr *)&c->local_sa, &ll) != 0) {
            cli_log("conn %lu from %s: gone before it could be served (%s)", c->id, c->peer,
                    strerror(errno));
            close(fd);
            free(c);
            continue;
        }
        if (cfg.origin) {
            if (!start_thread(c)) {
                close(fd);
                free(c);
            }
            continue;
        }
        if (w->npending >= w->max_pending) {
            drop_oldest(w, "--max-handshakes");
        }
        rc = tlsk_socket_new_server(&c->s, ctx, fd,
                                    &(struct tlsk_socket_options){ .flags = TLSK_SOCKET_OWN_FD |
                                                                            TLSK_SOCKET_LEAN,
                                                                   .sni_cb = sni_check,
                                                                   .sni_data = c });
        if (rc != 0) {
            cli_log("conn %lu from %s: %s", c->id, c->peer, tlsk_strerror(rc));
            close(fd);
            free(c);
            continue;
        }
        list_append(w, c);
        c->deadline = cli_now_ms() + cfg.hs_ms;
        c->armed = EPOLLIN;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd,
                      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c }) != 0) {
            conn_drop(c);
            continue;
        }
        hs_step(c);
    }
}

/* Handshakes past --handshake-timeout and lingering closes past their second end. */
static void sweep(struct worker *w, long long now)
{
    struct conn *next;

    for (struct conn *c = w->head; c; c = next) {
        next = c->next;
        if (now < c->deadline) {
            continue;
        }
        if (!c->lingering) {
            cli_log("conn %lu from %s: handshake failed: %s (--handshake-timeout)", c->id,
                    c->peer, tlsk_err_name(-ETIMEDOUT));
        }
        conn_drop(c);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event ev[64];
    long long next_sweep = cli_now_ms() + 100;

    for (;;) {
        int n = epoll_wait(w->ep, ev, 64, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            if (!c) {
                accept_some(w);
            } else if (c->lingering) {
                linger_step(c);
            } else {
                hs_step(c);
            }
        }
        long long now = cli_now_ms();
        if (now >= next_sweep) {
            next_sweep = now + 100;
            sweep(w, now);
        }
    }
    return NULL;
}

static int default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        return CPU_COUNT(&set);
    }
    return 1;
}
/* ---------------------------------------------------------------------------------------- */

static int parse_version(const char *v)
{
    return strcmp(v, "1.2") == 0 ? TLSK_TLS1_2 : strcmp(v, "1.3") == 0 ? TLSK_TLS1_3 : -1;
}

static int add_sni_cert(const struct tlsk_context_options *base, const char *spec)
{
    char name[256], cert[1024], *key, err[512];
    const char *eq = strchr(spec, '=');
    struct tlsk_context_options o = *base;
    struct tlsk_context *c;
    int rc;

    if (!eq || (size_t)(eq - spec) >= sizeof name || strlen(eq + 1) >= sizeof cert) {
        return -EINVAL;
    }
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    snprintf(cert, sizeof cert, "%s", eq + 1);
    key = strchr(cert, ',');
    if (!key) {
        return -EINVAL;
    }
    *key++ = '\0';
    o.cert_file = cert;
    o.key_file = key;
    if ((rc = tlsk_context_new(&c, &o, err, sizeof err)) != 0) {
        cli_log("--sni-cert %s: %s", spec, err);
        return rc;
    }
    if (!sni_table && (rc = tlsk_sni_new(&sni_table)) != 0) {
        tlsk_context_free(c);
        return rc;
    }
    rc = tlsk_sni_add(sni_table, name, c);
    tlsk_context_free(c); /* the table holds its own reference */
    if (rc != 0) {
        cli_log("--sni-cert %s: %s", spec, tlsk_strerror(rc));
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct tlsk_context_options o = { 0 };
    const char *alpn[MAX_ALPN + 1] = { 0 }, *sni_certs[MAX_ROUTES];
    size_t nalpn = 0, nsni_certs = 0;
    char err[512], bound[128];
    struct worker *workers;
    struct rlimit rl;
    int rc;

    cli_prog = "tlsk-proxy";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool flag = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--origin") == 0) {
            cfg.origin = true;
        } else if (strcmp(a, "--proxy-protocol") == 0) {
            cfg.proxy_protocol = true;
        } else if (strcmp(a, "--no-splice") == 0) {
            cfg.no_splice = true;
        } else if (strcmp(a, "--tls13-rx") == 0) {
            o.flags |= TLSK_OFFLOAD_RX_TLS13;
        } else {
            flag = false;
        }
        if (flag) {
            continue;
        }
        if (!v) {
            fprintf(stderr, "tlsk-proxy: %s needs a value (try --help)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--cert") == 0) {
            o.cert_file = v;
        } else if (strcmp(a, "--key") == 0) {
            o.key_file = v;
        } else if (strcmp(a, "--ca") == 0) {
            o.ca_file = v;
        } else if (strcmp(a, "--listen") == 0) {
            cfg.listen_at = v;
        } else if (strcmp(a, "--backend") == 0) {
            cfg.backend = v;
        } else if (strcmp(a, "--upstream") == 0) {
            cfg.upstream = v;
        } else if (strcmp(a, "--servername") == 0) {
            cfg.servername = v;
        } else if (strcmp(a, "--sni") == 0 || strcmp(a, "--sni-cert") == 0) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1] || cfg.nroutes == MAX_ROUTES ||
                nsni_certs == MAX_ROUTES) {
                fprintf(stderr, "tlsk-proxy: %s wants NAME=VALUE\n", a);
                return 2;
            }
            if (strcmp(a, "--sni-cert") == 0) {
                sni_certs[nsni_certs++] = v;
            } else {
                cfg.routes[cfg.nroutes].pattern = strndup(v, (size_t)(eq - v));
                cfg.routes[cfg.nroutes++].backend = eq + 1;
            }
        } else if (strcmp(a, "--alpn") == 0) {
            if (nalpn == MAX_ALPN) {
                fprintf(stderr, "tlsk-proxy: at most %d --alpn\n", MAX_ALPN);
                return 2;
            }
            alpn[nalpn++] = v;
        } else if (strcmp(a, "--offload") == 0) {
            if (cli_parse_offload(v, &o.offload) != 0) {
                fprintf(stderr, "tlsk-proxy: --offload auto|tx|off|require\n");
                return 2;
            }
        } else if (strcmp(a, "--tls-min") == 0 || strcmp(a, "--tls-max") == 0) {
            int ver = parse_version(v);
            if (ver < 0) {
                fprintf(stderr, "tlsk-proxy: %s 1.2|1.3\n", a);
                return 2;
            }
            *(strcmp(a, "--tls-min") == 0 ? &o.min_version : &o.max_version) = ver;
        } else if (strcmp(a, "--handshake-timeout") == 0) {
            cfg.hs_ms = atoi(v) * 1000;
        } else if (strcmp(a, "--connect-timeout") == 0) {
            cfg.connect_ms = atoi(v) * 1000;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            cfg.idle_ms = atoi(v) * 1000;
        } else if (strcmp(a, "--max-conns") == 0) {
            if ((cfg.max_conns = atoi(v)) <= 0) {
                fprintf(stderr, "tlsk-proxy: --max-conns must be positive\n");
                return 2;
            }
        } else if (strcmp(a, "--max-handshakes") == 0) {
            if ((cfg.max_handshakes = atoi(v)) <= 0) {
                fprintf(stderr, "tlsk-proxy: --max-handshakes must be positive\n");
                return 2;
            }
        } else if (strcmp(a, "--workers") == 0) {
            if ((cfg.workers = atoi(v)) <= 0 || cfg.workers > 256) {
                fprintf(stderr, "tlsk-proxy: --workers wants 1..256\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tlsk-proxy: unknown option %s (try --help)\n", a);
            return 2;
        }
    }
    if (!cfg.listen_at || (cfg.origin ? !cfg.upstream : (!cfg.backend || !o.cert_file ||
                                                        !o.key_file))) {
        usage(stderr);
        return 2;
    }
    if (cfg.hs_ms <= 0 || cfg.connect_ms <= 0 || cfg.idle_ms < 0) {
        fprintf(stderr, "tlsk-proxy: timeouts must be positive\n");
        return 2;
    }
    if (cfg.workers == 0) {
        cfg.workers = default_workers();
    }
    /* Room for every connection: a relay holds up to 6 descriptors (client, backend, two
     * pipes), a handshake one.  Defaults fit the limit; explicit values are lowered to it. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    {
        long nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                          ? (long)rl.rlim_cur
                          : 100000;
        long relays = (nofile - 64) / 8, hs = (nofile - 64) / 2;
        relays = relays < 16 ? 16 : relays > 10000 ? 10000 : relays;
        hs = hs < 16 ? 16 : hs > 10000 ? 10000 : hs;
        if (cfg.max_conns == 0 || cfg.max_conns > relays) {
            cfg.max_conns = (int)relays;
        }
        if (cfg.max_handshakes == 0 || cfg.max_handshakes > hs) {
            cfg.max_handshakes = (int)hs;
        }
    }
    if (cfg.origin && !cfg.servername) {
        static char host[256];
        const char *colon = strrchr(cfg.upstream, ':');
        size_t n = colon ? (size_t)(colon - cfg.upstream) : strlen(cfg.upstream);
        snprintf(host, sizeof host, "%.*s", (int)n, cfg.upstream);
        if (host[0] == '[') {
            memmove(host, host + 1, strlen(host));
            host[strcspn(host, "]")] = '\0';
        }
        cfg.servername = host;
    }
    o.alpn = nalpn ? alpn : NULL;
    if ((rc = tlsk_context_new(&ctx, &o, err, sizeof err)) != 0) {
        fprintf(stderr, "tlsk-proxy: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < nsni_certs; i++) {
        if (add_sni_cert(&o, sni_certs[i]) != 0) {
            return 1;
        }
    }
    /* splice(2) and sendfile(2) have no MSG_NOSIGNAL: a vanished peer must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    lfd = cli_listen(cfg.listen_at, bound, sizeof bound);
    if (lfd < 0) {
        fprintf(stderr, "tlsk-proxy: --listen %s: %s\n", cfg.listen_at, strerror(-lfd));
        return 1;
    }
    cli_set_nonblock(lfd, true); /* shared by the workers: accept(2) must never wait */
    workers = calloc((size_t)cfg.workers, sizeof *workers);
    if (!workers) {
        fprintf(stderr, "tlsk-proxy: out of memory\n");
        return 1;
    }
    for (int i = 0; i < cfg.workers; i++) {
        struct worker *w = &workers[i];
        w->max_pending = (cfg.max_handshakes + cfg.workers - 1) / cfg.workers;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep < 0 ||
            epoll_ctl(w->ep, EPOLL_CTL_ADD, lfd,
                      &(struct epoll_event){ .events = EPOLLIN | EPOLLEXCLUSIVE,
                                             .data.ptr = NULL }) != 0) {
            fprintf(stderr, "tlsk-proxy: epoll: %s\n", strerror(errno));
            return 1;
        }
    }
    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    cli_log("listening on %s (%s); %s %s; kTLS %s (kernel %s); %d workers, --max-conns %d, "
            "--max-handshakes %d",
            bound, cfg.origin ? "plaintext" : "TLS", cfg.origin ? "upstream" : "backend",
            cfg.origin ? cfg.upstream : cfg.backend,
            k->ulp ? "available" : "not available, encrypting in userspace", k->release,
            cfg.workers, cfg.max_conns, cfg.max_handshakes);
    svc_notify("READY=1");
    for (int i = 1; i < cfg.workers; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "tlsk-proxy: cannot start worker %d\n", i);
            return 1;
        }
    }
    worker_main(&workers[0]);
    return 0;
}

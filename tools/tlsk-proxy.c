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
 * One thread per connection, each a poll loop over two non-blocking sockets with bounded
 * buffers (relay.c).  Every connection is logged on stderr once when it starts (offload,
 * mode) and once when it ends (bytes, how each side closed).
 */
#include <arpa/inet.h>
#include <errno.h>
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
    int hs_ms, connect_ms, idle_ms, max_conns;
} cfg = { .hs_ms = 30000, .connect_ms = 10000, .idle_ms = 0, .max_conns = 1024 };

static struct tlsk_context *ctx;
static struct tlsk_sni *sni_table;
static atomic_int nconns;
static atomic_ulong conn_seq;

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
        "Origin (--origin): accepts plaintext on --listen and connects to the TLS --upstream as\n"
        "a verifying client (SNI and host name --servername, default the upstream host; trust\n"
        "--ca, default the system store), resuming the last session on later connections.\n"
        "\n"
        "When the kernel holds both directions of a TLS connection, bytes move with splice(2)\n"
        "through a pipe each way and never enter userspace (\"mode splice\" in the log);\n"
        "otherwise they are copied through OpenSSL (\"mode copy\", or mixed per direction).\n"
        "Half-close propagates: the peer's close_notify becomes shutdown(SHUT_WR) on the plain\n"
        "side, and EOF on the plain side becomes close_notify.  A backend or upstream that is\n"
        "down closes the client's connection cleanly and is logged.\n"
        "\n"
        "Common options:\n"
        "  --offload auto|tx|off|require   kTLS policy (default auto)\n"
        "  --tls13-rx             offload TLS 1.3 receive on kernels without re-key (< 6.14);\n"
        "                         a peer KeyUpdate then kills that connection\n"
        "  --tls-min 1.2|1.3, --tls-max 1.2|1.3\n"
        "  --no-splice            copy even when both directions are in the kernel\n"
        "  --handshake-timeout S (30), --connect-timeout S (10), --idle-timeout S (0 = none)\n"
        "  --max-conns N          concurrent connections (1024); more are refused\n"
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
 * authority = SNI (0x02) and SSL (0x20: client flag, verify, version and cipher sub-TLVs). */
static size_t proxy_v2(unsigned char *out, size_t cap, int cfd, const struct tlsk_socket *s)
{
    static const unsigned char sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
    struct sockaddr_storage src, dst;
    socklen_t sl = sizeof src, dl = sizeof dst;
    size_t n = 16;
    const char *alpn = tlsk_socket_alpn_protocol(s), *sni = tlsk_socket_servername(s);
    const char *ver = tlsk_socket_version(s), *cip = tlsk_socket_cipher(s);

    if (cap < 512) {
        return 0;
    }
    memcpy(out, sig, sizeof sig);
    out[12] = 0x21; /* version 2, PROXY */
    if (getpeername(cfd, (struct sockaddr *)&src, &sl) == 0 &&
        getsockname(cfd, (struct sockaddr *)&dst, &dl) == 0 && src.ss_family == AF_INET &&
        dst.ss_family == AF_INET) {
        const struct sockaddr_in *a = (void *)&src, *b = (void *)&dst;
        out[13] = 0x11;
        memcpy(out + n, &a->sin_addr, 4);
        memcpy(out + n + 4, &b->sin_addr, 4);
        memcpy(out + n + 8, &a->sin_port, 2);
        memcpy(out + n + 10, &b->sin_port, 2);
        n += 12;
    } else if (src.ss_family == AF_INET6 && dst.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (void *)&src, *b = (void *)&dst;
        out[13] = 0x21;
        memcpy(out + n, &a->sin6_addr, 16);
        memcpy(out + n + 16, &b->sin6_addr, 16);
        memcpy(out + n + 32, &a->sin6_port, 2);
        memcpy(out + n + 34, &b->sin6_port, 2);
        n += 36;
    } else {
        out[13] = 0x00; /* UNSPEC */
    }
    if (alpn && strlen(alpn) < 256) {
        n += tlv(out + n, 0x01, alpn, strlen(alpn));
    }
    if (sni && strlen(sni) < 256) {
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
    const char *detail = r->err ? tlsk_socket_error_detail(s) : "";

    cli_log("conn %lu closed: %llu bytes %s->%s, %llu bytes %s->%s; %s %s; %s %s%s%s%s%s%s%s%s", id,
            (unsigned long long)r->to_plain, tls_side, plain_side,
            (unsigned long long)r->to_tls, plain_side, tls_side, tls_side,
            r->peer_close_notify ? "sent close_notify"
            : r->peer_truncated  ? "closed without close_notify (truncated)"
                                 : "did not finish",
            plain_side, r->plain_eof ? "sent EOF" : "did not finish",
            r->sent_close_notify ? "; close_notify sent" : "",
            r->err ? "; error in " : "", r->err ? r->err_where : "",
            r->err ? ": " : "", r->err ? tlsk_strerror(r->err) : "", detail[0] ? ": " : "",
            detail);
}

/* Send FIN, then drain what the peer sent for at most half a second: closing with unread
 * bytes queued would send RST and could destroy what we sent last. */
static void finish_fd(int fd)
{
    long long deadline = cli_now_ms() + 500;
    char junk[4096];

    shutdown(fd, SHUT_WR);
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        long long left = deadline - cli_now_ms();
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
            break;
        }
        ssize_t n = read(fd, junk, sizeof junk);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            break;
        }
    }
}

static void close_plain(int fd)
{
    finish_fd(fd);
    close(fd);
}

/* Best effort close_notify within a second, then FIN, drain and free (closing the fd). */
static void close_clean(struct tlsk_socket *s)
{
    long long deadline = cli_now_ms() + 1000;
    int r;
    while ((r = tlsk_socket_shutdown(s)) == -EAGAIN && cli_now_ms() < deadline) {
        struct pollfd pf = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
        poll(&pf, 1, 100);
    }
    finish_fd(tlsk_socket_fd(s));
    tlsk_socket_free(s);
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

/* ---------------------------------------------------------------------------------------- */

static void terminate_conn(unsigned long id, int cfd)
{
    struct tlsk_socket *s = NULL;
    struct relay_result res;
    char peer[80], info[256], pp[1024];
    const char *backend, *sni, *alpn;
    int bfd = -1, rc;

    cli_sockname(cfd, true, peer, sizeof peer);
    rc = tlsk_socket_new_server(&s, ctx, cfd,
                                &(struct tlsk_socket_options){ .flags = TLSK_SOCKET_OWN_FD,
                                                               .sni = sni_table });
    if (rc != 0) {
        cli_log("conn %lu from %s: %s", id, peer, tlsk_strerror(rc));
        close(cfd);
        return;
    }
    if ((rc = cli_handshake(s, cfg.hs_ms)) != 0) {
        cli_log("conn %lu from %s: handshake failed: %s %s", id, peer, tlsk_err_name(rc),
                tlsk_socket_error_detail(s));
        tlsk_socket_free(s);
        return;
    }
    sni = tlsk_socket_servername(s);
    alpn = tlsk_socket_alpn_protocol(s);
    backend = pick_backend(sni);
    cli_describe(s, info, sizeof info);
    bfd = cli_connect(backend, cfg.connect_ms);
    if (bfd < 0) {
        cli_log("conn %lu from %s: %s; sni %s; backend %s unavailable: %s; closing the client "
                "with close_notify",
                id, peer, info, sni ? sni : "-", backend, strerror(-bfd));
        close_clean(s);
        return;
    }
    if (cfg.proxy_protocol) {
        size_t n = proxy_v2((unsigned char *)pp, sizeof pp, cfd, s);
        if ((rc = send_all(bfd, pp, n, cfg.connect_ms)) != 0) {
            cli_log("conn %lu from %s: backend %s: PROXY header: %s; closing", id, peer, backend,
                    strerror(-rc));
            close(bfd);
            close_clean(s);
            return;
        }
    }
    cli_log("conn %lu from %s: %s; sni %s; alpn %s; backend %s; mode %s", id, peer, info,
            sni ? sni : "-", alpn ? alpn : "-", backend, relay_mode_name(s, cfg.no_splice));
    relay_run(s, bfd, &(struct relay_options){ .idle_ms = cfg.idle_ms, .stop_fd = -1,
                                               .no_splice = cfg.no_splice },
              &res);
    log_end(id, s, &res, "client", "backend");
    close(bfd);
    tlsk_socket_free(s);
}

static void origin_conn(unsigned long id, int cfd)
{
    struct tlsk_socket *s = NULL;
    struct relay_result res;
    unsigned char sbuf[MAX_SESSION];
    size_t slen;
    char peer[80], info[256];
    int ufd, rc;

    cli_sockname(cfd, true, peer, sizeof peer);
    ufd = cli_connect(cfg.upstream, cfg.connect_ms);
    if (ufd < 0) {
        cli_log("conn %lu from %s: upstream %s unavailable: %s; closing the client", id, peer,
                cfg.upstream, strerror(-ufd));
        close_plain(cfd);
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
        cli_log("conn %lu from %s: %s", id, peer, tlsk_strerror(rc));
        close(ufd);
        close_plain(cfd);
        return;
    }
    if ((rc = cli_handshake(s, cfg.hs_ms)) != 0) {
        cli_log("conn %lu from %s: upstream %s: handshake failed: %s %s; closing the client", id,
                peer, cfg.upstream, tlsk_err_name(rc), tlsk_socket_error_detail(s));
        tlsk_socket_free(s);
        close_plain(cfd);
        return;
    }
    session_store(s);
    cli_describe(s, info, sizeof info);
    const char *alpn = tlsk_socket_alpn_protocol(s);
    cli_log("conn %lu from %s: upstream %s: %s; session %s; alpn %s; mode %s", id, peer,
            cfg.upstream, info, tlsk_socket_session_reused(s) ? "reused" : "new",
            alpn ? alpn : "-", relay_mode_name(s, cfg.no_splice));
    relay_run(s, cfd, &(struct relay_options){ .idle_ms = cfg.idle_ms, .stop_fd = -1,
                                               .no_splice = cfg.no_splice },
              &res);
    session_store(s); /* TLS 1.3 tickets arrive after the handshake */
    log_end(id, s, &res, "upstream", "client");
    tlsk_socket_free(s);
    close(cfd);
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned long id = atomic_fetch_add(&conn_seq, 1) + 1;

    cli_set_nonblock(fd, true);
    if (cfg.origin) {
        origin_conn(id, fd);
    } else {
        terminate_conn(id, fd);
    }
    atomic_fetch_sub(&nconns, 1);
    return NULL;
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
    int lfd, rc;

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
            cfg.max_conns = atoi(v);
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
    if (cfg.hs_ms <= 0 || cfg.connect_ms <= 0 || cfg.max_conns <= 0 || cfg.idle_ms < 0) {
        fprintf(stderr, "tlsk-proxy: timeouts and --max-conns must be positive\n");
        return 2;
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
    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    cli_log("listening on %s (%s); %s %s; kTLS %s (kernel %s)", bound,
            cfg.origin ? "plaintext" : "TLS", cfg.origin ? "upstream" : "backend",
            cfg.origin ? cfg.upstream : cfg.backend,
            k->ulp ? "available" : "not available, encrypting in userspace", k->release);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        pthread_t t;
        pthread_attr_t at;

        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                cli_log("accept: %s; pausing", strerror(errno));
                poll(NULL, 0, 100);
            } else if (errno != EINTR && errno != ECONNABORTED) {
                cli_log("accept: %s", strerror(errno));
                return 1;
            }
            continue;
        }
        if (atomic_fetch_add(&nconns, 1) >= cfg.max_conns) {
            atomic_fetch_sub(&nconns, 1);
            cli_log("refusing a connection: %d connections open (--max-conns)", cfg.max_conns);
            close(cfd);
            continue;
        }
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256u << 10);
        if (pthread_create(&t, &at, conn_main, (void *)(intptr_t)cfd) != 0) {
            atomic_fetch_sub(&nconns, 1);
            cli_log("cannot start a thread; closing the connection");
            close(cfd);
        }
        pthread_attr_destroy(&at);
    }
}

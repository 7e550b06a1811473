/*
 * hs.c - the handshake and idle-connection client of bench/suite.sh, on OpenSSL.
 *
 *   hs HOST PORT loop --tls 1.2|1.3 --resume none|ids|tickets --seconds S [--curve G]
 *   hs HOST PORT hold --count N [--path PATH]
 *
 * loop: connects, handshakes, sends close_notify and closes, again and again for S seconds,
 * one connection at a time.  --resume none makes every handshake a full one; ids offers the
 * previous connection's session with tickets refused (SSL_OP_NO_TICKET: TLS 1.2 session ids,
 * the server's cache); tickets offers the last ticket received (TLS 1.2 tickets, TLS 1.3
 * PSK).  The first connection is always full.  Prints "conns=N seconds=S resumed=R" and exits
 * 1 when a connection fails or (with --resume) fewer than 90 % of the later ones resumed, so
 * a server that silently stopped resuming is not measured as a resuming one.
 *
 * hold: opens N TLS 1.3 connections, sends each one keep-alive "GET PATH" and reads the whole
 * response (so the server holds N idle keep-alive connections past a request, as in service),
 * prints "ready N", then waits until its standard input closes and exits.
 *
 * No certificate verification: the server's cost, not the client's, is measured.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int tcp_connect(const struct addrinfo *a)
{
    int one = 1, fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);

    if (fd < 0) {
        return -1;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void fail(const char *what)
{
    fprintf(stderr, "hs: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* The newest ticket (TLS 1.3 sends them after the handshake; SSL_get1_session could miss it). */
static SSL_SESSION *g_last;

static int on_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    SSL_SESSION_free(g_last);
    g_last = sess;
    return 1; /* we keep the reference */
}

/* A TLS 1.3 server's tickets follow its Finished, and no data comes after them: read
 * without blocking until one has arrived (at most 1 s). */
static void wait_ticket(SSL *ssl, int fd)
{
    SSL_SESSION *before = g_last;
    char c;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < 100 && g_last == before; i++) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (SSL_peek(ssl, &c, 1) > 0 || g_last != before) {
            break;
        }
        poll(&p, 1, 10);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

static int do_loop(SSL_CTX *ctx, const struct addrinfo *a, const char *resume, double seconds)
{
    long conns = 0, resumed = 0;
    double t0 = now(), t;

    if (strcmp(resume, "none") != 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, on_session);
    }
    if (strcmp(resume, "ids") == 0) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    do {
        int fd = tcp_connect(a);
        SSL *ssl = SSL_new(ctx);
        if (fd < 0 || !ssl) {
            fail("cannot connect");
        }
        SSL_set_fd(ssl, fd);
        if (g_last) {
            SSL_set_session(ssl, g_last);
        }
        if (SSL_connect(ssl) != 1) {
            fail("handshake failed");
        }
        if (SSL_version(ssl) == TLS1_3_VERSION && strcmp(resume, "none") != 0) {
            wait_ticket(ssl, fd);
        }
        resumed += SSL_session_reused(ssl);
        conns++;
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
        t = now();
    } while (t - t0 < seconds);
    printf("conns=%ld seconds=%.6f resumed=%ld\n", conns, t - t0, resumed);
    if (strcmp(resume, "none") != 0 && conns > 1 && resumed < (conns - 1) * 9 / 10) {
        fprintf(stderr, "hs: only %ld of %ld connections resumed\n", resumed, conns);
        return 1;
    }
    if (strcmp(resume, "none") == 0 && resumed) {
        fprintf(stderr, "hs: %ld connections resumed without being asked to\n", resumed);
        return 1;
    }
    return 0;
}

/* Read one response whole: head, then Content-Length bytes. */
static void read_response(SSL *ssl)
{
    char buf[65536];
    size_t got = 0, n, head = 0;
    long long clen = -1;

    for (;;) {
        if (SSL_read_ex(ssl, buf + got, sizeof buf - 1 - got, &n) != 1) {
            fail("no response");
        }
        got += n;
        buf[got] = '\0';
        if (!head) {
            char *e = strstr(buf, "\r\n\r\n"), *cl = strcasestr(buf, "\r\ncontent-length:");
            if (!e) {
                continue;
            }
            if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || !cl) {
                fail("unexpected response");
            }
            head = (size_t)(e + 4 - buf);
            clen = strtoll(cl + 17, NULL, 10);
        }
        if ((long long)(got - head) >= clen) {
            return;
        }
        if (got == sizeof buf - 1) { /* a body larger than the buffer: count and drop */
            clen -= (long long)(got - head);
            got = head = 0;
            head = 0;
            while (clen > 0) {
                if (SSL_read_ex(ssl, buf, sizeof buf, &n) != 1) {
                    fail("short body");
                }
                clen -= (long long)n;
            }
            return;
        }
    }
}

static int do_hold(SSL_CTX *ctx, const struct addrinfo *a, const char *host, long count,
                   const char *path)
{
    SSL **conns = calloc((size_t)count, sizeof *conns);
    char req[512];
    struct rlimit rl;

    if (!conns) {
        fail("out of memory");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)count + 64 ? rl.rlim_max : (rlim_t)count + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
    for (long i = 0; i < count; i++) {
        int fd = tcp_connect(a);
        if (fd < 0) {
            fail("cannot connect");
        }
        conns[i] = SSL_new(ctx);
        SSL_set_fd(conns[i], fd);
        if (SSL_connect(conns[i]) != 1) {
            fail("handshake failed");
        }
        if (SSL_write(conns[i], req, (int)strlen(req)) <= 0) {
            fail("request failed");
        }
        read_response(conns[i]);
    }
    printf("ready %ld\n", count);
    fflush(stdout);
    while (getchar() != EOF) {
    }
    for (long i = 0; i < count; i++) {
        close(SSL_get_fd(conns[i]));
        SSL_free(conns[i]);
    }
    free(conns);
    return 0;
}

int main(int argc, char **argv)
{
    const char *tls = "1.3", *resume = "none", *curve = NULL, *path = "/1k.bin";
    double seconds = 2;
    long count = 100;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    SSL_CTX *ctx;
    int rc;

    if (argc < 4 || (strcmp(argv[3], "loop") != 0 && strcmp(argv[3], "hold") != 0)) {
        fprintf(stderr, "usage: %s HOST PORT loop --tls 1.2|1.3 --resume none|ids|tickets "
                        "--seconds S [--curve G]\n       %s HOST PORT hold --count N "
                        "[--path PATH]\n", argv[0], argv[0]);
        return 2;
    }
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--tls") == 0) {
            tls = argv[i + 1];
        } else if (strcmp(argv[i], "--resume") == 0) {
            resume = argv[i + 1];
        } else if (strcmp(argv[i], "--seconds") == 0) {
            seconds = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--curve") == 0) {
            curve = argv[i + 1];
        } else if (strcmp(argv[i], "--count") == 0) {
            count = atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--path") == 0) {
            path = argv[i + 1];
        } else {
            fprintf(stderr, "hs: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if ((strcmp(resume, "none") && strcmp(resume, "ids") && strcmp(resume, "tickets")) ||
        (strcmp(tls, "1.2") && strcmp(tls, "1.3")) || count < 1 || seconds <= 0) {
        fprintf(stderr, "hs: bad option value\n");
        return 2;
    }
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0) {
        fail("cannot resolve");
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        fail("SSL_CTX_new");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (strcmp(tls, "1.2") == 0) {
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_cipher_list(ctx, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256");
    } else {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    }
    if (curve && SSL_CTX_set1_groups_list(ctx, curve) != 1) {
        fail("bad --curve");
    }
    rc = strcmp(argv[3], "loop") == 0 ? do_loop(ctx, ai, resume, seconds)
                                      : do_hold(ctx, ai, argv[1], count, path);
    SSL_SESSION_free(g_last);
    SSL_CTX_free(ctx);
    freeaddrinfo(ai);
    return rc;
}

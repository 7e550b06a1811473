/*
 * soak_client.c - the load generator of the load and fault suite (test_soak, make soak).
 *
 * Drives N concurrent TLS connections from one epoll loop with non-blocking sockets and
 * OpenSSL directly (socket BIOs), independent of the library under test, against tlsk-serve
 * (--mode serve: HTTP GETs of the files --make-files wrote) or the evented echo server
 * soak_echo (--mode echo: random-length payloads echoed back).  Each connection gets a seeded
 * random behaviour:
 *   normal   1-4 transfers on one keep-alive connection, close_notify, close
 *   slow     the same with a 4 KiB receive buffer, 512 bytes per read and a pause between reads
 *   half     one transfer, then half-close: shutdown(SHUT_WR) or close_notify, and keep reading
 *   rst      a transfer cut by a reset (SO_LINGER 0 close) after a random number of bytes
 *   abort    part of a real ClientHello, then close or reset
 *   junk     plain garbage instead of a ClientHello; the server must close
 *   record   a garbage TLS application-data record after the handshake; the server must close
 * Every byte received is checked against what it must be (the file's pattern, the payload),
 * also on connections that end early.  Prints a summary: counts per behaviour, transfers,
 * bytes, errors by kind.  Exit 0, or 1 on any byte mismatch or unexpected error (an error on a
 * normal or slow connection, a failed handshake where one must succeed, a server that does not
 * close after garbage), 2 on a usage or setup error.
 *
 *   soak_client --mode serve|echo --port P [--conns N] [--secs S] [--seed X] [--ca FILE]
 *               [--only normal]
 *   soak_client --make-files DIR
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.h"

/* The files of --make-files: name f<i>, pattern seed 100 + i. */
static const size_t k_sizes[] = { 100, 4000, 16384, 65537, 300000, 1048576 };
#define N_FILES (sizeof k_sizes / sizeof k_sizes[0])

enum beh { B_NORMAL, B_SLOW, B_HALF, B_RST, B_ABORT, B_JUNK, B_RECORD, B_N };
static const char *const k_beh[B_N] = { "normal", "slow", "half", "rst", "abort", "junk",
                                        "record" };
/* Weights out of 100. */
static const int k_weight[B_N] = { 40, 10, 12, 12, 10, 8, 8 };

enum err { E_CONNECT, E_HANDSHAKE, E_EOF, E_TIMEOUT, E_STATUS, E_IO, E_NOT_CLOSED, E_N };
static const char *const k_err[E_N] = { "connect", "handshake", "eof_mid_transfer", "timeout",
                                        "bad_status", "io", "garbage_not_closed" };

enum state { S_FREE, S_CONNECT, S_HS, S_XFER, S_DRAIN };

struct conn {
    int fd;
    SSL *ssl;
    enum beh beh;
    enum state st;
    long long born, deadline, resume_at;
    bool paused, in_ep, want_out;
    int reqs_left;
    /* Current transfer: serve: file, response head, body; echo: payload seed and length. */
    bool active;
    int file;
    char head[4096];
    size_t head_len;
    bool have_head;
    uint32_t seed;
    size_t len, sent, got;
    size_t req_len, req_sent;
    char req[128];
    size_t rst_after; /* rst: reset once this many body/echo bytes came */
    size_t total_got;
    bool shut_done;
    unsigned char junk[8]; /* junk: the first bytes sent, for the report of a slow close */
};

static struct {
    bool echo;
    int port, conns, secs;
    unsigned seed;
    bool only_normal;
    SSL_CTX *ctx;
    int ep;
    unsigned char hello[4096];
    size_t hello_len;
    long long started[B_N], ok[B_N], cut[B_N], failed[B_N], longest[B_N];
    long long errs[E_N];
    long long transfers, bytes, exact_fail, unexpected, connections;
} g;

static uint64_t g_rng;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int make_files(const char *dir)
{
    static unsigned char b[65536];
    char path[4096];
    for (size_t i = 0; i < N_FILES; i++) {
        snprintf(path, sizeof path, "%s/f%zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f) {
            perror(path);
            return 2;
        }
        for (size_t off = 0; off < k_sizes[i];) {
            size_t n = k_sizes[i] - off < sizeof b ? k_sizes[i] - off : sizeof b;
            h_pattern(100 + (uint32_t)i, off, b, n);
            fwrite(b, 1, n, f);
            off += n;
        }
        if (fclose(f) != 0) {
            perror(path);
            return 2;
        }
    }
    return 0;
}

static void ep_set(struct conn *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (c->in_ep) {
        epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &e);
    } else {
        epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &e);
        c->in_ep = true;
    }
}

/* A connection's end.  outcome: 0 done as designed, 1 cut (allowed for this behaviour), or
 * 2 + the error kind. */
static void finish(struct conn *c, int outcome, bool rst)
{
    long long life = now_ms() - c->born;
    if (life > g.longest[c->beh]) {
        g.longest[c->beh] = life;
    }
    if (c->beh == B_JUNK && life > 5000) {
        fprintf(stderr, "soak-client: junk closed after %lld ms: %02x %02x %02x %02x %02x %02x\n",
                life, c->junk[0], c->junk[1], c->junk[2], c->junk[3], c->junk[4], c->junk[5]);
    }
    if (outcome >= 2) {
        enum err e = (enum err)(outcome - 2);
        g.errs[e]++;
        g.failed[c->beh]++;
        /* Faults are expected only where the client caused them. */
        bool expected = (c->beh == B_HALF || c->beh == B_RST) && e == E_EOF;
        if (!expected) {
            g.unexpected++;
            if (g.unexpected <= 10) {
                fprintf(stderr, "soak-client: %s connection: %s (got %zu of %zu, state %d)\n",
                        k_beh[c->beh], k_err[e], c->got, c->len, (int)c->st);
            }
        }
    } else if (outcome == 1) {
        g.cut[c->beh]++;
    } else {
        g.ok[c->beh]++;
    }
    if (rst) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    if (c->ssl) {
        SSL_free(c->ssl);
    }
    close(c->fd);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->st = S_FREE;
}

static void start_transfer(struct conn *c)
{
    c->active = true;
    c->got = c->sent = 0;
    c->have_head = false;
    c->head_len = 0;
    if (g.echo) {
        size_t max = c->beh == B_SLOW ? 16384 : 65536;
        c->seed = rnd();
        c->len = 1 + rnd() % max;
    } else {
        /* Small files more often; slow readers only up to 64 KiB. */
        int n = c->beh == B_SLOW ? 4 : (int)N_FILES;
        c->file = (int)(rnd() % (unsigned)n);
        if (c->file == (int)N_FILES - 1 && rnd() % 3) {
            c->file = (int)(rnd() % 3);
        }
        c->len = k_sizes[c->file];
        c->seed = 100 + (uint32_t)c->file;
        c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                      "GET /f%d HTTP/1.1\r\nHost: localhost\r\n\r\n", c->file);
        c->req_sent = 0;
    }
    if (c->beh == B_RST) {
        c->rst_after = rnd() % c->len;
    }
}

/* Check received transfer bytes; false on a mismatch (counted). */
static bool check(struct conn *c, const unsigned char *p, size_t n)
{
    if (h_pattern_check(c->seed, c->got, p, n) >= 0) {
        g.exact_fail++;
        if (g.exact_fail <= 10) {
            fprintf(stderr, "soak-client: %s connection: wrong bytes at %zu of %zu\n",
                    k_beh[c->beh], c->got, c->len);
        }
        return false;
    }
    c->got += n;
    g.bytes += (long long)n;
    c->total_got += n;
    return true;
}

/* Serve mode: feed response bytes.  -1 on a bad response (finished). */
static int feed_http(struct conn *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (!c->have_head) {
            size_t room = sizeof c->head - 1 - c->head_len, take = n < room ? n : room;
            memcpy(c->head + c->head_len, p, take);
            c->head_len += take;
            c->head[c->head_len] = '\0';
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                if (c->head_len == sizeof c->head - 1) {
                    finish(c, 2 + E_STATUS, false);
                    return -1;
                }
                return 0;
            }
            size_t hl = (size_t)(end + 4 - c->head);
            char *cl = strcasestr(c->head, "\r\ncontent-length:");
            if (strncmp(c->head, "HTTP/1.1 200 ", 13) != 0 || !cl ||
                strtoull(cl + 17, NULL, 10) != c->len) {
                finish(c, 2 + E_STATUS, false);
                return -1;
            }
            c->have_head = true;
            /* Body bytes that came with the head. */
            size_t extra = c->head_len - hl;
            p += take - extra;
            n -= take - extra;
            continue;
        }
        size_t take = c->len - c->got < n ? c->len - c->got : n;
        if (!check(c, p, take)) {
            finish(c, 1, false);
            return -1;
        }
        p += take;
        n -= take;
        if (c->got == c->len) {
            return 1; /* one response done; any further bytes would be unrequested */
        }
    }
    return 0;
}

/* A raw (unencrypted) fault: garbage instead of a ClientHello, or part of a real one. */
static void raw_fault(struct conn *c)
{
    unsigned char b[512];
    if (c->beh == B_ABORT) {
        size_t n = 1 + rnd() % (g.hello_len - 1);
        ssize_t w = write(c->fd, g.hello, n);
        (void)w;
        finish(c, 0, rnd() % 2);
        return;
    }
    /* At least a record header's 5 bytes: fewer would leave the server waiting for the rest
     * (until its handshake timeout), which is not the fault meant here. */
    size_t n = 5 + rnd() % (sizeof b - 5);
    for (size_t i = 0; i < n; i++) {
        b[i] = (unsigned char)rnd();
    }
    /* Not a TLS record type (20-24), so the server can tell at once; and no high bit, which
     * OpenSSL may take for an SSLv2-format ClientHello header whose 15-bit length it then waits
     * for (until the handshake timeout: a slow client, not the garbage meant here). */
    b[0] &= 0x7f;
    if (b[0] >= 20 && b[0] <= 24) {
        b[0] = 'G';
    }
    /* Nor a major version 3 in the second byte: OpenSSL (s_server alike) then reads a record of
     * unknown type and waits, again until the handshake timeout. */
    if (b[1] == 3) {
        b[1] = 'E';
    }
    memcpy(c->junk, b, sizeof c->junk);
    if (write(c->fd, b, n) < 0) {
        finish(c, 2 + E_IO, false);
        return;
    }
    c->st = S_DRAIN;
    ep_set(c, EPOLLIN);
}

/* A garbage application-data record after the handshake. */
static void record_fault(struct conn *c)
{
    unsigned char b[1029];
    size_t n = 16 + rnd() % 1000;
    b[0] = 0x17;
    b[1] = 3;
    b[2] = 3;
    b[3] = (unsigned char)(n >> 8);
    b[4] = (unsigned char)n;
    for (size_t i = 0; i < n; i++) {
        b[5 + i] = (unsigned char)rnd();
    }
    if (write(c->fd, b, 5 + n) < 0) {
        finish(c, 2 + E_IO, false);
        return;
    }
    c->st = S_DRAIN;
    ep_set(c, EPOLLIN);
}

/* Read raw bytes until the server closes. */
static void drain(struct conn *c)
{
    unsigned char b[4096];
    for (;;) {
        ssize_t r = read(c->fd, b, sizeof b);
        if (r > 0) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        finish(c, 0, false); /* EOF or reset: the server closed, as it must */
        return;
    }
}

static void after_transfer(struct conn *c)
{
    g.transfers++;
    c->active = false;
    if (--c->reqs_left > 0 && c->beh != B_HALF) {
        start_transfer(c);
        return;
    }
    if (c->beh == B_HALF) {
        finish(c, 0, false);
        return;
    }
    SSL_shutdown(c->ssl); /* close_notify, best effort */
    finish(c, 0, false);
}

/* Write what the transfer has to send.  false when the connection ended. */
static bool do_write(struct conn *c)
{
    unsigned char b[16384];
    c->want_out = false;
    for (;;) {
        const void *p;
        size_t n;
        if (g.echo) {
            if (c->sent == c->len) {
                break;
            }
            n = c->len - c->sent < sizeof b ? c->len - c->sent : sizeof b;
            h_pattern(c->seed, c->sent, b, n);
            p = b;
        } else {
            if (c->req_sent == c->req_len) {
                break;
            }
            n = c->req_len - c->req_sent;
            p = c->req + c->req_sent;
        }
        int w = SSL_write(c->ssl, p, (int)n);
        if (w <= 0) {
            int e = SSL_get_error(c->ssl, w);
            if (e == SSL_ERROR_WANT_WRITE) {
                c->want_out = true;
                return true;
            }
            if (e == SSL_ERROR_WANT_READ) {
                return true;
            }
            finish(c, c->beh == B_NORMAL || c->beh == B_SLOW ? 2 + E_IO : 1, false);
            return false;
        }
        if (g.echo) {
            c->sent += (size_t)w;
        } else {
            c->req_sent += (size_t)w;
        }
    }
    if (c->beh == B_HALF && !c->shut_done) {
        c->shut_done = true;
        if (rnd() % 2) {
            shutdown(c->fd, SHUT_WR);
        } else {
            SSL_shutdown(c->ssl);
        }
    }
    return true;
}

static void drive(struct conn *c)
{
    unsigned char b[16384];
    if (c->st == S_HS) {
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                ep_set(c, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
                return;
            }
            ERR_clear_error();
            finish(c, 2 + E_HANDSHAKE, false);
            return;
        }
        g.connections++;
        c->st = S_XFER;
        if (c->beh == B_RECORD) {
            record_fault(c);
            return;
        }
        start_transfer(c);
    }
    for (;;) {
        if (!do_write(c)) {
            return;
        }
        size_t cap = c->beh == B_SLOW ? 512 : sizeof b;
        int r = SSL_read(c->ssl, b, (int)cap);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                break;
            }
            ERR_clear_error();
            bool mid = c->active;
            if (!mid) {
                finish(c, 0, false);
            } else {
                finish(c, 2 + E_EOF, false);
            }
            return;
        }
        int done;
        if (g.echo) {
            size_t n = (size_t)r;
            if (c->got + n > c->len || !check(c, b, n)) {
                if (c->got + n > c->len) {
                    g.exact_fail++;
                }
                finish(c, 1, false);
                return;
            }
            done = c->got == c->len;
        } else {
            done = feed_http(c, b, (size_t)r);
            if (done < 0) {
                return;
            }
        }
        if (c->beh == B_RST && c->got >= c->rst_after) {
            finish(c, 0, true);
            return;
        }
        if (done) {
            after_transfer(c);
            if (c->st == S_FREE) {
                return;
            }
        }
        if (c->beh == B_SLOW) {
            /* A slow reader: a pause before the next 512 bytes, out of the epoll set. */
            c->paused = true;
            c->resume_at = now_ms() + 2;
            if (c->in_ep) {
                epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
                c->in_ep = false;
            }
            return;
        }
    }
    ep_set(c, EPOLLIN | (c->want_out ? EPOLLOUT : 0));
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        finish(c, 2 + E_CONNECT, false);
        return;
    }
    if (c->beh == B_ABORT || c->beh == B_JUNK) {
        raw_fault(c);
        return;
    }
    c->ssl = SSL_new(g.ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, "localhost") != 1 ||
        SSL_set1_host(c->ssl, "localhost") != 1) {
        finish(c, 2 + E_HANDSHAKE, false);
        return;
    }
    c->st = S_HS;
    drive(c);
}

static void start_conn(struct conn *c)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int pick = (int)(rnd() % 100), b = 0;
    while (b < B_N - 1 && pick >= k_weight[b]) {
        pick -= k_weight[b++];
    }
    memset(c, 0, sizeof *c);
    c->beh = g.only_normal ? B_NORMAL : (enum beh)b;
    c->reqs_left = 1 + (int)(rnd() % 4);
    c->born = now_ms();
    c->deadline = c->born + 30000;
    g.started[c->beh]++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->fd = -1;
        g.errs[E_CONNECT]++;
        g.failed[c->beh]++;
        g.unexpected++;
        c->st = S_FREE;
        return;
    }
    if (c->beh == B_SLOW) {
        int sz = 4096;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    c->st = S_CONNECT;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        finish(c, 2 + E_CONNECT, false);
        return;
    }
    ep_set(c, EPOLLOUT);
}

/* A real ClientHello's bytes (memory BIOs), to send part of in "abort". */
static int make_hello(void)
{
    SSL *s = SSL_new(g.ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!s || !r || !w) {
        return -1;
    }
    SSL_set_bio(s, r, w);
    SSL_set_tlsext_host_name(s, "localhost");
    SSL_connect(s);
    int n = BIO_read(w, g.hello, sizeof g.hello);
    SSL_free(s);
    ERR_clear_error();
    if (n < 10) {
        return -1;
    }
    g.hello_len = (size_t)n;
    return 0;
}

int main(int argc, char **argv)
{
    const char *ca = NULL;
    struct rlimit rl;
    g.conns = 100;
    g.secs = 5;
    g.seed = 1;
    g.port = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--make-files") == 0 && v) {
            return make_files(v);
        } else if (strcmp(a, "--mode") == 0 && v) {
            g.echo = strcmp(v, "echo") == 0;
            if (!g.echo && strcmp(v, "serve") != 0) {
                goto usage;
            }
        } else if (strcmp(a, "--port") == 0 && v) {
            g.port = atoi(v);
        } else if (strcmp(a, "--conns") == 0 && v) {
            g.conns = atoi(v);
        } else if (strcmp(a, "--secs") == 0 && v) {
            g.secs = atoi(v);
        } else if (strcmp(a, "--seed") == 0 && v) {
            g.seed = (unsigned)strtoul(v, NULL, 0);
        } else if (strcmp(a, "--ca") == 0 && v) {
            ca = v;
        } else if (strcmp(a, "--only") == 0 && v && strcmp(v, "normal") == 0) {
            g.only_normal = true;
        } else {
            goto usage;
        }
        i++;
    }
    if (g.port <= 0 || g.conns <= 0 || g.secs <= 0) {
        goto usage;
    }
    if (!ca) {
        ca = h_fixture("ca1-cert.pem");
    }
    g_rng = 0x9e3779b97f4a7c15ull ^ g.seed;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    g.ctx = SSL_CTX_new(TLS_client_method());
    if (!g.ctx || SSL_CTX_load_verify_locations(g.ctx, ca, NULL) != 1 || make_hello() != 0) {
        fprintf(stderr, "soak-client: setup failed (CA %s)\n", ca);
        return 2;
    }
    SSL_CTX_set_verify(g.ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(g.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)g.conns, sizeof *cs);
    if (g.ep < 0 || !cs) {
        return 2;
    }
    long long t0 = now_ms(), stop_at = t0 + (long long)g.secs * 1000, last_scan = 0;
    for (int i = 0; i < g.conns; i++) {
        cs[i].fd = -1;
        start_conn(&cs[i]);
    }
    struct epoll_event ev[256];
    for (;;) {
        long long now = now_ms();
        bool stopping = now >= stop_at, any = false, paused = false;
        if (now - last_scan >= 1 || stopping) {
            last_scan = now;
            for (int i = 0; i < g.conns; i++) {
                struct conn *c = &cs[i];
                if (c->st == S_FREE) {
                    if (!stopping) {
                        start_conn(c);
                    }
                    continue;
                }
                if (now >= c->deadline) {
                    finish(c, 2 + (c->st == S_DRAIN ? E_NOT_CLOSED : E_TIMEOUT), false);
                    continue;
                }
                if (c->paused && now >= c->resume_at) {
                    c->paused = false;
                    drive(c);
                }
                if (c->st != S_FREE) {
                    any = true;
                    paused |= c->paused;
                }
            }
            if (stopping && !any) {
                break;
            }
        }
        int n = epoll_wait(g.ep, ev, 256, paused ? 2 : 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            switch (c->st) {
            case S_CONNECT:
                on_connected(c);
                break;
            case S_HS:
            case S_XFER:
                drive(c);
                break;
            case S_DRAIN:
                drain(c);
                break;
            case S_FREE:
                break;
            }
        }
    }
    double secs = (double)(now_ms() - t0) / 1000.0;
    long long started = 0;
    for (int b = 0; b < B_N; b++) {
        started += g.started[b];
    }
    printf("soak-client: mode=%s conns=%d secs=%d seed=%u elapsed=%.1f\n",
           g.echo ? "echo" : "serve", g.conns, g.secs, g.seed, secs);
    printf("soak-client: started=%lld handshakes=%lld conn_per_s=%.0f transfers=%lld "
           "bytes=%lld exact_fail=%lld unexpected=%lld\n",
           started, g.connections, (double)started / secs, g.transfers, g.bytes, g.exact_fail,
           g.unexpected);
    for (int b = 0; b < B_N; b++) {
        printf("soak-client: behaviour %-6s started=%lld ok=%lld cut=%lld failed=%lld "
               "longest_ms=%lld\n",
               k_beh[b], g.started[b], g.ok[b], g.cut[b], g.failed[b], g.longest[b]);
    }
    printf("soak-client: errors");
    for (int e = 0; e < E_N; e++) {
        printf(" %s=%lld", k_err[e], g.errs[e]);
    }
    printf("\n");
    bool bad = g.exact_fail > 0 || g.unexpected > 0;
    printf("soak-client: RESULT %s\n", bad ? "FAIL" : "ok");
    free(cs);
    close(g.ep);
    SSL_CTX_free(g.ctx);
    return bad ? 1 : 0;

usage:
    fprintf(stderr, "usage: soak_client --mode serve|echo --port P [--conns N] [--secs S] "
                    "[--seed X] [--ca FILE] [--only normal]\n"
                    "       soak_client --make-files DIR\n");
    return 2;
}

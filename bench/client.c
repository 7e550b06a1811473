/*
 * client.c - the one HTTPS download client of bench/serve.sh: fetch one URL path over TLS with
 * OpenSSL, discard the body into a large buffer, print bytes and seconds.  Kept minimal so it
 * costs as little as a TLS client can: read-ahead with a large record buffer (fewer read(2)
 * calls), no verification, no parsing beyond the head.  Even so it has one CPU, as the server
 * does, and decrypting costs it about what encrypting costs tlsk-serve: on two CPUs its CPU is
 * what holds tlsk-serve's downloads back (bench/README.md, "Where each run's time went").
 *
 *   client HOST PORT PATH [--ciphersuite SUITE] [--tls12 [--cipher LIST]] [--servername NAME]
 *
 * --cipher sets the TLS 1.2 cipher list (OpenSSL syntax; default the two ECDHE AES-128-GCM
 * ciphers), e.g. ECDHE-RSA-AES128-SHA256 for a connection the kernel cannot take.
 *
 * Prints one line: "bytes=N seconds=S gbps=G" (S from sending the request to the last body
 * byte; the handshake is not included) and exits 0 when the whole Content-Length arrived.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE (4u << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int tcp_connect(const char *host, const char *port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *a;
    int fd = -1;

    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        return -1;
    }
    for (a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        if (fd >= 0) {
            close(fd);
        }
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int main(int argc, char **argv)
{
    const char *suite = "TLS_AES_128_GCM_SHA256";
    const char *ciphers = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256";
    char *servername = NULL;
    int tls12 = 0, fd, one = 1;
    char req[1024];
    unsigned char *buf;
    SSL_CTX *ctx;
    SSL *ssl;
    size_t got = 0, head = 0, total;
    long long clen = -1;
    double t0, t1;

    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT PATH [--ciphersuite SUITE] [--tls12 [--cipher LIST]] "
                        "[--servername NAME]\n", argv[0]);
        return 2;
    }
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--ciphersuite") == 0 && i + 1 < argc) {
            suite = argv[++i];
        } else if (strcmp(argv[i], "--tls12") == 0) {
            tls12 = 1;
        } else if (strcmp(argv[i], "--cipher") == 0 && i + 1 < argc) {
            ciphers = argv[++i];
        } else if (strcmp(argv[i], "--servername") == 0 && i + 1 < argc) {
            servername = argv[++i];
        } else {
            fprintf(stderr, "client: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    buf = malloc(BUF_SIZE);
    ctx = SSL_CTX_new(TLS_client_method());
    if (!buf || !ctx) {
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (tls12) {
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
        if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
            fprintf(stderr, "client: bad cipher list %s\n", ciphers);
            return 2;
        }
    } else {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        if (SSL_CTX_set_ciphersuites(ctx, suite) != 1) {
            fprintf(stderr, "client: bad ciphersuite %s\n", suite);
            return 2;
        }
    }
    /* Read whole socket buffers at once; records are then decrypted from memory. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);

    fd = tcp_connect(argv[1], argv[2]);
    if (fd < 0) {
        fprintf(stderr, "client: cannot connect to %s:%s: %s\n", argv[1], argv[2],
                strerror(errno));
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, servername ? servername : argv[1]);
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "client: handshake failed\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
             argv[3], servername ? servername : argv[1]);
    t0 = now();
    if (SSL_write(ssl, req, (int)strlen(req)) <= 0) {
        fprintf(stderr, "client: write failed\n");
        return 1;
    }
    /* The head arrives in the first record(s); the body count starts after it. */
    while (!head) {
        size_t n = 0;
        char *e;
        if (got == BUF_SIZE || SSL_read_ex(ssl, buf + got, BUF_SIZE - got, &n) != 1) {
            fprintf(stderr, "client: no response head\n");
            return 1;
        }
        got += n;
        buf[got < BUF_SIZE ? got : BUF_SIZE - 1] = '\0';
        e = memmem(buf, got, "\r\n\r\n", 4);
        if (e) {
            char *cl = strcasestr((char *)buf, "\r\ncontent-length:");
            head = (size_t)(e + 4 - (char *)buf);
            if (strncmp((char *)buf, "HTTP/1.1 200", 12) != 0 || !cl) {
                fprintf(stderr, "client: unexpected response: %.*s\n", (int)head, buf);
                return 1;
            }
            clen = strtoll(cl + 17, NULL, 10);
        }
    }
    total = got - head;
    while ((long long)total < clen) {
        size_t n = 0;
        if (SSL_read_ex(ssl, buf, BUF_SIZE, &n) != 1) {
            break;
        }
        total += n;
    }
    t1 = now();
    printf("bytes=%zu seconds=%.6f gbps=%.3f\n", total, t1 - t0, (double)total / (t1 - t0) / 1e9);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    free(buf);
    return (long long)total == clen ? 0 : 1;
}

/* harness.c - see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kconst.h"

const char *h_fixture(const char *name)
{
    static _Thread_local char path[4][512];
    static _Thread_local int slot;
    const char *dir = getenv("TLSK_FIXTURES");
    char *p = path[slot++ & 3];

    snprintf(p, 512, "%s/%s", dir ? dir : "build/fixtures/rsa", name);
    return p;
}

bool h_expect_ktls(void)
{
    const char *e = getenv("TLSK_EXPECT_KTLS");
    return e && strcmp(e, "1") == 0;
}

bool h_kernel_rekey(void)
{
    return h_expect_ktls() && tlsk_kernel_probe()->rekey;
}

bool h_newest_tier(void)
{
    const char *e = getenv("TLSK_KERNEL_TIER");
    return h_expect_ktls() && e && strcmp(e, "newest") == 0;
}

size_t h_bulk_bytes(size_t def_mib)
{
    const char *e = getenv("TLSK_TEST_BULK_MIB");
    size_t mib = e ? strtoul(e, NULL, 10) : def_mib;
    return (mib ? mib : 1) << 20;
}

int h_listen(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int h_tcp_pair(int *client, int *server)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int port, c, s, l = h_listen(&port);

    if (l < 0) {
        return l;
    }
    a.sin_port = htons((uint16_t)port);
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = -errno;
        if (c >= 0) {
            close(c);
        }
        close(l);
        return e;
    }
    s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    if (s < 0) {
        close(c);
        return -errno;
    }
    *client = c;
    *server = s;
    return 0;
}

void h_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);

    if (rc != 0) {
        printf("Bail out! pthread_create: %s\n", strerror(rc));
        fflush(stdout);
        exit(1);
    }
}

int h_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        return -errno;
    }
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl) == 0 ? 0 : -errno;
}

/* xorshift over 8-byte blocks: byte i of block b depends only on (seed, b). */
static uint64_t block(uint32_t seed, uint64_t b)
{
    uint64_t x = (b + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32 | seed);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

void h_pattern(uint32_t seed, uint64_t off, unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint64_t o = off + i, v = block(seed, o / 8);
        unsigned sh = (unsigned)(o % 8);
        buf[i++] = (unsigned char)(v >> (sh * 8));
        while (++sh < 8 && i < len) {
            buf[i++] = (unsigned char)(v >> (sh * 8));
        }
    }
}

int64_t h_pattern_check(uint32_t seed, uint64_t off, const unsigned char *buf, size_t len)
{
    unsigned char tmp[4096];
    for (size_t i = 0; i < len; i += sizeof tmp) {
        size_t n = len - i < sizeof tmp ? len - i : sizeof tmp;
        h_pattern(seed, off + i, tmp, n);
        if (memcmp(tmp, buf + i, n) != 0) {
            for (size_t j = 0; j < n; j++) {
                if (tmp[j] != buf[i + j]) {
                    return (int64_t)(off + i + j);
                }
            }
        }
    }
    return -1;
}

int h_pattern_file(uint32_t seed, size_t len)
{
    char path[] = "/tmp/tlsk-test-XXXXXX";
    unsigned char buf[65536];
    int fd = mkstemp(path);

    if (fd < 0) {
        return -errno;
    }
    unlink(path);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        h_pattern(seed, off, buf, n);
        if (write(fd, buf, n) != (ssize_t)n) {
            close(fd);
            return -EIO;
        }
        off += n;
    }
    return fd;
}

static int wait_for(struct tlsk_socket *s)
{
    struct pollfd p = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
    int r = poll(&p, 1, 20000);
    if (r == 0) {
        return -ETIMEDOUT;
    }
    return r < 0 ? -errno : 0;
}

int h_handshake(struct tlsk_socket *s)
{
    int rc;
    while ((rc = tlsk_socket_handshake(s)) == -EAGAIN) {
        if ((rc = wait_for(s)) != 0) {
            return rc;
        }
    }
    return rc;
}

int h_write_all(struct tlsk_socket *s, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = tlsk_socket_write(s, p, len);
        if (n == -EAGAIN) {
            int rc = wait_for(s);
            if (rc) {
                return rc;
            }
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t h_read_some(struct tlsk_socket *s, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = tlsk_socket_read(s, buf, len);
        if (n != -EAGAIN) {
            return n;
        }
        int rc = wait_for(s);
        if (rc) {
            return rc;
        }
    }
}

ssize_t h_read_full(struct tlsk_socket *s, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = h_read_some(s, (unsigned char *)buf + got, len - got);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int h_shutdown(struct tlsk_socket *s)
{
    int rc;
    while ((rc = tlsk_socket_shutdown(s)) == -EAGAIN) {
        if ((rc = wait_for(s)) != 0) {
            return rc;
        }
    }
    return rc;
}

int h_sendfile_all(struct tlsk_socket *s, int file_fd, size_t count)
{
    off_t off = 0;
    while ((size_t)off < count) {
        ssize_t n = tlsk_socket_sendfile(s, file_fd, &off, count - (size_t)off);
        if (n == -EAGAIN) {
            int rc = wait_for(s);
            if (rc) {
                return rc;
            }
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -EIO; /* file shorter than count */
        }
    }
    return 0;
}

int h_send_pattern(struct tlsk_socket *s, uint32_t seed, size_t len)
{
    static _Thread_local unsigned char buf[200000];
    uint64_t off = 0;
    size_t step = 1;
    while (off < len) {
        /* Vary write sizes: 1 byte up to ~195 KiB, so records of every shape appear. */
        size_t n = step % sizeof buf;
        if (n == 0) {
            n = 1;
        }
        if (n > len - off) {
            n = len - off;
        }
        h_pattern(seed, off, buf, n);
        int rc = h_write_all(s, buf, n);
        if (rc) {
            return rc;
        }
        off += n;
        step = step * 7 + 13;
    }
    return 0;
}

int h_recv_pattern(struct tlsk_socket *s, uint32_t seed, size_t len)
{
    static _Thread_local unsigned char buf[131072];
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < sizeof buf ? len - off : sizeof buf;
        ssize_t n = h_read_some(s, buf, want);
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -EPIPE;
        }
        if (h_pattern_check(seed, off, buf, (size_t)n) >= 0) {
            fprintf(stderr, "# pattern mismatch at %lld\n",
                    (long long)h_pattern_check(seed, off, buf, (size_t)n));
            return -EILSEQ;
        }
        off += (size_t)n;
    }
    return 0;
}

static struct tlsk_context *mk(bool server, int version, const char *suite,
                               enum tlsk_offload_policy pol, unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    if (server) {
        o.cert_file = h_fixture("agent1-cert.pem");
        o.key_file = h_fixture("agent1-key.pem");
    } else {
        o.ca_file = h_fixture("ca1-cert.pem");
    }
    o.min_version = o.max_version = version;
    if (suite && strncmp(suite, "TLS_", 4) == 0) {
        o.ciphersuites = suite;
    } else if (suite) {
        o.ciphers = suite;
    }
    o.offload = pol;
    o.flags = flags;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        fprintf(stderr, "# context: %s\n", err);
        return NULL;
    }
    return c;
}

struct tlsk_context *h_server_ctx(int version, const char *suite, enum tlsk_offload_policy pol,
                                  unsigned flags)
{
    return mk(true, version, suite, pol, flags);
}

struct tlsk_context *h_client_ctx(int version, const char *suite, enum tlsk_offload_policy pol,
                                  unsigned flags)
{
    return mk(false, version, suite, pol, flags);
}

int h_kernel_has(int fd, bool tx, int *version, int *cipher)
{
    struct tls_crypto_info ci;
    socklen_t l = sizeof ci;

    if (getsockopt(fd, TLSK_SOL_TLS, tx ? TLSK_TLS_TX : TLSK_TLS_RX, &ci, &l) != 0) {
        return 0;
    }
    if (version) {
        *version = ci.version;
    }
    if (cipher) {
        *cipher = ci.cipher_type;
    }
    return 1;
}

long long h_tls_stat(const char *name)
{
    FILE *f = fopen("/proc/net/tls_stat", "r");
    char key[64];
    unsigned long long v;
    long long out = -1;

    if (!f) {
        return -1;
    }
    while (fscanf(f, "%63s %llu", key, &v) == 2) {
        if (strcmp(key, name) == 0) {
            out = (long long)v;
            break;
        }
    }
    fclose(f);
    return out;
}

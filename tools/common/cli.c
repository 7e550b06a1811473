/* cli.c - helpers shared by the tlsk command-line tools (see cli.h). */
#include "cli.h"
#include "service.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

const char *cli_prog = "tlsk";

void cli_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n = snprintf(line, sizeof line, "%s: ", cli_prog);

    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) {
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    }
    va_end(ap);
    n = (int)strlen(line);
    if ((size_t)n >= sizeof line - 1) {
        n = (int)sizeof line - 2;
    }
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}

int cli_parse_offload(const char *name, enum tlsk_offload_policy *out)
{
    static const struct {
        const char *name;
        enum tlsk_offload_policy p;
    } t[] = { { "auto", TLSK_OFFLOAD_AUTO },
              { "tx", TLSK_OFFLOAD_TX },
              { "off", TLSK_OFFLOAD_OFF },
              { "require", TLSK_OFFLOAD_REQUIRE } };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(name, t[i].name) == 0) {
            *out = t[i].p;
            return 0;
        }
    }
    return -EINVAL;
}

int cli_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        return -errno;
    }
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl) == 0 ? 0 : -errno;
}

long long cli_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Split "HOST:PORT" / "[V6]:PORT" / ":PORT" into host (empty for any) and port. */
static int split_hostport(const char *spec, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon;
    size_t n;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':') {
            return -EINVAL;
        }
        n = (size_t)(close - spec - 1);
        colon = close + 1;
        spec++;
    } else {
        colon = strrchr(spec, ':');
        if (!colon) {
            return -EINVAL;
        }
        n = (size_t)(colon - spec);
    }
    if (n >= hlen || strlen(colon + 1) >= plen || !colon[1]) {
        return -EINVAL;
    }
    memcpy(host, spec, n);
    host[n] = '\0';
    snprintf(port, plen, "%s", colon + 1);
    return 0;
}

void cli_addr_name(const struct sockaddr *sa, char *out, size_t len)
{
    char h[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
        snprintf(out, len, "%s:%d", h, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        port = ntohs(a->sin6_port);
        snprintf(out, len, "[%s]:%d", h, port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, len, "unix");
    } else {
        snprintf(out, len, "?");
    }
}

int cli_listen(const char *spec, char *bound, size_t bound_len)
{
    char host[256], port[32];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai, *p;
    int fd = -1, rc, one = 1;

    char why[256];

    /* Socket activation: the service manager's socket replaces --listen. */
    fd = svc_listen_fd(why, sizeof why);
    if (fd >= 0) {
        if (bound) {
            cli_sockname(fd, false, bound, bound_len);
        }
        return fd;
    }
    if (fd != -ENOENT) {
        cli_log("%s", why);
        return fd;
    }
    if (split_hostport(spec, host, sizeof host, port, sizeof port) != 0) {
        return -EINVAL;
    }
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &ai) != 0) {
        return -EADDRNOTAVAIL;
    }
    rc = -EADDRNOTAVAIL;
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (rc != 0) {
        return rc;
    }
    if (bound) {
        cli_sockname(fd, false, bound, bound_len);
    }
    return fd;
}

/* Wait for a non-blocking connect() to finish.  Returns 0 or -errno. */
static int connect_wait(int fd, long long deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        long long left = deadline - cli_now_ms();
        int err = 0;
        socklen_t el = sizeof err;
        int r;

        if (left <= 0) {
            return -ETIMEDOUT;
        }
        r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -errno;
        }
        if (r == 0) {
            return -ETIMEDOUT;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
            return -errno;
        }
        return -err;
    }
}

static int connect_one(const struct sockaddr *sa, socklen_t len, long long deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int rc = 0;

    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, sa, len) != 0) {
        rc = errno == EINPROGRESS || errno == EAGAIN ? connect_wait(fd, deadline) : -errno;
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int cli_connect(const char *spec, int timeout_ms)
{
    long long deadline = cli_now_ms() + timeout_ms;
    char host[256], port[32];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *p;
    int rc = -EADDRNOTAVAIL;

    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        if (strlen(spec + 5) >= sizeof un.sun_path || !spec[5]) {
            return -ENAMETOOLONG;
        }
        memcpy(un.sun_path, spec + 5, strlen(spec + 5));
        return connect_one((struct sockaddr *)&un, sizeof un, deadline);
    }
    if (split_hostport(spec, host, sizeof host, port, sizeof port) != 0) {
        return -EINVAL;
    }
    if (getaddrinfo(host[0] ? host : "localhost", port, &hints, &ai) != 0) {
        return -EADDRNOTAVAIL;
    }
    for (p = ai; p; p = p->ai_next) {
        rc = connect_one(p->ai_addr, p->ai_addrlen, deadline);
        if (rc >= 0 || rc == -ETIMEDOUT) {
            break;
        }
    }
    freeaddrinfo(ai);
    return rc;
}

int cli_handshake(struct tlsk_socket *s, int timeout_ms)
{
    long long deadline = cli_now_ms() + timeout_ms;

    for (;;) {
        int rc = tlsk_socket_handshake(s);
        if (rc != -EAGAIN) {
            return rc;
        }
        short ev = (short)tlsk_socket_events(s);
        struct pollfd p = { .fd = tlsk_socket_fd(s), .events = ev ? ev : POLLIN };
        long long left = deadline - cli_now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        if (ev == 0) {
            /* Waiting on an asynchronous answer (SNI callback): nothing to poll for. */
            struct timespec t = { 0, 1000000 };
            nanosleep(&t, NULL);
            continue;
        }
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
            return -errno;
        }
    }
}

static void describe_dir(const struct tlsk_direction *d, char *out, size_t len)
{
    if (d->mode == TLSK_MODE_KERNEL) {
        snprintf(out, len, "kernel");
    } else {
        snprintf(out, len, "userspace (%s)", tlsk_reason_name(d->reason));
    }
}

void cli_describe(const struct tlsk_socket *s, char *out, size_t len)
{
    struct tlsk_offload o = tlsk_socket_offload(s);
    char tx[64], rx[64];
    const char *v = tlsk_socket_version(s), *c = tlsk_socket_cipher(s);

    describe_dir(&o.tx, tx, sizeof tx);
    describe_dir(&o.rx, rx, sizeof rx);
    snprintf(out, len, "%s %s, tx %s, rx %s", v ? v : "?", c ? c : "?", tx, rx);
}

void cli_sockname(int fd, bool remote, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int r = remote ? getpeername(fd, (struct sockaddr *)&ss, &sl)
                   : getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (r != 0) {
        snprintf(out, len, "?");
        return;
    }
    cli_addr_name((struct sockaddr *)&ss, out, len);
}

int cli_sockaddr(int fd, bool remote, char *host, size_t host_len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int r = remote ? getpeername(fd, (struct sockaddr *)&ss, &sl)
                   : getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (r != 0) {
        return -errno;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, (socklen_t)host_len);
        *port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, (socklen_t)host_len);
        *port = ntohs(a->sin6_port);
    } else {
        return -EAFNOSUPPORT;
    }
    return ss.ss_family;
}

const char *cli_escape(const char *in, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (len == 0) {
        return out;
    }
    if (!in) {
        in = "-";
    }
    for (; *in; in++) {
        unsigned char c = (unsigned char)*in;
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            if (o + 1 >= len) {
                break;
            }
            out[o++] = (char)c;
        } else {
            if (o + 4 >= len) {
                break;
            }
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

bool cli_servername_ok(const char *name)
{
    size_t n = 0;

    if (!name) {
        return false;
    }
    for (; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return n > 0 && n <= 255;
}

void cli_linger_close(int fd)
{
    long long deadline = cli_now_ms() + CLI_LINGER_MS;
    size_t total = 0;
    bool readable = true;
    int spins = 0;
    char junk[16384];

    if (fd < 0) {
        return;
    }
    if (shutdown(fd, SHUT_WR) != 0) {
        close(fd); /* not connected any more (reset): nothing to wait for */
        return;
    }
    while (total < CLI_LINGER_BYTES) {
        long long left = deadline - cli_now_ms();
        struct pollfd pf = { .fd = fd, .events = POLLIN | POLLRDHUP };

        if (left <= 0) {
            break;
        }
        if (!readable) {
            /* Nothing more can be read (a record the kernel refused stays queued): wait for
             * the peer's FIN, which says it has read what we sent, within the same bound. */
            pf.events = POLLRDHUP;
            if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP))) {
                break;
            }
            poll(NULL, 0, left < 10 ? (int)left : 10);
            continue;
        }
        if (poll(&pf, 1, (int)left) == 0) {
            break;
        }
        /* A control-message buffer: a kTLS socket then hands over (and consumes) control
         * records instead of failing with EIO.  Harmless on a plain socket. */
        union {
            char buf[CMSG_SPACE(sizeof(unsigned char))];
            struct cmsghdr align;
        } cbuf;
        struct iovec iov = { .iov_base = junk, .iov_len = sizeof junk };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                            .msg_controllen = sizeof cbuf.buf };
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
        if (n > 0) {
            total += (size_t)n;
            spins = 0;
        } else if (n == 0) {
            break; /* the peer's FIN */
        } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            /* Level-triggered poll on 6.1 reports a partial kTLS record as readable
             * (docs/KERNEL.md section 5): back off instead of spinning. */
            if (++spins > 4) {
                poll(NULL, 0, 1);
            }
        } else {
            readable = false;
        }
    }
    close(fd);
}

void cli_abort_close(int fd)
{
    struct linger l = { .l_onoff = 1, .l_linger = 0 };

    if (fd < 0) {
        return;
    }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

void cli_free_lingering(struct tlsk_socket *s)
{
    int fd = s ? dup(tlsk_socket_fd(s)) : -1;

    /* The duplicate keeps the connection open while tlsk frees (and closes) its own. */
    tlsk_socket_free(s);
    cli_linger_close(fd);
}

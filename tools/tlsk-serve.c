/*
 * tlsk-serve - serve a folder over HTTPS, bodies sent with tlsk_socket_sendfile (zero-copy
 * through the kernel when transmit is offloaded).
 *
 *   tlsk-serve --cert CERT --key KEY [--root DIR] [--listen HOST:PORT] [--offload POLICY]
 *
 * HTTP/1.1 GET and HEAD with keep-alive, index.html, Content-Type by extension.  One thread
 * per connection.  A minimal server for `make run`; the full tool (ranges, conditional
 * requests, virtual hosts, workers) is tracked separately.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tlsk.h"

static char root_real[PATH_MAX];
static struct tlsk_context *ctx;

static void usage(FILE *f)
{
    fputs("usage: tlsk-serve --cert CERT.pem --key KEY.pem [--root DIR] [--listen HOST:PORT]\n"
          "                  [--offload auto|tx|off|require]\n"
          "Serves DIR (default .) over HTTPS on HOST:PORT (default 127.0.0.1:8443).\n"
          "Prints whether the kernel (kTLS) or userspace encrypts each connection, and why.\n",
          f);
}

static const char *mime(const char *path)
{
    static const struct {
        const char *ext, *type;
    } t[] = {
        { ".html", "text/html; charset=utf-8" }, { ".htm", "text/html; charset=utf-8" },
        { ".txt", "text/plain; charset=utf-8" }, { ".md", "text/plain; charset=utf-8" },
        { ".c", "text/plain; charset=utf-8" },   { ".h", "text/plain; charset=utf-8" },
        { ".css", "text/css" },                  { ".js", "text/javascript" },
        { ".json", "application/json" },         { ".png", "image/png" },
        { ".jpg", "image/jpeg" },                { ".svg", "image/svg+xml" },
        { ".pdf", "application/pdf" },
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof t / sizeof t[0]; i++) {
        if (strcasecmp(dot, t[i].ext) == 0) {
            return t[i].type;
        }
    }
    return "application/octet-stream";
}

static int write_all(struct tlsk_socket *s, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = tlsk_socket_write(s, buf, len);
        if (n < 0) {
            return (int)n;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int reply_status(struct tlsk_socket *s, int code, const char *text, bool keep)
{
    char h[256];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\n\r\n%s\n",
                     code, text, strlen(text) + 1, keep ? "keep-alive" : "close", text);
    return write_all(s, h, (size_t)n);
}

/* Map a request path to a regular file under the root; no escape by "..", encoding or links. */
static int open_under_root(const char *target, struct stat *st)
{
    char path[PATH_MAX], real[PATH_MAX], dec[PATH_MAX];
    size_t j = 0;
    int fd;

    for (size_t i = 0; target[i] && target[i] != '?' && j + 1 < sizeof dec; i++) {
        if (target[i] == '%' && target[i + 1] && target[i + 2]) {
            unsigned v;
            if (sscanf(target + i + 1, "%2x", &v) != 1 || v == 0) {
                return -EINVAL;
            }
            dec[j++] = (char)v;
            i += 2;
        } else {
            dec[j++] = target[i];
        }
    }
    dec[j] = '\0';
    if (dec[0] != '/') {
        return -EINVAL;
    }
    if ((size_t)snprintf(path, sizeof path, "%s%s", root_real, dec) >= sizeof path) {
        return -ENAMETOOLONG;
    }
    if (!realpath(path, real)) {
        return -errno;
    }
    if (strncmp(real, root_real, strlen(root_real)) != 0 ||
        (real[strlen(root_real)] != '/' && real[strlen(root_real)] != '\0')) {
        return -EACCES;
    }
    if (stat(real, st) == 0 && S_ISDIR(st->st_mode)) {
        strncat(real, "/index.html", sizeof real - strlen(real) - 1);
    }
    fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -EACCES;
    }
    return fd;
}

static void describe(struct tlsk_socket *s, char *out, size_t len)
{
    struct tlsk_offload o = tlsk_socket_offload(s);
    snprintf(out, len, "%s %s, tx %s%s%s, rx %s%s%s", tlsk_socket_version(s), tlsk_socket_cipher(s),
             o.tx.mode == TLSK_MODE_KERNEL ? "kernel" : "userspace",
             o.tx.mode == TLSK_MODE_KERNEL ? "" : " because ",
             o.tx.mode == TLSK_MODE_KERNEL ? "" : tlsk_reason_name(o.tx.reason),
             o.rx.mode == TLSK_MODE_KERNEL ? "kernel" : "userspace",
             o.rx.mode == TLSK_MODE_KERNEL ? "" : " because ",
             o.rx.mode == TLSK_MODE_KERNEL ? "" : tlsk_reason_name(o.rx.reason));
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct tlsk_socket *s = NULL;
    char req[8192], info[160];
    size_t have = 0;
    int rc;

    if (tlsk_socket_new_server(&s, ctx, fd, &(struct tlsk_socket_options){
                                                .flags = TLSK_SOCKET_OWN_FD }) != 0) {
        close(fd);
        return NULL;
    }
    if ((rc = tlsk_socket_handshake(s)) != 0) {
        fprintf(stderr, "tlsk-serve: handshake failed: %s (%s)\n", tlsk_strerror(rc),
                tlsk_socket_error_detail(s));
        goto out;
    }
    describe(s, info, sizeof info);
    for (;;) {
        char *end, method[8], target[4096], version[16];
        bool keep = true;
        struct stat st;
        int ffd;

        while (!(end = memmem(req, have, "\r\n\r\n", 4))) {
            ssize_t n;
            if (have == sizeof req) {
                reply_status(s, 431, "Request Header Fields Too Large", false);
                goto done;
            }
            n = tlsk_socket_read(s, req + have, sizeof req - have);
            if (n <= 0) {
                goto done;
            }
            have += (size_t)n;
        }
        *end = '\0';
        if (sscanf(req, "%7s %4095s %15s", method, target, version) != 3) {
            reply_status(s, 400, "Bad Request", false);
            goto done;
        }
        if (strcasestr(req, "\r\nConnection: close") || strcmp(version, "HTTP/1.0") == 0) {
            keep = false;
        }
        {
            size_t used = (size_t)(end + 4 - req);
            memmove(req, req + used, have - used);
            have -= used;
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            reply_status(s, 405, "Method Not Allowed", keep);
            continue;
        }
        ffd = open_under_root(target, &st);
        if (ffd < 0) {
            int code = ffd == -ENOENT ? 404 : ffd == -EINVAL ? 400 : 403;
            fprintf(stderr, "tlsk-serve: %s %s -> %d [%s]\n", method, target, code, info);
            if (reply_status(s, code, code == 404 ? "Not Found" : code == 400 ? "Bad Request"
                                                                               : "Forbidden",
                             keep) != 0 || !keep) {
                goto done;
            }
            continue;
        }
        char h[512];
        int hl = snprintf(h, sizeof h,
                          "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %lld\r\n"
                          "Connection: %s\r\nServer: tlsk-serve\r\n\r\n",
                          mime(target), (long long)st.st_size, keep ? "keep-alive" : "close");
        rc = write_all(s, h, (size_t)hl);
        off_t off = 0;
        while (rc == 0 && strcmp(method, "GET") == 0 && off < st.st_size) {
            ssize_t n = tlsk_socket_sendfile(s, ffd, &off, (size_t)(st.st_size - off));
            if (n <= 0) {
                rc = n < 0 ? (int)n : -EIO;
            }
        }
        close(ffd);
        fprintf(stderr, "tlsk-serve: %s %s -> 200, %lld bytes [%s]\n", method, target,
                (long long)st.st_size, info);
        if (rc != 0 || !keep) {
            goto done;
        }
    }
done:
    tlsk_socket_shutdown(s);
out:
    tlsk_socket_free(s);
    return NULL;
}

int main(int argc, char **argv)
{
    struct tlsk_context_options o = { 0 };
    const char *root = ".", *listen_at = "127.0.0.1:8443";
    char err[512], host[256], *colon;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    int lfd, one = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--cert") == 0) {
            o.cert_file = v;
        } else if (strcmp(a, "--key") == 0) {
            o.key_file = v;
        } else if (strcmp(a, "--root") == 0) {
            root = v;
        } else if (strcmp(a, "--listen") == 0) {
            listen_at = v;
        } else if (strcmp(a, "--offload") == 0) {
            o.offload = strcmp(v, "tx") == 0        ? TLSK_OFFLOAD_TX
                        : strcmp(v, "off") == 0     ? TLSK_OFFLOAD_OFF
                        : strcmp(v, "require") == 0 ? TLSK_OFFLOAD_REQUIRE
                                                    : TLSK_OFFLOAD_AUTO;
        } else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!o.cert_file || !o.key_file) {
        usage(stderr);
        return 2;
    }
    if (!realpath(root, root_real)) {
        fprintf(stderr, "tlsk-serve: %s: %s\n", root, strerror(errno));
        return 1;
    }
    if (tlsk_context_new(&ctx, &o, err, sizeof err) != 0) {
        fprintf(stderr, "tlsk-serve: %s\n", err);
        return 1;
    }
    /* sendfile(2) has no MSG_NOSIGNAL: a peer that vanishes must not kill the server. */
    signal(SIGPIPE, SIG_IGN);

    snprintf(host, sizeof host, "%s", listen_at);
    colon = strrchr(host, ':');
    if (!colon) {
        fprintf(stderr, "tlsk-serve: --listen wants HOST:PORT\n");
        return 2;
    }
    *colon = '\0';
    if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai) != 0) {
        fprintf(stderr, "tlsk-serve: cannot resolve %s\n", listen_at);
        return 1;
    }
    lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(lfd, 512) != 0) {
        fprintf(stderr, "tlsk-serve: %s: %s\n", listen_at, strerror(errno));
        return 1;
    }
    freeaddrinfo(ai);

    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    printf("tlsk-serve: serving %s on https://%s/\n", root_real, listen_at);
    if (k->ulp) {
        printf("tlsk-serve: kTLS available (kernel %s): TLS 1.2 offloads both directions, "
               "TLS 1.3 transmit%s; bodies go out with sendfile through the kernel\n",
               k->release, k->rekey ? " and receive" : " (receive stays in userspace: no re-key)");
    } else {
        printf("tlsk-serve: kTLS NOT in use (kernel %s): TCP_ULP \"tls\" failed: %s; "
               "encrypting in userspace (try: modprobe tls)\n",
               k->release, strerror(-k->ulp_err));
    }
    fflush(stdout);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        pthread_t t;
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) {
                continue;
            }
            perror("tlsk-serve: accept");
            return 1;
        }
        if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)cfd) != 0) {
            close(cfd);
            continue;
        }
        pthread_detach(t);
    }
}

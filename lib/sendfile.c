/*
 * sendfile.c - tlsk_socket_sendfile(): sendfile(2) through the kernel when transmit is
 * offloaded (docs/KERNEL.md §4.2), otherwise file bytes encrypted by OpenSSL from a reused
 * buffer or, opted in, straight from a mapping of the page cache.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

#define SF_BUF_SIZE (16 * TLSK_MAX_PLAINTEXT)
#define SF_MAP_SIZE (64 * TLSK_MAX_PLAINTEXT)

static ssize_t kernel_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    ssize_t n;

    do {
        n = sendfile(s->fd, file_fd, offset, count);
    } while (n < 0 && errno == EINTR);
    /* On Linux 7.2.7 a kTLS sendfile went on accepting the whole rest of a 64 MiB file after
     * the peer had reset the connection (measured; docs/KERNEL.md §4.2): ask TCP whether the
     * connection still exists, so the caller learns at once that its bytes go nowhere. */
    if (n > 0 && getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
        ti.tcpi_state == TCP_CLOSE) {
        return tlsk__set_detail(s, -ECONNRESET, "sendfile: the connection was reset (the "
                                                "kernel took bytes it cannot deliver)");
    }
    return tlsk__kernel_sent(s, n, "sendfile");
}

/* Userspace sendfile from a mapping of the page cache: OpenSSL encrypts straight from the
 * file's pages, saving the copy into a buffer.  Returns bytes, 0 at EOF, -EAGAIN, an error,
 * or -ENODEV when the file cannot be mapped. */
static ssize_t mapped_sendfile(struct tlsk_socket *s, int file_fd, off_t pos, size_t count)
{
    static long page;
    struct stat st;
    size_t chunk, delta;
    off_t base;
    void *m;
    ssize_t n;

    if (!page) {
        page = sysconf(_SC_PAGESIZE);
    }
    if (fstat(file_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return -ENODEV;
    }
    if (pos >= st.st_size) {
        return 0;
    }
    if (s->sf_pending > 0 && s->sf_pending_off == pos) {
        chunk = s->sf_pending; /* OpenSSL wants the same bytes again */
    } else {
        chunk = count < SF_MAP_SIZE ? count : SF_MAP_SIZE;
    }
    if ((off_t)chunk > st.st_size - pos) {
        chunk = (size_t)(st.st_size - pos);
    }
    base = pos & ~(off_t)(page - 1);
    delta = (size_t)(pos - base);
    m = mmap(NULL, chunk + delta, PROT_READ, MAP_SHARED | MAP_POPULATE, file_fd, base);
    if (m == MAP_FAILED) {
        return -ENODEV;
    }
    s->sf_pending = 0;
    n = tlsk__user_write(s, (const unsigned char *)m + delta, chunk);
    munmap(m, chunk + delta);
    if (n == -EAGAIN) {
        s->sf_pending = chunk;
        s->sf_pending_off = pos;
    } else if (n > 0 && (size_t)n < chunk) {
        s->sf_pending = chunk - (size_t)n;
        s->sf_pending_off = pos + n;
    }
    return n;
}

/* Userspace sendfile: read into a reused buffer, write full-size records.  When OpenSSL
 * stops with a record half-sent, the bytes it holds stay in sf_buf: OpenSSL requires the
 * retry to present the same data. */
static ssize_t user_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    off_t pos;
    size_t chunk;
    ssize_t n;

    if (offset) {
        pos = *offset;
    } else if ((pos = lseek(file_fd, 0, SEEK_CUR)) < 0) {
        return -errno;
    }
    if (s->flags & TLSK_SOCKET_SENDFILE_MMAP) {
        n = mapped_sendfile(s, file_fd, pos, count);
        if (n != -ENODEV) {
            if (n > 0) {
                if (offset) {
                    *offset = pos + n;
                } else if (lseek(file_fd, pos + n, SEEK_SET) < 0) {
                    return -errno;
                }
            }
            return n;
        }
        /* Not mappable (a pipe, procfs...): the buffered path below. */
    }
    if (s->sf_pending > 0 && s->sf_pending_off == pos) {
        chunk = s->sf_pending;
    } else {
        chunk = count < SF_BUF_SIZE ? count : SF_BUF_SIZE;
        if (s->sf_cap < chunk) {
            /* Sized to the call, in whole records: a small file gets a small buffer (from
             * the heap, reused), a large one the full 256 KiB. */
            size_t cap = (chunk + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT * TLSK_MAX_PLAINTEXT;
            free(s->sf_buf);
            s->sf_cap = 0;
            if (!(s->sf_buf = malloc(cap))) {
                return TLSK_ENOMEM;
            }
            s->sf_cap = cap;
        }
        do {
            n = pread(file_fd, s->sf_buf, chunk, pos);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            return 0;
        }
        chunk = (size_t)n;
    }
    s->sf_pending = 0;
    n = tlsk__user_write(s, s->sf_buf, chunk);
    if (n == -EAGAIN) {
        s->sf_pending = chunk;
        s->sf_pending_off = pos;
        return n;
    }
    if (n < 0) {
        return n;
    }
    if ((size_t)n < chunk) {
        /* OpenSSL may hold part of the next record: keep the rest where it is. */
        memmove(s->sf_buf, s->sf_buf + n, chunk - (size_t)n);
        s->sf_pending = chunk - (size_t)n;
        s->sf_pending_off = pos + n;
    } else if ((size_t)n == count) {
        /* All that was asked for is out: an idle keep-alive connection holds no buffer
         * (bench/README.md, idle memory). */
        free(s->sf_buf);
        s->sf_buf = NULL;
        s->sf_cap = 0;
    }
    if (offset) {
        *offset = pos + n;
    } else if (lseek(file_fd, pos + n, SEEK_SET) < 0) {
        return -errno;
    }
    return n;
}

TLSK_PUBLIC ssize_t tlsk_socket_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset,
                                         size_t count)
{
    ssize_t n = tlsk__tx_allowance(s, count);

    if (n <= 0) {
        return n;
    }
    if (s->soft) {
        return tlsk__kernel_sent(s, tlsk__soft_sendfile(s, file_fd, offset, (size_t)n), "sendfile");
    }
    if (s->tx_kernel) {
        return kernel_sendfile(s, file_fd, offset, (size_t)n);
    }
    return user_sendfile(s, file_fd, offset, count);
}

/*
 * softtx.c - the sending half of tlsk's own record layer (soft.c, TLSK_LEAN_USERSPACE): data
 * and control records sealed in place and sent, under userspace mode's contract.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "kconst.h"
#include "soft.h"

/*
 * A data send keeps userspace mode's contract (txq.c, docs/OPENSSL.md §11), not the kernel's:
 * the count returned is plaintext whose records have all left.  Records the socket did not
 * take stay in out and the call answers -EAGAIN (or the part before them); the caller sends
 * the same bytes again, and those records are what it is then told was sent.  So a program
 * that waits for readability once a write has "completed" never leaves a tail in tlsk.  A
 * control record goes whole or not at all (-EAGAIN: the bridge parks it) once every record
 * before it has left, whether or not the caller has been told; once taken it is tlsk's to
 * deliver, before anything sent after it (tlsk_socket_shutdown() answers -EAGAIN until then).
 */

bool tlsk__soft_busy(const struct tlsk_socket *s)
{
    return s->soft && s->soft->out_off < s->soft->out_len;
}

static void drop_out(struct tlsk__soft *f)
{
    free(f->book);
    f->book = NULL;
    f->out = NULL;
    f->out_len = f->out_off = 0;
    f->nrec = f->r0 = 0;
}

/* Send what out holds; the records' bookkeeping stays for collect().  0 when all of it left,
 * -EAGAIN (POLLOUT), or the send's failure (out is then dropped: it can never leave). */
static int send_out(struct tlsk_socket *s)
{
    struct tlsk__soft *f = s->soft;

    while (f->out_off < f->out_len) {
        ssize_t n = send(s->fd, f->out + f->out_off, f->out_len - f->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) {
            n = write(s->fd, f->out + f->out_off, f->out_len - f->out_off);
        }
        if (n < 0) {
            int e = errno == EWOULDBLOCK ? EAGAIN : errno;
            if (e == EINTR) {
                continue;
            }
            if (e == EAGAIN) {
                s->want = POLLOUT;
                return -EAGAIN;
            }
            drop_out(f); /* it can never leave */
            return -e;
        }
        f->out_off += (size_t)n;
    }
    return 0;
}

/* Records that have left move their plaintext to untold; out goes once all of it has left
 * (an idle connection keeps none). */
static void collect(struct tlsk__soft *f)
{
    while (f->r0 < f->nrec && f->book->end[f->r0] <= f->out_off) {
        f->untold += f->book->pt[f->r0++];
    }
    if (f->out && f->out_off == f->out_len) {
        drop_out(f);
    }
}

/* What the caller is told now: at most max bytes of untold. */
static size_t tell(struct tlsk__soft *f, size_t max)
{
    size_t n = f->untold < max ? f->untold : max;

    f->untold -= n;
    return n;
}

int tlsk__soft_flush(struct tlsk_socket *s)
{
    int rc;

    if (!s->soft) {
        return 0;
    }
    rc = send_out(s);
    collect(s->soft);
    return rc;
}

size_t tlsk__soft_untold(const struct tlsk_socket *s)
{
    const struct tlsk__soft *f = s->soft;
    size_t n = f ? f->untold : 0;

    for (unsigned i = f ? f->r0 : 0; f && i < f->nrec; i++) {
        n += f->book->pt[i];
    }
    return n;
}

/* Send what waits and tell a data send of up to max bytes whose records have left: that
 * count; else 0 when nothing waits (before sealing: the call may make records), -EAGAIN, or
 * the failure.  (After sealing, 0 cannot come: records that all left have plaintext.) */
static ssize_t settle(struct tlsk_socket *s, size_t max)
{
    int rc = tlsk__soft_flush(s);
    size_t done = tell(s->soft, max);

    return done > 0 ? (ssize_t)done : rc;
}

/* Room for recs records in out, which is empty. */
static int room(struct tlsk__soft *f, size_t recs)
{
    if (!(f->book = malloc(sizeof *f->book + recs * REC_ROOM))) {
        return -ENOMEM;
    }
    f->out = (unsigned char *)(f->book + 1);
    f->out_len = f->out_off = 0;
    f->nrec = f->r0 = 0;
    return 0;
}

/* The next record's plaintext goes here: sealed where it lies. */
static unsigned char *next_body(struct tlsk__soft *f)
{
    return f->out + f->out_len + 5 + explicit_len(&f->tx.k);
}

/* Seal the n bytes at next_body() as one record of type; data records are counted for
 * collect(). */
static int seal_next(struct tlsk__soft *f, int type, size_t n)
{
    size_t len;
    int rc;

    if (f->tx.k.seq == UINT64_MAX) {
        return -EKEYEXPIRED;
    }
    rc = tlsk__record_seal_cx(&f->tx.k, f->tx.cx, f->tx.k.seq, type, next_body(f), n,
                              f->out + f->out_len, REC_ROOM, &len);
    if (rc != 0) {
        return -EIO;
    }
    f->tx.k.seq++;
    f->out_len += len;
    f->book->end[f->nrec] = f->out_len;
    f->book->pt[f->nrec] = type == TLSK_REC_APPDATA ? n : 0;
    f->nrec++;
    return 0;
}

ssize_t tlsk__soft_send(struct tlsk_socket *s, int type, const void *data, size_t len)
{
    struct tlsk__soft *f = s->soft;
    int rc;

    if (len > TLSK_MAX_PLAINTEXT) {
        return -EMSGSIZE;
    }
    if ((rc = tlsk__soft_flush(s)) != 0) {
        return rc;
    }
    /* out is empty: whatever went before has left (the caller may not yet know). */
    if ((rc = room(f, 1)) != 0) {
        return rc;
    }
    memcpy(next_body(f), data, len);
    if ((rc = seal_next(f, type, len)) != 0) {
        drop_out(f);
        return rc;
    }
    rc = tlsk__soft_flush(s);
    return rc == 0 || rc == -EAGAIN ? (ssize_t)len : rc;
}

/* As the syscalls: -1 with errno on failure. */
static ssize_t as_syscall(ssize_t n)
{
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    return n;
}

ssize_t tlsk__soft_sendmsg(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    struct tlsk__soft *f = s->soft;
    size_t total = 0, done = 0, vo = 0;
    ssize_t n;
    int vi = 0, rc;

    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    if (total == 0) {
        return 0;
    }
    if ((n = settle(s, total)) != 0) {
        return as_syscall(n);
    }
    if (total > TX_RECS * TLSK_MAX_PLAINTEXT) {
        total = TX_RECS * TLSK_MAX_PLAINTEXT; /* a short send, as a full socket gives */
    }
    if ((rc = room(f, (total + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT)) != 0) {
        return as_syscall(rc);
    }
    while (done < total) {
        size_t len = total - done < TLSK_MAX_PLAINTEXT ? total - done : TLSK_MAX_PLAINTEXT;
        unsigned char *p = next_body(f);

        for (size_t got = 0; got < len;) {
            size_t take = iov[vi].iov_len - vo < len - got ? iov[vi].iov_len - vo : len - got;
            memcpy(p + got, (const unsigned char *)iov[vi].iov_base + vo, take);
            got += take;
            vo += take;
            if (vo == iov[vi].iov_len) {
                vi++;
                vo = 0;
            }
        }
        if ((rc = seal_next(f, TLSK_REC_APPDATA, len)) != 0) {
            break;
        }
        done += len;
    }
    if (done == 0) {
        collect(f);
        return as_syscall(rc);
    }
    return as_syscall(settle(s, done));
}

/* The file position a sendfile left: *offset, or the file's own. */
static int advance(int file_fd, off_t *offset, off_t pos)
{
    if (offset) {
        *offset = pos;
        return 0;
    }
    return lseek(file_fd, pos, SEEK_SET) < 0 ? -errno : 0;
}

ssize_t tlsk__soft_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    struct tlsk__soft *f = s->soft;
    off_t pos = offset ? *offset : lseek(file_fd, 0, SEEK_CUR);
    size_t done = 0, recs;
    ssize_t n;
    int rc = 0;

    if (pos < 0) {
        return -1; /* (errno from lseek) */
    }
    if (count == 0) {
        return 0;
    }
    if ((n = settle(s, count)) != 0) {
        /* The bytes an earlier call read from pos on, told of now. */
        if (n > 0 && (rc = advance(file_fd, offset, pos + n)) != 0) {
            n = rc;
        }
        return as_syscall(n);
    }
    if (count > TX_RECS * TLSK_MAX_PLAINTEXT) {
        count = TX_RECS * TLSK_MAX_PLAINTEXT;
    }
    recs = (count + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT;
    if ((rc = room(f, recs)) != 0) {
        return as_syscall(rc);
    }
    /* The file's bytes are read straight into the records' bodies, in one preadv: each record
     * but the last is full, so where each body goes is known before reading. */
    {
        size_t full = 5 + explicit_len(&f->tx.k) + TLSK_MAX_PLAINTEXT +
                      (f->tx.k.version == TLS1_3_VERSION ? 1 : 0) + TLSK_TAG_LEN;
        struct iovec iov[TX_RECS];
        ssize_t r;

        for (size_t i = 0; i < recs; i++) {
            iov[i].iov_base = f->out + i * full + 5 + explicit_len(&f->tx.k);
            iov[i].iov_len = count - i * TLSK_MAX_PLAINTEXT < TLSK_MAX_PLAINTEXT
                                 ? count - i * TLSK_MAX_PLAINTEXT
                                 : TLSK_MAX_PLAINTEXT;
        }
        do {
            r = preadv(file_fd, iov, (int)recs, pos);
        } while (r < 0 && errno == EINTR);
        rc = r < 0 ? -errno : 0; /* (0 bytes: the end of the file) */
        while (r > 0 && done < (size_t)r) {
            size_t len = (size_t)r - done < TLSK_MAX_PLAINTEXT ? (size_t)r - done
                                                                : TLSK_MAX_PLAINTEXT;
            if ((rc = seal_next(f, TLSK_REC_APPDATA, len)) != 0) {
                break;
            }
            done += len;
        }
    }
    if (done == 0) {
        collect(f);
        return as_syscall(rc); /* 0: the end of the file */
    }
    n = settle(s, done);
    if (n > 0 && (rc = advance(file_fd, offset, pos + n)) != 0) {
        n = rc;
    }
    return as_syscall(n);
}

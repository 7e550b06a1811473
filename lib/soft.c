/*
 * soft.c - tlsk's own record layer, standing in for the kernel's (TLSK_LEAN_USERSPACE).
 *
 * A lean server connection (lean.c) frees OpenSSL's state once the kernel has both directions.
 * Where the kernel cannot take them (no tls module, a cipher it lacks, a socket that is not
 * TCP), the connection can still be lean: this file takes the kernel's place.  It answers the
 * few calls the kernel path makes of a kTLS socket, each with that call's contract
 * (docs/KERNEL.md §3, §4, §16): a key installed at a sequence number and the sequence number
 * read back (setsockopt/getsockopt TLS_TX, TLS_RX); records sent with a type (sendmsg with
 * TLS_SET_RECORD_TYPE), data sent (sendmsg, sendfile); records received with their type,
 * never crossing a change of type, a control record ending with "end of record" (recvmsg with
 * TLS_GET_RECORD_TYPE).  Everything above those calls (io.c, the bridge's control records,
 * re-keys, key limits, the lean getters) runs as it does for the kernel.
 *
 * The records are record.c's, sealed and opened where they lie, with one cipher context per
 * direction keyed once.  The difference from the kernel is where sent bytes wait when the
 * socket is full: in tlsk, under userspace mode's contract (below, "Send").  Both buffers
 * exist only while they hold bytes: an idle connection keeps its keys and two cipher
 * contexts, nothing else.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"
#include "kconst.h"

/* The largest record made: header, TLS 1.2 explicit nonce, 2^14 bytes, TLS 1.3 type, tag. */
#define REC_ROOM (5 + 8 + TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN)
/* Records per send: 256 KiB, as txq.c and the userspace sendfile buffer. */
#define TX_RECS 16
/* Raw bytes per read: four records of the largest a peer may send (TLS 1.2: 2^14 + 2048). */
#define RX_CAP (4 * (5 + TLSK_MAX_PLAINTEXT + 2048))

struct soft_dir {
    struct tlsk__keys k; /* k.seq: the next record's sequence number */
    EVP_CIPHER_CTX *cx;
};

struct tlsk__soft {
    struct soft_dir tx, rx;
    /* Received bytes in[in_off, in_len).  When opened, the first record there has been
     * decrypted where it lies: its content is in[pt_off, pt_off + pt_len), it ends at rec_end. */
    unsigned char *in;
    size_t in_len, in_off, rec_end, pt_off, pt_len;
    int pt_type;
    bool opened;
    unsigned empty; /* empty records in a row */
    int rx_err; /* a refused record: every later read fails the same, as kernel RX does */
    /* Sealed bytes out[out_off, out_len) the socket has not taken yet; per record, where it
     * ends in out and the plaintext the caller has not been told of (0 for control records);
     * r0 is the first such record. */
    unsigned char *out;
    size_t out_len, out_off;
    size_t tx_end[TX_RECS], tx_pt[TX_RECS];
    unsigned nrec, r0;
    size_t untold; /* plaintext of records that have left, not yet told to the caller */
};

int tlsk__soft_new(struct tlsk_socket *s)
{
    if (!s->soft && !(s->soft = calloc(1, sizeof *s->soft))) {
        return TLSK_ENOMEM;
    }
    return 0;
}

int tlsk__soft_take(struct tlsk_socket *s, BIO *rbio)
{
    struct tlsk__soft *f = s->soft;
    size_t n = BIO_ctrl_pending(rbio);
    int got;

    if (n == 0) {
        return 0;
    }
    /* (The buffer BIO holds at most its 4 KiB buffer: within RX_CAP.) */
    if (n > RX_CAP || (!f->in && !(f->in = malloc(RX_CAP)))) {
        return TLSK_ENOMEM;
    }
    got = BIO_read(rbio, f->in, (int)n);
    f->in_len = f->in_off = 0;
    if (got != (int)n) {
        return TLSK_ENOMEM;
    }
    f->in_len = n;
    return 0;
}

static void drop_in(struct tlsk__soft *f)
{
    free(f->in);
    f->in = NULL;
    f->in_len = f->in_off = 0;
    f->opened = false;
}

void tlsk__soft_free(struct tlsk_socket *s)
{
    struct tlsk__soft *f = s->soft;

    if (!f) {
        return;
    }
    EVP_CIPHER_CTX_free(f->tx.cx); /* wipes its key schedule */
    EVP_CIPHER_CTX_free(f->rx.cx);
    if (f->in) {
        OPENSSL_cleanse(f->in, f->in_len);
    }
    drop_in(f);
    free(f->out);
    OPENSSL_cleanse(f, sizeof *f);
    free(f);
    s->soft = NULL;
}

int tlsk__soft_install(struct tlsk_socket *s, bool tx, const struct tlsk__keys *k)
{
    struct soft_dir *d = tx ? &s->soft->tx : &s->soft->rx;

    if (!d->cx && !(d->cx = EVP_CIPHER_CTX_new())) {
        return -ENOMEM;
    }
    if (tlsk__record_key(d->cx, k, tx) != 0) {
        return -EINVAL; /* as the kernel answers a cipher it does not know */
    }
    OPENSSL_cleanse(&d->k, sizeof d->k);
    d->k = *k;
    return 0;
}

uint64_t tlsk__soft_seq(const struct tlsk_socket *s, bool tx)
{
    return tx ? s->soft->tx.k.seq : s->soft->rx.k.seq;
}

static size_t explicit_len(const struct tlsk__keys *k)
{
    return k->version == TLS1_2_VERSION && k->tlsk_cipher != TLSK_CIPHER_CHACHA20_POLY1305 ? 8 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Receive                                                                                  */

/* OpenSSL's limit of empty records in a row (MAX_EMPTY_RECORDS, ssl3_get_record). */
#define MAX_EMPTY 32

/* Open the first record received, where it lies: 1, 0 when it is not all here, or the errno
 * kernel RX gives for it (docs/KERNEL.md §3.5): EINVAL for a header that is not TLS 1.2's,
 * EMSGSIZE past the record limits, EBADMSG for a record that does not authenticate or is too
 * short to.  Where the kernel cannot see what OpenSSL sees (docs/KERNEL.md §16), EPROTO,
 * which io.c answers with unexpected_message as OpenSSL does: a TLS 1.3 record whose outer
 * type is not application_data, one of padding only, the 33rd empty record in a row. */
static int open_next(struct tlsk__soft *f)
{
    size_t avail = f->in_len - f->in_off, body, ex, len;
    const struct tlsk__keys *k = &f->rx.k;
    unsigned char *h;
    int type, rc;

    if (!f->in || avail < 5) {
        return 0;
    }
    if (k->seq == UINT64_MAX) {
        return -EKEYEXPIRED; /* RFC 8446 5.3: never wrap (key limits re-key long before) */
    }
    h = f->in + f->in_off;
    body = (size_t)h[3] << 8 | h[4];
    if (h[1] != 3 || h[2] != 3) {
        return -EINVAL;
    }
    if (k->version == TLS1_3_VERSION && h[0] != TLSK_REC_APPDATA) {
        return -EPROTO; /* SSL_R_BAD_RECORD_TYPE */
    }
    /* RFC 8446 5.2, RFC 5246 6.2.3: ciphertext over 2^14 + 256 (TLS 1.3) or 2^14 + 2048. */
    if (body > TLSK_MAX_PLAINTEXT + (k->version == TLS1_3_VERSION ? 256 : 2048)) {
        return -EMSGSIZE;
    }
    if (avail < 5 + body) {
        return 0;
    }
    ex = explicit_len(k);
    if (body < ex + TLSK_TAG_LEN + (k->version == TLS1_3_VERSION ? 1 : 0)) {
        return -EBADMSG;
    }
    rc = tlsk__record_open_cx(k, f->rx.cx, k->seq, h, 5 + body, &type, h + 5 + ex, body, &len);
    if (rc != 0) {
        return rc; /* -EPROTO after decrypting: a TLS 1.3 record with no content type */
    }
    if (len > 0) {
        f->empty = 0;
    } else if (++f->empty > MAX_EMPTY) {
        return -EPROTO; /* SSL_R_RECORD_TOO_SMALL */
    }
    f->rx.k.seq++;
    f->opened = true;
    f->pt_type = type;
    f->pt_off = f->in_off + 5 + ex;
    f->pt_len = len;
    f->rec_end = f->in_off + 5 + body;
    return 1;
}

/* Read what the socket has after the bytes kept: bytes, 0 at EOF, or -errno. */
static ssize_t fill(struct tlsk_socket *s)
{
    struct tlsk__soft *f = s->soft;
    ssize_t n;

    if (!f->in) {
        if (!(f->in = malloc(RX_CAP))) {
            return -ENOMEM;
        }
        f->in_len = f->in_off = 0;
    } else if (f->in_off > 0) {
        memmove(f->in, f->in + f->in_off, f->in_len - f->in_off);
        f->in_len -= f->in_off;
        f->in_off = 0;
    }
    do {
        n = read(s->fd, f->in + f->in_len, RX_CAP - f->in_len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    f->in_len += (size_t)n;
    return n;
}

ssize_t tlsk__soft_recv(struct tlsk_socket *s, void *buf, size_t len, int *type, bool *eor)
{
    struct tlsk__soft *f = s->soft;
    unsigned char *out = buf;
    size_t got = 0;
    ssize_t rc;

    *type = TLSK_REC_APPDATA;
    *eor = false;
    if (f->rx_err) {
        return -f->rx_err;
    }
    for (;;) {
        if (f->opened) {
            size_t n;

            if (f->pt_type != TLSK_REC_APPDATA && got > 0) {
                break; /* a read never crosses a change of record type */
            }
            n = f->pt_len < len - got ? f->pt_len : len - got;
            memcpy(out + got, f->in + f->pt_off, n);
            f->pt_off += n;
            f->pt_len -= n;
            got += n;
            *type = f->pt_type;
            if (f->pt_len == 0) {
                f->opened = false;
                f->in_off = f->rec_end;
                *eor = *type != TLSK_REC_APPDATA;
            }
            if (*type != TLSK_REC_APPDATA || got == len) {
                break; /* a control record, whole or in pieces, comes alone */
            }
            continue; /* (an empty data record is skipped) */
        }
        if ((rc = open_next(f)) < 0) {
            f->rx_err = (int)-rc;
            if (got == 0) {
                return rc;
            }
            break; /* the data before it first */
        }
        if (rc > 0) {
            continue;
        }
        if (got > 0) {
            break;
        }
        if ((rc = fill(s)) <= 0) {
            if (f->in_len == f->in_off) {
                drop_in(f);
            }
            return rc;
        }
    }
    if (!f->opened && f->in_off == f->in_len) {
        drop_in(f); /* an idle connection keeps no buffer */
    }
    return (ssize_t)got;
}

bool tlsk__soft_pending(const struct tlsk_socket *s)
{
    const struct tlsk__soft *f = s->soft;
    size_t avail;

    if (!f) {
        return false;
    }
    if (f->opened || f->rx_err) {
        return true;
    }
    avail = f->in_len - f->in_off;
    return avail >= 5 && avail >= 5 + ((size_t)f->in[f->in_off + 3] << 8 | f->in[f->in_off + 4]);
}

/* ---------------------------------------------------------------------------------------- */
/* Send                                                                                     */

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
    free(f->out);
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
    while (f->r0 < f->nrec && f->tx_end[f->r0] <= f->out_off) {
        f->untold += f->tx_pt[f->r0++];
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
        n += f->tx_pt[i];
    }
    return n;
}

/* Before a data send: records an earlier call left.  0 when the call may make new ones, the
 * count of its bytes that those records carried, -EAGAIN, or the failure. */
static ssize_t earlier(struct tlsk_socket *s, size_t max)
{
    struct tlsk__soft *f = s->soft;
    int rc = send_out(s);
    size_t done;

    collect(f);
    return (done = tell(f, max)) > 0 ? (ssize_t)done : rc;
}

/* Room for recs records in out, which is empty. */
static int room(struct tlsk__soft *f, size_t recs)
{
    if (!(f->out = malloc(recs * REC_ROOM))) {
        return -ENOMEM;
    }
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
    f->tx_end[f->nrec] = f->out_len;
    f->tx_pt[f->nrec] = type == TLSK_REC_APPDATA ? n : 0;
    f->nrec++;
    return 0;
}

/* After sealing: send, and say how much of the call's plaintext has left. */
static ssize_t sent(struct tlsk_socket *s, size_t total)
{
    struct tlsk__soft *f = s->soft;
    int rc = send_out(s);
    size_t done;

    collect(f);
    return (done = tell(f, total)) > 0 ? (ssize_t)done : rc != 0 ? rc : -EAGAIN;
}

ssize_t tlsk__soft_send(struct tlsk_socket *s, int type, const void *data, size_t len)
{
    struct tlsk__soft *f = s->soft;
    int rc;

    if (len > TLSK_MAX_PLAINTEXT) {
        return -EMSGSIZE;
    }
    rc = send_out(s);
    collect(f);
    if (rc != 0) {
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
    rc = send_out(s);
    collect(f);
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
    if ((n = earlier(s, total)) != 0) {
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
    return as_syscall(sent(s, done));
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
    size_t done = 0;
    ssize_t n;
    int rc = 0;

    if (pos < 0) {
        return -1; /* (errno from lseek) */
    }
    if (count == 0) {
        return 0;
    }
    if ((n = earlier(s, count)) != 0) {
        /* The bytes an earlier call read from pos on, told of now. */
        if (n > 0 && (rc = advance(file_fd, offset, pos + n)) != 0) {
            n = rc;
        }
        return as_syscall(n);
    }
    if (count > TX_RECS * TLSK_MAX_PLAINTEXT) {
        count = TX_RECS * TLSK_MAX_PLAINTEXT;
    }
    if ((rc = room(f, (count + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT)) != 0) {
        return as_syscall(rc);
    }
    /* The file's bytes are read straight into the records' bodies. */
    while (done < count) {
        size_t want = count - done < TLSK_MAX_PLAINTEXT ? count - done : TLSK_MAX_PLAINTEXT;
        ssize_t r = pread(file_fd, next_body(f), want, pos + (off_t)done);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            rc = r < 0 ? -errno : 0;
            break; /* the end of the file, or an error the next call reports */
        }
        if ((rc = seal_next(f, TLSK_REC_APPDATA, (size_t)r)) != 0) {
            break;
        }
        done += (size_t)r;
    }
    if (done == 0) {
        collect(f);
        return as_syscall(rc); /* 0: the end of the file */
    }
    n = sent(s, done);
    if (n > 0 && (rc = advance(file_fd, offset, pos + n)) != 0) {
        n = rc;
    }
    return as_syscall(n);
}

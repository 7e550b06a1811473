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
 * socket is full: in out, which tlsk__soft_busy() reports so that the caller waits for
 * POLLOUT and tlsk__soft_flush() sends.  Both buffers exist only while they hold bytes: an
 * idle connection keeps its keys and two cipher contexts, nothing else.
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
    /* Sealed bytes out[out_off, out_len) the socket has not taken yet. */
    unsigned char *out;
    size_t out_len, out_off;
};

bool tlsk__soft_cipher(const SSL_CIPHER *c)
{
    int nid = c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef;

    return nid == NID_aes_128_gcm || nid == NID_aes_256_gcm || nid == NID_chacha20_poly1305;
}

int tlsk__soft_new(struct tlsk_socket *s)
{
    if (!s->soft && !(s->soft = calloc(1, sizeof *s->soft))) {
        return TLSK_ENOMEM;
    }
    return 0;
}

static void drop_out(struct tlsk__soft *f)
{
    free(f->out);
    f->out = NULL;
    f->out_len = f->out_off = 0;
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
    drop_out(f);
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
    unsigned char *h = f->in + f->in_off;
    size_t avail = f->in_len - f->in_off, body, ex, len;
    const struct tlsk__keys *k = &f->rx.k;
    int type, rc;

    if (avail < 5) {
        return 0;
    }
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

bool tlsk__soft_busy(const struct tlsk_socket *s)
{
    return s->soft && s->soft->out_off < s->soft->out_len;
}

int tlsk__soft_flush(struct tlsk_socket *s)
{
    struct tlsk__soft *f = s->soft;

    if (!f) {
        return 0;
    }
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
            drop_out(f); /* they can never leave */
            return -e;
        }
        f->out_off += (size_t)n;
    }
    drop_out(f); /* an idle connection keeps no buffer */
    return 0;
}

/* Room for recs records in out, which is empty. */
static int room(struct tlsk__soft *f, size_t recs)
{
    if (!(f->out = malloc(recs * REC_ROOM))) {
        return -ENOMEM;
    }
    f->out_len = f->out_off = 0;
    return 0;
}

/* The next record's plaintext goes here: sealed where it lies. */
static unsigned char *next_body(struct tlsk__soft *f)
{
    return f->out + f->out_len + 5 + explicit_len(&f->tx.k);
}

/* Seal the n bytes at next_body() as one record of type. */
static int seal_next(struct tlsk__soft *f, int type, size_t n)
{
    size_t len;
    int rc = tlsk__record_seal_cx(&f->tx.k, f->tx.cx, f->tx.k.seq, type, next_body(f), n,
                                  f->out + f->out_len, REC_ROOM, &len);

    if (rc != 0) {
        return -EIO;
    }
    f->tx.k.seq++;
    f->out_len += len;
    return 0;
}

/* Seal total bytes of iov as records of type, then send what the socket takes: the count
 * sealed (all of total), or -errno with nothing sealed. */
static ssize_t seal_send(struct tlsk_socket *s, int type, const struct iovec *iov, int iovcnt,
                         size_t total)
{
    struct tlsk__soft *f = s->soft;
    size_t done = 0, vo = 0;
    int vi = 0, rc;

    if ((rc = tlsk__soft_flush(s)) != 0) {
        return rc;
    }
    if ((rc = room(f, total ? (total + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT : 1)) != 0) {
        return rc;
    }
    do {
        size_t n = total - done < TLSK_MAX_PLAINTEXT ? total - done : TLSK_MAX_PLAINTEXT;
        unsigned char *p = next_body(f);

        for (size_t got = 0; got < n;) {
            size_t take = iov[vi].iov_len - vo < n - got ? iov[vi].iov_len - vo : n - got;
            memcpy(p + got, (const unsigned char *)iov[vi].iov_base + vo, take);
            got += take;
            vo += take;
            if (vo == iov[vi].iov_len) {
                vi++;
                vo = 0;
            }
        }
        while (vi < iovcnt && vo == iov[vi].iov_len) {
            vi++; /* (empty pieces) */
            vo = 0;
        }
        if ((rc = seal_next(f, type, n)) != 0) {
            drop_out(f);
            return rc;
        }
        done += n;
    } while (done < total);
    rc = tlsk__soft_flush(s);
    return rc == 0 || rc == -EAGAIN ? (ssize_t)total : rc;
}

ssize_t tlsk__soft_send(struct tlsk_socket *s, int type, const void *data, size_t len)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };

    if (len > TLSK_MAX_PLAINTEXT) {
        return -EMSGSIZE;
    }
    return seal_send(s, type, &iov, 1, len);
}

ssize_t tlsk__soft_sendmsg(struct tlsk_socket *s, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    ssize_t n;

    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    if (total > TX_RECS * TLSK_MAX_PLAINTEXT) {
        total = TX_RECS * TLSK_MAX_PLAINTEXT; /* a short send, as a full socket gives */
    }
    if (total == 0) {
        return 0;
    }
    if ((n = seal_send(s, TLSK_REC_APPDATA, iov, iovcnt, total)) < 0) {
        errno = (int)-n;
        return -1;
    }
    return n;
}

ssize_t tlsk__soft_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count)
{
    struct tlsk__soft *f = s->soft;
    off_t pos = offset ? *offset : lseek(file_fd, 0, SEEK_CUR);
    size_t done = 0, recs;
    int rc;

    if (pos < 0) {
        return -1; /* (errno from lseek) */
    }
    if (count > TX_RECS * TLSK_MAX_PLAINTEXT) {
        count = TX_RECS * TLSK_MAX_PLAINTEXT;
    }
    if (count == 0) {
        return 0;
    }
    recs = (count + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT;
    if ((rc = tlsk__soft_flush(s)) != 0 || (rc = room(f, recs)) != 0) {
        errno = -rc;
        return -1;
    }
    /* The file's bytes are read straight into the records' bodies. */
    while (done < count) {
        size_t want = count - done < TLSK_MAX_PLAINTEXT ? count - done : TLSK_MAX_PLAINTEXT;
        ssize_t n = pread(file_fd, next_body(f), want, pos);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n < 0 && done == 0) {
                int e = errno;
                drop_out(f);
                errno = e;
                return -1;
            }
            break; /* the end of the file, or an error the next call reports */
        }
        if ((rc = seal_next(f, TLSK_REC_APPDATA, (size_t)n)) != 0) {
            drop_out(f);
            errno = -rc;
            return -1;
        }
        done += (size_t)n;
        pos += n;
    }
    if (done == 0) {
        drop_out(f);
        return 0;
    }
    if (offset) {
        *offset = pos;
    } else if (lseek(file_fd, pos, SEEK_SET) < 0) {
        return -1;
    }
    rc = tlsk__soft_flush(s);
    if (rc != 0 && rc != -EAGAIN) {
        errno = -rc;
        return -1;
    }
    return (ssize_t)done;
}

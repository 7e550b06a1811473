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
 * direction keyed once.  This file keys and receives; softtx.c sends, where tlsk differs from
 * the kernel in where sent bytes wait when the socket is full.  Both buffers exist only while
 * they hold bytes: an idle connection keeps its keys and two cipher contexts, nothing else.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"
#include "kconst.h"
#include "soft.h"

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
    free(f->book);
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

/*
 * txq.c - userspace writes of many records in one syscall.
 *
 * OpenSSL writes each record to its BIO as it makes it, so a large userspace write was one
 * write(2) per 16 KiB record, and on loopback each one pushes frames and wakes the reader
 * (docs/OPENSSL.md §11 has the profile).  Here OpenSSL's write BIO becomes a gathering BIO for
 * the length of one batch: up to TXQ_RECS records land in s->txq, then leave in one send if
 * the socket takes them.
 *
 * The contract of tlsk_socket_write() does not change (docs/OPENSSL.md §11).  A count
 * returned is plaintext whose records have all left; records the socket did not take stay
 * queued, and the call answers -EAGAIN or the part before them, exactly as OpenSSL's own
 * pending record does: the caller writes the same bytes again, and the queued records are
 * what it is then told was written.  While anything is queued OpenSSL keeps writing into the
 * queue (an alert, a KeyUpdate, close_notify), so nothing overtakes it on the wire, and
 * tlsk_socket_events() asks for POLLOUT.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

/* Records per batch: a 256 KiB send, as the userspace sendfile buffer (sendfile.c). */
#define TXQ_RECS 16
/* Room per record: 16 KiB plus the largest expansion of a TLS 1.2+ record (header, explicit
 * IV, MAC or tag, padding) with margin. */
#define TXQ_REC_ROOM (TLSK_MAX_PLAINTEXT + 256)

struct tlsk__txq {
    unsigned char *buf;
    size_t cap, len, off; /* bytes made, bytes sent */
    /* Per SSL_write_ex of the batch: where its bytes end in buf, and its plaintext. */
    struct {
        size_t end, plain;
    } rec[TXQ_RECS];
    unsigned nrec, r0; /* records made; the first not yet reported to the caller */
    BIO *bio;          /* the gathering BIO (our reference) */
    bool gathering;    /* OpenSSL's write BIO is bio */
};

static int gather_write(BIO *b, const char *data, size_t n, size_t *written)
{
    struct tlsk__txq *q = BIO_get_data(b);

    if (q->len + n > q->cap) {
        size_t cap = q->len + n + TXQ_REC_ROOM;
        unsigned char *p = realloc(q->buf, cap);
        if (!p) {
            return 0;
        }
        q->buf = p;
        q->cap = cap;
    }
    memcpy(q->buf + q->len, data, n);
    q->len += n;
    *written = n;
    return 1;
}

static long gather_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tlsk__txq *q = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the queue is sent by tlsk__txq_flush(), not by OpenSSL */
    case BIO_CTRL_WPENDING:
        return (long)(q->len - q->off);
    default:
        return 0;
    }
}

static int gather_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *gather_method;
static CRYPTO_ONCE gather_once = CRYPTO_ONCE_STATIC_INIT;

static void gather_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsk gather");
    if (m && BIO_meth_set_write_ex(m, gather_write) && BIO_meth_set_ctrl(m, gather_ctrl) &&
        BIO_meth_set_create(m, gather_create)) {
        gather_method = m;
    } else {
        BIO_meth_free(m);
    }
}

bool tlsk__txq_busy(const struct tlsk_socket *s)
{
    return (s->txq && s->txq->gathering) || tlsk__soft_busy(s);
}

bool tlsk__txq_pending(const struct tlsk_socket *s)
{
    return s->txq && (s->txq->gathering || s->txq->r0 < s->txq->nrec);
}

/* OpenSSL writes to the queue from here on. */
static void gather_on(struct tlsk_socket *s)
{
    struct tlsk__txq *q = s->txq;
    if (!q->gathering) {
        BIO_up_ref(q->bio);
        SSL_set0_wbio(s->ssl, q->bio);
        q->gathering = true;
    }
}

/* Everything made is sent: OpenSSL writes to the socket again.  Records still owed to the
 * caller count as sent (end 0).  Unless kept for the next batch of the same call, the buffer
 * goes: an idle connection holds none (bench/README.md, idle memory). */
static void gather_off(struct tlsk_socket *s, bool keep)
{
    struct tlsk__txq *q = s->txq;

    if (q->gathering) {
        BIO_up_ref(s->sock_bio);
        SSL_set0_wbio(s->ssl, s->sock_bio);
        q->gathering = false;
    }
    for (unsigned i = q->r0; i < q->nrec; i++) {
        q->rec[i].end = 0;
    }
    q->len = q->off = 0;
    if (!keep) {
        free(q->buf);
        q->buf = NULL;
        q->cap = 0;
    }
}

static int flush_q(struct tlsk_socket *s, bool keep)
{
    struct tlsk__txq *q = s->txq;

    if (!q || !q->gathering) {
        return 0;
    }
    while (q->off < q->len) {
        ssize_t n = send(s->fd, q->buf + q->off, q->len - q->off, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) {
            n = write(s->fd, q->buf + q->off, q->len - q->off);
        }
        if (n < 0) {
            int e = errno;
            if (e == EINTR) {
                continue;
            }
            if (e == EAGAIN || e == EWOULDBLOCK) {
                s->want = POLLOUT;
                return -EAGAIN;
            }
            /* The records can never leave: the caller hears why, with the detail OpenSSL's
             * own write gives (errors.c), and OpenSSL writes to the socket again, where it
             * meets the same. */
            q->nrec = q->r0 = 0;
            gather_off(s, false);
            return tlsk__set_detail(s, -e, "%s", strerror(e));
        }
        q->off += (size_t)n;
    }
    gather_off(s, keep);
    return 0;
}

int tlsk__txq_flush(struct tlsk_socket *s)
{
    return s->soft ? tlsk__soft_flush(s) : flush_q(s, false);
}

/* Plaintext whose records have all left and that the caller has not yet been told of, at
 * most max. */
static size_t settle(struct tlsk__txq *q, size_t max)
{
    size_t done = 0;

    while (q->r0 < q->nrec && q->rec[q->r0].end <= q->off && done < max) {
        size_t take = q->rec[q->r0].plain < max - done ? q->rec[q->r0].plain : max - done;
        done += take;
        q->rec[q->r0].plain -= take;
        if (q->rec[q->r0].plain == 0) {
            q->r0++;
        }
    }
    return done;
}

/* One batch: up to TXQ_RECS records of buf into the queue.  1, or OpenSSL's result when it
 * stopped the batch (its failure is reported by the caller only if nothing was made). */
static int make_batch(struct tlsk_socket *s, const unsigned char *buf, size_t len)
{
    struct tlsk__txq *q = s->txq;
    size_t made = 0;
    int r = 1;

    gather_on(s);
    while (q->nrec < TXQ_RECS && made < len) {
        size_t w = 0;
        tlsk__err_reset();
        errno = 0;
        r = SSL_write_ex(s->ssl, buf + made, len - made, &w);
        if (r != 1) {
            break;
        }
        made += w;
        q->rec[q->nrec].end = q->len;
        q->rec[q->nrec].plain = w;
        q->nrec++;
    }
    return r;
}

ssize_t tlsk__txq_write(struct tlsk_socket *s, const unsigned char *buf, size_t len)
{
    struct tlsk__txq *q = s->txq;
    size_t done;
    int rc;

    if (!q) {
        CRYPTO_THREAD_run_once(&gather_once, gather_init);
        if (!gather_method || !(q = calloc(1, sizeof *q))) {
            return TLSK_ENOMEM;
        }
        if (!(q->bio = BIO_new(gather_method))) {
            free(q);
            return TLSK_ENOMEM;
        }
        BIO_set_data(q->bio, q);
        s->txq = q;
    }
    /* Records from an earlier call go first, and are this call's bytes. */
    rc = flush_q(s, true);
    done = settle(q, len);
    while (rc == 0 && done < len && q->r0 == q->nrec) {
        int r;

        q->nrec = q->r0 = 0;
        if (!q->buf) {
            size_t recs = (len - done + TLSK_MAX_PLAINTEXT - 1) / TLSK_MAX_PLAINTEXT;
            q->cap = (recs < TXQ_RECS ? recs : TXQ_RECS) * TXQ_REC_ROOM;
            if (!(q->buf = malloc(q->cap))) {
                q->cap = 0;
                rc = TLSK_ENOMEM;
                break;
            }
        }
        r = make_batch(s, buf + done, len - done);
        if (r != 1 && q->nrec == 0) {
            /* Nothing made: OpenSSL's failure, after whatever it wrote (an alert). */
            rc = tlsk__ossl_error(s, r, TLSK__OP_WRITE);
            (void)flush_q(s, false);
            break;
        }
        rc = flush_q(s, true);
        done += settle(q, len - done);
        if (r != 1) {
            break; /* OpenSSL's failure comes again on the next call */
        }
    }
    if (!q->gathering) {
        gather_off(s, false);
    }
    return done > 0 ? (ssize_t)done : rc;
}

void tlsk__txq_free(struct tlsk_socket *s)
{
    if (s->txq) {
        free(s->txq->buf);
        BIO_free(s->txq->bio);
        free(s->txq);
        s->txq = NULL;
    }
}

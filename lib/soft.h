/* soft.h - shared by soft.c (keys, receive) and softtx.c (send); never installed. */
#ifndef TLSK_SOFT_H
#define TLSK_SOFT_H

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

/* Per record in out: where it ends, and the plaintext the caller has not been told of (0 for
 * control records). */
struct soft_book {
    size_t end[TX_RECS], pt[TX_RECS];
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
    /* Sealed bytes out[out_off, out_len) the socket has not taken yet, and their records
     * (struct soft_book, in the same allocation: an idle connection has neither); r0 is the
     * first record not yet told of. */
    struct soft_book *book;
    unsigned char *out;
    size_t out_len, out_off;
    unsigned nrec, r0;
    size_t untold; /* plaintext of records that have left, not yet told to the caller */
};

/* Bytes of TLS 1.2's explicit nonce in front of a record's ciphertext (none for ChaCha20 and
 * TLS 1.3). */
static inline size_t explicit_len(const struct tlsk__keys *k)
{
    return k->version == TLS1_2_VERSION && k->tlsk_cipher != TLSK_CIPHER_CHACHA20_POLY1305 ? 8 : 0;
}

#endif

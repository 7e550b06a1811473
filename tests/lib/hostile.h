/* hostile.h - a scriptable hostile TLS client for the tests.
 *
 * It completes a real handshake with plain OpenSSL (no tlsk), learns the traffic keys (TLS
 * 1.3: the key log's traffic secrets; TLS 1.2: the session's master secret, through
 * lib/keys.c), and from then on writes hand-made records on the raw TCP socket: well-formed
 * ones (sealed as tlsk__record_seal seals them), or anything else byte by byte.  It reads the
 * server's records itself, opens them with the server's key (following the server's TLS 1.3
 * KeyUpdates), and reports exactly what arrived: each record's type and plaintext, and how
 * the stream ended (FIN, reset, or nothing within the wait).  Every name is prefixed hp_.
 */
#ifndef TLSK_TEST_HOSTILE_H
#define TLSK_TEST_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "internal.h"

#define HP_IN_CAP (1 << 17)

struct hp_peer {
    int fd;
    int version;             /* TLS1_2_VERSION or TLS1_3_VERSION, as negotiated */
    SSL_CTX *ctx;
    SSL *ssl;
    struct tlsk_socket *ks;  /* a stand-in that carries ssl and the TLS 1.3 secrets for keys.c */
    struct tlsk__keys wk, rk; /* our (client) write keys and the server's */
    uint64_t wseq, rseq;     /* next sequence numbers, ours and the server's */
    unsigned char *in;       /* server bytes not yet parsed */
    size_t have;
    bool eof;                /* recv() gave 0 or an error: nothing more will arrive */
    int err;                 /* that error (errno), 0 for a clean FIN */
};

/* One thing the peer saw. */
enum hp_kind {
    HP_RECORD,  /* a record that opened with the server's key: type, pt, len */
    HP_FIN,     /* recv() returned 0 at a record boundary */
    HP_RST,     /* recv() failed with ECONNRESET (or another error: err) */
    HP_TIMEOUT, /* nothing within the wait */
    HP_GARBAGE, /* bytes that do not open as the server's next record, or a cut record at EOF */
};
struct hp_event {
    enum hp_kind kind;
    int type;                /* HP_RECORD: the (inner) content type */
    unsigned char pt[16640]; /* HP_RECORD: the plaintext */
    size_t len;
    int err;                 /* HP_RST: errno */
};

/* Connect to 127.0.0.1:port and complete a handshake with version (TLS1_2_VERSION or
 * TLS1_3_VERSION) and suite (a TLS 1.3 ciphersuite or a TLS 1.2 cipher string): 0, or
 * negative with a reason in why. */
int hp_connect(struct hp_peer *p, int port, int version, const char *suite, char *why,
               size_t whylen);
void hp_free(struct hp_peer *p);

/* A record sealed with our write key at the next sequence number (which is then spent).
 * TLS 1.3: inner is the complete TLSInnerPlaintext (content, type, padding) and outer the
 * header's type (23 for a well-formed record).  TLS 1.2: inner is the plaintext and outer
 * the record type.  Any length up to 65535 - overhead: also records no TLS peer may send.
 * Returns the record's length, 0 on failure. */
size_t hp_seal_raw(struct hp_peer *p, int outer, const void *inner, size_t inner_len,
                   unsigned char *out, size_t cap);
/* A well-formed record of the given type carrying pt (TLS 1.3: outer type 23, no padding). */
size_t hp_seal(struct hp_peer *p, int type, const void *pt, size_t len, unsigned char *out,
               size_t cap);
/* Seal and send one well-formed record: 0 or -errno. */
int hp_send_record(struct hp_peer *p, int type, const void *pt, size_t len);
/* Send bytes as they are (blocking, whole): 0 or -errno. */
int hp_send_raw(struct hp_peer *p, const void *b, size_t len);
/* TLS 1.3: our next write key (after we sent a KeyUpdate). */
int hp_next_write_key(struct hp_peer *p);

/* The next event within timeout_ms.  A server KeyUpdate (TLS 1.3) moves the read key after
 * it is reported. */
void hp_next(struct hp_peer *p, struct hp_event *ev, int timeout_ms);

/* After the server's FIN: close our side and wait (at most timeout_ms) for the connection to
 * end.  Returns 0 when it ended without a reset, else the socket's error (ECONNRESET, EPIPE)
 * or -ETIMEDOUT. */
int hp_finish(struct hp_peer *p, int timeout_ms);

/* A complete ClientHello message (handshake header included) as OpenSSL writes it for a
 * fresh client of version: its length, 0 on failure. */
size_t hp_client_hello(int version, unsigned char *out, size_t cap);

#endif

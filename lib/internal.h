/* internal.h - shared between lib/ files; never installed. */
#ifndef TLSK_INTERNAL_H
#define TLSK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

#include "tlsk.h"

#define TLSK_PUBLIC __attribute__((visibility("default")))
#define TLSK_MUST_CHECK __attribute__((warn_unused_result))

#define TLSK_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Every flag tlsk_context_options and tlsk_socket_options know (tlsk.h). */
#define TLSK__CONTEXT_FLAGS                                                                    \
    (TLSK_VERIFY_NONE_INSECURE | TLSK_OFFLOAD_RX_TLS13 | TLSK_REQUIRE_PEER_CERT |             \
     TLSK_REQUEST_PEER_CERT | TLSK_HONOR_CIPHER_ORDER | TLSK_ALLOW_RENEGOTIATION |             \
     TLSK_STATEFUL_TICKETS | TLSK_NO_TICKETS | TLSK_NO_RX_TLS13 | TLSK_LEAN_USERSPACE)
#define TLSK__SOCKET_FLAGS                                                                         \
    (TLSK_SOCKET_OWN_FD | TLSK_SOCKET_SENDFILE_MMAP | TLSK_SOCKET_LEAN | TLSK_SOCKET_LEAN_IDLE)

struct tlsk_context {
    atomic_int refs;
    SSL_CTX *ssl_ctx;
    enum tlsk_offload_policy offload;
    unsigned flags;
    bool has_cert;
    struct tlsk_session_store store;
    bool has_store;
    int reneg_limit, reneg_window_s; /* 0/0: process-wide */
    /* The kernel had a tls ULP when this context was made, so its SSL_CTX has the keylog
     * callback that captures TLS 1.3 traffic secrets (without one, OpenSSL does not format
     * five keylog lines per handshake: docs/OPENSSL.md §2.1). */
    bool keylog;
    uint64_t key_update_records;
    /* Ticket keys, 48 bytes each: tk[0] encrypts, all of tk[0..tk_n-1] decrypt.  Replaced
     * whole under tk_lock (handshakes on other threads read it); tk_n >= 1. */
    pthread_mutex_t tk_lock;
    unsigned char (*tk)[48];
    size_t tk_n;
    /* ALPN and NPN lists in wire format (length-prefixed), or NULL. */
    unsigned char *alpn, *npn;
    size_t alpn_len, npn_len;
};

/* A traffic secret captured from the keylog callback (TLS 1.3). */
struct tlsk__secret {
    unsigned char b[EVP_MAX_MD_SIZE];
    size_t len;
};

/* Key material for one direction, as the kernel and the bridge need it.  Lives on the stack
 * only, and is wiped with OPENSSL_cleanse. */
struct tlsk__keys {
    int version;      /* TLSK_TLS1_2 / TLSK_TLS1_3 */
    int kcipher;      /* kernel cipher type (kconst.h) */
    int tlsk_cipher;  /* TLSK_CIPHER_* */
    size_t key_len;
    unsigned char key[32];
    unsigned char iv[12]; /* the full 12-byte static IV (TLS 1.3, TLS 1.2 ChaCha20) or the
                           * 4-byte implicit salt followed by the 8-byte explicit nonce */
    uint64_t seq;
};

struct tlsk_handle {
    struct tlsk_loop *loop;
    int fd;
    int events;
    int64_t deadline; /* monotonic ms, -1 none */
    uint64_t fired_iter;
    bool in_epoll, dead;
    void (*cb)(struct tlsk_handle *h, int revents);
    void (*release)(struct tlsk_handle *h);
    void *owner;
    struct tlsk_handle *next, *prev;
};

struct tlsk_loop {
    int epfd;
    bool hooked, stop, in_dispatch;
    struct tlsk_loop_hooks hooks;
    struct tlsk_handle *handles, *zombies;
    unsigned count;
    uint64_t iter;
};

struct tlsk__ev;

/* What the socket core asks of the evented layer, which fills this in (events.c): the core
 * never calls up into the loop or the server. */
struct tlsk__ev_hooks {
    void (*close)(struct tlsk_socket *s); /* tlsk_socket_free() on an evented socket */
    void (*wake)(struct tlsk_socket *s);  /* an asynchronous answer came: dispatch soon */
};

/* Who owns an evented connection and hears of it (the server registers these). */
struct tlsk__ev_owner {
    void (*secure)(void *owner, struct tlsk_socket *s);
    void (*client_error)(void *owner, struct tlsk_socket *s, int err);
    void (*closed)(void *owner, struct tlsk_socket *s);
};

/* The evented part of a socket (servers' connections and tlsk_socket_start()). */
struct tlsk__ev {
    struct tlsk_handle h;
    const struct tlsk__ev_hooks *hooks;
    const struct tlsk__ev_owner *owner_cb; /* NULL: no owner */
    void *owner;
    struct tlsk_socket_callbacks cb;
    unsigned char *wbuf;
    size_t wlen, woff, wcap;
    bool secure, paused, read_done, ending, ended, closing, closed_reported, want_drain;
    bool in_server_list;
    struct tlsk_socket *next, *prev; /* the server's connections */
};

enum tlsk__state {
    TLSK__HANDSHAKE = 0,
    TLSK__OPEN,
    TLSK__FAILED,
};

/* What the getters and the bridge read of OpenSSL's connection once it is freed (lean.c). */
struct tlsk__lean {
    int version;
    const SSL_CIPHER *cipher; /* libssl's static table */
    bool reused, asked_cert;
    long verify_result;
    X509 *peer;               /* a reference, or NULL */
    STACK_OF(X509) *chain;    /* references, or NULL */
    bool ku_owed;             /* our answer to update_requested waits behind a parked record */
    /* TLS 1.3: a KeyUpdate being received, across records (bridge.c); 5 bytes are a whole one. */
    unsigned char ku[5];
    size_t ku_len;
    /* TLS 1.2: the handshake message being received, across records (bridge.c). */
    unsigned char hs_hdr[4];
    size_t hs_hdr_len, hs_left;
};

/* An address as a socket keeps it: IPv4 and IPv6 whole; of any other family only as much as
 * fits, which names the family (tlsk_socket_address() answers those with -EAFNOSUPPORT, as
 * getnameinfo does).  28 bytes where a sockaddr_storage takes 128. */
union tlsk__addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct tlsk_socket {
    struct tlsk_context *ctx;
    SSL *ssl; /* NULL once a lean socket has freed it (lean != NULL) */
    struct tlsk__lean *lean;
    int fd;
    unsigned flags;
    bool is_server;
    bool is_pair; /* memory transport (tlsk_pair_new): fd is -1 */
    enum tlsk__state state;
    enum tlsk_offload_policy policy;
    int fail_code;  /* sticky error once FAILED */
    int want;       /* POLLIN/POLLOUT for tlsk_socket_events() */
    void *data;

    /* Record counting after each side's Finished (msg callback), docs/OPENSSL.md §3.2. */
    bool own_finished, peer_finished;
    uint64_t tx_after_fin, rx_after_fin;
    /* TLS 1.2: records after each side's ChangeCipherSpec.  Finished is not always the first
     * record of the epoch: a client's NextProtocol (NPN) comes before it. */
    bool own_ccs, peer_ccs;
    uint64_t tx_after_ccs, rx_after_ccs;


    struct tlsk_offload off;
    bool tx_kernel, rx_kernel;
    BIO *sock_bio; /* the socket BIO, kept while OpenSSL writes to a memory BIO */
    bool hs_rbuf;  /* OpenSSL reads through a buffer BIO on sock_bio (socket.c, soft.c) */
    BIO *mem_wbio; /* OpenSSL's write BIO after TX offload */
    uint64_t ossl_write_seq; /* OpenSSL's next write sequence number after TX offload */
    uint64_t ossl_read_seq;  /* OpenSSL's next read sequence number after RX offload */

    unsigned warn_alerts; /* warning alerts in a row through kernel RX (io.c) */
    /* A control record being reassembled from kTLS RX (up to MSG_EOR). */
    unsigned char *ctrl;
    size_t ctrl_len;
    int ctrl_type;

    bool sent_close_notify, got_close_notify;

    /* sendfile in userspace: reused buffer, and a chunk OpenSSL still has to finish. */
    unsigned char *sf_buf;
    size_t sf_cap;         /* bytes allocated at sf_buf; freed once a call sends all it was asked */
    size_t sf_pending;     /* bytes of sf_buf handed to SSL_write and not yet accepted */
    off_t sf_pending_off;  /* file offset those bytes came from */
    /* Userspace records gathered into one send (txq.c), or NULL. */
    struct tlsk__txq *txq;
    /* tlsk's own record layer in the kernel's place (soft.c), or NULL.  With it tx_kernel and
     * rx_kernel are set: everything above the syscalls runs as for the kernel. */
    struct tlsk__soft *soft;
    /* TLSK_SOCKET_LEAN_IDLE: soft.c is to take the connection at its first wait (idle.c);
     * meanwhile OpenSSL writes to the socket BIO, and wshort says its last write there was
     * cut short (a record OpenSSL still holds), data_in that application data was read. */
    bool soft_later, wshort, data_in;

    uint64_t bytes_written, bytes_read; /* TLS bytes on the transport (see socket.c) */
    uint64_t rx_seq0;                   /* kernel RX sequence number at install */
    uint64_t rx_recs_done;              /* kernel RX records under earlier keys */
    uint64_t rx_reads;
    /* Addresses captured at creation: readable even after the peer reset the connection. */
    union tlsk__addr laddr, raddr;
    socklen_t laddr_len, raddr_len;

    /* SNI (server side). */
    const struct tlsk_sni *sni;
    tlsk_sni_cb sni_cb;
    void *sni_data;
    int sni_state;                 /* 0 none, 1 waiting for the application, 2 answered */
    struct tlsk_context *sni_answer;
    int sni_err;                   /* the SNI callback's failure, reported by the handshake */
    struct tlsk_context *sni_ctx;  /* the context SNI chose (a reference), or NULL */
    char *servername;
    char *alpn, *npn; /* negotiated protocols (NULL: none), allocated by tlsk__peer_opened() */

    /* Sessions. */
    void (*on_session)(struct tlsk_socket *, const unsigned char *, size_t, void *);
    void *on_session_data;
    int resume_state;              /* 0 none, 1 waiting for the application, 2 answered */
    unsigned char *resume_id;      /* TLSK__RESUME_ID_CAP bytes while a lookup needs it */
    size_t resume_id_len;
    unsigned char *resume_data;
    size_t resume_data_len;
    int resume_err;

    /* TLS 1.3 traffic secrets of our write (otx) and read (orx) direction: the first ones from
     * the key log callback for the install, then followed by the bridge through each
     * KeyUpdate; wiped when no direction went to the kernel. */
    struct tlsk__secret otx_secret, orx_secret;
    uint64_t key_updates;          /* key updates done, both directions */
    uint64_t key_updates_refused;  /* requested updates the kernel's TX key could not follow */
    uint64_t tx_key_base, rx_key_base; /* record counts at the last key change (userspace) */
    uint64_t ktx_recs, krx_recs;       /* records through the kernel under its keys */
    bool ku_pending, reneg_running;
    /* Kernel re-key (Linux 6.14+, TLS 1.3): whether the kernel takes a second TLS_TX/TLS_RX,
     * KeyUpdates OpenSSL has read (msg callback), and a KeyUpdate we asked the peer for
     * because the kernel's receive key is worn out. */
    bool kernel_rekey, rx_ku_asked;
    bool rx_hs_partial; /* TLS 1.3: a KeyUpdate begun through kernel receive and not yet whole */
    uint64_t rx_ku_seen;
    /* A control record that met a full send buffer after it left OpenSSL: it goes first
     * when the socket is writable again, then (rekey) the kernel takes the next TX key. */
    unsigned char *pend;
    size_t pend_len;
    int pend_type;
    bool pend_rekey;
    int reneg_phase; /* server renegotiate(): 1 HelloRequest sent, | 2 our Finished, | 4 peer's */

    /* Renegotiation (TLS 1.2). */
    int reneg_count;
    int64_t reneg_window_start;
    int reneg_err;
    bool own_reneg;
    unsigned char *held;           /* application data read while renegotiating */
    size_t held_len, held_off;
    int (*check_identity)(const char *, const struct tlsk_cert_info *, void *);
    void *check_identity_data;

    struct tlsk__ev *ev; /* evented sockets only */

    char detail[256];
};

/* ---- Internal functions, by file, from the bottom layer up (docs/ARCHITECTURE.md) ---- */

/* errors.c: one table of codes; OpenSSL's errors classified. */
enum tlsk__op {
    TLSK__OP_HANDSHAKE,
    TLSK__OP_READ,
    TLSK__OP_WRITE,
};
/* Mark the socket failed: every later call returns the same code. */
int tlsk__fail(struct tlsk_socket *s, int code);
/* Map an OpenSSL failure (ret <= 0 from SSL_*) to a tlsk code, filling the detail. */
int tlsk__ossl_error(struct tlsk_socket *s, int ret, enum tlsk__op op);
struct tlsk__detail {
    char *buf;
    size_t len;
};
/* A context option error: the message (with OpenSSL's reasons) into the caller's buffer. */
int tlsk__config_error(struct tlsk__detail *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int tlsk__set_detail(struct tlsk_socket *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
unsigned long tlsk__append_ossl_errors(char *buf, size_t len);
/* Empty OpenSSL's error queue before SSL_read/SSL_write (cheap when it is empty). */
void tlsk__err_reset(void);
int tlsk__alert_from_ossl_error(unsigned long e);

/* loop.c: handles on the built-in epoll loop or the application's hooks. */
int64_t tlsk__now_ms(void);
void tlsk__handle_init(struct tlsk_handle *h, struct tlsk_loop *l, int fd,
                       void (*cb)(struct tlsk_handle *, int), void (*release)(struct tlsk_handle *),
                       void *owner);
int tlsk__handle_watch(struct tlsk_handle *h, int events);
int tlsk__handle_timer(struct tlsk_handle *h, int64_t ms);
void tlsk__handle_close(struct tlsk_handle *h);
void tlsk__loop_reap(struct tlsk_loop *l);

/* record.c: one record sealed or opened with k at sequence seq (RFC 8446 5.2, RFC 5246
 * 6.2.3.3).  Seal: -EMSGSIZE past 2^14 bytes of plaintext, -ENOBUFS when out_cap is short.
 * Open: -EPROTO for a malformed record or a short out_cap, -EBADMSG when it does not
 * authenticate, -EMSGSIZE past the limits (record_overflow: ciphertext over 2^14 + 256 in
 * TLS 1.3 or 2^14 + 2048 in TLS 1.2, content over 2^14). */
#define TLSK_TAG_LEN 16 /* every AEAD tlsk offloads has a 16-byte tag */
/* A sequence number as it goes on the wire: 8 bytes, big-endian. */
void tlsk__put_be64(unsigned char out[8], uint64_t v);
int tlsk__record_seal(const struct tlsk__keys *k, uint64_t seq, int type, const unsigned char *pt,
                      size_t pt_len, unsigned char *out, size_t out_cap, size_t *out_len)
    TLSK_MUST_CHECK;
int tlsk__record_open(const struct tlsk__keys *k, uint64_t seq, const unsigned char *rec,
                      size_t rec_len, int *type, unsigned char *out, size_t out_cap,
                      size_t *out_len) TLSK_MUST_CHECK;
/* The same with a context kept per direction (soft.c): keyed once by tlsk__record_key() (0 or
 * -1; not for AES-CCM), then only the nonce changes per record.  The plaintext may already
 * sit where the record's body goes, and a record may be opened where it lies. */
int tlsk__record_key(EVP_CIPHER_CTX *cx, const struct tlsk__keys *k, int enc) TLSK_MUST_CHECK;
int tlsk__record_seal_cx(const struct tlsk__keys *k, EVP_CIPHER_CTX *cx, uint64_t seq, int type,
                         const unsigned char *pt, size_t pt_len, unsigned char *out,
                         size_t out_cap, size_t *out_len) TLSK_MUST_CHECK;
int tlsk__record_open_cx(const struct tlsk__keys *k, EVP_CIPHER_CTX *cx, uint64_t seq,
                         const unsigned char *rec, size_t rec_len, int *type, unsigned char *out,
                         size_t out_cap, size_t *out_len) TLSK_MUST_CHECK;

/* kmsg.c: a record with its type on a kTLS socket.  Both return bytes or -errno (-EAGAIN for
 * would-block); *eor is false while a control record continues in the next read. */
ssize_t tlsk__krecv(int fd, void *buf, size_t len, int *type, bool *eor);
ssize_t tlsk__ksend(int fd, int type, const void *data, size_t len);

/* keys.c: traffic keys from OpenSSL's secrets. */
/* OpenSSL cipher -> tlsk and kernel cipher: 0, or -1 when the kernel has no such cipher. */
int tlsk__cipher_of(const SSL_CIPHER *c, int *tlsk_cipher, int *kcipher, size_t *key_len);
/* Bytes a record adds around its plaintext on the wire (header, tag, TLS 1.3 inner type or
 * TLS 1.2 explicit nonce). */
size_t tlsk__record_overhead(const struct tlsk_socket *s);
/* The client's (client_keys) or the server's write keys of the current epoch. */
/* Both write keys at once (either may be NULL): TLS 1.2's key block is computed once. */
int tlsk__derive_key_pair(struct tlsk_socket *s, struct tlsk__keys *client,
                          struct tlsk__keys *server) TLSK_MUST_CHECK;
int tlsk__derive_keys(struct tlsk_socket *s, int client_keys, struct tlsk__keys *k)
    TLSK_MUST_CHECK;
int tlsk__derive_keys_from(struct tlsk_socket *s, const struct tlsk__secret *sec,
                           struct tlsk__keys *k) TLSK_MUST_CHECK;
/* RFC 8446 7.2: sec becomes the next application traffic secret. */
int tlsk__tls13_next_secret(struct tlsk_socket *s, struct tlsk__secret *sec) TLSK_MUST_CHECK;

/* offload.c: the decision, the install, the kernel's state. */
int tlsk__offload(struct tlsk_socket *s) TLSK_MUST_CHECK;
/* A connection left to OpenSSL for soft.c (soft_later) goes to soft.c now, as the end of the
 * handshake would have given it (idle.c).  0 or the failure, past the point of no return. */
int tlsk__offload_soft(struct tlsk_socket *s) TLSK_MUST_CHECK;
/* Such a connection stays with OpenSSL for good (its keys changed under it): the watch on
 * its writes goes, and the TLS 1.3 secrets captured for soft.c are wiped. */
void tlsk__offload_soft_cancel(struct tlsk_socket *s);
/* Install the next TLS 1.3 key of one direction (the bridge's secret, already advanced) in
 * the kernel with sequence 0 (Linux 6.14+).  0 or TLSK_EKEYUPDATE. */
int tlsk__kernel_rekey(struct tlsk_socket *s, bool tx) TLSK_MUST_CHECK;
int tlsk__kernel_seq(const struct tlsk_socket *s, bool tx, uint64_t *seq);
/* After a record that began a KeyUpdate continued in the next record: the same receive key
 * again, at the next sequence number (the kernel paused; Linux 6.14+).  0 or a code. */
int tlsk__kernel_rx_resume(struct tlsk_socket *s) TLSK_MUST_CHECK;

/* bridge.c: control records between the kernel and OpenSSL. */
/* A control record from kernel RX: 0 to read on, 1 close_notify, 2 a TLS 1.2 renegotiation
 * attempt (the caller counts it, then refuses), or a negative code. */
int tlsk__bridge_control_in(struct tlsk_socket *s, int type, const unsigned char *msg,
                            size_t len) TLSK_MUST_CHECK;
int tlsk__bridge_flush_out(struct tlsk_socket *s) TLSK_MUST_CHECK;
int tlsk__send_control(struct tlsk_socket *s, int type, const void *data, size_t len)
    TLSK_MUST_CHECK;
int tlsk__bridge_refuse_renegotiation(struct tlsk_socket *s) TLSK_MUST_CHECK;
/* A lean socket's own KeyUpdate (request_peer: update_requested), through the kernel, which
 * then takes the next transmit key.  0 (sent or parked), -EAGAIN, or a code. */
int tlsk__bridge_key_update(struct tlsk_socket *s, int request_peer) TLSK_MUST_CHECK;
/* Send the KeyUpdate OpenSSL owes the peer (update_requested) through the kernel now. */
int tlsk__bridge_answer_key_update(struct tlsk_socket *s) TLSK_MUST_CHECK;
/* Send a fatal alert through kernel TX after the kernel rejected a record (consuming the
 * socket error first).  Best effort: the connection is failing anyway. */
void tlsk__bridge_fatal_alert(struct tlsk_socket *s, int desc);

/* rekey.c: key limits, key updates, renegotiation. */
uint64_t tlsk__key_limit(const struct tlsk_socket *s);
int tlsk__reneg_attempt(struct tlsk_socket *s) TLSK_MUST_CHECK;
void tlsk__user_rx_limit(struct tlsk_socket *s);
void tlsk__user_tx_limit(struct tlsk_socket *s);
int tlsk__kernel_rx_limit(struct tlsk_socket *s) TLSK_MUST_CHECK;
ssize_t tlsk__kernel_budget(struct tlsk_socket *s, size_t want) TLSK_MUST_CHECK;

/* context.c, with creds.c and session.c (parts of tlsk_context_new()). */
void tlsk__reneg_limits(const struct tlsk_context *c, int *limit, int *window_s);
void tlsk__apply_verify(SSL *ssl, const struct tlsk_context *ctx, bool server);
void tlsk__apply_verify_flags(SSL *ssl, unsigned flags, bool server);
int tlsk__load_credentials(SSL_CTX *sc, const struct tlsk_context_options *o,
                           struct tlsk__detail *d) TLSK_MUST_CHECK;
int tlsk__context_sessions(struct tlsk_context *c, SSL_CTX *sc,
                           const struct tlsk_context_options *o, struct tlsk__detail *d)
    TLSK_MUST_CHECK;

/* sni.c */
int tlsk__sni_normalize(const char *in, char *out, size_t cap);

/* peer.c: what the handshake negotiated, kept for the getters: 0 or TLSK_ENOMEM. */
int tlsk__peer_opened(struct tlsk_socket *s) TLSK_MUST_CHECK;

/* cert.c */
int tlsk__cert_info_new(const X509 *x, struct tlsk_cert_info **out);

/* socket.c: a connection's life. */
#define TLSK__PAIR_FD (-2) /* tlsk__socket_new(): a memory transport instead of an fd */
int tlsk__socket_new(struct tlsk_socket **out, struct tlsk_context *ctx, int fd, bool server,
                     const struct tlsk_socket_options *opts) TLSK_MUST_CHECK;
/* Complete the handshake first if needed: 0 once open, else its result. */
int tlsk__ensure_open(struct tlsk_socket *s);
/* The key log callback of every context: TLS 1.3 traffic secrets for the install. */
void tlsk__keylog_cb(const SSL *ssl, const char *line);

/* hello.c: OpenSSL's ClientHello callback of every server context.  An external store looks
 * up at most a TLS 1.2 session id or a TLS 1.3 ticket identity of this size. */
#define TLSK__RESUME_ID_CAP (SSL_MAX_SSL_SESSION_ID_LENGTH + 256)
int tlsk__hello_cb(SSL *ssl, int *al, void *arg);

/* io.c */
/* How much of want may be sent now: the failure (closed, failed, a parked control record
 * waiting: -EAGAIN), 0 for nothing, or a count within the kernel key's record budget. */
ssize_t tlsk__tx_allowance(struct tlsk_socket *s, size_t want);
/* The result of a send-like syscall on a TX-offloaded socket, with its wire bytes counted. */
ssize_t tlsk__kernel_sent(struct tlsk_socket *s, ssize_t n, const char *what);
/* Userspace write of one buffer through OpenSSL. */
ssize_t tlsk__user_write(struct tlsk_socket *s, const unsigned char *buf, size_t len);

/* txq.c: userspace writes of many records in one send. */
/* Write buf through OpenSSL in batches of records, each sent whole when the socket takes it;
 * the count of bytes whose records have left, -EAGAIN, or a code (tlsk_socket_write()). */
ssize_t tlsk__txq_write(struct tlsk_socket *s, const unsigned char *buf, size_t len);
/* Records (or anything OpenSSL wrote after them, or soft.c's records) still waiting for the
 * socket. */
bool tlsk__txq_busy(const struct tlsk_socket *s);
/* Busy, or records sent that a later write is still to be told of. */
bool tlsk__txq_pending(const struct tlsk_socket *s);
/* Send what waits (soft.c's records too): 0 when nothing is left, -EAGAIN (POLLOUT), or the
 * send's failure. */
int tlsk__txq_flush(struct tlsk_socket *s);
void tlsk__txq_free(struct tlsk_socket *s);

/* soft.c: the kernel's TLS socket stood in for in userspace (TLSK_LEAN_USERSPACE).  Each call
 * keeps the contract of the syscall it replaces on a kTLS socket (docs/KERNEL.md §16):
 * recv as tlsk__krecv (-errno, EBADMSG/EMSGSIZE/EINVAL for a refused record, never crossing a
 * change of record type); send as tlsk__ksend (a control record whole or -EAGAIN); sendmsg
 * and sendfile return as the syscalls (-1 with errno), but count only plaintext whose records
 * have all left, as userspace mode does (softtx.c): records the socket did not take wait
 * in tlsk (tlsk__soft_busy(), tlsk__soft_flush()) and the caller sends the same bytes again. */
int tlsk__soft_new(struct tlsk_socket *s) TLSK_MUST_CHECK;
/* What the handshake's read buffer holds past the client's Finished becomes the first bytes
 * received (before the receive key is installed).  0 or TLSK_ENOMEM. */
int tlsk__soft_take(struct tlsk_socket *s, BIO *rbio) TLSK_MUST_CHECK;
void tlsk__soft_free(struct tlsk_socket *s);
int tlsk__soft_install(struct tlsk_socket *s, bool tx, const struct tlsk__keys *k) TLSK_MUST_CHECK;
uint64_t tlsk__soft_seq(const struct tlsk_socket *s, bool tx);
ssize_t tlsk__soft_recv(struct tlsk_socket *s, void *buf, size_t len, int *type, bool *eor);
ssize_t tlsk__soft_send(struct tlsk_socket *s, int type, const void *data, size_t len);
ssize_t tlsk__soft_sendmsg(struct tlsk_socket *s, const struct iovec *iov, int iovcnt);
ssize_t tlsk__soft_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count);
int tlsk__soft_flush(struct tlsk_socket *s);
bool tlsk__soft_busy(const struct tlsk_socket *s);
/* Plaintext in records made for data sends that the caller has not been told of yet. */
size_t tlsk__soft_untold(const struct tlsk_socket *s);
bool tlsk__soft_pending(const struct tlsk_socket *s);
/* (keys.c) The cipher of a negotiated connection that tlsk's record layer can carry (AES-GCM,
 * ChaCha20-Poly1305). */
bool tlsk__soft_cipher(const SSL_CIPHER *c);

/* idle.c: lean at idle (TLSK_SOCKET_LEAN_IDLE).  The connection waits for its peer: soft.c
 * takes it if it is to and nothing of OpenSSL's is in flight.  0, or the code that failed
 * the socket. */
int tlsk__idle(struct tlsk_socket *s);
/* A write or sendfile this large changes over first: soft.c sends a MiB for about half the
 * userspace instructions OpenSSL takes (2.6 against 4.9 million, callgrind), so the change
 * (about 90,000) pays for itself within the first 64 KiB. */
#define TLSK__LEAN_BULK (64u << 10)

/* lean.c: OpenSSL's connection freed after full offload (TLSK_SOCKET_LEAN). */
/* Free s->ssl when the socket asked for it and nothing is left for OpenSSL to do. */
void tlsk__lean_release(struct tlsk_socket *s);
/* Nothing of OpenSSL's in flight that its state could be freed with (lean.c; idle.c asks
 * the same before soft.c takes a connection, and more). */
bool tlsk__lean_quiet(const struct tlsk_socket *s);
void tlsk__lean_free(struct tlsk_socket *s);
/* The negotiated version and cipher, from OpenSSL or from what it left. */
int tlsk__version(const struct tlsk_socket *s);
const SSL_CIPHER *tlsk__cipher(const struct tlsk_socket *s);

/* linger.c: a closed evented socket's descriptor waits for the peer's FIN (KERNEL.md §8). */
struct tlsk__linger {
    bool deaf; /* nothing can be read (kernel receive failed): wait for the FIN only */
    int64_t end; /* monotonic ms */
    size_t bytes; /* read and dropped so far */
    int poll_ms; /* the next look at a kernel receive */
};
/* Shut the write side: false when there is nothing to linger on (no descriptor of ours, or
 * the connection is gone already). */
bool tlsk__linger_start(struct tlsk_socket *s, struct tlsk__linger *l);
/* Drop what arrived: true once the peer's FIN came, a limit was reached or the peer reset
 * (the caller closes now); else s->ev's handle is armed for the next step. */
bool tlsk__linger_step(struct tlsk_socket *s, struct tlsk__linger *l);

/* events.c: a socket joins a loop; ocb/owner hear of it (the server), or NULL. */
int tlsk__ev_start(struct tlsk_socket *s, struct tlsk_loop *l, const struct tlsk__ev_owner *ocb,
                   void *owner, int64_t handshake_timeout_ms);

#endif

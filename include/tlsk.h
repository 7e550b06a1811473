/*
 * tlsk.h - TLS for C programs on Linux, with the record layer in the kernel.
 *
 * OpenSSL performs the handshake in userspace; tlsk then installs the negotiated keys into a
 * kernel TLS (kTLS) socket, so that write(), sendfile() and splice() on the descriptor are
 * encrypted by the kernel.  When the kernel cannot take a direction (no `tls` module, a cipher
 * it lacks, policy), the same calls run through OpenSSL in userspace and tlsk_socket_offload()
 * says why.
 *
 * Conventions
 * -----------
 * - Every fallible call returns >= 0 on success or a negative code: -errno, or a library code
 *   TLSK_E* (all below -4096, never colliding with errno).  A fatal TLS alert received from the
 *   peer is TLSK_EALERT(n) with the alert number n recoverable by TLSK_ALERT_NUMBER().
 *   Callers never read errno.
 * - Would-block is always -EAGAIN; tlsk_socket_events() then says whether to wait for POLLIN or
 *   POLLOUT.  A read returns 0 only for a received close_notify; a TCP close without it is
 *   TLSK_ETRUNCATED.
 * - Options structs: all-zero means the safe default (verify the peer and, for clients, its
 *   host name; TLS 1.2 minimum; system CAs; offload "auto").  Options are read during the call
 *   only; strings are copied.  New fields are only ever appended.
 * - Out-parameters are left untouched on failure.  Returned strings are borrowed until the
 *   handle they came from is freed.
 * - File descriptors stay the caller's unless TLSK_SOCKET_OWN_FD is given.
 * - A tlsk_context is immutable once built, reference counted and shareable across threads.
 *   A tlsk_socket must be used by one thread at a time.
 * - The library never prints.
 */
#ifndef TLSK_H
#define TLSK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TLSK_VERSION_MAJOR 0
#define TLSK_VERSION_MINOR 1
#define TLSK_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                   */

enum {
    TLSK_EBASE = -5000,
    TLSK_ETRUNCATED = -5001,  /* TCP closed without close_notify */
    TLSK_EHANDSHAKE = -5002,  /* handshake failed (detail string says why) */
    TLSK_EVERIFY = -5003,     /* peer certificate or host name verification failed */
    TLSK_EPROTO = -5004,      /* the peer sent something that is not TLS, or broke protocol */
    TLSK_ECONFIG = -5005,     /* an option is invalid (detail names it) */
    TLSK_ECERT = -5006,       /* certificate could not be loaded */
    TLSK_EKEY = -5007,        /* private key could not be loaded or does not match */
    TLSK_EPASSPHRASE = -5008, /* private key or PKCS#12 passphrase missing or wrong */
    TLSK_ENOKTLS = -5009,     /* offload policy "require" and the kernel cannot take it */
    TLSK_ECONTROL = -5010,    /* a control record the offloaded connection cannot handle */
    TLSK_EBADRECORD = -5011,  /* a record failed authentication (bad_record_mac) */
    TLSK_ESTATE = -5012,      /* call not valid in the socket's current state */
    TLSK_ECLOSED = -5013,     /* the connection is closed or failed earlier */
    TLSK_EINTERNAL = -5014,   /* OpenSSL or the kernel failed unexpectedly */
    TLSK_EKEYUPDATE = -5015,  /* a TLS 1.3 KeyUpdate the kernel cannot follow */
    TLSK_ENOMEM = -5016,
    TLSK_ELAST = -5017,
};

#define TLSK_EALERT_BASE (-6000)
/* A fatal alert n (0..255) received from the peer. */
#define TLSK_EALERT(n) (TLSK_EALERT_BASE - (int)(n))
#define TLSK_IS_ALERT(e) ((e) <= TLSK_EALERT_BASE && (e) > TLSK_EALERT_BASE - 256)
#define TLSK_ALERT_NUMBER(e) (TLSK_EALERT_BASE - (e))

/* tlsk_strerror() - static text for any code this library returns (also -errno). */
const char *tlsk_strerror(int err);
/* tlsk_err_name() - the symbolic name, e.g. "TLSK_ETRUNCATED", "EAGAIN", "ALERT_48". */
const char *tlsk_err_name(int err);

/* ---------------------------------------------------------------------------------------- */
/* Contexts                                                                                 */

enum tlsk_offload_policy {
    TLSK_OFFLOAD_DEFAULT = 0, /* context: AUTO; socket: the context's policy */
    TLSK_OFFLOAD_AUTO,     /* TLS 1.2 both ways; TLS 1.3 TX, RX where the kernel can re-key */
    TLSK_OFFLOAD_TX,       /* transmit only */
    TLSK_OFFLOAD_OFF,      /* userspace only (reason "policy") */
    TLSK_OFFLOAD_REQUIRE,  /* both directions in the kernel or the handshake fails */
};

enum {
    TLSK_TLS1_2 = 0x0303,
    TLSK_TLS1_3 = 0x0304,
};

/* Context flags. */
enum {
    /* Do not verify the peer's certificate or host name.  Never the default. */
    TLSK_VERIFY_NONE_INSECURE = 1u << 0,
    /* Offload TLS 1.3 receive even where the kernel cannot re-key: a peer's KeyUpdate then
     * fails the connection with TLSK_EKEYUPDATE. */
    TLSK_OFFLOAD_RX_TLS13 = 1u << 1,
    /* Servers: ask clients for a certificate, and reject those that do not verify. */
    TLSK_REQUIRE_PEER_CERT = 1u << 2,
};

struct tlsk_context_options {
    /* Certificate chain (leaf first) and private key: a PEM file path, or in-memory PEM
     * (cert_pem with cert_pem_len, 0 meaning NUL-terminated).  Required for servers. */
    const char *cert_file;
    const char *cert_pem;
    size_t cert_pem_len;
    const char *key_file;
    const char *key_pem;
    size_t key_pem_len;
    /* Passphrase of an encrypted key.  Never prompts on a terminal. */
    const char *passphrase;
    /* Trust anchors: a PEM file, in-memory PEM, or (both NULL) the system store. */
    const char *ca_file;
    const char *ca_pem;
    size_t ca_pem_len;
    /* TLSK_TLS1_2 or TLSK_TLS1_3; 0 = TLS 1.2 minimum, TLS 1.3 maximum. */
    int min_version;
    int max_version;
    /* OpenSSL cipher list for TLS 1.2 and ciphersuites for TLS 1.3; NULL = the defaults
     * (AEAD suites only, all of them ones the kernel can offload). */
    const char *ciphers;
    const char *ciphersuites;
    /* Key exchange groups, e.g. "X25519:P-256"; NULL = X25519, P-256, P-384. */
    const char *groups;
    enum tlsk_offload_policy offload;
    unsigned flags;
};

struct tlsk_context;

/*
 * tlsk_context_new() - build a context.
 * Returns 0 and sets *out, or TLSK_ECONFIG, TLSK_ECERT, TLSK_EKEY, TLSK_EPASSPHRASE,
 * TLSK_ENOMEM.  When err_detail is non-NULL it receives a NUL-terminated reason (OpenSSL's
 * text included) of at most err_detail_len bytes, also on failure.
 */
int tlsk_context_new(struct tlsk_context **out, const struct tlsk_context_options *opts,
                     char *err_detail, size_t err_detail_len);
/* Take another reference. */
struct tlsk_context *tlsk_context_ref(struct tlsk_context *ctx);
/* Drop a reference; the context is freed with the last one.  NULL is a no-op. */
void tlsk_context_free(struct tlsk_context *ctx);

/* ---------------------------------------------------------------------------------------- */
/* Offload report                                                                           */

enum tlsk_mode {
    TLSK_MODE_PENDING = 0, /* handshake not finished: nothing decided yet */
    TLSK_MODE_USERSPACE,
    TLSK_MODE_KERNEL,
};

enum tlsk_reason {
    TLSK_REASON_NONE = 0,      /* in the kernel */
    TLSK_REASON_NO_ULP,        /* the kernel has no usable `tls` ULP */
    TLSK_REASON_CIPHER,        /* the kernel does not take this version and cipher */
    TLSK_REASON_PENDING_DATA,  /* OpenSSL had already buffered records past the handshake */
    TLSK_REASON_RENEGOTIATION, /* renegotiation was requested: stays in userspace */
    TLSK_REASON_NO_REKEY,      /* TLS 1.3 receive: the kernel cannot follow a KeyUpdate */
    TLSK_REASON_POLICY,        /* the offload policy said no */
    TLSK_REASON_NOT_TCP,       /* the descriptor is not a TCP socket */
    TLSK_REASON_FRAGMENT,      /* a max fragment length is in force */
    TLSK_REASON_INSTALL,       /* the kernel refused the keys (see err) */
    TLSK_REASON_LAST,
};

struct tlsk_direction {
    enum tlsk_mode mode;
    enum tlsk_reason reason;
    int err; /* -errno the kernel gave, when that decided it; else 0 */
};

struct tlsk_offload {
    struct tlsk_direction tx;
    struct tlsk_direction rx;
};

/* "no_ulp", "cipher", ... ("kernel" for TLSK_REASON_NONE). */
const char *tlsk_reason_name(enum tlsk_reason r);
/* One sentence explaining the reason. */
const char *tlsk_reason_text(enum tlsk_reason r);

/* ---------------------------------------------------------------------------------------- */
/* Sockets                                                                                  */

enum {
    /* tlsk_socket_free() closes the descriptor. */
    TLSK_SOCKET_OWN_FD = 1u << 0,
};

struct tlsk_socket_options {
    /* Client: name sent as SNI and checked against the certificate.  An IP literal is
     * checked against IP SANs and not sent as SNI.  NULL: no SNI, and verification of the
     * host name is impossible, so it fails unless TLSK_VERIFY_NONE_INSECURE is set. */
    const char *servername;
    unsigned flags;
    /* Override the context's offload policy for this socket (DEFAULT keeps it). */
    enum tlsk_offload_policy offload;
    /* Client: resume this session (bytes from tlsk_socket_session()).  Bytes that do not
     * parse make the call fail with TLSK_ECONFIG; a session the server no longer accepts
     * just gives a full handshake. */
    const void *session;
    size_t session_len;
};

struct tlsk_socket;

/*
 * tlsk_socket_new_server(), tlsk_socket_new_client() - wrap a connected stream socket.
 * The fd may be blocking or non-blocking; tlsk never changes that.  No I/O happens here.
 * Returns 0 and sets *out, or TLSK_ECONFIG, TLSK_ENOMEM, -EBADF.
 */
int tlsk_socket_new_server(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                           const struct tlsk_socket_options *opts);
int tlsk_socket_new_client(struct tlsk_socket **out, struct tlsk_context *ctx, int fd,
                           const struct tlsk_socket_options *opts);

/*
 * tlsk_connect() - resolve host:port, open a blocking TCP connection and wrap it as a client
 * that owns the fd.  servername defaults to host.  The handshake is not run yet.
 * Returns 0, -errno (e.g. -ECONNREFUSED) or TLSK_ECONFIG (name did not resolve).
 */
int tlsk_connect(struct tlsk_socket **out, struct tlsk_context *ctx, const char *host,
                 const char *port, const struct tlsk_socket_options *opts);

/*
 * tlsk_socket_handshake() - run (or continue) the handshake and, once it finishes, decide
 * and install the offload.  Returns 0 when done (also when called again later), -EAGAIN,
 * TLSK_EVERIFY, TLSK_EHANDSHAKE, TLSK_EPROTO, TLSK_EALERT(n), TLSK_ETRUNCATED,
 * TLSK_ENOKTLS, or -errno.  read/write/sendfile run it implicitly.
 */
int tlsk_socket_handshake(struct tlsk_socket *s);

/*
 * tlsk_socket_read() - read application data.  Returns bytes (> 0), 0 on close_notify,
 * -EAGAIN, TLSK_ETRUNCATED, TLSK_EALERT(n), TLSK_EBADRECORD, TLSK_ECONTROL, or -errno.
 */
ssize_t tlsk_socket_read(struct tlsk_socket *s, void *buf, size_t len);

/*
 * tlsk_socket_write() - write application data.  Returns bytes accepted (> 0, possibly
 * fewer than len on a non-blocking fd), -EAGAIN, -EPIPE, or another negative code.  After
 * -EAGAIN retry with the same bytes.
 */
ssize_t tlsk_socket_write(struct tlsk_socket *s, const void *buf, size_t len);
ssize_t tlsk_socket_writev(struct tlsk_socket *s, const struct iovec *iov, int iovcnt);

/*
 * tlsk_socket_sendfile() - send count bytes of file_fd.  With offset non-NULL, reads from
 * *offset and advances it (the file position is untouched); with NULL, reads from and
 * advances the file position.  In kernel mode this is sendfile(2) on the kTLS socket;
 * in userspace mode a buffered loop with full-size records.  Same returns as write; 0 at end
 * of file.
 */
ssize_t tlsk_socket_sendfile(struct tlsk_socket *s, int file_fd, off_t *offset, size_t count);

/*
 * tlsk_socket_shutdown() - send close_notify (the kernel never does).  Returns 0, -EAGAIN,
 * or a negative code.  Further writes fail with TLSK_ECLOSED; reads continue.
 */
int tlsk_socket_shutdown(struct tlsk_socket *s);

/* POLLIN and/or POLLOUT: what the last -EAGAIN was waiting for (POLLIN before any). */
int tlsk_socket_events(const struct tlsk_socket *s);

/* Free the socket (closing the fd only with TLSK_SOCKET_OWN_FD).  NULL is a no-op.  Does not
 * send close_notify: call tlsk_socket_shutdown() first for a clean close. */
void tlsk_socket_free(struct tlsk_socket *s);

int tlsk_socket_fd(const struct tlsk_socket *s);
void *tlsk_socket_get_data(const struct tlsk_socket *s);
void tlsk_socket_set_data(struct tlsk_socket *s, void *data);

/* Which directions the kernel handles, and why not the others. */
struct tlsk_offload tlsk_socket_offload(const struct tlsk_socket *s);

/* Detail of the last failure on this socket (OpenSSL's reason included), or "". */
const char *tlsk_socket_error_detail(const struct tlsk_socket *s);

/* After the handshake: "TLSv1.2"/"TLSv1.3", the OpenSSL cipher name, the version number
 * (TLSK_TLS1_2 ...), whether the session was resumed.  NULL/0 before. */
const char *tlsk_socket_version(const struct tlsk_socket *s);
const char *tlsk_socket_cipher(const struct tlsk_socket *s);
int tlsk_socket_version_number(const struct tlsk_socket *s);
int tlsk_socket_session_reused(const struct tlsk_socket *s);

/*
 * tlsk_socket_session() - the latest resumable session, serialized, for the session option
 * of a later connection.  A TLS 1.3 client receives its tickets after the handshake (also
 * through the kernel after receive offload): read first.  Returns the length written,
 * -ENOENT when there is no resumable session yet, -ENOBUFS when len is too small (buf NULL
 * and len 0 asks for the size: returns it).
 */
ssize_t tlsk_socket_session(const struct tlsk_socket *s, void *buf, size_t len);

/* Bytes of TLS records written to and read from the transport, headers and tags included,
 * in both modes. */
uint64_t tlsk_socket_bytes_written(const struct tlsk_socket *s);
uint64_t tlsk_socket_bytes_read(const struct tlsk_socket *s);

/* ---------------------------------------------------------------------------------------- */
/* Kernel capabilities (computed once per process, cached)                                  */

enum {
    TLSK_CIPHER_AES_128_GCM = 0,
    TLSK_CIPHER_AES_256_GCM,
    TLSK_CIPHER_CHACHA20_POLY1305,
    TLSK_CIPHER_AES_128_CCM,
    TLSK_CIPHER_COUNT,
};

struct tlsk_kernel_caps {
    int ulp;          /* 1: TCP_ULP "tls" attaches */
    int ulp_err;      /* -errno of the failed attach, else 0 */
    /* [version 0 = TLS 1.2, 1 = TLS 1.3][cipher][0 = TX, 1 = RX] */
    unsigned char cipher[2][TLSK_CIPHER_COUNT][2];
    int rekey;        /* TLS 1.3 re-key (Linux 6.14+) */
    int rx_no_pad;    /* TLS_RX_EXPECT_NO_PAD */
    int tx_zerocopy;  /* TLS_TX_ZEROCOPY_RO */
    int tx_max_payload; /* TLS_TX_MAX_PAYLOAD_LEN */
    char release[65]; /* uname release */
};

/* The cached probe (run on first use, on throwaway loopback sockets). */
const struct tlsk_kernel_caps *tlsk_kernel_probe(void);
/* "AES-128-GCM", ... */
const char *tlsk_kernel_cipher_name(int cipher);

#ifdef __cplusplus
}
#endif

#endif /* TLSK_H */

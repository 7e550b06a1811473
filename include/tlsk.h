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
    TLSK_EUNSUPPORTED_PROTOCOL = -5017, /* secure_protocol names a version below TLS 1.2 */
    TLSK_ENO_APPLICATION_PROTOCOL = -5018, /* ALPN lists do not overlap */
    TLSK_EINVALID_SNI_CONTEXT = -5019,  /* the SNI callback answered with no usable context */
    TLSK_ESNI = -5020,                  /* the SNI callback failed the handshake */
    TLSK_ERENEG_LIMIT = -5021,          /* client renegotiations exceeded the limit */
    TLSK_ERENEG_UNAVAILABLE = -5022,    /* renegotiation impossible here (TLS 1.3, offloaded) */
    TLSK_EKEY_LIMIT = -5023,            /* record limit of the key reached, no re-key possible */
    TLSK_ESESSION = -5024,              /* the session store's lookup failed */
    TLSK_ELAST = -5025,
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
    TLSK_OFFLOAD_AUTO,     /* TLS 1.2 both ways; TLS 1.3 TX (RX with TLSK_OFFLOAD_RX_TLS13) */
    TLSK_OFFLOAD_TX,       /* transmit only */
    TLSK_OFFLOAD_OFF,      /* userspace only (reason "policy") */
    TLSK_OFFLOAD_REQUIRE,  /* both directions in the kernel or the handshake fails */
};

enum {
    TLSK_TLS1_2 = 0x0303,
    TLSK_TLS1_3 = 0x0304,
};

/* Context flags (tlsk_context_options.flags); an unknown bit is refused with TLSK_ECONFIG. */
enum {
    /* Clients: complete the handshake even when the server's certificate or host name does
     * not verify (Node's rejectUnauthorized: false); tlsk_socket_authorized() and
     * tlsk_socket_authorization_error() still report the result.  Never the default. */
    TLSK_VERIFY_NONE_INSECURE = 1u << 0,
    /* Offload TLS 1.3 receive also on kernels that cannot re-key (before Linux 6.14, where
     * the auto policy keeps it in userspace): a peer's KeyUpdate then fails the connection
     * with TLSK_EKEYUPDATE.  On 6.14+ the auto policy offloads it anyway and re-keys. */
    TLSK_OFFLOAD_RX_TLS13 = 1u << 1,
    /* Servers: ask clients for a certificate, and reject those that do not verify
     * (Node's requestCert with rejectUnauthorized). */
    TLSK_REQUIRE_PEER_CERT = 1u << 2,
    /* Servers: ask clients for a certificate but accept any; the verification result is
     * reported by tlsk_socket_authorized() (Node's requestCert without rejectUnauthorized). */
    TLSK_REQUEST_PEER_CERT = 1u << 3,
    /* Servers: choose the cipher by the server's order, not the client's (honorCipherOrder). */
    TLSK_HONOR_CIPHER_ORDER = 1u << 4,
    /* TLS 1.2 renegotiation stays possible: such connections stay in userspace (reason
     * "renegotiation"); servers accept client-initiated renegotiation up to the limit. */
    TLSK_ALLOW_RENEGOTIATION = 1u << 5,
    /* TLS 1.3 servers: stateful tickets (the session store is consulted) instead of
     * stateless ones. */
    TLSK_STATEFUL_TICKETS = 1u << 6,
    /* Servers: no session tickets at all (TLS 1.2 resumes by session id only). */
    TLSK_NO_TICKETS = 1u << 7,
    /* Keep TLS 1.3 receive in userspace on every kernel (reason "policy").  For descriptors
     * handed to code that knows nothing of TLS (tlsk_socket_detach): even a kernel that
     * re-keys needs tlsk to give it the next key, and after detach tlsk is gone, so a peer's
     * KeyUpdate would end such a stream. */
    TLSK_NO_RX_TLS13 = 1u << 8,
    /* Servers: a connection that asks to be lean (TLSK_SOCKET_LEAN) is lean also where the
     * kernel cannot take it (no tls module, a cipher it lacks, a socket that is not TCP):
     * OpenSSL's state is freed after the handshake and tlsk's own record layer carries the
     * rest (AES-GCM and ChaCha20-Poly1305, TLS 1.2 and 1.3; docs/KERNEL.md §16).  An idle
     * connection then costs a third of the memory.  The price is paid in every handshake of
     * the context: TLS 1.3 secrets are captured (OpenSSL's key log callback) and, for
     * TLSK_SOCKET_LEAN connections, handshake records are read one at a time (no
     * read-ahead), as where the kernel has the module (TLSK_SOCKET_LEAN_IDLE ones read ahead:
     * they change over later).  tlsk_socket_offload() still reports userspace with the
     * kernel's reason. */
    TLSK_LEAN_USERSPACE = 1u << 9,
};

#define TLSK_SESSION_PENDING 1

struct tlsk_socket;

/*
 * An external session store for servers (Node's newSession / resumeSession events).  With a
 * store, OpenSSL's internal cache is not used.  Both callbacks run during the handshake.
 * new_session: a session to keep (TLS 1.2 session ids, TLS 1.3 stateful tickets); the bytes
 * are borrowed for the call.  resume_session: look id up and answer with
 * tlsk_socket_resume_answer(), now or later (return TLSK_SESSION_PENDING: the handshake
 * returns -EAGAIN, and tlsk_socket_events() 0, until the answer); returning a negative code
 * aborts the handshake with it.  Stateless TLS 1.3 tickets never consult it.
 */
struct tlsk_session_store {
    void (*new_session)(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                        const unsigned char *data, size_t data_len, void *ud);
    int (*resume_session)(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                          void *ud);
    void *ud;
    /* Optional: s is being freed while its resume_session answer is still pending; the
     * store must not answer it any more. */
    void (*cancel)(struct tlsk_socket *s, void *ud);
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
    /* Key exchange groups, e.g. "X25519:P-256"; NULL = X25519, P-256, P-384.  "" is Node's
     * ecdhCurve: false: no elliptic curves, so TLS 1.2 has no ECDHE and TLS 1.3 uses the
     * finite-field groups (ffdhe2048 and up). */
    const char *groups;
    enum tlsk_offload_policy offload;
    unsigned flags;
    /* PKCS#12 bundle (file, or bytes with pfx_len) opened with passphrase: its key,
     * certificate and chain; its CA certificates are also trusted for peer verification.
     * Mutually exclusive with cert, key and ca. */
    const char *pfx_file;
    const void *pfx;
    size_t pfx_len;
    /* Certificate revocation lists (PEM, one or more) checked against peer chains. */
    const char *crl_file;
    const char *crl_pem;
    size_t crl_pem_len;
    /* Node's secureProtocol name ("TLS_method", "TLSv1_2_method", "TLSv1_3_server_method",
     * ...).  Names below TLS 1.2 fail with TLSK_EUNSUPPORTED_PROTOCOL.  Overrides
     * min_version/max_version. */
    const char *secure_protocol;
    /* ALPN and NPN protocol lists, NULL-terminated, in preference order (server preference
     * for ALPN).  NPN is TLS 1.2 only.  Each name 1..255 bytes. */
    const char *const *alpn;
    const char *const *npn;
    /* Servers: session cache and ticket lifetime in seconds; 0 = 300. */
    long session_timeout;
    /* Servers: session id context, at most 32 bytes; NULL = derived from the program. */
    const char *session_id_context;
    /* Servers: an external session store (copied), or NULL for the internal cache. */
    const struct tlsk_session_store *session_store;
    /* Servers: internal cache size in sessions; 0 = OpenSSL's default (20480). */
    long session_cache_size;
    /* Servers: ticket keys, 48 bytes (16 name, 16 HMAC, 16 AES) as Node's
     * getTicketKeys()/setTicketKeys(); NULL = random per context.  Several servers given the
     * same keys resume each other's tickets. */
    const unsigned char *ticket_keys;
    /* Client renegotiations allowed per window (TLSK_ALLOW_RENEGOTIATION, or answered with a
     * no_renegotiation warning when offloaded); 0/0 = the process-wide values
     * (tlsk_set_client_reneg_limit; defaults 3 per 600 s).  limit < 0 means 0. */
    int client_reneg_limit;
    int client_reneg_window_s;
    /* TLS 1.3: records sent or received under one key before acting (RFC 8446 5.5): re-key
     * where possible, otherwise fail with TLSK_EKEY_LIMIT.  0 = 2^24 for AES-GCM, unlimited
     * for ChaCha20. */
    uint64_t key_update_records;
};

/* Process-wide CLIENT_RENEG_LIMIT / CLIENT_RENEG_WINDOW (defaults 3 and 600 s). */
void tlsk_set_client_reneg_limit(int limit, int window_s);

struct tlsk_context;

/*
 * tlsk_context_new() - build a context.
 * Returns 0 and sets *out, or TLSK_ECONFIG, TLSK_ECERT, TLSK_EKEY, TLSK_EPASSPHRASE,
 * TLSK_ENOMEM.  When err_detail is non-NULL it receives a NUL-terminated reason (OpenSSL's
 * text included) of at most err_detail_len bytes, also on failure.
 */
int tlsk_context_new(struct tlsk_context **out, const struct tlsk_context_options *opts,
                     char *err_detail, size_t err_detail_len);
/* Replace the ticket keys (48 bytes): new tickets use them; tickets made with the previous
 * keys still resume.  Thread-safe.  0 or TLSK_ECONFIG. */
int tlsk_context_set_ticket_keys(struct tlsk_context *ctx, const unsigned char keys[48]);
/* Most ticket keys tlsk_context_set_ticket_key_list() takes. */
#define TLSK_TICKET_KEYS_MAX 64
/* Replace the ticket keys with a list of n (1..TLSK_TICKET_KEYS_MAX) 48-byte keys, laid out
 * back to back (the format of a fleet's shared key file): keys[0..47] encrypts new tickets,
 * every key in the list decrypts; a ticket under any key but the first resumes and the client
 * gets a fresh ticket under the first.  Keys no longer in the list stop resuming at once (a
 * full handshake).  The previous list is wiped.  Safe while handshakes run on other threads.
 * 0, TLSK_ECONFIG (NULL, n out of range) or TLSK_ENOMEM (the old keys stay). */
int tlsk_context_set_ticket_key_list(struct tlsk_context *ctx, const unsigned char *keys,
                                     size_t n);
/* The current ticket keys (the first of the list).  0 or TLSK_ESTATE (tickets disabled). */
int tlsk_context_get_ticket_keys(const struct tlsk_context *ctx, unsigned char keys[48]);
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

/* Socket flags (tlsk_socket_options.flags).  Their bits never overlap the context flags, and
 * an unknown bit (a context flag passed here, say) is refused with TLSK_ECONFIG. */
enum {
    /* tlsk_socket_free() closes the descriptor. */
    TLSK_SOCKET_OWN_FD = 1u << 16,
    /* Userspace sendfile encrypts straight from a mapping of the file (one copy fewer).
     * The caller guarantees the file is not truncated while it is sent: a page past the new
     * end raises SIGBUS.  No effect when transmit is in the kernel. */
    TLSK_SOCKET_SENDFILE_MMAP = 1u << 17,
    /* Servers: once the kernel has both directions, free OpenSSL's state for the connection
     * (about 12 KB: docs/KERNEL.md §14) and speak the rest of the protocol in tlsk: data,
     * key updates both ways (Linux 6.14+), alerts, close_notify.  The getters answer as
     * before.  What only OpenSSL can do then answers TLSK_ESTATE with a detail:
     * tlsk_socket_new_session_ticket() and tlsk_socket_session().  No effect on a
     * connection with a direction in userspace, or on a client. */
    TLSK_SOCKET_LEAN = 1u << 18,
    /* As TLSK_SOCKET_LEAN (which it implies), but where tlsk's own record layer is to carry
     * the connection (TLSK_LEAN_USERSPACE, no kernel), the change happens when the connection
     * first waits for its peer instead of at the end of the handshake: at a read that would
     * block once application data has been read, or at tlsk_socket_idle().  A connection that
     * closes before then never pays for the change (about 13 us of key derivation and set-up
     * in a TLS 1.2 resumption: docs/KERNEL.md §16.1); one that waits between requests is
     * lean from its first wait.  The kernel path is unaffected: its keys go in at the end of
     * the handshake, and the connection is lean from then. */
    TLSK_SOCKET_LEAN_IDLE = 1u << 19,
};

/* ---------------------------------------------------------------------------------------- */
/* Server name indication (server side)                                                      */

/*
 * An SNI table (Node's addContext): patterns are a host name or "*." followed by a name; "*"
 * matches exactly one non-empty left-most label.  An exact name beats a wildcard; adding a
 * pattern again replaces it; matching is ASCII case-insensitive.  The table holds a reference
 * on each context.  Not thread-safe while being modified; read-only use is.
 */
struct tlsk_sni;
int tlsk_sni_new(struct tlsk_sni **out);
/* Returns 0, TLSK_ECONFIG for a malformed pattern (empty, too long, a misplaced "*", a
 * character that cannot be in a host name), TLSK_ENOMEM. */
int tlsk_sni_add(struct tlsk_sni *t, const char *pattern, struct tlsk_context *ctx);
/* The context for name, or NULL.  Borrowed. */
struct tlsk_context *tlsk_sni_lookup(const struct tlsk_sni *t, const char *name);
void tlsk_sni_free(struct tlsk_sni *t);

#define TLSK_SNI_PENDING 1

struct tlsk_cert_info;

struct tlsk_socket;

/*
 * SNI callback (Node's SNICallback), called during the handshake with the name the client
 * sent (never for a handshake without SNI).  Either set *out (a borrowed context, or NULL
 * for the default) and return 0; or return TLSK_SNI_PENDING and answer later with
 * tlsk_socket_sni_answer() (the handshake returns -EAGAIN and tlsk_socket_events() 0 until
 * then); or return a negative code to abort with alert internal_error.  When a callback is
 * set, the table is not consulted.
 */
typedef int (*tlsk_sni_cb)(struct tlsk_socket *s, const char *servername, void *data,
                           struct tlsk_context **out);

/* Answer a pending SNI callback: a context (NULL = default), or err < 0 to abort. */
int tlsk_socket_sni_answer(struct tlsk_socket *s, struct tlsk_context *ctx, int err);

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
    /* Server: the SNI table and/or callback (see above).  The table is borrowed and must
     * outlive the handshake. */
    const struct tlsk_sni *sni;
    tlsk_sni_cb sni_cb;
    void *sni_data;
    /* Client: replaces the built-in host-name check (Node's checkServerIdentity).  Called
     * during the handshake once the chain has verified, with the servername option and the
     * server's certificate (borrowed for the call); return 0 to accept or a negative code
     * to reject: the handshake then fails with TLSK_EVERIFY (HOSTNAME_MISMATCH), unless
     * TLSK_VERIFY_NONE_INSECURE, which only records it. */
    int (*check_identity)(const char *servername, const struct tlsk_cert_info *cert,
                          void *data);
    void *check_identity_data;
    /* Client: called for every session the server issues (Node's 'session' event), also
     * for tickets that arrive after receive offload; bytes borrowed for the call, for the
     * session option of a later connection. */
    void (*on_session)(struct tlsk_socket *s, const unsigned char *data, size_t len,
                       void *ud);
    void *on_session_data;
};

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
 * -EAGAIN or a short count, write the bytes not accepted again (as with SSL_write): in
 * userspace mode records already made for them may be queued, waiting for the socket
 * (tlsk_socket_events() then asks for POLLOUT), and leave first.  A count returned is bytes
 * whose records have left.
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

/*
 * tlsk_socket_pending() - 1 when tlsk_socket_read() may return without the fd becoming
 * readable: bytes already taken from the fd and held in userspace (OpenSSL read records
 * ahead, like SSL_has_pending(); data held across a renegotiation), a close_notify already
 * received, control records to send first, or the handshake not complete.  0 when nothing
 * is held: an event loop may wait for POLLIN before reading, and save the read that would
 * say -EAGAIN.  Waiting while it says 1 can wait for ever.
 */
int tlsk_socket_pending(const struct tlsk_socket *s);

/*
 * tlsk_socket_idle() - the caller is about to wait for the peer (a server between
 * requests).  A TLSK_SOCKET_LEAN_IDLE connection still with OpenSSL becomes lean now if
 * nothing of OpenSSL's is in flight (no record half sent, no unanswered key update, no record
 * half read); if something is, it stays as it is and a later call tries again.  A key update
 * before the change keeps the connection with OpenSSL for good.  Returns 0, or the code that
 * failed the socket (out of memory half way through the change).  No effect on any other
 * connection.
 */
int tlsk_socket_idle(struct tlsk_socket *s);

/* Free the socket (closing the fd only with TLSK_SOCKET_OWN_FD).  NULL is a no-op.  Does not
 * send close_notify: call tlsk_socket_shutdown() first for a clean close. */
void tlsk_socket_free(struct tlsk_socket *s);

int tlsk_socket_fd(const struct tlsk_socket *s);
void *tlsk_socket_get_data(const struct tlsk_socket *s);
void tlsk_socket_set_data(struct tlsk_socket *s, void *data);

/* Which directions the kernel handles, and why not the others. */
struct tlsk_offload tlsk_socket_offload(const struct tlsk_socket *s);
/* 1 when the connection is lean (TLSK_SOCKET_LEAN): OpenSSL's state for it has been freed, and
 * its records are the kernel's (tlsk_socket_offload() says kernel) or tlsk's own record
 * layer's (it says userspace: TLSK_LEAN_USERSPACE); else 0. */
int tlsk_socket_lean(const struct tlsk_socket *s);

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

/* Answer a pending resume_session callback: session bytes (NULL/0 = not found: full
 * handshake), or err < 0 to abort the handshake with TLSK_ESESSION. */
int tlsk_socket_resume_answer(struct tlsk_socket *s, const void *data, size_t len, int err);

/*
 * tlsk_socket_new_session_ticket() - TLS 1.3 server: issue one more ticket now, also after
 * transmit offload (it travels as a kernel control record).  0, -EAGAIN, TLSK_ESTATE.
 */
int tlsk_socket_new_session_ticket(struct tlsk_socket *s);

/*
 * tlsk_socket_key_update() - TLS 1.3: update our sending keys, asking the peer to update
 * its own too when request_peer.  In userspace always; with transmit in the kernel only
 * where the kernel can re-key (Linux 6.14+), otherwise TLSK_EKEYUPDATE and the connection
 * continues unchanged.  0, -EAGAIN, TLSK_ESTATE (TLS 1.2), TLSK_EKEYUPDATE.
 */
int tlsk_socket_key_update(struct tlsk_socket *s, int request_peer);

/*
 * tlsk_socket_renegotiate() - TLS 1.2 server: start a renegotiation, e.g. to ask for a
 * client certificate (flags: TLSK_REQUEST_PEER_CERT / TLSK_REQUIRE_PEER_CERT, else the
 * context's).  Drive it like a handshake: returns 0 when finished, -EAGAIN, or an error;
 * the verification results are then updated.  Fails at once with TLSK_ERENEG_UNAVAILABLE on
 * TLS 1.3 or an offloaded connection (the detail says which), the connection unharmed.
 * On an evented socket it returns -EAGAIN once started and the loop drives it: reads pause,
 * then the renegotiated callback follows, or error (a server's connection: also when it
 * takes longer than the server's handshake_timeout_ms).
 */
int tlsk_socket_renegotiate(struct tlsk_socket *s, unsigned flags);

/* TLS 1.3 key updates performed on this connection (either direction). */
uint64_t tlsk_socket_key_updates(const struct tlsk_socket *s);

/* Bytes of TLS records written to and read from the transport, headers and tags included,
 * in both modes. */
uint64_t tlsk_socket_bytes_written(const struct tlsk_socket *s);
uint64_t tlsk_socket_bytes_read(const struct tlsk_socket *s);

/* ---------------------------------------------------------------------------------------- */
/* A TLS pair over any transport (Node: createSecurePair)                                    */

/*
 * tlsk_pair_new() - a socket whose encrypted side is caller-supplied bytes instead of an fd,
 * for transports that are not TCP.  handshake/read/write/shutdown work as on an fd socket
 * (-EAGAIN means: feed more bytes, or pull the pending ones); sendfile reads the file and
 * encrypts in userspace.  It never uses the kernel: offload reports reason not_tcp.
 */
int tlsk_pair_new(struct tlsk_socket **out, struct tlsk_context *ctx, int is_server,
                  const struct tlsk_socket_options *opts);
/* Hand over encrypted bytes received from the transport (all are taken).  Returns len or a
 * negative code. */
ssize_t tlsk_pair_feed(struct tlsk_socket *s, const void *buf, size_t len);
/* Take encrypted bytes to send on the transport: returns how many were copied (0: none). */
ssize_t tlsk_pair_pull(struct tlsk_socket *s, void *buf, size_t len);
/* Encrypted bytes waiting to be pulled. */
size_t tlsk_pair_pending(const struct tlsk_socket *s);

/* ---------------------------------------------------------------------------------------- */
/* Connection information (valid after the handshake)                                       */

/* 1 when the peer's certificate verified (and, for clients, the host name matched). */
int tlsk_socket_authorized(const struct tlsk_socket *s);
/* Why not: OpenSSL's X509_V_ERR_* name without the prefix ("DEPTH_ZERO_SELF_SIGNED_CERT",
 * "HOSTNAME_MISMATCH", ...), "NO_PEER_CERTIFICATE" when none was sent, or NULL when
 * authorized.  Also after a handshake that failed on verification (TLSK_EVERIFY), to tell
 * why; NULL after a failure of another kind. */
const char *tlsk_socket_authorization_error(const struct tlsk_socket *s);
/* Server: the name the client sent (NULL without SNI).  Client: the name sent. */
const char *tlsk_socket_servername(const struct tlsk_socket *s);
/* The negotiated ALPN / NPN protocol, or NULL.  Borrowed until the socket is freed. */
const char *tlsk_socket_alpn_protocol(const struct tlsk_socket *s);
const char *tlsk_socket_npn_protocol(const struct tlsk_socket *s);

struct tlsk_cipher_info {
    const char *name;          /* OpenSSL's name, "ECDHE-RSA-AES128-GCM-SHA256" */
    const char *standard_name; /* RFC name, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" */
    const char *version;       /* "TLSv1.2" */
    int bits;
};
/* Returns 0 and fills *out (strings borrowed from the socket), or TLSK_ESTATE. */
int tlsk_socket_get_cipher(const struct tlsk_socket *s, struct tlsk_cipher_info *out);

/* All cipher names usable with the defaults' security level, OpenSSL's spelling, TLS 1.3
 * suites included; no RC4/DES/MD5/NULL/EXPORT/anon/PSK/SRP.  Writes up to cap pointers to
 * static strings and returns how many exist. */
size_t tlsk_get_ciphers(const char **out, size_t cap);

struct tlsk_name_entry {
    const char *key;   /* "CN", "O", "OU", "C", "ST", "L", "emailAddress", ... */
    const char *value; /* UTF-8 */
};

struct tlsk_cert_info {
    const struct tlsk_name_entry *subject;
    size_t subject_count;
    const struct tlsk_name_entry *issuer;
    size_t issuer_count;
    const char *subjectaltname;      /* "DNS:localhost, IP Address:127.0.0.1", or NULL */
    const char *valid_from;          /* "Nov 27 16:31:39 2026 GMT" (Node's form) */
    const char *valid_to;
    int64_t not_before, not_after;   /* seconds since the epoch */
    const char *fingerprint;         /* SHA-1, "AB:CD:..." uppercase */
    const char *fingerprint256;      /* SHA-256 */
    const char *serial_number;       /* uppercase hex, no separators */
    const unsigned char *raw;        /* DER */
    size_t raw_len;
};

/*
 * tlsk_socket_peer_certificate() - the peer's certificate (index 0) or the chain it sent
 * (1, 2, ...), as a plain struct the caller frees with tlsk_cert_info_free().  A resumed
 * connection reports the certificate of the full handshake that created the session.
 * Returns 0, -ENOENT (no such certificate), TLSK_ESTATE, TLSK_ENOMEM.
 */
int tlsk_socket_peer_certificate(const struct tlsk_socket *s, size_t index,
                                 struct tlsk_cert_info **out);
void tlsk_cert_info_free(struct tlsk_cert_info *ci);

/* Local (remote = 0) or remote (1) address as numeric host and port, taken when the socket was
 * wrapped (readable after a reset).  Returns 0, -ENOTCONN (none), -EAFNOSUPPORT (not IPv4 or
 * IPv6: a unix socket has no host and port), -ENOSPC (hostlen too small) or -errno. */
int tlsk_socket_address(const struct tlsk_socket *s, int remote, char *host, size_t hostlen,
                        int *port);

/* ---------------------------------------------------------------------------------------- */
/* Handing the descriptor to code that knows nothing of TLS                                 */

/*
 * tlsk_socket_detach() - when both directions are in the kernel, free the socket and return
 * its descriptor (which the caller then owns, whatever TLSK_SOCKET_OWN_FD said): plain
 * read/write/sendfile/splice on it are TLS.  A plain read() returns -1/EIO when a control
 * record (such as the peer's close_notify) is next; tlsk_fd_read() handles that.  Returns
 * the fd, or TLSK_ESTATE (handshake not done, or a direction in userspace: s is untouched).
 */
int tlsk_socket_detach(struct tlsk_socket *s);

/*
 * tlsk_fd_read() - read() for a detached kTLS descriptor: returns data, 0 at close_notify or
 * TCP EOF, -EAGAIN, TLSK_EALERT(n) for a fatal alert, TLSK_ECONTROL for any other control
 * record (consumed), or -errno.
 */
ssize_t tlsk_fd_read(int fd, void *buf, size_t len);

/* ---------------------------------------------------------------------------------------- */
/* Event loop                                                                                */
/*
 * The evented API (servers, evented sockets) runs on a tlsk_loop: either the built-in epoll
 * loop, or an application's own loop through three hooks.  Callbacks run only from
 * tlsk_loop_run() / tlsk_handle_dispatch(), never from inside the call that caused them.
 * Closing a server or socket inside a callback is allowed; its memory is released after its
 * close callback.  A loop and everything on it belong to one thread.
 */
struct tlsk_loop;
struct tlsk_handle; /* one fd and one timer of the library's, as the hooks see them */

struct tlsk_loop_hooks {
    /* Watch fd for events (POLLIN/POLLOUT mask; 0 = stop watching); call
     * tlsk_handle_dispatch(h, revents) when ready.  Idempotent.  0 or -errno. */
    int (*watch)(void *ud, struct tlsk_handle *h, int fd, int events);
    /* Arm h's single timer for ms milliseconds from now, replacing any earlier (ms < 0
     * cancels); on expiry call tlsk_handle_dispatch(h, 0).  0 or -errno. */
    int (*timer)(void *ud, struct tlsk_handle *h, int64_t ms);
    /* h is being freed: drop every reference to it (its fd may already be closed). */
    void (*forget)(void *ud, struct tlsk_handle *h);
    void *ud;
};

/* The built-in loop (epoll).  Returns 0 or -errno. */
int tlsk_loop_new(struct tlsk_loop **out);
/* A loop driven by the application's own event loop through hooks (copied). */
int tlsk_loop_new_hooked(struct tlsk_loop **out, const struct tlsk_loop_hooks *hooks);
/* Built-in loop: run until no handle is active, tlsk_loop_stop() is called, or timeout_ms
 * passes (< 0: no limit).  Returns 0, or -errno from epoll. */
int tlsk_loop_run(struct tlsk_loop *l, int timeout_ms);
void tlsk_loop_stop(struct tlsk_loop *l);
/* Free the loop.  Servers and sockets on it must be closed (and their close callbacks run)
 * first; returns TLSK_ESTATE otherwise. */
int tlsk_loop_free(struct tlsk_loop *l);
/* For hooked loops: the fd of h is ready (revents), or its timer fired (revents 0). */
void tlsk_handle_dispatch(struct tlsk_handle *h, int revents);
/* The built-in loop inside another poll loop (as libuv's uv_backend_fd): an fd that polls
 * readable when the loop has events to dispatch, and the ms until its next timer (-1 none,
 * 0 due now); then tlsk_loop_run(l, 0) dispatches what is ready.  TLSK_ESTATE for hooked
 * loops. */
int tlsk_loop_backend_fd(const struct tlsk_loop *l);
int tlsk_loop_backend_timeout(const struct tlsk_loop *l);

/*
 * The application's own descriptors and timers on a tlsk_loop, e.g. a database client's
 * connection next to the TLS connections (include/tlsk/redis.h uses one).  A watcher has
 * one fd (or -1: a timer only) and one timer; cb runs from the loop with the ready events
 * (POLLIN/POLLOUT/POLLERR/POLLHUP), or 0 when the timer fired.  A watcher keeps the built-in
 * loop running until it is freed.  tlsk_watcher_free() does not close the fd; the memory is
 * released after the current dispatch, and cb is not called again.
 */
struct tlsk_watcher;
typedef void (*tlsk_watcher_cb)(struct tlsk_watcher *w, int revents, void *ud);
int tlsk_watcher_new(struct tlsk_watcher **out, struct tlsk_loop *l, int fd, tlsk_watcher_cb cb,
                     void *ud);
/* Watch for events (POLLIN and/or POLLOUT; 0 stops).  0 or -errno. */
int tlsk_watcher_watch(struct tlsk_watcher *w, int events);
/* Arm the timer ms from now, replacing any earlier (ms < 0 cancels).  0 or -errno. */
int tlsk_watcher_timer(struct tlsk_watcher *w, int64_t ms);
void tlsk_watcher_free(struct tlsk_watcher *w);

/* ---------------------------------------------------------------------------------------- */
/* Servers (Node: tls.createServer, tls.Server)                                              */

struct tlsk_server;

struct tlsk_server_options {
    struct tlsk_context *ctx;  /* the default context (required; a reference is taken) */
    /* 0 = 120000 (Node's default); < 0 disables the timer.  It also bounds each
     * renegotiation the application starts on a connection (tlsk_socket_renegotiate): one
     * not finished in time fails the connection with -ETIMEDOUT (detail HANDSHAKE_TIMEOUT). */
    int handshake_timeout_ms;
    int max_connections;       /* 0 = unlimited; beyond it connections are closed at accept */
    tlsk_sni_cb sni_cb;        /* replaces the tlsk_server_add_context() table when set */
    void *sni_data;
    /* Nonzero: TCP_NODELAY on each accepted connection, so a small record is not held back
     * by Nagle's algorithm while an earlier one is unacknowledged (Node's noDelay, off by
     * default as in Node). */
    int no_delay;
};

struct tlsk_server_callbacks {
    /* A connection finished its handshake.  The socket is evented (see below); give it
     * callbacks with tlsk_socket_set_callbacks() here.  The server owns it: it is freed
     * after its close callback. */
    void (*secure_connection)(struct tlsk_server *srv, struct tlsk_socket *s, void *data);
    /* A connection failed before its handshake finished (bad handshake, timeout:
     * -ETIMEDOUT with detail "HANDSHAKE_TIMEOUT", the peer vanished: -ECONNRESET).  Called
     * exactly once per such connection; s is valid during the call only (addresses, detail);
     * the connection is then closed. */
    void (*client_error)(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data);
    /* After tlsk_server_close(), once the last connection has closed. */
    void (*close)(struct tlsk_server *srv, void *data);
};

int tlsk_server_new(struct tlsk_server **out, struct tlsk_loop *loop,
                    const struct tlsk_server_options *opts,
                    const struct tlsk_server_callbacks *cb, void *data);
/* Node's addContext: an SNI pattern and its context (rules of tlsk_sni_add). */
int tlsk_server_add_context(struct tlsk_server *srv, const char *pattern,
                            struct tlsk_context *ctx);
/* Listen on host (NULL = all, IPv4 and IPv6) and port ("0" picks one).  0 or -errno. */
int tlsk_server_listen(struct tlsk_server *srv, const char *host, const char *port,
                       int backlog);
/* The address listened on (numeric).  0 or -errno. */
int tlsk_server_address(const struct tlsk_server *srv, char *host, size_t hostlen, int *port);
/* Live connections (handshaking or established). */
unsigned tlsk_server_connections(const struct tlsk_server *srv);
/* Stop accepting; the close callback runs when the last connection has closed (at once if
 * there is none: from the loop, not from this call).  Established connections are left
 * to finish.  Returns 0, or TLSK_ESTATE when the server is not listening (the server is
 * closed all the same). */
int tlsk_server_close(struct tlsk_server *srv);
void *tlsk_server_get_data(const struct tlsk_server *srv);

/* ---------------------------------------------------------------------------------------- */
/* Evented sockets (Node: tls.TLSSocket events)                                              */

struct tlsk_socket_callbacks {
    /* Application data arrived (buf valid during the call only). */
    void (*data)(struct tlsk_socket *s, const void *buf, size_t len, void *ud);
    /* The peer finished sending: close_notify (err 0) or a TCP close without it
     * (TLSK_ETRUNCATED).  The socket stays writable until tlsk_socket_end(); once both
     * directions have ended it closes by itself. */
    void (*end)(struct tlsk_socket *s, int err, void *ud);
    /* Everything queued by tlsk_socket_send() has been written. */
    void (*drain)(struct tlsk_socket *s, void *ud);
    /* A fatal error; the socket is then closed (close follows). */
    void (*error)(struct tlsk_socket *s, int err, void *ud);
    /* Last callback; the socket must not be used after it.  The library then closes the
     * connection lingering (shutdown, and up to 1 s / 256 KiB drained until the peer's FIN)
     * so that a final alert reaches the peer instead of a reset; a server counts the
     * connection until that ends. */
    void (*close)(struct tlsk_socket *s, void *ud);
    /* Client sockets made evented by tlsk_socket_start(): the handshake finished
     * (Node's secureConnect; also when not authorized under TLSK_VERIFY_NONE_INSECURE). */
    void (*secure)(struct tlsk_socket *s, void *ud);
    /* A renegotiation started with tlsk_socket_renegotiate() finished (Node's renegotiate
     * callback); the verification results are updated.  Its failure, a timeout included,
     * comes as error instead. */
    void (*renegotiated)(struct tlsk_socket *s, void *ud);
};

/* Set the callbacks of an evented socket (ud is tlsk_socket_get_data()'s data). */
void tlsk_socket_set_callbacks(struct tlsk_socket *s, const struct tlsk_socket_callbacks *cb);
/*
 * tlsk_socket_start() - make a socket from tlsk_socket_new_*() or tlsk_connect() evented on
 * loop: the fd is switched to non-blocking, the handshake runs from the loop (secure or
 * error follows), and reads are delivered through the data callback.  The socket then
 * belongs to the loop: free it with tlsk_socket_close(), not tlsk_socket_free().
 */
int tlsk_socket_start(struct tlsk_socket *s, struct tlsk_loop *loop,
                      const struct tlsk_socket_callbacks *cb);
/* Queue bytes (copied) for writing.  Returns 1 when everything was written at once, 0 when
 * some is queued (drain follows), or a negative code. */
int tlsk_socket_send(struct tlsk_socket *s, const void *buf, size_t len);
/* Queued bytes not yet written. */
size_t tlsk_socket_queued(const struct tlsk_socket *s);
/* Half-close: after the queue is written, send close_notify.  Reading continues. */
int tlsk_socket_end(struct tlsk_socket *s);
/* Pause or resume data callbacks (backpressure). */
void tlsk_socket_pause(struct tlsk_socket *s, int paused);
/* Close now (queued bytes are dropped unless tlsk_socket_end() flushed them); the close
 * callback follows from the loop.  Idempotent. */
void tlsk_socket_close(struct tlsk_socket *s);

/* ---------------------------------------------------------------------------------------- */
/* Kernel capabilities (cached; refreshed after tlsk_kernel_load_tls() loads the module)    */

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

/*
 * tlsk_kernel_load_tls() - make sure the `tls` module is loaded, loading it when this
 * process may (CAP_NET_ADMIN through the TCP ULP autoload, or CAP_SYS_MODULE by running
 * modprobe).  Returns 0 when it is loaded afterwards (the cached probe is then refreshed;
 * pointers returned earlier stay valid), -EPERM naming the missing capability in the
 * detail, -ENOENT when no module exists for this kernel (or no modprobe), -EIO when modprobe
 * failed or the ULP still does not attach, -ETIMEDOUT when modprobe hung (killed after
 * 30 s), or another -errno from the attach test.
 */
int tlsk_kernel_load_tls(char *detail, size_t detail_len);

#ifdef __cplusplus
}
#endif

#endif /* TLSK_H */

/*
 * offload.c - decide per direction, install the keys (keys.c derives them) into the kernel,
 * and move it to the next key after a TLS 1.3 KeyUpdate.
 *
 * Validate, act, then only bookkeeping: every precondition is checked with no side effect,
 * then the ULP is attached and each direction installed.  A successful TLS_TX/TLS_RX can
 * never be undone (docs/KERNEL.md §2.2), so after it nothing may fail.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* The kernel's crypto_info for k: every struct is {version, cipher} then iv, key, salt,
 * rec_seq (docs/KERNEL.md §2.4). */
union crypto_info {
    struct tls_crypto_info base;
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_aes_ccm_128 ccm128;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* Where each field of kcipher's struct lies in ci (docs/KERNEL.md §2.4): the struct's
 * length, or 0 for a cipher tlsk does not install.  ChaCha20 has no salt (*salt NULL). */
static size_t layout(union crypto_info *ci, int kcipher, unsigned char **iv, unsigned char **key,
                     unsigned char **salt, unsigned char **seq)
{
#define AT(m) (*iv = ci->m.iv, *key = ci->m.key, *seq = ci->m.rec_seq, sizeof ci->m)
    switch (kcipher) {
    case TLSK_KCIPHER_AES_GCM_128:
        *salt = ci->gcm128.salt;
        return AT(gcm128);
    case TLSK_KCIPHER_AES_GCM_256:
        *salt = ci->gcm256.salt;
        return AT(gcm256);
    case TLSK_KCIPHER_AES_CCM_128:
        *salt = ci->ccm128.salt;
        return AT(ccm128);
    case TLSK_KCIPHER_CHACHA20_POLY1305:
        *salt = NULL;
        return AT(chacha);
    default:
        return 0;
    }
#undef AT
}

static size_t build_crypto_info(const struct tlsk__keys *k, union crypto_info *ci)
{
    unsigned char *iv, *key, *salt, *seq;
    size_t len;

    memset(ci, 0, sizeof *ci);
    ci->base.version = (uint16_t)k->version;
    ci->base.cipher_type = (uint16_t)k->kcipher;
    if ((len = layout(ci, k->kcipher, &iv, &key, &salt, &seq)) == 0) {
        return 0;
    }
    memcpy(key, k->key, k->key_len);
    if (!salt) {
        memcpy(iv, k->iv, 12); /* ChaCha20: the whole static IV */
    } else if (k->version == TLS1_3_VERSION) {
        memcpy(salt, k->iv, 4);
        memcpy(iv, k->iv + 4, 8);
    } else {
        /* TLS 1.2 explicit nonce: any per-key-unique value works (RFC 5288); the kernel
         * increments it per record.  The sequence number is unique and simple. */
        memcpy(salt, k->iv, 4);
        tlsk__put_be64(iv, k->seq);
    }
    tlsk__put_be64(seq, k->seq);
    return len;
}

/* Install one direction, in the kernel or in tlsk's record layer standing in for it (soft.c).
 * Returns 0 or -errno; the socket is unchanged on failure. */
static int install(struct tlsk_socket *s, int optname, const struct tlsk__keys *k)
{
    union crypto_info ci;
    size_t len;
    int fd = s->fd, rc = 0;

    if (s->soft) {
        return tlsk__soft_install(s, optname == TLSK_TLS_TX, k);
    }
    if ((len = build_crypto_info(k, &ci)) == 0) {
        return -EINVAL;
    }
    if (setsockopt(fd, TLSK_SOL_TLS, optname, &ci, (socklen_t)len) != 0) {
        rc = -errno;
    }
    OPENSSL_cleanse(&ci, sizeof ci);
    return rc;
}

/*
 * Read one direction's kernel state: version, cipher and the current record sequence.  The
 * kernel wants the exact struct length of the cipher (EINVAL otherwise): with the cipher
 * known (expect, a TLSK_KCIPHER_*) one call asks for that length, and a kernel holding
 * another cipher answers EINVAL; with expect 0, version and cipher are asked for first.
 * Returns 0 or -errno; key bytes read are wiped.
 */
static int read_kernel_state(int fd, int optname, int expect, int *version, int *cipher,
                             uint64_t *seq)
{
    union crypto_info ci;
    socklen_t len = sizeof ci.base;
    unsigned char *iv, *key, *salt, *p;
    size_t full;
    int rc = 0;

    if (!expect) {
        if (getsockopt(fd, TLSK_SOL_TLS, optname, &ci, &len) != 0) {
            return -errno;
        }
        expect = ci.base.cipher_type;
    }
    if ((full = layout(&ci, expect, &iv, &key, &salt, &p)) == 0) {
        return -EPROTO;
    }
    len = (socklen_t)full;
    if (getsockopt(fd, TLSK_SOL_TLS, optname, &ci, &len) != 0) {
        rc = -errno;
    } else {
        *version = ci.base.version;
        *cipher = ci.base.cipher_type;
        *seq = get_be64(p);
    }
    OPENSSL_cleanse(&ci, sizeof ci);
    return rc;
}

/* The kernel's current record sequence number of one direction (or soft.c's). */
int tlsk__kernel_seq(const struct tlsk_socket *s, bool tx, uint64_t *seq)
{
    int version, cipher;

    if (s->soft) {
        *seq = tlsk__soft_seq(s, tx);
        return 0;
    }
    return read_kernel_state(s->fd, tx ? TLSK_TLS_TX : TLSK_TLS_RX, 0, &version, &cipher, seq);
}

/* Read the installed state back: the kernel must report our version, cipher and sequence
 * (one getsockopt: the length asked for is our cipher's). */
static int verify_installed(int fd, int optname, const struct tlsk__keys *k)
{
    int version, cipher;
    uint64_t seq;
    int rc = read_kernel_state(fd, optname, k->kcipher, &version, &cipher, &seq);

    if (rc != 0) {
        return rc;
    }
    return version == k->version && cipher == k->kcipher && seq == k->seq ? 0 : -EPROTO;
}

/* The key of one TLS 1.3 direction, from the secret the bridge follows for it, into the
 * kernel at record sequence seq; which ("next" or "current") names it in a failure.  0 or
 * TLSK_EKEYUPDATE. */
static int install_secret(struct tlsk_socket *s, bool tx, uint64_t seq, const char *which)
{
    struct tlsk__keys k;
    int rc = tlsk__derive_keys_from(s, tx ? &s->otx_secret : &s->orx_secret, &k);

    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE, "cannot derive the %s %s key", which,
                                tx ? "transmit" : "receive");
    }
    k.seq = seq;
    rc = install(s, tx ? TLSK_TLS_TX : TLSK_TLS_RX, &k);
    OPENSSL_cleanse(&k, sizeof k);
    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE, "the kernel refused the %s %s key: %s", which,
                                tx ? "transmit" : "receive", strerror(-rc));
    }
    return 0;
}

int tlsk__kernel_rekey(struct tlsk_socket *s, bool tx)
{
    uint64_t seq;
    int rc;

    if (!tx && tlsk__kernel_seq(s, false, &seq) == 0) {
        /* Records under the old key still count in tlsk_socket_bytes_read(). */
        s->rx_recs_done += seq - s->rx_seq0;
    }
    /* Each new key starts its records at 0 (RFC 8446 5.3). */
    if ((rc = install_secret(s, tx, 0, "next")) != 0) {
        return rc;
    }
    if (tx) {
        s->ktx_recs = 0;
    } else {
        s->rx_seq0 = 0;
        s->krx_recs = 0;
        s->rx_reads = 0;
    }
    return 0;
}

/* The kernel paused receive after a record that began a KeyUpdate whose message goes on in
 * the next record (docs/KERNEL.md §7.8): that record is still under the current key, so the
 * current key goes in again at the next sequence number.  0 or TLSK_EKEYUPDATE. */
int tlsk__kernel_rx_resume(struct tlsk_socket *s)
{
    uint64_t seq;
    int rc = tlsk__kernel_seq(s, false, &seq);

    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE, "cannot read the receive sequence number: %s",
                                strerror(-rc));
    }
    return install_secret(s, false, seq, "current");
}

/* A direction stays in userspace, for this reason. */
static void keep(struct tlsk_direction *d, enum tlsk_reason reason, int err)
{
    d->mode = TLSK_MODE_USERSPACE;
    d->reason = reason;
    d->err = err;
}

/* An IPv4 or IPv6 socket, from the address tlsk_socket_new() took: no syscall.  A unix
 * socket, a pipe, a pair is not TCP whatever the kernel has. */
static bool is_inet(const struct tlsk_socket *s)
{
    return s->laddr_len > 0 &&
           (s->laddr.sa.sa_family == AF_INET || s->laddr.sa.sa_family == AF_INET6);
}

/* One syscall: only an AF_INET or AF_INET6 stream socket reports IPPROTO_TCP (UDP 17,
 * MPTCP 262), so the domain need not be asked too (bench/README.md, kernel). */
static bool is_tcp(int fd)
{
    int v = 0;
    socklen_t l = sizeof v;

    return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) == 0 && v == IPPROTO_TCP;
}

/* Receive: what keeps it in userspace once the cipher is known to the kernel. */
static enum tlsk_reason rx_reason(const struct tlsk_socket *s, int version,
                                  const struct tlsk_kernel_caps *caps)
{
    if (s->policy == TLSK_OFFLOAD_TX ||
        (version == TLS1_3_VERSION && (s->ctx->flags & TLSK_NO_RX_TLS13))) {
        return TLSK_REASON_POLICY;
    }
    if (SSL_has_pending(s->ssl)) {
        return TLSK_REASON_PENDING_DATA;
    }
    if (version == TLS1_3_VERSION && !caps->rekey && !(s->ctx->flags & TLSK_OFFLOAD_RX_TLS13) &&
        s->policy != TLSK_OFFLOAD_REQUIRE) {
        /* A peer's KeyUpdate would stop a kernel receive path that cannot take the next key
         * (before Linux 6.14, docs/KERNEL.md §7.5); where it can, the bridge re-keys. */
        return TLSK_REASON_NO_REKEY;
    }
    return TLSK_REASON_NONE;
}

/* 1. Validate, in order of precedence, with no side effect: each direction kernel, or
 * userspace with its reason (docs/KERNEL.md §10). */
static void decide(struct tlsk_socket *s, int version)
{
    const struct tlsk_kernel_caps *caps = NULL;
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    struct tlsk_direction *tx = &s->off.tx, *rx = &s->off.rx;
    int vi = version == TLS1_3_VERSION ? 1 : 0;
    int tcipher = -1, kcipher = 0, err = 0;
    size_t key_len = 0;
    enum tlsk_reason both = TLSK_REASON_NONE, r;

    *tx = *rx = (struct tlsk_direction){ .mode = TLSK_MODE_KERNEL, .reason = TLSK_REASON_NONE };
    if (s->policy == TLSK_OFFLOAD_OFF) {
        both = TLSK_REASON_POLICY;
    } else if (!is_inet(s)) {
        both = TLSK_REASON_NOT_TCP;
    } else if (!(caps = tlsk_kernel_probe())->ulp) {
        /* Before the protocol: where the kernel has no tls module at all, a connection pays
         * no syscall for the decision (docs/KERNEL.md §10.2). */
        both = TLSK_REASON_NO_ULP;
        err = caps->ulp_err;
    } else if (!is_tcp(s->fd)) {
        both = TLSK_REASON_NOT_TCP;
    } else if (version == TLS1_3_VERSION && !s->ctx->keylog) {
        /* The module came after the context (tlsk_kernel_load_tls): no secrets captured. */
        both = TLSK_REASON_NO_ULP;
        err = -ENOENT;
    } else if (version == TLS1_2_VERSION && (s->ctx->flags & TLSK_ALLOW_RENEGOTIATION)) {
        /* The kernel cannot change TLS 1.2 keys: renegotiation needs userspace. */
        both = TLSK_REASON_RENEGOTIATION;
    } else if (!c || (version != TLS1_2_VERSION && version != TLS1_3_VERSION) ||
               tlsk__cipher_of(c, &tcipher, &kcipher, &key_len) != 0) {
        both = TLSK_REASON_CIPHER;
    }
    s->kernel_rekey = caps && caps->rekey && version == TLS1_3_VERSION;
    if (both != TLSK_REASON_NONE) {
        keep(tx, both, err);
        keep(rx, both, err);
        return;
    }
    if (!caps->cipher[vi][tcipher][0]) {
        keep(tx, TLSK_REASON_CIPHER, 0);
    } else if (SSL_SESSION_get_max_fragment_length(SSL_get_session(s->ssl)) !=
                   TLSEXT_max_fragment_length_DISABLED &&
               !caps->tx_max_payload) {
        keep(tx, TLSK_REASON_FRAGMENT, 0);
    }
    if (!caps->cipher[vi][tcipher][1]) {
        keep(rx, TLSK_REASON_CIPHER, 0);
    } else if ((r = rx_reason(s, version, caps)) != TLSK_REASON_NONE) {
        keep(rx, r, 0);
    }
}

/*
 * Install and verify one direction with its keys from pair ([0] the client's write keys, [1]
 * the server's; NULL when they could not be derived); on success hand OpenSSL the memory BIO
 * for it (*mem is then NULL).  Returns 0; a positive errno when the kernel refused the keys (the
 * socket is unchanged, the direction stays in userspace); or a negative code when the
 * install succeeded but the read-back disagrees, which is past the point of no return.
 */
static int install_dir(struct tlsk_socket *s, bool tx, int version, BIO **mem,
                       const struct tlsk__keys pair[2])
{
    struct tlsk__keys k;
    int opt = tx ? TLSK_TLS_TX : TLSK_TLS_RX;
    /* Our write keys are the client's when we are the client; our read keys the other's. */
    int client_keys = tx ? !s->is_server : s->is_server;
    int rc;

    if (!pair) {
        return EPROTO;
    }
    k = pair[client_keys ? 0 : 1];
    /* TLS 1.3 application keys start at 0 after Finished; a TLS 1.2 epoch starts at the
     * ChangeCipherSpec (then NextProtocol, if NPN, and Finished).  Counted, never assumed. */
    if (version == TLS1_3_VERSION) {
        k.seq = tx ? s->tx_after_fin : s->rx_after_fin;
    } else {
        k.seq = tx ? s->tx_after_ccs : s->rx_after_ccs;
    }
    rc = install(s, opt, &k);
    if (rc != 0) {
        OPENSSL_cleanse(&k, sizeof k);
        return -rc;
    }
    rc = s->soft ? 0 : verify_installed(s->fd, opt, &k);
    uint64_t seq = k.seq;
    OPENSSL_cleanse(&k, sizeof k);
    if (tx) {
        s->tx_kernel = true;
    } else {
        s->rx_kernel = true;
    }
    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EINTERNAL, "kernel %s state does not match after install",
                                tx ? "TX" : "RX");
    }
    if (tx) {
        s->ossl_write_seq = seq;
        SSL_set0_wbio(s->ssl, *mem);
    } else {
        s->ossl_read_seq = seq;
        s->rx_seq0 = seq;
        SSL_set0_rbio(s->ssl, *mem);
    }
    *mem = NULL;
    return 0;
}

/* Install one wanted direction; a refusal by the kernel keeps it in userspace.  0, or a
 * negative code past the point of no return. */
static int install_or_keep(struct tlsk_socket *s, bool tx, int version, BIO **mem,
                           const struct tlsk__keys pair[2])
{
    struct tlsk_direction *d = tx ? &s->off.tx : &s->off.rx;
    int rc = install_dir(s, tx, version, mem, pair);

    if (rc > 0) {
        keep(d, rc == ENOENT || rc == EINVAL ? TLSK_REASON_CIPHER : TLSK_REASON_INSTALL, -rc);
        rc = 0;
    }
    return rc;
}

/* 2. Act: attach the ULP, then install each wanted direction.  Attaching the ULP alone is
 * harmless: a socket whose installs fail stays a plain, usable TCP socket (docs/KERNEL.md
 * §2.2). */
static int act(struct tlsk_socket *s, int version)
{
    struct tlsk_direction *tx = &s->off.tx, *rx = &s->off.rx;
    bool want_tx = tx->mode == TLSK_MODE_KERNEL, want_rx = rx->mode == TLSK_MODE_KERNEL;
    BIO *wmem = want_tx ? BIO_new(BIO_s_mem()) : NULL;
    BIO *rmem = want_rx ? BIO_new(BIO_s_mem()) : NULL;
    /* The client's and the server's write keys: those the wanted directions use. */
    bool need_client = (want_tx && !s->is_server) || (want_rx && s->is_server);
    bool need_server = (want_tx && s->is_server) || (want_rx && !s->is_server);
    struct tlsk__keys pair[2];
    bool have_pair;
    int rc = 0;

    if ((want_tx && !wmem) || (want_rx && !rmem)) {
        rc = tlsk__set_detail(s, TLSK_ENOMEM, "out of memory");
        goto out;
    }
    if (setsockopt(s->fd, TLSK_SOL_TCP, TLSK_TCP_ULP, "tls", sizeof "tls") != 0 &&
        errno != EEXIST) {
        /* The probe found the ULP, so this socket itself was refused: ENOTCONN when the
         * peer's FIN already arrived (tls_init wants an established socket). */
        int e = -errno;
        if (want_tx) {
            keep(tx, TLSK_REASON_INSTALL, e);
        }
        if (want_rx) {
            keep(rx, TLSK_REASON_INSTALL, e);
        }
        if (s->policy == TLSK_OFFLOAD_REQUIRE) {
            rc = tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but TCP_ULP failed: %s",
                                  strerror(-e));
        }
        goto out;
    }
    /* One derivation for both directions (TLS 1.2: one key block). */
    have_pair = tlsk__derive_key_pair(s, need_client ? &pair[0] : NULL,
                                      need_server ? &pair[1] : NULL) == 0;
    if (want_tx && (rc = install_or_keep(s, true, version, &wmem, have_pair ? pair : NULL)) != 0) {
        goto out;
    }
    if (want_rx && s->policy == TLSK_OFFLOAD_REQUIRE && !s->tx_kernel) {
        keep(rx, TLSK_REASON_INSTALL, 0);
    } else if (want_rx) {
        rc = install_or_keep(s, false, version, &rmem, have_pair ? pair : NULL);
    }
out:
    OPENSSL_cleanse(pair, sizeof pair);
    BIO_free(wmem);
    BIO_free(rmem);
    return rc;
}

/* A reason that is the kernel's alone: tlsk's record layer could carry the direction. */
static bool kernel_only(enum tlsk_reason r)
{
    return r == TLSK_REASON_NO_ULP || r == TLSK_REASON_CIPHER || r == TLSK_REASON_NOT_TCP;
}

/* Where the kernel takes neither direction of a lean server connection, tlsk's own record
 * layer may take both (soft.c, TLSK_LEAN_USERSPACE; docs/KERNEL.md §16): not for what the
 * kernel path would refuse anyway (renegotiation, a max fragment length), nor for a cipher
 * soft.c does not have.  Records OpenSSL has already read are the caller's concern: they
 * keep it from taking the connection now, not at its first wait (idle.c). */
static bool soft_wanted(const struct tlsk_socket *s, int version)
{
    return (s->flags & TLSK_SOCKET_LEAN) && (s->ctx->flags & TLSK_LEAN_USERSPACE) &&
           s->is_server && !s->is_pair && s->fd >= 0 && s->policy != TLSK_OFFLOAD_OFF &&
           s->off.tx.mode != TLSK_MODE_KERNEL && s->off.rx.mode != TLSK_MODE_KERNEL &&
           kernel_only(s->off.tx.reason) && kernel_only(s->off.rx.reason) &&
           (version == TLS1_2_VERSION || (version == TLS1_3_VERSION && s->ctx->keylog)) &&
           !(s->ctx->flags & TLSK_ALLOW_RENEGOTIATION) &&
           tlsk__soft_cipher(SSL_get_current_cipher(s->ssl)) &&
           SSL_SESSION_get_max_fragment_length(SSL_get_session(s->ssl)) ==
               TLSEXT_max_fragment_length_DISABLED;
}

/* Both directions to soft.c, as act() gives them to the kernel.  0 or the failure. */
static int soft_act(struct tlsk_socket *s, int version)
{
    BIO *wmem = BIO_new(BIO_s_mem()), *rmem = BIO_new(BIO_s_mem());
    struct tlsk__keys pair[2];
    int rc = TLSK_ENOMEM;

    memset(pair, 0, sizeof pair);
    if (wmem && rmem && tlsk__soft_new(s) == 0 &&
        tlsk__derive_key_pair(s, &pair[0], &pair[1]) == 0 &&
        install_dir(s, true, version, &wmem, pair) == 0 &&
        (!s->hs_rbuf || tlsk__soft_take(s, SSL_get_rbio(s->ssl)) == 0) &&
        install_dir(s, false, version, &rmem, pair) == 0) {
        s->hs_rbuf = false; /* (freed with OpenSSL's read BIO) */
        s->kernel_rekey = version == TLS1_3_VERSION;
        rc = 0;
    } else {
        rc = tlsk__set_detail(s, TLSK_ENOMEM, "tlsk's record layer could not take the keys");
    }
    OPENSSL_cleanse(pair, sizeof pair);
    BIO_free(wmem);
    BIO_free(rmem);
    return rc;
}

/* The TLS 1.3 secrets captured for an install that will not come. */
static void wipe_secrets(struct tlsk_socket *s)
{
    OPENSSL_cleanse(&s->otx_secret, sizeof s->otx_secret);
    OPENSSL_cleanse(&s->orx_secret, sizeof s->orx_secret);
}

/* The connection no longer waits for soft.c: OpenSSL's writes need no watching. */
static void unwatch(struct tlsk_socket *s)
{
    s->soft_later = false;
    BIO_set_callback_ex(s->sock_bio, NULL);
}

int tlsk__offload_soft(struct tlsk_socket *s)
{
    unwatch(s);
    return soft_act(s, SSL_version(s->ssl));
}

void tlsk__offload_soft_cancel(struct tlsk_socket *s)
{
    unwatch(s);
    wipe_secrets(s);
}

/* OpenSSL's writes to the socket while a connection waits for soft.c (idle.c): whether the
 * last one was cut short, leaving part of a record with OpenSSL (BIO_set_callback_ex(3)). */
static long wtrack(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                   size_t *processed)
{
    (void)argp;
    (void)argi;
    (void)argl;
    if (oper == (BIO_CB_WRITE | BIO_CB_RETURN)) {
        struct tlsk_socket *s = (struct tlsk_socket *)BIO_get_callback_arg(b);
        s->wshort = ret <= 0 || !processed || *processed < len;
    }
    return ret;
}

int tlsk__offload(struct tlsk_socket *s)
{
    struct tlsk_direction *tx = &s->off.tx, *rx = &s->off.rx;
    int version = SSL_version(s->ssl);
    int rc;

    decide(s, version);
    if (s->policy == TLSK_OFFLOAD_REQUIRE &&
        (tx->mode != TLSK_MODE_KERNEL || rx->mode != TLSK_MODE_KERNEL)) {
        bool t = tx->mode != TLSK_MODE_KERNEL;
        return tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but %s stays in userspace: %s",
                                t ? "transmit" : "receive",
                                tlsk_reason_text(t ? tx->reason : rx->reason));
    }
    if (tx->mode == TLSK_MODE_KERNEL || rx->mode == TLSK_MODE_KERNEL) {
        if ((rc = act(s, version)) != 0) {
            return rc;
        }
    } else if (soft_wanted(s, version) && (s->flags & TLSK_SOCKET_LEAN_IDLE)) {
        /* soft.c takes it at its first wait (idle.c, docs/KERNEL.md §16.1); until then
         * OpenSSL carries it, and the socket BIO's callback tells idle.c whether OpenSSL
         * holds part of a record it wrote. */
        s->soft_later = true;
        BIO_set_callback_arg(s->sock_bio, (char *)s);
        BIO_set_callback_ex(s->sock_bio, wtrack);
    } else if (soft_wanted(s, version) && !SSL_has_pending(s->ssl) &&
               (rc = soft_act(s, version)) != 0) {
        return rc;
    }

    /* The handshake's read buffer (socket.c), where soft.c did not take the connection: once
     * empty, OpenSSL reads the socket itself again, with read-ahead. */
    if (s->hs_rbuf && BIO_ctrl_pending(SSL_get_rbio(s->ssl)) == 0) {
        BIO_up_ref(s->sock_bio);
        SSL_set0_rbio(s->ssl, s->sock_bio);
        SSL_set_read_ahead(s->ssl, 1);
        s->hs_rbuf = false;
    }

    /* 3. Bookkeeping only. */
    if (s->policy == TLSK_OFFLOAD_REQUIRE && (!s->tx_kernel || !s->rx_kernel)) {
        return tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but the kernel refused the %s keys",
                                !s->tx_kernel ? "transmit" : "receive");
    }
    if (s->tx_kernel || s->rx_kernel) {
        /* Neither side may renegotiate once a direction is in the kernel. */
        SSL_set_options(s->ssl, SSL_OP_NO_RENEGOTIATION);
    }
    /* TLS 1.2 secrets are re-derived from the session when needed; TLS 1.3 secrets are kept
     * only for a direction the bridge may have to speak for, or soft.c may yet take. */
    if (!s->tx_kernel && !s->rx_kernel && !s->soft_later) {
        wipe_secrets(s);
    }
    return 0;
}

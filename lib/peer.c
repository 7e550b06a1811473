/* peer.c - connection information: version, cipher, session, verification result, server
 * name, ALPN/NPN, byte counts, peer certificates (cert.c builds them), the process-wide cipher
 * list, and the socket's addresses. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"

/* ---------------------------------------------------------------------------------------- */
/* The negotiated connection                                                                */

/* SSL_get_version()'s name, also for a lean socket (lean.c), whose versions are 1.2 and 1.3. */
static const char *version_name(const struct tlsk_socket *s)
{
    if (s->ssl) {
        return SSL_get_version(s->ssl);
    }
    return tlsk__version(s) == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
}

TLSK_PUBLIC const char *tlsk_socket_version(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    return version_name(s);
}

TLSK_PUBLIC const char *tlsk_socket_cipher(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return NULL;
    }
    return SSL_CIPHER_get_name(tlsk__cipher(s));
}

TLSK_PUBLIC int tlsk_socket_version_number(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return 0;
    }
    return tlsk__version(s);
}

TLSK_PUBLIC int tlsk_socket_session_reused(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN) {
        return 0;
    }
    return s->lean ? s->lean->reused : SSL_session_reused(s->ssl);
}

TLSK_PUBLIC ssize_t tlsk_socket_session(const struct tlsk_socket *s, void *buf, size_t len)
{
    SSL_SESSION *sess;
    unsigned char *p;
    int need;

    if (!s) {
        return TLSK_ECONFIG;
    }
    if (s->lean) {
        return TLSK_ESTATE; /* freed with OpenSSL's state (TLSK_SOCKET_LEAN) */
    }
    sess = SSL_get_session(s->ssl);
    if (!sess || !SSL_SESSION_is_resumable(sess)) {
        return -ENOENT;
    }
    need = i2d_SSL_SESSION(sess, NULL);
    if (need <= 0) {
        return TLSK_EINTERNAL;
    }
    if (!buf && len == 0) {
        return need;
    }
    if (!buf || len < (size_t)need) {
        return -ENOBUFS;
    }
    p = buf;
    return i2d_SSL_SESSION(sess, &p);
}

TLSK_PUBLIC uint64_t tlsk_socket_bytes_written(const struct tlsk_socket *s)
{
    return s ? s->bytes_written : 0;
}

TLSK_PUBLIC uint64_t tlsk_socket_bytes_read(const struct tlsk_socket *s)
{
    uint64_t seq;

    if (!s) {
        return 0;
    }
    if (s->rx_kernel && s->fd >= 0 && tlsk__kernel_seq(s, false, &seq) == 0) {
        return s->bytes_read + (s->rx_recs_done + seq - s->rx_seq0) * tlsk__record_overhead(s);
    }
    return s->bytes_read;
}

static const struct {
    int code;
    const char *name;
} verify_names[] = {
    { X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "UNABLE_TO_GET_ISSUER_CERT" },
    { X509_V_ERR_UNABLE_TO_GET_CRL, "UNABLE_TO_GET_CRL" },
    { X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE, "UNABLE_TO_DECRYPT_CERT_SIGNATURE" },
    { X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE, "UNABLE_TO_DECRYPT_CRL_SIGNATURE" },
    { X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY, "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY" },
    { X509_V_ERR_CERT_SIGNATURE_FAILURE, "CERT_SIGNATURE_FAILURE" },
    { X509_V_ERR_CRL_SIGNATURE_FAILURE, "CRL_SIGNATURE_FAILURE" },
    { X509_V_ERR_CERT_NOT_YET_VALID, "CERT_NOT_YET_VALID" },
    { X509_V_ERR_CERT_HAS_EXPIRED, "CERT_HAS_EXPIRED" },
    { X509_V_ERR_CRL_NOT_YET_VALID, "CRL_NOT_YET_VALID" },
    { X509_V_ERR_CRL_HAS_EXPIRED, "CRL_HAS_EXPIRED" },
    { X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "DEPTH_ZERO_SELF_SIGNED_CERT" },
    { X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "SELF_SIGNED_CERT_IN_CHAIN" },
    { X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" },
    { X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, "UNABLE_TO_VERIFY_LEAF_SIGNATURE" },
    { X509_V_ERR_CERT_CHAIN_TOO_LONG, "CERT_CHAIN_TOO_LONG" },
    { X509_V_ERR_CERT_REVOKED, "CERT_REVOKED" },
    { X509_V_ERR_INVALID_CA, "INVALID_CA" },
    { X509_V_ERR_PATH_LENGTH_EXCEEDED, "PATH_LENGTH_EXCEEDED" },
    { X509_V_ERR_INVALID_PURPOSE, "INVALID_PURPOSE" },
    { X509_V_ERR_CERT_UNTRUSTED, "CERT_UNTRUSTED" },
    { X509_V_ERR_CERT_REJECTED, "CERT_REJECTED" },
    { X509_V_ERR_HOSTNAME_MISMATCH, "HOSTNAME_MISMATCH" },
    { X509_V_ERR_EMAIL_MISMATCH, "EMAIL_MISMATCH" },
    { X509_V_ERR_IP_ADDRESS_MISMATCH, "IP_ADDRESS_MISMATCH" },
    { X509_V_ERR_INVALID_CALL, "INVALID_CALL" },
    { X509_V_ERR_STORE_LOOKUP, "STORE_LOOKUP" },
    { X509_V_ERR_CA_KEY_TOO_SMALL, "CA_KEY_TOO_SMALL" },
    { X509_V_ERR_EE_KEY_TOO_SMALL, "EE_KEY_TOO_SMALL" },
    { X509_V_ERR_CA_MD_TOO_WEAK, "CA_MD_TOO_WEAK" },
};

static const X509 *peer_cert(const struct tlsk_socket *s)
{
    return s->lean ? s->lean->peer : SSL_get0_peer_certificate(s->ssl);
}

static long verify_result(const struct tlsk_socket *s)
{
    return s->lean ? s->lean->verify_result : SSL_get_verify_result(s->ssl);
}

static bool asked_cert(const struct tlsk_socket *s)
{
    return s->lean ? s->lean->asked_cert : (SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER) != 0;
}

TLSK_PUBLIC int tlsk_socket_authorized(const struct tlsk_socket *s)
{
    if (!s || s->state != TLSK__OPEN || !peer_cert(s)) {
        return 0;
    }
    return verify_result(s) == X509_V_OK;
}

TLSK_PUBLIC const char *tlsk_socket_authorization_error(const struct tlsk_socket *s)
{
    long v;

    if (!s || s->state == TLSK__HANDSHAKE) {
        return NULL;
    }
    if (s->state == TLSK__FAILED && verify_result(s) == X509_V_OK) {
        return NULL; /* failed for another reason */
    }
    /* After a failed handshake the verification's code stays readable, so a client can tell
     * DEPTH_ZERO_SELF_SIGNED_CERT from HOSTNAME_MISMATCH. */
    if (s->state == TLSK__OPEN && !peer_cert(s)) {
        /* A server that asked for no certificate has nothing to report (row 1 of the
         * verify table); one that asked and got none says so (A4). */
        if (s->is_server && !asked_cert(s)) {
            return NULL;
        }
        return "NO_PEER_CERTIFICATE";
    }
    v = verify_result(s);
    if (v == X509_V_OK) {
        return NULL;
    }
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(verify_names); i++) {
        if (verify_names[i].code == v) {
            return verify_names[i].name;
        }
    }
    return "UNSPECIFIED";
}

TLSK_PUBLIC const char *tlsk_socket_servername(const struct tlsk_socket *s)
{
    return s ? s->servername : NULL;
}

/* A negotiated protocol name (1 to 255 bytes) as a string of its own, or NULL for none. */
static int proto_copy(char **out, const unsigned char *p, unsigned n)
{
    free(*out);
    *out = NULL;
    if (!p || n == 0) {
        return 0;
    }
    if (!(*out = malloc(n + 1))) {
        return TLSK_ENOMEM;
    }
    memcpy(*out, p, n);
    (*out)[n] = '\0';
    return 0;
}

/* What the handshake negotiated, copied into the socket: borrowed until it is freed.  Only
 * what was negotiated takes memory (most connections have one short ALPN name or none). */
int tlsk__peer_opened(struct tlsk_socket *s)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    int rc;

    SSL_get0_alpn_selected(s->ssl, &p, &n);
    if ((rc = proto_copy(&s->alpn, p, n)) != 0) {
        return tlsk__set_detail(s, rc, "out of memory");
    }
    p = NULL, n = 0;
    SSL_get0_next_proto_negotiated(s->ssl, &p, &n);
    if ((rc = proto_copy(&s->npn, p, n)) != 0) {
        return tlsk__set_detail(s, rc, "out of memory");
    }
    return 0;
}

TLSK_PUBLIC const char *tlsk_socket_alpn_protocol(const struct tlsk_socket *s)
{
    return s && s->state == TLSK__OPEN ? s->alpn : NULL;
}

TLSK_PUBLIC const char *tlsk_socket_npn_protocol(const struct tlsk_socket *s)
{
    return s && s->state == TLSK__OPEN ? s->npn : NULL;
}

TLSK_PUBLIC int tlsk_socket_peer_certificate(const struct tlsk_socket *s, size_t index,
                                             struct tlsk_cert_info **out)
{
    const X509 *x;

    if (!s || !out) {
        return TLSK_ECONFIG;
    }
    if (s->state != TLSK__OPEN) {
        return TLSK_ESTATE;
    }
    /* The session keeps the peer's certificate, so this also answers on resumed connections. */
    x = peer_cert(s);
    if (!x) {
        return -ENOENT;
    }
    if (index > 0) {
        STACK_OF(X509) *chain = s->lean ? s->lean->chain : SSL_get_peer_cert_chain(s->ssl);
        int n = chain ? sk_X509_num(chain) : 0, skip = 0;

        /* A client's chain starts with the leaf, a server's does not: index 1 is the first
         * certificate after the leaf on both sides. */
        if (!s->is_server && n > 0 && X509_cmp(sk_X509_value(chain, 0), x) == 0) {
            skip = 1;
        }
        if (index > (size_t)(n - skip)) {
            return -ENOENT;
        }
        x = sk_X509_value(chain, (int)(index - 1) + skip);
    }
    return tlsk__cert_info_new(x, out);
}

/* ---------------------------------------------------------------------------------------- */
/* Ciphers                                                                                  */

TLSK_PUBLIC int tlsk_socket_get_cipher(const struct tlsk_socket *s, struct tlsk_cipher_info *out)
{
    const SSL_CIPHER *c;

    if (!s || !out) {
        return TLSK_ECONFIG;
    }
    if (s->state != TLSK__OPEN || !(c = tlsk__cipher(s))) {
        return TLSK_ESTATE;
    }
    out->name = SSL_CIPHER_get_name(c);
    out->standard_name = SSL_CIPHER_standard_name(c);
    out->version = version_name(s);
    out->bits = SSL_CIPHER_get_bits(c, NULL);
    return 0;
}

/* Node's getCiphers() minus everything broken; OpenSSL's default security level then drops
 * whatever else the system configuration forbids. */
static const char cipher_list_all[] = "ALL:!aNULL:!eNULL:!RC4:!DES:!3DES:!MD5:!EXP:!PSK:!SRP:"
                                      "!ADH:!AECDH";
static const char tls13_suites[] =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

/* Big enough for every suite OpenSSL 3 has; extra ones are dropped rather than overflow. */
#define MAX_CIPHERS 512

static const char *cipher_names[MAX_CIPHERS];
static size_t cipher_count;
static pthread_once_t cipher_once = PTHREAD_ONCE_INIT;

static bool cipher_name_banned(const char *name)
{
    static const char *const banned[] = { "RC4", "DES", "MD5", "NULL", "EXP",
                                          "ADH", "AECDH", "PSK", "SRP" };

    for (size_t i = 0; i < TLSK_ARRAY_SIZE(banned); i++) {
        if (strstr(name, banned[i])) {
            return true;
        }
    }
    return false;
}

static void cipher_add(const char *name)
{
    if (!name || cipher_name_banned(name) || cipher_count == MAX_CIPHERS) {
        return;
    }
    for (size_t i = 0; i < cipher_count; i++) {
        if (strcmp(cipher_names[i], name) == 0) {
            return;
        }
    }
    /* SSL_CIPHER names live in libssl's static tables. */
    cipher_names[cipher_count++] = name;
}

static void ciphers_build(void)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_method());
    SSL *ssl = NULL;
    STACK_OF(SSL_CIPHER) *sk = NULL;

    if (!sc || SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(sc, cipher_list_all) != 1 ||
        SSL_CTX_set_ciphersuites(sc, tls13_suites) != 1 || !(ssl = SSL_new(sc))) {
        goto out;
    }
    /* Supported = enabled by the list and allowed by the protocol range and security level. */
    SSL_set_connect_state(ssl);
    sk = SSL_get1_supported_ciphers(ssl);
    for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++) {
        cipher_add(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i)));
    }
out:
    ERR_clear_error();
    sk_SSL_CIPHER_free(sk);
    SSL_free(ssl);
    SSL_CTX_free(sc);
}

TLSK_PUBLIC size_t tlsk_get_ciphers(const char **out, size_t cap)
{
    pthread_once(&cipher_once, ciphers_build);
    for (size_t i = 0; out && i < cap && i < cipher_count; i++) {
        out[i] = cipher_names[i];
    }
    return cipher_count;
}

/* ---------------------------------------------------------------------------------------- */
/* Addresses                                                                                */

TLSK_PUBLIC int tlsk_socket_address(const struct tlsk_socket *s, int remote, char *host,
                                    size_t hostlen, int *port)
{
    const union tlsk__addr *a;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[NI_MAXHOST], serv[NI_MAXSERV];
    int rc;

    if (!s) {
        return -EINVAL;
    }
    /* Captured when the socket was wrapped (AD-1): still readable after a reset. */
    a = remote ? &s->raddr : &s->laddr;
    sl = remote ? s->raddr_len : s->laddr_len;
    if (sl == 0) {
        return -ENOTCONN;
    }
    if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6) {
        /* Only the family is kept of other addresses; glibc's getnameinfo would name a unix
         * socket "localhost" with its path as the service, which is no host and port. */
        return -EAFNOSUPPORT;
    }
    memcpy(&ss, a, sl);
    rc = 0;
    rc = getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, serv, sizeof serv,
                     NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0) {
        if (rc == EAI_SYSTEM) {
            return -errno;
        }
        return rc == EAI_FAMILY ? -EAFNOSUPPORT : rc == EAI_MEMORY ? -ENOMEM : -EINVAL;
    }
    if (host) {
        size_t n = strlen(h);
        if (n >= hostlen) {
            return -ENOSPC;
        }
        memcpy(host, h, n + 1);
    }
    if (port) {
        *port = atoi(serv);
    }
    return 0;
}

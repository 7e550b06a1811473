/* errors.c - one table for error codes and offload reasons. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"

static const struct {
    int code;
    const char *name;
    const char *text;
} errtab[] = {
    { TLSK_ETRUNCATED, "TLSK_ETRUNCATED", "connection closed without close_notify (truncation)" },
    { TLSK_EHANDSHAKE, "TLSK_EHANDSHAKE", "TLS handshake failed" },
    { TLSK_EVERIFY, "TLSK_EVERIFY", "peer certificate verification failed" },
    { TLSK_EPROTO, "TLSK_EPROTO", "peer violated the TLS protocol or sent non-TLS data" },
    { TLSK_ECONFIG, "TLSK_ECONFIG", "invalid option" },
    { TLSK_ECERT, "TLSK_ECERT", "certificate could not be loaded" },
    { TLSK_EKEY, "TLSK_EKEY", "private key could not be loaded or does not match the certificate" },
    { TLSK_EPASSPHRASE, "TLSK_EPASSPHRASE", "passphrase missing or wrong (bad decrypt)" },
    { TLSK_ENOKTLS, "TLSK_ENOKTLS", "kernel TLS required but the kernel cannot take this connection" },
    { TLSK_ECONTROL, "TLSK_ECONTROL", "unsupported TLS control record on an offloaded connection" },
    { TLSK_EBADRECORD, "TLSK_EBADRECORD", "record failed authentication (bad record MAC)" },
    { TLSK_ESTATE, "TLSK_ESTATE", "operation not valid in the current state" },
    { TLSK_ECLOSED, "TLSK_ECLOSED", "connection already closed or failed" },
    { TLSK_EINTERNAL, "TLSK_EINTERNAL", "internal error in OpenSSL or the kernel interface" },
    { TLSK_EKEYUPDATE, "TLSK_EKEYUPDATE", "TLS 1.3 KeyUpdate that this kernel cannot follow" },
    { TLSK_ENOMEM, "TLSK_ENOMEM", "out of memory" },
    { TLSK_EUNSUPPORTED_PROTOCOL, "TLSK_EUNSUPPORTED_PROTOCOL",
      "protocol version below TLS 1.2 requested (UNSUPPORTED_PROTOCOL)" },
    { TLSK_ENO_APPLICATION_PROTOCOL, "TLSK_ENO_APPLICATION_PROTOCOL",
      "no ALPN protocol in common (NO_APPLICATION_PROTOCOL)" },
    { TLSK_EINVALID_SNI_CONTEXT, "TLSK_EINVALID_SNI_CONTEXT",
      "the SNI callback chose no usable context (INVALID_SNI_CONTEXT)" },
    { TLSK_ESNI, "TLSK_ESNI", "the SNI callback failed the handshake" },
    { TLSK_ERENEG_LIMIT, "TLSK_ERENEG_LIMIT",
      "TLS session renegotiation attack detected (RENEG_LIMIT)" },
    { TLSK_ERENEG_UNAVAILABLE, "TLSK_ERENEG_UNAVAILABLE",
      "renegotiation unavailable on this connection (RENEG_UNAVAILABLE)" },
    { TLSK_EKEY_LIMIT, "TLSK_EKEY_LIMIT", "record limit of the key reached and re-keying is "
                                          "impossible" },
    { TLSK_ESESSION, "TLSK_ESESSION", "the session store's lookup failed" },
};

static const char *const alert_names[256] = {
    [0] = "close_notify",
    [10] = "unexpected_message",
    [20] = "bad_record_mac",
    [22] = "record_overflow",
    [40] = "handshake_failure",
    [42] = "bad_certificate",
    [43] = "unsupported_certificate",
    [44] = "certificate_revoked",
    [45] = "certificate_expired",
    [46] = "certificate_unknown",
    [47] = "illegal_parameter",
    [48] = "unknown_ca",
    [49] = "access_denied",
    [50] = "decode_error",
    [51] = "decrypt_error",
    [70] = "protocol_version",
    [71] = "insufficient_security",
    [80] = "internal_error",
    [86] = "inappropriate_fallback",
    [90] = "user_canceled",
    [100] = "no_renegotiation",
    [109] = "missing_extension",
    [110] = "unsupported_extension",
    [112] = "unrecognized_name",
    [113] = "bad_certificate_status_response",
    [115] = "unknown_psk_identity",
    [116] = "certificate_required",
    [120] = "no_application_protocol",
};

TLSK_PUBLIC const char *tlsk_strerror(int err)
{
    static _Thread_local char buf[96];

    if (err >= 0) {
        return "success";
    }
    if (TLSK_IS_ALERT(err)) {
        int n = TLSK_ALERT_NUMBER(err);
        snprintf(buf, sizeof buf, "peer sent fatal alert %d (%s)", n,
                 alert_names[n] ? alert_names[n] : "unknown");
        return buf;
    }
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(errtab); i++) {
        if (errtab[i].code == err) {
            return errtab[i].text;
        }
    }
    if (err > -4096) {
        return strerror(-err);
    }
    return "unknown error";
}

TLSK_PUBLIC const char *tlsk_err_name(int err)
{
    static _Thread_local char buf[32];

    if (err >= 0) {
        return "OK";
    }
    if (TLSK_IS_ALERT(err)) {
        snprintf(buf, sizeof buf, "ALERT_%d", TLSK_ALERT_NUMBER(err));
        return buf;
    }
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(errtab); i++) {
        if (errtab[i].code == err) {
            return errtab[i].name;
        }
    }
    if (err > -4096) {
        const char *n = strerrorname_np(-err);
        if (n) {
            return n;
        }
    }
    return "UNKNOWN";
}

static const struct {
    const char *name;
    const char *text;
} reasons[TLSK_REASON_LAST] = {
    [TLSK_REASON_NONE] = { "kernel", "the kernel handles this direction" },
    [TLSK_REASON_NO_ULP] = { "no_ulp", "the kernel has no usable tls module (TCP_ULP \"tls\" failed)" },
    [TLSK_REASON_CIPHER] = { "cipher", "the kernel does not support this TLS version and cipher" },
    [TLSK_REASON_PENDING_DATA] = { "pending_data",
                                   "OpenSSL had already buffered records past the handshake" },
    [TLSK_REASON_RENEGOTIATION] = { "renegotiation",
                                    "renegotiation is enabled, which the kernel cannot do" },
    [TLSK_REASON_NO_REKEY] = { "no_rekey",
                               "TLS 1.3 receive stays in userspace so that a peer's KeyUpdate "
                               "is followed (kernels before 6.14 cannot re-key; tlsk does not "
                               "drive the 6.14 re-key yet)" },
    [TLSK_REASON_POLICY] = { "policy", "the offload policy keeps this direction in userspace" },
    [TLSK_REASON_NOT_TCP] = { "not_tcp", "the transport is not a TCP socket" },
    [TLSK_REASON_FRAGMENT] = { "fragment",
                               "a maximum fragment length is in force and the kernel cannot "
                               "limit record size" },
    [TLSK_REASON_INSTALL] = { "install", "the kernel refused the keys" },
};

TLSK_PUBLIC const char *tlsk_reason_name(enum tlsk_reason r)
{
    if ((unsigned)r >= TLSK_REASON_LAST) {
        return "unknown";
    }
    return reasons[r].name;
}

TLSK_PUBLIC const char *tlsk_reason_text(enum tlsk_reason r)
{
    if ((unsigned)r >= TLSK_REASON_LAST) {
        return "unknown reason";
    }
    return reasons[r].text;
}

/* Append OpenSSL's queued error reasons (and clear the queue) to buf.  Returns the error that
 * classifies them: providers queue their own before the SSL library's (docs/OPENSSL.md §7),
 * so the first SSL-library one, else the first. */
unsigned long tlsk__append_ossl_errors(char *buf, size_t len)
{
    unsigned long e, key = 0, first = 0;
    size_t used = strlen(buf);

    while ((e = ERR_get_error()) != 0) {
        char one[200];
        ERR_error_string_n(e, one, sizeof one);
        if (used + 3 < len) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? ": " : "", one);
            if (n > 0) {
                used += (size_t)n;
                if (used >= len) {
                    used = len - 1;
                }
            }
        }
        first = first ? first : e;
        if (!key && ERR_GET_LIB(e) == ERR_LIB_SSL) {
            key = e;
        }
    }
    return key ? key : first;
}

/* The alert number an OpenSSL error code stands for (SSL_AD_REASON_OFFSET), or -1. */
int tlsk__alert_from_ossl_error(unsigned long e)
{
    int r;

    if (ERR_GET_LIB(e) != ERR_LIB_SSL) {
        return -1;
    }
    r = ERR_GET_REASON(e);
    if (r >= SSL_AD_REASON_OFFSET && r < SSL_AD_REASON_OFFSET + 256) {
        return r - SSL_AD_REASON_OFFSET;
    }
    return -1;
}

int tlsk__config_error(struct tlsk__detail *d, int code, const char *fmt, ...)
{
    va_list ap;

    if (d->buf && d->len) {
        va_start(ap, fmt);
        vsnprintf(d->buf, d->len, fmt, ap);
        va_end(ap);
        tlsk__append_ossl_errors(d->buf, d->len);
    }
    ERR_clear_error();
    return code;
}

int tlsk__set_detail(struct tlsk_socket *s, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->detail, sizeof s->detail, fmt, ap);
    va_end(ap);
    return code;
}

/* Mark the socket failed: every later call returns the same code. */
int tlsk__fail(struct tlsk_socket *s, int code)
{
    SSL_SESSION *sess = s->ssl && s->is_server ? SSL_get_session(s->ssl) : NULL;

    /* A failed connection's session must not resume (OpenSSL drops it when the SSL is freed
     * without shutdown, but an evented socket is freed only after its lingering close): drop
     * it from the cache now. */
    if (sess && s->ctx) {
        SSL_CTX_remove_session(s->ctx->ssl_ctx, sess);
    }
    s->state = TLSK__FAILED;
    s->fail_code = code;
    return code;
}

/* Map an OpenSSL failure (ret <= 0) to a tlsk code, filling the detail string. */
int tlsk__ossl_error(struct tlsk_socket *s, int ret, enum tlsk__op op)
{
    int err = SSL_get_error(s->ssl, ret);
    int e = errno;
    unsigned long key;
    int alert, rc;

    switch (err) {
    case SSL_ERROR_WANT_READ:
        s->want = POLLIN;
        ERR_clear_error();
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        s->want = POLLOUT;
        ERR_clear_error();
        return -EAGAIN;
    case SSL_ERROR_WANT_CLIENT_HELLO_CB:
        /* The SNI callback answers later: nothing to wait for on the fd. */
        s->want = 0;
        ERR_clear_error();
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        s->got_close_notify = true;
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (e == EAGAIN || e == EWOULDBLOCK) {
            if (op != TLSK__OP_HANDSHAKE) {
                s->want = op == TLSK__OP_WRITE ? POLLOUT : POLLIN;
            }
            return -EAGAIN;
        }
        if (op == TLSK__OP_HANDSHAKE && (e == 0 || e == ECONNRESET)) {
            return tlsk__set_detail(s, -ECONNRESET, "peer closed the connection during the handshake");
        }
        if (op == TLSK__OP_READ && (e == 0 || e == ECONNRESET)) {
            return tlsk__set_detail(s, TLSK_ETRUNCATED, "peer closed TCP without close_notify");
        }
        if (e == 0) {
            e = EPIPE; /* a write that found the connection gone */
        }
        return tlsk__set_detail(s, -e, "%s", strerror(e));
    default:
        break;
    }
    /* SSL_ERROR_SSL.  Providers queue their own errors before the SSL library's (for example
     * "cipher operation failed" before "bad record mac"): classify by the first SSL one. */
    s->detail[0] = '\0';
    key = tlsk__append_ossl_errors(s->detail, sizeof s->detail);
    if (op == TLSK__OP_HANDSHAKE && SSL_get_verify_result(s->ssl) != X509_V_OK &&
        ERR_GET_REASON(key) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(s->ssl);
        snprintf(s->detail, sizeof s->detail, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return TLSK_EVERIFY;
    }
    alert = tlsk__alert_from_ossl_error(key);
    if (alert >= 0) {
        return TLSK_EALERT(alert);
    }
    switch (ERR_GET_LIB(key) == ERR_LIB_SSL ? ERR_GET_REASON(key) : 0) {
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        rc = op == TLSK__OP_HANDSHAKE ? -ECONNRESET : op == TLSK__OP_READ ? TLSK_ETRUNCATED : -EPIPE;
        break;
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
    case SSL_R_DECRYPTION_FAILED:
        rc = TLSK_EBADRECORD;
        break;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        rc = TLSK_ENO_APPLICATION_PROTOCOL;
        break;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_BAD_PACKET_LENGTH:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_WRONG_SSL_VERSION:
        rc = TLSK_EPROTO;
        break;
    default:
        rc = op == TLSK__OP_HANDSHAKE ? TLSK_EHANDSHAKE : TLSK_EPROTO;
        break;
    }
    return rc;
}

/* Before a record I/O call SSL_get_error() must find the queue empty (docs/OPENSSL.md §7.1).
 * ERR_clear_error() clears all of the thread's slots each time; peeking first costs one look
 * when the queue is already empty, as it almost always is between records. */
void tlsk__err_reset(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

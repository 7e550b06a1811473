/* hostile.c - see hostile.h. */
#include "hostile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "kconst.h"

static long long hp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t unhex(const char *h, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && h[1] && n < cap) {
        unsigned v;
        if (sscanf(h, "%2x", &v) != 1) {
            break;
        }
        out[n++] = (unsigned char)v;
        h += 2;
    }
    return n;
}

/* The client's key log: the TLS 1.3 application traffic secrets, into the stand-in socket. */
static void keylog(const SSL *ssl, const char *line)
{
    struct hp_peer *p = SSL_get_app_data(ssl);
    const char *sp = strrchr(line, ' ');

    if (!p || !sp) {
        return;
    }
    /* The stand-in is a client: it writes with the client's secret, reads with the server's. */
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        p->ks->otx_secret.len = unhex(sp + 1, p->ks->otx_secret.b, sizeof p->ks->otx_secret.b);
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        p->ks->orx_secret.len = unhex(sp + 1, p->ks->orx_secret.b, sizeof p->ks->orx_secret.b);
    }
}

static int fail(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[160] = "";

    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    if (why) {
        snprintf(why, whylen, "%s%s%s", what, e ? ": " : "", buf);
    }
    ERR_clear_error();
    return -EPROTO;
}

int hp_connect(struct hp_peer *p, int port, int version, const char *suite, char *why,
               size_t whylen)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { .tv_sec = 10 };
    int one = 1;

    memset(p, 0, sizeof *p);
    p->fd = -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!(p->in = malloc(HP_IN_CAP)) || !(p->ks = calloc(1, sizeof *p->ks))) {
        return fail(why, whylen, "out of memory");
    }
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        return fail(why, whylen, "connect");
    }
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    p->ctx = SSL_CTX_new(TLS_client_method());
    if (!p->ctx) {
        return fail(why, whylen, "SSL_CTX_new");
    }
    SSL_CTX_set_min_proto_version(p->ctx, version);
    SSL_CTX_set_max_proto_version(p->ctx, version);
    if (version == TLS1_3_VERSION ? SSL_CTX_set_ciphersuites(p->ctx, suite) != 1
                                  : SSL_CTX_set_cipher_list(p->ctx, suite) != 1) {
        return fail(why, whylen, "cipher");
    }
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_keylog_callback(p->ctx, keylog);
    p->ssl = SSL_new(p->ctx);
    if (!p->ssl) {
        return fail(why, whylen, "SSL_new");
    }
    p->ks->ssl = p->ssl;
    SSL_set_app_data(p->ssl, p);
    SSL_set_fd(p->ssl, p->fd);
    if (SSL_connect(p->ssl) != 1) {
        return fail(why, whylen, "handshake");
    }
    p->version = SSL_version(p->ssl);
    setsockopt(p->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    if (tlsk__derive_keys(p->ks, 1, &p->wk) != 0 || tlsk__derive_keys(p->ks, 0, &p->rk) != 0) {
        return fail(why, whylen, "deriving the traffic keys");
    }
    /* TLS 1.2: each side's Finished was record 0 of the new epoch.  TLS 1.3: nothing sent
     * under the application keys yet (the server's tickets are still unread). */
    p->wseq = p->rseq = p->version == TLS1_2_VERSION ? 1 : 0;
    return 0;
}

void hp_free(struct hp_peer *p)
{
    if (p->ssl) {
        SSL_set_quiet_shutdown(p->ssl, 1);
        SSL_free(p->ssl);
    }
    SSL_CTX_free(p->ctx);
    if (p->fd >= 0) {
        close(p->fd);
    }
    if (p->ks) {
        OPENSSL_cleanse(p->ks, sizeof *p->ks);
        free(p->ks);
    }
    free(p->in);
    OPENSSL_cleanse(&p->wk, sizeof p->wk);
    OPENSSL_cleanse(&p->rk, sizeof p->rk);
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

static const EVP_CIPHER *evp_of(int tlsk_cipher)
{
    switch (tlsk_cipher) {
    case TLSK_CIPHER_AES_128_GCM:
        return EVP_aes_128_gcm();
    case TLSK_CIPHER_AES_256_GCM:
        return EVP_aes_256_gcm();
    case TLSK_CIPHER_CHACHA20_POLY1305:
        return EVP_chacha20_poly1305();
    default:
        return NULL;
    }
}

size_t hp_seal_raw(struct hp_peer *p, int outer, const void *inner, size_t inner_len,
                   unsigned char *out, size_t cap)
{
    const struct tlsk__keys *k = &p->wk;
    bool xor_nonce =
        p->version == TLS1_3_VERSION || k->tlsk_cipher == TLSK_CIPHER_CHACHA20_POLY1305;
    size_t ex = xor_nonce ? 0 : 8, body = ex + inner_len + TLSK_TAG_LEN;
    unsigned char nonce[12], aad[13], seq[8];
    EVP_CIPHER_CTX *cx;
    size_t aad_len;
    int n, ok;

    if (body > 0xffff || cap < 5 + body || !evp_of(k->tlsk_cipher)) {
        return 0;
    }
    for (int i = 0; i < 8; i++) {
        seq[i] = (unsigned char)(p->wseq >> (56 - 8 * i));
    }
    out[0] = (unsigned char)outer, out[1] = 3, out[2] = 3;
    out[3] = (unsigned char)(body >> 8), out[4] = (unsigned char)body;
    if (xor_nonce) {
        memcpy(nonce, k->iv, 12);
        for (int i = 0; i < 8; i++) {
            nonce[4 + i] ^= seq[i];
        }
    } else {
        memcpy(nonce, k->iv, 4);
        memcpy(nonce + 4, seq, 8);
        memcpy(out + 5, seq, 8); /* the explicit nonce: the sequence number, as tlsk sends */
    }
    if (p->version == TLS1_3_VERSION) {
        memcpy(aad, out, 5);
        aad_len = 5;
    } else {
        memcpy(aad, seq, 8);
        aad[8] = (unsigned char)outer, aad[9] = 3, aad[10] = 3;
        aad[11] = (unsigned char)(inner_len >> 8), aad[12] = (unsigned char)inner_len;
        aad_len = 13;
    }
    cx = EVP_CIPHER_CTX_new();
    ok = cx && EVP_EncryptInit_ex(cx, evp_of(k->tlsk_cipher), NULL, NULL, NULL) == 1 &&
         EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
         EVP_EncryptInit_ex(cx, NULL, NULL, k->key, nonce) == 1 &&
         EVP_EncryptUpdate(cx, NULL, &n, aad, (int)aad_len) == 1 &&
         EVP_EncryptUpdate(cx, out + 5 + ex, &n, inner, (int)inner_len) == 1 &&
         EVP_EncryptFinal_ex(cx, out + 5 + ex + n, &n) == 1 &&
         EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_GET_TAG, TLSK_TAG_LEN, out + 5 + ex + inner_len) ==
             1;
    EVP_CIPHER_CTX_free(cx);
    ERR_clear_error();
    if (!ok) {
        return 0;
    }
    p->wseq++;
    return 5 + body;
}

size_t hp_seal(struct hp_peer *p, int type, const void *pt, size_t len, unsigned char *out,
               size_t cap)
{
    unsigned char *inner;
    size_t n;

    if (p->version != TLS1_3_VERSION) {
        return hp_seal_raw(p, type, pt, len, out, cap);
    }
    if (!(inner = malloc(len + 1))) {
        return 0;
    }
    memcpy(inner, pt, len);
    inner[len] = (unsigned char)type;
    n = hp_seal_raw(p, TLSK_REC_APPDATA, inner, len + 1, out, cap);
    free(inner);
    return n;
}

int hp_send_raw(struct hp_peer *p, const void *b, size_t len)
{
    const unsigned char *c = b;

    while (len > 0) {
        ssize_t n = send(p->fd, c, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -errno;
        }
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

int hp_send_record(struct hp_peer *p, int type, const void *pt, size_t len)
{
    static _Thread_local unsigned char rec[5 + 0xffff];
    size_t n = hp_seal(p, type, pt, len, rec, sizeof rec);

    return n ? hp_send_raw(p, rec, n) : -EINVAL;
}

int hp_next_write_key(struct hp_peer *p)
{
    if (tlsk__tls13_next_secret(p->ks, &p->ks->otx_secret) != 0 ||
        tlsk__derive_keys(p->ks, 1, &p->wk) != 0) {
        return -EPROTO;
    }
    p->wseq = 0;
    return 0;
}

void hp_next(struct hp_peer *p, struct hp_event *ev, int timeout_ms)
{
    long long end = hp_now_ms() + timeout_ms;

    memset(ev, 0, offsetof(struct hp_event, pt));
    ev->len = 0;
    for (;;) {
        if (p->have >= 5) {
            size_t rl = 5 + (size_t)(p->in[3] << 8 | p->in[4]);
            if (p->have >= rl) {
                int type = 0;
                if (tlsk__record_open(&p->rk, p->rseq, p->in, rl, &type, ev->pt, sizeof ev->pt,
                                      &ev->len) != 0) {
                    ev->kind = HP_GARBAGE;
                    ev->len = 0;
                    p->have = 0;
                    return;
                }
                p->rseq++;
                memmove(p->in, p->in + rl, p->have - rl);
                p->have -= rl;
                ev->kind = HP_RECORD;
                ev->type = type;
                if (p->version == TLS1_3_VERSION && type == TLSK_REC_HANDSHAKE && ev->len >= 1 &&
                    ev->pt[0] == SSL3_MT_KEY_UPDATE) {
                    /* The server's later records are under its next key (RFC 8446 4.6.3). */
                    if (tlsk__tls13_next_secret(p->ks, &p->ks->orx_secret) == 0 &&
                        tlsk__derive_keys(p->ks, 0, &p->rk) == 0) {
                        p->rseq = 0;
                    }
                }
                return;
            }
        }
        if (p->eof) {
            if (p->have > 0) {
                ev->kind = HP_GARBAGE; /* a cut record */
                p->have = 0;
                return;
            }
            ev->kind = p->err ? HP_RST : HP_FIN;
            ev->err = p->err;
            return;
        }
        {
            struct pollfd pf = { .fd = p->fd, .events = POLLIN };
            long long left = end - hp_now_ms();
            ssize_t n;

            if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
                ev->kind = HP_TIMEOUT;
                return;
            }
            if (p->have == HP_IN_CAP) {
                ev->kind = HP_GARBAGE;
                p->have = 0;
                return;
            }
            n = recv(p->fd, p->in + p->have, HP_IN_CAP - p->have, MSG_DONTWAIT);
            if (n > 0) {
                int one = 1;
                /* Acknowledge at once: a server without TCP_NODELAY otherwise holds its next
                 * small record (a second TLS 1.3 ticket) for our delayed ACK, 40 ms. */
                setsockopt(p->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
                p->have += (size_t)n;
            } else if (n == 0) {
                p->eof = true;
            } else if (errno != EAGAIN && errno != EINTR) {
                p->eof = true;
                p->err = errno;
            }
        }
    }
}

int hp_finish(struct hp_peer *p, int timeout_ms)
{
    long long end = hp_now_ms() + timeout_ms;
    int err = 0;
    socklen_t l = sizeof err;

    shutdown(p->fd, SHUT_WR);
    for (;;) {
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        char junk[4096];

        while (recv(p->fd, junk, sizeof junk, MSG_DONTWAIT) > 0) {
        }
        if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
            ti.tcpi_state == TCP_CLOSE) {
            break;
        }
        if (hp_now_ms() >= end) {
            return -ETIMEDOUT;
        }
        poll(NULL, 0, 2);
    }
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0) {
        return errno;
    }
    return err;
}

size_t hp_client_hello(int version, unsigned char *out, size_t cap)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL *s = c ? SSL_new(c) : NULL;
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    unsigned char hdr[5];
    size_t n = 0;

    if (s && r && w) {
        SSL_CTX_set_min_proto_version(c, version);
        SSL_CTX_set_max_proto_version(c, version);
        SSL_set_bio(s, r, w);
        r = w = NULL;
        SSL_set_connect_state(s);
        (void)SSL_do_handshake(s); /* writes the ClientHello, then wants to read */
        w = SSL_get_wbio(s);
        if (BIO_read(w, hdr, 5) == 5 && hdr[0] == TLSK_REC_HANDSHAKE) {
            size_t len = (size_t)(hdr[3] << 8 | hdr[4]);
            if (len <= cap && BIO_read(w, out, (int)len) == (int)len) {
                n = len;
            }
        }
        w = NULL;
    }
    BIO_free(r);
    BIO_free(w);
    SSL_free(s);
    SSL_CTX_free(c);
    ERR_clear_error();
    return n;
}

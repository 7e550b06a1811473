/*
 * test_keyupdate_alerts.c - a peer's malformed or unexpected post-handshake messages get the
 * alert userspace OpenSSL sends, whether the tlsk server receives in userspace or in the
 * kernel (docs/KERNEL.md §7; lib/bridge.c handshake_in).
 *
 * The client is a hostile peer: plain OpenSSL for the handshake, the traffic secrets from its
 * key log, then hand-made records sealed with the client's key (tlsk__record_seal).  It reads
 * the server's records itself and opens them with the server's key, so it sees exactly what a
 * peer sees: the alert's level and description, or none.  Each case runs against a server in
 * userspace (policy off) and one under the auto policy: in the newest tier that one has
 * receive and transmit in the kernel, and both must give the same alert, the one RFC 8446
 * names.  On kernels without re-key auto keeps TLS 1.3 receive in userspace, so the pair
 * agrees trivially there and the kernel comparison is the newest tier's.
 * A third server is lean (TLSK_SOCKET_LEAN): with both directions in the kernel it has freed
 * OpenSSL's state, and the bridge judges the messages itself (lib/bridge.c lean_handshake_in);
 * it must still send the alert userspace OpenSSL sends.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include "harness.h"
#include "internal.h"
#include "kconst.h"
#include "tap.h"

/* ---- the hostile client's keys ------------------------------------------------------------ */

struct secrets {
    unsigned char c[64], s[64];
    size_t clen, slen;
};

static _Thread_local struct secrets *g_sec;

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

static void keylog(const SSL *ssl, const char *line)
{
    const char *sp;
    (void)ssl;
    if (!g_sec || !(sp = strrchr(line, ' '))) {
        return;
    }
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        g_sec->clen = unhex(sp + 1, g_sec->c, sizeof g_sec->c);
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        g_sec->slen = unhex(sp + 1, g_sec->s, sizeof g_sec->s);
    }
}

/* RFC 8446 7.3 key and iv from a traffic secret (SHA-256 suites). */
static int keys_from(const unsigned char *sec, size_t len, int tlsk_cipher, struct tlsk__keys *k)
{
    static const char *labels[2] = { "key", "iv" };
    memset(k, 0, sizeof *k);
    k->version = TLS1_3_VERSION;
    k->tlsk_cipher = tlsk_cipher;
    k->key_len = tlsk_cipher == TLSK_CIPHER_AES_128_GCM ? 16 : 32;
    for (int i = 0; i < 2; i++) {
        EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS13-KDF", NULL);
        EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
        int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ok;
        OSSL_PARAM p[] = {
            OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
            OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)sec, len),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, "tls13 ", 6),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)labels[i],
                                              strlen(labels[i])),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, "", 0),
            OSSL_PARAM_construct_end(),
        };
        ok = kc && EVP_KDF_derive(kc, i ? k->iv : k->key, i ? 12 : k->key_len, p) == 1;
        EVP_KDF_CTX_free(kc);
        EVP_KDF_free(kdf);
        if (!ok) {
            return -1;
        }
    }
    return 0;
}

/* ---- the server: tlsk, reading until it fails ------------------------------------------- */

struct server {
    struct tlsk_context *ctx;
    int fd;
    int hs_rc, rc;
    bool kernel_rx;
    bool lean_opt, lean; /* asked for TLSK_SOCKET_LEAN; OpenSSL's state was freed */
    char detail[256];
};

static void *server_main(void *arg)
{
    struct server *sv = arg;
    struct tlsk_socket *s = NULL;
    char buf[256];

    sv->hs_rc = tlsk_socket_new_server(
        &s, sv->ctx, sv->fd,
        &(struct tlsk_socket_options){ .flags = sv->lean_opt ? TLSK_SOCKET_LEAN : 0 });
    if (sv->hs_rc == 0) {
        sv->hs_rc = h_handshake(s);
    }
    if (sv->hs_rc == 0) {
        sv->kernel_rx = h_kernel_has(sv->fd, false, NULL, NULL);
        sv->lean = s->lean != NULL && s->ssl == NULL;
        do {
            sv->rc = (int)h_read_some(s, buf, sizeof buf);
        } while (sv->rc > 0);
    }
    snprintf(sv->detail, sizeof sv->detail, "%s", s ? tlsk_socket_error_detail(s) : "");
    tlsk_socket_free(s);
    /* A server that keeps the fd open a moment lets the alert be read before any reset. */
    usleep(100 * 1000);
    close(sv->fd);
    return NULL;
}

/* ---- one case ------------------------------------------------------------------------------ */

struct outcome {
    int alert_level, alert_desc; /* -1: no alert seen */
    bool eof;                    /* the connection ended (FIN or reset) */
    int server_rc;
    bool kernel_rx, lean;
};

/* Read the server's records, open them with its key, stop at an alert or the end. */
static void read_alert(int fd, const struct tlsk__keys *sk, struct outcome *o)
{
    static _Thread_local unsigned char in[1 << 16];
    unsigned char pt[1 << 15];
    size_t have = 0;
    uint64_t seq = 0;

    o->alert_level = o->alert_desc = -1;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;
        while (have >= 5 && have >= 5 + (size_t)(in[3] << 8 | in[4])) {
            size_t rl = 5 + (size_t)(in[3] << 8 | in[4]), pl = 0;
            int type = 0;
            if (tlsk__record_open(sk, seq++, in, rl, &type, pt, sizeof pt, &pl) != 0) {
                return; /* not ours to read: counts as no alert */
            }
            if (type == TLSK_REC_ALERT && pl == 2) {
                o->alert_level = pt[0];
                o->alert_desc = pt[1];
                return;
            }
            memmove(in, in + rl, have - rl);
            have -= rl;
        }
        if (poll(&p, 1, 5000) <= 0) {
            return;
        }
        n = recv(fd, in + have, sizeof in - have, 0);
        if (n <= 0) {
            o->eof = true;
            return;
        }
        have += (size_t)n;
    }
}

static void run_case(const char *suite, enum tlsk_offload_policy pol, bool lean,
                     const unsigned char *const *recs, const size_t *lens, int nrec,
                     struct outcome *o)
{
    int tlsk_cipher = strstr(suite, "CHACHA") ? TLSK_CIPHER_CHACHA20_POLY1305
                                              : TLSK_CIPHER_AES_128_GCM;
    struct server sv = { 0 };
    struct secrets sec = { 0 };
    struct tlsk__keys ck, sk;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    pthread_t t;
    int cfd;

    memset(o, 0, sizeof *o);
    o->alert_level = o->alert_desc = -1;
    sv.ctx = h_server_ctx(TLSK_TLS1_3, suite, pol, 0);
    sv.lean_opt = lean;
    if (!cctx || !sv.ctx || h_tcp_pair(&cfd, &sv.fd) != 0) {
        o->server_rc = -ENOMEM;
        goto out;
    }
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(cctx, suite);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_keylog_callback(cctx, keylog);
    g_sec = &sec;
    h_spawn(&t, server_main, &sv);
    ssl = SSL_new(cctx);
    SSL_set_fd(ssl, cfd);
    if (SSL_connect(ssl) != 1 || !sec.clen || !sec.slen ||
        keys_from(sec.c, sec.clen, tlsk_cipher, &ck) != 0 ||
        keys_from(sec.s, sec.slen, tlsk_cipher, &sk) != 0) {
        o->server_rc = -EPROTO;
        shutdown(cfd, SHUT_RDWR);
    } else {
        /* Let the server finish its offload before the hostile records arrive. */
        usleep(100 * 1000);
        for (int i = 0; i < nrec; i++) {
            unsigned char rec[256];
            size_t rl;
            if (tlsk__record_seal(&ck, (uint64_t)i, TLSK_REC_HANDSHAKE, recs[i], lens[i], rec,
                                  sizeof rec, &rl) == 0) {
                ssize_t w = send(cfd, rec, rl, MSG_NOSIGNAL);
                (void)w;
            }
        }
        read_alert(cfd, &sk, o);
    }
    pthread_join(t, NULL);
    o->server_rc = o->server_rc ? o->server_rc : sv.rc;
    o->kernel_rx = sv.kernel_rx;
    o->lean = sv.lean;
    close(cfd);
out:
    g_sec = NULL;
    SSL_free(ssl);
    SSL_CTX_free(cctx);
    tlsk_context_free(sv.ctx);
    OPENSSL_cleanse(&ck, sizeof ck);
    OPENSSL_cleanse(&sk, sizeof sk);
}

/* ---- the cases ----------------------------------------------------------------------------- */

static const unsigned char ku_long[] = { 0x18, 0, 0, 2, 0, 0 };        /* length 2 */
static const unsigned char ku_empty[] = { 0x18, 0, 0, 0 };             /* length 0 */
static const unsigned char ku_bad_req[] = { 0x18, 0, 0, 1, 5 };        /* request 5 */
static const unsigned char ku_twice[] = { 0x18, 0, 0, 1, 0, 0x18, 0, 0, 1, 0 };
static const unsigned char finished[] = { 0x14, 0, 0, 32, [4 ... 35] = 0xab };
static const unsigned char unknown_type[] = { 0xfe, 0, 0, 1, 0 };
static const unsigned char client_hello[] = { 0x01, 0, 0, 2, 3, 3 };

struct hostile {
    const char *name;
    const unsigned char *msg;
    size_t len;
    int want; /* the alert userspace OpenSSL gives (RFC 8446 6.2 names it, but see below) */
};

static const struct hostile cases[] = {
    /* OpenSSL checks the length against KeyUpdate's maximum (1) before parsing:
     * illegal_parameter (EXCESSIVE_MESSAGE_SIZE), where RFC 8446 6.2 would allow
     * decode_error.  Userspace OpenSSL is the reference both modes must match. */
    { "KeyUpdate with length 2", ku_long, sizeof ku_long, SSL_AD_ILLEGAL_PARAMETER },
    { "KeyUpdate with length 0", ku_empty, sizeof ku_empty, SSL_AD_DECODE_ERROR },
    { "KeyUpdate with request_update 5", ku_bad_req, sizeof ku_bad_req,
      SSL_AD_ILLEGAL_PARAMETER },
    { "two KeyUpdates in one record", ku_twice, sizeof ku_twice, SSL_AD_UNEXPECTED_MESSAGE },
    { "a second Finished", finished, sizeof finished, SSL_AD_UNEXPECTED_MESSAGE },
    { "handshake message type 254", unknown_type, sizeof unknown_type,
      SSL_AD_UNEXPECTED_MESSAGE },
    { "a ClientHello after the handshake", client_hello, sizeof client_hello,
      SSL_AD_UNEXPECTED_MESSAGE },
};

static void one(const char *suite, const struct hostile *h)
{
    const unsigned char *recs[1] = { h->msg };
    size_t lens[1] = { h->len };
    struct outcome user, auto_, lean;
    char what[160];

    snprintf(what, sizeof what, "%s, %s", h->name, suite);
    run_case(suite, TLSK_OFFLOAD_OFF, false, recs, lens, 1, &user);
    run_case(suite, TLSK_OFFLOAD_DEFAULT, false, recs, lens, 1, &auto_);
    run_case(suite, TLSK_OFFLOAD_DEFAULT, true, recs, lens, 1, &lean);
    TAP_OK(user.alert_level == SSL3_AL_FATAL && user.alert_desc == h->want,
           "%s: userspace server sends fatal alert %d (got level %d, %d)", what, h->want,
           user.alert_level, user.alert_desc);
    if (h_kernel_rekey()) {
        TAP_OK(auto_.kernel_rx, "%s: auto server receives in the kernel", what);
    }
    if (!TAP_OK(auto_.alert_level == user.alert_level && auto_.alert_desc == user.alert_desc,
                "%s: auto-policy server sends the same alert (level %d, %d)%s", what,
                auto_.alert_level, auto_.alert_desc,
                auto_.kernel_rx ? " through the kernel" : "")) {
        tap_diag("  server: %s", tlsk_err_name(auto_.server_rc));
    }
    TAP_OK(user.server_rc < 0 && auto_.server_rc < 0,
           "%s: both servers report a failure (%s, %s)", what, tlsk_err_name(user.server_rc),
           tlsk_err_name(auto_.server_rc));
    /* Lean only where the kernel has both directions: the newest tier. */
    TAP_OK(lean.lean == (h_kernel_rekey() && lean.kernel_rx),
           "%s: lean server freed OpenSSL's state: %s", what, lean.lean ? "yes" : "no");
    if (h_kernel_rekey()) {
        TAP_OK(lean.lean, "%s: lean server is lean in the newest tier", what);
    }
    if (!TAP_OK(lean.alert_level == user.alert_level && lean.alert_desc == user.alert_desc &&
                    lean.server_rc < 0,
                "%s: lean server sends the same alert (level %d, %d) and fails (%s)", what,
                lean.alert_level, lean.alert_desc, tlsk_err_name(lean.server_rc))) {
        tap_diag("  server: %s", tlsk_err_name(lean.server_rc));
    }
}

int main(void)
{
    static const char *suites[] = { "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256" };

    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(suites); i++) {
        for (size_t j = 0; j < TLSK_ARRAY_SIZE(cases); j++) {
            one(suites[i], &cases[j]);
        }
    }
    return tap_done();
}

/*
 * test_hostile.c - issue 14: kernel mode must look exactly like userspace mode on the wire.
 *
 * A hostile client (tests/lib/hostile.c: a real handshake with plain OpenSSL, the traffic
 * keys from its key log or master secret, then hand-made records) runs every scenario below
 * against the library's evented server (tlsk_server on a tlsk_loop, echoing what it reads),
 * in each mode:
 *
 *   userspace  policy off: OpenSSL does every record (the reference)
 *   tx         policy tx: transmit in the kernel, receive in OpenSSL
 *   tx+rx      policy auto: both directions in the kernel (TLS 1.3 receive through the
 *              kernel's re-key on 6.14+, through the TLSK_OFFLOAD_RX_TLS13 opt-in before)
 *
 * for TLS 1.2 and 1.3, AES-128-GCM and ChaCha20-Poly1305.  After one message and its echo
 * (the connection works, the server has offloaded), the peer sends the scenario's records
 * and writes down exactly what it receives: "D<n>" for n replies, "A<level>.<description>"
 * per alert, "H<type>" per handshake message, then how the stream ended: "FIN" (recv()
 * returned 0; "+RST" when a reset followed before our own close completed), "RST" (recv()
 * failed with ECONNRESET), or "TIMEOUT".  A scenario that should go on sends one message
 * more and, once it is answered, close_notify: "D1 A1.0 FIN" is a connection that went on
 * and closed cleanly, "A2.20 FIN" a fatal bad_record_mac and an orderly close.
 *
 * Each kernel mode's string must equal the userspace one, and the userspace one must be what
 * RFC 5246/8446 ask for: the alert, then an orderly close, never a reset.  Where OpenSSL 3.0
 * itself picks another alert than the RFC names, the test says so in a diagnostic and pins
 * OpenSSL's choice (user_dev); where the kernel interface cannot be made to match, likewise,
 * with the reason (kernel_dev).  The same scenarios then run against tlsk-serve (tools/),
 * HTTP requests for messages, each kernel mode against its own userspace mode.  The last
 * diagnostics give the counts.
 *
 * Natively (no kTLS) only the userspace mode runs.  With TLSK_EXPECT_KTLS=1 every tx and
 * tx+rx connection must really be offloaded as its mode says.  TLSK_HOSTILE_VERBOSE=1 prints
 * every tlsk-serve outcome.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>

#include "harness.h"
#include "hostile.h"
#include "internal.h"
#include "kconst.h"
#include "peers.h"
#include "tap.h"

#define WAIT_MS 2000 /* for each thing the peer waits for */

/* ---- modes and combinations ---------------------------------------------------------------- */

/* M_SOFT: tlsk-serve where the kernel has no tls module, lean with tlsk's own record layer in
 * the kernel's place (TLSK_LEAN_USERSPACE, lib/soft.c): natively only, tlsk-serve only (the
 * library's evented server is never lean).  It has no kernel limit to excuse: it must answer
 * every scenario exactly as OpenSSL does. */
enum { M_USER, M_TX, M_TXRX, M_SOFT, NMODES };
static const char *const mode_name[NMODES] = { "userspace", "tx", "tx+rx", "lean userspace" };

struct combo {
    int version;
    const char *suite;
    const char *label;
};
static const struct combo combos[] = {
    { TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256", "TLS 1.2 AES-128-GCM" },
    { TLS1_2_VERSION, "ECDHE-RSA-CHACHA20-POLY1305", "TLS 1.2 ChaCha20-Poly1305" },
    { TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256", "TLS 1.3 AES-128-GCM" },
    { TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256", "TLS 1.3 ChaCha20-Poly1305" },
};
#define NCOMBOS ((int)TLSK_ARRAY_SIZE(combos))

static bool is_aes12(int ci)
{
    return combos[ci].version == TLS1_2_VERSION && strstr(combos[ci].suite, "AES");
}

/* ---- the servers: evented, on one loop in their own thread ------------------------------- */

struct conn_rec {
    int port; /* the client's port */
    struct tlsk_offload off;
    int err; /* error event or clientError, 0 none */
    bool secure, closed;
    char detail[200];
};

#define MAX_CONNS 4096
static struct conn_rec g_conns[MAX_CONNS];
static int g_nconns;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static struct tlsk_loop *g_loop;
static struct tlsk_server *g_srv[NCOMBOS][NMODES];
static int g_port[NCOMBOS][NMODES];
static bool g_run[NMODES];
static atomic_int g_stop;
static atomic_int g_open; /* connections the servers hold (lingering ones too), from the loop */
static int g_loop_free_rc = -1, g_server_closes;

static int peer_port(struct tlsk_socket *s)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;

    if (getpeername(tlsk_socket_fd(s), (struct sockaddr *)&ss, &l) != 0) {
        return -1;
    }
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static struct conn_rec *rec_of(struct tlsk_socket *s)
{
    intptr_t i = (intptr_t)tlsk_socket_get_data(s);
    return i > 0 && i <= MAX_CONNS ? &g_conns[i - 1] : NULL;
}

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    (void)ud;
    tlsk_socket_send(s, buf, len);
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err, (void)ud;
    tlsk_socket_end(s);
}

static void on_error(struct tlsk_socket *s, int err, void *ud)
{
    struct conn_rec *r = rec_of(s);
    (void)ud;
    if (r) {
        pthread_mutex_lock(&g_mu);
        r->err = err;
        snprintf(r->detail, sizeof r->detail, "%s", tlsk_socket_error_detail(s));
        pthread_mutex_unlock(&g_mu);
    }
}

static void on_close(struct tlsk_socket *s, void *ud)
{
    struct conn_rec *r = rec_of(s);
    (void)ud;
    if (r) {
        pthread_mutex_lock(&g_mu);
        r->closed = true;
        pthread_mutex_unlock(&g_mu);
    }
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .error = on_error, .close = on_close };
    intptr_t i = 0;
    (void)srv, (void)data;
    pthread_mutex_lock(&g_mu);
    if (g_nconns < MAX_CONNS) {
        struct conn_rec *r = &g_conns[g_nconns++];
        r->port = peer_port(s);
        r->off = tlsk_socket_offload(s);
        r->secure = true;
        i = g_nconns;
    }
    pthread_mutex_unlock(&g_mu);
    tlsk_socket_set_data(s, (void *)i);
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    (void)srv, (void)data;
    pthread_mutex_lock(&g_mu);
    if (g_nconns < MAX_CONNS) {
        struct conn_rec *r = &g_conns[g_nconns++];
        r->port = peer_port(s);
        r->err = err;
        r->closed = true;
        snprintf(r->detail, sizeof r->detail, "%s", tlsk_socket_error_detail(s));
    }
    pthread_mutex_unlock(&g_mu);
}

static void on_server_close(struct tlsk_server *srv, void *data)
{
    (void)srv, (void)data;
    g_server_closes++;
}

static const struct tlsk_server_callbacks srv_cb = { .secure_connection = on_secure,
                                                     .client_error = on_client_error,
                                                     .close = on_server_close };

static void *loop_main(void *arg)
{
    int64_t end;
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int open = 0;
        tlsk_loop_run(g_loop, 5);
        for (int c = 0; c < NCOMBOS; c++) {
            for (int m = 0; m < NMODES; m++) {
                open += g_srv[c][m] ? (int)tlsk_server_connections(g_srv[c][m]) : 0;
            }
        }
        atomic_store(&g_open, open);
    }
    for (int c = 0; c < NCOMBOS; c++) {
        for (int m = 0; m < NMODES; m++) {
            if (g_srv[c][m]) {
                tlsk_server_close(g_srv[c][m]);
            }
        }
    }
    /* Until every connection has closed (lingering ones included) and the servers with them. */
    end = tlsk__now_ms() + 10000;
    while (tlsk__now_ms() < end && tlsk_loop_run(g_loop, 100) == 0 && g_loop->count > 0) {
    }
    g_loop_free_rc = tlsk_loop_free(g_loop);
    return NULL;
}

static int start_server(int c, int m)
{
    static const enum tlsk_offload_policy pol[NMODES] = { TLSK_OFFLOAD_OFF, TLSK_OFFLOAD_TX,
                                                          TLSK_OFFLOAD_AUTO };
    unsigned flags = 0;
    struct tlsk_context *ctx;
    struct tlsk_server_options o = { 0 };
    char host[64];
    int rc;

    if (m == M_TXRX && combos[c].version == TLS1_3_VERSION && !tlsk_kernel_probe()->rekey) {
        flags |= TLSK_OFFLOAD_RX_TLS13; /* receive in the kernel on a kernel without re-key */
    }
    ctx = h_server_ctx(combos[c].version, combos[c].suite, pol[m], flags);
    if (!ctx) {
        return -1;
    }
    o.ctx = ctx;
    rc = tlsk_server_new(&g_srv[c][m], g_loop, &o, &srv_cb, NULL);
    if (rc == 0) {
        rc = tlsk_server_listen(g_srv[c][m], "127.0.0.1", "0", 128);
    }
    if (rc == 0) {
        rc = tlsk_server_address(g_srv[c][m], host, sizeof host, &g_port[c][m]);
    }
    tlsk_context_free(ctx);
    return rc;
}

/* The server's record of the connection from client port cport, once it has closed (or after
 * a short wait). */
static struct conn_rec server_rec(int cport)
{
    struct conn_rec out = { .port = -1 };
    int64_t end = tlsk__now_ms() + 500;

    for (;;) {
        bool done = false;
        pthread_mutex_lock(&g_mu);
        for (int i = g_nconns - 1; i >= 0; i--) {
            if (g_conns[i].port == cport) {
                out = g_conns[i];
                done = out.closed;
                break;
            }
        }
        pthread_mutex_unlock(&g_mu);
        if (done || tlsk__now_ms() >= end) {
            return out;
        }
        poll(NULL, 0, 5);
    }
}

/* ---- the scenarios ------------------------------------------------------------------------- */

struct plan {
    size_t echo;     /* application data bytes the server must echo; then we send close_notify */
    bool half_close; /* shut our write side down after the hostile bytes */
};

static unsigned char g_buf[5 + 0x10000 + 64];
/* What the peer's data records carry: "hello" for the echo server, a request for
 * tlsk-serve; either way one message, one reply. */
static const unsigned char *g_msg = (const unsigned char *)"hello";
static size_t g_msg_len = 5;
static bool g_http;

static int send_ping(struct hp_peer *p, struct plan *pl)
{
    pl->echo++;
    return hp_send_record(p, TLSK_REC_APPDATA, g_msg, g_msg_len);
}

/* A data record "hello" with byte off (negative: from the end) xored with x. */
static int flipped(struct hp_peer *p, long off, unsigned char x)
{
    size_t n = hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf, sizeof g_buf);
    if (!n) {
        return -EINVAL;
    }
    g_buf[off < 0 ? (long)n + off : off] ^= x;
    return hp_send_raw(p, g_buf, n);
}

static size_t explicit_len(const struct hp_peer *p)
{
    return p->version == TLS1_2_VERSION && p->wk.tlsk_cipher != TLSK_CIPHER_CHACHA20_POLY1305 ? 8
                                                                                             : 0;
}

static int b_hdr_type(struct hp_peer *p, struct plan *pl)
{
    pl->echo = 1; /* should the record be taken after all, the peer ends cleanly */
    return flipped(p, 0, 0x01); /* 23 -> 22 */
}

static int b_hdr_version(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    return flipped(p, 2, 0x02); /* 03 03 -> 03 01 */
}

static int b_hdr_length(struct hp_peer *p, struct plan *pl)
{
    size_t n = hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf, sizeof g_buf);
    (void)pl;
    if (!n) {
        return -EINVAL;
    }
    /* One byte shorter, and the last byte (of the tag) not sent: a whole, shorter record. */
    g_buf[3] = (unsigned char)((n - 6) >> 8), g_buf[4] = (unsigned char)(n - 6);
    return hp_send_raw(p, g_buf, n - 1);
}

static int b_nonce(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    return flipped(p, 5, 0x01);
}

static int b_ciphertext(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    return flipped(p, 5 + (long)explicit_len(p), 0x01);
}

static int b_tag(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    return flipped(p, -1, 0x01);
}

static int b_tag_then_data(struct hp_peer *p, struct plan *pl)
{
    int rc = flipped(p, -1, 0x01);
    (void)pl;
    /* More data behind the bad record: the server must not answer it with a reset. */
    return rc ? rc : hp_send_record(p, TLSK_REC_APPDATA, g_msg, g_msg_len);
}

static int b_replay(struct hp_peer *p, struct plan *pl)
{
    size_t n = hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf, sizeof g_buf);
    int rc;
    pl->echo = 1;
    if (!n) {
        return -EINVAL;
    }
    rc = hp_send_raw(p, g_buf, n);
    return rc ? rc : hp_send_raw(p, g_buf, n); /* the same record again: wrong sequence */
}

static int b_runt(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char r[13] = { 23, 3, 3, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8 };
    (void)pl;
    return hp_send_raw(p, r, sizeof r);
}

static int b_truncated(struct hp_peer *p, struct plan *pl)
{
    size_t n = hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf, sizeof g_buf);
    pl->half_close = true;
    return n ? hp_send_raw(p, g_buf, n - 3) : -EINVAL;
}

static int b_eof(struct hp_peer *p, struct plan *pl)
{
    pl->half_close = true; /* no close_notify */
    return send_ping(p, pl);
}

static int garbage_record(struct hp_peer *p, size_t len)
{
    g_buf[0] = TLSK_REC_APPDATA, g_buf[1] = 3, g_buf[2] = 3;
    g_buf[3] = (unsigned char)(len >> 8), g_buf[4] = (unsigned char)len;
    for (size_t i = 0; i < len; i++) {
        g_buf[5 + i] = (unsigned char)(i * 7 + 1);
    }
    return hp_send_raw(p, g_buf, 5 + len);
}

static int b_oversize(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    /* One byte past the largest ciphertext RFC 5246 6.2.3 / RFC 8446 5.2 allow. */
    return garbage_record(p, p->version == TLS1_3_VERSION ? 16384 + 256 + 1 : 16384 + 2048 + 1);
}

static int b_data_oversize(struct hp_peer *p, struct plan *pl)
{
    size_t n = hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf, sizeof g_buf), len;
    (void)pl;
    if (!n) {
        return -EINVAL;
    }
    /* A good record and an oversized one in one segment: the answer to the first, then the
     * alert for the second. */
    len = p->version == TLS1_3_VERSION ? 16384 + 256 + 1 : 16384 + 2048 + 1;
    g_buf[n] = TLSK_REC_APPDATA, g_buf[n + 1] = 3, g_buf[n + 2] = 3;
    g_buf[n + 3] = (unsigned char)(len >> 8), g_buf[n + 4] = (unsigned char)len;
    memset(g_buf + n + 5, 0x5a, len);
    return hp_send_raw(p, g_buf, n + 5 + len);
}

static int b_oversize_gap(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    /* Within the RFC's ciphertext limit, past what a legal record can need; not authentic. */
    return garbage_record(p, p->version == TLS1_3_VERSION ? 16500 : 17000);
}

static int b_oversize_pt(struct hp_peer *p, struct plan *pl)
{
    static unsigned char big[16384 + 2];
    size_t n;
    (void)pl;
    memset(big, 'x', sizeof big);
    /* An authentic record of 2^14 + 1 bytes of plaintext. */
    big[16385] = TLSK_REC_APPDATA; /* TLS 1.3: the inner content type */
    n = hp_seal_raw(p, TLSK_REC_APPDATA, big, p->version == TLS1_3_VERSION ? 16386 : 16385, g_buf,
                    sizeof g_buf);
    return n ? hp_send_raw(p, g_buf, n) : -EINVAL;
}

static int zero_then_ping(struct hp_peer *p, struct plan *pl, int type)
{
    int rc = hp_send_record(p, type, "", 0);
    return rc ? rc : send_ping(p, pl);
}

static int b_zero_appdata(struct hp_peer *p, struct plan *pl)
{
    return zero_then_ping(p, pl, TLSK_REC_APPDATA);
}

static int b_zero_handshake(struct hp_peer *p, struct plan *pl)
{
    return zero_then_ping(p, pl, TLSK_REC_HANDSHAKE);
}

static int b_zero_alert(struct hp_peer *p, struct plan *pl)
{
    return zero_then_ping(p, pl, TLSK_REC_ALERT);
}

static int b_zero_ccs(struct hp_peer *p, struct plan *pl)
{
    return zero_then_ping(p, pl, 20);
}

static int b_unknown_type(struct hp_peer *p, struct plan *pl)
{
    (void)pl;
    return hp_send_record(p, 99, g_msg, g_msg_len);
}

static int b_finished(struct hp_peer *p, struct plan *pl)
{
    unsigned char m[4 + 32];
    size_t vl = p->version == TLS1_3_VERSION ? 32 : 12;
    (void)pl;
    m[0] = SSL3_MT_FINISHED, m[1] = 0, m[2] = 0, m[3] = (unsigned char)vl;
    memset(m + 4, 0xab, vl);
    return hp_send_record(p, TLSK_REC_HANDSHAKE, m, 4 + vl);
}

static int b_finished_split(struct hp_peer *p, struct plan *pl)
{
    unsigned char m[4 + 32];
    size_t vl = p->version == TLS1_3_VERSION ? 32 : 12;
    int rc;
    (void)pl;
    m[0] = SSL3_MT_FINISHED, m[1] = 0, m[2] = 0, m[3] = (unsigned char)vl;
    memset(m + 4, 0xab, vl);
    rc = hp_send_record(p, TLSK_REC_HANDSHAKE, m, 2);
    return rc ? rc : hp_send_record(p, TLSK_REC_HANDSHAKE, m + 2, 2 + vl);
}

static int b_client_hello(struct hp_peer *p, struct plan *pl)
{
    static unsigned char ch[16384];
    size_t n = hp_client_hello(p->version, ch, sizeof ch);
    int rc;
    if (!n) {
        return -EINVAL;
    }
    rc = hp_send_record(p, TLSK_REC_HANDSHAKE, ch, n);
    /* TLS 1.2: refused with a warning, the connection goes on (RFC 5246 7.2.2). */
    return rc ? rc : p->version == TLS1_2_VERSION ? send_ping(p, pl) : 0;
}

static int b_client_hello_split(struct hp_peer *p, struct plan *pl)
{
    static unsigned char ch[16384];
    size_t n = hp_client_hello(p->version, ch, sizeof ch);
    int rc;
    if (!n) {
        return -EINVAL;
    }
    rc = hp_send_record(p, TLSK_REC_HANDSHAKE, ch, 2);
    if (rc == 0) {
        rc = hp_send_record(p, TLSK_REC_HANDSHAKE, ch + 2, n - 2);
    }
    return rc ? rc : send_ping(p, pl);
}

static int b_hello_request(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char hr[4] = { SSL3_MT_HELLO_REQUEST, 0, 0, 0 };
    (void)pl;
    return hp_send_record(p, TLSK_REC_HANDSHAKE, hr, sizeof hr);
}

static int b_ccs(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char one = 1;
    (void)pl;
    return hp_send_record(p, 20, &one, 1);
}

static int b_ccs_plain(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char ccs[6] = { 20, 3, 3, 0, 1, 1 };
    (void)pl;
    return hp_send_raw(p, ccs, sizeof ccs);
}

static int hs(struct hp_peer *p, const unsigned char *m, size_t len)
{
    return hp_send_record(p, TLSK_REC_HANDSHAKE, m, len);
}

static int b_ku_long(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 2, 0, 0 };
    (void)pl;
    return hs(p, m, sizeof m);
}

static int b_ku_empty(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 0 };
    (void)pl;
    return hs(p, m, sizeof m);
}

static int b_ku_bad_request(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 5 };
    (void)pl;
    return hs(p, m, sizeof m);
}

static int b_ku_twice(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 0,
                                       SSL3_MT_KEY_UPDATE, 0, 0, 1, 0 };
    (void)pl;
    return hs(p, m, sizeof m);
}

static int b_ku_tls12(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 0 };
    (void)pl;
    return hs(p, m, sizeof m);
}

static int b_ku_requested(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 1 };
    int rc = hs(p, m, sizeof m);
    if (rc == 0) {
        rc = hp_next_write_key(p);
    }
    return rc ? rc : send_ping(p, pl);
}

/* KeyUpdate(update_not_requested) sent in pieces of the given sizes, one record each (5 bytes
 * in all: OpenSSL reassembles it), then data under our next key. */
static int ku_in_pieces(struct hp_peer *p, struct plan *pl, const size_t *piece, size_t n)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 0 };
    size_t off = 0;
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = hs(p, m + off, piece[i]);
        off += piece[i];
    }
    if (rc == 0) {
        rc = hp_next_write_key(p);
    }
    return rc ? rc : send_ping(p, pl);
}

static int b_ku_split(struct hp_peer *p, struct plan *pl)
{
    static const size_t piece[] = { 2, 3 };
    return ku_in_pieces(p, pl, piece, TLSK_ARRAY_SIZE(piece));
}

/* The header over two records and the body in a third. */
static int b_ku_split3(struct hp_peer *p, struct plan *pl)
{
    static const size_t piece[] = { 1, 2, 2 };
    return ku_in_pieces(p, pl, piece, TLSK_ARRAY_SIZE(piece));
}

/* A data record between the pieces of a KeyUpdate (RFC 8446 5.1: handshake messages are not
 * interleaved with other record types). */
static int b_ku_split_data(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char m[] = { SSL3_MT_KEY_UPDATE, 0, 0, 1, 0 };
    int rc = hs(p, m, 2);
    if (rc == 0) {
        rc = send_ping(p, pl);
    }
    if (rc == 0) {
        rc = hs(p, m + 2, 3);
    }
    return rc;
}

static int alert_then_ping(struct hp_peer *p, struct plan *pl, int level, int desc)
{
    unsigned char a[2] = { (unsigned char)level, (unsigned char)desc };
    int rc = hp_send_record(p, TLSK_REC_ALERT, a, 2);
    return rc ? rc : send_ping(p, pl);
}

static int b_warn_cancel(struct hp_peer *p, struct plan *pl)
{
    return alert_then_ping(p, pl, SSL3_AL_WARNING, SSL_AD_USER_CANCELLED);
}

static int b_warn_unknown(struct hp_peer *p, struct plan *pl)
{
    return alert_then_ping(p, pl, SSL3_AL_WARNING, 200);
}

static int b_warn_noreneg(struct hp_peer *p, struct plan *pl)
{
    return alert_then_ping(p, pl, SSL3_AL_WARNING, SSL_AD_NO_RENEGOTIATION);
}

static int b_fatal(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char a[2] = { SSL3_AL_FATAL, SSL_AD_HANDSHAKE_FAILURE };
    (void)pl;
    return hp_send_record(p, TLSK_REC_ALERT, a, 2);
}

static int b_alert_long(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char a[3] = { SSL3_AL_WARNING, SSL_AD_USER_CANCELLED, 1 };
    (void)pl;
    return hp_send_record(p, TLSK_REC_ALERT, a, 3);
}

static int b_alert_short(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char a[1] = { SSL3_AL_WARNING };
    (void)pl;
    return hp_send_record(p, TLSK_REC_ALERT, a, 1);
}

static int b_warn_flood(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char a[2] = { SSL3_AL_WARNING, SSL_AD_USER_CANCELLED };
    for (int i = 0; i < 6; i++) {
        int rc = hp_send_record(p, TLSK_REC_ALERT, a, 2);
        if (rc) {
            return rc;
        }
    }
    return send_ping(p, pl);
}

static int b_warn_spread(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char a[2] = { SSL3_AL_WARNING, SSL_AD_USER_CANCELLED };
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            int rc = hp_send_record(p, TLSK_REC_ALERT, a, 2);
            if (rc) {
                return rc;
            }
        }
        int rc = send_ping(p, pl); /* data between them: the count starts again */
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static int b_empty_flood(struct hp_peer *p, struct plan *pl)
{
    for (int i = 0; i < 33; i++) {
        int rc = hp_send_record(p, TLSK_REC_APPDATA, "", 0);
        if (rc) {
            return rc;
        }
    }
    return send_ping(p, pl);
}

static int b_after_close(struct hp_peer *p, struct plan *pl)
{
    static const unsigned char cn[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
    size_t n = hp_seal(p, TLSK_REC_ALERT, cn, 2, g_buf, sizeof g_buf);
    size_t m = n ? hp_seal(p, TLSK_REC_APPDATA, g_msg, g_msg_len, g_buf + n,
                           sizeof g_buf - n)
                 : 0;
    (void)pl;
    return m ? hp_send_raw(p, g_buf, n + m) : -EINVAL; /* close_notify, then data, at once */
}

static int b_padded(struct hp_peer *p, struct plan *pl)
{
    unsigned char inner[256 + 1 + 200] = { 0 };
    size_t n;
    memcpy(inner, g_msg, g_msg_len);
    inner[g_msg_len] = TLSK_REC_APPDATA; /* then 200 bytes of zero padding (RFC 8446 5.4) */
    n = hp_seal_raw(p, TLSK_REC_APPDATA, inner, g_msg_len + 1 + 200, g_buf, sizeof g_buf);
    pl->echo = 1;
    return n ? hp_send_raw(p, g_buf, n) : -EINVAL;
}

static int b_no_type(struct hp_peer *p, struct plan *pl)
{
    unsigned char inner[32] = { 0 }; /* padding only: no content type */
    size_t n = hp_seal_raw(p, TLSK_REC_APPDATA, inner, sizeof inner, g_buf, sizeof g_buf);
    (void)pl;
    return n ? hp_send_raw(p, g_buf, n) : -EINVAL;
}

enum { V12 = 1, V13 = 2, VB = 3 };

struct scenario {
    const char *id;
    const char *what;
    unsigned vers;
    bool aes12_only; /* TLS 1.2 AES-GCM: the explicit nonce */
    int (*build)(struct hp_peer *p, struct plan *pl);
    /* What the RFC asks for, per version ('|' separates acceptable outcomes). */
    const char *rfc12, *rfc13;
};

#define FAIL(a) "A2." #a " FIN"
#define GOES_ON "D1 A1.0 FIN"

static const struct scenario scenarios[] = {
    { "hdr-type", "record type byte flipped (23 -> 22)", VB, false, b_hdr_type, FAIL(20),
      FAIL(10) "|" FAIL(20) },
    { "hdr-version", "record version flipped (03 03 -> 03 01)", VB, false, b_hdr_version,
      FAIL(70) "|" FAIL(20), FAIL(20) },
    { "hdr-length", "record length one short (last tag byte missing)", VB, false, b_hdr_length,
      FAIL(20), FAIL(20) },
    { "nonce", "explicit nonce byte flipped", V12, true, b_nonce, FAIL(20), NULL },
    { "ciphertext", "ciphertext byte flipped", VB, false, b_ciphertext, FAIL(20), FAIL(20) },
    { "tag", "tag byte flipped", VB, false, b_tag, FAIL(20), FAIL(20) },
    { "tag+data", "tag byte flipped, more data behind it", VB, false, b_tag_then_data, FAIL(20),
      FAIL(20) },
    { "replay", "a good record, then the same bytes again", VB, false, b_replay,
      "D1 " FAIL(20), "D1 " FAIL(20) },
    { "runt", "a record of 8 bytes, shorter than a tag", VB, false, b_runt,
      FAIL(20) "|" FAIL(50), FAIL(20) "|" FAIL(50) },
    { "truncated", "a record cut short, then FIN", VB, false, b_truncated,
      "FIN|" FAIL(50) "|" FAIL(10), "FIN|" FAIL(50) "|" FAIL(10) },
    { "eof", "data, then FIN without close_notify", VB, false, b_eof,
      "D1 FIN|D1 A1.0 FIN|D1 " FAIL(50), "D1 FIN|D1 A1.0 FIN|D1 " FAIL(50) },
    { "oversize", "ciphertext one byte over the limit (2^14+2048+1, 2^14+256+1)", VB, false,
      b_oversize, FAIL(22), FAIL(22) },
    { "data+oversize", "a good record, then an oversized one, in one segment", VB, false,
      b_data_oversize, "D1 " FAIL(22), "D1 " FAIL(22) },
    { "oversize-pt", "authentic record with 2^14+1 bytes of plaintext", VB, false,
      b_oversize_pt, FAIL(22), FAIL(22) },
    { "oversize-gap", "not authentic, length within the RFC limit but past any legal record",
      VB, false, b_oversize_gap, FAIL(20), FAIL(20) },
    { "zero-appdata", "zero-length application data record, then data", VB, false,
      b_zero_appdata, GOES_ON, GOES_ON },
    { "zero-handshake", "zero-length handshake record, then data", VB, false, b_zero_handshake,
      GOES_ON "|" FAIL(10) "|" FAIL(50), FAIL(10) "|" FAIL(50) },
    { "zero-alert", "zero-length alert record, then data", VB, false, b_zero_alert,
      GOES_ON "|" FAIL(10) "|" FAIL(50), FAIL(10) "|" FAIL(50) },
    { "zero-ccs", "zero-length ChangeCipherSpec record, then data", VB, false, b_zero_ccs,
      FAIL(10) "|" FAIL(50), FAIL(10) "|" FAIL(50) },
    { "unknown-type", "record of content type 99", VB, false, b_unknown_type, FAIL(10),
      FAIL(10) },
    { "finished", "a second Finished", VB, false, b_finished, FAIL(10), FAIL(10) },
    { "finished-split", "a second Finished split across two records", VB, false,
      b_finished_split, FAIL(10), FAIL(10) },
    { "client-hello", "a ClientHello after the handshake (renegotiation refused)", VB, false,
      b_client_hello, "A1.100 " GOES_ON, FAIL(10) },
    { "client-hello-split", "a ClientHello split across two records", V12, false,
      b_client_hello_split, "A1.100 " GOES_ON, NULL },
    { "hello-request", "a HelloRequest sent to the server", VB, false, b_hello_request,
      FAIL(10), FAIL(10) },
    { "ccs", "ChangeCipherSpec after Finished (protected)", VB, false, b_ccs, FAIL(10),
      FAIL(10) },
    { "ccs-plain", "ChangeCipherSpec after Finished (plaintext)", V13, false, b_ccs_plain, NULL,
      FAIL(10) },
    { "ku-long", "KeyUpdate with length 2", V13, false, b_ku_long, NULL, FAIL(50) },
    { "ku-empty", "KeyUpdate with length 0", V13, false, b_ku_empty, NULL, FAIL(50) },
    { "ku-request-5", "KeyUpdate with request_update 5", V13, false, b_ku_bad_request, NULL,
      FAIL(47) },
    { "ku-twice", "two KeyUpdates in one record", V13, false, b_ku_twice, NULL, FAIL(10) },
    { "ku-requested", "KeyUpdate(update_requested), then data under the new key", V13, false,
      b_ku_requested, NULL, "H24 " GOES_ON },
    { "ku-split", "KeyUpdate split across two records, then data under the new key", V13, false,
      b_ku_split, NULL, GOES_ON },
    { "ku-split3", "KeyUpdate split across three records, then data under the new key", V13,
      false, b_ku_split3, NULL, GOES_ON },
    { "ku-split-data", "a data record between the two pieces of a KeyUpdate", V13, false,
      b_ku_split_data, NULL, FAIL(10) },
    { "ku-tls12", "a KeyUpdate message in TLS 1.2", V12, false, b_ku_tls12, FAIL(10), NULL },
    { "warn-cancel", "warning user_canceled, then data", VB, false, b_warn_cancel, GOES_ON,
      GOES_ON },
    { "warn-unknown", "warning alert 200, then data", VB, false, b_warn_unknown, GOES_ON,
      "FIN|" FAIL(47) },
    { "warn-noreneg", "warning no_renegotiation, then data", VB, false, b_warn_noreneg,
      GOES_ON "|" FAIL(40), "FIN|" FAIL(47) },
    { "fatal", "fatal handshake_failure alert", VB, false, b_fatal, "FIN", "FIN" },
    { "alert-long", "alert record of 3 bytes", VB, false, b_alert_long, FAIL(50), FAIL(50) },
    { "alert-short", "alert record of 1 byte", VB, false, b_alert_short, FAIL(50), FAIL(50) },
    { "warn-flood", "six warning alerts (user_canceled), then data", VB, false, b_warn_flood,
      GOES_ON "|" FAIL(10), GOES_ON "|" FAIL(10) },
    { "warn-spread", "four warning alerts, data, four more, data", VB, false, b_warn_spread,
      "D2 A1.0 FIN", "D2 A1.0 FIN" },
    { "empty-flood", "33 empty data records, then data", VB, false, b_empty_flood,
      GOES_ON "|" FAIL(10), GOES_ON "|" FAIL(10) },
    { "after-close", "close_notify, then data", VB, false, b_after_close, "A1.0 FIN",
      "A1.0 FIN" },
    { "padded", "a data record with 200 bytes of padding", V13, false, b_padded, NULL, GOES_ON },
    { "no-type", "a record of padding only (no content type)", V13, false, b_no_type, NULL,
      FAIL(10) },
};
#define NSCEN ((int)TLSK_ARRAY_SIZE(scenarios))

static bool applies(const struct scenario *sc, int ci)
{
    unsigned v = combos[ci].version == TLS1_3_VERSION ? V13 : V12;
    return (sc->vers & v) && (!sc->aes12_only || is_aes12(ci));
}

/* ---- one run: connect, handshake, echo check, hostile bytes, then record what arrives ----- */

struct result {
    char out[160];
    struct conn_rec srv;
    bool offload_ok; /* tlsk-serve: its access log shows the mode's offload */
};

static void add(char *out, size_t cap, const char *tok)
{
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "%s%s", l ? " " : "", tok);
}

/* Replies in what the server sent: the echo of g_msg, or HTTP response heads. */
struct replies {
    size_t bytes, n, reported;
    unsigned char tail[4];
};

static void count_replies(struct replies *rp, const unsigned char *d, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        memmove(rp->tail, rp->tail + 1, 3);
        rp->tail[3] = d[i];
        if (g_http && memcmp(rp->tail, "\r\n\r\n", 4) == 0) {
            rp->n++;
        }
    }
    rp->bytes += len;
    if (!g_http) {
        rp->n = rp->bytes / g_msg_len;
    }
}

/* One message and its reply: the connection works and the server has made its offload
 * decision. */
static bool sync_echo(struct hp_peer *p, char *why, size_t whylen)
{
    struct hp_event *ev = malloc(sizeof *ev);
    struct replies rp = { 0 };
    bool ok;

    if (!ev || hp_send_record(p, TLSK_REC_APPDATA, g_msg, g_msg_len) != 0) {
        free(ev);
        return false;
    }
    while (rp.n < 1) {
        hp_next(p, ev, WAIT_MS);
        if (ev->kind != HP_RECORD) {
            snprintf(why, whylen, "event %d", ev->kind);
            break;
        }
        if (ev->type == TLSK_REC_APPDATA) {
            count_replies(&rp, ev->pt, ev->len);
        } else if (ev->type != TLSK_REC_HANDSHAKE) { /* TLS 1.3 tickets come first */
            snprintf(why, whylen, "record type %d", ev->type);
            break;
        }
    }
    ok = rp.n == 1 && (g_http || rp.bytes == g_msg_len);
    free(ev);
    return ok;
}

static bool g_checked_seal[NCOMBOS];
static int g_seal_ok;

/* tlsk-serve, one per mode (started in main when it is built). */
static struct p_kid g_serve[NMODES];
static int g_serve_port[NMODES];

/* Bytes in tlsk-serve's log (its stderr) so far. */
static size_t serve_log_size(int m)
{
    struct stat st;
    return g_serve[m].log >= 0 && fstat(g_serve[m].log, &st) == 0 ? (size_t)st.st_size : 0;
}

/* tlsk-serve's first access log line after from for the request from client port cport,
 * into line: the offset just past it, or 0 when none came. */
static size_t serve_line(int m, int cport, size_t from, char *line, size_t cap)
{
    char needle[64];
    size_t end = 0;

    snprintf(needle, sizeof needle, "127.0.0.1:%d ", cport);
    line[0] = '\0';
    /* The line is written once the response is out: it may lag the response a little.  It
     * is one write(2), but a reader can see a write that straddles a page of the file half
     * done (the file grows page by page): a line counts only once its newline is there. */
    for (int i = 0; i < 100 && !end; i++) {
        char *log = p_kid_log(&g_serve[m]), *p, *e;
        if (log && strlen(log) >= from && (p = strstr(log + from, needle)) &&
            (e = strchr(p, '\n'))) {
            snprintf(line, cap, "%.*s", (int)(e - p), p);
            end = (size_t)(e + 1 - log);
        }
        free(log);
        if (!end) {
            poll(NULL, 0, 10);
        }
    }
    return end;
}

/* tlsk-serve's access log line, written after from, for the request from client port
 * cport: the offload the mode says? */
static bool serve_offloaded(int m, int cport, size_t from)
{
    char line[512];
    bool ok = false;

    serve_line(m, cport, from, line, sizeof line);
    if (m == M_SOFT) {
        ok = strstr(line, "tx=userspace/no_ulp rx=userspace/no_ulp lean") != NULL;
    } else {
        ok = strstr(line, "tx=kernel") && (m == M_TXRX) == (strstr(line, "rx=kernel") != NULL);
    }
    if (!ok) {
        tap_diag("tlsk-serve %s, client port %d: %s", mode_name[m], cport,
                 line[0] ? line : "no access log line");
    }
    return ok;
}

static void run_one(const struct scenario *sc, int ci, int m, struct result *r)
{
    struct hp_peer p;
    struct hp_event *ev = malloc(sizeof *ev);
    struct plan pl = { 0 };
    struct sockaddr_in me = { 0 };
    socklen_t ml = sizeof me;
    struct replies rp = { 0 };
    bool sent_close = false;
    char why[200] = "", tok[64];
    size_t log0;

    memset(r, 0, sizeof *r);
    r->srv.port = -1;
    if (!ev) {
        snprintf(r->out, sizeof r->out, "ENOMEM");
        return;
    }
    log0 = g_http ? serve_log_size(m) : 0;
    if (hp_connect(&p, g_http ? g_serve_port[m] : g_port[ci][m], combos[ci].version,
                   combos[ci].suite, why, sizeof why)) {
        snprintf(r->out, sizeof r->out, "NO-HANDSHAKE(%s)", why);
        goto out;
    }
    getsockname(p.fd, (struct sockaddr *)&me, &ml);
    if (!g_checked_seal[ci]) {
        /* The hostile sealer makes the records tlsk's own record layer makes. */
        unsigned char a[128], b[128];
        size_t al = 0, bl = 0;
        uint64_t seq = p.wseq;
        g_checked_seal[ci] = true;
        if (tlsk__record_seal(&p.wk, seq, TLSK_REC_APPDATA, g_msg, g_msg_len, a, sizeof a,
                              &al) == 0 &&
            (bl = hp_seal(&p, TLSK_REC_APPDATA, g_msg, g_msg_len, b, sizeof b)) == al &&
            memcmp(a, b, al) == 0) {
            g_seal_ok++;
        }
        p.wseq = seq;
    }
    if (!sync_echo(&p, why, sizeof why)) {
        snprintf(r->out, sizeof r->out, "NO-ECHO(%s)", why);
        goto out;
    }
    if (g_http && m == M_SOFT) {
        /* tlsk-serve gives a connection to tlsk's record layer at its first wait after a
         * response (TLSK_SOCKET_LEAN_IDLE): the second message is the first it carries, and
         * the scenario's records after it are its to judge. */
        char line[512];
        log0 = serve_line(m, ntohs(me.sin_port), log0, line, sizeof line);
        if (!log0 || !sync_echo(&p, why, sizeof why)) {
            snprintf(r->out, sizeof r->out, "NO-ECHO(%s)", log0 ? why : "no access log line");
            goto out;
        }
    }
    if (g_http && m != M_USER) {
        r->offload_ok = serve_offloaded(m, ntohs(me.sin_port), log0);
    }
    if (sc->build(&p, &pl) != 0) {
        add(r->out, sizeof r->out, "SEND-FAILED");
    }
    if (pl.half_close) {
        shutdown(p.fd, SHUT_WR);
    }
    for (int guard = 0; guard < 64; guard++) {
        hp_next(&p, ev, WAIT_MS);
        if (ev->kind == HP_RECORD && ev->type == TLSK_REC_APPDATA) {
            count_replies(&rp, ev->pt, ev->len);
            if (pl.echo && rp.n >= pl.echo && !sent_close && !pl.half_close) {
                static const unsigned char cn[2] = { SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY };
                sent_close = true;
                hp_send_record(&p, TLSK_REC_ALERT, cn, 2);
            }
            continue;
        }
        if (rp.n > rp.reported || (!g_http && rp.bytes % g_msg_len)) {
            snprintf(tok, sizeof tok, "D%zu%s", rp.n - rp.reported,
                     !g_http && rp.bytes % g_msg_len ? "+" : "");
            add(r->out, sizeof r->out, tok);
            rp.reported = rp.n;
        }
        if (ev->kind == HP_RECORD) {
            if (ev->type == TLSK_REC_ALERT && ev->len == 2) {
                snprintf(tok, sizeof tok, "A%d.%d", ev->pt[0], ev->pt[1]);
            } else if (ev->type == TLSK_REC_ALERT) {
                snprintf(tok, sizeof tok, "A?%zu", ev->len);
            } else if (ev->type == TLSK_REC_HANDSHAKE && ev->len) {
                snprintf(tok, sizeof tok, "H%d", ev->pt[0]);
            } else {
                snprintf(tok, sizeof tok, "T%d", ev->type);
            }
            add(r->out, sizeof r->out, tok);
            continue;
        }
        if (ev->kind == HP_FIN) {
            int e = hp_finish(&p, WAIT_MS);
            add(r->out, sizeof r->out, "FIN");
            if (e == -ETIMEDOUT) {
                add(r->out, sizeof r->out, "+NO-CLOSE");
            } else if (e) {
                add(r->out, sizeof r->out, e == EPIPE || e == ECONNRESET ? "+RST" : "+ERR");
            }
        } else if (ev->kind == HP_RST) {
            add(r->out, sizeof r->out, ev->err == ECONNRESET ? "RST" : "ERR");
        } else if (ev->kind == HP_TIMEOUT) {
            add(r->out, sizeof r->out, "TIMEOUT");
        } else {
            add(r->out, sizeof r->out, "GARBAGE");
        }
        break;
    }
out:
    if (!g_http && p.fd >= 0 && me.sin_port) {
        r->srv = server_rec(ntohs(me.sin_port));
    }
    hp_free(&p);
    free(ev);
}

/* ---- expectations ------------------------------------------------------------------------- */

static bool matches(const char *alts, const char *out)
{
    size_t n = strlen(out);

    while (alts && *alts) {
        const char *bar = strchr(alts, '|');
        size_t l = bar ? (size_t)(bar - alts) : strlen(alts);
        if (l == n && strncmp(alts, out, n) == 0) {
            return true;
        }
        alts = bar ? bar + 1 : NULL;
    }
    return false;
}

/* Where userspace OpenSSL 3.0 answers otherwise than the RFC: the test pins what it does. */
struct deviation {
    const char *id;
    int version;
    const char *got;
    const char *why;
};
static const struct deviation user_dev[] = {
    { "hdr-version", TLS1_3_VERSION, FAIL(50),
      "OpenSSL checks legacy_record_version and sends decode_error; RFC 8446 5.1 says to "
      "ignore it, and since the header is the AAD the record fails as bad_record_mac" },
    { "runt", TLS1_2_VERSION, FAIL(80),
      "a TLS 1.2 record shorter than nonce and tag makes OpenSSL 3.0's cipher provider fail "
      "(invalid aad/data): internal_error, where RFC 5246 6.2.3.3 has bad_record_mac" },
    { "oversize-gap", TLS1_2_VERSION, FAIL(22),
      "OpenSSL answers record_overflow past its TLS 1.2 record buffer, below the 2^14+2048 "
      "of RFC 5246 6.2.3, where the RFC would let the record fail as bad_record_mac" },
    { "ku-long", TLS1_3_VERSION, FAIL(47),
      "OpenSSL checks the length against KeyUpdate's maximum first: illegal_parameter, "
      "where RFC 8446 6.2 names decode_error" },
    { "alert-long", TLS1_2_VERSION, FAIL(10),
      "OpenSSL answers a malformed alert with unexpected_message (SSL_R_INVALID_ALERT), "
      "RFC 5246 7.2.2 names decode_error" },
    { "alert-long", TLS1_3_VERSION, FAIL(10),
      "OpenSSL answers a malformed alert with unexpected_message (SSL_R_INVALID_ALERT), "
      "RFC 8446 6.2 names decode_error" },
    { "alert-short", TLS1_2_VERSION, FAIL(10),
      "OpenSSL answers a malformed alert with unexpected_message (SSL_R_INVALID_ALERT), "
      "RFC 5246 7.2.2 names decode_error" },
    { "alert-short", TLS1_3_VERSION, FAIL(10),
      "OpenSSL answers a malformed alert with unexpected_message (SSL_R_INVALID_ALERT), "
      "RFC 8446 6.2 names decode_error" },
    { NULL, 0, NULL, NULL },
};

/* Where the kernel cannot be made to answer as OpenSSL does (mode, version, kernel re-key:
 * -1 any). */
struct kdiff {
    const char *id;
    int mode;
    int version;
    int rekey;
    const char *got;
    const char *why;
};
static const struct kdiff kernel_dev[] = {
    { "hdr-type", M_TXRX, TLS1_3_VERSION, -1, GOES_ON,
      "the kernel builds a TLS 1.3 record's AAD with type 23 whatever the header says "
      "(tls_make_aad), so a record whose outer type was changed still authenticates and its "
      "data is delivered; the library never sees the outer type.  OpenSSL: unexpected_message" },
    { "ccs-plain", M_TXRX, TLS1_3_VERSION, -1, FAIL(20),
      "TLS 1.3 receive in the kernel decrypts every record whatever its outer type: a "
      "plaintext ChangeCipherSpec fails (EBADMSG) and gets bad_record_mac; OpenSSL sees the "
      "type and answers unexpected_message" },
    { "no-type", M_TXRX, TLS1_3_VERSION, -1, FAIL(20),
      "the kernel reports a record of padding only as EBADMSG, as if it had failed "
      "authentication: bad_record_mac; OpenSSL answers unexpected_message (RFC 8446 5.4)" },
    { "oversize-gap", M_TXRX, TLS1_3_VERSION, -1, FAIL(22),
      "the kernel refuses a record longer than the largest legal one (2^14 + 1 + 16) with "
      "EMSGSIZE before decrypting: record_overflow; OpenSSL allows up to 2^14 + 256, "
      "decrypts, and answers bad_record_mac" },
    { "runt", M_TXRX, TLS1_2_VERSION, -1, FAIL(20),
      "the kernel refuses a record shorter than nonce and tag with EBADMSG, as a failed "
      "authentication: bad_record_mac (as RFC 5246 asks); OpenSSL 3.0 says internal_error" },
    { "empty-flood", M_TXRX, TLS1_2_VERSION, -1, GOES_ON,
      "the kernel drops zero-length data records without a trace, so OpenSSL's limit of 32 "
      "in a row (record too small: unexpected_message) cannot be applied" },
    { "empty-flood", M_TXRX, TLS1_3_VERSION, -1, GOES_ON,
      "the kernel drops zero-length data records without a trace, so OpenSSL's limit of 32 "
      "in a row (record too small: unexpected_message) cannot be applied" },
    { "ku-split", M_TXRX, TLS1_3_VERSION, 0, "FIN",
      "receive in the kernel without re-key (the TLSK_OFFLOAD_RX_TLS13 opt-in) cannot follow "
      "the peer's KeyUpdate, whole or split: the connection ends (docs/KERNEL.md 7.5, 7.8)" },
    { "ku-split3", M_TXRX, TLS1_3_VERSION, 0, "FIN",
      "receive in the kernel without re-key (the TLSK_OFFLOAD_RX_TLS13 opt-in) cannot follow "
      "the peer's KeyUpdate, whole or split: the connection ends (docs/KERNEL.md 7.5, 7.8)" },
    { "ku-requested", M_TX, TLS1_3_VERSION, 0, GOES_ON,
      "before Linux 6.14 kernel transmit cannot take a new key: the KeyUpdate the peer asked "
      "for is not sent and data goes on under the old key (docs/KERNEL.md 7.5)" },
    { "ku-requested", M_TXRX, TLS1_3_VERSION, 0, "FIN",
      "receive in the kernel without re-key (the TLSK_OFFLOAD_RX_TLS13 opt-in) cannot follow "
      "the peer's KeyUpdate: the connection ends (docs/KERNEL.md 7.5)" },
    { "runt", M_SOFT, TLS1_2_VERSION, -1, FAIL(20),
      "tlsk's record layer refuses a record shorter than nonce and tag as one that does not "
      "authenticate: bad_record_mac, as RFC 5246 asks; OpenSSL 3.0 says internal_error" },
    { NULL, 0, 0, 0, NULL, NULL },
};

static const struct deviation *user_deviation(const char *id, int version, const char *got)
{
    for (size_t i = 0; user_dev[i].id; i++) {
        if (strcmp(user_dev[i].id, id) == 0 && user_dev[i].version == version &&
            strcmp(user_dev[i].got, got) == 0) {
            return &user_dev[i];
        }
    }
    return NULL;
}

static const struct kdiff *kernel_deviation(const char *id, int m, int version, const char *got)
{
    int rekey = tlsk_kernel_probe()->rekey ? 1 : 0;
    for (size_t i = 0; kernel_dev[i].id; i++) {
        const struct kdiff *k = &kernel_dev[i];
        if (strcmp(k->id, id) == 0 && k->mode == m && k->version == version &&
            (k->rekey < 0 || k->rekey == rekey) && strcmp(k->got, got) == 0) {
            return k;
        }
    }
    return NULL;
}

/* ---- main ---------------------------------------------------------------------------------- */

/* The echo server's verdict per scenario, combination and kernel mode: 1 identical to
 * userspace, 2 a known kernel limit, 0 otherwise.  tlsk-serve's differences are judged
 * against it. */
static int g_lib_verdict[TLSK_ARRAY_SIZE(scenarios)][NCOMBOS][NMODES];

struct tally {
    int runs, pairs, same, known, other;
    int64_t linger_max[NMODES];
    char linger_what[NMODES][96];
    int off_n[NCOMBOS][NMODES], off_bad[NCOMBOS][NMODES];
};

/* The library's evented server: every pair must be identical (or a known kernel limit),
 * and userspace must be what the RFC asks (or a known OpenSSL choice). */
static void run_library(struct tally *t, int *checked, int *user_rfc, int *user_known)
{
    static struct result res[NMODES];

    for (int s = 0; s < NSCEN; s++) {
        const struct scenario *sc = &scenarios[s];
        for (int c = 0; c < NCOMBOS; c++) {
            const char *rfc = combos[c].version == TLS1_3_VERSION ? sc->rfc13 : sc->rfc12;
            if (!applies(sc, c)) {
                continue;
            }
            for (int m = 0; m < NMODES; m++) {
                if (!g_run[m] || m == M_SOFT) {
                    continue;
                }
                /* A split KeyUpdate through kernel receive that re-keys: the same key again
                 * after the piece that paused the kernel, then the next key (KERNEL.md §7.8). */
                bool split = m == M_TXRX && tlsk_kernel_probe()->rekey &&
                             (!strcmp(sc->id, "ku-split") || !strcmp(sc->id, "ku-split3"));
                long long rk0 = split ? h_tls_stat("TlsRxRekeyOk") : 0;
                long long rke0 = split ? h_tls_stat("TlsRxRekeyError") : 0;
                run_one(sc, c, m, &res[m]);
                t->runs++;
                if (split) {
                    long long rk = h_tls_stat("TlsRxRekeyOk") - rk0;
                    long long rke = h_tls_stat("TlsRxRekeyError") - rke0;
                    TAP_OK(rk == 2 && rke == 0, "%s, %s: tls_stat TlsRxRekeyOk +%lld (want 2: the "
                           "key again after the first piece, then the next), TlsRxRekeyError +%lld",
                           sc->id, combos[c].label, rk, rke);
                }
                {
                    /* The server's lingering close ends with the peer's FIN (ours came at
                     * the end of the run), not at its time limit. */
                    int64_t t0 = tlsk__now_ms(), dt;
                    while (atomic_load(&g_open) > 0 && tlsk__now_ms() - t0 < 3000) {
                        poll(NULL, 0, 2);
                    }
                    dt = tlsk__now_ms() - t0;
                    if (dt > t->linger_max[m]) {
                        t->linger_max[m] = dt;
                        snprintf(t->linger_what[m], sizeof t->linger_what[m], "%s, %s", sc->id,
                                 combos[c].label);
                    }
                }
                if (m != M_USER && res[m].srv.secure) {
                    const struct tlsk_offload *o = &res[m].srv.off;
                    t->off_n[c][m]++;
                    if (o->tx.mode != TLSK_MODE_KERNEL ||
                        (m == M_TXRX) != (o->rx.mode == TLSK_MODE_KERNEL)) {
                        t->off_bad[c][m]++;
                    }
                }
            }
            /* Userspace against the RFC. */
            (*checked)++;
            if (matches(rfc, res[M_USER].out)) {
                (*user_rfc)++;
                TAP_OK(1, "%s, %s: userspace gives \"%s\" as RFC %s asks", sc->id,
                       combos[c].label, res[M_USER].out,
                       combos[c].version == TLS1_3_VERSION ? "8446" : "5246");
            } else {
                const struct deviation *d =
                    user_deviation(sc->id, combos[c].version, res[M_USER].out);
                if (d) {
                    (*user_known)++;
                }
                if (!TAP_OK(d != NULL, "%s, %s: userspace gives \"%s\"%s \"%s\"", sc->id,
                            combos[c].label, res[M_USER].out,
                            d ? ", OpenSSL's own choice where the RFC asks" : ", the RFC asks",
                            rfc)) {
                    tap_diag("  %s; server: %s %s", sc->what, tlsk_err_name(res[M_USER].srv.err),
                             res[M_USER].srv.detail);
                } else if (d) {
                    tap_diag("  userspace deviates from the RFC: %s", d->why);
                }
            }
            /* Each kernel mode against userspace. */
            for (int m = M_TX; m < NMODES; m++) {
                const struct kdiff *k;
                if (!g_run[m] || m == M_SOFT) {
                    continue;
                }
                t->pairs++;
                if (strcmp(res[m].out, res[M_USER].out) == 0) {
                    t->same++;
                    g_lib_verdict[s][c][m] = 1;
                    TAP_OK(1, "%s, %s: %s = userspace (\"%s\")", sc->id, combos[c].label,
                           mode_name[m], res[m].out);
                    continue;
                }
                k = kernel_deviation(sc->id, m, combos[c].version, res[m].out);
                if (k) {
                    t->known++;
                    g_lib_verdict[s][c][m] = 2;
                } else {
                    t->other++;
                }
                if (!TAP_OK(k != NULL, "%s, %s: %s gives \"%s\", userspace \"%s\"%s", sc->id,
                            combos[c].label, mode_name[m], res[m].out, res[M_USER].out,
                            k ? " (known kernel limit)" : "")) {
                    tap_diag("  %s; server: %s %s", sc->what, tlsk_err_name(res[m].srv.err),
                             res[m].srv.detail);
                } else {
                    tap_diag("  kernel limit: %s", k->why);
                }
            }
        }
    }
}

/* tlsk-serve (tools/), the same scenarios with HTTP requests for messages: each kernel mode
 * against its own userspace mode; a difference is allowed only where the library's server
 * shows the same kernel limit.  What tlsk-serve does that the RFC does not ask for in every
 * mode alike (a reset) is listed. */
static void run_serve(struct tally *t, int *tool_diffs, int *broken)
{
    static struct result res[NMODES];

    for (int s = 0; s < NSCEN; s++) {
        const struct scenario *sc = &scenarios[s];
        for (int c = 0; c < NCOMBOS; c++) {
            if (!applies(sc, c)) {
                continue;
            }
            for (int m = 0; m < NMODES; m++) {
                if (!g_serve_port[m]) {
                    continue;
                }
                if (m == M_TXRX && combos[c].version == TLS1_3_VERSION &&
                    !tlsk_kernel_probe()->rekey) {
                    continue; /* tlsk-serve has no TLS 1.3 receive opt-in: that is tx again */
                }
                run_one(sc, c, m, &res[m]);
                t->runs++;
                if (getenv("TLSK_HOSTILE_VERBOSE")) {
                    tap_diag("tlsk-serve %s, %s, %s: %s", sc->id, combos[c].label, mode_name[m],
                             res[m].out);
                }
                if (!strncmp(res[m].out, "NO-", 3)) {
                    (*broken)++;
                    tap_diag("tlsk-serve %s, %s, %s: %s", sc->id, combos[c].label, mode_name[m],
                             res[m].out);
                }
                if (m != M_USER) {
                    t->off_n[c][m]++;
                    t->off_bad[c][m] += !res[m].offload_ok;
                }
            }
            for (int m = M_TX; m < NMODES; m++) {
                bool same;
                if (!g_serve_port[m] || (m == M_TXRX && combos[c].version == TLS1_3_VERSION &&
                                         !tlsk_kernel_probe()->rekey)) {
                    continue;
                }
                t->pairs++;
                same = strcmp(res[m].out, res[M_USER].out) == 0;
                if (!same && m == M_SOFT &&
                    kernel_deviation(sc->id, m, combos[c].version, res[m].out)) {
                    g_lib_verdict[s][c][m] = 2; /* a listed choice of tlsk's record layer */
                }
                if (same) {
                    t->same++;
                } else if (g_lib_verdict[s][c][m] == 2) {
                    t->known++; /* the kernel limit the library's server shows too */
                } else {
                    t->other++;
                    (*tool_diffs)++;
                    tap_diag("tlsk-serve differs: %s, %s: %s \"%s\", userspace \"%s\" (the "
                             "library's server: identical)",
                             sc->id, combos[c].label, mode_name[m], res[m].out,
                             res[M_USER].out);
                }
                TAP_OK(same || g_lib_verdict[s][c][m] == 2,
                       "tlsk-serve %s, %s: %s \"%s\", userspace \"%s\"%s", sc->id,
                       combos[c].label, mode_name[m], res[m].out, res[M_USER].out,
                       same ? "" : " (the kernel limit the library's server shows)");
            }
            if (strstr(res[M_USER].out, "RST")) {
                tap_diag("tlsk-serve resets: %s, %s: userspace \"%s\"", sc->id, combos[c].label,
                         res[M_USER].out);
            }
        }
    }
}

static bool start_serve(void)
{
    static const char *const pol[NMODES] = { "off", "tx", "auto", "auto" };
    char root[sizeof p_tmp + 16], index[sizeof root + 16];

    p_tools_dir();
    p_to = 20000;
    snprintf(p_tmp, sizeof p_tmp, "/tmp/tlsk-hostile-XXXXXX");
    if (!mkdtemp(p_tmp)) {
        return false;
    }
    snprintf(root, sizeof root, "%s", p_tmp);
    snprintf(index, sizeof index, "%s/index.html", root);
    if (p_write_file(index, "hostile\n", 8) != 0) {
        return false;
    }
    for (int m = 0; m < NMODES; m++) {
        const char *argv[] = { "tlsk-serve", "--cert", h_fixture("agent1-cert.pem"), "--key",
                               h_fixture("agent1-key.pem"), "--root", root, "--listen",
                               "127.0.0.1:0", "--workers", "1", "--offload", pol[m], NULL };
        int port;
        if (!g_run[m]) {
            continue;
        }
        port = p_start_tool(&g_serve[m], "tlsk-serve", argv);
        if (port <= 0) {
            return false;
        }
        g_serve_port[m] = port;
    }
    return true;
}

static void stop_serve(void)
{
    char index[sizeof p_tmp + 16];

    for (int m = 0; m < NMODES; m++) {
        if (g_serve_port[m]) {
            p_kid_stop(&g_serve[m]);
            p_kid_free(&g_serve[m]);
        }
    }
    snprintf(index, sizeof index, "%s/index.html", p_tmp);
    unlink(index);
    rmdir(p_tmp);
}

static void offload_checks(const char *who, const struct tally *t)
{
    for (int c = 0; c < NCOMBOS; c++) {
        for (int m = M_TX; m < NMODES; m++) {
            if (!g_run[m] || t->off_n[c][m] == 0) {
                continue;
            }
            TAP_OK(t->off_bad[c][m] == 0, "%s, %s, %s: %d of %d connections offloaded as the "
                                          "mode says",
                   who, combos[c].label, mode_name[m], t->off_n[c][m] - t->off_bad[c][m],
                   t->off_n[c][m]);
        }
    }
}

int main(void)
{
    static struct tally lib, srv;
    int user_rfc = 0, user_known = 0, checked = 0, tool_diffs = 0, broken = 0, nservers = 0;
    bool kernel = tlsk_kernel_probe()->ulp, serve;
    pthread_t lt;
    int64_t t0 = tlsk__now_ms(), t1;
    static const char http_req[] = "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n";

    signal(SIGPIPE, SIG_IGN);
    alarm(600);
    if (h_expect_ktls() && !TAP_OK(kernel, "kTLS kernel present")) {
        return tap_done();
    }
    g_run[M_USER] = true;
    g_run[M_TX] = g_run[M_TXRX] = kernel;
    if (!kernel) {
        tap_diag("no kTLS here (%s): userspace mode only",
                 tlsk_err_name(tlsk_kernel_probe()->ulp_err));
    } else if (!tlsk_kernel_probe()->rekey) {
        tap_diag("kernel without TLS 1.3 re-key: tx+rx for TLS 1.3 is the TLSK_OFFLOAD_RX_TLS13 "
                 "opt-in");
    }
    if (tlsk_loop_new(&g_loop) != 0) {
        tap_bail("loop");
    }
    for (int c = 0; c < NCOMBOS; c++) {
        for (int m = 0; m < NMODES; m++) {
            if (g_run[m] && start_server(c, m) != 0) {
                tap_bail("cannot start a server");
            }
            nservers += g_run[m];
        }
    }
    h_spawn(&lt, loop_main, NULL);
    run_library(&lib, &checked, &user_rfc, &user_known);
    atomic_store(&g_stop, 1);
    pthread_join(lt, NULL);
    TAP_IS(g_loop_free_rc, 0, "every connection closed (lingering ones included) and the loop "
                              "freed");
    TAP_IS(g_server_closes, nservers, "each server's close event came");
    TAP_IS(g_seal_ok, NCOMBOS, "the hostile sealer makes the records tlsk__record_seal makes");
    if (h_expect_ktls()) {
        offload_checks("evented server", &lib);
    }
    for (int m = 0; m < NMODES; m++) {
        if (g_run[m]) {
            /* 1 s is the limit; the peer's FIN comes right after the run. */
            TAP_OK(lib.linger_max[m] < 500, "%s: every lingering close ended on the peer's FIN "
                                            "(slowest %lld ms: %s)",
                   mode_name[m], (long long)lib.linger_max[m], lib.linger_what[m]);
        }
    }
    tap_diag("evented server: scenarios %d x modes %d x versions 2 x ciphers 2: %d runs (%d "
             "scenario/version/cipher combinations); userspace as the RFC asks %d, OpenSSL's own "
             "choice %d, other %d; kernel/userspace pairs %d: identical %d, known kernel limits "
             "%d, other %d; %.1f s",
             NSCEN, kernel ? NMODES : 1, lib.runs, checked, user_rfc, user_known,
             checked - user_rfc - user_known, lib.pairs, lib.same, lib.known, lib.other,
             (double)(tlsk__now_ms() - t0) / 1000);

    /* The same against tlsk-serve, when it is built. */
    t1 = tlsk__now_ms();
    g_http = true;
    g_msg = (const unsigned char *)http_req;
    g_msg_len = sizeof http_req - 1;
    g_run[M_SOFT] = !kernel;
    serve = start_serve();
    if (TAP_OK(serve, "tlsk-serve started in each mode (%s)", p_tools)) {
        run_serve(&srv, &tool_diffs, &broken);
        TAP_IS(broken, 0, "tlsk-serve: every run completed its handshake and first request");
        if (h_expect_ktls()) {
            offload_checks("tlsk-serve", &srv);
        }
        if (g_run[M_SOFT]) {
            for (int c = 0; c < NCOMBOS; c++) {
                TAP_OK(srv.off_n[c][M_SOFT] > 0 && srv.off_bad[c][M_SOFT] == 0,
                       "tlsk-serve, %s: %d of %d connections lean with tlsk's record layer "
                       "(access log: tx=userspace/no_ulp rx=userspace/no_ulp lean)",
                       combos[c].label, srv.off_n[c][M_SOFT] - srv.off_bad[c][M_SOFT],
                       srv.off_n[c][M_SOFT]);
            }
        }
        tap_diag("tlsk-serve: %d runs; kernel/userspace pairs %d: identical %d, kernel limits "
                 "the library's server shows too %d, differences of the tool's own %d%s; %.1f s",
                 srv.runs, srv.pairs, srv.same, srv.known, tool_diffs,
                 tool_diffs ? " (listed above)" : "", (double)(tlsk__now_ms() - t1) / 1000);
    }
    stop_serve();
    return tap_done();
}

/*
 * mkseed_hello.c DIR - seeds for fuzz_hello: real ClientHellos of tlsk clients, captured over
 * a memory pair to the fuzzer's own server (hello_setup.h; this one's session store keeps
 * and answers sessions).  Each seed is the selector byte of the server configuration it was
 * made against, then the client's first flight.  Full handshakes and resumptions: TLS 1.3
 * with and without SNI, TLS 1.3 PSK from a stateful and from a stateless ticket, TLS 1.2
 * with a session id and with a session ticket, the SNI table's exact and wildcard names.
 * Prints one line per connection (resumed or not) to stdout.
 * Fixtures: $TLSK_FUZZ_FIXTURES or build/fixtures/rsa, as the fuzzer.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hello_setup.h"

static struct hello_env env;
static const char *outdir;

/* The server's external store: everything it is given, answered by id. */
static struct {
    unsigned char id[256];
    size_t id_len;
    unsigned char *data;
    size_t len;
} tab[256];
static size_t ntab;

static void new_session(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                        const unsigned char *data, size_t data_len, void *ud)
{
    (void)s;
    (void)ud;
    if (ntab == sizeof tab / sizeof tab[0] || id_len > sizeof tab[0].id) {
        return;
    }
    tab[ntab].data = malloc(data_len);
    if (!tab[ntab].data) {
        return;
    }
    memcpy(tab[ntab].id, id, id_len);
    tab[ntab].id_len = id_len;
    memcpy(tab[ntab].data, data, data_len);
    tab[ntab].len = data_len;
    ntab++;
}

static int resume_session(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                          void *ud)
{
    (void)ud;
    for (size_t i = ntab; i-- > 0;) {
        if (tab[i].id_len == id_len && memcmp(tab[i].id, id, id_len) == 0) {
            return tlsk_socket_resume_answer(s, tab[i].data, tab[i].len, 0);
        }
    }
    return 0;
}

static const struct tlsk_session_store store = {
    .new_session = new_session,
    .resume_session = resume_session,
};

/* The client's latest session. */
static unsigned char sess[16384];
static size_t sess_len;

static void on_session(struct tlsk_socket *s, const unsigned char *data, size_t len, void *ud)
{
    (void)s;
    (void)ud;
    if (len <= sizeof sess) {
        memcpy(sess, data, len);
        sess_len = len;
    }
}

static int write_seed(const char *name, unsigned sel, const unsigned char *b, size_t n)
{
    char path[4096];
    unsigned char s = (unsigned char)sel;
    FILE *f;

    snprintf(path, sizeof path, "%s/seed-%s", outdir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(&s, 1, 1, f) != 1 || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* Move what a has written to b.  Returns bytes moved; the first flight of the client is
 * also kept in *first when first is not NULL and still empty. */
static size_t shuttle(struct tlsk_socket *a, struct tlsk_socket *b, unsigned char *first,
                      size_t *first_len)
{
    static unsigned char buf[65536];
    size_t moved = 0;
    ssize_t n;

    while ((n = tlsk_pair_pull(a, buf, sizeof buf)) > 0) {
        if (first && *first_len == 0) {
            memcpy(first, buf, (size_t)n);
            *first_len = (size_t)n;
        }
        tlsk_pair_feed(b, buf, (size_t)n);
        moved += (size_t)n;
    }
    return moved;
}

/*
 * One connection: a tlsk client (max_version, SNI sn, offering the last session when
 * resume) against the server with default context sel & 3 and the SNI table.  Writes the
 * seed name with the selector byte sel.  Returns 0 when both handshakes completed.
 */
static int conn(const char *name, unsigned sel, int max_version, const char *sn, bool resume)
{
    static unsigned char hello[65536];
    struct tlsk_context_options co = { 0 };
    struct tlsk_socket_options so = { 0 }, ss = { 0 };
    struct tlsk_context *cctx = NULL;
    struct tlsk_socket *c = NULL, *s = NULL;
    size_t hello_len = 0;
    int crc = -EAGAIN, src = -EAGAIN, rc = -1;
    unsigned char tmp[256];
    char err[256];

    co.flags = TLSK_VERIFY_NONE_INSECURE;
    co.max_version = max_version;
    if (tlsk_context_new(&cctx, &co, err, sizeof err) != 0) {
        fprintf(stderr, "mkseed_hello: client context: %s\n", err);
        return -1;
    }
    so.servername = sn;
    so.on_session = on_session;
    if (resume) {
        so.session = sess;
        so.session_len = sess_len;
    }
    ss.sni = env.sni;
    if (tlsk_pair_new(&c, cctx, 0, &so) != 0 || tlsk_pair_new(&s, env.def[sel & 3], 1, &ss) != 0) {
        fprintf(stderr, "mkseed_hello: %s: pairs\n", name);
        goto out;
    }
    for (int i = 0; i < 100 && (crc != 0 || src != 0); i++) {
        size_t moved;
        if (crc != 0) {
            crc = tlsk_socket_handshake(c);
        }
        moved = shuttle(c, s, hello, &hello_len);
        if (src != 0) {
            src = tlsk_socket_handshake(s);
        }
        moved += shuttle(s, c, NULL, NULL);
        if ((crc != 0 && crc != -EAGAIN) || (src != 0 && src != -EAGAIN) ||
            (moved == 0 && (crc != 0 || src != 0) && i > 0)) {
            break;
        }
    }
    if (crc != 0 || src != 0) {
        fprintf(stderr, "mkseed_hello: %s: handshake: client %s (%s), server %s (%s)\n", name,
                tlsk_err_name(crc), tlsk_socket_error_detail(c), tlsk_err_name(src),
                tlsk_socket_error_detail(s));
        goto out;
    }
    /* TLS 1.3 tickets come after the handshake: let the client read them. */
    for (int i = 0; i < 4; i++) {
        shuttle(s, c, NULL, NULL);
        (void)tlsk_socket_read(c, tmp, sizeof tmp);
        (void)tlsk_socket_read(s, tmp, sizeof tmp);
        shuttle(c, s, NULL, NULL);
    }
    printf("%-28s %s %s, %s, %zu-byte ClientHello\n", name, tlsk_socket_version(c),
           tlsk_socket_cipher(c), tlsk_socket_session_reused(c) ? "resumed" : "full handshake",
           hello_len);
    if (resume && !tlsk_socket_session_reused(c)) {
        fprintf(stderr, "mkseed_hello: %s: did not resume\n", name);
        goto out;
    }
    rc = write_seed(name, sel, hello, hello_len);
out:
    tlsk_socket_free(c);
    tlsk_socket_free(s);
    tlsk_context_free(cctx);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    setenv("TLSK_PROBE_DISABLE", "1", 1);
    hello_env_init(&env, NULL, &store);

    /* Default context 0: TLS 1.3 stateful tickets, the store answers the PSK identity. */
    rc |= conn("tls13-full", 0, 0, "localhost", false);
    rc |= conn("tls13-psk-stateful", 0, 0, "localhost", true);
    /* The same ClientHello against a pending lookup, and fed in two halves. */
    rc |= conn("tls13-psk-stateful-pending", 0 | 2u << 2 | 0x10, 0, "localhost", true);
    /* Default context 1: stateless tickets (the fuzzer's server resumes these too). */
    rc |= conn("tls13-nosni-full", 1, 0, NULL, false);
    rc |= conn("tls13-nosni-psk-stateless", 1, 0, NULL, true);
    /* Default context 2: TLS 1.2, no tickets: a session id the store is asked for. */
    rc |= conn("tls12-full", 2, TLSK_TLS1_2, "localhost", false);
    rc |= conn("tls12-session-id", 2, TLSK_TLS1_2, "localhost", true);
    rc |= conn("tls12-session-id-answer", 2 | 1u << 2, TLSK_TLS1_2, "localhost", true);
    /* Default context 3: no store; TLS 1.2 with a session ticket. */
    rc |= conn("tls12-ticket-full", 3, TLSK_TLS1_2, "localhost", false);
    rc |= conn("tls12-ticket", 3, TLSK_TLS1_2, "localhost", true);
    /* The SNI table: exact name (store, stateful), wildcard (stateless), exact without store. */
    rc |= conn("sni-exact-tls13", 1, 0, "a.example.com", false);
    rc |= conn("sni-exact-tls13-psk", 1, 0, "a.example.com", true);
    rc |= conn("sni-wild-tls12", 1, TLSK_TLS1_2, "b.test.com", false);
    rc |= conn("sni-wild-tls12-ticket", 1, TLSK_TLS1_2, "b.test.com", true);
    rc |= conn("sni-x-tls13", 0, 0, "x.test.com", false);
    rc |= conn("sni-unknown-tls12", 2, TLSK_TLS1_2, "unknown.example", false);
    /* The fuzzer's SNI callback modes (selector bits 6-7): at once, pending, default. */
    rc |= conn("sni-cb-exact-tls13", 0 | 1u << 6, 0, "a.example.com", false);
    rc |= conn("sni-cb-pending-wild-tls13", 0 | 2u << 6 | 2u << 2, 0, "c.test.com", false);
    rc |= conn("sni-cb-default-tls12", 2 | 3u << 6, TLSK_TLS1_2, "x.test.com", false);
    return rc ? 1 : 0;
}

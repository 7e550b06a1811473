/*
 * fuzz_hello.c - libFuzzer target for what a tlsk server does with a ClientHello
 * (lib/hello.c: hello_servername(), the SNI table, hello_offers_tls13(), hello_resume_id()
 * and the external session store; then OpenSSL's own processing and tlsk's handshake
 * driver), through the public memory-pair API only: tlsk_pair_new(), tlsk_pair_feed(),
 * tlsk_socket_handshake(), tlsk_pair_pull().
 *
 * Input: one selector byte, then the bytes a client sends (a ClientHello record, or
 * anything).  Selector bits:
 *   0-1  the default context (hello_setup.h: stateful TLS 1.3 tickets / stateless / TLS 1.2
 *        without tickets / no session store)
 *   2-3  how the store answers its resume_session callback, always "not found": 0 return 0
 *        without answering, 1 tlsk_socket_resume_answer(NULL, 0) from inside the callback,
 *        2 TLSK_SESSION_PENDING and the answer after the handshake has returned -EAGAIN,
 *        3 as 2, but the socket is freed while the answer is pending
 *   4    feed the bytes in two halves, the handshake run after each
 *   5    neither SNI table nor callback on the socket
 *   6-7  SNI: 0 the table (tlsk_socket_options.sni), or an SNI callback that looks the name up
 *        in the same table and answers 1 at once, 2 with TLSK_SNI_PENDING and
 *        tlsk_socket_sni_answer() after the handshake has returned -EAGAIN, 3 at once with
 *        the default context
 * Contexts are built once in LLVMFuzzerInitialize() from the certificate fixtures in
 * $TLSK_FUZZ_FIXTURES (default build/fixtures/rsa; scripts/gen-fixtures.sh writes them).
 * TLSK_PROBE_DISABLE=1 keeps the kernel probe off the kernel (a pair never offloads anyway).
 * FUZZ_HELLO_VERBOSE=1 prints each handshake step's result (for reading a reproducer).
 *
 * Checked beyond memory safety: the store is consulted with an id of 1..288 bytes (hello.c's
 * cap, the size of the socket's resume_id buffer) and the SNI callback with a non-empty
 * name; a pending lookup or SNI callback makes the handshake return -EAGAIN with
 * tlsk_socket_events() 0 (tlsk.h); the socket's servername is a string; the handshake never
 * completes (that needs the client's Finished, which depends on the server's random).
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target with the others
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hello_setup.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hello_env env;
static int answer_mode;
static int lookups;
static int sni_mode, sni_calls;
static struct tlsk_context *sni_pending;
/* lib/internal.h: resume_id[SSL_MAX_SSL_SESSION_ID_LENGTH + 256], hello_resume_id()'s cap. */
static unsigned char last_id[32 + 256];
static int verbose;

static void fail(const char *what, int rc)
{
    fprintf(stderr, "fuzz_hello: %s (%s)\n", what, tlsk_err_name(rc));
    abort();
}

static void new_session(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                        const unsigned char *data, size_t data_len, void *ud)
{
    volatile unsigned char sink = 0;

    (void)s;
    (void)ud;
    /* Touch the bytes: ASan checks they are what the lengths say. */
    for (size_t i = 0; i < id_len; i++) {
        sink ^= id[i];
    }
    for (size_t i = 0; i < data_len; i++) {
        sink ^= data[i];
    }
    (void)sink;
}

static int resume_session(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                          void *ud)
{
    (void)ud;
    if (id_len == 0 || id_len > sizeof last_id) {
        fail("resume_session: id length out of 1..288", (int)id_len);
    }
    memcpy(last_id, id, id_len);
    lookups++;
    switch (answer_mode) {
    case 1:
        if (tlsk_socket_resume_answer(s, NULL, 0, 0) != 0) {
            fail("resume_answer from the callback", 0);
        }
        return 0;
    case 2:
    case 3:
        return TLSK_SESSION_PENDING;
    default:
        return 0;
    }
}

static const struct tlsk_session_store store = {
    .new_session = new_session,
    .resume_session = resume_session,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("TLSK_PROBE_DISABLE", "1", 1);
    verbose = getenv("FUZZ_HELLO_VERBOSE") != NULL;
    hello_env_init(&env, NULL, &store);
    return 0;
}

static int step(struct tlsk_socket *s)
{
    static unsigned char out[65536];
    int rc = tlsk_socket_handshake(s);
    const char *sn = tlsk_socket_servername(s), *detail = tlsk_socket_error_detail(s);
    size_t pulled = 0;
    ssize_t n;

    if (sn) {
        (void)strlen(sn);
    }
    (void)strlen(detail);
    while ((n = tlsk_pair_pull(s, out, sizeof out)) > 0) {
        pulled += (size_t)n;
    }
    if (verbose) {
        fprintf(stderr, "fuzz_hello: handshake %s, %zu bytes out, servername %s, %d lookup(s)%s%s\n",
                tlsk_err_name(rc), pulled, sn ? sn : "-", lookups, *detail ? ": " : "", detail);
    }
    return rc;
}

static int sni_cb(struct tlsk_socket *s, const char *servername, void *data,
                  struct tlsk_context **out)
{
    (void)s;
    (void)data;
    sni_calls++;
    if (!servername || !*servername) {
        fail("SNI callback without a name", 0);
    }
    switch (sni_mode) {
    case 2:
        sni_pending = tlsk_sni_lookup(env.sni, servername);
        return TLSK_SNI_PENDING;
    case 3:
        *out = NULL; /* the default context */
        return 0;
    default:
        *out = tlsk_sni_lookup(env.sni, servername);
        return 0;
    }
}

/* After -EAGAIN: a pending answer is due, the handshake must be waiting for it alone. */
static void check_waiting(struct tlsk_socket *s, int rc, const char *what)
{
    if (rc != -EAGAIN || tlsk_socket_events(s) != 0) {
        fprintf(stderr, "fuzz_hello: %s: handshake %s, events %d\n", what, tlsk_err_name(rc),
                tlsk_socket_events(s));
        fail("a pending answer: not -EAGAIN with no events", rc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tlsk_socket_options o = { 0 };
    struct tlsk_socket *s = NULL;
    unsigned sel;
    size_t half;
    int rc, sni_answered = 0, resume_answered = 0;

    if (size < 1) {
        return 0;
    }
    sel = data[0];
    data++;
    size--;
    answer_mode = (sel >> 2) & 3;
    sni_mode = (sel >> 6) & 3;
    lookups = sni_calls = 0;
    sni_pending = NULL;
    if (!(sel & 0x20)) {
        if (sni_mode == 0) {
            o.sni = env.sni;
        } else {
            o.sni_cb = sni_cb;
        }
    }
    rc = tlsk_pair_new(&s, env.def[sel & 3], 1, &o);
    if (rc != 0) {
        fail("tlsk_pair_new", rc);
    }
    half = (sel & 0x10) ? size / 2 : size;
    if (tlsk_pair_feed(s, data, half) != (ssize_t)half) {
        fail("tlsk_pair_feed", 0);
    }
    rc = step(s);
    if (half < size) {
        if (tlsk_pair_feed(s, data + half, size - half) != (ssize_t)(size - half)) {
            fail("tlsk_pair_feed", 0);
        }
        rc = step(s);
    }
    /* Answer what is pending: the SNI callback first (it runs first), then the store. */
    for (int i = 0; i < 4; i++) {
        if (sni_mode == 2 && sni_calls && !sni_answered) {
            check_waiting(s, rc, "SNI callback pending");
            sni_answered = 1;
            if (tlsk_socket_sni_answer(s, sni_pending, 0) != 0) {
                fail("tlsk_socket_sni_answer after -EAGAIN", 0);
            }
        } else if (answer_mode >= 2 && lookups && !resume_answered) {
            check_waiting(s, rc, "session lookup pending");
            resume_answered = 1;
            if (answer_mode == 3) {
                break; /* freed while the lookup is pending */
            }
            if (tlsk_socket_resume_answer(s, NULL, 0, 0) != 0) {
                fail("tlsk_socket_resume_answer after -EAGAIN", 0);
            }
        } else {
            break;
        }
        rc = step(s);
    }
    if (rc == 0) {
        fail("server handshake complete without the client's Finished", rc);
    }
    tlsk_socket_free(s);
    return 0;
}

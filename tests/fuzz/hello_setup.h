/*
 * hello_setup.h - the server of fuzz_hello.c and of its seed generator mkseed_hello.c: the
 * same contexts in both, so a session ticket the generator's server issued resumes in the
 * fuzzer (fixed ticket keys, session id context and a ten-year session timeout).
 *
 * Default contexts (selector byte, bits 0-1), all with agent1's certificate:
 *   0  external store, TLS 1.3 stateful tickets (the store is asked for the PSK identity)
 *   1  external store, stateless tickets
 *   2  external store, TLS 1.2 only, no tickets (the store is asked for the session id)
 *   3  no store (OpenSSL's internal cache), stateless tickets
 * SNI table: "a.example.com" (sni-a; store, stateful tickets), "*.test.com" (sni-wild; store,
 * stateless), "x.test.com" (sni-x; no store).
 */
#ifndef TLSK_FUZZ_HELLO_SETUP_H
#define TLSK_FUZZ_HELLO_SETUP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsk.h"

#define HELLO_FIXTURES_DEFAULT "build/fixtures/rsa"
#define HELLO_NDEF 4

struct hello_env {
    struct tlsk_context *def[HELLO_NDEF];
    struct tlsk_context *sni_ctx[3];
    struct tlsk_sni *sni;
};

static const unsigned char hello_ticket_keys[48] = "tlsk fuzz_hello ticket keys, 48 bytes exactly!!";

static struct tlsk_context *hello_ctx(const char *dir, const char *name, int max_version,
                                      unsigned flags, const struct tlsk_session_store *store)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char cert[4096], key[4096], err[512];
    int rc;

    snprintf(cert, sizeof cert, "%s/%s-cert.pem", dir, name);
    snprintf(key, sizeof key, "%s/%s-key.pem", dir, name);
    o.cert_file = cert;
    o.key_file = key;
    o.max_version = max_version;
    o.flags = flags;
    o.session_store = store;
    o.ticket_keys = hello_ticket_keys;
    o.session_id_context = "tlsk-fuzz-hello";
    o.session_timeout = 10L * 365 * 24 * 3600;
    rc = tlsk_context_new(&c, &o, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "hello_setup: context %s from %s: %s (%s)\n", name, dir, err,
                tlsk_err_name(rc));
        exit(1);
    }
    return c;
}

/* Builds every context from the fixtures in dir (or $TLSK_FUZZ_FIXTURES, or the default);
 * exits with a message when that fails. */
static void hello_env_init(struct hello_env *e, const char *dir,
                           const struct tlsk_session_store *store)
{
    if (!dir) {
        dir = getenv("TLSK_FUZZ_FIXTURES");
    }
    if (!dir || !*dir) {
        dir = HELLO_FIXTURES_DEFAULT;
    }
    e->def[0] = hello_ctx(dir, "agent1", 0, TLSK_STATEFUL_TICKETS, store);
    e->def[1] = hello_ctx(dir, "agent1", 0, 0, store);
    e->def[2] = hello_ctx(dir, "agent1", TLSK_TLS1_2, TLSK_NO_TICKETS, store);
    e->def[3] = hello_ctx(dir, "agent1", 0, 0, NULL);
    e->sni_ctx[0] = hello_ctx(dir, "sni-a", 0, TLSK_STATEFUL_TICKETS, store);
    e->sni_ctx[1] = hello_ctx(dir, "sni-wild", 0, 0, store);
    e->sni_ctx[2] = hello_ctx(dir, "sni-x", 0, 0, NULL);
    if (tlsk_sni_new(&e->sni) != 0 || tlsk_sni_add(e->sni, "a.example.com", e->sni_ctx[0]) != 0 ||
        tlsk_sni_add(e->sni, "*.test.com", e->sni_ctx[1]) != 0 ||
        tlsk_sni_add(e->sni, "x.test.com", e->sni_ctx[2]) != 0) {
        fprintf(stderr, "hello_setup: SNI table\n");
        exit(1);
    }
}

#endif

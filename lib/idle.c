/*
 * idle.c - lean at idle (TLSK_SOCKET_LEAN_IDLE): where tlsk's own record layer is to carry a
 * connection (soft.c), it takes it when the connection first waits for its peer instead of at
 * the end of the handshake (docs/KERNEL.md §16.1).
 *
 * Taking a connection costs a key derivation OpenSSL already made and two cipher contexts
 * (about 90,000 instructions in a TLS 1.2 resumption), and it buys memory only while the
 * connection waits.  A connection that closes first (a health check, a probe, most of a
 * handshake benchmark) never pays it.  Until then OpenSSL carries the connection as in
 * userspace mode, reading ahead: at a wait it has returned every record it read, or holds
 * part of one and the change waits for the next wait.  Bulk does not wait for a wait
 * (io.c, TLSK__LEAN_BULK).
 */
#include <openssl/ssl.h>

#include "internal.h"

/* Nothing in flight that soft.c could not take over: what lean.c asks before it frees
 * OpenSSL's state (no byte read ahead or half read, no key update owed, nothing parked), and,
 * since OpenSSL still writes to the socket here, no record it holds half sent (wshort), no
 * records tlsk queued or sent without telling the caller (whose retry with the same bytes
 * would then send them twice), nothing closed, no handshake running. */
static bool settled(const struct tlsk_socket *s)
{
    return tlsk__lean_quiet(s) && !s->wshort && !tlsk__txq_pending(s) && s->sf_pending == 0 &&
           s->held_len == 0 && !s->reneg_running && !s->sent_close_notify &&
           !s->got_close_notify && SSL_get_shutdown(s->ssl) == 0 && SSL_is_init_finished(s->ssl);
}

int tlsk__idle(struct tlsk_socket *s)
{
    int rc;

    if (!s->soft_later || s->state != TLSK__OPEN) {
        return 0;
    }
    if (s->key_updates || s->reneg_count || s->own_reneg) {
        /* The keys changed under OpenSSL (and a TLS 1.3 secret captured at the handshake is
         * no longer the one in use): the connection stays with it, as with TLSK_SOCKET_LEAN
         * where soft.c does not take a connection. */
        tlsk__offload_soft_cancel(s);
        return 0;
    }
    if (!settled(s)) {
        return 0; /* the next wait tries again */
    }
    if ((rc = tlsk__offload_soft(s)) != 0) {
        return tlsk__fail(s, rc);
    }
    tlsk__lean_release(s);
    return 0;
}

TLSK_PUBLIC int tlsk_socket_idle(struct tlsk_socket *s)
{
    if (!s) {
        return TLSK_ECONFIG;
    }
    if (s->state == TLSK__FAILED) {
        return s->fail_code;
    }
    return tlsk__idle(s);
}

/* rstore.h - a TLS session store on Redis for one epoll worker thread of a tool.
 *
 * tlsk's external session store (struct tlsk_session_store, Node's newSession/resumeSession)
 * on hiredis's asynchronous API, driven by the worker's own epoll: the Redis connection's fd
 * sits in that epoll with a tag the worker passes back to rstore_event().  One rstore per
 * worker thread, so nothing is shared between threads; the store callbacks find the calling
 * thread's rstore themselves.
 *
 * Keys are PREFIX + hex(session id); values the session bytes (OpenSSL's DER), written with
 * SET ... EX ttl.  Which context a session may resume under is OpenSSL's check (every
 * session carries its session id context, docs/OPENSSL.md §9), so the key needs no more.
 *
 * The store never stalls or fails a handshake: a lookup not answered within timeout_ms is
 * answered "not found" (a full handshake) and logged; while Redis is unreachable lookups are
 * answered "not found" at once and writes are dropped, and the connection is retried with
 * backoff (100 ms doubling to 5 s).  docs/DEPLOY.md §4.
 */
#ifndef TLSK_RSTORE_H
#define TLSK_RSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "tlsk.h"

struct rstore;

/* Parse "redis://HOST[:PORT]" ([V6] allowed, port 6379 by default) or "unix:/path".
 * 0, or -EINVAL with why filled. */
int rstore_parse(const char *url, char *host, size_t host_len, int *port, char *why,
                 size_t why_len);

/* What the worker does when a lookup's answer is in: run the connection again (its
 * handshake was waiting with tlsk_socket_events() 0).  s's data is the caller's. */
typedef void (*rstore_wake_fn)(struct tlsk_socket *s);

/* A store for the calling thread (the one that then calls everything else).  epfd: the
 * worker's epoll; tag: the epoll data for the Redis fd.  Connects in the background. */
struct rstore *rstore_new(const char *url, int timeout_ms, int ttl_s, int epfd, uint64_t tag,
                          rstore_wake_fn wake);
void rstore_free(struct rstore *rs);

/* The store callbacks to put in tlsk_context_options.session_store (shared by every
 * worker's contexts: they use the calling thread's rstore). */
extern const struct tlsk_session_store rstore_callbacks;

/* The Redis fd was ready (epoll events). */
void rstore_event(struct rstore *rs, uint32_t events);
/* Expire lookups, reconnect; call after every epoll_wait.  Returns the ms until the next
 * deadline of the store's (-1 none), for the next epoll_wait's timeout. */
int rstore_tick(struct rstore *rs, int64_t now_ms);
/* s is about to be freed: a lookup still waiting for it is dropped. */
void rstore_forget(struct rstore *rs, struct tlsk_socket *s);

#endif

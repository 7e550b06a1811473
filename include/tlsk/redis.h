/*
 * tlsk/redis.h - a TLS session store on Redis for tlsk's evented servers, so that servers on
 * several machines resume each other's sessions (Node's newSession/resumeSession events
 * wired to a shared store).
 *
 * Header-only: it includes hiredis (Debian libhiredis-dev) and tlsk.h; link with
 * `pkg-config --libs hiredis`.  libtlsk itself does not depend on hiredis.  It runs hiredis's
 * asynchronous API on a tlsk_loop through two tlsk_watchers (the Redis connection's fd, and
 * a timer for lookup deadlines and reconnects), so everything happens on the loop's thread.
 *
 *     struct tlsk_redis *r;
 *     struct tlsk_redis_options ro = { .host = "10.0.0.5", .port = 6379 };
 *     tlsk_redis_new(&r, loop, &ro);
 *     opts.session_store = tlsk_redis_store(r);    // tlsk_context_options, before _new
 *     ...
 *     tlsk_redis_free(r);  // after the servers are closed; until then it keeps the loop alive
 *
 * What it stores: TLS 1.2 session ids and TLS 1.3 stateful tickets (TLSK_STATEFUL_TICKETS),
 * under PREFIX + hex(id), the session's bytes as value, with SET ... EX ttl_s.  Which
 * context a session may resume under is OpenSSL's check (the session id context, docs/
 * OPENSSL.md §9): servers sharing a store must set the same session_id_context.
 *
 * It never stalls or fails a handshake: a lookup not answered within timeout_ms is answered
 * "not found" (a full handshake); while Redis is unreachable lookups are answered "not found"
 * at once, new sessions are dropped, and the connection is retried after 100 ms, doubling to
 * 5 s.  A connection freed while its lookup waits is forgotten (the store's cancel callback),
 * so a late reply never touches it.  tlsk_redis_stats() counts what happened.
 */
#ifndef TLSK_REDIS_H
#define TLSK_REDIS_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "../tlsk.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tlsk_redis_options {
    const char *host;   /* IP address of the Redis server (a name works, but hiredis resolves
                         * it with a blocking getaddrinfo at every connect and reconnect) */
    int port;           /* 0: 6379 */
    const char *path;   /* a unix socket instead of host:port */
    const char *prefix; /* key prefix; NULL: "tlsk:session:" */
    int timeout_ms;     /* how long a handshake waits for a lookup; 0: 50 */
    int ttl_s;          /* entry lifetime; 0: 300 (the contexts' default session timeout) */
};

struct tlsk_redis_stats {
    uint64_t stored;    /* sessions written */
    uint64_t lookups;   /* resume_session calls */
    uint64_t found, not_found;
    uint64_t timeouts;  /* answered "not found" at the deadline */
    uint64_t unavailable; /* answered "not found" at once: Redis down */
    uint64_t cancelled; /* connections freed while their lookup waited */
    uint64_t late;      /* replies that came after their answer (dropped) */
    uint64_t connects, disconnects;
};

struct tlsk_redis__pend {
    struct tlsk_redis__pend *prev, *next;
    struct tlsk_socket *s; /* NULL once answered or cancelled */
    int64_t deadline;
};

struct tlsk_redis {
    struct tlsk_loop *loop;
    struct tlsk_watcher *io, *tick;
    redisAsyncContext *ac;
    bool up;
    int events;
    int backoff_ms;
    int64_t retry_at;
    char host[256], path[108], prefix[64];
    int port, timeout_ms, ttl_s;
    struct tlsk_session_store store;
    struct tlsk_redis__pend *pends;
    struct tlsk_redis_stats stats;
};

static inline int64_t tlsk_redis__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next thing the timer must do: the earliest lookup deadline, or a reconnect. */
static inline void tlsk_redis__arm(struct tlsk_redis *r)
{
    int64_t next = -1, now = tlsk_redis__now();

    for (struct tlsk_redis__pend *p = r->pends; p; p = p->next) {
        if (p->s && (next < 0 || p->deadline < next)) {
            next = p->deadline;
        }
    }
    if (!r->ac && (next < 0 || r->retry_at < next)) {
        next = r->retry_at;
    }
    tlsk_watcher_timer(r->tick, next < 0 ? -1 : next > now ? next - now : 0);
}

static inline void tlsk_redis__io(struct tlsk_watcher *w, int revents, void *ud)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ud;
    (void)w;
    if (r->ac && (revents & (POLLIN | POLLERR | POLLHUP))) {
        redisAsyncHandleRead(r->ac);
    }
    if (r->ac && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        redisAsyncHandleWrite(r->ac);
    }
    tlsk_redis__arm(r);
}

static inline void tlsk_redis__ev_update(struct tlsk_redis *r)
{
    if (r->io) {
        tlsk_watcher_watch(r->io, r->events);
    }
}
static inline void tlsk_redis__add_read(void *p)
{
    struct tlsk_redis *r = (struct tlsk_redis *)p;
    r->events |= POLLIN;
    tlsk_redis__ev_update(r);
}
static inline void tlsk_redis__del_read(void *p)
{
    struct tlsk_redis *r = (struct tlsk_redis *)p;
    r->events &= ~POLLIN;
    tlsk_redis__ev_update(r);
}
static inline void tlsk_redis__add_write(void *p)
{
    struct tlsk_redis *r = (struct tlsk_redis *)p;
    r->events |= POLLOUT;
    tlsk_redis__ev_update(r);
}
static inline void tlsk_redis__del_write(void *p)
{
    struct tlsk_redis *r = (struct tlsk_redis *)p;
    r->events &= ~POLLOUT;
    tlsk_redis__ev_update(r);
}
static inline void tlsk_redis__cleanup(void *p)
{
    struct tlsk_redis *r = (struct tlsk_redis *)p;
    tlsk_watcher_free(r->io); /* before hiredis closes the fd */
    r->io = NULL;
    r->events = 0;
}

static inline void tlsk_redis__lost(struct tlsk_redis *r)
{
    r->up = false;
    r->ac = NULL; /* hiredis frees it after this callback */
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : 100;
    if (r->backoff_ms > 5000) {
        r->backoff_ms = 5000;
    }
    r->retry_at = tlsk_redis__now() + r->backoff_ms;
}

static inline void tlsk_redis__on_connect(const redisAsyncContext *ac, int status)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ac->ev.data;
    if (status != REDIS_OK) {
        tlsk_redis__lost(r);
        return;
    }
    r->up = true;
    r->backoff_ms = 0;
    r->stats.connects++;
}

static inline void tlsk_redis__on_disconnect(const redisAsyncContext *ac, int status)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ac->ev.data;
    (void)status;
    r->stats.disconnects++;
    tlsk_redis__lost(r);
}

static inline void tlsk_redis__connect(struct tlsk_redis *r)
{
    redisAsyncContext *ac = r->path[0] ? redisAsyncConnectUnix(r->path)
                                       : redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        if (ac) {
            redisAsyncFree(ac);
        }
        tlsk_redis__lost(r);
        return;
    }
    if (tlsk_watcher_new(&r->io, r->loop, ac->c.fd, tlsk_redis__io, r) != 0) {
        redisAsyncFree(ac);
        tlsk_redis__lost(r);
        return;
    }
    r->ac = ac;
    ac->ev.data = r;
    ac->ev.addRead = tlsk_redis__add_read;
    ac->ev.delRead = tlsk_redis__del_read;
    ac->ev.addWrite = tlsk_redis__add_write;
    ac->ev.delWrite = tlsk_redis__del_write;
    ac->ev.cleanup = tlsk_redis__cleanup;
    redisAsyncSetConnectCallback(ac, tlsk_redis__on_connect);
    redisAsyncSetDisconnectCallback(ac, tlsk_redis__on_disconnect);
    tlsk_redis__add_write(r); /* the connect completes when writable */
}

static inline void tlsk_redis__unlink(struct tlsk_redis *r, struct tlsk_redis__pend *p)
{
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        r->pends = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
}

static inline void tlsk_redis__on_get(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ac->ev.data;
    struct tlsk_redis__pend *p = (struct tlsk_redis__pend *)privdata;
    redisReply *rep = (redisReply *)reply;

    if (!p->s) {
        r->stats.late++;
    } else if (rep && rep->type == REDIS_REPLY_STRING && rep->len > 0) {
        r->stats.found++;
        tlsk_socket_resume_answer(p->s, rep->str, (size_t)rep->len, 0);
    } else {
        r->stats.not_found++;
        tlsk_socket_resume_answer(p->s, NULL, 0, 0);
    }
    tlsk_redis__unlink(r, p);
    free(p);
}

static inline void tlsk_redis__key(const struct tlsk_redis *r, char *out,
                                   const unsigned char *id, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    size_t o = strlen(r->prefix);

    memcpy(out, r->prefix, o);
    for (size_t i = 0; i < n; i++) {
        out[o++] = hx[id[i] >> 4];
        out[o++] = hx[id[i] & 15];
    }
    out[o] = '\0';
}

static inline void tlsk_redis__new_session(struct tlsk_socket *s, const unsigned char *id,
                                           size_t id_len, const unsigned char *data,
                                           size_t data_len, void *ud)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ud;
    char key[64 + 2 * 64 + 1];

    (void)s;
    if (!r->up || id_len > 64) {
        return;
    }
    tlsk_redis__key(r, key, id, id_len);
    if (redisAsyncCommand(r->ac, NULL, NULL, "SET %s %b EX %d", key, data, data_len,
                          r->ttl_s) == REDIS_OK) {
        r->stats.stored++;
    }
}

static inline int tlsk_redis__resume(struct tlsk_socket *s, const unsigned char *id,
                                     size_t id_len, void *ud)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ud;
    char key[64 + 2 * 64 + 1];
    struct tlsk_redis__pend *p;

    r->stats.lookups++;
    if (!r->up || id_len > 64 ||
        !(p = (struct tlsk_redis__pend *)calloc(1, sizeof *p))) {
        r->stats.unavailable++;
        return 0; /* "not found" now: a full handshake */
    }
    tlsk_redis__key(r, key, id, id_len);
    p->s = s;
    p->deadline = tlsk_redis__now() + r->timeout_ms;
    if (redisAsyncCommand(r->ac, tlsk_redis__on_get, p, "GET %s", key) != REDIS_OK) {
        free(p);
        r->stats.unavailable++;
        return 0;
    }
    p->next = r->pends;
    if (p->next) {
        p->next->prev = p;
    }
    r->pends = p;
    tlsk_redis__arm(r);
    return TLSK_SESSION_PENDING;
}

static inline void tlsk_redis__cancel(struct tlsk_socket *s, void *ud)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ud;
    for (struct tlsk_redis__pend *p = r->pends; p; p = p->next) {
        if (p->s == s) {
            p->s = NULL; /* the reply, when it comes, is dropped */
            r->stats.cancelled++;
        }
    }
}

static inline void tlsk_redis__tick(struct tlsk_watcher *w, int revents, void *ud)
{
    struct tlsk_redis *r = (struct tlsk_redis *)ud;
    int64_t now = tlsk_redis__now();

    (void)w, (void)revents;
    for (struct tlsk_redis__pend *p = r->pends; p; p = p->next) {
        if (p->s && now >= p->deadline) {
            struct tlsk_socket *s = p->s;
            p->s = NULL;
            r->stats.timeouts++;
            tlsk_socket_resume_answer(s, NULL, 0, 0);
        }
    }
    if (!r->ac && now >= r->retry_at) {
        tlsk_redis__connect(r);
    }
    tlsk_redis__arm(r);
}

/* Parse "redis://HOST[:PORT]" (an IPv6 address in brackets; port 6379 by default) or
 * "unix:/PATH" into o->host and o->port or o->path, which then point into buf.  0, or
 * -EINVAL (a user, password or database in the URL included: not supported). */
static inline int tlsk_redis_parse_url(const char *url, struct tlsk_redis_options *o, char *buf,
                                       size_t len)
{
    const char *h, *end;
    size_t n;

    if (strncmp(url, "unix:/", 6) == 0) {
        if (strlen(url + 5) >= len) {
            return -EINVAL;
        }
        snprintf(buf, len, "%s", url + 5);
        o->path = buf;
        o->host = NULL;
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        return -EINVAL;
    }
    h = url + 8;
    if (*h == '[') {
        if (!(end = strchr(++h, ']'))) {
            return -EINVAL;
        }
        n = (size_t)(end - h);
        end++;
    } else {
        end = h + strcspn(h, ":");
        n = (size_t)(end - h);
    }
    if (n == 0 || n >= len || memchr(h, '/', n) || memchr(h, '@', n) ||
        (*end && *end != ':')) {
        return -EINVAL;
    }
    memcpy(buf, h, n);
    buf[n] = '\0';
    o->host = buf;
    o->path = NULL;
    o->port = 6379;
    if (*end == ':') {
        char *e;
        long p = strtol(end + 1, &e, 10);
        if (e == end + 1 || *e || p < 1 || p > 65535) {
            return -EINVAL;
        }
        o->port = (int)p;
    }
    return 0;
}

/* A store on loop.  Connects in the background; 0, -EINVAL (no host or path, a prefix over
 * 63 bytes), TLSK_ENOMEM or -errno. */
static inline int tlsk_redis_new(struct tlsk_redis **out, struct tlsk_loop *loop,
                                 const struct tlsk_redis_options *o)
{
    struct tlsk_redis *r;
    const char *prefix = o && o->prefix ? o->prefix : "tlsk:session:";
    int rc;

    if (!out || !loop || !o || (!o->host && !o->path) || strlen(prefix) > 63 ||
        (o->host && strlen(o->host) >= sizeof r->host) ||
        (o->path && strlen(o->path) >= sizeof r->path)) {
        return -EINVAL;
    }
    if (!(r = (struct tlsk_redis *)calloc(1, sizeof *r))) {
        return TLSK_ENOMEM;
    }
    r->loop = loop;
    snprintf(r->host, sizeof r->host, "%s", o->host ? o->host : "");
    snprintf(r->path, sizeof r->path, "%s", o->path ? o->path : "");
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    r->port = o->port ? o->port : 6379;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 50;
    r->ttl_s = o->ttl_s > 0 ? o->ttl_s : 300;
    r->store.new_session = tlsk_redis__new_session;
    r->store.resume_session = tlsk_redis__resume;
    r->store.cancel = tlsk_redis__cancel;
    r->store.ud = r;
    if ((rc = tlsk_watcher_new(&r->tick, loop, -1, tlsk_redis__tick, r)) != 0) {
        free(r);
        return rc;
    }
    tlsk_redis__connect(r);
    tlsk_redis__arm(r);
    *out = r;
    return 0;
}

/* The store for tlsk_context_options.session_store (it stays valid until tlsk_redis_free). */
static inline const struct tlsk_session_store *tlsk_redis_store(const struct tlsk_redis *r)
{
    return &r->store;
}

static inline const struct tlsk_redis_stats *tlsk_redis_stats(const struct tlsk_redis *r)
{
    return &r->stats;
}

/* 1 while connected to Redis. */
static inline int tlsk_redis_up(const struct tlsk_redis *r)
{
    return r->up;
}

/* Close the connection and free the store; lookups still waiting are answered "not found"
 * first.  Call it from the loop's thread, after the servers using it are closed. */
static inline void tlsk_redis_free(struct tlsk_redis *r)
{
    if (!r) {
        return;
    }
    for (struct tlsk_redis__pend *p = r->pends; p; p = p->next) {
        if (p->s) {
            struct tlsk_socket *s = p->s;
            p->s = NULL;
            tlsk_socket_resume_answer(s, NULL, 0, 0);
        }
    }
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        ac->onDisconnect = NULL;
        r->ac = NULL;
        redisAsyncFree(ac); /* calls every pending callback (dropped: s is NULL) */
    }
    while (r->pends) {
        struct tlsk_redis__pend *p = r->pends;
        r->pends = p->next;
        free(p);
    }
    tlsk_watcher_free(r->io);
    tlsk_watcher_free(r->tick);
    free(r);
}

#ifdef __cplusplus
}
#endif

#endif

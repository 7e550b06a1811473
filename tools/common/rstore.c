/* rstore.c - a TLS session store on Redis (hiredis async) for one epoll worker; see rstore.h. */
#include "rstore.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cli.h"

#define KEY_PREFIX "tlsk-serve:session:"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* One lookup.  It stays allocated until hiredis has called back (its privdata), even when
 * the connection it was for is gone (s NULL) or was answered by the deadline (answered). */
struct pend {
    struct pend *prev, *next;
    struct tlsk_socket *s;
    int64_t deadline;
    bool answered;
};

struct rstore {
    char host[256];
    int port; /* 0: host is a unix socket path */
    int timeout_ms, ttl_s;
    int epfd;
    uint64_t tag;
    rstore_wake_fn wake;
    redisAsyncContext *ac;
    bool up;           /* connected */
    uint32_t ev_mask;  /* EPOLLIN/EPOLLOUT wanted by hiredis */
    bool in_epoll;
    int64_t retry_at;  /* reconnect time while !ac */
    int backoff_ms;
    int64_t now;
    int64_t last_slow_log;
    struct pend *pends;
    struct tlsk_socket **woken; /* answered this round, to run once hiredis is done */
    size_t nwoken, capwoken;
};

static _Thread_local struct rstore *t_rs;

int rstore_parse(const char *url, char *host, size_t host_len, int *port, char *why,
                 size_t why_len)
{
    const char *h, *colon;
    size_t n;

    if (strncmp(url, "unix:", 5) == 0 && url[5] == '/') {
        if (strlen(url + 5) >= host_len) {
            snprintf(why, why_len, "%s: the path is too long", url);
            return -EINVAL;
        }
        snprintf(host, host_len, "%s", url + 5);
        *port = 0;
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0 || !url[8]) {
        snprintf(why, why_len, "%s: wanted redis://HOST[:PORT] or unix:/PATH", url);
        return -EINVAL;
    }
    h = url + 8;
    if (*h == '[') {
        const char *end = strchr(h, ']');
        if (!end) {
            snprintf(why, why_len, "%s: unterminated [", url);
            return -EINVAL;
        }
        n = (size_t)(end - h - 1);
        colon = end[1] == ':' ? end + 1 : end[1] ? NULL : end + 1;
        h++;
    } else {
        colon = strchr(h, ':');
        n = colon ? (size_t)(colon - h) : strlen(h);
    }
    if (!colon || n == 0 || n >= host_len || strchr(h, '/') || strchr(h, '@')) {
        snprintf(why, why_len, "%s: wanted redis://HOST[:PORT] or unix:/PATH (no user, "
                 "password or database)", url);
        return -EINVAL;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    *port = 6379;
    if (*colon == ':') {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || p < 1 || p > 65535) {
            snprintf(why, why_len, "%s: bad port", url);
            return -EINVAL;
        }
        *port = (int)p;
    }
    return 0;
}

/* ---- hiredis on the worker's epoll ------------------------------------------------------ */

static void ep_update(struct rstore *rs)
{
    struct epoll_event e = { .events = rs->ev_mask, .data.u64 = rs->tag };

    if (!rs->ac) {
        return;
    }
    if (!rs->in_epoll) {
        if (epoll_ctl(rs->epfd, EPOLL_CTL_ADD, rs->ac->c.fd, &e) == 0) {
            rs->in_epoll = true;
        }
    } else {
        epoll_ctl(rs->epfd, EPOLL_CTL_MOD, rs->ac->c.fd, &e);
    }
}

static void ev_add_read(void *p)
{
    struct rstore *rs = p;
    rs->ev_mask |= EPOLLIN;
    ep_update(rs);
}

static void ev_del_read(void *p)
{
    struct rstore *rs = p;
    rs->ev_mask &= ~(uint32_t)EPOLLIN;
    ep_update(rs);
}

static void ev_add_write(void *p)
{
    struct rstore *rs = p;
    rs->ev_mask |= EPOLLOUT;
    ep_update(rs);
}

static void ev_del_write(void *p)
{
    struct rstore *rs = p;
    rs->ev_mask &= ~(uint32_t)EPOLLOUT;
    ep_update(rs);
}

static void ev_cleanup(void *p)
{
    struct rstore *rs = p;
    if (rs->ac && rs->in_epoll) {
        epoll_ctl(rs->epfd, EPOLL_CTL_DEL, rs->ac->c.fd, NULL);
    }
    rs->in_epoll = false;
    rs->ev_mask = 0;
}

static void lost(struct rstore *rs, const char *what, const char *err)
{
    if (rs->up || rs->backoff_ms == 0) {
        cli_log("session store: redis %s%s%d %s: %s; full handshakes until it is back",
                rs->host, rs->port ? ":" : "", rs->port, what, err);
    }
    rs->up = false;
    rs->ac = NULL; /* hiredis frees it after this callback */
    rs->in_epoll = false;
    rs->ev_mask = 0;
    rs->backoff_ms = rs->backoff_ms ? rs->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (rs->backoff_ms > BACKOFF_MAX_MS) {
        rs->backoff_ms = BACKOFF_MAX_MS;
    }
    rs->retry_at = rs->now + rs->backoff_ms;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rstore *rs = ac->ev.data;

    if (status != REDIS_OK) {
        lost(rs, "unreachable", ac->errstr);
        return;
    }
    rs->up = true;
    rs->backoff_ms = 0;
    cli_log("session store: redis %s%s%d connected", rs->host, rs->port ? ":" : "",
            rs->port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rstore *rs = ac->ev.data;
    lost(rs, "lost", status == REDIS_OK ? "closed" : ac->errstr);
}

static void connect_now(struct rstore *rs)
{
    redisAsyncContext *ac = rs->port ? redisAsyncConnect(rs->host, rs->port)
                                     : redisAsyncConnectUnix(rs->host);

    if (!ac) {
        lost(rs, "unreachable", "out of memory");
        return;
    }
    if (ac->err) {
        char err[128];
        snprintf(err, sizeof err, "%s", ac->errstr);
        redisAsyncFree(ac);
        lost(rs, "unreachable", err);
        return;
    }
    rs->ac = ac;
    ac->ev.data = rs;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ev_add_write(rs); /* the connect completes when writable */
}

struct rstore *rstore_new(const char *url, int timeout_ms, int ttl_s, int epfd, uint64_t tag,
                          rstore_wake_fn wake)
{
    struct rstore *rs = calloc(1, sizeof *rs);
    char why[256];

    if (!rs || rstore_parse(url, rs->host, sizeof rs->host, &rs->port, why, sizeof why) != 0) {
        free(rs);
        return NULL;
    }
    rs->timeout_ms = timeout_ms;
    rs->ttl_s = ttl_s;
    rs->epfd = epfd;
    rs->tag = tag;
    rs->wake = wake;
    rs->now = cli_now_ms();
    t_rs = rs;
    connect_now(rs);
    return rs;
}

void rstore_free(struct rstore *rs)
{
    if (!rs) {
        return;
    }
    if (rs->ac) {
        redisAsyncContext *ac = rs->ac;
        ac->onDisconnect = NULL;
        rs->ac = NULL;
        redisAsyncFree(ac); /* calls back every pending lookup with no reply */
    }
    while (rs->pends) {
        struct pend *p = rs->pends;
        rs->pends = p->next;
        free(p);
    }
    free(rs->woken);
    if (t_rs == rs) {
        t_rs = NULL;
    }
    free(rs);
}

/* ---- lookups ------------------------------------------------------------------------------ */

static void unlink_pend(struct rstore *rs, struct pend *p)
{
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        rs->pends = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
}

/* Answer s's lookup and queue s to run once hiredis is done with us. */
static void answer(struct rstore *rs, struct pend *p, const void *data, size_t len)
{
    p->answered = true;
    if (!p->s) {
        return;
    }
    tlsk_socket_resume_answer(p->s, data, len, 0);
    if (rs->nwoken == rs->capwoken) {
        size_t cap = rs->capwoken ? rs->capwoken * 2 : 16;
        struct tlsk_socket **w = realloc(rs->woken, cap * sizeof *w);
        if (!w) {
            return; /* the handshake still runs at the connection's next event or timeout */
        }
        rs->woken = w;
        rs->capwoken = cap;
    }
    rs->woken[rs->nwoken++] = p->s;
    p->s = NULL;
}

static void on_get(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rstore *rs = ac->ev.data;
    struct pend *p = privdata;
    redisReply *reply = r;

    if (!p->answered) {
        if (reply && reply->type == REDIS_REPLY_STRING && reply->len > 0) {
            answer(rs, p, reply->str, (size_t)reply->len);
        } else {
            answer(rs, p, NULL, 0); /* not there, an error, or the connection went */
        }
    }
    unlink_pend(rs, p);
    free(p);
}

static void hexkey(char *out, const unsigned char *id, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    size_t o = sizeof KEY_PREFIX - 1;

    memcpy(out, KEY_PREFIX, o);
    for (size_t i = 0; i < n; i++) {
        out[o++] = hx[id[i] >> 4];
        out[o++] = hx[id[i] & 15];
    }
    out[o] = '\0';
}

static void store_new(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                      const unsigned char *data, size_t data_len, void *ud)
{
    struct rstore *rs = t_rs;
    char key[sizeof KEY_PREFIX + 2 * 64];

    (void)s, (void)ud;
    if (!rs || !rs->up || id_len > 64) {
        return; /* down: the session is simply not shared */
    }
    hexkey(key, id, id_len);
    redisAsyncCommand(rs->ac, NULL, NULL, "SET %s %b EX %d", key, data, data_len, rs->ttl_s);
}

static int store_resume(struct tlsk_socket *s, const unsigned char *id, size_t id_len, void *ud)
{
    struct rstore *rs = t_rs;
    char key[sizeof KEY_PREFIX + 2 * 64];
    struct pend *p;

    (void)ud;
    if (!rs || !rs->up || id_len > 64 || !(p = calloc(1, sizeof *p))) {
        tlsk_socket_resume_answer(s, NULL, 0, 0); /* full handshake at once */
        return 0;
    }
    hexkey(key, id, id_len);
    p->s = s;
    p->deadline = cli_now_ms() + rs->timeout_ms;
    if (redisAsyncCommand(rs->ac, on_get, p, "GET %s", key) != REDIS_OK) {
        free(p);
        tlsk_socket_resume_answer(s, NULL, 0, 0);
        return 0;
    }
    p->next = rs->pends;
    if (p->next) {
        p->next->prev = p;
    }
    rs->pends = p;
    return TLSK_SESSION_PENDING;
}

const struct tlsk_session_store rstore_callbacks = {
    .new_session = store_new,
    .resume_session = store_resume,
};

static void run_woken(struct rstore *rs)
{
    /* A woken connection's handshake may start another lookup: take the list first. */
    while (rs->nwoken) {
        struct tlsk_socket *s = rs->woken[--rs->nwoken];
        rs->wake(s);
    }
}

void rstore_event(struct rstore *rs, uint32_t events)
{
    rs->now = cli_now_ms();
    if (rs->ac && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        redisAsyncHandleRead(rs->ac);
    }
    if (rs->ac && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        redisAsyncHandleWrite(rs->ac);
    }
    run_woken(rs);
}

int rstore_tick(struct rstore *rs, int64_t now)
{
    int64_t next = -1;

    rs->now = now;
    if (!rs->ac && now >= rs->retry_at) {
        connect_now(rs);
    }
    for (struct pend *p = rs->pends; p; p = p->next) {
        if (p->answered) {
            continue;
        }
        if (now >= p->deadline) {
            if (now - rs->last_slow_log >= 1000) {
                cli_log("session store: redis did not answer a lookup within %d ms; full "
                        "handshake (logged at most once a second)", rs->timeout_ms);
                rs->last_slow_log = now;
            }
            answer(rs, p, NULL, 0);
        } else if (next < 0 || p->deadline < next) {
            next = p->deadline;
        }
    }
    run_woken(rs);
    if (!rs->ac && (next < 0 || rs->retry_at < next)) {
        next = rs->retry_at;
    }
    return next < 0 ? -1 : (int)(next > now ? next - now : 0);
}

void rstore_forget(struct rstore *rs, struct tlsk_socket *s)
{
    if (!rs) {
        return;
    }
    for (struct pend *p = rs->pends; p; p = p->next) {
        if (p->s == s) {
            p->s = NULL;
            p->answered = true;
        }
    }
    for (size_t i = 0; i < rs->nwoken; i++) {
        if (rs->woken[i] == s) {
            rs->woken[i] = rs->woken[--rs->nwoken];
            i--;
        }
    }
}

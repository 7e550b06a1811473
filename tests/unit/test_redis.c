/*
 * test_redis.c - include/tlsk/redis.h: the session store on Redis for evented servers, with
 * a real redis-server started here.  Two servers on one loop (A and B) share the store:
 *  - a TLS 1.2 session id made on A resumes on B (the entry is in Redis; stats count it);
 *    a TLS 1.3 stateful ticket too;
 *  - Redis frozen (SIGSTOP: accepted, never answered): the lookup is answered "not found" at
 *    the 50 ms deadline and the handshake completes in full, well under a second;
 *  - a connection freed while its lookup waits (the server's handshake timeout fires first):
 *    the store's cancel drops it, and the late reply (after SIGCONT) touches nothing (the
 *    AddressSanitizer tier would see a use after free);
 *  - Redis killed: lookups answered at once, handshakes full; restarted: the store reconnects
 *    by itself and resumption works again;
 *  - tlsk_redis_new refuses options without host or path.
 * Also the watcher API the adapter runs on (tlsk_watcher_*): a timer-only watcher fires.
 * Real-kernel tiers run it too (the store does not care where the records go).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tlsk/redis.h"

#include "echo.h"
#include "harness.h"
#include "peers.h"
#include "tap.h"

static struct p_kid g_redis;
static int g_redis_port;

static int redis_start(void)
{
    char port[16];
    const char *argv[] = { "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "",
                           "--appendonly", "no", NULL };
    g_redis_port = p_free_port();
    snprintf(port, sizeof port, "%d", g_redis_port);
    if (p_kid_spawn(&g_redis, "redis-server", argv, NULL, NULL, P_KID_NULL, false) != 0) {
        return -1;
    }
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", g_redis_port);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (up) {
                return 0;
            }
        } else if (c) {
            redisFree(c);
        }
        usleep(25 * 1000);
    }
    return -1;
}

static long long redis_keys(void)
{
    redisContext *c = redisConnect("127.0.0.1", g_redis_port);
    long long n = -1;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "EVAL %s 0", "return #redis.call('keys', 'tlsk:session:*')");
        if (r && r->type == REDIS_REPLY_INTEGER) {
            n = r->integer;
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return n;
}

/* ---- two servers on one loop, run by the main thread; the client in a thread ------------- */

struct srv_state {
    int secure, client_errors, closes;
};

static void s_data(struct tlsk_socket *s, const void *b, size_t n, void *ud)
{
    (void)b, (void)n, (void)ud;
    tlsk_socket_end(s); /* one request, then close_notify */
}
static void s_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err, (void)ud;
    tlsk_socket_end(s);
}
static void s_close(struct tlsk_socket *s, void *ud)
{
    (void)s;
    ((struct srv_state *)ud)->closes++;
}
static const struct tlsk_socket_callbacks sock_cb = { .data = s_data, .end = s_end,
                                                      .close = s_close };
static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    (void)srv;
    ((struct srv_state *)data)->secure++;
    tlsk_socket_set_callbacks(s, &sock_cb);
    tlsk_socket_set_data(s, data);
    tlsk_socket_write(s, "hi", 2);
}
static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    (void)srv, (void)err, (void)s;
    ((struct srv_state *)data)->client_errors++;
}
static const struct tlsk_server_callbacks srv_cb = { .secure_connection = on_secure,
                                                     .client_error = on_client_error };

/* What the client thread does: one connection to port, offering session (may be NULL). */
struct job {
    int port;
    int version;
    bool raw_abort; /* send a ClientHello offering the session, then wait, never finish */
    unsigned char session[8192];
    size_t session_len;
    /* results */
    int rc, reused;
    long long ms;
    unsigned char got[8192];
    size_t got_len;
    atomic_int done;
};

static void *client(void *arg)
{
    struct job *j = arg;
    struct tlsk_context *cctx = h_client_ctx(j->version, NULL, TLSK_OFFLOAD_DEFAULT,
                                             j->version == TLSK_TLS1_2 ? TLSK_NO_TICKETS : 0);
    struct tlsk_socket_options o = { .servername = "localhost", .session = j->session_len ? j->session : NULL,
                                     .session_len = j->session_len };
    struct tlsk_socket *s = NULL;
    char buf[16];
    int fd = -1;
    long long t0 = p_now_ms();

    j->rc = -EIO;
    if (cctx && (fd = te_raw_connect(j->port)) >= 0 &&
        tlsk_socket_new_client(&s, cctx, fd, &o) == 0) {
        j->rc = h_handshake(s);
        j->ms = p_now_ms() - t0;
        if (j->rc == 0) {
            ssize_t n;
            j->reused = tlsk_socket_session_reused(s);
            h_write_all(s, "x", 1);
            n = h_read_some(s, buf, sizeof buf);
            /* TLS 1.3: the tickets came with the first read */
            ssize_t sl = tlsk_socket_session(s, j->got, sizeof j->got);
            j->got_len = sl > 0 ? (size_t)sl : 0;
            j->rc = n == 2 ? 0 : -EPROTO;
            h_shutdown(s);
        }
    }
    tlsk_socket_free(s);
    if (fd >= 0) {
        close(fd);
    }
    tlsk_context_free(cctx);
    atomic_store(&j->done, 1);
    return NULL;
}

static struct tlsk_loop *g_loop;

/* Run the loop until the job is done (at most 20 s). */
static void run(struct job *j)
{
    pthread_t t;
    long long end = p_now_ms() + 20000;
    atomic_store(&j->done, 0);
    h_spawn(&t, client, j);
    while (!atomic_load(&j->done) && p_now_ms() < end) {
        tlsk_loop_run(g_loop, 20);
    }
    pthread_join(t, NULL);
    for (int i = 0; i < 10; i++) {
        tlsk_loop_run(g_loop, 10); /* the servers' closes */
    }
}

static void spin(int ms)
{
    long long end = p_now_ms() + ms;
    while (p_now_ms() < end) {
        tlsk_loop_run(g_loop, 10);
    }
}

/* A fresh TLS 1.2 session from the server on port, ready to be offered (j->session). */
static void new_session(struct job *j, int port)
{
    memset(j, 0, sizeof *j);
    j->port = port;
    j->version = TLSK_TLS1_2;
    run(j);
    memcpy(j->session, j->got, j->got_len);
    j->session_len = j->got_len;
}

static void on_tick(struct tlsk_watcher *w, int revents, void *ud)
{
    (void)w;
    *(int *)ud = revents == 0 ? *(int *)ud + 1 : -1;
}

int main(void)
{
    struct tlsk_redis *r = NULL;
    struct tlsk_redis_options ro = { .host = "127.0.0.1" };
    struct srv_state sa = { 0 }, sb = { 0 };
    struct tlsk_server *a = NULL, *b = NULL;
    struct tlsk_context *ctx = NULL;
    struct tlsk_context_options co = { 0 };
    char err[256], host[64];
    int pa = 0, pb = 0;
    struct job j;
    const struct tlsk_redis_stats *st;

    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    snprintf(p_tmp, sizeof p_tmp, "/tmp");
    p_to = 10000;
    if (!TAP_OK(tlsk_loop_new(&g_loop) == 0, "loop")) {
        return tap_done();
    }
    {
        struct tlsk_watcher *w = NULL;
        int fired = 0;
        TAP_OK(tlsk_watcher_new(&w, g_loop, -1, on_tick, &fired) == 0 &&
                   tlsk_watcher_timer(w, 30) == 0,
               "watcher: a timer-only watcher on the built-in loop");
        spin(120);
        TAP_IS(fired, 1, "watcher: its timer fired once with revents 0");
        tlsk_watcher_free(w);
        spin(20);
        TAP_IS(fired, 1, "watcher: nothing after tlsk_watcher_free");
    }
    TAP_IS(tlsk_redis_new(&r, g_loop, &(struct tlsk_redis_options){ .port = 1 }), -EINVAL,
           "tlsk_redis_new without host or path: -EINVAL");
    int started = redis_start();
    if (!TAP_OK(started == 0, "redis-server on 127.0.0.1:%d", g_redis_port)) {
        return tap_done();
    }
    ro.port = g_redis_port;
    ro.timeout_ms = 50;
    TAP_OK(tlsk_redis_new(&r, g_loop, &ro) == 0, "tlsk_redis_new");
    for (int i = 0; i < 100 && !tlsk_redis_up(r); i++) {
        spin(10);
    }
    TAP_OK(tlsk_redis_up(r), "the store connected to Redis");
    st = tlsk_redis_stats(r);

    co.cert_file = h_fixture("agent1-cert.pem");
    co.key_file = h_fixture("agent1-key.pem");
    co.session_store = tlsk_redis_store(r);
    co.session_id_context = "test_redis";
    co.flags = TLSK_STATEFUL_TICKETS; /* TLS 1.3 tickets through the store too */
    if (!TAP_OK(tlsk_context_new(&ctx, &co, err, sizeof err) == 0, "server context (%s)", err)) {
        return tap_done();
    }
    struct tlsk_server_options so = { .ctx = ctx, .handshake_timeout_ms = 5000 };
    bool listening = tlsk_server_new(&a, g_loop, &so, &srv_cb, &sa) == 0 &&
                     tlsk_server_listen(a, "127.0.0.1", "0", 64) == 0 &&
                     tlsk_server_address(a, host, sizeof host, &pa) == 0 &&
                     tlsk_server_new(&b, g_loop, &so, &srv_cb, &sb) == 0 &&
                     tlsk_server_listen(b, "127.0.0.1", "0", 64) == 0 &&
                     tlsk_server_address(b, host, sizeof host, &pb) == 0;
    TAP_OK(listening, "servers A (%d) and B (%d) share the store", pa, pb);

    for (int v = 0; v < 2; v++) {
        int version = v ? TLSK_TLS1_3 : TLSK_TLS1_2;
        const char *vn = v ? "TLS 1.3 stateful ticket" : "TLS 1.2 session id";
        uint64_t found = st->found;
        memset(&j, 0, sizeof j);
        j.port = pa;
        j.version = version;
        run(&j);
        TAP_OK(j.rc == 0 && !j.reused && j.got_len > 0, "%s: full handshake on A, session kept "
               "(%s, %zu bytes)", vn, tlsk_err_name(j.rc), j.got_len);
        TAP_OK(redis_keys() >= v + 1, "%s: in Redis (%lld keys)", vn, redis_keys());
        memcpy(j.session, j.got, j.got_len);
        j.session_len = j.got_len;
        j.port = pb;
        run(&j);
        TAP_OK(j.rc == 0 && j.reused == 1, "%s: resumed on B through Redis (%s, reused %d)", vn,
               tlsk_err_name(j.rc), j.reused);
        TAP_OK(st->found == found + 1, "%s: the store counted the hit", vn);
    }

    /* Frozen Redis: the deadline answers. */
    new_session(&j, pa);
    kill(g_redis.pid, SIGSTOP);
    {
        uint64_t timeouts = st->timeouts;
        j.port = pb;
        run(&j);
        TAP_OK(j.rc == 0 && !j.reused && j.ms >= 40 && j.ms < 1000,
               "Redis frozen: full handshake after the 50 ms deadline (%lld ms)", j.ms);
        TAP_OK(st->timeouts == timeouts + 1, "Redis frozen: one timeout counted");
    }

    /* A connection freed while its lookup waits: B's handshake timeout (100 ms) comes before
     * the store's deadline (2 s here). */
    {
        struct tlsk_redis *r2 = NULL;
        struct tlsk_context *ctx2 = NULL;
        struct tlsk_server *c = NULL;
        struct srv_state sc = { 0 };
        int pc = 0;
        struct tlsk_redis_options ro2 = ro;
        ro2.timeout_ms = 2000;
        kill(g_redis.pid, SIGCONT);
        TAP_OK(tlsk_redis_new(&r2, g_loop, &ro2) == 0, "cancel: a second store, 2 s deadline");
        for (int i = 0; i < 100 && !tlsk_redis_up(r2); i++) {
            spin(10);
        }
        kill(g_redis.pid, SIGSTOP);
        co.session_store = tlsk_redis_store(r2);
        struct tlsk_server_options so2 = { .handshake_timeout_ms = 100 };
        TAP_OK(tlsk_context_new(&ctx2, &co, err, sizeof err) == 0 && (so2.ctx = ctx2) &&
                   tlsk_server_new(&c, g_loop, &so2, &srv_cb, &sc) == 0 &&
                   tlsk_server_listen(c, "127.0.0.1", "0", 64) == 0 &&
                   tlsk_server_address(c, host, sizeof host, &pc) == 0,
               "cancel: server C with a 100 ms handshake timeout");
        j.port = pc;
        run(&j); /* the client's handshake fails: the server gave up */
        spin(200);
        TAP_OK(sc.client_errors == 1 && tlsk_redis_stats(r2)->cancelled == 1,
               "cancel: clientError (handshake timeout) and the lookup cancelled (%d, %llu)",
               sc.client_errors, (unsigned long long)tlsk_redis_stats(r2)->cancelled);
        kill(g_redis.pid, SIGCONT);
        for (int i = 0; i < 100 && tlsk_redis_stats(r2)->late == 0; i++) {
            spin(10);
        }
        TAP_OK(tlsk_redis_stats(r2)->late == 1,
               "cancel: the late reply came and touched nothing (late %llu)",
               (unsigned long long)tlsk_redis_stats(r2)->late);
        tlsk_server_close(c);
        spin(50);
        tlsk_context_free(ctx2);
        tlsk_redis_free(r2);
    }

    /* Redis killed, then restarted. */
    kill(g_redis.pid, SIGKILL);
    p_kid_wait(&g_redis, 5000);
    p_kid_free(&g_redis);
    for (int i = 0; i < 100 && tlsk_redis_up(r); i++) {
        spin(10);
    }
    TAP_OK(!tlsk_redis_up(r), "Redis killed: the store knows");
    {
        uint64_t unavailable = st->unavailable;
        j.port = pb;
        run(&j);
        TAP_OK(j.rc == 0 && !j.reused && j.ms < 1000,
               "Redis down: full handshake at once (%lld ms)", j.ms);
        TAP_OK(st->unavailable == unavailable + 1, "Redis down: answered without asking");
    }
    {
        char port[16];
        const char *argv[] = { "redis-server", "--bind", "127.0.0.1", "--port", port, "--save",
                               "", "--appendonly", "no", NULL };
        snprintf(port, sizeof port, "%d", g_redis_port);
        TAP_OK(p_kid_spawn(&g_redis, "redis-server", argv, NULL, NULL, P_KID_NULL, false) == 0,
               "redis-server restarted");
        for (int i = 0; i < 800 && !tlsk_redis_up(r); i++) {
            spin(10);
        }
        TAP_OK(tlsk_redis_up(r), "the store reconnected by itself (%llu connects)",
               (unsigned long long)st->connects);
        new_session(&j, pa);
        j.port = pb;
        run(&j);
        TAP_OK(j.rc == 0 && j.reused == 1, "after the restart: A's session resumes on B");
    }

    tlsk_server_close(a);
    tlsk_server_close(b);
    spin(50);
    tlsk_context_free(ctx);
    tlsk_redis_free(r);
    spin(20);
    TAP_IS(tlsk_loop_free(g_loop), 0, "everything closed: the loop frees");
    p_kid_stop(&g_redis);
    p_kid_free(&g_redis);
    return tap_done();
}

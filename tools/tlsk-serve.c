/*
 * tlsk-serve - serve folders over HTTPS; bodies go out with tlsk_socket_sendfile, zero-copy
 * through the kernel when transmit is offloaded (kTLS), OpenSSL in userspace otherwise.
 *
 * Architecture: one worker thread per core, each with its own SO_REUSEPORT listening socket
 * and its own epoll loop over non-blocking connections; the main thread only parses options,
 * builds the TLS contexts and the SNI table (one refcounted "generation" of the
 * configuration), and waits for signals: SIGTERM/SIGINT stop, SIGHUP builds a new generation
 * from the same files and swaps it in for new connections (connections in flight keep theirs),
 * and a --ticket-key-file that changes is re-read within a second.  A connection is a
 * small state machine (handshake, read head, write head, send body, close_notify, linger)
 * driven until tlsk says -EAGAIN, then parked on what tlsk_socket_events() asks for.
 * Deadlines (header, idle, send) are checked by a periodic sweep of each worker's list.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "cli.h"
#include "fcache.h"
#include "http.h"
#include "service.h"
#include "tlsk.h"
#include "tlsk/redis.h"

#define PROG "tlsk-serve"

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */

struct vhost {
    const char *name; /* SNI pattern, or NULL for the default host */
    const char *cert, *key, *root;
    char root_real[PATH_MAX];
    int root_fd;
    struct tlsk_context *ctx;
};

#define MAX_VHOSTS 64

/* One generation of the configuration: every host's context (certificate, key, client CAs,
 * ticket keys), its root folder and the SNI table.  Built whole from the files at startup and
 * on SIGHUP; new connections take a reference on the current one, and a generation replaced
 * by a reload is freed when its last connection closes, so a transfer in flight never sees
 * its context or root change under it. */
struct live {
    atomic_int refs;
    unsigned long gen; /* tells this generation's roots from a later one's (fcache.h) */
    struct vhost hosts[MAX_VHOSTS + 1]; /* [0] is the default host */
    int nhosts;
    struct tlsk_sni *sni;
};

static struct {
    struct vhost hosts[MAX_VHOSTS + 1]; /* the files and names only; built into a live */
    int nhosts;
    const char *listen;
    const char *client_ca;
    const char *ticket_key_file;
    const char *session_store; /* redis://HOST:PORT or unix:/path; NULL: per-process cache */
    int store_timeout_ms;
    bool require_client_cert;
    enum tlsk_offload_policy offload;
    int min_version;
    const char *ciphersuites, *ciphers;
    int workers;
    long max_conns;
    size_t max_header;
    size_t max_line;
    int header_timeout_ms, idle_timeout_ms, send_timeout_ms, grace_ms;
    bool list_dirs;
    bool mmap;
    bool no_lean; /* keep OpenSSL's state where the kernel cannot take a connection */
    long file_cache; /* descriptors of small files each worker keeps (fcache.h); 0: none */
    bool quiet;
    bool log_handshake_errors;
} cfg = {
    .listen = "127.0.0.1:8443",
    .max_header = 16384,
    .max_line = 8192,
    .header_timeout_ms = 10000,
    .idle_timeout_ms = 60000,
    .send_timeout_ms = 60000,
    .grace_ms = 30000,
    .store_timeout_ms = 50,
    .file_cache = 256,
};

/* Sessions live as long in a shared store as in the cache (Node's sessionTimeout). */
#define SESSION_TIMEOUT_S 300

static atomic_long g_conns;       /* open connections, all workers */
static atomic_bool g_stopping;    /* SIGTERM seen: stop accepting, finish in-flight */
static int g_stop_efd = -1;
static bool g_activated;          /* the listening socket came from the service manager */       /* readable once stopping */
static struct sockaddr_storage g_addr; /* resolved listening address (port filled in) */
static socklen_t g_addrlen;

static pthread_mutex_t g_live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct live *g_live; /* the current generation; swapped by the main thread */
static unsigned long g_gen;  /* generations built; only the main thread builds them */

/* The current ticket keys from --ticket-key-file (n x 48 bytes), and the identity of the file
 * they (or the last refused version) came from, to notice a change. */
static struct {
    unsigned char *keys;
    size_t n;
    struct stat seen;
    bool have_seen;
} g_tk;

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One write(2) per line, so lines from several workers never interleave. */
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof buf - 2) {
        n = (int)sizeof buf - 2;
    }
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
        /* nowhere left to report it */
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Connections                                                                              */

enum cstate {
    C_HANDSHAKE,
    C_READ,      /* waiting for (the rest of) a request head */
    C_DISCARD,   /* skipping a request body */
    C_WRITE,     /* response head (and generated body) */
    C_BODY,      /* file body through tlsk_socket_sendfile */
    C_SHUTDOWN,  /* sending close_notify */
    C_LINGER,    /* draining what the client still sends, so our last bytes are not reset */
    C_DRAIN,     /* after a fatal error (tlsk freed, its alert sent): FIN, drain, close */
    C_CLOSED,
};

struct worker;

struct conn {
    struct conn *prev, *next;
    struct worker *w;
    struct tlsk_socket *s;
    int fd;
    enum cstate state;
    uint32_t armed; /* epoll events registered */
    long long deadline;
    struct live *live; /* the configuration generation this connection was accepted under */
    struct vhost *vh;
    char remote[64];
    char offload[96];
    const char *cert_state;

    char *in; /* NULL while idle; grows to cfg.max_header */
    size_t in_len, in_cap;
    size_t head_len; /* head of the request being answered, consumed when it completes */
    long long discard;

    char *out;
    size_t out_len, out_off, out_cap;
    int file_fd;
    off_t file_off, file_end;
    bool corked;

    bool keep;
    int status;
    long long body_bytes;
    char reqline[256];
    unsigned requests;
    bool await_next; /* a response just finished: read only if something is here already */
    size_t drained;   /* C_LINGER, C_DRAIN: bytes dropped so far */
    bool drain_blind; /* C_DRAIN: nothing more can be read; waiting for the client's FIN */
    bool store_wait;  /* the handshake waits for the session store's answer */
    struct conn *snext, *sprev; /* the worker's list of those, in the order they began */
    unsigned store_round;       /* the store_run() pass it began waiting in */
};

/* An HTTP date kept formatted while the time it is for stays the same. */
struct date_cache {
    time_t t;
    bool set;
    char s[30];
};

struct worker {
    int id;
    pthread_t thread;
    int ep;
    int lfd;
    bool listening; /* lfd registered in ep */
    struct conn *conns;
    long nconns;
    struct date_cache now;   /* the Date header, once a second */
    struct date_cache mtime; /* the last file's Last-Modified, request after request */
    struct fcache *files;    /* descriptors of small files, revalidated on each use */
    /* --session-store: this worker's Redis connection (include/tlsk/redis.h) on a built-in
     * tlsk_loop of its own, whose backend fd sits in ep */
    struct tlsk_loop *sloop;
    struct tlsk_redis *redis;
    struct conn *swait_head, *swait_tail; /* handshakes waiting for the store, oldest first */
    unsigned store_round;                 /* store_run() passes */
    bool store_up, store_told;
    uint64_t store_timeouts;
    long long store_since, store_slow_log;
};

enum { TAG_LISTEN = 1, TAG_STOP = 2, TAG_STORE = 3 };

/* The contexts are shared by the workers, each with its own Redis connection: the store they
 * carry forwards to the calling worker's. */
static _Thread_local struct tlsk_redis *t_redis;

static void store_new(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                      const unsigned char *data, size_t data_len, void *ud)
{
    (void)ud;
    if (t_redis) {
        tlsk_redis_store(t_redis)->new_session(s, id, id_len, data, data_len, t_redis);
    }
}

static int store_resume(struct tlsk_socket *s, const unsigned char *id, size_t id_len, void *ud)
{
    (void)ud;
    return t_redis ? tlsk_redis_store(t_redis)->resume_session(s, id, id_len, t_redis) : 0;
}

static void store_cancel(struct tlsk_socket *s, void *ud)
{
    (void)ud;
    if (t_redis) {
        tlsk_redis_store(t_redis)->cancel(s, t_redis);
    }
}

static const struct tlsk_session_store g_store = { .new_session = store_new,
                                                   .resume_session = store_resume,
                                                   .cancel = store_cancel };

/* A handshake waits for a session lookup: store_run() wakes it.  Only waiting connections
 * are listed, so a store event costs what waits, not every connection of the worker. */
static void store_wait(struct conn *c)
{
    struct worker *w = c->w;

    if (c->store_wait) {
        return;
    }
    c->store_wait = true;
    c->store_round = w->store_round;
    c->snext = NULL;
    c->sprev = w->swait_tail;
    if (w->swait_tail) {
        w->swait_tail->snext = c;
    } else {
        w->swait_head = c;
    }
    w->swait_tail = c;
}

static void store_unwait(struct conn *c)
{
    struct worker *w = c->w;

    if (!c->store_wait) {
        return;
    }
    c->store_wait = false;
    if (c->sprev) {
        c->sprev->snext = c->snext;
    } else {
        w->swait_head = c->snext;
    }
    if (c->snext) {
        c->snext->sprev = c->sprev;
    } else {
        w->swait_tail = c->sprev;
    }
    c->snext = c->sprev = NULL;
}

static void conn_close(struct conn *c);
static void conn_linger(struct conn *c);
static void conn_run(struct conn *c);

static const char *date_cached(struct date_cache *d, time_t t)
{
    if (!d->set || t != d->t) {
        http_date(t, d->s);
        d->t = t;
        d->set = true;
    }
    return d->s;
}

static const char *date_now(struct worker *w)
{
    return date_cached(&w->now, time(NULL));
}

static void cork(struct conn *c, bool on)
{
    int v = on;
    if (c->corked != on) {
        setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &v, sizeof v);
        c->corked = on;
    }
}

static void arm(struct conn *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (c->armed == ev) {
        return;
    }
    if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0) {
        c->armed = ev;
    }
}

static void wait_for_tls(struct conn *c)
{
    int ev = tlsk_socket_events(c->s);
    arm(c, ((ev & POLLOUT) ? EPOLLOUT : 0) | (((ev & POLLIN) || !(ev & POLLOUT)) ? EPOLLIN : 0));
}

/* Whether the client's FIN has arrived: one recv that takes nothing.  A client that sent
 * close_notify and then FIN has closed the connection, as nearly every client does (close(2)
 * or shutdown(SHUT_RDWR) after its close_notify): our close_notify would reach a socket that
 * no longer reads, and its kernel would answer with a reset.  So tlsk-serve closes at once,
 * as nginx does after every close_notify; a client that sent close_notify alone, waiting
 * for ours (a bidirectional shutdown), still gets it.  tlsk-serve(1), CLOSING. */
static bool client_closed(const struct conn *c)
{
    char b;

    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Room to read more of a request head into c->in: 1 KiB at first, doubled while full, up
 * to cfg.max_header. */
static bool in_reserve(struct conn *c)
{
    size_t cap = c->in_cap;
    char *p;

    if (c->in && c->in_len < cap) {
        return true;
    }
    cap = cap ? cap * 2 : 1024;
    if (cap > cfg.max_header) {
        cap = cfg.max_header;
    }
    if (cap <= c->in_len) {
        return false; /* cannot happen: C_READ answers 431 at max_header */
    }
    if (!(p = realloc(c->in, cap))) {
        return false;
    }
    c->in = p;
    c->in_cap = cap;
    return true;
}

/* Waiting for a request with nothing of it read: an idle keep-alive connection keeps no
 * buffers of its own (bench/README.md, idle memory), and between requests the library frees
 * OpenSSL's state (tlsk_socket_idle: lean at the first wait after a response; before the
 * first request a connection more often closes than waits, as the library's own rule has
 * it).  False when the library failed the connection doing so (out of memory). */
static bool conn_idle(struct conn *c)
{
    if (c->in_len == 0 && c->in) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (c->out_len == 0 && c->out) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return c->requests == 0 || tlsk_socket_idle(c->s) == 0;
}

static bool out_reserve(struct conn *c, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        char *p;
        while (cap < c->out_len + n) {
            cap *= 2;
        }
        p = realloc(c->out, cap);
        if (!p) {
            return false;
        }
        c->out = p;
        c->out_cap = cap;
    }
    return true;
}

static void out_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    size_t room = c->out ? c->out_cap - c->out_len : 0;
    int n;

    /* Formatted once into the room there is; a second time only when it did not fit. */
    va_start(ap, fmt);
    n = vsnprintf(room ? c->out + c->out_len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= room) {
        if (!out_reserve(c, (size_t)n + 1)) {
            return;
        }
        va_start(ap, fmt);
        vsnprintf(c->out + c->out_len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    c->out_len += (size_t)n;
}

static void out_bytes(struct conn *c, const void *p, size_t n)
{
    if (out_reserve(c, n)) {
        memcpy(c->out + c->out_len, p, n);
        c->out_len += n;
    }
}

/* The lines of every head are put together from pieces, not with out_printf: vsnprintf on
 * each response cost 10,000 of the 29,000 userspace instructions per 1 KiB request
 * (callgrind, bench/README.md "small files"). */
static void out_str(struct conn *c, const char *str)
{
    out_bytes(c, str, strlen(str));
}

static void out_u64(struct conn *c, unsigned long long v)
{
    char d[20];
    size_t n = sizeof d;

    do {
        d[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_bytes(c, d + n, sizeof d - n);
}

/* "NAME: VALUE\r\n" */
static void out_field(struct conn *c, const char *name, const char *value)
{
    out_str(c, name);
    out_str(c, value);
    out_bytes(c, "\r\n", 2);
}

static void head_common(struct conn *c, int status)
{
    c->status = status;
    out_str(c, "HTTP/1.1 ");
    out_u64(c, (unsigned)status);
    out_bytes(c, " ", 1);
    out_str(c, http_reason(status));
    out_str(c, "\r\nServer: tlsk-serve\r\n");
    out_field(c, "Date: ", date_now(c->w));
}

static void head_end(struct conn *c)
{
    out_str(c, c->keep ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
}

/* A complete response with a short text body (errors, redirects). */
static void respond_text(struct conn *c, int status, bool head_only, const char *extra)
{
    char body[128];
    int n = snprintf(body, sizeof body, "%d %s\n", status, http_reason(status));

    if (status >= 400 && status != 404 && status != 416 && status != 403 && status != 405) {
        c->keep = false; /* the stream may be out of step: do not read more from it */
    }
    head_common(c, status);
    out_printf(c, "%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n",
               extra ? extra : "", n);
    head_end(c);
    if (!head_only) {
        out_bytes(c, body, (size_t)n);
        c->body_bytes = n;
    }
    c->state = C_WRITE;
}

static struct live *live_get(void)
{
    struct live *l;
    pthread_mutex_lock(&g_live_lock);
    l = g_live;
    atomic_fetch_add(&l->refs, 1);
    pthread_mutex_unlock(&g_live_lock);
    return l;
}

static void live_put(struct live *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < l->nhosts; i++) {
        tlsk_context_free(l->hosts[i].ctx);
        if (l->hosts[i].root_fd >= 0) {
            close(l->hosts[i].root_fd);
        }
    }
    tlsk_sni_free(l->sni);
    free(l);
}

static struct vhost *host_for_ctx(struct live *l, struct tlsk_context *ctx)
{
    for (int i = 0; i < l->nhosts; i++) {
        if (l->hosts[i].ctx == ctx) {
            return &l->hosts[i];
        }
    }
    return &l->hosts[0];
}

static void describe_offload(struct conn *c)
{
    struct tlsk_offload o = tlsk_socket_offload(c->s);
    char tx[40], rx[40];

    if (o.tx.mode == TLSK_MODE_KERNEL) {
        snprintf(tx, sizeof tx, "kernel");
    } else {
        snprintf(tx, sizeof tx, "userspace/%s", tlsk_reason_name(o.tx.reason));
    }
    if (o.rx.mode == TLSK_MODE_KERNEL) {
        snprintf(rx, sizeof rx, "kernel");
    } else {
        snprintf(rx, sizeof rx, "userspace/%s", tlsk_reason_name(o.rx.reason));
    }
    snprintf(c->offload, sizeof c->offload, "%s tx=%s rx=%s", tlsk_socket_version(c->s), tx, rx);
}

/* Open rel (from http_target_path) below the host's root and fstat it, through the worker's
 * cache of small files (fcache.h).  http_open_beneath: RESOLVE_BENEATH refuses "..", absolute
 * symbolic links and links that climb out, and magic /proc links.  *borrowed says the
 * descriptor is the cache's (fcache_release, never close). */
static int open_file(struct conn *c, const char *rel, struct stat *st, bool *borrowed)
{
    return fcache_open(c->w->files, c->live->gen, c->vh->root_fd, c->vh->root_real, rel, st,
                       borrowed);
}

static int errno_status(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return 404;
    case ENAMETOOLONG:
        return 414;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return 503;
    default:
        return 403; /* EXDEV, ELOOP, EACCES, EPERM: outside the root or not ours to give */
    }
}

/* A body that fits in one TLS record together with the head is read in after it: one
 * record, one write(2), and no TCP_CORK on and off around it (bench/README.md, small files).
 * When OpenSSL encrypts (transmit not offloaded), tlsk_socket_sendfile() would pread the body
 * into a buffer of its own anyway, so up to two records' worth goes the same way: one write
 * of both records (lib/txq.c gathers them).  With kTLS transmit a body beyond one record goes
 * by sendfile, which copies no file data through userspace.  False when it does not fit or
 * the file came up short (then sent the usual way). */
#define RECORD_MAX 16384 /* TLS plaintext per record (RFC 8446 5.1) */
#define INLINE_MAX (2 * RECORD_MAX)

static bool inline_body(struct conn *c, int fd, off_t first, size_t len)
{
    size_t max = tlsk_socket_offload(c->s).tx.mode == TLSK_MODE_KERNEL ? RECORD_MAX : INLINE_MAX;
    size_t got = 0;

    if (len > max || c->out_len > max - len ||
        !out_reserve(c, len)) {
        return false;
    }
    while (got < len) {
        ssize_t n = pread(fd, c->out + c->out_len + got, len - got, first + (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    c->out_len += len;
    c->body_bytes = (long long)len;
    return true;
}

/* Build the response to one parsed request; leaves c in C_WRITE (head, maybe a generated
 * body) and, for a file body, file_fd/file_off/file_end set for C_BODY. */
static void handle_request(struct conn *c, struct http_request *r)
{
    char rel[PATH_MAX], etag[64];
    const char *lm;
    bool dir_slash = false, head_only = r->method == HTTP_HEAD;
    struct stat st;
    off_t first = 0, last = -1;
    int fd = -1, status, rc;
    bool borrowed = false; /* fd belongs to the worker's file cache */

    if (r->method == HTTP_OTHER) {
        respond_text(c, 405, false, "Allow: GET, HEAD\r\n");
        return;
    }
    /* With SNI, the certificate chose the host: a different Host header was meant for
     * another server (RFC 9110 15.5.20). */
    if (c->live->sni && tlsk_socket_servername(c->s) && r->host) {
        const char *sn = tlsk_socket_servername(c->s);
        size_t hl = strcspn(r->host, ":");
        if (r->host[0] == '[' || hl != strlen(sn) || strncasecmp(r->host, sn, hl) != 0) {
            respond_text(c, 421, head_only, NULL);
            return;
        }
    }
    rc = http_target_path(r->target, rel, sizeof rel, &dir_slash);
    if (rc != 0) {
        respond_text(c, rc, head_only, NULL);
        return;
    }
    fd = open_file(c, rel, &st, &borrowed);
    if (fd < 0) {
        respond_text(c, errno_status(errno), head_only, NULL);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        char raw[PATH_MAX], loc[3 * PATH_MAX + 32];
        int ifd;
        bool iborrowed;
        if (!dir_slash) {
            /* From the normalised path, never the raw target: "//evil.example/.." is the root,
             * and a Location of "//evil.example/../" would send the client to another host. */
            fcache_release(fd, borrowed);
            memcpy(loc, "Location: ", 10);
            if (http_dir_location(rel, r->target, loc + 10, sizeof loc - 12) < 0) {
                respond_text(c, 414, head_only, NULL);
                return;
            }
            strcat(loc, "\r\n");
            respond_text(c, 301, head_only, loc);
            return;
        }
        if ((size_t)snprintf(raw, sizeof raw, "%s/index.html", rel) >= sizeof raw) {
            fcache_release(fd, borrowed);
            respond_text(c, 414, head_only, NULL);
            return;
        }
        ifd = open_file(c, raw, &st, &iborrowed);
        if (ifd < 0 || !S_ISREG(st.st_mode)) {
            bool missing = ifd < 0 && errno == ENOENT;
            char path[PATH_MAX + 2];
            size_t len = 0;
            char *page;
            fcache_release(ifd, iborrowed);
            if (!cfg.list_dirs || !missing) {
                fcache_release(fd, borrowed);
                respond_text(c, 403, head_only, NULL);
                return;
            }
            snprintf(path, sizeof path, "/%s%s", strcmp(rel, ".") == 0 ? "" : rel,
                     strcmp(rel, ".") == 0 ? "" : "/");
            page = http_listing(fd, c->vh->root_fd, c->vh->root_real, rel, path, &len);
            fcache_release(fd, borrowed);
            if (!page) {
                respond_text(c, 500, head_only, NULL);
                return;
            }
            head_common(c, 200);
            out_printf(c, "Content-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                          "Cache-Control: no-cache\r\n", len);
            head_end(c);
            if (!head_only) {
                out_bytes(c, page, len);
                c->body_bytes = (long long)len;
            }
            free(page);
            c->state = C_WRITE;
            return;
        }
        fcache_release(fd, borrowed);
        fd = ifd;
        borrowed = iborrowed;
        snprintf(rel, sizeof rel, "index.html");
    } else if (!S_ISREG(st.st_mode)) {
        fcache_release(fd, borrowed);
        respond_text(c, 403, head_only, NULL);
        return;
    } else if (dir_slash) {
        fcache_release(fd, borrowed);
        respond_text(c, 404, head_only, NULL);
        return;
    }

    /* A regular file: validators, conditionals, range. */
    http_etag(&st, etag);
    lm = date_cached(&c->w->mtime, st.st_mtime);
    status = 200;
    if (r->if_none_match) {
        if (http_etag_match(r->if_none_match, etag)) {
            status = 304;
        }
    } else if (r->if_modified_since) {
        time_t ims;
        if (http_date_parse(r->if_modified_since, &ims) == 0 && st.st_mtime <= ims) {
            status = 304;
        }
    }
    if (status == 200 && r->range) {
        bool honour = true;
        if (r->if_range) {
            time_t t;
            if (r->if_range[0] == '"') {
                honour = strcmp(r->if_range, etag) == 0; /* strong comparison */
            } else {
                honour = http_date_parse(r->if_range, &t) == 0 && t == st.st_mtime;
            }
        }
        rc = honour ? http_parse_range(r->range, st.st_size, &first, &last) : 0;
        if (rc < 0) {
            char cr[64];
            fcache_release(fd, borrowed);
            snprintf(cr, sizeof cr, "Content-Range: bytes */%lld\r\n", (long long)st.st_size);
            respond_text(c, 416, head_only, cr);
            return;
        }
        status = rc > 0 ? 206 : 200;
    }
    if (status != 206) {
        first = 0;
        last = st.st_size - 1;
    }

    head_common(c, status);
    out_field(c, "Last-Modified: ", lm);
    out_field(c, "ETag: ", etag);
    if (status == 304) {
        fcache_release(fd, borrowed);
        head_end(c);
        c->state = C_WRITE;
        return;
    }
    out_field(c, "Content-Type: ", http_mime_type(rel));
    out_str(c, "Content-Length: ");
    out_u64(c, (unsigned long long)(last - first + 1));
    out_str(c, "\r\nAccept-Ranges: bytes\r\n");
    if (status == 206) {
        out_printf(c, "Content-Range: bytes %lld-%lld/%lld\r\n", (long long)first,
                   (long long)last, (long long)st.st_size);
    }
    head_end(c);
    c->state = C_WRITE;
    if (head_only || last < first) {
        fcache_release(fd, borrowed);
        return;
    }
    if (inline_body(c, fd, first, (size_t)(last - first + 1))) {
        fcache_release(fd, borrowed);
        return;
    }
    /* Head and body did not fit one record: the body goes by sendfile, and the connection
     * closes the descriptor when done, so it takes it from the cache. */
    c->file_fd = borrowed ? fcache_take(c->w->files, fd) : fd;
    c->file_off = first;
    c->file_end = last + 1;
    /* Head and body leave in the same segments: no lone packet for a small file's head. */
    cork(c, true);
}

static void log_request(struct conn *c)
{
    if (cfg.quiet) {
        return;
    }
    /* "lean" as the connection is now: one that becomes lean at its first wait served the
     * requests before it with OpenSSL (tlsk_socket_idle). */
    logline("%s \"%s\" %d %lld host=%s %s%s%s%s", c->remote, c->reqline, c->status,
            c->body_bytes, c->vh ? (c->vh->name ? c->vh->name : "default") : "-", c->offload,
            tlsk_socket_lean(c->s) ? " lean" : "", c->cert_state ? " client-cert=" : "",
            c->cert_state ? c->cert_state : "");
}

/* The response is out: log it, then read the next request or close. */
static void response_done(struct conn *c)
{
    cork(c, false);
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    log_request(c);
    c->out_len = c->out_off = 0;
    c->status = 0;
    c->body_bytes = 0;
    c->reqline[0] = '\0';
    if (c->head_len) {
        memmove(c->in, c->in + c->head_len, c->in_len - c->head_len);
        c->in_len -= c->head_len;
        c->head_len = 0;
    }
    if (!c->keep || atomic_load(&g_stopping)) {
        c->discard = 0;
        c->state = C_SHUTDOWN;
        c->deadline = now_ms() + 2000;
        return;
    }
    if (c->discard > 0) {
        c->state = C_DISCARD; /* the request's body, before the next request */
        c->deadline = now_ms() + cfg.header_timeout_ms;
        return;
    }
    c->state = C_READ;
    c->await_next = c->in_len == 0;
    c->deadline = now_ms() + (c->in_len ? cfg.header_timeout_ms : cfg.idle_timeout_ms);
}

/* A complete head is in c->in: parse it and prepare the response. */
static void take_request(struct conn *c, size_t head_len)
{
    struct http_request r;
    int rc;

    c->requests++;
    c->head_len = head_len;
    c->keep = true;
    c->file_fd = -1;
    {
        /* The request line for the log, before parsing cuts it up. */
        const char *p = c->in;
        size_t n;
        while (*p == '\r' || *p == '\n') {
            p++;
        }
        n = strcspn(p, "\r\n");
        /* Untrusted bytes: non-printable ones, '"' and '\\' are written \\xNN. */
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
                if (o + 5 > sizeof c->reqline) {
                    break;
                }
                o += (size_t)snprintf(c->reqline + o, 5, "\\x%02x", ch);
            } else {
                if (o + 2 > sizeof c->reqline) {
                    break;
                }
                c->reqline[o++] = (char)ch;
            }
        }
        c->reqline[o] = '\0';
    }
    rc = http_parse_request(c->in, head_len, cfg.max_line, &r);
    if (rc != 0) {
        c->keep = false;
        respond_text(c, rc, false, NULL);
        return;
    }
    c->keep = r.keep_alive;
    if (r.has_transfer_encoding) {
        c->keep = false; /* a body we cannot frame: answer and close */
        respond_text(c, 501, r.method == HTTP_HEAD, NULL);
        return;
    }
    if (r.content_length > 0) {
        if (r.content_length > 1 << 20) {
            c->keep = false;
            respond_text(c, 413, r.method == HTTP_HEAD, NULL);
            return;
        }
        c->discard = r.content_length; /* skipped once the response is out */
    }
    handle_request(c, &r);
}

/* Drive c until tlsk would block or the connection ends. */
static void conn_run(struct conn *c)
{
    int budget = 64; /* sendfile calls per wake-up: a fast client must not starve the rest */

    for (;;) {
        ssize_t n;

        switch (c->state) {
        case C_HANDSHAKE:
            n = tlsk_socket_handshake(c->s);
            if (n == -EAGAIN) {
                if (c->w->redis && tlsk_socket_events(c->s) == 0) {
                    store_wait(c); /* a session lookup */
                }
                wait_for_tls(c);
                return;
            }
            if (n < 0) {
                if (cfg.log_handshake_errors) {
                    char detail[512];
                    logline("%s handshake failed: %s %s", c->remote, tlsk_err_name((int)n),
                            cli_escape(tlsk_socket_error_detail(c->s), detail, sizeof detail));
                }
                conn_linger(c); /* the client reads our alert, not a reset */
                return;
            }
            c->vh = host_for_ctx(c->live, tlsk_socket_servername(c->s) && c->live->sni
                                              ? tlsk_sni_lookup(c->live->sni,
                                                                tlsk_socket_servername(c->s))
                                              : c->live->hosts[0].ctx);
            describe_offload(c);
            if (cfg.client_ca) {
                c->cert_state = tlsk_socket_authorized(c->s)
                                    ? "verified"
                                    : tlsk_socket_authorization_error(c->s);
                if (!c->cert_state) {
                    c->cert_state = "unverified";
                }
            }
            c->state = C_READ;
            break;

        case C_READ: {
            size_t hl = http_head_length(c->in, c->in_len);
            if (hl) {
                take_request(c, hl);
                break;
            }
            if (c->in_len >= cfg.max_header) {
                c->keep = false;
                snprintf(c->reqline, sizeof c->reqline, "(head over %zu bytes)", cfg.max_header);
                c->head_len = c->in_len;
                respond_text(c, memchr(c->in, '\n', c->in_len) ? 431 : 414, false, NULL);
                break;
            }
            if (c->await_next) {
                /* A response is out and nothing of the next request is here, nor held by
                 * the library: wait for the socket instead of a read that says -EAGAIN
                 * (the wake-up then reads). */
                c->await_next = false;
                if (!tlsk_socket_pending(c->s)) {
                    if (!conn_idle(c)) {
                        conn_close(c);
                        return;
                    }
                    arm(c, EPOLLIN);
                    return;
                }
            }
            if (!in_reserve(c)) {
                conn_linger(c);
                return;
            }
            n = tlsk_socket_read(c->s, c->in + c->in_len, c->in_cap - c->in_len);
            if (n == -EAGAIN) {
                if (!conn_idle(c)) {
                    conn_close(c);
                    return;
                }
                wait_for_tls(c);
                return;
            }
            if (n == 0) {
                /* The client said close_notify between requests: answer with ours (RFC 8446
                 * 6.1, RFC 5246 7.2.1), so that it sees a clean end, not a truncation, unless
                 * its FIN came too (client_closed). */
                if (client_closed(c)) {
                    conn_close(c);
                    return;
                }
                c->state = C_SHUTDOWN;
                break;
            }
            if (n < 0) {
                conn_linger(c); /* a bad record (alert sent), truncation, a reset */
                return;
            }
            if (c->in_len == 0) {
                c->deadline = now_ms() + cfg.header_timeout_ms;
            }
            c->in_len += (size_t)n;
            break;
        }

        case C_DISCARD: {
            size_t have = c->in_len < (unsigned long long)c->discard ? c->in_len
                                                                     : (size_t)c->discard;
            if (have) {
                memmove(c->in, c->in + have, c->in_len - have);
                c->in_len -= have;
                c->discard -= (long long)have;
            }
            if (c->discard == 0) {
                c->state = C_READ;
                break;
            }
            if (!in_reserve(c)) {
                conn_linger(c);
                return;
            }
            n = tlsk_socket_read(c->s, c->in, c->in_cap);
            if (n == -EAGAIN) {
                wait_for_tls(c);
                return;
            }
            if (n == 0) {
                conn_close(c);
                return;
            }
            if (n < 0) {
                conn_linger(c);
                return;
            }
            c->in_len = (size_t)n;
            break;
        }

        case C_WRITE:
            if (c->out_off < c->out_len) {
                n = tlsk_socket_write(c->s, c->out + c->out_off, c->out_len - c->out_off);
                if (n == -EAGAIN) {
                    wait_for_tls(c);
                    return;
                }
                if (n < 0) {
                    c->status = c->status ? c->status : 499;
                    log_request(c);
                    conn_linger(c);
                    return;
                }
                c->out_off += (size_t)n;
                c->deadline = now_ms() + cfg.send_timeout_ms;
                break;
            }
            if (c->file_fd >= 0) {
                c->state = C_BODY;
                break;
            }
            response_done(c);
            break;

        case C_BODY: {
            size_t want = (size_t)(c->file_end - c->file_off);
            if (want == 0) {
                close(c->file_fd);
                c->file_fd = -1;
                c->state = C_WRITE; /* out_off == out_len: finishes the response */
                break;
            }
            if (--budget < 0) {
                arm(c, EPOLLOUT);
                return;
            }
            n = tlsk_socket_sendfile(c->s, c->file_fd, &c->file_off,
                                     want < (1u << 30) ? want : (1u << 30));
            if (n == -EAGAIN) {
                wait_for_tls(c);
                return;
            }
            if (n <= 0) {
                /* 0: the file shrank under us; the promised length cannot be kept. */
                c->keep = false;
                log_request(c);
                conn_linger(c);
                return;
            }
            c->body_bytes += n;
            c->deadline = now_ms() + cfg.send_timeout_ms;
            break;
        }

        case C_SHUTDOWN:
            n = tlsk_socket_shutdown(c->s);
            if (n == -EAGAIN) {
                wait_for_tls(c);
                return;
            }
            if (n == -EPIPE || n == -ECONNRESET) {
                conn_close(c); /* the client is gone: nothing to linger for */
                return;
            }
            if (n < 0) {
                conn_linger(c);
                return;
            }
            if (shutdown(c->fd, SHUT_WR) != 0) {
                conn_close(c); /* ENOTCONN: the client has reset; nothing to linger for */
                return;
            }
            c->state = C_LINGER;
            c->drained = 0;
            c->deadline = now_ms() + 2000;
            break;

        case C_LINGER: {
            char sink[4096];
            n = tlsk_socket_read(c->s, sink, sizeof sink);
            if (n == -EAGAIN) {
                arm(c, EPOLLIN);
                return;
            }
            if (n <= 0) {
                /* The client's close_notify (or a bad record) is in: what it sent after that
                 * is ignored (RFC 8446 6.1), but read and dropped below TLS until its FIN,
                 * for closing with it unread would reset the connection. */
                conn_linger(c);
                return;
            }
            if ((c->drained += (size_t)n) >= CLI_LINGER_BYTES) {
                conn_close(c);
                return;
            }
            break;
        }

        case C_DRAIN: {
            /* Plain reads now (tlsk is gone); a control-message buffer makes a kTLS socket
             * hand over control records instead of failing with EIO. */
            char sink[16384];
            union {
                char b[CMSG_SPACE(sizeof(unsigned char))];
                struct cmsghdr align;
            } cbuf;
            struct iovec iov = { .iov_base = sink, .iov_len = sizeof sink };
            struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
                                .msg_controllen = sizeof cbuf.b };
            if (c->drain_blind) {
                return;
            }
            n = recvmsg(c->fd, &m, MSG_DONTWAIT);
            if (n > 0) {
                if ((c->drained += (size_t)n) >= CLI_LINGER_BYTES) {
                    conn_close(c);
                    return;
                }
                break;
            }
            if (n == 0) {
                conn_close(c); /* the client's FIN: it has read what we sent */
                return;
            }
            if (errno == EINTR) {
                break;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                arm(c, EPOLLIN | EPOLLRDHUP);
                return;
            }
            /* Nothing more can be read (a record the kernel refused stays queued, and
             * closing now would reset): wait for the client's FIN, within the deadline. */
            c->drain_blind = true;
            arm(c, EPOLLRDHUP | EPOLLET);
            return;
        }

        case C_CLOSED:
            return;
        }
    }
}

/* A lingering close after a fatal error (cli_linger_close, on the loop): tlsk is freed
 * (whatever it had to say, an alert, is sent), then FIN, then what the client still sends
 * is read and dropped until its FIN, CLI_LINGER_MS or CLI_LINGER_BYTES.  Closing at once
 * with unread bytes queued would reset the connection and could destroy the alert. */
static void conn_linger(struct conn *c)
{
    struct worker *w = c->w;
    int fd;

    if (c->state == C_CLOSED || c->state == C_DRAIN) {
        return;
    }
    fd = dup(c->fd);
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    store_unwait(c);
    tlsk_socket_free(c->s); /* closes its fd; the duplicate keeps the connection */
    c->s = NULL;
    c->fd = fd;
    c->state = C_DRAIN;
    c->drained = 0;
    c->drain_blind = false;
    c->deadline = now_ms() + CLI_LINGER_MS;
    c->armed = EPOLLIN | EPOLLRDHUP;
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0 ||
        epoll_ctl(w->ep, EPOLL_CTL_ADD, fd,
                  &(struct epoll_event){ .events = c->armed, .data.ptr = c }) != 0) {
        conn_close(c);
        return;
    }
    conn_run(c);
}

static void conn_close(struct conn *c)
{
    struct worker *w = c->w;

    if (c->state == C_CLOSED) {
        return;
    }
    c->state = C_CLOSED;
    if (c->file_fd >= 0) {
        close(c->file_fd);
    }
    /* No EPOLL_CTL_DEL: closing the only descriptor of the socket takes it out of the epoll
     * set (epoll(7)), and no other is left by now (conn_linger closed the original). */
    if (c->s) {
        store_unwait(c);
        tlsk_socket_free(c->s); /* owns and closes the fd (a pending lookup is cancelled) */
    } else if (c->fd >= 0) {
        close(c->fd); /* C_DRAIN's duplicate */
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    live_put(c->live);
    free(c->in);
    free(c->out);
    free(c);
    w->nconns--;
    atomic_fetch_sub(&g_conns, 1);
}

/* Deadlines: a head that does not arrive in time gets 408; idle and stalled ones are cut. */
static void sweep(struct worker *w, long long now, bool stop)
{
    struct conn *next;

    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        if (stop && (c->state == C_HANDSHAKE || (c->state == C_READ && c->in_len == 0))) {
            /* Nothing in flight: an idle keep-alive connection is told goodbye. */
            if (c->state == C_READ) {
                c->state = C_SHUTDOWN;
                c->deadline = now + 2000;
                conn_run(c);
            } else {
                conn_close(c);
            }
            continue;
        }
        if (now < c->deadline) {
            continue;
        }
        if (c->state == C_READ && c->in_len > 0) {
            snprintf(c->reqline, sizeof c->reqline, "(incomplete head, %zu bytes)", c->in_len);
            c->head_len = c->in_len;
            c->keep = false;
            c->file_fd = -1;
            respond_text(c, 408, false, NULL);
            c->deadline = now + 2000;
            conn_run(c);
        } else if (c->state == C_READ) {
            c->state = C_SHUTDOWN; /* idle keep-alive connection: close_notify, then close */
            c->deadline = now + 2000;
            conn_run(c);
        } else {
            if (c->state == C_WRITE || c->state == C_BODY) {
                c->status = c->status ? c->status : 408;
                snprintf(c->reqline + strlen(c->reqline),
                         sizeof c->reqline - strlen(c->reqline), " (client stalled)");
                log_request(c);
            }
            conn_close(c);
        }
    }
}

static void set_listening(struct worker *w, bool on)
{
    /* A socket-activated socket is one for all workers: wake one of them per connection. */
    struct epoll_event e = { .events = EPOLLIN | (g_activated ? EPOLLEXCLUSIVE : 0),
                             .data.u64 = TAG_LISTEN };
    if (w->lfd < 0 || w->listening == on) {
        return;
    }
    if (epoll_ctl(w->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->lfd, &e) == 0) {
        w->listening = on;
    }
}

static void accept_some(struct worker *w)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        struct conn *c;
        char host[NI_MAXHOST], port[NI_MAXSERV];
        int fd, rc;

        if (atomic_load(&g_conns) >= cfg.max_conns) {
            set_listening(w, false); /* resumed by the sweep when connections close */
            return;
        }
        fd = accept4(w->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                set_listening(w, false);
            }
            return;
        }
        c = calloc(1, sizeof *c); /* TCP_NODELAY comes from the listener (nodelay()) */
        if (!c) {
            close(fd);
            continue;
        }
        c->live = live_get();
        rc = tlsk_socket_new_server(&c->s, c->live->hosts[0].ctx, fd,
                                    &(struct tlsk_socket_options){
                                        .flags = TLSK_SOCKET_OWN_FD | TLSK_SOCKET_LEAN_IDLE |
                                                 (cfg.mmap ? TLSK_SOCKET_SENDFILE_MMAP : 0),
                                        .sni = c->live->sni,
                                    });
        if (rc != 0) {
            live_put(c->live);
            free(c->in);
            free(c);
            close(fd);
            continue;
        }
        tlsk_socket_set_data(c->s, c); /* the session store's answer wakes c */
        c->w = w;
        c->fd = fd;
        c->file_fd = -1;
        c->state = C_HANDSHAKE;
        c->deadline = now_ms() + cfg.header_timeout_ms;
        if (getnameinfo((struct sockaddr *)&sa, sl, host, sizeof host, port, sizeof port,
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            if ((size_t)snprintf(c->remote, sizeof c->remote, "%s:%s", host, port) >=
                sizeof c->remote) {
                c->remote[sizeof c->remote - 1] = '\0';
            }
        } else {
            snprintf(c->remote, sizeof c->remote, "?");
        }
        snprintf(c->offload, sizeof c->offload, "-");
        c->armed = EPOLLIN;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN,
                                                                       .data.ptr = c }) != 0) {
            tlsk_socket_free(c->s);
            live_put(c->live);
            free(c->in);
            free(c);
            continue;
        }
        c->next = w->conns;
        if (w->conns) {
            w->conns->prev = c;
        }
        w->conns = c;
        w->nconns++;
        atomic_fetch_add(&g_conns, 1);
        conn_run(c);
    }
}

/* TCP_NODELAY on the listening socket: Linux copies it to every socket accept(2) returns
 * (the accepted socket is cloned from the listener's), which saves a setsockopt(2) per
 * connection.  A unix socket from the service manager refuses it, and needs none. */
static void nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int listen_socket(void)
{
    int one = 1, fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    nodelay(fd);
    if (bind(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Run the worker's store loop (Redis replies, lookup deadlines, reconnects), then every
 * handshake that was waiting for it: an answered one goes on, the others wait again.  One
 * line in the log when Redis comes or goes, and at most one a second for slow lookups. */
static void store_run(struct worker *w, long long now)
{
    const struct tlsk_redis_stats *st;
    bool up;

    tlsk_loop_run(w->sloop, 0);
    st = tlsk_redis_stats(w->redis);
    up = tlsk_redis_up(w->redis);
    if (up != w->store_up || (!up && !w->store_told && now - w->store_since > 1000)) {
        logline(PROG ": session store: redis %s %s", cfg.session_store,
                up              ? "connected"
                : w->store_up   ? "lost; full handshakes until it is back"
                                : "unreachable; full handshakes until it is back");
        w->store_up = up;
        w->store_told = true;
    }
    if (st->timeouts != w->store_timeouts) {
        if (now - w->store_slow_log >= 1000) {
            logline(PROG ": session store: redis did not answer a lookup within %d ms; full "
                    "handshake (logged at most once a second)", cfg.store_timeout_ms);
            w->store_slow_log = now;
        }
        w->store_timeouts = st->timeouts;
    }
    /* Each handshake that waited before this pass, oldest first; one that waits again
     * goes to the tail with this pass's number, which ends the walk. */
    w->store_round++;
    for (struct conn *c; (c = w->swait_head) && c->store_round != w->store_round;) {
        store_unwait(c);
        conn_run(c);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    long long stop_deadline = 0, next_sweep = now_ms() + 250;
    struct epoll_event ev[128];
    int wait_ms = 250;
    bool store_ready = false;

    if (cfg.session_store) {
        struct tlsk_redis_options ro = { .prefix = "tlsk-serve:session:",
                                         .timeout_ms = cfg.store_timeout_ms,
                                         .ttl_s = SESSION_TIMEOUT_S };
        char where[256];
        tlsk_redis_parse_url(cfg.session_store, &ro, where, sizeof where); /* checked in main */
        if (tlsk_loop_new(&w->sloop) != 0 || tlsk_redis_new(&w->redis, w->sloop, &ro) != 0 ||
            epoll_ctl(w->ep, EPOLL_CTL_ADD, tlsk_loop_backend_fd(w->sloop),
                      &(struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_STORE }) != 0) {
            logline(PROG ": worker %d: cannot set up the session store", w->id);
            tlsk_redis_free(w->redis);
            w->redis = NULL;
        }
        t_redis = w->redis; /* the store callbacks run in this thread */
        w->store_since = now_ms();
    }

    for (;;) {
        bool stop = atomic_load(&g_stopping);
        long long now;
        int n;

        if (stop && w->lfd >= 0) {
            set_listening(w, false);
            close(w->lfd);
            w->lfd = -1;
            epoll_ctl(w->ep, EPOLL_CTL_DEL, g_stop_efd, NULL);
            stop_deadline = now_ms() + cfg.grace_ms;
            sweep(w, now_ms(), true);
        }
        if (stop && w->nconns == 0) {
            break;
        }
        n = epoll_wait(w->ep, ev, 128, wait_ms);
        store_ready = false;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == TAG_LISTEN) {
                accept_some(w);
            } else if (ev[i].data.u64 == TAG_STORE) {
                store_ready = true; /* run below, after the connections */
            } else if (ev[i].data.u64 == TAG_STOP) {
                /* handled at the top of the loop */
            } else {
                struct conn *c = ev[i].data.ptr;
                if (c->state == C_DRAIN && c->drain_blind) {
                    if (ev[i].events & (EPOLLRDHUP | EPOLLHUP)) {
                        conn_close(c); /* the client's FIN after the error */
                    }
                } else {
                    conn_run(c);
                }
            }
        }
        now = now_ms();
        wait_ms = 250;
        /* Only when Redis spoke or a store timer is due: not one more syscall per wake-up. */
        if (w->redis && (store_ready || tlsk_loop_backend_timeout(w->sloop) == 0)) {
            store_run(w, now);
        }
        if (w->redis) {
            int t = tlsk_loop_backend_timeout(w->sloop); /* lookup deadlines, reconnects */
            wait_ms = t >= 0 && t < wait_ms ? t : wait_ms;
        }
        if (now >= next_sweep) {
            next_sweep = now + 250;
            sweep(w, now, stop);
            if (!stop && !w->listening && atomic_load(&g_conns) < cfg.max_conns) {
                set_listening(w, true);
            }
        }
        if (stop && now >= stop_deadline) {
            while (w->conns) {
                conn_close(w->conns);
            }
        }
    }
    tlsk_redis_free(w->redis);
    if (w->sloop) {
        tlsk_loop_run(w->sloop, 0); /* releases what the store closed */
        tlsk_loop_free(w->sloop);
    }
    if (!cfg.quiet && cfg.file_cache > 0) {
        struct fcache_stats fs = fcache_stats(w->files);
        logline(PROG ": worker %d: file cache: %llu hits, %llu opened, %llu found changed", w->id,
                fs.hits, fs.misses, fs.stale);
    }
    close(w->ep);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Setup                                                                                    */

static void usage(FILE *f)
{
    fputs(
        "NAME\n"
        "    tlsk-serve - serve folders over HTTPS, with the record layer in the kernel (kTLS)\n"
        "\n"
        "SYNOPSIS\n"
        "    tlsk-serve --cert CERT --key KEY [--root DIR] [--listen HOST:PORT] [OPTIONS]\n"
        "    tlsk-serve --vhost NAME:CERT:KEY:ROOT [--vhost ...] [OPTIONS]\n"
        "\n"
        "DESCRIPTION\n"
        "    An HTTP/1.1 static file server: GET and HEAD, keep-alive and pipelining, single\n"
        "    byte ranges (206/416), Last-Modified/If-Modified-Since, ETag/If-None-Match/\n"
        "    If-Range, index.html, Content-Type by extension and, with --list, directory\n"
        "    listings.  Paths never leave the root: \"..\" (also percent-encoded) above the\n"
        "    root is refused, and files are opened with openat2(RESOLVE_BENEATH), so symbolic\n"
        "    links that point outside the root are refused too; a listing shows such a link\n"
        "    without its target's size or time.  The redirect that adds a folder's slash is\n"
        "    built from the normalised path, so its Location never names another host.\n"
        "    After a fatal TLS error the connection is closed lingering (FIN, then at most\n"
        "    1 s / 256 KiB of the client's bytes dropped), so the client reads the alert\n"
        "    instead of a reset; the access log writes unprintable request bytes as \\xNN.\n"
        "\n"
        "    TLS handshakes run in OpenSSL through tlsk; the record layer then moves into the\n"
        "    kernel where it can (kTLS), and file bodies go out with tlsk_socket_sendfile(),\n"
        "    which is sendfile(2) through the kernel when transmit is offloaded and OpenSSL in\n"
        "    userspace otherwise.  The head of a response is corked together with its body.\n"
        "    ALPN offers http/1.1.  The first line printed says whether kTLS is in use and, if\n"
        "    not, why.\n"
        "\n"
        "    One worker thread per core, each with its own SO_REUSEPORT listening socket and\n"
        "    epoll loop.  SIGTERM or SIGINT stops accepting, lets responses in flight finish\n"
        "    (at most --grace seconds), closes idle connections with close_notify and exits 0.\n"
        "\n"
        "    SIGHUP reloads without dropping anyone: every certificate, key and --client-ca\n"
        "    file and the --ticket-key-file are read again (and the roots reopened); if all of\n"
        "    them load, new connections use them while connections in flight finish on the\n"
        "    old ones, and the log says \"SIGHUP: reloaded\".  If any file is bad (missing,\n"
        "    garbage, a key that does not match its certificate) nothing changes and one line\n"
        "    \"SIGHUP: reload failed, keeping the old configuration: ...\" names the file and\n"
        "    the reason.  Without --ticket-key-file each host keeps its ticket key across\n"
        "    reloads, so tickets issued before a reload still resume.\n"
        "\n"
        "    Under systemd (systemd/tlsk-serve.service and .socket): a listening socket passed\n"
        "    by socket activation (LISTEN_FDS) replaces --listen and is shared by the workers;\n"
        "    with NOTIFY_SOCKET it reports READY=1 once serving, RELOADING=1 during a SIGHUP\n"
        "    reload and STOPPING=1 on SIGTERM.  A passed descriptor that is not one listening\n"
        "    TCP socket is refused (exit 1).\n"
        "\n"
        "OPTIONS\n"
        "    --cert FILE, --key FILE\n"
        "        PEM certificate chain and private key of the default host (the one for\n"
        "        clients that send no server name, or one no --vhost matches).\n"
        "    --root DIR\n"
        "        Folder of the default host (default: the current folder).\n"
        "    --vhost NAME:CERT:KEY:ROOT\n"
        "        A virtual host chosen by the TLS server name (SNI).  NAME is a host name or\n"
        "        *.domain (one label).  Repeatable.  Without --cert, the first --vhost is also\n"
        "        the default host.  A request whose Host differs from the SNI name gets 421.\n"
        "    --listen HOST:PORT\n"
        "        Address to listen on (default 127.0.0.1:8443; port 0 picks a free one, and\n"
        "        the startup line names it).\n"
        "    --client-ca FILE\n"
        "        Ask clients for a certificate and verify it against these CAs; the access log\n"
        "        then shows client-cert=verified or the reason it did not verify.\n"
        "    --ticket-key-file FILE\n"
        "        Session ticket keys shared by a fleet, so a ticket issued by any member\n"
        "        resumes on every member (TLS 1.2 tickets and TLS 1.3 stateless tickets).  A\n"
        "        binary file of 1 to 64 keys of 48 bytes each (16 key name, 16 HMAC-SHA256\n"
        "        key, 16 AES-128 key), back to back: the first key encrypts new tickets, all\n"
        "        of them decrypt, and a ticket under any but the first is renewed under the\n"
        "        first.  Make one with: head -c 48 /dev/urandom > FILE.  Re-read on SIGHUP and\n"
        "        within about a second of changing (replace it with rename(2) so it is never\n"
        "        read half-written); an empty file, or one whose size is not a multiple of 48,\n"
        "        is refused with a log line and the current keys stay.  Rotation, on every\n"
        "        member, waiting for all members to pick up each step: 1. append the next key;\n"
        "        2. move it to the front (it now encrypts; the old one still decrypts);\n"
        "        3. after the ticket lifetime (300 s), drop the oldest key.  Without this\n"
        "        option the keys are random per process.\n"
        "    --session-store redis://HOST[:PORT] | unix:/PATH\n"
        "        Keep TLS sessions (TLS 1.2 session ids; TLS 1.3 stateful tickets) in Redis,\n"
        "        shared by every member of a fleet that uses the same store, instead of each\n"
        "        process's own cache.  Keys tlsk-serve:session:HEX(ID), values the session,\n"
        "        expiring with it (300 s).  The store never stalls a handshake: a lookup not\n"
        "        answered in --session-store-timeout is a full handshake; while Redis is\n"
        "        down, lookups are full handshakes at once, sessions are not kept, the log\n"
        "        says so once, and the connection is retried (100 ms doubling to 5 s).\n"
        "    --session-store-timeout MS\n"
        "        How long a handshake waits for the store (default 50).\n"
        "    --require-client-cert\n"
        "        With --client-ca: refuse the handshake without a certificate that verifies.\n"
        "    --offload auto|tx|off|require\n"
        "        kTLS policy (default auto: TLS 1.2 both directions, TLS 1.3 transmit, and\n"
        "        receive where the kernel can re-key).\n"
        "    --tls-min 1.2|1.3, --ciphersuites LIST, --ciphers LIST\n"
        "        Protocol floor, TLS 1.3 suites and TLS 1.2 ciphers (OpenSSL syntax).\n"
        "    --workers N\n"
        "        Worker threads (default: the number of CPUs this process may run on).\n"
        "    --max-connections N\n"
        "        Open connections across all workers before accepting pauses (default 10000,\n"
        "        lowered to fit the descriptor limit).\n"
        "    --file-cache N\n"
        "        Descriptors of files up to 32 KiB each worker keeps open (default 256; 0:\n"
        "        none).  Each use is checked with one fstatat against the file system, so a\n"
        "        changed, replaced or removed file is served as if nothing were cached.\n"
        "    --max-header BYTES\n"
        "        Largest request head (default 16384): larger gets 431 (414 when the request\n"
        "        line alone is longer than 8192 bytes) and the connection closes.\n"
        "    --header-timeout SECS\n"
        "        Time for the handshake plus a complete request head (default 10); a partial\n"
        "        head that does not complete in time gets 408 and the connection closes.\n"
        "    --idle-timeout SECS\n"
        "        Keep-alive time between requests (default 60); also the time a client may\n"
        "        stall a response before the connection is cut.\n"
        "    --grace SECS\n"
        "        On SIGTERM, how long responses in flight may take (default 30).\n"
        "    --mmap\n"
        "        Without kTLS, encrypt bodies straight from a mapping of the file\n"
        "        (TLSK_SOCKET_SENDFILE_MMAP: one copy fewer than reading it into a buffer).\n"
        "        Only for roots whose files are never truncated while being served: a page\n"
        "        past a new end of file kills the server with SIGBUS.  No effect with kTLS.\n"
        "    --no-lean\n"
        "        Where the kernel cannot take a connection, keep OpenSSL's state for it\n"
        "        instead of freeing it after the handshake and letting tlsk's own record\n"
        "        layer carry the rest (TLSK_LEAN_USERSPACE: about a third of the memory per\n"
        "        idle connection, for a key log callback and no read-ahead in handshakes).\n"
        "    --list\n"
        "        List folders that have no index.html (default: 403).\n"
        "    --quiet\n"
        "        No access log.\n"
        "    --log-handshake-errors\n"
        "        Log failed handshakes (noisy with port scanners).\n"
        "    -h, --help\n"
        "        This text.\n"
        "\n"
        "ACCESS LOG\n"
        "    One line per response on stderr:\n"
        "        REMOTE \"REQUEST LINE\" STATUS BODY-BYTES host=NAME VERSION tx=MODE rx=MODE\n"
        "    where MODE is kernel, or userspace/REASON (no_ulp, cipher, no_rekey, policy...).\n"
        "\n"
        "EXIT STATUS\n"
        "    0 after a graceful stop, 1 on a setup failure, 2 on a usage error.\n"
        "\n"
        "EXAMPLE\n"
        "    tlsk-serve --cert cert.pem --key key.pem --root /srv/www --listen 0.0.0.0:443 \\\n"
        "        --vhost 'a.example.com:a.pem:a-key.pem:/srv/a' --list\n",
        f);
}

static int parse_seconds(const char *v, int *ms)
{
    char *e;
    double d = strtod(v, &e);
    if (*e || d <= 0 || d > 86400) {
        return -1;
    }
    *ms = (int)(d * 1000);
    return 0;
}

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *e;
    long x;
    errno = 0;
    x = strtol(v, &e, 10);
    if (*e || errno || x < lo || x > hi) {
        return -1;
    }
    *out = x;
    return 0;
}

/* Build one host's context and open its root; on failure why says which host, which file and
 * what is wrong with it (tlsk's detail names the file). */
static int build_host(struct vhost *h, char *why, size_t whylen)
{
    static const char *const alpn[] = { "http/1.1", NULL };
    struct tlsk_context_options o = {
        .cert_file = h->cert,
        .key_file = h->key,
        .offload = cfg.offload,
        .min_version = cfg.min_version,
        .ciphersuites = cfg.ciphersuites,
        .ciphers = cfg.ciphers,
        .alpn = alpn,
        /* Not the library's default (this program's command line): members of a fleet
         * differ in theirs (addresses, worker counts, paths), and a ticket or session made
         * by one must resume on another.  The library still binds sessions to the
         * client-certificate policy and CA set (docs/OPENSSL.md §9). */
        .session_id_context = "tlsk-serve",
        .session_store = cfg.session_store ? &g_store : NULL,
        .session_timeout = SESSION_TIMEOUT_S,
    };
    const char *what = h->name ? h->name : "--cert/--key";
    char err[512] = "";
    int rc;

    h->root_fd = -1;
    h->ctx = NULL;
    if (!cfg.no_lean) {
        o.flags |= TLSK_LEAN_USERSPACE;
    }
    if (cfg.client_ca) {
        o.ca_file = cfg.client_ca;
        o.flags |= cfg.require_client_cert ? TLSK_REQUIRE_PEER_CERT : TLSK_REQUEST_PEER_CERT;
    }
    if (!realpath(h->root, h->root_real)) {
        snprintf(why, whylen, "%s: root %s: %s", what, h->root, strerror(errno));
        return -1;
    }
    h->root_fd = open(h->root_real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (h->root_fd < 0) {
        snprintf(why, whylen, "%s: root %.600s: %s", what, h->root_real, strerror(errno));
        return -1;
    }
    rc = tlsk_context_new(&h->ctx, &o, err, sizeof err);
    if (rc != 0) {
        char esc[600];
        snprintf(why, whylen, "%s (cert %s, key %s%s%s): %s (%s)", what, h->cert, h->key,
                 cfg.client_ca ? ", client CAs " : "", cfg.client_ca ? cfg.client_ca : "",
                 cli_escape(err, esc, sizeof esc), tlsk_err_name(rc));
        h->ctx = NULL;
        return -1;
    }
    return 0;
}

/* Read --ticket-key-file: one or more 48-byte keys (16 name, 16 HMAC, 16 AES) back to back,
 * the first encrypting.  Anything else (missing, empty, not a multiple of 48, too many keys)
 * is refused with the reason in why.  st receives the identity of what was read. */
static unsigned char *read_ticket_keys(const char *path, size_t *n, struct stat *st, char *why,
                                       size_t whylen)
{
    unsigned char *buf = NULL;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(why, whylen, "ticket key file %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        snprintf(why, whylen, "ticket key file %s: not a regular file", path);
        goto fail;
    }
    if (st->st_size == 0 || st->st_size % 48 != 0 ||
        st->st_size > (off_t)48 * TLSK_TICKET_KEYS_MAX) {
        snprintf(why, whylen,
                 "ticket key file %s: %lld bytes; wants 1 to %d keys of 48 bytes (16 name, "
                 "16 HMAC, 16 AES)",
                 path, (long long)st->st_size, TLSK_TICKET_KEYS_MAX);
        goto fail;
    }
    buf = malloc((size_t)st->st_size);
    if (!buf) {
        snprintf(why, whylen, "ticket key file %s: out of memory", path);
        goto fail;
    }
    while (got < (size_t)st->st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st->st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            snprintf(why, whylen, "ticket key file %s: %s", path,
                     r < 0 ? strerror(errno) : "shorter than its size (being rewritten?)");
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    *n = got / 48;
    return buf;
fail:
    if (buf) {
        explicit_bzero(buf, (size_t)st->st_size);
        free(buf);
    }
    close(fd);
    return NULL;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void set_keys(struct live *l, const unsigned char *keys, size_t n)
{
    for (int i = 0; i < l->nhosts; i++) {
        (void)tlsk_context_set_ticket_key_list(l->hosts[i].ctx, keys, n);
    }
}

/* Build a new generation from the files.  Ticket keys: the file's (keys, n) when given,
 * otherwise each host keeps the key of the same host in prev (so a reload does not cost
 * clients their resumption), or a random one at startup. */
static struct live *live_build(const struct live *prev, const unsigned char *keys, size_t n,
                               char *why, size_t whylen)
{
    struct live *l = calloc(1, sizeof *l);
    int rc = 0;

    if (!l) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    atomic_init(&l->refs, 1);
    l->gen = ++g_gen;
    for (int i = 0; i < cfg.nhosts; i++) {
        l->hosts[i] = cfg.hosts[i];
        l->nhosts = i + 1;
        if (build_host(&l->hosts[i], why, whylen) != 0) {
            goto fail;
        }
        if (!keys && prev && i < prev->nhosts) {
            unsigned char k[48];
            if (tlsk_context_get_ticket_keys(prev->hosts[i].ctx, k) == 0) {
                (void)tlsk_context_set_ticket_key_list(l->hosts[i].ctx, k, 1);
            }
            explicit_bzero(k, sizeof k);
        }
    }
    if (keys) {
        set_keys(l, keys, n);
    }
    if (cfg.nhosts > 1 || cfg.hosts[0].name) {
        rc = tlsk_sni_new(&l->sni);
        for (int i = 0; rc == 0 && i < l->nhosts; i++) {
            if (l->hosts[i].name) {
                rc = tlsk_sni_add(l->sni, l->hosts[i].name, l->hosts[i].ctx);
                if (rc != 0) {
                    snprintf(why, whylen, "--vhost %s: %s", l->hosts[i].name, tlsk_strerror(rc));
                    goto fail;
                }
            }
        }
        if (rc != 0) {
            snprintf(why, whylen, "SNI table: %s", tlsk_strerror(rc));
            goto fail;
        }
    }
    return l;
fail:
    live_put(l);
    return NULL;
}

/* SIGHUP: re-read every certificate, key, client CA file and the ticket key file, and swap
 * the new generation in only if all of it loaded; otherwise the old one stays, and one line
 * says which file and why. */
static void reload(void)
{
    unsigned char *keys = NULL;
    size_t n = 0;
    struct stat st;
    struct live *l, *old;
    char why[1024], tks[PATH_MAX + 64] = "";

    if (cfg.ticket_key_file) {
        keys = read_ticket_keys(cfg.ticket_key_file, &n, &st, why, sizeof why);
        if (!keys) {
            logline(PROG ": SIGHUP: reload failed, keeping the old configuration: %s", why);
            return;
        }
    }
    l = live_build(g_live, keys, n, why, sizeof why);
    if (!l) {
        logline(PROG ": SIGHUP: reload failed, keeping the old configuration: %s", why);
    } else {
        pthread_mutex_lock(&g_live_lock);
        old = g_live;
        g_live = l;
        pthread_mutex_unlock(&g_live_lock);
        live_put(old); /* freed when its last connection closes */
        if (keys) {
            explicit_bzero(g_tk.keys, g_tk.n * 48);
            free(g_tk.keys);
            g_tk.keys = keys;
            g_tk.n = n;
            g_tk.seen = st;
            g_tk.have_seen = true;
            keys = NULL;
        }
        if (cfg.ticket_key_file) {
            snprintf(tks, sizeof tks, "; %zu ticket key%s from %s", g_tk.n,
                     g_tk.n == 1 ? "" : "s", cfg.ticket_key_file);
        }
        logline(PROG ": SIGHUP: reloaded %d host%s (certificates, keys%s)%s", l->nhosts,
                l->nhosts == 1 ? "" : "s", cfg.client_ca ? ", client CAs" : "", tks);
    }
    if (keys) {
        explicit_bzero(keys, n * 48);
        free(keys);
    }
}

/* Called about once a second: a --ticket-key-file that changed (rewritten in place or
 * renamed over) is re-read and its keys go into the current generation's contexts.  A
 * refused version is remembered so it is reported once, not every second. */
static void ticket_keys_poll(void)
{
    unsigned char *keys;
    size_t n = 0;
    struct stat st;
    char why[512];

    if (!cfg.ticket_key_file) {
        return;
    }
    if (stat(cfg.ticket_key_file, &st) != 0) {
        if (g_tk.have_seen && g_tk.seen.st_ino != 0) {
            logline(PROG ": ticket key file %s: %s; keeping the %zu current key%s",
                    cfg.ticket_key_file, strerror(errno), g_tk.n, g_tk.n == 1 ? "" : "s");
            memset(&g_tk.seen, 0, sizeof g_tk.seen);
        }
        return;
    }
    if (g_tk.have_seen && same_file(&st, &g_tk.seen)) {
        return;
    }
    keys = read_ticket_keys(cfg.ticket_key_file, &n, &st, why, sizeof why);
    g_tk.seen = st;
    g_tk.have_seen = true;
    if (!keys) {
        logline(PROG ": %s; keeping the %zu current key%s", why, g_tk.n, g_tk.n == 1 ? "" : "s");
        return;
    }
    pthread_mutex_lock(&g_live_lock);
    set_keys(g_live, keys, n); /* only the main thread swaps g_live: no reference needed */
    pthread_mutex_unlock(&g_live_lock);
    explicit_bzero(g_tk.keys, g_tk.n * 48);
    free(g_tk.keys);
    g_tk.keys = keys;
    g_tk.n = n;
    logline(PROG ": ticket keys reloaded from %s: %zu key%s", cfg.ticket_key_file, n,
            n == 1 ? "" : "s");
}

static int resolve_listen(void)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    char host[256], *colon, why[256];
    int fd;

    /* Socket activation: one socket from the service manager, shared by every worker. */
    fd = svc_listen_fd(why, sizeof why);
    if (fd >= 0) {
        g_activated = true;
        nodelay(fd);
        g_addrlen = sizeof g_addr;
        getsockname(fd, (struct sockaddr *)&g_addr, &g_addrlen);
        return fd;
    }
    if (fd != -ENOENT) {
        fprintf(stderr, PROG ": %s\n", why);
        return -1;
    }

    snprintf(host, sizeof host, "%s", cfg.listen);
    colon = strrchr(host, ':');
    if (!colon) {
        fprintf(stderr, PROG ": --listen wants HOST:PORT\n");
        return -1;
    }
    *colon = '\0';
    {
        char *h = host;
        if (h[0] == '[' && colon > h && colon[-1] == ']') {
            colon[-1] = '\0';
            h++;
        }
        if (getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &ai) != 0) {
            fprintf(stderr, PROG ": cannot resolve %s\n", cfg.listen);
            return -1;
        }
    }
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    fd = listen_socket();
    if (fd < 0) {
        fprintf(stderr, PROG ": %s: %s\n", cfg.listen, strerror(-fd));
        return -1;
    }
    /* Port 0: every later worker binds the port the kernel picked for this first one. */
    getsockname(fd, (struct sockaddr *)&g_addr, &g_addrlen);
    return fd;
}

static int default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        return CPU_COUNT(&set);
    }
    return (int)(sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1);
}

static void print_startup(void)
{
    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    char addr[NI_MAXHOST], port[NI_MAXSERV];

    getnameinfo((struct sockaddr *)&g_addr, g_addrlen, addr, sizeof addr, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
    printf(PROG ": listening on https://%s%s%s:%s/%s with %d worker%s, serving %s",
           g_addr.ss_family == AF_INET6 ? "[" : "", addr, g_addr.ss_family == AF_INET6 ? "]" : "",
           port, g_activated ? " (socket from the service manager)" : "", cfg.workers,
           cfg.workers == 1 ? "" : "s", g_live->hosts[0].root_real);
    for (int i = 1; i < g_live->nhosts; i++) {
        printf(", %s -> %s", g_live->hosts[i].name, g_live->hosts[i].root_real);
    }
    if (cfg.ticket_key_file) {
        printf("\n" PROG ": ticket keys from %s: %zu key%s", cfg.ticket_key_file, g_tk.n,
               g_tk.n == 1 ? "" : "s");
    }
    printf("\n");
    if (cfg.offload == TLSK_OFFLOAD_OFF) {
        printf(PROG ": kTLS not in use: --offload off (kernel %s %s kTLS)\n", k->release,
               k->ulp ? "has" : "lacks");
    } else if (k->ulp) {
        printf(PROG ": kTLS in use (kernel %s): TLS 1.2 in the kernel both ways, TLS 1.3 "
               "transmit%s; file bodies go out with sendfile(2) through the kernel\n",
               k->release,
               k->rekey ? " and receive" : " (receive stays in userspace: the kernel cannot "
                                           "follow a KeyUpdate)");
    } else {
        printf(PROG ": kTLS NOT in use (kernel %s): TCP_ULP \"tls\" failed (%s), so OpenSSL "
               "encrypts in userspace; try: modprobe tls\n",
               k->release, strerror(-k->ulp_err));
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct worker *workers;
    const char *cert = NULL, *key = NULL, *root = ".";
    long v;
    int first_fd, sig, vhosts = 0;
    sigset_t sigs;
    struct rlimit rl;

    cli_prog = PROG;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool flag = true;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            cfg.list_dirs = true;
        } else if (strcmp(a, "--mmap") == 0) {
            cfg.mmap = true;
        } else if (strcmp(a, "--no-lean") == 0) {
            cfg.no_lean = true;
        } else if (strcmp(a, "--quiet") == 0) {
            cfg.quiet = true;
        } else if (strcmp(a, "--require-client-cert") == 0) {
            cfg.require_client_cert = true;
        } else if (strcmp(a, "--log-handshake-errors") == 0) {
            cfg.log_handshake_errors = true;
        } else {
            flag = false;
        }
        if (flag) {
            continue;
        }
        if (!val) {
            fprintf(stderr, PROG ": %s: unknown option or missing value (see --help)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--cert") == 0) {
            cert = val;
        } else if (strcmp(a, "--key") == 0) {
            key = val;
        } else if (strcmp(a, "--root") == 0) {
            root = val;
        } else if (strcmp(a, "--listen") == 0) {
            cfg.listen = val;
        } else if (strcmp(a, "--ticket-key-file") == 0) {
            cfg.ticket_key_file = val;
        } else if (strcmp(a, "--session-store") == 0) {
            struct tlsk_redis_options ro = { 0 };
            char where[256];
            if (tlsk_redis_parse_url(val, &ro, where, sizeof where) != 0) {
                fprintf(stderr, PROG ": --session-store %s: wanted redis://HOST[:PORT] or "
                        "unix:/PATH (no user, password or database)\n", val);
                return 2;
            }
            cfg.session_store = val;
        } else if (strcmp(a, "--session-store-timeout") == 0) {
            if (parse_long(val, 1, 10000, &v) != 0) {
                fprintf(stderr, PROG ": --session-store-timeout wants 1-10000 (ms)\n");
                return 2;
            }
            cfg.store_timeout_ms = (int)v;
        } else if (strcmp(a, "--client-ca") == 0) {
            cfg.client_ca = val;
        } else if (strcmp(a, "--ciphersuites") == 0) {
            cfg.ciphersuites = val;
        } else if (strcmp(a, "--ciphers") == 0) {
            cfg.ciphers = val;
        } else if (strcmp(a, "--tls-min") == 0) {
            if (strcmp(val, "1.2") == 0) {
                cfg.min_version = TLSK_TLS1_2;
            } else if (strcmp(val, "1.3") == 0) {
                cfg.min_version = TLSK_TLS1_3;
            } else {
                fprintf(stderr, PROG ": --tls-min wants 1.2 or 1.3\n");
                return 2;
            }
        } else if (strcmp(a, "--offload") == 0) {
            if (strcmp(val, "auto") == 0) {
                cfg.offload = TLSK_OFFLOAD_AUTO;
            } else if (strcmp(val, "tx") == 0) {
                cfg.offload = TLSK_OFFLOAD_TX;
            } else if (strcmp(val, "off") == 0) {
                cfg.offload = TLSK_OFFLOAD_OFF;
            } else if (strcmp(val, "require") == 0) {
                cfg.offload = TLSK_OFFLOAD_REQUIRE;
            } else {
                fprintf(stderr, PROG ": --offload wants auto, tx, off or require\n");
                return 2;
            }
        } else if (strcmp(a, "--vhost") == 0) {
            char *spec = strdup(val), *f[4];
            struct vhost *h;
            if (!spec || vhosts == MAX_VHOSTS) {
                fprintf(stderr, PROG ": too many --vhost\n");
                return 2;
            }
            f[0] = spec;
            for (int k = 1; k < 4; k++) {
                f[k] = f[k - 1] ? strchr(f[k - 1], ':') : NULL;
                if (f[k]) {
                    *f[k]++ = '\0';
                }
            }
            if (!f[3] || !*f[0] || !*f[1] || !*f[2] || !*f[3]) {
                fprintf(stderr, PROG ": --vhost wants NAME:CERT:KEY:ROOT, got %s\n", val);
                return 2;
            }
            h = &cfg.hosts[1 + vhosts++];
            h->name = f[0];
            h->cert = f[1];
            h->key = f[2];
            h->root = f[3];
        } else if (strcmp(a, "--workers") == 0) {
            if (parse_long(val, 1, 1024, &v) != 0) {
                fprintf(stderr, PROG ": --workers wants 1..1024\n");
                return 2;
            }
            cfg.workers = (int)v;
        } else if (strcmp(a, "--max-connections") == 0) {
            if (parse_long(val, 1, 10000000, &v) != 0) {
                fprintf(stderr, PROG ": --max-connections wants a positive number\n");
                return 2;
            }
            cfg.max_conns = v;
        } else if (strcmp(a, "--file-cache") == 0) {
            if (parse_long(val, 0, 65536, &v) != 0) {
                fprintf(stderr, PROG ": --file-cache wants 0..65536\n");
                return 2;
            }
            cfg.file_cache = v;
        } else if (strcmp(a, "--max-header") == 0) {
            if (parse_long(val, 256, 1 << 20, &v) != 0) {
                fprintf(stderr, PROG ": --max-header wants 256..1048576\n");
                return 2;
            }
            cfg.max_header = (size_t)v;
        } else if (strcmp(a, "--header-timeout") == 0 || strcmp(a, "--idle-timeout") == 0 ||
                   strcmp(a, "--grace") == 0) {
            int *ms = a[2] == 'h' ? &cfg.header_timeout_ms
                      : a[2] == 'i' ? &cfg.idle_timeout_ms
                                    : &cfg.grace_ms;
            if (parse_seconds(val, ms) != 0) {
                fprintf(stderr, PROG ": %s wants seconds (0 < s <= 86400)\n", a);
                return 2;
            }
        } else {
            fprintf(stderr, PROG ": unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    cfg.send_timeout_ms = cfg.idle_timeout_ms;
    if (cfg.max_line > cfg.max_header) {
        cfg.max_line = cfg.max_header;
    }
    if (cfg.require_client_cert && !cfg.client_ca) {
        fprintf(stderr, PROG ": --require-client-cert needs --client-ca\n");
        return 2;
    }
    if ((cert == NULL) != (key == NULL)) {
        fprintf(stderr, PROG ": --cert and --key go together\n");
        return 2;
    }
    if (!cert && vhosts == 0) {
        usage(stderr);
        return 2;
    }
    if (cert) {
        cfg.hosts[0] = (struct vhost){ .cert = cert, .key = key, .root = root };
        cfg.nhosts = 1 + vhosts;
    } else {
        /* The first virtual host doubles as the default. */
        memmove(&cfg.hosts[0], &cfg.hosts[1], (size_t)vhosts * sizeof cfg.hosts[0]);
        cfg.nhosts = vhosts;
    }
    {
        char why[1024];
        if (cfg.ticket_key_file) {
            g_tk.keys = read_ticket_keys(cfg.ticket_key_file, &g_tk.n, &g_tk.seen, why,
                                         sizeof why);
            if (!g_tk.keys) {
                fprintf(stderr, PROG ": %s\n", why);
                return 1;
            }
            g_tk.have_seen = true;
        }
        g_live = live_build(NULL, g_tk.keys, g_tk.n, why, sizeof why);
        if (!g_live) {
            fprintf(stderr, PROG ": %s\n", why);
            return 1;
        }
    }

    if (cfg.workers == 0) {
        cfg.workers = default_workers();
    }
    /* Room for every connection's socket and open file, and a little more. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    {
        long fit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? ((long)rl.rlim_cur - 32 - 2 * cfg.workers -
                          cfg.workers * cfg.file_cache) / 2
                       : 10000;
        if (cfg.max_conns == 0) {
            cfg.max_conns = fit < 10000 ? fit : 10000;
        } else if (cfg.max_conns > fit) {
            fprintf(stderr, PROG ": --max-connections %ld lowered to %ld (descriptor limit)\n",
                    cfg.max_conns, fit);
            cfg.max_conns = fit;
        }
        if (cfg.max_conns < 1) {
            cfg.max_conns = 1;
        }
    }

    /* sendfile(2) has no MSG_NOSIGNAL: a client that vanishes must not kill the server. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by the workers; main sigwaits */

    first_fd = resolve_listen();
    if (first_fd < 0) {
        return 1;
    }
    g_stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    workers = calloc((size_t)cfg.workers, sizeof *workers);
    if (!workers || g_stop_efd < 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    for (int i = 0; i < cfg.workers; i++) {
        struct worker *w = &workers[i];
        w->id = i;
        w->lfd = i == 0       ? first_fd
                 : g_activated ? fcntl(first_fd, F_DUPFD_CLOEXEC, 3)
                               : listen_socket();
        if (w->lfd < 0 && g_activated) {
            w->lfd = -errno;
        }
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->files = fcache_new((size_t)cfg.file_cache, INLINE_MAX);
        if (w->lfd < 0 || w->ep < 0 || !w->files) {
            fprintf(stderr, PROG ": worker %d: %s\n", i,
                    strerror(w->lfd < 0 ? -w->lfd : errno));
            return 1;
        }
        set_listening(w, true);
        epoll_ctl(w->ep, EPOLL_CTL_ADD, g_stop_efd,
                  &(struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_STOP });
    }
    print_startup();
    for (int i = 0; i < cfg.workers; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, PROG ": cannot start worker %d\n", i);
            return 1;
        }
    }

    svc_notify("READY=1\nSTATUS=serving");
    for (;;) {
        /* A one-second tick: the ticket key file's change detection. */
        sig = sigtimedwait(&sigs, NULL, &(struct timespec){ .tv_sec = 1 });
        if (sig == SIGTERM || sig == SIGINT) {
            break;
        }
        if (sig == SIGHUP) {
            svc_notify("RELOADING=1\nSTATUS=reloading");
            reload();
            svc_notify("READY=1\nSTATUS=serving");
        } else {
            ticket_keys_poll();
        }
    }
    svc_notify("STOPPING=1\nSTATUS=stopping: finishing responses in flight");
    logline(PROG ": %s: stopping; %ld connection%s open", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            atomic_load(&g_conns), atomic_load(&g_conns) == 1 ? "" : "s");
    atomic_store(&g_stopping, true);
    {
        uint64_t one = 1;
        if (write(g_stop_efd, &one, sizeof one) < 0) {
            /* the workers still notice within one 250 ms tick */
        }
    }
    for (int i = 0; i < cfg.workers; i++) {
        pthread_join(workers[i].thread, NULL);
        fcache_free(workers[i].files);
    }
    logline(PROG ": stopped");
    live_put(g_live);
    if (g_tk.keys) {
        explicit_bzero(g_tk.keys, g_tk.n * 48);
        free(g_tk.keys);
    }
    free(workers);
    return 0;
}

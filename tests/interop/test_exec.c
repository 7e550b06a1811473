/*
 * test_exec.c - tools/tlsk-exec running programs that know nothing of TLS, in both tiers.
 *
 *   E1  cat, echo through openssl s_client (TLS 1.2, 1.3): byte-exact.  Kernel tier: the log
 *       says "detached: kernel" and cat, reading the kTLS socket itself, ends with EIO at the
 *       client's close_notify (the documented behaviour); natively the relay ran and cat saw EOF
 *   E2  a shell script reads a request line and answers with $TLSK_CIPHER, $TLSK_VERSION,
 *       $TLSK_MODE, $TLSK_ALPN, $TLSK_SERVERNAME, which the test checks against its own view
 *   E3  this program in helper mode sendfile()s a file to its stdout: byte-exact, and the
 *       helper reports that its stdout is a kTLS socket (kernel tier) or a socketpair (relay)
 *   E4  what a program sees at close_notify: read() gives EIO on the kTLS socket, EOF through
 *       the relay (--relay, or natively), tlsk_fd_read() gives 0 in both
 *   E5  --no-tls13-rx with TLS 1.3: the relay runs (tx kernel, rx userspace) and works
 *
 * Every wait is bounded; every child is killed and reaped; ports come from binding port 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <linux/tls.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

extern char **environ;

static bool g_ktls;
static int g_to;
static unsigned g_case_secs;
static char g_tmp[1024];
static char g_tools[PATH_MAX + 64];
static const char *g_ca, *g_cert, *g_key;

static bool tis(long long got, long long want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool tis(long long got, long long want, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!tap_ok(got == want, "%s", msg)) {
        tap_diag("  got %lld, expected %lld", got, want);
        return false;
    }
    return true;
}

__attribute__((unused))
static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------- */
/* Child processes                                                                          */

#define MAX_KIDS 16
static volatile sig_atomic_t g_kid_pid[MAX_KIDS];

__attribute__((unused))
static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! case timed out (alarm); children killed\n";
    (void)sig;
    for (int i = 0; i < MAX_KIDS; i++) {
        pid_t p = (pid_t)g_kid_pid[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
        }
    }
    if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing left to do */
    }
    _exit(1);
}

__attribute__((unused))
static void kid_track(pid_t p, bool on)
{
    for (int i = 0; i < MAX_KIDS; i++) {
        if (on ? g_kid_pid[i] == 0 : g_kid_pid[i] == p) {
            g_kid_pid[i] = on ? p : 0;
            return;
        }
    }
}

enum { KID_NULL = -1, KID_PIPE = -2 };

struct kid {
    const char *what;
    pid_t pid;
    int in;  /* write end of the child's stdin pipe, or -1 */
    int out; /* read end of the child's stdout pipe, or -1 */
    int log; /* unlinked temp file with the child's stderr (and stdout when not piped) */
    bool done;
    int status; /* exit code, 128 + signal, or -ETIMEDOUT */
};

__attribute__((unused))
static int tmp_fd(void)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/log-XXXXXX", g_tmp);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) {
        unlink(path);
    }
    return fd;
}

__attribute__((unused))
static bool find_exe(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    if (strchr(name, '/')) {
        snprintf(out, len, "%s", name);
        return access(out, X_OK) == 0;
    }
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0) {
            snprintf(out, len, "%.*s/%s", (int)n, p, name);
            if (access(out, X_OK) == 0) {
                return true;
            }
        }
        p += n + (e ? 1 : 0);
    }
    return false;
}

/* Start argv[0] with stdin from in_mode (KID_NULL, KID_PIPE or an fd), stdout to a pipe or the
 * log, stderr to the log, in cwd (NULL: ours), with env_extra ("K=V", NULL-terminated)
 * replacing or adding variables.  Returns 0 or -errno. */
__attribute__((unused))
static int kid_spawn(struct kid *k, const char *what, const char *const *argv,
                     const char *const *env_extra, const char *cwd, int in_mode, bool out_pipe)
{
    char exe[PATH_MAX];
    int inp[2] = { -1, -1 }, outp[2] = { -1, -1 }, in_fd = -1, rc = 0;
    size_t nenv = 0, nextra = 0;
    char **envp;

    memset(k, 0, sizeof *k);
    k->what = what;
    k->in = k->out = k->log = -1;
    k->pid = -1;
    if (!find_exe(argv[0], exe, sizeof exe)) {
        return -ENOENT;
    }
    while (environ[nenv]) {
        nenv++;
    }
    while (env_extra && env_extra[nextra]) {
        nextra++;
    }
    envp = calloc(nenv + nextra + 1, sizeof *envp);
    if (!envp) {
        return -ENOMEM;
    }
    size_t j = 0;
    for (size_t i = 0; i < nenv; i++) {
        bool skip = false;
        for (size_t x = 0; x < nextra; x++) {
            size_t l = strcspn(env_extra[x], "=");
            if (strncmp(environ[i], env_extra[x], l) == 0 && environ[i][l] == '=') {
                skip = true;
            }
        }
        if (!skip) {
            envp[j++] = environ[i];
        }
    }
    for (size_t x = 0; x < nextra; x++) {
        envp[j++] = (char *)env_extra[x];
    }
    envp[j] = NULL;

    if ((k->log = tmp_fd()) < 0) {
        rc = -errno;
        goto out;
    }
    if (in_mode == KID_PIPE) {
        if (pipe2(inp, O_CLOEXEC) != 0) {
            rc = -errno;
            goto out;
        }
        in_fd = inp[0];
    } else if (in_mode == KID_NULL) {
        if ((in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
            rc = -errno;
            goto out;
        }
    } else {
        in_fd = in_mode;
    }
    if (out_pipe && pipe2(outp, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out;
    }
    k->pid = fork();
    if (k->pid < 0) {
        rc = -errno;
        goto out;
    }
    if (k->pid == 0) {
        /* Only async-signal-safe calls from here: other threads may hold locks. */
        struct sigaction sa;
        sigset_t all;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (dup2(in_fd, 0) < 0 || dup2(out_pipe ? outp[1] : k->log, 1) < 0 ||
            dup2(k->log, 2) < 0) {
            _exit(126);
        }
        if (cwd && chdir(cwd) != 0) {
            _exit(126);
        }
        execve(exe, (char *const *)argv, envp);
        _exit(127);
    }
    kid_track(k->pid, true);
    if (in_mode == KID_PIPE) {
        k->in = inp[1];
        inp[1] = -1;
        h_set_nonblock(k->in, true);
    }
    if (out_pipe) {
        k->out = outp[0];
        outp[0] = -1;
    }
out:
    if (in_mode != KID_PIPE && in_mode != KID_NULL) {
        in_fd = -1; /* the caller's */
    } else if (in_mode == KID_NULL && in_fd >= 0) {
        close(in_fd);
    }
    for (int i = 0; i < 2; i++) {
        if (inp[i] >= 0) {
            close(inp[i]);
        }
        if (outp[i] >= 0) {
            close(outp[i]);
        }
    }
    free(envp);
    if (rc && k->log >= 0) {
        close(k->log);
        k->log = -1;
    }
    return rc;
}

__attribute__((unused))
static void kid_reaped(struct kid *k, int st)
{
    k->done = true;
    k->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    kid_track(k->pid, false);
}

__attribute__((unused))
static bool kid_alive(struct kid *k)
{
    int st;
    if (k->pid <= 0 || k->done) {
        return false;
    }
    if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
        kid_reaped(k, st);
        return false;
    }
    return true;
}

/* Wait up to timeout_ms for the child to exit; kill it after that.  Returns its status. */
__attribute__((unused))
static int kid_wait(struct kid *k, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int st;

    if (k->pid <= 0) {
        return -ECHILD;
    }
    while (!k->done) {
        if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
            kid_reaped(k, st);
            break;
        }
        if (now_ms() > end) {
            kill(k->pid, SIGKILL);
            if (waitpid(k->pid, &st, 0) == k->pid) {
                kid_reaped(k, st);
            }
            k->status = -ETIMEDOUT;
            break;
        }
        usleep(5000);
    }
    return k->status;
}

/* SIGTERM, a short grace period, then SIGKILL; reap; close our ends.  Returns the status. */
__attribute__((unused))
static int kid_stop(struct kid *k)
{
    if (kid_alive(k)) {
        kill(k->pid, SIGTERM);
        kid_wait(k, 3000);
    }
    if (k->in >= 0) {
        close(k->in);
        k->in = -1;
    }
    if (k->out >= 0) {
        close(k->out);
        k->out = -1;
    }
    return k->status;
}

__attribute__((unused))
static void kid_free(struct kid *k)
{
    kid_stop(k);
    if (k->log >= 0) {
        close(k->log);
        k->log = -1;
    }
}

/* Everything the child wrote to its log, NUL-terminated (malloc'd; "" on failure). */
__attribute__((unused))
static char *kid_log(const struct kid *k)
{
    struct stat st;
    char *s;
    size_t len = 0;

    if (k->log >= 0 && fstat(k->log, &st) == 0) {
        len = (size_t)st.st_size;
    }
    s = malloc(len + 1);
    if (!s) {
        return NULL;
    }
    if (len && pread(k->log, s, len, 0) != (ssize_t)len) {
        len = 0;
    }
    s[len] = 0;
    /* Logs may hold NULs (binary data): make strstr see everything. */
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0) {
            s[i] = ' ';
        }
    }
    return s;
}

/* Print the tail of a child's log as TAP diagnostics. */
__attribute__((unused))
static void kid_diag(const struct kid *k)
{
    char *s = kid_log(k);
    if (!s) {
        return;
    }
    size_t len = strlen(s);
    const char *p = len > 1500 ? s + len - 1500 : s;
    tap_diag("  --- %s (pid %d, status %d) log tail:", k->what, (int)k->pid, k->status);
    for (char *line = (char *)p, *e; line && *line; line = e ? e + 1 : NULL) {
        e = strchr(line, '\n');
        if (e) {
            *e = 0;
        }
        tap_diag("  | %s", line);
    }
    free(s);
}

struct buf {
    unsigned char *p;
    size_t len, cap, max;
};

__attribute__((unused))
static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Feed in[0..in_len) to the child's stdin pipe while collecting its stdout into out, until
 * stdout reaches EOF.  stdin is closed once all is written and out holds at least hold bytes
 * (hold 0: at once).  Returns 0, or -ETIMEDOUT after g_to ms without progress, or -errno. */
__attribute__((unused))
static int kid_io(struct kid *k, const void *in, size_t in_len, size_t hold, struct buf *out)
{
    const unsigned char *src = in;
    size_t off = 0;

    if (!out->max) {
        out->max = (64u << 20) + in_len * 2;
    }
    while (k->out >= 0) {
        struct pollfd p[2];
        int n = 0, r;

        if (k->in >= 0 && off == in_len && out->len >= hold) {
            close(k->in);
            k->in = -1;
        }
        p[n++] = (struct pollfd){ .fd = k->out, .events = POLLIN };
        if (k->in >= 0 && off < in_len) {
            p[n++] = (struct pollfd){ .fd = k->in, .events = POLLOUT };
        }
        r = poll(p, (nfds_t)n, g_to);
        if (r == 0) {
            return -ETIMEDOUT;
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n > 1 && p[1].revents) {
            ssize_t w = write(k->in, src + off, in_len - off > 65536 ? 65536 : in_len - off);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                /* The child closed its stdin (e.g. exited): stop feeding it. */
                close(k->in);
                k->in = -1;
                off = in_len;
            }
        }
        if (p[0].revents) {
            if (out->cap - out->len < 65536) {
                size_t nc = out->cap ? out->cap * 2 : 1 << 20;
                unsigned char *np;
                if (nc > out->max + 65536) {
                    return -EFBIG;
                }
                np = realloc(out->p, nc);
                if (!np) {
                    return -ENOMEM;
                }
                out->p = np;
                out->cap = nc;
            }
            ssize_t rd = read(k->out, out->p + out->len, 65536);
            if (rd > 0) {
                out->len += (size_t)rd;
            } else if (rd == 0) {
                close(k->out);
                k->out = -1;
            } else if (errno != EINTR && errno != EAGAIN) {
                return -errno;
            }
        }
    }
    if (k->in >= 0) {
        close(k->in);
        k->in = -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Scratch files                                                                            */

__attribute__((unused))
static int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    ssize_t w = write(fd, data, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -EIO;
}

__attribute__((unused))
static int write_pattern_file(const char *path, uint32_t seed, size_t len)
{
    static unsigned char b[65536];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof b ? len - off : sizeof b;
        h_pattern(seed, off, b, n);
        if (write(fd, b, n) != (ssize_t)n) {
            close(fd);
            return -EIO;
        }
        off += n;
    }
    close(fd);
    return 0;
}

/* Check a whole file against the pattern.  Returns -1 when equal, else the first bad offset
 * (or the file's length when it is short or long). */
__attribute__((unused))
static int64_t check_pattern_file(const char *path, uint32_t seed, size_t len)
{
    static unsigned char b[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t off = 0;
    int64_t bad = -1;

    if (fd < 0) {
        return 0;
    }
    for (;;) {
        ssize_t n = read(fd, b, sizeof b);
        if (n <= 0) {
            break;
        }
        if (off + (uint64_t)n > len) {
            bad = (int64_t)len;
            break;
        }
        int64_t x = h_pattern_check(seed, off, b, (size_t)n);
        if (x >= 0) {
            bad = x;
            break;
        }
        off += (uint64_t)n;
    }
    close(fd);
    if (bad < 0 && off != len) {
        bad = (int64_t)off;
    }
    return bad;
}

/* Unused loopback port for a peer that listens itself. */
__attribute__((unused))
static int free_port(void)
{
    int port, fd = h_listen(&port);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return port;
}

/* Connect to 127.0.0.1:port, retrying while the child starts up.  Returns a non-blocking fd. */
__attribute__((unused))
static int connect_retry(int port, struct kid *k)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    long long end = now_ms() + g_to;

    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return -errno;
        }
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            h_set_nonblock(fd, true);
            return fd;
        }
        int e = errno;
        close(fd);
        if (e != ECONNREFUSED) {
            return -e;
        }
        if (!kid_alive(k)) {
            return -ECHILD;
        }
        if (now_ms() > end) {
            return -ETIMEDOUT;
        }
        usleep(20000);
    }
}


/* ---------------------------------------------------------------------------------------- */
/* The tools under test and their logs                                                      */

/* build/tools next to build/tests/interop/<this program>, or $TLSK_BUILD_DIR/tools. */
__attribute__((unused))
static void tools_dir(void)
{
    const char *b = getenv("TLSK_BUILD_DIR");
    char self[PATH_MAX];
    ssize_t n;

    if (b && *b) {
        snprintf(g_tools, sizeof g_tools, "%s/tools", b);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
        }
    }
    snprintf(g_tools, sizeof g_tools, "%s/tools", self);
}

__attribute__((unused))
static bool log_has(const struct kid *k, const char *needle)
{
    char *s = kid_log(k);
    bool r = s && strstr(s, needle);
    free(s);
    return r;
}

/* Wait until the child's log contains needle.  Returns true if it did within timeout_ms. */
__attribute__((unused))
static bool wait_log(struct kid *k, const char *needle, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    for (;;) {
        if (log_has(k, needle)) {
            return true;
        }
        if (now_ms() > end || !kid_alive(k)) {
            return log_has(k, needle);
        }
        usleep(20000);
    }
}

/* The first log line containing needle (malloc'd), or "" (malloc'd) when none. */
__attribute__((unused))
static char *log_line(const struct kid *k, const char *needle)
{
    char *s = kid_log(k), *p, *e, *r;
    if (!s) {
        return strdup("");
    }
    p = strstr(s, needle);
    if (!p) {
        free(s);
        return strdup("");
    }
    while (p > s && p[-1] != '\n') {
        p--;
    }
    e = strchr(p, '\n');
    r = strndup(p, e ? (size_t)(e - p) : strlen(p));
    free(s);
    return r;
}

/* Start a tool from g_tools with its stderr (and stdout) in the log; wait for its
 * "listening on HOST:PORT" line.  Returns the port or a negative code. */
__attribute__((unused))
static int start_tool(struct kid *k, const char *what, const char **argv)
{
    char exe[sizeof g_tools + 32], *line, *p;
    int port = -1;

    snprintf(exe, sizeof exe, "%s/%s", g_tools, argv[0]);
    argv[0] = exe;
    if (kid_spawn(k, what, argv, NULL, NULL, KID_NULL, false) != 0) {
        return -ENOENT;
    }
    if (!wait_log(k, "listening on ", g_to)) {
        kid_diag(k);
        return -ETIMEDOUT;
    }
    line = log_line(k, "listening on ");
    p = strstr(line, "listening on ");
    if (p && (p = strchr(p + 13, ' '))) {
        *p = '\0';
        p = strrchr(line, ':');
        port = p ? atoi(p + 1) : -1;
    }
    free(line);
    return port > 0 ? port : -EINVAL;
}

/* Number of open descriptors of a process. */
__attribute__((unused))
static int fd_count(pid_t pid)
{
    char path[64];
    struct dirent *d;
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    if (!dir) {
        return -1;
    }
    while ((d = readdir(dir))) {
        n += d->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

/* Wait until a TCP port on 127.0.0.1 accepts connections (a child starting up). */
__attribute__((unused))
static bool wait_port(int port, struct kid *k)
{
    int fd = connect_retry(port, k);
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

/* A tlsk client connected to 127.0.0.1:port with servername, handshake done (NULL on
 * failure, with *rc set).  Verifies against ca1. */
__attribute__((unused))
static struct tlsk_socket *tls_dial(int port, const char *servername, int version,
                                    const char *alpn, int *rc)
{
    struct tlsk_context_options o = { .ca_file = g_ca, .min_version = version,
                                      .max_version = version };
    const char *al[2] = { alpn, NULL };
    struct tlsk_context *c = NULL;
    struct tlsk_socket *s = NULL;
    char err[256];
    int fd;

    o.alpn = alpn ? al : NULL;
    if ((*rc = tlsk_context_new(&c, &o, err, sizeof err)) != 0) {
        tap_diag("client context: %s", err);
        return NULL;
    }
    fd = connect_retry(port, NULL);
    if (fd < 0) {
        *rc = fd;
        tlsk_context_free(c);
        return NULL;
    }
    *rc = tlsk_socket_new_client(&s, c, fd, &(struct tlsk_socket_options){
                                                .servername = servername,
                                                .flags = TLSK_SOCKET_OWN_FD });
    tlsk_context_free(c);
    if (*rc != 0) {
        close(fd);
        return NULL;
    }
    if ((*rc = h_handshake(s)) != 0) {
        tap_diag("client handshake: %s %s", tlsk_err_name(*rc), tlsk_socket_error_detail(s));
        tlsk_socket_free(s);
        return NULL;
    }
    return s;
}

/* Read until close_notify / EOF / error into b (at most cap - 1 bytes, NUL-terminated).
 * Returns the final code: 0 for close_notify, TLSK_ETRUNCATED, ... */
__attribute__((unused))
static int tls_read_all(struct tlsk_socket *s, char *b, size_t cap, size_t *len)
{
    *len = 0;
    for (;;) {
        ssize_t n = h_read_some(s, b + *len, cap - 1 - *len);
        if (n <= 0 || *len + (size_t)n >= cap - 1) {
            if (n > 0) {
                *len += (size_t)n;
            }
            b[*len] = '\0';
            return (int)n;
        }
        *len += (size_t)n;
    }
}

static long long g_t0;

__attribute__((unused))
static void begin(const char *tn)
{
    tap_diag("[%5.1f s] %s", (double)(now_ms() - g_t0) / 1000.0, tn);
    alarm(g_case_secs);
}

/* ---------------------------------------------------------------------------------------- */
/* Helper mode: a program that knows nothing of TLS, run by tlsk-exec                       */

/* test_exec --helper FILE: read one command line from stdin byte by byte, then
 *   sendfile  sendfile(2) FILE to stdout
 *   read      copy stdin to stdout with read(2), then print how reading ended
 *   fdread    the same with tlsk_fd_read()
 * and report on stderr what it was given. */
static int helper(const char *file)
{
    char line[64], buf[16384];
    size_t n = 0;
    /* Only the version and cipher header: the full struct must match the cipher's size. */
    struct tls_crypto_info ci;
    socklen_t cl = sizeof ci;
    const char *mode = getenv("TLSK_MODE");
    bool ktls = getsockopt(1, SOL_TLS, TLS_TX, &ci, &cl) == 0;

    while (n < sizeof line - 1) {
        ssize_t r = read(0, line + n, 1);
        if (r <= 0 || line[n] == '\n') {
            break;
        }
        n++;
    }
    line[n] = '\0';
    fprintf(stderr, "helper: command %s, TLSK_MODE=%s, stdout %s\n", line, mode ? mode : "-",
            ktls ? "is a kTLS socket" : "is not a kTLS socket");
    if (strcmp(line, "sendfile") == 0) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        struct stat st;
        off_t off = 0;
        if (fd < 0 || fstat(fd, &st) != 0) {
            perror("helper: open");
            return 1;
        }
        while (off < st.st_size) {
            ssize_t w = sendfile(1, fd, &off, (size_t)(st.st_size - off));
            if (w <= 0) {
                perror("helper: sendfile");
                return 1;
            }
        }
        fprintf(stderr, "helper: sendfile sent %lld bytes\n", (long long)off);
        close(fd);
        return 0;
    }
    if (strcmp(line, "read") == 0 || strcmp(line, "fdread") == 0) {
        bool fdr = line[0] == 'f';
        ssize_t r;
        int e = 0;
        for (;;) {
            r = fdr ? tlsk_fd_read(0, buf, sizeof buf) : read(0, buf, sizeof buf);
            e = errno;
            if (r <= 0) {
                break;
            }
            if (write(1, buf, (size_t)r) != r) {
                return 1;
            }
        }
        if (r == 0) {
            printf("end: EOF\n");
        } else if (fdr) {
            printf("end: %s\n", tlsk_err_name((int)r));
        } else {
            printf("end: %s\n", e == EIO ? "EIO" : strerror(e));
        }
        fflush(stdout);
        return 0;
    }
    return 2;
}

/* ---------------------------------------------------------------------------------------- */

struct exec_srv {
    struct kid k;
    int port;
    unsigned long conns;
    bool relay, norx; /* --relay, --no-tls13-rx */
};

static char g_self[PATH_MAX];
static char g_file[PATH_MAX + 32];
static size_t g_bulk;

static int start_exec(struct exec_srv *e, const char *what, bool relay, bool norx,
                      const char *const *prog)
{
    const char *argv[32] = { "tlsk-exec", "--cert", g_cert, "--key", g_key, "-l",
                             "127.0.0.1:0", "--alpn", "x-test" };
    int i = 9;
    memset(e, 0, sizeof *e);
    e->relay = relay;
    e->norx = norx;
    if (relay) {
        argv[i++] = "--relay";
    }
    if (norx) {
        argv[i++] = "--no-tls13-rx";
    }
    argv[i++] = "--";
    while (*prog && i < 31) {
        argv[i++] = *prog++;
    }
    argv[i] = NULL;
    e->port = start_tool(&e->k, what, argv);
    return e->port;
}

/* Whether a connection of this version gets the kTLS socket itself. */
static bool want_kernel(const struct exec_srv *e, int version)
{
    return g_ktls && !e->relay && !(e->norx && version == TLSK_TLS1_3);
}

static char *conn_line(struct exec_srv *e, unsigned long id, const char *what)
{
    char n[64];
    snprintf(n, sizeof n, "conn %lu %s", id, what);
    wait_log(&e->k, n, g_to);
    return log_line(&e->k, n);
}

/* The start line must say "detached: kernel" or "relay:" as expected. */
static void check_mode(const char *tn, struct exec_srv *e, unsigned long id, int version)
{
    char *l = conn_line(e, id, "from");
    bool k = want_kernel(e, version);
    if (!TAP_OK(strstr(l, k ? "detached: kernel" : "; relay: ") != NULL,
                "%s: tlsk-exec log says %s", tn, k ? "\"detached: kernel\"" : "\"relay\"")) {
        tap_diag("  line: %s", l);
    }
    free(l);
}

static const char *vname(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : "1.2";
}

static struct exec_srv g_cat, g_sh, g_help, g_help_relay, g_sh_norx, g_ca_sh;

static void e1_cat(int version, size_t n)
{
    char tn[128], portarg[32];
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", g_ca,
                           "-verify_return_error", "-verify_hostname", "localhost",
                           "-servername", "localhost",
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet",
                           "-no_ign_eof", "-nocommands", NULL };
    unsigned char *data = malloc(n);
    struct buf out = { 0 };
    struct kid k;
    unsigned long id = ++g_cat.conns;
    int rc, st;

    snprintf(tn, sizeof tn, "E1 TLS %s cat echo through s_client, %zu bytes", vname(version),
             n);
    begin(tn);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", g_cat.port);
    h_pattern(17, 0, data, n);
    rc = kid_spawn(&k, "openssl s_client", argv, NULL, NULL, KID_PIPE, true);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        free(data);
        return;
    }
    rc = kid_io(&k, data, n, n, &out);
    st = kid_wait(&k, g_to);
    tis(rc, 0, "%s: s_client output ended", tn);
    if (!TAP_OK(out.len == n && memcmp(out.p, data, n) == 0, "%s: echo byte-exact", tn)) {
        tap_diag("  got %zu of %zu bytes", out.len, n);
        kid_diag(&k);
    }
    tis(st, 0, "%s: s_client exited 0", tn);
    check_mode(tn, &g_cat, id, version);
    char *l = conn_line(&g_cat, id, "closed:");
    if (want_kernel(&g_cat, version)) {
        /* cat read the kTLS socket itself: the client's close_notify was EIO, not EOF. */
        TAP_OK(strstr(l, "cat exited with status 1") != NULL && log_has(&g_cat.k,
                                                                         "Input/output error"),
               "%s: cat saw EIO at close_notify (documented) and exited 1", tn);
    } else {
        TAP_OK(strstr(l, "cat exited with status 0") && strstr(l, "client sent close_notify"),
               "%s: through the relay cat saw EOF at close_notify and exited 0", tn);
    }
    free(l);
    kid_free(&k);
    buf_free(&out);
    free(data);
    alarm(0);
}

static void e2_script(struct exec_srv *e, const char *label, int version)
{
    char tn[160], b[1024], want[512];
    size_t len;
    int rc;
    unsigned long id = ++e->conns;
    bool k = want_kernel(e, version);

    snprintf(tn, sizeof tn, "E2 TLS %s shell script%s", vname(version), label);
    begin(tn);
    struct tlsk_socket *s = tls_dial(e->port, "localhost", version, "x-test", &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    snprintf(want, sizeof want, "reply=ping cipher=%s version=%s mode=%s alpn=x-test "
             "sni=localhost\n", tlsk_socket_cipher(s), tlsk_socket_version(s),
             k ? "kernel" : "relay");
    rc = h_write_all(s, "ping\n", 5);
    rc = tls_read_all(s, b, sizeof b, &len);
    if (!TAP_OK(strcmp(b, want) == 0, "%s: reply carries $TLSK_CIPHER, $TLSK_VERSION, "
                "$TLSK_MODE, $TLSK_ALPN, $TLSK_SERVERNAME", tn)) {
        tap_diag("  got:  %s", b);
        tap_diag("  want: %s", want);
    }
    tis(rc, 0, "%s: then close_notify after the script exited (read 0, not %s)", tn,
        tlsk_err_name(rc));
    tlsk_socket_free(s);
    check_mode(tn, e, id, version);
    free(conn_line(e, id, "closed:"));
    alarm(0);
}

static void e3_sendfile(struct exec_srv *e, const char *label, int version)
{
    char tn[160];
    size_t cap = g_bulk + 64, len;
    char *b = malloc(cap);
    int rc;
    unsigned long id = ++e->conns;
    bool k = want_kernel(e, version);

    snprintf(tn, sizeof tn, "E3 TLS %s helper sendfile()s %zu bytes to stdout%s",
             vname(version), g_bulk, label);
    begin(tn);
    struct tlsk_socket *s = tls_dial(e->port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        free(b);
        return;
    }
    rc = h_write_all(s, "sendfile\n", 9);
    rc = tls_read_all(s, b, cap, &len);
    if (!TAP_OK(len == g_bulk && h_pattern_check(9, 0, (unsigned char *)b, len) < 0,
                "%s: file arrived byte-exact", tn)) {
        tap_diag("  got %zu bytes", len);
    }
    tis(rc, 0, "%s: then close_notify (%s)", tn, tlsk_err_name(rc));
    tlsk_socket_free(s);
    check_mode(tn, e, id, version);
    free(conn_line(e, id, "closed:"));
    char *l = log_line(&e->k, "helper: command sendfile");
    const char *want = k ? "TLSK_MODE=kernel, stdout is a kTLS socket"
                         : "TLSK_MODE=relay, stdout is not a kTLS socket";
    if (!TAP_OK(strstr(l, want) != NULL, "%s: helper: %s", tn, want)) {
        tap_diag("  line: %s", l);
    }
    free(l);
    free(b);
    alarm(0);
}

static void e4_close_notify(struct exec_srv *e, const char *label, int version, bool fdread)
{
    char tn[160], b[256];
    const char *want;
    size_t len;
    int rc;
    unsigned long id = ++e->conns;
    bool k = want_kernel(e, version);

    snprintf(tn, sizeof tn, "E4 TLS %s %s() at close_notify%s", vname(version),
             fdread ? "tlsk_fd_read" : "read", label);
    begin(tn);
    struct tlsk_socket *s = tls_dial(e->port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    rc = h_write_all(s, fdread ? "fdread\nabc" : "read\nabc", fdread ? 10 : 8);
    tis(rc, 0, "%s: sent command and data", tn);
    rc = h_shutdown(s);
    tis(rc, 0, "%s: sent close_notify", tn);
    rc = tls_read_all(s, b, sizeof b, &len);
    want = !fdread && k ? "abcend: EIO\n" : "abcend: EOF\n";
    if (!TAP_OK(strcmp(b, want) == 0, "%s: program saw %s", tn,
                !fdread && k ? "EIO (kTLS socket, control record next)" : "EOF")) {
        tap_diag("  got \"%s\"", b);
    }
    tis(rc, 0, "%s: then close_notify (%s)", tn, tlsk_err_name(rc));
    tlsk_socket_free(s);
    check_mode(tn, e, id, version);
    free(conn_line(e, id, "closed:"));
    alarm(0);
}

/* --ca: a client certificate is required; its subject reaches the program. */
static void e6_peer_subject(struct exec_srv *e, int version)
{
    char tn[128], portarg[32];
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", g_ca,
                           "-servername", "localhost", "-cert", g_cert, "-key", g_key,
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet", NULL };
    struct buf out = { 0 };
    struct kid k;
    int rc, st;

    snprintf(tn, sizeof tn, "E6 TLS %s --ca: $TLSK_PEER_SUBJECT", vname(version));
    begin(tn);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", e->port);
    ++e->conns;
    rc = kid_spawn(&k, "openssl s_client -cert", argv, NULL, NULL, KID_PIPE, true);
    if (TAP_OK(rc == 0, "%s: start s_client with a client certificate", tn)) {
        rc = kid_io(&k, "hi\n", 3, 0, &out);
        st = kid_wait(&k, g_to);
        bool ok = rc == 0 && out.len > 0 &&
                  memmem(out.p, out.len, "subject=/O=tlsk test/CN=agent1\n", 31);
        if (!TAP_OK(ok, "%s: program saw subject /O=tlsk test/CN=agent1", tn)) {
            tap_diag("  rc %d, status %d, %zu bytes", rc, st, out.len);
            kid_diag(&k);
        }
        free(conn_line(e, e->conns, "closed:"));
    }
    kid_free(&k);
    buf_free(&out);
    /* Negative: no client certificate, no program. */
    const char *argv2[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", g_ca,
                            "-servername", "localhost",
                            version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet", NULL };
    ++e->conns;
    rc = kid_spawn(&k, "openssl s_client (no cert)", argv2, NULL, NULL, KID_PIPE, true);
    if (TAP_OK(rc == 0, "%s: start s_client without a certificate", tn)) {
        out = (struct buf){ 0 };
        rc = kid_io(&k, "hi\n", 3, 0, &out);
        kid_wait(&k, g_to);
        TAP_OK(out.len == 0 || !memmem(out.p, out.len, "subject=/", 9),
               "%s: without a certificate the program does not run", tn);
        char *l = conn_line(e, e->conns, "from");
        if (!TAP_OK(strstr(l, "handshake failed") != NULL, "%s: tlsk-exec logged the failed "
                    "handshake", tn)) {
            tap_diag("  line: %s", l);
        }
        free(l);
    }
    kid_free(&k);
    buf_free(&out);
    alarm(0);
}

static void cleanup_tmp(void)
{
    unlink(g_file);
    rmdir(g_tmp);
}

int main(int argc, char **argv)
{
    const struct tlsk_kernel_caps *caps;
    const char *td = getenv("TMPDIR");
    struct sigaction sa;
    ssize_t sl;

    if (argc == 3 && strcmp(argv[1], "--helper") == 0) {
        return helper(argv[2]);
    }
    caps = tlsk_kernel_probe();
    g_t0 = now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    g_ktls = h_expect_ktls();
    g_to = g_ktls ? 60000 : 20000;
    g_case_secs = g_ktls ? 300 : 60;
    g_bulk = h_bulk_bytes(4);
    g_ca = strdup(h_fixture("ca1-cert.pem"));
    g_cert = strdup(h_fixture("agent1-cert.pem"));
    g_key = strdup(h_fixture("agent1-key.pem"));
    tools_dir();
    sl = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    g_self[sl > 0 ? sl : 0] = '\0';

    tap_diag("kernel %s, tls ULP %s, bulk %zu bytes, %s tier, tools in %s", caps->release,
             caps->ulp ? "yes" : "no", g_bulk, g_ktls ? "kTLS" : "native", g_tools);
    if (g_ktls && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    {
        char exe[PATH_MAX], tool[sizeof g_tools + 16];
        if (!TAP_OK(find_exe("openssl", exe, sizeof exe), "peer openssl is installed")) {
            return tap_done();
        }
        snprintf(tool, sizeof tool, "%s/tlsk-exec", g_tools);
        if (!TAP_OK(access(tool, X_OK) == 0, "%s is built", tool)) {
            return tap_done();
        }
    }
    snprintf(g_tmp, sizeof g_tmp, "%s/tlsk-exec-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(g_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_file, sizeof g_file, "%s/file.bin", g_tmp);
    if (!TAP_OK(write_pattern_file(g_file, 9, g_bulk) == 0, "scratch file %s", g_file)) {
        cleanup_tmp();
        return tap_done();
    }

    begin("start tlsk-exec instances");
    static const char script[] =
        "read line; printf 'reply=%s cipher=%s version=%s mode=%s alpn=%s sni=%s\\n' "
        "\"$line\" \"$TLSK_CIPHER\" \"$TLSK_VERSION\" \"$TLSK_MODE\" \"${TLSK_ALPN:--}\" "
        "\"${TLSK_SERVERNAME:--}\"";
    const char *cat[] = { "cat", NULL };
    const char *sh[] = { "sh", "-c", script, NULL };
    const char *help[] = { g_self, "--helper", g_file, NULL };
    bool up = start_exec(&g_cat, "tlsk-exec cat", false, false, cat) > 0 &&
              start_exec(&g_sh, "tlsk-exec sh", false, false, sh) > 0 &&
              start_exec(&g_help, "tlsk-exec helper", false, false, help) > 0 &&
              start_exec(&g_help_relay, "tlsk-exec --relay helper", true, false, help) > 0 &&
              start_exec(&g_sh_norx, "tlsk-exec --no-tls13-rx sh", false, true, sh) > 0;
    if (up) {
        const char *subj[] = { "sh", "-c", "read l; echo \"subject=$TLSK_PEER_SUBJECT\"",
                               NULL };
        const char *av[] = { "tlsk-exec", "--cert", g_cert, "--key", g_key, "--ca", g_ca,
                             "-l", "127.0.0.1:0", "--", subj[0], subj[1], subj[2], NULL };
        memset(&g_ca_sh, 0, sizeof g_ca_sh);
        g_ca_sh.port = start_tool(&g_ca_sh.k, "tlsk-exec --ca", av);
        up = g_ca_sh.port > 0;
    }
    if (!TAP_OK(up, "tlsk-exec instances are listening")) {
        goto out;
    }
    alarm(0);

    static const int versions[] = { TLSK_TLS1_2, TLSK_TLS1_3 };
    for (size_t v = 0; v < 2; v++) {
        int ver = versions[v];
        e1_cat(ver, (256u << 10) + 5);
        e2_script(&g_sh, "", ver);
        e2_script(&g_sh_norx, " (--no-tls13-rx)", ver);
        e3_sendfile(&g_help, "", ver);
        e3_sendfile(&g_help_relay, " (--relay)", ver);
        e4_close_notify(&g_help, "", ver, false);
        e4_close_notify(&g_help, "", ver, true);
        e4_close_notify(&g_help_relay, " (--relay)", ver, false);
        e6_peer_subject(&g_ca_sh, ver);
    }
out:
    {
        struct exec_srv *all[] = { &g_cat,        &g_sh,      &g_help,
                                   &g_help_relay, &g_sh_norx, &g_ca_sh };
        for (size_t i = 0; i < 6; i++) {
            if (tap_failed) {
                kid_diag(&all[i]->k);
            }
            kid_free(&all[i]->k);
        }
    }
    cleanup_tmp();
    tap_diag("elapsed %.1f s", (double)(now_ms() - g_t0) / 1000.0);
    return tap_done();
}

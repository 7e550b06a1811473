/* peers.c - child-process and peer helpers shared by the interop tests (see peers.h). */
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
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "tap.h"

extern char **environ;

bool p_ktls;
int p_to;
unsigned p_case_secs;
char p_tmp[1024];
char p_tools[PATH_MAX + 64];
const char *p_ca, *p_cert, *p_key;

long long p_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------- */
/* Child processes                                                                          */

volatile sig_atomic_t p_kid_pid[P_MAX_KIDS];

void p_on_alarm(int sig)
{
    static const char msg[] = "Bail out! case timed out (alarm); children killed\n";
    (void)sig;
    for (int i = 0; i < P_MAX_KIDS; i++) {
        pid_t p = (pid_t)p_kid_pid[i];
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

void p_kid_track(pid_t p, bool on)
{
    for (int i = 0; i < P_MAX_KIDS; i++) {
        if (on ? p_kid_pid[i] == 0 : p_kid_pid[i] == p) {
            p_kid_pid[i] = on ? p : 0;
            return;
        }
    }
}



int p_tmp_fd(void)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/log-XXXXXX", p_tmp);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) {
        unlink(path);
    }
    return fd;
}

bool p_find_exe(const char *name, char *out, size_t len)
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

/* Start argv[0] with stdin from in_mode (P_KID_NULL, P_KID_PIPE or an fd), stdout to a pipe or the
 * log, stderr to the log, in cwd (NULL: ours), with env_extra ("K=V", NULL-terminated)
 * replacing or adding variables.  Returns 0 or -errno. */
int p_kid_spawn(struct p_kid *k, const char *what, const char *const *argv,
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
    if (!p_find_exe(argv[0], exe, sizeof exe)) {
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

    if ((k->log = p_tmp_fd()) < 0) {
        rc = -errno;
        goto out;
    }
    if (in_mode == P_KID_PIPE) {
        if (pipe2(inp, O_CLOEXEC) != 0) {
            rc = -errno;
            goto out;
        }
        in_fd = inp[0];
    } else if (in_mode == P_KID_NULL) {
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
    p_kid_track(k->pid, true);
    if (in_mode == P_KID_PIPE) {
        k->in = inp[1];
        inp[1] = -1;
        h_set_nonblock(k->in, true);
    }
    if (out_pipe) {
        k->out = outp[0];
        outp[0] = -1;
    }
out:
    if (in_mode != P_KID_PIPE && in_mode != P_KID_NULL) {
        in_fd = -1; /* the caller's */
    } else if (in_mode == P_KID_NULL && in_fd >= 0) {
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

void p_kid_reaped(struct p_kid *k, int st)
{
    k->done = true;
    k->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p_kid_track(k->pid, false);
}

bool p_kid_alive(struct p_kid *k)
{
    int st;
    if (k->pid <= 0 || k->done) {
        return false;
    }
    if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
        p_kid_reaped(k, st);
        return false;
    }
    return true;
}

/* Wait up to timeout_ms for the child to exit; kill it after that.  Returns its status. */
int p_kid_wait(struct p_kid *k, int timeout_ms)
{
    long long end = p_now_ms() + timeout_ms;
    int st;

    if (k->pid <= 0) {
        return -ECHILD;
    }
    while (!k->done) {
        if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
            p_kid_reaped(k, st);
            break;
        }
        if (p_now_ms() > end) {
            kill(k->pid, SIGKILL);
            if (waitpid(k->pid, &st, 0) == k->pid) {
                p_kid_reaped(k, st);
            }
            k->status = -ETIMEDOUT;
            break;
        }
        usleep(5000);
    }
    return k->status;
}

/* SIGTERM, a short grace period, then SIGKILL; reap; close our ends.  Returns the status. */
int p_kid_stop(struct p_kid *k)
{
    if (p_kid_alive(k)) {
        kill(k->pid, SIGTERM);
        p_kid_wait(k, 3000);
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

void p_kid_free(struct p_kid *k)
{
    p_kid_stop(k);
    if (k->log >= 0) {
        close(k->log);
        k->log = -1;
    }
}

/* Everything the child wrote to its log, NUL-terminated (malloc'd; "" on failure). */
char *p_kid_log(const struct p_kid *k)
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
void p_kid_diag(const struct p_kid *k)
{
    char *s = p_kid_log(k);
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


void p_buf_free(struct p_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Feed in[0..in_len) to the child's stdin pipe while collecting its stdout into out, until
 * stdout reaches EOF.  stdin is closed once all is written and out holds at least hold bytes
 * (hold 0: at once).  Returns 0, or -ETIMEDOUT after p_to ms without progress, or -errno. */
int p_kid_io(struct p_kid *k, const void *in, size_t in_len, size_t hold, struct p_buf *out)
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
        r = poll(p, (nfds_t)n, p_to);
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

int p_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    ssize_t w = write(fd, data, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -EIO;
}

int p_write_pattern_file(const char *path, uint32_t seed, size_t len)
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
int64_t p_check_pattern_file(const char *path, uint32_t seed, size_t len)
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
int p_free_port(void)
{
    int port, fd = h_listen(&port);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return port;
}

/* Connect to 127.0.0.1:port, retrying while the child starts up.  Returns a non-blocking fd. */
int p_connect_retry(int port, struct p_kid *k)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    long long end = p_now_ms() + p_to;

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
        if (!p_kid_alive(k)) {
            return -ECHILD;
        }
        if (p_now_ms() > end) {
            return -ETIMEDOUT;
        }
        usleep(20000);
    }
}


/* ---------------------------------------------------------------------------------------- */
/* The tools under test and their logs                                                      */

/* build/tools next to build/tests/interop/<this program>, or $TLSK_BUILD_DIR/tools. */
void p_tools_dir(void)
{
    const char *b = getenv("TLSK_BUILD_DIR");
    char self[PATH_MAX];
    ssize_t n;

    if (b && *b) {
        snprintf(p_tools, sizeof p_tools, "%s/tools", b);
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
    snprintf(p_tools, sizeof p_tools, "%s/tools", self);
}

bool p_log_has(const struct p_kid *k, const char *needle)
{
    char *s = p_kid_log(k);
    bool r = s && strstr(s, needle);
    free(s);
    return r;
}

/* Wait until the child's log contains needle.  Returns true if it did within timeout_ms. */
bool p_wait_log(struct p_kid *k, const char *needle, int timeout_ms)
{
    long long end = p_now_ms() + timeout_ms;
    for (;;) {
        if (p_log_has(k, needle)) {
            return true;
        }
        if (p_now_ms() > end || !p_kid_alive(k)) {
            return p_log_has(k, needle);
        }
        usleep(20000);
    }
}

/* The first log line containing needle (malloc'd), or "" (malloc'd) when none. */
char *p_log_line(const struct p_kid *k, const char *needle)
{
    char *s = p_kid_log(k), *p, *e, *r;
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

/* Start a tool from p_tools with its stderr (and stdout) in the log; wait for its
 * "listening on HOST:PORT" line.  Returns the port or a negative code. */
int p_start_tool(struct p_kid *k, const char *what, const char **argv)
{
    char exe[sizeof p_tools + 32], *line, *p;
    int port = -1;

    snprintf(exe, sizeof exe, "%s/%s", p_tools, argv[0]);
    argv[0] = exe;
    if (p_kid_spawn(k, what, argv, NULL, NULL, P_KID_NULL, false) != 0) {
        return -ENOENT;
    }
    if (!p_wait_log(k, "listening on ", p_to)) {
        p_kid_diag(k);
        return -ETIMEDOUT;
    }
    line = p_log_line(k, "listening on ");
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
int p_fd_count(pid_t pid)
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
bool p_wait_port(int port, struct p_kid *k)
{
    int fd = p_connect_retry(port, k);
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

/* A tlsk client connected to 127.0.0.1:port with servername, handshake done (NULL on
 * failure, with *rc set).  Verifies against ca1. */
struct tlsk_socket *p_tls_dial(int port, const char *servername, int version,
                               const char *alpn, int *rc)
{
    struct tlsk_context_options o = { .ca_file = p_ca, .min_version = version,
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
    fd = p_connect_retry(port, NULL);
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
int p_tls_read_all(struct tlsk_socket *s, char *b, size_t cap, size_t *len)
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

long long p_t0;

void p_begin(const char *tn)
{
    tap_diag("[%5.1f s] %s", (double)(p_now_ms() - p_t0) / 1000.0, tn);
    alarm(p_case_secs);
}

/* ---------------------------------------------------------------------------------------- */
/* An evented tlsk echo server on the built-in loop, and peers run by /bin/sh                */

struct tlsk_loop *p_loop;
char p_sh_tmp[256];

void p_on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct p_srv *st = ud;
    st->echoed += len;
    tlsk_socket_send(s, buf, len);
}

void p_on_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err;
    (void)ud;
    tlsk_socket_end(s);
}

void p_on_sock_error(struct tlsk_socket *s, int err, void *ud)
{
    struct p_srv *st = ud;
    st->sock_errors++;
    st->last_sock_err = err;
    snprintf(st->detail, sizeof st->detail, "%s", tlsk_socket_error_detail(s));
}

void p_on_sock_close(struct tlsk_socket *s, void *ud)
{
    struct p_srv *st = ud;
    (void)s;
    st->closes++;
}

void p_on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct p_srv *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = p_on_data, .end = p_on_end,
                                                     .error = p_on_sock_error,
                                                     .close = p_on_sock_close };
    (void)srv;
    st->secure++;
    st->off = tlsk_socket_offload(s);
    st->kernel_tx = h_kernel_has(tlsk_socket_fd(s), true, NULL, NULL);
    st->kernel_rx = h_kernel_has(tlsk_socket_fd(s), false, NULL, NULL);
    st->reused += tlsk_socket_session_reused(s) == 1;
    tlsk_socket_set_data(s, st);
    tlsk_socket_set_callbacks(s, &cb);
}

void p_on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    struct p_srv *st = data;
    (void)srv;
    st->client_errors++;
    st->last_client_err = err;
    snprintf(st->detail, sizeof st->detail, "%s", s ? tlsk_socket_error_detail(s) : "");
}

void p_on_srv_close(struct tlsk_server *srv, void *data)
{
    struct p_srv *st = data;
    (void)srv;
    st->closed = 1;
}

void (*p_tick)(void); /* called between loop slices */

long long p_spin_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Run the loop for about ms milliseconds (it returns at once when nothing is active). */
void p_spin(int ms)
{
    for (int t = 0; t < ms; t += 10) {
        long long t0 = p_spin_now_us(), left;
        tlsk_loop_run(p_loop, 10);
        if (p_tick) {
            p_tick();
        }
        left = 10000 - (p_spin_now_us() - t0);
        if (left > 0) {
            usleep((useconds_t)left);
        }
    }
}

bool p_srv_start(struct p_srv *st, struct tlsk_context *ctx)
{
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = 10000 };
    struct tlsk_server_callbacks cb = { p_on_secure, p_on_client_error, p_on_srv_close };
    char host[64];

    memset(st, 0, sizeof *st);
    if (!ctx || tlsk_server_new(&st->srv, p_loop, &o, &cb, st) != 0) {
        return false;
    }
    if (tlsk_server_listen(st->srv, "127.0.0.1", "0", 16) != 0 ||
        tlsk_server_address(st->srv, host, sizeof host, &st->port) != 0) {
        return false;
    }
    return true;
}

void p_srv_stop(struct p_srv *st)
{
    if (!st->srv) {
        return;
    }
    tlsk_server_close(st->srv);
    for (int i = 0; i < 500 && !st->closed; i++) {
        p_spin(10);
    }
    st->srv = NULL;
}

void p_reset_counts(struct p_srv *st)
{
    st->secure = st->client_errors = st->sock_errors = st->closes = st->reused = 0;
    st->last_client_err = st->last_sock_err = 0;
    st->echoed = 0;
    st->detail[0] = '\0';
}

/* Start script with sh -c ($P = port, $F = fixtures, $T = scratch dir), output (stdout and
 * stderr) into an unlinked file *fd.  Returns the pid or -errno. */
pid_t p_spawn_peer(const char *script, int port, int *fd)
{
    char path[512], ps[16];
    pid_t p;

    snprintf(path, sizeof path, "%s/out-XXXXXX", p_sh_tmp);
    *fd = mkstemp(path);
    if (*fd < 0) {
        return -errno;
    }
    unlink(path);
    snprintf(ps, sizeof ps, "%d", port);
    setenv("P", ps, 1);
    p = fork();
    if (p == 0) {
        setpgid(0, 0);
        dup2(*fd, 1);
        dup2(*fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    return p;
}

/* Spin the loop until the peer exits (at most timeout_s, then it is killed); collect its
 * output into out.  Returns the exit status, or -ETIMEDOUT. */
int p_wait_peer(pid_t p, int fd, int timeout_s, char *out, size_t outlen)
{
    int st = 0, rc = -ETIMEDOUT;
    ssize_t n;

    for (int t = 0; p > 0 && t < timeout_s * 100; t++) {
        p_spin(10);
        if (waitpid(p, &st, WNOHANG) == p) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
    }
    if (p > 0 && rc == -ETIMEDOUT) {
        kill(-p, SIGKILL);
        waitpid(p, &st, 0);
    }
    p_spin(100);
    n = pread(fd, out, outlen - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

int p_run_peer(const char *script, int port, int timeout_s, char *out, size_t outlen)
{
    int fd;
    pid_t p = p_spawn_peer(script, port, &fd);
    if (p < 0) {
        out[0] = '\0';
        return p;
    }
    return p_wait_peer(p, fd, timeout_s, out, outlen);
}

int p_count(const char *hay, const char *needle)
{
    int c = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
        c++;
    }
    return c;
}

bool p_have(const char *exe)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", exe);
    return system(cmd) == 0;
}

struct tlsk_context *p_ctx_new(int version, unsigned flags,
                               const struct tlsk_session_store *store, long timeout,
                               int reneg_limit, int reneg_window, const char *ciphers)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = h_fixture("agent1-cert.pem");
    o.key_file = h_fixture("agent1-key.pem");
    o.min_version = o.max_version = version;
    o.flags = flags;
    o.session_store = store;
    o.session_timeout = timeout;
    o.client_reneg_limit = reneg_limit;
    o.client_reneg_window_s = reneg_window;
    o.ciphers = ciphers;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
        return NULL;
    }
    return c;
}

void p_peer_setup(void)
{
    char fx[512];
    signal(SIGPIPE, SIG_IGN);
    snprintf(p_sh_tmp, sizeof p_sh_tmp, "%s/tlsk-peers-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(p_sh_tmp)) {
        tap_bail("mkdtemp");
    }
    snprintf(fx, sizeof fx, "%s", h_fixture(""));
    fx[strlen(fx) - 1] = '\0'; /* drop the trailing '/' */
    setenv("F", fx, 1);
    setenv("T", p_sh_tmp, 1);
    if (tlsk_loop_new(&p_loop) != 0) {
        tap_bail("loop");
    }
}

void p_peer_teardown(void)
{
    char cmd[300];
    tlsk_loop_free(p_loop);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p_sh_tmp);
    if (system(cmd) != 0) {
        /* leave it */
    }
}

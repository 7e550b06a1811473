/* peers.h - shared helpers for the interop tests that drive real peers (openssl, gnutls, curl,
 * socat, the tlsk tools) as child processes: spawning with pipes and a log file, bounded waits,
 * kill-and-reap (also from a per-case alarm), temp dirs, port picking, log inspection.
 * Every name is prefixed p_ / P_ so it cannot clash with harness.h (h_) or a test's own names. */
#ifndef TLSK_TESTS_PEERS_H
#define TLSK_TESTS_PEERS_H
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tap.h"
#include "tlsk.h"

/* Set by the test's main(): kernel tier, per-wait timeout (ms), per-case alarm (s), the temp
 * directory, the tools directory (p_tools_dir), and the fixture paths. */
extern bool p_ktls;
extern int p_to;
extern unsigned p_case_secs;
extern char p_tmp[1024];
extern char p_tools[PATH_MAX + 64];
extern const char *p_ca, *p_cert, *p_key;
/* tap_ok(got == want) with a diagnostic of both values on failure.  Inline (not in peers.c) so
 * that it counts with the including test's tap.h counter, which is per translation unit. */
static inline bool p_tis(long long got, long long want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool p_tis(long long got, long long want, const char *fmt, ...)
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
long long p_now_ms(void); /* CLOCK_MONOTONIC, ms */

/* ---------------------------------------------------------------------------------------- */
/* Child processes: every spawned child is tracked in p_kid_pid so that the per-case alarm    */
/* handler (p_on_alarm, or a test's own) can kill and reap it.                                */

#define P_MAX_KIDS 16
extern volatile sig_atomic_t p_kid_pid[P_MAX_KIDS];
void p_on_alarm(int sig);
void p_kid_track(pid_t p, bool on);
/* in_mode of p_kid_spawn: stdin from /dev/null, from a pipe (k->in), or an fd (>= 0). */
enum { P_KID_NULL = -1, P_KID_PIPE = -2 };
struct p_kid {
    const char *what;
    pid_t pid;
    int in;  /* write end of the child's stdin pipe, or -1 */
    int out; /* read end of the child's stdout pipe, or -1 */
    int log; /* unlinked temp file with the child's stderr (and stdout when not piped) */
    bool done;
    int status; /* exit code, 128 + signal, or -ETIMEDOUT */
};

int p_tmp_fd(void);
bool p_find_exe(const char *name, char *out, size_t len);
/* Start argv[0] (found in PATH) with stdin per in_mode, stdout to a pipe (out_pipe) or the log,
 * stderr to the log, in cwd (NULL: ours), env_extra ("K=V", NULL-terminated) added.
 * Returns 0 or -errno. */
int p_kid_spawn(struct p_kid *k, const char *what, const char *const *argv,
                const char *const *env_extra, const char *cwd, int in_mode, bool out_pipe);
void p_kid_reaped(struct p_kid *k, int st);
bool p_kid_alive(struct p_kid *k);
/* Bounded wait for exit (killed and reaped after timeout_ms): the status (exit code,
 * 128 + signal) or -ETIMEDOUT. */
int p_kid_wait(struct p_kid *k, int timeout_ms);
/* SIGTERM, a short grace period, then SIGKILL; reap; close our pipe ends.  The status. */
int p_kid_stop(struct p_kid *k);
void p_kid_free(struct p_kid *k);
char *p_kid_log(const struct p_kid *k); /* the log, malloc'd (NULL on error) */
void p_kid_diag(const struct p_kid *k);
struct p_buf {
    unsigned char *p;
    size_t len, cap, max;
};

void p_buf_free(struct p_buf *b);
/* Write in to the child's stdin while collecting its stdout into out until EOF; stdin is closed
 * once all is written and out holds at least hold bytes.  0, -ETIMEDOUT (p_to ms without
 * progress) or -errno. */
int p_kid_io(struct p_kid *k, const void *in, size_t in_len, size_t hold, struct p_buf *out);
int p_write_file(const char *path, const void *data, size_t len);
int p_write_pattern_file(const char *path, uint32_t seed, size_t len);
int64_t p_check_pattern_file(const char *path, uint32_t seed, size_t len);
int p_free_port(void); /* an unused loopback port (bind port 0, close) */
int p_connect_retry(int port, struct p_kid *k);
/* p_tools = $TLSK_BUILD_DIR/tools, else build/tools next to this test binary. */
void p_tools_dir(void);
bool p_log_has(const struct p_kid *k, const char *needle);
bool p_wait_log(struct p_kid *k, const char *needle, int timeout_ms);
char *p_log_line(const struct p_kid *k, const char *needle);
/* Start a tool from p_tools and wait for its "listening on HOST:PORT" line: the port or < 0. */
int p_start_tool(struct p_kid *k, const char *what, const char **argv);
int p_fd_count(pid_t pid); /* open descriptors of pid (/proc/PID/fd) */
bool p_wait_port(int port, struct p_kid *k);
struct tlsk_socket *p_tls_dial(int port, const char *servername, int version,
                               const char *alpn, int *rc);
int p_tls_read_all(struct tlsk_socket *s, char *b, size_t cap, size_t *len);
/* Start a case: log its name with the time since p_t0 and arm alarm(p_case_secs). */
extern long long p_t0;
void p_begin(const char *tn);

/* ---------------------------------------------------------------------------------------- */
/* An evented tlsk echo server on the built-in loop (p_loop), and peers run by /bin/sh with   */
/* $P = port, $F = fixtures, $T = scratch dir (p_sh_tmp); set up by p_peer_setup().          */

extern struct tlsk_loop *p_loop;
extern char p_sh_tmp[256];
struct p_srv {
    struct tlsk_server *srv;
    int port;
    int secure, client_errors, sock_errors, closes, reused;
    int last_client_err, last_sock_err;
    struct tlsk_offload off;
    bool kernel_tx, kernel_rx;
    size_t echoed;
    int closed;
    char detail[256];
};

/* Server callbacks: echo data, end on end, count errors and closes in struct p_srv. */
void p_on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud);
void p_on_end(struct tlsk_socket *s, int err, void *ud);
void p_on_sock_error(struct tlsk_socket *s, int err, void *ud);
void p_on_sock_close(struct tlsk_socket *s, void *ud);
void p_on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data);
void p_on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data);
void p_on_srv_close(struct tlsk_server *srv, void *data);
extern void (*p_tick)(void); /* called between loop slices */
long long p_spin_now_us(void);
/* Run p_loop for about ms milliseconds in 10 ms slices, calling p_tick between slices. */
void p_spin(int ms);
bool p_srv_start(struct p_srv *st, struct tlsk_context *ctx);
void p_srv_stop(struct p_srv *st);
void p_reset_counts(struct p_srv *st);
/* sh -c script with output into an unlinked file *fd: the pid or -errno.  p_wait_peer spins
 * the loop until it exits (killed after timeout_s), reads its output: the status or
 * -ETIMEDOUT.  p_run_peer does both. */
pid_t p_spawn_peer(const char *script, int port, int *fd);
int p_wait_peer(pid_t p, int fd, int timeout_s, char *out, size_t outlen);
int p_run_peer(const char *script, int port, int timeout_s, char *out, size_t outlen);
/* Occurrences of needle in hay; whether exe is in PATH. */
int p_count(const char *hay, const char *needle);
bool p_have(const char *exe);
/* Server context with agent1's certificate and the given options; NULL (with a diag) on error. */
struct tlsk_context *p_ctx_new(int version, unsigned flags,
                               const struct tlsk_session_store *store, long timeout,
                               int reneg_limit, int reneg_window, const char *ciphers);
/* Scratch dir p_sh_tmp, $F/$T, SIGPIPE ignored, p_loop; p_peer_teardown undoes it. */
void p_peer_setup(void);
void p_peer_teardown(void);

#endif

/*
 * test_soak.c - the load and fault suite (issue 10, item 20): many concurrent TLS connections
 * against tlsk-serve and against the evented echo server (tests/helpers/soak_echo.c, a
 * tlsk_server on the built-in loop), each server a child process so that its descriptors
 * (/proc/PID/fd) and memory (VmRSS, VmHWM) are measured from outside.  The load comes from
 * tests/helpers/soak_client.c (OpenSSL directly, one epoll loop): normal keep-alive transfers,
 * slow readers, half-closes, client resets mid-transfer, mid-handshake aborts, garbage instead of
 * a ClientHello and garbage records after the handshake, every received byte checked.
 *
 * Per server: a warm-up client, the baseline (descriptors, RSS), two load rounds, each followed
 * by a bounded wait for the descriptors to return to the baseline (lingering closes take up to
 * about 1 s); RSS peak bounded per connection, RSS after round 2 not grown past round 1 by more
 * than a slack; the server still alive and serving a fresh well-behaved client; in the kTLS
 * tiers, connections really in kernel mode.  Negative checks: the client fails on a corrupted
 * file (byte-exact check) and on a port nothing listens on.
 *
 * Scale: TLSK_SOAK_CONNS and TLSK_SOAK_SECS (seconds per round; two rounds per server).
 * Defaults: 200 connections, 3 s natively; 40 connections, 3 s in the kTLS tiers (user-mode
 * Linux).  make soak runs 2,000 connections, 30 s per round (60 s per server).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "tap.h"

static int g_conns, g_secs;
static char g_www[PATH_MAX], g_client[sizeof p_tools + 64];

/* A field of /proc/PID/status in kB, or -1. */
static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    long v = -1;
    size_t fl = strlen(field);
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* A "key=N" number from text, or -1. */
static long long field(const char *text, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, " %s=", key);
    const char *p = text ? strstr(text, k) : NULL;
    return p ? strtoll(p + strlen(k), NULL, 10) : -1;
}

struct load {
    int status;
    long long started, transfers, bytes, exact_fail, unexpected;
    double elapsed;
    int fd_peak;
    long rss_peak;
    char *log;
};

/* Run soak_client against port (extra: "--only normal" or NULL) for secs with conns, sampling
 * the server's descriptors and RSS every 100 ms meanwhile. */
static void run_load(struct load *L, pid_t server, const char *mode, int port, int conns,
                     int secs, unsigned seed, bool only_normal)
{
    char ps[16], cs[16], ss[16], sd[16];
    const char *argv[16];
    int n = 0;
    struct p_kid k;

    memset(L, 0, sizeof *L);
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(cs, sizeof cs, "%d", conns);
    snprintf(ss, sizeof ss, "%d", secs);
    snprintf(sd, sizeof sd, "%u", seed);
    argv[n++] = g_client;
    argv[n++] = "--mode";
    argv[n++] = mode;
    argv[n++] = "--port";
    argv[n++] = ps;
    argv[n++] = "--conns";
    argv[n++] = cs;
    argv[n++] = "--secs";
    argv[n++] = ss;
    argv[n++] = "--seed";
    argv[n++] = sd;
    argv[n++] = "--ca";
    argv[n++] = p_ca;
    if (only_normal) {
        argv[n++] = "--only";
        argv[n++] = "normal";
    }
    argv[n] = NULL;
    if (p_kid_spawn(&k, "soak_client", argv, NULL, NULL, P_KID_NULL, false) != 0) {
        L->status = -ENOENT;
        return;
    }
    /* The client stops starting connections after secs and gives those in flight at most 30 s
     * more (its per-connection deadline); this bound only guards against a hung client. */
    long long until = p_now_ms() + (long long)secs * 1000 + 90000;
    while (p_kid_alive(&k) && p_now_ms() < until) {
        if (server > 0) {
            int fds = p_fd_count(server);
            long rss = proc_kb(server, "VmRSS");
            L->fd_peak = fds > L->fd_peak ? fds : L->fd_peak;
            L->rss_peak = rss > L->rss_peak ? rss : L->rss_peak;
        }
        usleep(100000);
    }
    L->status = p_kid_wait(&k, 1000);
    L->log = p_kid_log(&k);
    p_kid_free(&k);
    L->started = field(L->log, "started");
    L->transfers = field(L->log, "transfers");
    L->bytes = field(L->log, "bytes");
    L->exact_fail = field(L->log, "exact_fail");
    L->unexpected = field(L->log, "unexpected");
    const char *el = L->log ? strstr(L->log, " elapsed=") : NULL;
    L->elapsed = el ? strtod(el + 9, NULL) : 0;
}

static void diag_log(const char *log)
{
    const char *p = log;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        int n = e ? (int)(e - p) : (int)strlen(p);
        tap_diag("  %.*s", n, p);
        p = e ? e + 1 : NULL;
    }
}

/* Bounded wait for the server's descriptors to come down to base or below: the last count. */
static int wait_fds(pid_t pid, int base, int ms)
{
    long long until = p_now_ms() + ms;
    int n;
    while ((n = p_fd_count(pid)) > base && p_now_ms() < until) {
        usleep(50000);
    }
    return n;
}

/* One server under load: k already started and listening on port. */
/* keep: descriptors the server may hold on purpose beyond its start (tlsk-serve's file cache:
 * each worker keeps the small files open); a count above start + keep is a leak. */
static void soak_server(struct p_kid *k, const char *name, const char *mode, int port, int keep)
{
    struct load L, W;
    long rss_after[2] = { 0, 0 }, rss_peak = 0, hwm, hwm1 = 0;
    int fd_peak = 0;
    char tn[128];

    snprintf(tn, sizeof tn, "%s: warm-up, baseline", name);
    p_begin(tn);
    int fd_start = p_fd_count(k->pid);
    run_load(&W, k->pid, mode, port, 4, 1, 7, true);
    p_tis(W.status, 0, "%s: warm-up client completes", name);
    free(W.log);
    /* The baseline once the warm-up's connections are gone (lingering closes included). */
    int fd_base = wait_fds(k->pid, fd_start + keep, 5000);
    TAP_OK(fd_base >= fd_start && fd_base <= fd_start + keep,
           "%s: descriptors back to %d (+ at most %d cached files) after the warm-up: %d", name,
           fd_start, keep, fd_base);
    long rss_base = proc_kb(k->pid, "VmRSS");
    tap_diag("%s baseline: %d descriptors, RSS %ld kB", name, fd_base, rss_base);

    for (int r = 0; r < 2; r++) {
        snprintf(tn, sizeof tn, "%s: round %d, %d connections, %d s", name, r + 1, g_conns,
                 g_secs);
        p_begin(tn);
        run_load(&L, k->pid, mode, port, g_conns, g_secs, 1000u * (unsigned)r + 11, false);
        if (!p_tis(L.status, 0, "%s round %d: client exit 0 (no wrong byte, no unexpected error)",
                   name, r + 1)) {
            diag_log(L.log);
        }
        p_tis(L.exact_fail, 0, "%s round %d: every received byte exact", name, r + 1);
        TAP_OK(L.transfers > 0 && L.bytes > 0, "%s round %d: %lld transfers, %lld bytes", name,
               r + 1, L.transfers, L.bytes);
        /* Every behaviour was exercised. */
        const char *behs[] = { "normal", "slow", "half", "rst", "abort", "junk", "record" };
        int seen = 0;
        for (size_t b = 0; b < sizeof behs / sizeof behs[0]; b++) {
            char key[64];
            snprintf(key, sizeof key, "behaviour %-6s started=", behs[b]);
            const char *p = L.log ? strstr(L.log, key) : NULL;
            seen += p && atoll(p + strlen(key)) > 0;
        }
        p_tis(seen, 7, "%s round %d: all 7 behaviours ran", name, r + 1);
        diag_log(L.log);
        int fd_after = wait_fds(k->pid, fd_start + keep, 5000);
        TAP_OK(fd_after >= fd_start && fd_after <= fd_start + keep,
               "%s round %d: descriptors back to %d (+ at most %d cached files) within 5 s: %d "
               "(peak %d)", name, r + 1, fd_start, keep, fd_after, L.fd_peak);
        TAP_OK(p_kid_alive(k), "%s round %d: server alive", name, r + 1);
        rss_after[r] = proc_kb(k->pid, "VmRSS");
        if (r == 0) {
            hwm1 = proc_kb(k->pid, "VmHWM");
        }
        rss_peak = L.rss_peak > rss_peak ? L.rss_peak : rss_peak;
        fd_peak = L.fd_peak > fd_peak ? L.fd_peak : fd_peak;
        tap_diag("FIGURES %s round %d: conns=%d secs=%d started=%lld conn_per_s=%.0f "
                 "transfers=%lld bytes=%lld fds base/peak/after=%d/%d/%d RSS kB "
                 "base/peak/after=%ld/%ld/%ld", name, r + 1, g_conns, g_secs, L.started,
                 L.elapsed > 0 ? L.started / L.elapsed : (double)L.started / g_secs,
                 L.transfers, L.bytes, fd_base, L.fd_peak, fd_after, rss_base, L.rss_peak,
                 rss_after[r]);
        free(L.log);
    }
    hwm = proc_kb(k->pid, "VmHWM");
    /* Bounds from measurement (bench/README.md): the peak stays within 512 KiB per concurrent
     * connection over the baseline plus 64 MiB of allocator slack (measured: about 350 KiB
     * per connection for tlsk-serve with 1 MiB files, less for the echo server).  After round
     * 2, RSS stays below round 1's peak: memory the allocator keeps after a round is reused by
     * the next (tlsk-serve's two worker threads' arenas make the after-load figure vary by
     * tens of MiB, so it is not compared with round 1's directly), while a leak per
     * connection adds to it round after round.  The slack, 8 MiB + 4 KiB per concurrent
     * connection, covers what fills up once and stays: the echo server (single-threaded)
     * measured about 1 MiB above round 1's peak after round 2 at 200 connections and 6.3 MiB
     * at 2,000 (make soak, bench/README.md). */
    long bound = rss_base + (long)g_conns * 512 + 65536;
    long slack = 8192 + 4L * g_conns;
#ifdef __SANITIZE_ADDRESS__
    /* Under AddressSanitizer the figures are its own: freed memory waits in a quarantine of
     * up to 256 MiB that fills across rounds (CI measured the echo server 13 MiB higher after
     * round 2).  Leaks are caught instead by LeakSanitizer when the server exits, which the
     * clean-exit check below requires. */
    TAP_OK(hwm > 0, "%s: peak RSS %ld kB (not bounded under AddressSanitizer; LeakSanitizer "
           "checks the exit)", name, hwm);
    TAP_OK(!getenv("ASAN_OPTIONS") || !strstr(getenv("ASAN_OPTIONS"), "detect_leaks=0"),
           "%s: LeakSanitizer on for the server's exit", name);
    (void)bound, (void)slack, (void)hwm1;
#else
    TAP_OK(hwm > 0 && hwm <= bound, "%s: peak RSS %ld kB within %ld kB", name, hwm, bound);
    TAP_OK(rss_after[1] <= hwm1 + slack,
           "%s: RSS after round 2 (%ld kB) not above round 1's peak (%ld kB; after round 1 "
           "%ld kB) + %ld kB", name, rss_after[1], hwm1, rss_after[0], slack);
#endif

    snprintf(tn, sizeof tn, "%s: fresh well-behaved client after the load", name);
    p_begin(tn);
    run_load(&W, k->pid, mode, port, 4, 1, 99, true);
    if (!p_tis(W.status, 0, "%s: a fresh well-behaved client completes", name)) {
        diag_log(W.log);
    }
    TAP_OK(W.transfers > 0, "%s: fresh client made %lld transfers", name, W.transfers);
    free(W.log);
    tap_diag("FIGURES %s: RSS kB baseline %ld, peak (VmHWM) %ld, after round 1 %ld, after "
             "round 2 %ld; descriptors baseline %d, peak %d", name, rss_base, hwm, rss_after[0],
             rss_after[1], fd_base, fd_peak);
}

static void rm_tmp(void)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p_tmp);
    if (system(cmd) != 0) {
        tap_diag("could not remove %s", p_tmp);
    }
}

int main(void)
{
    const char *td = getenv("TMPDIR"), *e;
    struct sigaction sa;
    struct rlimit rl;
    struct p_kid serve, echo;

    p_t0 = p_now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = p_on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    p_ktls = h_expect_ktls();
    p_to = p_ktls ? 60000 : 20000;
    g_conns = (e = getenv("TLSK_SOAK_CONNS")) ? atoi(e) : p_ktls ? 40 : 200;
    g_secs = (e = getenv("TLSK_SOAK_SECS")) ? atoi(e) : 3;
    if (g_conns <= 0 || g_secs <= 0) {
        tap_bail("TLSK_SOAK_CONNS and TLSK_SOAK_SECS must be positive");
    }
    p_case_secs = (unsigned)(2 * g_secs + 300);
    p_ca = strdup(h_fixture("ca1-cert.pem"));
    p_cert = strdup(h_fixture("agent1-cert.pem"));
    p_key = strdup(h_fixture("agent1-key.pem"));
    p_tools_dir();
    snprintf(g_client, sizeof g_client, "%s/../tests/helpers/soak_client", p_tools);

    /* Thousands of connections on each side: the hard descriptor limit, inherited by the
     * children (2 per connection in this process tree's worst case, plus the servers'). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (!TAP_OK(rl.rlim_cur >= (rlim_t)g_conns * 2 + 256,
                    "descriptor limit %llu fits %d connections",
                    (unsigned long long)rl.rlim_cur, g_conns)) {
            return tap_done();
        }
    }
    tap_diag("%s tier: %d connections, %d s per round, 2 rounds per server",
             p_ktls ? "kTLS" : "native", g_conns, g_secs);
    if (!TAP_OK(access(g_client, X_OK) == 0, "%s is built", g_client)) {
        return tap_done();
    }
    snprintf(p_tmp, sizeof p_tmp, "%s/tlsk-soak-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(p_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_www, sizeof g_www, "%s/www", p_tmp);
    {
        const char *argv[] = { g_client, "--make-files", g_www, NULL };
        struct p_kid k;
        mkdir(g_www, 0755);
        int st = p_kid_spawn(&k, "soak_client --make-files", argv, NULL, NULL, P_KID_NULL,
                             false) == 0 ? p_kid_wait(&k, p_to) : -1;
        if (st >= 0 || st == -1) {
            p_kid_free(&k);
        }
        if (!p_tis(st, 0, "test files in %s", g_www)) {
            rm_tmp();
            return tap_done();
        }
    }

    /* tlsk-serve: the access log stays on (it shows kernel mode in the kTLS tiers). */
    {
        const char *argv[] = { "tlsk-serve", "--cert", p_cert, "--key", p_key, "--root", g_www,
                               "--listen", "127.0.0.1:0", "--header-timeout", "10",
                               "--workers", "2", NULL };
        p_begin("tlsk-serve: start");
        int port = p_start_tool(&serve, "tlsk-serve", argv);
        if (p_tis(port > 0, 1, "tlsk-serve listening")) {
            /* 3 of soak_client's files are small enough to cache, in each of 2 workers. */
            soak_server(&serve, "tlsk-serve", "serve", port, 3 * 2);
            if (p_ktls) {
                TAP_OK(p_log_has(&serve, "tx=kernel"),
                       "kTLS tier: tlsk-serve sent responses in kernel mode (tx=kernel)");
            }
            /* Negative: the byte-exact check fails on a file that differs from its pattern
             * (one byte of f1 flipped), so its passing above means something. */
            char f1[PATH_MAX + 8];
            snprintf(f1, sizeof f1, "%s/f1", g_www);
            int fd = open(f1, O_RDWR | O_CLOEXEC);
            unsigned char c = 0;
            bool flipped = fd >= 0 && pread(fd, &c, 1, 1234) == 1 &&
                           (c ^= 0x5a, pwrite(fd, &c, 1, 1234) == 1);
            if (fd >= 0) {
                close(fd);
            }
            struct load L;
            p_begin("negative: a corrupted file is caught");
            run_load(&L, 0, "serve", port, 8, 1, 5, true);
            TAP_OK(flipped && L.status == 1 && L.exact_fail > 0,
                   "client exits 1 on wrong bytes (status %d, %lld wrong)", L.status,
                   L.exact_fail);
            free(L.log);
            p_tis(p_kid_stop(&serve), 0, "tlsk-serve stops gracefully (exit 0)");
        } else {
            p_kid_stop(&serve);
        }
        p_kid_free(&serve);
    }

    {
        const char *argv[] = { "../tests/helpers/soak_echo", NULL };
        p_begin("soak_echo: start");
        int port = p_start_tool(&echo, "soak_echo", argv);
        if (p_tis(port > 0, 1, "soak_echo listening")) {
            soak_server(&echo, "echo server", "echo", port, 0);
            p_tis(p_kid_stop(&echo), 0, "echo server stops on SIGTERM (exit 0)");
            char *line = p_log_line(&echo, "soak-echo: secure=");
            tap_diag("%s", line ? line : "(no counts line)");
            long long ktx = field(line, "kernel_tx");
            if (p_ktls) {
                TAP_OK(ktx > 0, "kTLS tier: echo connections with transmit in the kernel: %lld",
                       ktx);
            } else {
                TAP_OK(field(line, "secure") > 0, "echo server counted secure connections");
            }
            free(line);
            /* Negative: nothing listens there any more, so every connection fails. */
            struct load L;
            p_begin("negative: a server that is gone");
            run_load(&L, 0, "echo", port, 4, 1, 3, true);
            TAP_OK(L.status == 1 && L.unexpected > 0 && strstr(L.log, "connect="),
                   "client exits 1 with connect errors (status %d, %lld unexpected)", L.status,
                   L.unexpected);
            free(L.log);
        } else {
            p_kid_stop(&echo);
        }
        p_kid_free(&echo);
    }
    rm_tmp();
    return tap_done();
}

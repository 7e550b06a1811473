/*
 * soak_echo.c - the evented echo server of the load and fault suite (test_soak, make soak) as a
 * process of its own, so that its descriptors (/proc/PID/fd) and memory (VmRSS, VmHWM) can be
 * measured from outside: a tlsk_server on the built-in tlsk_loop, context from the RSA fixture
 * tree (h_server_ctx), every secure connection echoing what it reads and ending when its peer
 * ends.  Prints "soak-echo: listening on 127.0.0.1:PORT (pid N)" once ready and, on SIGTERM or
 * SIGINT, a line of counts (secure connections, how many had transmit/receive in the kernel,
 * client errors, bytes echoed) before it closes the server and exits 0.
 *
 *   soak_echo [--max-connections N] [--handshake-timeout MS]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"
#include "tlsk.h"

static volatile sig_atomic_t g_stop;
static long long g_secure, g_kernel_tx, g_kernel_rx, g_client_errors, g_closes, g_echoed;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    (void)ud;
    g_echoed += (long long)len;
    tlsk_socket_send(s, buf, len);
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err;
    (void)ud;
    tlsk_socket_end(s);
}

static void on_close(struct tlsk_socket *s, void *ud)
{
    (void)s;
    (void)ud;
    g_closes++;
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .close = on_close };
    struct tlsk_offload off = tlsk_socket_offload(s);
    (void)srv;
    (void)data;
    g_secure++;
    g_kernel_tx += off.tx.mode == TLSK_MODE_KERNEL;
    g_kernel_rx += off.rx.mode == TLSK_MODE_KERNEL;
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    (void)srv;
    (void)err;
    (void)s;
    (void)data;
    g_client_errors++;
}

static const struct tlsk_server_callbacks server_cb = { .secure_connection = on_secure,
                                                        .client_error = on_client_error };

int main(int argc, char **argv)
{
    struct tlsk_server_options o = { .handshake_timeout_ms = 10000 };
    struct tlsk_server *srv = NULL;
    struct tlsk_loop *loop = NULL;
    struct sigaction sa;
    struct rlimit rl;
    char host[64];
    int port = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-connections") == 0 && i + 1 < argc) {
            o.max_connections = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--handshake-timeout") == 0 && i + 1 < argc) {
            o.handshake_timeout_ms = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: soak_echo [--max-connections N] [--handshake-timeout MS]\n");
            return 2;
        }
    }
    /* Thousands of connections: the hard descriptor limit, as tlsk-serve does. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    o.ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!o.ctx || tlsk_loop_new(&loop) != 0 ||
        tlsk_server_new(&srv, loop, &o, &server_cb, NULL) != 0 ||
        tlsk_server_listen(srv, "127.0.0.1", "0", 4096) != 0 ||
        tlsk_server_address(srv, host, sizeof host, &port) != 0) {
        fprintf(stderr, "soak-echo: setup failed\n");
        return 1;
    }
    tlsk_context_free(o.ctx);
    fprintf(stderr, "soak-echo: listening on %s:%d (pid %d)\n", host, port, (int)getpid());
    /* Short slices so that a signal is noticed promptly. */
    while (!g_stop) {
        tlsk_loop_run(loop, 100);
    }
    fprintf(stderr,
            "soak-echo: secure=%lld kernel_tx=%lld kernel_rx=%lld client_errors=%lld "
            "closes=%lld echoed=%lld\n",
            g_secure, g_kernel_tx, g_kernel_rx, g_client_errors, g_closes, g_echoed);
    tlsk_server_close(srv);
    for (int i = 0; i < 30; i++) {
        tlsk_loop_run(loop, 100);
    }
    tlsk_loop_free(loop);
    return 0;
}

/*
 * test_uv.c - the libuv adapter (include/tlsk/uv.h): the echo server of test_server.c driven
 * by uv_run() instead of tlsk_loop_run(), with three blocking tlsk clients in threads (1 B,
 * 100 KB, 4 MiB), a silent peer closed by the handshake timeout (HT-1, 300 ms), the server's
 * close making uv_run() return by itself, and an evented client on the same uv loop.
 * Afterwards uv_loop_close() succeeds (every uv handle the adapter made is closed) and the
 * fd count is back where it started.  Both tiers.  Needs libuv: link with
 * `pkg-config --libs libuv`.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tlsk/uv.h"

#include "echo.h"
#include "harness.h"
#include "tap.h"

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* A watchdog that does not keep uv_run() alive: a hung test stops instead of hanging. */
static int g_watchdog_fired;
static void on_watchdog(uv_timer_t *t)
{
    g_watchdog_fired = 1;
    uv_stop(t->loop);
}

static void on_uv_closed(uv_handle_t *h)
{
    (void)h;
}

static void test_echo(void)
{
    uv_loop_t uv;
    uv_timer_t wd;
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { .close_after = 3 };
    struct te_job jobs[3] = { { .len = 1, .seed = 7 },
                              { .len = 100000, .seed = 7 },
                              { .len = h_bulk_bytes(4), .seed = 7 } };
    pthread_t t[3];
    int port = 0, silent, rc;
    int64_t t0;
    /* User-mode Linux handshakes can take longer than 300 ms with three clients at once. */
    int hs_ms = h_expect_ktls() ? 3000 : 300, slack = h_expect_ktls() ? 3000 : 700;

    TAP_IS(uv_loop_init(&uv), 0, "uv_loop_init");
    TAP_IS(tlsk_uv_loop_new(&loop, &uv), 0, "tlsk_uv_loop_new");
    if (!TAP_OK(te_server(loop, &st, hs_ms, 0, &port), "server on the uv loop, handshakeTimeout %d",
                hs_ms)) {
        return;
    }
    uv_timer_init(&uv, &wd);
    uv_timer_start(&wd, on_watchdog, 60000, 0);
    uv_unref((uv_handle_t *)&wd);

    t0 = te_now_ms();
    silent = te_raw_connect(port);
    for (int i = 0; i < 3; i++) {
        jobs[i].port = port;
        h_spawn(&t[i], te_echo_client, &jobs[i]);
    }
    rc = uv_run(&uv, UV_RUN_DEFAULT);
    if (!TAP_OK(!g_watchdog_fired, "uv_run returned by itself once the server closed (rc %d)",
                rc)) {
        tap_diag("secure %d, client errors %d (%s), closes %d", st.secure, st.client_errors,
                 tlsk_err_name(st.last_error), st.closes);
        tap_bail("uv_run did not finish: the loop still has work");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        TAP_OK(jobs[i].rc == 0, "client %d: %zu bytes echoed, close_notify both ways (%s)", i,
               jobs[i].len, tlsk_err_name(jobs[i].rc));
    }
    TAP_IS(st.secure, 3, "3 secureConnection events");
    TAP_IS(st.ends, 3, "3 end events");
    TAP_IS(st.closes, 3, "3 close events");
    TAP_IS(st.echoed, 1 + 100000 + h_bulk_bytes(4), "every byte echoed");
    TAP_IS(st.client_errors, 1, "HT-1: one clientError (the silent peer)");
    TAP_IS(st.last_error, -ETIMEDOUT, "HT-1: -ETIMEDOUT");
    TAP_OK(strstr(st.last_detail, "HANDSHAKE_TIMEOUT") != NULL, "HT-1: detail %s",
           st.last_detail);
    TAP_OK(st.t_error_ms - t0 >= hs_ms && st.t_error_ms - t0 <= hs_ms + slack,
           "HT-1: clientError after %lld ms (%d..%d) on libuv timers",
           (long long)(st.t_error_ms - t0), hs_ms, hs_ms + slack);
    TAP_OK(te_closed_within(silent, 100), "HT-1: the silent peer reads EOF");
    close(silent);
    TAP_IS(st.server_closed, 1, "server close event once");
    if (h_expect_ktls()) {
        TAP_OK(st.off.tx.mode == TLSK_MODE_KERNEL, "kTLS: connections offloaded (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    } else {
        TAP_OK(st.off.tx.mode == TLSK_MODE_USERSPACE, "native: userspace (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    }
    TAP_IS(tlsk_uv_loop_free(loop), 0, "tlsk_uv_loop_free: nothing left on the loop");
    uv_close((uv_handle_t *)&wd, on_uv_closed);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close: the adapter closed every uv handle");
}

/* An evented tlsk client and the server on one uv loop. */
static void test_evented_client(void)
{
    uv_loop_t uv;
    uv_timer_t wd;
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { .close_after = 1 };
    struct te_client ec = { 0 };
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16];
    int p = 0;

    uv_loop_init(&uv);
    tlsk_uv_loop_new(&loop, &uv);
    if (!TAP_OK(te_server(loop, &st, 0, 0, &p), "server for the evented client")) {
        return;
    }
    uv_timer_init(&uv, &wd);
    uv_timer_start(&wd, on_watchdog, 30000, 0);
    uv_unref((uv_handle_t *)&wd);
    snprintf(port, sizeof port, "%d", p);
    TAP_IS(tlsk_connect(&s, cctx, "localhost", port, NULL), 0, "tlsk_connect");
    tlsk_socket_set_data(s, &ec);
    TAP_IS(tlsk_socket_start(s, loop, &te_client_cb), 0, "tlsk_socket_start on the uv loop");
    uv_run(&uv, UV_RUN_DEFAULT);
    if (!TAP_OK(!g_watchdog_fired, "uv_run returned by itself")) {
        tap_bail("uv_run did not finish: the loop still has work");
    }
    TAP_IS(ec.secure, 1, "client secure event");
    TAP_IS(ec.got, 4, "client got the echo");
    TAP_IS(ec.err, 0, "clean close_notify");
    TAP_IS(ec.closes, 1, "client close event");
    TAP_IS(st.server_closed, 1, "server closed after its connection");
    TAP_IS(tlsk_uv_loop_free(loop), 0, "tlsk_uv_loop_free");
    uv_close((uv_handle_t *)&wd, on_uv_closed);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close");
    tlsk_context_free(cctx);
}

/* tlsk_uv_loop_free() refuses while something is still on the loop. */
static void test_free_busy(void)
{
    uv_loop_t uv;
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { 0 };
    int port;

    uv_loop_init(&uv);
    tlsk_uv_loop_new(&loop, &uv);
    te_server(loop, &st, 0, 0, &port);
    TAP_IS(tlsk_uv_loop_free(loop), TLSK_ESTATE, "tlsk_uv_loop_free with a server open: ESTATE");
    tlsk_server_close(st.srv);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(st.server_closed, 1, "closed server: close event");
    TAP_IS(tlsk_uv_loop_free(loop), 0, "then freed");
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close");
    TAP_IS(tlsk_uv_loop_new(NULL, &uv), TLSK_ECONFIG, "tlsk_uv_loop_new(NULL): ECONFIG");
    TAP_IS(tlsk_uv_loop_free(NULL), 0, "tlsk_uv_loop_free(NULL): no-op");
}

int main(void)
{
    uv_loop_t warm;
    int fds0;

    /* libuv opens a process-wide signal pipe on its first loop: count from after that. */
    uv_loop_init(&warm);
    uv_loop_close(&warm);
    {
        /* The kernel probe runs once per process on first use; done here it cannot stall the
         * loop in the middle of the handshake-timeout window. */
        int64_t t0 = te_now_ms();
        (void)tlsk_kernel_probe();
        tap_diag("kernel probe: %lld ms", (long long)(te_now_ms() - t0));
    }
    fds0 = count_fds();

    test_echo();
    test_evented_client();
    test_free_busy();
    TAP_IS(count_fds(), fds0, "open fds back to the starting count");
    return tap_done();
}

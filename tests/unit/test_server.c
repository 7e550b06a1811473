/*
 * test_server.c - the evented layer: a tlsk_server on the built-in loop with echo
 * connections, the event order (secureConnection, data, end, close, server close), the
 * handshake timeout (HT-1..HT-3), maxConnections (MC-1), and an evented client
 * (tlsk_socket_start) against it, and no_delay (ND-1).  Both tiers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "echo.h"
#include "harness.h"
#include "tap.h"

static void test_echo(void)
{
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { .close_after = 3 };
    struct te_job jobs[3] = { { .len = 1, .seed = 5 },
                              { .len = 100000, .seed = 5 },
                              { .len = h_bulk_bytes(8), .seed = 5 } };
    pthread_t t[3];
    int port = 0;

    TAP_OK(tlsk_loop_new(&loop) == 0, "loop");
    if (!TAP_OK(te_server(loop, &st, 0, 0, &port), "server listening on 127.0.0.1")) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        jobs[i].port = port;
        h_spawn(&t[i], te_echo_client, &jobs[i]);
    }
    TAP_IS(tlsk_loop_run(loop, 60000), 0, "loop ran until the server closed");
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        TAP_OK(jobs[i].rc == 0, "client %d: %zu bytes echoed, close_notify both ways (%s)", i,
               jobs[i].len, tlsk_err_name(jobs[i].rc));
    }
    TAP_IS(st.secure, 3, "3 secureConnection events");
    TAP_IS(st.ends, 3, "3 end events (close_notify from the clients)");
    TAP_IS(st.closes, 3, "3 close events");
    TAP_IS(st.client_errors, 0, "no clientError");
    TAP_IS(st.server_closed, 1, "server close event once, after the last connection");
    TAP_IS(st.echoed, 1 + 100000 + h_bulk_bytes(8), "every byte echoed");
    if (h_expect_ktls()) {
        TAP_OK(st.off.tx.mode == TLSK_MODE_KERNEL, "evented connections are offloaded (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    }
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed with nothing left on it");
}

static void test_timeout(void)
{
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { 0 };
    struct te_job ok = { .len = 1000, .seed = 5, .delay_ms = 50 };
    pthread_t t;
    int port = 0, silent, partial;
    int64_t t0;

    tlsk_loop_new(&loop);
    if (!TAP_OK(te_server(loop, &st, 300, 0, &port), "server with handshakeTimeout 300")) {
        return;
    }
    t0 = te_now_ms();
    silent = te_raw_connect(port);
    partial = te_raw_connect(port);
    if (partial >= 0) {
        (void)!write(partial, "\x16\x03\x01\x02\x00", 5); /* a handshake header, then nothing */
    }
    ok.port = port;
    h_spawn(&t, te_echo_client, &ok);
    tlsk_loop_run(loop, 1500);
    pthread_join(t, NULL);
    TAP_IS(st.client_errors, 2, "HT-1/HT-2: exactly two clientError (silent and partial)");
    TAP_IS(st.last_error, -ETIMEDOUT, "the error is -ETIMEDOUT");
    TAP_OK(strstr(st.last_detail, "HANDSHAKE_TIMEOUT") != NULL, "detail says HANDSHAKE_TIMEOUT (%s)",
           st.last_detail);
    TAP_OK(st.t_error_ms - t0 >= 300 && st.t_error_ms - t0 <= 1000,
           "clientError after %lld ms (300..1000)", (long long)(st.t_error_ms - t0));
    TAP_OK(te_closed_within(silent, 100), "the silent peer reads EOF");
    TAP_OK(te_closed_within(partial, 100), "the partial peer reads EOF");
    TAP_OK(ok.rc == 0, "HT-3: a normal client finished (%s)", tlsk_err_name(ok.rc));
    TAP_IS(st.secure, 1, "HT-3: one secureConnection");
    TAP_IS(tlsk_server_connections(st.srv), 0, "connections back to 0");
    close(silent);
    close(partial);
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 1000);
    TAP_IS(st.server_closed, 1, "server closed");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

static void test_max_connections(void)
{
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { 0 };
    int port = 0, fds[3];

    tlsk_loop_new(&loop);
    if (!TAP_OK(te_server(loop, &st, 5000, 2, &port), "server with maxConnections 2")) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        fds[i] = te_raw_connect(port);
        tlsk_loop_run(loop, 100);
    }
    TAP_IS(tlsk_server_connections(st.srv), 2, "MC-1: 2 connections held");
    TAP_OK(te_closed_within(fds[2], 200), "MC-1: the third is closed at accept");
    TAP_OK(!te_closed_within(fds[0], 50) && !te_closed_within(fds[1], 50),
           "the first two stay open");
    for (int i = 0; i < 3; i++) {
        close(fds[i]);
    }
    tlsk_loop_run(loop, 300);
    TAP_IS(tlsk_server_connections(st.srv), 0, "peers gone: 0 connections");
    TAP_IS(st.client_errors, 2, "their early close is a clientError each");
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 1000);
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

/* ND-1: no_delay sets TCP_NODELAY on accepted connections; without it Nagle stays on. */
static void test_no_delay(void)
{
    for (int nd = 0; nd <= 1; nd++) {
        struct tlsk_loop *loop = NULL;
        struct te_server_state st = { .close_after = 1, .no_delay = nd, .nodelay_seen = -2 };
        struct te_job job = { .len = 10, .seed = 7 };
        pthread_t t;

        tlsk_loop_new(&loop);
        if (!TAP_OK(te_server(loop, &st, 0, 0, &job.port), "ND-1: server, no_delay %d", nd)) {
            tlsk_loop_free(loop);
            continue;
        }
        h_spawn(&t, te_echo_client, &job);
        TAP_IS(tlsk_loop_run(loop, 10000), 0, "ND-1: loop ran until the server closed");
        pthread_join(t, NULL);
        TAP_IS(job.rc, 0, "ND-1: the connection echoed (%s)", tlsk_err_name(job.rc));
        TAP_IS(st.nodelay_seen, nd, "ND-1: no_delay %d: TCP_NODELAY reads %d on the connection",
               nd, st.nodelay_seen);
        TAP_IS(tlsk_loop_free(loop), 0, "ND-1: loop freed");
    }
}

/* An evented client (tlsk_socket_start) against the evented server, on one loop. */
static void test_evented_client(void)
{
    struct tlsk_loop *loop = NULL;
    struct te_server_state st = { .close_after = 1 };
    struct te_client ec = { 0 };
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16];
    int p = 0;

    tlsk_loop_new(&loop);
    if (!TAP_OK(te_server(loop, &st, 0, 0, &p), "server for the evented client")) {
        return;
    }
    snprintf(port, sizeof port, "%d", p);
    TAP_IS(tlsk_connect(&s, cctx, "localhost", port, NULL), 0, "tlsk_connect");
    tlsk_socket_set_data(s, &ec);
    TAP_IS(tlsk_socket_start(s, loop, &te_client_cb), 0, "tlsk_socket_start");
    TAP_IS(tlsk_loop_run(loop, 10000), 0, "loop ran to completion");
    TAP_IS(ec.got, 4, "client got the echo");
    TAP_IS(ec.ends, 1, "client end event");
    TAP_IS(ec.err, 0, "clean close_notify");
    TAP_IS(ec.closes, 1, "client close event");
    TAP_IS(st.server_closed, 1, "server closed after its connection");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
    tlsk_context_free(cctx);
}

int main(void)
{
    test_echo();
    test_timeout();
    test_max_connections();
    test_no_delay();
    test_evented_client();
    return tap_done();
}

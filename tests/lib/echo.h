/* echo.h - the evented echo server of test_server.c and test_uv.c, the blocking echo client
 * that runs against it in a thread, an evented client that sends "ping" and ends on the echo,
 * and raw-TCP probes.  Loop-agnostic: the server is made on any struct tlsk_loop (the built-in
 * one or the libuv adapter's).  Nothing here prints TAP ok lines. */
#ifndef TLSK_TEST_ECHO_H
#define TLSK_TEST_ECHO_H

#include <stddef.h>
#include <stdint.h>

#include "tlsk.h"

/* What the server saw; te_server_cb's callbacks take it as their user data. */
struct te_server_state {
    struct tlsk_server *srv;
    int secure;        /* secureConnection events */
    int client_errors; /* clientError events */
    int closes;        /* connection close events */
    int ends;          /* connection end events (each answered with tlsk_socket_end) */
    int server_closed; /* server close events */
    int last_error;    /* the last clientError's code, detail and time (te_now_ms) */
    char last_detail[256];
    int64_t t_error_ms;
    size_t echoed;     /* bytes echoed, all connections */
    int close_after;   /* close the server when this many connections have closed (0 never) */
    struct tlsk_offload off; /* the last secure connection's */
    int no_delay;      /* in: tlsk_server_options.no_delay */
    int nodelay_seen;  /* out: TCP_NODELAY as read on the last secure connection, or -1 */
};

/* Server callbacks: each secure connection echoes what it reads and ends when its peer does. */
extern const struct tlsk_server_callbacks te_server_cb;

/* A server on loop with te_server_cb and st, context h_server_ctx(0, NULL, DEFAULT, 0),
 * handshake_timeout_ms and max_connections (0: the defaults), listening on 127.0.0.1 with an
 * ephemeral port (*port).  Sets st->srv; NULL on failure. */
struct tlsk_server *te_server(struct tlsk_loop *loop, struct te_server_state *st, int timeout_ms,
                              int max_connections, int *port);

/* One blocking client (a thread body, arg a struct te_job): after delay_ms, connect to
 * localhost:port with h_client_ctx(0, NULL, DEFAULT, 0), send len pattern bytes of seed, read
 * them back, exchange close_notify.  rc: 0 or the first failure. */
struct te_job {
    int port;
    size_t len;
    uint32_t seed;
    int delay_ms;
    int rc;
};
void *te_echo_client(void *job);

/* An evented client (tlsk_socket_start with te_client_cb, user data a struct te_client):
 * sends "ping" when secure, ends when 4 bytes came back, closes on the peer's end. */
struct te_client {
    int secure, ends, closes;
    size_t got;
    int err; /* the end event's code, or an error event's */
};
extern const struct tlsk_socket_callbacks te_client_cb;

/* CLOCK_MONOTONIC in milliseconds. */
int64_t te_now_ms(void);
/* A plain TCP connection to 127.0.0.1:port: fd or -1. */
int te_raw_connect(int port);
/* 1 when the peer closed the raw connection (EOF or error) within ms, else 0. */
int te_closed_within(int fd, int ms);

#endif

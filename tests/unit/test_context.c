/*
 * test_context.c - tlsk_context_new() option errors (exact code and a detail string that
 * names the problem), encrypted keys without a prompt, in-memory PEM, reference counting,
 * the error and reason name tables, and tlsk_socket_new_*() argument errors.
 *
 * Needs no kernel TLS: it runs the same in both tiers (the one handshake here only checks
 * that in-memory credentials really work).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define SENTINEL ((struct tlsk_context *)(uintptr_t)0x5a5a5a5a)

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        /* Exactly n bytes and no NUL after them: a read past the given length shows up
         * under ASan. */
        buf = malloc((size_t)n);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

static char *cstr(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Expect tlsk_context_new() to fail with code and a detail holding every needle (NULL-ended). */
static void expect_fail(const char *name, const struct tlsk_context_options *o, int code, ...)
{
    struct tlsk_context *ctx = SENTINEL;
    char detail[512];
    va_list ap;
    const char *needle;
    int rc;

    memset(detail, 'X', sizeof detail);
    rc = tlsk_context_new(&ctx, o, detail, sizeof detail);
    if (!tap_ok(rc == code, "%s: %s", name, tlsk_err_name(code))) {
        tap_diag("  got %s (%d): %s", tlsk_err_name(rc), rc,
                 memchr(detail, '\0', sizeof detail) ? detail : "(detail not terminated)");
    }
    TAP_OK(ctx == SENTINEL, "%s: out-parameter untouched on failure", name);
    if (ctx != SENTINEL && rc == 0) {
        tlsk_context_free(ctx);
    }
    if (!TAP_OK(memchr(detail, '\0', sizeof detail) != NULL, "%s: detail NUL-terminated", name)) {
        return;
    }
    va_start(ap, code);
    while ((needle = va_arg(ap, const char *)) != NULL) {
        if (!TAP_OK(strstr(detail, needle) != NULL, "%s: detail mentions \"%s\"", name, needle)) {
            tap_diag("  detail: \"%s\"", detail);
        }
    }
    va_end(ap);
}

static struct tlsk_context *expect_ok(const char *name, const struct tlsk_context_options *o)
{
    struct tlsk_context *ctx = NULL;
    char detail[512] = "unset";
    int rc = tlsk_context_new(&ctx, o, detail, sizeof detail);

    if (!tap_ok(rc == 0 && ctx != NULL, "%s: context built", name)) {
        tap_diag("  got %s: %s", tlsk_err_name(rc), detail);
    }
    return rc == 0 ? ctx : NULL;
}

static struct tlsk_context_options server_opts(const char *cert, const char *key)
{
    struct tlsk_context_options o = { 0 };
    o.cert_file = cert ? h_fixture(cert) : NULL;
    o.key_file = key ? h_fixture(key) : NULL;
    return o;
}

/* ---------------------------------------------------------------------------------------- */
/* Encrypted key without passphrase: in a child with a pty as controlling terminal and stdin,
 * bounded by alarm().  A prompt would show on the pty master (and then block, killed by the
 * alarm). */

struct child_result {
    int rc;
    char detail[512];
};

static void no_prompt_case(bool use_pty)
{
    const char *name = use_pty ? "encrypted key, no passphrase, pty as terminal"
                               : "encrypted key, no passphrase, stdin closed, no terminal";
    struct child_result res = { .rc = 1 };
    char said[512];
    size_t said_len = 0, res_len = 0;
    int master = -1, p[2], e[2], status = 0;
    char *slave = NULL;
    pid_t pid;
    time_t deadline;
    bool exited = false;

    if (use_pty) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
            !(slave = ptsname(master))) {
            tap_diag("no pty available (%s): skipping the pty variant", strerror(errno));
            TAP_OK(1, "%s # SKIP no pty", name);
            if (master >= 0) {
                close(master);
            }
            return;
        }
        h_set_nonblock(master, true);
    }
    if (pipe2(p, O_CLOEXEC) != 0 || pipe2(e, O_CLOEXEC) != 0) {
        tap_bail("pipe");
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        tap_bail("fork");
    }
    if (pid == 0) {
        struct tlsk_context_options o = server_opts("agent1-cert.pem", "agent1-key-enc.pem");
        struct tlsk_context *ctx = NULL;
        struct child_result r = { 0 };

        close(p[0]);
        close(e[0]);
        alarm(10);
        dup2(e[1], 2); /* "the library never prints": anything on stderr is caught too */
        setsid();      /* no controlling terminal ... */
        if (use_pty) {
            /* ... until this open makes the pty slave the controlling terminal (/dev/tty). */
            int t = open(slave, O_RDWR);
            if (t < 0) {
                _exit(3);
            }
            dup2(t, 0);
            close(t);
        } else {
            close(0);
        }
        r.rc = tlsk_context_new(&ctx, &o, r.detail, sizeof r.detail);
        tlsk_context_free(ctx);
        if (write(p[1], &r, sizeof r) != (ssize_t)sizeof r) {
            _exit(4);
        }
        _exit(0);
    }
    close(p[1]);
    close(e[1]);
    deadline = time(NULL) + 15;
    {
        /* Result pipe, stderr pipe, pty master: each is read until EOF (EIO for the master
         * once the child is gone). */
        struct pollfd pf[3] = { { .fd = p[0], .events = POLLIN },
                                { .fd = e[0], .events = POLLIN },
                                { .fd = master, .events = POLLIN } };
        for (;;) {
            int n = poll(pf, 3, 200), open_fds = 0;
            for (int i = 0; i < 3 && n > 0; i++) {
                ssize_t k;
                if (pf[i].fd < 0 || !pf[i].revents) {
                    continue;
                }
                if (i == 0) {
                    k = read(pf[i].fd, (char *)&res + res_len, sizeof res - res_len);
                    res_len += k > 0 ? (size_t)k : 0;
                } else {
                    char junk[256];
                    k = read(pf[i].fd, junk, sizeof junk);
                    for (ssize_t j = 0; j < k && said_len < sizeof said - 1; j++) {
                        said[said_len++] = junk[j];
                    }
                }
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR) ||
                    (i == 0 && res_len == sizeof res)) {
                    pf[i].fd = -1;
                }
            }
            if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
                exited = true;
            }
            for (int i = 0; i < 3; i++) {
                open_fds += pf[i].fd >= 0;
            }
            if (exited && (open_fds == 0 || n == 0)) {
                break;
            }
            if (time(NULL) > deadline) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                tap_diag("  child still running after 15 s: killed");
                break;
            }
        }
    }
    said[said_len] = '\0';
    if (!TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "%s: returned without waiting for input (no hang)", name)) {
        tap_diag("  child status %#x%s", status,
                 WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? " (killed: it blocked)" : "");
    }
    if (!TAP_OK(said_len == 0, "%s: nothing written to %s", name,
                use_pty ? "the terminal or stderr" : "stderr")) {
        tap_diag("  got: \"%s\"", said);
    }
    res.detail[sizeof res.detail - 1] = '\0';
    if (res_len == sizeof res) {
        if (!TAP_OK(res.rc == TLSK_EPASSPHRASE, "%s: TLSK_EPASSPHRASE", name)) {
            tap_diag("  got %s: %s", tlsk_err_name(res.rc), res.detail);
        }
        if (!TAP_OK(strstr(res.detail, "passphrase") != NULL, "%s: detail mentions the passphrase",
                    name)) {
            tap_diag("  detail: \"%s\"", res.detail);
        }
    } else {
        TAP_OK(0, "%s: child reported a result", name);
    }
    close(p[0]);
    close(e[0]);
    if (master >= 0) {
        close(master);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* In-memory credentials really work: a handshake and an echo. */

struct srv {
    struct tlsk_socket *s;
    int rc;
    char detail[256];
};

static void *server_thread(void *arg)
{
    struct srv *sv = arg;
    char buf[16];
    ssize_t n;

    sv->rc = h_handshake(sv->s);
    if (sv->rc == 0) {
        n = h_read_full(sv->s, buf, 5);
        sv->rc = n == 5 ? h_write_all(sv->s, buf, 5) : (n < 0 ? (int)n : -EPIPE);
    }
    if (sv->rc == 0) {
        n = h_read_some(sv->s, buf, sizeof buf); /* close_notify */
        sv->rc = n == 0 ? h_shutdown(sv->s) : (n < 0 ? (int)n : -EPROTO);
    }
    snprintf(sv->detail, sizeof sv->detail, "%s", tlsk_socket_error_detail(sv->s));
    return NULL;
}

static void in_memory_handshake(struct tlsk_context *sctx, struct tlsk_context *cctx,
                                const char *name, bool drop_ctx_refs)
{
    struct tlsk_socket_options co = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    struct srv sv = { 0 };
    pthread_t t;
    char buf[16];
    int cfd, sfd, rc;

    if (!TAP_OK(h_tcp_pair(&cfd, &sfd) == 0, "%s: tcp pair", name)) {
        return;
    }
    rc = tlsk_socket_new_server(&sv.s, sctx, sfd, NULL);
    TAP_IS(rc, 0, "%s: server socket", name);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &co);
    TAP_IS(rc, 0, "%s: client socket", name);
    if (!sv.s || !c) {
        tlsk_socket_free(sv.s);
        tlsk_socket_free(c);
        close(cfd);
        close(sfd);
        return;
    }
    if (drop_ctx_refs) {
        /* The sockets hold their own references: the contexts must outlive this. */
        tlsk_context_free(sctx);
        tlsk_context_free(cctx);
    }
    h_spawn(&t, server_thread, &sv);
    rc = h_handshake(c);
    if (!TAP_OK(rc == 0, "%s: handshake (%s)", name, tlsk_err_name(rc))) {
        tap_diag("  client: %s", tlsk_socket_error_detail(c));
        shutdown(cfd, SHUT_RDWR);
    } else {
        ssize_t n;
        rc = h_write_all(c, "hello", 5);
        n = rc == 0 ? h_read_full(c, buf, 5) : rc;
        TAP_OK(n == 5 && memcmp(buf, "hello", 5) == 0, "%s: echo", name);
        TAP_IS(h_shutdown(c), 0, "%s: client close_notify", name);
        n = h_read_some(c, buf, sizeof buf);
        TAP_IS(n, 0, "%s: server close_notify", name);
    }
    pthread_join(t, NULL);
    if (!TAP_OK(sv.rc == 0, "%s: server side clean", name)) {
        tap_diag("  server: %s: %s", tlsk_err_name(sv.rc), sv.detail);
    }
    tlsk_socket_free(sv.s);
    tlsk_socket_free(c);
    close(cfd);
    close(sfd);
}

/* ---------------------------------------------------------------------------------------- */

static void test_credentials(void)
{
    struct tlsk_context_options o;
    struct tlsk_context *ctx;
    const char *missing = "/nonexistent/tlsk-no-such-cert.pem";
    const char *missing_ca = "/nonexistent/tlsk-no-such-ca.pem";

    o = server_opts("agent1-cert.pem", NULL);
    expect_fail("cert without key", &o, TLSK_ECONFIG, "key", NULL);
    o = server_opts(NULL, "agent1-key.pem");
    expect_fail("key without cert", &o, TLSK_ECONFIG, "cert", NULL);
    o = (struct tlsk_context_options){ .cert_pem = "x", .key_file = NULL };
    expect_fail("cert_pem without key", &o, TLSK_ECONFIG, "key", NULL);

    o = server_opts(NULL, "agent1-key.pem");
    o.cert_file = missing;
    expect_fail("nonexistent cert file", &o, TLSK_ECERT, missing, NULL);

    o = (struct tlsk_context_options){ .cert_pem = "this is not a certificate\n",
                                       .key_file = h_fixture("agent1-key.pem") };
    expect_fail("garbage cert_pem", &o, TLSK_ECERT, "cert", NULL);

    o = server_opts("agent1-cert.pem", "agent3-key.pem");
    expect_fail("agent3 key with agent1 cert", &o, TLSK_EKEY, "does not match", NULL);

    o = server_opts("agent1-cert.pem", "agent1-key-enc.pem");
    o.passphrase = "password";
    tlsk_context_free(expect_ok("encrypted key with the right passphrase", &o));

    o.passphrase = "wrong-password";
    expect_fail("encrypted key, wrong passphrase", &o, TLSK_EPASSPHRASE, "bad decrypt", NULL);
    o.passphrase = "";
    expect_fail("encrypted key, empty passphrase", &o, TLSK_EPASSPHRASE, NULL);

    no_prompt_case(true);
    no_prompt_case(false);

    o = server_opts("agent1-cert.pem", "agent1-key.pem");
    o.passphrase = "password";
    tlsk_context_free(expect_ok("passphrase for an unencrypted key is ignored", &o));

    o = (struct tlsk_context_options){ .ca_file = missing_ca };
    expect_fail("nonexistent ca_file", &o, TLSK_ECERT, missing_ca, NULL);
    o = (struct tlsk_context_options){ .ca_pem = "no certificates here" };
    expect_fail("garbage ca_pem", &o, TLSK_ECERT, "ca", NULL);

    o = server_opts("agent1-cert.pem", "agent1-key.pem");
    o.cert_pem = "x";
    expect_fail("cert_file and cert_pem both", &o, TLSK_ECONFIG, "cert_pem", NULL);
    o = server_opts("agent1-cert.pem", "agent1-key.pem");
    o.key_pem = "x";
    expect_fail("key_file and key_pem both", &o, TLSK_ECONFIG, "key_pem", NULL);
    o = (struct tlsk_context_options){ .ca_file = h_fixture("ca1-cert.pem"), .ca_pem = "x" };
    expect_fail("ca_file and ca_pem both", &o, TLSK_ECONFIG, "ca_pem", NULL);

    /* detail buffers: tiny one is truncated and terminated, NULL is fine. */
    {
        char tiny[6];
        memset(tiny, 'X', sizeof tiny);
        ctx = SENTINEL;
        o = server_opts("agent1-cert.pem", NULL);
        TAP_IS(tlsk_context_new(&ctx, &o, tiny, sizeof tiny), TLSK_ECONFIG,
               "6-byte detail buffer: still TLSK_ECONFIG");
        TAP_OK(memchr(tiny, '\0', sizeof tiny) != NULL && strlen(tiny) == 5,
               "6-byte detail buffer: truncated to 5 chars and terminated");
        TAP_IS(tlsk_context_new(&ctx, &o, NULL, 0), TLSK_ECONFIG, "NULL detail buffer");
        TAP_OK(ctx == SENTINEL, "NULL detail buffer: out untouched");
        TAP_IS(tlsk_context_new(NULL, &o, NULL, 0), TLSK_ECONFIG, "NULL out: TLSK_ECONFIG");
    }
}

static void test_in_memory(void)
{
    size_t cl, kl, al;
    char *cert = slurp(h_fixture("agent1-cert.pem"), &cl);
    char *key = slurp(h_fixture("agent1-key.pem"), &kl);
    char *ca = slurp(h_fixture("ca1-cert.pem"), &al);
    char *cert_z, *key_z, *ca_z;
    struct tlsk_context_options so = { 0 }, co = { 0 };
    struct tlsk_context *sctx, *cctx;

    if (!TAP_OK(cert && key && ca, "read agent1 cert, key and ca1 PEM files")) {
        free(cert);
        free(key);
        free(ca);
        return;
    }
    cert_z = cstr(cert, cl);
    key_z = cstr(key, kl);
    ca_z = cstr(ca, al);

    /* NUL-terminated strings, length 0. */
    so.cert_pem = cert_z;
    so.key_pem = key_z;
    co.ca_pem = ca_z;
    sctx = expect_ok("in-memory PEM, NUL-terminated: server", &so);
    cctx = expect_ok("in-memory PEM, NUL-terminated: client ca_pem", &co);
    if (sctx && cctx) {
        in_memory_handshake(sctx, cctx, "in-memory NUL-terminated", false);
    }
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);

    /* Explicit lengths over buffers with no terminator (ASan catches an over-read). */
    so = (struct tlsk_context_options){ .cert_pem = cert, .cert_pem_len = cl, .key_pem = key,
                                        .key_pem_len = kl };
    co = (struct tlsk_context_options){ .ca_pem = ca, .ca_pem_len = al };
    sctx = expect_ok("in-memory PEM, explicit length: server", &so);
    cctx = expect_ok("in-memory PEM, explicit length: client ca_pem", &co);
    /* Strings are copied: scribbling over the buffers after the call changes nothing. */
    memset(cert, 0, cl);
    memset(key, 0, kl);
    memset(ca, 0, al);
    if (sctx && cctx) {
        /* ... and the sockets keep the contexts alive after the caller's last free. */
        in_memory_handshake(sctx, cctx, "in-memory explicit length, contexts freed early", true);
    } else {
        tlsk_context_free(sctx);
        tlsk_context_free(cctx);
    }

    /* An explicit length that cuts the PEM short is an error. */
    so = (struct tlsk_context_options){ .cert_pem = cert_z, .cert_pem_len = cl / 2,
                                        .key_pem = key_z };
    expect_fail("cert_pem cut short by cert_pem_len", &so, TLSK_ECERT, "cert", NULL);

    free(cert);
    free(key);
    free(ca);
    free(cert_z);
    free(key_z);
    free(ca_z);
}

static void test_protocol_options(void)
{
    struct tlsk_context_options o;

    o = (struct tlsk_context_options){ .min_version = 0x0301 };
    expect_fail("min_version TLS 1.0", &o, TLSK_ECONFIG, "min_version", NULL);
    o = (struct tlsk_context_options){ .max_version = 0x0302 };
    expect_fail("max_version TLS 1.1", &o, TLSK_ECONFIG, "max_version", NULL);
    o = (struct tlsk_context_options){ .min_version = TLSK_TLS1_3, .max_version = TLSK_TLS1_2 };
    expect_fail("min_version above max_version", &o, TLSK_ECONFIG, "min_version", NULL);
    o = (struct tlsk_context_options){ .ciphers = "NOPE" };
    expect_fail("ciphers NOPE", &o, TLSK_ECONFIG, "ciphers", NULL);
    o = (struct tlsk_context_options){ .ciphers = "RC4-SHA" };
    expect_fail("ciphers RC4-SHA", &o, TLSK_ECONFIG, "ciphers", NULL);
    o = (struct tlsk_context_options){ .ciphersuites = "TLS_NOPE" };
    expect_fail("ciphersuites TLS_NOPE", &o, TLSK_ECONFIG, "ciphersuites", NULL);
    o = (struct tlsk_context_options){ .groups = "bogus" };
    expect_fail("groups bogus", &o, TLSK_ECONFIG, "groups", NULL);
    o = (struct tlsk_context_options){ .offload = (enum tlsk_offload_policy)99 };
    expect_fail("offload policy 99", &o, TLSK_ECONFIG, "offload", NULL);
    o = (struct tlsk_context_options){ .offload = (enum tlsk_offload_policy)-1 };
    expect_fail("offload policy -1", &o, TLSK_ECONFIG, "offload", NULL);

    /* The valid neighbours of those values work. */
    o = (struct tlsk_context_options){ .min_version = TLSK_TLS1_2, .max_version = TLSK_TLS1_3,
                                       .ciphers = "ECDHE-RSA-AES128-GCM-SHA256",
                                       .groups = "P-256", .offload = TLSK_OFFLOAD_REQUIRE };
    tlsk_context_free(expect_ok("valid versions, cipher, group, policy", &o));
    o = (struct tlsk_context_options){ .min_version = TLSK_TLS1_3, .max_version = TLSK_TLS1_3 };
    tlsk_context_free(expect_ok("TLS 1.3 only", &o));
}

static void test_refcount(void)
{
    struct tlsk_context_options o = server_opts("agent1-cert.pem", "agent1-key.pem");
    struct tlsk_context *ctx = expect_ok("refcount: context", &o), *r;

    if (!ctx) {
        return;
    }
    r = tlsk_context_ref(ctx);
    TAP_OK(r == ctx, "tlsk_context_ref returns the same context");
    tlsk_context_free(ctx);
    /* Still alive (one reference left): a socket can be made from it. */
    {
        struct tlsk_socket *s = NULL;
        int a, b;
        if (TAP_OK(h_tcp_pair(&a, &b) == 0, "refcount: tcp pair")) {
            TAP_IS(tlsk_socket_new_server(&s, ctx, b, NULL), 0,
                   "context usable after the first of two frees");
            tlsk_socket_free(s);
            close(a);
            close(b);
        }
    }
    tlsk_context_free(ctx); /* the last one: freed (ASan/LSan check leak and double free) */
    tlsk_context_free(NULL);
    TAP_OK(tlsk_context_ref(NULL) == NULL, "tlsk_context_ref(NULL) is NULL");
}

static void test_error_names(void)
{
    char names[64][64], texts[64][160];
    int n = 0;
    bool all_ok = true;

    for (int e = TLSK_EBASE - 1; e > TLSK_ELAST; e--, n++) {
        const char *nm = tlsk_err_name(e), *tx = tlsk_strerror(e);
        snprintf(names[n], sizeof names[n], "%s", nm ? nm : "");
        snprintf(texts[n], sizeof texts[n], "%s", tx ? tx : "");
        if (!TAP_OK(nm && tx && nm[0] && tx[0] && strncmp(nm, "TLSK_E", 6) == 0 &&
                        strcmp(nm, "UNKNOWN") != 0,
                    "code %d: name %s, text \"%s\"", e, nm ? nm : "(null)", tx ? tx : "(null)")) {
            all_ok = false;
        }
        TAP_OK(e < -4096, "code %d is below -4096", e);
    }
    TAP_IS(n, TLSK_EBASE - TLSK_ELAST - 1, "every TLSK_E* code between TLSK_EBASE and TLSK_ELAST was checked");
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            if (strcmp(names[i], names[j]) == 0 || strcmp(texts[i], texts[j]) == 0) {
                tap_diag("  codes %d and %d share a name or text: %s / %s", TLSK_EBASE - 1 - i,
                         TLSK_EBASE - 1 - j, names[i], texts[i]);
                all_ok = false;
            }
        }
    }
    TAP_OK(all_ok, "every TLSK_E* code has a distinct, non-empty name and text");
    TAP_OK(strcmp(tlsk_err_name(TLSK_ETRUNCATED), "TLSK_ETRUNCATED") == 0,
           "TLSK_ETRUNCATED is named TLSK_ETRUNCATED");
    TAP_OK(strcmp(tlsk_err_name(TLSK_EBADRECORD), "TLSK_EBADRECORD") == 0,
           "TLSK_EBADRECORD is named TLSK_EBADRECORD");

    {
        int a = TLSK_EALERT(48);
        char text[160];
        snprintf(text, sizeof text, "%s", tlsk_strerror(a));
        TAP_OK(TLSK_IS_ALERT(a), "TLSK_EALERT(48) is an alert code");
        TAP_IS(TLSK_ALERT_NUMBER(a), 48, "TLSK_ALERT_NUMBER(TLSK_EALERT(48)) == 48");
        TAP_OK(strcmp(tlsk_err_name(a), "ALERT_48") == 0, "TLSK_EALERT(48) named \"%s\"",
               tlsk_err_name(a));
        TAP_OK(text[0] && strstr(text, "48"), "TLSK_EALERT(48) text \"%s\" names the number",
               text);
        TAP_OK(strcmp(tlsk_err_name(TLSK_EALERT(20)), "ALERT_20") == 0 &&
                   strcmp(tlsk_err_name(TLSK_EALERT(0)), "ALERT_0") == 0 &&
                   strcmp(tlsk_err_name(TLSK_EALERT(255)), "ALERT_255") == 0,
               "alert names ALERT_20, ALERT_0, ALERT_255");
        for (int k = 0; k < 256; k++) {
            if (!TLSK_IS_ALERT(TLSK_EALERT(k)) || TLSK_ALERT_NUMBER(TLSK_EALERT(k)) != k) {
                TAP_OK(0, "alert %d round-trips", k);
                break;
            }
            if (k == 255) {
                TAP_OK(1, "alerts 0..255 round-trip through TLSK_EALERT/TLSK_ALERT_NUMBER");
            }
        }
        TAP_OK(!TLSK_IS_ALERT(TLSK_EALERT(256)) && !TLSK_IS_ALERT(TLSK_EALERT_BASE + 1) &&
                   !TLSK_IS_ALERT(TLSK_ETRUNCATED) && !TLSK_IS_ALERT(-EAGAIN) &&
                   !TLSK_IS_ALERT(0),
               "TLSK_IS_ALERT is false outside the alert range");
        for (int e = TLSK_EBASE; e >= TLSK_ELAST; e--) {
            if (TLSK_IS_ALERT(e)) {
                TAP_OK(0, "library code %d taken for an alert", e);
            }
        }
    }
    TAP_OK(strcmp(tlsk_err_name(-EAGAIN), "EAGAIN") == 0, "-EAGAIN named \"%s\"",
           tlsk_err_name(-EAGAIN));
    TAP_OK(strcmp(tlsk_err_name(-ECONNRESET), "ECONNRESET") == 0, "-ECONNRESET named \"%s\"",
           tlsk_err_name(-ECONNRESET));
    TAP_OK(tlsk_strerror(-EPIPE)[0] != '\0' && strcmp(tlsk_strerror(-EPIPE),
                                                       tlsk_strerror(-EAGAIN)) != 0,
           "-EPIPE text \"%s\"", tlsk_strerror(-EPIPE));
}

static void test_reason_names(void)
{
    bool ok = true;

    for (int i = 0; i < TLSK_REASON_LAST; i++) {
        const char *a = tlsk_reason_name((enum tlsk_reason)i);
        const char *t = tlsk_reason_text((enum tlsk_reason)i);
        if (!a || !a[0] || !t || !t[0] || strcmp(a, "unknown") == 0) {
            tap_diag("  reason %d: name \"%s\" text \"%s\"", i, a ? a : "(null)",
                     t ? t : "(null)");
            ok = false;
            continue;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(a, tlsk_reason_name((enum tlsk_reason)j)) == 0) {
                tap_diag("  reasons %d and %d are both \"%s\"", i, j, a);
                ok = false;
            }
        }
    }
    TAP_OK(ok, "tlsk_reason_name: %d distinct non-empty names (with texts)", TLSK_REASON_LAST);
    TAP_OK(strcmp(tlsk_reason_name(TLSK_REASON_NONE), "kernel") == 0 &&
               strcmp(tlsk_reason_name(TLSK_REASON_NO_ULP), "no_ulp") == 0 &&
               strcmp(tlsk_reason_name(TLSK_REASON_CIPHER), "cipher") == 0,
           "reason names kernel, no_ulp, cipher");
    TAP_OK(tlsk_reason_name(TLSK_REASON_LAST) != NULL &&
               tlsk_reason_name((enum tlsk_reason)-1) != NULL &&
               tlsk_reason_text(TLSK_REASON_LAST) != NULL,
           "out-of-range reasons give a string, not NULL");
}

static void test_socket_args(void)
{
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_context *ictx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT,
                                             TLSK_VERIFY_NONE_INSECURE);
    struct tlsk_context *sctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s;
    struct tlsk_socket_options so = { .servername = "localhost" };
    unsigned char garbage[64];
    int a, b, closed_fd;

    if (!TAP_OK(cctx && ictx && sctx, "socket args: contexts") ||
        !TAP_OK(h_tcp_pair(&a, &b) == 0, "socket args: tcp pair")) {
        goto out;
    }
    s = (struct tlsk_socket *)SENTINEL;
    TAP_IS(tlsk_socket_new_client(&s, cctx, a, NULL), TLSK_ECONFIG,
           "client without servername (verifying): TLSK_ECONFIG");
    TAP_OK(s == (struct tlsk_socket *)SENTINEL, "  out untouched");
    so.servername = NULL;
    TAP_IS(tlsk_socket_new_client(&s, cctx, a, &so), TLSK_ECONFIG,
           "client with options but NULL servername: TLSK_ECONFIG");
    s = NULL;
    TAP_IS(tlsk_socket_new_client(&s, ictx, a, NULL), 0,
           "client without servername, TLSK_VERIFY_NONE_INSECURE: allowed");
    tlsk_socket_free(s);
    s = NULL;
    TAP_IS(tlsk_socket_new_server(&s, sctx, b, NULL), 0, "server without options: allowed");
    tlsk_socket_free(s);

    s = (struct tlsk_socket *)SENTINEL;
    so.servername = "localhost";
    TAP_IS(tlsk_socket_new_client(&s, cctx, -1, &so), -EBADF, "client fd -1: -EBADF");
    TAP_IS(tlsk_socket_new_server(&s, sctx, -1, NULL), -EBADF, "server fd -1: -EBADF");
    closed_fd = dup(a);
    close(closed_fd);
    TAP_IS(tlsk_socket_new_client(&s, cctx, closed_fd, &so), -EBADF,
           "client on a closed fd: -EBADF");
    TAP_IS(tlsk_socket_new_server(&s, sctx, closed_fd, NULL), -EBADF,
           "server on a closed fd: -EBADF");
    TAP_OK(s == (struct tlsk_socket *)SENTINEL, "  out untouched");

    memset(garbage, 0xa5, sizeof garbage);
    so.session = garbage;
    so.session_len = sizeof garbage;
    TAP_IS(tlsk_socket_new_client(&s, cctx, a, &so), TLSK_ECONFIG,
           "garbage session bytes: TLSK_ECONFIG");
    so.session = "\x30\x03\x02\x01\x01"; /* a DER SEQUENCE that is not a session */
    so.session_len = 5;
    TAP_IS(tlsk_socket_new_client(&s, cctx, a, &so), TLSK_ECONFIG,
           "truncated DER session: TLSK_ECONFIG");
    TAP_OK(s == (struct tlsk_socket *)SENTINEL, "  out untouched");
    so.session = NULL;
    so.session_len = 0;
    so.offload = (enum tlsk_offload_policy)77;
    TAP_IS(tlsk_socket_new_client(&s, cctx, a, &so), TLSK_ECONFIG,
           "socket offload policy 77: TLSK_ECONFIG");
    close(a);
    close(b);
out:
    tlsk_context_free(cctx);
    tlsk_context_free(ictx);
    tlsk_context_free(sctx);
}

int main(void)
{
    /* Bound the whole program: a prompt or a hang anywhere must fail, not block CI. */
    alarm(h_expect_ktls() ? 300 : 120);
    test_credentials();
    test_in_memory();
    test_protocol_options();
    test_refcount();
    test_error_names();
    test_reason_names();
    test_socket_args();
    return tap_done();
}

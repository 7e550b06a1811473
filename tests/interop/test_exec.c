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
 *   E6  --ca: $TLSK_PEER_SUBJECT is the client certificate's subject, RFC 4514
 * Hostile peers (issue 10):
 *   E7  a subject whose O is "evil/CN=admin" and CN holds a control byte and a comma: each
 *       value stays in its field (CN=real\01\,x,O=evil\/CN\=admin)
 *   E8  server names with control bytes, a space, a '/': the handshake is refused, the log
 *       shows them escaped, the program never sees them
 *   E9  a client that closes TCP without close_notify: through the relay the program reads
 *       ECONNRESET (TLSK_TRUNCATION=reset), never EOF; on the kTLS socket it reads 0, which
 *       TLSK_TRUNCATION=eof documents; tlsk-exec logs the truncation in both
 *   E10 records of random bytes through the relay: the client reads bad_record_mac, then FIN
 *   E11 --help documents TLSK_TRUNCATION and the subject's format
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
#include "peers.h"
#include "tap.h"

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
        bool fdr = line[0] == 'f', out_ok = true;
        const char *tr = getenv("TLSK_TRUNCATION");
        ssize_t r;
        int e = 0;
        /* Keep reading to the end even when stdout is gone (a reset relay). */
        signal(SIGPIPE, SIG_IGN);
        for (;;) {
            r = fdr ? tlsk_fd_read(0, buf, sizeof buf) : read(0, buf, sizeof buf);
            e = errno;
            if (r <= 0) {
                break;
            }
            if (out_ok && write(1, buf, (size_t)r) != r) {
                out_ok = false;
            }
        }
        fprintf(stderr, "helper: read ended: %s (TLSK_TRUNCATION=%s)\n",
                r == 0 ? "EOF" : fdr ? tlsk_err_name((int)r) : e == EIO ? "EIO" : strerror(e),
                tr ? tr : "-");
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
    struct p_kid k;
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
    const char *argv[32] = { "tlsk-exec", "--cert", p_cert, "--key", p_key, "-l",
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
    e->port = p_start_tool(&e->k, what, argv);
    return e->port;
}

/* Whether a connection of this version gets the kTLS socket itself. */
static bool want_kernel(const struct exec_srv *e, int version)
{
    return p_ktls && !e->relay && !(e->norx && version == TLSK_TLS1_3);
}

static char *conn_line(struct exec_srv *e, unsigned long id, const char *what)
{
    char n[64];
    snprintf(n, sizeof n, "conn %lu %s", id, what);
    p_wait_log(&e->k, n, p_to);
    return p_log_line(&e->k, n);
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
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", p_ca,
                           "-verify_return_error", "-verify_hostname", "localhost",
                           "-servername", "localhost",
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet",
                           "-no_ign_eof", "-nocommands", NULL };
    unsigned char *data = malloc(n);
    struct p_buf out = { 0 };
    struct p_kid k;
    unsigned long id = ++g_cat.conns;
    int rc, st;

    snprintf(tn, sizeof tn, "E1 TLS %s cat echo through s_client, %zu bytes", vname(version),
             n);
    p_begin(tn);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", g_cat.port);
    h_pattern(17, 0, data, n);
    rc = p_kid_spawn(&k, "openssl s_client", argv, NULL, NULL, P_KID_PIPE, true);
    if (!TAP_OK(rc == 0, "%s: start s_client", tn)) {
        free(data);
        return;
    }
    rc = p_kid_io(&k, data, n, n, &out);
    st = p_kid_wait(&k, p_to);
    p_tis(rc, 0, "%s: s_client output ended", tn);
    if (!TAP_OK(out.len == n && memcmp(out.p, data, n) == 0, "%s: echo byte-exact", tn)) {
        tap_diag("  got %zu of %zu bytes", out.len, n);
        p_kid_diag(&k);
    }
    p_tis(st, 0, "%s: s_client exited 0", tn);
    check_mode(tn, &g_cat, id, version);
    char *l = conn_line(&g_cat, id, "closed:");
    if (want_kernel(&g_cat, version)) {
        /* cat read the kTLS socket itself: the client's close_notify was EIO, not EOF. */
        TAP_OK(strstr(l, "cat exited with status 1") != NULL && p_log_has(&g_cat.k,
                                                                         "Input/output error"),
               "%s: cat saw EIO at close_notify (documented) and exited 1", tn);
    } else {
        TAP_OK(strstr(l, "cat exited with status 0") && strstr(l, "client sent close_notify"),
               "%s: through the relay cat saw EOF at close_notify and exited 0", tn);
    }
    free(l);
    p_kid_free(&k);
    p_buf_free(&out);
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
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(e->port, "localhost", version, "x-test", &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    snprintf(want, sizeof want, "reply=ping cipher=%s version=%s mode=%s alpn=x-test "
             "sni=localhost\n", tlsk_socket_cipher(s), tlsk_socket_version(s),
             k ? "kernel" : "relay");
    rc = h_write_all(s, "ping\n", 5);
    rc = p_tls_read_all(s, b, sizeof b, &len);
    if (!TAP_OK(strcmp(b, want) == 0, "%s: reply carries $TLSK_CIPHER, $TLSK_VERSION, "
                "$TLSK_MODE, $TLSK_ALPN, $TLSK_SERVERNAME", tn)) {
        tap_diag("  got:  %s", b);
        tap_diag("  want: %s", want);
    }
    p_tis(rc, 0, "%s: then close_notify after the script exited (read 0, not %s)", tn,
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
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(e->port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        free(b);
        return;
    }
    rc = h_write_all(s, "sendfile\n", 9);
    rc = p_tls_read_all(s, b, cap, &len);
    if (!TAP_OK(len == g_bulk && h_pattern_check(9, 0, (unsigned char *)b, len) < 0,
                "%s: file arrived byte-exact", tn)) {
        tap_diag("  got %zu bytes", len);
    }
    p_tis(rc, 0, "%s: then close_notify (%s)", tn, tlsk_err_name(rc));
    tlsk_socket_free(s);
    check_mode(tn, e, id, version);
    free(conn_line(e, id, "closed:"));
    char *l = p_log_line(&e->k, "helper: command sendfile");
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
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(e->port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    rc = h_write_all(s, fdread ? "fdread\nabc" : "read\nabc", fdread ? 10 : 8);
    p_tis(rc, 0, "%s: sent command and data", tn);
    rc = h_shutdown(s);
    p_tis(rc, 0, "%s: sent close_notify", tn);
    rc = p_tls_read_all(s, b, sizeof b, &len);
    want = !fdread && k ? "abcend: EIO\n" : "abcend: EOF\n";
    if (!TAP_OK(strcmp(b, want) == 0, "%s: program saw %s", tn,
                !fdread && k ? "EIO (kTLS socket, control record next)" : "EOF")) {
        tap_diag("  got \"%s\"", b);
    }
    p_tis(rc, 0, "%s: then close_notify (%s)", tn, tlsk_err_name(rc));
    tlsk_socket_free(s);
    check_mode(tn, e, id, version);
    free(conn_line(e, id, "closed:"));
    alarm(0);
}

/* --ca: a client certificate is required; its subject reaches the program. */
static void e6_peer_subject(struct exec_srv *e, int version)
{
    char tn[128], portarg[32];
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", p_ca,
                           "-servername", "localhost", "-cert", p_cert, "-key", p_key,
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet", NULL };
    struct p_buf out = { 0 };
    struct p_kid k;
    int rc, st;

    snprintf(tn, sizeof tn, "E6 TLS %s --ca: $TLSK_PEER_SUBJECT", vname(version));
    p_begin(tn);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", e->port);
    ++e->conns;
    rc = p_kid_spawn(&k, "openssl s_client -cert", argv, NULL, NULL, P_KID_PIPE, true);
    if (TAP_OK(rc == 0, "%s: start s_client with a client certificate", tn)) {
        rc = p_kid_io(&k, "hi\n", 3, 0, &out);
        st = p_kid_wait(&k, p_to);
        bool ok = rc == 0 && out.len > 0 &&
                  memmem(out.p, out.len, "subject=CN=agent1,O=tlsk test\n", 30);
        if (!TAP_OK(ok, "%s: program saw subject CN=agent1,O=tlsk test (RFC 4514)", tn)) {
            tap_diag("  rc %d, status %d, %zu bytes", rc, st, out.len);
            p_kid_diag(&k);
        }
        free(conn_line(e, e->conns, "closed:"));
    }
    p_kid_free(&k);
    p_buf_free(&out);
    /* Negative: no client certificate, no program. */
    const char *argv2[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", p_ca,
                            "-servername", "localhost",
                            version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet", NULL };
    ++e->conns;
    rc = p_kid_spawn(&k, "openssl s_client (no cert)", argv2, NULL, NULL, P_KID_PIPE, true);
    if (TAP_OK(rc == 0, "%s: start s_client without a certificate", tn)) {
        out = (struct p_buf){ 0 };
        rc = p_kid_io(&k, "hi\n", 3, 0, &out);
        p_kid_wait(&k, p_to);
        TAP_OK(out.len == 0 || !memmem(out.p, out.len, "subject=", 8),
               "%s: without a certificate the program does not run", tn);
        char *l = conn_line(e, e->conns, "from");
        if (!TAP_OK(strstr(l, "handshake failed") != NULL, "%s: tlsk-exec logged the failed "
                    "handshake", tn)) {
            tap_diag("  line: %s", l);
        }
        free(l);
    }
    p_kid_free(&k);
    p_buf_free(&out);
    alarm(0);
}

/* ---------------------------------------------------------------------------------------- */
/* Issue 10: hostile peers                                                                   */

/* A tlsk client with everything in userspace (raw bytes written to its descriptor go out as
 * they are); insecure: no verification (for names no certificate carries). */
static struct tlsk_socket *dial_user(int port, const char *servername, int version,
                                     bool insecure, int *rc)
{
    struct tlsk_context_options o = { .ca_file = p_ca, .min_version = version,
                                      .max_version = version, .offload = TLSK_OFFLOAD_OFF,
                                      .flags = insecure ? TLSK_VERIFY_NONE_INSECURE : 0 };
    struct tlsk_context *c = NULL;
    struct tlsk_socket *s = NULL;
    char err[256];
    int fd;

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
        tlsk_socket_free(s);
        return NULL;
    }
    return s;
}

/* Run a command (bounded): its exit status. */
static int run_cmd(const char *what, const char *const *argv)
{
    struct p_kid k;
    int st;
    if (p_kid_spawn(&k, what, argv, NULL, NULL, P_KID_NULL, false) != 0) {
        return -1;
    }
    st = p_kid_wait(&k, p_to);
    if (st != 0) {
        p_kid_diag(&k);
    }
    p_kid_free(&k);
    return st;
}

/* E7: a client certificate whose subject tries to pose as other fields: O is
 * "evil/CN=admin", CN is "real" SOH ",x".  The old "/K=V" form showed "/O=evil/CN=admin/CN=..."
 * (a second CN); RFC 4514 escaping keeps each value inside its field. */
static char g_ca2[PATH_MAX + 32], g_ca2key[PATH_MAX + 32], g_c2[PATH_MAX + 32],
    g_c2key[PATH_MAX + 32], g_c2csr[PATH_MAX + 32];

static bool make_spoof_cert(void)
{
    snprintf(g_ca2, sizeof g_ca2, "%s/ca2.pem", p_tmp);
    snprintf(g_ca2key, sizeof g_ca2key, "%s/ca2-key.pem", p_tmp);
    snprintf(g_c2, sizeof g_c2, "%s/spoof.pem", p_tmp);
    snprintf(g_c2key, sizeof g_c2key, "%s/spoof-key.pem", p_tmp);
    snprintf(g_c2csr, sizeof g_c2csr, "%s/spoof.csr", p_tmp);
    const char *ca[] = { "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-nodes", "-keyout", g_ca2key, "-out", g_ca2,
                         "-days", "2", "-subj", "/CN=tlsk spoof test CA", "-addext",
                         "basicConstraints=critical,CA:TRUE", "-addext",
                         "keyUsage=critical,keyCertSign,cRLSign", NULL };
    const char *csr[] = { "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout", g_c2key, "-out",
                          g_c2csr, "-utf8", "-subj", "/O=evil\\/CN=admin/CN=real\x01,x", NULL };
    const char *sign[] = { "openssl", "x509", "-req", "-in", g_c2csr, "-CA", g_ca2, "-CAkey",
                           g_ca2key, "-set_serial", "7", "-days", "2", "-out", g_c2, NULL };
    return run_cmd("openssl req (CA)", ca) == 0 && run_cmd("openssl req (client)", csr) == 0 &&
           run_cmd("openssl x509 -req", sign) == 0;
}

static void e7_subject_spoof(int version)
{
    char tn[128], portarg[32];
    struct exec_srv e;
    struct p_buf out = { 0 };
    struct p_kid k;
    int rc;

    snprintf(tn, sizeof tn, "E7 TLS %s a subject that poses as other fields", vname(version));
    p_begin(tn);
    memset(&e, 0, sizeof e);
    const char *av[] = { "tlsk-exec", "--cert", p_cert, "--key", p_key, "--ca", g_ca2, "-l",
                         "127.0.0.1:0", "--", "sh", "-c",
                         "read l; printf 'subject=%s\\n' \"$TLSK_PEER_SUBJECT\"", NULL };
    e.port = p_start_tool(&e.k, "tlsk-exec --ca spoof", av);
    if (!TAP_OK(e.port > 0, "%s: tlsk-exec --ca up", tn)) {
        p_kid_free(&e.k);
        return;
    }
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", e.port);
    const char *argv[] = { "openssl", "s_client", "-connect", portarg, "-CAfile", p_ca,
                           "-servername", "localhost", "-cert", g_c2, "-key", g_c2key,
                           version == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-quiet", NULL };
    rc = p_kid_spawn(&k, "openssl s_client -cert spoof", argv, NULL, NULL, P_KID_PIPE, true);
    if (TAP_OK(rc == 0, "%s: start s_client with the certificate", tn)) {
        rc = p_kid_io(&k, "hi\n", 3, 0, &out);
        p_kid_wait(&k, p_to);
        static const char want[] = "subject=CN=real\\01\\,x,O=evil\\/CN\\=admin\n";
        bool ok = rc == 0 && out.len > 0 && memmem(out.p, out.len, want, sizeof want - 1);
        if (!TAP_OK(ok, "%s: TLSK_PEER_SUBJECT is CN=real\\01\\,x,O=evil\\/CN\\=admin", tn)) {
            tap_diag("  got: %.*s", (int)out.len, out.p ? (const char *)out.p : "");
        }
        TAP_OK(!out.p || !memmem(out.p, out.len, "/CN=admin", 9) ||
                   memmem(out.p, out.len, "\\/CN\\=admin", 11),
               "%s: no unescaped \"/CN=admin\" field", tn);
        free(conn_line(&e, 1, "closed:"));
    }
    p_kid_free(&k);
    p_buf_free(&out);
    p_kid_free(&e.k);
    alarm(0);
}

/* E8: server names with control bytes, a space, a '/': the handshake is refused, the log
 * shows the name escaped, the program never runs with it. */
static void e8_hostile_sni(struct exec_srv *e)
{
    static const char *names[] = { "evil\x1b]0;pwned\x07.example", "a b", "x/y" };
    char tn[] = "E8 hostile server names", b[256];
    int rc;

    p_begin(tn);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        unsigned long id = ++e->conns;
        struct tlsk_socket *s = dial_user(e->port, names[i], TLSK_TLS1_3, true, &rc);
        if (!TAP_OK(s == NULL, "%s: name %zu: handshake refused (%s)", tn, i,
                    tlsk_err_name(rc))) {
            size_t len;
            h_write_all(s, "ping\n", 5);
            p_tls_read_all(s, b, sizeof b, &len);
            tap_diag("  program answered: %s", b);
            tlsk_socket_free(s);
        }
        char *l = conn_line(e, id, "from");
        bool escaped = i != 0 || strstr(l, "evil\\x1b]0;pwned\\x07.example") != NULL;
        if (!TAP_OK(strstr(l, "handshake refused: server name") && escaped,
                    "%s: name %zu: logged as refused%s", tn, i,
                    i == 0 ? ", control bytes written \\xNN" : "")) {
            tap_diag("  line: %s", l);
        }
        free(l);
    }
    char *log = p_kid_log(&e->k);
    TAP_OK(log && !strchr(log, '\x1b') && !strchr(log, '\x07'),
           "%s: no raw control byte anywhere in the log", tn);
    free(log);
    alarm(0);
}

/* E9: the client closes TCP without close_notify after "abc". */
static void e9_truncation(struct exec_srv *e, const char *label, int version)
{
    char tn[160], b[256], want[96];
    size_t len;
    int rc;
    unsigned long id = ++e->conns;
    bool k = want_kernel(e, version);

    snprintf(tn, sizeof tn, "E9 TLS %s client truncates (FIN without close_notify)%s",
             vname(version), label);
    p_begin(tn);
    struct tlsk_socket *s = p_tls_dial(e->port, "localhost", version, NULL, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    rc = h_write_all(s, "read\nabc", 8);
    p_tis(rc, 0, "%s: sent command and data", tn);
    usleep(100000);
    shutdown(tlsk_socket_fd(s), SHUT_WR);
    rc = p_tls_read_all(s, b, sizeof b, &len);
    tlsk_socket_free(s);
    snprintf(want, sizeof want, "helper: read ended: %s (TLSK_TRUNCATION=%s)",
             k ? "EOF" : "Connection reset by peer", k ? "eof" : "reset");
    if (!TAP_OK(p_wait_log(&e->k, want, p_to), "%s: %s", tn, want)) {
        char *l = p_log_line(&e->k, "helper: read ended");
        tap_diag("  got: %s", l);
        free(l);
    }
    char *l = conn_line(e, id, "closed:");
    if (!TAP_OK(strstr(l, "client closed without close_notify (truncated)") != NULL,
                "%s: tlsk-exec logged the truncation", tn)) {
        tap_diag("  line: %s", l);
    }
    if (!k) {
        TAP_OK(strstr(l, "program's stdin reset") != NULL, "%s: ... and the reset", tn);
    }
    free(l);
    alarm(0);
}

/* E10: records of random bytes after the handshake, through the relay: the client reads the
 * fatal alert, then FIN (lingering close), not a reset. */
static void e10_garbage(struct exec_srv *e, int version)
{
    char tn[128];
    unsigned char rec[5 + 64], b[4096];
    int rc;
    ssize_t n;
    unsigned long id = ++e->conns;

    snprintf(tn, sizeof tn, "E10 TLS %s garbage records after the handshake (--relay)",
             vname(version));
    p_begin(tn);
    struct tlsk_socket *s = dial_user(e->port, "localhost", version, false, &rc);
    if (!TAP_OK(s != NULL, "%s: handshake", tn)) {
        return;
    }
    int fd = tlsk_socket_fd(s);
    for (int i = 0; i < 8; i++) {
        rec[0] = 23;
        rec[1] = 3;
        rec[2] = 3;
        rec[3] = 0;
        rec[4] = 64;
        h_pattern(78, (uint64_t)i * 64, rec + 5, 64);
        if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec) {
            break;
        }
    }
    do {
        n = h_read_some(s, b, sizeof b);
    } while (n > 0);
    TAP_OK(TLSK_IS_ALERT(n) && TLSK_ALERT_NUMBER(n) == 20,
           "%s: the client reads the alert bad_record_mac (%s)", tn, tlsk_err_name((int)n));
    const char *end = "nothing";
    long long until = p_now_ms() + p_to;
    while (p_now_ms() < until) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 200) <= 0) {
            continue;
        }
        n = read(fd, b, sizeof b);
        if (n == 0) {
            end = "FIN";
            break;
        }
        if (n < 0 && errno != EAGAIN) {
            end = strerror(errno);
            break;
        }
    }
    TAP_OK(strcmp(end, "FIN") == 0, "%s: then FIN, not a reset (%s)", tn, end);
    tlsk_socket_free(s);
    free(conn_line(e, id, "closed:"));
    alarm(0);
}

static void e11_help(void)
{
    char exe[sizeof p_tools + 16], *log;
    struct p_kid k;
    const char *argv[] = { exe, "--help", NULL };

    p_begin("E11 --help");
    snprintf(exe, sizeof exe, "%s/tlsk-exec", p_tools);
    if (!TAP_OK(p_kid_spawn(&k, "tlsk-exec --help", argv, NULL, NULL, P_KID_NULL, false) == 0,
                "E11: run --help")) {
        return;
    }
    p_tis(p_kid_wait(&k, p_to), 0, "E11: --help exits 0");
    log = p_kid_log(&k);
    TAP_OK(log && strstr(log, "TLSK_TRUNCATION") && strstr(log, "read() = 0: here 0 is NOT a"),
           "E11: --help says how a truncation shows (TLSK_TRUNCATION; 0 in kernel mode)");
    TAP_OK(log && strstr(log, "RFC 4514"), "E11: --help names the subject's format");
    free(log);
    p_kid_free(&k);
    alarm(0);
}

static void cleanup_tmp(void)
{
    const char *f[] = { g_file, g_ca2, g_ca2key, g_c2, g_c2key, g_c2csr };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i][0]) {
            unlink(f[i]);
        }
    }
    rmdir(p_tmp);
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
    p_t0 = p_now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = p_on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    p_ktls = h_expect_ktls();
    p_to = p_ktls ? 60000 : 20000;
    p_case_secs = p_ktls ? 300 : 60;
    g_bulk = h_bulk_bytes(4);
    p_ca = strdup(h_fixture("ca1-cert.pem"));
    p_cert = strdup(h_fixture("agent1-cert.pem"));
    p_key = strdup(h_fixture("agent1-key.pem"));
    p_tools_dir();
    sl = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    g_self[sl > 0 ? sl : 0] = '\0';

    tap_diag("kernel %s, tls ULP %s, bulk %zu bytes, %s tier, tools in %s", caps->release,
             caps->ulp ? "yes" : "no", g_bulk, p_ktls ? "kTLS" : "native", p_tools);
    if (p_ktls && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    {
        char exe[PATH_MAX], tool[sizeof p_tools + 16];
        if (!TAP_OK(p_find_exe("openssl", exe, sizeof exe), "peer openssl is installed")) {
            return tap_done();
        }
        snprintf(tool, sizeof tool, "%s/tlsk-exec", p_tools);
        if (!TAP_OK(access(tool, X_OK) == 0, "%s is built", tool)) {
            return tap_done();
        }
    }
    snprintf(p_tmp, sizeof p_tmp, "%s/tlsk-exec-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(p_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_file, sizeof g_file, "%s/file.bin", p_tmp);
    if (!TAP_OK(p_write_pattern_file(g_file, 9, g_bulk) == 0, "scratch file %s", g_file)) {
        cleanup_tmp();
        return tap_done();
    }

    p_begin("start tlsk-exec instances");
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
        const char *av[] = { "tlsk-exec", "--cert", p_cert, "--key", p_key, "--ca", p_ca,
                             "-l", "127.0.0.1:0", "--", subj[0], subj[1], subj[2], NULL };
        memset(&g_ca_sh, 0, sizeof g_ca_sh);
        g_ca_sh.port = p_start_tool(&g_ca_sh.k, "tlsk-exec --ca", av);
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
        e9_truncation(&g_help, "", ver);
        e9_truncation(&g_help_relay, " (--relay)", ver);
        e10_garbage(&g_help_relay, ver);
    }
    bool spoof = make_spoof_cert();
    TAP_OK(spoof, "made a CA and a client certificate with a hostile subject");
    for (size_t v = 0; spoof && v < 2; v++) {
        e7_subject_spoof(versions[v]);
    }
    e8_hostile_sni(&g_sh);
    e11_help();
out:
    {
        struct exec_srv *all[] = { &g_cat,        &g_sh,      &g_help,
                                   &g_help_relay, &g_sh_norx, &g_ca_sh };
        for (size_t i = 0; i < 6; i++) {
            if (tap_failed) {
                p_kid_diag(&all[i]->k);
            }
            p_kid_free(&all[i]->k);
        }
    }
    cleanup_tmp();
    tap_diag("elapsed %.1f s", (double)(p_now_ms() - p_t0) / 1000.0);
    return tap_done();
}

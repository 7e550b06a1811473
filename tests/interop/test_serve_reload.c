/*
 * test_serve_reload.c - tlsk-serve's reload (issue 13 item 2) and fleet ticket keys (item 5),
 * end to end with the real tool and real clients (openssl s_client, tlsk's own client):
 *  R1 certificate renewal mid-download: a 32 MiB download with a slow reader is in flight
 *     while cert.pem/key.pem are replaced by another certificate and SIGHUP is sent; the log
 *     says reloaded, a new connection sees the new certificate, the download (still on the
 *     old one) completes byte-exact;
 *  R2 bad files on SIGHUP (garbage certificate, key of another certificate, missing key,
 *     garbage client CA file): the log names the file and the reason, new connections still
 *     get the last good certificate, the server stays up, a good reload works after them;
 *  T1 two instances with the same --ticket-key-file: TLS 1.3 and TLS 1.2 tickets from A
 *     resume on B; an instance with other keys does not resume them (full handshake); an
 *     instance without a key file keeps its key across a reload;
 *  T2 rotation on both instances: append the next key (change detection), move it to the
 *     front (SIGHUP), drop the oldest (change detection); a ticket under the old key resumes
 *     everywhere while the key is in the file and falls back to a full handshake after it is
 *     dropped; a ticket under the new key resumes everywhere;
 *  T3 bad key files (47 bytes, empty; by change detection and by SIGHUP) are refused with a
 *     log line and the old keys keep working.
 * Native tier (no kTLS needed; with kTLS the same assertions hold).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "peers.h"
#include "tap.h"

static char g_www[PATH_MAX], g_cert[PATH_MAX], g_key[PATH_MAX], g_ca[PATH_MAX], g_tk[PATH_MAX];
static unsigned char *g_big;
static size_t g_big_len;

/* Replace path's contents atomically (temp file + rename), as an operator should. */
static int put_file(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    if (p_write_file(tmp, data, len) != 0) {
        return -1;
    }
    return rename(tmp, path) == 0 ? 0 : -1;
}

static int copy_fixture(const char *name, const char *to)
{
    FILE *f = fopen(h_fixture(name), "rb");
    char buf[16384];
    size_t n;
    if (!f) {
        return -1;
    }
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n > 0 ? put_file(to, buf, n) : -1;
}

/* Until needle occurs at least n times in k's log (bounded). */
static bool wait_count(struct p_kid *k, const char *needle, int n)
{
    long long end = p_now_ms() + p_to;
    for (;;) {
        char *log = p_kid_log(k);
        int c = log ? p_count(log, needle) : 0;
        free(log);
        if (c >= n) {
            return true;
        }
        if (p_now_ms() > end || !p_kid_alive(k)) {
            tap_diag("  %s: %d of %d \"%s\" lines", k->what, c, n, needle);
            p_kid_diag(k);
            return false;
        }
        usleep(20000);
    }
}

static int count_log(struct p_kid *k, const char *needle)
{
    char *log = p_kid_log(k);
    int c = log ? p_count(log, needle) : 0;
    free(log);
    return c;
}

/* openssl s_client against port, one small GET with Connection: close (so the TLS 1.3
 * tickets have arrived before the client leaves); extra: more arguments.  Its stdout,
 * malloc'd, or NULL. */
static char *s_client(int port, const char *const *extra)
{
    static const char req[] = "GET /small.txt HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    const char *argv[24] = { "openssl", "s_client", "-connect", NULL, "-servername", "localhost",
                             "-ign_eof" };
    char addr[64];
    struct p_kid k = { 0 };
    struct p_buf out = { 0 };
    int n = 7, rc;
    char *s = NULL;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    argv[3] = addr;
    for (int i = 0; extra && extra[i] && n < 22; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    if (p_kid_spawn(&k, "s_client", argv, NULL, NULL, P_KID_PIPE, true) != 0) {
        return NULL;
    }
    rc = p_kid_io(&k, req, sizeof req - 1, 0, &out);
    if (p_kid_wait(&k, p_to) == 0 && rc == 0) {
        s = malloc(out.len + 1);
        if (s) {
            memcpy(s, out.p ? (char *)out.p : "", out.len);
            s[out.len] = '\0';
        }
    } else {
        tap_diag("  s_client to %d: rc %d, status %d", port, rc, k.status);
        p_kid_diag(&k);
    }
    p_buf_free(&out);
    p_kid_free(&k);
    return s;
}

/* The subject CN the server presents ("agent1"...), in cn (empty on failure). */
static void peer_cn(int port, char *cn, size_t len)
{
    char *out = s_client(port, NULL), *p;
    cn[0] = '\0';
    if (out && (p = strstr(out, "subject=")) && (p = strstr(p, "CN = "))) {
        snprintf(cn, len, "%.*s", (int)strcspn(p + 5, "\r\n,"), p + 5);
    }
    free(out);
}

/* s_client with -sess_out: 0 when a session was saved. */
static int get_ticket(int port, const char *vflag, const char *file)
{
    const char *extra[] = { vflag, "-sess_out", file, NULL };
    char *out;
    struct stat st;

    unlink(file);
    out = s_client(port, extra);
    free(out);
    return out && stat(file, &st) == 0 && st.st_size > 0 ? 0 : -1;
}

/* s_client with -sess_in: 1 resumed, 0 full handshake (that completed), -1 failure. */
static int resumes(int port, const char *vflag, const char *file)
{
    const char *extra[] = { vflag, "-sess_in", file, NULL };
    char *out = s_client(port, extra);
    int r = -1;

    if (out && strstr(out, "HTTP/1.1 200")) {
        r = strstr(out, "\nReused, ") ? 1 : strstr(out, "\nNew, ") ? 0 : -1;
    }
    free(out);
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* R1, R2: certificates                                                                     */

static struct tlsk_socket *start_download(int port, size_t *body_off, char *head, size_t cap)
{
    static const char req[] = "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    struct tlsk_socket *s;
    size_t len = 0;
    int rc;

    s = p_tls_dial(port, "localhost", 0, NULL, &rc);
    if (!s || h_write_all(s, req, sizeof req - 1) != 0) {
        tlsk_socket_free(s);
        return NULL;
    }
    /* The head, and whatever of the body came with it. */
    while (len < cap - 1) {
        ssize_t n = h_read_some(s, head + len, cap - 1 - len);
        char *e;
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        head[len] = '\0';
        if ((e = memmem(head, len, "\r\n\r\n", 4))) {
            *body_off = len - (size_t)(e + 4 - head);
            return s;
        }
    }
    tlsk_socket_free(s);
    return NULL;
}

/* Read the rest of the body, comparing with g_big from offset got; the number of bytes
 * that matched in total (g_big_len when complete and byte-exact). */
static size_t finish_download(struct tlsk_socket *s, const char *first, size_t got)
{
    static char buf[1 << 16];
    size_t ok = got <= g_big_len && memcmp(first, g_big, got) == 0 ? got : 0;

    if (ok != got) {
        return 0;
    }
    while (ok < g_big_len) {
        ssize_t n = h_read_some(s, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        if (ok + (size_t)n > g_big_len || memcmp(buf, g_big + ok, (size_t)n) != 0) {
            tap_diag("  body differs near offset %zu", ok);
            return ok;
        }
        ok += (size_t)n;
    }
    return ok;
}

static void test_certs(void)
{
    const char *tn = "R1 renewal mid-download";
    const char *argv[] = { "tlsk-serve", "--cert", g_cert, "--key", g_key, "--root", g_www,
                           "--client-ca", g_ca, "--listen", "127.0.0.1:0", "--workers", "2",
                           NULL };
    struct p_kid k = { 0 };
    char cn[128], head[65536], line[64];
    size_t body0 = 0, done;
    struct tlsk_socket *dl;
    int port;

    p_begin(tn);
    if (!TAP_OK(copy_fixture("agent1-cert.pem", g_cert) == 0 &&
                    copy_fixture("agent1-key.pem", g_key) == 0 &&
                    copy_fixture("ca1-cert.pem", g_ca) == 0,
                "%s: cert A (agent1) in place", tn)) {
        return;
    }
    port = p_start_tool(&k, "tlsk-serve", argv);
    if (!TAP_OK(port > 0, "%s: tlsk-serve started (port %d)", tn, port)) {
        p_kid_free(&k);
        return;
    }
    peer_cn(port, cn, sizeof cn);
    p_tis(strcmp(cn, "agent1"), 0, "%s: before: s_client sees CN agent1 (%s)", tn, cn);

    dl = start_download(port, &body0, head, sizeof head);
    if (!TAP_OK(dl != NULL && strstr(head, "HTTP/1.1 200"), "%s: download started", tn)) {
        tlsk_socket_free(dl);
        p_kid_free(&k);
        return;
    }
    /* The slow reader: nothing more read until after the reload. */
    TAP_OK(copy_fixture("agent2-cert.pem", g_cert) == 0 &&
               copy_fixture("agent2-key.pem", g_key) == 0,
           "%s: cert B (agent2) written over the files", tn);
    kill(k.pid, SIGHUP);
    TAP_OK(wait_count(&k, "SIGHUP: reloaded", 1), "%s: log says reloaded", tn);
    peer_cn(port, cn, sizeof cn);
    p_tis(strcmp(cn, "agent2"), 0, "%s: after SIGHUP: a new connection sees CN agent2 (%s)",
          tn, cn);
    TAP_OK(!p_log_has(&k, "GET /big.bin"),
           "%s: the download was still in flight during the reload (not logged yet)", tn);
    {
        char *e = strstr(head, "\r\n\r\n") + 4;
        done = finish_download(dl, e, body0);
    }
    p_tis((long long)done, (long long)g_big_len,
          "%s: the download in flight completed byte-exact (%zu bytes)", tn, g_big_len);
    tlsk_socket_free(dl);
    snprintf(line, sizeof line, "\"GET /big.bin HTTP/1.1\" 200 %zu", g_big_len);
    TAP_OK(wait_count(&k, line, 1), "%s: access log: the whole body sent", tn);

    /* R2: bad files.  Each: the reload is refused with one line naming the file and why. */
    static const struct {
        const char *what, *cert, *key, *ca, *want_file_of, *reason;
    } bad[] = {
        { "garbage certificate", "-garbage", "agent2-key.pem", "ca1-cert.pem", "cert",
          "no PEM certificate" },
        { "key of another certificate", "agent2-cert.pem", "agent1-key.pem", "ca1-cert.pem",
          "key", "does not match" },
        { "missing key file", "agent2-cert.pem", NULL, "ca1-cert.pem", "key", "cannot" },
        { "garbage client CA file", "agent2-cert.pem", "agent2-key.pem", "-garbage", "ca",
          "ca:" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = strcmp(bad[i].want_file_of, "cert") == 0  ? g_cert
                           : strcmp(bad[i].want_file_of, "key") == 0 ? g_key
                                                                     : g_ca;
        char *l;
        int ok = 1;
        tn = "R2 bad file on SIGHUP";
        p_begin(tn);
        ok &= bad[i].cert[0] == '-' ? put_file(g_cert, "garbage\n", 8) == 0
                                    : copy_fixture(bad[i].cert, g_cert) == 0;
        ok &= bad[i].key ? copy_fixture(bad[i].key, g_key) == 0
                         : (unlink(g_key) == 0 || errno == ENOENT);
        ok &= bad[i].ca[0] == '-' ? put_file(g_ca, "-----BEGIN CERTIFICATE-----\nxx\n", 31) == 0
                                  : copy_fixture(bad[i].ca, g_ca) == 0;
        TAP_OK(ok, "%s: %s written", tn, bad[i].what);
        kill(k.pid, SIGHUP);
        if (!TAP_OK(wait_count(&k, "SIGHUP: reload failed, keeping the old configuration",
                               (int)i + 1),
                    "%s: %s: reload refused", tn, bad[i].what)) {
            continue;
        }
        l = p_log_line(&k, "SIGHUP: reload failed");
        /* p_log_line gives the first such line; the newest is the i-th: search from the end. */
        {
            char *log = p_kid_log(&k), *p = log, *last = NULL;
            while (p && (p = strstr(p, "SIGHUP: reload failed"))) {
                last = p++;
            }
            free(l);
            l = last ? strndup(last, strcspn(last, "\n")) : NULL;
            free(log);
        }
        TAP_OK(l && strstr(l, path) && strstr(l, bad[i].reason),
               "%s: %s: the line names %s and says why (%s)", tn, bad[i].what, path,
               l ? l : "(none)");
        free(l);
        peer_cn(port, cn, sizeof cn);
        p_tis(strcmp(cn, "agent2"), 0, "%s: %s: new connections still get CN agent2 (%s)", tn,
              bad[i].what, cn);
        TAP_OK(p_kid_alive(&k), "%s: %s: server alive", tn, bad[i].what);
    }
    /* And a good one after them all. */
    TAP_OK(copy_fixture("agent1-cert.pem", g_cert) == 0 &&
               copy_fixture("agent1-key.pem", g_key) == 0 &&
               copy_fixture("ca1-cert.pem", g_ca) == 0,
           "R2: good files back");
    kill(k.pid, SIGHUP);
    TAP_OK(wait_count(&k, "SIGHUP: reloaded", 2), "R2: the next good reload is taken");
    peer_cn(port, cn, sizeof cn);
    p_tis(strcmp(cn, "agent1"), 0, "R2: and new connections see CN agent1 again (%s)", cn);
    p_tis(p_kid_stop(&k), 0, "R1/R2: tlsk-serve exits 0 on SIGTERM");
    p_kid_free(&k);
}

/* ---------------------------------------------------------------------------------------- */
/* T1-T3: ticket keys across instances                                                       */

/* Members of a fleet do not share a command line (here: the worker count differs), so
 * nothing that identifies their sessions may come from it. */
static int start_serve(struct p_kid *k, const char *what, const char *tk, const char *workers)
{
    const char *argv[] = { "tlsk-serve", "--cert", h_fixture("agent1-cert.pem"), "--key",
                           h_fixture("agent1-key.pem"), "--root", g_www, "--listen",
                           "127.0.0.1:0", "--workers", workers, tk ? "--ticket-key-file" : NULL,
                           tk, NULL };
    char *cert = strdup(argv[2]), *key = strdup(argv[4]);
    int port;
    argv[2] = cert;
    argv[4] = key;
    port = p_start_tool(k, what, argv);
    free(cert);
    free(key);
    return port;
}

static void test_tickets(void)
{
    static const char *const vflags[] = { "-tls1_3", "-tls1_2" };
    unsigned char k1[48], k2[48], both[96];
    struct p_kid a = { 0 }, b = { 0 }, c = { 0 };
    char t1[2][PATH_MAX + 8], t2[2][PATH_MAX + 8];
    const char *tn = "T1 shared ticket key file";
    char needle[PATH_MAX + 64];
    int pa, pb, pc;

    p_begin(tn);
    for (int i = 0; i < 48; i++) {
        k1[i] = (unsigned char)(i * 7 + 1);
        k2[i] = (unsigned char)(i * 11 + 5);
    }
    for (int v = 0; v < 2; v++) {
        snprintf(t1[v], sizeof t1[v], "%s/t1%s.pem", p_tmp, vflags[v]);
        snprintf(t2[v], sizeof t2[v], "%s/t2%s.pem", p_tmp, vflags[v]);
    }
    TAP_OK(put_file(g_tk, k1, 48) == 0, "%s: key file [K1]", tn);
    pa = start_serve(&a, "tlsk-serve A", g_tk, "2");
    pb = start_serve(&b, "tlsk-serve B", g_tk, "1");
    pc = start_serve(&c, "tlsk-serve C (own keys)", NULL, "2");
    if (!TAP_OK(pa > 0 && pb > 0 && pc > 0, "%s: instances A, B and C started", tn)) {
        goto out;
    }
    TAP_OK(p_log_has(&a, "ticket keys from ") && p_log_has(&a, ": 1 key"),
           "%s: A's startup says 1 ticket key", tn);
    for (int v = 0; v < 2; v++) {
        const char *vf = vflags[v];
        if (!TAP_OK(get_ticket(pa, vf, t1[v]) == 0, "%s %s: ticket T1 from A", tn, vf)) {
            continue;
        }
        p_tis(resumes(pb, vf, t1[v]), 1, "%s %s: T1 from A resumes on B", tn, vf);
        p_tis(resumes(pa, vf, t1[v]), 1, "%s %s: T1 from A resumes on A", tn, vf);
        p_tis(resumes(pc, vf, t1[v]), 0,
              "%s %s: T1 does not resume on C (other keys): full handshake", tn, vf);
    }

    /* Without a key file a host keeps its (random) key across a reload: C's own tickets
     * still resume on C after SIGHUP, although the reload built new contexts. */
    for (int v = 0; v < 2; v++) {
        char tc[PATH_MAX + 16];
        snprintf(tc, sizeof tc, "%s/tc%s.pem", p_tmp, vflags[v]);
        if (TAP_OK(get_ticket(pc, vflags[v], tc) == 0, "%s %s: ticket from C", tn, vflags[v])) {
            kill(c.pid, SIGHUP);
            TAP_OK(wait_count(&c, "SIGHUP: reloaded", v + 1), "%s %s: C reloaded", tn, vflags[v]);
            p_tis(resumes(pc, vflags[v], tc), 1,
                  "%s %s: without --ticket-key-file, C's ticket resumes on C after a reload", tn,
                  vflags[v]);
        }
    }

    /* T2 1: append K2 (change detection). */
    tn = "T2 rotation";
    p_begin(tn);
    memcpy(both, k1, 48);
    memcpy(both + 48, k2, 48);
    TAP_OK(put_file(g_tk, both, 96) == 0, "%s: step 1, append: [K1, K2]", tn);
    snprintf(needle, sizeof needle, "ticket keys reloaded from %s: 2 keys\n", g_tk);
    TAP_OK(wait_count(&a, needle, 1) && wait_count(&b, needle, 1),
           "%s: step 1: A and B noticed the change (2 keys)", tn);
    for (int v = 0; v < 2; v++) {
        p_tis(resumes(pb, vflags[v], t1[v]), 1, "%s %s: step 1: T1 resumes on B", tn,
              vflags[v]);
    }

    /* T2 2: move K2 to the front (SIGHUP this time). */
    memcpy(both, k2, 48);
    memcpy(both + 48, k1, 48);
    TAP_OK(put_file(g_tk, both, 96) == 0, "%s: step 2, move to front: [K2, K1]", tn);
    kill(a.pid, SIGHUP);
    kill(b.pid, SIGHUP);
    TAP_OK(wait_count(&a, "SIGHUP: reloaded", 1) && wait_count(&b, "SIGHUP: reloaded", 1),
           "%s: step 2: A and B reloaded on SIGHUP", tn);
    for (int v = 0; v < 2; v++) {
        const char *vf = vflags[v];
        p_tis(resumes(pa, vf, t1[v]), 1, "%s %s: step 2: T1 (K1) still resumes on A", tn, vf);
        p_tis(resumes(pb, vf, t1[v]), 1, "%s %s: step 2: T1 (K1) still resumes on B", tn, vf);
        if (TAP_OK(get_ticket(pa, vf, t2[v]) == 0, "%s %s: step 2: ticket T2 from A", tn, vf)) {
            p_tis(resumes(pb, vf, t2[v]), 1, "%s %s: step 2: T2 (K2) resumes on B", tn, vf);
        }
    }

    /* T2 3: drop K1 (change detection). */
    TAP_OK(put_file(g_tk, k2, 48) == 0, "%s: step 3, drop the oldest: [K2]", tn);
    snprintf(needle, sizeof needle, "ticket keys reloaded from %s: 1 key\n", g_tk);
    TAP_OK(wait_count(&a, needle, 1) && wait_count(&b, needle, 1),
           "%s: step 3: A and B noticed the change (1 key)", tn);
    for (int v = 0; v < 2; v++) {
        const char *vf = vflags[v];
        p_tis(resumes(pa, vf, t1[v]), 0, "%s %s: step 3: T1 (K1 dropped): full handshake on A",
              tn, vf);
        p_tis(resumes(pb, vf, t1[v]), 0, "%s %s: step 3: T1 (K1 dropped): full handshake on B",
              tn, vf);
        p_tis(resumes(pa, vf, t2[v]), 1, "%s %s: step 3: T2 (K2) resumes on A", tn, vf);
        p_tis(resumes(pb, vf, t2[v]), 1, "%s %s: step 3: T2 (K2) resumes on B", tn, vf);
    }

    /* T3: bad key files. */
    tn = "T3 bad key files";
    p_begin(tn);
    TAP_OK(put_file(g_tk, both, 47) == 0, "%s: 47-byte key file written", tn);
    TAP_OK(wait_count(&a, "47 bytes; wants 1 to 64 keys of 48 bytes", 1) &&
               wait_count(&b, "47 bytes; wants 1 to 64 keys of 48 bytes", 1),
           "%s: A and B refused it with a reason", tn);
    TAP_OK(p_log_has(&a, "keeping the 1 current key"), "%s: A says it keeps the current key",
           tn);
    kill(a.pid, SIGHUP);
    TAP_OK(wait_count(&a, "SIGHUP: reload failed, keeping the old configuration: ticket key "
                          "file ",
                      1),
           "%s: SIGHUP with the 47-byte file: reload refused, naming the key file", tn);
    TAP_OK(put_file(g_tk, "", 0) == 0, "%s: empty key file written", tn);
    TAP_OK(wait_count(&a, "0 bytes; wants", 1) && wait_count(&b, "0 bytes; wants", 1),
           "%s: A and B refused the empty file", tn);
    for (int v = 0; v < 2; v++) {
        const char *vf = vflags[v];
        p_tis(resumes(pa, vf, t2[v]), 1, "%s %s: T2 still resumes on A", tn, vf);
        p_tis(resumes(pb, vf, t2[v]), 1, "%s %s: T2 still resumes on B", tn, vf);
    }
    p_tis(count_log(&a, "ticket keys reloaded from "), 2,
          "%s: no key change taken from the bad files (A)", tn);
    TAP_OK(p_kid_alive(&a) && p_kid_alive(&b), "%s: A and B alive", tn);
    p_tis(p_kid_stop(&a), 0, "T: A exits 0 on SIGTERM");
    p_tis(p_kid_stop(&b), 0, "T: B exits 0 on SIGTERM");
out:
    p_kid_free(&a);
    p_kid_free(&b);
    p_kid_free(&c);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(path);
}

int main(void)
{
    const char *td = getenv("TMPDIR");
    char small[PATH_MAX + 16], big[PATH_MAX + 16], exe[PATH_MAX], tool[sizeof p_tools + 16];
    struct sigaction sa;

    p_t0 = p_now_ms();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = p_on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    p_ktls = h_expect_ktls();
    p_to = p_ktls ? 60000 : 20000;
    p_case_secs = p_ktls ? 600 : 120;
    p_ca = strdup(h_fixture("ca1-cert.pem"));
    p_cert = strdup(h_fixture("agent1-cert.pem"));
    p_key = strdup(h_fixture("agent1-key.pem"));
    p_tools_dir();
    /* Larger than any socket buffers, so the download is surely in flight at the reload. */
    g_big_len = h_bulk_bytes(32);
    if (g_big_len < (16u << 20)) {
        g_big_len = 16u << 20;
    }
    if (!TAP_OK(p_find_exe("openssl", exe, sizeof exe), "peer openssl is installed")) {
        return tap_done();
    }
    snprintf(tool, sizeof tool, "%s/tlsk-serve", p_tools);
    if (!TAP_OK(access(tool, X_OK) == 0, "%s is built", tool)) {
        return tap_done();
    }
    snprintf(p_tmp, sizeof p_tmp, "%s/tlsk-reload-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(p_tmp)) {
        tap_bail("mkdtemp failed");
    }
    snprintf(g_www, sizeof g_www, "%s/www", p_tmp);
    snprintf(g_cert, sizeof g_cert, "%s/cert.pem", p_tmp);
    snprintf(g_key, sizeof g_key, "%s/key.pem", p_tmp);
    snprintf(g_ca, sizeof g_ca, "%s/client-ca.pem", p_tmp);
    snprintf(g_tk, sizeof g_tk, "%s/ticket.keys", p_tmp);
    snprintf(small, sizeof small, "%s/small.txt", g_www);
    snprintf(big, sizeof big, "%s/big.bin", g_www);
    g_big = malloc(g_big_len);
    if (TAP_OK(g_big && mkdir(g_www, 0755) == 0 && p_write_file(small, "hello\n", 6) == 0 &&
                   p_write_pattern_file(big, 13, g_big_len) == 0,
               "scratch files in %s", p_tmp)) {
        FILE *f = fopen(big, "rb");
        if (TAP_OK(f && fread(g_big, 1, g_big_len, f) == g_big_len, "read back big.bin")) {
            test_certs();
            test_tickets();
        }
        if (f) {
            fclose(f);
        }
    }
    free(g_big);
    nftw(p_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}

/*
 * test_peer.c - connection information: tlsk_socket_peer_certificate() (Node's
 * getPeerCertificate, PC-1/PC-2: names, subjectaltname, dates, fingerprints and serial as
 * `openssl x509` prints them, the chain on both sides, resumed sessions), get_cipher (CI-1,
 * CI-2), tlsk_get_ciphers() (GC-1..GC-3) and tlsk_socket_address() (AD-1 over IPv4 after a
 * handshake; AD-3 a unix socket with a long path, which tlsk keeps only the family of:
 * -EAFNOSUPPORT).
 *
 * Runs in both tiers; with TLSK_EXPECT_KTLS=1 the connections must also be offloaded, so the
 * information is checked on kTLS sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "harness.h"
#include "tap.h"

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

/* Fixture paths, copied once: h_fixture() reuses a few static buffers. */
static char agent1_cert[512], agent1_key[512], ca1_cert[512];

struct side {
    struct tlsk_context *ctx;
    struct tlsk_socket *s;
    int fd;
    bool server;
    const void *session;
    size_t session_len;
    int rc;
};

static void *hs_thread(void *arg)
{
    struct side *p = arg;
    p->rc = h_handshake(p->s);
    return NULL;
}

/* Create both sockets (so the caller can look at them before the handshake). */
static int pair_new(struct side *sv, struct side *cl)
{
    struct tlsk_socket_options o = { .servername = "localhost", .session = cl->session,
                                     .session_len = cl->session_len };
    int rc;

    sv->server = true;
    sv->s = cl->s = NULL;
    sv->fd = cl->fd = -1;
    if ((rc = h_tcp_pair(&cl->fd, &sv->fd)) != 0) {
        return rc;
    }
    if ((rc = tlsk_socket_new_server(&sv->s, sv->ctx, sv->fd, NULL)) != 0) {
        return rc;
    }
    return tlsk_socket_new_client(&cl->s, cl->ctx, cl->fd, &o);
}

static int pair_handshake(struct side *sv, struct side *cl)
{
    pthread_t a, b;

    h_spawn(&a, hs_thread, sv);
    h_spawn(&b, hs_thread, cl);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    if (sv->rc || cl->rc) {
        tap_diag("  server %s: %s", tlsk_err_name(sv->rc), tlsk_socket_error_detail(sv->s));
        tap_diag("  client %s: %s", tlsk_err_name(cl->rc), tlsk_socket_error_detail(cl->s));
        return sv->rc ? sv->rc : cl->rc;
    }
    return 0;
}

static int pair_connect(struct side *sv, struct side *cl)
{
    int rc = pair_new(sv, cl);
    return rc ? rc : pair_handshake(sv, cl);
}

static void pair_close(struct side *sv, struct side *cl)
{
    tlsk_socket_free(sv->s);
    tlsk_socket_free(cl->s);
    sv->s = cl->s = NULL;
    if (sv->fd >= 0) {
        close(sv->fd);
    }
    if (cl->fd >= 0) {
        close(cl->fd);
    }
    sv->fd = cl->fd = -1;
}

static struct tlsk_context *ctx_new(const struct tlsk_context_options *o)
{
    struct tlsk_context *c = NULL;
    char err[512];

    if (tlsk_context_new(&c, o, err, sizeof err) != 0) {
        tap_diag("  context: %s", err);
        return NULL;
    }
    return c;
}

/* What `openssl x509 -noout ARGS -in FILE` prints after the first '=' of its first line. */
static int openssl_x509(const char *args, const char *file, char *out, size_t len)
{
    char cmd[1024], line[512], *eq;
    FILE *p;
    int ok = 0;

    snprintf(cmd, sizeof cmd, "openssl x509 -noout %s -in '%s' 2>/dev/null", args, file);
    p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    if (fgets(line, sizeof line, p) && (eq = strchr(line, '='))) {
        eq[strcspn(eq, "\r\n")] = '\0';
        snprintf(out, len, "%s", eq + 1);
        ok = 1;
    }
    pclose(p);
    return ok ? 0 : -1;
}

/* The return code of peer_certificate(index), the certificate (if any) freed at once. */
static int peer_rc(struct tlsk_socket *s, size_t index)
{
    struct tlsk_cert_info *ci = NULL;
    int rc = tlsk_socket_peer_certificate(s, index, &ci);

    tlsk_cert_info_free(ci);
    return rc;
}

static const char *name_get(const struct tlsk_name_entry *e, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(e[i].key, key) == 0) {
            return e[i].value;
        }
    }
    return NULL;
}

static bool str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static int64_t parse_node_time(const char *s)
{
    struct tm tm = { 0 };
    const char *end = s ? strptime(s, "%b %d %H:%M:%S %Y GMT", &tm) : NULL;

    if (!end || *end) {
        return -1;
    }
    return (int64_t)timegm(&tm);
}

/* The certificate in a PEM file as DER. */
static unsigned char *pem_der(const char *file, int *len)
{
    FILE *f = fopen(file, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;

    *len = x ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (f) {
        fclose(f);
    }
    return der;
}

/* A temporary PEM file: a followed by b. */
static int concat_pem(char *path, size_t len, const char *a, const char *b)
{
    const char *tmp = getenv("TMPDIR");
    const char *in[2] = { a, b };
    char buf[4096];
    FILE *out;
    int fd;

    snprintf(path, len, "%s/tlsk-peer-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if ((fd = mkstemp(path)) < 0 || !(out = fdopen(fd, "w"))) {
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(in[i], "r");
        size_t n;
        if (!f) {
            fclose(out);
            return -1;
        }
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
            fwrite(buf, 1, n, out);
        }
        fclose(f);
    }
    return fclose(out) == 0 ? 0 : -1;
}

/* Every field of ci against `openssl x509` on the PEM file it came from. */
static void check_cert(const struct tlsk_cert_info *ci, const char *file, const char *cn,
                       const char *issuer_cn, const char *what)
{
    char want[512];
    unsigned char *der;
    int der_len;

    TAP_OK(ci->subject_count == 2 && str_eq(ci->subject[0].key, "O") &&
               str_eq(ci->subject[0].value, "tlsk test") && str_eq(ci->subject[1].key, "CN") &&
               str_eq(ci->subject[1].value, cn),
           "%s: subject is O=tlsk test, CN=%s in order", what, cn);
    TAP_OK(str_eq(name_get(ci->issuer, ci->issuer_count, "CN"), issuer_cn) &&
               str_eq(name_get(ci->issuer, ci->issuer_count, "O"), "tlsk test"),
           "%s: issuer CN is %s", what, issuer_cn);
    if (openssl_x509("-serial", file, want, sizeof want) == 0) {
        if (!TAP_OK(str_eq(ci->serial_number, want), "%s: serial_number equals openssl's %s", what,
                    want)) {
            tap_diag("  got %s", ci->serial_number);
        }
    } else {
        TAP_OK(0, "%s: openssl x509 -serial ran", what);
    }
    if (openssl_x509("-fingerprint -sha1", file, want, sizeof want) == 0) {
        if (!TAP_OK(str_eq(ci->fingerprint, want), "%s: SHA-1 fingerprint equals openssl's",
                    what)) {
            tap_diag("  got %s, want %s", ci->fingerprint, want);
        }
    } else {
        TAP_OK(0, "%s: openssl x509 -fingerprint -sha1 ran", what);
    }
    if (openssl_x509("-fingerprint -sha256", file, want, sizeof want) == 0) {
        if (!TAP_OK(str_eq(ci->fingerprint256, want), "%s: SHA-256 fingerprint equals openssl's",
                    what)) {
            tap_diag("  got %s, want %s", ci->fingerprint256, want);
        }
    } else {
        TAP_OK(0, "%s: openssl x509 -fingerprint -sha256 ran", what);
    }
    if (openssl_x509("-startdate", file, want, sizeof want) == 0) {
        TAP_OK(str_eq(ci->valid_from, want), "%s: valid_from \"%s\" equals openssl's \"%s\"", what,
               ci->valid_from, want);
    } else {
        TAP_OK(0, "%s: openssl x509 -startdate ran", what);
    }
    if (openssl_x509("-enddate", file, want, sizeof want) == 0) {
        TAP_OK(str_eq(ci->valid_to, want), "%s: valid_to \"%s\" equals openssl's \"%s\"", what,
               ci->valid_to, want);
    } else {
        TAP_OK(0, "%s: openssl x509 -enddate ran", what);
    }
    TAP_OK(ci->not_after > ci->not_before && ci->not_before > 0, "%s: not_after > not_before",
           what);
    TAP_OK(parse_node_time(ci->valid_from) == ci->not_before &&
               parse_node_time(ci->valid_to) == ci->not_after,
           "%s: valid_from/valid_to parse to not_before/not_after", what);
    der = pem_der(file, &der_len);
    TAP_OK(der && der_len > 0 && ci->raw_len == (size_t)der_len &&
               memcmp(ci->raw, der, ci->raw_len) == 0,
           "%s: raw is the DER of %s (%zu bytes)", what, file, ci->raw_len);
    OPENSSL_free(der);
}

/* Local and remote addresses of s against the fd's own getsockname/getpeername. */
static void check_address(struct side *p, const char *what)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    char host[64], small[4] = "xyz";
    int port = -1, want, rc;

    getsockname(p->fd, (struct sockaddr *)&a, &l);
    want = ntohs(a.sin_port);
    rc = tlsk_socket_address(p->s, 0, host, sizeof host, &port);
    TAP_OK(rc == 0 && strcmp(host, "127.0.0.1") == 0 && port == want,
           "%s: local address 127.0.0.1:%d (got %d: %s:%d)", what, want, rc,
           rc == 0 ? host : "", port);
    l = sizeof a;
    getpeername(p->fd, (struct sockaddr *)&a, &l);
    want = ntohs(a.sin_port);
    port = -1;
    rc = tlsk_socket_address(p->s, 1, host, sizeof host, &port);
    TAP_OK(rc == 0 && strcmp(host, "127.0.0.1") == 0 && port == want,
           "%s: remote address 127.0.0.1:%d (got %d: %s:%d)", what, want, rc,
           rc == 0 ? host : "", port);
    port = -1;
    rc = tlsk_socket_address(p->s, 1, small, sizeof small, &port);
    TAP_OK(rc == -ENOSPC && strcmp(small, "xyz") == 0 && port == -1,
           "%s: host buffer too small: -ENOSPC (%d), out-parameters untouched", what, rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                */

/* A connected pair of the family of addr (bound to it, port or path), or -1s. */
static int family_pair(struct sockaddr *addr, socklen_t len, int fds[2])
{
    int l = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage a;
    socklen_t al = sizeof a;

    fds[0] = fds[1] = -1;
    if (l < 0 || bind(l, addr, len) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) != 0 ||
        (fds[0] = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        connect(fds[0], (struct sockaddr *)&a, al) != 0 || (fds[1] = accept(l, NULL, NULL)) < 0) {
        if (fds[0] >= 0) {
            close(fds[0]);
        }
        fds[0] = -1;
    }
    if (l >= 0) {
        close(l);
    }
    return fds[0] >= 0 && fds[1] >= 0 ? 0 : -1;
}

/* AD-3: addresses are taken when the socket is wrapped, before any handshake (IPv6 ones:
 * test_events_peers AD-1, where the host has ::1). */
static void address_families(void)
{
    struct tlsk_context *ctx = h_server_ctx(TLSK_TLS1_3, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    struct tlsk_socket *s = NULL;
    char host[64] = "", path[sizeof un.sun_path];
    int fds[2], port = -1, rc;

    if (!TAP_OK(ctx != NULL, "AD-3: server context")) {
        return;
    }
    /* A path longer than an IPv6 address: what tlsk keeps of it is cut, the family not. */
    snprintf(path, sizeof path, "/tmp/tlsk-test-peer-ad3-%d-a-path-longer-than-any-inet-address",
             (int)getpid());
    memcpy(un.sun_path, path, strlen(path) + 1);
    unlink(path);
    if (TAP_OK(family_pair((struct sockaddr *)&un, sizeof un, fds) == 0,
               "AD-3: a unix socket pair bound to a %zu-byte path", strlen(path))) {
        TAP_IS(tlsk_socket_new_server(&s, ctx, fds[1], NULL), 0, "AD-3: server socket over it");
        port = -1;
        rc = tlsk_socket_address(s, 0, host, sizeof host, &port);
        TAP_OK(rc == -EAFNOSUPPORT && port == -1,
               "AD-3: local address: -EAFNOSUPPORT, port untouched (%d)", rc);
        rc = tlsk_socket_address(s, 1, host, sizeof host, &port);
        TAP_OK(rc == -EAFNOSUPPORT, "AD-3: remote address (unnamed): -EAFNOSUPPORT (%d)", rc);
        tlsk_socket_free(s);
        close(fds[0]);
        close(fds[1]);
    }
    unlink(path);
    tlsk_context_free(ctx);
}

static void *ciphers_thread(void *arg)
{
    *(size_t *)arg = tlsk_get_ciphers(NULL, 0);
    return NULL;
}

/* GC-1..GC-3 */
static void get_ciphers(void)
{
    static const char *const want[] = {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_AES_256_GCM_SHA384",        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
    };
    static const char *const banned[] = { "RC4", "DES", "MD5", "NULL", "EXP",
                                          "ADH", "AECDH", "PSK", "SRP" };
    const char *sentinel = "sentinel";
    pthread_t t[4];
    size_t counts[4], n;
    const char **all, *few[4];
    bool dup = false, bad = false, same = true;

    /* The first calls race: all must see the same, complete list. */
    for (int i = 0; i < 4; i++) {
        h_spawn(&t[i], ciphers_thread, &counts[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    n = tlsk_get_ciphers(NULL, 0);
    TAP_OK(n > 0 && counts[0] == n && counts[1] == n && counts[2] == n && counts[3] == n,
           "get_ciphers: %zu names, the same count from concurrent first calls", n);
    all = calloc(n + 1, sizeof *all);
    if (!all) {
        tap_bail("out of memory");
    }
    all[n] = sentinel;
    TAP_IS(tlsk_get_ciphers(all, n), n, "get_ciphers: cap == count returns the count");
    TAP_OK(all[n] == sentinel, "get_ciphers: nothing written past cap");
    for (size_t i = 0; i < n; i++) {
        if (!all[i] || !*all[i]) {
            bad = true;
            continue;
        }
        for (size_t j = i + 1; j < n; j++) {
            if (all[j] && strcmp(all[i], all[j]) == 0) {
                dup = true;
                tap_diag("  duplicate %s", all[i]);
            }
        }
        for (size_t k = 0; k < sizeof banned / sizeof banned[0]; k++) {
            if (strstr(all[i], banned[k])) {
                bad = true;
                tap_diag("  %s contains %s", all[i], banned[k]);
            }
        }
    }
    TAP_OK(!dup, "GC-1: no duplicates");
    TAP_OK(!bad, "GC-3: no empty name and none containing RC4 DES MD5 NULL EXP ADH AECDH PSK SRP");
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            found = found || str_eq(all[i], want[k]);
        }
        TAP_OK(found, "GC-1/GC-2: contains %s (OpenSSL's spelling)", want[k]);
    }
    for (int i = 0; i < 4; i++) {
        few[i] = sentinel;
    }
    TAP_IS(tlsk_get_ciphers(few, 3), n, "get_ciphers: cap 3 still returns the full count");
    for (int i = 0; i < 3; i++) {
        same = same && n > (size_t)i && few[i] == all[i];
    }
    TAP_OK(same && few[3] == sentinel, "get_ciphers: cap 3 writes exactly the first 3 entries");
    free(all);
}

/* PC-1, PC-2, AD-1 on a default connection (TLS 1.3). */
static void basic(void)
{
    struct side sv = { 0 }, cl = { 0 };
    struct tlsk_cert_info *ci = (struct tlsk_cert_info *)&sv; /* must stay untouched */
    struct tlsk_cipher_info cinfo = { 0 };

    tlsk_cert_info_free(NULL);
    TAP_OK(1, "tlsk_cert_info_free(NULL) is a no-op");

    sv.ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    cl.ctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && cl.ctx && pair_new(&sv, &cl) == 0, "basic: setup")) {
        goto out;
    }
    TAP_IS(tlsk_socket_peer_certificate(cl.s, 0, &ci), TLSK_ESTATE,
           "before the handshake: peer_certificate is TLSK_ESTATE");
    TAP_OK(ci == (struct tlsk_cert_info *)&sv, "before the handshake: *out untouched");
    TAP_IS(tlsk_socket_get_cipher(cl.s, &cinfo), TLSK_ESTATE,
           "before the handshake: client get_cipher is TLSK_ESTATE");
    TAP_IS(tlsk_socket_get_cipher(sv.s, &cinfo), TLSK_ESTATE,
           "before the handshake: server get_cipher is TLSK_ESTATE");
    TAP_OK(cinfo.name == NULL, "before the handshake: cipher info untouched");
    if (!TAP_OK(pair_handshake(&sv, &cl) == 0, "basic: handshake")) {
        goto out;
    }
    if (h_expect_ktls()) {
        struct tlsk_offload o = tlsk_socket_offload(cl.s);
        TAP_OK(o.tx.mode == TLSK_MODE_KERNEL, "basic: client transmits through kTLS (%s)",
               tlsk_reason_name(o.tx.reason));
    }

    ci = NULL;
    if (TAP_OK(tlsk_socket_peer_certificate(cl.s, 0, &ci) == 0, "client: peer certificate")) {
        check_cert(ci, agent1_cert, "agent1", "ca1", "client: agent1");
        TAP_OK(str_eq(ci->subjectaltname, "DNS:localhost, IP Address:127.0.0.1"),
               "client: subjectaltname \"%s\"", ci->subjectaltname ? ci->subjectaltname : "(null)");
        tlsk_cert_info_free(ci);
    }
    ci = (struct tlsk_cert_info *)&sv;
    TAP_IS(tlsk_socket_peer_certificate(cl.s, 1, &ci), -ENOENT,
           "client: index 1 is -ENOENT (agent1 is served without a chain)");
    TAP_IS(tlsk_socket_peer_certificate(cl.s, 100, &ci), -ENOENT, "client: index 100 is -ENOENT");
    TAP_IS(tlsk_socket_peer_certificate(sv.s, 0, &ci), -ENOENT,
           "PC-2: server without a client certificate: -ENOENT");
    TAP_IS(tlsk_socket_peer_certificate(sv.s, 1, &ci), -ENOENT,
           "PC-2: server without a client certificate: index 1 -ENOENT");
    TAP_OK(ci == (struct tlsk_cert_info *)&sv, "failed calls leave *out untouched");

    check_address(&cl, "AD-1 client");
    check_address(&sv, "AD-1 server");
out:
    pair_close(&sv, &cl);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* A server whose cert_file holds agent1 followed by ca1: the client sees ca1 at index 1. */
static void server_chain(const char *chain_file)
{
    struct tlsk_context_options so = { .cert_file = chain_file,
                                       .key_file = agent1_key };
    struct side sv = { 0 }, cl = { 0 };
    struct tlsk_cert_info *ci = NULL;

    sv.ctx = ctx_new(&so);
    cl.ctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && cl.ctx && pair_connect(&sv, &cl) == 0, "server chain: handshake")) {
        goto out;
    }
    if (TAP_OK(tlsk_socket_peer_certificate(cl.s, 0, &ci) == 0, "server chain: index 0")) {
        TAP_OK(str_eq(name_get(ci->subject, ci->subject_count, "CN"), "agent1"),
               "server chain: index 0 is agent1");
        tlsk_cert_info_free(ci);
    }
    ci = NULL;
    if (TAP_OK(tlsk_socket_peer_certificate(cl.s, 1, &ci) == 0, "server chain: index 1")) {
        check_cert(ci, ca1_cert, "ca1", "ca1", "client: chain[1] ca1");
        TAP_OK(ci->subjectaltname == NULL, "client: ca1 has no subjectaltname (NULL)");
        tlsk_cert_info_free(ci);
    }
    TAP_IS(peer_rc(cl.s, 2), -ENOENT, "server chain: index 2 -ENOENT");
out:
    pair_close(&sv, &cl);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* A server whose cert_file holds agent1 alone and whose trust store (ca_file) has its issuer:
 * the chain is completed from the store (once, at load: lib/creds.c freeze_chain, docs/
 * OPENSSL.md §10), so the client sees ca1 at index 1 on every connection, as Node's. */
static void server_chain_from_store(void)
{
    struct tlsk_context_options so = { .cert_file = agent1_cert,
                                       .key_file = agent1_key,
                                       .ca_file = ca1_cert };
    struct side sv = { 0 }, cl = { 0 };
    struct tlsk_cert_info *ci = NULL;

    sv.ctx = ctx_new(&so);
    cl.ctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    for (int i = 1; i <= 2; i++) {
        if (!TAP_OK(sv.ctx && cl.ctx && pair_connect(&sv, &cl) == 0,
                    "chain from the store, connection %d: handshake", i)) {
            pair_close(&sv, &cl);
            break;
        }
        ci = NULL;
        if (TAP_OK(tlsk_socket_peer_certificate(cl.s, 1, &ci) == 0,
                   "chain from the store, connection %d: index 1 present", i)) {
            TAP_OK(str_eq(name_get(ci->subject, ci->subject_count, "CN"), "ca1"),
                   "chain from the store, connection %d: index 1 is ca1", i);
            tlsk_cert_info_free(ci);
        }
        TAP_IS(peer_rc(cl.s, 2), -ENOENT, "chain from the store, connection %d: index 2 -ENOENT",
               i);
        pair_close(&sv, &cl);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* TLSK_REQUIRE_PEER_CERT: the server sees the client's certificate (and its chain when the
 * client's cert_file carries one). */
static void client_cert(int version, const char *client_cert_file, bool with_chain)
{
    const char *v = version == TLSK_TLS1_3 ? "1.3" : "1.2";
    struct tlsk_context_options so = { .cert_file = agent1_cert,
                                       .key_file = agent1_key,
                                       .ca_file = ca1_cert,
                                       .min_version = version,
                                       .max_version = version,
                                       .flags = TLSK_REQUIRE_PEER_CERT };
    struct tlsk_context_options co = { .cert_file = client_cert_file,
                                       .key_file = agent1_key,
                                       .ca_file = ca1_cert,
                                       .min_version = version,
                                       .max_version = version };
    struct side sv = { 0 }, cl = { 0 };
    struct tlsk_cert_info *ci = NULL;
    int rc;

    sv.ctx = ctx_new(&so);
    cl.ctx = ctx_new(&co);
    if (!TAP_OK(sv.ctx && cl.ctx && pair_connect(&sv, &cl) == 0,
                "%s client certificate%s: handshake", v, with_chain ? " with chain" : "")) {
        goto out;
    }
    if (TAP_OK(tlsk_socket_peer_certificate(sv.s, 0, &ci) == 0,
               "%s server: the client's certificate", v)) {
        TAP_OK(str_eq(name_get(ci->subject, ci->subject_count, "CN"), "agent1") &&
                   str_eq(name_get(ci->issuer, ci->issuer_count, "CN"), "ca1"),
               "%s server: client certificate CN agent1, issuer ca1", v);
        if (!with_chain) {
            check_cert(ci, agent1_cert, "agent1", "ca1", "server: client agent1");
        }
        tlsk_cert_info_free(ci);
    }
    ci = NULL;
    rc = tlsk_socket_peer_certificate(sv.s, 1, &ci);
    if (with_chain) {
        if (TAP_OK(rc == 0, "%s server: index 1 of the client's chain", v)) {
            TAP_OK(str_eq(name_get(ci->subject, ci->subject_count, "CN"), "ca1"),
                   "%s server: index 1 is ca1 (the leaf is not repeated)", v);
        }
        TAP_IS(peer_rc(sv.s, 2), -ENOENT, "%s server: index 2 is -ENOENT", v);
    } else if (rc == 0) {
        /* Without chain certificates OpenSSL may build one from the client's trust store. */
        tap_diag("  %s server: index 1 without a configured chain: CN %s", v,
                 name_get(ci->subject, ci->subject_count, "CN"));
    }
    tlsk_cert_info_free(ci);
out:
    pair_close(&sv, &cl);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* CI-1, CI-2: get_cipher on both sides equals what was configured. */
static void cipher(int version, const char *suite, const char *standard, const char *vname,
                   int bits)
{
    struct side sv = { 0 }, cl = { 0 };
    struct side *sides[2] = { &sv, &cl };

    sv.ctx = h_server_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, 0);
    cl.ctx = h_client_ctx(version, suite, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && cl.ctx && pair_connect(&sv, &cl) == 0, "%s %s: handshake", vname,
                suite)) {
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        struct tlsk_cipher_info c = { 0 };
        const char *who = i == 0 ? "server" : "client";

        if (!TAP_OK(tlsk_socket_get_cipher(sides[i]->s, &c) == 0, "%s %s: get_cipher", vname,
                    who)) {
            continue;
        }
        TAP_OK(str_eq(c.name, suite), "%s %s: name %s", vname, who, c.name);
        TAP_OK(str_eq(c.standard_name, standard), "%s %s: standard_name %s", vname, who,
               c.standard_name);
        TAP_OK(str_eq(c.version, vname), "%s %s: version %s", vname, who, c.version);
        TAP_IS(c.bits, bits, "%s %s: bits", vname, who);
    }
out:
    pair_close(&sv, &cl);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* One connection of the resumption test: the server writes a byte so the client reads the
 * TLS 1.3 tickets; returns the client's session. */
static void resumed(int version, unsigned client_flags)
{
    const char *v = version == TLSK_TLS1_3 ? "1.3" : "1.2";
    struct side sv = { 0 }, cl = { 0 };
    struct tlsk_context *sctx = h_server_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_context *cctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, client_flags);
    unsigned char sess[8192];
    ssize_t sess_len = -1;
    struct tlsk_cert_info *ci = NULL;
    char b;

    sv.ctx = sctx;
    cl.ctx = cctx;
    if (!TAP_OK(sctx && cctx && pair_connect(&sv, &cl) == 0, "%s resumption: first connection",
                v)) {
        goto out;
    }
    if (h_write_all(sv.s, "x", 1) == 0 && h_read_full(cl.s, &b, 1) == 1) {
        sess_len = tlsk_socket_session(cl.s, sess, sizeof sess);
    }
    pair_close(&sv, &cl);
    if (!TAP_OK(sess_len > 0, "%s resumption: client holds a session (%zd bytes)", v, sess_len)) {
        goto out;
    }
    cl.session = sess;
    cl.session_len = (size_t)sess_len;
    if (!TAP_OK(pair_connect(&sv, &cl) == 0, "%s resumption: second connection", v)) {
        goto out;
    }
    TAP_OK(tlsk_socket_session_reused(cl.s) == 1 && tlsk_socket_session_reused(sv.s) == 1,
           "%s resumption: the second connection resumed", v);
    if (h_expect_ktls()) {
        struct tlsk_offload o = tlsk_socket_offload(cl.s);
        TAP_OK(o.tx.mode == TLSK_MODE_KERNEL, "%s resumption: client transmits through kTLS (%s)",
               v, tlsk_reason_name(o.tx.reason));
    }
    if (TAP_OK(tlsk_socket_peer_certificate(cl.s, 0, &ci) == 0,
               "%s resumed client: still reports the server's certificate", v)) {
        char want[256];
        TAP_OK(str_eq(name_get(ci->subject, ci->subject_count, "CN"), "agent1"),
               "%s resumed client: CN agent1", v);
        TAP_OK(openssl_x509("-fingerprint -sha256", agent1_cert, want,
                            sizeof want) == 0 &&
                   str_eq(ci->fingerprint256, want),
               "%s resumed client: fingerprint256 is agent1's", v);
        tlsk_cert_info_free(ci);
    }
    TAP_IS(peer_rc(sv.s, 0), -ENOENT, "%s resumed server: still no client certificate", v);
out:
    pair_close(&sv, &cl);
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

int main(void)
{
    char chain[512];

    snprintf(agent1_cert, sizeof agent1_cert, "%s", h_fixture("agent1-cert.pem"));
    snprintf(agent1_key, sizeof agent1_key, "%s", h_fixture("agent1-key.pem"));
    snprintf(ca1_cert, sizeof ca1_cert, "%s", h_fixture("ca1-cert.pem"));

    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    get_ciphers();
    basic();
    address_families();

    if (!TAP_OK(concat_pem(chain, sizeof chain, agent1_cert, ca1_cert) == 0,
                "temporary chain file %s", chain)) {
        return tap_done();
    }
    server_chain(chain);
    server_chain_from_store();
    client_cert(TLSK_TLS1_3, agent1_cert, false);
    client_cert(TLSK_TLS1_2, agent1_cert, false);
    client_cert(TLSK_TLS1_3, chain, true);
    client_cert(TLSK_TLS1_2, chain, true);
    unlink(chain);

    cipher(TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
           "TLSv1.2", 128);
    cipher(TLSK_TLS1_2, "ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
           "TLSv1.2", 256);
    cipher(TLSK_TLS1_3, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", "TLSv1.3", 256);
    cipher(TLSK_TLS1_3, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
           "TLSv1.3", 256);

    resumed(TLSK_TLS1_3, TLSK_OFFLOAD_RX_TLS13);
    resumed(TLSK_TLS1_2, 0);
    return tap_done();
}

/*
 * cert.c - a certificate as a plain C struct in the shape of Node's getPeerCertificate():
 * subject and issuer fields, subject alternative names, validity, fingerprints, serial.  One
 * allocation holds the struct and every string it points to (tlsk_cert_info_free).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

/* ---------------------------------------------------------------------------------------- */
/* A string arena: everything a tlsk_cert_info points to is appended here as an offset, and
 * the whole arena is copied behind the struct at the end, so one free() releases it all. */

struct arena {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool arena_reserve(struct arena *a, size_t n)
{
    size_t cap;
    char *p;

    if (a->oom) {
        return false;
    }
    if (n <= a->cap - a->len) {
        return true;
    }
    cap = a->cap ? a->cap : 1024;
    while (cap - a->len < n) {
        if (cap > SIZE_MAX / 2) {
            a->oom = true;
            return false;
        }
        cap *= 2;
    }
    p = realloc(a->p, cap);
    if (!p) {
        a->oom = true;
        return false;
    }
    a->p = p;
    a->cap = cap;
    return true;
}

static void arena_put(struct arena *a, const void *b, size_t n)
{
    if (arena_reserve(a, n)) {
        memcpy(a->p + a->len, b, n);
        a->len += n;
    }
}

static void arena_putc(struct arena *a, char c)
{
    arena_put(a, &c, 1);
}

static void arena_puts(struct arena *a, const char *s)
{
    arena_put(a, s, strlen(s));
}

/* Start a string; end it with arena_end(). */
static size_t arena_begin(const struct arena *a)
{
    return a->len;
}

static size_t arena_end(struct arena *a, size_t start)
{
    arena_putc(a, '\0');
    return start;
}

static size_t arena_str(struct arena *a, const char *s)
{
    size_t o = arena_begin(a);
    arena_puts(a, s);
    return arena_end(a, o);
}

static void arena_hex(struct arena *a, const unsigned char *b, size_t n, bool colons)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        if (colons && i) {
            arena_putc(a, ':');
        }
        arena_putc(a, hex[b[i] >> 4]);
        arena_putc(a, hex[b[i] & 15]);
    }
}

/* Write whatever a BIO collected into the arena (without the NUL). */
static void arena_bio(struct arena *a, BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);

    if (n > 0) {
        arena_put(a, p, (size_t)n);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Certificate fields                                                                       */

#define NO_STRING SIZE_MAX

struct name_offs {
    size_t key, value;
};

/* Short names ("CN", "O", "emailAddress"); the dotted OID when OpenSSL has no name for it. */
static void put_names(struct arena *a, const X509_NAME *name, struct name_offs *offs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, (int)i);
        const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
        int nid = OBJ_obj2nid(obj);
        const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
        unsigned char *utf8 = NULL;
        int len;

        if (sn) {
            offs[i].key = arena_str(a, sn);
        } else {
            char oid[128];
            OBJ_obj2txt(oid, sizeof oid, obj, 1);
            offs[i].key = arena_str(a, oid);
        }
        len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        if (len < 0) {
            /* Not convertible (a malformed string type): Node shows it empty too. */
            ERR_clear_error();
            offs[i].value = arena_str(a, "");
        } else {
            size_t o = arena_begin(a);
            arena_put(a, utf8, (size_t)len);
            offs[i].value = arena_end(a, o);
        }
        OPENSSL_free(utf8);
    }
}

/* Node's PrintAltName: a name with a comma, quote, backslash or control character (or, for
 * IA5 strings, any non-ASCII byte) is written as a JSON string, prefix included, so that
 * the ", "-separated list stays unambiguous. */
static bool alt_name_safe(const unsigned char *s, size_t n, bool utf8)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\' || c == ',' || c == '\'') {
            return false;
        }
        if (c < ' ' || c == 0x7f || (!utf8 && c > '~')) {
            return false;
        }
    }
    return true;
}

static void put_alt_name(struct arena *a, const char *prefix, const unsigned char *s, size_t n,
                         bool utf8)
{
    static const char hex[] = "0123456789abcdef";

    if (alt_name_safe(s, n, utf8)) {
        arena_puts(a, prefix);
        arena_putc(a, ':');
        arena_put(a, s, n);
        return;
    }
    arena_putc(a, '"');
    arena_puts(a, prefix);
    arena_putc(a, ':');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '\\' || c == '"') {
            arena_putc(a, '\\');
            arena_putc(a, (char)c);
        } else if ((c >= ' ' && c != ',' && c <= '~') || (utf8 && (c & 0x80))) {
            arena_putc(a, (char)c);
        } else {
            char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            arena_put(a, u, sizeof u);
        }
    }
    arena_putc(a, '"');
}

/* One GENERAL_NAME the way Node prints subjectaltname entries. */
static void put_general_name(struct arena *a, const GENERAL_NAME *g)
{
    char buf[64];

    switch (g->type) {
    case GEN_DNS:
        put_alt_name(a, "DNS", ASN1_STRING_get0_data(g->d.dNSName),
                     (size_t)ASN1_STRING_length(g->d.dNSName), false);
        break;
    case GEN_EMAIL:
        put_alt_name(a, "email", ASN1_STRING_get0_data(g->d.rfc822Name),
                     (size_t)ASN1_STRING_length(g->d.rfc822Name), false);
        break;
    case GEN_URI:
        put_alt_name(a, "URI", ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                     (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier), false);
        break;
    case GEN_IPADD: {
        const unsigned char *b = ASN1_STRING_get0_data(g->d.iPAddress);
        int n = ASN1_STRING_length(g->d.iPAddress);

        arena_puts(a, "IP Address:");
        if (n == 4) {
            snprintf(buf, sizeof buf, "%d.%d.%d.%d", b[0], b[1], b[2], b[3]);
            arena_puts(a, buf);
        } else if (n == 16) {
            /* Node's form: eight groups, uppercase, no zero compression ("0:0:0:0:0:0:0:1"). */
            for (int j = 0; j < 8; j++) {
                unsigned pair = (unsigned)(b[2 * j] << 8 | b[2 * j + 1]);
                snprintf(buf, sizeof buf, j ? ":%X" : "%X", pair);
                arena_puts(a, buf);
            }
        } else {
            snprintf(buf, sizeof buf, "<invalid length=%d>", n);
            arena_puts(a, buf);
        }
        break;
    }
    case GEN_DIRNAME: {
        BIO *bio = BIO_new(BIO_s_mem());
        char *p;
        long n;

        if (!bio) {
            a->oom = true;
            break;
        }
        X509_NAME_print_ex(bio, g->d.directoryName, 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB & ~ASN1_STRFLGS_ESC_CTRL);
        n = BIO_get_mem_data(bio, &p);
        put_alt_name(a, "DirName", (const unsigned char *)p, n > 0 ? (size_t)n : 0, true);
        BIO_free(bio);
        break;
    }
    case GEN_RID:
        OBJ_obj2txt(buf, sizeof buf, g->d.registeredID, 1);
        arena_puts(a, "Registered ID:");
        arena_puts(a, buf);
        break;
    case GEN_OTHERNAME:
        arena_puts(a, "othername:<unsupported>");
        break;
    case GEN_X400:
        arena_puts(a, "X400Name:<unsupported>");
        break;
    case GEN_EDIPARTY:
        arena_puts(a, "EdiPartyName:<unsupported>");
        break;
    default:
        arena_puts(a, "<unsupported>");
        break;
    }
}

static size_t put_san(struct arena *a, const X509 *x)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t o;

    if (!names) {
        ERR_clear_error();
        return NO_STRING;
    }
    o = arena_begin(a);
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        if (i) {
            arena_puts(a, ", ");
        }
        put_general_name(a, sk_GENERAL_NAME_value(names, i));
    }
    GENERAL_NAMES_free(names);
    return arena_end(a, o);
}

/* "Nov 27 16:31:39 2026 GMT" (ASN1_TIME_print, day padded with a space) and epoch seconds. */
static size_t put_time(struct arena *a, const ASN1_TIME *t, int64_t *epoch)
{
    BIO *bio = BIO_new(BIO_s_mem());
    struct tm tm;
    size_t o;

    *epoch = 0;
    if (!bio) {
        a->oom = true;
        return NO_STRING;
    }
    if (t && ASN1_TIME_to_tm(t, &tm) == 1) {
        *epoch = (int64_t)timegm(&tm);
    }
    o = arena_begin(a);
    if (t && ASN1_TIME_print(bio, t) == 1) {
        arena_bio(a, bio);
    }
    ERR_clear_error();
    BIO_free(bio);
    return arena_end(a, o);
}

static size_t put_digest(struct arena *a, const X509 *x, const EVP_MD *md)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t o;

    if (X509_digest(x, md, d, &n) != 1) {
        ERR_clear_error();
        return NO_STRING;
    }
    o = arena_begin(a);
    arena_hex(a, d, n, true);
    return arena_end(a, o);
}

/* Node's serialNumber: BN_bn2hex of the serial (uppercase, no separators). */
static size_t put_serial(struct arena *a, const X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    size_t o = NO_STRING;

    if (hex) {
        o = arena_str(a, hex);
    } else {
        a->oom = true;
    }
    OPENSSL_free(hex);
    BN_free(bn);
    return o;
}

int tlsk__cert_info_new(const X509 *x, struct tlsk_cert_info **out)
{
    const X509_NAME *subj = X509_get_subject_name(x), *iss = X509_get_issuer_name(x);
    size_t ns = (size_t)X509_NAME_entry_count(subj), ni = (size_t)X509_NAME_entry_count(iss);
    struct name_offs *offs = calloc(ns + ni + 1, sizeof *offs);
    struct arena a = { 0 };
    struct tlsk_cert_info *ci = NULL, tmp = { 0 };
    size_t san, from, to, fp1, fp256, serial, raw, head;
    struct tlsk_name_entry *entries;
    unsigned char *der = NULL;
    int der_len, rc = 0;
    char *base;

    der_len = i2d_X509(x, &der);
    if (!offs || der_len <= 0) {
        ERR_clear_error();
        rc = TLSK_ENOMEM;
        goto out;
    }
    put_names(&a, subj, offs, ns);
    put_names(&a, iss, offs + ns, ni);
    san = put_san(&a, x);
    from = put_time(&a, X509_get0_notBefore(x), &tmp.not_before);
    to = put_time(&a, X509_get0_notAfter(x), &tmp.not_after);
    fp1 = put_digest(&a, x, EVP_sha1());
    fp256 = put_digest(&a, x, EVP_sha256());
    serial = put_serial(&a, x);
    raw = a.len;
    arena_put(&a, der, (size_t)der_len);
    if (a.oom || from == NO_STRING || to == NO_STRING || fp1 == NO_STRING ||
        fp256 == NO_STRING || serial == NO_STRING) {
        rc = TLSK_ENOMEM;
        goto out;
    }

    /* [struct][subject entries][issuer entries][arena] */
    head = sizeof *ci + (ns + ni) * sizeof *entries;
    ci = malloc(head + a.len);
    if (!ci) {
        rc = TLSK_ENOMEM;
        goto out;
    }
    entries = (struct tlsk_name_entry *)(ci + 1);
    base = (char *)ci + head;
    memcpy(base, a.p, a.len);
    for (size_t i = 0; i < ns + ni; i++) {
        entries[i].key = base + offs[i].key;
        entries[i].value = base + offs[i].value;
    }
    *ci = tmp;
    ci->subject = entries;
    ci->subject_count = ns;
    ci->issuer = entries + ns;
    ci->issuer_count = ni;
    ci->subjectaltname = san == NO_STRING ? NULL : base + san;
    ci->valid_from = base + from;
    ci->valid_to = base + to;
    ci->fingerprint = base + fp1;
    ci->fingerprint256 = base + fp256;
    ci->serial_number = base + serial;
    ci->raw = (const unsigned char *)base + raw;
    ci->raw_len = (size_t)der_len;
    *out = ci;
out:
    OPENSSL_free(der);
    free(a.p);
    free(offs);
    return rc;
}

TLSK_PUBLIC void tlsk_cert_info_free(struct tlsk_cert_info *ci)
{
    free(ci);
}

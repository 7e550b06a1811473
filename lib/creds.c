/*
 * creds.c - a context's credentials and trust: certificate chain and key (PEM, with a
 * passphrase, never a prompt), PKCS#12, CA certificates (or the system's), CRLs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"


/* Never prompt: OpenSSL's default would read the terminal. */
static int passwd_cb(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    size_t n;

    (void)rwflag;
    if (!pw || size <= 0) {
        return 0;
    }
    n = strlen(pw);
    if (n > (size_t)size) {
        return 0;
    }
    memcpy(buf, pw, n);
    return (int)n;
}

static BIO *pem_bio(const char *file, const char *pem, size_t pem_len)
{
    if (file) {
        return BIO_new_file(file, "r");
    }
    return BIO_new_mem_buf(pem, pem_len ? (int)pem_len : -1);
}

static int load_cert_chain(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    BIO *b = pem_bio(o->cert_file, o->cert_pem, o->cert_pem_len);
    X509 *leaf = NULL, *x;
    int rc = 0;

    if (!b) {
        return tlsk__config_error(d, TLSK_ECERT, "cert: cannot open %s", o->cert_file ? o->cert_file : "PEM");
    }
    leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (!leaf) {
        rc = tlsk__config_error(d, TLSK_ECERT, "cert: no PEM certificate in %s",
                  o->cert_file ? o->cert_file : "the PEM string");
        goto out;
    }
    if (SSL_CTX_use_certificate(sc, leaf) != 1) {
        rc = tlsk__config_error(d, TLSK_ECERT, "cert: rejected");
        goto out;
    }
    SSL_CTX_clear_chain_certs(sc);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(sc, x) != 1) {
            X509_free(x);
            rc = tlsk__config_error(d, TLSK_ECERT, "cert: chain certificate rejected");
            goto out;
        }
    }
    /* The loop ends on "no start line", which is not an error. */
    ERR_clear_error();
out:
    X509_free(leaf);
    BIO_free(b);
    return rc;
}

static int load_key(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    BIO *b = pem_bio(o->key_file, o->key_pem, o->key_pem_len);
    EVP_PKEY *pk;
    int rc = 0;

    if (!b) {
        return tlsk__config_error(d, TLSK_EKEY, "key: cannot open %s", o->key_file ? o->key_file : "PEM");
    }
    pk = PEM_read_bio_PrivateKey(b, NULL, passwd_cb, (void *)o->passphrase);
    if (!pk) {
        char why[512] = "";
        char head[128] = "";

        tlsk__append_ossl_errors(why, sizeof why);
        (void)BIO_reset(b);
        (void)BIO_read(b, head, sizeof head - 1);
        if (strstr(why, "bad decrypt") || strstr(why, "bad password read") ||
            (!o->passphrase && strstr(head, "ENCRYPTED"))) {
            rc = tlsk__config_error(d, TLSK_EPASSPHRASE, "key: %s (%s)",
                      o->passphrase ? "wrong passphrase, bad decrypt"
                                    : "encrypted key and no passphrase, bad decrypt",
                      why);
        } else {
            rc = tlsk__config_error(d, TLSK_EKEY, "key: no usable PEM private key in %s (%s)",
                      o->key_file ? o->key_file : "the PEM string", why);
        }
        goto out;
    }
    {
        X509 *leaf = SSL_CTX_get0_certificate(sc);
        if (leaf && X509_check_private_key(leaf, pk) != 1) {
            EVP_PKEY_free(pk);
            rc = tlsk__config_error(d, TLSK_EKEY, "key: does not match the certificate");
            goto out;
        }
    }
    if (SSL_CTX_use_PrivateKey(sc, pk) != 1) {
        rc = tlsk__config_error(d, TLSK_EKEY, "key: rejected");
    } else if (SSL_CTX_check_private_key(sc) != 1) {
        rc = tlsk__config_error(d, TLSK_EKEY, "key: does not match the certificate");
    }
    EVP_PKEY_free(pk);
out:
    BIO_free(b);
    return rc;
}

/* Every PEM certificate (or CRL) in b into the store; b is freed.  Returns how many. */
static int add_pem_objects(X509_STORE *st, BIO *b, bool crls)
{
    int n = 0;

    for (;;) {
        X509_CRL *crl = crls ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        X509 *x = crls ? NULL : PEM_read_bio_X509(b, NULL, NULL, NULL);

        if (!crl && !x) {
            break;
        }
        if (crl) {
            X509_STORE_add_crl(st, crl);
        } else {
            X509_STORE_add_cert(st, x);
        }
        X509_CRL_free(crl);
        X509_free(x);
        n++;
    }
    BIO_free(b);
    return n;
}

static int load_trust(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    if (o->ca_file) {
        if (SSL_CTX_load_verify_locations(sc, o->ca_file, NULL) != 1) {
            return tlsk__config_error(d, TLSK_ECERT, "ca: cannot load %s", o->ca_file);
        }
        return 0;
    }
    if (o->ca_pem) {
        BIO *b = BIO_new_mem_buf(o->ca_pem, o->ca_pem_len ? (int)o->ca_pem_len : -1);

        if (!b) {
            return tlsk__config_error(d, TLSK_ENOMEM, "ca: out of memory");
        }
        if (add_pem_objects(SSL_CTX_get_cert_store(sc), b, false) == 0) {
            return tlsk__config_error(d, TLSK_ECERT, "ca: no PEM certificate in the ca string");
        }
        ERR_clear_error();
        return 0;
    }
    if (SSL_CTX_set_default_verify_paths(sc) != 1) {
        return tlsk__config_error(d, TLSK_ECERT, "ca: cannot load the system trust store");
    }
    return 0;
}

static int load_pfx(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    BIO *b = o->pfx_file ? BIO_new_file(o->pfx_file, "rb")
                         : BIO_new_mem_buf(o->pfx, (int)o->pfx_len);
    PKCS12 *p12 = NULL;
    EVP_PKEY *pk = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;
    int rc = 0;

    if (!b || !(p12 = d2i_PKCS12_bio(b, NULL))) {
        rc = tlsk__config_error(d, TLSK_ECERT, "pfx: cannot read a PKCS#12 bundle from %s",
                  o->pfx_file ? o->pfx_file : "the pfx bytes");
        goto out;
    }
    if (!PKCS12_verify_mac(p12, o->passphrase ? o->passphrase : "", -1) &&
        !(o->passphrase == NULL && PKCS12_verify_mac(p12, NULL, 0))) {
        rc = tlsk__config_error(d, TLSK_EPASSPHRASE, "pfx: mac verify failure (wrong passphrase)");
        goto out;
    }
    if (!PKCS12_parse(p12, o->passphrase ? o->passphrase : "", &pk, &cert, &ca) || !pk || !cert) {
        rc = tlsk__config_error(d, TLSK_EPASSPHRASE, "pfx: cannot decrypt the bundle (bad decrypt)");
        goto out;
    }
    if (SSL_CTX_use_certificate(sc, cert) != 1 || SSL_CTX_use_PrivateKey(sc, pk) != 1 ||
        SSL_CTX_check_private_key(sc) != 1) {
        rc = tlsk__config_error(d, TLSK_EKEY, "pfx: key does not match the certificate");
        goto out;
    }
    for (int i = 0; ca && i < sk_X509_num(ca); i++) {
        X509 *x = sk_X509_value(ca, i);
        /* As Node: the bundle's CA certificates are both chain and trust anchors. */
        X509_STORE_add_cert(SSL_CTX_get_cert_store(sc), x);
        if (SSL_CTX_add1_chain_cert(sc, x) != 1) {
            rc = tlsk__config_error(d, TLSK_ECERT, "pfx: chain certificate rejected");
            goto out;
        }
    }
    ERR_clear_error();
out:
    sk_X509_pop_free(ca, X509_free);
    X509_free(cert);
    EVP_PKEY_free(pk);
    PKCS12_free(p12);
    BIO_free(b);
    return rc;
}

static int load_crl(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    BIO *b = o->crl_file ? BIO_new_file(o->crl_file, "r")
                         : BIO_new_mem_buf(o->crl_pem, o->crl_pem_len ? (int)o->crl_pem_len : -1);
    X509_STORE *st = SSL_CTX_get_cert_store(sc);

    if (!b) {
        return tlsk__config_error(d, TLSK_ECERT, "crl: cannot open %s", o->crl_file ? o->crl_file : "PEM");
    }
    if (add_pem_objects(st, b, true) == 0) {
        return tlsk__config_error(d, TLSK_ECERT, "crl: no PEM CRL in %s", o->crl_file ? o->crl_file : "crl_pem");
    }
    ERR_clear_error();
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    return 0;
}

/* A certificate given without its chain is completed from the trust store once, here, and
 * OpenSSL's automatic chain building is then turned off: left on, it searches the store on
 * every handshake (with the system store, a scan of /etc/ssl/certs: docs/OPENSSL.md §10).
 * The chain sent is the same; a store that changes later is not consulted, as Node, which
 * completes the chain when the certificate is loaded. */
static void freeze_chain(SSL_CTX *sc)
{
    STACK_OF(X509) *chain = NULL;

    if (!SSL_CTX_get0_certificate(sc)) {
        return;
    }
    SSL_CTX_get0_chain_certs(sc, &chain);
    if ((!chain || sk_X509_num(chain) == 0) &&
        SSL_CTX_build_cert_chain(sc, SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR) <= 0) {
        ERR_clear_error();
        return; /* as before: OpenSSL tries again per handshake */
    }
    ERR_clear_error();
    SSL_CTX_set_mode(sc, SSL_MODE_NO_AUTO_CHAIN);
}

/* Everything the options name, in the order OpenSSL needs it (the key after its certificate,
 * PKCS#12 after the trust store it adds to). */
int tlsk__load_credentials(SSL_CTX *sc, const struct tlsk_context_options *o,
                           struct tlsk__detail *d)
{
    int rc = 0;

    SSL_CTX_set_default_passwd_cb(sc, passwd_cb);
    if ((o->cert_file || o->cert_pem) &&
        ((rc = load_cert_chain(sc, o, d)) != 0 || (rc = load_key(sc, o, d)) != 0)) {
        return rc;
    }
    if ((rc = load_trust(sc, o, d)) != 0) {
        return rc;
    }
    if ((o->pfx_file || o->pfx) && (rc = load_pfx(sc, o, d)) != 0) {
        return rc;
    }
    if ((o->crl_file || o->crl_pem) && (rc = load_crl(sc, o, d)) != 0) {
        return rc;
    }
    freeze_chain(sc);
    return 0;
}

/* contexts.c - see contexts.h. */
#include "contexts.h"

#include <stdio.h>
#include <stdlib.h>

#include "tap.h"

const char *hc_fixture(int tree, const char *name)
{
    static _Thread_local char path[64][512];
    static _Thread_local int slot;
    const char *dir = getenv(tree == T_EC ? "TLSK_FIXTURES_EC" : "TLSK_FIXTURES");
    char *p = path[slot++ & 63];

    snprintf(p, 512, "%s/%s", dir ? dir : tree == T_EC ? "build/fixtures/ec" : "build/fixtures/rsa",
             name);
    return p;
}

void hc_identity(struct tlsk_context_options *o, int tree, const char *id)
{
    char c[64], k[64];
    if (!id) {
        return;
    }
    snprintf(c, sizeof c, "%s-cert.pem", id);
    snprintf(k, sizeof k, "%s-key.pem", id);
    o->cert_file = hc_fixture(tree, c);
    o->key_file = hc_fixture(tree, k);
}

struct tlsk_context *hc_new(const struct tlsk_context_options *o, const char *what)
{
    struct tlsk_context *c = NULL;
    char err[512] = "";
    int rc = tlsk_context_new(&c, o, err, sizeof err);
    if (rc != 0) {
        tap_diag("context %s: %s: %s", what, tlsk_err_name(rc), err);
        return NULL;
    }
    return c;
}

struct tlsk_context *hc_server(int tree, const char *id, int v, const char *ca, unsigned flags)
{
    struct tlsk_context_options o = { .min_version = v, .max_version = v, .flags = flags };
    hc_identity(&o, tree, id);
    if (ca) {
        o.ca_file = hc_fixture(tree, ca);
    }
    return hc_new(&o, id);
}

struct tlsk_context *hc_client(int tree, const char *id, int v, unsigned flags)
{
    struct tlsk_context_options o = { .min_version = v, .max_version = v, .flags = flags,
                                      .ca_file = hc_fixture(tree, "ca1-cert.pem") };
    hc_identity(&o, tree, id);
    return hc_new(&o, "client");
}

const char *hc_tree_name(int tree)
{
    return tree == T_EC ? "EC" : "RSA";
}

const char *hc_vname(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : v == TLSK_TLS1_2 ? "1.2" : "any";
}

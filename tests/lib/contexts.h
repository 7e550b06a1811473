/* contexts.h - contexts from the two fixture trees (T_RSA: env TLSK_FIXTURES, else
 * build/fixtures/rsa; T_EC: env TLSK_FIXTURES_EC, else build/fixtures/ec), as test_options.c
 * and test_sni.c build them.  An identity id names "<id>-cert.pem" and "<id>-key.pem" of the
 * tree.  Failures give NULL and a TAP diagnostic (never an ok line). */
#ifndef TLSK_TEST_CONTEXTS_H
#define TLSK_TEST_CONTEXTS_H

#include "tlsk.h"

enum { T_RSA = 0, T_EC = 1 };

/* Path of a fixture in tree (per-thread rotating buffers: 64 live at once). */
const char *hc_fixture(int tree, const char *name);
/* Set o's cert_file and key_file to identity id of tree; id NULL leaves o alone. */
void hc_identity(struct tlsk_context_options *o, int tree, const char *id);
/* tlsk_context_new(o); on failure a diagnostic "context <what>: <code>: <error>" and NULL. */
struct tlsk_context *hc_new(const struct tlsk_context_options *o, const char *what);
/* Server context: identity id of tree, min = max = version v (0 any), CA file ca of tree
 * (NULL none), flags. */
struct tlsk_context *hc_server(int tree, const char *id, int v, const char *ca, unsigned flags);
/* Client context trusting ca1 of tree, min = max = version v (0 any), optional identity id,
 * flags. */
struct tlsk_context *hc_client(int tree, const char *id, int v, unsigned flags);

/* "RSA" or "EC". */
const char *hc_tree_name(int tree);
/* "1.2", "1.3" or "any" for a TLSK_TLS1_* version or 0. */
const char *hc_vname(int v);

#endif

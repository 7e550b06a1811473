/*
 * test_record.c - lib/record.c against records made by other TLS implementations.
 *
 * For every vector: tlsk__record_seal(plaintext, seq, type) gives the record byte for byte,
 * tlsk__record_open gives back the plaintext and type, every single-bit change to the record
 * is refused (-EPROTO for the length field, -EBADMSG elsewhere), and so are the wrong sequence
 * number, a truncated record and short buffers.  A TLS 1.3 vector with a traffic secret also
 * checks that its key and IV are HKDF-Expand-Label(secret, "key"/"iv") (RFC 8446 7.3).
 *
 * Sources:
 *
 *   RFC 8448 section 3 ("Simple 1-RTT Handshake", TLS_AES_128_GCM_SHA256): the application
 *   traffic secrets, keys and IVs, and the five records protected under them, as the RFC
 *   prints them: the server's NewSessionTicket (sequence 0), the client's application data
 *   (client sequence 0), the server's echo (1), and both close_notify alerts (client 1,
 *   server 2).  AEAD is deterministic, so sealing the RFC's plaintext with the RFC's key must
 *   give the RFC's record exactly, and a mistyped byte anywhere would fail its tag.
 *
 *   OpenSSL 3.0.19's own record layer, for the other ciphers and for TLS 1.2 (RFC 8448 has no
 *   TLS 1.2 and no other cipher): a throwaway program, kept outside the repository, ran one
 *   real handshake per suite between two SSL objects over memory BIOs (RSA agent1 fixture,
 *   ECDHE), had the client SSL_write a string and then SSL_shutdown, took the bytes off the
 *   client's write BIO and fed them to the server, which read them back.  Keys came from the
 *   connection with public APIs as lib/offload.c derives them: TLS 1.3 from the keylog
 *   callback's CLIENT_TRAFFIC_SECRET_0 through the TLS13-KDF, TLS 1.2 from the TLS1-PRF key
 *   block (master secret, "key expansion", server_random + client_random; RFC 5246 6.3):
 *   client_write_key and client_write_IV.  TLS 1.2 sequence numbers start at the client's
 *   Finished, so application data is 1 and close_notify 2.  OpenSSL draws the first TLS 1.2
 *   AES-GCM explicit nonce at random and counts up; the program made that draw return zero
 *   (a RAND method), so the explicit nonce equals the sequence number, as tlsk sends it
 *   (RFC 5288 3 allows any unique value).  The TLS 1.3 AES-256-GCM connection's second
 *   record was written with SSL_set_block_padding(64): it carries 12 zero bytes of padding
 *   after the inner content type.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "internal.h"
#include "kconst.h"
#include "tap.h"

struct vec {
    const char *name;
    int version;
    int cipher;
    const char *digest; /* the suite's hash, for the secret */
    const char *secret; /* TLS 1.3 traffic secret, or NULL */
    const char *key, *iv;
    uint64_t seq;
    int type;         /* the content type (TLS 1.3: the inner one) */
    const char *pt;   /* the plaintext in hex, */
    const char *text; /* or as text */
    const char *rec;
    int padding;      /* TLS 1.3 zero bytes after the inner type (OpenSSL's block padding) */
};

/* RFC 8448 section 3. */
#define RFC_C_SECRET \
    "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 " \
    "87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5"
#define RFC_S_SECRET \
    "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 " \
    "82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"
#define RFC_C_KEY "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"
#define RFC_C_IV "5b 78 92 3d ee 08 57 90 33 e5 23 d9"
#define RFC_S_KEY "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"
#define RFC_S_IV "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"
/* "payload (50 octets)" of both application_data records. */
#define RFC_APP_PAYLOAD \
    "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f " \
    "10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f " \
    "20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e 2f " \
    "30 31"
#define CLOSE_NOTIFY "01 00" /* alert level warning(1), close_notify(0) */

static const struct vec vecs[] = {
    {
        .name = "RFC 8448 3 server NewSessionTicket",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .secret = RFC_S_SECRET,
        .key = RFC_S_KEY,
        .iv = RFC_S_IV,
        .seq = 0,
        .type = TLSK_REC_HANDSHAKE,
        .pt = "04 00 00 c9 00 00 00 1e fa d6 aa c5 02 00 00 00 "
              "b2 2c 03 5d 82 93 59 ee 5f f7 af 4e c9 00 00 00 "
              "00 26 2a 64 94 dc 48 6d 2c 8a 34 cb 33 fa 90 bf "
              "1b 00 70 ad 3c 49 88 83 c9 36 7c 09 a2 be 78 5a "
              "bc 55 cd 22 60 97 a3 a9 82 11 72 83 f8 2a 03 a1 "
              "43 ef d3 ff 5d d3 6d 64 e8 61 be 7f d6 1d 28 27 "
              "db 27 9c ce 14 50 77 d4 54 a3 66 4d 4e 6d a4 d2 "
              "9e e0 37 25 a6 a4 da fc d0 fc 67 d2 ae a7 05 29 "
              "51 3e 3d a2 67 7f a5 90 6c 5b 3f 7d 8f 92 f2 28 "
              "bd a4 0d da 72 14 70 f9 fb f2 97 b5 ae a6 17 64 "
              "6f ac 5c 03 27 2e 97 07 27 c6 21 a7 91 41 ef 5f "
              "7d e6 50 5e 5b fb c3 88 e9 33 43 69 40 93 93 4a "
              "e4 d3 57 00 08 00 2a 00 04 00 00 04 00",
        .rec = "17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 "
               "87 68 0d e5 13 4a 2b 24 0e 6c ff ac 11 6e 95 d4 "
               "1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a "
               "01 59 40 25 2f 55 71 3e 06 1d c1 3e 07 88 91 a3 "
               "8e fb cf 57 53 ad 8e f1 70 ad 3c 73 53 d1 6d 9d "
               "a7 73 b9 ca 7f 2b 9f a1 b6 c0 d4 a3 d0 3f 75 e0 "
               "9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 "
               "9b 29 99 ce 13 06 46 15 13 98 91 d5 e4 c5 b4 06 "
               "f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77 "
               "f8 1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 "
               "9d 86 cb ee ac 87 aa c3 47 d1 43 f9 60 5d 64 f6 "
               "50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74 "
               "bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3 bc e1 "
               "86 96 12 9c 81 53 55 6b 3b 6c 67 79 b3 7b f1 59 "
               "85 68 4f",
    },
    {
        .name = "RFC 8448 3 client application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .secret = RFC_C_SECRET,
        .key = RFC_C_KEY,
        .iv = RFC_C_IV,
        .seq = 0,
        .type = TLSK_REC_APPDATA,
        .pt = RFC_APP_PAYLOAD,
        .rec = "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe "
               "82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f "
               "2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b "
               "62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 "
               "3a ee bb 21 69 49 15 e4",
    },
    {
        .name = "RFC 8448 3 server application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .secret = RFC_S_SECRET,
        .key = RFC_S_KEY,
        .iv = RFC_S_IV,
        .seq = 1,
        .type = TLSK_REC_APPDATA,
        .pt = RFC_APP_PAYLOAD,
        .rec = "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad "
               "36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36 "
               "e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 "
               "fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 "
               "0d d0 32 e1 67 c2 95 5d",
    },
    {
        .name = "RFC 8448 3 client close_notify",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .secret = RFC_C_SECRET,
        .key = RFC_C_KEY,
        .iv = RFC_C_IV,
        .seq = 1,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3",
    },
    {
        .name = "RFC 8448 3 server close_notify",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .secret = RFC_S_SECRET,
        .key = RFC_S_KEY,
        .iv = RFC_S_IV,
        .seq = 2,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9",
    },
    /* OpenSSL 3.0.19, TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256 (iv: 4-byte salt, then zeros as
     * lib/offload.c leaves them). */
    {
        .name = "OpenSSL TLS 1.2 AES-128-GCM application data",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .key = "a5f6a850e34ba7edc9e1da1f2c41033d",
        .iv = "9fda2bd90000000000000000",
        .seq = 1,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.2 AES-128-GCM\n",
        .rec = "1703030040000000000000000163ad28a97e40ba9361df63217fb5e9eaa0b4c4"
               "e4f7e6d922fc1ea6035d99a7f6fc31432fcf31225301482eaf608cb9c87a8fca"
               "16214faf7c",
    },
    {
        .name = "OpenSSL TLS 1.2 AES-128-GCM close_notify",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_AES_128_GCM,
        .digest = "SHA256",
        .key = "a5f6a850e34ba7edc9e1da1f2c41033d",
        .iv = "9fda2bd90000000000000000",
        .seq = 2,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "150303001a00000000000000025656d37e0d0352bc366b0e4d893bcdf5fdb9",
    },
    /* TLS 1.2 ECDHE-RSA-AES256-GCM-SHA384. */
    {
        .name = "OpenSSL TLS 1.2 AES-256-GCM application data",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_AES_256_GCM,
        .digest = "SHA384",
        .key = "09acc8d38e11912eb8f5f740c70b39321943dff060fb9cc58678304af835e1c1",
        .iv = "eefd6dc20000000000000000",
        .seq = 1,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.2 AES-256-GCM\n",
        .rec = "170303004000000000000000012b84efb69e3e9317b926fee137726ad049396d"
               "51cc7dc02adaf416e7b0a969fb1eaa645941ab655a206ac10799971a8736da62"
               "9650864ce0",
    },
    {
        .name = "OpenSSL TLS 1.2 AES-256-GCM close_notify",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_AES_256_GCM,
        .digest = "SHA384",
        .key = "09acc8d38e11912eb8f5f740c70b39321943dff060fb9cc58678304af835e1c1",
        .iv = "eefd6dc20000000000000000",
        .seq = 2,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "150303001a00000000000000024e33c66ec8e3f7b916d3712c271ee0e9bc4e",
    },
    /* TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305: a 12-byte write IV, no explicit nonce. */
    {
        .name = "OpenSSL TLS 1.2 ChaCha20-Poly1305 application data",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_CHACHA20_POLY1305,
        .digest = "SHA256",
        .key = "9d77198105c8371b2909f28f7ded605b7ab3c1304ac7b656506224fc296ac56c",
        .iv = "3d63724088880ae71733bf5b",
        .seq = 1,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.2 ChaCha20-Poly1305\n",
        .rec = "170303003ee7d79b2d4b4b6222cd464177196d5c38a659bb03c0a43effe12e09"
               "6313dc16a4eee9526b4e6f92ae11a3d30554304c7fdd69280911b23b0f57cfa2"
               "910f61",
    },
    {
        .name = "OpenSSL TLS 1.2 ChaCha20-Poly1305 close_notify",
        .version = TLSK_TLS1_2,
        .cipher = TLSK_CIPHER_CHACHA20_POLY1305,
        .digest = "SHA256",
        .key = "9d77198105c8371b2909f28f7ded605b7ab3c1304ac7b656506224fc296ac56c",
        .iv = "3d63724088880ae71733bf5b",
        .seq = 2,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "1503030012ac3b034bb749817618fbd86ddc2b825b7660",
    },
    /* TLS 1.3 TLS_AES_256_GCM_SHA384. */
    {
        .name = "OpenSSL TLS 1.3 AES-256-GCM application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_256_GCM,
        .digest = "SHA384",
        .secret = "540a6f254cddde28a4e1b794ec0acac1ddab88884371a5d1277c8fd18378767f"
                  "7f29ac6fa4005f79d692c8df9a05085b",
        .key = "381e4f242281285bf81088ed27b18155c219736e808e5a1496c2577af1a69b45",
        .iv = "4d7b78b7379660f582ecc80a",
        .seq = 0,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.3 AES-256-GCM\n",
        .rec = "17030300393e294536eafb6989aa23de6cdec4184f6a387507e031bd19a8be59"
               "c25aba0e602702a86f3d3a0c74813dc893f4d54195ae88186747fc890f3f",
    },
    {
        .name = "OpenSSL TLS 1.3 AES-256-GCM padded application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_256_GCM,
        .digest = "SHA384",
        .secret = "540a6f254cddde28a4e1b794ec0acac1ddab88884371a5d1277c8fd18378767f"
                  "7f29ac6fa4005f79d692c8df9a05085b",
        .key = "381e4f242281285bf81088ed27b18155c219736e808e5a1496c2577af1a69b45",
        .iv = "4d7b78b7379660f582ecc80a",
        .seq = 1,
        .type = TLSK_REC_APPDATA,
        .text = "padded to a multiple of 64 by SSL_set_block_padding",
        .rec = "170303005074d5ac0b104092b3973e53dfdc3dbb095227b71c5f71cae3618bf6"
               "7b5a41c5246b9377e8cf143b9f9a8256a71b9330d2f188ba1f1b28145b08bc35"
               "e459c97e8b2704b4442fc757a67f192cd43152dfb1",
        .padding = 12,
    },
    {
        .name = "OpenSSL TLS 1.3 AES-256-GCM close_notify",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_256_GCM,
        .digest = "SHA384",
        .secret = "540a6f254cddde28a4e1b794ec0acac1ddab88884371a5d1277c8fd18378767f"
                  "7f29ac6fa4005f79d692c8df9a05085b",
        .key = "381e4f242281285bf81088ed27b18155c219736e808e5a1496c2577af1a69b45",
        .iv = "4d7b78b7379660f582ecc80a",
        .seq = 2,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "170303001370af29d3399dfa623570a363d3be738555aab6",
    },
    /* TLS 1.3 TLS_CHACHA20_POLY1305_SHA256. */
    {
        .name = "OpenSSL TLS 1.3 ChaCha20-Poly1305 application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_CHACHA20_POLY1305,
        .digest = "SHA256",
        .secret = "b0b148bc8e78151026b193f74d7f363daf2721de31e7d9448d4b48832ca0a9a8",
        .key = "ee0367efebdf1e74742344d9fb8977edd6b9c4ac8e80bfe269c3df8f684056ab",
        .iv = "edb77dc878c3ed58284953c8",
        .seq = 0,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.3 ChaCha20-Poly1305\n",
        .rec = "170303003f1075ed98ea524a2c1db7cd70af33b0504654f8fec1deccbb2ef3e5"
               "2fb2265a9377d33e8e4c1750e4700f72a4e67af07c7f6cfa6377c93b8dea29b5"
               "f1a9ab88",
    },
    {
        .name = "OpenSSL TLS 1.3 ChaCha20-Poly1305 close_notify",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_CHACHA20_POLY1305,
        .digest = "SHA256",
        .secret = "b0b148bc8e78151026b193f74d7f363daf2721de31e7d9448d4b48832ca0a9a8",
        .key = "ee0367efebdf1e74742344d9fb8977edd6b9c4ac8e80bfe269c3df8f684056ab",
        .iv = "edb77dc878c3ed58284953c8",
        .seq = 1,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "1703030013869f5bfee0b18ed0fdb697ae9634bc8034654c",
    },
    /* TLS 1.3 TLS_AES_128_CCM_SHA256. */
    {
        .name = "OpenSSL TLS 1.3 AES-128-CCM application data",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_CCM,
        .digest = "SHA256",
        .secret = "86d049f69846ca565dadea4cf08e8bb27d0ced146a909049d2f1cb700f8eb5d5",
        .key = "d13c40759a5dea6f3dc732211904ff2d",
        .iv = "7fac71e178ddcbc549565c04",
        .seq = 0,
        .type = TLSK_REC_APPDATA,
        .text = "tlsk record vector: TLS 1.3 AES-128-CCM\n",
        .rec = "170303003927261d22b5fe184a78cb4e0f4a4f1519ea8f17cae1c9f8b1ba77a1"
               "3d861ba98e7bef59219c2606292709836d9972b9cce8426d7fd58913c6a6",
    },
    {
        .name = "OpenSSL TLS 1.3 AES-128-CCM close_notify",
        .version = TLSK_TLS1_3,
        .cipher = TLSK_CIPHER_AES_128_CCM,
        .digest = "SHA256",
        .secret = "86d049f69846ca565dadea4cf08e8bb27d0ced146a909049d2f1cb700f8eb5d5",
        .key = "d13c40759a5dea6f3dc732211904ff2d",
        .iv = "7fac71e178ddcbc549565c04",
        .seq = 1,
        .type = TLSK_REC_ALERT,
        .pt = CLOSE_NOTIFY,
        .rec = "1703030013da69da93b20c057b3f434ccdd239612e8c2dce",
    },
};

/* Hex with optional spaces -> bytes.  Bails out on a malformed table. */
static size_t unhex(const char *h, unsigned char *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;

    for (; *h; h++) {
        int v;
        if (isspace((unsigned char)*h)) {
            continue;
        }
        if (!isxdigit((unsigned char)*h) || n == cap) {
            tap_bail("malformed hex in the vector table");
        }
        v = isdigit((unsigned char)*h) ? *h - '0' : (tolower((unsigned char)*h) - 'a' + 10);
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (unsigned char)(hi << 4 | v);
            hi = -1;
        }
    }
    if (hi >= 0) {
        tap_bail("odd hex length in the vector table");
    }
    return n;
}

static void keys_of(const struct vec *v, struct tlsk__keys *k)
{
    memset(k, 0, sizeof *k);
    k->version = v->version;
    k->tlsk_cipher = v->cipher;
    k->key_len = unhex(v->key, k->key, sizeof k->key);
    if (unhex(v->iv, k->iv, sizeof k->iv) != 12) {
        tap_bail("an IV is not 12 bytes");
    }
}

/* HKDF-Expand-Label(secret, label, "", len) with OpenSSL's TLS13-KDF (RFC 8446 7.1). */
static int expand_label(const char *digest, const unsigned char *sec, size_t sec_len,
                        const char *label, unsigned char *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS13-KDF", NULL);
    EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    int rc = -1;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)sec, sec_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)"tls13 ", 6),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label, strlen(label)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, (void *)"", 0),
        OSSL_PARAM_construct_end(),
    };

    if (kc && EVP_KDF_derive(kc, out, out_len, p) == 1) {
        rc = 0;
    }
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    return rc;
}

static void check_secret(const struct vec *v, const struct tlsk__keys *k)
{
    unsigned char sec[64], key[32], iv[12];
    size_t sec_len = unhex(v->secret, sec, sizeof sec);

    TAP_OK(expand_label(v->digest, sec, sec_len, "key", key, k->key_len) == 0 &&
               expand_label(v->digest, sec, sec_len, "iv", iv, 12) == 0 &&
               memcmp(key, k->key, k->key_len) == 0 && memcmp(iv, k->iv, 12) == 0,
           "%s: key and iv expand from the traffic secret", v->name);
}

/* Where a byte sits in the record, for the single-bit-change checks. */
enum region { R_HEADER, R_LENGTH, R_NONCE, R_CIPHERTEXT, R_TAG, R_COUNT };
static const char *const region_name[R_COUNT] = {
    "header type/version", "header length", "explicit nonce", "ciphertext", "tag",
};

static enum region region_of(const struct vec *v, size_t i, size_t rec_len)
{
    bool explicit_nonce = v->version == TLSK_TLS1_2 && v->cipher != TLSK_CIPHER_CHACHA20_POLY1305;

    if (i < 3) {
        return R_HEADER;
    }
    if (i < 5) {
        return R_LENGTH;
    }
    if (explicit_nonce && i < 13) {
        return R_NONCE;
    }
    return i >= rec_len - TLSK_TAG_LEN ? R_TAG : R_CIPHERTEXT;
}

/* Every single-bit change is refused: the length field no longer matches (-EPROTO), anything
 * else fails authentication (-EBADMSG; the header, nonce and sequence number are all in the
 * AAD or the nonce). */
static void check_bit_flips(const struct vec *v, const struct tlsk__keys *k,
                            const unsigned char *rec, size_t rec_len)
{
    static unsigned char bad[5 + TLSK_MAX_PLAINTEXT + 256 + TLSK_TAG_LEN];
    static unsigned char out[TLSK_MAX_PLAINTEXT + 256];
    int tried[R_COUNT] = { 0 }, wrong[R_COUNT] = { 0 };

    memcpy(bad, rec, rec_len);
    for (size_t i = 0; i < rec_len; i++) {
        enum region r = region_of(v, i, rec_len);
        int want = r == R_LENGTH ? -EPROTO : -EBADMSG;

        for (int bit = 0; bit < 8; bit++) {
            size_t n = 0;
            int type = -1, rc;

            bad[i] ^= (unsigned char)(1u << bit);
            rc = tlsk__record_open(k, v->seq, bad, rec_len, &type, out, sizeof out, &n);
            bad[i] ^= (unsigned char)(1u << bit);
            tried[r]++;
            if (rc != want) {
                if (wrong[r]++ == 0) {
                    tap_diag("  byte %zu bit %d: got %d, expected %d", i, bit, rc, want);
                }
            }
        }
    }
    for (int r = 0; r < R_COUNT; r++) {
        if (tried[r] > 0) {
            TAP_OK(wrong[r] == 0, "%s: all %d bit flips in the %s refused with %s", v->name,
                   tried[r], region_name[r], r == R_LENGTH ? "-EPROTO" : "-EBADMSG");
        }
    }
}

static void check_vector(const struct vec *v)
{
    static unsigned char pt[TLSK_MAX_PLAINTEXT], rec[5 + TLSK_MAX_PLAINTEXT + 256 + TLSK_TAG_LEN];
    static unsigned char out[5 + TLSK_MAX_PLAINTEXT + 256 + TLSK_TAG_LEN];
    struct tlsk__keys k;
    size_t pt_len, rec_len, n = 0, sealed_len;
    int type = -1, rc;

    keys_of(v, &k);
    if (v->pt) {
        pt_len = unhex(v->pt, pt, sizeof pt);
    } else {
        pt_len = strlen(v->text);
        memcpy(pt, v->text, pt_len);
    }
    rec_len = unhex(v->rec, rec, sizeof rec);
    sealed_len = v->padding ? rec_len - (size_t)v->padding : rec_len;

    if (v->secret) {
        check_secret(v, &k);
    }

    /* Seal: the exact record (a padded one is sealed without the padding). */
    rc = tlsk__record_seal(&k, v->seq, v->type, pt, pt_len, out, sizeof out, &n);
    if (v->padding) {
        TAP_OK(rc == 0 && n == sealed_len, "%s: seal gives the unpadded record (%zu bytes)",
               v->name, sealed_len);
    } else {
        TAP_OK(rc == 0 && n == rec_len && memcmp(out, rec, rec_len) == 0,
               "%s: seal(seq %llu) gives the record byte for byte", v->name,
               (unsigned long long)v->seq);
        if (rc != 0 || n != rec_len) {
            tap_diag("  rc %d, %zu bytes, expected %zu", rc, n, rec_len);
        }
    }

    /* Open: plaintext and type back, padding stripped. */
    memset(out, 0xa5, sizeof out);
    n = 0;
    rc = tlsk__record_open(&k, v->seq, rec, rec_len, &type, out, sizeof out, &n);
    TAP_OK(rc == 0 && type == v->type && n == pt_len && memcmp(out, pt, pt_len) == 0,
           "%s: open gives the plaintext (%zu bytes) and type %d%s", v->name, pt_len, v->type,
           v->padding ? ", padding stripped" : "");
    if (rc != 0 || type != v->type || n != pt_len) {
        tap_diag("  rc %d, type %d, %zu bytes", rc, type, n);
    }

    check_bit_flips(v, &k, rec, rec_len);

    rc = tlsk__record_open(&k, v->seq + 1, rec, rec_len, &type, out, sizeof out, &n);
    TAP_IS(rc, -EBADMSG, "%s: open at the next sequence number fails", v->name);
    rc = tlsk__record_open(&k, v->seq ^ (1ull << 63), rec, rec_len, &type, out, sizeof out, &n);
    TAP_IS(rc, -EBADMSG, "%s: open with the sequence number's top bit changed fails", v->name);
    rc = tlsk__record_open(&k, v->seq, rec, rec_len - 1, &type, out, sizeof out, &n);
    TAP_IS(rc, -EPROTO, "%s: a record one byte short of its length field is malformed", v->name);

    /* Buffers exactly large enough work; one byte less is refused. */
    rc = tlsk__record_seal(&k, v->seq, v->type, pt, pt_len, out, sealed_len - 1, &n);
    TAP_IS(rc, -ENOBUFS, "%s: seal into %zu bytes (one short) gives -ENOBUFS", v->name,
           sealed_len - 1);
    {
        size_t need = rec_len - 5 - TLSK_TAG_LEN; /* inner plaintext, or explicit nonce + pt */
        int rc_exact, rc_short;

        if (v->version == TLSK_TLS1_2 && v->cipher != TLSK_CIPHER_CHACHA20_POLY1305) {
            need -= 8;
        }
        rc_exact = tlsk__record_open(&k, v->seq, rec, rec_len, &type, out, need, &n);
        rc_short = tlsk__record_open(&k, v->seq, rec, rec_len, &type, out, need - 1, &n);
        TAP_OK(rc_exact == 0 && rc_short == -EPROTO,
               "%s: open into %zu bytes works, into %zu is refused with -EPROTO", v->name, need,
               need - 1);
    }

    /* A far sequence number: all eight bytes of it go into the nonce (and TLS 1.2's AAD). */
    {
        uint64_t far = 0x0123456789abcdefull;

        rc = tlsk__record_seal(&k, far, v->type, pt, pt_len, rec, sizeof rec, &rec_len);
        rc = rc ? rc : tlsk__record_open(&k, far, rec, rec_len, &type, out, sizeof out, &n);
        TAP_OK(rc == 0 && type == v->type && n == pt_len && memcmp(out, pt, pt_len) == 0,
               "%s: seal and open at sequence %#llx round-trip", v->name,
               (unsigned long long)far);
        rc = tlsk__record_open(&k, far ^ (1ull << 56), rec, rec_len, &type, out, sizeof out, &n);
        TAP_IS(rc, -EBADMSG, "%s: and open at a sequence differing in its top byte fails",
               v->name);
    }
    OPENSSL_cleanse(&k, sizeof k);
}

/* "TLS 1.3 AES-128-GCM" and so on, for the checks made once per suite. */
static const char *suite_name(const struct vec *v)
{
    static const char *const ciphers[TLSK_CIPHER_COUNT] = {
        [TLSK_CIPHER_AES_128_GCM] = "AES-128-GCM",
        [TLSK_CIPHER_AES_256_GCM] = "AES-256-GCM",
        [TLSK_CIPHER_CHACHA20_POLY1305] = "ChaCha20-Poly1305",
        [TLSK_CIPHER_AES_128_CCM] = "AES-128-CCM",
    };
    static char buf[64];

    snprintf(buf, sizeof buf, "TLS 1.%d %s", v->version == TLSK_TLS1_3 ? 3 : 2,
             ciphers[v->cipher]);
    return buf;
}

/* Plaintext of exactly 2^14 bytes is sealed and opened; one byte more is refused (RFC 8446
 * 5.1, RFC 5246 6.2.1). */
static void check_sizes(const struct vec *v)
{
    static unsigned char pt[TLSK_MAX_PLAINTEXT + 1];
    static unsigned char rec[5 + TLSK_MAX_PLAINTEXT + 256 + TLSK_TAG_LEN];
    static unsigned char out[TLSK_MAX_PLAINTEXT + 256];
    struct tlsk__keys k;
    size_t n = 0, m = 0;
    int type = -1, rc;

    keys_of(v, &k);
    for (size_t i = 0; i < sizeof pt; i++) {
        pt[i] = (unsigned char)(i * 7 + 1);
    }
    rc = tlsk__record_seal(&k, 5, TLSK_REC_APPDATA, pt, TLSK_MAX_PLAINTEXT, rec, sizeof rec, &n);
    rc = rc ? rc : tlsk__record_open(&k, 5, rec, n, &type, out, sizeof out, &m);
    TAP_OK(rc == 0 && m == TLSK_MAX_PLAINTEXT && memcmp(out, pt, m) == 0,
           "%s: 2^14 bytes of plaintext seal and open", suite_name(v));
    rc = tlsk__record_seal(&k, 5, TLSK_REC_APPDATA, pt, TLSK_MAX_PLAINTEXT + 1, rec, sizeof rec,
                           &n);
    TAP_IS(rc, -EMSGSIZE, "%s: 2^14 + 1 bytes of plaintext are refused with -EMSGSIZE",
           suite_name(v));
}

/* TLS 1.3 AES-GCM by hand (RFC 8446 5.2, 5.3): inner plaintext in, record out, without
 * tlsk__record_seal's own limit, so that records over 2^14 can be made.  The record's length,
 * or 0 when the suite is not AES-GCM or OpenSSL fails. */
static size_t seal13_by_hand(const struct tlsk__keys *k, uint64_t seq, const unsigned char *inner,
                             size_t inner_len, unsigned char *rec)
{
    const EVP_CIPHER *c = k->tlsk_cipher == TLSK_CIPHER_AES_128_GCM   ? EVP_aes_128_gcm()
                          : k->tlsk_cipher == TLSK_CIPHER_AES_256_GCM ? EVP_aes_256_gcm()
                                                                      : NULL;
    EVP_CIPHER_CTX *cx = c ? EVP_CIPHER_CTX_new() : NULL;
    unsigned char nonce[12];
    size_t len = inner_len + TLSK_TAG_LEN;
    int n = 0, f = 0, ok;

    memcpy(nonce, k->iv, 12);
    for (int i = 0; i < 8; i++) {
        nonce[4 + i] ^= (unsigned char)(seq >> (56 - 8 * i));
    }
    rec[0] = TLSK_REC_APPDATA, rec[1] = 3, rec[2] = 3;
    rec[3] = (unsigned char)(len >> 8), rec[4] = (unsigned char)len;
    ok = cx && EVP_EncryptInit_ex(cx, c, NULL, k->key, nonce) == 1 &&
         EVP_EncryptUpdate(cx, NULL, &n, rec, 5) == 1 &&
         EVP_EncryptUpdate(cx, rec + 5, &n, inner, (int)inner_len) == 1 &&
         EVP_EncryptFinal_ex(cx, rec + 5 + n, &f) == 1 &&
         EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, TLSK_TAG_LEN, rec + 5 + inner_len) == 1;
    EVP_CIPHER_CTX_free(cx);
    return ok ? 5 + len : 0;
}

/* Records over the limits are refused with -EMSGSIZE (record_overflow), as the kernel does:
 * a ciphertext longer than the version allows, before any decryption, and in TLS 1.3 an
 * authentic record whose content is over 2^14 bytes.  2^14 bytes of content, its type, 239
 * bytes of padding and the tag make exactly 2^14 + 256: within them. */
static void check_overflow(const struct vec *v)
{
    static unsigned char inner[TLSK_MAX_PLAINTEXT + 256], rec[5 + TLSK_MAX_PLAINTEXT + 2048 + 64];
    static unsigned char out[TLSK_MAX_PLAINTEXT + 2048 + 64];
    size_t limit = TLSK_MAX_PLAINTEXT + (v->version == TLSK_TLS1_3 ? 256 : 2048) + 1;
    struct tlsk__keys k;
    size_t n = 0, m = 0;
    int type = -1, rc;

    keys_of(v, &k);
    memset(rec, 0x5a, sizeof rec);
    rec[0] = TLSK_REC_APPDATA, rec[1] = 3, rec[2] = 3;
    rec[3] = (unsigned char)(limit >> 8), rec[4] = (unsigned char)limit;
    rc = tlsk__record_open(&k, 0, rec, 5 + limit, &type, out, sizeof out, &m);
    TAP_IS(rc, -EMSGSIZE, "%s: a ciphertext of %zu bytes, one over the limit, is -EMSGSIZE",
           suite_name(v), limit);
    if (v->version == TLSK_TLS1_2) {
        /* Within the ciphertext limit, but 2^14 + 1 bytes of plaintext: known before
         * decrypting, so the bytes need not authenticate. */
        size_t ex = v->cipher == TLSK_CIPHER_CHACHA20_POLY1305 ? 0 : 8;
        size_t len = ex + TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN;
        rec[3] = (unsigned char)(len >> 8), rec[4] = (unsigned char)len;
        rc = tlsk__record_open(&k, 0, rec, 5 + len, &type, out, sizeof out, &m);
        TAP_IS(rc, -EMSGSIZE, "%s: 2^14 + 1 bytes of plaintext inside the ciphertext limit is "
               "-EMSGSIZE", suite_name(v));
    }
    if (v->version != TLSK_TLS1_3 || (v->cipher != TLSK_CIPHER_AES_128_GCM &&
                                         v->cipher != TLSK_CIPHER_AES_256_GCM)) {
        return;
    }
    memset(inner, 'x', sizeof inner);
    inner[TLSK_MAX_PLAINTEXT] = TLSK_REC_APPDATA;
    memset(inner + TLSK_MAX_PLAINTEXT + 1, 0, 239);
    n = seal13_by_hand(&k, 9, inner, TLSK_MAX_PLAINTEXT + 240, rec);
    rc = n ? tlsk__record_open(&k, 9, rec, n, &type, out, sizeof out, &m) : -1;
    TAP_OK(rc == 0 && m == TLSK_MAX_PLAINTEXT && type == TLSK_REC_APPDATA,
           "%s: 2^14 bytes of content and 239 of padding (2^14 + 256 in all) open (%d, %zu)", suite_name(v), rc, m);
    memset(inner, 'x', sizeof inner);
    inner[TLSK_MAX_PLAINTEXT + 1] = TLSK_REC_APPDATA;
    n = seal13_by_hand(&k, 9, inner, TLSK_MAX_PLAINTEXT + 2, rec);
    rc = n ? tlsk__record_open(&k, 9, rec, n, &type, out, sizeof out, &m) : -1;
    TAP_IS(rc, -EMSGSIZE, "%s: an authentic record with 2^14 + 1 bytes of content is -EMSGSIZE",
           suite_name(v));
}

/* TLS 1.3: an inner plaintext of zeros only has no content type (RFC 8446 5.4): malformed.
 * Sealing type 0 after an empty plaintext makes exactly that record. */
static void check_no_content_type(const struct vec *v)
{
    unsigned char empty[1] = { 0 }, rec[64], out[64];
    struct tlsk__keys k;
    size_t n = 0, m = 0;
    int type = -1, rc;

    keys_of(v, &k);
    rc = tlsk__record_seal(&k, 0, 0, empty, 0, rec, sizeof rec, &n);
    TAP_OK(rc == 0 && n == 5 + 1 + TLSK_TAG_LEN, "%s: an all-zero inner plaintext seals",
           suite_name(v));
    rc = tlsk__record_open(&k, 0, rec, n, &type, out, sizeof out, &m);
    TAP_IS(rc, -EPROTO, "%s: and opening it finds no content type (-EPROTO)", suite_name(v));
}

int main(void)
{
    bool seen[2][TLSK_CIPHER_COUNT] = { { false } };

    for (size_t i = 0; i < TLSK_ARRAY_SIZE(vecs); i++) {
        check_vector(&vecs[i]);
    }
    /* The limits once for each version and cipher in the table. */
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(vecs); i++) {
        const struct vec *v = &vecs[i];
        bool *done = &seen[v->version == TLSK_TLS1_3][v->cipher];

        if (!*done) {
            *done = true;
            check_sizes(v);
            check_overflow(v);
            if (v->version == TLSK_TLS1_3) {
                check_no_content_type(v);
            }
        }
    }
    return tap_done();
}

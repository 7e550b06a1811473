/*
 * kconst.h - kernel TLS constants, in one place.
 *
 * Values come from the uapi headers when the build host has them and are checked against
 * them at compile time; newer options the build host's headers may lack are defined here
 * with their upstream values (docs/KERNEL.md §1.1).
 */
#ifndef TLSK_KCONST_H
#define TLSK_KCONST_H

#include <linux/tls.h>
#include <netinet/tcp.h>

#define TLSK_SOL_TCP 6
#define TLSK_TCP_ULP 31
#define TLSK_SOL_TLS 282
#define TLSK_TLS_TX 1
#define TLSK_TLS_RX 2
#define TLSK_TLS_TX_ZEROCOPY_RO 3
#define TLSK_TLS_RX_EXPECT_NO_PAD 4
#define TLSK_TLS_TX_MAX_PAYLOAD_LEN 5
#define TLSK_TLS_SET_RECORD_TYPE 1
#define TLSK_TLS_GET_RECORD_TYPE 2

#define TLSK_KCIPHER_AES_GCM_128 51
#define TLSK_KCIPHER_AES_GCM_256 52
#define TLSK_KCIPHER_AES_CCM_128 53
#define TLSK_KCIPHER_CHACHA20_POLY1305 54

#define TLSK_REC_ALERT 21
#define TLSK_REC_HANDSHAKE 22
#define TLSK_REC_APPDATA 23

#define TLSK_MAX_PLAINTEXT 16384

_Static_assert(TLSK_TCP_ULP == TCP_ULP, "TCP_ULP");
_Static_assert(TLSK_TLS_TX == TLS_TX, "TLS_TX");
_Static_assert(TLSK_TLS_RX == TLS_RX, "TLS_RX");
#ifdef TLS_TX_ZEROCOPY_RO
_Static_assert(TLSK_TLS_TX_ZEROCOPY_RO == TLS_TX_ZEROCOPY_RO, "TLS_TX_ZEROCOPY_RO");
#endif
#ifdef TLS_RX_EXPECT_NO_PAD
_Static_assert(TLSK_TLS_RX_EXPECT_NO_PAD == TLS_RX_EXPECT_NO_PAD, "TLS_RX_EXPECT_NO_PAD");
#endif
#ifdef TLS_TX_MAX_PAYLOAD_LEN
_Static_assert(TLSK_TLS_TX_MAX_PAYLOAD_LEN == TLS_TX_MAX_PAYLOAD_LEN, "TLS_TX_MAX_PAYLOAD_LEN");
#endif
_Static_assert(TLSK_TLS_SET_RECORD_TYPE == TLS_SET_RECORD_TYPE, "TLS_SET_RECORD_TYPE");
_Static_assert(TLSK_TLS_GET_RECORD_TYPE == TLS_GET_RECORD_TYPE, "TLS_GET_RECORD_TYPE");
_Static_assert(TLSK_KCIPHER_AES_GCM_128 == TLS_CIPHER_AES_GCM_128, "AES_GCM_128");
_Static_assert(TLSK_KCIPHER_AES_GCM_256 == TLS_CIPHER_AES_GCM_256, "AES_GCM_256");
_Static_assert(TLSK_KCIPHER_AES_CCM_128 == TLS_CIPHER_AES_CCM_128, "AES_CCM_128");
_Static_assert(TLSK_KCIPHER_CHACHA20_POLY1305 == TLS_CIPHER_CHACHA20_POLY1305, "CHACHA20");
_Static_assert(sizeof(struct tls12_crypto_info_aes_gcm_128) == 40, "gcm128 layout");
_Static_assert(sizeof(struct tls12_crypto_info_aes_gcm_256) == 56, "gcm256 layout");
_Static_assert(sizeof(struct tls12_crypto_info_aes_ccm_128) == 40, "ccm128 layout");
_Static_assert(sizeof(struct tls12_crypto_info_chacha20_poly1305) == 56, "chacha layout");

#endif

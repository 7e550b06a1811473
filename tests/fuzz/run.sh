#!/bin/bash
# run.sh [SECONDS] - build the libFuzzer targets of tests/fuzz/ into $FUZZ_OUT (default
# build/fuzz/) and run each for SECONDS (default 20).  Fails (exit 1) on any crash, leak or
# sanitizer report; the reproducer is left in $FUZZ_OUT/<target>-work/ (crash-*, leak-*,
# timeout-*).  The targets are built from kmod-helpers/diag/*.c, where the parsers live.
#
# Needs clang with libFuzzer (Debian: libclang-rt-14-dev) and libmnl-dev.  Seeds: a synthetic
# inet_diag dump (one tls socket with full TLS_INFO, one name-only, one plain, NLMSG_DONE), a
# 6.1 /proc/net/tls_stat, and for fuzz_ethtool an ETHTOOL_MSG_FEATURES_GET dump (list and mask
# form bitsets, TLS features available and on) and a CTRL_CMD_GETFAMILY reply; the corpora
# grow in $FUZZ_OUT/<target>-work/corpus across runs.
# Environment: CC (a clang; default clang), FUZZ_ARGS (extra libFuzzer flags), FUZZ_OUT
# (relative to the top of the tree; `make fuzz` passes $(B)/fuzz).
set -eu

secs=${1:-20}
case $secs in '' | *[!0-9]* | 0) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
cc=${CC:-clang}
case $cc in *clang*) ;; *) cc=clang ;; esac
out=${FUZZ_OUT:-build/fuzz}
mkdir -p "$out"
mnl_cflags=$(pkg-config --cflags libmnl 2>/dev/null || true)
mnl_libs=$(pkg-config --libs libmnl 2>/dev/null || echo -lmnl)
flags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror
	-Iinclude -Ikmod-helpers/diag $mnl_cflags)

# Seed generator for the inet_diag target (plain build, no sanitizer needed).
cat >"$out/mkseed.c" <<'SEED'
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tls.h>
static unsigned char buf[4096] __attribute__((aligned(4)));
static size_t len;
static void sock(int ulp, int with_info)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf + len);
	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_MULTI;
	struct inet_diag_msg *d = mnl_nlmsg_put_extra_header(nlh, sizeof(*d));
	d->idiag_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", d->id.idiag_src);
	inet_pton(AF_INET, "127.0.0.1", d->id.idiag_dst);
	d->id.idiag_sport = htons(443);
	d->id.idiag_dport = htons(40000);
	d->idiag_inode = 77;
	mnl_attr_put_strz(nlh, INET_DIAG_CONG, "cubic");
	if (ulp) {
		struct nlattr *u = mnl_attr_nest_start(nlh, INET_DIAG_ULP_INFO);
		mnl_attr_put_strz(nlh, INET_ULP_INFO_NAME, "tls");
		if (with_info) {
			struct nlattr *t = mnl_attr_nest_start(nlh, INET_ULP_INFO_TLS);
			mnl_attr_put_u16(nlh, TLS_INFO_VERSION, TLS_1_2_VERSION);
			mnl_attr_put_u16(nlh, TLS_INFO_CIPHER, TLS_CIPHER_AES_GCM_128);
			mnl_attr_put_u16(nlh, TLS_INFO_TXCONF, TLS_CONF_SW);
			mnl_attr_put_u16(nlh, TLS_INFO_RXCONF, TLS_CONF_SW);
			mnl_attr_put(nlh, TLS_INFO_ZC_RO_TX, 0, NULL);
			mnl_attr_put(nlh, TLS_INFO_RX_NO_PAD, 0, NULL);
			mnl_attr_nest_end(nlh, t);
		}
		mnl_attr_nest_end(nlh, u);
	}
	len += MNL_ALIGN(nlh->nlmsg_len);
}
int main(void)
{
	sock(1, 1);
	sock(1, 0);
	sock(0, 0);
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf + len);
	nlh->nlmsg_type = NLMSG_DONE;
	*(int *)mnl_nlmsg_put_extra_header(nlh, sizeof(int)) = 0;
	len += nlh->nlmsg_len;
	return fwrite(buf, 1, len, stdout) == len ? 0 : 1;
}
SEED
"$cc" "${flags[@]}" -o "$out/mkseed" "$out/mkseed.c" $mnl_libs

# Seed generator for the ethtool target: argv[1] "features" or "family".  The first byte
# selects the parser in fuzz_ethtool.c (0 features, 1 family).
cat >"$out/mkseed-ethtool.c" <<'SEED'
#include <stdio.h>
#include <string.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool_netlink.h>
#include <linux/genetlink.h>
static unsigned char buf[8192] __attribute__((aligned(4)));
static size_t len;
static struct nlmsghdr *start(unsigned short type, unsigned char cmd)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf + len);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_MULTI;
	struct genlmsghdr *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->cmd = cmd;
	g->version = 1;
	return nlh;
}
static void bitset(struct nlmsghdr *nlh, unsigned short type, unsigned tls, int list)
{
	static const char *const names[] = { "tls-hw-tx-offload", "tls-hw-rx-offload", "tls-hw-record" };
	struct nlattr *set = mnl_attr_nest_start(nlh, type);
	if (list)
		mnl_attr_put(nlh, ETHTOOL_A_BITSET_NOMASK, 0, NULL);
	mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_SIZE, 64);
	struct nlattr *bits = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS);
	for (int i = 0; i < 3; i++) {
		if (list && !((tls >> i) & 1))
			continue;
		struct nlattr *bit = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS_BIT);
		mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_BIT_INDEX, 40 + i);
		mnl_attr_put_strz(nlh, ETHTOOL_A_BITSET_BIT_NAME, names[i]);
		if (!list && ((tls >> i) & 1))
			mnl_attr_put(nlh, ETHTOOL_A_BITSET_BIT_VALUE, 0, NULL);
		mnl_attr_nest_end(nlh, bit);
	}
	mnl_attr_nest_end(nlh, bits);
	mnl_attr_nest_end(nlh, set);
}
static void iface(unsigned idx, const char *name, unsigned hw, unsigned on, int list)
{
	struct nlmsghdr *nlh = start(27, ETHTOOL_MSG_FEATURES_GET_REPLY);
	struct nlattr *h = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
	mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_DEV_INDEX, idx);
	mnl_attr_put_strz(nlh, ETHTOOL_A_HEADER_DEV_NAME, name);
	mnl_attr_nest_end(nlh, h);
	bitset(nlh, ETHTOOL_A_FEATURES_HW, hw, list);
	bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, on, list);
	len += MNL_ALIGN(nlh->nlmsg_len);
}
int main(int argc, char **argv)
{
	int family = argc > 1 && strcmp(argv[1], "family") == 0;
	buf[0] = (unsigned char)family;
	len = 4; /* selector byte, then the 4-aligned netlink buffer (the target copies it) */
	if (family) {
		struct nlmsghdr *nlh = start(GENL_ID_CTRL, CTRL_CMD_NEWFAMILY);
		mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, "ethtool");
		mnl_attr_put_u16(nlh, CTRL_ATTR_FAMILY_ID, 27);
		len += MNL_ALIGN(nlh->nlmsg_len);
	} else {
		iface(1, "lo", 0, 0, 1);
		iface(2, "eth0", 7, 5, 0);
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf + len);
		nlh->nlmsg_type = NLMSG_DONE;
		*(int *)mnl_nlmsg_put_extra_header(nlh, sizeof(int)) = 0;
		len += nlh->nlmsg_len;
	}
	/* Drop the 3 padding bytes after the selector. */
	memmove(buf + 1, buf + 4, len - 4);
	len -= 3;
	return fwrite(buf, 1, len, stdout) == len ? 0 : 1;
}
SEED
"$cc" "${flags[@]}" -o "$out/mkseed-ethtool" "$out/mkseed-ethtool.c" $mnl_libs

status=0
for t in fuzz_diag fuzz_tls_stat fuzz_ethtool; do
	echo "== $t: build"
	"$cc" "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o "$out/$t" "tests/fuzz/$t.c" kmod-helpers/diag/*.c $mnl_libs
	mkdir -p "$out/$t-work/corpus"
	if [ "$t" = fuzz_diag ]; then
		"$out/mkseed" >"$out/$t-work/corpus/seed-dump"
	elif [ "$t" = fuzz_ethtool ]; then
		"$out/mkseed-ethtool" features >"$out/$t-work/corpus/seed-features"
		"$out/mkseed-ethtool" family >"$out/$t-work/corpus/seed-family"
	else
		printf '%-32s\t%lu\n' TlsCurrTxSw 2 TlsCurrRxSw 2 TlsCurrTxDevice 0 \
			TlsCurrRxDevice 0 TlsTxSw 26 TlsRxSw 26 TlsTxDevice 0 TlsRxDevice 0 \
			TlsDecryptError 0 TlsRxDeviceResync 0 TlsDecryptRetry 0 \
			TlsRxNoPadViolation 0 >"$out/$t-work/corpus/seed-6.1"
	fi
	echo "== $t: run ${secs}s"
	log=$out/$t.log
	# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
	if (cd "$out/$t-work" && ASAN_OPTIONS=detect_leaks=1 "../$t" -max_total_time="$secs" \
		-max_len=4096 -print_final_stats=1 ${FUZZ_ARGS:-} corpus) >"$log" 2>&1; then
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$log" || true
	else
		status=1
		echo "$t: FAILED (see $log)" >&2
		grep -E 'ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -n 30 "$log" >&2
	fi
done
exit $status

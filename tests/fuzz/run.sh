#!/bin/bash
# run.sh [SECONDS] - build the libFuzzer targets of tests/fuzz/ into $FUZZ_OUT (default
# build/fuzz/) and run each for SECONDS (default 20).  Fails (exit 1) on any crash, leak or
# sanitizer report; the reproducer is left in $FUZZ_OUT/<target>-work/ (crash-*, leak-*,
# timeout-*; rerun one with `$FUZZ_OUT/<target> FILE`, from $FUZZ_OUT/<target>-work/).
#
# The targets:
#   fuzz_diag, fuzz_tls_stat, fuzz_ethtool   the kTLS diagnostics parsers (kmod-helpers/diag/)
#   fuzz_http    tlsk-serve's request parsing, path mapping, ranges (tools/common/http.c)
#   fuzz_record  the bridge's record open/seal (lib/record.c), every suite, fixed keys
#   fuzz_soft    a peer's byte stream read through tlsk's own record layer (lib/soft.c)
#   fuzz_hello   ClientHellos into a tlsk server over a memory pair (lib/hello.c: SNI and the
#                session store's resume id), with an SNI table and an external store
# fuzz_record, fuzz_soft and fuzz_hello link libtlsk's sources (lib/, kmod-helpers/*.c), built once with
# -fsanitize=fuzzer-no-link,address,undefined into $FUZZ_OUT/obj/ (rebuilt when a source or
# header is newer) and OpenSSL (pkg-config openssl).
#
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev), libmnl-dev, libssl-dev and
# openssl (scripts/deps.sh installs them).  Seeds: a synthetic inet_diag dump (one tls socket
# with full TLS_INFO, one name-only, one plain, NLMSG_DONE), a 6.1 /proc/net/tls_stat, and
# for fuzz_ethtool an ETHTOOL_MSG_FEATURES_GET dump (list and mask form bitsets, TLS features
# available and on) and a CTRL_CMD_GETFAMILY reply; for fuzz_http requests with Range and
# conditional headers, pipelined requests, odd paths (//x/.., %2e%2e, absolute form); for
# fuzz_record and fuzz_soft records sealed at build time by tests/fuzz/mkseed_record.c, and for
# fuzz_soft streams of several records by tests/fuzz/mkseed_soft.c; for fuzz_hello
# real ClientHellos (TLS 1.2 and 1.3, SNI, session id, ticket, PSK) captured at build time by
# tests/fuzz/mkseed_hello.c.  The corpora grow in $FUZZ_OUT/<target>-work/corpus across runs.
# fuzz_hello's certificates: scripts/gen-fixtures.sh build/fixtures (run here), found through
# TLSK_FUZZ_FIXTURES (set here to build/fixtures/rsa, absolute).
# Environment: CC (a clang; default clang), FUZZ_ARGS (extra libFuzzer flags), FUZZ_OUT
# (relative to the top of the tree; `make fuzz` passes $(B)/fuzz), FUZZ_TARGETS (a
# space-separated subset of the targets above; default all seven).
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

# ---- libtlsk's sources, instrumented, for fuzz_record and fuzz_hello -------------------
ssl_cflags=$(pkg-config --cflags openssl 2>/dev/null || true)
ssl_libs=$(pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
# shellcheck disable=SC2054,SC2206 # commas inside a flag; ssl_cflags is a list of flags
san=(-fsanitize=address,undefined -fno-sanitize-recover=all)
# shellcheck disable=SC2206
lib_flags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra
	-Wno-missing-field-initializers -Iinclude -Ilib -Ikmod-helpers $ssl_cflags)
fuzz_flags=("${lib_flags[@]}" -Werror -Itools/common -Itests/fuzz)

build_lib() {
	local objdir=$out/obj newest src obj jobs=0 ncpu objs=()
	mkdir -p "$objdir"
	ncpu=$(nproc 2>/dev/null || echo 2)
	# A header change rebuilds everything: the newest header against each object.
	newest=$(find include lib kmod-helpers -maxdepth 2 -name '*.h' -printf '%T@ %p\n' |
		sort -n | tail -n 1 | cut -d' ' -f2-)
	for src in lib/*.c kmod-helpers/*.c; do
		obj=$objdir/$(echo "${src%.c}" | tr / _).o
		objs+=("$obj")
		if [ -f "$obj" ] && [ ! "$src" -nt "$obj" ] && [ ! "$newest" -nt "$obj" ]; then
			continue
		fi
		[ $jobs -gt 0 ] || echo "== libtlsk: compile with fuzzer instrumentation"
		"$cc" "${lib_flags[@]}" "${san[@]}" -fsanitize=fuzzer-no-link -c -o "$obj" "$src" &
		jobs=$((jobs + 1))
		if [ $jobs -ge "$ncpu" ]; then
			wait -n
			jobs=$((jobs - 1))
		fi
	done
	while [ $jobs -gt 0 ]; do
		wait -n
		jobs=$((jobs - 1))
	done
	rm -f "$out/libtlsk-fuzz.a"
	ar rcs "$out/libtlsk-fuzz.a" "${objs[@]}" # only today's sources: no object of a removed one
}

# ---- seeds -------------------------------------------------------------------------------
http_seeds() {
	local d=$1
	# Selector byte, then the stream (run fuzz_http.c's header for the bits).
	printf '\000GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' >"$d/seed-get"
	printf '\000GET /big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-99\r\nIf-Range: "5f5e100-1a-0-2a"\r\n\r\n' >"$d/seed-range"
	printf '\030HEAD /f.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=-500\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n' >"$d/seed-range-suffix"
	printf '\020GET /f HTTP/1.1\r\nHost: h\r\nRange: bytes=5-, 7-9\r\n\r\n' >"$d/seed-range-multi"
	printf '\000GET /index.html HTTP/1.1\r\nHost: localhost:8443\r\nIf-None-Match: W/"x", "5f5e100-1a-0-2a"\r\nIf-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\nConnection: keep-alive, Upgrade\r\n\r\n' >"$d/seed-conditional"
	printf '\000GET /a HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: Sun Nov  6 08:49:37 1994\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nHEAD /c HTTP/1.0\r\n\r\n' >"$d/seed-pipelined"
	printf '\000\r\n\nGET //x/.. HTTP/1.1\nHost: h\n\n' >"$d/seed-dotdot-bare-lf"
	printf '\002GET /%%2e%%2e/%%2E%%2e/etc/passwd?x=1#f HTTP/1.1\r\nHost: h\r\n\r\n' >"$d/seed-pct-dotdot"
	printf '\004GET https://h.example//evil.example/../a%%5Cb/./c//?q=1 HTTP/1.1\r\nHost: h.example\r\n\r\n' >"$d/seed-absolute"
	printf '\001POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n' >"$d/seed-post"
	printf '\000GET / HTTP/2.0\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET / HTTP/1.1\r\n Folded: x\r\n\r\n' >"$d/seed-errors"
}

# ---- one target --------------------------------------------------------------------------
# build_target NAME: compile $out/NAME; the diagnostics targets need only kmod-helpers/diag.
build_target() {
	case $1 in
	fuzz_diag | fuzz_tls_stat | fuzz_ethtool)
		# shellcheck disable=SC2086 # mnl_libs is a list of flags
		"$cc" "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
			-o "$out/$1" "tests/fuzz/$1.c" kmod-helpers/diag/*.c $mnl_libs
		;;
	fuzz_http)
		"$cc" "${fuzz_flags[@]}" -fsanitize=fuzzer "${san[@]}" -o "$out/$1" \
			tests/fuzz/fuzz_http.c tools/common/http.c
		;;
	fuzz_record | fuzz_soft | fuzz_hello)
		# shellcheck disable=SC2086 # ssl_libs is a list of flags
		"$cc" "${fuzz_flags[@]}" -fsanitize=fuzzer "${san[@]}" -o "$out/$1" \
			"tests/fuzz/$1.c" "$out/libtlsk-fuzz.a" $ssl_libs -lpthread
		;;
	esac
}

# seed_target NAME DIR: write NAME's seeds into DIR.
seed_target() {
	case $1 in
	fuzz_diag) "$out/mkseed" >"$2/seed-dump" ;;
	fuzz_ethtool)
		"$out/mkseed-ethtool" features >"$2/seed-features"
		"$out/mkseed-ethtool" family >"$2/seed-family"
		;;
	fuzz_tls_stat)
		printf '%-32s\t%lu\n' TlsCurrTxSw 2 TlsCurrRxSw 2 TlsCurrTxDevice 0 \
			TlsCurrRxDevice 0 TlsTxSw 26 TlsRxSw 26 TlsTxDevice 0 TlsRxDevice 0 \
			TlsDecryptError 0 TlsRxDeviceResync 0 TlsDecryptRetry 0 \
			TlsRxNoPadViolation 0 >"$2/seed-6.1"
		;;
	fuzz_http) http_seeds "$2" ;;
	fuzz_soft)
		seed_target fuzz_record "$2" # single records
		# shellcheck disable=SC2086 # ssl_libs is a list of flags
		"$cc" "${fuzz_flags[@]}" "${san[@]}" -fsanitize=fuzzer-no-link \
			-o "$out/mkseed-soft" tests/fuzz/mkseed_soft.c "$out/libtlsk-fuzz.a" $ssl_libs -lpthread
		ASAN_OPTIONS=detect_leaks=0 "$out/mkseed-soft" "$2" >"$out/mkseed-soft.log"
		;;
	fuzz_record | fuzz_hello)
		# The generators link the same instrumented objects, without libFuzzer's main.
		# shellcheck disable=SC2086 # ssl_libs is a list of flags
		"$cc" "${fuzz_flags[@]}" "${san[@]}" -fsanitize=fuzzer-no-link \
			-o "$out/mkseed-${1#fuzz_}" "tests/fuzz/mkseed_${1#fuzz_}.c" \
			"$out/libtlsk-fuzz.a" $ssl_libs -lpthread
		ASAN_OPTIONS=detect_leaks=0 "$out/mkseed-${1#fuzz_}" "$2" >"$out/mkseed-${1#fuzz_}.log"
		;;
	esac
}

all="fuzz_diag fuzz_tls_stat fuzz_ethtool fuzz_http fuzz_record fuzz_soft fuzz_hello"
targets=${FUZZ_TARGETS:-$all}
for t in $targets; do
	case " $all " in *" $t "*) ;; *) echo "$0: unknown target $t (FUZZ_TARGETS)" >&2; exit 2 ;; esac
done
case " $targets " in *" fuzz_record "* | *" fuzz_soft "* | *" fuzz_hello "*) build_lib ;; esac
case " $targets " in
*" fuzz_hello "*)
	scripts/gen-fixtures.sh build/fixtures
	TLSK_FUZZ_FIXTURES=${TLSK_FUZZ_FIXTURES:-$PWD/build/fixtures/rsa}
	export TLSK_FUZZ_FIXTURES
	;;
esac
export TLSK_PROBE_DISABLE=1

status=0
for t in $targets; do
	echo "== $t: build"
	build_target "$t"
	mkdir -p "$out/$t-work/corpus"
	seed_target "$t" "$out/$t-work/corpus"
	# The largest input a target reads: a full record (2^14 + 256 + header) for fuzz_record.
	case $t in
	fuzz_record) max_len=16700 ;;
	fuzz_soft) max_len=65536 ;; # streams of several records
	*) max_len=4096 ;;
	esac
	echo "== $t: run ${secs}s"
	log=$out/$t.log
	# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
	if (cd "$out/$t-work" && ASAN_OPTIONS=detect_leaks=1 "../$t" -max_total_time="$secs" \
		-max_len="$max_len" -timeout=30 -print_final_stats=1 ${FUZZ_ARGS:-} corpus) \
		>"$log" 2>&1; then
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$log" || true
	else
		status=1
		echo "$t: FAILED (see $log)" >&2
		grep -E 'ERROR|SUMMARY|Test unit written|fuzz_[a-z]+: ' "$log" >&2 || tail -n 30 "$log" >&2
	fi
done
exit $status

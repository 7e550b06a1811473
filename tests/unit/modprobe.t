#!/bin/bash
# modprobe.t - kmod-helpers/tlsk-modprobe (--help, --persist --root, --check, --load, usage
# errors) and `tlsk-stat --load`, checked against what the kernel says:
# - --check's exit status agrees with tlsk-stat's (tlsk_kernel_probe(): 0 kTLS usable, 1 not)
#   and with /proc/sys/net/ipv4/tcp_available_ulp;
# - with TLSK_EXPECT_KTLS=1 (user-mode Linux, tls.ko loaded by the runner) --check, --load
#   (twice) and tlsk-stat --load exit 0;
# - without a tls module (the usual CI host) --check, --load and tlsk-stat --load exit 1, the
#   latter with -ENOENT.
set -u
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1
cd "${TLSK_ROOT:-$(dirname "$0")/../..}" || exit 1
# Diagnostics here are messages, one line each, not tap.sh's files.
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }

script=kmod-helpers/tlsk-modprobe
build=${TLSK_BUILD_DIR:-build}
stat=$build/tools/tlsk-stat
expect=${TLSK_EXPECT_KTLS:-0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
want_conf='# Load the kernel TLS module (kTLS) at boot; written by tlsk-modprobe --persist.
tls'

[ -x "$script" ]
ok $? "$script is executable"
if [ ! -x "$stat" ]; then
	echo "Bail out! $stat not built (make tools)"
	exit 1
fi

# --help and usage errors.
out=$("$script" --help)
ok $? "--help exits 0"
case $out in *--check*--load*--persist*--root*) r=0 ;; *) r=1 ;; esac
ok $r "--help names --check, --load, --persist and --root"
for args in "" "--bogus" "--check --load" "--persist --root" "--check --root $tmp"; do
	# shellcheck disable=SC2086 # word splitting wanted
	"$script" $args >/dev/null 2>"$tmp/err"
	rc=$?
	[ $rc = 2 ] && [ -s "$tmp/err" ]
	ok $? "usage error '$args': exit 2 with a message (got $rc)"
done

# --persist --root: exact content, idempotent, repairs a foreign file.
conf=$tmp/root/etc/modules-load.d/tlsk.conf
out=$("$script" --persist --root "$tmp/root")
ok $? "--persist --root DIR exits 0 ($out)"
[ -f "$conf" ] && [ "$(cat "$conf")" = "$want_conf" ] && [ "$(tail -c 1 "$conf" | od -An -c | tr -d ' ')" = '\n' ]
ok $? "writes DIR/etc/modules-load.d/tlsk.conf with exactly the expected text"
perm=$(stat -c %a "$conf")
[ "$perm" = 644 ]
ok $? "the file is mode 644 (got $perm)"
ino1=$(stat -c %i:%Y "$conf")
sleep 1
out=$("$script" --persist --root="$tmp/root")
rc=$?
ino2=$(stat -c %i:%Y "$conf")
[ $rc = 0 ] && [ "$ino1" = "$ino2" ] && [ "$(cat "$conf")" = "$want_conf" ]
ok $? "second --persist: exit 0, file untouched (same inode and mtime: $ino1 $ino2)"
case $out in *unchanged*) r=0 ;; *) r=1 ;; esac
ok $r "second --persist says unchanged ($out)"
left=$(find "$tmp/root" -name '.tlsk.conf.*' | wc -l)
[ "$left" = 0 ]
ok $? "no temporary file left behind"
printf 'tls\nsomething-else\n' >"$conf"
"$script" --persist --root "$tmp/root" >/dev/null && [ "$(cat "$conf")" = "$want_conf" ]
ok $? "--persist rewrites a tlsk.conf with other content"
touch "$tmp/plainfile"
"$script" --persist --root "$tmp/plainfile" >/dev/null 2>&1
rc=$?
[ $rc = 1 ]
ok $? "--persist under a root that is a file: exit 1 (got $rc)"

# --check against the kernel and against tlsk-stat.
listed=1
tr -s ' \t' '\n' </proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null | grep -qx tls && listed=0
check_out=$("$script" --check)
check_rc=$?
"$stat" >/dev/null 2>"$tmp/stat.err"
stat_rc=$?
diag "--check: exit $check_rc: $check_out" "tlsk-stat: exit $stat_rc $(cat "$tmp/stat.err")"
[ "$(printf '%s\n' "$check_out" | wc -l)" = 1 ] && [ -n "$check_out" ]
ok $? "--check prints exactly one line"
case $check_rc:$stat_rc in 0:0 | 0:1 | 1:1) r=0 ;; *) r=1 ;; esac
ok $r "--check and tlsk-stat agree: kTLS usable implies --check succeeds ($check_rc, $stat_rc)"
case $check_out in "tls: loaded"*) said_loaded=0 ;; *) said_loaded=1 ;; esac
[ "$said_loaded" = "$listed" ]
ok $? "--check says loaded exactly when tcp_available_ulp lists tls"
if [ "$listed" = 0 ]; then
	[ $check_rc = 0 ] && [ $stat_rc = 0 ]
	ok $? "tls is loaded: --check and tlsk-stat both exit 0"
fi

# --load and tlsk-stat --load.
"$script" --load >"$tmp/load1" 2>&1
load1=$?
"$script" --load >"$tmp/load2" 2>&1
load2=$?
"$stat" --load >"$tmp/sload" 2>"$tmp/sload.err"
sload=$?
"$stat" --load --json >"$tmp/sload.json" 2>/dev/null
sload_json=$?
diag "--load: $load1 $(cat "$tmp/load1")" "tlsk-stat --load: $sload $(cat "$tmp/sload" "$tmp/sload.err")"
[ $load1 = $load2 ] && [ $sload = $sload_json ]
ok $? "--load twice and tlsk-stat --load with and without --json give the same exit status"
if [ "$expect" = 1 ]; then
	[ $check_rc = 0 ] && [ $listed = 0 ]
	ok $? "TLSK_EXPECT_KTLS=1: --check exits 0 and tcp_available_ulp lists tls"
	[ $load1 = 0 ] && [ $load2 = 0 ] && grep -q 'already loaded' "$tmp/load2"
	ok $? "TLSK_EXPECT_KTLS=1: --load is idempotent (exit 0, 'already loaded')"
	[ $sload = 0 ] && grep -q '^tls module: already available' "$tmp/sload"
	ok $? "TLSK_EXPECT_KTLS=1: tlsk-stat --load exits 0: already available"
	grep -q '"loaded": true, "error": null' "$tmp/sload.json"
	ok $? "TLSK_EXPECT_KTLS=1: tlsk-stat --load --json: loaded true"
elif [ $check_rc = 1 ]; then
	# No module for this kernel: nobody can load it, root included.
	[ $load1 = 1 ]
	ok $? "no tls module: --load exits 1"
	[ $sload = 1 ] && grep -q '^tls module not loaded: ENOENT: ' "$tmp/sload.err" &&
		[ "$(wc -l <"$tmp/sload.err")" = 1 ]
	ok $? "no tls module: tlsk-stat --load exits 1 with one ENOENT line"
	grep -q '"loaded": false, "error": "ENOENT", "detail": "' "$tmp/sload.json"
	ok $? "no tls module: tlsk-stat --load --json: loaded false, ENOENT"
	"$stat" >/dev/null 2>&1
	ok $(($? == 1 ? 0 : 1)) "no tls module: tlsk-stat still exits 1 after the load attempts"
else
	# A module exists but is not loaded: loading depends on our privileges.
	diag "a tls module exists but is not loaded: --load results depend on privileges"
	case $load1:$sload in 0:0 | 1:1) r=0 ;; *) r=1 ;; esac
	ok $r "tlsk-modprobe --load and tlsk-stat --load agree ($load1, $sload)"
fi

tap_done

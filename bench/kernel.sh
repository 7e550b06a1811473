#!/bin/bash
# kernel.sh - structural benchmark of the kernel path: tlsk-serve --offload auto (kTLS) against
# --offload off (OpenSSL in userspace), the same binary in the same user-mode Linux guest.
#
#   bench/kernel.sh
#
# The host has no kTLS, so the measuring half (bench/kernel-guest.sh) runs in user-mode Linux
# through scripts/uml-run.sh --kernel newest.  UML's kernel crypto is generic C, so no wall-clock
# or throughput figure is reported, only figures that do not depend on it (issue 11):
#   cpu-per-gib            server utime per GiB downloaded, as the host sees it (UML books all
#                          guest CPU as utime; see below), and stime: the rest, for information
#   syscalls-per-gib       server syscalls per GiB downloaded (strace -f -c in the guest)
#   rss-per-idle-conn      server VmRSS growth per idle keep-alive TLS 1.3 connection, KiB
#   syscalls-per-conn      server syscalls per TLS 1.3 connection doing one GET of 1 KiB
#   syscalls-per-conn-cbc  the same for TLS 1.2 ECDHE-RSA-AES128-SHA256 (the kernel cannot take
#                          it: what does trying cost?)
#   sockopts-per-conn-cbc  of those, the setsockopt/getsockopt calls: where offload is probed,
#                          installed and read back (the totals vary by about one per connection
#                          between runs of one mode: waits, empty reads, close races)
# with the targets: kTLS utime per GiB <= 5 % of userspace, syscalls per GiB <= 1/8, RSS per
# idle connection <= 0.5x, a connection the kernel cannot take pays at most one extra syscall.
# A missed target does not fail the script; kTLS not in use in auto mode does (exit 1).
#
# Prints the guest's table on stdout.  With BENCH_TSV set, appends to that file one line per
# figure and run: kernel<TAB>CASE<TAB>ktls|user<TAB>RUN<TAB>VALUE1<TAB>VALUE2 (cpu-per-gib:
# utime s/GiB and stime s/GiB; the others: the value and 0).  The strace summaries are kept in
# KOUT/strace/, the guest's own CPU accounting in KOUT/guest-cpu.txt.  Takes about 6 minutes.
#
# Environment:
#   KRUNS=3          runs (each: both modes, fresh servers)
#   KSIZE_MIB=64     size of the downloaded file
#   KCPU_REPS=64     downloads of the file per CPU figure: 4 GiB, so that one 10 ms tick of
#                    host utime is 2.5 ms per GiB (at 1 GiB kTLS mode measured 1-2 ticks)
#   KIDLE=500        idle connections for the RSS figure
#   KCONNS=50        sequential connections per syscall count
#   KOUT=build/bench-kernel   host folder for binaries, files and results (seen by the guest)
#   BENCH_TSV        file to append the machine-readable lines to
#   TLSK_SERVE=...   tlsk-serve binary to measure (default: build it with make)
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out=${KOUT:-$top/build/bench-kernel}
size_mib=${KSIZE_MIB:-64}
start=$(date +%s)

die() {
	echo "kernel.sh: $*" >&2
	exit 1
}

# ---- prerequisites ------------------------------------------------------------------------
cd "$top"
[ -s build/fixtures/rsa/agent1-cert.pem ] || scripts/gen-fixtures.sh "$top/build/fixtures" >/dev/null ||
	die "cannot generate fixtures"
if [ -z "${TLSK_SERVE:-}" ]; then
	make -s build/tools/tlsk-serve || die "cannot build tlsk-serve"
	TLSK_SERVE=$top/build/tools/tlsk-serve
fi
TLSK_SERVE=$(cd "$(dirname "$TLSK_SERVE")" && pwd)/${TLSK_SERVE##*/}
export TLSK_SERVE # passed into the guest (TLSK_ prefix)
command -v strace >/dev/null || die "strace not found (apt-get install strace)"
mkdir -p "$out/bin" "$out/www"
out=$(cd "$out" && pwd -P)
ssl=$(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto)
# shellcheck disable=SC2086
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$out/bin/hs" bench/hs.c $ssl ||
	die "cannot build bench/hs.c"
# shellcheck disable=SC2086
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$out/bin/client" bench/client.c $ssl ||
	die "cannot build bench/client.c"
file=$out/www/big.bin
if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != $((size_mib * 1024 * 1024)) ]; then
	head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$file.tmp" && mv "$file.tmp" "$file"
fi
[ -s "$out/www/1k.bin" ] || head -c 1024 /dev/urandom >"$out/www/1k.bin"
rm -rf "$out/strace" "$out/results.tsv"

# ---- the host's side of the CPU figure ----------------------------------------------------
# UML books all of a guest process's CPU as utime, its kernel work included (the guest's stime
# stays 0), so the server's userspace CPU is taken from the host: UML runs each guest address
# space in a host process (uml-userspace), whose utime is that address space's userspace CPU.
# The guest names a page of the server (virtual address, offset in UML's physical memory file)
# in KOUT/ipc/req-NAME.txt; the answer, KOUT/ipc/snap-NAME.txt, is "hz HZ" and "HOSTPID UTIME
# STIME" of the one uml-userspace process below our uml-run.sh that maps it there.
ipc=$out/ipc
rm -rf "$ipc"
mkdir -p "$ipc"
hz=$(getconf CLK_TCK)
# stub_of UMLRUN-PID VADDR OFFSET: the uml-userspace process (below uml-run.sh, then timeout,
# then the kernel) that maps VADDR at OFFSET of its file
stub_of() {
	local a b c range o v=$((16#$2)) off=$((16#$3)) lo hi
	for a in $(pgrep -P "$1"); do
		for b in $(pgrep -P "$a"); do
			for c in $(pgrep -P "$b" -x uml-userspace); do
				while read -r range _ o _; do
					lo=$((16#${range%-*}))
					hi=$((16#${range#*-}))
					if [ "$lo" -le "$v" ] && [ "$v" -lt "$hi" ] && [ $((16#$o + v - lo)) = "$off" ]; then
						echo "$c"
						return 0
					fi
				done <"/proc/$c/maps"
			done
		done
	done 2>/dev/null
	return 1
}
monitor() { # PID of uml-run.sh
	local req n va off p
	while kill -0 "$1" 2>/dev/null; do
		for req in "$ipc"/req-*.txt; do
			[ -e "$req" ] || continue
			n=${req#"$ipc"/req-}
			[ -e "$ipc/snap-$n" ] && continue
			read -r va off <"$req" || true
			{
				echo "hz $hz"
				if p=$(stub_of "$1" "${va:-0}" "${off:-0}"); then
					sed 's/^.*) //' "/proc/$p/stat" | awk -v p="$p" '{ print p, $12, $13 }'
				else
					echo "none: no uml-userspace process maps $va at offset $off"
				fi
			} >"$ipc/.snap-$n"
			mv "$ipc/.snap-$n" "$ipc/snap-$n"
		done
		sleep 0.05
	done
}

# ---- the guest -----------------------------------------------------------------------------
UML_RUN_ENV="${UML_RUN_ENV:-} KRUNS KSIZE_MIB KIDLE KCONNS KCPU_REPS" \
	scripts/uml-run.sh --kernel newest --timeout 900 -- bench/kernel-guest.sh "$out" &
uml=$!
monitor "$uml" &
mon=$!
trap 'kill -TERM "$uml" "$mon" 2>/dev/null || true' EXIT
rc=0
wait "$uml" || rc=$?
wait "$mon" || true
trap - EXIT
echo "   script time $(($(date +%s) - start)) s (build, boot and measurement)"
[ "$rc" = 0 ] || die "the guest run failed (exit $rc)"
[ -s "$out/results.tsv" ] || die "the guest wrote no results"
if [ -n "${BENCH_TSV:-}" ]; then
	cat "$out/results.tsv" >>"$BENCH_TSV"
fi

#!/bin/bash
# kernel-guest.sh - the guest half of bench/kernel.sh: runs inside user-mode Linux (kTLS
# loaded), measures tlsk-serve --offload auto (kTLS) against --offload off (OpenSSL in
# userspace) on structural figures only: never wall-clock time (UML's kernel crypto is generic
# C, so its speed says nothing about a real machine).
#
#   bench/kernel-guest.sh OUTDIR      (started by bench/kernel.sh through scripts/uml-run.sh)
#
# OUTDIR is a host path (the guest sees the host filesystem at the same paths) prepared by
# kernel.sh: OUTDIR/bin/{hs,client}, OUTDIR/www/{big.bin,1k.bin}; the server is TLSK_SERVE
# (default build/tools/tlsk-serve), the certificate build/fixtures/rsa/agent1.  The files are
# copied into the guest's TMPDIR (tmpfs), so sendfile reads guest page cache, not hostfs.
# Writes OUTDIR/results.tsv (lines "kernel CASE SERVER RUN VALUE1 VALUE2", tab-separated)
# and the strace summaries under OUTDIR/strace/; prints the table on stdout.
#
# For each run (1..KRUNS) and each mode (auto, then off), one fresh server (--workers 1):
#   1. rss-per-idle-conn: VmRSS of the server before and after KIDLE idle keep-alive TLS 1.3
#      connections (bench/hs.c hold, each past one GET /1k.bin), difference / KIDLE, in KiB.
#      After both modes, the same for nginx (master and worker) when it is installed:
#      rss-per-idle-conn-nginx, against the kTLS mode's figure (nginx_idle).
#   2. cpu-per-gib: the server's CPU across KCPU_REPS downloads of big.bin (no strace
#      attached), scaled to 1 GiB.  UML books all of a process's CPU as utime (/proc/PID/stat
#      field 14; field 15, stime, stays 0 even for dd to /dev/null), so utime is taken from the
#      host (see host_utime) and stime is the guest's utime + stime less that: UML's kernel
#      time for the server (generic C crypto: for information only).  The guest's own figures
#      go to OUTDIR/guest-cpu.txt and the table.
#   3. syscalls-per-gib: the server's syscalls (strace -f -c -p) across one more download.
#   4. syscalls-per-conn: the server's syscalls across KCONNS sequential connections, each one
#      TLS 1.3 GET /1k.bin with Connection: close (bench/client.c); and syscalls-per-conn-cbc:
#      the same with TLS 1.2 ECDHE-RSA-AES128-SHA256, a cipher the kernel cannot take; and
#      sockopts-per-conn-cbc: those connections again, counting setsockopt and getsockopt
#      only (the calls that probe, install and read back offload; the totals also count
#      waits, reads that found nothing and close races, which vary by about one per
#      connection between runs of the same mode).
# The "extra syscalls per connection" are (auto - off) / KCONNS from those counts.
#
# Exits 1 when kTLS is not in use in auto mode (startup line, or an access log line of the
# download or the GETs not saying tx=kernel), or when anything fails; missed targets do not
# fail it.
#
# Environment: KRUNS=3, KSIZE_MIB=64 (must match big.bin), KCPU_REPS=64, KIDLE=500, KCONNS=50.
set -eu

out=${1:?usage: kernel-guest.sh OUTDIR}
runs=${KRUNS:-3}
size_mib=${KSIZE_MIB:-64}
nidle=${KIDLE:-500}
nconns=${KCONNS:-50}
bin=$out/bin
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/tmp} # bench/lib.sh's scratch folder: nginx_conf serves $dir/www
# shellcheck source=lib.sh
. "$top/bench/lib.sh" # rss_kib, nginx_conf, free_port; die, cleanup, median are this file's
serve=${TLSK_SERVE:-$top/build/tools/tlsk-serve}
fx=$top/build/fixtures/rsa
tmp=${TMPDIR:-/tmp}
www=$tmp/www
tsv=$out/results.tsv
ipc=$out/ipc
reps=${KCPU_REPS:-64}
page=$(getconf PAGESIZE)
ciphers=ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA256
cbc=ECDHE-RSA-AES128-SHA256

die() {
	echo "kernel-guest.sh: $*" >&2
	exit 1
}

command -v strace >/dev/null || die "strace not found (apt-get install strace)"
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp || die "no tls ULP in this kernel"
ulimit -n $((nidle + 1024)) || die "cannot raise the descriptor limit"
hz=$(getconf CLK_TCK)
want=$((size_mib * 1024 * 1024))
gib=$(awk -v b="$want" 'BEGIN { printf "%.6f", b / 1073741824 }') # GiB per download

mkdir -p "$www" "$out/strace"
cp "$out/www/big.bin" "$out/www/1k.bin" "$www/"
[ "$(stat -c %s "$www/big.bin")" = "$want" ] || die "big.bin is not $size_mib MiB"
cat "$www/big.bin" >/dev/null
: >"$tsv"
: >"$out/guest-cpu.txt"

srv_pid=
st_pid=
hs_pid=
cleanup() {
	for p in $hs_pid $st_pid $srv_pid; do
		kill -TERM "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# start_server MODE: srv_pid, port, log (its stderr: the access log)
start_server() {
	local mode=$1 first
	log=$tmp/serve-$mode.err
	"$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
		--root "$www" --listen 127.0.0.1:0 --workers 1 --offload "$mode" \
		--ciphers "$ciphers" --ciphersuites TLS_AES_128_GCM_SHA256 \
		>"$tmp/serve-$mode.out" 2>"$log" &
	srv_pid=$!
	port=
	for _ in $(seq 200); do
		port=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' \
			"$tmp/serve-$mode.out" 2>/dev/null)
		[ -n "$port" ] && [ "$(wc -l <"$tmp/serve-$mode.out")" -ge 2 ] && break
		kill -0 "$srv_pid" 2>/dev/null || die "tlsk-serve --offload $mode exited: $(cat "$log")"
		sleep 0.05
	done
	[ -n "$port" ] || die "tlsk-serve --offload $mode printed no port"
	first=$(grep 'kTLS' "$tmp/serve-$mode.out" | head -n 1)
	kline[$mode]=${first#tlsk-serve: }
	if [ "$mode" = auto ]; then
		case $first in *"kTLS in use"*) ;; *) die "auto mode: kTLS not in use: $first" ;; esac
	fi
}

stop_server() {
	kill -TERM "$srv_pid"
	wait "$srv_pid" || die "tlsk-serve exited with $?"
	srv_pid=
}

# check_log MODE PATTERN WHAT: the access log's lines for PATTERN all say the expected tx mode
check_log() {
	local mode=$1 pat=$2 what=$3 lines bad
	lines=$(grep -F "$pat" "$log" || true)
	[ -n "$lines" ] || die "$mode: no access log line for $what"
	if [ "$mode" = auto ] && [ "$what" != cbc ]; then
		bad=$(grep -v 'tx=kernel' <<<"$lines" | head -n 1 || true)
		[ -z "$bad" ] || die "auto mode: $what not offloaded: $bad"
	else
		bad=$(grep 'tx=kernel' <<<"$lines" | head -n 1 || true)
		[ -z "$bad" ] || die "$mode: $what unexpectedly offloaded: $bad"
	fi
	sed -n 's/.* \(TLSv[0-9.]* tx=[^ ]* rx=[^ ]*\)$/\1/p' <<<"$lines" | tail -n 1
}

ticks() { # utime stime of the server process (all threads)
	local f
	f=$(sed 's/^.*) //' "/proc/$srv_pid/stat")
	# shellcheck disable=SC2086
	set -- $f
	echo "${12} ${13}"
}

# server_page: "VADDR OFFSET" (hex) of the server's first heap page and of the page frame under
# it (/proc/PID/pagemap): UML maps guest pages into the host process that runs the address
# space from its physical memory file at that offset, so on the host exactly one process has
# VADDR mapped at OFFSET: the server's.
server_page() {
	local a v e
	a=$(awk '$NF == "[heap]" { split($1, r, "-"); print r[1]; exit }' "/proc/$srv_pid/maps")
	[ -n "$a" ] || die "the server has no [heap] mapping"
	v=$((16#$a))
	e=$(dd if="/proc/$srv_pid/pagemap" bs=8 skip=$((v / page)) count=1 2>/dev/null |
		od -An -tx8 | tr -d ' ')
	e=$((16#${e:-0}))
	(((e >> 63) & 1)) || die "the server's first heap page is not present"
	printf '%x %x\n' "$v" $(((e & ((1 << 55) - 1)) * page))
}

# host_utime NAME: the server's userspace CPU seconds, as its host process's utime.  UML books
# all of a guest process's CPU as utime (its stime stays 0: checked, dd to /dev/null shows
# only user time), kernel work included; but it runs each address space in a host process
# and the guest kernel in another, so the host's utime of the server's process is its
# userspace alone.  bench/kernel.sh answers OUTDIR/ipc/req-NAME.txt (server_page) with
# OUTDIR/ipc/snap-NAME.txt: "hz HZ" then "HOSTPID UTIME STIME", or "none".  The answer is
# found through readdir (a glob), never looked up before it exists (hostfs caches a miss).
host_utime() {
	local got
	server_page >"$ipc/req-$1.tmp"
	mv "$ipc/req-$1.tmp" "$ipc/req-$1.txt"
	for _ in $(seq 400); do
		got=("$ipc/snap-$1".tx[t])
		if [ -e "${got[0]}" ]; then
			awk '$1 == "hz" { hz = $2 } NR == 2 && NF == 3 { t = $2 }
				END { if (hz == "" || t == "") exit 1; printf "%.2f\n", t / hz }' "${got[0]}" ||
				die "the host found no process of the server: $(cat "${got[0]}")"
			return 0
		fi
		sleep 0.05
	done
	die "no answer from the host to $ipc/req-$1.txt (run this through bench/kernel.sh)"
}


# strace_on FILE [STRACE-OPTIONS]: attach strace -f -c to every thread of the server, wait
# until attached
strace_on() {
	local f=$1
	shift
	strace -f -c "$@" -o "$f" -p "$srv_pid" 2>"$f.err" &
	st_pid=$!
	for _ in $(seq 200); do
		grep -q 'attached' "$f.err" 2>/dev/null && break
		kill -0 "$st_pid" 2>/dev/null || die "strace failed: $(cat "$f.err")"
		sleep 0.05
	done
	sleep 0.2
}

# strace_off FILE [ZERO-OK]: prints the total number of syscalls.  Zero fails, unless the
# syscalls counted are a selection a server may not make at all (ZERO-OK: the socket options
# of a userspace-mode connection, since tlsk-serve takes TCP_NODELAY from its listener).
strace_off() {
	sleep 0.3 # let the server finish with the last connection
	kill -INT "$st_pid"
	wait "$st_pid" || true
	st_pid=
	awk -v z="${2:-}" '$NF == "total" { n = $4 } END { if (n > 0 || z) print n + 0; else exit 1 }' "$1" ||
		die "strace counted no syscalls of the server ($1)"
}

# per_conn CASE FILE [STRACE-OPTIONS] -- [CLIENT-OPTIONS]: the server's syscalls (those the
# strace options select) across $nconns connections, each one GET /1k.bin, as a row of CASE
# per connection
per_conn() {
	local case=$1 f=$2 st=() n
	shift 2
	while [ "$1" != -- ]; do
		st+=("$1")
		shift
	done
	shift
	strace_on "$f" "${st[@]}"
	for _ in $(seq "$nconns"); do
		"$bin/client" 127.0.0.1 "$port" /1k.bin "$@" >/dev/null ||
			die "$mode: GET /1k.bin $* failed"
	done
	n=$(strace_off "$f" "$([ "$case" = sockopts-per-conn-cbc ] && echo 1)")
	awk -v n="$n" -v c="$nconns" -v r="$run" -v s="$srv" -v k="$case" 'BEGIN {
		printf "kernel\t%s\t%s\t%d\t%.2f\t0\n", k, s, r, n / c
	}' >>"$tsv"
}

# sockopts FILE ARGS...: the server's setsockopt/getsockopt calls (decoded, no buffer contents:
# they hold keys; descriptors and thread ids dropped) during one client run with ARGS
sockopts() {
	local f=$1
	shift
	strace -f -s 0 -e trace=setsockopt,getsockopt -o "$f.raw" -p "$srv_pid" 2>"$f.err" &
	st_pid=$!
	for _ in $(seq 200); do
		grep -q 'attached' "$f.err" 2>/dev/null && break
		sleep 0.05
	done
	sleep 0.2
	"$bin/client" 127.0.0.1 "$port" /1k.bin "$@" >/dev/null || die "$mode: GET /1k.bin $* failed"
	sleep 0.3
	kill -INT "$st_pid"
	wait "$st_pid" || true
	st_pid=
	sed -E -n 's/^[0-9]+ +//; s/^([gs]etsockopt)\([0-9]+, /\1(FD, /p' "$f.raw" >"$f"
}

download() { # MODE
	local r bytes
	r=$("$bin/client" 127.0.0.1 "$port" /big.bin) || die "$1: download failed: $r"
	bytes=${r#bytes=}
	bytes=${bytes%% *}
	[ "$bytes" = "$want" ] || die "$1: got $bytes bytes, wanted $want"
}

# hold_idle PORT: hold $nidle idle keep-alive connections (each past one GET /1k.bin) until
# release_idle; returns once all are ready
hold_idle() {
	rm -f "$tmp/hold.fifo"
	mkfifo "$tmp/hold.fifo"
	"$bin/hs" 127.0.0.1 "$1" hold --count "$nidle" --path /1k.bin \
		<"$tmp/hold.fifo" >"$tmp/hold.out" 2>&1 &
	hs_pid=$!
	exec 4>"$tmp/hold.fifo"
	for _ in $(seq 6000); do
		grep -q '^ready' "$tmp/hold.out" && break
		kill -0 "$hs_pid" 2>/dev/null || die "hs hold failed: $(cat "$tmp/hold.out")"
		sleep 0.05
	done
	grep -q "^ready $nidle\$" "$tmp/hold.out" || die "hs hold: $(cat "$tmp/hold.out")"
	sleep 0.2
}
release_idle() {
	exec 4>&-
	wait "$hs_pid" || die "hs hold exited with $?"
	hs_pid=
}

# nginx_idle RUN: nginx's RSS (master and worker) per idle connection in the same guest and the
# same way, TLS 1.3 with the same suite, configured as in the suite's idle scenario
# (bench/lib.sh nginx_conf) and asking for OpenSSL's own kTLS (ssl_conf_command Options KTLS)
nginx_idle() {
	local np conf r0 r1
	np=$(free_port)
	conf=$(nginx_conf k "$np" 1 1)
	echo "user root;" >>"$conf" # the guest's files are root's
	nginx -p "$dir/nginx-k" -c "$conf" -e "$dir/nginx-k/logs/error.log" &
	srv_pid=$!
	for _ in $(seq 200); do
		"$bin/client" 127.0.0.1 "$np" /1k.bin >/dev/null 2>&1 && break
		kill -0 "$srv_pid" 2>/dev/null || die "nginx exited: $(cat "$dir/nginx-k/logs/error.log")"
		sleep 0.05
	done
	r0=$(rss_kib "$srv_pid")
	hold_idle "$np"
	r1=$(rss_kib "$srv_pid")
	release_idle
	kill -QUIT "$srv_pid"
	wait "$srv_pid" || true
	srv_pid=
	awk -v a="$r0" -v b="$r1" -v n="$nidle" -v r="$1" 'BEGIN {
		printf "kernel\trss-per-idle-conn-nginx\tnginx\t%d\t%.3f\t0\n", r, (b - a) / n
	}' >>"$tsv"
}

declare -A kline desc
for run in $(seq "$runs"); do
	for mode in auto off; do
		srv=ktls
		[ "$mode" = off ] && srv=user
		start_server "$mode"

		# 1. RSS per idle connection
		rss0=$(rss_kib "$srv_pid")
		hold_idle "$port"
		rss1=$(rss_kib "$srv_pid")
		release_idle
		desc[$mode-idle]=$(check_log "$mode" '"GET /1k.bin' idle)
		awk -v a="$rss0" -v b="$rss1" -v n="$nidle" -v r="$run" -v s="$srv" 'BEGIN {
			printf "kernel\trss-per-idle-conn\t%s\t%d\t%.3f\t0\n", s, r, (b - a) / n
			if (s == "ktls") # the same figure, against nginx (nginx_idle)
				printf "kernel\trss-per-idle-conn-nginx\tktls\t%d\t%.3f\t0\n", r, (b - a) / n
		}' >>"$tsv"

		# 2. server CPU per GiB
		hu0=$(host_utime "$run-$srv-0")
		read -r u0 s0 < <(ticks)
		for _ in $(seq "$reps"); do
			download "$mode"
		done
		read -r u1 s1 < <(ticks)
		hu1=$(host_utime "$run-$srv-1")
		desc[$mode-big]=$(check_log "$mode" '"GET /big.bin' download)
		awk -v hu="$hu0 $hu1" -v gu=$((u1 - u0)) -v gs=$((s1 - s0)) -v hz="$hz" \
			-v g="$(awk -v g="$gib" -v n="$reps" 'BEGIN { print g * n }')" -v r="$run" \
			-v sv="$srv" 'BEGIN {
			split(hu, h, " "); u = h[2] - h[1]; st = (gu + gs) / hz - u; if (st < 0) st = 0
			printf "kernel\tcpu-per-gib\t%s\t%d\t%.4f\t%.4f\n", sv, r, u / g, st / g
			printf "%s %d %.4f %.4f\n", sv, r, gu / hz / g, gs / hz / g >"/dev/stderr"
		}' >>"$tsv" 2>>"$out/guest-cpu.txt"

		# 3. syscalls per GiB
		f=$out/strace/$run-$srv-gib.txt
		strace_on "$f"
		download "$mode"
		n=$(strace_off "$f")
		awk -v n="$n" -v g="$gib" -v r="$run" -v s="$srv" 'BEGIN {
			printf "kernel\tsyscalls-per-gib\t%s\t%d\t%.0f\t0\n", s, r, n / g
		}' >>"$tsv"

		# 4. syscalls per connection: TLS 1.3 GCM, then TLS 1.2 CBC
		per_conn syscalls-per-conn "$out/strace/$run-$srv-conn.txt" --
		per_conn syscalls-per-conn-cbc "$out/strace/$run-$srv-cbc.txt" -- --tls12 --cipher "$cbc"
		# The same connections, counting only the socket-option calls: where the library
		# probes, installs and reads back offload.  The totals above also count waits,
		# reads that found nothing and a close that races the client's (timing: +-1 per
		# connection between runs of one mode); these do not vary.
		per_conn sockopts-per-conn-cbc "$out/strace/$run-$srv-cbc-sockopt.txt" \
			-e trace=setsockopt,getsockopt -- --tls12 --cipher "$cbc"
		desc[$mode-cbc]=$(check_log "$mode" 'TLSv1.2' cbc)
		if [ "$run" = 1 ]; then
			sockopts "$out/strace/sockopt-$srv-conn.txt"
			sockopts "$out/strace/sockopt-$srv-cbc.txt" --tls12 --cipher "$cbc"
		fi
		stop_server
	done
	if command -v nginx >/dev/null; then
		nginx_idle "$run"
	fi
done

# ---- report --------------------------------------------------------------------------------
median() { # CASE SERVER COLUMN(5|6)
	awk -F'\t' -v c="$1" -v s="$2" -v k="$3" '$2 == c && $3 == s { print $k }' "$tsv" |
		sort -g | awk '{ v[NR] = $1 } END {
			if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# sum_calls KIND SERVER: "name calls" summed over the runs' strace summaries
sum_calls() {
	cat "$out"/strace/*-"$2"-"$1".txt | awk '$NF != "total" && $NF != "syscall" &&
		$1 ~ /^[0-9.]+$/ { n[$NF] += $4 } END { for (s in n) print s, n[s] }' | sort
}
# per_unit KIND SERVER DIVISOR: "name per-unit", largest first
per_unit() {
	sum_calls "$1" "$2" | awk -v d="$3" '{ printf "%s %.2f\n", $1, $2 / d }' | sort -k2,2gr
}
# diff_calls KIND: syscalls whose count per connection differs, auto - off
diff_calls() {
	join -a1 -a2 -e 0 -o 0,1.2,2.2 <(sum_calls "$1" ktls) <(sum_calls "$1" user) |
		awk -v d=$((runs * nconns)) '{ x = ($2 - $3) / d; if (x >= 0.05 || x <= -0.05)
			printf "%s %+.2f (%.2f vs %.2f)\n", $1, x, $2 / d, $3 / d }' | sort -k2,2gr
}

k_u=$(median cpu-per-gib ktls 5) u_u=$(median cpu-per-gib user 5)
k_s=$(median cpu-per-gib ktls 6) u_s=$(median cpu-per-gib user 6)
k_sc=$(median syscalls-per-gib ktls 5) u_sc=$(median syscalls-per-gib user 5)
k_rss=$(median rss-per-idle-conn ktls 5) u_rss=$(median rss-per-idle-conn user 5)
n_rss=$(median rss-per-idle-conn-nginx nginx 5)
k_c=$(median syscalls-per-conn ktls 5) u_c=$(median syscalls-per-conn user 5)
k_cbc=$(median syscalls-per-conn-cbc ktls 5) u_cbc=$(median syscalls-per-conn-cbc user 5)
k_so=$(median sockopts-per-conn-cbc ktls 5) u_so=$(median sockopts-per-conn-cbc user 5)

echo "== tlsk-serve kernel path: --offload auto (ktls) vs --offload off (user), structural only"
echo "   guest kernel $(uname -r), $(nproc) CPU; $runs runs; download ${size_mib} MiB;" \
	"$nidle idle connections; $nconns connections per syscall count"
echo "   auto: ${kline[auto]}"
echo "   off:  ${kline[off]}"
echo "   per connection (access log): download ktls ${desc[auto-big]}, user ${desc[off-big]};"
echo "     TLS 1.2 $cbc: ktls ${desc[auto-cbc]}, user ${desc[off-cbc]}"
echo "   (no wall-clock figures: UML's kernel crypto is generic C; utime is the host's utime of the"
echo "   server's UML process, stime the rest of the server's guest CPU: UML kernel time)"
echo
echo "   per run:"
awk -F'\t' '{ printf "     %-22s %-4s run %d %10s%s\n", $2, $3, $4, $5,
	($2 == "cpu-per-gib") ? "  stime " $6 : "" }' "$tsv"
awk '{ printf "     guest-accounted CPU/GiB %-4s run %d  utime %s stime %s\n", $1, $2, $3, $4 }' \
	"$out/guest-cpu.txt"
echo
echo "== medians                         ktls         user    ktls/user   target        met"
row() { # LABEL KTLS USER [MAX-RATIO]: the ratio and, with MAX-RATIO, whether it is met
	awk -v l="$1" -v k="$2" -v u="$3" -v t="${4:-}" 'BEGIN {
		r = "-"; met = ""
		if (u > 0) r = sprintf("%.4f", k / u)
		if (t != "") met = (u > 0 && k / u <= t) || (u <= 0 && k <= 0) ? "yes" : "NO"
		printf "   %-26s %12.4g %12.4g %12s   %-13s %s\n", l, k, u, r,
			(t == "") ? "" : "<= " t, met
	}'
}
row "utime s/GiB" "$k_u" "$u_u" 0.05
row "stime s/GiB (info)" "$k_s" "$u_s"
row "syscalls/GiB" "$k_sc" "$u_sc" 0.125
row "RSS KiB/idle conn" "$k_rss" "$u_rss" 0.5
if [ "$n_rss" != nan ]; then
	echo "   the same against nginx in this guest (nginx with OpenSSL's kTLS asked for):"
	row "RSS KiB/idle conn, nginx" "$k_rss" "$n_rss" 0.5
fi
row "syscalls/conn TLS 1.3" "$k_c" "$u_c"
row "syscalls/conn TLS 1.2 CBC" "$k_cbc" "$u_cbc"
row "sockopts/conn TLS 1.2 CBC" "$k_so" "$u_so"
awk -v k="$k_c" -v u="$u_c" -v kc="$k_cbc" -v uc="$u_cbc" -v ks="$k_so" -v us="$u_so" 'BEGIN {
	printf "   extra syscalls per offloaded connection (TLS 1.3, auto - off): %+.2f\n", k - u
	printf "   extra syscalls per connection the kernel cannot take (TLS 1.2 CBC, auto - off):" \
		" %+.2f in all (waits and races included), %+.2f socket-option calls   target <= 1: %s\n",
		kc - uc, ks - us, (ks - us <= 1) ? "yes" : "NO"
}'
awk -v g="$gib" -v n="$reps" -v u="$u_u" 'BEGIN {
	printf "   (utime resolution: 1 host tick, 0.01 s = %.4f s/GiB over %d x %s GiB", 0.01 / g / n, n, g
	if (u > 0) printf " = %.1f%% of user", 100 * 0.01 / g / n / u
	print ")" }'
echo
echo "== top syscalls per GiB (all runs)"
echo "   ktls: $(per_unit gib ktls "$(awk -v r="$runs" -v g="$gib" 'BEGIN { print r * g }')" |
	head -n 6 | awk '{ printf "%s %.0f  ", $1, $2 }')"
echo "   user: $(per_unit gib user "$(awk -v r="$runs" -v g="$gib" 'BEGIN { print r * g }')" |
	head -n 6 | awk '{ printf "%s %.0f  ", $1, $2 }')"
echo "== syscalls per connection that differ, auto - off (TLS 1.3 GET /1k.bin, Connection: close)"
diff_calls conn | sed 's/^/   /'
for srv in ktls user; do
	echo "   $srv: socket options of one connection (run 1):"
	sed 's/^/     /' "$out/strace/sockopt-$srv-conn.txt"
done
echo "== the same for TLS 1.2 $cbc (the kernel cannot take it)"
d=$(diff_calls cbc | sed 's/^/   /')
echo "${d:-   (none)}"
for srv in ktls user; do
	echo "   $srv: socket options of one connection (run 1):"
	sed 's/^/     /' "$out/strace/sockopt-$srv-cbc.txt"
done

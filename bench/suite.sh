#!/bin/bash
# suite.sh - the benchmark suite (make bench): tlsk's tools against nginx and haproxy, side by
# side in one run, over loopback.  See bench/README.md for what each scenario measures.
#
#   bench/suite.sh                     every scenario
#   SCENARIOS="small handshake" bench/suite.sh
#
# Scenarios (in this order):
#   bulk       one 1 GiB download (bench/client.c), tlsk-serve against nginx (sendfile on)
#   small      1, 4, 16, 64 KiB files, keep-alive, 1, 16, 64, 256 connections (wrk -t1); and
#              userspace instructions per request at one connection, 1-16 KiB (callgrind)
#   ofc        1, 4, 16 KiB at 64 connections against nginx with its open_file_cache on
#              (tlsk-serve's file cache revalidates every use; nginx's trusts an entry 60 s)
#   handshake  new connections (bench/hs.c): full TLS 1.2 and 1.3 with RSA-2048 and P-256
#              certificates, resumed by TLS 1.2 session id, TLS 1.2 ticket, TLS 1.3 ticket
#   idle       resident memory per idle keep-alive TLS connection, IDLE (2000) of them
#   proxy      tlsk-proxy against haproxy, TLS terminated in front of a plain nginx: 1 GiB
#   workers    the 4 KiB / 64-connection case and the 1 GiB download with two workers each
#   kernel     the kernel path, structurally, in user-mode Linux (bench/kernel.sh): kTLS mode
#              against userspace mode of the same tlsk-serve (CPU, syscalls, memory)
# Servers alternate within each run of a case; every figure is the median of RUNS runs.  The
# server's CPU is utime + stime from /proc/PID/stat (with its children: nginx's and haproxy's
# workers) before and after each run; its memory is VmRSS.  One worker each unless said; the
# server on CPU 0 and the client on the last CPU (taskset).  TLS 1.3 TLS_AES_128_GCM_SHA256
# and TLS 1.2 ECDHE-*-AES128-GCM-SHA256 throughout.
#
# Results: every run's row in $OUT/results.tsv (scenario, case, server, run, value, cost),
# where each bulk, proxy and small-file run's time went in $OUT/host.tsv (host_row), the
# medians and ratios in $OUT/summary.md (also printed), and plots (gnuplot) in $OUT/*.png.
#
# Environment:
#   SCENARIOS   which scenarios (default: all of the above)
#   RUNS=5      runs per case and server        DURATION=2   seconds per wrk / handshake run
#   IDLE=2000   idle connections                SIZES, CONNS the small-file grid (KiB, counts)
#   OUT         results folder (default bench/results)
#   BENCH_DIR   scratch folder (default /tmp/tlsk-bench; the large files are kept there)
#   TLSK_BUILD  build folder with tools/ (default build; built with make when missing)
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
dur=${DURATION:-2}
idle=${IDLE:-2000}
sizes=${SIZES:-1 4 16 64}
conns=${CONNS:-1 16 64 256}
scenarios=${SCENARIOS:-bulk small ofc handshake idle proxy workers kernel}
dir=${BENCH_DIR:-/tmp/tlsk-bench}
out=${OUT:-$top/bench/results}
build=${TLSK_BUILD:-build}
suite=TLS_AES_128_GCM_SHA256
fx=$top/build/fixtures/rsa
fx_ec=$top/build/fixtures/ec
. "$top/bench/lib.sh"

# ---- prerequisites ------------------------------------------------------------------------
cd "$top"
[ -s "$fx/agent1-cert.pem" ] && [ -s "$fx_ec/agent1-cert.pem" ] ||
	scripts/gen-fixtures.sh "$top/build/fixtures" >/dev/null || die "cannot generate fixtures"
make -s "$build/tools/tlsk-serve" "$build/tools/tlsk-proxy" || die "cannot build the tools"
serve=$top/$build/tools/tlsk-serve
proxy=$top/$build/tools/tlsk-proxy
need_pkg nginx nginx-light
need_pkg wrk wrk
need_pkg haproxy haproxy
need_pkg gnuplot gnuplot-nox
need_pkg strace strace
need_pkg valgrind valgrind
mkdir -p "$dir/www" "$dir/logs" "$out"
chmod 755 "$dir" "$dir/www"
build_clients
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for k in $sizes; do
	make_file "${k}k.bin" $((k * 1024))
done
for k in 1 4 16; do # the idle and ofc scenarios' files, whatever SIZES says
	make_file "${k}k.bin" $((k * 1024))
done
make_file big.bin $((1024 * 1024 * 1024))
set_pinning 1

tsv=$out/results.tsv
host_tsv=$out/host.tsv
: >"$tsv"
: >"$host_tsv"
declare -A PID PORT
pids=()
trap cleanup EXIT # bench/lib.sh: stops every server in pids

# tlsk_cmd PORT WORKERS FIXTURES: tlsk-serve's command line as every scenario runs it, into
# the caller's array cmd (start_tlsk runs it as it is, run_hsir under callgrind).
tlsk_cmd() {
	cmd=("$serve" --cert "$3/agent1-cert.pem" --key "$3/agent1-key.pem" --root "$dir/www"
		--listen "127.0.0.1:$1" --workers "$2" --quiet --max-connections 20000
		--idle-timeout 300 --ciphersuites "$suite")
}

# start_tlsk NAME WORKERS FIXTURES [OPTIONS...]
start_tlsk() {
	local name=$1 w=$2 f=$3 port cmd
	shift 3
	port=$(free_port)
	tlsk_cmd "$port" "$w" "$f"
	$pin_srv "${cmd[@]}" "$@" >"$dir/logs/$name.out" 2>"$dir/logs/$name.err" &
	PID[$name]=$!
	PORT[$name]=$port
	pids+=("$!")
	wait_port "$port"
}

# start_nginx NAME WORKERS FIXTURES [SSL=1 [SERVER-BLOCK LINES]]
start_nginx() {
	local name=$1 port conf fx=$3 # nginx_conf reads fx
	port=$(free_port)
	conf=$(nginx_conf "$name" "$port" 0 "$2" "${5:-}")
	if [ "${4:-1}" = 0 ]; then
		sed -i 's/ ssl;$/;/; /ssl_/d' "$conf"
	fi
	$pin_srv nginx -p "$dir/nginx-$name" -c "$conf" -e "$dir/nginx-$name/logs/error.log" &
	PID[$name]=$!
	PORT[$name]=$port
	pids+=("$!")
	wait_port "$port"
}

stop() { # NAME...
	local n
	for n in "$@"; do
		kill -TERM "${PID[$n]}" 2>/dev/null || true
		wait "${PID[$n]}" 2>/dev/null || true
	done
}

row() { # scenario case server run value cost
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$tsv"
	printf '   %-9s %-18s %-10s run %s  %12s %12s\n' "$@"
}

# host_begin PID / host_end PID / host_row: where a run's wall-clock time went.  host_begin
# and host_end take the samples before and after the run: wall clock, /proc/stat (bench/lib.sh
# cpu_stat) and the server process's CPU (proc_ticks); host_end leaves the server's CPU
# ticks in the run in h_cpu, which the run's own row uses.  host_row writes one row of
# $host_tsv: scenario, case, server, run, seconds, units of work (bytes or requests), then in
# clock ticks the server process's CPU, the server CPU's busy and stolen time, the client
# CPU's busy and stolen time, and the server process's userspace CPU.  bench/report.sh reads
# it to say, for the runs a target depends on, whether the server, the client or neither was
# busy, and how much the hypervisor took.
host_begin() { # server-pid
	read -r h_c0 h_u0 < <(proc_ticks "$1")
	read -r h_sbusy0 h_ssteal0 h_cbusy0 h_csteal0 < <(cpu_stat)
	h_t0=$(date +%s%N)
}
host_end() { # server-pid
	h_t1=$(date +%s%N)
	read -r h_sbusy1 h_ssteal1 h_cbusy1 h_csteal1 < <(cpu_stat)
	read -r h_c1 h_u1 < <(proc_ticks "$1")
	h_cpu=$((h_c1 - h_c0))
}
host_row() { # scenario case server run work
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" \
		"$(awk -v a="$h_t0" -v b="$h_t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')" "$5" "$h_cpu" \
		$((h_sbusy1 - h_sbusy0)) $((h_ssteal1 - h_ssteal0)) $((h_cbusy1 - h_cbusy0)) \
		$((h_csteal1 - h_csteal0)) $((h_u1 - h_u0)) >>"$host_tsv"
}

# One download of big.bin: GB/s and server CPU s/GiB.
run_bulk() { # scenario case server-name run
	local o b t
	host_begin "${PID[$3]}"
	o=$($pin_cli "$dir/client" 127.0.0.1 "${PORT[$3]}" /big.bin --ciphersuite "$suite") ||
		die "$3: download failed: $o"
	host_end "${PID[$3]}"
	host_row "$1" "$2" "${3%%-*}" "$4" $((1024 * 1024 * 1024))
	b=${o#bytes=} b=${b%% *} t=${o#*seconds=} t=${t%% *}
	[ "$b" = $((1024 * 1024 * 1024)) ] || die "$3: got $b bytes"
	row "$1" "$2" "${3%%-*}" "$4" "$(awk -v b="$b" -v t="$t" 'BEGIN { printf "%.4f", b / t / 1e9 }')" \
		"$(awk -v c="$h_cpu" -v hz="$hz" -v b="$b" 'BEGIN { printf "%.4f", c / hz / (b / 2^30) }')"
}

# One unrecorded download of big.bin, before a server's measured ones: the first 1 GiB a
# fresh server process sends costs both servers 15-40 % more CPU than the ones after it
# (bench/README.md, bulk), so run 1 would measure process warm-up, not serving.
warm_bulk() { # server-name...
	local n
	for n in "$@"; do
		$pin_cli "$dir/client" 127.0.0.1 "${PORT[$n]}" /big.bin --ciphersuite "$suite" >/dev/null ||
			die "$n: warm-up download failed"
	done
}

# One wrk run: requests/s and server CPU ms per 1000 requests.
run_wrk() { # scenario case server-name run conns path
	local o n rps
	host_begin "${PID[$3]}"
	o=$($pin_cli wrk -t1 -c"$5" -d"${dur}s" "https://127.0.0.1:${PORT[$3]}$6" 2>&1) ||
		die "$3: wrk failed: $o"
	host_end "${PID[$3]}"
	if grep -qE 'Non-2xx|Socket errors' <<<"$o"; then
		die "$3 $2: wrk saw errors: $(grep -E 'Non-2xx|Socket errors' <<<"$o")"
	fi
	n=$(awk '/requests in/ { print $1 }' <<<"$o")
	rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$o")
	[ "${n:-0}" -gt 0 ] || die "$3: wrk made no requests: $o"
	host_row "$1" "$2" "${3%%-*}" "$4" "$n"
	row "$1" "$2" "${3%%-*}" "$4" "$rps" \
		"$(awk -v c="$h_cpu" -v hz="$hz" -v n="$n" 'BEGIN { printf "%.4f", c / hz * 1e6 / n }')"
}

# One handshake loop: connections/s and server CPU ms per connection.
run_hs() { # case server-name run hs-options...
	local case=$1 name=$2 c0 c1 o n t run=$3
	shift 3
	c0=$(cpu_ticks "${PID[$name]}")
	o=$($pin_cli "$dir/hs" 127.0.0.1 "${PORT[$name]}" loop --seconds "$dur" "$@" 2>&1) ||
		die "$name $*: $o"
	c1=$(cpu_ticks "${PID[$name]}")
	n=${o#conns=} n=${n%% *} t=${o#*seconds=} t=${t%% *}
	row handshake "$case" "${name%%-*}" "$run" "$(awk -v n="$n" -v t="$t" 'BEGIN { printf "%.1f", n / t }')" \
		"$(awk -v c=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.4f", c / hz * 1000 / n }')"
}

# Syscalls per new connection (strace -c on the serving process, all its threads, for one
# second of a handshake loop): structure, not speed; strace slows the server.
run_hssys() { # case server-name hs-options...
	local case=$1 name=$2 pid o n sp f=$dir/logs/strace-$2.txt
	shift 2
	pid=$(pgrep -P "${PID[$name]}" -f 'nginx: worker' | head -n 1)
	pid=${pid:-${PID[$name]}} # nginx: its worker; tlsk-serve: itself (threads)
	strace -qq -c -f -o "$f" -p "$pid" &
	sp=$!
	sleep 0.5
	o=$($pin_cli "$dir/hs" 127.0.0.1 "${PORT[$name]}" loop --seconds 1 "$@" 2>&1) || die "$name $*: $o"
	sleep 0.2
	kill -INT "$sp"
	wait "$sp" || true
	n=${o#conns=} n=${n%% *}
	row hssys "$case" "${name%%-*}" 1 "$(awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $NF != "rt_sigtimedwait" && NF >= 5 { c += $4 }
		END { printf "%.2f", c / n }' "$f")" 0
}

# hsir_counts CALLGRIND-FILE: "TOTAL KEYLOG OPENSSL", the instructions counted in all; those
# spent in OpenSSL's key log line (the libssl function that formats each secret with
# sprintf("%02x") per byte before calling SSL_CTX's keylog callback, ssl/ssl_lib.c
# nss_keylog_int), inclusive: its callers of __sprintf_chk, found in the call tree, with their
# allocations and the callback itself; and those inside the three calls every server makes
# per connection, SSL_new, SSL_do_handshake and SSL_free (inclusive: with the callbacks they
# make).  Debian's libssl has no symbols for internal functions; the call to libc's named
# __sprintf_chk finds the key log, and the three calls are exported names.
hsir_counts() {
	callgrind_annotate --inclusive=yes --threshold=100 --tree=caller "$1" 2>/dev/null | awk '
		{ l = $0; sub(/\([ 0-9.]+%\)/, "", l); split(l, f, " "); gsub(",", "", f[1]) }
		f[2] == "PROGRAM" && f[3] == "TOTALS" { total = f[1]; next }
		f[2] == "<" { if (l ~ /libssl/) callers[f[3]] = 1; next }
		f[2] == "*" {
			incl[f[3]] = f[1]
			if (f[3] ~ /:SSL_(new|do_handshake|free)$/) ossl += f[1]
			if (f[3] ~ /:__sprintf_chk$/) for (c in callers) fmt[c] = 1
			delete callers; next
		}
		{ delete callers }
		END { for (c in fmt) t += incl[c]; print total + 0, t + 0, ossl + 0 }'
}

# cg_start NAME (tlsk or nginx): the server as one process under callgrind, its port in
# cg_port, its pid in cg_pid, its dumps in cg_file.N.  cg_zero before a load zeroes the
# counters; cg_dump N after it writes them to cg_file.N and waits for the file.
cg_start() {
	local conf cmd
	cg_port=$(free_port)
	cg_file=$dir/logs/callgrind-$1
	rm -f "$cg_file" "$cg_file".*
	if [ "$1" = tlsk ]; then
		tlsk_cmd "$cg_port" 1 "$fx"
		$pin_srv valgrind --tool=callgrind --callgrind-out-file="$cg_file" "${cmd[@]}" \
			>"$dir/logs/cg-$1.out" 2>&1 &
	else
		conf=$(nginx_conf cg "$cg_port" 0 1) # one process: master_process off
		sed -i 's/^master_process on;/master_process off;/' "$conf"
		$pin_srv valgrind --tool=callgrind --callgrind-out-file="$cg_file" nginx -p "$dir/nginx-cg" \
			-c "$conf" -e "$dir/nginx-cg/logs/error.log" >"$dir/logs/cg-$1.out" 2>&1 &
	fi
	cg_pid=$!
	pids+=("$cg_pid")
	wait_port "$cg_port"
}
cg_zero() { callgrind_control -z "$cg_pid" >/dev/null || die "callgrind_control -z"; }
cg_dump() {
	callgrind_control -d "$cg_pid" >/dev/null || die "callgrind_control -d"
	for _ in $(seq 50); do [ -s "$cg_file.$1" ] && return 0; sleep 0.1; done
	die "no callgrind dump $cg_file.$1"
}
cg_stop() {
	kill -TERM "$cg_pid" 2>/dev/null || true
	wait "$cg_pid" 2>/dev/null || true
}

# Userspace instructions per new connection, in thousands: the server under callgrind, its
# counters zeroed before each handshake loop and dumped after it.  Structure, not speed: the
# work each server asks of the CPU in userspace, the same from run to run on a host whose CPU
# time moves by 10 % between runs; the kernel's part is left out (the hssys rows count it).
# The cost column is the part of it in OpenSSL's key log (hsir_counts), which tlsk's context
# turns on to learn the TLS 1.3 traffic secrets (docs/KERNEL.md §16.1) and nginx does not.
# The hsossl rows: the part inside SSL_new, SSL_do_handshake and SSL_free, and its share.
run_hsir() { # server-name (tlsk or nginx)
	local name=$1 i=0 c o n ir kl os
	cg_start "$name"
	$pin_cli "$dir/hs" 127.0.0.1 "$cg_port" loop --seconds 1 --tls 1.3 --resume tickets >/dev/null 2>&1 || true
	for c in "tickets-1.2:--tls 1.2 --resume tickets" "tickets-1.3:--tls 1.3 --resume tickets" \
		"ids-1.2:--tls 1.2 --resume ids" "full-1.2-rsa:--tls 1.2 --resume none" \
		"full-1.3-rsa:--tls 1.3 --resume none"; do
		i=$((i + 1))
		cg_zero
		# shellcheck disable=SC2086 # the options split on purpose
		o=$($pin_cli "$dir/hs" 127.0.0.1 "$cg_port" loop --seconds 3 ${c#*:} 2>&1) || die "$name $c: $o"
		cg_dump "$i"
		n=${o#conns=} n=${n%% *}
		read -r ir kl os < <(hsir_counts "$cg_file.$i")
		[ "${ir:-0}" -gt 0 ] && [ "${os:-0}" -gt 0 ] && [ "$n" -gt 0 ] ||
			die "callgrind counted nothing for $name $c"
		row hsir "${c%%:*}" "$name" 1 "$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.1f", i / n / 1000 }')" \
			"$(awk -v i="$kl" -v n="$n" 'BEGIN { printf "%.1f", i / n / 1000 }')"
		row hsossl "${c%%:*}" "$name" 1 "$(awk -v i="$os" -v n="$n" 'BEGIN { printf "%.1f", i / n / 1000 }')" \
			"$(awk -v i="$ir" -v o="$os" 'BEGIN { printf "%.4f", o / i }')"
	done
	cg_stop
}

# Userspace instructions per request at one keep-alive connection (wrk -c1), in thousands,
# for 1, 4 and 16 KiB: the server's own work per round trip, which the small-file rows at one
# connection time together with the kernel's, the client's and the wake-ups (bench/README.md).
run_reqir() { # server-name (tlsk or nginx)
	local name=$1 i=0 k o n ir
	cg_start "$name"
	for k in 1 4 16; do
		i=$((i + 1))
		$pin_cli wrk -t1 -c1 -d1s "https://127.0.0.1:$cg_port/${k}k.bin" >/dev/null 2>&1 || true
		cg_zero
		o=$($pin_cli wrk -t1 -c1 -d"${dur}s" "https://127.0.0.1:$cg_port/${k}k.bin" 2>&1) ||
			die "$name ${k}k: wrk failed: $o"
		cg_dump "$i"
		n=$(awk '/requests in/ { print $1 }' <<<"$o")
		ir=$(callgrind_annotate --threshold=100 "$cg_file.$i" 2>/dev/null |
			awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
		[ "${ir:-0}" -gt 0 ] && [ "${n:-0}" -gt 0 ] || die "callgrind counted nothing for $name ${k}k"
		row reqir "${k}k-c1" "$name" 1 "$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.1f", i / n / 1000 }')" 0
	done
	cg_stop
}

# Resident memory per idle connection: KiB per connection, and the server's total RSS in MiB.
run_idle() { # server-name run
	local r0 r1 fifo=$dir/idle.fifo hp line
	rm -f "$fifo"
	mkfifo "$fifo"
	r0=$(rss_kib "${PID[$1]}")
	$pin_cli "$dir/hs" 127.0.0.1 "${PORT[$1]}" hold --count "$idle" --path /1k.bin \
		<"$fifo" >"$dir/idle.out" 2>&1 &
	hp=$!
	exec 7>"$fifo"
	for _ in $(seq 600); do
		line=$(cat "$dir/idle.out")
		[ -n "$line" ] && break
		kill -0 "$hp" 2>/dev/null || break
		sleep 0.1
	done
	[ "$line" = "ready $idle" ] || die "$1: idle client: $line"
	sleep 0.5
	r1=$(rss_kib "${PID[$1]}")
	exec 7>&-
	wait "$hp" || true
	row idle "$idle" "${1%%-*}" "$2" "$(awk -v a="$r0" -v b="$r1" -v n="$idle" 'BEGIN { printf "%.2f", (b - a) / n }')" \
		"$(awk -v b="$r1" 'BEGIN { printf "%.1f", b / 1024 }')"
	sleep 1 # the server notices the closes
}

{
echo "== tlsk benchmark suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(
	grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r)"
echo "   $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/.*: //'), $(
	haproxy -v | head -n 1 | cut -d' ' -f1-3), $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "   scenarios: $scenarios; $runs runs per case; server CPU $srv_cpus${cli_cpu:+, client CPU $cli_cpu}"
if [ -n "${cli_cpu:-}" ]; then # bench/pingpong.c: what two wake-ups cost here, across CPUs and on one
	echo "   a wake-up round trip (bench/pingpong.c, two processes, one byte over pipes): $(
		"$dir/pingpong" "$srv_cpus" "$cli_cpu" | sed 's/.*=//') us between CPUs $srv_cpus and $cli_cpu, $(
		"$dir/pingpong" "$srv_cpus" "$srv_cpus" | sed 's/.*=//') us on CPU $srv_cpus alone"
fi
} | tee "$out/meta.txt"

start_tlsk tlsk 1 "$fx"
start_nginx nginx 1 "$fx"
sed -n 1p "$dir/logs/tlsk.out" | sed 's/^/   tlsk-serve: /'

for sc in $scenarios; do
	case $sc in
	bulk)
		echo "== bulk: 1 GiB download (GB/s, server CPU s/GiB)"
		warm_bulk tlsk nginx
		for r in $(seq "$runs"); do
			run_bulk bulk 1g tlsk "$r"
			run_bulk bulk 1g nginx "$r"
		done
		;;
	small)
		echo "== small: files over keep-alive, wrk -t1 (req/s, server CPU ms per 1000 requests)"
		for k in $sizes; do
			for c in $conns; do
				for r in $(seq "$runs"); do
					run_wrk small "${k}k-c$c" tlsk "$r" "$c" "/${k}k.bin"
					run_wrk small "${k}k-c$c" nginx "$r" "$c" "/${k}k.bin"
				done
			done
		done
		echo "== reqir: userspace instructions per request at one connection, thousands (callgrind; one process each)"
		run_reqir tlsk
		run_reqir nginx
		;;
	ofc)
		echo "== ofc: small files, 64 connections, against nginx with open_file_cache (req/s, CPU ms per 1000 requests)"
		start_nginx nginxofc 1 "$fx" 1 "        open_file_cache max=1000 inactive=60s;"
		for k in 1 4 16; do
			for r in $(seq "$runs"); do
				run_wrk ofc "${k}k-c64" tlsk "$r" 64 "/${k}k.bin"
				run_wrk ofc "${k}k-c64" nginxofc "$r" 64 "/${k}k.bin"
			done
		done
		stop nginxofc
		;;
	handshake)
		echo "== handshake: one connection at a time (connections/s, server CPU ms per connection)"
		start_tlsk tlsk-ec 1 "$fx_ec"
		start_nginx nginx-ec 1 "$fx_ec"
		for r in $(seq "$runs"); do
			for v in 1.2 1.3; do
				run_hs "full-$v-rsa" tlsk "$r" --tls "$v" --resume none
				run_hs "full-$v-rsa" nginx "$r" --tls "$v" --resume none
				run_hs "full-$v-p256" tlsk-ec "$r" --tls "$v" --resume none
				run_hs "full-$v-p256" nginx-ec "$r" --tls "$v" --resume none
			done
			run_hs ids-1.2 tlsk "$r" --tls 1.2 --resume ids
			run_hs ids-1.2 nginx "$r" --tls 1.2 --resume ids
			for v in 1.2 1.3; do
				run_hs "tickets-$v" tlsk "$r" --tls "$v" --resume tickets
				run_hs "tickets-$v" nginx "$r" --tls "$v" --resume tickets
			done
		done
		stop tlsk-ec nginx-ec
		echo "== hssys: syscalls per new connection (strace -c, one second each; rt_sigtimedwait, tlsk-serve's signal thread, left out)"
		for v in 1.2 1.3; do
			run_hssys "full-$v" tlsk --tls "$v" --resume none
			run_hssys "full-$v" nginx --tls "$v" --resume none
			run_hssys "tickets-$v" tlsk --tls "$v" --resume tickets
			run_hssys "tickets-$v" nginx --tls "$v" --resume tickets
		done
		echo "== hsir: userspace instructions per new connection, thousands (callgrind; one process each)"
		run_hsir tlsk
		run_hsir nginx
		;;
	idle)
		echo "== idle: $idle idle keep-alive TLS 1.3 connections (KiB RSS per connection, server MiB)"
		# Fresh servers each run: memory freed by earlier scenarios would hide the growth.
		for r in $(seq "$runs"); do
			start_tlsk tlsk-idle 1 "$fx"
			run_idle tlsk-idle "$r"
			stop tlsk-idle
			start_nginx nginx-idle 1 "$fx"
			run_idle nginx-idle "$r"
			stop nginx-idle
		done
		;;
	proxy)
		echo "== proxy: TLS terminated in front of plain nginx, 1 GiB (GB/s, proxy CPU s/GiB)"
		start_nginx backend 1 "$fx" 0
		port=$(free_port)
		$pin_srv "$proxy" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
			--listen "127.0.0.1:$port" --backend "127.0.0.1:${PORT[backend]}" --workers 1 \
			>"$dir/logs/proxy.out" 2>&1 &
		PID[tlsk-proxy]=$! PORT[tlsk-proxy]=$port
		pids+=("$!")
		wait_port "$port"
		cat "$fx/agent1-cert.pem" "$fx/agent1-key.pem" >"$dir/haproxy.pem"
		port=$(free_port)
		cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 9000
    ssl-default-bind-ciphersuites $suite
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 10s
    timeout client 300s
    timeout server 300s
frontend tls
    bind 127.0.0.1:$port ssl crt $dir/haproxy.pem
    default_backend plain
backend plain
    server nginx 127.0.0.1:${PORT[backend]}
EOF
		$pin_srv haproxy -db -f "$dir/haproxy.cfg" >"$dir/logs/haproxy.out" 2>&1 &
		PID[haproxy]=$! PORT[haproxy]=$port
		pids+=("$!")
		wait_port "$port"
		warm_bulk tlsk-proxy haproxy
		for r in $(seq "$runs"); do
			run_bulk proxy 1g tlsk-proxy "$r"
			run_bulk proxy 1g haproxy "$r"
		done
		stop tlsk-proxy haproxy backend
		;;
	workers)
		echo "== workers: two each (req/s, CPU ms per 1000 requests; GB/s, CPU s/GiB)"
		set_pinning 2
		start_tlsk tlsk-w2 2 "$fx"
		start_nginx nginx-w2 2 "$fx"
		warm_bulk tlsk-w2 nginx-w2
		for r in $(seq "$runs"); do
			run_wrk workers w2-4k-c64 tlsk-w2 "$r" 64 /4k.bin
			run_wrk workers w2-4k-c64 nginx-w2 "$r" 64 /4k.bin
			run_bulk workers w2-1g tlsk-w2 "$r"
			run_bulk workers w2-1g nginx-w2 "$r"
		done
		stop tlsk-w2 nginx-w2
		set_pinning 1
		;;
	kernel)
		echo "== kernel: kTLS mode against userspace mode in user-mode Linux (structural only)"
		BENCH_TSV=$tsv KRUNS=$((runs < 3 ? runs : 3)) TLSK_BUILD=$build bench/kernel.sh ||
			die "bench/kernel.sh failed"
		;;
	*) die "unknown scenario $sc" ;;
	esac
done

stop tlsk nginx
bench/report.sh "$tsv" "$out"

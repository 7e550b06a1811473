#!/bin/bash
# serve.sh - bulk download benchmark: tlsk-serve against nginx over loopback.
#
#   bench/serve.sh                    (make bench calls this)
#
# Downloads one 1 GiB file over HTTPS from tlsk-serve (as is, and with --mmap: userspace
# encryption straight from a mapping of the file), from nginx with `sendfile on`, and from
# nginx with `ssl_conf_command Options KTLS;` as well, alternating the servers, RUNS times each,
# with one client for all (bench/client.c: OpenSSL, TLS 1.3 AES-128-GCM, read-ahead into a
# large buffer).  The server(s) are pinned to one CPU and the client to another, when there are
# two.  Prints per-run figures, then the median throughput (GB/s, 10^9 bytes per second), the
# median server CPU seconds per GiB (utime + stime from /proc/PID/stat of every server process,
# before and after each download) and the ratios tlsk-serve / nginx.
#
# Same certificate (build/fixtures/rsa agent1, RSA 2048), same worker count (WORKERS, default 1)
# and the same TLS 1.3 suite for every server.  Without the kernel `tls` module both nginx runs
# encrypt in userspace (OpenSSL cannot enable KTLS), and the script says so.
#
# Environment:
#   RUNS=5          downloads per server
#   SIZE_MIB=1024   file size
#   WORKERS=1       tlsk-serve --workers and nginx worker_processes
#   SUITE=TLS_AES_128_GCM_SHA256
#   BENCH_DIR=/tmp/tlsk-bench   where the file (kept between runs) and configs live
#   TLSK_SERVE=...  tlsk-serve binary to measure (default: build it with make)
#   NGINX=nginx     nginx binary; installed with apt-get (nginx-light) when missing and root
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}
workers=${WORKERS:-1}
suite=${SUITE:-TLS_AES_128_GCM_SHA256}
dir=${BENCH_DIR:-/tmp/tlsk-bench}
nginx=${NGINX:-nginx}
build=${TLSK_BUILD:-build}
fx=$top/build/fixtures/rsa

. "$top/bench/lib.sh"

# ---- prerequisites ------------------------------------------------------------------------
cd "$top"
[ -s "$fx/agent1-cert.pem" ] || scripts/gen-fixtures.sh "$top/build/fixtures" >/dev/null ||
	die "cannot generate fixtures"
serve=${TLSK_SERVE:-}
if [ -z "$serve" ]; then
	make -s "$build/tools/tlsk-serve" || die "cannot build tlsk-serve"
	serve=$build/tools/tlsk-serve
fi
mkdir -p "$dir/www" "$dir/logs"
chmod 755 "$dir" "$dir/www"
build_clients
need_pkg "$nginx" nginx-light
nginx=$(command -v "$nginx")

file=$dir/www/big.bin
want=$((size_mib * 1024 * 1024))
make_file big.bin "$want" # kept between runs, read into the page cache: no disk measured

set_pinning "$workers"
[ -n "$cli_cpu" ] && [ "$workers" -ge "$(nproc)" ] &&
	echo "serve.sh: note: $workers workers on $(nproc) CPUs share a CPU with the client"

pids=()
trap cleanup EXIT # bench/lib.sh: stops every server in pids

# ---- servers -------------------------------------------------------------------------------
tlsk_port=$(free_port)
$pin_srv "$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
	--root "$dir/www" --listen "127.0.0.1:$tlsk_port" --workers "$workers" --quiet \
	--ciphersuites "$suite" >"$dir/logs/tlsk.out" 2>"$dir/logs/tlsk.err" &
tlsk_pid=$!
pids+=("$tlsk_pid")
tlskm_port=$(free_port)
$pin_srv "$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
	--root "$dir/www" --listen "127.0.0.1:$tlskm_port" --workers "$workers" --quiet --mmap \
	--ciphersuites "$suite" >"$dir/logs/tlsk-mmap.out" 2>"$dir/logs/tlsk-mmap.err" &
tlskm_pid=$!
pids+=("$tlskm_pid")


nginx_port=$(free_port)
conf=$(nginx_conf plain "$nginx_port" 0 "$workers")
$pin_srv "$nginx" -p "$dir/nginx-plain" -c "$conf" -e "$dir/nginx-plain/logs/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
nginxk_port=$(free_port)
conf=$(nginx_conf ktls "$nginxk_port" 1 "$workers")
$pin_srv "$nginx" -p "$dir/nginx-ktls" -c "$conf" -e "$dir/nginx-ktls/logs/error.log" &
nginxk_pid=$!
pids+=("$nginxk_pid")

for port in "$tlsk_port" "$tlskm_port" "$nginx_port" "$nginxk_port"; do
	wait_port "$port"
done
sleep 0.3

echo "== tlsk-serve vs nginx: ${size_mib} MiB over loopback, $runs runs each, $workers worker(s)," \
	"suite $suite"
echo "   kernel $(uname -r); $(head -n 2 "$dir/logs/tlsk.out" | tail -n 1)"
if grep -q 'kTLS NOT in use' "$dir/logs/tlsk.out"; then
	echo "   no kernel tls module: nginx with 'Options KTLS' also encrypts in userspace here"
fi
echo "   $("$nginx" -v 2>&1), $(openssl version | cut -d' ' -f1-2); server CPU $srv_cpus${pin_cli:+, client CPU $cli_cpu}"

results=$dir/logs/results.txt
: >"$results"
# Run 0 warms each server up and is not counted: a fresh process's first 1 GiB costs 15-40 %
# more CPU than the ones after it, for every server (bench/README.md, bulk).
for run in $(seq 0 "$runs"); do
	for s in tlsk tlsk-mmap nginx nginx-ktls; do
		case $s in
		tlsk) port=$tlsk_port pid=$tlsk_pid ;;
		tlsk-mmap) port=$tlskm_port pid=$tlskm_pid ;;
		nginx) port=$nginx_port pid=$nginx_pid ;;
		nginx-ktls) port=$nginxk_port pid=$nginxk_pid ;;
		esac
		c0=$(cpu_ticks "$pid")
		out=$($pin_cli "$dir/client" 127.0.0.1 "$port" /big.bin --ciphersuite "$suite") ||
			die "$s: download failed: $out"
		c1=$(cpu_ticks "$pid")
		bytes=${out#bytes=}
		bytes=${bytes%% *}
		secs=${out#*seconds=}
		secs=${secs%% *}
		[ "$bytes" = "$want" ] || die "$s: got $bytes bytes, wanted $want"
		[ "$run" = 0 ] && continue
		awk -v s="$s" -v r="$run" -v b="$bytes" -v t="$secs" -v c=$((c1 - c0)) -v hz="$hz" 'BEGIN {
			printf "%s\t%d\t%.4f\t%.4f\n", s, r, b / t / 1e9, (c / hz) / (b / 1073741824)
		}' >>"$results"
		tail -n 1 "$results" | awk -F'\t' '{ printf "   run %d %-11s %6.3f GB/s  %6.3f s CPU/GiB\n", $2, $1, $3, $4 }'
	done
done

smedian() { # server column
	median "$results" "$2" "\$1 == \"$1\""
}

echo "== medians"
printf "   %-11s %8s %14s\n" server GB/s "CPU s/GiB"
for s in tlsk tlsk-mmap nginx nginx-ktls; do
	printf "   %-11s %8.3f %14.3f\n" "$s" "$(smedian $s 3)" "$(smedian $s 4)"
done
ratios() { # tlsk-variant nginx-variant
	awk -v a="$1" -v b="$2" -v tt="$(smedian "$1" 3)" -v tc="$(smedian "$1" 4)" \
		-v nt="$(smedian "$2" 3)" -v nc="$(smedian "$2" 4)" 'BEGIN {
		printf "== %-9s / %-10s throughput %.2fx, server CPU per GiB %.2fx\n", a, b, tt / nt, tc / nc
	}'
}
ratios tlsk nginx
ratios tlsk nginx-ktls
ratios tlsk-mmap nginx
ratios tlsk-mmap nginx-ktls
echo "   target without kTLS: throughput >= 1.10x, CPU per GiB <= 0.90x"

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

die() {
	echo "serve.sh: $*" >&2
	exit 1
}

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
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$dir/client" bench/client.c \
	$(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto) ||
	die "cannot build bench/client.c"
if ! command -v "$nginx" >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "serve.sh: installing nginx-light"
		DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null ||
			die "apt-get install nginx-light failed"
	else
		die "nginx not found (apt-get install nginx-light, as root)"
	fi
fi
nginx=$(command -v "$nginx")

file=$dir/www/big.bin
want=$((size_mib * 1024 * 1024))
if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != "$want" ]; then
	echo "serve.sh: writing a ${size_mib} MiB file of random bytes to $file"
	head -c "$want" /dev/urandom >"$file.tmp" && mv "$file.tmp" "$file"
fi
chmod 644 "$file"
cat "$file" >/dev/null # into the page cache: the disk is not what is measured

ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
	srv_cpus=0
	[ "$workers" -gt 1 ] && srv_cpus=0-$((workers - 1))
	cli_cpu=$((ncpu - 1))
	[ "$workers" -ge "$ncpu" ] && echo "serve.sh: note: $workers workers on $ncpu CPUs share a CPU with the client"
	pin_srv="taskset -c $srv_cpus"
	pin_cli="taskset -c $cli_cpu"
else
	pin_srv=
	pin_cli=
fi

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

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

nginx_conf() { # name port ktls
	local d=$dir/nginx-$1
	mkdir -p "$d/logs" "$d/tmp"
	cat >"$d/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    types { application/octet-stream bin; }
    server {
        listen 127.0.0.1:$2 ssl;
        ssl_certificate $fx/agent1-cert.pem;
        ssl_certificate_key $fx/agent1-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites $suite;
$([ "$3" = 1 ] && echo "        ssl_conf_command Options KTLS;")
        root $dir/www;
    }
}
EOF
	echo "$d/nginx.conf"
}

nginx_port=$(free_port)
conf=$(nginx_conf plain "$nginx_port" 0)
$pin_srv "$nginx" -p "$dir/nginx-plain" -c "$conf" -e "$dir/nginx-plain/logs/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
nginxk_port=$(free_port)
conf=$(nginx_conf ktls "$nginxk_port" 1)
$pin_srv "$nginx" -p "$dir/nginx-ktls" -c "$conf" -e "$dir/nginx-ktls/logs/error.log" &
nginxk_pid=$!
pids+=("$nginxk_pid")

# Wait until all three answer.
for port in "$tlsk_port" "$tlskm_port" "$nginx_port" "$nginxk_port"; do
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
done
sleep 0.3

# utime + stime (clock ticks) of a process and its children (nginx's workers).
cpu_ticks() {
	local total=0 p f
	for p in "$1" $(pgrep -P "$1" || true); do
		f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
		set -- $f
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}
hz=$(getconf CLK_TCK)

echo "== tlsk-serve vs nginx: ${size_mib} MiB over loopback, $runs runs each, $workers worker(s)," \
	"suite $suite"
echo "   kernel $(uname -r); $(head -n 2 "$dir/logs/tlsk.out" | tail -n 1)"
if grep -q 'kTLS NOT in use' "$dir/logs/tlsk.out"; then
	echo "   no kernel tls module: nginx with 'Options KTLS' also encrypts in userspace here"
fi
echo "   $("$nginx" -v 2>&1), $(openssl version | cut -d' ' -f1-2); server CPU $srv_cpus${pin_cli:+, client CPU $cli_cpu}"

results=$dir/logs/results.txt
: >"$results"
for run in $(seq "$runs"); do
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
		awk -v s="$s" -v r="$run" -v b="$bytes" -v t="$secs" -v c=$((c1 - c0)) -v hz="$hz" 'BEGIN {
			printf "%s %d %.4f %.4f\n", s, r, b / t / 1e9, (c / hz) / (b / 1073741824)
		}' >>"$results"
		tail -n 1 "$results" | awk '{ printf "   run %d %-11s %6.3f GB/s  %6.3f s CPU/GiB\n", $2, $1, $3, $4 }'
	done
done

median() { # server column
	awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$results" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== medians"
printf "   %-11s %8s %14s\n" server GB/s "CPU s/GiB"
for s in tlsk tlsk-mmap nginx nginx-ktls; do
	printf "   %-11s %8.3f %14.3f\n" "$s" "$(median $s 3)" "$(median $s 4)"
done
ratios() { # tlsk-variant nginx-variant
	awk -v a="$1" -v b="$2" -v tt="$(median "$1" 3)" -v tc="$(median "$1" 4)" \
		-v nt="$(median "$2" 3)" -v nc="$(median "$2" 4)" 'BEGIN {
		printf "== %-9s / %-10s throughput %.2fx, server CPU per GiB %.2fx\n", a, b, tt / nt, tc / nc
	}'
}
ratios tlsk nginx
ratios tlsk nginx-ktls
ratios tlsk-mmap nginx
ratios tlsk-mmap nginx-ktls
echo "   target without kTLS: throughput >= 1.10x, CPU per GiB <= 0.90x"

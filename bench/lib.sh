# lib.sh - what bench/serve.sh and bench/suite.sh share: prerequisites, pinning, servers'
# configurations, CPU and memory readings from /proc, medians.  Sourced, never run.
#
# Expects: top (the checkout), dir (the bench folder), fx (fixtures of one key type).

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

# need_pkg COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing (as root).
need_pkg() {
	command -v "$1" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "${0##*/}: installing $2"
		DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null ||
			die "apt-get install $2 failed"
		# A package that starts its own service (haproxy) must not hold ports or CPU here.
		systemctl stop "$1" >/dev/null 2>&1 || true
	else
		die "$1 not found (apt-get install $2, as root)"
	fi
}

# Server on CPU 0 (0..workers-1), client on the last CPU, when there are two or more.
set_pinning() { # workers
	local ncpu
	ncpu=$(nproc)
	srv_cpus=0
	[ "$1" -gt 1 ] && srv_cpus=0-$(($1 - 1))
	if [ "$ncpu" -ge 2 ]; then
		cli_cpu=$((ncpu - 1))
		pin_srv="taskset -c $srv_cpus"
		pin_cli="taskset -c $cli_cpu"
	else
		cli_cpu=
		pin_srv=
		pin_cli=
	fi
}

# Servers started in the background put their PIDs in the caller's pids array; `trap
# cleanup EXIT` stops them all however the script ends.
cleanup() {
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on port $1"
}

# "TOTAL USER": utime + stime, and utime alone, in clock ticks, of a process and its children
# (nginx's and haproxy's workers), from one read of each /proc/PID/stat.
proc_ticks() {
	local total=0 user=0 p f
	for p in "$1" $(pgrep -P "$1" || true); do
		f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
		set -- $f
		total=$((total + ${12} + ${13}))
		user=$((user + ${12}))
	done
	echo "$total $user"
}

# utime + stime (clock ticks) of a process and its children.
cpu_ticks() {
	local t
	read -r t _ < <(proc_ticks "$1")
	echo "$t"
}
hz=$(getconf CLK_TCK)

# Where the two CPUs' time went, from /proc/stat in clock ticks: "BUSY0 STEAL0 BUSY1 STEAL1",
# the server's CPUs (srv_cpus) summed and the client's (cli_cpu); busy is user + nice +
# system + irq + softirq, steal the time the hypervisor ran something else on that vCPU.
cpu_stat() {
	awk -v s="$srv_cpus" -v c="${cli_cpu:-}" '
		BEGIN { n = split(s, r, "-"); lo = r[1] + 0; hi = (n > 1 ? r[2] : r[1]) + 0 }
		$1 ~ /^cpu[0-9]+$/ {
			i = substr($1, 4) + 0; b = $2 + $3 + $4 + $7 + $8
			if (i >= lo && i <= hi) { b0 += b; s0 += $9 }
			if (c != "" && i == c + 0) { b1 += b; s1 += $9 }
		}
		END { print b0 + 0, s0 + 0, b1 + 0, s1 + 0 }' /proc/stat
}

# Resident memory (KiB) of a process and its children.
rss_kib() {
	local total=0 p v
	for p in "$1" $(pgrep -P "$1" || true); do
		v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# median FILE COLUMN [AWK-FILTER]: the median of a column of the rows the filter keeps.
median() {
	awk -F'\t' "${3:-1} { print \$$2 }" "$1" | sort -g |
		awk '{ v[NR] = $1 } END { if (!NR) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# nginx_conf NAME PORT KTLS WORKERS [EXTRA-SERVER-LINES]: a configuration for one nginx
# serving $dir/www over TLS with the fixtures' certificate; prints its path.
nginx_conf() {
	local d=$dir/nginx-$1
	mkdir -p "$d/logs" "$d/tmp"
	cat >"$d/nginx.conf" <<EOF
worker_processes $4;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 10000; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    types { application/octet-stream bin; }
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 300;
    server {
        listen 127.0.0.1:$2 ssl;
        ssl_certificate $fx/agent1-cert.pem;
        ssl_certificate_key $fx/agent1-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites ${suite:-TLS_AES_128_GCM_SHA256};
$([ "$3" = 1 ] && echo "        ssl_conf_command Options KTLS;")
        root $dir/www;
${5:-}
    }
}
EOF
	echo "$d/nginx.conf"
}

build_clients() {
	local ssl
	ssl=$(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto)
	cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$dir/client" "$top/bench/client.c" $ssl ||
		die "cannot build bench/client.c"
	cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$dir/hs" "$top/bench/hs.c" $ssl ||
		die "cannot build bench/hs.c"
	cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$dir/pingpong" "$top/bench/pingpong.c" ||
		die "cannot build bench/pingpong.c"
}

# make_file NAME BYTES: a file of random bytes in $dir/www, kept between runs, in the page cache.
make_file() {
	local f=$dir/www/$1
	if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != "$2" ]; then
		head -c "$2" /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
	fi
	chmod 644 "$f"
	cat "$f" >/dev/null
}

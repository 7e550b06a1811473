#!/bin/bash
# systemd.t - the shipped systemd units and the tools under a service manager:
# - every unit in systemd/ passes `systemd-analyze verify` without a warning (the binaries'
#   paths pointed at the built ones, nothing else changed), carries the hardening the units
#   promise, and `systemd-analyze security --offline` rates each service's exposure <= 2.0;
#   a unit with a misspelt directive is caught (the check can fail);
# - the sysusers.d file creates the tlsk user (systemd-sysusers --root on a scratch root);
# - real socket activation with systemd-socket-activate: tlsk-serve and tlsk-proxy take the
#   passed socket, serve byte-exact over TLS, and report READY=1 on NOTIFY_SOCKET (a datagram
#   socket this test owns); tlsk-serve reports RELOADING=1 then READY=1 around SIGHUP and
#   STOPPING=1 on SIGTERM, and exits 0;
# - LISTEN_FDS meant for another process (LISTEN_PID not ours) is ignored: --listen is used;
#   a passed descriptor that is not a listening TCP socket (a UDP socket, /dev/null) is refused
#   with a message naming it and exit status 1.
# Service management has nothing to do with the kernel's TLS: native tier only.
set -u

top=${TLSK_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TLSK_BUILD_DIR:-$top/build}
fx=${TLSK_FIXTURES:-$top/build/fixtures/rsa}
serve=$build/tools/tlsk-serve
proxy=$build/tools/tlsk-proxy
ca=$fx/ca1-cert.pem

if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP the units and socket activation are checked in the native tier"
	exit 0
fi

# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/systemd-t.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

for t in systemd-analyze systemd-socket-activate systemd-sysusers curl python3; do
	command -v $t >/dev/null
	ok $? "$t is installed (scripts/deps.sh)"
done

# ---- the units ------------------------------------------------------------------------------
mkdir -p "$tmp/units"
for u in "$top"/systemd/*.service "$top"/systemd/*.socket; do
	sed -e "s|/usr/bin/tlsk-modprobe|$top/kmod-helpers/tlsk-modprobe|" \
		-e "s|/usr/bin/tlsk-|$build/tools/tlsk-|" "$u" >"$tmp/units/${u##*/}"
done
verify() { # unit...: exit 0 and not a word on either stream
	(cd "$tmp/units" && systemd-analyze verify --man=no "$@") >"$tmp/verify.out" 2>&1
	local rc=$?
	[ $rc = 0 ] && [ ! -s "$tmp/verify.out" ]
}
for u in tlsk-serve.socket tlsk-serve.service tlsk-proxy@8443.socket tlsk-proxy@8443.service; do
	verify "$u"
	ok $? "systemd-analyze verify $u: no error, no warning" || diag "$tmp/verify.out"
done
sed 's/^NoNewPrivileges=yes/NoNewPrivilegez=yes/' "$tmp/units/tlsk-serve.service" \
	>"$tmp/units/misspelt.service"
verify misspelt.service
[ $? != 0 ] && grep -q NoNewPrivilegez "$tmp/verify.out"
ok $? "the verify check fails on a misspelt directive"
rm -f "$tmp/units/misspelt.service"

for u in tlsk-serve.service tlsk-proxy@.service; do
	f=$top/systemd/$u
	for d in '^Type=notify$' '^User=tlsk$' '^ProtectSystem=strict$' '^NoNewPrivileges=yes$' \
		'^CapabilityBoundingSet=' '^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$' \
		'^SystemCallFilter=@system-service$' '^ExecStartPre=-\+/usr/bin/tlsk-modprobe --load$'; do
		grep -Eq "$d" "$f"
		ok $? "$u: $d"
	done
done
grep -q '^CapabilityBoundingSet=$' "$top/systemd/tlsk-serve.service"
ok $? "tlsk-serve.service keeps no capability (its socket comes from tlsk-serve.socket)"
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$top/systemd/tlsk-serve.service"
ok $? "tlsk-serve.service reloads with SIGHUP"
for u in tlsk-serve.service tlsk-proxy@8443.service; do
	(cd "$tmp/units" && systemd-analyze security --offline=yes --no-pager "$u") \
		>"$tmp/sec.out" 2>&1
	level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$tmp/sec.out")
	[ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'
	ok $? "systemd-analyze security $u: exposure ${level:-?} <= 2.0" || tail -5 "$tmp/sec.out" | diag
done

mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" "$top/systemd/tlsk.sysusers" >"$tmp/sysusers.out" 2>&1
grep -q '^tlsk:' "$tmp/root/etc/passwd" 2>/dev/null && grep -q '^tlsk:' "$tmp/root/etc/group"
ok $? "systemd/tlsk.sysusers creates the system user and group tlsk" || diag "$tmp/sysusers.out"

# ---- activation -----------------------------------------------------------------------------
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# A NOTIFY_SOCKET of our own: every datagram becomes one line of $1 (" | " for newlines).
start_notify() { # socket-path out-file
	python3 -u - "$1" "$2" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a") as out:
    while True:
        try:
            d = s.recv(4096)
        except OSError:
            break
        out.write(d.decode(errors="replace").replace("\n", " | ") + "\n")
        out.flush()
EOF
	pids+=($!)
	for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
	return 1
}
wait_for() { # file pattern seconds
	local i
	for i in $(seq $(($3 * 20))); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

head -c 1048576 /dev/urandom >"$tmp/body.bin"
echo hello >"$tmp/small.txt"

# tlsk-serve, socket-activated
start_notify "$tmp/serve.sock" "$tmp/serve.notify"
ok $? "a NOTIFY_SOCKET to listen on"
port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$port" -E NOTIFY_SOCKET="$tmp/serve.sock" \
	"$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$tmp" \
	--listen 127.0.0.1:1 >"$tmp/serve.log" 2>&1 &
spid=$!
pids+=($spid)
wait_for "$tmp/serve.log" "Listening on" 10
ok $? "systemd-socket-activate listens on $port for tlsk-serve"
curl -s --max-time 20 --cacert "$ca" --resolve "localhost:$port:127.0.0.1" \
	"https://localhost:$port/body.bin" -o "$tmp/got.bin"
cmp -s "$tmp/body.bin" "$tmp/got.bin"
ok $? "tlsk-serve on the passed socket: 1 MiB byte-exact through curl"
grep -q "(socket from the service manager)" "$tmp/serve.log"
ok $? "tlsk-serve says the socket came from the service manager (not --listen 127.0.0.1:1)" ||
	diag "$tmp/serve.log"
wait_for "$tmp/serve.notify" "READY=1" 10
ok $? "tlsk-serve: READY=1" || diag "$tmp/serve.notify"
kill -HUP $spid
wait_for "$tmp/serve.log" "SIGHUP: reloaded" 10
ok $? "SIGHUP: tlsk-serve reloads"
wait_for "$tmp/serve.notify" "RELOADING=1" 5 &&
	[ "$(grep -c 'READY=1' "$tmp/serve.notify")" = 2 ] &&
	awk '/RELOADING=1/ { r = NR } /READY=1/ { last = NR } END { exit !(r && last > r) }' \
		"$tmp/serve.notify"
ok $? "tlsk-serve: RELOADING=1 around the reload, then READY=1 again" || diag "$tmp/serve.notify"
curl -s --max-time 20 --cacert "$ca" --resolve "localhost:$port:127.0.0.1" \
	"https://localhost:$port/small.txt" -o "$tmp/got.txt"
cmp -s "$tmp/small.txt" "$tmp/got.txt"
ok $? "tlsk-serve serves after the reload"
kill -TERM $spid
wait $spid
rc=$?
ok $rc "tlsk-serve exits 0 on SIGTERM (status $rc)"
grep -q "STOPPING=1" "$tmp/serve.notify"
ok $? "tlsk-serve: STOPPING=1" || diag "$tmp/serve.notify"

# tlsk-proxy, socket-activated, in front of a plain HTTP backend
bport=$(free_port)
(cd "$tmp" && exec python3 -m http.server --bind 127.0.0.1 "$bport") >"$tmp/backend.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -s --max-time 2 "http://127.0.0.1:$bport/small.txt" -o /dev/null && break
	sleep 0.1
done
start_notify "$tmp/proxy.sock" "$tmp/proxy.notify"
port=$(free_port)
systemd-socket-activate -l "127.0.0.1:$port" -E NOTIFY_SOCKET="$tmp/proxy.sock" \
	"$proxy" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
	--listen 127.0.0.1:1 --backend "127.0.0.1:$bport" >"$tmp/proxy.log" 2>&1 &
ppid_=$!
pids+=($ppid_)
wait_for "$tmp/proxy.log" "Listening on" 10
curl -s --max-time 20 --cacert "$ca" --resolve "localhost:$port:127.0.0.1" \
	"https://localhost:$port/body.bin" -o "$tmp/got2.bin"
cmp -s "$tmp/body.bin" "$tmp/got2.bin"
ok $? "tlsk-proxy on the passed socket: 1 MiB byte-exact from the backend through curl" ||
	diag "$tmp/proxy.log"
grep -q "listening on 127.0.0.1:$port" "$tmp/proxy.log"
ok $? "tlsk-proxy logs the passed socket's address, not --listen 127.0.0.1:1"
wait_for "$tmp/proxy.notify" "READY=1" 10
ok $? "tlsk-proxy: READY=1" || diag "$tmp/proxy.notify"
kill -TERM $ppid_
wait $ppid_ 2>/dev/null

# LISTEN_FDS for another process: ignored, --listen used.
port=$(free_port)
LISTEN_FDS=1 LISTEN_PID=1 "$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
	--root "$tmp" --listen "127.0.0.1:$port" 3</dev/null >"$tmp/other.log" 2>&1 &
opid=$!
pids+=($opid)
wait_for "$tmp/other.log" "listening on" 10
curl -s --max-time 20 --cacert "$ca" --resolve "localhost:$port:127.0.0.1" \
	"https://localhost:$port/small.txt" -o "$tmp/got3.txt"
cmp -s "$tmp/small.txt" "$tmp/got3.txt" && ! grep -q "service manager" "$tmp/other.log"
ok $? "LISTEN_PID not ours: LISTEN_FDS ignored, tlsk-serve listens on --listen" ||
	diag "$tmp/other.log"
kill -TERM $opid
wait $opid 2>/dev/null

# A passed descriptor that is not a listening TCP socket.
port=$(free_port)
timeout 20 systemd-socket-activate --datagram -l "127.0.0.1:$port" \
	"$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$tmp" \
	>"$tmp/udp.log" 2>&1 &
upid=$!
pids+=($upid)
wait_for "$tmp/udp.log" "Listening on" 10
python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(sys.argv[1])))' "$port"
wait $upid
rc=$?
[ $rc = 1 ] && grep -q "descriptor 3 from the service manager is not a listening TCP socket" \
	"$tmp/udp.log"
ok $? "a passed UDP socket: tlsk-serve refuses it and exits 1 (status $rc)" || diag "$tmp/udp.log"
for tool in "$serve" "$proxy"; do
	extra=(--root "$tmp")
	[ "$tool" = "$proxy" ] && extra=(--backend 127.0.0.1:1)
	sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3</dev/null' sh "$tool" \
		--cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --listen 127.0.0.1:0 \
		"${extra[@]}" >"$tmp/null.log" 2>&1 </dev/null &
	npid=$!
	pids+=($npid)
	( sleep 20; kill -KILL $npid 2>/dev/null ) &
	wait $npid
	rc=$?
	[ $rc = 1 ] && grep -q "not a listening TCP socket" "$tmp/null.log"
	ok $? "${tool##*/}: /dev/null passed as a socket is refused with exit 1 (status $rc)" ||
		diag "$tmp/null.log"
done

tap_done

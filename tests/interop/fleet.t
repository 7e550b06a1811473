#!/bin/bash
# fleet.t - tlsk-serve as a fleet: sessions shared through Redis (--session-store) and ticket
# keys shared through one key file (--ticket-key-file).
#
# Native tier: three tlsk-serve instances, each in its own network namespace (ip netns, a veth
# pair to a bridge with private 10.213.x.0/24 addresses), share one redis-server started by
# the test and one key file.  Clients (openssl s_client, node, curl) in the test's namespace:
# - a TLS 1.2 session id made on A resumes on B and C (through Redis: the key is there), from
#   s_client and from node; a TLS 1.3 ticket from A resumes on B and C (shared keys);
# - Redis frozen (SIGSTOP: connections accepted, nothing answered): handshakes are full after
#   the store timeout (50 ms), each well under a second, and the log says so; thawed, it
#   resumes again;
# - Redis killed: handshakes go on, full, at once; restarted: the members reconnect and
#   resumption through the store works again;
# - key rotation on every member (append K2, move it to the front, drop K1): a ticket under
#   the previous key resumes everywhere until K1 is dropped, then gets a full handshake;
# - a bad --session-store is refused at start (exit 2).
# Also printed (not asserted): resumed TLS 1.2 handshakes per second through Redis against
# the per-process cache, one python3 client, same server.
# Real-kernel tiers (user-mode Linux, no namespaces needed): redis-server on loopback and two
# instances; a session id made on A resumes on B through Redis, with records in the kernel.
set -u

top=${TLSK_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TLSK_BUILD_DIR:-$top/build}
fx=${TLSK_FIXTURES:-$top/build/fixtures/rsa}
serve=$build/tools/tlsk-serve
ca=$fx/ca1-cert.pem
ktls=${TLSK_EXPECT_KTLS:-0}

# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleet-t.XXXXXX")
id=$$
br=tkbr$id
nss=()
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -CONT "$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "${nss[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	ip link del "$br" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

for t in redis-server redis-cli openssl python3; do
	command -v $t >/dev/null
	ok $? "$t is installed (scripts/deps.sh)"
done

wait_for() { # file pattern seconds
	local i
	for i in $(seq $(($3 * 20))); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
# s_client: one handshake with a session in or out; prints New or Reused.
handshake() { # host port version(-tls1_2|-tls1_3) in|out file
	local extra=() wait=0
	[ "$3" = -tls1_2 ] && extra=(-no_ticket)
	# A TLS 1.3 ticket comes after the handshake: keep stdin open until it is in.
	[ "$3" = -tls1_3 ] && [ "$4" = out ] && wait=0.3
	(sleep $wait) | timeout 10 openssl s_client -connect "$1:$2" "$3" "${extra[@]}" \
		-servername localhost -CAfile "$ca" "-sess_$4" "$5" 2>/dev/null |
		sed -n 's/^\(New\|Reused\), .*/\1/p' | head -1
}

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_redis() { # bind-address
	redis-server --bind "$1" --port "$redis_port" --save '' --appendonly no \
		--protected-mode no >>"$tmp/redis.log" 2>&1 &
	redis_pid=$!
	pids+=($redis_pid)
	for _ in $(seq 100); do
		redis-cli -h "$1" -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	return 1
}
head -c 48 /dev/urandom >"$tmp/k1"
head -c 48 /dev/urandom >"$tmp/k2"
cp "$tmp/k1" "$tmp/keys"
head -c 300000 /dev/urandom >"$tmp/body.bin"

# start_member NAME ADDRESS [ip netns exec NS]: tlsk-serve on ADDRESS:8443 (or port 0 on
# loopback), sharing the store and the key file.
start_member() {
	local name=$1 addr=$2
	shift 2
	"$@" "$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$tmp" \
		--listen "$addr" --workers 2 --session-store "redis://$store_addr:$redis_port" \
		--ticket-key-file "$tmp/keys" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	wait_for "$tmp/$name.log" "listening on" 10 && wait_for "$tmp/$name.log" "session store: redis .* connected" 10
}
port_of() { sed -n 's|.*listening on https://[^/]*:\([0-9]*\)/.*|\1|p' "$tmp/$1.log" | head -1; }

if [ "$ktls" = 1 ]; then
	# ---- real-kernel tier: one resumption through Redis, records in the kernel -----------------
	store_addr=127.0.0.1
	start_redis 127.0.0.1
	ok $? "redis-server on 127.0.0.1:$redis_port"
	start_member A 127.0.0.1:0
	ok $? "member A started and connected to the store"
	start_member B 127.0.0.1:0
	ok $? "member B started and connected to the store"
	pa=$(port_of A)
	pb=$(port_of B)
	r=$(handshake 127.0.0.1 "$pa" -tls1_2 out "$tmp/s12")
	[ "$r" = New ]
	ok $? "TLS 1.2 session id from A: $r"
	[ "$(redis-cli -p "$redis_port" --scan --pattern 'tlsk-serve:session:*' | wc -l)" -ge 1 ]
	ok $? "the session is in Redis"
	r=$(handshake 127.0.0.1 "$pb" -tls1_2 in "$tmp/s12")
	[ "$r" = Reused ]
	ok $? "it resumes on B through Redis: $r"
	curl -s --max-time 20 --cacert "$ca" --resolve "localhost:$pb:127.0.0.1" \
		"https://localhost:$pb/body.bin" -o "$tmp/got.bin"
	cmp -s "$tmp/body.bin" "$tmp/got.bin" && grep -q 'body.bin.* tx=kernel' "$tmp/B.log"
	ok $? "B serves byte-exact with transmit in the kernel" || tail -3 "$tmp/B.log" | diag
	tap_done
fi

# ---- native tier: three members in their own network namespaces -------------------------------
ip link add "$br" type bridge && ip addr add 10.213.0.1/24 dev "$br" && ip link set "$br" up
ok $? "bridge $br with 10.213.0.1/24 (namespace-private addresses)"
i=0
for m in A B C; do
	i=$((i + 1))
	ns=tlskfleet$id$m
	ip netns add "$ns" && nss+=("$ns") &&
		ip link add "tkv$id$m" type veth peer name "tkp$id$m" &&
		ip link set "tkp$id$m" netns "$ns" &&
		ip link set "tkv$id$m" master "$br" && ip link set "tkv$id$m" up &&
		ip netns exec "$ns" ip addr add "10.213.0.1$i/24" dev "tkp$id$m" &&
		ip netns exec "$ns" ip link set "tkp$id$m" up &&
		ip netns exec "$ns" ip link set lo up
	ok $? "namespace $ns with 10.213.0.1$i"
done
store_addr=10.213.0.1
start_redis 10.213.0.1
ok $? "redis-server on 10.213.0.1:$redis_port"
for m in A B C; do
	case $m in A) a=10.213.0.11 ;; B) a=10.213.0.12 ;; C) a=10.213.0.13 ;; esac
	start_member "$m" "$a:8443" ip netns exec "tlskfleet$id$m"
	ok $? "member $m in its namespace on $a:8443, connected to the store" || diag "$tmp/$m.log"
done
A=10.213.0.11
B=10.213.0.12
C=10.213.0.13
for h in $A $B $C; do
	curl -s --max-time 20 --cacert "$ca" --resolve "localhost:8443:$h" \
		"https://localhost:8443/body.bin" -o "$tmp/got.bin"
	cmp -s "$tmp/body.bin" "$tmp/got.bin"
	ok $? "curl: $h serves byte-exact"
done

# Sessions across members.
r=$(handshake $A 8443 -tls1_2 out "$tmp/s12")
[ "$r" = New ]
ok $? "s_client TLS 1.2 (session id, no ticket) from A: $r"
keys=$(redis-cli -h 10.213.0.1 -p "$redis_port" --scan --pattern 'tlsk-serve:session:*' | wc -l)
ttl=$(redis-cli -h 10.213.0.1 -p "$redis_port" ttl "$(redis-cli -h 10.213.0.1 -p "$redis_port" --scan --pattern 'tlsk-serve:session:*' | head -1)")
[ "$keys" -ge 1 ] && [ "$ttl" -gt 250 ] && [ "$ttl" -le 300 ]
ok $? "the session is in Redis ($keys key(s), TTL $ttl s of 300)"
for h in $B $C; do
	r=$(handshake $h 8443 -tls1_2 in "$tmp/s12")
	[ "$r" = Reused ]
	ok $? "the TLS 1.2 session from A resumes on $h through Redis: $r"
done
r=$(handshake $A 8443 -tls1_3 out "$tmp/s13")
[ "$r" = New ]
ok $? "s_client TLS 1.3 ticket from A: $r"
for h in $B $C; do
	r=$(handshake $h 8443 -tls1_3 in "$tmp/s13")
	[ "$r" = Reused ]
	ok $? "the TLS 1.3 ticket from A resumes on $h (shared ticket keys): $r"
done
if command -v node >/dev/null; then
	cat >"$tmp/resume.js" <<'EOF'
// node resume.js CA VERSION HOST1 HOST2: a session from HOST1, offered to HOST2.
const tls = require('tls'), fs = require('fs'), crypto = require('crypto');
const [ca, ver, h1, h2] = process.argv.slice(2);
const opts = { port: 8443, servername: 'localhost', ca: fs.readFileSync(ca),
               minVersion: ver, maxVersion: ver,
               // TLS 1.2 without tickets: the server keeps the session (session id).
               secureOptions: ver === 'TLSv1.2' ? crypto.constants.SSL_OP_NO_TICKET : 0 };
function once(host, session) {
  return new Promise((res, rej) => {
    let got = null;
    const s = tls.connect({ ...opts, host, session }, () => {
      if (ver === 'TLSv1.2') { got = s.getSession(); }
      s.write('GET /a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    s.on('session', (x) => { got = x; });
    s.on('data', () => {});
    s.on('end', () => res({ reused: s.isSessionReused(), session: got }));
    s.on('error', rej);
  });
}
(async () => {
  const a = await once(h1);
  const b = await once(h2, a.session);
  console.log(`first ${a.reused ? 'Reused' : 'New'} second ${b.reused ? 'Reused' : 'New'}`);
})().catch((e) => { console.log('error ' + e.message); process.exit(1); });
EOF
	echo hi >"$tmp/a.txt"
	for v in TLSv1.2 TLSv1.3; do
		out=$(timeout 20 node "$tmp/resume.js" "$ca" $v $A $C 2>&1)
		[ "$out" = "first New second Reused" ]
		ok $? "node $v: a session from A resumes on C ($out)"
	done
else
	ok 1 "node is installed (scripts/deps.sh)"
fi

# Redis frozen: accepted, never answered.
r=$(handshake $A 8443 -tls1_2 out "$tmp/s12b")
kill -STOP "$redis_pid"
slow_ok=0
for i in 1 2 3; do
	t0=$(date +%s%N)
	r=$(handshake $B 8443 -tls1_2 in "$tmp/s12b")
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$r" = New ] && [ $ms -lt 1000 ] || slow_ok=1
	echo "# frozen store: handshake $i $r in $ms ms"
done
ok $slow_ok "Redis frozen: three handshakes on B complete, full, each under 1 s"
wait_for "$tmp/B.log" "did not answer a lookup within 50 ms" 5
ok $? "B logs the store's slowness"
kill -CONT "$redis_pid"
sleep 0.3
r=$(handshake $C 8443 -tls1_2 in "$tmp/s12b")
[ "$r" = Reused ]
ok $? "thawed: the session resumes through Redis again (on C): $r"

# Redis killed, then restarted.
kill -KILL "$redis_pid"
wait "$redis_pid" 2>/dev/null
down_ok=0
for i in 1 2 3; do
	t0=$(date +%s%N)
	r=$(handshake $B 8443 -tls1_2 in "$tmp/s12b")
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$r" = New ] && [ $ms -lt 1000 ] || down_ok=1
	echo "# store down: handshake $i $r in $ms ms"
done
ok $down_ok "Redis down: three handshakes on B complete, full, each under 1 s"
wait_for "$tmp/B.log" "session store: redis .* lost" 5
ok $? "B logs the lost store"
start_redis 10.213.0.1
ok $? "redis-server restarted"
for m in A B C; do
	wait_for "$tmp/$m.log" "connected" 1
	[ "$(grep -c 'session store: redis .* connected' "$tmp/$m.log")" -ge 3 ] ||
		wait_for_reconnect=$(sleep 6)
	[ "$(grep -c 'session store: redis .* connected' "$tmp/$m.log")" -ge 3 ]
	ok $? "member $m reconnected (each of its 2 workers)" || diag "$tmp/$m.log"
done
r=$(handshake $A 8443 -tls1_2 out "$tmp/s12c")
r2=$(handshake $B 8443 -tls1_2 in "$tmp/s12c")
[ "$r" = New ] && [ "$r2" = Reused ]
ok $? "after the restart a session from A resumes on B again ($r, $r2)"

# Ticket key rotation on every member (they all read the same file).
r=$(handshake $A 8443 -tls1_3 out "$tmp/t1")
cat "$tmp/k1" "$tmp/k2" >"$tmp/keys.new" && mv "$tmp/keys.new" "$tmp/keys"
for m in A B C; do wait_for "$tmp/$m.log" "ticket keys reloaded from .*: 2 keys" 5; done
ok $? "step 1 (append K2): every member reads 2 keys"
cat "$tmp/k2" "$tmp/k1" >"$tmp/keys.new" && mv "$tmp/keys.new" "$tmp/keys"
sleep 2.5 # the file's change is seen within about a second
r1=$(handshake $B 8443 -tls1_3 in "$tmp/t1")
r2=$(handshake $C 8443 -tls1_3 out "$tmp/t2")
[ "$r1" = Reused ] && [ "$r2" = New ]
ok $? "step 2 (K2 first): a K1 ticket still resumes on B ($r1); C issues one under K2"
cp "$tmp/k2" "$tmp/keys.new" && mv "$tmp/keys.new" "$tmp/keys"
for m in A B C; do wait_for "$tmp/$m.log" "ticket keys reloaded from .*: 1 key$" 5; done
ok $? "step 3 (drop K1): every member reads 1 key"
sleep 0.5
r1=$(handshake $A 8443 -tls1_3 in "$tmp/t1")
r2=$(handshake $A 8443 -tls1_3 in "$tmp/t2")
[ "$r1" = New ] && [ "$r2" = Reused ]
ok $? "the K1 ticket gets a full handshake on A ($r1), the K2 ticket from C resumes ($r2)"

"$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --session-store \
	http://127.0.0.1:6379 >"$tmp/bad.log" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "redis://HOST" "$tmp/bad.log"
ok $? "--session-store http://... is refused at start (exit $rc)"

# Figures: resumed TLS 1.2 handshakes per second, store against the per-process cache.
cat >"$tmp/rate.py" <<'EOF'
import socket, ssl, sys, time
host, port, ca, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.options |= ssl.OP_NO_TICKET
def conn(session=None):
    with socket.create_connection((host, port)) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait on close
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        got = s.session, s.session_reused
        s.unwrap()  # close_notify: a session whose connection was cut is not kept in a cache
        return got
sess, _ = conn()
n = reused = 0
end = time.time() + secs
while time.time() < end:
    _, r = conn(sess)
    n += 1
    reused += r
print(f"{n / secs:.0f} {reused} {n}")
EOF
ip netns exec tlskfleet${id}A "$serve" --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" \
	--root "$tmp" --listen 10.213.0.11:8444 --workers 2 >"$tmp/local.log" 2>&1 &
pids+=($!)
wait_for "$tmp/local.log" "listening on" 10
secs=${TLSK_FLEET_SECS:-2} # make soak: SOAK_SECS
read -r store_rate store_reused store_n < <(python3 "$tmp/rate.py" $A 8443 "$ca" "$secs")
read -r local_rate local_reused local_n < <(python3 "$tmp/rate.py" $A 8444 "$ca" "$secs")
[ "${store_reused:-0}" = "${store_n:-x}" ] && [ "${local_reused:-0}" = "${local_n:-x}" ]
ok $? "rate runs resumed every handshake (store $store_reused/$store_n, cache $local_reused/$local_n)"
echo "# FIGURES resumed TLS 1.2 handshakes/s over $secs s, one python3 client: Redis store $store_rate, per-process cache $local_rate"

tap_done

#!/bin/bash
# serve.t - tlsk-serve end to end, with real clients (curl, wget, python3, node, openssl),
# in both tiers: natively every connection must report userspace/no_ulp; with
# TLSK_EXPECT_KTLS=1 (user-mode Linux with tls.ko) bodies must go through the kernel
# (/proc/net/tls_stat TlsTxSw moves, the access log says tx=kernel).
#
# Covers: byte-exact downloads (1 B, 16 KiB, 1 MiB and 256 MiB; 4 MiB under UML), HEAD, MIME
# types, single ranges (206/416), If-None-Match / If-Modified-Since / If-Range, keep-alive and
# pipelining, index.html, 301 for folders (its Location never "//host"), --list (links out of
# the root show no size or time), path escapes ("..", encoded forms, symbolic links out of the
# root), fatal alerts followed by FIN, SNI virtual hosts and ALPN, client certificates, malformed,
# oversized and slow requests (400/405/414/431/505/408, cut off) with the server still
# serving, --max-connections, 64 concurrent keep-alive clients, a graceful SIGTERM, --mmap,
# --file-cache (changed, replaced, removed and swapped files), --help.
#
# Every client runs with a time limit; the servers are killed on exit.  TAP on stdout.
set -u

top=${TLSK_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TLSK_BUILD_DIR:-$top/build}
fx=${TLSK_FIXTURES:-$top/build/fixtures/rsa}
serve=$build/tools/tlsk-serve
ktls=${TLSK_EXPECT_KTLS:-0}
ca=$fx/ca1-cert.pem

if [ ! -x "$serve" ]; then
	echo "1..0 # SKIP $serve not built"
	exit 0
fi
for t in curl python3 openssl; do
	if ! command -v $t >/dev/null; then
		echo "1..0 # SKIP $t not installed"
		exit 0
	fi
done

py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$py" ] || py=python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/serve-t.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1
is() { # got want description
	if [ "$1" = "$2" ]; then
		ok 0 "$3"
	else
		ok 1 "$3"
		echo "#   got '$1', expected '$2'"
	fi
}
# Diagnostics here are messages, not tap.sh's files.
diag() { echo "# $*"; }

# ---- content -------------------------------------------------------------------------------
if [ "$ktls" = 1 ]; then big_mib=4; else big_mib=256; fi
root=$tmp/root
mkdir -p "$root/sub" "$root/noindex/inner" "$tmp/root-a" "$tmp/root-w"
echo "SECRET-OUTSIDE-ROOT" >"$tmp/secret.txt"
printf '<h1>tlsk</h1>\n' >"$root/index.html"
printf 'x' >"$root/1b.bin"
head -c 16384 /dev/urandom >"$root/16k.bin"
head -c 1048576 /dev/urandom >"$root/1m.bin"
head -c $((big_mib * 1048576)) /dev/urandom >"$root/big.bin"
echo "body{}" >"$root/style.css"
echo "{}" >"$root/data.json"
printf '\x89PNG\r\n' >"$root/pic.png"
echo "text" >"$root/sub/a.txt"
echo "inner" >"$root/noindex/inner/f.txt"
echo "listed" >"$root/noindex/file one.txt"
ln -s ../secret.txt "$root/evil"
ln -s "$tmp/secret.txt" "$root/evil-abs"
ln -s "$tmp" "$root/evil-dir"
ln -s sub/a.txt "$root/good-link"
ln -s "$tmp/secret.txt" "$root/noindex/secret-link"
ln -s ../../secret.txt "$root/noindex/secret-rel"
ln -s /etc/passwd "$root/noindex/passwd-link"
ln -s "file one.txt" "$root/noindex/good-link"
echo "A" >"$tmp/root-a/who.txt"
echo "W" >"$tmp/root-w/who.txt"
echo "D" >"$root/who.txt"

# start NAME ARGS...: run tlsk-serve in the background and set $port from its startup line.
start() {
	local name=$1
	shift
	"$serve" --listen 127.0.0.1:0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pid=$!
	pids+=("$pid")
	port=
	for _ in $(seq 200); do
		port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$tmp/$name.out")
		[ -n "$port" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$port" ]; then
		echo "Bail out! tlsk-serve ($name) did not start: $(cat "$tmp/$name.err")"
		exit 1
	fi
}

curl_() { curl -sS --max-time 60 --cacert "$ca" "$@"; }

# The raw-socket client (pipelining, malformed and slow requests, concurrency).
cat >"$tmp/h.py" <<'PY'
#!/usr/bin/env python3
"""serve_helper.py - raw HTTP/1.1-over-TLS clients for serve.t (tlsk-serve tests).

  serve_helper.py CA PORT pipeline ROOT       three pipelined requests in one write
  serve_helper.py CA PORT records ROOT        the same, one TLS record each, one TCP write
  serve_helper.py CA PORT raw HEX...          for each: send the bytes (hex) on a new
                                              connection, print the status line received
  serve_helper.py CA PORT slow SECS           send half a head, wait, print what came back
  serve_helper.py CA PORT tcpidle SECS        plain TCP, no handshake: print seconds until closed
  serve_helper.py CA PORT concurrent N K ROOT NAMES  N threads x K requests (of the
                                              comma-separated NAMES) on one connection each
  serve_helper.py CA PORT hold N SECS         hold N TLS connections open SECS seconds
  serve_helper.py CA PORT early V ROOT         handshake (TLS 1.3 full, or TLS 1.2 resuming the
                                              session of a first connection) through memory
                                              BIOs; the client's last flight and the four
                                              pipelined requests leave in one TCP write
  serve_helper.py CA PORT nodelay PID         TCP_NODELAY of the server's descriptor for a new
                                              connection, copied out of process PID
  serve_helper.py CA PORT idle V ROOT         (TLS 1.V) GET /1b.bin, a wait, GET /sub/a.txt on
                                              one connection; prints its port first
  serve_helper.py CA PORT closing V fin|open  handshake (TLS 1.V), then close_notify with FIN
                                              (no answer wanted: the server just closes) or
                                              without (the server's close_notify wanted)
  serve_helper.py CA PORT garbage V           handshake (TLS 1.V), then records of random
                                              bytes: print the alert read and how the TCP
                                              stream ended (EOF wanted, not ECONNRESET)

Every socket operation has a timeout; the exit status is 0 when the check passed.
"""
import hashlib
import io
import os
import socket
import ssl
import sys
import threading
import time


def ctx(ca):
    c = ssl.create_default_context(cafile=ca)
    return c


def connect(ca, port, timeout=20):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx(ca).wrap_socket(s, server_hostname="localhost")


def read_response(f, head_only=False):
    """Read one response from a buffered reader: (status, headers, body)."""
    line = f.readline()
    if not line:
        return None, {}, b""
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = b"" if head_only else f.read(n)
    return status, headers, body


# Four requests, the last closing; what each answer must be.
PIPELINED = (b"GET /1b.bin HTTP/1.1\r\nHost: localhost\r\n\r\n",
             b"HEAD /16k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n",
             b"GET /16k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n",
             b"GET /sub/a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")


def check_pipelined(f, root):
    """Read the four answers from f, in order; then nothing may follow."""
    ok = True
    for name, head in [("1b.bin", False), ("16k.bin", True), ("16k.bin", False),
                       ("sub/a.txt", False)]:
        st, h, body = read_response(f, head)
        data = open(os.path.join(root, name), "rb").read()
        good = st == 200 and int(h.get("content-length", -1)) == len(data) and (
            head or body == data)
        print("%s %s -> %s %s" % ("HEAD" if head else "GET", name, st, "ok" if good else "BAD"))
        ok &= good
    rest = f.read()  # the server closes after Connection: close
    print("after close: %d bytes" % len(rest))
    return ok and rest == b""


def pipeline(ca, port, root):
    s = connect(ca, port)
    s.sendall(b"".join(PIPELINED))
    return check_pipelined(s.makefile("rb"), root)


def pipeline_records(ca, port, root):
    """The same four requests, each its own TLS record, all in one TCP write (MemoryBIO):
    the server's OpenSSL reads the records after the first ahead, so only the library knows
    the next requests are there (tlsk_socket_pending), not the socket."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx(ca).wrap_bio(inc, out, server_hostname="localhost")

    def feed():
        d = raw.recv(65536)
        if not d:
            return False
        inc.write(d)
        return True

    while True:
        try:
            o.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                raw.sendall(out.read())
            if not feed():
                return False
    if out.pending:
        raw.sendall(out.read())
    for r in PIPELINED:
        o.write(r)  # one record each
    raw.sendall(out.read())
    got = b""
    while True:
        try:
            d = o.read(65536)
            if not d:
                break  # close_notify
            got += d
        except ssl.SSLWantReadError:
            if not feed():
                break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    return check_pipelined(io.BytesIO(got), root)


def raw(ca, port, hexes):
    for hexdata in hexes:
        s = connect(ca, port)
        s.sendall(bytes.fromhex(hexdata))
        f = s.makefile("rb")
        try:
            line = f.readline()
        except (ssl.SSLError, OSError):
            line = b""
        print(line.decode(errors="replace").strip() or "(closed)")
        sys.stdout.flush()
        s.close()
    return True


def slow(ca, port, secs):
    s = connect(ca, port, timeout=secs + 10)
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: loc")
    print("sent")
    sys.stdout.flush()
    t0 = time.time()
    try:
        data = s.recv(4096)
    except (ssl.SSLError, OSError) as e:
        data = b""
        print("error %s" % e)
    line = data.split(b"\r\n")[0].decode(errors="replace")
    print("%s after %.1f s" % (line or "(closed)", time.time() - t0))
    return True


def tcpidle(port, secs):
    s = socket.create_connection(("127.0.0.1", port), timeout=secs)
    print("connected")
    sys.stdout.flush()
    t0 = time.time()
    try:
        while s.recv(4096):
            pass
        print("closed after %.1f s" % (time.time() - t0))
        return True
    except socket.timeout:
        print("still open after %.1f s" % (time.time() - t0))
        return False
    except OSError:
        print("reset after %.1f s" % (time.time() - t0))
        return True


def concurrent(ca, port, n, k, root, names):
    digests = {m: hashlib.sha256(open(os.path.join(root, m), "rb").read()).hexdigest()
               for m in names}
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(n, timeout=60)

    def run(i):
        good = 0
        reused = True
        try:
            s = connect(ca, port, timeout=60)
            barrier.wait()  # all n connections open at once
            f = s.makefile("rb")
            for j in range(k):
                name = names[(i + j) % len(names)]
                s.sendall(("GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % name).encode())
                st, h, body = read_response(f)
                if st == 200 and hashlib.sha256(body).hexdigest() == digests[name] and \
                        h.get("connection") == "keep-alive":
                    good += 1
                else:
                    print("client %d request %d /%s: status %s, %d bytes, connection %s" %
                          (i, j, name, st, len(body), h.get("connection")))
            s.close()
        except Exception as e:  # noqa: BLE001 - reported as a failure
            print("client %d: %s" % (i, e))
            reused = False
        with lock:
            results.append((good, reused))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = sum(g for g, _ in results)
    print("%d clients, %d/%d responses byte-exact on %d kept-alive connections" %
          (len(results), total, n * k, sum(1 for _, r in results if r)))
    return total == n * k


def hold(ca, port, n, secs):
    socks = [connect(ca, port) for _ in range(n)]
    print("holding %d" % len(socks))
    sys.stdout.flush()
    time.sleep(secs)
    return True


def garbage(ca, port, version):
    c = ctx(ca)
    c.minimum_version = c.maximum_version = (ssl.TLSVersion.TLSv1_2 if version == "2"
                                             else ssl.TLSVersion.TLSv1_3)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = c.wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            o.do_handshake()
            break
        except ssl.SSLWantReadError:
            d = out.read()
            if d:
                raw.sendall(d)
            d = raw.recv(65536)
            if not d:
                print("EOF during the handshake")
                return False
            inc.write(d)
    raw.sendall(out.read())
    try:
        raw.sendall((b"\x17\x03\x03\x00\x40" + os.urandom(64)) * 8)
    except OSError:
        pass
    alert, end = None, None
    while end is None:
        try:
            d = raw.recv(65536)
        except ConnectionResetError:
            end = "ECONNRESET"
            break
        except socket.timeout:
            end = "nothing (timeout)"
            break
        if not d:
            end = "EOF"
            break
        inc.write(d)
        try:
            while True:
                o.read(65536)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as e:
            alert = alert or e.reason
    print("alert %s, then %s" % (alert, end))
    return alert is not None and end == "EOF"


def mem_handshake(c, s, session=None):
    """A client handshake on socket s through memory BIOs: (SSLObject, incoming, outgoing),
    with the client's last flight left unsent in outgoing; (None, None, None) at EOF."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = c.wrap_bio(inc, out, server_hostname="localhost", session=session)
    while True:
        try:
            o.do_handshake()
            return o, inc, out
        except ssl.SSLWantReadError:
            s.sendall(out.read())
            data = s.recv(65536)
            if not data:
                print("EOF in the handshake")
                return None, None, None
            inc.write(data)


def closing(ca, port, v, fin):
    """The client's close_notify, then (fin) its FIN in the same TCP segment (TCP_CORK holds
    the alert until shutdown(SHUT_WR) sends both), or (no FIN) the socket kept open.  Prints
    whether the server's close_notify came back before its FIN."""
    c = ctx(ca)
    c.minimum_version = c.maximum_version = (ssl.TLSVersion.TLSv1_3 if v == "3"
                                             else ssl.TLSVersion.TLSv1_2)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    o, inc, out = mem_handshake(c, s)
    if not o:
        return False
    s.sendall(out.read())  # the client's Finished
    if fin:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        o.unwrap()
    except ssl.SSLWantReadError:
        pass  # our close_notify is written; the server's is awaited
    s.sendall(out.read())
    if fin:
        s.shutdown(socket.SHUT_WR)
    end = "EOF"
    while True:
        try:
            data = s.recv(65536)
        except OSError as e:
            end = "error %s" % e
            break
        if not data:
            break
        inc.write(data)
    try:
        o.unwrap()
        got = "close_notify"
    except ssl.SSLWantReadError:
        got = "no close_notify"
    except ssl.SSLError as e:
        got = "error %s" % e
    print("%s, then %s" % (got, end))
    return end == "EOF" and got == ("no close_notify" if fin else "close_notify")


def early(ca, port, v, root):
    """The requests right behind the client's Finished, in the same TCP write."""
    c = ctx(ca)
    c.minimum_version = c.maximum_version = (ssl.TLSVersion.TLSv1_3 if v == "3"
                                             else ssl.TLSVersion.TLSv1_2)
    session = None
    if v == "2":
        first = c.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                              server_hostname="localhost")
        first.sendall(b"GET /1b.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        first.makefile("rb").read()
        session = first.session
        first.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    o, inc, out = mem_handshake(c, s, session)
    if not o:
        return False
    if v == "2" and not o.session_reused:
        print("the TLS 1.2 session did not resume")
        return False
    o.write(b"".join(PIPELINED))
    s.sendall(out.read())  # Finished (TLS 1.3; CCS and Finished for TLS 1.2) and the requests

    class Reader(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            while True:
                try:
                    d = o.read(len(b))
                    b[:len(d)] = d
                    return len(d)
                except ssl.SSLWantReadError:
                    data = s.recv(65536)
                    if not data:
                        return 0
                    inc.write(data)
                except ssl.SSLZeroReturnError:
                    return 0

    return check_pipelined(io.BufferedReader(Reader()), root)


def idle(ca, port, v, root):
    """Two requests on one connection with a wait between them (the server is idle in it)."""
    c = ctx(ca)
    c.minimum_version = c.maximum_version = (ssl.TLSVersion.TLSv1_3 if v == "3"
                                             else ssl.TLSVersion.TLSv1_2)
    s = c.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                      server_hostname="localhost")
    print("port %d" % s.getsockname()[1])
    f = s.makefile("rb")
    ok = True
    for name, last in (("1b.bin", False), ("sub/a.txt", True)):
        s.sendall(b"GET /%s HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
                  % (name.encode(), b"Connection: close\r\n" if last else b""))
        st, h, body = read_response(f)
        good = st == 200 and body == open(os.path.join(root, name), "rb").read()
        print("GET %s -> %s %s" % (name, st, "ok" if good else "BAD"))
        ok &= good
        time.sleep(0.3)
    s.close()
    return ok


def nodelay(ca, port, pid):
    """TCP_NODELAY of the server's accepted socket for a connection of ours, read from the
    server process itself: pidfd_getfd(2) copies its descriptor (the option cannot be seen
    from outside: not in ss -i, not in /proc/net/tcp)."""
    import ctypes
    import errno
    s = connect(ca, port)
    me = s.getsockname()[1]
    inode = None
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if (int(f[1].split(":")[1], 16) == port and int(f[2].split(":")[1], 16) == me):
            inode = f[9]
    target = "socket:[%s]" % inode
    fd = None
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, n)) == target:
                fd = int(n)
        except OSError:
            pass
    if fd is None:
        print("no descriptor of the server for port %d (inode %s)" % (me, inode))
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    copy = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd on x86_64
    os.close(pidfd)
    if copy < 0:
        e = ctypes.get_errno()
        print("pidfd_getfd: %s" % os.strerror(e))
        if e == errno.EPERM:
            sys.exit(2)  # not allowed to look (Yama ptrace_scope 3): the caller says SKIP
        return False
    c = socket.socket(fileno=copy)
    v = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    c.close()
    s.close()
    print("server descriptor %d: TCP_NODELAY %d" % (fd, v))
    return v != 0


def main():
    ca, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    a = sys.argv[4:]
    if mode == "pipeline":
        ok = pipeline(ca, port, a[0])
    elif mode == "records":
        ok = pipeline_records(ca, port, a[0])
    elif mode == "raw":
        ok = raw(ca, port, a)
    elif mode == "slow":
        ok = slow(ca, port, float(a[0]))
    elif mode == "tcpidle":
        ok = tcpidle(port, float(a[0]))
    elif mode == "concurrent":
        ok = concurrent(ca, port, int(a[0]), int(a[1]), a[2], a[3].split(","))
    elif mode == "hold":
        ok = hold(ca, port, int(a[0]), float(a[1]))
    elif mode == "garbage":
        ok = garbage(ca, port, a[0])
    elif mode == "early":
        ok = early(ca, port, a[0], a[1])
    elif mode == "idle":
        ok = idle(ca, port, a[0], a[1])
    elif mode == "nodelay":
        ok = nodelay(ca, port, int(a[0]))
    elif mode == "closing":
        ok = closing(ca, port, a[0], a[1] == "fin")
    else:
        print("unknown mode %s" % mode)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
PY

# ---- main server: default host, two virtual hosts, listings, short timeouts ----------------
tls0=$(awk '$1 == "TlsTxSw" { print $2 }' /proc/net/tls_stat 2>/dev/null)
start main --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" --list \
	--workers 2 --header-timeout 2 --idle-timeout 6 --log-handshake-errors \
	--vhost "a.example.com:$fx/sni-a-cert.pem:$fx/sni-a-key.pem:$tmp/root-a" \
	--vhost "*.test.com:$fx/sni-wild-cert.pem:$fx/sni-wild-key.pem:$tmp/root-w"
main_pid=$pid
P=$port
U=https://localhost:$P
diag "tlsk-serve on port $P, $(sed -n 2p "$tmp/main.out")"
if [ "$ktls" = 1 ]; then
	grep -q 'kTLS in use' "$tmp/main.out"
	ok $? "startup line says kTLS is in use"
else
	grep -q 'kTLS NOT in use.*TCP_ULP' "$tmp/main.out"
	ok $? "startup line says kTLS is not in use, and why"
fi

# Downloads, byte-exact, with curl.
for f in 1b.bin 16k.bin 1m.bin big.bin; do
	rm -f "$tmp/dl"
	code=$(curl_ -o "$tmp/dl" -w '%{http_code}' "$U/$f")
	cmp -s "$tmp/dl" "$root/$f"
	ok $? "curl GET /$f ($(stat -c %s "$root/$f") bytes): byte-exact (status $code)"
done
diag "elapsed ${SECONDS}s"
is "$(curl_ "$U/")" "<h1>tlsk</h1>" "GET / serves index.html"
is "$(curl_ -o /dev/null -w '%{http_code} %{content_type}' "$U/sub")" "301 text/plain; charset=utf-8" \
	"folder without slash: 301"
is "$(curl_ -sI "$U/sub" | tr -d '\r' | sed -n 's/^Location: //p')" "/sub/" "301 Location adds the slash"

# HEAD and MIME types.
h=$(curl_ -I "$U/1m.bin" | tr -d '\r')
echo "$h" | grep -q '^Content-Length: 1048576$'
ok $? "HEAD: Content-Length of the file"
is "$(curl_ -I -o /dev/null -w '%{size_download}' "$U/1m.bin")" 0 "HEAD: no body"
# One curl for all of them (one connection): process start-up is slow under UML.
mime=("index.html text/html; charset=utf-8" "style.css text/css; charset=utf-8"
	"data.json application/json" "pic.png image/png" "1b.bin application/octet-stream"
	"sub/a.txt text/plain; charset=utf-8")
args=()
for pair in "${mime[@]}"; do
	args+=(-o /dev/null "$U/${pair%% *}")
done
mapfile -t got < <(curl_ -w '%{content_type}\n' "${args[@]}")
for i in "${!mime[@]}"; do
	is "${got[$i]:-}" "${mime[$i]#* }" "Content-Type of ${mime[$i]%% *}"
done

# Ranges.
code=$(curl_ -r 100-199 -o "$tmp/dl" -w '%{http_code}' "$U/1m.bin")
dd if="$root/1m.bin" of="$tmp/want" bs=1 skip=100 count=100 2>/dev/null
cmp -s "$tmp/dl" "$tmp/want"
ok $? "Range 100-199: the right 100 bytes"
is "$code" 206 "Range 100-199: 206"
is "$(curl_ -r 100-199 -sI "$U/1m.bin" | tr -d '\r' | sed -n 's/^Content-Range: //p')" \
	"bytes 100-199/1048576" "Range: Content-Range"
code=$(curl_ -H 'Range: bytes=-10' -o "$tmp/dl" -w '%{http_code}' "$U/1m.bin")
tail -c 10 "$root/1m.bin" | cmp -s - "$tmp/dl"
ok $? "suffix range bytes=-10: the last 10 bytes (status $code)"
code=$(curl_ -r 1048570- -o "$tmp/dl" -w '%{http_code} %{size_download}' "$U/1m.bin")
is "$code" "206 6" "open range 1048570-: 6 bytes"
is "$(curl_ -r 2000000- -o /dev/null -w '%{http_code}' "$U/1m.bin")" 416 "range past the end: 416"
is "$(curl_ -r 2000000- -sI "$U/1m.bin" | tr -d '\r' | sed -n 's/^Content-Range: //p')" \
	"bytes */1048576" "416 names the size"
is "$(curl_ -H 'Range: bytes=0-1,5-6' -o /dev/null -w '%{http_code} %{size_download}' "$U/16k.bin")" \
	"200 16384" "several ranges: the whole file"

# Conditional requests.
etag=$(curl_ -sI "$U/16k.bin" | tr -d '\r' | sed -n 's/^ETag: //p')
lm=$(curl_ -sI "$U/16k.bin" | tr -d '\r' | sed -n 's/^Last-Modified: //p')
[ -n "$etag" ] && [ -n "$lm" ]
ok $? "ETag and Last-Modified present ($etag, $lm)"
is "$(curl_ -H "If-None-Match: $etag" -o /dev/null -w '%{http_code} %{size_download}' "$U/16k.bin")" \
	"304 0" "If-None-Match with the ETag: 304"
is "$(curl_ -H 'If-None-Match: "other", W/'"$etag" -o /dev/null -w '%{http_code}' "$U/16k.bin")" \
	304 "If-None-Match list, weak form: 304"
is "$(curl_ -H 'If-None-Match: "other"' -o /dev/null -w '%{http_code}' "$U/16k.bin")" 200 \
	"If-None-Match another tag: 200"
is "$(curl_ -H "If-Modified-Since: $lm" -o /dev/null -w '%{http_code}' "$U/16k.bin")" 304 \
	"If-Modified-Since Last-Modified: 304"
is "$(curl_ -H 'If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT' -o /dev/null -w '%{http_code}' \
	"$U/16k.bin")" 200 "If-Modified-Since long ago: 200"
is "$(curl_ -z "$lm" -o /dev/null -w '%{http_code}' "$U/16k.bin")" 304 "curl -z (time condition): 304"
is "$(curl_ -r 0-9 -H "If-Range: $etag" -o /dev/null -w '%{http_code}' "$U/16k.bin")" 206 \
	"If-Range matching: 206"
is "$(curl_ -r 0-9 -H 'If-Range: "stale"' -o /dev/null -w '%{http_code} %{size_download}' \
	"$U/16k.bin")" "200 16384" "If-Range stale: the whole file"

# Keep-alive: several URLs on one connection.
is "$(curl_ -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}' "$U/1b.bin" "$U/16k.bin" \
	"$U/1m.bin")" "100" "curl: three requests, one connection"

# Listings.
l=$(curl_ "$U/noindex/")
echo "$l" | grep -q 'href="file%20one.txt">file one.txt' && echo "$l" | grep -q 'href="inner/"'
ok $? "--list: folder without index.html is listed (encoded links)"
is "$(curl_ -o /dev/null -w '%{http_code}' "$U/noindex/nothing/")" 404 "missing folder: 404"
# Symbolic links out of the root: listed without their target's size or time (issue 10).
for lk in secret-link secret-rel passwd-link; do
	echo "$l" | grep -q ">$lk</a></td><td>-</td><td>-</td>"
	ok $? "--list: link $lk (out of the root) shows no size and no time"
done
secret_size=$(stat -c %s "$tmp/secret.txt")
passwd_size=$(stat -c %s /etc/passwd)
echo "$l" | grep -q -e "<td>$secret_size</td>" -e "<td>$passwd_size</td>"
ok $((!$?)) "--list: the sizes of secret.txt ($secret_size) and /etc/passwd ($passwd_size) appear nowhere"
echo "$l" | grep -q '>good-link</a></td><td>7</td>'
ok $? "--list: a link inside the root shows its target's size"

# The folder redirect's Location comes from the normalised path: never "//host" (issue 10).
loc() { curl_ --path-as-is -o /dev/null -w '%{http_code} %{redirect_url}' "$U$1" | sed "s|https://localhost:$P||"; }
for pair in "//evil.example/..|301 /" "//evil.example/../sub|301 /sub/" \
	"///evil.example/%2e%2e|301 /" "/sub?a=//b|301 /sub/?a=//b"; do
	is "$(loc "${pair%%|*}")" "${pair#*|}" "GET ${pair%%|*}: redirect to ${pair#*|}"
done
locs=$(curl_ --path-as-is -sI "$U//evil.example/.." | tr -d '\r' | sed -n 's/^Location: //p')
case $locs in //*) bad=1 ;; /*) bad=0 ;; *) bad=1 ;; esac
ok $bad "GET //evil.example/..: Location '$locs' has no host in it"

# Path escapes.
esc=(/../secret.txt /%2e%2e/secret.txt /sub/../../secret.txt /%2e%2e%2fsecret.txt
	/..%2fsecret.txt /sub/%2E%2E/%2E%2E/secret.txt /evil /evil-abs /evil-dir/secret.txt
	'/%00' /..%5csecret.txt '/sub/..%252f..%252fsecret.txt')
args=()
for i in "${!esc[@]}"; do
	args+=(-o "$tmp/esc.$i" "$U${esc[$i]}")
done
mapfile -t got < <(curl_ --path-as-is -w '%{http_code}\n' "${args[@]}")
for i in "${!esc[@]}"; do
	code=${got[$i]:-none}
	case $code in 400 | 403 | 404) bad=0 ;; *) bad=1 ;; esac
	grep -q SECRET "$tmp/esc.$i" 2>/dev/null && bad=1
	ok $bad "escape ${esc[$i]} refused ($code)"
done
is "$(curl_ "$U/good-link")" "text" "symbolic link inside the root: served"

# wget, python3, node.
if command -v wget >/dev/null; then
	rm -f "$tmp/dl"
	timeout 60 wget -q -O "$tmp/dl" --ca-certificate="$ca" "$U/1m.bin"
	cmp -s "$tmp/dl" "$root/1m.bin"
	ok $? "wget: 1 MiB byte-exact"
else
	ok 0 "wget: not installed # SKIP"
fi
timeout 60 "$py" -c '
import ssl, sys, urllib.request
c = ssl.create_default_context(cafile=sys.argv[1])
d = urllib.request.urlopen(sys.argv[2], context=c, timeout=30).read()
sys.exit(0 if d == open(sys.argv[3], "rb").read() else 1)' "$ca" "$U/1m.bin" "$root/1m.bin"
ok $? "python3 urllib: 1 MiB byte-exact"
if command -v node >/dev/null; then
	want=$(sha256sum <"$root/1m.bin" | cut -d' ' -f1)
	got=$(timeout 60 node -e '
const https = require("https"), fs = require("fs"), crypto = require("crypto");
https.get(process.argv[1], { ca: fs.readFileSync(process.argv[2]) }, (res) => {
  const h = crypto.createHash("sha256");
  res.on("data", (d) => h.update(d));
  res.on("end", () => console.log(res.statusCode + " " + res.headers["content-type"] + " " + h.digest("hex")));
}).on("error", (e) => { console.log("error " + e.message); });' "$U/1m.bin" "$ca")
	is "$got" "200 application/octet-stream $want" "node https.get: 1 MiB byte-exact"
	got=$(timeout 60 node -e '
const https = require("https");
https.get(process.argv[1], { rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] }, (res) => {
  let n = 0; const alpn = res.socket.alpnProtocol;
  res.on("data", (d) => n += d.length);
  res.on("end", () => console.log(res.statusCode + " " + n + " " + alpn));
}).on("error", (e) => { console.log("error " + e.message); });' "https://127.0.0.1:$P/16k.bin")
	is "$got" "200 16384 http/1.1" "node https.get, rejectUnauthorized false, by IP, ALPN http/1.1: 16 KiB"
else
	ok 0 "node: not installed # SKIP"
	ok 0 "node: not installed # SKIP"
fi

# Pipelining.
out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" pipeline "$root")
ok $? "pipelining: GET, HEAD, GET, GET+close in one write, answered in order"
diag "$(echo "$out" | tr '\n' ';')"
out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" records "$root")
ok $? "pipelining: the same as four TLS records in one TCP write, answered in order"
diag "$(echo "$out" | tr '\n' ';')"
# Requests in the same TCP write as the client's Finished: tlsk-serve's handshake reads must
# leave them for whoever carries the connection on (the kernel; natively OpenSSL, until the
# connection first waits: docs/KERNEL.md §16.1).
for v in 3 2; do
	out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" early $v "$root")
	ok $? "TLS 1.$v: four requests behind the client's Finished in one TCP write, answered in order"
	diag "$(echo "$out" | tr '\n' ';')"
done
# Accepted connections take TCP_NODELAY from the listening socket (tlsk-serve sets it there,
# not per connection): without it a response written in two parts waits for a delayed ACK.
out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" nodelay "$main_pid")
rc=$?
if [ "$rc" = 2 ]; then
	ok 0 "an accepted connection's TCP_NODELAY # SKIP cannot copy the server's descriptor: $out"
else
	ok "$rc" "an accepted connection has TCP_NODELAY, inherited from the listener ($out)"
fi
# Lean at idle (TLSK_SOCKET_LEAN_IDLE): natively a connection goes to tlsk's record layer at its
# first wait after a response, so the request before the wait is OpenSSL's and the one after
# it is not; both answered byte for byte.
for v in 3 2; do
	out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" idle $v "$root")
	ok $? "TLS 1.$v: two requests with a wait between them, both answered"
	diag "$(echo "$out" | tr '\n' ';')"
	if [ "$ktls" != 1 ]; then
		cport=$(echo "$out" | sed -n 's/^port //p')
		sleep 0.2
		l1=$(grep "^127.0.0.1:$cport \"GET /1b.bin " "$tmp/main.err")
		l2=$(grep "^127.0.0.1:$cport \"GET /sub/a.txt " "$tmp/main.err")
		[ -n "$l1" ] && [ "${l1% lean}" = "$l1" ] && [ "${l2% lean}" != "$l2" ]
		ok $? "TLS 1.$v: lean from the first wait on (access log: '${l1#* host=}', then '${l2#* host=}')"
	fi
done

# Closing: a client's close_notify is answered with close_notify, unless the client's FIN came
# with it; then the client has closed, an answer would only draw a reset, and tlsk-serve
# closes at once (tlsk-serve(1), CLOSING).
for v in 3 2; do
	for how in open fin; do
		out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" closing $v $how)
		ok $? "TLS 1.$v: close_notify $([ $how = fin ] && echo "with FIN: closed without an answer" || echo "alone: answered with close_notify") ($out)"
	done
done

# 64 concurrent keep-alive clients (default timeouts: under UML 64 handshakes take a while).
start conc --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" --workers 2
conc_pid=$pid
# Under UML (one slow CPU) fewer and smaller requests keep this within a couple of minutes.
if [ "$ktls" = 1 ]; then
	k=3 names=1b.bin,16k.bin,index.html,sub/a.txt
else
	k=5 names=1b.bin,16k.bin,1m.bin,index.html,sub/a.txt
fi
out=$(timeout 300 "$py" "$tmp/h.py" "$ca" "$port" concurrent 64 $k "$root" $names)
rc=$?
ok $rc "64 concurrent clients x $k requests on one connection each: $(echo "$out" | tail -n 1)"
[ $rc = 0 ] || diag "$(echo "$out" | head -n 5 | tr '\n' ';')"
kill -TERM $conc_pid
wait $conc_pid
is $? 0 "... and that server stops cleanly"
diag "elapsed ${SECONDS}s"

# SNI virtual hosts and ALPN.
for pair in "a.example.com A" "x.test.com W" "foo.test.com W" "localhost D"; do
	h=${pair% *}
	is "$(curl_ --resolve "$h:$P:127.0.0.1" "https://$h:$P/who.txt")" "${pair#* }" \
		"SNI $h: its own certificate verifies and its root serves"
done
is "$(curl_ "https://127.0.0.1:$P/who.txt")" D "no SNI (IP address): the default host"
is "$(curl_ --resolve "a.example.com:$P:127.0.0.1" -H 'Host: x.test.com' -o /dev/null \
	-w '%{http_code}' "https://a.example.com:$P/who.txt")" 421 "Host differing from SNI: 421"
curl_ -v -o /dev/null "$U/1b.bin" 2>&1 | grep -q 'ALPN: server accepted http/1.1'
ok $? "ALPN: curl offers h2,http/1.1 and gets http/1.1"
out=$(timeout 20 openssl s_client -connect "127.0.0.1:$P" -servername localhost -alpn http/1.1 \
	-CAfile "$ca" </dev/null 2>/dev/null)
echo "$out" | grep -q 'ALPN protocol: http/1.1'
ok $? "ALPN: openssl s_client -alpn http/1.1 negotiates http/1.1"
out=$(timeout 20 openssl s_client -connect "127.0.0.1:$P" -servername localhost -alpn h2 \
	-CAfile "$ca" </dev/null 2>&1)
echo "$out" | grep -q 'ALPN protocol: h2'
ok $((!$?)) "ALPN: a client offering only h2 does not get h2"

# Malformed, oversized, slow.  "raw" sends each request's bytes over a new TLS connection and
# prints the status line that comes back (one python process for all: start-up is slow in UML).
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
big_field="X-Big: $(head -c 20000 /dev/zero | tr '\0' a)"
long_target="/$(head -c 12000 /dev/zero | tr '\0' a)"
bad_req=($'GARBAGE\r\n\r\n'
	$'GET / HTTP/1.1\r\n\r\n'
	$'GET / HTTP/2.0\r\nHost: x\r\n\r\n'
	$'GET / HTTP/1.1\r\nHost: x\r\n bad-fold\r\n\r\n'
	$'POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc'
	$'GET / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'
	$'GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9999999\r\n\r\n'
	"GET / HTTP/1.1"$'\r\n'"Host: localhost"$'\r\n'"$big_field"$'\r\n\r\n'
	"GET $long_target HTTP/1.1"$'\r\n'"Host: localhost"$'\r\n\r\n'
	$'\r\n\r\nGET /who.txt HTTP/1.0\r\n\r\n')
bad_want=("400 Bad Request|garbage request line: 400"
	"400 Bad Request|HTTP/1.1 without Host: 400"
	"505 HTTP Version Not Supported|HTTP/2.0 request line: 505"
	"400 Bad Request|obsolete line folding: 400"
	"405 Method Not Allowed|POST: 405"
	"501 Not Implemented|Transfer-Encoding request body: 501"
	"413 Content Too Large|huge request body: 413"
	"431 Request Header Fields Too Large|20 KB header field: 431"
	"414 URI Too Long|12 KB request line: 414"
	"200 OK|HTTP/1.0, leading empty lines, no Host: 200")
args=()
for r in "${bad_req[@]}"; do
	args+=("$(hex "$r")")
done
mapfile -t got < <(timeout 120 "$py" "$tmp/h.py" "$ca" "$P" raw "${args[@]}")
for i in "${!bad_want[@]}"; do
	is "${got[$i]:-}" "HTTP/1.1 ${bad_want[$i]%%|*}" "${bad_want[$i]#*|}"
done
timeout 60 "$py" "$tmp/h.py" "$ca" "$P" slow 6 >"$tmp/slow.out" &
slow_pid=$!
timeout 60 "$py" "$tmp/h.py" "$ca" "$P" tcpidle 8 >"$tmp/idle.out" &
idle_pid=$!
waitfor() { # file pattern: up to 30 s
	for _ in $(seq 300); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
waitfor "$tmp/slow.out" '^sent' && waitfor "$tmp/idle.out" '^connected'
ok $? "a slow client and a silent TCP client are connected"
t0=$(date +%s%N)
is "$(curl_ "$U/sub/a.txt")" text "served while slow clients hold connections"
t1=$(date +%s%N)
[ $(((t1 - t0) / 1000000)) -lt $([ "$ktls" = 1 ] && echo 5000 || echo 1500) ]
ok $? "... promptly ($(((t1 - t0) / 1000000)) ms)"
wait $slow_pid
grep -q '^HTTP/1.1 408 Request Timeout after' "$tmp/slow.out"
ok $? "slow head (2 s header timeout): $(tail -n 1 "$tmp/slow.out")"
wait $idle_pid
ok $? "TCP connection without a handshake cut off: $(tail -n 1 "$tmp/idle.out")"
# Fatal alerts reach the client: records of random bytes after the handshake get
# bad_record_mac, then FIN (lingering close), not a reset that destroys the alert (issue 10).
for v in 2 3; do
	out=$(timeout 60 "$py" "$tmp/h.py" "$ca" "$P" garbage $v)
	ok $? "TLS 1.$v garbage records after the handshake: $out"
done
is "$(curl_ "$U/who.txt")" D "still serving after the abuse"

# Access log and offload state.
grep -q '^127\.0\.0\.1:[0-9]* "GET /1m.bin HTTP/1.1" 200 1048576 host=default TLSv1.3 tx=' "$tmp/main.err"
ok $? "access log: remote, request line, status, bytes, host, offload"
grep -q '"GET /who.txt HTTP/1.1" 200 2 host=a.example.com ' "$tmp/main.err"
ok $? "access log names the virtual host"
if [ "$ktls" = 1 ]; then
	grep -q '"GET /big.bin HTTP/1.1" 200 [0-9]* host=default TLSv1.3 tx=kernel ' "$tmp/main.err"
	ok $? "kTLS: the big download went out with tx=kernel"
	tls1=$(awk '$1 == "TlsTxSw" { print $2 }' /proc/net/tls_stat 2>/dev/null)
	[ -n "$tls0" ] && [ -n "$tls1" ] && [ "$tls1" -gt "$tls0" ]
	ok $? "kTLS: /proc/net/tls_stat TlsTxSw moved ($tls0 -> $tls1)"
else
	grep -q '"GET /big.bin HTTP/1.1" 200 [0-9]* host=default TLSv1.3 tx=userspace/no_ulp ' "$tmp/main.err"
	ok $? "no kTLS here: the access log says tx=userspace/no_ulp"
	if grep -q 'tx=kernel' "$tmp/main.err"; then
		ok 1 "no connection claims the kernel"
	else
		ok 0 "no connection claims the kernel"
	fi
fi

# Graceful stop: a download in flight completes, then the server exits 0.
rm -f "$tmp/dl"
curl_ --limit-rate 400k -o "$tmp/dl" "$U/1m.bin" &
dl_pid=$!
for _ in $(seq 300); do
	[ "$(stat -c %s "$tmp/dl" 2>/dev/null || echo 0)" -gt 0 ] && break
	sleep 0.1
done
kill -TERM "$main_pid"
wait $dl_pid
ok $? "SIGTERM: the download in flight completed"
cmp -s "$tmp/dl" "$root/1m.bin"
ok $? "... byte-exact"
for _ in $(seq 100); do
	kill -0 "$main_pid" 2>/dev/null || break
	sleep 0.1
done
wait "$main_pid"
is $? 0 "SIGTERM: exit status 0"
curl_ --max-time 3 -o /dev/null "$U/1b.bin" 2>/dev/null
ok $((!$?)) "after the stop: no longer accepting"

diag "elapsed ${SECONDS}s"

# ---- client certificates -------------------------------------------------------------------
start certs --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" \
	--client-ca "$ca" --require-client-cert --workers 1 --log-handshake-errors
is "$(curl_ --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" "https://localhost:$port/who.txt")" \
	D "--require-client-cert: a certificate from --client-ca is accepted"
waitfor "$tmp/certs.err" 'client-cert=verified' # logged once the response is out
ok $? "access log: client-cert=verified"
curl_ -o /dev/null "https://localhost:$port/who.txt" 2>/dev/null
ok $((!$?)) "--require-client-cert: no certificate, no response"
curl_ -o /dev/null --cert "$fx/agent3-cert.pem" --key "$fx/agent3-key.pem" \
	"https://localhost:$port/who.txt" 2>/dev/null
ok $((!$?)) "--require-client-cert: a certificate from another CA is refused"
start certs2 --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" \
	--client-ca "$ca" --workers 1
is "$(curl_ "https://localhost:$port/who.txt")" D "--client-ca alone: a client without a certificate is served"
waitfor "$tmp/certs2.err" 'client-cert=NO_PEER_CERTIFICATE'
ok $? "access log: client-cert=NO_PEER_CERTIFICATE"

# ---- --file-cache: small files stay open, and every change to them is seen ----------------
# Each case would fail with a cache that trusted its entries: a stale length or body, the old
# inode after a rename, a 200 for a removed file or for a link out of the root.
fc=$tmp/fc
mkdir -p "$fc/d" "$tmp/fc-out"
printf 'one' >"$fc/a.txt"
printf 'in d' >"$fc/d/e.txt"
printf 'keep' >"$fc/b.txt"
printf 'moved' >"$fc/c.txt"
head -c 20000 /dev/urandom >"$fc/20k.bin" # with its head: two records (userspace: one write)
head -c 32768 /dev/urandom >"$fc/32k.bin" # cached, but with its head over what goes inline
start fc --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$fc" --workers 1
fc_pid=$pid
FU=https://localhost:$port
body() { curl_ -w ' %{http_code} %{size_download}' "$FU/$1" 2>/dev/null; }
is "$(curl_ "$FU/a.txt" "$FU/a.txt" "$FU/a.txt")" oneoneone "file cache: one file three times, one connection"
printf 'three!' >"$fc/a.txt"
is "$(body a.txt)" "three! 200 6" "file cache: rewritten in place, longer: the new length and bytes"
printf 'TWO!!!' >"$fc/a.txt"
is "$(body a.txt)" "TWO!!! 200 6" "file cache: rewritten in place, same length: the new bytes"
printf 'new' >"$tmp/fc-new"
mv "$tmp/fc-new" "$fc/a.txt"
is "$(body a.txt)" "new 200 3" "file cache: replaced by rename: the new file"
rm "$fc/a.txt"
is "$(curl_ -o /dev/null -w '%{http_code}' "$FU/a.txt")" 404 "file cache: removed: 404"
printf 'back' >"$fc/a.txt"
is "$(body a.txt)" "back 200 4" "file cache: created again: served"
is "$(curl_ -r 1-2 "$FU/a.txt")" ac "file cache: a range of a cached file"
is "$(body b.txt)" "keep 200 4" "file cache: b.txt served (and cached)"
rm "$fc/b.txt"
ln -s "$tmp/secret.txt" "$fc/b.txt"
is "$(curl_ -o /dev/null -w '%{http_code}' "$FU/b.txt")" 403 \
	"file cache: a link out of the root swapped in for a cached file: 403"
is "$(body c.txt)" "moved 200 5" "file cache: c.txt served (and cached)"
mv "$fc/c.txt" "$tmp/fc-out/c.txt"
ln -s "$tmp/fc-out/c.txt" "$fc/c.txt"
is "$(curl_ -o /dev/null -w '%{http_code}' "$FU/c.txt")" 403 \
	"file cache: the cached file moved out of the root and linked back: 403"
# Its folder moved out instead, and linked back: the file is the same inode, unchanged, so
# only the open made again each second (RESOLVE_BENEATH) sees that the path now leaves.
is "$(body d/e.txt)" "in d 200 4" "file cache: d/e.txt served (and cached)"
mv "$fc/d" "$tmp/fc-out/d"
ln -s "$tmp/fc-out/d" "$fc/d"
sleep 1.2
is "$(curl_ -o /dev/null -w '%{http_code}' "$FU/d/e.txt")" 403 \
	"file cache: its folder moved out of the root and linked back: 403 within a second"
for f in 20k.bin 32k.bin; do
	rm -f "$tmp/dl1" "$tmp/dl2" "$tmp/dl3"
	curl_ -o "$tmp/dl1" "$FU/$f" -o "$tmp/dl2" "$FU/$f" -o "$tmp/dl3" "$FU/$f"
	cmp -s "$tmp/dl1" "$fc/$f" && cmp -s "$tmp/dl2" "$fc/$f" && cmp -s "$tmp/dl3" "$fc/$f"
	ok $? "file cache: $f three times on one connection, byte-exact"
done
kill -TERM "$fc_pid"
wait "$fc_pid"
hits=$(sed -n 's/.*file cache: \([0-9]*\) hits, \([0-9]*\) opened, \([0-9]*\) found changed.*/\1 \2 \3/p' "$tmp/fc.err")
diag "file cache: hits, opened, found changed: ${hits:-none}"
set -- ${hits:-0 0 0}
# A change is seen by the comparison, or first by the open made again once an entry is a
# second old: in user-mode Linux the steps above can take longer than that (the 6.1 tier once
# logged 2 hits, 15 opened, 1 changed), so there changes and even repeats may count as opens.
# Natively each case takes well under a second, so the comparison itself is what is counted.
if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	[ "$1" -ge 1 ] && [ $(($2 + $3)) -ge 5 ]
	ok $? "file cache: the log counts hits (>= 1) and files found changed or opened again (>= 5)"
else
	[ "$1" -ge 2 ] && [ "$3" -ge 5 ]
	ok $? "file cache: the log counts hits (>= 2) and files found changed (>= 5)"
fi
# More small files than descriptors: the cache gives its own back rather than answer 503.
mkdir -p "$tmp/fcmany"
for i in $(seq 60); do printf '%s' "$i" >"$tmp/fcmany/$i.txt"; done
printf '#!/bin/bash\nulimit -n 40\nexec "%s" "$@"\n' "$serve" >"$tmp/lowfd.sh"
chmod +x "$tmp/lowfd.sh"
serve_real=$serve
serve=$tmp/lowfd.sh
start fclow --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$tmp/fcmany" --workers 1
serve=$serve_real
args=()
for i in $(seq 60); do args+=(-o /dev/null "https://localhost:$port/$i.txt"); done
codes=$(curl_ -w '%{http_code}\n' "${args[@]}" | sort | uniq -c | awk '{ print $2 "x" $1 }' | tr '\n' ' ')
is "$codes" "200x60 " "file cache: 60 files with 40 descriptors: every one 200"
start fc0 --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$fc" --workers 1 \
	--file-cache 0
fc0_pid=$pid
FU=https://localhost:$port
is "$(body a.txt)" "back 200 4" "--file-cache 0: served"
printf 'again' >"$fc/a.txt"
is "$(body a.txt)" "again 200 5" "--file-cache 0: rewritten: the new file"
kill -TERM "$fc0_pid"
wait "$fc0_pid"
grep -q 'file cache:' "$tmp/fc0.err"
ok $((!$?)) "--file-cache 0: no cache, nothing to log"

# ---- --mmap: userspace encryption straight from a mapping of the file ---------------------
start mm --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" --mmap --workers 1
for f in 1m.bin big.bin; do
	rm -f "$tmp/dl"
	curl_ -o "$tmp/dl" "https://localhost:$port/$f"
	cmp -s "$tmp/dl" "$root/$f"
	ok $? "--mmap: $f byte-exact"
done
curl_ -r 5000-70000 -o "$tmp/dl" "https://localhost:$port/1m.bin"
dd if="$root/1m.bin" of="$tmp/want" bs=1 skip=5000 count=65001 2>/dev/null
cmp -s "$tmp/dl" "$tmp/want"
ok $? "--mmap: unaligned range 5000-70000 byte-exact"

# ---- --max-connections ---------------------------------------------------------------------
start limit --cert "$fx/agent1-cert.pem" --key "$fx/agent1-key.pem" --root "$root" \
	--max-connections 2 --workers 1
timeout 60 "$py" "$tmp/h.py" "$ca" "$port" hold 2 50 >"$tmp/hold.out" &
hold_pid=$!
waitfor "$tmp/hold.out" holding
ok $? "two connections held"
curl_ --max-time 2 -o /dev/null "https://localhost:$port/1b.bin" 2>/dev/null
ok $((!$?)) "--max-connections 2: a third connection waits while two are held"
kill $hold_pid
wait $hold_pid 2>/dev/null
is "$(curl_ --max-time 15 "https://localhost:$port/who.txt")" D "... and is served once they close"

# ---- usage ---------------------------------------------------------------------------------
h=$("$serve" --help)
ok $? "--help exits 0"
miss=
for o in --cert --key --root --listen --vhost --client-ca --require-client-cert --workers \
	--max-connections --max-header --header-timeout --idle-timeout --list --offload --mmap \
	--grace --quiet --file-cache; do
	echo "$h" | grep -q -- "$o" || miss="$miss $o"
done
is "$miss" "" "--help documents every option"
"$serve" --bogus >/dev/null 2>&1
is $? 2 "unknown option: exit 2"

if grep -l 'Sanitizer\|runtime error' "$tmp"/*.err >/dev/null 2>&1; then
	ok 1 "no sanitizer reports from any server"
	grep -h -A5 'Sanitizer\|runtime error' "$tmp"/*.err | head -20 | sed 's/^/#   /'
else
	ok 0 "no sanitizer reports from any server"
fi
diag "elapsed ${SECONDS}s"
tap_done

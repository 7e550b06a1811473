#!/bin/sh
# gen-fixtures.sh OUTDIR - generate tlsk's certificate fixtures (docs/NODE.md §3).
#
# Writes two trees with identical file names, OUTDIR/rsa (RSA-2048) and OUTDIR/ec (ECDSA P-256):
#   NAME-key.pem, NAME-cert.pem, NAME.pem (cert + key, for haproxy) for
#     ca1 ca2 agent1 agent2 agent3 agent4 sni-default sni-a sni-wild sni-x
#   ca2-crl.pem (agent4 revoked), agent1.pfx (pass "sample"),
#   agent1-key-enc.pem (PKCS#8, pass "password").
# All signatures SHA-256, certificates and CRL valid 9999 days, serials random.
#
# Idempotent: does nothing if both OUTDIR/rsa/ca2-crl.pem and OUTDIR/ec/ca2-crl.pem exist.
# Quiet on success; openssl output goes to OUTDIR/gen-fixtures.log, printed on failure.
set -eu

usage() {
	echo "usage: $0 OUTDIR" >&2
	exit 2
}

[ $# -eq 1 ] || usage
case $1 in -*) usage ;; esac
OUTDIR=$1

if [ -f "$OUTDIR/rsa/ca2-crl.pem" ] && [ -f "$OUTDIR/ec/ca2-crl.pem" ]; then
	exit 0
fi

command -v openssl >/dev/null 2>&1 || {
	echo "$0: openssl not found (apt-get install openssl)" >&2
	exit 1
}

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gen-fixtures.log
: >"$LOG"
STAGE=$(mktemp -d "$OUTDIR/.gen-fixtures.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
	echo "$0: $*" >&2
	for f in "$LOG" "$STAGE"/*.log; do
		[ -s "$f" ] || continue
		echo "---- $f ----" >&2
		cat "$f" >&2
	done
	exit 1
}

SAN_LOCAL="subjectAltName=DNS:localhost,IP:127.0.0.1"

# genkey ALG NAME
genkey() {
	case $1 in
	rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2-key.pem" ;;
	ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2-key.pem" ;;
	esac
}

# root NAME
root() {
	openssl req -x509 -new -key "$1-key.pem" -sha256 -days 9999 -subj "/O=tlsk test/CN=$1" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1-cert.pem"
}

# leaf NAME ISSUER CN EXTENSION-LINE...
leaf() {
	name=$1 issuer=$2 cn=$3
	shift 3
	printf '%s\n' "$@" >"$name.ext"
	openssl req -new -key "$name-key.pem" -subj "/O=tlsk test/CN=$cn" -out "$name.csr"
	openssl x509 -req -in "$name.csr" -CA "$issuer-cert.pem" -CAkey "$issuer-key.pem" \
		-CAcreateserial -sha256 -days 9999 -extfile "$name.ext" -out "$name-cert.pem"
	rm -f "$name.ext" "$name.csr"
}

# build_tree ALG: builds $STAGE/ALG, logging to $STAGE/ALG.log
build_tree() (
	alg=$1
	mkdir "$STAGE/$alg"
	cd "$STAGE/$alg"
	exec >"$STAGE/$alg.log" 2>&1
	set -x

	for n in ca1 ca2 agent1 agent2 agent3 agent4 sni-default sni-a sni-wild sni-x; do
		genkey "$alg" "$n"
	done

	# 1. roots
	root ca1
	root ca2

	# 2. leaves
	leaf agent1 ca1 agent1 "basicConstraints=CA:FALSE" "$SAN_LOCAL"
	leaf agent3 ca2 agent3 "basicConstraints=CA:FALSE" "$SAN_LOCAL"
	leaf agent4 ca2 agent4 "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth"
	leaf sni-default ca1 localhost "basicConstraints=CA:FALSE" "$SAN_LOCAL"
	leaf sni-a ca1 a.example.com "basicConstraints=CA:FALSE" "subjectAltName=DNS:a.example.com"
	leaf sni-wild ca1 '*.test.com' "basicConstraints=CA:FALSE" "subjectAltName=DNS:*.test.com"
	leaf sni-x ca1 x.test.com "basicConstraints=CA:FALSE" "subjectAltName=DNS:x.test.com"

	# 3. self-signed agent2 with an explicit CA:FALSE
	openssl req -x509 -new -key agent2-key.pem -sha256 -days 9999 -subj "/O=tlsk test/CN=agent2" \
		-addext "basicConstraints=critical,CA:FALSE" -addext "$SAN_LOCAL" -out agent2-cert.pem

	# 4. ca2's CRL revoking agent4, through a minimal `openssl ca` setup
	mkdir ca2db
	: >ca2db/index.txt
	echo 1000 >ca2db/crlnumber
	cat >ca2db/ca2.cnf <<-EOF
		[ ca ]
		default_ca = ca2
		[ ca2 ]
		dir = $STAGE/$alg/ca2db
		database = \$dir/index.txt
		crlnumber = \$dir/crlnumber
		default_md = sha256
		default_crl_days = 9999
	EOF
	openssl ca -config ca2db/ca2.cnf -keyfile ca2-key.pem -cert ca2-cert.pem -revoke agent4-cert.pem
	openssl ca -config ca2db/ca2.cnf -keyfile ca2-key.pem -cert ca2-cert.pem -gencrl -out ca2-crl.pem
	rm -rf ca2db

	# 5. PKCS#12 (OpenSSL 3 defaults: AES-256-CBC, PBKDF2, SHA-256 MAC)
	openssl pkcs12 -export -in agent1-cert.pem -inkey agent1-key.pem -certfile ca1-cert.pem \
		-passout pass:sample -out agent1.pfx

	# 6. encrypted PKCS#8 key
	openssl pkey -in agent1-key.pem -aes256 -passout pass:password -out agent1-key-enc.pem

	# 8. haproxy bundles: certificate then key
	for n in ca1 ca2 agent1 agent2 agent3 agent4 sni-default sni-a sni-wild sni-x; do
		cat "$n-cert.pem" "$n-key.pem" >"$n.pem"
	done
	rm -f ./*.srl
)

# check ALG: step 7
check() (
	cd "$STAGE/$1"
	out=$(openssl verify -CAfile ca2-cert.pem -crl_check -CRLfile ca2-crl.pem \
		agent3-cert.pem agent4-cert.pem 2>&1 || true)
	printf '%s: verify agent3/agent4:\n%s\n' "$1" "$out" >>"$LOG"
	printf '%s\n' "$out" | grep -q '^agent3-cert.pem: OK$' || exit 1
	printf '%s\n' "$out" | grep -q 'certificate revoked' || exit 1
	out=$(openssl verify -CAfile ca1-cert.pem -verify_hostname a.b.test.com sni-wild-cert.pem 2>&1 || true)
	printf '%s: verify sni-wild as a.b.test.com:\n%s\n' "$1" "$out" >>"$LOG"
	printf '%s\n' "$out" | grep -q 'hostname mismatch' || exit 1
	# the positive case, so the mismatch above is for the right reason
	openssl verify -CAfile ca1-cert.pem -verify_hostname x.test.com sni-wild-cert.pem >>"$LOG" 2>&1 || exit 1
	openssl pkcs12 -in agent1.pfx -passin pass:sample -noout >>"$LOG" 2>&1 || exit 1
	openssl pkey -in agent1-key-enc.pem -passin pass:password -noout >>"$LOG" 2>&1 || exit 1
	grep -q 'BEGIN ENCRYPTED PRIVATE KEY' agent1-key-enc.pem || exit 1
)

# The two trees are independent: build them in parallel.
build_tree rsa &
rsa_pid=$!
build_tree ec &
ec_pid=$!
rc=0
wait "$rsa_pid" || rc=1
wait "$ec_pid" || rc=1
cat "$STAGE/rsa.log" "$STAGE/ec.log" >>"$LOG"
rm -f "$STAGE/rsa.log" "$STAGE/ec.log"
[ "$rc" -eq 0 ] || fail "openssl failed generating fixtures"

for alg in rsa ec; do
	check "$alg" || fail "$alg: fixture self-check (step 7) did not print the expected results"
done

for alg in rsa ec; do
	rm -rf "${OUTDIR:?}/$alg"
	mv "$STAGE/$alg" "$OUTDIR/$alg"
done
